//! Portainer's HTTP API, the three calls we make: system status, list records, update one.
//!
//! One connection per request (a few requests every few minutes), each bounded in time and size.
//! Nothing a response holds is logged; error messages carry Portainer's `message` only, escaped,
//! cut short, and with any secret we sent taken out.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::records::{Record, USERNAME};

/// A TCP connection and TLS handshake must be done by then.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole request, answer included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read: thousands of real records (~1 KB each) fit.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// The most records a list may hold: bounds the memory a list takes, whatever its shape.
pub const MAX_LISTED: usize = 20_000;
/// The longest piece of Portainer's error message shown.
const MAX_MESSAGE: usize = 200;
/// The most of an error text looked at (before redaction and cutting).
const MAX_RAW_MESSAGE: usize = 4 * 1024;
/// A run this long of any secret's characters is taken out of a message, so a password that is
/// echoed only in part (cut by the server) shows nothing of itself either.
const SECRET_RUN: usize = 12;

/// Why a call failed. Never holds the API key or a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Not reached: DNS, TCP, TLS (certificate) or a timeout.
    #[error("cannot reach {0}")]
    Unreachable(String),
    /// 401: the key is unknown, revoked or expired.
    #[error(
        "the API key was refused (HTTP 401: {0}); create a new one for an administrator and put it in api_key_file"
    )]
    BadKey(String),
    /// 403: the key is a non-administrator's.
    #[error(
        "the API key is not an administrator's (HTTP 403: {0}); Portainer lets only administrators list and update registries"
    )]
    NotAdmin(String),
    /// 404 on a record.
    #[error("not found (HTTP 404: {0})")]
    NotFound(String),
    /// Any other answer but success.
    #[error("HTTP {status}: {message}")]
    Status { status: u16, message: String },
    /// A success whose body is not what Portainer sends.
    #[error("unexpected answer: {0}")]
    Invalid(String),
}

impl ApiError {
    /// The server answered (whatever it said).
    pub fn reached(&self) -> bool {
        !matches!(self, ApiError::Unreachable(_))
    }
}

/// A client of one Portainer instance.
#[derive(Clone)]
pub struct Client {
    /// `https://host[:port][/prefix]`.
    base: http::Uri,
    prefix: String,
    tls: tokio_rustls::TlsConnector,
    key: Arc<str>,
    /// Every secret an answer could echo (the key, every password we hold or set): taken out of
    /// any message before it is shown.
    secrets: Arc<[String]>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).finish()
    }
}

/// `GET /api/system/status`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct SystemStatus {
    #[serde(rename = "Version", default)]
    pub version: String,
}

impl Client {
    /// A client for `url` (validated by the config) with an API key.
    pub fn new(url: &str, tls: Arc<rustls::ClientConfig>, key: &str) -> Result<Client, ApiError> {
        let base: http::Uri = url
            .parse()
            .map_err(|_| ApiError::Invalid(format!("bad URL {url:?}")))?;
        let prefix = base.path().trim_end_matches('/').to_string();
        Ok(Client {
            base,
            prefix,
            tls: tokio_rustls::TlsConnector::from(tls),
            key: Arc::from(key),
            secrets: Arc::from(vec![key.to_string()]),
        })
    }

    /// The secrets (besides the key) to take out of every message.
    pub fn set_secrets(&mut self, more: impl IntoIterator<Item = String>) {
        let mut all: Vec<String> = more.into_iter().filter(|s| !s.is_empty()).collect();
        all.push(self.key.to_string());
        all.sort();
        all.dedup();
        self.secrets = Arc::from(all);
    }

    /// The version Portainer reports (a public endpoint: says nothing about the key).
    pub async fn system_status(&self) -> Result<SystemStatus, ApiError> {
        let body = self.call(Method::GET, "/api/system/status", None).await?;
        decode(&body)
    }

    /// Every registry record (administrators only).
    pub async fn list(&self) -> Result<Vec<Record>, ApiError> {
        let body = self.call(Method::GET, "/api/registries", None).await?;
        let listed: Capped<Record> = decode(&body)?;
        Ok(listed.0)
    }

