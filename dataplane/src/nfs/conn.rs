//! One NFS connection: a reader thread that reads records and hands each to the worker pool
//! ([`super::pool`]), and a writer thread for replies that cannot go out at once.
//!
//! Requests of one connection run concurrently, and each reply is sent as soon as its
//! request is done, in any order (RPC matches replies to calls by xid): a COMMIT's `fsync`
//! never holds back the READs behind it. A client that waits for each reply (nothing else
//! in flight, no more bytes sent) has its quick calls (GETATTR, LOOKUP, READ, an UNSTABLE
//! WRITE, a READDIR page...) run by the reader itself, READ data included: no thread
//! hand-off per call. A worker sends a small reply itself when no other
//! reply is waiting and the socket takes it without blocking; otherwise (a full socket
//! buffer, other replies queued, READ data to `sendfile`) the reply goes to the writer, so
//! a client that stops reading stalls its own writer and, once its in-flight bound is
//! reached, its own reader, never a worker. Every reply is written whole under one lock on
//! the socket's sending side, so replies never interleave.
//!
//! READ data goes out as header (`MSG_MORE`), `sendfile` of the file range, then the XDR
//! pad. A `sendfile` that comes up short (the file shrank after the header promised `count`
//! bytes) closes the connection once the replies already made are sent: the client
//! retransmits on a new one, and the duplicate request cache answers retransmitted
//! non-idempotent calls. One that fails with EIO does the same and marks the file (see
//! [`super::failed_reads`]), so the retransmitted READ gets NFS3ERR_IO.

use std::fs::File;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use rustix::net::SendFlags;

use super::Exporter;
use super::pool::{InFlight, WorkerPool};
use super::record::{RecordError, read_record};
use crate::io::{FallbackReason, Transfer, TransferPath, is_unsupported};

/// A reply ready to send.
pub enum Outgoing {
    /// A whole record.
    Bytes(Vec<u8>),
    /// A READ reply: `head` (record mark to data length), then `count` bytes of `file` from
    /// `offset`, then `pad` zero bytes.
    Read {
        /// Reply up to the data.
        head: Vec<u8>,
        /// The file.
        file: Arc<File>,
        /// Data offset.
        offset: u64,
        /// Data length.
        count: usize,
        /// XDR padding after the data.
        pad: usize,
    },
    /// No reply: close the connection once the replies before this are sent.
    Close,
    /// The rest of a reply a worker began to send is in [`Socket::partial`].
    Partial,
}

/// The sending side of a connection, shared by its workers and its writer thread.
struct Sending {
    socket: Mutex<Socket>,
    /// Replies (and partial-send markers) queued for the writer and not fully sent yet.
    queued: AtomicUsize,
    /// The writer's queue (its length is bounded by the connection's in-flight bound).
    queue: Mutex<Option<Sender<Outgoing>>>,
    in_flight: InFlight,
}

/// The socket's sending side.
struct Socket {
    stream: TcpStream,
    /// The rest of a reply a worker began to send: goes out before anything else.
    partial: Option<Vec<u8>>,
}

