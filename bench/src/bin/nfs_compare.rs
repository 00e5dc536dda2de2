//! geonfs against NFS-Ganesha, with the same real clients, in one run:
//! `qemu-img bench` 4 KiB writes and reads at queue depth 16 through
//! QEMU's NFS driver, and `nfs-cp` of a random file in and out. The rounds
//! alternate A B / B A; the table gives medians and the ratio geonfs /
//! Ganesha.
//!
//! A is site a's access server of an in-process 3 sites × 3 cores cluster
//! (n = 3, replication on; a per-address portmapper from
//! `shared/tools/portmap` answers for it on 127.1.0.1:111, since QEMU
//! always asks one); B is `shared/tools/ganesha-baseline` exporting a
//! directory of this disk on 127.9.0.1. Needs root, qemu-img with the nfs
//! driver (`shared/tools/qemu-nfs/setup.sh`) and nfs-cp (libnfs-utils).
//!
//! ```text
//! cargo build --release -p geonfs-bench --bins
//! /var/tmp/geonfs-target/release/nfs_compare --rounds 3 --count 4000
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use geonfs_bench::cluster::TestCluster;
use geonfs_bench::report::{
    init_tracing, json_num, json_object, json_string, median, ratio, write_json, Rng, Table,
};

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
    /// The shared test tools.
    #[arg(long, default_value = "../shared/tools")]
    tools: PathBuf,
    /// Where to write the JSON result.
    #[arg(long, default_value = "bench/results/nfs_compare.json")]
    json: PathBuf,
}

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

/// Runs `program args`, returning stdout+stderr, failing with them.
fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{program} {}: {text}", args.join(" "));
    }
    Ok(text)
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

/// A `KEY=VALUE` assignment of ganesha-baseline/start.sh's `GANESHA_*` line.
fn assignment(line: &str, key: &str) -> anyhow::Result<String> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .with_context(|| format!("no {key} in {line:?}"))
}

fn script(tools: &Path, path: &str) -> String {
    tools.join(path).display().to_string()
}

async fn compare(
    args: &Args,
    geonfs: &Server,
    ganesha: &Server,
) -> anyhow::Result<Vec<[Sample; 2]>> {
    let local = tempfile::tempdir()?;
    let mut rng = Rng::new(0x6e66_735f_636f_6d70);
    let data: Vec<u8> = (0..args.copy_mib << 20)
        .map(|_| rng.next_u64() as u8)
        .collect();
    std::fs::write(local.path().join("source.bin"), &data)?;
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut samples = [Sample::default(); 2];
        for which in order {
            let server = if which == 0 { geonfs } else { ganesha };
            let sample =
                tokio::task::block_in_place(|| measure(server, round, args, local.path()))?;
            eprintln!("round {} {:<8} {:?}", round + 1, server.name, sample);
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
    let access = cluster
        .node("a-access-1")?
        .access()
        .context("a-access-1 has no access server")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !access.is_ready() {
        if Instant::now() > deadline {
            bail!("the access server did not connect to meta-kvs in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let addr = access.nfs_addr();
    let port = addr.port();
    run(
        &script(&tools, "portmap/start.sh"),
        &[&format!("{}={port}", addr.ip())],
    )?;
    let export = tempfile::Builder::new()
        .prefix("gexport-")
        .tempdir_in("/var/tmp")?;
    let started = run(
        &script(&tools, "ganesha-baseline/start.sh"),
        &[&export.path().display().to_string(), "127.9.0.1"],
    );
    let outcome = async {
        let started = started?;
        let last = started
            .lines()
            .find(|line| line.contains("GANESHA_URL="))
            .context("ganesha-baseline/start.sh printed no GANESHA_* line")?;
        let ganesha = Server {
            name: "ganesha",
            url: assignment(last, "GANESHA_URL")?,
            ports: format!(
                "?nfsport={}&mountport={}",
                assignment(last, "GANESHA_NFS_PORT")?,
                assignment(last, "GANESHA_MOUNT_PORT")?
            ),
        };
        let geonfs = Server {
            name: "geonfs",
            url: format!("nfs://{}/geonfs", addr.ip()),
            ports: format!("?nfsport={port}&mountport={port}"),
        };
        compare(&args, &geonfs, &ganesha).await
    }
    .await;
    let _ = run(&script(&tools, "ganesha-baseline/stop.sh"), &[]);
    let _ = run(
        &script(&tools, "portmap/stop.sh"),
        &[&addr.ip().to_string()],
    );
    cluster.shutdown().await?;
    let rounds = outcome?;
    report(&args, &rounds)
}

fn report(args: &Args, rounds: &[[Sample; 2]]) -> anyhow::Result<()> {
    let mut table = Table::new(&["metric", "geonfs", "ganesha", "ratio"], 1);
    let mut summary = Vec::new();
    for (m, metric) in METRICS.iter().enumerate() {
        let med = |which: usize| {
            let all: Vec<f64> = rounds.iter().map(|r| values(&r[which])[m]).collect();
            median(&all)
        };
        let (a, b) = (med(0), med(1));
        table.row(vec![
            metric.to_string(),
            format!("{a:.1}"),
            format!("{b:.1}"),
            format!("{:.3}x", ratio(a, b)),
        ]);
        summary.push(json_object(&[
            ("metric", json_string(metric)),
            ("geonfs", json_num(a)),
            ("ganesha", json_num(b)),
            ("ratio", json_num(ratio(a, b))),
        ]));
    }
    println!(
        "geonfs (site a of 3 sites x 3 cores, n = 3) vs NFS-Ganesha (VFS), {} rounds alternating, medians; qemu-img bench -t none -d 16 -s 4k -c {}; nfs-cp {} MiB",
        args.rounds, args.count, args.copy_mib
    );
    print!("{}", table.render());
    let json = json_object(&[
        ("benchmark", json_string("nfs_compare")),
        ("rounds", json_num(args.rounds as f64)),
        ("count", json_num(f64::from(args.count))),
        ("copy_mib", json_num(args.copy_mib as f64)),
        ("summary", format!("[{}]", summary.join(","))),
    ]);
    write_json(&args.json, &json)?;
    println!("JSON: {}", args.json.display());
    Ok(())
}
