//! Fault injection between the driver and the connections: per-link message loss,
//! duplication, delay and reordering drawn from a seeded RNG, and partitions that open and
//! heal on a schedule. Off unless a node's config carries a [`FaultPlan`].
//!
//! ```text
//!   Driver ──Send──▶ Router::send ──▶ FaultLayer::decide(dst) ──▶ drop
//!                                                        ├──▶ deliver now
//!                                                        └──▶ deliver after a delay (a task)
//!                                                             (twice when duplicated)
//!                                    ──▶ connection queue (TCP or the in-memory network)
//! ```
//!
//! The layer sits in the sender's [`crate::runtime::driver::Router`], so it works unchanged over TCP
//! and over `crate::runtime::memnet`. It only touches frames between nodes (ids `0..=slaves`);
//! clients are outside the fault model (they resend on their own). Each node applies the
//! plan to the frames it sends, so a partition that cuts `a` from `b` drops `a → b` at `a` and
//! `b → a` at `b`; every node reads the same schedule.
//!
//! These are the faults the model assumes (SPEC "Fault model"): a message may be lost,
//! duplicated or delivered out of order. Crashes are injected by the test harness (SIGKILL
//! and restart from the data directory), not here.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The most frames held back by delays at once; beyond it frames go out undelayed, so the
/// layer never holds an unbounded backlog.
pub const DELAYED_FRAMES_MAX: usize = 4096;

/// The longest delay a plan may ask for, in milliseconds.
pub const DELAY_MS_MAX: u64 = 60_000;

fn default_reorder_ms() -> u64 {
    50
}

/// What to inject, and when. Written in the `[faults]` table of a cluster file:
///
/// ```toml
/// [faults]
/// seed = 7
/// loss = 0.05            # probability that a frame is lost
/// duplicate = 0.02       # probability that a frame is delivered twice
/// reorder = 0.05         # probability that a frame is held back so later ones pass it
/// reorder_ms = 50        # how long a reordered frame is held back, at most
/// delay_ms = [0, 10]     # every frame is delayed uniformly within this range
/// epoch_unix_ms = 1700000000000   # origin of the partition schedule (wall clock)
///
/// [[faults.partitions]]  # from 2 s to 4 s after the origin, node 0 is cut off
/// start_ms = 2000
/// end_ms = 4000
/// isolate = [0]
///
/// [[faults.links]]       # the link 0 → 2 loses a third of its frames
/// from = 0
/// to = 2
/// loss = 0.33
/// ```
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultPlan {
    /// Seeds every draw (mixed with the node id and [`FaultLayer::reseed`]).
    pub seed: u64,
    /// The probability that a frame is lost.
    #[serde(default)]
    pub loss: f64,
    /// The probability that a frame is delivered twice.
    #[serde(default)]
    pub duplicate: f64,
    /// The probability that a frame is held back (up to `reorder_ms`) so later frames pass it.
    #[serde(default)]
    pub reorder: f64,
    /// Every frame's delay is drawn uniformly in `[min, max]` milliseconds.
    #[serde(default)]
    pub delay_ms: [u64; 2],
    /// How long a reordered frame is held back, at most, in milliseconds.
    #[serde(default = "default_reorder_ms")]
    pub reorder_ms: u64,
    /// The origin of the partition schedule in milliseconds since the UNIX epoch, shared by
    /// every process of a cluster. `None`: the moment the node started (one process, or a
    /// paused tokio clock).
    #[serde(default)]
    pub epoch_unix_ms: Option<u64>,
    /// The partition schedule.
    #[serde(default)]
    pub partitions: Vec<Partition>,
    /// Per-link overrides of the rates.
    #[serde(default)]
    pub links: Vec<LinkRates>,
}

/// The rates of one directed link, replacing the plan's (fields left out are 0).
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LinkRates {
    /// The sending node.
    pub from: u64,
    /// The receiving node.
    pub to: u64,
    /// The probability that a frame is lost.
    #[serde(default)]
    pub loss: f64,
    /// The probability that a frame is delivered twice.
    #[serde(default)]
    pub duplicate: f64,
    /// The probability that a frame is held back.
    #[serde(default)]
    pub reorder: f64,
    /// The delay range in milliseconds.
    #[serde(default)]
    pub delay_ms: [u64; 2],
}

