//! The heartbeat service: one tokio task that sends heartbeats, receives them, feeds the
//! detector and publishes the peer view.
//!
//! One task, one socket, one timer. Sending and receiving share the task because both need the
//! detector (the sender asks it for the echo of each peer, the receiver feeds it), so no lock is
//! needed, and an idle service wakes only once per `heartbeat_interval` plus once per datagram.
//! The single timer is re-armed for whichever comes first: the next sending round or the next
//! liveness transition the detector predicts, so an Alive → Suspect → Dead change is published
//! at the moment it happens, without traffic and without waiting for the next round.
//!
//! Sending never waits: a datagram the kernel cannot take right now is dropped and counted
//! (`send_errors`). A late heartbeat is worth nothing and must not delay the receive path.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::detector::{
    Detector, DetectorConfig, DetectorError, LocalIdentity, Observation, PeerView,
};
use super::seal::{KeySlot, OpenError, ReplayVerdict, ReplayWindow, Sealer, NONCE_BYTES};
use super::socket::{self, SocketError};
use super::wire::{self, DecodeError, Heartbeat, RaftRoleWire, MAX_DATAGRAM_BYTES};
use crate::types::{Epoch, LogIndex, NodeId, NodeRole, ResourceHealth, ServiceReport, Term};

/// Dropped datagrams of one reason are logged at most this often; the counters count them all.
pub const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// After a receive error the receive path pauses this long, so a persistent socket error
/// cannot spin the task at 100% CPU.
pub const RECV_ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Receive buffer: one byte more than the largest valid datagram, so that a longer one shows as
/// filling the buffer and is counted as oversized instead of being parsed truncated.
const DATAGRAM_BUFFER_BYTES: usize = MAX_DATAGRAM_BYTES + 1;

/// What this node tells its peers about itself in every heartbeat. The owner (consensus,
/// resource monitor) updates it through a `watch` channel; each sending round reads the latest.
/// The default (term 0, learner, no leader, nothing applied, health unknown) is what a node
/// knows before Raft has started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalStatus {
    pub term: Term,
    pub raft_state: RaftRoleWire,
    pub leader_id: Option<NodeId>,
    /// `Some(epoch)` while this node acts as primary at that epoch.
    pub primary_epoch: Option<Epoch>,
    pub applied_index: LogIndex,
    pub health: ResourceHealth,
    /// The local monitor's last service report.
    pub service: ServiceReport,
    /// The report was taken after this node lost the primary of this epoch.
    pub report_after_loss: Option<Epoch>,
}

/// Everything the service needs to run.
#[derive(Clone, Debug)]
pub struct HeartbeatParams {
    /// Hashed into every heartbeat: nodes of other clusters sharing the network are ignored.
    pub cluster_name: String,
    pub local: NodeId,
    pub member_role: NodeRole,
    /// Where to listen (`listen.heartbeat`). Ignored by `start_with_socket`.
    pub bind: SocketAddr,
    /// Every other node with its heartbeat addresses, one per link. A datagram is accepted only
    /// from one of these addresses (the address the peer binds), so a peer with several links
    /// should bind the wildcard address: the kernel then sends on each network from that
    /// network's address.
    pub peers: Vec<(NodeId, Vec<SocketAddr>)>,
    pub detector: DetectorConfig,
    /// Heartbeat keys derived from the cluster secret; `None` sends and accepts plaintext
    /// (development only: anyone on the network can then forge heartbeats).
    pub auth: Option<HeartbeatAuth>,
    /// This process's incarnation, sent in every heartbeat: higher at every start of the node
    /// (the daemon persists a counter, `DataDir::next_incarnation`), so peers take a new value
    /// for a restart and refuse recordings of an earlier life.
    pub incarnation: u64,
}

/// The heartbeat AEAD keys (see `config::secret` and `seal`). Debug never prints them.
#[derive(Clone)]
pub struct HeartbeatAuth {
    /// From `secret_file`: every datagram is sealed with it (unless the peer still uses the
    /// previous one), and it is tried first when opening.
    pub current: [u8; 32],
    /// From `previous_secret_file`, during a rotation: accepted too.
    pub previous: Option<[u8; 32]>,
}

