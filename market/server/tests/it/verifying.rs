//! Verification in the market (issue 12, item 11): a result of a job
//! checked by the package's `verify` is taken at once and verified after
//! the request, one verdict per lease, fair between buyers, under limits
//! the market chooses, with no verdict lost to a timeout, a crash or a
//! second replica.

use crate::jobs::{
    answer, assert_conserved, heartbeat, job, lease, provider, publish_guest, reputation, submit,
    untrusted_provider,
};
use crate::*;
use agora_market::jobs::Verified;
use agora_market::verify::{ResultVerifier, VERIFY_ATTEMPTS, VerifyFailure, VerifyLimits};
use agora_wire::api::RunOutcome;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// Passes the output `right`, records each input it checked, and reports
/// its worker lost for its first `lose` calls.
#[derive(Default)]
struct Recording {
    seen: Mutex<Vec<Vec<u8>>>,
    lose: AtomicI64,
}

impl Recording {
    fn losing(times: i64) -> Arc<Recording> {
        Arc::new(Recording {
            lose: AtomicI64::new(times),
            ..Default::default()
        })
    }

    fn seen(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    }
}

impl ResultVerifier for Recording {
    fn verify(
        &self,
        _component: &[u8],
        input: &[u8],
        output: &[u8],
        _limits: &VerifyLimits,
    ) -> Result<bool, VerifyFailure> {
        self.seen.lock().unwrap().push(input.to_vec());
        if self.lose.fetch_sub(1, Ordering::SeqCst) > 0 {
            return Err(VerifyFailure {
                outcome: RunOutcome::WorkerLost,
                message: "killed".into(),
            });
        }
        Ok(output == b"right")
    }
}

