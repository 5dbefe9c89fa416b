//! Hostile local users and hostile registries against `ecr-refresherd doctor`, run by root: it
//! must read no file the user could not, send no credential but to the image's registry, run no
//! program, end in time, and print no secret and nothing that acts on a terminal or forges a line.
//!
//! The registry is a server of this file's own (TLS with a CA made here by openssl, trusted
//! through SSL_CERT_FILE) on a loopback port, reached through an alias of the configured ECR
//! registry (`127.0.0.1:PORT`), so no name resolves through DNS. Attackers that are local users
//! run as real non-root uids without passwd entries; `--user` gets a passwd entry in a private
//! mount namespace (`unshare --mount`), as tests/system/doctor.sh does.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;

/// A local user (no passwd entry unless a test gives it one in its namespace).
const USER: u32 = 4242;
/// Another local user.
const OTHER: u32 = 4343;
/// The bound `doctor` promises (`doctor::TOTAL` is 14 s), with room for a loaded machine.
const BOUND: Duration = Duration::from_secs(17);
/// No piece of a secret this long may be shown (a token cut short still gives most of it away).
const PIECE: usize = 16;

// ---------------------------------------------------------------------------------------------
// Certificates (openssl, as tests/system/doctor.sh makes them)
// ---------------------------------------------------------------------------------------------

/// A CA root trusts (through SSL_CERT_FILE) and a leaf for 127.0.0.1, 127.0.0.2 and localhost.
struct Pki {
    ca: PathBuf,
    cert: Vec<u8>,
    key: Vec<u8>,
    cert_path: PathBuf,
    key_path: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a leaf signed by it, in `<dir>/<name>/`.
fn pki_in(w: &World, name: &str) -> Pki {
    let dir = w.path(name);
    std::fs::create_dir_all(&dir).unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend([
        "-days",
        "2",
        "-subj",
        "/CN=doctor attack CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-addext",
        "basicConstraints=critical,CA:true",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    openssl(&dir, &a);
    let mut r = vec!["req"];
    r.extend(ec);
    r.extend([
        "-subj",
        "/CN=registry",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
    ]);
    openssl(&dir, &r);
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1,IP:127.0.0.2,DNS:localhost\nbasicConstraints=CA:false\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext",
            "-out",
            "leaf.pem",
        ],
    );
    Pki {
        ca: dir.join("ca.pem"),
        cert: std::fs::read(dir.join("leaf.pem")).unwrap(),
        key: std::fs::read(dir.join("leaf.key")).unwrap(),
        cert_path: dir.join("leaf.pem"),
        key_path: dir.join("leaf.key"),
    }
}

fn pki(w: &World) -> Pki {
    pki_in(w, "pki")
}

// ---------------------------------------------------------------------------------------------
// A registry that does what a test says
// ---------------------------------------------------------------------------------------------

/// One request as the server read it.
#[derive(Clone, Debug)]
struct Req {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the server does with a request.
enum Reply {
    /// These bytes, then close.
    Bytes(Vec<u8>),
    /// These bytes one at a time, `Duration` apart (a slowloris server).
    Trickle(Vec<u8>, Duration),
    /// This head, then a body that never ends.
    Endless(Vec<u8>),
    /// Nothing, ever (until the client leaves).
    Hang,
}

type Handler = dyn Fn(&Req) -> Reply + Send + Sync;

/// An HTTPS server on 127.0.0.1; every request it read is kept. Stops when dropped.
struct Registry {
    addr: SocketAddr,
    reqs: Arc<Mutex<Vec<Req>>>,
    stop: Arc<AtomicBool>,
}

impl Registry {
    fn start(pki: &Pki, handler: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Registry {
        Registry::start_on("127.0.0.1:0", pki, handler)
    }

    fn start_on(
        at: &str,
        pki: &Pki,
        handler: impl Fn(&Req) -> Reply + Send + Sync + 'static,
    ) -> Registry {
        use rustls::pki_types::pem::PemObject;
        let chain: Vec<rustls::pki_types::CertificateDer<'static>> =
            rustls::pki_types::CertificateDer::pem_slice_iter(&pki.cert)
                .collect::<Result<_, _>>()
                .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&pki.key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind(at).unwrap();
        let addr = listener.local_addr().unwrap();
        let reqs = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (r, s) = (Arc::clone(&reqs), Arc::clone(&stop));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = conn else { continue };
                let (config, handler, r, s) = (
                    Arc::clone(&config),
                    Arc::clone(&handler),
                    Arc::clone(&r),
                    Arc::clone(&s),
                );
                std::thread::spawn(move || serve_one(tcp, config, &*handler, &r, &s));
            }
        });
        Registry { addr, reqs, stop }
    }

    /// `127.0.0.1:PORT`: the alias the config gives the registry.
    fn host(&self) -> String {
        self.addr.to_string()
    }

