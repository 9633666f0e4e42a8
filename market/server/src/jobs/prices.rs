//! Prices: the going rate per device class, read off recent accepted
//! trades (each weighted by its provider's reputation; trades of providers
//! not trusted at their grant are not counted, so a flock of fresh keys
//! trading among themselves moves no price), and the queue priority a
//! job's bid earns: its bid when its cap can pay the going rate at that
//! bid, else 0 (a buyer cannot jump the queue with a bid its cap never
//! pays, nor park a prefix of units nobody can afford at its head).

use super::reputation::reputation_mean;
use super::*;
use agora_wire::api::ClassPrice;
use std::collections::BTreeMap;

/// How far back trades count toward the going rate.
pub const PRICE_WINDOW_MS: i64 = 7 * 24 * 3600 * 1000;
/// Most recent trades read for the going rate: bounds the query, whatever
/// the market's volume.
pub const PRICE_SAMPLE_TRADES: i64 = 10_000;
/// How long a computed going rate serves submits before it is read again.
const GOING_RATE_TTL_MS: i64 = 10_000;

/// One accepted run: the rates it was paid (ask times bid), the class of
/// device it ran on, and how much its provider's word weighs.
struct Trade {
    class: String,
    rate: Ask,
    weight: f64,
}

/// The value below which lies at least half of the total weight (the
/// lower weighted median); 0 when nothing weighs.
fn weighted_median(mut values: Vec<(u64, f64)>) -> u64 {
    values.retain(|(_, w)| *w > 0.0);
    values.sort_by_key(|(v, _)| *v);
    let half = values.iter().map(|(_, w)| w).sum::<f64>() / 2.0;
    let mut seen = 0.0;
    for (v, w) in &values {
        seen += w;
        if seen >= half {
            return *v;
        }
    }
    0
}

/// Each rate's weighted median over `trades`.
fn median_rate<'a>(trades: impl Iterator<Item = &'a Trade> + Clone) -> Ask {
    let of = |part: fn(&Ask) -> u64| {
        weighted_median(trades.clone().map(|t| (part(&t.rate), t.weight)).collect())
    };
    Ask {
        per_billion_fuel: of(|a| a.per_billion_fuel),
        per_gpu_second: of(|a| a.per_gpu_second),
        per_wall_second: of(|a| a.per_wall_second),
    }
}

/// The most a run of a unit with these limits can cost at `rate`, as the
/// lease query reckons it (`lease.rs`: fuel, GPU time and wall time each
/// at the unit's limit).
pub(super) fn worst_case(rate: Ask, fuel_limit: u64, timeout_ms: u64) -> u128 {
    (rate.per_billion_fuel as u128 * fuel_limit as u128) / 1_000_000_000
        + (rate.per_gpu_second as u128 * timeout_ms as u128) / 1000
        + (rate.per_wall_second as u128 * timeout_ms as u128) / 1000
}

/// The queue priority of a job's units: its bid when its cap pays a run
/// at the going rate times the bid (or when there is no going rate yet),
/// else 0.
pub(super) fn priority_of(
    bid_percent: u32,
    unit_cap: u64,
    limits: &UnitLimits,
    going: Option<Ask>,
) -> u32 {
    let Some(rate) = going else {
        return bid_percent;
    };
    let worst = worst_case(rate, limits.fuel, limits.timeout_ms) * bid_percent as u128;
    if worst <= unit_cap as u128 * 100 {
        bid_percent
    } else {
        0
    }
}

/// The cached going rate: when it was read, and what it was.
#[derive(Default)]
pub(super) struct GoingRateCache(std::sync::Mutex<Option<(i64, Option<Ask>)>>);

