//! `replicore-check suite [PROTOCOL] [--quick]`: every config of the protocols' suites (the
//! list lives in the model, `replicore_model::*::suite`) and every mutant's refuting config,
//! one line each. A case passes when every property is as expected; a mutant's when the
//! property it breaks is violated; an exact case's when, in addition, the audit of the
//! reductions holds and a run with every reduction off gives the same verdicts.

use crate::cli::{SearchArgs, search_args};
use crate::protocol::PROTOCOLS;
use crate::report::{EXIT_FAILED, EXIT_OK, Report, Verdict};
use replicore_model::suite::{Case, Tier};
use serde::Serialize;
use std::time::Instant;

/// What a run of the suite must show.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expect {
    /// Every property as expected.
    Pass,
    /// This property is violated (a mutant's refuting config).
    Refuted(&'static str),
}

/// A check the report of one run.
pub type Check = Box<dyn Fn(&SearchArgs) -> anyhow::Result<Report> + Send + Sync>;

/// One run of the suite.
pub struct SuiteRun {
    /// The protocol's command-line name.
    pub protocol: &'static str,
    /// The command line that runs the same check alone.
    pub command: String,
    /// What it reaches, or which mutant it refutes.
    pub why: String,
    /// What it must show.
    pub expect: Expect,
    /// Whether it is also run with every reduction off, and audited.
    pub exact: bool,
    /// Runs it.
    pub check: Check,
}

/// The suite runs of one protocol: its cases of `tier`, then one per mutant (name,
/// description, the property it breaks, its refuting config).
pub fn runs<C, M>(
    protocol: &'static str,
    cases: Vec<Case<C>>,
    tier: Tier,
    mutants: M,
    args: fn(&C) -> String,
    run: fn(&C, &SearchArgs) -> anyhow::Result<Report>,
) -> Vec<SuiteRun>
where
    C: Send + Sync + 'static,
    M: IntoIterator<Item = (&'static str, &'static str, &'static str, C)>,
{
    let mut out: Vec<SuiteRun> = cases
        .into_iter()
        .filter(|c| c.runs_in(tier))
        .map(|c| SuiteRun {
            protocol,
            command: format!("replicore-check {protocol} {}", args(&c.config)),
            why: c.why.to_string(),
            expect: Expect::Pass,
            exact: c.exact,
            check: Box::new(move |search| run(&c.config, search)),
        })
        .collect();
    out.extend(
        mutants
            .into_iter()
            .map(|(name, description, breaks, cfg)| SuiteRun {
                protocol,
                command: format!("replicore-check {protocol} {}", args(&cfg)),
                why: format!("mutant {name}: {description}"),
                expect: Expect::Refuted(breaks),
                exact: false,
                check: Box::new(move |search| run(&cfg, search)),
            }),
    );
    out
}

/// One line of the suite's result.
#[derive(Debug, Serialize)]
struct Line {
    protocol: &'static str,
    command: String,
    why: String,
    expect: Expect,
    ok: bool,
    unique_states: usize,
    elapsed_secs: f64,
    /// Why it failed, if it did.
    problem: Option<String>,
    /// For exact cases: the unique states of the run with every reduction off.
    unreduced_unique_states: Option<usize>,
}

/// Runs the suite and returns the exit code: 0 when every line passes, 1 otherwise.
pub fn main(
    protocol: Option<&str>,
    quick: bool,
    json: bool,
    threads: Option<u64>,
    fail_fast: bool,
) -> anyhow::Result<i32> {
    let tier = if quick { Tier::Quick } else { Tier::Full };
    let chosen: Vec<_> = PROTOCOLS
        .iter()
        .filter(|p| protocol.is_none_or(|name| p.name() == name))
        .collect();
    if chosen.is_empty() {
        let names: Vec<_> = PROTOCOLS.iter().map(|p| p.name()).collect();
        anyhow::bail!(
            "unknown protocol '{}' (expected one of: {})",
            protocol.unwrap_or_default(),
            names.join(", ")
        );
    }
    let threads: Vec<String> = threads.map(|t| t.to_string()).into_iter().collect();
    let flags = |extra: &[&str]| {
        let mut v: Vec<&str> = extra.to_vec();
        if let Some(t) = threads.first() {
            v.extend(["--threads", t.as_str()]);
        }
        search_args(&v)
    };
    let plain = flags(&[]);
    let audited = flags(&["--audit"]);
    let unreduced = flags(&["--no-symmetry", "--no-reduction"]);
    let started = Instant::now();
    let mut lines = Vec::new();
    'protocols: for p in chosen {
        for run in p.suite(tier) {
            let line = one(&run, &plain, &audited, &unreduced);
            if !json {
                crate::emit(&format!("{}\n", text(&line)));
            }
            let failed = !line.ok;
            lines.push(line);
            if failed && fail_fast {
                break 'protocols;
            }
        }
    }
    let failed = lines.iter().filter(|l| !l.ok).count();
    let summary = format!(
        "suite ({}): {} runs, {} failed, {:.1} s",
        if quick { "quick" } else { "full" },
        lines.len(),
        failed,
        started.elapsed().as_secs_f64()
    );
    if json {
        let doc = serde_json::json!({
            "schema": crate::report::SCHEMA,
            "suite": if quick { "quick" } else { "full" },
            "runs": lines,
            "failed": failed,
            "elapsed_secs": started.elapsed().as_secs_f64(),
        });
        crate::emit(&format!("{}\n", serde_json::to_string_pretty(&doc)?));
    } else {
        crate::emit(&format!("{summary}\n"));
    }
    Ok(if failed == 0 { EXIT_OK } else { EXIT_FAILED })
}

