//! The example's user layer: a ledger of accounts, written against `replicore_model::store::Store`
//! and the runtime's `UserStore` (how its data is kept row by row on disk).
//!
//! A deposit credits an account (opening it), a withdrawal debits one, and a transfer moves
//! an amount between two accounts in one update. An update that would overdraw an account or
//! overflow a balance is refused: it commits as a version that changes nothing, so the
//! client still learns its fate. `postings` counts the updates that moved money.
//!
//! A delta names each touched account's new balance, and the new posting count: deltas are
//! absolute, so composing two keeps the later value of each, and the rows a delta writes
//! follow from the delta alone.

use imbl::OrdMap;
use replicore_model::store::Store;
use replicore_runtime::UserStore;
use serde::{Deserialize, Serialize};

/// The accounts and their balances, in cents.
#[derive(Clone, Debug, Default, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub struct Ledger {
    /// Account → balance in cents.
    pub balances: OrdMap<String, u64>,
    /// How many updates moved money (refused ones do not count).
    pub postings: u64,
}

/// A client's request to the ledger.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub enum LedgerOp {
    /// Credit `account` with `cents`, opening it if it is new.
    Deposit {
        /// The account.
        account: String,
        /// The amount.
        cents: u64,
    },
    /// Debit `account` by `cents`; refused unless it holds that much.
    Withdraw {
        /// The account.
        account: String,
        /// The amount.
        cents: u64,
    },
    /// Move `cents` from `from` to `to`; refused unless `from` holds that much.
    Transfer {
        /// The account debited.
        from: String,
        /// The account credited.
        to: String,
        /// The amount.
        cents: u64,
    },
}

/// A change to the ledger: each touched account's new balance (`None`: the account is
/// gone, which only a diff back to an older state says) and the new posting count.
#[derive(Clone, Debug, Default, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub struct LedgerDelta {
    /// Account → new balance, or `None` for an account that no longer exists.
    pub balances: OrdMap<String, Option<u64>>,
    /// The new posting count, if it changed.
    pub postings: Option<u64>,
}

impl Ledger {
    /// The balance of `account` (0 when it does not exist).
    pub fn balance(&self, account: &str) -> u64 {
        self.balances.get(account).copied().unwrap_or(0)
    }

    /// The new balances `op` makes, or `None` when the ledger refuses it.
    fn postings_of(&self, op: &LedgerOp) -> Option<Vec<(String, u64)>> {
        match op {
            LedgerOp::Deposit { account, cents } => Some(vec![(
                account.clone(),
                self.balance(account).checked_add(*cents)?,
            )]),
            LedgerOp::Withdraw { account, cents } => Some(vec![(
                account.clone(),
                self.balance(account).checked_sub(*cents)?,
            )]),
            LedgerOp::Transfer { from, to, cents } if from == to => {
                // Moving money to the same account changes nothing, but only if it is there.
                let balance = self.balance(from);
                (balance >= *cents).then(|| vec![(from.clone(), balance)])
            }
            LedgerOp::Transfer { from, to, cents } => Some(vec![
                (from.clone(), self.balance(from).checked_sub(*cents)?),
                (to.clone(), self.balance(to).checked_add(*cents)?),
            ]),
        }
    }
}

impl Store for Ledger {
    type Op = LedgerOp;
    type Delta = LedgerDelta;

    fn delta_of(&self, op: &LedgerOp) -> LedgerDelta {
        match self.postings_of(op) {
            None => LedgerDelta::default(),
            Some(new) => LedgerDelta {
                balances: new.into_iter().map(|(a, b)| (a, Some(b))).collect(),
                postings: Some(self.postings.wrapping_add(1)),
            },
        }
    }

    fn apply(&mut self, delta: &LedgerDelta) {
        for (account, balance) in &delta.balances {
            match balance {
                Some(b) => self.balances.insert(account.clone(), *b),
                None => self.balances.remove(account),
            };
        }
        if let Some(p) = delta.postings {
            self.postings = p;
        }
    }

    fn compose(first: &LedgerDelta, then: &LedgerDelta) -> LedgerDelta {
        LedgerDelta {
            balances: then.balances.clone().union(first.balances.clone()),
            postings: then.postings.or(first.postings),
        }
    }

    fn empty_delta() -> LedgerDelta {
        LedgerDelta::default()
    }

