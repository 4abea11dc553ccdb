//! The dataplane as a process: the stdout "listening" line, SIGTERM draining, exit codes.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn spawn(root: &std::path::Path, extra: &[&str]) -> (common::DataplaneChild, SocketAddr) {
    common::spawn_dataplane(&[], root, extra)
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit in {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_upload_and_exits_zero() {
    let root = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn(root.path(), &["--drain-timeout", "10s"]);

    // Start an upload, send half the body, then ask the server to stop.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = "PUT /v1/shares/default/files/slow.bin HTTP/1.1\r\nHost: t\r\nX-Request-ID: drain-test-1\r\nContent-Length: 10\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(b"01234").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigterm(&child);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // New connections are refused while the old one drains.
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener still open after SIGTERM"
    );

    stream.write_all(b"56789").await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let parsed = common::parse_response(&response, false);
    assert_eq!(parsed.status, 201);
    assert_eq!(
        std::fs::read(root.path().join("slow.bin")).unwrap(),
        b"0123456789"
    );

    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        log.contains("drain-test-1"),
        "request id missing from the log: {log}"
    );
    assert!(log.contains("SIGTERM"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_is_bounded_by_the_timeout() {
    let root = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn(root.path(), &["--drain-timeout", "500ms"]);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = "PUT /v1/shares/default/files/never.bin HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert!(status.success());
    assert!(!root.path().join("never.bin").exists());
    assert!(
        common::all_names(root.path()).is_empty(),
        "temp file left behind"
    );
}

#[test]
fn bad_arguments_fail_with_a_clear_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_zeronas-dataplane"))
        .args([
            "--root",
            "/nonexistent/zeronas-test",
            "--http",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open share root"));

    let out = Command::new(env!("CARGO_BIN_EXE_zeronas-dataplane"))
        .args(["--root", "/tmp", "--capacity", "10XB"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown size suffix"));
}

#[test]
fn rdma_required_fails_start_up_with_a_clear_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_zeronas-dataplane"))
        .args([
            "--root",
            "/tmp",
            "--http",
            "127.0.0.1:0",
            "--rdma",
            "required",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--rdma required"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_probe_is_reported() {
    let root = tempfile::tempdir().unwrap();
    let (child, addr) = common::spawn_dataplane(&[], root.path(), &[]);
    let m = common::metrics_text(addr).await;
    let devices =
        zeronas_dataplane::transport::rdma_devices(std::path::Path::new("/sys/class/infiniband"));
    let expected = if devices.is_empty() {
        r#"zeronas_transport_info{transport="tcp",rdma="unavailable",reason="no_device"} 1"#
    } else {
        r#"zeronas_transport_info{transport="tcp",rdma="available",reason="not_implemented"} 1"#
    };
    assert!(m.contains(expected), "{m}");
    let (off, addr_off) = common::spawn_dataplane(&[], root.path(), &["--rdma", "disabled"]);
    let m = common::metrics_text(addr_off).await;
    assert!(
        m.contains(
            r#"zeronas_transport_info{transport="tcp",rdma="disabled",reason="disabled"} 1"#
        ),
        "{m}"
    );
    common::stop_child(child);
    common::stop_child(off);
}
