//! The store laws ([`crate::store`], "Laws"), checked on any [`Store`]: the protocol is only
//! as correct as the store it replicates, so a user who writes a store checks it here
//! before plugging it in.
//!
//! [`check_store_laws`] draws sequences of operations from a proptest strategy, replays each
//! from the empty store (`S::default()`), and checks every law on the states and deltas the
//! replay makes. A broken law comes back as the smallest counterexample proptest shrinks it
//! to ([`LawBroken`]): the operations, the law, and the two sides that differ.
//!
//! The runs are deterministic (a fixed seed), so a failure shows again on the next run.
//! Behind the cargo feature `laws`, which brings in proptest and postcard.
//!
//! ```
//! use proptest::prelude::*;
//! use replicore_model::laws::check_store_laws;
//! use replicore_model::store::{Kv, KvOp};
//!
//! let ops = prop_oneof![
//!     (0u8..4, any::<u8>()).prop_map(|(k, v)| KvOp::Put(k, v)),
//!     (0u8..4).prop_map(KvOp::Delete),
//! ];
//! check_store_laws::<Kv<u8, u8>>(ops, 256).expect("Kv keeps every law");
//! ```

use crate::store::Store;
use proptest::prelude::*;

/// The proptest this checker is built on, for writing the strategies it takes without a
/// second copy of proptest.
pub use proptest;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRng, TestRunner};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// One law of [`crate::store`]'s list, checked at every state of a replay.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub enum Law {
    /// `s.apply(&s.delta_of(&o))` is the state the caller's reference says `o` makes
    /// (checked only by [`check_store_laws_against`]).
    Performs,
    /// Applying `S::empty_delta()`, or composing it on either side of a delta, changes
    /// nothing.
    EmptyDelta,
    /// Applying `compose(d1, d2)` equals applying `d1` then `d2`, for single steps and for
    /// folds of consecutive steps.
    Compose,
    /// `new.diff_from(&old)` applied to `old` gives `new`, in both directions.
    DiffFrom,
    /// States, deltas and operations decode (postcard, the runtime's wire and snapshot
    /// format) to what was encoded.
    Encoding,
    /// No store method panics on the states, operations and deltas a replay makes.
    NoPanic,
}

impl Law {
    /// The law as a sentence, for reports.
    pub fn statement(self) -> &'static str {
        match self {
            Law::Performs => "applying delta_of(op) performs op",
            Law::EmptyDelta => "the empty delta changes nothing",
            Law::Compose => "applying compose(d1, d2) equals applying d1 then d2",
            Law::DiffFrom => "new.diff_from(old) turns old into new",
            Law::Encoding => "states, deltas and operations decode to what was encoded",
            Law::NoPanic => "no store method panics",
        }
    }
}

/// A broken law and the smallest counterexample found.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct LawBroken<S: Store> {
    /// The law.
    pub law: Law,
    /// The operations, replayed from `S::default()`: state `i` is the store after the
    /// first `i` of them, delta `i` the one operation `i` made (`d0` is the first).
    pub ops: Vec<S::Op>,
    /// What was compared and what differed, naming states and deltas by index.
    pub case: String,
}

impl<S: Store> fmt::Display for LawBroken<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "store law broken: {}\n  operations from the empty store: {:?}\n  {}",
            self.law.statement(),
            self.ops,
            self.case
        )
    }
}

/// Why [`check_store_laws`] did not pass.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum LawError<S: Store> {
    /// A law is broken; the counterexample.
    Broken(LawBroken<S>),
    /// The check could not decide: proptest gave up (the strategy rejected too many
    /// cases), or a failing case passed when replayed again (a store whose methods are not
    /// functions of their arguments). Proptest's reason.
    Inconclusive(String),
}

impl<S: Store> fmt::Display for LawError<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LawError::Broken(b) => b.fmt(f),
            LawError::Inconclusive(reason) => write!(f, "store laws not decided: {reason}"),
        }
    }
}