impl std::fmt::Debug for HeartbeatAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeartbeatAuth")
            .field("previous", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

/// Counters of the service, readable at any time (metrics endpoint, tests).
#[derive(Debug, Default)]
pub struct HeartbeatStats {
    /// Datagrams handed to the kernel.
    pub sent: AtomicU64,
    /// Datagrams read from the socket, valid or not.
    pub received: AtomicU64,
    /// Bytes of the datagrams counted in `sent` (UDP payload, as handed to the kernel).
    pub sent_bytes: AtomicU64,
    /// Bytes of the datagrams counted in `received` (UDP payload).
    pub received_bytes: AtomicU64,
    /// Not a heartbeat of this version: bad magic, version, or payload.
    pub dropped_malformed: AtomicU64,
    /// Longer than `MAX_DATAGRAM_BYTES`.
    pub dropped_oversized: AtomicU64,
    /// Another cluster, addressed to another node, or from an address not configured for the
    /// sender.
    pub dropped_foreign: AtomicU64,
    /// From a node id that is not a configured peer.
    pub dropped_unknown_peer: AtomicU64,
    /// Duplicate, reordered, or from a previous incarnation of the sender.
    pub dropped_stale: AtomicU64,
    /// Failed authentication (wrong secret, tampered) or plaintext while a secret is set.
    pub dropped_unauthenticated: AtomicU64,
    /// Authenticated but replayed: duplicate, too far behind, or from an older incarnation
    /// (the replay window of `seal`).
    pub dropped_replayed: AtomicU64,
    /// Datagrams that could not be sent (no route, buffer full, encoding failed).
    pub send_errors: AtomicU64,
    /// Errors reading the socket.
    pub recv_errors: AtomicU64,
}

/// A plain copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub sent: u64,
    pub received: u64,
    pub sent_bytes: u64,
    pub received_bytes: u64,
    pub dropped_malformed: u64,
    pub dropped_oversized: u64,
    pub dropped_foreign: u64,
    pub dropped_unknown_peer: u64,
    pub dropped_stale: u64,
    pub dropped_unauthenticated: u64,
    pub dropped_replayed: u64,
    pub send_errors: u64,
    pub recv_errors: u64,
}

impl HeartbeatStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            sent: get(&self.sent),
            received: get(&self.received),
            sent_bytes: get(&self.sent_bytes),
            received_bytes: get(&self.received_bytes),
            dropped_malformed: get(&self.dropped_malformed),
            dropped_oversized: get(&self.dropped_oversized),
            dropped_foreign: get(&self.dropped_foreign),
            dropped_unknown_peer: get(&self.dropped_unknown_peer),
            dropped_stale: get(&self.dropped_stale),
            dropped_unauthenticated: get(&self.dropped_unauthenticated),
            dropped_replayed: get(&self.dropped_replayed),
            send_errors: get(&self.send_errors),
            recv_errors: get(&self.recv_errors),
        }
    }

    fn counter(&self, reason: DropReason) -> &AtomicU64 {
        match reason {
            DropReason::Malformed => &self.dropped_malformed,
            DropReason::Oversized => &self.dropped_oversized,
            DropReason::Foreign => &self.dropped_foreign,
            DropReason::UnknownPeer => &self.dropped_unknown_peer,
            DropReason::Stale => &self.dropped_stale,
            DropReason::Unauthenticated => &self.dropped_unauthenticated,
            DropReason::Replayed => &self.dropped_replayed,
            DropReason::SendError => &self.send_errors,
            DropReason::RecvError => &self.recv_errors,
        }
    }

    fn bump(&self, reason: DropReason) {
        self.counter(reason).fetch_add(1, Ordering::Relaxed);
    }
}

/// Why a datagram was dropped or an IO failed; one counter and one log rate limit each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    Malformed,
    Oversized,
    Foreign,
    UnknownPeer,
    Stale,
    SendError,
    RecvError,
    Unauthenticated,
    Replayed,
}

impl DropReason {
    pub const ALL: [DropReason; 9] = [
        DropReason::Malformed,
        DropReason::Oversized,
        DropReason::Foreign,
        DropReason::UnknownPeer,
        DropReason::Stale,
        DropReason::SendError,
        DropReason::RecvError,
        DropReason::Unauthenticated,
        DropReason::Replayed,
    ];

    fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Oversized => "oversized",
            DropReason::Foreign => "foreign",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::Stale => "stale",
            DropReason::SendError => "send_error",
            DropReason::RecvError => "recv_error",
            DropReason::Unauthenticated => "unauthenticated",
            DropReason::Replayed => "replayed",
        }
    }
}

/// Lets one log line per reason through per `interval`, and counts what it held back, so a
/// flood of junk on the heartbeat port cannot flood the journal. Pure: `now` is passed in.
#[derive(Clone, Debug)]
pub struct LogRateLimiter {
    interval: Duration,
    last_logged: [Option<Instant>; DropReason::ALL.len()],
    suppressed: [u64; DropReason::ALL.len()],
}

impl LogRateLimiter {
    pub fn new(interval: Duration) -> Self {
        LogRateLimiter {
            interval,
            last_logged: [None; DropReason::ALL.len()],
            suppressed: [0; DropReason::ALL.len()],
        }
    }

    /// `Some(n)` if an event of `reason` may be logged now, `n` being how many were suppressed
    /// since the last one logged; `None` if it must be suppressed.
    pub fn allow(&mut self, reason: DropReason, now: Instant) -> Option<u64> {
        let i = reason.index();
        let due = match self.last_logged[i] {
            None => true,
            Some(at) => now.saturating_duration_since(at) >= self.interval,
        };
        if due {
            self.last_logged[i] = Some(now);
            Some(std::mem::take(&mut self.suppressed[i]))
        } else {
            self.suppressed[i] = self.suppressed[i].saturating_add(1);
            None
        }
    }
}

/// Why the service could not start. Messages name the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error("invalid heartbeat settings: {0}")]
    Detector(#[from] DetectorError),
    #[error(
        "heartbeat address {addr} is listed for both node {first} and node {second}; \
         every address must belong to exactly one node"
    )]
    DuplicateAddress {
        addr: SocketAddr,
        first: NodeId,
        second: NodeId,
    },
    #[error("the cluster name is empty; set the cluster name in the configuration")]
    EmptyClusterName,
    #[error("no tokio runtime: the heartbeat service must be started from within a tokio runtime")]
    NoRuntime,
    #[error("cannot read the local address of the heartbeat socket: {0}")]
    LocalAddr(#[source] io::Error),
}

/// IPv4 peers seen through a dual-stack IPv6 socket appear as `::ffff:a.b.c.d`; compare them
/// as the IPv4 addresses the configuration lists.
fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// The running service. Dropping it stops the task too.
#[derive(Debug)]
pub struct HeartbeatHandle {
    /// The latest peer view: republished on every material change and at least every
    /// `heartbeat_interval`.
    pub view: watch::Receiver<PeerView>,
    pub stats: Arc<HeartbeatStats>,
    local_addr: SocketAddr,
    incarnation: u64,
    /// `true` asks the task to stop.
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl HeartbeatHandle {
    /// The address the socket is bound to (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This process's incarnation as sent in every heartbeat.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Ask the task to stop sending and receiving. Returns at once; the task ends (and closes
    /// the socket) at its next wake-up, which the request itself triggers. Idempotent.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// Stop and wait until the task has ended and the socket is closed (so the address can be
    /// bound again).
    pub async fn shutdown_and_wait(mut self) {
        self.shutdown();
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                if e.is_panic() {
                    tracing::error!(error = %e, "heartbeat task panicked");
                }
            }
        }
    }
}

impl Drop for HeartbeatHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Entry points; the service itself is the task they spawn.
pub struct HeartbeatService;

impl HeartbeatService {
    /// Bind `params.bind` and start the task on the current tokio runtime.
    pub async fn start(
        params: HeartbeatParams,
        local_status: watch::Receiver<LocalStatus>,
    ) -> Result<HeartbeatHandle, HeartbeatError> {
        let socket = socket::bind_std(params.bind)?;
        Self::start_with_socket(socket, params, local_status)
    }

