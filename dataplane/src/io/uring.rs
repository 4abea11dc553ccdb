//! An io_uring ring per worker, driven from the worker's tokio runtime.
//!
//! Operations (`recv`, `sendmsg`) are queued on the ring and submitted together: a driver
//! task, woken by the first queued operation, submits everything queued since its last
//! turn with one `io_uring_enter`, so connections served in the same scheduler tick share
//! one system call instead of one `recv` and one `writev` each. Sockets are used with
//! network operations (`recv`, `sendmsg`), which wait for readiness inside the kernel. Completions are announced
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use io_uring::{IoUring, Probe, opcode, squeue, types};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Entries of each ring's submission queue.
const RING_ENTRIES: u32 = 256;
/// Entries of its completion queue: one pending `recv` per connection and their cancels,
/// with room to spare (completions beyond it wait in the kernel, never dropped).
const COMPLETION_ENTRIES: u32 = 16 * 1024;
/// `user_data` of cancellation requests, whose completions carry nothing.
const CANCEL: u64 = u64::MAX;

/// Why a ring could not be set up or is no longer usable.
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
    Abandoned(Box<dyn Any + Send>),
}

struct Inner {
    ring: IoUring,
    /// Each slot with its generation: `user_data` carries both, so a completion or a
    /// cancellation meant for an earlier occupant of a slot never touches the current one.
    slots: Vec<(u32, Slot)>,
    free: Vec<usize>,
    /// Entries queued and not yet taken by the kernel.
    queued: usize,
    driver: Option<Waker>,
}

/// One worker's ring.
pub struct Ring {
    inner: Mutex<Inner>,
    event: AsyncFd<OwnedFd>,
    /// False once the driver stopped: the front end then uses epoll.
    alive: AtomicBool,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring").finish_non_exhaustive()
    }
}

fn user_data(key: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | key as u64
}

impl Ring {
    /// Sets up a ring and spawns its driver on the current tokio runtime.
    pub fn start() -> Result<Arc<Ring>, RingError> {
        // Completions' task work runs when the worker next enters the kernel (it does so at
        // least in epoll_wait, which the task work wakes) instead of interrupting it (5.19+;
        // plain setup before).
        let ring = IoUring::builder()
            .setup_coop_taskrun()
            .setup_cqsize(COMPLETION_ENTRIES)
            .build(RING_ENTRIES)
            .or_else(|_| {
                IoUring::builder()
                    .setup_cqsize(COMPLETION_ENTRIES)
                    .build(RING_ENTRIES)
            })
            .map_err(RingError::Setup)?;
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(RingError::Setup)?;
        for (code, name) in [
            (opcode::Recv::CODE, "IORING_OP_RECV"),
            (opcode::SendMsg::CODE, "IORING_OP_SENDMSG"),
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
            alive: AtomicBool::new(true),
        });
        let driver = Arc::clone(&ring);
        tokio::spawn(async move {
            std::future::poll_fn(|cx| driver.poll_drive(cx)).await;
            driver.alive.store(false, Ordering::Release);
        });
        Ok(ring)
    }

    /// False once the driver stopped; callers then use epoll. Operations queued before
    /// stay pending until their caller's deadline drops them (their buffers then stay with
    /// the ring, as the kernel may still hold them); new ones end at once with ECANCELED.
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent state: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Submits what is queued, hands out completions, and waits for the eventfd.
    fn poll_drive(&self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let wake = {
                let mut inner = self.lock();
                if !inner
                    .driver
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    inner.driver = Some(cx.waker().clone());
                }
                let mut wake = Vec::new();
                if let Err(e) = inner.submit_all(&mut wake) {
                    tracing::error!(error = %e, "io_uring submit failed; the ring stops");
                    return Poll::Ready(());
                }
                inner.reap(&mut wake);
                wake
            };
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

    /// Queues `entry` (its buffers owned by `keep`) and returns the future of its result;
    /// with a stopped ring the future ends at once with ECANCELED.
    fn queue<T: Send + 'static>(self: &Arc<Self>, entry: squeue::Entry, keep: T) -> Op<T> {
        let mut inner = self.lock();
        let key = match inner.free.pop() {
            Some(k) => k,
            None => {
                inner.slots.push((0, Slot::Free));
                inner.slots.len() - 1
            }
        };
        let generation = inner.slots[key].0.wrapping_add(1);
        inner.slots[key] = (generation, Slot::Waiting(None));
        let tagged = user_data(key, generation);
        if !self.alive() {
            inner.slots[key].1 = Slot::Done(-libc::ECANCELED);
        } else {
            let mut wake = Vec::new();
            if inner.push(entry.user_data(tagged), &mut wake).is_err() {
                inner.slots[key].1 = Slot::Done(-libc::ECANCELED);
            }
            drop(inner);
            for w in wake {
                w.wake();
            }
        }
        Op {
            ring: Arc::clone(self),
            key,
            generation,
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
        loop {
            let spare = (buf.capacity() - buf.len()).min(u32::MAX as usize);
            // The pointer stays valid: the Vec moves into the op and is not touched until the
            // completion, and moving a Vec does not move its heap buffer.
            let ptr = buf.spare_capacity_mut().as_mut_ptr().cast::<u8>();
            let entry = opcode::Recv::new(types::Fd(fd), ptr, spare as u32).build();
            let (back, result) = self.queue(entry, buf).await;
            buf = back;
            match result {
                n if n >= 0 => {
                    let n = (n as usize).min(spare);
                    // SAFETY: the kernel wrote n bytes into the spare capacity.
                    unsafe { buf.set_len(buf.len() + n) };
                    return (buf, Ok(n));
                }
                e if -e == libc::EAGAIN || -e == libc::EINTR => continue,
                e => return (buf, Err(io::Error::from_raw_os_error(-e))),
            }
        }
    }

    /// Sends all of `bufs` (head, then body) with `sendmsg`, which waits for room in the
    /// socket as a network operation; fails when it is not all sent within `idle`.
    pub async fn write_all(
        self: &Arc<Self>,
        fd: RawFd,
        bufs: WriteBufs,
        idle: Duration,
    ) -> (WriteBufs, io::Result<()>) {
        let deadline = tokio::time::Instant::now() + idle;
        let total = bufs.len();
        let mut bufs = Box::new(bufs);
        let mut sent = 0;
        while sent < total {
            bufs.aim(sent);
            let entry = opcode::SendMsg::new(types::Fd(fd), &bufs.msg)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build();
            let op = self.queue(entry, bufs);
            let Ok((back, result)) = tokio::time::timeout_at(deadline, op).await else {
                // The buffers stay with the ring until the cancelled send completes.
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
                // Not expected from sendmsg on a ring (it waits), but never spin on it.
                e if -e == libc::EAGAIN || -e == libc::EINTR => tokio::task::yield_now().await,
                e => return (*bufs, Err(io::Error::from_raw_os_error(-e))),
            }
        }
        (*bufs, Ok(()))
    }
}

