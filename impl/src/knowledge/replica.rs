//! One knowledge-sync replica on disk: the model's `Replica` actor over a redb database.

use crate::knowledge::bundle::{BundleError, BundleFile, BundleMsg};
use redb::{Database, ReadableTable, TableDefinition};
use replicore_model::knowledge::{
    Applied, ChangeId, ConflictPolicy, Replica, ReplicaData, ReplicaId, ReplicaState, SyncMsg,
    Timer,
};
use stateright::actor::{Actor, Command, Id, Out};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("knowledge");

/// The format marker of a knowledge-sync database.
pub const FORMAT: &[u8] = b"replicore-knowledge-1";

/// The database file inside a replica's data directory.
pub const FILE_NAME: &str = "knowledge.redb";

/// The largest replica id: ids are actor ids in the model, and must fit every platform's
/// `usize` with room for [`EXPORT_PEER`].
pub const MAX_REPLICA_ID: ReplicaId = u32::MAX as ReplicaId - 1;

/// The destination id an export answers as (a bundle file's reader is unknown when it is
/// written).
pub const EXPORT_PEER: ReplicaId = u32::MAX as ReplicaId;

/// A failure of a local replica. Nothing was applied unless the error says so.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The data directory could not be created.
    #[error("data directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The database could not be opened or used.
    #[error("database {path}: {detail}")]
    Db {
        /// The file.
        path: PathBuf,
        /// The cause.
        detail: String,
    },
    /// The directory holds another replica or another kind of data.
    #[error("{path} holds {found}, not replica {expected}")]
    Foreign {
        /// The directory.
        path: PathBuf,
        /// What it holds.
        found: String,
        /// The replica asked for.
        expected: ReplicaId,
    },
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
}

/// What an import did.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct ImportReport {
    /// Changes in the bundle.
    pub changes: usize,
    /// Changes applied as the item's new version.
    pub applied: usize,
    /// Changes already superseded here.
    pub obsolete: usize,
    /// Changes concurrent with the local version: conflicts, resolved by the policy.
    pub conflicts: usize,
    /// Whether the bundle's learned knowledge was merged (every change applied).
    pub learned: bool,
}

/// One replica of protocol 3 with its data on disk.
pub struct LocalReplica {
    db: Database,
    path: PathBuf,
    id: ReplicaId,
    actor: Replica<String, String>,
    state: ReplicaState<String, String>,
}

impl LocalReplica {
    /// Opens (or creates) replica `id` in `dir`, resolving conflicts by `policy`.
    pub fn open(dir: &Path, id: ReplicaId, policy: ConflictPolicy) -> Result<Self, ReplicaError> {
        if id > MAX_REPLICA_ID {
            return Err(ReplicaError::BadId(id));
        }
        std::fs::create_dir_all(dir).map_err(|source| ReplicaError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let dberr = |e: &dyn std::fmt::Display| ReplicaError::Db {
            path: path.clone(),
            detail: e.to_string(),
        };
        let db = Database::create(&path).map_err(|e| dberr(&e))?;
        let saved = {
            let txn = db.begin_write().map_err(|e| dberr(&e))?;
            let saved = {
                let mut t = txn.open_table(TABLE).map_err(|e| dberr(&e))?;
                let format = t
                    .get("format")
                    .map_err(|e| dberr(&e))?
                    .map(|v| v.value().to_vec());
                let replica = t
                    .get("replica")
                    .map_err(|e| dberr(&e))?
                    .map(|v| v.value().to_vec());
                match (format, replica) {
                    (None, _) => {
                        t.insert("format", FORMAT).map_err(|e| dberr(&e))?;
                        t.insert("replica", &id.to_be_bytes()[..])
                            .map_err(|e| dberr(&e))?;
                        None
                    }
                    (Some(f), Some(r)) if f == FORMAT && r == id.to_be_bytes() => {
                        match t.get("data").map_err(|e| dberr(&e))? {
                            Some(v) => Some(
                                postcard::from_bytes::<ReplicaData<String, String>>(v.value())
                                    .map_err(|e| dberr(&format!("corrupt replica data: {e}")))?,
                            ),
                            None => None,
                        }
                    }
                    (Some(f), r) => {
                        let found = if f == FORMAT {
                            let mut b = [0u8; 8];
                            let r = r.unwrap_or_default();
                            b.copy_from_slice(r.get(..8).unwrap_or(&[0; 8]));
                            format!("replica {}", u64::from_be_bytes(b))
                        } else {
                            "another kind of data".to_string()
                        };
                        return Err(ReplicaError::Foreign {
                            path: dir.to_path_buf(),
                            found,
                            expected: id,
                        });
                    }
                }
            };
            txn.commit().map_err(|e| dberr(&e))?;
            saved
        };
        let actor = Replica {
            peers: vec![],
            advertise_to: vec![],
            edits: vec![],
            filter: None,
            policy,
            two_way: false,
            cancel: false,
            purge: false,
            max_sessions: u64::MAX,
            mutant: None,
        };
        let mut out = Out::new();
        let state = actor.on_start(Self::actor_id(id), &saved, &mut out);
        Ok(LocalReplica {
            db,
            path,
            id,
            actor,
            state,
        })
    }

    fn actor_id(id: ReplicaId) -> Id {
        // Checked against MAX_REPLICA_ID in `open`, so it fits a usize.
        Id::from(id as usize)
    }

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.id
    }

