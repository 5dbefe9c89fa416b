//! The rustls server configuration of the fake registry and storage: a PEM certificate and key.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::RegistryError;

/// TLS 1.2 and 1.3 with the aws-lc-rs provider, ALPN `http/1.1` only, serving the chain in
/// `cert_pem` (leaf first) with the key in `key_pem` (PKCS#8, PKCS#1 or SEC1, as openssl writes
/// them).
pub(crate) fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<ServerConfig>, RegistryError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| RegistryError::Tls(format!("the certificate PEM does not parse: {e}")))?;
    if chain.is_empty() {
        return Err(RegistryError::Tls(
            "the certificate PEM holds no CERTIFICATE block".to_string(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| RegistryError::Tls(format!("the key PEM holds no usable private key: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| RegistryError::Tls(format!("cannot configure TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| RegistryError::Tls(format!("the certificate and key do not fit: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
