//! Random message sequences fed to one slave: stale, duplicated, reordered, from strangers,
//! with crash-restarts in between. The slave must never panic and never hold data the
//! master did not commit at the slave's version.

use proptest::prelude::*;
use replicore_model::master_slave::master_user::Step;
use replicore_model::master_slave::{
    Beat, ClientMsg, Decision, Msg, Outcome, Saved, ServiceMsg, SlaveServer, SlaveState,
};
use replicore_model::store::{KvOp, ModelKv, Store};
use stateright::actor::{Actor, Command, Id, Out};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::marker::PhantomData;

#[derive(Clone, Copy, Debug)]
enum Kind {
    OnePhase,
    TwoPhaseCommit,
    TwoPhaseAbort,
}

/// A master history: committed data by version, and every message the master could send.
struct History {
    committed: BTreeMap<u64, ModelKv>,
    pool: Vec<ServiceMsg<ModelKv>>,
}

fn history(updates: &[(Kind, u8, u8)]) -> History {
    let mut committed = BTreeMap::from([(0u64, ModelKv::default())]);
    let mut pool = Vec::new();
    let mut current = 0u64;
    let mut decision = None;
    for (i, (kind, k, v)) in updates.iter().enumerate() {
        let new = i as u64 + 1;
        let data = committed[&current].clone();
        let delta = data.delta_of(&KvOp::Put(*k, *v));
        let mut next = data.clone();
        next.apply(&delta);
        match kind {
            Kind::OnePhase => {
                pool.push(ServiceMsg::Announce {
                    prior: current,
                    new,
                    delta: Some(delta),
                });
                committed.insert(new, next);
                current = new;
            }
            Kind::TwoPhaseCommit | Kind::TwoPhaseAbort => {
                pool.push(ServiceMsg::Prepare {
                    prior: current,
                    new,
                    delta,
                });
                if matches!(kind, Kind::TwoPhaseCommit) {
                    pool.push(ServiceMsg::Commit { version: new });
                    committed.insert(new, next);
                    current = new;
                    decision = Some(Decision {
                        version: new,
                        outcome: Outcome::Commit,
                    });
                } else {
                    pool.push(ServiceMsg::Abort { version: new });
                    decision = Some(Decision {
                        version: new,
                        outcome: Outcome::Abort,
                    });
                }
            }
        }
        pool.push(ServiceMsg::Heartbeat(Beat {
            version: current,
            decision,
        }));
    }
    let versions: Vec<u64> = committed.keys().copied().collect();
    for (i, from) in versions.iter().enumerate() {
        for to in &versions[i + 1..] {
            pool.push(ServiceMsg::Delta {
                from: *from,
                to: *to,
                delta: committed[to].diff_from(&committed[from]),
            });
            pool.push(ServiceMsg::Snapshot {
                from: *from,
                to: *to,
                data: committed[to].clone(),
            });
        }
    }
    History { committed, pool }
}

#[derive(Clone, Debug)]
enum Event {
    /// Deliver pool message `i` (modulo the pool size) from the master.
    FromMaster(usize),
    /// A stranger sends a forged announcement.
    Forged(u8, u8),
    /// A client message arrives at the slave.
    Client,
    /// Crash and restart from the last save.
    Restart,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        8 => any::<usize>().prop_map(Event::FromMaster),
        1 => (0u8..4, 0u8..4).prop_map(|(a, b)| Event::Forged(a, b)),
        1 => Just(Event::Client),
        1 => Just(Event::Restart),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::OnePhase),
        Just(Kind::TwoPhaseCommit),
        Just(Kind::TwoPhaseAbort)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn slave_never_holds_uncommitted_data(
        updates in prop::collection::vec((kind(), 0u8..3, 0u8..4), 1..6),
        events in prop::collection::vec(event(), 0..60),
    ) {
        let h = history(&updates);
        let master = Id::from(0);
        let slave = SlaveServer::<ModelKv> { master, mutant: None, store: PhantomData };
        let me = Id::from(1);
        let mut saved: Option<Saved<ModelKv>> = None;
        let mut state: SlaveState<ModelKv> = slave.on_start(me, &saved, &mut Out::new());
        for e in events {
            let mut out = Out::new();
            let mut cow = Cow::Owned(state.clone());
            match e {
                Event::FromMaster(i) => {
                    let msg = h.pool[i % h.pool.len()].clone();
                    slave.on_msg(me, &mut cow, master, Msg::Service(msg), &mut out);
                }
                Event::Forged(a, b) => {
                    let delta = ModelKv::default().delta_of(&KvOp::Put(a, b));
                    let msg = ServiceMsg::Announce { prior: 0, new: 1, delta: Some(delta) };
                    slave.on_msg(me, &mut cow, Id::from(7), Msg::Service(msg), &mut out);
                }
                Event::Client => {
                    let msg = ClientMsg::Committed { req: 0, version: 3 };
                    slave.on_msg(me, &mut cow, master, Msg::Client(msg), &mut out);
                }
                Event::Restart => {
                    cow = Cow::Owned(slave.on_start(me, &saved, &mut out));
                }
            }
            state = cow.into_owned();
            for c in out {
                if let Command::Save(s) = c {
                    saved = Some(s);
                }
            }
            let v = state.user.version;
            prop_assert_eq!(Some(&state.user.data), h.committed.get(&v), "slave at v{} holds uncommitted data", v);
            if let Some(Step { prior, .. }) = &state.user.prepared {
                prop_assert_eq!(*prior, v);
            }
            // What was saved is committed data too.
            if let Some(Saved::Slave(s)) = &saved {
                prop_assert_eq!(Some(&s.user.data), h.committed.get(&s.user.version));
            }
        }
    }
}
