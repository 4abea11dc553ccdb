//! NFS behaviour real workloads depend on, over raw RPC against the dataplane binary: a
//! connection's requests run concurrently (a COMMIT does not hold back a READ), retransmitted
//! non-idempotent calls are answered from the duplicate request cache, folder changes are
//! durable before their reply and carry pre-operation attributes, and READDIR pages resume
//! where they ended.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use common::rpc::*;
use common::{DataplaneChild, spawn_dataplane};

/// NFS procedure numbers used here.
const GETATTR: u32 = 1;
const SETATTR: u32 = 2;
const READ: u32 = 6;
const CREATE: u32 = 8;
const MKDIR: u32 = 9;
const SYMLINK: u32 = 10;
const REMOVE: u32 = 12;
const RMDIR: u32 = 13;
const RENAME: u32 = 14;
const LINK: u32 = 15;
const READDIR: u32 = 16;
const COMMIT: u32 = 21;

/// A dataplane over `root` whose AUTH_SYS root callers keep uid 0 (the share is root's).
fn serve(root: &Path, wrapper: &[&str]) -> (DataplaneChild, SocketAddr) {
    serve_with(root, wrapper, &[])
}

/// [`serve`] with more flags.
fn serve_with(root: &Path, wrapper: &[&str], extra: &[&str]) -> (DataplaneChild, SocketAddr) {
    let mut flags = vec![
        "--nfs",
        "127.0.0.1:0",
        "--nfs-client",
        "127.0.0.0/8,rw,no_root_squash",
        "--metrics",
        "127.0.0.1:0",
    ];
    flags.extend_from_slice(extra);
    let (child, _) = spawn_dataplane(wrapper, root, &flags);
    let addr = child.1["nfs"].as_str().unwrap().parse().unwrap();
    (child, addr)
}

/// The value of the metric line starting with `series` (0 when absent).
fn metric(child: &DataplaneChild, series: &str) -> f64 {
    let addr = child.1["metrics"].as_str().expect("metrics listener");
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut s, &mut text).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// diropargs3: a folder's handle and a name.
fn dirop(dir: &[u8], name: &[u8]) -> Vec<u8> {
    [opaque(dir), opaque(name)].concat()
}

/// sattr3 setting only the mode.
fn mode_only(mode: u32) -> Vec<u8> {
    words(&[1, mode, 0, 0, 0, 0, 0])
}

/// Sends one NFS call as root and reads its reply.
fn nfs(s: &mut TcpStream, xid: u32, procedure: u32, args: &[u8]) -> Vec<u8> {
    s.write_all(&call(xid, 2, NFS, 3, procedure, Cred::Root, args))
        .unwrap();
    let reply = reply_bytes(s);
    assert_eq!(word(&reply, 0), xid, "reply to another call");
    reply
}

/// The nfsstat3 of a reply.
fn status(reply: &[u8]) -> u32 {
    word(reply, 6)
}

