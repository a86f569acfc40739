//! A trace file is read by `replicore check-trace`: an arbitrary file must give an error,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replicore_runtime::master_slave::conformance::RecordedStep;
use replicore_runtime::runtime::trace::Header;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = serde_json::from_str::<RecordedStep>(text);
        let _ = serde_json::from_str::<Header>(text);
    }
});
