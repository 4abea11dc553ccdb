//! An io_uring ring per worker, driven from the worker's tokio runtime.
//!
//! Operations (`recv`, `writev`) are queued on the ring and submitted together: a driver
//! task, woken by the first queued operation, submits everything queued since its last
//! turn with one `io_uring_enter`, so connections served in the same scheduler tick share
//! one system call instead of one `recv` and one `writev` each. Completions are announced
//! through an eventfd registered with the ring and watched by tokio, which keeps timers,
//! hyper handoffs and uploads on the same thread as the ring.
//!
//! Buffers are owned by the operation until its completion arrives: a future dropped
//! early (a timeout, a closed connection) leaves them with the ring, cancels the operation
//! and frees them when the kernel is done with them.

use std::any::Any;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use io_uring::{IoUring, Probe, opcode, squeue, types};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Entries of each ring's submission queue.
const RING_ENTRIES: u32 = 256;
/// `user_data` of cancellation requests, whose completions carry nothing.
const CANCEL: u64 = u64::MAX;

/// Why a ring could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// `io_uring_setup` failed (old kernel, seccomp, `kernel.io_uring_disabled`).
    #[error("io_uring_setup: {0}")]
    Setup(#[source] io::Error),
    /// The kernel lacks an operation this engine uses.
    #[error("the kernel's io_uring lacks {0}")]
    Unsupported(&'static str),
    /// The eventfd could not be made or registered.
    #[error("io_uring eventfd: {0}")]
    EventFd(#[source] io::Error),
}

enum Slot {
    Free,
    /// Submitted (or queued); the waker of the future waiting for it.
    Waiting(Option<Waker>),
    /// Completed with this result; the future has not looked yet.
    Done(i32),
    /// The future was dropped: the buffers wait here for the completion.
    Abandoned(#[allow(dead_code)] Box<dyn Any + Send>),
}

struct Inner {
    ring: IoUring,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Entries queued since the last submit.
    queued: usize,
    driver: Option<Waker>,
}

/// One worker's ring.
pub struct Ring {
    inner: Mutex<Inner>,
    event: AsyncFd<OwnedFd>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring").finish_non_exhaustive()
    }
}

impl Ring {
    /// Sets up a ring and spawns its driver on the current tokio runtime.
    pub fn start() -> Result<Arc<Ring>, RingError> {
        // Completions' task work runs when the worker next enters the kernel (it does so
        // at least in epoll_wait) instead of interrupting it (5.19+; plain setup before).
        let ring = IoUring::builder()
            .setup_coop_taskrun()
            .build(RING_ENTRIES)
            .or_else(|_| IoUring::new(RING_ENTRIES))
            .map_err(RingError::Setup)?;
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(RingError::Setup)?;
        for (code, name) in [
            (opcode::Recv::CODE, "IORING_OP_RECV"),
            (opcode::Writev::CODE, "IORING_OP_WRITEV"),
            (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL"),
        ] {
            if !probe.is_supported(code) {
                return Err(RingError::Unsupported(name));
            }
        }
        let event = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::NONBLOCK | rustix::event::EventfdFlags::CLOEXEC,
        )
        .map_err(|e| RingError::EventFd(e.into()))?;
        ring.submitter()
            .register_eventfd(event.as_raw_fd())
            .map_err(RingError::EventFd)?;
        // SAFETY: the AsyncFd owns the eventfd (an OwnedFd), so the descriptor stays open
        // and the same for as long as it is registered.
        let event = unsafe { AsyncFd::register_with_interest(event, Interest::READABLE) }
            .map_err(|e| RingError::EventFd(e.into_parts().1))?;
        let ring = Arc::new(Ring {
            inner: Mutex::new(Inner {
                ring,
                slots: Vec::new(),
                free: Vec::new(),
                queued: 0,
                driver: None,
            }),
            event,
        });
        let driver = Arc::clone(&ring);
        tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_drive(cx)).await });
        Ok(ring)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent state: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Submits what is queued, hands out completions, and waits for the eventfd.
    fn poll_drive(&self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let mut wake = Vec::new();
            {
                let mut inner = self.lock();
                if !inner
                    .driver
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    inner.driver = Some(cx.waker().clone());
                }
                if inner.queued > 0 {
                    match inner.ring.submit() {
                        Ok(_) => inner.queued = 0,
                        // The completion queue is full: drain it below, submit next turn.
                        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                        Err(e) => tracing::warn!(error = %e, "io_uring submit failed"),
                    }
                }
                let done: Vec<(u64, i32)> = inner
                    .ring
                    .completion()
                    .map(|c| (c.user_data(), c.result()))
                    .collect();
                for (key, result) in done {
                    if key == CANCEL {
                        continue;
                    }
                    let key = key as usize;
                    match std::mem::replace(&mut inner.slots[key], Slot::Done(result)) {
                        Slot::Waiting(waker) => wake.extend(waker),
                        Slot::Abandoned(_) | Slot::Free | Slot::Done(_) => {
                            inner.slots[key] = Slot::Free;
                            inner.free.push(key);
                        }
                    }
                }
                if inner.queued > 0 && wake.is_empty() {
                    // Submission was refused for now: try again on the next turn.
                    cx.waker().wake_by_ref();
                }
            }
            for w in wake {
                w.wake();
            }
            match self.event.poll_read_ready(cx) {
                Poll::Ready(Ok(mut guard)) => {
                    let mut counter = [0u8; 8];
                    let _ = rustix::io::read(self.event.get_ref(), &mut counter);
                    guard.clear_ready();
                }
                Poll::Ready(Err(e)) => {
                    tracing::error!(error = %e, "io_uring eventfd failed; the ring stops");
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Queues `entry` (its buffers owned by `keep`) and returns the future of its result.
    fn queue<T: Send + 'static>(self: &Arc<Self>, entry: squeue::Entry, keep: T) -> Op<T> {
        let mut inner = self.lock();
        let key = match inner.free.pop() {
            Some(k) => {
                inner.slots[k] = Slot::Waiting(None);
                k
            }
            None => {
                inner.slots.push(Slot::Waiting(None));
                inner.slots.len() - 1
            }
        };
        inner.push(entry.user_data(key as u64));
        Op {
            ring: Arc::clone(self),
            key,
            keep: Some(keep),
        }
    }

    /// Receives into `buf`'s spare capacity (at least 1 byte of it); returns the buffer with
    /// the bytes appended, and the count (0 at end of stream).
    pub async fn recv(
        self: &Arc<Self>,
        fd: RawFd,
        mut buf: Vec<u8>,
    ) -> (Vec<u8>, io::Result<usize>) {
        if buf.capacity() == buf.len() {
            buf.reserve(4096);
        }
        let spare = buf.capacity() - buf.len();
        // SAFETY of the pointer: the Vec moves into the op and is not touched until the
        // completion; moving a Vec does not move its heap buffer.
        let ptr = unsafe { buf.as_mut_ptr().add(buf.len()) };
        let entry = opcode::Recv::new(types::Fd(fd), ptr, spare as u32).build();
        let (mut buf, result) = self.queue(entry, buf).await;
        match result {
            n if n >= 0 => {
                // SAFETY: the kernel wrote n bytes into the spare capacity.
                unsafe { buf.set_len(buf.len() + n as usize) };
                (buf, Ok(n as usize))
            }
            e => (buf, Err(io::Error::from_raw_os_error(-e))),
        }
    }

    /// Writes all of `bufs` (head, then body), waiting at most `idle` for each step.
    pub async fn write_all(
        self: &Arc<Self>,
        fd: RawFd,
        bufs: WriteBufs,
        idle: Duration,
    ) -> (WriteBufs, io::Result<()>) {
        let total = bufs.len();
        let mut bufs = Box::new(bufs);
        let mut sent = 0;
        while sent < total {
            let (iov, count) = bufs.iovecs(sent);
            bufs.iov = iov;
            let entry = opcode::Writev::new(types::Fd(fd), bufs.iov.as_ptr(), count).build();
            let op = self.queue(entry, bufs);
            let Ok((back, result)) = tokio::time::timeout(idle, op).await else {
                // The buffers stay with the ring until the cancelled write completes.
                return (
                    WriteBufs::new(Vec::new(), WriteBody::None),
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no room to send for the idle timeout",
                    )),
                );
            };
            bufs = back;
            match result {
                n if n > 0 => sent += n as usize,
                0 => {
                    return (
                        *bufs,
                        Err(io::Error::new(io::ErrorKind::WriteZero, "socket closed")),
                    );
                }
                e if -e == libc::EINTR || -e == libc::EAGAIN => {}
                e => return (*bufs, Err(io::Error::from_raw_os_error(-e))),
            }
        }
        (*bufs, Ok(()))
    }
}