    fn requests(&self) -> Vec<Req> {
        self.reqs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_one(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    handler: &Handler,
    reqs: &Mutex<Vec<Req>>,
    stop: &AtomicBool,
) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = tcp.set_write_timeout(Some(Duration::from_secs(30)));
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 8 * 1024 * 1024 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let mut parts = first.split(' ');
    let req = Req {
        method: parts.next().unwrap_or_default().to_string(),
        path: parts.next().unwrap_or_default().to_string(),
        headers: lines
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect(),
    };
    reqs.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(req.clone());
    match handler(&req) {
        Reply::Bytes(b) => {
            let _ = tls.write_all(&b);
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
        Reply::Trickle(b, every) => {
            for byte in b {
                if stop.load(Ordering::SeqCst) || tls.write_all(&[byte]).is_err() {
                    return;
                }
                let _ = tls.flush();
                std::thread::sleep(every);
            }
        }
        Reply::Endless(h) => {
            if tls.write_all(&h).is_err() {
                return;
            }
            let chunk = vec![b'a'; 64 * 1024];
            let end = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::SeqCst) && Instant::now() < end {
                if tls.write_all(&chunk).is_err() {
                    return;
                }
            }
        }
        Reply::Hang => {
            let end = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::SeqCst) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// An HTTP/1.1 answer with these headers and body (`Content-Length` added, connection closed).
fn answer(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut out = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        out += &format!("{k}: {v}\r\n");
    }
    out += "\r\n";
    let mut b = out.into_bytes();
    b.extend_from_slice(body);
    Reply::Bytes(b)
}

fn json_error(status: u16, code: &str, message: &str) -> Reply {
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]}).to_string();
    answer(
        status,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

const LAYER: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// A schema 2 manifest with one layer.
fn manifest() -> Vec<u8> {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"digest": LAYER, "size": 1, "mediaType": "application/vnd.docker.container.image.v1+json"},
        "layers": [{"digest": LAYER, "size": 1, "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip"}],
    })
    .to_string()
    .into_bytes()
}

/// A registry that works: every request answered as a good registry would (the layer served
/// by itself), except what `special` answers.
fn good(req: &Req) -> Reply {
    if req.path.contains("/manifests/") {
        answer(
            200,
            &[(
                "Content-Type",
                "application/vnd.docker.distribution.manifest.v2+json",
            )],
            &manifest(),
        )
    } else if req.path.contains("/blobs/") {
        answer(206, &[], b"x")
    } else {
        answer(200, &[], b"{}")
    }
}

// ---------------------------------------------------------------------------------------------
// Running doctor
// ---------------------------------------------------------------------------------------------

/// The config: H1 with the alias `alias` (the registry of the test), a state dir, and `extra`;
/// a root target in the temp dir unless `extra` has targets (never the machine's /root).
fn config(w: &World, alias: &str, extra: &str) {
    let target = if extra.contains("[[target]]") {
        String::new()
    } else {
        format!(
            "[[target]]\npath = \"{}\"\n",
            w.path("root/.docker/config.json").display()
        )
    };
    w.config(&format!(
        "[daemon]\nstate_dir = \"{}\"\n[[registry]]\nhost = \"{H1}\"\naliases = [\"{alias}\"]\n{target}{extra}",
        w.path("state").display()
    ));
}

/// `ecr-refresherd doctor ARGS`, trusting `pki`'s CA; the output is captured for the secret scan.
fn doctor(w: &World, pki: &Pki, args: &[&str]) -> (Output, Duration) {
    doctor_env(w, pki, args, &[])
}

fn doctor_env(w: &World, pki: &Pki, args: &[&str], env: &[(&str, &str)]) -> (Output, Duration) {
    let mut c = w.cmd();
    c.env("SSL_CERT_FILE", &pki.ca)
        .arg("--config")
        .arg(w.path("config.toml"))
        .arg("--run-dir")
        .arg(w.path("run"))
        .arg("doctor")
        .args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let t0 = Instant::now();
    let out = c.output().expect("run doctor");
    let took = t0.elapsed();
    (w.capture(out), took)
}

/// Both reports (text, then `--json`) for `image`.
fn both(w: &World, pki: &Pki, image: &str, more: &[&str]) -> (String, String) {
    let mut a = more.to_vec();
    a.push(image);
    let (text, _) = doctor(w, pki, &a);
    let mut j = vec!["--json"];
    j.extend(more);
    j.push(image);
    let (json, _) = doctor(w, pki, &j);
    (
        stdout(&text) + &stderr(&text),
        stdout(&json) + &stderr(&json),
    )
}

/// The token the fake issued (only one is issued per test unless said otherwise).
fn issued(w: &World) -> (String, String) {
    let pw = w
        .fake
        .issued_passwords()
        .first()
        .cloned()
        .expect("the fake issued a token");
    let token = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{pw}"));
    (token, pw)
}

/// Asserts no piece of `secret` of [`PIECE`] bytes is in `text`.
fn assert_no_piece(text: &str, secret: &str, what: &str) {
    for i in 0..=secret.len().saturating_sub(PIECE) {
        let piece = &secret[i..(i + PIECE).min(secret.len())];
        assert!(
            !text.contains(piece),
            "a piece of {what} ({piece:?}, from byte {i} of {}) is in the report:\n{text}",
            secret.len()
        );
    }
}

/// `<dir>/home`, owned by USER, with `.docker/` in it.
fn user_home(w: &World, uid: u32) -> PathBuf {
    let h = w.path(&format!("home-{uid}"));
    std::fs::create_dir_all(h.join(".docker")).unwrap();
    chown(&h, uid, uid);
    chown(&h.join(".docker"), uid, uid);
    h
}

/// Writes `text` to `path` as `uid`'s file (mode 0600).
fn user_file(path: &Path, uid: u32, text: &str) {
    std::fs::write(path, text).unwrap();
    chown(path, uid, uid);
    chmod(path, 0o600);
}

// ---------------------------------------------------------------------------------------------
// Secrets a registry echoes
// ---------------------------------------------------------------------------------------------

/// A registry that echoes the `Authorization` it was sent in its error message, padded so that
/// the 400-character cut of a quoted message falls 2 characters before the token's end: the scrub,
/// which looked for whole secrets only, let all but the last characters of root's token through.
#[test]
fn a_token_echoed_and_cut_short_is_not_shown() {
    let w = World::new();
    let pki = pki(&w);
    let reg = Registry::start(&pki, |req| {
        if req.path.contains("/manifests/") {
            let auth = req.header("authorization").unwrap_or_default().to_string();
            let token = auth.trim_start_matches("Basic ");
            // The cut is at 400 characters: the token ends 2 characters past it.
            let pad = "x".repeat(402usize.saturating_sub(token.len()));
            json_error(403, "DENIED", &format!("{pad}{token}"))
        } else {
            good(req)
        }
    });
    config(&w, &reg.host(), "");
    let (text, json) = both(&w, &pki, &format!("{}/app:v1", reg.host()), &[]);
    let (token, pw) = issued(&w);
    assert!(text.contains("HTTP 403 DENIED: xxx"), "{text}");
    for out in [&text, &json] {
        assert_no_piece(out, &token, "root's ECR token");
        assert_no_piece(out, &pw, "root's ECR password");
    }
}

