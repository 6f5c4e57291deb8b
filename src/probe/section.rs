//! ELF section names → how a program is attached.
//!
//! libbpf attaches most sections itself (tracepoint/, raw_tp/, tp_btf/,
//! fentry/, fexit/, kprobe/, kretprobe/, uprobe/, uretprobe/, usdt/, ...).
//! ebpf_exporter adds two conventions libbpf does not know, handled here:
//! `perf_event/type=T,config=C,frequency=F` (or `period=P`): one perf event
//! per online CPU with that sampling; and `xdp/IFNAME`: XDP on an interface.

use anyhow::{bail, Context, Result};

/// How one program gets attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attach {
    /// libbpf's auto-attach by section; `kind` is the section's prefix.
    Libbpf {
        kind: String,
    },
    PerfEvent(PerfEvent),
    Xdp {
        interface: String,
    },
}

/// A perf event to open on every online CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerfEvent {
    pub event_type: u32,
    pub config: u64,
    pub sampling: Sampling,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    /// Samples per second.
    Frequency(u64),
    /// One sample every N events.
    Period(u64),
}

impl Attach {
    /// The kind, as shown in `bpfsnap_program_info{attach=...}`.
    pub fn kind(&self) -> &str {
        match self {
            Attach::Libbpf { kind } => kind,
            Attach::PerfEvent(_) => "perf_event",
            Attach::Xdp { .. } => "xdp",
        }
    }

    /// Programs attached through kprobes (absent on kernels without CONFIG_KPROBES).
    pub fn is_kprobe(&self) -> bool {
        matches!(
            self.kind(),
            "kprobe" | "kretprobe" | "ksyscall" | "kretsyscall"
        )
    }

    /// Programs attached to many functions at once through fprobe, which
    /// kernels without CONFIG_FPROBE lack even where they have kprobes.
    pub fn is_kprobe_multi(&self) -> bool {
        matches!(self.kind(), "kprobe.multi" | "kretprobe.multi")
    }

    /// Programs that need a BPF trampoline (refused by some locked-down kernels).
    pub fn is_trampoline(&self) -> bool {
        matches!(
            self.kind(),
            "fentry" | "fexit" | "fmod_ret" | "lsm" | "freplace" | "fentry.s" | "fexit.s" | "lsm.s"
        )
    }
}

/// Parses a program's section name.
pub fn parse(section: &str) -> Result<Attach> {
    if let Some(params) = section.strip_prefix("perf_event/") {
        return parse_perf_event(params).map(Attach::PerfEvent).with_context(|| {
            format!("section {section:?}: expected perf_event/type=T,config=C,frequency=F (or period=P)")
        });
    }
    if let Some(interface) = section.strip_prefix("xdp/") {
        if interface.is_empty() || interface.contains('/') {
            bail!("section {section:?}: expected xdp/INTERFACE");
        }
        return Ok(Attach::Xdp {
            interface: interface.to_string(),
        });
    }
    let kind = section.split('/').next().unwrap_or_default();
    if kind.is_empty() {
        bail!("section {section:?} does not say how to attach the program");
    }
    Ok(Attach::Libbpf {
        kind: kind.to_string(),
    })
}

fn parse_perf_event(params: &str) -> Result<PerfEvent> {
    let (mut event_type, mut config, mut sampling) = (None, None, None);
    for param in params.split(',') {
        let (key, value) = param
            .split_once('=')
            .with_context(|| format!("{param:?} is not key=value"))?;
        let number: u64 = value
            .trim()
            .parse()
            .with_context(|| format!("{key}={value:?} is not a number"))?;
        match key.trim() {
            "type" => event_type = Some(u32::try_from(number).context("type is too large")?),
            "config" => config = Some(number),
            "frequency" | "freq" => sampling = Some(Sampling::Frequency(number)),
            "period" | "sample_period" => sampling = Some(Sampling::Period(number)),
            other => bail!("unknown parameter {other:?}"),
        }
    }
    let sampling = sampling.context("no frequency or period")?;
    if matches!(sampling, Sampling::Frequency(0) | Sampling::Period(0)) {
        bail!("frequency or period must be above zero");
    }
    Ok(PerfEvent {
        event_type: event_type.context("no type")?,
        config: config.context("no config")?,
        sampling,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections() {
        let libbpf = |kind: &str| Ok(Attach::Libbpf { kind: kind.into() });
        let cases: Vec<(&str, Result<Attach, &str>)> = vec![
            ("tp_btf/sys_enter", libbpf("tp_btf")),
            ("tracepoint/syscalls/sys_enter_getpid", libbpf("tracepoint")),
            ("uprobe//proc/self/exe:post_attach_mark", libbpf("uprobe")),
            ("kprobe/do_sys_openat2", libbpf("kprobe")),
            ("fentry/vfs_read", libbpf("fentry")),
            (
                "perf_event/type=1,config=0,frequency=99",
                Ok(Attach::PerfEvent(PerfEvent {
                    event_type: 1,
                    config: 0,
                    sampling: Sampling::Frequency(99),
                })),
            ),
            (
                "perf_event/type=0,config=3,period=10000",
                Ok(Attach::PerfEvent(PerfEvent {
                    event_type: 0,
                    config: 3,
                    sampling: Sampling::Period(10000),
                })),
            ),
            (
                "xdp/eth0",
                Ok(Attach::Xdp {
                    interface: "eth0".into(),
                }),
            ),
            ("perf_event/type=1,config=0", Err("no frequency or period")),
            ("perf_event/type=1,frequency=9", Err("no config")),
            (
                "perf_event/type=x,config=0,frequency=1",
                Err("is not a number"),
            ),
            ("perf_event/type=1,config=0,frequency=0", Err("above zero")),
            (
                "perf_event/type=1,config=0,colour=3",
                Err("unknown parameter"),
            ),
            ("xdp/", Err("expected xdp/INTERFACE")),
            ("", Err("does not say how")),
        ];
        for (section, expected) in cases {
            match (parse(section), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{section}"),
                (Err(err), Err(want)) => {
                    assert!(format!("{err:#}").contains(want), "{section}: {err:#}")
                }
                (got, want) => panic!("{section}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn classifies_kprobes_and_trampolines() {
        assert!(parse("kretprobe/x").unwrap().is_kprobe());
        assert!(parse("kretprobe.multi/x*").unwrap().is_kprobe_multi());
        assert!(!parse("kprobe.multi/x*").unwrap().is_kprobe());
        assert!(parse("fexit/x").unwrap().is_trampoline());
        assert!(!parse("tp_btf/x").unwrap().is_kprobe());
        assert!(!parse("tp_btf/x").unwrap().is_trampoline());
    }
}
