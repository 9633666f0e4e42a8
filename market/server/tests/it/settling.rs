//! Settlement in the result's own transaction (issue 12, speed): a result
//! that completes a job takes one commit with its decision, the payments
//! and the refund; a settlement that fails loses no result and a job
//! whose end fails still pays; replicas settling jobs at once, beside
//! heartbeats and transfers on the same accounts, pay every lease once.

use crate::jobs::{answer, b64, job, lease, provider, publish, submit};
use crate::*;
use agora_wire::api::{ResultReport, RunOutcome};

/// The transactions that last wrote the rows a unit's result, decision and
/// settlement touch (PostgreSQL's `xmin`: the writer of each row version).
async fn writers(m: &TestMarket, job: &str, lease: &str) -> Vec<String> {
    sqlx::query_scalar::<_, String>(
        "SELECT DISTINCT x FROM (
            SELECT CAST(xmin AS TEXT) AS x FROM leases WHERE id = $1
            UNION ALL SELECT CAST(xmin AS TEXT) FROM units WHERE job_id = $2
            UNION ALL SELECT CAST(xmin AS TEXT) FROM jobs WHERE id = $2
            UNION ALL SELECT CAST(xmin AS TEXT) FROM accounts WHERE id = 'job:' || $2
            UNION ALL SELECT CAST(xmin AS TEXT) FROM transfers WHERE id IN ('lease:' || $1 || ':pay', 'job:' || $2 || ':escrow', 'job:' || $2 || ':refund')
         ) AS w",
    )
    .bind(lease)
    .bind(job)
    .fetch_all(&m.state.db.pool)
    .await
    .unwrap()
}

/// A funded buyer's job of one unit (cap 600 of 1000 credits), leased to
/// a vouched provider.
struct OneUnit {
    buyer: Keypair,
    id: String,
    p: Keypair,
    grant: Value,
}

async fn one_unit_job(m: &TestMarket) -> OneUnit {
    publish(m, "saxpy").await;
    let buyer = Keypair::generate();
    m.fund(&buyer, 1000).await;
    let id = submit(m, &buyer, "saxpy", &[b"unit-0"], 600, 1).await;
    let p = provider(m, 10).await;
    let grant = lease(m, &p).await.unwrap();
    OneUnit {
        buyer,
        id,
        p,
        grant,
    }
}

/// `p`'s signed report of `output` for `grant`.
fn report(p: &Keypair, grant: &Value, output: &[u8]) -> ResultReport {
    let lease_id = grant["lease_id"].as_str().unwrap();
    let digest = agora_wire::digest_hex(output);
    ResultReport {
        outcome: RunOutcome::Ok,
        limit: None,
        message: None,
        output_base64: Some(b64(output)),
        signature: p.sign(&ResultReport::signed_bytes(
            lease_id,
            RunOutcome::Ok,
            Some(&digest),
            &[],
            1_000_000_000,
            0,
        )),
        output_digest: Some(digest),
        fuel_used: 1_000_000_000,
        gpu_time_us: 0,
        peak_memory_bytes: 1024,
        logs: vec![],
        outputs: vec![],
    }
}

both_dbs!(
    a_result_that_ends_its_job_commits_once_with_the_payments_and_the_refund,
    async |m: &TestMarket| {
        let OneUnit {
            buyer,
            id,
            p,
            grant,
        } = one_unit_job(m).await;
        let lease_id = grant["lease_id"].as_str().unwrap();
        m.state
            .jobs
            .submit_result(
                p.id(),
                lease_id,
                report(&p, &grant, b"out"),
                m.state.now_ms(),
            )
            .await
            .unwrap();
        if m.state.db.kind == agora_market::db::Kind::Postgres {
            // One writer for the lease, the unit, the job, its escrow and
            // every transfer: a crash anywhere leaves the result untaken, or
            // taken, decided, paid and refunded.
            let writers = writers(m, &id, lease_id).await;
            assert_eq!(
                writers.len(),
                1,
                "the result, its decision and the settlement are one write transaction: {writers:?}"
            );
        }
        // No sweep ran: the job ended with its result.
        let done = job(m, &buyer, &id).await;
        assert_eq!(done["state"], "done", "{done}");
        let spent = done["cost"]["paid_to_providers"].as_u64().unwrap()
            + done["cost"]["fees"].as_u64().unwrap();
        assert!(spent > 0, "{done}");
        assert_eq!(
            m.available(&buyer).await,
            1000 - spent,
            "refunded with the result"
        );
        assert_eq!(
            m.available(&p).await,
            done["cost"]["paid_to_providers"].as_u64().unwrap()
        );
        m.assert_invariants().await;
    }
);