impl Jobs {
    /// The accepted trades of the price window, newest first, at most
    /// [`PRICE_SAMPLE_TRADES`].
    async fn recent_trades(&self, now: i64) -> Result<Vec<Trade>, ApiError> {
        let rows = sqlx::query(
            "SELECT l.device_class AS class, l.ask_per_billion_fuel AS f, l.ask_per_gpu_second AS g, l.ask_per_wall_second AS w, p.good AS good, p.bad AS bad
             FROM leases l JOIN providers p ON p.id = l.provider
             WHERE l.state = 'accepted' AND l.trusted = 1 AND l.answered_at_ms > $1
             ORDER BY l.answered_at_ms DESC LIMIT $2",
        )
        .bind(now - PRICE_WINDOW_MS)
        .bind(PRICE_SAMPLE_TRADES)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let rate = |c: &str| r.try_get::<i64, _>(c).map(|v| v.max(0) as u64);
                Ok(Trade {
                    class: r.try_get("class")?,
                    rate: Ask {
                        per_billion_fuel: rate("f")?,
                        per_gpu_second: rate("g")?,
                        per_wall_second: rate("w")?,
                    },
                    weight: reputation_mean(r.try_get("good")?, r.try_get("bad")?),
                })
            })
            .collect()
    }

    /// The going rate of every class, the classes apart (by name), with
    /// how many providers of each are online.
    pub async fn prices(&self, now: i64) -> Result<(Option<Ask>, Vec<ClassPrice>), ApiError> {
        let trades = self.recent_trades(now).await?;
        let overall = (!trades.is_empty()).then(|| median_rate(trades.iter()));
        let mut by_class: BTreeMap<&str, Vec<&Trade>> = BTreeMap::new();
        for t in &trades {
            by_class.entry(&t.class).or_default().push(t);
        }
        let mut online: BTreeMap<String, u64> = BTreeMap::new();
        for p in self.providers(now).await?.iter().filter(|p| p.online) {
            *online.entry(p.device_class.clone()).or_default() += 1;
        }
        let prices = by_class
            .into_iter()
            .map(|(class, trades)| ClassPrice {
                class: class.to_string(),
                rate: median_rate(trades.iter().copied()),
                trades: trades.len() as u64,
                providers_online: online.get(class).copied().unwrap_or(0),
            })
            .collect();
        Ok((overall, prices))
    }

    /// The going rate, all classes together (None before any trade), read
    /// at most once per [`GOING_RATE_TTL_MS`] by this replica.
    pub(super) async fn going_rate(&self, now: i64) -> Result<Option<Ask>, ApiError> {
        if let Some((at, rate)) = *self.going.0.lock().expect("not poisoned")
            && now - at < GOING_RATE_TTL_MS
            && now >= at
        {
            return Ok(rate);
        }
        let (rate, _) = self.prices(now).await?;
        *self.going.0.lock().expect("not poisoned") = Some((now, rate));
        Ok(rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_median_follows_the_weight_not_the_count() {
        // Nine weightless trades at 1 and one weighty trade at 50.
        let mut v: Vec<(u64, f64)> = (0..9).map(|_| (1, 0.0)).collect();
        v.push((50, 0.9));
        assert_eq!(weighted_median(v), 50);
        assert_eq!(weighted_median(vec![(1, 1.0), (2, 1.0), (3, 1.0)]), 2);
        assert_eq!(weighted_median(vec![(1, 3.0), (100, 1.0)]), 1);
        assert_eq!(weighted_median(Vec::new()), 0);
    }

    #[test]
    fn a_bid_the_cap_cannot_pay_queues_last() {
        let limits = UnitLimits {
            fuel: 1_000_000_000,
            memory_bytes: 1 << 20,
            timeout_ms: 10_000,
            gpu: false,
        };
        let rate = Ask {
            per_billion_fuel: 10,
            per_gpu_second: 1,
            per_wall_second: 0,
        };
        // Worst case at the rate: 10 + 10 = 20 credits.
        assert_eq!(worst_case(rate, limits.fuel, limits.timeout_ms), 20);
        assert_eq!(priority_of(300, 60, &limits, Some(rate)), 300);
        assert_eq!(priority_of(300, 59, &limits, Some(rate)), 0);
        assert_eq!(priority_of(300, 1, &limits, None), 300);
    }
}
