//! A liveness check of our own: "from every reachable state, a goal state is reachable by
//! fault-free steps".
//!
//! Stateright's `Eventually` is only evaluated at terminal states (no successors), so it
//! passes vacuously whenever a timer re-arms forever or a crash stays possible, and it never
//! sees a livelock (a cycle that avoids the goal). This check instead explores the whole
//! state space (breadth first, with an optional symmetry representative), keeps every edge
//! taken by a *fair* action (the caller decides: for replication, message delivery, timer
//! firing and recovery; not message loss and not crashes), and then searches backwards from
//! every goal state. A reachable state that cannot reach any goal is a trap: after the faults
//! that led into it stop, the system still cannot converge. It is reported with the path
//! that reaches it.
//!
//! What it proves: for the explored (finite) space, convergence is *possible* from every
//! state once faults stop. What it does not: that every fair schedule *takes* such a path
//! (that would need fairness assumptions on which timer or message goes first).

use stateright::{Model, Path};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

/// The outcome of [`convergence_reachable`].
#[derive(Debug)]
pub struct GraphReport<M: Model> {
    /// Unique states explored (after symmetry reduction).
    pub unique_states: usize,
    /// Fair edges kept.
    pub fair_edges: usize,
    /// States that satisfy the goal.
    pub goal_states: usize,
    /// Whether the exploration stopped at `max_states` before the space was exhausted.
    pub truncated: bool,
    /// Wall time.
    pub elapsed: Duration,
    /// A shortest known path to a trap, if any.
    pub trap: Option<Path<M::State, M::Action>>,
}

fn fingerprint<T: Hash>(value: &T) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// A symmetry representative: maps a state to the canonical member of its class.
pub type Representative<S> = fn(&S) -> S;

/// Explores `model` and reports a state from which no `goal` state is reachable through
/// `fair` actions. Stops after `max_states` unique states (reported as `truncated`).
pub fn convergence_reachable<M>(
    model: &M,
    symmetry: Option<Representative<M::State>>,
    fair: impl Fn(&M::Action) -> bool,
    goal: impl Fn(&M::State) -> bool,
    max_states: usize,
) -> GraphReport<M>
where
    M: Model,
    M::State: Clone + Hash + PartialEq,
    M::Action: Clone + PartialEq,
{
    let started = Instant::now();
    let canon = |s: &M::State| match symmetry {
        Some(f) => fingerprint(&f(s)),
        None => fingerprint(s),
    };
    let mut ids: HashMap<u64, u32> = HashMap::new();
    // For each state: (parent, index of the action in the parent's action list).
    let mut parents: Vec<(u32, u32)> = Vec::new();
    let mut is_goal: Vec<bool> = Vec::new();
    let mut edges: Vec<(u32, u32)> = Vec::new();
    let mut queue: VecDeque<(u32, M::State)> = VecDeque::new();
    let mut truncated = false;

    let inits = model.init_states();
    for (i, s) in inits.iter().enumerate() {
        if let Entry::Vacant(e) = ids.entry(canon(s)) {
            let id = parents.len() as u32;
            e.insert(id);
            parents.push((u32::MAX, i as u32));
            is_goal.push(goal(s));
            queue.push_back((id, s.clone()));
        }
    }

    let mut actions = Vec::new();
    while let Some((id, state)) = queue.pop_front() {
        actions.clear();
        model.actions(&state, &mut actions);
        for (ai, action) in actions.drain(..).enumerate() {
            let is_fair = fair(&action);
            let Some(next) = model.next_state(&state, action) else {
                continue;
            };
            if !model.within_boundary(&next) {
                continue;
            }
            let next_id = match ids.entry(canon(&next)) {
                Entry::Occupied(e) => *e.get(),
                Entry::Vacant(e) => {
                    if parents.len() >= max_states {
                        truncated = true;
                        continue;
                    }
                    let next_id = parents.len() as u32;
                    e.insert(next_id);
                    parents.push((id, ai as u32));
                    is_goal.push(goal(&next));
                    queue.push_back((next_id, next));
                    next_id
                }
            };
            if is_fair && next_id != id {
                edges.push((next_id, id)); // reversed: from successor back to predecessor
            }
        }
    }

    // Backward search from every goal state over reversed fair edges (CSR layout).
    let n = parents.len();
    let mut offsets = vec![0u32; n + 1];
    for (to, _) in &edges {
        offsets[*to as usize + 1] += 1;
    }
    for i in 0..n {
        offsets[i + 1] += offsets[i];
    }
    let mut preds = vec![0u32; edges.len()];
    let mut fill = offsets.clone();
    for (to, from) in &edges {
        preds[fill[*to as usize] as usize] = *from;
        fill[*to as usize] += 1;
    }
    let mut can_reach = is_goal.clone();
    let mut work: Vec<u32> = (0..n as u32).filter(|i| is_goal[*i as usize]).collect();
    while let Some(v) = work.pop() {
        for p in &preds[offsets[v as usize] as usize..offsets[v as usize + 1] as usize] {
            if !can_reach[*p as usize] {
                can_reach[*p as usize] = true;
                work.push(*p);
            }
        }
    }

    // States are numbered in BFS order, so the first trap is a shallowest one.
    let trap = if truncated {
        None
    } else {
        can_reach.iter().position(|r| !r)
    };
    let trap = trap.map(|t| {
        let mut indices = Vec::new();
        let mut cur = t as u32;
        loop {
            let (parent, ai) = parents[cur as usize];
            indices.push(ai);
            if parent == u32::MAX {
                break;
            }
            cur = parent;
        }
        indices.reverse();
        let mut state = inits[indices[0] as usize].clone();
        let mut taken = Vec::new();
        for ai in &indices[1..] {
            let mut acts = Vec::new();
            model.actions(&state, &mut acts);
            let action = acts[*ai as usize].clone();
            // Replaying the recorded action indices is deterministic: the model sorts actions.
            state = model
                .next_state(&state, action.clone())
                .expect("a recorded step replays");
            taken.push(action);
        }
        Path::from_actions(model, inits[indices[0] as usize].clone(), taken.iter())
            .expect("a recorded path replays")
    });

    GraphReport {
        unique_states: n,
        fair_edges: edges.len(),
        goal_states: is_goal.iter().filter(|g| **g).count(),
        truncated,
        elapsed: started.elapsed(),
        trap,
    }
}
