//! TLS 1.3 under every connection, before the key proof of [`crate::runtime::handshake`].
//!
//! ```text
//!  TCP ─▶ TLS 1.3, both sides present a certificate ─▶ key proof (HMAC, bound to this TLS
//!         (rustls; TLS 1.2 is not compiled in)           session's exporter) ─▶ the claimed
//!                                                        id checked against the peer's
//!                                                        certificate ─▶ frames
//! ```
//!
//! Three modes, one per [`Security`] variant, the same for every protocol:
//!
//! - [`Security::DerivedKey`] (the default; needs no file): each id's Ed25519 key is derived
//!   from the cluster key, `HKDF-SHA256(cluster key, "replicore tls key v1", cluster ‖ id)`,
//!   and self-signed. A peer is accepted only if its certificate's public key is the one
//!   derived for the id it claims. Anyone holding the cluster key can derive every id's key,
//!   so this mode encrypts and authenticates frames against the path but does not separate
//!   roles (docs/runtime.md, "Security model").
//! - [`Security::Certificates`]: a CA bundle, this side's certificate chain and key, PEM
//!   files. A peer's chain must lead to a CA of the bundle and be valid now; an accepting
//!   node's leaf must allow server auth, a dialing one's client auth. Its DNS names say which
//!   ids it may claim: `node-<id>.cluster-<c>.replicore` exactly that node id,
//!   `client.cluster-<c>.replicore` any client id (at or above
//!   [`crate::runtime::transport::CLIENT_ID_MIN`]), so a client's credential cannot speak as
//!   a node and one node's cannot speak as another. The files are read again by
//!   [`CertFiles::reload`] (the CLI calls it on SIGHUP); new connections use what it read.
//! - [`Security::Plain`]: plain TCP, for benchmarks and loopback tests only; the CLI warns.
//!
//! A peer that is not a TLS client (a plain-text replicore, garbage) is closed before any
//! byte is answered.

use crate::runtime::handshake::{HandshakeError, Identity};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The label of the TLS exporter value the key proof signs (RFC 8446 §7.5), so a proof made
/// inside one TLS session is worthless in any other.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-replicore-key-proof";

/// The first byte of every TLS record that opens a connection (a handshake record).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// How a node or client secures its connections.
#[derive(Clone, Default)]
pub enum Security {
    /// TLS 1.3 with keys derived from the cluster key and pinned by id (no file needed).
    #[default]
    DerivedKey,
    /// TLS 1.3 with certificates from files, checked against a CA bundle.
    Certificates(CertFiles),
    /// Plain TCP: frames are neither encrypted nor authenticated after the handshake.
    Plain,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Security::DerivedKey => f.write_str("DerivedKey"),
            Security::Certificates(c) => write!(f, "Certificates({:?})", c.paths),
            Security::Plain => f.write_str("Plain"),
        }
    }
}

impl Security {
    /// A short name for logs: `tls (derived keys)`, `tls (certificates)` or `plain`.
    pub fn describe(&self) -> &'static str {
        match self {
            Security::DerivedKey => "tls (keys derived from the cluster key)",
            Security::Certificates(_) => "tls (certificates)",
            Security::Plain => "plain tcp (unencrypted, unauthenticated frames)",
        }
    }
}

/// Where a side's certificate files are.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct CertPaths {
    /// The CA bundle (PEM, one or more certificates: during a CA rollover, the old and the
    /// new one).
    pub ca: PathBuf,
    /// This side's certificate chain (PEM, the leaf first).
    pub cert: PathBuf,
    /// This side's private key (PEM: PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

/// Certificates loaded from [`CertPaths`], reloadable while connections are served.
#[derive(Clone)]
pub struct CertFiles {
    paths: Arc<CertPaths>,
    current: Arc<RwLock<Arc<Configs>>>,
}

/// The rustls configurations of one side.
struct Configs {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

impl CertFiles {
    /// Reads and checks the files (the key must match the certificate).
    pub fn load(paths: CertPaths) -> Result<Self, TlsError> {
        let configs = load_configs(&paths)?;
        Ok(CertFiles {
            paths: Arc::new(paths),
            current: Arc::new(RwLock::new(Arc::new(configs))),
        })
    }

