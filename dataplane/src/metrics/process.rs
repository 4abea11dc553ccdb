//! Figures read from the kernel at each scrape: the cgroup's memory and CPU use
//! (`memory.current`, `cpu.stat`) and the process's major page faults (`getrusage`).

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;

use super::{Metrics, clamp_i64};

impl Metrics {
    /// Reads the figures that only the kernel keeps: the cgroup's memory and CPU usage and
    /// the process's major faults. Counters only move forward (a cgroup counter read as
    /// smaller, which a migrated process could see, is skipped).
    pub(super) fn refresh_process_figures(&self) {
        let _one_at_a_time = self
            .refreshing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(dir) = self.cgroup_dir.get() {
            let usage = crate::cgroup::read_usage(dir);
            self.memory_current
                .set(clamp_i64(usage.memory_current.unwrap_or(0)));
            self.memory_working_set
                .set(clamp_i64(usage.working_set().unwrap_or(0)));
            if let Some(cpu) = usage.cpu {
                advance_f64(&self.cpu_usage, cpu.usage_usec as f64 / 1e6);
                advance_f64(&self.cpu_throttled, cpu.throttled_usec as f64 / 1e6);
                advance(&self.cpu_periods, cpu.nr_periods);
                advance(&self.cpu_throttled_periods, cpu.nr_throttled);
            }
        }
        // SAFETY: getrusage writes one plain struct that we own.
        let mut usage = unsafe { std::mem::zeroed::<libc::rusage>() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0 {
            advance(&self.major_faults, usage.ru_majflt as u64);
        }
    }
}

/// Raises `counter` to `total`, never lowers it.
fn advance(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

/// Raises a float `counter` to `total`, never lowers it.
fn advance_f64(counter: &Counter<f64, AtomicU64>, total: f64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::BufferBudget;
    use crate::usage::Usage;

    #[test]
    fn counters_follow_the_kernel_forward_only() {
        let c = Counter::default();
        advance(&c, 5);
        advance(&c, 3);
        assert_eq!(c.get(), 5);
        advance(&c, 9);
        assert_eq!(c.get(), 9);
    }

    #[test]
    fn a_scrape_reads_the_cgroup_and_the_process() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("memory.current"), "4096\n").unwrap();
        std::fs::write(dir.path().join("memory.stat"), "inactive_file 1024\n").unwrap();
        std::fs::write(
            dir.path().join("cpu.stat"),
            "usage_usec 1500000\nnr_periods 10\nnr_throttled 4\nthrottled_usec 250000\n",
        )
        .unwrap();
        let m = Metrics::new();
        m.cgroup_dir.set(dir.path().to_owned()).unwrap();
        let text = m.render(&Usage::new(None), &BufferBudget::new(1 << 20));
        for line in [
            "zeronas_cgroup_memory_current_bytes 4096",
            "zeronas_cgroup_memory_working_set_bytes 3072",
            "zeronas_cgroup_cpu_usage_seconds_total 1.5",
            "zeronas_cgroup_cpu_periods_total 10",
            "zeronas_cgroup_cpu_throttled_periods_total 4",
            "zeronas_cgroup_cpu_throttled_seconds_total 0.25",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        assert!(text.contains("zeronas_major_page_faults_total "));
    }
}
