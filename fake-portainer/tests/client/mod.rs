//! A tiny HTTPS client for the tests: rustls trusting a given CA, hyper HTTP/1.1, one
//! connection per call unless a `Conn` is held.

#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// An answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// `(message, details)` of a Portainer error.
    pub fn error(&self) -> (String, String) {
        let v = self.json();
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        (s("message"), s("details"))
    }
}

/// A rustls client config trusting only the CA in `ca_pem`.
pub fn tls_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("CA PEM")).expect("CA accepted");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One open HTTPS connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    /// SHA-256 (hex) of the certificate the server showed.
    pub peer_sha256: String,
}

/// Connects to `addr`, verifying the server as `server_name` against `config`.
pub async fn connect(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
) -> Result<Conn, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    let tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let peer_sha256 = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| {
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, c.as_ref());
            d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
        })
        .unwrap_or_default();
    let (sender, conn) = http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("http handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Conn {
        sender,
        host: addr.to_string(),
        peer_sha256,
    })
}

impl Conn {
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Answer, String> {
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok(Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// A sync client for one fake: each call opens its own connection to `127.0.0.1`.
pub struct Client {
    pub addr: std::net::SocketAddr,
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: String,
}

impl Client {
    pub fn new(p: &fake_portainer::FakePortainer) -> Client {
        Client {
            addr: p.addr(),
            config: tls_config(&p.ca_pem()),
            server_name: "127.0.0.1".to_string(),
        }
    }

    pub fn try_call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Answer, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let mut c = connect(self.addr, Arc::clone(&self.config), &self.server_name).await?;
            c.send(method, path, headers, body).await
        })
    }

    pub fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        self.try_call(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// A call with `X-API-Key: key`.
    pub fn with_key(&self, key: &str, method: &str, path: &str, body: &str) -> Answer {
        self.call(method, path, &[("x-api-key", key)], body)
    }
}
