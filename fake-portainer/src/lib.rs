//! A fake Portainer CE API server over HTTPS on loopback, for black-box tests of the daemon.
//!
//! It serves the few routes a registry-credentials client uses, answered as Portainer's own
//! handlers answer them (each handler names the Go file it mirrors):
//!
//! * `GET /api/system/status` (and the deprecated `GET /api/status`): public,
//!   `{"Version","InstanceID"}`,
//! * `POST /api/auth` with `{"Username","Password"}`: `{"jwt": ...}`; the token then acts as
//!   that user in `Authorization: Bearer`,
//! * `GET /api/registries`: administrators only, every record in full (with `Password`),
//! * `GET /api/registries/{id}`: `Password` and `ManagementConfiguration` hidden,
//! * `PUT /api/registries/{id}`: administrators only, Portainer's partial update.
//!
//! Requests authenticate with `X-API-Key` ([`FakePortainer::admin_key`],
//! [`FakePortainer::user_key`]) or a bearer JWT from `POST /api/auth` (users
//! [`ADMIN_USERNAME`] / [`ADMIN_PASSWORD`] and [`USER_USERNAME`] / [`USER_PASSWORD`]). Errors are
//! Portainer's `{"message","details"}` with Portainer's texts and statuses: 401 without a valid
//! credential, 403 for a standard user on an administrator route, 403 when `X-API-Key` and
//! `Authorization` come together.
//!
//! The server speaks HTTP/1.1 over TLS only (like Portainer, which turns HTTP/2 off), with a
//! certificate for `localhost` and `127.0.0.1` signed by a CA made at start
//! ([`FakePortainer::ca_pem`]); [`FakePortainer::rotate_certificate`] replaces both. Sessions
//! are never resumed, so every connection shows the current certificate.
//!
//! Also as in Portainer: a JSON body is decoded like Go's decoder does (field names in any
//! case, unknown fields ignored, bytes after the first value ignored, `EOF` for an empty body);
//! a route's `{id}` is read with `strconv.Atoi` (`+7` and `007` are 7); the record is looked up
//! (404) before the body is read (400); answers escape `<`, `>` and `&` as `\u003c`...; a 2xx
//! answer carries an `X-CSRF-Token`; a standard user inspecting a registry gets 500 (Portainer
//! wants `?endpointId=`, and the fake has no environments). Not mirrored: cookie sessions (and
//! so the CSRF check that goes with them), the login rate limiter, environments and registry
//! access policies; `POST /api/registries`, `DELETE /api/registries/{id}` and
//! `POST /api/registries/{id}/configure` answer 501.
//!
//! # Control plane
//!
//! For a test in another process (the `fake-portainer` binary), the same HTTPS port also serves
//! plain JSON under `/_fake/`, without authentication, never logged and never faulted:
//!
//! * `GET /_fake/records`: every record, `[{"id","name","kind","url","authentication",
//!   "username","password"}]` (passwords included),
//! * `POST /_fake/records` with `{"name","kind","url","authentication","username","password"}`
//!   (`name`, `kind` and `url` required): adds a record, answers `{"id":N}`,
//! * `GET /_fake/requests`: the request log, `[{"method","path","status","auth","api_key",
//!   "body"}]`, `auth` one of `none`, `api-key`, `bearer`, `both` (`api_key` is null unless
//!   `auth` is `api-key`); `DELETE /_fake/requests` empties it,
//! * `GET /_fake/secrets`: what [`FakePortainer::secrets`] returns.
//!
//! ```no_run
//! use fake_portainer::{Fault, FakePortainer};
//! let p = FakePortainer::start().unwrap();
//! let id = p.add_record("ecr", 7, "123456789012.dkr.ecr.us-east-1.amazonaws.com", true, "AWS", "old");
//! p.push_faults([Fault::Status500]);
//! // give p.url(), p.ca_pem() and p.admin_key() to the daemon under test, then:
//! assert_eq!(p.record(id).map(|r| r.password), Some("new".to_string()));
//! ```

mod control;
mod gojson;
mod portainer;
mod server;
mod state;
mod tls;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use state::Shared;

/// The administrator's user name for `POST /api/auth`.
pub const ADMIN_USERNAME: &str = "admin";
/// The administrator's password for `POST /api/auth`.
pub const ADMIN_PASSWORD: &str = "admin-password";
/// A standard (non-administrator) user's name for `POST /api/auth`.
pub const USER_USERNAME: &str = "user";
/// The standard user's password for `POST /api/auth`.
pub const USER_PASSWORD: &str = "user-password";

/// A registry record, the fields of Portainer's `portainer.Registry` a client reads or writes.
///
/// The record also has the other fields of Portainer's JSON shape (`BaseURL`, `Gitlab`, `Quay`,
/// `Ecr`, ...), which only `PUT /api/registries/{id}` changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// `Id`; never reused.
    pub id: u32,
    /// `Name`; Portainer keeps names unique on create and update (this API does not check).
    pub name: String,
    /// `Type`: 1 Quay, 2 Azure, 3 Custom, 4 Gitlab, 5 ProGet, 6 DockerHub, 7 ECR.
    pub kind: u32,
    /// `URL`.
    pub url: String,
    /// `Authentication`.
    pub authentication: bool,
    /// `Username`.
    pub username: String,
    /// `Password`.
    pub password: String,
}

/// One request to the Portainer API (everything but `/_fake/`), in order of arrival.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The path as sent, without the query.
    pub path: String,
    /// The status answered; 0 while unanswered and when the connection was closed without an
    /// answer ([`Fault::CloseConnection`], or the client went away).
    pub status: u16,
    /// How the request authenticated itself.
    pub auth: Auth,
    /// The raw request body (lossy UTF-8).
    pub body: String,
}

