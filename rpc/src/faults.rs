//! The fault seam: tests cut, drop or delay traffic between nodes or sites.
//!
//! Faults are keyed by node IP (every node has its own address) or by site,
//! and apply to calls from one side to the other. A cut also severs
//! connections already open on that link; heal lets new connections through.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use geonfs_site_config::{SiteId, SiteMap};
use tokio::sync::watch;

/// Which traffic a fault applies to (always in the direction `from -> to`;
/// use the symmetric helpers on [`Faults`] for both directions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultTarget {
    /// Calls from one node to another.
    Nodes {
        /// Caller's address.
        from: IpAddr,
        /// Callee's address.
        to: IpAddr,
    },
    /// Every call from or to one node.
    Node(IpAddr),
    /// Calls from any node of one site to any node of another.
    Sites {
        /// Caller's site.
        from: SiteId,
        /// Callee's site.
        to: SiteId,
    },
}

/// What happens to matching traffic.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// No connection and no call gets through; open connections are severed.
    Cut,
    /// Each request is lost with this probability (the server never sees it).
    DropRequests(f64),
    /// Each reply is lost with this probability (the server did the work).
    DropReplies(f64),
    /// Every call waits this much longer before it is sent.
    Delay(Duration),
}

/// The combined effect of all faults on one link, as one call sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct LinkFaults {
    pub cut: bool,
    pub drop_requests: f64,
    pub drop_replies: f64,
    pub delay: Duration,
}

#[derive(Debug)]
struct Entry {
    target: FaultTarget,
    fault: Fault,
}

/// The process-wide fault table. Cheap to clone; every clone is the same table.
#[derive(Clone, Debug)]
pub struct Faults {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sites: SiteMap,
    entries: RwLock<Vec<Entry>>,
    /// Bumped on every change, so open connections re-check their link.
    epoch: watch::Sender<u64>,
    /// Per site: microseconds added to the wall clock of its access
    /// servers' block versions (a skewed clock; see [`Faults::clock_skew`]).
    skews: Mutex<HashMap<SiteId, Arc<AtomicI64>>>,
}

