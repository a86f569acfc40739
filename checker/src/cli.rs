//! The command line: `replicore-check <protocol> [options]` and `replicore-check list`.
//! Every option is documented in `docs/checking.md`.

use crate::runner::Strategy;
use clap::{Args, Parser, Subcommand};
use replicore_model::failover::{Mutant as FailoverMutant, Variant};
use replicore_model::knowledge::{ConflictPolicy, Mutant as KnowledgeMutant, Scenario};
use replicore_model::master_slave::client::ScriptStep;
use replicore_model::master_slave::model::try_script;
use replicore_model::master_slave::{Mutant, NetworkKind};
use replicore_model::stage_sync::{Mutant as StageMutant, Ordering, Scenario as StageScenario};
use replicore_model::store::ModelKv;

/// Model-check replicore's protocols with Stateright.
#[derive(Debug, Parser)]
#[command(name = "replicore-check", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// A protocol to check, or `list`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Protocol 1: master/slave replication by one-phase announcements and two-phase
    /// prepare/commit, repaired by heartbeats.
    #[command(name = "master-slave")]
    MasterSlave {
        /// The model's configuration.
        #[command(flatten)]
        model: MasterSlaveArgs,
        /// How to search.
        #[command(flatten)]
        search: SearchArgs,
    },
    /// Protocol 3: multi-master replicas that sync pairwise by knowledge, with conflict
    /// detection, filters and recovery by full enumeration.
    #[command(name = "knowledge-sync")]
    KnowledgeSync {
        /// The model's configuration.
        #[command(flatten)]
        model: KnowledgeArgs,
        /// How to search.
        #[command(flatten)]
        search: SearchArgs,
    },
    /// Protocol 2: a master approves updates and a designated backup takes over when the
    /// master's lease lapses, with fenced epochs (`--variant seed`: the claim as written).
    #[command(name = "failover")]
    Failover {
        /// The model's configuration.
        #[command(flatten)]
        model: FailoverArgs,
        /// How to search.
        #[command(flatten)]
        search: SearchArgs,
    },
    /// Protocol 4: peers execute operations at once and agree on one order by execution
    /// stage and priority, undoing and redoing operations that lose their stage.
    #[command(name = "stage-sync")]
    StageSync {
        /// The model's configuration.
        #[command(flatten)]
        model: StageArgs,
        /// How to search.
        #[command(flatten)]
        search: SearchArgs,
    },
    /// Print every protocol, property and mutant, one line each with a description.
    List,
    /// The full proof: every config of the protocols' suites, which together reach every
    /// behaviour, and every mutant's refuting config; one line each, exit 0 only if all pass.
    Suite {
        /// Only this protocol's suite (master-slave, failover, knowledge-sync, stage-sync).
        protocol: Option<String>,
        /// The quick tier: smaller bounds that still reach every behaviour (what CI runs).
        #[arg(long)]
        quick: bool,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
        /// Checker threads per run [default: the number of cores].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=256))]
        threads: Option<u64>,
        /// Stop at the first line that fails (for mutation testing).
        #[arg(long)]
        fail_fast: bool,
    },
}

/// The master/slave model's options; an absent option keeps the default config's value.
#[derive(Debug, Args)]
pub struct MasterSlaveArgs {
    /// How many slave servers [default: 2].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=8))]
    pub slaves: Option<u8>,
    /// The client's updates, comma-separated: 1p (one-phase), 2p (two-phase), rb (two-phase,
    /// rolled back at once), each optionally with its operation: `:K=V` puts V at key K,
    /// `:-K` deletes key K (default: update i puts i+1 at key i%2) [default: 1p,2p,rb].
    #[arg(long, value_name = "LIST", value_parser = parse_script)]
    pub script: Option<Script>,
    /// How many clients run the script concurrently; 3 or more let two-phase requests share
    /// one round (group commit) [default: 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=4))]
    pub clients: Option<u8>,
    /// The network, comma-separated: `lossy` plus one of duplicating, nonduplicating,
    /// ordered [default: lossy,duplicating].
    #[arg(long, value_name = "LIST", value_parser = parse_network)]
    pub network: Option<NetworkSpec>,
    /// Each client writes keys of its own (shifted by 16 per client) instead of the same
    /// keys as the others.
    #[arg(long)]
    pub own_keys: bool,
    /// How many servers may be down at the same time [default: 1].
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u8).range(0..=9))]
    pub crashes: Option<u8>,
    /// How many committed steps the master remembers for deltas [default: 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=16))]
    pub history: Option<u8>,
    /// How many storage faults a run may have: a slave that is down loses its saved state or
    /// finds it damaged; needs --crashes 1 or more [default: 0].
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u8).range(0..=4))]
    pub disk_faults: Option<u8>,
    /// The master's store may be lost too, within --disk-faults: while it is down and some
    /// slave holds everything it saved; it rebuilds from its slaves.
    #[arg(long)]
    pub master_faults: bool,
    /// Check a deliberately broken variant (see `replicore-check list`).
    #[arg(long, value_name = "NAME", value_parser = parse_mutant)]
    pub mutant: Option<Mutant>,
}

