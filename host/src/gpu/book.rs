//! One job's GPU bookkeeping, shared by every backend: the quota it runs
//! under, what it has used, and the argument checks whose wording the guest
//! sees. Backends hold a [`SessionBook`] so a limit means the same thing and
//! fails with the same error on wgpu and on CUDA.

use super::{GpuError, GpuQuota, GpuStats};
use std::time::{Duration, Instant};

/// The longest one wait for the GPU may take even when the job's quota is
/// larger: past it the device is treated as hung.
const SYNC_TIMEOUT_MAX: Duration = Duration::from_secs(600);

/// Quota and usage of one session.
pub(crate) struct SessionBook {
    pub quota: GpuQuota,
    pub stats: GpuStats,
    bytes_live: u64,
}

impl SessionBook {
    pub fn new(quota: GpuQuota) -> Self {
        SessionBook {
            quota,
            stats: GpuStats::default(),
            bytes_live: 0,
        }
    }

    /// Count `size` more live buffer bytes, or refuse past the quota.
    pub fn reserve(&mut self, size: u64) -> Result<(), GpuError> {
        let requested = self.bytes_live + size;
        if requested > self.quota.buffer_bytes_max {
            return Err(GpuError::QuotaExceeded {
                resource: "GPU buffer bytes",
                requested,
                limit: self.quota.buffer_bytes_max,
            });
        }
        self.bytes_live = requested;
        self.stats.buffer_bytes_peak = self.stats.buffer_bytes_peak.max(requested);
        Ok(())
    }

    /// A buffer of `size` bytes was freed.
    pub fn release(&mut self, size: u64) {
        self.bytes_live -= size;
    }

    /// Account GPU time spent in a call since `started`.
    pub fn charge(&mut self, started: Instant) {
        self.stats.gpu_time += started.elapsed();
    }

    fn time_exceeded(&self) -> GpuError {
        GpuError::QuotaExceeded {
            resource: "GPU time (ms)",
            requested: self.stats.gpu_time.as_millis() as u64,
            limit: self.quota.gpu_time_max.as_millis() as u64,
        }
    }

    /// The GPU time the quota leaves, or the quota error once it is spent.
    pub fn time_left(&self) -> Result<Duration, GpuError> {
        let left = self.quota.gpu_time_max.saturating_sub(self.stats.gpu_time);
        if left.is_zero() {
            return Err(self.time_exceeded());
        }
        Ok(left)
    }

    /// How long the next wait for queued work may take: the GPU time the
    /// quota leaves (zero once spent: a backend still looks once), at most
    /// [`SYNC_TIMEOUT_MAX`].
    pub fn wait_timeout(&self) -> Duration {
        self.quota
            .gpu_time_max
            .saturating_sub(self.stats.gpu_time)
            .min(SYNC_TIMEOUT_MAX)
    }

    /// After a wait that finished: the quota error if it finished late
    /// (some drivers finish a wait late instead of timing out).
    pub fn check_time(&self) -> Result<(), GpuError> {
        if self.stats.gpu_time > self.quota.gpu_time_max {
            return Err(self.time_exceeded());
        }
        Ok(())
    }

    /// A wait of `timeout` that did not finish: the device is abandoned.
    pub fn hung(timeout: Duration) -> GpuError {
        GpuError::DeviceLost(format!(
            "GPU work did not finish within {} ms (GPU time quota); the device is abandoned",
            timeout.as_millis()
        ))
    }

    /// Count `count` more dispatches (a standard kernel may be several).
    pub fn count_dispatches(&mut self, count: u64) -> Result<(), GpuError> {
        let requested = self.stats.dispatches + count;
        if requested > self.quota.dispatches_max {
            return Err(GpuError::QuotaExceeded {
                resource: "dispatches",
                requested,
                limit: self.quota.dispatches_max,
            });
        }
        self.time_left()?;
        self.stats.dispatches = requested;
        Ok(())
    }
}

/// `value` must be a multiple of 4 (every size and offset is).
pub(crate) fn aligned(what: &str, value: u64) -> Result<(), GpuError> {
    if value % 4 != 0 {
        return Err(GpuError::InvalidArgument(format!(
            "{what} {value} is not a multiple of 4"
        )));
    }
    Ok(())
}

/// The checks of a new buffer's size that do not depend on the device.
pub(crate) fn check_new_buffer(size: u64, usage: super::Usage) -> Result<(), GpuError> {
    if size == 0 {
        return Err(GpuError::InvalidArgument("buffer size 0".into()));
    }
    aligned("buffer size", size)?;
    if !usage.storage && !usage.uniform {
        return Err(GpuError::InvalidArgument(
            "a buffer needs storage or uniform usage".into(),
        ));
    }
    Ok(())
}

/// `offset..offset+len` must be aligned and inside a buffer of `size` bytes.
pub(crate) fn check_range(size: u64, offset: u64, len: u64) -> Result<(), GpuError> {
    aligned("offset", offset)?;
    aligned("length", len)?;
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(GpuError::InvalidArgument(format!(
            "range {offset}..{} is outside the buffer of {size} bytes",
            offset.saturating_add(len)
        )));
    }
    Ok(())
}

/// The number of f32 in a buffer of `size` bytes a kernel takes as `what`
/// (kernels index with 32 bits).
pub(crate) fn f32_len(size: u64, what: &str) -> Result<u64, GpuError> {
    let n = size / 4;
    if n > u32::MAX as u64 {
        return Err(GpuError::InvalidArgument(format!(
            "{what} has {n} elements, more than 2^32-1"
        )));
    }
    Ok(n)
}

/// A buffer of `size` bytes must hold `elements` f32 to be a kernel's `what`.
pub(crate) fn need(size: u64, what: &str, elements: u64) -> Result<(), GpuError> {
    if size < elements * 4 {
        return Err(GpuError::InvalidArgument(format!(
            "{what} holds {size} bytes but needs {} ({elements} f32)",
            elements * 4
        )));
    }
    Ok(())
}

/// saxpy's x and y must be the same size.
pub(crate) fn same_size(x: u64, y: u64) -> Result<(), GpuError> {
    if x != y {
        return Err(GpuError::InvalidArgument(format!(
            "saxpy: x has {x} bytes but y has {y}"
        )));
    }
    Ok(())
}
