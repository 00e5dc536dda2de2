//! The `[nfs]` export table, the cluster secret and `[tls]` in whole config
//! files: who may mount, root squash, export paths and connection limits;
//! where the secret comes from and who may read it; TLS or plain TCP
//! between nodes, said explicitly.

// A failed `unwrap` is how a test reports what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use geonfs_site_config::{ClusterConfig, ConfigError};

#[allow(dead_code)] // each test file uses its own share of the helpers
mod support;
use support::{assert_problem, base, edit, with_nfs, BASE_NFS};

#[test]
fn secrets() {
    let t = edit(
        &base(),
        "secret = \"0123456789abcdef-secret\"",
        "secret = \"short\"",
    );
    assert_problem(&t, "cluster.secret", "is 5 bytes long (needs at least 16)");
    let t = edit(
        &base(),
        "secret = \"0123456789abcdef-secret\"",
        "secret = \"0123456789abcdef-secret\"\nsecret_file = \"s\"",
    );
    assert_problem(
        &t,
        "cluster.secret",
        "both `secret` and `secret_file` are set",
    );
    let t = edit(&base(), "secret = \"0123456789abcdef-secret\"\n", "");
    assert_problem(&t, "cluster.secret", "missing");
    let t = edit(
        &base(),
        "secret = \"0123456789abcdef-secret\"",
        "secret_file = \"/nonexistent/geonfs-secret\"",
    );
    assert_problem(&t, "cluster.secret_file", "cannot read");
}

