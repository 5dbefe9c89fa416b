//! The daemon's status snapshot: what `status` shows, what systemd's STATUS= says, and exit codes.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::escape::{shown, shown_lines};

/// A registry's state, as shown by `status`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryState {
    /// No token yet (starting, or never obtained).
    #[default]
    Pending,
    /// A valid token, refreshes succeeding.
    Fresh,
    /// A fetch is in flight.
    Refreshing,
    /// The last refresh failed; the token held (if any) is still valid.
    Failing,
    /// The token expired and no new one could be had.
    Expired,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryStatus {
    pub host: String,
    /// The other names its credential is written and served under.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    pub state: RegistryState,
    /// Times are `SystemTime` here and RFC 3339 (UTC) on the wire.
    #[serde(with = "wire_time")]
    pub expires_at: Option<SystemTime>,
    #[serde(with = "wire_time")]
    pub next_refresh: Option<SystemTime>,
    #[serde(with = "wire_time")]
    pub last_success: Option<SystemTime>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    /// Successful token fetches since the daemon started.
    #[serde(default)]
    pub refreshes_ok: u64,
    /// Failed token fetches since the daemon started.
    #[serde(default)]
    pub refreshes_failed: u64,
    /// What works but will not hold (e.g. a token that lapses before its refresh).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetState {
    #[default]
    Pending,
    Ok,
    Error,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetStatus {
    pub name: String,
    pub path: String,
    /// Who the file is written as (user name, or uid).
    pub owner: Option<String>,
    pub state: TargetState,
    #[serde(with = "wire_time")]
    pub last_write: Option<SystemTime>,
    pub last_error: Option<String>,
    pub warnings: Vec<String>,
    /// Failed writes since the daemon started.
    #[serde(default)]
    pub failures_total: u64,
    /// A credsStore, credHelpers entry or another auth file hides our entries.
    #[serde(default)]
    pub shadowed: bool,
}

/// A Portainer instance whose registry records the daemon keeps fresh.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortainerStatus {
    pub url: String,
    /// What `/api/system/status` said, once reached.
    pub version: Option<String>,
    /// The last attempt reached it (TLS included).
    pub reachable: bool,
    /// Whether the API key is an administrator's (`None`: not known yet).
    pub admin: Option<bool>,
    /// When the records were last read back.
    #[serde(with = "wire_time")]
    pub last_check: Option<SystemTime>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    #[serde(with = "wire_time")]
    pub next_attempt: Option<SystemTime>,
    pub records: Vec<RecordStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Docker Swarm: this node's part, and each service kept fresh.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmStatus {
    /// The Engine's socket.
    pub socket: String,
    /// `manager`, `worker`, `none` (not in a swarm) or `unreachable`.
    pub role: String,
    /// The Engine API version agreed on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// When the services were last listed.
    #[serde(with = "wire_time")]
    pub last_check: Option<SystemTime>,
    pub last_error: Option<String>,
    pub services: Vec<SwarmServiceStatus>,
}

/// One swarm service whose image is on a managed registry (or alias).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmServiceStatus {
    pub id: String,
    pub name: String,
    /// The image's registry host.
    pub host: String,
    /// When it last got a fresh credential.
    #[serde(with = "wire_time")]
    pub last_update: Option<SystemTime>,
    /// When the credential the service holds (the last one sent) expires.
    #[serde(with = "wire_time")]
    pub credential_expires_at: Option<SystemTime>,
    /// Credential updates since the daemon started.
    pub updates: u64,
    pub last_error: Option<String>,
}

/// One registry record of a Portainer instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordStatus {
    pub id: u32,
    pub name: String,
    /// Portainer's registry type: 3 Custom, 7 ECR (static keys), ...
    #[serde(rename = "type")]
    pub kind: u32,
    pub url: String,
    /// The managed registry host it gets tokens for (`None`: not kept fresh).
    pub host: Option<String>,
    /// When we last set its credentials (or found them already set).
    #[serde(with = "wire_time")]
    pub last_update: Option<SystemTime>,
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigStatus {
    pub path: Option<String>,
    #[serde(with = "wire_time")]
    pub loaded_at: Option<SystemTime>,
    /// Why the last edit or reload was rejected (the running config is the previous one).
    pub error: Option<String>,
    /// Reloads applied since the daemon started.
    #[serde(default)]
    pub reloads_ok: u64,
    /// Reloads refused (the previous config kept running).
    #[serde(default)]
    pub reloads_failed: u64,
}