impl Sending {
    /// Sends `reply` now when the socket is free, nothing is queued and it takes the whole
    /// reply without blocking; otherwise the writer sends it (or the rest of it). A worker
    /// never waits for the socket: only the writer makes blocking sends.
    fn deliver(&self, reply: Outgoing) {
        let reply = match (reply, self.socket.try_lock()) {
            (Outgoing::Bytes(bytes), Ok(mut socket)) if self.nothing_pending(&socket) => {
                match send_without_blocking(&socket.stream, &bytes) {
                    Ok(sent) if sent == bytes.len() => {
                        drop(socket);
                        self.in_flight.release();
                        return;
                    }
                    Ok(sent) => {
                        // Replies queued by others meanwhile must not come between the two
                        // halves: the writer sends `partial` before anything it dequeues.
                        socket.partial = Some(bytes[sent..].to_vec());
                        Outgoing::Partial
                    }
                    Err(_) => {
                        // Part of the reply may be out: nothing may follow it.
                        let _ = socket.stream.shutdown(Shutdown::Both);
                        Outgoing::Close
                    }
                }
            }
            (reply, _) => reply,
        };
        self.queued.fetch_add(1, Ordering::AcqRel);
        let queued = self
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|queue| queue.send(reply).is_ok());
        if !queued {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.in_flight.release();
        }
    }

    /// [`Sending::deliver`] from the reader thread, which may block on the socket (only its
    /// own connection waits): a READ's header, `sendfile` and pad go out from here when
    /// nothing else is queued.
    fn deliver_inline(&self, exporter: &Exporter, reply: Outgoing) {
        let reply = match (reply, self.socket.try_lock()) {
            (reply @ Outgoing::Read { .. }, Ok(mut socket)) if self.nothing_pending(&socket) => {
                if let Err(e) = write_reply(exporter, &mut socket, reply) {
                    tracing::debug!(error = %e, "NFS reply not sent; closing the connection");
                    let _ = socket.stream.shutdown(Shutdown::Both);
                }
                drop(socket);
                self.in_flight.release();
                return;
            }
            (reply, _) => reply,
        };
        self.deliver(reply);
    }

    /// Whether no reply is queued or half sent: one may go out now, whole.
    fn nothing_pending(&self, socket: &Socket) -> bool {
        socket.partial.is_none() && self.queued.load(Ordering::Acquire) == 0
    }

    /// A request that makes no reply gives its place back.
    fn no_reply(&self) {
        self.in_flight.release();
    }
}

/// Sends what the socket takes without waiting (`MSG_DONTWAIT`); the count sent.
fn send_without_blocking(stream: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < bytes.len() {
        match rustix::net::send(
            stream,
            &bytes[sent..],
            SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
        ) {
            Ok(n) => sent += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(sent)
}

/// Idle time before the first keepalive probe of an NFS connection.
pub const KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Longest wait for room in the socket to send a reply.
pub const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// How a connection runs its requests.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The shared worker pool.
    pub pool: Arc<WorkerPool>,
    /// Most requests of one connection between "record read" and "reply sent".
    pub per_connection: usize,
}

/// Serves one accepted connection until the peer closes it or breaks the protocol.
pub fn serve(exporter: Arc<Exporter>, stream: TcpStream, peer: SocketAddr, limits: &Limits) {
    let _ = stream.set_nodelay(true);
    // An idle kernel client keeps its connection for good, so reads wait without limit; a
    // client that vanished (node gone, no FIN) is found by keepalive probes within about
    // two minutes, and its threads and connection slot are freed.
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(std::time::Duration::from_secs(10))
        .with_retries(6);
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    // A client that stops reading its replies would hold the writer thread for good: a send
    // that cannot move for this long ends the connection. Reads wait without limit: an
    // idle kernel client keeps its connection.
    let _ = stream.set_write_timeout(Some(SEND_TIMEOUT));
    let writer_stream = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cannot clone the NFS socket");
            return;
        }
    };
    let (queue, replies) = channel::<Outgoing>();
    let sending = Arc::new(Sending {
        socket: Mutex::new(Socket {
            stream: writer_stream,
            partial: None,
        }),
        queued: AtomicUsize::new(0),
        queue: Mutex::new(Some(queue)),
        in_flight: InFlight::new(limits.per_connection),
    });
    let (writer_exporter, writer_sending) = (Arc::clone(&exporter), Arc::clone(&sending));
    let writer = std::thread::Builder::new()
        .name("zn-nfs-write".into())
        .spawn(move || write_replies(&writer_exporter, &writer_sending, replies));
    if writer.is_err() {
        return;
    }
    read_requests(&exporter, stream, peer, &sending, &limits.pool);
    // Every request read is answered (a client may half-close after its last call), then
    // the writer ends. Joined, so the connection's slot under `--nfs-max-connections` is
    // held until both threads are gone.
    sending.in_flight.wait_idle();
    sending
        .queue
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Ok(writer) = writer {
        let _ = writer.join();
    }
}

