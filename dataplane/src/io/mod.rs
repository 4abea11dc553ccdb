//! The zero-copy engine: how file bytes move between files and sockets.
//!
//! - [`sendfile`]: file → socket with `sendfile(2)`; cold ranges are sent from the blocking
//!   pool so a page-cache miss never stalls the reactor; falls back to `pread` + `write`
//!   from the same offset when the filesystem cannot do sendfile.
//! - [`splice`]: socket → pipe → file with `splice(2)` for uploads, with a pool of pipes.
//! - [`small`]: bodies under a threshold read with one `pread` and sent with the head in one
//!   `writev`.
//!
//! Every transfer reports the path it took and, when it was not a zero-copy path, why
//! ([`FallbackReason`]); the callers turn that into metrics.

pub mod idle;
pub mod sendfile;
pub mod small;
pub mod splice;
pub mod uring;

use std::time::Duration;

/// How bytes moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferPath {
    /// `sendfile(2)`: page cache → socket, no user-space copy.
    Sendfile,
    /// `splice(2)` through a pipe: socket → file, no user-space copy.
    Splice,
    /// A read-only memory mapping handed to the HTTP stack.
    Mmap,
    /// Through a user-space buffer.
    Copy,
}

impl TransferPath {
    /// Position in `metrics::TRANSFER_PATHS`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            TransferPath::Sendfile => "sendfile",
            TransferPath::Splice => "splice",
            TransferPath::Mmap => "mmap",
            TransferPath::Copy => "copy",
        }
    }
}

/// Why bytes or a request did not take the zero-copy front end. A closed set: each value is
/// documented in the README and is a label of `zeronas_zero_copy_fallback_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FallbackReason {
    /// The body is below the `writev` threshold: one `pread` + `writev` beats sendfile.
    SmallBody,
    /// `sendfile` returned EINVAL/ENOSYS/EOPNOTSUPP; finished with `pread` + `write`.
    SendfileUnsupported,
    /// Upload bytes that arrived with the request head, already in user space.
    ReadAhead,
    /// No pipe could be created for `splice`; the upload was copied.
    PipeUnavailable,
    /// The connection spoke HTTP/2 (prior knowledge) and went to hyper.
    Http2,
    /// `Expect: 100-continue`: handed to hyper.
    ExpectContinue,
    /// A chunked request body: handed to hyper.
    ChunkedBody,
    /// A request body on a method the front end does not stream: handed to hyper.
    RequestBody,
    /// A feature the front end does not implement (Upgrade, odd targets or versions).
    Unsupported,
    /// `--io-engine io_uring` was asked for and the ring could not be set up (old kernel,
    /// seccomp, `kernel.io_uring_disabled`): the worker uses epoll. Counted once per worker.
    IoUringUnavailable,
    /// An NFS READ of a file whose `sendfile` failed with an I/O error: the data is read
    /// into the reply first, so a failing disk answers NFS3ERR_IO.
    ReadError,
    /// SFTP: SSH encrypts every byte in user space, so neither sendfile nor splice can
    /// move file data; counted once per READ and WRITE.
    EncryptedChannel,
}

impl FallbackReason {
    /// Every reason, in documentation order.
    pub const ALL: [FallbackReason; 12] = [
        FallbackReason::SmallBody,
        FallbackReason::SendfileUnsupported,
        FallbackReason::ReadAhead,
        FallbackReason::PipeUnavailable,
        FallbackReason::Http2,
        FallbackReason::ExpectContinue,
        FallbackReason::ChunkedBody,
        FallbackReason::RequestBody,
        FallbackReason::Unsupported,
        FallbackReason::IoUringUnavailable,
        FallbackReason::ReadError,
        FallbackReason::EncryptedChannel,
    ];

