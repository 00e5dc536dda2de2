//! A short run of the RPC fuzzer (`geonfs_testkit::rpc_fuzz`) against a
//! live export: mutated NFS, MOUNT and PORTMAP frames over TCP, with no
//! panic, no hang, and the export answering a well-formed client after.
//! The bench's `rpc_fuzz` runs the same with a million frames.

use geonfs_testkit::rpc_fuzz::{run_on_test_cluster, FuzzOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutated_frames_never_panic_hang_or_stop_the_export() {
    let options = FuzzOptions {
        seed: 20261204,
        frames: 40_000,
        ..FuzzOptions::default()
    };
    let report = run_on_test_cluster(&options).await.unwrap();
    println!("{report:?}");
    assert_eq!(report.failure(), None, "{report:?}");
    assert_eq!(report.frames + report.unsent, options.frames, "{report:?}");
    // The run reached the programs, not only the record layer: most
    // frames were answered.
    assert!(report.replies * 2 > report.frames, "{report:?}");
    assert!(
        report.closed_by_server > 0,
        "some frames are unreadable records: {report:?}"
    );
}
