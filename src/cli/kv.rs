//! `quorate kv ...`: the CLI side of the KV API.

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use reqwest::Method;

use crate::api::kv::{KvItem, KvList};
use crate::cli::client::{ApiTarget, Client, REQUEST_TIMEOUT};
use crate::kv::decode_value_from_json;

pub enum KvOp {
    Get {
        key: String,
        stale: bool,
        json: bool,
    },
    Put {
        key: String,
        value: Option<String>,
        if_revision: Option<u64>,
        if_epoch: Option<u64>,
        json: bool,
    },
    Del {
        key: String,
        if_revision: Option<u64>,
        if_epoch: Option<u64>,
        json: bool,
    },
    List {
        prefix: String,
        limit: usize,
        start_after: Option<String>,
        stale: bool,
        json: bool,
    },
    Watch {
        key: String,
        revision: Option<u64>,
        timeout: String,
        count: u64,
    },
}

/// Percent-encodes a key for the URL path, keeping '/' (keys are hierarchical).
pub fn encode_key(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let q: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| {
            v.as_ref()
                .map(|v| format!("{k}={}", encode_key(v).replace('/', "%2F")))
        })
        .collect();
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(1)
}

fn error_text(status: u16, body: &[u8]) -> String {
    let msg = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    format!("HTTP {status}: {msg}")
}

fn print_value(item: &KvItem) -> Result<(), String> {
    let bytes = decode_value_from_json(&item.value, &item.encoding).map_err(|e| e.to_string())?;
    use std::io::Write;
    let mut out = std::io::stdout();
    out.write_all(&bytes).map_err(|e| e.to_string())?;
    if !bytes.ends_with(b"\n") && item.encoding == "utf-8" {
        let _ = out.write_all(b"\n");
    }
    Ok(())
}

/// The path of a write to `key`, with its compare-and-set and fencing conditions.
fn conditional_write_path(key: &str, if_revision: Option<u64>, if_epoch: Option<u64>) -> String {
    format!(
        "/v1/kv/{}{}",
        encode_key(key),
        query(&[
            ("if_revision", if_revision.map(|v| v.to_string())),
            ("if_epoch", if_epoch.map(|v| v.to_string()))
        ])
    )
}

