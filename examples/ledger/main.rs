//! Bring your own store: protocol 1 (master/slave replication) embedded with a user layer of
//! its own, a ledger of accounts ([`store::Ledger`]) instead of the shipped key-value map.
//! The ledger is first run through the store-law checker, then replicated by a master and
//! two slaves in this process on 127.0.0.1, written through a client and read back from a
//! slave. `cargo run --release --example ledger`; the test `tests/ledger.rs` runs the same,
//! and model-checks protocol 1 with the ledger plugged in. `docs/embedding.md` walks
//! through it.

mod cluster;
mod store;

use replicore_model::laws::check_store_laws_against;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    if let Err(e) = check_store_laws_against(store::ops(), 512, store::performs) {
        eprintln!("{e}");
        return std::process::ExitCode::FAILURE;
    }
    println!("the ledger keeps every store law (512 cases)");

    let dir = std::env::temp_dir().join(format!("replicore-ledger-{}", std::process::id()));
    let result = cluster::scenario(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(outcome) => {
            println!("updates committed as versions {:?}", outcome.versions);
            for (account, cents) in &outcome.master.balances {
                println!("  {account}: {cents} cents");
            }
            for (i, (version, data)) in outcome.slaves.iter().enumerate() {
                let same = if *data == outcome.master {
                    "same as"
                } else {
                    "DIFFERENT from"
                };
                println!("slave {} at version {version}: {same} the master", i + 1);
            }
            let (at, carol) = outcome.carol_on_slave;
            println!("carol's balance read from slave 1 at version {at}: {carol:?}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
