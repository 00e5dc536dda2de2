//! The ONC RPC layer by itself: geonfs's own record marking and dispatch
//! against `nfs3_server`'s (the crate DESIGN.md starts from, serving its
//! in-memory file system) and NFS-Ganesha's, with one pipelining client.
//!
//! Each server gets the same calls over `--connections` TCP connections
//! with `--depth` calls in flight on each: NFS NULL (the RPC layer alone:
//! record marking, call header and AUTH_UNIX credentials, dispatch, reply)
//! and GETATTR of the export's root (plus handle decoding and attribute
//! encoding; geonfs answers it from its inode cache, `MemFs` from memory,
//! Ganesha from its metadata cache). Rounds alternate the order of the
//! servers; the table gives medians and ratios.
//!
//! ```text
//! cargo build --release -p geonfs-bench --bins
//! /var/tmp/geonfs-target/release/rpc_compare --rounds 3 --seconds 3
//! ```

// Test harness and benchmarks: a failed `unwrap` ends the run with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clap::Parser;
use geonfs_bench::peers::{comparison_row, comparison_table, start_memfs, Ganesha, COMPARED};
use geonfs_bench::report::{check_window, init_tracing, json_num, median, write_json};
use geonfs_testkit::cluster::TestCluster;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Parser, Debug)]
#[command(about = "geonfs's ONC RPC layer vs nfs3_server's and NFS-Ganesha's")]
struct Args {
    /// Rounds (each measures every server, in a rotating order).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// TCP connections per measurement.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Calls in flight per connection.
    #[arg(long, default_value_t = 16)]
    depth: usize,
    /// The shared test tools.
    #[arg(long, default_value = "../shared/tools")]
    tools: PathBuf,
    /// Where to write the JSON result.
    #[arg(long, default_value = "bench/results/rpc_compare.json")]
    json: PathBuf,
}

const NFS_PROGRAM: u32 = 100_003;
const MOUNT_PROGRAM: u32 = 100_005;
const NULL: u32 = 0;
const GETATTR: u32 = 1;
const MNT: u32 = 1;

/// One server under test.
struct Server {
    name: &'static str,
    nfs: SocketAddr,
    mount: SocketAddr,
    export: String,
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_opaque(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
    out.resize(out.len() + (4 - bytes.len() % 4) % 4, 0);
}

/// A whole record: marker, then an RPC call of `procedure` with AUTH_UNIX
/// credentials (uid 0) and `args`.
fn call(xid: u32, program: u32, procedure: u32, args: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(64 + args.len());
    for word in [xid, 0, 2, program, 3, procedure] {
        put_u32(&mut body, word);
    }
    let mut cred = Vec::new();
    put_u32(&mut cred, 0); // stamp
    put_opaque(&mut cred, b"rpc-compare");
    for word in [0, 0, 0] {
        put_u32(&mut cred, word); // uid, gid, no more groups
    }
    put_u32(&mut body, 1); // AUTH_UNIX
    put_opaque(&mut body, &cred);
    put_u32(&mut body, 0); // verifier: AUTH_NONE
    put_u32(&mut body, 0);
    body.extend_from_slice(args);
    let mut record = Vec::with_capacity(4 + body.len());
    put_u32(&mut record, 0x8000_0000 | body.len() as u32);
    record.extend_from_slice(&body);
    record
}

/// Reads one record (all its fragments).
async fn read_record<R: AsyncReadExt + Unpin>(reader: &mut R) -> anyhow::Result<Vec<u8>> {
    let mut record = Vec::new();
    loop {
        let marker = reader.read_u32().await?;
        let len = (marker & 0x7fff_ffff) as usize;
        ensure!(len <= 1 << 24, "fragment of {len} bytes");
        let start = record.len();
        record.resize(start + len, 0);
        reader.read_exact(&mut record[start..]).await?;
        if marker & 0x8000_0000 != 0 {
            return Ok(record);
        }
    }
}

fn word(bytes: &[u8], at: usize) -> anyhow::Result<u32> {
    let slice = bytes.get(at..at + 4).context("reply too short")?;
    Ok(u32::from_be_bytes([slice[0], slice[1], slice[2], slice[3]]))
}

/// The results of an accepted, successful reply.
fn results(reply: &[u8]) -> anyhow::Result<&[u8]> {
    ensure!(word(reply, 4)? == 1, "not a reply");
    ensure!(word(reply, 8)? == 0, "call denied");
    let verf_len = word(reply, 16)? as usize;
    let at = 20 + verf_len.div_ceil(4) * 4;
    ensure!(word(reply, at)? == 0, "accept_stat {}", word(reply, at)?);
    reply.get(at + 4..).context("reply too short")
}

/// The export's root handle, by MOUNT MNT.
async fn root_handle(server: &Server) -> anyhow::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server.mount).await?;
    let mut args = Vec::new();
    put_opaque(&mut args, server.export.as_bytes());
    stream
        .write_all(&call(1, MOUNT_PROGRAM, MNT, &args))
        .await?;
    let reply = read_record(&mut stream).await?;
    let res = results(&reply)?;
    ensure!(
        word(res, 0)? == 0,
        "{}: MNT status {}",
        server.name,
        word(res, 0)?
    );
    let len = word(res, 4)? as usize;
    Ok(res.get(8..8 + len).context("short handle")?.to_vec())
}

