//! The WAN sweep (file ownership across sites): what an NFS client sees of geonfs as the
//! inter-site round-trip time grows.
//!
//! For every RTT of `--rtts` (default 0, 18, 100 and 200 ms) a fresh
//! in-process cluster is started: 3 sites × 3 cores, n = 3, the default
//! block size, geo replication on with the default `ReplicatorOptions`,
//! that RTT between every pair of sites (bandwidth unlimited unless
//! `--wan-mbps`). Everything is driven over NFSv3 (`nfs3_client`) through
//! the access servers of site a (the owner) and site b, from client
//! addresses inside those sites; then, one phase after the other:
//!
//! 1. **write MB/s at the owner** — a new file of `--write-mib` written
//!    sequentially at site a in 64 KiB UNSTABLE writes, `--depth` in flight
//!    (one connection each), then COMMIT; docs/ARCHITECTURE.md#invariant-3 says this does not
//!    depend on the RTT.
//! 2. **replication lag (RPO) under sustained writes** — the same file
//!    rewritten the same way for `--sustain-secs`, while the
//!    `geonfs_replication_oldest_pending_seconds` gauge of every core's
//!    Prometheus registry is sampled every 100 ms (max over cores and
//!    destination sites); max and median of the samples taken while
//!    writing, and the drain time: from the end of the writes (after their
//!    COMMIT) until no replication job is pending anywhere (three samples
//!    in a row).
//! 3. **read-after-write at a non-owner** — `--raw-samples` times: fresh
//!    random 4 KiB written FILE_SYNC at a random aligned offset at site a,
//!    then, as soon as the reply arrives, READ of the same range at site
//!    b, timed and compared with what was written. docs/ARCHITECTURE.md#invariant-4 says no
//!    read is stale; stale (mismatched) reads are counted, not fatal.
//! 4. **4 KiB read IOPS at the new site after a handover** — a file of
//!    `--iops-mib` written at site a; once replication has drained, random
//!    4 KiB READs at site a for `--iops-secs` with `--depth` in flight (the
//!    owner's local speed); then one FILE_SYNC WRITE at site b (the
//!    handover), a wait until no replication job is pending anywhere
//!    (`catchup_s`), and the same random READs at site b. Every read is
//!    compared with the file's expected bytes.
//!
//! Output: an aligned table on stdout (one row per RTT), every number and
//! the parameters as JSON (`--json`), and a PNG with one panel per
//! quantity against the RTT (`--png`; text needs the DejaVu Sans font,
//! Debian's `fonts-dejavu-core`). Progress lines go to stderr (`--quiet`).
//!
//! ```text
//! cargo run --release -p geonfs-bench --bin wan_sweep -- --rtts 0,18,100,200
//! ```

mod report;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures::future::try_join_all;
use geonfs_bench::plot;
use geonfs_bench::report::{init_tracing, median, percentile_ms, ratio, write_json};
use geonfs_rpc::WanParams;
use geonfs_testkit::cluster::{site_name, TestCluster};
use geonfs_testkit::nfs_client::{mount, nfs_fh3, stable_how, NfsConn};
use geonfs_testkit::replication::{core_registries, sample_until_drained, wait_drained, RpoSample};
use geonfs_testkit::rng::Rng;
use prometheus::Registry;

