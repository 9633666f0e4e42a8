//! Prices: what runs cost lately per device class, and the queue priority
//! a job's bid earns.
//!
//! - The going rate of a class is read off recent accepted trades of
//!   providers trusted at their grant (a flock of fresh keys trading among
//!   themselves moves nothing), one vote per provider (its own median, so
//!   a trusted key washing trades with its own buyer key is still one
//!   voice), each weighted by its reputation. It is shown, never charged.
//! - A job's priority is weighed against asks, not trades: it is the
//!   highest bid, up to the job's own, at which its cap pays a run of the
//!   median trusted online provider that could take it (one vote each,
//!   weighted by reputation), or 0 when its cap does not pay even that
//!   provider's ask (the unit waits behind every unit that can pay); with
//!   no such provider online no bid is honoured (100). So nobody parks
//!   units at the head of the queue with a bid their cap never pays, and
//!   no trade, however washed, moves anyone's priority.
//! - Both are read at most once per [`MARKET_VIEW_TTL_MS`] by a replica:
//!   the anonymous stats route and every submit share one reading.

use super::reputation::reputation_mean;
use super::*;
use agora_wire::api::ClassPrice;
use agora_wire::limits::MIN_BID_PERCENT;
use std::collections::BTreeMap;
use std::sync::Arc;

/// How far back trades count toward the going rate.
pub const PRICE_WINDOW_MS: i64 = 7 * 24 * 3600 * 1000;
/// Most recent trades read for the going rate: bounds the query, whatever
/// the market's volume.
pub const PRICE_SAMPLE_TRADES: i64 = 10_000;
/// Most online providers read for the asks priorities are weighed against.
pub const PRICE_SAMPLE_PROVIDERS: i64 = 10_000;
/// How long one reading of the market's prices serves before the next.
const MARKET_VIEW_TTL_MS: i64 = 10_000;

/// One accepted run: its provider, the rates it was paid (ask times bid)
/// and the class of device it ran on.
struct Trade {
    provider: String,
    class: String,
    rate: Ask,
    /// Its provider's reputation now.
    weight: f64,
}

/// An online provider trusted now: its ask in force, its device class,
/// and how much its word weighs (its reputation).
#[derive(Clone, Debug)]
pub(super) struct Seller {
    pub(super) provider: String,
    pub(super) ask: Ask,
    pub(super) class: String,
    pub(super) has_gpu: bool,
    /// Its first device's speed as the market rated it.
    pub(super) gflops: Option<u32>,
    /// Its reputation.
    pub(super) weight: f64,
    /// The operator vouches for it.
    pub(super) vouched: bool,
}

/// What the market's prices are at one moment: the sellers bids are
/// weighed against, and the going rate overall and per class.
#[derive(Debug)]
pub(super) struct MarketView {
    pub(super) sellers: Vec<Seller>,
    pub overall: Option<Ask>,
    pub classes: Vec<ClassPrice>,
}

/// The cached view: when it was read, and what it was.
#[derive(Default)]
pub(super) struct MarketViewCache(std::sync::Mutex<Option<(i64, Arc<MarketView>)>>);

/// The value below which lies at least half of the total weight (the
/// lower weighted median); 0 when nothing weighs.
pub(super) fn weighted_median(mut values: Vec<(u64, f64)>) -> u64 {
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

/// Each rate's median over `votes` (rates with their weights).
fn median_rate(votes: &[(Ask, f64)]) -> Ask {
    let of =
        |part: fn(&Ask) -> u64| weighted_median(votes.iter().map(|(a, w)| (part(a), *w)).collect());
    Ask {
        per_billion_fuel: of(|a| a.per_billion_fuel),
        per_gpu_second: of(|a| a.per_gpu_second),
        per_wall_second: of(|a| a.per_wall_second),
    }
}

/// One vote per provider: each provider's median rates over its trades
/// (unweighted among themselves), weighted by its reputation.
fn provider_votes<'a>(trades: impl Iterator<Item = &'a Trade>) -> Vec<(Ask, f64)> {
    let mut by_provider: BTreeMap<&str, (Vec<(Ask, f64)>, f64)> = BTreeMap::new();
    for t in trades {
        let entry = by_provider.entry(&t.provider).or_default();
        entry.0.push((t.rate, 1.0));
        entry.1 = t.weight;
    }
    by_provider
        .into_values()
        .map(|(rates, weight)| (median_rate(&rates), weight))
        .collect()
}

