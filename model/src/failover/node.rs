//! A server of protocol 2: one actor type for computers 1 and 2 (and any further slave),
//! with a [`Role`] and an approval [`Epoch`].
//!
//! The seed's rules (claim 1 of `shared/seeds/002`) and the shipped, fenced rules are both
//! here, side by side, chosen by [`Variant`]; `docs/failover.md` tells why the seed's fail.
//!
//! Roles (the state's [`Role`]):
//! - [`Role::Master`] — computer 1, the sole approver while able (claim 1a).
//! - [`Role::Backup`] — computer 2, approves when the master is unable (claim 1a).
//! - [`Role::Approver`] — the backup once it has taken over (claim 1d).
//! - [`Role::Slave`] — any other server, and a master that learned a newer epoch.

use super::msg::{Answer, ClientOp, Entry, Epoch, Msg, OpNumber, Timer, UpdateId};
use super::{Mutant, Variant};
use crate::store::{Kv, Payload, Store, Version};
use serde::{Deserialize, Serialize};
use stateright::actor::{Actor, Id, Out};
use std::borrow::Cow;
use std::ops::Range;
use std::time::Duration;

/// A server's role. Only the backup ever changes role by itself (taking over); a master or
/// slave becomes a slave of the approver whose higher epoch it learns.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub enum Role {
    /// Approves updates while able (computer 1).
    Master,
    /// Stores the master's updates and takes over when the master is unable (computer 2).
    Backup,
    /// The backup after taking over: approves alone.
    Approver,
    /// Follows the approver of its epoch and catches up by delta.
    Slave,
}

impl Role {
    /// The word `status` and traces use.
    pub fn name(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Backup => "backup",
            Role::Approver => "approver",
            Role::Slave => "slave",
        }
    }

    /// Whether a node in this role approves client updates.
    pub fn approves(self) -> bool {
        matches!(self, Role::Master | Role::Approver)
    }
}

/// A client operation the master has put to the backup and not yet answered.
#[derive(Clone, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub enum Pending<K: Payload, V: Payload> {
    /// An update proposed at `log.len() + 1` (or, with [`Mutant::ApplyBeforeStored`], applied
    /// there already), waiting for the backup's [`Msg::Stored`].
    Write {
        /// The client.
        client: Id,
        /// The update.
        entry: Entry<K, V>,
    },
    /// A read waiting for the backup's [`Msg::Confirmed`].
    Read {
        /// The client.
        client: Id,
        /// The client's operation number.
        op: OpNumber,
        /// The key.
        key: K,
    },
}

/// The volatile state of a server.
///
/// # Invariants
/// - `version() == log.len()` and `data` is the log's deltas applied in order to the empty
///   store.
/// - Fenced: `pending` is `None` unless `role == Master`.
/// - Fenced: a master's log is a prefix of its backup's log while both are in epoch 0
///   (the master applies only what the backup stored).
#[derive(Clone, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct NodeState<K: Payload, V: Payload> {
    /// The role.
    pub role: Role,
    /// The highest epoch this node has seen (saved).
    pub epoch: Epoch,
    /// The common data (claim 1: the node's dataset).
    pub data: Kv<K, V>,
    /// The updates applied, version `i + 1` at index `i` (saved).
    pub log: Vec<Entry<K, V>>,
    /// The master's open proposal or read confirmation.
    pub pending: Option<Pending<K, V>>,
    /// Backup: the master renewed its lease (a heartbeat of the backup's epoch arrived)
    /// since the last lease check.
    pub renewed: bool,
}

impl<K: Payload, V: Payload> NodeState<K, V> {
    /// The version: how many updates are applied.
    pub fn version(&self) -> Version {
        self.log.len() as Version
    }

    /// The version at which `update` is applied here, if it is.
    pub fn version_of(&self, update: UpdateId) -> Option<Version> {
        self.log
            .iter()
            .position(|e| e.update == update)
            .map(|i| i as Version + 1)
    }