impl Inner {
    /// Pushes an entry, submitting first when the queue is full.
    fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every entry's buffers are owned by its slot until its completion.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                break;
            }
            if let Err(e) = self.ring.submit() {
                tracing::warn!(error = %e, "io_uring submit (queue full) failed");
                std::thread::yield_now();
            }
            self.queued = 0;
        }
        self.queued += 1;
        if self.queued == 1
            && let Some(driver) = &self.driver
        {
            driver.wake_by_ref();
        }
    }
}

/// The future of one queued operation: the buffers it owns, then the kernel's result.
struct Op<T: Send + 'static> {
    ring: Arc<Ring>,
    key: usize,
    keep: Option<T>,
}

impl<T: Send + 'static> Unpin for Op<T> {}

impl<T: Send + 'static> Future for Op<T> {
    type Output = (T, i32);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<(T, i32)> {
        let key = self.key;
        let result = {
            let mut inner = self.ring.lock();
            match &mut inner.slots[key] {
                Slot::Done(r) => {
                    let r = *r;
                    inner.slots[key] = Slot::Free;
                    inner.free.push(key);
                    Some(r)
                }
                Slot::Waiting(w) => {
                    if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        *w = Some(cx.waker().clone());
                    }
                    None
                }
                Slot::Free | Slot::Abandoned(_) => Some(-libc::ECANCELED),
            }
        };
        match result {
            Some(r) => match self.keep.take() {
                Some(keep) => Poll::Ready((keep, r)),
                None => Poll::Pending,
            },
            None => Poll::Pending,
        }
    }
}

