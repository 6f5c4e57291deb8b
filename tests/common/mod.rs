//! Helpers for the integration tests, one module a concern; each test crate
//! says `mod common;` and uses them as `common::NAME`.

#![allow(dead_code)] // each test binary uses its own subset

mod blockdev;
mod cgroup2;
mod clients;
mod exposition;
mod files;
mod journal;
mod kernel;
mod load;
mod mounts;
mod netns;
mod node_exporter;
mod oom;
mod pins;
mod process;
mod programs;
mod serving;
mod syscall_gate;
mod test_name;
mod units;
mod user_config;

#[allow(unused_imports)] // each test binary uses its own subset, as above
pub use self::{
    blockdev::*, cgroup2::*, clients::*, exposition::*, files::*, journal::*, kernel::*, load::*,
    mounts::*, netns::*, node_exporter::*, oom::*, pins::*, process::*, programs::*, serving::*,
    syscall_gate::*, test_name::*, units::*, user_config::*,
};

use std::time::Duration;

/// Bound on waits for things that should take milliseconds; reaching it means
/// the test failed (it is a hang guard, not a timing assertion).
pub const PATIENCE: Duration = Duration::from_secs(60);
