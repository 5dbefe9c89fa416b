//! `ecr-refresherd doctor IMAGE`: walks a pull from ECR step by step, says where it fails and what fixes it.
//!
//! Read only: it loads the config, calls STS and ECR with the registry's credentials, talks to
//! the registry and its layer storage like docker does, and reads (never writes) the auth files.
//! Every step is bounded; the whole run ends within [`TOTAL`]. No token, password or presigned
//! URL is printed: the report is scrubbed of every secret it handled before it is shown.

pub(crate) mod consumers;
pub(crate) mod explain;
pub(crate) mod json;
pub(crate) mod manifest;
pub(crate) mod probe;
pub(crate) mod reference;
pub(crate) mod report;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::cli::Cli;
use crate::config::{RegistrySettings, Settings};
use crate::ecr::registry::Registry;
use crate::ecr::token::{AwsTokenSource, GroupKey, Token, TokenSource};
use crate::startup::Source;
use crate::startup::exit;
use crate::targets::authfile::Format;
use crate::targets::state::State;
use consumers::{File, Use};
use explain::{Finding, Place};
use reference::Reference;
use report::Report;

/// The whole run ends by then, whatever hangs.
pub const TOTAL: Duration = Duration::from_secs(14);
/// Each AWS call (STS, ECR), SDK retries included.
const AWS_STEP: Duration = Duration::from_secs(6);
const DNS_STEP: Duration = Duration::from_secs(3);
const TCP_STEP: Duration = Duration::from_secs(3);
const TLS_STEP: Duration = Duration::from_secs(3);
const HTTP_STEP: Duration = Duration::from_secs(4);
/// A manifest is at most this large (distribution's own limit).
const MAX_MANIFEST: usize = 4 * 1024 * 1024;
/// Error bodies and the first bytes of a layer.
const MAX_SMALL: usize = 64 * 1024;
/// Files checked live against the registry at most.
const MAX_FILES: usize = 16;
/// No piece of a secret this long is shown: a secret a server cut short or split (between two
/// headers, say), or that [`explain::quote`] cut, is redacted piece by piece, not only whole.
const SECRET_PIECE: usize = 16;

/// docker's `Accept` for a pull: both manifest formats and both list formats.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// The options of `doctor`.
pub struct Options<'a> {
    /// The image reference, as given to `docker pull`.
    pub image: &'a str,
    /// Look at this user's files instead of the configured targets.
    pub user: Option<&'a str>,
    /// Print JSON instead of lines.
    pub json: bool,
}

/// Runs `doctor` and prints the report: 0 when the pull would work, 1 when a step fails, 2 on
/// a bad reference, user or config.
pub async fn doctor(cli: &Cli, o: Options<'_>) -> u8 {
    // No logging: the report is the output (and the SDK's warnings would interleave with it).
    let r = match reference::parse(o.image) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "ecr-refresherd doctor: {}",
                crate::escape::shown(&e.to_string())
            );
            return exit::CONFIG;
        }
    };
    let settings = match Source::of(cli.config.as_deref()).load().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "ecr-refresherd doctor: {}",
                crate::escape::shown_lines(&e.to_string())
            );
            return exit::CONFIG;
        }
    };
    let user = match o.user.map(lookup_user).transpose() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("ecr-refresherd doctor: {}", crate::escape::shown(&e));
            return exit::CONFIG;
        }
    };
    let mut d = Doctor {
        report: Report::new(&r.to_string()),
        secrets: Vec::new(),
        urls: Vec::new(),
        deadline: Instant::now() + TOTAL,
        tls: match tls_config() {
            Ok(t) => t,
            Err(e) => {
                eprintln!("ecr-refresherd doctor: {e}");
                return exit::CONFIG;
            }
        },
    };
    d.run(&settings, &r, user.as_ref(), &cli.run_dir).await;
    let secrets = std::mem::take(&mut d.secrets);
    let urls = std::mem::take(&mut d.urls);
    let report = scrub(d.report, &secrets, &urls);
    if o.json {
        // serde_json leaves C1, bidi controls and line separators raw: they would act on the
        // terminal (as `status --json` knows).
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{}", crate::escape::json(&s)),
            Err(e) => eprintln!("ecr-refresherd doctor: {e}"),
        }
    } else {
        // Each field escaped on its own line: a line feed in a server's text is shown, never kept.
        print!("{}", report.text());
    }
    if report.ok { exit::OK } else { exit::FAILED }
}

/// A user named by `--user`: name, uid and home.
struct User {
    name: String,
    uid: u32,
    home: std::path::PathBuf,
}

fn lookup_user(name: &str) -> Result<User, String> {
    let found = match name.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
        Err(_) => nix::unistd::User::from_name(name),
    };
    match found {
        Ok(Some(u)) => Ok(User {
            name: u.name,
            uid: u.uid.as_raw(),
            home: u.dir,
        }),
        Ok(None) => Err(format!("--user {name:?}: no such user")),
        Err(e) => Err(format!("--user {name:?}: cannot look it up: {e}")),
    }
}

