//! Stable Raft ids of meta nodes and the member directory (id ↔ name ↔
//! address).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use geonfs_site_config::ClusterConfig;

/// The Raft id of the meta node named `name`: FNV-1a 64 of the name, never 0
/// (Raft's "none"). Stable across config reorderings.
pub fn raft_id(name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    if hash == 0 {
        1
    } else {
        hash
    }
}

/// One known meta node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its name.
    pub name: String,
    /// Its address.
    pub address: SocketAddr,
}

/// The directory of meta nodes, seeded from the config and extended by
/// membership changes. Cheap to clone; clones share the map.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    inner: Arc<RwLock<BTreeMap<u64, PeerInfo>>>,
}

impl Directory {
    /// Every node with the meta role in `config`.
    pub fn from_config(config: &ClusterConfig) -> Self {
        let dir = Directory::default();
        for node in config.nodes.iter().filter(|n| n.roles.meta) {
            dir.insert(node.name.clone(), node.address);
        }
        dir
    }

    /// Adds or updates a node.
    pub fn insert(&self, name: String, address: SocketAddr) {
        let id = raft_id(&name);
        let mut map = self.inner.write().unwrap_or_else(|p| p.into_inner());
        map.insert(id, PeerInfo { name, address });
    }

    /// The node with Raft id `id`.
    pub fn get(&self, id: u64) -> Option<PeerInfo> {
        let map = self.inner.read().unwrap_or_else(|p| p.into_inner());
        map.get(&id).cloned()
    }

    /// The address of node `id`.
    pub fn address(&self, id: u64) -> Option<SocketAddr> {
        self.get(id).map(|p| p.address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_nonzero() {
        assert_eq!(raft_id("a-meta-1"), raft_id("a-meta-1"));
        assert_ne!(raft_id("a-meta-1"), raft_id("b-meta-1"));
        assert_ne!(raft_id(""), 0);
    }
}
