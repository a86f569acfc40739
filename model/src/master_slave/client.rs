//! Protocol 1's clients (a master user or device, claim 2), both by one set of [`Rules`]:
//! one request at a time, numbered from the client's first number up, each re-sent on
//! [`Timer::Retry`] until the master answers that number (the master answers a repeat again
//! and never applies it twice).
//!
//! - [`ScriptClient`] plays a fixed script; it is the client the checker explores.
//! - [`SubmitClient`] runs the updates and rollbacks its application submits as messages
//!   ([`SubmitMsg`]); the runtime drives it (`replicore_runtime::master_slave::client`).

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

/// How often a client re-sends an unanswered request in the runtime (the model ignores
/// durations).
pub const RETRY: Range<Duration> = Duration::from_secs(1)..Duration::from_secs(1);

/// The rules every protocol-1 client follows.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Rules {
    /// The master server.
    pub master: Id,
    /// How long to wait for an answer before re-sending.
    pub retry: Range<Duration>,
}

impl Rules {
    /// Sends `msgs` about one request to the master, in order, and arms the retry: the same
    /// messages go again when it fires before the answer.
    fn send<A, S>(
        &self,
        msgs: impl IntoIterator<Item = ClientMsg<S>>,
        wrap: impl Fn(Msg<S>) -> A::Msg,
        o: &mut Out<A>,
    ) where
        A: Actor<Timer = Timer>,
        S: Store,
    {
        for m in msgs {
            o.send(self.master, wrap(Msg::Client(m)));
        }
        o.set_timer(Timer::Retry, self.retry.clone());
    }

    /// The request number `msg` answers, when it is the master's answer.
    fn answered<S: Store>(&self, src: Id, msg: &Msg<S>) -> Option<u64> {
        match msg {
            Msg::Client(ClientMsg::Committed { req, .. } | ClientMsg::Aborted { req, .. })
                if src == self.master =>
            {
                Some(*req)
            }
            // Anything else is not for a client.
            _ => None,
        }
    }
}

impl<S: Store> ScriptClient<S> {
    fn rules(&self) -> Rules {
        Rules {
            master: self.master,
            retry: self.retry.clone(),
        }
    }

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
        let update = ClientMsg::Update {
            req,
            op: step.op.clone(),
            mode,
        };
        let rollback = (step.kind == UpdateKind::RolledBack).then_some(ClientMsg::Rollback { req });
        self.rules()
            .send(std::iter::once(update).chain(rollback), |m| m, o);
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
        let Some(req) = self.rules().answered(src, &msg) else {
            return;
        };
        if req != state.next {
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

/// The messages of a [`SubmitClient`]: the protocol's, and its application's.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub enum SubmitMsg<S: Store> {
    /// Between the client and the master.
    Server(Msg<S>),
    /// Application → client: run this update next, under the next request number (one
    /// request at a time: a submit while one is in flight is ignored).
    Update {
        /// The change.
        op: S::Op,
        /// One-phase or two-phase.
        mode: Mode,
    },
    /// Application → client: roll back this client id's request `req` (claim 5) and wait for
    /// that request's outcome. It takes no number of its own.
    Rollback {
        /// The request to roll back.
        req: u64,
    },
    /// Application → client: stop waiting for the request in flight (its outcome is unknown:
    /// it may still be applied). The next update takes the next number.
    GiveUp,
    /// Client → application: the master's answer ([`ClientMsg::Committed`] or
    /// [`ClientMsg::Aborted`]) about the request in flight.
    Answered(ClientMsg<S>),
}

/// The request a [`SubmitClient`] waits on.
#[derive(Clone, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub enum Pending<S: Store> {
    /// An update under number `req`.
    Update {
        /// The request number.
        req: u64,
        /// The change.
        op: S::Op,
        /// One-phase or two-phase.
        mode: Mode,
    },
    /// A rollback of request `req`.
    Rollback {
        /// The request rolled back.
        req: u64,
    },
}

impl<S: Store> Pending<S> {
    fn req(&self) -> u64 {
        match self {
            Pending::Update { req, .. } | Pending::Rollback { req } => *req,
        }
    }

    fn message(&self) -> ClientMsg<S> {
        match self {
            Pending::Update { req, op, mode } => ClientMsg::Update {
                req: *req,
                op: op.clone(),
                mode: *mode,
            },
            Pending::Rollback { req } => ClientMsg::Rollback { req: *req },
        }
    }
}

