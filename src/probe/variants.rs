//! Choosing a config's variant ([`Variant`]) by what the running kernel has:
//! the arguments its tracepoints pass, read from its BTF, and the map types
//! it can create, probed through libbpf. Never by version number: distribution
//! kernels backport (Debian's 6.1.176 passes `mark_victim` the task and the
//! uid, its 5.10.223 only the pid).

use crate::program::LeftOut;
use crate::spec::{Config, TracepointNeed, Variant};

use super::availability::KernelTypes;

/// The variant of `config` this kernel runs: the first whose needs it meets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fit {
    /// The other variants' programs and maps.
    pub left_out: LeftOut,
    /// Why each variant before the chosen one was passed over, one line each
    /// (for `-v`).
    pub passed_over: Vec<String>,
}

/// The fit of `config` on this kernel; configs without variants load whole.
/// Err: why none of its variants can run here, in one line.
pub fn fit(config: &Config, kernel: &KernelTypes) -> Result<Fit, String> {
    if let Some(reason) = config.builtin.not_on_arch(std::env::consts::ARCH) {
        return Err(reason);
    }
    let variants = &config.builtin.variants;
    let mut passed_over = Vec::new();
    for (index, variant) in variants.iter().enumerate() {
        match unmet_need(variant, kernel) {
            Some(reason) => passed_over.push(reason),
            None => {
                return Ok(Fit {
                    left_out: leaving_out(variants, index),
                    passed_over,
                })
            }
        }
    }
    match passed_over.as_slice() {
        [] => Ok(Fit::default()),
        [one] => Err(one.clone()),
        many => Err(format!("no variant fits this kernel: {}", many.join("; "))),
    }
}

/// What choosing `variants[chosen]` leaves out: every other variant's
/// programs, and their maps that the chosen one does not use.
fn leaving_out(variants: &[Variant], chosen: usize) -> LeftOut {
    let mut left_out = LeftOut::default();
    let kept = &variants[chosen];
    for (_, other) in variants.iter().enumerate().filter(|(i, _)| *i != chosen) {
        left_out.programs.extend(other.programs.iter().cloned());
        left_out.maps.extend(
            other
                .maps
                .iter()
                .filter(|map| !kept.maps.contains(map))
                .cloned(),
        );
    }
    left_out
}

