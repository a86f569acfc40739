//! What the chaos tests of protocols 2–4 share: the seeds, and running each seed bounded,
//! one summary line per seed.

use std::future::Future;
use std::time::Duration;

/// The seeds a chaos test runs: `REPLICORE_CHAOS_SEEDS` (comma-separated), or the CI set.
pub fn chaos_seeds() -> Vec<u64> {
    match std::env::var("REPLICORE_CHAOS_SEEDS") {
        Ok(s) => s
            .split(',')
            .map(|x| {
                x.trim()
                    .parse()
                    .expect("REPLICORE_CHAOS_SEEDS: comma-separated u64s")
            })
            .collect(),
        Err(_) => vec![1, 2],
    }
}

/// Runs `run(seed)` for every seed, each within `bound`, printing its summary line (or why
/// it failed); fails naming the failed seeds and how to rerun one (`test`: the test file).
pub async fn run_seeds<F, Fut>(name: &str, test: &str, bound: Duration, run: F)
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    let mut failed = Vec::new();
    for seed in chaos_seeds() {
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(bound, run(seed))
            .await
            .unwrap_or_else(|_| Err(format!("not done within {bound:?}")));
        match outcome {
            Ok(line) => eprintln!("{line} ({:.1} s)", started.elapsed().as_secs_f64()),
            Err(e) => {
                eprintln!("{name} seed={seed}: FAILED: {e}");
                failed.push(seed);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "seeds {failed:?} failed; reproduce one with REPLICORE_CHAOS_SEEDS=<seed> \
         cargo test --release -p replicore-runtime --test {test} chaos"
    );
}
