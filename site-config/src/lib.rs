//! geonfs cluster topology: sites and their subnets, nodes, replication
//! factor, block size, meta voters, NFS export settings and emulated WAN links.
//!
//! [`ClusterConfig::load`] / [`ClusterConfig::from_toml_str`] parse the TOML
//! format documented in `geonfs.example.toml` and validate it, reporting
//! *every* problem at once ([`ConfigError::Invalid`]), each keyed by the TOML
//! path of the offending value (`node[3].address`). [`SiteMap`] maps an IP
//! address to its site.

mod raw;
mod site_map;
mod units;
mod validate;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

pub use site_map::{NoSite, SiteMap};
pub use units::{
    format_bandwidth, format_duration, format_size, parse_bandwidth, parse_duration, parse_size,
};

/// A validated cluster configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// `[cluster]`: cluster-wide settings.
    pub cluster: ClusterSettings,
    /// `[[site]]`, in file order; [`SiteId`] indexes this.
    pub sites: Vec<Site>,
    /// `[[node]]`, in file order.
    pub nodes: Vec<Node>,
    /// `[nfs]`: the NFS export.
    pub nfs: NfsSettings,
    /// `[meta]`: meta-kvs's Raft timing, as set (see [`ClusterConfig::meta_timing`]).
    pub meta: MetaSettings,
    /// `[[wan]]`: emulated WAN links between site pairs (usually empty).
    pub wan: Vec<WanLink>,
    /// `[tls]`: how nodes authenticate and encrypt calls to each other.
    pub tls: TlsSettings,
}

/// Why `path` exposes a secret (the cluster secret, a private key) to
/// others, if it does: group or others may read it.
#[cfg(unix)]
pub fn readable_by_others(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "{:?} may be read by group or others (mode {:o})",
            path.display(),
            mode & 0o777
        )
    })
}

/// Why `path` exposes a secret to others: not checked off Unix.
#[cfg(not(unix))]
pub fn readable_by_others(_path: &Path) -> Option<String> {
    None
}

/// The cluster CA's certificate inside [`TlsSettings::dir`]; each node's
/// certificate and key sit beside it as `<name>.crt` and `<name>.key`.
pub const TLS_CA_CERT_FILE: &str = "ca.crt";

/// The name in the certificate `geonfs` commands present to nodes (no
/// node may have it).
pub const TLS_OPERATOR_NAME: &str = "operator";

/// How nodes authenticate and encrypt their calls to each other (`[tls]`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsSettings {
    /// The directory holding `ca.crt` and each node's `<name>.crt` and
    /// `<name>.key` (relative paths resolved against the config file's
    /// directory); `None` is plain TCP (`insecure = true`).
    pub dir: Option<PathBuf>,
    /// Plain TCP accepted between nodes at non-loopback addresses.
    pub insecure_beyond_loopback: bool,
}

/// Cluster-wide settings (`[cluster]`).
#[derive(Clone, PartialEq)]
pub struct ClusterSettings {
    /// Cluster name.
    pub name: String,
    /// Number of sites holding a copy of every block (n).
    pub replication_factor: usize,
    /// Block size in bytes (a power of two, 64KiB..=64MiB).
    pub block_size: u64,
    /// Shared secret presented on every inter-node call (at least 16 bytes).
    pub secret: String,
    /// Names of the initial Raft voters (nodes with role meta).
    pub meta_voters: Vec<String>,
    /// How long one renewal of an access server's ownership lease keeps
    /// it valid (`cluster.ownership_lease`): an owner that cannot renew
    /// stops writing after this long.
    pub ownership_lease: Duration,
    /// Fail a silent site over automatically after this long
    /// (`cluster.auto_failover_after`; `None`, the default: never).
    pub auto_failover_after: Option<Duration>,
}

