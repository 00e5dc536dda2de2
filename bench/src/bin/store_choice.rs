//! RocksDB or plain files for block data? Both in one temporary directory
//! (`--dir`, on the data disk), A B / B A alternating per round, medians.
//! **A**: the real [`BlockStore`] (64 KiB chunks + CRC-32C in BlobDB, one
//! `WriteBatch` per write, `sync = true`: RocksDB groups concurrent synced
//! writers into one WAL fsync). **B**: one file per 4 MiB block whose 4 KiB
//! header holds its 64 chunk CRC-32Cs; a write verifies and read-modify-writes
//! each partially covered chunk for its new CRC, `pwrite`s data and CRCs and
//! `fdatasync`s before acknowledging: each writer pays its own fsync, and B
//! is NOT crash-atomic ([`NOTE`]). `--writers` tasks, each owning every
//! `writers`-th prefilled block, run 4 KiB random durable writes, 1 MiB
//! sequential durable writes, 4 KiB random verified reads. Besides ops/s,
//! MB/s, p50/p99: fsyncs per write (A: RocksDB's WAL-sync ticker per synced
//! batch), "put amp" (bytes the store put per byte asked; A's before RocksDB
//! copies them to WAL and blob files) and "disk amp" (sectors the `--dir`
//! device wrote per byte asked: whole machine, A's background flushes too).
//!
//! ```text
//! cargo run --release -p geonfs-bench --bin store_choice -- --seconds 4 --rounds 3
//! ```

// Test harness and benchmarks: a failed `unwrap` ends the run with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use geonfs_bench::report::{
    init_tracing, json_num, median, percentile_ms, ratio, write_json, Table,
};
use geonfs_core_server::{BlockStore, CoreMetrics, CHUNK_SIZE as CHUNK};
use geonfs_proto::domain::{
    BlockId, BlockRange, BlockRead, BlockWrite, Durability, FileId, Version, WriteBase,
};
use geonfs_testkit::rng::Rng;
use serde_json::{json, Value};

const BLOCK_SIZE: u64 = 4 * 1024 * 1024;
/// B's per-file header: one big-endian CRC-32C per chunk, padded to a page.
const HEADER: u64 = 4096;
/// Why B is not a drop-in replacement whatever its speed.
const NOTE: &str = "B (file per block, CRC header, fdatasync per write) is not crash-atomic: \
a crash between or during its data and CRC pwrites leaves a false checksum failure or a torn \
write; A (one RocksDB WriteBatch per write) leaves only complete writes";

#[derive(Parser, Debug)]
#[command(about = "block data in RocksDB (BlockStore) vs one file per block")]
struct Args {
    /// Measured seconds per workload, variant and round.
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    /// Warm-up seconds before each measured window (not recorded).
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Rounds; each runs every workload on A and on B.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrent writers (readers) of every workload.
    #[arg(long, default_value_t = 16)]
    writers: usize,
    /// 4 MiB blocks the workloads spread over.
    #[arg(long, default_value_t = 64)]
    blocks: u64,
    /// Where the stores' temporary directory goes (the disk measured).
    #[arg(long, default_value = "/var/tmp")]
    dir: PathBuf,
    /// JSON output (default bench/results/store_choice-<unix time>.json).
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Variant B: one file per block, `[HEADER: CRCs][BLOCK_SIZE: data]`.
/// An open block file with the lock serialising its read-modify-writes.
type OpenFile = Arc<(File, Mutex<()>)>;

#[derive(Default)]
struct FileStore {
    dir: PathBuf,
    /// Open files, each with the lock serialising its read-modify-writes.
    files: Mutex<HashMap<u64, OpenFile>>,
    /// fdatasyncs, durable writes, bytes written.
    counts: [AtomicU64; 3],
}

/// Checks chunk `i` of `crcs` against `data`.
fn verify(data: &[u8], crcs: &[u8], i: usize, block: u64, chunk: u64) -> io::Result<()> {
    if crc32c::crc32c(data).to_be_bytes()[..] == crcs[4 * i..4 * i + 4] {
        return Ok(());
    }
    let what = format!("block {block} chunk {chunk}: bad CRC");
    Err(io::Error::new(io::ErrorKind::InvalidData, what))
}

impl FileStore {
    /// The block's file, created on first use (sparse, CRCs of zero chunks,
    /// file and directory synced).
    fn block(&self, index: u64) -> io::Result<Arc<(File, Mutex<()>)>> {
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = files.get(&index) {
            return Ok(f.clone());
        }
        let mut open = OpenOptions::new();
        let file = open.read(true).write(true).create(true);
        let file = file.open(self.dir.join(format!("{index:08}.blk")))?;
        if file.metadata()?.len() == 0 {
            file.set_len(HEADER + BLOCK_SIZE)?;
            let zero = crc32c::crc32c(&vec![0u8; CHUNK as usize]).to_be_bytes();
            file.write_all_at(&zero.repeat((BLOCK_SIZE / CHUNK) as usize), 0)?;
            file.sync_all()?;
            File::open(&self.dir)?.sync_all()?;
        }
        let f = Arc::new((file, Mutex::new(())));
        files.insert(index, f.clone());
        Ok(f)
    }

