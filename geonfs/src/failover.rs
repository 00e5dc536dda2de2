//! `geonfs failover SITE [--to SITE]`: takes over, for a surviving site,
//! every file a lost site owns (see
//! `geonfs_access_server::ownership` and its failover module): refused while
//! the lost site's access servers still renew their leases, unless the
//! operator says the site is fenced by other means; safe to run again.

use std::io::{IsTerminal, Write};

use anyhow::{bail, Context};
use geonfs_access_server::ownership::{FailoverProgress, FailoverReport, Ownership};
use geonfs_block_manager::BlockClient;
use geonfs_meta_kvs::MetaClient;
use geonfs_rpc::Network;
use geonfs_site_config::ClusterConfig;

use crate::relocate::site_and_address;

/// The site that takes the files over when none is named: the first other
/// site that takes writes.
fn default_target<'a>(config: &'a ClusterConfig, lost: &str) -> anyhow::Result<&'a str> {
    config
        .sites
        .iter()
        .find(|s| s.name != lost && s.takes_writes)
        .map(|s| s.name.as_str())
        .with_context(|| format!("no site other than {lost} takes writes"))
}

/// Fails site `lost` over to site `to` (default: the first other site that
/// takes writes), reporting progress to `progress`.
pub async fn failover(
    config: &ClusterConfig,
    network: Network,
    lost: &str,
    to: Option<&str>,
    site_is_fenced: bool,
    progress: impl FnMut(FailoverProgress),
) -> anyhow::Result<(String, FailoverReport)> {
    if !config.sites.iter().any(|s| s.name == lost) {
        let names: Vec<&str> = config.sites.iter().map(|s| s.name.as_str()).collect();
        bail!("no site named {lost:?} (sites: {})", names.join(", "));
    }
    let to = match to {
        Some(to) => to,
        None => default_target(config, lost)?,
    };
    if to == lost {
        bail!("site {lost} cannot take its own files over");
    }
    let (site, from_ip) = site_and_address(config, to)?;
    let meta = MetaClient::for_cluster(network.clone(), from_ip, config);
    let local = BlockClient::new(network.clone(), config, from_ip, site)?;
    let ownership = Ownership::new(meta, config, network, from_ip, local)?;
    let report = ownership.fail_over(lost, site_is_fenced, progress).await?;
    Ok((to.to_string(), report))
}

/// Shows failover progress on stderr: a bar redrawn in place on a
/// terminal, else a line per tenth of the files (and the last one).
pub fn draw_progress(p: FailoverProgress) {
    const WIDTH: u64 = 30;
    let mut err = std::io::stderr().lock();
    let line = |filled: u64| {
        let bar: String = (0..WIDTH)
            .map(|i| if i < filled { '#' } else { '-' })
            .collect();
        format!(
            "failover [{bar}] {}/{} files, {} failed",
            p.done, p.total, p.failed
        )
    };
    let filled = (WIDTH * p.done).checked_div(p.total).unwrap_or(WIDTH);
    if err.is_terminal() {
        let _ = write!(err, "\r{}", line(filled));
        if p.done == p.total {
            let _ = writeln!(err);
        }
    } else {
        let tenth = (p.total / 10).max(1);
        if p.done.is_multiple_of(tenth) || p.done == p.total {
            let _ = writeln!(err, "{}", line(filled));
        }
    }
    let _ = err.flush();
}
