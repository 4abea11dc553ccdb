//! The memory budget for I/O buffers the dataplane owns.
//!
//! File chunks read for the copy path and upload chunks waiting for the disk hold a permit
//! from one semaphore sized from the cgroup's memory limit, so under any load the buffers
//! stay inside the budget and the pod is not OOM-killed by its own data path: when the
//! budget is spent, readers wait instead of allocating.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Budget when no memory limit is known.
pub const DEFAULT_BUDGET: u64 = 256 << 20;
/// Smallest budget, whatever the limit.
pub const MIN_BUDGET: u64 = 8 << 20;
/// Share of the cgroup memory limit given to I/O buffers.
pub const LIMIT_FRACTION: u64 = 4;
/// Permits are counted in units of this many bytes.
const UNIT: u64 = 4096;

/// The buffer budget derived from a memory limit: a quarter of it, at least [`MIN_BUDGET`];
/// [`DEFAULT_BUDGET`] without a limit.
pub fn budget_for_limit(limit: Option<u64>) -> u64 {
    limit.map_or(DEFAULT_BUDGET, |l| (l / LIMIT_FRACTION).max(MIN_BUDGET))
}

/// A byte budget shared by every connection.
#[derive(Debug, Clone)]
pub struct BufferBudget {
    semaphore: Arc<Semaphore>,
    units: usize,
}

impl BufferBudget {
    /// A budget of `bytes` bytes.
    pub fn new(bytes: u64) -> Self {
        let units = usize::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(usize::MAX)
            .clamp(1, Semaphore::MAX_PERMITS);
        Self {
            semaphore: Arc::new(Semaphore::new(units)),
            units,
        }
    }

    /// The budget in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.units as u64 * UNIT
    }

    /// Bytes currently held by buffers.
    pub fn in_use_bytes(&self) -> u64 {
        (self.units - self.semaphore.available_permits()) as u64 * UNIT
    }

    /// Waits until `bytes` fit in the budget and holds them until the permit drops. A
    /// request larger than the whole budget takes the whole budget.
    pub async fn acquire(&self, bytes: usize) -> OwnedSemaphorePermit {
        let units = (bytes as u64).div_ceil(UNIT).clamp(1, self.units as u64) as u32;
        match Arc::clone(&self.semaphore).acquire_many_owned(units).await {
            Ok(permit) => permit,
            // The semaphore is never closed.
            Err(_) => unreachable!("buffer budget semaphore closed"),
        }
    }
}

/// A buffer that returns its bytes to the budget when the last `Bytes` pointing at it drops.
struct Budgeted {
    buf: BytesMut,
    _permit: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Budgeted {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

/// Freezes `buf` into `Bytes` that hold `permit` for as long as they live.
pub fn budgeted_bytes(buf: BytesMut, permit: OwnedSemaphorePermit) -> Bytes {
    Bytes::from_owner(Budgeted {
        buf,
        _permit: permit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn budget_follows_the_limit() {
        assert_eq!(budget_for_limit(None), DEFAULT_BUDGET);
        assert_eq!(budget_for_limit(Some(1 << 30)), 256 << 20);
        assert_eq!(budget_for_limit(Some(1 << 20)), MIN_BUDGET);
    }

    #[tokio::test]
    async fn buffers_wait_when_the_budget_is_spent() {
        let budget = BufferBudget::new(64 * 1024);
        let first = budget.acquire(48 * 1024).await;
        let bytes = budgeted_bytes(BytesMut::zeroed(10), first);
        assert_eq!(budget.in_use_bytes(), 48 * 1024);
        let blocked =
            tokio::time::timeout(Duration::from_millis(50), budget.acquire(32 * 1024)).await;
        assert!(blocked.is_err(), "over-budget acquire must wait");
        let clone = bytes.clone();
        drop(bytes);
        assert_eq!(
            budget.in_use_bytes(),
            48 * 1024,
            "a live clone keeps the permit"
        );
        drop(clone);
        assert_eq!(budget.in_use_bytes(), 0);
        let whole = budget.acquire(10 << 20).await;
        assert_eq!(budget.in_use_bytes(), budget.total_bytes());
        drop(whole);
    }
}
