//! What speed the market rates a provider's device at: the GFLOPS its host
//! measured (`agora_host::gpu::speed`) are a claim, like the card's name.
//!
//! Design choices:
//! - Only a provider's first device (the one it runs units on and its host
//!   measures) is rated; a claim for any other is dropped.
//! - The operator's vouched hosts (trusted now) anchor every rating: one is
//!   rated at its own claim; anyone else at most
//!   [`SPEED_PEER_MARGIN_PERCENT`] of the reputation-weighted median of the
//!   anchors of its class online ([`honoured_gflops`]), and unrated with
//!   none. A class is a name the claimant picks and trust can be earned on
//!   a few right answers, so no rating rests on anyone's word but the
//!   operator's: a flock of fresh keys naming a new card, or keys that
//!   earned trust rating each other up by the margin, get nothing past
//!   150% of what an operator's host of their class measured.
//! - Trust and a class's peers change, so a rating does not last: the raw
//!   claim is kept (`providers.speed_claim`) and rated again by the
//!   provider's heartbeat every [`SPEED_RERATE_MS`]. A key that loses
//!   trust, or whose class's anchors go offline, loses its rating within
//!   that time; one whose class gains a trusted peer is rated by it.
//! - What leasing compares (`provider_gpus.gflops`) and what listings show
//!   (the stored capabilities) are written together, in one transaction.

use super::prices::{Seller, weighted_median};
use super::reputation::Record;
use super::*;
use agora_wire::api::Capabilities;

/// A device's measured speed is rated up to this share (percent) of what
/// the trusted providers of its class are rated (their weighted median):
/// room for a well-cooled card, none for a fresh key's tenfold.
pub const SPEED_PEER_MARGIN_PERCENT: u64 = 150;
/// How long a rating stands before the provider's heartbeat rates its
/// claim again.
pub const SPEED_RERATE_MS: i64 = 5 * 60 * 1000;

impl Jobs {
    /// Rate the speeds `caps` claims for `provider` in place: its first
    /// device's ([`honoured_gflops`]), none of any other. Returns the raw
    /// claim (0 for none), which registration keeps for re-rating.
    pub(super) async fn rate_speed(
        &self,
        provider: &KeyId,
        caps: &mut Capabilities,
        now: i64,
    ) -> Result<u32, ApiError> {
        let class = caps.device_class();
        for other in caps.gpus.iter_mut().skip(1) {
            other.gflops = None;
        }
        let Some(first) = caps.gpus.first_mut() else {
            return Ok(0);
        };
        let Some(claim) = first.gflops else {
            return Ok(0);
        };
        let anchor = self.is_anchor(provider).await?;
        let view = self.market_view(now).await?;
        first.gflops = honoured_gflops(claim, &class, provider.as_str(), anchor, &view.sellers);
        Ok(claim)
    }

