//! READDIR and READDIRPLUS over a directory of 100 000 entries, through the
//! access server of a 1-site cluster (1 core, 1 meta voter), driven by
//! `nfs3_client`: complete listings and cookies that stay valid while the
//! directory changes under a listing.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use geonfs_access_server::namespace::keys::{cookie_key, id_counter_key, inode_key, name_key};
use geonfs_access_server::namespace::record::{
    decode_counter, decode_inode, encode_entry, encode_inode, encode_name, NameEntry,
};
use geonfs_access_server::namespace::{FileKind, Inode, Timestamp, ROOT_ID};
use geonfs_meta_kvs::MetaClient;
use geonfs_proto::meta::{condition, operation, Condition, KeyValue, Operation, TxnRequest};
use geonfs_testkit::cluster::TestCluster;
use geonfs_testkit::rng::Rng;
use nfs3_client::nfs3_types::nfs3::*;
use nfs3_client::Nfs3Client;

use crate::support::init_logging;
use crate::support::nfs::{
    create, dirop, getattr, lookup, mkdir, mode, mount, nfs, status, Io, CLIENT, EXPORT,
};

const DEADLINE: Duration = Duration::from_secs(60);
/// Entries in the big directory.
const ENTRIES: usize = 100_000;
/// Entries written per meta-kvs transaction by the bulk loader.
const LOAD_CHUNK: usize = 2_500;
/// The `count` of each READDIR.
const PAGE: u32 = 32 << 10;
/// The `dircount` and `maxcount` of each READDIRPLUS (about 210 entries a
/// reply, each entry's inode read from meta-kvs).
const PLUS_PAGE: u32 = 32 << 10;
/// How many entries of each kind the test removes or creates mid-listing.
const CHANGED: usize = 100;

fn file_name(i: usize) -> String {
    format!("f{i:06}")
}

fn condition(key: bytes::Bytes, test: condition::Test) -> Condition {
    Condition {
        key,
        test: Some(test),
    }
}

fn put(key: bytes::Bytes, value: bytes::Bytes) -> Operation {
    Operation {
        op: Some(operation::Op::Put(KeyValue {
            key,
            value,
            version: 0,
        })),
    }
}

/// Reserves `n` fresh file ids by advancing the id allocator's counter
/// (`fs/id`) with a compare-and-set, as `IdAllocator` reserves its ranges:
/// no allocator can hand out an id of the returned range.
async fn reserve_ids(meta: &MetaClient, n: u64) -> u64 {
    loop {
        let (start, version) = match meta.get(id_counter_key()).await.expect("read fs/id") {
            Some(kv) => (decode_counter(&kv.value).expect("fs/id"), kv.version),
            None => (ROOT_ID + 1, 0),
        };
        let end = (start + n).to_be_bytes().to_vec();
        let reply = meta
            .txn(TxnRequest {
                conditions: vec![condition(
                    id_counter_key(),
                    condition::Test::VersionEquals(version),
                )],
                operations: vec![put(id_counter_key(), end.into())],
            })
            .await
            .expect("reserve ids");
        if reply.succeeded {
            return start;
        }
    }
}

