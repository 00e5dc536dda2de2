//! The Raft transport: per-peer sender tasks holding a client-streaming
//! `RaftTransport.Stream` call, and the receiving `RaftTransport` service.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use geonfs_proto::raft::raft_transport_client::RaftTransportClient;
use geonfs_proto::raft::raft_transport_server::RaftTransport;
use geonfs_proto::raft::{RaftAck, RaftBatch};
use geonfs_rpc::{Network, RpcChannel};
use protobuf::Message as PbMessage;
use raft::eraftpb::{Message, MessageType};
use raft::SnapshotStatus;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::driver::DriverMsg;
use crate::error::MetaError;
use crate::ids::Directory;
use crate::metrics::MetaMetrics;

/// Largest gRPC message of the transport (snapshots travel whole).
pub const MAX_RAFT_MESSAGE: usize = 256 * 1024 * 1024;
/// Queue length per peer.
const PEER_QUEUE: usize = 1024;
/// A stream is closed and reopened after this long (the channel has a call
/// timeout, and a fresh stream picks up a restarted peer sooner).
const STREAM_MAX_AGE: Duration = Duration::from_secs(4);
/// At most this many bytes per batch.
const BATCH_BYTES: usize = 1024 * 1024;

/// A message the transport could not queue.
pub struct SendFailure {
    /// The peer.
    pub to: u64,
    /// Whether it was a snapshot.
    pub snapshot: bool,
}

/// The sending side, owned by the driver.
pub struct Transport {
    id: u64,
    ip: IpAddr,
    network: Network,
    dir: Directory,
    driver: mpsc::Sender<DriverMsg>,
    metrics: MetaMetrics,
    /// The shared runtime the per-peer tasks run on (the driver's own
    /// thread only queues messages for them).
    runtime: tokio::runtime::Handle,
    peers: HashMap<u64, (mpsc::Sender<Message>, JoinHandle<()>)>,
}

impl Transport {
    /// A transport for member `id` at `ip`, its peer tasks on `runtime`.
    pub fn new(
        id: u64,
        ip: IpAddr,
        network: Network,
        dir: Directory,
        driver: mpsc::Sender<DriverMsg>,
        metrics: MetaMetrics,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Transport {
            id,
            ip,
            network,
            dir,
            driver,
            metrics,
            runtime,
            peers: HashMap::new(),
        }
    }

    /// Queues messages for their peers; returns those that could not be
    /// queued (queue full).
    pub fn send(&mut self, msgs: Vec<Message>) -> Vec<SendFailure> {
        let mut failed = Vec::new();
        for msg in msgs {
            let to = msg.to;
            let snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
            if snapshot {
                self.metrics.snapshots_sent.inc();
            }
            let name = self
                .dir
                .get(to)
                .map(|p| p.name)
                .unwrap_or_else(|| to.to_string());
            self.metrics.messages_sent.with_label_values(&[&name]).inc();
            let (id, ip) = (self.id, self.ip);
            let entry = self.peers.entry(to).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(PEER_QUEUE);
                let task = self.runtime.spawn(peer_loop(
                    id,
                    to,
                    ip,
                    self.network.clone(),
                    self.dir.clone(),
                    rx,
                    self.driver.clone(),
                ));
                (tx, task)
            });
            if entry.0.try_send(msg).is_err() {
                failed.push(SendFailure { to, snapshot });
            }
        }
        failed
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        for (_, (_, task)) in self.peers.drain() {
            task.abort();
        }
    }
}

fn encode(msg: &Message) -> Option<bytes::Bytes> {
    match msg.write_to_bytes() {
        Ok(b) => Some(b.into()),
        Err(err) => {
            tracing::error!(error = %err, "cannot encode a raft message");
            None
        }
    }
}

