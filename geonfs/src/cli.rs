//! The `geonfs` command line: `run`, `demo`, `check-config`, `status`,
//! `relocate` (in [`crate::relocate`]), `failover` (in [`crate::failover`]),
//! `meta …` (in [`crate::meta_cli`]), `quarantine …` (in
//! [`crate::quarantine_cli`]).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use geonfs_proto::node::node_client::NodeClient;
use geonfs_proto::node::PingRequest;
use geonfs_rpc::tls::OPERATOR;
use geonfs_rpc::{Network, NetworkOptions};
use geonfs_site_config::{ClusterConfig, ConfigError};

use crate::node::{NodeOptions, RunningNode};

/// geonfs: a geo-distributed NFSv3 datastore for hypervisors.
#[derive(Debug, Parser)]
#[command(name = "geonfs", version, about)]
pub struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `geonfs_rpc=debug`.
    #[arg(long, global = true, default_value = "info", env = "GEONFS_LOG")]
    pub log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a cluster configuration file and print every problem in it.
    CheckConfig {
        /// The TOML configuration file.
        file: PathBuf,
    },
    /// Run one node of a cluster: every role the configuration gives it.
    Run {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// The node's name in the configuration.
        #[arg(long, short)]
        node: String,
    },
    /// Start a whole 3-site cluster on loopback in this process.
    Demo {
        /// Where the demo keeps its configuration and data (reused if present).
        #[arg(long, default_value = "geonfs-demo")]
        dir: PathBuf,
    },
    /// Show every site and node of a cluster and whether it answers.
    Status {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Take over, for a surviving site, every file a lost site owns.
    /// Refused while the lost site's access servers still renew their
    /// ownership leases; safe to run again.
    Failover {
        /// The lost site.
        site: String,
        /// The site that takes the files over (default: the first other
        /// site that takes writes).
        #[arg(long)]
        to: Option<String>,
        /// The lost site is fenced by other means (powered off, cut off at
        /// the network): do not wait for its leases to run out.
        #[arg(long)]
        site_is_fenced: bool,
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Move a file's ownership to another site ahead of a planned
    /// migration, bringing its data current there (with a progress bar).
    Relocate {
        /// The file, relative to the export's root (e.g. `vms/disk.img`).
        path: String,
        /// The site to move it to.
        #[arg(long)]
        to: String,
        /// The owning site is lost (dead or cut off): take the file over
        /// without it, once its ownership lease ran out; writes it had not
        /// copied out are lost.
        #[arg(long)]
        owner_lost: bool,
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// The metadata store: status and membership changes.
    Meta {
        /// What to do.
        #[command(subcommand)]
        command: crate::meta_cli::MetaCommand,
    },
    /// Copies set aside after a failover: writes a lost site acknowledged
    /// but had not copied out (list, get, drop).
    Quarantine {
        /// What to do.
        #[command(subcommand)]
        command: crate::quarantine_cli::QuarantineCommand,
    },
    /// The cluster CA and the TLS certificates of nodes and operators
    /// (init, issue).
    Cert {
        /// What to do.
        #[command(subcommand)]
        command: crate::cert_cli::CertCommand,
    },
}

/// Runs the command line; the process's exit code.
pub fn main(cli: Cli) -> ExitCode {
    init_logging(&cli.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::CheckConfig { file } => return Ok(check_config(&file)),
            Command::Run { config, node } => run_node(&config, &node).await?,
            Command::Demo { dir } => crate::demo::run(&dir).await?,
            Command::Status { config } => status(&config).await?,
            Command::Relocate {
                path,
                to,
                owner_lost,
                config,
            } => relocate(&config, &path, &to, owner_lost).await?,
            Command::Failover {
                site,
                to,
                site_is_fenced,
                config,
            } => failover(&config, &site, to.as_deref(), site_is_fenced).await?,
            Command::Meta { command } => crate::meta_cli::run(command).await?,
            Command::Quarantine { command } => crate::quarantine_cli::run(command).await?,
            Command::Cert { command } => crate::cert_cli::run(command)?,
        }
        Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// `check-config`: prints every problem, or a one-line summary when there is none.
fn check_config(file: &std::path::Path) -> ExitCode {
    match ClusterConfig::load(file) {
        Ok(config) => {
            let count = |f: fn(&geonfs_site_config::Node) -> bool| {
                config.nodes.iter().filter(|n| f(n)).count()
            };
            println!(
                "{}: ok: cluster {:?}, {} sites, {} nodes ({} core, {} meta, {} access), n = {}, block size {}",
                file.display(),
                config.cluster.name,
                config.sites.len(),
                config.nodes.len(),
                count(|n| n.roles.core),
                count(|n| n.roles.meta),
                count(|n| n.roles.access),
                config.cluster.replication_factor,
                geonfs_site_config::format_size(config.cluster.block_size),
            );
            ExitCode::SUCCESS
        }
        Err(ConfigError::Invalid(problems)) => {
            for problem in &problems {
                println!("{}: {problem}", file.display());
            }
            println!("{}: {} problem(s)", file.display(), problems.len());
            ExitCode::FAILURE
        }
        Err(err) => {
            println!("{}: {err}", file.display());
            ExitCode::FAILURE
        }
    }
}

async fn run_node(config_path: &std::path::Path, name: &str) -> anyhow::Result<()> {
    let config = Arc::new(ClusterConfig::load(config_path)?);
    let network = Network::new(NetworkOptions::from_config(&config, &[name]))?;
    let mut node =
        RunningNode::bind_and_start(config, name, network, NodeOptions::default()).await?;
    // The only node of this process: its registry takes the RPC metrics too.
    node.register_network_metrics()?;
    tokio::select! {
        served = node.wait() => served.context("node stopped")?,
        signal = shutdown_signal() => {
            signal?;
            tracing::info!("shutting down");
            node.stop().await?;
        }
    }
    Ok(())
}

/// `relocate`: runs [`crate::relocate::relocate`] with progress bars and
/// prints what it did.
async fn relocate(
    config_path: &std::path::Path,
    path: &str,
    to: &str,
    owner_lost: bool,
) -> anyhow::Result<()> {
    let config = ClusterConfig::load(config_path)?;
    let network = Network::new(NetworkOptions::from_config(&config, &[OPERATOR]))?;
    let started = Instant::now();
    let done = crate::relocate::relocate(&config, network, path, to, owner_lost, |phase, p| {
        crate::relocate::draw_progress(phase, p)
    })
    .await?;
    println!(
        "{path}: file {} moved from site {} to site {to} (epoch {}): {:.1} MiB pre-copied, \
         handover {} ms, {} block(s) caught up after it; total {:.1} s",
        done.file_id,
        done.from,
        done.epoch,
        done.precopied_bytes as f64 / (1024.0 * 1024.0),
        done.handover.as_millis(),
        done.caught_up_blocks,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `failover`: runs [`crate::failover::failover`] with a progress bar and
/// prints what it did; an error when a file could not be taken over.
async fn failover(
    config_path: &std::path::Path,
    lost: &str,
    to: Option<&str>,
    site_is_fenced: bool,
) -> anyhow::Result<()> {
    let config = ClusterConfig::load(config_path)?;
    let network = Network::new(NetworkOptions::from_config(&config, &[OPERATOR]))?;
    let started = Instant::now();
    let (to, report) = crate::failover::failover(
        &config,
        network,
        lost,
        to,
        site_is_fenced,
        crate::failover::draw_progress,
    )
    .await?;
    println!(
        "site {lost} failed over to site {to}: {} of {} file(s) taken over, {} had moved \
         or were removed, {} failed; waited {:.1} s for its leases; total {:.1} s. \
         Writes site {lost} had not copied out are lost.",
        report.taken_over,
        report.files,
        report.skipped,
        report.failed.len(),
        report.lease_wait.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    for failed in report.failed.iter().take(20) {
        println!("  file {}: {}", failed.file_id, failed.why);
    }
    if !report.failed.is_empty() {
        anyhow::bail!(
            "{} file(s) not taken over: run the failover again",
            report.failed.len()
        );
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        ctrl_c = tokio::signal::ctrl_c() => ctrl_c.context("cannot listen for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// One node's answer to a ping, for `status`.
#[derive(Debug)]
pub struct NodeHealth {
    /// Node name.
    pub name: String,
    /// Site name.
    pub site: String,
    /// `Ok(latency, incarnation)` or why it did not answer.
    pub answer: Result<(Duration, u64), String>,
}

/// Pings every node of `config` once, in parallel.
pub async fn probe_nodes(config: &ClusterConfig, network: &Network) -> Vec<NodeHealth> {
    let probes = config.nodes.iter().map(|node| {
        let site = config.site(node.site).name.clone();
        let network = network.clone();
        async move {
            let answer = async {
                let channel = network
                    .channel(IpAddr::V4(Ipv4Addr::UNSPECIFIED), node.address)
                    .map_err(|err| err.to_string())?;
                let started = Instant::now();
                let mut request = tonic::Request::new(PingRequest::default());
                request.set_timeout(Duration::from_secs(3));
                let reply = NodeClient::new(channel)
                    .ping(request)
                    .await
                    .map_err(|status| status.message().to_string())?;
                let incarnation = reply.into_inner().node.map_or(0, |n| n.incarnation);
                Ok((started.elapsed(), incarnation))
            }
            .await;
            NodeHealth {
                name: node.name.clone(),
                site,
                answer,
            }
        }
    });
    futures::future::join_all(probes).await
}

async fn status(config_path: &std::path::Path) -> anyhow::Result<()> {
    let config = ClusterConfig::load(config_path)?;
    let network = Network::new(NetworkOptions::from_config(&config, &[OPERATOR]))?;
    let health = probe_nodes(&config, &network).await;
    println!(
        "{:<8} {:<16} {:<24} {:<10} detail",
        "site", "node", "address", "state"
    );
    let mut down = 0;
    for (node, probe) in config.nodes.iter().zip(&health) {
        let (state, detail) = match &probe.answer {
            Ok((latency, incarnation)) => (
                "up",
                format!(
                    "{:.2} ms, incarnation {incarnation:016x}",
                    latency.as_secs_f64() * 1e3
                ),
            ),
            Err(why) => {
                down += 1;
                ("DOWN", why.clone())
            }
        };
        println!(
            "{:<8} {:<16} {:<24} {:<10} {detail}",
            probe.site, probe.name, node.address, state
        );
    }
    for (core, copies, bytes) in crate::quarantine_cli::totals(&config, &network).await {
        println!(
            "quarantine: {core} holds {copies} copy(ies), {bytes} bytes, that a failover \
             never saw (see `geonfs quarantine list`)"
        );
    }
    if down > 0 {
        anyhow::bail!("{down} of {} nodes did not answer", health.len());
    }
    Ok(())
}