    /// Sets a record's credentials to user `AWS` and `password`: Portainer applies a user name
    /// and a password only with `"Authentication": true` in the same body, and `URL` is left out
    /// (it would trigger a duplicate check).
    pub async fn set_password(&self, id: u32, password: &str) -> Result<Record, ApiError> {
        let body = serde_json::json!({
            "Authentication": true,
            "Username": USERNAME,
            "Password": password,
        });
        let body = Bytes::from(body.to_string());
        let path = format!("/api/registries/{id}");
        let answer = self.call(Method::PUT, &path, Some(body)).await?;
        decode(&answer)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Bytes, ApiError> {
        let request = self.request(method, path, body)?;
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(request))
            .await
            .map_err(|_| {
                ApiError::Unreachable(format!(
                    "{}: no answer within {}s",
                    self.base,
                    REQUEST_TIMEOUT.as_secs()
                ))
            })??;
        if status.is_success() {
            return Ok(body);
        }
        let message = error_message(&body, status, &self.secrets);
        Err(match status {
            StatusCode::UNAUTHORIZED => ApiError::BadKey(message),
            StatusCode::FORBIDDEN => ApiError::NotAdmin(message),
            StatusCode::NOT_FOUND => ApiError::NotFound(message),
            s => ApiError::Status {
                status: s.as_u16(),
                message,
            },
        })
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Request<Full<Bytes>>, ApiError> {
        let authority = self
            .base
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(header::HOST, authority)
            .header(
                header::USER_AGENT,
                concat!("ecr-refresherd/", env!("CARGO_PKG_VERSION")),
            )
            .header(header::ACCEPT, "application/json")
            .header(header::CONNECTION, "close")
            .header("X-API-Key", &*self.key);
        if body.is_some() {
            b = b.header(header::CONTENT_TYPE, "application/json");
        }
        b.body(Full::new(body.unwrap_or_default()))
            // Only a key with bytes a header cannot hold gets here; the error never shows it.
            .map_err(|_| {
                ApiError::Invalid(
                    "the API key holds characters an HTTP header cannot carry".to_string(),
                )
            })
    }

    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        let host = self.base.host().unwrap_or_default();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let port = self.base.port_u16().unwrap_or(443);
        let unreachable = |what: String| ApiError::Unreachable(format!("{}: {what}", self.base));
        let name = ServerName::try_from(bare.to_string())
            .map_err(|_| unreachable("not a valid server name".into()))?;
        // Every address the name has, in turn: a local user holding the port of one address
        // family (Portainer listening on the other) fails the handshake there and is passed by.
        let connect = async {
            let addrs: Vec<_> = tokio::net::lookup_host((bare, port))
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .collect();
            let mut last = unreachable("the name has no address".into());
            for addr in addrs {
                let tcp = match TcpStream::connect(addr).await {
                    Ok(t) => t,
                    Err(e) => {
                        last = unreachable(e.to_string());
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                match self.tls.connect(name.clone(), tcp).await {
                    Ok(stream) => return Ok(stream),
                    Err(e) => last = unreachable(format!("TLS: {}", tls_reason(&e))),
                }
            }
            Err(last)
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| {
                unreachable(format!(
                    "no connection within {}s",
                    CONNECT_TIMEOUT.as_secs()
                ))
            })??;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        // The connection is driven beside the request and dropped with it (a timeout included).
        let driver = AbortOnDrop(tokio::spawn(conn));
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(format!("the request failed: {e}")))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                unreachable(format!(
                    "reading the answer: {}",
                    if e.is::<http_body_util::LengthLimitError>() {
                        format!("larger than {MAX_BODY} bytes")
                    } else {
                        e.to_string()
                    }
                ))
            })?
            .to_bytes();
        drop(driver);
        Ok((status, body))
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The TLS error as an operator can act on it.
fn tls_reason(e: &std::io::Error) -> String {
    let inner = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .map(|r| r.to_string());
    match inner {
        Some(r) => format!(
            "{r} (check ca_file / pin_sha256; pin_sha256 is printed by: openssl s_client -connect HOST:PORT </dev/null | openssl x509 -noout -fingerprint -sha256)"
        ),
        None => e.to_string(),
    }
}

/// Portainer's `{"message","details"}`, with every secret taken out first, then escaped and cut
/// short; the status line otherwise.
fn error_message(body: &[u8], status: StatusCode, secrets: &[String]) -> String {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        message: String,
        #[serde(default)]
        details: String,
    }
    let raw = match serde_json::from_slice::<Answer>(body) {
        Ok(a) if !a.message.is_empty() && !a.details.is_empty() && a.details != a.message => {
            format!(
                "{}: {}",
                cut(&a.message, MAX_RAW_MESSAGE),
                cut(&a.details, MAX_RAW_MESSAGE)
            )
        }
        Ok(a) if !a.message.is_empty() => cut(&a.message, MAX_RAW_MESSAGE).to_string(),
        _ => status
            .canonical_reason()
            .unwrap_or("no explanation")
            .to_string(),
    };
    let text = redact(&raw, secrets);
    let shown = crate::escape::shown(&text).into_owned();
    match shown.char_indices().nth(MAX_MESSAGE) {
        Some((i, _)) => format!("{}...", &shown[..i]),
        None => shown,
    }
}

