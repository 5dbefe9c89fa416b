//! The TOML config: the file's serde structs (`raw`) validated into `Settings`, one module per
//! section (`daemon`, `targets`, `registries`), every problem located at file:line:col.

pub mod alias;
mod check;
mod daemon;
mod portainer;
mod raw;
mod registries;
mod swarm;
mod syntax;
mod targets;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ecr::registry::Registry;
use crate::safe_fs::{self, FileError};
use check::Checker;
pub use portainer::{PortainerSettings, RecordSelection};
use raw::RawConfig;
pub use swarm::SwarmSettings;

/// Where the daemon looks for its config when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/ecr-refresherd/config.toml";
/// The packaged `/etc/ecr-refresherd/config.toml`, byte for byte: config.example.toml with every
/// setting commented out. A config with no settings means "this instance's own registry", so the
/// service starts as installed; `init --write` may replace this file (and only this one).
pub fn packaged_config() -> String {
    let mut out = String::from(
        "# ecr-refresherd: with every line commented out, the daemon keeps this instance's own\n\
         # registry (<account>.dkr.ecr.<region>.amazonaws.com, from instance metadata) fresh in\n\
         # /root/.docker/config.json. Uncomment and edit to choose registries and auth files, or\n\
         # replace this file with `sudo ecr-refresherd init --write /etc/ecr-refresherd/config.toml`;\n\
         # the daemon picks up the change by itself (or: systemctl reload ecr-refresherd).\n\n",
    );
    for line in include_str!("../../config.example.toml").lines() {
        let t = line.trim_start();
        if !(t.is_empty() || t.starts_with('#')) {
            out.push_str("# ");
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The control socket when the config names none.
pub const DEFAULT_SOCKET: &str = "/run/ecr-refresherd/status.sock";
/// The credential helper's socket when the config names none (anyone may connect; each request
/// is answered by the caller's uid and the registries' grants).
pub const DEFAULT_HELPER_SOCKET: &str = "/run/ecr-refresherd/helper.sock";
/// Where the daemon keeps what it wrote.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/ecr-refresherd";
/// Bounds of the `[daemon]` durations.
pub const MAX_RETRY_MIN: Duration = Duration::from_secs(3600);
/// The longest `retry_max`.
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
    /// The `[daemon]` section.
    pub daemon: DaemonSettings,
    /// The `[[registry]]` entries, in file order.
    pub registries: Vec<RegistrySettings>,
    /// The `[[target]]` entries, in file order (root's docker config when there are none).
    pub targets: Vec<TargetSettings>,
    /// The `[[portainer]]` instances, in file order.
    pub portainers: Vec<PortainerSettings>,
    /// `[swarm]`, when enabled.
    pub swarm: Option<SwarmSettings>,
    /// Things that work but that an operator should hear about (located like errors).
    pub warnings: Vec<Diagnostic>,
}

/// The `[daemon]` section, with its defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSettings {
    /// Refresh after this fraction of a token's lifetime (0 < x < 1).
    pub refresh_at: f64,
    /// Up to this fraction of that interval is taken off at random.
    pub jitter: f64,
    /// The first retry after a failure.
    pub retry_min: Duration,
    /// The longest retry interval (capped exponential backoff).
    pub retry_max: Duration,
    /// The fewest seconds between two successful fetches of one group.
    pub min_interval: Duration,
    /// Remove our entries whose token expired with no valid successor.
    pub remove_expired: bool,
    /// The control socket.
    pub socket: PathBuf,
    /// The group whose members may use the socket.
    pub socket_group: Option<GroupSpec>,
    /// The socket of the credential helper and provider (credentials only, per grant).
    pub helper_socket: PathBuf,
    /// Where the daemon remembers what it wrote.
    pub state_dir: PathBuf,
    /// error, warn, info, debug or trace.
    pub log_level: String,
    /// Where the Prometheus text is kept (node_exporter's textfile collector), if anywhere.
    pub metrics_file: Option<PathBuf>,
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
            helper_socket: PathBuf::from(DEFAULT_HELPER_SOCKET),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            log_level: "info".to_string(),
            metrics_file: None,
        }
    }
}

