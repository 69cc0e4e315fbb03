//! The failure detector: pure bookkeeping of heartbeats received, per peer and per link.
//!
//! Sans-IO: it reads no clock and owns no socket. The caller passes `now` to every method and
//! feeds it the heartbeats the socket delivered; the detector answers "who is alive, suspect or
//! dead, since when, and how far away". That keeps every timing rule testable with synthetic
//! time, down to the exact nanosecond of each boundary.
//!
//! Rules:
//! - A link is `Alive` while its last heartbeat is younger than `suspect_after`, `Suspect` while
//!   younger than `dead_after`, `Dead` after that, and `Unknown` before it was ever heard.
//! - A node's state is the best state of its links: it is dead only when every link is silent,
//!   so losing one network never fails a node over while another network still reaches it.
//! - Per link, a heartbeat whose `seq` is not above the highest seen on that link (within the
//!   sender's current incarnation) is a duplicate or reordered datagram and is ignored.
//! - A new incarnation means the sender restarted: its sequence tracking starts afresh and the
//!   restart is counted. Datagrams of the few previous incarnations are stale, so a datagram
//!   of the old process delayed past the restart cannot flip the peer back.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::wire::{Echo, Heartbeat};
use crate::types::NodeId;

/// Below this the heartbeat rate would burn CPU and bandwidth for nothing.
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(1);

/// Most peers one detector tracks. quorate clusters are a few nodes; a bound keeps every
/// per-round loop and every published view small.
pub const MAX_PEERS: usize = 64;

/// Most links (addresses) per peer.
pub const MAX_LINKS_PER_PEER: usize = 8;

/// How many previous incarnations of a peer are remembered to reject their late datagrams.
pub const RETIRED_INCARNATIONS_KEPT: usize = 4;

/// RTT samples above this are discarded as nonsense (a corrupted or bogus echo), so that one
/// bad sample cannot poison the average for minutes.
pub const MAX_RTT_SAMPLE: Duration = Duration::from_secs(10);

/// The RTT average moves by 1/2^RTT_EWMA_SHIFT = 1/8 of each new sample's difference (the
/// smoothing of TCP's SRTT, RFC 6298): quick enough to follow a changed path, smooth enough to
/// ignore one delayed datagram.
pub const RTT_EWMA_SHIFT: u32 = 3;

/// Timings of failure detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetectorConfig {
    /// How often every node sends a heartbeat on every link.
    pub heartbeat_interval: Duration,
    /// Silence after which a link (or node) is suspect.
    pub suspect_after: Duration,
    /// Silence after which a link (or node) is dead.
    pub dead_after: Duration,
}

impl DetectorConfig {
    /// Check the timings make sense together.
    pub fn validate(&self) -> Result<(), DetectorError> {
        if self.heartbeat_interval < MIN_HEARTBEAT_INTERVAL {
            return Err(DetectorError::IntervalTooShort {
                interval: self.heartbeat_interval,
            });
        }
        if self.suspect_after <= self.heartbeat_interval {
            return Err(DetectorError::SuspectNotAfterInterval {
                suspect_after: self.suspect_after,
                interval: self.heartbeat_interval,
            });
        }
        if self.dead_after <= self.suspect_after {
            return Err(DetectorError::DeadNotAfterSuspect {
                dead_after: self.dead_after,
                suspect_after: self.suspect_after,
            });
        }
        Ok(())
    }
}

/// Why a detector could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectorError {
    #[error(
        "heartbeat interval {interval:?} is below the minimum {MIN_HEARTBEAT_INTERVAL:?}; \
         raise the heartbeat interval"
    )]
    IntervalTooShort { interval: Duration },
    #[error(
        "suspect_after ({suspect_after:?}) must exceed the heartbeat interval ({interval:?}), \
         else every peer looks suspect between two heartbeats; raise suspect_after"
    )]
    SuspectNotAfterInterval {
        suspect_after: Duration,
        interval: Duration,
    },
    #[error(
        "dead_after ({dead_after:?}) must exceed suspect_after ({suspect_after:?}); \
         raise dead_after or lower suspect_after"
    )]
    DeadNotAfterSuspect {
        dead_after: Duration,
        suspect_after: Duration,
    },
    #[error("{count} peers exceed the limit of {MAX_PEERS}; list fewer peers")]
    TooManyPeers { count: usize },
    #[error("peer {peer} is listed twice; list every peer once with all its addresses")]
    DuplicatePeer { peer: NodeId },
    #[error("peer list contains the local node {peer}; list only the other nodes")]
    PeerIsLocal { peer: NodeId },
    #[error(
        "peer {peer} has {links} links; it needs between 1 and {MAX_LINKS_PER_PEER} addresses"
    )]
    BadLinkCount { peer: NodeId, links: usize },
}