/// The same with the password, decoded, in the message.
#[test]
fn a_password_echoed_and_cut_short_is_not_shown() {
    let w = World::new();
    let pki = pki(&w);
    let reg = Registry::start(&pki, |req| {
        if req.path.contains("/manifests/") {
            let auth = req.header("authorization").unwrap_or_default();
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim_start_matches("Basic "))
                .unwrap_or_default();
            let user_pw = String::from_utf8_lossy(&raw).into_owned();
            let pad = "y".repeat(402usize.saturating_sub(user_pw.len()));
            json_error(401, "UNAUTHORIZED", &format!("{pad}{user_pw}"))
        } else {
            good(req)
        }
    });
    config(&w, &reg.host(), "");
    let (text, json) = both(&w, &pki, &format!("{}/app:v1", reg.host()), &[]);
    let (token, pw) = issued(&w);
    assert!(text.contains("yyy"), "{text}");
    for out in [&text, &json] {
        assert_no_piece(out, &token, "root's ECR token");
        assert_no_piece(out, &pw, "root's ECR password");
    }
}

/// A registry that splits the token it was sent between the two headers `doctor` shows of a
/// good manifest (`Content-Type` and `Docker-Content-Digest`): neither half is the whole secret.
#[test]
fn a_token_split_across_headers_is_not_shown() {
    let w = World::new();
    let pki = pki(&w);
    let reg = Registry::start(&pki, |req| {
        if req.path.contains("/manifests/") {
            let auth = req.header("authorization").unwrap_or_default();
            let token = auth.trim_start_matches("Basic ").to_string();
            let (a, b) = token.split_at(token.len() / 2);
            answer(
                200,
                &[("Content-Type", a), ("Docker-Content-Digest", b)],
                &manifest(),
            )
        } else {
            good(req)
        }
    });
    config(&w, &reg.host(), "");
    let (text, json) = both(&w, &pki, &format!("{}/app:v1", reg.host()), &[]);
    let (token, _) = issued(&w);
    assert!(text.contains("manifest"), "{text}");
    for out in [&text, &json] {
        assert_no_piece(out, &token, "root's ECR token");
    }
}