    fn diff_from(&self, old: &Ledger) -> LedgerDelta {
        use imbl::ordmap::DiffItem;
        let mut balances = OrdMap::new();
        for item in old.balances.diff(&self.balances) {
            match item {
                DiffItem::Add(a, b) | DiffItem::Update { new: (a, b), .. } => {
                    balances.insert(a.clone(), Some(*b))
                }
                DiffItem::Remove(a, _) => balances.insert(a.clone(), None),
            };
        }
        LedgerDelta {
            balances,
            postings: (self.postings != old.postings).then_some(self.postings),
        }
    }
}

/// The row of an account's balance: this prefix and the account's name.
pub const BALANCE_ROW: &[u8] = b"balance/";
/// The row of the posting count.
pub const POSTINGS_ROW: &[u8] = b"postings";

/// The row key of `account`'s balance.
pub fn balance_row(account: &str) -> Vec<u8> {
    [BALANCE_ROW, account.as_bytes()].concat()
}

impl UserStore for Ledger {
    fn rows(delta: &LedgerDelta) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let accounts = delta
            .balances
            .iter()
            .map(|(a, b)| (balance_row(a), b.map(|b| b.to_be_bytes().to_vec())));
        let postings = delta
            .postings
            .map(|p| (POSTINGS_ROW.to_vec(), Some(p.to_be_bytes().to_vec())));
        accounts.chain(postings).collect()
    }

    fn from_rows(rows: impl Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<Self, String> {
        let mut ledger = Ledger::default();
        for (key, value) in rows {
            let number = <[u8; 8]>::try_from(value.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| format!("row {key:?} holds {} bytes, not 8", value.len()))?;
            if key == POSTINGS_ROW {
                ledger.postings = number;
            } else if let Some(name) = key.strip_prefix(BALANCE_ROW) {
                let name = String::from_utf8(name.to_vec())
                    .map_err(|e| format!("an account name is not UTF-8: {e}"))?;
                ledger.balances.insert(name, number);
            } else {
                return Err(format!("row {key:?} is neither a balance nor the postings"));
            }
        }
        Ok(ledger)
    }

    fn read_row(&self, key: &[u8]) -> Option<Vec<u8>> {
        let number = if key == POSTINGS_ROW {
            self.postings
        } else {
            let name = std::str::from_utf8(key.strip_prefix(BALANCE_ROW)?).ok()?;
            *self.balances.get(name)?
        };
        Some(number.to_be_bytes().to_vec())
    }

    fn key_count(&self) -> u64 {
        self.balances.len() as u64
    }
}

/// Operations on three accounts with small amounts, so that overdrafts and refusals happen
/// often; for the store-law check.
pub fn ops() -> impl replicore_model::laws::proptest::strategy::Strategy<Value = LedgerOp> {
    use replicore_model::laws::proptest::prelude::*;
    let account = prop_oneof![Just("alice"), Just("bob"), Just("carol")].prop_map(String::from);
    let cents = prop_oneof![0u64..8, Just(u64::MAX)];
    prop_oneof![
        (account.clone(), cents.clone())
            .prop_map(|(account, cents)| LedgerOp::Deposit { account, cents }),
        (account.clone(), cents.clone())
            .prop_map(|(account, cents)| LedgerOp::Withdraw { account, cents }),
        (account.clone(), account, cents).prop_map(|(from, to, cents)| LedgerOp::Transfer {
            from,
            to,
            cents
        }),
    ]
}

/// What `op` should make of `ledger`, written on balances directly (not through deltas):
/// the reference the store-law check compares `delta_of` with.
pub fn performs(ledger: &Ledger, op: &LedgerOp) -> Ledger {
    let mut next = ledger.clone();
    let mut set = |account: &str, cents: Option<u64>| match cents {
        Some(c) => {
            next.balances.insert(account.to_string(), c);
            true
        }
        None => false,
    };
    let moved = match op {
        LedgerOp::Deposit { account, cents } => {
            set(account, ledger.balance(account).checked_add(*cents))
        }
        LedgerOp::Withdraw { account, cents } => {
            set(account, ledger.balance(account).checked_sub(*cents))
        }
        LedgerOp::Transfer { from, to, cents } => {
            let debit = ledger.balance(from).checked_sub(*cents);
            let credit = if from == to {
                debit.map(|d| d + cents)
            } else {
                ledger.balance(to).checked_add(*cents)
            };
            match (debit, credit) {
                (Some(d), Some(c)) => {
                    set(from, Some(d));
                    set(to, Some(c))
                }
                _ => false,
            }
        }
    };
    if moved {
        next.postings = ledger.postings.wrapping_add(1);
    }
    next
}
