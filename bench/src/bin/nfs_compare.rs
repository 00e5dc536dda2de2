//! geonfs against NFS-Ganesha and against `nfs3_server`, with the same
//! real clients, in one run: `qemu-img bench` 4 KiB writes and reads at
//! queue depth 16 through QEMU's NFS driver, and `nfs-cp` of a random file
//! in and out. The rounds rotate the order of the servers; the table gives
//! medians and the ratios to Ganesha.
//!
//! geonfs is site a's access server of an in-process 3 sites × 3 cores
//! cluster (n = 3, replication on); `nfs3_server` is that crate's own
//! dispatcher over its in-memory file system (`MemFs`: no storage at all,
//! so its numbers bound what the crate's dispatcher can do); Ganesha is
//! `shared/tools/ganesha-baseline` exporting a directory of this disk on
//! 127.9.0.1. Per-address portmappers from `shared/tools/portmap` answer
//! for geonfs and nfs3_server on port 111 (QEMU always asks one). Needs
//! root, qemu-img with the nfs driver (`shared/tools/qemu-nfs/setup.sh`)
//! and nfs-cp (libnfs-utils).
//!
//! ```text
//! cargo build --release -p geonfs-bench --bins
//! /var/tmp/geonfs-target/release/nfs_compare --rounds 3 --count 4000 --cross-mib 1024
//! ```
//!
//! `--cross-mib N` adds the cross-site check: nfs-cp of a random N MiB
//! file into site a and, once geo replication drained, out of site b, with
//! the md5 of both compared (reading at site b before the copies arrived
//! is docs/ARCHITECTURE.md#invariant-4: read-after-write across sites).

// Test harness and benchmarks: a failed `unwrap` ends the run with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use geonfs_bench::peers::{comparison_row, comparison_table, run, start_memfs, Ganesha, Portmap};
use geonfs_bench::report::{init_tracing, json_num, median, write_json};
use geonfs_testkit::cluster::TestCluster;
use geonfs_testkit::rng::Rng;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "geonfs vs NFS-Ganesha with qemu-img bench and nfs-cp")]
struct Args {
    /// Rounds (each runs both servers, alternating which goes first).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Requests per qemu-img bench run.
    #[arg(long, default_value_t = 4000)]
    count: u32,
    /// Size of the file nfs-cp copies, MiB.
    #[arg(long, default_value_t = 64)]
    copy_mib: usize,
    /// Size of the file copied into site a and, once replicated, out of
    /// site b (MiB, 0 skips this step): checksums compared, MB/s reported.
    #[arg(long, default_value_t = 0)]
    cross_mib: usize,
    /// The shared test tools.
    #[arg(long, default_value = "../shared/tools")]
    tools: PathBuf,
    /// Where to write the JSON result.
    #[arg(long, default_value = "bench/results/nfs_compare.json")]
    json: PathBuf,
}

/// How long the access servers may take to reach meta-kvs.
const READY_WAIT: Duration = Duration::from_secs(60);

/// Where nfs3_server's MemFs listens.
const MEMFS_IP: &str = "127.9.1.1";

/// One NFS server under test.
struct Server {
    name: &'static str,
    /// `nfs://ADDR/EXPORT` (QEMU URLs: the portmapper gives the ports).
    url: String,
    /// `?nfsport=P&mountport=M` for nfs-cp.
    ports: String,
}

/// One round's numbers for one server.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    write_iops: f64,
    read_iops: f64,
    copy_in_mbs: f64,
    copy_out_mbs: f64,
}

const METRICS: [&str; 4] = [
    "4k write IOPS qd16",
    "4k read IOPS qd16",
    "nfs-cp in MB/s",
    "nfs-cp out MB/s",
];

fn values(s: &Sample) -> [f64; 4] {
    [s.write_iops, s.read_iops, s.copy_in_mbs, s.copy_out_mbs]
}

