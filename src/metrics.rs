//! The Prometheus text exposition of a status snapshot (pure): what `metrics_file` holds and
//! `ecr-refresherd metrics` prints.
//!
//! Format 0.0.4, no timestamps (node_exporter's textfile collector refuses files that carry
//! them). Times are absolute Unix seconds; a series with no value (no token yet, never written)
//! is left out, so 0 never stands for "expired" or "never".

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::status::{RegistryState, Status, TargetState};

/// Every metric's name starts with this.
const PREFIX: &str = "ecr_refresherd_";

/// The states a registry may be in, each a series of `registry_state`.
const STATES: [(RegistryState, &str); 5] = [
    (RegistryState::Pending, "pending"),
    (RegistryState::Fresh, "fresh"),
    (RegistryState::Refreshing, "refreshing"),
    (RegistryState::Failing, "failing"),
    (RegistryState::Expired, "expired"),
];

/// A label value as the exposition format wants it: `\`, `"` and newlines escaped.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Unix seconds, with milliseconds.
fn seconds(t: SystemTime) -> String {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => format!("{:.3}", d.as_secs_f64()),
        Err(_) => "0".into(),
    }
}

/// One metric family: its header, then its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: &str) {
        self.out.push_str(PREFIX);
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(value);
        self.out.push('\n');
    }
}

fn family<'a>(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {PREFIX}{name} {help}");
    let _ = writeln!(out, "# TYPE {PREFIX}{name} {kind}");
    Family { out }
}

