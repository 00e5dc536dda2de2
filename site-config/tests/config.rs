//! Parsing and validation of whole config files: valid files, every kind of
//! broken file (exact key and message fragment), round trips, the template.

// A failed `unwrap` is how a test reports what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use geonfs_site_config::{ClusterConfig, ConfigError, Problem, SiteId};

#[allow(dead_code)] // each test file uses its own share of the helpers
mod support;
use support::{assert_problem, base, edit, ip, problems, with_nfs};

#[test]
fn base_is_valid() {
    let c = ClusterConfig::from_toml_str(&base()).unwrap();
    assert_eq!(c.sites.len(), 3);
    assert_eq!(c.nodes.len(), 12);
    assert_eq!(c.cluster.block_size, 4 << 20);
    assert_eq!(c.cluster.ownership_lease, Duration::from_secs(10));
    assert_eq!(c.cluster.meta_voters, ["a-meta", "b-meta", "c-meta"]);
    assert_eq!(c.nfs.export_path, "/geonfs");
    assert_eq!(c.nfs.port, 2049);
    assert!(c.nfs.portmapper);
    assert_eq!(c.nfs.anon_uid, 65534);
    assert!(c.wan.is_empty());
    assert_eq!(c.node("b-core-2").unwrap().site, SiteId(1));
    assert_eq!(c.node("b-core-2").unwrap().capacity, 10 << 30);
    assert_eq!(c.node("c-access").unwrap().capacity, 0);
    assert!(c.node("c-access").unwrap().roles.access);
    assert_eq!(c.site_by_name("c"), Some(SiteId(2)));
    assert_eq!(c.site(SiteId(2)).name, "c");
    assert_eq!(c.site_of(ip("127.3.9.9")).unwrap(), SiteId(2));
    assert_eq!(c.site_of(ip("::ffff:127.1.0.1")).unwrap(), SiteId(0));
    assert!(c.site_of(ip("127.4.0.1")).is_err());
    let map = c.site_map();
    assert_eq!(map.site_of(ip("127.2.0.1")).unwrap(), SiteId(1));
    assert_eq!(
        map.site_of(ip("10.0.0.1")).unwrap_err().to_string(),
        "10.0.0.1 is in no site's subnets"
    );
    // The secret never shows up in Debug output.
    assert!(!format!("{c:?}").contains("0123456789abcdef"));
}

#[test]
fn wan_links_and_lookup() {
    let t = base()
        + "\n[[wan]]\nbetween = [\"a\", \"b\"]\nrtt = \"50ms\"\nbandwidth = \"100Mbit/s\"\n"
        + "\n[[wan]]\nbetween = [\"c\", \"a\"]\nrtt = \"1.5s\"\n";
    let c = ClusterConfig::from_toml_str(&t).unwrap();
    let ab = c.wan_between(SiteId(1), SiteId(0)).unwrap();
    assert_eq!(ab.rtt, Duration::from_millis(50));
    assert_eq!(ab.bandwidth_bytes_per_sec, Some(12_500_000));
    let ca = c.wan_between(SiteId(0), SiteId(2)).unwrap();
    assert_eq!(ca.rtt, Duration::from_millis(1500));
    assert_eq!(ca.bandwidth_bytes_per_sec, None);
    assert!(c.wan_between(SiteId(1), SiteId(2)).is_none());
    assert!(c.wan_between(SiteId(1), SiteId(1)).is_none());
}

