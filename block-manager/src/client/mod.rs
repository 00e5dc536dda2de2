//! [`BlockClient`]: the client side of block I/O inside one site, used by
//! the access server.
//!
//! # Write (docs/ARCHITECTURE.md#invariant-1)
//!
//! A write goes to the block's local pair ([`Placement::local_pair`] over
//! the cores this client believes live) **in parallel**, and is
//! acknowledged only when two distinct cores of the site took it. When a
//! copy fails because its core is unreachable, the core is marked suspect
//! ([`Liveness`]) and the copy is retried on the next core in
//! [`Placement::in_site`] order (suspects last, as a last resort); a
//! write that cannot find two cores fails with
//! [`BlockError::NotEnoughCores`] — never an acknowledgement with one copy.
//!
//! A partial write names its **base**, the block's version it applies on,
//! and a core applies it only on a copy complete at that version (see
//! `base.rs` and the core server's `copy_state`): a trimmed copy, one that
//! missed writes, or a replacement core that never held the block refuses,
//! is **seeded** with the block's complete copy (of the site, else of
//! another site), and the write is sent again. So no copy ever holds a
//! partial write on top of zeros or old bytes.
//!
//! Each copy carries the block's remote targets
//! ([`Placement::remote_targets`]), its role (the first of the pair is the
//! **primary**, which ships the geo copies) and the other pair member's
//! name, so each core records a durable replication job in the same batch
//! as the data (see [`crate::replicator`]). A replacement core takes over
//! the role of the member it replaces.
//!
//! # Flush (COMMIT)
//!
//! [`BlockClient::flush`] makes held writes durable on the named cores and
//! returns their incarnations. A core that restarted since the write
//! reports a new incarnation: [`FlushAck::restarted`] lists them, and the
//! caller must resend (the NFS layer changes its write verifier).
//!
//! # Read
//!
//! A read first asks the site's live cores for the block's version (a
//! zero-length read, in parallel), then reads the data from the best-ranked
//! core holding the newest version. A copy that fails its checksum
//! (`DATA_LOSS`) is counted and the next newest copy is tried; an older
//! copy is never returned in its place. A core without data may know the
//! block by a marker: trimmed at a version (the site's kept copy is the
//! newest unless it was lost: when the trimmed version is newer than every
//! copy of the site, another site's copy serves the read), or deleted at a
//! version (a tombstone newer than every copy: the read returns zeros at
//! that version, [`BlockRead::deleted`]).
//!
//! # Ownership fencing
//!
//! A file is owned by one site at a time, under an ownership epoch.
//! [`BlockClient::write_as`], [`BlockClient::read_as`] and
//! [`BlockClient::delete_as`] carry the caller's epoch (the plain calls
//! send 0, "not checked"); a core whose fence for the file is newer
//! refuses with `PERMISSION_DENIED`, which becomes
//! [`BlockError::Fenced`]: fatal for a write (no other core is tried), and
//! for a read as soon as any probed core answers so (never skipped). The
//! handover calls live in `owner.rs`: [`BlockClient::fence`] raises a
//! file's fence on every core of the site, [`BlockClient::list_file`]
//! lists the file's blocks and their newest versions there, and
//! [`BlockClient::put_whole`] puts a whole-block copy (another site's
//! newer one) on the block's cores.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use geonfs_proto::core as wire;
use geonfs_proto::core::core_data_client::CoreDataClient;
use geonfs_proto::domain::{BlockId, Durability, Epoch, FileId, Version};
use geonfs_rpc::{Network, RpcChannel};
use geonfs_site_config::{ClusterConfig, Node, SiteId};
use std::collections::HashMap;
use tonic::Code;

use crate::{BlockError, BlockMetrics, Liveness, Placement};

mod base;
mod delete;
mod gate;
mod owner;
mod pair;
mod read;

use pair::PairError;

pub use gate::{GatePass, SendGate};
pub use owner::{FenceOrder, FenceReport, FileListing};
pub use pair::BlockUpdate;

/// How long a core stays suspect after a failed call.
pub const DEFAULT_SUSPECT_TTL: Duration = Duration::from_secs(5);

