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

//! The binary is a thin `main` around [`run_args`], which runs the same checker in-process:
//!
//! ```
//! // Protocol 1, one slave, one one-phase update, no crash: every property as expected.
//! let code = replicore_checker::run_args([
//!     "replicore-check", "master-slave", "--slaves", "1", "--script", "1p", "--crashes", "0",
//! ]);
//! assert_eq!(code, 0);
//!
//! // A deliberate bug that the same config refutes: exit 1, a violation.
//! let code = replicore_checker::run_args([
//!     "replicore-check", "master-slave", "--slaves", "1", "--script", "1p", "--crashes", "0",
//!     "--mutant", "ack-without-applying",
//! ]);
//! assert_eq!(code, 1);
//! ```

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

/// Runs `replicore-check` on `args` (the program's name first), printing its report as the
/// binary does, and returns the exit code: 0 every property as expected, 1 a violation or an
/// unreached reachability property, 2 bad usage, 3 stopped before the space was exhausted, 4
/// a `--mutant` that no property refuted (`docs/checking.md`). `--help` and `--version`
/// print their text and give 0.
pub fn run_args<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // clap's own text, to stdout for --help and --version, to stderr otherwise.
            let _ = e.print();
            return u8::try_from(e.exit_code()).unwrap_or(report::EXIT_USAGE as u8);
        }
    };
    let code = match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            report::EXIT_USAGE
        }
    };
    u8::try_from(code).unwrap_or(1)
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
