//! The operation history of a chaos run (`history.jsonl`), and pairing of its events into
//! operations.
//!
//! Every client operation is two lines: an `invoke` when the request is sent and an `ok`,
//! `fail` or `info` when its outcome is known (or given up on). `info` means the outcome is
//! unknown: the operation may or may not have taken effect, at any time after its invocation.
//! The format is documented in `chaos/README.md` so other tools can check a run.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest history a checker accepts; past it the run is rejected rather than checked slowly.
pub const MAX_HISTORY_EVENTS: usize = 2_000_000;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Invoke,
    Ok,
    Fail,
    Info,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Function {
    Read,
    Write,
    Cas,
    Append,
}

impl Function {
    pub fn name(self) -> &'static str {
        match self {
            Function::Read => "read",
            Function::Write => "write",
            Function::Cas => "cas",
            Function::Append => "append",
        }
    }
}

/// One line of `history.jsonl`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Event {
    /// Position in the file, from 0.
    pub index: u64,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The client (a sequential process); the harness's final reads use the id after the
    /// last client.
    pub process: u64,
    /// CLOCK_MONOTONIC in ns, the clock of the hook log and the fault log.
    pub time_ns: u64,
    /// Node the request was sent to (followers forward to the leader).
    pub node: u64,
    pub f: Function,
    pub key: String,
    /// See chaos/README.md: per function and event type.
    #[serde(default)]
    pub value: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Set on the harness's reads after healing (the state every checker compares against).
    #[serde(default, skip_serializing_if = "is_false")]
    pub final_read: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot read history {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("history line {line}: {problem}; the file is not a quorate-chaos history (see chaos/README.md)")]
    Malformed { line: usize, problem: String },
    #[error("history has more than {MAX_HISTORY_EVENTS} events; run a shorter test")]
    TooLong,
}

/// Outcome of a paired operation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Fail,
    Info,
}

/// An invocation together with its completion.
#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    /// Index of the invoke event.
    pub index: u64,
    pub process: u64,
    pub node: u64,
    pub f: Function,
    pub key: String,
    pub invoke_ns: u64,
    /// None for an operation whose completion never made it into the history.
    pub complete_ns: Option<u64>,
    pub outcome: Outcome,
    /// The invoke's value (what was written / appended / compared).
    pub input: Value,
    /// The completion's value (what was read).
    pub output: Value,
    pub error: Option<String>,
    pub final_read: bool,
}

impl Op {
    pub fn latency_ns(&self) -> Option<u64> {
        self.complete_ns.map(|c| c.saturating_sub(self.invoke_ns))
    }

    /// A one-line description for anomaly reports.
    pub fn describe(&self) -> String {
        format!(
            "#{} client {} node {} {} {} {} -> {:?} {} [{}..{}]",
            self.index,
            self.process,
            self.node,
            self.f.name(),
            self.key,
            self.input,
            self.outcome,
            self.output,
            self.invoke_ns,
            self.complete_ns
                .map(|c| c.to_string())
                .unwrap_or("?".into())
        )
    }
}

pub fn parse(text: &str) -> Result<Vec<Event>, HistoryError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if out.len() >= MAX_HISTORY_EVENTS {
            return Err(HistoryError::TooLong);
        }
        let e: Event = serde_json::from_str(line).map_err(|e| HistoryError::Malformed {
            line: i + 1,
            problem: e.to_string(),
        })?;
        out.push(e);
    }
    Ok(out)
}

pub fn read_file(path: &Path) -> Result<Vec<Event>, HistoryError> {
    let text = std::fs::read_to_string(path).map_err(|source| HistoryError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text)
}

/// Pairs every invoke with the next completion of the same process. A process is sequential:
/// a second invoke before the first completed, or a completion with nothing outstanding, is
/// a malformed history. An invoke still open at the end becomes `info`.
pub fn pair(events: &[Event]) -> Result<Vec<Op>, HistoryError> {
    let mut open: BTreeMap<u64, Op> = BTreeMap::new();
    let mut ops = Vec::new();
    for (line, e) in events.iter().enumerate() {
        let bad = |problem: String| HistoryError::Malformed {
            line: line + 1,
            problem,
        };
        match e.kind {
            EventType::Invoke => {
                if open.contains_key(&e.process) {
                    return Err(bad(format!(
                        "process {} invoked a second operation before the first completed",
                        e.process
                    )));
                }
                open.insert(
                    e.process,
                    Op {
                        index: e.index,
                        process: e.process,
                        node: e.node,
                        f: e.f,
                        key: e.key.clone(),
                        invoke_ns: e.time_ns,
                        complete_ns: None,
                        outcome: Outcome::Info,
                        input: e.value.clone(),
                        output: Value::Null,
                        error: None,
                        final_read: e.final_read,
                    },
                );
            }
            k => {
                let Some(mut op) = open.remove(&e.process) else {
                    return Err(bad(format!(
                        "process {} completed an operation it never invoked",
                        e.process
                    )));
                };
                if op.f != e.f || op.key != e.key {
                    return Err(bad(format!(
                        "process {} completed {} {} but had invoked {} {}",
                        e.process,
                        e.f.name(),
                        e.key,
                        op.f.name(),
                        op.key
                    )));
                }
                op.complete_ns = Some(e.time_ns);
                op.outcome = match k {
                    EventType::Ok => Outcome::Ok,
                    EventType::Fail => Outcome::Fail,
                    _ => Outcome::Info,
                };
                op.output = e.value.clone();
                op.error = e.error.clone();
                ops.push(op);
            }
        }
    }
    ops.extend(open.into_values());
    ops.sort_by_key(|o| o.index);
    Ok(ops)
}

