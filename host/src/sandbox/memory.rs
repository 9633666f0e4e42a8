//! The memory wall, raised from outside by the supervisor: one cgroup per
//! worker, under the supervisor's own, with a memory limit that counts
//! everything the worker holds (linear memory, host-side blobs, GPU
//! read-backs, the runtime). cgroup v2's `memory.max` where the supervisor's
//! cgroup has the memory controller delegated, else v1's
//! `memory.limit_in_bytes` on hosts still on the v1 hierarchy. The kernel
//! kills a worker that passes it, and the cgroup's OOM counter tells the
//! supervisor that this is why it died. Without either, the worker bounds its
//! own data segment (`RLIMIT_DATA`, see `walls.rs`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// A cgroup made for one worker; removed when dropped (after its worker has
/// been reaped).
#[derive(Debug)]
pub struct WorkerCgroup {
    dir: PathBuf,
    version: Version,
    bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    V2,
    V1,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl WorkerCgroup {
    /// A fresh cgroup limited to `bytes`, or why none could be made.
    pub fn create(bytes: u64) -> Result<WorkerCgroup, String> {
        if !cfg!(target_os = "linux") {
            return Err("cgroups are Linux only".into());
        }
        let name = format!(
            "agora-worker-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut why = Vec::new();
        for version in [Version::V2, Version::V1] {
            match own_cgroup(version) {
                Some(parent) => match Self::make(parent.join(&name), version, bytes) {
                    Ok(cgroup) => return Ok(cgroup),
                    Err(e) => why.push(format!("{version:?}: {e}")),
                },
                None => why.push(format!("{version:?}: no memory hierarchy mounted")),
            }
        }
        Err(format!(
            "no cgroup with a memory limit could be made ({})",
            why.join("; ")
        ))
    }

    fn make(dir: PathBuf, version: Version, bytes: u64) -> Result<WorkerCgroup, String> {
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        // From here on, dropping it removes the directory.
        let cgroup = WorkerCgroup {
            dir,
            version,
            bytes,
        };
        let (limit, swap, group_kill) = match version {
            Version::V2 => ("memory.max", "memory.swap.max", Some("memory.oom.group")),
            Version::V1 => ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes", None),
        };
        let path = cgroup.dir.join(limit);
        if !path.exists() {
            return Err("the memory controller is not enabled there".into());
        }
        std::fs::write(&path, bytes.to_string())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        // No swap beyond the limit (v2 counts swap apart; v1 counts both).
        let swap_value = if version == Version::V2 {
            "0".to_string()
        } else {
            bytes.to_string()
        };
        let _ = std::fs::write(cgroup.dir.join(swap), swap_value);
        if let Some(group_kill) = group_kill {
            let _ = std::fs::write(cgroup.dir.join(group_kill), "1");
        }
        Ok(cgroup)
    }

    /// Move the process `pid` (a worker just started) into the cgroup.
    pub fn attach(&self, pid: u32) -> std::io::Result<()> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
    }

    /// How many times the kernel killed a process here for passing the limit.
    pub fn oom_kills(&self) -> u64 {
        let file = match self.version {
            Version::V2 => "memory.events",
            Version::V1 => "memory.oom_control",
        };
        let text = std::fs::read_to_string(self.dir.join(file)).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn limit_bytes(&self) -> u64 {
        self.bytes
    }

    pub fn describe(&self) -> String {
        let version = match self.version {
            Version::V2 => "v2 memory.max",
            Version::V1 => "v1 memory.limit_in_bytes",
        };
        format!(
            "a cgroup ({version}) of {} MiB per worker",
            self.bytes >> 20
        )
    }
}

impl Drop for WorkerCgroup {
    fn drop(&mut self) {
        // Fails while a process is still inside; the supervisor reaps its
        // worker first.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The directory of this process's own cgroup in the hierarchy `version`.
fn own_cgroup(version: Version) -> Option<PathBuf> {
    let mount = mount_point(
        version,
        &std::fs::read_to_string("/proc/self/mountinfo").ok()?,
    )?;
    let path = cgroup_path(version, &std::fs::read_to_string("/proc/self/cgroup").ok()?)?;
    Some(mount.join(path.trim_start_matches('/')))
}

/// Where the hierarchy is mounted, from `/proc/self/mountinfo`.
fn mount_point(version: Version, mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        let mut fs = fs.split_whitespace();
        let (fstype, _source, options) = (fs.next()?, fs.next()?, fs.next().unwrap_or(""));
        let wanted = match version {
            Version::V2 => fstype == "cgroup2",
            Version::V1 => fstype == "cgroup" && options.split(',').any(|o| o == "memory"),
        };
        if !wanted {
            return None;
        }
        mount.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// This process's cgroup in the hierarchy, from `/proc/self/cgroup`.
fn cgroup_path(version: Version, cgroups: &str) -> Option<String> {
    cgroups.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let wanted = match version {
            Version::V2 => controllers.is_empty(),
            Version::V1 => controllers.split(',').any(|c| c == "memory"),
        };
        wanted.then(|| path.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
30 24 0:26 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755
35 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 30 0:34 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";

    const CGROUPS: &str = "4:memory:/process_api/abc\n1:cpu:/\n0::/user.slice/x.scope";

    #[test]
    fn finds_both_hierarchies() {
        assert_eq!(
            mount_point(Version::V1, MOUNTINFO),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            mount_point(Version::V2, MOUNTINFO),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup_path(Version::V1, CGROUPS).as_deref(),
            Some("/process_api/abc")
        );
        assert_eq!(
            cgroup_path(Version::V2, CGROUPS).as_deref(),
            Some("/user.slice/x.scope")
        );
        assert_eq!(
            mount_point(Version::V1, "30 24 0:26 / /x rw - cgroup cgroup rw,cpu"),
            None
        );
    }
}