/// Calls answered in `seconds` on one connection with `depth` in flight.
async fn hammer(
    addr: SocketAddr,
    procedure: u32,
    args: Vec<u8>,
    depth: usize,
    seconds: f64,
) -> anyhow::Result<u64> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::with_capacity(1 << 16, read);
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut xid = 1u32;
    for _ in 0..depth {
        write
            .write_all(&call(xid, NFS_PROGRAM, procedure, &args))
            .await?;
        xid += 1;
    }
    let (mut outstanding, mut answered) = (depth, 0u64);
    while outstanding > 0 {
        let reply = read_record(&mut read).await?;
        let res = results(&reply)?;
        if procedure == GETATTR {
            ensure!(word(res, 0)? == 0, "GETATTR status {}", word(res, 0)?);
        }
        answered += 1;
        if Instant::now() < until {
            write
                .write_all(&call(xid, NFS_PROGRAM, procedure, &args))
                .await?;
            xid = xid.wrapping_add(1);
        } else {
            outstanding -= 1;
        }
    }
    Ok(answered)
}

/// Calls per second of `procedure` on `server` over every connection.
async fn rate(server: &Server, procedure: u32, args: &[u8], a: &Args) -> anyhow::Result<f64> {
    let started = Instant::now();
    let runs: Vec<_> = (0..a.connections)
        .map(|_| {
            tokio::spawn(hammer(
                server.nfs,
                procedure,
                args.to_vec(),
                a.depth,
                a.seconds,
            ))
        })
        .collect();
    let mut total = 0;
    for run in runs {
        total += run.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

const METRICS: [&str; 2] = ["NULL calls/s", "GETATTR calls/s"];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let args = Args::parse();
    check_window(args.seconds, 0.0)?;
    let tools = args
        .tools
        .canonicalize()
        .context("--tools: shared/tools not found")?;
    let cluster = TestCluster::builder().sites(1).start().await?;
    let geonfs = cluster
        .ready_access("a-access-1", Duration::from_secs(60))
        .await?;
    let memfs_ip = "127.9.1.1";
    let memfs_port = start_memfs(memfs_ip).await?;
    let ganesha = Ganesha::start(&tools, "127.9.0.1")?;
    let at =
        |ip: &str, port: u16| -> anyhow::Result<SocketAddr> { Ok(format!("{ip}:{port}").parse()?) };
    let servers = [
        Server {
            name: COMPARED[0],
            nfs: geonfs,
            mount: geonfs,
            export: "/geonfs".into(),
        },
        Server {
            name: COMPARED[1],
            nfs: at(memfs_ip, memfs_port)?,
            mount: at(memfs_ip, memfs_port)?,
            export: "/memfs".into(),
        },
        Server {
            name: COMPARED[2],
            nfs: at("127.9.0.1", ganesha.nfs_port)?,
            mount: at("127.9.0.1", ganesha.mount_port)?,
            export: ganesha.export.display().to_string(),
        },
    ];
    let outcome = measure(&args, &servers).await;
    ganesha.stop();
    cluster.shutdown().await?;
    report(&args, &outcome?)
}

/// `samples[round][server][metric]`.
async fn measure(args: &Args, servers: &[Server; 3]) -> anyhow::Result<Vec<[[f64; 2]; 3]>> {
    let mut handles = Vec::new();
    for server in servers {
        handles.push(root_handle(server).await?);
    }
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        let mut samples = [[0.0; 2]; 3];
        for k in 0..3 {
            let which = (round + k) % 3;
            let server = &servers[which];
            let mut getattr = Vec::new();
            put_opaque(&mut getattr, &handles[which]);
            let null = rate(server, NULL, &[], args).await?;
            let attr = rate(server, GETATTR, &getattr, args).await?;
            eprintln!(
                "round {} {:<11} NULL {null:.0}/s GETATTR {attr:.0}/s",
                round + 1,
                server.name
            );
            samples[which] = [null, attr];
        }
        rounds.push(samples);
    }
    Ok(rounds)
}

fn report(args: &Args, rounds: &[[[f64; 2]; 3]]) -> anyhow::Result<()> {
    let mut table = comparison_table();
    let mut summary = Vec::new();
    for (m, metric) in METRICS.iter().enumerate() {
        let med = |s: usize| median(&rounds.iter().map(|r| r[s][m]).collect::<Vec<_>>());
        summary.push(comparison_row(
            &mut table,
            metric,
            [med(0), med(1), med(2)],
            0,
        ));
    }
    println!(
        "ONC RPC layer: {} connections x {} in flight, {} s per run, {} rounds rotating, medians",
        args.connections, args.depth, args.seconds, args.rounds
    );
    print!("{}", table.render());
    let json = json!({
        "benchmark": "rpc_compare",
        "rounds": args.rounds,
        "seconds": json_num(args.seconds),
        "connections": args.connections,
        "depth": args.depth,
        "summary": summary,
    });
    write_json(&args.json, &json)?;
    println!("JSON: {}", args.json.display());
    Ok(())
}
