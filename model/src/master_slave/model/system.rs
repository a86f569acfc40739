//! The actors of the checked system: the master, the slaves and the scripted clients behind
//! one actor type.

use super::{Ghost, MasterSlaveConfig};
use crate::master_slave::Saved;
use crate::master_slave::client::{ClientState, ScriptClient};
use crate::master_slave::master::{MasterServer, MasterState};
use crate::master_slave::msg::Msg;
use crate::master_slave::slave::{SlaveServer, SlaveState};
use crate::store::{ModelKv, Store};
use stateright::actor::{Actor, ActorModel, ActorModelState, Id, Out};
use stateright::{Rewrite, RewritePlan};
use std::borrow::Cow;

/// The model type built by [`MasterSlaveConfig::into_model`].
pub type MasterSlaveModel = ActorModel<Node<ModelKv>, MasterSlaveConfig, Ghost<ModelKv>>;
/// A state of [`MasterSlaveModel`].
pub type MasterSlaveState = ActorModelState<Node<ModelKv>, Ghost<ModelKv>>;

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
    type Timer = crate::master_slave::Timer;
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
