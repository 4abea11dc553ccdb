//! Space accounting and the share's quota (`--capacity`).
//!
//! `used` is the sum of the sizes of the regular files in the share, found by a scan at
//! start-up and kept current by every write the server performs. Uploads reserve their bytes
//! before writing, so concurrent uploads cannot together overshoot the quota.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The quota would be exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("quota exceeded: {requested} more bytes requested, {available} available of {capacity}")]
pub struct QuotaExceeded {
    /// Bytes asked for.
    pub requested: u64,
    /// Bytes still free under the quota.
    pub available: u64,
    /// The quota.
    pub capacity: u64,
}

/// Bytes and files in a share, and its quota.
#[derive(Debug, Default)]
pub struct Usage {
    capacity: Option<u64>,
    used: AtomicU64,
    files: AtomicU64,
    reserved: AtomicU64,
}

impl Usage {
    /// A new account with this quota (`None`: unlimited) and nothing used.
    pub fn new(capacity: Option<u64>) -> Self {
        Self {
            capacity,
            ..Default::default()
        }
    }

    /// The quota in bytes, if any.
    pub fn capacity(&self) -> Option<u64> {
        self.capacity
    }

    /// Bytes held by regular files.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Number of regular files.
    pub fn files(&self) -> u64 {
        self.files.load(Ordering::Relaxed)
    }

    /// Bytes reserved by uploads in progress.
    pub fn reserved(&self) -> u64 {
        self.reserved.load(Ordering::Relaxed)
    }

    /// Replaces the totals with a fresh scan's.
    pub fn set_totals(&self, files: u64, bytes: u64) {
        self.files.store(files, Ordering::Relaxed);
        self.used.store(bytes, Ordering::Relaxed);
    }

    /// Starts an empty reservation.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            usage: Arc::clone(self),
            bytes: 0,
        }
    }

    fn reserve(&self, n: u64) -> Result<(), QuotaExceeded> {
        let Some(capacity) = self.capacity else {
            self.reserved.fetch_add(n, Ordering::Relaxed);
            return Ok(());
        };
        let mut reserved = self.reserved.load(Ordering::Relaxed);
        loop {
            let committed = self.used().saturating_add(reserved);
            let available = capacity.saturating_sub(committed);
            if n > available {
                return Err(QuotaExceeded {
                    requested: n,
                    available,
                    capacity,
                });
            }
            match self.reserved.compare_exchange_weak(
                reserved,
                reserved + n,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => reserved = now,
            }
        }
    }

    /// Records that a file of `old` bytes (`None`: new file) now has `new` bytes.
    pub fn record_write(&self, old: Option<u64>, new: u64) {
        if old.is_none() {
            self.files.fetch_add(1, Ordering::Relaxed);
        }
        self.add_used(new as i128 - old.unwrap_or(0) as i128);
    }

    /// Records the removal of `files` files holding `bytes` bytes.
    pub fn record_remove(&self, files: u64, bytes: u64) {
        let _ = self
            .files
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| {
                Some(f.saturating_sub(files))
            });
        self.add_used(-(bytes as i128));
    }

    fn add_used(&self, delta: i128) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some((u as i128 + delta).clamp(0, u64::MAX as i128) as u64)
            });
    }
}

/// Bytes held back for one upload; released when dropped.
#[derive(Debug)]
pub struct Reservation {
    usage: Arc<Usage>,
    bytes: u64,
}

impl Reservation {
    /// Reserves `n` more bytes, or fails without reserving any.
    pub fn grow(&mut self, n: u64) -> Result<(), QuotaExceeded> {
        self.usage.reserve(n)?;
        self.bytes += n;
        Ok(())
    }

    /// Bytes reserved so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.usage.reserved.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_respect_the_quota() {
        let usage = Arc::new(Usage::new(Some(100)));
        usage.set_totals(1, 40);
        let mut a = usage.reservation();
        a.grow(50).unwrap();
        let mut b = usage.reservation();
        let err = b.grow(20).unwrap_err();
        assert_eq!(err.available, 10);
        b.grow(10).unwrap();
        drop(a);
        assert_eq!(usage.reserved(), 10);
        drop(b);
        assert_eq!(usage.reserved(), 0);
    }

    #[test]
    fn writes_and_removals_adjust_totals() {
        let usage = Usage::new(None);
        usage.record_write(None, 10);
        usage.record_write(Some(10), 4);
        assert_eq!((usage.files(), usage.used()), (1, 4));
        usage.record_remove(1, 4);
        assert_eq!((usage.files(), usage.used()), (0, 0));
        usage.record_remove(1, 4);
        assert_eq!((usage.files(), usage.used()), (0, 0));
    }

    #[test]
    fn unlimited_never_refuses() {
        let usage = Arc::new(Usage::new(None));
        let mut r = usage.reservation();
        r.grow(u64::MAX / 2).unwrap();
        assert_eq!(r.bytes(), u64::MAX / 2);
    }
}