/// How alive a link or node looks. Ordered worst to best, so a node's state is the `max` of
/// its links' states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Liveness {
    /// Never heard since this process started. Treat as dead for decisions.
    Unknown,
    Dead,
    Suspect,
    Alive,
}

impl Liveness {
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Unknown => "unknown",
            Liveness::Dead => "dead",
            Liveness::Suspect => "suspect",
            Liveness::Alive => "alive",
        }
    }

    /// Whether decisions (failover, early elections) should treat it as gone.
    pub fn counts_as_dead(self) -> bool {
        matches!(self, Liveness::Unknown | Liveness::Dead)
    }
}

impl std::fmt::Display for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who we are: needed to check addressees and to read our own timestamps echoed back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalIdentity {
    pub id: NodeId,
    /// Our incarnation (random per process start); echoes of other incarnations are ignored.
    pub incarnation: u64,
    /// The instant our `sent_mono_ns` timestamps count from.
    pub clock_origin: Instant,
}

impl LocalIdentity {
    /// Our monotonic timestamp of `at`, as carried in `Heartbeat::sent_mono_ns`.
    pub fn mono_ns(&self, at: Instant) -> u64 {
        duration_ns(at.saturating_duration_since(self.clock_origin))
    }
}

/// A Duration in ns, saturating (u64 ns is 584 years).
fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What the detector made of one heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observation {
    /// Taken into account. `restarted`: the sender has a new incarnation. `changed`: something a
    /// watcher cares about changed (a link's or the node's liveness, a restart, or the sender's
    /// term, role, raft state, leader, primary claim or health), so the view should be
    /// republished now rather than at the next periodic publication.
    Accepted { restarted: bool, changed: bool },
    /// Duplicate, reordered, or from a retired incarnation of the sender.
    Stale,
    /// The peer id is not one the detector tracks.
    UnknownPeer,
    /// The link index is out of range for that peer.
    UnknownLink,
    /// `from` is not the peer it was attributed to, or `to` is not us.
    Misaddressed,
}

/// Everything known about one peer at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub id: NodeId,
    /// Best of `links`.
    pub state: Liveness,
    /// One entry per configured link, in configuration order.
    pub links: Vec<Liveness>,
    /// Time since the last accepted heartbeat on any link; `None` if never heard.
    pub last_seen_age: Option<Duration>,
    /// Smoothed round-trip time; `None` until the first echo came back.
    pub rtt: Option<Duration>,
    /// The newest heartbeat received (by sequence, across links): term, applied index,
    /// health, primary claim, leader.
    pub last: Option<Heartbeat>,
    pub incarnation: Option<u64>,
    /// Incarnation changes seen since this process started.
    pub restarts: u64,
    /// When the node became dead on every link (its last heartbeat + `dead_after`); `Some` only
    /// while `state == Dead`. Lets callers schedule from the exact moment, not from when they
    /// happened to look.
    pub dead_since: Option<Instant>,
}

/// The detector's view of every peer at `at`, sorted by peer id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    /// When the view was computed: ages and states are as of this instant.
    pub at: Instant,
    pub peers: Vec<PeerStatus>,
}

impl PeerView {
    pub fn peer(&self, id: NodeId) -> Option<&PeerStatus> {
        self.peers.iter().find(|p| p.id == id)
    }
}

#[derive(Clone, Debug, Default)]
struct LinkState {
    last_heard: Option<Instant>,
    /// Highest sequence accepted on this link in the peer's current incarnation.
    highest_seq: Option<u64>,
}

#[derive(Clone, Debug)]
struct PeerState {
    id: NodeId,
    links: Vec<LinkState>,
    incarnation: Option<u64>,
    retired: VecDeque<u64>,
    restarts: u64,
    /// Newest heartbeat (by seq across links) and when we received it, for the view and echo.
    last: Option<(Heartbeat, Instant)>,
    srtt_ns: Option<u64>,
}

impl PeerState {
    fn latest_heard(&self) -> Option<Instant> {
        self.links.iter().filter_map(|l| l.last_heard).max()
    }
}

/// The failure detector for all peers of one node.
#[derive(Clone, Debug)]
pub struct Detector {
    cfg: DetectorConfig,
    local: LocalIdentity,
    /// Sorted by id.
    peers: Vec<PeerState>,
}

