//! Model checking of protocol 1 under `cargo test`: the default config explored to the end,
//! every mutant refuted (by Stateright's DFS and by replicore's one-pass explorer), the
//! explorer checked against Stateright's, and the liveness checks shown able to fail.

use replicore_explore::liveness::{GraphReport, convergence_reachable};
use replicore_explore::{
    Exploration, Jump, Liveness, Options, explore as one_pass, plain_fingerprint,
};
use replicore_model::master_slave::model::{
    BLIND_TO, MasterSlaveModel, MasterSlaveState, canonical_fingerprint, forget_dead, is_fair,
    lose_all, lose_all_actions, props, recovery_blind_fingerprint,
    recovery_blind_fingerprint_of_normalized, script, symmetry_for,
};
use replicore_model::master_slave::{MasterSlaveConfig, Mutant, NetworkKind};
use stateright::{Checker, Expectation, HasDiscoveries, Model};

/// Runs [`convergence_reachable`] on this model, with slave symmetry.
fn check_convergence(model: &MasterSlaveModel, max_states: usize) -> GraphReport<MasterSlaveModel> {
    let cfg = model.cfg.clone();
    convergence_reachable(
        model,
        &canonical_fingerprint,
        is_fair,
        move |s| props::converged(&cfg, s),
        // The in-flight bound of non-duplicating networks only keeps the space finite.
        true,
        max_states,
    )
}

/// Explores `cfg` to the end with DFS and slave symmetry.
fn explore(cfg: MasterSlaveConfig) -> impl Checker<MasterSlaveModel> {
    let model = cfg.into_model();
    let symmetry = symmetry_for(&model);
    model
        .checker()
        .threads(2)
        .symmetry_fn(symmetry)
        .spawn_dfs()
        .join()
}

/// Asserts every `Always`/`Eventually` property holds.
fn assert_holds(checker: &impl Checker<MasterSlaveModel>) {
    for p in checker.model().properties() {
        if p.expectation != Expectation::Sometimes {
            let found = checker.discovery(p.name);
            assert!(found.is_none(), "violated: {}\n{}", p.name, found.unwrap());
        }
    }
}

/// Explores `model` to the end with replicore's one-pass explorer, the canonical
/// fingerprint and the convergence graph.
fn explore_one_pass(model: &MasterSlaveModel) -> Exploration<MasterSlaveModel> {
    explore_with(model, &canonical_fingerprint)
}

/// Explores `model` to the end as `replicore-check` does: dead messages dropped, the
/// `fingerprint`, the convergence graph.
fn explore_with(
    model: &MasterSlaveModel,
    fingerprint: &(dyn Fn(&MasterSlaveState) -> u64 + Sync),
) -> Exploration<MasterSlaveModel> {
    let cfg = model.cfg.clone();
    let goal = move |s: &MasterSlaveState| props::converged(&cfg, s);
    let mut options = Options::new(fingerprint);
    options.normalize = Some(&forget_dead);
    options.liveness = Some(Liveness {
        fair: &is_fair,
        goal: &goal,
        bound_reaches_goal: true,
    });
    one_pass(model, options)
}

#[test]
fn default_config_holds_everything_in_one_pass() {
    let model = MasterSlaveConfig::default()
        .safety_equivalent()
        .into_model();
    // As `replicore-check` runs it: blind to the slaves' `recovered` flag, which can only
    // miss the recovery property; it is reached here, so that is final.
    let run = explore_with(&model, &recovery_blind_fingerprint);
    assert_eq!(run.cut, None);
    let names: Vec<_> = model.properties().iter().map(|p| p.name).collect();
    for (p, found) in model.properties().iter().zip(&run.discoveries) {
        match p.expectation {
            Expectation::Sometimes => assert!(found.is_some(), "not reached: {}", p.name),
            _ => assert!(
                found.is_none(),
                "violated: {}\n{}",
                p.name,
                found.as_ref().unwrap()
            ),
        }
    }
    for name in [
        props::SLAVE_DATA,
        props::NO_ABORTED_VISIBLE,
        props::AGREEMENT,
        props::COMMIT_VALIDITY,
        props::UNIQUE_VERSIONS,
        props::MONOTONIC,
        props::DURABLE_VOTES,
        props::REACH_TWO_PHASE_COMMIT,
        props::REACH_ABORT,
        props::REACH_ROLLBACK,
        props::REACH_DELTA,
        props::REACH_SNAPSHOT,
        props::REACH_RECOVERY,
    ] {
        assert!(names.contains(&name), "default model lacks {name}");
    }
    let graph = run.graph.expect("liveness asked for");
    assert!(graph.goal_states > 0);
    assert!(graph.trap.is_none(), "trap:\n{}", graph.trap.unwrap());
    // Pinned: the fingerprint is canonical, so the count does not depend on search order; a
    // change to the protocol or the reduction moves it: say why in review.
    assert_eq!(run.unique, PINNED_DEFAULT_UNIQUE);
}

