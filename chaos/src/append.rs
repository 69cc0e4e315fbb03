//! The append workload's checker: every key holds a list that clients only ever extend by
//! one unique element (read, then compare-and-set on the revision read). Then:
//! - every list ever read is a prefix of the longest list read for that key (one order for
//!   everyone: no divergent histories, no reordering);
//! - no list holds an element twice (no duplicated append);
//! - every element read was appended by someone, and not by an append that definitely
//!   failed (no phantom or resurrected write);
//! - an append acknowledged before a read began is in that read (no lost write: this is the
//!   linearizability of the list, and it covers the harness's final reads after healing);
//! - a read that began after another ended sees at least as much (no going back in time).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use crate::history::{Function, Op, Outcome};

/// Elements shown of a list in an anomaly report.
const LIST_SHOWN: usize = 12;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AppendAnomaly {
    Duplicate {
        key: String,
        element: i64,
        read: String,
    },
    Divergent {
        key: String,
        read: String,
        /// First position where the read differs from the longest list read.
        at: usize,
        longest_read: String,
    },
    Lost {
        key: String,
        element: i64,
        append: String,
        read: String,
    },
    Phantom {
        key: String,
        element: i64,
        read: String,
        /// "never appended" or "append definitely failed".
        why: &'static str,
    },
    NonMonotonic {
        key: String,
        earlier: String,
        later: String,
    },
    Garbage {
        key: String,
        read: String,
    },
    /// Acknowledged appends to a key that the harness could not read back after healing.
    NoFinalRead {
        key: String,
        acknowledged: usize,
    },
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct AppendReport {
    pub keys: usize,
    pub appends_ok: usize,
    pub appends_info: usize,
    pub reads_checked: usize,
    pub anomalies: Vec<AppendAnomaly>,
}

struct Read<'a> {
    op: &'a Op,
    list: Vec<i64>,
}

fn as_list(v: &Value) -> Option<Vec<i64>> {
    match v {
        Value::Null => Some(Vec::new()),
        Value::Array(a) => a.iter().map(|x| x.as_i64()).collect(),
        _ => None,
    }
}

fn shown(list: &[i64]) -> String {
    if list.len() <= LIST_SHOWN {
        format!("{list:?}")
    } else {
        format!(
            "[{} elements, last {:?}]",
            list.len(),
            &list[list.len() - LIST_SHOWN..]
        )
    }
}

pub fn check(ops: &[Op]) -> AppendReport {
    let mut report = AppendReport::default();
    let mut appends: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    let mut reads: BTreeMap<&str, Vec<Read>> = BTreeMap::new();
    let mut keys: std::collections::BTreeSet<&str> = Default::default();
    for op in ops {
        match (op.f, op.outcome) {
            (Function::Append, _) => {
                keys.insert(&op.key);
                appends.entry(&op.key).or_default().push(op);
            }
            (Function::Read, Outcome::Ok) => {
                keys.insert(&op.key);
                match as_list(&op.output) {
                    Some(list) => reads.entry(&op.key).or_default().push(Read { op, list }),
                    None => report.anomalies.push(AppendAnomaly::Garbage {
                        key: op.key.clone(),
                        read: op.describe(),
                    }),
                }
            }
            _ => {}
        }
    }
    report.keys = keys.len();
    let empty_a = Vec::new();
    let empty_r = Vec::new();
    for key in keys {
        let key_appends = appends.get(key).unwrap_or(&empty_a);
        let key_reads = reads.get(key).unwrap_or(&empty_r);
        report.reads_checked += key_reads.len();
        check_key(key, key_appends, key_reads, &mut report);
    }
    report
}

