//! Linearizability of the register workload, checked per key (a register's history is
//! linearizable iff each key's is: linearizability is compositional).
//!
//! The search is Wing & Gong's, as Lowe and Porcupine improved it: depth-first over the
//! operations that may take effect next (those invoked before every still-pending completed
//! operation returned), applying each to a sequential register model, and memoizing every
//! (set of operations taken, register value) configuration already explored so each is
//! expanded once. The set is hashed incrementally (128-bit Zobrist), so a configuration costs
//! two words however long the history is.
//!
//! Indeterminate (`info`) writes and CASes may take effect at any time after their
//! invocation, or never: each is offered both as "apply now" and "drop". Failed operations
//! (`fail`: definitely no effect, e.g. a CAS answered 409) are left out, as Jepsen does; a
//! read whose outcome is unknown constrains nothing and is left out too. Values written by
//! the workload are unique, so an indeterminate write whose value nobody ever observed can be
//! dropped before the search without changing the verdict; that keeps the search small when
//! a fault leaves many writes indeterminate.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::Value;

use crate::history::{Function, Op, Outcome};

/// Configurations explored per key before the checker gives up and reports the key as
/// unknown (which fails the run: an unchecked history proves nothing).
pub const MAX_SEARCH_STATES: usize = 2_000_000;

/// Operations of the sequential register model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegKind {
    /// Read that returned this value (None: the key did not exist).
    Read(Option<i64>),
    Write(i64),
    /// Compare-and-set: succeeds iff the register holds `expected` (None: must not exist).
    Cas {
        expected: Option<i64>,
        new: i64,
    },
}

#[derive(Clone, Debug)]
pub struct RegOp {
    /// Index of the operation in the history (for reports).
    pub index: u64,
    pub invoke_ns: u64,
    /// None: indeterminate, may take effect any time after invocation, or never.
    pub return_ns: Option<u64>,
    pub kind: RegKind,
    pub describe: String,
}

