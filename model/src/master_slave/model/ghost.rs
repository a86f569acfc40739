//! The ghost history the properties read.

use super::{MasterSlaveConfig, NetworkKind};
use crate::master_slave::master_user::Step;
use crate::master_slave::msg::{AbortReason, ClientMsg, Msg, Outcome, ServiceMsg};
use crate::store::{Store, Version};
use stateright::actor::{Envelope, Id};
use stateright::{Rewrite, RewritePlan};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Who the master and the slaves of a checked system are: what [`Ghost`] needs of its
/// config to read the messages it records.
pub trait Roles {
    /// The master's id.
    fn master_id(&self) -> Id;
    /// The slaves' ids.
    fn slave_ids(&self) -> Vec<Id>;
    /// The clients' ids.
    fn client_ids(&self) -> Vec<Id>;
    /// The network the system runs on.
    fn network(&self) -> NetworkKind;
    /// The most messages in flight explored on networks that keep every copy.
    fn in_flight_bound(&self) -> usize;
}

impl Roles for MasterSlaveConfig {
    fn master_id(&self) -> Id {
        MasterSlaveConfig::master_id(self)
    }
    fn slave_ids(&self) -> Vec<Id> {
        MasterSlaveConfig::slave_ids(self)
    }
    fn client_ids(&self) -> Vec<Id> {
        MasterSlaveConfig::client_ids(self)
    }
    fn network(&self) -> NetworkKind {
        self.network
    }
    fn in_flight_bound(&self) -> usize {
        MasterSlaveConfig::in_flight_bound(self)
    }
}

/// Ghost state for the properties: what the master revealed and decided, reconstructed from
/// the messages it sent. It is never read by protocol logic.
///
/// The record ([`GhostHistory`]) is shared and copied on write: the checker clones the whole
/// state for every successor it builds, and most steps leave the record as it was.
#[derive(Clone, Debug, Default, Eq, Hash, PartialEq)]
pub struct Ghost<S: Store>(Arc<GhostHistory<S>>);

impl<S: Store> std::ops::Deref for Ghost<S> {
    type Target = GhostHistory<S>;
    fn deref(&self) -> &GhostHistory<S> {
        &self.0
    }
}

impl<S: Store> std::ops::DerefMut for Ghost<S> {
    fn deref_mut(&mut self) -> &mut GhostHistory<S> {
        Arc::make_mut(&mut self.0)
    }
}

/// What [`Ghost`] records.
#[derive(Clone, Debug, Default, Eq, Hash, PartialEq)]
pub struct GhostHistory<S: Store> {
    /// Every committed state the master revealed, by version.
    pub committed: BTreeMap<Version, S>,
    /// Every two-phase step the master proposed, by version.
    pub proposed: BTreeMap<Version, Step<S>>,
    /// Versions the master decided to commit by two-phase commit.
    pub two_phase_commits: BTreeSet<Version>,
    /// Versions the master aborted (never to be visible).
    pub aborted: BTreeSet<Version>,
    /// (slave, version) for every Prepared vote a slave sent.
    pub voted: BTreeSet<(Id, Version)>,
    /// The master revealed two different states under one version.
    pub version_reused: bool,
    /// The master sent Commit for a version some participant had not voted Prepared.
    pub commit_without_votes: bool,
    /// A client was told its update was rolled back.
    pub rolled_back: bool,
    /// Every acknowledgement the master sent: by version, each (client, request) told it
    /// committed as that version, in the order first sent. A version with two or more is a
    /// group commit. [`super::props::ACKNOWLEDGED_REPLAY`] replays them.
    pub acked: BTreeMap<Version, Vec<(Id, u64)>>,
    /// Two clients were told their updates committed as one version (group commit).
    pub group_committed: bool,
    /// A slave applied a Delta reply.
    pub delta_applied: bool,
    /// A slave applied a Snapshot reply.
    pub snapshot_applied: bool,
    /// How many storage faults happened so far ([`super::StorageFault`], bounded by
    /// [`MasterSlaveConfig::disk_faults`]).
    pub storage_faults: usize,
    /// The most storage faults a run may have ([`MasterSlaveConfig::disk_faults`]), kept
    /// here so the reductions can tell whether one may still come.
    pub storage_faults_max: usize,
    /// Whether the master's store may be lost ([`MasterSlaveConfig::master_faults`]), kept
    /// here for the reductions.
    pub master_faults: bool,
    /// The crashed servers whose saved state was lost or damaged since they went down; a
    /// recovery takes a server out. [`super::props::monotonic`] does not judge them: their
    /// version goes back by the fault, not by the protocol.
    pub faulted: BTreeSet<Id>,
    /// The (slave, version) votes whose prepared delta a storage fault destroyed: the
    /// promise is void, and [`super::props::durable_votes`] does not judge it. The master
    /// still holds the update, so a slave that lost it fetches it.
    pub voided: BTreeSet<(Id, Version)>,
    /// A running server's committed version went back in one of its steps (recorded by
    /// [`super::MasterSlaveModel`], which sees every step; read by
    /// [`super::props::monotonic`]).
    pub went_back: bool,
}

