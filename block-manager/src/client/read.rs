//! The read path of [`BlockClient`]: the site's newest copy (found by
//! probing the cores' versions), checksum failures answered from another
//! copy (of this site, else of another site) and the bad copy repaired in
//! the background (docs/ARCHITECTURE.md#invariant-7). Every probe and data read carries the
//! caller's ownership epoch; a fenced answer from any core fails the read.

use bytes::Bytes;
use geonfs_proto::core as wire;
use geonfs_proto::domain::{BlockId, Epoch, Version};
use geonfs_proto::replication::ReplicaPut;
use geonfs_site_config::Node;
use tonic::Code;

use super::{classify, classify_file, BlockClient, BlockRead, CopyError};
use crate::BlockError;

/// How many times a read probes again when the copy it was about to
/// serve went meanwhile (a trim or a newer write between probe and read).
const GONE_PROBES: u32 = 3;

/// What [`BlockClient::probe`] learnt.
pub(super) struct Probe<'a> {
    /// Holders and their versions, newest first.
    pub(super) found: Vec<(&'a Node, Version)>,
    /// Cores that did not answer.
    pub(super) unreachable: Vec<String>,
    /// The newest version a core reported trimming (zero: none): the block
    /// exists at that version or newer at other sites.
    pub(super) trimmed: Version,
    /// Cores where the block was deleted (a tombstone), with the delete's
    /// version, newest first: complete there, empty.
    pub(super) deleted: Vec<(&'a Node, Version)>,
    /// The bytes the first core served, when asked for them
    /// ([`BlockClient::probe_reading_first`]) and it holds the block.
    pub(super) first: Option<BlockRead>,
    /// A core refused the caller's ownership epoch (the first such
    /// refusal): the caller must not use what the others said.
    pub(super) fenced: Option<BlockError>,
}

impl Probe<'_> {
    /// The newest version a marker (trimmed or deleted) reported, zero:
    /// none.
    fn newest_marker(&self) -> Version {
        self.deleted
            .first()
            .map_or(Version::ZERO, |&(_, v)| v)
            .max(self.trimmed)
    }
}

/// What reading the newest version from a list of holders came to.
enum Served {
    /// A good copy answered.
    Data(BlockRead),
    /// No copy could serve: the last error, and the corrupt holders.
    Failed {
        last_error: Option<BlockError>,
        corrupt: Vec<String>,
    },
}

impl BlockClient {
    /// Reads `len` bytes at `offset` of `block` from the site's newest
    /// copy. `Ok(None)` when the block is absent: every core of the site
    /// answered that it does not hold it, or those that did not answer
    /// could only hold what no other site has.
    ///
    /// The live cores of the site are asked in parallel which version they
    /// hold; the best-ranked one is asked for the bytes at the same time,
    /// so when it holds the newest version (the usual case: it is the
    /// primary, whose copy stays after the trim) the read takes one round
    /// trip. Otherwise the bytes are read from a holder of the newest
    /// version afterwards.
    ///
    /// When a core of the site does not answer, what the others hold may be
    /// older than the block (the silent core may keep the site's only copy
    /// of the newest version), so the other sites are asked too
    /// ([`BlockClient::complete_with_remote`]) unless this client wrote the
    /// version found last under the caller's ownership epoch.
    ///
    /// A copy that fails its checksum (`DATA_LOSS`) is counted and the next
    /// copy of the same version is read; when no copy of the site is good,
    /// the other sites' copies of that version (or newer) are tried. An
    /// older copy is never returned in its place. Once a good copy served
    /// the read, every corrupt copy is replaced by it in the background
    /// (a repair put, which the core applies only over a copy of the same
    /// version that fails its checksum, or an older one).
    ///
    /// Not checked against ownership fences ([`BlockClient::read_as`]
    /// without an epoch).
    pub async fn read(
        &self,
        block: BlockId,
        offset: u64,
        len: u32,
    ) -> Result<Option<BlockRead>, BlockError> {
        self.read_as(block, offset, len, None).await
    }

    /// [`BlockClient::read`] by a caller at ownership epoch `owner_epoch`
    /// of the block's file (`None`: not checked). The epoch goes on every
    /// probe and on the data read; when any core refuses it (its fence for
    /// the file is newer), the read fails with [`BlockError::Fenced`].
    pub async fn read_as(
        &self,
        block: BlockId,
        offset: u64,
        len: u32,
        owner_epoch: Option<Epoch>,
    ) -> Result<Option<BlockRead>, BlockError> {
        self.check_range(offset, u64::from(len))?;
        self.check_gate(block.file_id, owner_epoch)?;
        let mut probes = 0;
        loop {
            let probe = self.site_probe(block, (offset, len), owner_epoch).await?;
            match self
                .serve_probed(block, (offset, len), owner_epoch, probe)
                .await
            {
                // Trimmed or replaced since the probe: probe again.
                Err(BlockError::CopyGone { .. }) if probes < GONE_PROBES => probes += 1,
                other => return other,
            }
        }
    }

