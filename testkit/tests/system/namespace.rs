//! The NFS namespace in meta-kvs (`geonfs_access_server::namespace`) against
//! a real cluster: one site, three meta voters.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use geonfs_access_server::namespace::{
    CreateMode, FileKind, Inode, Namespace, NamespaceError, SetAttrs, SetTime, Timestamp, ROOT_ID,
};
use geonfs_testkit::cluster::TestCluster;

use crate::support::{cluster, eventually};

mod failover;

pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

pub(crate) async fn namespace(cluster: &TestCluster) -> Namespace {
    let ns = Namespace::with_id_range(cluster.meta_client("a-meta-1").unwrap(), 16);
    let root = ns.ensure_root().await.expect("root");
    assert_eq!(root.id, ROOT_ID);
    assert!(root.is_dir());
    ns
}

pub(crate) fn attrs() -> SetAttrs {
    SetAttrs::default()
}

async fn create(ns: &Namespace, dir: u64, name: &str) -> u64 {
    ns.create(dir, name.as_bytes(), &attrs(), CreateMode::Guarded)
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"))
        .inode
        .id
}

async fn list(ns: &Namespace, dir: u64) -> Vec<String> {
    let page = ns.readdir(dir, 0, 10_000).await.expect("readdir");
    assert!(page.eof);
    page.entries
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .collect()
}

