//! ECR authorization tokens: the `TokenSource` seam, token groups, validation, and the AWS SDK source.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_config::Region;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_ecr::error::{DisplayErrorContext, ProvideErrorMetadata};
use base64::Engine;

use crate::ecr::registry::{Partition, Registry};

/// How a registry's API call is authenticated. Registries with equal sources share credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialSource {
    /// A named profile from the shared AWS config files.
    pub profile: Option<String>,
    /// A role assumed through STS in the registry's region.
    pub role_arn: Option<String>,
    /// The external id for `role_arn`.
    pub external_id: Option<String>,
    /// The session name for `role_arn`.
    pub session_name: Option<String>,
}

/// Registries that share one `GetAuthorizationToken` call: a token covers every registry the
/// principal may pull from in that region, so one call per (partition, region, credentials, endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    /// ECR Public (the `ecr-public` API in us-east-1) rather than private ECR.
    pub public: bool,
    pub partition: Partition,
    pub region: String,
    pub fips: bool,
    pub dual_stack: bool,
    pub credentials: CredentialSource,
    pub endpoint_url: Option<String>,
}

impl GroupKey {
    /// The group of a registry host: ECR Public or private ECR in the host's partition and API
    /// region, with the given credentials and endpoint.
    pub fn new(
        registry: &Registry,
        credentials: &CredentialSource,
        endpoint_url: Option<&str>,
    ) -> GroupKey {
        let (public, partition, fips, dual_stack) = match registry {
            Registry::Public => (true, Partition::Aws, false, false),
            Registry::Private {
                partition,
                fips,
                dual_stack,
                ..
            } => (false, *partition, *fips, *dual_stack),
        };
        GroupKey {
            public,
            partition,
            region: registry.api_region().to_string(),
            fips,
            dual_stack,
            credentials: credentials.clone(),
            endpoint_url: endpoint_url.map(str::to_string),
        }
    }
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.public { "ecr-public" } else { "ecr" })?;
        write!(f, " {}", self.region)?;
        if self.fips {
            f.write_str(" fips")?;
        }
        if self.dual_stack {
            f.write_str(" dual-stack")?;
        }
        if let Some(p) = &self.credentials.profile {
            write!(f, " profile={p}")?;
        }
        if let Some(r) = &self.credentials.role_arn {
            write!(f, " role={r}")?;
        }
        if let Some(e) = &self.endpoint_url {
            write!(f, " endpoint={e}")?;
        }
        Ok(())
    }
}

/// The largest authorization token accepted (ECR's are 2-3 KB).
pub const MAX_TOKEN_SIZE: usize = 64 * 1024;

/// How long ECR tokens are valid.
pub const MAX_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// A validated ECR token. Its value never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    auth: String,
    pub expires_at: SystemTime,
}

impl Token {
    /// Validates a token as ECR returns it: base64 of `AWS:<password>`.
    pub fn new(auth: String, expires_at: SystemTime) -> Result<Token, TokenError> {
        // ECR's tokens are 2-3 KB; a huge one would make the file too large to read back.
        if auth.len() > MAX_TOKEN_SIZE {
            return Err(TokenError::Invalid(format!(
                "the authorization token is {} bytes; ECR's are a few KB (at most {MAX_TOKEN_SIZE} accepted)",
                auth.len()
            )));
        }
        if !crate::clock::in_range(expires_at) {
            return Err(TokenError::Invalid(format!(
                "expiresAt {} is not a time a token can expire at",
                crate::clock::rfc3339(expires_at)
            )));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| TokenError::Invalid("the authorization token is not base64".into()))?;
        let Some(password) = decoded.strip_prefix(b"AWS:") else {
            return Err(TokenError::Invalid(
                "the authorization token does not decode to AWS:<password>".into(),
            ));
        };
        if password.is_empty() || std::str::from_utf8(password).is_err() {
            return Err(TokenError::Invalid(
                "the authorization token holds an empty or non-UTF-8 password".into(),
            ));
        }
        if auth.trim() != auth {
            return Err(TokenError::Invalid(
                "the authorization token has surrounding white space".into(),
            ));
        }
        Ok(Token { auth, expires_at })
    }

