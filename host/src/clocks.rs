//! The guest's clocks, coarse on purpose. A job reads wall-clock and
//! monotonic time in steps of [`limits::GUEST_CLOCK_RESOLUTION`], and its
//! monotonic clock starts at zero when the job does, so it can time neither
//! the host's uptime nor another tenant's work (a shader compile, a cache
//! hit, the GPU's queue) to better than that step.

use crate::limits::GUEST_CLOCK_RESOLUTION;
use std::time::{Duration, Instant, SystemTime};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// `wasi:clocks/wall-clock`, floored to the resolution.
pub(crate) struct CoarseWallClock;

impl HostWallClock for CoarseWallClock {
    fn resolution(&self) -> Duration {
        GUEST_CLOCK_RESOLUTION
    }

    fn now(&self) -> Duration {
        let since_epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Duration::from_nanos(floor(since_epoch.as_nanos() as u64))
    }
}

/// `wasi:clocks/monotonic-clock`: nanoseconds since the job started, floored
/// to the resolution.
pub(crate) struct CoarseMonotonicClock {
    started: Instant,
}

impl CoarseMonotonicClock {
    pub(crate) fn new() -> Self {
        CoarseMonotonicClock {
            started: Instant::now(),
        }
    }
}

impl HostMonotonicClock for CoarseMonotonicClock {
    fn resolution(&self) -> u64 {
        GUEST_CLOCK_RESOLUTION.as_nanos() as u64
    }

    fn now(&self) -> u64 {
        floor(self.started.elapsed().as_nanos() as u64)
    }
}

fn floor(nanos: u64) -> u64 {
    let step = GUEST_CLOCK_RESOLUTION.as_nanos() as u64;
    nanos - nanos % step
}