#[test]
fn load_resolves_secret_file_relative_to_config() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("geonfs-site-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret.txt"), "  a-secret-of-enough-bytes\n").unwrap();
    // Only the owner may read a file holding the secret.
    let private = std::fs::Permissions::from_mode(0o600);
    std::fs::set_permissions(dir.join("secret.txt"), private).unwrap();
    let t = edit(
        &base(),
        "secret = \"0123456789abcdef-secret\"",
        "secret_file = \"secret.txt\"",
    );
    let path = dir.join("geonfs.toml");
    std::fs::write(&path, &t).unwrap();
    let c = ClusterConfig::load(&path).unwrap();
    assert_eq!(c.cluster.secret, "a-secret-of-enough-bytes");
    std::fs::write(dir.join("secret.txt"), "tiny\n").unwrap();
    let err = ClusterConfig::load(&path).unwrap_err();
    assert_eq!(err.problems().len(), 1);
    assert!(err.problems()[0].message.contains("4 bytes long"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();

    let missing = PathBuf::from("/nonexistent/geonfs.toml");
    assert!(matches!(
        ClusterConfig::load(&missing),
        Err(ConfigError::Io { .. })
    ));
}

#[test]
fn export_path() {
    for (p, fragment) in [
        ("geonfs", "must start with \"/\""),
        ("/a//b", "empty path component"),
        ("/a/", "empty path component"),
        ("/a/../b", "must not contain \"..\""),
    ] {
        let t = with_nfs(&format!("export_path = \"{p}\"\n"));
        assert_problem(&t, "nfs.export_path", fragment);
    }
    for p in ["/", "/geonfs", "/a/b-c"] {
        let t = with_nfs(&format!("export_path = \"{p}\"\n"));
        assert_eq!(ClusterConfig::from_toml_str(&t).unwrap().nfs.export_path, p);
    }
    let t = with_nfs("port = 70000\nanon_uid = -1\nallowed_clients = [\"10.0.0.0/8\", \"192.168.1.5\", \"nope\"]\n");
    assert_problem(&t, "nfs.port", "70000 is out of range (expected 0..=65535)");
    assert_problem(&t, "nfs.anon_uid", "out of range");
    assert_problem(
        &t,
        "nfs.allowed_clients[2]",
        "cannot parse \"nope\" as a subnet",
    );
    let t = with_nfs(
        "idle_timeout = \"100ms\"\nmax_connections = 10\nmax_connections_per_client = 20\n",
    );
    assert_problem(&t, "nfs.idle_timeout", "outside 1s..86400s");
    assert_problem(
        &t,
        "nfs.max_connections_per_client",
        "20 is more than max_connections (10)",
    );
    let t = with_nfs("max_connections = 0\n");
    assert_problem(&t, "nfs.max_connections", "out of range");
    let t = with_nfs("idle_timeout = \"30s\"\nmax_connections_per_client = 8\n");
    let c = ClusterConfig::from_toml_str(&t).unwrap();
    assert_eq!(c.nfs.idle_timeout, std::time::Duration::from_secs(30));
    assert_eq!(
        (c.nfs.max_connections, c.nfs.max_connections_per_client),
        (4096, 8)
    );
}

#[test]
fn who_may_mount_is_stated_and_root_is_squashed_by_default() {
    // Absent or empty: refused where a node serves the export.
    let absent = edit(&base(), BASE_NFS, "");
    assert_problem(&absent, "nfs.allowed_clients", "missing or empty");
    let empty = with_nfs("allowed_clients = []\n");
    assert_problem(
        &empty,
        "nfs.allowed_clients",
        "write [\"0.0.0.0/0\", \"::/0\"]",
    );
    // ... but not needed without access nodes.
    let mut no_access = absent.clone();
    for (i, site) in ["a", "b", "c"].iter().enumerate() {
        let n = i + 1;
        no_access = edit(
            &no_access,
            &format!("name = \"{site}-access\"\naddress = \"127.{n}.0.31:7100\"\nroles = [\"access\"]"),
            &format!("name = \"{site}-core-3\"\naddress = \"127.{n}.0.31:7100\"\nroles = [\"core\"]\ndata_dir = \"/tmp/geonfs/{site}-core-3\"\ncapacity = \"10GiB\""),
        );
    }
    ClusterConfig::from_toml_str(&no_access).unwrap_or_else(|e| panic!("{e}"));
    // Everyone, when written so; root squashed, nobody exempt.
    let everyone = with_nfs("allowed_clients = [\"0.0.0.0/0\", \"::/0\"]\n");
    let c = ClusterConfig::from_toml_str(&everyone).unwrap();
    assert!(c.nfs.root_squash);
    assert!(c.nfs.no_root_squash.is_empty());
    let hosts = with_nfs("no_root_squash = [\"127.1.0.0/16\", \"127.2.0.9\"]\n");
    let c = ClusterConfig::from_toml_str(&hosts).unwrap();
    let shown: Vec<String> = c
        .nfs
        .no_root_squash
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(shown, ["127.1.0.0/16", "127.2.0.9/32"]);
    let pointless = with_nfs("root_squash = false\nno_root_squash = [\"127.1.0.0/16\"]\n");
    assert_problem(&pointless, "nfs.no_root_squash", "has no effect");
    assert_problem(
        &with_nfs("no_root_squash = [\"x\"]\n"),
        "nfs.no_root_squash[0]",
        "cannot parse",
    );
}

#[test]
fn the_placeholder_secret_is_refused() {
    let t = edit(
        &base(),
        "secret = \"0123456789abcdef-secret\"",
        "secret = \"change-me-to-a-long-random-string\"",
    );
    assert_problem(&t, "cluster.secret", "the template's placeholder");
}

#[test]
fn tls_or_plain_tcp_is_said_explicitly() {
    let plain = "[tls]\ninsecure = true\n";
    assert!(base().contains(plain));
    // Neither, both, or a table that says nothing.
    assert_problem(&edit(&base(), plain, ""), "tls", "missing [tls] table");
    assert_problem(
        &edit(&base(), plain, "[tls]\n"),
        "tls.dir",
        "missing: set `dir`",
    );
    let both = "[tls]\ninsecure = true\ndir = \"/etc/geonfs/tls\"\n";
    assert_problem(
        &edit(&base(), plain, both),
        "tls.insecure",
        "set exactly one",
    );
    // Plain TCP beyond loopback needs saying twice.
    let routed = edit(&base(), "127.2.0.11:7100", "10.2.0.11:7100");
    let routed = edit(
        &routed,
        "subnets = [\"127.2.0.0/16\"]",
        "subnets = [\"127.2.0.0/16\", \"10.2.0.0/16\"]",
    );
    assert_problem(&routed, "tls.insecure", "b-core-1 at 10.2.0.11:7100");
    let forced = edit(
        &routed,
        plain,
        "[tls]\ninsecure = true\ninsecure_beyond_loopback = true\n",
    );
    let c = ClusterConfig::from_toml_str(&forced).unwrap();
    assert!(c.tls.dir.is_none() && c.tls.insecure_beyond_loopback);
    assert_eq!(
        ClusterConfig::from_toml_str(&c.to_toml_string()).unwrap(),
        c
    );

    // A relative `dir` is the config file's directory's; its CA must exist.
    let dir = tempfile::tempdir().unwrap();
    let t = edit(&base(), plain, "[tls]\ndir = \"tls\"\n");
    let path = dir.path().join("geonfs.toml");
    std::fs::write(&path, &t).unwrap();
    let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(&path, private).unwrap();
    let err = ClusterConfig::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("tls.dir: cannot read the cluster CA certificate"),
        "{err}"
    );
    assert!(err.contains("geonfs cert init"), "{err}");
    std::fs::create_dir(dir.path().join("tls")).unwrap();
    std::fs::write(dir.path().join("tls/ca.crt"), "").unwrap();
    let c = ClusterConfig::load(&path).unwrap();
    assert_eq!(c.tls.dir, Some(dir.path().join("tls")));
    assert_eq!(
        ClusterConfig::from_toml_str(&c.to_toml_string()).unwrap(),
        c
    );
}
