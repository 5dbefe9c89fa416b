//! A fake ECR registry (Docker Registry HTTP API v2 over HTTPS) and its S3-like layer storage.
//!
//! What real ECR does, and where that is written down (the fake copies it):
//!
//! * `GET /v2/` without credentials: `401`, `Www-Authenticate: Basic
//!   realm="https://HOST/",service="ecr.amazonaws.com"`, `Docker-Distribution-Api-Version:
//!   registry/2.0` and the plain-text body `Not Authorized` (a `curl -v` of a real registry at
//!   wom.icu/today-i-learned/2023-09-11; mdlavin/copy-docker-image#5 shows the body as
//!   `"Not Authorized\n"`, awslabs/amazon-ecr-credential-helper#319 the same text for a rejected
//!   login). The same answer for a password ECR never issued or a user other than `AWS`.
//! * An expired token: `403` with `{"errors":[{"code":"DENIED","message":"Your authorization
//!   token has expired. Reauthenticate and try again."}]}` (docker prints `denied: Your
//!   authorization token has expired. Reauthenticate and try again.`, aws/aws-cli#6580; the status
//!   is 403: awslabs/amazon-ecr-credential-helper#7 "error parsing HTTP 403 response body" for the
//!   older wording, and a HEAD of a manifest with a stale token answering `403 Forbidden`). Users
//!   report the same answer for a token of another region (aws/aws-cli#2351): so does the fake,
//!   when the `Host` names a region.
//! * A repository the principal may not pull from: `403` `DENIED` with IAM's message, e.g.
//!   `User: arn:aws:sts::254865750963:assumed-role/R/S is not authorized to perform:
//!   ecr:BatchGetImage on resource: arn:aws:ecr:us-west-2:254865750963:repository/everything2/e2lib
//!   because no identity-based policy allows the ecr:BatchGetImage action` (everything2/everything2
//!   #2562; aws-controllers-k8s/community#1641). The explicit-deny and resource-policy variants
//!   follow IAM's documented shapes ("with an explicit deny in a resource-based policy").
//! * Unknown repository: `404` `NAME_UNKNOWN` `The repository with name 'NAME' does not exist in
//!   the registry with id 'ACCOUNT'` (aws-samples/eks-alb-istio-with-tls#7,
//!   actions/starter-workflows#2647). Unknown tag or digest: `404` `MANIFEST_UNKNOWN` `Requested
//!   image not found` (`manifest unknown: Requested image not found` in many ECS/EKS reports).
//! * `GET` of a blob: `307` to a presigned S3 URL on `prod-REGION-starport-layer-bucket`
//!   (open-policy-agent/opa#6580 and #6728: "ECR always does a redirection to S3"; the URL shape
//!   is the one `aws ecr get-download-url-for-layer` returns in the AWS CLI's examples). `HEAD` of
//!   a blob is answered by ECR itself: `200` with `Content-Length`, `Content-Type` and
//!   `Docker-Content-Digest` (argoproj-labs/argocd-image-updater#216 shows one). For an unknown
//!   digest the fake answers distribution's `BLOB_UNKNOWN` `blob unknown to registry`: ECR's own
//!   text for it is not on record.
//! * S3 refuses a presigned URL that also carries an `Authorization` header: `400`
//!   `InvalidArgument` `Only one auth mechanism allowed; only the X-Amz-Algorithm query
//!   parameter, Signature query string parameter or the Authorization header should be specified`
//!   (open-policy-agent/opa#6580, catalyst/moodle-tool_objectfs#303). S3 echoes the header in
//!   `<ArgumentValue>`; the fake echoes only its scheme, so a token never lands in its output.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use crate::image::{Image, sha256_digest};
use crate::protocol::{iso8601, now_epoch, now_epoch_secs};
use crate::state::{DEFAULT_REGION, Shared, random_hex16};
use crate::{RegistryError, Service};

mod config;
mod storage;

use config::normalize_storage_url;
pub(crate) use config::valid_repository;
pub use config::{Deny, RegistryConfig, RepoTag};

type Resp = Response<Full<Bytes>>;

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// `X-Amz-Expires` of the presigned layer URLs (the AWS CLI's example shows 3600).
const PRESIGN_EXPIRES: i64 = 3600;
const JSON: &str = "application/json; charset=utf-8";
const API_VERSION: &str = "registry/2.0";
/// ECR's realm service name in `Www-Authenticate`.
const ECR_SERVICE: &str = "ecr.amazonaws.com";

