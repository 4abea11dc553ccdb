//! Access control and hostile clients on the HTTP file API: bearer tokens (read-write,
//! read-only, anonymous read, rotation), the whole-head deadline against a slow drip, a
//! stalled upload releasing its quota reservation, the connection cap, `--http off`, and
//! the front end's own error replies. Each runs on both request paths where they differ
//! (the zero-copy front end and hyper, `--zero-copy copy`).

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, metric, metrics_text};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const RW: &str = "rw-0123456789abcdef0123456789abcdef";
const RO: &str = "ro-0123456789abcdef0123456789abcdef";

fn url(rel: &str) -> String {
    TestServer::file_url(rel)
}

/// Token files in their own folder (as a Secret volume mounts them).
fn token_files() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let rw = dir.path().join("token");
    let ro = dir.path().join("read-token");
    std::fs::write(&rw, format!("{RW}\n")).unwrap();
    std::fs::write(&ro, RO).unwrap();
    let s = |p: std::path::PathBuf| p.to_str().unwrap().to_owned();
    (dir, s(rw), s(ro))
}

/// A server on `--zero-copy mode` with both token files, and the files.
async fn start_with_tokens(mode: &str) -> (TestServer, tempfile::TempDir, String, String) {
    let (dir, rw, ro) = token_files();
    let s = TestServer::start(&[
        "--zero-copy",
        mode,
        "--http-token-file",
        &rw,
        "--http-read-token-file",
        &ro,
    ])
    .await;
    (s, dir, rw, ro)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_need_the_right_token() {
    for mode in ["auto", "copy"] {
        let (s, dir, rw, _) = start_with_tokens(mode).await;
        s.write("a.txt", b"<html>hello</html>");
        let (rw_h, ro_h) = (bearer(RW), bearer(RO));

        let none = s.send("GET", &url("a.txt"), &[], b"").await;
        assert_eq!(
            (none.status, none.code().as_str()),
            (401, "unauthorized"),
            "{mode}"
        );
        assert_eq!(
            none.header("www-authenticate"),
            Some("Bearer realm=\"zeronas\"")
        );
        assert!(none.header("x-request-id").is_some());
        let listing = s.send("GET", "/v1/shares/default/files/", &[], b"").await;
        assert_eq!(listing.status, 401, "{mode}: listings need a token too");
        let other_share = s.send("GET", "/v1/shares/nope/files/a.txt", &[], b"").await;
        assert_eq!(
            other_share.status, 401,
            "{mode}: share names are not revealed"
        );

        let bad = s
            .send(
                "GET",
                &url("a.txt"),
                &[("Authorization", "Bearer wrong")],
                b"",
            )
            .await;
        assert_eq!((bad.status, bad.code().as_str()), (401, "invalid_token"));
        assert_eq!(
            bad.header("www-authenticate"),
            Some("Bearer realm=\"zeronas\", error=\"invalid_token\"")
        );

        let read = s
            .send("GET", &url("a.txt"), &[("Authorization", &ro_h)], b"")
            .await;
        assert_eq!(
            (read.status, read.body.as_slice()),
            (200, &b"<html>hello</html>"[..])
        );
        assert_eq!(read.header("x-content-type-options"), Some("nosniff"));
        let stats = s
            .send(
                "GET",
                "/v1/shares/default/stats",
                &[("Authorization", &ro_h)],
                b"",
            )
            .await;
        assert_eq!(stats.status, 200);

        let ro_put = s
            .send("PUT", &url("b.txt"), &[("Authorization", &ro_h)], b"no")
            .await;
        assert_eq!(
            (ro_put.status, ro_put.code().as_str()),
            (403, "read_only_token")
        );
        let ro_delete = s
            .send("DELETE", &url("a.txt"), &[("Authorization", &ro_h)], b"")
            .await;
        assert_eq!(ro_delete.status, 403);
        assert!(!s.path("b.txt").exists() && s.path("a.txt").exists());

        let rw_put = s
            .send("PUT", &url("b.txt"), &[("authorization", &rw_h)], b"yes")
            .await;
        assert_eq!(rw_put.status, 201, "{mode}");
        assert_eq!(std::fs::read(s.path("b.txt")).unwrap(), b"yes");
        let rw_delete = s
            .send("DELETE", &url("b.txt"), &[("Authorization", &rw_h)], b"")
            .await;
        assert_eq!(rw_delete.status, 204);

        // Probes stay open; metrics on the API port are share data and need a token (the
        // separate metrics port stays open, see the connection-cap test).
        for probe in ["/healthz", "/readyz"] {
            assert_eq!(s.send("GET", probe, &[], b"").await.status, 200, "{probe}");
        }
        assert_eq!(s.send("GET", "/metrics", &[], b"").await.status, 401);
        let metrics = s
            .send("GET", "/metrics", &[("Authorization", &ro_h)], b"")
            .await;
        assert_eq!(metrics.status, 200);

        // Rotation: a new read-write token replaces the old one without a restart.
        let rotated = "rw-rotated-0123456789abcdef0123456789";
        let next = dir.path().join("token.new");
        std::fs::write(&next, rotated).unwrap();
        std::fs::rename(&next, &rw).unwrap();
        let new_h = bearer(rotated);
        let mut accepted = false;
        for _ in 0..40 {
            let r = s
                .send("PUT", &url("c.txt"), &[("Authorization", &new_h)], b"new")
                .await;
            if r.status == 201 {
                accepted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(accepted, "{mode}: the rotated token is accepted within 4 s");
        let old = s
            .send("PUT", &url("d.txt"), &[("Authorization", &rw_h)], b"old")
            .await;
        assert_eq!(old.status, 401, "{mode}: the old token is gone");
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_cookie_reads_files_and_nothing_else() {
    for mode in ["auto", "copy"] {
        let (s, _dir, _, _) = start_with_tokens(mode).await;
        s.write("a.txt", b"0123456789");
        let cookie = format!("theme=dark; zeronas_token={RW}");
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut h = vec![("cookie", cookie.as_str())];
            h.extend_from_slice(extra);
            h
        };
        // A plain link's GET, and its Range (resume), are authorized by the cookie.
        let read = s.send("GET", &url("a.txt"), &with(&[]), b"").await;
        assert_eq!(
            (read.status, read.body.as_slice()),
            (200, &b"0123456789"[..]),
            "{mode}"
        );
        let range = s
            .send("GET", &url("a.txt"), &with(&[("range", "bytes=4-")]), b"")
            .await;
        assert_eq!(
            (range.status, range.body.as_slice()),
            (206, &b"456789"[..]),
            "{mode}"
        );
        // Never for a write, nor for anything but files; a bad cookie is an invalid token.
        let put = s.send("PUT", &url("a.txt"), &with(&[]), b"defaced").await;
        assert_eq!(
            (put.status, put.code().as_str()),
            (401, "unauthorized"),
            "{mode}"
        );
        let delete = s.send("DELETE", &url("a.txt"), &with(&[]), b"").await;
        assert_eq!(delete.status, 401, "{mode}");
        assert_eq!(std::fs::read(s.path("a.txt")).unwrap(), b"0123456789");
        let list = s
            .send("GET", "/v1/shares/default/list", &with(&[]), b"")
            .await;
        assert_eq!(list.status, 401, "{mode}");
        let stale = s
            .send(
                "GET",
                &url("a.txt"),
                &[("cookie", "zeronas_token=old-token-0123456789")],
                b"",
            )
            .await;
        assert_eq!(
            (stale.status, stale.code().as_str()),
            (401, "invalid_token"),
            "{mode}"
        );
        // A browser says where a request comes from: another site (another port of the same
        // host included) or a load as a script gets no help from the cookie.
        for (name, value) in [
            ("sec-fetch-site", "same-site"),
            ("sec-fetch-dest", "script"),
        ] {
            let foreign = s
                .send("GET", &url("a.txt"), &with(&[(name, value)]), b"")
                .await;
            assert_eq!(foreign.status, 401, "{mode} {name}: {value}");
        }
        let own = [
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-dest", "document"),
        ];
        let download = s.send("GET", &url("a.txt"), &with(&own), b"").await;
        assert_eq!(download.status, 200, "{mode}");
        // Opened as a page, a file of the share runs sandboxed: no script, no origin.
        assert!(
            download
                .header("content-security-policy")
                .is_some_and(|p| p.starts_with("sandbox;")),
            "{mode}: {:?}",
            download.headers
        );
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_share_list_says_who_may_write_and_the_app_needs_no_token() {
    let (_dir, rw, ro) = token_files();
    let s = TestServer::start(&["--http-token-file", &rw, "--http-read-token-file", &ro]).await;
    let shares = |token: &'static str| {
        let s = &s;
        async move {
            let auth = bearer(token);
            let headers: Vec<(&str, &str)> = if token.is_empty() {
                vec![]
            } else {
                vec![("authorization", auth.as_str())]
            };
            s.send("GET", "/v1/shares", &headers, b"").await
        }
    };
    assert_eq!(shares("").await.status, 401);
    let read_write = shares(RW).await;
    assert_eq!(read_write.status, 200);
    assert_eq!(
        read_write.json(),
        serde_json::json!({"shares": [{"name": "default", "read_only": false, "can_write": true}]})
    );
    assert_eq!(shares(RO).await.json()["shares"][0]["can_write"], false);
    // The page and its files are served to anyone, with the policy that forbids inline
    // scripts; they are not files of the share.
    for (target, kind) in [
        ("/", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
    ] {
        let page = s.send("GET", target, &[], b"").await;
        assert_eq!(page.status, 200, "{target}");
        assert!(
            page.header("content-type").unwrap().starts_with(kind),
            "{target}"
        );
        let policy = page.header("content-security-policy").unwrap();
        assert!(
            policy.contains("script-src 'self'") && !policy.contains("unsafe"),
            "{policy}"
        );
        assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    }
    let missing = s.send("GET", "/ui/secret.txt", &[], b"").await;
    assert_eq!(missing.status, 404);
    let put = s
        .send("PUT", "/ui/app.js", &[("authorization", &bearer(RW))], b"x")
        .await;
    assert_eq!(put.status, 405);
    // Listing entries whose names are not UTF-8 carry the bytes, percent-encoded.
    s.write("plain", b"p");
    let latin1 = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"caf\xe9");
    std::fs::write(s.root.path().join(latin1), b"c").unwrap();
    let list = s
        .send(
            "GET",
            "/v1/shares/default/list",
            &[("authorization", &bearer(RO))],
            b"",
        )
        .await
        .json();
    assert_eq!(list["entries"][0]["name"], "caf\u{fffd}");
    assert_eq!(list["entries"][0]["name_encoded"], "caf%E9");
    assert_eq!(list["entries"][1]["name"], "plain");
    assert!(list["entries"][1].get("name_encoded").is_none());
    let file = s
        .send(
            "GET",
            &url("caf%E9"),
            &[("authorization", &bearer(RO))],
            b"",
        )
        .await;
    assert_eq!(file.body, b"c");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_read_reads_but_never_writes() {
    let (_dir, rw, _) = token_files();
    let s = TestServer::start(&["--http-token-file", &rw, "--http-anonymous-read"]).await;
    s.write("pub.txt", b"public");
    let read = s.send("GET", &url("pub.txt"), &[], b"").await;
    assert_eq!((read.status, read.body.as_slice()), (200, &b"public"[..]));
    let write = s.send("PUT", &url("pub.txt"), &[], b"defaced").await;
    assert_eq!(write.status, 401);
    // The file browser learns it may only read.
    let shares = s.send("GET", "/v1/shares", &[], b"").await;
    assert_eq!(shares.json()["shares"][0]["can_write"], false);
    // A stale download cookie does not refuse what anonymous read allows, on either path.
    let cookie = ("cookie", "zeronas_token=stale-token-0123456789");
    let plain = s.send("GET", &url("pub.txt"), &[cookie], b"").await;
    assert_eq!((plain.status, plain.body.as_slice()), (200, &b"public"[..]));
    let range = s
        .send(
            "GET",
            &url("pub.txt"),
            &[cookie, ("range", "bytes=1-")],
            b"",
        )
        .await;
    assert_eq!((range.status, range.body.as_slice()), (206, &b"ublic"[..]));
    assert_eq!(std::fs::read(s.path("pub.txt")).unwrap(), b"public");
    s.stop().await;
}

#[tokio::test]
async fn a_missing_token_file_stops_start_up() {
    let root = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zeronas-dataplane"))
        .arg("--root")
        .arg(root.path())
        .args(["--http", "127.0.0.1:0", "--nfs", "off"])
        .args(["--http-token-file", "/nonexistent/token"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/token"), "{stderr}");
}

/// Sends `GET / HTTP/1.1\r\n` and then one header byte every 200 ms; returns how long the
/// server took to end the connection and what it sent.
async fn slow_drip(addr: std::net::SocketAddr) -> (Duration, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let (mut read, mut write) = stream.into_split();
    let dripping = tokio::spawn(async move {
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if write.write_all(b"X").await.is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), read.read_to_end(&mut got)).await;
    let took = started.elapsed();
    dripping.abort();
    (took, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_drip_is_closed_at_the_head_deadline() {
    for mode in ["auto", "copy"] {
        let s = TestServer::start(&["--zero-copy", mode, "--http-head-timeout", "2s"]).await;
        let (took, got) = slow_drip(s.addr).await;
        assert!(
            took >= Duration::from_millis(1800) && took < Duration::from_secs(5),
            "{mode}: closed after {took:?} though a byte came every 200 ms"
        );
        if mode == "auto" {
            let text = String::from_utf8_lossy(&got);
            assert!(text.starts_with("HTTP/1.1 408"), "{text}");
            assert!(
                text.to_ascii_lowercase().contains("x-request-id: "),
                "{text}"
            );
            let m = metrics_text(s.addr).await;
            assert_eq!(
                metric(
                    &m,
                    r#"zeronas_http_requests_total{route="invalid",method="OTHER",code="408"}"#
                ),
                1.0,
                "{m}"
            );
        }
        // An idle keep-alive connection is closed quietly at the same deadline.
        let mut idle = TcpStream::connect(s.addr).await.unwrap();
        let started = Instant::now();
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut byte))
            .await
            .unwrap_or_else(|_| panic!("{mode}: an idle connection is closed within 10 s"))
            .unwrap_or(0);
        assert_eq!(n, 0, "{mode}: nothing is sent to an idle connection");
        assert!(started.elapsed() < Duration::from_secs(5));
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_releases_its_reservation() {
    for mode in ["auto", "copy"] {
        let s = TestServer::start(&[
            "--zero-copy",
            mode,
            "--capacity",
            "1000",
            "--http-idle-timeout",
            "1s",
        ])
        .await;
        // Declares 900 bytes, sends 10, then goes silent with the connection open.
        let mut stalled = TcpStream::connect(s.addr).await.unwrap();
        stalled
            .write_all(
                format!(
                    "PUT {} HTTP/1.1\r\nHost: t\r\nContent-Length: 900\r\n\r\n0123456789",
                    url("big.bin")
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let mut waited = Duration::ZERO;
        while s.app.usage.reserved() == 0 && waited < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += Duration::from_millis(20);
        }
        assert_eq!(
            s.app.usage.reserved(),
            900,
            "{mode}: the declared length is reserved"
        );
        let blocked = s.send("PUT", &url("small.bin"), &[], &[7u8; 200]).await;
        assert_eq!(
            blocked.status, 507,
            "{mode}: the reservation holds the quota"
        );

        let mut reply = Vec::new();
        let started = Instant::now();
        let _ = tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut reply))
            .await
            .expect("the stalled upload is ended within 10 s");
        assert!(started.elapsed() < Duration::from_secs(5), "{mode}");
        let text = String::from_utf8_lossy(&reply);
        assert!(text.starts_with("HTTP/1.1 408"), "{mode}: {text}");
        assert_eq!(
            s.app.usage.reserved(),
            0,
            "{mode}: the reservation is released"
        );
        assert!(
            !s.path("big.bin").exists(),
            "{mode}: nothing half-written is kept"
        );
        let left: Vec<_> = std::fs::read_dir(s.root.path()).unwrap().collect();
        assert!(left.is_empty(), "{mode}: no temp file left: {left:?}");
        let ok = s.send("PUT", &url("small.bin"), &[], &[7u8; 200]).await;
        assert_eq!(ok.status, 201, "{mode}: the quota is free again");
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_refused_and_counted() {
    for mode in ["auto", "copy"] {
        let s = TestServer::start(&[
            "--zero-copy",
            mode,
            "--http-max-connections",
            "2",
            "--metrics",
            "127.0.0.1:0",
        ])
        .await;
        let metrics = s.metrics_addr.expect("metrics listener");
        // The io_uring start-up probe's connection may still hold a slot: wait for none, so
        // that the two counted below are the two held here.
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.app.limits.connections.active() > 0 {
            assert!(
                Instant::now() < deadline,
                "{mode}: a connection was never released"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let held = [
            TcpStream::connect(s.addr).await.unwrap(),
            TcpStream::connect(s.addr).await.unwrap(),
        ];
        // Let the server accept both before the third arrives (a fixed sleep was not always
        // enough on a loaded machine).
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.app.limits.connections.active() < 2 {
            assert!(
                Instant::now() < deadline,
                "{mode}: the two connections were not accepted"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut third = TcpStream::connect(s.addr).await.unwrap();
        let _ = third
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .await;
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut got)).await;
        assert!(
            got.is_empty(),
            "{mode}: the third connection gets no answer"
        );
        let m = metrics_text(metrics).await;
        assert_eq!(
            metric(&m, r#"zeronas_connections_refused_total{protocol="http"}"#),
            1.0,
            "{mode}: probes still answer on the metrics listener, and the refusal is counted"
        );
        drop(held);
        let mut served = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if s.send("GET", "/healthz", &[], b"").await.status == 200 {
                served = true;
                break;
            }
        }
        assert!(
            served,
            "{mode}: served again once the held connections closed"
        );
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_heads_get_a_request_id_and_are_counted() {
    let s = TestServer::start(&[]).await;
    let r = common::send_raw(s.addr, b"\x01\x02 nonsense\r\n\r\n", false).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("x-request-id").map(str::len), Some(32));
    let m = metrics_text(s.addr).await;
    assert_eq!(
        metric(
            &m,
            r#"zeronas_http_requests_total{route="invalid",method="OTHER",code="400"}"#
        ),
        1.0
    );
    s.stop().await;
}

#[test]
fn http_off_serves_no_http_but_keeps_probes() {
    let root = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_zeronas-dataplane");
    let mut child = std::process::Command::new(bin)
        .arg("--root")
        .arg(root.path())
        .args([
            "--http",
            "off",
            "--metrics",
            "127.0.0.1:0",
            "--nfs",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let child = common::DataplaneChild(child, serde_json::from_str(&line).unwrap());
    assert!(child.1["http"].is_null(), "{line}");
    let metrics = child.1["metrics"].as_str().unwrap().to_owned();
    let mut s = std::net::TcpStream::connect(&metrics).unwrap();
    std::io::Write::write_all(&mut s, b"GET /readyz HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut s, &mut text).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200"),
        "{text}"
    );
    // The file API is not on the metrics port either.
    let mut s = std::net::TcpStream::connect(&metrics).unwrap();
    std::io::Write::write_all(&mut s, b"GET /v1/shares/default/files/ HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut s, &mut text).unwrap();
    assert!(text.contains(" 404 "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_listener_has_its_own_cap() {
    let s = TestServer::start(&["--metrics", "127.0.0.1:0"]).await;
    let metrics = s.metrics_addr.expect("metrics listener");
    let mut held = Vec::new();
    for _ in 0..64 {
        held.push(TcpStream::connect(metrics).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(metrics).await.unwrap();
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut got)).await;
    assert!(got.is_empty(), "the 65th metrics connection gets no answer");
    // The API listener is not affected by a flood of the metrics port.
    assert_eq!(s.send("GET", "/healthz", &[], b"").await.status, 200);
    drop(held);
    let mut counted = 0.0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let m = metrics_text(metrics).await;
        counted = metric(
            &m,
            r#"zeronas_connections_refused_total{protocol="metrics"}"#,
        );
        if counted > 0.0 {
            break;
        }
    }
    assert_eq!(counted, 1.0);
    s.stop().await;
}
