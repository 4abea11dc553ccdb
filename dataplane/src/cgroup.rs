//! cgroup v2 discovery: which CPUs, how much CPU time and how much memory this process may use.
//!
//! The reader finds the process's cgroup v2 path in `/proc/self/cgroup`, the cgroup2 mount in
//! `/proc/self/mountinfo` (pure v2 at `/sys/fs/cgroup`, or a hybrid host's
//! `/sys/fs/cgroup/unified`), then reads `cpu.max`, `cpuset.cpus.effective`, `memory.max` and
//! `memory.high` in that cgroup and its ancestors (a parent's limit binds its children too).
//! Anything missing, unreadable or garbled leaves that limit unknown and adds a warning:
//! discovery never fails.

use std::path::{Path, PathBuf};

/// How the host mounts cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hierarchy {
    /// Only cgroup2 is mounted.
    V2,
    /// cgroup2 beside v1 controllers (e.g. `/sys/fs/cgroup/unified`).
    Hybrid,
    /// Only v1 controllers: no limits are read.
    V1Only,
    /// No cgroup filesystem found.
    None,
}

impl Hierarchy {
    /// Label for logs, metrics and stats.
    pub fn as_str(self) -> &'static str {
        match self {
            Hierarchy::V2 => "v2",
            Hierarchy::Hybrid => "hybrid",
            Hierarchy::V1Only => "v1",
            Hierarchy::None => "none",
        }
    }
}

/// What the process's cgroup allows. `None` means "no limit found".
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupLimits {
    /// The host's cgroup layout.
    pub hierarchy: Hierarchy,
    /// The process's cgroup directory, when found.
    pub path: Option<PathBuf>,
    /// `cpuset.cpus.effective`, sorted CPU numbers.
    pub cpuset: Option<Vec<usize>>,
    /// `cpu.max` as cores (quota / period), the tightest along the path.
    pub cpu_quota_cores: Option<f64>,
    /// `memory.max` in bytes, the tightest along the path.
    pub memory_max: Option<u64>,
    /// `memory.high` in bytes, the tightest along the path.
    pub memory_high: Option<u64>,
    /// What could not be read, for the start-up log.
    pub warnings: Vec<String>,
}

impl CgroupLimits {
    /// No limits known.
    pub fn unknown(hierarchy: Hierarchy) -> Self {
        Self {
            hierarchy,
            path: None,
            cpuset: None,
            cpu_quota_cores: None,
            memory_max: None,
            memory_high: None,
            warnings: Vec::new(),
        }
    }

    /// The tighter of `memory.high` and `memory.max`.
    pub fn memory_limit(&self) -> Option<u64> {
        match (self.memory_high, self.memory_max) {
            (Some(h), Some(m)) => Some(h.min(m)),
            (h, m) => h.or(m),
        }
    }
}

/// Reads the limits of the calling process from the real `/proc` and `/sys`.
pub fn discover() -> CgroupLimits {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo");
    match (cgroup, mountinfo) {
        (Ok(cgroup), Ok(mountinfo)) => discover_from(&cgroup, &mountinfo, Path::new("/")),
        (Err(e), _) | (_, Err(e)) => {
            let mut limits = CgroupLimits::unknown(Hierarchy::None);
            limits
                .warnings
                .push(format!("cannot read /proc/self cgroup files: {e}"));
            limits
        }
    }
}

