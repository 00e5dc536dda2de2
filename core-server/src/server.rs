//! The core-server role of a node: its block store and the services that
//! expose it.

use std::sync::Arc;

use geonfs_block_manager::{Replicator, ReplicatorMetrics, ReplicatorOptions};
use geonfs_proto::core::core_data_server::CoreDataServer;
use geonfs_proto::replication::block_replication_server::BlockReplicationServer;
use geonfs_rpc::Network;
use geonfs_site_config::ClusterConfig;

use crate::replication::BlockReplicationService;

use crate::service::CoreDataService;
use crate::site_fences::{spawn_catch_up, SitePeers};
use crate::store::BlockStore;
use crate::{CoreError, CoreMetrics};

/// Bytes a request may carry beyond one block (headers, framing).
const MESSAGE_SLACK: usize = 1024 * 1024;

/// The core-server role of one node.
#[derive(Debug)]
pub struct CoreServer {
    store: BlockStore,
    block_size: u64,
    name: String,
    replicator: Option<Replicator>,
    replicator_metrics: ReplicatorMetrics,
    /// The other cores of the site (fence catch-up and relay).
    peers: Option<SitePeers>,
    /// The fence catch-up started by [`CoreServer::catch_up_fences`].
    catch_up: Option<tokio::task::JoinHandle<()>>,
}

impl CoreServer {
    /// Opens the block store of node `node_name` (its `data_dir` and
    /// `capacity`, the cluster's block size), calling the site's other
    /// cores through `network`. Blocking (RocksDB recovery). When the site
    /// has other cores, the store refuses requests carrying an ownership
    /// epoch until [`CoreServer::catch_up_fences`] has copied a peer's
    /// fences (see the store's `fence` module).
    pub fn open(
        config: &ClusterConfig,
        node_name: &str,
        network: Network,
    ) -> Result<Self, CoreError> {
        let node = config
            .node(node_name)
            .ok_or_else(|| CoreError::Config(format!("no node named {node_name:?}")))?;
        let data_dir = node.data_dir.as_ref().ok_or_else(|| {
            CoreError::Config(format!(
                "node {node_name:?} has the core role but no data_dir"
            ))
        })?;
        let peers = SitePeers::new(config, node_name, network)?;
        let store = BlockStore::open(data_dir, node.capacity, CoreMetrics::new())?;
        if peers.is_some() {
            store.require_fence_sync();
        }
        Ok(CoreServer {
            store,
            block_size: config.cluster.block_size,
            name: node_name.to_string(),
            replicator: None,
            replicator_metrics: ReplicatorMetrics::new(),
            peers,
            catch_up: None,
        })
    }

    /// Starts copying the fences of a peer of the site in the background
    /// (retrying until one answers); once done, requests carrying an
    /// ownership epoch are admitted. Call it once the services serve (the
    /// peers do the same with this core). A second call does nothing.
    pub fn catch_up_fences(&mut self) {
        if self.catch_up.is_some() {
            return;
        }
        if let Some(peers) = &self.peers {
            self.catch_up = Some(spawn_catch_up(peers.clone(), self.store.clone()));
        }
    }

    /// The block store (the block manager's API).
    pub fn store(&self) -> &BlockStore {
        &self.store
    }

    /// The store's metrics (unregistered).
    pub fn metrics(&self) -> &CoreMetrics {
        self.store.metrics()
    }

    /// The geo-replication worker's metrics (unregistered; live once
    /// [`CoreServer::start_replication`] ran).
    pub fn replicator_metrics(&self) -> &ReplicatorMetrics {
        &self.replicator_metrics
    }

    /// Starts the geo-replication worker on the store's queue, calling the
    /// other cores through `network`. A second call does nothing.
    pub fn start_replication(
        &mut self,
        network: Network,
        config: &ClusterConfig,
        options: ReplicatorOptions,
    ) -> Result<(), CoreError> {
        if self.replicator.is_some() {
            return Ok(());
        }
        // Set-asides a crash cut short (`store::fence`); until then the
        // copies concerned are refused wherever they are shipped.
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(err) = store.resume_set_asides().await {
                tracing::error!(%err, "cannot finish setting aside copies of a lost owner");
            }
        });
        let replicator = Replicator::start(
            Arc::new(self.store.clone()),
            network,
            config,
            &self.name,
            options,
            self.replicator_metrics.clone(),
        )
        .map_err(|err| CoreError::Config(err.to_string()))?;
        self.replicator = Some(replicator);
        Ok(())
    }

    /// Adds the CoreData and BlockReplication services to `routes`.
    pub fn add_routes(&self, routes: tonic::service::Routes) -> tonic::service::Routes {
        let max = usize::try_from(self.block_size)
            .unwrap_or(usize::MAX)
            .saturating_add(MESSAGE_SLACK);
        routes
            .add_service(
                CoreDataServer::new(CoreDataService::new(
                    self.store.clone(),
                    self.block_size,
                    self.peers.clone(),
                ))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            )
            .add_service(
                BlockReplicationServer::new(BlockReplicationService::new(
                    self.store.clone(),
                    self.block_size,
                ))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            )
    }

    /// Stops gracefully: syncs the WAL (every held write becomes durable)
    /// and closes the store. Call it after the server stopped taking calls.
    pub async fn stop(self) -> Result<(), CoreError> {
        if let Some(catch_up) = self.catch_up {
            catch_up.abort();
        }
        if let Some(replicator) = self.replicator {
            replicator.stop().await;
        }
        self.store.close(true).await
    }

    /// Stops as if the process were killed: closes the store without syncing
    /// anything (held writes stay in the page cache, as after a kill -9).
    pub async fn kill(self) {
        if let Some(catch_up) = self.catch_up {
            catch_up.abort();
        }
        if let Some(replicator) = self.replicator {
            replicator.stop().await;
        }
        if let Err(err) = self.store.close(false).await {
            tracing::warn!(%err, "closing the block store after a kill failed");
        }
    }
}
