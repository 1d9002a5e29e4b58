//! The approvals store: SQLite (one replica, a file) or PostgreSQL (every replica shares it),
//! through sqlx, with the migrations in `migrations/` run at start.
//!
//! Every state change is one conditional statement or one short transaction, so that two
//! replicas (or two calls) racing for the same approval cannot both win: consumption is a
//! compare-and-set on the state, a review holds the approval's row for its transaction, and at
//! most one live approval per (requester, method, digest) is a unique index. The same SQL runs
//! on both databases (`$N` parameters, which sqlx's SQLite driver also reads by number).

use std::borrow::Cow;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{ConnectOptions as _, Row};

use super::{ApprovalRecord, PendingCaps, PendingLimit, Review, ReviewVerdict};
use crate::call::{ApprovalState, FieldValue, RequestField, SemanticRequest};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a statement, or could not be reached.
    #[error("approvals database")]
    Database(#[from] sqlx::Error),
    /// The migrations could not be applied.
    #[error("approvals database migrations")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A row holds a value this code never writes.
    #[error("approvals database: row {id}: unexpected {column} {value:?}")]
    Corrupt {
        /// The approval.
        id: String,
        /// The column.
        column: &'static str,
        /// What it holds.
        value: String,
    },
}

/// Where approvals are kept.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// An SQLite file (made if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL database, by URL (`postgres://user@host:5432/db?sslmode=...`).
    Postgres(String),
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl StoreLocation {
    /// Parses `approvals.store`: `sqlite:PATH` or `postgres://...` (`postgresql://...`).
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        if let Some(path) = value.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(
                    "sqlite: needs a file path, as in sqlite:/var/lib/datashare-gateway/approvals.db",
                );
            }
            return Ok(StoreLocation::Sqlite(PathBuf::from(path)));
        }
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            PgConnectOptions::from_str(value).map_err(
                |_| "not a PostgreSQL URL sqlx can read (postgres://user@host:port/database)",
            )?;
            return Ok(StoreLocation::Postgres(value.to_owned()));
        }
        Err("must be sqlite:PATH or postgres://...")
    }

    /// As logs may show it: a PostgreSQL URL without its password.
    pub fn redacted(&self) -> String {
        match self {
            StoreLocation::Sqlite(path) => format!("sqlite:{}", path.display()),
            StoreLocation::Postgres(url) => match url.split_once("://") {
                Some((scheme, rest)) => match rest.split_once('@') {
                    Some((user, host)) => {
                        let user = user.split_once(':').map_or(user, |(u, _)| u);
                        format!("{scheme}://{user}@{host}")
                    }
                    None => url.clone(),
                },
                None => "postgres://<unparsed>".into(),
            },
        }
    }
}

/// The migrations in `migrations/`, compiled in, oldest first.
fn migrations() -> Vec<Migration> {
    let migration = |version, name, sql| {
        Migration::new(
            version,
            Cow::Borrowed(name),
            MigrationType::Simple,
            Cow::Borrowed(sql),
            false,
        )
    };
    vec![
        migration(
            1,
            "approvals",
            include_str!("../../migrations/0001_approvals.sql"),
        ),
        migration(
            2,
            "generic request fields",
            include_str!("../../migrations/0002_generic_request_fields.sql"),
        ),
    ]
}

/// The first `.0` of [`migrations`] as a source sqlx migrates from (all of them at start).
#[derive(Debug)]
struct Embedded(usize);

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<Vec<Migration>, Box<dyn std::error::Error + Send + Sync>>,
                > + Send
                + 'static,
        >,
    > {
        Box::pin(async move { Ok(migrations().into_iter().take(self.0).collect()) })
    }
}

#[derive(Clone, Debug)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever pool the store has: the same code, type-checked
/// once per database.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.backend {
            Backend::Sqlite($pool) => $body,
            Backend::Postgres($pool) => $body,
        }
    };
}

/// The columns every approval query selects, in [`decode!`]'s order.
const COLUMNS: &str = "id, requester, method, digest, required_approvals, state, created_at_ms, \
    expires_at_ms, created_by_request_id, consumed_at_ms, consumed_by_request_id";

/// An approval row without its reviews, as read.
struct RowData {
    id: String,
    requester: String,
    method: String,
    digest: String,
    required_approvals: i64,
    state: String,
    created_at_ms: i64,
    expires_at_ms: i64,
    created_by_request_id: String,
    consumed_at_ms: Option<i64>,
    consumed_by_request_id: Option<String>,
}

