//! A client (computer 3) running operations one at a time, re-sending each until answered and
//! failing over between the master and the backup by itself: [`FailoverClient`] plays a fixed
//! script (what the checker explores), [`SubmitClient`] takes each next operation from its
//! application (what the runtime drives). Both follow the same rules, written once in
//! [`Rules`].

use super::Variant;
use super::msg::{Answer, ClientOp, Msg, OpNumber, Timer};
use super::node::{NodeStorage, Timing};
use crate::store::Payload;
use stateright::actor::{Actor, Id, Out};
use std::borrow::Cow;

/// The client's state.
///
/// # Invariants
/// - `next <= script.len()`; operation number `next + 1` is in flight while `next <
///   script.len()`.
#[derive(Clone, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct ClientState {
    /// The script index of the operation in flight (`script.len()` once done).
    pub next: usize,
    /// Where the operation in flight was last sent.
    pub target: Id,
}

/// The scripted client actor.
#[derive(Clone, Debug)]
pub struct FailoverClient<K: Payload, V: Payload> {
    /// The seed's scheme or the shipped one.
    pub variant: Variant,
    /// The master.
    pub master: Id,
    /// The backup.
    pub backup: Id,
    /// The operations, in order.
    pub script: Vec<ClientOp<K, V>>,
    /// Timer durations for the runtime.
    pub timing: Timing,
}

/// The client's rules, shared by the scripted and the submitting client.
#[derive(Clone, Debug)]
pub struct Rules {
    /// The seed's scheme or the shipped one.
    pub variant: Variant,
    /// The master.
    pub master: Id,
    /// The backup.
    pub backup: Id,
    /// Timer durations for the runtime.
    pub timing: Timing,
}

impl Rules {
    /// Sends operation number `op` to `target` and arms the retry timer.
    fn send<K: Payload, V: Payload, A: Actor<Msg = M, Timer = Timer>, M>(
        &self,
        target: Id,
        op: OpNumber,
        request: &ClientOp<K, V>,
        wrap: impl FnOnce(Msg<K, V>) -> M,
        o: &mut Out<A>,
    ) {
        o.send(
            target,
            wrap(Msg::Request {
                op,
                request: request.clone(),
                // Claim 1c: the client tells the backup that the master is unable.
                master_unable: target == self.backup,
            }),
        );
        o.set_timer(Timer::Retry, self.timing.retry.clone());
    }

    /// Where the next operation goes after `src` answered. Claim 1c: the seed's client asks
    /// the master first every time; the shipped client stays with whoever answered.
    fn after_answer(&self, src: Id) -> Id {
        match self.variant {
            Variant::Seed => self.master,
            Variant::Fenced => src,
        }
    }

    /// No answer from `target`: it is unable (claim 1c); the other server is asked.
    fn failover(&self, target: Id) -> Id {
        if target == self.master {
            self.backup
        } else {
            self.master
        }
    }
}

impl<K: Payload, V: Payload> FailoverClient<K, V> {
    fn rules(&self) -> Rules {
        Rules {
            variant: self.variant,
            master: self.master,
            backup: self.backup,
            timing: self.timing.clone(),
        }
    }

    fn send(&self, state: &ClientState, o: &mut Out<Self>) {
        let Some(request) = self.script.get(state.next) else {
            return;
        };
        self.rules()
            .send(state.target, state.next as u64 + 1, request, |m| m, o);
    }
}

impl<K: Payload, V: Payload> Actor for FailoverClient<K, V> {
    type Msg = Msg<K, V>;
    type State = ClientState;
    type Timer = Timer;
    type Storage = NodeStorage<K, V>;
    type Random = ();

    fn on_start(
        &self,
        _id: Id,
        _storage: &Option<Self::Storage>,
        o: &mut Out<Self>,
    ) -> Self::State {
        let state = ClientState {
            next: 0,
            target: self.master,
        };
        self.send(&state, o);
        state
    }

