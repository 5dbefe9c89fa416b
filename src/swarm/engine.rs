//! The Docker Engine API over its Unix socket: the version, `/info`, the services, and a service update with credentials.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

use crate::redact::Redactor;

/// A request is answered by then, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest answer read (a service list of a big swarm).
const MAX_BODY: usize = 32 * 1024 * 1024;
/// The newest API version this code knows; an older Engine's own version is used instead.
const MAX_API: (u32, u32) = (1, 43);
/// The oldest the calls here exist in (swarm services with `X-Registry-Auth`).
const MIN_API: (u32, u32) = (1, 25);
/// The most JSON values one answer may hold. Decoded, a value takes ~100 bytes, so 32 MiB of
/// `0,0,0,...` would take gigabytes; a swarm's list of thousands of services (a few hundred
/// values each, with their previous spec) fits.
const MAX_VALUES: usize = 1_000_000;
/// The longest service id accepted (swarm's are 25 characters).
const MAX_ID: usize = 64;
/// The longest service name swarm accepts (a DNS label).
const MAX_NAME: usize = 63;
/// The most of an error text looked at (before the credentials are taken out and it is cut).
const MAX_RAW_MESSAGE: usize = 4096;
/// The longest error message kept, shown escaped.
const MAX_MESSAGE: usize = 200;
/// Runs of this many characters of a credential are taken out of an error: an echo the Engine
/// cut short gives nothing away either.
const SECRET_RUN: usize = 12;

/// Why an Engine call failed. Never holds a credential.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("cannot reach the Docker Engine at {path}: {reason}")]
    Unreachable { path: PathBuf, reason: String },
    #[error("the Docker Engine answered HTTP {status}: {message}")]
    Status { status: u16, message: String },
    #[error("the Docker Engine's answer could not be read: {0}")]
    Invalid(String),
}

impl EngineError {
    /// The update raced another one (the service's version moved): read it again and retry.
    pub fn is_conflict(&self) -> bool {
        matches!(self, EngineError::Status { message, .. } if message.contains("out of sequence"))
    }
}

/// A client of one Engine, with the API version agreed on.
#[derive(Debug, Clone)]
pub struct Engine {
    socket: PathBuf,
    version: String,
    redactor: Arc<Redactor>,
}

/// A swarm service as listed: its id, version, name, image and the spec to send back unchanged.
/// The id is 1 to 64 ASCII letters and digits; the name is swarm's (a DNS label), or the id when
/// the Engine gave another.
#[derive(Debug, Clone)]
pub struct Service {
    pub id: String,
    pub version: u64,
    pub name: String,
    pub image: String,
    pub spec: Value,
}

/// What `/info` says of this node's part in a swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not in a swarm (or joining, or in error).
    None,
    /// A worker: it cannot update services.
    Worker,
    /// A manager: it can.
    Manager,
}

