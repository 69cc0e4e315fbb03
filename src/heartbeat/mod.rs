//! UDP heartbeats: every node sends a small datagram to every peer on every link each
//! `heartbeat_interval`; a pure detector turns what arrives into a per-peer liveness view.
//!
//! - [`wire`]: the datagram codec (pure).
//! - [`seal`]: AEAD sealing of datagrams with the cluster secret, and the replay window.
//! - [`detector`]: the failure detector (pure; time is passed in).
//! - [`socket`]: binding the UDP socket with socket2.
//! - [`service`]: the tokio task tying them together and publishing a `watch` of the view.

pub mod detector;
pub mod seal;
pub mod service;
pub mod socket;
pub mod wire;

pub use detector::{
    Detector, DetectorConfig, DetectorError, Liveness, LocalIdentity, Observation, PeerStatus,
    PeerView,
};
pub use service::{
    DropReason, HeartbeatAuth, HeartbeatError, HeartbeatHandle, HeartbeatParams, HeartbeatService,
    HeartbeatStats, LocalStatus, LogRateLimiter, StatsSnapshot,
};
pub use socket::SocketError;
pub use wire::{
    cluster_id, decode, encode, DecodeError, Echo, EncodeError, Heartbeat, RaftRoleWire,
};