/// A hostile layer storage (where the registry's 307 points) that echoes the presigned URL's
/// session token and signature, each alone, in its S3 error: only the whole URL and the whole
/// query string were secrets, so these bearer parts were printed.
#[test]
fn presigned_url_parts_echoed_by_the_storage_are_not_shown() {
    let w = World::new();
    let pki = pki(&w);
    let storage = Registry::start(&pki, |req| {
        let query = req.path.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let value = |name: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .unwrap_or_default()
                .to_string()
        };
        let body = format!(
            "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>token {} signature {}</Message></Error>",
            value("X-Amz-Security-Token"),
            value("X-Amz-Signature")
        );
        answer(403, &[("Content-Type", "application/xml")], body.as_bytes())
    });
    let location = format!(
        "https://{}/prod-bucket/layer?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Security-Token=IQoJb3JpZ2luX2VjEJr%2Fsessiontokensecret1234&X-Amz-Signature=5f3e9c0d8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d",
        storage.host()
    );
    let loc = location.clone();
    let reg = Registry::start(&pki, move |req| {
        if req.path.contains("/blobs/") {
            answer(307, &[("Location", &loc)], b"")
        } else {
            good(req)
        }
    });
    config(&w, &reg.host(), "");
    let (text, json) = both(&w, &pki, &format!("{}/app:v1", reg.host()), &[]);
    assert!(text.contains("refused the layer: AccessDenied"), "{text}");
    let storage_reqs = storage.requests();
    assert!(!storage_reqs.is_empty(), "the storage was asked:\n{text}");
    assert!(
        storage_reqs
            .iter()
            .all(|r| r.header("authorization").is_none()),
        "the layer storage is never sent the registry's credential: {storage_reqs:?}"
    );
    for out in [&text, &json] {
        assert_no_piece(
            out,
            "IQoJb3JpZ2luX2VjEJr%2Fsessiontokensecret1234",
            "the session token",
        );
        assert_no_piece(
            out,
            "5f3e9c0d8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d",
            "the signature",
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Terminal injection and forged lines
// ---------------------------------------------------------------------------------------------

/// Characters that act on a terminal or split a log line, which JSON writers leave raw.
const ACTS: [char; 5] = ['\u{202e}', '\u{2066}', '\u{2028}', '\u{2029}', '\u{200f}'];

/// A local user names a credential helper full of bidi controls and line separators in the auth
/// file root asks about, and a registry says the same in its error: `--json` printed them raw
/// (serde_json escapes only C0 controls), so the terminal reorders or splits the report.
#[test]
fn the_json_report_has_no_bidi_controls_or_line_separators() {
    require_root!();
    let w = World::new();
    let pki = pki(&w);
    let evil: String = format!("desk{}top{}", ACTS.iter().collect::<String>(), "\u{85}");
    let said = evil.clone();
    let reg = Registry::start(&pki, move |req| {
        if req.path.contains("/manifests/") {
            json_error(403, "DENIED", &format!("no {said} way"))
        } else {
            good(req)
        }
    });
    let home = user_home(&w, USER);
    let file = home.join(".docker/config.json");
    user_file(
        &file,
        USER,
        &serde_json::json!({"credHelpers": {reg.host(): evil}}).to_string(),
    );
    config(
        &w,
        &reg.host(),
        &format!("[[target]]\npath = \"{}\"\n", file.display()),
    );
    let (text, json) = both(&w, &pki, &format!("{}/app:v1", reg.host()), &[]);
    assert!(text.contains("docker-credential-desk"), "{text}");
    let v: serde_json::Value =
        serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert!(v["steps"].as_array().is_some(), "{json}");
    for out in [&text, &json] {
        for c in ACTS.iter().chain(['\u{85}', '\u{1b}'].iter()) {
            assert!(
                !out.contains(*c),
                "U+{:04X} reaches the terminal raw:\n{}",
                *c as u32,
                out.escape_debug()
            );
        }
    }
}

/// STS's error message carries a line feed and a fake report line: the text report printed it
/// unquoted, and its line-by-line escaping kept the line feed, so the forged line stood in the
/// report as a step of its own. (The same went for the ARN STS names and the errors of
/// ListImages and DescribeRepositories; the fake cannot put a message in those.)
#[test]
fn an_aws_error_message_cannot_forge_a_report_line() {
    let w = World::new();
    let pki = pki(&w);
    let forged = "manifest  ok       FORGED: the pull of everything would work";
    w.fake.set_fault(
        Service::Sts,
        Fault::ErrorMessage(format!("denied\n{forged}")),
    );
    let reg = Registry::start(&pki, good);
    config(&w, &reg.host(), "");
    let (out, _) = doctor(&w, &pki, &[&format!("{}/app:v1", reg.host())]);
    let text = stdout(&out);
    assert!(text.contains("STS GetCallerIdentity failed"), "{text}");
    for line in text.lines() {
        assert!(
            !line.starts_with("manifest  ok       FORGED"),
            "a forged line stands in the report:\n{text}"
        );
    }
    let identity: Vec<&str> = text.lines().filter(|l| l.contains("FORGED")).collect();
    assert!(
        identity.len() == 1 && identity[0].starts_with("identity  warning"),
        "the message is shown inside the identity step's line:\n{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Where credentials go
// ---------------------------------------------------------------------------------------------

/// A registry answers the manifest with a 307 to another server: `doctor` follows nothing, so
/// the other server never hears from it (docker would follow; the token must not).
#[test]
fn a_manifest_redirect_is_not_followed() {
    let w = World::new();
    let pki = pki(&w);
    let elsewhere = Registry::start(&pki, good);
    let to = format!("https://{}/v2/app/manifests/v1", elsewhere.host());
    let reg = Registry::start(&pki, move |req| {
        if req.path.contains("/manifests/") {
            answer(307, &[("Location", &to)], b"")
        } else {
            good(req)
        }
    });
    config(&w, &reg.host(), "");
    let (text, json) = both(&w, &pki, &format!("{}/app:v1", reg.host()), &[]);
    assert!(text.contains("manifest  FAILED"), "{text}");
    assert!(
        elsewhere.requests().is_empty(),
        "the redirect target was asked: {:?}",
        elsewhere.requests()
    );
    let (token, _) = issued(&w);
    assert_no_piece(&(text + &json), &token, "root's ECR token");
}

/// The registry's 307 for a blob points at another host: it is asked without `Authorization`.
#[test]
fn a_blob_redirect_target_gets_no_credential() {
    let w = World::new();
    let pki = pki(&w);
    let storage = Registry::start(&pki, |_| answer(206, &[], b"x"));
    let to = format!(
        "https://{}/bucket/key?X-Amz-Signature=0123456789abcdef0123",
        storage.host()
    );
    let reg = Registry::start(&pki, move |req| {
        if req.path.contains("/blobs/") {
            answer(307, &[("Location", &to)], b"")
        } else {
            good(req)
        }
    });
    config(&w, &reg.host(), "");
    let (text, _) = both(&w, &pki, &format!("{}/app:v1", reg.host()), &[]);
    assert!(text.contains("serves the layer (HTTP 206)"), "{text}");
    let asked = storage.requests();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(
        asked
            .iter()
            .all(|r| r.method == "GET" && r.header("authorization").is_none()),
        "{asked:?}"
    );
    assert!(!text.contains("0123456789abcdef0123"), "{text}");
}

/// A local user listens on the loopback port of a mirror alias before the mirror does (the
/// config warns of this), with a certificate of their own: the handshake fails, and not one
/// byte of a request, let alone the token, reaches them.
#[test]
fn a_loopback_squatter_without_a_trusted_certificate_gets_nothing() {
    require_root!();
    let w = World::new();
    let pki = pki(&w);
    let theirs = pki_in(&w, "squatter");
    for p in [&theirs.cert_path, &theirs.key_path] {
        chown(p, USER, USER);
    }
    chmod(&w.path("squatter"), 0o755);
    chmod(w.dir.path(), 0o755);
    const SQUAT: &str = r#"
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(10)
    try:
        t = ctx.wrap_socket(c, server_side=True)
        data = t.recv(65536)
        print("got", repr(data), flush=True)
    except Exception as e:
        print("handshake failed", type(e).__name__, flush=True)
    finally:
        c.close()
"#;
    let squat = Py::spawn(
        USER,
        SQUAT,
        &[
            theirs.cert_path.to_str().unwrap(),
            theirs.key_path.to_str().unwrap(),
        ],
    );
    let port = squat.line(Duration::from_secs(20));
    let alias = format!("127.0.0.1:{port}");
    config(&w, &alias, "");
    let (out, _) = doctor(&w, &pki, &[&format!("{alias}/app:v1")]);
    let text = stdout(&out);
    assert!(text.contains("tls       FAILED"), "{text}");
    let said = squat.line(Duration::from_secs(20));
    assert!(said.starts_with("handshake failed"), "{said}\n{text}");
    while let Some(l) = squat.try_line(Duration::from_millis(300)) {
        assert!(!l.starts_with("got"), "the squatter was sent {l}");
    }
}

/// The auth file names credential helpers (`credsStore`, `credHelpers`) that exist on root's
/// PATH: `doctor` reports them and never runs one.
#[test]
fn credential_helpers_are_never_run() {
    require_root!();
    let w = World::new();
    let pki = pki(&w);
    let reg = Registry::start(&pki, good);
    let bin = w.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let marker = w.path("helper-ran");
    for name in [
        "docker-credential-evil",
        "docker-credential-evil2",
        "docker-credential-ecr-refresherd",
    ] {
        let p = bin.join(name);
        std::fs::write(
            &p,
            format!("#!/bin/sh\necho \"$0 $*\" >> {}\n", marker.display()),
        )
        .unwrap();
        chmod(&p, 0o755);
    }
    let home = user_home(&w, USER);
    let docker = home.join(".docker/config.json");
    user_file(
        &docker,
        USER,
        &serde_json::json!({"credsStore": "evil", "auths": {reg.host(): {"auth": "QVdTOnVzZXJwYXNz"}}}).to_string(),
    );
    std::fs::create_dir_all(home.join(".config/containers")).unwrap();
    chown(&home.join(".config"), USER, USER);
    chown(&home.join(".config/containers"), USER, USER);
    let podman = home.join(".config/containers/auth.json");
    user_file(
        &podman,
        USER,
        &serde_json::json!({"credHelpers": {reg.host(): "evil2"}}).to_string(),
    );
    config(
        &w,
        &reg.host(),
        &format!(
            "[[target]]\npath = \"{}\"\n[[target]]\npath = \"{}\"\n",
            docker.display(),
            podman.display()
        ),
    );
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let (out, _) = doctor_env(
        &w,
        &pki,
        &[&format!("{}/app:v1", reg.host())],
        &[("PATH", &path)],
    );
    let text = stdout(&out);
    assert!(text.contains("docker-credential-evil"), "{text}");
    assert!(text.contains("docker-credential-evil2"), "{text}");
    assert!(
        !marker.exists(),
        "a helper ran: {}",
        std::fs::read_to_string(&marker).unwrap_or_default()
    );
}

// ---------------------------------------------------------------------------------------------
// Time and memory
// ---------------------------------------------------------------------------------------------

/// Three root targets with an entry each, and a registry that sends its answers a byte every
/// half second (slowloris), or never answers, or sends an endless body: `doctor` ends in its
/// bound either way.
#[test]
fn a_slow_silent_or_endless_registry_cannot_hold_doctor() {
    let w = World::new();
    let pki = pki(&w);
    let slow = Registry::start(&pki, |req| {
        let Reply::Bytes(b) = good(req) else {
            unreachable!()
        };
        Reply::Trickle(b, Duration::from_millis(500))
    });
    let silent = Registry::start(&pki, |_| Reply::Hang);
    let endless = Registry::start(&pki, |_| {
        Reply::Endless(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n".to_vec())
    });
    for reg in [&slow, &silent, &endless] {
        let mut targets = String::new();
        for i in 0..3 {
            let f = w.path(&format!("t{i}/config.json"));
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(
                &f,
                serde_json::json!({"auths": {reg.host(): {"auth": "QVdTOnBhc3N3b3Jk"}}})
                    .to_string(),
            )
            .unwrap();
            targets += &format!("[[target]]\npath = \"{}\"\n", f.display());
        }
        config(&w, &reg.host(), &targets);
        let (out, took) = doctor(&w, &pki, &[&format!("{}/app:v1", reg.host())]);
        eprintln!("{}: {took:?}", reg.host());
        assert!(
            took < BOUND,
            "doctor took {took:?} against {}:\n{}",
            reg.host(),
            stdout(&out)
        );
        assert_eq!(code(&out), 1, "{}", stdout(&out));
    }
}

/// Runs `c`, returning its output and its peak resident memory in KiB (wait4's rusage).
// The child is reaped by wait4 (for its rusage), which clippy does not see.
#[allow(clippy::zombie_processes)]
fn measured(w: &World, mut c: Command) -> (Output, i64) {
    use std::process::Stdio;
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let a = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b);
        b
    });
    let e = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b);
        b
    });
    let mut status = 0;
    // SAFETY: rusage is plain data (all zeros is a valid value).
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: valid pointers to our locals; the pid is our own child's, not yet reaped.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid, "wait4");
    let out = Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(status),
        stdout: a.join().unwrap(),
        stderr: e.join().unwrap(),
    };
    (w.capture(out), ru.ru_maxrss)
}

