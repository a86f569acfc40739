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
//! A step's commands run in order, except that its saves collapse into its last one, made
//! durable (one redb write transaction, committed with fsync) before the step's first `Send`
//! is handed to a connection, or at the end of a step that sends nothing. So every `Save` is
//! durable before any later `Send` of the step leaves, and a crash at any moment leaves the
//! node either before the step (nothing saved, nothing sent) or after it with some of its
//! messages lost: exactly the model's atomic step on a lossy network. (Flushing each save
//! before the sends that follow it would let a crash between two saves of one step leave a
//! state the model never has.)
//!
//! # Group commit
//! Between [`Driver::begin_group`] and [`Driver::end_group`] several steps share one durable
//! write: each step's commands run as above except that its sends are held, its save
//! replaces the group's, and at the end the group's last save is made durable (one
//! transaction, one fsync) before any held send leaves, in order. A crash inside a group
//! leaves the node before the group's first step (nothing saved, nothing sent: its inputs
//! are lost, as the model's network may lose them) and never in between, so a group is a run
//! of the model's atomic steps whose messages leave a little later. The node's loop groups
//! the messages already queued when it takes one ([`DriverOptions::group_commit`]); a
//! traced run steps one input per save, so trace conformance replays each step exactly.
//!
//! With a [`Tracer`], each step's input and commands are written as one trace line before
//! any of them is carried out, and each `Send` travels as a [`Frame::Traced`] frame naming
//! its [`SendId`].
//!
//! The state is held as an owned value and handed to the actor as `Cow::Owned`, so
//! `Cow::to_mut` never clones it; a no-op step costs no copy at all.

use crate::runtime::codec::{self, Frame};
use crate::runtime::faults::{Fate, FaultLayer};
use crate::runtime::metrics::{self as meters, Observer, StepInput};
use crate::runtime::storage::{Disk, Durable, StorageError};
use crate::runtime::trace::{self, SendId, TraceError, Tracer};
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
///
/// With a [`FaultLayer`], frames to other nodes first go through it (loss, duplication,
/// delay, reordering, partitions); see [`crate::runtime::faults`].
#[derive(Clone, Default)]
pub struct Router {
    inner: Arc<Mutex<RouterInner>>,
    faults: Option<Arc<FaultLayer>>,
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

    /// A router whose frames to other nodes go through `faults`.
    pub fn with_faults(faults: Arc<FaultLayer>) -> Self {
        Router {
            inner: Arc::default(),
            faults: Some(faults),
        }
    }

    /// The fault layer, if any.
    pub fn faults(&self) -> Option<&Arc<FaultLayer>> {
        self.faults.as_ref()
    }