/// TLS as docker does it: the system's roots (`SSL_CERT_FILE` and `SSL_CERT_DIR` honoured), always verified.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err("no trusted root certificates on this system (install ca-certificates, or set SSL_CERT_FILE)".into());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Every secret handled is replaced before anything is shown (a server could echo one back):
/// each whole, and any piece of [`SECRET_PIECE`] bytes of one; `urls` (presigned URLs, whose
/// host and path are shown) only whole.
fn scrub(mut report: Report, secrets: &[String], urls: &[String]) -> Report {
    let mut r = crate::redact::Redactor::new(SECRET_PIECE);
    // Shorter ones are words, not secrets: replacing them would garble the report.
    for s in secrets.iter().filter(|s| s.len() >= 8) {
        r.add(s.as_str());
    }
    for u in urls.iter().filter(|s| s.len() >= 8) {
        r.add_whole(u.as_str());
    }
    for step in &mut report.steps {
        step.detail = r.apply(&step.detail);
        if let Some(f) = &mut step.fix {
            *f = r.apply(f);
        }
    }
    report
}

/// The values of a URL's query (each also percent-decoded): a presigned URL's signature and
/// session token are bearer secrets a storage could echo one by one.
fn query_values(query: &str) -> Vec<String> {
    let mut out = Vec::new();
    for kv in query.split('&') {
        let v = kv.split_once('=').map_or(kv, |(_, v)| v);
        let decoded = percent_decoded(v);
        if decoded != v {
            out.push(decoded);
        }
        out.push(v.to_string());
    }
    out
}

/// `%XX` escapes (and `+`) decoded; invalid escapes and UTF-8 left as they are.
fn percent_decoded(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| v.to_string())
}

/// The registry a host belongs to in the config: its host or one of its aliases.
fn configured<'a>(settings: &'a Settings, host: &str) -> Option<&'a RegistrySettings> {
    settings
        .registries
        .iter()
        .find(|r| r.names().any(|n| n == host))
}

/// What the registry step found, for the layer and consumer steps.
struct Reached {
    addrs: Vec<std::net::SocketAddr>,
    name: String,
}

struct Doctor {
    report: Report,
    /// Every secret handled: tokens, passwords, file credentials, presigned query values.
    secrets: Vec<String>,
    /// Presigned URLs: redacted whole only (their host is shown).
    urls: Vec<String>,
    deadline: Instant,
    tls: Arc<rustls::ClientConfig>,
}

impl Doctor {
    fn left(&self, step: Duration) -> Duration {
        step.min(self.deadline.saturating_duration_since(Instant::now()))
    }

    fn out_of_time(&self) -> bool {
        Instant::now() >= self.deadline
    }

