//! The generic driver: runs any Stateright [`Actor`] whose message, timer and storage types
//! are serde types, and carries out the commands it emits.
//!
//! ```text
//!   Router (inbound frames) ──on_msg──▶ ┌────────┐ ──Save──▶ Disk (one redb txn, fsync)
//!   timer deadline         ──on_timeout▶│ actor  │ ──Send──▶ Router (peer connections)
//!   start                  ──on_start──▶└────────┘ ──SetTimer/CancelTimer──▶ deadlines
//! ```
//!
//! # Execution contract
//! A step's commands run in order. A `Save` is made durable before any later `Send` of the
//! same step is handed to a connection: the driver holds the latest unsaved storage and
//! flushes it (one redb write transaction, committed with fsync) right before the first
//! following `Send`, or at the end of the step. Consecutive saves without a send between them
//! collapse into the last one, which is what a crash could observe anyway.
//!
//! The state is held as an owned value and handed to the actor as `Cow::Owned`, so
//! `Cow::to_mut` never clones it; a no-op step costs no copy at all.

use crate::codec::{self, Frame};
use crate::storage::{Disk, Durable, StorageError};
use bytes::Bytes;
use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;
use stateright::actor::{Actor, Command, Id, Out};
use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The most frames queued for one connection; beyond it frames to that peer are dropped,
/// which the protocol tolerates as message loss (heartbeats repair it).
pub const PEER_QUEUE_FRAMES: usize = 1024;

/// Where encoded frames go: the outbound queue of every live connection, by peer id.
///
/// A peer may hold several connections (a client reconnecting); a frame goes to each.
#[derive(Clone, Default)]
pub struct Router {
    inner: Arc<Mutex<RouterInner>>,
}

#[derive(Default)]
struct RouterInner {
    next_conn: u64,
    peers: HashMap<Id, Vec<(u64, mpsc::Sender<Bytes>)>>,
}

impl Router {
    fn lock(&self) -> std::sync::MutexGuard<'_, RouterInner> {
        // A panic while holding this lock would be a bug in this file; recover the map anyway.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a connection to `peer`; returns its handle for [`Router::unregister`].
    pub fn register(&self, peer: Id, tx: mpsc::Sender<Bytes>) -> u64 {
        let mut inner = self.lock();
        inner.next_conn += 1;
        let conn = inner.next_conn;
        inner.peers.entry(peer).or_default().push((conn, tx));
        conn
    }

    /// Forgets a closed connection.
    pub fn unregister(&self, peer: Id, conn: u64) {
        let mut inner = self.lock();
        if let Some(list) = inner.peers.get_mut(&peer) {
            list.retain(|(c, _)| *c != conn);
            if list.is_empty() {
                inner.peers.remove(&peer);
            }
        }
    }

    /// Whether `peer` has a live connection.
    pub fn is_connected(&self, peer: Id) -> bool {
        self.lock().peers.contains_key(&peer)
    }

    /// Queues `frame` to every connection of `dst`, without waiting. Returns whether any
    /// connection took it; a missing or full connection loses the frame.
    pub fn send(&self, dst: Id, frame: Bytes) -> bool {
        let inner = self.lock();
        let Some(list) = inner.peers.get(&dst) else {
            tracing::trace!(%dst, "no connection; frame dropped");
            return false;
        };
        let mut sent = false;
        for (_, tx) in list {
            match tx.try_send(frame.clone()) {
                Ok(()) => sent = true,
                Err(_) => tracing::debug!(%dst, "connection queue full or closed; frame dropped"),
            }
        }
        sent
    }
}

/// A fatal driver error: the node must stop.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A save could not be made durable.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// One actor, its state, its timers and its durable storage.
pub struct Driver<A: Actor>
where
    A::Storage: Durable,
{
    actor: A,
    id: Id,
    state: Option<A::State>,
    disk: Disk,
    /// The data of the last durable save: the base of the next incremental save.
    persisted: <A::Storage as Durable>::Data,
    timers: HashMap<A::Timer, Instant>,
    router: Router,
    max_frame_bytes: usize,
}

fn random_duration(range: &Range<Duration>) -> Duration {
    if range.end <= range.start {
        return range.start;
    }
    rand::rng().random_range(range.clone())
}