fn read_requests(
    exporter: &Arc<Exporter>,
    mut stream: TcpStream,
    peer: SocketAddr,
    sending: &Arc<Sending>,
    pool: &WorkerPool,
) {
    let grant = exporter.grant(peer.ip());
    loop {
        // Waits while this connection has its most requests in flight: the client's further
        // records wait in the socket (TCP back-pressure), not in memory.
        sending.in_flight.acquire();
        let mut record = Vec::new();
        match read_record(&mut stream, &mut record) {
            Ok(()) => {}
            Err(RecordError::Closed) => {
                sending.no_reply();
                break;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing NFS connection");
                sending.no_reply();
                break;
            }
        }
        exporter.metrics.nfs_in_flight(1);
        // A client that waits for each reply (nothing else in flight, nothing more sent)
        // gets a quick call answered by this thread: no hand-off to the pool and back.
        // The record is parsed once for the check and the run.
        if sending.in_flight.current() == 1
            && let Ok(call) = super::rpc::parse_call(&record)
            && is_quick(exporter, &call)
            && !more_requests_waiting(&stream)
        {
            run_request(exporter, sending, peer, true, || {
                exporter.handle_call(call, grant, peer.ip())
            });
            continue;
        }
        let (job_exporter, job_sending) = (Arc::clone(exporter), Arc::clone(sending));
        let submitted = pool.submit(move || {
            run_request(&job_exporter, &job_sending, peer, false, || {
                job_exporter.handle(&record, grant, peer.ip())
            });
        });
        if !submitted {
            // Only if every worker is gone: this request gets no reply.
            exporter.metrics.nfs_in_flight(-1);
            sending.no_reply();
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Read);
}

/// Runs one request (`handle`) and hands its reply to the sending side; `inline`: on the
/// reader thread, which may also send a READ's data itself.
fn run_request(
    exporter: &Exporter,
    sending: &Sending,
    peer: SocketAddr,
    inline: bool,
    handle: impl FnOnce() -> super::Outcome,
) {
    // `handle` answers a panicking procedure itself; this catches the rest (parsing, the
    // duplicate cache), so the request's slot is always given back.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(handle))
        .unwrap_or(super::Outcome::Skip);
    exporter.metrics.nfs_in_flight(-1);
    match outcome {
        super::Outcome::Reply(reply) if inline => sending.deliver_inline(exporter, reply),
        super::Outcome::Reply(reply) => sending.deliver(reply),
        super::Outcome::Skip => sending.no_reply(),
        super::Outcome::Close => {
            tracing::warn!(%peer, "undecodable RPC record; closing NFS connection");
            sending.deliver(Outgoing::Close);
        }
    }
}

/// Whether a call never waits for long (no `fsync`, no folder change, no walk of the
/// share): GETATTR, LOOKUP, ACCESS, READLINK, READ, an UNSTABLE WRITE, a READDIR or
/// READDIRPLUS page (at most 1 MiB of reply), FSSTAT, FSINFO, PATHCONF, NULL, on a handle
/// the index resolves without a walk. Anything else goes to the pool.
fn is_quick(exporter: &Exporter, call: &super::rpc::Call<'_>) -> bool {
    if call.program != super::mount::NFS_PROGRAM {
        return false;
    }
    if call.procedure == 0 {
        return true;
    }
    // Every other quick call starts with a file handle.
    let mut args = call.args.clone();
    let Ok(handle) = args.opaque(64) else {
        return false;
    };
    if !exporter.resolves_without_walk(handle) {
        return false;
    }
    match call.procedure {
        1 | 3 | 4 | 5 | 6 | 16..=20 => true,
        // WRITE3args: file handle, offset, count, stable_how (0: UNSTABLE).
        7 => args.u64().is_ok() && args.u32().is_ok() && args.u32().is_ok_and(|stable| stable == 0),
        _ => false,
    }
}

/// Whether request bytes are already waiting on the socket (records are read straight from
/// the socket, unbuffered, so its receive queue is exactly what is left).
fn more_requests_waiting(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        rustix::net::recv(stream, &mut byte[..], rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT),
        Ok((n, _)) if n > 0
    )
}