/// A manifest of 4 MiB (distribution's limit, which `doctor` keeps) made of the smallest JSON
/// values: parsed whole into a `serde_json::Value`, it cost root's process some 240 MiB (on a
/// t4g.nano, half its memory) where a small manifest costs a few.
#[test]
fn a_giant_manifest_costs_little_memory() {
    let w = World::new();
    let pki = pki(&w);
    let mut body = format!("{{\"schemaVersion\":2,\"layers\":[{{\"digest\":\"{LAYER}\"}}],\"x\":[");
    while body.len() < 4 * 1024 * 1024 - 16 {
        body.push_str("0,");
    }
    body.push_str("0]}");
    let giant = Arc::new(body.into_bytes());
    let peak = |body: Arc<Vec<u8>>| {
        let reg = Registry::start(&pki, move |req| {
            if req.path.contains("/manifests/") {
                answer(
                    200,
                    &[(
                        "Content-Type",
                        "application/vnd.docker.distribution.manifest.v2+json",
                    )],
                    &body,
                )
            } else {
                good(req)
            }
        });
        config(&w, &reg.host(), "");
        let mut c = w.cmd();
        c.env("SSL_CERT_FILE", &pki.ca)
            .arg("--config")
            .arg(w.path("config.toml"))
            .arg("doctor")
            .arg(format!("{}/app:v1", reg.host()));
        let (out, kib) = measured(&w, c);
        let text = stdout(&out);
        assert!(
            text.contains("manifest  ok") && text.contains("layer     ok"),
            "{text}"
        );
        kib / 1024
    };
    let small = peak(Arc::new(manifest()));
    let big = peak(giant);
    eprintln!("peak: {small} MiB with a small manifest, {big} MiB with a 4 MiB one");
    assert!(
        big < small + 32,
        "doctor peaked at {big} MiB on a 4 MiB manifest, {small} MiB on a small one"
    );
}

