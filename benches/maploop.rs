//! The floor of a map snapshot: `BPF_MAP_LOOKUP_BATCH` in a loop into
//! buffers allocated (and touched) beforehand, nothing else. bench/bench.py
//! runs it on the map of a running bpfsnap (by map id) beside bpfsnap's own
//! snapshot of the same map.
//!
//! Before each run bench.py's evictor sweeps twice the largest CPU cache
//! (common/evict.rs), evicting the map: a snapshot reads a map that sat idle
//! through a sampling window. (This machine's L3 is 480 MiB: the fixed
//! 64 MiB written before left the map there, and the floor read it warm.)
//! benches/snapshot.rs does the same before each of its runs.
//!
//! Usage: maploop MAP_ID RUNS EVICT_FDS — prints `ENTRIES NANOSECONDS` per
//! run.

#[path = "common/evict.rs"]
mod evict;

use std::time::Instant;

fn main() {
    // `cargo bench` passes --bench; nothing else is an option here.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    if args.is_empty() {
        // Plain `cargo bench` (or `cargo test --all-targets`): nothing to do
        // without bench/bench.py's map and files.
        eprintln!("usage: maploop MAP_ID RUNS EVICT_FDS (run by `make bench`)");
        return;
    }
    let (Some(id), Some(runs), Some(mut evictor)) = (
        args.first().and_then(|a| a.parse::<u32>().ok()),
        args.get(1).and_then(|a| a.parse::<usize>().ok()),
        args.get(2).and_then(|a| evict::Evictor::from_fds(a)),
    ) else {
        eprintln!("usage: maploop MAP_ID RUNS EVICT_FDS");
        std::process::exit(2);
    };
    // SAFETY: plain libbpf calls on an fd we own; the info struct is sized
    // by `len`.
    let fd = unsafe { libbpf_sys::bpf_map_get_fd_by_id(id) };
    if fd < 0 {
        eprintln!("maploop: map id {id}: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    let mut info: libbpf_sys::bpf_map_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libbpf_sys::bpf_map_info>() as u32;
    if unsafe { libbpf_sys::bpf_map_get_info_by_fd(fd, &mut info, &mut len) } != 0 {
        eprintln!("maploop: map info: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    let max = info.max_entries as usize;
    let key_size = info.key_size as usize;
    // A per-CPU map's batch holds every possible CPU's value, 8-byte aligned.
    let per_cpu = matches!(
        info.type_,
        libbpf_sys::BPF_MAP_TYPE_PERCPU_HASH
            | libbpf_sys::BPF_MAP_TYPE_PERCPU_ARRAY
            | libbpf_sys::BPF_MAP_TYPE_LRU_PERCPU_HASH
    );
    let value_size = match per_cpu {
        true => {
            // SAFETY: a plain libbpf call.
            let cpus = unsafe { libbpf_sys::libbpf_num_possible_cpus() }.max(1) as usize;
            (info.value_size as usize).div_ceil(8) * 8 * cpus
        }
        false => info.value_size as usize,
    };
    // Written once, so no page is faulted in during a measured run.
    let mut keys = vec![1u8; max * key_size];
    let mut values = vec![1u8; max * value_size];
    let token_size = key_size.max(8);
    let (mut token_in, mut token_out) = (vec![0u8; token_size], vec![0u8; token_size]);
    let opts = libbpf_sys::bpf_map_batch_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_batch_opts>() as _,
        elem_flags: 0,
        flags: 0,
    };
    let chunk = max.clamp(1, 8192);
    for _ in 0..runs {
        evictor.evict();
        let started = Instant::now();
        let mut filled = 0usize;
        let mut first = true;
        loop {
            let mut count = chunk.min(max - filled) as u32;
            if count == 0 {
                break;
            }
            // SAFETY: both buffers have room for `count` entries past `filled`.
            let rc = unsafe {
                libbpf_sys::bpf_map_lookup_batch(
                    fd,
                    if first {
                        std::ptr::null_mut()
                    } else {
                        token_in.as_mut_ptr().cast()
                    },
                    token_out.as_mut_ptr().cast(),
                    keys.as_mut_ptr().add(filled * key_size).cast(),
                    values.as_mut_ptr().add(filled * value_size).cast(),
                    &mut count,
                    &opts,
                )
            };
            let errno = if rc < 0 { -rc } else { 0 };
            if errno != 0 && errno != libc::ENOENT {
                eprintln!(
                    "maploop: BPF_MAP_LOOKUP_BATCH: {}",
                    std::io::Error::from_raw_os_error(errno)
                );
                std::process::exit(1);
            }
            filled += count as usize;
            if errno == libc::ENOENT {
                break;
            }
            first = false;
            std::mem::swap(&mut token_in, &mut token_out);
        }
        let elapsed = started.elapsed();
        println!("{filled} {}", elapsed.as_nanos());
    }
}
