//! The data-path thrasher: the counterpart for file data of the meta-kvs
//! Jepsen runs. An in-process cluster (3 sites × 3 cores, n = 3, one
//! meta voter per site) serves a few files to clients that write,
//! truncate, commit and read random ranges through NFS at random
//! **doors** — the access server of each site, plus a second one at site
//! a (door `a2`) — so files change owner between sites and between two
//! access servers of one site, while a nemesis kills -9
//! and restarts cores, access servers and meta voters, cuts and heals
//! sites, and damages chunks on disk (`nemesis.rs`), one fault at a time.
//!
//! Each client keeps a model of what it was acknowledged (`client.rs`):
//! every read is checked against it exactly. After every round (every
//! fault healed, every node running) and at the end, every file is read
//! whole at every site and must equal its model (nothing lost, nothing
//! older than acknowledged, no zeros the model does not have). At the end
//! the replication queues must drain and every site must hold every block
//! of every file at its newest version.
//!
//! A run is fixed by its seed (the operations, their sites, the faults and
//! their order; the timing is not). The suite runs 50 seeds
//! (`testkit/tests/system/thrash.rs`); `bench/src/bin/thrash.rs` runs longer
//! ones.

mod client;
mod nemesis;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use geonfs_block_manager::ReplicatorOptions;
use geonfs_core_server::ReplicaOffer;
use geonfs_proto::domain::{BlockId, BlockRange, BlockRead, FileId, Version};

pub use client::{Addresses, ClientStats, FileClient, OP_DEADLINE};
pub use nemesis::Fault;

use crate::cluster::TestCluster;
use crate::nfs_client::{mount, NfsConn};
use crate::rng::Rng;

/// The export the access servers of a test cluster serve.
const EXPORT: &str = "/geonfs";
/// How long the end of a run waits for the replication queues to drain.
const DRAIN: Duration = Duration::from_secs(120);
/// The second door of site a: its name, its access server, the clients'
/// address.
const SECOND_DOOR: (&str, &str, [u8; 4]) = ("a2", "a-access-2", [127, 1, 0, 10]);

/// The door an access server `node` serves, if clients use it.
fn door_of(node: &str) -> Option<String> {
    if node == SECOND_DOOR.1 {
        return Some(SECOND_DOOR.0.to_string());
    }
    node.strip_suffix("-access-1").map(str::to_string)
}

/// What a run does.
#[derive(Clone, Debug)]
pub struct ThrashOptions {
    /// Fixes the operations and the faults.
    pub seed: u64,
    /// Files, one client each.
    pub files: usize,
    /// Rounds; each ends with every fault healed and every file checked
    /// at every site.
    pub rounds: usize,
    /// Operations per client per round.
    pub ops_per_round: usize,
    /// The cluster's block size.
    pub block_size: u64,
    /// Files stay below this size.
    pub max_file_size: u64,
    /// A bug's effect put into the cluster after the first round, to show
    /// that the checks catch it.
    pub inject: Option<Injection>,
    /// Whether the nemesis runs (off: the clients alone, e.g. to see an
    /// injected bug and nothing else).
    pub faults: bool,
}

impl ThrashOptions {
    /// The suite's shape for `seed`: 3 files, 2 rounds of 12 operations
    /// each, 64 KiB blocks, files under 320 KiB (five blocks).
    pub fn suite(seed: u64) -> Self {
        ThrashOptions {
            seed,
            files: 3,
            rounds: 2,
            ops_per_round: 12,
            block_size: 64 * 1024,
            max_file_size: 320 * 1024,
            inject: None,
            faults: true,
        }
    }
}

/// A bug's effect the run can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injection {
    /// The trimmed-copy bug: in every site, a core not holding a block of
    /// the first file gets a sparse copy of it (its first 4 KiB, zeros
    /// elsewhere) at a newer version, as a write applied on a trimmed copy
    /// made before the fix.
    SparseCopy,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct ThrashReport {
    /// The seed.
    pub seed: u64,
    /// Every fault, in order.
    pub faults: Vec<String>,
    /// The clients' totals.
    pub clients: ClientStats,
    /// Bytes read whole at every site at the checkpoints and checked.
    pub bytes_checked: u64,
    /// Checkpoints passed.
    pub checkpoints: usize,
    /// The run's duration.
    pub elapsed: Duration,
    /// Where the time went: (phase, seconds).
    pub phases: Vec<(String, f64)>,
}