/// Reads a row selected with [`COLUMNS`] (a macro, so it type-checks for either database's row).
macro_rules! decode {
    ($row:expr) => {{
        let row = $row;
        RowData {
            id: row.try_get("id")?,
            requester: row.try_get("requester")?,
            method: row.try_get("method")?,
            digest: row.try_get("digest")?,
            required_approvals: row.try_get("required_approvals")?,
            state: row.try_get("state")?,
            created_at_ms: row.try_get("created_at_ms")?,
            expires_at_ms: row.try_get("expires_at_ms")?,
            created_by_request_id: row.try_get("created_by_request_id")?,
            consumed_at_ms: row.try_get("consumed_at_ms")?,
            consumed_by_request_id: row.try_get("consumed_by_request_id")?,
        }
    }};
}

/// The methods this code writes, as `'static` names.
fn known(
    id: &str,
    column: &'static str,
    value: &str,
    names: &[&'static str],
) -> Result<&'static str, StoreError> {
    names
        .iter()
        .copied()
        .find(|name| *name == value)
        .ok_or_else(|| StoreError::Corrupt {
            id: id.to_owned(),
            column,
            value: value.to_owned(),
        })
}

impl RowData {
    /// The record, once its fields hash to its digest: a row whose fields were changed, lost or
    /// reordered is corrupt, not a different request.
    fn into_record(
        self,
        fields: Vec<RequestField>,
        reviews: Vec<Review>,
        methods: &[&'static str],
    ) -> Result<ApprovalRecord, StoreError> {
        let state = ApprovalState::parse(&self.state).ok_or_else(|| StoreError::Corrupt {
            id: self.id.clone(),
            column: "state",
            value: self.state.clone(),
        })?;
        let request = SemanticRequest {
            method: known(&self.id, "method", &self.method, methods)?,
            fields,
        };
        if request.digest() != self.digest {
            return Err(StoreError::Corrupt {
                id: self.id,
                column: "digest",
                value: format!("{} (the fields hash to {})", self.digest, request.digest()),
            });
        }
        Ok(ApprovalRecord {
            request,
            id: self.id,
            requester: self.requester,
            digest: self.digest,
            required_approvals: u32::try_from(self.required_approvals).unwrap_or(u32::MAX),
            stored_state: state,
            created_at: from_ms(self.created_at_ms),
            expires_at: from_ms(self.expires_at_ms),
            created_by_request_id: self.created_by_request_id,
            consumed_at: self.consumed_at_ms.map(from_ms),
            consumed_by_request_id: self.consumed_by_request_id,
            reviews,
        })
    }
}

/// Makes `path` (if missing) and sets it, and any WAL and shared-memory file beside it, to 0600.
fn private_file(path: &std::path::Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let private = |path: &std::path::Path| -> std::io::Result<()> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
    };
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .and_then(|_| private(path))
        .map_err(|err| StoreError::Database(sqlx::Error::Io(err)))?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let side = std::path::PathBuf::from(side);
        if side.exists() {
            private(&side).map_err(|err| StoreError::Database(sqlx::Error::Io(err)))?;
        }
    }
    Ok(())
}

pub(crate) fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A new approval, before it is stored.
#[derive(Clone, Debug)]
pub(crate) struct NewApproval<'a> {
    pub(crate) id: String,
    pub(crate) requester: &'a str,
    pub(crate) request: &'a SemanticRequest,
    pub(crate) digest: &'a str,
    pub(crate) required_approvals: u32,
    pub(crate) created_at: SystemTime,
    pub(crate) expires_at: SystemTime,
    pub(crate) request_id: &'a str,
}

/// What [`Store::insert_pending`] found.
#[derive(Debug)]
pub(crate) enum Inserted {
    /// The request's live approval, and whether it is the new one.
    Live(Box<ApprovalRecord>, bool),
    /// None is live, yet the new one was not stored: an approval whose time ran out still holds
    /// the request's place (sweep, then try again).
    HeldByExpired,
    /// None is live, and a new one would pass this limit.
    OverCap(PendingLimit),
}