/// One core's part of an acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyAck {
    /// The core server's name.
    pub node: String,
    /// Its incarnation when it replied (changes at every restart).
    pub incarnation: u64,
}

/// An acknowledged write: two distinct cores of the writer's site hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteAck {
    /// The block written.
    pub block: BlockId,
    /// The version the write created.
    pub version: Version,
    /// Whether both copies are on stable storage (DURABLE writes); false
    /// for HELD writes until a [`BlockClient::flush`] of both nodes.
    pub durable: bool,
    /// The two cores, in the order they acknowledged.
    pub copies: [CopyAck; 2],
}

impl WriteAck {
    /// The two cores' names.
    pub fn nodes(&self) -> [&str; 2] {
        [&self.copies[0].node, &self.copies[1].node]
    }
}

/// The outcome of a flush: each flushed core's incarnation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlushAck {
    /// One entry per flushed core, in the order asked.
    pub copies: Vec<CopyAck>,
}

impl FlushAck {
    /// The incarnation `node` reported, if it was flushed.
    pub fn incarnation(&self, node: &str) -> Option<u64> {
        self.copies
            .iter()
            .find(|c| c.node == node)
            .map(|c| c.incarnation)
    }

    /// The cores of `ack` whose incarnation changed since the write (they
    /// restarted and may have lost it): the write must be resent. A core of
    /// `ack` that was not flushed counts as changed.
    pub fn restarted<'a>(&self, ack: &'a WriteAck) -> Vec<&'a str> {
        ack.copies
            .iter()
            .filter(|c| self.incarnation(&c.node) != Some(c.incarnation))
            .map(|c| c.node.as_str())
            .collect()
    }
}

/// Data read from one copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRead {
    /// The core that served it.
    pub node: String,
    /// The block's version there (the newest in the site).
    pub version: Version,
    /// The bytes; never-written parts read as zeros.
    pub data: Bytes,
    /// The block was deleted at `version` (a truncate or remove left a
    /// tombstone there): `data` is zeros.
    pub deleted: bool,
}

/// Why one copy failed, and whether another core may take it.
enum CopyError {
    /// Try another core; `suspect` if this one looked unreachable.
    Retry { err: BlockError, suspect: bool },
    /// Stop: another core would fail the same way.
    Fatal(BlockError),
    /// The core's copy is not complete at the write's base: seed it.
    Mismatch,
}

/// How many times a partial write is sent after seeding the copies that
/// refused its base.
const BASE_ATTEMPTS: u32 = 4;

/// Whether a failed call means the core is unreachable (suspect), a
/// problem of that core only (retry elsewhere), or of the request (fatal).
fn classify(node: &str, status: tonic::Status) -> CopyError {
    let suspect = matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    );
    let local = matches!(
        status.code(),
        Code::ResourceExhausted | Code::Internal | Code::DataLoss | Code::Aborted
    );
    let err = BlockError::core(node, status);
    if suspect || local {
        CopyError::Retry { err, suspect }
    } else {
        CopyError::Fatal(err)
    }
}

/// [`classify`] for a request about a block of `file_id`: a refusal by the
/// file's fence is fatal, as [`BlockError::Fenced`].
fn classify_file(node: &str, file_id: FileId, status: tonic::Status) -> CopyError {
    if status.code() == Code::PermissionDenied {
        return CopyError::Fatal(BlockError::from_status(node, file_id, status));
    }
    classify(node, status)
}

/// Block I/O from one node of one site to the site's core servers. Cheap
/// to clone; clones share channels, the liveness cache and metrics.
#[derive(Clone, Debug)]
pub struct BlockClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    network: Network,
    placement: Placement,
    from: IpAddr,
    site: SiteId,
    site_name: String,
    block_size: u64,
    clients: Mutex<HashMap<String, CoreDataClient<RpcChannel>>>,
    liveness: Liveness,
    metrics: BlockMetrics,
    /// The version each block was last written at by this client (`base.rs`).
    versions: base::KnownVersions,
    /// What requests carrying an epoch must pass (`gate.rs`), if any.
    gate: Option<SendGate>,
}

