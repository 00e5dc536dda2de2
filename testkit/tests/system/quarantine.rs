//! A site cut off (not killed) while it writes, failed over, then healed:
//! the writes it acknowledged but never copied out are set aside
//! (quarantined, listed, readable by an operator) and never merged over
//! the new owner's data, whichever way its clock is skewed (see
//! `core-server/src/store/fence.rs`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use geonfs::quarantine_cli;
use geonfs_access_server::data::ATTR_INDEX;
use geonfs_proto::core::QuarantinedCopy;
use geonfs_proto::domain::{BlockId, FileId};
use geonfs_testkit::cluster::TestCluster;
use geonfs_testkit::replication::{core_registries, wait_drained};
use geonfs_testkit::rng::Rng;
use nfs3_client::nfs3_types::nfs3::*;

use crate::support::init_logging;
use crate::support::lease::{write_retrying, written_at_a, Written, PATIENCE};
use crate::support::nfs::write;
use crate::support::sites::{apply, file_id, owner_record, try_write, verify_everywhere, Sites};

/// The block size of the cluster `written_at_a` starts.
const BLOCK: u64 = 256 * 1024;

fn cores_of<'a>(cluster: &'a TestCluster, site: &'a str) -> impl Iterator<Item = String> + 'a {
    cluster
        .core_names()
        .into_iter()
        .filter(move |name| name.starts_with(&format!("{site}-")))
}

/// Every quarantined copy of `file` on the cores of `site`, as `geonfs
/// quarantine list` shows them: (core, copy).
async fn quarantined(
    cluster: &TestCluster,
    site: &str,
    file: u64,
) -> Vec<(String, QuarantinedCopy)> {
    let cores = quarantine_cli::list(cluster.config(), cluster.network(), Some(site))
        .await
        .unwrap();
    let mut found = Vec::new();
    for core in cores {
        let copies = core
            .copies
            .unwrap_or_else(|err| panic!("{}: {err}", core.core));
        found.extend(
            copies
                .into_iter()
                .filter(|c| c.block.is_some_and(|b| b.file_id == file))
                .map(|copy| (core.core.clone(), copy)),
        );
    }
    found
}

/// Site a writes blocks 1 and 3 while its cores cannot reach the other
/// sites (acknowledged on two cores of a with the file's attribute
/// record, never copied out), is cut off
/// and failed over to b, b writes into block 1; after the heal every site
/// reads b's data, and a's two writes sit in a's quarantine.
async fn late_writes_of_a_lost_owner_are_set_aside(skew_micros: i64, seed: u64) {
    init_logging();
    let Written {
        cluster,
        mut sites,
        fh,
        mut model,
        mut rng,
    } = written_at_a("split.img", 4 * BLOCK as usize, seed).await;
    let file = file_id(&fh);
    cluster.set_clock_skew("a", skew_micros).unwrap();
    let late = write_late_at_a_then_fail_over_to_b(&cluster, &mut sites, &fh, &mut rng).await;
    // The new owner writes into block 1 (a's late write is not in its
    // data: the model never had it).
    let at_b = rng.bytes(20_000);
    write_retrying(sites.at("b"), &fh, BLOCK + 2_000, &at_b).await;
    apply(&mut model, BLOCK + 2_000, &at_b);

    // Healed: a learns of the takeover and sets its late copies aside.
    cluster.heal_all();
    wait_set_aside(&cluster, file, [1, 3, ATTR_INDEX].into()).await;
    let registries = core_registries(&cluster).unwrap();
    assert!(
        wait_drained(&registries, PATIENCE).await.is_some(),
        "replication drained after the heal"
    );
    // Drained: no copy of a has a job left, so none is set aside later.
    let set_aside = quarantined(&cluster, "a", file).await;
    verify_everywhere(&mut sites, &fh, &model, "after the heal").await;
    assert_quarantine_holds_late_writes_only(&cluster, file, &late, &set_aside).await;
    recover_then_drop(&cluster, file, &late, &model, &set_aside).await;
}

