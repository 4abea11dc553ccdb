//! Structure-aware fuzzing of the NFS port. Every NFSv3 procedure (0..=21), every MOUNT v3
//! procedure (0..=5) and PORTMAP GETPORT get argument bodies built from their grammar
//! (RFC 1813, RFC 1833): file handles the server really issued (now and then a mutated,
//! truncated, extended or foreign one), names, offsets, counts, `sattr3`s, `createhow3`s and
//! `stable_how`s from hostile edge values, opaque lengths that are honest or lie. Some bodies
//! are then mutated (bits flipped, cut short, a word overwritten, junk appended). The calls
//! go over one connection as the real dataplane binary serves it, some pipelined, some in two
//! record fragments, with AUTH_SYS as uid 0, 1000 or 65534; every reply is decoded against
//! the procedure's result grammar.
//!
//! What must hold:
//! - every call gets one well-formed accepted reply carrying its xid (in any order: the
//!   server may answer a connection's requests concurrently), within [`REPLY_TIMEOUT`];
//! - arguments that follow the grammar never get GARBAGE_ARGS, and a few answers are
//!   checked for sense (a READ never returns more than asked, WRITE commits at least what
//!   was asked, one write verifier, GETPORT's port, MNT of `/`);
//! - the connection is never closed: every record has a valid RPC header, so none is
//!   undecodable (closes are counted, reconnected, and fail the test at the end);
//! - nothing outside the share is touched: a canary file next to it keeps its content, mode,
//!   owner and times, no reply carries the inode of the canary or of the folder around the
//!   share, and that folder holds nothing new; no name with the reserved temp prefix is ever
//!   created;
//! - the server still answers NULL and GETATTR of the root on a fresh connection;
//! - in runs of [`COVERAGE_CASES`] or more, each NFS procedure got at least one answer that
//!   is neither GARBAGE_ARGS nor BADHANDLE (the fuzzer reached the procedure bodies), and
//!   the answers in [`EXPECTED_ANSWERS`] (a WRITE that succeeded, a LOOKUP that found
//!   nothing...) were all seen.
//!
//! A run is fixed by `ZN_FUZZ_SEED` (default [`DEFAULT_SEED`]) and `ZN_FUZZ_CASES` (default
//! [`DEFAULT_CASES`]); both are printed. Handles and cookies learned from replies feed later
//! cases, so a server that answers differently makes a different run from there on; a
//! failure prints the exact bytes of the calls involved, which reproduce it on their own.
//! `cargo test --test nfs_fuzz -- --nocapture` shows the summary of a passing run.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zeronas_dataplane::share::TEMP_PREFIX;

const NFS: u32 = 100_003;
const MOUNT: u32 = 100_005;
const PORTMAP: u32 = 100_000;
/// PORTMAP's GETPORT procedure.
const GETPORT: u32 = 3;

/// Seed of a run unless `ZN_FUZZ_SEED` says otherwise (decimal or `0x` hex).
const DEFAULT_SEED: u64 = 0x5a4e_f022_c0de_0003;
/// Calls of a run unless `ZN_FUZZ_CASES` says otherwise (3 s in a debug build on 2 cores;
/// the server `fsync`s folder changes, so a slower disk takes longer).
const DEFAULT_CASES: u64 = 8000;
/// Runs of at least this many calls must reach every NFS procedure's body and see every
/// answer in [`EXPECTED_ANSWERS`].
const COVERAGE_CASES: usize = 3000;
/// Longest wait for a reply: past it the server is taken to hang.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Cases between two restorations of the share's fixtures (see [`Playground::restore`]).
const RESTORE_EVERY: usize = 200;
/// Most calls pipelined in a usual batch.
const MAX_BATCH: usize = 8;
/// Calls in a deep batch (one in [`DEEP_BATCH_ONE_IN`]): more than the server takes in
/// flight per connection (64 by default), so its back-pressure is exercised too.
const DEEP_BATCH: std::ops::RangeInclusive<usize> = 65..=100;
const DEEP_BATCH_ONE_IN: usize = 250;
/// Most handles (and READDIR cookies) learned from replies that are kept for later cases.
const LEARNED_MAX: usize = 32;
/// Largest reply record accepted (a 1 MiB READ with its headers).
const MAX_REPLY: usize = (1 << 20) + 64 * 1024;
/// Most bytes of a call or reply shown in a failure.
const HEX_MAX: usize = 2048;
/// `NFS3_FHSIZE`.
const FHSIZE: usize = 64;
/// The longest name and symlink target the server takes (longer: GARBAGE_ARGS is fine).
const SERVER_MAX_PATH: usize = 4096;
/// `MNTPATHLEN` and `MNTNAMLEN` (RFC 1813 appendix I).
const MNTPATHLEN: usize = 1024;
const MNTNAMLEN: usize = 255;
/// Largest READ (the server's `rtmax`).
const MAX_IO: usize = 1 << 20;
/// A `nfstime3`'s nanoseconds are below this.
const NANOS: u32 = 1_000_000_000;

/// NFS procedure names by number, as the server labels its metrics.
use zeronas_dataplane::nfs::nfs3::PROCEDURES as NFS_PROCEDURES;
const MOUNT_PROCEDURES: [&str; 6] = ["NULL", "MNT", "DUMP", "UMNT", "UMNTALL", "EXPORT"];

/// Answers that show the fuzzer got past the handle (see the coverage check).
const NOT_REACHED: [&str; 2] = ["GARBAGE_ARGS", "BADHANDLE"];
/// Answers a run of [`COVERAGE_CASES`] or more must have seen: proof that bodies really ran.
const EXPECTED_ANSWERS: [(u32, u32, &str); 8] = [
    (NFS, 3, "NOENT"),
    (NFS, 3, "OK"),
    (NFS, 6, "OK"),
    (NFS, 7, "OK"),
    (NFS, 8, "OK"),
    (NFS, 12, "OK"),
    (NFS, 17, "OK"),
    (MOUNT, 1, "OK"),
];
/// Answers that are legal but worth a look: examples go into the summary.
const NOTABLE: [&str; 4] = ["SERVERFAULT", "IO", "SYSTEM_ERR", "JUKEBOX"];

/// The share's fixtures: a file, a folder with a file, symlinks to the canary and to the
/// folder around the share, and a FIFO.
const FILE: &str = "file.txt";
const FOLDER: &str = "folder";
const INNER: &str = "inner.txt";
const ESCAPE: &str = "escape";
const ESCAPE_DIR: &str = "escape-dir";
const PIPE: &str = "pipe";
const CANARY: &str = "canary";
const SHARE: &str = "share";
const CANARY_CONTENT: &[u8] = b"outside the share: never changed\n";

/// Names that make things: created, removed and renamed over and over.
const SCRATCH_NAMES: [&str; 7] = ["n0", "n1", "n2", "n3", "d0", "d1", "l0"];
/// Names of what the share holds, and a few more ordinary ones.
const KNOWN_NAMES: [&str; 10] = [
    FILE,
    FOLDER,
    INNER,
    ESCAPE,
    ESCAPE_DIR,
    PIPE,
    "missing",
    "ü.txt",
    "with space",
    ".hidden",
];
/// Words a mutation writes over the body: lengths and discriminants at their edges.
const EDGE_WORDS: [u32; 8] = [0, 1, 2, 3, 64, 0x7fff_ffff, 0x8000_0000, u32::MAX];

#[test]
fn structured_calls_reach_every_procedure_and_never_break_the_server() {
    let seed = env_number("ZN_FUZZ_SEED", DEFAULT_SEED);
    let budget = env_number("ZN_FUZZ_CASES", DEFAULT_CASES) as usize;
    println!("nfs_fuzz: seed {seed:#x} (ZN_FUZZ_SEED), {budget} cases (ZN_FUZZ_CASES)");
    let started = Instant::now();
    let mut run = Run::start(seed);
    run.refresh_handles();
    let mut index = 0;
    let mut next_restore = RESTORE_EVERY;
    while index < budget {
        if index >= next_restore {
            run.playground.restore();
            run.refresh_handles();
            next_restore += RESTORE_EVERY;
        }
        let size = run.fuzzer.batch_size();
        let cases: Vec<Case> = (index..(index + size).min(budget))
            .map(|i| run.fuzzer.next_case(i))
            .collect();
        index += cases.len();
        run.run_batch(&cases);
    }
    run.finish(budget, started);
}

/// A number from the environment (decimal or `0x` hex), or `default`.
fn env_number(name: &str, default: u64) -> u64 {
    let Ok(text) = std::env::var(name) else {
        return default;
    };
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.unwrap_or_else(|e| panic!("{name}={text:?} is not a number: {e}"))
}

