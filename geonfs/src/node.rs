//! One geonfs node: every role the configuration gives it, served on the
//! node's address behind the cluster secret.
//!
//! # Metrics
//!
//! Each node has its own Prometheus [`Registry`] ([`RunningNode::registry`])
//! holding the metrics of its roles (the meta-kvs member's [`MetaMetrics`],
//! the core server's [`CoreMetrics`], the access server's NFS and block
//! client metrics), served on the node's `metrics_address` when it has one
//! ([`MetricsEndpoint`]),
//! so several nodes can share one process (the test cluster) without their
//! metrics colliding. The RPC layer's [`geonfs_rpc::RpcMetrics`] belong to
//! the process-wide [`Network`], not to a node: they are registered once per
//! process, by whoever owns the process, with
//! [`RunningNode::register_network_metrics`] (the `geonfs run` binary does it
//! for its only node; the test cluster does not, and reads
//! `network.metrics()` directly). Registering them in every node's registry
//! would report the same process-wide counters once per node.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use geonfs_access_server::{AccessError, AccessServer};
use geonfs_core_server::{CoreError, CoreMetrics, CoreServer, ReplicatorOptions};
use geonfs_meta_kvs::{MetaMember, MetaMetrics, MetaOptions};
use geonfs_proto::node::NodeIdentity;
use geonfs_rpc::server::{self, NodeInfoService, StopSignals};
use geonfs_rpc::{Network, RpcError};
use geonfs_site_config::{ClusterConfig, Node};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::metrics_http::MetricsEndpoint;

/// The Prometheus registry type of [`RunningNode::registry`].
pub use prometheus::Registry;

/// How long a graceful stop waits for calls in flight before it kills.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration names no such node.
    #[error("the configuration has no node named {0:?}")]
    UnknownNode(String),
    /// The RPC layer failed (bind, serve).
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The meta-kvs member could not start.
    #[error("meta-kvs: {0}")]
    Meta(#[from] geonfs_meta_kvs::MetaError),
    /// The core server (block store) could not start.
    #[error("core server: {0}")]
    Core(#[from] CoreError),
    /// A meta node without a data directory.
    #[error("node {0:?} has the meta role but no data_dir")]
    NoDataDir(String),
    /// A metric could not be registered (a duplicate name).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The access server (NFS export) could not start.
    #[error("access server: {0}")]
    Access(#[from] AccessError),
    /// The `/metrics` endpoint could not listen on `metrics_address`.
    #[error("metrics endpoint on {addr}: {source}")]
    MetricsEndpoint {
        /// The configured address.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
}

/// Options of every role of a node.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// Options of the meta-kvs member (meta nodes); `None`: from the
    /// configuration ([`MetaOptions::for_cluster`]).
    pub meta: Option<MetaOptions>,
    /// Options of the geo-replication worker (core nodes); `None` leaves
    /// the worker stopped (jobs still queue, nothing ships — for tests of
    /// the in-site write path alone).
    pub replication: Option<ReplicatorOptions>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            meta: None,
            replication: Some(ReplicatorOptions::default()),
        }
    }
}

/// A node that is serving.
#[derive(Debug)]
pub struct RunningNode {
    name: String,
    addr: SocketAddr,
    identity: NodeIdentity,
    signals: StopSignals,
    task: JoinHandle<Result<(), RpcError>>,
    meta: Option<MetaMember>,
    core: Option<CoreServer>,
    access: Option<AccessServer>,
    metrics_endpoint: Option<MetricsEndpoint>,
    network: Network,
    registry: Registry,
}

/// What a node tells its callers about itself (`geonfs.node.Ping`).
fn identity_of(config: &ClusterConfig, node: &Node) -> NodeIdentity {
    let roles = [
        (node.roles.core, "core"),
        (node.roles.meta, "meta"),
        (node.roles.access, "access"),
    ];
    NodeIdentity {
        name: node.name.clone(),
        site: config.site(node.site).name.clone(),
        incarnation: rand::random(),
        roles: roles
            .iter()
            .filter(|(has, _)| *has)
            .map(|(_, role)| role.to_string())
            .collect(),
    }
}

/// The roles of a node started so far: [`Roles::start`] starts them in
/// order (meta, core, access), each with its metrics registered; if one
/// fails, [`Roles::kill`] stops those before it.
#[derive(Default)]
struct Roles {
    meta: Option<MetaMember>,
    core: Option<CoreServer>,
    access: Option<AccessServer>,
}

