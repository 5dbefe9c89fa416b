//! The `ecr-refresherd` binary: parse the command line, dispatch, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use ecr_refresherd::cli::{Cli, Command};
use ecr_refresherd::commands;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ecr-refresherd: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(async {
        match &cli.command {
            Command::Once => commands::once(&cli).await,
            Command::Check => commands::check(&cli).await,
        }
    });
    ExitCode::from(code)
}