#[test]
fn meta_timing_follows_the_round_trip_between_sites() {
    // On a LAN: Raft's usual timing (100 ms ticks, 1 s elections).
    let lan = ClusterConfig::from_toml_str(&base()).unwrap().meta_timing();
    assert_eq!(lan.tick, Duration::from_millis(100));
    assert_eq!((lan.election_ticks(), lan.heartbeat_ticks()), (10, 2));
    assert_eq!(lan.election_timeout, Duration::from_secs(1));
    // The longest [[wan]] round trip (1.5 s) is the default, and the lease
    // default grows with it.
    let t = base() + "\n[[wan]]\nbetween = [\"c\", \"a\"]\nrtt = \"1.5s\"\n";
    let c = ClusterConfig::from_toml_str(&t).unwrap();
    let wan = c.meta_timing();
    assert_eq!(wan.inter_site_rtt, Duration::from_millis(1500));
    assert_eq!(wan.tick, Duration::from_millis(375));
    assert_eq!(wan.heartbeat_interval, Duration::from_millis(1500));
    assert_eq!(wan.election_timeout, Duration::from_millis(7500));
    assert_eq!((wan.election_ticks(), wan.heartbeat_ticks()), (20, 4));
    assert_eq!(c.cluster.ownership_lease, Duration::from_secs(12));
    assert!(wan.call_attempt() >= Duration::from_secs(6));
    // [meta] sets it (3 s), and the timing round-trips.
    let t = base() + "\n[meta]\ninter_site_rtt = \"3s\"\n";
    let c = ClusterConfig::from_toml_str(&t).unwrap();
    assert_eq!(c.meta_timing().election_timeout, Duration::from_secs(15));
    assert_eq!(c.cluster.ownership_lease, Duration::from_secs(24));
    let back = ClusterConfig::from_toml_str(&c.to_toml_string()).unwrap();
    assert_eq!(back, c);
    // An election timeout of fewer than 3 round trips, and a lease of
    // fewer than 4, are refused.
    let t = base() + "\n[meta]\ninter_site_rtt = \"3s\"\nelection_timeout = \"5s\"\n";
    assert_problem(
        &t,
        "meta.election_timeout",
        "less than 3 inter-site round trips",
    );
    let t = edit(
        &base(),
        "replication_factor = 3",
        "replication_factor = 3\nownership_lease = \"10s\"",
    ) + "\n[meta]\ninter_site_rtt = \"3s\"\n";
    assert_problem(
        &t,
        "cluster.ownership_lease",
        "shorter than 4 inter-site round trips",
    );
    let t = base() + "\n[meta]\ntick = \"1s\"\nheartbeat_interval = \"500ms\"\n";
    assert_problem(&t, "meta.heartbeat_interval", "shorter than the tick");
    let t = base() + "\n[meta]\nheartbeat_interval = \"1s\"\nelection_timeout = \"1500ms\"\n";
    assert_problem(
        &t,
        "meta.election_timeout",
        "less than two heartbeat intervals",
    );
    let t = base() + "\n[meta]\ntick = \"5ms\"\n";
    assert_problem(&t, "meta.tick", "out of range");
}

#[test]
fn overlapping_subnets_across_sites() {
    let t = edit(
        &base(),
        r#"subnets = ["127.2.0.0/16"]"#,
        r#"subnets = ["127.2.0.0/16", "127.1.128.0/17"]"#,
    );
    let ps = problems(&t);
    assert!(ps.contains(&Problem {
        key: "site[1].subnets[1]".into(),
        message: r#"subnet 127.1.128.0/17 overlaps 127.1.0.0/16 of site "a" (site[0].subnets[0])"#
            .into(),
    }));
}

#[test]
fn overlapping_subnets_in_one_site() {
    let t = edit(
        &base(),
        r#"subnets = ["127.1.0.0/16"]"#,
        r#"subnets = ["127.1.0.0/16", "127.1.5.0/24"]"#,
    );
    assert_problem(
        &t,
        "site[0].subnets[1]",
        r#"overlaps 127.1.0.0/16 of site "a" (site[0].subnets[0])"#,
    );
    // A supernet declared later is the one reported.
    let t = edit(
        &base(),
        r#"subnets = ["127.3.0.0/16"]"#,
        r#"subnets = ["127.3.0.0/16", "127.0.0.0/8"]"#,
    );
    assert_problem(
        &t,
        "site[2].subnets[1]",
        "subnet 127.0.0.0/8 overlaps 127.1.0.0/16",
    );
    assert_problem(
        &t,
        "site[2].subnets[1]",
        "subnet 127.0.0.0/8 overlaps 127.3.0.0/16",
    );
}

#[test]
fn node_address_in_no_site() {
    let t = base()
        + "\n[[node]]\nname = \"stray\"\naddress = \"10.9.0.1:7100\"\nroles = [\"access\"]\n";
    assert_problem(&t, "node[12].address", "10.9.0.1 is in no site's subnets");
}

#[test]
fn replication_factor_larger_than_sites() {
    let t = edit(&base(), "replication_factor = 3", "replication_factor = 4");
    let ps = problems(&t);
    assert_eq!(
        ps,
        [Problem {
            key: "cluster.replication_factor".into(),
            message: "4 is larger than the number of sites (3)".into()
        }]
    );
    let t = edit(&base(), "replication_factor = 3", "replication_factor = 0");
    assert_problem(&t, "cluster.replication_factor", "too small");
}

