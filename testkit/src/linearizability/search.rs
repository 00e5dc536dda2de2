//! The per-key search: Wing & Gong's backtracking search in Lowe's
//! "just-in-time linearization" form, with memoization of visited
//! (linearized-set, state) configurations.
//!
//! A configuration is the set of operations already linearized plus the
//! register's state. From a configuration, an operation may be linearized
//! next iff it is not yet linearized, every operation that must precede it in
//! real time (completed strictly before it was invoked) is, and the model
//! accepts it in the current state. Since operations are sorted by invocation
//! time, the candidates are the not-yet-linearized operations invoked no later
//! than the earliest completion among the not-yet-linearized ones.
//!
//! Three prunings on top of a plain memo:
//! - a configuration that differs from a visited one only by having more
//!   unknown-outcome operations linearized is skipped (see [`Memo`]);
//! - a completed operation that never changes the state when it is allowed
//!   (a read, a failed Cas, a Delete of an absent key, …) is linearized
//!   eagerly with no alternatives tried: if any linearization exists from a
//!   configuration, one exists with such an operation placed first;
//! - an unknown-outcome operation that would not change the state is never
//!   linearized: leaving it out is always at least as good; of several
//!   available ones with the same effect, only the first is tried; and
//!   completed operations are tried before unknown-outcome ones.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

/// An interned register state: [`ABSENT`], or `id + 1` for an interned value.
pub(super) type State = u32;

/// The state of an absent key.
pub(super) const ABSENT: State = 0;

/// What an operation does to the register, with its observed result (if
/// known) folded in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// A completed read that returned this state.
    Get(State),
    /// A write of this (non-absent) state.
    Put(State),
    /// A delete; `Some(existed)` if its outcome is known.
    Delete(Option<bool>),
    /// A compare-and-set; `succeeded` is `None` if its outcome is unknown.
    Cas {
        expected: State,
        new: State,
        succeeded: Option<bool>,
    },
    /// An operation whose result does not match its kind: never allowed.
    Impossible,
}

/// One operation of a single key's sub-history.
#[derive(Clone, Copy, Debug)]
pub(super) struct SearchOp {
    pub invoked: u64,
    /// `None` if the outcome is unknown (completion at +∞, may be dropped).
    pub completed: Option<u64>,
    pub step: Step,
}

impl SearchOp {
    fn known(&self) -> bool {
        self.completed.is_some()
    }

    /// The state after linearizing this operation in state `s`, or `None` if
    /// the model forbids it (or, for an unknown outcome, it would be a no-op).
    fn apply(&self, s: State) -> Option<State> {
        let known = self.known();
        match self.step {
            Step::Get(r) => (s == r).then_some(s),
            Step::Put(v) => (known || s != v).then_some(v),
            Step::Delete(Some(existed)) => (existed == (s != ABSENT)).then_some(ABSENT),
            Step::Delete(None) => (s != ABSENT).then_some(ABSENT),
            Step::Cas {
                expected,
                new,
                succeeded,
            } => match succeeded {
                Some(true) => (s == expected).then_some(new),
                Some(false) => (s != expected).then_some(s),
                None => (s == expected && s != new).then_some(new),
            },
            Step::Impossible => None,
        }
    }

    /// Whether this is a completed operation that leaves the state unchanged
    /// whenever the model allows it.
    fn read_only(&self) -> bool {
        if !self.known() {
            return false;
        }
        match self.step {
            Step::Get(_) | Step::Delete(Some(false)) => true,
            Step::Cas {
                expected,
                new,
                succeeded,
            } => succeeded == Some(false) || expected == new,
            Step::Put(_) | Step::Delete(_) | Step::Impossible => false,
        }
    }
}

/// The result of searching one key's sub-history.
#[derive(Debug)]
pub(super) enum Outcome {
    Linearizable,
    /// No linearization exists; `longest` is the longest partial
    /// linearization found (indices into the ops), reaching `state`.
    NotLinearizable {
        longest: Vec<usize>,
        state: State,
    },
    Timeout,
}

/// A fixed-size bitset.
struct Bits {
    words: Vec<u64>,
    len: usize,
}

impl Bits {
    fn new(len: usize) -> Self {
        Bits {
            words: vec![0; len.div_ceil(64).max(1)],
            len,
        }
    }