    fn write(&self, index: u64, offset: u64, data: &[u8]) -> io::Result<()> {
        let f = self.block(index)?;
        let (file, _guard) = (&f.0, f.1.lock().unwrap_or_else(PoisonError::into_inner));
        let end = offset + data.len() as u64;
        let (first, last) = (offset / CHUNK, (end - 1) / CHUNK);
        let mut crcs = vec![0u8; 4 * (last - first + 1) as usize];
        file.read_exact_at(&mut crcs, 4 * first)?;
        let mut chunk = vec![0u8; CHUNK as usize];
        for (i, c) in (first..=last).enumerate() {
            let (cs, ce) = (c * CHUNK, (c + 1) * CHUNK);
            let (lo, hi) = (offset.max(cs), end.min(ce));
            let piece = &data[(lo - offset) as usize..(hi - offset) as usize];
            let crc = if lo == cs && hi == ce {
                crc32c::crc32c(piece)
            } else {
                file.read_exact_at(&mut chunk, HEADER + cs)?;
                verify(&chunk, &crcs, i, index, c)?;
                chunk[(lo - cs) as usize..(hi - cs) as usize].copy_from_slice(piece);
                crc32c::crc32c(&chunk)
            };
            crcs[4 * i..4 * i + 4].copy_from_slice(&crc.to_be_bytes());
        }
        file.write_all_at(data, HEADER + offset)?;
        file.write_all_at(&crcs, 4 * first)?;
        self.counts[2].fetch_add((data.len() + crcs.len()) as u64, Relaxed);
        file.sync_data()?;
        self.counts[0].fetch_add(1, Relaxed);
        self.counts[1].fetch_add(1, Relaxed);
        Ok(())
    }

    /// Reads the touched chunks whole and verifies their CRCs.
    fn read(&self, index: u64, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let file = &self.block(index)?.0;
        let (first, last) = (offset / CHUNK, (offset + len as u64 - 1) / CHUNK);
        let mut crcs = vec![0u8; 4 * (last - first + 1) as usize];
        file.read_exact_at(&mut crcs, 4 * first)?;
        let mut buf = vec![0u8; ((last - first + 1) * CHUNK) as usize];
        file.read_exact_at(&mut buf, HEADER + first * CHUNK)?;
        for (i, chunk) in buf.chunks(CHUNK as usize).enumerate() {
            verify(chunk, &crcs, i, index, first + i as u64)?;
        }
        let lo = (offset - first * CHUNK) as usize;
        Ok(buf[lo..lo + len].to_vec())
    }
}

#[derive(Clone)]
enum Target {
    Rocks(BlockStore),
    Files(Arc<FileStore>),
}

fn block_id(index: u64) -> BlockId {
    BlockId {
        file_id: FileId(1),
        index,
    }
}

impl Target {
    async fn write(&self, index: u64, at: u64, data: Bytes, version: u64) -> anyhow::Result<()> {
        match self {
            Target::Rocks(store) => {
                let (block, range) = (block_id(index), BlockRange::new(at, data.len() as u64)?);
                let durability = Durability::Durable;
                store
                    .write(BlockWrite {
                        block,
                        range,
                        data,
                        version: Version(version),
                        durability,
                        owner_epoch: None,
                        base: WriteBase::Unchecked,
                    })
                    .await?;
            }
            Target::Files(fs) => {
                let fs = fs.clone();
                let job = tokio::task::spawn_blocking(move || fs.write(index, at, &data));
                job.await??;
            }
        }
        Ok(())
    }