/// Test-only bulk loader: adds the regular files `names` to directory `dir`
/// straight in meta-kvs, [`LOAD_CHUNK`] per transaction, because 100 000
/// NFS CREATEs (one Raft commit each) take far too long. It writes the same
/// records CREATE would, with the namespace's own encoders: per file an
/// inode (a copy of `template`, a file CREATE made, with a fresh id
/// reserved from the id counter and a fresh generation), the name entry
/// and the cookie entry with the next sequence numbers of the directory;
/// each transaction also writes the directory inode with `next_seq`,
/// `entries`, mtime and ctime advanced and is conditioned, like CREATE, on
/// the directory's version and on every new name being absent, so the
/// directory is consistent after every chunk. (The directory's change
/// token is left as it was: it only identifies a namespace change whose
/// outcome was unknown, and there is none.) Returns the new files' ids, in
/// the order of `names`.
async fn bulk_load(meta: &MetaClient, dir_id: u64, names: &[String], template: &Inode) -> Vec<u64> {
    assert_eq!(template.kind, FileKind::Regular);
    let first_id = reserve_ids(meta, names.len() as u64).await;
    let mut rng = Rng::new(first_id);
    let mut ids = Vec::with_capacity(names.len());
    for (chunk_index, chunk) in names.chunks(LOAD_CHUNK).enumerate() {
        let kv = meta
            .get(inode_key(dir_id))
            .await
            .expect("read directory")
            .expect("directory exists");
        let dir = decode_inode(dir_id, kv.version, &kv.value).expect("directory inode");
        assert!(dir.is_dir());
        let first_seq = dir.next_seq.max(1);
        let mut conditions = vec![condition(
            inode_key(dir_id),
            condition::Test::VersionEquals(dir.version),
        )];
        let mut operations = Vec::with_capacity(3 * chunk.len() + 1);
        for (i, name) in chunk.iter().enumerate() {
            let id = first_id + (chunk_index * LOAD_CHUNK + i) as u64;
            let seq = first_seq + i as u64;
            let mut inode = template.clone();
            inode.id = id;
            inode.generation = rng.next_u64();
            inode.version = 0;
            let entry = NameEntry {
                id,
                kind: FileKind::Regular,
                seq,
                version: 0,
            };
            let name = name.as_bytes();
            conditions.push(condition(
                name_key(dir_id, name),
                condition::Test::Absent(true),
            ));
            conditions.push(condition(inode_key(id), condition::Test::Absent(true)));
            operations.push(put(inode_key(id), encode_inode(&inode)));
            operations.push(put(name_key(dir_id, name), encode_name(&entry)));
            operations.push(put(
                cookie_key(dir_id, seq),
                encode_entry(name, id, FileKind::Regular),
            ));
            ids.push(id);
        }
        let now = Timestamp::now();
        let mut new_dir = dir.clone();
        new_dir.next_seq = first_seq + chunk.len() as u64;
        new_dir.entries += chunk.len() as u64;
        new_dir.mtime = now;
        new_dir.ctime = now;
        operations.push(put(inode_key(dir_id), encode_inode(&new_dir)));
        let reply = meta
            .txn(TxnRequest {
                conditions,
                operations,
            })
            .await
            .expect("bulk load transaction");
        assert!(reply.succeeded, "bulk load chunk {chunk_index} conflicted");
    }
    ids
}

/// One READDIR page of `dir` after `cookie`.
async fn readdir_page(
    c: &mut Nfs3Client<Io>,
    dir: &nfs_fh3,
    cookie: u64,
    verifier: cookieverf3,
) -> READDIR3resok<'static> {
    let res = c
        .readdir(&READDIR3args {
            dir: dir.clone(),
            cookie,
            cookieverf: verifier,
            count: PAGE,
        })
        .await
        .expect("READDIR rpc");
    match res {
        Nfs3Result::Ok(ok) => ok,
        Nfs3Result::Err((s, _)) => panic!("READDIR after cookie {cookie}: {s}"),
    }
}

/// One READDIRPLUS page of `dir` after `cookie`.
async fn readdirplus_page(
    c: &mut Nfs3Client<Io>,
    dir: &nfs_fh3,
    cookie: u64,
    verifier: cookieverf3,
) -> READDIRPLUS3resok<'static> {
    let res = c
        .readdirplus(&READDIRPLUS3args {
            dir: dir.clone(),
            cookie,
            cookieverf: verifier,
            dircount: PLUS_PAGE,
            maxcount: PLUS_PAGE,
        })
        .await
        .expect("READDIRPLUS rpc");
    match res {
        Nfs3Result::Ok(ok) => ok,
        Nfs3Result::Err((s, _)) => panic!("READDIRPLUS after cookie {cookie}: {s}"),
    }
}

fn name_of(name: &filename3<'_>) -> String {
    String::from_utf8(name.0.to_vec()).expect("names are ASCII")
}

/// One listed entry of a READDIRPLUS listing.
struct Listed {
    fileid: u64,
    cookie: u64,
    attrs: Option<fattr3>,
    handle: Option<nfs_fh3>,
}

/// Appends the entries of a READDIRPLUS page to `listed` (in order),
/// failing on a name listed twice; the page's last cookie.
fn take_plus_page(
    page: READDIRPLUS3resok<'_>,
    listed: &mut Vec<(String, Listed)>,
    seen: &mut HashSet<String>,
    mut cookie: u64,
) -> u64 {
    for entry in page.reply.entries.0 {
        let name = name_of(&entry.name);
        assert!(entry.cookie > cookie, "cookies increase ({name})");
        cookie = entry.cookie;
        assert!(seen.insert(name.clone()), "{name} listed twice");
        let attrs = match entry.name_attributes {
            Nfs3Option::Some(attrs) => Some(attrs),
            Nfs3Option::None => None,
        };
        let handle = match entry.name_handle {
            Nfs3Option::Some(fh) => Some(fh),
            Nfs3Option::None => None,
        };
        listed.push((
            name,
            Listed {
                fileid: entry.fileid,
                cookie: entry.cookie,
                attrs,
                handle,
            },
        ));
    }
    cookie
}