/// The first need of `variant` this kernel does not meet, in words.
fn unmet_need(variant: &Variant, kernel: &KernelTypes) -> Option<String> {
    let programs = variant.programs.join(", ");
    for text in &variant.tracepoints {
        let need = match TracepointNeed::parse(text) {
            Ok(need) => need,
            Err(err) => return Some(format!("{programs}: {err}")),
        };
        let args = match kernel.tracepoint_args(&need.name) {
            Ok(Some(args)) => args,
            Ok(None) => {
                return Some(format!(
                    "{programs} needs the tracepoint {}, which this kernel's BTF does not have",
                    need.name
                ))
            }
            Err(why) => {
                return Some(format!(
                    "{programs} needs the tracepoint {}: {why}",
                    need.name
                ))
            }
        };
        if !args.starts_with(&need.args) {
            return Some(format!(
                "{programs} needs the tracepoint {}({}), this kernel's is {}({})",
                need.name,
                need.args.join(", "),
                need.name,
                args.join(", ")
            ));
        }
    }
    for map_type in &variant.map_types {
        match kernel.can_create_map(map_type) {
            Ok(true) => {}
            Ok(false) => {
                return Some(format!(
                    "{programs} needs {map_type} maps, which this kernel cannot create"
                ))
            }
            Err(err) => return Some(format!("{programs} needs {map_type} maps: {err}")),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(programs: &[&str], maps: &[&str]) -> Variant {
        Variant {
            programs: programs.iter().map(|p| p.to_string()).collect(),
            maps: maps.iter().map(|m| m.to_string()).collect(),
            ..Variant::default()
        }
    }

    #[test]
    fn the_chosen_variant_keeps_its_programs_and_maps() {
        let variants = [
            variant(&["a_storage", "b_storage"], &["storage", "shared"]),
            variant(&["a_hash", "b_hash"], &["hash", "shared"]),
            variant(&["a_other"], &[]),
        ];
        let cases: &[(usize, &[&str], &[&str])] = &[
            (0, &["a_hash", "b_hash", "a_other"], &["hash"]),
            (1, &["a_storage", "b_storage", "a_other"], &["storage"]),
            (
                2,
                &["a_storage", "b_storage", "a_hash", "b_hash"],
                &["storage", "shared", "hash", "shared"],
            ),
        ];
        for (chosen, programs, maps) in cases {
            let left_out = leaving_out(&variants, *chosen);
            assert_eq!(left_out.programs, *programs, "variant {chosen}");
            assert_eq!(left_out.maps, *maps, "variant {chosen}");
        }
    }

    /// A built-in of other architectures is refused with its reason before
    /// the kernel is asked anything; pagefaults exists on x86_64 only.
    #[test]
    fn builtins_of_other_architectures_are_refused() {
        let mut config = crate::builtin::find("pagefaults")
            .unwrap()
            .config()
            .unwrap();
        assert_eq!(config.builtin.not_on_arch("x86_64"), None);
        let reason = config.builtin.not_on_arch("aarch64").unwrap();
        assert!(
            reason.starts_with("x86_64 only, and this is aarch64: ")
                && reason.contains("page_fault_user"),
            "{reason}"
        );
        config.builtin.arches = vec!["no_such_arch".into()];
        config.builtin.arches_reason = String::new();
        assert_eq!(
            fit(&config, &KernelTypes::load()).unwrap_err(),
            format!("no_such_arch only, and this is {}", std::env::consts::ARCH)
        );
        for builtin in crate::builtin::BUILTINS {
            let builtin = builtin.config().unwrap().builtin;
            assert!(
                builtin.arches.is_empty() || !builtin.arches_reason.is_empty(),
                "arches without a reason"
            );
        }
    }

    /// Against this machine's kernel: every built-in's variants parse, and
    /// the needs read from its BTF are what they are on every kernel since
    /// 5.10 (sys_enter's arguments), or absent.
    #[test]
    fn needs_are_read_from_the_kernel() {
        let kernel = KernelTypes::load();
        if !std::path::Path::new(crate::probe::host::BTF_PATH).exists() {
            eprintln!("SKIPPED needs_are_read_from_the_kernel: no kernel BTF here");
            return;
        }
        let sys_enter = kernel.tracepoint_args("sys_enter");
        let Ok(Some(sys_enter)) = sys_enter else {
            panic!("sys_enter's arguments from the kernel's BTF: {sys_enter:?}");
        };
        assert_eq!(sys_enter, ["struct pt_regs *", "long int"]);
        assert_eq!(kernel.tracepoint_args("no_such_tracepoint_here"), Ok(None));
        let mut config = crate::builtin::find("syscalls").unwrap().config().unwrap();
        let need = |tracepoint: &str| Variant {
            tracepoints: vec![tracepoint.into()],
            ..variant(&["p"], &[])
        };
        config.builtin.variants = vec![need("sys_enter(struct pt_regs *, long int, int)")];
        let err = fit(&config, &kernel).unwrap_err();
        assert_eq!(
            err,
            "p needs the tracepoint sys_enter(struct pt_regs *, long int, int), \
             this kernel's is sys_enter(struct pt_regs *, long int)"
        );
        config
            .builtin
            .variants
            .push(need("sys_enter(struct pt_regs *)"));
        let chosen = fit(&config, &kernel).unwrap();
        assert_eq!(chosen.passed_over, [err]);
        config.builtin.variants = vec![Variant {
            map_types: vec!["no_such_type".into()],
            ..variant(&["p"], &[])
        }];
        assert_eq!(
            fit(&config, &kernel).unwrap_err(),
            "p needs no_such_type maps: libbpf knows no map type \"no_such_type\""
        );
        for builtin in crate::builtin::BUILTINS {
            let config = builtin.config().unwrap();
            if let Err(reason) = fit(&config, &kernel) {
                eprintln!("{}: {reason}", builtin.name);
            }
        }
    }
}