both_dbs!(
    a_failed_settlement_loses_no_result_and_the_sweeper_settles_later,
    async |m: &TestMarket| {
        let OneUnit {
            buyer,
            id,
            p,
            grant,
        } = one_unit_job(m).await;
        // The job's hold is out of reach (a damaged row): settling fails.
        let hold = format!("job:{id}:hold");
        let rename = |from: &str, to: &str| {
            sqlx::query("UPDATE transfers SET id = $1 WHERE id = $2")
                .bind(to.to_string())
                .bind(from.to_string())
        };
        rename(&hold, "damaged-hold")
            .execute(&m.state.db.pool)
            .await
            .unwrap();
        let (status, body) = answer(m, &p, &grant, Ok(b"out")).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "the result is taken though its job cannot settle: {body}"
        );
        let taken = job(m, &buyer, &id).await;
        assert_eq!(taken["units"][0]["state"], "verified", "{taken}");
        assert_eq!(taken["state"], "running", "not settled: {taken}");
        let paid: i64 = sqlx::query_scalar("SELECT paid FROM leases WHERE id = $1")
            .bind(grant["lease_id"].as_str().unwrap())
            .fetch_one(&m.state.db.pool)
            .await
            .unwrap();
        assert_eq!(paid, 0, "nothing half paid");
        // Repaired, the next sweep settles it.
        rename("damaged-hold", &hold)
            .execute(&m.state.db.pool)
            .await
            .unwrap();
        m.state.sweep().await.unwrap();
        let done = job(m, &buyer, &id).await;
        assert_eq!(done["state"], "done", "{done}");
        assert!(m.available(&p).await > 0, "the provider is paid");
        m.assert_invariants().await;
    }
);

both_dbs!(
    replicas_settling_one_job_at_once_pay_every_lease_once,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 100_000).await;
        let inputs: Vec<Vec<u8>> = (0..12).map(|i| format!("unit-{i}").into_bytes()).collect();
        let refs: Vec<&[u8]> = inputs.iter().map(|v| v.as_slice()).collect();
        let id = submit(m, &buyer, "saxpy", &refs, 60_000, 1).await;
        let replicas = [m.state.clone(), m.replica().await];
        let mut providers = Vec::new();
        for _ in 0..3 {
            providers.push(std::sync::Arc::new(provider(m, 10).await));
        }
        let mut grants = Vec::new();
        for p in &providers {
            while let Some(g) = lease(m, p).await {
                grants.push((std::sync::Arc::clone(p), g));
            }
        }
        assert_eq!(grants.len(), 12, "every unit leased");
        // Every result at once, half through each replica: each settles the
        // job in its own transaction.
        let tasks: Vec<_> = grants
            .iter()
            .enumerate()
            .map(|(i, (p, g))| {
                let (state, p, g) = (replicas[i % 2].clone(), p.clone(), g.clone());
                tokio::spawn(async move {
                    let lease_id = g["lease_id"].as_str().unwrap().to_string();
                    state
                        .jobs
                        .submit_result(p.id(), &lease_id, report(&p, &g, b"out"), state.now_ms())
                        .await
                })
            })
            .collect();
        for t in tasks {
            t.await
                .unwrap()
                .expect("no result is refused or lost to a lock");
        }
        let done = job(m, &buyer, &id).await;
        assert_eq!(done["state"], "done", "{done}");
        let pays: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM transfers WHERE id LIKE 'lease:%:pay' AND debit = $1",
        )
        .bind(format!("job:{id}"))
        .fetch_one(&m.state.db.pool)
        .await
        .unwrap();
        assert_eq!(pays, 12, "one payment per lease");
        let spent = done["cost"]["paid_to_providers"].as_u64().unwrap()
            + done["cost"]["fees"].as_u64().unwrap();
        assert_eq!(m.available(&buyer).await, 100_000 - spent);
        let earned: u64 = {
            let mut sum = 0;
            for p in &providers {
                sum += m.available(p).await;
            }
            sum
        };
        assert_eq!(earned, done["cost"]["paid_to_providers"].as_u64().unwrap());
        m.assert_invariants().await;
    }
);

