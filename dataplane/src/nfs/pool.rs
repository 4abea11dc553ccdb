//! The NFS worker pool: a fixed set of threads that run requests of every connection, and
//! the per-connection bound on requests in flight.
//!
//! A connection's reader only decodes records and hands each to the pool, so a slow request
//! (a COMMIT's `fsync`, a large READDIR, a handle rescan) occupies one worker while the
//! requests behind it run on the others, and replies go out in the order they finish (RPC
//! matches them by xid). Two bounds keep memory and threads finite whatever clients send:
//! [`InFlight`] caps a connection's requests between "record read" and "reply sent" (the
//! reader waits, so the client meets TCP back-pressure), and the pool's queue is bounded, so
//! all connections together wait when every worker is busy and the queue is full.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};

/// Default number of worker threads.
pub const DEFAULT_THREADS: usize = 32;
/// Default bound on one connection's requests in flight.
pub const DEFAULT_PER_CONNECTION: usize = 64;

type Job = Box<dyn FnOnce() + Send>;

/// Threads that run queued jobs.
#[derive(Debug)]
pub struct WorkerPool {
    queue: SyncSender<Job>,
    threads: usize,
}

impl WorkerPool {
    /// Starts `threads` workers (at least one) over a queue of `4 × threads` jobs.
    pub fn start(threads: usize) -> std::io::Result<Arc<Self>> {
        let threads = threads.max(1);
        let (queue, jobs) = sync_channel::<Job>(threads * 4);
        let jobs = Arc::new(Mutex::new(jobs));
        for index in 0..threads {
            let jobs = Arc::clone(&jobs);
            std::thread::Builder::new()
                .name(format!("zn-nfs-work-{index}"))
                .spawn(move || run_jobs(&jobs))?;
        }
        Ok(Arc::new(Self { queue, threads }))
    }

    /// Queues `job`, waiting while the queue is full. False only if every worker is gone.
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) -> bool {
        self.queue.send(Box::new(job)).is_ok()
    }

    /// Number of workers.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

fn run_jobs(jobs: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only to take one job, never while running it.
        let job = match jobs.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        match job {
            // A panicking request must not take its worker with it: the pool would shrink
            // with every one. (Request code has no panics on client input; this is a
            // backstop, and the caller's identity is restored by a drop guard.)
            Ok(job) => {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                    tracing::error!("an NFS request panicked; its worker goes on");
                }
            }
            Err(_) => return,
        }
    }
}

/// A counting bound on one connection's requests in flight.
#[derive(Debug)]
pub struct InFlight {
    count: Mutex<usize>,
    changed: Condvar,
    max: usize,
}

impl InFlight {
    /// At most `max` (at least one) at once.
    pub fn new(max: usize) -> Self {
        Self {
            count: Mutex::new(0),
            changed: Condvar::new(),
            max: max.max(1),
        }
    }

    /// Takes a place, waiting while all are taken.
    pub fn acquire(&self) {
        let mut count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        while *count >= self.max {
            count = self.changed.wait(count).unwrap_or_else(|e| e.into_inner());
        }
        *count += 1;
    }

    /// Gives a place back (its reply was sent, dropped, or will never be).
    pub fn release(&self) {
        let mut count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        *count = count.saturating_sub(1);
        self.changed.notify_all();
    }

    /// Waits until no request is in flight.
    pub fn wait_idle(&self) {
        let mut count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        while *count > 0 {
            count = self.changed.wait(count).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Requests in flight now.
    pub fn current(&self) -> usize {
        *self.count.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn a_blocked_job_does_not_hold_back_the_next() {
        let pool = WorkerPool::start(2).unwrap();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (done, finished) = std::sync::mpsc::channel::<&str>();
        let slow_done = done.clone();
        assert!(pool.submit(move || {
            let _ = wait.recv();
            let _ = slow_done.send("slow");
        }));
        assert!(pool.submit(move || {
            let _ = done.send("fast");
        }));
        assert_eq!(
            finished.recv_timeout(Duration::from_secs(5)).unwrap(),
            "fast"
        );
        release.send(()).unwrap();
        assert_eq!(
            finished.recv_timeout(Duration::from_secs(5)).unwrap(),
            "slow"
        );
    }

    #[test]
    fn in_flight_waits_at_the_bound() {
        let bound = Arc::new(InFlight::new(2));
        bound.acquire();
        bound.acquire();
        let entered = Arc::new(AtomicUsize::new(0));
        let (b, e) = (Arc::clone(&bound), Arc::clone(&entered));
        let third = std::thread::spawn(move || {
            b.acquire();
            e.store(1, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            entered.load(Ordering::SeqCst),
            0,
            "a third got in past the bound"
        );
        bound.release();
        third.join().unwrap();
        assert_eq!(entered.load(Ordering::SeqCst), 1);
        assert_eq!(bound.current(), 2);
    }
}
