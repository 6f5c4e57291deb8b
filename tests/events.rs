//! Event-stream counters on the real kernel: exact counts for a known number
//! of events (ring buffer, perf event array, and the `exits` built-in); a
//! burst that overflows a small ring buffer is fully accounted for — every
//! event counted or counted as lost — while the run still exits 0; label sets
//! beyond `max_series` are counted as dropped events; a ring buffer without a
//! `MAP_lost` map is warned about. (Perf-array losses and `flush_interval`
//! need scrapes over time: tests/serve.rs.)

mod common;

use common::{named_thread, path_str, Running};

fn run_events(load: impl FnOnce()) -> String {
    run_events_config(|toml| toml, load)
}

/// [`run_events`] of examples/events.toml as changed by `edit`.
fn run_events_config(edit: impl FnOnce(String) -> String, load: impl FnOnce()) -> String {
    let (_dir, config) = common::example_config("events.toml");
    std::fs::write(&config, edit(std::fs::read_to_string(&config).unwrap())).unwrap();
    common::run_with_load(&[path_str(&config)], load)
}

#[test]
fn ring_buffer_and_perf_array_events_are_counted_exactly() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let text = run_events(|| {
        // Slowly enough for the small ring buffer: nothing is lost.
        named_thread("bpfsnap-ev-a", || {
            for _ in 0..50 {
                unsafe { libc::syscall(libc::SYS_getpid) };
            }
            for _ in 0..70 {
                unsafe { libc::syscall(libc::SYS_getppid) };
            }
        });
    });
    assert_eq!(
        common::sample(&text, r#"bpfsnap_getpid_events_total{comm="bpfsnap-ev-a"}"#),
        Some(50.0),
        "{text}"
    );
    assert_eq!(
        common::sample(
            &text,
            r#"bpfsnap_getppid_events_total{comm="bpfsnap-ev-a"}"#
        ),
        Some(70.0),
        "{text}"
    );
    assert_eq!(
        common::sample(
            &text,
            r#"bpfsnap_events_lost_total{config="events",map="getpid_events_total"}"#
        ),
        Some(0.0)
    );
}

#[test]
fn an_overflowing_burst_is_counted_or_counted_lost() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    const BURST: u64 = 200_000;
    let text = run_events(|| {
        named_thread("bpfsnap-ev-b", || common::getpid_calls(BURST));
    });
    let counted =
        common::sample(&text, r#"bpfsnap_getpid_events_total{comm="bpfsnap-ev-b"}"#).unwrap_or(0.0);
    let lost = common::sample(
        &text,
        r#"bpfsnap_events_lost_total{config="events",map="getpid_events_total"}"#,
    )
    .unwrap();
    assert!(
        lost > 0.0,
        "a 4 KiB ring buffer cannot keep up with {BURST} events in a tight loop"
    );
    assert_eq!(
        counted + lost,
        BURST as f64,
        "every event counted or counted as lost ({counted} + {lost})"
    );
}

#[test]
fn label_sets_beyond_max_series_are_counted_as_dropped_events() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let text = run_events_config(
        |toml| {
            let capped = toml.replace(
                "perf_event_array = true\n",
                "perf_event_array = true\nmax_series = 1\n",
            );
            assert_ne!(capped, toml);
            capped
        },
        || {
            named_thread("bpfsnap-ev-m1", || {
                for _ in 0..4 {
                    unsafe { libc::syscall(libc::SYS_getppid) };
                }
            });
            named_thread("bpfsnap-ev-m2", || {
                for _ in 0..3 {
                    unsafe { libc::syscall(libc::SYS_getppid) };
                }
            });
        },
    );
    assert_eq!(
        common::sample(
            &text,
            r#"bpfsnap_getppid_events_total{comm="bpfsnap-ev-m1"}"#
        ),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        common::sample(
            &text,
            r#"bpfsnap_getppid_events_total{comm="bpfsnap-ev-m2"}"#
        ),
        None,
        "{text}"
    );
    assert_eq!(
        common::sample(
            &text,
            r#"bpfsnap_events_dropped_total{config="events",map="getppid_events_total"}"#
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        common::sample(
            &text,
            r#"bpfsnap_series_dropped_total{config="events",metric="getppid_events_total"}"#
        ),
        None,
        "the table's cap keeps the output within max_series: {text}"
    );
}

#[test]
fn exits_builtin_counts_each_exit_and_kill() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let mut running =
        Running::spawn(&["run", "-v", "-b", "exits", "--for", "60s", "--output", "-"]);
    running.wait_for("sampling");
    for (count, killed) in [(25, false), (7, true)] {
        for _ in 0..count {
            match unsafe { libc::fork() } {
                0 => unsafe {
                    libc::prctl(libc::PR_SET_NAME, c"bpfsnap-exit".as_ptr());
                    if killed {
                        libc::raise(libc::SIGKILL);
                    }
                    libc::_exit(3);
                },
                pid => {
                    assert!(pid > 0, "fork");
                    let mut status = 0;
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                }
            }
        }
    }
    running.signal(libc::SIGINT);
    let (status, text, stderr) = running.finish();
    assert!(status.success(), "{stderr}");
    // One window on standard output: its counts are gauges.
    assert_eq!(
        common::sample(
            &text,
            r#"bpfsnap_process_exits{comm="bpfsnap-exit",how="exited",code="3"}"#
        ),
        Some(25.0),
        "{text}"
    );
    assert_eq!(
        common::sample(
            &text,
            r#"bpfsnap_process_exits{comm="bpfsnap-exit",how="killed",code="9"}"#
        ),
        Some(7.0),
        "{text}"
    );
    common::promtool_check(&text);
}

#[test]
fn a_ring_buffer_without_a_lost_map_is_warned_about_at_load() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = common::config_dir();
    let config = dir.path().join("ringbuf_no_lost.toml");
    std::fs::copy(common::source_file("tests/fixtures/events.toml"), &config).unwrap();
    std::fs::copy(
        common::fixture_object("ringbuf_no_lost"),
        dir.path().join("ringbuf_no_lost.bpf.o"),
    )
    .unwrap();
    let (text, stderr) = common::run_with_load_and_stderr(&[path_str(&config)], || {
        named_thread("bpfsnap-ev-u", || common::getpid_calls(5));
    });
    let warning = "ringbuf_no_lost: ring buffer events_total has no events_total_lost map: \
                   events dropped in the kernel when it is full are not counted";
    assert_eq!(stderr.matches(warning).count(), 1, "{stderr}");
    assert_eq!(
        common::sample(&text, r#"bpfsnap_events_total{key="0"}"#),
        Some(5.0),
        "{text}"
    );
}