/// What a request to the registry or the storage asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegistryKind {
    /// `/v2/` (the version check, where clients meet the auth challenge).
    Ping,
    /// `/v2/NAME/manifests/REF`.
    Manifest,
    /// `/v2/NAME/blobs/DIGEST`.
    Blob,
    /// `/v2/NAME/tags/list`.
    Tags,
    /// Any other path on the registry.
    Other,
    /// Any request to the layer storage.
    Storage,
}

impl RegistryKind {
    /// Every kind, in a fixed order.
    pub const ALL: [RegistryKind; 6] = [
        RegistryKind::Ping,
        RegistryKind::Manifest,
        RegistryKind::Blob,
        RegistryKind::Tags,
        RegistryKind::Other,
        RegistryKind::Storage,
    ];

    /// `ping`, `manifest`, `blob`, `tags`, `other` or `storage`.
    pub fn name(self) -> &'static str {
        match self {
            RegistryKind::Ping => "ping",
            RegistryKind::Manifest => "manifest",
            RegistryKind::Blob => "blob",
            RegistryKind::Tags => "tags",
            RegistryKind::Other => "other",
            RegistryKind::Storage => "storage",
        }
    }
}

impl fmt::Display for RegistryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One request to the fake registry or its storage, as answered. Never holds a credential: of
/// the `Authorization` header only whether there was one, of the storage URL only the path.
#[derive(Clone, Debug)]
pub struct RegistryCall {
    /// What was asked for.
    pub kind: RegistryKind,
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The `Host` header.
    pub host: Option<String>,
    /// The TLS server name (SNI) the client asked for.
    pub sni: Option<String>,
    /// The `Accept` header(s), joined with `, `.
    pub accept: Option<String>,
    /// The `Range` header.
    pub range: Option<String>,
    /// Whether an `Authorization` header came with the request.
    pub authorization: bool,
    /// The status answered.
    pub status: u16,
    /// When the request arrived.
    pub at: Instant,
}

/// A presigned URL the registry handed out.
struct Presigned {
    path: String,
    bytes: Bytes,
    expires_at: i64,
}

/// Everything the two listeners share.
struct RegistryState {
    shared: Arc<Shared>,
    /// repository -> tag -> image.
    repos: BTreeMap<String, BTreeMap<String, Arc<Image>>>,
    deny: HashMap<String, Deny>,
    storage_url: Option<String>,
    /// signature -> what it unlocks.
    presigned: Mutex<HashMap<String, Presigned>>,
}

/// A running fake registry (and storage). Dropping it stops both listeners.
pub struct FakeRegistry {
    registry_addr: SocketAddr,
    storage_addr: Option<SocketAddr>,
    state: Arc<RegistryState>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for FakeRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeRegistry")
            .field("registry_addr", &self.registry_addr)
            .field("storage_addr", &self.storage_addr)
            .finish()
    }
}

