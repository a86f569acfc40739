//! `replicore-check`: model-check replicore's protocols from the command line.
//!
//! ```text
//!   options ──▶ cli ──▶ protocol module ──▶ model's *Config::into_model()
//!                           │                    │
//!                           ▼                    ▼
//!                        report ◀── runner (Stateright bfs/dfs/simulation, progress)
//! ```
//!
//! The checker holds no protocol logic and no property: it asks `replicore-model` for both,
//! picks the search, tells counterexamples in words and maps the verdict to an exit code:
//! 0 every property as expected, 1 a violation or an unreached reachability property,
//! 2 bad usage, 3 stopped before the space was exhausted, 4 a `--mutant` that no property
//! refuted. `docs/checking.md` documents it.

mod cli;
mod explorer;
mod failover;
mod knowledge;
mod master_slave;
mod protocol;
mod report;
mod runner;
mod stage_sync;
mod suite;

use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;

// A search allocates and frees a state per step: mimalloc takes a tenth off the default
// config's time against the system allocator (docs/checking.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // clap prints its own usage errors and exits 2; --help and --version exit 0.
    let cli = Cli::parse();
    let code = match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            report::EXIT_USAGE
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn run(cli: &Cli) -> anyhow::Result<i32> {
    match &cli.command {
        Command::List => {
            emit(&protocol::list());
            Ok(report::EXIT_OK)
        }
        Command::MasterSlave { model, search } => master_slave::main(model, search),
        Command::KnowledgeSync { model, search } => knowledge::main(model, search),
        Command::Failover { model, search } => failover::main(model, search),
        Command::StageSync { model, search } => stage_sync::main(model, search),
        Command::Suite {
            protocol,
            quick,
            json,
            threads,
            fail_fast,
        } => suite::main(protocol.as_deref(), *quick, *json, *threads, *fail_fast),
    }
}

/// Writes to stdout; a closed pipe (`replicore-check ... | head`) is not an error.
pub fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}
