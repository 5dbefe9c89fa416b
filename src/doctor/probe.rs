//! The network half of `doctor`: DNS, TCP, TLS and one HTTP/1.1 request, each bounded and each failure named.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::explain::NetFailure;

/// A failed network step: what kind, and what happened, said for a person.
#[derive(Debug, Clone)]
pub struct NetError {
    pub kind: NetFailure,
    pub what: String,
}

fn net(kind: NetFailure, what: impl Into<String>) -> NetError {
    NetError {
        kind,
        what: what.into(),
    }
}

/// `host[:port]` split for connecting: the name without brackets, and the port (443 by default).
pub fn host_port(host: &str) -> (String, u16) {
    if let Some(rest) = host.strip_prefix('[')
        && let Some((v6, after)) = rest.split_once(']')
    {
        let port = after
            .strip_prefix(':')
            .and_then(|p| p.parse().ok())
            .unwrap_or(443);
        return (v6.to_string(), port);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_string(), p.parse().unwrap_or(443)),
        _ => (host.to_string(), 443),
    }
}

/// Resolves `name` as the system does (`/etc/hosts`, then DNS), within `limit`.
pub async fn resolve(name: &str, port: u16, limit: Duration) -> Result<Vec<SocketAddr>, NetError> {
    match tokio::time::timeout(limit, tokio::net::lookup_host((name, port))).await {
        Err(_) => Err(net(
            NetFailure::DnsTimeout,
            format!("no DNS answer for {name} within {}", secs(limit)),
        )),
        Ok(Err(e)) => Err(net(
            NetFailure::Dns,
            format!("{name} does not resolve ({})", one_line(&e.to_string())),
        )),
        Ok(Ok(addrs)) => {
            let mut v: Vec<SocketAddr> = addrs.collect();
            v.dedup();
            if v.is_empty() {
                return Err(net(NetFailure::Dns, format!("{name} has no address")));
            }
            Ok(v)
        }
    }
}

/// What kind of address this is, for the DNS line: a VPC endpoint resolves to a private one.
pub fn address_kind(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                "loopback"
            } else if v4.is_private() || (o[0] == 100 && (64..128).contains(&o[1])) {
                "private: a VPC interface endpoint or an internal proxy"
            } else if v4.is_link_local() {
                "link-local"
            } else {
                "public"
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_loopback() {
                "loopback"
            } else if (v6.segments()[0] & 0xfe00) == 0xfc00 {
                "private: a VPC interface endpoint or an internal proxy"
            } else if (v6.segments()[0] & 0xffc0) == 0xfe80 {
                "link-local"
            } else {
                "public"
            }
        }
    }
}

/// Connects to the first address that answers, within `limit` for all of them.
pub async fn connect(
    addrs: &[SocketAddr],
    limit: Duration,
) -> Result<(TcpStream, SocketAddr), NetError> {
    let end = Instant::now() + limit;
    let mut last = net(NetFailure::Unreachable, "no address to connect to");
    for addr in addrs {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => return Ok((s, *addr)),
            Ok(Err(e)) => {
                let kind = match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => NetFailure::Refused,
                    std::io::ErrorKind::TimedOut => NetFailure::Timeout,
                    _ => NetFailure::Unreachable,
                };
                let said = match kind {
                    NetFailure::Refused => "connection refused".to_string(),
                    _ => one_line(&e.to_string()),
                };
                last = net(kind, format!("{addr}: {said}"));
            }
            Err(_) => {
                last = net(
                    NetFailure::Timeout,
                    format!("{addr}: no answer within {} (packets dropped)", secs(limit)),
                );
            }
        }
    }
    Err(last)
}

/// The TLS handshake, verified against `tls`'s roots for `name`.
pub async fn handshake(
    tcp: TcpStream,
    name: &str,
    tls: &Arc<rustls::ClientConfig>,
    limit: Duration,
) -> Result<TlsStream<TcpStream>, NetError> {
    let server = ServerName::try_from(name.to_string()).map_err(|_| {
        net(
            NetFailure::Tls,
            format!("{name:?} is not a TLS server name"),
        )
    })?;
    let connector = TlsConnector::from(Arc::clone(tls));
    match tokio::time::timeout(limit, connector.connect(server, tcp)).await {
        Err(_) => Err(net(
            NetFailure::Tls,
            format!("no TLS handshake within {}", secs(limit)),
        )),
        Ok(Err(e)) => {
            let certificate = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
            let kind = if certificate {
                NetFailure::Certificate
            } else {
                NetFailure::Tls
            };
            Err(net(kind, format!("TLS: {}", one_line(&e.to_string()))))
        }
        Ok(Ok(s)) => Ok(s),
    }
}