/// Credential requests on the sockets since the daemon started, by result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelperCounts {
    /// A credential was handed out.
    pub answered: u64,
    /// The caller may ask, but the daemon holds no valid token for that name.
    pub not_found: u64,
    /// The caller may not have that name's credential (answered "not found" too).
    pub denied: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    #[serde(with = "wire_time")]
    pub started_at: Option<SystemTime>,
    /// Tasks alive in the daemon's runtime (steady when nothing leaks).
    #[serde(default)]
    pub tasks: usize,
    pub registries: Vec<RegistryStatus>,
    pub targets: Vec<TargetStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub portainer: Vec<PortainerStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm: Option<SwarmStatus>,
    pub config: ConfigStatus,
    #[serde(default)]
    pub helper: HelperCounts,
}

/// RFC 3339, UTC; never panics (see [`crate::clock::rfc3339`]).
pub fn rfc3339(t: SystemTime) -> String {
    crate::clock::rfc3339(t)
}

pub fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

/// Times on the wire (the socket's JSON): RFC 3339 strings, formatted only here.
mod wire_time {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&super::rfc3339(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        Ok(text.as_deref().and_then(super::parse_time))
    }
}

/// `status` exit codes, as monitoring plugins use them.
pub use crate::startup::exit::{
    CONFIG as EXIT_CRITICAL, FAILED as EXIT_WARNING, OK as EXIT_OK, UNKNOWN as EXIT_UNKNOWN,
};

/// 0: every registry holds an unexpired token and nothing is failing; 1: every token is still
/// valid but a refresh, an auth file's write, a Portainer instance or record, or the swarm is
/// failing; 2: some registry has no valid token (expired, or not obtained yet). Warnings alone
/// (what `check` exits 1 for) leave it at 0: they are shown, and stay until someone acts.
pub fn exit_code(status: &Status, now: SystemTime) -> u8 {
    let mut code = EXIT_OK;
    for r in &status.registries {
        let valid = r.expires_at.is_some_and(|t| t > now);
        if !valid {
            return EXIT_CRITICAL;
        }
        if r.consecutive_failures > 0 || r.state == RegistryState::Failing {
            code = EXIT_WARNING;
        }
    }
    if status.targets.iter().any(|t| t.state == TargetState::Error) {
        code = code.max(EXIT_WARNING);
    }
    let portainer_failing = status
        .portainer
        .iter()
        .any(|p| p.last_error.is_some() || p.records.iter().any(|r| r.last_error.is_some()));
    if portainer_failing {
        code = code.max(EXIT_WARNING);
    }
    let swarm_failing = status.swarm.as_ref().is_some_and(|s| {
        s.last_error.is_some() || s.services.iter().any(|x| x.last_error.is_some())
    });
    if swarm_failing {
        code = code.max(EXIT_WARNING);
    }
    code
}

/// One short line for systemd's STATUS=, e.g. `3/3 registries fresh, next refresh 14:05 UTC`.
pub fn summary(status: &Status, now: SystemTime) -> String {
    let total = status.registries.len();
    let valid = status
        .registries
        .iter()
        .filter(|r| r.expires_at.is_some_and(|t| t > now))
        .count();
    let failing = status
        .registries
        .iter()
        .filter(|r| r.consecutive_failures > 0)
        .count();
    let bad_targets = status
        .targets
        .iter()
        .filter(|t| t.state == TargetState::Error)
        .count();
    let mut line = format!("{valid}/{total} registries fresh");
    if failing > 0 {
        line += &format!(", {failing} failing");
    }
    if bad_targets > 0 {
        line += &format!(", {bad_targets} target(s) in error");
    }
    if status.config.error.is_some() {
        line += ", config edit rejected";
    }
    let next = status
        .registries
        .iter()
        .filter_map(|r| r.next_refresh)
        .min();
    if let Some(next) = next {
        let hhmm = rfc3339(next);
        line += &format!(", next refresh {} UTC", hhmm.get(11..16).unwrap_or(&hhmm));
    }
    line
}