impl FakeRegistry {
    pub(crate) fn start(
        shared: Arc<Shared>,
        config: RegistryConfig,
    ) -> Result<FakeRegistry, RegistryError> {
        for addr in std::iter::once(config.registry).chain(config.storage) {
            if !addr.ip().is_loopback() {
                return Err(RegistryError::NotLoopback(addr));
            }
        }
        let storage_url = match &config.storage_url {
            Some(u) => Some(normalize_storage_url(u)?),
            None => None,
        };
        let mut deny = HashMap::new();
        for (name, kind) in &config.deny {
            if !valid_repository(name) {
                return Err(RegistryError::Config(format!(
                    "denied repository {name:?} is not an ECR repository name"
                )));
            }
            deny.insert(name.clone(), *kind);
        }
        let mut repos: BTreeMap<String, BTreeMap<String, Arc<Image>>> = BTreeMap::new();
        for r in &config.repos {
            let image = Arc::new(Image::build(&r.repository, &r.tag, r.format));
            repos
                .entry(r.repository.clone())
                .or_default()
                .insert(r.tag.clone(), image);
        }
        // What the ECR API lists (DescribeRepositories, ListImages): the same repositories.
        shared.set_catalog(
            repos
                .iter()
                .map(|(name, tags)| (name.clone(), tags.keys().cloned().collect()))
                .collect(),
        );
        let tls = crate::tls::server_config(&config.cert_pem, &config.key_pem)?;
        let bind = |addr: SocketAddr| -> Result<TcpListener, RegistryError> {
            let l =
                TcpListener::bind(addr).map_err(|source| RegistryError::Bind { addr, source })?;
            l.set_nonblocking(true)
                .map_err(|source| RegistryError::Bind { addr, source })?;
            Ok(l)
        };
        let registry = bind(config.registry)?;
        let storage = config.storage.map(bind).transpose()?;
        let registry_addr = registry.local_addr().map_err(RegistryError::Io)?;
        let storage_addr = match &storage {
            Some(l) => Some(l.local_addr().map_err(RegistryError::Io)?),
            None => None,
        };
        let storage_url = storage_url.or_else(|| storage_addr.map(|a| format!("https://{a}")));
        let state = Arc::new(RegistryState {
            shared,
            repos,
            deny,
            storage_url,
            presigned: Mutex::new(HashMap::new()),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(RegistryError::Io)?;
        let (tx, rx) = oneshot::channel();
        let thread_state = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name(format!("fake-registry-{}", registry_addr.port()))
            .spawn(move || {
                runtime.block_on(serve(
                    registry,
                    storage,
                    TlsAcceptor::from(tls),
                    thread_state,
                    rx,
                ));
                runtime.shutdown_timeout(Duration::from_millis(100));
            })
            .map_err(RegistryError::Io)?;
        Ok(FakeRegistry {
            registry_addr,
            storage_addr,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// The registry's address.
    pub fn registry_addr(&self) -> SocketAddr {
        self.registry_addr
    }

    /// The storage's address, if it runs.
    pub fn storage_addr(&self) -> Option<SocketAddr> {
        self.storage_addr
    }

    /// The base of the redirects, when fixed (see [`RegistryConfig::storage_url`]).
    pub fn storage_url(&self) -> Option<&str> {
        self.state.storage_url.as_deref()
    }

    /// The image under `repository:tag`.
    pub fn image(&self, repository: &str, tag: &str) -> Option<Image> {
        self.state
            .repos
            .get(repository)
            .and_then(|tags| tags.get(tag))
            .map(|i| Image::clone(i))
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    registry: TcpListener,
    storage: Option<TcpListener>,
    acceptor: TlsAcceptor,
    state: Arc<RegistryState>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let registry = match tokio::net::TcpListener::from_std(registry) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fake-aws: cannot serve the registry: {e}");
            return;
        }
    };
    let storage = match storage.map(tokio::net::TcpListener::from_std).transpose() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fake-aws: cannot serve the storage: {e}");
            return;
        }
    };
    loop {
        let storage_accept = async {
            match &storage {
                Some(l) => l.accept().await,
                None => std::future::pending().await,
            }
        };
        let (accepted, side) = tokio::select! {
            _ = &mut shutdown => break,
            a = registry.accept() => (a, Side::Registry),
            a = storage_accept => (a, Side::Storage),
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(connection(
                    stream,
                    acceptor.clone(),
                    Arc::clone(&state),
                    side,
                ));
            }
            // Out of file descriptors or similar: back off a little instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Registry,
    Storage,
}

async fn connection(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    state: Arc<RegistryState>,
    side: Side,
) {
    let _ = stream.set_nodelay(true);
    let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await else {
        return;
    };
    let sni: Option<Arc<str>> = tls.get_ref().1.server_name().map(Arc::from);
    let svc = service_fn(move |req| {
        let state = Arc::clone(&state);
        let sni = sni.clone();
        async move { Ok::<_, Infallible>(handle(&state, side, sni.as_deref(), req)) }
    });
    // Errors (the client went away) just end the connection.
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(tls), svc)
        .await;
}

/// The parts of a request the handlers look at.
struct Req<'a> {
    method: &'a Method,
    path: &'a str,
    query: &'a str,
    headers: &'a HeaderMap,
}

impl Req<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn host(&self) -> Option<&str> {
        self.header("host")
    }
}

