//! `fake-aws` binary: runs the fake AWS server on loopback until killed.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use fake_aws::{FakeAws, Service};

const USAGE: &str = "\
usage: fake-aws [--listen 127.0.0.1:0] [--lifetime 12h|SECS] [--account A] [--region R]
                [--rate R --burst B] [--latency-ms N] [--htpasswd FILE] [--verbose]

Serves fake ECR, ECR Public, STS and IMDSv2 on one loopback port, prints
`listening http://127.0.0.1:PORT` and serves until killed.
  --listen ADDR     loopback address to bind (default 127.0.0.1:0)
  --lifetime D      ECR / ECR Public token lifetime: SECS or Ns/Nm/Nh/Nd (default 12h)
  --account A       account for ECR proxyEndpoint and the IMDS identity (default 123456789012)
  --region R        region of the IMDS identity (default us-east-1)
  --rate R          token-bucket limit per second for ECR and ECR Public (each), needs --burst
  --burst B         token-bucket size
  --latency-ms N    delay before every response of every service
  --htpasswd FILE   after each issued ECR password, write FILE as `AWS:<bcrypt>` (a registry
                    that re-reads it then accepts exactly the newest token's password)
  --verbose         one line per request on stderr
Control plane: GET /_fake/calls, POST /_fake/fault?service=ecr&fault=throttle[&count=N], ...";

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
    verbose: bool,
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
        verbose: false,
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
            "--listen" => {
                let v = value("--listen")?;
                let addr: SocketAddr = v
                    .parse()
                    .map_err(|_| format!("--listen: {v:?} is not an IP:PORT address"))?;
                if !addr.ip().is_loopback() {
                    return Err(format!(
                        "--listen: {addr} is not a loopback address; fake-aws only listens on loopback"
                    ));
                }
                a.listen = addr;
            }
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

    let mut out = std::io::stdout().lock();
    // If nobody reads stdout any more, keep serving anyway.
    let _ = writeln!(out, "listening {}", aws.endpoint()).and_then(|()| out.flush());
    drop(out);
    loop {
        std::thread::park();
    }
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
}
