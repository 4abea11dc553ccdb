//! Small bodies: one `pread` into a pooled buffer and one `writev` with the response head.

use std::fs::File;
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Reads up to `want` bytes at `offset`, retrying short reads until EOF.
pub fn pread_exact_or_short(file: &File, offset: u64, want: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; want];
    let filled = pread_into(file, offset, &mut buf)?;
    buf.truncate(filled);
    Ok(buf)
}

/// Fills `buf` from `offset` until full or EOF; returns the bytes read.
pub fn pread_into(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A pool of equal-sized buffers, so small responses do not allocate.
#[derive(Debug)]
pub struct BufferPool {
    size: usize,
    max_pooled: usize,
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    /// A pool of `size`-byte buffers, keeping at most `max_pooled` idle ones.
    pub fn new(size: usize, max_pooled: usize) -> Arc<Self> {
        Arc::new(Self {
            size,
            max_pooled,
            free: Mutex::new(Vec::new()),
        })
    }

    /// Takes a buffer (zeroed on first allocation; contents unspecified after).
    pub fn take(&self) -> Vec<u8> {
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| vec![0u8; self.size])
    }

    /// Returns a buffer.
    pub fn give(&self, buf: Vec<u8>) {
        if buf.len() != self.size {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < self.max_pooled {
            free.push(buf);
        }
    }
}

/// Writes `head` then `body` with `writev`, handling partial writes.
/// Fails with `TimedOut` when the socket takes no byte for `idle`.
pub async fn writev_all(
    stream: &TcpStream,
    head: &[u8],
    body: &[u8],
    idle: std::time::Duration,
) -> io::Result<()> {
    let (mut head, mut body) = (head, body);
    while !head.is_empty() || !body.is_empty() {
        let n = super::idle::within(
            idle,
            stream.async_io(Interest::WRITABLE, || {
                rustix::io::writev(stream, &[IoSlice::new(head), IoSlice::new(body)])
                    .map_err(io::Error::from)
            }),
        )
        .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_head = n.min(head.len());
        head = &head[from_head..];
        body = &body[n - from_head..];
    }
    Ok(())
}
