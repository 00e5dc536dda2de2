//! The loosely-typed mirror of the TOML file.
//!
//! Every leaf value is kept as written ([`Lenient`]): a value of the wrong
//! TOML type does not stop deserialization, it becomes a [`crate::Problem`]
//! during validation, so one run reports every problem. Sizes, durations,
//! addresses and subnets stay strings here; `validate` converts them.
//! Unknown keys are collected with their full path via `serde_ignored`.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::units::{format_bandwidth, format_duration, format_size};
use crate::{ClusterConfig, SiteId};

/// A leaf value: either of the expected type, or the TOML value found instead.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Lenient<T> {
    /// The value had the expected type.
    Ok(T),
    /// The value had another type; kept for the error message.
    Bad(toml::Value),
}

/// What a leaf type is called in error messages.
pub(crate) trait Expected {
    /// E.g. "an integer".
    const EXPECTED: &'static str;
}

impl Expected for String {
    const EXPECTED: &'static str = "a string";
}
impl Expected for i64 {
    const EXPECTED: &'static str = "an integer";
}
impl Expected for bool {
    const EXPECTED: &'static str = "true or false";
}
impl Expected for Vec<String> {
    const EXPECTED: &'static str = "an array of strings";
}
impl Expected for SizeText {
    const EXPECTED: &'static str = r#"a size such as "4MiB" (or an integer number of bytes)"#;
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = toml::Value::deserialize(d)?;
        Ok(match T::deserialize(value.clone()) {
            Ok(v) => Lenient::Ok(v),
            Err(_) => Lenient::Bad(value),
        })
    }
}

impl<T: Serialize> Serialize for Lenient<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Lenient::Ok(v) => v.serialize(s),
            Lenient::Bad(v) => v.serialize(s),
        }
    }
}

/// An optional leaf.
pub(crate) type Leaf<T> = Option<Lenient<T>>;

/// A size written as a string (`"4MiB"`) or as an integer number of bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum SizeText {
    /// `capacity = 1073741824`
    Int(i64),
    /// `capacity = "1GiB"`
    Text(String),
}

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct RawConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<RawCluster>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub site: Vec<RawSite>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub node: Vec<RawNode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nfs: Option<RawNfs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<RawMeta>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub wan: Vec<RawWan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawTls>,
}

/// `[cluster]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct RawCluster {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Leaf<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_factor: Leaf<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_size: Leaf<SizeText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Leaf<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Leaf<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta_voters: Leaf<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ownership_lease: Leaf<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_failover_after: Leaf<String>,
}

/// `[[site]]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct RawSite {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Leaf<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnets: Leaf<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub takes_writes: Leaf<bool>,
}

/// `[[node]]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct RawNode {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Leaf<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Leaf<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Leaf<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Leaf<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Leaf<SizeText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_address: Leaf<String>,
}

/// `[nfs]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct RawNfs {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_path: Leaf<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Leaf<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub portmapper: Leaf<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_clients: Leaf<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Leaf<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_squash: Leaf<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_root_squash: Leaf<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anon_uid: Leaf<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anon_gid: Leaf<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attribute_cache: Leaf<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Leaf<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Leaf<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_client: Leaf<i64>,
}

/// `[meta]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct RawMeta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inter_site_rtt: Leaf<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tick: Leaf<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub election_timeout: Leaf<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval: Leaf<String>,
}

/// `[tls]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct RawTls {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Leaf<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure: Leaf<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure_beyond_loopback: Leaf<bool>,
}

/// `[[wan]]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct RawWan {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub between: Leaf<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt: Leaf<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bandwidth: Leaf<String>,
}

/// Wrap a value as a present, well-typed leaf.
pub(crate) fn leaf<T>(v: T) -> Leaf<T> {
    Some(Lenient::Ok(v))
}

/// Render a `serde_ignored` path as `node[2].capacty`.
fn format_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", format_path(parent)),
        Path::Map { parent, key } => {
            let parent = format_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => format_path(parent),
    }
}

