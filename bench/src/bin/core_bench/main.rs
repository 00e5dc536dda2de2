//! Block-pipeline benchmark at the core API (no NFS, no access server).
//! Each scenario compares two variants measured in the same run, alternated
//! A B A B over `--rounds`, and reports medians across rounds and the ratio
//! B / A:
//!
//! 1. **1 copy vs 2 in-site copies** — 4 KiB random-offset durable writes
//!    (`--queue-depth` concurrent writers) and 1 MiB sequential durable
//!    writes (one writer), over `--blocks` blocks of 4 MiB: A is a
//!    [`BlockStore`] opened in-process on a temporary directory, B a
//!    [`BlockClient`] writing both copies to a 1-site × 2-core cluster
//!    (replication off).
//! 2. **Group commit on vs off** — [`BlockStore`] with 4 KiB random durable
//!    writes: A `--queue-depth` concurrent writers (RocksDB groups their
//!    fsyncs), B one writer issuing the same writes one at a time. Reports
//!    IOPS and WAL syncs per write.
//! 3. **Write throughput at 0 vs `--rtt-ms` inter-site RTT** — 3 sites × 3
//!    cores with geo-replication on, `--wan-writers` concurrent 1 MiB
//!    durable writers at site `a`: the acknowledgement path stays in the
//!    site, so the MB/s ratio should be ≈ 1. Both variants get the same
//!    inter-site bandwidth (`--wan-mb-per-s`): on one machine every core
//!    of every site shares one disk and two CPUs, so an unlimited 0 ms
//!    WAN lets replication compete with the writes far more than a 200 ms
//!    one (which throttles it by round trips) — that measured the
//!    replication load, not the ack path. The replication backlog (jobs
//!    queued on site `a`'s primaries) is read when the writers stop.
//! 4. **Plain TCP vs TLS between nodes** — scenario 1's two-copy workloads
//!    on two 1-site × 2-core clusters, one with `[tls] insecure = true`,
//!    one with mutual TLS (the default): what encryption costs the
//!    acknowledgement path.
//!
//! Every writer owns a disjoint set of blocks (so versions it issues for a
//! block only grow); the blocks of scenarios 1 and 2 are first filled (held
//! writes + flush, not measured), so 4 KiB writes read-modify-write real
//! chunks. The table goes to stdout, progress to stderr, JSON to `--json`.
//!
//! ```text
//! cargo run --release -p geonfs-bench --bin core_bench -- --seconds 3 --rounds 2
//! ```

// Test harness and benchmarks: a failed `unwrap` ends the run with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;
use geonfs_bench::report::{init_tracing, percentile_ms, ratio, write_json};
use geonfs_block_manager::BlockClient;
use geonfs_core_server::{BlockStore, CoreMetrics};
use geonfs_proto::domain::{
    BlockId, BlockRange, BlockWrite, Durability, FileId, Version, WriteBase,
};
use geonfs_rpc::WanParams;
use geonfs_testkit::cluster::TestCluster;
use geonfs_testkit::rng::Rng;

mod report;

/// Block size of every store and cluster (the cluster default).
const BLOCK_SIZE: u64 = 4 * 1024 * 1024;
/// Small random writes.
const SMALL: usize = 4096;
/// Large (sequential) writes.
const LARGE: usize = 1024 * 1024;
/// The file id every benchmark block belongs to.
const FILE_ID: FileId = FileId(1);

/// Command-line options.
#[derive(Parser, Debug, Clone)]
#[command(about = "block-pipeline throughput at the core API: copies, group commit, WAN RTT")]
struct Args {
    /// Measured seconds per workload and variant.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Warm-up seconds before each measured window (not recorded).
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Rounds; each round runs every variant of every scenario once.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Concurrent writers of the 4 KiB random workloads.
    #[arg(long, default_value_t = 16)]
    queue_depth: usize,
    /// Blocks (4 MiB each) the writes of scenarios 1 and 2 spread over.
    #[arg(long, default_value_t = 64)]
    blocks: u64,
    /// Concurrent 1 MiB writers of scenario 3.
    #[arg(long, default_value_t = 8)]
    wan_writers: usize,
    /// Emulated inter-site RTT of scenario 3's variant B, in ms.
    #[arg(long, default_value_t = 200)]
    rtt_ms: u64,
    /// Inter-site bandwidth of scenario 3 (both variants), MB/s per site
    /// pair and direction; 0 = unlimited. With a bandwidth limit both
    /// variants carry the same replication load, so RTT is the only
    /// difference.
    #[arg(long, default_value_t = 25.0)]
    wan_mb_per_s: f64,
    /// Where to write the JSON result.
    #[arg(long, default_value = "bench/results/core_bench.json")]
    json: PathBuf,
}

