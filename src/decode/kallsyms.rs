//! The kernel symbol table behind `ksym` and `kstack`: /proc/kallsyms read
//! into one sorted table, shared by every decoder of the process.
//!
//! Like ebpf_exporter, an address resolves to the nearest symbol at or below
//! it (of several at one address, the first kallsyms lists), and an address
//! below every symbol re-reads kallsyms (modules and BPF programs come and
//! go), here at most once per reload interval.
//!
//! Why not a symbolizer crate: blazesym, used before, cost about 450 ns and
//! 200 bytes per address of a snapshot on top of reading the file, so that
//! a million-address map took 4.7× the time to read it; a lookup here is a
//! binary search over 8-byte addresses. Reading the file (121k lines, ~35 ms
//! on 6.18) starts in the background once the probes are attached
//! ([`Kallsyms::preload`]), so a snapshot rarely waits for it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, RwLock, RwLockReadGuard};
use std::thread;
use std::time::{Duration, Instant};

/// The running kernel's symbols.
const SYSTEM_PATH: &str = "/proc/kallsyms";
/// Minimum time between two reloads of kallsyms caused by unknown addresses.
const SYSTEM_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// The symbol table of `/proc/kallsyms`, shared by every `ksym` and `kstack`
/// decoder. Nothing is read until the first lookup or [`Kallsyms::preload`].
pub fn system() -> &'static Kallsyms {
    static SYSTEM: LazyLock<Kallsyms> =
        LazyLock::new(|| Kallsyms::new(PathBuf::from(SYSTEM_PATH), SYSTEM_RELOAD_INTERVAL));
    &SYSTEM
}

/// One kallsyms file, read when first needed and again when an address
/// falls below every symbol and the last read is at least `reload_interval`
/// old.
pub struct Kallsyms {
    path: PathBuf,
    reload_interval: Duration,
    loaded: RwLock<Loaded>,
}

/// One reading of the file: its table, or why it gave none, and when (never
/// read yet: `None`).
struct Loaded {
    table: Result<Table, String>,
    at: Option<Instant>,
}

/// Symbols sorted by address, one per address.
#[derive(Default)]
struct Table {
    addrs: Vec<u64>,
    /// Every [`SAMPLE`]th address: a lookup searches these first (a few KiB,
    /// in cache), then one stretch of `addrs`, so that addresses looked up
    /// in any order cost about what they cost in address order.
    sampled: Vec<u64>,
    /// Each symbol's name: where it ends in `names` (it starts where the
    /// previous one ends).
    ends: Vec<u32>,
    names: String,
}

/// Addresses per sample of [`Table::sampled`]: a stretch of 64 u64 is
/// eight cache lines.
const SAMPLE: usize = 64;

impl Kallsyms {
    /// A table over the kallsyms file at `path`; an unknown address reloads
    /// the file if the last load is at least `reload_interval` old.
    pub fn new(path: PathBuf, reload_interval: Duration) -> Kallsyms {
        Kallsyms {
            path,
            reload_interval,
            loaded: RwLock::new(Loaded {
                table: Ok(Table::default()),
                at: None,
            }),
        }
    }

    /// Reads the file in a thread of its own unless it is already read, so
    /// that the first snapshot finds it ready.
    pub fn preload(&'static self) {
        let spawned = thread::Builder::new()
            .name("bpfsnap-kallsyms".into())
            .spawn(|| drop(self.current()));
        // Without a thread the first lookup reads it.
        drop(spawned);
    }