    /// What this node saves.
    pub fn storage(&self) -> NodeStorage<K, V> {
        NodeStorage {
            role: self.role,
            epoch: self.epoch,
            data: self.data.clone(),
            log: self.log.clone(),
        }
    }

    fn push(&mut self, entry: Entry<K, V>) {
        self.data.apply(&entry.delta);
        self.log.push(entry);
    }
}

/// What a server saves: everything but the open proposal and the lease flag. Saved before
/// any message that reveals it leaves the node.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub struct NodeStorage<K: Payload, V: Payload> {
    /// The role.
    pub role: Role,
    /// The epoch.
    pub epoch: Epoch,
    /// The data.
    pub data: Kv<K, V>,
    /// The log.
    pub log: Vec<Entry<K, V>>,
}

/// How long each timer waits in the runtime (the model ignores durations). The backup's
/// lease check must be longer than the master's heartbeat period plus the worst network
/// delay, or a live master loses its approval needlessly (safety never depends on it).
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Timing {
    /// The approver's heartbeat period.
    pub heartbeat: Range<Duration>,
    /// The backup's lease check period.
    pub lease_check: Range<Duration>,
    /// A client's wait before trying the other node.
    pub retry: Range<Duration>,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat: Duration::from_millis(100)..Duration::from_millis(100),
            lease_check: Duration::from_millis(500)..Duration::from_millis(500),
            retry: Duration::from_millis(300)..Duration::from_millis(300),
        }
    }
}

/// A server actor of protocol 2.
#[derive(Clone, Debug)]
pub struct FailoverNode<K: Payload, V: Payload> {
    /// The seed's scheme or the shipped one.
    pub variant: Variant,
    /// A deliberate bug.
    pub mutant: Option<Mutant>,
    /// The role this server starts in (before anything is saved).
    pub designation: Role,
    /// The designated backup.
    pub backup: Id,
    /// Every other server.
    pub peers: Vec<Id>,
    /// Timer durations for the runtime.
    pub timing: Timing,
    #[doc(hidden)]
    pub _types: std::marker::PhantomData<(K, V)>,
}

impl<K: Payload, V: Payload> FailoverNode<K, V> {
    /// A server of `variant` starting in `designation`.
    pub fn new(variant: Variant, designation: Role, backup: Id, peers: Vec<Id>) -> Self {
        FailoverNode {
            variant,
            mutant: None,
            designation,
            backup,
            peers,
            timing: Timing::default(),
            _types: std::marker::PhantomData,
        }
    }

    fn is(&self, m: Mutant) -> bool {
        self.mutant == Some(m)
    }

    fn fenced(&self) -> bool {
        self.variant == Variant::Fenced
    }

    fn arm(&self, state: &NodeState<K, V>, o: &mut Out<Self>) {
        if !self.fenced() {
            return;
        }
        match state.role {
            Role::Master | Role::Approver => {
                o.set_timer(Timer::Heartbeat, self.timing.heartbeat.clone())
            }
            Role::Backup => o.set_timer(Timer::LeaseCheck, self.timing.lease_check.clone()),
            Role::Slave => {}
        }
    }

    /// The id of `client`'s update `op`, unless it is already applied: then a retry is
    /// answered again with its version, nothing is applied, and the result is `None`.
    fn unapplied(
        &self,
        state: &NodeState<K, V>,
        client: Id,
        op: OpNumber,
        o: &mut Out<Self>,
    ) -> Option<UpdateId> {
        let update = UpdateId {
            client: usize::from(client) as u64,
            op,
        };
        let Some(version) = state.version_of(update) else {
            return Some(update);
        };
        o.send(
            client,
            Msg::Reply {
                op,
                epoch: state.epoch,
                answer: Answer::Written { version },
            },
        );
        None
    }

