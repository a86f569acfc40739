//! Durable storage: one redb database file per node, `<data dir>/replicore.redb`.
//!
//! ```text
//!  table "meta"  (&str → bytes)            table "data"  (bytes → bytes)
//!    format   "replicore-storage-1"          the rows of the actor storage's row part
//!    cluster  u64 big-endian                 (Durable::Data, a Rows type), written
//!    node     u64 big-endian                 incrementally: only the rows a step
//!    version  u64 big-endian                 changed (Rows::diff_rows)
//!    saved    postcard(actor storage without its row part)
//! ```
//!
//! Every protocol saves through this one layer: protocol 1 and 2 keep their user layer's
//! data row by row (any [`UserStore`] is [`Rows`]), the other protocols keep their own row
//! parts (knowledge sync its items, stage sync its journal and held messages).
//!
//! A save writes the changed data rows and the `saved`/`version` rows in ONE write transaction;
//! redb commits it durably (fsync) before [`Disk::save`] returns. So a commit costs what the
//! step changed, not the data set, and a crash leaves either the old or the new saved state.

use replicore_model::store::{Kv, Store};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("data");

/// The format marker written in a fresh database; anything else is refused at start.
pub const FORMAT: &[u8] = b"replicore-storage-1";

/// The database file inside a node's data directory.
pub const FILE_NAME: &str = "replicore.redb";

/// A storage failure. Every one is fatal for the node: it stops rather than run on a state
/// it cannot make durable.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The data directory could not be created or read.
    #[error("data directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The database file could not be opened (corrupt, locked by another process, or not a
    /// redb file).
    #[error("cannot open database {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: Box<redb::DatabaseError>,
    },
    /// A database operation failed.
    #[error("database error: {0}")]
    Db(Box<redb::Error>),
    /// The file is a redb database but not one of ours.
    #[error("{path} is not a replicore data directory (format marker {found:?})")]
    Foreign {
        /// The file.
        path: PathBuf,
        /// The marker found, if any.
        found: Option<String>,
    },
    /// The directory belongs to another cluster or node.
    #[error("{path} belongs to {what} {found}, but this node is configured as {what} {expected}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// "cluster" or "node".
        what: &'static str,
        /// The stored id.
        found: u64,
        /// The configured id.
        expected: u64,
    },
    /// A stored row does not decode.
    #[error("corrupt {what} in the database: {detail}")]
    Corrupt {
        /// Which row or table.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// The blocking storage task failed to complete.
    #[error("storage task failed: {0}")]
    Task(String),
}

fn db<E: Into<redb::Error>>(e: E) -> StorageError {
    StorageError::Db(Box::new(e.into()))
}

/// A user layer store that can live in the `data` table, one row per key.
///
/// This is how an application plugs in its own user layer: implement the model's
/// [`Store`] trait for its data, then this trait to map a delta to rows.
pub trait UserStore: Store {
    /// The rows a delta changes: `(key, Some(value))` to write, `(key, None)` to remove.
    fn rows(delta: &Self::Delta) -> Vec<(Vec<u8>, Option<Vec<u8>>)>;

    /// Rebuilds the data from every stored row, in key order.
    fn from_rows(rows: impl Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<Self, String>;

    /// Reads one key, for remote reads.
    fn read_row(&self, key: &[u8]) -> Option<Vec<u8>>;

    /// The number of keys, for status reports.
    fn key_count(&self) -> u64;
}

/// The shipped user layer: UTF-8 string keys and byte values.
pub type KvStore = Kv<String, Vec<u8>>;

impl UserStore for KvStore {
    fn rows(delta: &Self::Delta) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        delta
            .changes
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
            .collect()
    }

    fn from_rows(rows: impl Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<Self, String> {
        let mut kv = KvStore::default();
        for (k, v) in rows {
            let k = String::from_utf8(k).map_err(|e| format!("non-UTF-8 key: {e}"))?;
            kv.entries.insert(k, v);
        }
        Ok(kv)
    }

    fn read_row(&self, key: &[u8]) -> Option<Vec<u8>> {
        let key = std::str::from_utf8(key).ok()?;
        self.read(&key.to_string()).cloned()
    }

    fn key_count(&self) -> u64 {
        self.len() as u64
    }
}

/// The part of an actor's storage kept row by row in the `data` table.
pub trait Rows: Clone + Default + Send + Sync + 'static {
    /// The rows that differ from `last`: `(key, Some(value))` to write, `(key, None)` to
    /// remove. It should cost what changed (a structurally shared store diffs in what
    /// changed; a plain map compares its entries).
    fn diff_rows(&self, last: &Self) -> Vec<(Vec<u8>, Option<Vec<u8>>)>;