    async fn run(
        &mut self,
        settings: &Settings,
        r: &Reference,
        user: Option<&User>,
        run_dir: &std::path::Path,
    ) {
        // 1. The image and the config.
        let registry = configured(settings, &r.host);
        let (key, ecr_host) = match registry {
            Some(reg) => {
                let alias = reg.host != r.host;
                self.report.ok(
                    "image",
                    format!(
                        "{r}: {} {} (token group: {})",
                        if alias {
                            "an alias of"
                        } else {
                            "the configured registry"
                        },
                        reg.host,
                        GroupKey::of(reg)
                    ),
                );
                (GroupKey::of(reg), reg.host.clone())
            }
            None => match Registry::parse(&r.host) {
                Ok(reg) => {
                    let key = GroupKey::new(&reg, &Default::default(), None);
                    self.report.warn(
                        "image",
                        format!("{r}: an ECR registry the config does not manage; checking it with the default credentials"),
                        Some(format!("add [[registry]] host = \"{}\" to the config so the daemon keeps it fresh", r.host)),
                    );
                    (key, r.host.clone())
                }
                Err(_) => {
                    self.report.fail(
                        "image",
                        format!("{r}: {} is not an ECR registry, and no [[registry]] has it as an alias", r.host),
                        "doctor diagnoses pulls from ECR: give an ECR image, or add this host to the aliases of the [[registry]] it mirrors",
                    );
                    return;
                }
            },
        };
        let alias = registry.is_some_and(|reg| reg.host != r.host);
        let (account, region) = match Registry::parse(&ecr_host) {
            Ok(Registry::Private {
                account, region, ..
            }) => (Some(account), Some(region)),
            _ => (None, None),
        };
        // 2-3. The principal and the token, beside DNS, TCP and TLS to the registry.
        let source = AwsTokenSource::new(1);
        let aws_limit = self.left(AWS_STEP);
        let aws = async {
            let identity = tokio::time::timeout(aws_limit, source.caller_identity(&key));
            let token = tokio::time::timeout(aws_limit, source.fetch(&key));
            tokio::join!(identity, token)
        };
        let (name, port) = probe::host_port(&r.host);
        // The network steps run beside the AWS calls, into a report of their own, shown after.
        let before = std::mem::replace(&mut self.report, Report::new(""));
        let net_place = Place {
            host: &r.host,
            repository: &r.repository,
            reference: r.manifest_ref(),
            region: region.as_deref(),
            account: account.as_deref(),
            principal: None,
            alias,
        };
        let network = self.reach(&name, port, &net_place);
        let ((identity, token), reached) = tokio::join!(aws, network);
        let network_steps = std::mem::replace(&mut self.report, before);
        let principal = match identity {
            Ok(Ok(arn)) => {
                self.report
                    .ok("identity", format!("calls are made as {arn}"));
                Some(arn)
            }
            Ok(Err(e)) => {
                self.report.warn(
                    "identity",
                    format!("STS GetCallerIdentity failed: {e}"),
                    Some("the token step below tells whether ECR works; STS needs sts:GetCallerIdentity (always allowed) and a reachable STS endpoint".into()),
                );
                None
            }
            Err(_) => {
                self.report.warn(
                    "identity",
                    format!("STS did not answer within {}", secs(AWS_STEP)),
                    None,
                );
                None
            }
        };
        let place = Place {
            host: &r.host,
            repository: &r.repository,
            reference: r.manifest_ref(),
            region: region.as_deref(),
            account: account.as_deref(),
            principal: principal.as_deref(),
            alias,
        };
        let token = match token {
            Ok(Ok(t)) => {
                self.secrets.push(t.auth().to_string());
                if let Some(p) = t.password() {
                    self.secrets.push(p);
                }
                self.report.ok(
                    "token",
                    format!(
                        "GetAuthorizationToken ({}): valid until {}",
                        key,
                        crate::status::rfc3339(t.expires_at)
                    ),
                );
                Some(t)
            }
            Ok(Err(e)) => {
                let mut said = e.to_string();
                // "No credentials" hides why the instance role gave none: ask IMDS.
                if said.contains("no AWS credentials") && key.credentials.profile.is_none() {
                    let why = tokio::time::timeout(
                        self.left(TCP_STEP),
                        crate::ecr::token::instance_role_problem(),
                    )
                    .await
                    .unwrap_or_else(|_| "IMDS did not answer in time".into());
                    said = format!("{said}; {why}");
                }
                let f = explain::token(&said, &place);
                self.report.fail("token", f.detail, f.fix);
                None
            }
            Err(_) => {
                let f = explain::token(
                    &format!(
                        "timeout: GetAuthorizationToken did not answer within {}",
                        secs(AWS_STEP)
                    ),
                    &place,
                );
                self.report.fail("token", f.detail, f.fix);
                None
            }
        };
        self.report.absorb(network_steps);
        // 4-5. The manifest and one layer, with the token.
        match (&reached, &token) {
            (Some(at), Some(t)) => self.manifest_and_layer(at, r, t, &place, &key).await,
            (None, _) => {
                self.report
                    .skip("manifest", "the registry is not reachable");
                self.report.skip("layer", "the registry is not reachable");
            }
            (_, None) => {
                self.report.skip("manifest", "no token");
                self.report.skip("layer", "no token");
            }
        }
        // 6. What each consumer would send.
        let files = match user {
            Some(u) => consumers::user_files(&u.name, u.uid, &u.home, run_dir),
            None => consumers::target_files(settings, &r.host),
        };
        let state = State::peek(&settings.daemon.state_dir);
        self.consumers(
            &files,
            r,
            user.is_some(),
            reached.as_ref(),
            state.as_ref(),
            &place,
        )
        .await;
    }

    /// DNS, TCP and TLS to `name:port`, a step each.
    async fn reach(&mut self, name: &str, port: u16, place: &Place<'_>) -> Option<Reached> {
        let (addrs, stream) = match self
            .connect(name, port, ["dns", "tcp", "tls"], place, false)
            .await
        {
            Some(x) => x,
            None => return None,
        };
        drop(stream);
        Some(Reached {
            addrs,
            name: name.to_string(),
        })
    }

    /// Resolves, connects and shakes hands, a step each; on failure the step says why (for the
    /// registry, or for the layer storage when `storage` names the image's place).
    async fn connect(
        &mut self,
        name: &str,
        port: u16,
        [dns, tcp, tls]: [&'static str; 3],
        place: &Place<'_>,
        storage: bool,
    ) -> Option<(
        Vec<std::net::SocketAddr>,
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    )> {
        let fail = |report: &mut Report, step: &'static str, e: probe::NetError| {
            let f = if storage {
                explain::storage_net(e.kind, &e.what, name, place)
            } else {
                explain::registry_net(e.kind, &e.what, place)
            };
            report.fail(step, f.detail, f.fix);
        };
        let addrs = match probe::resolve(name, port, self.left(DNS_STEP)).await {
            Ok(a) => a,
            Err(e) => {
                fail(&mut self.report, dns, e);
                if tcp != dns {
                    self.report.skip(tcp, "the name does not resolve");
                    self.report.skip(tls, "the name does not resolve");
                }
                return None;
            }
        };
        let first = addrs[0].ip();
        let shown: Vec<String> = addrs.iter().take(4).map(|a| a.ip().to_string()).collect();
        self.report.ok(
            dns,
            format!(
                "{name} -> {} ({})",
                shown.join(", "),
                probe::address_kind(first)
            ),
        );
        let (tcp_stream, addr) = match probe::connect(&addrs, self.left(TCP_STEP)).await {
            Ok(x) => x,
            Err(e) => {
                fail(&mut self.report, tcp, e);
                if tls != tcp {
                    self.report.skip(tls, "no TCP connection");
                }
                return None;
            }
        };
        self.report.ok(tcp, format!("connected to {addr}"));
        match probe::handshake(tcp_stream, name, &self.tls, self.left(TLS_STEP)).await {
            Ok(s) => {
                let version = s
                    .get_ref()
                    .1
                    .protocol_version()
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default();
                self.report.ok(
                    tls,
                    format!(
                        "certificate trusted for {name} ({})",
                        version.replace('_', ".")
                    ),
                );
                Some((addrs, s))
            }
            Err(e) => {
                fail(&mut self.report, tls, e);
                None
            }
        }
    }