impl BlockClient {
    /// A client calling from address `from_ip` to the cores of `site`,
    /// with no [`SendGate`] (tools and servers that never acknowledge NFS
    /// writes).
    pub fn new(
        network: Network,
        config: &ClusterConfig,
        from_ip: IpAddr,
        site: SiteId,
    ) -> Result<Self, BlockError> {
        Self::gated(network, config, from_ip, site, None)
    }

    /// [`BlockClient::new`] whose requests carrying an epoch must pass
    /// `gate` (an access server's client of its own site).
    pub fn gated(
        network: Network,
        config: &ClusterConfig,
        from_ip: IpAddr,
        site: SiteId,
        gate: Option<SendGate>,
    ) -> Result<Self, BlockError> {
        let placement = Placement::new(config);
        let site_name = placement
            .site_name(site)
            .ok_or(BlockError::UnknownSite(site))?
            .to_string();
        Ok(BlockClient {
            inner: Arc::new(Inner {
                network,
                placement,
                from: from_ip,
                site,
                site_name,
                block_size: config.cluster.block_size,
                clients: Mutex::new(HashMap::new()),
                liveness: Liveness::new(DEFAULT_SUSPECT_TTL),
                metrics: BlockMetrics::new(),
                versions: base::KnownVersions::default(),
                gate,
            }),
        })
    }

    /// Whether a read for `file_id` at `epoch` may be sent (`gate.rs`).
    pub(crate) fn check_gate(
        &self,
        file_id: FileId,
        epoch: Option<Epoch>,
    ) -> Result<(), BlockError> {
        match &self.inner.gate {
            Some(gate) => gate.check(file_id, epoch),
            None => Ok(()),
        }
    }

    /// Admits a write or delete for `file_id` at `epoch` through the gate
    /// (see `gate.rs`): the pass to hold until it is answered.
    pub(crate) async fn admit(
        &self,
        file_id: FileId,
        epoch: Option<Epoch>,
    ) -> Result<Option<GatePass>, BlockError> {
        match &self.inner.gate {
            Some(gate) => gate.admit(file_id, epoch).await,
            None => Ok(None),
        }
    }

    /// The placement this client uses.
    pub fn placement(&self) -> &Placement {
        &self.inner.placement
    }

    /// The site this client writes to.
    pub fn site(&self) -> SiteId {
        self.inner.site
    }

    /// The name of the site this client writes to.
    pub fn site_name(&self) -> &str {
        &self.inner.site_name
    }

    /// The client's beliefs about which cores are reachable.
    pub fn liveness(&self) -> &Liveness {
        &self.inner.liveness
    }

    /// The client's metrics (unregistered until [`BlockMetrics::register`]).
    pub fn metrics(&self) -> &BlockMetrics {
        &self.inner.metrics
    }

    /// The block's local pair as this client currently sees it.
    pub fn local_pair(&self, block: BlockId) -> Result<[&Node; 2], crate::PlacementError> {
        let live = |n: &str| self.inner.liveness.is_live(n);
        self.inner
            .placement
            .local_pair(block, self.inner.site, &live)
    }

    /// A channel from this client's address to `node`, and the largest
    /// message a block operation needs (a whole block and some room).
    fn channel_to(&self, node: &Node) -> Result<(RpcChannel, usize), BlockError> {
        let channel = self
            .inner
            .network
            .channel(self.inner.from, node.address)
            .map_err(|source| BlockError::Rpc {
                node: node.name.clone(),
                source,
            })?;
        let max = usize::try_from(self.inner.block_size)
            .unwrap_or(usize::MAX)
            .saturating_add(1024 * 1024);
        Ok((channel, max))
    }

    fn client(&self, node: &Node) -> Result<CoreDataClient<RpcChannel>, BlockError> {
        let mut clients = match self.inner.clients.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(client) = clients.get(&node.name) {
            return Ok(client.clone());
        }
        let (channel, max) = self.channel_to(node)?;
        let client = CoreDataClient::new(channel)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        clients.insert(node.name.clone(), client.clone());
        Ok(client)
    }