    /// Reads the files again; connections opened from now on use them. On an error the
    /// files in use stay in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let configs = load_configs(&self.paths)?;
        // A poisoned lock only means a panic elsewhere while swapping an Arc; the value is
        // still a whole Arc, so take it.
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(configs);
        Ok(())
    }

    /// The files.
    pub fn paths(&self) -> &CertPaths {
        &self.paths
    }

    fn configs(&self) -> Arc<Configs> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A local TLS setup that cannot be used: a missing or bad file, a key that does not match.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {path}: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate file holds no certificate.
    #[error("{path} holds no certificate")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A CA certificate is not usable as a trust anchor.
    #[error("bad CA certificate in {path}: {source}")]
    BadCa {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: rustls::Error,
    },
    /// The CA bundle could not make a verifier.
    #[error("bad CA bundle {path}: {source}")]
    Verifier {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: rustls::client::VerifierBuilderError,
    },
    /// The certificate and key do not make a TLS configuration (e.g. they do not match).
    #[error("cannot use {cert} with {key}: {source}")]
    Credential {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// The cause.
        source: rustls::Error,
    },
    /// A TLS configuration could not be built (a local bug).
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// A certificate could not be generated.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A generated file could not be written or read.
    #[error("cannot write or read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// The DNS name a certificate must carry to claim `node_id` in cluster `cluster_id`.
pub fn name_for(cluster_id: u64, node_id: u64) -> String {
    if node_id >= crate::runtime::transport::CLIENT_ID_MIN {
        format!("client.cluster-{cluster_id}.replicore")
    } else {
        format!("node-{node_id}.cluster-{cluster_id}.replicore")
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

fn pem_error(path: &Path) -> impl FnOnce(rustls::pki_types::pem::Error) -> TlsError + '_ {
    move |source| TlsError::Pem {
        path: path.to_path_buf(),
        source,
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_error(path))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error(path))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn load_configs(paths: &CertPaths) -> Result<Configs, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in read_certs(&paths.ca)? {
        roots.add(ca).map_err(|source| TlsError::BadCa {
            path: paths.ca.clone(),
            source,
        })?;
    }
    let roots = Arc::new(roots);
    let chain = read_certs(&paths.cert)?;
    let key = PrivateKeyDer::from_pem_file(&paths.key).map_err(pem_error(&paths.key))?;
    let credential = |source| TlsError::Credential {
        cert: paths.cert.clone(),
        key: paths.key.clone(),
        source,
    };
    let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|source| TlsError::Verifier {
            path: paths.ca.clone(),
            source,
        })?;
    let server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(clients)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(credential)?;
    let client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerVerifier { roots: Some(roots) }))
        .with_client_auth_cert(chain, key)
        .map_err(credential)?;
    Ok(Configs {
        client: Arc::new(client),
        server: Arc::new(server),
    })
}

/// The PKCS#8 v1 encoding of an Ed25519 private key around its 32-byte seed (RFC 8410).
fn ed25519_pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut der = PREFIX.to_vec();
    der.extend_from_slice(seed);
    der
}

/// The key pair derived for `node_id` from the cluster key.
fn derived_key(key: &[u8], cluster_id: u64, node_id: u64) -> Result<rcgen::KeyPair, TlsError> {
    let mut info = [0u8; 16];
    info[..8].copy_from_slice(&cluster_id.to_be_bytes());
    info[8..].copy_from_slice(&node_id.to_be_bytes());
    let mut seed = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(Some(b"replicore tls key v1"), key)
        .expand(&info, &mut seed)
        // 32 bytes is far below HKDF-SHA256's limit of 255 × 32.
        .unwrap_or_else(|_| unreachable!("a 32-byte HKDF output is always valid"));
    let der = PrivatePkcs8KeyDer::from(ed25519_pkcs8(&seed));
    Ok(rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &der,
        &rcgen::PKCS_ED25519,
    )?)
}