    /// A fresh TLS connection to the registry for one request.
    async fn stream(
        &self,
        at: &Reached,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
        let (tcp, _) = probe::connect(&at.addrs, self.left(TCP_STEP))
            .await
            .map_err(|e| e.what)?;
        probe::handshake(tcp, &at.name, &self.tls, self.left(TLS_STEP))
            .await
            .map_err(|e| e.what)
    }

    /// GET on the registry with the token; `None` after a step was reported failed.
    async fn get(
        &self,
        at: &Reached,
        authority: &str,
        path: &str,
        auth: &str,
        accept: Option<&str>,
        max: usize,
    ) -> Result<probe::Answer, String> {
        let stream = self.stream(at).await?;
        let mut headers = vec![("authorization", format!("Basic {auth}"))];
        if let Some(a) = accept {
            headers.push(("accept", a.to_string()));
        }
        probe::request(
            stream,
            "GET",
            authority,
            path,
            &headers,
            max,
            self.left(HTTP_STEP),
        )
        .await
    }

    /// The manifest (and, for an index, this machine's platform's manifest), then one layer.
    async fn manifest_and_layer(
        &mut self,
        at: &Reached,
        r: &Reference,
        token: &Token,
        place: &Place<'_>,
        key: &GroupKey,
    ) {
        let authority = r.host.clone();
        let path = format!("/v2/{}/manifests/{}", r.repository, r.manifest_ref());
        let answer = match self
            .get(
                at,
                &authority,
                &path,
                token.auth(),
                Some(ACCEPT),
                MAX_MANIFEST,
            )
            .await
        {
            Ok(a) => a,
            Err(e) => {
                self.report.fail("manifest", format!("GET {path}: {e}"), "the registry accepted the connection but did not answer: a proxy or firewall in the way? retry");
                self.report.skip("layer", "no manifest");
                return;
            }
        };
        if answer.status == 404 {
            self.not_found(key, r, place, &answer.body).await;
            self.report.skip("layer", "no manifest");
            return;
        }
        if answer.status != 200 {
            let Finding { detail, fix } = explain::manifest(answer.status, &answer.body, place);
            self.report.fail("manifest", detail, fix);
            self.report.skip("layer", "no manifest");
            return;
        }
        // Only the fields needed, not a `Value` of the whole body (up to 4 MiB of anything).
        let mut manifest = manifest::parse(&answer.body, this_arch());
        let media = answer
            .content_type
            .clone()
            .or_else(|| manifest.media_type.take())
            .unwrap_or_else(|| "no media type".into());
        let mut note = format!(
            "{} ({}{})",
            explain::quote(&media),
            answer.body.len(),
            answer
                .digest
                .as_deref()
                .map(|d| format!(" bytes, {}", explain::quote(d)))
                .unwrap_or_else(|| " bytes".into())
        );
        if let Some(child) = pick_platform(&manifest) {
            let path = format!("/v2/{}/manifests/{child}", r.repository);
            match self
                .get(
                    at,
                    &authority,
                    &path,
                    token.auth(),
                    Some(ACCEPT),
                    MAX_MANIFEST,
                )
                .await
            {
                Ok(a) if a.status == 200 => {
                    manifest = manifest::parse(&a.body, this_arch());
                    note += &format!("; this platform's manifest {child}");
                }
                Ok(a) => {
                    let f = explain::manifest(a.status, &a.body, place);
                    self.report.fail(
                        "manifest",
                        format!(
                            "the index is readable, but this platform's manifest is not: {}",
                            f.detail
                        ),
                        f.fix,
                    );
                    self.report.skip("layer", "no manifest");
                    return;
                }
                Err(e) => {
                    self.report.fail(
                        "manifest",
                        format!("GET {path}: {e}"),
                        "retry; a proxy or firewall in the way?",
                    );
                    self.report.skip("layer", "no manifest");
                    return;
                }
            }
        }
        self.report.ok("manifest", format!("HTTP 200: {note}"));
        let Some(layer) = first_layer(&manifest) else {
            self.report.skip("layer", "the manifest names no layer");
            return;
        };
        self.layer(at, r, token, place, &layer).await;
    }