/// Discovery from the text of `/proc/self/cgroup` and `/proc/self/mountinfo`, with mount
/// points resolved under `fs_root` (`/` for real; a temp folder in tests).
pub fn discover_from(proc_cgroup: &str, mountinfo: &str, fs_root: &Path) -> CgroupLimits {
    let mounts = parse_mountinfo(mountinfo);
    let v2_mount = mounts
        .iter()
        .filter(|m| m.fstype == "cgroup2")
        .min_by_key(|m| {
            if m.mount_point == "/sys/fs/cgroup" {
                0
            } else {
                1
            }
        });
    let has_v1 = mounts.iter().any(|m| m.fstype == "cgroup");
    let hierarchy = match (v2_mount.is_some(), has_v1) {
        (true, false) => Hierarchy::V2,
        (true, true) => Hierarchy::Hybrid,
        (false, true) => Hierarchy::V1Only,
        (false, false) => Hierarchy::None,
    };
    let mut limits = CgroupLimits::unknown(hierarchy);
    let Some(mount) = v2_mount else {
        limits.warnings.push(format!(
            "no cgroup2 filesystem mounted ({} host): CPU and memory limits unknown",
            hierarchy.as_str()
        ));
        return limits;
    };
    let Some(rel) = proc_cgroup.lines().find_map(|l| l.strip_prefix("0::")) else {
        limits
            .warnings
            .push("no cgroup v2 entry (0::) in /proc/self/cgroup".into());
        return limits;
    };
    // With a cgroup namespace the mount's root may be a prefix of our path.
    let rel = rel.trim();
    let rel = rel
        .strip_prefix(mount.root.as_str())
        .unwrap_or(rel)
        .trim_start_matches('/');
    let mount_dir = fs_root.join(mount.mount_point.trim_start_matches('/'));
    let leaf = mount_dir.join(rel);
    if !leaf.is_dir() {
        limits
            .warnings
            .push(format!("cgroup directory {} not found", leaf.display()));
        return limits;
    }

    match read_limit(&leaf.join("cpuset.cpus.effective"), parse_cpu_list) {
        Ok(v) => limits.cpuset = v,
        Err(w) => limits.warnings.push(w),
    }
    // Walk from the leaf up to the mount point: every level's limit applies.
    let mut dir = leaf.clone();
    loop {
        for (file, slot, parse) in [
            (
                "memory.max",
                &mut limits.memory_max,
                parse_bytes_or_max as fn(&str) -> Result<Option<u64>, String>,
            ),
            ("memory.high", &mut limits.memory_high, parse_bytes_or_max),
        ] {
            match read_limit(&dir.join(file), parse) {
                Ok(Some(v)) => *slot = Some(slot.map_or(v, |cur: u64| cur.min(v))),
                Ok(None) => {}
                Err(w) => limits.warnings.push(w),
            }
        }
        match read_limit(&dir.join("cpu.max"), parse_cpu_max) {
            Ok(Some(v)) => {
                limits.cpu_quota_cores = Some(limits.cpu_quota_cores.map_or(v, |cur| cur.min(v)))
            }
            Ok(None) => {}
            Err(w) => limits.warnings.push(w),
        }
        if dir == mount_dir || !dir.pop() || !dir.starts_with(&mount_dir) {
            break;
        }
    }
    limits.path = Some(leaf);
    limits
}

/// Reads and parses one interface file; a missing file is "no limit", garbage is a warning.
fn read_limit<T>(
    path: &Path,
    parse: fn(&str) -> Result<Option<T>, String>,
) -> Result<Option<T>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(text.trim()).map_err(|e| format!("{}: {e}; ignoring it", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}; ignoring it", path.display())),
    }
}

/// One line of mountinfo, the parts discovery needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    root: String,
    mount_point: String,
    fstype: String,
}

fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split_whitespace().collect();
            let fstype = after.split_whitespace().next()?;
            Some(Mount {
                root: unescape_mount(fields.get(3)?),
                mount_point: unescape_mount(fields.get(4)?),
                fstype: fstype.to_owned(),
            })
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\040`-style octal escapes.
fn unescape_mount(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let digit = |k: usize| u16::from(bytes[i + k] - b'0');
            let code = digit(1) * 64 + digit(2) * 8 + digit(3);
            out.push(u8::try_from(code).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a cpu list such as `0-3,8,10-11` (empty: no CPUs listed → no restriction known).
pub fn parse_cpu_list(text: &str) -> Result<Option<Vec<usize>>, String> {
    const MAX_CPU: usize = 1 << 16;
    if text.is_empty() {
        return Ok(None);
    }
    let mut cpus = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let lo: usize = lo
            .trim()
            .parse()
            .map_err(|_| format!("bad cpu list {text:?}"))?;
        let hi: usize = hi
            .trim()
            .parse()
            .map_err(|_| format!("bad cpu list {text:?}"))?;
        if lo > hi || hi >= MAX_CPU {
            return Err(format!("bad cpu range {part:?}"));
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(Some(cpus))
}

/// Parses `cpu.max` (`max 100000` or `QUOTA PERIOD`) into cores.
pub fn parse_cpu_max(text: &str) -> Result<Option<f64>, String> {
    let mut fields = text.split_whitespace();
    let quota = fields.next().ok_or("empty cpu.max")?;
    let period: u64 = match fields.next() {
        Some(p) => p.parse().map_err(|_| format!("bad period in {text:?}"))?,
        None => 100_000,
    };
    if quota == "max" {
        return Ok(None);
    }
    let quota: u64 = quota
        .parse()
        .map_err(|_| format!("bad quota in {text:?}"))?;
    if period == 0 || quota == 0 {
        return Err(format!("zero quota or period in {text:?}"));
    }
    Ok(Some(quota as f64 / period as f64))
}

/// Parses `memory.max` / `memory.high` (`max` or bytes).
pub fn parse_bytes_or_max(text: &str) -> Result<Option<u64>, String> {
    if text == "max" {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| format!("bad byte count {text:?}"))
}

/// What a cgroup v2 directory says about current use (read at each scrape).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// `memory.current` in bytes.
    pub memory_current: Option<u64>,
    /// `inactive_file` of `memory.stat`: page cache the kernel reclaims first.
    pub inactive_file: Option<u64>,
    /// `cpu.stat`.
    pub cpu: Option<CpuStat>,
}

/// The `cpu.stat` fields the metrics export (absent fields read as 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuStat {
    /// CPU time of the cgroup's tasks, µs.
    pub usage_usec: u64,
    /// Quota enforcement periods that had runnable tasks.
    pub nr_periods: u64,
    /// Periods in which the quota ran out.
    pub nr_throttled: u64,
    /// Time the tasks waited for the next period, µs.
    pub throttled_usec: u64,
}

/// Reads `memory.current` and `cpu.stat` of `dir` (cgroup v2); what is missing or
/// unreadable is `None`.
pub fn read_usage(dir: &Path) -> CgroupUsage {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    CgroupUsage {
        memory_current: read("memory.current").and_then(|t| t.trim().parse().ok()),
        inactive_file: read("memory.stat").and_then(|t| stat_field(&t, "inactive_file")),
        cpu: read("cpu.stat").map(|t| parse_cpu_stat(&t)),
    }
}

impl CgroupUsage {
    /// The working set as the kubelet counts it: `memory.current` less inactive file pages.
    pub fn working_set(&self) -> Option<u64> {
        Some(
            self.memory_current?
                .saturating_sub(self.inactive_file.unwrap_or(0)),
        )
    }
}

/// The value of `key` in a `key value` file such as `memory.stat`.
fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// Parses `cpu.stat` (`key value` lines; unknown keys and garbage are skipped).
pub fn parse_cpu_stat(text: &str) -> CpuStat {
    let mut stat = CpuStat::default();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(key), Some(value)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        match key {
            "usage_usec" => stat.usage_usec = value,
            "nr_periods" => stat.nr_periods = value,
            "nr_throttled" => stat.nr_throttled = value,
            "throttled_usec" => stat.throttled_usec = value,
            _ => {}
        }
    }
    stat
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_stat_fields() {
        let text = "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n\
                    nr_periods 40\nnr_throttled 7\nthrottled_usec 350000\nnr_bursts x\n";
        assert_eq!(
            parse_cpu_stat(text),
            CpuStat {
                usage_usec: 2_500_000,
                nr_periods: 40,
                nr_throttled: 7,
                throttled_usec: 350_000,
            }
        );
        assert_eq!(parse_cpu_stat("garbage\n"), CpuStat::default());
    }

    #[test]
    fn usage_of_a_folder_laid_out_like_cgroup_v2() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("memory.current"), "123456\n").unwrap();
        std::fs::write(
            dir.path().join("memory.stat"),
            "anon 1000\nfile 90000\nactive_file 10000\ninactive_file 80000\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("cpu.stat"),
            "usage_usec 10\nnr_throttled 2\n",
        )
        .unwrap();
        let usage = read_usage(dir.path());
        assert_eq!(usage.memory_current, Some(123_456));
        assert_eq!(usage.working_set(), Some(123_456 - 80_000));
        assert_eq!(usage.cpu.map(|c| c.nr_throttled), Some(2));
        assert_eq!(read_usage(&dir.path().join("none")), CgroupUsage::default());
    }

    const PURE_V2_MOUNTS: &str =
        "24 30 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
    const HYBRID_MOUNTS: &str = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
        34 31 0:31 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset\n\
        41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
    const V1_MOUNTS: &str = "34 31 0:31 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset\n";

    fn tree(mount: &str, rel: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(mount).join(rel);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, content) in files {
            let path = root.path().join(mount).join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        root
    }

    #[test]
    fn pure_v2_with_limits_along_the_path() {
        let root = tree(
            "sys/fs/cgroup",
            "kubepods/pod1/ctr",
            &[
                ("kubepods/pod1/ctr/cpuset.cpus.effective", "2-5\n"),
                ("kubepods/pod1/ctr/cpu.max", "max 100000\n"),
                ("kubepods/pod1/cpu.max", "400000 100000\n"),
                ("kubepods/cpu.max", "800000 100000\n"),
                ("kubepods/pod1/ctr/memory.max", "1073741824\n"),
                ("kubepods/memory.max", "536870912\n"),
                ("kubepods/pod1/ctr/memory.high", "max\n"),
            ],
        );
        let l = discover_from("0::/kubepods/pod1/ctr\n", PURE_V2_MOUNTS, root.path());
        assert_eq!(l.hierarchy, Hierarchy::V2);
        assert_eq!(l.cpuset, Some(vec![2, 3, 4, 5]));
        assert_eq!(l.cpu_quota_cores, Some(4.0));
        assert_eq!(l.memory_max, Some(536_870_912));
        assert_eq!(l.memory_high, None);
        assert_eq!(l.memory_limit(), Some(536_870_912));
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    }

    #[test]
    fn hybrid_reads_the_unified_mount() {
        let root = tree(
            "sys/fs/cgroup/unified",
            "app",
            &[("app/memory.high", "1000\n"), ("app/memory.max", "2000\n")],
        );
        let l = discover_from("3:cpuset:/\n0::/app\n", HYBRID_MOUNTS, root.path());
        assert_eq!(l.hierarchy, Hierarchy::Hybrid);
        assert_eq!(l.memory_limit(), Some(1000));
        assert_eq!(l.cpuset, None);
        assert_eq!(l.path, Some(root.path().join("sys/fs/cgroup/unified/app")));
    }

    #[test]
    fn v1_only_and_nothing_mounted_give_defaults_with_warnings() {
        let l = discover_from("3:cpuset:/\n", V1_MOUNTS, Path::new("/nonexistent"));
        assert_eq!(l.hierarchy, Hierarchy::V1Only);
        assert_eq!(
            (l.cpuset.clone(), l.cpu_quota_cores, l.memory_max),
            (None, None, None)
        );
        assert_eq!(l.warnings.len(), 1);
        let l = discover_from("", "", Path::new("/nonexistent"));
        assert_eq!(l.hierarchy, Hierarchy::None);
        assert!(!l.warnings.is_empty());
    }

    #[test]
    fn quota_without_cpuset_and_cpuset_without_quota() {
        let root = tree("sys/fs/cgroup", "a", &[("a/cpu.max", "150000 100000")]);
        let l = discover_from("0::/a", PURE_V2_MOUNTS, root.path());
        assert_eq!((l.cpuset.clone(), l.cpu_quota_cores), (None, Some(1.5)));
        let root = tree(
            "sys/fs/cgroup",
            "b",
            &[
                ("b/cpuset.cpus.effective", "0,3"),
                ("b/cpu.max", "max 100000"),
            ],
        );
        let l = discover_from("0::/b", PURE_V2_MOUNTS, root.path());
        assert_eq!((l.cpuset, l.cpu_quota_cores), (Some(vec![0, 3]), None));
    }

    #[test]
    fn garbage_and_missing_files_warn_but_never_fail() {
        let root = tree(
            "sys/fs/cgroup",
            "g",
            &[
                ("g/cpu.max", "lots"),
                ("g/memory.max", "-5"),
                ("g/cpuset.cpus.effective", "3-1"),
            ],
        );
        let l = discover_from("0::/g", PURE_V2_MOUNTS, root.path());
        assert_eq!(
            (l.cpuset.clone(), l.cpu_quota_cores, l.memory_max),
            (None, None, None)
        );
        assert_eq!(l.warnings.len(), 3, "{:?}", l.warnings);
        let l = discover_from("0::/missing", PURE_V2_MOUNTS, root.path());
        assert!(l.path.is_none());
        assert_eq!(l.warnings.len(), 1);
        let empty = tree("sys/fs/cgroup", "e", &[]);
        let l = discover_from("0::/e", PURE_V2_MOUNTS, empty.path());
        assert!(l.warnings.is_empty());
        assert_eq!(l.memory_limit(), None);
    }

    #[test]
    fn parsers() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11"),
            Ok(Some(vec![0, 1, 2, 3, 8, 10, 11]))
        );
        assert_eq!(parse_cpu_list(""), Ok(None));
        assert!(parse_cpu_list("a").is_err());
        assert_eq!(parse_cpu_max("max 100000"), Ok(None));
        assert_eq!(parse_cpu_max("50000 100000"), Ok(Some(0.5)));
        assert!(parse_cpu_max("1 0").is_err());
        assert_eq!(parse_bytes_or_max("max"), Ok(None));
        assert_eq!(unescape_mount("/a\\040b"), "/a b");
        let mounts =
            parse_mountinfo("1 2 0:3 / /with\\040space rw - cgroup2 none rw\nbroken line\n");
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].mount_point, "/with space");
    }
}
