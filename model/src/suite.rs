//! The suite: for each protocol, a fixed list of configs that together reach every
//! behaviour of the protocol, each with one line saying what it reaches that the others do
//! not. `replicore-check suite` runs them (and every mutant's refuting config); the list is
//! written once, here and in each protocol's `suite` module.

/// How much of the suite a run takes.
#[derive(Clone, Copy, Debug, Eq, PartialEq, Ord, PartialOrd)]
pub enum Tier {
    /// Small bounds that still reach every behaviour: the cases CI runs.
    Quick,
    /// Every case, larger bounds included.
    Full,
}

/// One config of the suite.
#[derive(Clone, Debug)]
pub struct Case<C> {
    /// The config checked.
    pub config: C,
    /// What it reaches that the other cases do not, in one line.
    pub why: &'static str,
    /// The smallest tier that runs it.
    pub tier: Tier,
    /// Whether it is small enough to check with every reduction off as well, and under the
    /// audit of the reductions' assumptions: both runs must give the same verdicts.
    pub exact: bool,
}

impl<C> Case<C> {
    /// A case of the quick tier (and so of the full one).
    pub fn quick(config: C, why: &'static str) -> Self {
        Case {
            config,
            why,
            tier: Tier::Quick,
            exact: false,
        }
    }

    /// A case of the full tier only.
    pub fn full(config: C, why: &'static str) -> Self {
        Case {
            config,
            why,
            tier: Tier::Full,
            exact: false,
        }
    }

    /// Also checked with every reduction off, and audited.
    pub fn exact(self) -> Self {
        Case {
            exact: true,
            ..self
        }
    }

    /// Whether a run of `tier` takes this case.
    pub fn runs_in(&self, tier: Tier) -> bool {
        self.tier <= tier
    }
}
