//! Tests of [`Placement`]: determinism, capacity weights, minimal movement,
//! geo targets, and (proptest) the local pair rule.

use std::collections::HashMap;

use geonfs_proto::domain::{BlockId, FileId};
use geonfs_site_config::{ClusterConfig, SiteId};
use proptest::prelude::*;

use super::{Placement, PlacementError};

/// A config with one site per entry of `sites`, each entry the capacities
/// (in MiB) of that site's core servers; cores are named `<site>-core-<i>`.
fn config(sites: &[&[u64]], n: usize) -> ClusterConfig {
    let mut text = format!(
        "[cluster]\nname = \"t\"\nreplication_factor = {n}\nsecret = \"0123456789abcdef0123\"\n\n[tls]\ninsecure = true\ninsecure_beyond_loopback = true\n\n"
    );
    for (s, _) in sites.iter().enumerate() {
        let name = char::from(b'a' + s as u8);
        text += &format!(
            "[[site]]\nname = \"{name}\"\nsubnets = [\"10.{}.0.0/16\"]\ntakes_writes = false\n\n",
            s + 1
        );
    }
    for (s, caps) in sites.iter().enumerate() {
        let name = char::from(b'a' + s as u8);
        for (i, cap) in caps.iter().enumerate() {
            text += &format!(
                "[[node]]\nname = \"{name}-core-{}\"\naddress = \"10.{}.0.{}:7000\"\nroles = [\"core\"]\n\
                 data_dir = \"/tmp/geonfs-placement/{name}-{i}\"\ncapacity = \"{cap}MiB\"\n\n",
                i + 1,
                s + 1,
                i + 11
            );
        }
    }
    text += "[[node]]\nname = \"m\"\naddress = \"10.1.0.21:7000\"\nroles = [\"meta\"]\n\
             data_dir = \"/tmp/geonfs-placement/m\"\n";
    ClusterConfig::from_toml_str(&text).expect("test config is valid")
}

fn block(i: u64) -> BlockId {
    BlockId {
        file_id: FileId(i / 7 + 1),
        index: i % 7,
    }
}

fn all(_: &str) -> bool {
    true
}

fn names(nodes: &[&geonfs_site_config::Node]) -> Vec<String> {
    nodes.iter().map(|n| n.name.clone()).collect()
}

const A: SiteId = SiteId(0);

#[test]
fn placement_is_deterministic_and_independent_of_config_order() {
    let cfg = config(&[&[100, 100, 200, 100]], 1);
    let mut reversed = cfg.clone();
    reversed.nodes.reverse();
    let (p1, p2, p3) = (
        Placement::new(&cfg),
        Placement::new(&cfg),
        Placement::new(&reversed),
    );
    for i in 0..2000 {
        let ranked = names(&p1.in_site(block(i), A, &all));
        assert_eq!(ranked.len(), 4);
        assert_eq!(ranked, names(&p2.in_site(block(i), A, &all)));
        assert_eq!(ranked, names(&p3.in_site(block(i), A, &all)));
    }
    // Not all blocks land on the same pair.
    let firsts: std::collections::BTreeSet<String> = (0..100)
        .map(|i| p1.in_site(block(i), A, &all)[0].name.clone())
        .collect();
    assert_eq!(firsts.len(), 4);
}

#[test]
fn capacity_weights_are_respected() {
    let p = Placement::new(&config(&[&[100, 100, 200]], 1));
    let mut first: HashMap<String, u64> = HashMap::new();
    let total = 100_000u64;
    for i in 0..total {
        *first
            .entry(p.in_site(block(i), A, &all)[0].name.clone())
            .or_default() += 1;
    }
    let share = |n: &str| first.get(n).copied().unwrap_or(0) as f64 / total as f64;
    // Expected shares 1/4, 1/4, 1/2 (σ ≈ 0.0016).
    assert!((share("a-core-1") - 0.25).abs() < 0.01, "{first:?}");
    assert!((share("a-core-2") - 0.25).abs() < 0.01, "{first:?}");
    assert!((share("a-core-3") - 0.5).abs() < 0.01, "{first:?}");
    let ratio = share("a-core-3") / share("a-core-1");
    assert!((ratio - 2.0).abs() < 0.1, "ratio {ratio}");
}

#[test]
fn a_leaving_core_moves_only_its_own_blocks() {
    let p = Placement::new(&config(&[&[100; 5]], 1));
    let gone = "a-core-3";
    let without = |n: &str| n != gone;
    let mut affected = 0;
    for i in 0..20_000 {
        let before = names(&p.local_pair(block(i), A, &all).unwrap());
        let after = names(&p.local_pair(block(i), A, &without).unwrap());
        if before.iter().any(|n| n == gone) {
            affected += 1;
            let survivor = before.iter().find(|n| *n != gone).unwrap();
            assert!(after.contains(survivor), "{before:?} -> {after:?}");
            assert!(!after.iter().any(|n| n == gone));
        } else {
            assert_eq!(before, after, "block {i} moved without cause");
        }
    }
    // A core is in 2 of 5 pairs.
    let fraction = f64::from(affected) / 20_000.0;
    assert!((fraction - 0.4).abs() < 0.02, "{fraction}");
}