both_dbs!(
    a_job_whose_end_cannot_settle_still_pays_its_providers,
    async |m: &TestMarket| {
        let OneUnit {
            buyer,
            id,
            p,
            grant,
        } = one_unit_job(m).await;
        // A damaged escrow: 5 credits more than the job's leases leave, so the
        // refund check refuses to end the job.
        let mint = agora_market::ledger::Op::Mint {
            account: format!("job:{id}"),
            amount: 5,
        };
        m.state
            .ledger
            .execute("damage", &mint, m.state.now_ms())
            .await
            .unwrap();
        let (status, body) = answer(m, &p, &grant, Ok(b"out")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let taken = job(m, &buyer, &id).await;
        assert_eq!(taken["state"], "running", "not ended: {taken}");
        let paid = taken["cost"]["paid_to_providers"].as_u64().unwrap();
        assert!(
            paid > 0 && m.available(&p).await == paid,
            "the provider is paid though the job cannot end: {taken}"
        );
        // The sweeper sets the job aside and still pays nothing twice.
        m.state.sweep().await.unwrap();
        assert_eq!(m.available(&p).await, paid);
        let error: Option<String> =
            sqlx::query_scalar("SELECT settle_error FROM jobs WHERE id = $1")
                .bind(&id)
                .fetch_one(&m.state.db.pool)
                .await
                .unwrap();
        assert!(
            error.is_some_and(|e| e.contains("holds")),
            "the refund check's finding is kept for the operator"
        );
    }
);

// Transfers and heartbeats have no fallback: on PostgreSQL a lock cycle
// with a settlement would abort one of them, and fail this test.
both_dbs!(
    settlements_heartbeats_and_transfers_on_shared_accounts_all_go_through,
    async |m: &TestMarket| {
        use agora_market::ledger::Op;
        use agora_wire::api::{Heartbeat, LeaseProgress};
        use std::sync::Arc;
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1_000_000).await;
        let inputs: Vec<Vec<u8>> = (0..6).map(|i| format!("unit-{i}").into_bytes()).collect();
        let refs: Vec<&[u8]> = inputs.iter().map(|v| v.as_slice()).collect();
        // Two jobs of one buyer, whose units the same providers hold.
        let jobs = [
            submit(m, &buyer, "saxpy", &refs, 60_000, 1).await,
            submit(m, &buyer, "saxpy", &refs, 60_000, 1).await,
        ];
        let replicas = [m.state.clone(), m.replica().await];
        let mut providers = Vec::new();
        for _ in 0..3 {
            let p = Arc::new(provider(m, 10).await);
            m.fund(&p, 1000).await;
            providers.push(p);
        }
        let mut grants: Vec<(Arc<Keypair>, Value)> = Vec::new();
        for p in &providers {
            while let Some(g) = lease(m, p).await {
                grants.push((Arc::clone(p), g));
            }
        }
        assert_eq!(grants.len(), 12, "every unit leased");
        let mut tasks: Vec<tokio::task::JoinHandle<Result<(), String>>> = Vec::new();
        for (i, (p, g)) in grants.iter().enumerate() {
            let (state, p, g) = (replicas[i % 2].clone(), Arc::clone(p), g.clone());
            tasks.push(tokio::spawn(async move {
                let lease_id = g["lease_id"].as_str().unwrap().to_string();
                state
                    .jobs
                    .submit_result(p.id(), &lease_id, report(&p, &g, b"out"), state.now_ms())
                    .await
                    .map_err(|e| format!("result: {e}"))
            }));
        }
        // Each provider's heartbeat names its leases, last first.
        for (i, p) in providers.iter().enumerate() {
            let mine: Vec<LeaseProgress> = grants
                .iter()
                .rev()
                .filter(|(q, _)| q.id() == p.id())
                .map(|(_, g)| LeaseProgress {
                    lease_id: g["lease_id"].as_str().unwrap().into(),
                    progress: None,
                    logs: vec![],
                })
                .collect();
            let (state, p) = (replicas[(i + 1) % 2].clone(), Arc::clone(p));
            tasks.push(tokio::spawn(async move {
                let beat = Heartbeat {
                    running_units: 1,
                    free_cpu_cores: 1.0,
                    gpu_memory_used_bytes: None,
                    devices: Vec::new(),
                    leases: mine,
                    keeps: None,
                };
                state
                    .jobs
                    .heartbeat(p.id(), beat, state.now_ms())
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("heartbeat: {e}"))
            }));
        }
        // Providers pay each other both ways, and the buyer pays them.
        for i in 0..12 {
            let (from, to) = if i % 3 == 2 {
                (buyer.id().to_string(), providers[i % 3].id().to_string())
            } else {
                (
                    providers[i % 3].id().to_string(),
                    providers[(i + 1) % 3].id().to_string(),
                )
            };
            let state = replicas[i % 2].clone();
            tasks.push(tokio::spawn(async move {
                let op = Op::Single {
                    debit: from,
                    credit: to,
                    amount: 1,
                };
                state
                    .ledger
                    .execute(&format!("t-{i}"), &op, state.now_ms())
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("transfer: {e}"))
            }));
        }
        for t in tasks {
            t.await
                .unwrap()
                .expect("nothing is refused or lost to a lock");
        }
        for id in &jobs {
            assert_eq!(job(m, &buyer, id).await["state"], "done");
        }
        m.assert_invariants().await;
    }
);

