//! The failover rules, each in one place: pure predicates and orderings over plain facts
//! (durations, roles, indexes, the committed cluster state). The policy composes them into
//! decisions; the API, the executor, the config check, the early elections and the transport
//! call them instead of re-deriving them. The table of rules, their functions and their tests
//! is in the `policy` module doc.
//!
//! Why a module of its own rather than a file inside `policy`: the config check (a lower
//! layer than the policy) applies the lease rules when a file is loaded, and the transport
//! applies the vote gate. A leaf that depends only on `types` and `cluster` lets every layer
//! call the one definition without an import pointing upward.

pub mod acting;
pub mod candidate;
pub mod election;
pub mod lease;

pub use acting::{acting_check, leader_is_current};
pub use candidate::{
    best_candidate, eligibility, planned_move_eligibility, rank_candidates,
    restrict_to_final_most_advanced, CandidateView, Ineligible,
};
pub use election::may_vote;
pub use lease::{
    clock_drift_margin, lapse_grace, lease_budget, lease_covers_heartbeats,
    lease_ends_before_election, lease_holds, min_safe_election_timeout, quorum_acked_age,
};