/// `qemu-img bench` IOPS on `image` (a write run with `write`).
fn bench(image: &str, count: u32, write: bool) -> anyhow::Result<f64> {
    let count_arg = count.to_string();
    let mut args = vec![
        "bench", "-f", "raw", "-t", "none", "-d", "16", "-s", "4k", "-c", &count_arg,
    ];
    if write {
        args.insert(1, "-w");
    }
    args.push(image);
    let out = run("qemu-img", &args)?;
    let secs: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("Run completed in "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no run time in qemu-img bench output: {out}"))?;
    Ok(f64::from(count) / secs)
}

/// Copies `from` to `to` with nfs-cp; MB/s of `bytes`.
fn copy(from: &str, to: &str, bytes: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    run("nfs-cp", &[from, to])?;
    Ok(bytes as f64 / 1e6 / started.elapsed().as_secs_f64())
}

fn measure(server: &Server, round: usize, args: &Args, local: &Path) -> anyhow::Result<Sample> {
    let image = format!("{}/bench-{round}.img", server.url);
    run("qemu-img", &["create", "-f", "raw", &image, "64M"])?;
    let write_iops = bench(&image, args.count, true)?;
    let read_iops = bench(&image, args.count, false)?;
    let bytes = args.copy_mib << 20;
    let source = local.join("source.bin");
    let into = format!("{}/copy-{round}.bin{}", server.url, server.ports);
    let copy_in_mbs = copy(&source.display().to_string(), &into, bytes)?;
    let back = local.join(format!("back-{}-{round}.bin", server.name));
    let copy_out_mbs = copy(&into, &back.display().to_string(), bytes)?;
    if std::fs::read(&back)? != std::fs::read(&source)? {
        bail!("{}: nfs-cp returned other bytes", server.name);
    }
    std::fs::remove_file(&back)?;
    Ok(Sample {
        write_iops,
        read_iops,
        copy_in_mbs,
        copy_out_mbs,
    })
}

async fn compare(args: &Args, servers: &[Server; 3]) -> anyhow::Result<Vec<[Sample; 3]>> {
    let local = tempfile::tempdir()?;
    write_random_file(
        &local.path().join("source.bin"),
        args.copy_mib,
        0x6e66_735f_636f_6d70,
    )?;
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        let mut samples = [Sample::default(); 3];
        for k in 0..3 {
            // Rotating order: each server goes first, second and last.
            let which = (round + k) % 3;
            let server = &servers[which];
            let sample =
                tokio::task::block_in_place(|| measure(server, round, args, local.path()))?;
            eprintln!("round {} {:<11} {:?}", round + 1, server.name, sample);
            samples[which] = sample;
        }
        rounds.push(samples);
    }
    Ok(rounds)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let args = Args::parse();
    let tools = args
        .tools
        .canonicalize()
        .context("--tools: shared/tools not found")?;
    let cluster = TestCluster::builder().sites(3).start().await?;
    let addr = cluster.ready_access("a-access-1", READY_WAIT).await?;
    let port = addr.port();
    let portmap = Portmap::start(&tools, &addr.ip().to_string(), port)?;
    let ganesha = Ganesha::start(&tools, "127.9.0.1");
    let outcome = async {
        let ganesha = ganesha.as_ref().map_err(|err| anyhow::anyhow!("{err:#}"))?;
        let ganesha = Server {
            name: "ganesha",
            url: ganesha.url.clone(),
            ports: format!(
                "?nfsport={}&mountport={}",
                ganesha.nfs_port, ganesha.mount_port
            ),
        };
        let geonfs = Server {
            name: "geonfs",
            url: format!("nfs://{}/geonfs", addr.ip()),
            ports: format!("?nfsport={port}&mountport={port}"),
        };
        let memfs_port = start_memfs(MEMFS_IP).await?;
        let _memfs_portmap = Portmap::start(&tools, MEMFS_IP, memfs_port)?;
        let memfs = Server {
            name: "nfs3_server",
            url: format!("nfs://{MEMFS_IP}/memfs"),
            ports: format!("?nfsport={memfs_port}&mountport={memfs_port}"),
        };
        let rounds = compare(&args, &[geonfs, memfs, ganesha]).await?;
        let cross = if args.cross_mib > 0 {
            Some(cross_site_copy(&cluster, args.cross_mib).await?)
        } else {
            None
        };
        Ok::<_, anyhow::Error>((rounds, cross))
    }
    .await;
    if let Ok(ganesha) = ganesha {
        ganesha.stop();
    }
    drop(portmap);
    cluster.shutdown().await?;
    let (rounds, cross) = outcome?;
    report(&args, &rounds, cross.as_ref())
}

/// What the cross-site copy measured.
struct CrossCopy {
    mib: usize,
    in_mbs: f64,
    drain_seconds: f64,
    out_mbs: f64,
    md5: String,
}

/// Replication jobs not yet done, over every core of the cluster.
fn replication_backlog(cluster: &TestCluster) -> anyhow::Result<f64> {
    let mut jobs = 0.0;
    for name in cluster.core_names() {
        let core = cluster.node(&name)?.core().context("not a core")?;
        for family in prometheus::core::Collector::collect(&core.replicator_metrics().backlog_jobs)
        {
            jobs += family
                .get_metric()
                .iter()
                .map(|m| m.get_gauge().get_value())
                .sum::<f64>();
        }
    }
    Ok(jobs)
}