pub use crate::ecr::token::CredentialSource;
use crate::ecr::token::GroupKey;

impl GroupKey {
    /// The token group of a configured registry.
    pub(crate) fn of(reg: &RegistrySettings) -> GroupKey {
        GroupKey::new(&reg.registry, &reg.credentials, reg.endpoint_url.as_deref())
    }
}

/// The targets a registry is written to. "Every target" is kept as such, not as a copy of every
/// name per registry (1,000 registries x 100 targets would hold 100,000 names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryTargets {
    /// Every target (no `targets` key).
    All,
    /// Only these, by name, each once.
    Only(Vec<String>),
}

impl RegistryTargets {
    /// Whether the target named `name` gets this registry.
    pub fn covers(&self, name: &str) -> bool {
        match self {
            RegistryTargets::All => true,
            RegistryTargets::Only(names) => names.iter().any(|n| n == name),
        }
    }
}

/// One `[[registry]]` entry, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrySettings {
    /// The registry host as written.
    pub host: String,
    /// Other names the same credential is written and served under (mirrors, proxies).
    pub aliases: Vec<String>,
    /// What the host says: account, region, partition, or ECR Public.
    pub registry: Registry,
    /// How the API call is authenticated.
    pub credentials: CredentialSource,
    /// The ECR API endpoint, when not the default.
    pub endpoint_url: Option<String>,
    /// Names of the targets this registry is written to.
    pub targets: RegistryTargets,
    /// Who besides root may get this registry's credential from the helper socket: these users
    /// (names looked up at each request), members of these groups, and the `user` of each
    /// target the registry is written to.
    pub grants: Grant,
}

impl RegistrySettings {
    /// The host, then each alias: every name this registry's credential goes by.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.host.as_str()).chain(self.aliases.iter().map(String::as_str))
    }
}

/// Who may ask the helper socket for one registry's credential (root always may).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// Users by name or uid.
    pub users: Vec<UserSpec>,
    /// Groups by name or gid (primary or supplementary membership).
    pub groups: Vec<String>,
}

/// One `[[target]]` entry, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSettings {
    /// The name registries refer to (the path when none is given).
    pub name: String,
    /// The auth file, absolute.
    pub path: PathBuf,
    /// The owner to write as; `None`: the owner of the nearest existing ancestor directory.
    pub user: Option<UserSpec>,
    /// The mode to enforce; `None`: keep an existing file's mode, 0600 for a new one.
    pub mode: Option<u32>,
}

/// A target's user as the config names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    /// The name or number as written.
    pub name: String,
    /// Set when the config gives a number. A name is looked up at each write instead: the user
    /// may not exist yet (created after the daemon started), and that target alone waits for it.
    pub uid: Option<u32>,
}

/// A group named in the config, resolved at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    /// The group name (or number) as written.
    pub name: String,
    /// Its gid.
    pub gid: u32,
}

/// One problem in a config file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong, and how to fix it where that is known.
    pub message: String,
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Someone but root could change the file (or a directory above it), or it is no plain file.
    #[error("{0}")]
    Untrusted(FileError),
    /// The file holds no setting at all (every line commented out, as packaged).
    /// The file holds no setting at all (every line commented out, as packaged).
    #[error("{}: holds no settings", path.display())]
    Empty {
        /// The config file.
        path: PathBuf,
    },
    /// The file has errors, each located.
    #[error("{}", render(path, diagnostics))]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// Every problem found.
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

