//! The SFTP export against real clients from Debian's packages: OpenSSH's `sftp` in batch
//! mode, `sshfs` mounting the share, and `ssh -s sftp` carrying hand-made (hostile) SFTP
//! packets over a real SSH channel. The dataplane binary runs as in production: posix
//! identities as root with each key's uid, and squash mode under `setpriv` as the
//! operator's non-root user 65532 with no capabilities.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{DataplaneChild, pattern, spawn_dataplane};

/// Keys made with ssh-keygen: the host key, and client keys with their authorized lines.
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    /// A host key and clients `writer` (uid 1000), `reader` (read-only) and `stranger`
    /// (not authorized).
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, kind) in [
            ("host", "ed25519"),
            ("writer", "ed25519"),
            ("reader", "ed25519"),
            ("stranger", "ed25519"),
            ("rsa", "rsa"),
        ] {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", kind, "-N", "", "-C", name, "-f"])
                .arg(dir.path().join(name))
                .output()
                .expect("ssh-keygen (openssh-client)");
            assert!(out.status.success(), "ssh-keygen: {out:?}");
        }
        let public = |name: &str| {
            std::fs::read_to_string(dir.path().join(format!("{name}.pub"))).expect("public key")
        };
        let authorized = format!(
            "# zeronas test keys\nuid=1000,gid=1000 {}uid=1001,gid=1001,read-only {}uid=1000,gid=1000 {}",
            public("writer"),
            public("reader"),
            public("rsa")
        );
        std::fs::write(dir.path().join("authorized_keys"), authorized).expect("write keys");
        // Readable by the unprivileged user of the squash-mode test (private keys stay 0600:
        // ssh refuses others).
        std::fs::set_permissions(
            dir.path().join("authorized_keys"),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        Keys { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The dataplane flags that turn SFTP on with these keys.
    fn flags(&self) -> Vec<String> {
        vec![
            "--sftp".into(),
            "127.0.0.1:0".into(),
            "--sftp-host-key".into(),
            self.path("host").display().to_string(),
            "--sftp-authorized-keys".into(),
            self.path("authorized_keys").display().to_string(),
            "--metrics".into(),
            "127.0.0.1:0".into(),
        ]
    }
}

/// Starts the dataplane over `root` with SFTP on; returns it and the SFTP port.
fn serve(root: &Path, keys: &Keys, wrapper: &[&str], extra: &[&str]) -> (DataplaneChild, u16) {
    let mut flags = keys.flags();
    flags.extend(extra.iter().map(|s| s.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (child, _) = spawn_dataplane(wrapper, root, &flags);
    let port = child.1["sftp"]
        .as_str()
        .expect("sftp address in the listening line")
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("sftp port");
    (child, port)
}

/// The OpenSSH options every client here uses: this key only, no agent, no prompts, and
/// the host key accepted on first use (each test makes a new one).
fn ssh_options(keys: &Keys, key: &str) -> Vec<String> {
    [
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=10",
        "-i",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([keys.path(key).display().to_string()])
    .collect()
}

/// Runs `sftp -b -` with `batch` as `key`, from the folder `local`.
fn sftp_batch(keys: &Keys, key: &str, port: u16, local: &Path, batch: &str) -> Output {
    let mut child = Command::new("timeout")
        .args(["60", "sftp", "-b", "-", "-P", &port.to_string()])
        .args(ssh_options(keys, key))
        .arg("tester@127.0.0.1")
        .current_dir(local)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sftp (openssh-client)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(batch.as_bytes())
        .expect("batch");
    child.wait_with_output().expect("sftp output")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Bytes of the regular files under `dir`.
fn walk_sizes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("list")
        .map(|e| {
            let e = e.expect("entry");
            let meta = std::fs::symlink_metadata(e.path()).expect("stat");
            if meta.is_dir() {
                walk_sizes(&e.path())
            } else if meta.is_file() {
                meta.len()
            } else {
                0
            }
        })
        .sum()
}

fn scrape(child: &DataplaneChild) -> String {
    let addr = child.1["metrics"].as_str().expect("metrics address");
    let mut s = std::net::TcpStream::connect(addr).expect("metrics");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: t\r\n\r\n")
        .expect("scrape");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("metrics body");
    body
}

#[test]
fn openssh_sftp_batch_moves_every_byte_as_the_keys_identity() {
    let keys = Keys::new();
    let share = tempfile::tempdir().expect("share");
    let local = tempfile::tempdir().expect("local");
    let (child, port) = serve(
        share.path(),
        &keys,
        &[],
        &["--capacity", "64Mi", "--root-mode", "0777"],
    );
    let sizes = [
        (0usize, "empty"),
        (1, "one"),
        ((1 << 20) + 7, "mib"),
        (5 << 20, "five"),
    ];
    for (len, name) in sizes {
        std::fs::write(local.path().join(name), pattern(len, len as u64)).expect("local file");
    }
    let batch = "put empty\nput one\nput mib\nput five\nmkdir dir\nrename five dir/five\n\
                 get dir/five five.back\nget mib mib.back\nget one one.back\nget empty empty.back\n\
                 symlink dir/five link\nls -l\ndf\nrm one\nrmdir nothing-here\n";
    // A failing command stops a batch unless prefixed with '-'.
    let batch = batch.replace("rmdir nothing-here", "-rmdir nothing-here");
    let out = sftp_batch(&keys, "writer", port, local.path(), &batch);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for (len, name) in sizes {
        assert_eq!(
            std::fs::read(local.path().join(format!("{name}.back"))).expect("downloaded"),
            pattern(len, len as u64),
            "{name} came back changed"
        );
    }
    assert_eq!(
        std::fs::read(share.path().join("dir/five")).expect("on disk"),
        pattern(5 << 20, 5 << 20)
    );
    assert!(!share.path().join("one").exists(), "rm removed it");
    assert_eq!(
        std::fs::read_link(share.path().join("link")).expect("symlink"),
        Path::new("dir/five")
    );
    // Created as the key's uid/gid (posix identities), not as root.
    let meta = std::fs::metadata(share.path().join("mib")).expect("stat");
    assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
    assert!(
        stdout.contains(" mib\n") && stdout.contains("drwx"),
        "ls -l: {stdout}"
    );
    // df shows the quota as the size: 64 MiB = 65536 KiB.
    let df = stdout
        .lines()
        .skip_while(|l| !l.starts_with("sftp> df"))
        .nth(2)
        .unwrap_or("");
    assert_eq!(df.split_whitespace().next(), Some("65536"), "df: {stdout}");

    // The read-only key reads and cannot write; the quota refuses what does not fit.
    std::fs::write(local.path().join("big"), pattern(70 << 20, 3)).expect("big");
    let used_before: u64 = walk_sizes(share.path());
    let out = sftp_batch(
        &keys,
        "reader",
        port,
        local.path(),
        "get mib ro.back\nput one\n",
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(local.path().join("ro.back").exists(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out)
    );
    let out = sftp_batch(&keys, "writer", port, local.path(), "put big\n");
    // OpenSSH's sftp prints the status code's text, not the server's message ("no space:
    // quota exceeded"); the message is checked over raw SFTP below.
    assert!(!out.status.success(), "{}", text(&out));
    let kept = std::fs::metadata(share.path().join("big"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(
        kept <= (64 << 20) - used_before,
        "the quota held: {kept} bytes kept, {used_before} used before"
    );

    // An RSA key logs in with rsa-sha2 signatures; SHA-1 `ssh-rsa` is not offered in
    // server-sig-algs, so OpenSSH does not even try it (the server would also refuse it).
    for (algorithm, works) in [("rsa-sha2-512", true), ("ssh-rsa", false)] {
        let out = Command::new("timeout")
            .args(["30", "sftp", "-b", "-", "-P", &port.to_string()])
            .args(ssh_options(&keys, "rsa"))
            .args(["-o", &format!("PubkeyAcceptedAlgorithms={algorithm}")])
            .arg("tester@127.0.0.1")
            .stdin(Stdio::null())
            .output()
            .expect("sftp");
        assert_eq!(out.status.success(), works, "{algorithm}: {}", text(&out));
    }

    // A key that is not in the file is refused.
    let out = sftp_batch(&keys, "stranger", port, local.path(), "ls\n");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out)
    );

    let metrics = scrape(&child);
    let moved = common::metric(
        &metrics,
        r#"zeronas_transfer_bytes_total{protocol="sftp",path="copy"}"#,
    );
    assert!(
        moved >= (2 * (5 << 20) + 2 * ((1 << 20) + 7)) as f64,
        "{moved}"
    );
    assert!(
        common::metric(
            &metrics,
            r#"zeronas_zero_copy_fallback_total{protocol="sftp",reason="encrypted_channel"}"#
        ) > 0.0
    );
    assert!(
        common::metric(
            &metrics,
            r#"zeronas_sftp_requests_total{op="write",status="ok"}"#
        ) > 0.0
    );
}

#[test]
fn large_transfers_do_not_stall_on_the_ssh_window() {
    // 64 READs of 255 KiB in flight are far more than SSH's channel window: replies wait for
    // window adjustments, which must still be read (a first version deadlocked at 29 MB).
    let keys = Keys::new();
    let share = tempfile::tempdir().expect("share");
    let local = tempfile::tempdir().expect("local");
    std::fs::set_permissions(share.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let data = pattern(128 << 20, 77);
    std::fs::write(share.path().join("huge"), &data).expect("huge");
    let (_child, port) = serve(share.path(), &keys, &[], &[]);
    let out = sftp_batch(
        &keys,
        "writer",
        port,
        local.path(),
        "get huge
put huge again
",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        std::fs::read(local.path().join("huge")).expect("got") == data,
        "download intact"
    );
    assert!(
        std::fs::read(share.path().join("again")).expect("put") == data,
        "upload intact"
    );
}

#[test]
fn sshfs_mounts_the_share_and_runs_a_file_workload() {
    let keys = Keys::new();
    let share = tempfile::tempdir().expect("share");
    let mnt = tempfile::tempdir().expect("mountpoint");
    let (child, port) = serve(
        share.path(),
        &keys,
        &[],
        &["--root-mode", "0777", "--capacity", "256Mi"],
    );
    let options = format!(
        "IdentityFile={},IdentitiesOnly=yes,BatchMode=yes,StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null",
        keys.path("writer").display()
    );
    let out = Command::new("timeout")
        .args([
            "30",
            "sshfs",
            "-p",
            &port.to_string(),
            "-o",
            &options,
            "tester@127.0.0.1:/",
        ])
        .arg(mnt.path())
        .output()
        .expect("sshfs");
    assert!(out.status.success(), "sshfs: {}", text(&out));
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("fusermount3").arg("-u").arg(self.0).status();
        }
    }
    let _unmount = Unmount(mnt.path());
    let m = mnt.path();
    // The kernel-client workload's shapes: a big sequential write, small files, renames,
    // links, modes, truncation, a folder of many entries, removal.
    let data = pattern(24 << 20, 11);
    std::fs::write(m.join("big.bin"), &data).expect("write through sshfs");
    assert_eq!(
        std::fs::read(share.path().join("big.bin")).expect("on disk"),
        data
    );
    assert_eq!(std::fs::read(m.join("big.bin")).expect("read back"), data);
    std::fs::create_dir(m.join("many")).expect("mkdir");
    for i in 0..300 {
        std::fs::write(m.join(format!("many/f{i:03}")), format!("file {i}")).expect("small file");
    }
    let mut names: Vec<String> = std::fs::read_dir(m.join("many"))
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 300, "READDIR pages");
    assert_eq!(names[299], "f299");
    std::fs::rename(m.join("many/f000"), m.join("renamed")).expect("rename");
    assert_eq!(
        std::fs::read_to_string(share.path().join("renamed")).expect("renamed"),
        "file 0"
    );
    std::os::unix::fs::symlink("renamed", m.join("link")).expect("symlink");
    assert_eq!(
        std::fs::read_link(share.path().join("link")).expect("link"),
        Path::new("renamed")
    );
    std::fs::hard_link(m.join("renamed"), m.join("hard")).expect("hardlink");
    assert_eq!(
        std::fs::metadata(share.path().join("renamed"))
            .expect("stat")
            .nlink(),
        2
    );
    std::fs::set_permissions(m.join("renamed"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    assert_eq!(
        std::fs::metadata(share.path().join("renamed"))
            .expect("stat")
            .mode()
            & 0o777,
        0o600
    );
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.join("big.bin"))
        .expect("open");
    f.set_len(1000).expect("truncate");
    f.sync_all().expect("fsync@openssh.com");
    drop(f);
    assert_eq!(
        std::fs::metadata(share.path().join("big.bin"))
            .expect("stat")
            .len(),
        1000
    );
    let out = Command::new("df")
        .args(["-k", "--output=size"])
        .arg(m)
        .output()
        .expect("df");
    assert!(out.status.success(), "statvfs: {}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .map(str::trim),
        Some("262144"),
        "df shows the 256 MiB quota: {}",
        text(&out)
    );
    std::fs::remove_dir_all(m.join("many")).expect("rm -r");
    assert!(!share.path().join("many").exists());
    assert_eq!(
        std::fs::metadata(share.path().join("hard"))
            .expect("stat")
            .uid(),
        1000
    );
    // sshfs used the OpenSSH extensions, not fallbacks.
    let metrics = scrape(&child);
    for op in ["fsync", "statvfs", "hardlink", "rename"] {
        let series = format!(r#"zeronas_sftp_requests_total{{op="{op}",status="ok"}}"#);
        assert!(common::metric(&metrics, &series) >= 1.0, "{series}");
    }
}

#[test]
fn squash_mode_as_the_operator_runs_it() {
    let keys = Keys::new();
    let share = tempfile::tempdir().expect("share");
    std::os::unix::fs::chown(share.path(), Some(65532), Some(65532)).expect("chown");
    // The host key belongs to the server's user, as a Secret mounted with its fsGroup.
    std::os::unix::fs::chown(keys.path("host"), Some(65532), Some(65532)).expect("chown");
    let local = tempfile::tempdir().expect("local");
    let (child, port) = serve(
        share.path(),
        &keys,
        &common::AS_OPERATOR_USER,
        &["--identity", "squash"],
    );
    assert_eq!(child.1["identity"], "squash");
    std::fs::write(local.path().join("f"), pattern(300_000, 9)).expect("local");
    let out = sftp_batch(
        &keys,
        "writer",
        port,
        local.path(),
        "put f\nmkdir d\nrename f d/f\nget d/f back\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(local.path().join("back")).expect("back"),
        pattern(300_000, 9)
    );
    // Every key acts as the process in squash mode.
    assert_eq!(
        std::fs::metadata(share.path().join("d/f"))
            .expect("stat")
            .uid(),
        65532
    );
}

/// An SFTP conversation over `ssh -s sftp`: real SSH, hand-made SFTP packets.
struct Raw {
    child: std::process::Child,
    next_id: u32,
}

impl Raw {
    fn open(keys: &Keys, port: u16) -> Self {
        let child = Command::new("ssh")
            .args(["-s", "-p", &port.to_string()])
            .args(ssh_options(keys, "writer"))
            .args(["tester@127.0.0.1", "sftp"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ssh");
        let mut raw = Raw { child, next_id: 1 };
        raw.send_raw(&packet(1, &3u32.to_be_bytes()));
        let (kind, _) = raw.receive().expect("VERSION");
        assert_eq!(kind, 2);
        raw
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(bytes).expect("send");
        stdin.flush().expect("flush");
    }

    /// Sends a request of `kind` with a fresh id and returns the reply (type, body after
    /// the id); the id is checked.
    fn request(&mut self, kind: u8, fields: &[u8]) -> (u8, Vec<u8>) {
        let id = self.next_id;
        self.next_id += 1;
        let mut body = id.to_be_bytes().to_vec();
        body.extend_from_slice(fields);
        self.send_raw(&packet(kind, &body));
        let (reply, rest) = self.receive().expect("a reply");
        assert_eq!(&rest[..4], &id.to_be_bytes(), "reply to request {id}");
        (reply, rest[4..].to_vec())
    }

    /// Reads one packet (None: the channel ended).
    fn receive(&mut self) -> Option<(u8, Vec<u8>)> {
        let stdout = self.child.stdout.as_mut().expect("stdout");
        let mut len = [0u8; 4];
        stdout.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        stdout.read_exact(&mut body).ok()?;
        Some((body[0], body[1..].to_vec()))
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn packet(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut p = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    p.push(kind);
    p.extend_from_slice(body);
    p
}

fn string(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

/// The status code of a STATUS reply body.
fn status_of(reply: &(u8, Vec<u8>)) -> u32 {
    assert_eq!(reply.0, 101, "a STATUS reply: {reply:?}");
    u32::from_be_bytes([reply.1[0], reply.1[1], reply.1[2], reply.1[3]])
}

#[test]
fn hostile_input_gets_clean_errors_and_never_leaves_the_share() {
    let keys = Keys::new();
    let outside = tempfile::tempdir().expect("outside");
    std::fs::write(outside.path().join("secret"), b"outside the share").expect("secret");
    let share = tempfile::tempdir().expect("share");
    // The key's uid 1000 must be able to enter the share (tempdir makes it 0700).
    std::fs::set_permissions(share.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::fs::write(share.path().join("inside"), b"inside").expect("inside");
    std::os::unix::fs::symlink(outside.path(), share.path().join("escape")).expect("symlink");
    std::os::unix::fs::symlink(
        outside.path().join("secret"),
        share.path().join("secret-link"),
    )
    .expect("symlink");
    let (child, port) = serve(
        share.path(),
        &keys,
        &[],
        &[
            "--sftp-max-handles",
            "16",
            "--sftp-max-connections",
            "4",
            "--capacity",
            "2Mi",
        ],
    );
    let mut raw = Raw::open(&keys, port);
    const READ: u32 = 1;
    // Paths that climb out stay in the share: /../../inside is /inside.
    let open = |path: &[u8]| {
        let mut f = string(path);
        f.extend_from_slice(&READ.to_be_bytes());
        f.extend_from_slice(&0u32.to_be_bytes());
        f
    };
    let reply = raw.request(3, &open(b"/../../../inside"));
    assert_eq!(reply.0, 102, "a HANDLE for /inside: {reply:?}");
    let reply = raw.request(3, &open(b"../../../../../../etc/passwd"));
    assert_eq!(status_of(&reply), 2, "no such file inside the share");
    // Symlinks out of the share are never followed.
    for path in [&b"escape/secret"[..], b"secret-link"] {
        let reply = raw.request(3, &open(path));
        assert_eq!(status_of(&reply), 3, "{path:?}: {reply:?}");
    }
    let reply = raw.request(11, &string(b"escape"));
    assert_eq!(status_of(&reply), 3, "opendir through a symlink");
    let reply = raw.request(17, &string(b"secret-link"));
    assert_eq!(status_of(&reply), 3, "stat follows no symlink");
    // Changes through the links never reach the file outside.
    let mut chmod = string(b"secret-link");
    chmod.extend_from_slice(&4u32.to_be_bytes());
    chmod.extend_from_slice(&0o777u32.to_be_bytes());
    assert_eq!(
        status_of(&raw.request(9, &chmod)),
        3,
        "setstat on a symlink"
    );
    let mut truncate = string(b"secret-link");
    truncate.extend_from_slice(&1u32.to_be_bytes());
    truncate.extend_from_slice(&0u64.to_be_bytes());
    assert_eq!(
        status_of(&raw.request(9, &truncate)),
        4,
        "truncate through a symlink"
    );
    assert_eq!(
        status_of(&raw.request(13, &string(b"escape/secret"))),
        3,
        "remove through a symlink"
    );
    let mut rename = string(b"escape/secret");
    rename.extend_from_slice(&string(b"stolen"));
    assert_eq!(
        status_of(&raw.request(18, &rename)),
        3,
        "rename through a symlink"
    );
    let mut link = string(b"hardlink@openssh.com");
    link.extend_from_slice(&string(b"escape/secret"));
    link.extend_from_slice(&string(b"stolen"));
    assert_eq!(
        status_of(&raw.request(200, &link)),
        3,
        "hardlink through a symlink"
    );
    let mut root_chmod = string(b"/");
    root_chmod.extend_from_slice(&4u32.to_be_bytes());
    root_chmod.extend_from_slice(&0u32.to_be_bytes());
    assert_eq!(
        status_of(&raw.request(9, &root_chmod)),
        3,
        "the root's mode is the server's"
    );
    // Unknown handles, a truncated request, trailing bytes, an unknown type and extension.
    let mut read = string(b"\xff\xff\xff\xff");
    read.extend_from_slice(&0u64.to_be_bytes());
    read.extend_from_slice(&10u32.to_be_bytes());
    assert_eq!(status_of(&raw.request(5, &read)), 4);
    assert_eq!(status_of(&raw.request(4, &string(b"nope-nope"))), 4);
    assert_eq!(status_of(&raw.request(5, &[0, 0, 0])), 5, "truncated READ");
    let mut trailing = string(b"inside");
    trailing.push(0);
    assert_eq!(status_of(&raw.request(17, &trailing)), 5, "trailing byte");
    assert_eq!(status_of(&raw.request(99, b"")), 8, "unknown type");
    assert_eq!(
        status_of(&raw.request(200, &string(b"copy-data"))),
        8,
        "unknown extension"
    );
    let mut huge_string = u32::MAX.to_be_bytes().to_vec();
    huge_string.extend_from_slice(b"x");
    assert_eq!(
        status_of(&raw.request(17, &huge_string)),
        5,
        "a 4 GiB string length"
    );
    // Handles are capped per session (one is open already).
    let mut opened = 1;
    let last = loop {
        let reply = raw.request(3, &open(b"inside"));
        if reply.0 != 102 {
            break reply;
        }
        opened += 1;
        assert!(opened <= 16, "more handles than the cap");
    };
    assert_eq!(opened, 16);
    assert_eq!(status_of(&last), 4);
    assert!(String::from_utf8_lossy(&last.1).contains("too many open handles"));
    // A packet length no SFTP server reads ends that channel; new sessions go on.
    raw.send_raw(&[0x7f, 0xff, 0xff, 0xff, 5]);
    assert!(raw.receive().is_none(), "channel closed");
    drop(raw);
    let mut raw = Raw::open(&keys, port);
    assert_eq!(
        raw.request(17, &string(b"inside")).0,
        105,
        "a new session works"
    );
    drop(raw);
    assert_eq!(
        std::fs::read(outside.path().join("secret")).expect("secret"),
        b"outside the share"
    );
    let mode = std::fs::metadata(outside.path().join("secret"))
        .expect("stat")
        .mode();
    assert_eq!(mode & 0o777, 0o644, "the file outside kept its mode");
    assert!(!share.path().join("stolen").exists());
    assert_eq!(
        std::fs::metadata(share.path()).expect("root").mode() & 0o777,
        0o777
    );

    // Writes past the quota: the server's message says why.
    let mut create = string(b"quota-test");
    create.extend_from_slice(&(0x02u32 | 0x08).to_be_bytes());
    create.extend_from_slice(&0u32.to_be_bytes());
    let mut raw = Raw::open(&keys, port);
    let (kind, handle) = raw.request(3, &create);
    assert_eq!(kind, 102);
    let mut write = handle.clone();
    write.extend_from_slice(&((2u64 << 20) - 10).to_be_bytes());
    write.extend_from_slice(&string(b"0123456789abcdef"));
    let reply = raw.request(6, &write);
    assert_eq!(status_of(&reply), 4);
    assert!(
        String::from_utf8_lossy(&reply.1).contains("no space: quota exceeded"),
        "{reply:?}"
    );
    drop(raw);

    // No exec, no shell, no port forwarding: each refused after a successful login.
    let ssh = |args: &[&str]| {
        Command::new("timeout")
            .args(["30", "ssh", "-p", &port.to_string()])
            .args(ssh_options(&keys, "writer"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("ssh")
    };
    let out = ssh(&["tester@127.0.0.1", "cat /etc/passwd"]);
    assert!(
        !out.status.success() && out.stdout.is_empty(),
        "exec: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exec request failed"),
        "{}",
        text(&out)
    );
    let out = ssh(&["-T", "tester@127.0.0.1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("shell request failed"),
        "{}",
        text(&out)
    );
    let target = format!("127.0.0.1:{port}");
    let out = ssh(&["-W", &target, "tester@127.0.0.1"]);
    assert!(
        !out.status.success() && out.stdout.is_empty(),
        "forwarding: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("forwarding failed"),
        "{}",
        text(&out)
    );

    // Pre-login floods: connections beyond the cap are closed at once and counted.
    // (The sessions above end once their clients have gone.)
    std::thread::sleep(Duration::from_secs(1));
    let held: Vec<std::net::TcpStream> = (0..4)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = extra.read(&mut buf).unwrap_or(0);
    assert_eq!(
        n,
        0,
        "the fifth connection gets no SSH banner: {:?}",
        &buf[..n]
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    drop(held);
    let metrics = scrape(&child);
    assert_eq!(
        common::metric(
            &metrics,
            r#"zeronas_connections_refused_total{protocol="sftp"}"#
        ),
        1.0
    );
    assert!(
        common::metric(
            &metrics,
            r#"zeronas_sftp_requests_total{op="malformed",status="bad_message"}"#
        ) >= 2.0
    );
}