    /// Queues `frame` to every connection of `dst`, without waiting, through the fault layer
    /// when there is one. Returns whether the frame was queued (or is held back by a delay);
    /// a missing or full connection, or an injected loss, loses the frame.
    pub fn send(&self, dst: Id, frame: Bytes) -> bool {
        let Some(faults) = self
            .faults
            .as_ref()
            .filter(|f| f.applies(usize::from(dst) as u64))
        else {
            return self.send_now(dst, frame);
        };
        let Fate::Deliver(delays) = faults.decide(usize::from(dst) as u64) else {
            return false;
        };
        let mut sent = false;
        for delay in delays {
            if delay.is_zero() || !faults.hold() {
                sent |= self.send_now(dst, frame.clone());
                continue;
            }
            let (router, faults, frame) = (self.clone(), faults.clone(), frame.clone());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                router.send_now(dst, frame);
                faults.release();
            });
            sent = true;
        }
        sent
    }

    /// Queues `frame` to every connection of `dst` now.
    fn send_now(&self, dst: Id, frame: Bytes) -> bool {
        let inner = self.lock();
        let Some(list) = inner.peers.get(&dst) else {
            tracing::trace!(%dst, "no connection; frame dropped");
            return false;
        };
        let mut sent = false;
        for (_, tx) in list {
            match tx.try_send(frame.clone()) {
                Ok(()) => sent = true,
                Err(_) => {
                    metrics::counter!(crate::runtime::metrics::FRAMES_DROPPED).increment(1);
                    tracing::debug!(%dst, "connection queue full or closed; frame dropped")
                }
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
    /// The trace could not be written (a trace with holes would be useless).
    #[error(transparent)]
    Trace(#[from] TraceError),
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
    /// Testing only: deliberately breaks the execution contract. A step's messages leave at
    /// once and its save is written behind, only when the next step starts (a write-behind
    /// cache that acknowledges before it flushes), so a crash between two steps loses a save
    /// whose messages are already out. It changes no protocol rule; it exists so that the
    /// chaos test and trace conformance can show they catch a runtime that sends before
    /// saving (`docs/reliability.md`). Only with the crate's `testing` feature.
    #[cfg(feature = "testing")]
    pub unsafe_send_before_save: bool,
    /// The most queued inputs whose steps share one durable write (group commit); 1 turns
    /// grouping off. Not used by traced runs or with `unsafe_send_before_save`.
    pub group_commit: usize,
}

impl DriverOptions {
    /// Whether a step's save is written behind its messages: never without the `testing`
    /// feature, whose `unsafe_send_before_save` breaks the contract on purpose.
    fn sends_before_save(&self) -> bool {
        #[cfg(feature = "testing")]
        return self.unsafe_send_before_save;
        #[cfg(not(feature = "testing"))]
        false
    }
}

/// The default [`DriverOptions::group_commit`].
pub const GROUP_COMMIT_DEFAULT: usize = 64;

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            max_frame_bytes: crate::runtime::codec::MAX_FRAME_BYTES_DEFAULT,
            seed: None,
            inline_saves: false,
            #[cfg(feature = "testing")]
            unsafe_send_before_save: false,
            group_commit: GROUP_COMMIT_DEFAULT,
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
    tracer: Option<Tracer>,
    /// The save written behind (only with `unsafe_send_before_save`).
    behind: Option<A::Storage>,
    /// The open group: its last save and its held frames (see "Group commit").
    group: Option<Group<A::Storage>>,
    /// The protocol's reading of each step (metrics, event logs), if any.
    observer: Option<Box<dyn Observer<A>>>,
    /// This node's id as a metrics label.
    label: String,
}

/// What an open group holds back until [`Driver::end_group`].
struct Group<S> {
    save: Option<S>,
    sends: Vec<(Id, Bytes)>,
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
    A::Timer: Serialize,
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
        Self::start_traced(actor, id, disk, router, options, None).await
    }

    /// [`Driver::start`], recording every step with `tracer` when given.
    pub async fn start_traced(
        actor: A,
        id: Id,
        disk: Disk,
        router: Router,
        options: DriverOptions,
        tracer: Option<Tracer>,
    ) -> Result<Self, DriverError> {
        let saved: Option<A::Storage> = if let Some(damage) = disk.discarded() {
            // The saved state was found damaged and discarded at open (`Disk::open_for`):
            // the node starts as its protocol says a damaged node does. A damaged row is
            // never served.
            Some(
                A::Storage::after_damage(usize::from(id) as u64).ok_or_else(|| {
                    StorageError::Corrupt {
                        what: "saved state",
                        detail: damage.to_string(),
                    }
                })?,
            )
        } else if options.inline_saves {
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
        // The base of the next incremental save: the row part of what was loaded.
        let persisted = saved
            .as_ref()
            .map(|s| s.clone().split().0)
            .unwrap_or_default();
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
            tracer,
            behind: None,
            group: None,
            observer: None,
            label: usize::from(id).to_string(),
        };
        let mut out = Out::new();
        let state = driver.actor.on_start(id, &saved, &mut out);
        driver.state = Some(state);
        if driver.tracer.is_some() {
            driver.record(
                trace::Input::Start {
                    storage: saved.as_ref(),
                },
                &out,
            )?;
        }
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

    /// Hands every later step's input, commands and state to `observer` (see
    /// [`crate::runtime::metrics`]); it reads them and changes nothing.
    pub fn set_observer(&mut self, observer: Box<dyn Observer<A>>) {
        self.observer = Some(observer);
    }

    /// This node's id as a metrics label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The actor.
    pub fn actor(&self) -> &A {
        &self.actor
    }

    /// This actor's id.
    pub fn id(&self) -> Id {
        self.id
    }

    /// How many queued inputs may share one durable write: 1 when grouping is off.
    pub fn group_limit(&self) -> usize {
        if self.tracer.is_some() || self.options.sends_before_save() {
            1
        } else {
            self.options.group_commit.max(1)
        }
    }

    /// Opens a group: the following steps' saves and sends wait for [`Driver::end_group`].
    pub fn begin_group(&mut self) {
        if self.group_limit() > 1 && self.group.is_none() {
            self.group = Some(Group {
                save: None,
                sends: Vec::new(),
            });
        }
    }

    /// Closes the open group, if any: makes its last save durable, then sends what it held.
    pub async fn end_group(&mut self) -> Result<(), DriverError> {
        let Some(group) = self.group.take() else {
            return Ok(());
        };
        if let Some(storage) = group.save {
            self.persist(storage).await?;
        }
        for (dst, frame) in group.sends {
            self.router.send(dst, frame);
        }
        Ok(())
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
        self.on_msg_traced(src, None, msg).await
    }

    /// Delivers a message from `src` produced by the traced send `send`, if known.
    pub async fn on_msg_traced(
        &mut self,
        src: Id,
        send: Option<SendId>,
        msg: A::Msg,
    ) -> Result<(), DriverError> {
        // The message moves into the actor; the trace line needs it after the step.
        let traced = self.tracer.is_some().then(|| msg.clone());
        if let Some(observer) = self.observer.as_mut() {
            observer.on_input(StepInput::Msg(src, &msg));
        }
        let mut out = Out::new();
        {
            // Owned: `to_mut` never clones. Scoped so no borrow lives across the awaits below.
            let mut cow = Cow::Owned(self.take_state());
            self.actor.on_msg(self.id, &mut cow, src, msg, &mut out);
            self.state = Some(cow.into_owned());
        }
        self.observe(&out);
        if let Some(msg) = &traced {
            self.record(
                trace::Input::Msg {
                    src: usize::from(src) as u64,
                    send,
                    msg,
                },
                &out,
            )?;
        }
        self.execute(out).await
    }

    /// Fires `timer` (it is disarmed first, as a fired timer is).
    pub async fn on_timeout(&mut self, timer: A::Timer) -> Result<(), DriverError> {
        self.timers.remove(&timer);
        if let Some(observer) = self.observer.as_mut() {
            observer.on_input(StepInput::Timer(&timer));
        }
        let mut out = Out::new();
        {
            // Owned: `to_mut` never clones. Scoped so no borrow lives across the awaits below.
            let mut cow = Cow::Owned(self.take_state());
            self.actor.on_timeout(self.id, &mut cow, &timer, &mut out);
            self.state = Some(cow.into_owned());
        }
        self.observe(&out);
        if self.tracer.is_some() {
            self.record(trace::Input::Timer { timer: &timer }, &out)?;
        }
        self.execute(out).await
    }

    /// Writes a step's trace line. Send ids are handed out in command order; `execute` takes
    /// them again in the same order from the tracer's counter.
    fn record(
        &mut self,
        input: trace::Input<&A::Msg, &A::Timer, &A::Storage>,
        out: &Out<A>,
    ) -> Result<(), DriverError> {
        let Some(tracer) = self.tracer.as_mut() else {
            return Ok(());
        };
        let n = tracer.next_step();
        // Peek at the ids the sends will take, without consuming them.
        let mut next = SendIdPeek::new(tracer);
        let cmds = out
            .iter()
            .filter_map(|c| match c {
                Command::Send(dst, msg) => Some(trace::Cmd::Send {
                    dst: usize::from(*dst) as u64,
                    id: next.take(),
                    msg,
                }),
                Command::Save(storage) => Some(trace::Cmd::Save { storage }),
                Command::SetTimer(timer, _) => Some(trace::Cmd::SetTimer { timer }),
                Command::CancelTimer(timer) => Some(trace::Cmd::CancelTimer { timer }),
                Command::ChooseRandom(..) => None,
            })
            .collect();
        tracer.write(&trace::Step {
            n,
            input,
            out: cmds,
        })?;
        Ok(())
    }

    fn take_state(&mut self) -> A::State {
        self.state
            .take()
            .unwrap_or_else(|| unreachable!("state is present between steps"))
    }

    /// Shows the observer a step's commands and the state they leave.
    fn observe(&mut self, out: &Out<A>) {
        if let (Some(observer), Some(state)) = (self.observer.as_mut(), self.state.as_ref()) {
            observer.on_commands(state, out);
        }
    }

    async fn persist(&mut self, saved: A::Storage) -> Result<(), DriverError> {
        let last = std::mem::take(&mut self.persisted);
        let version = saved.version();
        let started = std::time::Instant::now();
        self.persisted = if self.options.inline_saves {
            self.disk.save(&last, saved)?
        } else {
            self.disk.save_async(last, saved).await?
        };
        let node = self.label.clone();
        metrics::histogram!(meters::SAVE_SECONDS, "node" => node.clone())
            .record(started.elapsed().as_secs_f64());
        metrics::gauge!(meters::DURABLE_VERSION, "node" => node).set(version as f64);
        Ok(())
    }

    /// Carries out one step's commands, in order (see the module's execution contract).
    async fn execute(&mut self, out: Out<A>) -> Result<(), DriverError> {
        let mut commands: Vec<_> = out.into_iter().collect();
        // The step's durable state is its last save; earlier ones are superseded by it.
        let mut unsaved = commands
            .iter()
            .rposition(|c| matches!(c, Command::Save(_)))
            .map(|last| match commands.remove(last) {
                Command::Save(storage) => storage,
                _ => unreachable!("the position of a Save"),
            });
        let deferred = self.options.sends_before_save();
        if let Some(storage) = self.behind.take() {
            self.persist(storage).await?;
        }
        if let Some(group) = self.group.as_mut()
            && let Some(storage) = unsaved.take()
        {
            // The group's durable state is its last step's save.
            group.save = Some(storage);
        }
        // The last encoded message: a broadcast is a run of equal messages to several peers,
        // encoded once and written as the same bytes to each.
        let mut encoded: Option<(A::Msg, Bytes)> = None;
        for command in commands {
            match command {
                Command::Save(_) => {}
                Command::Send(dst, msg) => {
                    if !deferred && let Some(storage) = unsaved.take() {
                        self.persist(storage).await?;
                    }
                    let send_id = self.tracer.as_mut().map(Tracer::next_send_id);
                    let bytes = match (send_id, &encoded) {
                        (None, Some((m, b))) if *m == msg => b.clone(),
                        _ => {
                            let frame = match send_id {
                                Some(id) => codec::encode(
                                    &Frame::Traced(id, &msg),
                                    self.options.max_frame_bytes,
                                ),
                                None => {
                                    codec::encode(&Frame::Actor(&msg), self.options.max_frame_bytes)
                                }
                            };
                            match frame {
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
                            }
                        }
                    };
                    match self.group.as_mut() {
                        Some(group) => group.sends.push((dst, bytes)),
                        None => {
                            self.router.send(dst, bytes);
                        }
                    }
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
        match unsaved {
            Some(storage) if deferred => self.behind = Some(storage),
            Some(storage) => self.persist(storage).await?,
            None => {}
        }
        Ok(())
    }
}

/// Hands out the send ids a tracer will give next, without consuming them.
struct SendIdPeek {
    next: SendId,
}

impl SendIdPeek {
    fn new(tracer: &Tracer) -> Self {
        SendIdPeek {
            next: SendId(tracer.node(), tracer.incarnation(), tracer.peek_send_seq()),
        }
    }

    fn take(&mut self) -> SendId {
        let id = self.next;
        self.next.2 += 1;
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::storage::test_support::Versioned;

    /// A toy actor: on message `n` it saves version `n`, then broadcasts `n` to ids 7 and 8.
    struct Echo;

    impl Actor for Echo {
        type Msg = u64;
        type State = u64;
        type Timer = ();
        type Storage = Versioned;
        type Random = ();

        fn on_start(&self, _: Id, storage: &Option<Self::Storage>, _: &mut Out<Self>) -> u64 {
            storage.as_ref().map_or(0, Durable::version)
        }

        fn on_msg(&self, _: Id, state: &mut Cow<u64>, _: Id, n: u64, o: &mut Out<Self>) {
            *state.to_mut() = n;
            o.save(Versioned {
                version: n,
                ..Versioned::default()
            });
            o.broadcast(&[Id::from(7), Id::from(8)], &n);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_saves_once_before_its_messages_leave_and_a_cut_group_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open_or_init(
            dir.path(),
            &crate::runtime::storage::Owner::new(1, 1, "test"),
        )
        .unwrap();
        let router = Router::default();
        let (tx7, mut rx7) = mpsc::channel(1024);
        let (tx8, _rx8) = mpsc::channel(1024);
        router.register(Id::from(7), tx7);
        router.register(Id::from(8), tx8);
        let start = |disk: Disk| {
            Driver::start(
                Echo,
                Id::from(1),
                disk,
                router.clone(),
                DriverOptions::default(),
            )
        };
        let mut driver = start(disk.clone()).await.unwrap();
        assert!(driver.group_limit() > 1);
        driver.begin_group();
        for n in 1..=10 {
            driver.on_msg(Id::from(2), n).await.unwrap();
        }
        assert!(
            rx7.try_recv().is_err(),
            "nothing leaves before the group's save"
        );
        assert!(disk.load::<Versioned>().unwrap().is_none());
        driver.end_group().await.unwrap();
        assert_eq!(disk.load::<Versioned>().unwrap().unwrap().version(), 10);
        for n in 1..=10u64 {
            let frame = rx7.try_recv().expect("sent after the save, in order");
            assert!(matches!(codec::decode::<Frame<u64>>(&frame), Ok(Frame::Actor(m)) if m == n));
        }
        // A group cut by a crash (the driver dropped before `end_group`) saved nothing and
        // sent nothing: the node restarts from before the group's first step.
        driver.begin_group();
        for n in 11..=15 {
            driver.on_msg(Id::from(2), n).await.unwrap();
        }
        drop(driver);
        assert!(rx7.try_recv().is_err());
        assert_eq!(disk.load::<Versioned>().unwrap().unwrap().version(), 10);
        let restarted = start(disk.clone()).await.unwrap();
        assert_eq!(*restarted.state(), 10);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_save_is_durable_before_the_steps_messages_leave() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open_or_init(
            dir.path(),
            &crate::runtime::storage::Owner::new(1, 1, "test"),
        )
        .unwrap();
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
                        .load::<Versioned>()
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