/// SplitMix64: a tiny deterministic generator, so that a seed reproduces a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn u32(&mut self) -> u32 {
        self.next() as u32
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// One of `edges`, or (as often as each of them) a value from `random`.
    fn edge_or<T: Copy>(&mut self, edges: &[T], random: impl FnOnce(&mut Rng) -> T) -> T {
        match self.below(edges.len() + 1) {
            i if i == edges.len() => random(self),
            i => edges[i],
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// ---------------------------------------------------------------------------------------
// The server and its share
// ---------------------------------------------------------------------------------------

/// The dataplane binary, started the way production runs it, serving the share. Its log
/// (stderr) is drained into a ring, so it never blocks on a full pipe and its last lines
/// explain a crash. Stopped by its PID when dropped.
struct Dataplane {
    child: Child,
    nfs: SocketAddr,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Dataplane {
    /// Log lines kept for a post-mortem.
    const LOG_LINES: usize = 40;

    fn start(share: &Path) -> Dataplane {
        let mut child = Command::new(env!("CARGO_BIN_EXE_zeronas-dataplane"))
            .arg("--root")
            .arg(share)
            .args(["--http", "127.0.0.1:0", "--nfs", "127.0.0.1:0"])
            // Callers keep their identity, root included: the most a client can do.
            .args(["--nfs-client", "127.0.0.0/8,rw,no_root_squash"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the dataplane");
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let stderr = child.stderr.take().expect("stderr");
        let ring = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut ring = ring.lock().unwrap_or_else(|e| e.into_inner());
                if ring.len() == Self::LOG_LINES {
                    ring.pop_front();
                }
                ring.push_back(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the listening line");
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let listening: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("no listening line ({e}): {line:?}"));
        let nfs = listening["nfs"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no NFS address in {line:?}"));
        Dataplane { child, nfs, log }
    }

    /// Whether the process still runs, and its last log lines.
    fn postmortem(&mut self) -> String {
        let state = match self.child.try_wait() {
            Ok(None) => "the server still runs".to_owned(),
            Ok(Some(status)) => format!("THE SERVER EXITED: {status}"),
            Err(e) => format!("server state unknown: {e}"),
        };
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let lines: Vec<&str> = log.iter().map(String::as_str).collect();
        format!("{state}; its last log lines:\n  {}", lines.join("\n  "))
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let pid = rustix::process::Pid::from_child(&self.child);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A file's state, compared before and after the run: any write, chmod, chown, truncate
/// or time change moves its ctime too. (Not the atime: reading the content moves it.)
#[derive(Debug, PartialEq, Eq)]
struct FileState {
    content: Vec<u8>,
    mode: u32,
    owner: (u32, u32),
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileState {
    fn of(path: &Path) -> FileState {
        let meta = std::fs::symlink_metadata(path).expect("canary metadata");
        FileState {
            content: std::fs::read(path).expect("canary content"),
            mode: meta.mode(),
            owner: (meta.uid(), meta.gid()),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// The folders of a run: `outer/` holds the share and the canary, and never anything else.
struct Playground {
    outer: tempfile::TempDir,
    share: PathBuf,
    canary: PathBuf,
    canary_before: FileState,
}

impl Playground {
    fn new() -> Playground {
        let outer = tempfile::tempdir().expect("temp folder");
        let share = outer.path().join(SHARE);
        let canary = outer.path().join(CANARY);
        std::fs::create_dir(&share).expect("share folder");
        std::fs::write(&canary, CANARY_CONTENT).expect("canary");
        std::fs::set_permissions(&canary, std::fs::Permissions::from_mode(0o640))
            .expect("canary mode");
        let canary_before = FileState::of(&canary);
        let playground = Playground {
            outer,
            share,
            canary,
            canary_before,
        };
        playground.restore();
        playground
    }

    /// Puts the fixtures back as they started (what the fuzzer removed, renamed, retyped),
    /// open to every caller (what it chmod-ed or chown-ed away), so later cases still reach
    /// procedure bodies. Whatever else the fuzzer made stays.
    fn restore(&self) {
        let folder = self.share.join(FOLDER);
        open_up(&self.share, 0o777);
        ensure_file(&self.share.join(FILE), b"the file: some bytes to READ\n");
        ensure_dir(&folder);
        ensure_file(&folder.join(INNER), b"inner\n");
        ensure_symlink(&self.share.join(ESCAPE), &self.canary);
        ensure_symlink(&self.share.join(ESCAPE_DIR), self.outer.path());
        ensure_fifo(&self.share.join(PIPE));
    }

    /// What the folder around the share holds.
    fn outer_names(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.outer.path())
            .expect("list the outer folder")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Every path in the share (symlinks not followed), after opening every folder up.
    fn all_paths(&self) -> Vec<PathBuf> {
        open_up_tree(&self.share)
    }
}

/// Gives `path` (not a symlink's target) `mode` and this process's ownership, as far as
/// this process may.
fn open_up(path: &Path, mode: u32) {
    let owner = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    let _ = std::os::unix::fs::lchown(path, Some(owner.0), Some(owner.1));
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if !is_link {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
    }
}

/// Removes whatever is at `path` (a folder with its contents; a symlink, not its target).
fn remove_any(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            // Folders the fuzzer closed (mode 000) are opened first.
            open_up_tree(path);
            let _ = std::fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// Opens up `dir` and every folder under it (symlinks not followed); returns every path
/// under it.
fn open_up_tree(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(folder) = pending.pop() {
        open_up(&folder, 0o777);
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(entry.path());
            }
            found.push(entry.path());
        }
    }
    found
}

fn ensure_file(path: &Path, content: &[u8]) {
    if !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
        remove_any(path);
        std::fs::write(path, content).expect("restore a fixture file");
    }
    open_up(path, 0o666);
}

fn ensure_dir(path: &Path) {
    if !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        remove_any(path);
        std::fs::create_dir(path).expect("restore the fixture folder");
    }
    open_up(path, 0o777);
}

fn ensure_symlink(path: &Path, target: &Path) {
    if std::fs::read_link(path).is_ok_and(|t| t == target) {
        return;
    }
    remove_any(path);
    std::os::unix::fs::symlink(target, path).expect("restore a fixture symlink");
    open_up(path, 0o777);
}

fn ensure_fifo(path: &Path) {
    let is_fifo = std::fs::symlink_metadata(path)
        .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()));
    if !is_fifo {
        remove_any(path);
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            path,
            rustix::fs::Mode::from_raw_mode(0o666),
        )
        .expect("restore the fixture FIFO");
    }
    open_up(path, 0o666);
}

// ---------------------------------------------------------------------------------------
// Building calls
// ---------------------------------------------------------------------------------------

/// An XDR body being built, and whether it breaks the grammar on purpose (a lying length, a
/// discriminant outside its enumeration, an item past the server's limits): then
/// GARBAGE_ARGS is a fine answer.
#[derive(Default)]
struct Args {
    bytes: Vec<u8>,
    malformed: bool,
}

impl Args {
    fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }

    fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Fixed-length opaque data, padded to 4 bytes.
    fn fixed(&mut self, data: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(data);
        self.bytes
            .resize(self.bytes.len() + (4 - data.len() % 4) % 4, 0);
        self
    }

    fn opaque(&mut self, data: &[u8]) -> &mut Self {
        self.u32(data.len() as u32).fixed(data)
    }

    /// Opaque data behind a length that lies (unless `claimed` is the truth).
    fn opaque_claiming(&mut self, data: &[u8], claimed: u32) -> &mut Self {
        self.malformed |= claimed as usize != data.len();
        self.u32(claimed).fixed(data)
    }
}

/// What a file handle names, as far as the fuzzer knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Link,
    Other,
}

impl Kind {
    /// The kind of an `ftype3`.
    fn of(ftype: u32) -> Kind {
        match ftype {
            1 => Kind::File,
            2 => Kind::Dir,
            5 => Kind::Link,
            _ => Kind::Other,
        }
    }
}

/// A handle the server issued.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Handle {
    bytes: Vec<u8>,
    kind: Kind,
}

/// Handles and READDIR cookies to build calls with: the fixtures' (looked up again after
/// each restoration), and a ring of those learned from replies.
#[derive(Default)]
struct Pool {
    fixtures: Vec<Handle>,
    learned: Vec<Handle>,
    next_learned: usize,
    cookies: Vec<u64>,
    next_cookie: usize,
}

impl Pool {
    fn learn(&mut self, handle: Handle) {
        if self.fixtures.contains(&handle) || self.learned.contains(&handle) {
            return;
        }
        put_in_ring(&mut self.learned, &mut self.next_learned, handle);
    }

    fn learn_cookie(&mut self, cookie: u64) {
        if !self.cookies.contains(&cookie) {
            put_in_ring(&mut self.cookies, &mut self.next_cookie, cookie);
        }
    }

    fn all(&self) -> impl Iterator<Item = &Handle> {
        self.fixtures.iter().chain(&self.learned)
    }
}

/// Adds `item` to a ring of [`LEARNED_MAX`] items, over the oldest once full.
fn put_in_ring<T>(ring: &mut Vec<T>, next: &mut usize, item: T) {
    if ring.len() < LEARNED_MAX {
        ring.push(item);
    } else {
        ring[*next] = item;
        *next = (*next + 1) % LEARNED_MAX;
    }
}

/// A program and procedure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Target {
    program: u32,
    procedure: u32,
}

impl Target {
    fn version(self) -> u32 {
        if self.program == PORTMAP { 2 } else { 3 }
    }

    fn name(self) -> String {
        let procedure = self.procedure as usize;
        match self.program {
            NFS => format!("NFS.{}", NFS_PROCEDURES[procedure]),
            MOUNT => format!("MOUNT.{}", MOUNT_PROCEDURES[procedure]),
            _ => "PORTMAP.GETPORT".to_owned(),
        }
    }
}

/// An AUTH_SYS credential.
struct Cred {
    machine: Vec<u8>,
    uid: u32,
    gid: u32,
    gids: Vec<u32>,
}

/// What a correct answer to a case looks like, beyond its grammar.
#[derive(Clone, Copy, Debug)]
enum Expect {
    Anything,
    /// A READ of at most `count` bytes.
    Read {
        count: u32,
    },
    /// A WRITE of `sent` bytes asking for `stable`.
    Write {
        stable: u32,
        sent: usize,
    },
    /// GETPORT's answer.
    Port(u32),
    /// MNT of `/`, which every local client may mount.
    MountRoot,
}

/// One generated call.
struct Case {
    /// Its place in the run (`None`: a call outside the fuzzing).
    index: Option<usize>,
    xid: u32,
    target: Target,
    uid: u32,
    /// The whole record, record marks included.
    record: Vec<u8>,
    /// Whether the record went in two fragments.
    split: bool,
    malformed: bool,
    mutation: Option<&'static str>,
    expect: Expect,
}

impl Case {
    /// Whether the arguments follow the grammar (then GARBAGE_ARGS is wrong).
    fn well_formed(&self) -> bool {
        !self.malformed && self.mutation.is_none()
    }

    fn describe(&self) -> String {
        let which = self
            .index
            .map_or("setup call".to_owned(), |i| format!("case #{i}"));
        format!(
            "{which} {} xid {:#x} uid {} malformed {} mutation {:?}\n  record: {}",
            self.target.name(),
            self.xid,
            self.uid,
            self.malformed,
            self.mutation,
            hex(&self.record)
        )
    }
}

/// Bytes in hex, the first [`HEX_MAX`] of them.
fn hex(bytes: &[u8]) -> String {
    let shown: String = bytes
        .iter()
        .take(HEX_MAX)
        .map(|b| format!("{b:02x}"))
        .collect();
    if bytes.len() > HEX_MAX {
        format!("{shown}... ({} bytes in all)", bytes.len())
    } else {
        shown
    }
}

/// Builds cases from a seed and what replies taught it.
struct Fuzzer {
    rng: Rng,
    pool: Pool,
    next_xid: u32,
    /// The NFS port (GETPORT's right answer).
    port: u16,
    canary: Vec<u8>,
    outer: Vec<u8>,
}

impl Fuzzer {
    fn new(seed: u64, port: u16, playground: &Playground) -> Fuzzer {
        let mut rng = Rng(seed);
        let next_xid = rng.u32();
        Fuzzer {
            rng,
            pool: Pool::default(),
            next_xid,
            port,
            canary: playground.canary.as_os_str().as_bytes().to_vec(),
            outer: playground.outer.path().as_os_str().as_bytes().to_vec(),
        }
    }

    /// How many calls the next batch pipelines: mostly one, often a few, rarely very many.
    fn batch_size(&mut self) -> usize {
        if self.rng.one_in(DEEP_BATCH_ONE_IN) {
            let deep = DEEP_BATCH.end() - DEEP_BATCH.start() + 1;
            DEEP_BATCH.start() + self.rng.below(deep)
        } else if self.rng.percent(30) {
            2 + self.rng.below(MAX_BATCH - 1)
        } else {
            1
        }
    }

    /// The next case of the run.
    fn next_case(&mut self, index: usize) -> Case {
        let target = self.target();
        let (mut args, expect) = match target.program {
            NFS => self.nfs_args(target.procedure),
            MOUNT => self.mount_args(target.procedure),
            _ => self.getport_args(),
        };
        let mutation = self.mutate(&mut args.bytes);
        let cred = self.cred();
        self.case(Some(index), target, &cred, args, mutation, expect)
    }

    /// A call made outside the fuzzing (handles, the final checks): root, well-formed.
    fn plain_case(&mut self, target: Target, args: Args) -> Case {
        let cred = Cred {
            machine: b"fuzz-setup".to_vec(),
            uid: 0,
            gid: 0,
            gids: Vec::new(),
        };
        self.case(None, target, &cred, args, None, Expect::Anything)
    }

    fn case(
        &mut self,
        index: Option<usize>,
        target: Target,
        cred: &Cred,
        args: Args,
        mutation: Option<&'static str>,
        expect: Expect,
    ) -> Case {
        // Unique over the run: the server's duplicate request cache keys on the xid, not
        // on the connection.
        self.next_xid = self.next_xid.wrapping_add(1);
        let xid = self.next_xid;
        let message = call_message(xid, target, cred, &args.bytes);
        let (record, split) = self.record(&message);
        Case {
            index,
            xid,
            target,
            uid: cred.uid,
            record,
            split,
            malformed: args.malformed,
            mutation,
            expect,
        }
    }

    fn target(&mut self) -> Target {
        match self.rng.below(100) {
            0..=84 => Target {
                program: NFS,
                procedure: self.rng.below(NFS_PROCEDURES.len()) as u32,
            },
            85..=96 => Target {
                program: MOUNT,
                procedure: self.rng.below(MOUNT_PROCEDURES.len()) as u32,
            },
            _ => Target {
                program: PORTMAP,
                procedure: GETPORT,
            },
        }
    }

    /// uid and gid among root, a user and nobody; now and then a machine name that is empty,
    /// as long as allowed, or not UTF-8.
    fn cred(&mut self) -> Cred {
        const IDS: [u32; 3] = [0, 1000, 65534];
        let machine = match self.rng.below(12) {
            0 => Vec::new(),
            1 => vec![0xff; MNTNAMLEN],
            2 => b"h\xe9te".to_vec(),
            _ => b"fuzz".to_vec(),
        };
        let groups = self.rng.below(4);
        Cred {
            machine,
            uid: self.rng.pick(&IDS),
            gid: self.rng.pick(&IDS),
            gids: (0..groups).map(|_| self.rng.pick(&IDS)).collect(),
        }
    }

    /// The record of a message: one fragment, or now and then two (then `true`).
    fn record(&mut self, message: &[u8]) -> (Vec<u8>, bool) {
        if message.len() > 8 && self.rng.one_in(10) {
            let cut = 1 + self.rng.below(message.len() - 1);
            let two = [
                fragment(false, &message[..cut]),
                fragment(true, &message[cut..]),
            ];
            (two.concat(), true)
        } else {
            (fragment(true, message), false)
        }
    }

    /// Damages an encoded body, one time in five.
    fn mutate(&mut self, body: &mut Vec<u8>) -> Option<&'static str> {
        if !self.rng.percent(20) {
            return None;
        }
        Some(match self.rng.below(4) {
            0 if !body.is_empty() => {
                for _ in 0..1 + self.rng.below(4) {
                    let at = self.rng.below(body.len());
                    body[at] ^= 1 << self.rng.below(8);
                }
                "flip bits"
            }
            1 if !body.is_empty() => {
                body.truncate(self.rng.below(body.len()));
                "truncate"
            }
            2 if body.len() >= 4 => {
                let at = self.rng.below(body.len() / 4) * 4;
                let word = self.rng.pick(&EDGE_WORDS);
                body[at..at + 4].copy_from_slice(&word.to_be_bytes());
                "overwrite a word"
            }
            _ => {
                let junk = 1 + self.rng.below(64);
                body.extend(self.rng.bytes(junk));
                "append junk"
            }
        })
    }

    /// NFSv3 arguments (RFC 1813 §3.3).
    fn nfs_args(&mut self, procedure: u32) -> (Args, Expect) {
        let mut a = Args::default();
        let mut expect = Expect::Anything;
        match procedure {
            0 => {}
            1 | 18 | 19 | 20 => self.handle(&mut a, None),
            2 => {
                self.handle(&mut a, None);
                self.sattr(&mut a);
                // sattrguard3: mostly unchecked (a ctime guard mostly fails)
                if !self.rng.one_in(5) {
                    a.u32(0);
                } else if self.discriminant(&mut a, 1) == 1 {
                    let (seconds, nanos) = self.time();
                    a.u32(seconds).u32(nanos);
                }
            }
            3 | 12 | 13 => {
                self.diropargs(&mut a);
            }
            4 => {
                self.handle(&mut a, None);
                let mask = self
                    .rng
                    .edge_or(&[0, 1, 0x1f, 0x3f, 0x40, u32::MAX], |r| r.u32());
                a.u32(mask);
            }
            5 => self.handle(&mut a, Some(Kind::Link)),
            6 => {
                self.handle(&mut a, Some(Kind::File));
                a.u64(self.offset());
                let count = self.count();
                a.u32(count);
                expect = Expect::Read { count };
            }
            7 => expect = self.write_args(&mut a),
            8 => {
                self.diropargs(&mut a);
                self.createhow(&mut a);
            }
            9 => {
                self.diropargs(&mut a);
                self.sattr(&mut a);
            }
            10 => {
                self.diropargs(&mut a);
                self.sattr(&mut a);
                self.symlink_target(&mut a);
            }
            11 => {
                self.diropargs(&mut a);
                self.mknod_data(&mut a);
            }
            14 => {
                self.diropargs(&mut a);
                self.diropargs(&mut a);
            }
            15 => {
                self.handle(&mut a, Some(Kind::File));
                self.diropargs(&mut a);
            }
            16 | 17 => {
                self.handle(&mut a, Some(Kind::Dir));
                a.u64(self.cookie());
                let verifier = if self.rng.percent(50) {
                    vec![0; 8]
                } else {
                    self.rng.bytes(8)
                };
                a.fixed(&verifier);
                a.u32(self.listing_count());
                if procedure == 17 {
                    a.u32(self.listing_count());
                }
            }
            21 => {
                self.handle(&mut a, Some(Kind::File));
                a.u64(self.offset());
                a.u32(self.count());
            }
            _ => unreachable!("NFS procedure {procedure}"),
        }
        (a, expect)
    }

    /// MOUNT v3 arguments (RFC 1813 appendix I): a `dirpath` for MNT and UMNT, else none.
    fn mount_args(&mut self, procedure: u32) -> (Args, Expect) {
        let mut a = Args::default();
        let mut expect = Expect::Anything;
        if procedure == 1 || procedure == 3 {
            let path = self.dirpath();
            if path.len() > MNTPATHLEN {
                a.malformed = true;
            }
            if path == b"/" && procedure == 1 {
                expect = Expect::MountRoot;
            }
            self.opaque_maybe_lying(&mut a, &path);
        }
        (a, expect)
    }

    /// GETPORT's `mapping` (RFC 1833): programs, versions and protocols served or not.
    fn getport_args(&mut self) -> (Args, Expect) {
        let program = self.rng.pick(&[NFS, MOUNT, PORTMAP, 100_021, u32::MAX]);
        let version = self.rng.pick(&[0, 2, 3, 4, u32::MAX]);
        let protocol = self.rng.pick(&[6, 17, 0, u32::MAX]);
        let mut a = Args::default();
        a.u32(program)
            .u32(version)
            .u32(protocol)
            .u32(self.rng.u32());
        let served = matches!((program, version), (NFS, 3) | (MOUNT, 3) | (PORTMAP, 2));
        let port = if served && protocol == 6 {
            u32::from(self.port)
        } else {
            0
        };
        (a, Expect::Port(port))
    }

    /// An `nfs_fh3`: mostly one the server issued (of the kind wanted, if any), else one
    /// damaged, foreign, empty, oversized or behind a lying length.
    fn handle(&mut self, a: &mut Args, want: Option<Kind>) {
        let valid = self.valid_handle(want);
        match self.rng.below(100) {
            0..=79 => {
                a.opaque(&valid);
            }
            80..=84 => {
                let mut flipped = valid;
                if !flipped.is_empty() {
                    let at = self.rng.below(flipped.len());
                    flipped[at] ^= 1 << self.rng.below(8);
                }
                a.opaque(&flipped);
            }
            85..=87 => {
                let cut = self.rng.below(valid.len().max(1));
                a.opaque(&valid[..cut.min(valid.len())]);
            }
            88..=89 => {
                let mut longer = valid;
                let len = (longer.len() + 1 + self.rng.below(FHSIZE)).min(FHSIZE);
                let junk = self.rng.bytes(len.saturating_sub(longer.len()));
                longer.extend(junk);
                a.opaque(&longer);
            }
            90..=92 => {
                let foreign = self.foreign_handle(valid);
                a.opaque(&foreign);
            }
            93..=94 => {
                a.opaque(&[]);
            }
            95..=96 => {
                let len = FHSIZE + 1 + self.rng.below(64);
                a.opaque(&self.rng.bytes(len));
                a.malformed = true;
            }
            _ => {
                let claimed = self.rng.pick(&[21, 64, 65, 0x7fff_ffff, u32::MAX]);
                a.opaque_claiming(&valid, claimed);
            }
        }
    }

    /// An issued handle: of the kind wanted four times in five (when there is one).
    fn valid_handle(&mut self, want: Option<Kind>) -> Vec<u8> {
        let wanted: Vec<&Handle> = self
            .pool
            .all()
            .filter(|h| want.is_none_or(|k| h.kind == k))
            .collect();
        if !wanted.is_empty() && !self.rng.one_in(5) {
            return wanted[self.rng.below(wanted.len())].bytes.clone();
        }
        let all: Vec<&Handle> = self.pool.all().collect();
        assert!(!all.is_empty(), "no handle to fuzz with");
        all[self.rng.below(all.len())].bytes.clone()
    }

    /// A handle this server never issued: random bytes, the right magic with random
    /// contents, or an issued one naming an inode that does not exist.
    fn foreign_handle(&mut self, valid: Vec<u8>) -> Vec<u8> {
        match self.rng.below(3) {
            0 => self.rng.bytes(20),
            1 => [b"ZN\x01\0".to_vec(), self.rng.bytes(16)].concat(),
            _ => {
                let mut other = valid;
                let end = other.len().min(16);
                for byte in other.iter_mut().take(end).skip(8) {
                    *byte = self.rng.next() as u8;
                }
                other
            }
        }
    }

    /// `diropargs3`: a folder's handle and a name in it.
    fn diropargs(&mut self, a: &mut Args) {
        self.handle(a, Some(Kind::Dir));
        self.name(a);
    }

    /// A `filename3`: a scratch name, a known one, or a hostile one.
    fn name(&mut self, a: &mut Args) {
        let name = match self.rng.below(100) {
            0..=39 => self.rng.pick(&SCRATCH_NAMES).as_bytes().to_vec(),
            40..=59 => self.rng.pick(&KNOWN_NAMES).as_bytes().to_vec(),
            _ => self.hostile_name(),
        };
        if name.len() > SERVER_MAX_PATH {
            a.malformed = true;
        }
        self.opaque_maybe_lying(a, &name);
    }

    fn hostile_name(&mut self) -> Vec<u8> {
        match self.rng.below(14) {
            0 => b".".to_vec(),
            1 => b"..".to_vec(),
            2 => Vec::new(),
            3 => b"a/b".to_vec(),
            4 => b"../canary".to_vec(),
            5 => b"x\0y".to_vec(),
            6 => vec![b'n'; 255],
            7 => vec![b'n'; 256],
            8 => b"caf\xe9\xff\xfe".to_vec(),
            9 => format!("{TEMP_PREFIX}x").into_bytes(),
            10 => TEMP_PREFIX.as_bytes().to_vec(),
            11 => vec![b'm'; SERVER_MAX_PATH],
            12 => vec![b'm'; SERVER_MAX_PATH + 1],
            _ => {
                let len = 1 + self.rng.below(16);
                self.rng.bytes(len)
            }
        }
    }

    /// Opaque data, one time in 40 behind a lying length.
    fn opaque_maybe_lying(&mut self, a: &mut Args, data: &[u8]) {
        if self.rng.one_in(40) {
            let longer = data.len() as u32 + 1 + self.rng.below(8) as u32;
            let claimed = self
                .rng
                .pick(&[longer, (1 << 20) + 1, 0x7fff_ffff, u32::MAX]);
            a.opaque_claiming(data, claimed);
        } else {
            a.opaque(data);
        }
    }

    /// A MOUNT `dirpath`.
    fn dirpath(&mut self) -> Vec<u8> {
        match self.rng.below(16) {
            0..=3 => b"/".to_vec(),
            4 => Vec::new(),
            5 => b"/folder".to_vec(),
            6 => b"/default".to_vec(),
            7 => b"/default/folder".to_vec(),
            8 => b"/..".to_vec(),
            9 => b"/folder/../..".to_vec(),
            10 => b"/escape-dir".to_vec(),
            11 => b"/file.txt".to_vec(),
            12 => format!("/{TEMP_PREFIX}x").into_bytes(),
            13 => self.rng.pick(&[&b"/caf\xe9"[..], b"/a\0b"]).to_vec(),
            14 => vec![b'/'; MNTPATHLEN],
            _ => vec![b'/'; MNTPATHLEN + 1],
        }
    }

    fn offset(&mut self) -> u64 {
        match self.rng.below(12) {
            0 => 0,
            1 => 1,
            2 => 4095,
            3 => 4096,
            4 => 1 << 20,
            5 => (1 << 20) + 1,
            6 => u64::from(u32::MAX),
            7 => u64::MAX,
            8 => i64::MAX as u64,
            9 => 1 << 40,
            _ => self.rng.below(8192) as u64,
        }
    }

    fn count(&mut self) -> u32 {
        match self.rng.below(10) {
            0 => 0,
            1 => 1,
            2 => 4095,
            3 => 4096,
            4 => 1 << 20,
            5 => (1 << 20) + 1,
            6 => u32::MAX,
            7 => self.rng.u32(),
            _ => self.rng.below(8192) as u32,
        }
    }

    /// READDIR's `count`, READDIRPLUS's `dircount` and `maxcount`.
    fn listing_count(&mut self) -> u32 {
        self.rng
            .edge_or(&[0, 1, 100, 511, 512, 4096, 8192, 1 << 20, u32::MAX], |r| {
                r.below(16384) as u32
            })
    }

    /// A READDIR cookie: one a listing returned, or an edge value.
    fn cookie(&mut self) -> u64 {
        if !self.pool.cookies.is_empty() && self.rng.percent(40) {
            return self.pool.cookies[self.rng.below(self.pool.cookies.len())];
        }
        self.rng.edge_or(&[0, 1, 2, 3, u64::MAX], |r| r.next())
    }

    /// A discriminant in `0..=max_valid`, one time in 50 outside it.
    fn discriminant(&mut self, a: &mut Args, max_valid: u32) -> u32 {
        let value = if self.rng.one_in(50) {
            a.malformed = true;
            self.rng.pick(&[max_valid + 1, 7, u32::MAX])
        } else {
            self.rng.below(max_valid as usize + 1) as u32
        };
        a.u32(value);
        value
    }

    /// `sattr3`: each field set or not (now and then with a bad discriminant), with edge
    /// values; times as the server's or the client's (nanoseconds out of range included).
    fn sattr(&mut self, a: &mut Args) {
        if self.discriminant(a, 1) == 1 {
            let mode = self
                .rng
                .pick(&[0o644, 0o600, 0o777, 0o7777, 0, 0o4755, u32::MAX]);
            a.u32(mode);
        }
        for _ in 0..2 {
            if self.discriminant(a, 1) == 1 {
                // u32::MAX is `(uid_t) -1`, which chown(2) takes as "leave unchanged".
                let id = self.rng.edge_or(&[0, 1000, 65534, u32::MAX], |r| r.u32());
                a.u32(id);
            }
        }
        if self.discriminant(a, 1) == 1 {
            let size = self.rng.edge_or(
                &[
                    0,
                    1,
                    4096,
                    1 << 20,
                    (1 << 20) + 1,
                    u64::from(u32::MAX),
                    i64::MAX as u64,
                    u64::MAX,
                ],
                |r| r.below(8192) as u64,
            );
            a.u64(size);
        }
        for _ in 0..2 {
            if self.discriminant(a, 2) == 2 {
                let (seconds, nanos) = self.time();
                a.u32(seconds).u32(nanos);
            }
        }
    }

    fn time(&mut self) -> (u32, u32) {
        let seconds = self.rng.edge_or(&[0, 1, u32::MAX], |r| r.u32());
        let nanos = self
            .rng
            .edge_or(&[0, NANOS - 1, NANOS, u32::MAX], |r| r.u32());
        (seconds, nanos)
    }

    /// `createhow3`: UNCHECKED and GUARDED with a `sattr3`, EXCLUSIVE with a verifier, now and
    /// then a mode outside the enumeration.
    fn createhow(&mut self, a: &mut Args) {
        match self.discriminant(a, 2) {
            0 | 1 => self.sattr(a),
            2 => {
                let verifier = self.rng.bytes(8);
                a.fixed(&verifier);
            }
            _ => {}
        }
    }

    /// `mknoddata3`: every `ftype3`, with its `devicedata3` or `sattr3`.
    fn mknod_data(&mut self, a: &mut Args) {
        let ftype = if self.rng.one_in(8) {
            a.malformed = true;
            self.rng.pick(&[0, 8, u32::MAX])
        } else {
            1 + self.rng.below(7) as u32
        };
        a.u32(ftype);
        match ftype {
            3 | 4 => {
                self.sattr(a);
                a.u32(self.rng.u32()).u32(self.rng.u32());
            }
            6 | 7 => self.sattr(a),
            _ => {}
        }
    }

    /// A symlink's `nfspath3`: out of the share, empty, with a NUL, long, not UTF-8, or plain.
    fn symlink_target(&mut self, a: &mut Args) {
        let target = match self.rng.below(10) {
            0 => self.canary.clone(),
            1 => self.outer.clone(),
            2 => b"../canary".to_vec(),
            3 => b"/".to_vec(),
            4 => Vec::new(),
            5 => b"a\0b".to_vec(),
            6 => vec![b'p'; SERVER_MAX_PATH],
            7 => vec![b'p'; SERVER_MAX_PATH + 1],
            8 => b"\xff\xfe".to_vec(),
            _ => FILE.as_bytes().to_vec(),
        };
        if target.len() > SERVER_MAX_PATH {
            a.malformed = true;
        }
        self.opaque_maybe_lying(a, &target);
    }

    /// WRITE3args: mostly small data, now and then 64 KiB or 1 MiB; a `count` that matches
    /// or not; `stable_how` 0..=3.
    fn write_args(&mut self, a: &mut Args) -> Expect {
        self.handle(a, Some(Kind::File));
        a.u64(self.offset());
        let len = match self.rng.below(100) {
            0..=29 => self.rng.below(16),
            30..=69 => self.rng.below(4097),
            70..=89 => self.rng.pick(&[4095, 4096, 4097, 8192]),
            90..=97 => self.rng.below(65537),
            _ => MAX_IO,
        };
        let data = self.rng.bytes(len);
        let count = if self.rng.percent(85) {
            len as u32
        } else {
            a.malformed = true; // RFC 1813: `count` is the data's length
            self.count()
        };
        a.u32(count);
        let stable = if self.rng.one_in(10) {
            a.malformed = true;
            self.rng.pick(&[3, u32::MAX])
        } else {
            self.rng.below(3) as u32
        };
        a.u32(stable);
        if self.rng.one_in(12) {
            let claimed = self.rng.pick(&[len as u32 + 4, (1 << 20) + 1, u32::MAX]);
            a.opaque_claiming(&data, claimed);
        } else {
            a.opaque(&data);
        }
        Expect::Write { stable, sent: len }
    }
}

/// An RPC call message with an AUTH_SYS credential and an AUTH_NONE verifier.
fn call_message(xid: u32, target: Target, cred: &Cred, args: &[u8]) -> Vec<u8> {
    let mut auth = Args::default();
    auth.u32(1)
        .opaque(&cred.machine)
        .u32(cred.uid)
        .u32(cred.gid)
        .u32(cred.gids.len() as u32);
    for gid in &cred.gids {
        auth.u32(*gid);
    }
    let mut m = Args::default();
    m.u32(xid)
        .u32(0)
        .u32(2)
        .u32(target.program)
        .u32(target.version())
        .u32(target.procedure)
        .u32(1)
        .opaque(&auth.bytes)
        .u32(0)
        .u32(0);
    m.bytes.extend_from_slice(args);
    m.bytes
}

/// One record fragment: its header (last-fragment bit, length), then its bytes.
fn fragment(last: bool, bytes: &[u8]) -> Vec<u8> {
    let mark = bytes.len() as u32 | if last { 0x8000_0000 } else { 0 };
    [&mark.to_be_bytes()[..], bytes].concat()
}

// ---------------------------------------------------------------------------------------
// The wire
// ---------------------------------------------------------------------------------------

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to the NFS port");
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(REPLY_TIMEOUT))
        .expect("write timeout");
    let _ = stream.set_nodelay(true);
    stream
}

