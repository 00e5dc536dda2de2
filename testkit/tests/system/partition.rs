//! What keeps working when the WAN between two sites is cut while both
//! still reach the meta-kvs majority (the third site's voter): the README's
//! behaviour table, row "one site cut from one other".
//!
//! An owner writes only under its ownership lease, renewed through the
//! meta-kvs leader. A site cut from the leader's site cannot renew (a
//! voter of its own or of the third site does not forward its requests),
//! so past one lease it refuses writes (JUKEBOX) until the heal, while the
//! leader's side keeps writing. With the leader in the third site both
//! keep writing.

use std::time::{Duration, Instant};

use geonfs_testkit::cluster::TestCluster;
use geonfs_testkit::rng::Rng;
use nfs3_client::nfs3_types::nfs3::*;

use crate::support::init_logging;
use crate::support::lease::{LEASE, PATIENCE};
use crate::support::nfs::write;
use crate::support::sites::{
    apply, read_status, small_blocks_with, try_write, verify_at, verify_everywhere,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sites_cut_apart_the_leaders_side_keeps_writing_the_other_stops_at_its_lease_and_c_serves_both(
) {
    init_logging();
    let builder = TestCluster::builder()
        .attribute_cache(Duration::ZERO)
        .ownership_lease(LEASE);
    let (cluster, mut sites) = small_blocks_with(builder, true, &["a", "b", "c"]).await;
    let mut rng = Rng::new(0x6375_7431);
    let (fa, fb) = (
        sites.create("a", "at-a.img").await,
        sites.create("b", "at-b.img").await,
    );
    let (mut model_a, mut model_b) = (Vec::new(), Vec::new());
    let first = rng.bytes(300_000);
    write(sites.at("a"), &fa, 0, &first, stable_how::FILE_SYNC).await;
    apply(&mut model_a, 0, &first);
    let first = rng.bytes(300_000);
    write(sites.at("b"), &fb, 0, &first, stable_how::FILE_SYNC).await;
    apply(&mut model_b, 0, &first);

    cluster.cut_sites("a", "b").unwrap();
    // Through three leases, the site on the meta-kvs leader's side of the
    // cut (both, with the leader at c) keeps writing its own file (no WAN
    // on the write path); the other writes until its lease runs out.
    let leader = cluster.meta_leader().await.expect("a meta leader");
    let leader_site = leader[..1].to_string();
    tracing::info!(%leader, "meta-kvs leader during the cut");
    let cut_from_leader =
        |site: &str| matches!((site, leader_site.as_str()), ("a", "b") | ("b", "a"));
    let cut = Instant::now();
    let mut stopped = None;
    let waiting = |stopped: Option<Duration>| leader_site != "c" && stopped.is_none();
    while cut.elapsed() < LEASE * 3 || (waiting(stopped) && cut.elapsed() < PATIENCE) {
        for (site, fh, model) in [("a", &fa, &mut model_a), ("b", &fb, &mut model_b)] {
            if cut_from_leader(site) && stopped.is_some() {
                continue;
            }
            let data = rng.bytes(4096);
            let offset = 4096 * rng.below(16);
            match try_write(sites.at(site), fh, offset, &data, stable_how::FILE_SYNC).await {
                Ok(()) => apply(model, offset, &data),
                Err(nfsstat3::NFS3ERR_JUKEBOX) if cut_from_leader(site) => {
                    tracing::info!(
                        site,
                        ms = cut.elapsed().as_millis() as u64,
                        "writes stopped"
                    );
                    stopped = Some(cut.elapsed());
                }
                Err(status) => panic!("site {site} writing its own file, cut: {status}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if leader_site != "c" {
        assert!(
            stopped.is_some(),
            "the site cut from the leader stopped writing"
        );
    }

    // Site c reaches both owners: it reads both files, newest bytes.
    let mut at_c = sites;
    verify_at(&mut at_c, "c", &fa, &model_a, "a's file at c, a and b cut").await;
    verify_at(&mut at_c, "c", &fb, &model_b, "b's file at c, a and b cut").await;
    // Across the cut, the other site's file is not served stale: a read
    // at b of a's file is refused (the client retries).
    let status = read_status(at_c.at("b"), &fa, 0).await;
    tracing::info!(?status, "a's file read at b across the cut");
    assert_ne!(status, nfsstat3::NFS3_OK, "b cannot reach a's newest bytes");
    // A write at b into a's file needs a handover, which must fence a's
    // cores: refused while cut (JUKEBOX), never split.
    let at_b = rng.bytes(1000);
    let refused = try_write(at_c.at("b"), &fa, 0, &at_b, stable_how::FILE_SYNC).await;
    tracing::info!(?refused, "a's file written at b across the cut");
    assert_ne!(refused, Ok(()), "b took a's file over across the cut");

    cluster.heal_all();
    verify_everywhere(&mut at_c, &fa, &model_a, "a's file after the heal").await;
    verify_everywhere(&mut at_c, &fb, &model_b, "b's file after the heal").await;
}
