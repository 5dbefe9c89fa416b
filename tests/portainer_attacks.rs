//! Attacks on the Portainer feature, against the built binary: a hostile or chatty server on the
//! URL (answers echoing our secrets, huge, endless or dripping bodies, redirects, odd JSON,
//! terminal escapes, thousands of records, certificates it should not get away with) and a hostile
//! local user (a real non-root uid: key and CA files it plants or swaps, Portainer's port it
//! takes while Portainer restarts). The hostile server is in this file: TLS with certificates the
//! `openssl` command makes (tests needing it say SKIPPED without it), HTTP by hand so that it can
//! answer anything.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use fake_portainer::FakePortainer;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CUSTOM: u32 = 3;
const LONG: Duration = Duration::from_secs(60);
const USER: u32 = 4242;
/// A key like Portainer's (`ptr_` and base64 of 32 bytes), for the hostile server.
const KEY: &str = "ptr_hostileTestKeyAAAABBBBCCCCDDDDEEEEFFFF0123=";

// ---------------------------------------------------------------------------------------------
// Certificates, made by the openssl command.

/// A certificate and its private key, PEM files.
#[derive(Clone, Debug)]
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
}

/// A CA (trusted through `ca_file`) and what it signs, in one directory.
struct Certs {
    dir: PathBuf,
    ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn have_openssl() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

macro_rules! require_openssl {
    () => {
        if !have_openssl() {
            eprintln!("SKIPPED: this test needs the openssl command to make certificates");
            return;
        }
    };
}

const EXT: &str =
    "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n";

impl Certs {
    /// A new CA in `dir`.
    fn new(dir: &Path) -> Certs {
        std::fs::create_dir_all(dir).unwrap();
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "3650",
                "-subj",
                "/CN=attack CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        Certs {
            dir: dir.to_path_buf(),
            ca: dir.join("ca.pem"),
        }
    }

    /// A leaf signed by the CA for `sans` (`IP:127.0.0.1,DNS:localhost`); `dates` (openssl's
    /// `YYYYMMDDHHMMSSZ`) for one outside its validity.
    fn leaf(&self, name: &str, sans: &str, dates: Option<(&str, &str)>) -> Leaf {
        let d = &self.dir;
        std::fs::write(
            d.join(format!("{name}.ext")),
            format!("subjectAltName={sans}\n{EXT}"),
        )
        .unwrap();
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                "/CN=localhost",
            ],
        );
        match dates {
            None => openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-set_serial",
                    &format!("{}", rand::random::<u32>()),
                    "-days",
                    "30",
                    "-out",
                    &format!("{name}.pem"),
                    "-extfile",
                    &format!("{name}.ext"),
                ],
            ),
            Some((from, to)) => {
                let db = d.join(format!("{name}.db"));
                std::fs::create_dir_all(&db).unwrap();
                std::fs::write(db.join("index.txt"), "").unwrap();
                std::fs::write(
                    db.join("serial"),
                    format!("{:08X}\n", rand::random::<u32>() | 1),
                )
                .unwrap();
                std::fs::write(
                    d.join(format!("{name}.cnf")),
                    format!(
                        "[ca]\ndefault_ca = x\n[x]\ndatabase = {0}/index.txt\nnew_certs_dir = {0}\nserial = {0}/serial\ndefault_md = sha256\npolicy = p\nunique_subject = no\n[p]\ncommonName = supplied\n",
                        db.display()
                    ),
                )
                .unwrap();
                openssl(
                    d,
                    &[
                        "ca",
                        "-batch",
                        "-notext",
                        "-config",
                        &format!("{name}.cnf"),
                        "-cert",
                        "ca.pem",
                        "-keyfile",
                        "ca.key",
                        "-in",
                        &format!("{name}.csr"),
                        "-out",
                        &format!("{name}.pem"),
                        "-startdate",
                        from,
                        "-enddate",
                        to,
                        "-extfile",
                        &format!("{name}.ext"),
                    ],
                );
            }
        }
        Leaf {
            cert: d.join(format!("{name}.pem")),
            key: d.join(format!("{name}.key")),
        }
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost (what an attacker makes for itself).
fn self_signed(dir: &Path, name: &str) -> Leaf {
    std::fs::create_dir_all(dir).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "30",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
    );
    Leaf {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    }
}

/// The lowercase hex SHA-256 of a PEM certificate's DER (what `pin_sha256` takes).
fn pin_of(cert: &Path) -> String {
    let der = CertificateDer::from_pem_file(cert).unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let hex: String = text
        .split('=')
        .nth(1)
        .unwrap_or("")
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .collect();
    assert_eq!(hex.len(), 64, "{text} ({} bytes of DER)", der.len());
    hex.to_lowercase()
}

// ---------------------------------------------------------------------------------------------
// A hostile HTTPS server: TLS by rustls, HTTP/1.1 by hand, every answer chosen by the test.

/// One request as the server read it.
#[derive(Clone, Debug, Default)]
struct Seen {
    method: String,
    path: String,
    /// The request line and the headers, as sent.
    head: String,
    body: String,
}

/// What the server answers.
enum Reply {
    /// `status` and a JSON body with a Content-Length.
    Json(u16, String),
    /// These bytes as they are (status line, headers, body), then the connection is closed.
    Raw(Vec<u8>),
    /// A 200 whose chunked body comes one byte every `gap`, for ever.
    Drip(Duration),
    /// A 200 whose chunked body never ends, as fast as the client reads.
    Endless,
    /// No answer at all, until the client goes away.
    Silent,
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

struct Hostile {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Bytes of body sent by the endless and dripping answers.
    sent: Arc<std::sync::atomic::AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Hostile {
    fn start(leaf: &Leaf, handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Hostile {
        Hostile::start_on("127.0.0.1:0".parse().unwrap(), leaf, handler)
    }

    fn start_on(
        addr: SocketAddr,
        leaf: &Leaf,
        handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Hostile {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&leaf.cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&leaf.key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        // The port may be someone else's for a moment (the squatting test): wait for it.
        let mut listener = std::net::TcpListener::bind(addr);
        let end = Instant::now() + LONG;
        while listener.is_err() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
            listener = std::net::TcpListener::bind(addr);
        }
        let listener = listener.unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let (seen2, sent2) = (Arc::clone(&seen), Arc::clone(&sent));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut rx => break,
                        a = listener.accept() => {
                            let Ok((tcp, _)) = a else { continue };
                            let (acceptor, handler) = (acceptor.clone(), Arc::clone(&handler));
                            let (seen, sent) = (Arc::clone(&seen2), Arc::clone(&sent2));
                            tokio::spawn(async move {
                                let _ = serve(acceptor, tcp, handler, seen, sent).await;
                            });
                        }
                    }
                }
            });
            rt.shutdown_timeout(Duration::from_millis(100));
        });
        Hostile {
            addr,
            seen,
            sent,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn count(&self, method: &str, path: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.path == path)
            .count()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    handler: Arc<Handler>,
    seen: Arc<Mutex<Vec<Seen>>>,
    sent: Arc<std::sync::atomic::AtomicU64>,
) -> std::io::Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut tls = acceptor.accept(tcp).await?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16384];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = tls.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = tls.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let end = buf.len().min(head_end + len);
    let mut words = head.split_whitespace();
    let req = Seen {
        method: words.next().unwrap_or("").to_string(),
        path: words.next().unwrap_or("").to_string(),
        body: String::from_utf8_lossy(&buf[head_end..end]).into_owned(),
        head,
    };
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(req.clone());
    const CHUNKED: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    match handler(&req) {
        Reply::Json(status, body) => {
            let out = format!(
                "HTTP/1.1 {status} Whatever\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            tls.write_all(out.as_bytes()).await?;
        }
        Reply::Raw(bytes) => tls.write_all(&bytes).await?,
        Reply::Drip(gap) => {
            tls.write_all(CHUNKED).await?;
            tls.write_all(b"1\r\n[\r\n").await?;
            loop {
                tls.write_all(b"1\r\n \r\n").await?;
                tls.flush().await?;
                sent.fetch_add(1, Relaxed);
                tokio::time::sleep(gap).await;
            }
        }
        Reply::Endless => {
            tls.write_all(CHUNKED).await?;
            tls.write_all(b"1\r\n[\r\n").await?;
            let piece = format!("10000\r\n{}\r\n", " ".repeat(0x10000));
            loop {
                tls.write_all(piece.as_bytes()).await?;
                sent.fetch_add(0x10000, Relaxed);
            }
        }
        Reply::Silent => loop {
            if tls.read(&mut chunk).await? == 0 {
                return Ok(());
            }
        },
    }
    tls.flush().await?;
    let _ = tls.shutdown().await;
    Ok(())
}