/// Command-line options.
#[derive(Parser, Debug)]
#[command(
    about = "WAN sweep: owner write MB/s, RPO, cross-site read-after-write and read IOPS after a handover, per inter-site RTT"
)]
struct Args {
    /// Emulated RTTs between every pair of sites, ms (a fresh cluster each).
    #[arg(long, value_delimiter = ',', default_value = "0,18,100,200")]
    rtts: Vec<u64>,
    /// WAN bandwidth per site pair and direction, Mbit/s (default unlimited).
    #[arg(long)]
    wan_mbps: Option<f64>,
    /// Size of the file written at the owner (phases 1 to 3), MiB.
    #[arg(long, default_value_t = 64)]
    write_mib: usize,
    /// Calls in flight (one NFS connection each) for writes and IOPS reads.
    #[arg(long, default_value_t = 16)]
    depth: usize,
    /// Seconds of sustained writes while the RPO is sampled (phase 2).
    #[arg(long, default_value_t = 5.0)]
    sustain_secs: f64,
    /// Read-after-write samples (phase 3).
    #[arg(long, default_value_t = 50)]
    raw_samples: usize,
    /// Size of the file read in phase 4, MiB.
    #[arg(long, default_value_t = 64)]
    iops_mib: usize,
    /// Seconds of each random-read run (phase 4).
    #[arg(long, default_value_t = 5.0)]
    iops_secs: f64,
    /// Longest wait for the replication backlog to empty, seconds.
    #[arg(long, default_value_t = 300.0)]
    drain_timeout: f64,
    /// Seed of the data and the offsets.
    #[arg(long, default_value_t = 0x7761_6e5f_7377)]
    seed: u64,
    /// Where to write the JSON result.
    #[arg(long, default_value = "bench/results/wan_sweep.json")]
    json: PathBuf,
    /// Where to write the PNG plot.
    #[arg(long, default_value = "bench/results/wan_sweep.png")]
    png: PathBuf,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

/// Size of one sequential write.
const CHUNK: usize = 64 * 1024;
/// Size of one read-after-write sample and of one IOPS read.
const PAGE: usize = 4096;
/// How long the access servers may take to reach meta-kvs.
const READY_WAIT: Duration = Duration::from_secs(60);

/// Progress lines on stderr, stamped with the time since the start.
struct Progress {
    quiet: bool,
    start: Instant,
}

impl Progress {
    /// Prints `line` unless `--quiet`.
    fn say(&self, line: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("[{:>7.1} s] {line}", self.start.elapsed().as_secs_f64());
        }
    }
}

/// Whole microseconds of `d`.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One site's export as a client inside that site sees it.
struct Site {
    name: String,
    from: IpAddr,
    addr: SocketAddr,
    root: nfs_fh3,
}

impl Site {
    /// Waits for the access server of site `index` and mounts its export
    /// from a client address of the site (`127.<index+1>.0.99`).
    async fn open(cluster: &TestCluster, index: u8) -> anyhow::Result<Site> {
        let name = site_name(index);
        let addr = cluster
            .ready_access(&format!("{name}-access-1"), READY_WAIT)
            .await?;
        let from = IpAddr::V4(Ipv4Addr::new(127, index + 1, 0, 99));
        let root = mount(from, addr, &cluster.config().nfs.export_path).await?;
        Ok(Site {
            name,
            from,
            addr,
            root,
        })
    }

    /// `n` connections to the site's NFS server.
    async fn connect(&self, n: usize) -> anyhow::Result<Vec<NfsConn>> {
        try_join_all((0..n).map(|_| NfsConn::connect(self.from, self.addr))).await
    }
}

/// Writes `data` over the file from offset 0 in CHUNK-sized UNSTABLE
/// writes, one call in flight per connection, then COMMITs; the bytes
/// written. With `until`, wraps around at the end of `data` and stops
/// starting writes at that instant; without, writes `data` once.
async fn write_chunks(
    conns: &mut [NfsConn],
    fh: &nfs_fh3,
    data: &[u8],
    until: Option<Instant>,
) -> anyhow::Result<u64> {
    let chunks = data.len().div_ceil(CHUNK);
    if chunks == 0 || conns.is_empty() {
        bail!("nothing to write with");
    }
    let next = AtomicUsize::new(0);
    let workers = conns.iter_mut().map(|conn| {
        let next = &next;
        async move {
            let mut bytes = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let index = match until {
                    None if i >= chunks => break,
                    None => i,
                    Some(t) if Instant::now() >= t => break,
                    Some(_) => i % chunks,
                };
                let start = index * CHUNK;
                let piece = &data[start..(start + CHUNK).min(data.len())];
                conn.write(fh, start as u64, piece, stable_how::UNSTABLE)
                    .await?;
                bytes += piece.len() as u64;
            }
            anyhow::Ok(bytes)
        }
    });
    let bytes = try_join_all(workers).await?.into_iter().sum();
    conns[0].commit(fh).await?;
    Ok(bytes)
}

/// Seconds of `d`, NaN for `None` (a wait that timed out).
fn secs_or_nan(d: Option<Duration>) -> f64 {
    d.map_or(f64::NAN, |d| d.as_secs_f64())
}

/// What phase 2 measured.
struct Sustained {
    seconds: f64,
    bytes: u64,
    samples: Vec<RpoSample>,
    drain_s: f64,
}

impl Sustained {
    /// The RPO of the samples taken while writing.
    fn rpo_while_writing(&self) -> Vec<f64> {
        let rpo = self.samples.iter().filter(|s| s.writing).map(|s| s.rpo_s);
        rpo.collect()
    }

