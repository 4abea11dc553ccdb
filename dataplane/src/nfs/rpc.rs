//! ONC RPC v2 messages (RFC 5531): parsing a call header with its credential, and encoding
//! accepted and rejected replies. Replies carry an AUTH_NONE verifier.

use super::record::fragment_header;
use super::xdr::{Decoder, Encoder, XdrError};

/// AUTH_NONE.
pub const AUTH_NONE: u32 = 0;
/// AUTH_SYS (AUTH_UNIX).
pub const AUTH_SYS: u32 = 1;
/// Largest credential or verifier body (RFC 5531).
const MAX_AUTH_BODY: usize = 400;

/// An AUTH_SYS credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSys {
    /// Client machine name.
    pub machine: String,
    /// Caller's uid.
    pub uid: u32,
    /// Caller's primary gid.
    pub gid: u32,
    /// Supplementary gids (at most 16).
    pub gids: Vec<u32>,
}

/// The credential of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// AUTH_NONE.
    None,
    /// AUTH_SYS.
    Sys(AuthSys),
    /// Any other flavor (not supported: rejected with AUTH_BADCRED).
    Other(u32),
}

/// A parsed call header; `args` is positioned at the procedure's arguments.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// Transaction id, echoed in the reply.
    pub xid: u32,
    /// Program number.
    pub program: u32,
    /// Program version.
    pub version: u32,
    /// Procedure number.
    pub procedure: u32,
    /// The caller's credential.
    pub credential: Credential,
    /// The procedure arguments.
    pub args: Decoder<'a>,
}

/// Why a record is not a call that can be answered normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Not even an xid and a message type: the connection is closed.
    Garbage,
    /// A reply or an unknown message type where a call was expected: dropped.
    NotACall,
    /// RPC version other than 2: answered with RPC_MISMATCH.
    RpcMismatch(u32),
    /// A malformed credential or verifier: answered with AUTH_BADCRED.
    BadCredential(u32),
}

fn auth_sys(body: &[u8]) -> Result<AuthSys, XdrError> {
    let mut d = Decoder::new(body);
    let _stamp = d.u32()?;
    let mut machine = String::from_utf8_lossy(d.opaque(255)?).into_owned();
    // Invalid bytes become U+FFFD (3 bytes each): cut back to MNTNAMLEN, so DUMP never
    // sends a host name longer than the protocol allows.
    while machine.len() > 255 {
        machine.pop();
    }
    let uid = d.u32()?;
    let gid = d.u32()?;
    let count = d.u32()? as usize;
    if count > 16 {
        return Err(XdrError::TooLong {
            len: count,
            max: 16,
        });
    }
    let gids = (0..count).map(|_| d.u32()).collect::<Result<_, _>>()?;
    Ok(AuthSys {
        machine,
        uid,
        gid,
        gids,
    })
}

/// Parses the call header of `record`.
pub fn parse_call(record: &[u8]) -> Result<Call<'_>, CallError> {
    let mut d = Decoder::new(record);
    let xid = d.u32().map_err(|_| CallError::Garbage)?;
    let kind = d.u32().map_err(|_| CallError::Garbage)?;
    if kind != 0 {
        return Err(CallError::NotACall);
    }
    let rpc_version = d.u32().map_err(|_| CallError::Garbage)?;
    if rpc_version != 2 {
        return Err(CallError::RpcMismatch(xid));
    }
    let header = (|| -> Result<_, XdrError> {
        let program = d.u32()?;
        let version = d.u32()?;
        let procedure = d.u32()?;
        let flavor = d.u32()?;
        let body = d.opaque(MAX_AUTH_BODY)?;
        let credential = match flavor {
            AUTH_NONE => Credential::None,
            AUTH_SYS => Credential::Sys(auth_sys(body)?),
            other => Credential::Other(other),
        };
        let _verifier_flavor = d.u32()?;
        let _verifier = d.opaque(MAX_AUTH_BODY)?;
        Ok((program, version, procedure, credential))
    })();
    let (program, version, procedure, credential) =
        header.map_err(|_| CallError::BadCredential(xid))?;
    Ok(Call {
        xid,
        program,
        version,
        procedure,
        credential,
        args: d,
    })
}

/// Outcome of an accepted call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptStat {
    /// Executed; results follow.
    Success,
    /// Program not served.
    ProgUnavail,
    /// Version not served; the supported range follows.
    ProgMismatch {
        /// Lowest version served.
        low: u32,
        /// Highest version served.
        high: u32,
    },
    /// Procedure not in the program.
    ProcUnavail,
    /// Arguments could not be decoded.
    GarbageArgs,
    /// The server failed.
    SystemErr,
}

/// AUTH_ERROR reasons (RFC 5531 `auth_stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStat {
    /// Bad credential (seal broken, or a flavor this server does not take).
    BadCred = 1,
    /// The flavor is too weak for this procedure (AUTH_NONE where AUTH_SYS is needed).
    TooWeak = 5,
}

/// Starts a reply record: a placeholder record mark (see [`finish`]), then the xid and
/// REPLY.
fn reply_head(xid: u32, capacity: usize) -> Encoder {
    let mut e = Encoder::with_capacity(capacity + 32);
    e.u32(0).u32(xid).u32(1);
    e
}