fn handle(state: &RegistryState, side: Side, sni: Option<&str>, req: Request<Incoming>) -> Resp {
    let (parts, _body) = req.into_parts();
    let r = Req {
        method: &parts.method,
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or_default(),
        headers: &parts.headers,
    };
    let (kind, resp) = match side {
        Side::Registry => registry(state, &r),
        Side::Storage => (RegistryKind::Storage, storage::storage(state, &r)),
    };
    let accept: Vec<&str> = r
        .headers
        .get_all("accept")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let call = crate::RegistryCall {
        kind,
        method: r.method.to_string(),
        path: r.path.to_string(),
        host: r.host().map(str::to_string),
        sni: sni.map(str::to_string),
        accept: (!accept.is_empty()).then(|| accept.join(", ")),
        range: r.header("range").map(str::to_string),
        authorization: r.headers.contains_key("authorization"),
        status: resp.status().as_u16(),
        at: Instant::now(),
    };
    if state.shared.verbose() {
        let what = if side == Side::Registry {
            "registry"
        } else {
            "storage"
        };
        eprintln!(
            "fake-aws: {what} {} {} -> {}",
            call.method,
            call.path.escape_debug(),
            call.status
        );
    }
    state.shared.record_registry(call);
    resp
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

fn response(status: u16, content_type: Option<&str>, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(c).ok()) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, ct);
    }
    r
}

fn with_header(mut r: Resp, name: &'static str, value: &str) -> Resp {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(HeaderName::from_static(name), v);
    }
    r
}

/// A registry answer: every one carries `Docker-Distribution-Api-Version`.
fn reg(status: u16, content_type: Option<&str>, body: impl Into<Bytes>) -> Resp {
    with_header(
        response(status, content_type, body),
        "docker-distribution-api-version",
        API_VERSION,
    )
}

/// `{"errors":[{"code":CODE,"message":MESSAGE}]}`, the registry API's error body.
fn reg_error(status: u16, code: &str, message: &str) -> Resp {
    let body = serde_json::json!({ "errors": [{ "code": code, "message": message }] });
    reg(status, Some(JSON), body.to_string())
}

/// `401` with ECR's Basic challenge and its plain-text body.
fn challenge(host: &str) -> Resp {
    let r = reg(401, Some("text/plain; charset=utf-8"), "Not Authorized\n");
    with_header(
        r,
        "www-authenticate",
        &format!("Basic realm=\"https://{host}/\",service=\"{ECR_SERVICE}\""),
    )
}

/// A body for GET, none (but the same `Content-Length`) for HEAD.
fn content(method: &Method, content_type: &str, body: Bytes) -> Resp {
    let len = body.len();
    let body = if *method == Method::HEAD {
        Bytes::new()
    } else {
        body
    };
    with_header(
        reg(200, Some(content_type), body),
        "content-length",
        &len.to_string(),
    )
}

// ---------------------------------------------------------------------------------------------
// The registry
// ---------------------------------------------------------------------------------------------

/// `(account, region, partition)` of an ECR registry host name (any port stripped), for the
/// shapes `ACCOUNT.dkr.ecr[-fips].REGION.amazonaws.com[.cn]` and the dual-stack
/// `ACCOUNT.dkr-ecr[-fips].REGION.on.aws`.
fn ecr_host(host: &str) -> Option<(String, String, &'static str)> {
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = host.split('.').collect();
    let (account, rest) = labels.split_first()?;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let partition = match rest {
        ["dkr", "ecr" | "ecr-fips", _, "amazonaws", "com"] => "aws",
        ["dkr", "ecr" | "ecr-fips", _, "amazonaws", "com", "cn"] => "aws-cn",
        ["dkr-ecr" | "dkr-ecr-fips", _, "on", "aws"] => "aws",
        _ => return None,
    };
    let region = if rest[0] == "dkr" { rest[2] } else { rest[1] };
    Some((account.to_string(), region.to_string(), partition))
}

fn registry(state: &RegistryState, r: &Req<'_>) -> (RegistryKind, Resp) {
    let Some(rest) = r.path.strip_prefix("/v2") else {
        return (
            RegistryKind::Other,
            reg(
                404,
                Some("text/plain; charset=utf-8"),
                "404 page not found\n",
            ),
        );
    };
    let (kind, name, reference) = if rest.is_empty() || rest == "/" {
        (RegistryKind::Ping, "", "")
    } else if let Some(p) = rest.strip_prefix('/') {
        if let Some((n, d)) = p.rsplit_once("/manifests/") {
            (RegistryKind::Manifest, n, d)
        } else if let Some((n, d)) = p.rsplit_once("/blobs/") {
            (RegistryKind::Blob, n, d)
        } else if let Some(n) = p.strip_suffix("/tags/list") {
            (RegistryKind::Tags, n, "")
        } else {
            (RegistryKind::Other, "", "")
        }
    } else {
        (RegistryKind::Other, "", "")
    };
    (kind, registry_route(state, r, kind, name, reference))
}