/// The self-signed certificate and key derived for `node_id` from the cluster key.
fn derived_credential(
    key: &[u8],
    cluster_id: u64,
    node_id: u64,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
    let pair = derived_key(key, cluster_id, node_id)?;
    let mut params = rcgen::CertificateParams::new(vec![name_for(cluster_id, node_id)])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name_for(cluster_id, node_id));
    let cert = params.self_signed(&pair)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pair.serialize_der()));
    Ok((cert.der().clone(), key))
}

fn derived_configs(me: &Identity) -> Result<Configs, TlsError> {
    let (cert, key) = derived_credential(&me.key, me.cluster_id, me.node_id)?;
    let verifier = Arc::new(PeerVerifier { roots: None });
    let server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(vec![cert.clone()], key.clone_key())?;
    let client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![cert], key)?;
    Ok(Configs {
        client: Arc::new(client),
        server: Arc::new(server),
    })
}

/// Checks a peer's certificate during the TLS handshake: with `roots`, its chain and
/// validity (as a server's, when this side dials); without, only that it parses (derived
/// keys are pinned by [`check_peer`] once the peer has claimed an id). Either way the peer
/// must sign the handshake with the certificate's key.
#[derive(Debug)]
struct PeerVerifier {
    roots: Option<Arc<RootCertStore>>,
}

