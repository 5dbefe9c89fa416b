//! Command-line interface: the clap definitions, with examples in `--help`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  ecr-refresherd check                      validate the config and diagnose every auth file
  ecr-refresherd once                       refresh every registry and write every auth file once
  ecr-refresherd --config ./my.toml once    the same with another config file

Exit codes: 0 success, 1 something failed (or warnings, for check), 2 the config is invalid.";

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

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch every token and write every auth file once, then exit.
    Once,
    /// Validate the config and diagnose each auth file without calling AWS.
    Check,
}