impl fmt::Debug for ClusterSettings {
    /// Like a derived `Debug`, but never prints the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("name", &self.name)
            .field("replication_factor", &self.replication_factor)
            .field("block_size", &self.block_size)
            .field("secret", &"<redacted>")
            .field("meta_voters", &self.meta_voters)
            .field("ownership_lease", &self.ownership_lease)
            .field("auto_failover_after", &self.auto_failover_after)
            .finish()
    }
}

/// A site (`[[site]]`): a data centre identified by its subnets.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// Site name (`[a-z0-9-]+`, at most 32 characters).
    pub name: String,
    /// Subnets whose addresses belong to this site; disjoint from every other subnet.
    pub subnets: Vec<IpNet>,
    /// Whether clients in this site may write (needs at least 2 core nodes).
    pub takes_writes: bool,
}

/// Index of a site in [`ClusterConfig::sites`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiteId(pub u16);

impl fmt::Display for SiteId {
    /// `site#<index>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "site#{}", self.0)
    }
}

/// A server process (`[[node]]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Node name (`[a-z0-9-]+`), unique.
    pub name: String,
    /// gRPC listen address (port 0 = pick a free port).
    pub address: SocketAddr,
    /// The site whose subnets contain `address`.
    pub site: SiteId,
    /// The services this node runs.
    pub roles: Roles,
    /// Data directory; always present for core and meta nodes.
    pub data_dir: Option<PathBuf>,
    /// Block store capacity in bytes; 0 if not a core node.
    pub capacity: u64,
    /// Prometheus `/metrics` listen address, if any.
    pub metrics_address: Option<SocketAddr>,
}

/// The services a node runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Roles {
    /// Block store (core server).
    pub core: bool,
    /// Raft metadata KV member.
    pub meta: bool,
    /// NFS access server.
    pub access: bool,
}

/// `[meta]` as written: each `None` is derived (see [`MetaTiming`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetaSettings {
    /// The longest round trip between two sites.
    pub inter_site_rtt: Option<Duration>,
    /// Raft's tick.
    pub tick: Option<Duration>,
    /// Raft's election timeout.
    pub election_timeout: Option<Duration>,
    /// How often a Raft leader sends heartbeats.
    pub heartbeat_interval: Option<Duration>,
}

/// Meta-kvs's Raft timing, each value set in `[meta]` or derived from the
/// longest round trip between sites: `inter_site_rtt`, else the longest
/// `[[wan]]` rtt, else 0 (sites on one LAN). Over a slow link an election
/// needs a few round trips (pre-vote, vote), so the timeouts grow with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaTiming {
    /// The longest round trip between two sites.
    pub inter_site_rtt: Duration,
    /// Raft's tick: `max(100ms, rtt / 4)`.
    pub tick: Duration,
    /// Raft's election timeout: `max(1s, 5 × rtt, 5 × heartbeat)`.
    pub election_timeout: Duration,
    /// Heartbeats: `max(2 × tick, rtt)`.
    pub heartbeat_interval: Duration,
}

impl MetaTiming {
    /// The timing of `settings` over links of `wan`.
    pub fn new(settings: &MetaSettings, wan: &[WanLink]) -> Self {
        let rtt = settings
            .inter_site_rtt
            .unwrap_or_else(|| wan.iter().map(|w| w.rtt).max().unwrap_or_default());
        let tick = settings
            .tick
            .unwrap_or_else(|| (rtt / 4).max(Duration::from_millis(100)));
        let heartbeat_interval = settings
            .heartbeat_interval
            .unwrap_or_else(|| (tick * 2).max(rtt));
        let election_timeout = settings.election_timeout.unwrap_or_else(|| {
            Duration::from_secs(1)
                .max(rtt * 5)
                .max(heartbeat_interval * 5)
        });
        MetaTiming {
            inter_site_rtt: rtt,
            tick,
            election_timeout,
            heartbeat_interval,
        }
    }

    /// The election timeout in ticks (at least 2).
    pub fn election_ticks(&self) -> usize {
        ticks(self.election_timeout, self.tick).max(2)
    }