// With `canonical_fingerprint` (the `recovered` flag kept): 792,783.
const PINNED_DEFAULT_UNIQUE: usize = 279_995;
/// The unique states of the `--master-faults` test's config (a change to the rebuild, the
/// fault's assumption or the reductions moves it).
const MASTER_FAULT_STATES: usize = 75_013;

/// Three clients whose two-phase requests queue behind a round and share the next one:
/// every safety property holds, group commit is reached, convergence stays reachable.
/// `script` "rb" has a member of a group roll back, sending the others back to the queue.
#[test]
fn group_commit_holds_everything() {
    for (script_text, pinned) in [("2p", PINNED_GROUP_2P), ("rb", PINNED_GROUP_RB)] {
        let cfg = MasterSlaveConfig {
            slaves: 1,
            script: script(script_text),
            clients: 3,
            max_crashes: 0,
            ..Default::default()
        };
        let model = cfg.safety_equivalent().into_model();
        let run = explore_one_pass(&model);
        assert_eq!(run.cut, None);
        for (p, found) in model.properties().iter().zip(&run.discoveries) {
            match p.expectation {
                // A rolled-back script commits nothing, so no group commits.
                Expectation::Sometimes if script_text == "rb" => {}
                Expectation::Sometimes => {
                    assert!(found.is_some(), "{script_text}: not reached: {}", p.name)
                }
                _ => assert!(
                    found.is_none(),
                    "{script_text}: violated: {}\n{}",
                    p.name,
                    found.as_ref().unwrap()
                ),
            }
        }
        let graph = run.graph.expect("liveness asked for");
        assert!(graph.trap.is_none(), "trap:\n{}", graph.trap.unwrap());
        assert_eq!(run.unique, pinned, "{script_text}");
    }
}

const PINNED_GROUP_2P: usize = 44_323;
const PINNED_GROUP_RB: usize = 226_795;

/// The explorer against Stateright's own DFS, both without reduction: the same space.
#[test]
fn one_pass_explorer_sees_the_same_space_as_stateright() {
    for network in [NetworkKind::UnorderedDuplicating, NetworkKind::Ordered] {
        let cfg = MasterSlaveConfig {
            slaves: 1,
            script: script("1p,2p"),
            network,
            lossy: network == NetworkKind::Ordered,
            ..Default::default()
        };
        let model = cfg.into_model();
        let ours = one_pass(&model, Options::new(&plain_fingerprint::<MasterSlaveState>));
        let theirs = cfg_checker(&model);
        assert_eq!(ours.unique, theirs.unique_state_count(), "{network:?}");
        for (p, found) in model.properties().iter().zip(&ours.discoveries) {
            if p.expectation != Expectation::Eventually {
                assert_eq!(
                    found.is_some(),
                    theirs.discovery(p.name).is_some(),
                    "{network:?}: {}",
                    p.name
                );
            }
        }
    }
}

fn cfg_checker(model: &MasterSlaveModel) -> impl Checker<MasterSlaveModel> {
    model.clone().checker().threads(1).spawn_dfs().join()
}

/// The canonical fingerprint (renamings of slaves, dead messages, ghost bits) keeps every
/// verdict of the unreduced space, in far fewer states.
#[test]
fn canonical_fingerprint_keeps_every_verdict() {
    let cfg = MasterSlaveConfig {
        slaves: 2,
        script: script("2p"),
        lossy: false,
        ..Default::default()
    };
    let model = cfg.into_model();
    let reduced = explore_one_pass(&model);
    let full = {
        let cfg = model.cfg.clone();
        let goal = move |s: &MasterSlaveState| props::converged(&cfg, s);
        let mut options = Options::new(&plain_fingerprint::<MasterSlaveState>);
        options.liveness = Some(Liveness {
            fair: &is_fair,
            goal: &goal,
            bound_reaches_goal: true,
        });
        one_pass(&model, options)
    };
    assert!(
        reduced.unique * 3 < full.unique,
        "{} vs {}",
        reduced.unique,
        full.unique
    );
    for ((p, a), b) in model
        .properties()
        .iter()
        .zip(&reduced.discoveries)
        .zip(&full.discoveries)
    {
        assert_eq!(a.is_some(), b.is_some(), "{}", p.name);
    }
    assert!(reduced.graph.unwrap().trap.is_none());
    assert!(full.graph.unwrap().trap.is_none());
}

