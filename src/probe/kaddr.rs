//! `kaddrs`: kernel symbol addresses written into the object's
//! `kaddr_<symbol>` variables before load (ebpf_exporter's convention), so a
//! program can compare a pointer with, say, a function's address.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use libbpf_rs::btf::types::{DataSec, Var};
use libbpf_rs::btf::Btf;
use libbpf_rs::{AsRawLibbpf, OpenObject};

/// Addresses of `symbols` from kallsyms text (`ADDR TYPE NAME [MODULE]`).
pub fn resolve(kallsyms: &str, symbols: &[String]) -> Result<BTreeMap<String, u64>> {
    let mut found = BTreeMap::new();
    for line in kallsyms.lines() {
        let mut fields = line.split_whitespace();
        let (Some(addr), Some(_), Some(name)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if symbols.iter().any(|s| s == name) && !found.contains_key(name) {
            let addr = u64::from_str_radix(addr, 16)
                .with_context(|| format!("bad kallsyms line {line:?}"))?;
            found.insert(name.to_string(), addr);
        }
    }
    for symbol in symbols {
        match found.get(symbol) {
            None => bail!("kaddrs: kernel symbol {symbol:?} is not in /proc/kallsyms"),
            Some(0) => bail!(
                "kaddrs: /proc/kallsyms hides addresses from this process (it needs CAP_SYSLOG, \
                 and kernel.kptr_restrict < 2): run as root"
            ),
            Some(_) => {}
        }
    }
    Ok(found)
}

/// Writes each address into the variable `kaddr_<symbol>` of the object's
/// data sections (.rodata, .data, .bss).
pub fn set(object: &mut OpenObject, addresses: &BTreeMap<String, u64>) -> Result<()> {
    if addresses.is_empty() {
        return Ok(());
    }
    // (section, offset) of every wanted variable, read from the object's BTF
    // before any map is borrowed mutably.
    let mut places: BTreeMap<String, (String, usize)> = BTreeMap::new();
    {
        // SAFETY: the pointer is valid for as long as `object`, and `btf` is
        // dropped at the end of this block, before `object` is mutated.
        let raw = unsafe { object.as_libbpf_object().as_ref() };
        let btf = Btf::from_bpf_object(raw)
            .context("reading the object's BTF")?
            .context("the object has no BTF")?;
        for section in [".rodata", ".data", ".bss"] {
            let Some(datasec) = btf.type_by_name::<DataSec<'_>>(section) else {
                continue;
            };
            for var in datasec.iter() {
                let Some(name) = btf.type_by_id::<Var<'_>>(var.ty).and_then(|v| v.name()) else {
                    continue;
                };
                let name = name.to_string_lossy();
                if let Some(symbol) = name.strip_prefix("kaddr_") {
                    if addresses.contains_key(symbol) && var.size == 8 {
                        places.insert(
                            symbol.to_string(),
                            (section.to_string(), var.offset as usize),
                        );
                    }
                }
            }
        }
    }
    for (symbol, address) in addresses {
        let Some((section, offset)) = places.get(symbol) else {
            bail!("kaddrs lists {symbol:?} but the object has no 8-byte global variable kaddr_{symbol}");
        };
        let mut written = false;
        for mut map in object.maps_mut() {
            if !map.name().to_string_lossy().ends_with(section.as_str()) {
                continue;
            }
            let data = map
                .initial_value_mut()
                .with_context(|| format!("section {section} has no initial value"))?;
            let slot = data
                .get_mut(*offset..offset + 8)
                .with_context(|| format!("kaddr_{symbol} lies outside {section}"))?;
            slot.copy_from_slice(&address.to_ne_bytes());
            written = true;
        }
        if !written {
            bail!("kaddr_{symbol}: the object has no {section} map");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KALLSYMS: &str = "ffffffff81000000 T _stext\n\
                            ffffffff81234560 T do_sys_openat2\n\
                            ffffffffc0001000 t helper\t[mod]\n";

    #[test]
    fn resolves_symbols() {
        let found = resolve(KALLSYMS, &["do_sys_openat2".into(), "helper".into()]).unwrap();
        assert_eq!(found["do_sys_openat2"], 0xffffffff81234560);
        assert_eq!(found["helper"], 0xffffffffc0001000);
        assert!(resolve(KALLSYMS, &[]).unwrap().is_empty());
    }

    #[test]
    fn missing_or_hidden_symbols_are_errors() {
        let err = resolve(KALLSYMS, &["nope".into()]).unwrap_err().to_string();
        assert!(err.contains("\"nope\" is not in /proc/kallsyms"), "{err}");
        let hidden = "0000000000000000 T do_sys_openat2\n";
        let err = resolve(hidden, &["do_sys_openat2".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("CAP_SYSLOG"), "{err}");
    }
}