fn write_replies(exporter: &Exporter, sending: &Sending, replies: Receiver<Outgoing>) {
    let mut open = true;
    for reply in replies {
        let mut socket = sending.socket.lock().unwrap_or_else(|e| e.into_inner());
        if open && let Err(e) = write_reply(exporter, &mut socket, reply) {
            tracing::debug!(error = %e, "NFS reply not sent; closing the connection");
            // The reader's blocking read ends too; later replies are dropped.
            let _ = socket.stream.shutdown(Shutdown::Both);
            open = false;
        }
        drop(socket);
        sending.queued.fetch_sub(1, Ordering::AcqRel);
        sending.in_flight.release();
    }
    let socket = sending.socket.lock().unwrap_or_else(|e| e.into_inner());
    let _ = socket.stream.shutdown(Shutdown::Both);
}

/// Sends a partly sent reply's rest, then `reply`, blocking (up to [`SEND_TIMEOUT`]).
fn write_reply(exporter: &Exporter, socket: &mut Socket, reply: Outgoing) -> io::Result<()> {
    if let Some(rest) = socket.partial.take() {
        socket.stream.write_all(&rest)?;
    }
    match reply {
        Outgoing::Bytes(bytes) => socket.stream.write_all(&bytes),
        Outgoing::Read {
            head,
            file,
            offset,
            count,
            pad,
        } => send_read(
            exporter,
            &mut socket.stream,
            &head,
            &file,
            offset,
            count,
            pad,
        ),
        Outgoing::Partial => Ok(()),
        Outgoing::Close => Err(io::Error::other("closed by the server")),
    }
}

fn send_all(stream: &TcpStream, mut bytes: &[u8], flags: SendFlags) -> io::Result<()> {
    while !bytes.is_empty() {
        match rustix::net::send(stream, bytes, flags) {
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn send_read(
    exporter: &Exporter,
    stream: &mut TcpStream,
    head: &[u8],
    file: &File,
    offset: u64,
    count: usize,
    pad: usize,
) -> io::Result<()> {
    send_all(stream, head, SendFlags::MORE)?;
    let mut position = offset;
    let end = offset + count as u64;
    let mut transfer = Transfer::default();
    while position < end {
        let want = (end - position) as usize;
        let mut at = position;
        match rustix::fs::sendfile(&*stream, file, Some(&mut at), want) {
            Ok(0) => {
                exporter.metrics.record_transfer("nfs", &transfer);
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank during a READ reply",
                ));
            }
            Ok(n) => {
                transfer.push(TransferPath::Sendfile, n as u64, None);
                position += n as u64;
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) if is_unsupported(&e.into()) => {
                // This file cannot be sent by sendfile: finish with pread + write.
                let started = std::time::Instant::now();
                let copied = copy_range(stream, file, position, end).inspect_err(|e| {
                    if e.raw_os_error() == Some(libc::EIO) {
                        exporter.note_failed_read(file);
                    }
                })?;
                transfer.fallback_time = started.elapsed();
                transfer.push(
                    TransferPath::Copy,
                    copied,
                    Some(FallbackReason::SendfileUnsupported),
                );
                position = end;
            }
            Err(e) => {
                exporter.metrics.record_transfer("nfs", &transfer);
                if e == rustix::io::Errno::IO {
                    exporter.note_failed_read(file);
                }
                return Err(e.into());
            }
        }
    }
    exporter.metrics.record_transfer("nfs", &transfer);
    stream.write_all(&[0u8; 3][..pad])
}

fn copy_range(stream: &mut TcpStream, file: &File, mut position: u64, end: u64) -> io::Result<u64> {
    let start = position;
    let mut buffer = vec![0u8; 256 * 1024];
    while position < end {
        let want = ((end - position) as usize).min(buffer.len());
        let n = crate::io::small::pread_into(file, position, &mut buffer[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank during a READ reply",
            ));
        }
        stream.write_all(&buffer[..n])?;
        position += n as u64;
    }
    Ok(position - start)
}