/// Why a batch did not get all its replies.
enum Trouble {
    /// No reply for [`REPLY_TIMEOUT`].
    Hang,
    /// The server closed the connection (or it broke).
    Closed(String),
    /// A reply whose xid is no call in flight (or one answered already).
    Stray(u32, Vec<u8>),
}

/// The replies to a batch: `replies[i]` answers `cases[i]`.
struct Exchanged {
    replies: Vec<Option<Vec<u8>>>,
    /// Why some are missing.
    trouble: Option<Trouble>,
    /// Whether they came in another order than the calls.
    reordered: bool,
}

/// Sends the cases' records (all at once, from a second thread, so that replies are read
/// while a big batch is still going out) and collects one reply per xid, in whatever order
/// they come.
fn exchange(stream: &TcpStream, cases: &[Case]) -> Exchanged {
    let wire: Vec<u8> = cases
        .iter()
        .flat_map(|c| c.record.iter().copied())
        .collect();
    let mut exchanged = Exchanged {
        replies: vec![None; cases.len()],
        trouble: None,
        reordered: false,
    };
    exchanged.trouble = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut out = stream;
            out.write_all(&wire)
        });
        let trouble = collect_replies(stream, cases, &mut exchanged);
        let sent = writer.join().expect("writer thread");
        match (trouble, sent) {
            (Some(Trouble::Closed(why)), Err(e)) => {
                Some(Trouble::Closed(format!("{why}; sending: {e}")))
            }
            (trouble, _) => trouble,
        }
    });
    exchanged
}