#[test]
fn a_retransmitted_remove_or_mkdir_after_a_reconnect_gets_its_first_reply() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("gone.txt"), b"x").unwrap();
    let (child, addr) = serve(root.path(), &[]);
    let mut s = connect(addr);
    let dir = root_handle(&mut s);
    let remove = call(
        500,
        2,
        NFS,
        3,
        REMOVE,
        Cred::Root,
        &dirop(&dir, b"gone.txt"),
    );
    let mkdir = call(
        501,
        2,
        NFS,
        3,
        MKDIR,
        Cred::Root,
        &[dirop(&dir, b"made"), mode_only(0o755)].concat(),
    );
    s.write_all(&remove).unwrap();
    let first_remove = reply_bytes(&mut s);
    s.write_all(&mkdir).unwrap();
    let first_mkdir = reply_bytes(&mut s);
    assert_eq!((status(&first_remove), status(&first_mkdir)), (0, 0));
    // The connection drops (the replies were lost, as far as the client knows); it
    // reconnects from another port and retransmits both calls with their xids.
    drop(s);
    let mut s = connect(addr);
    s.write_all(&remove).unwrap();
    let again = reply_bytes(&mut s);
    assert_eq!(again, first_remove, "the retransmitted REMOVE ran again");
    s.write_all(&mkdir).unwrap();
    let again = reply_bytes(&mut s);
    assert_eq!(again, first_mkdir, "the retransmitted MKDIR ran again");
    assert!(!root.path().join("gone.txt").exists());
    assert!(root.path().join("made").is_dir());
    // New calls (new xids) run: the file is gone, the folder exists.
    let reply = nfs(&mut s, 502, REMOVE, &dirop(&dir, b"gone.txt"));
    assert_eq!(status(&reply), 2, "NOENT for a new REMOVE");
    let reply = nfs(
        &mut s,
        503,
        MKDIR,
        &[dirop(&dir, b"made"), mode_only(0o755)].concat(),
    );
    assert_eq!(status(&reply), 17, "EXIST for a new MKDIR");
    assert_eq!(
        metric(
            &child,
            "zeronas_nfs_duplicate_requests_total{result=\"replayed\"}"
        ),
        2.0
    );
    assert_eq!(metric(&child, "zeronas_nfs_requests_in_flight"), 0.0);
}

/// Sends a COMMIT of 128 MiB of dirty data and, in the same write, a READ of a small file
/// on one connection of a dataplane started with `extra`; the xids in the order their
/// replies came (COMMIT 900, READ 901) and when.
fn commit_then_read(extra: &[&str]) -> ([u32; 2], [std::time::Duration; 2]) {
    // On the build's disk, not a tmpfs: the COMMIT must have real writeback to wait for.
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::write(root.path().join("small.txt"), b"small file").unwrap();
    let (_child, addr) = serve_with(root.path(), &[], extra);
    let mut s = connect(addr);
    let big = root.path().join("big.bin");
    std::fs::write(&big, b"").unwrap();
    let big_handle = file_handle(&mut s, b"big.bin");
    let small_handle = file_handle(&mut s, b"small.txt");
    // 128 MiB of dirty page cache for the COMMIT's fsync to write out.
    let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
    let mut file = std::fs::OpenOptions::new().append(true).open(&big).unwrap();
    for _ in 0..128 {
        file.write_all(&chunk).unwrap();
    }
    drop(file);
    let commit = call(
        900,
        2,
        NFS,
        3,
        COMMIT,
        Cred::Root,
        &[opaque(&big_handle), words(&[0, 0, 0])].concat(),
    );
    let read = call(
        901,
        2,
        NFS,
        3,
        READ,
        Cred::Root,
        &[opaque(&small_handle), words(&[0, 0, 64])].concat(),
    );
    let started = Instant::now();
    s.write_all(&[commit, read].concat()).unwrap();
    let first = reply_bytes(&mut s);
    let first_at = started.elapsed();
    let second = reply_bytes(&mut s);
    let second_at = started.elapsed();
    assert_eq!((status(&first), status(&second)), (0, 0));
    let read_reply = if word(&first, 0) == 901 {
        &first
    } else {
        &second
    };
    let text_len = word(read_reply, 31) as usize;
    assert_eq!(&read_reply[128..128 + text_len], b"small file");
    ([word(&first, 0), word(&second, 0)], [first_at, second_at])
}

#[test]
fn a_read_is_answered_while_a_commit_of_another_file_runs() {
    let (order, at) = commit_then_read(&[]);
    assert_eq!(
        order,
        [901, 900],
        "the READ waited for the COMMIT sent before it (replies after {at:?})"
    );
    eprintln!(
        "READ answered after {:?}, the COMMIT before it after {:?}",
        at[0], at[1]
    );
}

#[test]
fn one_thread_or_one_request_per_connection_serialises_again() {
    // The flags bound what runs at once: with one worker, or one request in flight per
    // connection, the READ waits for the COMMIT again.
    for flags in [
        ["--nfs-threads", "1"],
        ["--nfs-max-requests-per-connection", "1"],
    ] {
        let (order, at) = commit_then_read(&flags);
        assert_eq!(order, [900, 901], "{flags:?}: replies after {at:?}");
    }
}

