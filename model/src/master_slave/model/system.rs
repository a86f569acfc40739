//! The actors of the checked system: the master, the slaves and the scripted clients behind
//! one actor type.

use super::{Ghost, MasterSlaveConfig};
use crate::master_slave::Saved;
use crate::master_slave::client::{ClientState, ScriptClient};
use crate::master_slave::master::{MasterServer, MasterState};
use crate::master_slave::msg::{Msg, Timer};
use crate::master_slave::slave::SlaveStorage;
use crate::master_slave::slave::{SlaveServer, SlaveState};
use crate::master_slave::slave_user::SlaveUser;
use crate::store::{ModelKv, Store};
use stateright::actor::{Actor, ActorModel, ActorModelAction, ActorModelState, Id, Out};
use stateright::{Model, Path, Property, Rewrite, RewritePlan};
use std::borrow::Cow;

/// The actors, network, crashes and ghost of the checked system, as Stateright builds them.
pub type MasterSlaveActors = ActorModel<Node<ModelKv>, MasterSlaveConfig, Ghost<ModelKv>>;
/// A state of the checked system of protocol 1 on store `S`: the actors' states, the
/// network, crashes, saved states and the ghost history.
pub type SystemState<S> = ActorModelState<Node<S>, Ghost<S>>;
/// A state of [`MasterSlaveModel`].
pub type MasterSlaveState = SystemState<ModelKv>;
/// A step of [`MasterSlaveModel`]: one of Stateright's actor-model actions, or a storage
/// fault ([`StorageFault::action`]).
pub type MasterSlaveAction = ActorModelAction<Msg<ModelKv>, Timer, ()>;

/// What can happen to a server's saved state while it is down (issue 18), on top of the
/// crashes Stateright explores. Bounded by [`MasterSlaveConfig::disk_faults`].
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub enum StorageFault {
    /// The data directory is gone, and the node was created again with `--init`: it
    /// restarts with nothing saved.
    Lost,
    /// Part of the saved state fails its check at the next start: the data rows are gone
    /// and the copy is flagged ([`SlaveStorage::lost`]); the node's own `on_start` decides
    /// what to do with it.
    Damaged,
}

impl StorageFault {
    /// Both faults.
    pub const ALL: [StorageFault; 2] = [StorageFault::Lost, StorageFault::Damaged];

    /// The name in reports; also the key of the action that stands for the fault.
    pub fn name(self) -> &'static str {
        match self {
            StorageFault::Lost => "storage lost",
            StorageFault::Damaged => "storage damaged",
        }
    }

    /// The fault `action` stands for, if it stands for one.
    pub fn of(action: &MasterSlaveAction) -> Option<(Id, StorageFault)> {
        match action {
            ActorModelAction::SelectRandom { actor, key, .. } => StorageFault::ALL
                .into_iter()
                .find(|f| f.name() == key)
                .map(|f| (*actor, f)),
            _ => None,
        }
    }

    /// The action that stands for this fault on `id`. Stateright's actions have no storage
    /// fault, so the model uses its random-selection action under the fault's name as key;
    /// no actor of protocol 1 ever asks for a random choice, so the two never meet.
    pub fn action(self, id: Id) -> MasterSlaveAction {
        ActorModelAction::SelectRandom {
            actor: id,
            key: self.name().to_string(),
            random: (),
        }
    }

    /// What a server finds at its next start when this fault hit `saved`: nothing, or the
    /// copy with its data rows failing their checks (the data is gone, the rest as it was)
    /// and flagged ([`SlaveStorage::lost`]), as the runtime's checks flag a damaged store.
    /// The slave's own `on_start` decides what to do with it, as it does at runtime (where
    /// the flagged copy it receives is [`Saved::after_damage`]). `None` when the fault
    /// changes nothing (a damaged store that never held anything).
    pub fn apply(self, saved: &Option<Saved<ModelKv>>) -> Option<Option<Saved<ModelKv>>> {
        let after = match (self, saved) {
            // A master's store lost or damaged alike leaves the marker its rebuild starts
            // from (the runtime's `--recover`, or its discarding of a damaged store): one
            // fault, `Lost`, stands for both.
            (StorageFault::Lost, Some(Saved::Master(_))) => Some(Saved::MasterLost),
            (_, Some(Saved::Master(_) | Saved::MasterLost)) => return None,
            (StorageFault::Lost, _) => None,
            (StorageFault::Damaged, Some(Saved::Slave(st))) => Some(Saved::Slave(SlaveStorage {
                user: SlaveUser {
                    data: ModelKv::default(),
                    ..st.user.clone()
                },
                lost: true,
            })),
            // Nothing saved cannot be damaged.
            (StorageFault::Damaged, _) => return None,
        };
        (after != *saved).then_some(after)
    }
}