    /// Approves `update` alone: applies it, saves, answers the client and advises every
    /// other server (claim 1b for the master, claim 1d for the backup). The shipped master
    /// never approves alone: see [`FailoverNode::propose`].
    fn approve_alone(
        &self,
        state: &mut Cow<NodeState<K, V>>,
        client: Id,
        op: OpNumber,
        change: &crate::store::KvOp<K, V>,
        o: &mut Out<Self>,
    ) {
        let Some(update) = self.unapplied(state, client, op, o) else {
            return;
        };
        let prior = state.version();
        let entry = Entry {
            epoch: state.epoch,
            update,
            delta: state.data.delta_of(change),
        };
        let s = state.to_mut();
        s.push(entry.clone());
        o.save(s.storage());
        o.send(
            client,
            Msg::Reply {
                op,
                epoch: s.epoch,
                answer: Answer::Written { version: prior + 1 },
            },
        );
        let advice = Msg::Advise {
            epoch: s.epoch,
            prior,
            entry,
        };
        o.broadcast(&self.peers, &advice);
    }

    /// The shipped master's update: it puts the update to the backup and applies and answers
    /// only once the backup has stored it ([`Msg::Stored`]), so an acknowledged update is at
    /// the backup whenever it takes over.
    fn propose(
        &self,
        state: &mut Cow<NodeState<K, V>>,
        client: Id,
        op: OpNumber,
        change: &crate::store::KvOp<K, V>,
        o: &mut Out<Self>,
    ) {
        let Some(update) = self.unapplied(state, client, op, o) else {
            return;
        };
        match &state.pending {
            Some(Pending::Write { entry, .. }) if entry.update == update => {
                // A retry of the open proposal: put it to the backup again.
                let prior = state.version() - u64::from(self.is(Mutant::ApplyBeforeStored));
                o.send(
                    self.backup,
                    Msg::Advise {
                        epoch: state.epoch,
                        prior,
                        entry: entry.clone(),
                    },
                );
                return;
            }
            // One proposal at a time; the client retries.
            Some(_) => return,
            None => {}
        }
        let prior = state.version();
        let entry = Entry {
            epoch: state.epoch,
            update,
            delta: state.data.delta_of(change),
        };
        let s = state.to_mut();
        if self.is(Mutant::AckBeforeStored) {
            s.push(entry.clone());
            o.save(s.storage());
            o.send(
                client,
                Msg::Reply {
                    op,
                    epoch: s.epoch,
                    answer: Answer::Written { version: prior + 1 },
                },
            );
        } else {
            if self.is(Mutant::ApplyBeforeStored) {
                s.push(entry.clone());
                o.save(s.storage());
            }
            s.pending = Some(Pending::Write {
                client,
                entry: entry.clone(),
            });
        }
        o.send(
            self.backup,
            Msg::Advise {
                epoch: s.epoch,
                prior,
                entry,
            },
        );
    }

    /// A node stores an update advised at `prior` if it is at `prior`, and (the backup, to the
    /// master of its epoch) says so. Behind, a slave asks for a delta.
    fn follow_advice(
        &self,
        state: &mut Cow<NodeState<K, V>>,
        src: Id,
        epoch: Epoch,
        prior: Version,
        entry: Entry<K, V>,
        o: &mut Out<Self>,
    ) {
        let answer_stored = self.fenced() && matches!(state.role, Role::Backup | Role::Approver);
        let update = entry.update;
        if prior == state.version() {
            let s = state.to_mut();
            s.push(entry);
            o.save(s.storage());
            if answer_stored {
                o.send(
                    src,
                    Msg::Stored {
                        epoch,
                        version: prior + 1,
                        update,
                    },
                );
            }
        } else if prior < state.version() {
            // Already stored (a duplicate or a re-sent proposal): confirm again if it is the
            // same update; a different one at that version is refused by silence.
            if answer_stored && state.log[prior as usize] == entry {
                o.send(
                    src,
                    Msg::Stored {
                        epoch,
                        version: prior + 1,
                        update,
                    },
                );
            }
        } else if self.fenced() && state.role == Role::Slave && !self.is(Mutant::NoCatchUp) {
            o.send(
                src,
                Msg::DeltaRequest {
                    epoch: state.epoch,
                    from: state.version(),
                },
            );
        }
    }
}

