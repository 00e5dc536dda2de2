//! The data-path thrasher, longer than the suite's 50 seeds: runs seeds
//! one after another (a fresh in-process cluster each), prints one line
//! per seed, and stops at the first seed whose checks fail (its error says
//! what differed where; run that seed again with `--first SEED --seeds 1`).
//! See `geonfs_testkit::thrash` for what a run does and checks.
//!
//! ```text
//! cargo build --release -p geonfs-bench --bins
//! /var/tmp/geonfs-target/release/thrash --first 1000 --seeds 20 --rounds 6 --ops 30
//! ```

// Test harness and benchmarks: a failed `unwrap` ends the run with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use geonfs_bench::report::{init_tracing, json_num, write_json};
use geonfs_testkit::thrash::{run, ThrashOptions};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "geonfs data-path thrasher: random I/O at random sites under random faults")]
struct Args {
    /// The first seed.
    #[arg(long, default_value_t = 1000)]
    first: u64,
    /// How many seeds (first, first + 1, …).
    #[arg(long, default_value_t = 10)]
    seeds: u64,
    /// Files (one client each).
    #[arg(long, default_value_t = 3)]
    files: usize,
    /// Rounds per seed (each ends with every file checked at every site).
    #[arg(long, default_value_t = 6)]
    rounds: usize,
    /// Operations per client per round.
    #[arg(long, default_value_t = 30)]
    ops: usize,
    /// Where to write the JSON result.
    #[arg(long, default_value = "bench/results/thrash.json")]
    json: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let args = Args::parse();
    anyhow::ensure!(
        args.seeds > 0 && args.files > 0 && args.rounds > 0,
        "nothing to run"
    );
    let started = Instant::now();
    let (mut faults, mut written, mut checked, mut read) = (0usize, 0u64, 0u64, 0u64);
    let mut runs = Vec::new();
    for seed in args.first..args.first + args.seeds {
        let options = ThrashOptions {
            files: args.files,
            rounds: args.rounds,
            ops_per_round: args.ops,
            ..ThrashOptions::suite(seed)
        };
        let report = run(&options)
            .await
            .with_context(|| format!("seed {seed} failed (rerun: --first {seed} --seeds 1)"))?;
        println!("{report}");
        faults += report.faults.len();
        written += report.clients.bytes_written;
        read += report.clients.bytes_verified;
        checked += report.bytes_checked;
        runs.push(json!({
            "seed": seed,
            "faults": report.faults.join(", "),
            "bytes_written": report.clients.bytes_written,
            "bytes_checked": report.bytes_checked,
            "seconds": json_num(report.elapsed.as_secs_f64()),
        }));
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "thrash: {} seeds passed, {faults} faults, {written} bytes written, {read} bytes checked by \
         reads and {checked} by whole-file reads at every site, 0 mismatches, {seconds:.0} s",
        args.seeds
    );
    let json = json!({
        "seeds": args.seeds,
        "first": args.first,
        "rounds": args.rounds,
        "ops": args.ops,
        "faults": faults,
        "bytes_written": written,
        "bytes_read_checked": read,
        "bytes_checkpoint_checked": checked,
        "seconds": json_num(seconds),
        "runs": runs,
    });
    write_json(&args.json, &json)
}
