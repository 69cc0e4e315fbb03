//! The postgres agent's failback data actions: the protective snapshot, the final sync of a
//! planned promotion, and verify (see the table in the parent module).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::text::{self, TableSum};
use super::{PgError, PostgresAgent, ARRIVAL_POLL, FINAL_SYNC_WAIT, VERIFY_LOCK_TIMEOUT};
use crate::resource::hooks::{HookContext, HookKind};
use crate::types::{HookReason, NodeId};

/// Most user tables verify compares when `[postgres] verify_tables` is empty.
pub const MAX_VERIFIED_TABLES: usize = 1024;

fn sql(target: String) -> impl Fn(tokio_postgres::Error) -> PgError {
    move |e| PgError::Sql {
        target: target.clone(),
        message: e.to_string(),
    }
}

impl PostgresAgent {
    /// The protective snapshot on the current primary: a named restore point (recovery can
    /// stop there with `recovery_target_name`), then the operator's own snapshot command
    /// when `[resource] snapshot` is set. Either failing fails the snapshot, and the
    /// failback stops before anything moved.
    pub(super) async fn snapshot(&self, ctx: &HookContext<'_>) -> Result<String, PgError> {
        let client = self.connect_local().await?;
        let in_recovery = Self::in_recovery(&client).await?;
        if in_recovery {
            return Err(PgError::Refused(
                "the protective snapshot runs on the primary, and this PostgreSQL is a standby"
                    .into(),
            ));
        }
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let name = text::restore_point_name(ctx.epoch.get(), secs);
        let rows = Self::query(
            &client,
            "SELECT pg_create_restore_point($1)::text",
            &[&name],
        )
        .await?;
        let lsn: String = rows.first().map(|r| r.get(0)).unwrap_or_default();
        let mut what = format!("restore point {name} at {lsn}");
        if self.exec.is_configured(HookKind::Snapshot) {
            let out = self.exec.run(HookKind::Snapshot, *ctx).await;
            if !out.ok {
                return Err(PgError::Refused(format!(
                    "{what} created, but the [resource] snapshot executable failed: {}",
                    out.describe()
                )));
            }
            what.push_str(&format!("; snapshot executable: {}", out.output.trim()));
        }
        Ok(what)
    }