    /// Start on an already bound socket (tests bind port 0 first to learn the addresses).
    /// `params.bind` is ignored. Not async, so it can be called from synchronous code, but it
    /// must run within a tokio runtime context (else `NoRuntime`).
    pub fn start_with_socket(
        socket: std::net::UdpSocket,
        params: HeartbeatParams,
        local_status: watch::Receiver<LocalStatus>,
    ) -> Result<HeartbeatHandle, HeartbeatError> {
        if params.cluster_name.is_empty() {
            return Err(HeartbeatError::EmptyClusterName);
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| HeartbeatError::NoRuntime)?;
        let mut by_addr: HashMap<SocketAddr, (NodeId, usize)> = HashMap::new();
        for (peer, addrs) in &params.peers {
            for (link, addr) in addrs.iter().enumerate() {
                if let Some(&(first, _)) = by_addr.get(&normalize(*addr)) {
                    return Err(HeartbeatError::DuplicateAddress {
                        addr: *addr,
                        first,
                        second: *peer,
                    });
                }
                by_addr.insert(normalize(*addr), (*peer, link));
            }
        }
        let incarnation = params.incarnation;
        // Read through tokio's clock, like the task does, so that tests with paused time see
        // one consistent clock.
        let now = std_now();
        let local = LocalIdentity {
            id: params.local,
            incarnation,
            clock_origin: now,
        };
        let links: Vec<(NodeId, usize)> =
            params.peers.iter().map(|(id, a)| (*id, a.len())).collect();
        let detector = Detector::new(params.detector, local, &links)?;

        let local_addr = socket.local_addr().map_err(HeartbeatError::LocalAddr)?;
        let socket = {
            let _guard = runtime.enter();
            socket::into_tokio(socket)?
        };
        let (view_tx, view_rx) = watch::channel(detector.view(now));
        let stats = Arc::new(HeartbeatStats::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let state = ServiceState {
            cluster_id: wire::cluster_id(&params.cluster_name),
            member_role: params.member_role,
            peers: params.peers,
            by_addr,
            detector,
            socket,
            stats: Arc::clone(&stats),
            view_tx,
            local_status,
            seq: 0,
            log_limiter: LogRateLimiter::new(DROP_LOG_INTERVAL),
            sealer: params
                .auth
                .as_ref()
                .map(|a| Sealer::new(&a.current, a.previous.as_ref())),
            replay: ReplayWindow::new(),
            peer_slot: HashMap::new(),
        };
        tracing::info!(
            node = params.local,
            %local_addr,
            incarnation,
            peers = state.peers.len(),
            authenticated = state.sealer.is_some(),
            "heartbeat service started"
        );
        let task = runtime.spawn(state.run(stop_rx));
        Ok(HeartbeatHandle {
            view: view_rx,
            stats,
            local_addr,
            incarnation,
            stop: stop_tx,
            task: Some(task),
        })
    }
}

struct ServiceState {
    cluster_id: u64,
    member_role: NodeRole,
    peers: Vec<(NodeId, Vec<SocketAddr>)>,
    /// Normalized source address → (peer, link index).
    by_addr: HashMap<SocketAddr, (NodeId, usize)>,
    detector: Detector,
    socket: tokio::net::UdpSocket,
    stats: Arc<HeartbeatStats>,
    view_tx: watch::Sender<PeerView>,
    local_status: watch::Receiver<LocalStatus>,
    /// Sending round counter: the same value on every datagram of one round.
    seq: u64,
    log_limiter: LogRateLimiter,
    /// `Some` when a cluster secret is configured: datagrams are sealed and must be.
    sealer: Option<Sealer>,
    /// Replay protection of authenticated datagrams (meaningless without a secret).
    replay: ReplayWindow,
    /// During a rotation: the key each peer last sealed with, so we answer it in a key it
    /// can open (a peer not yet given the new secret only knows the old one).
    peer_slot: HashMap<NodeId, KeySlot>,
}

fn std_now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl ServiceState {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let interval = self.detector.config().heartbeat_interval;
        let mut buf = [0u8; DATAGRAM_BUFFER_BYTES];
        let mut next_send = std_now();
        let mut recv_paused_until: Option<Instant> = None;
        let timer = tokio::time::sleep_until(tokio::time::Instant::from_std(next_send));
        tokio::pin!(timer);
        loop {
            let now = std_now();
            let mut deadline = next_send;
            if let Some(t) = self.detector.next_transition(now) {
                deadline = deadline.min(t);
            }
            if let Some(t) = recv_paused_until {
                deadline = deadline.min(t);
            }
            timer
                .as_mut()
                .reset(tokio::time::Instant::from_std(deadline));
            let recv_enabled = recv_paused_until.is_none();
            tokio::select! {
                // A closed channel (handle gone) stops the task as well.
                _ = stop.wait_for(|stop| *stop) => break,
                _ = &mut timer => {
                    let now = std_now();
                    if recv_paused_until.is_some_and(|t| now >= t) {
                        recv_paused_until = None;
                    }
                    if now >= next_send {
                        self.send_round(now);
                        next_send += interval;
                        if next_send <= now {
                            // We were paused longer than an interval: resume the rhythm from
                            // now rather than sending a burst of catch-up rounds.
                            next_send = now + interval;
                        }
                    }
                    self.publish(now);
                }
                res = self.socket.recv_from(&mut buf), if recv_enabled => {
                    let now = std_now();
                    match res {
                        Ok((len, src)) => self.on_datagram(now, &buf[..len], src),
                        Err(e) => {
                            self.drop_event(now, DropReason::RecvError, None, &e.to_string());
                            recv_paused_until = Some(now + RECV_ERROR_BACKOFF);
                        }
                    }
                }
            }
        }
        tracing::info!(node = self.detector.local().id, "heartbeat service stopped");
    }

