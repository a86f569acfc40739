//! Protocol 1's figures and event log, read off the master's and the slaves' steps (see
//! [`crate::runtime::metrics`]): what each step was given and which commands it emitted.
//!
//! On the master: a `Committed` answer is a commit (its latency runs from the request's
//! first arrival), an `Aborted` answer an abort by reason, a `Commit`/`Abort` to the slaves
//! closes a two-phase round (its size is the answers it sends), a `Delta` or `Snapshot` is a
//! catch-up. A slave's version is what it last told the master (`HeartbeatAck`,
//! `DeltaRequest`); its lag is the master's version minus it, and the time since the master
//! committed the first version the slave lacks. On a slave: the catch-ups it receives and
//! its votes. Each of these events is one INFO line.

use crate::runtime::metrics::{self as meters, Observer, StepInput};
use replicore_model::master_slave::{
    ClientMsg, MasterServer, MasterState, Msg, ServiceMsg, SlaveServer, SlaveState,
};
use replicore_model::store::{Store, Version};
use stateright::actor::{Command, Id, Out};
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// The most requests whose arrival times the master's observer remembers, for latencies;
/// beyond it a new request's latency is not measured.
pub const LATENCY_REQUESTS_MAX: usize = 4096;

/// The most committed versions whose commit times the master's observer remembers, for
/// slave lag in time; a slave further behind is reported as lagging since the oldest.
pub const COMMIT_TIMES_MAX: usize = 4096;

/// The master's observer.
pub struct MasterObserver {
    node: String,
    /// When each request in flight first arrived, by client and request number.
    arrived: HashMap<(Id, u64), Instant>,
    /// The last committed versions and when the master committed them, oldest first.
    committed: VecDeque<(Version, Instant)>,
    /// Each slave's version, as it last told the master.
    slaves: Vec<(Id, Option<Version>)>,
    version: Option<Version>,
}

impl MasterObserver {
    /// An observer of master `node` with these slaves.
    pub fn new(node: u64, slaves: &[Id]) -> Self {
        MasterObserver {
            node: node.to_string(),
            arrived: HashMap::new(),
            committed: VecDeque::new(),
            slaves: slaves.iter().map(|s| (*s, None)).collect(),
            version: None,
        }
    }

    fn slave_at(&mut self, slave: Id, version: Version) {
        if let Some(entry) = self.slaves.iter_mut().find(|(s, _)| *s == slave) {
            entry.1 = Some(version);
        }
    }

    /// The seconds since the first committed version after `version`, 0 if none.
    fn lacking_since(&self, version: Version, now: Instant) -> f64 {
        let first_lacked = self.committed.iter().find(|(v, _)| *v > version);
        first_lacked.map_or(0.0, |(_, at)| now.duration_since(*at).as_secs_f64())
    }

    fn publish_lag(&self) {
        let (Some(master), now) = (self.version, Instant::now()) else {
            return;
        };
        for (slave, version) in &self.slaves {
            let Some(version) = version else { continue };
            let slave = usize::from(*slave).to_string();
            let behind = master as i128 - *version as i128;
            metrics::gauge!(meters::SLAVE_LAG_VERSIONS, "node" => self.node.clone(), "slave" => slave.clone())
                .set(behind as f64);
            let seconds = if behind > 0 {
                self.lacking_since(*version, now)
            } else {
                0.0
            };
            metrics::gauge!(meters::SLAVE_LAG_SECONDS, "node" => self.node.clone(), "slave" => slave)
                .set(seconds);
        }
    }
}

impl<S: Store> Observer<MasterServer<S>> for MasterObserver {
    fn on_input(&mut self, input: StepInput<'_, MasterServer<S>>) {
        let StepInput::Msg(src, msg) = input else {
            return;
        };
        match msg {
            // A re-sent request keeps its first arrival.
            Msg::Client(ClientMsg::Update { req, .. })
                if self.arrived.len() < LATENCY_REQUESTS_MAX =>
            {
                self.arrived.entry((src, *req)).or_insert_with(Instant::now);
            }
            Msg::Client(ClientMsg::Rollback { req }) => {
                tracing::info!(client = usize::from(src), req, "rollback requested");
            }
            Msg::Service(ServiceMsg::HeartbeatAck(beat)) => self.slave_at(src, beat.version),
            Msg::Service(ServiceMsg::DeltaRequest { from }) => {
                tracing::info!(slave = usize::from(src), from, "slave asks to catch up");
                self.slave_at(src, *from);
            }
            Msg::Service(ServiceMsg::Refused { version }) => {
                tracing::info!(slave = usize::from(src), version, "slave refused a prepare");
            }
            _ => {}
        }
    }