/// Without the slaves' `recovered` flag: the same verdicts as the exact canonical
/// fingerprint (only the recovery property could differ, and only by a miss), in fewer
/// states; dropping dead messages from the states changes no count.
#[test]
fn recovery_blind_fingerprint_keeps_every_verdict() {
    for text in ["1p,2p", "2p,rb"] {
        let cfg = MasterSlaveConfig {
            slaves: 2,
            script: script(text),
            ..Default::default()
        };
        let model = cfg.safety_equivalent().into_model();
        let blind = explore_with(&model, &recovery_blind_fingerprint);
        let exact = explore_with(&model, &canonical_fingerprint);
        // On normalized states the dead messages need not be looked for again.
        let of_normalized = explore_with(&model, &recovery_blind_fingerprint_of_normalized);
        assert_eq!(blind.unique, of_normalized.unique, "{text}");
        assert_eq!(blind.states, of_normalized.states, "{text}");
        let kept = {
            let mut options = Options::new(&canonical_fingerprint);
            let cfg = model.cfg.clone();
            let goal = move |s: &MasterSlaveState| props::converged(&cfg, s);
            options.liveness = Some(Liveness {
                fair: &is_fair,
                goal: &goal,
                bound_reaches_goal: true,
            });
            one_pass(&model, options)
        };
        assert_eq!(exact.unique, kept.unique, "{text}");
        assert!(
            blind.unique * 3 < exact.unique * 2,
            "{text}: {} vs {}",
            blind.unique,
            exact.unique
        );
        for ((p, a), b) in model
            .properties()
            .iter()
            .zip(&blind.discoveries)
            .zip(&exact.discoveries)
        {
            if BLIND_TO.contains(&p.name) {
                assert!(a.is_none() || b.is_some(), "{text}: {}", p.name);
            }
            assert_eq!(a.is_some(), b.is_some(), "{text}: {}", p.name);
        }
        assert!(blind.graph.unwrap().trap.is_none());
        assert!(exact.graph.unwrap().trap.is_none());
    }
}

/// The search `replicore-check` runs on a lossy duplicating network: the loss-free twin of
/// `cfg`, with every loss at once as a jump and only fair steps after it; paths on `lossy`.
fn losing_everything_at_once(
    cfg: &MasterSlaveConfig,
    lossy: &MasterSlaveModel,
) -> Exploration<MasterSlaveModel> {
    let lossless = cfg.safety_equivalent().into_model();
    let goal = |s: &MasterSlaveState| props::converged(cfg, s);
    let mut options = Options::new(&canonical_fingerprint);
    options.normalize = Some(&forget_dead);
    options.liveness = Some(Liveness {
        fair: &is_fair,
        goal: &goal,
        bound_reaches_goal: true,
    });
    options.jump = Some(Jump {
        apply: &lose_all,
        actions: &lose_all_actions,
        fair_only_after: Some(&is_fair),
    });
    options.path_model = Some(lossy);
    one_pass(&lossless, options)
}

/// Crash-free, the same search decides Stateright's `Eventually` too: judged at quiescent
/// states, it agrees with Stateright's DFS over the whole lossy space, where the property
/// holds, where it fails (heartbeat-once: a lost heartbeat is never sent again), and where
/// it holds only because no state is terminal (no-delta-retry, which the graph refutes).
#[test]
fn eventually_after_losing_everything_agrees_with_stateright() {
    let base = MasterSlaveConfig {
        slaves: 1,
        script: script("1p"),
        max_crashes: 0,
        ..Default::default()
    };
    // Where it holds: `lossy_config_converges_by_eventually_and_by_graph_check`.
    let cases = [
        (
            MasterSlaveConfig {
                mutant: Some(Mutant::HeartbeatOnce),
                ..base.clone()
            },
            true,
        ),
        (
            MasterSlaveConfig {
                mutant: Some(Mutant::NoDeltaRetry),
                ..base.clone()
            },
            false,
        ),
    ];
    for (cfg, violated) in cases {
        let lossy = cfg.clone().into_model();
        let i = lossy
            .properties()
            .iter()
            .position(|p| p.name == props::CONVERGES)
            .expect("a crash-free config has Eventually");
        let stateright = explore(cfg.clone());
        assert_eq!(
            stateright.discovery(props::CONVERGES).is_some(),
            violated,
            "{cfg}"
        );
        let reduced = losing_everything_at_once(&cfg, &lossy);
        assert_eq!(reduced.discoveries[i].is_some(), violated, "{cfg}");
        if let Some(path) = &reduced.discoveries[i] {
            let last = path.last_state();
            assert!(!props::converged(&cfg, last), "{cfg}");
            // Quiescent: every step from the last state (once its dead messages are
            // dropped) leads back to it.
            let mut quiet = last.clone();
            forget_dead(&mut quiet);
            let fingerprint = canonical_fingerprint(&quiet);
            assert!(
                lossy.next_steps(&quiet).into_iter().all(|(_, mut next)| {
                    forget_dead(&mut next);
                    canonical_fingerprint(&next) == fingerprint
                }),
                "{cfg}"
            );
        }
    }
}