fn collect_replies(stream: &TcpStream, cases: &[Case], into: &mut Exchanged) -> Option<Trouble> {
    for arrived in 0..cases.len() {
        let reply = match read_reply(stream) {
            Ok(reply) => reply,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Some(Trouble::Hang);
            }
            Err(e) => return Some(Trouble::Closed(e.to_string())),
        };
        let xid = reply
            .get(..4)
            .map_or(0, |w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
        match cases.iter().position(|c| c.xid == xid) {
            Some(i) if into.replies[i].is_none() => {
                into.reordered |= i != arrived;
                into.replies[i] = Some(reply);
            }
            _ => return Some(Trouble::Stray(xid, reply)),
        }
    }
    None
}

/// Reads one reply record (all its fragments).
fn read_reply(mut stream: &TcpStream) -> std::io::Result<Vec<u8>> {
    let mut record = Vec::new();
    loop {
        let mut mark = [0u8; 4];
        stream.read_exact(&mut mark)?;
        let mark = u32::from_be_bytes(mark);
        let len = (mark & 0x7fff_ffff) as usize;
        if record.len() + len > MAX_REPLY {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a reply record of over {MAX_REPLY} bytes"),
            ));
        }
        let start = record.len();
        record.resize(start + len, 0);
        stream.read_exact(&mut record[start..])?;
        if mark & 0x8000_0000 != 0 {
            return Ok(record);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Checking replies
// ---------------------------------------------------------------------------------------

/// What replies are checked against across a run.
struct Checks {
    /// Inodes outside the share (the canary, the folder around the share): no reply may
    /// carry them.
    outside: Vec<u64>,
    /// The write verifier of WRITE and COMMIT: one while the server runs.
    verifier: Option<Vec<u8>>,
}

/// What a reply said: its status label, and handles and cookies it taught.
struct Verdict {
    label: &'static str,
    handles: Vec<Handle>,
    cookies: Vec<u64>,
}

impl Verdict {
    fn learn(&mut self, handle: Option<Vec<u8>>, kind: Option<Kind>) {
        if let Some(bytes) = handle {
            self.handles.push(Handle {
                bytes,
                kind: kind.unwrap_or(Kind::Other),
            });
        }
    }
}

/// Checks that `reply` is a well-formed accepted reply to `case` and makes sense.
fn check_reply(case: &Case, reply: &[u8], checks: &mut Checks) -> Result<Verdict, String> {
    let Checks { outside, verifier } = checks;
    let mut r = Reply {
        bytes: reply,
        at: 0,
        outside,
    };
    let xid = r.u32("xid")?;
    if xid != case.xid {
        return Err(format!("reply xid {xid:#x}, call xid {:#x}", case.xid));
    }
    if r.u32("msg_type")? != 1 {
        return Err("not a REPLY".into());
    }
    let reply_stat = r.u32("reply_stat")?;
    if reply_stat != 0 {
        return Err(format!(
            "MSG_DENIED (reply_stat {reply_stat}) for a call with a valid RPC header"
        ));
    }
    r.u32("verifier flavor")?;
    r.opaque(400, "verifier")?;
    let mut verdict = Verdict {
        label: "OK",
        handles: Vec::new(),
        cookies: Vec::new(),
    };
    match r.u32("accept_stat")? {
        0 => match case.target.program {
            NFS => nfs_results(case, &mut r, verifier, &mut verdict)?,
            MOUNT => mount_results(case, &mut r, &mut verdict)?,
            _ => getport_results(case, &mut r)?,
        },
        4 => {
            r.end()?;
            if case.well_formed() {
                return Err("GARBAGE_ARGS for arguments that follow the grammar".into());
            }
            verdict.label = "GARBAGE_ARGS";
        }
        5 => {
            r.end()?;
            verdict.label = "SYSTEM_ERR";
        }
        other => {
            return Err(format!(
                "accept_stat {other} for a procedure the program has"
            ));
        }
    }
    Ok(verdict)
}

/// NFSv3 results (RFC 1813 §3.3): the status, then the `resok` or `resfail` arm.
fn nfs_results(
    case: &Case,
    r: &mut Reply,
    verifier: &mut Option<Vec<u8>>,
    v: &mut Verdict,
) -> Result<(), String> {
    let procedure = case.target.procedure;
    if procedure == 0 {
        return r.end();
    }
    let status = r.u32("nfsstat3")?;
    v.label = nfsstat3_name(status).ok_or(format!("nfsstat3 {status} is not in RFC 1813"))?;
    let ok = status == 0;
    match procedure {
        1 => {
            if ok {
                r.fattr()?;
            }
        }
        2 | 12 | 13 => r.wcc()?,
        3 => {
            if ok {
                let handle = r.fh()?;
                let kind = r.post_op_attr()?;
                v.learn(Some(handle), kind);
            }
            r.post_op_attr()?;
        }
        4 => {
            r.post_op_attr()?;
            if ok {
                r.u32("access")?;
            }
        }
        5 => {
            r.post_op_attr()?;
            if ok {
                r.opaque(1 << 16, "nfspath3")?;
            }
        }
        6 => {
            r.post_op_attr()?;
            if ok {
                read_results(case, r)?;
            }
        }
        7 => {
            r.wcc()?;
            if ok {
                write_results(case, r, verifier)?;
            }
        }
        8..=11 => {
            if ok {
                let handle = r.post_op_fh()?;
                let kind = r.post_op_attr()?;
                v.learn(handle, kind);
            }
            r.wcc()?;
        }
        14 => {
            r.wcc()?;
            r.wcc()?;
        }
        15 => {
            r.post_op_attr()?;
            r.wcc()?;
        }
        16 | 17 => {
            r.post_op_attr()?;
            if ok {
                listing(r, procedure == 17, v)?;
            }
        }
        18 => {
            r.post_op_attr()?;
            if ok {
                for what in ["tbytes", "fbytes", "abytes", "tfiles", "ffiles", "afiles"] {
                    r.u64(what)?;
                }
                r.u32("invarsec")?;
            }
        }
        19 => {
            r.post_op_attr()?;
            if ok {
                for what in ["rtmax", "rtpref", "rtmult", "wtmax", "wtpref", "wtmult"] {
                    r.u32(what)?;
                }
                r.u32("dtpref")?;
                r.u64("maxfilesize")?;
                r.time("time_delta")?;
                r.u32("properties")?;
            }
        }
        20 => {
            r.post_op_attr()?;
            if ok {
                r.u32("linkmax")?;
                r.u32("name_max")?;
                for what in [
                    "no_trunc",
                    "chown_restricted",
                    "case_insensitive",
                    "case_preserving",
                ] {
                    r.bool(what)?;
                }
            }
        }
        21 => {
            r.wcc()?;
            if ok {
                write_verifier(r, verifier)?;
            }
        }
        _ => unreachable!("NFS procedure {procedure}"),
    }
    r.end()
}

/// READ3resok after its attributes: no more data than asked, and `count` is its length.
fn read_results(case: &Case, r: &mut Reply) -> Result<(), String> {
    let count = r.u32("count")?;
    r.bool("eof")?;
    let data = r.opaque(MAX_IO, "data")?;
    if data.len() != count as usize {
        return Err(format!("READ count {count} with {} data bytes", data.len()));
    }
    if let Expect::Read { count: asked } = case.expect
        && case.mutation.is_none()
        && count > asked
    {
        return Err(format!("a READ of {asked} bytes returned {count}"));
    }
    Ok(())
}

/// WRITE3resok after its `wcc_data`: no more written than sent, committed at least as
/// asked, the run's verifier.
fn write_results(case: &Case, r: &mut Reply, verifier: &mut Option<Vec<u8>>) -> Result<(), String> {
    let count = r.u32("count")?;
    let committed = r.u32("committed")?;
    write_verifier(r, verifier)?;
    if committed > 2 {
        return Err(format!("stable_how {committed} is not in RFC 1813"));
    }
    if let Expect::Write { stable, sent } = case.expect
        && case.mutation.is_none()
    {
        if count as usize > sent {
            return Err(format!("{sent} bytes sent, {count} written"));
        }
        if !case.malformed && committed < stable {
            return Err(format!("stable_how {stable} asked, {committed} answered"));
        }
    }
    Ok(())
}

/// A `writeverf3`: the same in every reply while the server runs.
fn write_verifier(r: &mut Reply, known: &mut Option<Vec<u8>>) -> Result<(), String> {
    let verifier = r.fixed(8, "writeverf3")?.to_vec();
    match known {
        Some(known) if *known != verifier => Err(format!(
            "the write verifier changed from {} to {} while the server ran",
            hex(known),
            hex(&verifier)
        )),
        Some(_) => Ok(()),
        None => {
            *known = Some(verifier);
            Ok(())
        }
    }
}

/// READDIR3resok / READDIRPLUS3resok after the folder's attributes.
fn listing(r: &mut Reply, plus: bool, v: &mut Verdict) -> Result<(), String> {
    r.fixed(8, "cookieverf3")?;
    let mut names = HashSet::new();
    while r.bool("value_follows")? {
        let fileid = r.u64("fileid")?;
        r.inside(fileid)?;
        let name = r.opaque(255, "filename3")?;
        if name.is_empty()
            || name.contains(&b'/')
            || name.contains(&0)
            || name.starts_with(TEMP_PREFIX.as_bytes())
        {
            return Err(format!("listed a name no client may see: {:?}", name));
        }
        if !names.insert(name.to_vec()) {
            return Err(format!("{:?} listed twice", String::from_utf8_lossy(name)));
        }
        v.cookies.push(r.u64("cookie")?);
        if plus {
            let kind = r.post_op_attr()?;
            let handle = r.post_op_fh()?;
            v.learn(handle, kind);
        }
    }
    r.bool("eof")?;
    Ok(())
}

/// MOUNT v3 results.
fn mount_results(case: &Case, r: &mut Reply, v: &mut Verdict) -> Result<(), String> {
    match case.target.procedure {
        1 => {
            let status = r.u32("mountstat3")?;
            v.label =
                mountstat3_name(status).ok_or(format!("mountstat3 {status} is not in RFC 1813"))?;
            if status == 0 {
                let handle = r.fh()?;
                let flavors = r.u32("auth_flavors length")?;
                if flavors > 16 {
                    return Err(format!("{flavors} auth flavors"));
                }
                for _ in 0..flavors {
                    r.u32("auth flavor")?;
                }
                v.learn(Some(handle), Some(Kind::Dir));
            } else if matches!(case.expect, Expect::MountRoot) && case.well_formed() {
                return Err(format!("MNT of / refused: {}", v.label));
            }
        }
        2 => {
            while r.bool("mountlist follows")? {
                r.opaque(MNTNAMLEN, "ml_hostname")?;
                r.opaque(MNTPATHLEN, "ml_directory")?;
            }
        }
        5 => {
            while r.bool("exports follow")? {
                r.opaque(MNTPATHLEN, "ex_dir")?;
                while r.bool("groups follow")? {
                    r.opaque(MNTNAMLEN, "gr_name")?;
                }
            }
        }
        _ => {}
    }
    r.end()
}

/// GETPORT's port: this one for NFS v3, MOUNT v3 and PORTMAP v2 over TCP, else 0.
fn getport_results(case: &Case, r: &mut Reply) -> Result<(), String> {
    let port = r.u32("port")?;
    r.end()?;
    match case.expect {
        Expect::Port(expected) if case.well_formed() && port != expected => {
            Err(format!("GETPORT answered port {port}, not {expected}"))
        }
        _ => Ok(()),
    }
}

fn nfsstat3_name(code: u32) -> Option<&'static str> {
    Some(match code {
        0 => "OK",
        1 => "PERM",
        2 => "NOENT",
        5 => "IO",
        6 => "NXIO",
        13 => "ACCES",
        17 => "EXIST",
        18 => "XDEV",
        19 => "NODEV",
        20 => "NOTDIR",
        21 => "ISDIR",
        22 => "INVAL",
        27 => "FBIG",
        28 => "NOSPC",
        30 => "ROFS",
        31 => "MLINK",
        63 => "NAMETOOLONG",
        66 => "NOTEMPTY",
        69 => "DQUOT",
        70 => "STALE",
        71 => "REMOTE",
        10001 => "BADHANDLE",
        10002 => "NOT_SYNC",
        10003 => "BAD_COOKIE",
        10004 => "NOTSUPP",
        10005 => "TOOSMALL",
        10006 => "SERVERFAULT",
        10007 => "BADTYPE",
        10008 => "JUKEBOX",
        _ => return None,
    })
}