impl Roles {
    /// Starts every role `node` has, keeping each as soon as it runs.
    async fn start(
        &mut self,
        config: &Arc<ClusterConfig>,
        node: &Node,
        addr: SocketAddr,
        network: &Network,
        options: NodeOptions,
        registry: &Registry,
    ) -> Result<(), NodeError> {
        if node.roles.meta {
            let data_dir = node
                .data_dir
                .as_ref()
                .ok_or_else(|| NodeError::NoDataDir(node.name.clone()))?;
            let meta_options = options
                .meta
                .unwrap_or_else(|| MetaOptions::for_cluster(config));
            let member = self.meta.insert(MetaMember::start(
                config,
                &node.name,
                SocketAddr::new(node.address.ip(), addr.port()),
                network.clone(),
                data_dir,
                meta_options,
            )?);
            let metrics: &MetaMetrics = member.metrics();
            metrics.register(registry)?;
        }
        if node.roles.core {
            let core = self
                .core
                .insert(CoreServer::open(config, &node.name, network.clone())?);
            let metrics: &CoreMetrics = core.metrics();
            metrics.register(registry)?;
            core.replicator_metrics().register(registry)?;
            core.catch_up_fences();
            if let Some(replication) = options.replication {
                core.start_replication(network.clone(), config, replication)?;
            }
        }
        if node.roles.access {
            self.access =
                Some(AccessServer::start(config, &node.name, network.clone(), registry).await?);
        }
        Ok(())
    }

    /// The node's gRPC routes: its identity, and the services of its roles.
    fn routes(&self, identity: &NodeIdentity) -> tonic::service::Routes {
        let mut routes =
            tonic::service::Routes::new(NodeInfoService::new(identity.clone()).into_server());
        if let Some(member) = &self.meta {
            routes = member.add_routes(routes);
        }
        if let Some(core) = &self.core {
            routes = core.add_routes(routes);
        }
        routes
    }

    /// Kills the roles started, the last started first.
    async fn kill(self) {
        if let Some(access) = self.access {
            access.kill();
        }
        if let Some(core) = self.core {
            core.kill().await;
        }
        if let Some(member) = self.meta {
            member.kill().await;
        }
    }
}

impl RunningNode {
    /// Starts node `name` of `config` with `options`, serving on `listener`
    /// (already bound, so a caller that asked for port 0 knows the port
    /// first). If a role fails to start, the roles started before it are
    /// killed and the error returned.
    pub async fn start(
        config: Arc<ClusterConfig>,
        name: &str,
        network: Network,
        listener: TcpListener,
        options: NodeOptions,
    ) -> Result<Self, NodeError> {
        let node = config
            .node(name)
            .ok_or_else(|| NodeError::UnknownNode(name.to_string()))?;
        let addr = listener.local_addr().map_err(|source| RpcError::Bind {
            addr: node.address,
            source,
        })?;
        let identity = identity_of(&config, node);
        let registry = Registry::new();
        register_build_info(&registry)?;
        let mut roles = Roles::default();
        if let Err(err) = roles
            .start(&config, node, addr, &network, options, &registry)
            .await
        {
            roles.kill().await;
            return Err(err);
        }
        let metrics_endpoint = match node.metrics_address {
            Some(addr) => match MetricsEndpoint::start(addr, registry.clone()).await {
                Ok(endpoint) => Some(endpoint),
                Err(source) => {
                    roles.kill().await;
                    return Err(NodeError::MetricsEndpoint { addr, source });
                }
            },
            None => None,
        };
        let routes = roles.routes(&identity);
        let signals = StopSignals::default();
        let task = tokio::spawn(server::serve(
            listener,
            routes,
            network.clone(),
            signals.clone(),
        ));
        tracing::info!(node = %name, %addr, incarnation = identity.incarnation, "node started");
        Ok(RunningNode {
            name: name.to_string(),
            addr,
            identity,
            signals,
            task,
            meta: roles.meta,
            core: roles.core,
            access: roles.access,
            metrics_endpoint,
            network,
            registry,
        })
    }

