//! The access server's RPC front door under a mutation fuzzer: record
//! marking, call headers and every NFS / MOUNT / PORTMAP argument decoder,
//! over real TCP to an in-process one-site cluster (see
//! `geonfs_testkit::rpc_fuzz`). Fails (exit 1) on any panic, hang, or an
//! export that stops answering a well-formed client; an abort ends the
//! process.
//!
//! ```text
//! cargo build --release -p geonfs-bench --bins
//! /var/tmp/geonfs-target/release/rpc_fuzz --frames 1000000 --json /tmp/fuzz.json
//! ```

// Test harness and benchmarks: a failed `unwrap` ends the run with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use clap::Parser;
use geonfs_bench::report::{init_tracing, write_json};
use geonfs_testkit::rpc_fuzz::{run_on_test_cluster, FuzzOptions};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "geonfs RPC fuzzer: mutated NFS/MOUNT/PORTMAP frames against a live export")]
struct Args {
    /// The seed (a seed replays the same frames).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Frames to send.
    #[arg(long, default_value_t = 1_000_000)]
    frames: u64,
    /// Connections open at once.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    /// Frames per connection.
    #[arg(long, default_value_t = 8)]
    per_connection: usize,
    /// Where to write the results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let args = Args::parse();
    let options = FuzzOptions {
        seed: args.seed,
        frames: args.frames,
        parallel: args.parallel,
        frames_per_connection: args.per_connection,
        ..FuzzOptions::default()
    };
    let report = run_on_test_cluster(&options).await?;
    let seconds = report.elapsed.as_secs_f64();
    println!(
        "rpc_fuzz seed {}: {} frames on {} connections ({} closed by the server), {} replies, {} probes, {} panics, {} hangs, {:.1} s ({:.0} frames/s)",
        args.seed,
        report.frames,
        report.connections,
        report.closed_by_server,
        report.replies,
        report.probes,
        report.panics.len(),
        report.hangs,
        seconds,
        report.frames as f64 / seconds.max(1e-9)
    );
    if let Some(path) = &args.json {
        write_json(
            path,
            &json!({
                "seed": args.seed,
                "frames": report.frames,
                "connections": report.connections,
                "closed_by_server": report.closed_by_server,
                "replies": report.replies,
                "probes": report.probes,
                "panics": report.panics,
                "hangs": report.hangs,
                "seconds": seconds,
            }),
        )?;
    }
    if let Some(failure) = report.failure() {
        anyhow::bail!("rpc_fuzz seed {}: {failure}", args.seed);
    }
    Ok(())
}