impl Detector {
    /// `peers`: every other node with its number of links (addresses).
    pub fn new(
        cfg: DetectorConfig,
        local: LocalIdentity,
        peers: &[(NodeId, usize)],
    ) -> Result<Self, DetectorError> {
        cfg.validate()?;
        if peers.len() > MAX_PEERS {
            return Err(DetectorError::TooManyPeers { count: peers.len() });
        }
        let mut states: Vec<PeerState> = Vec::with_capacity(peers.len());
        for &(id, links) in peers {
            if id == local.id {
                return Err(DetectorError::PeerIsLocal { peer: id });
            }
            if !(1..=MAX_LINKS_PER_PEER).contains(&links) {
                return Err(DetectorError::BadLinkCount { peer: id, links });
            }
            if states.iter().any(|p| p.id == id) {
                return Err(DetectorError::DuplicatePeer { peer: id });
            }
            states.push(PeerState {
                id,
                links: vec![LinkState::default(); links],
                incarnation: None,
                retired: VecDeque::with_capacity(RETIRED_INCARNATIONS_KEPT),
                restarts: 0,
                last: None,
                srtt_ns: None,
            });
        }
        states.sort_by_key(|p| p.id);
        Ok(Detector {
            cfg,
            local,
            peers: states,
        })
    }

    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    pub fn local(&self) -> &LocalIdentity {
        &self.local
    }

    fn find(&self, peer: NodeId) -> Option<&PeerState> {
        self.peers
            .binary_search_by_key(&peer, |p| p.id)
            .ok()
            .map(|i| &self.peers[i])
    }

    fn link_liveness(&self, last_heard: Option<Instant>, now: Instant) -> Liveness {
        match last_heard {
            None => Liveness::Unknown,
            Some(at) => {
                let age = now.saturating_duration_since(at);
                if age < self.cfg.suspect_after {
                    Liveness::Alive
                } else if age < self.cfg.dead_after {
                    Liveness::Suspect
                } else {
                    Liveness::Dead
                }
            }
        }
    }

    fn node_liveness(&self, p: &PeerState, now: Instant) -> Liveness {
        p.links
            .iter()
            .map(|l| self.link_liveness(l.last_heard, now))
            .max()
            .unwrap_or(Liveness::Unknown)
    }

    /// Take one received heartbeat into account. `peer` is who the caller attributes it to
    /// (by source address), `link_index` the link it arrived on.
    pub fn observe(
        &mut self,
        now: Instant,
        peer: NodeId,
        link_index: usize,
        hb: &Heartbeat,
    ) -> Observation {
        let Ok(idx) = self.peers.binary_search_by_key(&peer, |p| p.id) else {
            return Observation::UnknownPeer;
        };
        if hb.from != peer || hb.to != self.local.id {
            return Observation::Misaddressed;
        }
        if link_index >= self.peers[idx].links.len() {
            return Observation::UnknownLink;
        }
        let node_before = self.node_liveness(&self.peers[idx], now);
        let link_before = self.link_liveness(self.peers[idx].links[link_index].last_heard, now);
        let local = self.local;
        let p = &mut self.peers[idx];

        if p.retired.contains(&hb.incarnation) {
            return Observation::Stale;
        }
        let restarted = match p.incarnation {
            Some(known) if known != hb.incarnation => {
                // The sender restarted: retire the old incarnation, forget its sequences.
                if p.retired.len() >= RETIRED_INCARNATIONS_KEPT {
                    p.retired.pop_front();
                }
                p.retired.push_back(known);
                for link in &mut p.links {
                    link.highest_seq = None;
                }
                p.restarts = p.restarts.saturating_add(1);
                true
            }
            _ => false,
        };
        p.incarnation = Some(hb.incarnation);

        let link = &mut p.links[link_index];
        if link.highest_seq.is_some_and(|high| hb.seq <= high) {
            return Observation::Stale;
        }
        link.highest_seq = Some(hb.seq);
        link.last_heard = Some(now);

        // The payload: keep the newest by sequence across links (a datagram new on a slow link
        // may be older than one already received on a fast link).
        let payload_changed = match &p.last {
            Some((prev, _)) if !restarted && hb.seq <= prev.seq => false,
            Some((prev, _)) => {
                let changed = prev.term != hb.term
                    || prev.member_role != hb.member_role
                    || prev.raft_state != hb.raft_state
                    || prev.leader_id != hb.leader_id
                    || prev.primary_epoch != hb.primary_epoch
                    || prev.health != hb.health;
                p.last = Some((hb.clone(), now));
                changed
            }
            None => {
                p.last = Some((hb.clone(), now));
                true
            }
        };

        if let Some(echo) = hb.echo {
            if let Some(sample_ns) = rtt_sample_ns(&local, now, &echo) {
                p.srtt_ns = Some(match p.srtt_ns {
                    None => sample_ns,
                    Some(srtt) => ewma_step(srtt, sample_ns),
                });
            }
        }

        let node_after = self.node_liveness(&self.peers[idx], now);
        let changed = restarted
            || payload_changed
            || node_before != node_after
            || link_before != Liveness::Alive;
        Observation::Accepted { restarted, changed }
    }