/// Losing every message in flight at once, from every loss-free state, with only fair steps
/// after it (what `replicore-check` explores on a lossy duplicating network) decides what
/// the whole lossy space decides: every property's verdict and the liveness graph, trap or
/// none, with crashes allowed. The mutant that never re-requests a lost delta has a trap
/// only loss reaches; it is found, and its path replays on the lossy model.
#[test]
fn losing_everything_at_once_decides_what_the_lossy_space_decides() {
    let holds = MasterSlaveConfig {
        slaves: 1,
        script: script("1p,2p"),
        ..Default::default()
    };
    let stranded = MasterSlaveConfig {
        slaves: 2,
        script: script("1p"),
        mutant: Some(Mutant::NoDeltaRetry),
        ..Default::default()
    };
    for (cfg, trapped) in [(holds, false), (stranded, true)] {
        assert!(cfg.lossy && cfg.max_crashes == 1);
        let lossy = cfg.clone().into_model();
        let whole = explore_one_pass(&lossy);
        let lossless = cfg.safety_equivalent().into_model();
        let reduced = losing_everything_at_once(&cfg, &lossy);
        let without_loss = explore_one_pass(&lossless);
        assert!(
            without_loss.unique < reduced.unique && reduced.unique * 4 < whole.unique,
            "{cfg}: {} loss-free, {} reduced, {} lossy",
            without_loss.unique,
            reduced.unique,
            whole.unique
        );
        let names: Vec<_> = lossy.properties().iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            lossless
                .properties()
                .iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
        );
        for ((name, a), b) in names
            .iter()
            .zip(&reduced.discoveries)
            .zip(&whole.discoveries)
        {
            assert_eq!(a.is_some(), b.is_some(), "{cfg}: {name}");
        }
        let trap = reduced.graph.unwrap().trap;
        assert_eq!(whole.graph.unwrap().trap.is_some(), trapped, "{cfg}");
        assert_eq!(trap.is_some(), trapped, "{cfg}");
        // Without loss the mutant's trap is not there: this reduction is what finds it.
        assert!(without_loss.graph.unwrap().trap.is_none(), "{cfg}");
        if let Some(path) = trap {
            assert!(
                path.clone()
                    .into_actions()
                    .iter()
                    .any(|a| matches!(a, stateright::actor::ActorModelAction::Drop(_))),
                "{cfg}: the trap is reached through a loss"
            );
            assert!(!props::converged(&cfg, path.last_state()));
            let init = path.clone().into_states().swap_remove(0);
            let actions = path.into_actions();
            assert!(stateright::Path::from_actions(&lossy, init, actions.iter()).is_some());
        }
    }
}

/// Two workers see the space one sees: the same unique count, verdicts and graph; and a
/// mutant's counterexample found by either ends where its property fails.
#[test]
fn two_workers_see_what_one_sees() {
    let cfg = MasterSlaveConfig {
        slaves: 2,
        script: script("1p,2p"),
        ..Default::default()
    };
    let model = cfg.safety_equivalent().into_model();
    let runs: Vec<_> = [1, 2]
        .into_iter()
        .map(|threads| {
            let cfg = model.cfg.clone();
            let goal = move |s: &MasterSlaveState| props::converged(&cfg, s);
            let mut options = Options::new(&recovery_blind_fingerprint);
            options.normalize = Some(&forget_dead);
            options.threads = threads;
            options.liveness = Some(Liveness {
                fair: &is_fair,
                goal: &goal,
                bound_reaches_goal: true,
            });
            one_pass(&model, options)
        })
        .collect();
    assert_eq!(runs[0].unique, runs[1].unique);
    assert_eq!(runs[0].states, runs[1].states);
    for (i, p) in model.properties().iter().enumerate() {
        assert_eq!(
            runs[0].discoveries[i].is_some(),
            runs[1].discoveries[i].is_some(),
            "{}",
            p.name
        );
    }
    let graphs: Vec<_> = runs.iter().map(|r| r.graph.as_ref().unwrap()).collect();
    assert_eq!(graphs[0].fair_edges, graphs[1].fair_edges);
    assert_eq!(graphs[0].goal_states, graphs[1].goal_states);
    assert!(graphs[0].trap.is_none() && graphs[1].trap.is_none());

    let (property, cfg) = Mutant::CommitOnMajority.breaks();
    let model = cfg.safety_equivalent().into_model();
    let i = model
        .properties()
        .iter()
        .position(|p| p.name == property)
        .expect("the model has the property");
    let mut options = Options::new(&recovery_blind_fingerprint);
    options.normalize = Some(&forget_dead);
    options.threads = 2;
    options.stop_at = vec![property];
    let run = one_pass(&model, options);
    let path = run.discoveries[i]
        .as_ref()
        .expect("refuted with two workers");
    assert!(!(model.properties()[i].condition)(
        &model,
        path.last_state()
    ));
}