    /// GET of one layer, the redirect not followed; then the storage it points to.
    async fn layer(
        &mut self,
        at: &Reached,
        r: &Reference,
        token: &Token,
        place: &Place<'_>,
        digest: &str,
    ) {
        let path = format!("/v2/{}/blobs/{digest}", r.repository);
        let stream = match self.stream(at).await {
            Ok(s) => s,
            Err(e) => {
                self.report
                    .fail("layer", format!("GET {path}: {e}"), "retry");
                return;
            }
        };
        let headers = [
            ("authorization", format!("Basic {}", token.auth())),
            ("range", "bytes=0-0".to_string()),
        ];
        let answer = match probe::request(
            stream,
            "GET",
            &r.host,
            &path,
            &headers,
            MAX_SMALL,
            self.left(HTTP_STEP),
        )
        .await
        {
            Ok(a) => a,
            Err(e) => {
                self.report.fail(
                    "layer",
                    format!("GET {path}: {e}"),
                    "retry; a proxy or firewall in the way?",
                );
                return;
            }
        };
        match answer.status {
            200 | 206 => self.report.ok(
                "layer",
                format!(
                    "{digest}: served by the registry itself (HTTP {})",
                    answer.status
                ),
            ),
            301 | 302 | 303 | 307 | 308 => {
                let Some(location) = answer.location.as_deref() else {
                    self.report.fail(
                        "layer",
                        format!("HTTP {} without a Location", answer.status),
                        "the registry's answer is broken: retry",
                    );
                    return;
                };
                // The presigned URL is a bearer credential: it is never shown.
                self.urls.push(location.to_string());
                if let Some((_, q)) = location.split_once('?') {
                    self.urls.push(q.to_string());
                    self.secrets.extend(query_values(q));
                }
                let Some((authority, path)) = probe::split_https(location) else {
                    self.report.fail("layer", "the registry redirected the layer to a non-https location", "the registry or a proxy rewrote the redirect: check what answers for this host");
                    return;
                };
                let (name, port) = probe::host_port(&authority);
                self.report.ok(
                    "layer",
                    format!(
                        "{digest}: HTTP {} to {name} (the layer storage)",
                        answer.status
                    ),
                );
                self.storage(&name, port, &authority, &path, place).await;
            }
            s => {
                let f = explain::manifest(s, &answer.body, place);
                self.report.fail(
                    "layer",
                    format!("GET of layer {digest}: {}", f.detail),
                    f.fix,
                );
            }
        }
    }

    /// DNS, TCP, TLS and a one-byte GET to the layer storage (S3 for ECR), without our credential.
    async fn storage(
        &mut self,
        name: &str,
        port: u16,
        authority: &str,
        path: &str,
        place: &Place<'_>,
    ) {
        if self.out_of_time() {
            self.report.skip("storage", "out of time");
            return;
        }
        let Some((_, stream)) = self.connect(name, port, ["storage"; 3], place, true).await else {
            return;
        };
        let headers = [("range", "bytes=0-0".to_string())];
        match probe::request(
            stream,
            "GET",
            authority,
            path,
            &headers,
            MAX_SMALL,
            self.left(HTTP_STEP),
        )
        .await
        {
            Ok(a) if a.status == 200 || a.status == 206 => {
                self.report.ok(
                    "storage",
                    format!("{name} serves the layer (HTTP {})", a.status),
                );
            }
            Ok(a) => {
                let said = s3_error(&a.body).unwrap_or_else(|| format!("HTTP {}", a.status));
                self.report.fail(
                    "storage",
                    format!("{name} refused the layer: {said}"),
                    format!(
                        "an S3 gateway endpoint's policy must allow s3:GetObject on arn:aws:s3:::prod-{}-starport-layer-bucket/* (ECR's layer bucket); a proxy may not rewrite the presigned URL",
                        place.region.unwrap_or("<region>")
                    ),
                );
            }
            Err(e) => {
                let f = explain::storage_net(explain::NetFailure::Timeout, &e, name, place);
                self.report.fail("storage", f.detail, f.fix);
            }
        }
    }