    /// ECR tokens live 12 hours; an expiry claimed much later than that (a broken clock or
    /// endpoint) would postpone the refresh past the real expiry, so it is capped at 12 hours.
    pub fn capped(mut self, now: SystemTime) -> (Token, bool) {
        let cap = crate::clock::add(now, MAX_LIFETIME);
        if self.expires_at > crate::clock::add(cap, Duration::from_secs(300)) {
            self.expires_at = cap;
            return (self, true);
        }
        (self, false)
    }

    /// The value for the `auth` key of a docker auth entry. Handle with care: it is a secret.
    pub fn auth(&self) -> &str {
        &self.auth
    }

    /// The password (the part after `AWS:`), for consumers that take a user name and a
    /// password. A secret. `None` never happens for a token `new` accepted.
    pub fn password(&self) -> Option<String> {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&self.auth)
            .ok()?;
        let password = decoded.strip_prefix(b"AWS:")?;
        String::from_utf8(password.to_vec()).ok()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("auth", &"<redacted>")
            .field("expires_at", &crate::clock::rfc3339(self.expires_at))
            .finish()
    }
}

/// Why a token could not be had. Messages never hold a token or a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("throttled by ECR: {0}")]
    Throttled(String),
    #[error("access denied: {0}")]
    Denied(String),
    #[error("invalid response: {0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
}

/// Where tokens come from: the AWS SDK in production, anything in tests.
pub trait TokenSource: Send + Sync + 'static {
    fn fetch(&self, key: &GroupKey) -> impl Future<Output = Result<Token, TokenError>> + Send;
}

/// Tokens from ECR through the AWS SDK. Clients are cached per group, so credentials (and assumed
/// roles) are cached between refreshes.
pub struct AwsTokenSource {
    /// Attempts per call inside the SDK (transient errors, throttling).
    attempts: u32,
    bases: tokio::sync::Mutex<HashMap<Option<String>, aws_config::SdkConfig>>,
    clients: tokio::sync::Mutex<HashMap<GroupKey, Client>>,
}

#[derive(Clone)]
enum Client {
    Private(aws_sdk_ecr::Client),
    Public(aws_sdk_ecrpublic::Client),
}

/// Every attempt is bounded, so a black-holed endpoint cannot hang a refresh.
fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(Duration::from_secs(10))
        .operation_attempt_timeout(Duration::from_secs(10))
        .operation_timeout(Duration::from_secs(30))
        .build()
}

impl AwsTokenSource {
    /// `attempts`: how often the SDK itself tries one call. `once` lets it retry (3); the daemon
    /// uses 1, because its own schedule retries with full-jitter backoff, and SDK retries of a
    /// throttled call only deepen ECR's throttling when a fleet boots together.
    pub fn new(attempts: u32) -> AwsTokenSource {
        AwsTokenSource {
            attempts: attempts.max(1),
            bases: Default::default(),
            clients: Default::default(),
        }
    }