    /// The site's cores for `block`: believed-live ones in rendezvous
    /// order, then suspects (in the same order) as a last resort.
    fn order(&self, block: BlockId) -> (Vec<&Node>, usize) {
        let ranked = self
            .inner
            .placement
            .in_site(block, self.inner.site, &|_| true);
        let (mut live, suspects): (Vec<&Node>, Vec<&Node>) = ranked
            .into_iter()
            .partition(|n| self.inner.liveness.is_live(&n.name));
        let believed = live.len();
        live.extend(suspects);
        (live, believed)
    }

    /// The names of `block`'s remote targets (one core in each of the
    /// n−1 other sites), as this client sees liveness.
    fn remote_targets(&self, block: BlockId) -> Vec<String> {
        let live = |n: &str| self.inner.liveness.is_live(n);
        self.inner
            .placement
            .remote_targets(block, self.inner.site, &live)
            .into_iter()
            .map(|n| n.name.clone())
            .collect()
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        let end = offset.saturating_add(len);
        if end > self.inner.block_size {
            return Err(BlockError::Invalid(format!(
                "offset {offset} + length {len} = {end} is past the block size of {} bytes",
                self.inner.block_size
            )));
        }
        Ok(())
    }

    fn failed(&self, node: &str, suspect: bool) {
        if suspect {
            self.inner.liveness.suspect(node);
            self.inner.metrics.suspect_marks.inc();
        }
    }

    /// Writes `data` at `offset` of `block` with `version` to two distinct
    /// cores of this client's site, in parallel; returns when both hold it
    /// (durably if `durability` is [`Durability::Durable`]). Not checked
    /// against ownership fences ([`BlockClient::write_as`] without an
    /// epoch).
    pub async fn write(
        &self,
        block: BlockId,
        offset: u64,
        data: Bytes,
        version: Version,
        durability: Durability,
    ) -> Result<WriteAck, BlockError> {
        let update = BlockUpdate {
            block,
            offset,
            data,
            version,
            durability,
            owner_epoch: None,
        };
        self.write_as(update).await
    }

    /// [`BlockClient::write`] by a caller at ownership epoch
    /// `update.owner_epoch` of the block's file: a core whose fence for
    /// the file is newer refuses, and the write fails with
    /// [`BlockError::Fenced`] without trying another core.
    ///
    /// A write of the whole block replaces it. A partial write names the
    /// block's current version as its base (see `base.rs`): a copy that is
    /// not complete at it refuses, is seeded from a complete copy (of the
    /// site, else of another site), and the write is sent again.
    pub async fn write_as(&self, update: BlockUpdate) -> Result<WriteAck, BlockError> {
        let whole = update.offset == 0 && update.data.len() as u64 == self.inner.block_size;
        self.write_block(update, whole).await
    }

    /// Writes `update.data` as the whole new content of its block (bytes
    /// past it read as zeros; `update.offset` must be 0), like
    /// [`BlockClient::write_as`]; needs no base (a small record that is
    /// always written whole, such as a file's attribute record).
    pub async fn replace_as(&self, update: BlockUpdate) -> Result<WriteAck, BlockError> {
        if update.offset != 0 {
            return Err(BlockError::Invalid(format!(
                "a replacing write of block {} starts at offset 0, not {}",
                update.block, update.offset
            )));
        }
        self.write_block(update, true).await
    }

    /// [`BlockClient::write_as`], the block's content replaced if `replace`.
    async fn write_block(
        &self,
        update: BlockUpdate,
        replace: bool,
    ) -> Result<WriteAck, BlockError> {
        let (block, version, owner_epoch) = (update.block, update.version, update.owner_epoch);
        self.check_range(update.offset, update.data.len() as u64)?;
        if version == Version::ZERO {
            return Err(BlockError::Invalid("versions start at 1".into()));
        }
        let started = Instant::now();
        let written = update.data.len() as u64;
        let ack = match self.write_seeding(update, replace).await {
            Ok(ack) => ack,
            Err(err) => {
                self.forget_version(block);
                return Err(err);
            }
        };
        self.remember_version(block, owner_epoch, version);
        self.inner.metrics.writes.inc();
        self.inner.metrics.write_bytes.inc_by(written);
        self.inner
            .metrics
            .write_latency
            .observe(started.elapsed().as_secs_f64());
        Ok(ack)
    }

