//! `fake-aws` binary: runs the fake AWS server on loopback until killed.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use fake_aws::{Deny, FakeAws, RegistryConfig, RepoTag, Service};

const USAGE: &str = "\
usage: fake-aws [--listen 127.0.0.1:0] [--lifetime 12h|SECS] [--account A] [--region R]
                [--rate R --burst B] [--latency-ms N] [--htpasswd FILE] [--same-password] [--verbose]
                [--registry ADDR --tls-cert PEM --tls-key PEM [--storage ADDR]
                 [--storage-url URL] [--repo NAME:TAG[=oci]]... [--deny-repo NAME=KIND]...]

Serves fake ECR, ECR Public, STS and IMDSv2 on one loopback port, prints
`listening http://127.0.0.1:PORT` and serves until killed. With --registry it also serves an
ECR-shaped registry over HTTPS and prints `registry ADDR` (and `storage ADDR`) after that line.
  --listen ADDR     loopback address to bind (default 127.0.0.1:0)
  --lifetime D      ECR / ECR Public token lifetime: SECS or Ns/Nm/Nh/Nd (default 12h)
  --account A       account for ECR proxyEndpoint and the IMDS identity (default 123456789012)
  --region R        region of the IMDS identity (default us-east-1)
  --rate R          token-bucket limit per second for ECR and ECR Public (each), needs --burst
  --burst B         token-bucket size
  --latency-ms N    delay before every response of every service
  --htpasswd FILE   after each issued ECR password, write FILE as `AWS:<bcrypt>` (a registry
                    that re-reads it then accepts exactly the newest token's password)
  --same-password   every valid token carries the first password issued (they differ in expiry
                    only): a one-line htpasswd then accepts every token, as ECR does
  --verbose         one line per request on stderr (registry and storage: method, path, status)
Registry (HTTPS, HTTP/1.1, on its own loopback address; accepts `Basic AWS:<password>` with a
password this fake's ECR issued; answers as ECR does: 401 Not Authorized, 403 DENIED for an
expired token or a denied repository, 404 NAME_UNKNOWN / MANIFEST_UNKNOWN / BLOB_UNKNOWN, a
307 to a presigned storage URL for a blob GET):
  --registry ADDR   address of the registry, e.g. 127.0.0.2:443 (loopback only)
  --tls-cert PEM    certificate chain (leaf first) of the registry and the storage
  --tls-key PEM     its private key
  --storage ADDR    also serve the layer storage (S3-shaped: presigned GET/HEAD, Range) here
  --storage-url URL base of the blob redirects, e.g.
                    https://prod-us-east-1-starport-layer-bucket.s3.us-east-1.amazonaws.com[:PORT]
                    (default https://STORAGE-ADDR with --storage, else ECR's bucket host for the
                    region in the request's Host)
  --repo NAME:TAG   a repository and tag that exist, with a small deterministic image (docker v2
                    schema 2 manifest; NAME:TAG=oci for an OCI one); repeatable
  --deny-repo NAME=KIND
                    ecr:BatchGetImage on NAME is denied (403): KIND is identity, resource,
                    explicit-identity or explicit-resource; repeatable
Control plane: GET /_fake/calls, GET /_fake/registry,
               POST /_fake/fault?service=ecr&fault=throttle[&count=N], ...
Example: fake-aws --registry 127.0.0.2:443 --storage 127.0.0.3:443 --tls-cert c.pem --tls-key k.pem \\
           --storage-url https://prod-us-east-1-starport-layer-bucket.s3.us-east-1.amazonaws.com \\
           --repo team/app:v1 --deny-repo secret/app=identity";

#[derive(Debug)]
struct Args {
    listen: SocketAddr,
    lifetime: Option<Duration>,
    account: Option<String>,
    region: Option<String>,
    rate: Option<f64>,
    burst: Option<u32>,
    latency: Option<Duration>,
    htpasswd: Option<std::path::PathBuf>,
    same_password: bool,
    verbose: bool,
    registry: Option<SocketAddr>,
    storage: Option<SocketAddr>,
    storage_url: Option<String>,
    tls_cert: Option<std::path::PathBuf>,
    tls_key: Option<std::path::PathBuf>,
    repos: Vec<RepoTag>,
    deny: Vec<(String, Deny)>,
}

/// A loopback `IP:PORT` for `flag`.
fn loopback_addr(flag: &str, v: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = v
        .parse()
        .map_err(|_| format!("{flag}: {v:?} is not an IP:PORT address"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{flag}: {addr} is not a loopback address; fake-aws only listens on loopback"
        ));
    }
    Ok(addr)
}

/// Parses `SECS` or a number with an `s`, `m`, `h` or `d` suffix.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86_400),
        _ => (s, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (expected SECS or e.g. 90s, 15m, 12h, 1d)"))?;
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("duration {s:?} is too large"))
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut a = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        lifetime: None,
        account: None,
        region: None,
        rate: None,
        burst: None,
        latency: None,
        htpasswd: None,
        same_password: false,
        verbose: false,
        registry: None,
        storage: None,
        storage_url: None,
        tls_cert: None,
        tls_key: None,
        repos: Vec::new(),
        deny: Vec::new(),
    };
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "-v" | "--verbose" => a.verbose = true,
            "--htpasswd" => a.htpasswd = Some(value("--htpasswd")?.into()),
            "--listen" => a.listen = loopback_addr("--listen", &value("--listen")?)?,
            "--registry" => a.registry = Some(loopback_addr("--registry", &value("--registry")?)?),
            "--storage" => a.storage = Some(loopback_addr("--storage", &value("--storage")?)?),
            "--storage-url" => a.storage_url = Some(value("--storage-url")?),
            "--tls-cert" => a.tls_cert = Some(value("--tls-cert")?.into()),
            "--tls-key" => a.tls_key = Some(value("--tls-key")?.into()),
            "--repo" => {
                let v = value("--repo")?;
                a.repos.push(v.parse().map_err(|e| format!("--repo: {e}"))?);
            }
            "--deny-repo" => {
                let v = value("--deny-repo")?;
                let (name, kind) = v
                    .rsplit_once('=')
                    .ok_or_else(|| format!("--deny-repo: {v:?} is not NAME=KIND"))?;
                let kind: Deny = kind.parse().map_err(|e| format!("--deny-repo: {e}"))?;
                a.deny.push((name.to_string(), kind));
            }
            "--same-password" => a.same_password = true,
            "--lifetime" => a.lifetime = Some(parse_duration(&value("--lifetime")?)?),
            "--account" => a.account = Some(value("--account")?),
            "--region" => a.region = Some(value("--region")?),
            "--rate" => {
                let v = value("--rate")?;
                let r: f64 = v
                    .parse()
                    .ok()
                    .filter(|r: &f64| r.is_finite() && *r >= 0.0)
                    .ok_or_else(|| format!("--rate: {v:?} is not a non-negative number"))?;
                a.rate = Some(r);
            }
            "--burst" => {
                let v = value("--burst")?;
                a.burst = Some(
                    v.parse()
                        .map_err(|_| format!("--burst: {v:?} is not a non-negative integer"))?,
                );
            }
            "--latency-ms" => {
                let v = value("--latency-ms")?;
                let ms: u64 = v
                    .parse()
                    .map_err(|_| format!("--latency-ms: {v:?} is not a non-negative integer"))?;
                a.latency = Some(Duration::from_millis(ms));
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.rate.is_some() != a.burst.is_some() {
        return Err("--rate and --burst go together".to_string());
    }
    if a.registry.is_some() {
        if a.tls_cert.is_none() || a.tls_key.is_none() {
            return Err("--registry needs --tls-cert and --tls-key (it serves HTTPS only)".into());
        }
    } else {
        let needs_registry = [
            ("--storage", a.storage.is_some()),
            ("--storage-url", a.storage_url.is_some()),
            ("--tls-cert", a.tls_cert.is_some()),
            ("--tls-key", a.tls_key.is_some()),
            ("--repo", !a.repos.is_empty()),
            ("--deny-repo", !a.deny.is_empty()),
        ];
        if let Some((flag, _)) = needs_registry.iter().find(|(_, set)| *set) {
            return Err(format!("{flag} needs --registry"));
        }
    }
    Ok(Some(a))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("fake-aws: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let aws = match FakeAws::start_on(args.listen) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fake-aws: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    aws.set_verbose(args.verbose);
    aws.set_same_password(args.same_password);
    if let Some(file) = args.htpasswd.clone() {
        aws.on_issue(move |password| write_htpasswd(&file, password));
    }
    if let Some(d) = args.lifetime {
        aws.set_token_lifetime(d);
    }
    if let Some(account) = &args.account {
        aws.set_ecr_account(account);
    }
    if args.account.is_some() || args.region.is_some() {
        aws.set_imds_identity(
            args.account.as_deref().unwrap_or("123456789012"),
            args.region.as_deref().unwrap_or("us-east-1"),
        );
    }
    if let (Some(rate), Some(burst)) = (args.rate, args.burst) {
        aws.set_rate_limit(Service::Ecr, rate, burst);
        aws.set_rate_limit(Service::EcrPublic, rate, burst);
    }
    if let Some(d) = args.latency {
        for s in Service::ALL {
            aws.set_latency(s, d);
        }
    }

    let registry = match args.registry.map(|addr| start_registry(&aws, addr, &args)) {
        None => None,
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            eprintln!("fake-aws: {e}");
            return ExitCode::FAILURE;
        }
    };

    let mut out = std::io::stdout().lock();
    // If nobody reads stdout any more, keep serving anyway.
    let mut lines = format!("listening {}\n", aws.endpoint());
    if let Some(r) = &registry {
        lines.push_str(&format!("registry {}\n", r.registry_addr()));
        if let Some(s) = r.storage_addr() {
            lines.push_str(&format!("storage {s}\n"));
        }
    }
    let _ = out.write_all(lines.as_bytes()).and_then(|()| out.flush());
    drop(out);
    loop {
        std::thread::park();
    }
}