/// "5h 3m", "42s": a rough human duration.
pub fn rough(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// `in 5h 3m` / `3m 2s ago` relative to `now`.
pub fn relative(t: SystemTime, now: SystemTime) -> String {
    match t.duration_since(now) {
        Ok(d) => format!("in {}", rough(d)),
        Err(e) => format!("{} ago", rough(e.duration())),
    }
}

/// The readable table `ecr-refresherd status` prints; every string from the daemon is [`shown`]
/// (escaped), as any of them may come from a user's file or the endpoint.
pub fn render(status: &Status, now: SystemTime) -> String {
    let mut rows = vec![[
        "REGISTRY".to_string(),
        "STATE".into(),
        "EXPIRES".into(),
        "NEXT REFRESH".into(),
        "LAST ERROR".into(),
    ]];
    for r in &status.registries {
        let when = |t: &Option<SystemTime>| t.map_or("-".to_string(), |t| relative(t, now));
        rows.push([
            shown(&r.host).into_owned(),
            format!("{:?}", r.state).to_lowercase(),
            when(&r.expires_at),
            when(&r.next_refresh),
            r.last_error
                .as_deref()
                .map_or("-".into(), |e| shown(e).into_owned()),
        ]);
        for a in &r.aliases {
            rows.push([
                format!("  alias {}", shown(a)),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
    }
    let mut out = table(&rows);
    out.push('\n');
    let mut rows = vec![[
        "TARGET".to_string(),
        "OWNER".into(),
        "STATE".into(),
        "LAST WRITE".into(),
        "LAST ERROR".into(),
    ]];
    for t in &status.targets {
        rows.push([
            shown(&t.path).into_owned(),
            t.owner
                .as_deref()
                .map_or("-".into(), |o| shown(o).into_owned()),
            format!("{:?}", t.state).to_lowercase(),
            t.last_write.map_or("-".into(), |x| relative(x, now)),
            t.last_error
                .as_deref()
                .map_or("-".into(), |e| shown(e).into_owned()),
        ]);
    }
    out += &table(&rows);
    if !status.portainer.is_empty() {
        out.push('\n');
        out += &render_portainer(&status.portainer, now);
    }
    if let Some(sw) = &status.swarm {
        out.push('\n');
        out += &render_swarm(sw, now);
    }
    for r in &status.registries {
        for w in &r.warnings {
            out += &format!("warning: {}: {}\n", shown(&r.host), shown(w));
        }
    }
    for t in &status.targets {
        for w in &t.warnings {
            out += &format!("warning: {}: {}\n", shown(&t.path), shown(w));
        }
    }
    out += &format!(
        "\nconfig {}: loaded {}",
        status
            .config
            .path
            .as_deref()
            .map_or("(instance default)".into(), shown),
        status.config.loaded_at.map_or("-".into(), rfc3339)
    );
    if let Some(e) = &status.config.error {
        out += &format!(
            "\nconfig edit rejected, still running the previous config:\n{}",
            shown_lines(e)
        );
    }
    out.push('\n');
    out
}

/// This node's swarm role, then one row per service kept fresh.
fn render_swarm(sw: &SwarmStatus, now: SystemTime) -> String {
    let dash = |o: Option<&str>| o.map_or("-".to_string(), |e| shown(e).into_owned());
    let mut out = format!(
        "swarm {}: {}{}, last check {}{}\n",
        shown(&sw.socket),
        match sw.role.as_str() {
            "manager" => "a manager: services on managed registries get each new token",
            "worker" => "a worker: services are updated from a manager, nothing to do here",
            "none" => "not in a swarm, nothing to do",
            _ => "the Engine is not reachable",
        },
        sw.api_version
            .as_deref()
            .map(|v| format!(" (API {})", shown(v)))
            .unwrap_or_default(),
        sw.last_check.map_or("-".into(), |t| relative(t, now)),
        sw.last_error
            .as_deref()
            .map(|e| format!("; error: {}", shown(e)))
            .unwrap_or_default(),
    );
    let mut rows = vec![[
        "SERVICE".to_string(),
        "REGISTRY".into(),
        "UPDATES".into(),
        "LAST UPDATE".into(),
        "HOLDS UNTIL".into(),
        "LAST ERROR".into(),
    ]];
    for s in &sw.services {
        rows.push([
            shown(&s.name).into_owned(),
            shown(&s.host).into_owned(),
            s.updates.to_string(),
            s.last_update.map_or("-".into(), |t| relative(t, now)),
            s.credential_expires_at
                .map_or("-".into(), |t| relative(t, now)),
            dash(s.last_error.as_deref()),
        ]);
    }
    if rows.len() > 1 {
        out += &table(&rows);
    }
    out
}

/// The Portainer instances, then one row per record.
fn render_portainer(instances: &[PortainerStatus], now: SystemTime) -> String {
    let dash = |o: Option<&str>| o.map_or("-".to_string(), |e| shown(e).into_owned());
    let mut rows = vec![[
        "PORTAINER".to_string(),
        "VERSION".into(),
        "REACHABLE".into(),
        "ADMIN KEY".into(),
        "LAST CHECK".into(),
        "LAST ERROR".into(),
    ]];
    for p in instances {
        rows.push([
            shown(&p.url).into_owned(),
            dash(p.version.as_deref()),
            if p.reachable { "yes" } else { "no" }.into(),
            match p.admin {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            }
            .into(),
            p.last_check.map_or("-".into(), |t| relative(t, now)),
            dash(p.last_error.as_deref()),
        ]);
    }
    let mut out = table(&rows);
    let mut rows = vec![[
        "RECORD".to_string(),
        "NAME".into(),
        "TYPE".into(),
        "URL".into(),
        "LAST UPDATE".into(),
        "LAST ERROR".into(),
    ]];
    for p in instances {
        for r in &p.records {
            rows.push([
                format!("{} #{}", shown(&p.url), r.id),
                shown(&r.name).into_owned(),
                kind_name(r.kind).into(),
                shown(&r.url).into_owned(),
                r.last_update.map_or("-".into(), |t| relative(t, now)),
                dash(r.last_error.as_deref()),
            ]);
        }
    }
    if rows.len() > 1 {
        out += &table(&rows);
    }
    for p in instances {
        for w in &p.warnings {
            out += &format!("warning: {}: {}\n", shown(&p.url), shown(w));
        }
        for r in &p.records {
            for w in &r.warnings {
                out += &format!("warning: {} #{}: {}\n", shown(&p.url), r.id, shown(w));
            }
        }
    }
    out
}

/// Portainer's name for a registry type.
pub fn kind_name(kind: u32) -> &'static str {
    match kind {
        1 => "quay",
        2 => "azure",
        3 => "custom",
        4 => "gitlab",
        5 => "proget",
        6 => "dockerhub",
        7 => "ecr",
        _ => "other",
    }
}

fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line += cell;
            } else {
                line += &format!("{cell:<width$}  ", width = widths[i]);
            }
        }
        out += line.trim_end();
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(expires_in: Option<i64>, failures: u32, now: SystemTime) -> RegistryStatus {
        RegistryStatus {
            aliases: Vec::new(),
            host: "h".into(),
            state: if failures > 0 {
                RegistryState::Failing
            } else {
                RegistryState::Fresh
            },
            expires_at: expires_in.map(|s| {
                if s >= 0 {
                    now + Duration::from_secs(s as u64)
                } else {
                    now - Duration::from_secs((-s) as u64)
                }
            }),
            next_refresh: None,
            last_success: None,
            last_error: None,
            consecutive_failures: failures,
            refreshes_ok: 0,
            refreshes_failed: 0,
            warnings: Vec::new(),
        }
    }

    #[test]
    fn exit_codes() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let st = |regs: Vec<RegistryStatus>| Status {
            registries: regs,
            ..Default::default()
        };
        assert_eq!(exit_code(&st(vec![reg(Some(100), 0, now)]), now), 0);
        assert_eq!(
            exit_code(
                &st(vec![reg(Some(100), 0, now), reg(Some(100), 2, now)]),
                now
            ),
            1
        );
        assert_eq!(
            exit_code(
                &st(vec![reg(Some(100), 0, now), reg(Some(-5), 0, now)]),
                now
            ),
            2
        );
        assert_eq!(exit_code(&st(vec![reg(None, 0, now)]), now), 2);
        assert_eq!(
            exit_code(&st(vec![reg(Some(100), 3, now), reg(None, 3, now)]), now),
            2
        );
        // A failing Portainer instance, or one record of it, is a warning; a warning alone is not.
        let with = |p: PortainerStatus, regs| Status {
            portainer: vec![p],
            ..st(regs)
        };
        let down = PortainerStatus {
            last_error: Some("cannot reach".into()),
            ..Default::default()
        };
        let record_failing = PortainerStatus {
            records: vec![RecordStatus {
                last_error: Some("HTTP 409".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let warned = PortainerStatus {
            warnings: vec!["native ECR".into()],
            ..Default::default()
        };
        assert_eq!(
            exit_code(&with(down.clone(), vec![reg(Some(100), 0, now)]), now),
            1
        );
        assert_eq!(
            exit_code(&with(record_failing, vec![reg(Some(100), 0, now)]), now),
            1
        );
        assert_eq!(
            exit_code(&with(warned, vec![reg(Some(100), 0, now)]), now),
            0
        );
        assert_eq!(exit_code(&with(down, vec![reg(None, 0, now)]), now), 2);
        // An auth file that cannot be written is failing; one with warnings, or pending, is not.
        let target = |state, warnings: Vec<String>| Status {
            targets: vec![TargetStatus {
                state,
                warnings,
                ..Default::default()
            }],
            ..st(vec![reg(Some(100), 0, now)])
        };
        assert_eq!(exit_code(&target(TargetState::Error, vec![]), now), 1);
        assert_eq!(
            exit_code(&target(TargetState::Ok, vec!["mode 0644".into()]), now),
            0
        );
        assert_eq!(exit_code(&target(TargetState::Pending, vec![]), now), 0);
        let expired_and_failing = Status {
            registries: vec![reg(Some(-5), 0, now)],
            ..target(TargetState::Error, vec![])
        };
        assert_eq!(exit_code(&expired_and_failing, now), 2);
    }

    #[test]
    fn summary_line() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut a = reg(Some(100), 0, now);
        a.next_refresh = Some(now + Duration::from_secs(60));
        let s = Status {
            registries: vec![a, reg(Some(100), 1, now), reg(None, 1, now)],
            ..Default::default()
        };
        assert_eq!(
            summary(&s, now),
            "2/3 registries fresh, 2 failing, next refresh 08:01 UTC"
        );
    }

    #[test]
    fn the_table_shows_foreign_strings_escaped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let hostile = "\r\u{1b}[2K\u{1b}]0;t\u{7}\nFORGED";
        let mut r = reg(Some(100), 1, now);
        r.last_error = Some(hostile.into());
        let s = Status {
            registries: vec![r],
            targets: vec![TargetStatus {
                name: hostile.into(),
                path: format!("/home/u/{hostile}"),
                owner: Some(hostile.into()),
                state: TargetState::Error,
                last_write: None,
                last_error: Some(hostile.into()),
                warnings: vec![hostile.into()],
                ..TargetStatus::default()
            }],
            config: ConfigStatus {
                path: Some("/etc/c.toml".into()),
                loaded_at: None,
                // Our own diagnostics, one per line (from root's config): line feeds stay.
                error: Some("c.toml:1:1: one\nc.toml:2:1: \r\u{1b}[2K".into()),
                ..ConfigStatus::default()
            },
            ..Default::default()
        };
        let out = render(&s, now);
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out}");
        assert!(!out.lines().any(|l| l.starts_with("FORGED")), "{out}");
        assert!(out.contains("\nc.toml:2:1: \\r\\x1b[2K"), "{out}");
        assert!(out.contains("warning: /home/u/\\r"), "{out}");
    }

    #[test]
    fn rough_durations() {
        assert_eq!(rough(Duration::from_secs(42)), "42s");
        assert_eq!(rough(Duration::from_secs(125)), "2m 5s");
        assert_eq!(rough(Duration::from_secs(5 * 3600 + 180)), "5h 3m");
    }
}