/// Says when it starts, then holds its verdict (`true`) until released:
/// a verifier that is slow, or whose replica is about to die.
struct Held {
    started: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl ResultVerifier for Held {
    fn verify(
        &self,
        _component: &[u8],
        _input: &[u8],
        _output: &[u8],
        _limits: &VerifyLimits,
    ) -> Result<bool, VerifyFailure> {
        self.started.lock().unwrap().send(()).unwrap();
        self.release.lock().unwrap().recv().unwrap();
        Ok(true)
    }
}

/// A market checking results with `verifier`, a funded buyer, and a
/// trusted provider: the buyer's one-unit matmul job is leased and
/// answered `output`.
async fn answered(m: &TestMarket, output: &[u8]) -> (Keypair, String, Keypair) {
    publish_guest(m, "matmul", "matmul").await;
    let buyer = Keypair::generate();
    m.fund(&buyer, 1000).await;
    let id = submit(m, &buyer, "matmul", &[b"unit-0"], 600, 1).await;
    let p = provider(m, 10).await;
    let grant = lease(m, &p).await.expect("a unit");
    assert_eq!(answer(m, &p, &grant, Ok(output)).await.0, StatusCode::OK);
    (buyer, id, p)
}

both_dbs!(
    a_result_is_taken_before_it_is_verified_and_a_restart_loses_no_verdict,
    async |m: &TestMarket| {
        let recording = Arc::new(Recording::default());
        let m = &m.with_verifier(recording.clone());
        let (buyer, id, p) = answered(m, b"right").await;
        assert!(
            recording.seen().is_empty(),
            "the provider's request ended before its result was verified"
        );
        let waiting = job(m, &buyer, &id).await;
        assert_eq!(waiting["units"][0]["state"], "verifying", "{waiting}");
        assert_eq!(
            waiting["cost"]["paid_to_providers"], 0,
            "nothing is paid before the verdict"
        );
        let other = provider(m, 10).await;
        assert!(
            lease(m, &other).await.is_none(),
            "a unit being verified is not leased again"
        );
        m.assert_invariants().await;
        // The market restarts: a new instance on the same database verifies
        // what the old one took.
        let restarted = m.replica().await.with_verifier(recording.clone());
        let verified = restarted.verify_due().await.unwrap();
        assert!(
            matches!(
                verified.as_slice(),
                [Verified::Verdict {
                    passed: Some(true),
                    ..
                }]
            ),
            "{verified:?}"
        );
        assert_eq!(recording.seen(), ["unit-0"]);
        let done = job(m, &buyer, &id).await;
        assert_eq!(done["state"], "done", "{done}");
        assert!(done["cost"]["paid_to_providers"].as_u64().unwrap() > 0);
        assert_conserved(m, &buyer, 1000, &done, &[&p, &other]).await;
        // The market's own reads of the component are not downloads.
        let (_, info) = m.call("GET", "/api/v1/packages/matmul", None, None).await;
        assert_eq!(info["downloads"], 0, "{info}");
    }
);

both_dbs!(
    a_lapsed_claim_is_taken_over_and_the_late_verdict_is_dropped,
    async |m: &TestMarket| {
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let held = Arc::new(Held {
            started: Mutex::new(started_tx),
            release: Mutex::new(release_rx),
        });
        let slow = m.with_verifier(held);
        let (buyer, id, p) = answered(&slow, b"right").await;
        // Replica A claims the verification and hangs in it.
        let a = slow.state.clone();
        let first = tokio::spawn(async move { a.verify_due().await.unwrap() });
        tokio::task::spawn_blocking(move || started.recv().unwrap())
            .await
            .unwrap();
        // Replica B waits out A's claim, then verifies and decides the unit.
        let b = m
            .replica()
            .await
            .with_verifier(Arc::new(Recording::default()));
        assert!(
            b.verify_due().await.unwrap().is_empty(),
            "a claimed verification is not run twice at once"
        );
        b.advance_clock(
            Duration::from_millis(
                VerifyLimits::for_run(4_000_000_000, 64 << 20, 10_000).timeout_ms,
            ) + Duration::from_secs(61),
        );
        let taken = b.verify_due().await.unwrap();
        assert!(
            matches!(
                taken.as_slice(),
                [Verified::Verdict {
                    passed: Some(true),
                    ..
                }]
            ),
            "{taken:?}"
        );
        // A comes back: its verdict is not applied a second time.
        release.send(()).unwrap();
        let late = first.await.unwrap();
        assert!(
            matches!(late.as_slice(), [Verified::Superseded { .. }]),
            "{late:?}"
        );
        let done = job(m, &buyer, &id).await;
        assert_eq!(done["state"], "done", "{done}");
        assert_conserved(m, &buyer, 1000, &done, &[&p]).await;
    }
);

both_dbs!(
    verifications_are_served_fairly_between_buyers,
    async |m: &TestMarket| {
        let recording = Arc::new(Recording::default());
        let m = &m.with_verifier(recording.clone());
        publish_guest(m, "matmul", "matmul").await;
        let (greedy, modest) = (Keypair::generate(), Keypair::generate());
        m.fund(&greedy, 1000).await;
        m.fund(&modest, 1000).await;
        submit(
            m,
            &greedy,
            "matmul",
            &[b"greedy-0", b"greedy-1", b"greedy-2"],
            600,
            1,
        )
        .await;
        submit(m, &modest, "matmul", &[b"modest-0"], 600, 1).await;
        let p = provider(m, 10).await;
        // The greedy buyer's results all arrive first.
        for _ in 0..4 {
            let grant = lease(m, &p).await.expect("a unit");
            assert_eq!(answer(m, &p, &grant, Ok(b"right")).await.0, StatusCode::OK);
            m.state.advance_clock(Duration::from_millis(2));
        }
        assert_eq!(m.state.verify_due().await.unwrap().len(), 4);
        assert_eq!(
            recording.seen(),
            ["greedy-0", "modest-0", "greedy-1", "greedy-2"],
            "the modest buyer waits for one of the greedy one's, not three"
        );
        m.assert_invariants().await;
    }
);

both_dbs!(
    a_lost_verifier_is_retried_and_never_counts_against_the_provider,
    async |m: &TestMarket| {
        // Lost once: tried again, and the result passes.
        let once = Recording::losing(1);
        let m1 = m.with_verifier(once.clone());
        let (buyer, id, p) = answered(&m1, b"right").await;
        let verified = m1.state.verify_due().await.unwrap();
        assert!(
            matches!(
                verified.as_slice(),
                [
                    Verified::Retry { .. },
                    Verified::Verdict {
                        passed: Some(true),
                        ..
                    }
                ]
            ),
            "{verified:?}"
        );
        let done = job(m, &buyer, &id).await;
        assert_eq!(done["state"], "done", "{done}");
        assert_conserved(m, &buyer, 1000, &done, &[&p]).await;

        // Lost every time: given up after VERIFY_ATTEMPTS, the provider is not
        // marked, and the unit runs again.
        let always = Recording::losing(i64::MAX);
        let m2 = m.with_verifier(always.clone());
        let buyer = Keypair::generate();
        m2.fund(&buyer, 1000).await;
        let id = submit(&m2, &buyer, "matmul", &[b"unit-0"], 600, 1).await;
        let honest = provider(&m2, 10).await;
        let (_, before) = m.call("GET", "/api/v1/providers", None, None).await;
        let grant = lease(&m2, &honest).await.expect("a unit");
        assert_eq!(
            answer(&m2, &honest, &grant, Ok(b"right")).await.0,
            StatusCode::OK
        );
        let verified = m2.state.verify_due().await.unwrap();
        assert_eq!(verified.len() as i64, VERIFY_ATTEMPTS, "{verified:?}");
        assert!(
            matches!(
                verified.last(),
                Some(Verified::Verdict { passed: None, .. })
            ),
            "{verified:?}"
        );
        assert_eq!(always.seen().len() as i64, VERIFY_ATTEMPTS);
        let after = job(m, &buyer, &id).await;
        assert_eq!(after["units"][0]["state"], "queued", "{after}");
        assert!(
            after["units"][0]["message"]
                .as_str()
                .unwrap()
                .contains("verify did not complete"),
            "{after}"
        );
        let (_, providers) = m.call("GET", "/api/v1/providers", None, None).await;
        assert_eq!(
            reputation(&providers, &honest),
            reputation(&before, &honest),
            "the market's failure is nobody's mark"
        );
        m.assert_invariants().await;
    }
);

both_dbs!(
    an_expired_job_waits_for_the_verdicts_of_results_it_took,
    async |m: &TestMarket| {
        // A result taken before the job expired, verified after: paid.
        let recording = Arc::new(Recording::default());
        let checked = m.with_verifier(recording.clone());
        let (buyer, id, p) = answered(&checked, b"right").await;
        m.state.advance_clock(Duration::from_millis(
            checked.state.config.jobs.job_ttl_ms as u64 + 1,
        ));
        m.state.sweep().await.unwrap();
        assert_eq!(
            job(m, &buyer, &id).await["state"],
            "running",
            "settlement waits for the pending verdict"
        );
        checked.state.verify_due().await.unwrap();
        m.state.sweep().await.unwrap();
        let done = job(m, &buyer, &id).await;
        assert_eq!(done["state"], "done", "{done}");
        assert!(
            m.available(&p).await > 0,
            "the honest provider is paid for a result the market took in time"
        );
        assert_conserved(m, &buyer, 1000, &done, &[&p]).await;

        // A result no verifier ever checks: the job settles after
        // VERIFY_WAIT_MS, refunds everything, and leaves nothing waiting.
        let buyer = Keypair::generate();
        checked.fund(&buyer, 1000).await;
        let id = submit(&checked, &buyer, "matmul", &[b"unit-0"], 600, 1).await;
        heartbeat(&checked, &p).await;
        let grant = lease(&checked, &p).await.expect("a unit");
        assert_eq!(
            answer(&checked, &p, &grant, Ok(b"right")).await.0,
            StatusCode::OK
        );
        m.state.advance_clock(Duration::from_millis(
            checked.state.config.jobs.job_ttl_ms as u64 + 1,
        ));
        m.state.sweep().await.unwrap();
        assert_eq!(job(m, &buyer, &id).await["state"], "running");
        m.state.advance_clock(Duration::from_millis(
            agora_market::jobs::VERIFY_WAIT_MS as u64,
        ));
        m.state.sweep().await.unwrap();
        let ended = job(m, &buyer, &id).await;
        assert_eq!(ended["state"], "expired", "{ended}");
        assert_eq!(ended["cost"]["refunded"], 600, "{ended}");
        assert_eq!(m.state.jobs.verifications_pending().await.unwrap(), 0);
        m.assert_invariants().await;
    }
);

both_dbs!(
    a_buyer_whose_verify_rejects_every_honest_output_pays_for_the_runs,
    async |m: &TestMarket| {
        // The buyer's `verify` passes only `right`; honest providers compute
        // `honest`, and the buyer could read it in their live logs.
        let m = &m.with_verifier(Arc::new(Recording::default()));
        publish_guest(m, "matmul", "matmul").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "matmul", &[b"unit-0"], 600, 1).await;
        let mut runs = Vec::new();
        for _ in 0..2 {
            let p = provider(m, 10).await;
            let grant = lease(m, &p)
                .await
                .expect("the unit is leased again after a rejection");
            assert_eq!(answer(m, &p, &grant, Ok(b"honest")).await.0, StatusCode::OK);
            let verdicts = m.state.verify_due().await.unwrap();
            assert!(
                matches!(
                    verdicts.as_slice(),
                    [Verified::Verdict {
                        passed: Some(false),
                        ..
                    }]
                ),
                "{verdicts:?}"
            );
            runs.push(p);
        }
        // The same output rejected on two trusted providers: the job's own doing. The unit fails, is not leased forever, and the runs
        // are billed like failed runs.
        let over = job(m, &buyer, &id).await;
        assert_eq!(over["units"][0]["state"], "failed", "{over}");
        assert_eq!(over["state"], "failed", "{over}");
        assert!(
            lease(m, &provider(m, 10).await).await.is_none(),
            "a failed unit is not leased again"
        );
        for p in &runs {
            assert!(
                m.available(p).await > 0,
                "every rejected honest run is paid"
            );
        }
        let refs: Vec<&Keypair> = runs.iter().collect();
        assert_conserved(m, &buyer, 1000, &over, &refs).await;
        m.assert_invariants().await;
    }
);