    fn on_msg(
        &self,
        _id: Id,
        state: &mut Cow<Self::State>,
        src: Id,
        msg: Self::Msg,
        o: &mut Out<Self>,
    ) {
        let Msg::Reply { op, .. } = msg else {
            // A client hears only replies.
            return;
        };
        if op != state.next as u64 + 1 {
            // An answer to an earlier operation (a retry answered twice).
            return;
        }
        let s = state.to_mut();
        s.next += 1;
        s.target = self.rules().after_answer(src);
        if s.next < self.script.len() {
            self.send(s, o);
        } else {
            o.cancel_timer(Timer::Retry);
        }
    }

    fn on_timeout(
        &self,
        _id: Id,
        state: &mut Cow<Self::State>,
        timer: &Self::Timer,
        o: &mut Out<Self>,
    ) {
        if *timer != Timer::Retry || state.next >= self.script.len() {
            return;
        }
        let s = state.to_mut();
        s.target = self.rules().failover(s.target);
        self.send(s, o);
    }
}

/// The messages of a [`SubmitClient`]: the servers' protocol, and its application's.
#[derive(
    Clone, Debug, Eq, Hash, Ord, PartialEq, PartialOrd, serde::Deserialize, serde::Serialize,
)]
#[serde(bound = "")]
pub enum SubmitMsg<K: Payload, V: Payload> {
    /// Between the client and the servers.
    Server(Msg<K, V>),
    /// Application → client: run this operation next (one at a time: a submit while an
    /// operation is in flight is ignored).
    Submit(ClientOp<K, V>),
    /// Application → client: stop waiting for the operation in flight (its outcome is
    /// unknown: it may still be applied). The next operation takes the next number.
    GiveUp,
    /// Client → application: operation number `op` was answered.
    Answered {
        /// The operation's number.
        op: OpNumber,
        /// The approver's answer.
        answer: Answer<V>,
    },
}

/// The submitting client's state.
///
/// # Invariants
/// - An operation is in flight exactly when `pending` is some; its number is `issued`.
#[derive(Clone, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct SubmitState<K: Payload, V: Payload> {
    /// Operations issued so far (numbers are `1..=issued`).
    pub issued: OpNumber,
    /// Where the operation in flight was last sent, or where the next one goes.
    pub target: Id,
    /// The operation in flight and the application that submitted it.
    pub pending: Option<(ClientOp<K, V>, Id)>,
}

/// A client that runs the operations its application submits, one at a time, by the same
/// [`Rules`] as the scripted client. Its numbering starts at `first_op + 1`, so a new client
/// process under an old client id continues it (servers tell a new operation from a retry
/// by its number).
#[derive(Clone, Debug)]
pub struct SubmitClient<K: Payload, V: Payload> {
    /// The rules.
    pub rules: Rules,
    /// The number of the last operation this client id issued before (0: none).
    pub first_op: OpNumber,
    /// The store's key and value types.
    pub store: std::marker::PhantomData<fn() -> (K, V)>,
}

impl<K: Payload, V: Payload> Actor for SubmitClient<K, V> {
    type Msg = SubmitMsg<K, V>;
    type State = SubmitState<K, V>;
    type Timer = Timer;
    type Storage = NodeStorage<K, V>;
    type Random = ();

