//! `replicore-check`: the command line of [`replicore_checker`]; see its crate docs and
//! `docs/checking.md`.

use std::process::ExitCode;

// A search allocates and frees a state per step: mimalloc takes a tenth off the default
// config's time against the system allocator (docs/checking.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    ExitCode::from(replicore_checker::run_args(std::env::args_os()))
}