    fn get(&self, i: usize) -> bool {
        self.words[i / 64] & (1 << (i % 64)) != 0
    }

    fn flip(&mut self, i: usize) {
        self.words[i / 64] ^= 1 << (i % 64);
    }

    fn first_zero(&self) -> Option<usize> {
        let (w, word) = self
            .words
            .iter()
            .enumerate()
            .find(|(_, w)| **w != u64::MAX)?;
        let i = w * 64 + word.trailing_ones() as usize;
        (i < self.len).then_some(i)
    }

    /// Whether every member of `self` is in `other` (of the same length).
    fn subset_of(&self, other: &Bits) -> bool {
        self.words
            .iter()
            .zip(&other.words)
            .all(|(a, b)| a & !b == 0)
    }
}

/// The visited configurations. Configurations are grouped by the completed
/// operations linearized and the state; within a group, one whose set of
/// linearized unknown-outcome operations includes a visited one's is
/// dominated by it (the extra operations could as well never take effect),
/// so it is skipped. Each group keeps only its minimal sets.
struct Memo {
    known_mask: Vec<u64>,
    /// Positions of the unknown-outcome operations.
    unknown: Vec<usize>,
    groups: HashMap<Box<[u64]>, Vec<Bits>, BuildHasherDefault<FxHasher>>,
}

impl Memo {
    fn new(ops: &[SearchOp]) -> Self {
        let mut known_mask = Bits::new(ops.len());
        let mut unknown = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            if op.known() {
                known_mask.flip(i);
            } else {
                unknown.push(i);
            }
        }
        Memo {
            known_mask: known_mask.words,
            unknown,
            groups: HashMap::default(),
        }
    }

    /// Records the configuration (`lin`, `state`); false if it was visited
    /// or is dominated by a visited one.
    fn visit(&mut self, lin: &Bits, state: State) -> bool {
        let group: Box<[u64]> = lin
            .words
            .iter()
            .zip(&self.known_mask)
            .map(|(w, m)| w & m)
            .chain(std::iter::once(u64::from(state)))
            .collect();
        let mut unknown = Bits::new(self.unknown.len());
        for (i, &j) in self.unknown.iter().enumerate() {
            if lin.get(j) {
                unknown.flip(i);
            }
        }
        let seen = self.groups.entry(group).or_default();
        if seen.iter().any(|s| s.subset_of(&unknown)) {
            return false;
        }
        seen.retain(|s| !unknown.subset_of(s));
        seen.push(unknown);
        true
    }
}

