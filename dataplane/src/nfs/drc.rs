//! The duplicate request cache (as knfsd's `nfscache.c`): replies of non-idempotent NFS
//! procedures kept for a while, so a call the client retransmits (its reply was lost with a
//! connection) gets the first execution's reply instead of running again. A retransmitted
//! REMOVE would otherwise fail with NOENT, a retransmitted MKDIR with EEXIST.
//!
//! A call is the same call when the client address, the xid, the procedure, the caller's uid
//! and a checksum of its arguments (the first [`CHECKSUM_BYTES`] and their length) match.
//! The client's port is not part of the key: a client that reconnects from another port
//! still finds its replies. A retransmission that arrives while the first is still running
//! is dropped (the client sends it again later), never run twice.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::handle::fnv1a;

/// Argument bytes the checksum covers (knfsd: 256).
pub const CHECKSUM_BYTES: usize = 256;
/// Replies kept at most (about 200 bytes each; at 1,000 WRITEs a second a reply stays
/// about 30 s).
pub const DEFAULT_CAPACITY: usize = 32_768;
/// How long a reply is kept (a client retransmits within its timeout, 60 s by default for
/// TCP mounts, then at growing intervals).
pub const KEEP_FOR: Duration = Duration::from_secs(120);

/// NFSv3 procedures whose replies are cached: SETATTR, WRITE, CREATE, MKDIR, SYMLINK,
/// MKNOD, REMOVE, RMDIR, RENAME, LINK (what knfsd caches).
pub fn is_cached(procedure: u32) -> bool {
    matches!(procedure, 2 | 7..=15)
}

/// What identifies one call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallKey {
    client: IpAddr,
    xid: u32,
    procedure: u32,
    uid: u32,
    args_len: usize,
    checksum: u64,
}

impl CallKey {
    /// The key of a call from `client` with these arguments.
    pub fn new(client: IpAddr, xid: u32, procedure: u32, uid: u32, args: &[u8]) -> Self {
        Self {
            client,
            xid,
            procedure,
            uid,
            args_len: args.len(),
            checksum: fnv1a(&args[..args.len().min(CHECKSUM_BYTES)]),
        }
    }
}

/// What the cache says about a call.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// First time: run it, then [`ReplyCache::finish`].
    New,
    /// The same call is running now: drop this copy.
    InProgress,
    /// Already answered: send this reply again.
    Replay(Arc<[u8]>),
}

#[derive(Debug)]
enum Entry {
    InProgress,
    Done(Arc<[u8]>),
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<CallKey, Entry>,
    /// Keys by insertion time, oldest first (eviction order).
    order: VecDeque<(Instant, CallKey)>,
}

/// The cache.
#[derive(Debug)]
pub struct ReplyCache {
    inner: Mutex<Inner>,
    capacity: usize,
    keep_for: Duration,
}

impl ReplyCache {
    /// A cache of at most `capacity` calls, each kept `keep_for`.
    pub fn new(capacity: usize, keep_for: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
            keep_for,
        }
    }

    /// Looks `key` up; a new call is recorded as in progress.
    pub fn begin(&self, key: &CallKey) -> Seen {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.evict(&mut inner, now);
        match inner.entries.get(key) {
            Some(Entry::InProgress) => return Seen::InProgress,
            Some(Entry::Done(reply)) => return Seen::Replay(Arc::clone(reply)),
            None => {}
        }
        inner.entries.insert(key.clone(), Entry::InProgress);
        inner.order.push_back((now, key.clone()));
        Seen::New
    }

    /// Records the reply of a call [`ReplyCache::begin`] called new; `None` forgets it (no
    /// reply was made, so a retransmission should run).
    pub fn finish(&self, key: &CallKey, reply: Option<&[u8]>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match reply {
            Some(reply) => {
                if let Some(entry) = inner.entries.get_mut(key) {
                    *entry = Entry::Done(Arc::from(reply));
                }
            }
            None => {
                inner.entries.remove(key);
            }
        }
    }

    /// Calls held now (in progress or answered).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the oldest answered calls past the age or the count; a call still running is
    /// never dropped (its retransmission would run it twice), only moved to the back.
    /// Running calls are bounded by connections × their in-flight bound.
    fn evict(&self, inner: &mut Inner, now: Instant) {
        let mut running_seen = 0;
        while let Some((at, _)) = inner.order.front() {
            let expired = now.duration_since(*at) >= self.keep_for;
            if !expired && inner.order.len() <= self.capacity + running_seen {
                break;
            }
            let Some((at, key)) = inner.order.pop_front() else {
                break;
            };
            if matches!(inner.entries.get(&key), Some(Entry::InProgress)) {
                inner.order.push_back((at.max(now), key));
                running_seen += 1;
                if running_seen >= inner.order.len() {
                    break;
                }
                continue;
            }
            inner.entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(xid: u32, args: &[u8]) -> CallKey {
        CallKey::new("10.0.0.1".parse().unwrap(), xid, 12, 1000, args)
    }

    #[test]
    fn a_retransmission_replays_and_a_running_one_is_dropped() {
        let cache = ReplyCache::new(16, KEEP_FOR);
        assert_eq!(cache.begin(&key(1, b"remove a")), Seen::New);
        assert_eq!(cache.begin(&key(1, b"remove a")), Seen::InProgress);
        cache.finish(&key(1, b"remove a"), Some(b"reply"));
        assert_eq!(
            cache.begin(&key(1, b"remove a")),
            Seen::Replay(Arc::from(&b"reply"[..]))
        );
        // Same xid, other arguments (a reused xid): a new call.
        assert_eq!(cache.begin(&key(1, b"remove b")), Seen::New);
        let other_client = CallKey::new("10.0.0.2".parse().unwrap(), 1, 12, 1000, b"remove a");
        assert_eq!(cache.begin(&other_client), Seen::New);
        // A call that produced no reply is forgotten: its retransmission runs.
        cache.finish(&key(1, b"remove b"), None);
        assert_eq!(cache.begin(&key(1, b"remove b")), Seen::New);
    }

    #[test]
    fn bounded_by_count_and_age() {
        let cache = ReplyCache::new(4, KEEP_FOR);
        for xid in 0..10 {
            assert_eq!(cache.begin(&key(xid, b"x")), Seen::New);
            cache.finish(&key(xid, b"x"), Some(b"r"));
        }
        assert!(cache.len() <= 5, "{}", cache.len());
        assert_eq!(cache.begin(&key(0, b"x")), Seen::New, "the oldest was kept");
        let short = ReplyCache::new(16, Duration::ZERO);
        short.begin(&key(1, b"x"));
        short.finish(&key(1, b"x"), Some(b"r"));
        assert_eq!(
            short.begin(&key(1, b"x")),
            Seen::New,
            "an expired reply was kept"
        );
        // A call still running outlives the age and the count.
        let running = ReplyCache::new(2, Duration::ZERO);
        assert_eq!(running.begin(&key(7, b"slow")), Seen::New);
        for xid in 100..110 {
            running.begin(&key(xid, b"x"));
            running.finish(&key(xid, b"x"), Some(b"r"));
        }
        assert_eq!(running.begin(&key(7, b"slow")), Seen::InProgress);
        assert!(is_cached(12) && is_cached(2) && is_cached(7) && !is_cached(1) && !is_cached(21));
    }
}