/// What the writes go to.
#[derive(Clone)]
enum Target {
    /// One copy: a block store called in-process.
    Store(BlockStore),
    /// Two in-site copies through the block manager's client.
    Client(BlockClient),
}

impl Target {
    async fn write(
        &self,
        block: u64,
        offset: u64,
        data: Bytes,
        version: u64,
        durability: Durability,
    ) -> Result<(), String> {
        let block = BlockId {
            file_id: FILE_ID,
            index: block,
        };
        match self {
            Target::Store(store) => {
                let range =
                    BlockRange::new(offset, data.len() as u64).map_err(|e| e.to_string())?;
                let write = BlockWrite {
                    block,
                    range,
                    data,
                    version: Version(version),
                    durability,
                    owner_epoch: None,
                    base: WriteBase::Unchecked,
                };
                store
                    .write(write)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Target::Client(client) => client
                .write(block, offset, data, Version(version), durability)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }
}

/// A target and the stores whose WAL counters describe it.
struct Setup {
    target: Target,
    stores: Vec<BlockStore>,
    /// The next version to issue (shared by every writer of this target).
    versions: Arc<AtomicU64>,
}

impl Setup {
    fn new(target: Target, stores: Vec<BlockStore>) -> Self {
        Setup {
            target,
            stores,
            versions: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Σ (WAL syncs, synced write batches) over the stores.
    fn syncs(&self) -> (u64, u64) {
        self.stores.iter().fold((0, 0), |(s, w), store| {
            let c = store.counters();
            (s + c.wal_syncs, w + c.durable_writes)
        })
    }

    /// Writes every block whole (held, 1 MiB at a time), then flushes.
    async fn prefill(&self, blocks: u64) -> anyhow::Result<()> {
        let started = Instant::now();
        let data = pattern(LARGE, 0xF1);
        let per_block = BLOCK_SIZE / LARGE as u64;
        let results: Vec<Result<(), String>> = futures::stream::iter(0..blocks)
            .map(|block| {
                let data = data.clone();
                async move {
                    for i in 0..per_block {
                        let version = self.versions.fetch_add(1, Ordering::SeqCst);
                        self.target
                            .write(
                                block,
                                i * LARGE as u64,
                                data.clone(),
                                version,
                                Durability::Held,
                            )
                            .await?;
                    }
                    Ok(())
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        for result in results {
            result.map_err(|e| anyhow::anyhow!("prefill write failed: {e}"))?;
        }
        match &self.target {
            Target::Store(store) => store.flush().await.context("prefill flush")?,
            Target::Client(client) => {
                client
                    .flush(&["a-core-1", "a-core-2"])
                    .await
                    .context("prefill flush")?;
            }
        }
        eprintln!(
            "  prefilled {blocks} blocks in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

/// `len` bytes of a cheap non-constant pattern.
fn pattern(len: usize, seed: u64) -> Bytes {
    let mut rng = Rng::new(seed);
    Bytes::from((0..len).map(|_| rng.below(256) as u8).collect::<Vec<u8>>())
}

/// How a writer picks where to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pattern {
    /// Uniform record-aligned offsets in a uniform owned block.
    Random,
    /// Record after record through the owned blocks, wrapping.
    Sequential,
}

/// One workload: how many writers, of what size, where.
#[derive(Clone, Copy, Debug)]
struct Load {
    pattern: Pattern,
    record: usize,
    writers: usize,
    blocks: u64,
}

/// Timing of one measured run.
#[derive(Clone, Copy)]
struct Window {
    measure_from: Instant,
    end: Instant,
}

/// What one writer saw in its measured window.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    completed: u64,
    errors: u64,
}

async fn writer(
    target: Target,
    load: Load,
    index: usize,
    window: Window,
    versions: Arc<AtomicU64>,
    data: Bytes,
) -> Tally {
    let owned: Vec<u64> = (index as u64..load.blocks).step_by(load.writers).collect();
    let mut tally = Tally::default();
    if owned.is_empty() {
        return tally;
    }
    let len = owned.len() as u64;
    let per_block = BLOCK_SIZE / load.record as u64;
    let mut rng = Rng::new(index as u64 + 1);
    let mut next = 0u64;
    loop {
        let start = Instant::now();
        if start >= window.end {
            break;
        }
        let (slot, offset) = match load.pattern {
            Pattern::Random => (rng.below(len), rng.below(per_block) * load.record as u64),
            Pattern::Sequential => {
                next += 1;
                (
                    ((next - 1) / per_block) % len,
                    ((next - 1) % per_block) * load.record as u64,
                )
            }
        };
        let block = owned[slot as usize];
        let version = versions.fetch_add(1, Ordering::SeqCst);
        let result = target
            .write(block, offset, data.clone(), version, Durability::Durable)
            .await;
        let done = Instant::now();
        if start < window.measure_from {
            continue;
        }
        match result {
            Ok(()) => {
                let elapsed = done.saturating_duration_since(start);
                tally
                    .latencies_us
                    .push(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
                if done <= window.end {
                    tally.completed += 1;
                }
            }
            Err(err) => {
                tracing::debug!("write failed: {err}");
                tally.errors += 1;
            }
        }
    }
    tally
}

/// One workload × variant × round.
#[derive(Clone, Debug, Default)]
struct Sample {
    ops_per_sec: f64,
    mb_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    ops: u64,
    errors: u64,
    /// WAL fsyncs per synced write batch over every store involved.
    syncs_per_write: f64,
    /// Replication jobs queued on the writing site's primaries at the end.
    backlog_jobs: Option<u64>,
    /// Bytes of those jobs' blocks, in MB.
    backlog_mb: Option<f64>,
}

async fn run_load(setup: &Setup, load: Load, args: &Args) -> anyhow::Result<Sample> {
    let now = Instant::now();
    let window = Window {
        measure_from: now + Duration::from_secs_f64(args.warmup),
        end: now + Duration::from_secs_f64(args.warmup + args.seconds),
    };
    let data = pattern(load.record, load.record as u64);
    let tasks: Vec<_> = (0..load.writers)
        .map(|i| {
            tokio::spawn(writer(
                setup.target.clone(),
                load,
                i,
                window,
                setup.versions.clone(),
                data.clone(),
            ))
        })
        .collect();
    tokio::time::sleep_until(tokio::time::Instant::from_std(window.measure_from)).await;
    let (syncs_before, writes_before) = setup.syncs();
    let mut latencies = Vec::new();
    let (mut ops, mut errors) = (0, 0);
    for task in tasks {
        let tally = task.await.context("a benchmark writer panicked")?;
        latencies.extend(tally.latencies_us);
        ops += tally.completed;
        errors += tally.errors;
    }
    let (syncs_after, writes_after) = setup.syncs();
    latencies.sort_unstable();
    let ops_per_sec = ops as f64 / args.seconds;
    Ok(Sample {
        ops_per_sec,
        mb_per_sec: ops_per_sec * load.record as f64 / 1e6,
        p50_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
        ops,
        errors,
        syncs_per_write: ratio(
            syncs_after.saturating_sub(syncs_before) as f64,
            writes_after.saturating_sub(writes_before) as f64,
        ),
        backlog_jobs: None,
        backlog_mb: None,
    })
}

/// The compared workloads: scenario id, description, variant A, variant B.
const CASES: [(&str, &str, &str, &str); 6] = [
    ("1a", "4k random write", "1-copy", "2-copies"),
    ("1b", "1m sequential write", "1-copy", "2-copies"),
    ("2", "4k random write, group commit", "on", "off"),
    ("3", "1m write at site a, repl on", "rtt-0ms", "rtt-Nms"),
    ("4a", "4k random write, 2 copies", "plain-tcp", "tls"),
    ("4b", "1m sequential write, 2 copies", "plain-tcp", "tls"),
];

/// One measurement: which case, which variant (0 = A, 1 = B), which round.
struct Record {
    case: usize,
    variant: usize,
    round: usize,
    sample: Sample,
}

fn variant_name(args: &Args, case: usize, variant: usize) -> String {
    let (_, _, a, b) = CASES[case];
    let name = if variant == 0 { a } else { b };
    name.replace("rtt-Nms", &format!("rtt-{}ms", args.rtt_ms))
}

fn workload_name(args: &Args, case: usize, variant: usize) -> String {
    match (case, variant) {
        (0 | 4, _) | (2, 0) => format!("qd{}", args.queue_depth),
        (1 | 5, _) | (2, _) => "qd1".to_string(),
        _ => format!("{} writers", args.wan_writers),
    }
}

fn log(args: &Args, record: &Record) {
    let s = &record.sample;
    eprintln!(
        "round {} {:<3} {:<9} {:>9.1} ops/s {:>8.1} MB/s  p50 {:>7.2} ms  p99 {:>7.2} ms  syncs/write {:.3}  errors {}",
        record.round + 1,
        CASES[record.case].0,
        variant_name(args, record.case, record.variant),
        s.ops_per_sec,
        s.mb_per_sec,
        s.p50_ms,
        s.p99_ms,
        s.syncs_per_write,
        s.errors
    );
}

fn open_store() -> anyhow::Result<(tempfile::TempDir, BlockStore)> {
    let dir = tempfile::Builder::new()
        .prefix("geonfs-core-bench-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let store = BlockStore::open(dir.path(), 16 << 30, CoreMetrics::new())
        .with_context(|| format!("cannot open a block store in {}", dir.path().display()))?;
    Ok((dir, store))
}

async fn close_store(dir: tempfile::TempDir, store: BlockStore) -> anyhow::Result<()> {
    store.close(false).await.context("closing the store")?;
    drop(store);
    dir.close().context("removing the store's directory")
}

fn core_store(cluster: &TestCluster, name: &str) -> anyhow::Result<BlockStore> {
    Ok(cluster
        .node(name)?
        .core()
        .with_context(|| format!("{name} has no core role"))?
        .store()
        .clone())
}

fn client(cluster: &TestCluster) -> anyhow::Result<BlockClient> {
    let from = cluster.addr("a-meta-1")?.ip();
    Ok(BlockClient::new(
        cluster.network().clone(),
        cluster.config(),
        from,
        cluster.site("a")?,
    )?)
}

/// Scenario 1 or 4, one variant: sequential 1 MiB, then random 4 KiB.
async fn copies(
    args: &Args,
    scenario: u8,
    variant: usize,
    round: usize,
) -> anyhow::Result<Vec<Record>> {
    let (seq_case, random_case) = if scenario == 1 { (1, 0) } else { (5, 4) };
    let seq = Load {
        pattern: Pattern::Sequential,
        record: LARGE,
        writers: 1,
        blocks: args.blocks,
    };
    let random = Load {
        pattern: Pattern::Random,
        record: SMALL,
        writers: args.queue_depth,
        blocks: args.blocks,
    };
    let run = |setup: Setup| async move {
        setup.prefill(args.blocks).await?;
        let mut out = Vec::new();
        for (case, load) in [(seq_case, seq), (random_case, random)] {
            let sample = run_load(&setup, load, args).await?;
            out.push(Record {
                case,
                variant,
                round,
                sample,
            });
        }
        anyhow::Ok(out)
    };
    if scenario == 1 && variant == 0 {
        let (dir, store) = open_store()?;
        let outcome = run(Setup::new(
            Target::Store(store.clone()),
            vec![store.clone()],
        ))
        .await;
        close_store(dir, store).await?;
        return outcome;
    }
    let mut builder = TestCluster::builder()
        .sites(1)
        .cores_per_site(2)
        .meta_per_site(1)
        .access_per_site(0)
        .without_replication();
    if scenario == 4 && variant == 0 {
        builder = builder.plain_tcp();
    }
    let cluster = builder
        .start()
        .await
        .context("starting the 1-site × 2-core cluster")?;
    let outcome = async {
        let stores = vec![
            core_store(&cluster, "a-core-1")?,
            core_store(&cluster, "a-core-2")?,
        ];
        run(Setup::new(Target::Client(client(&cluster)?), stores)).await
    }
    .await;
    let shutdown = cluster.shutdown().await;
    let out = outcome?;
    shutdown.context("shutting the cluster down")?;
    Ok(out)
}

/// Scenario 2, one variant: group commit on (many writers) or off (one).
async fn group_commit(args: &Args, variant: usize, round: usize) -> anyhow::Result<Record> {
    let (dir, store) = open_store()?;
    let setup = Setup::new(Target::Store(store.clone()), vec![store.clone()]);
    let load = Load {
        pattern: Pattern::Random,
        record: SMALL,
        writers: if variant == 0 { args.queue_depth } else { 1 },
        blocks: args.blocks,
    };
    let outcome = async {
        setup.prefill(args.blocks).await?;
        run_load(&setup, load, args).await
    }
    .await;
    drop(setup);
    close_store(dir, store).await?;
    Ok(Record {
        case: 2,
        variant,
        round,
        sample: outcome?,
    })
}

/// Scenario 3, one variant: 3 × 3 cluster at 0 ms or `--rtt-ms`.
async fn wan(args: &Args, variant: usize, round: usize) -> anyhow::Result<Record> {
    let rtt = if variant == 0 { 0 } else { args.rtt_ms };
    let cluster = TestCluster::builder()
        .sites(3)
        .cores_per_site(3)
        .meta_per_site(1)
        .access_per_site(0)
        .wan(WanParams {
            rtt: Duration::from_millis(rtt),
            bandwidth_bytes_per_sec: (args.wan_mb_per_s > 0.0)
                .then_some((args.wan_mb_per_s * 1e6) as u64),
        })
        .start()
        .await
        .context("starting the 3-site × 3-core cluster")?;
    let outcome = async {
        let names = ["a-core-1", "a-core-2", "a-core-3"];
        let stores = names
            .iter()
            .map(|n| core_store(&cluster, n))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let setup = Setup::new(Target::Client(client(&cluster)?), stores.clone());
        let load = Load {
            pattern: Pattern::Sequential,
            record: LARGE,
            writers: args.wan_writers,
            blocks: args.blocks,
        };
        let mut sample = run_load(&setup, load, args).await?;
        let (mut jobs, mut bytes) = (0u64, 0u64);
        for store in &stores {
            for job in store.pending_jobs(usize::MAX).await? {
                if job.primary {
                    jobs += 1;
                    bytes += job.length;
                }
            }
        }
        sample.backlog_jobs = Some(jobs);
        sample.backlog_mb = Some(bytes as f64 / 1e6);
        anyhow::Ok(sample)
    }
    .await;
    let shutdown = cluster.shutdown().await;
    let sample = outcome?;
    shutdown.context("shutting the cluster down")?;
    Ok(Record {
        case: 3,
        variant,
        round,
        sample,
    })
}

fn check(args: &Args) -> anyhow::Result<()> {
    if args.rounds == 0 || args.queue_depth == 0 || args.wan_writers == 0 {
        bail!("--rounds, --queue-depth and --wan-writers must be at least 1");
    }
    if args.blocks < args.queue_depth.max(args.wan_writers) as u64 {
        bail!("--blocks must be at least --queue-depth and --wan-writers (writers own blocks)");
    }
    geonfs_bench::report::check_window(args.seconds, args.warmup)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    check(&args)?;
    init_tracing();
    let mut records = Vec::new();
    let keep = |record: Record, records: &mut Vec<Record>| {
        log(&args, &record);
        records.push(record);
    };
    for round in 0..args.rounds {
        for (scenario, case) in [(1, 0), (2, 2), (3, 3), (4, 4)] {
            for variant in 0..2 {
                let name = variant_name(&args, case, variant);
                eprintln!("round {} scenario {scenario} {name}", round + 1);
                match scenario {
                    1 | 4 => {
                        for record in copies(&args, scenario, variant, round).await? {
                            keep(record, &mut records);
                        }
                    }
                    2 => keep(group_commit(&args, variant, round).await?, &mut records),
                    _ => keep(wan(&args, variant, round).await?, &mut records),
                }
            }
        }
    }
    print!("{}", report::table(&args, &records));
    write_json(&args.json, &report::to_json(&args, &records))?;
    println!("JSON: {}", args.json.display());
    Ok(())
}