    fn on_start(&self, _id: Id, _: &Option<Self::Storage>, _: &mut Out<Self>) -> Self::State {
        SubmitState {
            issued: self.first_op,
            target: self.rules.master,
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
        let rules = &self.rules;
        match msg {
            SubmitMsg::Submit(request) => {
                if state.pending.is_some() {
                    // One operation at a time.
                    return;
                }
                let s = state.to_mut();
                s.issued += 1;
                rules.send(s.target, s.issued, &request, SubmitMsg::Server, o);
                s.pending = Some((request, src));
            }
            SubmitMsg::Server(Msg::Reply { op, answer, .. }) => {
                let Some((_, app)) = &state.pending else {
                    // Nothing in flight: a late copy of an answered operation's reply.
                    return;
                };
                if op != state.issued {
                    // An answer to an earlier operation (a retry answered twice).
                    return;
                }
                let app = *app;
                let s = state.to_mut();
                s.pending = None;
                s.target = rules.after_answer(src);
                o.cancel_timer(Timer::Retry);
                o.send(app, SubmitMsg::Answered { op, answer });
            }
            SubmitMsg::GiveUp => {
                if state.pending.is_some() {
                    state.to_mut().pending = None;
                    o.cancel_timer(Timer::Retry);
                }
            }
            // A client hears only replies; an application hears only answers.
            SubmitMsg::Server(_) | SubmitMsg::Answered { .. } => {}
        }
    }

    fn on_timeout(
        &self,
        _id: Id,
        state: &mut Cow<Self::State>,
        timer: &Self::Timer,
        o: &mut Out<Self>,
    ) {
        if *timer != Timer::Retry || state.pending.is_none() {
            return;
        }
        let rules = &self.rules;
        let s = state.to_mut();
        s.target = rules.failover(s.target);
        if let Some((request, _)) = &s.pending {
            rules.send(s.target, s.issued, request, SubmitMsg::Server, o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{self, Cmd};
    use crate::store::KvOp;
    use std::marker::PhantomData;

    type C = SubmitClient<u8, u8>;

    const MASTER: usize = 0;
    const BACKUP: usize = 1;
    const APP: usize = 9;

    fn client() -> C {
        SubmitClient {
            rules: Rules {
                variant: Variant::Fenced,
                master: Id::from(MASTER),
                backup: Id::from(BACKUP),
                timing: Timing::default(),
            },
            first_op: 4,
            store: PhantomData,
        }
    }

    #[test]
    fn a_submitted_operation_is_sent_retried_at_the_backup_and_answered_once() {
        let c = client();
        let me = Id::from(7);
        let (mut st, start) = harness::start(&c, me, None);
        assert!(start.is_empty());
        let put = ClientOp::Update(KvOp::Put(1, 2));
        let retry = c.rules.timing.retry.clone();
        let request = |master_unable| {
            SubmitMsg::Server(Msg::Request {
                op: 5,
                request: put.clone(),
                master_unable,
            })
        };
        assert_eq!(
            harness::msg(
                &c,
                me,
                &mut st,
                Id::from(APP),
                SubmitMsg::Submit(put.clone())
            ),
            vec![
                Cmd::Send(Id::from(MASTER), request(false)),
                Cmd::SetTimer(Timer::Retry, retry.clone()),
            ]
        );
        // A second submit while one is in flight is ignored.
        let other = SubmitMsg::Submit(ClientOp::Read(1));
        assert_eq!(harness::msg(&c, me, &mut st, Id::from(APP), other), vec![]);
        assert_eq!(
            harness::timeout(&c, me, &mut st, &Timer::Retry),
            vec![
                Cmd::Send(Id::from(BACKUP), request(true)),
                Cmd::SetTimer(Timer::Retry, retry),
            ]
        );
        let reply = |op| {
            SubmitMsg::Server(Msg::Reply {
                op,
                epoch: 1,
                answer: Answer::Written { version: 3 },
            })
        };
        assert_eq!(
            harness::msg(&c, me, &mut st, Id::from(BACKUP), reply(4)),
            vec![]
        );
        assert_eq!(
            harness::msg(&c, me, &mut st, Id::from(BACKUP), reply(5)),
            vec![
                Cmd::CancelTimer(Timer::Retry),
                Cmd::Send(
                    Id::from(APP),
                    SubmitMsg::Answered {
                        op: 5,
                        answer: Answer::Written { version: 3 }
                    }
                ),
            ]
        );
        assert_eq!(
            harness::msg(&c, me, &mut st, Id::from(MASTER), reply(5)),
            vec![]
        );
        assert_eq!(
            st.target,
            Id::from(BACKUP),
            "the next operation asks the backup first"
        );
        assert_eq!(harness::timeout(&c, me, &mut st, &Timer::Retry), vec![]);
        // An operation given up is dropped; the next one takes the next number.
        harness::msg(
            &c,
            me,
            &mut st,
            Id::from(APP),
            SubmitMsg::Submit(put.clone()),
        );
        assert_eq!(
            harness::msg(&c, me, &mut st, Id::from(APP), SubmitMsg::GiveUp),
            vec![Cmd::CancelTimer(Timer::Retry)]
        );
        let next = harness::msg(&c, me, &mut st, Id::from(APP), SubmitMsg::Submit(put));
        assert!(matches!(
            next.first(),
            Some(Cmd::Send(_, SubmitMsg::Server(Msg::Request { op: 7, .. })))
        ));
    }
}
