//! The base of partial writes (part of [`BlockClient`]): which version of
//! a block a partial write applies on, and the seeding of copies that are
//! not complete at it.
//!
//! A core applies a partial write only on a copy complete at the write's
//! base version (the core server's `copy_state` has the rule and why).
//! The writer takes the base from what it wrote last (the version of its
//! last acknowledged write of the block, kept per block and ownership
//! epoch in [`KnownVersions`]); without one (a first write since the start,
//! another epoch) it probes the site's cores and takes the newest version
//! any of them holds or trimmed.
//!
//! A core that refuses the base (its copy was trimmed, missed writes while
//! it was down, or it is a replacement that never held the block) is
//! **seeded**, then the write is sent to the pair again (a retry is
//! idempotent on a core that took it). The site's cores are probed again
//! and a complete copy is put on the refusing core, whole and durably: the
//! write's own copy when the other core of the pair took it (complete at
//! the write's version, so the retry there is a no-op), else a copy of the
//! site at the base version, else another site's copy at the base (a
//! trimmed copy's data is there: a trim waits for every remote copy). So
//! the WAN is read only when the site has no good copy left (the kept copy
//! lost or corrupt). A source that fails (unreachable, corrupt, moved on)
//! is skipped for the next one.
//!
//! The per-block versions assume one writing process per file and epoch:
//! the access server's ownership layer makes one access server the writer
//! of a file at each epoch (another one, even of the same site, takes the
//! file over at a new epoch first), and a new epoch discards what was
//! known. A base found overtaken all the same (a newer version on the
//! site's cores) fails the write with [`BlockError::Unseeded`].

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use geonfs_proto::domain::{BlockId, DeletedRange, Epoch, FileId, Version};
use geonfs_site_config::Node;

use super::{classify, BlockClient, CopyError};
use crate::BlockError;

/// Blocks whose last written version is kept; the map is emptied when it
/// grows past this (a forgotten block costs one probe at its next write).
const KNOWN_VERSIONS: usize = 1 << 16;

/// This client's last acknowledged write of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KnownWrite {
    /// The ownership epoch it was written under.
    epoch: Option<Epoch>,
    /// The version it created.
    version: Version,
}

/// Block → this client's last acknowledged write of it.
#[derive(Debug, Default)]
pub(super) struct KnownVersions(Mutex<HashMap<BlockId, KnownWrite>>);

impl KnownVersions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<BlockId, KnownWrite>> {
        match self.0.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// Why no seed source served.
#[derive(Default)]
struct SeedErrors {
    /// Each failure.
    texts: Vec<String>,
    /// A source that holds a newer version now (the write was overtaken).
    newer: Option<(String, Version)>,
}

/// What the cores of the site hold of a block.
struct SiteState<'a> {
    /// The cores holding a complete copy, with its version: their data,
    /// or the block deleted there (empty; with cores of this site silent,
    /// another site's tombstone too); data holders newest first.
    holders: Vec<Holder<'a>>,
    /// The newest version a core trimmed (zero: none); with cores of this
    /// site silent, also the newest version another site holds.
    trimmed: Version,
}

/// A complete copy of a block on one core.
#[derive(Clone, Copy)]
struct Holder<'a> {
    node: &'a Node,
    version: Version,
    /// Deleted at `version`: empty, nothing to read.
    deleted: bool,
}

impl SiteState<'_> {
    /// The newest version a core holds, deleted or trimmed, other than
    /// `version` (a write's own copies).
    fn newest_but(&self, version: Version) -> Version {
        self.holders
            .iter()
            .map(|c| c.version)
            .filter(|&v| v != version)
            .fold(self.trimmed, Version::max)
    }

    /// Whether core `name` holds a complete copy at `version`.
    fn holds(&self, name: &str, version: Version) -> bool {
        self.holders
            .iter()
            .any(|c| c.node.name == name && c.version == version)
    }
}

impl BlockClient {
    /// Records that this client's write of `block` at `version`, under
    /// ownership `epoch`, is on two cores.
    pub(super) fn remember_version(&self, block: BlockId, epoch: Option<Epoch>, version: Version) {
        let mut map = self.inner.versions.map();
        if map.len() >= KNOWN_VERSIONS {
            map.clear();
        }
        map.insert(block, KnownWrite { epoch, version });
    }

    /// Whether `newest`, the newest version of `block` the cores that
    /// answered hold, is known to be the block's newest under ownership
    /// `epoch`: this client's last acknowledged write of the block, under
    /// that epoch, is no newer. Within an epoch only the owning site writes
    /// the file (one writer per file per site, see the module doc), and a
    /// write of another site needs another epoch.
    pub(super) fn newest_is_known(
        &self,
        block: BlockId,
        epoch: Option<Epoch>,
        newest: Version,
    ) -> bool {
        let known = self.inner.versions.map().get(&block).copied();
        epoch.is_some() && known.is_some_and(|k| k.epoch == epoch && k.version <= newest)
    }