#[test]
fn write_site_needs_two_cores() {
    let t = edit(
        &base(),
        "name = \"c-core-2\"\naddress = \"127.3.0.12:7100\"\nroles = [\"core\"]",
        "name = \"c-core-2\"\naddress = \"127.3.0.12:7100\"\nroles = [\"access\"]",
    );
    let ps = problems(&t);
    assert_eq!(
        ps,
        [Problem {
            key: "site[2]".into(),
            message: r#"site "c": takes writes but has 1 core server (needs at least 2)"#.into()
        }]
    );
    // Not taking writes, one core server is fine.
    let t = edit(
        &t,
        "subnets = [\"127.3.0.0/16\"]",
        "subnets = [\"127.3.0.0/16\"]\ntakes_writes = false",
    );
    let c = ClusterConfig::from_toml_str(&t).unwrap();
    assert!(!c.sites[2].takes_writes);
}

#[test]
fn replication_needs_sites_with_cores() {
    // Site c keeps no core servers at all: 3 copies cannot be placed.
    let mut t = base();
    for n in [11, 12] {
        let addr = format!("address = \"127.3.0.{n}:7100\"\nroles = ");
        t = edit(
            &t,
            &format!("{addr}[\"core\"]"),
            &format!("{addr}[\"access\"]"),
        );
    }
    let t = edit(
        &t,
        "subnets = [\"127.3.0.0/16\"]",
        "subnets = [\"127.3.0.0/16\"]\ntakes_writes = false",
    );
    assert_problem(
        &t,
        "cluster.replication_factor",
        "only 2 sites have any (a, b)",
    );
}

#[test]
fn duplicate_names_and_addresses() {
    let t = edit(&base(), "name = \"c\"", "name = \"b\"");
    assert_problem(
        &t,
        "site[2].name",
        r#"duplicate site name "b" (also site[1])"#,
    );

    let t = base()
        + "\n[[node]]\nname = \"a-core-1\"\naddress = \"127.1.0.99:7100\"\nroles = [\"access\"]\n";
    assert_problem(
        &t,
        "node[12].name",
        r#"duplicate node name "a-core-1" (also node[0])"#,
    );

    let t =
        base() + "\n[[node]]\nname = \"x\"\naddress = \"127.1.0.11:7100\"\nroles = [\"access\"]\n";
    assert_problem(
        &t,
        "node[12].address",
        r#"duplicate address 127.1.0.11:7100 (also node[0] "a-core-1")"#,
    );

    let t = edit(
        &base(),
        "data_dir = \"/tmp/geonfs/b-meta\"",
        "data_dir = \"/tmp/geonfs/a-meta\"",
    );
    assert_problem(
        &t,
        "node[6].data_dir",
        r#"duplicate data_dir "/tmp/geonfs/a-meta" (also node[2] "a-meta")"#,
    );

    let t = edit(
        &base(),
        "roles = [\"access\"]",
        "roles = [\"access\"]\nmetrics_address = \"127.1.0.11:7100\"",
    );
    assert_problem(
        &t,
        "node[3].metrics_address",
        r#"127.1.0.11:7100 is already used by node[0] "a-core-1" as its address"#,
    );
}

#[test]
fn unknown_keys() {
    let t = format!("bogus = 1\n{}", base());
    assert_problem(&t, "bogus", "unknown key");

    let t = edit(&base(), "capacity = \"10GiB\"", "capacty = \"10GiB\"");
    assert_problem(
        &t,
        "node[0].capacty",
        "unknown key (did you mean `capacity`?)",
    );
    assert_problem(&t, "node[0].capacity", "missing");

    let t = with_nfs("export = \"/x\"\n[nfs.extra]\na = 1\n");
    assert_problem(&t, "nfs.export", "unknown key");
    assert_problem(&t, "nfs.extra", "unknown key");
}

