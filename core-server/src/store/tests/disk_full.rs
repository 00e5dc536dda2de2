//! A store on a small real file system (a tmpfs mounted for the test; needs
//! root, as the suite runs): writes stop with `OutOfSpace` [`DISK_HEADROOM`]
//! short of full, whatever the configured capacity; nothing acknowledged is
//! lost or torn; and writing resumes by itself once space returns.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use geonfs_proto::domain::Durability;

use super::{block, open, pattern, read, read_all, write, MIB};
use crate::store::DISK_HEADROOM;
use crate::CoreError;

/// A tmpfs of `bytes` mounted on a fresh directory, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(bytes: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs needs root: {status}");
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes `len` bytes to a new file at `path`.
fn ballast(path: &PathBuf, len: u64) {
    std::fs::write(path, vec![0x5a; len as usize]).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_short_of_full_loses_nothing_and_recovers() {
    // (RocksDB preallocates its WAL, about 70 MiB, out of the rest.)
    let disk = SmallDisk::mount(DISK_HEADROOM + 160 * MIB);
    let data_dir = disk.path().join("core");
    // A capacity far beyond the disk: the disk is what runs out.
    let store = open(&data_dir, 1 << 40);
    let spare = disk.path().join("ballast");
    ballast(&spare, 32 * MIB);

    let mut acknowledged = Vec::new();
    let refused = loop {
        let index = acknowledged.len() as u64;
        assert!(index < 200, "160 MiB of disk took 200 MiB of writes");
        let b = block(9, index);
        let data = pattern(MIB as usize, index as u8);
        match store
            .write(write(b, 0, data.clone(), 1, Durability::Durable))
            .await
        {
            Ok(_) => acknowledged.push((b, data)),
            Err(err) => break (b, err),
        }
    };
    let (refused_block, err) = refused;
    assert!(matches!(err, CoreError::OutOfSpace { .. }), "{err}");
    assert_eq!(
        tonic::Status::from(err).code(),
        tonic::Code::ResourceExhausted
    );
    assert!(!acknowledged.is_empty(), "the first write fits");
    // Nothing half-written: the refused block is absent, every acknowledged
    // one reads back whole.
    assert!(store
        .read(read(refused_block, 0, 1))
        .await
        .unwrap()
        .is_none());
    for (b, data) in &acknowledged {
        assert_eq!(&read_all(&store, *b, 0, MIB).await, data, "{b:?}");
    }
    // Space returns (the operator removes something): writes resume by
    // themselves, without a restart.
    std::fs::remove_file(&spare).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let data = pattern(MIB as usize, 0xee);
    loop {
        match store
            .write(write(
                refused_block,
                0,
                data.clone(),
                1,
                Durability::Durable,
            ))
            .await
        {
            Ok(_) => break,
            Err(CoreError::OutOfSpace { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => panic!("after space returned: {err}"),
        }
    }
    assert_eq!(read_all(&store, refused_block, 0, MIB).await, data);
    store.close(true).await.unwrap();
}