/// How a review ended.
#[derive(Debug)]
pub(crate) enum ReviewOutcome {
    /// Recorded; the approval as it now stands.
    Recorded(Box<ApprovalRecord>),
    /// No such approval.
    NotFound,
    /// The approval is no longer open for review (its state, as of now).
    Closed(ApprovalState),
    /// The reviewer already reviewed it.
    AlreadyReviewed,
}

/// Where a listing resumes: after the approval created at `created_at_ms` with id `id`, newest
/// first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) created_at_ms: i64,
    pub(crate) id: String,
}

/// The approvals database.
#[derive(Clone, Debug)]
pub(crate) struct Store {
    backend: Backend,
    /// The methods approvals can be bound to (`operations::approvable_methods`); a row naming
    /// another is corrupt.
    methods: Arc<[&'static str]>,
}

impl Store {
    /// Connects (an SQLite file is made if missing) and applies the migrations.
    pub(crate) async fn open(
        location: &StoreLocation,
        max_connections: u32,
        methods: Arc<[&'static str]>,
    ) -> Result<Self, StoreError> {
        let backend = match location {
            StoreLocation::Sqlite(path) => {
                // Made 0600 before SQLite opens it: SQLite gives the WAL and shared-memory
                // files the database file's permissions. A file made 0644 by an earlier
                // release is narrowed.
                private_file(path)?;
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    // Readers do not wait for the writer; each commit is fsynced, as audit
                    // records are: an approval is a security decision.
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true);
                Backend::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(max_connections)
                        .connect_with(options)
                        .await?,
                )
            }
            StoreLocation::Postgres(url) => Backend::Postgres(
                PgPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(PgConnectOptions::from_str(url)?)
                    .await?,
            ),
        };
        // sqlx takes an advisory lock on PostgreSQL, so replicas starting together migrate once.
        let migrator = Migrator::new(Embedded(usize::MAX)).await?;
        let store = Store { backend, methods };
        on_pool!(store, |pool| migrator.run(pool).await?);
        Ok(store)
    }

    async fn reviews(&self, id: &str) -> Result<Vec<Review>, StoreError> {
        const SQL: &str = "SELECT principal, verdict, comment, reviewed_at_ms FROM approval_reviews \
             WHERE approval_id = $1 ORDER BY reviewed_at_ms, principal";
        let rows: Vec<(String, String, String, i64)> = on_pool!(self, |pool| {
            let mut out = Vec::new();
            for row in sqlx::query(SQL).bind(id).fetch_all(pool).await? {
                out.push((
                    row.try_get("principal")?,
                    row.try_get("verdict")?,
                    row.try_get("comment")?,
                    row.try_get("reviewed_at_ms")?,
                ));
            }
            out
        });
        rows.into_iter()
            .map(|(principal, verdict, comment, at)| {
                let verdict = match verdict.as_str() {
                    "APPROVE" => ReviewVerdict::Approve,
                    "DENY" => ReviewVerdict::Deny,
                    other => {
                        return Err(StoreError::Corrupt {
                            id: id.to_owned(),
                            column: "verdict",
                            value: other.to_owned(),
                        });
                    }
                };
                Ok(Review {
                    principal,
                    verdict,
                    comment,
                    at: from_ms(at),
                })
            })
            .collect()
    }

    /// The approval's semantic fields, in order.
    async fn fields(&self, id: &str) -> Result<Vec<RequestField>, StoreError> {
        const SQL: &str = "SELECT name, text_value, flag_value FROM approval_fields \
             WHERE approval_id = $1 ORDER BY ordinal";
        let rows: Vec<(String, Option<String>, Option<bool>)> = on_pool!(self, |pool| {
            let mut out = Vec::new();
            for row in sqlx::query(SQL).bind(id).fetch_all(pool).await? {
                out.push((
                    row.try_get("name")?,
                    row.try_get("text_value")?,
                    row.try_get("flag_value")?,
                ));
            }
            out
        });
        rows.into_iter()
            .map(|(name, text, flag)| {
                let value = match (text, flag) {
                    (Some(text), None) => FieldValue::Text(text),
                    (None, Some(flag)) => FieldValue::Flag(flag),
                    (text, flag) => {
                        return Err(StoreError::Corrupt {
                            id: id.to_owned(),
                            column: "approval_fields",
                            value: format!("{name}: text {text:?}, flag {flag:?}"),
                        });
                    }
                };
                Ok(RequestField { name, value })
            })
            .collect()
    }