impl Engine {
    /// Connects once to agree on the API version (`/_ping`'s `API-Version`, capped at ours).
    /// `secrets` (passwords, `X-Registry-Auth` values) are taken out of every error the Engine
    /// answers: it may echo what it was sent, now or later.
    pub async fn connect(socket: &Path, secrets: Vec<String>) -> Result<Engine, EngineError> {
        let mut e = Engine {
            socket: socket.to_path_buf(),
            version: String::new(),
            redactor: Arc::new(Redactor::of(SECRET_RUN, secrets)),
        };
        let (_, headers) = e.call("GET", "/_ping", None, None).await?;
        let theirs = headers
            .get("api-version")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_version)
            .ok_or_else(|| EngineError::Invalid("/_ping gave no API-Version".into()))?;
        if theirs < MIN_API {
            return Err(EngineError::Invalid(format!(
                "the Engine's API {}.{} is older than {}.{}",
                theirs.0, theirs.1, MIN_API.0, MIN_API.1
            )));
        }
        let v = theirs.min(MAX_API);
        e.version = format!("/v{}.{}", v.0, v.1);
        Ok(e)
    }

    /// The API version in use (`1.41`).
    pub fn version(&self) -> &str {
        self.version.trim_start_matches("/v")
    }

    /// This node's role in a swarm.
    pub async fn role(&self) -> Result<Role, EngineError> {
        let info = self.json("GET", "/info", None, None).await?;
        let swarm = &info["Swarm"];
        let active = swarm["LocalNodeState"].as_str() == Some("active");
        Ok(match (active, swarm["ControlAvailable"].as_bool()) {
            (false, _) => Role::None,
            (true, Some(true)) => Role::Manager,
            (true, _) => Role::Worker,
        })
    }

    /// Every service (those without a usable id, version or spec left out).
    pub async fn services(&self) -> Result<Vec<Service>, EngineError> {
        match self.json("GET", "/services", None, None).await? {
            Value::Array(list) => Ok(list.into_iter().filter_map(service).collect()),
            _ => Err(EngineError::Invalid("/services is not a list".into())),
        }
    }

    /// One service, read again (after a version conflict).
    pub async fn service(&self, id: &str) -> Result<Option<Service>, EngineError> {
        match self
            .json("GET", &format!("/services/{}", escape_id(id)), None, None)
            .await
        {
            Ok(v) => Ok(service(v)),
            Err(EngineError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /services/{id}/update?version=N` with the spec as read and `X-Registry-Auth`: the
    /// swarm stores the credential for the tasks it starts from now on; running tasks stay.
    pub async fn update(
        &self,
        s: &Service,
        server: &str,
        username: &str,
        password: &str,
    ) -> Result<(), EngineError> {
        let header = registry_auth(server, username, password);
        let body = serde_json::to_vec(&s.spec).map_err(|e| EngineError::Invalid(e.to_string()))?;
        let path = format!(
            "/services/{}/update?version={}",
            escape_id(&s.id),
            s.version
        );
        self.json("POST", &path, Some(body), Some(header))
            .await
            .map(|_| ())
    }

    async fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        auth: Option<String>,
    ) -> Result<Value, EngineError> {
        let (bytes, _) = self
            .call(method, &format!("{}{path}", self.version), body, auth)
            .await?;
        decode(&bytes)
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        auth: Option<String>,
    ) -> Result<(Bytes, http::HeaderMap), EngineError> {
        let unreachable = |reason: String| EngineError::Unreachable {
            path: self.socket.clone(),
            reason,
        };
        let exchange = async {
            let stream = UnixStream::connect(&self.socket)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            // Who listens there (SO_PEERCRED, fixed when it called listen): root's dockerd, or a
            // user's (rootless docker, or a listener put where the socket should be). A user's
            // Engine never gets a request, so never root's registry credentials.
            let peer = stream
                .peer_cred()
                .map_err(|e| unreachable(format!("cannot tell who serves it: {e}")))?;
            if peer.uid() != 0 {
                return Err(unreachable(format!(
                    "it is served by uid {}, not root: registry credentials go only to root's Docker Engine",
                    peer.uid()
                )));
            }
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let driver = tokio::spawn(conn);
            let mut req = http::Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, "docker")
                .header(
                    http::header::USER_AGENT,
                    concat!("ecr-refresherd/", env!("CARGO_PKG_VERSION")),
                );
            if body.is_some() {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
            }
            if let Some(a) = auth {
                req = req.header("X-Registry-Auth", a);
            }
            let req = req
                .body(Full::new(Bytes::from(body.unwrap_or_default())))
                .map_err(|e| EngineError::Invalid(e.to_string()))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let bytes = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| EngineError::Invalid(format!("reading the answer: {e}")))?
                .to_bytes();
            driver.abort();
            if !(200..300).contains(&status) {
                // The Engine's errors are `{"message": "..."}`. One may echo what it was sent
                // (a proxy, a broken Engine): the credentials are taken out before anything
                // is cut or shown.
                let raw = decode(&bytes)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_string))
                    .unwrap_or_else(|| {
                        String::from_utf8_lossy(&bytes[..bytes.len().min(4 * MAX_RAW_MESSAGE)])
                            .into_owned()
                    });
                let text = self.redactor.apply(cut(&raw, MAX_RAW_MESSAGE));
                let shown = crate::escape::shown(&text);
                let message = match shown.char_indices().nth(MAX_MESSAGE) {
                    Some((i, _)) => format!("{}...", &shown[..i]),
                    None => shown.into_owned(),
                };
                return Err(EngineError::Status { status, message });
            }
            Ok((bytes, headers))
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(r) => r,
            Err(_) => Err(unreachable(format!(
                "no answer within {} s",
                REQUEST_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// `X-Registry-Auth` for `username` and `password` at `server`: the JSON auth config in Go's
/// base64.URLEncoding (padded), as the docker CLI encodes it and the Engine decodes it. A secret.
pub fn registry_auth(server: &str, username: &str, password: &str) -> String {
    let auth = serde_json::json!({
        "username": username,
        "password": password,
        "serveraddress": server,
    });
    base64::engine::general_purpose::URL_SAFE.encode(auth.to_string())
}

/// An answer decoded; refused unread when it holds more than [`MAX_VALUES`] values. A decode
/// error says where, never what.
fn decode(bytes: &[u8]) -> Result<Value, EngineError> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    let n = values(bytes);
    if n > MAX_VALUES {
        return Err(EngineError::Invalid(format!(
            "the answer holds about {n} values, more than the {MAX_VALUES} read"
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| EngineError::Invalid(e.to_string()))
}

/// About how many values JSON text holds (containers and separators outside strings), counted
/// without decoding it.
fn values(json: &[u8]) -> usize {
    let (mut n, mut in_string, mut escaped) = (1usize, false, false);
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' | b',' => n += 1,
                _ => {}
            }
        }
    }
    n
}

/// A service from the Engine's JSON; `None` when it lacks a usable id, a version or a spec.
fn service(mut v: Value) -> Option<Service> {
    let id = v.get("ID")?.as_str()?.to_string();
    // Swarm's ids are letters and digits; another would address something else once escaped.
    if id.is_empty() || id.len() > MAX_ID || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let version = v.get("Version")?.get("Index")?.as_u64()?;
    let spec = v.get_mut("Spec")?.take();
    let name = spec["Name"]
        .as_str()
        .filter(|n| valid_name(n))
        .unwrap_or(&id)
        .to_string();
    let image = spec["TaskTemplate"]["ContainerSpec"]["Image"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Some(Service {
        id,
        version,
        name,
        image,
        spec,
    })
}

/// Whether swarm would accept `n` as a service name (swarmkit's controlapi `validateAnnotations`:
/// `^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$`, at most 63 characters).
fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            b.len() <= MAX_NAME
                && f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
        }
        _ => false,
    }
}

/// At most `max` characters of `s`.
fn cut(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// `1.41` -> (1, 41).
fn parse_version(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Service ids are alphanumeric; anything else is refused rather than put in a path.
fn escape_id(id: &str) -> String {
    id.chars().filter(char::is_ascii_alphanumeric).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_read_from_the_engines_json() {
        let v = serde_json::json!({
            "ID": "abc123", "Version": {"Index": 17},
            "Spec": {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "h/app:v1@sha256:00"}}, "Mode": {"Replicated": {"Replicas": 2}}}
        });
        let s = service(v.clone()).unwrap();
        assert_eq!(
            (s.id.as_str(), s.version, s.name.as_str(), s.image.as_str()),
            ("abc123", 17, "web", "h/app:v1@sha256:00")
        );
        assert_eq!(
            s.spec, v["Spec"],
            "the spec is kept whole, to be sent back unchanged"
        );
        assert!(service(serde_json::json!({"ID": "x"})).is_none());
    }

    #[test]
    fn odd_ids_are_refused_and_odd_names_replaced_by_the_id() {
        let with = |id: &str, name: &str| {
            service(serde_json::json!({"ID": id, "Version": {"Index": 1}, "Spec": {"Name": name}}))
        };
        for id in ["", "ab-c", "ab/../c", "a b", &"a".repeat(65), "é"] {
            assert!(with(id, "web").is_none(), "{id:?}");
        }
        assert_eq!(with(&"a".repeat(64), "web").unwrap().name, "web");
        for name in ["web", "web-1", "a__b", "W3b", &"n".repeat(63)] {
            assert_eq!(with("abc", name).unwrap().name, name);
        }
        for name in [
            "",
            "-web",
            "web-",
            "we b",
            "web\u{1b}[2J",
            "a.b",
            &"n".repeat(64),
            "wéb",
        ] {
            assert_eq!(with("abc", name).unwrap().name, "abc", "{name:?}");
        }
    }

    #[test]
    fn dense_answers_are_refused_unread() {
        assert_eq!(values(br#"{"a": [1, 2, {"b": "x,y[{"}], "c\",": 3}"#), 7);
        let mut dense = b"[".to_vec();
        dense.extend(b"0,".repeat(MAX_VALUES));
        dense.extend(b"0]");
        assert!(matches!(decode(&dense), Err(EngineError::Invalid(m)) if m.contains("values")));
        assert_eq!(decode(b"").unwrap(), Value::Null);
        assert_eq!(decode(b"[1,2]").unwrap(), serde_json::json!([1, 2]));
    }

    #[test]
    fn credentials_are_taken_out_of_errors_whole_and_in_part() {
        let pw = "fakepw-1-0123456789abcdef0123";
        let header = registry_auth("h.example", "AWS", pw);
        let r = Redactor::of(SECRET_RUN, [pw.to_string(), header.clone(), String::new()]);
        assert_eq!(r.apply(&format!("bad: {pw}!")), "bad: <redacted>!");
        assert_eq!(r.apply(&format!("a {header} b")), "a <redacted> b");
        // Cut short by the Engine: 12 characters of it are enough to go.
        assert_eq!(r.apply(&format!("x{}y", &pw[3..15])), "x<redacted>y");
        assert_eq!(r.apply("nothing here"), "nothing here");
    }

    #[test]
    fn versions_and_ids() {
        assert_eq!(parse_version("1.41"), Some((1, 41)));
        assert_eq!(parse_version("x"), None);
        assert!((1, 41) < MAX_API && (1, 44).min(MAX_API) == MAX_API);
        assert_eq!(escape_id("abc/../x?y"), "abcxy");
    }

    #[test]
    fn conflicts_are_recognised() {
        let e = EngineError::Status {
            status: 500,
            message: "rpc error: code = Unknown desc = update out of sequence".into(),
        };
        assert!(e.is_conflict());
        assert!(
            !EngineError::Status {
                status: 500,
                message: "x".into()
            }
            .is_conflict()
        );
    }
}
