//! Tests of the fake ECR registry and its layer storage over HTTPS (rustls trusting a CA made
//! here), in process and through the binary.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use fake_aws::{
    Deny, FakeAws, FakeRegistry, Fault, ManifestFormat, RegistryConfig, RegistryError,
    RegistryKind, RepoTag, Service,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject as _;
use sha2::{Digest as _, Sha256};

const HOST: &str = "111111111111.dkr.ecr.us-east-1.amazonaws.com";
const BUCKET: &str = "prod-us-east-1-starport-layer-bucket.s3.us-east-1.amazonaws.com";
const CHALLENGE: &str = "Basic realm=\"https://111111111111.dkr.ecr.us-east-1.amazonaws.com/\",service=\"ecr.amazonaws.com\"";

// ---------------------------------------------------------------------------------------------
// Certificates and a small blocking HTTPS client
// ---------------------------------------------------------------------------------------------

/// A CA and a leaf for the registry and bucket host names (and `localhost`).
struct Pki {
    ca_pem: String,
    leaf_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "fake-aws registry test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec![
        HOST.to_string(),
        BUCKET.to_string(),
        "222222222222.dkr.ecr.eu-west-1.amazonaws.com".to_string(),
        "localhost".to_string(),
    ])
    .unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        leaf_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// `(code, message)` of the first registry error.
    fn error(&self) -> (String, String) {
        let v = self.json();
        let e = &v["errors"][0];
        (
            e["code"].as_str().unwrap_or_default().to_string(),
            e["message"].as_str().unwrap_or_default().to_string(),
        )
    }
}

