//! What the file may say: the serde structs, each section with its accepted keys.

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) daemon: Option<RawDaemon>,
    #[serde(default)]
    pub(super) registry: Vec<Spanned<RawRegistry>>,
    #[serde(default)]
    pub(super) target: Vec<Spanned<RawTarget>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub(super) refresh_at: Option<Spanned<f64>>,
    pub(super) jitter: Option<Spanned<f64>>,
    pub(super) retry_min: Option<Spanned<String>>,
    pub(super) retry_max: Option<Spanned<String>>,
    pub(super) min_interval: Option<Spanned<String>>,
    pub(super) remove_expired: Option<bool>,
    pub(super) socket: Option<Spanned<String>>,
    pub(super) socket_group: Option<Spanned<String>>,
    pub(super) state_dir: Option<Spanned<String>>,
    pub(super) log_level: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegistry {
    pub(super) host: Spanned<String>,
    pub(super) role_arn: Option<Spanned<String>>,
    pub(super) external_id: Option<Spanned<String>>,
    pub(super) session_name: Option<Spanned<String>>,
    pub(super) profile: Option<Spanned<String>>,
    pub(super) endpoint_url: Option<Spanned<String>>,
    pub(super) targets: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub(super) name: Option<Spanned<String>>,
    pub(super) path: Spanned<String>,
    pub(super) user: Option<Spanned<String>>,
    pub(super) mode: Option<Spanned<String>>,
}