    /// The shared SDK config of one profile (credentials chain, identity cache, endpoint
    /// variables), loaded once: every group with that profile reuses it with its own region.
    async fn base(&self, profile: &Option<String>) -> aws_config::SdkConfig {
        let mut bases = self.bases.lock().await;
        if let Some(b) = bases.get(profile) {
            return b.clone();
        }
        // A region here only keeps the loader from asking instance metadata for one; each
        // client sets its group's region.
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::from_static(crate::ecr::registry::PUBLIC_REGION))
            .timeout_config(timeouts())
            .retry_config(RetryConfig::standard().with_max_attempts(self.attempts));
        if let Some(p) = profile {
            // A named profile means exactly that profile: not the env credentials that come first
            // in the default chain.
            loader = loader.profile_name(p).credentials_provider(
                aws_config::profile::ProfileFileCredentialsProvider::builder()
                    .profile_name(p)
                    .build(),
            );
        }
        let base = loader.load().await;
        bases.insert(profile.clone(), base.clone());
        base
    }

    /// The SDK config and, for a role, the assumed role's credentials of one group.
    async fn credentials(
        &self,
        key: &GroupKey,
    ) -> (aws_config::SdkConfig, Option<SharedCredentialsProvider>) {
        let region = Region::new(key.region.clone());
        let base = self.base(&key.credentials.profile).await;
        let assumed = match &key.credentials.role_arn {
            None => None,
            Some(arn) => {
                let mut b = aws_config::sts::AssumeRoleProvider::builder(arn)
                    .region(region.clone())
                    .session_name(
                        key.credentials
                            .session_name
                            .clone()
                            .unwrap_or_else(|| "ecr-refresherd".to_string()),
                    )
                    .configure(&base);
                if let Some(e) = &key.credentials.external_id {
                    b = b.external_id(e);
                }
                Some(SharedCredentialsProvider::new(b.build().await))
            }
        };
        (base, assumed)
    }

    async fn client(&self, key: &GroupKey) -> Client {
        if let Some(c) = self.clients.lock().await.get(key) {
            return c.clone();
        }
        let region = Region::new(key.region.clone());
        let (base, assumed) = self.credentials(key).await;
        let client = if key.public {
            let mut conf = aws_sdk_ecrpublic::config::Builder::from(&base).region(region.clone());
            if let Some(u) = &key.endpoint_url {
                conf = conf.endpoint_url(u);
            }
            if let Some(c) = assumed {
                conf = conf.credentials_provider(c);
            }
            Client::Public(aws_sdk_ecrpublic::Client::from_conf(conf.build()))
        } else {
            let mut conf = aws_sdk_ecr::config::Builder::from(&base)
                .region(region.clone())
                .use_fips(key.fips)
                .use_dual_stack(key.dual_stack);
            if let Some(u) = &key.endpoint_url {
                conf = conf.endpoint_url(u);
            }
            if let Some(c) = assumed {
                conf = conf.credentials_provider(c);
            }
            Client::Private(aws_sdk_ecr::Client::from_conf(conf.build()))
        };
        self.clients
            .lock()
            .await
            .entry(key.clone())
            .or_insert(client)
            .clone()
    }
}

/// Maps an SDK error to ours; service errors by code, the rest by their (secret-free) context.
fn sdk_error<E, R>(err: aws_sdk_ecr::error::SdkError<E, R>) -> TokenError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug,
{
    if let Some(service) = err.as_service_error() {
        let code = service.code().unwrap_or("unknown error").to_string();
        let message = service.message().unwrap_or("").to_string();
        let text = if message.is_empty() {
            code.clone()
        } else {
            format!("{code}: {message}")
        };
        return match code.as_str() {
            "ThrottlingException"
            | "Throttling"
            | "TooManyRequestsException"
            | "RequestLimitExceeded" => TokenError::Throttled(text),
            "AccessDeniedException"
            | "AccessDenied"
            | "UnrecognizedClientException"
            | "ExpiredTokenException"
            | "ExpiredToken"
            | "InvalidSignatureException" => TokenError::Denied(text),
            _ => TokenError::Failed(text),
        };
    }
    // Anything else (connection, DNS, timeout, credentials: a profile, a role's external_id, a
    // credential_process's stderr) may carry config values or a program's output. Status goes to
    // every member of socket_group, so it gets the kind of failure only; the details go to the
    // log at debug level.
    let detail = DisplayErrorContext(&err).to_string();
    tracing::debug!(detail = %detail, "the request failed");
    TokenError::Failed(failure_kind(&detail).to_string())
}

