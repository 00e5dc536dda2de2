//! `[[node]]` tables: names, addresses and their sites, roles, data
//! directories, capacities and metrics addresses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;

use super::{check_name, parse_socket, site_id, Ctx};
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
    let map = SiteMap::build_unchecked(&map_input);
    let mut names: HashMap<String, usize> = HashMap::new();
    // Listen addresses in use: address → (node index, field) of the first user.
    let mut addresses: HashMap<SocketAddr, (usize, &str)> = HashMap::new();
    let name_of = |i: usize| raw_name(raw, i);
    let mut dirs: HashMap<PathBuf, String> = HashMap::new();
    let mut metrics = Vec::new();
    let mut out = Vec::new();
    for (i, rn) in raw.iter().enumerate() {
        let key = format!("node[{i}]");
        let k = |field: &str| format!("{key}.{field}");
        let name = ctx
            .require(&k("name"), &rn.name, "every node needs a name")
            .cloned()
            .unwrap_or_default();
        if matches!(rn.name, Some(Lenient::Ok(_))) {
            if let Err(m) = check_name("node", &name, None) {
                ctx.push(k("name"), m);
            } else if let Some(first) = names.get(&name) {
                ctx.push(
                    k("name"),
                    format!("duplicate node name {name:?} (also node[{first}])"),
                );
            } else {
                names.insert(name.clone(), i);
            }
        }

        let mut site = SiteId(0);
        let address = ctx
            .require(
                &k("address"),
                &rn.address,
                "the node's ip:port, e.g. \"10.1.0.11:7100\"",
            )
            .and_then(|s| parse_socket(ctx, &k("address"), s));
        if let Some(addr) = address {
            match addresses.get(&addr) {
                Some(&(first, _)) => ctx.push(
                    k("address"),
                    format!(
                        "duplicate address {addr} (also {})",
                        owner(first, name_of(first))
                    ),
                ),
                None => {
                    addresses.insert(addr, (i, "address"));
                }
            }
            match map.site_of(addr.ip()) {
                Ok(s) => site = s,
                Err(e) => ctx.push(k("address"), format!("{e}{}", site_hint(sites))),
            }
        }

        let roles = roles(ctx, &k("roles"), &rn.roles);
        let data_dir = ctx.get(&k("data_dir"), &rn.data_dir).map(PathBuf::from);
        match &data_dir {
            Some(d) if d.as_os_str().is_empty() => ctx.push(k("data_dir"), "must not be empty"),
            Some(d) => {
                if let Some(first) = dirs.get(d) {
                    ctx.push(
                        k("data_dir"),
                        format!("duplicate data_dir {:?} (also {first})", d.display()),
                    );
                } else {
                    dirs.insert(d.clone(), owner(i, &name));
                }
            }
            None if rn.data_dir.is_none() && (roles.core || roles.meta) => {
                let role = if roles.core { "core" } else { "meta" };
                ctx.push(
                    k("data_dir"),
                    format!("missing: node {name:?} has role {role}, which needs a data_dir"),
                );
            }
            None => {}
        }

        let capacity = match ctx.get(&k("capacity"), &rn.capacity) {
            Some(v) => ctx.size(&k("capacity"), v),
            None => None,
        };
        let capacity = if roles.core {
            match (rn.capacity.is_some(), capacity) {
                (false, _) => {
                    ctx.push(
                        k("capacity"),
                        format!("missing: node {name:?} has role core, which needs a capacity, e.g. \"100GiB\""),
                    );
                    0
                }
                (true, Some(0)) => {
                    ctx.push(k("capacity"), "must be more than 0 bytes");
                    0
                }
                (true, c) => c.unwrap_or(0),
            }
        } else {
            0
        };

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
    // Metrics addresses must not collide with any listen address (port 0 = any).
    for (i, m) in metrics {
        if m.port() == 0 {
            continue;
        }
        match addresses.get(&m) {
            Some(&(first, field)) => ctx.push(
                format!("node[{i}].metrics_address"),
                format!(
                    "{m} is already used by {} as its {field}",
                    owner(first, name_of(first))
                ),
            ),
            None => {
                addresses.insert(m, (i, "metrics_address"));
            }
        }
    }
    out
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
