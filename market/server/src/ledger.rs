//! The credits ledger: double-entry accounts, transfers with client-chosen
//! ids, and escrow as pending transfers (holds) resolved at most once.
//!
//! Design choices (after TigerBeetle):
//! - Balances live on accounts as four counters (debits/credits ×
//!   pending/posted) and are always derivable from the transfers; the
//!   invariant check recomputes them.
//! - A debit is one conditional `UPDATE ... WHERE available >= amount`: atomic
//!   on SQLite (one writer) and on PostgreSQL (the row lock re-checks the
//!   condition), so no interleaving of market replicas can overdraw.
//! - A hold is resolved by a conditional `UPDATE ... WHERE state = 'pending'`
//!   that must change exactly one row: post, void and expiry race safely and
//!   only one wins.
//! - A transfer id is unique; a retry with the same id and request returns
//!   the first outcome, with another request it is refused.

use crate::db::{Db, Kind, Text};
use crate::error::ApiError;
use agora_wire::api::{Balance, InvariantReport, Page, Transfer, TransferState};
use sqlx::{Any, Row, Transaction};

/// The issuance account: minting debits it (it alone may go negative).
pub const MINT: &str = "mint";
/// Market fees.
pub const FEES: &str = "fees";
/// The shared escrow account of earlier versions: every job now has its
/// own ([`job_escrow`]); this one stays reserved.
pub const ESCROW: &str = "escrow";

/// Prefixes of the transfer ids and accounts the market uses for itself.
/// No client may choose one (not even the operator), so the market's own
/// transfers never meet a conflicting id, and its holds and escrow accounts
/// are resolved and spent by the market alone.
pub const MARKET_ID_PREFIXES: &[&str] = &["job:", "lease:", "market:"];

/// Whether `id` (a transfer id or an account) is in the market's namespace.
pub fn is_market_id(id: &str) -> bool {
    id == ESCROW || MARKET_ID_PREFIXES.iter().any(|p| id.starts_with(p))
}

/// Refuse a client's use of a market id.
pub fn client_id<'a>(id: &'a str, what: &str) -> Result<&'a str, ApiError> {
    if is_market_id(id) {
        return Err(ApiError::Reserved(format!(
            "{what} `{id}` is in the market's namespace ({}, `{ESCROW}`)",
            MARKET_ID_PREFIXES.join(", ")
        )));
    }
    Ok(id)
}

/// The escrow account of job `job`: credited by the job's hold when it is
/// posted, debited only to pay that job's leases, fees and refund. One
/// job's funds are unreachable from another's: a debit never overdraws.
pub fn job_escrow(job: &str) -> String {
    format!("job:{job}")
}

/// Largest amount of one transfer: sums of many stay far inside `i64`.
pub const MAX_AMOUNT: u64 = 1 << 50;
/// Longest transfer id.
pub const MAX_ID_LEN: usize = 128;
/// Longest hold.
pub const MAX_HOLD_MS: u64 = 30 * 24 * 3600 * 1000;
/// Holds expired per sweep.
pub const EXPIRE_BATCH: i64 = 256;

/// A ledger operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Single {
        debit: String,
        credit: String,
        amount: u64,
    },
    Hold {
        debit: String,
        credit: String,
        amount: u64,
        timeout_ms: u64,
    },
    Post {
        pending_id: String,
        amount: Option<u64>,
    },
    Void {
        pending_id: String,
    },
    Mint {
        account: String,
        amount: u64,
    },
}

impl Op {
    /// A canonical description, hashed to recognise a retry.
    fn canonical(&self) -> String {
        match self {
            Op::Single {
                debit,
                credit,
                amount,
            } => format!("single|{debit}|{credit}|{amount}"),
            Op::Hold {
                debit,
                credit,
                amount,
                timeout_ms,
            } => format!("hold|{debit}|{credit}|{amount}|{timeout_ms}"),
            Op::Post { pending_id, amount } => format!("post|{pending_id}|{amount:?}"),
            Op::Void { pending_id } => format!("void|{pending_id}"),
            Op::Mint { account, amount } => format!("mint|{account}|{amount}"),
        }
    }