    /// Forgets `block`'s version (a failed write, a delete).
    pub(super) fn forget_version(&self, block: BlockId) {
        self.inner.versions.map().remove(&block);
    }

    /// Forgets this client's last writes of the blocks of `file_id` in
    /// `range` (they are deleted).
    pub(super) fn forget_versions_in(&self, file_id: FileId, range: DeletedRange) {
        self.inner
            .versions
            .map()
            .retain(|block, _| block.file_id != file_id || !range.covers(block.index));
    }

    /// The base of a partial write of `block` at `version`: the version of
    /// this client's last write of it under `epoch`, else the newest
    /// version the site's cores hold or trimmed.
    pub(super) async fn base_of(
        &self,
        block: BlockId,
        version: Version,
        epoch: Option<Epoch>,
    ) -> Result<Version, BlockError> {
        let known = self.inner.versions.map().get(&block).copied();
        if let Some(known) = known.filter(|k| k.epoch == epoch && k.version < version) {
            return Ok(known.version);
        }
        let state = self.site_state(block).await?;
        let newest = state.newest_but(version);
        self.check_not_newer(block, newest, version)?;
        Ok(newest)
    }

    /// After `nodes` refused a write's `base`: seeds each of them with a
    /// complete copy of the block and returns the write's base for the
    /// next attempt. `acked`: another core already took the write (its copy
    /// at `version` is then complete and the best source, and the base may
    /// not move); otherwise the base becomes the site's newest version.
    pub(super) async fn complete_copies(
        &self,
        block: BlockId,
        version: Version,
        epoch: Option<Epoch>,
        base: Version,
        nodes: &[&str],
        acked: bool,
    ) -> Result<Version, BlockError> {
        let state = self.site_state(block).await?;
        let newest = state.newest_but(version);
        self.check_not_newer(block, newest, version)?;
        if acked && newest > base {
            return Err(BlockError::Unseeded {
                node: nodes.first().copied().unwrap_or_default().to_string(),
                block,
                version: newest,
                reason: format!(
                    "another writer moved the block past version {base} during this write"
                ),
            });
        }
        let base = if acked { base } else { newest };
        for name in nodes {
            if state.holds(name, base) || state.holds(name, version) {
                continue;
            }
            // This write's own copies first (complete at `version`), then
            // the copies at the base, of the site, else of another site.
            let others = state.holders.iter().filter(|c| c.node.name != *name);
            let mut local: Vec<Holder<'_>> = others
                .clone()
                .filter(|c| c.version == version)
                .copied()
                .collect();
            local.extend(
                others
                    .filter(|c| c.version == base && base > Version::ZERO)
                    .copied(),
            );
            if local.is_empty() && base == Version::ZERO {
                // Nothing to seed from: the block is new (the core's copy
                // went meanwhile); the next attempt finds it absent.
                continue;
            }
            self.seed(name, block, base, &local, epoch).await?;
        }
        Ok(base)
    }

    /// A write at `version` cannot go on a block already at `newest` or
    /// newer: the stale refusal makes the caller retry with a newer
    /// version.
    fn check_not_newer(
        &self,
        block: BlockId,
        newest: Version,
        version: Version,
    ) -> Result<(), BlockError> {
        if newest < version {
            return Ok(());
        }
        Err(self.overtaken(block, &self.inner.site_name, newest))
    }

    /// The stale refusal of a write overtaken by `newer` on `node` (a
    /// concurrent write or put got there first): the caller retries with
    /// a newer version, as for a core's own stale refusal.
    fn overtaken(&self, block: BlockId, node: &str, newer: Version) -> BlockError {
        BlockError::core(
            node,
            tonic::Status::failed_precondition(format!(
                "stale version: block {block} is at version {newer} in site {} (overtaken)",
                self.inner.site_name
            )),
        )
    }

