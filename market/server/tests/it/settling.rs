//! Settlement in the result's own transaction (issue 12, speed): a result
//! that completes a job takes one commit with its decision, the payments
//! and the refund; a settlement that fails loses no result; replicas
//! settling one job at once pay every lease once and never deadlock.

use crate::jobs::{answer, b64, job, lease, provider, publish, submit};
use crate::*;
use agora_wire::api::{ResultReport, RunOutcome};

/// Write transactions PostgreSQL has begun so far (each probe takes one).
async fn xid(m: &TestMarket) -> i64 {
    sqlx::query_scalar::<_, i64>("SELECT CAST(txid_current() AS BIGINT)").fetch_one(&m.state.db.pool).await.unwrap()
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
        signature: p.sign(&ResultReport::signed_bytes(lease_id, RunOutcome::Ok, Some(&digest), 1_000_000_000, 0)),
        output_digest: Some(digest),
        fuel_used: 1_000_000_000,
        gpu_time_us: 0,
        peak_memory_bytes: 1024,
        logs: vec![],
    }
}

both_dbs!(a_result_that_ends_its_job_commits_once_with_the_payments_and_the_refund, async |m: &TestMarket| {
    publish(m, "saxpy").await;
    let buyer = Keypair::generate();
    m.fund(&buyer, 1000).await;
    let id = submit(m, &buyer, "saxpy", &[b"unit-0"], 600, 1).await;
    let p = provider(m, 10).await;
    let grant = lease(m, &p).await.unwrap();
    let before = if m.state.db.kind == agora_market::db::Kind::Postgres { Some(xid(m).await) } else { None };
    let lease_id = grant["lease_id"].as_str().unwrap();
    m.state.jobs.submit_result(p.id(), lease_id, report(&p, &grant, b"out"), m.state.now_ms()).await.unwrap();
    if let Some(before) = before {
        // One transaction id for the probe after, one for the result: a
        // crash anywhere in between leaves the result untaken, or taken,
        // decided, paid and refunded.
        assert_eq!(xid(m).await - before, 2, "the result, its decision and the settlement are one write transaction");
    }
    // No sweep ran: the job ended with its result.
    let done = job(m, &buyer, &id).await;
    assert_eq!(done["state"], "done", "{done}");
    let spent = done["cost"]["paid_to_providers"].as_u64().unwrap() + done["cost"]["fees"].as_u64().unwrap();
    assert!(spent > 0, "{done}");
    assert_eq!(m.available(&buyer).await, 1000 - spent, "refunded with the result");
    assert_eq!(m.available(&p).await, done["cost"]["paid_to_providers"].as_u64().unwrap());
    m.assert_invariants().await;
});

both_dbs!(a_failed_settlement_loses_no_result_and_the_sweeper_settles_later, async |m: &TestMarket| {
    publish(m, "saxpy").await;
    let buyer = Keypair::generate();
    m.fund(&buyer, 1000).await;
    let id = submit(m, &buyer, "saxpy", &[b"unit-0"], 600, 1).await;
    let p = provider(m, 10).await;
    let grant = lease(m, &p).await.unwrap();
    // The job's hold is out of reach (a damaged row): settling fails.
    let hold = format!("job:{id}:hold");
    let rename = |from: &str, to: &str| sqlx::query("UPDATE transfers SET id = $1 WHERE id = $2").bind(to.to_string()).bind(from.to_string());
    rename(&hold, "damaged-hold").execute(&m.state.db.pool).await.unwrap();
    let (status, body) = answer(m, &p, &grant, Ok(b"out")).await;
    assert_eq!(status, StatusCode::OK, "the result is taken though its job cannot settle: {body}");
    let taken = job(m, &buyer, &id).await;
    assert_eq!(taken["units"][0]["state"], "verified", "{taken}");
    assert_eq!(taken["state"], "running", "not settled: {taken}");
    let paid: i64 = sqlx::query_scalar("SELECT paid FROM leases WHERE id = $1").bind(grant["lease_id"].as_str().unwrap()).fetch_one(&m.state.db.pool).await.unwrap();
    assert_eq!(paid, 0, "nothing half paid");
    // Repaired, the next sweep settles it.
    rename("damaged-hold", &hold).execute(&m.state.db.pool).await.unwrap();
    m.state.sweep().await.unwrap();
    let done = job(m, &buyer, &id).await;
    assert_eq!(done["state"], "done", "{done}");
    assert!(m.available(&p).await > 0, "the provider is paid");
    m.assert_invariants().await;
});

both_dbs!(replicas_settling_one_job_at_once_pay_every_lease_once, async |m: &TestMarket| {
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
                state.jobs.submit_result(p.id(), &lease_id, report(&p, &g, b"out"), state.now_ms()).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().expect("no result is refused or lost to a lock");
    }
    let done = job(m, &buyer, &id).await;
    assert_eq!(done["state"], "done", "{done}");
    let pays: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM transfers WHERE id LIKE 'lease:%:pay' AND debit = $1")
        .bind(format!("job:{id}"))
        .fetch_one(&m.state.db.pool)
        .await
        .unwrap();
    assert_eq!(pays, 12, "one payment per lease");
    let spent = done["cost"]["paid_to_providers"].as_u64().unwrap() + done["cost"]["fees"].as_u64().unwrap();
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
});