/// The knowledge-sync model's options; an absent option keeps the scenario's value.
#[derive(Debug, Args)]
pub struct KnowledgeArgs {
    /// The starting point: conflict, recovery, filtered or converge [default: conflict].
    #[arg(long, value_name = "NAME", value_parser = parse_scenario)]
    pub scenario: Option<Scenario>,
    /// How a destination resolves a conflict: source-wins, destination-wins or keep-both
    /// [default: destination-wins].
    #[arg(long, value_name = "NAME", value_parser = parse_policy)]
    pub policy: Option<ConflictPolicy>,
    /// How many syncs each replica may pull [default: per scenario].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(0..=4))]
    pub sessions: Option<u64>,
    /// The network: duplicating, or lossy,duplicating [default: duplicating].
    #[arg(long, value_name = "LIST", value_parser = parse_knowledge_network)]
    pub network: Option<Lossy>,
    /// How many replicas may be down at the same time [default: per scenario].
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u8).range(0..=3))]
    pub crashes: Option<u8>,
    /// How many stores a run may lose: a replica that is down loses its store and is created
    /// again, as a new incarnation; needs --crashes 1 or more [default: 0].
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u8).range(0..=4))]
    pub disk_faults: Option<u8>,
    /// Timed pulls ask for two-way syncs.
    #[arg(long)]
    pub two_way: bool,
    /// Replicas advertise their edits to every other replica.
    #[arg(long)]
    pub advertise: bool,
    /// The application may cancel an open sync.
    #[arg(long)]
    pub cancel: bool,
    /// Check a deliberately broken variant (see `replicore-check list`).
    #[arg(long, value_name = "NAME", value_parser = parse_knowledge_mutant)]
    pub mutant: Option<KnowledgeMutant>,
}

/// The failover model's options; an absent option keeps the default config's value.
#[derive(Debug, Args)]
pub struct FailoverArgs {
    /// seed (the claim as written) or fenced (the shipped scheme) [default: fenced].
    #[arg(long, value_name = "NAME", value_parser = parse_variant)]
    pub variant: Option<Variant>,
    /// The client's operations, comma-separated: wN (write N to key 0), d (delete key 0),
    /// r (read key 0) [default: w1,w2].
    #[arg(long, value_name = "LIST", value_parser = parse_failover_script)]
    pub script: Option<FailoverScript>,
    /// Further slaves beside the backup [default: 0].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=2))]
    pub slaves: Option<u8>,
    /// The network: duplicating, or lossy,duplicating [default: duplicating].
    #[arg(long, value_name = "LIST", value_parser = parse_knowledge_network)]
    pub network: Option<Lossy>,
    /// How many servers may be down at the same time [default: 1].
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u8).range(0..=4))]
    pub crashes: Option<u8>,
    /// Check a deliberately broken variant of the fenced scheme (see `replicore-check list`).
    #[arg(long, value_name = "NAME", value_parser = parse_failover_mutant)]
    pub mutant: Option<FailoverMutant>,
}

/// A parsed failover `--script`.
#[derive(Clone, Debug)]
pub struct FailoverScript(pub Vec<replicore_model::failover::model::ModelOp>);

fn parse_failover_script(s: &str) -> Result<FailoverScript, String> {
    let ops = replicore_model::failover::model::try_script(s)?;
    if ops.is_empty() || ops.len() > 4 {
        return Err("the script needs 1 to 4 operations (e.g. w1,w2,r)".into());
    }
    Ok(FailoverScript(ops))
}

fn parse_variant(s: &str) -> Result<Variant, String> {
    Variant::from_name(s).ok_or_else(|| format!("unknown variant '{s}' (expected seed or fenced)"))
}

fn parse_failover_mutant(s: &str) -> Result<FailoverMutant, String> {
    FailoverMutant::from_name(s).ok_or_else(|| {
        let names: Vec<_> = FailoverMutant::ALL.iter().map(|m| m.name()).collect();
        format!(
            "unknown mutant '{s}' (expected one of: {})",
            names.join(", ")
        )
    })
}