/// The big directory: `names[i]` has file id `id_of[names[i]]`.
struct BigDir {
    handle: nfs_fh3,
    id: u64,
    names: Vec<String>,
    id_of: HashMap<String, u64>,
}

/// What an interrupted READDIRPLUS listing saw, and what changed in the
/// directory half-way through it.
struct PlusListing {
    /// Every entry, in listing order.
    listed: Vec<(String, Listed)>,
    /// The names listed before the changes.
    before: HashSet<String>,
    removed_listed: HashSet<String>,
    removed_unlisted: HashSet<String>,
    created: Vec<String>,
}

/// A directory of 100 000 entries (bulk-loaded into meta-kvs with the
/// namespace's own records) is listed completely through NFS: READDIR pages
/// followed by cookie give `.`, `..` and every name exactly once; a
/// READDIRPLUS listing interrupted half-way while 100 listed and 100
/// unlisted entries are removed and 100 are created, then continued from
/// its last cookie and verifier, lists every entry present throughout
/// exactly once, nothing twice, no removed unlisted entry, and each created
/// entry once (new cookies sort after every old one), with attributes and
/// handles that match LOOKUP.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readdir_100k_entries_with_stable_cookies() {
    init_logging();
    let started = Instant::now();
    let cluster = TestCluster::builder()
        .sites(1)
        .cores_per_site(1)
        .meta_per_site(1)
        .access_per_site(1)
        .without_replication()
        .start()
        .await
        .expect("cluster starts");
    let addr = cluster
        .ready_access("a-access-1", DEADLINE)
        .await
        .expect("the access server is ready");
    let meta = cluster.meta_client("a-meta-1").unwrap();
    let root = mount(CLIENT, addr, EXPORT).await.expect("MNT export");
    let mut c = nfs(CLIENT, addr, 0, 0).await;

    let dir = make_big_dir(&mut c, &meta, &root).await;
    let Nfs3Result::Ok(found) = lookup(&mut c, &root, b"big").await else {
        panic!("LOOKUP big");
    };
    assert_eq!(
        found.object, dir.handle,
        "LOOKUP finds the directory MKDIR made"
    );
    readdir_lists_every_name_once(&mut c, &dir).await;
    let plus = readdirplus_across_changes(&mut c, &dir).await;
    assert_each_entry_listed_once(&dir, &plus);
    assert_attributes_match_lookup(&mut c, &dir, &plus).await;

    drop(c);
    cluster.shutdown().await.unwrap();
    eprintln!("readdir_100k: {:?} in all", started.elapsed());
}

/// `big` under `root`, its first file made by CREATE (the template of the
/// rest), the others bulk-loaded.
async fn make_big_dir(c: &mut Nfs3Client<Io>, meta: &MetaClient, root: &nfs_fh3) -> BigDir {
    let big = mkdir(c, root, "big", 0o755).await;
    let names: Vec<String> = (0..ENTRIES).map(file_name).collect();
    let res = create(c, &big, &names[0], createhow3::GUARDED(mode(0o644))).await;
    let Nfs3Result::Ok(first) = res else {
        panic!("CREATE {}: {}", names[0], status(&res));
    };
    let Nfs3Option::Some(first_attrs) = first.obj_attributes else {
        panic!("CREATE returns attributes");
    };
    let Nfs3Result::Ok(big_attrs) = getattr(c, &big).await else {
        panic!("GETATTR big");
    };
    let big_id = big_attrs.obj_attributes.fileid;
    let template = {
        let kv = meta
            .get(inode_key(first_attrs.fileid))
            .await
            .unwrap()
            .expect("the created inode");
        decode_inode(first_attrs.fileid, kv.version, &kv.value).unwrap()
    };
    let load = Instant::now();
    let mut ids = vec![first_attrs.fileid];
    ids.extend(bulk_load(meta, big_id, &names[1..], &template).await);
    let id_of = names.iter().cloned().zip(ids).collect();
    eprintln!("bulk load of {} entries: {:?}", ENTRIES - 1, load.elapsed());
    BigDir {
        handle: big,
        id: big_id,
        names,
        id_of,
    }
}