/// `GET /api/system/status`.
fn version(v: &str) -> Reply {
    Reply::Json(200, serde_json::json!({ "Version": v }).to_string())
}

/// A record as Portainer lists it to an administrator.
fn record(id: u32, kind: u32, name: &str, url: &str, password: &str) -> serde_json::Value {
    serde_json::json!({
        "Id": id, "Type": kind, "Name": name, "URL": url,
        "Authentication": true, "Username": "AWS", "Password": password
    })
}

/// A Portainer that lists `records` and accepts every PUT; `put` may answer otherwise.
fn portainer(
    records: serde_json::Value,
    put: impl Fn(&Seen) -> Option<Reply> + Send + Sync + 'static,
) -> impl Fn(&Seen) -> Reply + Send + Sync + 'static {
    move |r: &Seen| match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/api/system/status") => version("2.21.4"),
        ("GET", "/api/registries") => Reply::Json(200, records.to_string()),
        ("PUT", p) if p.starts_with("/api/registries/") => put(r).unwrap_or_else(|| {
            let id: u32 = p.rsplit('/').next().unwrap_or("0").parse().unwrap_or(0);
            let sent: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
            Reply::Json(
                200,
                serde_json::json!({
                    "Id": id, "Type": CUSTOM, "Name": "x", "URL": H1,
                    "Authentication": true, "Username": "AWS", "Password": sent["Password"]
                })
                .to_string(),
            )
        }),
        _ => Reply::Json(404, r#"{"message":"Not found"}"#.into()),
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon's side.

/// A `[[portainer]]` block for `url`: the key in `<dir>/<name>.key` (root's, 0600), `extra`
/// lines (ca_file, pin_sha256, registries ...).
fn block(w: &World, url: &str, name: &str, key: &str, extra: &str) -> String {
    let key_file = w.path(&format!("{name}.key"));
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    chmod(&key_file, 0o600);
    format!(
        "\n[[portainer]]\nurl = \"{url}\"\napi_key_file = \"{}\"\ncheck_every = \"1s\"\n{extra}",
        key_file.display()
    )
}

fn ca_line(ca: &Path) -> String {
    format!("ca_file = \"{}\"\n", ca.display())
}

/// The daemon config: one file target, H1 and H2, and the given blocks.
fn config(w: &World, blocks: &[String]) -> PathBuf {
    let target = w.path("d/config.json");
    let mut cfg = w.daemon_section();
    cfg += &format!("\n[[target]]\npath = \"{}\"\n", target.display());
    for h in [H1, H2] {
        cfg += &format!("[[registry]]\nhost = \"{h}\"\n");
    }
    for b in blocks {
        cfg += b;
    }
    w.config(&cfg);
    target
}

fn portainer_status(w: &World, i: usize) -> serde_json::Value {
    w.status_json()
        .and_then(|s| s["portainer"].get(i).cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// Every piece of `secret` `n` characters long: none may appear in any output.
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
    let finder = aho_corasick::AhoCorasick::new(&all).unwrap();
    if let Some(m) = finder.find(text) {
        let from = text.floor_char_boundary(m.start().saturating_sub(120));
        let to = text.floor_char_boundary((m.end() + 40).min(text.len()));
        panic!(
            "{what}: {n} characters of a secret are shown: ...{}...",
            &text[from..to]
        );
    }
}

/// The passwords the server was sent in PUTs.
fn sent_passwords(srv: &Hostile) -> Vec<String> {
    let mut out: Vec<String> = srv
        .seen()
        .iter()
        .filter(|s| s.method == "PUT")
        .filter_map(|s| {
            let v: serde_json::Value = serde_json::from_str(&s.body).ok()?;
            Some(v["Password"].as_str()?.to_string())
        })
        .collect();
    out.dedup();
    out
}

fn output_text(o: &std::process::Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

/// A real process running `code` (python3) as `uid`, until killed.
struct Attacker(Child);

impl Attacker {
    fn spawn(uid: u32, dir: &Path, code: &str) -> Attacker {
        use std::os::unix::process::CommandExt;
        let child = Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(code)
            .current_dir(dir)
            .uid(uid)
            .gid(uid)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .spawn()
            .expect("python3 attacker");
        Attacker(child)
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets echoed back.

/// A PUT refused with a message that quotes what it was sent (as a validating proxy or a
/// chatty server does): ECR passwords are ~2 KB, so the echo is cut to 200 characters before
/// the password is looked for, and the piece that is left was shown in full: in `once`, in
/// `status`, in the log.
#[test]
fn a_long_password_echoed_in_an_error_is_never_shown_even_in_part() {
    require_openssl!();
    let w = World::new();
    w.fake
        .set_fault(fake_aws::Service::Ecr, fake_aws::Fault::HugeToken(2048));
    let certs = Certs::new(&w.path("certs"));
    let leaf = certs.leaf("srv", "IP:127.0.0.1,DNS:localhost", None);
    let srv = Hostile::start(
        &leaf,
        portainer(
            serde_json::json!([record(1, CUSTOM, "ecr", H1, "seed-echo-old")]),
            |r| {
                Some(Reply::Json(
                    400,
                    serde_json::json!({
                        "message": "Invalid request payload",
                        "details": format!("cannot validate {}", r.body),
                    })
                    .to_string(),
                ))
            },
        ),
    );
    config(&w, &[block(&w, &srv.url(), "p", KEY, &ca_line(&certs.ca))]);
    let out = w.run(&["once"]);
    let passwords = sent_passwords(&srv);
    assert!(
        !passwords.is_empty() && passwords.iter().all(|p| p.len() >= 2000),
        "no PUT carried a long password: {passwords:?}"
    );
    assert!(
        output_text(&out).contains("HTTP 400"),
        "{}",
        output_text(&out)
    );
    assert_no_piece("once", &output_text(&out), &passwords, 16);

    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(
        wait_for(LONG, || portainer_status(&w, 0)["records"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 400"))),
        "{}",
        portainer_status(&w, 0)
    );
    let passwords = sent_passwords(&srv);
    let json = w.client(&["status", "--json"]);
    let table = w.client(&["status"]);
    assert_no_piece("status --json", &stdout(&json), &passwords, 16);
    assert_no_piece("status", &stdout(&table), &passwords, 16);
    assert_no_piece("the log", &d.log_text(), &passwords, 16);
}

/// The same for the API key: a 401 whose message quotes the request's headers, the key late
/// in it, is cut before the key is looked for.
#[test]
fn an_api_key_echoed_in_an_error_is_never_shown_even_in_part() {
    require_openssl!();
    let w = World::new();
    let certs = Certs::new(&w.path("certs"));
    let leaf = certs.leaf("srv", "IP:127.0.0.1,DNS:localhost", None);
    let srv = Hostile::start(&leaf, |r| {
        let key = r
            .head
            .lines()
            .find_map(|l| l.strip_prefix("x-api-key: "))
            .unwrap_or("")
            .to_string();
        Reply::Json(
            401,
            serde_json::json!({
                "message": "Unauthorized",
                "details": format!("{} no such key: {key}", "-".repeat(160)),
            })
            .to_string(),
        )
    });
    config(&w, &[block(&w, &srv.url(), "p", KEY, &ca_line(&certs.ca))]);
    let out = w.run(&["check"]);
    assert!(
        srv.seen().iter().any(|s| s.head.contains(KEY)),
        "the key was not sent: {:?}",
        srv.seen()
    );
    let text = output_text(&out);
    assert!(text.contains("HTTP 401"), "{text}");
    assert_no_piece("check", &text, &[KEY.to_string()], 12);
}

/// A server that quotes an earlier request (the PUT that carried the password) in its answer to
/// a later one (a GET): only the secrets of the request being answered were taken out.
#[test]
fn a_password_echoed_in_a_later_answer_is_never_shown() {
    require_openssl!();
    let w = World::new();
    let certs = Certs::new(&w.path("certs"));
    let leaf = certs.leaf("srv", "IP:127.0.0.1,DNS:localhost", None);
    let last_put = Arc::new(Mutex::new(String::new()));
    let remembered = Arc::clone(&last_put);
    let records = serde_json::json!([record(1, CUSTOM, "ecr", H1, "seed-later-old")]);
    let inner = portainer(records, |_| None);
    let srv = Hostile::start(&leaf, move |r| {
        let mut last = remembered.lock().unwrap_or_else(|e| e.into_inner());
        if r.method == "PUT" {
            *last = r.body.clone();
            return inner(r);
        }
        if r.path == "/api/registries" && !last.is_empty() {
            return Reply::Json(
                502,
                serde_json::json!({"message": "upstream error", "details": format!("replayed {}", *last)})
                    .to_string(),
            );
        }
        inner(r)
    });
    config(&w, &[block(&w, &srv.url(), "p", KEY, &ca_line(&certs.ca))]);
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(
        wait_for(LONG, || portainer_status(&w, 0)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 502"))),
        "{}",
        portainer_status(&w, 0)
    );
    let passwords = w.fake.issued_passwords();
    let json = w.client(&["status", "--json"]);
    assert_no_piece("status --json", &stdout(&json), &passwords, 16);
    assert_no_piece("the log", &d.log_text(), &passwords, 16);
}

// ---------------------------------------------------------------------------------------------
// Bodies that never end, come slowly or not at all; redirects.

/// The daemon's resident memory, kB.
fn rss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// An endless body, a 9 MiB one, one that drips a byte every 100 ms, and no answer at all: each
/// instance fails on its own within its bounds, memory stays bounded, the file target and a
/// healthy instance are served at once, `status` answers at once, and the daemon stops at once.
#[test]
fn endless_huge_dripping_and_silent_answers_are_bounded() {
    require_openssl!();
    let w = World::new();
    let certs = Certs::new(&w.path("certs"));
    let leaf = certs.leaf("srv", "IP:127.0.0.1,DNS:localhost", None);
    let on_list = |list: fn() -> Reply| {
        move |r: &Seen| match r.path.as_str() {
            "/api/system/status" => version("2.21.4"),
            _ => list(),
        }
    };
    let endless = Hostile::start(&leaf, on_list(|| Reply::Endless));
    let huge = Hostile::start(
        &leaf,
        on_list(|| {
            let mut s = String::from("[");
            s.push_str(&" ".repeat(9 * 1024 * 1024));
            s.push(']');
            Reply::Json(200, s)
        }),
    );
    let drip = Hostile::start(&leaf, on_list(|| Reply::Drip(Duration::from_millis(100))));
    let silent = Hostile::start(&leaf, on_list(|| Reply::Silent));
    let healthy = FakePortainer::start().unwrap();
    let id = healthy.add_record("ecr", CUSTOM, H1, true, "AWS", "seed-bodies-old");
    let ca = w.path("healthy-ca.pem");
    std::fs::write(&ca, healthy.ca_pem()).unwrap();
    let target = config(
        &w,
        &[
            block(&w, &endless.url(), "endless", KEY, &ca_line(&certs.ca)),
            block(&w, &huge.url(), "huge", KEY, &ca_line(&certs.ca)),
            block(&w, &drip.url(), "drip", KEY, &ca_line(&certs.ca)),
            block(&w, &silent.url(), "silent", KEY, &ca_line(&certs.ca)),
            block(
                &w,
                &healthy.url(),
                "healthy",
                &healthy.admin_key(),
                &ca_line(&ca),
            ),
        ],
    );
    let mut d = w.spawn_daemon(&[]);
    d.wait_ready();
    let t0 = Instant::now();
    assert!(
        wait_for(LONG, || {
            let p = w.fake.issued_passwords();
            healthy.record(id).is_some_and(|r| p.contains(&r.password))
                && std::fs::read(&target).is_ok_and(|b| !b.is_empty())
        }),
        "the target or the healthy instance waited for the hostile ones:\n{}",
        d.log_text()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(25),
        "served only after {:?}",
        t0.elapsed()
    );
    // status answers at once while the others hang.
    let t = Instant::now();
    let out = w.client(&["status", "--json"]);
    assert!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok(),
        "{}",
        output_text(&out)
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "status took {:?}",
        t.elapsed()
    );
    for (i, text) in [
        (0, "larger than"),
        (1, "larger than"),
        (2, "no answer within"),
        (3, "no answer within"),
    ] {
        assert!(
            wait_for(Duration::from_secs(90), || {
                portainer_status(&w, i)["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains(text))
            }),
            "instance {i}: {}",
            portainer_status(&w, i)
        );
    }
    let rss = rss_kb(d.pid());
    eprintln!(
        "RSS {rss} kB; endless sent {} bytes, drip {}",
        endless.sent.load(std::sync::atomic::Ordering::Relaxed),
        drip.sent.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(rss < 300_000, "RSS {rss} kB");
    // It stops at once though requests are under way.
    let t = Instant::now();
    d.stop();
    assert!(t.elapsed() < Duration::from_secs(10));
    drop(d);
    w.add_secrets(healthy.secrets());
    w.add_secrets([KEY.to_string()]);
}

/// Redirects are never followed: a 30x to another server (HTTPS or plain) sends it nothing.
#[test]
fn redirects_are_never_followed() {
    require_openssl!();
    let w = World::new();
    let certs = Certs::new(&w.path("certs"));
    let leaf = certs.leaf("srv", "IP:127.0.0.1,DNS:localhost", None);
    let elsewhere = Hostile::start(
        &leaf,
        portainer(serde_json::json!([record(1, CUSTOM, "e", H1, "x")]), |_| {
            None
        }),
    );
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    plain.set_nonblocking(true).unwrap();
    let plain_url = format!("http://{}", plain.local_addr().unwrap());
    let mut blocks = Vec::new();
    let mut servers = Vec::new();
    for (i, code) in [301u16, 302, 303, 307, 308].into_iter().enumerate() {
        let to = if i % 2 == 0 {
            elsewhere.url()
        } else {
            plain_url.clone()
        };
        let srv = Hostile::start(&leaf, move |r| {
            Reply::Raw(
                format!(
                    "HTTP/1.1 {code} Moved\r\nLocation: {to}{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    r.path
                )
                .into_bytes(),
            )
        });
        blocks.push(block(
            &w,
            &srv.url(),
            &format!("r{i}"),
            KEY,
            &ca_line(&certs.ca),
        ));
        servers.push(srv);
    }
    config(&w, &blocks);
    let out = w.run(&["check"]);
    let text = output_text(&out);
    for c in ["301", "302", "303", "307", "308"] {
        assert!(text.contains(&format!("HTTP {c}")), "{c}: {text}");
    }
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(LONG, || (0..5)
        .all(|i| portainer_status(&w, i)["last_error"].is_string())));
    assert!(
        elsewhere.seen().is_empty(),
        "a redirect was followed: {:?}",
        elsewhere.seen()
    );
    assert!(
        plain.accept().is_err(),
        "a redirect to plain HTTP was followed"
    );
    w.add_secrets([KEY.to_string()]);
}

// ---------------------------------------------------------------------------------------------
// Server-supplied text.

/// What would act on a terminal or split a log line if printed raw.
fn raw_control(text: &str) -> Option<(usize, char)> {
    text.char_indices().find(|(_, c)| {
        (c.is_control() && *c != '\n')
            || matches!(*c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    })
}

fn assert_inert(what: &str, text: &str) {
    if let Some((i, c)) = raw_control(text) {
        let from = text.floor_char_boundary(i.saturating_sub(80));
        panic!(
            "{what}: a raw {:?} at byte {i}: {:?}",
            c,
            &text[from..text.floor_char_boundary((i + 40).min(text.len()))]
        );
    }
}

const EVIL: &str = "\u{1b}]0;pwned\u{7}\u{1b}[2J\r\u{9b}31m\u{202e}gnp.exe\u{2028}\u{85}\0end";

/// Escapes in the version, record names and URLs, and error messages: nothing shown raw in
/// `status`, `status --json`, `check`, `once` or the log.
#[test]
fn terminal_escapes_from_the_server_are_never_shown_raw() {
    require_openssl!();
    let w = World::new();
    let certs = Certs::new(&w.path("certs"));
    let leaf = certs.leaf("srv", "IP:127.0.0.1,DNS:localhost", None);
    let records = serde_json::json!([
        record(1, CUSTOM, &format!("ours{EVIL}"), H1, "seed-esc-1"),
        record(2, 7, &format!("native{EVIL}"), H1, "seed-esc-2"),
        record(
            3,
            CUSTOM,
            &format!("bad-url{EVIL}"),
            &format!("{H1}{EVIL}"),
            "seed-esc-3"
        ),
        record(4, 9, &format!("odd-type{EVIL}"), H2, "seed-esc-4"),
    ]);
    let srv = Hostile::start(&leaf, move |r| match r.path.as_str() {
        "/api/system/status" => version(&format!("2.21{EVIL}")),
        "/api/registries" => Reply::Json(200, records.to_string()),
        _ => Reply::Json(
            500,
            serde_json::json!({"message": format!("boom{EVIL}"), "details": format!("more{EVIL}")})
                .to_string(),
        ),
    });
    // A certificate whose names are escapes: the TLS error lists them.
    let evil_leaf = certs.leaf(
        "evil",
        "DNS:evil\u{1b}]0;pwned\u{7}.example,DNS:x\u{1b}[2J\u{9b}31m",
        None,
    );
    let evil_srv = Hostile::start(&evil_leaf, |_| version("x"));
    let evil = block(&w, &evil_srv.url(), "e", KEY, &ca_line(&certs.ca));
    // A second instance listing ids, so the URL and type errors are shown too.
    let other = block(
        &w,
        &srv.url(),
        "q",
        KEY,
        &(ca_line(&certs.ca) + "registries = [1, 2, 3, 4, 5]\n"),
    );
    let other = other.replace(
        &srv.url(),
        &format!("https://localhost:{}", srv.addr.port()),
    );
    config(
        &w,
        &[
            block(&w, &srv.url(), "p", KEY, &ca_line(&certs.ca)),
            other,
            evil,
        ],
    );
    let out = w.run(&["check"]);
    assert!(stdout(&out).contains("gnp.exe"), "{}", stdout(&out));
    assert!(stdout(&out).contains("pwned"), "{}", stdout(&out));
    assert_inert("check", &output_text(&out));
    let out = w.run(&["once"]);
    assert!(stdout(&out).contains("HTTP 500"), "{}", stdout(&out));
    assert_inert("once", &output_text(&out));
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(LONG, || {
        portainer_status(&w, 0)["records"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 500"))
    }));
    assert!(wait_for(LONG, || portainer_status(&w, 1)["records"]
        .as_array()
        .is_some_and(|r| r.len() == 5)));
    let table = w.client(&["status"]);
    assert!(stdout(&table).contains("gnp.exe"), "{}", stdout(&table));
    assert_inert("status", &output_text(&table));
    let json = w.client(&["status", "--json"]);
    assert_inert("status --json", &output_text(&json));
    assert_inert("the log", &d.log_text());
    w.add_secrets([KEY.to_string()]);
}

// ---------------------------------------------------------------------------------------------
// Odd lists, ids not ours, thousands of records.

/// Lists that are not what Portainer sends (a wrong shape, ids out of range, nesting deep
/// enough to blow a recursive parser, invalid UTF-8): the instance fails with a message that
/// quotes none of it, the daemon neither crashes nor PUTs anything.
#[test]
fn odd_json_fails_the_instance_alone_and_quotes_nothing() {
    require_openssl!();
    let w = World::new();
    let certs = Certs::new(&w.path("certs"));
    let leaf = certs.leaf("srv", "IP:127.0.0.1,DNS:localhost", None);
    let bodies: Vec<Vec<u8>> = vec![
        br#"{"not":"a list","secret-in-body":"seed-odd-leak"}"#.to_vec(),
        br#"[{"Id":"1","Type":3,"URL":"seed-odd-leak"}]"#.to_vec(),
        br#"[{"Id":-1,"Type":3,"URL":"seed-odd-leak"}]"#.to_vec(),
        br#"[{"Id":4294967296,"Type":3,"URL":"seed-odd-leak"}]"#.to_vec(),
        br#"[{"Id":1.5,"Type":3,"URL":"seed-odd-leak"}]"#.to_vec(),
        br#"[{"Id":1,"Type":3,"URL":"111111111111.dkr.ecr.us-east-1.amazonaws.com","Password":5,"Name":"seed-odd-leak"}]"#.to_vec(),
        format!("{}{}", "[".repeat(200_000), "]".repeat(200_000)).into_bytes(),
        b"[{\"Id\":1,\"Type\":3,\"Name\":\"\xff\xfe seed-odd-leak\",\"URL\":\"x\"}]".to_vec(),
        b"\xef\xbb\xbf[]".to_vec(),
    ];
    let n = bodies.len();
    let mut blocks = Vec::new();
    let mut servers = Vec::new();
    for (i, body) in bodies.into_iter().enumerate() {
        let srv = Hostile::start(&leaf, move |r| match r.path.as_str() {
            "/api/system/status" => version("2.21.4"),
            _ => {
                let mut out = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                out.extend_from_slice(&body);
                Reply::Raw(out)
            }
        });
        blocks.push(block(
            &w,
            &srv.url(),
            &format!("o{i}"),
            KEY,
            &ca_line(&certs.ca),
        ));
        servers.push(srv);
    }
    let target = config(&w, &blocks);
    let out = w.run(&["check"]);
    let text = output_text(&out);
    assert!(!text.contains("seed-odd-leak"), "{text}");
    let mut d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(
        wait_for(LONG, || (0..n).all(|i| {
            portainer_status(&w, i)["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("unexpected answer"))
        })),
        "{}\n{text}",
        w.status_json().unwrap_or_default()
    );
    assert!(wait_for(LONG, || std::fs::read(&target).is_ok_and(|b| !b.is_empty())));
    let json = stdout(&w.client(&["status", "--json"]));
    assert!(!json.contains("seed-odd-leak"), "{json}");
    assert!(!d.log_text().contains("seed-odd-leak"));
    for s in &servers {
        assert_eq!(s.seen().iter().filter(|r| r.method == "PUT").count(), 0);
    }
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the daemon died:\n{}",
        d.log_text()
    );
    d.stop();
    w.add_secrets([KEY.to_string()]);
}

/// With `registries = [ids]`, a server listing thousands of matching Custom records (and the
/// same id twice, once for another host) gets a PUT for the listed ids only, each with its own
/// host's password; records of other types and hosts are never written.
#[test]
fn only_the_selected_records_are_ever_written() {
    require_openssl!();
    let w = World::new();
    let certs = Certs::new(&w.path("certs"));
    let leaf = certs.leaf("srv", "IP:127.0.0.1,DNS:localhost", None);
    let mut list = vec![
        record(7, CUSTOM, "seven", H1, "seed-sel-7"),
        record(
            8,
            CUSTOM,
            "eight-other-host",
            "registry.example.com",
            "seed-sel-8",
        ),
        record(9, 7, "nine-native", H1, "seed-sel-9"),
        record(10, CUSTOM, "ten", &format!("https://{H2}/"), "seed-sel-10"),
    ];
    for id in 11..3000 {
        list.push(record(id, CUSTOM, &format!("r{id}"), H1, "seed-sel-many"));
    }
    // Id 7 again, for a host we do not manage: the first is the one the selection sees.
    list.push(record(
        7,
        CUSTOM,
        "seven-again",
        "evil.example.com",
        "seed-sel-7b",
    ));
    let srv = Hostile::start(&leaf, portainer(serde_json::Value::Array(list), |_| None));
    config(
        &w,
        &[block(
            &w,
            &srv.url(),
            "p",
            KEY,
            &(ca_line(&certs.ca) + "registries = [7, 8, 9, 10]\n"),
        )],
    );
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(
        wait_for(LONG, || srv.count("GET", "/api/registries") >= 3),
        "{}",
        d.log_text()
    );
    let puts: Vec<Seen> = srv
        .seen()
        .into_iter()
        .filter(|s| s.method == "PUT")
        .collect();
    let paths: std::collections::BTreeSet<&str> = puts.iter().map(|s| s.path.as_str()).collect();
    assert!(
        paths
            .iter()
            .all(|p| *p == "/api/registries/10" || *p == "/api/registries/7"),
        "PUT to records not selected: {paths:?}"
    );
    assert!(
        paths.contains("/api/registries/10"),
        "{paths:?}\n{}",
        d.log_text()
    );
    w.add_secrets([KEY.to_string()]);
}

/// A socket_group member's `status`, run as that real uid.
fn member_status(w: &World) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=4343", "--regid=4343", "--groups=4545", "--"])
        .arg(BIN)
        .args(["status", "--json", "--socket"])
        .arg(w.socket())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .output()
        .expect("setpriv")
}

/// A list of 95,000 native-ECR records for a managed host (8 MB, under the 8 MiB bound): each
/// becomes a status row with a 400-byte hint, so one Portainer answer grows into a status of
/// ~60 MB that every `status` clones and serializes on the daemon's two worker threads. With a
/// socket_group member polling `status` (8 at once, the per-uid limit), the daemon's memory and
/// its refreshes must stay as they are without the Portainer.
#[test]
fn a_huge_list_neither_blows_memory_nor_stalls_the_daemon() {
    require_root!();
    require_openssl!();
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    let certs = Certs::new(&w.path("certs"));
    let leaf = certs.leaf("srv", "IP:127.0.0.1,DNS:localhost", None);
    let list: Vec<_> = (1..=95_000u32)
        .map(|id| serde_json::json!({"Id": id, "Type": 7, "Name": "n", "URL": H1}))
        .collect();
    let list = serde_json::Value::Array(list);
    assert!(list.to_string().len() < 8 * 1024 * 1024);
    let srv = Hostile::start(&leaf, portainer(list, |_| None));
    let target = w.path("d/config.json");
    w.config(&format!(
        "{}socket_group = \"4545\"\n[[target]]\npath = \"{}\"\n[[registry]]\nhost = \"{H1}\"\n{}",
        w.daemon_section(),
        target.display(),
        block(&w, &srv.url(), "p", KEY, &ca_line(&certs.ca))
    ));
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(LONG, || srv.count("GET", "/api/registries") >= 2));
    let out = w.client(&["status", "--json"]);
    let size = out.stdout.len();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pollers: Vec<_> = (0..8)
        .map(|_| {
            let stop = Arc::clone(&stop);
            let sock = w.socket();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = Command::new("setpriv")
                        .args(["--reuid=4343", "--regid=4343", "--groups=4545", "--"])
                        .arg(BIN)
                        .args(["status", "--json", "--socket"])
                        .arg(&sock)
                        .env_clear()
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            })
        })
        .collect();
    let mut worst = Duration::ZERO;
    let mut rss = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let out = w.client(&["refresh", H1]);
        assert_eq!(code(&out), 0, "{}", output_text(&out));
        worst = worst.max(t.elapsed());
        rss = rss.max(rss_kb(d.pid()));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in pollers {
        let _ = p.join();
    }
    let member = member_status(&w);
    assert!(
        serde_json::from_slice::<serde_json::Value>(&member.stdout).is_ok(),
        "the member's status does not work: {}",
        stderr(&member)
    );
    eprintln!("status {size} bytes, RSS {rss} kB, slowest refresh {worst:?}");
    assert!(
        size < 2 * 1024 * 1024,
        "status --json is {size} bytes for one Portainer"
    );
    assert!(rss < 250_000, "the daemon's RSS reached {rss} kB");
    assert!(worst < Duration::from_secs(3), "a refresh took {worst:?}");
    assert_fresh_entry(&w, &target, H1);
    w.add_secrets([KEY.to_string()]);
}

// ---------------------------------------------------------------------------------------------
// TLS verification.

/// Each certificate the configuration must refuse: nothing is sent, and the reason is TLS.
/// (`ca_file` alone: a wrong name, an expired or not yet valid certificate, another CA's, a
/// self-signed one; `pin_sha256` with `ca_file`: a pinned certificate that the CA did not sign,
/// and the CA's certificate that is not the pinned one; `pin_sha256` alone: another certificate
/// with the right name.)
#[test]
fn certificates_tls_must_refuse_are_refused() {
    require_openssl!();
    let w = World::new();
    let certs = Certs::new(&w.path("certs"));
    let other = Certs::new(&w.path("other"));
    let good = certs.leaf("good", "IP:127.0.0.1,DNS:localhost", None);
    let cases: Vec<(&str, Leaf, String)> = vec![
        (
            "wrong name",
            certs.leaf("name", "DNS:portainer.example,IP:127.0.0.2", None),
            ca_line(&certs.ca),
        ),
        (
            "expired",
            certs.leaf(
                "expired",
                "IP:127.0.0.1,DNS:localhost",
                Some(("20200101000000Z", "20200201000000Z")),
            ),
            ca_line(&certs.ca),
        ),
        (
            "not yet valid",
            certs.leaf(
                "future",
                "IP:127.0.0.1,DNS:localhost",
                Some(("20990101000000Z", "20990201000000Z")),
            ),
            ca_line(&certs.ca),
        ),
        (
            "another CA",
            other.leaf("other", "IP:127.0.0.1,DNS:localhost", None),
            ca_line(&certs.ca),
        ),
        (
            "self-signed",
            self_signed(&w.path("self"), "self"),
            ca_line(&certs.ca),
        ),
        (
            "pinned but not the CA's",
            other.leaf("pinned", "IP:127.0.0.1,DNS:localhost", None),
            String::new(),
        ),
        (
            "the CA's but not pinned",
            good.clone(),
            format!(
                "{}pin_sha256 = \"{}\"\n",
                ca_line(&certs.ca),
                pin_of(&other.leaf("pin2", "IP:127.0.0.1,DNS:localhost", None).cert)
            ),
        ),
        (
            "pinned alone, another certificate",
            self_signed(&w.path("self2"), "self2"),
            format!("pin_sha256 = \"{}\"\n", pin_of(&good.cert)),
        ),
    ];
    let mut blocks = Vec::new();
    let mut servers = Vec::new();
    for (i, (what, leaf, mut extra)) in cases.into_iter().enumerate() {
        if what == "pinned but not the CA's" {
            extra = format!(
                "{}pin_sha256 = \"{}\"\n",
                ca_line(&certs.ca),
                pin_of(&leaf.cert)
            );
        }
        let srv = Hostile::start(
            &leaf,
            portainer(serde_json::json!([record(1, CUSTOM, "e", H1, "x")]), |_| {
                None
            }),
        );
        blocks.push(block(&w, &srv.url(), &format!("t{i}"), KEY, &extra));
        servers.push((what, srv));
    }
    // The good one, through each kind of configuration, is accepted (the cases fail for their
    // reason, not for a broken set-up).
    let ok = Hostile::start(
        &good,
        portainer(serde_json::json!([record(1, CUSTOM, "e", H1, "x")]), |_| {
            None
        }),
    );
    blocks.push(block(&w, &ok.url(), "ok1", KEY, &ca_line(&certs.ca)));
    blocks.push(block(
        &w,
        &format!("https://localhost:{}", ok.addr.port()),
        "ok2",
        KEY,
        &format!(
            "{}pin_sha256 = \"{}\"\n",
            ca_line(&certs.ca),
            pin_of(&good.cert)
        ),
    ));
    config(&w, &blocks);
    let out = w.run(&["check"]);
    let text = output_text(&out);
    for (what, srv) in &servers {
        assert!(
            srv.seen().is_empty(),
            "{what}: a request crossed the handshake: {:?}\n{text}",
            srv.seen()
        );
        assert!(
            text.contains(&format!("portainer {}: ERROR: cannot reach", srv.url()))
                && text.contains("TLS"),
            "{what}: {text}"
        );
    }
    assert!(
        text.contains(&format!("portainer {}: ok", ok.url())),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "portainer https://localhost:{}: ok",
            ok.addr.port()
        )),
        "{text}"
    );
    w.add_secrets([KEY.to_string()]);
}

/// A rotated certificate (new CA, new leaf) is refused by a daemon that trusted the old CA, and by
/// one that pinned the old leaf, from the next connection on: the running daemon sends nothing.
#[test]
fn a_changed_certificate_is_refused_by_the_running_daemon() {
    let w = World::new();
    let fp = FakePortainer::start().unwrap();
    let a = fp.add_record("ecr", CUSTOM, H1, true, "AWS", "seed-rot-old");
    let ca = w.path("ca.pem");
    std::fs::write(&ca, fp.ca_pem()).unwrap();
    let both = format!("{}pin_sha256 = \"{}\"\n", ca_line(&ca), fp.cert_sha256());
    config(
        &w,
        &[
            block(&w, &fp.url(), "a", &fp.admin_key(), &ca_line(&ca)),
            block(
                &w,
                &format!("https://localhost:{}", fp.addr().port()),
                "b",
                &fp.admin_key(),
                &both,
            ),
        ],
    );
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(LONG, || {
        let p = w.fake.issued_passwords();
        fp.record(a).is_some_and(|r| p.contains(&r.password))
    }));
    // Both instances manage record `a`: wait until each has finished its first round (a PUT of
    // the first token still under way at the rotation was verified against the old certificate).
    assert!(
        wait_for(LONG, || (0..2).all(|i| {
            portainer_status(&w, i)["records"]
                .as_array()
                .is_some_and(|rs| {
                    rs.iter()
                        .any(|r| r["id"] == a && !r["last_update"].is_null())
                })
        })),
        "{}",
        w.status_json().unwrap_or_default()
    );
    fp.rotate_certificate();
    fp.reset_requests();
    // A new token after the rotation would be PUT if anything got through.
    let issued = w.fake.issued_passwords().len();
    assert!(wait_for(LONG, || {
        w.client(&["refresh", H1]);
        w.fake.issued_passwords().len() > issued
    }));
    assert!(
        wait_for(LONG, || (0..2).all(|i| {
            portainer_status(&w, i)["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("TLS"))
        })),
        "{}",
        w.status_json().unwrap_or_default()
    );
    let newest = w.fake.issued_passwords().last().cloned().unwrap();
    assert!(fp.requests().is_empty(), "{:?}", fp.requests());
    assert!(
        fp.record(a).is_some_and(|r| r.password != newest),
        "the token issued after the rotation reached Portainer: {:?}\n{}",
        w.fake.issued_passwords(),
        d.log_text()
    );
    drop(d);
    w.add_secrets(fp.secrets());
}

// ---------------------------------------------------------------------------------------------
// A local user and the files root reads.

/// Runs `script` (sh -e) as the real uid `uid`.
fn as_user(uid: u32, script: &str) {
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "--",
            "sh",
            "-ec",
            script,
        ])
        .output()
        .expect("setpriv");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A root-only secret a user would like the daemon to send (another instance's key, say).
const ROOT_SECRET: &str = "ptr_rootOnlySecretNeverToBeSent0123456789AB=";

/// Key and CA files a user planted or can change (a link in a sticky directory, a file in the
/// user's directory, a file group or others may read or write, a FIFO, a directory): each is
/// refused by `check` and by the daemon, which then sends nothing at all.
#[test]
fn key_and_ca_files_a_user_controls_are_refused() {
    require_root!();
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    let fp = FakePortainer::start().unwrap();
    fp.add_record("ecr", CUSTOM, H1, true, "AWS", "seed-files-old");
    let secret = w.path("root-only/secret.key");
    std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
    chmod(secret.parent().unwrap(), 0o700);
    std::fs::write(&secret, format!("{ROOT_SECRET}\n")).unwrap();
    chmod(&secret, 0o600);
    let good_ca = w.path("root-only/ca.pem");
    std::fs::write(&good_ca, fp.ca_pem()).unwrap();
    let sticky = w.path("sticky");
    std::fs::create_dir(&sticky).unwrap();
    chmod(&sticky, 0o1777);
    let home = w.path("home");
    std::fs::create_dir(&home).unwrap();
    chown(&home, USER, USER);
    let s = sticky.display();
    let h = home.display();
    let r = secret.display();
    // The user's CA: one it could sign anything with.
    as_user(
        USER,
        &format!(
            "ln -s {r} {s}/key-link\nmkfifo {s}/key-fifo\nmkdir {s}/key-dir\nprintf 'ptr_theUsersOwnKey\\n' > {s}/key-own\nchmod 600 {s}/key-own\nln -s {} {s}/ca-link\nmkdir {h}/d",
            good_ca.display(),
        ),
    );
    std::fs::write(home.join("ca.pem"), fp.ca_pem()).unwrap();
    chown(&home.join("ca.pem"), USER, USER);
    // Root's own files, in the user's directory: the user can swap them.
    std::fs::write(home.join("d/key"), format!("{ROOT_SECRET}\n")).unwrap();
    chmod(&home.join("d/key"), 0o600);
    std::fs::copy(&good_ca, home.join("d/ca.pem")).unwrap();
    // Root's files others may read or write.
    let loose = |name: &str, mode: u32, gid: u32| {
        let p = w.path(&format!("root-only/{name}"));
        std::fs::write(&p, format!("{ROOT_SECRET}\n")).unwrap();
        chmod(&p, mode);
        chown(&p, 0, gid);
        p
    };
    let mut cases: Vec<(String, String, &str)> = vec![
        (
            format!("{s}/key-link"),
            good_ca.display().to_string(),
            "symbolic link",
        ),
        (
            format!("{s}/key-fifo"),
            good_ca.display().to_string(),
            "not a regular file",
        ),
        (
            format!("{s}/key-dir"),
            good_ca.display().to_string(),
            "not a regular file",
        ),
        (
            format!("{s}/key-own"),
            good_ca.display().to_string(),
            "belongs to",
        ),
        (
            format!("{h}/d/key"),
            good_ca.display().to_string(),
            "can be changed by",
        ),
        (r.to_string(), format!("{s}/ca-link"), "symbolic link"),
        (r.to_string(), format!("{h}/ca.pem"), "can be changed by"),
        (r.to_string(), format!("{h}/d/ca.pem"), "can be changed by"),
    ];
    for (name, mode, gid, why) in [
        ("g-read", 0o640, 4343, "group or others may read"),
        ("o-read", 0o604, 0, "group or others may read"),
        ("g-write", 0o620, 4343, "writable by group or others"),
        ("o-write", 0o602, 0, "writable by group or others"),
    ] {
        cases.push((
            loose(name, mode, gid).display().to_string(),
            good_ca.display().to_string(),
            why,
        ));
    }
    let ca_loose = w.path("root-only/ca-loose.pem");
    std::fs::write(&ca_loose, fp.ca_pem()).unwrap();
    chmod(&ca_loose, 0o664);
    chown(&ca_loose, 0, 4343);
    cases.push((
        r.to_string(),
        ca_loose.display().to_string(),
        "writable by group or others",
    ));
    for (key, ca, why) in &cases {
        let b = format!(
            "\n[[portainer]]\nurl = \"{}\"\napi_key_file = \"{key}\"\nca_file = \"{ca}\"\ncheck_every = \"1s\"\n",
            fp.url()
        );
        config(&w, &[b]);
        let out = w.run(&["check"]);
        let text = output_text(&out);
        assert_eq!(code(&out), 2, "{key} / {ca}: {text}");
        // A key in a sticky world-writable directory is refused for the directory already
        // (a secret's own directory must be root's alone), before its own shape is looked at.
        let sticky_key = key.starts_with(&format!("{s}/"))
            && text.contains("can be changed by others (owner root, mode 1777)");
        assert!(
            text.contains(why) || sticky_key,
            "{key} / {ca}: want {why:?}: {text}"
        );
        assert!(
            fp.requests().is_empty(),
            "{key} / {ca}: sent {:?}",
            fp.requests()
        );
    }
    // The running daemon, with all of them at once, sends nothing either.
    let blocks: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(i, (key, ca, _))| {
            format!(
                "\n[[portainer]]\nurl = \"https://127.0.0.1:{}/p{i}\"\napi_key_file = \"{key}\"\nca_file = \"{ca}\"\ncheck_every = \"1s\"\n",
                fp.addr().port()
            )
        })
        .collect();
    config(&w, &blocks);
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(LONG, || w.status_json().is_some_and(|s| {
        s["portainer"].as_array().is_some_and(|ps| {
            ps.len() == cases.len() && ps.iter().all(|p| p["last_error"].is_string())
        })
    })));
    assert!(fp.requests().is_empty(), "sent {:?}", fp.requests());
    drop(d);
    w.add_secrets(fp.secrets());
    w.add_secrets([ROOT_SECRET.to_string()]);
}

/// Reads a counter file the attacker writes (0 when absent).
fn counter(p: &Path) -> u64 {
    std::fs::read_to_string(p)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// Portainer restarts, and a local user (a real non-root uid) races to take its port meanwhile,
/// answering TLS with a certificate of its own for the right names. Many rounds, with `ca_file`
/// and with `pin_sha256`: the user's server gets connections but never a byte of a request (no
/// key, no password), and the daemon is back on the real one each time.
#[test]
fn a_user_taking_portainers_port_while_it_restarts_gets_nothing() {
    require_root!();
    require_openssl!();
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    let certs = Certs::new(&w.path("certs"));
    let good = certs.leaf("good", "IP:127.0.0.1,DNS:localhost", None);
    let lair = w.path("lair");
    let own = self_signed(&lair, "own");
    for p in [&lair, &own.cert, &own.key] {
        chown(p, USER, USER);
    }
    let handler = || {
        portainer(
            serde_json::json!([record(1, CUSTOM, "ecr", H1, "seed-squat-old")]),
            |_| None,
        )
    };
    let mut srv = Hostile::start(&good, handler());
    let addr = srv.addr;
    let port = addr.port();
    config(
        &w,
        &[
            block(&w, &srv.url(), "a", KEY, &ca_line(&certs.ca)),
            block(
                &w,
                &format!("https://localhost:{port}"),
                "b",
                KEY,
                &format!("pin_sha256 = \"{}\"\n", pin_of(&good.cert)),
            ),
        ],
    );
    // The attacker: while `hold` exists it tries to bind the port without pause; once it has
    // it, it serves TLS and logs whatever a client sends after the handshake.
    let racer = Attacker::spawn(
        USER,
        &lair,
        &format!(
            r#"
import os, socket, ssl, time
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain('own.pem', 'own.key')
def put(name, n):
    open(name + '.tmp', 'w').write(str(n)); os.rename(name + '.tmp', name)
won = conns = 0
while True:
    if not os.path.exists('hold'):
        time.sleep(0.005); continue
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(('127.0.0.1', {port}))
    except OSError:
        s.close(); continue
    s.listen(64); s.settimeout(0.02)
    won += 1; put('won', won)
    while os.path.exists('hold'):
        try:
            c, _ = s.accept()
        except socket.timeout:
            continue
        conns += 1; put('conns', conns)
        try:
            c.settimeout(5)
            t = ctx.wrap_socket(c, server_side=True)
            data = t.recv(65536)
            with open('plain', 'ab') as f: f.write(data or b'<empty>')
        except Exception as e:
            pass
        finally:
            c.close()
    s.close(); put('released', won)
"#
        ),
    );
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    let lists = |srv: &Hostile| srv.count("GET", "/api/registries");
    assert!(wait_for(LONG, || lists(&srv) >= 2), "{}", d.log_text());
    let rounds = 12;
    for round in 1..=rounds {
        std::fs::write(lair.join("hold"), "").unwrap();
        // Portainer goes down: the attacker takes the port at once.
        drop(srv);
        assert!(
            wait_for(LONG, || counter(&lair.join("won")) >= round),
            "round {round}: the attacker never got the port"
        );
        let conns = counter(&lair.join("conns"));
        assert!(
            wait_for(LONG, || counter(&lair.join("conns")) >= conns + 2),
            "round {round}: the daemon never came to the attacker:\n{}",
            d.log_text()
        );
        std::fs::remove_file(lair.join("hold")).unwrap();
        assert!(wait_for(LONG, || counter(&lair.join("released")) >= round));
        // Portainer is back on its port; the daemon finds it again.
        srv = Hostile::start_on(addr, &good, handler());
        assert!(
            wait_for(LONG, || lists(&srv) >= 2),
            "round {round}: the daemon did not come back:\n{}",
            d.log_text()
        );
    }
    drop(racer);
    let plain = std::fs::read(lair.join("plain")).unwrap_or_default();
    assert!(
        plain.is_empty(),
        "the attacker read {} bytes: {}",
        plain.len(),
        String::from_utf8_lossy(&plain)
    );
    eprintln!(
        "{} rounds, the attacker was connected to {} times",
        rounds,
        counter(&lair.join("conns"))
    );
    drop(d);
    w.add_secrets([KEY.to_string()]);
}

/// In a sticky world-writable directory (like /tmp) where root's key file is not (yet) there,
/// a user swaps, without pause, a link to a root-only secret, its own key file and a FIFO into
/// the key's name while `check` and the daemon read it, many times: nothing is ever sent.
#[test]
fn a_key_file_swapped_in_a_sticky_directory_is_never_used() {
    require_root!();
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    let fp = FakePortainer::start().unwrap();
    fp.add_record("ecr", CUSTOM, H1, true, "AWS", "seed-swap-old");
    let secret = w.path("root-only/secret.key");
    std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
    chmod(secret.parent().unwrap(), 0o711);
    std::fs::write(&secret, format!("{ROOT_SECRET}\n")).unwrap();
    chmod(&secret, 0o600);
    let ca = w.path("ca.pem");
    std::fs::write(&ca, fp.ca_pem()).unwrap();
    let sticky = w.path("sticky");
    std::fs::create_dir(&sticky).unwrap();
    chmod(&sticky, 0o1777);
    let key = sticky.join("portainer.key");
    config(
        &w,
        &[format!(
            "\n[[portainer]]\nurl = \"{}\"\napi_key_file = \"{}\"\n{}check_every = \"1s\"\n",
            fp.url(),
            key.display(),
            ca_line(&ca)
        )],
    );
    let racer = Attacker::spawn(
        USER,
        &sticky,
        &format!(
            r#"
import os
n = 0
while True:
    n += 1
    for kind in ('link', 'own', 'fifo', 'hard'):
        p = 'p-%s' % kind
        try:
            if kind == 'link':
                os.symlink('{secret}', p)
            elif kind == 'own':
                with open(p, 'w') as f: f.write('ptr_theUsersOwnKey\n')
                os.chmod(p, 0o600)
            elif kind == 'fifo':
                os.mkfifo(p, 0o600)
            else:
                if not os.path.exists('own-orig'):
                    with open('own-orig', 'w') as f: f.write('ptr_theUsersOwnKey\n')
                os.link('own-orig', p)
            os.rename(p, 'portainer.key')
        except OSError:
            pass
    if n % 50 == 0:
        try: os.unlink('portainer.key')
        except OSError: pass
    with open('rounds.tmp', 'w') as f: f.write(str(n))
    os.rename('rounds.tmp', 'rounds')
"#,
            secret = secret.display()
        ),
    );
    assert!(wait_for(LONG, || counter(&sticky.join("rounds")) > 10));
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    let mut refused = 0;
    for _ in 0..30 {
        let out = w.run(&["check"]);
        let text = output_text(&out);
        assert_ne!(code(&out), 0, "{text}");
        if text.contains("api_key_file") {
            refused += 1;
        }
        assert!(fp.requests().is_empty(), "sent {:?}\n{text}", fp.requests());
    }
    let swaps = counter(&sticky.join("rounds"));
    drop(racer);
    assert!(refused > 0);
    assert!(fp.requests().is_empty(), "sent {:?}", fp.requests());
    assert!(
        portainer_status(&w, 0)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("api_key_file")),
        "{}",
        portainer_status(&w, 0)
    );
    eprintln!("{swaps} swap rounds, 30 checks");
    drop(d);
    w.add_secrets(fp.secrets());
    w.add_secrets([ROOT_SECRET.to_string(), "ptr_theUsersOwnKey".to_string()]);
}

// ---------------------------------------------------------------------------------------------
// `once` and a Portainer that takes its time.

/// `once` writes the files, then waits on each Portainer (up to 30 s a request, a round of
/// (2 + records) requests, no bound on the whole), and only then records in its state what it
/// wrote. Stopped meanwhile (a cron `timeout`, systemd's TimeoutStartSec), it has written the
/// files but not the state, so the entries it wrote are not known as its own (removed registries
/// are then never cleaned up from them).
#[test]
fn once_records_what_it_wrote_before_it_waits_on_portainer() {
    require_openssl!();
    let w = World::new();
    let certs = Certs::new(&w.path("certs"));
    let leaf = certs.leaf("srv", "IP:127.0.0.1,DNS:localhost", None);
    let srv = Hostile::start(&leaf, |_| Reply::Silent);
    // Without a Portainer, `once` records its entries in <state_dir>/state.json.
    let target = config(&w, &[]);
    let out = w.run(&["once"]);
    assert_eq!(code(&out), 0, "{}", output_text(&out));
    let state = w.path("state/state.json");
    assert!(std::fs::read_to_string(&state).is_ok_and(|s| s.contains(H1)));
    std::fs::remove_file(&state).unwrap();
    std::fs::remove_file(&target).unwrap();
    config(&w, &[block(&w, &srv.url(), "p", KEY, &ca_line(&certs.ca))]);
    let mut c = w.cmd();
    c.arg("--config")
        .arg(w.path("config.toml"))
        .arg("once")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut once = c.spawn().unwrap();
    assert!(
        wait_for(LONG, || !srv.seen().is_empty()
            && std::fs::read(&target).is_ok_and(|b| !b.is_empty())),
        "once never reached Portainer"
    );
    // What a `timeout 20 ecr-refresherd once` does when the time is up.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(once.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = once.wait();
    assert_fresh_entry(&w, &target, H1);
    let state = std::fs::read_to_string(&state).unwrap_or_default();
    assert!(
        state.contains(&target.display().to_string()) && state.contains(H1),
        "the entries once wrote are not in its state: {state:?}"
    );
    w.add_secrets([KEY.to_string()]);
}

/// Even at `RUST_LOG=trace` (hyper, rustls and every module of ours), no API key and no password
/// reaches the log of the daemon, `once` or `check`.
#[test]
fn no_secret_in_trace_logs() {
    let w = World::new();
    let fp = FakePortainer::start().unwrap();
    let a = fp.add_record("ecr", CUSTOM, H1, true, "AWS", "seed-trace-old");
    fp.add_record("other", 6, "docker.io", true, "me", "seed-trace-hub");
    let ca = w.path("ca.pem");
    std::fs::write(&ca, fp.ca_pem()).unwrap();
    config(
        &w,
        &[block(&w, &fp.url(), "p", &fp.admin_key(), &ca_line(&ca))],
    );
    let d = w.spawn_daemon(&[("RUST_LOG", "trace")]);
    d.wait_ready();
    assert!(wait_for(LONG, || {
        let p = w.fake.issued_passwords();
        fp.record(a).is_some_and(|r| p.contains(&r.password))
    }));
    let before = fp.requests().len();
    assert!(wait_for(LONG, || fp.requests().len() >= before + 4));
    drop(d);
    for cmd in ["once", "check"] {
        let mut c = w.cmd();
        c.env("RUST_LOG", "trace")
            .arg("--config")
            .arg(w.path("config.toml"))
            .arg(cmd);
        let out = w.capture(c.output().unwrap());
        assert!(output_text(&out).contains("portainer"), "{cmd}");
    }
    w.add_secrets(fp.secrets());
    w.assert_no_secrets();
}

/// A list that flaps (1,000 records of ours (the most kept fresh), then none, then all again, at every check): the
/// daemon writes a line to the log for every record at every flap; the log (the journal) must
/// not grow with the records a server chooses to list.
#[test]
fn a_flapping_list_does_not_flood_the_log() {
    require_openssl!();
    let w = World::new();
    let certs = Certs::new(&w.path("certs"));
    let leaf = certs.leaf("srv", "IP:127.0.0.1,DNS:localhost", None);
    let list: Vec<_> = (1..=1000u32)
        .map(|id| {
            serde_json::json!({"Id": id, "Type": CUSTOM, "Name": format!("r{id}"), "URL": H1,
                "Authentication": true, "Username": "AWS"})
        })
        .collect();
    let list = serde_json::Value::Array(list).to_string();
    let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let puts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (n2, puts2) = (Arc::clone(&n), Arc::clone(&puts));
    let srv = Hostile::start(&leaf, move |r| {
        use std::sync::atomic::Ordering::Relaxed;
        match (r.method.as_str(), r.path.as_str()) {
            ("GET", "/api/system/status") => version("2.21.4"),
            // Every record is listed until each got its PUT; then every other list is empty.
            ("GET", _) => {
                let i = n2.fetch_add(1, Relaxed);
                if puts2.load(Relaxed) < 1000 || i % 2 == 0 {
                    Reply::Json(200, list.clone())
                } else {
                    Reply::Json(200, "[]".into())
                }
            }
            _ => {
                puts2.fetch_add(1, Relaxed);
                let id: u32 = r
                    .path
                    .rsplit('/')
                    .next()
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(0);
                Reply::Json(
                    200,
                    serde_json::json!({"Id": id, "Type": CUSTOM, "Name": "x", "URL": H1,
                        "Authentication": true, "Username": "AWS"})
                    .to_string(),
                )
            }
        }
    });
    config(&w, &[block(&w, &srv.url(), "p", KEY, &ca_line(&certs.ca))]);
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(
        wait_for(Duration::from_secs(180), || puts
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1000),
        "{}",
        d.log_text()
    );
    let lists = srv.count("GET", "/api/registries");
    assert!(wait_for(Duration::from_secs(180), || srv
        .count("GET", "/api/registries")
        >= lists + 4));
    let log = d.log_text();
    let lines = log.lines().filter(|l| l.contains("vanished")).count();
    eprintln!(
        "{lines} log lines about vanished records, {} bytes of log",
        log.len()
    );
    assert!(
        lines <= 50,
        "{lines} log lines about vanished records after 2 flaps ({} bytes of log)",
        log.len()
    );
    drop(d);
    w.add_secrets([KEY.to_string()]);
}