/// The checked system of protocol 1: Stateright's actor model ([`MasterSlaveActors`]) plus
/// the storage faults of issue 18, which Stateright's actor model cannot express: while a
/// server is down, its saved state may be lost or damaged, at most
/// [`MasterSlaveConfig::disk_faults`] times in a run. The next recovery runs the server's own
/// `on_start` on what is left, the same code the runtime runs. The master's store is lost
/// only while some slave's saved copy holds everything it saved ([`master_copy_survives`]):
/// the assumption under which protocol 1's properties hold (`docs/reliability.md`).
///
/// It derefs to the actor model, so `model.cfg` and `model.actors` read as before.
#[derive(Clone)]
pub struct MasterSlaveModel {
    /// The actors, network, crashes and ghost.
    pub system: MasterSlaveActors,
    properties: Vec<Property<MasterSlaveModel>>,
}

impl std::ops::Deref for MasterSlaveModel {
    type Target = MasterSlaveActors;
    fn deref(&self) -> &MasterSlaveActors {
        &self.system
    }
}

impl MasterSlaveModel {
    /// The system `system` with no property yet.
    pub fn new(system: MasterSlaveActors) -> Self {
        MasterSlaveModel {
            system,
            properties: Vec::new(),
        }
    }

    /// Adds a property.
    pub fn property(
        mut self,
        expectation: stateright::Expectation,
        name: &'static str,
        condition: fn(&MasterSlaveModel, &MasterSlaveState) -> bool,
    ) -> Self {
        self.properties.push(Property {
            expectation,
            name,
            condition,
        });
        self
    }

    /// The storage faults possible in `s`: each fault that changes the saved state of each
    /// crashed slave, while the run's bound allows one more.
    fn faults(&self, s: &MasterSlaveState) -> Vec<(Id, StorageFault)> {
        if s.history.storage_faults >= self.cfg.disk_faults {
            return Vec::new();
        }
        let mut faults = Vec::new();
        let master = self.cfg.master_id();
        if self.cfg.master_faults
            && s.crashed[usize::from(master)]
            && master_copy_survives(s)
            && StorageFault::Lost
                .apply(&s.actor_storages[usize::from(master)])
                .is_some()
        {
            faults.push((master, StorageFault::Lost));
        }
        for id in self.cfg.slave_ids() {
            let i = usize::from(id);
            if !s.crashed[i] {
                continue;
            }
            for f in StorageFault::ALL {
                if f.apply(&s.actor_storages[i]).is_some() {
                    faults.push((id, f));
                }
            }
        }
        faults
    }
}

impl Model for MasterSlaveModel {
    type State = MasterSlaveState;
    type Action = MasterSlaveAction;

    fn init_states(&self) -> Vec<Self::State> {
        self.system.init_states()
    }

    fn actions(&self, state: &Self::State, actions: &mut Vec<Self::Action>) {
        self.system.actions(state, actions);
        actions.extend(self.faults(state).into_iter().map(|(id, f)| f.action(id)));
    }

