//! The credential helper's `get` side by side with Amazon's `docker-credential-ecr-login get`
//! (cached and uncached), both against the fake ECR, in a network and mount namespace of their own.
//!
//! `docker-credential-ecr-login` (Debian's 0.6.0, aws-sdk-go-v2 1.17) has no endpoint override: in
//! its own namespaces `api.ecr.us-east-1.amazonaws.com` resolves to 127.0.0.1 (a private
//! `/etc/hosts`), where socat terminates TLS with a throwaway CA (`AWS_CA_BUNDLE`) in front of the
//! fake. Its traffic never leaves the namespace, and the uncached figure is what it costs on
//! loopback: against the real ECR a network round trip is added.

use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fake_aws::{FakeAws, Service};

use crate::Result;

/// A host `docker-credential-ecr-login` takes for ECR (12-digit account, a region it resolves).
const HOST: &str = "111111111111.dkr.ecr.us-east-1.amazonaws.com";
const API_HOST: &str = "api.ecr.us-east-1.amazonaws.com";

/// Latencies of each helper's `get`, from spawn to exit, and the API calls each side made.
pub struct Helpers {
    pub ours: Vec<Duration>,
    pub ours_calls: usize,
    pub cached: Vec<Duration>,
    pub cached_calls: usize,
    pub uncached: Vec<Duration>,
    pub uncached_calls: usize,
    /// `/bin/true`, spawned and waited for the same way: what any helper costs at least.
    pub floor: Vec<Duration>,
}

/// Runs the comparison in new namespaces (`unshare`, as root): re-executes this benchmark with
/// `--helper-inner`, which prints one line of JSON.
pub fn compare(bin: &Path, dir: &Path, runs: usize) -> Result<Helpers> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private", "--"])
        .arg(me)
        .arg("--helper-inner")
        .arg("--bin")
        .arg(bin)
        .arg("--dir")
        .arg(dir)
        .arg("--runs")
        .arg(runs.to_string())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("unshare: {e}"))?;
    if !out.status.success() {
        return Err(format!("the helper comparison failed ({})", out.status));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("helper comparison: {e}"))?;
    let durations = |k: &str| -> Vec<Duration> {
        v[k].as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_u64())
            .map(Duration::from_nanos)
            .collect()
    };
    let count = |k: &str| v[k].as_u64().unwrap_or(u64::MAX) as usize;
    Ok(Helpers {
        ours: durations("ours"),
        ours_calls: count("ours_calls"),
        cached: durations("cached"),
        cached_calls: count("cached_calls"),
        uncached: durations("uncached"),
        uncached_calls: count("uncached_calls"),
        floor: durations("floor"),
    })
}

