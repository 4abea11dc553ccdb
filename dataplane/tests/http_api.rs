//! The HTTP file API over real TCP on 127.0.0.1, compared byte for byte with real files.

mod common;

use common::{TestServer, all_names, build_request, metric, metrics_text, pattern, send, send_raw};

fn url(rel: &str) -> String {
    TestServer::file_url(rel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_full_ranges_and_head() {
    let server = TestServer::start(&[]).await;
    let data = pattern(1 << 20, 1);
    server.write("dir/big.bin", &data);
    server.write("empty.txt", b"");
    let len = data.len();

    let full = server.send("GET", &url("dir/big.bin"), &[], b"").await;
    assert_eq!(full.status, 200);
    assert_eq!(full.body, data);
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    assert_eq!(
        full.header("content-type"),
        Some("application/octet-stream")
    );
    assert!(full.header("etag").is_some_and(|e| e.starts_with('"')));
    assert!(full.header("last-modified").is_some());

    let cases: [(&str, usize, usize); 6] = [
        ("bytes=0-0", 0, 1),
        ("bytes=0-", 0, len),
        ("bytes=-1", len - 1, len),
        ("bytes=1000-1999", 1000, 2000),
        ("bytes=1048575-9999999", len - 1, len),
        ("bytes=-5000000", 0, len),
    ];
    for (range, start, end) in cases {
        let r = server
            .send("GET", &url("dir/big.bin"), &[("Range", range)], b"")
            .await;
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.body, &data[start..end], "{range}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {start}-{}/{len}", end - 1).as_str())
        );
    }

    for range in ["bytes=1048576-", "bytes=5-1", "bytes=x-y", "bytes=-0"] {
        let r = server
            .send("GET", &url("dir/big.bin"), &[("Range", range)], b"")
            .await;
        assert_eq!(r.status, 416, "{range}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes */{len}").as_str())
        );
        assert_eq!(r.code(), "range_not_satisfiable");
    }
    let multi = server
        .send(
            "GET",
            &url("dir/big.bin"),
            &[("Range", "bytes=0-1,5-6")],
            b"",
        )
        .await;
    assert_eq!((multi.status, multi.body.len()), (200, len));

    let head = server.send("HEAD", &url("dir/big.bin"), &[], b"").await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(len.to_string().as_str())
    );
    assert!(head.body.is_empty());
    let head_range = server
        .send("HEAD", &url("dir/big.bin"), &[("Range", "bytes=0-9")], b"")
        .await;
    assert_eq!(
        (head_range.status, head_range.header("content-length")),
        (206, Some("10"))
    );
    assert!(head_range.body.is_empty());

    let empty = server.send("GET", &url("empty.txt"), &[], b"").await;
    assert_eq!(
        (
            empty.status,
            empty.body.len(),
            empty.header("content-length")
        ),
        (200, 0, Some("0"))
    );
    assert_eq!(empty.header("content-type"), Some("text/plain"));

    let dir = server.send("GET", &url("dir"), &[], b"").await;
    assert_eq!((dir.status, dir.code().as_str()), (404, "is_a_directory"));
    let missing = server.send("GET", &url("nope"), &[], b"").await;
    assert_eq!(
        (missing.status, missing.code().as_str()),
        (404, "not_found")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_requests() {
    let server = TestServer::start(&[]).await;
    server.write("f.txt", b"0123456789");
    let first = server.send("GET", &url("f.txt"), &[], b"").await;
    let etag = first.header("etag").unwrap().to_owned();
    let modified = first.header("last-modified").unwrap().to_owned();

    let r = server
        .send("GET", &url("f.txt"), &[("If-None-Match", &etag)], b"")
        .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let r = server
        .send(
            "GET",
            &url("f.txt"),
            &[("If-None-Match", "\"other\", W/\"x\"")],
            b"",
        )
        .await;
    assert_eq!(r.status, 200);
    let r = server
        .send(
            "HEAD",
            &url("f.txt"),
            &[("If-Modified-Since", &modified)],
            b"",
        )
        .await;
    assert_eq!(r.status, 304);
    let r = server
        .send(
            "GET",
            &url("f.txt"),
            &[("If-Modified-Since", "Mon, 01 Jan 2001 00:00:00 GMT")],
            b"",
        )
        .await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"0123456789".as_slice())
    );

    let r = server
        .send("GET", &url("f.txt"), &[("If-Match", "\"other\"")], b"")
        .await;
    assert_eq!((r.status, r.code().as_str()), (412, "precondition_failed"));
    let r = server
        .send("GET", &url("f.txt"), &[("If-Match", &etag)], b"")
        .await;
    assert_eq!(r.status, 200);
    let r = server
        .send(
            "GET",
            &url("f.txt"),
            &[("If-Unmodified-Since", "Mon, 01 Jan 2001 00:00:00 GMT")],
            b"",
        )
        .await;
    assert_eq!(r.status, 412);

    let r = server
        .send(
            "GET",
            &url("f.txt"),
            &[("Range", "bytes=2-3"), ("If-Range", &etag)],
            b"",
        )
        .await;
    assert_eq!((r.status, r.body.as_slice()), (206, b"23".as_slice()));
    let r = server
        .send(
            "GET",
            &url("f.txt"),
            &[("Range", "bytes=2-3"), ("If-Range", &modified)],
            b"",
        )
        .await;
    assert_eq!(r.status, 206);
    let r = server
        .send(
            "GET",
            &url("f.txt"),
            &[("Range", "bytes=2-3"), ("If-Range", "\"stale\"")],
            b"",
        )
        .await;
    assert_eq!((r.status, r.body.len()), (200, 10));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_replace_and_delete() {
    let server = TestServer::start(&[]).await;
    let data = pattern(300_000, 2);
    let created = server
        .send("PUT", &url("new/deep/file.bin"), &[], &data)
        .await;
    assert_eq!(created.status, 201);
    assert_eq!(created.json()["size"], 300_000);
    let etag = created.header("etag").unwrap().to_owned();
    assert_eq!(
        std::fs::read(server.path("new/deep/file.bin")).unwrap(),
        data
    );
    let fetched = server
        .send("GET", &url("new/deep/file.bin"), &[], b"")
        .await;
    assert_eq!(
        (fetched.body == data, fetched.header("etag")),
        (true, Some(etag.as_str()))
    );

    let refused = server
        .send(
            "PUT",
            &url("new/deep/file.bin"),
            &[("If-None-Match", "*")],
            b"other",
        )
        .await;
    assert_eq!(refused.status, 412);
    let refused = server
        .send(
            "PUT",
            &url("new/deep/file.bin"),
            &[("If-Match", "\"stale\"")],
            b"other",
        )
        .await;
    assert_eq!(refused.status, 412);
    let refused = server
        .send("PUT", &url("absent.bin"), &[("If-Match", "*")], b"other")
        .await;
    assert_eq!(refused.status, 412);
    assert!(!server.path("absent.bin").exists());
    assert_eq!(
        std::fs::read(server.path("new/deep/file.bin")).unwrap(),
        data
    );

    let replaced = server
        .send(
            "PUT",
            &url("new/deep/file.bin"),
            &[("If-Match", &etag)],
            b"v2",
        )
        .await;
    assert_eq!((replaced.status, replaced.body.len()), (204, 0));
    assert_ne!(replaced.header("etag"), Some(etag.as_str()));
    assert_eq!(
        std::fs::read(server.path("new/deep/file.bin")).unwrap(),
        b"v2"
    );

    let chunked = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let r = server
        .send(
            "PUT",
            &url("chunked.txt"),
            &[("Transfer-Encoding", "chunked")],
            chunked,
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        std::fs::read(server.path("chunked.txt")).unwrap(),
        b"hello world"
    );

    let empty = server.send("PUT", &url("zero"), &[], b"").await;
    assert_eq!(empty.status, 201);
    assert_eq!(std::fs::metadata(server.path("zero")).unwrap().len(), 0);

    let file_as_dir = server.send("PUT", &url("zero/child"), &[], b"x").await;
    assert_eq!(
        (file_as_dir.status, file_as_dir.code().as_str()),
        (409, "not_a_directory")
    );
    let dir_as_file = server.send("PUT", &url("new/deep"), &[], b"x").await;
    assert_eq!(dir_as_file.status, 409);
    let root = server.send("PUT", &url(""), &[], b"x").await;
    assert_eq!(root.status, 400);

    let busy = server.send("DELETE", &url("new/deep"), &[], b"").await;
    assert_eq!(
        (busy.status, busy.code().as_str()),
        (409, "directory_not_empty")
    );
    let stale = server
        .send(
            "DELETE",
            &url("new/deep/file.bin"),
            &[("If-Match", "\"stale\"")],
            b"",
        )
        .await;
    assert_eq!(stale.status, 412);
    assert_eq!(
        server
            .send("DELETE", &url("new/deep/file.bin"), &[], b"")
            .await
            .status,
        204
    );
    assert!(!server.path("new/deep/file.bin").exists());
    assert_eq!(
        server
            .send("DELETE", &url("new/deep"), &[], b"")
            .await
            .status,
        204
    );
    assert!(!server.path("new/deep").exists());
    assert_eq!(
        server
            .send("DELETE", &url("new/deep"), &[], b"")
            .await
            .status,
        404
    );
    assert_eq!(server.send("DELETE", &url(""), &[], b"").await.status, 400);

    let stats = server
        .send("GET", "/v1/shares/default/stats", &[], b"")
        .await
        .json();
    assert_eq!(stats["files"], 2);
    assert_eq!(stats["used_bytes"], 11);
    assert!(
        all_names(server.root.path())
            .iter()
            .all(|n| !n.starts_with(".zeronas-tmp-"))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_is_enforced_and_nothing_is_kept() {
    let server = TestServer::start(&["--capacity", "1000"]).await;
    assert_eq!(
        server.send("PUT", &url("a"), &[], &[1u8; 600]).await.status,
        201
    );
    let over = server.send("PUT", &url("b"), &[], &[2u8; 600]).await;
    assert_eq!(
        (over.status, over.code().as_str()),
        (507, "insufficient_storage")
    );
    assert!(!server.path("b").exists());

    let mut chunked = Vec::new();
    for _ in 0..6 {
        chunked.extend_from_slice(b"64\r\n");
        chunked.extend_from_slice(&[3u8; 100]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let over = server
        .send(
            "PUT",
            &url("c"),
            &[("Transfer-Encoding", "chunked")],
            &chunked,
        )
        .await;
    assert_eq!(over.status, 507);
    assert!(!server.path("c").exists());

    // Replacing a file counts only the growth.
    assert_eq!(
        server.send("PUT", &url("a"), &[], &[4u8; 900]).await.status,
        204
    );
    let stats = server
        .send("GET", "/v1/shares/default/stats", &[], b"")
        .await
        .json();
    assert_eq!(
        (
            stats["capacity_bytes"].as_u64(),
            stats["used_bytes"].as_u64()
        ),
        (Some(1000), Some(900))
    );
    assert_eq!(stats["reserved_bytes"], 0);
    assert_eq!(all_names(server.root.path()), vec!["a".to_owned()]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_share_refuses_writes() {
    let server = TestServer::start(&["--read-only"]).await;
    server.write("f", b"data");
    let put = server.send("PUT", &url("g"), &[], b"x").await;
    assert_eq!((put.status, put.code().as_str()), (403, "read_only"));
    assert_eq!(server.send("DELETE", &url("f"), &[], b"").await.status, 403);
    assert_eq!(server.send("GET", &url("f"), &[], b"").await.body, b"data");
    assert!(!server.path("g").exists());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_is_sorted_paginated_and_stable() {
    let server = TestServer::start(&[]).await;
    for i in 0..25 {
        server.write(&format!("d/f{i:02}"), &vec![b'x'; i]);
    }
    server.write("d/sub/inner", b"1");
    let mut names = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let r = server
            .send(
                "GET",
                &format!("/v1/shares/default/list?path=d&limit=10&cursor={cursor}"),
                &[],
                b"",
            )
            .await;
        assert_eq!(r.status, 200);
        let page = r.json();
        if pages == 0 {
            // A file created mid-listing before the cursor must not shift later pages.
            server.write("d/a-early", b"");
        }
        pages += 1;
        for e in page["entries"].as_array().unwrap() {
            names.push(e["name"].as_str().unwrap().to_owned());
            if e["name"] == "f07" {
                assert_eq!(
                    (e["type"].as_str(), e["size"].as_u64()),
                    (Some("file"), Some(7))
                );
                assert!(e["mtime"].as_i64().unwrap() > 1_600_000_000);
            }
            if e["name"] == "sub" {
                assert_eq!(e["type"], "dir");
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    let mut expected: Vec<String> = (0..25).map(|i| format!("f{i:02}")).collect();
    expected.push("sub".into());
    assert_eq!(names, expected);
    assert_eq!(pages, 3);

    let root = server
        .send("GET", "/v1/shares/default/list", &[], b"")
        .await
        .json();
    assert_eq!(root["entries"].as_array().unwrap().len(), 1);
    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=abc", "invalid_limit"),
        ("limit=100000", "invalid_limit"),
        ("cursor=zz", "invalid_cursor"),
        ("path=../etc", "invalid_path"),
    ] {
        let r = server
            .send("GET", &format!("/v1/shares/default/list?{query}"), &[], b"")
            .await;
        assert_eq!((r.status, r.code()), (400, code.to_owned()), "{query}");
    }
    let missing = server
        .send("GET", "/v1/shares/default/list?path=nope", &[], b"")
        .await;
    assert_eq!(missing.status, 404);
    let file = server
        .send("GET", "/v1/shares/default/list?path=d/f01", &[], b"")
        .await;
    assert_eq!(
        (file.status, file.code().as_str()),
        (409, "not_a_directory")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_never_escapes_or_crashes() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"TOP-SECRET").unwrap();
    let server = TestServer::start(&[]).await;
    server.write("ok.txt", b"fine");
    std::os::unix::fs::symlink(outside.path().join("secret"), server.path("escape")).unwrap();
    std::os::unix::fs::symlink(outside.path(), server.path("escape-dir")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../../etc/passwd", server.path("passwd"))
        .unwrap();

    let targets = [
        "/v1/shares/default/files/../../../../etc/passwd",
        "/v1/shares/default/files/%2e%2e/%2e%2e/etc/passwd",
        "/v1/shares/default/files/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/v1/shares/default/files/..%2f..%2fetc%2fpasswd",
        "/v1/shares/default/files/ok.txt%00.png",
        "/v1/shares/default/files//etc/passwd",
        "/v1/shares/default/files/escape",
        "/v1/shares/default/files/escape-dir/secret",
        "/v1/shares/default/files/passwd",
        "/v1/shares/default/files/.zeronas-tmp-x",
        "/v1/shares/default/list?path=escape-dir",
        "/v1/shares/default/list?path=..",
    ];
    for target in targets {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let r = send_raw(server.addr, raw.as_bytes(), false).await;
        assert!(
            [400, 403, 404].contains(&r.status),
            "{target} gave {}",
            r.status
        );
        let body = String::from_utf8_lossy(&r.body);
        assert!(
            !body.contains("TOP-SECRET") && !body.contains("root:"),
            "{target} leaked {body}"
        );
        assert!(!r.code().is_empty(), "{target}: JSON error expected");
    }
    let put = send(
        server.addr,
        "PUT",
        "/v1/shares/default/files/escape-dir/new",
        &[],
        b"x",
    )
    .await;
    assert!(
        [400, 403, 404, 409].contains(&put.status),
        "PUT through an escaping symlink gave {}",
        put.status
    );
    assert!(!outside.path().join("new").exists());

    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    let too_large = send_raw(server.addr, big.as_bytes(), false).await;
    assert_eq!(too_large.status, 431);
    assert!(
        String::from_utf8_lossy(&too_large.body).contains(r#""code":"header_too_large""#),
        "{:?}",
        String::from_utf8_lossy(&too_large.body)
    );
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{many}\r\n");
    assert_eq!(
        send_raw(server.addr, many.as_bytes(), false).await.status,
        431
    );
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n",
        b"\x00\x01\x02\r\n\r\n",
    ] {
        let r = send_raw(server.addr, garbage, false).await;
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(garbage));
    }
    let unknown = server
        .send("GET", "/v1/shares/other/files/ok.txt", &[], b"")
        .await;
    assert_eq!(
        (unknown.status, unknown.code().as_str()),
        (404, "unknown_share")
    );
    let bad_len = server
        .send("PUT", &url("x"), &[("Content-Length", "abc")], b"")
        .await;
    assert_eq!(bad_len.status, 400);
    let method = server.send("PATCH", &url("ok.txt"), &[], b"").await;
    assert_eq!(
        (method.status, method.header("allow")),
        (405, Some("GET, HEAD, PUT, DELETE"))
    );

    // Still serving, nothing left behind.
    assert_eq!(
        server.send("GET", &url("ok.txt"), &[], b"").await.body,
        b"fine"
    );
    assert!(
        all_names(server.root.path())
            .iter()
            .all(|n| !n.starts_with(".zeronas-tmp-"))
    );
    server.stop().await;
}

/// The duration histogram runs to the last body byte: a client that reads a large body
/// slowly makes the duration long while the time to first byte stays short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_duration_runs_to_the_last_byte() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start(&[]).await;
    let len = 32 << 20;
    server.write("big.bin", &pattern(len, 3));
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(&build_request(
            "GET",
            &url("big.bin"),
            &[("Connection", "close")],
            b"",
        ))
        .await
        .unwrap();
    let mut received = 0usize;
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        // Reads of up to 256 KiB, 20 ms apart: 128 or more of them, at least 2.5 s.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        match stream.read(&mut chunk).await.unwrap() {
            0 => break,
            n => received += n,
        }
    }
    assert!(received > len, "received {received}");
    let metrics = metrics_text(server.addr).await;
    let labels = r#"{route="files",method="GET",status_class="2xx"}"#;
    let duration = metric(
        &metrics,
        &format!("zeronas_http_request_duration_seconds_sum{labels}"),
    );
    let first_byte = metric(
        &metrics,
        &format!("zeronas_http_time_to_first_byte_seconds_sum{labels}"),
    );
    assert!(duration > 0.5, "duration {duration} s:\n{metrics}");
    assert!(first_byte < 0.25, "time to first byte {first_byte} s");
    assert_eq!(
        metric(
            &metrics,
            r#"zeronas_http_response_size_bytes_bucket{le="67108864.0",route="files"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"zeronas_http_response_size_bytes_bucket{le="16777216.0",route="files"}"#
        ),
        0.0
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_probes_and_request_ids() {
    let server = TestServer::start(&["--rescan-interval", "100ms"]).await;
    server.write("m.bin", &[7u8; 4096]);
    let r = server
        .send("GET", &url("m.bin"), &[("X-Request-ID", "trace-42")], b"")
        .await;
    assert_eq!(r.header("x-request-id"), Some("trace-42"));
    let generated = server.send("GET", &url("m.bin"), &[], b"").await;
    assert_eq!(generated.header("x-request-id").map(str::len), Some(32));
    let _ = server.send("GET", &url("missing"), &[], b"").await;

    assert_eq!(server.send("GET", "/healthz", &[], b"").await.status, 200);
    assert_eq!(server.send("GET", "/readyz", &[], b"").await.status, 200);
    let metrics = String::from_utf8(server.send("GET", "/metrics", &[], b"").await.body).unwrap();
    assert!(
        metrics.contains(r#"zeronas_http_requests_total{route="files",method="GET",code="200"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"zeronas_http_requests_total{route="files",method="GET",code="404"} 1"#)
    );
    let files = |series: &str, labels: &str| metric(&metrics, &format!("{series}{{{labels}}}"));
    let ok = r#"route="files",method="GET",status_class="2xx""#;
    let missing = r#"route="files",method="GET",status_class="4xx""#;
    assert_eq!(
        files("zeronas_http_request_duration_seconds_count", ok),
        2.0
    );
    assert_eq!(
        files("zeronas_http_time_to_first_byte_seconds_count", ok),
        2.0
    );
    assert_eq!(
        files("zeronas_http_request_duration_seconds_count", missing),
        1.0
    );
    // Two 4 KiB bodies and one small JSON error.
    let size = r#"zeronas_http_response_size_bytes_bucket"#;
    assert_eq!(files(size, r#"le="256.0",route="files""#), 1.0, "{metrics}");
    assert_eq!(files(size, r#"le="4096.0",route="files""#), 3.0);
    assert_eq!(
        metric(
            &metrics,
            "zeronas_http_response_size_bytes_sum{route=\"files\"}"
        ) as u64
            / 4096,
        2
    );
    // The scrape itself is in flight while it renders.
    assert_eq!(metric(&metrics, "zeronas_http_requests_in_flight"), 1.0);
    assert!(metrics.contains(r#"zeronas_transfer_bytes_total{protocol="http",path="copy"} 8192"#));
    // Written around the server: the periodic rescan picks it up.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let metrics = String::from_utf8(server.send("GET", "/metrics", &[], b"").await.body).unwrap();
    assert!(
        metrics.contains("zeronas_share_used_bytes 4096"),
        "{metrics}"
    );
    assert!(metrics.contains("zeronas_share_files 1"));
    server.stop().await;

    let separate = TestServer::start(&["--metrics", "127.0.0.1:0"]).await;
    let admin = separate.metrics_addr.expect("metrics listener");
    let m = send(admin, "GET", "/metrics", &[], b"").await;
    assert!(String::from_utf8_lossy(&m.body).contains("zeronas_share_files"));
    assert_eq!(send(admin, "GET", &url("x"), &[], b"").await.status, 404);
    assert_eq!(separate.send("GET", "/metrics", &[], b"").await.status, 404);
    assert_eq!(separate.send("GET", "/healthz", &[], b"").await.status, 200);
    separate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_concurrent_clients_do_not_corrupt_data() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("down")).unwrap();
    for i in 0..50u64 {
        std::fs::write(
            root.path().join(format!("down/{i}")),
            pattern(20_000 + i as usize * 997, i),
        )
        .unwrap();
    }
    let server = TestServer::start_in(root, &[]).await;
    let addr = server.addr;
    let mut tasks = Vec::new();
    for i in 0..100u64 {
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                let n = i / 2;
                let r = send(addr, "GET", &url(&format!("down/{n}")), &[], b"").await;
                assert_eq!(r.status, 200);
                assert!(
                    r.body == pattern(20_000 + n as usize * 997, n),
                    "download {n} corrupted"
                );
            } else {
                let data = pattern(50_000 + i as usize * 131, 1000 + i);
                let r = send(addr, "PUT", &url(&format!("up/{i}")), &[], &data).await;
                assert_eq!(r.status, 201, "upload {i}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    for i in (1..100u64).step_by(2) {
        let on_disk = std::fs::read(server.path(&format!("up/{i}"))).unwrap();
        assert!(
            on_disk == pattern(50_000 + i as usize * 131, 1000 + i),
            "upload {i} corrupted on disk"
        );
    }
    let stats = server
        .send("GET", "/v1/shares/default/stats", &[], b"")
        .await
        .json();
    assert_eq!(stats["files"], 100);
    server.stop().await;
}
