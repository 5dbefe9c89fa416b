//! Command-line interface: the clap definitions, with examples in `--help`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  ecr-refresherd                            run the daemon (what systemd starts)
  ecr-refresherd status                     show every registry and auth file (exit 0 ok, 1 failing, 2 no valid token, 3 no daemon)
  ecr-refresherd refresh public.ecr.aws     refresh one registry now and print the outcome
  ecr-refresherd reload                     re-read the config; fails when the new config is invalid
  ecr-refresherd check                      validate the config and diagnose every auth file, no AWS call
  ecr-refresherd once                       refresh every registry and write every auth file once, then exit
  ecr-refresherd --config ./my.toml once    the same with another config file";

/// Keeps Amazon ECR logins fresh in docker config.json and podman auth.json files.
#[derive(Debug, Parser)]
#[command(name = "ecr-refresherd", version, about, after_help = EXAMPLES)]
pub struct Cli {
    /// The config file [default: /etc/ecr-refresherd/config.toml; without it, the instance's own registry]
    #[arg(long, short = 'c', global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Where podman keeps per-uid auth files (`<dir>/containers/<uid>/auth.json`); for tests.
    #[arg(
        long,
        global = true,
        hide = true,
        default_value = "/run",
        value_name = "DIR"
    )]
    pub run_dir: PathBuf,

    /// What to do; the daemon (`run`) when none is given.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Where the client commands find the daemon.
#[derive(Debug, Clone, clap::Args)]
pub struct SocketArg {
    /// The daemon's control socket [default: `socket` in the config, else /run/ecr-refresherd/status.sock]
    #[arg(long, value_name = "PATH", env = "ECR_REFRESHERD_SOCKET")]
    pub socket: Option<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: keep every auth file fresh until stopped (the default).
    Run {
        /// Report READY to systemd after this long even if the first round is still running
        /// (keep it under the unit's TimeoutStartSec).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        start_timeout: Duration,
    },
    /// Fetch every token and write every auth file once, then exit.
    Once,
    /// Validate the config and diagnose each auth file without calling AWS.
    Check,
    /// Print a config for this host: its instance's registry (instance metadata) and the docker
    /// and podman auth files that exist; `--write PATH` writes it there instead (0600, never over
    /// an existing file).
    Init {
        /// Write the config to this new file instead of printing it.
        #[arg(long, value_name = "PATH")]
        write: Option<PathBuf>,
        /// Look for users and files under this directory instead of `/` (tests).
        #[arg(long, hide = true, default_value = "/", value_name = "DIR")]
        root: PathBuf,
    },
    /// Ask the running daemon how every registry and auth file is.
    Status {
        /// Print the daemon's JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Where the daemon listens.
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Print the running daemon's metrics (Prometheus text, what `metrics_file` holds).
    Metrics {
        /// Where the daemon listens.
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Ask the running daemon to refresh now (every registry, or one host) and print the outcome.
    Refresh {
        /// One registry host; default: all.
        host: Option<String>,
        /// Where the daemon listens.
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Say why a pull of IMAGE from ECR fails, step by step, and what fixes it (read only; no
    /// daemon needed): exit 0 when the pull would work, 1 when a step fails.
    Doctor {
        /// The image, as given to docker pull (host/repository:tag or @digest).
        image: String,
        /// Look at this user's docker and podman files instead of the configured targets.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask the running daemon to re-read its config; exits non-zero when the new config is invalid.
    Reload {
        /// Where the daemon listens.
        #[command(flatten)]
        socket: SocketArg,
    },
    /// A kubelet credential provider plugin: a CredentialProviderRequest on stdin, the response
    /// from the daemon's memory on stdout (root only).
    CredentialProvider {
        /// Where the daemon listens.
        #[command(flatten)]
        socket: SocketArg,
    },
    /// The docker credential helper protocol (what `docker-credential-ecr-refresherd` runs).
    #[command(hide = true)]
    CredentialHelper {
        /// get, store, erase, list or version.
        action: String,
        /// Where the daemon listens.
        #[command(flatten)]
        socket: SocketArg,
    },
}

/// The name under which this executable is the docker credential helper.
pub const HELPER_NAME: &str = "docker-credential-ecr-refresherd";