/// Creates file `f` in the root: mode 0600, owned by 7:8.
async fn file_f(ns: &Namespace) -> Inode {
    let mode = SetAttrs {
        mode: Some(0o600),
        uid: Some(7),
        gid: Some(8),
        ..attrs()
    };
    let made = ns
        .create(ROOT_ID, b"f", &mode, CreateMode::Guarded)
        .await
        .unwrap();
    assert!(made.created);
    made.inode
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespace_create_lookup_getattr_and_create_over_an_existing_name() {
    let cluster = cluster().await;
    let ns = namespace(&cluster).await;
    // ensure_root is idempotent, also from another client.
    let again = Namespace::new(cluster.meta_client("a-meta-2").unwrap());
    assert_eq!(
        again.ensure_root().await.unwrap().generation,
        ns.getattr(ROOT_ID).await.unwrap().generation
    );

    // create / lookup / getattr
    let f = file_f(&ns).await;
    assert_eq!(
        (f.kind, f.mode, f.uid, f.gid, f.size, f.nlink),
        (FileKind::Regular, 0o600, 7, 8, 0, 1)
    );
    assert_eq!(
        ns.lookup(ROOT_ID, b"f").await.unwrap(),
        ns.getattr(f.id).await.unwrap()
    );
    assert_eq!(
        ns.lookup(ROOT_ID, b"f").await.unwrap().generation,
        f.generation
    );
    assert!(matches!(
        ns.lookup(ROOT_ID, b"nope").await,
        Err(NamespaceError::NoEnt)
    ));
    assert!(matches!(
        ns.getattr(999_999).await,
        Err(NamespaceError::Stale(999_999))
    ));
    assert!(matches!(
        ns.lookup(f.id, b"x").await,
        Err(NamespaceError::NotDir)
    ));
    assert_eq!(ns.lookup(ROOT_ID, b".").await.unwrap().id, ROOT_ID);
    assert_eq!(ns.lookup(ROOT_ID, b"..").await.unwrap().id, ROOT_ID);

    // guarded → EEXIST; unchecked returns the file, truncating only on request
    assert!(matches!(
        ns.create(ROOT_ID, b"f", &attrs(), CreateMode::Guarded)
            .await,
        Err(NamespaceError::Exist)
    ));
    ns.setattr(
        f.id,
        &SetAttrs {
            size: Some(100),
            ..attrs()
        },
        None,
    )
    .await
    .unwrap();
    let same = ns
        .create(ROOT_ID, b"f", &attrs(), CreateMode::Unchecked)
        .await
        .unwrap();
    assert!(!same.created);
    assert_eq!((same.inode.id, same.inode.size), (f.id, 100));
    // A size asked for is not applied here: the NFS layer applies it with
    // SETATTR's permission checks.
    let untouched = ns
        .create(
            ROOT_ID,
            b"f",
            &SetAttrs {
                size: Some(0),
                ..attrs()
            },
            CreateMode::Unchecked,
        )
        .await
        .unwrap();
    assert!(!untouched.created);
    assert_eq!((untouched.inode.id, untouched.inode.size), (f.id, 100));
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespace_exclusive_create_is_idempotent_for_its_verifier_only() {
    let cluster = cluster().await;
    let ns = namespace(&cluster).await;
    file_f(&ns).await;
    let x = ns
        .create(ROOT_ID, b"x", &attrs(), CreateMode::Exclusive(*b"verif-01"))
        .await
        .unwrap();
    assert!(x.created);
    let x2 = ns
        .create(ROOT_ID, b"x", &attrs(), CreateMode::Exclusive(*b"verif-01"))
        .await
        .unwrap();
    assert!(!x2.created);
    assert_eq!(x2.inode.id, x.inode.id);
    assert!(matches!(
        ns.create(ROOT_ID, b"x", &attrs(), CreateMode::Exclusive(*b"verif-02"))
            .await,
        Err(NamespaceError::Exist)
    ));
    assert!(matches!(
        ns.create(ROOT_ID, b"f", &attrs(), CreateMode::Exclusive(*b"verif-01"))
            .await,
        Err(NamespaceError::Exist)
    ));
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespace_mkdir_rmdir_and_remove_keep_link_counts_and_stale_ids() {
    let cluster = cluster().await;
    let ns = namespace(&cluster).await;
    file_f(&ns).await;
    let root_before = ns.getattr(ROOT_ID).await.unwrap();
    let d = ns.mkdir(ROOT_ID, b"d", &attrs()).await.unwrap();
    assert_eq!(
        (d.kind, d.nlink, d.parent, d.mode),
        (FileKind::Directory, 2, ROOT_ID, 0o755)
    );
    let root_after = ns.getattr(ROOT_ID).await.unwrap();
    assert_eq!(root_after.nlink, root_before.nlink + 1);
    assert!(root_after.mtime >= root_before.mtime && root_after.ctime >= root_before.ctime);
    assert!(matches!(
        ns.mkdir(ROOT_ID, b"d", &attrs()).await,
        Err(NamespaceError::Exist)
    ));
    assert!(matches!(
        ns.create(ROOT_ID, b"d", &attrs(), CreateMode::Unchecked)
            .await,
        Err(NamespaceError::Exist)
    ));
    let sub = ns.mkdir(d.id, b"sub", &attrs()).await.unwrap();
    assert_eq!(ns.getattr(d.id).await.unwrap().nlink, 3);
    assert_eq!(ns.lookup(sub.id, b"..").await.unwrap().id, d.id);
    let inner = create(&ns, d.id, "inner").await;
    assert_eq!(
        ns.getattr(d.id).await.unwrap().nlink,
        3,
        "files do not count"
    );
    assert!(matches!(
        ns.rmdir(ROOT_ID, b"d").await,
        Err(NamespaceError::NotEmpty)
    ));
    assert!(matches!(
        ns.rmdir(ROOT_ID, b"f").await,
        Err(NamespaceError::NotDir)
    ));
    assert!(matches!(
        ns.remove(ROOT_ID, b"d").await,
        Err(NamespaceError::IsDir)
    ));
    assert!(matches!(
        ns.rmdir(ROOT_ID, b"gone").await,
        Err(NamespaceError::NoEnt)
    ));
    assert_eq!(ns.rmdir(d.id, b"sub").await.unwrap().id, sub.id);
    assert_eq!(ns.getattr(d.id).await.unwrap().nlink, 2);
    assert!(matches!(
        ns.getattr(sub.id).await,
        Err(NamespaceError::Stale(_))
    ));

    // remove returns the inode; its id is stale afterwards
    assert_eq!(ns.remove(d.id, b"inner").await.unwrap().id, inner);
    assert!(matches!(
        ns.getattr(inner).await,
        Err(NamespaceError::Stale(_))
    ));
    assert!(matches!(
        ns.remove(d.id, b"inner").await,
        Err(NamespaceError::NoEnt)
    ));
    assert_eq!(ns.rmdir(ROOT_ID, b"d").await.unwrap().id, d.id);
    assert_eq!(ns.getattr(ROOT_ID).await.unwrap().nlink, root_before.nlink);
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespace_symlink_reads_back_its_target() {
    let cluster = cluster().await;
    let ns = namespace(&cluster).await;
    let f = file_f(&ns).await;
    let l = ns
        .symlink(ROOT_ID, b"l", b"../some/where", &attrs())
        .await
        .unwrap();
    assert_eq!((l.kind, l.size), (FileKind::Symlink, 13));
    assert_eq!(ns.readlink(l.id).await.unwrap(), b"../some/where");
    assert!(matches!(
        ns.readlink(f.id).await,
        Err(NamespaceError::Inval(_))
    ));
    assert!(matches!(
        ns.symlink(ROOT_ID, b"l", b"x", &attrs()).await,
        Err(NamespaceError::Exist)
    ));
    assert!(matches!(ns.remove(ROOT_ID, b"l").await, Ok(removed) if removed.id == l.id));
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespace_setattr_applies_only_under_a_current_ctime_guard() {
    let cluster = cluster().await;
    let ns = namespace(&cluster).await;
    let f = file_f(&ns).await;
    let before = ns.getattr(f.id).await.unwrap();
    let when = Timestamp {
        seconds: 1_000_000,
        nanos: 5,
    };
    let set = SetAttrs {
        mode: Some(0o640),
        mtime: Some(SetTime::At(when)),
        ..attrs()
    };
    let after = ns.setattr(f.id, &set, Some(before.ctime)).await.unwrap();
    assert_eq!((after.mode, after.mtime), (0o640, when));
    assert!(after.ctime >= before.ctime);
    assert_eq!(ns.getattr(f.id).await.unwrap().mode, 0o640);
    let stale_guard = Timestamp {
        seconds: 1,
        nanos: 0,
    };
    assert!(matches!(
        ns.setattr(
            f.id,
            &SetAttrs {
                mode: Some(0o600),
                ..attrs()
            },
            Some(stale_guard)
        )
        .await,
        Err(NamespaceError::NotSync)
    ));
    assert_eq!(ns.getattr(f.id).await.unwrap().mode, 0o640);
    assert!(matches!(
        ns.setattr(
            ROOT_ID,
            &SetAttrs {
                size: Some(1),
                ..attrs()
            },
            None
        )
        .await,
        Err(NamespaceError::IsDir)
    ));
    assert!(matches!(
        ns.setattr(999_998, &set, None).await,
        Err(NamespaceError::Stale(_))
    ));
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespace_refuses_invalid_and_overlong_names() {
    let cluster = cluster().await;
    let ns = namespace(&cluster).await;
    file_f(&ns).await;
    let long = vec![b'n'; 256];
    for bad in [&b"a/b"[..], b"a\0b", b"", b".", b".."] {
        assert!(
            matches!(
                ns.create(ROOT_ID, bad, &attrs(), CreateMode::Guarded).await,
                Err(NamespaceError::InvalidName(_))
            ),
            "{bad:?} accepted"
        );
        assert!(matches!(
            ns.mkdir(ROOT_ID, bad, &attrs()).await,
            Err(NamespaceError::InvalidName(_))
        ));
    }
    assert!(matches!(
        ns.create(ROOT_ID, &long, &attrs(), CreateMode::Guarded)
            .await,
        Err(NamespaceError::NameTooLong)
    ));
    assert!(matches!(
        ns.lookup(ROOT_ID, &long).await,
        Err(NamespaceError::NameTooLong)
    ));
    assert!(matches!(
        ns.rename(ROOT_ID, b"f", ROOT_ID, b"a/b").await,
        Err(NamespaceError::InvalidName(_))
    ));
    assert!(ns
        .create(ROOT_ID, &long[..255], &attrs(), CreateMode::Guarded)
        .await
        .is_ok());

    let root = ns.getattr(ROOT_ID).await.unwrap();
    assert_eq!(root.entries as usize, list(&ns, ROOT_ID).await.len());
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespace_concurrent_creates_have_one_winner() {
    let cluster = cluster().await;
    let ns = namespace(&cluster).await;
    for round in 0..3 {
        let name = format!("race-{round}");
        let mut tasks = Vec::new();
        for t in 0..8 {
            // Separate clients and allocators, like separate access servers.
            let from = format!("a-meta-{}", 1 + t % 3);
            let ns = Namespace::with_id_range(cluster.meta_client(&from).unwrap(), 16);
            let name = name.clone();
            tasks.push(tokio::spawn(async move {
                ns.create(
                    ROOT_ID,
                    name.as_bytes(),
                    &SetAttrs::default(),
                    CreateMode::Guarded,
                )
                .await
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(created) => winners.push(created.inode.id),
                Err(NamespaceError::Exist) => {}
                Err(other) => panic!("unexpected error: {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        assert_eq!(
            ns.lookup(ROOT_ID, name.as_bytes()).await.unwrap().id,
            winners[0]
        );
    }
    // Different names from concurrent creators: all created, ids distinct.
    let mut tasks = Vec::new();
    for t in 0..8 {
        let ns = Namespace::with_id_range(cluster.meta_client("a-meta-1").unwrap(), 4);
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..10 {
                let name = format!("t{t}-{i}");
                let made = ns
                    .create(
                        ROOT_ID,
                        name.as_bytes(),
                        &SetAttrs::default(),
                        CreateMode::Guarded,
                    )
                    .await
                    .expect("create");
                ids.push(made.inode.id);
            }
            ids
        }));
    }
    let mut ids = BTreeSet::new();
    for task in tasks {
        for id in task.await.unwrap() {
            assert!(ids.insert(id), "id {id} handed out twice");
        }
    }
    assert_eq!(ids.len(), 80);
    let names = list(&ns, ROOT_ID).await;
    assert_eq!(names.len(), 83);
    assert_eq!(ns.getattr(ROOT_ID).await.unwrap().entries, 83);
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespace_rename() {
    let cluster = cluster().await;
    let ns = namespace(&cluster).await;
    let a = ns.mkdir(ROOT_ID, b"a", &attrs()).await.unwrap().id;
    let b = ns.mkdir(ROOT_ID, b"b", &attrs()).await.unwrap().id;
    let src = create(&ns, a, "src").await;
    let target = create(&ns, a, "target").await;

    // over an existing file: replaced, the old inode returned
    let replaced = ns.rename(a, b"src", a, b"target").await.unwrap();
    assert_eq!(replaced.map(|i| i.id), Some(target));
    assert_eq!(ns.lookup(a, b"target").await.unwrap().id, src);
    assert!(matches!(
        ns.lookup(a, b"src").await,
        Err(NamespaceError::NoEnt)
    ));
    assert!(matches!(
        ns.getattr(target).await,
        Err(NamespaceError::Stale(_))
    ));
    assert_eq!(list(&ns, a).await, vec!["target"]);
    assert_eq!(ns.getattr(a).await.unwrap().entries, 1);

    // same source and target: no-op; missing source: NOENT
    assert!(ns
        .rename(a, b"target", a, b"target")
        .await
        .unwrap()
        .is_none());
    assert_eq!(ns.lookup(a, b"target").await.unwrap().id, src);
    assert!(matches!(
        ns.rename(a, b"nothing", a, b"x").await,
        Err(NamespaceError::NoEnt)
    ));

    // across directories
    let before = ns.getattr(b).await.unwrap();
    assert!(ns
        .rename(a, b"target", b, b"moved")
        .await
        .unwrap()
        .is_none());
    assert_eq!(ns.lookup(b, b"moved").await.unwrap().id, src);
    assert!(list(&ns, a).await.is_empty());
    assert_eq!(list(&ns, b).await, vec!["moved"]);
    let after = ns.getattr(b).await.unwrap();
    assert!(after.mtime >= before.mtime);
    assert_eq!((after.entries, after.nlink), (1, 2));

    // directories: into its own subtree → INVAL; across dirs moves `..` and nlink
    let c = ns.mkdir(a, b"c", &attrs()).await.unwrap().id;
    let deep = ns.mkdir(c, b"deep", &attrs()).await.unwrap().id;
    assert!(matches!(
        ns.rename(ROOT_ID, b"a", deep, b"a").await,
        Err(NamespaceError::Inval(_))
    ));
    assert!(matches!(
        ns.rename(ROOT_ID, b"a", a, b"self").await,
        Err(NamespaceError::Inval(_))
    ));
    assert!(ns.rename(a, b"c", b, b"c").await.unwrap().is_none());
    assert_eq!(ns.lookup(c, b"..").await.unwrap().id, b);
    assert_eq!(ns.getattr(a).await.unwrap().nlink, 2);
    assert_eq!(ns.getattr(b).await.unwrap().nlink, 3);
    assert_eq!(ns.getattr(deep).await.unwrap().parent, c);

    // dir over empty dir ok; over non-empty NOTEMPTY; type mismatches
    let empty = ns.mkdir(a, b"empty", &attrs()).await.unwrap().id;
    let replaced = ns.rename(b, b"c", a, b"empty").await.unwrap();
    assert_eq!(replaced.map(|i| i.id), Some(empty));
    assert_eq!(ns.lookup(a, b"empty").await.unwrap().id, c);
    assert_eq!(
        (
            ns.getattr(a).await.unwrap().nlink,
            ns.getattr(b).await.unwrap().nlink
        ),
        (3, 2)
    );
    let full = ns.mkdir(b, b"full", &attrs()).await.unwrap().id;
    create(&ns, full, "x").await;
    assert!(matches!(
        ns.rename(a, b"empty", b, b"full").await,
        Err(NamespaceError::NotEmpty)
    ));
    assert!(matches!(
        ns.rename(a, b"empty", b, b"moved").await,
        Err(NamespaceError::NotDir)
    ));
    assert!(matches!(
        ns.rename(b, b"moved", b, b"full").await,
        Err(NamespaceError::IsDir)
    ));
    assert_eq!(ns.lookup(b, b"moved").await.unwrap().id, src);
    assert_eq!(ns.getattr(c).await.unwrap().parent, a);
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespace_readdir_pages_while_changing() {
    let cluster = cluster().await;
    let ns = namespace(&cluster).await;
    let dir = ns.mkdir(ROOT_ID, b"big", &attrs()).await.unwrap().id;
    const N: usize = 2000;
    let mut live: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..N {
        let name = format!("e{i:05}");
        let id = create(&ns, dir, &name).await;
        live.insert(name, id);
    }
    assert_eq!(ns.getattr(dir).await.unwrap().entries, N as u64);

    // Between pages: remove entries (some already listed, some not yet) and
    // add new ones. Entries present throughout must be listed exactly once.
    let mut removed = BTreeSet::new();
    let mut added = BTreeSet::new();
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut cookie = 0;
    let mut page_no = 0;
    loop {
        let page = ns.readdir(dir, cookie, 100).await.unwrap();
        assert!(page.entries.len() <= 100);
        for entry in &page.entries {
            assert!(entry.cookie > cookie, "cookies increase");
            cookie = entry.cookie;
            let name = String::from_utf8(entry.name.clone()).unwrap();
            assert!(
                seen.insert(name.clone(), entry.id).is_none(),
                "{name} listed twice"
            );
        }
        if page.eof {
            break;
        }
        page_no += 1;
        assert!(page_no < 100, "listing does not end");
        for k in 0..3 {
            // one behind the cursor, one ahead, one far ahead
            let victim = format!("e{:05}", (page_no * 100 + k * 317) % N);
            if live.remove(&victim).is_some() {
                ns.remove(dir, victim.as_bytes()).await.unwrap();
                removed.insert(victim);
            }
        }
        let name = format!("new{page_no:03}");
        let id = create(&ns, dir, &name).await;
        live.insert(name.clone(), id);
        added.insert(name);
    }
    for (name, id) in &live {
        if added.contains(name) {
            continue; // added during the listing: may or may not be listed
        }
        assert_eq!(seen.get(name), Some(id), "{name} missing");
    }
    for (name, id) in &seen {
        assert!(
            live.get(name) == Some(id) || removed.contains(name),
            "{name} listed but never existed"
        );
    }
    // Added entries get new cookies after all older ones: all are listed.
    for name in &added {
        assert!(
            seen.contains_key(name),
            "{name} added during listing, missing"
        );
    }
    assert_eq!(ns.getattr(dir).await.unwrap().entries, live.len() as u64);
    // A full listing in pages of 100 is exactly the live set.
    let mut all = Vec::new();
    let mut cookie = 0;
    loop {
        let page = ns.readdir(dir, cookie, 100).await.unwrap();
        if let Some(last) = page.entries.last() {
            cookie = last.cookie;
        }
        all.extend(
            page.entries
                .into_iter()
                .map(|e| String::from_utf8(e.name).unwrap()),
        );
        if page.eof {
            break;
        }
    }
    all.sort();
    assert_eq!(all, live.keys().cloned().collect::<Vec<_>>());
    assert!(matches!(
        ns.readdir(live[&all[0]], 0, 10).await,
        Err(NamespaceError::NotDir)
    ));
    cluster.shutdown().await.unwrap();
}

/// The inode cache: an access server sees its own changes at once, a change
/// made through another access server within the cache's TTL, and until
/// then keeps answering from the cache (no meta-kvs read).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespace_inode_cache_sees_own_changes_at_once_and_others_after_the_ttl() {
    let cluster = cluster().await;
    let other = namespace(&cluster).await;
    let long = Namespace::new(cluster.meta_client("a-meta-2").unwrap())
        .with_inode_cache(Duration::from_secs(600));
    let short = Namespace::new(cluster.meta_client("a-meta-3").unwrap())
        .with_inode_cache(Duration::from_millis(200));
    let id = create(&other, ROOT_ID, "cached").await;
    let original = long.getattr(id).await.unwrap().mode;
    assert_eq!(short.getattr(id).await.unwrap().mode, original);

    // Changed elsewhere: the long cache still answers the old mode, the
    // short one sees the change once its entry expired.
    let set_mode = SetAttrs {
        mode: Some(0o600),
        ..attrs()
    };
    assert_ne!(original, 0o600);
    other.setattr(id, &set_mode, None).await.unwrap();
    assert_eq!(long.getattr(id).await.unwrap().mode, original);
    eventually(
        DEADLINE,
        "the short cache sees the other change",
        || async { short.getattr(id).await.unwrap().mode == 0o600 },
    )
    .await;

    // Its own change shows at once, with the other's (read afresh).
    let set_uid = SetAttrs {
        uid: Some(42),
        ..attrs()
    };
    long.setattr(id, &set_uid, None).await.unwrap();
    let seen = long.getattr(id).await.unwrap();
    assert_eq!((seen.uid, seen.mode), (42, 0o600));

    // LOOKUP fills the cache too; a removal through it empties it.
    assert_eq!(long.lookup(ROOT_ID, b"cached").await.unwrap().id, id);
    long.remove(ROOT_ID, b"cached").await.unwrap();
    assert!(matches!(
        long.getattr(id).await,
        Err(NamespaceError::Stale(_))
    ));
    cluster.shutdown().await.unwrap();
}
