//! A mutation fuzzer of the access server's ONC RPC front door: record
//! marking, call headers (credentials included) and the NFS v3, MOUNT v3
//! and PORTMAP v2 argument decoders of every procedure, sent over real TCP
//! connections to a running access server of a [`TestCluster`].
//!
//! Each frame starts as a well-formed call of a random procedure with
//! plausible arguments (the export's real handles, short names, random
//! offsets and sizes, among them the limits: 2^63, `u32::MAX`), built by
//! [`calls`]; most are then mutated (bits flipped, words replaced with
//! boundary values such as a 4 GiB length, truncated, extended, spliced
//! with another call) and record-marked, sometimes wrongly (split
//! fragments, a length longer than what follows, a length far over the
//! record limit, no last-fragment bit). Frames go out on many short
//! connections, replies are drained, and each connection is closed by the
//! client after its frames.
//!
//! What fails a run: a panic anywhere in the process (a hook counts them),
//! an abort (the process's address space is bounded, so an allocation of
//! a length a peer announced fails instead of succeeding quietly),
//! a connection the server neither answers to the end nor closes within a
//! deadline after the client closed its side (a hang), or an export that
//! stops answering a well-formed client (probed on a fresh connection
//! every few hundred connections, and at the end).

mod calls;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::cluster::TestCluster;
use crate::nfs_client::{nfs_fh3, NfsConn};
use crate::process::bound_address_space;
use crate::rng::Rng;

pub use calls::Handles;

/// How much to send.
#[derive(Clone, Debug)]
pub struct FuzzOptions {
    /// The seed of every random choice (a seed replays the same frames).
    pub seed: u64,
    /// Frames to send in all.
    pub frames: u64,
    /// Connections open at once.
    pub parallel: usize,
    /// Frames per connection (at most; the server closes some earlier).
    pub frames_per_connection: usize,
    /// How long a connection may take to be answered and closed once the
    /// client has sent its frames and closed its side.
    pub connection_deadline: Duration,
    /// When set, the process may map at most this many bytes more than it
    /// does when the run starts ([`bound_address_space`]): a decoder that
    /// allocates a length a peer announced (4 GiB) then aborts the run
    /// instead of going unnoticed on a machine with memory to spare.
    pub address_space_headroom: Option<u64>,
}

impl Default for FuzzOptions {
    fn default() -> Self {
        FuzzOptions {
            seed: 1,
            frames: 10_000,
            parallel: 8,
            frames_per_connection: 8,
            connection_deadline: Duration::from_secs(30),
            address_space_headroom: Some(2 << 30),
        }
    }
}

/// What a run sent and saw.
#[derive(Clone, Debug, Default)]
pub struct FuzzReport {
    /// Frames written whole to a connection.
    pub frames: u64,
    /// Frames not written: the server had closed their connection.
    pub unsent: u64,
    /// Connections opened.
    pub connections: u64,
    /// Connections the server closed before the client had sent all its
    /// frames (it refuses a record it cannot read by closing).
    pub closed_by_server: u64,
    /// Complete reply records received.
    pub replies: u64,
    /// Panics seen in the process during the run, with their messages.
    pub panics: Vec<String>,
    /// Connections neither answered nor closed in time.
    pub hangs: u64,
    /// Liveness probes (a well-formed client on a fresh connection).
    pub probes: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl FuzzReport {
    /// Why the run failed, if it did.
    pub fn failure(&self) -> Option<String> {
        if !self.panics.is_empty() {
            return Some(format!(
                "{} panic(s), the first: {}",
                self.panics.len(),
                self.panics[0]
            ));
        }
        (self.hangs > 0).then(|| format!("{} connection(s) hung", self.hangs))
    }
}

/// Panic messages seen since the hook was installed.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static HOOK: OnceLock<()> = OnceLock::new();

/// Counts every panic of the process (then reports it as before).
fn install_panic_hook() {
    HOOK.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Ok(mut panics) = PANICS.lock() {
                panics.push(info.to_string());
            }
            previous(info);
        }));
    });
}

fn panics_so_far() -> usize {
    PANICS.lock().map_or(0, |p| p.len())
}

/// A one-site cluster (two cores, one meta voter, one access server) and
/// the address of its export, `/geonfs`.
pub async fn one_site_export() -> anyhow::Result<(TestCluster, SocketAddr)> {
    let cluster = TestCluster::builder()
        .sites(1)
        .cores_per_site(2)
        .meta_per_site(1)
        .access_per_site(1)
        .replication_factor(1)
        .start()
        .await?;
    let addr = cluster
        .ready_access("a-access-1", Duration::from_secs(120))
        .await?;
    Ok((cluster, addr))
}

/// The fuzzer run against [`one_site_export`] from `127.1.0.9` onwards
/// (see [`source_address`]).
pub async fn run_on_test_cluster(options: &FuzzOptions) -> anyhow::Result<FuzzReport> {
    let (cluster, addr) = one_site_export().await?;
    let from: IpAddr = "127.1.0.9".parse()?;
    let report = run(addr, from, "/geonfs", options).await;
    cluster.shutdown().await?;
    report
}