/// The rates that apply to one link.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Rates {
    loss: f64,
    duplicate: f64,
    reorder: f64,
    delay_ms: [u64; 2],
}

/// A partition: from `start_ms` to `end_ms` after the schedule's origin, every link between a
/// node of `isolate` and a node outside it loses every frame, both ways.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// When it opens, in milliseconds after the origin.
    pub start_ms: u64,
    /// When it heals, in milliseconds after the origin.
    pub end_ms: u64,
    /// The nodes cut off from the others.
    pub isolate: Vec<u64>,
}

impl Rates {
    fn validate(&self, what: &str) -> Result<(), String> {
        for (name, p) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!(
                    "{what}: {name} = {p} is not a probability in [0, 1]"
                ));
            }
        }
        let [lo, hi] = self.delay_ms;
        if lo > hi || hi > DELAY_MS_MAX {
            return Err(format!(
                "{what}: delay_ms = [{lo}, {hi}] must be a range with min <= max <= {DELAY_MS_MAX}"
            ));
        }
        Ok(())
    }
}

impl FaultPlan {
    /// Checks the plan; the error is one line naming the bad field.
    pub fn validate(&self) -> Result<(), String> {
        self.base_rates().validate("faults")?;
        if self.reorder_ms > DELAY_MS_MAX {
            return Err(format!(
                "faults: reorder_ms = {} exceeds {DELAY_MS_MAX}",
                self.reorder_ms
            ));
        }
        for l in &self.links {
            self.rates(l.from, l.to)
                .validate(&format!("faults link {} -> {}", l.from, l.to))?;
        }
        for p in &self.partitions {
            if p.start_ms >= p.end_ms {
                return Err(format!(
                    "faults partition [{}, {}): start_ms must be below end_ms",
                    p.start_ms, p.end_ms
                ));
            }
        }
        Ok(())
    }

    fn rates(&self, from: u64, to: u64) -> Rates {
        match self.links.iter().find(|l| l.from == from && l.to == to) {
            Some(l) => Rates {
                loss: l.loss,
                duplicate: l.duplicate,
                reorder: l.reorder,
                delay_ms: l.delay_ms,
            },
            None => self.base_rates(),
        }
    }

    fn base_rates(&self) -> Rates {
        Rates {
            loss: self.loss,
            duplicate: self.duplicate,
            reorder: self.reorder,
            delay_ms: self.delay_ms,
        }
    }

    /// Whether the link `from → to` is cut at `at_ms` after the origin.
    pub fn cut(&self, from: u64, to: u64, at_ms: u64) -> bool {
        self.partitions.iter().any(|p| {
            (p.start_ms..p.end_ms).contains(&at_ms)
                && p.isolate.contains(&from) != p.isolate.contains(&to)
        })
    }
}

/// How many frames the layer handled and what it did to them.
#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
pub struct FaultCounts {
    /// Frames between nodes offered to the layer.
    pub frames: u64,
    /// Frames lost at random.
    pub dropped: u64,
    /// Frames lost to a partition.
    pub partitioned: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Frames delivered after a delay.
    pub delayed: u64,
    /// Frames held back so that later ones could pass them.
    pub reordered: u64,
}

impl std::ops::AddAssign for FaultCounts {
    fn add_assign(&mut self, o: Self) {
        self.frames += o.frames;
        self.dropped += o.dropped;
        self.partitioned += o.partitioned;
        self.duplicated += o.duplicated;
        self.delayed += o.delayed;
        self.reordered += o.reordered;
    }
}

#[derive(Default)]
struct Counters {
    frames: AtomicU64,
    dropped: AtomicU64,
    partitioned: AtomicU64,
    duplicated: AtomicU64,
    delayed: AtomicU64,
    reordered: AtomicU64,
}

/// What becomes of one frame.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Fate {
    /// It is lost.
    Drop,
    /// It is delivered once per entry, after that delay.
    Deliver(Vec<Duration>),
}

enum Origin {
    Wall(u64),
    Tokio(tokio::time::Instant),
}