impl Inner {
    /// Hands queued entries to the kernel. A full completion queue (EBUSY) is drained into
    /// the slots and the submission retried, so nothing queued stays behind.
    fn submit_all(&mut self, wake: &mut Vec<Waker>) -> io::Result<()> {
        while self.queued > 0 || self.ring.submission().cq_overflow() {
            match self.ring.submit() {
                Ok(n) => {
                    self.queued = self.queued.saturating_sub(n);
                    if n == 0 {
                        // Nothing taken (only an overflow flush): look again next turn.
                        break;
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => self.reap(wake),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Moves completions into their slots.
    fn reap(&mut self, wake: &mut Vec<Waker>) {
        let done: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (data, result) in done {
            if data == CANCEL {
                continue;
            }
            let (key, generation) = ((data & 0xffff_ffff) as usize, (data >> 32) as u32);
            let Some((current, slot)) = self.slots.get_mut(key) else {
                continue;
            };
            if *current != generation {
                continue;
            }
            match slot {
                Slot::Waiting(waker) => {
                    wake.extend(waker.take());
                    *slot = Slot::Done(result);
                }
                Slot::Abandoned(_) => {
                    *slot = Slot::Free;
                    self.free.push(key);
                }
                Slot::Free | Slot::Done(_) => {}
            }
        }
    }

    /// Pushes an entry, submitting first when the queue is full; wakes the driver for the
    /// first entry of a batch.
    fn push(&mut self, entry: squeue::Entry, wake: &mut Vec<Waker>) -> io::Result<()> {
        // SAFETY: every entry's buffers are owned by its slot until its completion.
        while unsafe { self.ring.submission().push(&entry) }.is_err() {
            self.submit_all(wake)?;
        }
        self.queued += 1;
        if self.queued == 1
            && let Some(driver) = &self.driver
        {
            driver.wake_by_ref();
        }
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The kernel may still write into abandoned buffers while the ring is torn down:
        // leak them (this happens once, when a worker stops).
        for (_, slot) in self.slots.drain(..) {
            if let Slot::Abandoned(keep) = slot {
                std::mem::forget(keep);
            }
        }
    }
}

/// The future of one queued operation: the buffers it owns, then the kernel's result.
struct Op<T: Send + 'static> {
    ring: Arc<Ring>,
    key: usize,
    generation: u32,
    keep: Option<T>,
}

impl<T: Send + 'static> Unpin for Op<T> {}

impl<T: Send + 'static> Future for Op<T> {
    type Output = (T, i32);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<(T, i32)> {
        if self.keep.is_none() {
            // Already finished: the slot may belong to another operation now.
            return Poll::Pending;
        }
        let (key, generation) = (self.key, self.generation);
        let result = {
            let mut inner = self.ring.lock();
            let inner = &mut *inner;
            match &mut inner.slots[key] {
                (g, _) if *g != generation => Some(-libc::ECANCELED),
                (_, Slot::Done(r)) => {
                    let r = *r;
                    inner.slots[key].1 = Slot::Free;
                    inner.free.push(key);
                    Some(r)
                }
                (_, Slot::Waiting(w)) => {
                    if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        *w = Some(cx.waker().clone());
                    }
                    None
                }
                (_, Slot::Free | Slot::Abandoned(_)) => Some(-libc::ECANCELED),
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
        let mut wake = Vec::new();
        {
            let mut inner = self.ring.lock();
            let inner = &mut *inner;
            let (generation, slot) = &mut inner.slots[self.key];
            if *generation != self.generation {
                return;
            }
            match slot {
                Slot::Waiting(_) => {
                    *slot = Slot::Abandoned(Box::new(keep));
                    let cancel = opcode::AsyncCancel::new(user_data(self.key, self.generation))
                        .build()
                        .user_data(CANCEL);
                    // Submit now, retrying past a full completion queue: the caller may
                    // close the descriptor next, and an entry still queued would then name
                    // whatever file takes its number.
                    let submitted = inner
                        .push(cancel, &mut wake)
                        .and_then(|()| inner.submit_all(&mut wake));
                    if let Err(e) = submitted {
                        tracing::error!(error = %e, "io_uring submit failed while cancelling");
                    }
                }
                Slot::Done(_) | Slot::Free => {
                    *slot = Slot::Free;
                    inner.free.push(self.key);
                }
                Slot::Abandoned(_) => {}
            }
        }
        for w in wake {
            w.wake();
        }
    }
}

/// What one send carries: a head and an optional body, with the iovecs and the message
/// header the kernel reads (boxed by [`Ring::write_all`], so their addresses hold).
pub struct WriteBufs {
    /// The response head.
    pub head: Vec<u8>,
    /// The body, if any.
    pub body: WriteBody,
    iov: [libc::iovec; 2],
    msg: libc::msghdr,
}

// SAFETY: the iovecs and the message header only point into this value's own fields and
// heap buffers, which move with it.
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
            // SAFETY: an all-zero msghdr is a valid empty message.
            msg: unsafe { std::mem::zeroed() },
        }
    }

    /// Points the iovecs and the message header at what is left after `sent` bytes.
    fn aim(&mut self, sent: usize) {
        let (iov, count) = self.iovecs(sent);
        self.iov = iov;
        // SAFETY: as in `new`.
        self.msg = unsafe { std::mem::zeroed() };
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = count as _;
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

    /// CPU time of the calling thread.
    fn thread_cpu() -> Duration {
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage fills the struct it is given.
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        tv(usage.ru_utime) + tv(usage.ru_stime)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_peer_that_stops_reading_costs_no_cpu_and_times_out() {
        let ring = Ring::start().expect("io_uring");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sender = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_silent, _) = listener.accept().unwrap();
        // As tokio's sockets are: non-blocking.
        sender.set_nonblocking(true).unwrap();
        let body = WriteBody::Bytes(bytes::Bytes::from(vec![7u8; 64 << 20]));
        let before = thread_cpu();
        let started = std::time::Instant::now();
        let (_, sent) = ring
            .write_all(
                sender.as_raw_fd(),
                WriteBufs::new(b"head".to_vec(), body),
                Duration::from_millis(400),
            )
            .await;
        let (spent, waited) = (thread_cpu() - before, started.elapsed());
        assert_eq!(sent.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(waited >= Duration::from_millis(400), "{waited:?}");
        // Filling the socket buffers costs a few ms; spinning on EAGAIN would cost ~400.
        assert!(
            spent < Duration::from_millis(150),
            "spent {spent:?} of CPU while blocked"
        );
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
            inner.slots.iter().all(|(_, s)| matches!(s, Slot::Free)),
            "the cancelled recv's slot was not freed"
        );
    }
}
