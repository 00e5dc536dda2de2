//! `geonfs quarantine …`: the copies the cores set aside because a takeover
//! from a lost owner never saw them (writes the lost site acknowledged but
//! had not copied out; see `core-server/src/store/fence.rs`). They are never
//! merged back by themselves: an operator lists them, writes a file's
//! blocks into a local copy of it (`export`) or reads one back (`get`),
//! and drops them.
//!
//! The functions here are what the subcommands call, so the system tests
//! exercise the same code as an operator.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use geonfs_proto::core::core_data_client::CoreDataClient;
use geonfs_proto::core::{
    BlockId, ListQuarantineRequest, QuarantineRequest, QuarantinedCopy, StatRequest,
};
use geonfs_rpc::tls::OPERATOR;
use geonfs_rpc::{Network, NetworkOptions, RpcChannel};
use geonfs_site_config::{ClusterConfig, Node};

/// How long one call to a core may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Copies asked per `ListQuarantine` page.
const PAGE: u32 = 1000;

/// The `quarantine` subcommands.
#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// List every quarantined copy on every core (or one site's cores).
    List {
        /// Only the cores of this site.
        #[arg(long)]
        site: Option<String>,
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Write one quarantined copy (the whole block) to a local file.
    Get {
        /// The core holding it (as `list` shows).
        core: String,
        /// The file id.
        file: u64,
        /// The block index.
        index: u64,
        /// The copy's version.
        version: u64,
        /// Where to write the block's bytes.
        #[arg(long, short)]
        out: PathBuf,
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Write every quarantined block of one file (the newest copy of each)
    /// into a local image at its place (index × block size), over what the
    /// image holds there. Copy the file out first (`nfs-cat`): the image
    /// then holds the lost site's last state of every block it had not
    /// copied out, and the current state of the others; inspect it, or
    /// copy it back in under another name.
    Export {
        /// The file id (as `list` shows).
        file: u64,
        /// The local image to write into (created if missing).
        #[arg(long)]
        into: PathBuf,
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Delete one quarantined copy for good.
    Drop {
        /// The core holding it.
        core: String,
        /// The file id.
        file: u64,
        /// The block index.
        index: u64,
        /// The copy's version.
        version: u64,
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// One core's quarantine, or why it could not be listed.
#[derive(Debug)]
pub struct CoreQuarantine {
    /// The core's name.
    pub core: String,
    /// Its site's name.
    pub site: String,
    /// Its quarantined copies.
    pub copies: Result<Vec<QuarantinedCopy>, String>,
}

fn client(
    config: &ClusterConfig,
    network: &Network,
    node: &Node,
) -> anyhow::Result<CoreDataClient<RpcChannel>> {
    let channel = network
        .channel(IpAddr::V4(Ipv4Addr::UNSPECIFIED), node.address)
        .with_context(|| format!("no channel to {}", node.name))?;
    let max = usize::try_from(config.cluster.block_size)
        .unwrap_or(usize::MAX)
        .saturating_add(1024 * 1024);
    Ok(CoreDataClient::new(channel).max_decoding_message_size(max))
}

/// A client of the core named `name` (an error if no core has that name).
fn core_client(
    config: &ClusterConfig,
    network: &Network,
    name: &str,
) -> anyhow::Result<CoreDataClient<RpcChannel>> {
    match config.node(name) {
        Some(node) if node.roles.core => client(config, network, node),
        Some(_) => bail!("node {name} is not a core server"),
        None => bail!("no node named {name:?}"),
    }
}

fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

async fn list_core(
    config: &ClusterConfig,
    network: &Network,
    node: &Node,
) -> anyhow::Result<Vec<QuarantinedCopy>> {
    let mut client = client(config, network, node)?;
    let mut copies: Vec<QuarantinedCopy> = Vec::new();
    loop {
        let last = copies.last();
        let page = client
            .list_quarantine(request(ListQuarantineRequest {
                after_block: last.and_then(|c| c.block),
                after_version: last.map_or(0, |c| c.version),
                limit: PAGE,
            }))
            .await
            .map_err(|status| anyhow::anyhow!("{}", status.message()))?
            .into_inner();
        let more = page.more && !page.copies.is_empty();
        copies.extend(page.copies);
        if !more {
            return Ok(copies);
        }
    }
}

/// Every core's quarantine (of `site` only, when given), in parallel.
pub async fn list(
    config: &ClusterConfig,
    network: &Network,
    site: Option<&str>,
) -> anyhow::Result<Vec<CoreQuarantine>> {
    if let Some(site) = site {
        if !config.sites.iter().any(|s| s.name == site) {
            bail!("no site named {site:?}");
        }
    }
    let cores = config.nodes.iter().filter(|node| {
        node.roles.core && site.is_none_or(|site| config.site(node.site).name == site)
    });
    let lists = cores.map(|node| async move {
        CoreQuarantine {
            core: node.name.clone(),
            site: config.site(node.site).name.clone(),
            copies: list_core(config, network, node)
                .await
                .map_err(|err| format!("{err:#}")),
        }
    });
    Ok(futures::future::join_all(lists).await)
}

/// The quarantined copy of `block` at `version` on `core`: its
/// description and whole data.
pub async fn get(
    config: &ClusterConfig,
    network: &Network,
    core: &str,
    block: BlockId,
    version: u64,
) -> anyhow::Result<(QuarantinedCopy, Vec<u8>)> {
    let reply = core_client(config, network, core)?
        .read_quarantine(request(QuarantineRequest {
            block: Some(block),
            version,
        }))
        .await
        .map_err(|status| anyhow::anyhow!("{core}: {}", status.message()))?
        .into_inner();
    let copy = reply.copy.context("the core answered without the copy")?;
    Ok((copy, reply.data.to_vec()))
}

/// Writes the newest quarantined copy of every block of `file` (the
/// attribute record aside) into the local image `into` at the block's
/// offset; the blocks written, (index, version, core), in index order.
pub async fn export(
    config: &ClusterConfig,
    network: &Network,
    file: u64,
    into: &Path,
) -> anyhow::Result<Vec<(u64, u64, String)>> {
    use std::io::{Seek, SeekFrom, Write};
    let mut newest: std::collections::BTreeMap<u64, (u64, String)> = Default::default();
    for core in list(config, network, None).await? {
        let copies = core
            .copies
            .map_err(|err| anyhow::anyhow!("{}: {err}", core.core))?;
        for copy in copies {
            let Some(block) = copy
                .block
                .filter(|b| b.file_id == file && b.index != u64::MAX)
            else {
                continue;
            };
            let entry = newest
                .entry(block.index)
                .or_insert((copy.version, core.core.clone()));
            if copy.version > entry.0 {
                *entry = (copy.version, core.core.clone());
            }
        }
    }
    if newest.is_empty() {
        bail!("no quarantined copy of file {file}");
    }
    let mut image = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(into)
        .with_context(|| format!("cannot open {}", into.display()))?;
    let mut written = Vec::new();
    for (&index, (version, core)) in &newest {
        let block = BlockId {
            file_id: file,
            index,
        };
        let (copy, data) = get(config, network, core, block, *version).await?;
        let length = usize::try_from(copy.length).unwrap_or(usize::MAX);
        let offset = index
            .checked_mul(config.cluster.block_size)
            .context("block offset past the largest file")?;
        image
            .seek(SeekFrom::Start(offset))
            .and_then(|_| image.write_all(&data[..length.min(data.len())]))
            .with_context(|| format!("cannot write {}", into.display()))?;
        written.push((index, *version, core.clone()));
    }
    image
        .sync_all()
        .with_context(|| format!("cannot sync {}", into.display()))?;
    Ok(written)
}

/// Deletes the quarantined copy of `block` at `version` on `core`; false
/// if it had none.
pub async fn drop_copy(
    config: &ClusterConfig,
    network: &Network,
    core: &str,
    block: BlockId,
    version: u64,
) -> anyhow::Result<bool> {
    let reply = core_client(config, network, core)?
        .drop_quarantine(request(QuarantineRequest {
            block: Some(block),
            version,
        }))
        .await
        .map_err(|status| anyhow::anyhow!("{core}: {}", status.message()))?
        .into_inner();
    Ok(reply.dropped)
}

/// Per core that answered and holds any: (core, copies, bytes) in its
/// quarantine (for `status`).
pub async fn totals(config: &ClusterConfig, network: &Network) -> Vec<(String, u64, u64)> {
    let cores = config.nodes.iter().filter(|node| node.roles.core);
    let stats = cores.map(|node| async move {
        let mut client = client(config, network, node).ok()?;
        let stat = client
            .stat(request(StatRequest {}))
            .await
            .ok()?
            .into_inner();
        (stat.quarantined_blocks > 0).then(|| {
            (
                node.name.clone(),
                stat.quarantined_blocks,
                stat.quarantined_bytes,
            )
        })
    });
    futures::future::join_all(stats)
        .await
        .into_iter()
        .flatten()
        .collect()
}

fn block_name(block: Option<&BlockId>) -> String {
    match block {
        Some(b) if b.index == u64::MAX => format!("{}/attributes", b.file_id),
        Some(b) => geonfs_proto::domain::BlockId::from(*b).to_string(),
        None => "?".to_string(),
    }
}

fn age(set_aside_ms: u64) -> String {
    let now = geonfs_proto::domain::unix_time_ms();
    format!(
        "{:.0} s ago",
        now.saturating_sub(set_aside_ms) as f64 / 1000.0
    )
}

fn load(path: &Path) -> anyhow::Result<(ClusterConfig, Network)> {
    let config = ClusterConfig::load(path)?;
    let network = Network::new(NetworkOptions::from_config(&config, &[OPERATOR]))?;
    Ok((config, network))
}

/// Prints `quarantine list`: one line per quarantined copy, then the
/// total; fails when a core could not be listed.
fn print_listing(cores: &[CoreQuarantine]) -> anyhow::Result<()> {
    println!(
        "{:<8} {:<16} {:<24} {:>18} {:>6} {:>10}  set aside",
        "site", "core", "block (file/index)", "version", "epoch", "bytes"
    );
    let (mut total, mut failed) = (0, 0);
    for core in cores {
        match &core.copies {
            Ok(copies) => {
                for copy in copies {
                    total += 1;
                    println!(
                        "{:<8} {:<16} {:<24} {:>18} {:>6} {:>10}  {}",
                        core.site,
                        core.core,
                        block_name(copy.block.as_ref()),
                        copy.version,
                        copy.epoch,
                        copy.length,
                        age(copy.set_aside_ms)
                    );
                }
            }
            Err(err) => {
                failed += 1;
                println!("{:<8} {:<16} not listed: {err}", core.site, core.core);
            }
        }
    }
    println!(
        "{total} quarantined copy(ies) on {} core(s)",
        cores.len() - failed
    );
    if failed > 0 {
        bail!("{failed} core(s) could not be listed");
    }
    Ok(())
}

/// Runs one `quarantine` subcommand, printing its result.
pub async fn run(command: QuarantineCommand) -> anyhow::Result<()> {
    match command {
        QuarantineCommand::List { site, config } => {
            let (config, network) = load(&config)?;
            let cores = list(&config, &network, site.as_deref()).await?;
            print_listing(&cores)?;
        }
        QuarantineCommand::Get {
            core,
            file,
            index,
            version,
            out,
            config,
        } => {
            let (config, network) = load(&config)?;
            let block = BlockId {
                file_id: file,
                index,
            };
            let (copy, data) = get(&config, &network, &core, block, version).await?;
            std::fs::write(&out, &data)
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!(
                "{}: block {} at version {} (epoch {}, {} bytes) written to {}",
                core,
                block_name(Some(&block)),
                copy.version,
                copy.epoch,
                data.len(),
                out.display()
            );
        }
        QuarantineCommand::Export { file, into, config } => {
            let (config, network) = load(&config)?;
            let written = export(&config, &network, file, &into).await?;
            for (index, version, core) in &written {
                println!("block {file}/{index} at version {version} from {core}");
            }
            println!(
                "{} block(s) of file {file} written into {}",
                written.len(),
                into.display()
            );
        }
        QuarantineCommand::Drop {
            core,
            file,
            index,
            version,
            config,
        } => {
            let (config, network) = load(&config)?;
            let block = BlockId {
                file_id: file,
                index,
            };
            if !drop_copy(&config, &network, &core, block, version).await? {
                bail!(
                    "{core} holds no quarantined copy of block {} at version {version}",
                    block_name(Some(&block))
                );
            }
            println!(
                "{core}: quarantined copy of block {} at version {version} dropped",
                block_name(Some(&block))
            );
        }
    }
    Ok(())
}
