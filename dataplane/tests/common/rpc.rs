//! Raw ONC RPC over TCP for the NFS tests: calls with a chosen credential, records, replies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::{DataplaneChild, spawn_dataplane};

/// The NFS program number.
pub const NFS: u32 = 100_003;
/// The MOUNT program number.
pub const MOUNT: u32 = 100_005;
/// The PORTMAP program number.
pub const PORTMAP: u32 = 100_000;

/// A dataplane child over a new temp share: (child, NFS address, share).
pub fn start() -> (DataplaneChild, SocketAddr, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    let (child, _) = spawn_dataplane(&[], root.path(), &[]);
    let nfs = child.1["nfs"].as_str().unwrap().parse().unwrap();
    (child, nfs, root)
}

/// Credential of a call: AUTH_NONE, AUTH_SYS as root (machine "t", or "h<n>"), AUTH_SYS as
/// a user (uid, gid), or another flavor.
#[derive(Clone, Copy)]
pub enum Cred {
    None,
    Root,
    RootOn(u32),
    User(u32, u32),
    Flavor(u32),
}

/// XDR words.
pub fn words(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

/// One call record: header, credential `cred`, null verifier, `args`.
pub fn call(
    xid: u32,
    rpc_version: u32,
    program: u32,
    version: u32,
    procedure: u32,
    cred: Cred,
    args: &[u8],
) -> Vec<u8> {
    let mut m = words(&[xid, 0, rpc_version, program, version, procedure]);
    match cred {
        Cred::None => m.extend(words(&[0, 0])),
        Cred::Root => {
            // stamp, machine "t" (padded), uid 0, gid 0, no groups
            let body = [words(&[1, 1]), b"t\0\0\0".to_vec(), words(&[0, 0, 0])].concat();
            m.extend(words(&[1, body.len() as u32]));
            m.extend(body);
        }
        Cred::RootOn(host) => {
            let body = [
                words(&[1]),
                opaque(format!("h{host}").as_bytes()),
                words(&[0, 0, 0]),
            ]
            .concat();
            m.extend(words(&[1, body.len() as u32]));
            m.extend(body);
        }
        Cred::User(uid, gid) => {
            let body = [words(&[1, 1]), b"t\0\0\0".to_vec(), words(&[uid, gid, 0])].concat();
            m.extend(words(&[1, body.len() as u32]));
            m.extend(body);
        }
        Cred::Flavor(f) => m.extend(words(&[f, 0])),
    }
    m.extend(words(&[0, 0]));
    m.extend_from_slice(args);
    record(&m)
}

/// `message` as one last-fragment record.
pub fn record(message: &[u8]) -> Vec<u8> {
    [
        (0x8000_0000u32 | message.len() as u32)
            .to_be_bytes()
            .to_vec(),
        message.to_vec(),
    ]
    .concat()
}

/// A connection with a 5 s read timeout.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Sends `bytes` and reads one reply record as words.
pub fn exchange(stream: &mut TcpStream, bytes: &[u8]) -> Vec<u32> {
    stream.write_all(bytes).unwrap();
    let mut mark = [0u8; 4];
    stream.read_exact(&mut mark).unwrap();
    let len = (u32::from_be_bytes(mark) & 0x7fff_ffff) as usize;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).unwrap();
    body.chunks(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Whether the server closed the connection (EOF, or reset).
pub fn closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0) | Err(_))
}

/// Asserts the server answers NFS NULL on a new connection.
pub fn alive(addr: SocketAddr) {
    let mut s = connect(addr);
    let reply = exchange(&mut s, &call(77, 2, NFS, 3, 0, Cred::None, &[]));
    assert_eq!(reply, vec![77, 1, 0, 0, 0, 0], "NFS NULL after the abuse");
}

/// XDR variable-length opaque data.
pub fn opaque(bytes: &[u8]) -> Vec<u8> {
    let mut out = words(&[bytes.len() as u32]);
    out.extend_from_slice(bytes);
    out.resize(out.len() + (4 - bytes.len() % 4) % 4, 0);
    out
}

/// Reads one reply record as raw bytes.
pub fn reply_bytes(stream: &mut TcpStream) -> Vec<u8> {
    let mut mark = [0u8; 4];
    stream.read_exact(&mut mark).unwrap();
    let mut body = vec![0u8; (u32::from_be_bytes(mark) & 0x7fff_ffff) as usize];
    stream.read_exact(&mut body).unwrap();
    body
}

/// Word `index` of a reply.
pub fn word(bytes: &[u8], index: usize) -> u32 {
    u32::from_be_bytes(bytes[index * 4..index * 4 + 4].try_into().unwrap())
}

/// MNT "/" then LOOKUP `name`: the file's handle.
pub fn file_handle(s: &mut TcpStream, name: &[u8]) -> Vec<u8> {
    s.write_all(&call(1, 2, MOUNT, 3, 1, Cred::Root, &opaque(b"/")))
        .unwrap();
    let mnt = reply_bytes(s);
    let root_handle = mnt[32..32 + word(&mnt, 7) as usize].to_vec();
    s.write_all(&call(
        2,
        2,
        NFS,
        3,
        3,
        Cred::Root,
        &[opaque(&root_handle), opaque(name)].concat(),
    ))
    .unwrap();
    let lookup = reply_bytes(s);
    assert_eq!(word(&lookup, 6), 0, "LOOKUP status");
    lookup[32..32 + word(&lookup, 7) as usize].to_vec()
}

/// A reply's bytes as XDR words.
pub fn words_of(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// MNT "/": the root's handle.
pub fn root_handle(s: &mut TcpStream) -> Vec<u8> {
    s.write_all(&call(1, 2, MOUNT, 3, 1, Cred::Root, &opaque(b"/")))
        .unwrap();
    let mnt = reply_bytes(s);
    mnt[32..32 + word(&mnt, 7) as usize].to_vec()
}