    fn digest(&self) -> String {
        blake3::hash(self.canonical().as_bytes())
            .to_hex()
            .to_string()
    }
}

#[derive(Clone)]
pub struct Ledger {
    db: Db,
    /// Operations whose task has not finished.
    in_flight: crate::detached::Detached,
}

const TRANSFER_COLUMNS: &str = "id, request_digest, debit, credit, amount, kind, state, pending_id, amount_posted, created_at_ms, expires_at_ms";

fn amount(value: u64) -> Result<i64, ApiError> {
    check_amount("amount", value)?;
    Ok(value as i64)
}

/// Refuse an amount of credits outside 1 to [`MAX_AMOUNT`].
pub fn check_amount(what: &'static str, value: u64) -> Result<(), ApiError> {
    if value == 0 || value > MAX_AMOUNT {
        return Err(agora_wire::limits::LimitError {
            name: "MAX_AMOUNT",
            what,
            value,
            min: 1,
            max: MAX_AMOUNT,
        }
        .into());
    }
    Ok(())
}

/// A `transfers` row as stored: the transfer and the digest of the request
/// that made it (a retry with another request is refused).
#[derive(sqlx::FromRow)]
struct TransferRow {
    id: String,
    request_digest: String,
    debit: String,
    credit: String,
    amount: i64,
    kind: String,
    state: Text<TransferState>,
    pending_id: Option<String>,
    amount_posted: Option<i64>,
    created_at_ms: i64,
    expires_at_ms: Option<i64>,
}

impl TransferRow {
    fn into_parts(self) -> (Transfer, String) {
        let transfer = Transfer {
            id: self.id,
            debit: self.debit,
            credit: self.credit,
            amount: self.amount as u64,
            kind: self.kind,
            state: self.state.0,
            pending_id: self.pending_id,
            amount_posted: self.amount_posted.map(|v| v as u64),
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms,
        };
        (transfer, self.request_digest)
    }
}

/// The `transfers` row `id`, read through `db` (the pool or a transaction).
async fn transfer_row<'e>(
    db: impl sqlx::Executor<'e, Database = Any>,
    id: &str,
) -> Result<Option<TransferRow>, sqlx::Error> {
    sqlx::query_as::<_, TransferRow>(&format!(
        "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// An `accounts` row's counters.
#[derive(sqlx::FromRow)]
struct AccountRow {
    id: String,
    debits_pending: i64,
    debits_posted: i64,
    credits_pending: i64,
    credits_posted: i64,
}

fn check_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::Invalid(format!(
            "a transfer id is 1 to {MAX_ID_LEN} printable ASCII characters"
        )));
    }
    Ok(())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Transfer `id`, read through `db` (the pool or a transaction).
async fn transfer<'e>(
    db: impl sqlx::Executor<'e, Database = Any>,
    id: &str,
) -> Result<Option<Transfer>, ApiError> {
    Ok(transfer_row(db, id).await?.map(|r| r.into_parts().0))
}

/// `account`'s balance, read through `db` (the pool or a transaction).
async fn balance<'e>(
    db: impl sqlx::Executor<'e, Database = Any>,
    account: &str,
) -> Result<Option<Balance>, ApiError> {
    let row = sqlx::query_as::<_, AccountRow>("SELECT id, debits_pending, debits_posted, credits_pending, credits_posted FROM accounts WHERE id = $1")
        .bind(account)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|a| {
        let (credits_posted, debits_posted) = (a.credits_posted as u64, a.debits_posted as u64);
        let (credits_pending, debits_pending) = (a.credits_pending as u64, a.debits_pending as u64);
        Balance {
            available: credits_posted
                .saturating_sub(debits_posted)
                .saturating_sub(debits_pending),
            account: a.id,
            credits_posted,
            debits_posted,
            credits_pending,
            debits_pending,
        }
    }))
}