    /// The heartbeat interval in ticks (at least 1, below the election's).
    pub fn heartbeat_ticks(&self) -> usize {
        ticks(self.heartbeat_interval, self.tick)
            .max(1)
            .min(self.election_ticks() - 1)
    }

    /// How long a call to meta-kvs may take, all attempts included:
    /// `max(10s, 10 × rtt)`.
    pub fn call_deadline(&self) -> Duration {
        Duration::from_secs(10).max(self.inter_site_rtt * 10)
    }

    /// How long one attempt of a call waits for its answer: `max(3s,
    /// 4 × rtt)` (a commit from a remote client takes two round trips).
    pub fn call_attempt(&self) -> Duration {
        Duration::from_secs(3).max(self.inter_site_rtt * 4)
    }
}

/// `d` in whole ticks, rounded to the nearest.
fn ticks(d: Duration, tick: Duration) -> usize {
    let tick = tick.as_nanos().max(1);
    usize::try_from((d.as_nanos() + tick / 2) / tick).unwrap_or(usize::MAX)
}

impl ClusterConfig {
    /// Meta-kvs's Raft timing (see [`MetaTiming`]).
    pub fn meta_timing(&self) -> MetaTiming {
        MetaTiming::new(&self.meta, &self.wan)
    }
}

/// NFS export settings (`[nfs]`).
#[derive(Debug, Clone, PartialEq)]
pub struct NfsSettings {
    /// Export path clients mount, e.g. `/geonfs`.
    pub export_path: String,
    /// NFS + MOUNT port (0 = pick a free port).
    pub port: u16,
    /// Answer portmapper GETPORT on port 111 when it can be bound.
    pub portmapper: bool,
    /// Client subnets allowed to mount and call; empty admits nobody
    /// (validation refuses an empty list where there are access nodes:
    /// everyone is written `["0.0.0.0/0", "::/0"]`).
    pub allowed_clients: Vec<IpNet>,
    /// Export read-only.
    pub read_only: bool,
    /// Map uid/gid 0 to the anonymous ids (on by default).
    pub root_squash: bool,
    /// Client subnets whose uid/gid 0 is not squashed (hypervisor hosts:
    /// QEMU and ESXi write disk images as root).
    pub no_root_squash: Vec<IpNet>,
    /// Anonymous uid.
    pub anon_uid: u32,
    /// Anonymous gid.
    pub anon_gid: u32,
    /// How long an access server trusts an inode it read from meta-kvs
    /// (changes made through another access server may take this long to
    /// show); zero reads meta-kvs on every call.
    pub attribute_cache: Duration,
    /// A connection with no call running that sends nothing for this long
    /// is closed (clients reconnect when they need to).
    pub idle_timeout: Duration,
    /// Connections an access server holds at once; more are refused.
    pub max_connections: usize,
    /// Connections held at once from one client address.
    pub max_connections_per_client: usize,
}

impl Default for NfsSettings {
    /// The defaults of an absent `[nfs]` table.
    fn default() -> Self {
        NfsSettings {
            export_path: "/geonfs".to_string(),
            port: 2049,
            portmapper: true,
            allowed_clients: Vec::new(),
            read_only: false,
            root_squash: true,
            no_root_squash: Vec::new(),
            anon_uid: 65534,
            anon_gid: 65534,
            attribute_cache: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(360),
            max_connections: 4096,
            max_connections_per_client: 1024,
        }
    }
}

/// An emulated WAN link between two sites (`[[wan]]`).
#[derive(Debug, Clone, PartialEq)]
pub struct WanLink {
    /// One end.
    pub a: SiteId,
    /// The other end (different from `a`).
    pub b: SiteId,
    /// Round-trip time to add.
    pub rtt: Duration,
    /// Bandwidth limit in bytes per second, if any.
    pub bandwidth_bytes_per_sec: Option<u64>,
}

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// TOML path of the offending value, e.g. `node[3].address`.
    pub key: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for Problem {
    /// `{key}: {message}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(thiserror::Error, Debug)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The config file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML (or a table has the wrong type); the
    /// message includes line and column.
    #[error("{message}")]
    Syntax {
        /// toml's message.
        message: String,
    },
    /// The file parsed but has problems; every problem is listed.
    #[error("{}", ProblemList(.0))]
    Invalid(Vec<Problem>),
}