/// The stage-sync model's options; an absent option keeps the scenario's value.
#[derive(Debug, Args)]
pub struct StageArgs {
    /// Who edits what: race, chain, three, starve or remove [default: race].
    #[arg(long, value_name = "NAME", value_parser = parse_stage_scenario)]
    pub scenario: Option<StageScenario>,
    /// The priority operations carry: fixed (the seed: the peer's) or aged (older first,
    /// then the peer's) [default: aged].
    #[arg(long, value_name = "NAME", value_parser = parse_ordering)]
    pub ordering: Option<Ordering>,
    /// Reports and the stability line: on or off [default: off for three, else on].
    #[arg(long, value_name = "ON|OFF", value_parser = parse_on_off)]
    pub stability: Option<OnOff>,
    /// The network: duplicating, or lossy,duplicating [default: duplicating].
    #[arg(long, value_name = "LIST", value_parser = parse_stage_network)]
    pub network: Option<Lossy>,
    /// How many peers may be down at the same time [default: 0].
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u8).range(0..=3))]
    pub crashes: Option<u8>,
    /// Check a deliberately broken variant (see `replicore-check list`).
    #[arg(long, value_name = "NAME", value_parser = parse_stage_mutant)]
    pub mutant: Option<StageMutant>,
}

/// A parsed `on`/`off`.
#[derive(Clone, Copy, Debug)]
pub struct OnOff(pub bool);

fn parse_on_off(s: &str) -> Result<OnOff, String> {
    match s {
        "on" => Ok(OnOff(true)),
        "off" => Ok(OnOff(false)),
        _ => Err(format!("expected on or off, not '{s}'")),
    }
}

fn parse_stage_scenario(s: &str) -> Result<StageScenario, String> {
    StageScenario::from_name(s).ok_or_else(|| {
        let names: Vec<_> = StageScenario::ALL.iter().map(|m| m.name()).collect();
        format!(
            "unknown scenario '{s}' (expected one of: {})",
            names.join(", ")
        )
    })
}

fn parse_ordering(s: &str) -> Result<Ordering, String> {
    Ordering::from_name(s)
        .ok_or_else(|| format!("unknown ordering '{s}' (expected one of: fixed, aged)"))
}

fn parse_stage_network(s: &str) -> Result<Lossy, String> {
    match parse_network(s)? {
        NetworkSpec {
            kind: NetworkKind::UnorderedDuplicating,
            lossy,
        } => Ok(Lossy(lossy)),
        _ => Err("stage-sync checks the duplicating network only (with or without `lossy`)".into()),
    }
}

fn parse_stage_mutant(s: &str) -> Result<StageMutant, String> {
    StageMutant::from_name(s).ok_or_else(|| {
        let names: Vec<_> = StageMutant::ALL.iter().map(|m| m.name()).collect();
        format!(
            "unknown mutant '{s}' (expected one of: {})",
            names.join(", ")
        )
    })
}

/// Whether the knowledge-sync network loses messages.
#[derive(Clone, Copy, Debug)]
pub struct Lossy(pub bool);

fn parse_scenario(s: &str) -> Result<Scenario, String> {
    Scenario::from_name(s).ok_or_else(|| {
        let names: Vec<_> = Scenario::ALL.iter().map(|m| m.name()).collect();
        format!(
            "unknown scenario '{s}' (expected one of: {})",
            names.join(", ")
        )
    })
}

fn parse_policy(s: &str) -> Result<ConflictPolicy, String> {
    ConflictPolicy::from_name(s).ok_or_else(|| {
        let names: Vec<_> = ConflictPolicy::ALL.iter().map(|m| m.name()).collect();
        format!(
            "unknown policy '{s}' (expected one of: {})",
            names.join(", ")
        )
    })
}

fn parse_knowledge_network(s: &str) -> Result<Lossy, String> {
    match parse_network(s)? {
        NetworkSpec {
            kind: NetworkKind::UnorderedDuplicating,
            lossy,
        } => Ok(Lossy(lossy)),
        _ => Err(
            "knowledge-sync and failover check the duplicating network only (with or without `lossy`)".into(),
        ),
    }
}

fn parse_knowledge_mutant(s: &str) -> Result<KnowledgeMutant, String> {
    KnowledgeMutant::from_name(s).ok_or_else(|| {
        let names: Vec<_> = KnowledgeMutant::ALL.iter().map(|m| m.name()).collect();
        format!(
            "unknown mutant '{s}' (expected one of: {})",
            names.join(", ")
        )
    })
}