    /// Rate `provider`'s kept claim again when its rating is older than
    /// [`SPEED_RERATE_MS`] (called by its heartbeat). Two replicas, or a
    /// registration, racing it: only the first write of a rating counts.
    pub(super) async fn rerate_speed(&self, provider: &KeyId, now: i64) -> Result<(), ApiError> {
        let row = sqlx::query(
            "SELECT capabilities, speed_claim, speed_rated_at_ms FROM providers
             WHERE id = $1 AND speed_claim > 0 AND speed_rated_at_ms <= $2",
        )
        .bind(provider.as_str())
        .bind(now - SPEED_RERATE_MS)
        .fetch_optional(&self.db.pool)
        .await?;
        let Some(row) = row else {
            return Ok(());
        };
        let rated_at: i64 = row.try_get("speed_rated_at_ms")?;
        let mut caps: Capabilities =
            serde_json::from_str(&row.try_get::<String, _>("capabilities")?).unwrap_or_default();
        let Some(first) = caps.gpus.first_mut() else {
            return Ok(());
        };
        first.gflops = Some(
            row.try_get::<i64, _>("speed_claim")?
                .clamp(1, u32::MAX as i64) as u32,
        );
        self.rate_speed(provider, &mut caps, now).await?;
        let rated = caps.gpus.first().and_then(|g| g.gflops).unwrap_or(0);
        let mut tx = self.db.write().await?;
        let done = sqlx::query(
            "UPDATE providers SET capabilities = $1, speed_rated_at_ms = $2 WHERE id = $3 AND speed_rated_at_ms = $4",
        )
        .bind(serde_json::to_string(&caps).expect("plain JSON"))
        .bind(now)
        .bind(provider.as_str())
        .bind(rated_at)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            sqlx::query("UPDATE provider_gpus SET gflops = $1 WHERE provider = $2 AND idx = 0")
                .bind(i64::from(rated))
                .bind(provider.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Whether `provider` anchors its class's ratings: a host the operator
    /// vouches for, trusted now.
    async fn is_anchor(&self, provider: &KeyId) -> Result<bool, ApiError> {
        let vouched: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM vouched WHERE id = $1")
            .bind(provider.as_str())
            .fetch_one(&self.db.pool)
            .await?;
        if vouched == 0 {
            return Ok(false);
        }
        let row = sqlx::query("SELECT good, bad, confirmed FROM providers WHERE id = $1")
            .bind(provider.as_str())
            .fetch_optional(&self.db.pool)
            .await?;
        let record = match row {
            Some(row) => Record {
                good: row.try_get("good")?,
                bad: row.try_get("bad")?,
                confirmed: row.try_get("confirmed")?,
                vouched: true,
            },
            // Vouched before it first registered: a fresh record.
            None => Record {
                vouched: true,
                ..Record::default()
            },
        };
        Ok(record.trusted())
    }
}

/// How much of `claim` (GFLOPS of a device of `class`) the market rates:
/// an `anchor`'s (a vouched host's) whole claim (already within
/// `MAX_GPU_GFLOPS`); anyone else's at most [`SPEED_PEER_MARGIN_PERCENT`]
/// of the reputation-weighted median of what the anchors of the class
/// online are rated, and nothing (unrated) with none.
pub(super) fn honoured_gflops(
    claim: u32,
    class: &str,
    provider: &str,
    anchor: bool,
    sellers: &[Seller],
) -> Option<u32> {
    if anchor {
        return Some(claim);
    }
    let anchors: Vec<(u64, f64)> = sellers
        .iter()
        .filter(|s| s.vouched && s.class == class && s.provider != provider)
        .filter_map(|s| Some((u64::from(s.gflops?), s.weight)))
        .collect();
    if anchors.is_empty() {
        return None;
    }
    let bound = weighted_median(anchors).saturating_mul(SPEED_PEER_MARGIN_PERCENT) / 100;
    Some(claim.min(bound.min(u64::from(u32::MAX)) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_speed_is_rated_up_to_its_class_anchors_median() {
        let peer =
            |provider: &str, class: &str, gflops: Option<u32>, weight: f64, vouched| Seller {
                provider: provider.into(),
                ask: Ask::default(),
                class: class.into(),
                has_gpu: true,
                gflops,
                weight,
                vouched,
            };
        let sellers = [
            peer("a", "rtx-4090", Some(80_000), 0.9, true),
            peer("b", "rtx-4090", Some(70_000), 0.9, true),
            peer("c", "rtx-4090", Some(400_000), 0.1, true),
            peer("d", "rtx-3060", Some(12_000), 0.9, true),
            peer("e", "rtx-4090", None, 0.9, true),
            // Trusted on earned trust: no anchor, however it is rated.
            peer("f", "rtx-3060", Some(500_000), 0.99, false),
            peer("g", "rtx-5090", Some(500_000), 0.99, false),
        ];
        let honoured =
            |claim, class, provider| honoured_gflops(claim, class, provider, false, &sellers);
        // The weighted median of a, b and c is 80,000 (c's claim weighs
        // little): 150% of it is 120,000.
        assert_eq!(honoured(300_000, "rtx-4090", "x"), Some(120_000));
        assert_eq!(honoured(75_000, "rtx-4090", "x"), Some(75_000));
        assert_eq!(
            honoured(50_000, "rtx-3060", "x"),
            Some(18_000),
            "f moves nothing"
        );
        // A class no anchor is rated in: unrated, whoever else is.
        assert_eq!(honoured(9_000, "rtx-5090", "x"), None);
        assert_eq!(honoured(9_000, "h200", "x"), None);
        // An anchor is rated at its own claim, whoever else is online.
        assert_eq!(
            honoured_gflops(9_000, "rtx-4090", "a", true, &sellers),
            Some(9_000)
        );
        assert_eq!(
            honoured_gflops(200_000, "h200", "x", true, &sellers),
            Some(200_000)
        );
    }
}
