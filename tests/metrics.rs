//! The metrics: `metrics_file` (node_exporter's textfile collector) and `ecr-refresherd metrics`,
//! following the real daemon through token rotations, failures, recovery and reloads.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use common::*;
use fake_aws::{Fault, Service};

/// The value of the sample whose name and labels start the line as `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn file_text(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn the_metrics_file_follows_tokens_failures_and_reloads() {
    let w = World::new();
    w.fake.set_token_lifetime(Duration::from_secs(12));
    // Its directory does not exist yet: created as for an auth file.
    let prom = w.path("textfile/collector/ecr-refresherd.prom");
    let target = w.one_target_config(&[H1], &format!("metrics_file = \"{}\"\n", prom.display()));
    let good_config = std::fs::read_to_string(w.path("config.toml")).unwrap();
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    let expiry = format!("ecr_refresherd_token_expiry_timestamp_seconds{{registry=\"{H1}\"}}");
    assert!(
        wait_for(Duration::from_secs(30), || sample(
            &file_text(&prom),
            &expiry
        )
        .is_some()),
        "{}",
        d.log_text()
    );
    let mode = std::fs::metadata(&prom).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);

    // The expiry is the token's, as written to the target (a rotation may land in between).
    assert!(wait_for(Duration::from_secs(10), || {
        let text = file_text(&prom);
        let password = password_of(&assert_fresh_entry(&w, &target, H1));
        let want = w.fake.expiry_of(&password).unwrap();
        let want = want.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        sample(&text, &expiry).is_some_and(|got| (got - want).abs() < 1.0)
    }));
    let text = file_text(&prom);
    w.capture_text(text.clone());
    let ok = format!("ecr_refresherd_refreshes_total{{registry=\"{H1}\",result=\"success\"}}");
    assert!(sample(&text, &ok).is_some_and(|n| n >= 1.0), "{text}");
    let state =
        |s: &str| format!("ecr_refresherd_registry_state{{registry=\"{H1}\",state=\"{s}\"}}");
    let up = format!(
        "ecr_refresherd_target_up{{target=\"{}\"}}",
        target.display()
    );
    assert_eq!(sample(&text, &up), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, "ecr_refresherd_config_last_reload_successful"),
        Some(1.0)
    );
    assert!(!text.contains(" # ") && !text.lines().any(|l| l.is_empty()));

    // The socket prints the same families.
    let out = w.client(&["metrics"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let families = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("# TYPE "))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(families(&stdout(&out)), families(&text));

    // ECR fails: the next refresh (at about half of 12 s) is counted and shown.
    w.fake.set_fault(Service::Ecr, Fault::Throttle);
    let failing = format!("ecr_refresherd_registry_consecutive_failures{{registry=\"{H1}\"}}");
    let failed = format!("ecr_refresherd_refreshes_total{{registry=\"{H1}\",result=\"failure\"}}");
    assert!(
        wait_for(Duration::from_secs(30), || {
            let t = file_text(&prom);
            sample(&t, &failing).is_some_and(|n| n >= 1.0)
                && sample(&t, &failed).is_some_and(|n| n >= 1.0)
                && sample(&t, &state("failing")) == Some(1.0)
        }),
        "{}",
        file_text(&prom)
    );
    // It recovers.
    w.fake.set_fault(Service::Ecr, Fault::None);
    assert!(
        wait_for(Duration::from_secs(30), || {
            let t = file_text(&prom);
            sample(&t, &failing) == Some(0.0) && sample(&t, &state("fresh")) == Some(1.0)
        }),
        "{}",
        file_text(&prom)
    );

    // A refused edit of the config: 0 until a good one is applied.
    w.config("[[registry]]\nhost = \"not an ecr host\"\n");
    assert!(
        wait_for(Duration::from_secs(20), || {
            let t = file_text(&prom);
            sample(&t, "ecr_refresherd_config_last_reload_successful") == Some(0.0)
                && sample(
                    &t,
                    "ecr_refresherd_config_reloads_total{result=\"failure\"}",
                )
                .is_some_and(|n| n >= 1.0)
        }),
        "{}",
        file_text(&prom)
    );
    w.config(&good_config);
    assert!(
        wait_for(Duration::from_secs(20), || {
            sample(
                &file_text(&prom),
                "ecr_refresherd_config_last_reload_successful",
            ) == Some(1.0)
        }),
        "{}",
        file_text(&prom)
    );

    // Credential requests by result, as the socket counts them now.
    let mut c = w.cmd();
    c.args(["credential-helper", "get", "--socket"])
        .arg(w.socket())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(H1.as_bytes())
            .unwrap();
    }
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(0));
    let out = w.client(&["metrics"]);
    assert!(
        sample(
            &stdout(&out),
            "ecr_refresherd_helper_requests_total{result=\"answered\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{}",
        stdout(&out)
    );
    w.capture_text(file_text(&prom));
    drop(d);
}

/// A path with a quote, a backslash and a newline is one label value, escaped.
#[test]
fn label_values_are_escaped_and_nothing_else_is_in_a_label() {
    let w = World::new();
    let odd = w.path("we\"ird\\dir\nx/config.json");
    let prom = w.path("ecr-refresherd.prom");
    let toml_string = |p: &Path| {
        p.display()
            .to_string()
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    w.config(&format!(
        "{}metrics_file = \"{}\"\n[[target]]\npath = \"{}\"\n[[registry]]\nhost = \"{H1}\"\n",
        w.daemon_section(),
        prom.display(),
        toml_string(&odd)
    ));
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    let want = format!(
        "ecr_refresherd_target_up{{target=\"{}\"}} 1",
        toml_string(&odd)
    );
    assert!(
        wait_for(Duration::from_secs(30), || file_text(&prom)
            .lines()
            .any(|l| l == want)),
        "{want}\n{}",
        file_text(&prom)
    );
    // Every line is a comment or one sample: the newline did not split a line.
    for line in file_text(&prom).lines() {
        assert!(
            line.starts_with("# ") || line.starts_with("ecr_refresherd_"),
            "{line:?}"
        );
    }
    drop(d);
}