impl Ledger {
    pub fn new(db: Db) -> Self {
        Ledger {
            db,
            in_flight: Default::default(),
        }
    }

    /// Apply `op` as transfer `id`, once.
    ///
    /// The database work runs detached ([`crate::detached`]): it commits
    /// or rolls back whole, whatever the caller does.
    pub async fn execute(&self, id: &str, op: &Op, now_ms: i64) -> Result<Transfer, ApiError> {
        let (this, id, op) = (self.clone(), id.to_string(), op.clone());
        self.in_flight
            .run(async move { this.execute_here(&id, &op, now_ms).await })
            .await
            .map_err(|e| ApiError::Internal(format!("ledger task: {e}")))?
    }

    /// Apply `op` as transfer `id` inside the caller's transaction, with
    /// the caller's other writes: all commit or none. A retry of the same
    /// id and request returns the first outcome; a conflict is refused.
    pub async fn execute_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: &str,
        op: &Op,
        now_ms: i64,
    ) -> Result<Transfer, ApiError> {
        check_id(id)?;
        let digest = op.digest();
        if let Some(existing) = self.replay(tx, id, &digest).await? {
            return existing;
        }
        match apply(tx, self.db.kind, id, op, &digest, now_ms).await {
            Ok(transfer) => Ok(transfer),
            Err(Failure::Sql(e)) if is_unique_violation(&e) => {
                Err(ApiError::TransferConflict(id.into()))
            }
            Err(Failure::Sql(e)) => Err(e.into()),
            Err(Failure::Api(e)) => Err(e),
        }
    }

    /// Wait until every operation started on this ledger has finished.
    pub async fn quiesce(&self) {
        self.in_flight.quiesce().await;
    }

    async fn execute_here(&self, id: &str, op: &Op, now_ms: i64) -> Result<Transfer, ApiError> {
        check_id(id)?;
        let digest = op.digest();
        let mut tx = self.db.write().await?;
        if let Some(existing) = self.replay(&mut tx, id, &digest).await? {
            return existing;
        }
        let result = apply(&mut tx, self.db.kind, id, op, &digest, now_ms).await;
        match result {
            Ok(transfer) => match tx.commit().await {
                Ok(()) => Ok(transfer),
                Err(e) if is_unique_violation(&e) => self.after_race(id, &digest).await,
                Err(e) => Err(e.into()),
            },
            Err(Failure::Sql(e)) if is_unique_violation(&e) => {
                drop(tx);
                self.after_race(id, &digest).await
            }
            Err(Failure::Sql(e)) => Err(e.into()),
            Err(Failure::Api(e)) => Err(e),
        }
    }

    /// The first outcome of `id`, if it exists.
    async fn replay(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: &str,
        digest: &str,
    ) -> Result<Option<Result<Transfer, ApiError>>, ApiError> {
        Ok(match transfer_row(&mut **tx, id).await? {
            None => None,
            Some(row) => {
                let (transfer, first_digest) = row.into_parts();
                Some(if first_digest == digest {
                    Ok(transfer)
                } else {
                    Err(ApiError::TransferConflict(id.into()))
                })
            }
        })
    }

    /// Another request inserted `id` first: return its outcome.
    async fn after_race(&self, id: &str, digest: &str) -> Result<Transfer, ApiError> {
        let mut tx = self.db.write().await?;
        match self.replay(&mut tx, id, digest).await? {
            Some(outcome) => outcome,
            None => Err(ApiError::Internal(format!(
                "transfer {id} vanished after a unique violation"
            ))),
        }
    }

    pub async fn get(&self, id: &str) -> Result<Option<Transfer>, ApiError> {
        transfer(&self.db.pool, id).await
    }

    /// Transfer `id` as the caller's transaction sees it.
    pub async fn get_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: &str,
    ) -> Result<Option<Transfer>, ApiError> {
        transfer(&mut **tx, id).await
    }

    pub async fn balance(&self, account: &str) -> Result<Option<Balance>, ApiError> {
        balance(&self.db.pool, account).await
    }

    /// `account`'s balance as the caller's transaction sees it.
    pub async fn balance_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        account: &str,
    ) -> Result<Option<Balance>, ApiError> {
        balance(&mut **tx, account).await
    }

    /// Lock `accounts` for the rest of the caller's transaction: see
    /// [`lock_accounts`].
    pub async fn lock_accounts(
        &self,
        tx: &mut Transaction<'static, Any>,
        accounts: &[&str],
        now_ms: i64,
    ) -> Result<(), ApiError> {
        Ok(lock_accounts(tx, self.db.kind, accounts, now_ms).await?)
    }

    /// Transfers touching `account`, newest first.
    pub async fn history(
        &self,
        account: &str,
        page: u32,
        per_page: u32,
    ) -> Result<Page<Transfer>, ApiError> {
        let per_page = per_page.clamp(1, 200);
        let rows = sqlx::query_as::<_, TransferRow>(&format!(
            "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE debit = $1 OR credit = $1 ORDER BY seq DESC LIMIT $2 OFFSET $3"
        ))
        .bind(account)
        .bind(per_page as i64)
        .bind(page as i64 * per_page as i64)
        .fetch_all(&self.db.pool)
        .await?;
        let total: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM transfers WHERE debit = $1 OR credit = $1")
                .bind(account)
                .fetch_one(&self.db.pool)
                .await?
                .try_get("n")?;
        let items = rows.into_iter().map(|r| r.into_parts().0).collect();
        Ok(Page {
            items,
            page,
            per_page,
            total: total as u64,
        })
    }

    /// Expire holds whose time has passed; returns how many, and how many
    /// failed (each hold on its own: one failure does not stop the rest).
    pub async fn expire_due(&self, now_ms: i64) -> Result<(u64, u64), ApiError> {
        let due: Vec<String> = sqlx::query(
            "SELECT id FROM transfers WHERE state = 'pending' AND expires_at_ms <= $1 ORDER BY expires_at_ms LIMIT $2",
        )
        .bind(now_ms)
        .bind(EXPIRE_BATCH)
        .fetch_all(&self.db.pool)
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<_, _>>()?;
        let (mut expired, mut failed) = (0, 0);
        for id in due {
            match self.expire(&id, now_ms).await {
                Ok(true) => expired += 1,
                Ok(false) => {} // posted or voided meanwhile
                Err(e) => {
                    tracing::warn!(hold = id, "expiring a hold failed: {e}");
                    failed += 1;
                }
            }
        }
        Ok((expired, failed))
    }

    async fn expire(&self, id: &str, now_ms: i64) -> Result<bool, ApiError> {
        let mut tx = self.db.write().await?;
        let Some(row) = transfer_row(&mut *tx, id).await? else {
            return Ok(false);
        };
        let (hold, _) = row.into_parts();
        lock_accounts(
            &mut tx,
            self.db.kind,
            &[hold.debit.as_str(), hold.credit.as_str()],
            now_ms,
        )
        .await?;
        match resolve(&mut tx, id, TransferState::Expired, 0).await {
            Ok(_) => {
                tx.commit().await?;
                Ok(true)
            }
            Err(Failure::Api(ApiError::NotPending(_))) => Ok(false),
            Err(Failure::Api(e)) => Err(e),
            Err(Failure::Sql(e)) => Err(e.into()),
        }
    }

    /// Recompute every balance from the transfers and check the books.
    pub async fn check_invariants(&self) -> Result<InvariantReport, ApiError> {
        let pool = &self.db.pool;
        let sums = sqlx::query(
            "SELECT CAST(COALESCE(SUM(debits_posted), 0) AS BIGINT) AS dpo, CAST(COALESCE(SUM(credits_posted), 0) AS BIGINT) AS cpo,
                    CAST(COALESCE(SUM(debits_pending), 0) AS BIGINT) AS dp, CAST(COALESCE(SUM(credits_pending), 0) AS BIGINT) AS cp
             FROM accounts",
        )
        .fetch_one(pool)
        .await?;
        let get = |c: &str| sums.try_get::<i64, _>(c);
        let (dpo, cpo, dp, cp) = (get("dpo")?, get("cpo")?, get("dp")?, get("cp")?);
        let mut violations = Vec::new();
        if dpo != cpo {
            violations.push(format!("posted debits {dpo} != posted credits {cpo}"));
        }
        if dp != cp {
            violations.push(format!("pending debits {dp} != pending credits {cp}"));
        }
        for row in sqlx::query(
            "SELECT id FROM accounts WHERE kind <> 'issuance' AND credits_posted - debits_posted - debits_pending < 0",
        )
        .fetch_all(pool)
        .await?
        {
            violations.push(format!("account {} is overdrawn", row.try_get::<String, _>("id")?));
        }
        // Each counter equals the sum of the transfers behind it.
        let derived = [
            (
                "debits_posted",
                "debit",
                "kind IN ('single', 'mint', 'post')",
            ),
            (
                "credits_posted",
                "credit",
                "kind IN ('single', 'mint', 'post')",
            ),
            (
                "debits_pending",
                "debit",
                "kind = 'hold' AND state = 'pending'",
            ),
            (
                "credits_pending",
                "credit",
                "kind = 'hold' AND state = 'pending'",
            ),
        ];
        for (counter, side, filter) in derived {
            let query = format!(
                "SELECT a.id AS id, a.{counter} AS have, CAST(COALESCE(t.s, 0) AS BIGINT) AS want FROM accounts a
                 LEFT JOIN (SELECT {side} AS account, CAST(SUM(amount) AS BIGINT) AS s FROM transfers WHERE {filter} GROUP BY {side}) t
                 ON t.account = a.id WHERE a.{counter} <> COALESCE(t.s, 0)"
            );
            for row in sqlx::query(&query).fetch_all(pool).await? {
                violations.push(format!(
                    "account {}: {counter} is {} but its transfers sum to {}",
                    row.try_get::<String, _>("id")?,
                    row.try_get::<i64, _>("have")?,
                    row.try_get::<i64, _>("want")?
                ));
            }
        }
        Ok(InvariantReport {
            ok: violations.is_empty(),
            debits_posted: dpo as u64,
            credits_posted: cpo as u64,
            debits_pending: dp as u64,
            credits_pending: cp as u64,
            violations,
        })
    }
}

