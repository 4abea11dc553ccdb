//! The NFSv3 export against a real NFS client: Debian's libnfs (`nfs-ls`, `nfs-cp`,
//! `nfs-cat`, and `support/libnfs_client.py`, which drives libnfs through ctypes and keeps
//! file handles between commands).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{DataplaneChild, metric, spawn_dataplane};

/// A dataplane serving a fresh folder that everyone may write (squashed callers included).
struct Export {
    child: DataplaneChild,
    http: SocketAddr,
    root: tempfile::TempDir,
}

impl Export {
    fn start(extra: &[&str]) -> Export {
        let root = tempfile::tempdir().unwrap();
        set_mode(root.path(), 0o777);
        Self::start_in(root, extra)
    }

    fn start_in(root: tempfile::TempDir, extra: &[&str]) -> Export {
        let (child, http) = spawn_dataplane(&[], root.path(), extra);
        Export { child, http, root }
    }

    fn port(&self) -> u16 {
        let nfs: SocketAddr = self.child.1["nfs"]
            .as_str()
            .expect("nfs address")
            .parse()
            .unwrap();
        nfs.port()
    }

    fn url(&self, path: &str) -> String {
        nfs_url(self.port(), path, "")
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.root.path().join(rel)
    }

    fn metric(&self, series: &str) -> f64 {
        use std::io::Read;
        let mut stream = std::net::TcpStream::connect(self.http).unwrap();
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        metric(&text, series)
    }
}

fn nfs_url(port: u16, path: &str, extra: &str) -> String {
    format!("nfs://127.0.0.1{path}?version=3&nfsport={port}&mountport={port}{extra}")
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn shared_dir(export: &Export, rel: &str) {
    std::fs::create_dir_all(export.path(rel)).unwrap();
    set_mode(&export.path(rel), 0o777);
}

/// Runs a libnfs-utils tool; returns (success, stdout, stderr).
fn tool(program: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} (Debian package libnfs-utils; `make deps` installs it): {e}")
        });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// Files are named under a folder in these libnfs URLs: for `nfs://host/file` libnfs 4.0 mounts
// an empty path, walks the EXPORT list and fails ("mount_cb: (null)"), against NFS-Ganesha too,
// unless the URL adds `auto-traverse-mounts=0`.

/// The ctypes libnfs client of `support/libnfs_client.py`.
struct Client {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Client {
    fn mount(url: &str) -> (Client, serde_json::Value) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/libnfs_client.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with libnfs13");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut client = Client {
            child,
            stdin,
            stdout,
        };
        let mounted = client.line();
        (client, mounted)
    }

    fn line(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("client said {line:?}: {e}"))
    }

    fn run(&mut self, command: &str) -> serde_json::Value {
        writeln!(self.stdin, "{command}").unwrap();
        self.line()
    }

    fn ok(&mut self, command: &str) -> serde_json::Value {
        let out = self.run(command);
        assert_eq!(out["ok"], true, "{command}: {out}");
        out
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}

fn random_file(path: &Path, len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(path, &data).unwrap();
    data
}

