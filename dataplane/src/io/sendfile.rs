//! File → socket with `sendfile(2)`.
//!
//! Rules from `zero-copy.md`: at most 0x7ffff000 bytes a call; partial writes and EAGAIN go
//! through tokio's readiness (`async_io`), never a spin; a 0 return before the end means the
//! file shrank, and since Content-Length is already on the wire the caller must close the
//! connection; EINVAL/ENOSYS/EOPNOTSUPP on the first call continue the same response with
//! `pread` + `write` from the same offset. Ranges whose first page is not in the page cache
//! (probed with `preadv2(RWF_NOWAIT)`) are sent by a blocking-pool thread, like nginx's
//! `aio threads`, so a disk read never stalls the reactor. After each turn of
//! [`TURN_BYTES`] the task yields, so one large download cannot starve other connections.

use std::fs::File;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::io::ReadWriteFlags;
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::idle::within;
use super::{FallbackReason, Transfer, TransferPath, is_unsupported};

/// Largest count one `sendfile` call moves on Linux.
pub const MAX_SENDFILE: u64 = 0x7fff_f000;
/// Bytes sent per turn before yielding to other tasks (nginx's `sendfile_max_chunk`).
pub const TURN_BYTES: u64 = 2 << 20;

/// Why a send stopped.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The file ended before the promised length: close the connection.
    #[error("file truncated during send after {sent} of {expected} bytes")]
    Truncated {
        /// Bytes sent.
        sent: u64,
        /// Bytes promised.
        expected: u64,
    },
    /// The socket or file failed (peer reset, I/O error).
    #[error("send failed after {sent} bytes: {source}")]
    Io {
        /// Bytes sent before the failure.
        sent: u64,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// True when the page at `offset` is in the page cache (a 1-byte `RWF_NOWAIT` read).
pub fn is_hot(file: &File, offset: u64) -> bool {
    let mut byte = [0u8; 1];
    match rustix::io::preadv2(
        file,
        &mut [IoSliceMut::new(&mut byte)],
        offset,
        ReadWriteFlags::NOWAIT,
    ) {
        Ok(_) => true,
        // EAGAIN: not cached. EOPNOTSUPP/EINVAL: the filesystem cannot tell; treat as cold
        // only when it says so, hot otherwise (the common page-cache case).
        Err(e) => e != rustix::io::Errno::AGAIN,
    }
}

/// Sends `len` bytes of `file` from `offset` on `stream`. `socket_dup` lazily holds a
/// duplicate of the socket's fd for blocking-pool sends of cold ranges.
/// A wait for room in the socket longer than `idle` ends the send with `TimedOut`.
pub async fn send_region(
    stream: &TcpStream,
    socket_dup: &mut Option<Arc<OwnedFd>>,
    file: &Arc<File>,
    offset: u64,
    len: u64,
    idle: Duration,
) -> Result<Transfer, SendError> {
    let end = offset + len;
    let mut pos = offset;
    let mut transfer = Transfer::default();
    let mut first_call = true;
    while pos < end {
        let turn_end = end.min(pos + TURN_BYTES);
        let hot = is_hot(file, pos);
        if !hot {
            transfer.page_cache_misses += 1;
        }
        while pos < turn_end {
            let want = (turn_end - pos).min(MAX_SENDFILE) as usize;
            let result = if hot {
                let mut at = pos;
                within(
                    idle,
                    stream.async_io(Interest::WRITABLE, || {
                        rustix::fs::sendfile(stream, file.as_fd(), Some(&mut at), want)
                            .map_err(io::Error::from)
                    }),
                )
                .await
            } else {
                send_cold(stream, socket_dup, file, pos, want, idle).await
            };
            match result {
                Ok(0) => {
                    return Err(SendError::Truncated {
                        sent: pos - offset,
                        expected: len,
                    });
                }
                Ok(n) => {
                    pos += n as u64;
                    first_call = false;
                }
                Err(e) if first_call && is_unsupported(&e) => {
                    transfer.push(TransferPath::Sendfile, pos - offset, None);
                    let started = Instant::now();
                    let copied = copy_region(stream, file, pos, end - pos, idle)
                        .await
                        .map_err(|e| match e {
                            SendError::Truncated { sent, .. } => SendError::Truncated {
                                sent: pos - offset + sent,
                                expected: len,
                            },
                            SendError::Io { sent, source } => SendError::Io {
                                sent: pos - offset + sent,
                                source,
                            },
                        })?;
                    transfer.push(
                        TransferPath::Copy,
                        copied,
                        Some(FallbackReason::SendfileUnsupported),
                    );
                    transfer.fallback_time = started.elapsed();
                    return Ok(transfer);
                }
                Err(source) => {
                    return Err(SendError::Io {
                        sent: pos - offset,
                        source,
                    });
                }
            }
        }
        if pos < end {
            tokio::task::yield_now().await;
        }
    }
    transfer.push(TransferPath::Sendfile, len, None);
    Ok(transfer)
}

/// One `sendfile` call from the blocking pool, for ranges that are not in the page cache.
async fn send_cold(
    stream: &TcpStream,
    socket_dup: &mut Option<Arc<OwnedFd>>,
    file: &Arc<File>,
    pos: u64,
    want: usize,
    idle: Duration,
) -> io::Result<usize> {
    let socket = match socket_dup {
        Some(fd) => Arc::clone(fd),
        None => {
            Arc::clone(socket_dup.insert(Arc::new(rustix::io::fcntl_dupfd_cloexec(stream, 0)?)))
        }
    };
    loop {
        within(idle, stream.writable()).await?;
        let (socket, file) = (Arc::clone(&socket), Arc::clone(file));
        let result = tokio::task::spawn_blocking(move || {
            let mut at = pos;
            rustix::fs::sendfile(&*socket, &*file, Some(&mut at), want)
        })
        .await
        .map_err(io::Error::other)?;
        match result {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::AGAIN) => {
                // The socket buffer is full: clear tokio's readiness so the next
                // `writable()` really waits.
                let _ = stream.try_io(Interest::WRITABLE, || {
                    Err::<(), _>(io::ErrorKind::WouldBlock.into())
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `pread` + `write` of a region, for files that cannot be sent with sendfile. The reads run
/// on the blocking pool; a short read means the file was truncated.
pub async fn copy_region(
    stream: &TcpStream,
    file: &Arc<File>,
    offset: u64,
    len: u64,
    idle: Duration,
) -> Result<u64, SendError> {
    const CHUNK: u64 = 256 * 1024;
    let mut sent = 0u64;
    while sent < len {
        let want = (len - sent).min(CHUNK) as usize;
        let (f, at) = (Arc::clone(file), offset + sent);
        let chunk =
            tokio::task::spawn_blocking(move || super::small::pread_exact_or_short(&f, at, want))
                .await
                .map_err(|e| SendError::Io {
                    sent,
                    source: io::Error::other(e),
                })?
                .map_err(|source| SendError::Io { sent, source })?;
        if chunk.is_empty() {
            return Err(SendError::Truncated {
                sent,
                expected: len,
            });
        }
        write_all(stream, &chunk, idle)
            .await
            .map_err(|source| SendError::Io { sent, source })?;
        sent += chunk.len() as u64;
    }
    Ok(sent)
}

/// Writes all of `buf`, waiting for readiness on EAGAIN, at most `idle` for each wait.
pub async fn write_all(stream: &TcpStream, mut buf: &[u8], idle: Duration) -> io::Result<()> {
    while !buf.is_empty() {
        let n = within(
            idle,
            stream.async_io(Interest::WRITABLE, || {
                rustix::io::write(stream, buf).map_err(io::Error::from)
            }),
        )
        .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    Ok(())
}

/// Sends `head` with `MSG_MORE`, so the kernel coalesces it with the body that follows.
pub async fn send_head_more(stream: &TcpStream, mut head: &[u8], idle: Duration) -> io::Result<()> {
    use rustix::net::SendFlags;
    while !head.is_empty() {
        let n = within(
            idle,
            stream.async_io(Interest::WRITABLE, || {
                rustix::net::send(stream, head, SendFlags::MORE | SendFlags::NOSIGNAL)
                    .map_err(io::Error::from)
            }),
        )
        .await?;
        head = &head[n..];
    }
    Ok(())
}
