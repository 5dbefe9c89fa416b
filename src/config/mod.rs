//! The TOML config: raw serde structs, validation into `Settings`, errors with file:line:col.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::atomic::{self, FileError};
use crate::registry::{ACCEPTED_SHAPES, Registry};

/// Where the daemon looks for its config when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/ecr-refresherd/config.toml";
/// The control socket when the config names none.
pub const DEFAULT_SOCKET: &str = "/run/ecr-refresherd/status.sock";
/// Where the daemon keeps what it wrote.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/ecr-refresherd";
/// Bounds of the `[daemon]` durations.
pub const MAX_RETRY_MIN: Duration = Duration::from_secs(3600);
pub const MAX_RETRY_MAX: Duration = Duration::from_secs(24 * 3600);
/// An ECR token lives 12 hours: a longer floor would let every token lapse.
pub const MAX_MIN_INTERVAL: Duration = Duration::from_secs(12 * 3600);
/// The one target used when the config lists none.
pub const DEFAULT_TARGET: &str = "/root/.docker/config.json";

/// Everything the daemon needs, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The file this came from; `None` for the zero-config default.
    pub source: Option<PathBuf>,
    pub daemon: DaemonSettings,
    pub registries: Vec<RegistrySettings>,
    pub targets: Vec<TargetSettings>,
    /// Things that work but that an operator should hear about (located like errors).
    pub warnings: Vec<Diagnostic>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSettings {
    pub refresh_at: f64,
    pub jitter: f64,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub min_interval: Duration,
    pub remove_expired: bool,
    pub socket: PathBuf,
    pub socket_group: Option<GroupSpec>,
    pub state_dir: PathBuf,
    pub log_level: String,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        DaemonSettings {
            refresh_at: 0.5,
            jitter: 0.1,
            retry_min: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
            min_interval: Duration::from_secs(60),
            remove_expired: true,
            socket: PathBuf::from(DEFAULT_SOCKET),
            socket_group: None,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            log_level: "info".to_string(),
        }
    }
}

/// How a registry's API call is authenticated. Registries with equal sources share credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialSource {
    pub profile: Option<String>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    pub session_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RegistrySettings {
    pub host: String,
    pub registry: Registry,
    pub credentials: CredentialSource,
    pub endpoint_url: Option<String>,
    /// Names of the targets this registry is written to.
    pub targets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSettings {
    pub name: String,
    pub path: PathBuf,
    /// The owner to write as; `None`: the owner of the nearest existing ancestor directory.
    pub user: Option<UserSpec>,
    /// The mode to enforce; `None`: keep an existing file's mode, 0600 for a new one.
    pub mode: Option<u32>,
}

/// A target's user as the config names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    pub name: String,
    /// Set when the config gives a number. A name is looked up at each write instead: the user
    /// may not exist yet (created after the daemon started), and that target alone waits for it.
    pub uid: Option<u32>,
}

/// A group named in the config, resolved at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    pub name: String,
    pub gid: u32,
}

/// One problem in a config file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Someone but root could change the file (or a directory above it), or it is no plain file.
    #[error("{0}")]
    Untrusted(FileError),
    /// The file holds no setting at all (every line commented out, as packaged).
    #[error("{}: holds no settings", path.display())]
    Empty { path: PathBuf },
    #[error("{}", render(path, diagnostics))]
    Invalid {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
}

fn render(path: &Path, diagnostics: &[Diagnostic]) -> String {
    let name = path.display();
    diagnostics
        .iter()
        .map(|d| format!("{name}:{}:{}: {}", d.line, d.column, d.message))
        .collect::<Vec<_>>()
        .join("\n")
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

// ---- raw structs: what the file may say ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    daemon: Option<RawDaemon>,
    #[serde(default)]
    registry: Vec<Spanned<RawRegistry>>,
    #[serde(default)]
    target: Vec<Spanned<RawTarget>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    refresh_at: Option<Spanned<f64>>,
    jitter: Option<Spanned<f64>>,
    retry_min: Option<Spanned<String>>,
    retry_max: Option<Spanned<String>>,
    min_interval: Option<Spanned<String>>,
    remove_expired: Option<bool>,
    socket: Option<Spanned<String>>,
    socket_group: Option<Spanned<String>>,
    state_dir: Option<Spanned<String>>,
    log_level: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    host: Spanned<String>,
    role_arn: Option<Spanned<String>>,
    external_id: Option<Spanned<String>>,
    session_name: Option<Spanned<String>>,
    profile: Option<Spanned<String>>,
    endpoint_url: Option<Spanned<String>>,
    targets: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: Option<Spanned<String>>,
    path: Spanned<String>,
    user: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
}

