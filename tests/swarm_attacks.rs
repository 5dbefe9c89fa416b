//! Attacks on `[swarm]`, against the built binary: a hostile or broken Docker Engine on the socket
//! (a service whose image moves to another registry while it is updated, answers echoing the
//! credential, dense or huge answers, thousands of services with long names, terminal escapes,
//! endless, silent, slow and failing answers, odd image references and version numbers), and a
//! hostile local user (a real non-root uid racing its own listener and root's Engine on the
//! configured socket path). The hostile Engine is in this file: HTTP/1.1 by hand on a Unix
//! socket, so it can answer anything.

mod common;

use std::io::{BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(60);
const ALIAS: &str = "mirror.example:5000";
const USER: u32 = 4242;

// ---------------------------------------------------------------------------------------------
// The hostile Engine.

/// One request the Engine read.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    path: String,
    auth: Option<String>,
    body: Vec<u8>,
}

impl Req {
    /// The path without its query.
    fn route(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }

    /// `X-Registry-Auth`, decoded (base64url of JSON).
    fn auth_json(&self) -> Option<Value> {
        let raw = base64::engine::general_purpose::URL_SAFE
            .decode(self.auth.as_deref()?)
            .ok()?;
        serde_json::from_slice(&raw).ok()
    }

    fn is_update(&self) -> bool {
        self.method == "POST" && self.route().ends_with("/update")
    }

    /// The service id in `/v1.41/services/{id}[/update]`.
    fn service_id(&self) -> &str {
        self.route()
            .trim_start_matches("/v1.41/services/")
            .trim_end_matches("/update")
    }
}

/// What the Engine answers.
enum Reply {
    Json(u16, String),
    Text(u16, String),
    /// A chunked body that never ends.
    Endless,
    /// No answer; the connection held until the daemon hangs up.
    Silent,
}

type Handler = dyn Fn(&Req) -> Reply + Send + Sync;

/// A scripted Engine on a Unix socket; every request it read, in order.
struct Engine {
    seen: Arc<Mutex<Vec<Req>>>,
}

impl Engine {
    fn start(sock: &Path, handler: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Engine {
        let listener = UnixListener::bind(sock).expect("bind the engine socket");
        let handler: Arc<Handler> = Arc::new(handler);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (h, s) = (Arc::clone(&handler), Arc::clone(&s));
                std::thread::spawn(move || serve(conn, &*h, &s));
            }
        });
        Engine { seen }
    }

    fn seen(&self) -> Vec<Req> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn updates(&self) -> Vec<Req> {
        self.seen().into_iter().filter(Req::is_update).collect()
    }

    fn count(&self, method: &str, route: &str) -> usize {
        self.seen()
            .iter()
            .filter(|r| r.method == method && r.route() == route)
            .count()
    }
}

fn read_request(r: &mut BufReader<UnixStream>) -> Option<Req> {
    let h = read_http_request(r)?;
    Some(Req {
        method: h.method,
        path: h.path,
        auth: h.registry_auth,
        body: h.body,
    })
}

fn answer(w: &mut UnixStream, status: u16, kind: &str, body: &[u8]) -> bool {
    let head = format!(
        "HTTP/1.1 {status} X\r\nApi-Version: 1.41\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    w.write_all(head.as_bytes()).is_ok() && w.write_all(body).is_ok()
}

fn serve(conn: UnixStream, handler: &Handler, seen: &Mutex<Vec<Req>>) {
    let Ok(read) = conn.try_clone() else {
        return;
    };
    let mut r = BufReader::new(read);
    let mut w = conn;
    while let Some(req) = read_request(&mut r) {
        seen.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(req.clone());
        let ok = match handler(&req) {
            Reply::Json(status, body) => {
                answer(&mut w, status, "application/json", body.as_bytes())
            }
            Reply::Text(status, body) => answer(&mut w, status, "text/plain", body.as_bytes()),
            Reply::Endless => {
                let head = "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n[\r\n";
                if w.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "0,".repeat(32 * 1024));
                while w.write_all(chunk.as_bytes()).is_ok() {}
                return;
            }
            Reply::Silent => {
                let mut b = [0u8; 1];
                let _ = r.read(&mut b);
                return;
            }
        };
        if !ok {
            return;
        }
    }
}

/// `/_ping` and `/info` of a manager; `None` for anything else.
fn manager(req: &Req) -> Option<Reply> {
    match (req.method.as_str(), req.route()) {
        ("GET", "/_ping") => Some(Reply::Text(200, "OK".into())),
        ("GET", "/v1.41/info") => Some(Reply::Json(
            200,
            json!({"Swarm": {"LocalNodeState": "active", "ControlAvailable": true}}).to_string(),
        )),
        _ => None,
    }
}

fn spec(name: &str, image: &str) -> Value {
    json!({
        "Name": name,
        "TaskTemplate": {"ContainerSpec": {"Image": image}},
        "Mode": {"Replicated": {"Replicas": 1}},
    })
}