    /// Position in [`FallbackReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            FallbackReason::SmallBody => "small_body",
            FallbackReason::SendfileUnsupported => "sendfile_unsupported",
            FallbackReason::ReadAhead => "read_ahead",
            FallbackReason::PipeUnavailable => "pipe_unavailable",
            FallbackReason::Http2 => "http2",
            FallbackReason::ExpectContinue => "expect_continue",
            FallbackReason::ChunkedBody => "chunked_body",
            FallbackReason::RequestBody => "request_body",
            FallbackReason::Unsupported => "unsupported",
            FallbackReason::IoUringUnavailable => "io_uring_unavailable",
            FallbackReason::ReadError => "read_error",
            FallbackReason::EncryptedChannel => "encrypted_channel",
        }
    }
}

/// One leg of a transfer: bytes moved along a path, and why it was not zero-copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leg {
    /// The path.
    pub path: TransferPath,
    /// Bytes moved.
    pub bytes: u64,
    /// Set when `path` is a copy path.
    pub fallback: Option<FallbackReason>,
}

/// Most distinct legs a transfer records; more are merged into the last one.
const MAX_LEGS: usize = 4;

/// The result of moving one body: a few legs (e.g. sendfile, then pread/write after
/// sendfile turned out to be unsupported), and time spent on fallback legs. Held inline,
/// so recording a transfer allocates nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transfer {
    legs: [Option<Leg>; MAX_LEGS],
    /// Time spent moving bytes along fallback legs.
    pub fallback_time: Duration,
    /// Ranges whose pages the `RWF_NOWAIT` probe found out of the page cache.
    pub page_cache_misses: u32,
}

impl Transfer {
    /// A single-leg transfer.
    pub fn single(path: TransferPath, bytes: u64, fallback: Option<FallbackReason>) -> Self {
        let mut transfer = Self::default();
        transfer.legs[0] = Some(Leg {
            path,
            bytes,
            fallback,
        });
        transfer
    }

    /// The legs, in order.
    pub fn legs(&self) -> impl Iterator<Item = &Leg> {
        self.legs.iter().flatten()
    }

    /// Appends a leg (skipped when empty). Bytes along the same zero-copy path as the
    /// previous leg join it; past `MAX_LEGS` legs, bytes join the last one.
    pub fn push(&mut self, path: TransferPath, bytes: u64, fallback: Option<FallbackReason>) {
        if bytes == 0 && fallback.is_none() {
            return;
        }
        let used = self.legs.iter().take_while(|l| l.is_some()).count();
        if let Some(Some(last)) = used.checked_sub(1).map(|i| &mut self.legs[i])
            && ((last.path == path && fallback.is_none() && last.fallback.is_none())
                || used == MAX_LEGS)
        {
            last.bytes += bytes;
            return;
        }
        self.legs[used] = Some(Leg {
            path,
            bytes,
            fallback,
        });
    }
}

/// Errno values meaning "this file or socket cannot do sendfile/splice".
pub fn is_unsupported(err: &std::io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        Errno::from_io_error(err),
        Some(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legs_merge_along_one_path_and_stay_apart_across_fallbacks() {
        let mut t = Transfer::default();
        t.push(TransferPath::Sendfile, 10, None);
        t.push(TransferPath::Sendfile, 5, None);
        t.push(TransferPath::Copy, 0, None);
        t.push(
            TransferPath::Copy,
            7,
            Some(FallbackReason::SendfileUnsupported),
        );
        let legs: Vec<Leg> = t.legs().copied().collect();
        assert_eq!(
            legs,
            vec![
                Leg {
                    path: TransferPath::Sendfile,
                    bytes: 15,
                    fallback: None
                },
                Leg {
                    path: TransferPath::Copy,
                    bytes: 7,
                    fallback: Some(FallbackReason::SendfileUnsupported)
                },
            ]
        );
        for _ in 0..10 {
            t.push(TransferPath::Splice, 1, Some(FallbackReason::ReadAhead));
        }
        assert_eq!(t.legs().count(), MAX_LEGS);
        assert_eq!(t.legs().map(|l| l.bytes).sum::<u64>(), 32);
    }
}
