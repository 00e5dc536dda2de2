//! The in-process test cluster.
//!
//! Addresses: site `s` (0-based, named `a`, `b`, …) is `127.{s+1}.0.0/16`;
//! access servers are `127.{s+1}.0.{1..}`, core servers `127.{s+1}.0.{11..}`,
//! meta voters `127.{s+1}.0.{21..}`. Every node listens on port 0; the ports
//! are read back and written into the cluster's [`ClusterConfig`] before any
//! node starts, so every node knows every other's address. A restarted node
//! binds the same address and port again.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use geonfs::node::{NodeOptions, RunningNode};
use geonfs_block_manager::ReplicatorOptions;
use geonfs_meta_kvs::{MetaClient, MetaOptions};
use geonfs_rpc::{Network, NetworkOptions, RpcChannel, WanParams};
use geonfs_site_config::{ClusterConfig, SiteId};

/// The shape of a test cluster.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Number of sites (1..=9).
    pub sites: u8,
    /// Core servers per site.
    pub cores_per_site: u8,
    /// Meta-kvs voters per site.
    pub meta_per_site: u8,
    /// Access servers per site.
    pub access_per_site: u8,
    /// Replication factor n (defaults to the number of sites, at most 3).
    pub replication_factor: Option<usize>,
    /// Block size in bytes.
    pub block_size: u64,
    /// Emulated WAN between every pair of sites from the start.
    pub wan: WanParams,
    /// Options of every meta-kvs member; `None`: from the configuration
    /// (`[meta]`, and the WAN's round trip).
    pub meta_options: Option<MetaOptions>,
    /// How many meta nodes are initial voters (`None` = all). The voters are
    /// the first ones in round-robin site order (`a-meta-1`, `b-meta-1`, …,
    /// `a-meta-2`, …); the others ("spares") start as non-members and wait
    /// to be added by a membership change.
    pub meta_voters: Option<usize>,
    /// Options of every core's geo-replication worker; `None` leaves the
    /// workers stopped (writes still queue jobs, nothing ships or trims).
    pub replication: Option<ReplicatorOptions>,
    /// The access servers' `[nfs] attribute_cache` (`None`: the default).
    pub attribute_cache: Option<Duration>,
    /// `[cluster] ownership_lease`; `None`: the default.
    pub ownership_lease: Option<Duration>,
    /// `[cluster] auto_failover_after`; `None`: off (the default).
    pub auto_failover_after: Option<Duration>,
    /// Each core's block store capacity in bytes.
    pub core_capacity: u64,
    /// Nodes talk TLS with certificates from a CA made for the cluster
    /// (the default, as in production); `false`: `[tls] insecure = true`.
    pub tls: bool,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            sites: 3,
            cores_per_site: 3,
            meta_per_site: 1,
            access_per_site: 1,
            replication_factor: None,
            block_size: 4 * 1024 * 1024,
            core_capacity: 1 << 30,
            wan: WanParams::default(),
            meta_options: None,
            meta_voters: None,
            replication: Some(ReplicatorOptions::default()),
            attribute_cache: None,
            ownership_lease: None,
            auto_failover_after: None,
            tls: true,
        }
    }
}

/// The secret test clusters use.
pub const TEST_SECRET: &str = "geonfs-test-cluster-secret";

/// Builds a [`TestCluster`] step by step.
#[derive(Clone, Debug, Default)]
pub struct ClusterBuilder {
    spec: ClusterSpec,
}