impl<K: Payload, V: Payload> Actor for FailoverNode<K, V> {
    type Msg = Msg<K, V>;
    type State = NodeState<K, V>;
    type Timer = Timer;
    type Storage = NodeStorage<K, V>;
    type Random = ();

    fn on_start(&self, _id: Id, storage: &Option<Self::Storage>, o: &mut Out<Self>) -> Self::State {
        let state = match storage {
            Some(saved) => NodeState {
                role: saved.role,
                epoch: saved.epoch,
                data: saved.data.clone(),
                log: saved.log.clone(),
                pending: None,
                renewed: false,
            },
            None => NodeState {
                role: self.designation,
                epoch: 0,
                data: Kv::default(),
                log: Vec::new(),
                pending: None,
                renewed: false,
            },
        };
        self.arm(&state, o);
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
        if let Some(epoch) = msg.epoch() {
            if self.fenced() && epoch > state.epoch {
                // Only an approver that took over sends a higher epoch: this node (a master
                // that was partitioned, slow or down, or a slave) learns it, stops approving
                // and follows it as a slave. Saved first: it must never approve in the old
                // epoch again, even after a crash.
                let s = state.to_mut();
                s.epoch = epoch;
                s.role = Role::Slave;
                s.pending = None;
                o.save(s.storage());
                o.cancel_timer(Timer::Heartbeat);
            } else if self.fenced() && epoch < state.epoch && !self.is(Mutant::NoFencing) {
                // Fencing: nothing from an older epoch is acted on. Its sender learns the new
                // epoch from this node's approver's heartbeat.
                return;
            }
        }
        match msg {
            Msg::Request {
                op,
                request,
                master_unable,
            } => {
                let role = state.role;
                if !self.fenced() && role == Role::Backup && master_unable {
                    // Claim 1d: the client's notice that the master is unable is, in the
                    // seed, all the backup needs to start approving.
                    let s = state.to_mut();
                    s.role = Role::Approver;
                    o.save(s.storage());
                }
                if !state.role.approves() {
                    // A backup (fenced: a client's suspicion is no evidence) or slave does
                    // not approve; the client retries elsewhere.
                    return;
                }
                match request {
                    ClientOp::Update(change) => {
                        if self.fenced() && state.role == Role::Master {
                            self.propose(state, src, op, &change, o);
                        } else {
                            self.approve_alone(state, src, op, &change, o);
                        }
                    }
                    ClientOp::Read(key) => {
                        if self.fenced() && state.role == Role::Master {
                            match &state.pending {
                                Some(Pending::Read { client, op: p, .. })
                                    if *client == src && *p == op =>
                                {
                                    o.send(
                                        self.backup,
                                        Msg::Confirm {
                                            epoch: state.epoch,
                                            op,
                                        },
                                    );
                                }
                                Some(_) => {}
                                None => {
                                    let s = state.to_mut();
                                    s.pending = Some(Pending::Read {
                                        client: src,
                                        op,
                                        key,
                                    });
                                    o.send(self.backup, Msg::Confirm { epoch: s.epoch, op });
                                }
                            }
                        } else {
                            let value = state.data.read(&key).cloned();
                            let version = state.version();
                            o.send(
                                src,
                                Msg::Reply {
                                    op,
                                    epoch: state.epoch,
                                    answer: Answer::Value { value, version },
                                },
                            );
                        }
                    }
                }
            }
            Msg::Advise {
                epoch,
                prior,
                entry,
            } => {
                if self.fenced() && state.role == Role::Master && epoch == state.epoch {
                    // Only this master advises in its epoch; a copy of its own proposal
                    // cannot reach it.
                    return;
                }
                self.follow_advice(state, src, epoch, prior, entry, o);
            }
            Msg::Stored {
                epoch,
                version,
                update,
            } => {
                let Some(Pending::Write { client, entry }) = &state.pending else {
                    // Nothing open: a duplicate.
                    return;
                };
                let applied = u64::from(self.is(Mutant::ApplyBeforeStored));
                if state.role != Role::Master
                    || epoch != state.epoch
                    || entry.update != update
                    || version != state.version() + 1 - applied
                {
                    return;
                }
                let (client, entry) = (*client, entry.clone());
                let s = state.to_mut();
                s.pending = None;
                if applied == 0 {
                    s.push(entry.clone());
                    o.save(s.storage());
                }
                o.send(
                    client,
                    Msg::Reply {
                        op: entry.update.op,
                        epoch,
                        answer: Answer::Written { version },
                    },
                );
                let advice = Msg::Advise {
                    epoch,
                    prior: version - 1,
                    entry,
                };
                let slaves: Vec<Id> = self
                    .peers
                    .iter()
                    .copied()
                    .filter(|p| *p != self.backup)
                    .collect();
                o.broadcast(&slaves, &advice);
            }
            Msg::Confirm { epoch, op } => {
                // The backup vouches that it has not taken over, so no update the master
                // does not hold can have been acknowledged.
                if state.role == Role::Backup || self.is(Mutant::NoFencing) {
                    o.send(src, Msg::Confirmed { epoch, op });
                }
            }
            Msg::Confirmed { epoch, op } => {
                let Some(Pending::Read { client, op: p, key }) = &state.pending else {
                    return;
                };
                if state.role != Role::Master || epoch != state.epoch || *p != op {
                    return;
                }
                let client = *client;
                let value = state.data.read(key).cloned();
                let version = state.version();
                state.to_mut().pending = None;
                o.send(
                    client,
                    Msg::Reply {
                        op,
                        epoch,
                        answer: Answer::Value { value, version },
                    },
                );
            }
            Msg::Heartbeat { epoch, version } => match state.role {
                // The master renews the lease.
                Role::Backup if !state.renewed && epoch == state.epoch => {
                    state.to_mut().renewed = true;
                }
                Role::Slave if version > state.version() && !self.is(Mutant::NoCatchUp) => {
                    o.send(
                        src,
                        Msg::DeltaRequest {
                            epoch: state.epoch,
                            from: state.version(),
                        },
                    );
                }
                _ => {}
            },
            Msg::DeltaRequest { epoch, from } => {
                if state.role.approves() && from < state.version() {
                    let entries = state.log[from as usize..].to_vec();
                    let _ = epoch;
                    o.send(
                        src,
                        Msg::Delta {
                            epoch: state.epoch,
                            from,
                            entries,
                        },
                    );
                }
            }
            Msg::Delta { from, entries, .. } => {
                // Delta catch-up, as in protocol 1: applies only at the version it starts from.
                if state.role == Role::Slave && from == state.version() {
                    let s = state.to_mut();
                    for e in entries {
                        s.push(e);
                    }
                    o.save(s.storage());
                }
            }
            Msg::Reply { .. } => {
                // Replies go to clients; a server ignores one sent to it by mistake.
            }
        }
    }

