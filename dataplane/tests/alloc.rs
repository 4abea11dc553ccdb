//! Allocations per request on the front end's plain-read path, counted by a global
//! allocator on the thread that runs the server (the client runs on another thread).
//!
//! One is left by design: the shared handle (`Arc<File>`) of the file each request opens.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use common::TestServer;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to the system allocator; counting touches only a
// const-initialised thread-local, which itself never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Sends `n` keep-alive GETs of `target` and reads each response in full.
fn get_many(stream: &mut BufReader<TcpStream>, target: &str, n: usize, len: usize) {
    let request = format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut body = vec![0u8; len];
    for _ in 0..n {
        stream.get_mut().write_all(request.as_bytes()).unwrap();
        let mut line = String::new();
        stream.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        loop {
            line.clear();
            stream.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
        }
        stream.read_exact(&mut body).unwrap();
    }
}

fn measure(size: usize) -> f64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Everything of the server runs on this thread: its allocations are the ones counted.
        let server = TestServer::start(&["--workers", "1"]).await;
        server.write("f.bin", &vec![5u8; size]);
        let target = TestServer::file_url("f.bin");
        let (addr, t) = (server.addr, target.clone());
        let stream = tokio::task::spawn_blocking(move || {
            let mut stream = BufReader::new(TcpStream::connect(addr).unwrap());
            get_many(&mut stream, &t, 200, size);
            stream
        })
        .await
        .unwrap();
        const N: usize = 2000;
        let before = allocations();
        let stream = tokio::task::spawn_blocking(move || {
            let mut stream = stream;
            get_many(&mut stream, &target, N, size);
            stream
        })
        .await
        .unwrap();
        let during = allocations() - before;
        drop(stream);
        server.stop().await;
        // The two spawn_blocking hand-offs allocate a few times; the rest is per request.
        during as f64 / N as f64
    })
}

#[test]
fn a_small_plain_read_allocates_at_most_once() {
    let per_request = measure(1024);
    println!("1 KiB: {per_request:.3} allocations per request");
    assert!(per_request <= 1.05, "{per_request} allocations per request");
}

#[test]
fn a_sendfile_plain_read_allocates_at_most_once() {
    // Above 16 KiB the body goes by sendfile (its transfer record is held inline).
    let per_request = measure(64 * 1024);
    println!("64 KiB: {per_request:.3} allocations per request");
    assert!(per_request <= 1.05, "{per_request} allocations per request");
}
