//! Per-folder locks for the procedures that change a folder's entries: the folder's
//! attributes before and after the change (`wcc_data`) are taken under the lock, so they
//! describe exactly this change when this server makes them all (what knfsd's `fh_lock`
//! gives). The kernel client compares the pre-operation attributes with what it cached and,
//! when they match, keeps its cached listing instead of reading the folder again.
//!
//! Locks are striped by inode number: a fixed array, no allocation per folder. Two folders
//! that share a stripe only wait for each other.

use std::sync::{Mutex, MutexGuard};

const STRIPES: usize = 64;

/// The lock stripes.
#[derive(Debug)]
pub struct DirLocks {
    stripes: [Mutex<()>; STRIPES],
}

impl Default for DirLocks {
    fn default() -> Self {
        Self {
            stripes: std::array::from_fn(|_| Mutex::new(())),
        }
    }
}

/// Held locks of one or two folders.
pub struct DirGuard<'a> {
    _first: MutexGuard<'a, ()>,
    _second: Option<MutexGuard<'a, ()>>,
}

fn stripe(ino: u64) -> usize {
    // Fibonacci hashing spreads consecutive inode numbers over the stripes.
    (ino.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % STRIPES
}

impl DirLocks {
    /// Locks the folder with inode `ino`.
    pub fn lock(&self, ino: u64) -> DirGuard<'_> {
        DirGuard {
            _first: self.take(stripe(ino)),
            _second: None,
        }
    }

    /// Locks two folders (RENAME), always in stripe order, so two renames in opposite
    /// directions cannot deadlock.
    pub fn lock_two(&self, a: u64, b: u64) -> DirGuard<'_> {
        let (x, y) = (stripe(a), stripe(b));
        if x == y {
            return self.lock(a);
        }
        let (low, high) = (x.min(y), x.max(y));
        let first = self.take(low);
        DirGuard {
            _first: first,
            _second: Some(self.take(high)),
        }
    }

    fn take(&self, index: usize) -> MutexGuard<'_, ()> {
        self.stripes[index]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opposite_renames_do_not_deadlock() {
        let locks = std::sync::Arc::new(DirLocks::default());
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let locks = std::sync::Arc::clone(&locks);
                std::thread::spawn(move || {
                    for n in 0..2000u64 {
                        let (a, b) = if i % 2 == 0 { (n, n + 7) } else { (n + 7, n) };
                        let _held = locks.lock_two(a, b);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let _same = locks.lock_two(5, 5);
        assert!(stripe(1) != stripe(2) || stripe(2) != stripe(3));
    }
}