impl PeerVerifier {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        if let Some(roots) = &self.roots {
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &parsed,
                roots,
                intermediates,
                now,
                algorithms().all,
            )?;
        }
        Ok(())
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The name is checked against the id the peer claims, after the key proof.
        self.check(end_entity, intermediates, now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is offered or accepted.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Used for derived keys only (certificates go through webpki's client verifier).
        ParsedCertificate::try_from(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ServerCertVerifier::verify_tls12_signature(self, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

/// A connection's byte stream: plain TCP or TLS over it.
pub enum Stream {
    /// Plain TCP ([`Security::Plain`]).
    Plain(TcpStream),
    /// TLS 1.3 over TCP.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl Stream {
    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Stream::Plain(s) => s.peer_addr(),
            Stream::Tls(s) => s.get_ref().0.peer_addr(),
        }
    }

    /// The peer's certificate (its leaf), on a TLS stream.
    pub fn peer_certificate(&self) -> Option<&CertificateDer<'static>> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(s) => s.get_ref().1.peer_certificates()?.first(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Whether an I/O error is TLS's (a bad record, an alert from the peer).
pub fn is_tls_error(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
}

/// What the key proof signs besides the hellos: the TLS session's exporter value, or
/// nothing on plain TCP.
pub type Binding = Vec<u8>;

fn local(e: TlsError) -> HandshakeError {
    HandshakeError::LocalTls(Box::new(e))
}

fn exporter<C>(conn: &rustls::ConnectionCommon<C>) -> Result<Binding, HandshakeError> {
    conn.export_keying_material(vec![0u8; 32], EXPORTER_LABEL, None)
        .map_err(|e| HandshakeError::Tls(io::Error::other(e)))
}

/// The dialing side's TLS handshake on `tcp` (nothing on plain TCP).
pub async fn dial(tcp: TcpStream, me: &Identity) -> Result<(Stream, Binding), HandshakeError> {
    let config = match &me.security {
        Security::Plain => return Ok((Stream::Plain(tcp), Vec::new())),
        Security::DerivedKey => derived_configs(me).map_err(local)?.client,
        Security::Certificates(files) => files.configs().client.clone(),
    };
    // The name is not used to check the peer (its claimed id is, after the key proof).
    let name =
        ServerName::try_from("replicore").unwrap_or_else(|_| unreachable!("a valid DNS name"));
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(HandshakeError::Tls)?;
    let binding = exporter(tls.get_ref().1)?;
    Ok((Stream::Tls(Box::new(tls.into())), binding))
}

/// The accepting side's TLS handshake on `tcp` (nothing on plain TCP). A peer whose first
/// byte does not open a TLS handshake is refused without an answer.
pub async fn accept(tcp: TcpStream, me: &Identity) -> Result<(Stream, Binding), HandshakeError> {
    let mut first = [0u8; 1];
    let n = tcp.peek(&mut first).await?;
    if n == 0 {
        return Err(HandshakeError::Closed);
    }
    let config = match &me.security {
        Security::Plain if first[0] == TLS_HANDSHAKE_RECORD => {
            return Err(HandshakeError::PeerWantsTls);
        }
        Security::Plain => return Ok((Stream::Plain(tcp), Vec::new())),
        _ if first[0] != TLS_HANDSHAKE_RECORD => return Err(HandshakeError::NotTls),
        Security::DerivedKey => derived_configs(me).map_err(local)?.server,
        Security::Certificates(files) => files.configs().server.clone(),
    };
    let tls = tokio_rustls::TlsAcceptor::from(config)
        .accept(tcp)
        .await
        .map_err(HandshakeError::Tls)?;
    let binding = exporter(tls.get_ref().1)?;
    Ok((Stream::Tls(Box::new(tls.into())), binding))
}

/// After the key proof: the peer's certificate `cert` must be one that may claim `peer`, the
/// id it proved the key for.
pub fn check_peer(
    cert: Option<&CertificateDer<'static>>,
    me: &Identity,
    peer: u64,
) -> Result<(), HandshakeError> {
    let refuse = |names: Vec<String>| HandshakeError::Credential {
        node_id: peer,
        names: names.join(","),
    };
    let cert = match (&me.security, cert) {
        (Security::Plain, _) => return Ok(()),
        (_, Some(c)) => c,
        (_, None) => return Err(refuse(Vec::new())),
    };
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| HandshakeError::Tls(io::Error::other(e)))?;
    let names: Vec<String> = parsed.valid_dns_names().map(str::to_string).collect();
    match &me.security {
        Security::Plain => Ok(()),
        Security::DerivedKey => {
            let pair = derived_key(&me.key, me.cluster_id, peer).map_err(local)?;
            if parsed.subject_public_key_info().as_ref() == pair.public_key_der().as_slice() {
                Ok(())
            } else {
                Err(refuse(names))
            }
        }
        Security::Certificates(_) => {
            let wanted = name_for(me.cluster_id, peer);
            if names.contains(&wanted) {
                Ok(())
            } else {
                Err(refuse(names))
            }
        }
    }
}

/// The roles an [`Authority`] issues certificates for.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Role {
    /// Node `id`: may claim exactly that id, and both accept and dial.
    Node(u64),
    /// A client: may claim any client id, and only dial.
    Client,
}

impl Role {
    /// The file stem of its certificate and key: `node-<id>` or `client`.
    pub fn stem(&self) -> String {
        match self {
            Role::Node(id) => format!("node-{id}"),
            Role::Client => "client".to_string(),
        }
    }
}

fn ca_params(cluster_id: u64) -> Result<rcgen::CertificateParams, TlsError> {
    let mut params = rcgen::CertificateParams::new(Vec::new())?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("replicore cluster {cluster_id} CA"),
    );
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    Ok(params)
}

/// A certificate authority that issues a cluster's certificates (`replicore gen-certs`).
pub struct Authority {
    issuer: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Authority {
    /// A fresh CA named after the cluster.
    pub fn new(cluster_id: u64) -> Result<Self, TlsError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let params = ca_params(cluster_id)?;
        let issuer = params.self_signed(&key)?;
        Ok(Authority { issuer, key })
    }

    /// The CA of cluster `cluster_id` saved by [`Authority::save`] in `dir` (`ca.pem`,
    /// `ca.key`), to issue more certificates under it.
    pub fn open(dir: &Path, cluster_id: u64) -> Result<Self, TlsError> {
        let path = dir.join("ca.key");
        let pem = std::fs::read_to_string(&path).map_err(|source| TlsError::Io { path, source })?;
        let key = rcgen::KeyPair::from_pem(&pem)?;
        // The same subject and key make an issuer whose certificates verify under the saved
        // `ca.pem`: a leaf refers to its issuer by name and is checked with its key.
        let issuer = ca_params(cluster_id)?.self_signed(&key)?;
        Ok(Authority { issuer, key })
    }