impl ClusterBuilder {
    /// Number of sites.
    pub fn sites(mut self, sites: u8) -> Self {
        self.spec.sites = sites;
        self
    }
    /// Core servers per site.
    pub fn cores_per_site(mut self, cores: u8) -> Self {
        self.spec.cores_per_site = cores;
        self
    }
    /// Meta voters per site.
    pub fn meta_per_site(mut self, meta: u8) -> Self {
        self.spec.meta_per_site = meta;
        self
    }
    /// Access servers per site.
    pub fn access_per_site(mut self, access: u8) -> Self {
        self.spec.access_per_site = access;
        self
    }
    /// Replication factor n.
    pub fn replication_factor(mut self, n: usize) -> Self {
        self.spec.replication_factor = Some(n);
        self
    }
    /// Block size in bytes.
    pub fn block_size(mut self, bytes: u64) -> Self {
        self.spec.block_size = bytes;
        self
    }
    /// Each core's block store capacity (default 1 GiB).
    pub fn core_capacity(mut self, bytes: u64) -> Self {
        self.spec.core_capacity = bytes;
        self
    }
    /// Emulated WAN between every pair of sites.
    pub fn wan(mut self, params: WanParams) -> Self {
        self.spec.wan = params;
        self
    }
    /// Options of every meta-kvs member (e.g. a small compaction threshold).
    pub fn meta_options(mut self, options: MetaOptions) -> Self {
        self.spec.meta_options = Some(options);
        self
    }
    /// Only the first `n` meta nodes (round-robin over sites) are initial
    /// voters; the rest start as spares (see [`ClusterSpec::meta_voters`]).
    pub fn meta_voters(mut self, n: usize) -> Self {
        self.spec.meta_voters = Some(n);
        self
    }
    /// Options of every core's geo-replication worker (e.g. a short
    /// takeover timeout).
    pub fn replication(mut self, options: ReplicatorOptions) -> Self {
        self.spec.replication = Some(options);
        self
    }
    /// No geo-replication worker runs (jobs queue, nothing ships or trims):
    /// for tests of the in-site write path alone.
    pub fn without_replication(mut self) -> Self {
        self.spec.replication = None;
        self
    }
    /// The access servers' inode cache TTL (`[nfs] attribute_cache`; zero
    /// caches nothing).
    pub fn attribute_cache(mut self, ttl: Duration) -> Self {
        self.spec.attribute_cache = Some(ttl);
        self
    }
    /// The access servers' ownership lease (`[cluster] ownership_lease`).
    pub fn ownership_lease(mut self, lease: Duration) -> Self {
        self.spec.ownership_lease = Some(lease);
        self
    }
    /// Fail silent sites over automatically after `after`
    /// (`[cluster] auto_failover_after`).
    pub fn auto_failover_after(mut self, after: Duration) -> Self {
        self.spec.auto_failover_after = Some(after);
        self
    }
    /// Plain TCP between nodes (`[tls] insecure = true`) instead of TLS.
    pub fn plain_tcp(mut self) -> Self {
        self.spec.tls = false;
        self
    }
    /// Starts the cluster.
    pub async fn start(self) -> anyhow::Result<TestCluster> {
        TestCluster::start(self.spec).await
    }
}

/// A whole geonfs cluster in this process.
pub struct TestCluster {
    config: Arc<ClusterConfig>,
    network: Network,
    nodes: BTreeMap<String, Option<RunningNode>>,
    data: tempfile::TempDir,
    options: NodeOptions,
}

/// How long [`TestCluster::restart_node`] waits for a killed node's
/// addresses to be free again.
const RESTART_BIND_WAIT: Duration = Duration::from_secs(10);

/// Whether `err` comes from an address still in use.
fn address_in_use(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
    })
}

/// The name of site `index` (0 → `a`).
pub fn site_name(index: u8) -> String {
    char::from(b'a' + index).to_string()
}

struct PlannedNode {
    name: String,
    ip: Ipv4Addr,
    role: &'static str,
}

fn plan(spec: &ClusterSpec) -> Vec<PlannedNode> {
    let mut nodes = Vec::new();
    for s in 0..spec.sites {
        let site = site_name(s);
        let mut add = |role: &'static str, count: u8, first_host: u8| {
            for i in 1..=count {
                nodes.push(PlannedNode {
                    name: format!("{site}-{role}-{i}"),
                    ip: Ipv4Addr::new(127, s + 1, 0, first_host + i - 1),
                    role,
                });
            }
        };
        add("access", spec.access_per_site, 1);
        add("core", spec.cores_per_site, 11);
        add("meta", spec.meta_per_site, 21);
    }
    nodes
}

/// Every meta node's name in round-robin site order: `a-meta-1`,
/// `b-meta-1`, …, `a-meta-2`, ….
pub fn meta_order(spec: &ClusterSpec) -> Vec<String> {
    (1..=spec.meta_per_site)
        .flat_map(|i| (0..spec.sites).map(move |s| format!("{}-meta-{i}", site_name(s))))
        .collect()
}

/// Where a test cluster keeps its CA and certificates, in its data directory.
pub const TEST_TLS_DIR: &str = "tls";