/// Why an operation did not apply: a refusal, or the database.
enum Failure {
    Api(ApiError),
    Sql(sqlx::Error),
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Failure::Sql(e)
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Api(e)
    }
}

/// Lock `accounts` (creating those that do not exist yet) for the rest of
/// `tx`, in id order whatever the caller's order. Every transaction that
/// writes accounts takes them this way before writing any (each transfer
/// here, a settlement all of its accounts at once), so transactions moving
/// credits between the same accounts wait for each other instead of
/// deadlocking. A no-op on SQLite, whose write transactions hold the whole
/// database.
async fn lock_accounts(
    tx: &mut Transaction<'static, Any>,
    kind: Kind,
    accounts: &[&str],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    if kind != Kind::Postgres {
        return Ok(());
    }
    let mut sorted = accounts.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for account in &sorted {
        ensure_account(tx, account, now_ms).await?;
    }
    let placeholders = (1..=sorted.len())
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    // NO KEY UPDATE: the strength an UPDATE of the counters takes anyway,
    // which leaves foreign-key checks of new transfers unblocked.
    let sql = format!(
        "SELECT id FROM accounts WHERE id IN ({placeholders}) ORDER BY id FOR NO KEY UPDATE"
    );
    let mut lock = sqlx::query_scalar::<_, String>(&sql);
    for account in &sorted {
        lock = lock.bind(*account);
    }
    lock.fetch_all(&mut **tx).await?;
    Ok(())
}