/// The most a run of a unit with these limits can cost at `rate`, as the
/// lease query reckons it (`lease.rs`: fuel, GPU time and wall time each
/// at the unit's limit).
pub(super) fn worst_case(rate: Ask, fuel_limit: u64, timeout_ms: u64) -> u128 {
    (rate.per_billion_fuel as u128 * fuel_limit as u128) / 1_000_000_000
        + (rate.per_gpu_second as u128 * timeout_ms as u128) / 1000
        + (rate.per_wall_second as u128 * timeout_ms as u128) / 1000
}

/// The queue priority of a job's units: the highest bid up to
/// `bid_percent` at which `unit_cap` pays a run at the median ask of the
/// sellers that could take them (with a GPU when they need one; each
/// seller's worst case for these limits, weighted by reputation), or 0
/// when the cap does not pay even that ask. With no such seller there is
/// nothing to weigh a bid against, so none is honoured: the job queues at
/// [`MIN_BID_PERCENT`] (a bid nobody can check could park unpayable units
/// at the head of the queue).
pub(super) fn priority_of(
    bid_percent: u32,
    unit_cap: u64,
    limits: &UnitLimits,
    needs_gpu: bool,
    sellers: &[Seller],
) -> u32 {
    let costs: Vec<(u64, f64)> = sellers
        .iter()
        .filter(|s| s.has_gpu || !needs_gpu)
        .map(|s| {
            let worst = worst_case(s.ask, limits.fuel, limits.timeout_ms);
            (worst.min(u64::MAX as u128) as u64, s.weight)
        })
        .collect();
    if costs.is_empty() {
        return MIN_BID_PERCENT.min(bid_percent);
    }
    // At least a credit: a median of nothing would honour any bid.
    let median = weighted_median(costs).max(1);
    let affordable = (unit_cap as u128 * 100) / median as u128;
    if affordable < MIN_BID_PERCENT as u128 {
        0
    } else {
        affordable.min(bid_percent as u128) as u32
    }
}

