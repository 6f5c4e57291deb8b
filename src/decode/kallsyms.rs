//! The kernel symbol table behind `ksym` and `kstack`: blazesym resolving
//! addresses against a kallsyms file, one instance for the whole process, with
//! an address → name cache.
//!
//! blazesym's `Symbolizer` is neither `Send` nor `Sync` (it keeps `Rc`s and
//! `RefCell`s inside), so it cannot sit in a static behind a mutex. A worker
//! thread, started on the first lookup, owns it; decoders send it batches of
//! addresses over a channel and wait for the names.
//!
//! Like ebpf_exporter, an address resolves to the nearest symbol at or below
//! it, and a miss re-reads kallsyms (modules and BPF programs come and go),
//! here at most once per reload interval.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, LazyLock, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use blazesym::symbolize::source::{Kernel, Source};
use blazesym::symbolize::{Input, Reason, Symbolized, Symbolizer};
use blazesym::MaybeDefault;

/// The running kernel's symbols.
const SYSTEM_PATH: &str = "/proc/kallsyms";
/// Minimum time between two reloads of kallsyms caused by unknown addresses.
const SYSTEM_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// A symbol name, shared between the cache and the callers.
pub type Name = Arc<str>;

/// The symbolizer for `/proc/kallsyms`, shared by every `ksym` and `kstack`
/// decoder. Nothing is read (and no thread started) until the first lookup.
pub fn system() -> &'static Kallsyms {
    static SYSTEM: LazyLock<Kallsyms> =
        LazyLock::new(|| Kallsyms::new(PathBuf::from(SYSTEM_PATH), SYSTEM_RELOAD_INTERVAL));
    &SYSTEM
}

/// A handle on the worker thread that symbolizes against one kallsyms file.
pub struct Kallsyms {
    requests: Result<mpsc::Sender<Request>, String>,
    /// Names of the addresses of the last [`Kallsyms::prefetch`]: looked up
    /// here, a snapshot's addresses cost no round trip to the worker each.
    prefetched: Mutex<Prefetched>,
}

/// What the last prefetch found: each address's name, or why none could be
/// read (then every lookup until the next prefetch fails the same way,
/// rather than asking the worker again per address).
#[derive(Default)]
struct Prefetched {
    names: HashMap<u64, Option<Name>>,
    failed: Option<String>,
}

struct Request {
    addrs: Vec<u64>,
    reply: mpsc::Sender<Result<Vec<Option<Name>>, String>>,
}

const STOPPED: &str = "the kernel symbolizer thread stopped";

/// Addresses per request of [`Kallsyms::prefetch`].
const PREFETCH_CHUNK: usize = 1 << 16;

impl Kallsyms {
    /// Starts a worker for the kallsyms file at `path`; an unknown address
    /// reloads the file if the last load is at least `reload_interval` old.
    pub fn new(path: PathBuf, reload_interval: Duration) -> Kallsyms {
        let (requests, incoming) = mpsc::channel::<Request>();
        let started = thread::Builder::new()
            .name("bpfsnap-kallsyms".into())
            .spawn(move || serve(&path, reload_interval, incoming));
        Kallsyms {
            requests: match started {
                Ok(_) => Ok(requests),
                Err(err) => Err(format!("cannot start the kernel symbolizer thread: {err}")),
            },
            prefetched: Mutex::new(Prefetched::default()),
        }
    }

    /// Resolves `addrs` in few requests and keeps their names for
    /// [`Kallsyms::resolve`] until the next prefetch (a snapshot's worth:
    /// names are not kept across reloads of kallsyms). A failure is left
    /// for `resolve` to report.
    pub fn prefetch(&self, mut addrs: Vec<u64>) {
        addrs.sort_unstable();
        addrs.dedup();
        let mut found = Prefetched::default();
        // In chunks: blazesym's answer for each address is far larger than
        // the name while it is built.
        for chunk in addrs.chunks(PREFETCH_CHUNK) {
            match self.request(chunk) {
                Ok(names) => found.names.extend(chunk.iter().copied().zip(names)),
                Err(reason) => {
                    found = Prefetched {
                        names: HashMap::new(),
                        failed: Some(reason),
                    };
                    break;
                }
            }
        }
        *self.prefetched.lock().unwrap_or_else(|e| e.into_inner()) = found;
    }

    /// The name of the symbol each address falls in (`None`: below the first
    /// symbol, or not in kallsyms). Fails when kallsyms cannot be read or has
    /// no usable addresses (without root or CAP_SYSLOG they all read as 0).
    pub fn resolve(&self, addrs: &[u64]) -> Result<Vec<Option<Name>>, String> {
        {
            let prefetched = self.prefetched.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(reason) = &prefetched.failed {
                return Err(reason.clone());
            }
            let names: Option<Vec<Option<Name>>> = addrs
                .iter()
                .map(|addr| prefetched.names.get(addr).cloned())
                .collect();
            if let Some(names) = names {
                return Ok(names);
            }
        }
        self.request(addrs)
    }

