//! Raft RPC over TCP: the client side (openraft's `RaftNetworkV2`) and the server side.
//!
//! One TCP connection per openraft client object (openraft keeps one per replication stream
//! and one for votes), reused across RPCs and re-dialled with jittered backoff after a
//! failure. With a cluster secret, every connection first runs the Noise handshake of
//! `secure` (a node with another secret fails there and never reaches Raft) and then carries
//! its frames encrypted; without one (development) frames travel in plaintext. Then comes a
//! `Hello` naming the cluster and both node ids, so a node of another cluster, or a stray
//! client, is dropped before it reaches Raft. Requests on a connection are answered in
//! order, one at a time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{AnyError, OptionalSend, RaftNetworkV2};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::io::BufReader;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::config::secret::KeySlot;
use crate::consensus::codec::{CodecError, SNAPSHOT_CHUNK_BYTES};
use crate::consensus::secure::{self, FrameConn, RaftKeys, SecureError};
use crate::consensus::snapshot::MAX_SNAPSHOT_BYTES;
use crate::consensus::types::{Raft, Snapshot, SnapshotData, SnapshotMeta, TypeConfig, Vote};
use crate::types::NodeId;
use crate::util::RateLimitedLog;

/// Least time an append RPC may take. openraft gives replication and heartbeats a timeout of
/// one Raft heartbeat interval (50 ms in the lan profile); a batch of large entries, a slow
/// fsync on the follower or a loaded CPU easily exceeds that, and cancelling the RPC then
/// throws away the follower's answer, drops the connection and retries the same batch
/// forever (nothing commits). Acknowledgements carry their send time, so a slow answer never
/// extends the leader lease beyond what was really acknowledged.
pub const MIN_APPEND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a dial may take before the peer counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a new connection has to introduce itself.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// Inbound Raft connections accepted at once (each openraft peer uses a handful).
pub const MAX_INBOUND_CONNECTIONS: usize = 64;
/// Inbound connections one peer (by node id, after the handshake) may hold at once. openraft
/// opens one per replication stream plus votes and snapshots, a handful; a peer past this is
/// misbehaving (or reconnecting in a loop) and must not starve the others of the global
/// limit.
pub const MAX_CONNECTIONS_PER_PEER: usize = 16;
/// First and largest wait before re-dialling a peer that could not be reached.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(10);
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Timeout for each snapshot chunk round trip.
pub const SNAPSHOT_CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

/// A stable 64-bit id for a cluster name (FNV-1a): carried in hellos and heartbeats so two
/// clusters sharing a network never talk to each other.
pub fn cluster_id(name: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

#[derive(Serialize, Deserialize, Debug)]
pub enum RpcRequest {
    Hello {
        cluster_id: u64,
        from: NodeId,
        to: NodeId,
    },
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    TransferLeader(TransferLeaderRequest<TypeConfig>),
    SnapshotChunk {
        offset: u64,
        total: u64,
        /// One memcpy-like byte run on the wire, not one serde call per byte.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    SnapshotDone {
        vote: Vote,
        meta: SnapshotMeta,
    },
}

#[derive(Serialize, Deserialize, Debug)]
pub enum RpcResponse {
    HelloOk,
    Append(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    TransferLeader(TransferLeaderResponse<TypeConfig>),
    ChunkOk,
    Snapshot(SnapshotResponse<TypeConfig>),
    /// The request was understood but could not be served (the message says why).
    Refused(String),
}

/// Counters for the Raft transport (exported by /metrics).
#[derive(Default, Debug)]
pub struct NetStats {
    pub frames_rejected: AtomicU64,
    pub handshakes_rejected: AtomicU64,
    pub connections_rejected: AtomicU64,
    pub dial_failures: AtomicU64,
}

/// Static facts the transport needs.
#[derive(Clone)]
pub struct NetParams {
    pub cluster_id: u64,
    pub local: NodeId,
    /// Raft address of every member (by id).
    pub peers: Arc<HashMap<NodeId, SocketAddr>>,
    pub stats: Arc<NetStats>,
    /// Noise PSKs from the cluster secret; `None` = plaintext (development only).
    pub keys: Option<Arc<RaftKeys>>,
    /// Set while this node re-seeds from its peers (`quorate recover --reseed`): it answers
    /// vote and pre-vote requests with a refusal until it has caught up.
    pub reseeding: crate::consensus::reseed_gate::ReseedFlag,
}

// ---------------------------------------------------------------------------------------------
// Client side

pub struct NetworkFactory {
    params: NetParams,
}

impl NetworkFactory {
    pub fn new(params: NetParams) -> Self {
        NetworkFactory { params }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &openraft::BasicNode) -> PeerClient {
        // Config is the source of truth for addresses; the membership's copy is a fallback.
        let addr = self
            .params
            .peers
            .get(&target)
            .copied()
            .or_else(|| node.addr.parse().ok());
        PeerClient {
            params: self.params.clone(),
            target,
            addr,
            conn: None,
            next_dial: None,
            backoff: RECONNECT_BACKOFF_MIN,
        }
    }
}

type Conn = FrameConn<BufReader<OwnedReadHalf>, OwnedWriteHalf>;

/// Dials `addr` and, with keys, runs the Noise handshake under `slot`'s key.
async fn connect(
    addr: SocketAddr,
    keys: Option<&RaftKeys>,
    slot: KeySlot,
    cluster_id: u64,
) -> Result<Conn, String> {
    let s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("dial {addr} timed out after {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| format!("dial {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let Some(keys) = keys else {
        return Ok(FrameConn::plain(r, w));
    };
    let handshake = secure::initiate(&mut r, &mut w, keys.key(slot), cluster_id);
    match tokio::time::timeout(HELLO_TIMEOUT, handshake).await {
        Ok(Ok(t)) => Ok(FrameConn::secure(r, w, t)),
        Ok(Err(e)) => Err(format!("secure handshake with {addr}: {e}")),
        Err(_) => Err(format!("secure handshake with {addr} timed out")),
    }
}

pub struct PeerClient {
    params: NetParams,
    target: NodeId,
    addr: Option<SocketAddr>,
    conn: Option<Conn>,
    /// After a failed dial, no new dial before this instant (jittered exponential backoff), so
    /// a dead peer costs one refused dial per backoff period, not one per RPC.
    next_dial: Option<Instant>,
    backoff: Duration,
}

fn unreachable<E: std::fmt::Display>(what: E) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(&AnyError::error(what.to_string())))
}

fn network_err<E: std::fmt::Display>(what: E) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&AnyError::error(what.to_string())))
}