#[test]
fn lossy_config_converges_by_eventually_and_by_graph_check() {
    let cfg = MasterSlaveConfig {
        slaves: 1,
        script: script("1p,2p"),
        max_crashes: 0,
        ..Default::default()
    };
    let checker = explore(cfg.clone());
    assert!(
        checker
            .model()
            .properties()
            .iter()
            .any(|p| p.name == props::CONVERGES)
    );
    assert_holds(&checker);
    // And by the search that loses everything at once, in a fraction of the states.
    let reduced = losing_everything_at_once(&cfg, checker.model());
    assert!(
        reduced
            .discoveries
            .iter()
            .zip(checker.model().properties())
            .all(|(d, p)| d.is_none() || p.expectation == Expectation::Sometimes)
    );
    assert!(reduced.graph.unwrap().trap.is_none());
    assert!(reduced.unique * 10 < checker.unique_state_count());
    let report = check_convergence(&cfg.into_model(), 10_000_000);
    assert!(report.trap.is_none());
}

#[test]
fn lossy_two_slaves_single_update_holds_everything() {
    let cfg = MasterSlaveConfig {
        script: script("2p"),
        max_crashes: 0,
        ..Default::default()
    };
    let checker = explore(cfg.clone());
    assert_holds(&checker);
    assert!(
        check_convergence(&cfg.into_model(), 10_000_000)
            .trap
            .is_none()
    );
}

#[test]
fn ordered_network_with_a_crash_holds_everything() {
    let cfg = MasterSlaveConfig {
        network: replicore_model::master_slave::NetworkKind::Ordered,
        lossy: false,
        slaves: 1,
        script: script("1p,2p"),
        ..Default::default()
    };
    let checker = explore(cfg.clone());
    assert!(checker.is_done());
    for p in checker.model().properties() {
        if p.expectation != Expectation::Sometimes {
            assert!(checker.discovery(p.name).is_none(), "violated: {}", p.name);
        }
    }
}

/// Runs a mutant's config and asserts the checker refutes the property it breaks.
fn assert_refuted(mutant: Mutant) {
    let (property, cfg) = mutant.breaks();
    assert_eq!(cfg.mutant, Some(mutant));
    if property == props::CONVERGENCE_REACHABLE {
        let report = check_convergence(&cfg.into_model(), 10_000_000);
        assert!(report.trap.is_some(), "{mutant:?}: no trap found");
        return;
    }
    let safety = !matches!(property, props::CONVERGES);
    let cfg = if safety { cfg.safety_equivalent() } else { cfg };
    let model = cfg.into_model();
    let symmetry = symmetry_for(&model);
    // Stop at the first counterexample of the property under test.
    let checker = model
        .checker()
        .threads(2)
        .symmetry_fn(symmetry)
        .finish_when(HasDiscoveries::AnyOf([property].into()))
        .spawn_dfs()
        .join();
    let path = checker.discovery(property);
    assert!(path.is_some(), "{mutant:?} was not refuted on '{property}'");
    if safety {
        // And by replicore's explorer, with a trace that ends where the property fails.
        let model = checker.model();
        let mut options = Options::new(&canonical_fingerprint);
        options.stop_at = vec![property];
        let run = one_pass(model, options);
        let i = model
            .properties()
            .iter()
            .position(|p| p.name == property)
            .expect("the model has the property");
        let path = run.discoveries[i]
            .as_ref()
            .unwrap_or_else(|| panic!("{mutant:?} not refuted on '{property}' by the explorer"));
        let condition = model.properties()[i].condition;
        assert!(
            !condition(model, path.last_state()),
            "{mutant:?}: trace ends elsewhere"
        );
    }
}

#[test]
fn mutant_apply_without_prior_check_is_refuted() {
    assert_refuted(Mutant::ApplyWithoutPriorCheck);
}

#[test]
fn mutant_commit_on_majority_is_refuted() {
    assert_refuted(Mutant::CommitOnMajority);
}

