//! A running meta-kvs member: store, driver, transport, services.
//!
//! The driver runs on a thread of its own (with a single-threaded tokio
//! runtime for its timers and queue): each Raft `Ready` is persisted with a
//! synced RocksDB write (an fsync, ≈ 3 ms here), which must never block a
//! worker of the runtime every other role of the process shares. The
//! transport's per-peer tasks and the services stay on the shared runtime.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use geonfs_proto::meta::meta_admin_server::MetaAdminServer;
use geonfs_proto::meta::meta_kv_server::MetaKvServer;
use geonfs_proto::raft::raft_transport_server::RaftTransportServer;
use geonfs_rpc::Network;
use geonfs_site_config::ClusterConfig;
use raft::eraftpb::ConfState;
use tokio::sync::{mpsc, oneshot};

use crate::driver::{Driver, DriverMsg, StatusInfo};
use crate::error::MetaError;
use crate::ids::{raft_id, Directory};
use crate::metrics::MetaMetrics;
use crate::service::{DriverHandle, MetaAdminService, MetaKvService};
use crate::transport::{RaftService, Transport, MAX_RAFT_MESSAGE};
use crate::MetaStore;

/// Tunables of a member.
#[derive(Clone, Debug)]
pub struct MetaOptions {
    /// Raft tick.
    pub tick: Duration,
    /// Election timeout in ticks.
    pub election_tick: usize,
    /// Heartbeat interval in ticks.
    pub heartbeat_tick: usize,
    /// Compact the log when it holds more applied entries than this.
    pub compact_threshold: u64,
    /// Entries kept in the log after compaction.
    pub compact_keep: u64,
    /// How long a request waits for the driver.
    pub request_timeout: Duration,
}

impl Default for MetaOptions {
    fn default() -> Self {
        MetaOptions {
            tick: Duration::from_millis(100),
            election_tick: 10,
            heartbeat_tick: 2,
            compact_threshold: 10_000,
            compact_keep: 1_000,
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl MetaOptions {
    /// The options of a member of `config`: its Raft timing from `[meta]`
    /// and the inter-site round trip ([`geonfs_site_config::MetaTiming`]),
    /// and a request timeout of `max(5s, 4 × rtt)`.
    pub fn for_cluster(config: &ClusterConfig) -> Self {
        let timing = config.meta_timing();
        MetaOptions {
            tick: timing.tick,
            election_tick: timing.election_ticks(),
            heartbeat_tick: timing.heartbeat_ticks(),
            request_timeout: Duration::from_secs(5).max(timing.inter_site_rtt * 4),
            ..MetaOptions::default()
        }
    }

    /// Options with a small compaction threshold (tests).
    pub fn with_compaction(mut self, threshold: u64, keep: u64) -> Self {
        self.compact_threshold = threshold.max(1);
        self.compact_keep = keep.min(threshold);
        self
    }
}

/// A running member.
pub struct MetaMember {
    id: u64,
    name: String,
    tx: mpsc::Sender<DriverMsg>,
    handle: DriverHandle,
    /// Signalled when the driver's thread ends.
    done: Option<oneshot::Receiver<()>>,
    /// The driver's thread, joined before the member is reported gone.
    thread: Option<std::thread::JoinHandle<()>>,
    /// Set to end the driver before its next step, persisting nothing more.
    killed: Arc<AtomicBool>,
    metrics: MetaMetrics,
}

impl std::fmt::Debug for MetaMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaMember")
            .field("name", &self.name)
            .field("id", &self.id)
            .finish()
    }
}

impl MetaMember {
    /// Opens the store in `data_dir`, bootstraps it if this is an initial
    /// voter's first start, and starts the driver on its own thread.
    pub fn start(
        config: &ClusterConfig,
        name: &str,
        address: SocketAddr,
        network: Network,
        data_dir: &Path,
        options: MetaOptions,
    ) -> Result<Self, MetaError> {
        let store = MetaStore::open_in_data_dir(data_dir)?;
        let voters: Vec<u64> = config
            .cluster
            .meta_voters
            .iter()
            .map(|n| raft_id(n))
            .collect();
        let is_voter = config.cluster.meta_voters.iter().any(|n| n == name);
        bootstrap_if_needed(&store, voters, is_voter)?;
        let id = raft_id(name);
        let dir = Directory::from_config(config);
        dir.insert(name.to_string(), address);
        let metrics = MetaMetrics::new();
        let (tx, rx) = mpsc::channel(4096);
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|err| MetaError::Thread(std::io::Error::other(err)))?;
        let transport = Transport::new(
            id,
            address.ip(),
            network,
            dir.clone(),
            tx.clone(),
            metrics.clone(),
            runtime,
        );
        let driver = Driver::new(
            id,
            name,
            store,
            dir.clone(),
            transport,
            metrics.clone(),
            options.clone(),
        )?;
        let killed = Arc::new(AtomicBool::new(false));
        let (done, thread) = spawn_driver(name, driver, rx, killed.clone())?;
        let handle = DriverHandle::new(tx.clone(), options.request_timeout, dir);
        tracing::info!(member = %name, id, "meta member started");
        Ok(MetaMember {
            id,
            name: name.to_string(),
            tx,
            handle,
            done: Some(done),
            thread: Some(thread),
            killed,
            metrics,
        })
    }

