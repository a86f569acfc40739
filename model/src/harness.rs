//! The transition-test harness shared by every protocol (and by the runtime's tests): one
//! actor step, its exact commands as a comparable vector, `Save`s included, in order.
//!
//! ```
//! # use replicore_model::harness::{self, Cmd};
//! # use stateright::actor::{Actor, Id, Out};
//! # use std::borrow::Cow;
//! struct Echo;
//! impl Actor for Echo {
//!     type Msg = u8;
//!     type State = u8;
//!     type Timer = ();
//!     type Storage = u8;
//!     type Random = ();
//!     fn on_start(&self, _: Id, _: &Option<u8>, _: &mut Out<Self>) -> u8 { 0 }
//!     fn on_msg(&self, _: Id, s: &mut Cow<u8>, src: Id, m: u8, o: &mut Out<Self>) {
//!         *s.to_mut() = m;
//!         o.save(m);
//!         o.send(src, m);
//!     }
//! }
//! let (mut state, start) = harness::start(&Echo, Id::from(0), None);
//! assert!(start.is_empty());
//! let cmds = harness::msg(&Echo, Id::from(0), &mut state, Id::from(1), 7);
//! assert_eq!(cmds, vec![Cmd::Save(7), Cmd::Send(Id::from(1), 7)]);
//! assert_eq!(state, 7);
//! ```
//!
//! Stateright's `Command` has no equality; [`Cmd`] is the same command with one, so a test
//! states the whole step as a literal (openraft's engine tests are the model).

use stateright::actor::{Actor, Command, Id, Out};
use std::borrow::Cow;
use std::ops::Range;
use std::time::Duration;

/// One command of a step, comparable.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Cmd<M, T, S> {
    /// `Send(dst, msg)`.
    Send(Id, M),
    /// `SetTimer(timer, durations)`.
    SetTimer(T, Range<Duration>),
    /// `CancelTimer(timer)`.
    CancelTimer(T),
    /// `Save(storage)`.
    Save(S),
}

/// The commands of an actor `A`.
pub type Cmds<A> = Vec<Cmd<<A as Actor>::Msg, <A as Actor>::Timer, <A as Actor>::Storage>>;

/// The commands of `out`, in order (random choices, which no protocol here makes, are left
/// out).
pub fn commands<A: Actor>(out: Out<A>) -> Cmds<A> {
    out.into_iter()
        .filter_map(|c| match c {
            Command::Send(dst, m) => Some(Cmd::Send(dst, m)),
            Command::SetTimer(t, r) => Some(Cmd::SetTimer(t, r)),
            Command::CancelTimer(t) => Some(Cmd::CancelTimer(t)),
            Command::Save(s) => Some(Cmd::Save(s)),
            Command::ChooseRandom(..) => None,
        })
        .collect()
}

/// `on_start` of `actor` as `id` with `storage`: the state and the commands.
pub fn start<A: Actor>(actor: &A, id: Id, storage: Option<A::Storage>) -> (A::State, Cmds<A>) {
    let mut out = Out::new();
    let state = actor.on_start(id, &storage, &mut out);
    (state, commands(out))
}

/// `on_msg`: delivers `msg` from `src` to `state`, updated in place; returns the commands.
pub fn msg<A: Actor>(actor: &A, id: Id, state: &mut A::State, src: Id, msg: A::Msg) -> Cmds<A> {
    let mut cow = Cow::Borrowed(&*state);
    let mut out = Out::new();
    actor.on_msg(id, &mut cow, src, msg, &mut out);
    if let Cow::Owned(next) = cow {
        *state = next;
    }
    commands(out)
}

/// `on_timeout`: fires `timer` on `state`, updated in place; returns the commands.
pub fn timeout<A: Actor>(actor: &A, id: Id, state: &mut A::State, timer: &A::Timer) -> Cmds<A> {
    let mut cow = Cow::Borrowed(&*state);
    let mut out = Out::new();
    actor.on_timeout(id, &mut cow, timer, &mut out);
    if let Cow::Owned(next) = cow {
        *state = next;
    }
    commands(out)
}
