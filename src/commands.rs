//! The one-shot commands (`once`, `check`): load settings, act, print one line per item, exit code.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::atomic::Outcome;
use crate::check;
use crate::cli::Cli;
use crate::config::{self, ConfigError, Settings, SystemAccounts};
use crate::escape::{self, shown, shown_lines};
use crate::logging;
use crate::refresh::{self, owner_policy};
use crate::state::State;
use crate::token::{self, AwsTokenSource};

/// Exit code: everything worked.
pub const EXIT_OK: u8 = 0;
/// Exit code: something failed (what worked is written), or `check` found warnings.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: the config is invalid (or missing with no instance metadata).
pub const EXIT_CONFIG: u8 = 2;

/// Loads the config named on the command line, else the default file, else the zero-config default
/// from instance metadata.
pub async fn load_settings(cli: &Cli) -> Result<Settings, String> {
    let accounts = SystemAccounts;
    // Absolute, so the daemon can watch its directory and reload it after a chdir.
    let default = match &cli.config {
        Some(p) => std::path::absolute(p).unwrap_or_else(|_| p.clone()),
        None => PathBuf::from(config::DEFAULT_CONFIG),
    };
    let default = default.as_path();
    match config::load(default, &accounts) {
        // A missing default file, or any file with every line commented out (as packaged), means
        // "this instance's own registry"; an explicitly named file must exist.
        Err(ConfigError::Read { source, .. })
            if cli.config.is_none() && source.kind() == std::io::ErrorKind::NotFound => {}
        Err(ConfigError::Empty { .. }) => {}
        Ok(settings) => {
            config::log_warnings(&settings);
            return Ok(settings);
        }
        Err(e) => return Err(e.to_string()),
    }
    let (account, region) = token::instance_identity().await.map_err(|e| {
        format!(
            "no settings in {} and no instance identity to fall back on ({e}); write a config file (see config.example.toml)",
            default.display()
        )
    })?;
    let settings = config::zero_config(&account, &region)?;
    tracing::info!(
        registry = %settings.registries[0].host,
        target = config::DEFAULT_TARGET,
        "no settings in {}: using this instance's own registry",
        default.display()
    );
    Ok(settings)
}

/// Removes temp files a crash of ours left beside each target.
pub fn remove_stray_temp_files(settings: &Settings) {
    for t in &settings.targets {
        match crate::atomic::remove_stray_temp_files(&t.path, owner_policy(t)) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(target_path = %t.path.display(), removed = n, "removed temp files left by an earlier crash")
            }
            Err(e) => tracing::debug!(error = %e, "cannot look for stray temp files"),
        }
    }
}

fn target_label(name: &str, path: &Path) -> String {
    if Path::new(name) == path {
        path.display().to_string()
    } else {
        format!("{name} ({})", path.display())
    }
}

/// `once`: one full round, one line per registry and per target on stdout.
pub async fn once(cli: &Cli) -> u8 {
    logging::init("info", false);
    let settings = match load_settings(cli).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ecr-refresherd: {}", shown_lines(&e));
            return EXIT_CONFIG;
        }
    };
    logging::set_level(&settings.daemon.log_level);
    let s = settings.clone();
    let _ = tokio::task::spawn_blocking(move || remove_stray_temp_files(&s)).await;
    let state_dir = settings.daemon.state_dir.clone();
    let (mut state, warning) = {
        let d = state_dir.clone();
        tokio::task::spawn_blocking(move || State::load(&d))
            .await
            .unwrap_or_default()
    };
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    let source = Arc::new(AwsTokenSource::new(3));
    let report = refresh::round(&settings, &source, &mut state).await;
    for r in &report.registries {
        match &r.result {
            Ok(t) => println!(
                "{}",
                shown(&format!(
                    "registry {}: ok, token expires {}",
                    r.host,
                    crate::status::rfc3339(t.expires_at)
                ))
            ),
            Err(e) => println!("{}", shown(&format!("registry {}: FAILED: {e}", r.host))),
        }
    }
    for t in &report.targets {
        let label = target_label(&t.name, &t.path);
        match &t.result {
            Ok(w) => println!(
                "{}",
                shown(&format!(
                    "target {label}: {} ({} entries set, {} removed)",
                    match w.outcome {
                        Outcome::Written => "written",
                        Outcome::Unchanged => "unchanged",
                    },
                    w.set,
                    w.removed
                ))
            ),
            Err(e) => println!("{}", shown(&format!("target {label}: FAILED: {e}"))),
        }
    }
    let saved = tokio::task::spawn_blocking(move || state.save(&state_dir)).await;
    let state_ok = match saved {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            eprintln!(
                "ecr-refresherd: {}",
                shown(&format!("cannot save state: {e}"))
            );
            false
        }
        Err(e) => {
            eprintln!(
                "ecr-refresherd: {}",
                shown(&format!("cannot save state: {e}"))
            );
            false
        }
    };
    if report.all_ok() && state_ok {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

/// `check`: validate the config and diagnose every target; no AWS call.
pub async fn check(cli: &Cli) -> u8 {
    logging::init("warn", false);
    let settings = match load_settings(cli).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ecr-refresherd: {}", shown_lines(&e));
            return EXIT_CONFIG;
        }
    };
    match &settings.source {
        Some(p) => println!(
            "config {}: ok ({} registries, {} targets)",
            escape::path(p),
            settings.registries.len(),
            settings.targets.len()
        ),
        None => println!(
            "config: none, using this instance's registry {}",
            shown(&settings.registries[0].host)
        ),
    }
    let run_dir = cli.run_dir.clone();
    let s = settings.clone();
    let diagnoses = tokio::task::spawn_blocking(move || check::diagnose(&s, &run_dir))
        .await
        .unwrap_or_default();
    let mut code = EXIT_OK;
    for d in &diagnoses {
        let label = target_label(&d.name, &d.path);
        if d.errors.is_empty() && d.warnings.is_empty() {
            println!("target {}: ok", shown(&label));
        }
        for e in &d.errors {
            println!("{}", shown(&format!("target {label}: ERROR: {e}")));
            code = EXIT_CONFIG;
        }
        for w in &d.warnings {
            println!("{}", shown(&format!("target {label}: warning: {w}")));
            code = code.max(EXIT_FAILED);
        }
    }
    code
}
