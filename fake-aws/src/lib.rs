//! A fake AWS (ECR, ECR Public, STS, IMDSv2) HTTP server on loopback for black-box tests and demos.
//!
//! One server on one port serves every emulated service and routes each request by its shape:
//!
//! * `X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.*` is ECR (awsJson1_1),
//! * `X-Amz-Target: SpencerFrontendService.*` is ECR Public (awsJson1_1),
//! * a form-encoded `POST` with an `Action=` parameter is STS (awsQuery),
//! * a path under `/latest/` is IMDSv2,
//! * a path under `/_fake/` is the out-of-process control plane (see [`FakeAws`]).
//!
//! [`FakeAws::start_registry`] adds an ECR-shaped registry over HTTPS on a second port, which
//! accepts the passwords this fake ECR issued, and an S3-shaped layer storage its blob redirects
//! point at (see [`RegistryConfig`]).
//!
//! The server never opens an outbound connection.
//!
//! ```no_run
//! use fake_aws::{FakeAws, Fault, Service};
//! let aws = FakeAws::start().unwrap();
//! aws.push_faults(Service::Ecr, [Fault::Throttle, Fault::Throttle]);
//! let env = aws.env(); // give these to the daemon under test
//! # drop(env);
//! ```

mod image;
mod protocol;
mod registry;
mod server;
mod state;
mod tls;

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::str::FromStr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use state::Shared;

pub use image::{Blob, Image, ManifestFormat};
pub use registry::{Deny, FakeRegistry, RegistryCall, RegistryConfig, RegistryKind, RepoTag};

/// Why [`FakeAws::start_registry`] could not start the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A listener address is not a loopback address.
    #[error("fake-aws only listens on loopback addresses, not {0}")]
    NotLoopback(SocketAddr),
    /// The configuration does not hold together (a bad repository name or storage URL).
    #[error("{0}")]
    Config(String),
    /// The certificate or key is unusable.
    #[error("TLS: {0}")]
    Tls(String),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The runtime or its thread could not start.
    #[error("cannot start the registry: {0}")]
    Io(std::io::Error),
}

/// Environment value given as `AWS_ACCESS_KEY_ID` by [`FakeAws::env`].
pub const FAKE_ACCESS_KEY_ID: &str = "FAKEACCESSKEY";
/// Environment value given as `AWS_SECRET_ACCESS_KEY` by [`FakeAws::env`].
pub const FAKE_SECRET_ACCESS_KEY: &str = "fake-secret-key-do-not-use";
/// Role name the fake IMDS reports under `/latest/meta-data/iam/security-credentials/`.
pub const IMDS_ROLE_NAME: &str = "fake-instance-role";

/// One of the emulated services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// Amazon ECR (awsJson1_1, `AmazonEC2ContainerRegistry_V20150921`).
    Ecr,
    /// Amazon ECR Public (awsJson1_1, `SpencerFrontendService`).
    EcrPublic,
    /// AWS STS (awsQuery).
    Sts,
    /// EC2 instance metadata service, version 2.
    Imds,
}

impl Service {
    /// Every service, in a fixed order.
    pub const ALL: [Service; 4] = [
        Service::Ecr,
        Service::EcrPublic,
        Service::Sts,
        Service::Imds,
    ];

    /// Short lower-case name used by the control plane: `ecr`, `ecr-public`, `sts`, `imds`.
    pub fn name(self) -> &'static str {
        match self {
            Service::Ecr => "ecr",
            Service::EcrPublic => "ecr-public",
            Service::Sts => "sts",
            Service::Imds => "imds",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Service::Ecr => 0,
            Service::EcrPublic => 1,
            Service::Sts => 2,
            Service::Imds => 3,
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Service {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ecr" => Ok(Service::Ecr),
            "ecr-public" | "ecr_public" | "ecrpublic" => Ok(Service::EcrPublic),
            "sts" => Ok(Service::Sts),
            "imds" => Ok(Service::Imds),
            other => Err(format!(
                "unknown service {other:?} (expected ecr, ecr-public, sts or imds)"
            )),
        }
    }
}