/// One request over its own TLS connection to `addr`, verifying the server as `host` (also the
/// `Host` header), `Connection: close`, reading until the server closes.
fn call(
    config: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let name = ServerName::try_from(host.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::clone(config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tls.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => panic!("{method} {path}: {e}"),
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

// ---------------------------------------------------------------------------------------------
// Setup
// ---------------------------------------------------------------------------------------------

struct Setup {
    aws: FakeAws,
    reg: FakeRegistry,
    tls: Arc<rustls::ClientConfig>,
}

impl Setup {
    fn registry(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        call(
            &self.tls,
            self.reg.registry_addr(),
            HOST,
            method,
            path,
            headers,
        )
    }

    fn registry_as(&self, host: &str, method: &str, path: &str, auth: &str) -> Answer {
        call(
            &self.tls,
            self.reg.registry_addr(),
            host,
            method,
            path,
            &[("Authorization", auth)],
        )
    }

    fn get(&self, path: &str, auth: &str) -> Answer {
        self.registry("GET", path, &[("Authorization", auth)])
    }

    /// A request to the storage for a `Location` the registry gave.
    fn storage(&self, location: &str, method: &str, headers: &[(&str, &str)]) -> Answer {
        let rest = location.strip_prefix("https://").unwrap();
        let (authority, path) = rest.split_at(rest.find('/').unwrap());
        let host = authority.split(':').next().unwrap();
        let addr = self.reg.storage_addr().unwrap();
        call(&self.tls, addr, host, method, path, headers)
    }
}

fn config(pki: &Pki) -> RegistryConfig {
    RegistryConfig {
        registry: "127.0.0.1:0".parse().unwrap(),
        storage: Some("127.0.0.1:0".parse().unwrap()),
        storage_url: Some(format!("https://{BUCKET}")),
        cert_pem: format!("{}{}", pki.leaf_pem, pki.ca_pem).into_bytes(),
        key_pem: pki.key_pem.clone().into_bytes(),
        repos: vec![
            "team/app:v1".parse().unwrap(),
            "team/app:v2".parse().unwrap(),
            "team/oci:v1=oci".parse().unwrap(),
        ],
        deny: vec![
            ("secret/identity".into(), Deny::Identity),
            ("secret/resource".into(), Deny::Resource),
            ("secret/explicit-identity".into(), Deny::ExplicitIdentity),
            ("secret/explicit-resource".into(), Deny::ExplicitResource),
        ],
    }
}

fn setup() -> Setup {
    let pki = pki();
    let aws = FakeAws::start().unwrap();
    let reg = aws.start_registry(config(&pki)).unwrap();
    Setup {
        aws,
        reg,
        tls: client_config(&pki.ca_pem),
    }
}

/// `Basic base64(AWS:password)`, the header docker sends, from a fresh ECR token.
fn login(aws: &FakeAws, access_key_id: &str, region: &str) -> String {
    let auth = common::auth_header(access_key_id, region, "ecr");
    let r = common::request(
        aws.addr(),
        "POST",
        "/",
        &[
            (
                "X-Amz-Target",
                "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken",
            ),
            ("Content-Type", "application/x-amz-json-1.1"),
            ("Authorization", &auth),
        ],
        b"{}",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["authorizationData"][0]["authorizationToken"]
        .as_str()
        .unwrap()
        .to_string();
    format!("Basic {token}")
}

fn sha256(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// The layer digest of `repo:tag` as the manifest names it.
fn layer_digest(s: &Setup, auth: &str, repo: &str, tag: &str) -> String {
    let m = s.get(&format!("/v2/{repo}/manifests/{tag}"), auth);
    assert_eq!(m.status, 200, "{}", m.text());
    m.json()["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn location(s: &Setup, auth: &str, repo: &str, digest: &str) -> String {
    let r = s.get(&format!("/v2/{repo}/blobs/{digest}"), auth);
    assert_eq!(r.status, 307, "{}", r.text());
    r.header("location").unwrap().to_string()
}

// ---------------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------------

#[test]
fn ping_without_credentials_is_ecrs_401_challenge() {
    let s = setup();
    for path in ["/v2/", "/v2", "/v2/team/app/manifests/v1"] {
        let r = s.registry("GET", path, &[]);
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.header("www-authenticate"), Some(CHALLENGE), "{path}");
        assert_eq!(
            r.header("docker-distribution-api-version"),
            Some("registry/2.0")
        );
        assert_eq!(r.text(), "Not Authorized\n");
    }
    let auth = login(&s.aws, "FAKEACCESSKEY", "us-east-1");
    let r = s.get("/v2/", &auth);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
}

#[test]
fn wrong_user_unknown_password_malformed_header_and_public_tokens_get_401() {
    let s = setup();
    let auth = login(&s.aws, "FAKEACCESSKEY", "us-east-1");
    let pw = s.aws.issued_passwords().pop().unwrap();
    // An ECR Public token is no key to a private registry.
    let r = common::ecr_public_get_token(s.aws.addr());
    assert_eq!(r.status, 200);
    let public = r.json()["authorizationData"]["authorizationToken"]
        .as_str()
        .unwrap()
        .to_string();
    let b = |s: &str| format!("Basic {}", BASE64.encode(s));
    for bad in [
        b(&format!("aws:{pw}")),
        b(&format!("user:{pw}")),
        b("AWS:fakepw-999-0000000000000000"),
        b(&format!("AWS:{pw}x")),
        b("AWS"),
        "Basic %%%".to_string(),
        format!("Bearer {}", auth.trim_start_matches("Basic ")),
        format!("Basic {public}"),
    ] {
        let r = s.get("/v2/team/app/manifests/v1", &bad);
        assert_eq!(r.status, 401, "{bad}: {}", r.text());
        assert_eq!(r.header("www-authenticate"), Some(CHALLENGE));
    }
    // The scheme is case-insensitive, as in every HTTP client.
    let lower = auth.replacen("Basic", "basic", 1);
    assert_eq!(s.get("/v2/", &lower).status, 200);
}

#[test]
fn expired_token_and_token_of_another_region_get_403_denied() {
    let s = setup();
    s.aws
        .push_faults(Service::Ecr, [Fault::ExpiresAtOffset(-60)]);
    let expired = login(&s.aws, "FAKEACCESSKEY", "us-east-1");
    let r = s.get("/v2/team/app/manifests/v1", &expired);
    assert_eq!(r.status, 403, "{}", r.text());
    let expired_text = (
        "DENIED".to_string(),
        "Your authorization token has expired. Reauthenticate and try again.".to_string(),
    );
    assert_eq!(r.error(), expired_text);
    // HEAD: the same status, no body.
    let r = s.registry(
        "HEAD",
        "/v2/team/app/manifests/v1",
        &[("Authorization", &expired)],
    );
    assert_eq!(r.status, 403);
    assert!(r.body.is_empty());

    let eu = login(&s.aws, "FAKEACCESSKEY", "eu-west-1");
    let r = s.get("/v2/", &eu);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.error(), expired_text);
    let eu_host = "222222222222.dkr.ecr.eu-west-1.amazonaws.com";
    let r = s.registry_as(eu_host, "GET", "/v2/", &eu);
    assert_eq!(r.status, 200, "{}", r.text());

    // A token whose expiry is still ahead works.
    let fresh = login(&s.aws, "FAKEACCESSKEY", "us-east-1");
    assert_eq!(s.get("/v2/", &fresh).status, 200);
}

// ---------------------------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------------------------

#[test]
fn manifests_by_tag_and_digest_with_content_type_and_digest_headers() {
    let s = setup();
    let auth = login(&s.aws, "FAKEACCESSKEY", "us-east-1");
    let accept = "application/vnd.docker.distribution.manifest.v2+json, \
                  application/vnd.oci.image.manifest.v1+json";
    let r = s.registry(
        "GET",
        "/v2/team/app/manifests/v1",
        &[("Authorization", &auth), ("Accept", accept)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.docker.distribution.manifest.v2+json")
    );
    let digest = r.header("docker-content-digest").unwrap().to_string();
    assert_eq!(
        digest,
        sha256(&r.body),
        "Docker-Content-Digest is the body's digest"
    );
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    let m = r.json();
    assert_eq!(m["schemaVersion"], 2);
    assert_eq!(
        m["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(s.reg.image("team/app", "v1").unwrap().manifest, r.body);
    // The log keeps the Accept header a client sent, for tests of what it asks for.
    assert_eq!(s.aws.registry_calls()[0].accept.as_deref(), Some(accept));

    let head = s.registry(
        "HEAD",
        "/v2/team/app/manifests/v1",
        &[("Authorization", &auth)],
    );
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(
        head.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );

    let by_digest = s.get(&format!("/v2/team/app/manifests/{digest}"), &auth);
    assert_eq!(by_digest.status, 200);
    assert_eq!(by_digest.body, r.body);
    let v2 = s.get("/v2/team/app/manifests/v2", &auth);
    assert_ne!(v2.header("docker-content-digest"), Some(digest.as_str()));

    let oci = s.get("/v2/team/oci/manifests/v1", &auth);
    assert_eq!(oci.status, 200);
    assert_eq!(
        oci.header("content-type"),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    assert_eq!(
        oci.json()["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );

    let tags = s.get("/v2/team/app/tags/list", &auth);
    assert_eq!(
        tags.json(),
        serde_json::json!({"name": "team/app", "tags": ["v1", "v2"]})
    );
}

#[test]
fn unknown_repository_tag_and_digest_are_ecrs_404s() {
    let s = setup();
    let auth = login(&s.aws, "FAKEACCESSKEY", "us-east-1");
    let r = s.get("/v2/team/nope/manifests/v1", &auth);
    assert_eq!(r.status, 404);
    assert_eq!(
        r.error(),
        (
            "NAME_UNKNOWN".to_string(),
            "The repository with name 'team/nope' does not exist in the registry with id \
             '111111111111'"
                .to_string()
        )
    );
    for reference in [
        "v9",
        "sha256:0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let r = s.get(&format!("/v2/team/app/manifests/{reference}"), &auth);
        assert_eq!(r.status, 404);
        assert_eq!(
            r.error(),
            (
                "MANIFEST_UNKNOWN".to_string(),
                "Requested image not found".to_string()
            )
        );
    }
    let r = s.get(
        "/v2/team/app/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000",
        &auth,
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.error().0, "BLOB_UNKNOWN");
    let r = s.get("/v2/team/nope/blobs/sha256:00", &auth);
    assert_eq!(r.error().0, "NAME_UNKNOWN");
    // The account in the message is the registry's (from the Host), not the fake's default.
    let eu = login(&s.aws, "FAKEACCESSKEY", "eu-west-1");
    let r = s.registry_as(
        "222222222222.dkr.ecr.eu-west-1.amazonaws.com",
        "GET",
        "/v2/x/manifests/v1",
        &eu,
    );
    assert!(
        r.error().1.ends_with("with id '222222222222'"),
        "{}",
        r.text()
    );
}

#[test]
fn denied_repositories_get_403_with_iams_message_and_the_callers_arn() {
    let s = setup();
    let auth = login(&s.aws, "FAKEACCESSKEY", "us-east-1");
    let user = "arn:aws:iam::123456789012:user/fake";
    for (repo, tail) in [
        (
            "secret/identity",
            "because no identity-based policy allows the ecr:BatchGetImage action",
        ),
        (
            "secret/resource",
            "because no resource-based policy allows the ecr:BatchGetImage action",
        ),
        (
            "secret/explicit-identity",
            "with an explicit deny in an identity-based policy",
        ),
        (
            "secret/explicit-resource",
            "with an explicit deny in a resource-based policy",
        ),
    ] {
        let r = s.get(&format!("/v2/{repo}/manifests/v1"), &auth);
        assert_eq!(r.status, 403, "{repo}");
        assert_eq!(
            r.error(),
            (
                "DENIED".to_string(),
                format!(
                    "User: {user} is not authorized to perform: ecr:BatchGetImage on resource: \
                     arn:aws:ecr:us-east-1:111111111111:repository/{repo} {tail}"
                )
            )
        );
        assert_eq!(
            r.json(),
            serde_json::json!({"errors": [{"code": "DENIED", "message": r.error().1}]})
        );
    }

    // With assumed-role credentials the ARN is the one STS GetCallerIdentity gives that key.
    let xml = common::sts_assume_role(
        s.aws.addr(),
        "arn:aws:iam::444455556666:role/puller",
        "doctor",
        "x",
    )
    .text();
    let key = xml
        .split("<AccessKeyId>")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .unwrap()
        .to_string();
    let caller = common::request(
        s.aws.addr(),
        "POST",
        "/",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            (
                "Authorization",
                &common::auth_header(&key, "us-east-1", "sts"),
            ),
        ],
        b"Action=GetCallerIdentity&Version=2011-06-15",
    )
    .text();
    let arn = caller
        .split("<Arn>")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .unwrap()
        .to_string();
    assert_eq!(arn, "arn:aws:sts::444455556666:assumed-role/puller/doctor");
    let role_auth = login(&s.aws, &key, "us-east-1");
    let r = s.get("/v2/secret/identity/manifests/v1", &role_auth);
    assert!(
        r.error()
            .1
            .starts_with(&format!("User: {arn} is not authorized")),
        "{}",
        r.text()
    );
}

// ---------------------------------------------------------------------------------------------
// Blobs and the storage
// ---------------------------------------------------------------------------------------------

#[test]
fn blob_get_is_a_307_to_a_presigned_bucket_url_and_head_is_answered_directly() {
    let s = setup();
    let auth = login(&s.aws, "FAKEACCESSKEY", "us-east-1");
    let digest = layer_digest(&s, &auth, "team/app", "v1");
    let r = s.get(&format!("/v2/team/app/blobs/{digest}"), &auth);
    assert_eq!(r.status, 307, "{}", r.text());
    assert!(r.body.is_empty());
    let loc = r.header("location").unwrap();
    let (base, query) = loc.split_once('?').unwrap();
    assert!(base.starts_with(&format!("https://{BUCKET}/")), "{loc}");
    for p in [
        "X-Amz-Algorithm=AWS4-HMAC-SHA256",
        "X-Amz-Date=",
        "X-Amz-SignedHeaders=host",
        "X-Amz-Expires=",
        "X-Amz-Credential=",
        "X-Amz-Signature=",
    ] {
        assert!(query.split('&').any(|kv| kv.starts_with(p)), "{p} in {loc}");
    }
    assert!(query.contains("%2Fus-east-1%2Fs3%2Faws4_request"), "{loc}");
    // Each redirect is signed afresh.
    assert_ne!(location(&s, &auth, "team/app", &digest), loc);

    let head = s.registry(
        "HEAD",
        &format!("/v2/team/app/blobs/{digest}"),
        &[("Authorization", &auth)],
    );
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let layer = s.reg.image("team/app", "v1").unwrap().layer;
    assert_eq!(
        head.header("content-length"),
        Some(layer.bytes.len().to_string().as_str())
    );
    assert_eq!(head.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(
        head.header("content-type"),
        Some("application/vnd.docker.image.rootfs.diff.tar.gzip")
    );
}

#[test]
fn storage_serves_the_bytes_of_the_digest_and_206_for_a_range() {
    let s = setup();
    let auth = login(&s.aws, "FAKEACCESSKEY", "us-east-1");
    let manifest = s.get("/v2/team/oci/manifests/v1", &auth).json();
    for d in [&manifest["config"], &manifest["layers"][0]] {
        let digest = d["digest"].as_str().unwrap();
        let loc = location(&s, &auth, "team/oci", digest);
        let r = s.storage(&loc, "GET", &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            sha256(&r.body),
            digest,
            "the storage serves the bytes of the digest"
        );
        assert_eq!(r.body.len() as u64, d["size"].as_u64().unwrap());
        assert_eq!(r.header("accept-ranges"), Some("bytes"));
    }
    let digest = manifest["layers"][0]["digest"].as_str().unwrap();
    let whole = s.reg.image("team/oci", "v1").unwrap().layer.bytes;
    let loc = location(&s, &auth, "team/oci", digest);
    let r = s.storage(&loc, "GET", &[("Range", "bytes=0-9")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &whole[..10]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 0-9/{}", whole.len()).as_str())
    );
    let r = s.storage(&loc, "GET", &[("Range", "bytes=-4")]);
    assert_eq!(
        (r.status, r.body.as_slice()),
        (206, &whole[whole.len() - 4..])
    );
    let r = s.storage(
        &loc,
        "GET",
        &[("Range", &format!("bytes={}-", whole.len()))],
    );
    assert_eq!(r.status, 416);
    assert!(r.text().contains("<Code>InvalidRange</Code>"));
    let r = s.storage(&loc, "HEAD", &[]);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(
        r.header("content-length"),
        Some(whole.len().to_string().as_str())
    );
    // The URL stays good for its X-Amz-Expires.
    assert_eq!(s.storage(&loc, "GET", &[]).status, 200);
}

#[test]
fn storage_refuses_authorization_headers_missing_or_foreign_signatures_and_bare_paths() {
    let s = setup();
    let auth = login(&s.aws, "FAKEACCESSKEY", "us-east-1");
    let digest = layer_digest(&s, &auth, "team/app", "v1");
    let loc = location(&s, &auth, "team/app", &digest);

    // A client that forwards the registry's Authorization to S3 gets S3's 400.
    let r = s.storage(&loc, "GET", &[("Authorization", &auth)]);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/xml"));
    let text = r.text();
    assert!(text.contains("<Code>InvalidArgument</Code>"), "{text}");
    assert!(
        text.contains(
            "<Message>Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, \
             Signature query string parameter or the Authorization header should be specified\
             </Message>"
        ),
        "{text}"
    );
    let token = auth.trim_start_matches("Basic ");
    assert!(
        !text.contains(token),
        "the answer must not echo the token: {text}"
    );

    let (base, query) = loc.split_once('?').unwrap();
    let r = s.storage(base, "GET", &[]);
    assert_eq!(r.status, 403);
    assert!(
        r.text()
            .contains("<Code>AccessDenied</Code><Message>Access Denied</Message>")
    );

    let tampered = format!(
        "{base}?{}",
        query.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    );
    let r = s.storage(&tampered, "GET", &[]);
    assert_eq!(r.status, 403);
    assert!(
        r.text().contains("<Code>SignatureDoesNotMatch</Code>"),
        "{}",
        r.text()
    );

    // A signature is good for its own object only.
    let other = location(
        &s,
        &auth,
        "team/app",
        &layer_digest(&s, &auth, "team/app", "v2"),
    );
    let other_base = other.split_once('?').unwrap().0;
    let r = s.storage(&format!("{other_base}?{query}"), "GET", &[]);
    assert_eq!(r.status, 403);

    let without_algorithm: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.starts_with("X-Amz-Algorithm="))
        .collect();
    let r = s.storage(
        &format!("{base}?{}", without_algorithm.join("&")),
        "GET",
        &[],
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("AuthorizationQueryParametersError"));

    let r = s.storage(&loc, "PUT", &[("Content-Length", "0")]);
    assert_eq!(r.status, 403);
}

#[test]
fn without_a_storage_url_redirects_name_ecrs_bucket_of_the_hosts_region() {
    let pki = pki();
    let aws = FakeAws::start().unwrap();
    let mut cfg = config(&pki);
    cfg.storage = None;
    cfg.storage_url = None;
    let reg = aws.start_registry(cfg).unwrap();
    assert_eq!(reg.storage_addr(), None);
    let s = Setup {
        aws,
        reg,
        tls: client_config(&pki.ca_pem),
    };
    let auth = login(&s.aws, "FAKEACCESSKEY", "us-east-1");
    let digest = layer_digest(&s, &auth, "team/app", "v1");
    let loc = location(&s, &auth, "team/app", &digest);
    assert!(loc.starts_with(&format!("https://{BUCKET}/")), "{loc}");
    let eu = login(&s.aws, "FAKEACCESSKEY", "eu-west-1");
    let r = s.registry_as(
        "222222222222.dkr.ecr.eu-west-1.amazonaws.com",
        "GET",
        &format!("/v2/team/app/blobs/{digest}"),
        &eu,
    );
    let loc = r.header("location").unwrap();
    assert!(
        loc.starts_with("https://prod-eu-west-1-starport-layer-bucket.s3.eu-west-1.amazonaws.com/"),
        "{loc}"
    );
    assert!(loc.contains("-222222222222-"), "{loc}");
}

// ---------------------------------------------------------------------------------------------
// The request log, the control plane, start-up errors
// ---------------------------------------------------------------------------------------------

#[test]
fn every_request_is_counted_by_kind_and_the_log_holds_no_credential() {
    let s = setup();
    let auth = login(&s.aws, "FAKEACCESSKEY", "us-east-1");
    assert_eq!(s.registry("GET", "/v2/", &[]).status, 401);
    assert_eq!(s.get("/v2/", &auth).status, 200);
    let digest = layer_digest(&s, &auth, "team/app", "v1");
    let loc = location(&s, &auth, "team/app", &digest);
    assert_eq!(
        s.storage(&loc, "GET", &[("Range", "bytes=0-0")]).status,
        206
    );
    assert_eq!(
        s.storage(&loc, "GET", &[("Authorization", &auth)]).status,
        400
    );

    assert_eq!(s.aws.registry_count(RegistryKind::Ping), 2);
    assert_eq!(s.aws.registry_count(RegistryKind::Manifest), 1);
    assert_eq!(s.aws.registry_count(RegistryKind::Blob), 1);
    assert_eq!(s.aws.registry_count(RegistryKind::Storage), 2);
    let calls = s.aws.registry_calls();
    let statuses: Vec<(RegistryKind, u16, bool)> = calls
        .iter()
        .map(|c| (c.kind, c.status, c.authorization))
        .collect();
    assert_eq!(
        statuses,
        vec![
            (RegistryKind::Ping, 401, false),
            (RegistryKind::Ping, 200, true),
            (RegistryKind::Manifest, 200, true),
            (RegistryKind::Blob, 307, true),
            (RegistryKind::Storage, 206, false),
            (RegistryKind::Storage, 400, true),
        ]
    );
    assert_eq!(calls[4].range.as_deref(), Some("bytes=0-0"));
    assert_eq!(calls[4].sni.as_deref(), Some(BUCKET));
    assert_eq!(calls[0].sni.as_deref(), Some(HOST));
    assert_eq!(calls[0].host.as_deref(), Some(HOST));

    let log = common::request(s.aws.addr(), "GET", "/_fake/registry", &[], b"");
    assert_eq!(log.status, 200);
    let v = log.json();
    assert_eq!(v["counts"]["ping"], 2);
    assert_eq!(v["counts"]["storage"], 2);
    assert_eq!(v["calls"][3]["status"], 307);
    let text = log.text();
    let secrets = s.aws.secrets();
    assert!(!secrets.is_empty());
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "the log shows a secret: {text}"
        );
    }
    assert!(!text.contains(auth.trim_start_matches("Basic ")));
    // The presigned URL's signature counts as a secret: it opens the layer for an hour.
    let signature = loc.rsplit("X-Amz-Signature=").next().unwrap();
    assert!(secrets.iter().any(|s| s == signature));

    common::request(s.aws.addr(), "POST", "/_fake/reset", &[], b"");
    assert!(s.aws.registry_calls().is_empty());
}

#[test]
fn bad_certificates_keys_names_and_addresses_are_refused() {
    let pki = pki();
    let aws = FakeAws::start().unwrap();
    let mut cfg = config(&pki);
    cfg.key_pem = b"not a key".to_vec();
    assert!(matches!(
        aws.start_registry(cfg),
        Err(RegistryError::Tls(_))
    ));
    let mut cfg = config(&pki);
    cfg.cert_pem = pki.key_pem.clone().into_bytes();
    assert!(matches!(
        aws.start_registry(cfg),
        Err(RegistryError::Tls(_))
    ));
    let mut cfg = config(&pki);
    cfg.key_pem = self::pki().key_pem.into_bytes();
    assert!(
        matches!(aws.start_registry(cfg), Err(RegistryError::Tls(_))),
        "key of another leaf"
    );
    let mut cfg = config(&pki);
    cfg.registry = "10.1.2.3:443".parse().unwrap();
    assert!(matches!(
        aws.start_registry(cfg),
        Err(RegistryError::NotLoopback(_))
    ));
    let mut cfg = config(&pki);
    cfg.storage_url = Some("http://bucket".into());
    assert!(matches!(
        aws.start_registry(cfg),
        Err(RegistryError::Config(_))
    ));
    let mut cfg = config(&pki);
    cfg.deny = vec![("Bad Name".into(), Deny::Identity)];
    assert!(matches!(
        aws.start_registry(cfg),
        Err(RegistryError::Config(_))
    ));
    let mut cfg = config(&pki);
    cfg.repos.push(RepoTag {
        repository: "x".into(),
        tag: "y".into(),
        format: ManifestFormat::Oci,
    });
    let reg = aws.start_registry(cfg).unwrap();
    let mut cfg = config(&pki);
    cfg.registry = reg.registry_addr();
    assert!(matches!(
        aws.start_registry(cfg),
        Err(RegistryError::Bind { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn binary_prints_registry_and_storage_lines_serves_them_and_logs_no_secret() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, format!("{}{}", pki.leaf_pem, pki.ca_pem)).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    let stderr = dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fake-aws"))
        .args([
            "--registry",
            "127.0.0.1:0",
            "--storage",
            "127.0.0.1:0",
            "--tls-cert",
        ])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .args([
            "--storage-url",
            &format!("https://{BUCKET}"),
            "--repo",
            "team/app:v1",
            "--deny-repo",
            "secret/app=explicit-identity",
            "--verbose",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _child = Killed(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut next = || lines.next().unwrap().unwrap();
    let first = next();
    let endpoint: SocketAddr = first
        .strip_prefix("listening http://")
        .unwrap_or_else(|| panic!("first line {first:?}"))
        .parse()
        .unwrap();
    let second = next();
    let registry: SocketAddr = second
        .strip_prefix("registry ")
        .unwrap_or_else(|| panic!("second line {second:?}"))
        .parse()
        .unwrap();
    let third = next();
    let storage: SocketAddr = third
        .strip_prefix("storage ")
        .unwrap_or_else(|| panic!("third line {third:?}"))
        .parse()
        .unwrap();
    assert!(registry.ip().is_loopback() && storage.ip().is_loopback());
    assert_ne!(registry.port(), 0);

    let tls = client_config(&pki.ca_pem);
    let token = common::ecr_get_token(endpoint, "us-east-1").json()["authorizationData"][0]
        ["authorizationToken"]
        .as_str()
        .unwrap()
        .to_string();
    let auth = format!("Basic {token}");
    let get = |path: &str| {
        call(
            &tls,
            registry,
            HOST,
            "GET",
            path,
            &[("Authorization", &auth)],
        )
    };
    assert_eq!(call(&tls, registry, HOST, "GET", "/v2/", &[]).status, 401);
    let m = get("/v2/team/app/manifests/latest");
    assert_eq!(m.error().0, "MANIFEST_UNKNOWN");
    let m = get("/v2/team/app/manifests/v1");
    assert_eq!(m.status, 200);
    let digest = m.json()["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        get("/v2/secret/app/manifests/v1")
            .error()
            .1
            .ends_with("with an explicit deny in an identity-based policy")
    );
    let b = get(&format!("/v2/team/app/blobs/{digest}"));
    assert_eq!(b.status, 307);
    let loc = b.header("location").unwrap();
    let path = loc.strip_prefix(&format!("https://{BUCKET}")).unwrap();
    let r = call(
        &tls,
        storage,
        BUCKET,
        "GET",
        path,
        &[("Range", "bytes=1-2")],
    );
    assert_eq!(r.status, 206);
    let whole = call(&tls, storage, BUCKET, "GET", path, &[]);
    assert_eq!(sha256(&whole.body), digest);

    // Every request made a stderr line; none shows a credential.
    let counts = common::request(endpoint, "GET", "/_fake/registry", &[], b"").json();
    assert_eq!(counts["total"], 7);
    let secrets: Vec<String> =
        serde_json::from_value(common::request(endpoint, "GET", "/_fake/secrets", &[], b"").json())
            .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let log = loop {
        let log = std::fs::read_to_string(&stderr).unwrap();
        if log.matches("fake-aws: storage GET").count() == 2 || std::time::Instant::now() > deadline
        {
            break log;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(log.matches("fake-aws: registry ").count(), 5, "{log}");
    assert!(
        log.contains(&format!(
            "fake-aws: registry GET /v2/team/app/blobs/{digest} -> 307"
        )),
        "{log}"
    );
    assert!(log.contains("-> 206"), "{log}");
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "stderr shows a secret: {log}"
        );
    }
    assert!(!log.contains("Basic "), "{log}");
    assert!(!log.contains("X-Amz-"), "{log}");
}

#[test]
fn binary_refuses_registry_flags_without_their_partners_and_unreadable_files() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_fake-aws"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = run(&["--registry", "127.0.0.1:0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--registry needs --tls-cert and --tls-key")
    );
    let o = run(&["--repo", "a:b"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&[
        "--registry",
        "127.0.0.1:0",
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "/nonexistent/key.pem",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/cert.pem"));
    assert!(
        o.stdout.is_empty(),
        "no listening line before the registry runs"
    );
}

/// `ecr:<action>` on the fake ECR API, JSON in and out.
fn ecr_api(aws: &FakeAws, action: &str, body: &str) -> (u16, serde_json::Value) {
    let auth = "AWS4-HMAC-SHA256 Credential=FAKEACCESSKEY/20260101/us-east-1/ecr/aws4_request, SignedHeaders=host, Signature=00";
    let target = format!("AmazonEC2ContainerRegistry_V20150921.{action}");
    let r = common::request(
        aws.addr(),
        "POST",
        "/",
        &[
            ("X-Amz-Target", target.as_str()),
            ("Content-Type", "application/x-amz-json-1.1"),
            ("Authorization", auth),
        ],
        body.as_bytes(),
    );
    (r.status, r.json())
}

#[test]
fn the_ecr_api_lists_the_registrys_repositories_and_tags() {
    let s = setup();
    let (st, v) = ecr_api(
        &s.aws,
        "DescribeRepositories",
        r#"{"registryId":"222222222222"}"#,
    );
    assert_eq!(st, 200, "{v}");
    let names: Vec<&str> = v["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["repositoryName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["team/app", "team/oci"]);
    assert_eq!(
        v["repositories"][0]["repositoryArn"],
        "arn:aws:ecr:us-east-1:222222222222:repository/team/app"
    );
    let (st, v) = ecr_api(&s.aws, "ListImages", r#"{"repositoryName":"team/app"}"#);
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["imageIds"],
        serde_json::json!([{"imageTag": "v1"}, {"imageTag": "v2"}])
    );
    let (st, v) = ecr_api(
        &s.aws,
        "ListImages",
        r#"{"repositoryName":"nope","registryId":"222222222222"}"#,
    );
    assert_eq!(st, 400);
    assert_eq!(v["__type"], "RepositoryNotFoundException", "{v}");
    assert_eq!(
        v["message"],
        "The repository with name 'nope' does not exist in the registry with id '222222222222'"
    );
    s.aws
        .set_fault(fake_aws::Service::Ecr, fake_aws::Fault::AccessDenied);
    let (st, v) = ecr_api(&s.aws, "DescribeRepositories", "{}");
    assert_eq!(st, 400);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("not authorized to perform: ecr:DescribeRepositories"),
        "{v}"
    );
}

#[test]
fn same_password_issues_one_password_and_tells_the_hook_once() {
    let aws = FakeAws::start().unwrap();
    aws.set_same_password(true);
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = std::sync::Arc::clone(&heard);
    aws.on_issue(move |p| h.lock().unwrap().push(p.to_string()));
    let pw = |r: common::HttpResponse| {
        let t = r.json()["authorizationData"][0]["authorizationToken"]
            .as_str()
            .unwrap()
            .to_string();
        String::from_utf8(BASE64.decode(t).unwrap()).unwrap()
    };
    let a = pw(common::ecr_get_token(aws.addr(), "us-east-1"));
    let b = pw(common::ecr_get_token(aws.addr(), "us-east-1"));
    assert_eq!(a, b, "one password for every token");
    assert_eq!(aws.issued_passwords().len(), 1);
    assert_eq!(heard.lock().unwrap().len(), 1, "the hook hears of it once");
}