    /// The echo to put in our next heartbeat to `peer`: its last heartbeat's timestamp and how
    /// long we have held it.
    pub fn echo_for(&self, peer: NodeId, now: Instant) -> Option<Echo> {
        let (hb, received_at) = self.find(peer)?.last.as_ref()?;
        Some(Echo {
            peer_sent_mono_ns: hb.sent_mono_ns,
            held_ns: duration_ns(now.saturating_duration_since(*received_at)),
            incarnation: hb.incarnation,
        })
    }

    /// `peer`'s liveness at `now`; `None` for an unknown peer id.
    pub fn liveness(&self, peer: NodeId, now: Instant) -> Option<Liveness> {
        self.find(peer).map(|p| self.node_liveness(p, now))
    }

    /// When `peer` became dead on every link, if it is dead at `now`. `None` while any link is
    /// alive or suspect, and for a peer never heard (state `Unknown`: no transition happened).
    pub fn dead_since(&self, peer: NodeId, now: Instant) -> Option<Instant> {
        let p = self.find(peer)?;
        self.dead_since_of(p, now)
    }

    fn dead_since_of(&self, p: &PeerState, now: Instant) -> Option<Instant> {
        if self.node_liveness(p, now) != Liveness::Dead {
            return None;
        }
        p.latest_heard().map(|at| at + self.cfg.dead_after)
    }

    /// The earliest instant after `now` at which some link's liveness changes if nothing more
    /// is heard: the service wakes then to publish the transition without waiting a full
    /// interval. `None` when every heard link is already dead.
    pub fn next_transition(&self, now: Instant) -> Option<Instant> {
        self.peers
            .iter()
            .flat_map(|p| p.links.iter())
            .filter_map(|l| l.last_heard)
            .flat_map(|at| [at + self.cfg.suspect_after, at + self.cfg.dead_after])
            .filter(|&t| t > now)
            .min()
    }

    fn status_of(&self, p: &PeerState, now: Instant) -> PeerStatus {
        let links: Vec<Liveness> = p
            .links
            .iter()
            .map(|l| self.link_liveness(l.last_heard, now))
            .collect();
        PeerStatus {
            id: p.id,
            state: links.iter().copied().max().unwrap_or(Liveness::Unknown),
            links,
            last_seen_age: p.latest_heard().map(|at| now.saturating_duration_since(at)),
            rtt: p.srtt_ns.map(Duration::from_nanos),
            last: p.last.as_ref().map(|(hb, _)| hb.clone()),
            incarnation: p.incarnation,
            restarts: p.restarts,
            dead_since: self.dead_since_of(p, now),
        }
    }

    /// One peer's status at `now`.
    pub fn status(&self, peer: NodeId, now: Instant) -> Option<PeerStatus> {
        self.find(peer).map(|p| self.status_of(p, now))
    }

    /// Every peer's status at `now`.
    pub fn view(&self, now: Instant) -> PeerView {
        PeerView {
            at: now,
            peers: self.peers.iter().map(|p| self.status_of(p, now)).collect(),
        }
    }
}

/// RTT from an echo of our own timestamp: (now − our send time) − how long the peer held it.
/// `None` when the echo is of another incarnation of us, from our future, or absurd.
fn rtt_sample_ns(local: &LocalIdentity, now: Instant, echo: &Echo) -> Option<u64> {
    if echo.incarnation != local.incarnation {
        return None;
    }
    let sample = local
        .mono_ns(now)
        .checked_sub(echo.peer_sent_mono_ns)?
        .checked_sub(echo.held_ns)?;
    (sample <= duration_ns(MAX_RTT_SAMPLE)).then_some(sample)
}

/// srtt + (sample − srtt) / 8, in exact integer arithmetic.
fn ewma_step(srtt_ns: u64, sample_ns: u64) -> u64 {
    let srtt = i128::from(srtt_ns);
    let next = srtt + ((i128::from(sample_ns) - srtt) >> RTT_EWMA_SHIFT);
    u64::try_from(next.max(0)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