    /// The versions of `block` on every core of the site (believed-live
    /// ones and suspects, in parallel; unchecked against fences: the write
    /// itself carries the caller's epoch to the cores it goes to). Fails
    /// when fewer than two cores answered (no write can be acknowledged).
    /// When some core did not answer, the other sites' versions are added
    /// (`read.rs`, [`BlockClient::complete_with_remote`]): the silent core
    /// may hold the site's only copy of the newest version, and a write
    /// based on an older one would bring older bytes back (or patch zeros
    /// when nothing answered).
    async fn site_state(&self, block: BlockId) -> Result<SiteState<'_>, BlockError> {
        let (order, believed) = self.order(block);
        let mut probe = self.probe(block, &order, None).await;
        let answered = order.len() - probe.unreachable.len();
        if answered < 2 {
            return Err(BlockError::NotEnoughCores {
                site: self.inner.site_name.clone(),
                block,
                acked: 0,
                live: believed,
                total: order.len(),
                last_error: Some(format!("unreachable: {}", probe.unreachable.join(", "))),
                out_of_space: false,
            });
        }
        if !probe.unreachable.is_empty() {
            let unreachable = probe.unreachable.clone();
            self.complete_with_remote(block, None, &mut probe, &unreachable)
                .await?;
        }
        let data = probe.found.iter().map(|&(node, version)| Holder {
            node,
            version,
            deleted: false,
        });
        let deleted = probe.deleted.iter().map(|&(node, version)| Holder {
            node,
            version,
            deleted: true,
        });
        Ok(SiteState {
            holders: data.chain(deleted).collect(),
            trimmed: probe.trimmed,
        })
    }

    /// Puts a complete copy of the block on core `name`: from the first of
    /// `local` (cores of the site, each with the version it holds) that
    /// serves its copy intact, else from another site's copy at `base`. A
    /// target that fails the put as unreachable or busy is left as it is
    /// (marked suspect when unreachable): the write's next attempt picks
    /// its pair again.
    async fn seed(
        &self,
        name: &str,
        block: BlockId,
        base: Version,
        local: &[Holder<'_>],
        epoch: Option<Epoch>,
    ) -> Result<(), BlockError> {
        let unseeded = |reason: String| BlockError::Unseeded {
            node: name.to_string(),
            block,
            version: base,
            reason,
        };
        let target = self
            .all_cores()
            .find(|n| n.name == name)
            .ok_or_else(|| BlockError::UnknownNode(name.to_string()))?;
        let mut errors = SeedErrors::default();
        let mut copy = self.read_first(block, local, epoch, &mut errors).await;
        if copy.is_none() && base > Version::ZERO {
            let remote: Vec<Holder<'_>> = self
                .remote_holders(block, base, epoch)
                .await?
                .into_iter()
                .filter(|&(_, v)| v == base)
                .map(|(node, version)| Holder {
                    node,
                    version,
                    deleted: false,
                })
                .collect();
            copy = self.read_first(block, &remote, epoch, &mut errors).await;
        }
        let Some((version, data)) = copy else {
            if let Some((node, newer)) = errors.newer {
                return Err(self.overtaken(block, &node, newer));
            }
            return Err(unseeded(format!(
                "no complete copy could be read, in site {} or elsewhere{}",
                self.inner.site_name,
                if errors.texts.is_empty() {
                    String::new()
                } else {
                    format!(": {}", errors.texts.join("; "))
                }
            )));
        };
        let reply = match self.replica_put(target, block, version, data, epoch).await {
            Ok(reply) => reply,
            Err(Ok(status)) => {
                if let CopyError::Retry { suspect, .. } = classify(name, status.clone()) {
                    // The target went away (or is busy): the next attempt
                    // of the write picks its pair again, without it if it
                    // is suspect now.
                    self.failed(name, suspect);
                    tracing::warn!(node = %name, %block,
                        "seeding failed; the write tries its pair again: {}", status.message());
                    return Ok(());
                }
                return Err(BlockError::core(name, status));
            }
            Err(Err(err)) => return Err(err),
        };
        if reply.skipped_stale {
            // Written meanwhile: the caller retries with a newer version.
            return Err(self.overtaken(block, name, Version(reply.stored_version)));
        }
        self.inner.metrics.seeds.inc();
        tracing::info!(node = %name, %block, %version,
            "copy seeded before a partial write");
        Ok(())
    }

    /// The version and bytes (trailing zeros cut) of the first of
    /// `sources` that serves its copy, at the version it was listed with,
    /// intact; failures are added to `errors`.
    async fn read_first(
        &self,
        block: BlockId,
        sources: &[Holder<'_>],
        epoch: Option<Epoch>,
        errors: &mut SeedErrors,
    ) -> Option<(Version, Bytes)> {
        for &Holder {
            node: source,
            version,
            deleted,
        } in sources
        {
            if deleted {
                return Some((version, Bytes::new()));
            }
            match self.read_whole(source, block, epoch).await {
                Ok(reply) if reply.found && Version(reply.version) == version => {
                    let used = reply
                        .data
                        .iter()
                        .rposition(|&b| b != 0)
                        .map_or(0, |last| last + 1);
                    return Some((version, reply.data.slice(..used)));
                }
                Ok(reply) if reply.found && Version(reply.version) > version => {
                    errors.newer = Some((source.name.clone(), Version(reply.version)));
                }
                Ok(reply) => errors.texts.push(format!(
                    "{} holds version {} now",
                    source.name,
                    if reply.found { reply.version } else { 0 }
                )),
                Err(status) => {
                    errors
                        .texts
                        .push(format!("{}: {}", source.name, status.message()));
                }
            }
        }
        None
    }
}
