//! The fake's data: users and their keys, issued JWTs, registry records, faults, the request log.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use crate::tls::Tls;
use crate::{
    ADMIN_PASSWORD, ADMIN_USERNAME, Auth, Fault, Record, Request, USER_PASSWORD, USER_USERNAME,
};

/// Portainer's `RegistryType` values.
pub(crate) const PROGET: u32 = 5;
pub(crate) const GITLAB: u32 = 4;
pub(crate) const ECR: u32 = 7;

/// `n` random bytes.
pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    if ::aws_lc_rs::rand::fill(&mut b).is_err() {
        // aws-lc's generator does not fail; still, never hand out a predictable secret.
        panic!("fake-portainer: no randomness");
    }
    b
}

/// `n` random bytes as lowercase hex.
pub(crate) fn random_hex(n: usize) -> String {
    random_bytes(n).iter().map(|b| format!("{b:02x}")).collect()
}

/// A user of the fake Portainer.
#[derive(Clone, Debug)]
pub(crate) struct User {
    pub(crate) id: u32,
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) admin: bool,
}

/// `GitlabRegistryData`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Gitlab {
    pub(crate) project_id: i64,
    pub(crate) instance_url: String,
    pub(crate) project_path: String,
}

/// `QuayRegistryData`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Quay {
    pub(crate) use_organisation: bool,
    pub(crate) organisation_name: String,
}

/// A stored `portainer.Registry`: the public [`Record`] and the fields only the API touches.
#[derive(Clone, Debug)]
pub(crate) struct Stored {
    pub(crate) rec: Record,
    pub(crate) base_url: String,
    pub(crate) gitlab: Gitlab,
    pub(crate) quay: Quay,
    pub(crate) ecr_region: String,
}

impl Stored {
    fn new(rec: Record) -> Stored {
        Stored {
            rec,
            base_url: String::new(),
            gitlab: Gitlab::default(),
            quay: Quay::default(),
            ecr_region: String::new(),
        }
    }
}

struct Credential {
    token: String,
    user_id: u32,
    revoked: bool,
}

struct LogEntry {
    seq: u64,
    req: Request,
}

pub(crate) struct Inner {
    pub(crate) users: Vec<User>,
    api_keys: Vec<Credential>,
    jwts: Vec<Credential>,
    pub(crate) records: BTreeMap<u32, Stored>,
    next_id: u32,
    log: Vec<LogEntry>,
    next_seq: u64,
    queue: VecDeque<Fault>,
    sticky: Option<Fault>,
    secrets: Vec<String>,
    pub(crate) version: String,
    pub(crate) instance_id: String,
}

impl Inner {
    fn add_secret(&mut self, s: &str) {
        if !s.is_empty() && !self.secrets.iter().any(|x| x == s) {
            self.secrets.push(s.to_string());
        }
    }

    /// Stores a record (new or changed) and remembers its password as a secret.
    pub(crate) fn put(&mut self, s: Stored) {
        let pw = s.rec.password.clone();
        self.add_secret(&pw);
        self.records.insert(s.rec.id, s);
    }

    /// The user an API key belongs to (`None` for an unknown or revoked key).
    pub(crate) fn user_by_api_key(&self, key: &str) -> Option<User> {
        let c = self
            .api_keys
            .iter()
            .find(|c| !c.revoked && c.token == key)?;
        self.users.iter().find(|u| u.id == c.user_id).cloned()
    }

    /// The user a JWT was issued to (`None` for an unknown or revoked token).
    pub(crate) fn user_by_jwt(&self, token: &str) -> Option<User> {
        let c = self.jwts.iter().find(|c| !c.revoked && c.token == token)?;
        self.users.iter().find(|u| u.id == c.user_id).cloned()
    }

    /// A JWT-shaped token for the user (`header.claims.signature`, HS256 like Portainer's).
    pub(crate) fn issue_jwt(&mut self, user: &User) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = serde_json::json!({
            "id": user.id,
            "username": user.username,
            "role": if user.admin { 1 } else { 2 },
            "scope": "default",
            "forceChangePassword": false,
            "exp": now + 8 * 3600,
            "jti": random_hex(16),
            "iat": now,
        });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signature = URL_SAFE_NO_PAD.encode(random_bytes(32));
        let token = format!("{header}.{claims}.{signature}");
        self.add_secret(&token);
        self.jwts.push(Credential {
            token: token.clone(),
            user_id: user.id,
            revoked: false,
        });
        token
    }

    pub(crate) fn version(&self) -> &str {
        &self.version
    }
}

/// `ptr_` and the standard base64 of 32 random bytes, like Portainer's `GenerateApiKey`; drawn
/// until it holds a `+` and a `/` (about one draw in four does), so clients meet both.
fn api_key() -> String {
    loop {
        let k = format!("ptr_{}", STANDARD.encode(random_bytes(32)));
        if k.contains('+') && k.contains('/') {
            return k;
        }
    }
}