fn registry_route(
    state: &RegistryState,
    r: &Req<'_>,
    kind: RegistryKind,
    name: &str,
    reference: &str,
) -> Resp {
    let host = r.host().unwrap_or("localhost").to_string();
    let parsed_host = ecr_host(&host);
    let token = match authenticate(state, r, parsed_host.as_ref()) {
        Ok(t) => t,
        Err(failure) => return failure.response(&host),
    };
    if *r.method != Method::GET && *r.method != Method::HEAD {
        return reg_error(405, "UNSUPPORTED", "The operation is unsupported.");
    }
    let (account, region, partition) = parsed_host.unwrap_or_else(|| {
        (
            state.shared.ecr_account(),
            DEFAULT_REGION.to_string(),
            "aws",
        )
    });
    let name_unknown = || {
        reg_error(
            404,
            "NAME_UNKNOWN",
            &format!(
                "The repository with name '{name}' does not exist in the registry with id '{account}'"
            ),
        )
    };
    match kind {
        RegistryKind::Ping => content(r.method, JSON, Bytes::from_static(b"{}")),
        RegistryKind::Other | RegistryKind::Storage => {
            reg_error(404, "NOT_FOUND", "The requested resource was not found.")
        }
        RegistryKind::Manifest => {
            if let Some(deny) = state.deny.get(name) {
                let (user, _, _) = state.shared.caller_identity(token.access_key_id.as_deref());
                return reg_error(
                    403,
                    "DENIED",
                    &format!(
                        "User: {user} is not authorized to perform: ecr:BatchGetImage on resource: \
                         arn:{partition}:ecr:{region}:{account}:repository/{name} {}",
                        deny.reason("ecr:BatchGetImage")
                    ),
                );
            }
            let Some(tags) = state.repos.get(name) else {
                return name_unknown();
            };
            let image = if reference.starts_with("sha256:") {
                tags.values().find(|i| i.manifest_digest == reference)
            } else {
                tags.get(reference)
            };
            let Some(image) = image else {
                return reg_error(404, "MANIFEST_UNKNOWN", "Requested image not found");
            };
            with_header(
                content(
                    r.method,
                    image.media_type,
                    Bytes::from(image.manifest.clone()),
                ),
                "docker-content-digest",
                &image.manifest_digest,
            )
        }
        RegistryKind::Blob => {
            let Some(tags) = state.repos.get(name) else {
                return name_unknown();
            };
            let Some(blob) = tags.values().find_map(|i| i.blob(reference)) else {
                return reg_error(404, "BLOB_UNKNOWN", "blob unknown to registry");
            };
            if *r.method == Method::HEAD {
                return with_header(
                    content(r.method, blob.media_type, Bytes::from(blob.bytes.clone())),
                    "docker-content-digest",
                    &blob.digest,
                );
            }
            let location = presign(state, &account, &region, &blob.digest, &blob.bytes);
            let resp = reg(307, None, Bytes::new());
            let resp = with_header(resp, "location", &location);
            with_header(resp, "docker-content-digest", &blob.digest)
        }
        RegistryKind::Tags => {
            let Some(tags) = state.repos.get(name) else {
                return name_unknown();
            };
            let body = serde_json::json!({ "name": name, "tags": tags.keys().collect::<Vec<_>>() });
            content(r.method, JSON, Bytes::from(body.to_string()))
        }
    }
}

/// The token behind a `Basic` login, or the answer ECR gives instead.
/// Why a login failed.
#[derive(Debug, PartialEq, Eq)]
enum AuthFailure {
    /// No `Basic` login of user `AWS` with a password this fake's ECR issued.
    NotAuthorized,
    /// The token has expired (or belongs to another region).
    Expired,
}