async fn peer_loop(
    from: u64,
    to: u64,
    ip: IpAddr,
    network: Network,
    dir: Directory,
    mut rx: mpsc::Receiver<Message>,
    driver: mpsc::Sender<DriverMsg>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut carry: Option<Message> = None;
    // One channel (one HTTP/2 connection) carries stream after stream: a
    // new connection costs a TCP and a TLS handshake, two round trips
    // across the WAN. Dropped when a stream fails, so a restarted peer is
    // dialled afresh.
    let mut kept: Option<(SocketAddr, RpcChannel)> = None;
    loop {
        let first = match carry.take() {
            Some(m) => m,
            None => match rx.recv().await {
                Some(m) => m,
                None => return,
            },
        };
        let Some(addr) = dir.address(to) else {
            tracing::debug!(to, "no address for raft peer; message dropped");
            continue;
        };
        let channel = match &kept {
            Some((at, channel)) if *at == addr => channel.clone(),
            _ => match network.channel(ip, addr) {
                Ok(c) => {
                    kept = Some((addr, c.clone()));
                    c
                }
                Err(err) => {
                    tracing::warn!(to, error = %err, "no channel to raft peer");
                    let _ = driver.send(DriverMsg::Unreachable(to)).await;
                    continue;
                }
            },
        };
        let mut client = RaftTransportClient::new(channel)
            .max_encoding_message_size(MAX_RAFT_MESSAGE)
            .max_decoding_message_size(MAX_RAFT_MESSAGE);
        if first.get_msg_type() == MessageType::MsgSnapshot {
            let ok = send_snapshot(&mut client, from, to, &first).await;
            if !ok {
                kept = None;
            }
            let status = if ok {
                SnapshotStatus::Finish
            } else {
                SnapshotStatus::Failure
            };
            let _ = driver.send(DriverMsg::SnapshotStatus(to, status)).await;
            if !ok {
                let _ = driver.send(DriverMsg::Unreachable(to)).await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            continue;
        }
        let (btx, brx) = mpsc::channel::<RaftBatch>(16);
        let body =
            futures::stream::unfold(brx, |mut r| async move { r.recv().await.map(|b| (b, r)) });
        let mut call_client = client.clone();
        let call = call_client.stream(body);
        tokio::pin!(call);
        let opened = Instant::now();
        let mut next = Some(first);
        let failed = loop {
            let msg = match next.take() {
                Some(m) => m,
                None => {
                    if opened.elapsed() > STREAM_MAX_AGE {
                        break false;
                    }
                    tokio::select! {
                        res = &mut call => break res.is_err(),
                        m = rx.recv() => match m { Some(m) => m, None => return },
                        _ = tokio::time::sleep(STREAM_MAX_AGE) => continue,
                    }
                }
            };
            if msg.get_msg_type() == MessageType::MsgSnapshot {
                carry = Some(msg);
                break false;
            }
            let batch = gather_batch(from, to, &msg, &mut rx, &mut carry);
            let sent = tokio::select! {
                r = btx.send(batch) => r.is_ok(),
                res = &mut call => { let _ = res; false }
            };
            if !sent {
                break true;
            }
            if carry.is_some() {
                break false;
            }
        };
        drop(btx);
        if failed {
            kept = None;
            tracing::debug!(from, to, "raft stream to peer failed; reconnecting");
            let _ = driver.send(DriverMsg::Unreachable(to)).await;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        } else {
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut call).await;
            backoff = Duration::from_millis(50);
        }
    }
}

/// `first` and the messages queued behind it, up to [`BATCH_BYTES`], as
/// one batch; a snapshot met on the way is left in `carry` (it goes on its
/// own call).
fn gather_batch(
    from: u64,
    to: u64,
    first: &Message,
    rx: &mut mpsc::Receiver<Message>,
    carry: &mut Option<Message>,
) -> RaftBatch {
    let mut batch = RaftBatch {
        from,
        to,
        messages: Vec::new(),
    };
    let mut size = 0;
    if let Some(b) = encode(first) {
        size += b.len();
        batch.messages.push(b);
    }
    while size < BATCH_BYTES {
        match rx.try_recv() {
            Ok(m) if m.get_msg_type() == MessageType::MsgSnapshot => {
                *carry = Some(m);
                break;
            }
            Ok(m) => {
                if let Some(b) = encode(&m) {
                    size += b.len();
                    batch.messages.push(b);
                }
            }
            Err(_) => break,
        }
    }
    batch
}

async fn send_snapshot(
    client: &mut RaftTransportClient<geonfs_rpc::RpcChannel>,
    from: u64,
    to: u64,
    msg: &Message,
) -> bool {
    let Some(bytes) = encode(msg) else {
        return false;
    };
    let batch = RaftBatch {
        from,
        to,
        messages: vec![bytes],
    };
    match client.stream(futures::stream::iter(vec![batch])).await {
        Ok(_) => true,
        Err(status) => {
            tracing::warn!(from, to, %status, "sending a snapshot failed");
            false
        }
    }
}

/// The receiving side: the `RaftTransport` service of one member.
pub struct RaftService {
    id: u64,
    driver: mpsc::Sender<DriverMsg>,
}

impl RaftService {
    /// The service of member `id`.
    pub fn new(id: u64, driver: mpsc::Sender<DriverMsg>) -> Self {
        RaftService { id, driver }
    }

    async fn receive(&self, batch: RaftBatch) -> Result<(), MetaError> {
        if batch.to != self.id {
            return Err(MetaError::InvalidArgument(format!(
                "raft batch for member {} reached member {}",
                batch.to, self.id
            )));
        }
        for bytes in batch.messages {
            let msg = Message::parse_from_bytes(&bytes).map_err(|err| {
                MetaError::InvalidArgument(format!("undecodable raft message: {err}"))
            })?;
            self.driver
                .send(DriverMsg::Raft(msg))
                .await
                .map_err(|_| MetaError::ShuttingDown)?;
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn stream(
        &self,
        request: tonic::Request<tonic::Streaming<RaftBatch>>,
    ) -> Result<tonic::Response<RaftAck>, tonic::Status> {
        let mut stream = request.into_inner();
        loop {
            // A stopping member ends its inbound streams at once, so a
            // graceful server stop need not wait for the peers to hang up.
            let batch = tokio::select! {
                batch = stream.message() => batch?,
                _ = self.driver.closed() => return Err(MetaError::ShuttingDown.into()),
            };
            match batch {
                Some(batch) => self.receive(batch).await?,
                None => return Ok(tonic::Response::new(RaftAck {})),
            }
        }
    }
}