/// A misbehaviour injected into a response.
///
/// Faults that change only the body's content ([`Fault::is_content`]) are consumed solely by
/// requests whose body they can affect: the IMDS token `PUT` and the plain-text IMDS paths skip
/// them (they stay at the head of the one-shot queue), so a queued `NotJson` for IMDS lands on the
/// identity document or the credentials document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// Answer normally.
    #[default]
    None,
    /// Throttling error (`ThrottlingException` for ECR, `Throttling` for STS, HTTP 429 for IMDS).
    Throttle,
    /// HTTP 500 (`ServerException` for ECR, `InternalFailure` for STS).
    ServerError,
    /// HTTP 503 (`ServiceUnavailableException` for ECR, `ServiceUnavailable` for STS).
    Unavailable,
    /// `AccessDeniedException` (ECR, 400), `AccessDenied` (STS, 403), HTTP 403 (IMDS).
    AccessDenied,
    /// `ExpiredTokenException` (ECR, 400), `ExpiredToken` (STS, 400), HTTP 401 (IMDS).
    ExpiredToken,
    /// HTTP 200 with a body that is neither JSON nor XML.
    NotJson,
    /// HTTP 200 with the credentials left out (no `authorizationToken`, no `<Credentials>`,
    /// an IMDS document of `{}`).
    MissingFields,
    /// An `authorizationToken` that is not base64.
    NotBase64,
    /// An `authorizationToken` that decodes to `user:password` instead of `AWS:password`.
    NoAwsPrefix,
    /// No `expiresAt` (ECR) / `Expiration` (STS, IMDS credentials).
    NoExpiresAt,
    /// Expiry at now + this many seconds (may be negative or huge).
    ExpiresAtOffset(i64),
    /// A valid response padded to at least this many bytes.
    HugeBody(usize),
    /// Sleep this long, then answer normally.
    Stall(Duration),
    /// Close the TCP connection without any response.
    DropConnection,
    /// Never answer (until the client or the server drops the connection).
    Blackhole,
    /// An access-denied error whose message is this text, verbatim: control characters, newlines
    /// and any length, as a hostile or broken endpoint may send (`AccessDeniedException` for ECR,
    /// `AccessDenied` for STS, HTTP 403 with this body for IMDS).
    ErrorMessage(String),
    /// A valid token whose password is this many bytes long (ECR's are a few KB).
    HugeToken(usize),
}

impl Fault {
    /// Whether this fault only alters the content of a successful body (the body-shape faults
    /// and [`Fault::HugeBody`]).
    pub fn is_content(&self) -> bool {
        matches!(
            self,
            Fault::NotJson
                | Fault::MissingFields
                | Fault::NotBase64
                | Fault::NoAwsPrefix
                | Fault::NoExpiresAt
                | Fault::ExpiresAtOffset(_)
                | Fault::HugeBody(_)
                | Fault::HugeToken(_)
        )
    }
}

impl fmt::Display for Fault {
    /// Formats as the control plane's fault name, e.g. `throttle`, `stall-ms=500`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::None => f.write_str("none"),
            Fault::Throttle => f.write_str("throttle"),
            Fault::ServerError => f.write_str("server-error"),
            Fault::Unavailable => f.write_str("unavailable"),
            Fault::AccessDenied => f.write_str("access-denied"),
            Fault::ExpiredToken => f.write_str("expired-token"),
            Fault::NotJson => f.write_str("not-json"),
            Fault::MissingFields => f.write_str("missing-fields"),
            Fault::NotBase64 => f.write_str("not-base64"),
            Fault::NoAwsPrefix => f.write_str("no-aws-prefix"),
            Fault::NoExpiresAt => f.write_str("no-expires-at"),
            Fault::ExpiresAtOffset(s) => write!(f, "expires-in={s}"),
            Fault::HugeBody(n) => write!(f, "huge-body={n}"),
            Fault::HugeToken(n) => write!(f, "huge-token={n}"),
            Fault::Stall(d) => write!(f, "stall-ms={}", d.as_millis()),
            Fault::DropConnection => f.write_str("drop"),
            Fault::Blackhole => f.write_str("blackhole"),
            // Escaped, so printing a fault never sends its control characters to a terminal.
            Fault::ErrorMessage(m) => write!(f, "error-message={}", m.escape_debug()),
        }
    }
}

impl FromStr for Fault {
    type Err = String;