#[test]
fn mutant_vote_without_saving_is_refuted() {
    assert_refuted(Mutant::VoteWithoutSaving);
}

#[test]
fn mutant_reuse_aborted_version_is_refuted() {
    assert_refuted(Mutant::ReuseAbortedVersion);
}

#[test]
fn mutant_forget_decision_on_crash_is_refuted() {
    assert_refuted(Mutant::ForgetDecisionOnCrash);
}

#[test]
fn mutant_expose_prepared_data_is_refuted() {
    assert_refuted(Mutant::ExposePreparedData);
}

#[test]
fn mutant_announce_before_save_is_refuted() {
    assert_refuted(Mutant::AnnounceBeforeSave);
}

#[test]
fn mutant_announce_before_save_also_breaks_monotonic_versions() {
    let (_, cfg) = Mutant::AnnounceBeforeSave.breaks();
    let checker = explore(cfg.safety_equivalent());
    assert!(checker.discovery(props::MONOTONIC).is_some());
}

/// The liveness mutant Stateright's `Eventually` cannot see (the heartbeat never stops, so
/// no state is terminal) and the graph check catches.
#[test]
fn mutant_no_delta_retry_passes_eventually_vacuously_but_fails_the_graph_check() {
    assert_refuted(Mutant::NoDeltaRetry);
    let (_, cfg) = Mutant::NoDeltaRetry.breaks();
    let checker = explore(cfg);
    assert!(checker.discovery(props::CONVERGES).is_none());
}

#[test]
fn mutant_heartbeat_once_is_refuted_by_eventually_and_by_the_graph_check() {
    assert_refuted(Mutant::HeartbeatOnce);
    let (_, cfg) = Mutant::HeartbeatOnce.breaks();
    assert!(
        check_convergence(&cfg.into_model(), 10_000_000)
            .trap
            .is_some()
    );
}

#[test]
fn mutant_ack_without_applying_is_refuted() {
    assert_refuted(Mutant::AckWithoutApplying);
}

#[test]
fn mutant_group_loses_member_is_refuted() {
    assert_refuted(Mutant::GroupLosesMember);
}

/// The two mutants no node sees: every slave agrees with the master, so every property that
/// compares nodes holds, and only the end-to-end replay of what clients were told refutes
/// them.
#[test]
fn a_mutant_that_every_slave_agrees_with_is_refuted_end_to_end_only() {
    // The group-commit mutant's space is large for Stateright's checker: it is refuted by
    // `assert_refuted` above; this checks the small one's every property.
    for m in [Mutant::AckWithoutApplying] {
        let (property, cfg) = m.breaks();
        assert_eq!(property, props::ACKNOWLEDGED_REPLAY);
        let checker = explore(cfg.safety_equivalent());
        assert!(
            checker.discovery(props::ACKNOWLEDGED_REPLAY).is_some(),
            "{m:?}"
        );
        for other in [
            props::SLAVE_DATA,
            props::NO_ABORTED_VISIBLE,
            props::AGREEMENT,
            props::COMMIT_VALIDITY,
            props::UNIQUE_VERSIONS,
            props::MONOTONIC,
            props::DURABLE_VOTES,
        ] {
            assert!(checker.discovery(other).is_none(), "{m:?} broke {other}");
        }
    }
}

