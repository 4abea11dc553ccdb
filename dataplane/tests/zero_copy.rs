//! The zero-copy front end: each path is really taken (counters move) and the bytes are right.

mod common;

use std::time::Duration;

use common::{TestServer, metric, metrics_text, pattern, read_response, send, spawn_dataplane};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SENDFILE: &str = r#"zeronas_transfer_bytes_total{protocol="http",path="sendfile"}"#;
const SPLICE: &str = r#"zeronas_transfer_bytes_total{protocol="http",path="splice"}"#;
const COPY: &str = r#"zeronas_transfer_bytes_total{protocol="http",path="copy"}"#;

fn fallback(reason: &str) -> String {
    format!(r#"zeronas_zero_copy_fallback_total{{protocol="http",reason="{reason}"}}"#)
}

fn url(rel: &str) -> String {
    TestServer::file_url(rel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_go_by_sendfile_small_ones_by_writev() {
    let server = TestServer::start(&[]).await;
    let big = pattern(3 << 20, 10);
    server.write("big.bin", &big);
    server.write("small.txt", &pattern(1000, 11));

    let r = server.send("GET", &url("big.bin"), &[], b"").await;
    assert!(r.status == 200 && r.body == big);
    let r = server
        .send(
            "GET",
            &url("big.bin"),
            &[("Range", "bytes=1000000-2999999")],
            b"",
        )
        .await;
    assert!(r.status == 206 && r.body == big[1_000_000..3_000_000]);
    let r = server.send("HEAD", &url("big.bin"), &[], b"").await;
    assert_eq!((r.status, r.body.len()), (200, 0));
    let m = metrics_text(server.addr).await;
    assert_eq!(metric(&m, SENDFILE), (3 << 20) as f64 + 2_000_000.0, "{m}");

    let r = server.send("GET", &url("small.txt"), &[], b"").await;
    assert_eq!(r.body, pattern(1000, 11));
    let m = metrics_text(server.addr).await;
    assert_eq!(metric(&m, COPY), 1000.0);
    assert_eq!(metric(&m, &fallback("small_body")), 1.0);
    let stats = server
        .send("GET", "/v1/shares/default/stats", &[], b"")
        .await
        .json();
    assert_eq!(
        stats["transfer_bytes"]["sendfile"].as_u64(),
        Some((3 << 20) + 2_000_000)
    );
    assert_eq!(stats["fallbacks"]["small_body"], 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_and_pipelining() {
    let server = TestServer::start(&[]).await;
    let big = pattern(500_000, 12);
    server.write("a.bin", &big);
    server.write("b.txt", b"hello world");
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut pending = Vec::new();
    // Sequential requests on one connection.
    for _ in 0..3 {
        stream
            .write_all(format!("GET {} HTTP/1.1\r\nHost: t\r\n\r\n", url("a.bin")).as_bytes())
            .await
            .unwrap();
        let r = read_response(&mut stream, &mut pending, false).await;
        assert!(r.status == 200 && r.body == big);
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }
    // Four pipelined requests in one write, answered in order.
    let pipelined = format!(
        "GET {a} HTTP/1.1\r\nHost: t\r\n\r\nHEAD {b} HTTP/1.1\r\nHost: t\r\n\r\nGET {b} HTTP/1.1\r\nHost: t\r\nRange: bytes=6-\r\n\r\nPUT {c} HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nfiveX",
        a = url("a.bin"),
        b = url("b.txt"),
        c = url("c.txt")
    );
    stream.write_all(pipelined.as_bytes()).await.unwrap();
    let r = read_response(&mut stream, &mut pending, false).await;
    assert!(r.status == 200 && r.body == big);
    let r = read_response(&mut stream, &mut pending, true).await;
    assert_eq!((r.status, r.header("content-length")), (200, Some("11")));
    let r = read_response(&mut stream, &mut pending, false).await;
    assert_eq!((r.status, r.body.as_slice()), (206, b"world".as_slice()));
    let r = read_response(&mut stream, &mut pending, false).await;
    assert_eq!(r.status, 201);
    assert_eq!(std::fs::read(server.path("c.txt")).unwrap(), b"fiveX");
    // HTTP/1.0 closes unless asked to keep alive.
    let r = common::send_raw(
        server.addr,
        format!("GET {} HTTP/1.0\r\n\r\n", url("b.txt")).as_bytes(),
        false,
    )
    .await;
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    let mut old = TcpStream::connect(server.addr).await.unwrap();
    let mut pending = Vec::new();
    for _ in 0..2 {
        old.write_all(
            format!(
                "GET {} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                url("b.txt")
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let r = read_response(&mut old, &mut pending, false).await;
        assert_eq!(
            (r.body.as_slice(), r.header("connection")),
            (b"hello world".as_slice(), Some("keep-alive"))
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_spliced() {
    let server = TestServer::start(&[]).await;
    let data = pattern(5 << 20, 13);
    let r = server.send("PUT", &url("up/big.bin"), &[], &data).await;
    assert_eq!(r.status, 201);
    assert!(std::fs::read(server.path("up/big.bin")).unwrap() == data);
    let m = metrics_text(server.addr).await;
    let spliced = metric(&m, SPLICE);
    let read_ahead = metric(&m, COPY);
    assert!(spliced > 0.0, "{m}");
    assert_eq!(spliced + read_ahead, data.len() as f64);
    assert_eq!(
        metric(&m, &fallback("read_ahead")),
        if read_ahead > 0.0 { 1.0 } else { 0.0 }
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_requests_are_handed_to_hyper_and_counted() {
    let server = TestServer::start(&[]).await;
    let r = server
        .send(
            "PUT",
            &url("e.txt"),
            &[("Expect", "100-continue")],
            b"expect me",
        )
        .await;
    assert_eq!(r.status, 201);
    let r = server
        .send(
            "PUT",
            &url("c.txt"),
            &[("Transfer-Encoding", "chunked")],
            b"3\r\nabc\r\n0\r\n\r\n",
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(std::fs::read(server.path("c.txt")).unwrap(), b"abc");
    let r = server.send("POST", &url("e.txt"), &[], b"").await;
    assert_eq!(r.status, 405);
    // After a handoff the connection keeps working under hyper, bytes intact.
    server.write("big.bin", &pattern(300_000, 14));
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut pending = Vec::new();
    stream
        .write_all(
            format!(
                "POST {} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
                url("x")
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(
        read_response(&mut stream, &mut pending, false).await.status,
        405
    );
    stream
        .write_all(format!("GET {} HTTP/1.1\r\nHost: t\r\n\r\n", url("big.bin")).as_bytes())
        .await
        .unwrap();
    let r = read_response(&mut stream, &mut pending, false).await;
    assert!(r.body == pattern(300_000, 14));

    // HTTP/2 prior knowledge: hyper answers the preface with its SETTINGS frame.
    let mut h2 = TcpStream::connect(server.addr).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut frame = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), h2.read_exact(&mut frame))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(frame[3], 0x4, "expected a SETTINGS frame, got {frame:?}");

    let m = metrics_text(server.addr).await;
    for (reason, count) in [
        ("expect_continue", 1.0),
        ("chunked_body", 1.0),
        ("unsupported", 2.0),
        ("http2", 1.0),
    ] {
        assert_eq!(metric(&m, &fallback(reason)), count, "{reason}: {m}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_during_send_closes_only_that_connection() {
    let server = TestServer::start(&[]).await;
    let len: usize = 64 << 20;
    let file = std::fs::File::create(server.path("shrinking.bin")).unwrap();
    file.set_len(len as u64).unwrap();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(format!("GET {} HTTP/1.1\r\nHost: t\r\n\r\n", url("shrinking.bin")).as_bytes())
        .await
        .unwrap();
    let mut first = vec![0u8; 1 << 20];
    stream.read_exact(&mut first).await.unwrap();
    file.set_len(2 << 20).unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut rest))
        .await
        .expect("the connection must close, not hang")
        .ok();
    let total = first.len() + rest.len();
    assert!(
        total < len,
        "received {total} bytes of a {len}-byte promise: the connection should have been cut"
    );
    // The server is fine.
    server.write("ok.txt", b"still here");
    assert_eq!(
        send(server.addr, "GET", &url("ok.txt"), &[], b"")
            .await
            .body,
        b"still here"
    );
    server.stop().await;
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after "pid (comm) ".
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_costs_no_cpu() {
    let root = tempfile::tempdir().unwrap();
    std::fs::File::create(root.path().join("huge.bin"))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let (child, addr) = spawn_dataplane(&[], root.path(), &[]);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {} HTTP/1.1\r\nHost: t\r\n\r\n", url("huge.bin")).as_bytes())
        .await
        .unwrap();
    let mut some = vec![0u8; 64 * 1024];
    stream.read_exact(&mut some).await.unwrap();
    // The socket buffers fill up, then the server must wait, not spin.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_seconds(child.id());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_seconds(child.id()) - before;
    assert!(
        used < 0.15,
        "server used {used:.2} s of CPU in 3 s while the client was not reading"
    );
    drop(stream);
    common::stop_child(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendfile_unsupported_falls_back_and_is_counted() {
    let root = tempfile::tempdir().unwrap();
    let data = pattern(2 << 20, 15);
    std::fs::write(root.path().join("f.bin"), &data).unwrap();
    let wrapper = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/deny_sendfile.py"
    );
    let (child, addr) = spawn_dataplane(&["/usr/bin/python3", wrapper], root.path(), &[]);
    let r = send(addr, "GET", &url("f.bin"), &[], b"").await;
    assert!(
        r.status == 200 && r.body == data,
        "fallback must serve the same bytes"
    );
    let r = send(
        addr,
        "GET",
        &url("f.bin"),
        &[("Range", "bytes=100000-")],
        b"",
    )
    .await;
    assert!(r.body == data[100_000..]);
    let m = metrics_text(addr).await;
    assert_eq!(metric(&m, &fallback("sendfile_unsupported")), 2.0, "{m}");
    assert_eq!(metric(&m, COPY), (data.len() * 2 - 100_000) as f64);
    assert_eq!(metric(&m, SENDFILE), 0.0);
    assert!(
        m.contains("zeronas_fallback_duration_seconds_count{protocol=\"http\"} 2"),
        "{m}"
    );
    common::stop_child(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_io_uring_each_worker_falls_back_to_epoll_and_counts_it() {
    let root = tempfile::tempdir().unwrap();
    let small = pattern(3000, 21);
    let big = pattern(1 << 20, 22);
    std::fs::write(root.path().join("small.bin"), &small).unwrap();
    std::fs::write(root.path().join("big.bin"), &big).unwrap();
    let wrapper = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/deny_io_uring.py"
    );
    let (child, addr) = spawn_dataplane(
        &["/usr/bin/python3", wrapper],
        root.path(),
        &["--io-engine", "io_uring", "--workers", "2"],
    );
    for _ in 0..4 {
        assert!(send(addr, "GET", &url("small.bin"), &[], b"").await.body == small);
        assert!(send(addr, "GET", &url("big.bin"), &[], b"").await.body == big);
    }
    // Each worker counts once, when it starts (the second may start a moment later).
    let mut m = metrics_text(addr).await;
    for _ in 0..20 {
        if metric(&m, &fallback("io_uring_unavailable")) >= 2.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        m = metrics_text(addr).await;
    }
    assert_eq!(metric(&m, &fallback("io_uring_unavailable")), 2.0, "{m}");
    common::stop_child(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_mode_serves_everything_through_hyper() {
    let server = TestServer::start(&["--zero-copy", "copy"]).await;
    let big = pattern(1 << 20, 16);
    server.write("big.bin", &big);
    assert!(server.send("GET", &url("big.bin"), &[], b"").await.body == big);
    let m = metrics_text(server.addr).await;
    assert_eq!(
        (metric(&m, COPY), metric(&m, SENDFILE)),
        ((1 << 20) as f64, 0.0)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_maps_large_files_of_read_only_shares() {
    const MMAP: &str = r#"zeronas_transfer_bytes_total{protocol="http",path="mmap"}"#;
    let root = tempfile::tempdir().unwrap();
    let big = pattern(3 << 20, 17);
    std::fs::write(root.path().join("big.bin"), &big).unwrap();
    std::fs::write(root.path().join("small.bin"), pattern(1000, 18)).unwrap();
    let server = TestServer::start_in(
        root,
        &["--zero-copy", "copy", "--read-only", "--mmap-min", "1Mi"],
    )
    .await;
    assert!(server.send("GET", &url("big.bin"), &[], b"").await.body == big);
    let r = server
        .send("GET", &url("big.bin"), &[("Range", "bytes=1048576-")], b"")
        .await;
    assert!(r.status == 206 && r.body == big[1 << 20..]);
    assert_eq!(
        server.send("GET", &url("small.bin"), &[], b"").await.body,
        pattern(1000, 18)
    );
    let m = metrics_text(server.addr).await;
    assert_eq!(metric(&m, MMAP), ((3 << 20) + (2 << 20)) as f64, "{m}");
    assert_eq!(metric(&m, COPY), 1000.0, "small bodies stay on pread");
    server.stop().await;

    // A writable share never maps.
    let server = TestServer::start(&["--zero-copy", "copy", "--mmap-min", "0"]).await;
    server.write("big.bin", &big);
    assert!(server.send("GET", &url("big.bin"), &[], b"").await.body == big);
    let m = metrics_text(server.addr).await;
    assert_eq!(
        (metric(&m, MMAP), metric(&m, COPY)),
        (0.0, (3 << 20) as f64)
    );
    server.stop().await;
}