/// A small multiply-rotate hasher for the memo (SipHash is needlessly slow
/// for bitsets, and nothing here is adversarial).
#[derive(Default)]
struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(b));
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.add(x);
    }

    fn write_usize(&mut self, x: usize) {
        self.add(x as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// One linearized operation on the search path.
struct Frame {
    op: usize,
    prev: State,
    /// Linearized eagerly: its siblings need not be tried.
    forced: bool,
}

/// Searches for a linearization of `ops`, which must be sorted by invocation
/// time, starting from an absent key. Gives up with [`Outcome::Timeout`] once
/// `deadline` has passed (checked every 1024 steps, so tiny histories always
/// get an answer).
pub(super) fn search(ops: &[SearchOp], deadline: Option<Instant>) -> Outcome {
    debug_assert!(ops.windows(2).all(|w| w[0].invoked <= w[1].invoked));
    let n = ops.len();
    let completion = |i: usize| ops[i].completed.unwrap_or(u64::MAX);
    let mut by_completion: Vec<usize> = (0..n).collect();
    by_completion.sort_by_key(|&i| (completion(i), i));
    let mut rank = vec![0; n];
    for (r, &i) in by_completion.iter().enumerate() {
        rank[i] = r;
    }

    // `lin` is indexed by position in `ops`, `lin_c` by completion rank.
    let mut lin = Bits::new(n);
    let mut lin_c = Bits::new(n);
    let mut pending_known = ops.iter().filter(|o| o.known()).count();
    let mut state = ABSENT;
    let mut memo = Memo::new(ops);
    memo.visit(&lin, state);
    let mut stack: Vec<Frame> = Vec::new();
    let mut longest: (Vec<usize>, State) = (Vec::new(), ABSENT);
    // Where to resume scanning candidates after a backtrack; `fresh` is true
    // when the current configuration has just been entered.
    let mut resume = None;
    let mut fresh = true;
    let mut steps: u64 = 0;
    let mut candidates: Vec<usize> = Vec::new();

    loop {
        if pending_known == 0 {
            return Outcome::Linearizable;
        }
        steps += 1;
        if steps & 1023 == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
            return Outcome::Timeout;
        }
        let horizon = lin_c
            .first_zero()
            .map_or(u64::MAX, |r| completion(by_completion[r]));
        let start = lin.first_zero().unwrap_or(n);
        candidates.clear();
        // Completed operations first, so that configurations with fewer
        // unknown-outcome operations linearized (which dominate) come first.
        let window = (start..n)
            .take_while(|&j| ops[j].invoked <= horizon)
            .filter(|&j| !lin.get(j));
        candidates.extend(window.clone().filter(|&j| ops[j].known()));
        candidates.extend(window.filter(|&j| !ops[j].known()));

        let mut next = None;
        let mut dead = false;
        if fresh {
            let eager = candidates
                .iter()
                .copied()
                .find(|&j| ops[j].read_only() && ops[j].apply(state).is_some());
            if let Some(j) = eager {
                lin.flip(j);
                if memo.visit(&lin, state) {
                    next = Some((j, state, true));
                } else {
                    dead = true;
                }
                lin.flip(j);
            }
        }
        if next.is_none() && !dead {
            let from = resume
                .and_then(|r| candidates.iter().position(|&c| c == r))
                .map_or(0, |p| p + 1);
            for (i, &j) in candidates.iter().enumerate().skip(from) {
                // Available unknown-outcome operations with the same effect
                // are interchangeable: only the first is ever linearized.
                let same = |&c: &usize| !ops[c].known() && ops[c].step == ops[j].step;
                if !ops[j].known() && candidates[..i].iter().any(same) {
                    continue;
                }
                let Some(after) = ops[j].apply(state) else {
                    continue;
                };
                lin.flip(j);
                let new = memo.visit(&lin, after);
                lin.flip(j);
                if new {
                    next = Some((j, after, false));
                    break;
                }
            }
        }

        if let Some((j, after, forced)) = next {
            lin.flip(j);
            lin_c.flip(rank[j]);
            if ops[j].known() {
                pending_known -= 1;
            }
            stack.push(Frame {
                op: j,
                prev: state,
                forced,
            });
            state = after;
            resume = None;
            fresh = true;
            if stack.len() > longest.0.len() {
                longest = (stack.iter().map(|f| f.op).collect(), state);
            }
            continue;
        }

        // Dead end: undo until a configuration with untried siblings.
        loop {
            let Some(frame) = stack.pop() else {
                let (longest, state) = longest;
                return Outcome::NotLinearizable { longest, state };
            };
            lin.flip(frame.op);
            lin_c.flip(rank[frame.op]);
            if ops[frame.op].known() {
                pending_known += 1;
            }
            state = frame.prev;
            if !frame.forced {
                resume = Some(frame.op);
                fresh = false;
                break;
            }
        }
    }
}

/// Randomized tests of the search through the public API.
#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    use crate::linearizability::*;

    const BUDGET: Duration = Duration::from_secs(20);

    #[test]
    fn timeout_is_reported() {
        let mut rng = Rng(7);
        let history = random_history(&mut rng, 3000, 5, 1, 30);
        assert_eq!(check(&history, Duration::ZERO), Verdict::Timeout);
    }

    /// A tiny xorshift generator.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A random sequential execution against a reference map, with each
    /// operation's interval randomly widened (by up to `widen`) around its
    /// linearization point, and a few operations of unknown outcome (which
    /// took effect or not).
    fn random_history(rng: &mut Rng, n: usize, clients: usize, keys: u64, widen: u64) -> History {
        let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut busy = vec![0u64; clients];
        let mut history = History::new();
        let mut t = 0;
        let value = |rng: &mut Rng| format!("v{}", rng.below(4)).into_bytes();
        for _ in 0..n {
            t += 10;
            let free: Vec<usize> = (0..clients).filter(|&c| busy[c] < t).collect();
            if free.is_empty() {
                continue;
            }
            let client = free[rng.below(free.len() as u64) as usize];
            let key = format!("k{}", rng.below(keys)).into_bytes();
            let cur = model.get(&key).cloned();
            let (op, result, effect) = match rng.below(4) {
                0 => (
                    KvOp::Get { key: key.clone() },
                    KvResult::Get(cur.clone()),
                    cur,
                ),
                1 => {
                    let value = value(rng);
                    (
                        KvOp::Put {
                            key: key.clone(),
                            value: value.clone(),
                        },
                        KvResult::Put,
                        Some(value),
                    )
                }
                2 => {
                    let existed = cur.is_some();
                    (
                        KvOp::Delete { key: key.clone() },
                        KvResult::Delete { existed },
                        None,
                    )
                }
                _ => {
                    let expected = match rng.below(3) {
                        0 => None,
                        1 => cur.clone(),
                        _ => Some(value(rng)),
                    };
                    let new = value(rng);
                    let succeeded = expected == cur;
                    let effect = if succeeded { Some(new.clone()) } else { cur };
                    let op = KvOp::Cas {
                        key: key.clone(),
                        expected,
                        new,
                    };
                    (op, KvResult::Cas { succeeded }, effect)
                }
            };
            let unknown = rng.below(20) == 0;
            if !unknown || rng.below(2) == 0 {
                match effect {
                    Some(v) => model.insert(key, v),
                    None => model.remove(&key),
                };
            }
            let invoked = t.saturating_sub(rng.below(widen + 1)).max(busy[client] + 1);
            let completed = t + rng.below(widen + 1);
            busy[client] = completed;
            let completed = (!unknown).then_some((completed, result));
            history.push(Operation {
                client,
                op,
                invoked,
                completed,
            });
        }
        history
    }

    #[test]
    fn random_valid_and_corrupted_histories() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..200 {
            let n = 10 + rng.below(150) as usize;
            let clients = 1 + rng.below(5) as usize;
            let keys = 1 + rng.below(3);
            let widen = rng.below(60);
            let mut history = random_history(&mut rng, n, clients, keys, widen);
            let v = check(&history, BUDGET);
            assert_eq!(v, Verdict::Linearizable, "case {case}: {history:?}");
            let reads: Vec<usize> = (0..history.len())
                .filter(|&i| matches!(history.ops[i].completed, Some((_, KvResult::Get(_)))))
                .collect();
            if reads.is_empty() {
                continue;
            }
            let i = reads[rng.below(reads.len() as u64) as usize];
            if let Some((_, r)) = &mut history.ops[i].completed {
                *r = KvResult::Get(Some(b"never written".to_vec()));
            }
            let v = check(&history, BUDGET);
            assert!(
                matches!(v, Verdict::NotLinearizable { .. }),
                "case {case}: {v:?}"
            );
        }
    }

    #[test]
    fn few_hundred_ops_per_key() {
        // Decided within the budget (a Timeout verdict fails the comparison).
        let mut rng = Rng(42);
        let history = random_history(&mut rng, 400, 5, 1, 40);
        assert_eq!(check(&history, BUDGET), Verdict::Linearizable);
    }

    /// `cargo test --release -p geonfs-bench --lib linearizability::tests::throughput -- --ignored --nocapture`
    #[test]
    #[ignore = "prints timings"]
    fn throughput() {
        for widen in [20, 40, 100] {
            for n in [250, 500, 1000] {
                let mut rng = Rng(n as u64 * 31 + widen);
                let mut history = random_history(&mut rng, n, 5, 1, widen);
                for corrupt in [false, true] {
                    if corrupt {
                        // The last read returns a value never written.
                        let last =
                            history
                                .ops
                                .iter_mut()
                                .rev()
                                .find_map(|o| match &mut o.completed {
                                    Some((_, r @ KvResult::Get(_))) => Some(r),
                                    _ => None,
                                });
                        if let Some(r) = last {
                            *r = KvResult::Get(Some(b"never written".to_vec()));
                        }
                    }
                    let start = Instant::now();
                    let v = check(&history, Duration::from_secs(10));
                    let v = format!("{v:?}");
                    let v = v.split(' ').next().unwrap_or_default();
                    let (ops, took) = (history.len(), start.elapsed());
                    println!("widen {widen} ops {ops} corrupt {corrupt}: {v} in {took:?}");
                }
            }
        }
    }
}