    /// Rebuilds the value from every stored row, in key order.
    fn from_table(rows: impl Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<Self, String>;
}

impl<S: UserStore> Rows for S {
    fn diff_rows(&self, last: &Self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        S::rows(&self.diff_from(last))
    }

    fn from_table(rows: impl Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<Self, String> {
        S::from_rows(rows)
    }
}

/// The rows of a map whose keys and values are encoded by `key` and postcard, behind a
/// one-byte `tag` so several maps share the `data` table: the entries of `new` that differ
/// from `last`, and the keys of `last` that `new` lacks. It compares every entry: fine for
/// the small maps it serves.
pub fn map_rows<K: Ord, V: Serialize + PartialEq>(
    tag: u8,
    new: &std::collections::BTreeMap<K, V>,
    last: &std::collections::BTreeMap<K, V>,
    key: impl Fn(&K) -> Vec<u8>,
) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let row_key = |k: &K| {
        let mut bytes = vec![tag];
        bytes.extend(key(k));
        bytes
    };
    let mut rows = Vec::new();
    for (k, v) in new {
        if last.get(k) != Some(v) {
            // A value of a model type always encodes; an empty row would be refused at load.
            rows.push((
                row_key(k),
                Some(postcard::to_allocvec(v).unwrap_or_default()),
            ));
        }
    }
    for k in last.keys() {
        if !new.contains_key(k) {
            rows.push((row_key(k), None));
        }
    }
    rows
}

/// An actor's `Storage` type, split into a row part (stored row by row) and the rest
/// (stored as one postcard row).
pub trait Durable: Clone + Serialize + DeserializeOwned + Send + 'static {
    /// The row part: the user layer's data for protocols 1 and 2.
    type Data: Rows;
    /// Moves the row part out, leaving the default (empty) one in place.
    fn split(self) -> (Self::Data, Self);
    /// Puts the data back.
    fn join(self, data: Self::Data) -> Self;
    /// The committed version this storage restores.
    fn version(&self) -> u64;
}

/// SHA-256 of a value's encoding: equal digests mean identical data (status reports).
pub fn digest_of<T: Serialize>(data: &T) -> [u8; 32] {
    use sha2::Digest;
    let bytes = postcard::to_allocvec(data).unwrap_or_default();
    sha2::Sha256::digest(&bytes).into()
}

/// A node's database.
#[derive(Clone)]
pub struct Disk {
    db: Arc<Database>,
    path: PathBuf,
    /// Data rows written or removed by saves since open: observes that a save costs its delta.
    rows_written: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk").field("path", &self.path).finish()
    }
}

fn read_u64(bytes: &[u8], what: &'static str) -> Result<u64, StorageError> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| StorageError::Corrupt {
        what,
        detail: format!("{} bytes, expected 8", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(arr))
}

