//! The one-shot commands (`once`, `check`) and the socket clients: act, print one line per item,
//! exit code.

pub mod client;
pub mod helper;
pub mod init;

use std::path::Path;
use std::sync::Arc;

use crate::cli::Cli;
use crate::ecr::token::AwsTokenSource;
use crate::escape::{self, shown, shown_lines};
use crate::logging;
use crate::portainer;
use crate::safe_fs::Outcome;
use crate::startup::{self, Source, exit};
use crate::status::{PortainerStatus, kind_name};
use crate::targets::diagnose;
use crate::targets::files;
use crate::targets::state::State;

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
    let settings = match Source::of(cli.config.as_deref()).load().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ecr-refresherd: {}", shown_lines(&e.to_string()));
            return exit::CONFIG;
        }
    };
    logging::set_level(&settings.daemon.log_level);
    let s = settings.clone();
    let _ = tokio::task::spawn_blocking(move || startup::remove_stray_temp_files(&s)).await;
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
    let report = files::round(&settings, &source, &mut state).await;
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
    // After the state is saved: a Portainer that hangs (each round ends within two minutes)
    // must not keep what was written to the files from being recorded.
    let mut portainer_ok = true;
    if !settings.portainers.is_empty() {
        let mut creds = crate::targets::consumer::Credentials::new();
        for r in &report.registries {
            let (Ok(token), Some(reg)) = (
                &r.result,
                settings.registries.iter().find(|s| s.host == r.host),
            ) else {
                continue;
            };
            for name in reg.names() {
                creds.insert(name.to_string(), token.clone());
            }
        }
        for p in &settings.portainers {
            let mut instance =
                portainer::Instance::new(p.clone(), portainer::managed_hosts(&settings));
            let outcome = instance.round(Some(&creds), true).await;
            portainer_ok &= outcome.ok;
            print_portainer(instance.status(), Some(outcome.updated));
        }
    }
    if report.all_ok() && state_ok && portainer_ok {
        exit::OK
    } else {
        exit::FAILED
    }
}

/// One line for a Portainer instance, one per record of interest; whether an error was shown.
fn print_portainer(p: &PortainerStatus, updated: Option<usize>) -> (bool, bool) {
    let (mut error, mut warning) = (false, false);
    match &p.last_error {
        Some(e) => {
            println!("{}", shown(&format!("portainer {}: ERROR: {e}", p.url)));
            error = true;
        }
        None => {
            let kept = p.records.iter().filter(|r| r.host.is_some()).count();
            let mut line = format!(
                "portainer {}: ok (Portainer {}, an administrator's key; {kept} record{} kept fresh",
                p.url,
                p.version.as_deref().unwrap_or("?"),
                if kept == 1 { "" } else { "s" }
            );
            if let Some(n) = updated {
                line += &format!(", {n} updated");
            }
            line.push(')');
            println!("{}", shown(&line));
        }
    }
    for w in &p.warnings {
        println!("{}", shown(&format!("portainer {}: warning: {w}", p.url)));
        warning = true;
    }
    for r in &p.records {
        let label = if r.name.is_empty() {
            format!("portainer {} record {}", p.url, r.id)
        } else {
            format!(
                "portainer {} record {} {:?} ({}, {})",
                p.url,
                r.id,
                r.name,
                kind_name(r.kind),
                r.url
            )
        };
        match (&r.last_error, &r.host) {
            (Some(e), _) => {
                println!("{}", shown(&format!("{label}: ERROR: {e}")));
                error = true;
            }
            (None, Some(_)) => println!("{}", shown(&format!("{label}: ok"))),
            (None, None) => {}
        }
        for w in &r.warnings {
            println!("{}", shown(&format!("{label}: warning: {w}")));
            warning = true;
        }
    }
    (error, warning)
}

/// `check`: validate the config, diagnose every target, and ask each Portainer instance (read
/// only); no AWS call.
pub async fn check(cli: &Cli) -> u8 {
    logging::init("warn", false);
    let settings = match Source::of(cli.config.as_deref()).quiet().load().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ecr-refresherd: {}", shown_lines(&e.to_string()));
            return exit::CONFIG;
        }
    };
    // The config's own warnings (a loopback alias, a plain-http endpoint, ...) are in the report
    // and make the exit code 1, as a target's do.
    let mut code = exit::OK;
    match &settings.source {
        Some(p) => {
            let path = escape::path(p);
            let verdict = match settings.warnings.len() {
                0 => "ok".to_string(),
                1 => "valid, 1 warning".to_string(),
                n => format!("valid, {n} warnings"),
            };
            println!(
                "config {path}: {verdict} ({} registries, {} targets)",
                settings.registries.len(),
                settings.targets.len()
            );
            for w in &settings.warnings {
                println!(
                    "config {path}:{}:{}: warning: {}",
                    w.line,
                    w.column,
                    shown(&w.message)
                );
                code = exit::FAILED;
            }
        }
        None => println!(
            "config: none, using this instance's registry {}",
            shown(&settings.registries[0].host)
        ),
    }
    let run_dir = cli.run_dir.clone();
    let s = settings.clone();
    let diagnoses = tokio::task::spawn_blocking(move || diagnose::diagnose(&s, &run_dir))
        .await
        .unwrap_or_default();
    for d in &diagnoses {
        let label = target_label(&d.name, &d.path);
        if d.errors.is_empty() && d.warnings.is_empty() {
            println!("target {}: ok", shown(&label));
        }
        for e in &d.errors {
            println!("{}", shown(&format!("target {label}: ERROR: {e}")));
            code = exit::CONFIG;
        }
        for w in &d.warnings {
            println!("{}", shown(&format!("target {label}: warning: {w}")));
            code = code.max(exit::FAILED);
        }
    }
    for p in &settings.portainers {
        let mut instance = portainer::Instance::new(p.clone(), portainer::managed_hosts(&settings));
        instance.round(None, true).await;
        let (error, warning) = print_portainer(instance.status(), None);
        if error {
            code = exit::CONFIG;
        } else if warning {
            code = code.max(exit::FAILED);
        }
    }
    code
}
