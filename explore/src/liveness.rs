//! A liveness check of our own: "from every reachable state, a goal state is reachable by
//! fault-free steps".
//!
//! Stateright's `Eventually` is only evaluated at terminal states (no successors), so it
//! passes vacuously whenever a timer re-arms forever or a crash stays possible, and it never
//! sees a livelock (a cycle that avoids the goal). This check instead explores the whole
//! state space (breadth first, [`crate`], reduced by a canonical fingerprint), keeps every edge
//! taken by a *fair* action (the caller decides: for replication, message delivery, timer
//! firing and recovery; not message loss and not crashes), and then searches backwards from
//! every goal state. A reachable state that cannot reach any goal is a trap: after the faults
//! that led into it stop, the system still cannot converge. It is reported with the path
//! that reaches it.
//!
//! What it proves: for the explored (finite) space, convergence is *possible* from every
//! state once faults stop. What it does not: that every fair schedule *takes* such a path
//! (that would need fairness assumptions on which timer or message goes first).

use crate::{Fingerprint, Liveness, Options, explore};
use stateright::{Model, Path};
use std::time::Duration;

/// The outcome of [`convergence_reachable`].
#[derive(Debug)]
pub struct GraphReport<M: Model> {
    /// Unique states explored (after symmetry reduction).
    pub unique_states: usize,
    /// Fair edges kept.
    pub fair_edges: usize,
    /// States that satisfy the goal.
    pub goal_states: usize,
    /// States counted as converging because a fair step leaves the model's boundary.
    pub at_bound: usize,
    /// Whether the exploration stopped at `max_states` before the space was exhausted.
    pub truncated: bool,
    /// Wall time.
    pub elapsed: Duration,
    /// A shortest known path to a trap, if any.
    pub trap: Option<Path<M::State, M::Action>>,
}

/// Explores `model` and reports a state from which no `goal` state is reachable through
/// `fair` actions, reducing by the canonical `fingerprint` (see [`crate`]). Stops
/// after `max_states` unique states (reported as `truncated`). `bound_reaches_goal`: see
/// [`Liveness::bound_reaches_goal`].
pub fn convergence_reachable<M>(
    model: &M,
    fingerprint: Fingerprint<'_, M::State>,
    fair: impl Fn(&M::Action) -> bool + Sync,
    goal: impl Fn(&M::State) -> bool + Sync,
    bound_reaches_goal: bool,
    max_states: usize,
) -> GraphReport<M>
where
    M: Model + Sync,
    M::State: Clone + PartialEq + Send,
    M::Action: Clone + PartialEq,
{
    let mut options = Options::new(fingerprint);
    options.liveness = Some(Liveness {
        fair: &fair,
        goal: &goal,
        bound_reaches_goal,
    });
    options.max_states = max_states;
    let run = explore(model, options);
    let graph = run.graph.expect("asked for the graph");
    GraphReport {
        unique_states: run.unique,
        fair_edges: graph.fair_edges,
        goal_states: graph.goal_states,
        at_bound: graph.at_bound,
        truncated: run.cut.is_some(),
        elapsed: run.elapsed,
        trap: graph.trap,
    }
}
