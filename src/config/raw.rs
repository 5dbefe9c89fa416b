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
    #[serde(default)]
    pub(super) portainer: Vec<Spanned<RawPortainer>>,
    pub(super) swarm: Option<RawSwarm>,
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
    pub(super) helper_socket: Option<Spanned<String>>,
    pub(super) state_dir: Option<Spanned<String>>,
    pub(super) log_level: Option<Spanned<String>>,
    pub(super) metrics_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegistry {
    pub(super) host: Spanned<String>,
    pub(super) aliases: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) role_arn: Option<Spanned<String>>,
    pub(super) external_id: Option<Spanned<String>>,
    pub(super) session_name: Option<Spanned<String>>,
    pub(super) profile: Option<Spanned<String>>,
    pub(super) endpoint_url: Option<Spanned<String>>,
    pub(super) targets: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) users: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) groups: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub(super) name: Option<Spanned<String>>,
    pub(super) path: Spanned<String>,
    pub(super) user: Option<Spanned<String>>,
    pub(super) mode: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPortainer {
    pub(super) url: Spanned<String>,
    pub(super) api_key_file: Spanned<String>,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) pin_sha256: Option<Spanned<String>>,
    pub(super) registries: Option<Spanned<Vec<Spanned<i64>>>>,
    pub(super) check_every: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSwarm {
    pub(super) enabled: Option<bool>,
    pub(super) socket: Option<Spanned<String>>,
    pub(super) check_every: Option<Spanned<String>>,
}

/// A table of the file, named by the struct that reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Section {
    Top,
    Daemon,
    Registry,
    Target,
    Portainer,
    Swarm,
}

impl Section {
    pub(super) const ALL: [Section; 6] = [
        Section::Top,
        Section::Daemon,
        Section::Registry,
        Section::Target,
        Section::Portainer,
        Section::Swarm,
    ];

    /// How the file opens the table; `None` for the top level.
    pub(super) fn header(self) -> Option<&'static str> {
        match self {
            Section::Top => None,
            Section::Daemon => Some("[daemon]"),
            Section::Registry => Some("[[registry]]"),
            Section::Target => Some("[[target]]"),
            Section::Portainer => Some("[[portainer]]"),
            Section::Swarm => Some("[swarm]"),
        }
    }

    /// Where a key of this section is, for a message.
    pub(super) fn place(self) -> String {
        self.header()
            .map_or_else(|| "at the top level".to_string(), |h| format!("in {h}"))
    }

    /// The keys the section accepts: its struct's fields, as serde's derive lists them.
    pub(super) fn keys(self) -> &'static [&'static str] {
        match self {
            Section::Top => fields::<RawConfig>(),
            Section::Daemon => fields::<RawDaemon>(),
            Section::Registry => fields::<RawRegistry>(),
            Section::Target => fields::<RawTarget>(),
            Section::Portainer => fields::<RawPortainer>(),
            Section::Swarm => fields::<RawSwarm>(),
        }
    }
}

/// The field names serde's derive hands to `deserialize_struct` for `T`: the very list that
/// `deny_unknown_fields` accepts, so no copy of it can drift from the struct.
fn fields<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    let mut names = FieldNames(&[]);
    // Always an error: FieldNames stops at the struct, having noted its fields.
    let _ = T::deserialize(&mut names);
    names.0
}

struct FieldNames(&'static [&'static str]);

impl<'de> serde::Deserializer<'de> for &mut FieldNames {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0 = fields;
        Err(serde::de::Error::custom("fields noted"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}
