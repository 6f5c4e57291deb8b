//! Why a load or an attach failed, in one line a user can act on: missing
//! privileges, a kernel without the attach target, trampolines refused, or
//! the verifier's reason (the useful tail of its log).

use anyhow::anyhow;

use super::{availability, host, libbpf_log, point_of, AttachPoint};

/// Explains a failed load: privileges, a trampoline refused by the kernel, or
/// the verifier's reason (the useful tail of its log).
pub(super) fn load_error(
    name: &str,
    points: &[AttachPoint],
    err: &libbpf_rs::Error,
) -> anyhow::Error {
    let log = libbpf_log::take();
    let permission_denied = err.kind() == libbpf_rs::ErrorKind::PermissionDenied;
    if permission_denied && !host::effective_capabilities().is_ok_and(host::can_trace) {
        return anyhow!(
            "{name}: the kernel refused to load the program: {}",
            host::PRIVILEGE_ADVICE
        );
    }
    // libbpf resolves a tp_btf/fentry target by name before any load.
    let missing_target = libbpf_said_of(&log, points, "failed to find kernel BTF type ID of '")
        .and_then(|(point, rest)| Some((point, rest.split_once('\'')?.0)));
    if let Some((point, target)) = missing_target {
        let (prog, section) = (&point.program, &point.section);
        return anyhow!(
            "{name}: program {prog} (section {section}): this kernel has no {target} to attach to: \
             check the name against /sys/kernel/tracing/available_events (tracepoints) or \
             available_filter_functions (functions)"
        );
    }
    let failed = libbpf_said_of(&log, points, "BPF program load failed").map(|(point, _)| point);
    let verifier_said = log.contains("-- BEGIN PROG LOAD LOG --");
    let what = match failed {
        Some(point) => format!("program {} (section {})", point.program, point.section),
        None => "the object".to_string(),
    };
    let refused = permission_denied && !verifier_said;
    if let Some(why) = failed.and_then(|point| attach_type_missing(point, &what, refused)) {
        return anyhow!("{name}: {why}");
    }
    let tail = libbpf_log::useful_tail(&log, 8);
    // The kernel answers EACCES when the verifier refuses a program: not a
    // privilege problem, whatever the errno's name says.
    let mut message = if verifier_said {
        format!("{name}: the verifier rejected {what}: {err}")
    } else {
        format!("{name}: loading {what} failed: {err}")
    };
    if !tail.is_empty() {
        message.push_str("; verifier log tail:\n    ");
        message.push_str(&tail.join("\n    "));
    }
    anyhow!(message)
}

/// Why `what`, the program at `point`, could not load, when it is its
/// attach type that this kernel lacks (`refused`: EACCES before the
/// verifier ran).
fn attach_type_missing(point: &AttachPoint, what: &str, refused: bool) -> Option<String> {
    let AttachPoint {
        section, attach, ..
    } = point;
    // A kprobe.multi program calling bpf_get_func_ip is refused by the
    // verifier on kernels without fprobe, whose real lack is the link.
    if attach.is_kprobe_multi() {
        if let Some(reason) = availability::KernelTypes::load().missing(section, attach) {
            return Some(format!("cannot load {what}: {reason}"));
        }
    }
    // Refused before the verifier ran (no log of it): EACCES from a
    // verifier that rejected the program looks the same to libbpf.
    if !(attach.is_trampoline() && refused) {
        return None;
    }
    let lockdown = host::lockdown()
        .map(|mode| format!(" (kernel lockdown: {mode})"))
        .unwrap_or_default();
    Some(format!(
        "the kernel refused to load {what}: fentry/fexit/lsm programs need BPF trampolines, \
         which this kernel does not allow{lockdown}: use tp_btf, raw_tp or a tracepoint instead"
    ))
}

/// The first line of libbpf's `log` of the form `prog 'NAME': MESSAGE…`:
/// the attach point of program NAME and what follows MESSAGE.
fn libbpf_said_of<'p, 'l>(
    log: &'l str,
    points: &'p [AttachPoint],
    message: &str,
) -> Option<(&'p AttachPoint, &'l str)> {
    let (prog, rest) = log.lines().find_map(|line| {
        let (prog, said) = line.split_once("prog '")?.1.split_once("': ")?;
        Some((prog, said.strip_prefix(message)?))
    })?;
    Some((point_of(points, prog)?, rest))
}

pub(super) fn attach_error(name: &str, point: &AttachPoint, err: &anyhow::Error) -> anyhow::Error {
    let AttachPoint {
        program: prog,
        section,
        attach,
    } = point;
    let what = format!("{name}: cannot attach program {prog} (section {section})");
    // The kernel's own answer (ENOENT, EOPNOTSUPP, EINVAL) rarely says which
    // of these it was.
    if attach.is_kprobe() || attach.is_kprobe_multi() {
        if let Some(reason) = availability::KernelTypes::load().missing(section, attach) {
            return anyhow!("{what}: {reason}");
        }
    }
    // ENOTSUPP (524) from the attach of a program that loaded: the kernel
    // has BPF trampolines but cannot call them from a kernel function's
    // entry (no ftrace direct calls: arm64 before Linux 6.4).
    if attach.is_trampoline() && format!("{err:#}").contains("(os error 524)") {
        libbpf_log::take();
        return anyhow!(
            "{what}: this kernel cannot attach fentry/fexit programs to kernel functions \
             (no ftrace direct calls: arm64 has them from Linux 6.4): use kprobe or kretprobe sections"
        );
    }
    anyhow!("{what}: {err:#}{}", last_message(&libbpf_log::take()))
}

pub(super) fn last_message(log: &str) -> String {
    log.lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .map(|line| format!(" (libbpf: {})", line.trim_start_matches("libbpf: ").trim()))
        .unwrap_or_default()
}
