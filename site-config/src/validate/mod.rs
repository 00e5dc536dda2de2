//! Raw → typed configuration, collecting every [`Problem`] on the way.
//!
//! Validation never stops early: a bad value is reported and replaced by a
//! placeholder so later checks still run. The caller discards the config if
//! any problem was reported.

mod meta;
mod nfs;
mod nodes;
mod secret;
mod tls;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;

use crate::raw::{Expected, Leaf, Lenient, RawCluster, RawConfig, RawSite, RawWan, SizeText};
use crate::site_map::overlapping_pairs;
use crate::units::{format_duration, format_size, parse_bandwidth, parse_duration, parse_size};
use crate::{ClusterConfig, ClusterSettings, Node, Problem, Site, SiteId, WanLink};

/// Maximum length of a site name.
const MAX_SITE_NAME_LEN: usize = 32;
/// Block size bounds.
const MIN_BLOCK_SIZE: u64 = 64 << 10;
const MAX_BLOCK_SIZE: u64 = 64 << 20;
const DEFAULT_BLOCK_SIZE: u64 = 4 << 20;
const DEFAULT_REPLICATION: usize = 3;

/// Collects problems.
struct Ctx<'a> {
    problems: &'a mut Vec<Problem>,
}

impl Ctx<'_> {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    /// The value of a leaf, reporting a wrong type.
    fn get<'r, T: Expected>(&mut self, key: &str, leaf: &'r Leaf<T>) -> Option<&'r T> {
        match leaf {
            None => None,
            Some(Lenient::Ok(v)) => Some(v),
            Some(Lenient::Bad(found)) => {
                self.push(
                    key,
                    format!(
                        "expected {}, found {} {}",
                        T::EXPECTED,
                        found.type_str(),
                        found
                    ),
                );
                None
            }
        }
    }

    /// A required leaf; reports it missing.
    fn require<'r, T: Expected>(
        &mut self,
        key: &str,
        leaf: &'r Leaf<T>,
        what: &str,
    ) -> Option<&'r T> {
        if leaf.is_none() {
            self.push(key, format!("missing: {what}"));
        }
        self.get(key, leaf)
    }

    /// An integer in `lo..=hi`.
    fn int_in<T: TryFrom<i64>>(&mut self, key: &str, v: i64, lo: i64, hi: i64) -> Option<T> {
        if v < lo || v > hi {
            self.push(key, format!("{v} is out of range (expected {lo}..={hi})"));
            return None;
        }
        T::try_from(v).ok()
    }

    /// A size value (string with unit, or integer bytes).
    fn size(&mut self, key: &str, v: &SizeText) -> Option<u64> {
        let parsed = match v {
            SizeText::Int(i) => u64::try_from(*i).map_err(|_| format!("size {i} is negative")),
            SizeText::Text(s) => parse_size(s),
        };
        parsed.map_err(|m| self.push(key, m)).ok()
    }
}

/// `[a-z0-9-]+`; `max` characters at most.
fn check_name(kind: &str, name: &str, max: Option<usize>) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{kind} name must not be empty"));
    }
    if let Some(max) = max {
        if name.chars().count() > max {
            return Err(format!(
                "{kind} name {name:?} is longer than {max} characters"
            ));
        }
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(format!(
            "{kind} name {name:?} may only contain lowercase letters a-z, digits 0-9 and '-'"
        ));
    }
    Ok(())
}

/// A node's name: what its TLS certificate names, so a DNS label
/// ([`check_name`]'s characters, no `-` at either end, not all digits, at
/// most 63 characters).
fn check_node_name(name: &str) -> Result<(), String> {
    check_name("node", name, Some(MAX_DNS_LABEL))?;
    if name.starts_with('-') || name.ends_with('-') {
        return Err(format!(
            "node name {name:?} must not start or end with '-' (it must be a DNS name)"
        ));
    }
    if name.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "node name {name:?} must contain a letter (it must be a DNS name)"
        ));
    }
    if name == crate::TLS_OPERATOR_NAME || name == "ca" {
        return Err(format!(
            "node name {name:?} is reserved (the TLS directory's {name}.crt is not a node's)"
        ));
    }
    Ok(())
}

/// The longest DNS label.
const MAX_DNS_LABEL: usize = 63;