/// An accepted reply; for [`AcceptStat::Success`] the caller appends the results.
pub fn accepted(xid: u32, stat: AcceptStat, capacity: usize) -> Encoder {
    let mut e = reply_head(xid, capacity);
    e.u32(0).u32(AUTH_NONE).u32(0);
    match stat {
        AcceptStat::Success => e.u32(0),
        AcceptStat::ProgUnavail => e.u32(1),
        AcceptStat::ProgMismatch { low, high } => e.u32(2).u32(low).u32(high),
        AcceptStat::ProcUnavail => e.u32(3),
        AcceptStat::GarbageArgs => e.u32(4),
        AcceptStat::SystemErr => e.u32(5),
    };
    e
}

/// A reply denying an RPC version other than 2.
pub fn rpc_mismatch(xid: u32) -> Encoder {
    let mut e = reply_head(xid, 16);
    e.u32(1).u32(0).u32(2).u32(2);
    e
}

/// A reply denying the credential.
pub fn auth_error(xid: u32, stat: AuthStat) -> Encoder {
    let mut e = reply_head(xid, 16);
    e.u32(1).u32(1).u32(stat as u32);
    e
}

/// Completes a reply whose record is `extra` bytes longer than what `e` holds (data sent
/// separately, e.g. by `sendfile`): writes the record mark, returns the bytes.
pub fn finish(e: Encoder, extra: usize) -> Vec<u8> {
    let mut bytes = e.into_bytes();
    let len = bytes.len() - 4 + extra;
    bytes[..4].copy_from_slice(&fragment_header(true, len));
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes a call header the way clients do.
    pub(crate) fn call(
        xid: u32,
        prog: u32,
        vers: u32,
        proc_: u32,
        cred: Option<(u32, u32)>,
    ) -> Vec<u8> {
        let mut e = Encoder::default();
        e.u32(xid).u32(0).u32(2).u32(prog).u32(vers).u32(proc_);
        match cred {
            None => {
                e.u32(AUTH_NONE).u32(0);
            }
            Some((uid, gid)) => {
                let mut body = Encoder::default();
                body.u32(1)
                    .opaque(b"client")
                    .u32(uid)
                    .u32(gid)
                    .u32(1)
                    .u32(gid);
                e.u32(AUTH_SYS).opaque(&body.into_bytes());
            }
        }
        e.u32(AUTH_NONE).u32(0);
        e.into_bytes()
    }

    #[test]
    fn parses_calls_and_credentials() {
        let bytes = call(9, 100003, 3, 1, Some((1000, 100)));
        let c = parse_call(&bytes).unwrap();
        assert_eq!(
            (c.xid, c.program, c.version, c.procedure),
            (9, 100003, 3, 1)
        );
        match c.credential {
            Credential::Sys(a) => assert_eq!(
                (a.uid, a.gid, a.gids, a.machine.as_str()),
                (1000, 100, vec![100], "client")
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_call(&call(1, 1, 1, 0, None)).unwrap().credential,
            Credential::None
        );
        let mut v3 = call(5, 1, 1, 0, None);
        v3[8..12].copy_from_slice(&3u32.to_be_bytes());
        assert_eq!(parse_call(&v3).unwrap_err(), CallError::RpcMismatch(5));
        let mut reply = call(5, 1, 1, 0, None);
        reply[4..8].copy_from_slice(&1u32.to_be_bytes());
        assert_eq!(parse_call(&reply).unwrap_err(), CallError::NotACall);
        assert_eq!(parse_call(&[0, 0]).unwrap_err(), CallError::Garbage);
        let truncated = &call(6, 1, 1, 0, Some((0, 0)))[..30];
        assert_eq!(
            parse_call(truncated).unwrap_err(),
            CallError::BadCredential(6)
        );
    }

    proptest::proptest! {
        /// Fuzz target of the decoder: any bytes parse or fail cleanly, and a parsed call's
        /// arguments decode (or fail) without panicking either.
        #[test]
        fn any_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            if let Ok(mut c) = parse_call(&bytes) {
                let _ = c.args.opaque(64);
                let _ = c.args.u64();
                let _ = crate::nfs::nfs3::sattr(&mut c.args);
            }
        }

        #[test]
        fn mutated_calls_never_panic(at in 0usize..80, value in proptest::prelude::any::<u8>()) {
            let mut bytes = call(3, 100003, 3, 1, Some((0, 0)));
            let at = at % bytes.len();
            bytes[at] = value;
            let _ = parse_call(&bytes);
        }
    }

    #[test]
    fn replies_have_a_record_mark() {
        let bytes = finish(
            accepted(7, AcceptStat::ProgMismatch { low: 3, high: 3 }, 0),
            0,
        );
        assert_eq!(&bytes[..4], &fragment_header(true, bytes.len() - 4));
        let words: Vec<u32> = bytes[4..]
            .chunks(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(words, vec![7, 1, 0, 0, 0, 2, 3, 3]);
        let denied = finish(auth_error(8, AuthStat::TooWeak), 0);
        assert_eq!(
            &denied[4..],
            &[0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 5]
        );
        // A READ reply's header: data of 100 bytes follows separately.
        assert_eq!(
            &finish(accepted(1, AcceptStat::Success, 0), 100)[..4],
            &fragment_header(true, 24 + 100)
        );
    }
}
