//! The shared document of protocol 4: an ordered list of values, and the edits peers make to
//! it. Every edit can be undone exactly from the record [`Document::apply`] returns, which is
//! what lets a peer undo journaled operations (seed 003, claim 12) without keeping a copy of
//! the document per stage.

use crate::store::Payload;
use serde::{Deserialize, Serialize};

/// One edit of the document: the data a peer needs to execute an operation again (seed 003,
/// claims 1, 7: "data enabling another computer to execute said current operation").
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub enum Edit<V: Payload> {
    /// Insert `value` before position `at` (at the end when `at` is past it).
    Insert {
        /// The position.
        at: u32,
        /// The value.
        value: V,
    },
    /// Remove the value at position `at` (nothing when there is none).
    Remove {
        /// The position.
        at: u32,
    },
}

/// How to take one executed edit back.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub enum Undo<V: Payload> {
    /// Remove the value inserted at `at`.
    Inserted {
        /// Where it was inserted.
        at: u32,
    },
    /// Put `value` back at `at`.
    Removed {
        /// Where it was.
        at: u32,
        /// The value removed.
        value: V,
    },
    /// The edit changed nothing.
    Nothing,
}

/// The shared document: an ordered list of values.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub struct Document<V: Payload> {
    /// The values, in order.
    pub items: Vec<V>,
}

impl<V: Payload> Default for Document<V> {
    fn default() -> Self {
        Document { items: Vec::new() }
    }
}

impl<V: Payload> Document<V> {
    /// Executes `edit` and returns how to take it back. Positions are clamped, so every edit
    /// executes on every document: the same edits in the same order give the same document
    /// everywhere.
    pub fn apply(&mut self, edit: &Edit<V>) -> Undo<V> {
        match edit {
            Edit::Insert { at, value } => {
                let at = (*at as usize).min(self.items.len());
                self.items.insert(at, value.clone());
                Undo::Inserted { at: at as u32 }
            }
            Edit::Remove { at } => {
                let i = *at as usize;
                if i < self.items.len() {
                    let value = self.items.remove(i);
                    Undo::Removed { at: *at, value }
                } else {
                    Undo::Nothing
                }
            }
        }
    }

    /// Takes back the edit that returned `undo`; it must be the last edit executed and not
    /// yet taken back. A record that does not fit this document (which correct use never
    /// gives; a mutant may) changes nothing, so the checker reports the broken property
    /// instead of stopping.
    pub fn undo(&mut self, undo: &Undo<V>) {
        match undo {
            Undo::Inserted { at } if (*at as usize) < self.items.len() => {
                self.items.remove(*at as usize);
            }
            Undo::Removed { at, value } if (*at as usize) <= self.items.len() => {
                self.items.insert(*at as usize, value.clone());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_edit_undoes_exactly() {
        let mut d: Document<u8> = Document::default();
        let edits = [
            Edit::Insert { at: 5, value: 1 },
            Edit::Insert { at: 0, value: 2 },
            Edit::Remove { at: 1 },
            Edit::Remove { at: 7 },
            Edit::Insert { at: 1, value: 3 },
        ];
        let mut states = vec![d.clone()];
        let mut undos = vec![];
        for e in &edits {
            undos.push(d.apply(e));
            states.push(d.clone());
        }
        assert_eq!(d.items, vec![2, 3]);
        while let Some(u) = undos.pop() {
            states.pop();
            d.undo(&u);
            assert_eq!(Some(&d), states.last());
        }
    }
}