/// A submitting client's state.
///
/// # Invariants
/// - Every update it sent has a number below `next_req`; the next one takes `next_req`.
#[derive(Clone, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct SubmitState<S: Store> {
    /// The number the next update takes.
    pub next_req: u64,
    /// The request in flight and the application that submitted it.
    pub pending: Option<(Pending<S>, Id)>,
}

/// A client that runs the updates and rollbacks its application submits, one at a time, by
/// the same [`Rules`] as the scripted client. Its numbering starts at `first_req`, so a new
/// client process under an old client id continues it (the master tells a new request from
/// a repeat by its number).
#[derive(Clone, Debug)]
pub struct SubmitClient<S: Store> {
    /// The rules.
    pub rules: Rules,
    /// The number of this client id's first request (0 for a new id).
    pub first_req: u64,
    /// The store.
    pub store: std::marker::PhantomData<fn() -> S>,
}

impl<S: Store> Actor for SubmitClient<S> {
    type Msg = SubmitMsg<S>;
    type State = SubmitState<S>;
    type Timer = Timer;
    type Storage = Saved<S>;
    type Random = ();

    fn on_start(&self, _id: Id, _: &Option<Self::Storage>, _: &mut Out<Self>) -> Self::State {
        SubmitState {
            next_req: self.first_req,
            pending: None,
        }
    }

    fn on_msg(
        &self,
        _id: Id,
        state: &mut Cow<Self::State>,
        src: Id,
        msg: Self::Msg,
        o: &mut Out<Self>,
    ) {
        let submitted = match msg {
            SubmitMsg::Update { .. } | SubmitMsg::Rollback { .. } if state.pending.is_some() => {
                // One request at a time.
                return;
            }
            SubmitMsg::Update { op, mode } => {
                let req = state.next_req;
                state.to_mut().next_req += 1;
                Pending::Update { req, op, mode }
            }
            SubmitMsg::Rollback { req } => Pending::Rollback { req },
            SubmitMsg::Server(m) => {
                let Some(req) = self.rules.answered(src, &m) else {
                    return;
                };
                let Some((pending, app)) = &state.pending else {
                    // Nothing in flight: a late copy of an answer.
                    return;
                };
                if req != pending.req() {
                    // The answer to an earlier request (a retry answered twice).
                    return;
                }
                let app = *app;
                state.to_mut().pending = None;
                o.cancel_timer(Timer::Retry);
                if let Msg::Client(answer) = m {
                    o.send(app, SubmitMsg::Answered(answer));
                }
                return;
            }
            SubmitMsg::GiveUp => {
                if state.pending.is_some() {
                    state.to_mut().pending = None;
                    o.cancel_timer(Timer::Retry);
                }
                return;
            }
            // An application hears answers; a client sends them.
            SubmitMsg::Answered(_) => return,
        };
        self.rules.send([submitted.message()], SubmitMsg::Server, o);
        state.to_mut().pending = Some((submitted, src));
    }

