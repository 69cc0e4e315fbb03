//! Operator commands: history, maintenance, drain, switchover, failback.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use reqwest::Method;

use crate::api::wire::NodeStatus;
use crate::cli::client::{ApiTarget, Client, REQUEST_TIMEOUT};
use crate::cli::table::human_bytes;

/// How long `--wait` waits for a switchover or failback to finish.
pub const OPERATION_WAIT: Duration = Duration::from_secs(120);

pub enum Op {
    Actions {
        json: bool,
        limit: usize,
    },
    History {
        json: bool,
        limit: usize,
    },
    Maintenance {
        on: bool,
        reason: String,
        json: bool,
    },
    Drain {
        node: u64,
        drained: bool,
        json: bool,
    },
    Switchover {
        to: Option<u64>,
        at: Option<String>,
        cancel: bool,
        wait: bool,
        json: bool,
    },
    Failback {
        no_commit: bool,
        to: Option<u64>,
        wait: bool,
        json: bool,
    },
    FailbackCommit {
        json: bool,
    },
    FailbackUndo {
        json: bool,
    },
    FailbackStatus {
        json: bool,
    },
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(1)
}

fn error_text(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string())
}

/// Longest `--at` text read; anything longer is not a time.
const MAX_TIME_TEXT_LEN: usize = 64;

/// Why a `--at` time was refused; each message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("cannot read {text:?} as an RFC 3339 time: {why}; write e.g. 2026-11-22T03:00:00Z")]
    Malformed { text: String, why: &'static str },
    #[error("{text:?} has no time zone; add Z or an offset like +01:00")]
    NoZone { text: String },
    #[error("{text:?} is before 1970-01-01T00:00:00Z; give a future time")]
    BeforeEpoch { text: String },
    #[error(
        "{text:?} is in the past (now is {now} UTC); give a future time, or leave out --at to \
         switch over now"
    )]
    InPast { text: String, now: String },
}

