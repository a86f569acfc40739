//! A replica with its application: the [`Replica`] actor, unchanged, plus the inputs an
//! application gives it (writes, syncs it asks for or abandons, bundle files it carries),
//! as messages from the application's id. This is the actor the runtime drives: every rule
//! the application's inputs follow lives here, in the model, beside the replica's.
//!
//! ```text
//!   peer replicas ── AppMsg::Peer(SyncMsg) ──▶ ┌───────────┐ ──▶ AppMsg::Peer(SyncMsg) ── peers
//!   application   ── Write / Pull / Abandon ─▶ │ AppReplica│ ──▶ Written / Imported / the
//!                    ForgetTombstones          │ (Replica) │     bundle's messages ── application
//!                    Export / Import ────────▶ └───────────┘ ──▶ Save
//! ```
//!
//! The checker explores [`Replica`] itself (its application is its timers and script); this
//! layer only turns an input into the replica's own steps, so its tests compare the exact
//! commands.

use super::msg::{Applied, SyncMsg, Timer};
use super::replica::{Replica, ReplicaData, ReplicaState};
use super::vector::{ChangeId, Knowledge, ReplicaId};
use crate::store::Payload;
use serde::{Deserialize, Serialize};
use stateright::actor::{Actor, Command, Id, Out};
use std::borrow::Cow;

/// What an import of a bundle did (claims 25, 30).
#[derive(Clone, Debug, Default, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub struct ImportReport {
    /// Changes in the bundle.
    pub changes: u32,
    /// Changes applied as the item's new version.
    pub applied: u32,
    /// Changes already superseded here.
    pub obsolete: u32,
    /// Changes concurrent with the local version: conflicts, resolved by the policy.
    pub conflicts: u32,
    /// Whether the bundle's learned knowledge was merged (every change applied).
    pub learned: bool,
    /// Whether the bundle was refused: this replica lacks its minimum knowledge (claim 21)
    /// and the bundle is not a full enumeration. Nothing of it was applied.
    pub refused: bool,
}

/// The messages of a replica with its application.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub enum AppMsg<K: Payload, V: Payload> {
    /// Between replicas: the seed's messages.
    Peer(SyncMsg<K, V>),
    /// Application → replica: set the item at `key` (`None` deletes it), a new change.
    Write {
        /// The item.
        key: K,
        /// The new value; `None` is a tombstone.
        value: Option<V>,
    },
    /// Replica → application: the write is saved as change `id`.
    Written {
        /// The new change.
        id: ChangeId,
    },
    /// Application → replica: pull a sync from replica `source` (two-way: it pulls back),
    /// unless one is open.
    Pull {
        /// The source replica.
        source: ReplicaId,
        /// Claim 22.
        two_way: bool,
    },
    /// Application → replica: the open sync is abandoned (its connection closed); its
    /// learned knowledge is never merged, the changes applied stay.
    Abandon,
    /// Application → replica: forget the tombstones whose history it fully knows.
    ForgetTombstones,
    /// Application → replica: answer the application as the destination of a sync, with
    /// every item (`full`: a full enumeration, claim 21). The answer, the seed's messages
    /// addressed to the application, is the bundle file (claims 25, 30).
    Export {
        /// A full enumeration.
        full: bool,
    },
    /// Application → replica: the messages of a bundle file written by `source`, applied as
    /// a sync pulled from it. Answered by [`AppMsg::Imported`].
    Import {
        /// The bundle's source.
        source: ReplicaId,
        /// Whether it is a full enumeration.
        full: bool,
        /// Its ConveyChanges and its CompleteBundle, as written.
        messages: Vec<SyncMsg<K, V>>,
    },
    /// Replica → application: what the import did.
    Imported(ImportReport),
}

/// The replica actor with its application's inputs. The state, timers and storage are the
/// replica's.
#[derive(Clone, Debug)]
pub struct AppReplica<K: Payload, V: Payload> {
    /// The replica.
    pub replica: Replica<K, V>,
}

fn id_of(replica: ReplicaId) -> Id {
    Id::from(replica as usize)
}

impl<K: Payload, V: Payload> AppReplica<K, V> {
    /// Carries the replica's commands out as this actor's: its messages wrapped as
    /// [`AppMsg::Peer`], its timers and saves as they are.
    fn lift(inner: Out<Replica<K, V>>, o: &mut Out<Self>) {
        for c in inner {
            match c {
                Command::Send(dst, m) => o.send(dst, AppMsg::Peer(m)),
                Command::SetTimer(t, range) => o.set_timer(t, range),
                Command::CancelTimer(t) => o.cancel_timer(t),
                Command::Save(s) => o.save(s),
                // The replica makes no random choice.
                Command::ChooseRandom(..) => {}
            }
        }
    }

