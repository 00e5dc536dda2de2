//! Randomized fault tests of meta-kvs ("Jepsen-style"): for each seed, a
//! 3-voter cluster, 4 concurrent clients doing random Get/Put/Delete/Cas on
//! 3 keys, a nemesis killing, restarting, isolating and partitioning meta
//! nodes on a seeded schedule; the recorded history must be linearizable.
//!
//! The seeds are split over several tests so that nextest runs them in
//! parallel. `GEONFS_JEPSEN_SEEDS=a..b` replaces the default seeds 0..50
//! (each of the tests takes its share of the range) for a longer local run.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use geonfs_meta_kvs::{MetaClient, MetaOptions};
use geonfs_proto::meta::{
    condition, operation, Condition, KeyValue, Operation as TxnOp, TxnRequest,
};
use geonfs_testkit::cluster::{site_name, TestCluster};
use geonfs_testkit::linearizability::{
    check, History, KvOp, KvResult, Operation, Recorder, Verdict,
};

use crate::support::init_logging;

/// Default seeds: `0..DEFAULT_SEEDS`, split over `SHARDS` tests.
const DEFAULT_SEEDS: u64 = 50;
const SHARDS: u64 = 5;
/// How long the nemesis injects faults while the clients run.
const FAULT_PHASE: Duration = Duration::from_millis(1600);
/// Overall deadline of each client call.
const CLIENT_DEADLINE: Duration = Duration::from_secs(2);
/// Most operations one client issues per seed (keeps histories checkable).
const MAX_OPS_PER_CLIENT: usize = 150;
/// Keys the clients work on.
const KEYS: [&str; 3] = ["k0", "k1", "k2"];
/// Clients (each calling from a different node).
const CLIENTS: [&str; 4] = ["a-core-1", "b-core-1", "c-core-1", "a-core-2"];
/// Waiting for the cluster (leader, recovery).
const RECOVERY: Duration = Duration::from_secs(30);
/// The checker's search budget per history.
const CHECK_BUDGET: Duration = Duration::from_secs(30);