    fn publish(&self, now: Instant) {
        self.view_tx.send_replace(self.detector.view(now));
    }

    /// Count a dropped datagram (or IO error) and log it if the rate limit allows.
    fn drop_event(
        &mut self,
        now: Instant,
        reason: DropReason,
        addr: Option<SocketAddr>,
        detail: &str,
    ) {
        self.stats.bump(reason);
        if let Some(suppressed) = self.log_limiter.allow(reason, now) {
            let addr = addr.map(|a| a.to_string()).unwrap_or_default();
            tracing::warn!(
                reason = reason.as_str(),
                addr,
                suppressed_since_last_log = suppressed,
                "heartbeat datagram dropped: {detail}"
            );
        }
    }

    fn send_round(&mut self, now: Instant) {
        self.seq = self.seq.wrapping_add(1);
        let status = self.local_status.borrow().clone();
        let local = *self.detector.local();
        for i in 0..self.peers.len() {
            let peer = self.peers[i].0;
            let hb = Heartbeat {
                cluster_id: self.cluster_id,
                from: local.id,
                to: peer,
                incarnation: local.incarnation,
                seq: self.seq,
                term: status.term,
                member_role: self.member_role,
                raft_state: status.raft_state,
                leader_id: status.leader_id,
                primary_epoch: status.primary_epoch,
                applied_index: status.applied_index,
                health: status.health,
                service: status.service,
                report_after_loss: status.report_after_loss,
                sent_mono_ns: local.mono_ns(now),
                echo: self.detector.echo_for(peer, now),
            };
            let encoded = match &self.sealer {
                Some(sealer) => {
                    let slot = self.peer_slot.get(&peer).copied().unwrap_or_default();
                    let nonce: [u8; NONCE_BYTES] = rand::random();
                    sealer.seal(&hb, slot, nonce)
                }
                None => wire::encode(&hb),
            };
            let bytes = match encoded {
                Ok(b) => b,
                Err(e) => {
                    self.drop_event(now, DropReason::SendError, None, &e.to_string());
                    continue;
                }
            };
            for link in 0..self.peers[i].1.len() {
                let addr = self.peers[i].1[link];
                match self.socket.try_send_to(&bytes, addr) {
                    Ok(n) => {
                        self.stats.sent.fetch_add(1, Ordering::Relaxed);
                        self.stats.sent_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        let detail = format!("cannot send to node {peer} at {addr}: {e}");
                        self.drop_event(now, DropReason::SendError, Some(addr), &detail);
                    }
                }
            }
        }
    }