    /// Its data: items, knowledge, forgotten knowledge.
    pub fn data(&self) -> &ReplicaData<String, String> {
        &self.state.data
    }

    fn persist(&self, data: &ReplicaData<String, String>) -> Result<(), ReplicaError> {
        let dberr = |e: &dyn std::fmt::Display| ReplicaError::Db {
            path: self.path.clone(),
            detail: e.to_string(),
        };
        let bytes = postcard::to_allocvec(data).map_err(|e| dberr(&e))?;
        let mut txn = self.db.begin_write().map_err(|e| dberr(&e))?;
        txn.set_durability(redb::Durability::Immediate);
        {
            let mut t = txn.open_table(TABLE).map_err(|e| dberr(&e))?;
            t.insert("data", &bytes[..]).map_err(|e| dberr(&e))?;
        }
        txn.commit().map_err(|e| dberr(&e))
    }

    /// Runs one actor step: saves its last `Save` durably, then keeps the new state and
    /// returns the messages it sent.
    fn step(
        &mut self,
        f: impl FnOnce(
            &Replica<String, String>,
            Id,
            &mut Cow<ReplicaState<String, String>>,
            &mut Out<Replica<String, String>>,
        ),
    ) -> Result<Vec<(Id, BundleMsg)>, ReplicaError> {
        let me = Self::actor_id(self.id);
        let mut cow = Cow::Borrowed(&self.state);
        let mut out = Out::new();
        f(&self.actor, me, &mut cow, &mut out);
        let next = match cow {
            Cow::Owned(s) => Some(s),
            Cow::Borrowed(_) => None,
        };
        let mut sends = Vec::new();
        let mut saved = None;
        for c in out {
            match c {
                Command::Save(d) => saved = Some(d),
                Command::Send(dst, m) => sends.push((dst, m)),
                _ => {}
            }
        }
        if let Some(d) = saved {
            self.persist(&d)?;
        }
        if let Some(s) = next {
            self.state = s;
        }
        Ok(sends)
    }

    /// Delivers one message from replica actor `src` to the actor; returns what it sent.
    pub fn deliver(
        &mut self,
        src: Id,
        msg: BundleMsg,
    ) -> Result<Vec<(Id, BundleMsg)>, ReplicaError> {
        self.step(|a, me, st, o| a.on_msg(me, st, src, msg, o))
    }

    /// Fires one of the actor's timers; returns what it sent.
    pub fn timeout(&mut self, timer: Timer) -> Result<Vec<(Id, BundleMsg)>, ReplicaError> {
        self.step(|a, me, st, o| a.on_timeout(me, st, &timer, o))
    }

    /// Whether the syncs this replica pulls ask the source to pull back (claim 22).
    pub fn set_two_way(&mut self, two_way: bool) {
        self.actor.two_way = two_way;
    }

    /// Whether a sync this replica pulls is open.
    pub fn syncing(&self) -> bool {
        self.state.pull.is_some()
    }

    /// Abandons the open sync, if any (its connection closed): its learned knowledge is never
    /// merged; the changes already applied stay (each was saved).
    pub fn close_sync(&mut self) {
        self.state.pull = None;
    }

    /// A local write of the item at `key` (`None` deletes it): a new change of this replica,
    /// saved durably.
    pub fn write(&mut self, key: &str, value: Option<&str>) -> Result<ChangeId, ReplicaError> {
        let me = Self::actor_id(self.id);
        let mut data = self.state.data.clone();
        let id = Replica::make_change(
            me,
            &mut data,
            key.to_string(),
            value.map(str::to_string),
            None,
        );
        self.persist(&data)?;
        self.state.data = data;
        Ok(id)
    }