    /// The attempts of [`BlockClient::write_block`]: a partial write is
    /// sent again after the cores that refused its base were seeded.
    async fn write_seeding(
        &self,
        update: BlockUpdate,
        replace: bool,
    ) -> Result<WriteAck, BlockError> {
        let (block, version, epoch) = (update.block, update.version, update.owner_epoch);
        let mut base = if replace {
            None
        } else {
            Some(self.base_of(block, version, epoch).await?)
        };
        let mut attempt = 1;
        loop {
            match self.write_pair(update.clone(), base).await {
                Ok(ack) => return Ok(ack),
                Err(PairError::Mismatch { nodes, acked }) if attempt < BASE_ATTEMPTS => {
                    attempt += 1;
                    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
                    let old = base.unwrap_or(Version::ZERO);
                    base = Some(
                        self.complete_copies(block, version, epoch, old, &names, acked)
                            .await?,
                    );
                }
                Err(PairError::Mismatch { nodes, .. }) => {
                    return Err(BlockError::Unseeded {
                        node: nodes.first().map_or_else(String::new, |n| n.name.clone()),
                        block,
                        version: base.unwrap_or(Version::ZERO),
                        reason: format!("still refused after {BASE_ATTEMPTS} attempts"),
                    });
                }
                Err(PairError::Block(err)) => return Err(err),
            }
        }
    }

    /// The whole of `node`'s copy of `block` (zeros past its length), read
    /// at ownership epoch `owner_epoch`.
    async fn read_whole(
        &self,
        node: &Node,
        block: BlockId,
        owner_epoch: Option<Epoch>,
    ) -> Result<wire::ReadReply, tonic::Status> {
        let mut client = self
            .client(node)
            .map_err(|err| tonic::Status::internal(err.to_string()))?;
        client
            .read(wire::ReadRequest {
                block: Some(block.into()),
                offset: 0,
                length: u32::try_from(self.inner.block_size).unwrap_or(u32::MAX),
                with_pending_job: false,
                owner_epoch: Epoch::to_wire(owner_epoch),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Makes every held write durable on each of `nodes` (in parallel) and
    /// returns their incarnations; compare them with the [`WriteAck`]'s
    /// ([`FlushAck::restarted`]) to learn whether a write must be resent.
    pub async fn flush(&self, nodes: &[&str]) -> Result<FlushAck, BlockError> {
        let calls = nodes.iter().map(|name| async move {
            let node = self
                .all_cores()
                .find(|n| n.name == *name)
                .ok_or_else(|| BlockError::UnknownNode(name.to_string()))?;
            let mut client = self.client(node)?;
            match client
                .flush(wire::FlushRequest { blocks: Vec::new() })
                .await
            {
                Ok(reply) => {
                    self.inner.liveness.alive(name);
                    Ok(CopyAck {
                        node: name.to_string(),
                        incarnation: reply.into_inner().incarnation,
                    })
                }
                Err(status) => {
                    if let CopyError::Retry { suspect: true, .. } = classify(name, status.clone()) {
                        self.failed(name, true);
                    }
                    Err(BlockError::core(name, status))
                }
            }
        });
        let copies = futures::future::join_all(calls)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FlushAck { copies })
    }

    /// The site's block capacity: `(total, free)` bytes summed over the
    /// cores of this site that answer (`None` if none does).
    pub async fn site_capacity(&self) -> Option<(u64, u64)> {
        let cores = self.inner.placement.cores(self.inner.site);
        let stats = futures::future::join_all(cores.iter().map(|node| async move {
            let mut client = self.client(node).ok()?;
            let stat = client.stat(wire::StatRequest {}).await.ok()?.into_inner();
            Some((
                stat.capacity_bytes,
                stat.capacity_bytes.saturating_sub(stat.used_bytes),
            ))
        }))
        .await;
        stats
            .into_iter()
            .flatten()
            .reduce(|(t1, f1), (t2, f2)| (t1.saturating_add(t2), f1.saturating_add(f2)))
    }

    fn all_cores(&self) -> impl Iterator<Item = &Node> {
        let placement = &self.inner.placement;
        placement
            .sites()
            .flat_map(move |site| placement.cores(site))
    }
}
