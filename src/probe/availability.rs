//! What this kernel has, found without loading anything (so `bpfsnap list`
//! needs no privileges): whether a program's attach points exist (tp_btf and
//! raw_tp targets in the kernel's BTF, classic tracepoints in tracefs, kprobe
//! and perf event support in sysfs), the arguments its tracepoints pass and
//! the map types it can create (what [`super::variants`] chooses by).

use std::cell::OnceCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use libbpf_rs::MapType;

use crate::spec::normalise_type;

use super::host;
use super::raw_btf::{kind, RawBtf, Type};
use super::section::Attach;

/// tracefs's events directory, where it is mounted (the usual place first).
fn tracefs_events() -> Option<&'static str> {
    [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .into_iter()
    .find(|dir| Path::new(dir).is_dir())
}

/// Looks up attach points in tracefs and the kernel's type information,
/// each read only if needed.
pub struct KernelTypes {
    /// The kernel's BTF: its own, or --btf's file.
    btf_path: PathBuf,
    btf: OnceCell<Arc<Result<RawBtf, String>>>,
    events: OnceCell<Option<HashSet<String>>>,
}

impl KernelTypes {
    pub fn load() -> KernelTypes {
        let path = host::external_btf().unwrap_or(Path::new(host::BTF_PATH));
        KernelTypes::with_btf(path)
    }

    /// Types read from the BTF file at `path` instead of the kernel's.
    fn with_btf(path: &Path) -> KernelTypes {
        KernelTypes {
            btf_path: path.to_path_buf(),
            btf: OnceCell::new(),
            events: OnceCell::new(),
        }
    }

    /// The kernel's BTF, mapped and indexed in place ([`RawBtf`]: this runs
    /// before any program loads); or why it cannot be read, with the file
    /// and the error: a kernel whose types cannot be read is not one
    /// without the types looked up.
    fn btf(&self) -> Result<&RawBtf, String> {
        let btf = self
            .btf
            .get_or_init(|| match self.btf_path == Path::new(host::BTF_PATH) {
                true => RawBtf::kernel(),
                false => Arc::new(RawBtf::open(&self.btf_path)),
            });
        let cannot = |err: &String| format!("cannot read the kernel's types: {err}");
        btf.as_ref().as_ref().map_err(cannot)
    }

    /// Names of the tracepoints tracefs lists (≈ 1 ms: one directory read
    /// per subsystem); None without tracefs.
    fn events(&self) -> Option<&HashSet<String>> {
        self.events
            .get_or_init(|| {
                let root = tracefs_events()?;
                let mut names = HashSet::new();
                for system in std::fs::read_dir(root).ok()?.flatten() {
                    let Ok(events) = std::fs::read_dir(system.path()) else {
                        continue; // a file (enable, header_page, ...)
                    };
                    names.extend(
                        events
                            .flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned()),
                    );
                }
                Some(names)
            })
            .as_ref()
    }

    /// Why `section` (parsed as `attach`) cannot attach here, if it cannot.
    pub fn missing(&self, section: &str, attach: &Attach) -> Option<String> {
        let target = section.split_once('/').map_or("", |(_, rest)| rest);
        match attach.kind() {
            "tp_btf" | "tp_btf.s" if !Path::new(host::BTF_PATH).exists() => Some(format!(
                "this kernel has no BTF of its own ({}), which tp_btf programs need",
                host::BTF_PATH
            )),
            "tp_btf" | "raw_tp" | "raw_tracepoint" | "tp_btf.s" => {
                // A tracepoint with an event in tracefs has its raw
                // tracepoint and btf_trace_ type: no need to parse the BTF.
                // Only tracepoints without an event need the BTF.
                if self.events().is_some_and(|events| events.contains(target)) {
                    return None;
                }
                let btf = match self.btf() {
                    Ok(btf) => btf,
                    Err(why) => return Some(why),
                };
                let name = format!("btf_trace_{target}");
                btf.find(kind::TYPEDEF, &name)
                    .is_none()
                    .then(|| format!("no tracepoint {target} in this kernel"))
            }
            "tracepoint" | "tp" => {
                let events = tracefs_events()?;
                (!Path::new(events).join(target).is_dir())
                    .then(|| format!("no tracepoint {target} in this kernel"))
            }
            _ if attach.is_kprobe() => kprobe_missing(target),
            _ if attach.is_kprobe_multi() => match self.has_fprobe() {
                Ok(true) => None,
                Ok(false) => Some(
                    "this kernel cannot attach kprobe.multi programs (it has no fprobe: \
                     CONFIG_FPROBE is off): use kprobe or kretprobe sections"
                        .to_string(),
                ),
                Err(why) => Some(why),
            },
            _ => None,
        }
    }

    /// Whether the kernel has fprobe, which kprobe.multi links are made of:
    /// their type is in its BTF only then.
    fn has_fprobe(&self) -> Result<bool, String> {
        let btf = self.btf()?;
        Ok(btf.find(kind::STRUCT, "bpf_kprobe_multi_link").is_some())
    }

    /// The argument types of tracepoint `name` as the kernel's BTF declares
    /// them (`btf_trace_NAME`: a pointer to a function whose first argument,
    /// the tracepoint's own `void *`, is left out), in C spelling normalised
    /// like a variant's needs; None without the tracepoint, Err when the
    /// BTF cannot be read.
    pub fn tracepoint_args(&self, name: &str) -> Result<Option<Vec<String>>, String> {
        let btf = self.btf()?;
        Ok(tracepoint_args_in(btf, name))
    }

    /// Whether this kernel can create maps of type `name` (libbpf's names:
    /// `task_storage`): libbpf's feature probe, which creates one; without
    /// the privileges for that, whether the kernel's BTF knows the type.
    pub fn can_create_map(&self, name: &str) -> Result<bool, String> {
        let map_type =
            map_type_named(name).ok_or_else(|| format!("libbpf knows no map type {name:?}"))?;
        if let Ok(supported) = map_type.is_supported() {
            return Ok(supported);
        }
        let btf = self.btf()?;
        let wanted = format!("BPF_MAP_TYPE_{}", name.to_ascii_uppercase());
        let (_, types) = btf
            .find(kind::ENUM, "bpf_map_type")
            .ok_or("the kernel's BTF has no enum bpf_map_type")?;
        let known = btf.enumerators(&types).any(|value| value == wanted);
        Ok(known)
    }
}