both_dbs!(
    one_trusted_key_and_its_sybils_cannot_fail_a_checked_unit_with_garbage,
    async |m: &TestMarket| {
        let m = &m.with_verifier(Arc::new(Recording::default()));
        publish_guest(m, "matmul", "matmul").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "matmul", &[b"unit-0"], 600, 1).await;
        // A fresh key, one trusted key, then more fresh keys, all answering
        // the same garbage: once rejected, the unit goes to trusted keys only.
        let colluders = [
            untrusted_provider(m, 10).await,
            provider(m, 10).await,
            untrusted_provider(m, 10).await,
            untrusted_provider(m, 10).await,
        ];
        for (i, p) in colluders.iter().enumerate() {
            match lease(m, p).await {
                Some(grant) => {
                    assert!(i < 2, "a fresh key after a rejection got the unit");
                    assert_eq!(answer(m, p, &grant, Ok(b"garbage")).await.0, StatusCode::OK);
                    m.state.verify_due().await.unwrap();
                }
                None => assert!(i >= 2, "the first fresh key and the trusted one run it"),
            }
        }
        let open = job(m, &buyer, &id).await;
        assert_eq!(
            open["units"][0]["state"], "queued",
            "the unit waits for an honest output: {open}"
        );
        for p in &colluders {
            assert_eq!(m.available(p).await, 0, "garbage is not paid");
        }
        // An honest provider's right answer passes, and only it is paid.
        let honest = provider(m, 10).await;
        let grant = lease(m, &honest).await.unwrap();
        answer(m, &honest, &grant, Ok(b"right")).await;
        m.state.verify_due().await.unwrap();
        let done = job(m, &buyer, &id).await;
        assert_eq!(done["state"], "done", "{done}");
        let mut everyone: Vec<&Keypair> = colluders.iter().collect();
        everyone.push(&honest);
        assert_conserved(m, &buyer, 1000, &done, &everyone).await;
        m.assert_invariants().await;
    }
);

