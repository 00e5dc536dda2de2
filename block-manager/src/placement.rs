//! Placement of a block's copies: which core servers of a site hold it, and
//! which sites hold its geo copies.
//!
//! Both choices use rendezvous (highest-random-weight) hashing: every
//! candidate gets a score from a deterministic 64-bit hash of (block id,
//! candidate name) and the candidates are ranked by score, best first. A
//! candidate joining or leaving only moves the blocks for which it is (or
//! becomes) among the best — no global reshuffle.
//!
//! Core servers are weighted by capacity with the logarithmic method: with
//! `h ∈ (0, 1)` derived from the hash, `score = −w / ln(h)`. The chance that
//! a node ranks first is then exactly its share of the total weight, so a
//! node with twice the capacity gets twice the blocks. Sites are ranked
//! unweighted (every site holds at most one copy of a block).
//!
//! The hash is SplitMix64 over FNV-1a of the name, mixed with the block id;
//! it is fixed here (no seeded std hasher), so every process of the cluster
//! computes the same placement for the same membership.

use geonfs_proto::domain::BlockId;
use geonfs_site_config::{ClusterConfig, Node, SiteId};

/// Domain separation between ranking cores and ranking sites.
const CORE_DOMAIN: u64 = 0x636f_7265_5f68_7277; // "core_hrw"
const SITE_DOMAIN: u64 = 0x7369_7465_5f68_7277; // "site_hrw"

/// Why no placement could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// Fewer than two live core servers in the site: a write cannot be
    /// acknowledged there (docs/ARCHITECTURE.md#invariant-1 needs two distinct cores).
    #[error(
        "site {site} has {live} live core server(s) of {total} configured; \
         a write needs 2 distinct live cores in the writer's site"
    )]
    NotEnoughCores {
        /// The site's name.
        site: String,
        /// How many of its cores are live.
        live: usize,
        /// How many core servers the site has in the configuration.
        total: usize,
    },
    /// The site id does not belong to the configuration.
    #[error("{0} is not a site of this cluster")]
    UnknownSite(SiteId),
}

/// The placement rules for one cluster membership. Cheap to query; build a
/// new one when the configuration changes.
#[derive(Debug, Clone)]
pub struct Placement {
    sites: Vec<SitePlacement>,
    replication_factor: usize,
}

#[derive(Debug, Clone)]
struct SitePlacement {
    name: String,
    name_hash: u64,
    cores: Vec<Core>,
}

#[derive(Debug, Clone)]
struct Core {
    node: Node,
    name_hash: u64,
    weight: f64,
}

/// FNV-1a, 64 bit.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The SplitMix64 finaliser: a bijective, well-mixing 64-bit permutation.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The 64-bit hash of (domain, block, candidate).
fn hash(domain: u64, block: BlockId, name_hash: u64) -> u64 {
    let h = mix(domain ^ name_hash);
    let h = mix(h ^ block.file_id.0);
    mix(h ^ block.index.rotate_left(32))
}

/// `−w / ln(h)` with `h` the top 53 bits of `hash` mapped into the open
/// interval (0, 1).
fn score(hash: u64, weight: f64) -> f64 {
    let unit = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -weight / unit.ln()
}

/// Sorts `(score, tiebreak, item)` best first; ties (practically never)
/// broken by the name hash so the order stays deterministic.
fn rank<T>(mut scored: Vec<(f64, u64, T)>) -> Vec<T> {
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, _, item)| item).collect()
}

impl Placement {
    /// The placement for `config`'s sites and core nodes. A core's weight is
    /// its configured capacity (a capacity of 0 counts as 1 byte).
    pub fn new(config: &ClusterConfig) -> Self {
        let mut sites: Vec<SitePlacement> = config
            .sites
            .iter()
            .map(|site| SitePlacement {
                name: site.name.clone(),
                name_hash: fnv1a(site.name.as_bytes()),
                cores: Vec::new(),
            })
            .collect();
        for node in config.nodes.iter().filter(|n| n.roles.core) {
            if let Some(site) = sites.get_mut(usize::from(node.site.0)) {
                site.cores.push(Core {
                    name_hash: fnv1a(node.name.as_bytes()),
                    weight: node.capacity.max(1) as f64,
                    node: node.clone(),
                });
            }
        }
        Placement {
            sites,
            replication_factor: config.cluster.replication_factor,
        }
    }