impl Disk {
    /// Opens (or creates) the database in `dir` for `node_id` of `cluster_id`. A directory of
    /// another cluster or node, or a file that is not ours, is an error.
    pub fn open(dir: &Path, cluster_id: u64, node_id: u64) -> Result<Disk, StorageError> {
        std::fs::create_dir_all(dir).map_err(|source| StorageError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let database = Database::create(&path).map_err(|source| StorageError::Open {
            path: path.clone(),
            source: Box::new(source),
        })?;
        let disk = Disk {
            db: Arc::new(database),
            path,
            rows_written: Arc::default(),
        };
        // A database without any table is fresh: just created, or created by a run that
        // crashed before its first commit. Anything else must carry our marker.
        let fresh = disk
            .db
            .begin_read()
            .map_err(db)?
            .list_tables()
            .map_err(db)?
            .next()
            .is_none();
        if fresh {
            let txn = disk.db.begin_write().map_err(db)?;
            {
                let mut meta = txn.open_table(META).map_err(db)?;
                meta.insert("format", FORMAT).map_err(db)?;
                meta.insert("cluster", &cluster_id.to_be_bytes()[..])
                    .map_err(db)?;
                meta.insert("node", &node_id.to_be_bytes()[..])
                    .map_err(db)?;
                txn.open_table(DATA).map_err(db)?;
            }
            txn.commit().map_err(db)?;
        }
        disk.check(cluster_id, node_id)?;
        Ok(disk)
    }

    fn check(&self, cluster_id: u64, node_id: u64) -> Result<(), StorageError> {
        let txn = self.db.begin_read().map_err(db)?;
        let meta = match txn.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                return Err(StorageError::Foreign {
                    path: self.path.clone(),
                    found: None,
                });
            }
            Err(e) => return Err(db(e)),
        };
        let format = meta.get("format").map_err(db)?.map(|v| v.value().to_vec());
        if format.as_deref() != Some(FORMAT) {
            return Err(StorageError::Foreign {
                path: self.path.clone(),
                found: format.map(|f| String::from_utf8_lossy(&f).into_owned()),
            });
        }
        for (what, row, expected) in [
            ("cluster", "cluster", cluster_id),
            ("node", "node", node_id),
        ] {
            let found = match meta.get(row).map_err(db)? {
                Some(v) => read_u64(v.value(), "meta id row")?,
                None => {
                    return Err(StorageError::Corrupt {
                        what: "meta id row",
                        detail: format!("{row} missing"),
                    });
                }
            };
            if found != expected {
                return Err(StorageError::Mismatch {
                    path: self.path.clone(),
                    what,
                    found,
                    expected,
                });
            }
        }
        Ok(())
    }

    /// How many data rows saves wrote or removed since this database was opened.
    pub fn rows_written(&self) -> u64 {
        self.rows_written.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the last saved storage, or `None` when nothing was ever saved.
    pub fn load<D: Durable>(&self) -> Result<Option<D>, StorageError> {
        let txn = self.db.begin_read().map_err(db)?;
        let meta = txn.open_table(META).map_err(db)?;
        let Some(saved) = meta.get("saved").map_err(db)? else {
            return Ok(None);
        };
        let rest: D = postcard::from_bytes(saved.value()).map_err(|e| StorageError::Corrupt {
            what: "saved state",
            detail: e.to_string(),
        })?;
        let table = txn.open_table(DATA).map_err(db)?;
        let mut rows = Vec::new();
        for row in table.iter().map_err(db)? {
            let (k, v) = row.map_err(db)?;
            rows.push((k.value().to_vec(), v.value().to_vec()));
        }
        let data =
            D::Data::from_table(rows.into_iter()).map_err(|detail| StorageError::Corrupt {
                what: "data",
                detail,
            })?;
        Ok(Some(rest.join(data)))
    }

    /// Saves `saved` durably, writing only the data rows that differ from `last` (the data of
    /// the previous save) plus the metadata rows, in one transaction. Returns the saved data,
    /// the `last` of the next save. Blocking: call it from a blocking context.
    pub fn save<D: Durable>(&self, last: &D::Data, saved: D) -> Result<D::Data, StorageError> {
        let version = saved.version();
        let (data, rest) = saved.split();
        let rows = data.diff_rows(last);
        let rest = postcard::to_allocvec(&rest).map_err(|e| StorageError::Corrupt {
            what: "saved state",
            detail: e.to_string(),
        })?;
        let mut txn = self.db.begin_write().map_err(db)?;
        // Immediate durability: the commit fsyncs before returning (the default; stated here
        // because the save-before-send rule depends on it).
        txn.set_durability(redb::Durability::Immediate);
        {
            let mut table = txn.open_table(DATA).map_err(db)?;
            self.rows_written
                .fetch_add(rows.len() as u64, std::sync::atomic::Ordering::Relaxed);
            for (k, v) in rows {
                match v {
                    Some(v) => table.insert(&k[..], &v[..]).map_err(db)?,
                    None => table.remove(&k[..]).map_err(db)?,
                };
            }
            let mut meta = txn.open_table(META).map_err(db)?;
            meta.insert("saved", &rest[..]).map_err(db)?;
            meta.insert("version", &version.to_be_bytes()[..])
                .map_err(db)?;
        }
        txn.commit().map_err(db)?;
        Ok(data)
    }

    /// Saves on tokio's blocking pool (see [`Disk::save`]).
    pub async fn save_async<D: Durable>(
        &self,
        last: D::Data,
        saved: D,
    ) -> Result<D::Data, StorageError> {
        let disk = self.clone();
        tokio::task::spawn_blocking(move || disk.save(&last, saved))
            .await
            .map_err(|e| StorageError::Task(e.to_string()))?
    }
}

