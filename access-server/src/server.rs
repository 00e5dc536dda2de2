//! [`AccessServer`]: the access role of a node — NFS v3 and MOUNT v3 on
//! one port of the node's address (`[nfs] port`, 2049 by default), and the
//! portmapper on port 111 when `[nfs] portmapper` is set and the port can
//! be bound.
//!
//! The server listens at once and connects to the cluster in the
//! background: it needs meta-kvs (the root directory, the handle
//! generation), which may not have a leader yet when the node starts.
//! Until it is ready, calls wait for it (NFS up to 10 s, then
//! `NFS3ERR_JUKEBOX`: the client retries later; MOUNT up to 20 s, then an
//! RPC system error); NULL always answers.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use geonfs_block_manager::{BlockClient, SendGate};
use geonfs_meta_kvs::MetaClient;
use geonfs_rpc::Network;
use geonfs_site_config::ClusterConfig;
use nfs3_types::nfs3::NFS_PROGRAM;
use prometheus::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::data::FileData;
use crate::namespace::Namespace;
use crate::nfs::{CapacityProvider, ExportPolicy, HandleCodec, MountProgram, NfsProgram};
use crate::oncrpc::{
    allow_networks, CallContext, PortmapProgram, ProcResult, ProgramId, RpcMetrics, RpcProgram,
    RpcServer, ServerOptions, MOUNT_ID, NFS_ID,
};
use crate::ownership::{AutoFailover, LeaseKeeper, Ownership};
use crate::AccessError;

/// The portmapper's well-known port.
pub const PORTMAPPER_PORT: u16 = 111;
/// How long a graceful stop waits for calls in flight.
pub const STOP_DEADLINE: Duration = Duration::from_secs(5);
/// Pause between two attempts to reach meta-kvs at start.
const INIT_RETRY: Duration = Duration::from_millis(500);

/// The programs once the server is connected to the cluster.
struct Ready {
    nfs: NfsProgram,
    mount: MountProgram,
}

/// A program that holds calls until the server is ready: a call made
/// before waits for it, up to [`NFS_READY_WAIT`] for NFS (then
/// NFS3ERR_JUKEBOX: the client retries) and [`MOUNT_READY_WAIT`] for MOUNT
/// (then SYSTEM_ERR: MOUNT has no "try later"). Waiting rather than
/// answering JUKEBOX at once keeps a restart short enough to be invisible
/// to clients that take JUKEBOX as an error (libnfs, so QEMU's NFS driver
/// and fio: a restarted access server answered JUKEBOX for ~0.1 s and
/// failed their writes).
struct Gate {
    id: ProgramId,
    ready: Arc<OnceLock<Ready>>,
    became_ready: watch::Receiver<bool>,
}

/// How long a MOUNT call made before the server is connected to the
/// cluster waits for it (then SYSTEM_ERR).
const MOUNT_READY_WAIT: Duration = Duration::from_secs(20);
/// How long an NFS call made before the server is connected to the
/// cluster waits for it (then NFS3ERR_JUKEBOX).
const NFS_READY_WAIT: Duration = Duration::from_secs(10);

impl Gate {
    fn current(&self) -> Option<&dyn RpcProgram> {
        let ready = self.ready.get()?;
        Some(if self.id == MOUNT_ID {
            &ready.mount
        } else {
            &ready.nfs
        })
    }
}

impl RpcProgram for Gate {
    fn id(&self) -> ProgramId {
        self.id
    }

    fn procedure_name(&self, version: u32, procedure: u32) -> Option<&'static str> {
        self.current()?.procedure_name(version, procedure)
    }

    fn call<'a>(
        &'a self,
        context: &'a CallContext,
        version: u32,
        procedure: u32,
        args: &'a [u8],
    ) -> BoxFuture<'a, ProcResult> {
        if let Some(program) = self.current() {
            return program.call(context, version, procedure, args);
        }
        if procedure == 0 {
            return async { ProcResult::Success(Vec::new()) }.boxed();
        }
        let (wait, late) = if self.id == MOUNT_ID {
            (MOUNT_READY_WAIT, ProcResult::SystemErr)
        } else if self.id == NFS_ID {
            match NFS_PROGRAM::try_from(procedure) {
                Ok(procedure) => (NFS_READY_WAIT, crate::nfs::not_ready(procedure)),
                Err(_) => return async { ProcResult::ProcUnavail }.boxed(),
            }
        } else {
            return async { ProcResult::SystemErr }.boxed();
        };
        let mut became_ready = self.became_ready.clone();
        async move {
            // The guard wait_for returns is dropped at once (not Send).
            let waited =
                tokio::time::timeout(wait, async { became_ready.wait_for(|r| *r).await.is_ok() })
                    .await;
            match (waited, self.current()) {
                (Ok(true), Some(program)) => program.call(context, version, procedure, args).await,
                _ => {
                    tracing::warn!(program = ?self.id, procedure,
                        "call refused: not connected to the cluster after {wait:?}");
                    late
                }
            }
        }
        .boxed()
    }
}