/// The namespaced side: sets up loopback, names and TLS, runs both helpers, prints JSON.
pub fn inner(bin: &Path, dir: &Path, runs: usize) -> Result<()> {
    let d = dir.join("helpers");
    std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    run(Command::new("ip").args(["link", "set", "lo", "up"]))?;
    let hosts = d.join("hosts");
    std::fs::write(
        &hosts,
        format!("127.0.0.1 localhost\n127.0.0.1 {API_HOST}\n"),
    )
    .map_err(|e| e.to_string())?;
    run(Command::new("mount")
        .arg("--bind")
        .arg(&hosts)
        .arg("/etc/hosts"))?;
    let ca = certificates(&d)?;

    let fake = FakeAws::start().map_err(|e| e.to_string())?;
    let socat = Command::new("socat")
        .arg(format!(
            "OPENSSL-LISTEN:443,bind=127.0.0.1,reuseaddr,fork,verify=0,cert={}",
            d.join("server.pem").display()
        ))
        .arg(format!("TCP:{}", fake.addr()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("socat: {e}"))?;
    let _socat = Killed(socat);
    wait_until(Duration::from_secs(10), || {
        TcpStream::connect("127.0.0.1:443").is_ok()
    })
    .then_some(())
    .ok_or("socat did not listen")?;

    // Ours: the daemon holds the token; the helper asks it over the helper socket.
    let socket = d.join("helper.sock");
    let config = d.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_dir = \"{}\"\nsocket = \"{}\"\nhelper_socket = \"{}\"\n\
             [[target]]\npath = \"{}\"\n[[registry]]\nhost = \"{HOST}\"\n",
            d.join("state").display(),
            d.join("ctl.sock").display(),
            socket.display(),
            d.join("t/config.json").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut daemon = Command::new(bin);
    daemon.env_clear();
    for (k, v) in fake.env() {
        daemon.env(k, v);
    }
    let daemon = daemon
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", &d)
        .env("PATH", "/usr/bin:/bin")
        .arg("--config")
        .arg(&config)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let _daemon = Killed(daemon);
    let link = d.join("docker-credential-ecr-refresherd");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(bin, &link).map_err(|e| e.to_string())?;
    let ours = |c: &mut Command| {
        c.env_clear()
            .env("ECR_REFRESHERD_SOCKET", &socket)
            .env("PATH", "/usr/bin:/bin");
    };
    wait_until(Duration::from_secs(30), || get(&link, &ours).is_ok())
        .then_some(())
        .ok_or("the daemon's helper never answered")?;
    // Amazon's helper, with and without its file cache.
    let ecr_login = PathBuf::from("/usr/bin/docker-credential-ecr-login");
    let home = d.join("ecr-home");
    std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
    let theirs = |cache: bool| {
        let home = home.clone();
        let ca = ca.clone();
        move |c: &mut Command| {
            c.env_clear()
                .env("HOME", &home)
                .env("PATH", "/usr/bin:/bin")
                .env("AWS_ACCESS_KEY_ID", fake_aws::FAKE_ACCESS_KEY_ID)
                .env("AWS_SECRET_ACCESS_KEY", fake_aws::FAKE_SECRET_ACCESS_KEY)
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env("AWS_CA_BUNDLE", &ca);
            if !cache {
                c.env("AWS_ECR_DISABLE_CACHE", "true");
            }
        }
    };
    get(&ecr_login, &theirs(true))?; // fills its cache
    let (cached_env, uncached_env) = (theirs(true), theirs(false));
    // Interleaved, so a slower stretch of a shared machine falls on every side alike; each
    // side's API calls counted around its own runs. `/bin/true` is the process-spawn floor.
    let (mut ours_times, mut cached, mut uncached, mut floor) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut ours_calls, mut cached_calls, mut uncached_calls) = (0, 0, 0);
    let counted = |calls: &mut usize, run: &mut dyn FnMut() -> Result<Duration>| {
        let before = fake.count(Service::Ecr);
        let took = run();
        *calls += fake.count(Service::Ecr) - before;
        took
    };
    for i in 0..runs {
        ours_times.push(counted(&mut ours_calls, &mut || get(&link, &ours))?);
        cached.push(counted(&mut cached_calls, &mut || {
            get(&ecr_login, &cached_env)
        })?);
        if i < runs.min(100) {
            uncached.push(counted(&mut uncached_calls, &mut || {
                get(&ecr_login, &uncached_env)
            })?);
        }
        let start = Instant::now();
        run(&mut Command::new("/bin/true"))?;
        floor.push(start.elapsed());
    }

    let nanos = |v: &[Duration]| v.iter().map(|d| d.as_nanos() as u64).collect::<Vec<_>>();
    let out = serde_json::json!({
        "ours": nanos(&ours_times),
        "ours_calls": ours_calls,
        "cached": nanos(&cached),
        "cached_calls": cached_calls,
        "uncached": nanos(&uncached),
        "uncached_calls": uncached_calls,
        "floor": nanos(&floor),
    });
    println!("{out}");
    Ok(())
}

/// A child killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(c: &mut Command) -> Result<()> {
    let out = c.output().map_err(|e| format!("{c:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{c:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A throwaway CA and a certificate for the API host signed by it; returns the CA's path.
fn certificates(d: &Path) -> Result<PathBuf> {
    let p = |n: &str| d.join(n);
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=ecr-bench CA",
            "-keyout",
        ])
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.pem")))?;
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-subj", &format!("/CN={API_HOST}"), "-keyout"])
        .arg(p("server.key"))
        .arg("-out")
        .arg(p("server.csr")))?;
    std::fs::write(
        p("ext"),
        format!("subjectAltName=DNS:{API_HOST}\nextendedKeyUsage=serverAuth\n"),
    )
    .map_err(|e| e.to_string())?;
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "1", "-in"])
        .arg(p("server.csr"))
        .arg("-CA")
        .arg(p("ca.pem"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-CAcreateserial")
        .arg("-extfile")
        .arg(p("ext"))
        .arg("-out")
        .arg(p("server.crt")))?;
    let mut pem = std::fs::read(p("server.crt")).map_err(|e| e.to_string())?;
    pem.extend(std::fs::read(p("server.key")).map_err(|e| e.to_string())?);
    std::fs::write(p("server.pem"), pem).map_err(|e| e.to_string())?;
    Ok(p("ca.pem"))
}

/// One `get` of HOST, from spawn to exit; the answer must carry a secret.
fn get(helper: &Path, env: &dyn Fn(&mut Command)) -> Result<Duration> {
    let mut c = Command::new(helper);
    env(&mut c);
    c.arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let start = Instant::now();
    let mut child = c
        .spawn()
        .map_err(|e| format!("{}: {e}", helper.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(HOST.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let took = start.elapsed();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    if out.status.success() && v["Secret"].as_str().is_some_and(|s| !s.is_empty()) {
        Ok(took)
    } else {
        Err(format!(
            "{} get: {}: {}",
            helper.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}

fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
