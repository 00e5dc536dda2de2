//! The namespace under failures: the meta leader killed, replies lost.

use std::collections::BTreeMap;

use geonfs_access_server::namespace::{CreateMode, Namespace, NamespaceError, SetAttrs, ROOT_ID};
use geonfs_meta_kvs::MetaError;
use geonfs_rpc::{Fault, FaultTarget};

use super::{attrs, namespace, DEADLINE};
use crate::support::cluster;
use crate::support::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespace_creates_survive_leader_kill() {
    let mut cluster = cluster().await;
    let ns = namespace(&cluster).await;
    let dir = ns.mkdir(ROOT_ID, b"k", &attrs()).await.unwrap().id;
    let mut tasks = Vec::new();
    for t in 0..4 {
        let ns = Namespace::with_id_range(cluster.meta_client("a-meta-1").unwrap(), 8);
        tasks.push(tokio::spawn(async move {
            // (name, Ok(id) | Err(true) for an ambiguous failure)
            let mut results = Vec::new();
            for i in 0..40 {
                let name = format!("t{t}-{i}");
                let result = match ns
                    .create(
                        dir,
                        name.as_bytes(),
                        &SetAttrs::default(),
                        CreateMode::Guarded,
                    )
                    .await
                {
                    Ok(made) => Ok(made.inode.id),
                    Err(NamespaceError::Meta(MetaError::OutcomeUnknown(_))) => Err(true),
                    Err(_) => Err(false),
                };
                results.push((name, result));
            }
            results
        }));
    }
    // Kill the leader while the creates run.
    eventually(DEADLINE, "some creates", || async {
        ns.getattr(dir).await.is_ok_and(|d| d.entries >= 20)
    })
    .await;
    let old = cluster.meta_leader().await.expect("leader");
    cluster.kill_node(&old).await.unwrap();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.unwrap());
    }
    eventually(DEADLINE, "a new leader", || async {
        cluster.meta_leader().await.is_some()
    })
    .await;
    let ns = Namespace::new(cluster.meta_client("a-meta-2").unwrap());
    let listed: BTreeMap<String, u64> = ns
        .readdir(dir, 0, 1000)
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|e| (String::from_utf8(e.name).unwrap(), e.id))
        .collect();
    for (name, result) in &outcomes {
        match result {
            // Reported created: it exists, with that id.
            Ok(id) => assert_eq!(
                listed.get(name),
                Some(id),
                "{name} acknowledged but missing"
            ),
            // Failed clearly: it does not exist.
            Err(false) => assert!(!listed.contains_key(name), "{name} failed but exists"),
            Err(true) => {}
        }
    }
    let acked = outcomes.iter().filter(|(_, r)| r.is_ok()).count();
    let ambiguous = outcomes.iter().filter(|(_, r)| *r == Err(true)).count();
    eprintln!(
        "creates: {acked} acknowledged, {ambiguous} ambiguous, {} failed",
        outcomes.len() - acked - ambiguous
    );
    // An ambiguous create either happened or not; trying again settles it.
    for (name, result) in &outcomes {
        if *result == Err(true) {
            match ns
                .create(dir, name.as_bytes(), &attrs(), CreateMode::Guarded)
                .await
            {
                Ok(_) => assert!(!listed.contains_key(name)),
                Err(NamespaceError::Exist) => assert!(listed.contains_key(name)),
                Err(other) => panic!("{name}: {other}"),
            }
        }
    }
    let listed: BTreeMap<String, u64> = ns
        .readdir(dir, 0, 1000)
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|e| (String::from_utf8(e.name).unwrap(), e.id))
        .collect();
    // The directory's bookkeeping matches its entries.
    let d = ns.getattr(dir).await.unwrap();
    assert_eq!(d.entries as usize, listed.len());
    for (name, id) in &listed {
        assert_eq!(ns.lookup(dir, name.as_bytes()).await.unwrap().id, *id);
    }
    cluster.shutdown().await.unwrap();
}

/// Every reply from meta-kvs to the access server is lost with probability
/// 0.3 (the change was applied, the caller cannot tell) and requests with
/// 0.1. Each operation must still report exactly what happened: a create
/// whose first transaction landed is `created`, not EEXIST; a remove whose
/// transaction landed returns the inode, not NOENT.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespace_operations_exact_when_replies_are_lost() {
    let cluster = cluster().await;
    namespace(&cluster).await;
    let faults = cluster.network().faults();
    let from = cluster.addr("a-core-1").unwrap().ip();
    for meta in cluster.meta_names() {
        let to = cluster.addr(&meta).unwrap().ip();
        faults.add(FaultTarget::Nodes { from, to }, Fault::DropReplies(0.3));
        faults.add(FaultTarget::Nodes { from, to }, Fault::DropRequests(0.1));
    }
    let ns = Namespace::with_id_range(cluster.meta_client("a-core-1").unwrap(), 4);
    assert_eq!(ns.ensure_root().await.unwrap().id, ROOT_ID);
    let dir = ns.mkdir(ROOT_ID, b"lossy", &attrs()).await.unwrap().id;
    let mut model: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..40 {
        let name = format!("f{i}");
        let made = ns
            .create(dir, name.as_bytes(), &attrs(), CreateMode::Guarded)
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        assert!(made.created);
        model.insert(name, made.inode.id);
    }
    for i in 0..15 {
        let (from_name, to_name) = (format!("f{i}"), format!("g{i}"));
        let replaced = ns
            .rename(dir, from_name.as_bytes(), dir, to_name.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("rename {from_name}: {e}"));
        assert!(replaced.is_none());
        let id = model.remove(&from_name).unwrap();
        model.insert(to_name, id);
    }
    for i in 0..10 {
        let name = format!("g{i}");
        let removed = ns
            .remove(dir, name.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("remove {name}: {e}"));
        assert_eq!(Some(removed.id), model.remove(&name));
    }
    for i in 0..5 {
        let sub = ns
            .mkdir(dir, format!("d{i}").as_bytes(), &attrs())
            .await
            .unwrap();
        assert_eq!(
            ns.rmdir(dir, format!("d{i}").as_bytes()).await.unwrap().id,
            sub.id
        );
    }
    let id = model["f20"];
    for mode in [0o600, 0o640, 0o604, 0o644] {
        let ctime = ns.getattr(id).await.unwrap().ctime;
        let set = SetAttrs {
            mode: Some(mode),
            ..attrs()
        };
        let after = ns.setattr(id, &set, Some(ctime)).await.unwrap();
        assert_eq!(after.mode, mode);
    }
    faults.heal_all();
    let d = ns.getattr(dir).await.unwrap();
    let page = ns.readdir(dir, 0, 1000).await.unwrap();
    let listed: BTreeMap<String, u64> = page
        .entries
        .into_iter()
        .map(|e| (String::from_utf8(e.name).unwrap(), e.id))
        .collect();
    assert_eq!(listed, model);
    assert_eq!((d.entries, d.nlink), (model.len() as u64, 2));
    let dropped = cluster
        .network()
        .metrics()
        .injected_faults
        .with_label_values(&["drop_reply"])
        .get();
    assert!(dropped >= 10, "only {dropped} replies dropped");
    cluster.shutdown().await.unwrap();
}