    /// Hands `write` the name of the symbol each of `addrs` falls in, in
    /// order, with its index (`None`: below the first symbol). When one has
    /// none and the table may be reloaded, `out` is cut back to its length
    /// on entry, the file read again and every address handed over again.
    /// Fails when kallsyms cannot be read or has no usable addresses
    /// (without root or CAP_SYSLOG they all read as 0).
    pub fn resolve<W>(&self, addrs: &[u64], out: &mut Vec<u8>, mut write: W) -> Result<(), String>
    where
        W: FnMut(&mut Vec<u8>, usize, u64, Option<&str>),
    {
        let start = out.len();
        {
            let current = self.current();
            let table = self.table(&current)?;
            let mut complete = true;
            for (index, &addr) in addrs.iter().enumerate() {
                let name = table.find(addr);
                // (Whether it may be reloaded is asked only of an address
                // without a symbol: it reads the clock.)
                if name.is_none() && self.expired(&current) {
                    complete = false;
                    break;
                }
                write(out, index, addr, name);
            }
            if complete {
                return Ok(());
            }
        }
        out.truncate(start);
        self.reload();
        let current = self.current();
        let table = self.table(&current)?;
        for (index, &addr) in addrs.iter().enumerate() {
            write(out, index, addr, table.find(addr));
        }
        Ok(())
    }

    /// The table of `current`.
    fn table<'a>(&self, current: &'a Loaded) -> Result<&'a Table, String> {
        current.table.as_ref().map_err(Clone::clone)
    }

    fn expired(&self, loaded: &Loaded) -> bool {
        loaded
            .at
            .is_none_or(|at| at.elapsed() >= self.reload_interval)
    }

    /// Whether `loaded` must be read (again) before a lookup: never read, or
    /// the last read failed and may be tried again.
    fn unusable(&self, loaded: &Loaded) -> bool {
        loaded.at.is_none() || (loaded.table.is_err() && self.expired(loaded))
    }

    /// The loaded table, reading the file first if need be.
    fn current(&self) -> RwLockReadGuard<'_, Loaded> {
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        if !self.unusable(&loaded) {
            return loaded;
        }
        drop(loaded);
        {
            let mut loaded = self.loaded.write().unwrap_or_else(|e| e.into_inner());
            // Another thread may have read it meanwhile.
            if self.unusable(&loaded) {
                *loaded = self.read();
            }
        }
        self.loaded.read().unwrap_or_else(|e| e.into_inner())
    }

    fn reload(&self) {
        let mut loaded = self.loaded.write().unwrap_or_else(|e| e.into_inner());
        // Another thread may have reloaded it meanwhile.
        if self.expired(&loaded) {
            *loaded = self.read();
        }
    }

    fn read(&self) -> Loaded {
        let table = std::fs::read(&self.path)
            .map_err(|err| {
                format!(
                    "cannot read kernel symbols from {}: {err}",
                    self.path.display()
                )
            })
            .and_then(|text| match Table::parse(&text) {
                table if table.addrs.is_empty() => Err(no_symbols(&self.path)),
                table => Ok(table),
            });
        Loaded {
            table,
            at: Some(Instant::now()),
        }
    }
}

