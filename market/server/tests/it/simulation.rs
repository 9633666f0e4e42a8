//! A seeded deterministic simulation of the ledger: thousands of random
//! operations (mints, transfers, holds, partial posts, voids, expiries,
//! retries with the same id, conflicting reuse of an id, concurrent clients
//! on two replicas), with faults between and inside steps (requests
//! cancelled mid-transaction, the market restarted on the same database).
//! After every step the books are checked twice: by the market's invariant
//! check and against an independent model built from what was applied.
//! A failure prints the seed; `AGORA_SEED=N` replays it.

use crate::*;
use agora_kernels::rng::Rng;
use agora_market::error::ApiError;
use agora_market::ledger::{MINT, Op};
use agora_wire::api::TransferState;
use std::collections::HashMap;
use std::time::Duration;

/// Per account: (debits_pending, debits_posted, credits_pending, credits_posted).
type Books = HashMap<String, [i64; 4]>;

struct Model {
    books: Books,
    /// Holds the model believes pending: id -> (debit, credit, amount).
    pending: HashMap<String, (String, String, i64)>,
    /// Every id sent, with its op, for retries.
    sent: Vec<(String, Op)>,
}

impl Model {
    fn add(&mut self, account: &str, column: usize, delta: i64) {
        self.books.entry(account.to_string()).or_insert([0; 4])[column] += delta;
    }

    /// Record what transfer `id` did, now that it is known to exist.
    fn apply(&mut self, op: &Op, amount: i64) {
        match op {
            Op::Single { debit, credit, .. } => {
                self.add(debit, 1, amount);
                self.add(credit, 3, amount);
            }
            Op::Mint { account, .. } => {
                self.add(MINT, 1, amount);
                self.add(account, 3, amount);
            }
            Op::Hold { .. } => unreachable!("holds are recorded with their id"),
            Op::Post { pending_id, .. } => self.resolve(pending_id, amount),
            Op::Void { pending_id } => self.resolve(pending_id, 0),
        }
    }

    fn resolve(&mut self, hold: &str, posted: i64) {
        let (debit, credit, held) = self
            .pending
            .remove(hold)
            .expect("resolving a hold the model holds pending");
        self.add(&debit, 0, -held);
        self.add(&debit, 1, posted);
        self.add(&credit, 2, -held);
        self.add(&credit, 3, posted);
    }
}

async fn run_op(
    state: &AppState,
    id: &str,
    op: &Op,
    cancel_after: Option<Duration>,
) -> Option<Result<agora_wire::api::Transfer, ApiError>> {
    let fut = state.ledger.execute(id, op, state.now_ms());
    match cancel_after {
        Some(cut) => tokio::time::timeout(cut, fut).await.ok(),
        None => Some(fut.await),
    }
}

/// Bring the model up to date with transfer `id` (sent as `op`), whatever
/// happened to the request.
async fn observe(state: &AppState, model: &mut Model, id: &str, op: &Op, known_before: bool) {
    if known_before {
        return;
    }
    let Some(t) = state.ledger.get(id).await.unwrap() else {
        return;
    };
    match op {
        Op::Hold { debit, credit, .. } => {
            model.add(debit, 0, t.amount as i64);
            model.add(credit, 2, t.amount as i64);
            model.pending.insert(
                id.to_string(),
                (debit.clone(), credit.clone(), t.amount as i64),
            );
        }
        _ => model.apply(op, t.amount as i64),
    }
}

async fn check(state: &AppState, model: &Model, step: usize, seed: u64) {
    let report = state.ledger.check_invariants().await.unwrap();
    assert!(
        report.ok,
        "seed {seed} step {step}: {:?}",
        report.violations
    );
    for (account, want) in &model.books {
        let b = state
            .ledger
            .balance(account)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("seed {seed}: no account {account}"));
        let have = [
            b.debits_pending as i64,
            b.debits_posted as i64,
            b.credits_pending as i64,
            b.credits_posted as i64,
        ];
        assert_eq!(
            have, *want,
            "seed {seed} step {step}: account {account} differs from the model"
        );
    }
}

