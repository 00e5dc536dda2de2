//! A short run of the RPC fuzzer (`geonfs_testkit::rpc_fuzz`) against a
//! live export: mutated NFS, MOUNT and PORTMAP frames over TCP, with no
//! panic, no hang, and the export answering a well-formed client after.
//! The bench's `rpc_fuzz` runs the same with a million frames.

use geonfs_testkit::rpc_fuzz::{one_site_export, run_on_test_cluster, FuzzOptions};

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
    // The run reached the programs, not only the record layer: a good
    // share of the frames was answered (the server closes a connection at
    // its first unreadable record, and the frames after it go unanswered).
    assert!(report.replies * 3 > report.frames, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_announced_large_commit_memory_only_as_their_bytes_arrive() {
    use geonfs_testkit::nfs_client::{self, NfsConn};
    use tokio::io::AsyncWriteExt;

    let (cluster, addr) = one_site_export().await.unwrap();
    let root = nfs_client::mount("127.1.0.9".parse().unwrap(), addr, "/geonfs")
        .await
        .unwrap();
    // 300 connections, each announcing a record just under the 4 MiB
    // limit and sending 100 bytes of it: 1.2 GiB had each reserved its
    // announced size, far over the 256 MiB this process may still map.
    geonfs_testkit::process::bound_address_space(256 << 20).unwrap();
    let mut held = Vec::new();
    for n in 0..300u32 {
        let from = format!("127.1.{}.{}", 1 + n / 200, 1 + n % 200);
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        let mut stream = socket.connect(addr).await.unwrap();
        let header = (0x8000_0000u32 | (4 << 20)).to_be_bytes();
        stream.write_all(&header).await.unwrap();
        stream.write_all(&[0u8; 100]).await.unwrap();
        held.push(stream);
    }
    // The export still answers a well-formed client while they wait.
    let mut conn = NfsConn::connect("127.1.9.9".parse().unwrap(), addr)
        .await
        .unwrap();
    conn.size(&root).await.unwrap();
    drop(held);
    cluster.shutdown().await.unwrap();
}
