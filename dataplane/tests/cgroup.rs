//! Worker sizing and CPU pinning, checked from /proc/PID/task/*/status of a real process
//! started under `taskset`.

mod common;

use std::process::Command;

use common::{send, spawn_dataplane};

/// (thread name, Cpus_allowed_list) of every thread of `pid`.
fn thread_affinities(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir") {
        let dir = task.expect("task").path();
        let (Ok(comm), Ok(status)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("status")),
        ) else {
            continue;
        };
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default();
        out.push((comm.trim().to_owned(), cpus));
    }
    out.sort();
    out
}

async fn metrics(addr: std::net::SocketAddr) -> String {
    String::from_utf8(send(addr, "GET", "/metrics", &[], b"").await.body).expect("utf-8 metrics")
}

fn cpu_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_worker_under_taskset_one_cpu() {
    assert!(cpu_count() >= 2, "this test needs at least 2 CPUs");
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("f"), vec![1u8; 300_000]).unwrap();
    let (child, addr) = spawn_dataplane(&["taskset", "-c", "1"], root.path(), &["--pin-cpus"]);
    // A download runs blocking reads, so blocking threads exist too.
    assert_eq!(
        send(addr, "GET", "/v1/shares/default/files/f", &[], b"")
            .await
            .body
            .len(),
        300_000
    );

    let threads = thread_affinities(child.id());
    let workers: Vec<_> = threads
        .iter()
        .filter(|(n, _)| n.starts_with("zn-worker-"))
        .collect();
    assert_eq!(workers.len(), 1, "{threads:?}");
    assert_eq!(workers[0].1, "1");
    assert!(
        threads.iter().any(|(n, _)| n == "zn-blocking"),
        "{threads:?}"
    );

    let m = metrics(addr).await;
    assert!(m.contains("zeronas_worker_threads 1"), "{m}");
    assert!(m.contains("zeronas_worker_pinned{cpu=\"1\"} 1"), "{m}");
    assert!(m.contains("zeronas_cgroup_cpus_allowed 1"), "{m}");
    let stats = send(addr, "GET", "/v1/shares/default/stats", &[], b"")
        .await
        .json();
    assert_eq!(stats["workers"]["threads"], 1);
    assert_eq!(stats["workers"]["pinned"][0]["cpu"], 1);
    assert_eq!(stats["cgroup"]["cpus_allowed"], "1");
    common::stop_child(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_per_cpu_and_blocking_threads_stay_unpinned() {
    assert!(cpu_count() >= 2, "this test needs at least 2 CPUs");
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("f"), vec![2u8; 300_000]).unwrap();
    let (child, addr) = spawn_dataplane(&["taskset", "-c", "0,1"], root.path(), &["--pin-cpus"]);
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(tokio::spawn(send(
            addr,
            "GET",
            "/v1/shares/default/files/f",
            &[],
            b"",
        )));
    }
    for c in clients {
        assert_eq!(c.await.unwrap().body.len(), 300_000);
    }
    // Uploads run blocking-pool work spawned from the pinned workers themselves, whose
    // threads would inherit a single CPU unless the worker runtime widens them.
    for i in 0..4 {
        let r = send(
            addr,
            "PUT",
            &format!("/v1/shares/default/files/up-{i}"),
            &[],
            b"uploaded",
        )
        .await;
        assert_eq!(r.status, 201);
    }
    let threads = thread_affinities(child.id());
    let mut worker_cpus: Vec<&str> = threads
        .iter()
        .filter(|(n, _)| n.starts_with("zn-worker-"))
        .map(|(_, c)| c.as_str())
        .collect();
    worker_cpus.sort();
    assert_eq!(worker_cpus, vec!["0", "1"], "{threads:?}");
    let blocking: Vec<_> = threads.iter().filter(|(n, _)| n == "zn-blocking").collect();
    assert!(!blocking.is_empty());
    assert!(
        blocking.iter().all(|(_, c)| c == "0-1"),
        "blocking threads must keep the whole set: {threads:?}"
    );
    let m = metrics(addr).await;
    assert!(
        m.contains("zeronas_worker_pinned{cpu=\"0\"} 1")
            && m.contains("zeronas_worker_pinned{cpu=\"1\"} 1"),
        "{m}"
    );
    assert!(m.contains("zeronas_worker_threads 2"));
    common::stop_child(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpinned_workers_follow_the_affinity() {
    let root = tempfile::tempdir().unwrap();
    let (child, addr) = spawn_dataplane(&["taskset", "-c", "0"], root.path(), &[]);
    let m = metrics(addr).await;
    assert!(m.contains("zeronas_worker_threads 1"), "{m}");
    assert!(
        !m.contains("zeronas_worker_pinned{"),
        "nothing is pinned without --pin-cpus: {m}"
    );
    let threads = thread_affinities(child.id());
    assert_eq!(
        threads
            .iter()
            .filter(|(n, _)| n.starts_with("zn-worker-"))
            .count(),
        1,
        "{threads:?}"
    );
    common::stop_child(child);

    let (child, addr) = spawn_dataplane(&[], root.path(), &["--workers", "3"]);
    assert!(metrics(addr).await.contains("zeronas_worker_threads 3"));
    assert_eq!(
        thread_affinities(child.id())
            .iter()
            .filter(|(n, _)| n.starts_with("zn-worker-"))
            .count(),
        3
    );
    common::stop_child(child);
}

#[test]
fn pinning_more_workers_than_cpus_fails_clearly() {
    let out = Command::new("taskset")
        .args([
            "-c",
            "1",
            env!("CARGO_BIN_EXE_zeronas-dataplane"),
            "--root",
            "/tmp",
            "--http",
            "127.0.0.1:0",
        ])
        .args(["--pin-cpus", "--workers", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--pin-cpus needs one CPU per worker: 2 workers asked for, but only 1 CPUs are allowed (1)"), "{stderr}");
}
