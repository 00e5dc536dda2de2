//! The ONC RPC server over TCP: accepting connections, reading records,
//! running calls concurrently, writing replies.
//!
//! Each connection has one reader (this task), one writer task and up to
//! [`ServerOptions::max_in_flight_per_connection`] calls running at once.
//! The reader takes an in-flight slot before reading each record, so a
//! client that pipelines more calls than that is simply not read from until
//! replies have been written (TCP back-pressure). Replies go out in the
//! order calls complete; clients match them by xid.
//!
//! Hostile or broken clients cannot hold the server: connections are
//! capped in all and per client address ([`super::limits`]), a connection
//! with no call running that sends nothing for
//! [`ServerOptions::idle_timeout`] is closed (NFS clients reconnect when
//! they need to, as with knfsd's idle close), and a record must arrive
//! whole within [`ServerOptions::record_timeout`] of its first byte.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::dispatch::{Dispatcher, EncodedReply, RecordAction};
use super::limits::{ConnectionCounts, ConnectionSlot};
use super::metrics::RpcMetrics;
use super::program::RpcProgram;
use super::record::{RecordError, RecordReader, DEFAULT_MAX_RECORD_SIZE};
use crate::error::AccessError;
use geonfs_rpc::warn_budget::WarnBudget;

/// Decides from its address whether a client may connect at all.
pub type ClientFilter = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// A [`ClientFilter`] admitting only addresses inside `networks`. IPv4
/// clients reaching an IPv6 socket (`::ffff:a.b.c.d`) are matched as IPv4.
pub fn allow_networks(networks: Vec<IpNet>) -> ClientFilter {
    Arc::new(move |addr: IpAddr| {
        let addr = addr.to_canonical();
        networks.iter().any(|network| network.contains(&addr))
    })
}

/// The default bound on calls running at once on one connection.
pub const DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION: usize = 64;
/// The default idle time after which a connection is closed (knfsd's: 6 min).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(360);
/// The default time a record may take to arrive once it has begun.
pub const DEFAULT_RECORD_TIMEOUT: Duration = Duration::from_secs(60);
/// The default bound on the connections of one server.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// The default bound on the connections from one client address (a
/// hypervisor host opens one per disk image with QEMU's libnfs driver).
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 1024;

/// How an [`RpcServer`] treats its connections.
#[derive(Clone)]
pub struct ServerOptions {
    /// Largest record (call) accepted; a larger one closes the connection.
    pub max_record_size: usize,
    /// Calls run at once per connection before the server stops reading it.
    pub max_in_flight_per_connection: usize,
    /// A connection with no call running that sends nothing for this long
    /// is closed.
    pub idle_timeout: Duration,
    /// A record must arrive whole within this time of its first byte, or
    /// the connection is closed.
    pub record_timeout: Duration,
    /// Connections held at once; more are refused (closed at once).
    pub max_connections: usize,
    /// Connections held at once from one client address.
    pub max_connections_per_client: usize,
    /// Checked on every accepted connection; a refused client is
    /// disconnected at once. `None` admits everyone.
    pub client_filter: Option<ClientFilter>,
    /// Where calls, errors and connections are counted.
    pub metrics: RpcMetrics,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
            max_in_flight_per_connection: DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            record_timeout: DEFAULT_RECORD_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            client_filter: None,
            metrics: RpcMetrics::new(),
        }
    }
}

