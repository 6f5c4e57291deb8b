//! The cardinality cap: a metric with more series than its `max_series`
//! keeps the largest ones and counts the rest in
//! `bpfsnap_series_dropped_total{config,metric}`.

mod common;

use common::{Decoder, UserConfig};

#[test]
fn series_beyond_max_series_are_dropped_and_counted() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = common::config_dir();
    // Only the test's threads (bpfsnap-*), whatever else calls getpid.
    let path = UserConfig::counter("getpid_calls_total", "getpid() calls, by comm.")
        .max_series(3)
        .label(
            "comm",
            16,
            &[Decoder::String, Decoder::Regexp("^(bpfsnap-.*)$")],
        )
        .install(dir.path(), "capped", &common::example_object("comm_getpid"));
    let text = common::run_with_load(&[common::path_str(&path)], || {
        // Five threads, five comms, 100..500 calls: the three busiest stay.
        for i in 1..=5u64 {
            std::thread::spawn(move || {
                let name = std::ffi::CString::new(format!("bpfsnap-cap{i}")).unwrap();
                unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
                common::getpid_calls(i * 100);
            })
            .join()
            .unwrap();
        }
    });
    let kept = common::samples(&text, "bpfsnap_getpid_calls_total");
    let names: Vec<&str> = kept.iter().map(|(labels, _)| labels.as_str()).collect();
    assert_eq!(kept.len(), 3, "{text}");
    for busiest in ["bpfsnap-cap3", "bpfsnap-cap4", "bpfsnap-cap5"] {
        assert!(
            names.iter().any(|l| l.contains(busiest)),
            "{busiest} kept: {names:?}"
        );
    }
    let dropped = r#"bpfsnap_series_dropped_total{config="capped",metric="getpid_calls_total"}"#;
    assert_eq!(common::sample(&text, dropped), Some(2.0), "{text}");
}
