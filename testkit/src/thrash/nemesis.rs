//! The thrasher's nemesis: one fault at a time on the in-process cluster
//! while the clients run — kill -9 and restart of a core, an access
//! server or a meta voter, a cut between two sites or around one, and a
//! chunk damaged on a core's disk — each healed before the next.
//!
//! A damaged chunk stays damaged until the system replaces the copy (a
//! read that meets it repairs it; the thrasher runs no scrub), so "one
//! fault at a time" holds per block: a chunk is damaged only in a block
//! with no other copy still damaged ([`Damaged`]). Damaging every copy of
//! a block, one site after the other, would lose it whatever the system
//! did.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context;
use geonfs_proto::domain::{BlockId, BlockRange, BlockRead, FileId};

use super::client::Addresses;
use crate::cluster::TestCluster;
use crate::rng::Rng;

/// One fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 of a node (core, access server or meta voter), restarted
    /// at the heal.
    Kill(String),
    /// Both directions between two sites cut.
    CutSites(String, String),
    /// A site cut from every other.
    IsolateSite(String),
    /// The core stopped, one byte of a stored chunk flipped (its checksum
    /// kept), the core started again.
    Corrupt(String),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Kill(node) => write!(f, "kill -9 {node}"),
            Fault::CutSites(a, b) => write!(f, "cut {a}-{b}"),
            Fault::IsolateSite(site) => write!(f, "isolate {site}"),
            Fault::Corrupt(core) => write!(f, "corrupt a chunk on {core}"),
        }
    }
}

/// Picks a fault of the cluster's sites (`sites`).
pub fn pick(rng: &mut Rng, cluster: &TestCluster, sites: &[String]) -> Fault {
    let site = |rng: &mut Rng| sites[rng.below(sites.len() as u64) as usize].clone();
    let cores = cluster.core_names();
    let core = |rng: &mut Rng| cores[rng.below(cores.len() as u64) as usize].clone();
    match rng.below(10) {
        0..=2 => Fault::Kill(core(rng)),
        3 => match site(rng) {
            site if site == "a" && rng.below(2) == 1 => Fault::Kill(super::SECOND_DOOR.1.into()),
            site => Fault::Kill(format!("{site}-access-1")),
        },
        4 => {
            let metas = cluster.meta_names();
            Fault::Kill(metas[rng.below(metas.len() as u64) as usize].clone())
        }
        5 | 6 => {
            let a = site(rng);
            let others: Vec<&String> = sites.iter().filter(|s| **s != a).collect();
            let b = others[rng.below(others.len() as u64) as usize].clone();
            Fault::CutSites(a, b)
        }
        7 => Fault::IsolateSite(site(rng)),
        _ => Fault::Corrupt(core(rng)),
    }
}

/// The copies the nemesis damaged: (core, block).
#[derive(Debug, Default)]
pub struct Damaged(Vec<(String, BlockId)>);

impl Damaged {
    /// The blocks with a copy still damaged: the copies since replaced
    /// (repaired, overwritten, trimmed, deleted) or whose core is down are
    /// forgotten first (a down core's copy is checked at the next call).
    async fn still_damaged(&mut self, cluster: &TestCluster) -> BTreeSet<BlockId> {
        let mut kept = Vec::new();
        for (core, block) in self.0.drain(..) {
            let Some(server) = cluster.node(&core).ok().and_then(|n| n.core()) else {
                kept.push((core, block));
                continue;
            };
            // The whole copy: every chunk's checksum is checked.
            let length = match server.store().block_info(block).await {
                Ok(Some(info)) => info.length,
                _ => continue,
            };
            let Ok(range) = BlockRange::new(0, length) else {
                continue;
            };
            let whole = BlockRead {
                block,
                range,
                owner_epoch: None,
            };
            if server.store().read(whole).await.is_err() {
                kept.push((core, block));
            }
        }
        self.0 = kept;
        self.0.iter().map(|(_, block)| *block).collect()
    }
}