/// Writes `mib` MiB of pseudo-random bytes (from `seed`) to `path`, a
/// MiB at a time.
fn write_random_file(path: &Path, mib: usize, seed: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let mut rng = Rng::new(seed);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for word in chunk.chunks_mut(8) {
            word.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        file.write_all(&chunk)?;
    }
    file.flush()?;
    Ok(())
}

/// The md5 of `path`, by `md5sum`.
fn md5(path: &Path) -> anyhow::Result<String> {
    let out = run("md5sum", &[&path.display().to_string()])?;
    out.split_whitespace()
        .next()
        .map(str::to_string)
        .context("md5sum printed nothing")
}

/// nfs-cp of a random `mib` MiB file into site a, then (once geo
/// replication has drained: no job left on any core, three polls in a
/// row) out of site b; the checksums must be equal.
async fn cross_site_copy(cluster: &TestCluster, mib: usize) -> anyhow::Result<CrossCopy> {
    let a = cluster.ready_access("a-access-1", READY_WAIT).await?;
    let b = cluster.ready_access("b-access-1", READY_WAIT).await?;
    let local = tempfile::tempdir_in("/var/tmp")?;
    let source = local.path().join("cross.bin");
    write_random_file(&source, mib, 0x6372_6f73_735f_7369)?;
    let want = md5(&source)?;
    let bytes = mib << 20;
    let url = |addr: SocketAddr| {
        format!(
            "nfs://{}/geonfs/cross.bin?nfsport={p}&mountport={p}",
            addr.ip(),
            p = addr.port()
        )
    };
    let source_text = source.display().to_string();
    let in_mbs = tokio::task::block_in_place(|| copy(&source_text, &url(a), bytes))?;
    let drain = Instant::now();
    let deadline = drain + Duration::from_secs(600);
    let mut quiet = 0;
    while quiet < 3 {
        if Instant::now() > deadline {
            bail!("replication did not drain in 600 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        quiet = if replication_backlog(cluster)? == 0.0 {
            quiet + 1
        } else {
            0
        };
    }
    let drain_seconds = drain.elapsed().as_secs_f64();
    let back = local.path().join("back.bin");
    let back_text = back.display().to_string();
    let out_mbs = tokio::task::block_in_place(|| copy(&url(b), &back_text, bytes))?;
    let got = md5(&back)?;
    if got != want {
        bail!("nfs-cp out of site b returned md5 {got}, the file copied into site a has {want}");
    }
    eprintln!("cross-site copy: {mib} MiB in at a {in_mbs:.1} MB/s, drained in {drain_seconds:.1} s, out at b {out_mbs:.1} MB/s, md5 {got} both");
    Ok(CrossCopy {
        mib,
        in_mbs,
        drain_seconds,
        out_mbs,
        md5: got,
    })
}

fn report(args: &Args, rounds: &[[Sample; 3]], cross: Option<&CrossCopy>) -> anyhow::Result<()> {
    let mut table = comparison_table();
    let mut summary = Vec::new();
    for (m, metric) in METRICS.iter().enumerate() {
        let med = |which: usize| {
            let all: Vec<f64> = rounds.iter().map(|r| values(&r[which])[m]).collect();
            median(&all)
        };
        summary.push(comparison_row(
            &mut table,
            metric,
            [med(0), med(1), med(2)],
            1,
        ));
    }
    println!(
        "geonfs (site a of 3 sites x 3 cores, n = 3) vs nfs3_server (MemFs) vs NFS-Ganesha (VFS), {} rounds rotating, medians; qemu-img bench -t none -d 16 -s 4k -c {}; nfs-cp {} MiB",
        args.rounds, args.count, args.copy_mib
    );
    print!("{}", table.render());
    let mut json = json!({
        "benchmark": "nfs_compare",
        "rounds": args.rounds,
        "count": args.count,
        "copy_mib": args.copy_mib,
        "summary": summary,
    });
    if let Some(c) = cross {
        println!(
            "cross-site nfs-cp {} MiB: into site a {:.1} MB/s, replication drained {:.1} s later, out of site b {:.1} MB/s, md5 equal ({})",
            c.mib, c.in_mbs, c.drain_seconds, c.out_mbs, c.md5
        );
        json["cross_site_copy"] = json!({
            "mib": c.mib,
            "in_mbs": json_num(c.in_mbs),
            "drain_seconds": json_num(c.drain_seconds),
            "out_mbs": json_num(c.out_mbs),
            "md5": c.md5,
        });
    }
    write_json(&args.json, &json)?;
    println!("JSON: {}", args.json.display());
    Ok(())
}
