//! Worker sizing and CPU pinning.
//!
//! The worker count follows the CPUs the process may run on (`sched_getaffinity` ∩ the
//! cgroup's cpuset), capped by the CPU quota rounded up; `--workers` overrides it. Each
//! worker is an OS thread named `zn-worker-<i>` running its own single-threaded tokio
//! runtime (see `server.rs`); with `--pin-cpus` worker *i* pins itself to the *i*-th allowed
//! CPU before it starts serving. Blocking-pool threads are named `zn-blocking` and get the
//! whole allowed set explicitly: Linux threads inherit the affinity of the thread that
//! spawned them, which would otherwise be one worker's single CPU.

use std::sync::Mutex;

use rustix::thread::CpuSet;

use crate::cgroup::CgroupLimits;

/// Prefix of worker thread names (a thread's `comm` holds at most 15 bytes).
pub const WORKER_PREFIX: &str = "zn-worker-";
/// Name of blocking-pool threads.
pub const BLOCKING_NAME: &str = "zn-blocking";

/// How many workers to run and where.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerPlan {
    /// CPUs the process may use: affinity ∩ cpuset, sorted.
    pub allowed: Vec<usize>,
    /// Worker threads.
    pub workers: usize,
    /// Pin worker `i` to `allowed[i]`.
    pub pin: bool,
    /// Why this many workers, for the log.
    pub reason: String,
}

impl WorkerPlan {
    /// The CPU worker `index` is pinned to, when pinning.
    pub fn cpu_for(&self, index: usize) -> Option<usize> {
        if self.pin && !self.allowed.is_empty() {
            Some(self.allowed[index % self.allowed.len()])
        } else {
            None
        }
    }
}

/// Decides the worker count. Fails when pinning is asked for more workers than CPUs.
pub fn plan_workers(
    affinity: &[usize],
    limits: &CgroupLimits,
    requested: Option<usize>,
    pin: bool,
) -> Result<WorkerPlan, String> {
    let mut allowed: Vec<usize> = match &limits.cpuset {
        Some(cpuset) => affinity
            .iter()
            .copied()
            .filter(|c| cpuset.contains(c))
            .collect(),
        None => affinity.to_vec(),
    };
    if allowed.is_empty() {
        allowed = affinity.to_vec();
    }
    allowed.sort_unstable();
    allowed.dedup();
    let by_cpus = allowed.len().max(1);
    let (derived, mut reason) = match limits.cpu_quota_cores {
        Some(q) if (q.ceil() as usize) < by_cpus => {
            let n = (q.ceil() as usize).max(1);
            (
                n,
                format!(
                    "{n} from the CPU quota of {q} cores (rounded up), below {by_cpus} allowed CPUs"
                ),
            )
        }
        _ => (by_cpus, format!("{by_cpus} allowed CPUs")),
    };
    let workers = match requested {
        Some(0) => return Err("--workers must be at least 1".into()),
        Some(n) => {
            reason = format!("{n} from --workers (would be {reason})");
            n
        }
        None => derived,
    };
    if pin && workers > allowed.len() {
        return Err(format!(
            "--pin-cpus needs one CPU per worker: {workers} workers asked for, but only {} CPUs are allowed ({})",
            allowed.len(),
            format_cpus(&allowed)
        ));
    }
    Ok(WorkerPlan {
        allowed,
        workers,
        pin,
        reason,
    })
}

/// The CPUs in the calling thread's affinity mask.
pub fn current_affinity() -> std::io::Result<Vec<usize>> {
    let set = rustix::thread::sched_getaffinity(None)?;
    Ok((0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect())
}

fn set_affinity(cpus: &[usize]) -> std::io::Result<()> {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c);
    }
    Ok(rustix::thread::sched_setaffinity(None, &set)?)
}

/// One worker's pinning as it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    /// Worker index.
    pub worker: usize,
    /// CPU it was pinned to.
    pub cpu: usize,
    /// Kernel thread id.
    pub tid: i32,
    /// Error, if `sched_setaffinity` failed.
    pub error: Option<String>,
}

/// Records each worker's pinning from inside the worker thread.
#[derive(Debug, Default)]
pub struct PinRecord {
    entries: Mutex<Vec<Pinned>>,
}

impl PinRecord {
    fn push(&self, p: Pinned) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(p);
    }

    /// The pinnings so far, by worker index.
    pub fn snapshot(&self) -> Vec<Pinned> {
        let mut v = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        v.sort_by_key(|p| p.worker);
        v
    }
}

/// Pins the calling worker thread to its CPU when the plan says so, and records it.
pub fn pin_worker(plan: &WorkerPlan, index: usize, record: &PinRecord) {
    if let Some(cpu) = plan.cpu_for(index) {
        let error = set_affinity(&[cpu]).err().map(|e| e.to_string());
        let tid = rustix::thread::gettid().as_raw_nonzero().get();
        record.push(Pinned {
            worker: index,
            cpu,
            tid,
            error,
        });
    }
}

/// The single-threaded runtime of one worker; its blocking-pool threads keep the whole
/// allowed CPU set.
pub fn worker_runtime(plan: &WorkerPlan) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all().thread_name(BLOCKING_NAME);
    if plan.pin {
        let allowed = plan.allowed.clone();
        builder.on_thread_start(move || {
            if let Err(e) = set_affinity(&allowed) {
                tracing::warn!(error = %e, "cannot reset a blocking thread's affinity");
            }
        });
    }
    builder.build()
}

/// Logs each worker's pinning.
pub fn log_pinned(pinned: &[Pinned]) {
    for p in pinned {
        match &p.error {
            None => tracing::info!(worker = p.worker, cpu = p.cpu, tid = p.tid, "worker pinned"),
            Some(e) => {
                tracing::error!(worker = p.worker, cpu = p.cpu, error = %e, "worker pinning failed")
            }
        }
    }
}