#[test]
fn scripts_issue_every_operation_and_round_trip() {
    use replicore_model::master_slave::UpdateKind;
    use replicore_model::master_slave::model::{script_text, try_script};
    use replicore_model::store::KvOp;
    let s = try_script("1p:0=1,2p:0=2,rb:-0,1p").expect("valid");
    assert_eq!(
        s.iter()
            .map(|st| (st.op.clone(), st.kind))
            .collect::<Vec<_>>(),
        vec![
            (KvOp::Put(0, 1), UpdateKind::OnePhase),
            (KvOp::Put(0, 2), UpdateKind::TwoPhase),
            (KvOp::Delete(0), UpdateKind::RolledBack),
            (KvOp::Put(1, 4), UpdateKind::OnePhase),
        ]
    );
    // An item whose operation is the default one prints without it.
    assert_eq!(script_text(&s), "1p,2p:0=2,rb:-0,1p");
    assert_eq!(try_script(&script_text(&s)).expect("valid"), s);
    for bad in ["1p:", "1p:16=1", "1p:0=256", "1p:-x", "3p", "2p:0"] {
        assert!(try_script(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn own_keys_shift_each_clients_keys_and_shared_keys_do_not() {
    use replicore_model::store::KvOp;
    let shared = MasterSlaveConfig {
        clients: 2,
        script: script("1p:3=1,1p:-3"),
        ..MasterSlaveConfig::default()
    };
    let own = MasterSlaveConfig {
        own_keys: true,
        ..shared.clone()
    };
    let ops = |c: &MasterSlaveConfig, i| {
        c.client_script(i)
            .into_iter()
            .map(|s| s.op)
            .collect::<Vec<_>>()
    };
    assert_eq!(ops(&shared, 1), vec![KvOp::Put(3, 17), KvOp::Delete(3)]);
    assert_eq!(ops(&own, 1), vec![KvOp::Put(19, 17), KvOp::Delete(19)]);
    assert!(own.to_string().contains("keys=own"));
}

/// The audit of the reductions finds nothing on the correct protocol, and it can fail: a
/// state whose slave has a recovered flag that a step reads would be reported. Here: every
/// state of a small config is audited.
#[test]
fn the_reductions_assumptions_hold_on_every_state_of_small_configs() {
    use replicore_model::master_slave::model::Audit;
    for cfg in [
        MasterSlaveConfig {
            lossy: false,
            script: script("1p"),
            ..MasterSlaveConfig::default()
        },
        MasterSlaveConfig {
            lossy: false,
            slaves: 1,
            script: script("1p:0=1,rb:-0"),
            ..MasterSlaveConfig::default()
        },
    ] {
        let model = cfg.into_model();
        let audit = Audit::new(&model);
        let normalize = |s: &mut MasterSlaveState| {
            audit.state(s);
            forget_dead(s);
        };
        let mut options = Options::new(&recovery_blind_fingerprint_of_normalized);
        options.normalize = Some(&normalize);
        let run = one_pass(&model, options);
        assert!(run.unique > 400, "{}", run.unique);
        assert!(audit.audited() >= run.unique);
        assert_eq!(audit.failure(), None);
    }
}

#[test]
fn every_mutant_has_a_test_above() {
    // Each mutant refuted by a `mutant_*_is_refuted` test above; a new mutant fails here
    // until it is added to this list and given its test.
    let tested = [
        Mutant::ApplyWithoutPriorCheck,
        Mutant::CommitOnMajority,
        Mutant::VoteWithoutSaving,
        Mutant::ReuseAbortedVersion,
        Mutant::ForgetDecisionOnCrash,
        Mutant::ExposePreparedData,
        Mutant::AnnounceBeforeSave,
        Mutant::NoDeltaRetry,
        Mutant::HeartbeatOnce,
        Mutant::AckWithoutApplying,
        Mutant::GroupLosesMember,
        Mutant::ServeDamagedCopy,
        Mutant::AcceptBackwardSnapshot,
        Mutant::RecoverFromOneSlave,
        Mutant::RecoverCounterFromCopy,
    ];
    assert_eq!(Mutant::ALL.len(), tested.len());
    for m in Mutant::ALL {
        assert!(tested.contains(&m), "{} has no refutation test", m.name());
        assert_eq!(Mutant::from_name(m.name()), Some(m));
    }
}

#[test]
fn mutant_serve_damaged_copy_is_refuted() {
    assert_refuted(Mutant::ServeDamagedCopy);
}

#[test]
fn mutant_accept_backward_snapshot_is_refuted() {
    assert_refuted(Mutant::AcceptBackwardSnapshot);
}

#[test]
fn mutant_recover_from_one_slave_is_refuted() {
    assert_refuted(Mutant::RecoverFromOneSlave);
}

#[test]
fn mutant_recover_counter_from_copy_is_refuted() {
    assert_refuted(Mutant::RecoverCounterFromCopy);
}

/// The master's store lost (issue 18, `--master-faults`): the rebuild from the slave keeps
/// every safety property, the fault is taken, and only where a slave holds everything the
/// master saved.
#[test]
fn a_master_store_lost_keeps_every_safety_property_and_waits_for_a_full_copy() {
    use replicore_model::master_slave::model::StorageFault;
    use stateright::actor::{ActorModelAction, Id};
    let cfg = MasterSlaveConfig {
        slaves: 1,
        script: script("2p,1p"),
        disk_faults: 1,
        master_faults: true,
        ..Default::default()
    }
    .safety_equivalent();
    let model = cfg.clone().into_model();
    let run = explore_one_pass(&model);
    assert_eq!(run.cut, None);
    for (p, found) in model.properties().iter().zip(&run.discoveries) {
        if p.expectation == Expectation::Always {
            assert!(found.is_none(), "violated: {}", p.name);
        }
    }
    assert_eq!(run.unique, MASTER_FAULT_STATES);

    // The fault needs the master down and a slave holding all it saved.
    let (master, client) = (Id::from(0), Id::from(2));
    let faults = |s: &MasterSlaveState| {
        let mut actions = Vec::new();
        model.actions(s, &mut actions);
        actions
            .into_iter()
            .filter_map(|a| StorageFault::of(&a))
            .collect::<Vec<_>>()
    };
    let step = |s: &MasterSlaveState, a| model.next_state(s, a).expect("a step");
    let init = model.init_states().remove(0);
    let down = step(&init, ActorModelAction::Crash(master));
    // Nothing saved by the master yet: nothing to lose.
    assert!(faults(&down).is_empty(), "{:?}", faults(&down));
    let deliver = |s: &MasterSlaveState, src: Id, dst: Id| {
        let env = s
            .network
            .iter_deliverable()
            .find(|e| e.src == src && e.dst == dst)
            .expect("a message")
            .to_cloned_msg();
        step(
            s,
            ActorModelAction::Deliver {
                src,
                dst,
                msg: env.msg,
            },
        )
    };
    // The two-phase update is prepared: the master saved a round no slave knows decided.
    let prepared = deliver(&init, client, master);
    let down = step(&prepared, ActorModelAction::Crash(master));
    assert!(
        faults(&down).is_empty(),
        "an undecided round: {:?}",
        faults(&down)
    );
}

/// Storage faults (issue 18): a slave's store lost or damaged while it is down, twice in a
/// run, keeps every safety property, and the faults are taken.
#[test]
fn storage_faults_keep_every_safety_property() {
    let cfg = MasterSlaveConfig {
        slaves: 1,
        script: script("1p,2p"),
        disk_faults: 2,
        ..Default::default()
    }
    .safety_equivalent();
    let checker = explore(cfg.clone());
    assert!(checker.is_done());
    assert_holds(&checker);
    let model = cfg.into_model();
    let run = explore_one_pass(&model);
    assert_eq!(run.cut, None);
    for (p, found) in model.properties().iter().zip(&run.discoveries) {
        if p.expectation == Expectation::Always {
            assert!(found.is_none(), "violated: {}", p.name);
        }
    }
    // Pinned, like the default's count: a change to the faults or the reductions moves it.
    assert_eq!(run.unique, 112_379);
}

/// A fault hits only a crashed slave, changes its saved state, and the config bounds how
/// many a run has.
#[test]
fn storage_faults_hit_crashed_slaves_within_the_bound() {
    use replicore_model::master_slave::model::StorageFault;
    use stateright::actor::{ActorModelAction, Id};
    let model = MasterSlaveConfig {
        slaves: 1,
        script: script("1p"),
        disk_faults: 1,
        ..Default::default()
    }
    .into_model();
    let init = model.init_states().remove(0);
    let faults = |s: &MasterSlaveState| {
        let mut actions = Vec::new();
        model.actions(s, &mut actions);
        actions
            .into_iter()
            .filter_map(|a| StorageFault::of(&a))
            .collect::<Vec<_>>()
    };
    assert!(faults(&init).is_empty(), "no fault while every slave runs");
    let slave = Id::from(1);
    let crashed = model
        .next_state(&init, ActorModelAction::Crash(slave))
        .expect("a crash");
    // Nothing saved yet: only losing the (empty) store is a change, and it is none either.
    assert!(faults(&crashed).is_empty(), "{:?}", faults(&crashed));
    let master = Id::from(0);
    let client = Id::from(2);
    let update = model
        .next_state(
            &init,
            ActorModelAction::Deliver {
                src: client,
                dst: master,
                msg: init.network.iter_deliverable().next().unwrap().msg.clone(),
            },
        )
        .expect("the update");
    let announce = update
        .network
        .iter_deliverable()
        .find(|e| e.dst == slave)
        .expect("an announcement")
        .msg
        .clone();
    let applied = model
        .next_state(
            &update,
            ActorModelAction::Deliver {
                src: master,
                dst: slave,
                msg: announce,
            },
        )
        .expect("applied");
    let down = model
        .next_state(&applied, ActorModelAction::Crash(slave))
        .expect("a crash");
    assert_eq!(
        faults(&down),
        vec![(slave, StorageFault::Lost), (slave, StorageFault::Damaged)]
    );
    let damaged = model
        .next_state(&down, StorageFault::Damaged.action(slave))
        .expect("the fault");
    assert_eq!(damaged.history.storage_faults, 1);
    assert!(faults(&damaged).is_empty(), "the bound is one fault");
    // The slave discards the flagged copy: it restarts empty and asks for everything.
    let back = model
        .next_state(&damaged, ActorModelAction::Recover(slave))
        .expect("a restart");
    assert!(props::slave_data(&back) && props::monotonic(&back));
    assert!(!back.history.faulted.contains(&slave));
}