/// An HTTP answer: status, the headers we read, and at most `limit` bytes of body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub location: Option<String>,
    pub digest: Option<String>,
    pub body: Bytes,
}

/// One request over an established TLS stream (one connection per request: `doctor` makes a
/// handful). `headers` are sent as given; redirects are not followed.
pub async fn request(
    stream: TlsStream<TcpStream>,
    method: &str,
    authority: &str,
    path_and_query: &str,
    headers: &[(&str, String)],
    max_body: usize,
    limit: Duration,
) -> Result<Answer, String> {
    // A layer's first bytes are enough: a registry that ignores `Range` sends it whole.
    let truncate = headers.iter().any(|(k, _)| *k == "range");
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP: {}", one_line(&e.to_string())))?;
        let driver = tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(http::header::HOST, authority)
            .header(
                http::header::USER_AGENT,
                concat!("ecr-refresherd-doctor/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("request: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP: {}", one_line(&e.to_string())))?;
        let header = |n: http::header::HeaderName| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let status = resp.status().as_u16();
        let content_type = header(http::header::CONTENT_TYPE);
        let location = header(http::header::LOCATION);
        let digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = if method == "HEAD" {
            Bytes::new()
        } else {
            match Limited::new(resp.into_body(), max_body).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    if e.is::<http_body_util::LengthLimitError>() {
                        if truncate {
                            driver.abort();
                            return Ok(Answer {
                                status,
                                content_type,
                                location,
                                digest,
                                body: Bytes::new(),
                            });
                        }
                        return Err(format!("the answer is larger than {max_body} bytes"));
                    }
                    return Err(format!("reading the answer: {}", one_line(&e.to_string())));
                }
            }
        };
        driver.abort();
        Ok(Answer {
            status,
            content_type,
            location,
            digest,
            body,
        })
    };
    match tokio::time::timeout(limit, exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!("no HTTP answer within {}", secs(limit))),
    }
}

/// `https://host[:port]/path?query` split into (host[:port], path?query); anything else refused.
pub fn split_https(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("https://")?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Some((authority.to_string(), path))
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64().round() as u64)
}

fn one_line(s: &str) -> String {
    super::explain::quote(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port() {
        assert_eq!(host_port("a.example"), ("a.example".into(), 443));
        assert_eq!(host_port("a.example:5000"), ("a.example".into(), 5000));
        assert_eq!(host_port("[::1]:5000"), ("::1".into(), 5000));
        assert_eq!(host_port("[::1]"), ("::1".into(), 443));
    }

    #[test]
    fn address_kinds() {
        let k = |s: &str| address_kind(s.parse().unwrap());
        assert_eq!(k("127.0.0.1"), "loopback");
        assert!(k("10.0.3.7").starts_with("private"));
        assert!(k("172.31.0.2").starts_with("private"));
        assert!(k("192.168.1.1").starts_with("private"));
        assert!(k("100.64.0.1").starts_with("private"));
        assert_eq!(k("52.46.1.1"), "public");
        assert!(k("fd00::1").starts_with("private"));
        assert_eq!(k("2600:1f18::1"), "public");
        assert_eq!(k("169.254.169.254"), "link-local");
    }

    #[test]
    fn https_urls() {
        assert_eq!(
            split_https("https://b.s3.us-east-1.amazonaws.com/x/y?X-Amz-Signature=s"),
            Some((
                "b.s3.us-east-1.amazonaws.com".into(),
                "/x/y?X-Amz-Signature=s".into()
            ))
        );
        assert_eq!(
            split_https("https://h:8443?q=1"),
            Some(("h:8443".into(), "/?q=1".into()))
        );
        assert_eq!(split_https("https://h"), Some(("h".into(), "/".into())));
        assert_eq!(split_https("http://h/x"), None);
        assert_eq!(split_https("https://user:pw@h/x"), None);
        assert_eq!(split_https("https:///x"), None);
    }
}
