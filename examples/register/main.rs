//! Bring your own protocol: a replicated register written as Stateright actors here, outside
//! the runtime's crate, run over TCP and redb on `replicore-runtime` with its traces checked
//! by the runtime's conformance replay. `cargo run --release --example register`; the test
//! `tests/register.rs` runs the same scenario.

mod cluster;
mod protocol;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let dir = std::env::temp_dir().join(format!("replicore-register-{}", std::process::id()));
    let result = cluster::scenario(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok((version, replayed)) => {
            println!("three register nodes converged at version {version}; {replayed}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
