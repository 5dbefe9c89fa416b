//! `fake-portainer` binary: runs the fake Portainer API over HTTPS on loopback until killed.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use fake_portainer::FakePortainer;

const USAGE: &str = "\
usage: fake-portainer --dir DIR [--listen 127.0.0.1:0] [--portainer-version V]

Serves a fake Portainer CE API over HTTPS on one loopback port. Writes DIR/ca.pem (the CA of
the server certificate), DIR/admin.key and DIR/user.key (API keys of an administrator and of a
standard user, mode 0600, no trailing newline), then prints `listening https://127.0.0.1:PORT`
and serves until killed.
  --dir DIR                where to write ca.pem, admin.key and user.key (must exist)
  --listen ADDR            loopback address to bind (default 127.0.0.1:0)
  --portainer-version V    Version of GET /api/system/status (default 2.21.4)
Control plane (same port, no auth): GET /_fake/records, POST /_fake/records,
GET /_fake/requests, DELETE /_fake/requests, GET /_fake/secrets.";

#[derive(Debug)]
struct Args {
    listen: SocketAddr,
    dir: PathBuf,
    version: Option<String>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut dir = None;
    let mut version = None;
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
            "--dir" => dir = Some(PathBuf::from(value("--dir")?)),
            "--portainer-version" => version = Some(value("--portainer-version")?),
            "--listen" => {
                let v = value("--listen")?;
                let addr: SocketAddr = v
                    .parse()
                    .map_err(|_| format!("--listen: {v:?} is not an IP:PORT address"))?;
                if !addr.ip().is_loopback() {
                    return Err(format!(
                        "--listen: {addr} is not a loopback address; fake-portainer only listens on loopback"
                    ));
                }
                listen = addr;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let dir = dir.ok_or("--dir is required")?;
    Ok(Some(Args {
        listen,
        dir,
        version,
    }))
}

/// Writes `contents` to `path` with `mode` (also when the file already existed).
fn write_file(path: &Path, contents: &str, mode: u32) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("fake-portainer: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let portainer = match FakePortainer::start_on(args.listen) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fake-portainer: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    if let Some(v) = &args.version {
        portainer.set_version(v);
    }
    let files = [
        ("ca.pem", portainer.ca_pem(), 0o644),
        ("admin.key", portainer.admin_key(), 0o600),
        ("user.key", portainer.user_key(), 0o600),
    ];
    for (name, contents, mode) in files {
        let path = args.dir.join(name);
        if let Err(e) = write_file(&path, &contents, mode) {
            eprintln!("fake-portainer: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }

    let mut out = std::io::stdout().lock();
    // If nobody reads stdout any more, keep serving anyway.
    let _ = writeln!(out, "listening {}", portainer.url()).and_then(|()| out.flush());
    drop(out);
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Option<Args>, String> {
        parse_args(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn args() {
        let a = parse(&["--listen", "127.0.0.1:5000", "--dir=/tmp/x"])
            .unwrap()
            .unwrap();
        assert_eq!(a.listen.port(), 5000);
        assert_eq!(a.dir, PathBuf::from("/tmp/x"));
        assert!(
            parse(&["--listen", "127.0.0.1:0"]).is_err(),
            "--dir is required"
        );
        assert!(parse(&["--dir", "/tmp", "--listen", "0.0.0.0:80"]).is_err());
        assert!(parse(&["--dir", "/tmp", "--bogus"]).is_err());
        assert!(parse(&["--help"]).unwrap().is_none());
    }
}
