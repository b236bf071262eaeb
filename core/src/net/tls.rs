//! QUIC/TLS set-up where trust is in Ed25519 keys, not certificate authorities.
//!
//! Every party (relay or wallet) presents a self-signed certificate carrying its Ed25519 key,
//! and proves it holds that key by signing the TLS 1.3 handshake with it. A wallet pins its
//! relay's key (from an invitation or its configuration); a relay accepts any well-formed key
//! and learns who the client is from it (mutual TLS). The certificate's own signature is not
//! checked: the handshake signature, verified against the key in the certificate, is what
//! proves possession, and no issuer is trusted for anything.
//!
//! A relay may also hold a CA-signed certificate for a DNS name (any key type the CA issued).
//! It serves that certificate to clients that ask for a name other than [`SERVER_NAME`], and
//! keeps serving its own Ed25519 certificate to clients that pin its key. A client that knows
//! only the name checks the relay the WebPKI way ([`web_client_config`]), then asks the relay
//! to sign the connection's TLS exporter with its Ed25519 key ([`identity_binding`]): that
//! proves the relay's Offst key on this very connection, which a man in the middle (even one
//! with a mis-issued certificate) cannot forward. From then on the client pins that key.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, PeerMisbehaved,
    SignatureScheme,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::protocol::identity::{BadSignature, Identity, NodeId, Signature};

/// The ALPN of Offst's relay protocol, version 1.
pub const ALPN: &[u8] = b"offst-relay/1";
/// The TLS server name clients send. Nobody checks it: the pinned key is the identity.
pub const SERVER_NAME: &str = "relay.offst.invalid";

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): algorithm 1.3.101.112 with no
/// parameters, then a 33-byte BIT STRING (no unused bits) holding the 32 key bytes. Ed25519
/// keys have exactly one encoding, so comparing these bytes leaves no room for tricks.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate for our key could not be built.
    #[error("could not build a certificate for this key: {0}")]
    Certificate(String),
    /// The TLS library refused the configuration.
    #[error("TLS configuration refused: {0}")]
    Config(String),
    /// A PEM file (certificate chain, private key or roots) could not be used.
    #[error("{path}: {detail}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong with it.
        detail: String,
    },
}

/// Why a peer's certificate was refused.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerCertError {
    /// Not a parsable certificate.
    #[error("malformed certificate: {0}")]
    Malformed(String),
    /// The key is not Ed25519.
    #[error("the certificate's key is not Ed25519")]
    NotEd25519,
    /// An invalid or weak Ed25519 point.
    #[error("the certificate carries an invalid or weak Ed25519 key")]
    WeakKey,
    /// More than one certificate.
    #[error("expected one self-signed certificate, got {0} more")]
    Chain(usize),
    /// No certificate.
    #[error("the peer presented no certificate")]
    None,
    /// The relay is not the one pinned.
    #[error("wrong relay key: expected {expected}, the relay has {found}")]
    WrongRelayKey {
        /// The pinned key.
        expected: NodeId,
        /// What the relay presented.
        found: NodeId,
    },
}

// rustls prints `CertificateError::Other` with `{:?}`; make that the readable text.
impl std::fmt::Debug for PeerCertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl From<PeerCertError> for rustls::Error {
    fn from(e: PeerCertError) -> Self {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
    }
}

/// The crypto provider (ring), passed explicitly everywhere: no process-wide default.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed certificate for `identity`, with its key, ready for rustls.
pub fn certified_key(identity: &Identity) -> Result<Arc<CertifiedKey>, TlsError> {
    let signing = ed25519_dalek::SigningKey::from_bytes(&identity.seed());
    let pkcs8 = signing
        .to_pkcs8_der()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let der = PrivatePkcs8KeyDer::from(pkcs8.as_bytes().to_vec());
    let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519)
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("offst {}", identity.id()),
    );
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let chain = vec![cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(der);
    let certified = CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    match certified.cert.first().map(cert_key) {
        Some(Ok(id)) if id == identity.id() => Ok(Arc::new(certified)),
        _ => Err(TlsError::Certificate(
            "the certificate does not carry this key".into(),
        )),
    }
}

