//! `geonfs meta …`: the metadata store's status and membership changes.
//!
//! The functions here are what the subcommands call, so the system tests
//! exercise the same code as an operator: node names resolve to addresses
//! through the cluster configuration, calls go to the current leader.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use geonfs_meta_kvs::{raft_id, MetaClient};
use geonfs_proto::meta::membership_request::Change;
use geonfs_proto::meta::meta_admin_client::MetaAdminClient;
use geonfs_proto::meta::{Member, StatusReply, StatusRequest};
use geonfs_rpc::tls::OPERATOR;
use geonfs_rpc::{Network, NetworkOptions};
use geonfs_site_config::ClusterConfig;

/// How long `status` waits for each member.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

/// The `meta` subcommands.
#[derive(Debug, Subcommand)]
pub enum MetaCommand {
    /// Show every meta node's Raft state: id, term, leader, commit, applied.
    Status {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// List the members (voters and learners) as the leader sees them.
    Members {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Add a meta node that is not a member as a voter.
    AddVoter {
        /// The node's name in the configuration.
        name: String,
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Add a meta node that is not a member as a learner (it replicates but
    /// does not vote).
    AddLearner {
        /// The node's name in the configuration.
        name: String,
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Make a learner a voter.
    Promote {
        /// The node's name in the configuration.
        name: String,
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Remove a voter or learner (a leader first hands leadership over).
    Remove {
        /// The node's name in the configuration.
        name: String,
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// Runs one `meta` subcommand, printing its result.
pub async fn run(command: MetaCommand) -> anyhow::Result<()> {
    let (change, name, path) = match command {
        MetaCommand::Status { config } => {
            let (config, network) = load(&config)?;
            return print_status(&config, &status(&config, &network).await);
        }
        MetaCommand::Members { config } => {
            let (config, network) = load(&config)?;
            print_members(&members(&config, &network).await?);
            return Ok(());
        }
        MetaCommand::AddVoter { name, config } => (Change::AddVoter, name, config),
        MetaCommand::AddLearner { name, config } => (Change::AddLearner, name, config),
        MetaCommand::Promote { name, config } => (Change::PromoteLearner, name, config),
        MetaCommand::Remove { name, config } => (Change::Remove, name, config),
    };
    let (config, network) = load(&path)?;
    let members = change_membership(&config, &network, change, &name).await?;
    println!("{}: {name}: done", change.as_str_name().to_lowercase());
    print_members(&members);
    Ok(())
}

fn load(path: &Path) -> anyhow::Result<(ClusterConfig, Network)> {
    let config = ClusterConfig::load(path)?;
    let network = Network::new(NetworkOptions::from_config(&config, &[OPERATOR]))?;
    Ok((config, network))
}

/// The member record of meta node `name` of `config`: an error if there is
/// no such node or it does not have the meta role.
pub fn resolve(config: &ClusterConfig, name: &str) -> anyhow::Result<Member> {
    let node = config
        .node(name)
        .with_context(|| format!("the configuration has no node named {name:?}"))?;
    if !node.roles.meta {
        bail!("node {name:?} does not have the meta role");
    }
    Ok(Member {
        id: raft_id(name),
        name: name.to_string(),
        address: node.address.to_string(),
        voter: false,
    })
}

/// A client of every meta node of `config`, calling from outside the
/// cluster.
pub fn client(config: &ClusterConfig, network: &Network) -> MetaClient {
    MetaClient::for_cluster(network.clone(), IpAddr::V4(Ipv4Addr::UNSPECIFIED), config)
}

/// Applies one membership change to meta node `name` (resolved through
/// `config`) on the leader; the members after it.
pub async fn change_membership(
    config: &ClusterConfig,
    network: &Network,
    change: Change,
    name: &str,
) -> anyhow::Result<Vec<Member>> {
    if change == Change::Unspecified {
        bail!("no membership change given");
    }
    let member = resolve(config, name)?;
    client(config, network)
        .change_membership(change, member)
        .await
        .with_context(|| format!("{} {name}", change.as_str_name().to_lowercase()))
}

/// The members as the leader sees them.
pub async fn members(config: &ClusterConfig, network: &Network) -> anyhow::Result<Vec<Member>> {
    client(config, network)
        .members()
        .await
        .context("cannot list the meta members")
}

/// One meta node's answer to `status`.
#[derive(Debug)]
pub struct MemberStatus {
    /// Node name.
    pub name: String,
    /// Its configured address.
    pub address: String,
    /// Its status or why it did not answer.
    pub answer: Result<StatusReply, String>,
}

/// Asks every meta node of `config` for its status, in parallel.
pub async fn status(config: &ClusterConfig, network: &Network) -> Vec<MemberStatus> {
    let calls = config.nodes.iter().filter(|n| n.roles.meta).map(|node| {
        let network = network.clone();
        async move {
            let answer = async {
                let channel = network
                    .channel(IpAddr::V4(Ipv4Addr::UNSPECIFIED), node.address)
                    .map_err(|err| err.to_string())?;
                let mut request = tonic::Request::new(StatusRequest {});
                request.set_timeout(STATUS_TIMEOUT);
                let reply = MetaAdminClient::new(channel)
                    .status(request)
                    .await
                    .map_err(|status| status.message().to_string())?;
                Ok(reply.into_inner())
            }
            .await;
            MemberStatus {
                name: node.name.clone(),
                address: node.address.to_string(),
                answer,
            }
        }
    });
    futures::future::join_all(calls).await
}

fn name_of(config: &ClusterConfig, id: u64) -> String {
    if id == 0 {
        return "-".to_string();
    }
    config
        .nodes
        .iter()
        .find(|n| n.roles.meta && raft_id(&n.name) == id)
        .map_or_else(|| format!("{id:#x}"), |n| n.name.clone())
}

fn print_status(config: &ClusterConfig, statuses: &[MemberStatus]) -> anyhow::Result<()> {
    println!(
        "{:<16} {:<18} {:<8} {:<16} {:>10} {:>10}  role",
        "node", "id", "term", "leader", "commit", "applied"
    );
    let mut down = 0;
    for s in statuses {
        match &s.answer {
            Ok(r) => {
                let role = r
                    .members
                    .iter()
                    .find(|m| m.id == r.id)
                    .map_or(
                        "not a member",
                        |m| if m.voter { "voter" } else { "learner" },
                    );
                println!(
                    "{:<16} {:<18} {:<8} {:<16} {:>10} {:>10}  {role}",
                    s.name,
                    format!("{:#x}", r.id),
                    r.term,
                    name_of(config, r.leader_id),
                    r.commit_index,
                    r.applied_index
                );
            }
            Err(why) => {
                down += 1;
                println!("{:<16} DOWN ({}): {why}", s.name, s.address);
            }
        }
    }
    if down > 0 {
        bail!("{down} of {} meta nodes did not answer", statuses.len());
    }
    Ok(())
}

fn print_members(members: &[Member]) {
    println!("{:<16} {:<18} {:<24} role", "node", "id", "address");
    for m in members {
        println!(
            "{:<16} {:<18} {:<24} {}",
            m.name,
            format!("{:#x}", m.id),
            m.address,
            if m.voter { "voter" } else { "learner" }
        );
    }
}