impl<A> Driver<A>
where
    A: Actor,
    A::Msg: Serialize + DeserializeOwned + Send + 'static,
    A::Storage: Durable,
{
    /// Loads the saved storage from `disk` and runs `on_start`.
    pub async fn start(
        actor: A,
        id: Id,
        disk: Disk,
        router: Router,
        max_frame_bytes: usize,
    ) -> Result<Self, DriverError> {
        let saved: Option<A::Storage> = {
            let disk = disk.clone();
            tokio::task::spawn_blocking(move || disk.load())
                .await
                .map_err(|e| StorageError::Task(e.to_string()))??
        };
        let persisted = saved.as_ref().map(|s| s.data().clone()).unwrap_or_default();
        let mut driver = Driver {
            actor,
            id,
            state: None,
            disk,
            persisted,
            timers: HashMap::new(),
            router,
            max_frame_bytes,
        };
        let mut out = Out::new();
        let state = driver.actor.on_start(id, &saved, &mut out);
        driver.state = Some(state);
        driver.execute(out).await?;
        Ok(driver)
    }

    /// The actor's current state.
    pub fn state(&self) -> &A::State {
        // Set by `start` and only taken for the duration of a step.
        self.state
            .as_ref()
            .unwrap_or_else(|| unreachable!("state is present between steps"))
    }

    /// The actor.
    pub fn actor(&self) -> &A {
        &self.actor
    }

    /// This actor's id.
    pub fn id(&self) -> Id {
        self.id
    }

    /// The earliest armed timer.
    pub fn next_timer(&self) -> Option<(A::Timer, Instant)> {
        self.timers
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(t, at)| (t.clone(), *at))
    }

    /// Delivers a message from `src`.
    pub async fn on_msg(&mut self, src: Id, msg: A::Msg) -> Result<(), DriverError> {
        let mut out = Out::new();
        {
            // Owned: `to_mut` never clones. Scoped so no borrow lives across the awaits below.
            let mut cow = Cow::Owned(self.take_state());
            self.actor.on_msg(self.id, &mut cow, src, msg, &mut out);
            self.state = Some(cow.into_owned());
        }
        self.execute(out).await
    }

    /// Fires `timer` (it is disarmed first, as a fired timer is).
    pub async fn on_timeout(&mut self, timer: A::Timer) -> Result<(), DriverError> {
        self.timers.remove(&timer);
        let mut out = Out::new();
        {
            // Owned: `to_mut` never clones. Scoped so no borrow lives across the awaits below.
            let mut cow = Cow::Owned(self.take_state());
            self.actor.on_timeout(self.id, &mut cow, &timer, &mut out);
            self.state = Some(cow.into_owned());
        }
        self.execute(out).await
    }

    fn take_state(&mut self) -> A::State {
        self.state
            .take()
            .unwrap_or_else(|| unreachable!("state is present between steps"))
    }

    async fn persist(&mut self, saved: A::Storage) -> Result<(), DriverError> {
        let last = std::mem::take(&mut self.persisted);
        self.persisted = self.disk.save_async(last, saved).await?;
        Ok(())
    }

    /// Carries out one step's commands, in order (see the module's execution contract).
    async fn execute(&mut self, out: Out<A>) -> Result<(), DriverError> {
        let mut unsaved: Option<A::Storage> = None;
        // The last encoded message: a broadcast is a run of equal messages to several peers,
        // encoded once and written as the same bytes to each.
        let mut encoded: Option<(A::Msg, Bytes)> = None;
        for command in out {
            match command {
                Command::Save(storage) => unsaved = Some(storage),
                Command::Send(dst, msg) => {
                    if let Some(storage) = unsaved.take() {
                        self.persist(storage).await?;
                    }
                    let bytes = match &encoded {
                        Some((m, b)) if *m == msg => b.clone(),
                        _ => match codec::encode(&Frame::Actor(&msg), self.max_frame_bytes) {
                            Ok(b) => {
                                encoded = Some((msg, b.clone()));
                                b
                            }
                            Err(e) => {
                                // Lost like any message; the protocol's repair (heartbeat,
                                // retry) applies. Log loudly: it is a configuration problem.
                                tracing::error!(%dst, error = %e, "message not sent");
                                continue;
                            }
                        },
                    };
                    self.router.send(dst, bytes);
                }
                Command::SetTimer(timer, range) => {
                    let at = Instant::now() + random_duration(&range);
                    self.timers.insert(timer, at);
                }
                Command::CancelTimer(timer) => {
                    self.timers.remove(&timer);
                }
                Command::ChooseRandom(..) => {
                    // No protocol driven here makes random choices.
                    tracing::warn!("ChooseRandom is not supported by this runtime; ignored");
                }
            }
        }
        if let Some(storage) = unsaved {
            self.persist(storage).await?;
        }
        Ok(())
    }
}
