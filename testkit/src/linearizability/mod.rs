//! A linearizability checker for key-value histories, used by the meta-kvs
//! randomized fault tests.
//!
//! Clients record what they do through a [`Recorder`] (cheap to clone, safe
//! to share between async tasks): [`Recorder::invoke`] before sending a
//! request, then [`OpHandle::complete`] with the observed result, or
//! [`OpHandle::unknown`] (or just dropping the handle) when the outcome is
//! unknown (timeout, crash). [`check`] then decides whether the
//! [`History`] is linearizable with respect to a map of independent
//! registers: each key holds `Option<Vec<u8>>`, starting absent.
//!
//! The check is per key (linearizability is compositional); each key's
//! sub-history is searched with Wing & Gong's algorithm in Lowe's
//! just-in-time form with memoization of (linearized set, state) pairs, as in
//! Porcupine (see `search.rs`). An operation with unknown outcome may take
//! effect at any time after its invocation, or never.
#![warn(missing_docs)]

mod search;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use search::{Outcome, SearchOp, State, Step, ABSENT};

/// An operation a client invokes on the key-value store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Read a key.
    Get {
        /// The key read.
        key: Vec<u8>,
    },
    /// Set a key to a value.
    Put {
        /// The key written.
        key: Vec<u8>,
        /// The value written.
        value: Vec<u8>,
    },
    /// Remove a key.
    Delete {
        /// The key removed.
        key: Vec<u8>,
    },
    /// Set a key to `new` iff its current value is `expected`.
    Cas {
        /// The key.
        key: Vec<u8>,
        /// The value required; `None` means the key must be absent.
        expected: Option<Vec<u8>>,
        /// The value set on success.
        new: Vec<u8>,
    },
}

impl KvOp {
    /// The key the operation acts on.
    pub fn key(&self) -> &[u8] {
        match self {
            KvOp::Get { key }
            | KvOp::Put { key, .. }
            | KvOp::Delete { key }
            | KvOp::Cas { key, .. } => key,
        }
    }
}

/// The observed result of a completed [`KvOp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvResult {
    /// The value read (`None`: absent).
    Get(Option<Vec<u8>>),
    /// The put took effect.
    Put,
    /// The delete took effect.
    Delete {
        /// Whether the key was present.
        existed: bool,
    },
    /// The compare-and-set's outcome.
    Cas {
        /// Whether the value matched and was replaced.
        succeeded: bool,
    },
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client that issued it (informational: it is not a constraint).
    pub client: usize,
    /// What was asked.
    pub op: KvOp,
    /// When it was invoked (logical time, or nanoseconds since the
    /// recorder's start).
    pub invoked: u64,
    /// When it completed, with its result; `None` if the outcome is unknown:
    /// it may have taken effect at any time after `invoked`, or never.
    pub completed: Option<(u64, KvResult)>,
}