/// The Ed25519 key a certificate carries, checked to be a valid, strong point.
pub fn cert_key(cert: &CertificateDer<'_>) -> Result<NodeId, PeerCertError> {
    let (rest, parsed) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| PeerCertError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(PeerCertError::Malformed("trailing bytes".into()));
    }
    let spki = parsed.tbs_certificate.subject_pki.raw;
    let key = spki
        .strip_prefix(ED25519_SPKI_PREFIX.as_slice())
        .ok_or(PeerCertError::NotEd25519)?;
    let key: [u8; 32] = key.try_into().map_err(|_| PeerCertError::NotEd25519)?;
    let point = VerifyingKey::from_bytes(&key).map_err(|_| PeerCertError::WeakKey)?;
    if point.is_weak() {
        return Err(PeerCertError::WeakKey);
    }
    Ok(NodeId::from_bytes(key))
}

/// The key of the peer on an established connection.
pub fn peer_id(conn: &quinn::Connection) -> Result<NodeId, PeerCertError> {
    let chain = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or(PeerCertError::None)?;
    cert_key(chain.first().ok_or(PeerCertError::None)?)
}

fn handshake_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into());
    }
    // Verifies the handshake signature with the key in `cert`: the proof of possession.
    rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
}

/// A wallet's (or a forwarding relay's) check of the relay it connects to: exactly the pinned
/// key, and a handshake signed with it.
#[derive(Debug)]
pub struct PinnedRelay {
    expected: NodeId,
    algs: WebPkiSupportedAlgorithms,
}

impl PinnedRelay {
    /// Pin `expected`.
    pub fn new(expected: NodeId) -> PinnedRelay {
        PinnedRelay {
            expected,
            algs: provider().signature_verification_algorithms,
        }
    }

    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), PeerCertError> {
        let found = cert_key(cert)?;
        if found != self.expected {
            return Err(PeerCertError::WrongRelayKey {
                expected: self.expected,
                found,
            });
        }
        Ok(())
    }
}