/// A random UUID (version 4) as text, like Portainer's `InstanceID`.
fn uuid4() -> String {
    let mut b = random_bytes(16);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// State shared by the server thread and the [`crate::FakePortainer`] handle.
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    pub(crate) tls: Arc<Tls>,
    /// Bumped on certificate rotation: every open connection closes.
    rotation: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn new(tls: Arc<Tls>) -> Shared {
        let users = vec![
            User {
                id: 1,
                username: ADMIN_USERNAME.to_string(),
                password: ADMIN_PASSWORD.to_string(),
                admin: true,
            },
            User {
                id: 2,
                username: USER_USERNAME.to_string(),
                password: USER_PASSWORD.to_string(),
                admin: false,
            },
        ];
        let mut inner = Inner {
            users,
            api_keys: Vec::new(),
            jwts: Vec::new(),
            records: BTreeMap::new(),
            next_id: 1,
            log: Vec::new(),
            next_seq: 0,
            queue: VecDeque::new(),
            sticky: None,
            secrets: Vec::new(),
            version: "2.21.4".to_string(),
            instance_id: uuid4(),
        };
        for (user_id, password) in [(1, ADMIN_PASSWORD), (2, USER_PASSWORD)] {
            let key = api_key();
            inner.add_secret(&key);
            inner.add_secret(password);
            inner.api_keys.push(Credential {
                token: key,
                user_id,
                revoked: false,
            });
        }
        Shared {
            inner: Mutex::new(inner),
            tls,
            rotation: tokio::sync::watch::Sender::new(0),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn first_key_of(&self, user_id: u32) -> String {
        self.lock()
            .api_keys
            .iter()
            .find(|c| c.user_id == user_id)
            .map(|c| c.token.clone())
            .unwrap_or_default()
    }

    pub(crate) fn admin_key(&self) -> String {
        self.first_key_of(1)
    }

    pub(crate) fn user_key(&self) -> String {
        self.first_key_of(2)
    }

    pub(crate) fn revoke(&self, key: &str) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        for c in inner.api_keys.iter_mut().chain(inner.jwts.iter_mut()) {
            if c.token == key {
                c.revoked = true;
            }
        }
    }

    pub(crate) fn add_record(
        &self,
        name: &str,
        kind: u32,
        url: &str,
        authentication: bool,
        username: &str,
        password: &str,
    ) -> u32 {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id = inner.next_id.saturating_add(1);
        inner.put(Stored::new(Record {
            id,
            name: name.to_string(),
            kind,
            url: url.to_string(),
            authentication,
            username: username.to_string(),
            password: password.to_string(),
        }));
        id
    }

    pub(crate) fn record(&self, id: u32) -> Option<Record> {
        self.lock().records.get(&id).map(|s| s.rec.clone())
    }

    pub(crate) fn records(&self) -> Vec<Record> {
        self.lock()
            .records
            .values()
            .map(|s| s.rec.clone())
            .collect()
    }

    pub(crate) fn edit_record(&self, id: u32, f: impl FnOnce(&mut Record)) {
        let mut inner = self.lock();
        let Some(mut s) = inner.records.get(&id).cloned() else {
            return;
        };
        f(&mut s.rec);
        s.rec.id = id;
        inner.put(s);
    }

    pub(crate) fn delete_record(&self, id: u32) {
        self.lock().records.remove(&id);
    }

    /// Logs a request on arrival; the returned number finds it again for its status.
    pub(crate) fn log_begin(&self, method: &str, path: &str, auth: Auth, body: String) -> u64 {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.log.push(LogEntry {
            seq,
            req: Request {
                method: method.to_string(),
                path: path.to_string(),
                status: 0,
                auth,
                body,
            },
        });
        seq
    }

    pub(crate) fn log_status(&self, seq: u64, status: u16) {
        let mut inner = self.lock();
        if let Some(e) = inner.log.iter_mut().rev().find(|e| e.seq == seq) {
            e.req.status = status;
        }
    }

    pub(crate) fn requests(&self) -> Vec<Request> {
        self.lock().log.iter().map(|e| e.req.clone()).collect()
    }

    pub(crate) fn reset_requests(&self) {
        self.lock().log.clear();
    }

    pub(crate) fn push_faults(&self, f: Vec<Fault>) {
        self.lock().queue.extend(f);
    }

    pub(crate) fn set_fault(&self, f: Option<Fault>) {
        self.lock().sticky = f;
    }

    /// The fault for the next `/api` request: a queued one first, else the sticky one.
    pub(crate) fn take_fault(&self) -> Option<Fault> {
        let mut inner = self.lock();
        match inner.queue.pop_front() {
            Some(f) => Some(f),
            None => inner.sticky.clone(),
        }
    }

    pub(crate) fn set_version(&self, v: &str) {
        self.lock().version = v.to_string();
    }

    pub(crate) fn secrets(&self) -> Vec<String> {
        self.lock().secrets.clone()
    }

    pub(crate) fn close_connections(&self) {
        self.rotation.send_modify(|g| *g = g.wrapping_add(1));
    }

    pub(crate) fn rotations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.rotation.subscribe()
    }
}
