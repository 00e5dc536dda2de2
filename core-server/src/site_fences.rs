//! The other cores of this core's site, as far as ownership fences go: the
//! catch-up of fences at start and the relay of a handover's fence.
//!
//! Why both exist (the argument is in the store's `fence` module doc): a
//! handover fences all but one core of a site, so a core may miss a fence
//! while it is down or cut off from the new owner. At start a core admits
//! no request carrying an ownership epoch until it has copied every fence
//! of one peer of its site ([`SitePeers::catch_up`], run by
//! [`spawn_catch_up`]); every peer holds the fences it missed. A core cut
//! off from the new owner but not from its site is fenced by a peer that
//! the new owner reached ([`SitePeers::relay`]).

use std::net::IpAddr;
use std::time::Duration;

use geonfs_proto::core as wire;
use geonfs_proto::core::core_data_client::CoreDataClient;
use geonfs_proto::domain::{Epoch, FileId};
use geonfs_rpc::{Network, RpcChannel};
use geonfs_site_config::{ClusterConfig, Node};

use crate::store::fence::FenceRaise;
use crate::store::BlockStore;
use crate::CoreError;

/// Fences asked for per `ListFences` page.
const FENCE_PAGE: u32 = 10_000;
/// The first and the longest pause between two catch-up rounds that found
/// no peer answering.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// The other core servers of one core's site and the network to call them.
#[derive(Clone, Debug)]
pub(crate) struct SitePeers {
    network: Network,
    from: IpAddr,
    peers: Vec<Node>,
}

impl SitePeers {
    /// The peers of core `name`; `None` when its site has no other core.
    pub(crate) fn new(
        config: &ClusterConfig,
        name: &str,
        network: Network,
    ) -> Result<Option<Self>, CoreError> {
        let me = config
            .node(name)
            .ok_or_else(|| CoreError::Config(format!("no node named {name:?}")))?;
        let peers: Vec<Node> = config
            .nodes
            .iter()
            .filter(|n| n.roles.core && n.site == me.site && n.name != me.name)
            .cloned()
            .collect();
        Ok((!peers.is_empty()).then(|| SitePeers {
            network,
            from: me.address.ip(),
            peers,
        }))
    }

    fn client(&self, node: &Node) -> Result<CoreDataClient<RpcChannel>, String> {
        let channel = self
            .network
            .channel(self.from, node.address)
            .map_err(|err| err.to_string())?;
        Ok(CoreDataClient::new(channel))
    }

    /// Raises `file_id`'s fence as `raise` says on each of the peers
    /// `names` (others are ignored), in parallel; the names of those that
    /// did.
    pub(crate) async fn relay(
        &self,
        names: &[String],
        file_id: FileId,
        raise: FenceRaise,
    ) -> Vec<String> {
        let epoch = raise.epoch;
        let targets = self.peers.iter().filter(|n| names.contains(&n.name));
        let calls = targets.map(|node| async move {
            let mut client = self.client(node)?;
            let request = wire::FenceRequest {
                file_id: file_id.0,
                epoch: Epoch::to_wire(epoch),
                relay_to: Vec::new(),
                lost_below: Epoch::to_wire(raise.lost_below),
                adopt: raise.adopt,
            };
            let reply = client
                .fence(request)
                .await
                .map_err(|status| status.message().to_string())?;
            if Epoch::from_wire(reply.into_inner().epoch) >= epoch {
                Ok(node.name.clone())
            } else {
                Err(format!("{} kept a lower fence", node.name))
            }
        });
        let mut relayed = Vec::new();
        for result in futures::future::join_all(calls).await {
            match result {
                Ok(name) => relayed.push(name),
                Err(err) => tracing::warn!(%file_id, ?epoch, %err, "fence relay failed"),
            }
        }
        relayed
    }

    /// Copies every fence of the first peer that lists them all into
    /// `store` (raising only); the peer's name and the fences raised.
    /// Fails when no peer answered.
    pub(crate) async fn catch_up(&self, store: &BlockStore) -> Result<(String, usize), String> {
        let mut errors = Vec::new();
        for peer in &self.peers {
            match self.copy_fences(peer, store).await {
                Ok(raised) => return Ok((peer.name.clone(), raised)),
                Err(err) => errors.push(format!("{}: {err}", peer.name)),
            }
        }
        Err(errors.join("; "))
    }

    async fn copy_fences(&self, peer: &Node, store: &BlockStore) -> Result<usize, String> {
        let mut client = self.client(peer)?;
        let mut after = None;
        let mut raised = 0;
        loop {
            let reply = client
                .list_fences(wire::ListFencesRequest {
                    after_file_id: after,
                    limit: FENCE_PAGE,
                })
                .await
                .map_err(|status| status.message().to_string())?
                .into_inner();
            for fence in &reply.fences {
                let file_id = FileId(fence.file_id);
                let own = store.file_fence(file_id);
                let epoch = Epoch::from_wire(fence.epoch);
                let lost_below = Epoch::from_wire(fence.lost_below);
                if epoch > own.epoch || lost_below > own.lost_below {
                    // Learned, not adopted: this core was not seen by a
                    // takeover it missed (see `store::fence`).
                    let raise = FenceRaise {
                        epoch,
                        lost_below,
                        adopt: false,
                    };
                    store
                        .raise_fence(file_id, raise)
                        .await
                        .map_err(|err| err.to_string())?;
                    raised += 1;
                }
            }
            after = reply.fences.last().map(|f| f.file_id);
            if !reply.more || after.is_none() {
                return Ok(raised);
            }
        }
    }
}

/// Catches `store`'s fences up with a peer of its site in the background
/// (retrying until one answers) and then lets the store admit requests
/// carrying an epoch again. The caller has made the store refuse them
/// ([`BlockStore::require_fence_sync`]) before it serves anything.
pub(crate) fn spawn_catch_up(peers: SitePeers, store: BlockStore) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut pause = RETRY_FIRST;
        let mut rounds = 0u32;
        loop {
            match peers.catch_up(&store).await {
                Ok((peer, raised)) => {
                    store.mark_fences_synced();
                    tracing::info!(%peer, raised, "ownership fences caught up with a site peer");
                    return;
                }
                Err(err) => {
                    rounds += 1;
                    // Every few seconds, not every round.
                    if rounds % 10 == 1 {
                        tracing::warn!(%err, rounds,
                            "no site peer listed its fences yet; requests carrying an ownership \
                             epoch are refused until one does");
                    }
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RETRY_MAX);
        }
    })
}