/// Fuzzes the export `export` of the access server at `to`, from `from`.
pub async fn run(
    to: SocketAddr,
    from: IpAddr,
    export: &str,
    options: &FuzzOptions,
) -> anyhow::Result<FuzzReport> {
    install_panic_hook();
    let started = Instant::now();
    let panics_before = panics_so_far();
    let handles = calls::prepare(from, to, export).await?;
    if let Some(more) = options.address_space_headroom {
        bound_address_space(more)?;
    }
    let mut rng = Rng::new(options.seed);
    let mut report = FuzzReport::default();
    let mut sent_so_far = 0u64;
    while sent_so_far < options.frames {
        let mut batch = Vec::new();
        for _ in 0..options.parallel {
            let left = options.frames - sent_so_far;
            if left == 0 {
                break;
            }
            let count = (options.frames_per_connection as u64).min(left);
            sent_so_far += count;
            let frames: Vec<Vec<u8>> = (0..count)
                .map(|_| calls::frame(&mut rng, &handles))
                .collect();
            let source = source_address(from, report.connections + batch.len() as u64);
            batch.push((
                count,
                tokio::spawn(one_connection(
                    source,
                    to,
                    frames,
                    options.connection_deadline,
                )),
            ));
        }
        for (planned, task) in batch {
            let outcome = task.await.context("a connection task failed")?;
            report.connections += 1;
            match outcome {
                Outcome::Done {
                    sent,
                    replies,
                    closed_early,
                } => {
                    report.frames += sent;
                    report.unsent += planned - sent;
                    report.replies += replies;
                    report.closed_by_server += u64::from(closed_early);
                }
                Outcome::Hung { sent } => {
                    report.frames += sent;
                    report.unsent += planned - sent;
                    report.hangs += 1;
                }
                Outcome::Unreachable(err) => bail!("cannot connect to {to}: {err:#}"),
            }
        }
        if report.connections % 256 < options.parallel as u64 {
            probe(from, to, &handles.root).await?;
            report.probes += 1;
        }
    }
    probe(from, to, &handles.root).await?;
    report.probes += 1;
    report.panics = PANICS
        .lock()
        .map(|p| p[panics_before.min(p.len())..].to_vec())
        .unwrap_or_default();
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The address connection `n` comes from: `from`'s /16 walked through
/// (127.1.0.9, 127.1.0.10, …) for an IPv4 `from`, so that the closed
/// connections' TIME_WAIT states do not use up one address's ports.
fn source_address(from: IpAddr, n: u64) -> IpAddr {
    match from {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            let base = u64::from(u16::from_be_bytes([c, d]));
            let host = (base + n % 60_000) % 65_534 + 1;
            let [c, d] = u16::try_from(host).unwrap_or(1).to_be_bytes();
            IpAddr::from([a, b, c, d])
        }
        IpAddr::V6(_) => from,
    }
}

/// A well-formed client on a fresh connection must get the root's size.
async fn probe(from: IpAddr, to: SocketAddr, root: &nfs_fh3) -> anyhow::Result<()> {
    let answer = tokio::time::timeout(Duration::from_secs(20), async {
        let mut conn = NfsConn::connect(from, to).await?;
        conn.size(root).await
    })
    .await
    .context("the export stopped answering a well-formed client within 20 s")?;
    answer.context("the export refused a well-formed GETATTR")?;
    Ok(())
}

/// How one connection went.
enum Outcome {
    /// The server answered and closed (or closed early).
    Done {
        sent: u64,
        replies: u64,
        closed_early: bool,
    },
    /// Neither answered to the end nor closed within the deadline.
    Hung { sent: u64 },
    /// No connection.
    Unreachable(anyhow::Error),
}

/// Sends `frames` on one connection, closes its sending side and reads
/// replies until the server closes.
async fn one_connection(
    from: IpAddr,
    to: SocketAddr,
    frames: Vec<Vec<u8>>,
    deadline: Duration,
) -> Outcome {
    let stream = match connect(from, to).await {
        Ok(stream) => stream,
        Err(err) => return Outcome::Unreachable(err),
    };
    let (mut reader, mut writer) = stream.into_split();
    let replies = tokio::spawn(async move { count_replies(&mut reader).await });
    let mut sent = 0u64;
    let mut closed_early = false;
    let sending = async {
        for frame in &frames {
            if writer.write_all(frame).await.is_err() {
                closed_early = true;
                break;
            }
            sent += 1;
        }
        let _ = writer.shutdown().await;
    };
    if tokio::time::timeout(deadline, sending).await.is_err() {
        return Outcome::Hung { sent };
    }
    match tokio::time::timeout(deadline, replies).await {
        Ok(Ok(replies)) => Outcome::Done {
            sent,
            replies,
            closed_early,
        },
        Ok(Err(_)) | Err(_) => Outcome::Hung { sent },
    }
}

/// Complete reply records read until the end of the stream (or an error).
async fn count_replies(reader: &mut tokio::net::tcp::OwnedReadHalf) -> u64 {
    let mut replies = 0;
    let mut header = [0u8; 4];
    loop {
        if reader.read_exact(&mut header).await.is_err() {
            return replies;
        }
        let word = u32::from_be_bytes(header);
        let mut left = u64::from(word & 0x7fff_ffff);
        let mut sink = [0u8; 8192];
        while left > 0 {
            let want = usize::try_from(left.min(sink.len() as u64)).unwrap_or(sink.len());
            match reader.read(&mut sink[..want]).await {
                Ok(0) | Err(_) => return replies,
                Ok(n) => left -= n as u64,
            }
        }
        if word & 0x8000_0000 != 0 {
            replies += 1;
        }
    }
}

/// A TCP connection from `from` to `to`.
async fn connect(from: IpAddr, to: SocketAddr) -> anyhow::Result<tokio::net::TcpStream> {
    let socket = match from {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }?;
    socket.bind(SocketAddr::new(from, 0))?;
    let stream = socket.connect(to).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}
