//! One knowledge-sync replica on disk: the model's [`AppReplica`] (the replica with its
//! application's inputs) on the runtime's driver and storage.
//!
//! Every input is a message to the actor: a peer's from the peer's id, the application's
//! (writes, syncs, bundles) from [`APP`]. What the actor sends to [`APP`] comes back through
//! the router: the answer to a write, the bundle an export makes, the report of an import.
//! Nothing here writes the actor's state.

use crate::knowledge::bundle::{BundleError, BundleFile, BundleMsg};
use crate::runtime::codec::{self, Frame};
use crate::runtime::conformance::{self, ConformanceError, Replayed};
use crate::runtime::driver::{Driver, DriverError, DriverOptions, Router};
use crate::runtime::storage::{Disk, Durable, Owner, Rows, StorageError, map_rows};
use crate::runtime::trace::{SendId, TraceError, Tracer};
use bytes::Bytes;
use replicore_model::knowledge::{
    AppMsg, AppReplica, Change, ChangeId, ConflictPolicy, ImportReport, Replica, ReplicaData,
    ReplicaId, Timer,
};
use stateright::actor::Id;
use std::collections::BTreeMap;
use std::path::Path;
use tokio::sync::mpsc;

/// The largest replica id: ids are actor ids in the model, and must fit every platform's
/// `usize` with room for [`APP`].
pub const MAX_REPLICA_ID: ReplicaId = u32::MAX as ReplicaId - 1;

/// The id the application speaks as: its writes, its syncs and its bundles (an export
/// answers it as a sync's destination, so a bundle's reader, unknown when it is written,
/// has this one id).
pub const APP: ReplicaId = u32::MAX as ReplicaId;

/// The cluster id every replica's database is opened with: a replica belongs to no cluster
/// (it syncs with any peer that proves the key), only its replica id is checked.
pub const STORAGE_CLUSTER: u64 = 0;

/// The role a replica's data directory records.
pub const ROLE: &str = "knowledge-sync/replica";

/// The most frames one step may address to one destination (a bundle of that many changes);
/// the queue's memory grows with what is queued, not with this bound.
pub const STEP_FRAMES_MAX: usize = 1 << 20;

/// The actor the runtime drives.
pub type Actor = AppReplica<String, String>;
/// Its messages.
pub type Msg = AppMsg<String, String>;

/// A failure of a local replica. Nothing was applied unless the error says so.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The data directory could not be opened (another replica's, or not ours).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The trace could not be created.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// A save could not be made durable.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// A replica id out of range.
    #[error("replica id {0} is out of range (0 to {MAX_REPLICA_ID})")]
    BadId(ReplicaId),
    /// The bundle file was refused.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The replica lacks the source's minimum knowledge (claim 21): the source forgot
    /// deletions this replica may not have seen. Nothing of the bundle was applied.
    #[error(
        "refused: this replica lacks the bundle's minimum knowledge (replica {source_id} forgot deletions it may not have seen); ask for a full bundle (export-bundle --full)"
    )]
    MinimumKnowledge {
        /// The bundle's source.
        source_id: ReplicaId,
    },
    /// The actor did not answer an application input (a bug: it answers each one).
    #[error("the replica did not answer the {0}")]
    NoAnswer(&'static str),
}

/// The row part of a replica's saved data: one row per item (its last change), written when a
/// step changes it. Knowledge, conflicts and counters are the `saved` row.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct ItemRows(BTreeMap<String, Change<String, String>>);

const ITEM: u8 = b'i';

impl Rows for ItemRows {
    fn diff_rows(&self, last: &Self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        map_rows(ITEM, &self.0, &last.0, |k| k.as_bytes().to_vec())
    }

    fn from_table(rows: impl Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<Self, String> {
        let mut items = BTreeMap::new();
        for (k, v) in rows {
            let key = match k.split_first() {
                Some((&ITEM, key)) => String::from_utf8(key.to_vec())
                    .map_err(|e| format!("a non-UTF-8 item key: {e}"))?,
                _ => return Err("an unknown row".to_string()),
            };
            let change = postcard::from_bytes(&v).map_err(|e| format!("item {key}: {e}"))?;
            items.insert(key, change);
        }
        Ok(ItemRows(items))
    }
}

impl Durable for ReplicaData<String, String> {
    type Data = ItemRows;