/// The kind of a failure that is not an answer from the service, without its details.
fn failure_kind(detail: &str) -> &'static str {
    let d = detail.to_ascii_lowercase();
    if d.contains("no providers in chain") || d.contains("credentialsnotloaded") {
        "no AWS credentials found (environment, profile, web identity, container or instance role)"
    } else if d.contains("imds") || d.contains("instance metadata") || d.contains("ec2 metadata") {
        "the instance metadata service (IMDS) gave no credentials: no instance role, or IMDS unreachable (inside a container IMDSv2 needs the hop limit at 2)"
    } else if d.contains("credential") || d.contains("assume") || d.contains("sts") {
        "could not load AWS credentials (profile, role, credential_process or instance role); set log_level = \"debug\" for details"
    } else if d.contains("timeout") || d.contains("timed out") {
        "timeout: the endpoint did not answer in time"
    } else if d.contains("dns") || d.contains("lookup") || d.contains("resolve") {
        "DNS: the endpoint's name could not be resolved"
    } else if d.contains("connect") || d.contains("refused") || d.contains("reset") {
        "could not connect to the endpoint (connection refused, reset or unreachable)"
    } else if d.contains("response") || d.contains("deserializ") || d.contains("unhandled") {
        "the endpoint's response could not be read"
    } else {
        "the request failed; set log_level = \"debug\" for details"
    }
}

fn expiry(t: Option<&aws_smithy_types::DateTime>) -> Result<SystemTime, TokenError> {
    let t = t.ok_or_else(|| TokenError::Invalid("the response has no expiresAt".into()))?;
    SystemTime::try_from(*t).map_err(|_| TokenError::Invalid("expiresAt is out of range".into()))
}

impl TokenSource for AwsTokenSource {
    async fn fetch(&self, key: &GroupKey) -> Result<Token, TokenError> {
        let token = self.fetch_uncapped(key).await?;
        let (token, capped) = token.capped(SystemTime::now());
        if capped {
            tracing::warn!(group = %key, "ECR claimed a token lifetime beyond 12 hours; assuming 12 hours");
        }
        Ok(token)
    }
}

impl AwsTokenSource {
    async fn fetch_uncapped(&self, key: &GroupKey) -> Result<Token, TokenError> {
        match self.client(key).await {
            Client::Private(c) => {
                let out = c
                    .get_authorization_token()
                    .send()
                    .await
                    .map_err(sdk_error)?;
                let data = out.authorization_data().first().ok_or_else(|| {
                    TokenError::Invalid("the response has no authorizationData".into())
                })?;
                let auth = data.authorization_token().ok_or_else(|| {
                    TokenError::Invalid("the response has no authorizationToken".into())
                })?;
                Token::new(auth.to_string(), expiry(data.expires_at())?)
            }
            Client::Public(c) => {
                let out = c
                    .get_authorization_token()
                    .send()
                    .await
                    .map_err(sdk_error)?;
                let data = out.authorization_data().ok_or_else(|| {
                    TokenError::Invalid("the response has no authorizationData".into())
                })?;
                let auth = data.authorization_token().ok_or_else(|| {
                    TokenError::Invalid("the response has no authorizationToken".into())
                })?;
                Token::new(auth.to_string(), expiry(data.expires_at())?)
            }
        }
    }
}

/// The most names `doctor` lists to find close matches.
const LIST_MAX: usize = 2000;

impl AwsTokenSource {
    /// The ARN of the principal a group's calls are made as (STS `GetCallerIdentity`, in the
    /// group's region, with the group's credentials).
    pub async fn caller_identity(&self, key: &GroupKey) -> Result<String, TokenError> {
        let (base, assumed) = self.credentials(key).await;
        let mut conf =
            aws_sdk_sts::config::Builder::from(&base).region(Region::new(key.region.clone()));
        if let Some(c) = assumed {
            conf = conf.credentials_provider(c);
        }
        let out = aws_sdk_sts::Client::from_conf(conf.build())
            .get_caller_identity()
            .send()
            .await
            .map_err(sdk_error)?;
        out.arn()
            .map(str::to_string)
            .ok_or_else(|| TokenError::Invalid("GetCallerIdentity gave no ARN".into()))
    }

