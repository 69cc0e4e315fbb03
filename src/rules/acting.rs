//! Safety rule 1, the acting-primary check, and the rule that a new leader decides only from
//! state it has fully applied.

use std::time::Duration;

use super::lease::lease_holds;
use crate::cluster::{ClusterState, DemoteReason};
use crate::types::{Epoch, NodeId, Term};

/// Rule 1 for `node` whose service runs as primary at `epoch`: the committed state names it at
/// that epoch, it is the current Raft leader, and a quorum acknowledged it within `lease`.
/// The error is why it must stop (the demote reason recorded in history). The policy runs
/// this on every step; the API runs it again at request time (`/primary`), so a node that was
/// just resumed from SIGSTOP answers "not primary" before its executor has run again.
pub fn acting_check(
    state: &ClusterState,
    node: NodeId,
    epoch: Epoch,
    is_current_leader: bool,
    quorum_acked_age: Option<Duration>,
    lease: Duration,
) -> Result<(), DemoteReason> {
    if !state.is_primary(node, epoch) {
        return Err(DemoteReason::Superseded);
    }
    if !is_current_leader {
        return Err(DemoteReason::LeadershipLost);
    }
    if !lease_holds(quorum_acked_age, lease) {
        return Err(DemoteReason::LeaseLost);
    }
    Ok(())
}

/// A Raft leader counts as leader for decisions only once the blank entry of its own term is
/// applied: until then the committed state it sees may be missing commands the previous
/// leader committed (and it could, say, abort an operation that already moved on). openraft
/// commits that entry right after the election, so this costs one commit.
pub fn leader_is_current(
    raft_says_leader: bool,
    last_applied_term: Option<Term>,
    current_term: Term,
) -> bool {
    raft_says_leader && last_applied_term == Some(current_term)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Command;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn state_with_primary(node: NodeId) -> ClusterState {
        let mut st = ClusterState::default();
        st.apply(&Command::Promote(crate::cluster::Promote {
            node,
            epoch: Epoch(1),
            reason: crate::cluster::PromoteReason::Startup,
            previous: None,
            home: None,
            term: Term(1),
            at_unix_ms: 1,
        }))
        .expect("promote applies");
        st
    }

    #[test]
    fn acting_needs_the_committed_epoch_leadership_and_a_fresh_lease() {
        let st = state_with_primary(1);
        assert_eq!(
            acting_check(&st, 1, Epoch(1), true, Some(ms(10)), ms(100)),
            Ok(())
        );
        assert_eq!(
            acting_check(&st, 1, Epoch(2), true, Some(ms(10)), ms(100)),
            Err(DemoteReason::Superseded)
        );
        assert_eq!(
            acting_check(&st, 2, Epoch(1), true, Some(ms(10)), ms(100)),
            Err(DemoteReason::Superseded)
        );
        assert_eq!(
            acting_check(&st, 1, Epoch(1), false, Some(ms(10)), ms(100)),
            Err(DemoteReason::LeadershipLost)
        );
        assert_eq!(
            acting_check(&st, 1, Epoch(1), true, Some(ms(100)), ms(100)),
            Err(DemoteReason::LeaseLost)
        );
        assert_eq!(
            acting_check(&st, 1, Epoch(1), true, None, ms(100)),
            Err(DemoteReason::LeaseLost)
        );
    }

    #[test]
    fn a_new_leader_counts_only_after_its_own_terms_entry_applied() {
        assert!(!leader_is_current(true, Some(Term(4)), Term(5)));
        assert!(!leader_is_current(true, None, Term(5)));
        assert!(leader_is_current(true, Some(Term(5)), Term(5)));
        assert!(!leader_is_current(false, Some(Term(5)), Term(5)));
    }
}