    /// Adds the MetaKv, MetaAdmin and RaftTransport services to `routes`.
    pub fn add_routes(&self, routes: tonic::service::Routes) -> tonic::service::Routes {
        routes
            .add_service(MetaKvServer::new(MetaKvService::new(self.handle.clone())))
            .add_service(MetaAdminServer::new(MetaAdminService::new(
                self.handle.clone(),
            )))
            .add_service(
                RaftTransportServer::new(RaftService::new(self.id, self.tx.clone()))
                    .max_decoding_message_size(MAX_RAFT_MESSAGE)
                    .max_encoding_message_size(MAX_RAFT_MESSAGE),
            )
    }

    /// The member's Raft id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Its metrics (unregistered).
    pub fn metrics(&self) -> &MetaMetrics {
        &self.metrics
    }

    /// Its status.
    pub async fn status(&self) -> Result<StatusInfo, MetaError> {
        self.handle.status().await
    }

    /// Stops the driver after its current step (every write it acknowledged
    /// is already synced).
    pub async fn stop(mut self) {
        let _ = self.tx.send(DriverMsg::Shutdown).await;
        if let Some(mut done) = self.done.take() {
            if tokio::time::timeout(Duration::from_secs(5), &mut done)
                .await
                .is_err()
            {
                self.killed.store(true, Ordering::Release);
                let _ = done.await;
            }
        }
        self.join_thread().await;
        tracing::info!(member = %self.name, "meta member stopped");
    }

    /// Ends the driver before its next step, persisting nothing more.
    pub async fn kill(mut self) {
        self.killed.store(true, Ordering::Release);
        // Wakes a driver waiting for its next tick.
        let _ = self.tx.try_send(DriverMsg::Shutdown);
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
        self.join_thread().await;
        tracing::info!(member = %self.name, "meta member killed");
    }

    /// Joins the driver's thread, whose end was signalled: it may still be
    /// running its thread-exit destructors (RocksDB's among them), and a
    /// process that exits meanwhile aborts ("pthread lock: Invalid
    /// argument").
    async fn join_thread(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for MetaMember {
    /// A member dropped without `stop` or `kill` (a test that ends with its
    /// cluster in scope) ends its driver and waits for its thread: a
    /// driver step is synchronous and short (its sends to peers never
    /// block), and a process must not exit while the driver's RocksDB
    /// store is open or its thread still exiting — C++ static destructors
    /// would run under it and abort the process.
    fn drop(&mut self) {
        self.killed.store(true, Ordering::Release);
        let _ = self.tx.try_send(DriverMsg::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `driver` on a thread named after the member, with its own
/// single-threaded runtime; the receiver is signalled when it ends.
fn spawn_driver(
    name: &str,
    driver: Driver,
    rx: mpsc::Receiver<DriverMsg>,
    killed: Arc<AtomicBool>,
) -> Result<(oneshot::Receiver<()>, std::thread::JoinHandle<()>), MetaError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(MetaError::Thread)?;
    let (done_tx, done) = oneshot::channel();
    let span = tracing::Span::current();
    let thread = std::thread::Builder::new()
        .name(format!("meta-{name}"))
        .spawn(move || {
            let _entered = span.enter();
            runtime.block_on(driver.run(rx, killed));
            // Its tasks (and whatever they hold) end before the member is
            // reported stopped: a process that exits right after `stop`
            // has no RocksDB or Raft work left running.
            drop(runtime);
            let _ = done_tx.send(());
        })
        .map_err(MetaError::Thread)?;
    Ok((done, thread))
}

/// Bootstraps a new cluster's store when needed: the initial voters only.
fn bootstrap_if_needed(
    store: &MetaStore,
    voters: Vec<u64>,
    is_voter: bool,
) -> Result<(), MetaError> {
    if !store.is_bootstrapped() && is_voter {
        let cs = ConfState {
            voters,
            ..Default::default()
        };
        store.bootstrap(&cs)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-member cluster whose member stores in `data_dir`.
    fn one_member(data_dir: &Path) -> ClusterConfig {
        let text = format!(
            "[cluster]\nname = \"t\"\nreplication_factor = 1\nsecret = \"0123456789abcdef0123\"\n\n\
             [tls]\ninsecure = true\n\n\
             [[site]]\nname = \"a\"\nsubnets = [\"127.0.0.0/8\"]\ntakes_writes = false\n\n\
             [[node]]\nname = \"m\"\naddress = \"127.0.0.1:1\"\nroles = [\"core\", \"meta\"]\ncapacity = \"1GiB\"\ndata_dir = {:?}\n",
            data_dir.display().to_string()
        );
        ClusterConfig::from_toml_str(&text).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_dropped_without_stop_has_closed_its_store_when_the_drop_returns() {
        let dir = tempfile::tempdir().unwrap();
        let config = one_member(dir.path());
        let network = Network::new(geonfs_rpc::NetworkOptions::from_config(&config, &[])).unwrap();
        let address = config.node("m").unwrap().address;
        for round in 0..10 {
            let member = MetaMember::start(
                &config,
                "m",
                address,
                network.clone(),
                dir.path(),
                MetaOptions::default(),
            )
            .unwrap();
            drop(member);
            // RocksDB locks its directory while open: opening it again
            // right away works only if the driver closed it already.
            let reopened = MetaStore::open_in_data_dir(dir.path());
            assert!(reopened.is_ok(), "round {round}: {reopened:?}");
        }
    }
}