/// Parses `strace -f -e trace=fsync,sendto` output into the sequence of those calls.
fn traced_calls(log: &str) -> Vec<&'static str> {
    log.lines()
        .filter_map(|line| {
            // "PID fsync(5)..." or "PID <... fsync resumed>..." (only the start counts).
            let call = line.split_once(' ')?.1.trim_start();
            if call.starts_with("fsync(") {
                Some("fsync")
            } else if call.starts_with("sendto(") {
                Some("send")
            } else {
                None
            }
        })
        .collect()
}

/// Stops the dataplane that `strace` (the `child`) runs, then waits for strace to end.
fn stop_traced(mut child: DataplaneChild) {
    let tracer = child.id();
    let children = std::fs::read_to_string(format!("/proc/{tracer}/task/{tracer}/children"))
        .expect("strace's children");
    let traced = children
        .split_whitespace()
        .next()
        .expect("the traced dataplane");
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", traced])
        .status()
        .unwrap();
    assert!(stopped.success());
    child.wait().unwrap();
}

#[test]
fn folder_changes_are_durable_before_their_reply() {
    let root = tempfile::tempdir().unwrap();
    let trace = tempfile::NamedTempFile::new().unwrap();
    let trace_path = trace.path().to_str().unwrap().to_owned();
    let (child, addr) = serve(
        root.path(),
        &[
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=fsync,sendto",
            "-o",
            &trace_path,
        ],
    );
    let mut s = connect(addr);
    let dir = root_handle(&mut s);
    let mut expect = Vec::new();
    let mut run = |s: &mut TcpStream, what: &'static str, procedure: u32, args: Vec<u8>| {
        let xid = 1000 + expect.len() as u32;
        let reply = nfs(s, xid, procedure, &args);
        assert_eq!(status(&reply), 0, "{what}");
        expect.push(what);
        reply
    };
    let created = run(
        &mut s,
        "CREATE",
        CREATE,
        [dirop(&dir, b"f"), words(&[0]), mode_only(0o644)].concat(),
    );
    let file = created[36..56].to_vec();
    run(&mut s, "GETATTR", GETATTR, opaque(&file));
    run(
        &mut s,
        "MKDIR",
        MKDIR,
        [dirop(&dir, b"d"), mode_only(0o755)].concat(),
    );
    run(
        &mut s,
        "SYMLINK",
        SYMLINK,
        [dirop(&dir, b"l"), mode_only(0o777), opaque(b"f")].concat(),
    );
    run(
        &mut s,
        "RENAME",
        RENAME,
        [dirop(&dir, b"f"), dirop(&dir, b"g")].concat(),
    );
    run(
        &mut s,
        "LINK",
        LINK,
        [opaque(&file), dirop(&dir, b"h")].concat(),
    );
    run(&mut s, "REMOVE", REMOVE, dirop(&dir, b"h"));
    run(&mut s, "RMDIR", RMDIR, dirop(&dir, b"d"));
    run(
        &mut s,
        "SETATTR size",
        SETATTR,
        [opaque(&file), words(&[0, 0, 0, 1, 0, 4096, 0, 0, 0])].concat(),
    );
    drop(s);
    // strace writes a call's line when it completes: stop the server to flush them all.
    // strace does not pass a SIGTERM on to the program it runs, so the dataplane (strace's
    // child) is stopped by its own PID.
    stop_traced(child);
    let log = std::fs::read_to_string(&trace_path).unwrap();
    let calls = traced_calls(&log);
    // The MNT reply is the first send; after it, each reply's send must be preceded by at
    // least one fsync since the previous reply (none for GETATTR, which changes nothing).
    let sends: Vec<usize> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == "send")
        .map(|(i, _)| i)
        .collect();
    assert!(
        sends.len() > expect.len(),
        "{} sends traced for {} replies:\n{log}",
        sends.len(),
        expect.len() + 1
    );
    for (k, what) in expect.iter().enumerate() {
        let (from, to) = (sends[k], sends[k + 1]);
        let syncs = calls[from..to].iter().filter(|c| **c == "fsync").count();
        if *what == "GETATTR" {
            assert_eq!(syncs, 0, "GETATTR synced something");
        } else {
            assert!(syncs >= 1, "{what} answered before any fsync:\n{log}");
        }
    }
}