/// `token`: the admin token (from `--token-file`), sent on every request.
pub async fn run(api: &ApiTarget, token: Option<String>, op: KvOp) -> ExitCode {
    let client = Client::to(api, REQUEST_TIMEOUT).with_token(token.clone());
    match op {
        KvOp::Get { key, stale, json } => {
            let path = format!(
                "/v1/kv/{}{}",
                encode_key(&key),
                query(&[("stale", stale.then(|| "true".into()))])
            );
            match client.send(Method::GET, &path, None, None).await {
                Ok((200, body)) => {
                    let Ok(item) = serde_json::from_slice::<KvItem>(&body) else {
                        return fail("unreadable answer from the node");
                    };
                    if json {
                        println!("{}", String::from_utf8_lossy(&body));
                    } else if let Err(e) = print_value(&item) {
                        return fail(e);
                    }
                    ExitCode::SUCCESS
                }
                Ok((status, body)) => fail(error_text(status, &body)),
                Err(e) => fail(e),
            }
        }
        KvOp::Put {
            key,
            value,
            if_revision,
            if_epoch,
            json,
        } => {
            let value = match value {
                Some(v) => v.into_bytes(),
                None => {
                    let mut buf = Vec::new();
                    if let Err(e) = std::io::stdin().read_to_end(&mut buf) {
                        return fail(format!("cannot read the value from stdin: {e}"));
                    }
                    buf
                }
            };
            let path = conditional_write_path(&key, if_revision, if_epoch);
            write_result(
                client.send(Method::PUT, &path, Some(value), None).await,
                json,
            )
        }
        KvOp::Del {
            key,
            if_revision,
            if_epoch,
            json,
        } => {
            let path = conditional_write_path(&key, if_revision, if_epoch);
            write_result(client.send(Method::DELETE, &path, None, None).await, json)
        }
        KvOp::List {
            prefix,
            limit,
            start_after,
            stale,
            json,
        } => {
            let path = format!(
                "/v1/kv/{}{}",
                encode_key(&prefix),
                query(&[
                    ("prefix", Some("true".into())),
                    ("limit", Some(limit.to_string())),
                    ("start_after", start_after),
                    ("stale", stale.then(|| "true".into())),
                ])
            );
            match client.send(Method::GET, &path, None, None).await {
                Ok((200, body)) => {
                    if json {
                        println!("{}", String::from_utf8_lossy(&body));
                        return ExitCode::SUCCESS;
                    }
                    let Ok(list) = serde_json::from_slice::<KvList>(&body) else {
                        return fail("unreadable answer from the node");
                    };
                    for i in &list.items {
                        let shown = if i.encoding == "utf-8" {
                            i.value.clone()
                        } else {
                            format!("base64:{}", i.value)
                        };
                        println!("{}\t{}\t(rev {})", i.key, shown, i.mod_revision);
                    }
                    if let Some(next) = list.next_start_after {
                        eprintln!("more keys: continue with --start-after {next:?}");
                    }
                    ExitCode::SUCCESS
                }
                Ok((status, body)) => fail(error_text(status, &body)),
                Err(e) => fail(e),
            }
        }
        KvOp::Watch {
            key,
            revision,
            timeout,
            count,
        } => {
            let wait = match crate::config::parse_duration(&timeout) {
                Ok(d) => d,
                Err(e) => return fail(format!("bad --timeout: {e}")),
            };
            let watch_client = Client::to(api, wait + Duration::from_secs(10)).with_token(token);
            let mut rev = revision;
            let mut seen = 0u64;
            loop {
                let from = match rev {
                    Some(r) => r,
                    None => match client
                        .send(
                            Method::GET,
                            &format!("/v1/kv/{}", encode_key(&key)),
                            None,
                            None,
                        )
                        .await
                    {
                        Ok((200, body)) => serde_json::from_slice::<KvItem>(&body)
                            .map(|i| i.mod_revision)
                            .unwrap_or(0),
                        Ok((404, _)) => 0,
                        Ok((status, body)) => return fail(error_text(status, &body)),
                        Err(e) => return fail(e),
                    },
                };
                let path = format!("/v1/kv/{}?wait={from}&timeout={timeout}", encode_key(&key));
                match watch_client.send(Method::GET, &path, None, None).await {
                    Ok((200, body)) => {
                        let Ok(item) = serde_json::from_slice::<KvItem>(&body) else {
                            return fail("unreadable answer from the node");
                        };
                        if item.mod_revision > from {
                            println!("{}", String::from_utf8_lossy(&body));
                            seen += 1;
                            if count != 0 && seen >= count {
                                return ExitCode::SUCCESS;
                            }
                        }
                        rev = Some(item.mod_revision.max(from));
                    }
                    Ok((404, _)) => rev = Some(from),
                    Ok((status, body)) => return fail(error_text(status, &body)),
                    Err(e) => return fail(e),
                }
            }
        }
    }
}

fn write_result(
    res: Result<(u16, Vec<u8>), crate::cli::client::ClientError>,
    json: bool,
) -> ExitCode {
    match res {
        Ok((200, body)) => {
            if json {
                println!("{}", String::from_utf8_lossy(&body));
            } else {
                let rev = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("revision").and_then(|r| r.as_u64()));
                println!(
                    "ok (revision {})",
                    rev.map(|r| r.to_string()).unwrap_or_else(|| "?".into())
                );
            }
            ExitCode::SUCCESS
        }
        Ok((status, body)) => fail(error_text(status, &body)),
        Err(e) => fail(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_encoded_but_keep_slashes() {
        assert_eq!(encode_key("a/b c"), "a/b%20c");
        assert_eq!(encode_key("é"), "%C3%A9");
    }
}