impl<S: Store> std::error::Error for LawError<S> {}

/// The longest sequence of operations one case replays.
pub const OPS_MAX: usize = 12;

/// Checks every law except [`Law::Performs`] on `cases` replays of up to [`OPS_MAX`]
/// operations drawn from `ops`.
pub fn check_store_laws<S: Store>(
    ops: impl Strategy<Value = S::Op>,
    cases: u32,
) -> Result<(), LawError<S>> {
    run(ops, cases, None)
}

/// [`check_store_laws`], and also [`Law::Performs`]: `performs(s, o)` is the state `o`
/// should make of `s`, written independently of `delta_of` (the user's own meaning of an
/// operation).
pub fn check_store_laws_against<S: Store>(
    ops: impl Strategy<Value = S::Op>,
    cases: u32,
    performs: impl Fn(&S, &S::Op) -> S,
) -> Result<(), LawError<S>> {
    run(ops, cases, Some(&performs))
}

type Reference<'a, S> = &'a dyn Fn(&S, &<S as Store>::Op) -> S;

fn run<S: Store>(
    ops: impl Strategy<Value = S::Op>,
    cases: u32,
    performs: Option<Reference<'_, S>>,
) -> Result<(), LawError<S>> {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config.clone(),
        TestRng::deterministic_rng(config.rng_algorithm),
    );
    // Two free indices choose the states that the fold and diff laws start from; they are
    // taken modulo the replay's length.
    let input = (
        proptest::collection::vec(ops, 0..=OPS_MAX),
        any::<usize>(),
        any::<usize>(),
    );
    let result = runner.run(&input, |(ops, a, b)| {
        check(&ops, a, b, performs).map_err(|broken| TestCaseError::fail(broken.case))
    });
    match result {
        Ok(()) => Ok(()),
        Err(TestError::Abort(reason)) => Err(LawError::Inconclusive(reason.to_string())),
        Err(TestError::Fail(reason, (ops, a, b))) => {
            // Replayed again to name the law; a panic is caught here (proptest caught it
            // the first time and reported only its message).
            match catch_unwind(AssertUnwindSafe(|| check(&ops, a, b, performs))) {
                Ok(Err(broken)) => Err(LawError::Broken(broken)),
                Ok(Ok(())) => Err(LawError::Inconclusive(reason.to_string())),
                Err(_) => Err(LawError::Broken(LawBroken {
                    law: Law::NoPanic,
                    ops,
                    case: reason.to_string(),
                })),
            }
        }
    }
}