    fn split(mut self) -> (ItemRows, Self) {
        (ItemRows(std::mem::take(&mut self.items)), self)
    }

    fn join(mut self, rows: ItemRows) -> Self {
        self.items = rows.0;
        self
    }

    fn version(&self) -> u64 {
        self.counter
    }
}

/// The actor of a replica resolving conflicts by `policy`, taking `incarnation` if its store
/// was just created (see [`Replica::incarnation`]).
fn replica_actor(policy: ConflictPolicy, incarnation: u32) -> Actor {
    AppReplica {
        replica: Replica {
            peers: vec![],
            advertise_to: vec![],
            edits: vec![],
            filter: None,
            policy,
            two_way: false,
            cancel: false,
            purge: false,
            max_sessions: u64::MAX,
            incarnation,
            mutant: None,
        },
    }
}

/// What a replica records in its trace header: enough to rebuild its actor.
#[derive(Clone, Debug, serde::Deserialize, Eq, PartialEq, serde::Serialize)]
pub struct TraceMeta {
    /// Its conflict policy (`ConflictPolicy::name`).
    pub policy: String,
    /// The incarnation this process would give a store it just created
    /// ([`Replica::incarnation`]).
    #[serde(default)]
    pub incarnation: u32,
}

/// Replays the traces in `dir` through each replica's actor
/// ([`crate::runtime::conformance::replay_with`]); every command run is an incarnation, and
/// a replica created again after its store was lost replays as the model's lost store.
/// It checks the model's properties on the run too: on every state of every replica, that
/// its knowledge claims no change it does not cover, of every change any replica of the run
/// saved, and that its counter is ahead of its own changes (`props::knowledge_sound`,
/// `props::unique_ids`); on the replicas' last states, that replicas with equal knowledge
/// and no kept conflict hold equal data.
pub fn check_trace(dir: &Path) -> Result<Replayed, ConformanceError> {
    use replicore_model::knowledge::model::props;
    let nodes = conformance::read_dir::<Msg, Timer, ReplicaData<String, String>>(dir)?;
    // Every change that existed in the run: in some replica's saved data.
    let saved = nodes
        .values()
        .flatten()
        .flat_map(|inc| &inc.steps)
        .flat_map(|step| {
            step.out.iter().filter_map(|c| match c {
                crate::runtime::trace::Cmd::Save { storage } => Some(storage),
                _ => None,
            })
        });
    let all = props::changes_in(saved);
    let (mut report, last) = conformance::replay_with(
        &nodes,
        |node, header| {
            let meta: TraceMeta = serde_json::from_value(header.meta.clone())
                .map_err(|e| format!("replica {node}: header meta: {e}"))?;
            let policy = ConflictPolicy::from_name(&meta.policy)
                .ok_or_else(|| format!("replica {node}: unknown policy {}", meta.policy))?;
            Ok(replica_actor(policy, meta.incarnation))
        },
        |node, state| {
            if !props::sound_against(&all, &state.data) {
                Err(props::KNOWLEDGE_SOUND.to_string())
            } else if !props::counter_ahead(node, &state.data) {
                Err(props::UNIQUE_IDS.to_string())
            } else {
                Ok(())
            }
        },
        // The model loses stores (`KnowledgeModel`): a replica created again replays as it.
        true,
    )?;
    let datas: Vec<_> = last.values().map(|s| &s.data).collect();
    if !props::equal_knowledge_equal_data_of(&datas) {
        return Err(ConformanceError::Property(format!(
            "{} (the replicas' last states)",
            props::EQUAL_KNOWLEDGE_EQUAL_DATA
        )));
    }
    report.properties = 3;
    Ok(report)
}

/// One replica of protocol 3 with its data on disk.
pub struct LocalReplica {
    driver: Driver<Actor>,
    router: Router,
    /// What the actor sends to the application.
    answers: mpsc::Receiver<Bytes>,
    id: ReplicaId,
}

fn actor_id(id: ReplicaId) -> Id {
    // Ids are checked against MAX_REPLICA_ID (or are APP), so they fit a usize.
    Id::from(id as usize)
}

impl LocalReplica {
    /// Opens replica `id` in `dir`, resolving conflicts by `policy`; with `init`, creates it
    /// when the directory has no store (the explicit bootstrap, `--init`), otherwise a
    /// directory without one is refused (issue 18).
    pub async fn open(
        dir: &Path,
        id: ReplicaId,
        policy: ConflictPolicy,
        init: bool,
    ) -> Result<Self, ReplicaError> {
        Self::open_traced(dir, id, policy, init, None).await
    }