fn config_text(
    spec: &ClusterSpec,
    nodes: &[(PlannedNode, SocketAddr)],
    data: &std::path::Path,
) -> String {
    let n = spec
        .replication_factor
        .unwrap_or_else(|| usize::from(spec.sites).min(3));
    let mut text = format!(
        "[cluster]\nname = \"test\"\nreplication_factor = {n}\nblock_size = \"{}B\"\nsecret = \"{TEST_SECRET}\"\n\n",
        spec.block_size
    );
    if let Some(lease) = spec.ownership_lease {
        text += &format!(
            "ownership_lease = \"{}\"\n\n",
            geonfs_site_config::format_duration(lease)
        );
    }
    if let Some(after) = spec.auto_failover_after {
        text += &format!(
            "auto_failover_after = \"{}\"\n\n",
            geonfs_site_config::format_duration(after)
        );
    }
    if let Some(count) = spec.meta_voters {
        let voters: Vec<String> = meta_order(spec)
            .into_iter()
            .take(count)
            .map(|name| format!("{name:?}"))
            .collect();
        text += &format!("meta_voters = [{}]\n\n", voters.join(", "));
    }
    if spec.tls {
        let dir = data.join(TEST_TLS_DIR).display().to_string();
        text += &format!("[tls]\ndir = {dir:?}\n\n");
    } else {
        text += "[tls]\ninsecure = true\n\n";
    }
    // Every test process has its own access servers: NFS on a free port,
    // no portmapper (port 111 is one per address).
    // Clients are on loopback and run as root, as hypervisors do.
    text += "[nfs]\nport = 0\nportmapper = false\n";
    text += "allowed_clients = [\"127.0.0.0/8\"]\nno_root_squash = [\"127.0.0.0/8\"]\n";
    if let Some(ttl) = spec.attribute_cache {
        text += &format!(
            "attribute_cache = \"{}\"\n",
            geonfs_site_config::format_duration(ttl)
        );
    }
    text += "\n";
    // The emulated WAN is set on the network, not in [[wan]]: tell the
    // configuration its round trip, so meta-kvs's timing follows it.
    if !spec.wan.rtt.is_zero() {
        text += &format!(
            "[meta]\ninter_site_rtt = \"{}\"\n\n",
            geonfs_site_config::format_duration(spec.wan.rtt)
        );
    }
    for s in 0..spec.sites {
        text += &format!(
            "[[site]]\nname = \"{}\"\nsubnets = [\"127.{}.0.0/16\"]\ntakes_writes = {}\n\n",
            site_name(s),
            s + 1,
            spec.cores_per_site >= 2
        );
    }
    for (node, addr) in nodes {
        text += &format!(
            "[[node]]\nname = \"{}\"\naddress = \"{addr}\"\nroles = [\"{}\"]\n",
            node.name, node.role
        );
        if node.role != "access" {
            text += &format!("data_dir = \"{}\"\n", data.join(&node.name).display());
        }
        if node.role == "core" {
            text += &format!("capacity = {}\n", spec.core_capacity);
        }
        text += "\n";
    }
    text
}

impl TestCluster {
    /// A builder with the default shape (3 sites × 3 cores, 1 meta voter and
    /// 1 access server per site).
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// Starts a cluster of shape `spec`.
    pub async fn start(spec: ClusterSpec) -> anyhow::Result<Self> {
        if spec.sites == 0 || spec.sites > 9 {
            bail!("a test cluster has 1 to 9 sites, not {}", spec.sites);
        }
        let data = tempfile::Builder::new()
            .prefix("geonfs-test-")
            .tempdir()
            .context("cannot create the cluster's data directory")?;
        let mut bound = Vec::new();
        for node in plan(&spec) {
            let addr = SocketAddr::new(IpAddr::V4(node.ip), 0);
            let listener = geonfs_rpc::server::bind(addr).await?;
            let addr = listener.local_addr()?;
            bound.push((node, addr, listener));
        }
        let planned: Vec<(PlannedNode, SocketAddr)> = bound
            .iter()
            .map(|(node, addr, _)| {
                (
                    PlannedNode {
                        name: node.name.clone(),
                        ip: node.ip,
                        role: node.role,
                    },
                    *addr,
                )
            })
            .collect();
        let mut identities: Vec<&str> = planned.iter().map(|(n, _)| n.name.as_str()).collect();
        identities.push(geonfs_rpc::tls::OPERATOR);
        if spec.tls {
            let dir = data.path().join(TEST_TLS_DIR);
            geonfs_rpc::tls::init_ca(&dir)?;
            for name in &identities {
                geonfs_rpc::tls::issue(&dir, name, false)?;
            }
        }
        let config = Arc::new(
            ClusterConfig::from_toml_str(&config_text(&spec, &planned, data.path()))
                .context("the test cluster's own configuration is invalid")?,
        );
        let mut options = NetworkOptions::from_config(&config, &identities);
        options.always_emulate = true;
        options.call_timeout = Duration::from_secs(10);
        // A TCP connect and a TLS handshake each take a round trip.
        let rtt = config.meta_timing().inter_site_rtt;
        options.connect_timeout = Duration::from_secs(2) + 2 * rtt;
        let network = Network::new(options)?;
        for a in 0..spec.sites {
            for b in (a + 1)..spec.sites {
                network.set_wan(SiteId(u16::from(a)), SiteId(u16::from(b)), spec.wan);
            }
        }
        let options = NodeOptions {
            meta: spec.meta_options.clone(),
            replication: spec.replication.clone(),
        };
        let mut nodes = BTreeMap::new();
        for (node, _, listener) in bound {
            let running = RunningNode::start(
                config.clone(),
                &node.name,
                network.clone(),
                listener,
                options.clone(),
            )
            .await
            .with_context(|| format!("starting {}", node.name))?;
            nodes.insert(node.name, Some(running));
        }
        Ok(TestCluster {
            config,
            network,
            nodes,
            data,
            options,
        })
    }