impl PeerClient {
    async fn dial(&mut self) -> Result<Conn, RPCError<TypeConfig>> {
        let addr = self.addr.ok_or_else(|| {
            unreachable(format!("no raft address known for node {}", self.target))
        })?;
        if let Some(t) = self.next_dial {
            if Instant::now() < t {
                return Err(unreachable(format!(
                    "node {} at {addr}: backing off after a failed dial",
                    self.target
                )));
            }
        }
        let res = async {
            // During a rotation the key the peer last accepted goes first, and the other one
            // is tried when it fails (a peer not yet given the new secret knows only the old).
            let keys = self.params.keys.clone();
            let cluster_id = self.params.cluster_id;
            let slot = keys
                .as_deref()
                .map(|k| k.preferred(self.target))
                .unwrap_or_default();
            let mut conn = match connect(addr, keys.as_deref(), slot, cluster_id).await {
                Ok(c) => c,
                Err(first) => {
                    let other = match slot {
                        KeySlot::Current => KeySlot::Previous,
                        KeySlot::Previous => KeySlot::Current,
                    };
                    match keys.as_deref().filter(|k| k.previous.is_some()) {
                        Some(k) => match connect(addr, Some(k), other, cluster_id).await {
                            Ok(c) => {
                                tracing::info!(
                                    node = self.target,
                                    "raft handshake succeeded with the {} secret",
                                    if other == KeySlot::Previous {
                                        "previous"
                                    } else {
                                        "current"
                                    }
                                );
                                k.remember(self.target, other);
                                c
                            }
                            Err(_) => return Err(first),
                        },
                        None => return Err(first),
                    }
                }
            };
            let hello = RpcRequest::Hello {
                cluster_id: self.params.cluster_id,
                from: self.params.local,
                to: self.target,
            };
            let reply = tokio::time::timeout(HELLO_TIMEOUT, exchange(&mut conn, &hello))
                .await
                .map_err(|_| format!("handshake with {addr} timed out"))?
                .map_err(|e| format!("handshake with {addr}: {e}"))?;
            match reply {
                RpcResponse::HelloOk => Ok(conn),
                RpcResponse::Refused(why) => {
                    Err(format!("node {} refused the handshake: {why}", self.target))
                }
                other => Err(format!("unexpected handshake reply {other:?}")),
            }
        }
        .await;
        match res {
            Ok(c) => {
                self.next_dial = None;
                self.backoff = RECONNECT_BACKOFF_MIN;
                Ok(c)
            }
            Err(e) => {
                self.params
                    .stats
                    .dial_failures
                    .fetch_add(1, Ordering::Relaxed);
                if e.contains("secure handshake") {
                    secure::handshake_log().warn(
                        "raft-handshake-out",
                        format_args!(
                            "cannot open an authenticated raft connection to node {}: {e}",
                            self.target
                        ),
                    );
                }
                let jitter = rand::thread_rng().gen_range(0.5..1.5);
                self.next_dial = Some(Instant::now() + self.backoff.mul_f64(jitter));
                self.backoff = (self.backoff * 2).min(RECONNECT_BACKOFF_MAX);
                Err(unreachable(e))
            }
        }
    }

