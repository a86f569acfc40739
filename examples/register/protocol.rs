//! A replicated register, written as Stateright actors outside the runtime's crate, and run on
//! the runtime unchanged: "bring your own protocol".
//!
//! ```text
//!   client ──Write{req, value}──▶ primary (node 0) ──Replicate{version, value}──▶ backups
//!          ◀──Written{req, version}── (after its save)      Sync timer: the same again,
//!          ──Read{req}──▶ any node ──▶ Value{req, version, value}    repairing lost ones
//! ```
//!
//! The primary numbers writes; a backup keeps the highest version it heard of. Every state
//! change is saved before the step's messages leave (the runtime's contract), so a restarted
//! node resumes from what it told anyone. What the runtime needs besides the actor: the
//! storage's row part ([`ValueRow`], a `Rows`) and its split ([`Durable`]).

use replicore_runtime::runtime::storage::{Durable, Rows};
use serde::{Deserialize, Serialize};
use stateright::actor::{Actor, Id, Out};
use std::borrow::Cow;
use std::ops::Range;
use std::time::Duration;

/// The register's messages.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub enum Msg {
    /// Client → primary: set the register.
    Write {
        /// The client's request number.
        req: u64,
        /// The new value.
        value: Vec<u8>,
    },
    /// Primary → client: the write is saved as `version`.
    Written {
        /// The request.
        req: u64,
        /// Its version.
        version: u64,
    },
    /// Primary → backups: the register at `version`.
    Replicate {
        /// The version.
        version: u64,
        /// The value.
        value: Vec<u8>,
    },
    /// Client → any node: read the register.
    Read {
        /// The client's request number.
        req: u64,
    },
    /// Node → client: the register as this node has it.
    Value {
        /// The request.
        req: u64,
        /// The version.
        version: u64,
        /// The value.
        value: Vec<u8>,
    },
}

/// The register's timer: the primary re-sends its register to the backups.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub enum Timer {
    /// Repair lost replications.
    Sync,
}

/// A node's state, and what it saves: the register's version and value.
#[derive(Clone, Debug, Default, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub struct Register {
    /// The version (0: never written).
    pub version: u64,
    /// The value: the storage's row part.
    pub value: ValueRow,
}

/// The register's value as one row of the runtime's `data` table.
#[derive(Clone, Debug, Default, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub struct ValueRow(pub Vec<u8>);

impl Rows for ValueRow {
    fn diff_rows(&self, last: &Self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        if self == last {
            return vec![];
        }
        vec![(b"value".to_vec(), Some(self.0.clone()))]
    }

    fn from_table(rows: impl Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<Self, String> {
        let mut value = ValueRow::default();
        for (k, v) in rows {
            if k != b"value" {
                return Err("an unknown row".into());
            }
            value = ValueRow(v);
        }
        Ok(value)
    }
}

impl Durable for Register {
    type Data = ValueRow;

    fn split(mut self) -> (ValueRow, Self) {
        (std::mem::take(&mut self.value), self)
    }

    fn join(mut self, value: ValueRow) -> Self {
        self.value = value;
        self
    }

    fn version(&self) -> u64 {
        self.version
    }
}

/// How often the primary repairs lost replications.
pub const SYNC: Range<Duration> = Duration::from_millis(50)..Duration::from_millis(80);

/// A register node: node 0 is the primary, the others are backups.
#[derive(Clone, Debug)]
pub struct Node {
    /// The backups' ids (the primary's peers).
    pub backups: Vec<Id>,
}

impl Node {
    fn is_primary(id: Id) -> bool {
        usize::from(id) == 0
    }
}

impl Actor for Node {
    type Msg = Msg;
    type State = Register;
    type Timer = Timer;
    type Storage = Register;
    type Random = ();

    fn on_start(&self, id: Id, storage: &Option<Register>, o: &mut Out<Self>) -> Register {
        if Self::is_primary(id) {
            o.set_timer(Timer::Sync, SYNC);
        }
        storage.clone().unwrap_or_default()
    }

    fn on_msg(&self, id: Id, state: &mut Cow<Register>, src: Id, msg: Msg, o: &mut Out<Self>) {
        match msg {
            Msg::Write { req, value } if Self::is_primary(id) => {
                let st = state.to_mut();
                st.version += 1;
                st.value = ValueRow(value.clone());
                o.save(st.clone());
                let version = st.version;
                o.broadcast(&self.backups, &Msg::Replicate { version, value });
                o.send(src, Msg::Written { req, version });
            }
            Msg::Replicate { version, value } if version > state.version => {
                let st = state.to_mut();
                st.version = version;
                st.value = ValueRow(value);
                o.save(st.clone());
            }
            Msg::Read { req } => o.send(
                src,
                Msg::Value {
                    req,
                    version: state.version,
                    value: state.value.0.clone(),
                },
            ),
            // A write to a backup, an old replication, or an answer: nothing to do.
            _ => {}
        }
    }

    fn on_timeout(&self, _id: Id, state: &mut Cow<Register>, _: &Timer, o: &mut Out<Self>) {
        if state.version > 0 {
            let msg = Msg::Replicate {
                version: state.version,
                value: state.value.0.clone(),
            };
            o.broadcast(&self.backups, &msg);
        }
        o.set_timer(Timer::Sync, SYNC);
    }
}