    fn on_commands(&mut self, state: &MasterState<S>, out: &Out<MasterServer<S>>) {
        let now = Instant::now();
        if self.version != Some(state.user.version) {
            if self.version.is_some() {
                self.committed.push_back((state.user.version, now));
                if self.committed.len() > COMMIT_TIMES_MAX {
                    self.committed.pop_front();
                }
            }
            self.version = Some(state.user.version);
        }
        let (mut answers, mut decided) = (0u64, false);
        let mut last_prepare = None;
        for command in out.iter() {
            let Command::Send(dst, msg) = command else {
                continue;
            };
            match msg {
                Msg::Client(ClientMsg::Committed { req, version }) => {
                    answers += 1;
                    metrics::counter!(meters::COMMITS, "node" => self.node.clone()).increment(1);
                    if let Some(at) = self.arrived.remove(&(*dst, *req)) {
                        metrics::histogram!(meters::COMMIT_LATENCY, "node" => self.node.clone())
                            .record(now.duration_since(at).as_secs_f64());
                    }
                    tracing::info!(client = usize::from(*dst), req, version, "committed");
                }
                Msg::Client(ClientMsg::Aborted {
                    req,
                    version,
                    reason,
                }) => {
                    answers += 1;
                    self.arrived.remove(&(*dst, *req));
                    let why = format!("{reason:?}");
                    tracing::info!(client = usize::from(*dst), req, version, reason = %why, "aborted");
                    metrics::counter!(meters::ABORTS, "node" => self.node.clone(), "reason" => why)
                        .increment(1);
                }
                Msg::Service(ServiceMsg::Commit { .. } | ServiceMsg::Abort { .. }) => {
                    decided = true;
                }
                // A broadcast: one line for the round, not one per slave.
                Msg::Service(ServiceMsg::Prepare { prior, new, .. })
                    if last_prepare != Some((*prior, *new)) =>
                {
                    tracing::info!(prior, new, "two-phase round prepared");
                    last_prepare = Some((*prior, *new));
                }
                Msg::Service(ServiceMsg::Delta { from, to, .. }) => {
                    tracing::info!(slave = usize::from(*dst), from, to, "catch-up: delta sent");
                }
                Msg::Service(ServiceMsg::Snapshot { from, to, .. }) => {
                    tracing::info!(
                        slave = usize::from(*dst),
                        from,
                        to,
                        "catch-up: snapshot sent"
                    );
                }
                _ => {}
            }
        }
        if decided {
            metrics::histogram!(meters::ROUND_REQUESTS, "node" => self.node.clone())
                .record(answers as f64);
        }
        metrics::gauge!(meters::ROUND_QUEUE_REQUESTS, "node" => self.node.clone())
            .set(state.queue.len() as f64);
        self.publish_lag();
    }
}

/// A slave's observer.
#[derive(Default)]
pub struct SlaveObserver;

impl<S: Store> Observer<SlaveServer<S>> for SlaveObserver {
    fn on_input(&mut self, input: StepInput<'_, SlaveServer<S>>) {
        let StepInput::Msg(_, Msg::Service(msg)) = input else {
            return;
        };
        match msg {
            ServiceMsg::Delta { from, to, .. } => {
                tracing::info!(from, to, "catch-up: delta received")
            }
            ServiceMsg::Snapshot { from, to, .. } => {
                tracing::info!(from, to, "catch-up: snapshot received")
            }
            ServiceMsg::Commit { version } => tracing::info!(version, "two-phase commit"),
            ServiceMsg::Abort { version } => tracing::info!(version, "two-phase abort"),
            _ => {}
        }
    }

    fn on_commands(&mut self, _: &SlaveState<S>, out: &Out<SlaveServer<S>>) {
        for command in out.iter() {
            match command {
                Command::Send(_, Msg::Service(ServiceMsg::Prepared { version })) => {
                    tracing::info!(version, "voted prepared");
                }
                Command::Send(_, Msg::Service(ServiceMsg::Refused { version })) => {
                    tracing::info!(version, "refused a prepare");
                }
                Command::Send(_, Msg::Service(ServiceMsg::DeltaRequest { from })) => {
                    tracing::info!(from, "behind the master; asking to catch up");
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_in_time_runs_from_the_first_version_a_slave_lacks() {
        let mut o = MasterObserver::new(0, &[Id::from(1)]);
        let t0 = Instant::now();
        o.committed.push_back((5, t0));
        o.committed
            .push_back((7, t0 + std::time::Duration::from_secs(1)));
        let later = t0 + std::time::Duration::from_secs(3);
        assert_eq!(o.lacking_since(4, later), 3.0);
        assert_eq!(o.lacking_since(5, later), 2.0);
        assert_eq!(o.lacking_since(7, later), 0.0);
    }
}