    /// Applies the bundle `messages` of `source` as a sync pulled from it. A bundle whose
    /// minimum knowledge this replica lacks is refused; the replica then asks for a full
    /// enumeration, which a full bundle is: it is delivered again under that sync.
    fn import(
        &self,
        id: Id,
        state: &mut Cow<ReplicaState<K, V>>,
        source: Id,
        full: bool,
        messages: &[SyncMsg<K, V>],
        inner: &mut Out<Replica<K, V>>,
    ) -> ImportReport {
        let changes = messages
            .iter()
            .filter(|m| matches!(m, SyncMsg::ConveyChanges { .. }))
            .count() as u32;
        // A sync of its own for the bundle (it replaces any open one, which a local import
        // supersedes).
        self.replica.start_pull(state, source, false, false, inner);
        for _attempt in 0..2 {
            let Some(session) = state
                .pull
                .as_ref()
                .filter(|p| p.source == usize::from(source))
                .map(|p| p.session)
            else {
                break;
            };
            let mut report = ImportReport {
                changes,
                ..ImportReport::default()
            };
            let mut refused = false;
            for msg in messages {
                let mut msg = msg.clone();
                match &mut msg {
                    SyncMsg::ConveyChanges { session: s, .. }
                    | SyncMsg::CompleteBundle { session: s, .. } => *s = session,
                    // A bundle carries nothing else; anything else is not part of it.
                    _ => continue,
                }
                let mark = inner.len();
                self.replica.on_msg(id, state, source, msg, inner);
                for c in &inner[mark..] {
                    match c {
                        Command::Send(_, SyncMsg::AcknowledgeChange { outcome, .. }) => {
                            match outcome {
                                Applied::Applied { .. } => report.applied += 1,
                                Applied::Obsolete { .. } => report.obsolete += 1,
                                Applied::Conflict { .. } => report.conflicts += 1,
                            }
                        }
                        Command::Send(_, SyncMsg::ConveyKnowledge { .. }) => report.learned = true,
                        Command::Send(_, SyncMsg::CancelChangeFlow { .. }) => refused = true,
                        _ => {}
                    }
                }
                if refused {
                    break;
                }
            }
            if !refused {
                return report;
            }
            if !full {
                break;
            }
        }
        // Refused: the full enumeration the replica asked for can only come from another
        // file, so the sync it opened for it is abandoned.
        self.replica.on_timeout(id, state, &Timer::Cancel, inner);
        ImportReport {
            changes,
            refused: true,
            ..ImportReport::default()
        }
    }
}

impl<K: Payload, V: Payload> Actor for AppReplica<K, V> {
    type Msg = AppMsg<K, V>;
    type State = ReplicaState<K, V>;
    type Timer = Timer;
    type Storage = ReplicaData<K, V>;
    type Random = ();

    fn on_start(&self, id: Id, storage: &Option<Self::Storage>, o: &mut Out<Self>) -> Self::State {
        let mut inner = Out::new();
        let state = self.replica.on_start(id, storage, &mut inner);
        Self::lift(inner, o);
        state
    }

    fn on_msg(
        &self,
        id: Id,
        state: &mut Cow<Self::State>,
        src: Id,
        msg: Self::Msg,
        o: &mut Out<Self>,
    ) {
        let mut inner = Out::new();
        match msg {
            AppMsg::Peer(m) => self.replica.on_msg(id, state, src, m, &mut inner),
            AppMsg::Write { key, value } => {
                let st = state.to_mut();
                let change = Replica::make_change(id, &mut st.data, key, value, None);
                self.replica.save(&st.data, &mut inner);
                for p in &self.replica.advertise_to {
                    inner.send(
                        *p,
                        SyncMsg::AdvertiseChanges {
                            knowledge: st.data.knowledge.clone(),
                        },
                    );
                }
                Self::lift(inner, o);
                o.send(src, AppMsg::Written { id: change });
                return;
            }
            AppMsg::Pull { source, two_way } => {
                if state.pull.is_none() {
                    self.replica
                        .start_pull(state, id_of(source), false, two_way, &mut inner);
                }
            }
            AppMsg::Abandon => self
                .replica
                .on_timeout(id, state, &Timer::Cancel, &mut inner),
            AppMsg::ForgetTombstones => self.replica.purge(state, &mut inner),
            AppMsg::Export { full } => {
                let reader = super::replica::requester(src, 0);
                let session = state.data.answered.get(&reader).copied().unwrap_or(0) + 1;
                let request = SyncMsg::RequestChanges {
                    session,
                    knowledge: Knowledge::new(),
                    filtered: vec![],
                    filter: None,
                    recovery: full,
                    two_way: false,
                };
                self.replica.on_msg(id, state, src, request, &mut inner);
            }
            AppMsg::Import {
                source,
                full,
                messages,
            } => {
                let report = self.import(id, state, id_of(source), full, &messages, &mut inner);
                Self::lift(inner, o);
                o.send(src, AppMsg::Imported(report));
                return;
            }
            AppMsg::Written { .. } | AppMsg::Imported(_) => {
                // Answers to an application; a replica asks nothing.
            }
        }
        Self::lift(inner, o);
    }