/// A `verify` that traps on whatever it is given.
struct Trapping;

impl ResultVerifier for Trapping {
    fn verify(
        &self,
        _component: &[u8],
        _input: &[u8],
        _output: &[u8],
        _limits: &VerifyLimits,
    ) -> Result<bool, VerifyFailure> {
        Err(VerifyFailure {
            outcome: RunOutcome::Trap,
            message: "unreachable".into(),
        })
    }
}

both_dbs!(
    a_verify_that_traps_on_outputs_that_differ_still_bills_the_runs,
    async |m: &TestMarket| {
        // Honest outputs need not be equal bit for bit (a nonce, float
        // rounding): the buyer's `verify` traps on each of them.
        let m = &m.with_verifier(Arc::new(Trapping));
        publish_guest(m, "matmul", "matmul").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "matmul", &[b"unit-0"], 600, 1).await;
        let mut runs = Vec::new();
        for i in 0..agora_market::jobs::MAX_UNIT_FAILURES {
            let p = provider(m, 10).await;
            let grant = lease(m, &p).await.expect("the unit is leased again");
            assert_eq!(
                answer(m, &p, &grant, Ok(format!("honest-{i}").as_bytes()))
                    .await
                    .0,
                StatusCode::OK
            );
            m.state.verify_due().await.unwrap();
            runs.push(p);
        }
        let over = job(m, &buyer, &id).await;
        assert_eq!(over["units"][0]["state"], "failed", "{over}");
        for p in &runs {
            assert!(m.available(p).await > 0, "every honest run is paid");
        }
        let refs: Vec<&Keypair> = runs.iter().collect();
        assert_conserved(m, &buyer, 1000, &over, &refs).await;
    }
);

both_dbs!(
    a_fresh_key_cannot_take_a_unit_after_a_rejection,
    async |m: &TestMarket| {
        let m = &m.with_verifier(Arc::new(Recording::default()));
        publish_guest(m, "matmul", "matmul").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "matmul", &[b"unit-0"], 600, 1).await;
        let rejected = provider(m, 10).await;
        let grant = lease(m, &rejected).await.unwrap();
        answer(m, &rejected, &grant, Ok(b"honest")).await;
        m.state.verify_due().await.unwrap();
        // The buyer's own fresh key would answer what its `verify` passes, to
        // have the honest provider marked and unpaid: it never gets the unit.
        let sybil = untrusted_provider(m, 10).await;
        assert!(
            lease(m, &sybil).await.is_none(),
            "a rejected unit goes to trusted providers only"
        );
        let trusted = provider(m, 10).await;
        let grant = lease(m, &trusted)
            .await
            .expect("a trusted provider runs it");
        answer(m, &trusted, &grant, Ok(b"right")).await;
        m.state.verify_due().await.unwrap();
        let done = job(m, &buyer, &id).await;
        assert_eq!(done["state"], "done", "{done}");
        assert_conserved(m, &buyer, 1000, &done, &[&rejected, &sybil, &trusted]).await;
    }
);