    /// Writes `ca.pem` (the CA certificate) and `ca.key` (its key, mode 0600) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        write_file(&dir.join("ca.pem"), &self.issuer.pem(), false)?;
        write_file(&dir.join("ca.key"), &self.key.serialize_pem(), true)
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Issues a certificate for `role` in cluster `cluster_id`, valid from `not_before` to
    /// `not_after` (seconds since the Unix epoch), and writes `<stem>.pem` and `<stem>.key`
    /// into `dir`.
    pub fn issue(
        &self,
        dir: &Path,
        cluster_id: u64,
        role: Role,
        not_before: i64,
        not_after: i64,
    ) -> Result<(), TlsError> {
        let name = match role {
            Role::Node(id) => name_for(cluster_id, id),
            Role::Client => name_for(cluster_id, crate::runtime::transport::CLIENT_ID_MIN),
        };
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(vec![name.clone()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = match role {
            Role::Node(_) => vec![
                rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Role::Client => vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth],
        };
        let time = |secs: i64| {
            time::OffsetDateTime::from_unix_timestamp(secs)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        };
        params.not_before = time(not_before);
        params.not_after = time(not_after);
        let cert = params.signed_by(&key, &self.issuer, &self.key)?;
        let stem = role.stem();
        write_file(&dir.join(format!("{stem}.pem")), &cert.pem(), false)?;
        write_file(&dir.join(format!("{stem}.key")), &key.serialize_pem(), true)
    }
}

fn write_file(path: &Path, text: &str, secret: bool) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_depend_on_the_key_the_cluster_and_the_id_only() {
        let a = derived_key(b"k", 1, 3).unwrap().public_key_der();
        assert_eq!(a, derived_key(b"k", 1, 3).unwrap().public_key_der());
        assert_ne!(a, derived_key(b"k", 1, 4).unwrap().public_key_der());
        assert_ne!(a, derived_key(b"k", 2, 3).unwrap().public_key_der());
        assert_ne!(a, derived_key(b"other", 1, 3).unwrap().public_key_der());
        // The certificate carries the derived key, as check_peer compares it.
        let (cert, _) = derived_credential(b"k", 1, 3).unwrap();
        let parsed = webpki::EndEntityCert::try_from(&cert).unwrap();
        assert_eq!(parsed.subject_public_key_info().as_ref(), a.as_slice());
    }

    #[test]
    fn names_separate_nodes_from_clients() {
        assert_eq!(name_for(1, 0), "node-0.cluster-1.replicore");
        assert_eq!(
            name_for(1, crate::runtime::transport::CLIENT_ID_MIN + 5),
            "client.cluster-1.replicore"
        );
    }

    #[test]
    fn missing_and_bad_files_are_one_line_errors() {
        let dir = tempfile::tempdir().unwrap();
        let paths = CertPaths {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("node-0.pem"),
            key: dir.path().join("node-0.key"),
        };
        let e = CertFiles::load(paths.clone()).err().unwrap().to_string();
        assert!(e.contains("ca.pem"), "{e}");
        std::fs::write(&paths.ca, "not a certificate").unwrap();
        let e = CertFiles::load(paths.clone()).err().unwrap().to_string();
        assert!(e.contains("holds no certificate"), "{e}");
        let ca = Authority::new(1).unwrap();
        ca.save(dir.path()).unwrap();
        ca.issue(dir.path(), 1, Role::Node(0), 0, i64::from(u32::MAX))
            .unwrap();
        CertFiles::load(paths.clone()).unwrap();
        // A key that is not the certificate's.
        ca.issue(dir.path(), 1, Role::Node(1), 0, i64::from(u32::MAX))
            .unwrap();
        let mismatched = CertPaths {
            key: dir.path().join("node-1.key"),
            ..paths
        };
        let e = CertFiles::load(mismatched).err().unwrap().to_string();
        assert!(e.contains("cannot use"), "{e}");
        assert_eq!(e.lines().count(), 1);
    }
}