#[test]
fn folder_changes_carry_the_folders_attributes_from_before_and_after() {
    let root = tempfile::tempdir().unwrap();
    let (_child, addr) = serve(root.path(), &[]);
    let mut s = connect(addr);
    let dir = root_handle(&mut s);
    let before = std::fs::metadata(root.path()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let reply = nfs(
        &mut s,
        1,
        CREATE,
        &[dirop(&dir, b"new"), words(&[0]), mode_only(0o644)].concat(),
    );
    assert_eq!(status(&reply), 0);
    // status, post_op_fh3 (1 + 1 + 5 words), post_op_attr (1 + 21), then wcc_data.
    let wcc = 6 + 1 + 7 + 22;
    assert_eq!(word(&reply, wcc), 1, "no pre-operation attributes");
    let pre_size = u64::from(word(&reply, wcc + 1)) << 32 | u64::from(word(&reply, wcc + 2));
    let pre_mtime = (word(&reply, wcc + 3), word(&reply, wcc + 4));
    assert_eq!(pre_size, before.size());
    assert_eq!(
        pre_mtime,
        (before.mtime() as u32, before.mtime_nsec() as u32),
        "pre-operation mtime is not the folder's before the CREATE"
    );
    assert_eq!(word(&reply, wcc + 7), 1, "no post-operation attributes");
    let after = std::fs::metadata(root.path()).unwrap();
    // post fattr3: type, mode, nlink, uid, gid, size(2), used(2), rdev(2), fsid(2), fileid(2),
    // atime(2), mtime(2).
    let post_mtime = (word(&reply, wcc + 8 + 17), word(&reply, wcc + 8 + 18));
    assert_eq!(
        post_mtime,
        (after.mtime() as u32, after.mtime_nsec() as u32)
    );
    assert_ne!(pre_mtime, post_mtime);
}

#[test]
fn access_follows_the_mode_bits_even_for_the_owner() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("read-only.txt");
    std::fs::write(&file, b"x").unwrap();
    std::os::unix::fs::chown(&file, Some(1000), Some(1000)).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
    let (_child, addr) = serve(root.path(), &[]);
    let mut s = connect(addr);
    let handle = file_handle(&mut s, b"read-only.txt");
    // ACCESS (4) asking READ | MODIFY | EXTEND (0x01 | 0x04 | 0x08) as the owner, uid 1000.
    s.write_all(&call(
        7,
        2,
        NFS,
        3,
        4,
        Cred::User(1000, 1000),
        &[opaque(&handle), words(&[0x0d])].concat(),
    ))
    .unwrap();
    let reply = reply_bytes(&mut s);
    assert_eq!(status(&reply), 0);
    // status, post_op_attr (1 + 21 words), then the access bits.
    assert_eq!(
        word(&reply, 7 + 22),
        0x01,
        "the owner was granted writes its mode bits refuse"
    );
}