both_dbs!(
    a_job_set_aside_is_paid_inline_and_ended_by_the_sweeper_after_its_back_off,
    async |m: &TestMarket| {
        let OneUnit {
            buyer,
            id,
            p,
            grant,
        } = one_unit_job(m).await;
        // Set aside by an earlier failed settlement, for a minute.
        let until = m.state.now_ms() + agora_market::jobs::SETTLE_BACKOFF_MS;
        sqlx::query("UPDATE jobs SET settle_after_ms = $1 WHERE id = $2")
            .bind(until)
            .bind(&id)
            .execute(&m.state.db.pool)
            .await
            .unwrap();
        assert_eq!(answer(m, &p, &grant, Ok(b"out")).await.0, StatusCode::OK);
        let paid = job(m, &buyer, &id).await;
        assert_eq!(
            paid["state"], "running",
            "not ended inside its back-off: {paid}"
        );
        assert!(
            m.available(&p).await > 0,
            "but its provider is paid at once"
        );
        m.state.sweep().await.unwrap();
        assert_eq!(
            job(m, &buyer, &id).await["state"],
            "running",
            "the sweeper waits too"
        );
        m.state.advance_clock(std::time::Duration::from_millis(
            agora_market::jobs::SETTLE_BACKOFF_MS as u64 + 1,
        ));
        m.state.sweep().await.unwrap();
        let done = job(m, &buyer, &id).await;
        assert_eq!(done["state"], "done", "{done}");
        let spent = done["cost"]["paid_to_providers"].as_u64().unwrap()
            + done["cost"]["fees"].as_u64().unwrap();
        assert_eq!(
            m.available(&buyer).await,
            1000 - spent,
            "refunded once the back-off is over"
        );
        m.assert_invariants().await;
    }
);
