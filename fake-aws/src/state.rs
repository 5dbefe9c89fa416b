//! Shared, thread-safe state of a fake server: faults, rate limits, recorded calls, issued secrets.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{Call, Fault, Service};

/// Hook called with each newly issued ECR password.
pub(crate) type IssueHook = Arc<dyn Fn(&str) + Send + Sync>;

/// Token bucket: `rate` tokens per second, at most `burst` tokens, starts full.
#[derive(Clone, Debug)]
pub(crate) struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub(crate) fn new(rate: f64, burst: u32) -> Bucket {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            0.0
        };
        Bucket {
            rate,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub(crate) fn rate(&self) -> f64 {
        self.rate
    }

    pub(crate) fn burst(&self) -> f64 {
        self.burst
    }
}

/// Per-service settings.
#[derive(Debug)]
pub(crate) struct ServiceState {
    pub(crate) default_fault: Fault,
    pub(crate) queue: VecDeque<Fault>,
    pub(crate) latency: Duration,
    pub(crate) bucket: Option<Bucket>,
    pub(crate) token_lifetime: Duration,
}

impl Default for ServiceState {
    fn default() -> Self {
        ServiceState {
            default_fault: Fault::None,
            queue: VecDeque::new(),
            latency: Duration::ZERO,
            bucket: None,
            token_lifetime: Duration::from_secs(12 * 3600),
        }
    }
}

/// Where and to whom an ECR / ECR Public password was issued.
#[derive(Clone, Debug)]
pub(crate) struct IssuedToken {
    /// ECR or ECR Public.
    pub(crate) service: Service,
    /// `expiresAt` as sent (epoch seconds), if it was sent.
    pub(crate) expires_at: Option<f64>,
    /// Access key id from the SigV4 scope of the GetAuthorizationToken request.
    pub(crate) access_key_id: Option<String>,
    /// Region from the SigV4 scope (the default region when the request had none).
    pub(crate) region: String,
}

/// Credentials issued by the fake STS or IMDS.
#[derive(Clone, Debug)]
pub(crate) struct IssuedCreds {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    pub(crate) session_token: String,
}

#[derive(Debug)]
struct State {
    services: [ServiceState; 4],
    calls: Vec<Call>,
    /// General counter (request ids, IMDS tokens, randomness input).
    counter: u64,
    /// Number of ECR passwords issued.
    password_counter: u64,
    /// Number of STS / IMDS credentials issued.
    creds_counter: u64,
    ecr_account: String,
    imds_account: String,
    imds_region: String,
    passwords: Vec<String>,
    /// Every valid token carries the first password issued (tokens differ in expiry only).
    same_password: bool,
    /// Repository -> tags, what the fake registry serves and the ECR API lists.
    catalog: std::collections::BTreeMap<String, Vec<String>>,
    /// Password -> the expiresAt (epoch seconds) it was issued with.
    expiries: std::collections::HashMap<String, f64>,
    /// Password (of a well-formed `AWS:` token) -> who got it, where, until when: what the fake
    /// registry checks a `Basic` login against.
    tokens: HashMap<String, IssuedToken>,
    /// Requests to the fake registry and its layer storage, oldest first.
    registry_calls: Vec<crate::RegistryCall>,
    secrets: Vec<String>,
    /// IMDS session tokens and when they expire.
    imds_tokens: HashMap<String, Instant>,
    /// STS-issued access key id -> (assumed role ARN, assumed role id).
    assumed: HashMap<String, (String, String)>,
}

/// Everything the server and the [`crate::FakeAws`] handle share.
pub(crate) struct Shared {
    state: Mutex<State>,
    hook: Mutex<Option<IssueHook>>,
    verbose: AtomicBool,
    started: Instant,
}

