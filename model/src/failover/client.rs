//! A client (computer 3) playing a fixed script of operations, one at a time, re-sending
//! each until answered and failing over between the master and the backup by itself.

use super::Variant;
use super::msg::{ClientOp, Msg, Timer};
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

impl<K: Payload, V: Payload> FailoverClient<K, V> {
    fn send(&self, state: &ClientState, o: &mut Out<Self>) {
        let Some(request) = self.script.get(state.next) else {
            return;
        };
        o.send(
            state.target,
            Msg::Request {
                op: state.next as u64 + 1,
                request: request.clone(),
                // Claim 1c: the client tells the backup that the master is unable.
                master_unable: state.target == self.backup,
            },
        );
        o.set_timer(Timer::Retry, self.timing.retry.clone());
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
        // Claim 1c: the seed's client asks the master first every time; the shipped client
        // stays with whoever answered.
        s.target = match self.variant {
            Variant::Seed => self.master,
            Variant::Fenced => src,
        };
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
        // No answer: the node asked is unable (claim 1c); try the other one.
        let s = state.to_mut();
        s.target = if s.target == self.master {
            self.backup
        } else {
            self.master
        };
        self.send(s, o);
    }
}