    /// The cluster's configuration (with the real ports).
    pub fn config(&self) -> &Arc<ClusterConfig> {
        &self.config
    }

    /// The network every node of the cluster uses (faults, WAN).
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// Where the nodes keep their data.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data.path()
    }

    /// Every node's name, running or not.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    /// The node's configured address.
    pub fn addr(&self, name: &str) -> anyhow::Result<SocketAddr> {
        Ok(self
            .config
            .node(name)
            .with_context(|| format!("no node {name}"))?
            .address)
    }

    /// The id of the site named `name`.
    pub fn site(&self, name: &str) -> anyhow::Result<SiteId> {
        self.config
            .site_by_name(name)
            .with_context(|| format!("no site {name}"))
    }

    /// Whether the node is running.
    pub fn is_running(&self, name: &str) -> bool {
        matches!(self.nodes.get(name), Some(Some(_)))
    }

    /// The running node, for its identity.
    pub fn node(&self, name: &str) -> anyhow::Result<&RunningNode> {
        match self.nodes.get(name) {
            Some(Some(node)) => Ok(node),
            Some(None) => bail!("node {name} is not running"),
            None => bail!("no node {name}"),
        }
    }

    /// The NFS address of access node `name` once its export is connected
    /// to meta-kvs (within `deadline`).
    pub async fn ready_access(&self, name: &str, deadline: Duration) -> anyhow::Result<SocketAddr> {
        let access = self
            .node(name)?
            .access()
            .with_context(|| format!("{name} has no access server"))?;
        tokio::time::timeout(deadline, access.wait_ready())
            .await
            .with_context(|| format!("{name} did not connect to meta-kvs within {deadline:?}"))?;
        Ok(access.nfs_addr())
    }

    /// A channel from node `from` to node `to` (through WAN and faults).
    pub fn channel(&self, from: &str, to: &str) -> anyhow::Result<RpcChannel> {
        let from = self.addr(from)?.ip();
        Ok(self.network.channel(from, self.addr(to)?)?)
    }

    fn take(&mut self, name: &str) -> anyhow::Result<RunningNode> {
        match self.nodes.get_mut(name) {
            Some(slot) => slot
                .take()
                .with_context(|| format!("node {name} is not running")),
            None => bail!("no node {name}"),
        }
    }

    /// Stops a node gracefully.
    pub async fn stop_node(&mut self, name: &str) -> anyhow::Result<()> {
        Ok(self.take(name)?.stop().await?)
    }

    /// Kills a node abruptly (every connection dropped, nothing flushed).
    pub async fn kill_node(&mut self, name: &str) -> anyhow::Result<()> {
        Ok(self.take(name)?.kill().await?)
    }

    /// Starts a stopped or killed node again on the same address and port.
    pub async fn restart_node(&mut self, name: &str) -> anyhow::Result<()> {
        if self.is_running(name) {
            bail!("node {name} is running");
        }
        // A node killed in this process closes its listening sockets when
        // its tasks next run, not at once: a restart on the same port polls
        // (for at most RESTART_BIND_WAIT) while the address is still taken.
        let deadline = std::time::Instant::now() + RESTART_BIND_WAIT;
        let running = loop {
            let started = RunningNode::bind_and_start(
                self.config.clone(),
                name,
                self.network.clone(),
                self.options.clone(),
            )
            .await
            .with_context(|| format!("restarting {name}"));
            match started {
                Err(err) if address_in_use(&err) && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => break other?,
            }
        };
        self.nodes.insert(name.to_string(), Some(running));
        Ok(())
    }

    /// Waits (at most `deadline`) until core `name` has caught its
    /// ownership fences up with a peer of its site and admits requests
    /// carrying an epoch again (a core does that after every start).
    pub async fn wait_fences_caught_up(
        &self,
        name: &str,
        deadline: Duration,
    ) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let store = self
            .node(name)?
            .core()
            .context("a core node")?
            .store()
            .clone();
        while !store.fences_synced() {
            if started.elapsed() > deadline {
                bail!("core {name} did not catch its fences up within {deadline:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// The names of every meta node, running or not.
    pub fn meta_names(&self) -> Vec<String> {
        self.config
            .nodes
            .iter()
            .filter(|n| n.roles.meta)
            .map(|n| n.name.clone())
            .collect()
    }

    /// Every core node's name, running or not.
    pub fn core_names(&self) -> Vec<String> {
        self.config
            .nodes
            .iter()
            .filter(|n| n.roles.core)
            .map(|n| n.name.clone())
            .collect()
    }

    /// A meta-kvs client calling from node `from` to every meta node.
    pub fn meta_client(&self, from: &str) -> anyhow::Result<MetaClient> {
        let from = self.addr(from)?.ip();
        Ok(MetaClient::for_cluster(
            self.network.clone(),
            from,
            &self.config,
        ))
    }

    /// The running meta member that says it leads, with the highest term
    /// (an isolated old leader may still believe it leads a lower term).
    pub async fn meta_leader(&self) -> Option<String> {
        let mut best: Option<(u64, String)> = None;
        for name in self.meta_names() {
            let Ok(node) = self.node(&name) else { continue };
            let Some(member) = node.meta() else { continue };
            let Ok(status) = member.status().await else {
                continue;
            };
            if status.leader_id == status.id && best.as_ref().is_none_or(|(t, _)| status.term > *t)
            {
                best = Some((status.term, name));
            }
        }
        best.map(|(_, name)| name)
    }

    /// Cuts both directions between two nodes.
    pub fn cut_nodes(&self, a: &str, b: &str) -> anyhow::Result<()> {
        self.network
            .faults()
            .cut_nodes(self.addr(a)?.ip(), self.addr(b)?.ip());
        Ok(())
    }

    /// Cuts a node off from every other node.
    pub fn isolate_node(&self, name: &str) -> anyhow::Result<()> {
        self.network.faults().isolate_node(self.addr(name)?.ip());
        Ok(())
    }

    /// Cuts both directions between two sites.
    pub fn cut_sites(&self, a: &str, b: &str) -> anyhow::Result<()> {
        self.network
            .faults()
            .cut_sites(self.site(a)?, self.site(b)?);
        Ok(())
    }

    /// Skews the wall clock of site `site`'s access servers (their block
    /// versions) by `micros`; negative is behind.
    pub fn set_clock_skew(&self, site: &str, micros: i64) -> anyhow::Result<()> {
        self.network
            .faults()
            .set_clock_skew(self.site(site)?, micros);
        Ok(())
    }

    /// Removes every fault.
    pub fn heal_all(&self) {
        self.network.faults().heal_all();
    }

    /// Sets the emulated WAN between two sites.
    pub fn set_wan(&self, a: &str, b: &str, params: WanParams) -> anyhow::Result<()> {
        self.network.set_wan(self.site(a)?, self.site(b)?, params);
        Ok(())
    }

    /// Stops every node gracefully and removes the data directory.
    ///
    /// The nodes stop at the same time: a core waits out a grace period
    /// for the replication streams other cores keep open to it, and one
    /// node after another would wait it out once per core.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.end(true).await
    }

    /// Kills every node (as [`TestCluster::kill_node`]: no grace period)
    /// and removes the data directory: the end of a run whose state was
    /// checked already.
    pub async fn kill_all(self) -> anyhow::Result<()> {
        self.end(false).await
    }

    async fn end(mut self, graceful: bool) -> anyhow::Result<()> {
        let running: Vec<RunningNode> = std::mem::take(&mut self.nodes)
            .into_values()
            .flatten()
            .collect();
        let ends = futures::future::join_all(running.into_iter().map(|node| async move {
            if graceful {
                node.stop().await
            } else {
                node.kill().await
            }
        }))
        .await;
        let first_error = ends
            .into_iter()
            .find_map(Result::err)
            .map(anyhow::Error::from);
        let path = self.data.path().to_path_buf();
        self.data
            .close()
            .with_context(|| format!("cannot remove {}", path.display()))?;
        match first_error {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_in_use_is_told_apart_through_the_context() {
        let taken = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let err = anyhow::Error::new(taken).context("restarting a-access-1");
        assert!(address_in_use(&err));
        let refused = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let err = anyhow::Error::new(refused).context("restarting a-access-1");
        assert!(!address_in_use(&err));
        assert!(!address_in_use(&anyhow::anyhow!("Address already in use")));
    }
}