#[test]
fn bad_values() {
    let t = edit(&base(), "capacity = \"10GiB\"", "capacity = \"12 XB\"");
    assert_problem(
        &t,
        "node[0].capacity",
        r#"cannot parse "12 XB" as a size (expected e.g. "100GiB", "4MiB", "512KiB")"#,
    );

    let t = base()
        + "\n[[wan]]\nbetween = [\"a\", \"b\"]\nrtt = \"50 parsecs\"\nbandwidth = \"100 Mbps\"\n";
    assert_problem(
        &t,
        "wan[0].rtt",
        r#"cannot parse "50 parsecs" as a duration"#,
    );
    assert_problem(
        &t,
        "wan[0].bandwidth",
        r#"cannot parse "100 Mbps" as a bandwidth"#,
    );

    let t = edit(&base(), "\"127.2.0.0/16\"", "\"127.2.0.0/33\"");
    assert_problem(
        &t,
        "site[1].subnets[0]",
        r#"cannot parse "127.2.0.0/33" as a subnet"#,
    );

    let t = edit(&base(), "\"127.2.0.0/16\"", "\"127.2.0.7/16\"");
    assert_problem(
        &t,
        "site[1].subnets[0]",
        "host bits set (did you mean 127.2.0.0/16?)",
    );

    let t = edit(
        &base(),
        "address = \"127.1.0.12:7100\"",
        "address = \"127.1.0.12\"",
    );
    assert_problem(
        &t,
        "node[1].address",
        "cannot parse \"127.1.0.12\" as an address",
    );

    let t = edit(
        &base(),
        "roles = [\"meta\"]",
        "roles = [\"meta\", \"metta\", \"meta\"]",
    );
    assert_problem(&t, "node[2].roles[1]", "unknown role \"metta\"");
    assert_problem(&t, "node[2].roles[2]", "listed twice");

    let t = edit(&base(), "name = \"a-core-1\"", "name = \"A_core\"");
    assert_problem(&t, "node[0].name", "may only contain");
    // A node's name is what its TLS certificate names: a DNS label.
    let long = "n".repeat(64);
    for (name, fragment) in [
        ("-core", "must not start or end with '-'"),
        ("core-", "must not start or end with '-'"),
        ("1234", "must contain a letter"),
        (long.as_str(), "longer than 63 characters"),
        ("operator", "is reserved"),
        ("ca", "is reserved"),
    ] {
        let t = edit(
            &base(),
            "name = \"a-core-1\"",
            &format!("name = \"{name}\""),
        );
        assert_problem(&t, "node[0].name", fragment);
    }
    let t = edit(
        &base(),
        "name = \"a-core-1\"",
        &format!("name = \"{}\"", &long[..63]),
    );
    ClusterConfig::from_toml_str(&t).unwrap();

    let t = edit(
        &base(),
        "replication_factor = 3",
        "replication_factor = 3\nblock_size = \"3MiB\"",
    );
    assert_problem(&t, "cluster.block_size", "not a power of two");
    let t = edit(
        &base(),
        "replication_factor = 3",
        "replication_factor = 3\nblock_size = \"128MiB\"",
    );
    assert_problem(
        &t,
        "cluster.block_size",
        "out of range (expected 64KiB to 64MiB)",
    );
    for lease in ["500ms", "601s"] {
        let t = edit(
            &base(),
            "replication_factor = 3",
            &format!("replication_factor = 3\nownership_lease = \"{lease}\""),
        );
        assert_problem(
            &t,
            "cluster.ownership_lease",
            "out of range (expected 1s to 600s",
        );
    }
    let t = edit(
        &base(),
        "replication_factor = 3",
        "replication_factor = 3\nownership_lease = \"ten seconds\"",
    );
    assert_eq!(problems(&t).len(), 1, "{:?}", problems(&t));
    assert_eq!(problems(&t)[0].key, "cluster.ownership_lease");
    // Automatic failover: off unless set, never before a lease runs out.
    assert_eq!(
        ClusterConfig::from_toml_str(&base())
            .unwrap()
            .cluster
            .auto_failover_after,
        None
    );
    let t = edit(
        &base(),
        "replication_factor = 3",
        "replication_factor = 3\nauto_failover_after = \"90s\"",
    );
    let c = ClusterConfig::from_toml_str(&t).unwrap();
    assert_eq!(c.cluster.auto_failover_after, Some(Duration::from_secs(90)));
    for after in ["5s", "86401s"] {
        let t = edit(
            &base(),
            "replication_factor = 3",
            &format!("replication_factor = 3\nauto_failover_after = \"{after}\""),
        );
        assert_problem(
            &t,
            "cluster.auto_failover_after",
            "out of range (expected the ownership lease, 10s,",
        );
    }
}