fn one(run: &SuiteRun, plain: &SearchArgs, audited: &SearchArgs, unreduced: &SearchArgs) -> Line {
    let started = Instant::now();
    let mut line = Line {
        protocol: run.protocol,
        command: run.command.clone(),
        why: run.why.clone(),
        expect: run.expect,
        ok: false,
        unique_states: 0,
        elapsed_secs: 0.0,
        problem: None,
        unreduced_unique_states: None,
    };
    let search = if run.exact { audited } else { plain };
    let report = match (run.check)(search) {
        Ok(r) => r,
        Err(e) => {
            line.problem = Some(format!("{e:#}"));
            return line;
        }
    };
    line.unique_states = report.counts.unique_states;
    line.problem = problem(&report, run.expect);
    if line.problem.is_none() && run.exact {
        match (run.check)(unreduced) {
            Ok(exact) => {
                line.unreduced_unique_states = Some(exact.counts.unique_states);
                line.problem =
                    problem(&exact, run.expect).or_else(|| disagreement(&report, &exact));
            }
            Err(e) => line.problem = Some(format!("{e:#}")),
        }
    }
    line.ok = line.problem.is_none();
    line.elapsed_secs = started.elapsed().as_secs_f64();
    line
}

/// Why `report` does not show what `expect` asks, if it does not.
fn problem(report: &Report, expect: Expect) -> Option<String> {
    match expect {
        Expect::Pass if report.exit_code == EXIT_OK => None,
        Expect::Pass => {
            let bad: Vec<String> = report
                .properties
                .iter()
                .filter(|p| {
                    matches!(
                        p.result,
                        Verdict::Violated | Verdict::NotReached | Verdict::Undecided
                    )
                })
                .map(|p| format!("{} ({:?})", p.id, p.result))
                .collect();
            Some(if bad.is_empty() {
                report.summary()
            } else {
                bad.join(", ")
            })
        }
        Expect::Refuted(name) => {
            let refuted = report
                .properties
                .iter()
                .any(|p| p.name == name && p.result == Verdict::Violated);
            (!refuted).then(|| {
                format!(
                    "not refuted: \"{name}\" is not violated ({})",
                    report.summary()
                )
            })
        }
    }
}

/// Where the reduced and the unreduced runs disagree on a verdict, if they do.
fn disagreement(reduced: &Report, exact: &Report) -> Option<String> {
    let differ: Vec<String> = reduced
        .properties
        .iter()
        .filter(|p| p.result != Verdict::Skipped)
        .filter_map(|p| {
            let other = exact.properties.iter().find(|q| q.name == p.name)?;
            (other.result != Verdict::Skipped && other.result != p.result).then(|| {
                format!(
                    "{}: reduced {:?}, unreduced {:?}",
                    p.id, p.result, other.result
                )
            })
        })
        .collect();
    (!differ.is_empty()).then(|| format!("the reductions change a verdict: {}", differ.join("; ")))
}

fn text(line: &Line) -> String {
    let mark = if line.ok { "ok  " } else { "FAIL" };
    let mut s = format!(
        "{mark} {:<15} {:>9} states {:>7.2} s  {}  # {}",
        line.protocol, line.unique_states, line.elapsed_secs, line.command, line.why
    );
    if let Some(n) = line.unreduced_unique_states {
        s.push_str(&format!(" [unreduced: {n} states, same verdicts, audited]"));
    }
    if let Some(p) = &line.problem {
        s.push_str(&format!("\n       {p}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use replicore_model::master_slave::MasterSlaveConfig;
    use replicore_model::master_slave::model::{props, script};

    fn small() -> MasterSlaveConfig {
        MasterSlaveConfig {
            slaves: 1,
            script: script("1p"),
            max_crashes: 0,
            ..MasterSlaveConfig::default()
        }
    }

    fn line_of(expect: Expect, cfg: MasterSlaveConfig, exact: bool) -> Line {
        let run = SuiteRun {
            protocol: "master-slave",
            command: String::new(),
            why: String::new(),
            expect,
            exact,
            check: Box::new(move |search| crate::master_slave::run(&cfg, search)),
        };
        one(
            &run,
            &search_args(&[]),
            &search_args(&["--audit"]),
            &search_args(&["--no-symmetry", "--no-reduction"]),
        )
    }

    #[test]
    fn a_correct_config_passes_exactly_and_audited() {
        let line = line_of(Expect::Pass, small(), true);
        assert!(line.ok, "{:?}", line.problem);
        assert!(
            line.unreduced_unique_states
                .is_some_and(|n| n > line.unique_states)
        );
    }

    #[test]
    fn a_line_fails_when_its_mutant_is_not_refuted() {
        // The correct protocol, expected to break slave data: the line must fail.
        let line = line_of(Expect::Refuted(props::SLAVE_DATA), small(), false);
        assert!(!line.ok);
        assert!(line.problem.is_some_and(|p| p.contains("not refuted")));
    }

    #[test]
    fn a_line_fails_when_a_case_is_refuted() {
        let cfg = MasterSlaveConfig {
            mutant: Some(replicore_model::master_slave::Mutant::AckWithoutApplying),
            script: script("1p,1p"),
            ..small()
        };
        let line = line_of(Expect::Pass, cfg, false);
        assert!(!line.ok);
        assert!(
            line.problem
                .is_some_and(|p| p.contains("acknowledged-replay")),
        );
    }
}