/// Parse a subnet in CIDR notation (or, if `bare_ok`, a single address).
/// Host bits are reported; the truncated subnet is returned anyway.
fn parse_subnet(ctx: &mut Ctx<'_>, key: &str, s: &str, bare_ok: bool) -> Option<IpNet> {
    let net = match s.trim().parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => match s.trim().parse::<IpAddr>() {
            Ok(ip) if bare_ok => IpNet::from(ip),
            _ => {
                let also = if bare_ok { " or a single address" } else { "" };
                ctx.push(
                    key,
                    format!(
                        "cannot parse {s:?} as a subnet (expected CIDR notation such as \"10.1.0.0/16\" or \"fd00:1::/48\"{also})"
                    ),
                );
                return None;
            }
        },
    };
    if net.trunc() != net {
        ctx.push(
            key,
            format!(
                "subnet {net} has host bits set (did you mean {}?)",
                net.trunc()
            ),
        );
    }
    Some(net.trunc())
}

/// Parse `ip:port`.
fn parse_socket(ctx: &mut Ctx<'_>, key: &str, s: &str) -> Option<SocketAddr> {
    match s.trim().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            ctx.push(
                key,
                format!(
                    "cannot parse {s:?} as an address (expected ip:port, e.g. \"10.1.0.11:7100\" or \"[fd00:1::11]:7100\")"
                ),
            );
            None
        }
    }
}

/// Validate a parsed file, read from `config_file` if it came from one (its
/// directory resolves a relative `secret_file`; an inline secret makes its
/// permissions matter). Returns a best-effort config; it is only
/// meaningful if no problem was added.
pub(crate) fn validate(
    raw: RawConfig,
    config_file: Option<&Path>,
    problems: &mut Vec<Problem>,
) -> ClusterConfig {
    let mut ctx = Ctx { problems };
    let cluster_present = raw.cluster.is_some();
    if !cluster_present {
        ctx.push(
            "cluster",
            "missing [cluster] table (needs at least `name` and `secret` or `secret_file`)",
        );
    }
    let rc = raw.cluster.unwrap_or_default();
    let mut cluster = cluster_settings(&mut ctx, &rc, cluster_present, config_file);
    let sites = sites(&mut ctx, &raw.site);
    let nodes = nodes::nodes(&mut ctx, &raw.node, &sites);
    topology_checks(&mut ctx, &mut cluster, &rc, &sites, &nodes);
    let has_access_nodes = nodes.iter().any(|n| n.roles.access);
    let nfs = nfs::nfs(&mut ctx, raw.nfs.as_ref(), has_access_nodes);
    let wan = wan(&mut ctx, &raw.wan, &sites);
    let meta = meta::meta(&mut ctx, raw.meta.as_ref(), &wan);
    let timing = crate::MetaTiming::new(&meta, &wan);
    lease_against_rtt(&mut ctx, &mut cluster, &rc, timing.inter_site_rtt);
    let tls = tls::tls(&mut ctx, raw.tls.as_ref(), &nodes, config_file);
    ClusterConfig {
        cluster,
        sites,
        nodes,
        nfs,
        meta,
        wan,
        tls,
    }
}

/// A lease renewal goes through the meta-kvs leader (about two round trips
/// from a remote site): the default lease grows to 8 round trips, and a
/// lease set below 4 is refused.
fn lease_against_rtt(
    ctx: &mut Ctx<'_>,
    cluster: &mut ClusterSettings,
    rc: &RawCluster,
    rtt: Duration,
) {
    if rc.ownership_lease.is_none() {
        cluster.ownership_lease = cluster.ownership_lease.max(rtt * 8);
        if let Some(after) = cluster.auto_failover_after {
            if after < cluster.ownership_lease {
                ctx.push(
                    "cluster.auto_failover_after",
                    format!(
                        "{} is shorter than the ownership lease ({}, from the inter-site round trip)",
                        format_duration(after),
                        format_duration(cluster.ownership_lease)
                    ),
                );
            }
        }
    } else if cluster.ownership_lease < rtt * 4 {
        ctx.push(
            "cluster.ownership_lease",
            format!(
                "{} is shorter than 4 inter-site round trips ({} each): a renewal through the \
                 meta-kvs leader takes about two, so the lease would keep running out",
                format_duration(cluster.ownership_lease),
                format_duration(rtt)
            ),
        );
    }
}

