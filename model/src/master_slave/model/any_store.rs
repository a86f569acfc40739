//! Protocol 1's checked system on any [`Store`]: the same master, slaves and scripted
//! clients, the same ghost history and the same properties as [`MasterSlaveConfig`], with
//! the user's store in place of [`crate::store::ModelKv`] and the user's operations in the
//! scripts.
//!
//! [`MasterSlaveConfig::into_model`] stays the model of record (its scripts, mutants,
//! storage faults, suite and search reductions are written for the model's small map);
//! this entry point is for checking that a store of one's own replicates correctly, with
//! Stateright's checkers:
//!
//! ```
//! use replicore_model::master_slave::model::AnyStoreConfig;
//! use replicore_model::master_slave::{ScriptStep, UpdateKind};
//! use replicore_model::store::{Kv, KvOp};
//! use stateright::{Checker, Model};
//!
//! let script = vec![
//!     ScriptStep { op: KvOp::Put(1u8, 7u8), kind: UpdateKind::OnePhase },
//!     ScriptStep { op: KvOp::Delete(1), kind: UpdateKind::TwoPhase },
//! ];
//! let mut cfg = AnyStoreConfig::<Kv<u8, u8>>::new(script);
//! cfg.slaves = 1;
//! cfg.max_crashes = 0;
//! let checker = cfg.into_model().checker().spawn_bfs().join();
//! checker.assert_properties();
//! ```
//!
//! What it does not have: storage faults ([`MasterSlaveConfig::disk_faults`]), mutants,
//! symmetry and the other reductions of [`super::reduce`], and the liveness graph check of
//! `replicore-check` (convergence stays reachable under message loss). `Eventually`
//! convergence is checked where it can fail (no crashes), as in [`MasterSlaveConfig`].

use super::config::{Servers, actors};
use super::system::record_went_back;
use super::{Ghost, MasterSlaveConfig, NetworkKind, Node, Roles, SystemState, props};
use crate::master_slave::client::{ScriptStep, UpdateKind};
use crate::master_slave::msg::{Msg, Timer};
use crate::store::Store;
use stateright::actor::{ActorModel, ActorModelAction, Id};
use stateright::{Expectation, Model, Property};

/// A checked system of protocol 1 on the store `S`; [`AnyStoreConfig::into_model`] builds
/// it. Actor ids as in [`MasterSlaveConfig`]: the master 0, slaves `1..=slaves`, then one
/// client per script.
#[derive(Clone, Debug, PartialEq)]
pub struct AnyStoreConfig<S: Store> {
    /// How many slave servers.
    pub slaves: usize,
    /// One script per client, run concurrently. Three or more clients with two-phase
    /// updates let requests queue behind a round and share the next one (group commit).
    pub scripts: Vec<Vec<ScriptStep<S>>>,
    /// The network semantics.
    pub network: NetworkKind,
    /// Whether messages can be lost. Off by default: on the unordered duplicating network
    /// loss changes no safety or reachability verdict
    /// ([`MasterSlaveConfig::safety_equivalent`] says why, for any store).
    pub lossy: bool,
    /// How many servers may be down at the same time.
    pub max_crashes: usize,
    /// How many committed steps the master remembers for deltas.
    pub history_bound: usize,
}

impl<S: Store> AnyStoreConfig<S> {
    /// One client running `script` against a master and two slaves, over an unordered
    /// duplicating network without loss, at most one crash, and a history of one step (so
    /// catch-up by snapshot is reachable): [`MasterSlaveConfig::default`]'s shape.
    pub fn new(script: Vec<ScriptStep<S>>) -> Self {
        let base = MasterSlaveConfig::default();
        AnyStoreConfig {
            slaves: base.slaves,
            scripts: vec![script],
            network: base.network,
            lossy: false,
            max_crashes: base.max_crashes,
            history_bound: base.history_bound,
        }
    }

    /// Every client's id: after the slaves.
    pub fn client_ids(&self) -> Vec<Id> {
        (self.slaves + 1..=self.slaves + self.scripts.len())
            .map(Id::from)
            .collect()
    }

    /// The operation `client`'s request `req` carries, if the client is one of these.
    pub fn update(&self, client: Id, req: u64) -> Option<S::Op> {
        let c = self.client_ids().iter().position(|id| *id == client)?;
        let step = self.scripts[c].get(usize::try_from(req).ok()?)?;
        Some(step.op.clone())
    }

    fn has(&self, kind: UpdateKind) -> bool {
        self.scripts.iter().flatten().any(|s| s.kind == kind)
    }

    /// The most messages in flight explored on networks that keep every copy: two per
    /// actor, as in [`MasterSlaveConfig::in_flight_bound`].
    pub fn in_flight_bound(&self) -> usize {
        2 * (self.slaves + 1 + self.scripts.len())
    }