/// xorshift64* — small, seeded, no dependency.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // Mix the seed so that neighbouring seeds differ from the start.
        let mut x = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((x ^ (x >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range_ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// The seeds test `shard` (of `SHARDS`) runs.
fn shard_seeds(shard: u64) -> Range<u64> {
    let all = match std::env::var("GEONFS_JEPSEN_SEEDS") {
        Ok(spec) => {
            let (a, b) = spec
                .split_once("..")
                .expect("GEONFS_JEPSEN_SEEDS is a range a..b");
            let a: u64 = a.trim().parse().expect("GEONFS_JEPSEN_SEEDS start");
            let b: u64 = b.trim().parse().expect("GEONFS_JEPSEN_SEEDS end");
            a..b.max(a)
        }
        Err(_) => 0..DEFAULT_SEEDS,
    };
    let len = all.end - all.start;
    let per = len.div_ceil(SHARDS);
    let start = (all.start + shard * per).min(all.end);
    let end = (start + per).min(all.end);
    start..end
}

fn options() -> MetaOptions {
    MetaOptions {
        tick: Duration::from_millis(20),
        election_tick: 10,
        heartbeat_tick: 2,
        request_timeout: Duration::from_secs(1),
        ..MetaOptions::default()
    }
    .with_compaction(20, 5)
}

async fn start_cluster() -> TestCluster {
    TestCluster::builder()
        .sites(3)
        .meta_per_site(1)
        .cores_per_site(2)
        .access_per_site(0)
        .meta_options(options())
        .start()
        .await
        .expect("cluster starts")
}

/// What one seed did.
#[derive(Debug, Default)]
struct RunStats {
    ok: usize,
    unknown: usize,
    faults: Vec<String>,
    elapsed: Duration,
    /// Where the time went (start, faults, drain, recovery, shutdown).
    phases: Vec<(&'static str, Duration)>,
}

fn cas_request(key: &str, expected: Option<&[u8]>, new: &[u8]) -> TxnRequest {
    let test = match expected {
        Some(v) => condition::Test::ValueEquals(v.to_vec().into()),
        None => condition::Test::Absent(true),
    };
    TxnRequest {
        conditions: vec![Condition {
            key: key.as_bytes().to_vec().into(),
            test: Some(test),
        }],
        operations: vec![TxnOp {
            op: Some(operation::Op::Put(KeyValue {
                key: key.as_bytes().to_vec().into(),
                value: new.to_vec().into(),
                version: 0,
            })),
        }],
    }
}

/// One recorded Get; `None` if it failed (recorded as unknown).
async fn recorded_get(
    recorder: &Recorder,
    client_id: usize,
    client: &MetaClient,
    key: &str,
) -> Option<Option<Vec<u8>>> {
    let handle = recorder.invoke(
        client_id,
        KvOp::Get {
            key: key.as_bytes().to_vec(),
        },
    );
    match client.get(key.to_owned()).await {
        Ok(kv) => {
            let value = kv.map(|kv| kv.value.to_vec());
            handle.complete(KvResult::Get(value.clone()));
            Some(value)
        }
        Err(_) => {
            handle.unknown();
            None
        }
    }
}

/// A client's random workload until `stop` (or its op budget).
async fn client_loop(
    seed: u64,
    client_id: usize,
    client: MetaClient,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng::new(seed.wrapping_mul(1000).wrapping_add(client_id as u64 + 1));
    // The last value this client saw per key: Cas expects it (or absence).
    let mut seen: Vec<Option<Vec<u8>>> = vec![None; KEYS.len()];
    for n in 0..MAX_OPS_PER_CLIENT {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let k = rng.below(KEYS.len() as u64) as usize;
        let key = KEYS[k];
        let value = format!("s{seed}-c{client_id}-{n}").into_bytes();
        match rng.below(100) {
            0..=39 => {
                if let Some(v) = recorded_get(&recorder, client_id, &client, key).await {
                    seen[k] = v;
                }
            }
            40..=64 => {
                let handle = recorder.invoke(
                    client_id,
                    KvOp::Put {
                        key: key.as_bytes().to_vec(),
                        value: value.clone(),
                    },
                );
                match client.put(key.to_owned(), value.clone()).await {
                    Ok(_) => {
                        handle.complete(KvResult::Put);
                        seen[k] = Some(value);
                    }
                    Err(_) => handle.unknown(),
                }
            }
            65..=74 => {
                let handle = recorder.invoke(
                    client_id,
                    KvOp::Delete {
                        key: key.as_bytes().to_vec(),
                    },
                );
                match client.delete(key.to_owned()).await {
                    Ok(existed) => {
                        handle.complete(KvResult::Delete { existed });
                        seen[k] = None;
                    }
                    Err(_) => handle.unknown(),
                }
            }
            _ => {
                // Mostly expect what was last seen; sometimes absence.
                let expected = if rng.below(4) == 0 {
                    None
                } else {
                    seen[k].clone()
                };
                let handle = recorder.invoke(
                    client_id,
                    KvOp::Cas {
                        key: key.as_bytes().to_vec(),
                        expected: expected.clone(),
                        new: value.clone(),
                    },
                );
                match client
                    .txn(cas_request(key, expected.as_deref(), &value))
                    .await
                {
                    Ok(reply) => {
                        handle.complete(KvResult::Cas {
                            succeeded: reply.succeeded,
                        });
                        if reply.succeeded {
                            seen[k] = Some(value);
                        }
                    }
                    Err(_) => handle.unknown(),
                }
            }
        }
        // Pacing: keeps the histories small enough to check.
        tokio::time::sleep(rng.range_ms(2, 12)).await;
    }
}

/// Injects one random fault (deterministic choice per seed); returns its
/// description.
async fn inject(cluster: &mut TestCluster, rng: &mut Rng, down: &mut Option<String>) -> String {
    let metas = cluster.meta_names();
    let pick = |rng: &mut Rng| metas[rng.below(metas.len() as u64) as usize].clone();
    match rng.below(10) {
        0..=2 => match down.take() {
            // At most one voter down at a time: a majority can always form
            // once the network heals.
            None => {
                let name = pick(rng);
                cluster.kill_node(&name).await.expect("kill");
                *down = Some(name.clone());
                format!("kill {name}")
            }
            Some(name) => {
                cluster.restart_node(&name).await.expect("restart");
                format!("restart {name}")
            }
        },
        3..=4 => {
            let name = pick(rng);
            cluster.isolate_node(&name).expect("isolate");
            format!("isolate {name}")
        }
        5..=6 => {
            let a = rng.below(3) as u8;
            let b = (a + 1 + rng.below(2) as u8) % 3;
            let (a, b) = (site_name(a), site_name(b));
            cluster.cut_sites(&a, &b).expect("cut sites");
            format!("cut {a}-{b}")
        }
        7 => {
            let a = pick(rng);
            let b = pick(rng);
            if a == b {
                cluster.heal_all();
                "heal".to_owned()
            } else {
                cluster.cut_nodes(&a, &b).expect("cut nodes");
                format!("cut {a}-{b}")
            }
        }
        _ => {
            cluster.heal_all();
            "heal".to_owned()
        }
    }
}

/// Polls until some write succeeds (a key outside the history).
async fn wait_for_writes(cluster: &TestCluster, seed: u64) {
    let probe = cluster
        .meta_client("b-core-2")
        .expect("client")
        .with_deadline(Duration::from_secs(2));
    let start = Instant::now();
    loop {
        if probe.put("jepsen-probe", "x").await.is_ok() {
            return;
        }
        assert!(
            start.elapsed() < RECOVERY,
            "seed {seed}: no write succeeded within {RECOVERY:?} after healing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs one seed: the workload under faults, recovery and final reads.
/// Returns the recorded history (the cluster is shut down).
async fn run_seed(seed: u64) -> (History, RunStats) {
    init_logging();
    let started = Instant::now();
    let mut phases = Vec::new();
    let mut lap = Instant::now();
    let mut phase = |name: &'static str| {
        phases.push((name, lap.elapsed()));
        lap = Instant::now();
    };
    let mut cluster = start_cluster().await;
    // A first leader, so that the workload starts against a working cluster.
    wait_for_writes(&cluster, seed).await;
    phase("start");

    let recorder = Recorder::new();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for (id, from) in CLIENTS.iter().enumerate() {
        let client = cluster
            .meta_client(from)
            .expect("client")
            .with_deadline(CLIENT_DEADLINE);
        clients.push(tokio::spawn(client_loop(
            seed,
            id,
            client,
            recorder.clone(),
            stop.clone(),
        )));
    }

    let mut rng = Rng::new(seed);
    let mut down: Option<String> = None;
    let mut faults = Vec::new();
    let fault_start = Instant::now();
    loop {
        // Workload pacing between faults, not synchronisation.
        tokio::time::sleep(rng.range_ms(100, 300)).await;
        if fault_start.elapsed() >= FAULT_PHASE {
            break;
        }
        faults.push(inject(&mut cluster, &mut rng, &mut down).await);
    }
    cluster.heal_all();
    if let Some(name) = down.take() {
        cluster.restart_node(&name).await.expect("final restart");
    }
    phase("faults");
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("client task");
    }
    phase("drain");
    wait_for_writes(&cluster, seed).await;

    // A final read of every key, retried until it succeeds.
    let reader = cluster
        .meta_client("c-core-2")
        .expect("client")
        .with_deadline(CLIENT_DEADLINE);
    let final_client = CLIENTS.len();
    for key in KEYS {
        let start = Instant::now();
        while recorded_get(&recorder, final_client, &reader, key)
            .await
            .is_none()
        {
            assert!(
                start.elapsed() < RECOVERY,
                "seed {seed}: the final read of {key} kept failing"
            );
        }
    }
    phase("recovery");
    // The meta voters are killed (one more crash) rather than stopped: a
    // graceful stop of the first voter waits seconds for the raft streams
    // of its peers, which would dominate the run time.
    for name in cluster.meta_names() {
        if cluster.is_running(&name) {
            cluster.kill_node(&name).await.expect("kill at the end");
        }
    }
    cluster.shutdown().await.expect("shutdown");
    phase("shutdown");

    let history = recorder.history();
    let ok = history
        .ops()
        .iter()
        .filter(|o| o.completed.is_some())
        .count();
    let stats = RunStats {
        ok,
        unknown: history.len() - ok,
        faults,
        elapsed: started.elapsed(),
        phases,
    };
    (history, stats)
}

async fn run_and_check(seed: u64) -> RunStats {
    let (history, stats) = run_seed(seed).await;
    let check_start = Instant::now();
    let verdict = check(&history, CHECK_BUDGET);
    let check_time = check_start.elapsed();
    println!(
        "jepsen seed {seed}: {} ops ok, {} unknown; {} faults [{}]; run {:.2?} ({}), check {:.2?}",
        stats.ok,
        stats.unknown,
        stats.faults.len(),
        stats.faults.join(", "),
        stats.elapsed,
        stats
            .phases
            .iter()
            .map(|(name, d)| format!("{name} {d:.2?}"))
            .collect::<Vec<_>>()
            .join(", "),
        check_time,
    );
    match verdict {
        Verdict::Linearizable => {}
        Verdict::NotLinearizable { explanation } => panic!(
            "seed {seed}: meta-kvs history is NOT linearizable \
             (faults: {:?})\n{explanation}",
            stats.faults
        ),
        Verdict::Timeout => panic!(
            "seed {seed}: the checker ran out of its {CHECK_BUDGET:?} budget \
             on {} operations",
            history.len()
        ),
    }
    stats
}

async fn run_shard(shard: u64) {
    let seeds = shard_seeds(shard);
    let start = Instant::now();
    let (mut ok, mut unknown, mut faults) = (0, 0, 0);
    for seed in seeds.clone() {
        let stats = run_and_check(seed).await;
        ok += stats.ok;
        unknown += stats.unknown;
        faults += stats.faults.len();
    }
    println!(
        "jepsen seeds {seeds:?}: all linearizable; {ok} ops ok, {unknown} unknown, \
         {faults} faults in {:.2?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_jepsen_seeds_0() {
    run_shard(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_jepsen_seeds_1() {
    run_shard(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_jepsen_seeds_2() {
    run_shard(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_jepsen_seeds_3() {
    run_shard(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_jepsen_seeds_4() {
    run_shard(4).await;
}

/// The pipeline can fail: a real recorded history plus one injected stale
/// read (a Get after everything else, returning a value that a completed Put
/// wrote but that was overwritten before the final read) is rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_jepsen_detects_injected_stale_read() {
    let seed = 7;
    let (history, stats) = run_seed(seed).await;
    println!(
        "jepsen stale-read seed {seed}: {} ops ok, {} unknown, {} faults",
        stats.ok,
        stats.unknown,
        stats.faults.len()
    );
    assert_eq!(
        check(&history, CHECK_BUDGET),
        Verdict::Linearizable,
        "the recorded history itself must pass"
    );
    let last = history
        .ops()
        .iter()
        .map(|o| o.completed.as_ref().map_or(o.invoked, |c| c.0))
        .max()
        .expect("a history");
    let final_client = CLIENTS.len();
    let mut tampered = None;
    for key in KEYS {
        let key = key.as_bytes().to_vec();
        // The final read (always completed: it is retried until it is).
        let Some(final_value) = history.ops().iter().rev().find_map(|o| match o {
            Operation {
                client,
                op: KvOp::Get { key: k },
                completed: Some((_, KvResult::Get(v))),
                ..
            } if *client == final_client && *k == key => Some(v.clone()),
            _ => None,
        }) else {
            continue;
        };
        // The value of the last completed Put of this key that is not the
        // final value: it was certainly overwritten before the final read.
        let stale = history
            .ops()
            .iter()
            .filter_map(|o| match o {
                Operation {
                    op: KvOp::Put { key: k, value },
                    completed: Some((t, KvResult::Put)),
                    ..
                } if *k == key && Some(value) != final_value.as_ref() => Some((*t, value.clone())),
                _ => None,
            })
            .max_by_key(|(t, _)| *t);
        if let Some((_, stale)) = stale {
            let mut ops = history.ops().to_vec();
            ops.push(Operation {
                client: final_client + 1,
                op: KvOp::Get { key: key.clone() },
                invoked: last + 1,
                completed: Some((last + 2, KvResult::Get(Some(stale)))),
            });
            tampered = Some(History::from_ops(ops));
            break;
        }
    }
    let tampered = tampered.expect("some key had a completed, overwritten Put");
    match check(&tampered, CHECK_BUDGET) {
        Verdict::NotLinearizable { explanation } => {
            println!("as expected, the injected stale read is caught:\n{explanation}");
        }
        other => panic!("the injected stale read was not caught: {other:?}"),
    }
}