/// `cluster.replication_factor`: at least 1 (default 3).
fn replication_factor(ctx: &mut Ctx<'_>, rc: &RawCluster) -> usize {
    ctx.get("cluster.replication_factor", &rc.replication_factor)
        .and_then(|&n| {
            if n < 1 {
                ctx.push(
                    "cluster.replication_factor",
                    format!("{n} is too small (at least 1 site must hold each block)"),
                );
                None
            } else {
                usize::try_from(n).ok()
            }
        })
        .unwrap_or(DEFAULT_REPLICATION)
}

/// `cluster.block_size`: a power of two within the protocol's limits.
fn block_size(ctx: &mut Ctx<'_>, rc: &RawCluster) -> u64 {
    match ctx.get("cluster.block_size", &rc.block_size) {
        None => DEFAULT_BLOCK_SIZE,
        Some(v) => match ctx.size("cluster.block_size", v) {
            None => DEFAULT_BLOCK_SIZE,
            Some(b) => {
                if !b.is_power_of_two() {
                    ctx.push(
                        "cluster.block_size",
                        format!("{b} bytes is not a power of two (e.g. \"1MiB\", \"4MiB\")"),
                    );
                } else if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&b) {
                    ctx.push(
                        "cluster.block_size",
                        format!(
                            "{} is out of range (expected {} to {})",
                            format_size(b),
                            format_size(MIN_BLOCK_SIZE),
                            format_size(MAX_BLOCK_SIZE)
                        ),
                    );
                }
                b
            }
        },
    }
}

/// `cluster.ownership_lease` and `cluster.auto_failover_after` (at least
/// the lease; `None`: no automatic failover).
fn leases(ctx: &mut Ctx<'_>, rc: &RawCluster) -> (Duration, Option<Duration>) {
    let mut ownership_lease = DEFAULT_OWNERSHIP_LEASE;
    if let Some(text) = ctx.get("cluster.ownership_lease", &rc.ownership_lease) {
        match parse_duration(text) {
            Ok(d) if (MIN_OWNERSHIP_LEASE..=MAX_OWNERSHIP_LEASE).contains(&d) => {
                ownership_lease = d;
            }
            Ok(_) => ctx.push(
                "cluster.ownership_lease",
                format!(
                    "{text:?} is out of range (expected {}s to {}s: shorter leases run out \
                     during a meta-kvs leader election; longer ones keep a lost site's files \
                     unwritable that long)",
                    MIN_OWNERSHIP_LEASE.as_secs(),
                    MAX_OWNERSHIP_LEASE.as_secs()
                ),
            ),
            Err(m) => ctx.push("cluster.ownership_lease", m),
        }
    }
    let mut auto_failover_after = None;
    if let Some(text) = ctx.get("cluster.auto_failover_after", &rc.auto_failover_after) {
        match parse_duration(text) {
            Ok(d) if d >= ownership_lease && d <= MAX_AUTO_FAILOVER_AFTER => {
                auto_failover_after = Some(d);
            }
            Ok(_) => ctx.push(
                "cluster.auto_failover_after",
                format!(
                    "{text:?} is out of range (expected the ownership lease, {}, to {}s; \
                     leave it out to never fail a site over automatically)",
                    format_duration(ownership_lease),
                    MAX_AUTO_FAILOVER_AFTER.as_secs()
                ),
            ),
            Err(m) => ctx.push("cluster.auto_failover_after", m),
        }
    }
    (ownership_lease, auto_failover_after)
}

/// `[cluster]` except `meta_voters` (which needs the nodes).
fn cluster_settings(
    ctx: &mut Ctx<'_>,
    rc: &RawCluster,
    present: bool,
    config_file: Option<&Path>,
) -> ClusterSettings {
    let name = if present {
        ctx.require("cluster.name", &rc.name, "the cluster needs a name")
    } else {
        ctx.get("cluster.name", &rc.name)
    };
    let name = name.cloned().unwrap_or_default();
    if matches!(rc.name, Some(Lenient::Ok(_))) && name.trim().is_empty() {
        ctx.push("cluster.name", "must not be empty");
    }

    let replication_factor = replication_factor(ctx, rc);
    let block_size = block_size(ctx, rc);
    let secret = secret::secret(ctx, rc, present, config_file);
    let (ownership_lease, auto_failover_after) = leases(ctx, rc);
    ClusterSettings {
        name,
        replication_factor,
        block_size,
        secret,
        meta_voters: Vec::new(),
        ownership_lease,
        auto_failover_after,
    }
}

/// The longest `cluster.auto_failover_after` accepted (a day).
const MAX_AUTO_FAILOVER_AFTER: Duration = Duration::from_secs(86_400);