fn check_key(key: &str, appends: &[&Op], reads: &[Read], report: &mut AppendReport) {
    let anomalies = &mut report.anomalies;
    // What each element's append did: Some(true) ok, Some(false) failed, None unknown.
    let mut status: HashMap<i64, Outcome> = HashMap::new();
    let mut acked: Vec<(u64, i64, &Op)> = Vec::new();
    for a in appends {
        let Some(e) = a.input.as_i64() else {
            anomalies.push(AppendAnomaly::Garbage {
                key: key.into(),
                read: a.describe(),
            });
            continue;
        };
        status.insert(e, a.outcome);
        match a.outcome {
            Outcome::Ok => {
                report.appends_ok += 1;
                acked.push((a.complete_ns.unwrap_or(u64::MAX), e, a));
            }
            Outcome::Info => report.appends_info += 1,
            Outcome::Fail => {}
        }
    }

    // Duplicates and phantoms, read by read.
    for r in reads {
        let mut seen = HashSet::new();
        for &e in &r.list {
            if !seen.insert(e) {
                anomalies.push(AppendAnomaly::Duplicate {
                    key: key.into(),
                    element: e,
                    read: r.op.describe(),
                });
            }
            let why = match status.get(&e) {
                None => Some("never appended"),
                Some(Outcome::Fail) => Some("append definitely failed"),
                _ => None,
            };
            if let Some(why) = why {
                anomalies.push(AppendAnomaly::Phantom {
                    key: key.into(),
                    element: e,
                    read: r.op.describe(),
                    why,
                });
            }
        }
    }

    // One order: every read is a prefix of the longest.
    let Some(longest) = reads.iter().max_by_key(|r| r.list.len()) else {
        if !acked.is_empty() {
            anomalies.push(AppendAnomaly::NoFinalRead {
                key: key.into(),
                acknowledged: acked.len(),
            });
        }
        return;
    };
    let mut prefix_ok = vec![true; reads.len()];
    for (i, r) in reads.iter().enumerate() {
        if let Some(at) = r.list.iter().zip(&longest.list).position(|(a, b)| a != b) {
            prefix_ok[i] = false;
            anomalies.push(AppendAnomaly::Divergent {
                key: key.into(),
                read: format!("{} = {}", r.op.describe(), shown(&r.list)),
                at,
                longest_read: format!("{} = {}", longest.op.describe(), shown(&longest.list)),
            });
        }
    }

    // Lost: for a prefix read of length L, an element acknowledged before the read began
    // must sit at a position < L of the longest list.
    let position: HashMap<i64, usize> = longest
        .list
        .iter()
        .enumerate()
        .map(|(i, e)| (*e, i))
        .collect();
    acked.sort_by_key(|a| a.0);
    let mut by_invoke: Vec<usize> = (0..reads.len()).collect();
    by_invoke.sort_by_key(|i| reads[*i].op.invoke_ns);
    let mut next_ack = 0;
    // The acknowledged element placed furthest (usize::MAX: not in the longest list at all).
    let mut furthest: Option<(usize, i64, &Op)> = None;
    let mut reported_lost: HashSet<i64> = HashSet::new();
    for &ri in &by_invoke {
        let r = &reads[ri];
        while next_ack < acked.len() && acked[next_ack].0 < r.op.invoke_ns {
            let (_, e, a) = acked[next_ack];
            let pos = position.get(&e).copied().unwrap_or(usize::MAX);
            if furthest.is_none_or(|f| pos > f.0) {
                furthest = Some((pos, e, a));
            }
            next_ack += 1;
        }
        if !prefix_ok[ri] {
            continue;
        }
        if let Some((pos, e, a)) = furthest {
            // Each lost element is reported once, with the first read that missed it.
            if pos >= r.list.len() && reported_lost.insert(e) {
                anomalies.push(AppendAnomaly::Lost {
                    key: key.into(),
                    element: e,
                    append: a.describe(),
                    read: format!("{} = {}", r.op.describe(), shown(&r.list)),
                });
            }
        }
    }
    if !reads.iter().any(|r| r.op.final_read) && !acked.is_empty() {
        // Without a read after every append completed, a lost tail would go unseen.
        let last_ack = acked.last().map(|a| a.0).unwrap_or(0);
        if !reads.iter().any(|r| r.op.invoke_ns > last_ack) {
            anomalies.push(AppendAnomaly::NoFinalRead {
                key: key.into(),
                acknowledged: acked.len(),
            });
        }
    }

    // Real time: a read that began after another ended is at least as long.
    let mut by_return: Vec<usize> = (0..reads.len()).collect();
    by_return.sort_by_key(|i| reads[*i].op.complete_ns.unwrap_or(u64::MAX));
    let mut j = 0;
    let mut longest_before: Option<usize> = None;
    for &ri in &by_invoke {
        let r = &reads[ri];
        while j < by_return.len()
            && reads[by_return[j]].op.complete_ns.unwrap_or(u64::MAX) < r.op.invoke_ns
        {
            let c = by_return[j];
            if longest_before.is_none_or(|b| reads[c].list.len() > reads[b].list.len()) {
                longest_before = Some(c);
            }
            j += 1;
        }
        if let Some(b) = longest_before {
            if reads[b].list.len() > r.list.len() {
                anomalies.push(AppendAnomaly::NonMonotonic {
                    key: key.into(),
                    earlier: format!("{} = {}", reads[b].op.describe(), shown(&reads[b].list)),
                    later: format!("{} = {}", r.op.describe(), shown(&r.list)),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::testing::ops;
    use crate::history::Function::{Append, Read};
    use crate::history::Outcome::{Fail, Info, Ok};
    use serde_json::{json, Value};

    const N: Value = Value::Null;

    fn kinds(r: &AppendReport) -> Vec<&'static str> {
        r.anomalies
            .iter()
            .map(|a| match a {
                AppendAnomaly::Duplicate { .. } => "duplicate",
                AppendAnomaly::Divergent { .. } => "divergent",
                AppendAnomaly::Lost { .. } => "lost",
                AppendAnomaly::Phantom { .. } => "phantom",
                AppendAnomaly::NonMonotonic { .. } => "nonmonotonic",
                AppendAnomaly::Garbage { .. } => "garbage",
                AppendAnomaly::NoFinalRead { .. } => "nofinal",
            })
            .collect()
    }

    #[test]
    fn clean_history_passes_with_indeterminate_appends_either_way() {
        let h = ops(&[
            (0, Append, "l", json!(1), 0, Some(2), Ok, N),
            (1, Append, "l", json!(2), 1, Some(3), Ok, N),
            (2, Append, "l", json!(3), 4, None, Info, N),
            (3, Append, "l", json!(4), 4, Some(5), Info, N),
            (0, Read, "l", N, 6, Some(7), Ok, json!([2, 1])),
            (1, Read, "l", N, 8, Some(9), Ok, json!([2, 1, 3])),
        ]);
        let r = check(&h);
        assert!(r.anomalies.is_empty(), "{:?}", r.anomalies);
        assert_eq!(r.appends_ok, 2);
        assert_eq!(r.appends_info, 2);
    }

    #[test]
    fn lost_acknowledged_append_is_caught() {
        let h = ops(&[
            (0, Append, "l", json!(1), 0, Some(2), Ok, N),
            (1, Append, "l", json!(2), 3, Some(4), Ok, N),
            (0, Read, "l", N, 5, Some(6), Ok, json!([1])),
            (0, Read, "l", N, 7, Some(8), Ok, json!([1])),
        ]);
        assert_eq!(kinds(&check(&h)), vec!["lost"]);
    }

    #[test]
    fn duplicates_phantoms_and_failed_appends_are_caught() {
        let h = ops(&[
            (0, Append, "l", json!(1), 0, Some(2), Ok, N),
            (1, Append, "l", json!(5), 0, Some(2), Fail, N),
            (0, Read, "l", N, 5, Some(6), Ok, json!([1, 1, 5, 9])),
        ]);
        let k = kinds(&check(&h));
        assert!(k.contains(&"duplicate"), "{k:?}");
        assert_eq!(k.iter().filter(|x| **x == "phantom").count(), 2, "{k:?}");
    }

    #[test]
    fn divergent_order_is_caught() {
        let h = ops(&[
            (0, Append, "l", json!(1), 0, Some(2), Ok, N),
            (1, Append, "l", json!(2), 0, Some(2), Ok, N),
            (0, Read, "l", N, 5, Some(6), Ok, json!([1, 2])),
            (1, Read, "l", N, 5, Some(6), Ok, json!([2])),
        ]);
        assert!(kinds(&check(&h)).contains(&"divergent"));
    }

    #[test]
    fn going_back_in_time_is_caught() {
        let h = ops(&[
            (0, Append, "l", json!(1), 0, Some(1), Ok, N),
            (1, Append, "l", json!(2), 2, None, Info, N),
            (0, Read, "l", N, 5, Some(6), Ok, json!([1, 2])),
            (1, Read, "l", N, 7, Some(8), Ok, json!([1])),
        ]);
        assert_eq!(kinds(&check(&h)), vec!["nonmonotonic"]);
    }

    #[test]
    fn acknowledged_appends_without_a_later_read_are_unchecked() {
        let h = ops(&[
            (0, Read, "l", N, 0, Some(1), Ok, json!([])),
            (0, Append, "l", json!(1), 2, Some(3), Ok, N),
        ]);
        assert_eq!(kinds(&check(&h)), vec!["nofinal"]);
        let none = ops(&[(0, Append, "m", json!(1), 2, Some(3), Ok, N)]);
        assert_eq!(kinds(&check(&none)), vec!["nofinal"]);
    }
}
