//! `geonfs cert`: the cluster CA and the certificates nodes and operators
//! present to each other (see docs/ARCHITECTURE.md, "Security").

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use geonfs_rpc::tls::{self, OPERATOR};
use geonfs_site_config::ClusterConfig;

/// The `cert` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Make a new cluster CA: DIR/ca.crt and DIR/ca.key (mode 0600). Keep
    /// ca.key on the host that issues certificates, off the nodes.
    Init {
        /// The directory to write to (created if needed).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue node certificates, signed by the CA in the config's `[tls]
    /// dir` (or --dir): NAME.crt and NAME.key (mode 0600) for each NAME
    /// given, else for every node of the config and `operator` (what
    /// `geonfs` commands present).
    Issue {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Where the CA is and the certificates go (default: `[tls] dir`).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Replace certificates that exist already.
        #[arg(long)]
        replace: bool,
        /// Nodes (or `operator`) to issue for; default: all of them.
        names: Vec<String>,
    },
}

/// Runs a `cert` subcommand.
pub fn run(command: CertCommand) -> anyhow::Result<()> {
    match command {
        CertCommand::Init { dir } => {
            tls::init_ca(&dir)?;
            println!(
                "cluster CA made: {} and {} (keep the key off the nodes)",
                dir.join(geonfs_site_config::TLS_CA_CERT_FILE).display(),
                dir.join(tls::CA_KEY_FILE).display()
            );
            Ok(())
        }
        CertCommand::Issue {
            config,
            dir,
            replace,
            names,
        } => {
            let config = ClusterConfig::load(&config)?;
            let dir = match dir.or_else(|| config.tls.dir.clone()) {
                Some(dir) => dir,
                None => anyhow::bail!(
                    "the configuration runs plain TCP (`[tls] insecure = true`): give --dir"
                ),
            };
            let names = if names.is_empty() {
                every_identity(&config)
            } else {
                for name in &names {
                    if name != OPERATOR && config.node(name).is_none() {
                        anyhow::bail!(
                            "{name:?} is neither a node of the configuration nor {OPERATOR:?}"
                        );
                    }
                }
                names
            };
            issue_all(&dir, &names, replace)
        }
    }
}

/// Every node of `config`, then the operator.
pub fn every_identity(config: &ClusterConfig) -> Vec<String> {
    config
        .nodes
        .iter()
        .map(|node| node.name.clone())
        .chain([OPERATOR.to_string()])
        .collect()
}

/// Issues a certificate for each of `names` in `dir`, saying where each went.
fn issue_all(dir: &Path, names: &[String], replace: bool) -> anyhow::Result<()> {
    for name in names {
        tls::issue(dir, name, replace).with_context(|| format!("issuing for {name}"))?;
        println!(
            "{name}: {} and {}",
            tls::cert_path(dir, name).display(),
            tls::key_path(dir, name).display()
        );
    }
    Ok(())
}