    /// [`LocalReplica::open`], recording this incarnation's steps in `trace_dir` when given.
    pub async fn open_traced(
        dir: &Path,
        id: ReplicaId,
        policy: ConflictPolicy,
        init: bool,
        trace_dir: Option<&Path>,
    ) -> Result<Self, ReplicaError> {
        if id > MAX_REPLICA_ID {
            return Err(ReplicaError::BadId(id));
        }
        let dir = dir.to_path_buf();
        let identity = Owner::new(STORAGE_CLUSTER, id, ROLE);
        let disk = tokio::task::spawn_blocking(move || Disk::open_with(&dir, &identity, init))
            .await
            .map_err(|e| StorageError::Task(e.to_string()))??;
        // A store created now is a new incarnation of replica `id` (issue 18): one drawn at
        // random, so a replica created again after its store was lost reuses none of the
        // change ids and session numbers it made before (the chance that two incarnations
        // of one replica draw the same is 2^-32). A store that exists keeps its own.
        let incarnation = loop {
            let i: u32 = rand::random();
            if i != 0 {
                break i;
            }
        };
        let actor = replica_actor(policy, incarnation);
        let tracer = match trace_dir {
            Some(dir) => {
                let meta = serde_json::to_value(TraceMeta {
                    policy: policy.name().to_string(),
                    incarnation,
                })
                .unwrap_or_default();
                Some(Tracer::create(dir, id, meta)?)
            }
            None => None,
        };
        let router = Router::default();
        let (tx, answers) = mpsc::channel(STEP_FRAMES_MAX);
        router.register(actor_id(APP), tx);
        let mut driver = Driver::start_traced(
            actor,
            actor_id(id),
            disk,
            router.clone(),
            DriverOptions::default(),
            tracer,
        )
        .await?;
        driver.set_observer(Box::new(super::observe::ReplicaObserver::new(id)));
        Ok(LocalReplica {
            driver,
            router,
            answers,
            id,
        })
    }

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.id
    }

    /// Its data: items, knowledge, forgotten knowledge.
    pub fn data(&self) -> &ReplicaData<String, String> {
        &self.driver.state().data
    }

    /// Whether a sync this replica pulls is open.
    pub fn syncing(&self) -> bool {
        self.driver.state().pull.is_some()
    }

    /// The router its messages to peers go through (a connection registers there).
    pub(crate) fn router(&self) -> &Router {
        &self.router
    }

    /// Delivers `msg` from `src`, sent by the traced send `send` if known, to the actor: one
    /// step, saved before its messages leave.
    pub(crate) async fn deliver(
        &mut self,
        src: ReplicaId,
        send: Option<SendId>,
        msg: Msg,
    ) -> Result<(), ReplicaError> {
        self.driver.on_msg_traced(actor_id(src), send, msg).await?;
        Ok(())
    }

    /// Runs one application input and returns what the actor sent the application.
    async fn ask(&mut self, msg: Msg) -> Result<Vec<Msg>, ReplicaError> {
        self.deliver(APP, None, msg).await?;
        let mut answers = Vec::new();
        while let Ok(frame) = self.answers.try_recv() {
            // Encoded by this very process, so it decodes; a failure is skipped all the same.
            if let Ok(Frame::Actor(m) | Frame::Traced(_, m)) = codec::decode::<Frame<Msg>>(&frame) {
                answers.push(m);
            }
        }
        Ok(answers)
    }

    /// A local write of the item at `key` (`None` deletes it): a new change of this replica,
    /// saved durably.
    pub async fn write(
        &mut self,
        key: &str,
        value: Option<&str>,
    ) -> Result<ChangeId, ReplicaError> {
        let write = AppMsg::Write {
            key: key.to_string(),
            value: value.map(str::to_string),
        };
        self.ask(write)
            .await?
            .into_iter()
            .find_map(|m| match m {
                AppMsg::Written { id } => Some(id),
                _ => None,
            })
            .ok_or(ReplicaError::NoAnswer("write"))
    }

