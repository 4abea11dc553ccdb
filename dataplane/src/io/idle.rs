//! Idle timeouts: a connection that moves no byte for too long is given up.
//!
//! [`within`] bounds one wait for readiness (the zero-copy loops call it around each
//! `async_io`); [`IdleTimeout`] wraps a whole stream for hyper, so responses it writes are
//! bounded the same way. The timer restarts on every byte moved: a slow but moving client
//! is served, a silent one is not. Reads under hyper are not timed here: hyper keeps a read
//! pending while a handler runs (to notice a client leaving), and a long fsync must not look
//! like a silent client; hyper's head timeout and the upload's per-frame timeout bound them.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The error of a wait that passed its idle timeout.
pub fn timed_out(idle: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no byte moved for {} ms", idle.as_millis()),
    )
}

/// Runs `wait` (one readiness wait and its I/O), failing with `TimedOut` after `idle`. The
/// timer is armed only when `wait` does not complete at once, so the common case (the
/// socket has room, the data is there) reads no clock on the data path.
pub async fn within<T>(idle: Duration, wait: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    let mut wait = std::pin::pin!(wait);
    let first = std::future::poll_fn(|cx| Poll::Ready(wait.as_mut().poll(cx))).await;
    if let Poll::Ready(done) = first {
        return done;
    }
    tokio::time::timeout(idle, wait)
        .await
        .unwrap_or_else(|_| Err(timed_out(idle)))
}

/// A stream whose writes fail with `TimedOut` once the peer has taken no byte for `idle`
/// while one was waiting to go.
#[derive(Debug)]
pub struct IdleTimeout<T> {
    inner: T,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
}

impl<T> IdleTimeout<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn progressed(&mut self) {
        let at = Instant::now() + self.idle;
        self.timer.as_mut().reset(at);
    }

    /// After the inner stream said Pending: fails once the timer has run out.
    fn waiting(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(timed_out(self.idle)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn settle<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match polled {
            Poll::Ready(result) => {
                self.progressed();
                Poll::Ready(result)
            }
            Poll::Pending => self.waiting(cx).map(Err),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.settle(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.settle(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.settle(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_times_out_a_slow_one_does_not() {
        let (client, server) = tokio::io::duplex(8);
        let mut server = IdleTimeout::new(server, Duration::from_secs(10));
        let mut client = client;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut byte = [0u8; 8];
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(6)).await;
                let n = client.read(&mut byte).await.unwrap();
                got.extend_from_slice(&byte[..n]);
            }
            // Then it stops reading, with the connection kept open.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(client);
            got
        });
        let mut sent = 0usize;
        let err = loop {
            match server.write(&[b'x'; 8]).await {
                Ok(n) => sent += n,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(
            sent >= 5 * 8,
            "30 s of slow reads all took their bytes: {sent}"
        );
        reader.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_pending_read_never_times_out() {
        let (_client, server) = tokio::io::duplex(8);
        let mut server = IdleTimeout::new(server, Duration::from_secs(1));
        let mut byte = [0u8; 1];
        let waited = tokio::time::timeout(Duration::from_secs(60), server.read(&mut byte)).await;
        assert!(waited.is_err(), "a read waits as long as hyper wants it to");
    }

    #[tokio::test(start_paused = true)]
    async fn within_bounds_one_wait() {
        let never = std::future::pending::<io::Result<()>>();
        let err = within(Duration::from_secs(1), never).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(
            within(Duration::from_secs(1), async { Ok(7) })
                .await
                .unwrap(),
            7
        );
    }
}