/// Resolves group names; a seam so tests do not depend on the machine's group database.
pub trait Accounts {
    fn group(&self, name: &str) -> Option<GroupSpec>;
}

/// The machine's passwd and group databases.
pub struct SystemAccounts;

impl Accounts for SystemAccounts {
    fn group(&self, name: &str) -> Option<GroupSpec> {
        let g = nix::unistd::Group::from_name(name).ok()??;
        Some(GroupSpec {
            name: g.name,
            gid: g.gid.as_raw(),
        })
    }
}

/// The largest config file read (a config of thousands of registries is well below).
const MAX_CONFIG_SIZE: usize = 4 * 1024 * 1024;

/// Reads and validates a config file. Only a file that root alone can change is read at all
/// (see [`atomic::read_trusted`]).
pub fn load(path: &Path, accounts: &dyn Accounts) -> Result<Settings, ConfigError> {
    let bytes = atomic::read_trusted(path, MAX_CONFIG_SIZE).map_err(|e| match e {
        FileError::Io { source, .. } => ConfigError::Read {
            path: path.to_path_buf(),
            source,
        },
        other => ConfigError::Untrusted(other),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not UTF-8 (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        ),
    })?;
    if text.parse::<toml::Table>().is_ok_and(|t| t.is_empty()) {
        return Err(ConfigError::Empty {
            path: path.to_path_buf(),
        });
    }
    parse(&text, Some(path), accounts).map_err(|diagnostics| ConfigError::Invalid {
        path: path.to_path_buf(),
        diagnostics,
    })
}

/// Logs the config's warnings, each located.
pub fn log_warnings(settings: &Settings) {
    let name = settings
        .source
        .as_deref()
        .map_or_else(|| "config".to_string(), |p| p.display().to_string());
    for w in &settings.warnings {
        tracing::warn!("{name}:{w}");
    }
}

/// Settings for a host that has no config file: one registry, root's docker config.
pub fn zero_config(account: &str, region: &str) -> Result<Settings, String> {
    let host = format!("{account}.dkr.ecr.{region}.amazonaws.com");
    let registry = Registry::parse(&host).map_err(|e| format!("{host}: {e}"))?;
    Ok(Settings {
        source: None,
        daemon: DaemonSettings::default(),
        registries: vec![RegistrySettings {
            host,
            registry,
            credentials: CredentialSource::default(),
            endpoint_url: None,
            targets: vec![DEFAULT_TARGET.to_string()],
        }],
        targets: vec![TargetSettings {
            name: DEFAULT_TARGET.to_string(),
            path: PathBuf::from(DEFAULT_TARGET),
            user: None,
            mode: None,
        }],
        warnings: Vec::new(),
    })
}

/// Line and column (1-based, in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The table header (`[daemon]`, `[[registry]]`, ...) in force at a byte offset.
fn section_at(text: &str, offset: usize) -> String {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    // Only whole lines before the error's line: a key in a header line belongs to the level above.
    let before = before.rfind('\n').map_or("", |i| &before[..i]);
    before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| {
            let end = l.rfind(']').map_or(l.len(), |i| i + 1);
            format!("in {}", &l[..end])
        })
        .unwrap_or_else(|| "at the top level".to_string())
}

const TOP_KEYS: &[&str] = &["daemon", "registry", "target"];
const DAEMON_KEYS: &[&str] = &[
    "refresh_at",
    "jitter",
    "retry_min",
    "retry_max",
    "min_interval",
    "remove_expired",
    "socket",
    "socket_group",
    "state_dir",
    "log_level",
];
const REGISTRY_KEYS: &[&str] = &[
    "host",
    "role_arn",
    "external_id",
    "session_name",
    "profile",
    "endpoint_url",
    "targets",
];
const TARGET_KEYS: &[&str] = &["name", "path", "user", "mode"];