fn mountstat3_name(code: u32) -> Option<&'static str> {
    Some(match code {
        0 => "OK",
        1 => "PERM",
        2 => "NOENT",
        5 => "IO",
        13 => "ACCES",
        20 => "NOTDIR",
        22 => "INVAL",
        63 => "NAMETOOLONG",
        10004 => "NOTSUPP",
        10006 => "SERVERFAULT",
        _ => return None,
    })
}

/// Reads XDR results, strictly: booleans are 0 or 1, padding is zero, times are valid, and
/// no inode from outside the share appears.
struct Reply<'a> {
    bytes: &'a [u8],
    at: usize,
    outside: &'a [u64],
}

impl<'a> Reply<'a> {
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let word = self
            .bytes
            .get(self.at..self.at + 4)
            .ok_or_else(|| format!("the reply ends before {what} (byte {})", self.at))?;
        self.at += 4;
        Ok(u32::from_be_bytes([word[0], word[1], word[2], word[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok((u64::from(self.u32(what)?) << 32) | u64::from(self.u32(what)?))
    }

    fn bool(&mut self, what: &str) -> Result<bool, String> {
        match self.u32(what)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(format!("{what} is {other}, not a bool")),
        }
    }

    fn fixed(&mut self, len: usize, what: &str) -> Result<&'a [u8], String> {
        let padded = len.div_ceil(4) * 4;
        let bytes = self
            .bytes
            .get(self.at..self.at + padded)
            .ok_or_else(|| format!("the reply ends inside {what} ({len} bytes)"))?;
        if bytes[len..].iter().any(|b| *b != 0) {
            return Err(format!("{what} has non-zero padding"));
        }
        self.at += padded;
        Ok(&bytes[..len])
    }

    fn opaque(&mut self, max: usize, what: &str) -> Result<&'a [u8], String> {
        let len = self.u32(what)? as usize;
        if len > max {
            return Err(format!("{what} of {len} bytes, over its {max}"));
        }
        self.fixed(len, what)
    }