    /// The repositories of a private registry the principal may list (`DescribeRepositories`).
    pub async fn repository_names(
        &self,
        key: &GroupKey,
        account: &str,
    ) -> Result<Vec<String>, TokenError> {
        let Client::Private(c) = self.client(key).await else {
            return Err(TokenError::Failed("ECR Public is not listed".into()));
        };
        let mut names = Vec::new();
        let mut pages = c
            .describe_repositories()
            .registry_id(account)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(sdk_error)?;
            names.extend(
                page.repositories()
                    .iter()
                    .filter_map(|r| r.repository_name().map(str::to_string)),
            );
            if names.len() >= LIST_MAX {
                break;
            }
        }
        Ok(names)
    }

    /// The tags of one repository (`ListImages`).
    pub async fn image_tags(
        &self,
        key: &GroupKey,
        account: &str,
        repository: &str,
    ) -> Result<Vec<String>, TokenError> {
        let Client::Private(c) = self.client(key).await else {
            return Err(TokenError::Failed("ECR Public is not listed".into()));
        };
        let mut tags = Vec::new();
        let mut pages = c
            .list_images()
            .registry_id(account)
            .repository_name(repository)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(sdk_error)?;
            tags.extend(
                page.image_ids()
                    .iter()
                    .filter_map(|i| i.image_tag().map(str::to_string)),
            );
            if tags.len() >= LIST_MAX {
                break;
            }
        }
        Ok(tags)
    }
}

impl<T: TokenSource> TokenSource for Arc<T> {
    fn fetch(&self, key: &GroupKey) -> impl Future<Output = Result<Token, TokenError>> + Send {
        T::fetch(self, key)
    }
}

/// Why this instance's identity could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("instance metadata is disabled (AWS_EC2_METADATA_DISABLED=true)")]
    Disabled,
    #[error("instance metadata (IMDSv2) did not answer: {0}")]
    Unreachable(String),
    #[error("the instance identity document is not JSON: {0}")]
    NotJson(String),
    #[error("the instance identity document has no {0}")]
    Missing(&'static str),
}

/// The account and region of this EC2 instance, from IMDSv2's identity document.
pub async fn instance_identity() -> Result<(String, String), IdentityError> {
    if std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(IdentityError::Disabled);
    }
    let client = aws_config::imds::Client::builder()
        .max_attempts(2)
        .connect_timeout(Duration::from_secs(1))
        .read_timeout(Duration::from_secs(2))
        .build();
    let doc = client
        .get("/latest/dynamic/instance-identity/document")
        .await
        .map_err(|e| IdentityError::Unreachable(DisplayErrorContext(&e).to_string()))?;
    let v: serde_json::Value =
        serde_json::from_str(doc.as_ref()).map_err(|e| IdentityError::NotJson(e.to_string()))?;
    let field = |k: &'static str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .map(str::to_string)
            .ok_or(IdentityError::Missing(k))
    };
    Ok((field("accountId")?, field("region")?))
}