/// Turns serde's "unknown field `x`, expected ..." into our message with a suggestion.
fn unknown_key_message(message: &str, section: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, _) = rest.split_once('`')?;
    let known: &[&str] = if section.contains("[daemon]") {
        DAEMON_KEYS
    } else if section.contains("[[registry]]") {
        REGISTRY_KEYS
    } else if section.contains("[[target]]") {
        TARGET_KEYS
    } else {
        TOP_KEYS
    };
    let suggestion = known
        .iter()
        .map(|k| (strsim::levenshtein(&key.to_lowercase(), k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min();
    Some(match suggestion {
        Some((_, k)) => format!("unknown key {key:?} {section}; did you mean {k:?}?"),
        None => format!(
            "unknown key {key:?} {section}; expected one of: {}",
            known.join(", ")
        ),
    })
}

struct Checker<'a> {
    text: &'a str,
    diagnostics: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn located(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> Diagnostic {
        let (line, column) = line_col(self.text, span.start);
        Diagnostic {
            line,
            column,
            message: message.into(),
        }
    }

    fn error(&mut self, span: std::ops::Range<usize>, message: impl Into<String>) {
        let d = self.located(span, message);
        self.diagnostics.push(d);
    }

    fn warning(&mut self, span: std::ops::Range<usize>, message: impl Into<String>) {
        let d = self.located(span, message);
        self.warnings.push(d);
    }

    /// A duration between zero (exclusive) and `max`: every time computation stays far from
    /// overflow, and no setting can make the daemon wait longer than makes sense.
    fn duration(
        &mut self,
        key: &str,
        v: &Option<Spanned<String>>,
        default: Duration,
        max: Duration,
    ) -> Duration {
        let Some(v) = v else { return default };
        match humantime::parse_duration(v.get_ref()) {
            Ok(d) if d.is_zero() => {
                self.error(v.span(), format!("{key} must be longer than zero"));
                default
            }
            Ok(d) if d > max => {
                self.error(
                    v.span(),
                    format!(
                        "{key} must be at most {}, found {:?}",
                        humantime::format_duration(max),
                        v.get_ref()
                    ),
                );
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.error(
                    v.span(),
                    format!(
                        "{key}: {:?} is not a duration ({e}); write e.g. \"30s\", \"5m\", \"1h\"",
                        v.get_ref()
                    ),
                );
                default
            }
        }
    }

    fn absolute_path(&mut self, key: &str, v: &Spanned<String>) -> PathBuf {
        let p = PathBuf::from(v.get_ref());
        if !p.is_absolute() {
            self.error(
                v.span(),
                format!("{key} must be an absolute path, found {:?}", v.get_ref()),
            );
        } else if p
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            self.error(v.span(), format!("{key} must not contain \"..\""));
        }
        p
    }

    fn non_empty(&mut self, key: &str, v: &Option<Spanned<String>>) -> Option<String> {
        let v = v.as_ref()?;
        if v.get_ref().trim().is_empty() {
            self.error(v.span(), format!("{key} must not be empty"));
            return None;
        }
        Some(v.get_ref().clone())
    }
}

fn parse_mode(s: &str) -> Option<u32> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return None;
    }
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o777)
}