    fn end(&self) -> Result<(), String> {
        match self.bytes.len() - self.at {
            0 => Ok(()),
            extra => Err(format!("{extra} bytes after the results")),
        }
    }

    fn inside(&self, fileid: u64) -> Result<(), String> {
        if self.outside.contains(&fileid) {
            return Err(format!(
                "inode {fileid}, from OUTSIDE the share, in a reply"
            ));
        }
        Ok(())
    }

    fn time(&mut self, what: &str) -> Result<(), String> {
        self.u32(what)?;
        let nanos = self.u32(what)?;
        if nanos >= NANOS {
            return Err(format!("{what} has {nanos} nanoseconds"));
        }
        Ok(())
    }

    /// `fattr3`; returns the kind of file.
    fn fattr(&mut self) -> Result<Kind, String> {
        let ftype = self.u32("ftype")?;
        if !(1..=7).contains(&ftype) {
            return Err(format!("ftype3 {ftype}"));
        }
        for what in ["mode", "nlink", "uid", "gid"] {
            self.u32(what)?;
        }
        self.u64("size")?;
        self.u64("used")?;
        self.u32("rdev major")?;
        self.u32("rdev minor")?;
        self.u64("fsid")?;
        let fileid = self.u64("fileid")?;
        self.inside(fileid)?;
        for what in ["atime", "mtime", "ctime"] {
            self.time(what)?;
        }
        Ok(Kind::of(ftype))
    }