    async fn with_reviews(&self, rows: Vec<RowData>) -> Result<Vec<ApprovalRecord>, StoreError> {
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let fields = self.fields(&row.id).await?;
            let reviews = self.reviews(&row.id).await?;
            out.push(row.into_record(fields, reviews, &self.methods)?);
        }
        Ok(out)
    }

    /// The approval with this id.
    pub(crate) async fn get(&self, id: &str) -> Result<Option<ApprovalRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM approvals WHERE id = $1");
        let row: Option<RowData> = on_pool!(self, |pool| {
            match sqlx::query(&sql).bind(id).fetch_optional(pool).await? {
                Some(row) => Some(decode!(&row)),
                None => None,
            }
        });
        Ok(self
            .with_reviews(row.into_iter().collect())
            .await?
            .into_iter()
            .next())
    }

    /// The live approval of this request by `requester`, unless it has expired.
    pub(crate) async fn live(
        &self,
        requester: &str,
        method: &str,
        digest: &str,
        now: SystemTime,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM approvals WHERE live AND requester = $1 AND method = $2 \
             AND digest = $3 AND expires_at_ms > $4"
        );
        let row: Option<RowData> = on_pool!(self, |pool| {
            match sqlx::query(&sql)
                .bind(requester)
                .bind(method)
                .bind(digest)
                .bind(to_ms(now))
                .fetch_optional(pool)
                .await?
            {
                Some(row) => Some(decode!(&row)),
                None => None,
            }
        });
        Ok(self
            .with_reviews(row.into_iter().collect())
            .await?
            .into_iter()
            .next())
    }

    /// Stores `new` as PENDING unless the request already has a live approval, or storing it
    /// would pass `caps` (one conditional statement: on SQLite, with its one writer, the caps
    /// are exact; on PostgreSQL concurrent inserts of other requests can each see the count
    /// below the cap, so it can be passed by the inserts in flight at once). Call
    /// [`Store::expire_due`] first, so that an expired approval no longer holds the request's
    /// place.
    pub(crate) async fn insert_pending(
        &self,
        new: &NewApproval<'_>,
        caps: PendingCaps,
    ) -> Result<Inserted, StoreError> {
        const PENDING: &str =
            "SELECT COUNT(*) FROM approvals WHERE state = 'PENDING' AND expires_at_ms > $6";
        let sql = format!(
            "INSERT INTO approvals (id, requester, method, digest, \
             required_approvals, state, live, version, created_at_ms, expires_at_ms, \
             created_by_request_id) \
             SELECT $1, $2, $3, $4, $5, 'PENDING', TRUE, 0, $6, $7, $8 \
             WHERE ({PENDING} AND requester = $2) < $9 AND ({PENDING}) < $10 \
             ON CONFLICT DO NOTHING"
        );
        const FIELD: &str = "INSERT INTO approval_fields \
             (approval_id, ordinal, name, text_value, flag_value) VALUES ($1, $2, $3, $4, $5)";
        // One transaction, so no approval is ever seen without its fields.
        let inserted = on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(&sql)
                .bind(&new.id)
                .bind(new.requester)
                .bind(new.request.method)
                .bind(new.digest)
                .bind(i64::from(new.required_approvals))
                .bind(to_ms(new.created_at))
                .bind(to_ms(new.expires_at))
                .bind(new.request_id)
                .bind(i64::from(caps.per_requester))
                .bind(i64::from(caps.total))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if inserted == 1 {
                for (ordinal, field) in new.request.fields.iter().enumerate() {
                    let (text, flag) = match &field.value {
                        FieldValue::Text(text) => (Some(text.as_str()), None),
                        FieldValue::Flag(flag) => (None, Some(*flag)),
                    };
                    sqlx::query(FIELD)
                        .bind(&new.id)
                        .bind(i64::try_from(ordinal).unwrap_or(i64::MAX))
                        .bind(&field.name)
                        .bind(text)
                        .bind(flag)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            inserted
        });
        let live = self
            .live(
                new.requester,
                new.request.method,
                new.digest,
                new.created_at,
            )
            .await?;
        if let Some(record) = live {
            let created = inserted == 1 && record.id == new.id;
            return Ok(Inserted::Live(Box::new(record), created));
        }
        // Nothing live and nothing stored: a cap, or an expired approval in the way.
        let now = to_ms(new.created_at);
        let (mine, all): (i64, i64) = on_pool!(self, |pool| {
            let row = sqlx::query(
                "SELECT (SELECT COUNT(*) FROM approvals WHERE state = 'PENDING' \
                 AND expires_at_ms > $1 AND requester = $2) AS mine, \
                 (SELECT COUNT(*) FROM approvals WHERE state = 'PENDING' AND expires_at_ms > $1) AS all_pending",
            )
            .bind(now)
            .bind(new.requester)
            .fetch_one(pool)
            .await?;
            (row.try_get("mine")?, row.try_get("all_pending")?)
        });
        Ok(if mine >= i64::from(caps.per_requester) {
            Inserted::OverCap(PendingLimit::PerRequester)
        } else if all >= i64::from(caps.total) {
            Inserted::OverCap(PendingLimit::Total)
        } else {
            Inserted::HeldByExpired
        })
    }

    /// Marks the approval CONSUMED by `request_id` if it is still PENDING or APPROVED and not
    /// expired: the compare-and-set that lets exactly one call spend it. True when this call did.
    pub(crate) async fn consume(
        &self,
        id: &str,
        request_id: &str,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE approvals SET state = 'CONSUMED', live = FALSE, \
             consumed_at_ms = $1, consumed_by_request_id = $2 \
             WHERE id = $3 AND state IN ('PENDING', 'APPROVED') AND expires_at_ms > $1";
        let changed = on_pool!(self, |pool| {
            sqlx::query(SQL)
                .bind(to_ms(now))
                .bind(request_id)
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(changed == 1)
    }

    /// Records `reviewer`'s verdict on a live, unexpired approval in one transaction: an
    /// approval that reaches its required count becomes APPROVED, a denial makes it DENIED.
    pub(crate) async fn review(
        &self,
        id: &str,
        reviewer: &str,
        verdict: ReviewVerdict,
        comment: &str,
        now: SystemTime,
    ) -> Result<ReviewOutcome, StoreError> {
        // Holds the row (PostgreSQL: a row lock; SQLite: the write lock) until commit, and
        // checks that it is open for review.
        const HOLD: &str = "UPDATE approvals SET version = version + 1 \
             WHERE id = $1 AND state IN ('PENDING', 'APPROVED') AND expires_at_ms > $2";
        const ADD: &str = "INSERT INTO approval_reviews \
             (approval_id, principal, verdict, comment, reviewed_at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";
        const APPROVE: &str = "UPDATE approvals SET state = 'APPROVED' WHERE id = $1 \
             AND state = 'PENDING' AND required_approvals <= \
             (SELECT COUNT(*) FROM approval_reviews WHERE approval_id = $1 AND verdict = 'APPROVE')";
        const DENY: &str = "UPDATE approvals SET state = 'DENIED' WHERE id = $1";
        let verdict_text = match verdict {
            ReviewVerdict::Approve => "APPROVE",
            ReviewVerdict::Deny => "DENY",
        };
        // Some(true): recorded; Some(false): already reviewed; None: not open for review.
        let recorded: Option<bool> = on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let held = sqlx::query(HOLD)
                .bind(id)
                .bind(to_ms(now))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if held != 1 {
                tx.rollback().await?;
                None
            } else {
                let added = sqlx::query(ADD)
                    .bind(id)
                    .bind(reviewer)
                    .bind(verdict_text)
                    .bind(comment)
                    .bind(to_ms(now))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if added != 1 {
                    tx.rollback().await?;
                    Some(false)
                } else {
                    let next = match verdict {
                        ReviewVerdict::Approve => APPROVE,
                        ReviewVerdict::Deny => DENY,
                    };
                    sqlx::query(next).bind(id).execute(&mut *tx).await?;
                    tx.commit().await?;
                    Some(true)
                }
            }
        });
        match recorded {
            Some(false) => Ok(ReviewOutcome::AlreadyReviewed),
            Some(true) | None => match self.get(id).await? {
                None => Ok(ReviewOutcome::NotFound),
                Some(record) if recorded == Some(true) => {
                    Ok(ReviewOutcome::Recorded(Box::new(record)))
                }
                Some(record) => Ok(ReviewOutcome::Closed(record.state_at(now))),
            },
        }
    }

    /// Expires every PENDING or APPROVED approval whose time is up and returns them (each
    /// exactly once across replicas: the update says which rows it changed); a DENIED approval
    /// whose time is up stops holding its request's place.
    pub(crate) async fn expire_due(
        &self,
        now: SystemTime,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        let expire = format!(
            "UPDATE approvals SET state = 'EXPIRED', live = FALSE \
             WHERE state IN ('PENDING', 'APPROVED') AND expires_at_ms <= $1 RETURNING {COLUMNS}"
        );
        const RELEASE: &str = "UPDATE approvals SET live = FALSE WHERE live AND state = 'DENIED' AND expires_at_ms <= $1";
        let rows: Vec<RowData> = on_pool!(self, |pool| {
            let mut rows = Vec::new();
            for row in sqlx::query(&expire)
                .bind(to_ms(now))
                .fetch_all(pool)
                .await?
            {
                rows.push(decode!(&row));
            }
            sqlx::query(RELEASE).bind(to_ms(now)).execute(pool).await?;
            rows
        });
        self.with_reviews(rows).await
    }

    /// Up to `limit` approvals after `after`, newest first, in `state` as of `now` (every state
    /// when `None`).
    pub(crate) async fn list(
        &self,
        state: Option<ApprovalState>,
        after: Option<&Cursor>,
        limit: u32,
        now: SystemTime,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        // The state as of now: a PENDING or APPROVED approval whose time is up is EXPIRED
        // whether or not the sweeper has marked it yet.
        let filter = match state {
            None => "TRUE",
            Some(ApprovalState::Pending) => "state = 'PENDING' AND expires_at_ms > $4",
            Some(ApprovalState::Approved) => "state = 'APPROVED' AND expires_at_ms > $4",
            Some(ApprovalState::Denied) => "state = 'DENIED'",
            Some(ApprovalState::Consumed) => "state = 'CONSUMED'",
            Some(ApprovalState::Expired) => {
                "(state = 'EXPIRED' OR (state IN ('PENDING', 'APPROVED') AND expires_at_ms <= $4))"
            }
        };
        // `$4 = $4` keeps the parameter used whatever the filter.
        let sql = format!(
            "SELECT {COLUMNS} FROM approvals WHERE {filter} AND $4 = $4 \
             AND (created_at_ms < $1 OR (created_at_ms = $1 AND id < $2)) \
             ORDER BY created_at_ms DESC, id DESC LIMIT $3"
        );
        let (created, id) = match after {
            Some(cursor) => (cursor.created_at_ms, cursor.id.as_str()),
            // After everything: ids are never empty, so `id < ''` is never true.
            None => (i64::MAX, ""),
        };
        let rows: Vec<RowData> = on_pool!(self, |pool| {
            let mut rows = Vec::new();
            for row in sqlx::query(&sql)
                .bind(created)
                .bind(id)
                .bind(i64::from(limit))
                .bind(to_ms(now))
                .fetch_all(pool)
                .await?
            {
                rows.push(decode!(&row));
            }
            rows
        });
        self.with_reviews(rows).await
    }

    /// How many approvals are PENDING and APPROVED (and not expired) now.
    pub(crate) async fn count_live(&self, now: SystemTime) -> Result<(i64, i64), StoreError> {
        const SQL: &str = "SELECT state, COUNT(*) AS n FROM approvals \
             WHERE state IN ('PENDING', 'APPROVED') AND expires_at_ms > $1 GROUP BY state";
        let counts: Vec<(String, i64)> = on_pool!(self, |pool| {
            let mut out = Vec::new();
            for row in sqlx::query(SQL).bind(to_ms(now)).fetch_all(pool).await? {
                out.push((row.try_get("state")?, row.try_get("n")?));
            }
            out
        });
        let get = |state: &str| {
            counts
                .iter()
                .find(|(s, _)| s == state)
                .map_or(0, |(_, n)| *n)
        };
        Ok((get("PENDING"), get("APPROVED")))
    }

    /// Whether the database answers `SELECT 1` through the pool within `within`; `Err` says
    /// why not, in the driver's words.
    pub(crate) async fn ping(&self, within: Duration) -> Result<(), String> {
        let through_pool = tokio::time::timeout(within, async {
            on_pool!(self, |pool| sqlx::query("SELECT 1")
                .execute(pool)
                .await
                .map(drop))
        })
        .await;
        match through_pool {
            Ok(Ok(())) => Ok(()),
            Ok(Err(sqlx::Error::PoolTimedOut)) | Err(_) => {
                // The pool retries a refused connection until its acquire timeout and then says
                // only that it timed out: one connection of the probe's own says why.
                let direct = tokio::time::timeout(within, async {
                    on_pool!(self, |pool| pool
                        .connect_options()
                        .connect()
                        .await
                        .map(drop))
                })
                .await;
                Err(match direct {
                    Ok(Err(err)) => err.to_string(),
                    Ok(Ok(())) => format!(
                        "no pooled connection free within {} s, though it accepts new ones",
                        within.as_secs()
                    ),
                    Err(_) => format!("no answer within {} s", within.as_secs()),
                })
            }
            Ok(Err(err)) => Err(err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales_share";
    const METHODS: [&str; 2] = ["AssociateConsumer", "AuthorizeDataShare"];
    const CAPS: PendingCaps = PendingCaps {
        per_requester: 20,
        total: 10_000,
    };

    /// The store in the SQLite file `path`, migrated, for [`METHODS`].
    async fn sqlite_store(path: &std::path::Path) -> Store {
        Store::open(
            &StoreLocation::Sqlite(path.to_owned()),
            2,
            Arc::from(&METHODS[..]),
        )
        .await
        .unwrap()
    }

    async fn sqlite_pool(path: &std::path::Path) -> SqlitePool {
        SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true),
            )
            .await
            .unwrap()
    }

    fn pending<'a>(request: &'a SemanticRequest, digest: &'a str) -> NewApproval<'a> {
        let now = SystemTime::now();
        NewApproval {
            id: uuid::Uuid::new_v4().to_string(),
            requester: "spiffe://example.org/ns/analytics/sa/reporting",
            request,
            digest,
            required_approvals: 1,
            created_at: now,
            expires_at: now + Duration::from_secs(600),
            request_id: "req-1",
        }
    }

    /// A database made by the first release (migration 1 alone) with one approval in its
    /// association columns: after the upgrade it reads back with the same fields and digest, so
    /// the request it approves still spends it.
    #[tokio::test]
    async fn an_approval_stored_before_the_fields_were_generic_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("approvals.db");
        let pool = sqlite_pool(&path).await;
        Migrator::new(Embedded(1))
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        // The digest the first release computed for these fields (call::tests has the same).
        let digest = "916fe299b913505f3cb074f6566b45b12181071af71f74c2f183171ef1430312";
        let now = to_ms(SystemTime::now());
        sqlx::query(
            "INSERT INTO approvals (id, requester, method, digest, data_share_arn, target_kind, \
             target_value, consumer_account, allow_writes, required_approvals, state, live, \
             version, created_at_ms, expires_at_ms, created_by_request_id) VALUES ('old-1', \
             'spiffe://example.org/ns/analytics/sa/reporting', 'AssociateConsumer', $1, $2, \
             'region', 'us-west-2', '444455556666', TRUE, 1, 'APPROVED', TRUE, 1, $3, $4, 'req-0')",
        )
        .bind(digest)
        .bind(ARN)
        .bind(now)
        .bind(now + 600_000)
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let store = sqlite_store(&path).await;
        let record = store
            .get("old-1")
            .await
            .unwrap()
            .expect("the approval is kept");
        let expected = SemanticRequest {
            method: "AssociateConsumer",
            fields: vec![
                RequestField::text("data_share_arn", ARN),
                RequestField::text("consumer_kind", "region"),
                RequestField::text("consumer", "us-west-2"),
                RequestField::text("consumer_account", "444455556666"),
                RequestField::flag("allow_writes", true),
            ],
        };
        assert_eq!(record.request, expected);
        assert_eq!(record.digest, digest);
        assert_eq!(
            expected.digest(),
            digest,
            "the request it approves still matches"
        );
        let live = store
            .live(
                "spiffe://example.org/ns/analytics/sa/reporting",
                "AssociateConsumer",
                digest,
                SystemTime::now(),
            )
            .await
            .unwrap();
        assert_eq!(live.map(|r| r.id).as_deref(), Some("old-1"));
        assert!(
            store
                .consume("old-1", "req-2", SystemTime::now())
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn an_approval_of_any_shape_is_stored_with_its_fields_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir.path().join("approvals.db")).await;
        let request = SemanticRequest {
            method: "AuthorizeDataShare",
            fields: vec![
                RequestField::text("data_share_arn", ARN),
                RequestField::text("consumer_identifier", "444455556666"),
                RequestField::flag("allow_writes", true),
            ],
        };
        let digest = request.digest();
        let new = pending(&request, &digest);
        let Inserted::Live(record, created) = store.insert_pending(&new, CAPS).await.unwrap()
        else {
            panic!("stored");
        };
        assert!(created);
        assert_eq!(record.request, request);
        assert_eq!(store.get(&new.id).await.unwrap().unwrap().request, request);
        // The same request again finds the live one and adds no second set of fields.
        let again = pending(&request, &digest);
        let Inserted::Live(live, created) = store.insert_pending(&again, CAPS).await.unwrap()
        else {
            panic!("found live");
        };
        assert!(!created);
        assert_eq!(live.id, new.id);
        assert!(store.get(&again.id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_row_whose_fields_no_longer_hash_to_its_digest_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir.path().join("approvals.db")).await;
        let request = SemanticRequest {
            method: "AssociateConsumer",
            fields: vec![
                RequestField::text("data_share_arn", ARN),
                RequestField::flag("allow_writes", false),
            ],
        };
        let digest = request.digest();
        let new = pending(&request, &digest);
        store.insert_pending(&new, CAPS).await.unwrap();
        // Someone with the database's password widens the approved request.
        on_pool!(store, |pool| {
            sqlx::query("UPDATE approval_fields SET flag_value = TRUE WHERE name = 'allow_writes'")
                .execute(pool)
                .await
                .unwrap()
                .rows_affected()
        });
        match store.get(&new.id).await {
            Err(StoreError::Corrupt { column, .. }) => assert_eq!(column, "digest"),
            other => panic!("expected a corrupt row, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn pending_approvals_are_capped_per_requester_and_in_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir.path().join("approvals.db")).await;
        let caps = PendingCaps {
            per_requester: 2,
            total: 3,
        };
        let request = |n: usize| SemanticRequest {
            method: "AssociateConsumer",
            fields: vec![RequestField::text("data_share_arn", format!("{ARN}{n}"))],
        };
        let insert = |requester: &'static str, n: usize| {
            let store = store.clone();
            async move {
                let request = request(n);
                let digest = request.digest();
                let new = NewApproval {
                    requester,
                    ..pending(&request, &digest)
                };
                match store.insert_pending(&new, caps).await.unwrap() {
                    Inserted::Live(record, created) => Ok((record.id, created)),
                    Inserted::OverCap(limit) => Err(Some(limit)),
                    Inserted::HeldByExpired => Err(None),
                }
            }
        };
        let (first, _) = insert("a", 1).await.unwrap();
        insert("a", 2).await.unwrap();
        assert_eq!(
            insert("a", 3).await,
            Err(Some(PendingLimit::PerRequester)),
            "a third request of one requester"
        );
        // The request that already has its pending approval still finds it.
        assert_eq!(insert("a", 1).await, Ok((first, false)));
        insert("b", 4).await.unwrap();
        assert_eq!(
            insert("c", 5).await,
            Err(Some(PendingLimit::Total)),
            "a fourth in all"
        );
        let rows = on_pool!(store, |pool| {
            sqlx::query("SELECT COUNT(*) AS n FROM approvals")
                .fetch_one(pool)
                .await
                .unwrap()
                .try_get::<i64, _>("n")
                .unwrap()
        });
        assert_eq!(rows, 3, "nothing stored beyond the caps");
    }

    #[tokio::test]
    async fn the_sqlite_store_and_its_wal_are_private_to_the_gateway() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("approvals.db");
        // As an earlier release left it.
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = sqlite_store(&path).await;
        let request = SemanticRequest {
            method: "AssociateConsumer",
            fields: vec![RequestField::text("data_share_arn", ARN)],
        };
        let digest = request.digest();
        store
            .insert_pending(&pending(&request, &digest), CAPS)
            .await
            .unwrap();
        let mode = |suffix: &str| {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            std::fs::metadata(std::path::PathBuf::from(p))
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or_else(|err| panic!("approvals.db{suffix}: {err}"))
        };
        assert_eq!(mode(""), 0o600);
        assert_eq!(
            mode("-wal"),
            0o600,
            "SQLite gives the WAL the database's mode"
        );
    }
}
