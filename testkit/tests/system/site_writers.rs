//! Two access servers of one site writing one file, as when an NFS client
//! moves to the other server of its site or a VM migrates between hosts
//! that mount different servers: each takes the file over from the other
//! before it writes (docs/ARCHITECTURE.md#ownership, "One writer, not one
//! site"), so neither builds on what it remembers of the file — its size,
//! the versions of the blocks it wrote — while the other wrote.

use std::time::{Duration, Instant};

use geonfs_access_server::ownership::record::{self, OwnerRecord};
use geonfs_proto::domain::FileId;
use geonfs_testkit::cluster::TestCluster;
use nfs3_client::nfs3_types::nfs3::*;
use nfs3_client::Nfs3Client;

use crate::support::blocks::{holders, id, pattern};
use crate::support::init_logging;
use crate::support::nfs::{create, mount, nfs, status, try_write_reply, Io, EXPORT};
use crate::support::sites::{apply, file_id, try_read, READY};

const BLOCK_SIZE: u64 = 256 * 1024;
const ACCESS: [&str; 2] = ["a-access-1", "a-access-2"];

/// One site of three cores and two access servers, a client of each, and
/// a new file.
struct TwoWriters {
    cluster: TestCluster,
    clients: Vec<Nfs3Client<Io>>,
    fh: nfs_fh3,
}

async fn two_writers() -> TwoWriters {
    init_logging();
    let cluster = TestCluster::builder()
        .sites(1)
        .cores_per_site(3)
        .access_per_site(2)
        .block_size(BLOCK_SIZE)
        .without_replication()
        .start()
        .await
        .unwrap();
    let mut clients = Vec::new();
    let mut root = None;
    for (i, access) in ACCESS.iter().enumerate() {
        let addr = cluster.ready_access(access, READY).await.unwrap();
        let from = format!("127.1.0.{}", 90 + i);
        if root.is_none() {
            root = Some(mount(&from, addr, EXPORT).await.expect("MNT"));
        }
        clients.push(nfs(&from, addr, 0, 0).await);
    }
    let root = root.expect("two access servers");
    let how = createhow3::GUARDED(sattr3::default());
    let fh = match create(&mut clients[0], &root, "vm.img", how).await {
        Nfs3Result::Ok(ok) => ok.obj.unwrap(),
        res => panic!("CREATE: {}", status(&res)),
    };
    TwoWriters {
        cluster,
        clients,
        fh,
    }
}

impl TwoWriters {
    /// A FILE_SYNC WRITE through access server `server` (0 or 1), retried
    /// while it answers JUKEBOX (a handover waiting for a revocation).
    async fn write(&mut self, server: usize, offset: u64, data: &[u8], model: &mut Vec<u8>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let c = &mut self.clients[server];
            match try_write_reply(c, &self.fh, offset, data, stable_how::FILE_SYNC).await {
                Ok(ok) => {
                    assert_eq!(ok.count, data.len() as u32);
                    apply(model, offset, data);
                    return;
                }
                Err(nfsstat3::NFS3ERR_JUKEBOX) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(s) => panic!("WRITE at {offset} through {}: {s}", ACCESS[server]),
            }
        }
    }

    /// Checks size and bytes through both access servers against `model`.
    async fn verify(&mut self, model: &[u8], step: &str) {
        for (server, access) in ACCESS.iter().enumerate() {
            let c = &mut self.clients[server];
            let size = match c
                .getattr(&GETATTR3args {
                    object: self.fh.clone(),
                })
                .await
                .expect("GETATTR rpc")
            {
                Nfs3Result::Ok(ok) => ok.obj_attributes.size,
                res => panic!("{step}: GETATTR through {access}: {}", status(&res)),
            };
            assert_eq!(size, model.len() as u64, "{step}: size through {access}");
            let got = match try_read(c, &self.fh, 0, model.len() as u64).await {
                Ok(got) => got,
                Err(s) => panic!("{step}: READ through {access}: {s}"),
            };
            assert!(
                got == model,
                "{step}: {access} read {} bytes that differ from what was written \
                 (first difference at {:?})",
                got.len(),
                got.iter().zip(model).position(|(a, b)| a != b)
            );
        }
    }

    async fn owner(&self) -> OwnerRecord {
        let meta = self.cluster.meta_client("a-meta-1").unwrap();
        let kv = meta
            .get(record::owner_key(FileId(file_id(&self.fh))))
            .await
            .unwrap()
            .expect("an owner record");
        record::decode(&kv.value).unwrap()
    }

    fn address(&self, server: usize) -> String {
        self.cluster.addr(ACCESS[server]).unwrap().ip().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_through_the_other_server_takes_the_file_over_and_keeps_the_size() {
    let mut t = two_writers().await;
    let mut model = Vec::new();
    t.write(0, 0, &pattern(1, 4096), &mut model).await;
    let first = t.owner().await;
    assert_eq!(first.writer, t.address(0));
    // The second server extends the file: it becomes the writer.
    t.write(1, 4096, &pattern(2, 4096), &mut model).await;
    let second = t.owner().await;
    assert_eq!(
        (second.site.as_str(), second.writer.clone()),
        ("a", t.address(1))
    );
    assert!(second.epoch > first.epoch, "{first:?} then {second:?}");
    // Back at the first, which remembers a 4 KiB file: a write into the
    // middle must keep the second's extension.
    t.write(0, 100, &pattern(3, 100), &mut model).await;
    assert_eq!(t.owner().await.writer, t.address(0));
    t.verify(&model, "after turns at both servers").await;
    // Reads at the server that is not the writer are served (site-wide)
    // without taking the file over.
    let before = t.owner().await;
    t.verify(&model, "reads only").await;
    assert_eq!(t.owner().await, before);
    t.cluster.shutdown().await.unwrap();
}

/// The fault that would hurt most: a core holding the first server's copy
/// is cut off while the second writes the same block (on another pair),
/// then comes back, still complete at the version the first server wrote
/// last. A first server that still trusted its memory would apply its
/// next partial write on that copy and lose the second's write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_core_cut_while_the_other_server_wrote_never_serves_an_old_block() {
    let mut t = two_writers().await;
    let mut model = Vec::new();
    t.write(0, 0, &pattern(1, 4096), &mut model).await;
    let block = id(file_id(&t.fh), 0);
    let held: Vec<String> = holders(&t.cluster, block).await.into_keys().collect();
    assert_eq!(held.len(), 2, "two copies in the site: {held:?}");
    let cut = held[0].clone();
    t.cluster.isolate_node(&cut).unwrap();
    t.write(1, 4096, &pattern(2, 4096), &mut model).await;
    t.cluster.heal_all();
    t.write(0, 8192, &pattern(3, 4096), &mut model).await;
    t.verify(&model, "after the cut core came back").await;
    let now = holders(&t.cluster, block).await;
    assert!(
        now.contains_key(&cut),
        "the cut core is written again: {now:?}"
    );
    t.cluster.shutdown().await.unwrap();
}