    fn post_op_attr(&mut self) -> Result<Option<Kind>, String> {
        if self.bool("attributes_follow")? {
            Ok(Some(self.fattr()?))
        } else {
            Ok(None)
        }
    }

    fn wcc(&mut self) -> Result<(), String> {
        if self.bool("pre_op_attr")? {
            self.u64("wcc size")?;
            self.time("wcc mtime")?;
            self.time("wcc ctime")?;
        }
        self.post_op_attr()?;
        Ok(())
    }

    /// `nfs_fh3`; a handle in this server's format must not name an inode outside.
    fn fh(&mut self) -> Result<Vec<u8>, String> {
        let handle = self.opaque(FHSIZE, "nfs_fh3")?.to_vec();
        if handle.len() == 20 && handle.starts_with(b"ZN") {
            let ino = u64::from_be_bytes(handle[8..16].try_into().expect("8 bytes"));
            self.inside(ino)?;
        }
        Ok(handle)
    }

    fn post_op_fh(&mut self) -> Result<Option<Vec<u8>>, String> {
        if self.bool("handle_follows")? {
            Ok(Some(self.fh()?))
        } else {
            Ok(None)
        }
    }
}

// ---------------------------------------------------------------------------------------
// A run
// ---------------------------------------------------------------------------------------

/// What a run saw.
#[derive(Default)]
struct Stats {
    answers: BTreeMap<Target, BTreeMap<&'static str, usize>>,
    batches: usize,
    pipelined: usize,
    /// Pipelined batches answered in another order than sent.
    reordered: usize,
    fragmented: usize,
    mutated: usize,
    malformed: usize,
    /// Connections the server closed, with the calls that were in flight.
    closes: Vec<String>,
    /// Examples of [`NOTABLE`] answers.
    notable: Vec<String>,
}

impl Stats {
    fn count(&mut self, target: Target, label: &'static str) {
        *self
            .answers
            .entry(target)
            .or_default()
            .entry(label)
            .or_default() += 1;
    }

    fn seen(&self, target: Target, label: &str) -> bool {
        self.answers
            .get(&target)
            .is_some_and(|a| a.contains_key(label))
    }

    /// Whether `target` got an answer that shows its body ran.
    fn reached(&self, target: Target) -> bool {
        self.answers
            .get(&target)
            .is_some_and(|a| a.keys().any(|label| !NOT_REACHED.contains(label)))
    }

    fn summary(&self) -> String {
        let mut lines = Vec::new();
        for (target, answers) in &self.answers {
            let total: usize = answers.values().sum();
            let mut by_count: Vec<(&&str, &usize)> = answers.iter().collect();
            by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let labels: Vec<String> = by_count.iter().map(|(l, n)| format!("{l} {n}")).collect();
            lines.push(format!(
                "nfs_fuzz:   {:<20} {total:>4}: {}",
                target.name(),
                labels.join(", ")
            ));
        }
        lines.join("\n")
    }
}

/// The server, its share, the connection and what the run learned.
struct Run {
    seed: u64,
    // Declared before the playground: dropped (stopped) first, then the folders go.
    server: Dataplane,
    playground: Playground,
    stream: TcpStream,
    fuzzer: Fuzzer,
    checks: Checks,
    stats: Stats,
}

impl Run {
    fn start(seed: u64) -> Run {
        let playground = Playground::new();
        let server = Dataplane::start(&playground.share);
        let stream = connect(server.nfs);
        let outside = [playground.outer.path(), playground.canary.as_path()]
            .iter()
            .map(|p| std::fs::metadata(p).expect("stat outside").ino())
            .collect();
        Run {
            seed,
            fuzzer: Fuzzer::new(seed, server.nfs.port(), &playground),
            server,
            playground,
            stream,
            checks: Checks {
                outside,
                verifier: None,
            },
            stats: Stats::default(),
        }
    }

    /// Fails the test with the seed, the calls involved, the reply and the server's state.
    fn fail(&mut self, why: &str, cases: &[&Case], reply: Option<&[u8]>) -> ! {
        let cases: Vec<String> = cases.iter().map(|c| c.describe()).collect();
        let reply = reply.map_or(String::new(), |r| format!("\n  reply: {}", hex(r)));
        panic!(
            "nfs_fuzz: {why}\n  seed {:#x} (ZN_FUZZ_SEED; ZN_FUZZ_CASES=<case index + 1> \
             stops right after it)\n  {}{reply}\n  {}",
            self.seed,
            cases.join("\n  "),
            self.server.postmortem()
        );
    }