/// READDIR, page by page, following cookies: `.`, `..`, then every name
/// once in creation (cookie) order with its file id.
async fn readdir_lists_every_name_once(c: &mut Nfs3Client<Io>, dir: &BigDir) {
    let plain = Instant::now();
    let (mut cookie, mut verifier, mut pages) = (0, cookieverf3::default(), 0);
    let mut listed: Vec<(String, u64)> = Vec::with_capacity(ENTRIES + 2);
    loop {
        pages += 1;
        assert!(pages <= ENTRIES, "the READDIR listing does not end");
        let page = readdir_page(c, &dir.handle, cookie, verifier).await;
        verifier = page.cookieverf;
        let entries = page.reply.entries.0;
        assert!(
            !entries.is_empty() || page.reply.eof,
            "an empty page before eof"
        );
        for entry in entries {
            assert!(entry.cookie > cookie, "READDIR cookies increase");
            cookie = entry.cookie;
            listed.push((name_of(&entry.name), entry.fileid));
        }
        if page.reply.eof {
            break;
        }
    }
    eprintln!(
        "READDIR of {} entries: {pages} pages in {:?}",
        listed.len(),
        plain.elapsed()
    );
    assert!(pages > 10, "{PAGE}-byte pages cannot hold 100 000 names");
    assert_eq!(listed[0], (".".to_string(), dir.id), "`.` first");
    assert_eq!(listed[1], ("..".to_string(), ROOT_ID), "`..` second");
    let listed_names: Vec<&str> = listed[2..].iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(listed_names.len(), ENTRIES, "every entry, once");
    assert_eq!(
        listed_names,
        dir.names.iter().map(String::as_str).collect::<Vec<_>>(),
        "every name exactly once, in creation (cookie) order"
    );
    for (name, fileid) in &listed[2..] {
        assert_eq!(Some(fileid), dir.id_of.get(name), "file id of {name}");
    }
}

/// READDIRPLUS: about half of the listing, then changes through NFS
/// (removals on both sides of the cookie, new names), then the rest of
/// the listing from the last cookie and verifier.
async fn readdirplus_across_changes(c: &mut Nfs3Client<Io>, dir: &BigDir) -> PlusListing {
    let plus = Instant::now();
    let mut listed: Vec<(String, Listed)> = Vec::with_capacity(ENTRIES + 2);
    let mut seen = HashSet::new();
    let (mut cookie, mut verifier) = (0, cookieverf3::default());
    let mut plus_pages = 0;
    while listed.len() < ENTRIES / 2 {
        plus_pages += 1;
        let page = readdirplus_page(c, &dir.handle, cookie, verifier).await;
        verifier = page.cookieverf;
        assert!(!page.reply.eof, "half-way is not the end");
        cookie = take_plus_page(page, &mut listed, &mut seen, cookie);
    }
    let first_half = plus.elapsed();
    let before: HashSet<String> = seen.clone();
    let last_index: usize = listed
        .last()
        .map(|(name, _)| name[1..].parse().unwrap())
        .unwrap();
    assert!(last_index + 1 + 10 * CHANGED < ENTRIES);

    let step = last_index / CHANGED;
    let removed_listed: Vec<String> = (0..CHANGED).map(|k| file_name(k * step + 1)).collect();
    let unlisted = ENTRIES - (last_index + 1);
    let removed_unlisted: Vec<String> = (0..CHANGED)
        .map(|k| file_name(last_index + 1 + k * (unlisted / CHANGED)))
        .collect();
    for name in &removed_listed {
        assert!(before.contains(name), "{name} was listed");
    }
    for name in &removed_unlisted {
        assert!(!before.contains(name), "{name} was not listed");
    }
    for name in removed_listed.iter().chain(&removed_unlisted) {
        let res = c
            .remove(&REMOVE3args {
                object: dirop(&dir.handle, name.as_bytes()),
            })
            .await
            .expect("REMOVE rpc");
        assert_eq!(status(&res), nfsstat3::NFS3_OK, "REMOVE {name}");
    }
    let created: Vec<String> = (0..CHANGED).map(|k| format!("new{k:03}")).collect();
    for name in &created {
        let res = create(c, &dir.handle, name, createhow3::GUARDED(mode(0o600))).await;
        assert_eq!(status(&res), nfsstat3::NFS3_OK, "CREATE {name}");
    }

    let rest = Instant::now();
    loop {
        plus_pages += 1;
        assert!(
            plus_pages <= 2 * ENTRIES,
            "the READDIRPLUS listing does not end"
        );
        let page = readdirplus_page(c, &dir.handle, cookie, verifier).await;
        assert_eq!(page.cookieverf, verifier, "the verifier holds");
        let eof = page.reply.eof;
        cookie = take_plus_page(page, &mut listed, &mut seen, cookie);
        if eof {
            break;
        }
    }
    eprintln!(
        "READDIRPLUS of {} entries: {plus_pages} pages, first half {first_half:?}, rest {:?}",
        listed.len(),
        rest.elapsed()
    );
    PlusListing {
        listed,
        before,
        removed_listed: removed_listed.into_iter().collect(),
        removed_unlisted: removed_unlisted.into_iter().collect(),
        created,
    }
}