    /// The largest RPO while writing (NaN without a sample).
    fn rpo_max(&self) -> f64 {
        self.rpo_while_writing()
            .into_iter()
            .fold(f64::NAN, f64::max)
    }

    /// The median RPO while writing.
    fn rpo_p50(&self) -> f64 {
        median(&self.rpo_while_writing())
    }
}

/// Phase 2: `data` rewritten over the file at the owner for
/// `--sustain-secs` (as in [`write_chunks`]) while the RPO is sampled,
/// and sampling on until replication has drained.
async fn sustained(
    conns: &mut [NfsConn],
    fh: &nfs_fh3,
    data: &[u8],
    registries: &[Registry],
    args: &Args,
) -> anyhow::Result<Sustained> {
    let start = Instant::now();
    let end = OnceLock::new();
    let writer = async {
        let until = start + Duration::from_secs_f64(args.sustain_secs);
        let written = write_chunks(conns, fh, data, Some(until)).await;
        let _ = end.set(Instant::now());
        written
    };
    let timeout = Duration::from_secs_f64(args.drain_timeout);
    let sampler = sample_until_drained(registries, start, &end, timeout);
    let (written, (samples, drain)) = futures::join!(writer, sampler);
    let bytes = written?;
    let seconds = end
        .get()
        .map_or(f64::NAN, |e| e.duration_since(start).as_secs_f64());
    Ok(Sustained {
        seconds,
        bytes,
        samples,
        drain_s: secs_or_nan(drain),
    })
}

/// What phase 3 measured.
struct ReadAfterWrite {
    /// READ latencies at the non-owner, µs, sorted.
    read_us: Vec<u64>,
    /// FILE_SYNC WRITE latencies at the owner, µs, sorted.
    write_us: Vec<u64>,
    /// READs that did not return the bytes just written.
    stale: usize,
}

/// Phase 3: `samples` times fresh random 4 KiB written FILE_SYNC through
/// `owner` at a random aligned offset below `len`, then read back at once
/// through `other`; the READ is timed and its bytes compared.
async fn read_after_write(
    owner: &mut NfsConn,
    other: &mut NfsConn,
    fh: &nfs_fh3,
    len: usize,
    samples: usize,
    rng: &mut Rng,
) -> anyhow::Result<ReadAfterWrite> {
    let pages = (len / PAGE) as u64;
    let mut result = ReadAfterWrite {
        read_us: Vec::with_capacity(samples),
        write_us: Vec::with_capacity(samples),
        stale: 0,
    };
    for _ in 0..samples {
        let offset = rng.below(pages) * PAGE as u64;
        let data = rng.bytes(PAGE);
        let started = Instant::now();
        owner
            .write(fh, offset, &data, stable_how::FILE_SYNC)
            .await?;
        result.write_us.push(micros(started.elapsed()));
        let started = Instant::now();
        let got = other.read(fh, offset, PAGE as u32).await?;
        result.read_us.push(micros(started.elapsed()));
        if got != data {
            result.stale += 1;
        }
    }
    result.read_us.sort_unstable();
    result.write_us.sort_unstable();
    Ok(result)
}

/// One random-read run.
#[derive(Clone, Copy, Debug)]
struct Iops {
    iops: f64,
    reads: u64,
    /// Replies whose bytes differed from the file's.
    mismatched: u64,
}

/// Random aligned 4 KiB READs over the file whose bytes are `expect`, one
/// in flight per connection, started for `secs`; every reply is compared
/// with `expect`.
async fn read_iops(
    conns: &mut [NfsConn],
    fh: &nfs_fh3,
    expect: &[u8],
    secs: f64,
    seed: u64,
) -> anyhow::Result<Iops> {
    let pages = (expect.len() / PAGE) as u64;
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    let workers = conns.iter_mut().enumerate().map(|(k, conn)| async move {
        let mut rng = Rng::new(seed ^ ((k as u64) << 32));
        let (mut reads, mut mismatched) = (0u64, 0u64);
        while Instant::now() < until {
            let offset = rng.below(pages) as usize * PAGE;
            let got = conn.read(fh, offset as u64, PAGE as u32).await?;
            reads += 1;
            if got[..] != expect[offset..offset + PAGE] {
                mismatched += 1;
            }
        }
        anyhow::Ok((reads, mismatched))
    });
    let done = try_join_all(workers).await?;
    let elapsed = start.elapsed().as_secs_f64();
    let reads = done.iter().map(|d| d.0).sum();
    Ok(Iops {
        iops: reads as f64 / elapsed,
        reads,
        mismatched: done.iter().map(|d| d.1).sum(),
    })
}