/// Parses and validates config text; every problem found is returned, each located.
pub fn parse(
    text: &str,
    source: Option<&Path>,
    accounts: &dyn Accounts,
) -> Result<Settings, Vec<Diagnostic>> {
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let start = e.span().map_or(0, |s| s.start);
            let (line, column) = line_col(text, start);
            let section = section_at(text, start);
            let message = unknown_key_message(e.message(), &section)
                .unwrap_or_else(|| e.message().trim().to_string());
            return Err(vec![Diagnostic {
                line,
                column,
                message,
            }]);
        }
    };
    let mut c = Checker {
        text,
        diagnostics: Vec::new(),
        warnings: Vec::new(),
    };
    let defaults = DaemonSettings::default();
    let daemon = match &raw.daemon {
        None => defaults,
        Some(d) => {
            let refresh_at = match &d.refresh_at {
                Some(v) if !(*v.get_ref() > 0.0 && *v.get_ref() < 1.0) => {
                    c.error(
                        v.span(),
                        format!(
                            "refresh_at must be between 0 and 1 (exclusive), found {}",
                            v.get_ref()
                        ),
                    );
                    defaults.refresh_at
                }
                Some(v) => *v.get_ref(),
                None => defaults.refresh_at,
            };
            let jitter = match &d.jitter {
                Some(v) if !(*v.get_ref() >= 0.0 && *v.get_ref() < 1.0) => {
                    c.error(
                        v.span(),
                        format!(
                            "jitter must be at least 0 and below 1, found {}",
                            v.get_ref()
                        ),
                    );
                    defaults.jitter
                }
                Some(v) => *v.get_ref(),
                None => defaults.jitter,
            };
            let retry_min =
                c.duration("retry_min", &d.retry_min, defaults.retry_min, MAX_RETRY_MIN);
            let retry_max =
                c.duration("retry_max", &d.retry_max, defaults.retry_max, MAX_RETRY_MAX);
            if retry_max < retry_min
                && let Some(v) = d.retry_max.as_ref().or(d.retry_min.as_ref())
            {
                c.error(v.span(), "retry_max must not be shorter than retry_min");
            }
            let min_interval = c.duration(
                "min_interval",
                &d.min_interval,
                defaults.min_interval,
                MAX_MIN_INTERVAL,
            );
            let socket = d
                .socket
                .as_ref()
                .map_or(defaults.socket, |v| c.absolute_path("socket", v));
            let state_dir = d
                .state_dir
                .as_ref()
                .map_or(defaults.state_dir, |v| c.absolute_path("state_dir", v));
            let socket_group = d.socket_group.as_ref().and_then(|v| {
                let name = v.get_ref();
                let found = match name.parse::<u32>() {
                    Ok(gid) => Some(GroupSpec {
                        name: name.clone(),
                        gid,
                    }),
                    Err(_) => accounts.group(name),
                };
                if found.is_none() {
                    c.error(v.span(), format!("unknown group {name:?} in socket_group"));
                }
                found
            });
            let log_level = match &d.log_level {
                Some(v) => {
                    let l = v.get_ref().to_lowercase();
                    if !["error", "warn", "info", "debug", "trace"].contains(&l.as_str()) {
                        c.error(
                            v.span(),
                            format!(
                                "log_level must be one of error, warn, info, debug, trace; found {:?}",
                                v.get_ref()
                            ),
                        );
                    }
                    l
                }
                None => defaults.log_level,
            };
            DaemonSettings {
                refresh_at,
                jitter,
                retry_min,
                retry_max,
                min_interval,
                remove_expired: d.remove_expired.unwrap_or(defaults.remove_expired),
                socket,
                socket_group,
                state_dir,
                log_level,
            }
        }
    };

    // Targets first: registries refer to them by name.
    let mut targets = Vec::new();
    let mut names = HashSet::new();
    let mut paths = HashSet::new();
    for t in &raw.target {
        let span = t.span();
        let t = t.get_ref();
        let path = c.absolute_path("path", &t.path);
        if path.file_name().is_none() || t.path.get_ref().ends_with('/') {
            c.error(t.path.span(), "path must name a file, not a directory");
        }
        let name = match &t.name {
            Some(n) if n.get_ref().trim().is_empty() => {
                c.error(n.span(), "name must not be empty");
                n.get_ref().clone()
            }
            Some(n) => n.get_ref().clone(),
            None => t.path.get_ref().clone(),
        };
        let new_path = paths.insert(path.clone());
        if !names.insert(name.clone()) && (t.name.is_some() || new_path) {
            let at = t.name.as_ref().map_or(span.clone(), |n| n.span());
            c.error(at, format!("duplicate target name {name:?}"));
        }
        if !new_path {
            c.error(
                t.path.span(),
                format!("duplicate target path {:?}", t.path.get_ref()),
            );
        }
        let user = t.user.as_ref().and_then(|v| {
            let s = v.get_ref().trim();
            if s.is_empty() {
                c.error(v.span(), "user must not be empty");
                return None;
            }
            Some(UserSpec {
                name: s.to_string(),
                uid: s.parse::<u32>().ok(),
            })
        });
        let mode = t.mode.as_ref().and_then(|v| {
            let m = parse_mode(v.get_ref());
            match m {
                None => c.error(
                    v.span(),
                    format!(
                        "mode must be an octal string up to \"0777\", like \"0600\"; found {:?}",
                        v.get_ref()
                    ),
                ),
                Some(m) if m & 0o022 != 0 => c.error(
                    v.span(),
                    format!(
                        "mode {m:04o} would let others replace the credentials (group or other write); use \"0600\", or \"0640\" to let a group read"
                    ),
                ),
                Some(_) => {}
            }
            m.filter(|m| m & 0o022 == 0)
        });
        targets.push(TargetSettings {
            name,
            path,
            user,
            mode,
        });
    }
    if raw.target.is_empty() {
        targets.push(TargetSettings {
            name: DEFAULT_TARGET.to_string(),
            path: PathBuf::from(DEFAULT_TARGET),
            user: None,
            mode: None,
        });
    }

    let mut registries = Vec::new();
    let mut hosts = BTreeSet::new();
    if raw.registry.is_empty() {
        c.error(
            0..0,
            "no [[registry]]: list at least one, e.g.\n  [[registry]]\n  host = \"123456789012.dkr.ecr.us-east-1.amazonaws.com\"",
        );
    }
    for r in &raw.registry {
        let r = r.get_ref();
        let host = r.host.get_ref().clone();
        let registry = match Registry::parse(&host) {
            Ok(reg) => Some(reg),
            Err(e) => {
                c.error(
                    r.host.span(),
                    format!("invalid registry host {host:?}: {e}\n{ACCEPTED_SHAPES}"),
                );
                None
            }
        };
        if !hosts.insert(host.clone()) {
            c.error(r.host.span(), format!("duplicate registry host {host:?}"));
        }
        let role_arn = c.non_empty("role_arn", &r.role_arn);
        if let (Some(arn), Some(v)) = (&role_arn, &r.role_arn)
            && !(arn.starts_with("arn:") && arn.contains(":role/"))
        {
            c.error(
                v.span(),
                format!(
                    "role_arn must look like arn:aws:iam::123456789012:role/NAME, found {arn:?}"
                ),
            );
        }
        for (key, v) in [
            ("external_id", &r.external_id),
            ("session_name", &r.session_name),
        ] {
            if let Some(v) = v
                && role_arn.is_none()
            {
                c.error(
                    v.span(),
                    format!("{key} needs role_arn in the same [[registry]]"),
                );
            }
        }
        let external_id = c.non_empty("external_id", &r.external_id);
        let session_name = c.non_empty("session_name", &r.session_name);
        if let (Some(s), Some(v)) = (&session_name, &r.session_name)
            && (s.len() < 2
                || s.len() > 64
                || !s
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "=,.@-_".contains(ch)))
        {
            c.error(
                v.span(),
                "session_name must be 2 to 64 characters of letters, digits and =,.@-_",
            );
        }
        let profile = c.non_empty("profile", &r.profile);
        let endpoint_url = c.non_empty("endpoint_url", &r.endpoint_url);
        if let (Some(u), Some(v)) = (&endpoint_url, &r.endpoint_url)
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            c.error(
                v.span(),
                format!("endpoint_url must start with https:// (or http://), found {u:?}"),
            );
        } else if let (Some(u), Some(v)) = (&endpoint_url, &r.endpoint_url)
            && u.starts_with("http://")
        {
            c.warning(
                v.span(),
                format!(
                    "endpoint_url {u:?} is plain http://: the token and the signed request travel unencrypted; use https:// outside tests"
                ),
            );
        }
        let target_names = match &r.targets {
            None => targets.iter().map(|t| t.name.clone()).collect(),
            Some(list) => {
                if list.get_ref().is_empty() {
                    c.error(
                        list.span(),
                        "targets must not be empty (leave it out for every target)",
                    );
                }
                let mut seen = HashSet::new();
                let mut out = Vec::new();
                for n in list.get_ref() {
                    if !targets.iter().any(|t| &t.name == n.get_ref()) {
                        let known: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
                        c.error(
                            n.span(),
                            format!(
                                "unknown target {:?}; targets are: {}",
                                n.get_ref(),
                                known.join(", ")
                            ),
                        );
                    } else if seen.insert(n.get_ref().clone()) {
                        out.push(n.get_ref().clone());
                    }
                }
                out
            }
        };
        if let Some(registry) = registry {
            registries.push(RegistrySettings {
                host,
                registry,
                credentials: CredentialSource {
                    profile,
                    role_arn,
                    external_id,
                    session_name,
                },
                endpoint_url,
                targets: target_names,
            });
        }
    }

    if !c.diagnostics.is_empty() {
        return Err(c.diagnostics);
    }
    Ok(Settings {
        source: source.map(Path::to_path_buf),
        daemon,
        registries,
        targets,
        warnings: c.warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeAccounts;
    impl Accounts for FakeAccounts {
        fn group(&self, name: &str) -> Option<GroupSpec> {
            (name == "wheel").then(|| GroupSpec {
                name: name.into(),
                gid: 10,
            })
        }
    }

    const H: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

    fn ok(text: &str) -> Settings {
        match parse(text, None, &FakeAccounts) {
            Ok(s) => s,
            Err(d) => panic!("{d:?}"),
        }
    }

    fn err(text: &str) -> Vec<Diagnostic> {
        parse(text, None, &FakeAccounts).expect_err("config should be rejected")
    }

    #[test]
    fn full_config() {
        let s = ok(r#"
[daemon]
refresh_at = 0.6
jitter = 0.2
retry_min = "1s"
retry_max = "2m"
min_interval = "30s"
remove_expired = false
socket = "/tmp/s.sock"
socket_group = "wheel"
state_dir = "/tmp/state"
log_level = "DEBUG"

[[registry]]
host = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
role_arn = "arn:aws:iam::123456789012:role/pull"
external_id = "ext"
session_name = "refresher"
profile = "prod"
endpoint_url = "https://vpce.example"
targets = ["root"]

[[registry]]
host = "public.ecr.aws"

[[target]]
name = "root"
path = "/root/.docker/config.json"
user = "0"
mode = "0640"

[[target]]
path = "/home/portainer/.docker/config.json"
user = "portainer"
"#);
        assert_eq!(s.daemon.refresh_at, 0.6);
        assert_eq!(s.daemon.retry_max, Duration::from_secs(120));
        assert_eq!(s.daemon.socket_group.as_ref().map(|g| g.gid), Some(10));
        assert_eq!(s.daemon.log_level, "debug");
        assert!(!s.daemon.remove_expired);
        assert_eq!(s.registries.len(), 2);
        assert_eq!(s.registries[0].targets, vec!["root"]);
        assert_eq!(
            s.registries[1].targets,
            vec!["root", "/home/portainer/.docker/config.json"]
        );
        assert_eq!(
            s.registries[0].credentials.role_arn.as_deref(),
            Some("arn:aws:iam::123456789012:role/pull")
        );
        assert_eq!(s.targets[0].mode, Some(0o640));
        assert_eq!(s.targets[0].user.as_ref().and_then(|u| u.uid), Some(0));
        let portainer = s.targets[1].user.as_ref().expect("a user");
        assert_eq!(
            (portainer.name.as_str(), portainer.uid),
            ("portainer", None)
        );
    }

    #[test]
    fn minimal_config_defaults() {
        let s = ok(&format!("[[registry]]\nhost = \"{H}\"\n"));
        assert_eq!(s.daemon, DaemonSettings::default());
        assert_eq!(s.targets.len(), 1);
        assert_eq!(s.targets[0].path, PathBuf::from(DEFAULT_TARGET));
        assert_eq!(s.registries[0].targets, vec![DEFAULT_TARGET]);
    }

    #[test]
    fn unknown_key_suggests() {
        let d = err(&format!("[[registry]]\nhost = \"{H}\"\nrole-arn = \"x\"\n"));
        assert_eq!(d[0].line, 3);
        assert_eq!(d[0].column, 1);
        assert_eq!(
            d[0].message,
            "unknown key \"role-arn\" in [[registry]]; did you mean \"role_arn\"?"
        );
        let d = err("[deamon]\n");
        assert!(
            d[0].message.contains("did you mean \"daemon\""),
            "{:?}",
            d[0]
        );
        let d = err(&format!(
            "[daemon]\nwhatever = 1\n[[registry]]\nhost = \"{H}\"\n"
        ));
        assert!(
            d[0].message.contains("expected one of: refresh_at"),
            "{:?}",
            d[0]
        );
    }

    /// Each bad config, the line of the first diagnostic and a word it must contain.
    pub(crate) const BAD: &[(&str, usize, &str)] = &[
        (
            "[[registry]]\nhost = \"nope\"\n",
            2,
            "invalid registry host",
        ),
        ("", 1, "no [[registry]]"),
        ("[daemon]\n", 1, "no [[registry]]"),
        (
            "[[registry]]\nhost = \"public.ecr.aws\"\n[[registry]]\nhost = \"public.ecr.aws\"\n",
            4,
            "duplicate registry host",
        ),
        (
            "[[registry]]\nhost = \"public.ecr.aws\"\ntargets = [\"x\"]\n",
            3,
            "unknown target \"x\"",
        ),
        (
            "[[registry]]\nhost = \"public.ecr.aws\"\n[[target]]\npath = \"rel/config.json\"\n",
            4,
            "absolute",
        ),
        (
            "[[registry]]\nhost = \"public.ecr.aws\"\n[[target]]\npath = \"/a/config.json\"\nuser = \" \"\n",
            5,
            "user must not be empty",
        ),
        (
            "[[registry]]\nhost = \"public.ecr.aws\"\nexternal_id = \"e\"\n",
            3,
            "needs role_arn",
        ),
        (
            "[daemon]\njitter = 1.0\n[[registry]]\nhost = \"public.ecr.aws\"\n",
            2,
            "jitter",
        ),
        (
            "[daemon]\njitter = -0.1\n[[registry]]\nhost = \"public.ecr.aws\"\n",
            2,
            "jitter",
        ),
        (
            "[daemon]\nrefresh_at = 1.5\n[[registry]]\nhost = \"public.ecr.aws\"\n",
            2,
            "refresh_at",
        ),
        (
            "[daemon]\nrefresh_at = 0.0\n[[registry]]\nhost = \"public.ecr.aws\"\n",
            2,
            "refresh_at",
        ),
        (
            "[daemon]\nretry_min = \"soon\"\n[[registry]]\nhost = \"public.ecr.aws\"\n",
            2,
            "not a duration",
        ),
        (
            "[daemon]\nretry_min = \"10m\"\nretry_max = \"1m\"\n[[registry]]\nhost = \"public.ecr.aws\"\n",
            3,
            "retry_max",
        ),
        (
            "[[registry]]\nhost = \"public.ecr.aws\"\n[[target]]\npath = \"/a/config.json\"\nmode = \"0800\"\n",
            5,
            "octal",
        ),
        (
            "[[registry]]\nhost = \"public.ecr.aws\"\n[[target]]\npath = \"/a/config.json\"\nmode = \"1777\"\n",
            5,
            "octal",
        ),
        (
            "[[registry]]\nhost = \"public.ecr.aws\"\n[[target]]\npath = \"/a/config.json\"\nmode = 600\n",
            5,
            "string",
        ),
        (
            "[[registry]]\nhost = \"public.ecr.aws\"\n[[target]]\nname = \"a\"\npath = \"/a/config.json\"\n[[target]]\nname = \"a\"\npath = \"/b/config.json\"\n",
            7,
            "duplicate target name",
        ),
        (
            "[[registry]]\nhost = \"public.ecr.aws\"\n[[target]]\npath = \"/a/config.json\"\n[[target]]\npath = \"/a/config.json\"\n",
            6,
            "duplicate target",
        ),
        (
            "[[registry]]\nhost = \"public.ecr.aws\"\nrole_arn = \"pull\"\n",
            3,
            "role_arn must look like",
        ),
        (
            "[[registry]]\nhost = \"public.ecr.aws\"\nendpoint_url = \"vpce.example\"\n",
            3,
            "endpoint_url",
        ),
        (
            "[[registry]]\nhost = \"public.ecr.aws\"\n[[target]]\nuser = \"root\"\n",
            3,
            "missing field `path`",
        ),
        (
            "[[registry]]\nhost = \"public.ecr.aws\"\nrole_arn = \"arn:aws:iam::1:role/r\"\nsession_name = \"a b\"\n",
            4,
            "session_name",
        ),
        (
            "[daemon]\nsocket_group = \"nogroup-here\"\n[[registry]]\nhost = \"public.ecr.aws\"\n",
            2,
            "unknown group",
        ),
        (
            "[daemon]\nlog_level = \"loud\"\n[[registry]]\nhost = \"public.ecr.aws\"\n",
            2,
            "log_level",
        ),
        (
            "[daemon]\nsocket = \"status.sock\"\n[[registry]]\nhost = \"public.ecr.aws\"\n",
            2,
            "absolute",
        ),
        (
            "[[registry]]\nhost = \"public.ecr.aws\"\n[[target]]\npath = \"/a/../b/config.json\"\n",
            4,
            "\"..\"",
        ),
        (
            "[[registry]]\nhost = \"public.ecr.aws\"\nhost = \"public.ecr.aws\"\n",
            3,
            "duplicate key",
        ),
        (
            "[[registry]]\nhost = \"public.ecr.aws\"\ntargets = []\n",
            3,
            "must not be empty",
        ),
        ("[[registry]\nhost = \"x\"\n", 1, ""),
    ];

    #[test]
    fn bad_configs_are_located() {
        for (text, line, word) in BAD {
            let d = err(text);
            assert_eq!(d[0].line, *line, "{text:?}: {d:?}");
            assert!(
                d[0].message.contains(word),
                "{text:?}: {d:?} lacks {word:?}"
            );
        }
    }

    #[test]
    fn duration_extremes() {
        let cfg = |key: &str, v: &str| {
            format!("[daemon]\n{key} = \"{v}\"\n[[registry]]\nhost = \"{H}\"\n")
        };
        let huge = [
            "500000000000y",
            "18446744073709551615s",
            "18446744073709551616s",
            "99999999999999999999999999999999ns",
            "10000y",
        ];
        for (key, over) in [
            ("retry_min", "61m"),
            ("retry_max", "25h"),
            ("min_interval", "13h"),
        ] {
            for v in huge.into_iter().chain([over]) {
                let d = err(&cfg(key, v));
                assert_eq!(d.len(), 1, "{key} = {v}: {d:?}");
                assert!(
                    d[0].message.contains("at most") || d[0].message.contains("is not a duration"),
                    "{key} = {v}: {}",
                    d[0].message
                );
            }
            for v in ["0", "0s", "0ns"] {
                assert!(
                    err(&cfg(key, v))[0].message.contains("longer than zero"),
                    "{key} = {v}"
                );
            }
        }
        for key in ["retry_min", "min_interval"] {
            let s = ok(&cfg(key, "1ns"));
            assert!(s.daemon.retry_min > Duration::ZERO && s.daemon.min_interval > Duration::ZERO);
        }
        let s = ok(&cfg("min_interval", "12h"));
        assert_eq!(s.daemon.min_interval, MAX_MIN_INTERVAL);
        let s = ok(&cfg("retry_max", "24h"));
        assert_eq!(s.daemon.retry_max, MAX_RETRY_MAX);
    }

    #[test]
    fn parse_mode_cases() {
        assert_eq!(parse_mode("0600"), Some(0o600));
        assert_eq!(parse_mode("600"), Some(0o600));
        assert_eq!(parse_mode("0o644"), Some(0o644));
        assert_eq!(parse_mode("0777"), Some(0o777));
        assert_eq!(parse_mode("01000"), None);
        assert_eq!(parse_mode("0x1"), None);
        assert_eq!(parse_mode(""), None);
        assert_eq!(parse_mode("-1"), None);
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("é\nx", 3), (2, 1));
        assert_eq!(line_col("x", 99), (1, 2));
    }

    #[test]
    fn example_config_is_valid_and_the_common_case() {
        let s = ok(include_str!("../../config.example.toml"));
        assert_eq!(
            s.daemon,
            DaemonSettings::default(),
            "the example shows the defaults"
        );
        assert_eq!(s.registries.len(), 1);
        let paths: Vec<_> = s.targets.iter().map(|t| t.path.to_str().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "/root/.docker/config.json",
                "/home/portainer/.docker/config.json",
                "/run/containers/0/auth.json"
            ]
        );
    }

    #[test]
    fn zero_config_shape() {
        let s = zero_config("123456789012", "eu-west-1").unwrap();
        assert_eq!(
            s.registries[0].host,
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            s.targets[0].path,
            PathBuf::from("/root/.docker/config.json")
        );
        assert!(zero_config("x", "eu-west-1").is_err());
    }
}
