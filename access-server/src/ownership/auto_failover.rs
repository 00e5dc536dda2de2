//! Automatic failover of a silent site (`cluster.auto_failover_after`, off
//! by default): what `geonfs failover SITE` does, started by the surviving
//! sites themselves.
//!
//! Every access server looks at the other sites' lease records (`lease.rs`)
//! every poll. A site none of whose access servers renewed its lease for
//! `auto_failover_after`, measured on this server's monotonic clock from the
//! last renewal it saw (or from its own start), is **silent**. The first
//! site in configuration order that takes writes and is not silent is the
//! **taker**: its access servers fail every silent site over to it, with
//! the same steps and safety as the command (the leases must have run out,
//! the files are revoked at the silent site, what it had not copied out is
//! set aside on its cores when it comes back). Every access server computes
//! the same taker from the same records; two that disagree for a moment
//! only race for the claims, which meta-kvs decides one file at a time.
//!
//! An access server cut off from the meta-kvs majority sees no records and
//! decides nothing. A failover that left files behind is tried again at the
//! next poll; one that completed is not repeated until the site renews a
//! lease again (it came back, and may own files again later).
//!
//! The trade-off (documented in the configuration template): a site that is
//! only cut off, not dead, loses its files to the others after this long;
//! without it, an operator decides and the files stay unwritable until then.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use geonfs_site_config::ClusterConfig;

use super::lease::{HolderState, LeaseWatch};
use super::{Ownership, OwnershipError};

/// What this access server has seen of one other site.
struct SiteWatch {
    leases: LeaseWatch,
    /// The last time a lease of the site was seen renewed (or the watch's
    /// start).
    last_renewed: Instant,
    /// Failed over since its last renewal.
    failed_over: bool,
}

/// The automatic failover of one access server.
#[derive(Debug)]
pub struct AutoFailover {
    ownership: Ownership,
    after: Duration,
    /// The sites that take writes, in configuration order.
    sites: Vec<String>,
}

impl AutoFailover {
    /// The automatic failover of the access server of `ownership`, `None`
    /// when `config` leaves it off.
    pub fn new(ownership: Ownership, config: &ClusterConfig) -> Option<Self> {
        let after = config.cluster.auto_failover_after?;
        let sites = config
            .sites
            .iter()
            .filter(|site| site.takes_writes)
            .map(|site| site.name.clone())
            .collect();
        Some(AutoFailover {
            ownership,
            after,
            sites,
        })
    }

    /// Watches and fails silent sites over, forever (abort the task to
    /// stop it).
    pub async fn run(self) {
        let me = self.ownership.site().to_string();
        let poll = self.ownership.inner.lease.poll_every();
        let started = Instant::now();
        let mut watches: HashMap<String, SiteWatch> = HashMap::new();
        tracing::info!(site = %me, after = ?self.after, "automatic failover of silent sites is on");
        loop {
            tokio::time::sleep(poll).await;
            let mut silent = BTreeSet::new();
            let mut blind = false;
            for site in self.sites.iter().filter(|s| **s != me) {
                let watch = watches.entry(site.clone()).or_insert_with(|| SiteWatch {
                    leases: LeaseWatch::default(),
                    last_renewed: started,
                    failed_over: false,
                });
                match self.ownership.look_at_leases(site, &mut watch.leases).await {
                    Ok(holders) => {
                        if holders.iter().any(|h| h.state == HolderState::Renewed) {
                            watch.last_renewed = Instant::now();
                            watch.failed_over = false;
                        }
                    }
                    Err(err) => {
                        tracing::debug!(%site, %err, "cannot look at a site's leases");
                        blind = true;
                        break;
                    }
                }
                if watch.last_renewed.elapsed() >= self.after {
                    silent.insert(site.clone());
                }
            }
            if blind {
                continue;
            }
            let taker = self.sites.iter().find(|s| !silent.contains(*s));
            if taker != Some(&me) {
                continue;
            }
            for site in &silent {
                let Some(watch) = watches.get_mut(site) else {
                    continue;
                };
                if watch.failed_over {
                    continue;
                }
                tracing::warn!(lost = %site, to = %me, silent_for = ?watch.last_renewed.elapsed(),
                    "site silent for longer than cluster.auto_failover_after: failing it over");
                match self.ownership.fail_over(site, false, |_| {}).await {
                    Ok(report) if report.failed.is_empty() => {
                        watch.failed_over = true;
                        self.ownership.inner.metrics.auto_failovers.inc();
                        tracing::warn!(lost = %site, to = %me, files = report.files,
                            taken_over = report.taken_over, skipped = report.skipped,
                            "silent site failed over automatically; what it had not copied out is lost");
                    }
                    Ok(report) => tracing::warn!(lost = %site, failed = report.failed.len(),
                        "automatic failover left files behind; trying again"),
                    Err(OwnershipError::SiteAlive { node, .. }) => {
                        tracing::info!(%site, %node, "the site renewed a lease: not failed over");
                        watch.last_renewed = Instant::now();
                    }
                    Err(err) => {
                        tracing::warn!(%site, %err, "automatic failover failed; trying again")
                    }
                }
            }
        }
    }
}
