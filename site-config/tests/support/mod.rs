//! What the config tests share: a valid base config and ways to break it.

use std::net::IpAddr;

use geonfs_site_config::{ClusterConfig, ConfigError, Problem};

/// A valid 3-site loopback cluster. Node indices: per site s (0..3), 4 nodes
/// starting at 4*s: core-1, core-2, meta, access. 12 nodes in all.
pub fn base() -> String {
    let mut t = String::from(
        r#"[cluster]
name = "demo"
replication_factor = 3
secret = "0123456789abcdef-secret"

[tls]
insecure = true
"#,
    );
    for (i, s) in ["a", "b", "c"].iter().enumerate() {
        let n = i + 1;
        t += &format!("\n[[site]]\nname = \"{s}\"\nsubnets = [\"127.{n}.0.0/16\"]\n");
    }
    for (i, s) in ["a", "b", "c"].iter().enumerate() {
        let n = i + 1;
        t += &format!(
            r#"
[[node]]
name = "{s}-core-1"
address = "127.{n}.0.11:7100"
roles = ["core"]
data_dir = "/tmp/geonfs/{s}-core-1"
capacity = "10GiB"

[[node]]
name = "{s}-core-2"
address = "127.{n}.0.12:7100"
roles = ["core"]
data_dir = "/tmp/geonfs/{s}-core-2"
capacity = "10GiB"

[[node]]
name = "{s}-meta"
address = "127.{n}.0.21:7100"
roles = ["meta"]
data_dir = "/tmp/geonfs/{s}-meta"

[[node]]
name = "{s}-access"
address = "127.{n}.0.31:7100"
roles = ["access"]
"#
        );
    }
    t + BASE_NFS
}

/// The `[nfs]` table [`base`] ends with: the loopback clients.
pub const BASE_NFS: &str = "\n[nfs]\nallowed_clients = [\"127.0.0.0/8\"]\n";

/// [`base`] with `keys` in its `[nfs]` table (replacing its
/// `allowed_clients` when they hold one).
pub fn with_nfs(keys: &str) -> String {
    if keys.contains("allowed_clients") {
        edit(&base(), "allowed_clients = [\"127.0.0.0/8\"]\n", keys)
    } else {
        base() + keys
    }
}

/// `text` with `old` replaced by `new` (which must occur).
pub fn edit(text: &str, old: &str, new: &str) -> String {
    assert!(text.contains(old), "{old:?} not in config");
    text.replacen(old, new, 1)
}

pub fn problems(text: &str) -> Vec<Problem> {
    match ClusterConfig::from_toml_str(text) {
        Err(ConfigError::Invalid(p)) => p,
        Err(e) => panic!("expected problems, got {e}"),
        Ok(_) => panic!("expected problems, config is valid:\n{text}"),
    }
}

/// Assert that `text` has a problem at `key` whose message contains `fragment`.
#[track_caller]
pub fn assert_problem(text: &str, key: &str, fragment: &str) {
    let ps = problems(text);
    let listing: Vec<String> = ps.iter().map(ToString::to_string).collect();
    assert!(
        ps.iter()
            .any(|p| p.key == key && p.message.contains(fragment)),
        "no problem `{key}: …{fragment}…` in:\n{}",
        listing.join("\n")
    );
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