/// Resolves group names; a seam so tests do not depend on the machine's group database.
pub trait Accounts {
    /// The group of this name, if there is one.
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
/// (see [`safe_fs::read_trusted`]).
pub fn load(path: &Path, accounts: &dyn Accounts) -> Result<Settings, ConfigError> {
    let bytes = safe_fs::read_trusted(path, MAX_CONFIG_SIZE).map_err(|e| match e {
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

/// The instance's registry host (from IMDS) is not an ECR host.
#[derive(Debug, thiserror::Error)]
#[error("the instance's registry {host}: {source}")]
pub struct InstanceHostError {
    host: String,
    #[source]
    source: crate::ecr::registry::HostError,
}

/// Settings for a host that has no config file: one registry, root's docker config.
pub fn zero_config(account: &str, region: &str) -> Result<Settings, InstanceHostError> {
    let host = format!("{account}.dkr.ecr.{region}.amazonaws.com");
    let registry = Registry::parse(&host).map_err(|source| InstanceHostError {
        host: host.clone(),
        source,
    })?;
    Ok(Settings {
        source: None,
        daemon: DaemonSettings::default(),
        registries: vec![RegistrySettings {
            host,
            aliases: Vec::new(),
            registry,
            credentials: CredentialSource::default(),
            endpoint_url: None,
            targets: RegistryTargets::All,
            grants: Grant::default(),
        }],
        targets: vec![TargetSettings {
            name: DEFAULT_TARGET.to_string(),
            path: PathBuf::from(DEFAULT_TARGET),
            user: None,
            mode: None,
        }],
        portainers: Vec::new(),
        swarm: None,
        warnings: Vec::new(),
    })
}

/// The metrics file is rewritten whole, world-readable: never an auth file, a socket, or
/// anything in the state directory.
fn metrics_file_apart(
    c: &mut Checker,
    raw: &RawConfig,
    daemon: &DaemonSettings,
    targets: &[TargetSettings],
) {
    let (Some(path), Some(v)) = (
        &daemon.metrics_file,
        raw.daemon.as_ref().and_then(|d| d.metrics_file.as_ref()),
    ) else {
        return;
    };
    let clash = if let Some(t) = targets.iter().find(|t| &t.path == path) {
        Some(format!("the auth file of target {:?}", t.name))
    } else if *path == daemon.socket || *path == daemon.helper_socket {
        Some("a socket of the daemon".to_string())
    } else if path.starts_with(&daemon.state_dir) {
        Some("inside state_dir (the daemon's own files)".to_string())
    } else {
        None
    };
    if let Some(what) = clash {
        c.error(
            v.span(),
            format!("metrics_file must be a file of its own, not {what}"),
        );
    }
}

/// Parses and validates config text; every problem found is returned, each located.
pub fn parse(
    text: &str,
    source: Option<&Path>,
    accounts: &dyn Accounts,
) -> Result<Settings, Vec<Diagnostic>> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| vec![syntax::diagnostic(text, &e)])?;
    let mut c = Checker::new(text);
    let daemon = raw
        .daemon
        .as_ref()
        .map_or_else(DaemonSettings::default, |d| {
            daemon::daemon(&mut c, d, accounts)
        });
    // Targets first: registries refer to them by name.
    let targets = targets::targets(&mut c, &raw.target);
    let registries = registries::registries(&mut c, &raw.registry, &targets);
    let portainers = portainer::portainers(&mut c, &raw.portainer);
    let swarm = swarm::swarm(&mut c, raw.swarm.as_ref());
    metrics_file_apart(&mut c, &raw, &daemon, &targets);
    let warnings = c.finish()?;
    Ok(Settings {
        source: source.map(Path::to_path_buf),
        daemon,
        registries,
        targets,
        portainers,
        swarm,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::check::line_col;
    use super::targets::parse_mode;
    use super::*;
    use std::collections::BTreeSet;

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

    /// Every key of every section, set.
    const FULL: &str = r#"
[daemon]
refresh_at = 0.6
jitter = 0.2
retry_min = "1s"
retry_max = "2m"
min_interval = "30s"
remove_expired = false
socket = "/tmp/s.sock"
socket_group = "wheel"
helper_socket = "/tmp/helper.sock"
state_dir = "/tmp/state"
log_level = "DEBUG"
metrics_file = "/tmp/metrics/ecr-refresherd.prom"

[[registry]]
host = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
aliases = ["mirror.internal:5000", "10.0.0.7"]
role_arn = "arn:aws:iam::123456789012:role/pull"
external_id = "ext"
session_name = "refresher"
profile = "prod"
endpoint_url = "https://vpce.example"
targets = ["root"]
users = ["builder", "1001"]
groups = ["docker"]

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

[[portainer]]
url = "https://127.0.0.1:9443"
api_key_file = "/etc/ecr-refresherd/portainer.key"
ca_file = "/etc/ecr-refresherd/portainer-ca.pem"
pin_sha256 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
registries = [3, 4]
check_every = "2m"

[swarm]
enabled = true
socket = "/run/docker.sock"
check_every = "30s"
"#;

    #[test]
    fn full_config() {
        let s = ok(FULL);
        assert_eq!(s.daemon.refresh_at, 0.6);
        assert_eq!(s.daemon.retry_max, Duration::from_secs(120));
        assert_eq!(s.daemon.socket_group.as_ref().map(|g| g.gid), Some(10));
        assert_eq!(s.daemon.log_level, "debug");
        assert!(!s.daemon.remove_expired);
        assert_eq!(s.registries.len(), 2);
        let only = |v: &[&str]| RegistryTargets::Only(v.iter().map(|s| s.to_string()).collect());
        assert_eq!(s.registries[0].targets, only(&["root"]));
        assert_eq!(
            s.registries[0].aliases,
            ["mirror.internal:5000", "10.0.0.7"]
        );
        assert_eq!(
            s.registries[0].names().collect::<Vec<_>>(),
            [H, "mirror.internal:5000", "10.0.0.7"]
        );
        assert!(s.registries[1].aliases.is_empty());
        // No `targets` key: every target, without a copy of every name.
        assert_eq!(s.registries[1].targets, RegistryTargets::All);
        assert!(
            s.registries[1]
                .targets
                .covers("/home/portainer/.docker/config.json")
        );
        assert_eq!(
            s.registries[0].credentials.role_arn.as_deref(),
            Some("arn:aws:iam::123456789012:role/pull")
        );
        assert_eq!(s.targets[0].mode, Some(0o640));
        assert_eq!(s.daemon.helper_socket, PathBuf::from("/tmp/helper.sock"));
        // users and groups, and the `user` of the one target the registry is written to.
        let g = &s.registries[0].grants;
        let users: Vec<_> = g.users.iter().map(|u| (u.name.as_str(), u.uid)).collect();
        assert_eq!(
            users,
            [("builder", None), ("1001", Some(1001)), ("0", Some(0))]
        );
        assert_eq!(g.groups, ["docker"]);
        // A registry for every target gets every target's user.
        let users: Vec<_> = s.registries[1]
            .grants
            .users
            .iter()
            .map(|u| u.name.as_str())
            .collect();
        assert_eq!(users, ["0", "portainer"]);
        let p = &s.portainers[0];
        assert_eq!(p.url, "https://127.0.0.1:9443");
        assert_eq!(p.records, RecordSelection::Only(vec![3, 4]));
        assert_eq!(p.check_every, Duration::from_secs(120));
        assert_eq!(p.pin_sha256.map(|x| x[1]), Some(0x11));
        assert_eq!(s.targets[0].user.as_ref().and_then(|u| u.uid), Some(0));
        let portainer = s.targets[1].user.as_ref().expect("a user");
        assert_eq!(
            (portainer.name.as_str(), portainer.uid),
            ("portainer", None)
        );
    }

    /// The accepted keys are the raw structs' fields: FULL sets exactly the listed keys of each
    /// section and is read; one key more is refused, in that section, with the list.
    #[test]
    fn section_keys_are_the_struct_fields() {
        use super::raw::Section;
        let doc: toml::Table = FULL.parse().unwrap();
        let keys = |t: &toml::Table| t.keys().cloned().collect::<BTreeSet<_>>();
        let first = |name: &str| doc[name].as_array().unwrap()[0].as_table().unwrap().clone();
        for (section, set) in [
            (Section::Top, keys(&doc)),
            (Section::Daemon, keys(doc["daemon"].as_table().unwrap())),
            (Section::Registry, keys(&first("registry"))),
            (Section::Target, keys(&first("target"))),
            (Section::Portainer, keys(&first("portainer"))),
            (Section::Swarm, keys(doc["swarm"].as_table().unwrap())),
        ] {
            let listed: BTreeSet<String> = section.keys().iter().map(|k| k.to_string()).collect();
            assert_eq!(listed, set, "{section:?}");
            let extra = match section.header() {
                None => format!("extra_key = 1\n{FULL}"),
                Some(h) => FULL.replacen(&format!("{h}\n"), &format!("{h}\nextra_key = 1\n"), 1),
            };
            let want = format!(
                "unknown key \"extra_key\" {}; expected one of: {}",
                section.place(),
                section.keys().join(", ")
            );
            assert_eq!(err(&extra)[0].message, want);
        }
    }

    #[test]
    fn the_helper_socket_sits_beside_the_control_socket_unless_set() {
        let reg = format!("[[registry]]\nhost = \"{H}\"\n");
        assert_eq!(
            ok(&reg).daemon.helper_socket,
            PathBuf::from(DEFAULT_HELPER_SOCKET)
        );
        let s = ok(&format!("[daemon]\nsocket = \"/x/ctl.sock\"\n{reg}"));
        assert_eq!(s.daemon.helper_socket, PathBuf::from("/x/helper.sock"));
        let d = err(&format!(
            "[daemon]\nsocket = \"/x/a.sock\"\nhelper_socket = \"/x/a.sock\"\n{reg}"
        ));
        assert_eq!(
            (d[0].line, d[0].message.as_str()),
            (3, "helper_socket must differ from socket")
        );
        let d = err(&format!("{reg}users = [\"a b\"]\n"));
        assert!(
            d[0].message.contains("is not a user or group name"),
            "{d:?}"
        );
    }

    /// Every `[[portainer]]` mistake is located at its value, with what to write instead.
    #[test]
    fn swarm_is_off_unless_enabled_and_its_errors_are_located() {
        let base = format!("[[registry]]\nhost = \"{H}\"\n[swarm]\n");
        assert_eq!(ok(&base).swarm, None, "an empty [swarm] is off");
        assert_eq!(ok(&format!("{base}enabled = false\n")).swarm, None);
        let s = ok(&format!("{base}enabled = true\n")).swarm.unwrap();
        assert_eq!(s.socket, std::path::Path::new(swarm::DEFAULT_SOCKET));
        assert_eq!(s.check_every, swarm::DEFAULT_CHECK_EVERY);
        let s = ok(&format!(
            "{base}enabled = true\nsocket = \"/run/d.sock\"\ncheck_every = \"30s\"\n"
        ))
        .swarm
        .unwrap();
        assert_eq!(s.socket, std::path::Path::new("/run/d.sock"));
        assert_eq!(s.check_every, Duration::from_secs(30));
        for (body, line, column, want) in [
            (
                "enabled = true\nsocket = \"d.sock\"\n",
                5,
                10,
                "socket must be an absolute path",
            ),
            (
                "enabled = true\ncheck_every = \"10ms\"\n",
                5,
                15,
                "check_every must be at least 1s",
            ),
            ("enabled = \"yes\"\n", 4, 11, "invalid type"),
            ("enable = true\n", 4, 1, "unknown"),
        ] {
            let d = err(&format!("{base}{body}"));
            assert_eq!((d[0].line, d[0].column), (line, column), "{body:?}: {d:?}");
            assert!(d[0].message.contains(want), "{body:?}: {d:?}");
        }
    }

    #[test]
    fn portainer_errors_are_located() {
        let base = format!("[[registry]]\nhost = \"{H}\"\n[[portainer]]\n");
        let key = "api_key_file = \"/etc/k\"\n";
        for (body, line, column, want) in [
            (
                format!("url = \"http://p:9000\"\n{key}"),
                4,
                7,
                "must start with https://",
            ),
            (
                format!("url = \"https://u:pw@p\"\n{key}"),
                4,
                7,
                "must not hold a user",
            ),
            (
                format!("url = \"https://p:0\"\n{key}"),
                4,
                7,
                "invalid port",
            ),
            (
                "url = \"https://p\"\napi_key_file = \"k\"\n".to_string(),
                5,
                16,
                "api_key_file must be an absolute path",
            ),
            (
                format!("url = \"https://p\"\n{key}ca_file = \"../ca\"\n"),
                6,
                11,
                "ca_file must be an absolute path",
            ),
            (
                format!("url = \"https://p\"\n{key}pin_sha256 = \"abc\"\n"),
                6,
                14,
                "is not a SHA-256 fingerprint",
            ),
            (
                format!("url = \"https://p\"\n{key}registries = []\n"),
                6,
                14,
                "at least one record id",
            ),
            (
                format!("url = \"https://p\"\n{key}registries = [1, 0]\n"),
                6,
                18,
                "registry id 0 is not",
            ),
            (
                format!("url = \"https://p\"\n{key}registries = [2, 2]\n"),
                6,
                18,
                "duplicate registry id 2",
            ),
            (
                format!("url = \"https://p\"\n{key}check_every = \"500ms\"\n"),
                6,
                15,
                "check_every must be at least 1s",
            ),
            (
                format!("url = \"https://p\"\n{key}check_every = \"soon\"\n"),
                6,
                15,
                "is not a duration",
            ),
            (
                format!("url = \"https://p\"\n{key}[[portainer]]\nurl = \"https://p/\"\n{key}"),
                7,
                7,
                "duplicate [[portainer]] url \"https://p\"",
            ),
            (
                format!("url = \"https://p\"\n{key}registries = [\"a\"]\n"),
                6,
                15,
                "invalid type",
            ),
            (key.to_string(), 3, 1, "missing field `url`"),
        ] {
            let d = err(&format!("{base}{body}"));
            assert_eq!((d[0].line, d[0].column), (line, column), "{body:?}: {d:?}");
            assert!(d[0].message.contains(want), "{body:?}: {d:?}");
        }
        let s = ok(&format!("{base}url = \"https://p:9443/\"\n{key}"));
        assert_eq!(s.portainers[0].url, "https://p:9443");
        assert_eq!(s.portainers[0].records, RecordSelection::Matching);
        assert_eq!(s.portainers[0].check_every, portainer::DEFAULT_CHECK_EVERY);
        assert_eq!(s.portainers[0].ca_file, None);
    }

    /// serde's words after an unknown key tell the section: no section's are the end of another's.
    #[test]
    fn each_section_is_told_by_serde_words() {
        use super::raw::Section;
        use super::syntax::{tail, unknown_key};
        for a in Section::ALL {
            assert_eq!(
                unknown_key(&format!("unknown field `k{}", tail(a))),
                Some((a, "k"))
            );
            for b in Section::ALL.into_iter().filter(|b| *b != a) {
                assert!(!tail(a).ends_with(&tail(b)), "{a:?} {b:?}");
            }
        }
        // A key holding serde's own quotes.
        let odd = format!("unknown field `a`, b{}", tail(Section::Target));
        assert_eq!(unknown_key(&odd), Some((Section::Target, "a`, b")));
    }

    #[test]
    fn minimal_config_defaults() {
        let s = ok(&format!("[[registry]]\nhost = \"{H}\"\n"));
        assert_eq!(s.daemon, DaemonSettings::default());
        assert_eq!(s.targets.len(), 1);
        assert_eq!(s.targets[0].path, PathBuf::from(DEFAULT_TARGET));
        assert_eq!(s.registries[0].targets, RegistryTargets::All);
        assert!(s.registries[0].targets.covers(DEFAULT_TARGET));
    }

    #[test]
    fn a_loopback_alias_any_user_may_bind_is_a_located_warning() {
        let s = ok(&format!(
            "[[registry]]\nhost = \"{H}\"\naliases = [\"mirror.internal:5000\",\n  \"localhost:5000\"]\n"
        ));
        assert_eq!(s.registries[0].aliases.len(), 2, "a warning, not an error");
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        let w = &s.warnings[0];
        assert_eq!((w.line, w.column), (4, 3));
        assert!(
            w.message.contains("any local user who listens there"),
            "{}",
            w.message
        );
    }

    #[test]
    fn the_metrics_file_is_a_file_of_its_own() {
        for (metrics, why) in [
            ("/root/.docker/config.json", "the auth file of target"),
            ("/tmp/s.sock", "a socket"),
            ("/var/lib/ecr-refresherd/m.prom", "inside state_dir"),
        ] {
            let d = err(&format!(
                "[daemon]\nsocket = \"/tmp/s.sock\"\nmetrics_file = \"{metrics}\"\n[[registry]]\nhost = \"{H}\"\n"
            ));
            assert_eq!(d[0].line, 3, "{metrics}");
            assert!(d[0].message.contains(why), "{metrics}: {}", d[0].message);
        }
        let s = ok(&format!(
            "[daemon]\nmetrics_file = \"/var/lib/prometheus/node-exporter/ecr-refresherd.prom\"\n[[registry]]\nhost = \"{H}\"\n"
        ));
        assert!(s.warnings.is_empty());
        let s = ok(&format!(
            "[daemon]\nmetrics_file = \"/var/lib/prometheus/node-exporter/ecr-refresherd.txt\"\n[[registry]]\nhost = \"{H}\"\n"
        ));
        assert!(s.warnings[0].message.contains(".prom"), "{:?}", s.warnings);
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
            "[[registry]]\nhost = \"public.ecr.aws\"\naliases = [\"m.internal\", \"https://m2.internal\"]\n",
            3,
            "invalid alias \"https://m2.internal\": write the host alone",
        ),
        (
            "[[registry]]\nhost = \"public.ecr.aws\"\naliases = [\"m.internal\", \"m.internal\"]\n",
            3,
            "\"m.internal\" is already a registry host or alias",
        ),
        (
            "[[registry]]\nhost = \"public.ecr.aws\"\naliases = [\"m.internal\"]\n[[registry]]\nhost = \"123456789012.dkr.ecr.us-east-1.amazonaws.com\"\naliases = [\"m.internal\"]\n",
            6,
            "already a registry host or alias",
        ),
        (
            "[[registry]]\nhost = \"public.ecr.aws\"\naliases = [\"123456789012.dkr.ecr.us-east-1.amazonaws.com\"]\n",
            3,
            "list it as a [[registry]] of its own",
        ),
        (
            "[[registry]]\nhost = \"public.ecr.aws\"\naliases = [\"docker.io\"]\n",
            3,
            "Docker Hub",
        ),
        (
            "[[registry]]\nhost = \"public.ecr.aws\"\naliases = \"m.internal\"\n",
            3,
            "invalid type",
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

    /// A table header names a key of the top level, whatever table came before it: an unknown
    /// one is reported there, with the top-level tables and the nearest one.
    #[test]
    fn unknown_top_level_table_after_an_array_of_tables() {
        let before =
            format!("[[registry]]\nhost = \"{H}\"\n[[target]]\npath = \"/a/config.json\"\n");
        let mut wrong = Vec::new();
        for (header, column, want) in [
            (
                "[[webhook]]",
                3,
                "unknown key \"webhook\" at the top level; expected one of: daemon, registry, target, portainer, swarm",
            ),
            (
                "[[registries]]",
                3,
                "unknown key \"registries\" at the top level; did you mean \"registry\"? The top-level tables are: daemon, registry, target, portainer, swarm",
            ),
            (
                "[daemonn]",
                2,
                "unknown key \"daemonn\" at the top level; did you mean \"daemon\"? The top-level tables are: daemon, registry, target, portainer, swarm",
            ),
        ] {
            for text in [
                format!("{before}{header}\n"),
                format!("{before}{header}\nkey = 1\n"),
                format!("[daemon]\n{before}{header}\n"),
            ] {
                let d = err(&text);
                let got = (d[0].line, d[0].column, d[0].message.as_str());
                let line = 5 + usize::from(text.starts_with("[daemon]"));
                if got != (line, column, want) {
                    wrong.push(format!(
                        "{text:?}\n  got  {got:?}\n  want {:?}",
                        (line, column, want)
                    ));
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    /// TOML's rule: a key below a header belongs to that table, however it is written (a plain,
    /// dotted or inline-table key, a sub-table header); the message names the table it is in.
    #[test]
    fn unknown_key_names_the_table_it_belongs_to() {
        let reg = format!("[[registry]]\nhost = \"{H}\"\n");
        let mut wrong = Vec::new();
        for (text, line, column, want) in [
            // An inline table after a header belongs to that header's table.
            (
                format!("{reg}target = [{{ path = \"/a/config.json\" }}]\n"),
                3,
                1,
                "unknown key \"target\" in [[registry]]; did you mean \"targets\"? (a key below a table header belongs to that table; the top-level table is written [[target]])",
            ),
            (
                format!(
                    "{reg}[[target]]\npath = \"/a/config.json\"\ndaemon.log_level = \"debug\"\n"
                ),
                5,
                1,
                "unknown key \"daemon\" in [[target]]; expected one of: name, path, user, mode (a key below a table header belongs to that table; the top-level table is written [daemon])",
            ),
            (
                format!("{reg}[[target]]\npath = \"/a/config.json\"\nlog_level = \"debug\"\n"),
                5,
                1,
                "unknown key \"log_level\" in [[target]]; expected one of: name, path, user, mode",
            ),
            (
                format!("{reg}[[target]]\npath = \"/a/config.json\"\n[target.extra]\n"),
                5,
                9,
                "unknown key \"extra\" in [[target]]; expected one of: name, path, user, mode",
            ),
            (
                format!("target = [{{ path = \"/a/config.json\", nme = \"a\" }}]\n{reg}"),
                1,
                38,
                "unknown key \"nme\" in [[target]]; did you mean \"name\"?",
            ),
            (
                format!("daemon.jiter = 0.1\n{reg}"),
                1,
                8,
                "unknown key \"jiter\" in [daemon]; did you mean \"jitter\"?",
            ),
            (
                format!("[ daemon ]\nsockett = \"/s\"\n{reg}"),
                2,
                1,
                "unknown key \"sockett\" in [daemon]; did you mean \"socket\"?",
            ),
            (
                format!("registry = [{{ host = \"{H}\", rolearn = \"x\" }}]\n"),
                1,
                70,
                "unknown key \"rolearn\" in [[registry]]; did you mean \"role_arn\"?",
            ),
        ] {
            let d = err(&text);
            let got = (d[0].line, d[0].column, d[0].message.as_str());
            if got != (line, column, want) {
                wrong.push(format!(
                    "{text:?}\n  got  {got:?}\n  want {:?}",
                    (line, column, want)
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

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
