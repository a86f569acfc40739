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
//! transport = "tls"                                # optional: "tls" (default) or "plain"
//!
//! [tls]                  # optional: certificates from files instead of keys derived from `key`
//! ca = "certs/ca.pem"    # the CA bundle (old and new CA during a rollover)
//! cert = "certs/{name}.pem"   # {name} is node-<id> for a node, client for a client
//! key = "certs/{name}.key"    # relative paths are relative to the cluster file
//!
//! [faults]                                         # optional, for testing: see
//! seed = 7                                         # `crate::runtime::faults::FaultPlan`
//! loss = 0.05
//! ```
//!
//! `[faults]` is refused by a build without the `testing` feature ([`ConfigError::TestingOnly`]):
//! a deployed node never injects faults because of a stray table in its cluster file.

use crate::runtime::tls::{CertFiles, CertPaths, Role, Security, TlsError};
use serde::Deserialize;
use std::path::{Path, PathBuf};

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
    /// TLS (the default) or plain TCP.
    pub transport: Option<TransportMode>,
    /// Certificate files; without them TLS uses keys derived from the cluster key.
    pub tls: Option<TlsFiles>,
    /// The directory of the file it was loaded from (relative certificate paths start here).
    #[serde(skip)]
    pub dir: Option<PathBuf>,
}

/// How connections are carried.
#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum TransportMode {
    /// TLS 1.3.
    #[default]
    Tls,
    /// Plain TCP (benchmarks and loopback tests only).
    Plain,
}

/// The `[tls]` table: certificate files, `{name}` standing for `node-<id>` or `client`.
#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The CA bundle.
    pub ca: String,
    /// The certificate chain.
    pub cert: String,
    /// The private key.
    pub key: String,
}

impl TlsFiles {
    /// The files of `role`, relative paths taken from `dir`.
    pub fn paths(&self, role: Role, dir: Option<&Path>) -> CertPaths {
        let stem = role.stem();
        let path = |template: &str| {
            let p = PathBuf::from(template.replace("{name}", &stem));
            match dir {
                Some(d) if p.is_relative() => d.join(p),
                _ => p,
            }
        };
        CertPaths {
            ca: path(&self.ca),
            cert: path(&self.cert),
            key: path(&self.key),
        }
    }
}

/// The transport a process uses, from a cluster file and flags: plain, or TLS with
/// certificate files or derived keys.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct TransportSettings {
    /// Plain TCP.
    pub plain: bool,
    /// The certificate files, if any.
    pub files: Option<TlsFiles>,
    /// Where relative certificate paths start.
    pub dir: Option<PathBuf>,
}

impl TransportSettings {
    /// The security of a process acting as `role`: certificates are read (and checked) here.
    pub fn security(&self, role: Role) -> Result<Security, TlsError> {
        if self.plain {
            return Ok(Security::Plain);
        }
        match &self.files {
            Some(files) => Ok(Security::Certificates(CertFiles::load(
                files.paths(role, self.dir.as_deref()),
            )?)),
            None => Ok(Security::DerivedKey),
        }
    }
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
    /// The file has a table only a build with the `testing` feature takes.
    #[error(
        "{path}: the [{table}] table is for tests, and this replicore was built without the testing feature"
    )]
    TestingOnly {
        /// The file.
        path: String,
        /// The table.
        table: &'static str,
    },
}

impl ClusterFile {
    /// Reads and parses a cluster file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut file = Self::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source: Box::new(source),
        })?;
        file.refuse_testing_only(path, cfg!(feature = "testing"))?;
        file.dir = Some(match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        });
        Ok(file)
    }

    /// Refuses the tables a build without the `testing` feature must not take.
    fn refuse_testing_only(&self, path: &Path, testing: bool) -> Result<(), ConfigError> {
        if self.faults.is_some() && !testing {
            return Err(ConfigError::TestingOnly {
                path: path.display().to_string(),
                table: "faults",
            });
        }
        Ok(())
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
        assert_eq!(f.faults.as_ref().map(|p| (p.seed, p.loss)), Some((3, 0.5)));
        assert!(ClusterFile::parse("[faults]\nseed = 3\nlos = 0.5\n").is_err());
        // Only a testing build takes it.
        let path = Path::new("cluster.toml");
        assert!(f.refuse_testing_only(path, true).is_ok());
        let refused = f.refuse_testing_only(path, false).unwrap_err().to_string();
        assert!(refused.contains("[faults] table is for tests"), "{refused}");
        let plain = ClusterFile::parse("cluster_id = 1\n").unwrap();
        assert!(plain.refuse_testing_only(path, false).is_ok());
    }

    #[test]
    fn transport_and_certificate_files() {
        let f = ClusterFile::parse("transport = \"plain\"\n").unwrap();
        assert_eq!(f.transport, Some(TransportMode::Plain));
        assert!(ClusterFile::parse("transport = \"udp\"\n").is_err());
        let f = ClusterFile::parse(
            "[tls]\nca = \"c/ca.pem\"\ncert = \"c/{name}.pem\"\nkey = \"/k/{name}.key\"\n",
        )
        .unwrap();
        let paths = f
            .tls
            .unwrap()
            .paths(Role::Node(2), Some(Path::new("/etc/rc")));
        assert_eq!(paths.ca, PathBuf::from("/etc/rc/c/ca.pem"));
        assert_eq!(paths.cert, PathBuf::from("/etc/rc/c/node-2.pem"));
        assert_eq!(paths.key, PathBuf::from("/k/node-2.key"));
        assert!(ClusterFile::parse("[tls]\nca = \"a\"\ncert = \"b\"\n").is_err());
    }
}
