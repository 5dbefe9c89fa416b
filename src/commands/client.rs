//! The client commands (`status`, `refresh`, `reload`): find the socket, ask the daemon, print.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

use crate::cli::{Cli, SocketArg};
use crate::config;
use crate::daemon::control::{self, ACTION_TIMEOUT, Request, Response};
use crate::escape::{shown, shown_lines};
use crate::status::{self, EXIT_UNKNOWN};

/// `--socket`, else the socket named in a readable config, else the default. Never IMDS, and the
/// config need not be valid: only `[daemon] socket` is read.
pub fn socket_path(cli: &Cli, arg: &SocketArg) -> PathBuf {
    if let Some(p) = &arg.socket {
        return p.clone();
    }
    sockets_in_config(cli)
        .and_then(|d| d.socket)
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_SOCKET))
}

/// The helper socket, for the credential helper and provider: `--socket` (or
/// `ECR_REFRESHERD_SOCKET`), else `helper_socket` in a readable config (beside its `socket` when
/// not set), else the default. A user who cannot read root's config gets the default.
pub fn helper_socket_path(cli: &Cli, arg: &SocketArg) -> PathBuf {
    if let Some(p) = &arg.socket {
        return p.clone();
    }
    match sockets_in_config(cli) {
        Some(PartialDaemon {
            helper_socket: Some(h),
            ..
        }) => h,
        Some(PartialDaemon {
            socket: Some(s), ..
        }) => s.with_file_name("helper.sock"),
        _ => PathBuf::from(config::DEFAULT_HELPER_SOCKET),
    }
}

#[derive(Debug, Deserialize, PartialEq)]
struct PartialDaemon {
    socket: Option<PathBuf>,
    helper_socket: Option<PathBuf>,
}

/// Only `[daemon] socket` and `helper_socket` of the config, if it can be read; it need not be valid.
fn sockets_in_config(cli: &Cli) -> Option<PartialDaemon> {
    #[derive(Deserialize)]
    struct Partial {
        daemon: Option<PartialDaemon>,
    }
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_CONFIG));
    let text = std::fs::read_to_string(&path).ok()?;
    let found = match toml::from_str::<Partial>(&text) {
        Ok(p) => p.daemon?,
        // A config with a syntax error elsewhere still names its sockets: `reload` must reach
        // the daemon to hear why the new config is rejected.
        Err(_) => scan_sockets(&text),
    };
    Some(absolute_only(found))
}

/// A relative path is no socket the daemon binds (its config must name absolute paths) and would
/// be looked up from wherever the client runs: the default is asked instead.
fn absolute_only(d: PartialDaemon) -> PartialDaemon {
    PartialDaemon {
        socket: d.socket.filter(|p| p.is_absolute()),
        helper_socket: d.helper_socket.filter(|p| p.is_absolute()),
    }
}

/// `socket` and `helper_socket` of `[daemon]`, read line by line from a file TOML cannot parse
/// (basic or literal strings on one line).
fn scan_sockets(text: &str) -> PartialDaemon {
    let mut out = PartialDaemon {
        socket: None,
        helper_socket: None,
    };
    let mut in_daemon = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_daemon = l.trim_start_matches('[').trim_end_matches(']').trim() == "daemon";
            continue;
        }
        if !in_daemon {
            continue;
        }
        let Some((key, value)) = l.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let quoted = value
            .strip_prefix('"')
            .and_then(|v| v.split_once('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.split_once('\'')))
            .map(|(v, _)| PathBuf::from(v));
        match key.trim() {
            "socket" => out.socket = quoted,
            "helper_socket" => out.helper_socket = quoted,
            _ => {}
        }
    }
    out
}

/// Asks the daemon. Exit codes when it cannot: 2 the daemon refused the request (an unknown
/// host), 3 no daemon answers, 4 a daemon is there but this user may not ask it.
async fn ask(socket: &Path, req: Request) -> Result<Response, u8> {
    match control::request(socket, &req, ACTION_TIMEOUT).await {
        Ok(Response::Error { message }) => {
            eprintln!("ecr-refresherd: the daemon says: {}", shown(&message));
            Err(crate::startup::exit::CONFIG)
        }
        Ok(r) => Ok(r),
        Err(e) => {
            eprintln!("ecr-refresherd: {}", shown(&e.to_string()));
            Err(match e {
                control::ClientError::Denied(_) => crate::startup::exit::DENIED,
                _ => EXIT_UNKNOWN,
            })
        }
    }
}

