//! The fake's certificates (a CA and a leaf for `localhost` / `127.0.0.1`) and its rustls config.

use std::fmt::Write as _;
use std::sync::{Arc, PoisonError, RwLock};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use rustls::ServerConfig;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// One generation of certificates.
pub(crate) struct CertSet {
    /// PEM of the CA.
    pub(crate) ca_pem: String,
    /// Lowercase hex SHA-256 of the leaf's DER.
    pub(crate) leaf_sha256: String,
    /// The leaf (alone: the CA is the client's trust anchor) and its key.
    key: Arc<CertifiedKey>,
}

impl CertSet {
    /// A new CA and a leaf signed by it, both with fresh P-256 keys.
    pub(crate) fn generate() -> Result<CertSet, String> {
        let err = |e: rcgen::Error| format!("cannot make a certificate: {e}");
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err)?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name.push(
            DnType::CommonName,
            format!("fake-portainer test CA {}", crate::state::random_hex(8)),
        );
        ca.serial_number = Some(serial());
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
        let issuer = Issuer::new(ca, ca_key);

        let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err)?;
        let mut leaf =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .map_err(err)?;
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.serial_number = Some(serial());
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.use_authority_key_identifier_extension = true;
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(err)?;

        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let signer = aws_lc_rs::sign::any_supported_type(&key_der)
            .map_err(|e| format!("cannot load the leaf key: {e}"))?;
        let digest = sha256_hex(leaf_cert.der());
        Ok(CertSet {
            ca_pem: ca_cert.pem(),
            leaf_sha256: digest,
            key: Arc::new(CertifiedKey::new(vec![leaf_cert.der().clone()], signer)),
        })
    }
}

/// A positive random 16-byte serial number.
fn serial() -> SerialNumber {
    let mut b = crate::state::random_bytes(16);
    if let Some(first) = b.first_mut() {
        *first &= 0x7f;
        *first |= 0x01;
    }
    SerialNumber::from_slice(&b)
}

fn sha256_hex(der: &[u8]) -> String {
    let d = ::aws_lc_rs::digest::digest(&::aws_lc_rs::digest::SHA256, der);
    d.as_ref()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The current certificates, read at every handshake.
pub(crate) struct Tls {
    current: RwLock<Arc<CertSet>>,
}

impl Tls {
    pub(crate) fn new() -> Result<Tls, String> {
        Ok(Tls {
            current: RwLock::new(Arc::new(CertSet::generate()?)),
        })
    }

    pub(crate) fn current(&self) -> Arc<CertSet> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn replace(&self, set: CertSet) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
    }
}

/// Serves whatever certificate is current when a client says hello.
struct Resolver(Arc<Tls>);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.current().key))
    }
}

/// TLS 1.2 and 1.3 with the aws-lc-rs provider, HTTP/1.1 only (Portainer turns HTTP/2 off),
/// every handshake a full one.
pub(crate) fn server_config(tls: Arc<Tls>) -> Result<Arc<ServerConfig>, String> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot configure TLS: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(tls)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // No session resumption: a resumed session skips the certificate, so a client of the old
    // CA would still get in after a rotation.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}
