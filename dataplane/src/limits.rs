//! Connection caps shared by the HTTP and NFS listeners.
//!
//! Each listener holds one [`ConnectionLimit`]; an accepted connection takes a
//! [`ConnectionSlot`] for its lifetime or is closed at once (and counted by the caller), so
//! a flood of connections cannot exhaust threads, descriptors or memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// At most `max` connections at once.
#[derive(Debug)]
pub struct ConnectionLimit {
    active: AtomicUsize,
    max: usize,
}

impl ConnectionLimit {
    /// A limit of `max` connections (at least one).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            active: AtomicUsize::new(0),
            max: max.max(1),
        })
    }

    /// A slot for one more connection, or `None` at the cap.
    pub fn try_acquire(self: &Arc<Self>) -> Option<ConnectionSlot> {
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnectionSlot(Arc::clone(self)))
    }

    /// Connections holding a slot now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// One connection's place under a [`ConnectionLimit`]; released on drop.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<ConnectionLimit>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_and_released() {
        let limit = ConnectionLimit::new(2);
        let a = limit.try_acquire().expect("first");
        let b = limit.try_acquire().expect("second");
        assert!(limit.try_acquire().is_none());
        drop(a);
        assert_eq!(limit.active(), 1);
        let c = limit.try_acquire().expect("after a release");
        drop((b, c));
        assert_eq!(limit.active(), 0);
        assert_eq!(ConnectionLimit::new(0).max(), 1);
    }
}
