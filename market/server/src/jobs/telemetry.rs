//! A provider's machine over time: its heartbeats' readings sampled at
//! most once per [`TELEMETRY_SAMPLE_MS`] and kept [`TELEMETRY_KEPT_MS`]
//! (so a provider has at most a day of minutes, however often it beats),
//! each sample summing up its GPUs, and read back for its dashboard.
//! Public, like the rest of a provider's record.

use super::*;
use agora_wire::api::{DeviceTelemetry, ProviderTelemetry, TelemetrySample};

/// A provider's readings are sampled at most this often.
pub const TELEMETRY_SAMPLE_MS: i64 = 60_000;
/// And kept this long: its dashboard's last day.
pub const TELEMETRY_KEPT_MS: i64 = 24 * 3600 * 1000;
/// Most samples a provider has at once.
const MAX_SAMPLES: i64 = TELEMETRY_KEPT_MS / TELEMETRY_SAMPLE_MS + 1;

/// A heartbeat's GPUs summed up: the mean busy share, the hottest, and
/// the power and memory of all (each over the devices that report it).
fn summed(devices: &[DeviceTelemetry]) -> (Option<f64>, Option<f64>, Option<f64>, Option<u64>) {
    let of = |f: fn(&DeviceTelemetry) -> Option<f64>| -> Vec<f64> {
        devices.iter().filter_map(f).collect()
    };
    let busy = of(|d| d.utilization_percent);
    let hot = of(|d| d.celsius);
    let watts = of(|d| d.watts);
    let memory: Vec<u64> = devices.iter().filter_map(|d| d.memory_used_bytes).collect();
    (
        (!busy.is_empty()).then(|| busy.iter().sum::<f64>() / busy.len() as f64),
        hot.iter().copied().reduce(f64::max),
        (!watts.is_empty()).then(|| watts.iter().sum()),
        (!memory.is_empty()).then(|| memory.iter().fold(0u64, |a, b| a.saturating_add(*b))),
    )
}

impl Jobs {
    /// Keep this heartbeat's readings as `provider`'s sample of the minute
    /// of `now`, unless it has one; forget its samples older than
    /// [`TELEMETRY_KEPT_MS`]. The heartbeat's devices were checked
    /// (`check_devices`: no reading is negative).
    pub(super) async fn record_sample(
        &self,
        provider: &KeyId,
        beat: &Heartbeat,
        now: i64,
    ) -> Result<(), ApiError> {
        // The minute's start: the key keeps one sample a minute, however
        // many heartbeats race (or replicas' clocks differ a little).
        let minute = now - now.rem_euclid(TELEMETRY_SAMPLE_MS);
        let taken =
            sqlx::query("SELECT 1 AS one FROM provider_samples WHERE provider = $1 AND at_ms = $2")
                .bind(provider.as_str())
                .bind(minute)
                .fetch_optional(&self.db.pool)
                .await?;
        if taken.is_some() {
            return Ok(());
        }
        let (busy, celsius, watts, memory) = summed(&beat.devices);
        let mut tx = self.db.write().await?;
        // A missing reading is bound as -1 and stored as NULL: the Any
        // driver prepares a statement with a NULL's type, which a later
        // number would not match on PostgreSQL. (Readings are never
        // negative: `check_devices`.)
        sqlx::query(
            "INSERT INTO provider_samples (provider, at_ms, free_cpu_cores, gpu_utilization, gpu_celsius, gpu_watts, gpu_memory_used)
             VALUES ($1, $2, $3, CASE WHEN $4 < 0 THEN NULL ELSE $4 END, CASE WHEN $5 < 0 THEN NULL ELSE $5 END,
                     CASE WHEN $6 < 0 THEN NULL ELSE $6 END, CASE WHEN $7 < 0 THEN NULL ELSE $7 END)
             ON CONFLICT (provider, at_ms) DO NOTHING",
        )
        .bind(provider.as_str())
        .bind(minute)
        .bind(beat.free_cpu_cores)
        .bind(busy.unwrap_or(-1.0))
        .bind(celsius.unwrap_or(-1.0))
        .bind(watts.unwrap_or(-1.0))
        .bind(memory.map_or(-1, |m| m.min(i64::MAX as u64) as i64))
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM provider_samples WHERE provider = $1 AND at_ms < $2")
            .bind(provider.as_str())
            .bind(now - TELEMETRY_KEPT_MS)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// `provider`'s samples of the last [`TELEMETRY_KEPT_MS`], oldest first.
    pub async fn telemetry(&self, provider: &str, now: i64) -> Result<ProviderTelemetry, ApiError> {
        sqlx::query("SELECT 1 AS one FROM providers WHERE id = $1")
            .bind(provider)
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no provider `{provider}`")))?;
        let rows = sqlx::query(
            "SELECT at_ms, free_cpu_cores, gpu_utilization, gpu_celsius, gpu_watts, gpu_memory_used FROM provider_samples
             WHERE provider = $1 AND at_ms >= $2 ORDER BY at_ms DESC LIMIT $3",
        )
        .bind(provider)
        .bind(now - TELEMETRY_KEPT_MS)
        .bind(MAX_SAMPLES)
        .fetch_all(&self.db.pool)
        .await?;
        // Read newest first (the day's, whatever lies past the limit),
        // returned oldest first.
        let samples = rows
            .iter()
            .rev()
            .map(|r| {
                Ok(TelemetrySample {
                    at_ms: r.try_get("at_ms")?,
                    free_cpu_cores: r.try_get("free_cpu_cores")?,
                    gpu_utilization_percent: r.try_get("gpu_utilization")?,
                    gpu_celsius: r.try_get("gpu_celsius")?,
                    gpu_watts: r.try_get("gpu_watts")?,
                    gpu_memory_used_bytes: r
                        .try_get::<Option<i64>, _>("gpu_memory_used")?
                        .map(|m| m.max(0) as u64),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(ProviderTelemetry {
            provider: provider.to_string(),
            sample_ms: TELEMETRY_SAMPLE_MS,
            samples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_sums_up_the_devices_that_report() {
        let device = |busy: Option<f64>,
                      celsius: Option<f64>,
                      watts: Option<f64>,
                      memory: Option<u64>| DeviceTelemetry {
            name: "card".into(),
            utilization_percent: busy,
            memory_used_bytes: memory,
            celsius,
            watts,
        };
        let devices = [
            device(Some(20.0), Some(60.0), Some(100.0), Some(1 << 30)),
            device(Some(80.0), Some(75.0), None, Some(1 << 30)),
            device(None, None, None, None),
        ];
        assert_eq!(
            summed(&devices),
            (Some(50.0), Some(75.0), Some(100.0), Some(2 << 30))
        );
        assert_eq!(summed(&[]), (None, None, None, None));
    }
}