// ---------------------------------------------------------------------------------------------
// A user's files (`--user`)
// ---------------------------------------------------------------------------------------------

/// The name `--user` is given; it has a passwd entry only inside `doctor`'s mount namespace.
const VICTIM: &str = "doctor-attack-user";

/// A private passwd: the machine's, plus `VICTIM` with `uid` and `home`.
fn passwd(w: &World, uid: u32, home: &Path) -> PathBuf {
    let mut text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    if !text.ends_with('\n') && !text.is_empty() {
        text.push('\n');
    }
    text += &format!("{VICTIM}:x:{uid}:{uid}::{}:/bin/sh\n", home.display());
    let p = w.path("passwd");
    std::fs::write(&p, text).unwrap();
    chmod(&p, 0o644);
    p
}

/// `doctor --user VICTIM ARGS` in a mount namespace where /etc/passwd is `passwd`.
fn doctor_for_user(w: &World, pki: &Pki, passwd: &Path, args: &[&str]) -> (Output, Duration) {
    let mut c = Command::new("/usr/bin/unshare");
    c.env_clear();
    for (k, v) in w.fake.env() {
        if k != "AWS_REGION" {
            c.env(k, v);
        }
    }
    c.env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", w.dir.path())
        .env("PATH", "/usr/bin:/bin")
        .env("NO_COLOR", "1")
        .env("SSL_CERT_FILE", &pki.ca)
        .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .arg("mount --bind \"$0\" /etc/passwd && exec \"$@\"")
        .arg(passwd)
        .arg(BIN)
        .arg("--config")
        .arg(w.path("config.toml"))
        .arg("--run-dir")
        .arg(w.path("run"))
        .args(["doctor", "--user", VICTIM])
        .args(args);
    let t0 = Instant::now();
    let out = c.output().expect("unshare");
    let took = t0.elapsed();
    (w.capture(out), took)
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Root's credential in root's own file, which the user may not read.
const ROOT_ONLY: &str = "AWS:root-only-password-0f1e2d3c4b5a6978";
/// The user's own credential.
const USERS_OWN: &str = "AWS:the-users-own-password-a1b2c3d4";

/// `<dir>/rootonly/config.json`: root's file (0600 in a 0700 directory) with an entry for
/// `alias` and a helper name that would show in a report that read it.
fn root_only(w: &World, alias: &str) -> (PathBuf, PathBuf) {
    let dir = w.path("rootonly");
    std::fs::create_dir_all(&dir).unwrap();
    chmod(&dir, 0o700);
    let f = dir.join("config.json");
    std::fs::write(
        &f,
        serde_json::json!({"auths": {alias: {"auth": b64(ROOT_ONLY)}}, "credHelpers": {"x.example": "root-only-marker"}})
            .to_string(),
    )
    .unwrap();
    chmod(&f, 0o600);
    (dir, f)
}

fn assert_root_file_untouched(reg: &Registry, text: &str) {
    let root = format!("Basic {}", b64(ROOT_ONLY));
    assert!(
        reg.requests()
            .iter()
            .all(|r| r.header("authorization") != Some(root.as_str())),
        "root's credential from root's file was sent to the registry:\n{text}"
    );
    assert!(!text.contains("root-only-marker"), "{text}");
    assert_no_piece(text, &b64(ROOT_ONLY), "root's file's credential");
}

/// A user's files are links to root's file (a symlink, a symlinked directory, a link through
/// /proc, a hard link root made), a FIFO, a sparse file of 8 GiB and JSON nested 100 000 deep:
/// `doctor --user` refuses each, reads nothing of root's, and ends at once.
#[test]
fn a_users_links_and_special_files_are_refused() {
    require_root!();
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    let pki = pki(&w);
    let reg = Registry::start(&pki, good);
    let alias = reg.host();
    let (secret_dir, secret) = root_only(&w, &alias);
    let home = user_home(&w, USER);
    let pw = passwd(&w, USER, &home);
    config(&w, &alias, "");
    let run_user = w.path(&format!("run/user/{USER}/containers"));
    std::fs::create_dir_all(&run_user).unwrap();
    for d in [w.path(&format!("run/user/{USER}")), run_user.clone()] {
        chown(&d, USER, USER);
        chmod(&d, 0o700);
    }
    let config_dir = home.join(".config/containers");
    std::fs::create_dir_all(&config_dir).unwrap();
    chown(&home.join(".config"), USER, USER);
    chown(&config_dir, USER, USER);
    let docker_json = home.join(".docker/config.json");
    let podman_json = config_dir.join("auth.json");
    let run_json = run_user.join("auth.json");
    let link = |to: &Path, at: &Path| {
        let _ = std::fs::remove_file(at);
        std::os::unix::fs::symlink(to, at).unwrap();
        std::os::unix::fs::lchown(at, Some(USER), Some(USER)).unwrap();
    };
    let image = format!("{alias}/app:v1");
    let run = |what: &str| {
        let (out, took) = doctor_for_user(&w, &pki, &pw, &[&image]);
        let text = stdout(&out) + &stderr(&out);
        assert!(
            took < Duration::from_secs(10),
            "{what}: took {took:?}\n{text}"
        );
        assert!(text.contains("consumer"), "{what}:\n{text}");
        assert_root_file_untouched(&reg, &text);
        text
    };

    // 1. Symlinks to root's file, a hard link to it, a FIFO.
    link(&secret, &docker_json);
    let _ = std::fs::remove_file(&podman_json);
    std::fs::hard_link(&secret, &podman_json).unwrap();
    nix::unistd::mkfifo(&run_json, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    chown(&run_json, USER, USER);
    let text = run("links and a FIFO");
    assert!(text.contains("symbolic link"), "{text}");
    assert!(text.contains("a FIFO, not a regular file"), "{text}");
    assert!(
        text.contains("belongs to root") || text.contains("hard links"),
        "{text}"
    );

    // 2. The directory itself a link to root's; a link through /proc to doctor's own environment
    // (which holds AWS keys); a sparse 8 GiB file; JSON nested 100 000 deep.
    std::fs::remove_file(&docker_json).unwrap();
    std::fs::remove_dir(home.join(".docker")).unwrap();
    link(&secret_dir, &home.join(".docker"));
    std::fs::remove_file(&podman_json).unwrap();
    link(Path::new("/proc/self/environ"), &podman_json);
    std::fs::remove_file(&run_json).unwrap();
    let f = std::fs::File::create(&run_json).unwrap();
    f.set_len(8 << 30).unwrap();
    drop(f);
    chown(&run_json, USER, USER);
    let text = run("a linked directory, /proc and a sparse file");
    assert!(text.contains("symbolic link"), "{text}");
    assert!(text.contains("larger than"), "{text}");
    assert!(!text.contains(fake_aws::FAKE_SECRET_ACCESS_KEY), "{text}");

    std::fs::remove_file(&run_json).unwrap();
    user_file(
        &run_json,
        USER,
        &("[".repeat(100_000) + &"]".repeat(100_000)),
    );
    let text = run("deep JSON");
    assert!(text.contains("cannot read it"), "{text}");
}

/// While `doctor --user` runs, round after round, the user swaps (renameat2 RENAME_EXCHANGE,
/// atomically) their `config.json` with a symlink to root's file and their `.docker` directory
/// with a symlink to root's directory: no round reads root's file or sends its credential.
#[test]
fn a_user_swapping_links_in_during_doctor_gets_nothing_of_roots() {
    require_root!();
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    let pki = pki(&w);
    let reg = Registry::start(&pki, good);
    let alias = reg.host();
    let (secret_dir, secret) = root_only(&w, &alias);
    let home = user_home(&w, USER);
    let pw = passwd(&w, USER, &home);
    config(&w, &alias, "");
    let docker = home.join(".docker");
    user_file(
        &docker.join("config.json"),
        USER,
        &serde_json::json!({"auths": {alias.clone(): {"auth": b64(USERS_OWN)}}}).to_string(),
    );
    const SWAP: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
home, secret_dir, secret, stop = sys.argv[1:5]
d = os.path.join(home, ".docker")
os.symlink(secret_dir, os.path.join(home, ".docker-evil"))
os.symlink(secret, os.path.join(d, "evil.json"))
def xchg(a, b):
    libc.renameat2(-100, a.encode(), -100, b.encode(), 2)
print("ready", flush=True)
n = 0
while not os.path.exists(stop):
    xchg(os.path.join(d, "config.json"), os.path.join(d, "evil.json"))
    n += 1
    if n % 3 == 0:
        xchg(d, os.path.join(home, ".docker-evil"))
print(n, flush=True)
"#;
    let stop = w.path("stop");
    let swapper = Py::spawn(
        USER,
        SWAP,
        &[
            home.to_str().unwrap(),
            secret_dir.to_str().unwrap(),
            secret.to_str().unwrap(),
            stop.to_str().unwrap(),
        ],
    );
    assert_eq!(swapper.line(Duration::from_secs(20)), "ready");
    let image = format!("{alias}/app:v1");
    let mut read_theirs = 0;
    for round in 0..30 {
        let (out, took) = doctor_for_user(&w, &pki, &pw, &[&image]);
        let text = stdout(&out) + &stderr(&out);
        assert!(took < BOUND, "round {round}: took {took:?}\n{text}");
        assert_root_file_untouched(&reg, &text);
        if text.contains("the registry accepts its entry") {
            read_theirs += 1;
        }
    }
    std::fs::write(&stop, "").unwrap();
    let swaps: u64 = swapper.line(Duration::from_secs(20)).parse().unwrap_or(0);
    assert!(swaps > 100, "the swapper hardly ran: {swaps}");
    eprintln!("{swaps} swaps; the user's own file was read in {read_theirs} of 30 rounds");
}

/// Key tricks in a user's file (`https://H/`, `http://H`, `H/v1/`, `H.evil`, `evil/H`, `H:443`)
/// and a second registry that would catch a credential sent astray: the only credential sent
/// is the one docker uses for the image's host, and only to that host.
#[test]
fn auth_key_tricks_send_a_users_credential_only_to_the_images_registry() {
    require_root!();
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    let pki = pki(&w);
    let reg = Registry::start(&pki, good);
    let elsewhere = Registry::start_on("127.0.0.2:0", &pki, good);
    let alias = reg.host();
    let other = elsewhere.host();
    let home = user_home(&w, USER);
    let pw = passwd(&w, USER, &home);
    config(&w, &alias, "");
    let cred = |n: &str| b64(&format!("AWS:key-trick-{n}-0123456789"));
    let entries = serde_json::json!({
        format!("https://{alias}/"): {"auth": cred("https")},
        format!("{alias}.evil"): {"auth": cred("suffix")},
        format!("evil/{alias}"): {"auth": cred("path")},
        format!("{alias}:443"): {"auth": cred("port")},
        other.clone(): {"auth": cred("other")},
        format!("https://{other}/{alias}"): {"auth": cred("other-path")},
    });
    let file = home.join(".docker/config.json");
    user_file(
        &file,
        USER,
        &serde_json::json!({"auths": entries}).to_string(),
    );
    let image = format!("{alias}/app:v1");
    let (out, _) = doctor_for_user(&w, &pki, &pw, &[&image]);
    let text = stdout(&out) + &stderr(&out);
    assert!(
        elsewhere.requests().is_empty(),
        "{:?}\n{text}",
        elsewhere.requests()
    );
    let sent: Vec<String> = reg
        .requests()
        .iter()
        .filter(|r| r.path == "/v2/")
        .filter_map(|r| r.header("authorization").map(str::to_string))
        .collect();
    assert_eq!(sent, [format!("Basic {}", cred("https"))], "{text}");

    // With the bare key beside it, the bare key's entry (docker's exact match first).
    let mut e = entries.as_object().unwrap().clone();
    e.insert(alias.clone(), serde_json::json!({"auth": cred("bare")}));
    user_file(&file, USER, &serde_json::json!({"auths": e}).to_string());
    let before = reg.requests().len();
    let (out, _) = doctor_for_user(&w, &pki, &pw, &[&image]);
    let text = stdout(&out) + &stderr(&out);
    let sent: Vec<String> = reg.requests()[before..]
        .iter()
        .filter(|r| r.path == "/v2/")
        .filter_map(|r| r.header("authorization").map(str::to_string))
        .collect();
    assert_eq!(sent, [format!("Basic {}", cred("bare"))], "{text}");
    assert!(elsewhere.requests().is_empty(), "{text}");
    for n in ["https", "bare"] {
        assert_no_piece(&text, &cred(n), "the user's credential");
    }
}

/// `--user` of an account whose home is a sticky world-writable directory (like /tmp): another
/// user made `.docker/config.json` there first, with a credential of theirs. It is not taken as
/// the account's file, and their credential is sent nowhere.
#[test]
fn another_users_file_in_a_sticky_home_is_not_taken() {
    require_root!();
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    let pki = pki(&w);
    let reg = Registry::start(&pki, good);
    let alias = reg.host();
    let home = w.path("sticky");
    std::fs::create_dir(&home).unwrap();
    chmod(&home, 0o1777);
    let pw = passwd(&w, USER, &home);
    config(&w, &alias, "");
    let planted = b64("AWS:planted-by-another-user-0123456789");
    const PLANT: &str = r#"
import json, os, sys
home, alias, auth = sys.argv[1:4]
os.mkdir(os.path.join(home, ".docker"), 0o755)
with open(os.path.join(home, ".docker", "config.json"), "w") as f:
    json.dump({"auths": {alias: {"auth": auth}}}, f)
print("planted", flush=True)
"#;
    let p = Py::spawn(OTHER, PLANT, &[home.to_str().unwrap(), &alias, &planted]);
    assert_eq!(p.line(Duration::from_secs(20)), "planted");
    let (out, _) = doctor_for_user(&w, &pki, &pw, &[&format!("{alias}/app:v1")]);
    let text = stdout(&out) + &stderr(&out);
    assert!(text.contains("anyone may create it first"), "{text}");
    let bad = format!("Basic {planted}");
    assert!(
        reg.requests()
            .iter()
            .all(|r| r.header("authorization") != Some(bad.as_str())),
        "another user's credential was sent:\n{text}"
    );
}

/// A user's auth file of 4 MiB (the most `doctor` reads) made of the smallest JSON values, with
/// their entry for the registry at the end: parsed whole into a `serde_json::Value` for
/// `doctor --user`, it cost root's process some 240 MiB per file.
#[test]
fn a_users_huge_auth_file_costs_little_memory() {
    require_root!();
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    let pki = pki(&w);
    let reg = Registry::start(&pki, good);
    let alias = reg.host();
    let home = user_home(&w, USER);
    let pw = passwd(&w, USER, &home);
    config(&w, &alias, "");
    let entry = serde_json::json!({alias.clone(): {"auth": b64(USERS_OWN)}}).to_string();
    let peak = |padding: usize| {
        let mut body = String::from("{\"x\":[");
        while body.len() < padding {
            body.push_str("0,");
        }
        body.push_str(&format!("0],\"auths\":{entry}}}"));
        user_file(&home.join(".docker/config.json"), USER, &body);
        let mut c = Command::new("/usr/bin/unshare");
        c.env_clear();
        for (k, v) in w.fake.env() {
            if k != "AWS_REGION" {
                c.env(k, v);
            }
        }
        c.env("AWS_EC2_METADATA_DISABLED", "true")
            .env("SSL_CERT_FILE", &pki.ca)
            .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg("mount --bind \"$0\" /etc/passwd && exec \"$@\"")
            .arg(&pw)
            .arg(BIN)
            .arg("--config")
            .arg(w.path("config.toml"))
            .args(["doctor", "--user", VICTIM, &format!("{alias}/app:v1")]);
        let (out, kib) = measured(&w, c);
        let text = stdout(&out);
        assert!(text.contains("the registry accepts its entry"), "{text}");
        kib / 1024
    };
    let small = peak(0);
    let big = peak(4 * 1024 * 1024 - 200);
    eprintln!("peak: {small} MiB with a small file, {big} MiB with a 4 MiB one");
    assert!(
        big < small + 32,
        "doctor --user peaked at {big} MiB on a 4 MiB auth file, {small} MiB on a small one"
    );
}
