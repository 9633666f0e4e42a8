//! What a running `agora host` is doing, for `agora host status`: written
//! by the provider after each heartbeat to a file of its own (one per
//! provider key), replaced whole by a rename so a reader never sees half
//! of it, and read by another process.

use agora_wire::api::Progress;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A host's state at its last heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostStatus {
    pub provider: String,
    pub market: String,
    pub pid: u32,
    pub started_at_ms: i64,
    /// When this was written (after a heartbeat, answered or not).
    pub updated_at_ms: i64,
    pub heartbeat_interval_ms: u64,
    /// The last heartbeat's failure, if it failed.
    pub heartbeat_error: Option<String>,
    /// Why the host takes no new work now (its policy), if it does not.
    pub paused: Option<String>,
    /// Cores idle over the last heartbeat's interval.
    pub free_cpu_cores: Option<f64>,
    pub max_concurrent: u32,
    pub running: Vec<RunningUnit>,
    /// Results returned since the host started.
    pub answered: u64,
    /// Runs the market stopped (their job cancelled, or their lease lapsed).
    pub stopped: u64,
}

/// A unit the host runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunningUnit {
    pub lease_id: String,
    pub package: String,
    pub unit: u32,
    pub progress: Option<Progress>,
}

impl HostStatus {
    /// Replace the file at `path` with this status.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Each writer its own partial file: two hosts started with one key
        // by mistake never rename each other's half-written one.
        let partial = path.with_extension(format!("json.{}.partial", std::process::id()));
        std::fs::write(
            &partial,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&partial, path)
    }

    /// The status at `path`, if a host wrote one.
    pub fn read(path: &Path) -> std::io::Result<HostStatus> {
        let bytes = std::fs::read(path)?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }

    /// Whether the host that wrote it still writes: its last write is
    /// within three heartbeats of `now_ms`.
    pub fn is_current(&self, now_ms: i64) -> bool {
        now_ms - self.updated_at_ms <= 3 * self.heartbeat_interval_ms.max(1000) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_reads_back_whole_and_ages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts").join("abc.json");
        let status = HostStatus {
            provider: "abc".into(),
            updated_at_ms: 10_000,
            heartbeat_interval_ms: 5_000,
            running: vec![RunningUnit {
                lease_id: "l1".into(),
                package: "mandelbrot".into(),
                unit: 3,
                progress: Some(Progress { done: 1, total: 4 }),
            }],
            ..HostStatus::default()
        };
        status.write(&path).unwrap();
        assert_eq!(HostStatus::read(&path).unwrap(), status);
        let files = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(files, 1, "no partial file left");
        assert!(status.is_current(25_000));
        assert!(!status.is_current(25_001));
    }
}