/// Formats CPU numbers as a cpu list (`0-3,8`).
pub fn format_cpus(cpus: &[usize]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

/// What start-up found and decided, for metrics and the stats route.
#[derive(Debug, Clone)]
pub struct RuntimeReport {
    /// The cgroup limits.
    pub limits: CgroupLimits,
    /// The worker plan.
    pub plan: WorkerPlan,
    /// Bytes the I/O buffers may hold.
    pub buffer_budget: u64,
    /// The transport chosen and what the RDMA probe found.
    pub transport: crate::transport::TransportReport,
}

impl RuntimeReport {
    /// Discovers the cgroup limits and plans the workers, without building a runtime.
    pub fn detect(
        workers: Option<usize>,
        pin: bool,
        rdma: crate::transport::RdmaMode,
    ) -> Result<Self, String> {
        let transport = crate::transport::probe(rdma)?;
        let limits = crate::cgroup::discover();
        let affinity = current_affinity().map_err(|e| format!("sched_getaffinity: {e}"))?;
        let plan = plan_workers(&affinity, &limits, workers, pin)?;
        let buffer_budget = crate::budget::budget_for_limit(limits.memory_limit());
        Ok(Self {
            limits,
            plan,
            buffer_budget,
            transport,
        })
    }

    /// Logs what was found and decided.
    pub fn log(&self) {
        for warning in &self.limits.warnings {
            tracing::warn!(warning = %warning, "cgroup");
        }
        tracing::info!(
            hierarchy = self.limits.hierarchy.as_str(),
            cgroup = ?self.limits.path,
            cpus_allowed = %format_cpus(&self.plan.allowed),
            cpu_quota_cores = ?self.limits.cpu_quota_cores,
            memory_max = ?self.limits.memory_max,
            memory_high = ?self.limits.memory_high,
            buffer_budget = self.buffer_budget,
            workers = self.plan.workers,
            reason = %self.plan.reason,
            pin = self.plan.pin,
                        "cgroup limits and worker plan"
        );
        tracing::info!(
            transport = self.transport.transport_label(),
            rdma = self.transport.rdma,
            reason = self.transport.reason,
            devices = ?self.transport.devices,
            "transport"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::Hierarchy;
    use std::sync::Arc;

    fn limits(cpuset: Option<Vec<usize>>, quota: Option<f64>) -> CgroupLimits {
        CgroupLimits {
            cpuset,
            cpu_quota_cores: quota,
            ..CgroupLimits::unknown(Hierarchy::V2)
        }
    }

    #[test]
    fn workers_follow_cpuset_and_quota() {
        let all: Vec<usize> = (0..16).collect();
        let p = plan_workers(&all, &limits(Some(vec![2, 3, 4, 5]), None), None, false).unwrap();
        assert_eq!((p.allowed.clone(), p.workers), (vec![2, 3, 4, 5], 4));
        let p = plan_workers(&all, &limits(None, Some(2.5)), None, false).unwrap();
        assert_eq!(p.workers, 3);
        let p = plan_workers(&all, &limits(Some(vec![0, 1]), Some(8.0)), None, false).unwrap();
        assert_eq!(p.workers, 2);
        let p = plan_workers(&all, &limits(None, Some(0.2)), None, false).unwrap();
        assert_eq!(p.workers, 1);
        let p = plan_workers(&[1], &limits(None, None), Some(3), false).unwrap();
        assert_eq!(p.workers, 3);
        assert!(p.reason.contains("--workers"));
        assert!(plan_workers(&[1], &limits(None, None), Some(0), false).is_err());
    }

    #[test]
    fn pinning_needs_enough_cpus() {
        let p = plan_workers(&[4, 6], &limits(None, None), None, true).unwrap();
        assert_eq!((p.cpu_for(0), p.cpu_for(1)), (Some(4), Some(6)));
        let err = plan_workers(&[1], &limits(None, None), Some(2), true).unwrap_err();
        assert!(err.contains("only 1 CPUs are allowed (1)"), "{err}");
        let unpinned = plan_workers(&[4, 6], &limits(None, None), None, false).unwrap();
        assert_eq!(unpinned.cpu_for(0), None);
    }

    #[test]
    fn cpu_lists_format() {
        assert_eq!(format_cpus(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(format_cpus(&[]), "");
    }

    #[test]
    fn a_worker_pins_itself_and_its_blocking_threads_keep_the_set() {
        let affinity = current_affinity().unwrap();
        let plan = plan_workers(&affinity, &limits(None, None), Some(1), true).unwrap();
        let record = Arc::new(PinRecord::default());
        let (plan2, record2) = (plan.clone(), Arc::clone(&record));
        let seen = std::thread::spawn(move || {
            pin_worker(&plan2, 0, &record2);
            let rt = worker_runtime(&plan2).unwrap();
            let worker_cpus = current_affinity().unwrap();
            let blocking = rt.block_on(async {
                tokio::task::spawn_blocking(|| {
                    (
                        std::thread::current().name().map(str::to_owned),
                        current_affinity().unwrap(),
                    )
                })
                .await
                .unwrap()
            });
            (worker_cpus, blocking)
        })
        .join()
        .unwrap();
        let pinned = record.snapshot();
        assert_eq!(pinned.len(), 1);
        assert_eq!(
            (pinned[0].cpu, pinned[0].error.clone()),
            (affinity[0], None)
        );
        assert_eq!(seen.0, vec![affinity[0]]);
        assert_eq!(seen.1.0.as_deref(), Some(BLOCKING_NAME));
        assert_eq!(seen.1.1, plan.allowed);
    }
}