    /// What the site's cores (and, when some are silent and the newest
    /// version is not known, the other sites) hold of `block`; the
    /// best-ranked core reads `range` on the way.
    async fn site_probe(
        &self,
        block: BlockId,
        (offset, len): (u64, u32),
        owner_epoch: Option<Epoch>,
    ) -> Result<Probe<'_>, BlockError> {
        let (order, believed) = self.order(block);
        let mut probe = self
            .probe_reading_first(block, &order[..believed], Some((offset, len)), owner_epoch)
            .await;
        if let Some(err) = probe.fenced.take() {
            return Err(err);
        }
        let suspects = &order[believed..];
        let newest_here = probe.found.first().map_or(Version::ZERO, |&(_, v)| v);
        let known = self.newest_is_known(block, owner_epoch, newest_here);
        let mut silent = probe.unreachable.clone();
        silent.extend(suspects.iter().map(|n| n.name.clone()));
        if !suspects.is_empty() && (probe.found.is_empty() || (!known && silent.len() >= 2)) {
            // Ask the suspects before saying "absent" or "unknown".
            let more = self.probe(block, suspects, owner_epoch).await;
            if let Some(err) = more.fenced {
                return Err(err);
            }
            probe.found.extend(more.found);
            probe.found.sort_by_key(|entry| std::cmp::Reverse(entry.1));
            probe.trimmed = probe.trimmed.max(more.trimmed);
            probe.deleted.extend(more.deleted);
            probe
                .deleted
                .sort_by_key(|entry| std::cmp::Reverse(entry.1));
            silent = probe.unreachable.clone();
            silent.extend(more.unreachable);
        }
        let newest_here = probe.found.first().map_or(Version::ZERO, |&(_, v)| v);
        if !silent.is_empty() && !self.newest_is_known(block, owner_epoch, newest_here) {
            // A silent core may hold the site's only copy of the newest
            // version: the other sites tell.
            self.complete_with_remote(block, owner_epoch, &mut probe, &silent)
                .await?;
        }
        Ok(probe)
    }

    /// Serves `range` of `block` from what `probe` found: the newest
    /// version the site holds (zeros after a delete), another site's copy
    /// when the site's are trimmed or corrupt, or `None` when absent.
    async fn serve_probed(
        &self,
        block: BlockId,
        (offset, len): (u64, u32),
        owner_epoch: Option<Epoch>,
        mut probe: Probe<'_>,
    ) -> Result<Option<BlockRead>, BlockError> {
        let newest_here = probe.found.first().map_or(Version::ZERO, |&(_, v)| v);
        if let Some(first) = probe.first.take() {
            // The best-ranked core (which keeps the site's copy after the
            // trim) holds the newest version found: served in one trip.
            if probe
                .found
                .first()
                .is_some_and(|&(_, v)| first.version >= v.max(probe.newest_marker()))
            {
                self.inner.metrics.reads.inc();
                return Ok(Some(first));
            }
        }
        if let Some(&(node, version)) = probe
            .deleted
            .first()
            .filter(|&&(_, d)| d > newest_here && d >= probe.trimmed)
        {
            // Deleted after every copy the site holds: zeros at that
            // version (newer than any older copy elsewhere).
            self.inner.metrics.reads.inc();
            return Ok(Some(BlockRead {
                node: node.name.clone(),
                version,
                data: Bytes::from(vec![0; len as usize]),
                deleted: true,
            }));
        }
        if probe.trimmed > newest_here {
            // The site trimmed a copy newer than any it still holds (the
            // kept copy is lost): the block is not absent, and the bytes
            // are at another site, never read as zeros or older data here.
            return self
                .read_elsewhere(block, (offset, len), owner_epoch, probe.trimmed, Vec::new())
                .await
                .map(Some);
        }
        let Some(&(_, newest)) = probe.found.first() else {
            // Absent: every core of the site said so, or those that did
            // not answer hold nothing the other sites do not have.
            return Ok(None);
        };
        let holders: Vec<&Node> = probe
            .found
            .iter()
            .filter(|(_, v)| *v == newest)
            .map(|(n, _)| *n)
            .collect();
        let (last_error, corrupt) = match self
            .serve(
                block,
                (offset, len),
                owner_epoch,
                newest,
                &holders,
                Vec::new(),
            )
            .await
        {
            Served::Data(read) => return Ok(Some(read)),
            Served::Failed {
                last_error,
                corrupt,
            } => (last_error, corrupt),
        };
        if let Some(err) = last_error {
            return Err(err);
        }
        // Every copy of this site is corrupt: another site's copy serves.
        self.read_elsewhere(block, (offset, len), owner_epoch, newest, corrupt)
            .await
            .map(Some)
    }

    /// Reads the range from another site's copy of `version` or newer
    /// (the site's own copies are corrupt, listed in `corrupt`, or gone).
    async fn read_elsewhere(
        &self,
        block: BlockId,
        range: (u64, u32),
        owner_epoch: Option<Epoch>,
        version: Version,
        corrupt: Vec<String>,
    ) -> Result<BlockRead, BlockError> {
        let remote = self.remote_holders(block, version, owner_epoch).await?;
        let remote: Vec<&Node> = remote.iter().map(|(n, _)| *n).collect();
        let (last_error, corrupt) = match self
            .serve(block, range, owner_epoch, version, &remote, corrupt)
            .await
        {
            Served::Data(read) => return Ok(read),
            Served::Failed {
                last_error,
                corrupt,
            } => (last_error, corrupt),
        };
        if corrupt.is_empty() {
            return Err(last_error.unwrap_or_else(|| {
                BlockError::core(
                    &self.inner.site_name,
                    tonic::Status::unavailable(format!(
                        "block {block}: no copy of version {version} or newer answered at any site"
                    )),
                )
            }));
        }
        Err(BlockError::AllCopiesCorrupt {
            site: self.inner.site_name.clone(),
            block,
            version,
            copies: corrupt.len(),
            nodes: corrupt,
        })
    }

    /// Reads the range from the first of `holders` that serves version
    /// `newest` (or newer) intact; schedules the repair of the corrupt
    /// copies met on the way (and of `corrupt`, met before). A fenced
    /// answer ends it (`last_error`).
    async fn serve(
        &self,
        block: BlockId,
        (offset, len): (u64, u32),
        owner_epoch: Option<Epoch>,
        newest: Version,
        holders: &[&Node],
        mut corrupt: Vec<String>,
    ) -> Served {
        let mut last_error = None;
        for node in holders {
            let mut client = match self.client(node) {
                Ok(client) => client,
                Err(err) => {
                    last_error = Some(err);
                    continue;
                }
            };
            let request = wire::ReadRequest {
                block: Some(block.into()),
                offset,
                length: len,
                with_pending_job: false,
                owner_epoch: Epoch::to_wire(owner_epoch),
            };
            match client.read(request).await {
                Ok(reply) => {
                    let reply = reply.into_inner();
                    // A newer version may have landed since the probe; an
                    // older one (the copy was deleted or lost) is not served.
                    if reply.found && Version(reply.version) >= newest {
                        self.inner.metrics.reads.inc();
                        if !corrupt.is_empty() {
                            self.spawn_repair(block, (*node).clone(), corrupt);
                        }
                        return Served::Data(BlockRead {
                            node: node.name.clone(),
                            version: Version(reply.version),
                            data: reply.data,
                            deleted: false,
                        });
                    }
                    last_error = Some(BlockError::CopyGone {
                        node: node.name.clone(),
                        block,
                        version: newest,
                    });
                }
                Err(status) if status.code() == Code::DataLoss => {
                    self.inner.metrics.corrupt_copies.inc();
                    tracing::error!(node = %node.name, %block,
                        "corrupt block copy; trying the next one: {}", status.message());
                    corrupt.push(node.name.clone());
                }
                Err(status) => match classify_file(&node.name, block.file_id, status) {
                    CopyError::Fatal(err) => {
                        return Served::Failed {
                            last_error: Some(err),
                            corrupt,
                        }
                    }
                    CopyError::Retry { err, suspect } => {
                        self.failed(&node.name, suspect);
                        last_error = Some(err);
                    }
                    CopyError::Mismatch => {}
                },
            }
        }
        Served::Failed {
            last_error,
            corrupt,
        }
    }

    /// The cores of the other sites holding `version` of `block` or newer,
    /// newest first (probed at `owner_epoch`; fenced if any refuses it).
    pub(super) async fn remote_holders(
        &self,
        block: BlockId,
        version: Version,
        owner_epoch: Option<Epoch>,
    ) -> Result<Vec<(&Node, Version)>, BlockError> {
        let (probe, _) = self.remote_probe(block, owner_epoch).await?;
        Ok(probe
            .found
            .into_iter()
            .filter(|&(_, v)| v >= version)
            .collect())
    }

    /// Every core of the other sites probed for `block` at `owner_epoch`
    /// (fenced if any refuses it), and the sites of which no core answered.
    async fn remote_probe(
        &self,
        block: BlockId,
        owner_epoch: Option<Epoch>,
    ) -> Result<(Probe<'_>, Vec<&str>), BlockError> {
        let placement = &self.inner.placement;
        let others: Vec<&Node> = placement
            .sites()
            .filter(|&site| site != self.inner.site)
            .flat_map(|site| placement.in_site(block, site, &|_| true))
            .collect();
        let mut probe = self.probe(block, &others, owner_epoch).await;
        if let Some(err) = probe.fenced.take() {
            return Err(err);
        }
        let silent: Vec<&str> = placement
            .sites()
            .filter(|&site| site != self.inner.site)
            .filter(|&site| {
                placement
                    .cores(site)
                    .iter()
                    .all(|core| probe.unreachable.contains(&core.name))
            })
            .filter_map(|site| placement.site_name(site))
            .collect();
        Ok((probe, silent))
    }

    /// Completes a `probe` of this site's cores that some of them did not
    /// answer (`unreachable`) with what the other sites hold.
    ///
    /// After the trim a site keeps one copy of a block, so when a core does
    /// not answer, the newest version the others hold may be older than
    /// the block's: the silent core can hold the site's only copy of the
    /// newest (shipped here, or put on it while another core was down), and
    /// the copies that answered are then stale, not lost. Serving them, or
    /// basing a partial write on them, would give back older bytes than
    /// were acknowledged. Every acknowledged version is on two cores of the
    /// writing site until every other site holds it, so with one silent
    /// core here the other sites know it: their newest data version (or
    /// trim) is added to the probe as [`Probe::trimmed`] (newer bytes
    /// elsewhere), their tombstones to [`Probe::deleted`]. With two or more
    /// silent cores here (they may hold both copies of a version not yet
    /// shipped), or one and a whole other site silent, the newest version
    /// cannot be known: [`BlockError::NewestUnknown`] (retry later).
    pub(super) async fn complete_with_remote<'a>(
        &'a self,
        block: BlockId,
        owner_epoch: Option<Epoch>,
        probe: &mut Probe<'a>,
        unreachable: &[String],
    ) -> Result<(), BlockError> {
        let site = &self.inner.site_name;
        if unreachable.len() >= 2 {
            return Err(BlockError::NewestUnknown {
                block,
                why: format!(
                    "cores {} of site {site} did not answer",
                    unreachable.join(", ")
                ),
            });
        }
        self.inner.metrics.remote_checks.inc();
        let (remote, silent) = self.remote_probe(block, owner_epoch).await?;
        if !silent.is_empty() {
            return Err(BlockError::NewestUnknown {
                block,
                why: format!(
                    "core {} of site {site} and every core of site(s) {} did not answer",
                    unreachable.join(", "),
                    silent.join(", ")
                ),
            });
        }
        let newest_remote = remote.found.first().map_or(Version::ZERO, |&(_, v)| v);
        probe.trimmed = probe.trimmed.max(newest_remote).max(remote.trimmed);
        probe.deleted.extend(remote.deleted);
        probe
            .deleted
            .sort_by_key(|entry| std::cmp::Reverse(entry.1));
        Ok(())
    }

    /// Replaces the `corrupt` copies with `good`'s copy, in the background.
    fn spawn_repair(&self, block: BlockId, good: Node, corrupt: Vec<String>) {
        let client = self.clone();
        tokio::spawn(async move {
            if let Err(err) = client.repair(block, &good, &corrupt).await {
                tracing::warn!(%block, from = %good.name,
                    %err, "repair of corrupt copies failed; a later read retries it");
            }
        });
    }

    /// Reads the whole block from `good` and puts it (as a repair) to each
    /// core of `corrupt`.
    async fn repair(&self, block: BlockId, good: &Node, corrupt: &[String]) -> Result<(), String> {
        let read = self
            .read_whole(good, block, None)
            .await
            .map_err(|status| format!("read from {}: {}", good.name, status.message()))?;
        if !read.found {
            return Err(format!("{} no longer holds the block", good.name));
        }
        // Trailing zeros read back as zeros anyway: do not ship them.
        let used = read
            .data
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |last| last + 1);
        let data: Bytes = read.data.slice(..used);
        let mut errors = Vec::new();
        for name in corrupt {
            let Some(node) = self.all_cores().find(|n| &n.name == name) else {
                continue;
            };
            let result = async {
                self.replica_client(node)
                    .map_err(|err| err.to_string())?
                    .put(ReplicaPut {
                        block: Some(block.into()),
                        version: read.version,
                        data: data.clone(),
                        origin_site: self.inner.site_name.clone(),
                        repair: true,
                        job: None,
                        owner_epoch: read.copy_epoch,
                        lost_below: 0,
                        ..Default::default()
                    })
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|status| format!("{}: {}", status.code(), status.message()))
            }
            .await;
            match result {
                Ok(reply) if reply.applied => {
                    self.inner.metrics.repairs.inc();
                    tracing::warn!(node = %name, from = %good.name, %block, version = %read.version, "corrupt copy repaired");
                }
                Ok(_) => {}
                Err(err) => errors.push(format!("repair on {name}: {err}")),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// The version of `block` on each of `nodes` (zero-length reads at
    /// `owner_epoch`, in parallel): the holders sorted newest first (rank
    /// order within a version), the nodes that did not answer, and the
    /// first fenced refusal.
    pub(super) async fn probe<'a>(
        &self,
        block: BlockId,
        nodes: &[&'a Node],
        owner_epoch: Option<Epoch>,
    ) -> Probe<'a> {
        self.probe_reading_first(block, nodes, None, owner_epoch)
            .await
    }

    /// Like [`probe`](Self::probe), but when `range` is given the first of
    /// `nodes` is asked for those bytes instead of a zero-length read, so
    /// that a read whose first-ranked core holds the newest version takes
    /// one round trip ([`Probe::first`]). A first core whose copy fails its
    /// checksum is probed again with a zero-length read: the caller's
    /// normal path then meets (and counts) the corrupt copy.
    async fn probe_reading_first<'a>(
        &self,
        block: BlockId,
        nodes: &[&'a Node],
        range: Option<(u64, u32)>,
        owner_epoch: Option<Epoch>,
    ) -> Probe<'a> {
        let request = |(offset, length): (u64, u32)| wire::ReadRequest {
            block: Some(block.into()),
            offset,
            length,
            with_pending_job: false,
            owner_epoch: Epoch::to_wire(owner_epoch),
        };
        let calls = nodes.iter().enumerate().map(|(rank, node)| async move {
            let mut client = match self.client(node) {
                Ok(client) => client,
                Err(err) => return (rank, *node, Err(tonic::Status::internal(err.to_string()))),
            };
            let mut wanted = range.filter(|_| rank == 0);
            let mut result = client
                .read(request(wanted.unwrap_or((0, 0))))
                .await
                .map(tonic::Response::into_inner);
            if wanted.is_some() && matches!(&result, Err(s) if s.code() == Code::DataLoss) {
                wanted = None;
                result = client
                    .read(request((0, 0)))
                    .await
                    .map(tonic::Response::into_inner);
            }
            (rank, *node, result.map(|reply| (reply, wanted.is_some())))
        });
        let mut probe = Probe {
            found: Vec::new(),
            unreachable: Vec::new(),
            trimmed: Version::ZERO,
            deleted: Vec::new(),
            first: None,
            fenced: None,
        };
        let mut found = Vec::new();
        for (rank, node, result) in futures::future::join_all(calls).await {
            match result {
                Ok((reply, with_data)) => {
                    self.inner.liveness.alive(&node.name);
                    probe.trimmed = probe.trimmed.max(Version(reply.trimmed_version));
                    if reply.deleted_version > 0 {
                        probe.deleted.push((node, Version(reply.deleted_version)));
                    }
                    if reply.found {
                        found.push((rank, node, Version(reply.version)));
                        if with_data {
                            probe.first = Some(BlockRead {
                                node: node.name.clone(),
                                version: Version(reply.version),
                                data: reply.data,
                                deleted: false,
                            });
                        }
                    }
                }
                Err(status) if status.code() == Code::PermissionDenied => {
                    // It answered: its fence refused the caller's epoch.
                    self.inner.liveness.alive(&node.name);
                    probe.fenced.get_or_insert(BlockError::from_status(
                        &node.name,
                        block.file_id,
                        status,
                    ));
                }
                Err(status) => {
                    let suspect = matches!(
                        classify(&node.name, status),
                        CopyError::Retry { suspect: true, .. }
                    );
                    self.failed(&node.name, suspect);
                    probe.unreachable.push(node.name.clone());
                }
            }
        }
        found.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        probe.found = found.into_iter().map(|(_, n, v)| (n, v)).collect();
        probe
            .deleted
            .sort_by_key(|entry| std::cmp::Reverse(entry.1));
        probe
    }
}
