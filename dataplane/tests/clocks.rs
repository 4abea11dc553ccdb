//! No timeout, deadline, lease or idle timer may depend on the wall clock, which NTP or an
//! operator can step backwards or forwards: they use monotonic clocks (`std::time::Instant`,
//! `tokio::time`), which only move forward. This test lists every read of the wall clock in
//! the dataplane, the operator and the CSI driver, with what it is for; a new one fails it
//! until it is reviewed and added here with its reason (`make chaos`'s clock row, README
//! "Faults and what clients see").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[path = "support/sources.rs"]
mod sources;
use sources::rust_files;

/// Calls that read the wall clock.
const WALL_CLOCK_READS: &[&str] = &[
    "SystemTime::now(",
    "Timestamp::now(",
    "Utc::now(",
    "Local::now(",
    "CLOCK_REALTIME",
    "ClockId::Realtime",
    "UNIX_EPOCH.elapsed(",
    "gettimeofday",
];

/// Every file that reads the wall clock, how many times, and why that is not a timer.
const ALLOWED: &[(&str, usize, &str)] = &[
    (
        "dataplane/src/http/frontend.rs",
        1,
        "the HTTP `Date` header, which is wall-clock time by definition",
    ),
    (
        "dataplane/src/nfs/mod.rs",
        1,
        "the NFS write verifier: a value unique to this start, compared only for equality",
    ),
    (
        "operator/src/controller.rs",
        1,
        "`lastTransitionTime` of NasVolume conditions, for people and kubectl",
    ),
    (
        "operator/src/leader.rs",
        5,
        "the Lease's acquireTime/renewTime for other tools, an identity fallback, and a test; \
         expiry counts from when this replica saw the Lease change (Instant), as its test shows",
    ),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_owned()
}

#[test]
fn timers_use_monotonic_clocks_and_every_wall_clock_read_is_accounted_for() {
    let root = repo();
    let mut found: BTreeMap<String, usize> = BTreeMap::new();
    let mut files = Vec::new();
    for crate_dir in ["dataplane/src", "operator/src", "csi/src"] {
        rust_files(&root.join(crate_dir), &mut files);
    }
    assert!(files.len() > 20, "the source folders were not found");
    for file in &files {
        let text = std::fs::read_to_string(file).expect("UTF-8 source");
        let reads: usize = text
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .map(|line| {
                WALL_CLOCK_READS
                    .iter()
                    .filter(|r| line.contains(*r))
                    .count()
            })
            .sum();
        if reads > 0 {
            let rel = file.strip_prefix(&root).expect("under the repository");
            found.insert(rel.display().to_string(), reads);
        }
    }
    let allowed: BTreeMap<String, usize> = ALLOWED
        .iter()
        .map(|(file, count, _)| (file.to_string(), *count))
        .collect();
    assert_eq!(
        found, allowed,
        "wall-clock reads changed: a timer must use Instant or tokio::time; a legitimate \
         wall-clock use goes into ALLOWED with its reason"
    );
}

#[test]
fn the_timers_of_the_dataplane_are_monotonic() {
    // The modules that own timeouts and deadlines use Instant / tokio::time, and no
    // SystemTime arithmetic (`elapsed`, `duration_since`) appears outside the allowed uses.
    let root = repo();
    for (file, timer) in [
        ("dataplane/src/io/idle.rs", "Instant"),
        ("dataplane/src/http/frontend.rs", "Instant"),
        ("dataplane/src/nfs/conn.rs", "Instant"),
        ("dataplane/src/nfs/drc.rs", "Instant"),
        ("dataplane/src/server.rs", "tokio::time"),
        ("operator/src/leader.rs", "Instant"),
    ] {
        let text = std::fs::read_to_string(root.join(file)).expect("source");
        assert!(text.contains(timer), "{file} no longer uses {timer}");
    }
    let mut files = Vec::new();
    for crate_dir in ["dataplane/src", "operator/src", "csi/src"] {
        rust_files(&root.join(crate_dir), &mut files);
    }
    for file in files {
        let text = std::fs::read_to_string(&file).expect("source");
        for (n, line) in text.lines().enumerate() {
            if line.contains("SystemTime") && line.contains(".elapsed(") {
                panic!(
                    "{}:{}: SystemTime::elapsed measures time with a clock that can jump",
                    file.display(),
                    n + 1
                );
            }
        }
    }
}