    /// The replication factor n: how many sites hold each block.
    pub fn replication_factor(&self) -> usize {
        self.replication_factor
    }

    /// The name of site `site`, if it exists.
    pub fn site_name(&self, site: SiteId) -> Option<&str> {
        self.sites.get(usize::from(site.0)).map(|s| s.name.as_str())
    }

    /// Every core server of `site` (live or not), in configuration order.
    pub fn cores(&self, site: SiteId) -> Vec<&Node> {
        self.sites
            .get(usize::from(site.0))
            .map(|s| s.cores.iter().map(|c| &c.node).collect())
            .unwrap_or_default()
    }

    /// Every site's id, in configuration order.
    pub fn sites(&self) -> impl Iterator<Item = SiteId> + '_ {
        (0..self.sites.len()).filter_map(|i| u16::try_from(i).ok().map(SiteId))
    }

    /// The live core servers of `site` ranked for `block`, best first. The
    /// first two are the block's local pair.
    pub fn in_site(
        &self,
        block: BlockId,
        site: SiteId,
        live: &impl Fn(&str) -> bool,
    ) -> Vec<&Node> {
        let Some(site) = self.sites.get(usize::from(site.0)) else {
            return Vec::new();
        };
        rank(
            site.cores
                .iter()
                .filter(|c| live(&c.node.name))
                .map(|c| {
                    let h = hash(CORE_DOMAIN, block, c.name_hash);
                    (score(h, c.weight), c.name_hash, &c.node)
                })
                .collect(),
        )
    }

    /// The two live core servers of `site` that hold `block`'s acknowledged
    /// copies (docs/ARCHITECTURE.md#invariant-1), best first.
    pub fn local_pair(
        &self,
        block: BlockId,
        site: SiteId,
        live: &impl Fn(&str) -> bool,
    ) -> Result<[&Node; 2], PlacementError> {
        let sp = self
            .sites
            .get(usize::from(site.0))
            .ok_or(PlacementError::UnknownSite(site))?;
        let ranked = self.in_site(block, site, live);
        match ranked.as_slice() {
            [first, second, ..] => Ok([*first, *second]),
            _ => Err(PlacementError::NotEnoughCores {
                site: sp.name.clone(),
                live: ranked.len(),
                total: sp.cores.len(),
            }),
        }
    }

    /// Every site other than `home_site`, ranked for `block` by
    /// rendezvous hashing (so different blocks spread their geo copies).
    pub fn remote_sites(&self, block: BlockId, home_site: SiteId) -> Vec<SiteId> {
        let others: Vec<(f64, u64, usize)> = self
            .sites
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != usize::from(home_site.0))
            .map(|(i, s)| {
                let h = hash(SITE_DOMAIN, block, s.name_hash);
                (score(h, 1.0), s.name_hash, i)
            })
            .collect();
        rank(others)
            .into_iter()
            .filter_map(|i| u16::try_from(i).ok().map(SiteId))
            .collect()
    }

    /// One core server in each of n−1 other sites for `block`: the first
    /// sites in [`Placement::remote_sites`] order that have a live core
    /// (their best live core by [`Placement::in_site`]), and when fewer
    /// than n−1 have one, the first sites without a live core too (their
    /// best core): the replicator retries a target until it answers, so a
    /// site that is down when the block is written still gets its copy
    /// once it is back. (Leaving it out shipped the block to n−2 sites for
    /// good.)
    pub fn remote_targets(
        &self,
        block: BlockId,
        home_site: SiteId,
        live: &impl Fn(&str) -> bool,
    ) -> Vec<&Node> {
        let wanted = self.replication_factor.saturating_sub(1);
        let mut targets = Vec::with_capacity(wanted);
        let mut down = Vec::new();
        for site in self.remote_sites(block, home_site) {
            match self.in_site(block, site, live).into_iter().next() {
                Some(node) => targets.push(node),
                None => down.extend(self.in_site(block, site, &|_| true).into_iter().next()),
            }
        }
        targets.truncate(wanted);
        let missing = wanted - targets.len();
        targets.extend(down.into_iter().take(missing));
        targets
    }

    /// The site of core server `name`, if it is one.
    pub fn site_of_core(&self, name: &str) -> Option<SiteId> {
        self.sites
            .iter()
            .position(|s| s.cores.iter().any(|c| c.node.name == name))
            .and_then(|i| u16::try_from(i).ok())
            .map(SiteId)
    }
}

#[cfg(test)]
mod tests;