impl Faults {
    /// An empty table for a network whose sites are `sites`.
    pub fn new(sites: SiteMap) -> Self {
        Faults {
            inner: Arc::new(Inner {
                sites,
                entries: RwLock::new(Vec::new()),
                epoch: watch::Sender::new(0),
                skews: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Adds a fault.
    pub fn add(&self, target: FaultTarget, fault: Fault) {
        tracing::info!(?target, ?fault, "fault injected");
        self.with_entries(|entries| entries.push(Entry { target, fault }));
    }

    /// Cuts both directions between two nodes.
    pub fn cut_nodes(&self, a: IpAddr, b: IpAddr) {
        self.add(FaultTarget::Nodes { from: a, to: b }, Fault::Cut);
        self.add(FaultTarget::Nodes { from: b, to: a }, Fault::Cut);
    }

    /// Cuts a node off from every other node.
    pub fn isolate_node(&self, node: IpAddr) {
        self.add(FaultTarget::Node(node), Fault::Cut);
    }

    /// Cuts both directions between two sites.
    pub fn cut_sites(&self, a: SiteId, b: SiteId) {
        self.add(FaultTarget::Sites { from: a, to: b }, Fault::Cut);
        self.add(FaultTarget::Sites { from: b, to: a }, Fault::Cut);
    }

    /// The clock skew of `site`'s access servers, in microseconds (0 unless
    /// a test set one): the cell an access server's version clock reads.
    pub fn clock_skew(&self, site: SiteId) -> Arc<AtomicI64> {
        let mut skews = self.inner.skews.lock().unwrap_or_else(|p| p.into_inner());
        skews.entry(site).or_default().clone()
    }

    /// Skews the clock of `site`'s access servers by `micros` (negative:
    /// behind), as a wall clock set wrong there would.
    pub fn set_clock_skew(&self, site: SiteId, micros: i64) {
        tracing::info!(?site, micros, "clock skew injected");
        self.clock_skew(site).store(micros, Ordering::SeqCst);
    }

    /// Removes every fault that names `target` exactly.
    pub fn heal(&self, target: FaultTarget) {
        tracing::info!(?target, "fault healed");
        self.with_entries(|entries| entries.retain(|e| e.target != target));
    }

    /// Removes every fault between two nodes, both directions.
    pub fn heal_nodes(&self, a: IpAddr, b: IpAddr) {
        self.heal(FaultTarget::Nodes { from: a, to: b });
        self.heal(FaultTarget::Nodes { from: b, to: a });
    }

    /// Removes every fault between two sites, both directions.
    pub fn heal_sites(&self, a: SiteId, b: SiteId) {
        self.heal(FaultTarget::Sites { from: a, to: b });
        self.heal(FaultTarget::Sites { from: b, to: a });
    }

    /// Removes every fault.
    pub fn heal_all(&self) {
        tracing::info!("all faults healed");
        self.with_entries(|entries| entries.clear());
    }

    fn with_entries(&self, change: impl FnOnce(&mut Vec<Entry>)) {
        {
            let mut entries = match self.inner.entries.write() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            change(&mut entries);
        }
        self.inner.epoch.send_modify(|epoch| *epoch += 1);
    }

    /// The combined faults on calls from `from` to `to`.
    pub(crate) fn link(&self, from: IpAddr, to: IpAddr) -> LinkFaults {
        let entries = match self.inner.entries.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut link = LinkFaults::default();
        if entries.is_empty() {
            return link;
        }
        let from_site = self.inner.sites.site_of(from).ok();
        let to_site = self.inner.sites.site_of(to).ok();
        for entry in entries.iter() {
            let matches = match entry.target {
                FaultTarget::Nodes { from: f, to: t } => f == from && t == to,
                FaultTarget::Node(n) => n == from || n == to,
                FaultTarget::Sites { from: f, to: t } => from_site == Some(f) && to_site == Some(t),
            };
            if !matches {
                continue;
            }
            match entry.fault {
                Fault::Cut => link.cut = true,
                Fault::DropRequests(p) => link.drop_requests = link.drop_requests.max(p),
                Fault::DropReplies(p) => link.drop_replies = link.drop_replies.max(p),
                Fault::Delay(d) => link.delay += d,
            }
        }
        link
    }

    /// Resolves once the link `from -> to` is cut (immediately if it is now).
    pub(crate) async fn until_cut(&self, from: IpAddr, to: IpAddr) {
        let mut epoch = self.inner.epoch.subscribe();
        loop {
            epoch.borrow_and_update();
            if self.link(from, to).cut {
                return;
            }
            if epoch.changed().await.is_err() {
                // The table is gone with the network: never cut.
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites() -> SiteMap {
        SiteMap::new(&[
            (SiteId(0), vec!["127.1.0.0/16".parse().unwrap()]),
            (SiteId(1), vec!["127.2.0.0/16".parse().unwrap()]),
        ])
        .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn faults_match_their_targets_only() {
        let faults = Faults::new(sites());
        let (a1, a2, b1) = (ip("127.1.0.11"), ip("127.1.0.12"), ip("127.2.0.11"));
        faults.cut_nodes(a1, a2);
        assert!(faults.link(a1, a2).cut && faults.link(a2, a1).cut);
        assert!(!faults.link(a1, b1).cut);
        faults.heal_nodes(a1, a2);
        assert!(!faults.link(a1, a2).cut);

        faults.cut_sites(SiteId(0), SiteId(1));
        assert!(faults.link(a2, b1).cut && faults.link(b1, a1).cut);
        assert!(!faults.link(a1, a2).cut);
        faults.heal_all();
        assert_eq!(faults.link(a2, b1), LinkFaults::default());

        faults.add(
            FaultTarget::Nodes { from: a1, to: b1 },
            Fault::Delay(Duration::from_millis(5)),
        );
        faults.add(
            FaultTarget::Node(b1),
            Fault::Delay(Duration::from_millis(7)),
        );
        faults.add(FaultTarget::Node(b1), Fault::DropReplies(0.5));
        let link = faults.link(a1, b1);
        assert_eq!(link.delay, Duration::from_millis(12));
        assert_eq!(link.drop_replies, 0.5);
        assert_eq!(faults.link(b1, a1).delay, Duration::from_millis(7));
    }

    #[tokio::test]
    async fn until_cut_wakes_on_cut() {
        let faults = Faults::new(sites());
        let (a, b) = (ip("127.1.0.11"), ip("127.2.0.11"));
        let waiter = tokio::spawn({
            let faults = faults.clone();
            async move { faults.until_cut(a, b).await }
        });
        faults.add(FaultTarget::Nodes { from: b, to: a }, Fault::Cut);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        faults.isolate_node(b);
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("cut must wake the waiter")
            .unwrap();
    }
}