/// The default `cluster.ownership_lease`.
const DEFAULT_OWNERSHIP_LEASE: Duration = Duration::from_secs(10);
/// The shortest `cluster.ownership_lease` accepted.
const MIN_OWNERSHIP_LEASE: Duration = Duration::from_secs(1);
/// The longest `cluster.ownership_lease` accepted.
const MAX_OWNERSHIP_LEASE: Duration = Duration::from_secs(600);

/// `[[site]]` tables, including the subnet overlap check.
fn sites(ctx: &mut Ctx<'_>, raw: &[RawSite]) -> Vec<Site> {
    if raw.is_empty() {
        ctx.push(
            "site",
            "no [[site]] tables (define at least one site with its subnets)",
        );
    }
    if raw.len() > usize::from(u16::MAX) + 1 {
        ctx.push(
            "site",
            format!("{} sites is too many (at most 65536)", raw.len()),
        );
    }
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    // Every parsed subnet with its (site index, subnet index) for the overlap check.
    let mut all_nets = Vec::new();
    let mut origin = Vec::new();
    for (i, rs) in raw.iter().enumerate() {
        let key = format!("site[{i}]");
        let name_key = format!("{key}.name");
        let name = ctx
            .require(&name_key, &rs.name, "every site needs a name")
            .cloned()
            .unwrap_or_default();
        if matches!(rs.name, Some(Lenient::Ok(_))) {
            if let Err(m) = check_name("site", &name, Some(MAX_SITE_NAME_LEN)) {
                ctx.push(&name_key, m);
            } else if let Some(first) = seen.get(&name) {
                ctx.push(
                    &name_key,
                    format!("duplicate site name {name:?} (also site[{first}])"),
                );
            } else {
                seen.insert(name.clone(), i);
            }
        }
        let subnets_key = format!("{key}.subnets");
        let mut subnets = Vec::new();
        let what = "list the site's subnets, e.g. [\"10.1.0.0/16\"]";
        if let Some(list) = ctx.require(&subnets_key, &rs.subnets, what) {
            if list.is_empty() {
                ctx.push(&subnets_key, format!("is empty: {what}"));
            }
            for (j, s) in list.iter().enumerate() {
                if let Some(net) = parse_subnet(ctx, &format!("{subnets_key}[{j}]"), s, false) {
                    subnets.push(net);
                    all_nets.push(net);
                    origin.push((i, j));
                }
            }
        }
        let takes_writes = ctx
            .get(&format!("{key}.takes_writes"), &rs.takes_writes)
            .copied()
            .unwrap_or(true);
        out.push(Site {
            name,
            subnets,
            takes_writes,
        });
    }
    for (later, earlier) in overlapping_pairs(&all_nets) {
        let (li, lj) = origin[later];
        let (ei, ej) = origin[earlier];
        ctx.push(
            format!("site[{li}].subnets[{lj}]"),
            format!(
                "subnet {} overlaps {} of site {:?} (site[{ei}].subnets[{ej}])",
                all_nets[later], all_nets[earlier], out[ei].name
            ),
        );
    }
    out
}

fn site_id(i: usize) -> SiteId {
    SiteId(u16::try_from(i).unwrap_or(u16::MAX))
}