/// [`KernelTypes::tracepoint_args`] in `btf`.
fn tracepoint_args_in(btf: &RawBtf, name: &str) -> Option<Vec<String>> {
    let (_, typedef) = btf.find(kind::TYPEDEF, &format!("btf_trace_{name}"))?;
    let pointer = btf.type_by_id(typedef.size_or_type)?;
    let proto = btf.type_by_id(pointer.size_or_type)?;
    if pointer.kind != kind::PTR || proto.kind != kind::FUNC_PROTO {
        return None;
    }
    Some(
        btf.params(&proto)
            .skip(1)
            .map(|param| normalise_type(&c_type(btf, param, 0)))
            .collect(),
    )
}

/// Why a kprobe on `target` (`FUNCTION` or `FUNCTION+OFFSET`, as in its
/// section) cannot attach here, if something says so: no kprobes at all, or
/// no such function (modules' functions are there only while loaded).
fn kprobe_missing(target: &str) -> Option<String> {
    if !Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        return Some(
            "this kernel has no kprobe support (CONFIG_KPROBES is off): \
             use a tracepoint, raw_tp or tp_btf program instead"
                .into(),
        );
    }
    let function = target.split('+').next().unwrap_or_default();
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").ok()?;
    // Lines are "ADDRESS TYPE NAME[\t[MODULE]]".
    let known = kallsyms
        .lines()
        .any(|line| line.split_whitespace().nth(2) == Some(function));
    (!function.is_empty() && !known).then(|| {
        format!(
            "this kernel has no function {function} to probe (/proc/kallsyms lists those it \
             has; a module's functions are there only while it is loaded)"
        )
    })
}

/// The map type libbpf calls `name`.
fn map_type_named(name: &str) -> Option<MapType> {
    // libbpf names every type it knows and returns NULL past the last.
    (1..256u32).find_map(|number| {
        // SAFETY: returns a static string or NULL.
        let text = unsafe { libbpf_sys::libbpf_bpf_map_type_str(number) };
        if text.is_null() {
            return None;
        }
        // SAFETY: libbpf's names are NUL-terminated static strings.
        let known = unsafe { std::ffi::CStr::from_ptr(text) };
        (known.to_str() == Ok(name)).then(|| MapType::from(number))
    })
}