/// Reads `n` ASCII digits at `b[at..]` as a number; `None` if any is not a digit.
fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
    let part = b.get(at..at + n)?;
    part.iter().try_fold(0i64, |acc, c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

fn is_leap_year(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap_year(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses RFC 3339 (`2026-11-22T03:00:00Z`, `2026-11-22T04:00:00.5+01:00`) into Unix
/// milliseconds. Strict: fixed-width digits only (no sign, no `NaN`, no exponent), every field
/// in its range (day within its month, seconds 00-59, offset hours 00-23), fraction digits
/// beyond milliseconds are truncated.
pub fn parse_rfc3339_ms(s: &str) -> Result<u64, TimeError> {
    let bad = |why| TimeError::Malformed {
        text: s.to_string(),
        why,
    };
    if s.len() > MAX_TIME_TEXT_LEN {
        return Err(bad("too long"));
    }
    let b = s.as_bytes();
    let field = |at, n, what| digits(b, at, n).ok_or_else(|| bad(what));
    // YYYY-MM-DDTHH:MM:SS
    let y = field(0, 4, "the year must be four digits")?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return Err(bad("the date must be YYYY-MM-DD"));
    }
    let m = field(5, 2, "the month must be two digits")?;
    let d = field(8, 2, "the day must be two digits")?;
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return Err(bad("the date and the time must be separated by T"));
    }
    let h = field(11, 2, "the hour must be two digits")?;
    if b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
        return Err(bad("the time must be HH:MM:SS"));
    }
    let mi = field(14, 2, "the minutes must be two digits")?;
    let sec = field(17, 2, "the seconds must be two digits")?;
    if !(1..=12).contains(&m) {
        return Err(bad("the month must be 01-12"));
    }
    if !(1..=days_in_month(y, m)).contains(&d) {
        return Err(bad("that day does not exist in that month"));
    }
    if h > 23 || mi > 59 || sec > 59 {
        return Err(bad("hours must be 00-23, minutes and seconds 00-59"));
    }
    let mut pos = 19;
    let mut frac_ms = 0i64;
    if b.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        while b.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
        }
        let frac = &b[start..pos];
        if frac.is_empty() || frac.len() > 9 {
            return Err(bad("a fraction of a second must be 1 to 9 digits"));
        }
        frac_ms = (0..3).fold(0i64, |acc, i| {
            acc * 10 + frac.get(i).map_or(0, |c| i64::from(c - b'0'))
        });
    }
    let offset_secs = match b.get(pos) {
        Some(b'Z' | b'z') if pos + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if pos + 6 == b.len() => {
            let oh = field(pos + 1, 2, "the offset hours must be two digits")?;
            if b.get(pos + 3) != Some(&b':') {
                return Err(bad("the offset must be +HH:MM or -HH:MM"));
            }
            let om = field(pos + 4, 2, "the offset minutes must be two digits")?;
            if oh > 23 || om > 59 {
                return Err(bad("offset hours must be 00-23 and minutes 00-59"));
            }
            let sign = if *sign == b'-' { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        None => {
            return Err(TimeError::NoZone {
                text: s.to_string(),
            })
        }
        Some(_) => return Err(bad("unexpected text after the time")),
    };
    // Days from civil (Howard Hinnant's algorithm), valid for the proleptic Gregorian calendar.
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + h * 3600 + mi * 60 + sec - offset_secs;
    let ms = secs * 1000 + frac_ms;
    u64::try_from(ms).map_err(|_| TimeError::BeforeEpoch {
        text: s.to_string(),
    })
}

/// The `--at` time as Unix ms, refused unless it lies after `now_unix_ms` (the server checks
/// again on the leader's clock: a switchover is never started early because of a stale time).
pub fn parse_at(s: &str, now_unix_ms: u64) -> Result<u64, TimeError> {
    let at = parse_rfc3339_ms(s)?;
    if at <= now_unix_ms {
        return Err(TimeError::InPast {
            text: s.to_string(),
            now: format_unix_ms(now_unix_ms),
        });
    }
    Ok(at)
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn post(
    client: &Client,
    path: &str,
    body: serde_json::Value,
    json: bool,
    method: Method,
) -> ExitCode {
    match client
        .send(method, path, Some(body.to_string().into_bytes()), None)
        .await
    {
        Ok((200, b)) => {
            if json {
                println!("{}", String::from_utf8_lossy(&b));
            } else {
                let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
                println!(
                    "ok: {} committed at log index {}",
                    v.get("command")
                        .and_then(|c| c.as_str())
                        .unwrap_or("command"),
                    v.get("log_index").and_then(|c| c.as_u64()).unwrap_or(0)
                );
            }
            ExitCode::SUCCESS
        }
        Ok((409, b)) => fail(format!("refused: {}", error_text(&b))),
        Ok((status, b)) => fail(format!("HTTP {status}: {}", error_text(&b))),
        Err(e) => fail(e),
    }
}

async fn status_of(client: &Client) -> Result<NodeStatus, String> {
    client
        .get_json("/v1/status")
        .await
        .map_err(|e| e.to_string())
}

/// A failback's Syncing phase, as a progress line: how far home is behind in entries and
/// (estimated) bytes, the catch-up rate over the last few seconds and the time left. Pure:
/// fed with observations, it returns the text.
#[derive(Debug, Default)]
pub struct SyncProgress {
    start_lag: Option<u64>,
    /// (when, lag) over the last `RATE_WINDOW`.
    samples: std::collections::VecDeque<(Instant, u64)>,
}

impl SyncProgress {
    /// The window the catch-up rate is measured over.
    pub const RATE_WINDOW: Duration = Duration::from_secs(5);
    const BAR_WIDTH: usize = 30;

    /// `lag`: entries home is behind the leader; `bytes_per_entry`: the leader's average.
    pub fn update(&mut self, now: Instant, lag: u64, bytes_per_entry: u64) -> String {
        self.update_lag(
            now,
            Lag::Entries {
                entries: lag,
                bytes_per_entry,
            },
        )
    }

    /// One progress line for how far behind the failback's target is now.
    pub fn update_lag(&mut self, now: Instant, lag: Lag) -> String {
        let amount = lag.amount();
        let start = *self.start_lag.get_or_insert(amount.max(1));
        self.samples.push_back((now, amount));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > Self::RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        let done = start.saturating_sub(amount).min(start);
        let filled = (done as u128 * Self::BAR_WIDTH as u128 / start as u128) as usize;
        let bar: String = std::iter::repeat_n('#', filled)
            .chain(std::iter::repeat_n('.', Self::BAR_WIDTH - filled))
            .collect();
        let pct = done as f64 * 100.0 / start as f64;
        let rate = match (self.samples.front(), self.samples.back()) {
            (Some((t0, l0)), Some((t1, l1))) if t1 > t0 && l0 > l1 => {
                Some((l0 - l1) as f64 / t1.duration_since(*t0).as_secs_f64())
            }
            _ => None,
        };
        let eta = match rate {
            _ if amount == 0 => "ETA 0 s".to_string(),
            Some(r) if r > 0.0 => format!("ETA {:.0} s", (amount as f64 / r).ceil()),
            _ => "ETA unknown".to_string(),
        };
        match lag {
            Lag::Entries {
                entries,
                bytes_per_entry,
            } => {
                let rate = rate
                    .map(|r| format!("{r:.0} entries/s"))
                    .unwrap_or_else(|| "measuring".into());
                format!(
                    "syncing [{bar}] {pct:3.0}%  {entries} entries (~{}) behind, {rate}, {eta}",
                    human_bytes(entries.saturating_mul(bytes_per_entry))
                )
            }
            Lag::ServiceBytes(bytes) => {
                let rate = rate
                    .map(|r| format!("{}/s", human_bytes(r as u64)))
                    .unwrap_or_else(|| "measuring".into());
                format!(
                    "syncing [{bar}] {pct:3.0}%  service data {} behind, {rate}, {eta}",
                    human_bytes(bytes)
                )
            }
        }
    }
}

/// How far a failback's target is behind: in its service's data (bytes, when its agent
/// reports positions), else in quorate's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lag {
    ServiceBytes(u64),
    Entries { entries: u64, bytes_per_entry: u64 },
}

impl Lag {
    fn amount(self) -> u64 {
        match self {
            Lag::ServiceBytes(b) => b,
            Lag::Entries { entries, .. } => entries,
        }
    }
}

/// How far `node` is behind, as the leader sees it: its service data's bytes behind when
/// reported, else entries behind the leader's last log index (with the average entry size).
/// A progress line: rewritten in place on a terminal, else printed once a second.
fn progress_line(tty: bool, line: &str, last_line: &mut Instant) {
    use std::io::Write;
    if tty {
        print!("\r  {line}   ");
        let _ = std::io::stdout().flush();
    } else if last_line.elapsed() >= Duration::from_secs(1) {
        println!("  {line}");
        *last_line = Instant::now();
    }
}

/// The leader's status (this node's own when it leads).
async fn leader_status(client: &Client, st: &NodeStatus) -> Option<NodeStatus> {
    let leader_id = st.leader_id?;
    if leader_id == st.node_id {
        return Some(st.clone());
    }
    let addr = st.peers.iter().find(|p| p.id == leader_id)?.api.clone();
    status_of(&client.at(&addr)).await.ok()
}

async fn lag_on_leader(client: &Client, st: &NodeStatus, node: u64) -> Option<Lag> {
    let leader = leader_status(client, st).await?;
    let peer = leader.peers.iter().find(|p| p.id == node)?;
    if let Some(bytes) = peer.service.as_ref().and_then(|s| s.lag_bytes) {
        return Some(Lag::ServiceBytes(bytes));
    }
    let matched = peer.matched_index?;
    let entries_in_log = leader
        .last_log_index
        .saturating_sub(leader.purged_index.unwrap_or(0))
        .max(1);
    Some(Lag::Entries {
        entries: leader.last_log_index.saturating_sub(matched),
        bytes_per_entry: leader.log_bytes / entries_in_log,
    })
}

/// How an operation ended, read from `/v1/history`.
#[derive(Debug, PartialEq, Eq)]
struct OperationEnd {
    /// "completed", "committed", "undone", "cancelled" or "aborted".
    outcome: String,
    succeeded: bool,
    /// An abort's reason (an undo's reason is on its step).
    reason: Option<String>,
}

/// The end of operation `id` in a `/v1/history` answer; with no id, of the newest operation
/// the history shows starting (the one just requested: operations never overlap). None when
/// the history does not show it ended.
fn operation_end(history: &serde_json::Value, id: Option<u64>) -> Option<OperationEnd> {
    let entries = history.get("entries")?.as_array()?;
    let id = id.or_else(|| {
        entries.iter().rev().find_map(|e| {
            e.get("event")?
                .get("operation_started")?
                .get("id")?
                .as_u64()
        })
    })?;
    let ended = entries.iter().rev().find_map(|e| {
        let end = e.get("event")?.get("operation_ended")?;
        (end.get("id")?.as_u64()? == id).then_some(end)
    })?;
    let reason_of_step = || {
        entries.iter().rev().find_map(|e| {
            let step = e.get("event")?.get("operation_step")?;
            if step.get("id")?.as_u64()? != id {
                return None;
            }
            step.get("reason")?.as_str().map(str::to_string)
        })
    };
    match ended.get("outcome")? {
        serde_json::Value::String(s) => Some(OperationEnd {
            succeeded: s == "completed" || s == "committed",
            reason: if s == "undone" {
                reason_of_step()
            } else {
                None
            },
            outcome: s.clone(),
        }),
        serde_json::Value::Object(o) => Some(OperationEnd {
            outcome: o.keys().next().cloned().unwrap_or_else(|| "aborted".into()),
            succeeded: false,
            reason: o
                .values()
                .next()
                .and_then(|v| v.get("reason"))
                .and_then(|r| r.as_str())
                .map(str::to_string),
        }),
        _ => None,
    }
}

/// Waits until no operation is in progress; prints phase changes as they happen, and a
/// progress line while a failback syncs. Gives up after `OPERATION_WAIT` without progress.
async fn wait_operation(client: &Client, json: bool) -> ExitCode {
    use std::io::IsTerminal;
    let tty = std::io::stdout().is_terminal();
    let mut deadline = Instant::now() + OPERATION_WAIT;
    let mut last_phase = String::new();
    let mut progress = SyncProgress::default();
    let mut last_line = Instant::now() - Duration::from_secs(10);
    let mut best_lag = u64::MAX;
    let mut seen_id: Option<u64> = None;
    let mut last_reason: Option<String> = None;
    // Give the leader a moment to start the operation before declaring it done.
    tokio::time::sleep(Duration::from_millis(200)).await;
    loop {
        match status_of(client).await {
            Ok(st) => match &st.operation {
                Some(op) => {
                    seen_id = op.get("id").and_then(|i| i.as_u64()).or(seen_id);
                    if let Some(r) = op.get("reason").and_then(|r| r.as_str()) {
                        last_reason = Some(r.to_string());
                    }
                    let phase_str = op.get("phase").and_then(|p| p.as_str()).unwrap_or("");
                    let phase = op.get("phase").map(|p| p.to_string()).unwrap_or_default();
                    if phase != last_phase {
                        deadline = Instant::now() + OPERATION_WAIT;
                        if !json {
                            if tty
                                && (last_phase.contains("syncing")
                                    || last_phase.contains("verifying"))
                            {
                                println!();
                            }
                            println!("  phase {phase}");
                        }
                        last_phase = phase;
                    }
                    if phase_str == "syncing" && !json {
                        let to = op.get("to").and_then(|t| t.as_u64());
                        if let Some(lag) = match to {
                            Some(to) => lag_on_leader(client, &st, to).await,
                            None => None,
                        } {
                            if lag.amount() < best_lag {
                                // Catching up is progress: the wait goes on.
                                best_lag = lag.amount();
                                deadline = Instant::now() + OPERATION_WAIT;
                            }
                            let line = progress.update_lag(Instant::now(), lag);
                            progress_line(tty, &line, &mut last_line);
                        }
                    }
                    if phase_str == "verifying" && !json {
                        // The leader (home) says how far verification got.
                        let note = match leader_status(client, &st).await {
                            Some(l) => l.notes.iter().find(|n| n.contains("verifying")).cloned(),
                            None => None,
                        };
                        let since = op
                            .get("phase_since_unix_ms")
                            .and_then(|t| t.as_u64())
                            .map(|t| now_unix_ms().saturating_sub(t) / 1000)
                            .unwrap_or(0);
                        let line = format!(
                            "verifying ({since} s): {}",
                            note.unwrap_or_else(|| {
                                "monitor checks done; the verify action compares the data".into()
                            })
                        );
                        progress_line(tty, &line, &mut last_line);
                    }
                    if phase_str == "awaiting_commit" {
                        println!("awaiting commit: verify the service on node {}, then `quorate failback commit` or `quorate failback undo`", st.primary.map(|p| p.to_string()).unwrap_or_default());
                        return ExitCode::SUCCESS;
                    }
                }
                None => {
                    // How did it end? An undone, aborted or cancelled operation is not a
                    // success for the operator who asked for it.
                    let ended = match client.get_json::<serde_json::Value>("/v1/history").await {
                        Ok(h) => operation_end(&h, seen_id),
                        Err(_) => None,
                    };
                    if let Some(end) = ended.filter(|e| !e.succeeded) {
                        let why = end.reason.or(last_reason.clone()).unwrap_or_default();
                        if json {
                            println!(
                                "{}",
                                serde_json::json!({"primary": st.primary, "epoch": st.epoch, "outcome": end.outcome, "reason": why})
                            );
                            return ExitCode::from(1);
                        }
                        let why = if why.is_empty() {
                            String::new()
                        } else {
                            format!(": {why}")
                        };
                        return fail(format!(
                            "the operation was {}{why}; primary is node {} (epoch {}). See `quorate history` and fix the cause before trying again",
                            end.outcome,
                            st.primary
                                .map(|p| p.to_string())
                                .unwrap_or_else(|| "none".into()),
                            st.epoch
                        ));
                    }
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"primary": st.primary, "epoch": st.epoch, "outcome": "done"})
                        );
                    } else {
                        println!(
                            "done: primary is node {} (epoch {})",
                            st.primary
                                .map(|p| p.to_string())
                                .unwrap_or_else(|| "none".into()),
                            st.epoch
                        );
                    }
                    return ExitCode::SUCCESS;
                }
            },
            Err(e) => eprintln!("  (status unavailable: {e})"),
        }
        if Instant::now() > deadline {
            return fail(format!(
                "the operation made no progress for {OPERATION_WAIT:?}; it goes on in the cluster: see `quorate failback status` / `quorate status`"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `token`: the admin token (from `--token-file`), sent on every request.
pub async fn run(api: &ApiTarget, token: Option<String>, op: Op) -> ExitCode {
    let client = Client::to(api, REQUEST_TIMEOUT + Duration::from_secs(10)).with_token(token);
    match op {
        Op::Actions { json, limit } => {
            let v: serde_json::Value = match client.get_json("/v1/actions").await {
                Ok(v) => v,
                Err(e) => return fail(e),
            };
            if json {
                println!("{v}");
                return ExitCode::SUCCESS;
            }
            let actions = v
                .get("actions")
                .and_then(|e| e.as_array())
                .cloned()
                .unwrap_or_default();
            let node = v.get("node").and_then(|n| n.as_u64()).unwrap_or(0);
            if actions.is_empty() {
                println!("node {node} ran no agent action since it started");
                return ExitCode::SUCCESS;
            }
            let start = actions.len().saturating_sub(limit);
            println!("node {node}");
            println!("{:<24} {:<8} {:<7} WHAT", "TIME (UTC)", "ACTION", "OUTCOME");
            for a in &actions[start..] {
                let at = a
                    .get("finished_unix_ms")
                    .and_then(|x| x.as_u64())
                    .unwrap_or(0);
                let action = a.get("action").and_then(|x| x.as_str()).unwrap_or("?");
                let ok = a.get("ok").and_then(|x| x.as_bool()).unwrap_or(false);
                let summary = a.get("summary").and_then(|x| x.as_str()).unwrap_or("");
                println!(
                    "{:<24} {action:<8} {:<7} {summary}",
                    format_unix_ms(at),
                    if ok { "ok" } else { "FAILED" }
                );
                // The agent's own account (a rewind's bytes, a restore point, what differed).
                if let Some(out) = a.get("output").and_then(|x| x.as_str()) {
                    if !out.is_empty() && action != "monitor" {
                        println!("{:<24} {}", "", out.replace('\n', " | "));
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Op::History { json, limit } => {
            let v: serde_json::Value = match client.get_json("/v1/history").await {
                Ok(v) => v,
                Err(e) => return fail(e),
            };
            if json {
                println!("{v}");
                return ExitCode::SUCCESS;
            }
            let entries = v
                .get("entries")
                .and_then(|e| e.as_array())
                .cloned()
                .unwrap_or_default();
            let start = entries.len().saturating_sub(limit);
            println!("{:<5} {:<24} {:<6} EVENT", "SEQ", "TIME (UTC)", "TERM");
            for e in &entries[start..] {
                let at = e.get("at_unix_ms").and_then(|x| x.as_u64()).unwrap_or(0);
                let term = e
                    .get("term")
                    .and_then(|x| x.as_u64())
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "-".into());
                let seq = e.get("seq").and_then(|x| x.as_u64()).unwrap_or(0);
                let event = e.get("event").map(describe_event).unwrap_or_default();
                println!("{seq:<5} {:<24} {term:<6} {event}", format_unix_ms(at));
            }
            ExitCode::SUCCESS
        }
        Op::Maintenance { on, reason, json } => {
            post(
                &client,
                "/v1/maintenance",
                serde_json::json!({"on": on, "reason": reason}),
                json,
                Method::POST,
            )
            .await
        }
        Op::Drain {
            node,
            drained,
            json,
        } => {
            let path = format!(
                "/v1/nodes/{node}/{}",
                if drained { "drain" } else { "undrain" }
            );
            post(&client, &path, serde_json::json!({}), json, Method::POST).await
        }
        Op::Switchover {
            to,
            at,
            cancel,
            wait,
            json,
        } => {
            if cancel {
                return post(
                    &client,
                    "/v1/switchover",
                    serde_json::json!({}),
                    json,
                    Method::DELETE,
                )
                .await;
            }
            let at_ms = match at.as_deref().map(|t| parse_at(t, now_unix_ms())) {
                None => None,
                Some(Ok(ms)) => Some(ms),
                Some(Err(e)) => return fail(e),
            };
            let code = post(
                &client,
                "/v1/switchover",
                serde_json::json!({"to": to, "at_unix_ms": at_ms}),
                json,
                Method::POST,
            )
            .await;
            if code == ExitCode::SUCCESS && wait && at_ms.is_none() {
                return wait_operation(&client, json).await;
            }
            code
        }
        Op::Failback {
            no_commit,
            to,
            wait,
            json,
        } => {
            let code = post(
                &client,
                "/v1/failback",
                serde_json::json!({"no_commit": no_commit, "to": to}),
                json,
                Method::POST,
            )
            .await;
            if code == ExitCode::SUCCESS && wait {
                return wait_operation(&client, json).await;
            }
            code
        }
        Op::FailbackCommit { json } => {
            post(
                &client,
                "/v1/failback/commit",
                serde_json::json!({}),
                json,
                Method::POST,
            )
            .await
        }
        Op::FailbackUndo { json } => {
            post(
                &client,
                "/v1/failback/undo",
                serde_json::json!({}),
                json,
                Method::POST,
            )
            .await
        }
        Op::FailbackStatus { json } => {
            let st = match status_of(&client).await {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({"primary": st.primary, "epoch": st.epoch, "failed_over": st.failed_over, "operation": st.operation, "notes": st.notes})
                );
                return ExitCode::SUCCESS;
            }
            println!(
                "primary: {}  epoch: {}",
                st.primary
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "none".into()),
                st.epoch
            );
            match &st.failed_over {
                Some(f) => println!(
                    "failed over: home {} is not primary (current {})",
                    f.get("home").unwrap_or(&serde_json::Value::Null),
                    f.get("current").unwrap_or(&serde_json::Value::Null)
                ),
                None => println!("not failed over: the primary is home (nothing to fail back)"),
            }
            // The service data of home (or of the operation's target) as the leader sees it.
            let target = st
                .operation
                .as_ref()
                .and_then(|o| o.get("to"))
                .or_else(|| st.failed_over.as_ref().and_then(|f| f.get("home")))
                .and_then(|t| t.as_u64());
            if let Some(t) = target {
                match lag_on_leader(&client, &st, t).await {
                    Some(Lag::ServiceBytes(b)) => {
                        println!(
                            "node {t}'s service data: {} behind the primary",
                            human_bytes(b)
                        )
                    }
                    Some(Lag::Entries { entries, .. }) => {
                        println!("node {t}: {entries} log entries behind (its service reports no position)")
                    }
                    None => println!("node {t}: how far behind is not known (ask the leader)"),
                }
            }
            if let Some(op) = &st.operation {
                println!("operation: {op}");
            }
            for n in &st.notes {
                println!("note: {n}");
            }
            ExitCode::SUCCESS
        }
    }
}

fn describe_event(e: &serde_json::Value) -> String {
    let Some((kind, body)) = e.as_object().and_then(|o| o.iter().next()) else {
        return e.to_string();
    };
    let g = |k: &str| {
        body.get(k)
            .map(|v| v.to_string().trim_matches('"').to_string())
            .unwrap_or_else(|| "-".into())
    };
    match kind.as_str() {
        "promoted" => format!(
            "node {} promoted, epoch {} ({}; previous {})",
            g("node"),
            g("epoch"),
            g("reason"),
            g("previous")
        ),
        "demoted" => format!(
            "node {} demoted, epoch {} ({})",
            g("node"),
            g("epoch"),
            g("reason")
        ),
        "restarted" => format!(
            "node {} restarted its service locally, epoch {} (attempt {})",
            g("node"),
            g("epoch"),
            g("attempt")
        ),
        "operation_data" => format!(
            "operation {}: {} on node {} {} in {} ms: {}",
            g("id"),
            g("action"),
            g("node"),
            if body.get("ok").and_then(|o| o.as_bool()) == Some(true) {
                "ok"
            } else {
                "FAILED"
            },
            g("duration_ms"),
            g("detail")
        ),
        _ => format!("{kind} {body}"),
    }
}

/// `YYYY-MM-DD HH:MM:SS.mmm` in UTC.
pub fn format_unix_ms(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86400);
    let sod = secs.rem_euclid(86400);
    // Civil from days (inverse of the algorithm above).
    let z = days + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests;