/// The fault layer of one node: its plan, its RNG and its counters.
pub struct FaultLayer {
    plan: FaultPlan,
    me: u64,
    max_node: u64,
    origin: Origin,
    rng: Mutex<StdRng>,
    counters: Counters,
    delayed_now: AtomicUsize,
}

impl std::fmt::Debug for FaultLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultLayer")
            .field("me", &self.me)
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

fn mix(seed: u64, salt: u64) -> u64 {
    // splitmix64 of the pair: nearby seeds and salts give unrelated streams.
    let mut z = seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl FaultLayer {
    /// The layer of node `me` in a cluster whose node ids are `0..=max_node`. Call from a
    /// tokio context when the plan has no wall-clock origin.
    pub fn new(plan: FaultPlan, me: u64, max_node: u64) -> Self {
        let origin = match plan.epoch_unix_ms {
            Some(ms) => Origin::Wall(ms),
            None => Origin::Tokio(tokio::time::Instant::now()),
        };
        let rng = StdRng::seed_from_u64(mix(plan.seed, me));
        FaultLayer {
            plan,
            me,
            max_node,
            origin,
            rng: Mutex::new(rng),
            counters: Counters::default(),
            delayed_now: AtomicUsize::new(0),
        }
    }

    /// Reseeds the RNG with `salt` mixed in (e.g. the version a restarted node resumed from),
    /// so that successive incarnations do not replay the same draws.
    pub fn reseed(&self, salt: u64) {
        *self.lock() = StdRng::seed_from_u64(mix(mix(self.plan.seed, self.me), salt));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StdRng> {
        // Nothing panics while holding it; recover the RNG if something did.
        self.rng.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The plan.
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// Whether frames to `dst` go through the layer: links between nodes only.
    pub fn applies(&self, dst: u64) -> bool {
        dst <= self.max_node && dst != self.me
    }

    /// Milliseconds since the schedule's origin (0 before it).
    pub fn elapsed_ms(&self) -> u64 {
        match self.origin {
            Origin::Wall(epoch) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                now.saturating_sub(epoch)
            }
            Origin::Tokio(start) => start.elapsed().as_millis() as u64,
        }
    }

    /// Decides the fate of one frame to `dst`.
    pub fn decide(&self, dst: u64) -> Fate {
        let c = &self.counters;
        c.frames.fetch_add(1, Ordering::Relaxed);
        if self.plan.cut(self.me, dst, self.elapsed_ms()) {
            c.partitioned.fetch_add(1, Ordering::Relaxed);
            return Fate::Drop;
        }
        let rates = self.plan.rates(self.me, dst);
        let mut rng = self.lock();
        if rng.random_bool(rates.loss) {
            c.dropped.fetch_add(1, Ordering::Relaxed);
            return Fate::Drop;
        }
        let copies = if rng.random_bool(rates.duplicate) {
            c.duplicated.fetch_add(1, Ordering::Relaxed);
            2
        } else {
            1
        };
        let delays = (0..copies)
            .map(|_| {
                let [lo, hi] = rates.delay_ms;
                let mut ms = rng.random_range(lo..=hi);
                if rng.random_bool(rates.reorder) {
                    c.reordered.fetch_add(1, Ordering::Relaxed);
                    ms += rng.random_range(1..=self.plan.reorder_ms.max(1));
                }
                if ms > 0 {
                    c.delayed.fetch_add(1, Ordering::Relaxed);
                }
                Duration::from_millis(ms)
            })
            .collect();
        Fate::Deliver(delays)
    }

    /// Takes a slot for a delayed frame; `false` when [`DELAYED_FRAMES_MAX`] are held.
    pub(crate) fn hold(&self) -> bool {
        self.delayed_now
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < DELAYED_FRAMES_MAX).then_some(n + 1)
            })
            .is_ok()
    }

    /// Releases a slot taken by [`FaultLayer::hold`].
    pub(crate) fn release(&self) {
        self.delayed_now.fetch_sub(1, Ordering::AcqRel);
    }

    /// The counters so far.
    pub fn counts(&self) -> FaultCounts {
        let c = &self.counters;
        FaultCounts {
            frames: c.frames.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            partitioned: c.partitioned.load(Ordering::Relaxed),
            duplicated: c.duplicated.load(Ordering::Relaxed),
            delayed: c.delayed.load(Ordering::Relaxed),
            reordered: c.reordered.load(Ordering::Relaxed),
        }
    }
}