/// Type `id` in C spelling, as bpftool prints it (`const struct sock *`);
/// `depth` bounds the walk through pointers and modifiers.
fn c_type(btf: &RawBtf, id: u32, depth: usize) -> String {
    let Some(ty) = btf.type_by_id(id).filter(|_| depth < 16) else {
        return "void".into();
    };
    let name = |ty: &Type<'_>| btf.name(ty).unwrap_or_default().to_string();
    let inner = || c_type(btf, ty.size_or_type, depth + 1);
    match ty.kind {
        kind::PTR => format!("{} *", inner()),
        kind::CONST => format!("const {}", inner()),
        kind::VOLATILE => format!("volatile {}", inner()),
        kind::RESTRICT | kind::TYPE_TAG => inner(),
        kind::STRUCT => format!("struct {}", name(&ty)),
        kind::FWD if !ty.kind_flag => format!("struct {}", name(&ty)),
        kind::UNION | kind::FWD => format!("union {}", name(&ty)),
        kind::ENUM | kind::ENUM64 => format!("enum {}", name(&ty)),
        kind::FUNC_PROTO => "function".into(),
        _ => name(&ty),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::section;

    #[test]
    fn finds_tp_btf_targets_in_kernel_btf() {
        if !Path::new(host::BTF_PATH).exists() {
            return; // no BTF on this machine: nothing to look up
        }
        let kernel = KernelTypes::load();
        let check = |s: &str| kernel.missing(s, &section::parse(s).unwrap());
        assert_eq!(check("tp_btf/sys_enter"), None);
        assert_eq!(check("tp_btf/sched_switch"), None);
        // A bare tracepoint (no tracefs event): found in the BTF, on kernels
        // whose BTF has it (5.10's has no bare tracepoints).
        if let Ok(Some(_)) = kernel.tracepoint_args("sched_update_nr_running_tp") {
            assert_eq!(check("tp_btf/sched_update_nr_running_tp"), None);
        }
        assert_eq!(
            check("tp_btf/no_such_tracepoint").as_deref(),
            Some("no tracepoint no_such_tracepoint in this kernel")
        );
        assert_eq!(check("perf_event/type=1,config=0,frequency=99"), None);
    }
}

/// A BTF file that cannot be read is said to be so, with its path and
/// why, wherever its types are asked for: not taken for a kernel without
/// the tracepoint or fprobe.
#[cfg(test)]
mod unreadable {
    use super::*;
    use crate::probe::section;

    #[test]
    fn an_unreadable_btf_is_named_not_taken_for_missing_types() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (dir.path().join("absent.btf"), "No such file or directory"),
            (
                dir.path().join("garbage.btf"),
                "neither raw BTF nor an ELF file",
            ),
            // This test's own executable: ELF, without a .BTF section.
            (
                std::env::current_exe().unwrap(),
                "an ELF file without usable BTF",
            ),
        ];
        std::fs::write(&cases[1].0, [0x5a; 256]).unwrap();
        for (path, why) in &cases {
            let kernel = KernelTypes::with_btf(path);
            let err = kernel
                .tracepoint_args("no_such_event_anywhere")
                .unwrap_err();
            let expected = format!("cannot read the kernel's types: {}: ", path.display());
            assert!(err.starts_with(&expected) && err.contains(why), "{err}");
            for s in ["tp_btf/no_such_event_anywhere", "kprobe.multi/vfs_*"] {
                let missing = kernel.missing(s, &section::parse(s).unwrap());
                assert_eq!(missing.as_deref(), Some(err.as_str()), "{s}");
            }
        }
    }
}

/// The raw reader against libbpf's parser, on the running kernel's BTF.
#[cfg(test)]
mod against_libbpf {
    use libbpf_rs::btf::types::{FuncProto, Typedef};
    use libbpf_rs::btf::{Btf, BtfKind, BtfType, ReferencesType};

    use super::*;

    /// c_type, spelled through libbpf-rs's types.
    fn libbpf_c_type(ty: Option<BtfType<'_>>, depth: usize) -> String {
        let Some(ty) = ty.filter(|_| depth < 16) else {
            return "void".into();
        };
        let name = || {
            ty.name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let inner = || libbpf_c_type(ty.next_type(), depth + 1);
        match ty.kind() {
            BtfKind::Void => "void".into(),
            BtfKind::Ptr => format!("{} *", inner()),
            BtfKind::Const => format!("const {}", inner()),
            BtfKind::Volatile => format!("volatile {}", inner()),
            BtfKind::Restrict | BtfKind::TypeTag => inner(),
            BtfKind::Struct | BtfKind::Fwd => format!("struct {}", name()),
            BtfKind::Union => format!("union {}", name()),
            BtfKind::Enum | BtfKind::Enum64 => format!("enum {}", name()),
            BtfKind::FuncProto => "function".into(),
            _ => name(),
        }
    }

    #[test]
    fn tracepoints_arguments_read_as_libbpf_reads_them() {
        let (Ok(btf), Some(events)) = (Btf::from_vmlinux(), KernelTypes::load().events().cloned())
        else {
            eprintln!("SKIPPED tracepoints_arguments_read_as_libbpf_reads_them: no BTF or tracefs");
            return;
        };
        let kernel = KernelTypes::load();
        // 150 of the ≈ 1,500 spread over the alphabet (each lookup searches
        // the string section: all of them take minutes in an emulated VM).
        let mut events: Vec<String> = events.into_iter().collect();
        events.sort_unstable();
        let step = events.len().div_ceil(150).max(1);
        let mut compared = 0;
        for name in events.iter().step_by(step) {
            let Some(typedef) = btf.type_by_name::<Typedef<'_>>(&format!("btf_trace_{name}"))
            else {
                assert_eq!(kernel.tracepoint_args(name), Ok(None), "{name}");
                continue;
            };
            let proto = typedef.referenced_type().next_type();
            let Some(proto) = proto.and_then(|p| FuncProto::try_from(p).ok()) else {
                continue;
            };
            let expected: Vec<String> = proto
                .iter()
                .skip(1)
                .map(|param| normalise_type(&libbpf_c_type(btf.type_by_id(param.ty), 0)))
                .collect();
            assert_eq!(kernel.tracepoint_args(name), Ok(Some(expected)), "{name}");
            compared += 1;
        }
        assert!(compared > 50, "only {compared} tracepoints compared");
        for name in [
            "sys_enter",
            "sched_process_exit",
            "mark_victim",
            "kfree_skb",
        ] {
            assert!(
                matches!(kernel.tracepoint_args(name), Ok(Some(_))),
                "{name}"
            );
        }
        assert_eq!(kernel.can_create_map("hash"), Ok(true));
    }
}