/// A history of operations by concurrent clients.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    ops: Vec<Operation>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// A history of these operations (in any order).
    pub fn from_ops(ops: Vec<Operation>) -> Self {
        History { ops }
    }

    /// Appends an operation.
    pub fn push(&mut self, op: Operation) {
        self.ops.push(op);
    }

    /// The operations, in the order recorded.
    pub fn ops(&self) -> &[Operation] {
        &self.ops
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether there are no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

struct RecorderInner {
    start: Instant,
    ops: Vec<Operation>,
}

impl RecorderInner {
    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Records a [`History`] from concurrent tasks, timestamping invocations and
/// completions with a shared monotonic clock (nanoseconds since
/// [`Recorder::new`]).
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<RecorderInner>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("ops", &self.lock().ops.len())
            .finish()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Self {
        Recorder {
            inner: Arc::new(Mutex::new(RecorderInner {
                start: Instant::now(),
                ops: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RecorderInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `client` invokes `op` now; call before sending the
    /// request. The outcome stays unknown unless the handle is completed.
    pub fn invoke(&self, client: usize, op: KvOp) -> OpHandle {
        let mut inner = self.lock();
        let invoked = inner.now();
        inner.ops.push(Operation {
            client,
            op,
            invoked,
            completed: None,
        });
        OpHandle {
            recorder: self.clone(),
            index: inner.ops.len() - 1,
        }
    }

    /// A snapshot of the history recorded so far.
    pub fn history(&self) -> History {
        History::from_ops(self.lock().ops.clone())
    }
}

/// An invoked operation awaiting its outcome.
#[must_use = "complete the operation, or mark its outcome unknown"]
#[derive(Debug)]
pub struct OpHandle {
    recorder: Recorder,
    index: usize,
}

impl OpHandle {
    /// Records that the operation completed now with `result`; call after
    /// the response arrived.
    pub fn complete(self, result: KvResult) {
        let mut inner = self.recorder.lock();
        let now = inner.now();
        if let Some(op) = inner.ops.get_mut(self.index) {
            op.completed = Some((now, result));
        }
    }

    /// Records that the outcome is unknown (the same as dropping the handle).
    pub fn unknown(self) {}
}

/// The outcome of [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some order of the operations, consistent with real time, is a legal
    /// sequential execution.
    Linearizable,
    /// No such order exists.
    NotLinearizable {
        /// The smallest failing key's sub-history, with the longest partial
        /// linearization found.
        explanation: String,
    },
    /// The search budget ran out before a verdict (and no key failed).
    Timeout,
}

impl Verdict {
    /// Whether the verdict is [`Verdict::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        *self == Verdict::Linearizable
    }
}

/// Checks whether `history` is linearizable, spending at most about `budget`
/// on the search (keys are checked in order; once the budget is spent, the
/// remaining keys only get a few steps each).
pub fn check(history: &History, budget: Duration) -> Verdict {
    let deadline = Instant::now().checked_add(budget);
    let mut by_key: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
    for op in &history.ops {
        by_key.entry(op.op.key()).or_default().push(op);
    }
    let mut timed_out = false;
    for (key, ops) in by_key {
        let (search_ops, originals, values) = prepare(ops);
        match search::search(&search_ops, deadline) {
            Outcome::Linearizable => {}
            Outcome::Timeout => timed_out = true,
            Outcome::NotLinearizable { longest, state } => {
                let explanation = explain(key, &originals, &longest, state, &values);
                return Verdict::NotLinearizable { explanation };
            }
        }
    }
    if timed_out {
        Verdict::Timeout
    } else {
        Verdict::Linearizable
    }
}

/// Turns one key's operations into search input sorted by invocation time
/// (dropping reads of unknown outcome), returning the matching original
/// operations and the interned values (state `i + 1` is `values[i]`).
fn prepare<'a>(ops: Vec<&'a Operation>) -> (Vec<SearchOp>, Vec<&'a Operation>, Vec<&'a [u8]>) {
    let mut ids: HashMap<&'a [u8], State> = HashMap::new();
    let mut values: Vec<&'a [u8]> = Vec::new();
    let mut intern = |v: Option<&'a [u8]>| -> State {
        let Some(v) = v else { return ABSENT };
        *ids.entry(v).or_insert_with(|| {
            values.push(v);
            State::try_from(values.len()).unwrap_or(State::MAX)
        })
    };
    let mut originals: Vec<&Operation> = ops
        .into_iter()
        .filter(|o| !matches!((&o.op, &o.completed), (KvOp::Get { .. }, None)))
        .collect();
    originals.sort_by_key(|o| (o.invoked, o.completed.as_ref().map_or(u64::MAX, |c| c.0)));
    let search_ops = originals
        .iter()
        .map(|&o| {
            let result = o.completed.as_ref().map(|c| &c.1);
            let step = match (&o.op, result) {
                (KvOp::Get { .. }, Some(KvResult::Get(r))) => Step::Get(intern(r.as_deref())),
                (KvOp::Put { value, .. }, None | Some(KvResult::Put)) => {
                    Step::Put(intern(Some(value)))
                }
                (KvOp::Delete { .. }, None) => Step::Delete(None),
                (KvOp::Delete { .. }, Some(KvResult::Delete { existed })) => {
                    Step::Delete(Some(*existed))
                }
                (KvOp::Cas { expected, new, .. }, r) => match r {
                    None | Some(KvResult::Cas { .. }) => Step::Cas {
                        expected: intern(expected.as_deref()),
                        new: intern(Some(new)),
                        succeeded: r.map(|r| *r == KvResult::Cas { succeeded: true }),
                    },
                    Some(_) => Step::Impossible,
                },
                _ => Step::Impossible,
            };
            SearchOp {
                invoked: o.invoked,
                completed: o.completed.as_ref().map(|c| c.0.max(o.invoked)),
                step,
            }
        })
        .collect();
    (search_ops, originals, values)
}

/// Shows bytes as a quoted string if they are UTF-8, else as hex.
fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => format!("{s:?}"),
        Err(_) => bytes.iter().fold(String::from("0x"), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        }),
    }
}

fn show_opt(bytes: Option<&[u8]>) -> String {
    bytes.map_or_else(|| "absent".to_owned(), show)
}