impl Table {
    /// Parses kallsyms text (`ADDR TYPE NAME[\t[MODULE]]` lines). Lines with
    /// address 0 (hidden, or every one without CAP_SYSLOG) and lines that do
    /// not parse are left out.
    fn parse(text: &[u8]) -> Table {
        let mut symbols: Vec<(u64, u32, &[u8])> = Vec::new();
        for line in text.split(|&byte| byte == b'\n') {
            let mut fields = line
                .split(|byte| byte.is_ascii_whitespace())
                .filter(|field| !field.is_empty());
            let (Some(addr), Some(_kind), Some(name)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let addr = std::str::from_utf8(addr)
                .ok()
                .and_then(|addr| u64::from_str_radix(addr, 16).ok());
            if let Some(addr @ 1..) = addr {
                symbols.push((addr, symbols.len() as u32, name));
            }
        }
        // By address, then file order: the first of a shared address stays.
        symbols.sort_unstable_by_key(|&(addr, line, _)| (addr, line));
        symbols.dedup_by_key(|&mut (addr, _, _)| addr);
        let mut table = Table::default();
        for (addr, _, name) in symbols {
            table.addrs.push(addr);
            table.names.push_str(&String::from_utf8_lossy(name));
            table.ends.push(table.names.len() as u32);
        }
        table.sampled = table.addrs.iter().step_by(SAMPLE).copied().collect();
        table
    }

    /// The name of the nearest symbol at or below `addr`.
    fn find(&self, addr: u64) -> Option<&str> {
        // The stretch between the samples around `addr`, then the symbol.
        let from = self
            .sampled
            .partition_point(|&at| at <= addr)
            .checked_sub(1)?
            * SAMPLE;
        let stretch = &self.addrs[from..self.addrs.len().min(from + SAMPLE)];
        let index = from + stretch.partition_point(|&at| at <= addr) - 1;
        let start = match index {
            0 => 0,
            _ => self.ends[index - 1] as usize,
        };
        self.names.get(start..self.ends[index] as usize)
    }
}

/// Why a kallsyms file gave no symbols.
fn no_symbols(path: &Path) -> String {
    let first_line = std::fs::File::open(path)
        .ok()
        .and_then(|file| BufReader::new(file).lines().next())
        .and_then(Result::ok);
    if first_line.as_deref().is_some_and(address_is_zero) {
        format!(
            "{} shows every address as 0: resolving kernel addresses needs root or \
             CAP_SYSLOG (see sysctl kernel.kptr_restrict)",
            path.display()
        )
    } else {
        format!("{} lists no kernel symbols", path.display())
    }
}

/// Whether a kallsyms line (`ffffffff81000000 T _stext`) has address 0.
fn address_is_zero(line: &str) -> bool {
    line.split_ascii_whitespace()
        .next()
        .and_then(|addr| u64::from_str_radix(addr, 16).ok())
        == Some(0)
}

#[cfg(test)]
pub mod tests {
    use std::io::Write;

    use super::*;

    /// A symbolizer over a kallsyms text, leaked like the system one; the
    /// returned file must live as long as lookups happen.
    pub fn fake(
        text: &str,
        reload_interval: Duration,
    ) -> (&'static Kallsyms, tempfile::NamedTempFile) {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file.flush().unwrap();
        let kallsyms = Kallsyms::new(file.path().to_path_buf(), reload_interval);
        (Box::leak(Box::new(kallsyms)), file)
    }

    fn names(kallsyms: &Kallsyms, addrs: &[u64]) -> Vec<Option<String>> {
        let mut names = Vec::new();
        kallsyms
            .resolve(addrs, &mut Vec::new(), |_, index, _, name| {
                names.truncate(index);
                names.push(name.map(str::to_string));
            })
            .unwrap();
        names
    }

    fn resolve(kallsyms: &Kallsyms, addrs: &[u64]) -> Result<(), String> {
        kallsyms.resolve(addrs, &mut Vec::new(), |_, _, _, _| {})
    }

    #[test]
    fn resolves_to_the_nearest_symbol_below() {
        let (kallsyms, _file) = fake(
            "ffffffeb19a8a358 t mm_release\n\
             ffffffeb19a8a480 t __pidfd_prepare\n\
             ffffffc0801cedf4 t bpf_prog_9a4f2895a09f572a_mark_page_accessed\t[bpf]\n\
             ffffffff8b704104 T srso_alias_safe_ret\n",
            Duration::ZERO,
        );
        let some = |name: &str| Some(name.to_string());
        assert_eq!(
            names(
                kallsyms,
                &[
                    0xffffffeb19a8a480,
                    0xffffffeb19a8a482,
                    0xffffffeb19a8a478,
                    0xffffffc0801cee9c,
                    0xffffffff8b704109,
                    0x1,
                    0,
                ]
            ),
            vec![
                some("__pidfd_prepare"),
                some("__pidfd_prepare"),
                some("mm_release"),
                some("bpf_prog_9a4f2895a09f572a_mark_page_accessed"),
                some("srso_alias_safe_ret"),
                None,
                None,
            ]
        );
    }