async fn ensure_account(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let kind = if is_market_id(id) { "escrow" } else { "user" };
    sqlx::query("INSERT INTO accounts (id, kind, created_at_ms) VALUES ($1, $3, $2) ON CONFLICT (id) DO NOTHING")
        .bind(id)
        .bind(now_ms)
        .bind(kind)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Take `amount` from `account`'s available balance into `column`, or
/// refuse with the numbers.
async fn debit(
    tx: &mut Transaction<'static, Any>,
    account: &str,
    column: &str,
    amount: i64,
) -> Result<(), Failure> {
    let done = sqlx::query(&format!(
        "UPDATE accounts SET {column} = {column} + $1 WHERE id = $2
         AND (kind = 'issuance' OR credits_posted - debits_posted - debits_pending >= $1)"
    ))
    .bind(amount)
    .bind(account)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() == 1 {
        return Ok(());
    }
    let row = sqlx::query("SELECT credits_posted - debits_posted - debits_pending AS available FROM accounts WHERE id = $1")
        .bind(account)
        .fetch_optional(&mut **tx)
        .await?;
    Err(Failure::Api(ApiError::InsufficientFunds {
        account: account.into(),
        available: row
            .map(|r| r.try_get::<i64, _>("available"))
            .transpose()?
            .unwrap_or(0)
            .max(0) as u64,
        requested: amount as u64,
    }))
}

async fn credit(
    tx: &mut Transaction<'static, Any>,
    account: &str,
    column: &str,
    amount: i64,
) -> Result<(), Failure> {
    sqlx::query(&format!(
        "UPDATE accounts SET {column} = {column} + $1 WHERE id = $2"
    ))
    .bind(amount)
    .bind(account)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert(
    tx: &mut Transaction<'static, Any>,
    t: &Transfer,
    digest: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO transfers ({TRANSFER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    ))
    .bind(&t.id)
    .bind(digest)
    .bind(&t.debit)
    .bind(&t.credit)
    .bind(t.amount as i64)
    .bind(&t.kind)
    .bind(t.state.as_str())
    .bind(t.pending_id.clone())
    .bind(t.amount_posted.map(|v| v as i64))
    .bind(t.created_at_ms)
    .bind(t.expires_at_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn apply(
    tx: &mut Transaction<'static, Any>,
    kind: Kind,
    id: &str,
    op: &Op,
    digest: &str,
    now_ms: i64,
) -> Result<Transfer, Failure> {
    let record = |debit: &str, credit: &str, amount: u64, kind: &str, state| Transfer {
        id: id.into(),
        debit: debit.into(),
        credit: credit.into(),
        amount,
        kind: kind.into(),
        state,
        pending_id: None,
        amount_posted: None,
        created_at_ms: now_ms,
        expires_at_ms: None,
    };
    let transfer = match op {
        Op::Single {
            debit: from,
            credit: to,
            amount: value,
        } => {
            lock_accounts(tx, kind, &[from.as_str(), to.as_str()], now_ms).await?;
            move_posted(tx, from, to, *value, now_ms).await?;
            record(from, to, *value, "single", TransferState::Posted)
        }
        Op::Mint {
            account: to,
            amount: value,
        } => {
            lock_accounts(tx, kind, &[MINT, to.as_str()], now_ms).await?;
            move_posted(tx, MINT, to, *value, now_ms).await?;
            record(MINT, to, *value, "mint", TransferState::Posted)
        }
        Op::Hold {
            debit: from,
            credit: to,
            amount: value,
            timeout_ms,
        } => {
            if from == to {
                return Err(
                    ApiError::Invalid("debit and credit are the same account".into()).into(),
                );
            }
            if *timeout_ms == 0 || *timeout_ms > MAX_HOLD_MS {
                return Err(ApiError::Invalid(format!(
                    "a hold's timeout is 1 to {MAX_HOLD_MS} ms"
                ))
                .into());
            }
            let value_i = amount(*value)?;
            ensure_account(tx, from, now_ms).await?;
            ensure_account(tx, to, now_ms).await?;
            lock_accounts(tx, kind, &[from.as_str(), to.as_str()], now_ms).await?;
            debit(tx, from, "debits_pending", value_i).await?;
            credit(tx, to, "credits_pending", value_i).await?;
            let mut t = record(from, to, *value, "hold", TransferState::Pending);
            t.expires_at_ms = Some(now_ms + *timeout_ms as i64);
            t
        }
        Op::Post {
            pending_id,
            amount: requested,
        } => {
            let hold = pending_hold(tx, kind, pending_id, now_ms).await?;
            let value = requested.unwrap_or(hold.amount);
            if value > hold.amount {
                return Err(ApiError::Invalid(format!(
                    "post of {value} exceeds the hold of {}",
                    hold.amount
                ))
                .into());
            }
            resolve(tx, pending_id, TransferState::Settled, value).await?;
            let mut t = record(
                &hold.debit,
                &hold.credit,
                value,
                "post",
                TransferState::Posted,
            );
            t.pending_id = Some(pending_id.clone());
            t
        }
        Op::Void { pending_id } => {
            let hold = pending_hold(tx, kind, pending_id, now_ms).await?;
            resolve(tx, pending_id, TransferState::Voided, 0).await?;
            let mut t = record(
                &hold.debit,
                &hold.credit,
                hold.amount,
                "void",
                TransferState::Voided,
            );
            t.pending_id = Some(pending_id.clone());
            t
        }
    };
    insert(tx, &transfer, digest).await?;
    Ok(transfer)
}

/// Move `value` from `from` to `to` now.
async fn move_posted(
    tx: &mut Transaction<'static, Any>,
    from: &str,
    to: &str,
    value: u64,
    now_ms: i64,
) -> Result<(), Failure> {
    if from == to {
        return Err(ApiError::Invalid("debit and credit are the same account".into()).into());
    }
    let value = amount(value)?;
    ensure_account(tx, from, now_ms).await?;
    ensure_account(tx, to, now_ms).await?;
    debit(tx, from, "debits_posted", value).await?;
    credit(tx, to, "credits_posted", value).await
}

/// The pending hold `id`, its accounts locked (before the hold's row, as
/// every resolver locks them), or NotPending (also when it has just
/// expired).
async fn pending_hold(
    tx: &mut Transaction<'static, Any>,
    kind: Kind,
    id: &str,
    now_ms: i64,
) -> Result<Transfer, Failure> {
    let Some(row) = transfer_row(&mut **tx, id).await? else {
        return Err(ApiError::NotFound(format!("no transfer `{id}`")).into());
    };
    let (hold, _) = row.into_parts();
    lock_accounts(
        tx,
        kind,
        &[hold.debit.as_str(), hold.credit.as_str()],
        now_ms,
    )
    .await?;
    if hold.kind != "hold" || hold.state != TransferState::Pending {
        return Err(ApiError::NotPending(id.into()).into());
    }
    if hold.expires_at_ms.is_some_and(|at| at <= now_ms) {
        return Err(ApiError::NotPending(id.into()).into());
    }
    Ok(hold)
}

/// Resolve hold `id` once: `state` is settled (moving `posted`), voided or
/// expired. The conditional update is the lock: a second resolver changes
/// no row and gets NotPending.
async fn resolve(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    state: TransferState,
    posted: u64,
) -> Result<Transfer, Failure> {
    let done = sqlx::query(
        "UPDATE transfers SET state = $1, amount_posted = $2 WHERE id = $3 AND state = 'pending'",
    )
    .bind(state.as_str())
    .bind(posted as i64)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(ApiError::NotPending(id.into()).into());
    }
    let (hold, _) = transfer_row(&mut **tx, id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?
        .into_parts();
    let held = hold.amount as i64;
    sqlx::query("UPDATE accounts SET debits_pending = debits_pending - $1, debits_posted = debits_posted + $2 WHERE id = $3")
        .bind(held)
        .bind(posted as i64)
        .bind(&hold.debit)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE accounts SET credits_pending = credits_pending - $1, credits_posted = credits_posted + $2 WHERE id = $3")
        .bind(held)
        .bind(posted as i64)
        .bind(&hold.credit)
        .execute(&mut **tx)
        .await?;
    Ok(hold)
}