    /// Parses the control plane's fault names (the inverse of `Display`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (name, arg) = match s.split_once(['=', ':']) {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let name = name.to_ascii_lowercase();
        let num = |what: &str| -> Result<i64, String> {
            let a = arg.ok_or_else(|| format!("fault {what} needs a value, e.g. {what}=5"))?;
            a.trim()
                .parse::<i64>()
                .map_err(|_| format!("fault {what}: {a:?} is not an integer"))
        };
        let unsigned = |what: &str| -> Result<u64, String> {
            let n = num(what)?;
            u64::try_from(n).map_err(|_| format!("fault {what}: must not be negative"))
        };
        let plain = |f: Fault| -> Result<Fault, String> {
            match arg {
                None => Ok(f),
                Some(_) => Err(format!("fault {name} takes no value")),
            }
        };
        match name.as_str() {
            "none" | "ok" => plain(Fault::None),
            "throttle" | "throttling" => plain(Fault::Throttle),
            "server-error" | "500" => plain(Fault::ServerError),
            "unavailable" | "503" => plain(Fault::Unavailable),
            "access-denied" => plain(Fault::AccessDenied),
            "expired-token" => plain(Fault::ExpiredToken),
            "not-json" => plain(Fault::NotJson),
            "missing-fields" => plain(Fault::MissingFields),
            "not-base64" => plain(Fault::NotBase64),
            "no-aws-prefix" => plain(Fault::NoAwsPrefix),
            "no-expires-at" => plain(Fault::NoExpiresAt),
            "drop" | "drop-connection" => plain(Fault::DropConnection),
            "blackhole" => plain(Fault::Blackhole),
            "expires-in" => Ok(Fault::ExpiresAtOffset(num("expires-in")?)),
            "huge-body" => {
                let n = unsigned("huge-body")?;
                usize::try_from(n)
                    .map(Fault::HugeBody)
                    .map_err(|_| "fault huge-body: too large".to_string())
            }
            "huge-token" => {
                let n = unsigned("huge-token")?;
                usize::try_from(n)
                    .map(Fault::HugeToken)
                    .map_err(|_| "fault huge-token: too large".to_string())
            }
            "stall-ms" => Ok(Fault::Stall(Duration::from_millis(unsigned("stall-ms")?))),
            "error-message" => {
                let a = arg.ok_or("fault error-message needs a text, e.g. error-message=no")?;
                unescape(a).map(Fault::ErrorMessage)
            }
            _ => Err(format!(
                "unknown fault {s:?} (expected none, throttle, server-error, unavailable, \
                 access-denied, expired-token, not-json, missing-fields, not-base64, \
                 no-aws-prefix, no-expires-at, stall-ms=N, drop, blackhole, expires-in=N, \
                 huge-body=N, huge-token=N, error-message=TEXT)"
            )),
        }
    }
}

