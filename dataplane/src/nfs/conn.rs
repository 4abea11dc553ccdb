//! One NFS connection: a reader thread that parses records and runs requests in order, and a
//! writer thread fed through a bounded queue. Sends are serialized by one lock on the
//! socket's sending side, so replies never interleave, and kept in order. When nothing is
//! queued the reader writes a reply itself (no thread hand-off per GETATTR or per READ of a
//! client that waits for each answer); a READ reply (header, `sendfile`, pad) goes to the
//! writer when the client has already pipelined more requests, so they are decoded while the
//! data goes out; anything behind a queued reply is queued too. A client that stops
//! reading stalls only its own connection.
//!
//! READ data goes out as header (`MSG_MORE`), `sendfile` of the file range, then the XDR
//! pad. A `sendfile` that comes up short (the file shrank after the header promised `count`
//! bytes) closes the connection: the client retransmits on a new one.

use std::fs::File;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use rustix::net::SendFlags;

use super::Exporter;
use super::record::{RecordError, read_record};
use crate::io::{FallbackReason, Transfer, TransferPath, is_unsupported};

/// Record buffer a connection keeps between requests.
const RECORD_KEEP: usize = 64 * 1024;

/// Replies queued per connection before the reader stops taking requests.
pub const REPLY_QUEUE: usize = 16;

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
}

/// The sending side of a connection.
struct Sending {
    socket: Mutex<TcpStream>,
    /// Replies queued for the writer thread and not fully sent yet.
    pending: AtomicUsize,
}

impl Sending {
    fn send(&self, exporter: &Exporter, reply: Outgoing) -> io::Result<()> {
        let mut socket = self
            .socket
            .lock()
            .map_err(|_| io::Error::other("socket lock poisoned"))?;
        match reply {
            Outgoing::Bytes(bytes) => socket.write_all(&bytes),
            Outgoing::Read {
                head,
                file,
                offset,
                count,
                pad,
            } => send_read(exporter, &mut socket, &head, &file, offset, count, pad),
        }
    }
}

/// Longest wait for room in the socket to send a reply.
pub const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Serves one accepted connection until the peer closes it or breaks the protocol.
pub fn serve(exporter: Arc<Exporter>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    // A client that stops reading its replies would hold the writer thread (and with the
    // queue full, the reader) for good: a send that cannot move for this long ends the
    // connection. Reads wait without limit: an idle kernel client keeps its connection.
    let _ = stream.set_write_timeout(Some(SEND_TIMEOUT));
    let writer_stream = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cannot clone the NFS socket");
            return;
        }
    };
    let sending = Arc::new(Sending {
        socket: Mutex::new(writer_stream),
        pending: AtomicUsize::new(0),
    });
    let (queue, replies) = sync_channel::<Outgoing>(REPLY_QUEUE);
    let (writer_exporter, writer_sending) = (Arc::clone(&exporter), Arc::clone(&sending));
    let writer = std::thread::Builder::new()
        .name("zn-nfs-write".into())
        .spawn(move || write_replies(&writer_exporter, &writer_sending, replies));
    if writer.is_err() {
        return;
    }
    read_requests(&exporter, stream, peer, &sending, queue);
    if let Ok(writer) = writer {
        let _ = writer.join();
    }
}

fn read_requests(
    exporter: &Exporter,
    mut stream: TcpStream,
    peer: SocketAddr,
    sending: &Sending,
    queue: SyncSender<Outgoing>,
) {
    let grant = exporter.grant(peer.ip());
    let mut record = Vec::with_capacity(RECORD_KEEP);
    loop {
        match read_record(&mut stream, &mut record) {
            Ok(()) => {}
            Err(RecordError::Closed) => break,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing NFS connection");
                break;
            }
        }
        let reply = exporter.handle(&record, grant);
        // A 1 MiB WRITE grows the buffer; idle connections should not each keep that much.
        if record.capacity() > RECORD_KEEP {
            record = Vec::with_capacity(RECORD_KEEP);
        }
        let reply = match reply {
            super::Outcome::Reply(reply) => reply,
            super::Outcome::Skip => continue,
            super::Outcome::Close => {
                tracing::warn!(%peer, "undecodable RPC record; closing NFS connection");
                break;
            }
        };
        // The writer decrements `pending` only once a reply is fully sent: zero means every
        // earlier reply is out, so writing this one now keeps the order.
        // A READ is handed to the writer only when the client already pipelined more
        // requests: then they are decoded while the data goes out.
        let overlap = matches!(reply, Outgoing::Read { .. }) && more_requests_waiting(&stream);
        if !overlap && sending.pending.load(Ordering::Acquire) == 0 {
            if let Err(e) = sending.send(exporter, reply) {
                tracing::debug!(%peer, error = %e, "NFS reply not sent; closing the connection");
                break;
            }
            continue;
        }
        sending.pending.fetch_add(1, Ordering::AcqRel);
        if queue.send(reply).is_err() {
            break;
        }
    }
    drop(queue);
    let _ = stream.shutdown(Shutdown::Read);
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
    for reply in replies {
        let sent = sending.send(exporter, reply);
        sending.pending.fetch_sub(1, Ordering::AcqRel);
        if let Err(e) = sent {
            tracing::debug!(error = %e, "NFS reply not sent; closing the connection");
            break;
        }
    }
    if let Ok(socket) = sending.socket.lock() {
        let _ = socket.shutdown(Shutdown::Both);
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
                exporter.app.metrics.record_transfer("nfs", &transfer);
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
                let copied = copy_range(stream, file, position, end)?;
                transfer.fallback_time = started.elapsed();
                transfer.push(
                    TransferPath::Copy,
                    copied,
                    Some(FallbackReason::SendfileUnsupported),
                );
                position = end;
            }
            Err(e) => {
                exporter.app.metrics.record_transfer("nfs", &transfer);
                return Err(e.into());
            }
        }
    }
    exporter.app.metrics.record_transfer("nfs", &transfer);
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