/// A minimal [`Durable`] storage for the runtime's own tests: a version and a store.
#[cfg(test)]
pub(crate) mod test_support {
    use super::{Durable, KvStore};
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, Default, Deserialize, Eq, Hash, PartialEq, Serialize)]
    pub(crate) struct Versioned {
        pub(crate) version: u64,
        pub(crate) data: KvStore,
    }

    impl Durable for Versioned {
        type Data = KvStore;

        fn split(mut self) -> (KvStore, Self) {
            let data = std::mem::take(&mut self.data);
            (data, self)
        }

        fn join(mut self, data: KvStore) -> Self {
            self.data = data;
            self
        }

        fn version(&self) -> u64 {
            self.version
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The incremental save trusts `Store::diff_from`, which walks the two structurally
    /// shared maps and skips shared nodes. imbl 6.1 skipped one entry too many after a shared
    /// run (jneem/imbl#160, fixed in imbl 7): a one-key update was missed for about one key
    /// in eight, so a save wrote nothing and a restart loaded an older value (found by the
    /// chaos soak, `docs/reliability.md`).
    #[test]
    fn the_diff_of_a_one_key_update_of_a_shared_store_names_that_key() {
        let base: KvStore = Kv {
            entries: (0..2000)
                .map(|i| (format!("key{i:05}"), b"old".to_vec()))
                .collect(),
        };
        for i in 0..2000 {
            let key = format!("key{i:05}");
            let mut next = base.clone();
            next.entries.insert(key.clone(), b"new".to_vec());
            let delta = next.diff_from(&base);
            assert_eq!(
                delta.changes.iter().collect::<Vec<_>>(),
                vec![(&key, &Some(b"new".to_vec()))],
                "the diff of an update of {key}"
            );
            assert_ne!(next, base, "stores differing in {key} compare unequal");
        }
    }
    use replicore_model::store::KvOp;
    use test_support::Versioned;

    fn slave(version: u64, data: KvStore) -> Versioned {
        Versioned { version, data }
    }

    #[test]
    fn saves_incrementally_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(dir.path(), 1, 2).unwrap();
        assert!(disk.load::<Versioned>().unwrap().is_none());
        let mut data = KvStore::default();
        let mut last = KvStore::default();
        for i in 0..50u32 {
            let d = data.delta_of(&KvOp::Put(format!("k{i}"), i.to_be_bytes().to_vec()));
            data.apply(&d);
            last = disk
                .save(&last, slave(u64::from(i) + 1, data.clone()))
                .unwrap();
        }
        let d = data.delta_of(&KvOp::Delete("k3".into()));
        data.apply(&d);
        disk.save(&last, slave(51, data.clone())).unwrap();
        drop(disk);
        let disk = Disk::open(dir.path(), 1, 2).unwrap();
        assert_eq!(disk.load::<Versioned>().unwrap(), Some(slave(51, data)));
    }

    #[test]
    fn a_one_key_update_of_a_large_data_set_writes_one_row() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(dir.path(), 1, 2).unwrap();
        let mut data = KvStore::default();
        for i in 0..10_000u32 {
            data.entries.insert(format!("k{i:05}"), vec![0; 16]);
        }
        let last = disk
            .save(&KvStore::default(), slave(1, data.clone()))
            .unwrap();
        assert_eq!(disk.rows_written(), 10_000);
        // The step's state is a structurally shared copy with one key changed.
        let d = data.delta_of(&KvOp::Put("k04242".into(), b"new".to_vec()));
        data.apply(&d);
        disk.save(&last, slave(2, data.clone())).unwrap();
        assert_eq!(disk.rows_written(), 10_001, "one changed key, one row");
        drop(disk);
        let disk = Disk::open(dir.path(), 1, 2).unwrap();
        assert_eq!(disk.load::<Versioned>().unwrap(), Some(slave(2, data)));
    }

    #[test]
    fn foreign_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        Disk::open(dir.path(), 1, 2).unwrap();
        assert!(matches!(
            Disk::open(dir.path(), 9, 2),
            Err(StorageError::Mismatch {
                what: "cluster",
                ..
            })
        ));
        assert!(matches!(
            Disk::open(dir.path(), 1, 3),
            Err(StorageError::Mismatch { what: "node", .. })
        ));
        // Another program's redb database.
        let other = tempfile::tempdir().unwrap();
        {
            let theirs = Database::create(other.path().join(FILE_NAME)).unwrap();
            let txn = theirs.begin_write().unwrap();
            let t: TableDefinition<u64, u64> = TableDefinition::new("theirs");
            txn.open_table(t).unwrap().insert(1, 2).unwrap();
            txn.commit().unwrap();
        }
        assert!(matches!(
            Disk::open(other.path(), 1, 2),
            Err(StorageError::Foreign { .. })
        ));
        let junk = tempfile::tempdir().unwrap();
        std::fs::write(junk.path().join(FILE_NAME), b"definitely not a database").unwrap();
        assert!(Disk::open(junk.path(), 1, 2).is_err());
    }
}