    fn on_timeout(
        &self,
        id: Id,
        state: &mut Cow<Self::State>,
        timer: &Self::Timer,
        o: &mut Out<Self>,
    ) {
        let mut inner = Out::new();
        self.replica.on_timeout(id, state, timer, &mut inner);
        Self::lift(inner, o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{self, Cmd};
    use crate::knowledge::ConflictPolicy;
    use crate::knowledge::msg::Change;

    type A = AppReplica<u8, u8>;
    type M = AppMsg<u8, u8>;

    const APP: usize = 99;

    fn app() -> A {
        AppReplica {
            replica: Replica {
                peers: vec![],
                advertise_to: vec![],
                edits: vec![],
                filter: None,
                policy: ConflictPolicy::DestinationWins,
                two_way: false,
                cancel: false,
                purge: false,
                max_sessions: u64::MAX,
                incarnation: 0,
                mutant: None,
            },
        }
    }

    fn step(a: &A, me: usize, st: &mut ReplicaState<u8, u8>, src: usize, m: M) -> harness::Cmds<A> {
        harness::msg(a, Id::from(me), st, Id::from(src), m)
    }

    fn fresh(a: &A) -> ReplicaState<u8, u8> {
        let (st, cmds) = harness::start(a, Id::from(0), None);
        assert!(cmds.is_empty(), "a runtime replica arms no timer");
        st
    }

    #[test]
    fn a_write_saves_the_new_change_then_answers_the_application() {
        let a = app();
        let mut st = fresh(&a);
        let cmds = step(
            &a,
            0,
            &mut st,
            APP,
            AppMsg::Write {
                key: 1,
                value: Some(7),
            },
        );
        let id = ChangeId {
            replica: 0,
            counter: 1,
        };
        assert_eq!(
            cmds,
            vec![
                Cmd::Save(st.data.clone()),
                Cmd::Send(Id::from(APP), AppMsg::Written { id }),
            ]
        );
        assert_eq!(st.data.read(&1), Some(&7));
    }

    #[test]
    fn an_exported_bundle_imports_into_another_replica_and_again_changes_nothing() {
        let a = app();
        let mut source = fresh(&a);
        step(
            &a,
            0,
            &mut source,
            APP,
            AppMsg::Write {
                key: 1,
                value: Some(7),
            },
        );
        let export = step(&a, 0, &mut source, APP, AppMsg::Export { full: false });
        // The answer is saved (the session answered) before the bundle leaves.
        assert!(matches!(export.first(), Some(Cmd::Save(_))));
        let messages: Vec<SyncMsg<u8, u8>> = export
            .into_iter()
            .filter_map(|c| match c {
                Cmd::Send(to, AppMsg::Peer(m)) if to == Id::from(APP) => Some(m),
                _ => None,
            })
            .collect();
        assert!(matches!(
            messages.as_slice(),
            [
                SyncMsg::ConveyChanges {
                    change: Change { key: 1, .. },
                    ..
                },
                SyncMsg::CompleteBundle { count: 1, .. }
            ]
        ));
        let mut dest = fresh(&a);
        let import = |dest: &mut ReplicaState<u8, u8>| {
            let cmds = step(
                &a,
                1,
                dest,
                APP,
                AppMsg::Import {
                    source: 0,
                    full: false,
                    messages: messages.clone(),
                },
            );
            match cmds.last() {
                Some(Cmd::Send(to, AppMsg::Imported(r))) if *to == Id::from(APP) => r.clone(),
                other => panic!("no report: {other:?}"),
            }
        };
        let first = import(&mut dest);
        assert_eq!(
            first,
            ImportReport {
                changes: 1,
                applied: 1,
                learned: true,
                ..ImportReport::default()
            }
        );
        assert_eq!(dest.data.read(&1), Some(&7));
        assert!(dest.pull.is_none(), "the sync completed");
        let again = import(&mut dest);
        assert_eq!(
            again,
            ImportReport {
                changes: 1,
                learned: true,
                ..ImportReport::default()
            }
        );
    }

    #[test]
    fn abandon_drops_the_open_sync_and_tells_its_source() {
        let a = app();
        let mut st = fresh(&a);
        step(
            &a,
            0,
            &mut st,
            APP,
            AppMsg::Pull {
                source: 1,
                two_way: false,
            },
        );
        let session = st.pull.as_ref().map(|p| p.session);
        assert_eq!(session, Some(1));
        let cmds = step(&a, 0, &mut st, APP, AppMsg::Abandon);
        assert_eq!(
            cmds,
            vec![Cmd::Send(
                Id::from(1),
                AppMsg::Peer(SyncMsg::CancelChangeFlow { session: 1 })
            )]
        );
        assert!(st.pull.is_none());
    }
}