    /// Sends one request and waits for its response within `timeout`; any failure drops the
    /// connection (a half-read frame would desynchronise the stream).
    async fn call(
        &mut self,
        req: &RpcRequest,
        timeout: Duration,
    ) -> Result<RpcResponse, RPCError<TypeConfig>> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.dial().await?,
        };
        match tokio::time::timeout(timeout, exchange(&mut conn, req)).await {
            Ok(Ok(RpcResponse::Refused(why))) => {
                self.conn = Some(conn);
                Err(network_err(format!("node {} refused: {why}", self.target)))
            }
            Ok(Ok(resp)) => {
                self.conn = Some(conn);
                Ok(resp)
            }
            Ok(Err(e)) => Err(network_err(format!("rpc to node {}: {e}", self.target))),
            Err(_) => Err(network_err(format!(
                "rpc to node {} timed out after {timeout:?}",
                self.target
            ))),
        }
    }
}

async fn exchange(conn: &mut Conn, req: &RpcRequest) -> Result<RpcResponse, CodecError> {
    conn.send(req).await?;
    match conn.recv().await? {
        Some(r) => Ok(r),
        None => Err(CodecError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "peer closed the connection",
        ))),
    }
}

fn unexpected(resp: RpcResponse) -> RPCError<TypeConfig> {
    network_err(format!("unexpected response {resp:?}"))
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(
                &RpcRequest::Append(rpc),
                option.hard_ttl().max(MIN_APPEND_TIMEOUT),
            )
            .await?
        {
            RpcResponse::Append(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(&RpcRequest::Vote(rpc), option.hard_ttl()).await? {
            RpcResponse::Vote(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// The default pre-vote answers "granted" locally, which would make pre-vote useless: a
    /// partitioned node would still bump terms. Ask the peer for real.
    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(&RpcRequest::PreVote(rpc), option.hard_ttl())
            .await?
        {
            RpcResponse::Vote(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// The default fails, which would make every leadership transfer silently do nothing.
    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(&RpcRequest::TransferLeader(req), option.hard_ttl())
            .await?
        {
            RpcResponse::TransferLeader(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let data = snapshot.snapshot.into_inner();
        let total = data.len() as u64;
        let meta = snapshot.meta;
        let send = async {
            let mut offset = 0usize;
            loop {
                let end = (offset + SNAPSHOT_CHUNK_BYTES).min(data.len());
                let req = RpcRequest::SnapshotChunk {
                    offset: offset as u64,
                    total,
                    data: data[offset..end].to_vec(),
                };
                match self.call(&req, SNAPSHOT_CHUNK_TIMEOUT).await? {
                    RpcResponse::ChunkOk => {}
                    other => return Err(unexpected(other)),
                }
                offset = end;
                if offset >= data.len() {
                    break;
                }
            }
            match self
                .call(
                    &RpcRequest::SnapshotDone { vote, meta },
                    SNAPSHOT_CHUNK_TIMEOUT,
                )
                .await?
            {
                RpcResponse::Snapshot(r) => Ok(r),
                other => Err(unexpected(other)),
            }
        };
        tokio::pin!(cancel);
        tokio::select! {
            closed = &mut cancel => Err(StreamingError::Closed(closed)),
            res = send => res.map_err(|e| match e {
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                RPCError::Timeout(t) => StreamingError::Timeout(t),
                RPCError::Network(n) => StreamingError::Network(n),
                RPCError::RemoteError(r) => StreamingError::Network(NetworkError::new(&AnyError::error(r.to_string()))),
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Server side

/// Accepts Raft connections until the task is dropped.
pub async fn serve(listener: TcpListener, raft: Raft, params: NetParams) {
    let permits = Arc::new(Semaphore::new(MAX_INBOUND_CONNECTIONS));
    let per_peer = Arc::new(PeerConnections::default());
    let log = Arc::new(RateLimitedLog::new(Duration::from_secs(10)));
    loop {
        let (stream, peer_addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                log.warn(
                    "raft-accept",
                    format_args!("raft listener accept failed: {e}"),
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            params
                .stats
                .connections_rejected
                .fetch_add(1, Ordering::Relaxed);
            log.warn(
                "raft-conn-limit",
                format_args!("refusing raft connection from {peer_addr}: {MAX_INBOUND_CONNECTIONS} connections open (limit)"),
            );
            continue;
        };
        let raft = raft.clone();
        let params = params.clone();
        let log = log.clone();
        let per_peer = per_peer.clone();
        tokio::spawn(async move {
            if let Err(e) = handle_conn(stream, raft, &params, &per_peer).await {
                params.stats.frames_rejected.fetch_add(1, Ordering::Relaxed);
                log.warn(
                    "raft-conn",
                    format_args!("raft connection from {peer_addr} dropped: {e}"),
                );
            }
            drop(permit);
        });
    }
}

/// Open inbound connections per peer node (see `MAX_CONNECTIONS_PER_PEER`).
#[derive(Default)]
struct PeerConnections {
    open: std::sync::Mutex<HashMap<NodeId, usize>>,
}

/// One counted connection; uncounts itself when dropped.
struct PeerSlot<'a> {
    owner: &'a PeerConnections,
    peer: NodeId,
}

impl PeerConnections {
    /// `None` when `peer` already holds `MAX_CONNECTIONS_PER_PEER` connections.
    fn try_take(&self, peer: NodeId) -> Option<PeerSlot<'_>> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(peer).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_PEER {
            return None;
        }
        *n += 1;
        Some(PeerSlot { owner: self, peer })
    }
}

impl Drop for PeerSlot<'_> {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("{0}")]
    Codec(#[from] CodecError),
    #[error("handshake: {0}")]
    Handshake(String),
    #[error("secure handshake: {0}")]
    Secure(#[from] SecureError),
    #[error("no hello within {HELLO_TIMEOUT:?}")]
    HelloTimeout,
}

async fn handle_conn(
    stream: TcpStream,
    raft: Raft,
    params: &NetParams,
    per_peer: &PeerConnections,
) -> Result<(), ConnError> {
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut conn: Conn = match &params.keys {
        None => FrameConn::plain(r, w),
        Some(keys) => {
            let handshake = secure::respond(&mut r, &mut w, keys, params.cluster_id);
            let res = match tokio::time::timeout(HELLO_TIMEOUT, handshake).await {
                Ok(res) => res,
                Err(_) => {
                    params
                        .stats
                        .handshakes_rejected
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(ConnError::HelloTimeout);
                }
            };
            match res {
                Ok((t, _slot)) => FrameConn::secure(r, w, t),
                // Closed before saying anything: a port probe or a health check, not an attack.
                Err(SecureError::ClosedInHandshake) => return Ok(()),
                Err(e) => {
                    params
                        .stats
                        .handshakes_rejected
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(e.into());
                }
            }
        }
    };
    let hello: Option<RpcRequest> = tokio::time::timeout(HELLO_TIMEOUT, conn.recv())
        .await
        .map_err(|_| ConnError::HelloTimeout)??;
    // Held until the connection ends: it counts against the peer's MAX_CONNECTIONS_PER_PEER.
    let _peer_slot = match hello {
        None => return Ok(()),
        Some(RpcRequest::Hello {
            cluster_id,
            from,
            to,
        }) => {
            let problem = if cluster_id != params.cluster_id {
                Some("the peer belongs to another cluster (cluster name differs)".to_string())
            } else if to != params.local {
                Some(format!(
                    "the peer dialled node {to} but this is node {}",
                    params.local
                ))
            } else if !params.peers.contains_key(&from) {
                Some(format!("node {from} is not in this node's peer list"))
            } else {
                None
            };
            if let Some(p) = problem {
                params
                    .stats
                    .handshakes_rejected
                    .fetch_add(1, Ordering::Relaxed);
                let _ = conn.send(&RpcResponse::Refused(p.clone())).await;
                return Err(ConnError::Handshake(p));
            }
            let Some(slot) = per_peer.try_take(from) else {
                params
                    .stats
                    .connections_rejected
                    .fetch_add(1, Ordering::Relaxed);
                let p = format!(
                    "node {from} already holds {MAX_CONNECTIONS_PER_PEER} raft connections (MAX_CONNECTIONS_PER_PEER)"
                );
                let _ = conn.send(&RpcResponse::Refused(p.clone())).await;
                return Err(ConnError::Handshake(p));
            };
            conn.send(&RpcResponse::HelloOk).await?;
            slot
        }
        Some(other) => {
            return Err(ConnError::Handshake(format!(
                "expected hello, got {}",
                variant_name(&other)
            )))
        }
    };

    // Snapshot chunks of one transfer arrive in order on one connection.
    let mut snapshot_buf: Vec<u8> = Vec::new();
    loop {
        let Some(req) = conn.recv::<RpcRequest>().await? else {
            return Ok(());
        };
        let resp = match req {
            RpcRequest::Hello { .. } => RpcResponse::Refused("duplicate hello".into()),
            RpcRequest::Append(rpc) => match raft.append_entries(rpc).await {
                Ok(x) => RpcResponse::Append(x),
                Err(e) => RpcResponse::Refused(e.to_string()),
            },
            RpcRequest::Vote(_) | RpcRequest::PreVote(_)
                if !crate::rules::may_vote(params.reseeding.active()) =>
            {
                RpcResponse::Refused(format!(
                    "node {} is re-seeding from its peers and does not vote until it has caught up",
                    params.local
                ))
            }
            RpcRequest::Vote(rpc) => match raft.vote(rpc).await {
                Ok(x) => RpcResponse::Vote(x),
                Err(e) => RpcResponse::Refused(e.to_string()),
            },
            RpcRequest::PreVote(rpc) => match raft.pre_vote(rpc).await {
                Ok(x) => RpcResponse::Vote(x),
                Err(e) => RpcResponse::Refused(e.to_string()),
            },
            RpcRequest::TransferLeader(rpc) => match raft.handle_transfer_leader(rpc).await {
                Ok(x) => RpcResponse::TransferLeader(x),
                Err(e) => RpcResponse::Refused(e.to_string()),
            },
            RpcRequest::SnapshotChunk {
                offset,
                total,
                data,
            } => {
                if total > MAX_SNAPSHOT_BYTES {
                    snapshot_buf = Vec::new();
                    RpcResponse::Refused(format!(
                        "snapshot of {total} bytes exceeds the {MAX_SNAPSHOT_BYTES}-byte limit"
                    ))
                } else if offset != snapshot_buf.len() as u64 {
                    if offset == 0 {
                        snapshot_buf.clear();
                        snapshot_buf.extend_from_slice(&data);
                        RpcResponse::ChunkOk
                    } else {
                        snapshot_buf = Vec::new();
                        RpcResponse::Refused(format!(
                            "snapshot chunk at offset {offset} out of order"
                        ))
                    }
                } else if offset + data.len() as u64 > total {
                    snapshot_buf = Vec::new();
                    RpcResponse::Refused("snapshot chunk runs past the announced size".into())
                } else {
                    snapshot_buf.extend_from_slice(&data);
                    RpcResponse::ChunkOk
                }
            }
            RpcRequest::SnapshotDone { vote, meta } => {
                let data = std::mem::take(&mut snapshot_buf);
                let snapshot = Snapshot {
                    meta,
                    snapshot: std::io::Cursor::new(Arc::new(data)),
                };
                match raft.install_full_snapshot(vote, snapshot).await {
                    Ok(x) => RpcResponse::Snapshot(x),
                    Err(e) => RpcResponse::Refused(e.to_string()),
                }
            }
        };
        conn.send(&resp).await?;
    }
}

fn variant_name(r: &RpcRequest) -> &'static str {
    match r {
        RpcRequest::Hello { .. } => "hello",
        RpcRequest::Append(_) => "append",
        RpcRequest::Vote(_) => "vote",
        RpcRequest::PreVote(_) => "pre-vote",
        RpcRequest::TransferLeader(_) => "transfer-leader",
        RpcRequest::SnapshotChunk { .. } => "snapshot-chunk",
        RpcRequest::SnapshotDone { .. } => "snapshot-done",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_per_peer_are_bounded_and_released() {
        let pc = PeerConnections::default();
        let held: Vec<_> = (0..MAX_CONNECTIONS_PER_PEER)
            .map(|_| pc.try_take(2).expect("under the limit"))
            .collect();
        assert!(pc.try_take(2).is_none(), "one past the limit is refused");
        // Another peer has its own budget.
        let other = pc.try_take(3);
        assert!(other.is_some());
        drop(held);
        assert!(
            pc.try_take(2).is_some(),
            "closed connections give their slot back"
        );
        drop(other);
        let open = pc.open.lock().unwrap();
        assert!(
            open.get(&3).is_none(),
            "no entry left for a peer with no connection"
        );
    }

    #[test]
    fn cluster_ids_differ_by_name() {
        assert_ne!(cluster_id("a"), cluster_id("b"));
        assert_eq!(cluster_id("demo"), cluster_id("demo"));
    }
}