    fn on_timeout(
        &self,
        _id: Id,
        state: &mut Cow<Self::State>,
        timer: &Self::Timer,
        o: &mut Out<Self>,
    ) {
        match (timer, state.role) {
            (Timer::Heartbeat, Role::Master | Role::Approver) => {
                let beat = Msg::Heartbeat {
                    epoch: state.epoch,
                    version: state.version(),
                };
                o.broadcast(&self.peers, &beat);
                // Repairs a lost proposal or confirmation.
                match &state.pending {
                    Some(Pending::Write { entry, .. }) => {
                        let prior = state.version() - u64::from(self.is(Mutant::ApplyBeforeStored));
                        o.send(
                            self.backup,
                            Msg::Advise {
                                epoch: state.epoch,
                                prior,
                                entry: entry.clone(),
                            },
                        );
                    }
                    Some(Pending::Read { op, .. }) => {
                        o.send(
                            self.backup,
                            Msg::Confirm {
                                epoch: state.epoch,
                                op: *op,
                            },
                        );
                    }
                    None => {}
                }
                o.set_timer(Timer::Heartbeat, self.timing.heartbeat.clone());
            }
            (Timer::LeaseCheck, Role::Backup) => {
                if state.renewed {
                    state.to_mut().renewed = false;
                } else if !self.is(Mutant::NoTakeover) {
                    // The lease lapsed: the master has not renewed it for a whole check
                    // period, so it no longer approves. Take over in a new epoch, saved
                    // before anyone hears of it.
                    let s = state.to_mut();
                    if !self.is(Mutant::SameEpoch) {
                        s.epoch += 1;
                    }
                    s.role = Role::Approver;
                    o.save(s.storage());
                    let beat = Msg::Heartbeat {
                        epoch: s.epoch,
                        version: s.version(),
                    };
                    o.broadcast(&self.peers, &beat);
                    o.set_timer(Timer::Heartbeat, self.timing.heartbeat.clone());
                    return;
                }
                o.set_timer(Timer::LeaseCheck, self.timing.lease_check.clone());
            }
            // A timer of a role this node no longer has.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{self, Cmd, Cmds};
    use crate::store::KvOp;

    type Node = FailoverNode<u8, u8>;

    const CLIENT: usize = 2;

    fn server(variant: Variant, role: Role) -> Node {
        let (me, peer) = if role == Role::Master { (0, 1) } else { (1, 0) };
        let _ = me;
        FailoverNode::new(variant, role, Id::from(1), vec![Id::from(peer)])
    }

    fn started(node: &Node) -> NodeState<u8, u8> {
        node.on_start(Id::from(0), &None, &mut Out::new())
    }

    fn msg(node: &Node, state: &mut NodeState<u8, u8>, src: usize, m: Msg<u8, u8>) -> Cmds<Node> {
        harness::msg(node, Id::from(0), state, Id::from(src), m)
    }

    fn timeout(node: &Node, state: &mut NodeState<u8, u8>, t: Timer) -> Cmds<Node> {
        harness::timeout(node, Id::from(0), state, &t)
    }

    fn put(op: u64, v: u8) -> Msg<u8, u8> {
        Msg::Request {
            op,
            request: ClientOp::Update(KvOp::Put(0, v)),
            master_unable: false,
        }
    }

    fn update(op: u64) -> UpdateId {
        UpdateId {
            client: CLIENT as u64,
            op,
        }
    }

    /// The fenced master puts an update to the backup and neither applies nor answers it.
    #[test]
    fn fenced_master_proposes_and_waits_for_the_backup() {
        let node = server(Variant::Fenced, Role::Master);
        let mut s = started(&node);
        let out = msg(&node, &mut s, CLIENT, put(1, 7));
        let entry = Entry {
            epoch: 0,
            update: update(1),
            delta: Kv::<u8, u8>::default().delta_of(&KvOp::Put(0, 7)),
        };
        assert_eq!(
            out,
            vec![Cmd::Send(
                Id::from(1),
                Msg::Advise {
                    epoch: 0,
                    prior: 0,
                    entry: entry.clone()
                }
            )]
        );
        assert_eq!(s.version(), 0);
        assert_eq!(
            s.pending,
            Some(Pending::Write {
                client: Id::from(CLIENT),
                entry
            })
        );
        // A Stored naming another update at that version is not the answer (a restarted
        // master may meet an old one).
        let out = msg(
            &node,
            &mut s,
            1,
            Msg::Stored {
                epoch: 0,
                version: 1,
                update: update(9),
            },
        );
        assert!(out.is_empty());
        assert_eq!(s.version(), 0);
        // The backup's answer: apply, save, then answer the client.
        let out = msg(
            &node,
            &mut s,
            1,
            Msg::Stored {
                epoch: 0,
                version: 1,
                update: update(1),
            },
        );
        assert_eq!(s.version(), 1);
        assert_eq!(
            out,
            vec![
                Cmd::Save(s.storage()),
                Cmd::Send(
                    Id::from(CLIENT),
                    Msg::Reply {
                        op: 1,
                        epoch: 0,
                        answer: Answer::Written { version: 1 }
                    }
                )
            ]
        );
    }

    /// A client's notice does not move the fenced backup; a lease that was not renewed over a
    /// whole check does, in a new epoch saved before its heartbeat leaves.
    #[test]
    fn fenced_backup_takes_over_only_when_the_lease_lapsed() {
        let node = server(Variant::Fenced, Role::Backup);
        let mut s = started(&node);
        let notice = Msg::Request {
            op: 1,
            request: ClientOp::Update(KvOp::Put(0, 1)),
            master_unable: true,
        };
        assert!(msg(&node, &mut s, CLIENT, notice).is_empty());
        assert_eq!(s.role, Role::Backup);
        assert!(
            msg(
                &node,
                &mut s,
                0,
                Msg::Heartbeat {
                    epoch: 0,
                    version: 0
                }
            )
            .is_empty()
        );
        assert!(s.renewed);
        let out = timeout(&node, &mut s, Timer::LeaseCheck);
        let lease = node.timing.lease_check.clone();
        assert_eq!(
            out,
            vec![Cmd::SetTimer(Timer::LeaseCheck, lease)],
            "only re-armed"
        );
        assert_eq!((s.role, s.epoch, s.renewed), (Role::Backup, 0, false));
        let out = timeout(&node, &mut s, Timer::LeaseCheck);
        assert_eq!((s.role, s.epoch), (Role::Approver, 1));
        assert_eq!(
            out,
            vec![
                Cmd::Save(s.storage()),
                Cmd::Send(
                    Id::from(0),
                    Msg::Heartbeat {
                        epoch: 1,
                        version: 0
                    }
                ),
                Cmd::SetTimer(Timer::Heartbeat, node.timing.heartbeat.clone()),
            ]
        );
    }

    /// A master that hears of a higher epoch saves it, stops approving and asks for what it
    /// is missing; a message of a lower epoch is then ignored.
    #[test]
    fn a_master_that_learns_a_higher_epoch_rejoins_as_a_slave() {
        let node = server(Variant::Fenced, Role::Master);
        let mut s = started(&node);
        let out = msg(
            &node,
            &mut s,
            1,
            Msg::Heartbeat {
                epoch: 1,
                version: 2,
            },
        );
        assert_eq!((s.role, s.epoch), (Role::Slave, 1));
        assert_eq!(
            out,
            vec![
                Cmd::Save(s.storage()),
                Cmd::CancelTimer(Timer::Heartbeat),
                Cmd::Send(Id::from(1), Msg::DeltaRequest { epoch: 1, from: 0 }),
            ]
        );
        let stale = Msg::Stored {
            epoch: 0,
            version: 1,
            update: update(1),
        };
        let before = s.clone();
        assert!(msg(&node, &mut s, 1, stale).is_empty());
        assert_eq!(s, before);
    }

    /// The seed's backup approves on a client's notice alone (claim 1d).
    #[test]
    fn seed_backup_approves_on_the_clients_notice() {
        let node = server(Variant::Seed, Role::Backup);
        let mut s = started(&node);
        let notice = Msg::Request {
            op: 1,
            request: ClientOp::Update(KvOp::Put(0, 1)),
            master_unable: true,
        };
        let out = msg(&node, &mut s, CLIENT, notice);
        assert_eq!((s.role, s.version()), (Role::Approver, 1));
        assert!(out.iter().any(|c| matches!(
            c,
            Cmd::Send(to, Msg::Reply { .. }) if usize::from(*to) == CLIENT
        )));
    }
}