/// The register model: the next value, or None if `op` cannot happen in `state`.
fn step(state: Option<i64>, op: RegKind) -> Option<Option<i64>> {
    match op {
        RegKind::Read(v) => (v == state).then_some(state),
        RegKind::Write(v) => Some(Some(v)),
        RegKind::Cas { expected, new } => (expected == state).then_some(Some(new)),
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LinAnomaly {
    /// No order of the operations explains what the clients saw.
    NotLinearizable {
        key: String,
        /// The first operation the deepest search could not place.
        stuck_at: String,
        /// Register value at that point of the deepest search.
        value_then: Option<i64>,
        /// Operations that could have gone next there, none of which fit.
        candidates: Vec<String>,
        placed: usize,
        total: usize,
    },
    /// The search hit its bound before deciding.
    Unknown { key: String, states: usize },
    /// A read returned something the workload never writes (not an integer).
    Garbage { key: String, op: String },
    /// A register operation whose recorded values do not have the documented shape.
    BadRecord { op: String },
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct LinReport {
    pub keys: usize,
    pub ops_checked: usize,
    pub indeterminate_dropped: usize,
    pub states_explored: usize,
    pub anomalies: Vec<LinAnomaly>,
}

fn as_reg_value(v: &Value) -> Result<Option<i64>, ()> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_i64().map(Some).ok_or(()),
        _ => Err(()),
    }
}

/// Turns the register operations of a history into model operations, per key.
fn prepare(ops: &[Op], report: &mut LinReport) -> BTreeMap<String, Vec<RegOp>> {
    let mut per_key: BTreeMap<String, Vec<RegOp>> = BTreeMap::new();
    for op in ops {
        if !matches!(op.f, Function::Read | Function::Write | Function::Cas) {
            continue;
        }
        if op.outcome == Outcome::Fail || (op.f == Function::Read && op.outcome != Outcome::Ok) {
            continue;
        }
        let kind = match op.f {
            Function::Read => match as_reg_value(&op.output) {
                Ok(v) => RegKind::Read(v),
                Err(()) => {
                    report.anomalies.push(LinAnomaly::Garbage {
                        key: op.key.clone(),
                        op: op.describe(),
                    });
                    continue;
                }
            },
            Function::Write => match as_reg_value(&op.input) {
                Ok(Some(v)) => RegKind::Write(v),
                _ => {
                    report
                        .anomalies
                        .push(LinAnomaly::BadRecord { op: op.describe() });
                    continue;
                }
            },
            _ => {
                let pair = op.input.as_array().filter(|a| a.len() == 2);
                match pair.map(|a| (as_reg_value(&a[0]), as_reg_value(&a[1]))) {
                    Some((Ok(expected), Ok(Some(new)))) => RegKind::Cas { expected, new },
                    _ => {
                        report
                            .anomalies
                            .push(LinAnomaly::BadRecord { op: op.describe() });
                        continue;
                    }
                }
            }
        };
        let return_ns = match op.outcome {
            Outcome::Ok => Some(op.complete_ns.unwrap_or(u64::MAX)),
            _ => None,
        };
        per_key.entry(op.key.clone()).or_default().push(RegOp {
            index: op.index,
            invoke_ns: op.invoke_ns,
            return_ns,
            kind,
            describe: op.describe(),
        });
    }
    per_key
}

/// Drops indeterminate writes/CASes whose value no read and no CAS ever observed: placing
/// them "never" is always possible when nothing depended on their value (values are unique
/// and failed CASes are not checked). Repeats because a dropped CAS's expected value no
/// longer counts as observed.
fn prune_unobserved(ops: Vec<RegOp>) -> (Vec<RegOp>, usize) {
    let mut keep = vec![true; ops.len()];
    // Bounded: every round but the last drops at least one op.
    for _ in 0..=ops.len() {
        let mut observed: BTreeSet<i64> = BTreeSet::new();
        for (op, k) in ops.iter().zip(&keep) {
            match op.kind {
                RegKind::Read(Some(v)) => {
                    observed.insert(v);
                }
                RegKind::Cas {
                    expected: Some(e), ..
                } if *k => {
                    observed.insert(e);
                }
                _ => {}
            }
        }
        let mut changed = false;
        for (op, k) in ops.iter().zip(keep.iter_mut()) {
            let written = match op.kind {
                RegKind::Write(v) | RegKind::Cas { new: v, .. } => v,
                RegKind::Read(_) => continue,
            };
            if *k && op.return_ns.is_none() && !observed.contains(&written) {
                *k = false;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let dropped = keep.iter().filter(|k| !**k).count();
    let kept = ops
        .into_iter()
        .zip(keep)
        .filter_map(|(o, k)| k.then_some(o))
        .collect();
    (kept, dropped)
}

#[derive(Clone, Copy, Debug)]
enum Move {
    Apply(usize),
    Drop(usize),
}

struct Frame {
    moves: Vec<Move>,
    next: usize,
    /// The move taken from this frame, to undo before trying the next: (op, value before).
    taken: Option<(usize, Option<i64>)>,
}

pub enum SearchResult {
    Linearizable {
        states: usize,
    },
    NotLinearizable {
        states: usize,
        /// Deepest configuration: first unplaced op, value, candidate ops.
        stuck_at: usize,
        value_then: Option<i64>,
        candidates: Vec<usize>,
        placed: usize,
    },
    Unknown {
        states: usize,
    },
}

/// Searches for a linearization of one key's operations (`ops` in any order).
pub fn search(ops: &mut [RegOp], max_states: usize) -> SearchResult {
    ops.sort_by_key(|o| (o.invoke_ns, o.index));
    let n = ops.len();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let zobrist: Vec<(u64, u64)> = (0..n).map(|_| (rng.gen(), rng.gen())).collect();
    let mut done = vec![false; n];
    let mut first_open = 0usize; // every op before it is done
    let mut remaining = n;
    let mut value: Option<i64> = None;
    let mut hash = (0u64, 0u64);
    let mut seen: HashSet<(u64, u64, Option<i64>)> = HashSet::new();
    let mut deepest = (0usize, 0usize, None, Vec::new()); // (placed, first_open, value, cands)

    let candidates = |done: &[bool], first_open: usize| -> Vec<Move> {
        let mut min_return = u64::MAX;
        let mut moves = Vec::new();
        for (i, op) in ops.iter().enumerate().skip(first_open) {
            if op.invoke_ns > min_return {
                break;
            }
            if done[i] {
                continue;
            }
            match op.return_ns {
                Some(r) => {
                    min_return = min_return.min(r);
                    moves.push(Move::Apply(i));
                }
                None => {
                    moves.push(Move::Apply(i));
                    moves.push(Move::Drop(i));
                }
            }
        }
        // An op collected before a later one lowered `min_return` was invoked before that
        // op's invocation, hence before its return: it stays a candidate.
        moves
    };

    if n == 0 {
        return SearchResult::Linearizable { states: 0 };
    }
    let mut stack = vec![Frame {
        moves: candidates(&done, first_open),
        next: 0,
        taken: None,
    }];
    while let Some(top) = stack.last_mut() {
        if let Some((i, before)) = top.taken.take() {
            done[i] = false;
            hash.0 ^= zobrist[i].0;
            hash.1 ^= zobrist[i].1;
            value = before;
            remaining += 1;
            first_open = first_open.min(i);
        }
        let Some(&mv) = top.moves.get(top.next) else {
            stack.pop();
            continue;
        };
        top.next += 1;
        let (i, after) = match mv {
            Move::Apply(i) => match step(value, ops[i].kind) {
                Some(v) => (i, v),
                None => continue,
            },
            Move::Drop(i) => (i, value),
        };
        done[i] = true;
        hash.0 ^= zobrist[i].0;
        hash.1 ^= zobrist[i].1;
        top.taken = Some((i, value));
        value = after;
        remaining -= 1;
        while first_open < n && done[first_open] {
            first_open += 1;
        }
        if remaining == 0 {
            return SearchResult::Linearizable { states: seen.len() };
        }
        if !seen.insert((hash.0, hash.1, value)) {
            continue;
        }
        if seen.len() > max_states {
            return SearchResult::Unknown { states: seen.len() };
        }
        let moves = candidates(&done, first_open);
        let placed = n - remaining;
        if placed > deepest.0 {
            let cands = moves
                .iter()
                .filter_map(|m| match m {
                    Move::Apply(i) => Some(*i),
                    Move::Drop(_) => None,
                })
                .collect();
            deepest = (placed, first_open, value, cands);
        }
        stack.push(Frame {
            moves,
            next: 0,
            taken: None,
        });
    }
    if deepest.0 == 0 {
        // Nothing could be placed at all: report the very first configuration.
        let cands = candidates(&vec![false; n], 0)
            .iter()
            .filter_map(|m| match m {
                Move::Apply(i) => Some(*i),
                Move::Drop(_) => None,
            })
            .collect();
        deepest = (0, 0, None, cands);
    }
    SearchResult::NotLinearizable {
        states: seen.len(),
        stuck_at: deepest.1,
        value_then: deepest.2,
        candidates: deepest.3,
        placed: deepest.0,
    }
}

/// Checks every key's register history.
pub fn check(ops: &[Op]) -> LinReport {
    check_bounded(ops, MAX_SEARCH_STATES)
}

pub fn check_bounded(ops: &[Op], max_states: usize) -> LinReport {
    let mut report = LinReport::default();
    let per_key = prepare(ops, &mut report);
    report.keys = per_key.len();
    for (key, key_ops) in per_key {
        let (mut key_ops, dropped) = prune_unobserved(key_ops);
        report.indeterminate_dropped += dropped;
        report.ops_checked += key_ops.len();
        match search(&mut key_ops, max_states) {
            SearchResult::Linearizable { states } => report.states_explored += states,
            SearchResult::Unknown { states } => {
                report.states_explored += states;
                report.anomalies.push(LinAnomaly::Unknown { key, states });
            }
            SearchResult::NotLinearizable {
                states,
                stuck_at,
                value_then,
                candidates,
                placed,
            } => {
                report.states_explored += states;
                report.anomalies.push(LinAnomaly::NotLinearizable {
                    key,
                    stuck_at: key_ops
                        .get(stuck_at)
                        .map(|o| o.describe.clone())
                        .unwrap_or_default(),
                    value_then,
                    candidates: candidates
                        .iter()
                        .take(10)
                        .map(|i| key_ops[*i].describe.clone())
                        .collect(),
                    placed,
                    total: key_ops.len(),
                });
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::testing::ops;
    use crate::history::Function::{Cas, Read, Write};
    use crate::history::Outcome::{Fail, Info, Ok};
    use serde_json::{json, Value};

    const N: Value = Value::Null;

    fn not_lin(r: &LinReport) -> bool {
        r.anomalies
            .iter()
            .any(|a| matches!(a, LinAnomaly::NotLinearizable { .. }))
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = ops(&[
            (0, Read, "k", N, 1, Some(2), Ok, N),
            (0, Write, "k", json!(1), 3, Some(4), Ok, N),
            (1, Read, "k", N, 5, Some(6), Ok, json!(1)),
            (1, Cas, "k", json!([1, 2]), 7, Some(8), Ok, N),
            (0, Read, "k", N, 9, Some(10), Ok, json!(2)),
        ]);
        let r = check(&h);
        assert!(r.anomalies.is_empty(), "{:?}", r.anomalies);
        assert_eq!(r.ops_checked, 5);
    }

    #[test]
    fn concurrent_reads_may_see_either_side_of_a_concurrent_write() {
        // Write 2 overlaps both reads, and the reads overlap each other: one may see the old
        // value and the other the new one, in either order.
        let h = ops(&[
            (0, Write, "k", json!(1), 0, Some(1), Ok, N),
            (0, Write, "k", json!(2), 2, Some(10), Ok, N),
            (1, Read, "k", N, 3, Some(6), Ok, json!(2)),
            (2, Read, "k", N, 4, Some(7), Ok, json!(1)),
        ]);
        assert!(check(&h).anomalies.is_empty());
    }

    #[test]
    fn stale_read_after_acknowledged_write_is_caught() {
        // The write of 2 was acknowledged at t=4; a read that began at t=5 still sees 1.
        let h = ops(&[
            (0, Write, "k", json!(1), 0, Some(1), Ok, N),
            (0, Write, "k", json!(2), 2, Some(4), Ok, N),
            (1, Read, "k", N, 5, Some(6), Ok, json!(1)),
        ]);
        let r = check(&h);
        assert!(not_lin(&r), "{:?}", r.anomalies);
        match &r.anomalies[0] {
            LinAnomaly::NotLinearizable { key, stuck_at, .. } => {
                assert_eq!(key, "k");
                assert!(stuck_at.contains("read"), "{stuck_at}");
            }
            a => panic!("unexpected {a:?}"),
        }
    }

    #[test]
    fn lost_write_is_caught() {
        // Acknowledged write of 7, then every later read sees the key missing.
        let h = ops(&[
            (0, Write, "k", json!(7), 0, Some(2), Ok, N),
            (1, Read, "k", N, 3, Some(4), Ok, N),
        ]);
        assert!(not_lin(&check(&h)));
    }

    #[test]
    fn nonmonotonic_reads_are_caught() {
        // Two sequential reads see 2 then 1, but 1 was written before 2 and never again.
        let h = ops(&[
            (0, Write, "k", json!(1), 0, Some(1), Ok, N),
            (0, Write, "k", json!(2), 2, Some(10), Ok, N),
            (1, Read, "k", N, 3, Some(4), Ok, json!(2)),
            (1, Read, "k", N, 5, Some(6), Ok, json!(1)),
        ]);
        assert!(not_lin(&check(&h)));
    }

    #[test]
    fn indeterminate_write_may_take_effect_late_or_never() {
        // The info write of 3 is seen long after it was invoked: fine.
        let late = ops(&[
            (0, Write, "k", json!(1), 0, Some(1), Ok, N),
            (1, Write, "k", json!(3), 2, None, Info, N),
            (2, Read, "k", N, 10, Some(11), Ok, json!(1)),
            (2, Read, "k", N, 20, Some(21), Ok, json!(3)),
        ]);
        assert!(check(&late).anomalies.is_empty());
        // Never seen at all: fine too.
        let never = ops(&[
            (0, Write, "k", json!(1), 0, Some(1), Ok, N),
            (1, Write, "k", json!(3), 2, None, Info, N),
            (2, Read, "k", N, 10, Some(11), Ok, json!(1)),
        ]);
        let r = check(&never);
        assert!(r.anomalies.is_empty());
        assert_eq!(r.indeterminate_dropped, 1);
        // But it cannot take effect before it was invoked.
        let early = ops(&[
            (2, Read, "k", N, 0, Some(1), Ok, json!(3)),
            (1, Write, "k", json!(3), 2, None, Info, N),
        ]);
        assert!(not_lin(&check(&early)));
    }

    #[test]
    fn indeterminate_write_cannot_take_effect_twice() {
        // Seen, overwritten, then seen again: only one of its effects can be real.
        let h = ops(&[
            (1, Write, "k", json!(3), 0, None, Info, N),
            (2, Read, "k", N, 10, Some(11), Ok, json!(3)),
            (0, Write, "k", json!(4), 12, Some(13), Ok, N),
            (2, Read, "k", N, 14, Some(15), Ok, json!(3)),
        ]);
        assert!(not_lin(&check(&h)));
    }

    #[test]
    fn cas_semantics_are_checked_and_failed_ops_are_ignored() {
        // CAS from 1 to 2 acknowledged while the register held 5: impossible.
        let bad = ops(&[
            (0, Write, "k", json!(5), 0, Some(1), Ok, N),
            (1, Cas, "k", json!([1, 2]), 2, Some(3), Ok, N),
        ]);
        assert!(not_lin(&check(&bad)));
        // CAS on a missing key (expected null) succeeding, then a failed CAS (409): fine.
        let good = ops(&[
            (1, Cas, "k", json!([null, 2]), 0, Some(1), Ok, N),
            (1, Cas, "k", json!([null, 9]), 2, Some(3), Fail, N),
            (0, Read, "k", N, 4, Some(5), Ok, json!(2)),
        ]);
        assert!(check(&good).anomalies.is_empty());
    }

    #[test]
    fn keys_are_independent() {
        let h = ops(&[
            (0, Write, "a", json!(1), 0, Some(1), Ok, N),
            (1, Read, "b", N, 2, Some(3), Ok, N),
            (1, Read, "a", N, 4, Some(5), Ok, json!(1)),
        ]);
        let r = check(&h);
        assert!(r.anomalies.is_empty());
        assert_eq!(r.keys, 2);
    }

    #[test]
    fn garbage_reads_and_malformed_records_are_anomalies() {
        let h = ops(&[
            (1, Read, "k", N, 0, Some(1), Ok, json!("x")),
            (1, Cas, "k", json!(3), 2, Some(3), Ok, N),
        ]);
        let r = check(&h);
        assert!(matches!(r.anomalies[0], LinAnomaly::Garbage { .. }));
        assert!(matches!(r.anomalies[1], LinAnomaly::BadRecord { .. }));
    }

    #[test]
    fn search_bound_reports_unknown() {
        // Many concurrent info writes whose values are all read: a big search space.
        let mut rows = Vec::new();
        for i in 0..12 {
            rows.push((i, Write, "k", json!(i), 0, None, Info, N));
        }
        for i in 0..12 {
            rows.push((100 + i, Read, "k", N, 10, Some(20), Ok, json!(i)));
        }
        rows.push((999, Read, "k", N, 30, Some(31), Ok, json!(77)));
        let h = ops(&rows);
        let r = check_bounded(&h, 50);
        assert!(
            matches!(r.anomalies[0], LinAnomaly::Unknown { .. }),
            "{:?}",
            r.anomalies
        );
    }

    /// Independent oracle: tries every subset of the indeterminate ops and every order of
    /// the chosen ops, keeping real-time order and the register model. Tiny histories only.
    fn brute_force(ops: &[RegOp]) -> bool {
        let info: Vec<usize> = (0..ops.len())
            .filter(|i| ops[*i].return_ns.is_none())
            .collect();
        for mask in 0..(1u32 << info.len()) {
            let chosen: Vec<usize> = (0..ops.len())
                .filter(|i| match info.iter().position(|x| x == i) {
                    Some(bit) => mask & (1 << bit) != 0,
                    None => true,
                })
                .collect();
            if permutations_ok(ops, &mut chosen.clone(), 0) {
                return true;
            }
        }
        false
    }

    fn permutations_ok(ops: &[RegOp], perm: &mut Vec<usize>, k: usize) -> bool {
        if k == perm.len() {
            // Real time: no op may precede (return before the invocation of) an earlier one.
            for i in 0..perm.len() {
                for j in i + 1..perm.len() {
                    let (a, b) = (&ops[perm[i]], &ops[perm[j]]);
                    if b.return_ns.is_some_and(|r| r < a.invoke_ns) {
                        return false;
                    }
                }
            }
            let mut v = None;
            for &i in perm.iter() {
                match step(v, ops[i].kind) {
                    Some(n) => v = n,
                    None => return false,
                }
            }
            return true;
        }
        for i in k..perm.len() {
            perm.swap(k, i);
            if permutations_ok(ops, perm, k + 1) {
                perm.swap(k, i);
                return true;
            }
            perm.swap(k, i);
        }
        false
    }

    #[test]
    fn search_agrees_with_brute_force_on_random_small_histories() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let val = |rng: &mut rand::rngs::StdRng| -> Option<i64> {
            let x = rng.gen_range(0..4);
            (x > 0).then_some(x)
        };
        let (mut yes, mut no) = (0, 0);
        for case in 0..3000 {
            let n = rng.gen_range(1..=6);
            let mut ops = Vec::new();
            for i in 0..n {
                let invoke: u64 = rng.gen_range(0..20);
                let ret = invoke + rng.gen_range(0..10);
                let kind = match rng.gen_range(0..3) {
                    0 => RegKind::Read(val(&mut rng)),
                    1 => RegKind::Write(rng.gen_range(1..4)),
                    _ => RegKind::Cas {
                        expected: val(&mut rng),
                        new: rng.gen_range(1..4),
                    },
                };
                let info = !matches!(kind, RegKind::Read(_)) && rng.gen_bool(0.25);
                ops.push(RegOp {
                    index: i,
                    invoke_ns: invoke,
                    return_ns: (!info).then_some(ret),
                    kind,
                    describe: format!("{kind:?} [{invoke}, {ret}] info={info}"),
                });
            }
            let expected = brute_force(&ops);
            let (mut pruned, _) = prune_unobserved(ops.clone());
            let got = match search(&mut pruned, MAX_SEARCH_STATES) {
                SearchResult::Linearizable { .. } => true,
                SearchResult::NotLinearizable { .. } => false,
                SearchResult::Unknown { .. } => panic!("case {case}: bound hit"),
            };
            let descr: Vec<&str> = ops.iter().map(|o| o.describe.as_str()).collect();
            assert_eq!(got, expected, "case {case}: {descr:#?}");
            if expected {
                yes += 1;
            } else {
                no += 1;
            }
        }
        // Both verdicts must be well represented, or the comparison proves little.
        assert!(yes > 500 && no > 500, "yes {yes} no {no}");
    }

    #[test]
    fn long_sequential_history_is_fast_and_iterative() {
        // 20k sequential ops: would overflow a recursive search's stack.
        let mut rows = Vec::new();
        for i in 0..10_000u64 {
            let t = i * 10;
            rows.push((0, Write, "k", json!(i), t, Some(t + 2), Ok, N));
            rows.push((1, Read, "k", N, t + 3, Some(t + 4), Ok, json!(i)));
        }
        let r = check(&ops(&rows));
        assert!(r.anomalies.is_empty());
        assert_eq!(r.ops_checked, 20_000);
    }
}
