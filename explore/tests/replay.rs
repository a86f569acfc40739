//! A discovery's path ends where the discovery was made, also when it runs through a state
//! that was first expanded with fair steps only (after a jump) and then again in full, as
//! another member of its fingerprint class whose actions are listed in another order.

use replicore_explore::{Jump, Options, explore};
use stateright::{Model, Property};
use std::hash::{Hash, Hasher};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Step {
    IncX,
    IncY,
    Mark,
}

/// Two counters up to 2, and a mark that can be set once they sum to 3. The counters are
/// symmetric (the fingerprint sorts them), but the action list is not: the mark is listed
/// first when the first counter leads, last otherwise.
struct Counters;

type State = (u8, u8, bool);

impl Model for Counters {
    type State = State;
    type Action = Step;
    fn init_states(&self) -> Vec<State> {
        vec![(0, 0, false)]
    }
    fn actions(&self, &(x, y, z): &State, actions: &mut Vec<Step>) {
        let mark = x + y == 3 && !z;
        if mark && x > y {
            actions.push(Step::Mark);
        }
        if x < 2 {
            actions.push(Step::IncX);
        }
        if y < 2 {
            actions.push(Step::IncY);
        }
        if mark && x <= y {
            actions.push(Step::Mark);
        }
    }
    fn next_state(&self, &(x, y, z): &State, step: Step) -> Option<State> {
        Some(match step {
            Step::IncX => (x + 1, y, z),
            Step::IncY => (x, y + 1, z),
            Step::Mark => (x, y, true),
        })
    }
    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("never marked", |_, s: &State| !s.2),
            Property::sometimes("marked", |_, s: &State| s.2),
        ]
    }
}

fn symmetric(&(x, y, z): &State) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    (x.min(y), x.max(y), z).hash(&mut h);
    h.finish()
}

fn jump_from_start(s: &State) -> Option<State> {
    (*s == (0, 0, false)).then_some((0, 2, false))
}

fn jump_steps(_: &State) -> Vec<Step> {
    vec![Step::IncY, Step::IncY]
}

fn fair(step: &Step) -> bool {
    *step == Step::IncX
}

#[test]
fn paths_through_a_widened_state_end_at_the_discovery() {
    let mut options = Options::new(&symmetric);
    // From the start, a jump to (0, 2): from there only IncX is taken, so (1, 2) is expanded
    // without its mark; later (2, 1) reaches the same class in full and is marked first.
    options.jump = Some(Jump {
        apply: &jump_from_start,
        actions: &jump_steps,
        fair_only_after: Some(&fair),
    });
    let exploration = explore(&Counters, options);
    assert_eq!(exploration.cut, None);
    for (i, name) in ["never marked", "marked"].iter().enumerate() {
        let path = exploration.discoveries[i]
            .as_ref()
            .unwrap_or_else(|| panic!("{name} is discovered"));
        let last = path.last_state();
        assert!(
            last.2,
            "{name}: the path ends unmarked, at {last:?}: {path:?}"
        );
        assert_eq!(last.0 + last.1, 3, "{name}: {path:?}");
    }
}
