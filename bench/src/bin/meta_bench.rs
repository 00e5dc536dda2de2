//! meta-kvs benchmark: put, linearizable get and conditional txn throughput
//! and latency, with C concurrent clients, in two placements measured in the
//! same run and alternated A B A B:
//!
//! - `one-site`: 3 voters in one site, clients in that site;
//! - `three-sites-50ms`: 3 voters in 3 sites (one each), 50 ms emulated RTT
//!   between every site pair, clients in site `a`.
//!
//! Every round starts a fresh in-process cluster per placement, runs each
//! operation for a warm-up then a measured window, and shuts the cluster down.
//! The report gives, per placement and operation, the median across rounds of
//! ops/s, p50 and p99, and the ratio three-sites / one-site; it is printed as
//! a table and written as JSON (`--json`).
//!
//! ```text
//! cargo run --release -p geonfs-bench --bin meta_bench -- --seconds 3 --rounds 2
//! ```

// Test harness and benchmarks: a failed `unwrap` ends the run with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use geonfs_bench::report::{json_num as num, median, percentile_ms, ratio, write_json, Table};
use geonfs_meta_kvs::MetaClient;
use geonfs_proto::meta::{condition, operation, Condition, KeyValue, Operation, TxnRequest};
use geonfs_rpc::WanParams;
use geonfs_testkit::cluster::TestCluster;
use geonfs_testkit::rng::Rng;
use serde_json::{json, Value};

/// Command-line options.
#[derive(Parser, Debug, Clone)]
#[command(about = "meta-kvs throughput and latency, one site vs three sites")]
struct Args {
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Measured seconds per operation and placement.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Warm-up seconds before each measured window (not recorded).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Rounds; each round runs every placement once (A B A B …).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Size of the key space keys are drawn from uniformly.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Emulated RTT between sites of the three-site placement, in ms.
    #[arg(long, default_value_t = 50)]
    rtt_ms: u64,
    /// Where to write the JSON result.
    #[arg(long, default_value = "bench/results/meta_bench.json")]
    json: PathBuf,
}

/// Where the voters and the clients are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    OneSite,
    ThreeSites,
}

impl Placement {
    const ALL: [Placement; 2] = [Placement::OneSite, Placement::ThreeSites];

    fn name(self, rtt_ms: u64) -> String {
        match self {
            Placement::OneSite => "one-site".to_string(),
            Placement::ThreeSites => format!("three-sites-{rtt_ms}ms"),
        }
    }

    async fn start(self, rtt_ms: u64) -> anyhow::Result<TestCluster> {
        let builder = TestCluster::builder().cores_per_site(2).access_per_site(0);
        let builder = match self {
            Placement::OneSite => builder.sites(1).meta_per_site(3),
            Placement::ThreeSites => builder.sites(3).meta_per_site(1).wan(WanParams {
                rtt: Duration::from_millis(rtt_ms),
                bandwidth_bytes_per_sec: None,
            }),
        };
        builder.start().await
    }
}

/// The operation a scenario measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Put,
    Get,
    Txn,
}

impl Op {
    const ALL: [Op; 3] = [Op::Put, Op::Get, Op::Txn];

    fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::Txn => "txn",
        }
    }
}

/// Last known version of each key written in this cluster (txn conditions).
type Versions = Arc<Mutex<HashMap<u64, u64>>>;

fn key_bytes(key: u64) -> Bytes {
    Bytes::from(format!("bench/{key:08}"))
}

fn remember(versions: &Versions, key: u64, version: u64) {
    let mut map = versions.lock().unwrap_or_else(|p| p.into_inner());
    let entry = map.entry(key).or_insert(version);
    *entry = (*entry).max(version);
}

fn known(versions: &Versions, key: u64) -> Option<u64> {
    versions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .copied()
}