    /// A planned promotion (switchover, failback, undo: `ctx.previous_primary` demoted
    /// through a committed Demote) waits until this standby replayed everything the demoted
    /// primary had; returns the account (the RPO). The demoted primary restarted as a
    /// standby, so its replay position is where its WAL ends.
    pub(super) async fn final_sync(&self, ctx: &HookContext<'_>) -> Result<String, PgError> {
        if !matches!(ctx.reason, HookReason::Switchover | HookReason::Failback) {
            return Ok(String::new());
        }
        let Some(previous) = ctx.previous_primary.filter(|p| *p != self.s().node) else {
            return Ok(String::new());
        };
        let (host, port) = self.upstream_of(previous)?;
        let started = Instant::now();
        let source = loop {
            match self.connect_to(&host, port).await {
                Ok(c) => break c,
                Err(e) if started.elapsed() >= FINAL_SYNC_WAIT => {
                    tracing::warn!(target: "quorate::agent", "final sync: node {previous}'s PostgreSQL does not answer ({e}); promoting without knowing the RPO");
                    return Ok(format!(
                        "final sync: RPO unknown (node {previous}'s PostgreSQL at {host}:{port} did not answer within {FINAL_SYNC_WAIT:?}); "
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let rows = Self::query(
            &source,
            "SELECT pg_is_in_recovery(), \
             (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() END)::text",
            &[],
        )
        .await?;
        let Some(row) = rows.first() else {
            return Err(PgError::Refused(format!(
                "final sync: node {previous}'s position query returned no row"
            )));
        };
        let source_in_recovery: bool = row.get(0);
        let source_end: Option<String> = row.get(1);
        if !source_in_recovery {
            return Err(PgError::Refused(format!(
                "final sync: node {previous}'s PostgreSQL still runs as a primary; this node is not promoted next to it (its demote did not take effect: see that node's log)"
            )));
        }
        let Some(source_end) = source_end.as_deref().and_then(text::parse_lsn) else {
            return Err(PgError::Refused(format!(
                "final sync: node {previous}'s PostgreSQL reports no replay position"
            )));
        };
        let read_ms = started.elapsed().as_millis();
        let local = self.connect_local().await?;
        loop {
            let mine: Option<String> =
                Self::query(&local, "SELECT pg_last_wal_replay_lsn()::text", &[])
                    .await?
                    .first()
                    .and_then(|r| r.get(0));
            let mine = mine.as_deref().and_then(text::parse_lsn).unwrap_or(0);
            if mine >= source_end {
                return Ok(format!(
                    "final sync: node {previous} ended at {}, this node replayed {} (RPO 0 bytes; {read_ms} ms to read node {previous}'s end, {} ms in all); ",
                    text::format_lsn(source_end),
                    text::format_lsn(mine),
                    started.elapsed().as_millis()
                ));
            }
            if started.elapsed() >= FINAL_SYNC_WAIT {
                return Err(PgError::Refused(format!(
                    "final sync: this node replayed {} but node {previous} ended at {}: {} bytes would be lost; not promoted (is this standby receiving WAL? see {})",
                    text::format_lsn(mine),
                    text::format_lsn(source_end),
                    source_end - mine,
                    self.s().log_file.display()
                )));
            }
            tokio::time::sleep(ARRIVAL_POLL).await;
        }
    }

    /// Verify on home after a failback's cut-over: the tables to compare are held against
    /// writes (SHARE lock, bounded by [`VERIFY_LOCK_TIMEOUT`]) while both servers sum them
    /// at the same position: home in the locking transaction, the previous primary (now its
    /// standby) once it replayed to home's WAL position at the lock. Any difference fails
    /// the verify and names the tables.
    pub(super) async fn verify(&self, ctx: &HookContext<'_>) -> Result<String, PgError> {
        let me = self.s().node;
        let Some(previous) = ctx.previous_primary.filter(|p| *p != me) else {
            return Err(PgError::Refused(
                "verify compares home with the previous primary, and none is named".into(),
            ));
        };
        let (host, port) = self.upstream_of(previous)?;
        let started = Instant::now();
        let home = self.connect_local().await?;
        let other = self.connect_to(&host, port).await.map_err(|e| {
            PgError::Refused(format!(
                "verify cannot reach node {previous}'s PostgreSQL to compare with it: {e}"
            ))
        })?;
        let tables = self.verify_tables(&home).await?;
        if tables.is_empty() {
            let what = format!("no user tables to compare on home node {me} and node {previous}");
            return self.operator_verify(ctx, what).await;
        }
        let limit_ms = self.s().action_timeout.as_millis();
        home.batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {limit_ms}",
            VERIFY_LOCK_TIMEOUT.as_millis()
        ))
        .await
        .map_err(sql("home".into()))?;
        let result = self
            .verify_locked(&home, &other, &tables, previous, started)
            .await;
        // Ends the transaction (and the write hold) whatever happened.
        let _ = home.batch_execute("ROLLBACK").await;
        self.operator_verify(ctx, result?).await
    }

    /// The operator's own check, when `[resource] verify` is set, after the agent's.
    async fn operator_verify(
        &self,
        ctx: &HookContext<'_>,
        mut what: String,
    ) -> Result<String, PgError> {
        if self.exec.is_configured(HookKind::Verify) {
            let out = self.exec.run(HookKind::Verify, *ctx).await;
            if !out.ok {
                return Err(PgError::Refused(format!(
                    "{what}; but the [resource] verify executable failed: {}",
                    out.describe()
                )));
            }
            what.push_str(&format!("; verify executable: {}", out.output.trim()));
        }
        Ok(what)
    }

    async fn verify_locked(
        &self,
        home: &tokio_postgres::Client,
        other: &tokio_postgres::Client,
        tables: &[String],
        previous: NodeId,
        started: Instant,
    ) -> Result<String, PgError> {
        let me = self.s().node;
        home.batch_execute(&format!("LOCK TABLE {} IN SHARE MODE", tables.join(", ")))
            .await
            .map_err(|e| PgError::Refused(format!(
                "verify could not hold the tables against writes within {VERIFY_LOCK_TIMEOUT:?}: {e}"
            )))?;
        let held = Instant::now();
        // The first query takes the transaction's snapshot: every write to the locked tables
        // ended before it, and lies before this position in the WAL.
        let at: String = Self::query(home, "SELECT pg_current_wal_insert_lsn()::text", &[])
            .await?
            .first()
            .map(|r| r.get(0))
            .unwrap_or_default();
        let limit = self.s().action_timeout;
        let other_side = async {
            loop {
                let rows = Self::query(
                    other,
                    "SELECT pg_is_in_recovery(), coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)",
                    &[&at],
                )
                .await?;
                let (standby, there) = rows
                    .first()
                    .map(|r| (r.get::<_, bool>(0), r.get::<_, bool>(1)))
                    .unwrap_or((false, false));
                if !standby {
                    return Err(PgError::Refused(format!(
                        "node {previous}'s PostgreSQL is not a standby of this node: nothing to compare at the same position"
                    )));
                }
                if there {
                    break;
                }
                if started.elapsed() >= limit {
                    return Err(PgError::Refused(format!(
                        "node {previous} did not replay to {at} within {limit:?} ([postgres] action_timeout): is it streaming from this node?"
                    )));
                }
                tokio::time::sleep(ARRIVAL_POLL).await;
            }
            other
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                .await
                .map_err(sql(format!("node {previous}")))?;
            let sums = Self::table_sums(other, tables).await;
            let _ = other.batch_execute("ROLLBACK").await;
            sums
        };
        let (mine, theirs) = tokio::join!(Self::table_sums(home, tables), other_side);
        let (mine, theirs) = (mine?, theirs?);
        let held_ms = held.elapsed().as_millis();
        let home_name = format!("home node {me}");
        let other_name = format!("node {previous}");
        let differences = text::table_differences(&mine, &theirs, &home_name, &other_name);
        if !differences.is_empty() {
            return Err(PgError::Refused(format!(
                "{} of {} tables differ at {at}: {}",
                differences.len(),
                mine.len(),
                differences.join("; ")
            )));
        }
        let rows: i64 = mine.iter().map(|t| t.rows).sum();
        Ok(format!(
            "{} tables ({rows} rows) equal on {home_name} and {other_name} at {at}; writes to them held {held_ms} ms, {} ms in all",
            mine.len(),
            started.elapsed().as_millis()
        ))
    }

    /// The quoted names of the tables verify compares: `[postgres] verify_tables`, or every
    /// permanent user table (at most [`MAX_VERIFIED_TABLES`]).
    async fn verify_tables(&self, client: &tokio_postgres::Client) -> Result<Vec<String>, PgError> {
        if !self.s().verify_tables.is_empty() {
            return Ok(self
                .s()
                .verify_tables
                .iter()
                .map(|t| text::quoted_table(t))
                .collect());
        }
        let rows = Self::query(
            client,
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND c.relpersistence = 'p' \
             AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1",
            &[],
        )
        .await?;
        if rows.len() > MAX_VERIFIED_TABLES {
            return Err(PgError::Refused(format!(
                "the database has {} user tables, more than verify compares ({MAX_VERIFIED_TABLES}); name the ones that matter in [postgres] verify_tables",
                rows.len()
            )));
        }
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    /// Row count and an order-independent checksum (sum of a 64-bit hash of each row's
    /// text) of each table, in the caller's transaction.
    async fn table_sums(
        client: &tokio_postgres::Client,
        tables: &[String],
    ) -> Result<Vec<TableSum>, PgError> {
        let mut out = Vec::with_capacity(tables.len());
        for t in tables {
            let rows = Self::query(
                client,
                &format!(
                    "SELECT count(*)::bigint, coalesce(sum(hashtextextended(x::text, 0)), 0)::text FROM {t} AS x"
                ),
                &[],
            )
            .await?;
            let (rows, checksum) = rows
                .first()
                .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)))
                .unwrap_or_default();
            out.push(TableSum {
                table: t.clone(),
                rows,
                checksum,
            });
        }
        Ok(out)
    }
}