impl std::fmt::Display for ThrashReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.clients;
        write!(
            f,
            "seed {}: {} faults [{}]; {} calls ({} retried), {} bytes written, {} unstable writes \
             resent, {} moves between sites; {} bytes checked by reads, {} at {} checkpoints; \
             {:.1} s ({})",
            self.seed,
            self.faults.len(),
            self.faults.join(", "),
            c.calls,
            c.retries,
            c.bytes_written,
            c.resent,
            c.moves,
            c.bytes_verified,
            self.bytes_checked,
            self.checkpoints,
            self.elapsed.as_secs_f64(),
            self.phases
                .iter()
                .map(|(phase, s)| format!("{phase} {s:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// Runs the thrasher; fails at the first check that does not hold (or a
/// call that never succeeds), saying what differed where.
pub async fn run(options: &ThrashOptions) -> anyhow::Result<ThrashReport> {
    let started = Instant::now();
    let replication = ReplicatorOptions {
        takeover_timeout: Duration::from_secs(1),
        base_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(1),
        scan_interval: None,
        stream_stall: Duration::from_secs(5),
        // Half the seeds trim at once (every later write re-seeds the
        // trimmed copy), half keep a written block's copies a while.
        trim_delay: if options.seed.is_multiple_of(2) {
            Duration::ZERO
        } else {
            Duration::from_millis(700)
        },
        ..ReplicatorOptions::default()
    };
    let mut cluster = TestCluster::builder()
        .sites(3)
        .cores_per_site(3)
        .access_per_site(2)
        .replication_factor(3)
        .block_size(options.block_size)
        .replication(replication)
        .start()
        .await?;
    let start = started.elapsed().as_secs_f64();
    let result = thrash(&mut cluster, options).await;
    cluster.kill_all().await?;
    let mut report = result?;
    report.phases.insert(0, ("start".into(), start));
    report.elapsed = started.elapsed();
    Ok(report)
}

async fn thrash(
    cluster: &mut TestCluster,
    options: &ThrashOptions,
) -> anyhow::Result<ThrashReport> {
    let sites: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let addresses: Addresses = Arc::new(Mutex::new(BTreeMap::new()));
    let mut from = BTreeMap::new();
    for (i, site) in sites.iter().enumerate() {
        let addr = cluster
            .ready_access(&format!("{site}-access-1"), Duration::from_secs(120))
            .await?;
        lock(&addresses)?.insert(site.clone(), addr);
        from.insert(site.clone(), IpAddr::from([127, i as u8 + 1, 0, 9]));
    }
    let (door, node, client) = SECOND_DOOR;
    let addr = cluster.ready_access(node, Duration::from_secs(120)).await?;
    lock(&addresses)?.insert(door.to_string(), addr);
    from.insert(door.to_string(), IpAddr::from(client));
    let doors: Vec<String> = from.keys().cloned().collect();
    let mut clients = create_files(options, &addresses, &from).await?;
    let mut rng = Rng::new(options.seed ^ 0x006e_656d_6573_6973);
    let mut report = ThrashReport {
        seed: options.seed,
        ..ThrashReport::default()
    };
    let mut phase = Instant::now();
    let mut lap = |report: &mut ThrashReport, name: String| {
        report.phases.push((name, phase.elapsed().as_secs_f64()));
        phase = Instant::now();
    };
    lap(&mut report, "ready".into());
    let mut damaged = nemesis::Damaged::default();
    for round in 0..options.rounds {
        let done = AtomicBool::new(false);
        let work = async {
            let result = futures::future::try_join_all(
                clients.iter_mut().map(|c| c.run(options.ops_per_round)),
            )
            .await;
            done.store(true, Ordering::SeqCst);
            result
        };
        let faults = async {
            let mut faults = Vec::new();
            while options.faults && !done.load(Ordering::SeqCst) {
                let fault = nemesis::pick(&mut rng, cluster, &sites);
                nemesis::apply(cluster, &fault, &mut rng, &sites, &mut damaged).await?;
                // The fault lasts a while under load.
                tokio::time::sleep(Duration::from_millis(200 + rng.below(800))).await;
                nemesis::heal(cluster, &fault, &addresses).await?;
                faults.push(fault.to_string());
            }
            anyhow::Ok(faults)
        };
        let (work, faults) = tokio::join!(work, faults);
        let faults = faults.with_context(|| format!("nemesis, round {round}"))?;
        report.faults.extend(faults);
        work.with_context(|| format!("round {round} (faults so far: {:?})", report.faults))?;
        lap(&mut report, format!("round {round}"));
        if round == 0 && options.inject == Some(Injection::SparseCopy) {
            inject_sparse_copies(cluster, &clients[0], &sites).await?;
        }
        let checked = checkpoint(&mut clients, &doors).await;
        report.bytes_checked +=
            with_copies(cluster, &clients, checked)
                .await
                .with_context(|| {
                    format!(
                        "checkpoint after round {round} (faults: {:?})",
                        report.faults
                    )
                })?;
        report.checkpoints += 1;
        lap(&mut report, format!("check {round}"));
    }
    drained(cluster, &clients, &sites)
        .await
        .with_context(|| format!("the end (faults: {:?})", report.faults))?;
    lap(&mut report, "drain".into());
    let checked = checkpoint(&mut clients, &doors).await;
    report.bytes_checked += with_copies(cluster, &clients, checked)
        .await
        .context("the end")?;
    report.checkpoints += 1;
    lap(&mut report, "check".into());
    for client in &clients {
        let s = client.stats;
        let t = &mut report.clients;
        t.calls += s.calls;
        t.retries += s.retries;
        t.bytes_written += s.bytes_written;
        t.bytes_verified += s.bytes_verified;
        t.resent += s.resent;
        t.moves += s.moves;
    }
    Ok(report)
}

fn lock<T>(m: &Mutex<T>) -> anyhow::Result<std::sync::MutexGuard<'_, T>> {
    m.lock().map_err(|_| anyhow::anyhow!("lock poisoned"))
}

/// Creates the files at site a; a client for each, starting at a site
/// drawn from the seed.
async fn create_files(
    options: &ThrashOptions,
    addresses: &Addresses,
    from: &BTreeMap<String, IpAddr>,
) -> anyhow::Result<Vec<FileClient>> {
    let at_a = *lock(addresses)?.get("a").context("site a")?;
    let from_a = *from.get("a").context("site a")?;
    let root = mount(from_a, at_a, EXPORT).await?;
    let mut conn = NfsConn::connect(from_a, at_a).await?;
    let mut pick = Rng::new(options.seed);
    let mut clients = Vec::new();
    for i in 0..options.files {
        let name = format!("thrash-{}-{i}.img", options.seed);
        let fh = conn.create(&root, &name).await?;
        let sites: Vec<&String> = from.keys().collect();
        let site = sites[pick.below(sites.len() as u64) as usize].clone();
        clients.push(FileClient::new(
            name,
            fh,
            from.clone(),
            addresses.clone(),
            site,
            options.seed.wrapping_mul(1000).wrapping_add(i as u64),
            options.max_file_size,
        ));
    }
    Ok(clients)
}

/// Settles every client and reads every file whole through every door;
/// the bytes checked.
async fn checkpoint(clients: &mut [FileClient], doors: &[String]) -> anyhow::Result<u64> {
    let mut checked = 0;
    for client in clients.iter_mut() {
        client.settle().await?;
        for door in doors {
            client.verify_at(door).await?;
            checked += client.model.len() as u64;
        }
    }
    Ok(checked)
}

/// `result`, with every core's copies of the files added to a failure:
/// which core holds which version (or marker) of each block, and how many
/// bytes of it differ from the model, so a failed check says where the
/// wrong bytes live.
async fn with_copies<T>(
    cluster: &TestCluster,
    clients: &[FileClient],
    result: anyhow::Result<T>,
) -> anyhow::Result<T> {
    let err = match result {
        Ok(value) => return Ok(value),
        Err(err) => err,
    };
    let mut copies = String::new();
    for client in clients {
        match describe_copies(cluster, client).await {
            Ok(text) => copies.push_str(&text),
            Err(describe) => {
                copies.push_str(&format!("\n{}: copies unknown: {describe:#}", client.name))
            }
        }
    }
    Err(err.context(format!("the copies:{copies}")))
}

/// One line per block of `client`'s file and core: the copy's version or
/// marker and the bytes differing from the model.
async fn describe_copies(cluster: &TestCluster, client: &FileClient) -> anyhow::Result<String> {
    let bs = client_block_size(cluster) as usize;
    let file_id = file_id(client)?;
    let mut text = String::new();
    for (index, expected) in client.model.chunks(bs).enumerate() {
        text.push_str(&format!("\n{} block {index}:", client.name));
        let block = BlockId {
            file_id,
            index: index as u64,
        };
        for core in cluster.core_names() {
            let Some(server) = cluster.node(&core)?.core() else {
                continue;
            };
            let read = BlockRead {
                block,
                range: BlockRange::new(0, expected.len() as u64)?,
                owner_epoch: None,
            };
            let copy = match server.store().read_copy(read).await {
                Ok(copy) => copy,
                Err(err) => {
                    text.push_str(&format!(" {core}=({err})"));
                    continue;
                }
            };
            let state = match (copy.found, copy.marker) {
                (Some(found), _) => {
                    let differ = found
                        .data
                        .iter()
                        .zip(expected)
                        .filter(|(a, b)| a != b)
                        .count();
                    format!("v{} ({differ} differ)", found.version)
                }
                (None, Some(marker)) => format!("{marker:?}"),
                (None, None) => "-".into(),
            };
            text.push_str(&format!(" {core}={state}"));
        }
    }
    Ok(text)
}

/// The file id in an access server's handle (generation, then the id, BE).
fn file_id(client: &FileClient) -> anyhow::Result<FileId> {
    let bytes = client.handle().data.as_ref();
    Ok(FileId(u64::from_be_bytes(
        bytes
            .get(8..16)
            .context("a handle holds the file id at bytes 8..16")?
            .try_into()?,
    )))
}

/// The newest version of each block on the running cores of `site`.
async fn site_versions(
    cluster: &TestCluster,
    site: &str,
) -> anyhow::Result<BTreeMap<BlockId, Version>> {
    let mut versions = BTreeMap::new();
    for core in cluster.core_names() {
        if !core.starts_with(&format!("{site}-")) {
            continue;
        }
        let store = cluster.node(&core)?.core().context("a core")?.store();
        let mut after = None;
        loop {
            let (blocks, more) = store.list(after, 1000).await?;
            for info in &blocks {
                let v = versions.entry(info.block).or_insert(info.version);
                *v = (*v).max(info.version);
            }
            after = blocks.last().map(|b| b.block);
            if !more || after.is_none() {
                break;
            }
        }
    }
    Ok(versions)
}

/// Waits (at most [`DRAIN`]) until no core has a replication job left and
/// every site holds every block of every file that has data, at the same
/// newest version.
async fn drained(
    cluster: &TestCluster,
    clients: &[FileClient],
    sites: &[String],
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let problem = drain_problem(cluster, clients, sites).await?;
        let Some(problem) = problem else {
            return Ok(());
        };
        if started.elapsed() > DRAIN {
            bail!("after {DRAIN:?}: {problem}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What still keeps the cluster from being drained, if anything.
async fn drain_problem(
    cluster: &TestCluster,
    clients: &[FileClient],
    sites: &[String],
) -> anyhow::Result<Option<String>> {
    for core in cluster.core_names() {
        let store = cluster.node(&core)?.core().context("a core")?.store();
        if let Some(job) = store.pending_jobs(1).await?.first() {
            return Ok(Some(format!("{core} still has a replication job: {job:?}")));
        }
    }
    let mut per_site = BTreeMap::new();
    for site in sites {
        per_site.insert(site.clone(), site_versions(cluster, site).await?);
    }
    for client in clients {
        let file_id = file_id(client)?;
        let bs = client_block_size(cluster);
        for (index, piece) in client.model.chunks(bs as usize).enumerate() {
            if piece.iter().all(|&b| b == 0) {
                continue;
            }
            let block = BlockId {
                file_id,
                index: index as u64,
            };
            let held: Vec<(String, Option<Version>)> = per_site
                .iter()
                .map(|(site, versions)| (site.clone(), versions.get(&block).copied()))
                .collect();
            let newest = held.iter().filter_map(|(_, v)| *v).max();
            if held.iter().any(|(_, v)| v.is_none() || *v != newest) {
                return Ok(Some(format!(
                    "block {index} of {} is not at its newest version at every site: {held:?}",
                    client.name
                )));
            }
        }
    }
    Ok(None)
}

fn client_block_size(cluster: &TestCluster) -> u64 {
    cluster.config().cluster.block_size
}

/// [`Injection::SparseCopy`] on the first block of `client`'s file with
/// data past its first 4 KiB.
async fn inject_sparse_copies(
    cluster: &TestCluster,
    client: &FileClient,
    sites: &[String],
) -> anyhow::Result<()> {
    let bs = client_block_size(cluster) as usize;
    // A block with data past the 4 KiB the sparse copy keeps.
    let Some(index) = client
        .model
        .chunks(bs)
        .position(|p| p.iter().skip(4096).any(|&b| b != 0))
    else {
        bail!("nothing written to inject a sparse copy into");
    };
    let block = BlockId {
        file_id: file_id(client)?,
        index: index as u64,
    };
    let start = index * bs;
    let head = &client.model[start..(start + 4096).min(client.model.len())];
    for site in sites {
        let versions = site_versions(cluster, site).await?;
        let newest = versions.get(&block).copied().unwrap_or(Version::ZERO);
        for core in cluster.core_names() {
            if !core.starts_with(&format!("{site}-")) {
                continue;
            }
            let store = cluster.node(&core)?.core().context("a core")?.store();
            if store.block_info(block).await?.is_none() {
                store
                    .put_replica(ReplicaOffer {
                        changes: None,
                        block,
                        version: newest.next(),
                        data: Bytes::copy_from_slice(head),
                        repair: false,
                        job: None,
                        epoch: None,
                        lost_below: None,
                    })
                    .await?;
                break;
            }
        }
    }
    Ok(())
}