#[test]
fn failures_carry_the_attributes_of_what_their_arguments_name() {
    let root = tempfile::tempdir().unwrap();
    let (_child, addr) = serve(root.path(), &[]);
    let mut s = connect(addr);
    let dir = root_handle(&mut s);
    let ino = std::fs::metadata(root.path()).unwrap().ino();
    let fileid =
        |reply: &[u8], at: usize| u64::from(word(reply, at)) << 32 | u64::from(word(reply, at + 1));
    // LOOKUP of a missing name: NOENT with the folder's post_op_attr (fileid at word 8 + 13).
    let reply = nfs(&mut s, 1, 3, &dirop(&dir, b"missing"));
    assert_eq!(
        (status(&reply), word(&reply, 7)),
        (2, 1),
        "no folder attributes"
    );
    assert_eq!(fileid(&reply, 8 + 13), ino);
    // REMOVE of a missing name: NOENT with wcc_data (no pre, post attributes of the folder).
    let reply = nfs(&mut s, 2, REMOVE, &dirop(&dir, b"missing"));
    assert_eq!(
        (status(&reply), word(&reply, 7), word(&reply, 8)),
        (2, 0, 1)
    );
    assert_eq!(fileid(&reply, 9 + 13), ino);
    // MKDIR of an existing name: EXIST with the folder's attributes after.
    std::fs::create_dir(root.path().join("here")).unwrap();
    let reply = nfs(
        &mut s,
        3,
        MKDIR,
        &[dirop(&dir, b"here"), mode_only(0o755)].concat(),
    );
    assert_eq!((status(&reply), word(&reply, 8)), (17, 1));
    // A stale handle gets no attributes.
    let mut stale = dir.clone();
    stale[12] ^= 0xff;
    let reply = nfs(&mut s, 4, 3, &dirop(&stale, b"x"));
    assert_eq!((status(&reply), word(&reply, 7)), (70, 0));
}

/// One READDIR page: the entries' (name, cookie) and eof.
fn readdir_page(
    s: &mut TcpStream,
    xid: u32,
    dir: &[u8],
    cookie: u64,
) -> (Vec<(String, u64)>, bool) {
    let args = [
        opaque(dir),
        cookie.to_be_bytes().to_vec(),
        vec![0; 8],
        words(&[4096]),
    ]
    .concat();
    let reply = nfs(s, xid, READDIR, &args);
    assert_eq!(status(&reply), 0);
    let mut at = (7 + 22 + 2) * 4;
    let mut entries = Vec::new();
    let u64_at = |at: usize| u64::from_be_bytes(reply[at..at + 8].try_into().unwrap());
    while word(&reply, at / 4) == 1 {
        let len = word(&reply, at / 4 + 3) as usize;
        let name = String::from_utf8_lossy(&reply[at + 16..at + 16 + len]).into_owned();
        at += 16 + len.div_ceil(4) * 4;
        entries.push((name, u64_at(at)));
        at += 8;
    }
    let eof = word(&reply, at / 4 + 1) == 1;
    (entries, eof)
}

#[test]
fn readdir_pages_resume_where_they_ended_while_the_folder_changes() {
    let root = tempfile::tempdir().unwrap();
    let folder = root.path().join("many");
    std::fs::create_dir(&folder).unwrap();
    for i in 0..3000 {
        std::fs::write(folder.join(format!("file-{i:05}")), b"").unwrap();
    }
    let (_child, addr) = serve(root.path(), &[]);
    let mut s = connect(addr);
    let dir = file_handle(&mut s, b"many");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let (mut cookie, mut pages) = (0, 0);
    loop {
        let (entries, eof) = readdir_page(&mut s, 100 + pages, &dir, cookie);
        pages += 1;
        for (name, _) in &entries {
            *seen.entry(name.clone()).or_default() += 1;
        }
        // Between pages, a listed file goes and a new one comes: the names present
        // throughout must still come exactly once.
        if pages == 3 {
            std::fs::remove_file(folder.join(&entries[0].0)).unwrap();
            std::fs::write(folder.join("late-arrival"), b"").unwrap();
        }
        if eof {
            break;
        }
        cookie = entries.last().expect("a page with entries").1;
        assert!(pages < 1000, "the listing does not end");
    }
    assert!(pages > 10, "only {pages} pages: the test wants many");
    for i in 0..3000 {
        let name = format!("file-{i:05}");
        let count = seen.get(&name).copied().unwrap_or(0);
        assert!(count == 1, "{name} listed {count} times");
    }
    assert_eq!((seen.get("."), seen.get("..")), (Some(&1), Some(&1)));
    assert!(seen.get("late-arrival").is_none_or(|n| *n == 1));
}
