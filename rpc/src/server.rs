//! Serving a node's gRPC services: TLS with the peer's certificate checked
//! (unless the cluster runs plain TCP), the cluster-secret check in front
//! of every service, graceful stop, and an abrupt kill (for tests: the
//! in-process equivalent of `kill -9`, every open connection dropped at
//! once).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use geonfs_proto::node::node_server::{Node, NodeServer};
use geonfs_proto::node::{NodeIdentity, PingReply, PingRequest};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::service::Routes;

use crate::stream::{GuardedStream, PeerInfo, ServerConn};
use crate::tls::Refusal;
use crate::warn_budget::WarnBudget;
use crate::{Network, RpcError, SECRET_HEADER};

/// Connections that finished their TLS handshake and wait for the server.
const HANDSHAKEN_BACKLOG: usize = 64;

/// How long accepting pauses after the listener fails (out of file
/// descriptors, say) before it tries again.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// Binds a listener on `addr` (port 0 picks a free port; read it back with
/// `local_addr`).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, RpcError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RpcError::Bind { addr, source })
}

/// How a running server is told to stop.
#[derive(Clone, Debug, Default)]
pub struct StopSignals {
    /// Graceful: stop accepting, let calls in flight finish.
    pub stop: CancellationToken,
    /// Abrupt: drop every connection now, as if the process died.
    pub kill: CancellationToken,
}

/// Serves `routes` on `listener` behind the cluster-secret check until
/// `signals.stop` (graceful) or `signals.kill` (abrupt).
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    network: Network,
    signals: StopSignals,
) -> Result<(), RpcError> {
    let addr = listener.local_addr().map_err(|source| RpcError::Bind {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    let kill = signals.kill.clone();
    // With TLS, the accepting task lives as long as this server.
    let (incoming, _handshakes): (Incoming, Option<AbortOnDrop>) = match network.tls() {
        None => (
            Box::pin(
                tokio_stream::wrappers::TcpListenerStream::new(listener).map(move |conn| {
                    conn.map(|tcp| {
                        no_delay(&tcp);
                        ServerConn::Plain(GuardedStream::new(tcp, kill.clone().cancelled_owned()))
                    })
                }),
            ),
            None,
        ),
        Some(tls) => {
            let config = tls.server_config(addr)?;
            let (tx, rx) = mpsc::channel(HANDSHAKEN_BACKLOG);
            let task = tokio::spawn(accept_tls(listener, network.clone(), config, kill, tx));
            (
                Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok)),
                Some(AbortOnDrop(task)),
            )
        }
    };
    let auth = AuthLayer {
        secret: Arc::from(network.secret().as_bytes()),
        network,
    };
    let server = tonic::transport::Server::builder()
        .layer(auth)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, signals.stop.cancelled_owned());
    tokio::select! {
        result = server => result.map_err(|err| RpcError::Serve { addr, reason: err.to_string() }),
        _ = signals.kill.cancelled() => Ok(()),
    }
}

/// The connections a server is handed, plain or past their TLS handshake.
type Incoming = Pin<Box<dyn Stream<Item = std::io::Result<ServerConn>> + Send>>;

/// Small RPCs must not wait for delayed ACKs (tonic's own TCP settings do
/// not apply to a custom incoming stream).
fn no_delay(tcp: &tokio::net::TcpStream) {
    if let Err(err) = tcp.set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY: {err}");
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Accepts connections and runs each one's TLS handshake in its own task
/// (a slow or silent client delays nobody else), passing on those whose
/// certificate names a node at their address.
async fn accept_tls(
    listener: TcpListener,
    network: Network,
    config: Arc<rustls::ServerConfig>,
    kill: CancellationToken,
    handshaken: mpsc::Sender<ServerConn>,
) {
    let warnings = Arc::new(WarnBudget::new());
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!("cannot accept an inter-node connection: {err}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = handshaken.closed() => return,
        };
        no_delay(&tcp);
        let (network, config, kill, handshaken, warnings) = (
            network.clone(),
            config.clone(),
            kill.clone(),
            handshaken.clone(),
            warnings.clone(),
        );
        tokio::spawn(async move {
            let Some(tls) = network.tls() else { return };
            match tls.accept(config, tcp, peer).await {
                Ok((stream, name)) => {
                    let info = PeerInfo {
                        addr: Some(peer),
                        name: Some(name),
                    };
                    let conn = ServerConn::Tls(
                        Box::new(GuardedStream::new(stream, kill.cancelled_owned())),
                        info,
                    );
                    // A server that stopped meanwhile has closed the queue.
                    let _ = handshaken.send(conn).await;
                }
                Err((refusal, reason)) => {
                    network
                        .metrics()
                        .tls_refusals
                        .with_label_values(&[refusal.label()])
                        .inc();
                    if refusal == Refusal::Abandoned {
                        tracing::debug!(%peer, "an inter-node connection ended in its handshake: {reason}");
                    } else if let Some(unlogged) = warnings.admit() {
                        tracing::warn!(%peer, unlogged, "refused an inter-node connection: {reason}");
                    }
                }
            }
        });
    }
}

/// The tower layer that refuses calls without the right cluster secret.
#[derive(Clone)]
pub struct AuthLayer {
    secret: Arc<[u8]>,
    network: Network,
}

impl std::fmt::Debug for AuthLayer {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayer")
            .field("secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service behind the cluster-secret check.
#[derive(Clone, Debug)]
pub struct Authenticated<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S> Authenticated<S> {
    /// Why `request` may not pass, if it may not.
    fn refusal(&self, request: &http::Request<Body>) -> Option<&'static str> {
        match request.headers().get(SECRET_HEADER) {
            None => Some("missing cluster secret"),
            Some(given) if bool::from(given.as_bytes().ct_eq(&self.layer.secret)) => None,
            Some(_) => Some("wrong cluster secret"),
        }
    }
}

impl<S> tower::Service<http::Request<Body>> for Authenticated<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match self.refusal(&request) {
            None => Box::pin(self.inner.call(request)),
            Some(reason) => {
                let peer = request.extensions().get::<PeerInfo>().cloned();
                let (addr, name) = peer.map_or((None, None), |peer| (peer.addr, peer.name));
                tracing::warn!(?addr, ?name, path = %request.uri().path(), "refused RPC: {reason}");
                self.layer.network.metrics().auth_rejections.inc();
                let status = tonic::Status::unauthenticated(format!(
                    "{reason}: every inter-node call must carry the cluster's secret"
                ));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// The `Node` service every node serves: who it is, and a ping.
#[derive(Clone, Debug)]
pub struct NodeInfoService {
    identity: NodeIdentity,
}

impl NodeInfoService {
    /// The service for a node with this identity.
    pub fn new(identity: NodeIdentity) -> Self {
        NodeInfoService { identity }
    }

    /// The tonic server of it, ready to add to [`Routes`].
    pub fn into_server(self) -> NodeServer<Self> {
        NodeServer::new(self)
    }
}

#[tonic::async_trait]
impl Node for NodeInfoService {
    async fn ping(
        &self,
        request: tonic::Request<PingRequest>,
    ) -> Result<tonic::Response<PingReply>, tonic::Status> {
        Ok(tonic::Response::new(PingReply {
            node: Some(self.identity.clone()),
            payload: request.into_inner().payload,
        }))
    }
}