/// Parse the TOML text. `Err` carries toml's message (with line and column)
/// for syntax errors and for the rare type errors that are not leaf values
/// (e.g. `site = 3`). On success, also returns the paths of unknown keys.
pub(crate) fn parse(text: &str) -> Result<(RawConfig, Vec<String>), String> {
    let de = toml::de::Deserializer::parse(text).map_err(|e| e.to_string())?;
    let mut unknown = Vec::new();
    let raw: RawConfig = serde_ignored::deserialize(de, |path| unknown.push(format_path(&path)))
        .map_err(|mut e: toml::de::Error| {
            e.set_input(Some(text));
            e.to_string()
        })?;
    Ok((raw, unknown))
}

impl RawConfig {
    /// A config with every key of the schema present (values are placeholders).
    pub(crate) fn fully_populated() -> RawConfig {
        let s = |v: &str| leaf(v.to_string());
        let list = |v: &[&str]| leaf(v.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        RawConfig {
            cluster: Some(RawCluster {
                name: s("x"),
                replication_factor: leaf(1),
                block_size: leaf(SizeText::Text("4MiB".into())),
                secret: s("x"),
                secret_file: s("x"),
                meta_voters: list(&["x"]),
                ownership_lease: s("x"),
                auto_failover_after: s("x"),
            }),
            site: vec![RawSite {
                name: s("x"),
                subnets: list(&["x"]),
                takes_writes: leaf(true),
            }],
            node: vec![RawNode {
                name: s("x"),
                address: s("x"),
                roles: list(&["x"]),
                data_dir: s("x"),
                capacity: leaf(SizeText::Text("1GiB".into())),
                metrics_address: s("x"),
            }],
            nfs: Some(RawNfs {
                export_path: s("x"),
                port: leaf(1),
                portmapper: leaf(true),
                allowed_clients: list(&["x"]),
                read_only: leaf(true),
                root_squash: leaf(true),
                no_root_squash: list(&["x"]),
                anon_uid: leaf(1),
                anon_gid: leaf(1),
                attribute_cache: s("x"),
                idle_timeout: s("x"),
                max_connections: leaf(1),
                max_connections_per_client: leaf(1),
            }),
            meta: Some(RawMeta {
                inter_site_rtt: s("x"),
                tick: s("x"),
                election_timeout: s("x"),
                heartbeat_interval: s("x"),
            }),
            tls: Some(RawTls {
                dir: s("x"),
                insecure: leaf(true),
                insecure_beyond_loopback: leaf(true),
            }),
            wan: vec![RawWan {
                between: list(&["x", "y"]),
                rtt: s("x"),
                bandwidth: s("x"),
            }],
        }
    }
}

/// Every key path of a TOML value, with array indices dropped: `cluster`,
/// `cluster.name`, `node`, `node.capacity`, …
pub(crate) fn key_paths(value: &toml::Value) -> BTreeSet<String> {
    fn walk(prefix: &str, value: &toml::Value, out: &mut BTreeSet<String>) {
        match value {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    out.insert(path.clone());
                    walk(&path, v, out);
                }
            }
            toml::Value::Array(items) => {
                for item in items.iter().filter(|i| i.is_table()) {
                    walk(prefix, item, out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk("", value, &mut out);
    out
}

/// Every key the schema knows, as in [`key_paths`].
pub(crate) fn schema_keys() -> BTreeSet<String> {
    toml::Value::try_from(RawConfig::fully_populated())
        .map(|v| key_paths(&v))
        .unwrap_or_default()
}

/// Edit distance, for "did you mean" suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The message for an unknown key at `path` (e.g. `node[1].capacty`),
/// suggesting a known key of the same table when one is close.
pub(crate) fn unknown_key_message(path: &str) -> String {
    // Strip array indices to get the schema path, then split off the last key.
    let mut schema_path = String::new();
    let mut depth = 0usize;
    for c in path.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => schema_path.push(c),
            _ => {}
        }
    }
    let (table, key) = match schema_path.rsplit_once('.') {
        Some((t, k)) => (t.to_string(), k.to_string()),
        None => (String::new(), schema_path),
    };
    let best = schema_keys()
        .into_iter()
        .filter_map(|known| {
            let (t, k) = match known.rsplit_once('.') {
                Some((t, k)) => (t.to_string(), k.to_string()),
                None => (String::new(), known.clone()),
            };
            (t == table).then(|| (edit_distance(&key, &k), k))
        })
        .min();
    match best {
        Some((d, k)) if d <= 2 || (d <= 3 && key.len() >= 8) => {
            format!("unknown key (did you mean `{k}`?)")
        }
        _ => "unknown key".to_string(),
    }
}

/// The raw form of a config, for [`ClusterConfig::to_toml_string`].
pub(crate) fn to_raw(c: &ClusterConfig) -> RawConfig {
    let s = |v: &str| leaf(v.to_string());
    let strings = |v: &mut dyn Iterator<Item = String>| leaf(v.collect::<Vec<_>>());
    let site_name = |id: SiteId| {
        c.sites
            .get(usize::from(id.0))
            .map(|s| s.name.clone())
            .unwrap_or_default()
    };
    RawConfig {
        cluster: Some(RawCluster {
            name: s(&c.cluster.name),
            replication_factor: leaf(
                i64::try_from(c.cluster.replication_factor).unwrap_or(i64::MAX),
            ),
            block_size: leaf(SizeText::Text(format_size(c.cluster.block_size))),
            secret: s(&c.cluster.secret),
            secret_file: None,
            meta_voters: leaf(c.cluster.meta_voters.clone()),
            ownership_lease: s(&format_duration(c.cluster.ownership_lease)),
            auto_failover_after: c
                .cluster
                .auto_failover_after
                .and_then(|d| s(&format_duration(d))),
        }),
        site: c
            .sites
            .iter()
            .map(|site| RawSite {
                name: s(&site.name),
                subnets: strings(&mut site.subnets.iter().map(ToString::to_string)),
                takes_writes: leaf(site.takes_writes),
            })
            .collect(),
        node: c
            .nodes
            .iter()
            .map(|n| {
                let mut roles = Vec::new();
                for (on, name) in [
                    (n.roles.core, "core"),
                    (n.roles.meta, "meta"),
                    (n.roles.access, "access"),
                ] {
                    if on {
                        roles.push(name.to_string());
                    }
                }
                RawNode {
                    name: s(&n.name),
                    address: s(&n.address.to_string()),
                    roles: leaf(roles),
                    data_dir: n
                        .data_dir
                        .as_ref()
                        .map(|d| Lenient::Ok(d.to_string_lossy().into_owned())),
                    capacity: n
                        .roles
                        .core
                        .then(|| Lenient::Ok(SizeText::Text(format_size(n.capacity)))),
                    metrics_address: n.metrics_address.map(|m| Lenient::Ok(m.to_string())),
                }
            })
            .collect(),
        nfs: Some(RawNfs {
            export_path: s(&c.nfs.export_path),
            port: leaf(i64::from(c.nfs.port)),
            portmapper: leaf(c.nfs.portmapper),
            allowed_clients: strings(&mut c.nfs.allowed_clients.iter().map(ToString::to_string)),
            read_only: leaf(c.nfs.read_only),
            root_squash: leaf(c.nfs.root_squash),
            no_root_squash: strings(&mut c.nfs.no_root_squash.iter().map(ToString::to_string)),
            anon_uid: leaf(i64::from(c.nfs.anon_uid)),
            anon_gid: leaf(i64::from(c.nfs.anon_gid)),
            attribute_cache: s(&format_duration(c.nfs.attribute_cache)),
            idle_timeout: s(&format_duration(c.nfs.idle_timeout)),
            max_connections: leaf(i64::try_from(c.nfs.max_connections).unwrap_or(i64::MAX)),
            max_connections_per_client: leaf(
                i64::try_from(c.nfs.max_connections_per_client).unwrap_or(i64::MAX),
            ),
        }),
        meta: {
            let d = |v: Option<std::time::Duration>| v.and_then(|d| s(&format_duration(d)));
            let m = &c.meta;
            let raw = RawMeta {
                inter_site_rtt: d(m.inter_site_rtt),
                tick: d(m.tick),
                election_timeout: d(m.election_timeout),
                heartbeat_interval: d(m.heartbeat_interval),
            };
            (raw != RawMeta::default()).then_some(raw)
        },
        tls: Some(match &c.tls.dir {
            Some(dir) => RawTls {
                dir: s(&dir.to_string_lossy()),
                ..RawTls::default()
            },
            None => RawTls {
                insecure: leaf(true),
                insecure_beyond_loopback: c
                    .tls
                    .insecure_beyond_loopback
                    .then_some(Lenient::Ok(true)),
                ..RawTls::default()
            },
        }),
        wan: c
            .wan
            .iter()
            .map(|w| RawWan {
                between: leaf(vec![site_name(w.a), site_name(w.b)]),
                rtt: s(&format_duration(w.rtt)),
                bandwidth: w
                    .bandwidth_bytes_per_sec
                    .map(|b| Lenient::Ok(format_bandwidth(b))),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = include_str!("../../geonfs.example.toml");

    /// Uncomment lines that are commented-out config (`# key = …`,
    /// `# [[table]]`), leaving prose comments alone.
    fn uncomment_examples(text: &str) -> String {
        text.lines()
            .map(|line| {
                let body = line.trim_start().strip_prefix("# ");
                match body {
                    Some(b) if is_config_line(b) => b.to_string(),
                    _ => line.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn is_config_line(b: &str) -> bool {
        if b.starts_with('[') && b.trim_end().ends_with(']') {
            return true;
        }
        match b.split_once(" = ") {
            Some((k, _)) => !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            None => false,
        }
    }

    #[test]
    fn schema_keys_cover_every_table() {
        let keys = schema_keys();
        for k in [
            "cluster.secret_file",
            "site.takes_writes",
            "node.capacity",
            "nfs.anon_gid",
            "wan.bandwidth",
        ] {
            assert!(keys.contains(k), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn template_mentions_every_key() {
        let uncommented = uncomment_examples(TEMPLATE);
        let value: toml::Value = toml::from_str(&uncommented)
            .unwrap_or_else(|e| panic!("uncommented template does not parse: {e}\n{uncommented}"));
        let in_template = key_paths(&value);
        let schema = schema_keys();
        let missing: Vec<_> = schema.difference(&in_template).collect();
        let unknown: Vec<_> = in_template.difference(&schema).collect();
        assert!(
            missing.is_empty(),
            "keys not documented in the template: {missing:?}"
        );
        assert!(
            unknown.is_empty(),
            "template keys unknown to the schema: {unknown:?}"
        );
    }

    #[test]
    fn unknown_key_paths_and_suggestions() {
        let (_, unknown) =
            parse("bogus = 1\n[cluster]\nname = \"x\"\n[[node]]\n[[node]]\ncapacty = \"1GiB\"\n")
                .unwrap();
        assert_eq!(
            unknown,
            vec!["bogus".to_string(), "node[1].capacty".to_string()]
        );
        assert_eq!(
            unknown_key_message("node[1].capacty"),
            "unknown key (did you mean `capacity`?)"
        );
        assert_eq!(
            unknown_key_message("clustr"),
            "unknown key (did you mean `cluster`?)"
        );
        assert_eq!(unknown_key_message("bogus"), "unknown key");
    }

    #[test]
    fn wrong_leaf_type_does_not_stop_parsing() {
        let (raw, _) = parse("[cluster]\nreplication_factor = \"three\"\nname = 5\n").unwrap();
        let c = raw.cluster.unwrap();
        assert_eq!(
            c.replication_factor,
            Some(Lenient::Bad(toml::Value::String("three".into())))
        );
        assert_eq!(c.name, Some(Lenient::Bad(toml::Value::Integer(5))));
    }

    #[test]
    fn structural_type_error_has_line() {
        let err = parse("site = 3\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
    }
}