impl<T: Send + 'static> Drop for Op<T> {
    fn drop(&mut self) {
        let Some(keep) = self.keep.take() else {
            return;
        };
        let mut inner = self.ring.lock();
        match inner.slots[self.key] {
            Slot::Done(_) => {
                inner.slots[self.key] = Slot::Free;
                inner.free.push(self.key);
            }
            _ => {
                inner.slots[self.key] = Slot::Abandoned(Box::new(keep));
                inner.push(
                    opcode::AsyncCancel::new(self.key as u64)
                        .build()
                        .user_data(CANCEL),
                );
                // Submit now: the caller may close the descriptor next, and a queued entry
                // would then name whatever file takes its number.
                if inner.ring.submit().is_ok() {
                    inner.queued = 0;
                }
            }
        }
    }
}

/// What one `writev` sends: a head and an optional body, with their iovecs.
pub struct WriteBufs {
    /// The response head.
    pub head: Vec<u8>,
    /// The body, if any.
    pub body: WriteBody,
    iov: [libc::iovec; 2],
}

// SAFETY: the iovecs only point into `head` and `body`, which move with them.
unsafe impl Send for WriteBufs {}

/// A body buffer an operation can own.
#[derive(Default)]
pub enum WriteBody {
    /// No body.
    #[default]
    None,
    /// A shared in-memory body.
    Bytes(bytes::Bytes),
    /// A pooled buffer, of which the first `len` bytes are sent.
    Pooled(Vec<u8>, usize),
}

