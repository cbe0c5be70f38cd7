//! How many CPUs this process may use, and why: the default worker count
//! of a group without `count` (one per usable CPU), explained by `check`.
//!
//! The count is the standard library's `available_parallelism`: the CPUs
//! of the process's affinity mask, bounded by its cgroup's CPU quota
//! (a container's `--cpus`, a Kubernetes CPU limit, systemd's
//! `CPUQuota=`), rounded down, at least 1. This module reads the quota
//! itself, the same way (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us`
//! over `cpu.cfs_period_us`, the tightest on the path to the root), so
//! that `check` can say where the number comes from.

use std::path::Path;

/// The CPUs a group's default worker count is based on.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuBudget {
    /// The usable CPUs: the default worker count.
    pub usable: usize,
    /// The cgroup's CPU quota in CPUs, when one is set.
    pub quota: Option<f64>,
}

impl CpuBudget {
    /// The budget of this process.
    pub fn current() -> CpuBudget {
        CpuBudget {
            usable: std::thread::available_parallelism().map_or(1, usize::from),
            quota: cgroup_quota(Path::new("/proc/self/cgroup"), Path::new("/sys/fs/cgroup")),
        }
    }

    /// One line for `check`: `1 (the cgroup's CPU quota is 1.50 CPUs,
    /// rounded down; the affinity mask allows 8)`.
    pub fn describe(&self) -> String {
        let mask = affinity();
        let mask_text = mask.map_or("?".into(), |n| n.to_string());
        match self.quota {
            Some(q) => format!(
                "{} (the cgroup's CPU quota is {q:.2} CPUs, rounded down; the affinity mask allows {mask_text})",
                self.usable
            ),
            None if mask.is_some_and(|m| m > self.usable) => format!(
                "{} (the affinity mask allows {mask_text}; a cgroup v1 CPU quota or another limit gives fewer)",
                self.usable
            ),
            None => format!("{} (the affinity mask; no cgroup CPU quota)", self.usable),
        }
    }
}

/// The CPUs in this process's affinity mask.
fn affinity() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = text
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    let mut n = 0;
    for part in list.split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<usize>().ok()? + 1 - a.parse::<usize>().ok()?,
            None => 1,
        };
    }
    Some(n)
}

/// The tightest CPU quota on the path from this process's cgroup to the
/// root, in CPUs: cgroup v2 (`cpu.max`), else v1 (`cpu.cfs_quota_us`);
/// `None` without one.
fn cgroup_quota(self_cgroup: &Path, root: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(self_cgroup).ok()?;
    let v2 = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .and_then(|path| {
            tightest(&root.join(path.trim_start_matches('/')), root, |dir| {
                parse_cpu_max(&std::fs::read_to_string(dir.join("cpu.max")).ok()?)
            })
        });
    v2.or_else(|| {
        // `N:cpu,cpuacct:/path`, mounted at `root/cpu,cpuacct` (or `cpu`).
        let (controllers, path) = text.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == "cpu")
                .then_some((controllers, path))
        })?;
        let mount = [controllers, "cpu", "cpu,cpuacct", "cpuacct,cpu"]
            .iter()
            .map(|m| root.join(m))
            .find(|m| m.is_dir())?;
        tightest(&mount.join(path.trim_start_matches('/')), &mount, |dir| {
            let quota: f64 = std::fs::read_to_string(dir.join("cpu.cfs_quota_us"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let period: f64 = std::fs::read_to_string(dir.join("cpu.cfs_period_us"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            (quota > 0.0 && period > 0.0).then(|| quota / period)
        })
    })
}

/// The smallest `read` of `dir` and of each of its parents up to `root`.
fn tightest(dir: &Path, root: &Path, read: impl Fn(&Path) -> Option<f64>) -> Option<f64> {
    let mut dir = dir.to_path_buf();
    let mut least: Option<f64> = None;
    loop {
        if let Some(q) = read(&dir) {
            least = Some(least.map_or(q, |t| t.min(q)));
        }
        if dir == root || !dir.pop() || !dir.starts_with(root) {
            return least;
        }
    }
}

/// `cpu.max` is `QUOTA PERIOD` in microseconds, or `max PERIOD`.
fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut parts = text.split_whitespace();
    let quota: f64 = parts.next()?.parse().ok()?;
    let period: f64 = parts.next()?.parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_is_quota_over_period_and_max_is_none() {
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(1.5));
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max(""), None);
    }

    #[test]
    fn the_tightest_quota_on_the_way_to_the_root_counts() {
        let root = std::env::temp_dir().join(format!("rm-cgroup-{}", std::process::id()));
        let leaf = root.join("kubepods/pod1/ctr");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(root.join("kubepods/cpu.max"), "400000 100000\n").unwrap();
        std::fs::write(root.join("kubepods/pod1/cpu.max"), "150000 100000\n").unwrap();
        std::fs::write(leaf.join("cpu.max"), "max 100000\n").unwrap();
        let me = root.join("cgroup");
        std::fs::write(&me, "0::/kubepods/pod1/ctr\n").unwrap();
        assert_eq!(cgroup_quota(&me, &root), Some(1.5));
        std::fs::write(&me, "0::/\n").unwrap();
        assert_eq!(cgroup_quota(&me, &root), None);
        // cgroup v1: the cpu controller's quota over its period.
        let v1 = root.join("cpu,cpuacct/docker/abc");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(v1.join("cpu.cfs_quota_us"), "250000\n").unwrap();
        std::fs::write(v1.join("cpu.cfs_period_us"), "100000\n").unwrap();
        std::fs::write(root.join("cpu,cpuacct/cpu.cfs_quota_us"), "-1\n").unwrap();
        std::fs::write(root.join("cpu,cpuacct/cpu.cfs_period_us"), "100000\n").unwrap();
        std::fs::write(&me, "4:cpu,cpuacct:/docker/abc\n0::/\n").unwrap();
        assert_eq!(cgroup_quota(&me, &root), Some(2.5));
        std::fs::write(&me, "4:cpu,cpuacct:/\n").unwrap();
        assert_eq!(cgroup_quota(&me, &root), None, "-1 is no quota");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn this_process_has_a_budget_of_at_least_one_cpu() {
        let b = CpuBudget::current();
        assert!(b.usable >= 1);
        assert!(b.describe().starts_with(&b.usable.to_string()));
        assert!(affinity().is_some_and(|n| n >= 1));
    }
}