/// Undoes `str::escape_debug` (`\\n`, `\\u{1b}`, ...), so `error-message=` round-trips.
fn unescape(s: &str) -> Result<String, String> {
    let bad = || format!("fault error-message: bad escape in {s:?}");
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next().ok_or_else(bad)? {
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            '0' => out.push('\0'),
            c @ ('\\' | '\'' | '"') => out.push(c),
            'u' => {
                let rest = chars.as_str();
                let hex = rest
                    .strip_prefix('{')
                    .and_then(|r| r.split_once('}'))
                    .map(|(h, _)| h)
                    .ok_or_else(bad)?;
                let c = u32::from_str_radix(hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(bad)?;
                out.push(c);
                chars = rest[hex.len() + 2..].chars();
            }
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

/// One request the fake received (recorded before the response is sent, whatever the fault).
#[derive(Clone, Debug)]
pub struct Call {
    /// The service the request was routed to.
    pub service: Service,
    /// The operation: `GetAuthorizationToken`, `AssumeRole`, ... For IMDS one of `GetToken`,
    /// `GetIdentityDocument`, `ListRoles`, `GetRoleCredentials`, `GetRegion`,
    /// `GetAvailabilityZone`, `GetInstanceId`, or `<METHOD> <path>` for anything else.
    pub action: String,
    /// Region from the SigV4 credential scope of the `Authorization` header.
    pub region: Option<String>,
    /// Access key id from the SigV4 credential scope of the `Authorization` header.
    pub access_key_id: Option<String>,
    /// STS `RoleArn`.
    pub role_arn: Option<String>,
    /// STS `ExternalId`.
    pub external_id: Option<String>,
    /// STS `RoleSessionName`.
    pub session_name: Option<String>,
    /// ECR `registryIds` from the request body (usually empty).
    pub registry_ids: Vec<String>,
    /// The fault applied to this request ([`Fault::None`] for a normal answer).
    pub fault: Fault,
    /// When the request arrived.
    pub at: Instant,
}

impl Call {
    pub(crate) fn new(service: Service, action: impl Into<String>) -> Call {
        Call {
            service,
            action: action.into(),
            region: None,
            access_key_id: None,
            role_arn: None,
            external_id: None,
            session_name: None,
            registry_ids: Vec::new(),
            fault: Fault::None,
            at: Instant::now(),
        }
    }
}

/// A running fake AWS server. Dropping it stops the server and closes every connection.
///
/// Out-of-process control plane on the same port (all answers are JSON):
///
/// * `GET /_fake/calls`: counts per service and the list of calls,
/// * `GET /_fake/secrets`: every secret issued so far,
/// * `GET /_fake/registry`: counts per kind and the list of registry and storage requests,
/// * `POST /_fake/reset`: forget recorded calls (registry requests too),
/// * `POST /_fake/fault?service=ecr&fault=throttle[&count=N]`: sticky fault, or N one-shot ones,
/// * `POST /_fake/lifetime?secs=N`: ECR / ECR Public token lifetime,
/// * `POST /_fake/rate?service=ecr&rate=20&burst=200` (`rate=off` removes the limit),
/// * `POST /_fake/latency?service=ecr&ms=50`,
/// * `POST /_fake/identity?account=A&region=R`: IMDS identity,
/// * `GET /_fake/health`.
pub struct FakeAws {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeAws {
    /// Binds `127.0.0.1:0` and serves on its own background thread with its own tokio runtime,
    /// so it works from sync tests and async tests alike. Dropping it stops the server.
    pub fn start() -> std::io::Result<FakeAws> {
        FakeAws::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Like [`FakeAws::start`] on the given address, which must be a loopback address.
    pub fn start_on(addr: SocketAddr) -> std::io::Result<FakeAws> {
        if !addr.ip().is_loopback() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("fake-aws only listens on loopback addresses, not {addr}"),
            ));
        }
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared::new());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("fake-aws-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(server::serve(listener, thread_shared, rx));
                // Dropping the runtime cancels every connection task (stalled or blackholed).
                runtime.shutdown_timeout(Duration::from_millis(100));
            })?;
        Ok(FakeAws {
            shared,
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Environment a test should give a child process so the real SDKs talk to this fake:
    /// `AWS_ENDPOINT_URL_ECR`, `AWS_ENDPOINT_URL_ECR_PUBLIC`, `AWS_ENDPOINT_URL_STS`,
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT`, `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv4`,
    /// static `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, `AWS_CONFIG_FILE` and
    /// `AWS_SHARED_CREDENTIALS_FILE` at nonexistent paths, and `AWS_REGION=us-east-1` (filter it
    /// out to test region discovery). `AWS_EC2_METADATA_DISABLED` is not set.
    pub fn env(&self) -> Vec<(String, String)> {
        let ep = self.endpoint();
        [
            ("AWS_ENDPOINT_URL_ECR", ep.as_str()),
            ("AWS_ENDPOINT_URL_ECR_PUBLIC", ep.as_str()),
            ("AWS_ENDPOINT_URL_STS", ep.as_str()),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", ep.as_str()),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "IPv4"),
            ("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_ACCESS_KEY),
            ("AWS_CONFIG_FILE", "/nonexistent/fake-aws/config"),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/fake-aws/credentials",
            ),
            ("AWS_REGION", "us-east-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Sets the sticky fault of a service (applies until changed; one-shot faults go first).
    pub fn set_fault(&self, s: Service, f: Fault) {
        self.shared.with_service(s, |st| st.default_fault = f);
    }

    /// Appends one-shot faults, consumed one per request before the sticky fault applies.
    pub fn push_faults(&self, s: Service, fs: impl IntoIterator<Item = Fault>) {
        let fs: Vec<Fault> = fs.into_iter().collect();
        self.shared.with_service(s, |st| st.queue.extend(fs));
    }

    /// Clears a service's one-shot queue and resets its sticky fault to [`Fault::None`].
    pub fn clear_faults(&self, s: Service) {
        self.shared.with_service(s, |st| {
            st.queue.clear();
            st.default_fault = Fault::None;
        });
    }

    /// Adds a delay before every response of a service.
    pub fn set_latency(&self, s: Service, d: Duration) {
        self.shared.with_service(s, |st| st.latency = d);
    }

    /// Every valid ECR token from now on carries the first password issued (only their expiry
    /// differs), so a registry with one htpasswd line for `AWS` accepts every unexpired token,
    /// as ECR accepts every token it issued. The issue hook hears of that password once.
    pub fn set_same_password(&self, on: bool) {
        self.shared.set_same_password(on);
    }

    /// Lifetime of ECR and ECR Public tokens (`expiresAt = now + d`; default 12 h).
    pub fn set_token_lifetime(&self, d: Duration) {
        self.shared
            .with_service(Service::Ecr, |st| st.token_lifetime = d);
        self.shared
            .with_service(Service::EcrPublic, |st| st.token_lifetime = d);
    }

    /// Token-bucket rate limit shared by all callers of a service; requests beyond it get
    /// [`Fault::Throttle`]. The bucket starts full.
    pub fn set_rate_limit(&self, s: Service, rate_per_sec: f64, burst: u32) {
        self.shared.with_service(s, |st| {
            st.bucket = Some(state::Bucket::new(rate_per_sec, burst))
        });
    }

    /// Removes the rate limit of a service.
    pub fn clear_rate_limit(&self, s: Service) {
        self.shared.with_service(s, |st| st.bucket = None);
    }

    /// Account and region of the IMDS identity document (default `123456789012`, `us-east-1`).
    pub fn set_imds_identity(&self, account: &str, region: &str) {
        self.shared.set_imds_identity(account, region);
    }

    /// Account used in ECR `proxyEndpoint` when the request names no registry
    /// (default `123456789012`).
    pub fn set_ecr_account(&self, account: &str) {
        self.shared.set_ecr_account(account);
    }

    /// Logs one short line per request to stderr.
    pub fn set_verbose(&self, on: bool) {
        self.shared.set_verbose(on);
    }

    /// Every request received since start or the last [`FakeAws::reset_calls`].
    pub fn calls(&self) -> Vec<Call> {
        self.shared.calls()
    }

    /// Number of requests (successful and failed) to a service.
    pub fn count(&self, s: Service) -> usize {
        self.shared.count(s)
    }

    /// Starts the fake registry and its layer storage (both HTTPS) beside this fake, on their own
    /// thread. The registry accepts `Basic` logins with user `AWS` and a password this fake's ECR
    /// issued (in a well-formed token), as real ECR does; it stops when the handle is dropped.
    pub fn start_registry(&self, config: RegistryConfig) -> Result<FakeRegistry, RegistryError> {
        FakeRegistry::start(Arc::clone(&self.shared), config)
    }

    /// Every request to a registry started from this fake (and its storage), oldest first.
    pub fn registry_calls(&self) -> Vec<RegistryCall> {
        self.shared.registry_calls()
    }

    /// Number of registry and storage requests of a kind.
    pub fn registry_count(&self, kind: RegistryKind) -> usize {
        self.shared
            .registry_calls()
            .iter()
            .filter(|c| c.kind == kind)
            .count()
    }

    /// Forgets recorded calls and registry requests (issued secrets are kept).
    pub fn reset_calls(&self) {
        self.shared.reset_calls();
    }

    /// When the token holding this password expires, as the fake said in `expiresAt`.
    pub fn expiry_of(&self, password: &str) -> Option<std::time::SystemTime> {
        let at = self.shared.expiry_of(password)?;
        std::time::UNIX_EPOCH.checked_add(std::time::Duration::try_from_secs_f64(at).ok()?)
    }

    /// Every ECR / ECR Public password issued in a valid `AWS:` token, oldest first.
    pub fn issued_passwords(&self) -> Vec<String> {
        self.shared.issued_passwords()
    }

    /// Every secret ever issued: passwords (also those in deliberately malformed tokens), full
    /// base64 tokens, STS and IMDS secret keys and session tokens, and the signatures of the
    /// presigned layer URLs the registry handed out. None of them may appear in the daemon's
    /// output.
    pub fn secrets(&self) -> Vec<String> {
        self.shared.secrets()
    }

    /// Hook called with each newly issued ECR / ECR Public password (replaces any earlier hook).
    pub fn on_issue(&self, f: impl Fn(&str) + Send + Sync + 'static) {
        self.shared.set_hook(Arc::new(f));
    }
}

impl fmt::Debug for FakeAws {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeAws").field("addr", &self.addr).finish()
    }
}

impl Drop for FakeAws {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_message_fault_round_trips_with_control_characters() {
        let f = Fault::ErrorMessage("a\r\n\u{1b}[2K\u{1b}]0;t\u{7}\\ \"q\" é".into());
        let shown = f.to_string();
        assert!(!shown.chars().any(char::is_control), "{shown}");
        assert_eq!(shown.parse::<Fault>(), Ok(f));
        assert!("error-message=\\q".parse::<Fault>().is_err());
        assert!("error-message".parse::<Fault>().is_err());
    }
}
