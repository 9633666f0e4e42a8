//! Providers: registration with their asks and capabilities, heartbeats
//! that renew only the leases they name, the public listing, the market's
//! live figures and suggested price, and a provider's activity.

use super::reputation::reputation_mean;
use super::*;

/// A heartbeat's `keeps`: at most [`MAX_HEARTBEAT_KEPT`] blake3 digests.
fn check_keeps(keeps: &[String]) -> Result<(), ApiError> {
    if keeps.len() > MAX_HEARTBEAT_KEPT || !keeps.iter().all(|d| agora_wire::is_digest_hex(d)) {
        return Err(ApiError::Invalid(format!(
            "keeps: at most {MAX_HEARTBEAT_KEPT} blake3 digests (64 lowercase hex digits)"
        )));
    }
    Ok(())
}

/// A heartbeat's device readings: at most `MAX_PROVIDER_GPUS`, names
/// checked as registered devices' are (`check_gpu_text`), and readings a
/// device can have (shown to everyone in the provider listing).
fn check_devices(devices: &[agora_wire::api::DeviceTelemetry]) -> Result<(), ApiError> {
    use agora_wire::limits::{
        MAX_GPU_CELSIUS_READING, MAX_GPU_MEMORY_BYTES, MAX_GPU_WATTS_READING, MAX_PROVIDER_GPUS,
        check_gpu_text,
    };
    if devices.len() > MAX_PROVIDER_GPUS {
        return Err(ApiError::Invalid(format!(
            "devices: at most {MAX_PROVIDER_GPUS} (MAX_PROVIDER_GPUS)"
        )));
    }
    for d in devices {
        check_gpu_text("devices[].name", &d.name)?;
        let within = |v: Option<f64>, max: f64| v.is_none_or(|v| (0.0..=max).contains(&v));
        if !within(d.utilization_percent, 100.0)
            || !within(d.celsius, MAX_GPU_CELSIUS_READING)
            || !within(d.watts, MAX_GPU_WATTS_READING)
            || d.memory_used_bytes
                .is_some_and(|b| b > MAX_GPU_MEMORY_BYTES)
        {
            return Err(ApiError::Invalid(format!(
                "devices: `{}` reads what no device can",
                d.name
            )));
        }
    }
    Ok(())
}

/// A registration's asks within [`MAX_ASK`], and its asks per device class
/// each of a class one of its devices is (a price for a card it does not
/// have would be shown as a trade nobody made), at most `MAX_PROVIDER_GPUS`.
fn check_asks(r: &RegisterProvider) -> Result<(), ApiError> {
    use agora_wire::limits::MAX_PROVIDER_GPUS;
    let one = |ask: &Ask| -> Result<(), ApiError> {
        check_ask("ask.per_billion_fuel", ask.per_billion_fuel)?;
        check_ask("ask.per_gpu_second", ask.per_gpu_second)?;
        check_ask("ask.per_wall_second", ask.per_wall_second)?;
        Ok(())
    };
    one(&r.ask)?;
    if r.class_asks.len() > MAX_PROVIDER_GPUS {
        return Err(ApiError::Invalid(format!(
            "class_asks: at most {MAX_PROVIDER_GPUS} (MAX_PROVIDER_GPUS)"
        )));
    }
    let mut classes: Vec<String> = r.capabilities.gpus.iter().map(|g| g.class()).collect();
    if classes.is_empty() {
        classes.push(agora_wire::api::CPU_CLASS.to_string());
    }
    for (class, ask) in &r.class_asks {
        if !classes.contains(class) {
            return Err(ApiError::Invalid(format!(
                "class_asks: this provider has no device of class `{class}` (its classes: {})",
                classes.join(", ")
            )));
        }
        one(ask)?;
    }
    Ok(())
}