impl WriteBody {
    fn as_slice(&self) -> &[u8] {
        match self {
            WriteBody::None => &[],
            WriteBody::Bytes(b) => b,
            WriteBody::Pooled(v, len) => &v[..*len],
        }
    }
}

impl WriteBufs {
    /// A head and a body to send.
    pub fn new(head: Vec<u8>, body: WriteBody) -> Self {
        Self {
            head,
            body,
            iov: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; 2],
        }
    }

    fn len(&self) -> usize {
        self.head.len() + self.body.as_slice().len()
    }

    /// The iovecs of what is left after `sent` bytes.
    fn iovecs(&self, sent: usize) -> ([libc::iovec; 2], u32) {
        let parts = [self.head.as_slice(), self.body.as_slice()];
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 2];
        let (mut skip, mut n) = (sent, 0);
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            let rest = &part[skip..];
            skip = 0;
            iov[n] = libc::iovec {
                iov_base: rest.as_ptr() as *mut libc::c_void,
                iov_len: rest.len(),
            };
            n += 1;
        }
        (iov, n as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iovecs_skip_what_was_sent() {
        let bufs = WriteBufs::new(b"head".to_vec(), WriteBody::Bytes("body!".into()));
        assert_eq!(bufs.len(), 9);
        let (iov, n) = bufs.iovecs(0);
        assert_eq!((n, iov[0].iov_len, iov[1].iov_len), (2, 4, 5));
        let (iov, n) = bufs.iovecs(6);
        assert_eq!((n, iov[0].iov_len), (1, 3));
        let (_, n) = bufs.iovecs(9);
        assert_eq!(n, 0);
        let pooled = WriteBufs::new(Vec::new(), WriteBody::Pooled(vec![0; 16], 10));
        let (iov, n) = pooled.iovecs(0);
        assert_eq!((n, iov[0].iov_len), (1, 10));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn recv_and_writev_move_bytes_over_a_socket_pair() {
        let ring = match Ring::start() {
            Ok(r) => r,
            Err(e) => panic!("io_uring is required on the test machine: {e}"),
        };
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let bufs = WriteBufs::new(b"hello ".to_vec(), WriteBody::Bytes("world".into()));
        let (_, sent) = ring
            .write_all(a.as_raw_fd(), bufs, Duration::from_secs(5))
            .await;
        sent.expect("writev");
        let mut got = Vec::new();
        while got.len() < 11 {
            let (buf, n) = ring.recv(b.as_raw_fd(), got).await;
            got = buf;
            assert!(n.expect("recv") > 0);
        }
        assert_eq!(got, b"hello world");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_recv_is_cancelled_and_the_ring_goes_on() {
        let ring = Ring::start().expect("io_uring");
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        // Nothing arrives: the timeout drops the future with the buffer in the kernel's hands.
        let pending = tokio::time::timeout(
            Duration::from_millis(50),
            ring.recv(b.as_raw_fd(), Vec::with_capacity(64)),
        )
        .await;
        assert!(pending.is_err());
        let bufs = WriteBufs::new(b"after".to_vec(), WriteBody::None);
        let (_, sent) = ring
            .write_all(a.as_raw_fd(), bufs, Duration::from_secs(5))
            .await;
        sent.expect("writev");
        let (buf, n) = ring.recv(b.as_raw_fd(), Vec::with_capacity(64)).await;
        assert_eq!(n.expect("recv"), 5);
        assert_eq!(buf, b"after");
        let inner = ring.lock();
        assert!(
            inner.slots.iter().all(|s| matches!(s, Slot::Free)),
            "the cancelled recv's slot was not freed"
        );
    }
}