#[test]
fn copies_100_mib_in_and_out_and_lists_it() {
    let export = Export::start(&[]);
    shared_dir(&export, "in");
    let scratch = tempfile::tempdir().unwrap();
    let local = scratch.path().join("big.bin");
    let data = random_file(&local, 100 << 20);

    let (ok, _, err) = tool(
        "nfs-cp",
        &[local.to_str().unwrap(), &export.url("/in/big.bin")],
    );
    assert!(ok, "nfs-cp in: {err}");
    assert!(
        std::fs::read(export.path("in/big.bin")).unwrap() == data,
        "the server's copy differs"
    );

    let back = scratch.path().join("back.bin");
    let (ok, _, err) = tool(
        "nfs-cp",
        &[&export.url("/in/big.bin"), back.to_str().unwrap()],
    );
    assert!(ok, "nfs-cp out: {err}");
    assert!(
        std::fs::read(&back).unwrap() == data,
        "the copy read back differs"
    );

    let (ok, listing, err) = tool("nfs-ls", &[&export.url("/in")]);
    assert!(ok, "nfs-ls: {err}");
    assert!(
        listing
            .lines()
            .any(|l| l.ends_with(" big.bin") && l.contains(&(100u64 << 20).to_string())),
        "{listing}"
    );

    let sent = export.metric(r#"zeronas_transfer_bytes_total{protocol="nfs",path="sendfile"}"#);
    assert!(
        sent >= (100 << 20) as f64,
        "READ data went out by sendfile: {sent}"
    );
    assert!(export.metric(r#"zeronas_nfs_requests_total{proc="WRITE",status="ok"}"#) >= 100.0);
    assert!(export.metric(r#"zeronas_nfs_requests_total{proc="COMMIT",status="ok"}"#) >= 1.0);
}

#[test]
fn nested_folders_rename_remove_symlink() {
    let export = Export::start(&[]);
    let (mut nfs, mounted) = Client::mount(&export.url("/"));
    assert_eq!(mounted["ok"], true, "{mounted}");
    nfs.ok("mkdir /a");
    nfs.ok("mkdir /a/b");
    nfs.ok("mkdir /a/b/c");
    nfs.ok("write /a/b/c/f.txt 68656c6c6f");
    assert_eq!(std::fs::read(export.path("a/b/c/f.txt")).unwrap(), b"hello");
    let (ok, cat, err) = tool("nfs-cat", &[&export.url("/a/b/c/f.txt")]);
    assert!(ok && cat == "hello", "nfs-cat: {cat:?} {err}");

    nfs.ok("rename /a/b/c/f.txt /a/g.txt");
    assert!(!export.path("a/b/c/f.txt").exists() && export.path("a/g.txt").exists());
    assert_eq!(nfs.ok("read /a/g.txt")["data"], "68656c6c6f");
    nfs.ok("rename /a/b /a/moved");
    assert!(export.path("a/moved/c").is_dir());

    nfs.ok("symlink g.txt /a/link");
    assert_eq!(nfs.ok("readlink /a/link")["target"], "g.txt");
    assert_eq!(
        std::fs::read_link(export.path("a/link")).unwrap(),
        Path::new("g.txt")
    );

    let not_empty = nfs.run("rmdir /a/moved");
    assert_eq!(not_empty["ok"], false, "{not_empty}");
    nfs.ok("rmdir /a/moved/c");
    nfs.ok("rmdir /a/moved");
    nfs.ok("unlink /a/g.txt");
    nfs.ok("unlink /a/link");
    assert!(
        std::fs::read_dir(export.path("a"))
            .unwrap()
            .next()
            .is_none()
    );
    let gone = nfs.run("stat /a/g.txt");
    assert!(gone["error"].as_str().unwrap().contains("NOENT"), "{gone}");

    // Upload temp files of the HTTP API are invisible over NFS.
    std::fs::write(export.path("a/.zeronas-tmp-0123"), b"x").unwrap();
    let (ok, listing, _) = tool("nfs-ls", &[&export.url("/a")]);
    assert!(ok && !listing.contains("zeronas-tmp"), "{listing}");
}

#[test]
fn read_only_exports_and_client_rules_refuse_writes() {
    let scratch = tempfile::tempdir().unwrap();
    let local = scratch.path().join("f");
    random_file(&local, 1000);
    for extra in [
        &["--read-only"][..],
        &["--nfs-client", "127.0.0.0/8,ro"][..],
    ] {
        let export = Export::start(extra);
        shared_dir(&export, "w");
        std::fs::write(export.path("w/present.txt"), b"data").unwrap();
        let (ok, _, err) = tool("nfs-cp", &[local.to_str().unwrap(), &export.url("/w/f")]);
        assert!(
            !ok && err.contains("ROFS"),
            "{extra:?}: write allowed? {err}"
        );
        let (ok, cat, err) = tool("nfs-cat", &[&export.url("/w/present.txt")]);
        assert!(ok && cat == "data", "{extra:?}: reads still work: {err}");
        let (mut nfs, _) = Client::mount(&export.url("/"));
        assert!(
            nfs.run("mkdir /d")["error"]
                .as_str()
                .unwrap()
                .contains("ROFS")
        );
        assert!(export.metric(r#"zeronas_nfs_requests_total{proc="MKDIR",status="rofs"}"#) >= 1.0);
    }
    // A client outside every rule cannot mount.
    let export = Export::start(&["--nfs-client", "10.0.0.0/8,rw"]);
    let (ok, _, err) = tool("nfs-ls", &[&export.url("/")]);
    assert!(!ok && err.contains("ACCES"), "{err}");
}

#[test]
fn auth_sys_identities_and_root_squashing() {
    let root_user = rustix::process::geteuid().is_root();
    let me = rustix::process::geteuid().as_raw();
    let cases: [(&[&str], &str, u32); 3] = [
        (&[], "", if root_user { 65534 } else { me }),
        (&[], "&uid=1000&gid=1000", if root_user { 1000 } else { me }),
        (&["--nfs-client", "127.0.0.0/8,rw,no_root_squash"], "", me),
    ];
    for (extra, identity, owner) in cases {
        let export = Export::start(extra);
        let (mut nfs, _) = Client::mount(&nfs_url(export.port(), "/", identity));
        nfs.ok("write /owned.txt 6869");
        let uid = std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata(export.path("owned.txt")).unwrap(),
        );
        assert_eq!(
            uid, owner,
            "{extra:?} {identity:?} (server runs as uid {me})"
        );
    }
}

#[test]
fn quota_is_enforced_and_reported() {
    let export = Export::start(&["--capacity", "1Mi"]);
    let (mut nfs, _) = Client::mount(&export.url("/"));
    let fs = nfs.ok("statvfs /");
    let total = fs["blocks"].as_u64().unwrap() * fs["frsize"].as_u64().unwrap();
    assert_eq!(total, 1 << 20, "df shows the volume's size: {fs}");
    let scratch = tempfile::tempdir().unwrap();
    let local = scratch.path().join("f");
    random_file(&local, 2 << 20);
    shared_dir(&export, "w");
    let (ok, _, err) = tool("nfs-cp", &[local.to_str().unwrap(), &export.url("/w/big")]);
    assert!(!ok, "a 2 MiB copy into a 1 MiB volume succeeded: {err}");
    assert!(export.metric(r#"zeronas_nfs_requests_total{proc="WRITE",status="nospc"}"#) >= 1.0);
    let used = std::fs::metadata(export.path("w/big"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(used <= 1 << 20, "wrote past the quota: {used}");
}

#[test]
fn handles_survive_a_restart_and_a_rename() {
    let export = Export::start(&[]);
    let port = export.port();
    shared_dir(&export, "d");
    let (mut nfs, _) = Client::mount(&export.url("/"));
    nfs.ok("write /d/f 7374696c6c2068657265");
    nfs.ok("open h /d/f");
    assert_eq!(nfs.ok("pread h 0 10")["data"], "7374696c6c2068657265");

    // Stop the server, rename the file behind its back, start a new one on the same port.
    let Export { child, root, .. } = export;
    common::stop_child(child);
    std::fs::rename(root.path().join("d/f"), root.path().join("renamed")).unwrap();
    let port_arg = format!("127.0.0.1:{port}");
    let export = Export::start_in(root, &["--nfs", &port_arg]);
    assert_eq!(export.port(), port);

    // The client still holds the old handle: it reconnects and reads through it.
    assert_eq!(nfs.ok("pread h 0 5")["data"], "7374696c6c");
    assert!(export.metric(r#"zeronas_nfs_requests_total{proc="READ",status="stale"}"#) == 0.0);
}

#[test]
fn setattr_changes_modes_times_and_sizes() {
    let export = Export::start(&["--nfs-client", "127.0.0.0/8,rw,no_root_squash"]);
    let (mut nfs, _) = Client::mount(&export.url("/"));
    nfs.ok("write /s.txt 0102030405");
    nfs.ok("chmod /s.txt 600");
    nfs.ok("truncate /s.txt 2");
    nfs.ok("chmod / 755");
    nfs.ok("utimes /s.txt 1000000000");
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(export.path("s.txt")).unwrap();
    assert_eq!((meta.permissions().mode() & 0o777, meta.len()), (0o600, 2));
    let mtime = std::os::unix::fs::MetadataExt::mtime(&meta);
    assert_eq!(mtime, 1_000_000_000, "client-set modification time");
    let root_mode = std::fs::metadata(export.root.path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(root_mode, 0o755, "the export's root takes SETATTR too");
    assert_eq!(nfs.ok("stat /s.txt")["size"], 2);
}

/// Squash identity, run as an unprivileged user (as its pod runs it): an owner keeps writing
/// its read-only file through a handle it opened before a restart (the server reopens it
/// with a brief owner override), and reading such a file never touches its mode or ctime.
#[test]
fn squash_owner_writes_its_read_only_file_after_a_restart() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to start the dataplane as another user");
        return;
    }
    let wrapper = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
    ];
    let root = tempfile::tempdir().unwrap();
    set_mode(root.path(), 0o777);
    let (child, _) = spawn_dataplane(&wrapper, root.path(), &["--identity", "squash"]);
    assert_eq!(child.1["identity"], "squash");
    let nfs_addr: SocketAddr = child.1["nfs"].as_str().unwrap().parse().unwrap();
    let port = nfs_addr.port();
    let (mut nfs, _) = Client::mount(&nfs_url(port, "/", ""));
    nfs.ok("write /ro 6869");
    nfs.ok("open h /ro");
    nfs.ok("chmod /ro 444");
    let file = root.path().join("ro");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&file).unwrap().uid(), 65534);

    common::stop_child(child);
    let port_arg = format!("127.0.0.1:{port}");
    let (_child, _) = spawn_dataplane(
        &wrapper,
        root.path(),
        &["--identity", "squash", "--nfs", &port_arg],
    );
    let before = std::fs::metadata(&file).unwrap();
    assert_eq!(nfs.ok("pread h 0 2")["data"], "6869");
    let after_read = std::fs::metadata(&file).unwrap();
    assert_eq!(
        (
            after_read.mode() & 0o7777,
            after_read.ctime(),
            after_read.ctime_nsec()
        ),
        (0o444, before.ctime(), before.ctime_nsec()),
        "a READ changed the file's mode or ctime"
    );
    nfs.ok("pwrite h 0 7878");
    assert_eq!(std::fs::read(&file).unwrap(), b"xx");
    assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o7777, 0o444);
}