/// Formats problems one per line, after a count.
struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "invalid configuration: {n} problem{}",
            if n == 1 { "" } else { "s" }
        )?;
        for p in self.0 {
            write!(f, "\n{p}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// The problems, if this is [`ConfigError::Invalid`]; empty otherwise.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(p) => p,
            _ => &[],
        }
    }
}

impl ClusterConfig {
    /// Parse and validate a config. A relative `secret_file` is resolved
    /// against the current directory.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::parse_in(text, None)
    }

    /// Read, parse and validate a config file. A relative `secret_file` is
    /// resolved against the config file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_in(&text, Some(path)).map_err(|e| match e {
            ConfigError::Syntax { message } => ConfigError::Syntax {
                message: format!("{}: {message}", path.display()),
            },
            other => other,
        })
    }

    fn parse_in(text: &str, config_file: Option<&Path>) -> Result<Self, ConfigError> {
        let (raw, unknown) = raw::parse(text).map_err(|message| ConfigError::Syntax {
            message: message.trim_end().to_string(),
        })?;
        let mut problems: Vec<Problem> = unknown
            .into_iter()
            .map(|key| Problem {
                message: raw::unknown_key_message(&key),
                key,
            })
            .collect();
        let config = validate::validate(raw, config_file, &mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The subnet → site lookup for this config.
    pub fn site_map(&self) -> SiteMap {
        let sites: Vec<(SiteId, Vec<IpNet>)> = self
            .sites
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    SiteId(u16::try_from(i).unwrap_or(u16::MAX)),
                    s.subnets.clone(),
                )
            })
            .collect();
        // A validated config has no overlaps; a hand-built one with overlaps
        // gets an arbitrary (but non-panicking) choice among them.
        SiteMap::new(&sites).unwrap_or_else(|_| SiteMap::build_unchecked(&sites))
    }

    /// The site whose subnets contain `ip` (linear scan; use [`SiteMap`] on hot paths).
    pub fn site_of(&self, ip: IpAddr) -> Result<SiteId, NoSite> {
        let canonical = ip.to_canonical();
        self.sites
            .iter()
            .position(|s| s.subnets.iter().any(|n| n.contains(&canonical)))
            .and_then(|i| u16::try_from(i).ok())
            .map(SiteId)
            .ok_or(NoSite { ip })
    }

    /// The site with this id.
    ///
    /// # Panics
    /// If `id` does not come from this config.
    pub fn site(&self, id: SiteId) -> &Site {
        &self.sites[usize::from(id.0)]
    }

    /// The id of the site with this name.
    pub fn site_by_name(&self, name: &str) -> Option<SiteId> {
        self.sites
            .iter()
            .position(|s| s.name == name)
            .and_then(|i| u16::try_from(i).ok())
            .map(SiteId)
    }

    /// The node with this name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The WAN link between two sites, in either order (`None` if `a == b`).
    pub fn wan_between(&self, a: SiteId, b: SiteId) -> Option<&WanLink> {
        if a == b {
            return None;
        }
        self.wan
            .iter()
            .find(|w| (w.a == a && w.b == b) || (w.a == b && w.b == a))
    }

    /// Serialise to the TOML format; [`ClusterConfig::from_toml_str`] reads it
    /// back to an equal config. The secret is written inline as `secret`.
    pub fn to_toml_string(&self) -> String {
        let raw = raw::to_raw(self);
        match toml::to_string(&raw) {
            Ok(s) => s,
            Err(e) => format!("# cannot serialise configuration: {e}\n"),
        }
    }
}
