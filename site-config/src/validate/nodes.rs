//! `[[node]]` tables: names, addresses and their sites, roles, data
//! directories, capacities and metrics addresses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;

use super::{check_node_name, parse_socket, site_id, Ctx};
use crate::raw::{Leaf, Lenient, RawNode};
use crate::site_map::SiteMap;
use crate::{Node, Roles, Site, SiteId};

/// Where an address or directory was first used: `node[0] "a-core-1"`.
fn owner(i: usize, name: &str) -> String {
    format!("node[{i}] {name:?}")
}

/// The name of raw node `i` as written (empty if absent or not a string).
fn raw_name(raw: &[RawNode], i: usize) -> &str {
    match raw.get(i).and_then(|n| n.name.as_ref()) {
        Some(Lenient::Ok(name)) => name,
        _ => "",
    }
}

/// `[[node]]` tables.
pub(super) fn nodes(ctx: &mut Ctx<'_>, raw: &[RawNode], sites: &[Site]) -> Vec<Node> {
    if raw.is_empty() {
        ctx.push("node", "no [[node]] tables (define the cluster's servers)");
    }
    let map_input: Vec<(SiteId, Vec<IpNet>)> = sites
        .iter()
        .enumerate()
        .map(|(i, s)| (site_id(i), s.subnets.clone()))
        .collect();
    let mut seen = Seen {
        raw,
        sites,
        map: SiteMap::build_unchecked(&map_input),
        names: HashMap::new(),
        addresses: HashMap::new(),
        dirs: HashMap::new(),
    };
    let mut metrics = Vec::new();
    let mut out = Vec::new();
    for (i, rn) in raw.iter().enumerate() {
        let k = |field: &str| format!("node[{i}].{field}");
        let name = seen.name(ctx, i, rn);
        let (address, site) = seen.address(ctx, i, rn);
        let roles = roles(ctx, &k("roles"), &rn.roles);
        let data_dir = seen.data_dir(ctx, i, rn, &name, roles);
        let capacity = capacity(ctx, i, rn, &name, roles);
        let metrics_address = ctx
            .get(&k("metrics_address"), &rn.metrics_address)
            .and_then(|s| parse_socket(ctx, &k("metrics_address"), s));
        if let Some(m) = metrics_address {
            metrics.push((i, m));
        }
        out.push(Node {
            name,
            address: address.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            site,
            roles,
            data_dir,
            capacity,
            metrics_address,
        });
    }
    seen.metrics_addresses(ctx, metrics);
    out
}

/// What the nodes checked so far use, to find duplicates.
struct Seen<'a> {
    raw: &'a [RawNode],
    sites: &'a [Site],
    map: SiteMap,
    /// Node name → index of the node that has it.
    names: HashMap<String, usize>,
    /// Listen addresses in use: address → (node index, field) of the first
    /// user.
    addresses: HashMap<SocketAddr, (usize, &'static str)>,
    /// Data directory → the node that has it.
    dirs: HashMap<PathBuf, String>,
}