    /// A 404: which of repository and tag is missing (distribution says MANIFEST_UNKNOWN for
    /// both; ECR's API tells them apart), with close names when the principal may list them.
    async fn not_found(&mut self, key: &GroupKey, r: &Reference, place: &Place<'_>, body: &[u8]) {
        let code = explain::registry_error(body)
            .map(|(c, _)| c)
            .unwrap_or_default();
        let mut repo_missing = code == "NAME_UNKNOWN";
        let mut suggestion = None;
        if let (Some(account), false) = (place.account, self.out_of_time()) {
            let source = AwsTokenSource::new(1);
            if !repo_missing {
                match tokio::time::timeout(
                    self.left(AWS_STEP),
                    source.image_tags(key, account, &r.repository),
                )
                .await
                {
                    Ok(Ok(tags)) => {
                        suggestion = Some(listed("tags", close(&tags, r.manifest_ref())))
                    }
                    Ok(Err(e)) if e.to_string().contains("RepositoryNotFoundException") => {
                        repo_missing = true
                    }
                    Ok(Err(e)) => {
                        suggestion = Some(format!(
                            "cannot list tags ({e}): the principal may not ecr:ListImages"
                        ))
                    }
                    Err(_) => suggestion = Some("listing tags took too long".into()),
                }
            }
            if repo_missing && !self.out_of_time() {
                suggestion = Some(
                    match tokio::time::timeout(
                        self.left(AWS_STEP),
                        source.repository_names(key, account),
                    )
                    .await
                    {
                        Ok(Ok(names)) => listed("repositories", close(&names, &r.repository)),
                        Ok(Err(e)) => format!(
                            "cannot list repositories ({e}): the principal may not ecr:DescribeRepositories"
                        ),
                        Err(_) => "listing repositories took too long".into(),
                    },
                );
            }
        }
        let body = if repo_missing && code != "NAME_UNKNOWN" {
            // What ECR itself would have said.
            br#"{"errors":[{"code":"NAME_UNKNOWN","message":"the registry's API has no such repository"}]}"#.to_vec()
        } else {
            body.to_vec()
        };
        let f = explain::manifest(404, &body, place);
        let detail = if repo_missing && code != "NAME_UNKNOWN" {
            format!(
                "the repository {} does not exist (HTTP 404 {code}; ListImages: no such repository)",
                r.repository
            )
        } else {
            f.detail
        };
        let fix = match suggestion {
            Some(s) => format!("{}; {s}", f.fix),
            None => f.fix,
        };
        self.report.fail("manifest", detail, fix);
    }

    /// Each consumer file: what its reader sends for this host, checked live when the registry is reachable.
    async fn consumers(
        &mut self,
        files: &[File],
        r: &Reference,
        for_user: bool,
        reached: Option<&Reached>,
        state: Option<&State>,
        place: &Place<'_>,
    ) {
        if files.is_empty() {
            self.report.fail(
                "consumer",
                format!("no target of the config covers {}", r.host),
                "add the auth file docker or podman reads as a [[target]] of this registry, or use `--user NAME` to look at one user's files",
            );
            return;
        }
        // podman stops at the first file that has something for the host.
        let mut podman_done = false;
        for file in files.iter().take(MAX_FILES) {
            let label = format!("{} ({}): {}", file.reader, file.user, file.path.display());
            let map = match consumers::read(file, &r.host) {
                Ok(Some(m)) => m,
                Ok(None) => {
                    if !for_user {
                        self.report.fail("consumer", format!("{label}: does not exist"), "is the daemon running? `systemctl status ecr-refresherd`; `ecr-refresherd status`");
                    }
                    continue;
                }
                Err(e) => {
                    self.report.fail(
                        "consumer",
                        format!("{label}: {e}"),
                        "fix the file (it is left untouched by the daemon until it parses)",
                    );
                    continue;
                }
            };
            let format = Format::of_path(&file.path);
            let used = consumers::what_is_used(&map, &r.host, format);
            let shadowed_for_podman = for_user && podman_done && used != Use::Nothing;
            match used {
                Use::Nothing => {
                    if !for_user {
                        self.report.fail(
                            "consumer",
                            format!("{label}: no entry for {}", r.host),
                            "the daemon has not written it: `ecr-refresherd status` says why",
                        );
                    }
                    continue;
                }
                Use::Helper {
                    helper,
                    via,
                    ours: true,
                } => {
                    self.report.ok("consumer", format!("{label}: {via} sends {} to docker-credential-{helper}, answered from the daemon's memory", r.host));
                }
                Use::Helper {
                    helper,
                    via,
                    ours: false,
                } => {
                    self.report.fail(
                        "consumer",
                        format!("{label}: {via} sends {} to docker-credential-{helper}, which hides the entry the daemon writes", r.host),
                        format!(
                            "set \"credHelpers\": {{\"{}\": \"ecr-refresherd\"}} in that file (the daemon's helper answers from memory), or remove the {via} entry",
                            r.host
                        ),
                    );
                }
                Use::Entry { key, auth } => {
                    self.secrets.push(auth.clone());
                    if let Some(p) = decoded_password(&auth) {
                        self.secrets.push(p);
                    }
                    let managed = state
                        .and_then(|s| s.managed(&file.path))
                        .and_then(|m| m.get(&r.host).or_else(|| m.get(key.as_str())))
                        .map(|m| m.expires_at());
                    self.entry(&label, &auth, managed, reached, place).await;
                }
            }
            if shadowed_for_podman {
                self.report.warn(
                    "consumer",
                    format!(
                        "{label}: podman never reads this entry: a file above it has one for {}",
                        r.host
                    ),
                    None,
                );
            }
            podman_done = true;
        }
        if for_user && !self.report.steps.iter().any(|s| s.step == "consumer") {
            self.report.fail(
                "consumer",
                format!("no file of {} has a credential for {}", files[0].user, r.host),
                "add that user's ~/.docker/config.json as a [[target]] with user = \"NAME\" (the daemon keeps it fresh), or point credHelpers at ecr-refresherd",
            );
        }
    }