/// A put of `value` at `key` if the key is at `version` (absent if `None`).
fn cas(key: u64, version: Option<u64>, value: Bytes) -> TxnRequest {
    let test = match version {
        Some(v) => condition::Test::VersionEquals(v),
        None => condition::Test::Absent(true),
    };
    TxnRequest {
        conditions: vec![Condition {
            key: key_bytes(key),
            test: Some(test),
        }],
        operations: vec![Operation {
            op: Some(operation::Op::Put(KeyValue {
                key: key_bytes(key),
                value,
                version: 0,
            })),
        }],
    }
}

/// What one client saw in its measured window.
#[derive(Default)]
struct WorkerTally {
    /// Latencies (µs) of successful calls started in the measured window.
    latencies_us: Vec<u64>,
    /// Successful calls completed inside the measured window.
    completed: u64,
    /// Failed calls (errors) started in the measured window.
    errors: u64,
    /// Transactions whose condition did not hold.
    condition_failed: u64,
}

/// Timing of one scenario.
#[derive(Clone, Copy)]
struct Window {
    measure_from: Instant,
    end: Instant,
}

async fn worker(
    client: MetaClient,
    op: Op,
    window: Window,
    seed: u64,
    keys: u64,
    value: Bytes,
    versions: Versions,
) -> WorkerTally {
    let mut rng = Rng::new(seed);
    let mut tally = WorkerTally::default();
    loop {
        let start = Instant::now();
        if start >= window.end {
            break;
        }
        let key = rng.below(keys);
        let (ok, refresh) = match op {
            Op::Put => match client.put(key_bytes(key), value.clone()).await {
                Ok(version) => {
                    remember(&versions, key, version);
                    (true, false)
                }
                Err(err) => {
                    tracing::debug!("put failed: {err}");
                    (false, false)
                }
            },
            Op::Get => match client.get(key_bytes(key)).await {
                Ok(_) => (true, false),
                Err(err) => {
                    tracing::debug!("get failed: {err}");
                    (false, false)
                }
            },
            Op::Txn => {
                let request = cas(key, known(&versions, key), value.clone());
                match client.txn(request).await {
                    Ok(reply) if reply.succeeded => {
                        remember(&versions, key, reply.version);
                        (true, false)
                    }
                    // Another client won the race on this key: the call
                    // completed; refresh the version below, untimed.
                    Ok(_) => (true, true),
                    Err(err) => {
                        tracing::debug!("txn failed: {err}");
                        (false, false)
                    }
                }
            }
        };
        let done = Instant::now();
        if refresh {
            if start >= window.measure_from {
                tally.condition_failed += 1;
            }
            if let Ok(Some(kv)) = client.get(key_bytes(key)).await {
                remember(&versions, key, kv.version);
            }
        }
        if start < window.measure_from {
            continue;
        }
        if ok {
            let elapsed = done.saturating_duration_since(start);
            tally
                .latencies_us
                .push(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
            if done <= window.end {
                tally.completed += 1;
            }
        } else {
            tally.errors += 1;
        }
    }
    tally
}

/// One placement × operation × round.
#[derive(Clone, Debug)]
struct Sample {
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    ops: u64,
    errors: u64,
    condition_failed: u64,
}

async fn run_scenario(
    cluster: &TestCluster,
    from: &str,
    op: Op,
    args: &Args,
    round: usize,
    versions: &Versions,
) -> anyhow::Result<Sample> {
    let now = Instant::now();
    let window = Window {
        measure_from: now + Duration::from_secs_f64(args.warmup),
        end: now + Duration::from_secs_f64(args.warmup + args.seconds),
    };
    let mut value = vec![0u8; args.value_bytes];
    let mut rng = Rng::new(round as u64 + 7);
    for byte in &mut value {
        *byte = b'a' + (rng.below(26) as u8);
    }
    let value = Bytes::from(value);
    let mut tasks = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let client = cluster
            .meta_client(from)?
            .with_deadline(Duration::from_secs(5));
        let seed = (round as u64) << 32 | (i as u64) << 8 | op as u64;
        tasks.push(tokio::spawn(worker(
            client,
            op,
            window,
            seed,
            args.keys,
            value.clone(),
            versions.clone(),
        )));
    }
    let mut latencies = Vec::new();
    let (mut ops, mut errors, mut condition_failed) = (0, 0, 0);
    for task in tasks {
        let tally = task.await.context("a benchmark client panicked")?;
        latencies.extend(tally.latencies_us);
        ops += tally.completed;
        errors += tally.errors;
        condition_failed += tally.condition_failed;
    }
    latencies.sort_unstable();
    Ok(Sample {
        ops_per_sec: ops as f64 / args.seconds,
        p50_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
        ops,
        errors,
        condition_failed,
    })
}

