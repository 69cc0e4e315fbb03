//! Operator commands: history, maintenance, drain, switchover, failback.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use reqwest::Method;

use crate::api::status::NodeStatus;
use crate::client::{Client, REQUEST_TIMEOUT};

/// How long `--wait` waits for a switchover or failback to finish.
pub const OPERATION_WAIT: Duration = Duration::from_secs(120);

pub enum Op {
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

/// Parses RFC 3339 (`2026-11-22T03:00:00Z`, offsets allowed) into Unix milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Result<u64, String> {
    let bad = || format!("cannot read {s:?} as RFC 3339 (e.g. 2026-11-22T03:00:00Z)");
    let (date, rest) = s.split_once(['T', 't', ' ']).ok_or_else(bad)?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if d.len() != 3 {
        return Err(bad());
    }
    let (time, offset_secs) = if let Some(t) = rest.strip_suffix(['Z', 'z']) {
        (t, 0i64)
    } else if let Some(pos) = rest.rfind(['+', '-']) {
        let (t, off) = rest.split_at(pos);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (h, m) = off[1..].split_once(':').ok_or_else(bad)?;
        let h: i64 = h.parse().map_err(|_| bad())?;
        let m: i64 = m.parse().map_err(|_| bad())?;
        (t, sign * (h * 3600 + m * 60))
    } else {
        return Err(format!(
            "{s:?} has no time zone; add Z or an offset like +01:00"
        ));
    };
    let tp: Vec<&str> = time.split(':').collect();
    if tp.len() != 3 {
        return Err(bad());
    }
    let h: i64 = tp[0].parse().map_err(|_| bad())?;
    let mi: i64 = tp[1].parse().map_err(|_| bad())?;
    let sec: f64 = tp[2].parse().map_err(|_| bad())?;
    // Days from civil (Howard Hinnant's algorithm), valid for the proleptic Gregorian calendar.
    let (y, m, dd) = (d[0], d[1], d[2]);
    if !(1..=12).contains(&m) || !(1..=31).contains(&dd) || h > 23 || mi > 59 || sec >= 61.0 {
        return Err(bad());
    }
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = if y2 >= 0 { y2 } else { y2 - 399 } / 400;
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + h * 3600 + mi * 60 - offset_secs;
    let ms = secs as f64 * 1000.0 + sec * 1000.0;
    if ms < 0.0 {
        return Err(bad());
    }
    Ok(ms as u64)
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

/// Waits until no operation is in progress; prints phase changes as they happen.
async fn wait_operation(client: &Client, json: bool) -> ExitCode {
    let deadline = Instant::now() + OPERATION_WAIT;
    let mut last_phase = String::new();
    // Give the leader a moment to start the operation before declaring it done.
    tokio::time::sleep(Duration::from_millis(200)).await;
    loop {
        match status_of(client).await {
            Ok(st) => match &st.operation {
                Some(op) => {
                    let phase = op.get("phase").map(|p| p.to_string()).unwrap_or_default();
                    if phase != last_phase && !json {
                        println!("  phase {phase}");
                        last_phase = phase;
                    }
                    if op.get("phase").and_then(|p| p.as_str()) == Some("awaiting_commit") {
                        println!("awaiting commit: verify the service on node {}, then `quorate failback commit` or `quorate failback undo`", st.primary.map(|p| p.to_string()).unwrap_or_default());
                        return ExitCode::SUCCESS;
                    }
                }
                None => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"primary": st.primary, "epoch": st.epoch})
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
                "the operation did not finish within {OPERATION_WAIT:?}; see `quorate status`"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `token`: the admin token (from `--token-file`), sent on every request.
pub async fn run(api: &str, token: Option<String>, op: Op) -> ExitCode {
    let client = Client::new(api, REQUEST_TIMEOUT + Duration::from_secs(10)).with_token(token);
    match op {
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
            let at_ms = match at.as_deref().map(parse_rfc3339_ms) {
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
            wait,
            json,
        } => {
            let code = post(
                &client,
                "/v1/failback",
                serde_json::json!({"no_commit": no_commit}),
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
mod tests {
    use super::*;

    #[test]
    fn rfc3339_roundtrips_through_the_formatter() {
        let ms = parse_rfc3339_ms("2026-11-22T03:04:05.250Z").unwrap();
        assert_eq!(format_unix_ms(ms), "2026-11-22 03:04:05.250");
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_rfc3339_ms("2026-11-22T04:04:05+01:00").unwrap(),
            parse_rfc3339_ms("2026-11-22T03:04:05Z").unwrap()
        );
        assert!(parse_rfc3339_ms("2026-11-22T03:04:05").is_err());
        assert!(parse_rfc3339_ms("tomorrow").is_err());
    }
}