impl Jobs {
    /// The accepted trades of the price window, newest first, at most
    /// [`PRICE_SAMPLE_TRADES`].
    async fn recent_trades(&self, now: i64) -> Result<Vec<Trade>, ApiError> {
        let rows = sqlx::query(
            "SELECT l.provider AS provider, l.device_class AS class, l.ask_per_billion_fuel AS f, l.ask_per_gpu_second AS g, l.ask_per_wall_second AS w,
                    p.good AS good, p.bad AS bad
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
                    provider: r.try_get("provider")?,
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

    /// The online providers trusted now, at most [`PRICE_SAMPLE_PROVIDERS`]
    /// (the operator's vouched hosts, then the most reputable), chosen by
    /// trust before the limit: untrusted keys, however many, crowd out no
    /// seller.
    async fn sellers(&self, now: i64) -> Result<Vec<Seller>, ApiError> {
        let rows = sqlx::query(
            "SELECT * FROM (SELECT p.*, (SELECT COUNT(*) FROM vouched v WHERE v.id = p.id) AS vouched,
                                   (p.good + 1.0) / (p.good + p.bad + 2.0) AS mean FROM providers p WHERE p.last_heartbeat_ms >= $1) AS s
             WHERE (s.vouched > 0 AND s.mean >= $3) OR (s.mean >= $4 AND s.confirmed >= $5)
             ORDER BY s.vouched DESC, s.mean DESC, s.id LIMIT $2",
        )
        .bind(now - self.config.heartbeat_fresh_ms)
        .bind(PRICE_SAMPLE_PROVIDERS)
        .bind(VOUCHED_REPUTATION)
        .bind(TRUSTED_REPUTATION)
        .bind(TRUSTED_CONFIRMATIONS)
        .fetch_all(&self.db.pool)
        .await?;
        let mut sellers = Vec::new();
        for r in &rows {
            let record = Record::of(r)?;
            if !record.trusted() {
                continue;
            }
            let info = self.provider_from(r, now)?;
            sellers.push(Seller {
                provider: info.id.clone(),
                ask: info.ask,
                has_gpu: !info.capabilities.gpus.is_empty(),
                gflops: info.capabilities.gpus.first().and_then(|g| g.gflops),
                vouched: record.vouched,
                class: info.device_class,
                weight: info.reputation,
            });
        }
        Ok(sellers)
    }

    /// Read the market's prices now.
    async fn read_market_view(&self, now: i64) -> Result<MarketView, ApiError> {
        let trades = self.recent_trades(now).await?;
        let sellers = self.sellers(now).await?;
        let overall = (!trades.is_empty()).then(|| median_rate(&provider_votes(trades.iter())));
        let mut by_class: BTreeMap<&str, Vec<&Trade>> = BTreeMap::new();
        for t in &trades {
            by_class.entry(&t.class).or_default().push(t);
        }
        let classes = by_class
            .into_iter()
            .map(|(class, trades)| ClassPrice {
                class: class.to_string(),
                rate: median_rate(&provider_votes(trades.iter().copied())),
                trades: trades.len() as u64,
                trusted_online: sellers.iter().filter(|s| s.class == class).count() as u64,
            })
            .collect();
        Ok(MarketView {
            sellers,
            overall,
            classes,
        })
    }

    /// The market's prices, read at most once per [`MARKET_VIEW_TTL_MS`]
    /// by this replica.
    pub(super) async fn market_view(&self, now: i64) -> Result<Arc<MarketView>, ApiError> {
        if let Some((at, view)) = &*self.going.0.lock().expect("not poisoned")
            && (0..MARKET_VIEW_TTL_MS).contains(&(now - at))
        {
            return Ok(view.clone());
        }
        let view = Arc::new(self.read_market_view(now).await?);
        *self.going.0.lock().expect("not poisoned") = Some((now, view.clone()));
        Ok(view)
    }

    /// The queue priority a job's bid earns now ([`priority_of`]).
    pub(super) async fn priority(
        &self,
        bid_percent: u32,
        unit_cap: u64,
        limits: &UnitLimits,
        needs_gpu: bool,
        now: i64,
    ) -> Result<u32, ApiError> {
        let view = self.market_view(now).await?;
        Ok(priority_of(
            bid_percent,
            unit_cap,
            limits,
            needs_gpu,
            &view.sellers,
        ))
    }

    /// The median ask of the trusted providers online (one vote each,
    /// weighted by reputation): a price before any trade that fresh keys
    /// asking nothing cannot drag down while anyone trusted is online.
    /// With none trusted online, the median ask of the `online` ones, which
    /// fresh keys can move: a market nobody is trusted in yet has no better
    /// figure, and it is only shown, never weighed against a bid.
    pub(super) fn median_seller_ask(view: &MarketView, online: &[ProviderInfo]) -> Ask {
        let votes: Vec<(Ask, f64)> = if view.sellers.is_empty() {
            online.iter().map(|p| (p.ask, 1.0)).collect()
        } else {
            view.sellers.iter().map(|s| (s.ask, s.weight)).collect()
        };
        median_rate(&votes)
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
    fn a_washing_provider_is_one_vote() {
        let trade = |provider: &str, fuel: u64, weight: f64| Trade {
            provider: provider.into(),
            class: "software".into(),
            rate: Ask {
                per_billion_fuel: fuel,
                ..Ask::default()
            },
            weight,
        };
        // A thousand wash trades at 1000 by one key; two honest keys at 10.
        let mut trades: Vec<Trade> = (0..1000).map(|_| trade("washer", 1000, 0.9)).collect();
        trades.push(trade("a", 10, 0.8));
        trades.push(trade("b", 10, 0.8));
        assert_eq!(
            median_rate(&provider_votes(trades.iter())).per_billion_fuel,
            10
        );
    }

    #[test]
    fn a_bid_is_worth_what_its_cap_pays_at_the_median_ask() {
        let limits = UnitLimits {
            fuel: 1_000_000_000,
            memory_bytes: 1 << 20,
            timeout_ms: 10_000,
            gpu: false,
        };
        let seller = |fuel: u64, weight: f64| Seller {
            provider: format!("p{fuel}"),
            gflops: None,
            vouched: false,
            ask: Ask {
                per_billion_fuel: fuel,
                per_gpu_second: 1,
                per_wall_second: 0,
            },
            class: "software".into(),
            has_gpu: false,
            weight,
        };
        // The median seller's worst case: 10 + 10 = 20 credits a run.
        let sellers = [seller(10, 0.9), seller(10, 0.8), seller(0, 0.1)];
        assert_eq!(
            worst_case(sellers[0].ask, limits.fuel, limits.timeout_ms),
            20
        );
        assert_eq!(priority_of(300, 60, &limits, false, &sellers), 300);
        // A cap of 50 pays 250%: the bid is worth that much, no more.
        assert_eq!(priority_of(300, 50, &limits, false, &sellers), 250);
        assert_eq!(priority_of(300, 19, &limits, false, &sellers), 0);
        // Nothing to weigh it against (no seller, or none with the GPU the
        // job needs): no bid is honoured.
        assert_eq!(priority_of(300, 1, &limits, false, &[]), 100);
        assert_eq!(priority_of(300, 60, &limits, true, &sellers), 100);
    }
}
