//! TLS to Portainer, always verified: the system's roots, a CA file, and/or one pinned certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::config::PortainerSettings;
use crate::safe_fs;

/// The largest CA file read.
const MAX_CA_FILE: usize = 1024 * 1024;

/// Why no TLS client could be made. Says which file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("ca_file: {0}")]
    CaFile(String),
    #[error("no trusted root certificates: {0}")]
    Roots(String),
    #[error("TLS set-up: {0}")]
    Setup(String),
}

/// The TLS client configuration for one instance.
pub fn client_config(p: &PortainerSettings) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let ca = match &p.ca_file {
        Some(f) => Some(read_roots(f)?),
        None => None,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (p.pin_sha256, ca) {
        // A pin alone: that certificate is the server's identity, whatever its name or dates.
        (Some(pin), None) => Arc::new(Pinned {
            pin,
            chain: None,
            provider: Arc::clone(&provider),
        }),
        (pin, ca) => {
            let roots = match ca {
                Some(r) => r,
                None => system_roots()?,
            };
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| TlsError::Setup(e.to_string()))?;
            match pin {
                Some(pin) => Arc::new(Pinned {
                    pin,
                    chain: Some(webpki),
                    provider: Arc::clone(&provider),
                }),
                None => webpki,
            }
        }
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The certificates of a CA file that only root may change (read like the config).
fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let bytes =
        safe_fs::read_trusted(path, MAX_CA_FILE).map_err(|e| TlsError::CaFile(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    let mut bad = 0usize;
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        match cert {
            Ok(c) => {
                if roots.add(c).is_err() {
                    bad += 1;
                }
            }
            Err(_) => bad += 1,
        }
    }
    if roots.is_empty() {
        return Err(TlsError::CaFile(format!(
            "{}: holds no usable PEM certificate{}",
            path.display(),
            if bad > 0 {
                format!(" ({bad} could not be read)")
            } else {
                String::new()
            }
        )));
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(TlsError::Roots(
            "the system has none; set ca_file or pin_sha256 for this [[portainer]]".into(),
        ));
    }
    Ok(roots)
}

/// The SHA-256 of a certificate's DER, as `pin_sha256` gives it.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// Hex with colons, as `openssl x509 -fingerprint -sha256` prints it.
pub fn fingerprint_text(f: &[u8; 32]) -> String {
    f.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Accepts exactly one server certificate (and, with a CA file too, only if it also chains to
/// that CA for the name). The handshake signature is always checked against it.
#[derive(Debug)]
struct Pinned {
    pin: [u8; 32],
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(chain) = &self.chain {
            chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        }
        let seen = fingerprint(end_entity.as_ref());
        if seen != self.pin {
            return Err(rustls::Error::General(format!(
                "the server's certificate (SHA-256 {}) is not the pinned one",
                fingerprint_text(&seen)
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