async fn simulate(m: &TestMarket, steps: usize) {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let accounts: Vec<String> = (0..5)
        .map(|_| Keypair::generate().id().to_string())
        .collect();
    let mut model = Model {
        books: HashMap::new(),
        pending: HashMap::new(),
        sent: Vec::new(),
    };
    let mut state = m.state.clone();
    let mut other = m.replica().await;
    let pick = |rng: &mut Rng| accounts[rng.range(0, accounts.len() as u32 - 1) as usize].clone();
    let mut next_id = 0u64;
    for step in 0..steps {
        let mut new_op = |rng: &mut Rng, model: &Model| -> (String, Op) {
            next_id += 1;
            let id = format!("s{seed}-{next_id}");
            let (a, mut b) = (pick(rng), pick(rng));
            if a == b {
                b = accounts.iter().find(|x| **x != a).unwrap().clone();
            }
            let amount = rng.range(1, 400) as u64;
            let pending: Vec<&String> = model.pending.keys().collect();
            let op = match rng.range(0, 9) {
                0 | 1 => Op::Mint {
                    account: a,
                    amount: amount * 3,
                },
                2 | 3 => Op::Single {
                    debit: a,
                    credit: b,
                    amount,
                },
                4 | 5 => Op::Hold {
                    debit: a,
                    credit: b,
                    amount,
                    timeout_ms: rng.range(1, 4000) as u64,
                },
                6 | 7 if !pending.is_empty() => {
                    let hold = pending[rng.range(0, pending.len() as u32 - 1) as usize].clone();
                    let partial = rng.range(0, 2) == 0;
                    Op::Post {
                        pending_id: hold,
                        amount: partial.then(|| rng.range(0, 50) as u64),
                    }
                }
                8 if !pending.is_empty() => Op::Void {
                    pending_id: pending[rng.range(0, pending.len() as u32 - 1) as usize].clone(),
                },
                _ => Op::Single {
                    debit: a,
                    credit: b,
                    amount,
                },
            };
            (id, op)
        };
        match rng.range(0, 19) {
            // Retry an earlier request with the same id: the first outcome,
            // never a second effect.
            0 if !model.sent.is_empty() => {
                let (id, op) =
                    model.sent[rng.range(0, model.sent.len() as u32 - 1) as usize].clone();
                let before = state.ledger.get(&id).await.unwrap();
                let again = run_op(&state, &id, &op, None).await.unwrap();
                if let (Some(before), Ok(after)) = (&before, &again) {
                    assert_eq!(
                        before, after,
                        "seed {seed}: a retry returns the first outcome"
                    );
                }
                observe(&state, &mut model, &id, &op, before.is_some()).await;
            }
            // Reuse an id for a different request: refused.
            1 if !model.sent.is_empty() => {
                let (id, _) =
                    model.sent[rng.range(0, model.sent.len() as u32 - 1) as usize].clone();
                if state.ledger.get(&id).await.unwrap().is_some() {
                    let other_op = Op::Mint {
                        account: pick(&mut rng),
                        amount: 999_999,
                    };
                    let r = run_op(&state, &id, &other_op, None).await.unwrap();
                    assert!(
                        matches!(r, Err(ApiError::TransferConflict(_))),
                        "seed {seed}: {r:?}"
                    );
                }
            }
            // Time passes; the sweeper expires due holds.
            2 => {
                state.advance_clock(Duration::from_millis(rng.range(0, 3000) as u64));
                other.advance_clock(Duration::ZERO);
                state.sweep().await.unwrap();
                let ids: Vec<String> = model.pending.keys().cloned().collect();
                for id in ids {
                    let t = state.ledger.get(&id).await.unwrap().unwrap();
                    if t.state == TransferState::Expired {
                        model.resolve(&id, 0);
                    }
                }
            }
            // The market restarts on the same database.
            3 => {
                let clock = state.now_ms() - agora_wire::auth::now_ms();
                state = m.replica().await;
                state.advance_clock(Duration::from_millis(clock.max(0) as u64));
            }
            // Two clients at once, on two replicas.
            4 | 5 => {
                let (id1, op1) = new_op(&mut rng, &model);
                let (id2, op2) = new_op(&mut rng, &model);
                other = m.replica().await;
                other.advance_clock(Duration::from_millis(
                    (state.now_ms() - agora_wire::auth::now_ms()).max(0) as u64,
                ));
                let _ = tokio::join!(
                    run_op(&state, &id1, &op1, None),
                    run_op(&other, &id2, &op2, None)
                );
                for (id, op) in [(id1, op1), (id2, op2)] {
                    observe(&state, &mut model, &id, &op, false).await;
                    model.sent.push((id, op));
                }
            }
            // One request, cancelled mid-flight now and then.
            _ => {
                let (id, op) = new_op(&mut rng, &model);
                let cut = (rng.range(0, 9) == 0)
                    .then(|| Duration::from_micros(rng.range(0, 2000) as u64));
                let _ = run_op(&state, &id, &op, cut).await;
                // A cancelled request may still commit or roll back: wait.
                if cut.is_some() {
                    quiesce(&state).await;
                }
                observe(&state, &mut model, &id, &op, false).await;
                model.sent.push((id, op));
            }
        }
        check(&state, &model, step, seed).await;
    }
    println!(
        "seed {seed}: {steps} steps, {} transfers, {} holds pending",
        model.sent.len(),
        model.pending.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulation_sqlite() {
    let m = TestMarket::sqlite().await;
    simulate(&m, 1500).await;
    m.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulation_postgres() {
    let m = TestMarket::postgres().await;
    simulate(&m, 1000).await;
    m.cleanup().await;
}