/// Why the instance role gave no credentials, for `doctor`: what IMDS says, in a sentence
/// that holds no credential.
pub async fn instance_role_problem() -> String {
    if std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        return "instance metadata is disabled here (AWS_EC2_METADATA_DISABLED=true), so no instance role".into();
    }
    let client = aws_config::imds::Client::builder()
        .max_attempts(1)
        .connect_timeout(Duration::from_secs(1))
        .read_timeout(Duration::from_secs(1))
        .build();
    match client
        .get("/latest/meta-data/iam/security-credentials/")
        .await
    {
        Ok(roles) => match roles.as_ref().lines().next().filter(|r| !r.is_empty()) {
            Some(role) => format!(
                "IMDS answers and names the instance role {:?}, but its credentials could not be had",
                role.chars().take(64).collect::<String>()
            ),
            None => "IMDS answers, but the instance has no role (no instance profile)".into(),
        },
        Err(e) => {
            let d = DisplayErrorContext(&e).to_string().to_ascii_lowercase();
            if d.contains("404") || d.contains("not found") {
                "IMDS answers, but the instance has no role (no instance profile)".into()
            } else if d.contains("timeout") || d.contains("timed out") {
                "IMDS did not answer: not on EC2, metadata turned off for the instance, or inside a container with the IMDSv2 hop limit at 1".into()
            } else {
                "IMDS is not reachable: not on EC2, or metadata turned off for the instance".into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn token_validation() {
        let t = SystemTime::UNIX_EPOCH;
        assert!(Token::new(b64("AWS:secret"), t).is_ok());
        let tok = Token::new(b64("AWS:pa:ss"), t).unwrap();
        assert_eq!(tok.password().as_deref(), Some("pa:ss"));
        for (bad, why) in [
            ("not base64!".to_string(), "not base64"),
            (b64("user:secret"), "AWS:<password>"),
            (b64("AWS:"), "empty"),
            (format!("{} ", b64("AWS:x")), "white space"),
            (b64("AWS"), "AWS:<password>"),
        ] {
            let e = Token::new(bad, t).expect_err(why).to_string();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn huge_tokens_and_impossible_expiries_are_failed_fetches() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let huge = b64(&format!("AWS:{}", "x".repeat(4_000_000)));
        let e = Token::new(huge, t).expect_err("4 MB token").to_string();
        assert!(e.contains("a few KB") && !e.contains("xxxx"), "{e}");
        let before_1970 = SystemTime::UNIX_EPOCH - Duration::from_secs(86400);
        let e = Token::new(b64("AWS:x"), before_1970)
            .expect_err("1969")
            .to_string();
        assert!(e.contains("before 1970"), "{e}");
        let after_9999 = crate::clock::far_future() + Duration::from_secs(1);
        assert!(Token::new(b64("AWS:x"), after_9999).is_err());
        let (t, capped) = Token::new(b64("AWS:x"), crate::clock::far_future())
            .unwrap()
            .capped(crate::clock::far_future());
        assert!(
            !capped && crate::clock::in_range(t.expires_at),
            "no overflow at the edge"
        );
    }

    #[test]
    fn absurd_expiry_is_capped_at_12_hours() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let t = Token::new(b64("AWS:x"), now + Duration::from_secs(10 * 365 * 86400)).unwrap();
        let (t, capped) = t.capped(now);
        assert!(capped);
        assert_eq!(t.expires_at, now + MAX_LIFETIME);
        let t = Token::new(b64("AWS:x"), now + MAX_LIFETIME).unwrap();
        assert!(!t.capped(now).1, "a normal 12 h token is kept");
    }

    #[test]
    fn debug_hides_the_token() {
        let t = Token::new(b64("AWS:hunter2-password"), SystemTime::UNIX_EPOCH).unwrap();
        let d = format!("{t:?}");
        assert!(
            !d.contains(&b64("AWS:hunter2-password")) && !d.contains("hunter2"),
            "{d}"
        );
    }

    #[test]
    fn groups_share_region_and_credentials() {
        let reg = |host: &str, profile: Option<&str>| {
            let credentials = CredentialSource {
                profile: profile.map(str::to_string),
                ..Default::default()
            };
            (Registry::parse(host).unwrap(), credentials)
        };
        let key = |(r, c): (Registry, CredentialSource)| GroupKey::new(&r, &c, None);
        let a = key(reg("111111111111.dkr.ecr.us-east-1.amazonaws.com", None));
        let b = key(reg("222222222222.dkr.ecr.us-east-1.amazonaws.com", None));
        let c = key(reg("111111111111.dkr.ecr.us-west-2.amazonaws.com", None));
        let d = key(reg(
            "111111111111.dkr.ecr.us-east-1.amazonaws.com",
            Some("other"),
        ));
        let e = key(reg(
            "111111111111.dkr.ecr-fips.us-east-1.amazonaws.com",
            None,
        ));
        let p1 = key(reg("public.ecr.aws", None));
        let p2 = key(reg("ecr-public.aws.com", None));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_ne!(a, e);
        assert_eq!(p1, p2);
        assert_ne!(a, p1, "us-east-1 private and public are different APIs");
    }
}