/// Appends events to `history.jsonl` as they happen, so a run cut short still leaves a
/// checkable prefix.
pub struct Recorder {
    out: std::io::BufWriter<std::fs::File>,
    next_index: u64,
}

impl Recorder {
    pub fn create(path: &Path) -> std::io::Result<Recorder> {
        let f = std::fs::File::create(path)?;
        Ok(Recorder {
            out: std::io::BufWriter::new(f),
            next_index: 0,
        })
    }

    /// Numbers the event and writes it; returns its index.
    pub fn record(&mut self, mut e: Event) -> std::io::Result<u64> {
        e.index = self.next_index;
        self.next_index += 1;
        let line = serde_json::to_string(&e).map_err(std::io::Error::other)?;
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        Ok(e.index)
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
pub mod testing {
    //! Compact builders for hand-written histories in checker tests.
    use super::*;

    /// `(process, f, key, input, invoke_ns, complete_ns, outcome, output)`
    pub type Row<'a> = (
        u64,
        Function,
        &'a str,
        Value,
        u64,
        Option<u64>,
        Outcome,
        Value,
    );

    pub fn ops(rows: &[Row]) -> Vec<Op> {
        rows.iter()
            .enumerate()
            .map(|(i, r)| Op {
                index: i as u64,
                process: r.0,
                node: 1,
                f: r.1,
                key: r.2.to_string(),
                input: r.3.clone(),
                invoke_ns: r.4,
                complete_ns: r.5,
                outcome: r.6,
                output: r.7.clone(),
                error: None,
                final_read: false,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(kind: EventType, process: u64, t: u64, f: Function, value: Value) -> Event {
        Event {
            index: 0,
            kind,
            process,
            time_ns: t,
            node: 1,
            f,
            key: "k".into(),
            value,
            error: None,
            final_read: false,
        }
    }

    #[test]
    fn pairs_interleaved_processes_and_leaves_open_ones_info() {
        let evs = [
            ev(EventType::Invoke, 0, 1, Function::Write, json!(5)),
            ev(EventType::Invoke, 1, 2, Function::Read, Value::Null),
            ev(EventType::Ok, 1, 3, Function::Read, json!(5)),
            ev(EventType::Ok, 0, 4, Function::Write, json!(5)),
            ev(EventType::Invoke, 1, 5, Function::Write, json!(6)),
        ];
        let text: String = evs
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let mut e = e.clone();
                e.index = i as u64;
                serde_json::to_string(&e).unwrap() + "\n"
            })
            .collect();
        let ops = pair(&parse(&text).unwrap()).unwrap();
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[0].f, Function::Write);
        assert_eq!(ops[0].complete_ns, Some(4));
        assert_eq!(ops[1].output, json!(5));
        assert_eq!(ops[2].outcome, Outcome::Info);
        assert_eq!(ops[2].complete_ns, None);
    }

    #[test]
    fn rejects_overlapping_ops_of_one_process_and_orphan_completions() {
        let two = vec![
            ev(EventType::Invoke, 0, 1, Function::Write, json!(5)),
            ev(EventType::Invoke, 0, 2, Function::Read, Value::Null),
        ];
        assert!(pair(&two).is_err());
        let orphan = vec![ev(EventType::Ok, 0, 1, Function::Write, json!(5))];
        assert!(pair(&orphan).is_err());
        assert!(parse("{not json}\n").is_err());
    }

    #[test]
    fn the_type_field_uses_the_documented_names() {
        let e = ev(EventType::Info, 3, 9, Function::Cas, json!([null, 4]));
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.contains("\"type\":\"info\""), "{text}");
        assert!(text.contains("\"f\":\"cas\""), "{text}");
        assert!(!text.contains("final_read"), "{text}");
    }
}