/// Every entry present throughout is listed once, no removed unlisted
/// entry is, and every created one is (`take_plus_page` refused every
/// duplicate, so the count settles it).
fn assert_each_entry_listed_once(dir: &BigDir, plus: &PlusListing) {
    let after: HashSet<&str> = plus
        .listed
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| !plus.before.contains(*name))
        .collect();
    assert!(plus.before.contains(".") && plus.before.contains(".."));
    for name in &dir.names {
        if plus.before.contains(name) {
            continue;
        }
        if plus.removed_unlisted.contains(name) {
            assert!(!after.contains(name.as_str()), "removed {name} is listed");
        } else {
            assert!(
                after.contains(name.as_str()),
                "{name}, present throughout, missing"
            );
        }
    }
    for name in &plus.created {
        assert!(after.contains(name.as_str()), "new {name} is listed");
    }
    assert_eq!(
        plus.listed.len(),
        2 + ENTRIES - plus.removed_unlisted.len() + plus.created.len()
    );
    assert!(plus.removed_listed.iter().all(|n| plus.before.contains(n)));
}

/// Attributes and handles: `.`, `..` and a sample of files from both
/// halves of the listing, checked against LOOKUP; cookies are unique and
/// every file carries attributes and a handle.
async fn assert_attributes_match_lookup(c: &mut Nfs3Client<Io>, dir: &BigDir, plus: &PlusListing) {
    let by_name: HashMap<&str, &Listed> = plus
        .listed
        .iter()
        .map(|(name, entry)| (name.as_str(), entry))
        .collect();
    let dot = by_name["."];
    assert_eq!(dot.fileid, dir.id);
    assert_eq!(
        dot.handle.as_ref(),
        Some(&dir.handle),
        "`.` carries big's handle"
    );
    assert_eq!(by_name[".."].fileid, ROOT_ID);
    let removed = |n: &str| plus.removed_listed.contains(n) || plus.removed_unlisted.contains(n);
    let mut sample: Vec<&str> = (0..ENTRIES)
        .step_by(9_973)
        .map(|i| dir.names[i].as_str())
        .filter(|n| !removed(n))
        .collect();
    sample.extend(["new000", "new099"]);
    let mut cookies: Vec<u64> = plus.listed.iter().map(|(_, e)| e.cookie).collect();
    cookies.sort_unstable();
    cookies.dedup();
    assert_eq!(cookies.len(), plus.listed.len(), "cookies are unique");
    for name in sample {
        let entry = by_name[name];
        let Some(attrs) = &entry.attrs else {
            panic!("{name} has no attributes");
        };
        assert_eq!(attrs.type_, ftype3::NF3REG, "{name} is a regular file");
        assert_eq!(attrs.fileid, entry.fileid, "{name}: attributes of its id");
        if let Some(id) = dir.id_of.get(name) {
            assert_eq!(entry.fileid, *id, "{name}: the loaded id");
        }
        let Some(handle) = &entry.handle else {
            panic!("{name} has no handle");
        };
        let Nfs3Result::Ok(found) = lookup(c, &dir.handle, name.as_bytes()).await else {
            panic!("LOOKUP {name}");
        };
        assert_eq!(&found.object, handle, "{name}: the handle LOOKUP gives");
    }
    assert!(
        plus.listed[2..]
            .iter()
            .all(|(_, e)| e.attrs.is_some() && e.handle.is_some()),
        "every file carries attributes and a handle"
    );
}
