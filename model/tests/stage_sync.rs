//! Model checking of protocol 4 under `cargo test`: every scenario explored to the end with
//! every property as expected and the liveness graph free of traps, the state counts pinned,
//! every mutant refuted, and the seed's fixed priorities shown to starve.

use replicore_explore::{Exploration, Liveness, Options, Order, explore};
use replicore_model::stage_sync::model::{
    StageModel, canonical_fingerprint, converged_goal, fair, props,
};
use replicore_model::stage_sync::{Mutant, Ordering, Scenario, StageConfig};
use stateright::{Expectation, Model};

/// Explores `cfg` to the end (breadth first) with the liveness graph.
fn run(cfg: &StageConfig) -> (StageModel, Exploration<StageModel>) {
    let model = cfg.clone().into_model();
    let goal = converged_goal(cfg);
    let mut options = Options::new(&canonical_fingerprint);
    options.order = Order::BreadthFirst;
    options.liveness = Some(Liveness {
        fair: &fair,
        goal: &goal,
        bound_reaches_goal: false,
    });
    let run = explore(&model, options);
    assert!(run.cut.is_none(), "{cfg}: not exhausted");
    (model, run)
}

/// The names of the properties `run` got wrong: an `Always` discovered, a `Sometimes` not.
fn wrong(model: &StageModel, run: &Exploration<StageModel>) -> Vec<&'static str> {
    model
        .properties()
        .iter()
        .zip(&run.discoveries)
        .filter(|(p, d)| match p.expectation {
            Expectation::Always => d.is_some(),
            Expectation::Sometimes => d.is_none(),
            Expectation::Eventually => false,
        })
        .map(|(p, _)| p.name)
        .collect()
}

/// Asserts every property as expected and no trap; returns the unique state count.
fn assert_all_as_expected(cfg: StageConfig) -> usize {
    let (model, run) = run(&cfg);
    let wrong = wrong(&model, &run);
    assert!(
        wrong.is_empty(),
        "{cfg}: {wrong:?}\n{:?}",
        run.discoveries
            .iter()
            .flatten()
            .next()
            .map(|p| p.last_state())
    );
    let graph = run.graph.expect("asked for");
    assert!(
        graph.trap.is_none(),
        "{cfg}: a trap\n{:#?}",
        graph.trap.map(|p| p.into_vec())
    );
    assert!(graph.goal_states > 0);
    eprintln!(
        "{cfg}: {} unique states, {} goal states",
        run.unique, graph.goal_states
    );
    run.unique
}

#[test]
fn every_scenario_holds_every_property_and_converges() {
    let mut counts = vec![];
    for s in Scenario::ALL {
        counts.push((s.name(), assert_all_as_expected(StageConfig::scenario(s))));
    }
    // Pinned: a change of the protocol's semantics shows here (canonical fingerprint, dead
    // messages forgotten).
    assert_eq!(
        counts,
        vec![
            ("race", 113),
            ("chain", 1522),
            ("three", 2435),
            ("starve", 1568),
            ("remove", 1522)
        ]
    );
}

#[test]
fn fixed_priorities_are_safe_and_converge_in_every_scenario_but_starve() {
    for s in Scenario::ALL {
        let cfg = StageConfig {
            ordering: Ordering::Fixed,
            ..StageConfig::scenario(s)
        };
        let (model, run) = run(&cfg);
        let wrong = wrong(&model, &run);
        let expected: Vec<&str> = if s == Scenario::Starve {
            vec![props::STARVATION]
        } else {
            vec![]
        };
        assert_eq!(wrong, expected, "{cfg}");
        assert!(run.graph.expect("asked for").trap.is_none(), "{cfg}");
        eprintln!("{cfg}: {} unique states", run.unique);
    }
}

#[test]
fn lossy_network_with_resends_and_crashes() {
    for cfg in [
        StageConfig {
            lossy: true,
            ..StageConfig::scenario(Scenario::Race)
        },
        StageConfig {
            max_crashes: 1,
            ..StageConfig::scenario(Scenario::Race)
        },
    ] {
        assert_all_as_expected(cfg);
    }
}

/// Explores `cfg` until `property` is discovered; returns whether it was.
fn discovers(cfg: &StageConfig, property: &str) -> bool {
    let model = cfg.clone().into_model();
    let mut options = Options::new(&canonical_fingerprint);
    options.order = Order::BreadthFirst;
    options.stop_at = model
        .properties()
        .iter()
        .filter(|p| p.name == property)
        .map(|p| p.name)
        .collect();
    let run = explore(&model, options);
    model
        .properties()
        .iter()
        .zip(&run.discoveries)
        .any(|(p, d)| p.name == property && d.is_some())
}

#[test]
fn every_safety_mutant_is_refuted() {
    for m in Mutant::ALL {
        let (property, cfg) = m.breaks();
        if property == props::CONVERGENCE_REACHABLE {
            continue;
        }
        assert!(discovers(&cfg, property), "{cfg}: {property} not refuted");
    }
}

#[test]
fn without_redo_the_liveness_graph_finds_a_peer_stuck_with_its_redo_queue() {
    let (property, cfg) = Mutant::NoRedo.breaks();
    assert_eq!(property, props::CONVERGENCE_REACHABLE);
    let (model, run) = run(&cfg);
    assert_eq!(
        wrong(&model, &run),
        vec![props::REACH_UNDO_REDO],
        "safety holds; nothing is executed again"
    );
    // The first state from which convergence is out of reach: peer 0 executed its operation,
    // and peer 1's, which beats it, is on its way.
    let trap = run.graph.expect("asked for").trap.expect("a trap");
    assert!(!trap.last_state().actor_states[0].journal.is_empty());
}

#[test]
fn fixed_priorities_starve_the_lowest_peer_and_aging_does_not() {
    let fixed = StageConfig {
        ordering: Ordering::Fixed,
        ..StageConfig::scenario(Scenario::Starve)
    };
    assert!(discovers(&fixed, props::STARVATION));
    assert!(!discovers(
        &StageConfig::scenario(Scenario::Starve),
        props::STARVATION
    ));
}
