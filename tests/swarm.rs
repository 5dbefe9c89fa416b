//! `[swarm]` against a scripted Docker Engine on a Unix socket: what the daemon sends (spec unchanged,
//! `X-Registry-Auth`, the version), once per token, a version conflict read again and retried,
//! other registries and worker nodes left alone. The real dockerd runs in tests/system/dockerd.sh.

mod common;

use std::io::{BufReader, Write};
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};

const H1: &str = "111111111111.dkr.ecr.us-east-1.amazonaws.com";

/// One request the Engine saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    auth: Option<String>,
    body: Vec<u8>,
}

/// What the scripted Engine holds and answers.
struct State {
    manager: bool,
    /// (id, version, spec)
    services: Vec<(String, u64, Value)>,
    /// Conflicts still to answer to the next updates.
    conflicts: u32,
    seen: Vec<Seen>,
}

fn spec(name: &str, image: &str) -> Value {
    json!({
        "Name": name,
        "Labels": {"team": "a"},
        "TaskTemplate": {"ContainerSpec": {"Image": image, "Args": ["sleep", "1000"]}, "ForceUpdate": 0},
        "Mode": {"Replicated": {"Replicas": 2}},
    })
}

fn engine(sock: &std::path::Path, state: Arc<Mutex<State>>) {
    let listener = UnixListener::bind(sock).expect("bind engine socket");
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let state = Arc::clone(&state);
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().expect("clone"));
                let mut w = conn;
                loop {
                    let Some(HttpRequest {
                        method,
                        path,
                        registry_auth: auth,
                        body,
                    }) = read_http_request(&mut r)
                    else {
                        return;
                    };
                    let (status, answer) = respond(&state, &method, &path, auth, body);
                    let text = answer.to_string();
                    let _ = write!(
                        w,
                        "HTTP/1.1 {status} X\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
                        text.len()
                    );
                }
            });
        }
    });
}

fn respond(
    state: &Mutex<State>,
    method: &str,
    path: &str,
    auth: Option<String>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut st = state.lock().unwrap();
    st.seen.push(Seen {
        method: method.into(),
        path: path.into(),
        auth,
        body: body.clone(),
    });
    let list = |st: &State| {
        Value::Array(
            st.services
                .iter()
                .map(|(id, v, s)| json!({"ID": id, "Version": {"Index": v}, "Spec": s}))
                .collect(),
        )
    };
    match (method, path.split('?').next().unwrap_or_default()) {
        ("GET", "/_ping") => (200, Value::Null),
        ("GET", "/v1.41/info") => (
            200,
            json!({"Swarm": {"LocalNodeState": "active", "ControlAvailable": st.manager}}),
        ),
        ("GET", "/v1.41/services") => (200, list(&st)),
        ("GET", p) if p.starts_with("/v1.41/services/") => {
            let id = p.trim_start_matches("/v1.41/services/");
            match st.services.iter().find(|(i, _, _)| i == id) {
                Some((i, v, s)) => (200, json!({"ID": i, "Version": {"Index": v}, "Spec": s})),
                None => (404, json!({"message": "service not found"})),
            }
        }
        ("POST", p) if p.starts_with("/v1.41/services/") && p.ends_with("/update") => {
            let id = p
                .trim_start_matches("/v1.41/services/")
                .trim_end_matches("/update")
                .to_string();
            let version: u64 = path
                .split("version=")
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if st.conflicts > 0 {
                // Someone else updated it meanwhile: the version moved.
                st.conflicts -= 1;
                if let Some(s) = st.services.iter_mut().find(|(i, _, _)| *i == id) {
                    s.1 += 1;
                }
                return (
                    500,
                    json!({"message": "rpc error: code = Unknown desc = update out of sequence"}),
                );
            }
            match st.services.iter_mut().find(|(i, _, _)| *i == id) {
                Some(s) if s.1 == version => {
                    s.1 += 1;
                    (200, json!({"Warnings": []}))
                }
                Some(_) => (
                    500,
                    json!({"message": "rpc error: code = Unknown desc = update out of sequence"}),
                ),
                None => (404, json!({"message": "service not found"})),
            }
        }
        _ => (404, json!({"message": "page not found"})),
    }
}

fn updates(st: &Mutex<State>, id: &str) -> Vec<Seen> {
    st.lock()
        .unwrap()
        .seen
        .iter()
        .filter(|s| s.method == "POST" && s.path.contains(&format!("/services/{id}/update")))
        .cloned()
        .collect()
}

fn world_with_swarm(w: &World, sock: &std::path::Path) -> std::path::PathBuf {
    let target = w.path("d/config.json");
    w.config(&format!(
        "{}\n[[target]]\npath = \"{}\"\n[[registry]]\nhost = \"{H1}\"\naliases = [\"mirror.example:5000\"]\n[swarm]\nenabled = true\nsocket = \"{}\"\ncheck_every = \"1s\"\n",
        w.daemon_section(),
        target.display(),
        sock.display()
    ));
    target
}

