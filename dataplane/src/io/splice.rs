//! Socket → pipe → file with `splice(2)`, for uploads.
//!
//! A pipe costs two fds and counts against `pipe-user-pages-soft`, so pipes are pooled and
//! reused; one is taken per upload and returned only when empty. The socket → pipe leg runs
//! on the reactor (non-blocking, through tokio's readiness); the pipe → file leg may block on
//! disk writeback and runs on the blocking pool, one pipe-full at a time.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use rustix::pipe::{PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Requested pipe capacity (`F_SETPIPE_SZ`); the default 64 KiB is kept if refused.
pub const PIPE_SIZE: usize = 1 << 20;

/// A pipe: read and write ends, and its capacity.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

/// A bounded pool of pipes.
#[derive(Debug)]
pub struct PipePool {
    max_pooled: usize,
    free: Mutex<Vec<Pipe>>,
}

impl PipePool {
    /// A pool keeping at most `max_pooled` idle pipes.
    pub fn new(max_pooled: usize) -> Arc<Self> {
        Arc::new(Self {
            max_pooled,
            free: Mutex::new(Vec::new()),
        })
    }

    /// Takes an idle pipe or creates one.
    pub fn take(self: &Arc<Self>) -> io::Result<PooledPipe> {
        let pooled = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let pipe = match pooled {
            Some(pipe) => pipe,
            None => {
                let (read, write) =
                    rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
                let capacity = rustix::pipe::fcntl_setpipe_size(&write, PIPE_SIZE)
                    .or_else(|_| rustix::pipe::fcntl_getpipe_size(&write))?;
                Pipe {
                    read,
                    write,
                    capacity,
                }
            }
        };
        Ok(PooledPipe {
            pipe: Some(Arc::new(pipe)),
            pool: Arc::clone(self),
            clean: true,
        })
    }
}

/// A pipe on loan; back to the pool on drop if it was left empty.
#[derive(Debug)]
pub struct PooledPipe {
    pipe: Option<Arc<Pipe>>,
    pool: Arc<PipePool>,
    clean: bool,
}

impl Drop for PooledPipe {
    fn drop(&mut self) {
        let Some(pipe) = self.pipe.take().and_then(|p| Arc::try_unwrap(p).ok()) else {
            return;
        };
        if self.clean {
            let mut free = self.pool.free.lock().unwrap_or_else(|e| e.into_inner());
            if free.len() < self.pool.max_pooled {
                free.push(pipe);
            }
        }
    }
}

/// Moves exactly `len` bytes from `stream` into `file` at `offset` through `pipe`.
/// Fails with `UnexpectedEof` if the peer closes early, `TimedOut` if it sends nothing for
/// `idle`.
pub async fn socket_to_file(
    stream: &TcpStream,
    file: &Arc<File>,
    offset: u64,
    len: u64,
    mut pipe: PooledPipe,
    idle: std::time::Duration,
) -> io::Result<u64> {
    let Some(shared) = pipe.pipe.clone() else {
        return Err(io::Error::other("pipe already returned"));
    };
    // Until proven empty again, a failure leaves bytes in the pipe: do not reuse it.
    pipe.clean = false;
    let mut moved = 0u64;
    while moved < len {
        let room = (len - moved).min(shared.capacity as u64) as usize;
        let flags = SpliceFlags::NONBLOCK | SpliceFlags::MOVE;
        let mut in_pipe = super::idle::within(
            idle,
            stream.async_io(Interest::READABLE, || {
                rustix::pipe::splice(stream, None, &shared.write, None, room, flags)
                    .map_err(io::Error::from)
            }),
        )
        .await?;
        if in_pipe == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "client closed the upload early",
            ));
        }
        // Take what else is already there without waiting, to drain full pipes.
        while in_pipe < room {
            match stream.try_io(Interest::READABLE, || {
                rustix::pipe::splice(stream, None, &shared.write, None, room - in_pipe, flags)
                    .map_err(io::Error::from)
            }) {
                Ok(0) => break,
                Ok(n) => in_pipe += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        let (p, f, at) = (Arc::clone(&shared), Arc::clone(file), offset + moved);
        tokio::task::spawn_blocking(move || drain_pipe(&p, &f, at, in_pipe))
            .await
            .map_err(io::Error::other)??;
        moved += in_pipe as u64;
    }
    pipe.clean = true;
    Ok(moved)
}

/// Writes `count` bytes from the pipe into the file at `offset` (blocking).
fn drain_pipe(pipe: &Pipe, file: &File, mut offset: u64, mut count: usize) -> io::Result<()> {
    while count > 0 {
        let n = rustix::pipe::splice(
            &pipe.read,
            None,
            file,
            Some(&mut offset),
            count,
            SpliceFlags::MOVE,
        )?;
        if n == 0 {
            return Err(io::Error::other("pipe drained early"));
        }
        count -= n;
    }
    Ok(())
}