    /// Forgets tombstones whose history this replica fully knows (the actor's purge rule);
    /// a replica that has not seen those deletions then needs a full bundle.
    pub async fn forget_tombstones(&mut self) -> Result<(), ReplicaError> {
        self.ask(AppMsg::ForgetTombstones).await?;
        Ok(())
    }

    /// Opens a sync from replica `peer` (and, `two_way`, asks it to pull back); its request
    /// goes to the connection registered for `peer`.
    pub async fn open_sync(&mut self, peer: ReplicaId, two_way: bool) -> Result<(), ReplicaError> {
        self.ask(AppMsg::Pull {
            source: peer,
            two_way,
        })
        .await?;
        Ok(())
    }

    /// Abandons the open sync, if any (its connection closed): its learned knowledge is never
    /// merged; the changes already applied stay (each was saved).
    pub async fn close_sync(&mut self) -> Result<(), ReplicaError> {
        self.ask(AppMsg::Abandon).await?;
        Ok(())
    }

    /// Writes a bundle of every item this replica holds (with `full`, a full enumeration that
    /// a replica lacking the minimum knowledge accepts) to `path` (claims 25, 30).
    pub async fn export_bundle(
        &mut self,
        path: &Path,
        full: bool,
    ) -> Result<BundleFile, ReplicaError> {
        let messages: Vec<BundleMsg> = self
            .ask(AppMsg::Export { full })
            .await?
            .into_iter()
            .filter_map(|m| match m {
                AppMsg::Peer(m) => Some(m),
                _ => None,
            })
            .collect();
        let bundle = BundleFile {
            source: self.id,
            full,
            messages,
        };
        bundle.validate()?;
        bundle.write(path)?;
        Ok(bundle)
    }

    /// Applies the bundle file at `path`: checked whole first, then applied by the actor as a
    /// sync pulled from its source. Any bundle, any number of times, in any order: what is
    /// known already changes nothing, and learned knowledge is merged only when every change
    /// is applied.
    pub async fn import_bundle(&mut self, path: &Path) -> Result<ImportReport, ReplicaError> {
        let bundle = BundleFile::read(path)?;
        if bundle.source > MAX_REPLICA_ID {
            return Err(BundleError::Malformed("the source replica id is out of range").into());
        }
        let import = AppMsg::Import {
            source: bundle.source,
            full: bundle.full,
            messages: bundle.messages,
        };
        let report = self
            .ask(import)
            .await?
            .into_iter()
            .find_map(|m| match m {
                AppMsg::Imported(r) => Some(r),
                _ => None,
            })
            .ok_or(ReplicaError::NoAnswer("import"))?;
        if report.refused {
            return Err(ReplicaError::MinimumKnowledge {
                source_id: bundle.source,
            });
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_replica_reopens_with_its_data_and_refuses_another_id() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut r = LocalReplica::open(dir.path(), 3, ConflictPolicy::default(), true)
                .await
                .unwrap();
            r.write("a", Some("1")).await.unwrap();
        }
        let r = LocalReplica::open(dir.path(), 3, ConflictPolicy::default(), true)
            .await
            .unwrap();
        assert_eq!(r.data().read(&"a".to_string()), Some(&"1".to_string()));
        assert_eq!(r.data().counter, 1);
        drop(r);
        let err = LocalReplica::open(dir.path(), 4, ConflictPolicy::default(), true)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(err, ReplicaError::Storage(StorageError::Mismatch { .. })),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_write_of_one_item_among_many_saves_one_row() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = LocalReplica::open(dir.path(), 1, ConflictPolicy::default(), true)
            .await
            .unwrap();
        for i in 0..50 {
            r.write(&format!("k{i}"), Some("v")).await.unwrap();
        }
        let disk = Disk::open_or_init(
            &dir.path().join("other"),
            &Owner::new(STORAGE_CLUSTER, 1, ROLE),
        )
        .unwrap();
        // The same step saved on a fresh database from the replica's current data.
        let last = disk.save(&ItemRows::default(), r.data().clone()).unwrap();
        assert_eq!(disk.rows_written(), 50);
        r.write("k7", Some("changed")).await.unwrap();
        disk.save(&last, r.data().clone()).unwrap();
        assert_eq!(disk.rows_written(), 51, "one changed item, one row");
    }
}
