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
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
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

/// How a driver runs.
#[derive(Clone, Debug)]
pub struct DriverOptions {
    /// The largest frame a `Send` may produce; larger messages are logged and dropped.
    pub max_frame_bytes: usize,
    /// Seeds the timer durations; `None` draws from the OS.
    pub seed: Option<u64>,
    /// Saves on the calling thread instead of tokio's blocking pool. For simulations on a
    /// single-threaded runtime with a paused clock, where it makes a run a function of its
    /// seed; it blocks the runtime thread for the fsync.
    pub inline_saves: bool,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            max_frame_bytes: crate::codec::MAX_FRAME_BYTES_DEFAULT,
            seed: None,
            inline_saves: false,
        }
    }
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
    /// Armed timers: deadline, then the arming order to break ties deterministically.
    timers: HashMap<A::Timer, (Instant, u64)>,
    armed: u64,
    router: Router,
    options: DriverOptions,
    rng: StdRng,
}

fn random_duration(rng: &mut StdRng, range: &Range<Duration>) -> Duration {
    if range.end <= range.start {
        return range.start;
    }
    rng.random_range(range.clone())
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
        options: DriverOptions,
    ) -> Result<Self, DriverError> {
        let saved: Option<A::Storage> = if options.inline_saves {
            disk.load()?
        } else {
            let disk = disk.clone();
            tokio::task::spawn_blocking(move || disk.load())
                .await
                .map_err(|e| StorageError::Task(e.to_string()))??
        };
        let rng = match options.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let persisted = saved.as_ref().map(|s| s.data().clone()).unwrap_or_default();
        let mut driver = Driver {
            actor,
            id,
            state: None,
            disk,
            persisted,
            timers: HashMap::new(),
            armed: 0,
            router,
            options,
            rng,
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
            .min_by_key(|(_, at_seq)| **at_seq)
            .map(|(t, (at, _))| (t.clone(), *at))
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
        self.persisted = if self.options.inline_saves {
            self.disk.save(&last, saved)?
        } else {
            self.disk.save_async(last, saved).await?
        };
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
                        _ => match codec::encode(&Frame::Actor(&msg), self.options.max_frame_bytes)
                        {
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
                    let at = Instant::now() + random_duration(&mut self.rng, &range);
                    self.armed += 1;
                    self.timers.insert(timer, (at, self.armed));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::KvStore;
    use replicore_model::master_slave::{Saved, SlaveStorage, slave_user::SlaveUser};

    /// A toy actor: on message `n` it saves version `n`, then broadcasts `n` to ids 7 and 8.
    struct Echo;

    impl Actor for Echo {
        type Msg = u64;
        type State = u64;
        type Timer = ();
        type Storage = Saved<KvStore>;
        type Random = ();

        fn on_start(&self, _: Id, storage: &Option<Self::Storage>, _: &mut Out<Self>) -> u64 {
            storage.as_ref().map_or(0, Durable::version)
        }

        fn on_msg(&self, _: Id, state: &mut Cow<u64>, _: Id, n: u64, o: &mut Out<Self>) {
            *state.to_mut() = n;
            o.save(Saved::Slave(SlaveStorage {
                user: SlaveUser {
                    version: n,
                    ..SlaveUser::default()
                },
            }));
            o.broadcast(&[Id::from(7), Id::from(8)], &n);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_save_is_durable_before_the_steps_messages_leave() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(dir.path(), 1, 1).unwrap();
        let router = Router::default();
        let (tx7, mut rx7) = mpsc::channel(1024);
        let (tx8, mut rx8) = mpsc::channel(1024);
        router.register(Id::from(7), tx7);
        router.register(Id::from(8), tx8);
        // Checks, as each frame arrives, that the state it reveals is already on disk.
        let checker = {
            let disk = disk.clone();
            tokio::spawn(async move {
                let mut checked = 0;
                while let Some(frame) = rx7.recv().await {
                    let Ok(Frame::Actor(n)) = codec::decode::<Frame<u64>>(&frame) else {
                        panic!("undecodable frame");
                    };
                    let saved = disk
                        .load::<Saved<KvStore>>()
                        .unwrap()
                        .expect("saved before sent");
                    assert!(saved.version() >= n, "frame {n} left before its save");
                    // The same bytes went to the other slave: encoded once.
                    let other = rx8.recv().await.unwrap();
                    assert_eq!(other.as_ptr(), frame.as_ptr(), "broadcast encoded once");
                    checked += 1;
                }
                checked
            })
        };
        let mut driver = Driver::start(
            Echo,
            Id::from(1),
            disk,
            router.clone(),
            DriverOptions {
                max_frame_bytes: 1024,
                ..DriverOptions::default()
            },
        )
        .await
        .unwrap();
        for n in 1..=50 {
            driver.on_msg(Id::from(2), n).await.unwrap();
        }
        router.unregister(Id::from(7), 1);
        drop(router);
        drop(driver);
        assert_eq!(checker.await.unwrap(), 50);
    }
}