    /// Sends a batch, checks each reply, learns from them; a close is counted and the
    /// connection made again.
    fn run_batch(&mut self, cases: &[Case]) {
        self.stats.batches += 1;
        if cases.len() > 1 {
            self.stats.pipelined += 1;
        }
        let Exchanged {
            replies,
            trouble,
            reordered,
        } = exchange(&self.stream, cases);
        self.stats.reordered += usize::from(reordered);
        for (case, reply) in cases.iter().zip(&replies) {
            self.stats.mutated += usize::from(case.mutation.is_some());
            self.stats.malformed += usize::from(case.malformed);
            self.stats.fragmented += usize::from(case.split);
            if let Some(reply) = reply {
                self.judge(case, reply);
            }
        }
        let unanswered: Vec<&Case> = cases
            .iter()
            .zip(&replies)
            .filter(|(_, r)| r.is_none())
            .map(|(c, _)| c)
            .collect();
        match trouble {
            None => {}
            Some(Trouble::Hang) => self.fail(
                &format!("no reply within {REPLY_TIMEOUT:?}"),
                &unanswered,
                None,
            ),
            Some(Trouble::Stray(xid, reply)) => self.fail(
                &format!("a reply with xid {xid:#x}, which no call in flight has"),
                &cases.iter().collect::<Vec<_>>(),
                Some(&reply),
            ),
            Some(Trouble::Closed(why)) => {
                let calls: Vec<String> = unanswered.iter().map(|c| c.describe()).collect();
                self.stats.closes.push(format!(
                    "closed ({why}) with {} calls unanswered:\n  {}",
                    unanswered.len(),
                    calls.join("\n  ")
                ));
                self.stream = connect(self.server.nfs);
            }
        }
    }

    /// Checks one reply; counts its answer and learns its handles and cookies.
    fn judge(&mut self, case: &Case, reply: &[u8]) {
        let verdict = match check_reply(case, reply, &mut self.checks) {
            Ok(verdict) => verdict,
            Err(why) => self.fail(&why, &[case], Some(reply)),
        };
        self.stats.count(case.target, verdict.label);
        if verdict.label == "SYSTEM_ERR" {
            // The server answers SYSTEM_ERR only when a request panicked.
            self.fail("a request panicked (SYSTEM_ERR)", &[case], Some(reply));
        }
        if NOTABLE.contains(&verdict.label) && self.stats.notable.len() < 8 {
            self.stats
                .notable
                .push(format!("{}: {}", verdict.label, case.describe()));
        }
        for handle in verdict.handles {
            self.fuzzer.pool.learn(handle);
        }
        for cookie in verdict.cookies {
            self.fuzzer.pool.learn_cookie(cookie);
        }
    }

    /// One well-formed call as root on `stream`, outside the fuzzing; its reply must be
    /// well-formed and answer `expected`.
    fn plain_call(&mut self, stream: &TcpStream, target: Target, args: Args) -> Verdict {
        let case = self.fuzzer.plain_case(target, args);
        let mut exchanged = exchange(stream, std::slice::from_ref(&case));
        let Some(reply) = exchanged.replies.pop().flatten() else {
            let why = match exchanged.trouble {
                Some(Trouble::Hang) => "no reply".to_owned(),
                Some(Trouble::Closed(why)) => format!("connection closed: {why}"),
                Some(Trouble::Stray(xid, _)) => format!("a stray reply {xid:#x}"),
                None => "no reply".to_owned(),
            };
            self.fail(&why, &[&case], None);
        };
        match check_reply(&case, &reply, &mut self.checks) {
            Ok(verdict) => verdict,
            Err(why) => self.fail(&why, &[&case], Some(&reply)),
        }
    }

    /// MNT `/` or LOOKUP `name` in `dir`: the handle, which must come.
    fn handle_of(&mut self, dir: Option<&[u8]>, name: &str) -> Vec<u8> {
        let stream = self.stream.try_clone().expect("clone the connection");
        let mut args = Args::default();
        let target = match dir {
            None => {
                args.opaque(b"/");
                Target {
                    program: MOUNT,
                    procedure: 1,
                }
            }
            Some(dir) => {
                args.opaque(dir).opaque(name.as_bytes());
                Target {
                    program: NFS,
                    procedure: 3,
                }
            }
        };
        let verdict = self.plain_call(&stream, target, args);
        match verdict.handles.into_iter().next() {
            Some(handle) if verdict.label == "OK" => handle.bytes,
            _ => panic!(
                "nfs_fuzz: no handle for {name:?} ({}); {}",
                verdict.label,
                self.server.postmortem()
            ),
        }
    }

    /// The fixtures' handles, looked up again (after a restoration they are new files).
    fn refresh_handles(&mut self) {
        let root = self.handle_of(None, "/");
        let folder = self.handle_of(Some(&root), FOLDER);
        let fixtures = [
            (root.clone(), Kind::Dir),
            (self.handle_of(Some(&root), FILE), Kind::File),
            (folder.clone(), Kind::Dir),
            (self.handle_of(Some(&folder), INNER), Kind::File),
            (self.handle_of(Some(&root), ESCAPE), Kind::Link),
            (self.handle_of(Some(&root), ESCAPE_DIR), Kind::Link),
            (self.handle_of(Some(&root), PIPE), Kind::Other),
        ];
        self.fuzzer.pool.fixtures = fixtures
            .into_iter()
            .map(|(bytes, kind)| Handle { bytes, kind })
            .collect();
    }

    /// The checks after the fuzzing: the summary, then the server, the outside and coverage.
    fn finish(mut self, budget: usize, started: Instant) {
        let s = &self.stats;
        println!(
            "nfs_fuzz: {budget} cases in {} batches ({} pipelined, {} of them answered out of \
             order), {} in two fragments, {} mutated, {} malformed on purpose, {} connections \
             closed by the server, {:.1} s",
            s.batches,
            s.pipelined,
            s.reordered,
            s.fragmented,
            s.mutated,
            s.malformed,
            s.closes.len(),
            started.elapsed().as_secs_f64()
        );
        println!("{}", s.summary());
        for example in &s.notable {
            println!("nfs_fuzz: notable answer {example}");
        }

        if !self.stats.closes.is_empty() {
            let closes = self.stats.closes.join("\n");
            self.fail(
                &format!(
                    "the server closed the connection, though every record had a valid RPC \
                     header:\n{closes}"
                ),
                &[],
                None,
            );
        }
        self.still_serving();
        self.outside_untouched();
        self.coverage(budget);
    }

    /// NULL and GETATTR of the root on a fresh connection.
    fn still_serving(&mut self) {
        let fresh = connect(self.server.nfs);
        let null = Target {
            program: NFS,
            procedure: 0,
        };
        assert_eq!(self.plain_call(&fresh, null, Args::default()).label, "OK");
        let root = self.fuzzer.pool.fixtures[0].bytes.clone();
        let mut args = Args::default();
        args.opaque(&root);
        let getattr = Target {
            program: NFS,
            procedure: 1,
        };
        let label = self.plain_call(&fresh, getattr, args).label;
        assert_eq!(label, "OK", "GETATTR of the root after the fuzzing");
    }

    /// The canary, the folder around the share, and reserved names in the share.
    fn outside_untouched(&self) {
        assert_eq!(
            FileState::of(&self.playground.canary),
            self.playground.canary_before,
            "the canary outside the share changed"
        );
        let expected: BTreeSet<String> = [CANARY, SHARE].map(String::from).into();
        assert_eq!(
            self.playground.outer_names(),
            expected,
            "something was made next to the share"
        );
        let reserved: Vec<PathBuf> = self
            .playground
            .all_paths()
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.as_bytes().starts_with(TEMP_PREFIX.as_bytes()))
            })
            .collect();
        assert!(
            reserved.is_empty(),
            "NFS made names with the reserved prefix {TEMP_PREFIX:?}: {reserved:?}"
        );
    }

    /// Every NFS procedure's body was reached, and the answers that prove real work were
    /// seen (checked in runs of [`COVERAGE_CASES`] or more; shorter ones reproduce failures).
    fn coverage(&self, budget: usize) {
        if budget < COVERAGE_CASES {
            println!("nfs_fuzz: coverage not checked in a run of under {COVERAGE_CASES} cases");
            return;
        }
        let unreached: Vec<&str> = (0..NFS_PROCEDURES.len() as u32)
            .filter(|&procedure| {
                !self.stats.reached(Target {
                    program: NFS,
                    procedure,
                })
            })
            .map(|procedure| NFS_PROCEDURES[procedure as usize])
            .collect();
        assert!(
            unreached.is_empty(),
            "no answer other than {NOT_REACHED:?} for {unreached:?}: the fuzzer did not \
             reach their bodies"
        );
        let missing: Vec<String> = EXPECTED_ANSWERS
            .iter()
            .map(|&(program, procedure, label)| (Target { program, procedure }, label))
            .filter(|(target, label)| !self.stats.seen(*target, label))
            .map(|(target, label)| format!("{} {label}", target.name()))
            .collect();
        assert!(missing.is_empty(), "answers never seen: {missing:?}");
    }
}