impl fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerOptions")
            .field("max_record_size", &self.max_record_size)
            .field(
                "max_in_flight_per_connection",
                &self.max_in_flight_per_connection,
            )
            .field("idle_timeout", &self.idle_timeout)
            .field("record_timeout", &self.record_timeout)
            .field("max_connections", &self.max_connections)
            .field(
                "max_connections_per_client",
                &self.max_connections_per_client,
            )
            .field("client_filter", &self.client_filter.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

/// State shared by the accept loop and every connection of one server.
struct Shared {
    dispatcher: Dispatcher,
    options: ServerOptions,
    /// The connections held, in all and per client.
    connections: Arc<ConnectionCounts>,
    /// How many client-caused warnings reach the log.
    warnings: WarnBudget,
    /// Cancelled to stop accepting connections and reading calls.
    stop: CancellationToken,
    /// Cancelled when the shutdown deadline passes: in-flight calls are
    /// abandoned.
    abort: CancellationToken,
}

/// A running ONC RPC server on one TCP listener. Dropping it stops the
/// server at once (in-flight calls are abandoned); [`RpcServer::shutdown`]
/// stops it gracefully.
#[derive(Debug)]
pub struct RpcServer {
    local_addr: SocketAddr,
    stop: CancellationToken,
    abort: CancellationToken,
    tasks: TaskTracker,
}

impl RpcServer {
    /// Binds `addr` and serves `programs` on it until shut down.
    pub async fn bind(
        addr: SocketAddr,
        programs: Vec<Arc<dyn RpcProgram>>,
        options: ServerOptions,
    ) -> Result<Self, AccessError> {
        let bind_error = |source| AccessError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let program_names: Vec<_> = programs.iter().map(|p| p.id().name).collect();
        tracing::info!(%local_addr, programs = ?program_names, "ONC RPC server listening");
        let stop = CancellationToken::new();
        let abort = CancellationToken::new();
        let shared = Arc::new(Shared {
            dispatcher: Dispatcher::new(programs, options.metrics.clone()),
            warnings: WarnBudget::new(),
            connections: ConnectionCounts::new(
                options.max_connections,
                options.max_connections_per_client,
            ),
            options,
            stop: stop.clone(),
            abort: abort.clone(),
        });
        let tasks = TaskTracker::new();
        tasks.spawn(accept_connections(listener, shared, tasks.clone()));
        Ok(Self {
            local_addr,
            stop,
            abort,
            tasks,
        })
    }

    /// The address the server listens on (with the port the system chose
    /// when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections and reading calls, lets the calls in
    /// flight finish and their replies be written, then closes every
    /// connection. Calls still running after `deadline` are abandoned and
    /// reported as an error.
    pub async fn shutdown(self, deadline: Duration) -> Result<(), AccessError> {
        tracing::info!(local_addr = %self.local_addr, "ONC RPC server stopping");
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(deadline, self.tasks.wait())
            .await
            .is_ok()
        {
            tracing::info!(local_addr = %self.local_addr, "ONC RPC server stopped");
            return Ok(());
        }
        let busy = self.tasks.len();
        tracing::warn!(local_addr = %self.local_addr, busy, "shutdown deadline passed; abandoning in-flight calls");
        self.abort.cancel();
        self.tasks.wait().await;
        Err(AccessError::ShutdownDeadline(busy))
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        self.stop.cancel();
        self.abort.cancel();
    }
}

/// Accepts connections until the server stops.
async fn accept_connections(listener: TcpListener, shared: Arc<Shared>, tasks: TaskTracker) {
    let metrics = &shared.options.metrics;
    loop {
        let accepted = tokio::select! {
            _ = shared.stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Usually out of file descriptors: wait instead of spinning.
                tracing::warn!(%error, "accepting a connection failed");
                tokio::select! {
                    _ = shared.stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        if let Some(filter) = &shared.options.client_filter {
            if !filter(peer.ip().to_canonical()) {
                if let Some(unlogged) = shared.warnings.admit() {
                    tracing::warn!(%peer, unlogged, "refusing connection from a client outside the allowed networks");
                }
                metrics.refused_connections.inc();
                drop(stream);
                continue;
            }
        }
        let slot = match shared.connections.admit(peer.ip().to_canonical()) {
            Ok(slot) => slot,
            Err(refusal) => {
                if let Some(unlogged) = shared.warnings.admit() {
                    tracing::warn!(%peer, ?refusal, unlogged, "refusing connection: too many connections");
                }
                metrics.refused_connections.inc();
                drop(stream);
                continue;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        metrics.connections.inc();
        let span = tracing::info_span!("rpc_connection", %peer);
        tasks.spawn(serve_connection(stream, peer, slot, Arc::clone(&shared)).instrument(span));
    }
    tracing::debug!("no longer accepting connections");
}

/// A reply waiting for the writer, holding its call's in-flight slot until
/// it is written.
struct QueuedReply {
    reply: EncodedReply,
    _slot: OwnedSemaphorePermit,
}

/// Keeps the open-connections gauge right however the connection ends.
struct OpenConnection(RpcMetrics);

impl OpenConnection {
    fn new(metrics: &RpcMetrics) -> Self {
        metrics.open_connections.inc();
        Self(metrics.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open_connections.dec();
    }
}

/// Serves one connection until the peer closes it, it misbehaves or idles,
/// or the server stops. `_slot` counts it until it ends.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    _slot: ConnectionSlot,
    shared: Arc<Shared>,
) {
    let _open = OpenConnection::new(&shared.options.metrics);
    tracing::debug!("connection accepted");
    let (read_half, write_half) = stream.into_split();
    // Stops reading when the server stops or the writer fails.
    let stop_reading = shared.stop.child_token();
    let (reply_sender, reply_receiver) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    // When the last reply was written: a connection is idle only once
    // `idle_timeout` has passed since then too.
    let last_reply = Arc::new(std::sync::Mutex::new(Instant::now()));
    tasks.spawn(
        write_replies(
            write_half,
            reply_receiver,
            stop_reading.clone(),
            Arc::clone(&last_reply),
        )
        .in_current_span(),
    );
    let in_flight = Arc::new(Semaphore::new(
        shared.options.max_in_flight_per_connection.max(1),
    ));
    let mut records = RecordReader::new(
        BufReader::with_capacity(64 * 1024, read_half),
        shared.options.max_record_size,
    );
    loop {
        while tasks.try_join_next().is_some() {}
        let slot = tokio::select! {
            biased;
            _ = stop_reading.cancelled() => break,
            slot = Arc::clone(&in_flight).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        // Idle: nothing received while no call runs (this reader holds
        // one slot; replies not yet written hold theirs).
        let idle = shared.options.idle_timeout;
        let most = shared.options.max_in_flight_per_connection.max(1);
        let mut wait = idle;
        let readable = loop {
            tokio::select! {
                biased;
                _ = stop_reading.cancelled() => break false,
                // An error here is met again, and reported, by the read.
                _ = records.wait_readable() => break true,
                _ = tokio::time::sleep(wait) => {
                    wait = idle;
                    if in_flight.available_permits() + 1 >= most {
                        let quiet = last_reply.lock().map_or(idle, |at| at.elapsed());
                        if quiet < idle {
                            // A call ended less than `idle` ago.
                            wait = idle - quiet;
                            continue;
                        }
                        // Not an error: idle mounts are normal, and clients reconnect.
                        tracing::debug!(?idle, "closing idle connection");
                        break false;
                    }
                }
            }
        };
        if !readable {
            break;
        }
        let record = tokio::select! {
            biased;
            _ = stop_reading.cancelled() => break,
            record = tokio::time::timeout(shared.options.record_timeout, records.next_record()) => match record {
                Ok(record) => record,
                Err(_) => {
                    if let Some(unlogged) = shared.warnings.admit() {
                        tracing::warn!(timeout = ?shared.options.record_timeout, unlogged,
                            "closing connection: a record did not arrive whole in time");
                    }
                    shared.options.metrics.error("unknown", "slow_record");
                    break;
                }
            },
        };
        let record = match record {
            Ok(Some(record)) => record,
            Ok(None) => {
                tracing::debug!("peer closed the connection");
                break;
            }
            Err(RecordError::Io(error)) if is_disconnect(&error) => {
                // Clients reset their connection when they are done
                // (qemu-img does): nothing was lost.
                tracing::debug!(%error, "peer reset the connection");
                break;
            }
            Err(error) => {
                if let Some(unlogged) = shared.warnings.admit() {
                    tracing::warn!(%error, unlogged, "closing connection: bad record");
                }
                shared.options.metrics.error("unknown", "bad_record");
                break;
            }
        };
        match shared.dispatcher.route(record, peer) {
            RecordAction::Answer(reply) => {
                // Fails only when the writer is gone; the loop then stops.
                let _ = reply_sender.send(QueuedReply { reply, _slot: slot });
            }
            RecordAction::Execute(execution) => {
                let shared = Arc::clone(&shared);
                let reply_sender = reply_sender.clone();
                tasks.spawn(
                    async move {
                        let reply = shared.dispatcher.execute(execution).await;
                        let _ = reply_sender.send(QueuedReply { reply, _slot: slot });
                    }
                    .in_current_span(),
                );
            }
            RecordAction::Ignore => {}
            RecordAction::Close(problem) => {
                if let Some(unlogged) = shared.warnings.admit() {
                    tracing::warn!(%problem, unlogged, "closing connection: undecodable RPC message");
                }
                break;
            }
        }
    }
    // Let the calls in flight finish; the writer ends once their replies
    // are written (every sender is gone).
    drop(reply_sender);
    tokio::select! {
        _ = shared.abort.cancelled() => {
            tracing::warn!(in_flight = tasks.len(), "abandoning calls at the shutdown deadline");
            tasks.abort_all();
        }
        _ = async { while tasks.join_next().await.is_some() {} } => {}
    }
    tracing::debug!("connection closed");
}

/// Writes replies as they come; flushes whenever none is waiting; notes
/// when the last one was written (`last_reply`, for the idle rule).
async fn write_replies(
    write_half: OwnedWriteHalf,
    mut replies: mpsc::UnboundedReceiver<QueuedReply>,
    stop_reading: CancellationToken,
    last_reply: Arc<std::sync::Mutex<Instant>>,
) {
    let mut output = BufWriter::with_capacity(64 * 1024, write_half);
    while let Some(queued) = replies.recv().await {
        let mut written = output.write_all(&queued.reply.head).await;
        if written.is_ok() && !queued.reply.body.is_empty() {
            written = output.write_all(&queued.reply.body).await;
        }
        if let Ok(mut at) = last_reply.lock() {
            *at = Instant::now();
        }
        drop(queued);
        if written.is_ok() && replies.is_empty() {
            written = output.flush().await;
        }
        if let Err(error) = written {
            tracing::debug!(%error, "writing replies failed; closing connection");
            stop_reading.cancel();
            return;
        }
    }
    if let Err(error) = output.shutdown().await {
        tracing::debug!(%error, "closing the connection's write side failed");
    }
}

/// Whether `error` is the peer going away (reset, aborted, broken pipe).
fn is_disconnect(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    matches!(
        error.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe
    )
}