/// The file in a trace directory where node `node`'s incarnation `incarnation` keeps its
/// fault counters (rewritten while it runs).
pub fn counts_file_name(node: u64, incarnation: u32) -> String {
    format!("faults-{node}.{incarnation}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> FaultPlan {
        let p: FaultPlan = toml::from_str(text).unwrap();
        p.validate().unwrap();
        p
    }

    #[test]
    fn parses_the_documented_plan() {
        let p = plan(
            "seed = 7\nloss = 0.05\nduplicate = 0.02\nreorder = 0.05\ndelay_ms = [0, 10]\n\
             epoch_unix_ms = 1700000000000\n\
             [[partitions]]\nstart_ms = 2000\nend_ms = 4000\nisolate = [0]\n\
             [[links]]\nfrom = 0\nto = 2\nloss = 0.33\n",
        );
        assert_eq!(p.loss, 0.05);
        assert_eq!(p.reorder_ms, 50);
        assert_eq!(p.rates(0, 2).loss, 0.33);
        assert_eq!(p.rates(2, 0).loss, 0.05);
        assert!(p.cut(0, 1, 2000) && p.cut(1, 0, 3999));
        assert!(!p.cut(0, 1, 4000) && !p.cut(1, 2, 3000) && !p.cut(0, 1, 1999));
    }

    #[test]
    fn bad_plans_are_refused_with_one_line() {
        for (text, needle) in [
            ("seed = 1\nloss = 1.5", "loss = 1.5"),
            ("seed = 1\ndelay_ms = [9, 3]", "delay_ms"),
            (
                "seed = 1\n[[partitions]]\nstart_ms = 5\nend_ms = 5\nisolate = [1]",
                "start_ms",
            ),
            (
                "seed = 1\n[[links]]\nfrom = 0\nto = 1\nduplicate = -1.0",
                "link 0 -> 1",
            ),
        ] {
            let p: FaultPlan = toml::from_str(text).unwrap();
            let e = p.validate().unwrap_err();
            assert!(e.contains(needle) && !e.contains('\n'), "{e}");
        }
        assert!(toml::from_str::<FaultPlan>("seed = 1\nbogus = 2").is_err());
    }

    #[tokio::test]
    async fn fates_follow_the_rates_and_the_seed() {
        let p = plan("seed = 3\nloss = 0.2\nduplicate = 0.1\nreorder = 0.1\ndelay_ms = [0, 0]");
        let a = FaultLayer::new(p.clone(), 1, 3);
        let b = FaultLayer::new(p.clone(), 1, 3);
        let fates: Vec<Fate> = (0..2000).map(|_| a.decide(0)).collect();
        let again: Vec<Fate> = (0..2000).map(|_| b.decide(0)).collect();
        assert_eq!(fates, again, "same seed and node, same fates");
        let c = a.counts();
        assert_eq!(c.frames, 2000);
        // 20 % loss, 10 % duplication and reordering: far from 0 and from all.
        assert!((300..500).contains(&c.dropped), "{c:?}");
        assert!((100..260).contains(&c.duplicated), "{c:?}");
        assert!((100..300).contains(&c.reordered), "{c:?}");
        assert_eq!(
            c.delayed, c.reordered,
            "only reordered frames are delayed here"
        );
        let other = FaultLayer::new(p, 2, 3);
        let theirs: Vec<Fate> = (0..2000).map(|_| other.decide(0)).collect();
        assert_ne!(fates, theirs, "each node draws its own stream");
    }

    #[tokio::test]
    async fn only_links_between_nodes_are_touched() {
        let l = FaultLayer::new(plan("seed = 1\nloss = 1.0"), 0, 3);
        assert!(l.applies(3) && !l.applies(0) && !l.applies(4) && !l.applies(1 << 32));
        assert_eq!(l.decide(1), Fate::Drop);
    }
}
