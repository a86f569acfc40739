//! `--explore ADDR`: Stateright's Explorer on a protocol's model, in the checker's words.
//!
//! The Explorer names a step by [`Model::format_action`], describes its outcome by
//! [`Model::format_step`] and shows each state with `Debug`. [`Worded`] wraps a protocol's
//! model so that the first two are the words of the checker's counterexamples (the same
//! functions print both) and the outcome lists every node as the trace's "after the last
//! step" does. The states, actions, properties and drawing are the model's own.

use crate::report::{NodeRow, node_line};
use stateright::{Model, Path, Property};
use std::fmt::Debug;
use std::hash::Hash;

/// How a step reads: the state before, the action, the state after.
type StepWords<M> = Box<
    dyn Fn(&<M as Model>::State, &<M as Model>::Action, &<M as Model>::State) -> String
        + Send
        + Sync,
>;

/// How an action reads.
type ActionWords<M> = Box<dyn Fn(&<M as Model>::Action) -> String + Send + Sync>;

/// The nodes of a state, as the trace lists them.
type NodeWords<M> = Box<dyn Fn(&<M as Model>::State) -> Vec<NodeRow> + Send + Sync>;

/// A protocol's model that names its steps and states in the checker's words.
pub struct Worded<M: Model> {
    inner: M,
    properties: Vec<Property<M>>,
    action: ActionWords<M>,
    step: StepWords<M>,
    nodes: NodeWords<M>,
}

/// The most properties a worded model carries (each is forwarded by its own function).
const MAX_PROPERTIES: usize = 24;

impl<M: Model> Worded<M> {
    /// Wraps `inner`: `action` names an action, `step` says what a step did, `nodes` lists
    /// a state's nodes. Errors if the model has more properties than can be forwarded.
    pub fn new(
        inner: M,
        action: impl Fn(&M::Action) -> String + Send + Sync + 'static,
        step: impl Fn(&M::State, &M::Action, &M::State) -> String + Send + Sync + 'static,
        nodes: impl Fn(&M::State) -> Vec<NodeRow> + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        let properties = inner.properties();
        anyhow::ensure!(
            properties.len() <= MAX_PROPERTIES,
            "the model has {} properties; the Explorer forwards at most {MAX_PROPERTIES}",
            properties.len()
        );
        Ok(Worded {
            inner,
            properties,
            action: Box::new(action),
            step: Box::new(step),
            nodes: Box::new(nodes),
        })
    }
}

/// Property `I` of the wrapped model, evaluated on it.
fn forwarded<M: Model, const I: usize>(w: &Worded<M>, state: &M::State) -> bool {
    (w.properties[I].condition)(&w.inner, state)
}

macro_rules! forwards {
    ($($i:literal)*) => {
        fn forwards<M: Model>() -> Vec<fn(&Worded<M>, &M::State) -> bool> {
            vec![$(forwarded::<M, $i>),*]
        }
    };
}
forwards!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23);

impl<M: Model> Model for Worded<M>
where
    M::Action: Clone,
{
    type State = M::State;
    type Action = M::Action;

    fn init_states(&self) -> Vec<Self::State> {
        self.inner.init_states()
    }

    fn actions(&self, state: &Self::State, actions: &mut Vec<Self::Action>) {
        self.inner.actions(state, actions);
    }

    fn next_state(&self, last: &Self::State, action: Self::Action) -> Option<Self::State> {
        self.inner.next_state(last, action)
    }

    fn format_action(&self, action: &Self::Action) -> String {
        (self.action)(action)
    }

    /// What the step did, then every node after it, one per line.
    fn format_step(&self, last: &Self::State, action: Self::Action) -> Option<String> {
        let next = self.inner.next_state(last, action.clone())?;
        let mut out = (self.step)(last, &action, &next);
        for n in (self.nodes)(&next) {
            out.push('\n');
            out.push_str(&node_line(&n));
        }
        Some(out)
    }

    fn as_svg(&self, path: Path<Self::State, Self::Action>) -> Option<String> {
        self.inner.as_svg(path)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        self.properties
            .iter()
            .zip(forwards::<M>())
            .map(|(p, condition)| Property {
                expectation: p.expectation.clone(),
                name: p.name,
                condition,
            })
            .collect()
    }

    fn within_boundary(&self, state: &Self::State) -> bool {
        self.inner.within_boundary(state)
    }
}

/// `--explore ADDR`: serves the Stateright Explorer on `model` (whose config is `config`).
pub fn serve<M>(model: Worded<M>, config: &dyn std::fmt::Display, addr: &str) -> anyhow::Result<i32>
where
    M: Model + Send + Sync + 'static,
    M::Action: Debug + Send + Sync + Clone + PartialEq,
    M::State: Debug + Hash + Send + Sync + Clone + PartialEq,
{
    use anyhow::Context as _;
    // Stateright's server panics when it cannot bind; find out first, and say so plainly.
    let probe = std::net::TcpListener::bind(addr)
        .with_context(|| format!("--explore: cannot listen on {addr}"))?;
    drop(probe);
    println!("config: {config}");
    println!("Explorer on http://{addr}/ (open #/steps/PATH for a printed path); Ctrl-C to stop");
    let _ = model.checker().serve(addr);
    Ok(crate::report::EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter from 0 to 9 whose properties tell its states apart.
    struct Counter;

    impl Model for Counter {
        type State = u8;
        type Action = u8;
        fn init_states(&self) -> Vec<u8> {
            vec![0]
        }
        fn actions(&self, s: &u8, actions: &mut Vec<u8>) {
            if *s < 9 {
                actions.push(1);
            }
        }
        fn next_state(&self, s: &u8, by: u8) -> Option<u8> {
            Some(s + by)
        }
        fn properties(&self) -> Vec<Property<Self>> {
            vec![
                Property::always("zero", |_, s| *s == 0),
                Property::sometimes("even", |_, s| s % 2 == 0),
                Property::eventually("small", |_, s| *s < 5),
            ]
        }
    }

    fn worded() -> Worded<Counter> {
        Worded::new(
            Counter,
            |by| format!("add {by}"),
            |last, by, next| format!("{last} + {by} = {next}"),
            |s| {
                vec![NodeRow {
                    node: "counter".into(),
                    role: "counter".into(),
                    version: u64::from(*s),
                    data: String::new(),
                    prepared: None,
                    crashed: false,
                    saved_version: None,
                    detail: String::new(),
                }]
            },
        )
        .unwrap()
    }

    /// Each forwarded property answers as the wrapped one, on every state.
    #[test]
    fn the_worded_model_forwards_each_property_to_its_own() {
        let w = worded();
        let (theirs, ours) = (Counter.properties(), w.properties());
        assert_eq!(theirs.len(), ours.len());
        for s in 0..10 {
            for (t, o) in theirs.iter().zip(&ours) {
                assert_eq!((t.name, &t.expectation), (o.name, &o.expectation));
                assert_eq!(
                    (t.condition)(&Counter, &s),
                    (o.condition)(&w, &s),
                    "{} at {s}",
                    t.name
                );
            }
        }
    }

    #[test]
    fn the_worded_model_names_steps_and_lists_the_nodes_after_them() {
        let w = worded();
        assert_eq!(w.format_action(&1), "add 1");
        assert_eq!(
            w.format_step(&3, 1).unwrap(),
            format!("3 + 1 = 4\n{}", node_line(&(w.nodes)(&4)[0]))
        );
        assert!(node_line(&(w.nodes)(&4)[0]).contains("v4"));
    }
}