impl Jobs {
    pub async fn register(
        &self,
        provider: &KeyId,
        r: RegisterProvider,
        now: i64,
    ) -> Result<(), ApiError> {
        check_asks(&r)?;
        if r.max_concurrent == 0 || r.max_concurrent > MAX_CONCURRENT {
            return Err(ApiError::Invalid(format!(
                "max_concurrent is 1 to {MAX_CONCURRENT}"
            )));
        }
        agora_wire::limits::check_capabilities(&r.capabilities)?;
        let accepts = super::requirements::check_work_filter(&r.accepts)?;
        if !matches!(r.capabilities.kind.as_str(), "native" | "browser") {
            return Err(ApiError::Invalid(format!(
                "capabilities.kind is `native` or `browser`, not `{}`",
                r.capabilities.kind
            )));
        }
        let mut r = r;
        let speed_claim = self.rate_speed(provider, &mut r.capabilities, now).await?;
        let caps = serde_json::to_string(&r.capabilities).expect("plain JSON");
        let ask = r.capabilities.ask_in_force(r.ask, &r.class_asks);
        let prior_bad = if r.capabilities.kind == "browser" {
            BROWSER_PRIOR_BAD
        } else {
            0.0
        };
        let mut tx = self.db.write().await?;
        sqlx::query(
            "INSERT INTO providers (id, capabilities, ask_per_billion_fuel, ask_per_gpu_second, max_concurrent, has_gpu, telemetry, last_heartbeat_ms, registered_at_ms, bad, ask_per_wall_second, speed_claim, speed_rated_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, '{}', $7, $7, $8, $9, $10, $7)
             ON CONFLICT (id) DO UPDATE SET capabilities = $2, ask_per_billion_fuel = $3, ask_per_gpu_second = $4, max_concurrent = $5, has_gpu = $6, last_heartbeat_ms = $7, ask_per_wall_second = $9, speed_claim = $10, speed_rated_at_ms = $7",
        )
        .bind(provider.as_str())
        .bind(caps)
        .bind(ask.per_billion_fuel as i64)
        .bind(ask.per_gpu_second as i64)
        .bind(r.max_concurrent as i64)
        .bind(!r.capabilities.gpus.is_empty() as i64)
        .bind(now)
        .bind(prior_bad)
        .bind(ask.per_wall_second as i64)
        .bind(i64::from(speed_claim))
        .execute(&mut *tx)
        .await?;
        self.record_gpus(&mut tx, provider, &r.capabilities.gpus)
            .await?;
        self.record_work_filter(&mut tx, provider, &accepts).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Record telemetry and running units' progress and logs, renew the
    /// leases the provider names as running (never past their deadline),
    /// and tell it which of them to stop: those the market no longer runs.
    pub async fn heartbeat(
        &self,
        provider: &KeyId,
        mut beat: Heartbeat,
        now: i64,
    ) -> Result<HeartbeatReply, ApiError> {
        let live = std::mem::take(&mut beat.leases);
        if live.len() > 1024 {
            return Err(ApiError::Invalid(
                "at most 1024 leases per heartbeat".into(),
            ));
        }
        check_devices(&beat.devices)?;
        if !(0.0..=agora_wire::limits::MAX_CPU_CORES as f64).contains(&beat.free_cpu_cores) {
            return Err(ApiError::Invalid(format!(
                "free_cpu_cores is 0 to {} (MAX_CPU_CORES)",
                agora_wire::limits::MAX_CPU_CORES
            )));
        }
        // What it keeps is for leasing only, never in its public telemetry;
        // checked before anything is written.
        let keeps = beat.keeps.take();
        if let Some(keeps) = &keeps {
            check_keeps(keeps)?;
        }
        let done = sqlx::query(
            "UPDATE providers SET telemetry = $1, last_heartbeat_ms = $2 WHERE id = $3",
        )
        .bind(serde_json::to_string(&beat).expect("plain JSON"))
        .bind(now)
        .bind(provider.as_str())
        .execute(&self.db.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(ApiError::NotFound("register this provider first".into()));
        }
        self.backfill_gpus(provider).await?;
        // A rating is no reason to fail a heartbeat either: the next one
        // rates again.
        if let Err(e) = self.rerate_speed(provider, now).await {
            tracing::warn!(provider = %provider, "rating its speed again: {e}");
        }
        // The plotted history is no reason to fail a heartbeat (its leases
        // are renewed and stop notices sent below).
        if let Err(e) = self.record_sample(provider, &beat, now).await {
            tracing::warn!(provider = %provider, "keeping a telemetry sample: {e}");
        }
        if let Some(keeps) = keeps {
            self.record_keeps(provider, &keeps).await?;
        }
        for lease in &live {
            self.record_live(provider, &lease.lease_id, lease.progress, &lease.logs, now)
                .await?;
        }
        let named: Vec<&str> = live.iter().map(|l| l.lease_id.as_str()).collect();
        let leases_extended = self.renew(provider, &named, now).await?;
        let stop = self.not_running(provider, &named, now).await?;
        Ok(HeartbeatReply {
            leases_extended,
            stop,
        })
    }

    /// Which of `named` are not active leases of `provider` (a buyer's or
    /// a canary's) that it may still answer: their job was cancelled or
    /// ended, they lapsed, or their unit was decided without them. A
    /// result for one would be refused, so the provider stops it and frees
    /// the slot. Ids of other providers' leases are answered the same as
    /// unknown ones.
    async fn not_running(
        &self,
        provider: &KeyId,
        named: &[&str],
        now: i64,
    ) -> Result<Vec<String>, ApiError> {
        if named.is_empty() {
            return Ok(Vec::new());
        }
        let list = (0..named.len())
            .map(|i| format!("${}", i + 3))
            .collect::<Vec<_>>()
            .join(", ");
        let mut running = std::collections::HashSet::new();
        for (table, key) in LEASE_TABLES {
            let sql = format!(
                "SELECT {key} AS id FROM {table} WHERE provider = $1 AND state = 'active' AND expires_at_ms > $2 AND {key} IN ({list})"
            );
            let mut query = sqlx::query(&sql).bind(provider.as_str()).bind(now);
            for lease in named {
                query = query.bind(*lease);
            }
            for row in query.fetch_all(&self.db.pool).await? {
                running.insert(row.try_get::<String, _>("id")?);
            }
        }
        Ok(named
            .iter()
            .filter(|l| !running.contains(**l))
            .map(|l| l.to_string())
            .collect())
    }

    /// Replace what `provider` says it keeps (for data-local leasing): only
    /// the shared inputs of jobs it held a lease of, which the market served
    /// it; a claim of any other digest is ignored, so no key steers a
    /// buyer's units to itself by naming the buyer's data.
    async fn record_keeps(&self, provider: &KeyId, keeps: &[String]) -> Result<(), ApiError> {
        let mut tx = self.db.write().await?;
        sqlx::query("DELETE FROM provider_blobs WHERE provider = $1")
            .bind(provider.as_str())
            .execute(&mut *tx)
            .await?;
        for digest in keeps.iter().collect::<std::collections::BTreeSet<_>>() {
            sqlx::query(
                "INSERT INTO provider_blobs (provider, digest) SELECT $1, $2
                 WHERE EXISTS (SELECT 1 FROM job_shared s JOIN leases l ON l.job_id = s.job_id WHERE s.digest = $2 AND l.provider = $1)",
            )
            .bind(provider.as_str())
            .bind(digest)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Renew `named` leases of `provider` that are still active: a lease
    /// lives [`JobsConfig::lease_ttl_ms`] past the last heartbeat naming it,
    /// never past its deadline. Canary leases are renewed the same way.
    pub(super) async fn renew(
        &self,
        provider: &KeyId,
        named: &[&str],
        now: i64,
    ) -> Result<u64, ApiError> {
        if named.is_empty() {
            return Ok(0);
        }
        let until = now + self.config.lease_ttl_ms;
        let mut renewed = 0;
        // On PostgreSQL each lease renews in its own statement (a renewal
        // needs no other's): a transaction holding several leases' rows
        // could wait in a cycle with a settlement expiring the same job's
        // leases. SQLite's one writer has no cycle, and one commit is one
        // fsync.
        if self.db.kind == Kind::Postgres {
            for lease in named {
                for (table, key) in LEASE_TABLES {
                    renewed +=
                        renew_row(&self.db.pool, (table, key), provider, lease, until, now).await?;
                }
            }
            return Ok(renewed);
        }
        let mut tx = self.db.write().await?;
        for lease in named {
            for (table, key) in LEASE_TABLES {
                renewed += renew_row(&mut *tx, (table, key), provider, lease, until, now).await?;
            }
        }
        tx.commit().await?;
        Ok(renewed)
    }

    pub async fn providers(&self, now: i64) -> Result<Vec<ProviderInfo>, ApiError> {
        let rows = sqlx::query("SELECT * FROM providers ORDER BY last_heartbeat_ms DESC LIMIT 500")
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(|r| self.provider_from(r, now)).collect()
    }

    pub(super) fn provider_from(&self, r: &AnyRow, now: i64) -> Result<ProviderInfo, ApiError> {
        let (good, bad): (f64, f64) = (r.try_get("good")?, r.try_get("bad")?);
        let last: i64 = r.try_get("last_heartbeat_ms")?;
        let capabilities =
            serde_json::from_str::<Capabilities>(&r.try_get::<String, _>("capabilities")?)
                .unwrap_or_default();
        Ok(ProviderInfo {
            id: r.try_get("id")?,
            ask: Ask {
                per_billion_fuel: r.try_get::<i64, _>("ask_per_billion_fuel")? as u64,
                per_gpu_second: r.try_get::<i64, _>("ask_per_gpu_second")? as u64,
                per_wall_second: r.try_get::<i64, _>("ask_per_wall_second")? as u64,
            },
            device_class: capabilities.device_class(),
            capabilities,
            max_concurrent: r.try_get::<i64, _>("max_concurrent")? as u32,
            online: now - last <= self.config.heartbeat_fresh_ms,
            last_heartbeat_ms: last,
            telemetry: serde_json::from_str(&r.try_get::<String, _>("telemetry")?)
                .unwrap_or_default(),
            reputation: reputation_mean(good, bad),
            units_done: r.try_get::<i64, _>("units_done")? as u64,
        })
    }

    /// Live figures, the going rate per device class, and a suggested
    /// price: the going rate of all classes (before any trade, the median
    /// ask of the online providers trusted now, or of all online ones when
    /// none is), raised by up to 2x as the queue grows past the online
    /// capacity.
    pub async fn stats(&self, now: i64) -> Result<agora_wire::api::MarketStats, ApiError> {
        let online: Vec<ProviderInfo> = self
            .providers(now)
            .await?
            .into_iter()
            .filter(|p| p.online)
            .collect();
        let count = |sql: &'static str| async move {
            Ok::<u64, ApiError>(
                sqlx::query(sql)
                    .fetch_one(&self.db.pool)
                    .await?
                    .try_get::<i64, _>("n")? as u64,
            )
        };
        // Canaries count as running like any lease: no figure tells them apart.
        let running = count(
            "SELECT (SELECT COUNT(*) FROM leases WHERE state = 'active') + (SELECT COUNT(*) FROM canary_runs WHERE state = 'active') AS n",
        )
        .await?;
        let queued = count(
            "SELECT CAST(COALESCE(SUM(u.wanted), 0) AS BIGINT) AS n FROM units u JOIN jobs j ON j.id = u.job_id WHERE u.state = 'queued' AND j.state = 'running'",
        )
        .await?
        .saturating_sub(running);
        let capacity: u64 = online.iter().map(|p| p.max_concurrent as u64).sum();
        let pressure = if capacity == 0 {
            2.0
        } else {
            (1.0 + queued as f64 / capacity as f64).min(2.0)
        };
        let view = self.market_view(now).await?;
        let base = view
            .overall
            .unwrap_or_else(|| Jobs::median_seller_ask(&view, &online));
        let scale = |v: u64| (v as f64 * pressure).ceil() as u64;
        Ok(agora_wire::api::MarketStats {
            providers_online: online.len() as u64,
            gpus_online: online
                .iter()
                .map(|p| p.capabilities.gpus.len() as u64)
                .sum(),
            queued_units: queued,
            running_units: running,
            capacity,
            suggested_ask: Ask {
                per_billion_fuel: scale(base.per_billion_fuel),
                per_gpu_second: scale(base.per_gpu_second),
                per_wall_second: scale(base.per_wall_second),
            },
            prices: view.classes.clone(),
        })
    }

    /// What `provider` did over the last `buckets` buckets of `bucket_ms`
    /// up to `now`: results returned, credits earned, slots busy. Public,
    /// like the rest of a provider's record.
    pub async fn activity(
        &self,
        provider: &str,
        bucket_ms: i64,
        buckets: usize,
        now: i64,
    ) -> Result<ProviderActivity, ApiError> {
        let bucket_ms = bucket_ms.clamp(60_000, 7 * 24 * 3600 * 1000);
        let buckets = buckets.clamp(1, 200);
        let p = sqlx::query("SELECT max_concurrent FROM providers WHERE id = $1")
            .bind(provider)
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no provider `{provider}`")))?;
        let max_concurrent = p.try_get::<i64, _>("max_concurrent")?.max(1);
        let start = now - bucket_ms * buckets as i64;
        let rows = sqlx::query(
            "SELECT created_at_ms, answered_at_ms, expires_at_ms, state, cost, paid FROM leases WHERE provider = $1 AND created_at_ms >= $2 ORDER BY created_at_ms LIMIT 100000",
        )
        .bind(provider)
        .bind(start)
        .fetch_all(&self.db.pool)
        .await?;
        let mut out: Vec<ActivityBucket> = (0..buckets)
            .map(|i| ActivityBucket {
                start_ms: start + i as i64 * bucket_ms,
                units: 0,
                earned: 0,
                utilization: 0.0,
            })
            .collect();
        let mut busy = vec![0i64; buckets];
        for r in &rows {
            let created: i64 = r.try_get("created_at_ms")?;
            let answered: Option<i64> = r.try_get("answered_at_ms")?;
            let state: String = r.try_get("state")?;
            // A running lease is busy until now; a lost one until it expired.
            let end = answered.unwrap_or(if state == "active" {
                now
            } else {
                r.try_get::<i64, _>("expires_at_ms")?.min(now)
            });
            let at = |t: i64| ((t - start) / bucket_ms).clamp(0, buckets as i64 - 1) as usize;
            if let Some(t) = answered {
                out[at(t)].units += 1;
            }
            if r.try_get::<i64, _>("paid")? == 1 {
                let cost = r.try_get::<Option<i64>, _>("cost")?.unwrap_or(0) as u64;
                out[at(created)].earned += cost - self.config.fee_of(cost);
            }
            // Spread the busy time over the buckets it covers.
            let mut t = created.max(start);
            while t < end {
                let b = at(t);
                let bucket_end = start + (b as i64 + 1) * bucket_ms;
                let until = end.min(bucket_end);
                busy[b] += until - t;
                t = until;
            }
        }
        for (b, ms) in out.iter_mut().zip(busy) {
            b.utilization = (ms as f64 / (bucket_ms * max_concurrent) as f64).min(1.0);
        }
        Ok(ProviderActivity {
            provider: provider.to_string(),
            bucket_ms,
            max_concurrent: max_concurrent as u32,
            buckets: out,
        })
    }
}

/// Renew `lease` of `provider` in `table` (buyers' leases or canaries')
/// to `until`, never past its deadline, if it is still active at `now`.
async fn renew_row<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    (table, key): (&str, &str),
    provider: &KeyId,
    lease: &str,
    until: i64,
    now: i64,
) -> Result<u64, ApiError> {
    let done = sqlx::query(&format!(
        "UPDATE {table} SET expires_at_ms = CASE WHEN deadline_ms > 0 AND deadline_ms < $1 THEN deadline_ms ELSE $1 END
         WHERE {key} = $2 AND provider = $3 AND state = 'active' AND expires_at_ms > $4"
    ))
    .bind(until)
    .bind(lease)
    .bind(provider.as_str())
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