    /// Forgets tombstones whose history this replica fully knows (the actor's purge rule);
    /// a replica that has not seen those deletions then needs a full bundle.
    pub fn forget_tombstones(&mut self) -> Result<(), ReplicaError> {
        self.step(|a, me, st, o| a.on_timeout(me, st, &Timer::Purge, o))?;
        Ok(())
    }

    /// Writes a bundle of every item this replica holds (with `full`, a full enumeration that
    /// a replica lacking the minimum knowledge accepts) to `path` (claims 25, 30).
    pub fn export_bundle(&mut self, path: &Path, full: bool) -> Result<BundleFile, ReplicaError> {
        let session = self
            .state
            .data
            .answered
            .get(&EXPORT_PEER)
            .copied()
            .unwrap_or(0)
            + 1;
        let request = SyncMsg::RequestChanges {
            session,
            knowledge: Default::default(),
            filtered: vec![],
            filter: None,
            recovery: full,
            two_way: false,
        };
        let sends =
            self.step(|a, me, st, o| a.on_msg(me, st, Id::from(EXPORT_PEER as usize), request, o))?;
        let bundle = BundleFile {
            source: self.id,
            full,
            messages: sends.into_iter().map(|(_, m)| m).collect(),
        };
        bundle.validate()?;
        bundle.write(path)?;
        Ok(bundle)
    }

    /// Applies the bundle file at `path`: checked whole first, then applied as a sync pulled
    /// from its source. Any bundle, any number of times, in any order: what is known already
    /// changes nothing, and learned knowledge is merged only when every change is applied.
    pub fn import_bundle(&mut self, path: &Path) -> Result<ImportReport, ReplicaError> {
        let bundle = BundleFile::read(path)?;
        if bundle.source > MAX_REPLICA_ID {
            return Err(BundleError::Malformed("the source replica id is out of range").into());
        }
        let source = Self::actor_id(bundle.source);
        self.step(|a, me, st, o| a.on_timeout(me, st, &Timer::Pull(usize::from(source)), o))?;
        // At most twice: a full bundle refused for the minimum knowledge is the answer to the
        // full-enumeration request the actor makes after refusing, so it is delivered again
        // under that sync.
        for _attempt in 0..2 {
            let Some(session) = self.state.pull.as_ref().map(|p| p.session) else {
                // The actor opens a sync on every pull timer and after every refusal (it has
                // u64::MAX sessions).
                return Err(BundleError::Malformed("no sync could be opened").into());
            };
            let mut report = ImportReport {
                changes: bundle.messages.len().saturating_sub(1),
                ..ImportReport::default()
            };
            let mut refused = false;
            for msg in &bundle.messages {
                let mut msg = msg.clone();
                match &mut msg {
                    SyncMsg::ConveyChanges { session: s, .. }
                    | SyncMsg::CompleteBundle { session: s, .. } => *s = session,
                    _ => {}
                }
                let sends = self.step(|a, me, st, o| a.on_msg(me, st, source, msg, o))?;
                for (_, m) in sends {
                    match m {
                        SyncMsg::AcknowledgeChange { outcome, .. } => match outcome {
                            Applied::Applied { .. } => report.applied += 1,
                            Applied::Obsolete { .. } => report.obsolete += 1,
                            Applied::Conflict { .. } => report.conflicts += 1,
                        },
                        SyncMsg::ConveyKnowledge { .. } => report.learned = true,
                        SyncMsg::CancelChangeFlow { .. } => refused = true,
                        _ => {}
                    }
                }
                if refused {
                    break;
                }
            }
            if !refused {
                return Ok(report);
            }
            if !bundle.full {
                // The actor asked for a full enumeration, which this file is not: close it.
                self.state.pull = None;
                return Err(ReplicaError::MinimumKnowledge {
                    source_id: bundle.source,
                });
            }
        }
        // A full bundle is accepted by the full-enumeration sync; a second refusal is not
        // possible, but a file cannot be trusted to be consistent.
        self.state.pull = None;
        Err(ReplicaError::MinimumKnowledge {
            source_id: bundle.source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_reopens_with_its_data_and_refuses_another_id() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut r = LocalReplica::open(dir.path(), 3, ConflictPolicy::default()).unwrap();
            r.write("a", Some("1")).unwrap();
        }
        let r = LocalReplica::open(dir.path(), 3, ConflictPolicy::default()).unwrap();
        assert_eq!(r.data().read(&"a".to_string()), Some(&"1".to_string()));
        assert_eq!(r.data().counter, 1);
        drop(r);
        let err = LocalReplica::open(dir.path(), 4, ConflictPolicy::default())
            .err()
            .unwrap();
        assert!(matches!(err, ReplicaError::Foreign { .. }), "{err}");
    }
}