fn flag(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

/// The exposition of `s`. Every family is present (with its header) even when it has no sample.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "build_info",
        "gauge",
        "The running version, as a label; always 1.",
    )
    .sample("build_info", &[("version", &s.version)], "1");
    let mut f = family(
        &mut out,
        "start_time_seconds",
        "gauge",
        "When the daemon started, Unix seconds.",
    );
    if let Some(t) = s.started_at {
        f.sample("start_time_seconds", &[], &seconds(t));
    }

    let regs = &s.registries;
    let mut f = family(
        &mut out,
        "token_expiry_timestamp_seconds",
        "gauge",
        "When the token held for the registry expires, Unix seconds (absent: no token).",
    );
    for r in regs {
        if let Some(t) = r.expires_at {
            f.sample(
                "token_expiry_timestamp_seconds",
                &[("registry", &r.host)],
                &seconds(t),
            );
        }
    }
    let mut f = family(
        &mut out,
        "next_refresh_timestamp_seconds",
        "gauge",
        "When the registry's token is next fetched, Unix seconds (absent: none scheduled).",
    );
    for r in regs {
        if let Some(t) = r.next_refresh {
            f.sample(
                "next_refresh_timestamp_seconds",
                &[("registry", &r.host)],
                &seconds(t),
            );
        }
    }
    let mut f = family(
        &mut out,
        "last_success_timestamp_seconds",
        "gauge",
        "When a token was last fetched for the registry, Unix seconds (absent: never).",
    );
    for r in regs {
        if let Some(t) = r.last_success {
            f.sample(
                "last_success_timestamp_seconds",
                &[("registry", &r.host)],
                &seconds(t),
            );
        }
    }
    let mut f = family(
        &mut out,
        "refreshes_total",
        "counter",
        "Token fetches for the registry by result, since the daemon started.",
    );
    for r in regs {
        f.sample(
            "refreshes_total",
            &[("registry", &r.host), ("result", "success")],
            &r.refreshes_ok.to_string(),
        );
        f.sample(
            "refreshes_total",
            &[("registry", &r.host), ("result", "failure")],
            &r.refreshes_failed.to_string(),
        );
    }
    let mut f = family(
        &mut out,
        "registry_consecutive_failures",
        "gauge",
        "Failed fetches for the registry since its last success.",
    );
    for r in regs {
        f.sample(
            "registry_consecutive_failures",
            &[("registry", &r.host)],
            &r.consecutive_failures.to_string(),
        );
    }
    let mut f = family(
        &mut out,
        "registry_state",
        "gauge",
        "1 for the registry's current state, 0 for the others.",
    );
    for r in regs {
        for (state, name) in STATES {
            f.sample(
                "registry_state",
                &[("registry", &r.host), ("state", name)],
                flag(r.state == state),
            );
        }
    }

    let targets = &s.targets;
    let mut f = family(
        &mut out,
        "target_up",
        "gauge",
        "1 when the auth file's last write succeeded (or none was due yet), 0 when it fails.",
    );
    for t in targets {
        f.sample(
            "target_up",
            &[("target", &t.path)],
            flag(t.state != TargetState::Error),
        );
    }
    let mut f = family(
        &mut out,
        "target_last_write_timestamp_seconds",
        "gauge",
        "When the auth file was last written or found up to date, Unix seconds (absent: never).",
    );
    for t in targets {
        if let Some(w) = t.last_write {
            f.sample(
                "target_last_write_timestamp_seconds",
                &[("target", &t.path)],
                &seconds(w),
            );
        }
    }
    let mut f = family(
        &mut out,
        "target_failures_total",
        "counter",
        "Failed writes of the auth file since the daemon started.",
    );
    for t in targets {
        f.sample(
            "target_failures_total",
            &[("target", &t.path)],
            &t.failures_total.to_string(),
        );
    }
    let mut f = family(
        &mut out,
        "target_shadowed",
        "gauge",
        "1 when a credsStore, a credHelpers entry or another auth file hides our entries from docker or podman.",
    );
    for t in targets {
        f.sample("target_shadowed", &[("target", &t.path)], flag(t.shadowed));
    }

    let mut f = family(
        &mut out,
        "portainer_up",
        "gauge",
        "1 when the last round with the Portainer instance succeeded.",
    );
    for p in &s.portainer {
        let up = p.reachable && p.admin != Some(false) && p.last_error.is_none();
        f.sample("portainer_up", &[("portainer", &p.url)], flag(up));
    }
    let mut f = family(
        &mut out,
        "portainer_record_up",
        "gauge",
        "1 when a Portainer registry record we keep fresh holds the current token.",
    );
    for p in &s.portainer {
        for r in p.records.iter().filter(|r| r.host.is_some()) {
            let id = r.id.to_string();
            f.sample(
                "portainer_record_up",
                &[("portainer", &p.url), ("record", &id)],
                flag(r.last_error.is_none() && r.last_update.is_some()),
            );
        }
    }

    if let Some(sw) = &s.swarm {
        let mut f = family(
            &mut out,
            "swarm_manager",
            "gauge",
            "1 when this node is a swarm manager (services are kept fresh here), 0 otherwise.",
        );
        f.sample(
            "swarm_manager",
            &[("socket", &sw.socket)],
            flag(sw.role == "manager"),
        );
        let mut f = family(
            &mut out,
            "swarm_service_up",
            "gauge",
            "1 when the swarm service's last credential update succeeded.",
        );
        for x in &sw.services {
            let labels = [("service", x.name.as_str()), ("registry", x.host.as_str())];
            f.sample("swarm_service_up", &labels, flag(x.last_error.is_none()));
        }
        let mut f = family(
            &mut out,
            "swarm_service_updates_total",
            "counter",
            "Credential updates sent to the swarm service since the daemon started.",
        );
        for x in &sw.services {
            let labels = [("service", x.name.as_str()), ("registry", x.host.as_str())];
            f.sample(
                "swarm_service_updates_total",
                &labels,
                &x.updates.to_string(),
            );
        }
        let mut f = family(
            &mut out,
            "swarm_service_credential_expiry_timestamp_seconds",
            "gauge",
            "When the credential the swarm service holds (the last one sent) expires (absent until one was sent).",
        );
        for x in &sw.services {
            if let Some(t) = x.credential_expires_at {
                let labels = [("service", x.name.as_str()), ("registry", x.host.as_str())];
                f.sample(
                    "swarm_service_credential_expiry_timestamp_seconds",
                    &labels,
                    &seconds(t),
                );
            }
        }
        let mut f = family(
            &mut out,
            "swarm_service_last_update_timestamp_seconds",
            "gauge",
            "When the swarm service last got a fresh credential (absent until it has).",
        );
        for x in &sw.services {
            if let Some(t) = x.last_update {
                let labels = [("service", x.name.as_str()), ("registry", x.host.as_str())];
                f.sample(
                    "swarm_service_last_update_timestamp_seconds",
                    &labels,
                    &seconds(t),
                );
            }
        }
    }

    let h = &s.helper;
    let mut f = family(
        &mut out,
        "helper_requests_total",
        "counter",
        "Credential requests (credential helper, kubelet provider) by result.",
    );
    for (result, n) in [
        ("answered", h.answered),
        ("not_found", h.not_found),
        ("denied", h.denied),
    ] {
        f.sample(
            "helper_requests_total",
            &[("result", result)],
            &n.to_string(),
        );
    }

    let c = &s.config;
    let mut f = family(
        &mut out,
        "config_reloads_total",
        "counter",
        "Config reloads (SIGHUP, `reload`, an edit) by result.",
    );
    f.sample(
        "config_reloads_total",
        &[("result", "success")],
        &c.reloads_ok.to_string(),
    );
    f.sample(
        "config_reloads_total",
        &[("result", "failure")],
        &c.reloads_failed.to_string(),
    );
    family(
        &mut out,
        "config_last_reload_successful",
        "gauge",
        "0 while the last config edit or reload was refused (the previous config runs), else 1.",
    )
    .sample(
        "config_last_reload_successful",
        &[],
        flag(c.error.is_none()),
    );
    let mut f = family(
        &mut out,
        "config_last_reload_success_timestamp_seconds",
        "gauge",
        "When the running config was loaded, Unix seconds.",
    );
    if let Some(t) = c.loaded_at {
        f.sample(
            "config_last_reload_success_timestamp_seconds",
            &[],
            &seconds(t),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::status::{
        ConfigStatus, HelperCounts, PortainerStatus, RecordStatus, RegistryStatus, TargetStatus,
    };

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(secs * 1000 + 250)
    }

    fn status() -> Status {
        Status {
            version: "1.2.3".into(),
            started_at: Some(t(1_800_000_000)),
            registries: vec![
                RegistryStatus {
                    host: "111111111111.dkr.ecr.us-east-1.amazonaws.com".into(),
                    state: RegistryState::Fresh,
                    expires_at: Some(t(1_800_043_200)),
                    next_refresh: Some(t(1_800_021_600)),
                    last_success: Some(t(1_800_000_001)),
                    refreshes_ok: 3,
                    refreshes_failed: 1,
                    ..RegistryStatus::default()
                },
                RegistryStatus {
                    host: "public.ecr.aws".into(),
                    state: RegistryState::Pending,
                    consecutive_failures: 2,
                    refreshes_failed: 2,
                    ..RegistryStatus::default()
                },
            ],
            targets: vec![
                TargetStatus {
                    path: "/root/.docker/config.json".into(),
                    state: TargetState::Ok,
                    last_write: Some(t(1_800_000_002)),
                    ..TargetStatus::default()
                },
                TargetStatus {
                    path: "/home/a \"b\"\\c\nd/auth.json".into(),
                    state: TargetState::Error,
                    failures_total: 4,
                    shadowed: true,
                    ..TargetStatus::default()
                },
            ],
            portainer: vec![PortainerStatus {
                url: "https://127.0.0.1:9443".into(),
                reachable: true,
                admin: Some(true),
                records: vec![
                    RecordStatus {
                        id: 3,
                        host: Some("public.ecr.aws".into()),
                        last_update: Some(t(1_800_000_003)),
                        ..RecordStatus::default()
                    },
                    RecordStatus {
                        id: 4,
                        host: None,
                        ..RecordStatus::default()
                    },
                ],
                ..PortainerStatus::default()
            }],
            helper: HelperCounts {
                answered: 7,
                not_found: 1,
                denied: 2,
            },
            config: ConfigStatus {
                loaded_at: Some(t(1_800_000_000)),
                error: Some("bad".into()),
                reloads_ok: 1,
                reloads_failed: 2,
                ..ConfigStatus::default()
            },
            ..Status::default()
        }
    }

    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn every_series_as_the_contract_says() {
        let text = render(&status());
        let want = [
            r#"ecr_refresherd_build_info{version="1.2.3"} 1"#,
            "ecr_refresherd_start_time_seconds 1800000000.250",
            r#"ecr_refresherd_token_expiry_timestamp_seconds{registry="111111111111.dkr.ecr.us-east-1.amazonaws.com"} 1800043200.250"#,
            r#"ecr_refresherd_next_refresh_timestamp_seconds{registry="111111111111.dkr.ecr.us-east-1.amazonaws.com"} 1800021600.250"#,
            r#"ecr_refresherd_last_success_timestamp_seconds{registry="111111111111.dkr.ecr.us-east-1.amazonaws.com"} 1800000001.250"#,
            r#"ecr_refresherd_refreshes_total{registry="111111111111.dkr.ecr.us-east-1.amazonaws.com",result="success"} 3"#,
            r#"ecr_refresherd_refreshes_total{registry="111111111111.dkr.ecr.us-east-1.amazonaws.com",result="failure"} 1"#,
            r#"ecr_refresherd_refreshes_total{registry="public.ecr.aws",result="success"} 0"#,
            r#"ecr_refresherd_refreshes_total{registry="public.ecr.aws",result="failure"} 2"#,
            r#"ecr_refresherd_registry_consecutive_failures{registry="111111111111.dkr.ecr.us-east-1.amazonaws.com"} 0"#,
            r#"ecr_refresherd_registry_consecutive_failures{registry="public.ecr.aws"} 2"#,
            r#"ecr_refresherd_registry_state{registry="111111111111.dkr.ecr.us-east-1.amazonaws.com",state="fresh"} 1"#,
            r#"ecr_refresherd_registry_state{registry="111111111111.dkr.ecr.us-east-1.amazonaws.com",state="pending"} 0"#,
            r#"ecr_refresherd_registry_state{registry="public.ecr.aws",state="pending"} 1"#,
            r#"ecr_refresherd_target_up{target="/root/.docker/config.json"} 1"#,
            r#"ecr_refresherd_target_up{target="/home/a \"b\"\\c\nd/auth.json"} 0"#,
            r#"ecr_refresherd_target_last_write_timestamp_seconds{target="/root/.docker/config.json"} 1800000002.250"#,
            r#"ecr_refresherd_target_failures_total{target="/home/a \"b\"\\c\nd/auth.json"} 4"#,
            r#"ecr_refresherd_target_shadowed{target="/home/a \"b\"\\c\nd/auth.json"} 1"#,
            r#"ecr_refresherd_target_shadowed{target="/root/.docker/config.json"} 0"#,
            r#"ecr_refresherd_portainer_up{portainer="https://127.0.0.1:9443"} 1"#,
            r#"ecr_refresherd_portainer_record_up{portainer="https://127.0.0.1:9443",record="3"} 1"#,
            r#"ecr_refresherd_helper_requests_total{result="answered"} 7"#,
            r#"ecr_refresherd_helper_requests_total{result="not_found"} 1"#,
            r#"ecr_refresherd_helper_requests_total{result="denied"} 2"#,
            r#"ecr_refresherd_config_reloads_total{result="success"} 1"#,
            r#"ecr_refresherd_config_reloads_total{result="failure"} 2"#,
            "ecr_refresherd_config_last_reload_successful 0",
            "ecr_refresherd_config_last_reload_success_timestamp_seconds 1800000000.250",
        ];
        let got = samples(&text);
        for w in want {
            assert!(got.contains(&w), "missing {w}\n{text}");
        }
        // No value is no series: no expiry, refresh or success for the pending registry, no
        // last write for the failing target, no record that is not kept fresh.
        for absent in [
            r#"_timestamp_seconds{registry="public.ecr.aws"}"#,
            r#"last_write_timestamp_seconds{target="/home/a"#,
            r#"record="4""#,
        ] {
            assert!(!text.contains(absent), "{absent} present\n{text}");
        }
        assert_eq!(
            got.iter().filter(|l| l.contains("registry_state{")).count(),
            10
        );
    }

    #[test]
    fn swarm_series_only_when_swarm_is_on() {
        assert!(
            !render(&status()).contains("swarm"),
            "no [swarm]: no swarm families"
        );
        let mut st = status();
        st.swarm = Some(crate::status::SwarmStatus {
            socket: "/var/run/docker.sock".into(),
            role: "manager".into(),
            services: vec![
                crate::status::SwarmServiceStatus {
                    id: "x1".into(),
                    name: "web \"1\"".into(),
                    host: "111111111111.dkr.ecr.us-east-1.amazonaws.com".into(),
                    last_update: Some(t(1_800_000_005)),
                    credential_expires_at: Some(t(1_800_043_205)),
                    updates: 2,
                    last_error: None,
                },
                crate::status::SwarmServiceStatus {
                    id: "x2".into(),
                    name: "api".into(),
                    host: "public.ecr.aws".into(),
                    last_error: Some("HTTP 500".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        let text = render(&st);
        let got = samples(&text);
        for w in [
            r#"ecr_refresherd_swarm_manager{socket="/var/run/docker.sock"} 1"#,
            r#"ecr_refresherd_swarm_service_up{service="web \"1\"",registry="111111111111.dkr.ecr.us-east-1.amazonaws.com"} 1"#,
            r#"ecr_refresherd_swarm_service_up{service="api",registry="public.ecr.aws"} 0"#,
            r#"ecr_refresherd_swarm_service_updates_total{service="web \"1\"",registry="111111111111.dkr.ecr.us-east-1.amazonaws.com"} 2"#,
            r#"ecr_refresherd_swarm_service_credential_expiry_timestamp_seconds{service="web \"1\"",registry="111111111111.dkr.ecr.us-east-1.amazonaws.com"} 1800043205.250"#,
            r#"ecr_refresherd_swarm_service_last_update_timestamp_seconds{service="web \"1\"",registry="111111111111.dkr.ecr.us-east-1.amazonaws.com"} 1800000005.250"#,
        ] {
            assert!(got.contains(&w), "missing {w}\n{text}");
        }
        assert!(
            !text.contains(r#"timestamp_seconds{service="api""#),
            "no time is no series\n{text}"
        );
    }

    #[test]
    fn every_family_has_help_and_type_and_no_sample_has_a_timestamp() {
        let text = render(&Status::default());
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!((types, helps), (18, 18), "{text}");
        for line in samples(&render(&status())) {
            // name{labels} value: the value is the last field and nothing follows it.
            let value = line.rsplit(' ').next().unwrap_or_default();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            let before = &line[..line.len() - value.len()];
            assert!(
                before.ends_with("} ") || !before.trim_end().contains(' '),
                "a timestamp or a stray field: {line}"
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("a\nb"), r"a\nb");
        assert_eq!(escape_label("plain/é"), "plain/é");
    }
}