/// `status`: the table (or JSON); exit 0 ok, 1 failing, 2 no valid token, 3 no daemon.
pub async fn status(cli: &Cli, arg: &SocketArg, json: bool) -> u8 {
    let socket = socket_path(cli, arg);
    let st = match ask(&socket, Request::Status).await {
        Ok(Response::Status { status }) => status,
        Ok(_) => {
            eprintln!("ecr-refresherd: unexpected answer");
            return EXIT_UNKNOWN;
        }
        Err(code) => return code,
    };
    let now = SystemTime::now();
    if json {
        let text = serde_json::to_string_pretty(&st).unwrap_or_default();
        println!("{}", crate::escape::json(&text));
    } else {
        print!("{}", status::render(&st, now));
    }
    status::exit_code(&st, now)
}

/// `metrics`: the daemon's Prometheus text; exit 0, or 3 without a daemon.
pub async fn metrics(cli: &Cli, arg: &SocketArg) -> u8 {
    let socket = socket_path(cli, arg);
    match ask(&socket, Request::Metrics).await {
        Ok(Response::Metrics { text }) => {
            print!("{text}");
            0
        }
        Ok(_) => {
            eprintln!("ecr-refresherd: unexpected answer");
            EXIT_UNKNOWN
        }
        Err(code) => code,
    }
}

/// `refresh [HOST]`: one line per registry; exit 0 when all succeeded, 1 otherwise, 3 no daemon.
pub async fn refresh(cli: &Cli, arg: &SocketArg, host: Option<&str>) -> u8 {
    let socket = socket_path(cli, arg);
    let results = match ask(
        &socket,
        Request::Refresh {
            host: host.map(str::to_string),
        },
    )
    .await
    {
        Ok(Response::Refresh { results }) => results,
        Ok(_) => return EXIT_UNKNOWN,
        Err(code) => return code,
    };
    let mut code = 0;
    for r in &results {
        if r.ok {
            println!(
                "registry {}: ok, token expires {}",
                shown(&r.host),
                shown(r.expires_at.as_deref().unwrap_or("?"))
            );
        } else {
            println!(
                "registry {}: FAILED: {}",
                shown(&r.host),
                shown(r.error.as_deref().unwrap_or("unknown error"))
            );
            code = 1;
        }
    }
    code
}

/// `reload`: waits for the daemon's verdict; exit 0 applied, 1 the new config is invalid, 3 no daemon.
pub async fn reload(cli: &Cli, arg: &SocketArg) -> u8 {
    let socket = socket_path(cli, arg);
    match ask(&socket, Request::Reload).await {
        Ok(Response::Reload { ok: true, message }) => {
            println!("{}", shown(&message));
            0
        }
        Ok(Response::Reload { ok: false, message }) => {
            // Config diagnostics are one per line: the line feeds stay, nothing else raw.
            eprintln!(
                "ecr-refresherd: the new config was rejected; the daemon keeps the previous one:\n{}",
                shown_lines(&message)
            );
            1
        }
        Ok(_) => EXIT_UNKNOWN,
        Err(code) => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_are_read_from_a_config_toml_cannot_parse() {
        let text = "[daemon]\nsocket = \"/run/x/ctl.sock\"\nhelper_socket = '/run/x/h.sock'\nbroken = [\n[[registry]]\nsocket = \"/not/this\"\n";
        assert!(toml::from_str::<toml::Value>(text).is_err());
        assert_eq!(
            scan_sockets(text),
            PartialDaemon {
                socket: Some(PathBuf::from("/run/x/ctl.sock")),
                helper_socket: Some(PathBuf::from("/run/x/h.sock")),
            }
        );
        assert_eq!(
            absolute_only(scan_sockets(
                "[daemon]\nsocket = \"run/ctl.sock\"\nhelper_socket = \"/run/h.sock\"\nx = [\n"
            )),
            PartialDaemon {
                socket: None,
                helper_socket: Some(PathBuf::from("/run/h.sock")),
            }
        );
        assert_eq!(
            scan_sockets("[[target]]\nsocket = \"/no\"\n"),
            PartialDaemon {
                socket: None,
                helper_socket: None
            }
        );
    }
}