    /// Binds the node's configured address and starts it with `options`.
    pub async fn bind_and_start(
        config: Arc<ClusterConfig>,
        name: &str,
        network: Network,
        options: NodeOptions,
    ) -> Result<Self, NodeError> {
        let node = config
            .node(name)
            .ok_or_else(|| NodeError::UnknownNode(name.to_string()))?;
        let listener = server::bind(node.address).await?;
        Self::start(config, name, network, listener, options).await
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address it serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its identity (incarnation changes with every start).
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// The node's Prometheus registry: the metrics of its roles (see the
    /// module documentation for the RPC metrics).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Registers the process-wide RPC metrics of this node's [`Network`]
    /// into its registry. Call it on one node per process (the one whose
    /// registry is exported): a second call on the same node fails with
    /// [`NodeError::Metrics`] (duplicate names).
    pub fn register_network_metrics(&self) -> Result<(), NodeError> {
        self.network.metrics().register(&self.registry)?;
        Ok(())
    }

    /// The meta-kvs member, on meta nodes.
    pub fn meta(&self) -> Option<&MetaMember> {
        self.meta.as_ref()
    }

    /// The core server, on core nodes.
    pub fn core(&self) -> Option<&CoreServer> {
        self.core.as_ref()
    }

    /// The `/metrics` endpoint, when the node has a `metrics_address`.
    pub fn metrics_endpoint(&self) -> Option<&MetricsEndpoint> {
        self.metrics_endpoint.as_ref()
    }

    /// The access server (NFS export), on access nodes.
    pub fn access(&self) -> Option<&AccessServer> {
        self.access.as_ref()
    }

    /// Stops gracefully: no new calls, calls in flight finish (for at most
    /// [`STOP_GRACE`], then the rest are cut); then the core server syncs its
    /// WAL (held writes become durable) and closes its store.
    pub async fn stop(self) -> Result<(), RpcError> {
        // NFS clients first: their calls need the other roles.
        if let Some(access) = self.access {
            if let Err(err) = access.stop().await {
                tracing::warn!(node = %self.name, %err, "access server stop");
            }
        }
        // The meta member first: its end closes the peers' inbound Raft
        // streams, which a graceful server stop would otherwise wait for.
        if let Some(meta) = self.meta {
            meta.stop().await;
        }
        self.signals.stop.cancel();
        let mut task = self.task;
        let result = match tokio::time::timeout(STOP_GRACE, &mut task).await {
            Ok(joined) => joined,
            Err(_) => {
                tracing::warn!(node = %self.name, "calls still in flight after the grace period; cutting them");
                self.signals.kill.cancel();
                task.await
            }
        };
        // Severs connections that outlived the server (idle keep-alives).
        self.signals.kill.cancel();
        if let Some(core) = self.core {
            if let Err(err) = core.stop().await {
                tracing::error!(node = %self.name, %err, "core server: final flush failed");
            }
        }
        tracing::info!(node = %self.name, "node stopped");
        flatten(&self.name, result)
    }

    /// Stops abruptly, as if the process were killed: every connection is
    /// dropped at once, nothing is flushed (the core server's store is closed
    /// without a WAL sync, so it can be opened again by a restart).
    pub async fn kill(self) -> Result<(), RpcError> {
        if let Some(access) = self.access {
            access.kill();
        }
        self.signals.kill.cancel();
        if let Some(meta) = self.meta {
            meta.kill().await;
        }
        let result = self.task.await;
        if let Some(core) = self.core {
            core.kill().await;
        }
        tracing::info!(node = %self.name, "node killed");
        flatten(&self.name, result)
    }

    /// Waits until the node stops by itself (a serve error) or is stopped.
    pub async fn wait(&mut self) -> Result<(), RpcError> {
        let result = (&mut self.task).await;
        flatten(&self.name, result)
    }
}

fn flatten(
    name: &str,
    result: Result<Result<(), RpcError>, tokio::task::JoinError>,
) -> Result<(), RpcError> {
    match result {
        Ok(served) => served,
        Err(join) => Err(RpcError::Serve {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            reason: format!("node {name}'s server task failed: {join}"),
        }),
    }
}

/// `geonfs_build_info{version, commit} 1`: which build a node runs (the
/// commit from `build.rs`), for dashboards and mixed-version checks.
fn register_build_info(registry: &Registry) -> Result<(), NodeError> {
    let info = geonfs_rpc::metric::gauge_vec(
        "geonfs_build_info",
        "the build this node runs: version and git commit, value 1",
        &["version", "commit"],
    );
    info.with_label_values(&[env!("CARGO_PKG_VERSION"), env!("GEONFS_GIT_COMMIT")])
        .set(1);
    registry.register(Box::new(info))?;
    Ok(())
}
