//! Built-in programs under the load they measure, on the real kernel: each
//! test starts bpfsnap on one built-in, makes the events happen, ends the
//! window with SIGINT, and checks the metric moved at least as much as the
//! load it made. promtool must accept every output.

mod common;

use common::run_builtin;

use std::sync::mpsc;

#[test]
fn runqlat_sees_every_wakeup_of_a_ping_pong() {
    let Some(_kernel) = common::kernel_test("runqlat_sees_every_wakeup_of_a_ping_pong") else {
        return;
    };
    const ROUNDS: u32 = 2000;
    let text = run_builtin("runqlat", || {
        // Two threads hand a token back and forth: every hand-over wakes a
        // sleeping thread, which then waits on a run queue until it runs.
        let (to_peer, peer_inbox) = mpsc::sync_channel::<u32>(0);
        let (to_main, main_inbox) = mpsc::sync_channel::<u32>(0);
        let peer = std::thread::spawn(move || {
            for token in peer_inbox {
                if to_main.send(token).is_err() {
                    break;
                }
            }
        });
        for round in 0..ROUNDS {
            to_peer.send(round).unwrap();
            assert_eq!(main_inbox.recv().unwrap(), round);
        }
        drop(to_peer);
        peer.join().unwrap();
    });
    let count =
        common::sample(&text, "bpfsnap_runqueue_latency_seconds_count").expect("runqlat histogram");
    assert!(
        count >= f64::from(ROUNDS),
        "{count} run-queue waits for {ROUNDS} ping-pong rounds\n{text}"
    );
    let inf = common::sample(
        &text,
        r#"bpfsnap_runqueue_latency_seconds_bucket{le="+Inf"}"#,
    )
    .unwrap();
    assert_eq!(inf, count);
    assert!(common::sample(&text, "bpfsnap_runqueue_latency_seconds_sum").unwrap() > 0.0);
}

/// Every built-in is also in examples/ as a user config (NAME.toml +
/// NAME.bpf.c, links to bpf/), for users to copy and change; `make examples`
/// builds them. Each must check out as a user program too.
#[test]
fn every_builtin_has_a_working_example_copy() {
    let examples = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"));
    let dir = common::config_dir();
    let mut args = vec!["check".to_string()];
    for builtin in bpfsnap::builtin::BUILTINS {
        let name = builtin.name;
        for file in [format!("{name}.toml"), format!("{name}.bpf.c")] {
            assert!(
                examples.join(&file).exists(),
                "examples/{file} is missing: link it to ../bpf/{file}"
            );
        }
        std::fs::copy(
            examples.join(format!("{name}.toml")),
            dir.path().join(format!("{name}.toml")),
        )
        .unwrap();
        let object = format!("{}/{name}.bpf.o", env!("BPFSNAP_EXAMPLE_OBJECTS"));
        std::fs::copy(object, dir.path().join(format!("{name}.bpf.o"))).unwrap();
        args.push(
            dir.path()
                .join(format!("{name}.toml"))
                .display()
                .to_string(),
        );
    }
    let output = common::bpfsnap().args(&args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        bpfsnap::builtin::BUILTINS.len()
    );
}