/// Checks across sites and nodes: write sites need 2 cores, n fits the
/// sites, meta voters exist and have role meta.
fn topology_checks(
    ctx: &mut Ctx<'_>,
    cluster: &mut ClusterSettings,
    rc: &RawCluster,
    sites: &[Site],
    nodes: &[Node],
) {
    let mut cores = vec![0usize; sites.len()];
    for n in nodes.iter().filter(|n| n.roles.core) {
        if let Some(c) = cores.get_mut(usize::from(n.site.0)) {
            *c += 1;
        }
    }
    for (i, (s, &c)) in sites.iter().zip(&cores).enumerate() {
        if s.takes_writes && c < 2 {
            let plural = if c == 1 { "" } else { "s" };
            ctx.push(
                format!("site[{i}]"),
                format!(
                    "site {}: takes writes but has {c} core server{plural} (needs at least 2)",
                    if s.name.is_empty() {
                        format!("[{i}]")
                    } else {
                        format!("{:?}", s.name)
                    }
                ),
            );
        }
    }
    let n = cluster.replication_factor;
    if !sites.is_empty() && n > sites.len() {
        ctx.push(
            "cluster.replication_factor",
            format!("{n} is larger than the number of sites ({})", sites.len()),
        );
    } else if !sites.is_empty() && !nodes.is_empty() {
        let with_core: Vec<&str> = sites
            .iter()
            .zip(&cores)
            .filter(|(_, &c)| c > 0)
            .map(|(s, _)| s.name.as_str())
            .collect();
        if with_core.len() < n {
            ctx.push(
                "cluster.replication_factor",
                format!(
                    "{n} copies need {n} sites with core servers, but only {} site{} ha{} any ({})",
                    with_core.len(),
                    if with_core.len() == 1 { "" } else { "s" },
                    if with_core.len() == 1 { "s" } else { "ve" },
                    with_core.join(", ")
                ),
            );
        }
    }

    let key = "cluster.meta_voters";
    match ctx.get(key, &rc.meta_voters) {
        Some(list) => {
            if list.is_empty() {
                ctx.push(
                    key,
                    "is empty (list at least one node with role meta, or omit it to use every meta node)",
                );
            }
            for (j, v) in list.iter().enumerate() {
                let k = format!("{key}[{j}]");
                if list[..j].contains(v) {
                    ctx.push(k, format!("{v:?} is listed twice"));
                    continue;
                }
                match nodes.iter().find(|n| &n.name == v) {
                    None => ctx.push(k, format!("no node is named {v:?}")),
                    Some(n) if !n.roles.meta => {
                        ctx.push(k, format!("node {v:?} does not have role meta"));
                    }
                    Some(_) => cluster.meta_voters.push(v.clone()),
                }
            }
        }
        None => {
            cluster.meta_voters = nodes
                .iter()
                .filter(|n| n.roles.meta)
                .map(|n| n.name.clone())
                .collect();
            if cluster.meta_voters.is_empty() && !nodes.is_empty() && rc.meta_voters.is_none() {
                ctx.push(
                    key,
                    "no node has role meta (the metadata store needs at least one voter)",
                );
            }
        }
    }
}

/// `[[wan]]` tables.
fn wan(ctx: &mut Ctx<'_>, raw: &[RawWan], sites: &[Site]) -> Vec<WanLink> {
    let mut out = Vec::new();
    let mut pairs: HashMap<(SiteId, SiteId), usize> = HashMap::new();
    for (i, rw) in raw.iter().enumerate() {
        let key = format!("wan[{i}]");
        let bkey = format!("{key}.between");
        let mut ends = Vec::new();
        let what = "two site names, e.g. [\"a\", \"b\"]";
        if let Some(list) = ctx.require(&bkey, &rw.between, what) {
            if list.len() != 2 {
                ctx.push(
                    &bkey,
                    format!("expected {what}, found {} names", list.len()),
                );
            }
            for (j, name) in list.iter().enumerate() {
                match sites.iter().position(|s| &s.name == name) {
                    Some(p) => ends.push((name.clone(), site_id(p))),
                    None => ctx.push(format!("{bkey}[{j}]"), format!("no site is named {name:?}")),
                }
            }
            if list.len() == 2 && list[0] == list[1] {
                ctx.push(
                    &bkey,
                    format!(
                        "{:?} is listed twice (a link joins two different sites)",
                        list[0]
                    ),
                );
                ends.clear();
            }
        }
        let rtt = match ctx.get(&format!("{key}.rtt"), &rw.rtt) {
            Some(s) => parse_duration(s)
                .map_err(|m| ctx.push(format!("{key}.rtt"), m))
                .unwrap_or_default(),
            None => Duration::ZERO,
        };
        let bandwidth_bytes_per_sec = ctx
            .get(&format!("{key}.bandwidth"), &rw.bandwidth)
            .and_then(|s| {
                parse_bandwidth(s)
                    .map_err(|m| ctx.push(format!("{key}.bandwidth"), m))
                    .ok()
            });
        if let [(na, a), (nb, b)] = ends.as_slice() {
            let pair = ((*a).min(*b), (*a).max(*b));
            if let Some(first) = pairs.get(&pair) {
                ctx.push(
                    &bkey,
                    format!("duplicate link between {na:?} and {nb:?} (also wan[{first}])"),
                );
            } else {
                pairs.insert(pair, i);
            }
            out.push(WanLink {
                a: *a,
                b: *b,
                rtt,
                bandwidth_bytes_per_sec,
            });
        }
    }
    out
}