/// The search options, shared by every protocol.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// dfs (little memory), bfs (shortest traces, the frontier's states in memory), or
    /// simulation (random walks, never a proof).
    #[arg(long, value_enum, default_value = "dfs")]
    pub strategy: Strategy,
    /// The simulation's seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Do not expand states at this depth (the initial state has depth 1); the run is partial
    /// (exit 3) if any state was cut.
    #[arg(long, value_name = "D", value_parser = clap::value_parser!(u64).range(1..))]
    pub depth: Option<u64>,
    /// Stop after SECS seconds; the run is partial (exit 3) if it had not finished.
    /// A simulation without it runs 30 s.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
    /// Checker threads [default: the number of cores]: replicore's explorer uses them depth
    /// first (breadth first runs on one), Stateright's checker for `Eventually` configs too.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=256))]
    pub threads: Option<u64>,
    /// Reduce by the protocol's symmetry (on by default).
    #[arg(long, overrides_with = "no_symmetry")]
    pub symmetry: bool,
    /// Do not reduce by symmetry.
    #[arg(long, overrides_with = "symmetry")]
    pub no_symmetry: bool,
    /// Print one JSON document (schema replicore-check/1) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Serve the Stateright Explorer on ADDR instead of checking; blocks until killed.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:3000")]
    pub explore: Option<String>,
    /// Print the trace of a path of action indices (as printed with a counterexample)
    /// instead of checking.
    #[arg(long, value_name = "PATH", conflicts_with = "explore")]
    pub replay: Option<String>,
    /// Explore the config as given, even where a smaller space decides the same verdicts
    /// (master-slave: the loss-free space of a lossy duplicating network).
    #[arg(long)]
    pub no_reduction: bool,
    /// Skip the liveness graph check.
    #[arg(long)]
    pub no_graph: bool,
    /// Check the assumptions of the search reductions on every generated state (master-slave;
    /// slow, for small configs): dead messages are no-ops and stay dead, slaves are symmetric,
    /// the bits the fingerprint leaves out are read by nothing else, and every merge of two
    /// states is a renaming.
    #[arg(long)]
    pub audit: bool,
    /// Stop the liveness graph check after this many unique states (then partial, exit 3).
    #[arg(long, value_name = "N", default_value_t = 20_000_000)]
    pub graph_max_states: usize,
}

/// The search options a command line of `flags` gives (for runs the checker makes itself,
/// like the suite's).
pub fn search_args(flags: &[&str]) -> SearchArgs {
    use clap::{Args as _, FromArgMatches as _};
    let cmd = SearchArgs::augment_args(clap::Command::new("search"));
    let matches = cmd
        .try_get_matches_from(std::iter::once("search").chain(flags.iter().copied()))
        .expect("built-in search flags parse");
    SearchArgs::from_arg_matches(&matches).expect("built-in search flags parse")
}

impl SearchArgs {
    /// Whether symmetry is on: on unless `--no-symmetry`.
    pub fn symmetry_on(&self) -> bool {
        !self.no_symmetry
    }
}

/// A parsed `--script`.
#[derive(Clone, Debug)]
pub struct Script(pub Vec<ScriptStep<ModelKv>>);

/// A parsed `--network`.
#[derive(Clone, Copy, Debug)]
pub struct NetworkSpec {
    /// Duplicating, non-duplicating or ordered.
    pub kind: NetworkKind,
    /// Whether messages may be lost.
    pub lossy: bool,
}

fn parse_script(s: &str) -> Result<Script, String> {
    let steps = try_script(s)?;
    if steps.is_empty() {
        return Err("the script is empty (expected e.g. 1p,2p,rb)".into());
    }
    Ok(Script(steps))
}

fn parse_network(s: &str) -> Result<NetworkSpec, String> {
    let mut lossy = false;
    let mut kind = None;
    for item in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if item == "lossy" {
            lossy = true;
        } else {
            let k: NetworkKind = item.parse()?;
            if kind.replace(k).is_some() {
                return Err("name one of duplicating, nonduplicating, ordered, not several".into());
            }
        }
    }
    let Some(kind) = kind else {
        return Err("name one of duplicating, nonduplicating, ordered (plus `lossy` if messages may be lost)".into());
    };
    Ok(NetworkSpec { kind, lossy })
}

fn parse_mutant(s: &str) -> Result<Mutant, String> {
    Mutant::from_name(s).ok_or_else(|| {
        let names: Vec<_> = Mutant::ALL.iter().map(|m| m.name()).collect();
        format!(
            "unknown mutant '{s}' (expected one of: {})",
            names.join(", ")
        )
    })
}