impl Seen<'_> {
    /// The node's name (empty when missing), checked and unique.
    fn name(&mut self, ctx: &mut Ctx<'_>, i: usize, rn: &RawNode) -> String {
        let key = format!("node[{i}].name");
        let name = ctx
            .require(&key, &rn.name, "every node needs a name")
            .cloned()
            .unwrap_or_default();
        if matches!(rn.name, Some(Lenient::Ok(_))) {
            if let Err(m) = check_node_name(&name) {
                ctx.push(key, m);
            } else if let Some(first) = self.names.get(&name) {
                ctx.push(
                    key,
                    format!("duplicate node name {name:?} (also node[{first}])"),
                );
            } else {
                self.names.insert(name.clone(), i);
            }
        }
        name
    }

    /// The node's address (unique) and the site its subnet belongs to.
    fn address(
        &mut self,
        ctx: &mut Ctx<'_>,
        i: usize,
        rn: &RawNode,
    ) -> (Option<SocketAddr>, SiteId) {
        let key = format!("node[{i}].address");
        let address = ctx
            .require(
                &key,
                &rn.address,
                "the node's ip:port, e.g. \"10.1.0.11:7100\"",
            )
            .and_then(|s| parse_socket(ctx, &key, s));
        let Some(addr) = address else {
            return (None, SiteId(0));
        };
        match self.addresses.get(&addr) {
            Some(&(first, _)) => ctx.push(
                &key,
                format!(
                    "duplicate address {addr} (also {})",
                    owner(first, raw_name(self.raw, first))
                ),
            ),
            None => {
                self.addresses.insert(addr, (i, "address"));
            }
        }
        match self.map.site_of(addr.ip()) {
            Ok(site) => (address, site),
            Err(e) => {
                ctx.push(key, format!("{e}{}", site_hint(self.sites)));
                (address, SiteId(0))
            }
        }
    }

    /// The node's data directory: unique, and required by the core and
    /// meta roles.
    fn data_dir(
        &mut self,
        ctx: &mut Ctx<'_>,
        i: usize,
        rn: &RawNode,
        name: &str,
        roles: Roles,
    ) -> Option<PathBuf> {
        let key = format!("node[{i}].data_dir");
        let data_dir = ctx.get(&key, &rn.data_dir).map(PathBuf::from);
        match &data_dir {
            Some(d) if d.as_os_str().is_empty() => ctx.push(key, "must not be empty"),
            Some(d) => {
                if let Some(first) = self.dirs.get(d) {
                    ctx.push(
                        key,
                        format!("duplicate data_dir {:?} (also {first})", d.display()),
                    );
                } else {
                    self.dirs.insert(d.clone(), owner(i, name));
                }
            }
            None if rn.data_dir.is_none() && (roles.core || roles.meta) => {
                let role = if roles.core { "core" } else { "meta" };
                ctx.push(
                    key,
                    format!("missing: node {name:?} has role {role}, which needs a data_dir"),
                );
            }
            None => {}
        }
        data_dir
    }

    /// Metrics addresses must not collide with any listen address (port
    /// 0 = any).
    fn metrics_addresses(&mut self, ctx: &mut Ctx<'_>, metrics: Vec<(usize, SocketAddr)>) {
        for (i, m) in metrics {
            if m.port() == 0 {
                continue;
            }
            match self.addresses.get(&m) {
                Some(&(first, field)) => ctx.push(
                    format!("node[{i}].metrics_address"),
                    format!(
                        "{m} is already used by {} as its {field}",
                        owner(first, raw_name(self.raw, first))
                    ),
                ),
                None => {
                    self.addresses.insert(m, (i, "metrics_address"));
                }
            }
        }
    }
}

/// The node's capacity in bytes: required, and above 0, for a core (0 for
/// the other roles).
fn capacity(ctx: &mut Ctx<'_>, i: usize, rn: &RawNode, name: &str, roles: Roles) -> u64 {
    let key = format!("node[{i}].capacity");
    let capacity = match ctx.get(&key, &rn.capacity) {
        Some(v) => ctx.size(&key, v),
        None => None,
    };
    if !roles.core {
        return 0;
    }
    match (rn.capacity.is_some(), capacity) {
        (false, _) => {
            ctx.push(
                key,
                format!(
                    "missing: node {name:?} has role core, which needs a capacity, e.g. \"100GiB\""
                ),
            );
            0
        }
        (true, Some(0)) => {
            ctx.push(key, "must be more than 0 bytes");
            0
        }
        (true, c) => c.unwrap_or(0),
    }
}

/// " (sites: a = 10.1.0.0/16; b = …)" for a no-site message, if short.
fn site_hint(sites: &[Site]) -> String {
    if sites.is_empty() || sites.len() > 8 {
        return String::new();
    }
    let parts: Vec<String> = sites
        .iter()
        .map(|s| {
            let nets: Vec<String> = s.subnets.iter().map(ToString::to_string).collect();
            format!("{} = {}", s.name, nets.join(", "))
        })
        .collect();
    format!(" (sites: {})", parts.join("; "))
}

/// `roles = [...]`.
fn roles(ctx: &mut Ctx<'_>, key: &str, raw: &Leaf<Vec<String>>) -> Roles {
    let mut roles = Roles::default();
    let what = "a subset of [\"core\", \"meta\", \"access\"]";
    let Some(list) = ctx.require(key, raw, what) else {
        return roles;
    };
    if list.is_empty() {
        ctx.push(key, format!("is empty (expected {what})"));
    }
    for (j, r) in list.iter().enumerate() {
        let flag = match r.as_str() {
            "core" => &mut roles.core,
            "meta" => &mut roles.meta,
            "access" => &mut roles.access,
            _ => {
                ctx.push(
                    format!("{key}[{j}]"),
                    format!("unknown role {r:?} (expected \"core\", \"meta\" or \"access\")"),
                );
                continue;
            }
        };
        if *flag {
            ctx.push(format!("{key}[{j}]"), format!("role {r:?} is listed twice"));
        }
        *flag = true;
    }
    roles
}