/// Reads the certificate and key and starts the registry (and storage).
fn start_registry(
    aws: &FakeAws,
    registry: SocketAddr,
    args: &Args,
) -> Result<fake_aws::FakeRegistry, String> {
    let read = |flag: &str, p: &Option<std::path::PathBuf>| -> Result<Vec<u8>, String> {
        let p = p
            .as_ref()
            .ok_or_else(|| format!("--registry needs {flag}"))?;
        std::fs::read(p).map_err(|e| format!("{flag} {}: {e}", p.display()))
    };
    let config = RegistryConfig {
        registry,
        storage: args.storage,
        storage_url: args.storage_url.clone(),
        cert_pem: read("--tls-cert", &args.tls_cert)?,
        key_pem: read("--tls-key", &args.tls_key)?,
        repos: args.repos.clone(),
        deny: args.deny.clone(),
    };
    aws.start_registry(config).map_err(|e| e.to_string())
}

/// Replaces `file` (atomically) with one htpasswd line for user `AWS`.
fn write_htpasswd(file: &std::path::Path, password: &str) {
    let Ok(hash) = bcrypt::hash(password, 4) else {
        eprintln!("fake-aws: cannot hash a password");
        return;
    };
    let tmp = file.with_extension("fake-aws-tmp");
    if std::fs::write(&tmp, format!("AWS:{hash}\n"))
        .and_then(|()| std::fs::rename(&tmp, file))
        .is_err()
    {
        eprintln!("fake-aws: cannot write {}", file.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Option<Args>, String> {
        parse_args(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("-3").is_err());
    }

    #[test]
    fn args() {
        let a = parse(&[
            "--listen",
            "127.0.0.1:5000",
            "--rate=20",
            "--burst",
            "200",
            "-v",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(a.listen.port(), 5000);
        assert_eq!(a.rate, Some(20.0));
        assert_eq!(a.burst, Some(200));
        assert!(a.verbose);
        assert!(parse(&["--listen", "0.0.0.0:80"]).is_err());
        assert!(parse(&["--listen", "10.1.2.3:80"]).is_err());
        assert!(parse(&["--listen", "[::1]:0"]).is_ok());
        assert!(parse(&["--rate", "5"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["--help"]).unwrap().is_none());
    }

    #[test]
    fn registry_args() {
        let a = parse(&[
            "--registry",
            "127.0.0.2:443",
            "--tls-cert=c.pem",
            "--tls-key",
            "k.pem",
            "--storage",
            "127.0.0.3:443",
            "--storage-url",
            "https://prod-us-east-1-starport-layer-bucket.s3.us-east-1.amazonaws.com",
            "--repo",
            "team/app:v1",
            "--repo=team/app:v2=oci",
            "--deny-repo",
            "secret/app=explicit-resource",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(a.registry, Some("127.0.0.2:443".parse().unwrap()));
        assert_eq!(a.storage, Some("127.0.0.3:443".parse().unwrap()));
        assert_eq!(a.repos.len(), 2);
        assert_eq!(a.repos[1].format, fake_aws::ManifestFormat::Oci);
        assert_eq!(
            a.deny,
            vec![("secret/app".to_string(), Deny::ExplicitResource)]
        );
        assert!(parse(&["--registry", "127.0.0.2:443"]).is_err());
        assert!(
            parse(&[
                "--registry",
                "10.0.0.1:443",
                "--tls-cert",
                "c",
                "--tls-key",
                "k"
            ])
            .is_err()
        );
        assert!(parse(&["--repo", "a:b"]).is_err());
        assert!(parse(&["--storage", "127.0.0.1:0"]).is_err());
        let reg = [
            "--registry",
            "127.0.0.2:0",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
        ];
        assert!(parse(&[&reg[..], &["--deny-repo", "a=maybe"]].concat()).is_err());
        assert!(parse(&[&reg[..], &["--deny-repo", "a"]].concat()).is_err());
        assert!(parse(&[&reg[..], &["--repo", "Bad:tag"]].concat()).is_err());
    }
}
