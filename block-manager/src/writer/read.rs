//! The read path of [`BlockClient`]: the site's newest copy, checksum
//! failures answered from another copy (of this site, else of another
//! site) and the bad copy repaired in the background (invariant 7).

use bytes::Bytes;
use geonfs_proto::core as wire;
use geonfs_proto::domain::BlockId;
use geonfs_proto::replication::block_replication_client::BlockReplicationClient;
use geonfs_proto::replication::ReplicaPut;
use geonfs_site_config::Node;
use tonic::Code;

use super::{classify, BlockClient, BlockRead, CopyError};
use crate::BlockError;

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
    /// copy. `Ok(None)` when every core of the site answered that it does
    /// not hold the block.
    ///
    /// The live cores of the site are asked in parallel which version they
    /// hold; the best-ranked one is asked for the bytes at the same time,
    /// so when it holds the newest version (the usual case: it is the
    /// primary, whose copy stays after the trim) the read takes one round
    /// trip. Otherwise the bytes are read from a holder of the newest
    /// version afterwards.
    ///
    /// A copy that fails its checksum (`DATA_LOSS`) is counted and the next
    /// copy of the same version is read; when no copy of the site is good,
    /// the other sites' copies of that version (or newer) are tried. An
    /// older copy is never returned in its place. Once a good copy served
    /// the read, every corrupt copy is replaced by it in the background
    /// (a repair put, which the core applies only over a copy of the same
    /// version that fails its checksum, or an older one).
    pub async fn read(
        &self,
        block: BlockId,
        offset: u64,
        len: u32,
    ) -> Result<Option<BlockRead>, BlockError> {
        self.check_range(offset, u64::from(len))?;
        let (order, believed) = self.order(block);
        let mut probe = self
            .probe_reading_first(block, &order[..believed], Some((offset, len)))
            .await;
        if let Some(first) = probe.first.take() {
            // The best-ranked core (which keeps the site's copy after the
            // trim) holds the newest version found: served in one trip.
            if probe
                .found
                .first()
                .is_some_and(|&(_, v)| first.version >= v)
            {
                self.inner.metrics.reads.inc();
                return Ok(Some(first));
            }
        }
        if probe.found.is_empty() && believed < order.len() {
            // Only suspects are left: ask them before saying "absent".
            let more = self.probe(block, &order[believed..]).await;
            probe.found = more.found;
            probe.unreachable.extend(more.unreachable);
        }
        let Some(&(_, newest)) = probe.found.first() else {
            if let Some(node) = probe.unreachable.first() {
                return Err(BlockError::core(
                    node,
                    tonic::Status::unavailable(format!(
                        "block {}/{} not found on the reachable cores of site {}; unreachable: {}",
                        block.file_id,
                        block.index,
                        self.inner.site_name,
                        probe.unreachable.join(", ")
                    )),
                ));
            }
            return Ok(None);
        };
        let holders: Vec<&Node> = probe
            .found
            .iter()
            .filter(|(_, v)| *v == newest)
            .map(|(n, _)| *n)
            .collect();
        let (last_error, corrupt) = match self
            .serve(block, offset, len, newest, &holders, Vec::new())
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
        let remote = self.remote_holders(block, newest).await;
        let remote: Vec<&Node> = remote.iter().map(|(n, _)| *n).collect();
        let corrupt = match self
            .serve(block, offset, len, newest, &remote, corrupt)
            .await
        {
            Served::Data(read) => return Ok(Some(read)),
            Served::Failed { corrupt, .. } => corrupt,
        };
        Err(BlockError::AllCopiesCorrupt {
            site: self.inner.site_name.clone(),
            block,
            version: newest,
            copies: corrupt.len(),
            nodes: corrupt,
        })
    }

    /// Reads the range from the first of `holders` that serves version
    /// `newest` (or newer) intact; schedules the repair of the corrupt
    /// copies met on the way (and of `corrupt`, met before).
    async fn serve(
        &self,
        block: BlockId,
        offset: u64,
        len: u32,
        newest: u64,
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
            };
            match client.read(request).await {
                Ok(reply) => {
                    let reply = reply.into_inner();
                    // A newer version may have landed since the probe; an
                    // older one (the copy was deleted or lost) is not served.
                    if reply.found && reply.version >= newest {
                        self.inner.metrics.reads.inc();
                        if !corrupt.is_empty() {
                            self.spawn_repair(block, (*node).clone(), corrupt);
                        }
                        return Served::Data(BlockRead {
                            node: node.name.clone(),
                            version: reply.version,
                            data: reply.data,
                        });
                    }
                    last_error = Some(BlockError::core(
                        &node.name,
                        tonic::Status::aborted(format!(
                            "version {newest} of block {}/{} is no longer there",
                            block.file_id, block.index
                        )),
                    ));
                }
                Err(status) if status.code() == Code::DataLoss => {
                    self.inner.metrics.corrupt_copies.inc();
                    tracing::error!(node = %node.name, file_id = block.file_id, index = block.index,
                        "corrupt block copy; trying the next one: {}", status.message());
                    corrupt.push(node.name.clone());
                }
                Err(status) => match classify(&node.name, status) {
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
                },
            }
        }
        Served::Failed {
            last_error,
            corrupt,
        }
    }

    /// The cores of the other sites holding `version` of `block` or newer,
    /// newest first.
    async fn remote_holders(&self, block: BlockId, version: u64) -> Vec<(&Node, u64)> {
        let placement = &self.inner.placement;
        let others: Vec<&Node> = placement
            .sites()
            .filter(|&site| site != self.inner.site)
            .flat_map(|site| placement.in_site(block, site, &|_| true))
            .collect();
        let probe = self.probe(block, &others).await;
        probe
            .found
            .into_iter()
            .filter(|&(_, v)| v >= version)
            .collect()
    }

    /// Replaces the `corrupt` copies with `good`'s copy, in the background.
    fn spawn_repair(&self, block: BlockId, good: Node, corrupt: Vec<String>) {
        let client = self.clone();
        tokio::spawn(async move {
            if let Err(err) = client.repair(block, &good, &corrupt).await {
                tracing::warn!(file_id = block.file_id, index = block.index, from = %good.name,
                    %err, "repair of corrupt copies failed; a later read retries it");
            }
        });
    }

    /// Reads the whole block from `good` and puts it (as a repair) to each
    /// core of `corrupt`.
    async fn repair(&self, block: BlockId, good: &Node, corrupt: &[String]) -> Result<(), String> {
        let read = self
            .read_whole(good, block)
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
                let channel = self
                    .inner
                    .network
                    .channel(self.inner.from, node.address)
                    .map_err(|err| err.to_string())?;
                let max = usize::try_from(self.inner.block_size)
                    .unwrap_or(usize::MAX)
                    .saturating_add(1024 * 1024);
                BlockReplicationClient::new(channel)
                    .max_encoding_message_size(max)
                    .put(ReplicaPut {
                        block: Some(block.into()),
                        version: read.version,
                        data: data.clone(),
                        origin_site: self.inner.site_name.clone(),
                        repair: true,
                        job: None,
                    })
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|status| format!("{}: {}", status.code(), status.message()))
            }
            .await;
            match result {
                Ok(reply) if reply.applied => {
                    self.inner.metrics.repairs.inc();
                    tracing::warn!(node = %name, from = %good.name, file_id = block.file_id,
                        index = block.index, version = read.version, "corrupt copy repaired");
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
}
