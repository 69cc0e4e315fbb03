//! The openraft type configuration: what a log entry carries and what applying it returns.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::consensus::app::{AppRequest, AppResponse};

/// A Raft log entry's application payload.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Request(pub AppRequest);

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// What applying a committed [`Request`] produced, sent back to the proposer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Response(pub AppResponse);

openraft::declare_raft_types!(
    /// quorate's Raft types: u64 node ids, `BasicNode` carrying the Raft address.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
);

pub type Raft = openraft::Raft<TypeConfig, crate::consensus::state_machine::StateMachineStore>;
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type LeaderId = openraft::type_config::alias::LeaderIdOf<TypeConfig>;
pub type CommittedLeaderId = openraft::type_config::alias::CommittedLeaderIdOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;
/// Snapshots travel and rest as one checksummed byte buffer (see `snapshot.rs`), shared
/// rather than copied between the state machine, the snapshot on offer and replication.
pub type SnapshotData = std::io::Cursor<std::sync::Arc<Vec<u8>>>;