fn cut(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Takes every secret out of `text`: whole, and any run of [`SECRET_RUN`] or more bytes that is
/// part of a secret (an echo cut short by the server).
pub(crate) fn redact(text: &str, secrets: &[String]) -> String {
    crate::redact::Redactor::of(SECRET_RUN, secrets.iter().cloned()).apply(text)
}

/// A JSON array decoded up to [`MAX_LISTED`] items; a longer one is refused as it is read.
#[derive(Debug)]
struct Capped<T>(Vec<T>);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Capped<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = Capped<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "an array of at most {MAX_LISTED} records")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element()? {
                    if out.len() == MAX_LISTED {
                        return Err(serde::de::Error::custom("too many records"));
                    }
                    out.push(item);
                }
                Ok(Capped(out))
            }
        }
        d.deserialize_seq(Visit(std::marker::PhantomData))
    }
}

/// A JSON answer; a decode error names where, never what (it could be a password).
fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        if e.to_string().starts_with("too many records") {
            return ApiError::Invalid(format!("more than {MAX_LISTED} records listed"));
        }
        ApiError::Invalid(format!(
            "not the JSON Portainer sends ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_short_escaped_and_fall_back_to_the_status() {
        let m = error_message(
            br#"{"message":"Another registry with the same name already exists","details":"a registry is already defined with this name"}"#,
            StatusCode::CONFLICT,
            &[],
        );
        assert_eq!(
            m,
            "Another registry with the same name already exists: a registry is already defined with this name"
        );
        assert_eq!(
            error_message(b"<html>", StatusCode::BAD_GATEWAY, &[]),
            "Bad Gateway"
        );
        let long = format!(r#"{{"message":"{}\u001b[31m"}}"#, "x".repeat(500));
        let m = error_message(long.as_bytes(), StatusCode::INTERNAL_SERVER_ERROR, &[]);
        assert!(m.chars().count() <= MAX_MESSAGE + 3, "{}", m.len());
        assert!(!m.contains('\u{1b}'));
    }

    #[test]
    fn secrets_are_taken_out_before_the_message_is_cut() {
        let password = format!("fakepw-{}", "p".repeat(2000));
        let key = "ptr_abc+def/ghi=".to_string();
        let secrets = [password.clone(), key.clone()];
        for body in [
            format!(
                r#"{{"message":"Invalid request payload","details":"cannot validate {{\"Password\":\"{password}\"}}"}}"#
            ),
            format!(
                r#"{{"message":"x","details":"cut short: {}"}}"#,
                &password[..100]
            ),
            format!(r#"{{"message":"no such key: {key} really"}}"#),
            format!(r#"{{"message":"{}"}}"#, &password[1500..1530]),
        ] {
            let m = error_message(body.as_bytes(), StatusCode::BAD_REQUEST, &secrets);
            assert!(m.contains("<redacted>"), "{m}");
            for s in &secrets {
                for w in s.as_bytes().windows(SECRET_RUN) {
                    let w = std::str::from_utf8(w).unwrap();
                    assert!(!m.contains(w), "{m} shows {w:?}");
                }
            }
        }
        // Ordinary words stay.
        assert_eq!(
            redact("Invalid request payload", &secrets),
            "Invalid request payload"
        );
        assert_eq!(redact("pp", &secrets), "pp");
    }

    #[test]
    fn a_list_longer_than_the_cap_is_refused() {
        let ok = format!("[{}]", vec![r#"{"Id":1}"#; MAX_LISTED].join(","));
        assert_eq!(
            decode::<Capped<Record>>(ok.as_bytes()).unwrap().0.len(),
            MAX_LISTED
        );
        let long = format!("[{}]", vec![r#"{"Id":1}"#; MAX_LISTED + 1].join(","));
        let e = decode::<Capped<Record>>(long.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("more than 20000 records"), "{e}");
    }

    #[test]
    fn decode_errors_never_quote_the_body() {
        let e = decode::<Vec<Record>>(br#"[{"Id":"hunter2-secret"}]"#).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = decode::<Vec<Record>>(br#"[{"Id":1,"Password":5}]"#).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }
}
