//! A client (a master user or device, claim 2) that plays a fixed script of updates against
//! the master user layer, one request at a time, re-sending until answered.

use super::Saved;
use super::msg::{ClientMsg, Mode, Msg, Timer};
use crate::store::Store;
use serde::{Deserialize, Serialize};
use stateright::actor::{Actor, Id, Out};
use stateright::{Rewrite, RewritePlan};
use std::borrow::Cow;
use std::ops::Range;
use std::time::Duration;

/// How one scripted update is replicated.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub enum UpdateKind {
    /// A one-phase update.
    OnePhase,
    /// A two-phase update.
    TwoPhase,
    /// A two-phase update that the client rolls back at once (claim 5); it commits only if
    /// the votes beat the rollback to the master.
    RolledBack,
}

/// One scripted update.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub struct ScriptStep<S: Store> {
    /// The change.
    pub op: S::Op,
    /// How it is replicated.
    pub kind: UpdateKind,
}

/// The client's state: the index of the request in flight (`script.len()` once done).
#[derive(Clone, Debug, Default, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct ClientState {
    /// The script index (and request number) awaiting its answer.
    pub next: u64,
}

// The client's state names no other actor.
impl Rewrite<Id> for ClientState {
    fn rewrite<P>(&self, _plan: &RewritePlan<Id, P>) -> Self {
        self.clone()
    }
}

/// The scripted client actor.
#[derive(Clone, Debug)]
pub struct ScriptClient<S: Store> {
    /// The master server.
    pub master: Id,
    /// The updates to issue, in order.
    pub script: Vec<ScriptStep<S>>,
    /// How long a two-phase update may wait for its votes, in milliseconds.
    pub timeout_ms: u64,
    /// How long to wait for an answer before re-sending.
    pub retry: Range<Duration>,
}

impl<S: Store> ScriptClient<S> {
    /// Sends request `req` (and its rollback, for [`UpdateKind::RolledBack`]).
    fn send(&self, req: u64, o: &mut Out<Self>) {
        let Some(step) = usize::try_from(req).ok().and_then(|i| self.script.get(i)) else {
            return;
        };
        let mode = match step.kind {
            UpdateKind::OnePhase => Mode::OnePhase,
            UpdateKind::TwoPhase | UpdateKind::RolledBack => Mode::TwoPhase {
                timeout_ms: self.timeout_ms,
            },
        };
        o.send(
            self.master,
            Msg::Client(ClientMsg::Update {
                req,
                op: step.op.clone(),
                mode,
            }),
        );
        if step.kind == UpdateKind::RolledBack {
            o.send(self.master, Msg::Client(ClientMsg::Rollback { req }));
        }
        o.set_timer(Timer::Retry, self.retry.clone());
    }

    /// Whether every scripted update has been answered.
    pub fn is_done(&self, state: &ClientState) -> bool {
        state.next as usize >= self.script.len()
    }
}

impl<S: Store> Actor for ScriptClient<S> {
    type Msg = Msg<S>;
    type State = ClientState;
    type Timer = Timer;
    type Storage = Saved<S>;
    type Random = ();

    fn on_start(
        &self,
        _id: Id,
        _storage: &Option<Self::Storage>,
        o: &mut Out<Self>,
    ) -> Self::State {
        self.send(0, o);
        ClientState { next: 0 }
    }

    fn on_msg(
        &self,
        _id: Id,
        state: &mut Cow<Self::State>,
        src: Id,
        msg: Self::Msg,
        o: &mut Out<Self>,
    ) {
        let req = match msg {
            Msg::Client(ClientMsg::Committed { req, .. } | ClientMsg::Aborted { req, .. }) => req,
            // Anything else is not for a client.
            _ => return,
        };
        if src != self.master || req != state.next {
            // A repeated answer to an earlier request.
            return;
        }
        let next = req + 1;
        state.to_mut().next = next;
        if self.is_done(state) {
            o.cancel_timer(Timer::Retry);
        } else {
            self.send(next, o);
        }
    }

    fn on_timeout(
        &self,
        _id: Id,
        state: &mut Cow<Self::State>,
        _timer: &Self::Timer,
        o: &mut Out<Self>,
    ) {
        self.send(state.next, o);
    }
}