/// What phase 4 measured.
struct Handover {
    /// Replication drain after writing the file at the owner, s.
    initial_drain_s: f64,
    owner: Iops,
    /// The handover WRITE at the new site, ms.
    handover_write_ms: f64,
    /// From the handover WRITE's reply until no job is pending, s.
    catchup_s: f64,
    new_site: Iops,
}

/// Phase 4: the owner's read IOPS on a fresh file, a handover WRITE at
/// `new`, the catch-up, and the read IOPS at `new`.
async fn handover(
    owner: &Site,
    new: &Site,
    registries: &[Registry],
    args: &Args,
    rng: &mut Rng,
    progress: &Progress,
) -> anyhow::Result<Handover> {
    let timeout = Duration::from_secs_f64(args.drain_timeout);
    let mut conns = owner.connect(args.depth).await?;
    let fh = conns[0].create(&owner.root, "iops.bin").await?;
    let mut content = rng.bytes(args.iops_mib << 20);
    write_chunks(&mut conns, &fh, &content, None).await?;
    let initial_drain_s = secs_or_nan(wait_drained(registries, timeout).await);
    progress.say(format_args!(
        "  iops.bin: {} MiB written at {}, replicated {initial_drain_s:.1} s later",
        args.iops_mib, owner.name
    ));
    let before = read_iops(&mut conns, &fh, &content, args.iops_secs, rng.next_u64()).await?;
    progress.say(format_args!(
        "  4k read IOPS at {} (owner): {:.0} ({} reads, {} mismatched)",
        owner.name, before.iops, before.reads, before.mismatched
    ));
    drop(conns);
    let mut conns = new.connect(args.depth).await?;
    let offset = rng.below((content.len() / PAGE) as u64) as usize * PAGE;
    let data = rng.bytes(PAGE);
    let started = Instant::now();
    conns[0]
        .write(&fh, offset as u64, &data, stable_how::FILE_SYNC)
        .await?;
    let handover_write_ms = started.elapsed().as_secs_f64() * 1000.0;
    content[offset..offset + PAGE].copy_from_slice(&data);
    let catchup_s = secs_or_nan(wait_drained(registries, timeout).await);
    progress.say(format_args!(
        "  handover WRITE at {}: {handover_write_ms:.1} ms, caught up {catchup_s:.2} s later",
        new.name
    ));
    let after = read_iops(&mut conns, &fh, &content, args.iops_secs, rng.next_u64()).await?;
    progress.say(format_args!(
        "  4k read IOPS at {} (new owner): {:.0} ({} reads, {} mismatched)",
        new.name, after.iops, after.reads, after.mismatched
    ));
    Ok(Handover {
        initial_drain_s,
        owner: before,
        handover_write_ms,
        catchup_s,
        new_site: after,
    })
}

/// Everything measured at one RTT.
struct RttResult {
    rtt_ms: u64,
    write_s: f64,
    write_mbps: f64,
    sustain: Sustained,
    raw: ReadAfterWrite,
    handover: Handover,
}

/// MB/s (10^6 bytes) of `bytes` in `seconds`.
fn mbps(bytes: u64, seconds: f64) -> f64 {
    ratio(bytes as f64 / 1e6, seconds)
}