    fn on_timeout(
        &self,
        _id: Id,
        state: &mut Cow<Self::State>,
        timer: &Self::Timer,
        o: &mut Out<Self>,
    ) {
        if *timer != Timer::Retry {
            return;
        }
        if let Some((pending, _)) = &state.pending {
            self.rules.send([pending.message()], SubmitMsg::Server, o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{self, Cmd};
    use crate::master_slave::msg::AbortReason;
    use crate::store::{Kv, KvOp};

    type C = SubmitClient<Kv<u8, u8>>;
    type M = SubmitMsg<Kv<u8, u8>>;

    const MASTER: usize = 0;
    const APP: usize = 99;

    fn client(first_req: u64) -> C {
        SubmitClient {
            rules: Rules {
                master: Id::from(MASTER),
                retry: RETRY,
            },
            first_req,
            store: std::marker::PhantomData,
        }
    }

    fn server(m: ClientMsg<Kv<u8, u8>>) -> M {
        SubmitMsg::Server(Msg::Client(m))
    }

    /// An update takes the next number, is re-sent under that number until the master
    /// answers it, and the answer goes to the application; repeats and answers to other
    /// numbers change nothing; the next update takes the next number.
    #[test]
    fn an_update_is_numbered_resent_and_answered() {
        let c = client(5);
        let me = Id::from(7);
        let (mut st, start) = harness::start(&c, me, None);
        assert!(start.is_empty());
        let submit = || SubmitMsg::Update {
            op: KvOp::Put(1, 2),
            mode: Mode::OnePhase,
        };
        let update = ClientMsg::Update {
            req: 5,
            op: KvOp::Put(1, 2),
            mode: Mode::OnePhase,
        };
        let sent = vec![
            Cmd::Send(Id::from(MASTER), SubmitMsg::Server(Msg::Client(update))),
            Cmd::SetTimer(Timer::Retry, RETRY),
        ];
        assert_eq!(harness::msg(&c, me, &mut st, Id::from(APP), submit()), sent);
        assert_eq!(st.next_req, 6);
        assert_eq!(
            harness::msg(&c, me, &mut st, Id::from(APP), submit()),
            vec![],
            "one at a time"
        );
        assert_eq!(harness::timeout(&c, me, &mut st, &Timer::Retry), sent);
        // An answer to another number, or from another node, is not this one's.
        let other = server(ClientMsg::Committed { req: 4, version: 1 });
        assert_eq!(
            harness::msg(&c, me, &mut st, Id::from(MASTER), other),
            vec![]
        );
        let committed = ClientMsg::Committed { req: 5, version: 3 };
        assert_eq!(
            harness::msg(&c, me, &mut st, Id::from(2), server(committed.clone())),
            vec![]
        );
        assert_eq!(
            harness::msg(&c, me, &mut st, Id::from(MASTER), server(committed.clone())),
            vec![
                Cmd::CancelTimer(Timer::Retry),
                Cmd::Send(Id::from(APP), SubmitMsg::Answered(committed.clone())),
            ]
        );
        assert_eq!(st.pending, None);
        assert_eq!(
            harness::msg(&c, me, &mut st, Id::from(MASTER), server(committed)),
            vec![],
            "a repeated answer"
        );
        assert_eq!(harness::timeout(&c, me, &mut st, &Timer::Retry), vec![]);
        let next = harness::msg(&c, me, &mut st, Id::from(APP), submit());
        assert!(
            matches!(
                &next[0],
                Cmd::Send(
                    _,
                    SubmitMsg::Server(Msg::Client(ClientMsg::Update { req: 6, .. }))
                )
            ),
            "{next:?}"
        );
    }

    /// A rollback takes no number; it is re-sent until the master answers the request it
    /// names. A given-up request leaves its number used.
    #[test]
    fn a_rollback_waits_for_its_requests_outcome_and_a_give_up_keeps_the_number() {
        let c = client(0);
        let me = Id::from(7);
        let (mut st, _) = harness::start(&c, me, None);
        let sent = vec![
            Cmd::Send(
                Id::from(MASTER),
                SubmitMsg::Server(Msg::Client(ClientMsg::Rollback { req: 3 })),
            ),
            Cmd::SetTimer(Timer::Retry, RETRY),
        ];
        assert_eq!(
            harness::msg(
                &c,
                me,
                &mut st,
                Id::from(APP),
                SubmitMsg::Rollback { req: 3 }
            ),
            sent
        );
        assert_eq!(st.next_req, 0);
        assert_eq!(harness::timeout(&c, me, &mut st, &Timer::Retry), sent);
        let aborted = ClientMsg::Aborted {
            req: 3,
            version: 9,
            reason: AbortReason::RolledBack,
        };
        assert_eq!(
            harness::msg(&c, me, &mut st, Id::from(MASTER), server(aborted.clone())),
            vec![
                Cmd::CancelTimer(Timer::Retry),
                Cmd::Send(Id::from(APP), SubmitMsg::Answered(aborted)),
            ]
        );
        let submit = SubmitMsg::Update {
            op: KvOp::Delete(1),
            mode: Mode::TwoPhase { timeout_ms: 10 },
        };
        harness::msg(&c, me, &mut st, Id::from(APP), submit);
        assert_eq!(
            harness::msg(&c, me, &mut st, Id::from(APP), SubmitMsg::GiveUp),
            vec![Cmd::CancelTimer(Timer::Retry)]
        );
        assert_eq!((st.next_req, st.pending.clone()), (1, None));
    }
}