    /// One `auths` entry: accepted by the registry (`GET /v2/`), or stale.
    async fn entry(
        &mut self,
        label: &str,
        auth: &str,
        managed: Option<SystemTime>,
        reached: Option<&Reached>,
        place: &Place<'_>,
    ) {
        let whose = match managed {
            Some(t) if t > SystemTime::now() => format!(
                "written by the daemon, valid until {}",
                crate::status::rfc3339(t)
            ),
            Some(t) => format!(
                "written by the daemon, expired at {}",
                crate::status::rfc3339(t)
            ),
            None => "not written by the daemon (a login of its own)".to_string(),
        };
        let live = match reached {
            Some(at) if !self.out_of_time() => Some(
                self.get(at, place.host, "/v2/", auth, None, MAX_SMALL)
                    .await,
            ),
            _ => None,
        };
        match live {
            Some(Ok(a)) if a.status == 200 => self.report.ok("consumer", format!("{label}: the registry accepts its entry; {whose}")),
            Some(Ok(a)) if a.status == 401 => self.report.fail(
                "consumer",
                format!("{label}: the registry refuses its entry (HTTP 401); {whose}"),
                match managed {
                    Some(_) => "the daemon's entry is stale: is it running? `ecr-refresherd status`; `ecr-refresherd refresh`".to_string(),
                    None => "replace the old login: make this file a [[target]] so the daemon keeps it fresh".to_string(),
                },
            ),
            Some(Ok(a)) => self.report.warn("consumer", format!("{label}: the registry answered HTTP {} to its entry; {whose}", a.status), None),
            Some(Err(e)) => self.report.warn("consumer", format!("{label}: could not check its entry ({e}); {whose}"), None),
            None => match managed {
                Some(t) if t <= SystemTime::now() => self.report.fail("consumer", format!("{label}: {whose}"), "is the daemon running? `ecr-refresherd status`"),
                _ => self.report.warn("consumer", format!("{label}: not checked (the registry is not reachable); {whose}"), None),
            },
        }
    }
}

/// "close tags: a, b", or that none is close.
fn listed(what: &str, near: Vec<String>) -> String {
    if near.is_empty() {
        format!("no {what} with a close name")
    } else {
        format!("close {what}: {}", near.join(", "))
    }
}

/// Up to five names close to `want` (Jaro-Winkler similarity), best first.
fn close(names: &[String], want: &str) -> Vec<String> {
    let mut scored: Vec<(f64, &String)> = names
        .iter()
        .map(|n| (strsim::jaro_winkler(n, want), n))
        .filter(|(s, _)| *s >= 0.6)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored
        .into_iter()
        .take(5)
        .map(|(_, n)| explain::quote(n))
        .collect()
}

/// This machine's architecture as image platforms name it.
fn this_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// For an image index, the digest of this machine's platform's manifest (else the first).
fn pick_platform(m: &manifest::Manifest) -> Option<String> {
    m.platform.clone().filter(|d| valid_digest(d))
}

/// The first layer's digest (schema 2 / OCI `layers`, schema 1 `fsLayers`).
fn first_layer(m: &manifest::Manifest) -> Option<String> {
    m.first_layer.clone().filter(|d| valid_digest(d))
}

