//! `[nfs]`: the export, who may use it, attribute caching and the limits
//! on client connections.

use std::time::Duration;

use ipnet::IpNet;

use crate::raw::{Leaf, Lenient, RawNfs};
use crate::units::parse_duration;
use crate::NfsSettings;

use super::{parse_subnet, Ctx};

/// `[nfs]`; `has_access_nodes` says whether anything serves the export
/// (then `allowed_clients` must name who may use it).
pub(super) fn nfs(ctx: &mut Ctx<'_>, raw: Option<&RawNfs>, has_access_nodes: bool) -> NfsSettings {
    let mut out = NfsSettings::default();
    let Some(r) = raw else {
        if has_access_nodes {
            ctx.push("nfs.allowed_clients", NO_ALLOWED_CLIENTS);
        }
        return out;
    };
    if let Some(p) = ctx.get("nfs.export_path", &r.export_path) {
        if let Err(m) = check_export_path(p) {
            ctx.push("nfs.export_path", m);
        }
        out.export_path = p.clone();
    }
    if let Some(&p) = ctx.get("nfs.port", &r.port) {
        out.port = ctx.int_in("nfs.port", p, 0, 65535).unwrap_or(out.port);
    }
    if let Some(&b) = ctx.get("nfs.portmapper", &r.portmapper) {
        out.portmapper = b;
    }
    out.allowed_clients = subnets(ctx, "nfs.allowed_clients", &r.allowed_clients);
    // (A list of the wrong type or with bad entries is reported as such.)
    let written = match &r.allowed_clients {
        None => false,
        Some(Lenient::Ok(list)) => !list.is_empty(),
        Some(Lenient::Bad(_)) => true,
    };
    if has_access_nodes && !written {
        ctx.push("nfs.allowed_clients", NO_ALLOWED_CLIENTS);
    }
    if let Some(&b) = ctx.get("nfs.read_only", &r.read_only) {
        out.read_only = b;
    }
    if let Some(&b) = ctx.get("nfs.root_squash", &r.root_squash) {
        out.root_squash = b;
    }
    out.no_root_squash = subnets(ctx, "nfs.no_root_squash", &r.no_root_squash);
    if !out.root_squash && !out.no_root_squash.is_empty() {
        ctx.push(
            "nfs.no_root_squash",
            "has no effect with root_squash = false (no client's root is squashed); remove one of them",
        );
    }
    let max_id = i64::from(u32::MAX);
    if let Some(&v) = ctx.get("nfs.anon_uid", &r.anon_uid) {
        out.anon_uid = ctx
            .int_in("nfs.anon_uid", v, 0, max_id)
            .unwrap_or(out.anon_uid);
    }
    if let Some(&v) = ctx.get("nfs.anon_gid", &r.anon_gid) {
        out.anon_gid = ctx
            .int_in("nfs.anon_gid", v, 0, max_id)
            .unwrap_or(out.anon_gid);
    }
    if let Some(text) = ctx.get("nfs.attribute_cache", &r.attribute_cache) {
        match parse_duration(text) {
            Ok(d) if d <= MAX_ATTRIBUTE_CACHE => out.attribute_cache = d,
            Ok(_) => ctx.push(
                "nfs.attribute_cache",
                format!(
                    "{text:?} is longer than {}s: changes made at other sites would stay unseen that long",
                    MAX_ATTRIBUTE_CACHE.as_secs()
                ),
            ),
            Err(m) => ctx.push("nfs.attribute_cache", m),
        }
    }
    if let Some(text) = ctx.get("nfs.idle_timeout", &r.idle_timeout) {
        match parse_duration(text) {
            Ok(d) if (MIN_IDLE_TIMEOUT..=MAX_IDLE_TIMEOUT).contains(&d) => out.idle_timeout = d,
            Ok(_) => ctx.push(
                "nfs.idle_timeout",
                format!(
                    "{text:?} is outside {}s..{}s",
                    MIN_IDLE_TIMEOUT.as_secs(),
                    MAX_IDLE_TIMEOUT.as_secs()
                ),
            ),
            Err(m) => ctx.push("nfs.idle_timeout", m),
        }
    }
    if let Some(&v) = ctx.get("nfs.max_connections", &r.max_connections) {
        if let Some(v) = ctx.int_in::<usize>("nfs.max_connections", v, 1, MAX_CONNECTIONS) {
            out.max_connections = v;
        }
    }
    if let Some(&v) = ctx.get(
        "nfs.max_connections_per_client",
        &r.max_connections_per_client,
    ) {
        if let Some(v) =
            ctx.int_in::<usize>("nfs.max_connections_per_client", v, 1, MAX_CONNECTIONS)
        {
            out.max_connections_per_client = v;
        }
    }
    if out.max_connections_per_client > out.max_connections {
        ctx.push(
            "nfs.max_connections_per_client",
            format!(
                "{} is more than max_connections ({})",
                out.max_connections_per_client, out.max_connections
            ),
        );
    }
    out
}

/// What an export without `allowed_clients` is told.
const NO_ALLOWED_CLIENTS: &str = "missing or empty: list the subnets of the hosts that may mount the export (your hypervisors, e.g. [\"10.1.0.0/16\"]); to allow every client write [\"0.0.0.0/0\", \"::/0\"]";

/// The subnets (or single addresses) of list `key`.
fn subnets(ctx: &mut Ctx<'_>, key: &str, raw: &Leaf<Vec<String>>) -> Vec<IpNet> {
    let mut out = Vec::new();
    if let Some(list) = ctx.get(key, raw) {
        for (j, s) in list.iter().enumerate() {
            if let Some(net) = parse_subnet(ctx, &format!("{key}[{j}]"), s, true) {
                out.push(net);
            }
        }
    }
    out
}

/// The shortest `nfs.idle_timeout` accepted.
const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest `nfs.idle_timeout` accepted.
const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(86_400);
/// The largest `nfs.max_connections` accepted.
const MAX_CONNECTIONS: i64 = 1_000_000;

/// The longest `nfs.attribute_cache` accepted.
const MAX_ATTRIBUTE_CACHE: Duration = Duration::from_secs(60);

/// An absolute, normalised path: `/`, `/geonfs`, `/a/b`.
fn check_export_path(p: &str) -> Result<(), String> {
    let Some(rest) = p.strip_prefix('/') else {
        return Err(format!("{p:?} must start with \"/\" (e.g. \"/geonfs\")"));
    };
    if rest.is_empty() {
        return Ok(());
    }
    for part in rest.split('/') {
        match part {
            "" => {
                return Err(format!(
                    "{p:?} has an empty path component (no \"//\" and no trailing \"/\")"
                ))
            }
            ".." | "." => return Err(format!("{p:?} must not contain {part:?} components")),
            _ if part.contains('\0') => return Err(format!("{p:?} contains a NUL character")),
            _ => {}
        }
    }
    Ok(())
}