    /// Past one sample's stretch: every address at, just below and just
    /// above each of 1,000 symbols (unevenly spaced) finds what a search
    /// of every address finds.
    #[test]
    fn finds_the_nearest_symbol_below_across_many_stretches() {
        let addrs: Vec<u64> = (0..1000u64).map(|n| 0x1000 + n * 16 + n % 7).collect();
        let text: String = addrs
            .iter()
            .enumerate()
            .map(|(n, addr)| format!("{addr:016x} T sym{n}\n"))
            .collect();
        let table = Table::parse(text.as_bytes());
        assert_eq!(table.sampled.len(), 1000usize.div_ceil(SAMPLE));
        let naive = |addr: u64| {
            addrs
                .iter()
                .rposition(|&at| at <= addr)
                .map(|n| format!("sym{n}"))
        };
        for &at in &addrs {
            for addr in [at - 1, at, at + 1] {
                assert_eq!(
                    table.find(addr).map(str::to_string),
                    naive(addr),
                    "{addr:#x}"
                );
            }
        }
        assert_eq!(table.find(u64::MAX), Some("sym999"));
    }

    #[test]
    fn of_symbols_at_one_address_names_the_first_listed() {
        let (kallsyms, _file) = fake(
            "0000000000000010 T second_in_order\n\
             0000000000000008 T alias_first\n\
             0000000000000008 t alias_second\n\
             junk line\n\
             0000000000000020\n",
            Duration::from_secs(3600),
        );
        let some = |name: &str| Some(name.to_string());
        assert_eq!(
            names(kallsyms, &[8, 0xf, 0x10, 0x30, 7]),
            vec![
                some("alias_first"),
                some("alias_first"),
                some("second_in_order"),
                some("second_in_order"),
                None,
            ]
        );
    }

    /// Changes a file the way /proc/kallsyms changes: same size and
    /// modification time, so that only an explicit reload sees it.
    fn change_in_place(file: &tempfile::NamedTempFile, text: &str) {
        let before = file.as_file().metadata().unwrap();
        assert_eq!(before.len(), text.len() as u64);
        std::fs::write(file.path(), text).unwrap();
        file.as_file()
            .set_modified(before.modified().unwrap())
            .unwrap();
    }

    #[test]
    fn reloads_on_a_miss_unless_loaded_recently() {
        // Address 0 lines are skipped, as for a hidden symbol.
        let before = "0000000000000004 T one\n0000000000000000 T zero\n";
        let after = "0000000000000004 T one\n0000000000000002 T zero\n";
        let (eager, eager_file) = fake(before, Duration::ZERO);
        let (lazy, lazy_file) = fake(before, Duration::from_secs(3600));
        let one = Some("one".to_string());
        assert_eq!(names(eager, &[3, 4]), vec![None, one.clone()]);
        assert_eq!(names(lazy, &[3, 4]), vec![None, one.clone()]);
        change_in_place(&eager_file, after);
        change_in_place(&lazy_file, after);
        assert_eq!(
            names(eager, &[3, 4]),
            vec![Some("zero".into()), one.clone()]
        );
        assert_eq!(names(lazy, &[3, 4]), vec![None, one]);
    }

    #[test]
    fn restricted_or_missing_kallsyms_is_an_error() {
        let (restricted, _file) = fake(
            "0000000000000000 T _stext\n0000000000000000 T schedule\n",
            Duration::ZERO,
        );
        let err = resolve(restricted, &[0xffffffff81000000]).unwrap_err();
        assert!(err.contains("CAP_SYSLOG"), "{err}");

        let (empty, _file) = fake("", Duration::ZERO);
        let err = resolve(empty, &[0xffffffff81000000]).unwrap_err();
        assert!(err.contains("lists no kernel symbols"), "{err}");

        let gone = Kallsyms::new("/nonexistent/kallsyms".into(), Duration::ZERO);
        let err = resolve(&gone, &[1]).unwrap_err();
        assert!(err.contains("/nonexistent/kallsyms"), "{err}");
    }

    #[test]
    fn recognises_zero_addresses() {
        assert!(address_is_zero("0000000000000000 T _stext"));
        assert!(!address_is_zero("ffffffff81000000 T _stext"));
        assert!(!address_is_zero(""));
        assert!(!address_is_zero("junk T _stext"));
    }
}