/// The running access role of one node.
#[derive(Debug)]
pub struct AccessServer {
    nfs: RpcServer,
    portmapper: Option<RpcServer>,
    init: JoinHandle<()>,
    became_ready: watch::Receiver<bool>,
    lease: LeaseKeeper,
    renewing: JoinHandle<()>,
    /// The automatic failover of silent sites, when configured.
    failing_over: Option<JoinHandle<()>>,
}

impl AccessServer {
    /// Starts the access role of node `node_name` of `config`: binds the
    /// NFS port (and the portmapper), then connects to the cluster in the
    /// background. Its metrics go to `registry`.
    pub async fn start(
        config: &ClusterConfig,
        node_name: &str,
        network: Network,
        registry: &Registry,
    ) -> Result<Self, AccessError> {
        let node = config
            .node(node_name)
            .ok_or_else(|| AccessError::Config(format!("no node named {node_name:?}")))?;
        let ip = node.address.ip();
        let settings = &config.nfs;
        let policy = ExportPolicy::from(settings);
        let attribute_cache = settings.attribute_cache;
        let metrics = RpcMetrics::new();
        metrics.register(registry).map_err(AccessError::Metrics)?;
        // Requests carrying an ownership epoch leave only under this access
        // server's lease (see `ownership::lease`).
        let gate = SendGate::new();
        let client = BlockClient::gated(network.clone(), config, ip, node.site, Some(gate.clone()))
            .map_err(|err| AccessError::Config(err.to_string()))?;
        client
            .metrics()
            .register(registry)
            .map_err(AccessError::Metrics)?;
        let ready = Arc::new(OnceLock::new());
        let (ready_sender, became_ready) = watch::channel(false);
        let programs: Vec<Arc<dyn RpcProgram>> = vec![
            Arc::new(Gate {
                id: NFS_ID,
                ready: ready.clone(),
                became_ready: became_ready.clone(),
            }),
            Arc::new(Gate {
                id: MOUNT_ID,
                ready: ready.clone(),
                became_ready: became_ready.clone(),
            }),
        ];
        let options = ServerOptions {
            // Empty admits nobody, as the export policy says.
            client_filter: Some(allow_networks(settings.allowed_clients.clone())),
            metrics: metrics.clone(),
            idle_timeout: settings.idle_timeout,
            max_connections: settings.max_connections,
            max_connections_per_client: settings.max_connections_per_client,
            ..ServerOptions::default()
        };
        let nfs = RpcServer::bind(SocketAddr::new(ip, settings.port), programs, options).await?;
        let port = nfs.local_addr().port();
        let portmapper = if settings.portmapper {
            Self::portmapper(ip, port, metrics).await
        } else {
            None
        };
        let meta = MetaClient::for_cluster(network.clone(), ip, config);
        let ownership = Ownership::new(meta.clone(), config, network, ip, client.clone())
            .map_err(|err| AccessError::Config(err.to_string()))?;
        ownership
            .metrics()
            .register(registry)
            .map_err(AccessError::Metrics)?;
        let lease = LeaseKeeper::new(ownership.clone(), gate, node_name);
        let renewing = tokio::spawn(lease.clone().run());
        let failing_over =
            AutoFailover::new(ownership.clone(), config).map(|auto| tokio::spawn(auto.run()));
        let data = FileData::new(ownership, config.cluster.block_size);
        let name = node_name.to_string();
        let first_lease = lease.clone();
        let init = tokio::spawn(async move {
            let (ns, handles) = connect(&name, meta, attribute_cache).await;
            // Serve once the ownership lease is held: a write before would
            // only be refused.
            let mut attempts = 0u32;
            while let Err(err) = first_lease.renew().await {
                attempts += 1;
                if attempts % 50 == 1 {
                    tracing::warn!(node = %name, %err, "no ownership lease yet; retrying");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let capacity: Arc<dyn CapacityProvider> = Arc::new(SiteCapacity(client));
            let nfs = NfsProgram::new(ns.clone(), data, handles, policy.clone(), capacity);
            let mount = MountProgram::new(ns, handles, policy);
            if ready.set(Ready { nfs, mount }).is_err() {
                tracing::error!(node = %name, "access server initialised twice");
            }
            ready_sender.send_replace(true);
            tracing::info!(node = %name, "NFS export ready");
        });
        Ok(AccessServer {
            nfs,
            portmapper,
            init,
            became_ready,
            lease,
            renewing,
            failing_over,
        })
    }

    /// The portmapper on `ip`:111 answering `port` for NFS and MOUNT, if
    /// that port can be bound (it needs privileges and may be taken).
    async fn portmapper(ip: IpAddr, port: u16, metrics: RpcMetrics) -> Option<RpcServer> {
        let addr = SocketAddr::new(ip, PORTMAPPER_PORT);
        let program: Arc<dyn RpcProgram> = Arc::new(PortmapProgram::new(port, port));
        let options = ServerOptions {
            metrics,
            ..ServerOptions::default()
        };
        match RpcServer::bind(addr, vec![program], options).await {
            Ok(server) => Some(server),
            Err(err) => {
                tracing::warn!(%err, "no portmapper: clients must be given the port \
                    (e.g. mount -o port={port},mountport={port},nfsvers=3,tcp)");
                None
            }
        }
    }

    /// The address NFS and MOUNT are served on.
    pub fn nfs_addr(&self) -> SocketAddr {
        self.nfs.local_addr()
    }

    /// Whether the portmapper answers on port 111 of the node's address.
    pub fn has_portmapper(&self) -> bool {
        self.portmapper.is_some()
    }

    /// Whether the export is connected to the cluster and serving.
    pub fn is_ready(&self) -> bool {
        *self.became_ready.borrow()
    }

    /// Waits until the export is connected to the cluster and serving.
    pub async fn wait_ready(&self) {
        let mut became_ready = self.became_ready.clone();
        // An error means the server was dropped: nothing left to wait for.
        let _ = became_ready.wait_for(|r| *r).await.is_ok();
    }

    /// Stops serving: no new connections, calls in flight finish (for at
    /// most [`STOP_DEADLINE`]). Its ownership lease is then released: a
    /// site taking its files over need not wait for the lease to run out.
    pub async fn stop(self) -> Result<(), AccessError> {
        self.init.abort();
        if let Some(portmapper) = self.portmapper {
            portmapper.shutdown(STOP_DEADLINE).await?;
        }
        let stopped = self.nfs.shutdown(STOP_DEADLINE).await;
        self.renewing.abort();
        if let Some(task) = &self.failing_over {
            task.abort();
        }
        if stopped.is_ok() {
            self.lease.release().await;
        }
        stopped
    }

    /// Stops at once: every connection dropped, calls abandoned.
    pub fn kill(self) {
        self.init.abort();
        self.renewing.abort();
        if let Some(task) = &self.failing_over {
            task.abort();
        }
        drop(self.portmapper);
        drop(self.nfs);
    }
}

/// Reaches meta-kvs until the root directory and the handle generation
/// are there (retrying: meta-kvs may have no leader yet).
async fn connect(
    name: &str,
    meta: MetaClient,
    attribute_cache: Duration,
) -> (Namespace, HandleCodec) {
    let ns = Namespace::new(meta.clone()).with_inode_cache(attribute_cache);
    let mut attempts = 0u32;
    loop {
        let result = async {
            ns.ensure_root().await?;
            HandleCodec::load(&meta).await
        }
        .await;
        match result {
            Ok(handles) => return (ns, handles),
            Err(err) => {
                attempts += 1;
                if attempts % 20 == 1 {
                    tracing::info!(node = %name, %err, "waiting for meta-kvs");
                }
                tokio::time::sleep(INIT_RETRY).await;
            }
        }
    }
}

/// FSSTAT's capacity: the site's core servers (each block is kept once per
/// site once replicated).
struct SiteCapacity(BlockClient);

impl CapacityProvider for SiteCapacity {
    fn capacity(&self) -> BoxFuture<'_, Option<(u64, u64)>> {
        self.0.site_capacity().boxed()
    }
}