fn service(id: &str, version: u64, spec: &Value) -> Value {
    json!({"ID": id, "Version": {"Index": version}, "Spec": spec})
}

/// A service the scripted swarm holds; `moves_to`: the image it is given by "someone else"
/// when the daemon first tries to update it (the update then fails: out of sequence).
struct Svc {
    id: String,
    version: u64,
    spec: Value,
    moves_to: Option<String>,
}

impl Svc {
    fn new(id: &str, version: u64, name: &str, image: &str) -> Svc {
        Svc {
            id: id.into(),
            version,
            spec: spec(name, image),
            moves_to: None,
        }
    }

    fn json(&self) -> Value {
        service(&self.id, self.version, &self.spec)
    }
}

const OUT_OF_SEQUENCE: &str = "rpc error: code = Unknown desc = update out of sequence";

/// A swarm manager holding `services`: lists them, reads one, updates one at its version.
fn swarm(services: Arc<Mutex<Vec<Svc>>>) -> impl Fn(&Req) -> Reply + Send + Sync + 'static {
    move |req| {
        if let Some(r) = manager(req) {
            return r;
        }
        let mut all = services.lock().unwrap_or_else(|e| e.into_inner());
        let not_found = || Reply::Json(404, json!({"message": "service not found"}).to_string());
        match (req.method.as_str(), req.route()) {
            ("GET", "/v1.41/services") => Reply::Json(
                200,
                Value::Array(all.iter().map(Svc::json).collect()).to_string(),
            ),
            ("GET", _) => match all.iter().find(|s| s.id == req.service_id()) {
                Some(s) => Reply::Json(200, s.json().to_string()),
                None => not_found(),
            },
            ("POST", _) if req.is_update() => {
                let version: u64 = req
                    .path
                    .split("version=")
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let Some(s) = all.iter_mut().find(|s| s.id == req.service_id()) else {
                    return not_found();
                };
                if let Some(image) = s.moves_to.take() {
                    // Someone else moved it to another image meanwhile.
                    s.spec["TaskTemplate"]["ContainerSpec"]["Image"] = image.into();
                    s.version += 1;
                    return Reply::Json(500, json!({"message": OUT_OF_SEQUENCE}).to_string());
                }
                if s.version != version {
                    return Reply::Json(500, json!({"message": OUT_OF_SEQUENCE}).to_string());
                }
                if let Ok(body) = serde_json::from_slice::<Value>(&req.body) {
                    s.spec = body;
                }
                s.version = s.version.wrapping_add(1);
                Reply::Json(200, json!({"Warnings": []}).to_string())
            }
            _ => Reply::Json(404, json!({"message": "page not found"}).to_string()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon's side.

/// Config: a file target, H1 (alias `mirror.example:5000`) and H3, `[swarm]` on `sock`, checked
/// every second. Returns the target.
fn config(w: &World, sock: &Path, daemon_extra: &str) -> PathBuf {
    let target = w.path("d/config.json");
    w.config(&format!(
        "{}{daemon_extra}\n[[target]]\npath = \"{}\"\n[[registry]]\nhost = \"{H1}\"\naliases = [\"{ALIAS}\"]\n[[registry]]\nhost = \"{H3}\"\n[swarm]\nenabled = true\nsocket = \"{}\"\ncheck_every = \"1s\"\n",
        w.daemon_section(),
        target.display(),
        sock.display()
    ));
    target
}

/// The registry host of an image as docker reads it (its first component when that names a
/// host), lower-cased; `None` for Docker Hub.
fn image_host(image: &str) -> Option<String> {
    let (first, _) = image.split_once('/')?;
    (first.contains(['.', ':']) || first == "localhost" || first != first.to_lowercase())
        .then(|| first.to_ascii_lowercase())
}

/// The password the daemon holds for `host` (from the target it wrote).
fn password_for(target: &Path, host: &str) -> String {
    let v = read_json(target);
    password_of(v["auths"][host]["auth"].as_str().unwrap_or_else(|| {
        panic!("{}: no entry for {host}", target.display());
    }))
}

/// Whether `target` holds an entry for each of `hosts`.
fn has_entries(target: &Path, hosts: &[&str]) -> bool {
    std::fs::read_to_string(target)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_some_and(|v| hosts.iter().all(|h| v["auths"][*h]["auth"].is_string()))
}

/// Every update carries the credential of the registry its own body's image is on: the
/// `serveraddress` is that image's host, and the password is that registry's.
fn assert_each_credential_matches_its_image(engine: &Engine, target: &Path) {
    for u in engine.updates() {
        let body: Value = serde_json::from_slice(&u.body).expect("the update's body is JSON");
        let image = body["TaskTemplate"]["ContainerSpec"]["Image"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let auth = u.auth_json().expect("X-Registry-Auth");
        let server = auth["serveraddress"].as_str().unwrap_or_default();
        let host = image_host(&image);
        let registry = match host.as_deref() {
            Some(h) if h == H1 || h == ALIAS => H1,
            Some(h) if h == H3 => H3,
            _ => "",
        };
        assert!(
            !registry.is_empty() && host.as_deref() == Some(server),
            "{} {}: the credential of {server} went with a spec whose image is {image}",
            u.method,
            u.path
        );
        assert_eq!(
            auth["password"].as_str(),
            Some(password_for(target, registry).as_str()),
            "{}: not {registry}'s password for an image on it ({image})",
            u.path
        );
    }
}

/// The daemon's peak resident memory, kB.
fn peak_rss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn output_text(o: &std::process::Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

/// Every piece of `secret` `n` characters long.
fn pieces(secret: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() <= n {
        return vec![secret.to_string()];
    }
    chars.windows(n).map(|w| w.iter().collect()).collect()
}

/// Panics with where it is if a piece of at least `n` characters of any secret is in `text`.
fn assert_no_piece(what: &str, text: &str, secrets: &[String], n: usize) {
    let all: Vec<String> = secrets.iter().flat_map(|s| pieces(s, n)).collect();
    let finder = aho_corasick::AhoCorasick::new(&all).expect("patterns");
    if let Some(m) = finder.find(text) {
        let from = text.floor_char_boundary(m.start().saturating_sub(120));
        let to = text.floor_char_boundary((m.end() + 40).min(text.len()));
        panic!(
            "{what}: {n} characters of a secret are shown: ...{}...",
            &text[from..to]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Registry A's credential for an image on B.

/// A version conflict is read again and retried; if the service's image moved meanwhile (to a
/// registry not managed, or to another managed one), the credential read for the old image must
/// not go with the new spec: the swarm would send registry A's password to B on every pull.
#[test]
fn a_service_whose_image_moves_during_a_conflict_never_gets_the_old_registrys_credential() {
    let w = World::new();
    let sock = w.path("engine.sock");
    let mut s1 = Svc::new("s1", 10, "app", &format!("{H1}/team/app:v1"));
    s1.moves_to = Some("evil.example/team/app:v1".into());
    let mut s2 = Svc::new("s2", 20, "api", &format!("{H1}/team/api:v1"));
    s2.moves_to = Some(format!("{H3}/team/api:v1"));
    let mut s3 = Svc::new("s3", 30, "web", &format!("{ALIAS}/team/web:v1"));
    s3.moves_to = Some("docker.io/library/nginx:1".into());
    let services = Arc::new(Mutex::new(vec![s1, s2, s3]));
    let engine = Engine::start(&sock, swarm(Arc::clone(&services)));
    let target = config(&w, &sock, "");
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    // s2, now on H3, gets H3's credential (from the next round on).
    assert!(
        wait_for(LONG, || engine
            .updates()
            .iter()
            .any(|u| u.service_id() == "s2"
                && u.auth_json().is_some_and(|a| a["serveraddress"] == H3))),
        "s2 never got H3's credential: {:?}\n{}",
        engine.updates().iter().map(|u| &u.path).collect::<Vec<_>>(),
        d.log_text()
    );
    assert!(wait_for(LONG, || has_entries(&target, &[H1, H3])));
    assert_each_credential_matches_its_image(&engine, &target);
    // s1 and s3 are on registries not managed now: nothing more was sent to them.
    for id in ["s1", "s3"] {
        assert_eq!(
            engine
                .updates()
                .iter()
                .filter(|u| u.service_id() == id)
                .count(),
            1,
            "{id}: updated again after its image left the managed registries"
        );
    }
    assert!(wait_for(LONG, || w.status_json().is_some_and(|s| {
        let names: Vec<&str> = s["swarm"]["services"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x["name"].as_str()).collect())
            .unwrap_or_default();
        names == ["api"]
    })));
}

/// Image references spelled oddly: only those docker would pull from a managed registry get a
/// credential, always that registry's, with `serveraddress` its host; versions near u64::MAX go
/// back exactly; a service whose update always conflicts, or whose image flips between two
/// registries, gets a bounded number of updates.
#[test]
fn odd_references_versions_and_flips_get_only_their_own_registrys_credential() {
    let w = World::new();
    let sock = w.path("engine.sock");
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let upper = H1.to_ascii_uppercase();
    let cases: Vec<(&str, String, bool)> = vec![
        ("upper", format!("{upper}/team/app:v1"), true),
        (
            "alias-upper",
            "MIRROR.example:5000/team/app:v1".into(),
            true,
        ),
        ("alias", format!("{ALIAS}/team/app@{digest}"), true),
        ("h3", format!("{H3}/team/app:v1"), true),
        ("port443", format!("{H1}:443/team/app:v1"), false),
        ("suffix", format!("{H1}.evil.example/team/app:v1"), false),
        ("in-path", format!("evil.example/{H1}/app:v1"), false),
        ("hub-index", "index.docker.io/library/nginx:1".into(), false),
        ("bare-tag", format!("{H1}:v1"), false),
        ("bare-digest", format!("{H1}@{digest}"), false),
        ("localhost", format!("localhost/{H1}/app"), false),
        ("bad-digest", format!("{H1}/team/app@sha256:zz"), false),
        ("space", format!(" {H1}/team/app:v1"), false),
        (
            "newline",
            format!("{H1}/team/app:v1\nevil.example/x"),
            false,
        ),
        ("user-info", format!("x@{H1}/team/app:v1"), false),
        ("scheme", format!("https://{H1}/team/app:v1"), false),
        ("empty", String::new(), false),
    ];
    let mut list: Vec<Svc> = cases
        .iter()
        .enumerate()
        .map(|(i, (name, image, _))| Svc::new(&format!("c{i}"), 100 + i as u64, name, image))
        .collect();
    list.push(Svc::new(
        "max",
        u64::MAX,
        "max",
        &format!("{H1}/team/app:v1"),
    ));
    let services = Arc::new(Mutex::new(list));
    let state = Arc::clone(&services);
    let base = swarm(Arc::clone(&services));
    let listings = Arc::new(AtomicUsize::new(0));
    let l = Arc::clone(&listings);
    let engine = Engine::start(&sock, move |req| {
        match (req.method.as_str(), req.route()) {
            ("GET", "/v1.41/services") => {
                // A version past u64::MAX, a service that always conflicts, one that flips
                // between H1 and H3 at every listing.
                let n = l.fetch_add(1, Ordering::SeqCst);
                let flip = if n.is_multiple_of(2) { H1 } else { H3 };
                let mut all: Vec<Value> = state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(Svc::json)
                    .collect();
                all.push(json!({"ID": "huge", "Version": {"Index": 18446744073709551616u128}, "Spec": spec("huge", &format!("{H1}/a:v1"))}));
                all.push(service(
                    "loop",
                    7,
                    &spec("loop", &format!("{H1}/team/loop:v1")),
                ));
                all.push(service(
                    "flip",
                    9,
                    &spec("flip", &format!("{flip}/team/flip:v1")),
                ));
                Reply::Json(200, Value::Array(all).to_string())
            }
            ("GET", "/v1.41/services/loop") => Reply::Json(
                200,
                service("loop", 7, &spec("loop", &format!("{H1}/team/loop:v1"))).to_string(),
            ),
            ("POST", _) if req.service_id() == "loop" => {
                Reply::Json(500, json!({"message": OUT_OF_SEQUENCE}).to_string())
            }
            ("POST", _) if req.service_id() == "flip" => {
                Reply::Json(200, json!({"Warnings": []}).to_string())
            }
            _ => base(req),
        }
    });
    let target = config(&w, &sock, "");
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(
        wait_for(LONG, || listings.load(Ordering::SeqCst) >= 8),
        "{}",
        d.log_text()
    );
    assert!(wait_for(LONG, || has_entries(&target, &[H1, H3])));
    let updates = engine.updates();
    let flips = updates.iter().filter(|u| u.service_id() == "flip").count();
    let loops = updates.iter().filter(|u| u.service_id() == "loop").count();
    let lists = engine.count("GET", "/v1.41/services");
    // Everything but the loop and the flip: the invariant, and which ones were sent anything.
    let checked = Engine {
        seen: Arc::new(Mutex::new(
            engine
                .seen()
                .into_iter()
                .filter(|u| u.service_id() != "loop")
                .collect(),
        )),
    };
    assert_each_credential_matches_its_image(&checked, &target);
    for (i, (name, image, want)) in cases.iter().enumerate() {
        let got = updates.iter().any(|u| u.service_id() == format!("c{i}"));
        assert_eq!(got, *want, "{name} ({image:?}): updated = {got}");
    }
    let max: Vec<&Req> = updates.iter().filter(|u| u.service_id() == "max").collect();
    assert_eq!(max.len(), 1, "{max:?}");
    assert!(
        max[0].path.ends_with(&format!("?version={}", u64::MAX)),
        "{}",
        max[0].path
    );
    assert!(!updates.iter().any(|u| u.service_id() == "huge"));
    assert!(
        loops <= 3 * lists,
        "{loops} updates of a service that always conflicts in {lists} rounds"
    );
    assert!(
        flips <= lists,
        "{flips} updates of a flipping service in {lists} rounds"
    );
}

// ---------------------------------------------------------------------------------------------
// Answers echoing the credential.

/// The Engine echoes what it was sent (the decoded `X-Registry-Auth`, the header itself, a
/// password cut short, a password in a later listing's error): none of it, not even 12
/// characters of it, reaches `status`, `status --json`, `metrics` or the log.
#[test]
fn a_credential_echoed_by_the_engine_is_never_shown_even_in_part() {
    let w = World::new();
    let sock = w.path("engine.sock");
    let services = Arc::new(Mutex::new(vec![Svc::new(
        "s1",
        10,
        "app",
        &format!("{H1}/team/app:v1"),
    )]));
    let base = swarm(Arc::clone(&services));
    let posts = Arc::new(AtomicUsize::new(0));
    let lists = Arc::new(AtomicUsize::new(0));
    let last: Arc<Mutex<(String, String)>> = Arc::default();
    let (p, l, last2) = (Arc::clone(&posts), Arc::clone(&lists), Arc::clone(&last));
    let engine = Engine::start(&sock, move |req| {
        if req.is_update() {
            let n = p.fetch_add(1, Ordering::SeqCst);
            let header = req.auth.clone().unwrap_or_default();
            let decoded = req.auth_json().unwrap_or_default();
            let pw = decoded["password"].as_str().unwrap_or_default().to_string();
            *last2.lock().unwrap_or_else(|e| e.into_inner()) = (pw.clone(), header.clone());
            return match n % 4 {
                0 => Reply::Json(
                    500,
                    json!({"message": format!("invalid X-Registry-Auth header: {decoded}")})
                        .to_string(),
                ),
                1 => Reply::Text(
                    502,
                    format!(
                        "bad gateway: {header} {}",
                        pw.chars().skip(3).take(20).collect::<String>()
                    ),
                ),
                2 => Reply::Json(
                    500,
                    json!({"message": format!("{}{pw}", "x".repeat(4090))}).to_string(),
                ),
                _ => Reply::Json(
                    500,
                    json!({"message": format!("registry said: {}", "y".repeat(250) + &pw)})
                        .to_string(),
                ),
            };
        }
        if req.method == "GET" && req.route() == "/v1.41/services" {
            let n = l.fetch_add(1, Ordering::SeqCst);
            let (pw, header) = last2.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if n % 2 == 1 && !pw.is_empty() {
                return Reply::Json(
                    500,
                    json!({"message": format!("replayed: {header} {pw}")}).to_string(),
                );
            }
        }
        base(req)
    });
    config(&w, &sock, "");
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    let mut texts = Vec::new();
    let end = Instant::now() + LONG;
    while (posts.load(Ordering::SeqCst) < 6 || lists.load(Ordering::SeqCst) < 8)
        && Instant::now() < end
    {
        for args in [&["status"][..], &["status", "--json"], &["metrics"]] {
            let out = w.client(args);
            texts.push((args.join(" "), output_text(&out)));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        posts.load(Ordering::SeqCst) >= 6,
        "too few updates: {}",
        d.log_text()
    );
    let mut secrets = w.fake.issued_passwords();
    for u in engine.updates() {
        secrets.extend(u.auth.clone());
    }
    texts.push(("the log".into(), d.log_text()));
    for (what, text) in &texts {
        assert_no_piece(what, text, &secrets, 12);
    }
    // The errors still say what happened.
    let st = w.status_json().expect("status");
    let all = st.to_string();
    assert!(
        all.contains("HTTP 50") || all.contains("<redacted>"),
        "the errors are gone: {st}"
    );
}

const EVIL: &str = "\u{1b}]0;pwned\u{7}\u{1b}[2J\r\u{9b}31m\u{202e}gnp.exe\u{2028}\u{85}end";

/// Service names and error messages holding terminal escapes, carriage returns, C1 and bidi
/// controls: nothing reaches `status`, `status --json`, `metrics` (a Prometheus label escapes
/// only `\`, `"` and line feeds) or the log raw.
#[test]
fn terminal_escapes_from_the_engine_are_never_shown_raw() {
    let w = World::new();
    let sock = w.path("engine.sock");
    let list = json!([
        service(
            "s1",
            1,
            &spec(&format!("web{EVIL}"), &format!("{H1}/team/app:v1"))
        ),
        service(
            "s2",
            1,
            &spec(&format!("api{EVIL}"), &format!("{H1}/team/api:v1"))
        ),
    ])
    .to_string();
    let engine = Engine::start(&sock, move |req| {
        if let Some(r) = manager(req) {
            return r;
        }
        match (req.method.as_str(), req.route()) {
            ("GET", "/v1.41/services") => Reply::Json(200, list.clone()),
            ("POST", "/v1.41/services/s1/update") => {
                Reply::Json(200, json!({"Warnings": []}).to_string())
            }
            _ => Reply::Json(500, json!({"message": format!("boom{EVIL}")}).to_string()),
        }
    });
    config(&w, &sock, "");
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(
        wait_for(LONG, || w.status_json().is_some_and(|s| {
            s["swarm"]["services"].as_array().is_some_and(|a| {
                a.len() == 2
                    && a.iter().any(|x| x["updates"] == 1)
                    && a.iter().any(|x| x["last_error"].is_string())
            })
        })),
        "{:?}\n{}",
        w.status_json(),
        d.log_text()
    );
    assert!(engine.updates().len() >= 2);
    for args in [&["status"][..], &["status", "--json"], &["metrics"]] {
        let out = w.client(args);
        assert_inert(&args.join(" "), &output_text(&out));
    }
    assert_inert("the log", &d.log_text());
}

// ---------------------------------------------------------------------------------------------
// Dense, huge, endless and silent answers; many services.

/// 30 MB answers of tiny values (a list of 15 million zeros; one matching service whose spec
/// holds them): under the 32 MiB bound, yet decoded as a tree they would take gigabytes. The
/// daemon's peak memory stays bounded.
#[test]
fn dense_answers_do_not_blow_the_daemons_memory() {
    let w = World::new();
    let sock = w.path("engine.sock");
    let zeros = {
        let mut s = "0,".repeat(15 * 1024 * 1024);
        s.pop();
        s
    };
    let dense_list = format!("[{zeros}]");
    let dense_spec = format!(
        "[{{\"ID\":\"s1\",\"Version\":{{\"Index\":1}},\"Spec\":{{\"Name\":\"app\",\"TaskTemplate\":{{\"ContainerSpec\":{{\"Image\":\"{H1}/team/app:v1\"}}}},\"Junk\":[{zeros}]}}}}]"
    );
    assert!(dense_spec.len() < 32 * 1024 * 1024);
    let lists = Arc::new(AtomicUsize::new(0));
    let l = Arc::clone(&lists);
    let _engine = Engine::start(&sock, move |req| {
        if let Some(r) = manager(req) {
            return r;
        }
        match req.route() {
            "/v1.41/services" => {
                let n = l.fetch_add(1, Ordering::SeqCst);
                Reply::Json(
                    200,
                    if n.is_multiple_of(2) {
                        dense_list.clone()
                    } else {
                        dense_spec.clone()
                    },
                )
            }
            _ => Reply::Json(200, json!({"Warnings": []}).to_string()),
        }
    });
    config(&w, &sock, "");
    let mut d = w.spawn_daemon(&[]);
    d.wait_ready();
    // Two of each decoded (the fifth listing asked for).
    assert!(
        wait_for(Duration::from_secs(120), || lists.load(Ordering::SeqCst)
            >= 5),
        "{}",
        d.log_text()
    );
    let peak = peak_rss_kb(d.pid());
    eprintln!("peak RSS {peak} kB");
    assert!(
        peak < 250_000,
        "the daemon's peak RSS reached {peak} kB on 30 MB answers"
    );
    assert!(w.status_json().is_some(), "status does not answer");
    d.stop();
}

/// 20,000 services on a managed registry, with 1000-character names and 4 KB error messages
/// (a 30 MB listing): `status --json` and `metrics` stay small enough to read (the clients read
/// 64 MiB at most), memory stays bounded, and the daemon says what it left out.
#[test]
fn thousands_of_services_with_long_names_keep_status_and_metrics_small() {
    let w = World::new();
    let sock = w.path("engine.sock");
    let name = format!("n{}", "a".repeat(999));
    let list: Vec<Value> = (0..20_000)
        .map(|i| {
            service(
                &format!("s{i}"),
                1,
                &spec(&name, &format!("{H1}/team/app:v1")),
            )
        })
        .collect();
    let list = Value::Array(list).to_string();
    assert!(list.len() < 32 * 1024 * 1024, "{}", list.len());
    let boom = json!({"message": format!("boom {}", "z".repeat(4096))}).to_string();
    let (posts, lists) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (p, l) = (Arc::clone(&posts), Arc::clone(&lists));
    let _engine = Engine::start(&sock, move |req| {
        if let Some(r) = manager(req) {
            return r;
        }
        match req.route() {
            "/v1.41/services" => {
                l.fetch_add(1, Ordering::SeqCst);
                Reply::Json(200, list.clone())
            }
            _ => {
                p.fetch_add(1, Ordering::SeqCst);
                Reply::Json(500, boom.clone())
            }
        }
    });
    config(&w, &sock, "");
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    // A round with a token has updated services; it is over when the next listing is asked for.
    assert!(
        wait_for(Duration::from_secs(300), || posts.load(Ordering::SeqCst)
            > 0),
        "{}",
        d.log_text()
    );
    let then = lists.load(Ordering::SeqCst);
    assert!(
        wait_for(Duration::from_secs(300), || lists.load(Ordering::SeqCst)
            > then),
        "{}",
        d.log_text()
    );
    let json = w.client(&["status", "--json"]);
    let table = w.client(&["status"]);
    let metrics = w.client(&["metrics"]);
    let rss = peak_rss_kb(d.pid());
    eprintln!(
        "status --json {} bytes, status {} bytes, metrics {} bytes, peak RSS {rss} kB",
        json.stdout.len(),
        table.stdout.len(),
        metrics.stdout.len()
    );
    let st: Value = serde_json::from_slice(&json.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}: {}", stderr(&json)));
    assert!(
        json.stdout.len() < 4 * 1024 * 1024,
        "status --json is {} bytes",
        json.stdout.len()
    );
    assert!(
        table.stdout.len() < 4 * 1024 * 1024,
        "status is {} bytes",
        table.stdout.len()
    );
    assert_eq!(code(&metrics), 0, "metrics: {}", stderr(&metrics));
    assert!(
        metrics.stdout.len() < 8 * 1024 * 1024,
        "metrics is {} bytes",
        metrics.stdout.len()
    );
    // The 25 MB listing is decoded at every round, on whichever runtime thread runs it (each has
    // its own malloc arena): the peak is a few decodes (157-252 MB measured), not one per service.
    assert!(rss < 400_000, "the daemon's peak RSS reached {rss} kB");
    let services = st["swarm"]["services"].as_array().expect("services");
    assert!(
        services.iter().all(|s| s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 500: boom") && e.len() < 400)),
        "{}",
        services[0]
    );
    assert!(
        st["swarm"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("20000")),
        "the status does not say services were left out: {}",
        st["swarm"]["last_error"]
    );
}

/// 200 services whose updates fail, each time with another message (half of them succeed the
/// first time): the log gets a line or two per round, not one per service.
#[test]
fn failing_updates_of_many_services_do_not_flood_the_log() {
    let w = World::new();
    let sock = w.path("engine.sock");
    let list: Vec<Value> = (0..200)
        .map(|i| {
            service(
                &format!("s{i}"),
                1,
                &spec(&format!("svc{i}"), &format!("{H1}/team/app:v1")),
            )
        })
        .collect();
    let list = Value::Array(list).to_string();
    let posts = Arc::new(AtomicUsize::new(0));
    let p = Arc::clone(&posts);
    let _engine = Engine::start(&sock, move |req| {
        if let Some(r) = manager(req) {
            return r;
        }
        if req.route() == "/v1.41/services" {
            return Reply::Json(200, list.clone());
        }
        let n = p.fetch_add(1, Ordering::SeqCst);
        let i: usize = req
            .service_id()
            .trim_start_matches('s')
            .parse()
            .unwrap_or(0);
        if i.is_multiple_of(2) {
            Reply::Json(200, json!({"Warnings": []}).to_string())
        } else {
            Reply::Json(500, json!({"message": format!("boom #{n}")}).to_string())
        }
    });
    config(&w, &sock, "");
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    // The first round and three more of the failing half.
    assert!(
        wait_for(LONG, || posts.load(Ordering::SeqCst) >= 200 + 3 * 100),
        "{}",
        d.log_text()
    );
    let log = d.log_text();
    let lines = log.lines().filter(|l| l.contains("swarm")).count();
    assert!(
        lines <= 12,
        "{lines} log lines about swarm services after {} updates ({} bytes of log)",
        posts.load(Ordering::SeqCst),
        log.len()
    );
}

/// A listing that never ends and updates that are never answered: each request ends at its
/// bound, no connection is left open, `status` and the file target are served meanwhile, and the
/// daemon stops at once.
#[test]
fn endless_and_silent_answers_leave_nothing_behind() {
    let w = World::new();
    let sock = w.path("engine.sock");
    let lists = Arc::new(AtomicUsize::new(0));
    let l = Arc::clone(&lists);
    let engine = Engine::start(&sock, move |req| {
        if let Some(r) = manager(req) {
            return r;
        }
        if req.route() == "/v1.41/services" {
            if l.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                return Reply::Endless;
            }
            return Reply::Json(
                200,
                json!([service("s1", 1, &spec("app", &format!("{H1}/team/app:v1")))]).to_string(),
            );
        }
        Reply::Silent
    });
    let target = config(&w, &sock, "");
    let mut d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(LONG, || !engine.updates().is_empty()));
    let t = Instant::now();
    let out = w.client(&["refresh", H1]);
    assert_eq!(code(&out), 0, "{}", output_text(&out));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_fresh_entry(&w, &target, H1);
    // Two endless listings and two silent updates later.
    assert!(
        wait_for(Duration::from_secs(120), || engine.updates().len() >= 2
            && lists.load(Ordering::SeqCst) >= 4),
        "{}",
        d.log_text()
    );
    let fds = open_fds(d.pid());
    assert!(fds < 40, "{fds} descriptors open");
    let st = w.status_json().expect("status");
    assert!(
        st["swarm"]["services"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no answer within")),
        "{st}"
    );
    let t = Instant::now();
    d.stop();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

/// An Engine that answers each update after 4 s, just under the request bound, for 20
/// services: a round would take 80 s with the status saying nothing meanwhile. A round's updates
/// end after a minute (`check_every` here is 1 s); the status says what was left, and the next
/// round goes on where it stopped.
#[test]
fn a_slow_engine_does_not_stall_the_rounds() {
    let w = World::new();
    let sock = w.path("engine.sock");
    let list: Vec<Value> = (0..20)
        .map(|i| {
            service(
                &format!("s{i:02}"),
                1,
                &spec(&format!("svc{i:02}"), &format!("{H1}/team/app:v1")),
            )
        })
        .collect();
    let list = Value::Array(list).to_string();
    let _engine = Engine::start(&sock, move |req| {
        if let Some(r) = manager(req) {
            return r;
        }
        if req.route() == "/v1.41/services" {
            return Reply::Json(200, list.clone());
        }
        std::thread::sleep(Duration::from_secs(4));
        Reply::Json(200, json!({"Warnings": []}).to_string())
    });
    config(&w, &sock, "");
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    let updated = |s: &Value| {
        s["swarm"]["services"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|x| x["updates"] == 1).count())
    };
    let t = Instant::now();
    assert!(
        wait_for(Duration::from_secs(75), || w.status_json().is_some_and(
            |s| {
                updated(&s) > 0
                    && s["swarm"]["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("left for the next round"))
            }
        )),
        "after {:?} the status shows {} services updated and no round cut: {}",
        t.elapsed(),
        w.status_json().map_or(0, |s| updated(&s)),
        w.status_json()
            .map_or(Value::Null, |s| s["swarm"]["last_error"].clone())
    );
    assert!(
        wait_for(Duration::from_secs(120), || w.status_json().is_some_and(
            |s| updated(&s) == 20 && s["swarm"]["last_error"].is_null()
        )),
        "the next rounds did not go on: {:?}\n{}",
        w.status_json().map(|s| s["swarm"].clone()),
        d.log_text()
    );
}

// ---------------------------------------------------------------------------------------------
// A local user on the socket path.

/// The configured socket is in a directory uid 4242 owns: it flips the path, thousands of times,
/// between a link to root's Engine and a link to its own listener. Root's Engine keeps getting its
/// updates; the user's listener is reached and never reads a byte (SO_PEERCRED is the listener's
/// uid, fixed when it called listen(), whichever process accepts and whatever pid is reused).
#[test]
fn a_user_racing_its_listener_against_roots_engine_gets_nothing() {
    require_root!();
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    w.fake.set_token_lifetime(Duration::from_secs(6));
    let root_sock = w.path("root-engine.sock");
    let services = Arc::new(Mutex::new(vec![Svc::new(
        "s1",
        10,
        "app",
        &format!("{H1}/team/app:v1"),
    )]));
    let engine = Engine::start(&root_sock, swarm(Arc::clone(&services)));
    let dir = w.path("user-run");
    std::fs::create_dir_all(&dir).expect("dir");
    chown(&dir, USER, USER);
    chmod(&dir, 0o755);
    let code = r#"
import os, socket, sys, threading, time
d, root = sys.argv[1], sys.argv[2]
mine = os.path.join(d, "mine.sock")
path = os.path.join(d, "docker.sock")
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(mine); os.chmod(mine, 0o666); srv.listen(64)
def serve():
    while True:
        c, _ = srv.accept()
        c.settimeout(2)
        try:
            data = c.recv(65536)
        except OSError:
            data = b""
        print("CONN %d" % len(data), flush=True)
        c.close()
threading.Thread(target=serve, daemon=True).start()
print("READY", flush=True)
i = 0
while True:
    i += 1
    tmp = os.path.join(d, "l%d" % i)
    os.symlink(root if i % 2 else mine, tmp)
    os.rename(tmp, path)
    time.sleep(0.008 if i % 2 else 0.002)
"#;
    let py = Py::spawn(
        USER,
        code,
        &[
            dir.to_str().expect("utf-8"),
            root_sock.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(py.line(Duration::from_secs(10)), "READY");
    config(&w, &dir.join("docker.sock"), "");
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    // Until the race has reached both sides many times: 20 connections to the user's listener,
    // 3 updates through to root's Engine (each needs 4 connections in a row to root's).
    let end = Instant::now() + Duration::from_secs(180);
    let (mut conns, mut bytes) = (0, 0);
    while Instant::now() < end && (conns < 20 || engine.updates().len() < 3) {
        if let Some(line) = py.try_line(Duration::from_millis(200))
            && let Some(n) = line.strip_prefix("CONN ")
        {
            conns += 1;
            bytes += n.parse::<usize>().unwrap_or(usize::MAX);
        }
    }
    drop(py);
    let updates = engine.updates().len();
    eprintln!(
        "{conns} connections reached the user's listener, {updates} updates reached root's Engine"
    );
    assert!(
        conns >= 20,
        "the race reached the user's listener {conns} times"
    );
    assert_eq!(bytes, 0, "the user's listener read {bytes} bytes");
    assert!(
        updates >= 3,
        "root's Engine got {updates} updates through the race"
    );
}