impl<S: Store> Rewrite<Id> for Ghost<S> {
    fn rewrite<P>(&self, plan: &RewritePlan<Id, P>) -> Self {
        let mut g = self.clone();
        g.voted = self
            .voted
            .iter()
            .map(|(id, v)| (plan.rewrite(id), *v))
            .collect();
        g.acked = self
            .acked
            .iter()
            .map(|(v, acks)| {
                let acks = acks.iter().map(|(id, req)| (plan.rewrite(id), *req));
                (*v, acks.collect())
            })
            .collect();
        g.faulted = self.faulted.iter().map(|id| plan.rewrite(id)).collect();
        g.voided = self
            .voided
            .iter()
            .map(|(id, v)| (plan.rewrite(id), *v))
            .collect();
        g
    }
}

// Every record below only adds, and writes only what is new: a write copies the shared
// record (see [`Ghost`]).
impl<S: Store> Ghost<S> {
    /// Records that the master revealed `data` as its committed state at `version`.
    fn reveal(&mut self, version: Version, data: S) {
        match self.committed.get(&version) {
            Some(known) if *known != data && !self.version_reused => self.version_reused = true,
            Some(_) => {}
            None => {
                self.committed.insert(version, data);
            }
        }
    }

    /// The committed state at `prior` followed by `delta`, if `prior` is known.
    fn after(&self, prior: Version, delta: &S::Delta) -> Option<S> {
        let mut data = if prior == 0 {
            S::default()
        } else {
            self.committed.get(&prior)?.clone()
        };
        data.apply(delta);
        Some(data)
    }

    fn abort(&mut self, version: Version) {
        if !self.aborted.contains(&version) {
            self.aborted.insert(version);
        }
    }

    fn reveal_two_phase(&mut self, cfg: &impl Roles, version: Version) {
        if !cfg
            .slave_ids()
            .iter()
            .all(|id| self.voted.contains(&(*id, version)))
            && !self.commit_without_votes
        {
            self.commit_without_votes = true;
        }
        if !self.two_phase_commits.contains(&version) {
            self.two_phase_commits.insert(version);
        }
        if let Some(step) = self.proposed.get(&version).cloned()
            && let Some(data) = self.after(step.prior, &step.delta)
        {
            self.reveal(version, data);
        }
    }

    pub(super) fn record_out<C: Roles>(
        cfg: &C,
        ghost: &Self,
        env: Envelope<&Msg<S>>,
    ) -> Option<Self> {
        let from_master = env.src == cfg.master_id();
        let mut g = ghost.clone();
        match env.msg {
            Msg::Service(m) if from_master => match m {
                ServiceMsg::Announce {
                    prior,
                    new,
                    delta: Some(delta),
                } => {
                    let data = g.after(*prior, delta)?;
                    g.reveal(*new, data);
                }
                ServiceMsg::Delta { from, to, delta } => {
                    let data = g.after(*from, delta)?;
                    g.reveal(*to, data);
                }
                ServiceMsg::Snapshot { to, data, .. } => g.reveal(*to, data.clone()),
                ServiceMsg::Prepare { prior, new, delta } => {
                    let step = Step {
                        prior: *prior,
                        new: *new,
                        delta: delta.clone(),
                    };
                    if g.proposed.get(new) != Some(&step) {
                        g.proposed.insert(*new, step);
                    }
                }
                ServiceMsg::Commit { version } => g.reveal_two_phase(cfg, *version),
                ServiceMsg::Abort { version } => g.abort(*version),
                ServiceMsg::Heartbeat(beat) => match beat.decision {
                    Some(d) if d.outcome == Outcome::Commit => g.reveal_two_phase(cfg, d.version),
                    Some(d) => g.abort(d.version),
                    None => return None,
                },
                _ => return None,
            },
            Msg::Service(ServiceMsg::Prepared { version }) => {
                if !g.voted.contains(&(env.src, *version)) {
                    g.voted.insert((env.src, *version));
                }
            }
            Msg::Client(ClientMsg::Committed { req, version }) if from_master => {
                let ack = (env.dst, *req);
                let known = ghost.acked.get(version);
                if known.is_some_and(|acks| acks.contains(&ack)) {
                    return None;
                }
                if known.is_some_and(|acks| acks.iter().any(|(c, _)| *c != env.dst)) {
                    g.group_committed = true;
                }
                g.acked.entry(*version).or_default().push(ack);
            }
            Msg::Client(ClientMsg::Aborted {
                version, reason, ..
            }) if from_master => {
                g.abort(*version);
                if *reason == AbortReason::RolledBack && !g.rolled_back {
                    g.rolled_back = true;
                }
            }
            _ => return None,
        }
        (g != *ghost).then_some(g)
    }

    pub(super) fn record_in<C>(_cfg: &C, ghost: &Self, env: Envelope<&Msg<S>>) -> Option<Self> {
        // A Delta or Snapshot delivery is only a transition when the slave applied it.
        let mut g = ghost.clone();
        match env.msg {
            Msg::Service(ServiceMsg::Delta { .. }) if !ghost.delta_applied => {
                g.delta_applied = true
            }
            Msg::Service(ServiceMsg::Snapshot { .. }) if !ghost.snapshot_applied => {
                g.snapshot_applied = true
            }
            _ => return None,
        }
        Some(g)
    }
}