    fn request(&self, addrs: &[u64]) -> Result<Vec<Option<Name>>, String> {
        let requests = self.requests.as_ref().map_err(Clone::clone)?;
        let (reply, answer) = mpsc::channel();
        requests
            .send(Request {
                addrs: addrs.to_vec(),
                reply,
            })
            .map_err(|_| STOPPED.to_string())?;
        answer.recv().map_err(|_| STOPPED.to_string())?
    }
}

/// The worker thread: answers requests until every handle is gone. A panic
/// inside blazesym fails that request and starts over with a fresh state.
fn serve(path: &Path, reload_interval: Duration, incoming: mpsc::Receiver<Request>) {
    let mut worker: Option<Worker> = None;
    for request in incoming {
        let current = worker.get_or_insert_with(|| Worker::new(path, reload_interval));
        let result = panic::catch_unwind(AssertUnwindSafe(|| current.resolve(&request.addrs)));
        let answer = match result {
            Ok(answer) => answer,
            Err(_) => {
                worker = None;
                Err(format!(
                    "the kernel symbolizer panicked reading {}",
                    path.display()
                ))
            }
        };
        // The caller may have gone away; nothing to do then.
        let _ = request.reply.send(answer);
    }
}

struct Worker {
    path: PathBuf,
    reload_interval: Duration,
    symbolizer: Symbolizer,
    /// When `symbolizer` was created; it reads kallsyms on first use.
    loaded: Instant,
    /// Addresses resolved since the last load.
    names: HashMap<u64, Name>,
}

impl Worker {
    fn new(path: &Path, reload_interval: Duration) -> Worker {
        Worker {
            path: path.to_path_buf(),
            reload_interval,
            symbolizer: new_symbolizer(),
            loaded: Instant::now(),
            names: HashMap::new(),
        }
    }

    fn resolve(&mut self, addrs: &[u64]) -> Result<Vec<Option<Name>>, String> {
        let mut names: Vec<Option<Name>> = addrs
            .iter()
            .map(|addr| self.names.get(addr).cloned())
            .collect();
        let missing: Vec<u64> = addrs
            .iter()
            .zip(&names)
            .filter(|(_, name)| name.is_none())
            .map(|(addr, _)| *addr)
            .collect();
        if missing.is_empty() {
            return Ok(names);
        }
        let mut found = self.lookup(&missing)?;
        if found.iter().any(Option::is_none) && self.loaded.elapsed() >= self.reload_interval {
            // A fresh Symbolizer re-reads the file: blazesym's own reload
            // looks at the modification time, which /proc files never change.
            self.symbolizer = new_symbolizer();
            self.loaded = Instant::now();
            self.names.clear();
            found = self.lookup(&missing)?;
        }
        let mut found = missing.iter().zip(found);
        for name in names.iter_mut().filter(|name| name.is_none()) {
            if let Some((addr, Some(resolved))) = found.next() {
                self.names.insert(*addr, resolved.clone());
                *name = Some(resolved);
            }
        }
        Ok(names)
    }

    fn lookup(&self, addrs: &[u64]) -> Result<Vec<Option<Name>>, String> {
        // kallsyms only, as ebpf_exporter: no vmlinux (whose DWARF names
        // could differ and whose KASLR offset needs /proc/kcore).
        let source = Source::Kernel(Kernel {
            kallsyms: MaybeDefault::Some(self.path.clone()),
            vmlinux: MaybeDefault::None,
            kaslr_offset: Some(0),
            debug_syms: false,
            ..Kernel::default()
        });
        let symbolized = self
            .symbolizer
            .symbolize(&source, Input::AbsAddr(addrs))
            .map_err(|err| {
                format!(
                    "cannot read kernel symbols from {}: {err}",
                    self.path.display()
                )
            })?;
        // One `Name` per symbol, not per address: a million addresses in a
        // few thousand functions.
        let mut interned: HashMap<&str, Name> = HashMap::new();
        symbolized
            .iter()
            .map(|result| match result {
                Symbolized::Sym(sym) => Ok(Some(
                    interned
                        .entry(&*sym.name)
                        .or_insert_with(|| Name::from(&*sym.name))
                        .clone(),
                )),
                // blazesym drops zero addresses, so an empty table is most
                // likely a restricted one.
                Symbolized::Unknown(Reason::MissingSyms) => Err(no_symbols(&self.path)),
                Symbolized::Unknown(_) => Ok(None),
            })
            .collect()
    }
}

fn new_symbolizer() -> Symbolizer {
    // Names as kallsyms spells them (ebpf_exporter does not demangle).
    Symbolizer::builder()
        .enable_auto_reload(false)
        .enable_code_info(false)
        .enable_inlined_fns(false)
        .enable_demangling(false)
        .build()
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
        kallsyms
            .resolve(addrs)
            .unwrap()
            .into_iter()
            .map(|name| name.map(|name| name.to_string()))
            .collect()
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
        let err = restricted.resolve(&[0xffffffff81000000]).unwrap_err();
        assert!(err.contains("CAP_SYSLOG"), "{err}");

        let (empty, _file) = fake("", Duration::ZERO);
        let err = empty.resolve(&[0xffffffff81000000]).unwrap_err();
        assert!(err.contains("lists no kernel symbols"), "{err}");

        let gone = Kallsyms::new("/nonexistent/kallsyms".into(), Duration::ZERO);
        let err = gone.resolve(&[1]).unwrap_err();
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
