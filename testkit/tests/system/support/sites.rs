//! One NFS client per site of a cluster, and what tests of ownership do
//! with them: write, read, verify at every site, read owner records.

use geonfs_proto::domain::FileId;
use std::net::SocketAddr;
use std::time::Duration;

use geonfs_access_server::ownership::record::{self, OwnerRecord};
use geonfs_block_manager::BlockClient;
use geonfs_testkit::cluster::TestCluster;
use nfs3_client::nfs3_types::nfs3::*;
use nfs3_client::Nfs3Client;

use super::nfs::{create, getattr, mount, nfs, status, try_write_reply, Io, EXPORT};

pub(crate) const READY: Duration = Duration::from_secs(120);

/// One NFS client per site (a client address inside the site's subnet).
pub(crate) struct Sites {
    /// One client per site, in the order of `names`.
    pub clients: Vec<Nfs3Client<Io>>,
    /// The sites' names.
    pub names: Vec<&'static str>,
    /// The export's root handle.
    pub root: nfs_fh3,
}

pub(crate) async fn connect(cluster: &TestCluster, names: &[&'static str]) -> Sites {
    let mut clients = Vec::new();
    let mut root = None;
    for (i, site) in names.iter().enumerate() {
        let addr: SocketAddr = cluster
            .ready_access(&format!("{site}-access-1"), READY)
            .await
            .unwrap();
        let from = format!("127.{}.0.9", i + 1);
        if root.is_none() {
            root = Some(mount(&from, addr, EXPORT).await.expect("MNT"));
        }
        clients.push(nfs(&from, addr, 0, 0).await);
    }
    Sites {
        clients,
        names: names.to_vec(),
        root: root.expect("at least one site"),
    }
}

/// [`small_blocks`] from `builder`.
pub(crate) async fn small_blocks_with(
    builder: geonfs_testkit::cluster::ClusterBuilder,
    replicated: bool,
    names: &[&'static str],
) -> (TestCluster, Sites) {
    let builder = builder.sites(3).block_size(256 * 1024);
    let builder = if replicated {
        builder
    } else {
        builder.without_replication()
    };
    let cluster = builder.start().await.unwrap();
    let sites = connect(&cluster, names).await;
    (cluster, sites)
}

impl Sites {
    pub(crate) fn at(&mut self, site: &str) -> &mut Nfs3Client<Io> {
        let i = self.names.iter().position(|s| *s == site).expect("site");
        &mut self.clients[i]
    }

    pub(crate) async fn create(&mut self, site: &str, name: &str) -> nfs_fh3 {
        let root = self.root.clone();
        match create(
            self.at(site),
            &root,
            name,
            createhow3::UNCHECKED(sattr3::default()),
        )
        .await
        {
            Nfs3Result::Ok(ok) => ok.obj.unwrap(),
            res => panic!("CREATE: {}", status(&res)),
        }
    }
}

/// WRITE of `data` at `offset` whose reply must count all of it, or the
/// status it failed with.
pub(crate) async fn try_write(
    c: &mut Nfs3Client<Io>,
    fh: &nfs_fh3,
    offset: u64,
    data: &[u8],
    stable: stable_how,
) -> Result<(), nfsstat3> {
    let ok = try_write_reply(c, fh, offset, data, stable).await?;
    assert_eq!(ok.count, data.len() as u32);
    Ok(())
}

/// READ of `count` bytes at `offset`, in as many calls as it takes.
pub(crate) async fn read(c: &mut Nfs3Client<Io>, fh: &nfs_fh3, offset: u64, count: u64) -> Vec<u8> {
    match try_read(c, fh, offset, count).await {
        Ok(data) => data,
        Err(s) => panic!("READ at {offset}: {s}"),
    }
}

/// [`read`], or the status of the first READ that failed.
pub(crate) async fn try_read(
    c: &mut Nfs3Client<Io>,
    fh: &nfs_fh3,
    offset: u64,
    count: u64,
) -> Result<Vec<u8>, nfsstat3> {
    let mut out = Vec::new();
    while (out.len() as u64) < count {
        let want = (count - out.len() as u64).min(1 << 20) as u32;
        let res = c
            .read(&READ3args {
                file: fh.clone(),
                offset: offset + out.len() as u64,
                count: want,
            })
            .await
            .expect("READ rpc");
        match res {
            Nfs3Result::Ok(ok) => {
                out.extend_from_slice(ok.data.as_ref());
                if ok.eof || ok.data.is_empty() {
                    break;
                }
            }
            Nfs3Result::Err((s, _)) => return Err(s),
        }
    }
    Ok(out)
}

/// The status of a 1000-byte READ at `offset`.
pub(crate) async fn read_status(c: &mut Nfs3Client<Io>, fh: &nfs_fh3, offset: u64) -> nfsstat3 {
    let res = c
        .read(&READ3args {
            file: fh.clone(),
            offset,
            count: 1000,
        })
        .await
        .expect("READ rpc");
    status(&res)
}

pub(crate) fn file_id(fh: &nfs_fh3) -> u64 {
    // The handle is generation (8 bytes) then the file id (8 bytes, BE).
    let bytes = fh.data.as_ref();
    u64::from_be_bytes(
        bytes[8..16]
            .try_into()
            .expect("a handle holds the file id at bytes 8..16"),
    )
}

/// Applies a write to the model of the file.
pub(crate) fn apply(model: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if model.len() < end {
        model.resize(end, 0);
    }
    model[offset as usize..end].copy_from_slice(data);
}

pub(crate) async fn owner_record(
    cluster: &TestCluster,
    file_id: u64,
) -> Option<(OwnerRecord, u64)> {
    let meta = cluster.meta_client("c-meta-1").unwrap();
    let kv = meta
        .get(record::owner_key(FileId(file_id)))
        .await
        .unwrap()?;
    Some((record::decode(&kv.value).unwrap(), kv.version))
}

pub(crate) fn site_client(cluster: &TestCluster, site: &str, from: &str) -> BlockClient {
    BlockClient::new(
        cluster.network().clone(),
        cluster.config(),
        from.parse().unwrap(),
        cluster.site(site).unwrap(),
    )
    .unwrap()
}

/// Reads the whole file at every site of `sites` (retrying JUKEBOX for up
/// to a minute) and checks size and bytes against `model`.
pub(crate) async fn verify_everywhere(sites: &mut Sites, fh: &nfs_fh3, model: &[u8], step: &str) {
    for i in 0..sites.names.len() {
        verify_at(sites, sites.names[i], fh, model, step).await;
    }
}

/// [`verify_everywhere`] at `site` only.
pub(crate) async fn verify_at(
    sites: &mut Sites,
    site: &str,
    fh: &nfs_fh3,
    model: &[u8],
    step: &str,
) {
    let c = sites.at(site);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let retry = |status: nfsstat3| {
        status == nfsstat3::NFS3ERR_JUKEBOX && std::time::Instant::now() < deadline
    };
    let size = loop {
        match getattr(c, fh).await {
            Nfs3Result::Ok(ok) => break ok.obj_attributes.size,
            res if retry(status(&res)) => tokio::time::sleep(Duration::from_millis(50)).await,
            res => panic!("{step}: GETATTR at site {site}: {}", status(&res)),
        }
    };
    assert_eq!(size, model.len() as u64, "{step}: size at site {site}");
    let got = loop {
        match try_read(c, fh, 0, model.len() as u64).await {
            Ok(got) => break got,
            Err(s) if retry(s) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(s) => panic!("{step}: READ at site {site}: {s}"),
        }
    };
    assert!(
        got == model,
        "{step}: site {site} read {} bytes that differ from the model (first difference at {:?})",
        got.len(),
        got.iter().zip(model).position(|(a, b)| a != b)
    );
}