/// What one placement measured in one round.
struct RoundResult {
    placement: Placement,
    round: usize,
    leader: String,
    samples: Vec<(Op, Sample)>,
}

async fn wait_for_leader(cluster: &TestCluster) -> anyhow::Result<String> {
    let start = Instant::now();
    loop {
        if let Some(name) = cluster.meta_leader().await {
            return Ok(name);
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("no meta leader within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run_round(placement: Placement, round: usize, args: &Args) -> anyhow::Result<RoundResult> {
    let cluster = placement
        .start(args.rtt_ms)
        .await
        .with_context(|| format!("starting {}", placement.name(args.rtt_ms)))?;
    let outcome = async {
        let leader = wait_for_leader(&cluster).await?;
        let versions: Versions = Arc::default();
        let mut samples = Vec::new();
        for op in Op::ALL {
            let sample = run_scenario(&cluster, "a-core-1", op, args, round, &versions).await?;
            eprintln!(
                "round {} {:<18} {:<4} leader {:<9} {:>9.1} ops/s  p50 {:>8.2} ms  p99 {:>8.2} ms  errors {}",
                round + 1,
                placement.name(args.rtt_ms),
                op.name(),
                leader,
                sample.ops_per_sec,
                sample.p50_ms,
                sample.p99_ms,
                sample.errors
            );
            samples.push((op, sample));
        }
        anyhow::Ok(RoundResult {
            placement,
            round,
            leader,
            samples,
        })
    }
    .await;
    let shutdown = cluster.shutdown().await;
    let result = outcome?;
    shutdown.context("shutting the cluster down")?;
    Ok(result)
}

/// Medians across rounds of one placement and operation.
#[derive(Clone, Copy)]
struct Summary {
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn summarize(results: &[RoundResult], placement: Placement, op: Op) -> Summary {
    let samples: Vec<&Sample> = results
        .iter()
        .filter(|r| r.placement == placement)
        .flat_map(|r| r.samples.iter())
        .filter(|(o, _)| *o == op)
        .map(|(_, s)| s)
        .collect();
    let pick = |f: fn(&Sample) -> f64| median(&samples.iter().map(|s| f(s)).collect::<Vec<_>>());
    Summary {
        ops_per_sec: pick(|s| s.ops_per_sec),
        p50_ms: pick(|s| s.p50_ms),
        p99_ms: pick(|s| s.p99_ms),
    }
}

fn to_json(args: &Args, results: &[RoundResult]) -> Value {
    let sample = |s: &Summary| {
        json!({
            "ops_per_sec": num(s.ops_per_sec),
            "p50_ms": num(s.p50_ms),
            "p99_ms": num(s.p99_ms),
        })
    };
    let rounds: Vec<Value> = results
        .iter()
        .map(|r| {
            let ops: Vec<Value> = r
                .samples
                .iter()
                .map(|(op, s)| {
                    json!({
                        "op": op.name(),
                        "ops_per_sec": num(s.ops_per_sec),
                        "p50_ms": num(s.p50_ms),
                        "p99_ms": num(s.p99_ms),
                        "ops": s.ops,
                        "errors": s.errors,
                        "condition_failed": s.condition_failed,
                    })
                })
                .collect();
            json!({
                "round": r.round + 1,
                "placement": r.placement.name(args.rtt_ms),
                "leader": r.leader,
                "results": ops,
            })
        })
        .collect();
    let summary: Vec<Value> = Op::ALL
        .into_iter()
        .map(|op| {
            let one = summarize(results, Placement::OneSite, op);
            let three = summarize(results, Placement::ThreeSites, op);
            let mut row = serde_json::Map::new();
            row.insert("op".into(), op.name().into());
            row.insert(Placement::OneSite.name(args.rtt_ms), sample(&one));
            row.insert(Placement::ThreeSites.name(args.rtt_ms), sample(&three));
            row.insert(
                "ratio_three_over_one".into(),
                json!({
                    "ops_per_sec": num(ratio(three.ops_per_sec, one.ops_per_sec)),
                    "p50_ms": num(ratio(three.p50_ms, one.p50_ms)),
                    "p99_ms": num(ratio(three.p99_ms, one.p99_ms)),
                }),
            );
            row.into()
        })
        .collect();
    json!({
        "benchmark": "meta_bench",
        "config": {
            "clients": args.clients,
            "seconds": num(args.seconds),
            "warmup_seconds": num(args.warmup),
            "rounds": args.rounds,
            "keys": args.keys,
            "value_bytes": args.value_bytes,
            "rtt_ms": args.rtt_ms,
        },
        "statistic": "median across rounds; latency percentiles nearest-rank over successful calls",
        "summary": summary,
        "rounds": rounds,
    })
}

fn table(args: &Args, results: &[RoundResult]) -> String {
    let mut out = format!(
        "meta-kvs: {} clients, {} s measured (+{} s warm-up) per scenario, {} rounds A B A B, {} keys, {} B values; medians across rounds\n",
        args.clients, args.seconds, args.warmup, args.rounds, args.keys, args.value_bytes
    );
    let mut t = Table::new(&["op", "placement", "ops/s", "p50 ms", "p99 ms"], 2);
    for op in Op::ALL {
        let one = summarize(results, Placement::OneSite, op);
        let three = summarize(results, Placement::ThreeSites, op);
        for (placement, s) in [(Placement::OneSite, one), (Placement::ThreeSites, three)] {
            t.row(vec![
                op.name().to_string(),
                placement.name(args.rtt_ms),
                format!("{:.1}", s.ops_per_sec),
                format!("{:.2}", s.p50_ms),
                format!("{:.2}", s.p99_ms),
            ]);
        }
        t.row(vec![
            op.name().to_string(),
            "ratio three/one".to_string(),
            format!("{:.3}x", ratio(three.ops_per_sec, one.ops_per_sec)),
            format!("{:.2}x", ratio(three.p50_ms, one.p50_ms)),
            format!("{:.2}x", ratio(three.p99_ms, one.p99_ms)),
        ]);
    }
    out += &t.render();
    out += "leaders:";
    for r in results {
        out += &format!(
            " r{} {}={}",
            r.round + 1,
            r.placement.name(args.rtt_ms),
            r.leader
        );
    }
    out.push('\n');
    let errors: u64 = results
        .iter()
        .flat_map(|r| r.samples.iter())
        .map(|(_, s)| s.errors)
        .sum();
    let conflicts: u64 = results
        .iter()
        .flat_map(|r| r.samples.iter())
        .map(|(_, s)| s.condition_failed)
        .sum();
    out += &format!("errors: {errors}, txn conditions that failed: {conflicts}\n");
    out
}

fn check(args: &Args) -> anyhow::Result<()> {
    if args.clients == 0 || args.rounds == 0 || args.keys == 0 {
        bail!("--clients, --rounds and --keys must be at least 1");
    }
    geonfs_bench::report::check_window(args.seconds, args.warmup)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    check(&args)?;
    geonfs_bench::report::init_tracing();
    let mut results = Vec::new();
    for round in 0..args.rounds {
        for placement in Placement::ALL {
            results.push(run_round(placement, round, &args).await?);
        }
    }
    print!("{}", table(&args, &results));
    write_json(&args.json, &to_json(&args, &results))?;
    println!("JSON: {}", args.json.display());
    Ok(())
}
