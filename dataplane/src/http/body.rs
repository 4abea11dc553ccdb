//! The response body type of the hyper service.
//!
//! File regions are read with `pread` on the blocking pool, one chunk at a time, so a slow
//! client holds at most one chunk in memory and never blocks the reactor on a cold page.

use std::fs::File;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;

use crate::budget::{BufferBudget, budgeted_bytes};

type PermitFuture = Pin<Box<dyn Future<Output = OwnedSemaphorePermit> + Send>>;

/// Bytes read per `pread` when streaming a file through hyper.
const CHUNK: u64 = 256 * 1024;

/// A response body: nothing, one buffer, or a region of a file.
#[derive(Debug)]
pub enum Body {
    /// No bytes.
    Empty,
    /// One buffer, taken on the first poll.
    Full(Option<Bytes>),
    /// A file region.
    File(FileBody),
}

impl Body {
    /// A body of one buffer.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Body::Full(Some(bytes.into()))
    }
}

/// Streams `len` bytes of `file` from `offset`, counting them in `counter`. Each chunk
/// holds bytes of the shared [`BufferBudget`] until hyper has written it.
pub struct FileBody {
    file: Arc<File>,
    offset: u64,
    remaining: u64,
    budget: BufferBudget,
    permit: Option<PermitFuture>,
    pending: Option<JoinHandle<io::Result<Bytes>>>,
    copy_counter: Counter,
    mmap_counter: Counter,
    map_min: Option<u64>,
}

impl std::fmt::Debug for FileBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBody")
            .field("offset", &self.offset)
            .field("remaining", &self.remaining)
            .finish()
    }
}

impl FileBody {
    /// A body for `[offset, offset + len)` of `file`.
    pub fn new(
        file: Arc<File>,
        offset: u64,
        len: u64,
        budget: BufferBudget,
        (copy_counter, mmap_counter): (Counter, Counter),
        map_min: Option<u64>,
    ) -> Self {
        Self {
            file,
            offset,
            remaining: len,
            budget,
            permit: None,
            pending: None,
            copy_counter,
            mmap_counter,
            map_min,
        }
    }

    /// Maps the whole region as one frame, when allowed and large enough. hyper then writes
    /// straight from the page cache mapping, without a `pread` copy.
    fn try_map(&mut self) -> Option<Bytes> {
        let min = self.map_min.take()?;
        if self.remaining < min.max(1) {
            return None;
        }
        // SAFETY: a mapping turns into SIGBUS if the file is truncated while mapped. Only
        // read-only shares map (the API never changes their files; see the README's note
        // on changing files behind a read-only share).
        let map = unsafe { memmap2::Mmap::map(&*self.file) }.ok()?;
        let end = usize::try_from(self.offset + self.remaining).ok()?;
        let start = usize::try_from(self.offset).ok()?;
        if map.len() < end {
            return None;
        }
        let _ = map.advise(memmap2::Advice::Sequential);
        let bytes = Bytes::from_owner(map).slice(start..end);
        self.mmap_counter.inc_by(self.remaining);
        self.offset += self.remaining;
        self.remaining = 0;
        Some(bytes)
    }

    /// The file region this body would stream, for executors that send it themselves.
    pub fn into_region(self) -> (Arc<File>, u64, u64) {
        (self.file, self.offset, self.remaining)
    }

    fn read_chunk(
        file: Arc<File>,
        offset: u64,
        want: usize,
        permit: OwnedSemaphorePermit,
    ) -> io::Result<Bytes> {
        let mut buf = BytesMut::zeroed(want);
        let filled = crate::io::small::pread_into(&file, offset, &mut buf)?;
        buf.truncate(filled);
        Ok(budgeted_bytes(buf, permit))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::File(body) => body.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(bytes) => bytes.is_none(),
            Body::File(body) => body.remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::File(body) => SizeHint::with_exact(body.remaining),
        }
    }
}

impl FileBody {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.pending.is_none() {
            if self.remaining == 0 {
                return Poll::Ready(None);
            }
            if let Some(mapped) = self.try_map() {
                return Poll::Ready(Some(Ok(Frame::data(mapped))));
            }
            let want = self.remaining.min(CHUNK) as usize;
            let permit = self.permit.get_or_insert_with(|| {
                let budget = self.budget.clone();
                Box::pin(async move { budget.acquire(want).await })
            });
            let permit = ready!(permit.as_mut().poll(cx));
            self.permit = None;
            let (file, offset) = (Arc::clone(&self.file), self.offset);
            self.pending = Some(tokio::task::spawn_blocking(move || {
                Self::read_chunk(file, offset, want, permit)
            }));
        }
        let Some(pending) = self.pending.as_mut() else {
            return Poll::Ready(None);
        };
        let result = ready!(Pin::new(pending).poll(cx));
        self.pending = None;
        let chunk = match result {
            Ok(Ok(chunk)) => chunk,
            Ok(Err(e)) => return Poll::Ready(Some(Err(e))),
            Err(join) => return Poll::Ready(Some(Err(io::Error::other(join)))),
        };
        if chunk.is_empty() {
            // The file shrank after Content-Length was sent: abort the response (the
            // connection closes) rather than send a short body.
            self.remaining = 0;
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file truncated while it was being sent",
            ))));
        }
        let n = chunk.len() as u64;
        self.offset += n;
        self.remaining -= n.min(self.remaining);
        self.copy_counter.inc_by(n);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
}