/// Default account of the fake.
pub(crate) const DEFAULT_ACCOUNT: &str = "123456789012";
/// Default region of the fake.
pub(crate) const DEFAULT_REGION: &str = "us-east-1";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new() -> Shared {
        Shared {
            state: Mutex::new(State {
                services: Default::default(),
                calls: Vec::new(),
                counter: 0,
                password_counter: 0,
                creds_counter: 0,
                ecr_account: DEFAULT_ACCOUNT.to_string(),
                imds_account: DEFAULT_ACCOUNT.to_string(),
                imds_region: DEFAULT_REGION.to_string(),
                passwords: Vec::new(),
                same_password: false,
                catalog: Default::default(),
                expiries: std::collections::HashMap::new(),
                tokens: HashMap::new(),
                registry_calls: Vec::new(),
                secrets: Vec::new(),
                imds_tokens: HashMap::new(),
                assumed: HashMap::new(),
            }),
            hook: Mutex::new(None),
            verbose: AtomicBool::new(false),
            started: Instant::now(),
        }
    }

    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    pub(crate) fn with_service<R>(&self, s: Service, f: impl FnOnce(&mut ServiceState) -> R) -> R {
        let mut st = lock(&self.state);
        f(&mut st.services[s.index()])
    }

    pub(crate) fn set_imds_identity(&self, account: &str, region: &str) {
        let mut st = lock(&self.state);
        st.imds_account = account.to_string();
        st.imds_region = region.to_string();
    }

    pub(crate) fn set_ecr_account(&self, account: &str) {
        lock(&self.state).ecr_account = account.to_string();
    }

    /// `(account, region)` of the IMDS identity.
    pub(crate) fn imds_identity(&self) -> (String, String) {
        let st = lock(&self.state);
        (st.imds_account.clone(), st.imds_region.clone())
    }

    pub(crate) fn ecr_account(&self) -> String {
        lock(&self.state).ecr_account.clone()
    }

    pub(crate) fn set_verbose(&self, on: bool) {
        self.verbose.store(on, Ordering::Relaxed);
    }

    pub(crate) fn verbose(&self) -> bool {
        self.verbose.load(Ordering::Relaxed)
    }

    pub(crate) fn set_hook(&self, hook: IssueHook) {
        *lock(&self.hook) = Some(hook);
    }

    /// Records `call`, picks its fault and returns it with the service's latency.
    ///
    /// Order: the head of the one-shot queue, else Throttle if the rate limit is exceeded, else the
    /// sticky fault. When `content_ok` is false, content-only faults are skipped (left queued).
    pub(crate) fn begin(&self, mut call: Call, content_ok: bool) -> (Fault, Duration) {
        let mut st = lock(&self.state);
        let svc = &mut st.services[call.service.index()];
        let queued = match svc.queue.front() {
            Some(f) if content_ok || !f.is_content() => svc.queue.pop_front(),
            _ => None,
        };
        let fault = match queued {
            Some(f) => f,
            None => {
                let limited = svc
                    .bucket
                    .as_mut()
                    .is_some_and(|b| !b.try_take(Instant::now()));
                if limited {
                    Fault::Throttle
                } else if content_ok || !svc.default_fault.is_content() {
                    svc.default_fault.clone()
                } else {
                    Fault::None
                }
            }
        };
        let latency = svc.latency;
        call.fault = fault.clone();
        st.calls.push(call);
        (fault, latency)
    }

    /// Records a call that was rejected before any fault applied (malformed request).
    pub(crate) fn record(&self, call: Call) {
        if self.verbose() {
            eprintln!(
                "fake-aws: {} {} rejected as malformed",
                call.service, call.action
            );
        }
        lock(&self.state).calls.push(call);
    }

    pub(crate) fn token_lifetime(&self, s: Service) -> Duration {
        self.with_service(s, |st| st.token_lifetime)
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        lock(&self.state).calls.clone()
    }

    pub(crate) fn count(&self, s: Service) -> usize {
        lock(&self.state)
            .calls
            .iter()
            .filter(|c| c.service == s)
            .count()
    }

    pub(crate) fn reset_calls(&self) {
        let mut st = lock(&self.state);
        st.calls.clear();
        st.registry_calls.clear();
    }

    pub(crate) fn expiry_of(&self, password: &str) -> Option<f64> {
        lock(&self.state).expiries.get(password).copied()
    }

    /// Who got this password, where and until when (well-formed tokens only).
    pub(crate) fn issued_token(&self, password: &str) -> Option<IssuedToken> {
        lock(&self.state).tokens.get(password).cloned()
    }

    /// `(arn, user id, account)` STS GetCallerIdentity answers for this access key id: the
    /// assumed role of a key the fake STS issued, else `arn:aws:iam::ACCOUNT:user/fake`.
    pub(crate) fn caller_identity(&self, access_key_id: Option<&str>) -> (String, String, String) {
        match access_key_id.and_then(|k| self.assumed(k)) {
            Some((arn, role_id)) => {
                let account = arn.split(':').nth(4).unwrap_or_default().to_string();
                (arn, role_id, account)
            }
            None => {
                let account = self.ecr_account();
                (
                    format!("arn:aws:iam::{account}:user/fake"),
                    "FAKEUSERID".to_string(),
                    account,
                )
            }
        }
    }

    /// Appends a request to the registry log.
    pub(crate) fn record_registry(&self, call: crate::RegistryCall) {
        lock(&self.state).registry_calls.push(call);
    }

    /// Every registry and storage request since start or the last reset.
    pub(crate) fn registry_calls(&self) -> Vec<crate::RegistryCall> {
        lock(&self.state).registry_calls.clone()
    }

    pub(crate) fn issued_passwords(&self) -> Vec<String> {
        lock(&self.state).passwords.clone()
    }

    pub(crate) fn secrets(&self) -> Vec<String> {
        lock(&self.state).secrets.clone()
    }

    /// Settings summary for the control plane: (service, sticky fault, queued, latency, bucket).
    pub(crate) fn settings(&self) -> Vec<(Service, Fault, usize, Duration, Option<Bucket>)> {
        let st = lock(&self.state);
        Service::ALL
            .iter()
            .map(|&s| {
                let v = &st.services[s.index()];
                (
                    s,
                    v.default_fault.clone(),
                    v.queue.len(),
                    v.latency,
                    v.bucket.clone(),
                )
            })
            .collect()
    }

    /// Next value of the issue counter and 16 random hex digits.
    fn next_unique(st: &mut State) -> (u64, String) {
        st.counter += 1;
        let n = st.counter;
        (n, random_hex16(n))
    }

    /// A fresh unique number (for request ids and the like).
    pub(crate) fn next_id(&self) -> u64 {
        let mut st = lock(&self.state);
        st.counter += 1;
        st.counter
    }

    /// Issues a new ECR password. `valid` passwords (in a well-formed `AWS:` token) are listed by
    /// `issued_passwords`, remembered with `origin` for the fake registry and passed to the hook;
    /// all are listed by `secrets`.
    pub(crate) fn issue_password(&self, valid: bool, origin: IssuedToken) -> String {
        let (pw, new) = {
            let mut st = lock(&self.state);
            let again = (valid && st.same_password)
                .then(|| st.passwords.first().cloned())
                .flatten();
            let new = again.is_none();
            let pw = match again {
                Some(pw) => pw,
                None => {
                    let (_, hex) = Self::next_unique(&mut st);
                    st.password_counter += 1;
                    let n = st.password_counter;
                    format!("fakepw-{n}-{hex}")
                }
            };
            if new {
                st.secrets.push(pw.clone());
            }
            if valid {
                if new {
                    st.passwords.push(pw.clone());
                }
                if let Some(at) = origin.expires_at {
                    st.expiries.insert(pw.clone(), at);
                }
                st.tokens.insert(pw.clone(), origin);
            }
            (pw, new)
        };
        // The hook (a registry's htpasswd) hears of each password once.
        if valid && new {
            let hook = lock(&self.hook).clone();
            if let Some(hook) = hook {
                hook(&pw);
            }
        }
        pw
    }

    /// The repositories and tags of the fake registry, for the ECR API's listings.
    pub(crate) fn set_catalog(&self, c: std::collections::BTreeMap<String, Vec<String>>) {
        lock(&self.state).catalog = c;
    }

    pub(crate) fn catalog(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        lock(&self.state).catalog.clone()
    }

    /// Every valid token from now on carries the first password issued.
    pub(crate) fn set_same_password(&self, on: bool) {
        lock(&self.state).same_password = on;
    }

    /// Remembers an issued secret (a full token, say) for `secrets`.
    pub(crate) fn add_secret(&self, secret: String) {
        lock(&self.state).secrets.push(secret);
    }

    /// Issues session credentials; `prefix` is `FAKEASSUMED` (STS) or `FAKEIMDS` (IMDS).
    pub(crate) fn issue_creds(&self, prefix: &str, kind: &str) -> IssuedCreds {
        let mut st = lock(&self.state);
        let (_, hex) = Self::next_unique(&mut st);
        let (_, hex2) = Self::next_unique(&mut st);
        st.creds_counter += 1;
        let n = st.creds_counter;
        let creds = IssuedCreds {
            access_key_id: format!("{prefix}{n}"),
            secret_access_key: format!("fakesecret-{kind}-{n}-{hex}"),
            session_token: format!("fakesession-{kind}-{n}-{hex}{hex2}"),
        };
        st.secrets.push(creds.secret_access_key.clone());
        st.secrets.push(creds.session_token.clone());
        creds
    }

    pub(crate) fn remember_assumed(&self, access_key_id: &str, arn: &str, role_id: &str) {
        lock(&self.state).assumed.insert(
            access_key_id.to_string(),
            (arn.to_string(), role_id.to_string()),
        );
    }

    pub(crate) fn assumed(&self, access_key_id: &str) -> Option<(String, String)> {
        lock(&self.state).assumed.get(access_key_id).cloned()
    }

    /// Issues an IMDS session token valid for `ttl`.
    pub(crate) fn issue_imds_token(&self, ttl: Duration) -> String {
        let mut st = lock(&self.state);
        let (n, hex) = Self::next_unique(&mut st);
        let token = format!("fake-imds-token-{n}-{hex}");
        let now = Instant::now();
        st.imds_tokens.retain(|_, exp| *exp > now);
        st.imds_tokens.insert(token.clone(), now + ttl);
        token
    }

    pub(crate) fn imds_token_valid(&self, token: &str) -> bool {
        lock(&self.state)
            .imds_tokens
            .get(token)
            .is_some_and(|exp| *exp > Instant::now())
    }
}

/// 16 hex digits that differ between calls and between processes.
pub(crate) fn random_hex16(n: u64) -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(n);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}