/// The credentials a request carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Neither an API key nor an `Authorization` header.
    None,
    /// An API key (`X-API-Key` header, or the `x-api-key` query parameter), valid or not.
    ApiKey(String),
    /// An `Authorization` header (or a `token` query parameter), whatever its content.
    Bearer,
    /// Both an `X-API-Key` and an `Authorization` header (Portainer answers 403).
    Both,
}

/// A misbehaviour injected into the answer to a `/api` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 500 `{"message":"Unable to persist registry changes inside the database",
    /// "details":"fake fault"}`; nothing changes.
    Status500,
    /// Sleep this long, then answer normally. The request is handled after the delay even if
    /// the client has given up by then, as a Go handler runs to completion.
    Delay(Duration),
    /// Close the TCP connection without an answer; nothing changes.
    CloseConnection,
}

/// A running fake Portainer. Dropping it stops the server and closes every connection.
pub struct FakePortainer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakePortainer {
    /// Binds `127.0.0.1:0` and serves HTTPS on its own background thread with its own tokio
    /// runtime, so it works from sync tests and async tests alike.
    pub fn start() -> std::io::Result<FakePortainer> {
        FakePortainer::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Like [`FakePortainer::start`] on the given address, which must be a loopback address.
    pub fn start_on(addr: SocketAddr) -> std::io::Result<FakePortainer> {
        if !addr.ip().is_loopback() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("fake-portainer only listens on loopback addresses, not {addr}"),
            ));
        }
        let tls = Arc::new(tls::Tls::new().map_err(std::io::Error::other)?);
        let config = tls::server_config(Arc::clone(&tls)).map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared::new(tls));
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("fake-portainer-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(server::serve(listener, thread_shared, config, rx));
                // Dropping the runtime cancels every connection task (delayed ones too).
                runtime.shutdown_timeout(Duration::from_millis(100));
            })?;
        Ok(FakePortainer {
            shared,
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// `https://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// PEM of the CA that signed the current server certificate.
    pub fn ca_pem(&self) -> String {
        self.shared.tls.current().ca_pem.clone()
    }

    /// Lowercase hex SHA-256 of the current leaf certificate's DER.
    pub fn cert_sha256(&self) -> String {
        self.shared.tls.current().leaf_sha256.clone()
    }

    /// The administrator's API key: `ptr_` and the standard base64 of 32 random bytes, as
    /// Portainer makes them (44 characters, `=` last). This one always holds a `+` and a `/`,
    /// so a client that puts it in a URL or a header unescaped is caught.
    pub fn admin_key(&self) -> String {
        self.shared.admin_key()
    }

    /// A standard (non-administrator) user's API key, made like [`FakePortainer::admin_key`].
    pub fn user_key(&self) -> String {
        self.shared.user_key()
    }

    /// From now on the key (an API key or a JWT) is answered 401 like an unknown one, as after
    /// its deletion in Portainer.
    pub fn revoke_key(&self, key: &str) {
        self.shared.revoke(key);
    }

    /// Adds a record as Portainer's create would store it (without its uniqueness checks) and
    /// returns its id; ids are never reused.
    pub fn add_record(
        &self,
        name: &str,
        kind: u32,
        url: &str,
        authentication: bool,
        username: &str,
        password: &str,
    ) -> u32 {
        self.shared
            .add_record(name, kind, url, authentication, username, password)
    }

    /// The record with this id.
    pub fn record(&self, id: u32) -> Option<Record> {
        self.shared.record(id)
    }

    /// Every record, by id.
    pub fn records(&self) -> Vec<Record> {
        self.shared.records()
    }

    /// Changes a record as an edit in Portainer's UI would (its id stays); no-op for an unknown
    /// id.
    pub fn edit_record(&self, id: u32, f: impl FnOnce(&mut Record)) {
        self.shared.edit_record(id, f);
    }

    /// Deletes a record (its id is not reused).
    pub fn delete_record(&self, id: u32) {
        self.shared.delete_record(id);
    }

    /// Every request to the API since start or [`FakePortainer::reset_requests`], in order of
    /// arrival, with the status answered.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests()
    }

    /// Forgets the request log.
    pub fn reset_requests(&self) {
        self.shared.reset_requests();
    }

    /// Queues faults, each for one next `/api` request (before the sticky one of
    /// [`FakePortainer::set_fault`]).
    pub fn push_faults(&self, f: impl IntoIterator<Item = Fault>) {
        self.shared.push_faults(f.into_iter().collect());
    }

    /// A fault for every `/api` request (after the queued ones) until cleared with `None`.
    pub fn set_fault(&self, f: Option<Fault>) {
        self.shared.set_fault(f);
    }

    /// Makes a new CA and a new leaf and serves only them from now on; open connections are
    /// closed, so a client that pins the old leaf or trusts only the old CA fails its next
    /// handshake.
    pub fn rotate_certificate(&self) {
        match tls::CertSet::generate() {
            Ok(set) => {
                self.shared.tls.replace(set);
                self.shared.close_connections();
            }
            // Minting a certificate with a fresh P-256 key does not fail in practice.
            Err(e) => panic!("fake-portainer: cannot make a new certificate: {e}"),
        }
    }

    /// The `Version` of `GET /api/system/status` (default `2.21.4`).
    pub fn set_version(&self, v: &str) {
        self.shared.set_version(v);
    }

    /// Every API key, every JWT issued, every login password and every password any record has
    /// held: none of them may appear in the daemon's output.
    pub fn secrets(&self) -> Vec<String> {
        self.shared.secrets()
    }
}

impl std::fmt::Debug for FakePortainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakePortainer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for FakePortainer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