    /// Builds the model with every property that applies to this config; the properties
    /// and the rules for which apply are [`MasterSlaveConfig::into_model`]'s.
    pub fn into_model(self) -> AnyStoreModel<S> {
        let servers = Servers {
            history_bound: self.history_bound,
            mutant: None,
            lossy: self.lossy,
            max_crashes: self.max_crashes,
        };
        let scripts = self.scripts.clone();
        let system = actors(self.clone(), Ghost::default(), servers, scripts);
        let mut model = AnyStoreModel {
            system,
            properties: Vec::new(),
        };

        use props::*;
        let shape = Shape {
            two_phase: self.has(UpdateKind::TwoPhase),
            rolled_back: self.has(UpdateKind::RolledBack),
            clients: self.scripts.len(),
            several_steps: self.scripts.iter().any(|script| script.len() >= 2),
            pruned: self.scripts.iter().any(|script| {
                script
                    .iter()
                    .skip(self.history_bound)
                    .any(|s| s.kind == UpdateKind::OnePhase)
            }),
            crashes: self.max_crashes > 0,
        };
        for (expectation, name) in shape.applicable() {
            let condition: fn(&AnyStoreModel<S>, &SystemState<S>) -> bool = match name {
                ACKNOWLEDGED_REPLAY => {
                    |m, s| acknowledged_replay_of(s, |c, req| m.cfg.update(c, req))
                }
                CONVERGES => |m, s| {
                    let clients = m.cfg.client_ids().into_iter();
                    let scripts = m.cfg.scripts.iter().map(Vec::len);
                    converged_of(&clients.zip(scripts).collect::<Vec<_>>(), s)
                },
                REACH_TWO_PHASE_COMMIT => |m, s| two_phase_commit_everywhere_of(m.cfg.slaves, s),
                REACH_RECOVERY => |_, s| recovered_and_converged_of(s),
                other => state_condition(other)
                    .unwrap_or_else(|| unreachable!("no condition for the property {other:?}")),
            };
            model = model.property(expectation, name, condition);
        }
        model
    }
}

impl<S: Store> Roles for AnyStoreConfig<S> {
    fn master_id(&self) -> Id {
        Id::from(0)
    }

    fn slave_ids(&self) -> Vec<Id> {
        (1..=self.slaves).map(Id::from).collect()
    }

    fn client_ids(&self) -> Vec<Id> {
        AnyStoreConfig::client_ids(self)
    }

    fn network(&self) -> NetworkKind {
        self.network
    }

    fn in_flight_bound(&self) -> usize {
        AnyStoreConfig::in_flight_bound(self)
    }
}

/// The actors, network, crashes and ghost of [`AnyStoreModel`], as Stateright builds them.
pub type AnyStoreActors<S> = ActorModel<Node<S>, AnyStoreConfig<S>, Ghost<S>>;

/// The checked system of protocol 1 on store `S`: Stateright's actor model plus the one
/// observation it cannot make, a running server's committed version going back within a
/// step (read by [`props::monotonic`]). It derefs to the actor model (`model.cfg`).
#[derive(Clone)]
pub struct AnyStoreModel<S: Store> {
    /// The actors, network, crashes and ghost.
    pub system: AnyStoreActors<S>,
    properties: Vec<Property<AnyStoreModel<S>>>,
}

impl<S: Store> std::ops::Deref for AnyStoreModel<S> {
    type Target = AnyStoreActors<S>;
    fn deref(&self) -> &AnyStoreActors<S> {
        &self.system
    }
}

impl<S: Store> AnyStoreModel<S> {
    /// Adds a property.
    pub fn property(
        mut self,
        expectation: Expectation,
        name: &'static str,
        condition: fn(&AnyStoreModel<S>, &SystemState<S>) -> bool,
    ) -> Self {
        self.properties.push(Property {
            expectation,
            name,
            condition,
        });
        self
    }
}

impl<S: Store> Model for AnyStoreModel<S> {
    type State = SystemState<S>;
    type Action = ActorModelAction<Msg<S>, Timer, ()>;

    fn init_states(&self) -> Vec<Self::State> {
        self.system.init_states()
    }

    fn actions(&self, state: &Self::State, actions: &mut Vec<Self::Action>) {
        self.system.actions(state, actions);
    }

    fn next_state(&self, last: &Self::State, action: Self::Action) -> Option<Self::State> {
        let running = match &action {
            ActorModelAction::Deliver { dst, .. } => Some(*dst),
            ActorModelAction::Timeout(id, _) => Some(*id),
            _ => None,
        };
        let mut next = self.system.next_state(last, action)?;
        if let Some(id) = running {
            record_went_back(last, &mut next, id);
        }
        Some(next)
    }

    fn format_action(&self, action: &Self::Action) -> String {
        self.system.format_action(action)
    }

    fn format_step(&self, last: &Self::State, action: Self::Action) -> Option<String> {
        self.system.format_step(last, action)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        self.properties.clone()
    }

    fn within_boundary(&self, state: &Self::State) -> bool {
        Model::within_boundary(&self.system, state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master_slave::model::script;
    use stateright::Checker;

    fn names<M: Model>(properties: &[Property<M>]) -> Vec<&'static str> {
        properties.iter().map(|p| p.name).collect()
    }

    /// On the model's own store the generic system is the model of record: the same states,
    /// the same properties, the same verdicts.
    #[test]
    fn on_the_models_store_it_is_the_model_of_record() {
        for (text, max_crashes, states) in [("1p,2p,rb", 0, 134_182), ("1p,2p", 1, 69_507)] {
            let cfg = MasterSlaveConfig {
                slaves: 1,
                script: script(text),
                lossy: false,
                max_crashes,
                ..MasterSlaveConfig::default()
            };
            let any = AnyStoreConfig {
                slaves: cfg.slaves,
                scripts: vec![cfg.client_script(0)],
                network: cfg.network,
                lossy: cfg.lossy,
                max_crashes: cfg.max_crashes,
                history_bound: cfg.history_bound,
            }
            .into_model();
            let of_record = cfg.into_model();
            assert_eq!(names(&any.properties()), names(&of_record.properties()));

            let any = any.checker().spawn_bfs().join();
            let of_record = of_record.checker().spawn_bfs().join();
            any.assert_properties();
            of_record.assert_properties();
            assert_eq!(any.unique_state_count(), of_record.unique_state_count());
            assert_eq!(
                any.unique_state_count(),
                states,
                "{text}, {max_crashes} crashes"
            );
        }
    }
}