impl AuthFailure {
    fn response(&self, host: &str) -> Resp {
        match self {
            AuthFailure::NotAuthorized => challenge(host),
            AuthFailure::Expired => reg_error(
                403,
                "DENIED",
                "Your authorization token has expired. Reauthenticate and try again.",
            ),
        }
    }
}

fn authenticate(
    state: &RegistryState,
    r: &Req<'_>,
    parsed_host: Option<&(String, String, &'static str)>,
) -> Result<crate::state::IssuedToken, AuthFailure> {
    let password = r
        .header("authorization")
        .and_then(|h| {
            let (scheme, value) = h.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(value.trim())
        })
        .and_then(|v| BASE64.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| match v.split_once(':') {
            Some(("AWS", pw)) => Some(pw.to_string()),
            _ => None,
        });
    let token = password
        .and_then(|pw| state.shared.issued_token(&pw))
        .filter(|t| t.service == Service::Ecr);
    let Some(token) = token else {
        return Err(AuthFailure::NotAuthorized);
    };
    let expired = token.expires_at.is_some_and(|at| at <= now_epoch_secs());
    let other_region = parsed_host.is_some_and(|(_, region, _)| *region != token.region);
    if expired || other_region {
        return Err(AuthFailure::Expired);
    }
    Ok(token)
}

/// A presigned-looking S3 URL for this blob (remembered, so the storage can serve it).
fn presign(
    state: &RegistryState,
    account: &str,
    region: &str,
    digest: &str,
    bytes: &[u8],
) -> String {
    let now = now_epoch();
    let id = state.shared.next_id();
    let signature = sha256_digest(format!("{}{id}{digest}", random_hex16(id)).as_bytes());
    let signature = signature.trim_start_matches("sha256:").to_string();
    let dhex = digest.trim_start_matches("sha256:");
    let uuid = |h: &str| -> String {
        let h: String = h.chars().chain(std::iter::repeat('0')).take(32).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    };
    // The object name is random on its own: nothing of the signature shows in a path.
    let path = format!(
        "/{}-{account}-{}/{}",
        dhex.get(..4).unwrap_or("0000"),
        uuid(dhex.get(4..).unwrap_or_default()),
        uuid(&format!("{}{}", random_hex16(id ^ 1), random_hex16(id ^ 2))),
    );
    let amz_date: String = iso8601(now)
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let day = amz_date.get(..8).unwrap_or("19700101");
    let base = state.storage_url.clone().unwrap_or_else(|| {
        format!("https://prod-{region}-starport-layer-bucket.s3.{region}.amazonaws.com")
    });
    // `ASIAFAKESTARPORT0000` is a dummy access key id, shaped like ECR's presigned layer URLs
    // (temporary credentials start with ASIA): it names no key and signs nothing.
    let url = format!(
        "{base}{path}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date={amz_date}\
         &X-Amz-SignedHeaders=host&X-Amz-Expires={PRESIGN_EXPIRES}\
         &X-Amz-Credential=ASIAFAKESTARPORT0000%2F{day}%2F{region}%2Fs3%2Faws4_request\
         &X-Amz-Signature={signature}"
    );
    state.shared.add_secret(signature.clone());
    state
        .presigned
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(
            signature,
            Presigned {
                path,
                bytes: Bytes::copy_from_slice(bytes),
                expires_at: now.saturating_add(PRESIGN_EXPIRES),
            },
        );
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecr_hosts() {
        assert_eq!(
            ecr_host("111111111111.dkr.ecr.us-east-1.amazonaws.com"),
            Some(("111111111111".into(), "us-east-1".into(), "aws"))
        );
        assert_eq!(
            ecr_host("111111111111.dkr.ecr-fips.us-gov-west-1.amazonaws.com:443"),
            Some(("111111111111".into(), "us-gov-west-1".into(), "aws"))
        );
        assert_eq!(
            ecr_host("222222222222.dkr.ecr.cn-north-1.amazonaws.com.cn"),
            Some(("222222222222".into(), "cn-north-1".into(), "aws-cn"))
        );
        assert_eq!(
            ecr_host("333333333333.dkr-ecr.eu-west-1.on.aws"),
            Some(("333333333333".into(), "eu-west-1".into(), "aws"))
        );
        assert_eq!(ecr_host("127.0.0.1:443"), None);
        assert_eq!(ecr_host("12345.dkr.ecr.us-east-1.amazonaws.com"), None);
    }
}