    async fn read(&self, index: u64, offset: u64, len: usize) -> anyhow::Result<()> {
        match self {
            Target::Rocks(store) => {
                let (block, range) = (block_id(index), BlockRange::new(offset, len as u64)?);
                let found = store
                    .read(BlockRead {
                        block,
                        range,
                        owner_epoch: None,
                    })
                    .await?;
                found.map(drop).context("block absent")
            }
            Target::Files(fs) => {
                let fs = fs.clone();
                let job = tokio::task::spawn_blocking(move || fs.read(index, offset, len));
                Ok(job.await?.map(drop)?)
            }
        }
    }

    /// (fsyncs, durable writes, bytes put).
    fn counters(&self) -> [u64; 3] {
        match self {
            Target::Rocks(store) => {
                let c = store.counters();
                [c.wal_syncs, c.durable_writes, c.chunk_bytes_written]
            }
            Target::Files(fs) => std::array::from_fn(|i| fs.counts[i].load(Relaxed)),
        }
    }
}

/// Bytes the device holding `dir` has written (`/sys/dev/block/M:m/stat`).
fn disk_bytes(dir: &std::path::Path) -> u64 {
    let dev = std::fs::metadata(dir).map_or(0, |m| std::os::unix::fs::MetadataExt::dev(&m));
    let (major, minor) = ((dev >> 8) & 0xfff, (dev & 0xff) | ((dev >> 12) & 0xfff00));
    let path = format!("/sys/dev/block/{major}:{minor}/stat");
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let sectors = stat.split_whitespace().nth(6).and_then(|s| s.parse().ok());
    sectors.unwrap_or(0u64) * 512
}

fn pattern(len: usize, seed: u64) -> Bytes {
    let mut rng = Rng::new(seed);
    Bytes::from((0..len).map(|_| rng.below(256) as u8).collect::<Vec<u8>>())
}

/// The workloads: name, writes?, sequential?, record size.
const LOADS: [(&str, bool, bool, usize); 3] = [
    ("4k random write", true, false, 4096),
    ("1m sequential write", true, true, 1 << 20),
    ("4k random read", false, false, 4096),
];
const VARIANTS: [&str; 2] = ["A rocksdb", "B files"];

/// The next write version (only grows, so no write is stale).
static VERSIONS: AtomicU64 = AtomicU64::new(1);

/// One task of workload `load`: owns blocks `index, index + writers, …`;
/// measures from `window.0` to `window.1`. Returns (latencies µs, ops
/// completed in the window, errors).
async fn worker(
    args: Arc<Args>,
    t: Target,
    load: usize,
    index: usize,
    window: (Instant, Instant),
) -> (Vec<u64>, u64, u64) {
    let (_, writes, seq, record) = LOADS[load];
    let (step, index) = (args.writers as u64, index as u64);
    let owned = (args.blocks - index).div_ceil(step);
    let per_block = BLOCK_SIZE / record as u64;
    let data = pattern(record, index);
    let mut rng = Rng::new(index * 7919 + load as u64 + 1);
    let (mut lat, mut ops, mut errors, mut next) = (Vec::new(), 0, 0, 0u64);
    loop {
        let start = Instant::now();
        if start >= window.1 {
            return (lat, ops, errors);
        }
        let (slot, rec) = match seq {
            true => (next / per_block % owned, next % per_block),
            false => (rng.below(owned), rng.below(per_block)),
        };
        next += 1;
        let (block, offset) = (index + slot * step, rec * record as u64);
        let result = match writes {
            false => t.read(block, offset, record).await,
            true => {
                let version = VERSIONS.fetch_add(1, Relaxed);
                t.write(block, offset, data.clone(), version).await
            }
        };
        let done = Instant::now();
        match result {
            _ if start < window.0 => {}
            Ok(()) => {
                lat.push(done.duration_since(start).as_micros() as u64);
                ops += u64::from(done <= window.1);
            }
            Err(err) => {
                tracing::warn!("operation failed: {err:#}");
                errors += 1;
            }
        }
    }
}

/// The metrics of a [`Sample`]: JSON name, table header, decimals.
const METRICS: [(&str, &str, usize); 9] = [
    ("ops_per_sec", "ops/s", 1),
    ("mb_per_sec", "MB/s", 1),
    ("p50_ms", "p50 ms", 2),
    ("p99_ms", "p99 ms", 2),
    ("fsyncs_per_write", "fsync/wr", 3),
    ("put_amplification", "put amp", 2),
    ("disk_bytes_per_byte", "disk amp", 2),
    ("ops", "ops", 0),
    ("errors", "errors", 0),
];
/// Metrics from this index on are summed (not medianed) across rounds.
const SUMMED: usize = 7;
/// One workload × variant × round, in the order of [`METRICS`].
type Sample = [f64; 9];

async fn run_load(args: &Arc<Args>, target: &Target, load: usize) -> anyhow::Result<Sample> {
    let (_, writes, _, record) = LOADS[load];
    let from = Instant::now() + Duration::from_secs_f64(args.warmup);
    let window = (from, from + Duration::from_secs_f64(args.seconds));
    let tasks: Vec<_> = (0..args.writers)
        .map(|i| tokio::spawn(worker(args.clone(), target.clone(), load, i, window)))
        .collect();
    tokio::time::sleep_until(tokio::time::Instant::from_std(from)).await;
    let (c0, d0) = (target.counters(), disk_bytes(&args.dir));
    let (mut lat, mut ops, mut errors) = (Vec::new(), 0, 0);
    for task in tasks {
        let t = task.await.context("a benchmark task panicked")?;
        (ops, errors) = (ops + t.1, errors + t.2);
        lat.extend(t.0);
    }
    let (c1, d1) = (target.counters(), disk_bytes(&args.dir));
    lat.sort_unstable();
    let asked = (lat.len() * record) as f64;
    let per = |x: u64, y: f64| if writes { ratio(x as f64, y) } else { f64::NAN };
    let ops_per_sec = ops as f64 / args.seconds;
    Ok([
        ops_per_sec,
        ops_per_sec * record as f64 / 1e6,
        percentile_ms(&lat, 0.50),
        percentile_ms(&lat, 0.99),
        per(c1[0] - c0[0], (c1[1] - c0[1]) as f64),
        per(c1[2] - c0[2], asked),
        per(d1.saturating_sub(d0), asked),
        ops as f64,
        errors as f64,
    ])
}

/// Writes every block whole, 1 MiB at a time, durably (so that every 4 KiB
/// write then read-modify-writes a real chunk).
async fn prefill(args: &Args, target: &Target) -> anyhow::Result<()> {
    let (started, data) = (Instant::now(), pattern(1 << 20, 0xF1));
    for block in 0..args.blocks {
        for offset in (0..BLOCK_SIZE).step_by(1 << 20) {
            let version = VERSIONS.fetch_add(1, Relaxed);
            target.write(block, offset, data.clone(), version).await?;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!("  prefilled {} blocks in {secs:.1} s", args.blocks);
    Ok(())
}

/// (workload, variant, round, sample).
type Record = (usize, usize, usize, Sample);

/// Medians across rounds (sums for ops and errors).
fn summarize(records: &[Record], load: usize, variant: usize) -> Sample {
    let mine = records.iter().filter(|r| r.0 == load && r.1 == variant);
    std::array::from_fn(|i| {
        let values: Vec<f64> = mine.clone().map(|r| r.3[i]).collect();
        [median(&values), values.iter().sum()][usize::from(i >= SUMMED)]
    })
}

fn sample_json(s: &Sample) -> Value {
    let fields = METRICS
        .iter()
        .zip(s)
        .map(|(m, x)| (m.0.to_string(), json_num(*x)));
    Value::Object(fields.collect())
}

fn to_json(args: &Args, records: &[Record]) -> Value {
    let summary: Vec<Value> = (0..LOADS.len())
        .map(|l| {
            let (a, b) = (summarize(records, l, 0), summarize(records, l, 1));
            json!({
                "workload": LOADS[l].0,
                "a": sample_json(&a),
                "b": sample_json(&b),
                "ratio_a_over_b_ops": json_num(ratio(a[0], b[0])),
                "ratio_a_over_b_p50": json_num(ratio(a[2], b[2])),
                "ratio_a_over_b_p99": json_num(ratio(a[3], b[3])),
            })
        })
        .collect();
    let rounds: Vec<Value> = records
        .iter()
        .map(|(l, v, round, s)| {
            json!({
                "round": round + 1,
                "workload": LOADS[*l].0,
                "variant": VARIANTS[*v],
                "result": sample_json(s),
            })
        })
        .collect();
    json!({
        "benchmark": "store_choice",
        "config": {
            "seconds": json_num(args.seconds),
            "warmup_seconds": json_num(args.warmup),
            "rounds": args.rounds,
            "writers": args.writers,
            "blocks": args.blocks,
            "dir": args.dir.display().to_string(),
        },
        "statistic": "median across rounds (ops, errors: sums); percentiles nearest-rank; MB = 10^6 bytes",
        "note": NOTE,
        "summary": summary,
        "rounds": rounds,
    })
}

fn cells(s: &Sample) -> impl Iterator<Item = String> + '_ {
    METRICS
        .iter()
        .zip(s)
        .map(|(m, x)| format!("{:.*}", m.2, x).replace("NaN", "-"))
}

/// A table row: workload, variant, then `cells`.
fn row(load: &str, variant: &str, cells: impl Iterator<Item = String>) -> Vec<String> {
    let head = [load.to_string(), variant.to_string()];
    head.into_iter().chain(cells).collect()
}

fn table(args: &Args, records: &[Record]) -> String {
    let out = format!(
        "block data: RocksDB BlockStore (A) vs file per block (B): {} s measured (+{} s warm-up), {} rounds alternating, {} tasks, {} blocks of 4 MiB, writes durable; medians across rounds\n",
        args.seconds, args.warmup, args.rounds, args.writers, args.blocks
    );
    let mut headers = vec!["workload", "variant"];
    headers.extend(METRICS.iter().map(|m| m.1));
    let mut t = Table::new(&headers, 2);
    for (l, &(name, ..)) in LOADS.iter().enumerate() {
        let (a, b) = (summarize(records, l, 0), summarize(records, l, 1));
        for (v, s) in [(0, &a), (1, &b)] {
            t.row(row(name, VARIANTS[v], cells(s)));
        }
        let r = (0..4).map(|i| format!("{:.3}x", ratio(a[i], b[i])));
        t.row(row(name, "ratio A/B", r));
        if l + 1 < LOADS.len() {
            t.rule();
        }
    }
    out + &t.render() + &format!("note: {NOTE}\n")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.rounds == 0 || args.writers == 0 || args.blocks < args.writers as u64 {
        bail!("need --rounds and --writers of at least 1, and --blocks >= --writers");
    }
    geonfs_bench::report::check_window(args.seconds, args.warmup)?;
    init_tracing();
    let mut tmp = tempfile::Builder::new();
    let tmp = tmp.prefix("store-choice-").tempdir_in(&args.dir)?;
    let store = BlockStore::open(&tmp.path().join("rocks"), 16 << 30, CoreMetrics::new())?;
    let files = FileStore {
        dir: tmp.path().join("files"),
        ..FileStore::default()
    };
    std::fs::create_dir_all(&files.dir)?;
    let targets = [Target::Rocks(store.clone()), Target::Files(Arc::new(files))];
    let args = Arc::new(args);
    for (v, target) in targets.iter().enumerate() {
        eprintln!("prefill {}", VARIANTS[v]);
        prefill(&args, target).await?;
    }
    let mut records = Vec::new();
    for round in 0..args.rounds {
        // A B, then B A: drift and background work hit both alike.
        for variant in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            for (load, spec) in LOADS.iter().enumerate() {
                let s = run_load(&args, &targets[variant], load).await?;
                let line = row(spec.0, VARIANTS[variant], cells(&s)).join("  ");
                eprintln!("round {} {line}", round + 1);
                records.push((load, variant, round, s));
            }
        }
    }
    drop(targets);
    store.close(false).await.context("closing")?;
    tmp.close().context("removing the temporary directory")?;
    print!("{}", table(&args, &records));
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let default = PathBuf::from(format!("bench/results/store_choice-{stamp}.json"));
    let json = args.json.clone().unwrap_or(default);
    write_json(&json, &to_json(&args, &records))?;
    println!("JSON: {}", json.display());
    Ok(())
}
