//! Model checks of protocol 2 (failover approver, seed 002): the shipped variant holds every
//! property, the seed's scheme and every mutant are refuted, reachability and the liveness
//! graph check, with pinned state counts.

use replicore_explore::{Exploration, Liveness, Options, Order, explore, plain_fingerprint};
use replicore_model::failover::model::try_script;
use replicore_model::failover::model::{FailoverModel, props};
use replicore_model::failover::{FailoverConfig, Mutant};
use stateright::actor::ActorModelAction;
use stateright::{Expectation, Model};

fn run(cfg: &FailoverConfig, graph: bool) -> (FailoverModel, Exploration<FailoverModel>) {
    let model = cfg.clone().into_model();
    let fp = plain_fingerprint::<replicore_model::failover::model::FailoverState>;
    let goal_cfg = cfg.clone();
    let goal = move |s: &_| props::settled(&goal_cfg, s);
    let mut options = Options::new(&fp);
    options.order = Order::BreadthFirst;
    if graph {
        options.liveness = Some(Liveness {
            fair: &props::fair,
            goal: &goal,
            bound_reaches_goal: false,
        });
    }
    let run = explore(&model, options);
    (model, run)
}

#[allow(dead_code)]
fn discovered(model: &FailoverModel, run: &Exploration<FailoverModel>) -> Vec<&'static str> {
    model
        .properties()
        .iter()
        .zip(&run.discoveries)
        .filter(|(_, d)| d.is_some())
        .map(|(p, _)| p.name)
        .collect()
}

fn always_violated(model: &FailoverModel, run: &Exploration<FailoverModel>) -> Vec<&'static str> {
    model
        .properties()
        .iter()
        .zip(&run.discoveries)
        .filter(|(p, d)| p.expectation == Expectation::Always && d.is_some())
        .map(|(p, _)| p.name)
        .collect()
}

fn assert_holds_everything(cfg: &FailoverConfig, unique: usize) {
    let (model, run) = run(cfg, true);
    assert_eq!(run.cut, None, "{cfg}: the space is exhausted");
    assert_eq!(always_violated(&model, &run), Vec::<&str>::new(), "{cfg}");
    for (p, d) in model.properties().iter().zip(&run.discoveries) {
        if p.expectation == Expectation::Sometimes {
            assert!(d.is_some(), "{cfg}: {} is reached", p.name);
        }
    }
    let graph = run.graph.expect("asked for the graph");
    assert!(graph.trap.is_none(), "{cfg}: no trap");
    assert!(graph.goal_states > 0);
    assert_eq!(run.unique, unique, "{cfg}: pinned unique state count");
}

/// The shipped variant, default config (two writes, one server down at a time): every
/// safety property holds, every reachability property is reached, and from every reachable
/// state the client completes and the servers agree by fair steps, with the master down for
/// good or back.
#[test]
fn fenced_default_holds_every_property() {
    assert_holds_everything(&FailoverConfig::default(), 84_867);
}

/// With a read after the write the register history is judged on a stale-read chance.
#[test]
fn fenced_with_a_read_holds_every_property() {
    let cfg = FailoverConfig {
        script: try_script("w1,r").unwrap(),
        ..FailoverConfig::default()
    };
    assert_holds_everything(&cfg, 24_981);
}

/// The seed as written, with no crash at all (the master is only slow or partitioned): two
/// approvers in one epoch, different updates at one version, an acknowledged update missing
/// at the backup that took over, and a stale read.
#[test]
fn seed_is_refuted_without_any_crash() {
    let cfg = FailoverConfig {
        script: try_script("w1,w2,r").unwrap(),
        max_crashes: 0,
        ..FailoverConfig::seed()
    };
    let (model, run) = run(&cfg, false);
    let violated = always_violated(&model, &run);
    for p in [
        props::ONE_APPROVER,
        props::NO_DIVERGENCE,
        props::ACKED_SURVIVE,
        props::LINEARIZABLE,
    ] {
        assert!(violated.contains(&p), "the seed violates {p}: {violated:?}");
    }
    // The split brain: at its last state two servers have approved in epoch 0 and none has
    // crashed.
    let names: Vec<_> = model.properties().iter().map(|p| p.name).collect();
    let i = names
        .iter()
        .position(|n| *n == props::ONE_APPROVER)
        .unwrap();
    let path = run.discoveries[i].clone().unwrap();
    let last = path.last_state().clone();
    assert!(last.history.approvals.contains(&(0, 0)) && last.history.approvals.contains(&(0, 1)));
    assert!(
        path.into_actions()
            .iter()
            .all(|a| !matches!(a, ActorModelAction::Crash(_)))
    );
}