fn describe(op: &Operation) -> String {
    let what = match &op.op {
        KvOp::Get { .. } => "Get".to_owned(),
        KvOp::Put { value, .. } => format!("Put({})", show(value)),
        KvOp::Delete { .. } => "Delete".to_owned(),
        KvOp::Cas { expected, new, .. } => {
            format!("Cas({} -> {})", show_opt(expected.as_deref()), show(new))
        }
    };
    match &op.completed {
        None => format!("client {} [{}, ?] {what} -> unknown", op.client, op.invoked),
        Some((t, r)) => {
            let result = match r {
                KvResult::Get(v) => show_opt(v.as_deref()),
                KvResult::Put => "ok".to_owned(),
                KvResult::Delete { existed } => format!("existed={existed}"),
                KvResult::Cas { succeeded } => format!("succeeded={succeeded}"),
            };
            format!(
                "client {} [{}, {t}] {what} -> {result}",
                op.client, op.invoked
            )
        }
    }
}

/// Most operations listed in an explanation.
const EXPLAIN_MAX_OPS: usize = 200;

fn explain(
    key: &[u8],
    ops: &[&Operation],
    longest: &[usize],
    state: State,
    values: &[&[u8]],
) -> String {
    let shown_state = match state.checked_sub(1) {
        None => "absent".to_owned(),
        Some(i) => values.get(i as usize).map_or_else(String::new, |v| show(v)),
    };
    let order = longest.iter().fold(String::new(), |mut out, i| {
        let _ = write!(out, " #{i}");
        out
    });
    let mut out = format!(
        "key {} ({} operations, reads of unknown outcome dropped) is not linearizable.\n\
         Longest partial linearization ({} ops, leaving the key {shown_state}):{order}\n\
         after which no remaining operation can take effect.\n\
         Operations by invocation time (* = in that partial linearization):\n",
        show(key),
        ops.len(),
        longest.len(),
    );
    for (i, op) in ops.iter().enumerate().take(EXPLAIN_MAX_OPS) {
        let mark = if longest.contains(&i) { '*' } else { ' ' };
        let _ = writeln!(out, "{mark} #{i} {}", describe(op));
    }
    if ops.len() > EXPLAIN_MAX_OPS {
        let _ = writeln!(out, "  … {} more", ops.len() - EXPLAIN_MAX_OPS);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Duration = Duration::from_secs(20);

    fn b(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }
    fn get(k: &str) -> KvOp {
        KvOp::Get { key: b(k) }
    }
    fn put(k: &str, v: &str) -> KvOp {
        KvOp::Put {
            key: b(k),
            value: b(v),
        }
    }
    fn cas(k: &str, expected: Option<&str>, new: &str) -> KvOp {
        let (key, expected, new) = (b(k), expected.map(b), b(new));
        KvOp::Cas { key, expected, new }
    }
    fn read(v: Option<&str>) -> KvResult {
        KvResult::Get(v.map(b))
    }
    fn done(client: usize, op: KvOp, invoked: u64, completed: u64, r: KvResult) -> Operation {
        let completed = Some((completed, r));
        Operation {
            client,
            op,
            invoked,
            completed,
        }
    }
    fn lost(client: usize, op: KvOp, invoked: u64) -> Operation {
        Operation {
            client,
            op,
            invoked,
            completed: None,
        }
    }
    fn verdict(ops: Vec<Operation>) -> Verdict {
        check(&History::from_ops(ops), BUDGET)
    }
    fn assert_fails(ops: Vec<Operation>) {
        match verdict(ops) {
            Verdict::NotLinearizable { explanation } => assert!(explanation.contains("#0")),
            v => panic!("expected NotLinearizable, got {v:?}"),
        }
    }

    #[test]
    fn sequential_histories() {
        let del = KvOp::Delete { key: b("x") };
        let valid = vec![
            done(0, get("x"), 0, 1, read(None)),
            done(0, put("x", "1"), 2, 3, KvResult::Put),
            done(1, get("x"), 4, 5, read(Some("1"))),
            done(
                0,
                cas("x", Some("1"), "2"),
                6,
                7,
                KvResult::Cas { succeeded: true },
            ),
            done(
                1,
                cas("x", None, "3"),
                8,
                9,
                KvResult::Cas { succeeded: false },
            ),
            done(0, del.clone(), 10, 11, KvResult::Delete { existed: true }),
            done(1, del, 12, 13, KvResult::Delete { existed: false }),
            done(0, put("y", "1"), 14, 15, KvResult::Put),
            done(1, get("y"), 16, 17, read(Some("1"))),
            done(0, get("x"), 18, 19, read(None)),
        ];
        assert_eq!(verdict(valid.clone()), Verdict::Linearizable);
        let mut invalid = valid;
        invalid[2] = done(1, get("x"), 4, 5, read(Some("nope")));
        assert_fails(invalid);
        assert_eq!(verdict(Vec::new()), Verdict::Linearizable);
    }

    #[test]
    fn concurrent_put_get_either_order() {
        for r in [None, Some("1")] {
            let ops = vec![
                done(0, put("x", "1"), 0, 10, KvResult::Put),
                done(1, get("x"), 2, 8, read(r)),
            ];
            assert_eq!(verdict(ops), Verdict::Linearizable);
        }
    }

    #[test]
    fn stale_read() {
        let ops = vec![
            done(0, put("x", "1"), 0, 10, KvResult::Put),
            done(1, put("x", "2"), 20, 30, KvResult::Put),
            done(2, get("x"), 40, 50, read(Some("1"))),
        ];
        assert_fails(ops.clone());
        // Overlapping the second put, the same read is fine.
        let mut ok = ops;
        ok[2].invoked = 25;
        assert_eq!(verdict(ok), Verdict::Linearizable);
    }

    #[test]
    fn two_cas_on_absent_key_both_succeed() {
        let ok = KvResult::Cas { succeeded: true };
        let ops = vec![
            done(0, cas("x", None, "a"), 0, 10, ok.clone()),
            done(1, cas("x", None, "b"), 0, 10, ok),
        ];
        assert_fails(ops.clone());
        let mut fine = ops;
        fine[1].completed = Some((10, KvResult::Cas { succeeded: false }));
        assert_eq!(verdict(fine), Verdict::Linearizable);
    }

    #[test]
    fn unknown_outcomes() {
        let read_later = vec![
            lost(0, put("x", "1"), 0),
            done(1, get("x"), 10, 20, read(Some("1"))),
            done(1, get("x"), 30, 40, read(Some("1"))),
        ];
        assert_eq!(verdict(read_later), Verdict::Linearizable);
        let dropped = vec![
            lost(0, put("x", "1"), 0),
            done(1, get("x"), 10, 20, read(None)),
        ];
        assert_eq!(verdict(dropped), Verdict::Linearizable);
        let read_before = vec![
            done(1, get("x"), 10, 20, read(Some("1"))),
            lost(0, put("x", "1"), 30),
        ];
        assert_fails(read_before);
        // Once seen, an unknown put cannot be undone.
        let flicker = vec![
            lost(0, put("x", "1"), 0),
            done(1, get("x"), 10, 20, read(Some("1"))),
            done(1, get("x"), 30, 40, read(None)),
        ];
        assert_fails(flicker);
        // An unknown get is dropped; a mismatched result never fits.
        assert_eq!(verdict(vec![lost(0, get("x"), 0)]), Verdict::Linearizable);
        assert_fails(vec![done(0, get("x"), 0, 1, KvResult::Put)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recorder_from_tasks() {
        let recorder = Recorder::new();
        let store = Arc::new(Mutex::new(HashMap::<Vec<u8>, Vec<u8>>::new()));
        let tasks = (0..5).map(|client| {
            let (recorder, store) = (recorder.clone(), store.clone());
            tokio::spawn(async move {
                for i in 0..40 {
                    let key = format!("k{}", i % 3).into_bytes();
                    let op = if (i + client) % 2 == 0 {
                        KvOp::Get { key }
                    } else {
                        KvOp::Put {
                            key,
                            value: format!("{client}-{i}").into_bytes(),
                        }
                    };
                    let handle = recorder.invoke(client, op.clone());
                    tokio::task::yield_now().await;
                    let result = {
                        let mut store = store.lock().unwrap();
                        match op {
                            KvOp::Get { key } => KvResult::Get(store.get(&key).cloned()),
                            KvOp::Put { key, value } => {
                                store.insert(key, value);
                                KvResult::Put
                            }
                            _ => unreachable!(),
                        }
                    };
                    tokio::task::yield_now().await;
                    if i == 39 {
                        handle.unknown();
                    } else {
                        handle.complete(result);
                    }
                }
            })
        });
        for task in futures::future::join_all(tasks.collect::<Vec<_>>()).await {
            task.unwrap();
        }
        let history = recorder.history();
        assert_eq!(history.len(), 200);
        assert_eq!(
            history
                .ops()
                .iter()
                .filter(|o| o.completed.is_none())
                .count(),
            5
        );
        assert!(history
            .ops()
            .iter()
            .all(|o| o.completed.as_ref().is_none_or(|c| c.0 >= o.invoked)));
        assert_eq!(check(&history, BUDGET), Verdict::Linearizable);
    }
}
