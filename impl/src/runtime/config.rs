//! The cluster file (TOML), shared by every node and client of a cluster.
//!
//! ```toml
//! cluster_id = 1
//! key = "a long shared secret"
//! master = "127.0.0.1:7000"
//! slaves = ["127.0.0.1:7001", "127.0.0.1:7002"]   # slave i has node id i
//! heartbeat_ms = 100                               # optional
//! history = 256                                    # optional
//! max_frame_bytes = 67108864                       # optional
//!
//! [faults]                                         # optional, for testing: see
//! seed = 7                                         # `crate::runtime::faults::FaultPlan`
//! loss = 0.05
//! ```

use serde::Deserialize;
use std::path::Path;

/// A cluster's configuration. Every field can also be given (or overridden) by a CLI flag.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// The cluster id.
    pub cluster_id: Option<u64>,
    /// The pre-shared key.
    pub key: Option<String>,
    /// The master's address.
    pub master: Option<String>,
    /// The slaves' addresses; the i-th (from 1) is node id i.
    #[serde(default)]
    pub slaves: Vec<String>,
    /// The master's heartbeat period, in milliseconds.
    pub heartbeat_ms: Option<u64>,
    /// How many committed steps the master remembers for deltas.
    pub history: Option<usize>,
    /// The largest frame, in bytes.
    pub max_frame_bytes: Option<usize>,
    /// Faults every node injects into the frames it sends (testing only; off when absent).
    pub faults: Option<crate::runtime::faults::FaultPlan>,
}

/// A cluster file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("invalid config {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The cause.
        source: Box<toml::de::Error>,
    },
}

impl ClusterFile {
    /// Reads and parses a cluster file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source: Box::new(source),
        })
    }

    /// Parses a cluster file's text.
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let f = ClusterFile::parse(
            "cluster_id = 1\nkey = \"k\"\nmaster = \"127.0.0.1:7000\"\nslaves = [\"127.0.0.1:7001\"]\nheartbeat_ms = 50\n",
        )
        .unwrap();
        assert_eq!(f.cluster_id, Some(1));
        assert_eq!(f.slaves.len(), 1);
        assert_eq!(f.heartbeat_ms, Some(50));
        assert!(ClusterFile::parse("bogus = 1").is_err());
        let f = ClusterFile::parse("cluster_id = 1\n[faults]\nseed = 3\nloss = 0.5\n").unwrap();
        assert_eq!(f.faults.map(|p| (p.seed, p.loss)), Some((3, 0.5)));
        assert!(ClusterFile::parse("[faults]\nseed = 3\nlos = 0.5\n").is_err());
    }
}