#[test]
fn a_joining_core_takes_about_one_in_k_plus_one() {
    let p = Placement::new(&config(&[&[100; 5]], 1));
    let newcomer = "a-core-5";
    let before_join = |n: &str| n != newcomer;
    let total = 50_000u32;
    let (mut moved_first, mut moved_pair) = (0u32, 0u32);
    for i in 0..total {
        let before = names(&p.local_pair(block(u64::from(i)), A, &before_join).unwrap());
        let after = names(&p.local_pair(block(u64::from(i)), A, &all).unwrap());
        if before[0] != after[0] {
            moved_first += 1;
            assert_eq!(after[0], newcomer, "a move goes to the newcomer only");
        }
        if before != after {
            moved_pair += 1;
            assert!(after.iter().any(|n| n == newcomer));
            // The member that stays keeps its copy.
            assert!(after.iter().any(|n| before.contains(n)));
        }
    }
    let first = f64::from(moved_first) / f64::from(total);
    let pair = f64::from(moved_pair) / f64::from(total);
    // k = 4 cores before: 1/(k+1) = 0.2 of primaries move; 2/5 of pairs change.
    assert!((first - 0.2).abs() < 0.015, "primaries moved: {first}");
    assert!((pair - 0.4).abs() < 0.02, "pairs changed: {pair}");
}

#[test]
fn remote_targets_are_one_core_per_other_site_and_spread() {
    let p = Placement::new(&config(&[&[100; 3], &[100; 3], &[100; 2], &[100; 3]], 3));
    let mut per_site: HashMap<u16, u32> = HashMap::new();
    for i in 0..9000 {
        let targets = p.remote_targets(block(i), A, &all);
        assert_eq!(targets.len(), 2, "n - 1 remote copies");
        assert_ne!(targets[0].site, targets[1].site);
        for t in &targets {
            assert_ne!(t.site, A);
            *per_site.entry(t.site.0).or_default() += 1;
        }
    }
    // Three other sites, two chosen per block: each ≈ 2/3 of the blocks.
    for site in 1..4 {
        let share = f64::from(per_site[&site]) / 9000.0;
        assert!((share - 2.0 / 3.0).abs() < 0.03, "{per_site:?}");
    }
    // A site with no live core is skipped; its blocks go to the next site.
    let b_down = |n: &str| !n.starts_with("b-");
    for i in 0..500 {
        let targets = p.remote_targets(block(i), A, &b_down);
        assert_eq!(targets.len(), 2);
        assert!(targets.iter().all(|t| t.site != SiteId(1) && t.site != A));
    }
}

#[test]
fn a_site_down_keeps_its_target_when_no_other_site_can_take_it() {
    // n = 3 of three sites: both other sites are needed.
    let p = Placement::new(&config(&[&[100; 3], &[100; 3], &[100; 3]], 3));
    let c_down = |n: &str| !n.starts_with("c-");
    for i in 0..500 {
        let targets = p.remote_targets(block(i), A, &c_down);
        let mut sites: Vec<u16> = targets.iter().map(|t| t.site.0).collect();
        sites.sort_unstable();
        assert_eq!(sites, vec![1, 2], "block {i}: {targets:?}");
        // The down site's target is its best core, as if it were up.
        let c = targets.iter().find(|t| t.site == SiteId(2)).unwrap();
        assert_eq!(c.name, p.in_site(block(i), SiteId(2), &all)[0].name);
    }
    // Everything else down too: still n - 1 targets.
    let none = |_: &str| false;
    assert_eq!(p.remote_targets(block(1), A, &none).len(), 2);
}

#[test]
fn not_enough_cores_is_a_clear_error() {
    let p = Placement::new(&config(&[&[100; 3]], 1));
    let only_one = |n: &str| n == "a-core-2";
    let err = p.local_pair(block(1), A, &only_one).unwrap_err();
    assert_eq!(
        err,
        PlacementError::NotEnoughCores {
            site: "a".into(),
            live: 1,
            total: 3
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("site a has 1 live core server(s) of 3"),
        "{text}"
    );
    assert!(text.contains("needs 2 distinct"), "{text}");
    assert!(matches!(
        p.local_pair(block(1), SiteId(9), &all),
        Err(PlacementError::UnknownSite(_))
    ));
}

fn proptest_config() -> ClusterConfig {
    config(&[&[100, 300, 50, 100, 800, 100, 100, 200], &[100; 3]], 2)
}

proptest! {
    #[test]
    fn the_pair_is_two_distinct_live_in_site_cores(
        mask in 0u8..=255,
        file_id in any::<u64>(),
        index in any::<u64>(),
    ) {
        let cfg = proptest_config();
        let p = Placement::new(&cfg);
        let live_names: Vec<String> = (0..8)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| format!("a-core-{}", i + 1))
            .collect();
        let live = |n: &str| live_names.iter().any(|l| l == n) || n.starts_with("b-");
        let id = BlockId { file_id: FileId(file_id), index };
        match p.local_pair(id, A, &live) {
            Ok([x, y]) => {
                prop_assert!(live_names.len() >= 2);
                prop_assert_ne!(&x.name, &y.name);
                prop_assert!(live(&x.name) && live(&y.name));
                prop_assert_eq!(x.site, A);
                prop_assert_eq!(y.site, A);
                let ranked = p.in_site(id, A, &live);
                prop_assert_eq!(ranked.len(), live_names.len());
                prop_assert_eq!(&ranked[0].name, &x.name);
                prop_assert_eq!(&ranked[1].name, &y.name);
            }
            Err(PlacementError::NotEnoughCores { live: n, total, .. }) => {
                prop_assert!(live_names.len() < 2);
                prop_assert_eq!(n, live_names.len());
                prop_assert_eq!(total, 8);
            }
            Err(other) => prop_assert!(false, "unexpected {}", other),
        }
    }
}