/// Checks every law on the replay of `ops`; `a` and `b` choose the states the fold and diff
/// laws start from.
fn check<S: Store>(
    ops: &[S::Op],
    a: usize,
    b: usize,
    performs: Option<Reference<'_, S>>,
) -> Result<(), LawBroken<S>> {
    let broken = |law, case| LawBroken {
        law,
        ops: ops.to_vec(),
        case,
    };
    let differs = |what: String, expected: &S, found: &S| {
        format!("{what}\n    expected {expected:?}\n    found    {found:?}")
    };
    let applied = |s: &S, d: &S::Delta| {
        let mut s = s.clone();
        s.apply(d);
        s
    };

    // The replay: states[i] after the first i operations, deltas[i] made by operation i.
    let mut states = vec![S::default()];
    let mut deltas = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let s = &states[i];
        let d = s.delta_of(op);
        let next = applied(s, &d);
        if let Some(performs) = performs {
            let want = performs(s, op);
            if next != want {
                let what = format!("state {i} after delta_of(op {i}), against the reference");
                return Err(broken(Law::Performs, differs(what, &want, &next)));
            }
        }
        states.push(next);
        deltas.push(d);
    }
    let n = ops.len();

    for (i, s) in states.iter().enumerate() {
        let found = applied(s, &S::empty_delta());
        if found != *s {
            let what = format!("state {i} after the empty delta");
            return Err(broken(Law::EmptyDelta, differs(what, s, &found)));
        }
    }
    for (i, d) in deltas.iter().enumerate() {
        for (side, c) in [
            ("compose(empty, d{i})", S::compose(&S::empty_delta(), d)),
            ("compose(d{i}, empty)", S::compose(d, &S::empty_delta())),
        ] {
            let found = applied(&states[i], &c);
            if found != states[i + 1] {
                let what = format!("state {i} after {}", side.replace("{i}", &i.to_string()));
                return Err(broken(
                    Law::EmptyDelta,
                    differs(what, &states[i + 1], &found),
                ));
            }
        }
    }

    for i in 0..n.saturating_sub(1) {
        let found = applied(&states[i], &S::compose(&deltas[i], &deltas[i + 1]));
        if found != states[i + 2] {
            let what = format!(
                "state {i} after compose(d{i}, d{}), against d{i} then d{}",
                i + 1,
                i + 1
            );
            return Err(broken(Law::Compose, differs(what, &states[i + 2], &found)));
        }
    }
    // Folds: the deltas from state `from` to state `split` composed into one, and from
    // `split` to the end into another, as a lagging slave's catch-up composes them.
    let from = a % (n + 1);
    let split = from + b % (n - from + 1);
    let fold = |ds: &[S::Delta]| {
        ds.iter()
            .fold(S::empty_delta(), |acc, d| S::compose(&acc, d))
    };
    let (d1, d2) = (fold(&deltas[from..split]), fold(&deltas[split..]));
    let found = applied(&states[from], &d1);
    if found != states[split] {
        let what = format!("state {from} after the composition of d{from}..d{split}");
        return Err(broken(Law::Compose, differs(what, &states[split], &found)));
    }
    let found = applied(&states[from], &S::compose(&d1, &d2));
    if found != states[n] {
        let what = format!(
            "state {from} after compose(composition of d{from}..d{split}, composition of \
             d{split}..d{n})"
        );
        return Err(broken(Law::Compose, differs(what, &states[n], &found)));
    }

    let (old, new) = (from, b % (n + 1));
    for (x, y) in [(old, new), (new, old), (new, new)] {
        let found = applied(&states[x], &states[y].diff_from(&states[x]));
        if found != states[y] {
            let what = format!("state {x} after state {y}.diff_from(state {x})");
            return Err(broken(Law::DiffFrom, differs(what, &states[y], &found)));
        }
    }

    fn round_trip<T: crate::store::Payload>(value: &T) -> Result<(), String> {
        let bytes = postcard::to_allocvec(value).map_err(|e| format!("does not encode: {e}"))?;
        let decoded: T =
            postcard::from_bytes(&bytes).map_err(|e| format!("does not decode: {e}"))?;
        if decoded == *value {
            Ok(())
        } else {
            Err(format!("decodes to {decoded:?}"))
        }
    }
    let encoding = |what: String, value: &dyn fmt::Debug, e: String| {
        broken(Law::Encoding, format!("{what} {value:?}: {e}"))
    };
    round_trip(&states[n]).map_err(|e| encoding(format!("state {n}"), &states[n], e))?;
    for (i, d) in deltas.iter().enumerate() {
        round_trip(d).map_err(|e| encoding(format!("d{i}"), d, e))?;
    }
    for (i, op) in ops.iter().enumerate() {
        round_trip(op).map_err(|e| encoding(format!("op {i}"), op, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Kv, KvDelta, KvOp};
    use serde::{Deserialize, Serialize};

    type Ops = BoxedStrategy<KvOp<u8, u8>>;

    fn ops() -> Ops {
        prop_oneof![
            (0u8..4, 0u8..4).prop_map(|(k, v)| KvOp::Put(k, v)),
            (0u8..4).prop_map(KvOp::Delete),
        ]
        .boxed()
    }

    /// A [`Kv`] whose one method is replaced by a broken one, to show the check refutes it.
    #[derive(
        Clone, Debug, Default, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize,
    )]
    struct Broken<const BUG: u8>(Kv<u8, u8>);

    const DROPS_SECOND_DELTA: u8 = 0;
    const DIFF_MISSES_REMOVALS: u8 = 1;
    const PANICS_ON_KEY_3: u8 = 2;

    impl<const BUG: u8> Store for Broken<BUG> {
        type Op = KvOp<u8, u8>;
        type Delta = KvDelta<u8, u8>;

        fn delta_of(&self, op: &Self::Op) -> Self::Delta {
            if BUG == PANICS_ON_KEY_3 && matches!(op, KvOp::Put(3, _)) {
                panic!("key 3");
            }
            self.0.delta_of(op)
        }

        fn apply(&mut self, delta: &Self::Delta) {
            self.0.apply(delta)
        }

        fn compose(first: &Self::Delta, then: &Self::Delta) -> Self::Delta {
            if BUG == DROPS_SECOND_DELTA && !first.changes.is_empty() {
                return first.clone();
            }
            Kv::compose(first, then)
        }

        fn empty_delta() -> Self::Delta {
            Kv::<u8, u8>::empty_delta()
        }

        fn diff_from(&self, old: &Self) -> Self::Delta {
            let mut d = self.0.diff_from(&old.0);
            if BUG == DIFF_MISSES_REMOVALS {
                d.changes = d.changes.into_iter().filter(|(_, v)| v.is_some()).collect();
            }
            d
        }
    }

    fn broken_law<S: Store<Op = KvOp<u8, u8>>>() -> LawBroken<S> {
        match check_store_laws::<S>(ops(), 256) {
            Err(LawError::Broken(b)) => b,
            other => panic!("expected a broken law, got {other:?}"),
        }
    }

    #[test]
    fn a_compose_that_drops_its_second_delta_is_refuted_by_two_puts() {
        let b = broken_law::<Broken<DROPS_SECOND_DELTA>>();
        assert_eq!(b.law, Law::Compose, "{b}");
        // Shrunk to the smallest case: two operations, composed.
        assert_eq!(b.ops.len(), 2, "{b}");
    }

    #[test]
    fn a_diff_that_misses_removals_is_refuted() {
        let b = broken_law::<Broken<DIFF_MISSES_REMOVALS>>();
        assert_eq!(b.law, Law::DiffFrom, "{b}");
        // Some key must go between the two states: a put before a delete, or a diff back
        // to an older state.
        assert!(b.ops.iter().any(|op| matches!(op, KvOp::Put(..))), "{b}");
    }

    #[test]
    fn a_panicking_store_is_refuted_not_propagated() {
        let b = broken_law::<Broken<PANICS_ON_KEY_3>>();
        assert_eq!(b.law, Law::NoPanic, "{b}");
        assert_eq!(
            b.ops.last().map(|op| matches!(op, KvOp::Put(3, _))),
            Some(true),
            "{b}"
        );
    }

    #[test]
    fn a_wrong_reference_is_refuted_by_performs() {
        let ignores_deletes = |s: &Kv<u8, u8>, op: &KvOp<u8, u8>| {
            let mut s = s.clone();
            if let KvOp::Put(k, v) = *op {
                s.entries.insert(k, v);
            }
            s
        };
        match check_store_laws_against(ops(), 256, ignores_deletes) {
            Err(LawError::Broken(b)) => assert_eq!(b.law, Law::Performs, "{b}"),
            other => panic!("expected a broken law, got {other:?}"),
        }
    }

    #[test]
    fn a_report_names_the_law_and_the_operations() {
        let b = broken_law::<Broken<DROPS_SECOND_DELTA>>();
        let text = b.to_string();
        assert!(text.contains(Law::Compose.statement()), "{text}");
        assert!(text.contains("Put("), "{text}");
    }
}