    fn next_state(&self, last: &Self::State, action: Self::Action) -> Option<Self::State> {
        match StorageFault::of(&action) {
            Some((id, fault)) => {
                let i = usize::from(id);
                if !s_allows(self, last, id, fault) {
                    return None;
                }
                let mut next = last.clone();
                next.actor_storages[i] = fault.apply(&last.actor_storages[i]).flatten();
                let g = &mut next.history;
                g.storage_faults += 1;
                g.faulted.insert(id);
                // Undecided votes of this slave lose the saved delta that backed them.
                let voided: Vec<_> = g.voted.iter().filter(|(v, _)| *v == id).cloned().collect();
                for vote in voided {
                    g.voided.insert(vote);
                }
                Some(next)
            }
            None => {
                let (actor, recover) = match &action {
                    ActorModelAction::Recover(id) => (Some(*id), true),
                    ActorModelAction::Deliver { dst, .. } => (Some(*dst), false),
                    ActorModelAction::Timeout(id, _) => (Some(*id), false),
                    _ => (None, false),
                };
                let mut next = self.system.next_state(last, action)?;
                if let Some(id) = actor {
                    if recover {
                        if next.history.faulted.contains(&id) {
                            next.history.faulted.remove(&id);
                        }
                    } else {
                        record_went_back(last, &mut next, id);
                    }
                }
                Some(next)
            }
        }
    }

    /// The action in the checker's words (the Explorer lists a state's next steps by it).
    fn format_action(&self, action: &Self::Action) -> String {
        super::words::action_text(&self.cfg, action)
    }

    /// The step in the words of the checker's counterexamples, with what it changed.
    fn format_step(&self, last: &Self::State, action: Self::Action) -> Option<String> {
        let next = self.next_state(last, action.clone())?;
        Some(super::words::step_text(&self.cfg, last, &action, &next))
    }

    fn as_svg(&self, path: Path<Self::State, Self::Action>) -> Option<String> {
        // Stateright's drawing knows no storage fault; a path with one is not drawn.
        let steps = path.clone().into_vec();
        if steps
            .iter()
            .any(|(_, a)| a.as_ref().is_some_and(|a| StorageFault::of(a).is_some()))
        {
            return None;
        }
        self.system.as_svg(path)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        self.properties.clone()
    }

    fn within_boundary(&self, state: &Self::State) -> bool {
        Model::within_boundary(&self.system, state)
    }
}

/// Records in `next`'s ghost whether the running actor `id`'s step from `last` took its
/// committed version back: a running server's committed version only grows (safety 6).
pub(super) fn record_went_back<S: Store>(last: &SystemState<S>, next: &mut SystemState<S>, id: Id) {
    let i = usize::from(id);
    if !next.history.went_back
        && version_of(&next.actor_states[i]) < version_of(&last.actor_states[i])
    {
        next.history.went_back = true;
    }
}

/// A server's committed version (0 for a client).
fn version_of<S: Store>(state: &NodeState<S>) -> crate::store::Version {
    match state {
        NodeState::Master(m) => m.user.version,
        NodeState::Slave(sl) => sl.user.version,
        NodeState::Client(_) => 0,
    }
}

/// The assumption under which the master's store may be lost (issue 18): it saved no
/// undecided round, and some slave's saved copy (not itself found damaged) is at the
/// master's saved version and has heard of every version the master handed out (its
/// committed or decided version reaches the master's counter). Then every committed
/// version, and every version number used, survives on a slave; what the master's rebuild
/// must find. Without it a version only the master held is gone, and no protocol could tell.
pub fn master_copy_survives<S: Store>(s: &SystemState<S>) -> bool {
    let Some(Saved::Master(m)) = &s.actor_storages[0] else {
        return false;
    };
    m.pending.is_none()
        && s.actor_storages.iter().skip(1).any(|saved| match saved {
            Some(Saved::Slave(sl)) => {
                !sl.lost
                    && sl.user.version == m.user.version
                    && sl.user.version.max(sl.user.decided) + 1 >= m.user.next_version
            }
            _ => false,
        })
}

/// Whether `fault` may happen to `id` in `s` (see [`MasterSlaveModel::faults`]).
fn s_allows(model: &MasterSlaveModel, s: &MasterSlaveState, id: Id, fault: StorageFault) -> bool {
    model.faults(s).contains(&(id, fault))
}