    fn on_datagram(&mut self, now: Instant, bytes: &[u8], src: SocketAddr) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        self.stats
            .received_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let decoded = match &self.sealer {
            Some(sealer) => sealer.open(bytes).map(|(hb, slot)| (hb, Some(slot))),
            None => wire::decode(bytes)
                .map(|hb| (hb, None))
                .map_err(OpenError::Inner),
        };
        let (hb, slot) = match decoded {
            Ok(x) => x,
            Err(OpenError::TooLong { len } | OpenError::Inner(DecodeError::TooLong { len })) => {
                // `len` is the buffer size: the datagram was at least that long.
                let detail = format!("datagram of {len}+ bytes exceeds {MAX_DATAGRAM_BYTES}");
                self.drop_event(now, DropReason::Oversized, Some(src), &detail);
                return;
            }
            Err(e @ (OpenError::Unauthenticated | OpenError::Plaintext)) => {
                self.drop_event(now, DropReason::Unauthenticated, Some(src), &e.to_string());
                return;
            }
            Err(OpenError::Inner(e)) => {
                self.drop_event(now, DropReason::Malformed, Some(src), &e.to_string());
                return;
            }
            Err(e) => {
                self.drop_event(now, DropReason::Malformed, Some(src), &e.to_string());
                return;
            }
        };
        if hb.cluster_id != self.cluster_id {
            let detail = "heartbeat of another cluster (cluster name differs); check the cluster name on that node";
            self.drop_event(now, DropReason::Foreign, Some(src), detail);
            return;
        }
        let local_id = self.detector.local().id;
        if hb.to != local_id {
            let detail = format!(
                "heartbeat for node {} reached node {local_id}; check that node's peer addresses",
                hb.to
            );
            self.drop_event(now, DropReason::Foreign, Some(src), &detail);
            return;
        }
        if !self.peers.iter().any(|(id, _)| *id == hb.from) {
            let detail = format!(
                "heartbeat from node {} which is not a configured peer",
                hb.from
            );
            self.drop_event(now, DropReason::UnknownPeer, Some(src), &detail);
            return;
        }
        let link_index = match self.by_addr.get(&normalize(src)) {
            Some(&(peer, link_index)) if peer == hb.from => link_index,
            _ => {
                let detail = format!(
                    "heartbeat claiming node {} from an address not configured for it",
                    hb.from
                );
                self.drop_event(now, DropReason::Foreign, Some(src), &detail);
                return;
            }
        };
        if let Some(slot) = slot {
            // Authenticated and from a configured (peer, link): now the replay check, whose
            // state therefore only ever holds configured pairs.
            let verdict = self
                .replay
                .admit(hb.from, link_index, hb.incarnation, hb.seq);
            if verdict != ReplayVerdict::Fresh {
                let detail = format!(
                    "replayed heartbeat from node {} ({verdict:?}: incarnation {}, seq {}); \
                     if that node's clock was stepped back before it restarted, restart this node too",
                    hb.from, hb.incarnation, hb.seq
                );
                self.drop_event(now, DropReason::Replayed, Some(src), &detail);
                return;
            }
            if self.peer_slot.insert(hb.from, slot) != Some(slot) && slot == KeySlot::Previous {
                tracing::info!(
                    node = hb.from,
                    "peer seals heartbeats with the previous secret: answering it with that one until it is given the new secret"
                );
            }
        }
        match self.detector.observe(now, hb.from, link_index, &hb) {
            Observation::Accepted { restarted, changed } => {
                if restarted {
                    tracing::info!(
                        node = hb.from,
                        incarnation = hb.incarnation,
                        "peer restarted"
                    );
                }
                if changed {
                    self.publish(now);
                }
            }
            Observation::Stale => {
                let detail = format!(
                    "duplicate or reordered heartbeat seq {} from node {}",
                    hb.seq, hb.from
                );
                self.drop_event(now, DropReason::Stale, Some(src), &detail);
            }
            Observation::UnknownPeer => {
                let detail = format!(
                    "heartbeat from node {} which is not a configured peer",
                    hb.from
                );
                self.drop_event(now, DropReason::UnknownPeer, Some(src), &detail);
            }
            Observation::UnknownLink | Observation::Misaddressed => {
                self.drop_event(
                    now,
                    DropReason::Foreign,
                    Some(src),
                    "misaddressed heartbeat",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
