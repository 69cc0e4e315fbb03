//! Bookkeeping: status notes, history entries, stale results.

use super::*;

#[test]
fn stale_hook_results_are_ignored() {
    let mut h = H::new(1, cfg());
    let acts = h.step();
    h.p.observe(Event::HookFinished { id: 999, ok: true }, h.now);
    assert_eq!(h.p.local_role(), LocalRole::Demoting { epoch: Epoch(0) });
    h.finish_hooks(&acts, true);
    assert_eq!(h.p.local_role(), LocalRole::Replica);
}

#[test]
fn refused_proposal_is_reported_and_decided_again() {
    let mut h = H::new(1, cfg());
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let prop = h.step();
    // Someone else's promotion commits first: ours is refused as stale.
    commit_direct(
        &mut h,
        Command::Promote(Promote {
            node: 2,
            epoch: Epoch(1),
            reason: PromoteReason::Startup,
            previous: None,
            home: None,
            term: Term(1),
            at_unix_ms: 1,
        }),
    );
    let res = h.commit(&prop);
    assert!(matches!(
        res.first(),
        Some(Err(Rejected::EpochMismatch { .. }))
    ));
    let acts = h.step();
    assert!(reports(&acts)
        .iter()
        .any(|n| matches!(n, StatusNote::ProposalRefused { .. })));
}

#[test]
fn proposal_without_answer_is_forgotten_after_proposal_timeout() {
    let mut h = H::new(1, cfg());
    let acts = h.step();
    h.finish_hooks(&acts, true);
    assert!(promote_of(&h.step()).is_some());
    h.advance(500);
    assert!(proposals(&h.step()).is_empty());
    h.advance(500);
    assert!(
        promote_of(&h.step()).is_some(),
        "retried after proposal_timeout"
    );
}

#[test]
fn a_report_is_emitted_when_a_note_starts_not_on_every_step() {
    let mut h = H::new(1, cfg());
    commit_direct(
        &mut h,
        Command::SetMaintenance {
            on: true,
            reason: "m".into(),
            at_unix_ms: 1,
        },
    );
    let first = h.step();
    h.finish_hooks(&first, true);
    let second = h.step();
    let count = |a: &[Action]| {
        reports(a)
            .iter()
            .filter(|n| matches!(n, StatusNote::Maintenance { .. }))
            .count()
    };
    assert_eq!(count(&first), 1);
    assert_eq!(count(&second), 0);
    assert_eq!(h.p.status_notes().len(), 1);
}

#[test]
fn same_inputs_give_same_actions() {
    let run = || {
        let mut h = H::new(2, cfg());
        h.members[0].priority = 3;
        let mut all = Vec::new();
        for _ in 0..5 {
            let acts = h.step();
            h.commit(&acts);
            h.finish_hooks(&acts, true);
            h.advance(7);
            all.push(format!(
                "{:?}",
                acts.iter()
                    .map(|a| match a {
                        Action::TransferLeadership { to, deadline } =>
                            format!("T{to}@{:?}", deadline.duration_since(h.t0)),
                        other => format!("{other:?}"),
                    })
                    .collect::<Vec<_>>()
            ));
        }
        all
    };
    assert_eq!(run(), run());
}

#[test]
fn config_validation_rejects_zero_lease_and_zero_threshold() {
    assert!(PolicyConfig::default().validate().is_ok());
    let e = PolicyConfig {
        lease: Duration::ZERO,
        ..PolicyConfig::default()
    }
    .validate();
    assert!(e.is_err_and(|e| e.key == "lease"));
    let e = PolicyConfig {
        failure_threshold: 0,
        ..PolicyConfig::default()
    }
    .validate();
    assert!(e.is_err_and(|e| e.key == "failure_threshold"));
    let e = PolicyConfig {
        local_restarts: MAX_LOCAL_RESTARTS + 1,
        ..PolicyConfig::default()
    }
    .validate();
    assert!(e.is_err_and(|e| e.key == "local_restarts"));
}
