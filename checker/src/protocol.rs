//! What the command line needs from a protocol. A new protocol adds a subcommand in
//! [`crate::cli`], a module implementing [`Protocol`], and an entry in [`PROTOCOLS`].

use crate::report::Kind;

/// A property as `list` shows it.
pub struct PropertyInfo {
    /// The property's name, a short sentence.
    pub name: &'static str,
    /// Its kind.
    pub kind: Kind,
    /// When it is checked, in words.
    pub when: &'static str,
}

/// A mutant as `list` shows it.
pub struct MutantInfo {
    /// The `--mutant` name.
    pub name: &'static str,
    /// What it breaks in the protocol.
    pub description: &'static str,
    /// The property the checker refutes.
    pub breaks: &'static str,
    /// The command line of the config that refutes it.
    pub refuted_by: String,
}

/// A checkable protocol.
pub trait Protocol: Sync {
    /// The subcommand name.
    fn name(&self) -> &'static str;
    /// One line about it.
    fn description(&self) -> &'static str;
    /// Every property it may check.
    fn properties(&self) -> Vec<PropertyInfo>;
    /// Every mutant.
    fn mutants(&self) -> Vec<MutantInfo>;
    /// The runs of `replicore-check suite` for this protocol at `tier`.
    fn suite(&self, tier: replicore_model::suite::Tier) -> Vec<crate::suite::SuiteRun>;
}

/// Every protocol the checker knows.
pub static PROTOCOLS: &[&dyn Protocol] = &[
    &crate::master_slave::MasterSlave,
    &crate::failover::Failover,
    &crate::knowledge::KnowledgeSync,
    &crate::stage_sync::StageSync,
];

/// The text of `replicore-check list`.
pub fn list() -> String {
    let mut out = String::new();
    for p in PROTOCOLS {
        out.push_str(&format!("protocol  {:<26} {}\n", p.name(), p.description()));
    }
    for p in PROTOCOLS {
        for prop in p.properties() {
            out.push_str(&format!(
                "property  {:<26} {:<10} {} ({})\n",
                p.name(),
                prop.kind.name(),
                prop.name,
                prop.when
            ));
        }
    }
    for p in PROTOCOLS {
        for m in p.mutants() {
            out.push_str(&format!(
                "mutant    {:<26} {}: {} (breaks: {}; refuted by: {})\n",
                p.name(),
                m.name,
                m.description,
                m.breaks,
                m.refuted_by
            ));
        }
    }
    out
}