#[test]
fn wrong_types_are_problems() {
    let t = edit(
        &base(),
        "replication_factor = 3",
        "replication_factor = \"three\"",
    );
    let t = edit(&t, "roles = [\"meta\"]", "roles = \"meta\"");
    assert_problem(
        &t,
        "cluster.replication_factor",
        r#"expected an integer, found string "three""#,
    );
    assert_problem(
        &t,
        "node[2].roles",
        "expected an array of strings, found string",
    );
    // A wrong type is reported once, not also as "empty" or "bad name".
    let t = edit(&base(), "name = \"a-core-1\"", "name = 7");
    let ps = problems(&t);
    assert_eq!(
        ps.iter().filter(|p| p.key == "node[0].name").count(),
        1,
        "{ps:?}"
    );
    // Integer sizes are bytes.
    let t = edit(&base(), "capacity = \"10GiB\"", "capacity = 10737418240");
    let c = ClusterConfig::from_toml_str(&t).unwrap();
    assert_eq!(c.nodes[0].capacity, 10 << 30);
}

#[test]
fn meta_voters() {
    let t = edit(
        &base(),
        "replication_factor = 3",
        "replication_factor = 3\nmeta_voters = [\"a-meta\", \"zz\"]",
    );
    assert_problem(&t, "cluster.meta_voters[1]", r#"no node is named "zz""#);
    let t = edit(
        &base(),
        "replication_factor = 3",
        "replication_factor = 3\nmeta_voters = [\"a-core-1\"]",
    );
    assert_problem(
        &t,
        "cluster.meta_voters[0]",
        r#"node "a-core-1" does not have role meta"#,
    );
    let t = edit(
        &base(),
        "replication_factor = 3",
        "replication_factor = 3\nmeta_voters = []",
    );
    assert_problem(&t, "cluster.meta_voters", "is empty");
    let t = edit(
        &base(),
        "replication_factor = 3",
        "replication_factor = 3\nmeta_voters = [\"b-meta\"]",
    );
    let c = ClusterConfig::from_toml_str(&t).unwrap();
    assert_eq!(c.cluster.meta_voters, ["b-meta"]);
}

#[test]
fn core_node_needs_data_dir() {
    let t = edit(&base(), "data_dir = \"/tmp/geonfs/a-core-1\"\n", "");
    assert_problem(
        &t,
        "node[0].data_dir",
        r#"missing: node "a-core-1" has role core"#,
    );
    let t = edit(&base(), "data_dir = \"/tmp/geonfs/b-meta\"\n", "");
    assert_problem(
        &t,
        "node[6].data_dir",
        r#"missing: node "b-meta" has role meta"#,
    );
}

#[test]
fn wan_problems() {
    let wan = |between: &str| format!("\n[[wan]]\nbetween = {between}\nrtt = \"10ms\"\n");
    let t = base() + &wan(r#"["a", "x"]"#);
    assert_problem(&t, "wan[0].between[1]", r#"no site is named "x""#);
    let t = base() + &wan(r#"["a", "a"]"#);
    assert_problem(&t, "wan[0].between", r#""a" is listed twice"#);
    let t = base() + &wan(r#"["a", "b"]"#) + &wan(r#"["b", "a"]"#);
    assert_problem(
        &t,
        "wan[1].between",
        r#"duplicate link between "b" and "a" (also wan[0])"#,
    );
    let t = base() + &wan(r#"["a", "b", "c"]"#);
    assert_problem(&t, "wan[0].between", "found 3 names");
}

#[test]
fn many_problems_at_once() {
    let t = edit(
        &base(),
        "replication_factor = 3",
        "replication_factor = 5\nblock_size = \"1KiB\"",
    );
    let t = edit(&t, "capacity = \"10GiB\"", "capacity = \"lots\"\nspeed = 3");
    let t = edit(&t, "name = \"c\"", "name = \"b\"");
    let t = edit(
        &t,
        "address = \"127.2.0.21:7100\"",
        "address = \"10.0.0.1:7100\"",
    );
    let t = t + "\nexport_path = \"x\"\n\n[[wan]]\nbetween = [\"a\", \"q\"]\nrtt = \"soon\"\n";
    let err = ClusterConfig::from_toml_str(&t).unwrap_err();
    let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    for k in [
        "node[0].speed",
        "cluster.replication_factor",
        "cluster.block_size",
        "node[0].capacity",
        "site[2].name",
        "node[6].address",
        "nfs.export_path",
        "wan[0].between[1]",
        "wan[0].rtt",
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
    // Display lists every problem, one per line.
    let shown = err.to_string();
    assert!(shown.starts_with(&format!("invalid configuration: {} problems", keys.len())));
    assert_eq!(shown.lines().count(), keys.len() + 1, "{shown}");
    assert!(shown.contains("\nnode[0].speed: unknown key"), "{shown}");
}

#[test]
fn syntax_errors() {
    let err = ClusterConfig::from_toml_str("[cluster]\nname = \"x\"\nfoo\n").unwrap_err();
    let ConfigError::Syntax { message } = err else {
        panic!("expected a syntax error, got {err}");
    };
    assert!(message.contains("line 3, column 4"), "{message}");
    // A table of the wrong type is fatal but still located.
    let err = ClusterConfig::from_toml_str("site = 3\n").unwrap_err();
    assert!(
        matches!(&err, ConfigError::Syntax { message } if message.contains("line 1")),
        "{err}"
    );
    let err = ClusterConfig::from_toml_str("").unwrap_err();
    let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["cluster", "site", "node", "tls"]);
}

#[test]
fn toml_round_trip() {
    let t = edit(
        &base(),
        "replication_factor = 3",
        "replication_factor = 2\nblock_size = \"1MiB\"\nownership_lease = \"2500ms\"",
    );
    let t = edit(
        &t,
        "subnets = [\"127.3.0.0/16\"]",
        "subnets = [\"127.3.0.0/16\", \"fd00:3::/48\"]\ntakes_writes = false",
    );
    let t = edit(&t, "roles = [\"access\"]", "roles = [\"access\", \"meta\"]\ndata_dir = \"/tmp/geonfs/a-access\"\nmetrics_address = \"[fd00:3::1]:9100\"");
    let t = edit(
        &t,
        "allowed_clients = [\"127.0.0.0/8\"]\n",
        "export_path = \"/\"\nport = 0\nportmapper = false\nallowed_clients = [\"10.0.0.0/8\", \"fd00::/16\"]\nread_only = true\nroot_squash = true\nno_root_squash = [\"10.1.0.0/16\", \"fd00:1::7\"]\nanon_uid = 1\nanon_gid = 2\nattribute_cache = \"250ms\"\nidle_timeout = \"90s\"\nmax_connections = 100\nmax_connections_per_client = 10\n",
    ) + "\n[[wan]]\nbetween = [\"b\", \"a\"]\nrtt = \"1.5ms\"\nbandwidth = \"100Mbit/s\"\n"
        + "\n[[wan]]\nbetween = [\"a\", \"c\"]\nrtt = \"250us\"\n";
    let c = ClusterConfig::from_toml_str(&t).unwrap();
    let text = c.to_toml_string();
    let back = ClusterConfig::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(back, c, "{text}");
    assert_eq!(back.to_toml_string(), text);
}

#[test]
fn template_is_valid_once_its_placeholder_secret_is_replaced() {
    let template = include_str!("../../geonfs.example.toml");
    let err = ClusterConfig::from_toml_str(template).unwrap_err();
    assert_eq!(
        err.problems()
            .iter()
            .map(|p| p.key.as_str())
            .collect::<Vec<_>>(),
        ["cluster.secret", "tls.dir"],
        "{err}"
    );
    assert!(
        err.to_string().contains("the template's placeholder"),
        "{err}"
    );
    assert!(err.to_string().contains("geonfs cert init"), "{err}");
    let tls = tempfile::tempdir().unwrap();
    std::fs::write(tls.path().join("ca.crt"), "").unwrap();
    let text = edit(
        template,
        "change-me-to-a-long-random-string",
        "3f0c1e29a7d84b6e9c05f1a2b3c4d5e6",
    );
    let text = edit(
        &text,
        "dir = \"/etc/geonfs/tls\"",
        &format!("dir = {:?}", tls.path().display().to_string()),
    );
    let c = ClusterConfig::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.sites.len(), 3);
    assert_eq!(c.nodes.len(), 15);
    for (i, s) in c.sites.iter().enumerate() {
        let on_site: Vec<_> = c
            .nodes
            .iter()
            .filter(|n| usize::from(n.site.0) == i)
            .collect();
        assert_eq!(
            on_site.iter().filter(|n| n.roles.core).count(),
            3,
            "site {}",
            s.name
        );
        assert_eq!(on_site.iter().filter(|n| n.roles.meta).count(), 1);
        assert_eq!(on_site.iter().filter(|n| n.roles.access).count(), 1);
    }
    let back = ClusterConfig::from_toml_str(&c.to_toml_string()).unwrap();
    assert_eq!(back, c);
}