/// Applies `fault`; `Corrupt` is over when this returns.
pub async fn apply(
    cluster: &mut TestCluster,
    fault: &Fault,
    rng: &mut Rng,
    sites: &[String],
    damaged: &mut Damaged,
) -> anyhow::Result<()> {
    match fault {
        Fault::Kill(node) => cluster.kill_node(node).await,
        Fault::CutSites(a, b) => cluster.cut_sites(a, b),
        Fault::IsolateSite(site) => {
            for other in sites.iter().filter(|s| *s != site) {
                cluster.cut_sites(site, other)?;
            }
            Ok(())
        }
        Fault::Corrupt(core) => {
            let data_dir = cluster
                .config()
                .node(core)
                .and_then(|n| n.data_dir.clone())
                .with_context(|| format!("{core} has no data directory"))?;
            let spared = damaged.still_damaged(cluster).await;
            cluster.kill_node(core).await?;
            let pick = rng.next_u64();
            let block = tokio::task::spawn_blocking(move || damage_chunk(&data_dir, pick, &spared))
                .await
                .context("damage task")??;
            tracing::info!(%core, ?block, "chunk damaged");
            if let Some(block) = block {
                damaged.0.push((core.clone(), block));
            }
            cluster.restart_node(core).await
        }
    }
}

/// Undoes `fault`: restarts what was killed (publishing a restarted
/// access server's address) and heals every cut.
pub async fn heal(
    cluster: &mut TestCluster,
    fault: &Fault,
    addresses: &Addresses,
) -> anyhow::Result<()> {
    cluster.heal_all();
    if let Fault::Kill(node) = fault {
        cluster.restart_node(node).await?;
        if let Some(door) = super::door_of(node) {
            let addr = cluster.ready_access(node, Duration::from_secs(60)).await?;
            addresses
                .lock()
                .map_err(|_| anyhow::anyhow!("address book poisoned"))?
                .insert(door, addr);
        }
    }
    Ok(())
}

/// Flips one data byte of the stored chunk chosen by `pick` in the block
/// store under `data_dir` (the core must be down), keeping its checksum:
/// the store must see the damage. Chunks of the `spared` blocks are left
/// alone. The key layout is the store's on-disk format
/// (`c | file_id BE | index BE | chunk BE`, value `crc32c | data`).
/// Returns the damaged chunk's block, if there was one to damage.
fn damage_chunk(
    data_dir: &std::path::Path,
    pick: u64,
    spared: &BTreeSet<BlockId>,
) -> anyhow::Result<Option<BlockId>> {
    let db = rocksdb::DB::open_default(data_dir.join("blocks")).context("open the block store")?;
    let block_of = |key: &[u8]| -> Option<BlockId> {
        let file_id = FileId(u64::from_be_bytes(key.get(1..9)?.try_into().ok()?));
        let index = u64::from_be_bytes(key.get(9..17)?.try_into().ok()?);
        Some(BlockId { file_id, index })
    };
    let chunks: Vec<(Box<[u8]>, BlockId)> = db
        .prefix_iterator([b'c'])
        .map_while(Result::ok)
        .take_while(|(key, _)| key.first() == Some(&b'c'))
        .filter(|(_, value)| value.len() > 4)
        .filter_map(|(key, _)| block_of(&key).map(|block| (key, block)))
        .filter(|(_, block)| !spared.contains(block))
        .collect();
    if chunks.is_empty() {
        return Ok(None);
    }
    let (key, block) = &chunks[(pick % chunks.len() as u64) as usize];
    let mut value = db
        .get(key)
        .context("read the chunk")?
        .context("the chunk went away")?;
    let at = 4 + (pick >> 16) as usize % (value.len() - 4);
    value[at] ^= 0x5a;
    let mut options = rocksdb::WriteOptions::default();
    options.set_sync(true);
    db.put_opt(key, &value, &options)
        .context("write the chunk")?;
    Ok(Some(*block))
}