/// The four phases on a running cluster.
async fn measure(
    cluster: &TestCluster,
    args: &Args,
    rtt_ms: u64,
    progress: &Progress,
) -> anyhow::Result<RttResult> {
    let a = Site::open(cluster, 0).await?;
    let b = Site::open(cluster, 1).await?;
    let registries = core_registries(cluster)?;
    let mut rng = Rng::new(args.seed ^ rtt_ms.rotate_left(40));

    let mut conns = a.connect(args.depth).await?;
    let fh = conns[0].create(&a.root, "write.bin").await?;
    let data = rng.bytes(args.write_mib << 20);
    let started = Instant::now();
    let bytes = write_chunks(&mut conns, &fh, &data, None).await?;
    let write_s = started.elapsed().as_secs_f64();
    let write_mbps = mbps(bytes, write_s);
    progress.say(format_args!(
        "  1 write at {}: {} MiB in {write_s:.2} s = {write_mbps:.1} MB/s",
        a.name, args.write_mib
    ));

    let sustain = sustained(&mut conns, &fh, &data, &registries, args).await?;
    let samples = sustain.rpo_while_writing().len();
    progress.say(format_args!(
        "  2 sustained writes at {}: {:.1} MB/s for {:.1} s, RPO max {:.2} s p50 {:.2} s ({} samples), drained {:.2} s after",
        a.name,
        mbps(sustain.bytes, sustain.seconds),
        sustain.seconds,
        sustain.rpo_max(),
        sustain.rpo_p50(),
        samples,
        sustain.drain_s
    ));

    let mut other = NfsConn::connect(b.from, b.addr).await?;
    let raw = read_after_write(
        &mut conns[0],
        &mut other,
        &fh,
        data.len(),
        args.raw_samples,
        &mut rng,
    )
    .await?;
    progress.say(format_args!(
        "  3 read-after-write {} -> {}: READ p50 {:.2} ms p99 {:.2} ms, stale {}/{}",
        a.name,
        b.name,
        percentile_ms(&raw.read_us, 0.5),
        percentile_ms(&raw.read_us, 0.99),
        raw.stale,
        args.raw_samples
    ));
    drop((conns, other));

    progress.say("  4 handover");
    let handover = handover(&a, &b, &registries, args, &mut rng, progress).await?;
    Ok(RttResult {
        rtt_ms,
        write_s,
        write_mbps,
        sustain,
        raw,
        handover,
    })
}

/// Starts a cluster with `rtt_ms` between its sites, measures, shuts it
/// down.
async fn run_rtt(args: &Args, rtt_ms: u64, progress: &Progress) -> anyhow::Result<RttResult> {
    let wan = WanParams {
        rtt: Duration::from_millis(rtt_ms),
        bandwidth_bytes_per_sec: args.wan_mbps.map(|m| (m * 1e6 / 8.0) as u64),
    };
    progress.say(format_args!(
        "RTT {rtt_ms} ms: starting 3 sites x 3 cores, n = 3"
    ));
    let cluster = TestCluster::builder()
        .sites(3)
        .cores_per_site(3)
        .wan(wan)
        .start()
        .await
        .with_context(|| format!("starting the cluster for RTT {rtt_ms} ms"))?;
    let outcome = measure(&cluster, args, rtt_ms, progress).await;
    let shutdown = cluster.shutdown().await;
    let result = outcome.with_context(|| format!("RTT {rtt_ms} ms"))?;
    shutdown.context("shutting the cluster down")?;
    Ok(result)
}

/// Rejects options that cannot be measured.
fn check(args: &Args) -> anyhow::Result<()> {
    if args.rtts.is_empty() {
        bail!("--rtts: give at least one RTT");
    }
    if args.depth == 0 || args.write_mib == 0 || args.iops_mib == 0 || args.raw_samples == 0 {
        bail!("--depth, --write-mib, --iops-mib and --raw-samples must be at least 1");
    }
    for (name, value) in [
        ("--sustain-secs", args.sustain_secs),
        ("--iops-secs", args.iops_secs),
        ("--drain-timeout", args.drain_timeout),
        ("--wan-mbps", args.wan_mbps.unwrap_or(1.0)),
    ] {
        if !(value.is_finite() && value > 0.0) {
            bail!("{name} must be positive");
        }
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let args = Args::parse();
    check(&args)?;
    // Fail now, not after the sweep, when the plot cannot have text.
    plot::register_font()?;
    let progress = Progress {
        quiet: args.quiet,
        start: Instant::now(),
    };
    let mut results = Vec::new();
    for &rtt_ms in &args.rtts {
        results.push(run_rtt(&args, rtt_ms, &progress).await?);
    }
    println!(
        "geonfs WAN sweep: 3 sites x 3 cores, n = 3, WAN bandwidth {}; writes {} MiB in 64 KiB UNSTABLE + COMMIT at depth {}; sustained {} s; {} read-after-write samples (4 KiB FILE_SYNC at a, READ at b); 4k random-read IOPS over {} MiB for {} s at depth {}",
        args.wan_mbps.map_or("unlimited".to_string(), |m| format!("{m} Mbit/s")),
        args.write_mib,
        args.depth,
        args.sustain_secs,
        args.raw_samples,
        args.iops_mib,
        args.iops_secs,
        args.depth
    );
    print!("{}", report::table(&results, &args).render());
    write_json(&args.json, &report::to_json(&results, &args))?;
    println!("JSON: {}", args.json.display());
    plot::write_png(&report::figure(&results, &args), &args.png)?;
    println!("PNG: {}", args.png.display());
    Ok(())
}