/// Site a's cores lose the other sites (its access server keeps its
/// lease) and a writes into blocks 1 and 3; then a is cut off from
/// everything and failed over to b. The late writes, `(offset, bytes)`.
async fn write_late_at_a_then_fail_over_to_b(
    cluster: &TestCluster,
    sites: &mut Sites,
    fh: &nfs_fh3,
    rng: &mut Rng,
) -> Vec<(u64, Vec<u8>)> {
    for a_core in cores_of(cluster, "a") {
        for other in cores_of(cluster, "b").chain(cores_of(cluster, "c")) {
            cluster.cut_nodes(&a_core, &other).unwrap();
        }
    }
    let late: Vec<(u64, Vec<u8>)> = [1u64, 3]
        .iter()
        .map(|&index| (index * BLOCK + 100, rng.bytes(10_000)))
        .collect();
    for (offset, data) in &late {
        write(sites.at("a"), fh, *offset, data, stable_how::FILE_SYNC).await;
    }
    cluster.cut_sites("a", "b").unwrap();
    cluster.cut_sites("a", "c").unwrap();
    let (to, report) = geonfs::failover::failover(
        cluster.config(),
        cluster.network().clone(),
        "a",
        Some("b"),
        false,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!((to.as_str(), report.taken_over), ("b", 1), "{report:?}");
    let (owner, _) = owner_record(cluster, file_id(fh)).await.unwrap();
    assert_eq!(
        (owner.site.as_str(), owner.lost_below),
        ("b", Some(owner.epoch))
    );
    assert_eq!(
        try_write(sites.at("a"), fh, 0, b"late", stable_how::FILE_SYNC).await,
        Err(nfsstat3::NFS3ERR_JUKEBOX),
        "the old owner after the failover"
    );
    late
}

/// Waits until a's quarantine lists exactly `blocks` of `file` (the late
/// writes' blocks and the attribute record they updated).
async fn wait_set_aside(cluster: &TestCluster, file: u64, blocks: BTreeSet<u64>) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let found = quarantined(cluster, "a", file).await;
        let listed: BTreeSet<u64> = found
            .iter()
            .filter_map(|(_, c)| c.block)
            .map(|b| b.index)
            .collect();
        if listed == blocks {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "a's late writes not set aside in time: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The quarantine holds a's late bytes, and no live copy anywhere holds
/// a version of a's late writes.
async fn assert_quarantine_holds_late_writes_only(
    cluster: &TestCluster,
    file: u64,
    late: &[(u64, Vec<u8>)],
    set_aside: &[(String, QuarantinedCopy)],
) {
    for (offset, data) in late {
        let index = offset / BLOCK;
        let within = (offset % BLOCK) as usize;
        let (core, copy) = set_aside
            .iter()
            .find(|(_, c)| c.block.is_some_and(|b| b.index == index))
            .expect("listed");
        let block = copy.block.expect("listed with its block");
        let (_, bytes) = quarantine_cli::get(
            cluster.config(),
            cluster.network(),
            core,
            block,
            copy.version,
        )
        .await
        .unwrap();
        assert_eq!(&bytes[within..within + data.len()], &data[..]);
    }
    let late_versions: BTreeSet<(u64, u64)> = set_aside
        .iter()
        .filter_map(|(_, c)| Some((c.block?.index, c.version)))
        .collect();
    for core in cluster.core_names() {
        let store = cluster.node(&core).unwrap().core().unwrap().store();
        for index in [0, 1, 2, 3, ATTR_INDEX] {
            let block = BlockId {
                file_id: FileId(file),
                index,
            };
            if let Some(info) = store.block_info(block).await.unwrap() {
                assert!(
                    !late_versions.contains(&(index, info.version.0)),
                    "{core} holds a's late version of block {index}"
                );
            }
        }
    }
}

/// The operator's recovery: the current file (`model`) with the
/// quarantined blocks written over it holds a's late writes, and b's data
/// in the blocks a had not written; then the operator drops what they
/// read back and the quarantine is empty.
async fn recover_then_drop(
    cluster: &TestCluster,
    file: u64,
    late: &[(u64, Vec<u8>)],
    model: &[u8],
    set_aside: &[(String, QuarantinedCopy)],
) {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("split.img");
    std::fs::write(&image, model).unwrap();
    let written = quarantine_cli::export(cluster.config(), cluster.network(), file, &image)
        .await
        .unwrap();
    assert_eq!(written.iter().map(|w| w.0).collect::<Vec<_>>(), [1, 3]);
    let recovered = std::fs::read(&image).unwrap();
    for (offset, data) in late {
        let at = *offset as usize;
        assert_eq!(&recovered[at..at + data.len()], &data[..]);
    }
    assert_eq!(&recovered[..BLOCK as usize], &model[..BLOCK as usize]);

    for (core, copy) in set_aside {
        let block = copy.block.expect("listed with its block");
        let dropped = quarantine_cli::drop_copy(
            cluster.config(),
            cluster.network(),
            core,
            block,
            copy.version,
        )
        .await
        .unwrap();
        assert!(dropped, "{core}: {copy:?}");
    }
    assert!(quarantined(cluster, "a", file).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_owners_late_writes_are_quarantined_with_its_clock_30_s_ahead() {
    late_writes_of_a_lost_owner_are_set_aside(30_000_000, 0x5175_6172).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_owners_late_writes_are_quarantined_with_its_clock_30_s_behind() {
    late_writes_of_a_lost_owner_are_set_aside(-30_000_000, 0x5175_6173).await;
}