/// Every mutant of the shipped variant is refuted on its config: a safety mutant by its
/// property, a liveness mutant by a trap of the graph check.
#[test]
fn every_mutant_is_refuted() {
    for m in Mutant::ALL {
        let (prop, cfg) = m.breaks();
        let liveness = prop == props::PENDING_COMPLETE;
        let (model, run) = run(&cfg, liveness);
        if liveness {
            let graph = run.graph.as_ref().expect("asked for the graph");
            assert!(graph.trap.is_some(), "{}: a trap", m.name());
            assert_eq!(
                always_violated(&model, &run),
                Vec::<&str>::new(),
                "{}",
                m.name()
            );
        } else {
            assert!(
                always_violated(&model, &run).contains(&prop),
                "{} breaks {prop}",
                m.name()
            );
        }
    }
}

/// The shipped variant over a lossy network without crashes is judged on the lossy space
/// itself, liveness included (the fair steps exclude drops).
#[test]
fn fenced_over_a_lossy_network_holds() {
    let cfg = FailoverConfig {
        script: try_script("w1").unwrap(),
        lossy: true,
        max_crashes: 0,
        ..FailoverConfig::default()
    };
    let (model, run) = run(&cfg, true);
    assert_eq!(always_violated(&model, &run), Vec::<&str>::new());
    assert!(run.graph.unwrap().trap.is_none());
    assert_eq!(run.unique, 84_432, "pinned unique state count");
}

/// The store history the runtime's chaos test judges: per key, the model's register tester.
/// A read that misses an acknowledged write is refused; a write whose outcome is unknown may
/// be seen or not, but not once a later read saw it gone and an earlier one saw it.
#[test]
fn a_store_history_is_judged_key_by_key() {
    use replicore_model::failover::model::StoreHistory;
    use replicore_model::failover::{Answer, ClientOp};
    use replicore_model::store::KvOp;
    type H = StoreHistory<u8, u8>;
    let put = |k, v| ClientOp::Update(KvOp::Put(k, v));
    let written = Answer::Written { version: 1 };
    let read = |v| Answer::Value {
        value: v,
        version: 1,
    };
    // Thread 1 writes key 0; thread 2 then reads it absent: stale.
    let mut h = H::default();
    h.invoke(1, &put(0, 5)).unwrap();
    h.answer(1, &written).unwrap();
    h.invoke(2, &ClientOp::Read(0)).unwrap();
    h.answer(2, &read(None)).unwrap();
    assert!(h.violation().is_some_and(|v| v.starts_with("key 0")));
    // The same read of another key is fine.
    let mut h = H::default();
    h.invoke(1, &put(0, 5)).unwrap();
    h.answer(1, &written).unwrap();
    h.invoke(2, &ClientOp::Read(1)).unwrap();
    h.answer(2, &read(None)).unwrap();
    assert_eq!(h.violation(), None);
    // A write never answered: a read may see it, or not, but it cannot come and go.
    let mut h = H::default();
    h.invoke(1, &put(0, 5)).unwrap();
    h.invoke(2, &ClientOp::Read(0)).unwrap();
    h.answer(2, &read(Some(5))).unwrap();
    assert_eq!(h.violation(), None);
    h.invoke(2, &ClientOp::Read(0)).unwrap();
    h.answer(2, &read(None)).unwrap();
    assert!(h.violation().is_some());
    // One operation in flight per thread.
    let mut h = H::default();
    h.invoke(1, &put(0, 5)).unwrap();
    assert!(h.invoke(1, &put(1, 5)).is_err());
    assert!(h.answer(3, &written).is_err());
}
