//! The `ecr-refresherd` binary: parse the command line, dispatch, map errors to exit codes.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ecr_refresherd::cli::{Cli, Command};
use ecr_refresherd::commands::{self, client};
use ecr_refresherd::daemon;

fn main() -> ExitCode {
    // Run as `docker-credential-ecr-refresherd ACTION` (a link to this executable), docker's way.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let as_helper = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n == ecr_refresherd::cli::HELPER_NAME);
    let cli = if as_helper {
        let mut argv = vec![std::ffi::OsString::from("ecr-refresherd")];
        argv.push("credential-helper".into());
        argv.extend(args.into_iter().skip(1));
        Cli::parse_from(argv)
    } else {
        Cli::parse_from(args)
    };
    // glibc gives each thread that allocates its own arena and keeps what it freed: with the
    // blocking threads that parse files, that multiplied the resident memory at scale.
    // SAFETY: called before any other thread exists; mallopt only sets an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    // The credential helper and provider are run per pull: one thread, no workers to start and
    // stop (a third of their run time).
    let one_shot = matches!(
        cli.command,
        Some(Command::CredentialHelper { .. } | Command::CredentialProvider { .. })
    );
    let built = if one_shot {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(64)
            // Idle, the daemon has blocking work every 30 s (account names) and every minute
            // (the metrics file): a thread kept that long is reused, not started and torn down
            // each time (tokio's default keeps one 10 s).
            .thread_keep_alive(Duration::from_secs(90))
            .enable_all()
            .build()
    };
    let runtime = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ecr-refresherd: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(async {
        match &cli.command {
            None => daemon::run(&cli, Duration::from_secs(30)).await,
            Some(Command::Run { start_timeout }) => daemon::run(&cli, *start_timeout).await,
            Some(Command::Once) => commands::once(&cli).await,
            Some(Command::Init { write, root }) => {
                commands::init::init(root, write.as_deref()).await
            }
            Some(Command::Doctor { image, user, json }) => {
                ecr_refresherd::doctor::doctor(
                    &cli,
                    ecr_refresherd::doctor::Options {
                        image,
                        user: user.as_deref(),
                        json: *json,
                    },
                )
                .await
            }
            Some(Command::Check) => commands::check(&cli).await,
            Some(Command::Status { json, socket }) => client::status(&cli, socket, *json).await,
            Some(Command::Refresh { host, socket }) => {
                client::refresh(&cli, socket, host.as_deref()).await
            }
            Some(Command::Reload { socket }) => client::reload(&cli, socket).await,
            Some(Command::Metrics { socket }) => client::metrics(&cli, socket).await,
            Some(Command::CredentialProvider { socket }) => {
                let socket = client::helper_socket_path(&cli, socket);
                commands::helper::credential_provider(&socket).await
            }
            Some(Command::CredentialHelper { action, socket }) => {
                let socket = client::helper_socket_path(&cli, socket);
                commands::helper::credential_helper(&socket, action).await
            }
        }
    });
    // Blocking writes still running (none after a clean stop) must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    ExitCode::from(code)
}
