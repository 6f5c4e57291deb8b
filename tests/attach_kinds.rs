//! Attach conventions beyond tp_btf, on the real kernel (examples/attach_kinds):
//! a uprobe and a uretprobe on bpfsnap's own `post_attach_mark` fire exactly
//! once (ebpf_exporter's post-attach hook), a raw_tp program counts the
//! test's calls, and `kaddrs` writes a kernel function's address into the
//! object before load (the program matches timers by it).

mod common;

use common::{path_str, Running};

#[test]
fn uprobe_post_attach_hook_raw_tp_and_kaddrs_work() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let (_dir, config) = common::example_config("attach_kinds.yaml");
    let mut running = Running::spawn(&[
        "run",
        "-v",
        path_str(&config),
        "--for",
        "60s",
        "--output",
        "-",
    ]);
    running.wait_for("sampling");
    std::thread::spawn(|| {
        unsafe { libc::prctl(libc::PR_SET_NAME, c"bpfsnap-kind".as_ptr()) };
        for _ in 0..300 {
            unsafe { libc::syscall(libc::SYS_getppid) };
        }
        // Each nanosleep ends by its timer calling hrtimer_wakeup.
        for _ in 0..20 {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    })
    .join()
    .unwrap();
    running.signal(libc::SIGINT);
    let (status, text, stderr) = running.finish();
    assert!(status.success(), "{stderr}");
    let hits = |kind: &str| {
        common::sample(
            &text,
            // One window on standard output: its counts are gauges.
            &format!("bpfsnap_attach_kind_hits{{kind=\"{kind}\"}}"),
        )
    };
    assert_eq!(
        hits("post_attach_uprobe"),
        Some(1.0),
        "the hook runs once, after attach\n{text}"
    );
    assert_eq!(hits("post_attach_uretprobe"), Some(1.0), "{text}");
    assert_eq!(hits("raw_tp"), Some(300.0), "{text}");
    assert!(
        hits("kaddr").is_some_and(|n| n >= 20.0),
        "kaddr_hrtimer_wakeup was set: {text}"
    );
    let kinds: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("bpfsnap_program_info"))
        .collect();
    for attach in ["uprobe", "uretprobe", "raw_tp", "tp_btf"] {
        assert!(
            kinds
                .iter()
                .any(|l| l.contains(&format!("attach=\"{attach}\""))),
            "program_info for {attach}: {kinds:?}"
        );
    }
    common::promtool_check(&text);
}

/// ebpf_exporter calls post_attach_mark once, after every config attached:
/// two configs waiting on it (attach_kinds and tests/fixtures/post_attach)
/// each see one call, not one per config attached before them.
#[test]
fn post_attach_mark_is_called_once_after_every_config_attached() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let (dir, config) = common::example_config("attach_kinds.yaml");
    std::fs::copy(
        common::source_file("tests/fixtures/post_attach.yaml"),
        dir.path().join("post_attach.yaml"),
    )
    .unwrap();
    std::fs::copy(
        common::fixture_object("post_attach"),
        dir.path().join("post_attach.bpf.o"),
    )
    .unwrap();
    let other = dir.path().join("post_attach.yaml");
    let text = common::run_with_load(&[path_str(&config), path_str(&other)], || {});
    let hits = |series: &str| common::sample(&text, series);
    assert_eq!(
        hits(r#"bpfsnap_attach_kind_hits_total{kind="post_attach_uprobe"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(hits("bpfsnap_post_attach_calls_total"), Some(1.0), "{text}");
}