#[test]
fn each_token_reaches_each_matching_service_once_with_its_spec_unchanged() {
    let w = World::new();
    w.fake.set_token_lifetime(Duration::from_secs(6));
    let sock = w.path("engine.sock");
    let state = Arc::new(Mutex::new(State {
        manager: true,
        services: vec![
            ("app1".into(), 10, spec("app", &format!("{H1}/team/app:v1"))),
            (
                "mir1".into(),
                20,
                spec(
                    "mirrored",
                    "mirror.example:5000/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                ),
            ),
            ("hub1".into(), 30, spec("hub", "nginx:1.27")),
            (
                "oth1".into(),
                40,
                spec("other", "222222222222.dkr.ecr.us-east-1.amazonaws.com/x:1"),
            ),
        ],
        conflicts: 0,
        seen: Vec::new(),
    }));
    engine(&sock, Arc::clone(&state));
    world_with_swarm(&w, &sock);
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(
        wait_for(Duration::from_secs(20), || updates(&state, "app1").len()
            >= 2
            && updates(&state, "mir1").len() >= 2),
        "no update through two tokens:\n{}",
        d.log_text()
    );
    let passwords = w.fake.issued_passwords();
    for id in ["app1", "mir1"] {
        let ups = updates(&state, id);
        let (want_spec, host) = {
            let st = state.lock().unwrap();
            let s = st
                .services
                .iter()
                .find(|(i, _, _)| i == id)
                .unwrap()
                .2
                .clone();
            let img = s["TaskTemplate"]["ContainerSpec"]["Image"]
                .as_str()
                .unwrap()
                .to_string();
            (s, img.split('/').next().unwrap().to_string())
        };
        let mut sent = Vec::new();
        for u in &ups {
            let body: Value = serde_json::from_slice(&u.body).unwrap();
            assert_eq!(body, want_spec, "{id}: the spec is sent back unchanged");
            let auth = base64::engine::general_purpose::URL_SAFE
                .decode(u.auth.as_deref().expect("X-Registry-Auth"))
                .unwrap();
            let auth: Value = serde_json::from_slice(&auth).unwrap();
            assert_eq!(auth["username"], "AWS");
            assert_eq!(auth["serveraddress"], host.as_str());
            let pw = auth["password"].as_str().unwrap().to_string();
            assert!(passwords.contains(&pw), "{id}: a password the fake issued");
            sent.push(pw);
        }
        let mut distinct = sent.clone();
        distinct.dedup();
        assert_eq!(
            distinct, sent,
            "{id}: one update per token, in order: {sent:?}"
        );
    }
    // Through a few more checks (every second) and a rotation: still one update per token.
    std::thread::sleep(Duration::from_secs(4));
    for id in ["app1", "mir1"] {
        let ups = updates(&state, id);
        let mut pws: Vec<String> = ups
            .iter()
            .map(|u| {
                let a = base64::engine::general_purpose::URL_SAFE
                    .decode(u.auth.as_deref().unwrap())
                    .unwrap();
                serde_json::from_slice::<Value>(&a).unwrap()["password"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        let n = pws.len();
        pws.dedup();
        assert_eq!(pws.len(), n, "{id}: a token sent twice");
    }
    assert!(
        updates(&state, "hub1").is_empty(),
        "Docker Hub service touched"
    );
    assert!(
        updates(&state, "oth1").is_empty(),
        "another registry's service touched"
    );
    let st = w.status_json().expect("status");
    let svcs = st["swarm"]["services"].as_array().unwrap();
    assert_eq!(svcs.len(), 2, "{st}");
    assert_eq!(st["swarm"]["role"], "manager");
    assert!(
        svcs.iter()
            .all(|s| s["updates"].as_u64() >= Some(2) && s["last_error"].is_null())
    );
    let m = w.client(&["metrics"]);
    assert!(
        stdout(&m).contains(&format!(
            "ecr_refresherd_swarm_service_updates_total{{service=\"app\",registry=\"{H1}\"}}"
        )),
        "{}",
        stdout(&m)
    );
    w.assert_no_secrets();
}

#[test]
fn a_version_conflict_is_read_again_and_retried() {
    let w = World::new();
    let sock = w.path("engine.sock");
    let state = Arc::new(Mutex::new(State {
        manager: true,
        services: vec![("app1".into(), 10, spec("app", &format!("{H1}/team/app:v1")))],
        conflicts: 2,
        seen: Vec::new(),
    }));
    engine(&sock, Arc::clone(&state));
    world_with_swarm(&w, &sock);
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(
        wait_for(Duration::from_secs(20), || state.lock().unwrap().services
            [0]
        .1 == 13),
        "the update did not land after two conflicts:\n{}",
        d.log_text()
    );
    let ups = updates(&state, "app1");
    let versions: Vec<&str> = ups
        .iter()
        .map(|u| u.path.split("version=").nth(1).unwrap())
        .collect();
    assert_eq!(
        versions,
        ["10", "11", "12"],
        "each retry with the version read again"
    );
    let reads = state
        .lock()
        .unwrap()
        .seen
        .iter()
        .filter(|s| s.method == "GET" && s.path == "/v1.41/services/app1")
        .count();
    assert_eq!(reads, 2, "read again after each conflict");
    assert!(
        wait_for(Duration::from_secs(10), || w
            .status_json()
            .is_some_and(|s| s["swarm"]["services"][0]["last_error"]
                .is_null()
                && s["swarm"]["services"][0]["updates"] == 1)),
        "{:?}",
        w.status_json()
    );
}

#[test]
fn a_worker_or_a_node_without_swarm_is_left_alone() {
    let w = World::new();
    let sock = w.path("engine.sock");
    let state = Arc::new(Mutex::new(State {
        manager: false,
        services: vec![("app1".into(), 10, spec("app", &format!("{H1}/team/app:v1")))],
        conflicts: 0,
        seen: Vec::new(),
    }));
    engine(&sock, Arc::clone(&state));
    world_with_swarm(&w, &sock);
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(
        wait_for(Duration::from_secs(20), || w
            .status_json()
            .is_some_and(|s| s["swarm"]["role"] == "worker")),
        "{:?}\n{}",
        w.status_json(),
        d.log_text()
    );
    std::thread::sleep(Duration::from_secs(3));
    let st = state.lock().unwrap();
    assert!(
        !st.seen.iter().any(|s| s.path.contains("/services")),
        "a worker was asked for services: {:?}",
        st.seen
    );
    drop(st);
    let out = w.client(&["status"]);
    assert!(
        stdout(&out).contains("a worker: services are updated from a manager, nothing to do here"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        d.log_text().matches("swarm: a worker node").count(),
        1,
        "said once: {}",
        d.log_text()
    );
}

/// A user's Engine (rootless docker, or a listener a user put where the socket should be) never
/// gets root's registry credential: the daemon checks who serves the socket (SO_PEERCRED).
#[test]
fn an_engine_served_by_a_user_gets_no_credential() {
    require_root!();
    let w = World::new();
    let dir = w.path("user-run");
    std::fs::create_dir_all(&dir).unwrap();
    chown(&dir, 4242, 4242);
    chmod(&dir, 0o755);
    let sock = dir.join("docker.sock");
    // uid 4242 serves an Engine that says "manager" and lists a service of the managed registry,
    // and prints every X-Registry-Auth it is sent.
    let code = r#"
import http.server, json, os, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def send(self, body):
        d = json.dumps(body).encode()
        self.send_response(200); self.send_header("Api-Version", "1.41")
        self.send_header("Content-Length", str(len(d))); self.end_headers(); self.wfile.write(d)
    def do_GET(self):
        p = self.path.split("?")[0]
        if p == "/_ping": self.send(None)
        elif p.endswith("/info"): self.send({"Swarm": {"LocalNodeState": "active", "ControlAvailable": True}})
        else: self.send([{"ID": "s1", "Version": {"Index": 1}, "Spec": {"Name": "x", "TaskTemplate": {"ContainerSpec": {"Image": sys.argv[2] + "/app:v1"}}}}])
    def do_POST(self):
        print("AUTH " + str(self.headers.get("X-Registry-Auth")), flush=True)
        self.rfile.read(int(self.headers.get("Content-Length", "0"))); self.send({"Warnings": []})
    def log_message(self, *a): pass
    def address_string(self): return "unix"
class S(socketserver.ThreadingMixIn, socketserver.UnixStreamServer): daemon_threads = True
s = S(sys.argv[1], H); os.chmod(sys.argv[1], 0o666); print("READY", flush=True); s.serve_forever()
"#;
    let py = Py::spawn(4242, code, &[sock.to_str().unwrap(), H1]);
    assert_eq!(py.line(Duration::from_secs(10)), "READY");
    world_with_swarm(&w, &sock);
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(
        wait_for(Duration::from_secs(20), || w.status_json().is_some_and(
            |s| s["swarm"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("uid 4242"))
        )),
        "the status does not say who serves the socket: {:?}\n{}",
        w.status_json(),
        d.log_text()
    );
    assert_eq!(
        py.try_line(Duration::from_secs(3)),
        None,
        "a user's Engine was sent a credential"
    );
    assert_eq!(w.status_json().unwrap()["swarm"]["role"], "unreachable");
}