impl ServerCertVerifier for PinnedRelay {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !intermediates.is_empty() {
            return Err(PeerCertError::Chain(intermediates.len()).into());
        }
        self.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.check(cert)?;
        handshake_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// A relay's check of its clients: any well-formed Ed25519 key that signs the handshake.
#[derive(Debug)]
pub struct AnyEd25519Client {
    algs: WebPkiSupportedAlgorithms,
}

impl Default for AnyEd25519Client {
    fn default() -> Self {
        AnyEd25519Client {
            algs: provider().signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for AnyEd25519Client {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if !intermediates.is_empty() {
            return Err(PeerCertError::Chain(intermediates.len()).into());
        }
        cert_key(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        cert_key(cert)?;
        handshake_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

fn transport(idle: Duration, keep_alive: Option<Duration>) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(quinn::IdleTimeout::try_from(idle).ok());
    t.keep_alive_interval(keep_alive);
    // The protocol uses one bidirectional stream per connection.
    t.max_concurrent_uni_streams(0u32.into());
    t.max_concurrent_bidi_streams(4u32.into());
    Arc::new(t)
}

/// A CA-signed certificate chain and its private key, loaded from PEM files (the leaf first,
/// then intermediates, as a CA hands them out; the key in PKCS#8, PKCS#1 or SEC1 form).
pub fn load_ca_certificate(chain: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let pem_err = |path: &Path, detail: String| TlsError::Pem {
        path: path.display().to_string(),
        detail,
    };
    let certs = load_pem_certs(chain)?;
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| pem_err(key, format!("no usable private key: {e}")))?;
    let certified = CertifiedKey::from_der(certs, private, &provider()).map_err(|e| {
        pem_err(
            key,
            format!("does not fit the certificate in the chain: {e}"),
        )
    })?;
    Ok(Arc::new(certified))
}

/// Every certificate in the PEM file at `path` (at least one).
pub fn load_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_err = |detail: String| TlsError::Pem {
        path: path.display().to_string(),
        detail,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err("no certificate in the file".into()));
    }
    Ok(certs)
}

/// The roots a client trusts for relays it knows only by name: Mozilla's list (compiled in)
/// plus `extra` (a private CA, or a test's).
pub fn web_roots(
    extra: &[CertificateDer<'static>],
) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra {
        roots
            .add(cert.clone())
            .map_err(|e| TlsError::Config(format!("unusable root certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// The relay's choice of certificate: its own Ed25519 one for clients that pin its key (they
/// ask for [`SERVER_NAME`]), the CA-signed one, if configured, for everyone else.
#[derive(Debug)]
struct RelayCertificates {
    own: Arc<CertifiedKey>,
    ca: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for RelayCertificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match (&self.ca, hello.server_name()) {
            (Some(ca), name) if name != Some(SERVER_NAME) => Some(ca.clone()),
            _ => Some(self.own.clone()),
        }
    }
}

/// The relay's QUIC server configuration: its own certificate, and `ca` (a CA-signed one, see
/// [`load_ca_certificate`]) for clients that check it by name.
pub fn server_config(
    identity: &Identity,
    ca: Option<Arc<CertifiedKey>>,
) -> Result<quinn::ServerConfig, TlsError> {
    let provider = provider();
    let certs = RelayCertificates {
        own: certified_key(identity)?,
        ca,
    };
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(Arc::new(AnyEd25519Client::default()))
        .with_cert_resolver(Arc::new(certs));
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.send_tls13_tickets = 0;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport(Duration::from_secs(60), None));
    Ok(config)
}

/// A client configuration that presents `identity` and accepts only the relay `relay`.
pub fn client_config(identity: &Identity, relay: NodeId) -> Result<quinn::ClientConfig, TlsError> {
    let provider = provider();
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedRelay::new(relay)))
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified_key(identity)?)));
    finish_client(tls)
}

/// A client configuration that presents `identity` and checks the relay by its certificate's
/// name and a chain to `roots` (for a relay known only by name; see [`identity_binding`]).
pub fn web_client_config(
    identity: &Identity,
    roots: Arc<rustls::RootCertStore>,
) -> Result<quinn::ClientConfig, TlsError> {
    let provider = provider();
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_webpki_verifier(verifier)
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified_key(identity)?)));
    finish_client(tls)
}

fn finish_client(mut tls: rustls::ClientConfig) -> Result<quinn::ClientConfig, TlsError> {
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.resumption = rustls::client::Resumption::disabled();
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    // A relay that died without a word (killed, or its network gone) is noticed within the
    // idle timeout; keep-alives keep a quiet but live connection open.
    config.transport_config(transport(
        Duration::from_secs(20),
        Some(Duration::from_secs(5)),
    ));
    Ok(config)
}

/// Domain of the relay's signature over a connection's TLS exporter.
const IDENTITY_DOMAIN: &str = "offst relay identity v1";
/// The exporter label (RFC 8446 section 7.5).
const IDENTITY_LABEL: &[u8] = b"EXPORTER-offst-relay-identity";

/// The value both ends of `conn` derive from its TLS session and that no other connection
/// shares: what a relay signs to prove its Ed25519 key on this connection.
pub fn identity_binding(conn: &quinn::Connection) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, IDENTITY_LABEL, b"")
        .ok()
        .map(|()| out)
}

/// The relay's proof of its key on the connection with `binding`.
pub fn prove_identity(identity: &Identity, binding: &[u8; 32]) -> Signature {
    identity.sign(IDENTITY_DOMAIN, binding)
}

/// Check a relay's proof that `key` is its key on the connection with `binding`.
pub fn check_identity(
    key: NodeId,
    binding: &[u8; 32],
    proof: &Signature,
) -> Result<(), BadSignature> {
    key.verify(IDENTITY_DOMAIN, binding, proof)
}