/// The actors of the checked system.
#[derive(Clone, Debug)]
pub enum Node<S: Store> {
    /// The master server.
    Master(MasterServer<S>),
    /// A slave server.
    Slave(SlaveServer<S>),
    /// The scripted client.
    Client(ScriptClient<S>),
}

/// The state of one actor of the checked system.
#[derive(Clone, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub enum NodeState<S: Store> {
    /// The master's.
    Master(MasterState<S>),
    /// A slave's.
    Slave(SlaveState<S>),
    /// The client's.
    Client(ClientState),
}

impl<S: Store> Rewrite<Id> for NodeState<S> {
    fn rewrite<P>(&self, plan: &RewritePlan<Id, P>) -> Self {
        match self {
            NodeState::Master(s) => NodeState::Master(s.rewrite(plan)),
            NodeState::Slave(s) => NodeState::Slave(s.rewrite(plan)),
            NodeState::Client(s) => NodeState::Client(s.rewrite(plan)),
        }
    }
}

/// Runs one step of an inner actor on the matching variant of a [`NodeState`], keeping the
/// state borrowed unless the inner actor changed it (so no-op steps stay visible to the
/// checker and nothing is cloned).
macro_rules! delegate {
    ($state:ident, $o:ident, $variant:ident, $inner:ident, |$st:ident, $out:ident| $call:expr) => {{
        let mut $st = Cow::Borrowed($inner);
        let mut $out = Out::new();
        $call;
        $o.append(&mut $out);
        if let Cow::Owned(next) = $st {
            *$state = Cow::Owned(NodeState::$variant(next));
        }
    }};
}

impl<S: Store> Actor for Node<S> {
    type Msg = Msg<S>;
    type State = NodeState<S>;
    type Timer = Timer;
    type Storage = Saved<S>;
    type Random = ();

    fn on_start(&self, id: Id, storage: &Option<Self::Storage>, o: &mut Out<Self>) -> Self::State {
        macro_rules! start {
            ($a:ident, $variant:ident) => {{
                let mut out = Out::new();
                let s = NodeState::$variant($a.on_start(id, storage, &mut out));
                o.append(&mut out);
                s
            }};
        }
        match self {
            Node::Master(a) => start!(a, Master),
            Node::Slave(a) => start!(a, Slave),
            Node::Client(a) => start!(a, Client),
        }
    }

    fn on_msg(
        &self,
        id: Id,
        state: &mut Cow<Self::State>,
        src: Id,
        msg: Self::Msg,
        o: &mut Out<Self>,
    ) {
        match (self, &**state) {
            (Node::Master(a), NodeState::Master(s)) => delegate!(state, o, Master, s, |st, out| a
                .on_msg(id, &mut st, src, msg, &mut out)),
            (Node::Slave(a), NodeState::Slave(s)) => delegate!(state, o, Slave, s, |st, out| a
                .on_msg(id, &mut st, src, msg, &mut out)),
            (Node::Client(a), NodeState::Client(s)) => delegate!(state, o, Client, s, |st, out| a
                .on_msg(id, &mut st, src, msg, &mut out)),
            // An actor never holds another role's state.
            _ => {}
        }
    }

    fn on_timeout(
        &self,
        id: Id,
        state: &mut Cow<Self::State>,
        timer: &Self::Timer,
        o: &mut Out<Self>,
    ) {
        match (self, &**state) {
            (Node::Master(a), NodeState::Master(s)) => delegate!(state, o, Master, s, |st, out| a
                .on_timeout(id, &mut st, timer, &mut out)),
            (Node::Slave(a), NodeState::Slave(s)) => delegate!(state, o, Slave, s, |st, out| a
                .on_timeout(id, &mut st, timer, &mut out)),
            (Node::Client(a), NodeState::Client(s)) => delegate!(state, o, Client, s, |st, out| a
                .on_timeout(id, &mut st, timer, &mut out)),
            _ => {}
        }
    }
}