/// A digest safe to put in a path (it comes from the registry).
fn valid_digest(d: &str) -> bool {
    d.split_once(':').is_some_and(|(a, h)| {
        !a.is_empty()
            && a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+.-_".contains(&b))
            && h.len() >= 32
            && h.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// The password in a base64 `user:password`.
fn decoded_password(auth: &str) -> Option<String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    s.split_once(':').map(|(_, p)| p.to_string())
}

/// S3's `<Error><Code>..</Code><Message>..</Message></Error>`, quoted.
fn s3_error(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let tag = |t: &str| {
        let start = text.find(&format!("<{t}>"))? + t.len() + 2;
        let end = text[start..].find(&format!("</{t}>"))? + start;
        Some(explain::quote(&text[start..end]))
    };
    match (tag("Code"), tag("Message")) {
        (Some(c), Some(m)) => Some(format!("{c}: {m}")),
        (Some(c), None) => Some(c),
        _ => None,
    }
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn parsed(v: serde_json::Value) -> manifest::Manifest {
        manifest::parse(v.to_string().as_bytes(), this_arch())
    }

    #[test]
    fn an_index_picks_this_platform() {
        let arch = this_arch();
        let m = serde_json::json!({"manifests": [
            {"digest": D1, "platform": {"os": "linux", "architecture": "s390x"}},
            {"digest": D2, "platform": {"os": "linux", "architecture": arch}},
        ]});
        assert_eq!(pick_platform(&parsed(m)).as_deref(), Some(D2));
        let other = serde_json::json!({"manifests": [{"digest": D1, "platform": {"os": "windows", "architecture": "amd64"}}]});
        assert_eq!(
            pick_platform(&parsed(other)).as_deref(),
            Some(D1),
            "else the first"
        );
        let bad = serde_json::json!({"manifests": [{"digest": "sha256:../../x"}]});
        assert_eq!(
            pick_platform(&parsed(bad)),
            None,
            "a digest from the registry goes in a path: checked"
        );
        assert_eq!(
            pick_platform(&parsed(serde_json::json!({"layers": []}))),
            None
        );
    }

    #[test]
    fn first_layers_of_each_schema() {
        let layer = |v| first_layer(&parsed(v));
        assert_eq!(
            layer(serde_json::json!({"layers": [{"digest": D1}, {"digest": D2}]})).as_deref(),
            Some(D1)
        );
        assert_eq!(
            layer(serde_json::json!({"fsLayers": [{"blobSum": D2}]})).as_deref(),
            Some(D2)
        );
        assert_eq!(layer(serde_json::json!({"layers": []})), None);
        assert_eq!(
            layer(serde_json::json!({"layers": [{"digest": "sha256:/etc"}]})),
            None
        );
    }

    #[test]
    fn close_names() {
        let names: Vec<String> = ["team/app", "team/api", "other/thing", "team/apps"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let near = close(&names, "team/ap");
        assert!(
            near.contains(&"team/app".to_string()) && !near.contains(&"other/thing".to_string()),
            "{near:?}"
        );
        assert!(close(&names, "zzzzzz").is_empty());
    }

    #[test]
    fn secrets_are_scrubbed_from_every_line() {
        let mut r = Report::new("x");
        r.fail(
            "manifest",
            "the server said s3cr3t-token-value back",
            "use s3cr3t-token-value",
        );
        let r = scrub(r, &["s3cr3t-token-value".into()], &[]);
        assert!(!r.text().contains("s3cr3t"), "{}", r.text());
    }

    #[test]
    fn a_secret_cut_or_split_is_scrubbed_piece_by_piece() {
        let token = "QVdTOmZha2Vwdy0xLTAxMjM0NTY3ODlhYmNkZWY=";
        let mut r = Report::new("x");
        // Cut short (by a server, or by quote's limit), and split in two fields.
        r.fail("manifest", format!("said: {}…", &token[..30]), "retry");
        r.ok(
            "manifest",
            format!("{} ({} bytes)", &token[..20], &token[20..]),
        );
        r.ok(
            "layer",
            "sha256:1111: served by the registry itself (HTTP 206)",
        );
        let r = scrub(r, &[token.to_string()], &[]);
        let t = r.text();
        assert!(
            !t.contains(&token[..16]) && !t.contains(&token[20..36]),
            "{t}"
        );
        assert!(t.contains("said: <redacted>…"), "{t}");
        assert!(t.contains("<redacted> (<redacted> bytes)"), "{t}");
        assert!(
            t.contains("served by the registry itself"),
            "the rest is kept: {t}"
        );
        // A piece that ends inside a multi-byte character takes the character with it.
        let mut r = Report::new("x");
        r.ok("token", format!("é{}é", &token[..16]));
        let r = scrub(r, &[format!("{}\u{e9}", &token[..16])], &[]);
        assert_eq!(r.steps[0].detail, "é<redacted>");
    }

    #[test]
    fn presigned_query_values_are_secrets_urls_only_whole() {
        assert_eq!(
            query_values("X-Amz-Security-Token=IQo%2Fab%2Bc&X-Amz-Signature=f00d&flag"),
            ["IQo/ab+c", "IQo%2Fab%2Bc", "f00d", "flag"]
        );
        assert_eq!(percent_decoded("a%2"), "a%2");
        assert_eq!(percent_decoded("%zz+%41"), "%zz A");
        assert_eq!(percent_decoded("%ff"), "%ff", "not UTF-8: left as it is");
        let url =
            "https://bucket.s3.us-east-1.amazonaws.com/key?X-Amz-Signature=0123456789abcdef0123";
        let mut r = Report::new("x");
        r.ok(
            "layer",
            "HTTP 307 to bucket.s3.us-east-1.amazonaws.com (the layer storage)",
        );
        r.fail("storage", format!("echo {url}"), "retry");
        let r = scrub(
            r,
            &query_values("X-Amz-Signature=0123456789abcdef0123"),
            &[url.to_string()],
        );
        assert!(
            r.steps[0]
                .detail
                .contains("bucket.s3.us-east-1.amazonaws.com"),
            "{:?}",
            r.steps
        );
        assert_eq!(r.steps[1].detail, "echo <redacted>");
    }

    #[test]
    fn s3_errors_and_passwords() {
        assert_eq!(
            s3_error(b"<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>").as_deref(),
            Some("AccessDenied: Access Denied")
        );
        assert_eq!(s3_error(b"nope"), None);
        assert_eq!(
            decoded_password("QVdTOnBhc3M6d29yZA==").as_deref(),
            Some("pass:word")
        );
    }
}
