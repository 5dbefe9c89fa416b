//! Which credential docker and podman would use for a host, file by file: ours, a stale one, or a helper that hides it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserializer;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::json::{KeyOf, Str, drain_map, drain_seq, otherwise_none};

use crate::config::Settings;
use crate::safe_fs::{self, OwnerPolicy};
use crate::targets::authfile::{Format, FormatError, OUR_HELPER};
use crate::targets::diagnose::managed_hosts;
use crate::targets::files::owner_policy;

/// What a file gives its reader for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Use {
    /// A credential helper answers instead of `auths` (`credHelpers` for the host, or
    /// `credsStore`); `ours` when it is this daemon's.
    Helper {
        helper: String,
        via: &'static str,
        ours: bool,
    },
    /// An `auths` entry: its `auth` value (base64 `user:password`) and the key it is under.
    Entry { key: String, auth: String },
    /// Nothing for this host: the pull goes anonymous.
    Nothing,
}

/// What docker (`Format::Docker`) or podman reads for `host` in a parsed file: a helper for
/// the host, then (docker only) `credsStore`, then `auths`.
pub fn what_is_used(map: &Map<String, Value>, host: &str, format: Format) -> Use {
    if let Some(Value::Object(helpers)) = map.get("credHelpers")
        && let Some(h) = helpers
            .iter()
            .find(|(k, _)| format.names_host(k, host))
            .map(|(_, v)| v)
    {
        let helper = h.as_str().unwrap_or_default().to_string();
        return Use::Helper {
            ours: helper == OUR_HELPER,
            helper: authfile_short(&helper),
            via: "credHelpers",
        };
    }
    // containers/image does not use credsStore; docker asks it for every host.
    if format == Format::Docker
        && let Some(Value::String(store)) = map.get("credsStore")
        && !store.is_empty()
    {
        return Use::Helper {
            ours: store == OUR_HELPER,
            helper: authfile_short(store),
            via: "credsStore",
        };
    }
    if let Some(Value::Object(auths)) = map.get("auths") {
        // The exact key first, then any key naming the host (`https://host/v1/`).
        let found = auths
            .get_key_value(host)
            .or_else(|| auths.iter().find(|(k, _)| format.names_host(k, host)));
        if let Some((key, v)) = found {
            let auth = match v.get("auth").and_then(Value::as_str) {
                Some(a) if !a.is_empty() => a.to_string(),
                _ => match (
                    v.get("username").and_then(Value::as_str),
                    v.get("password").and_then(Value::as_str),
                ) {
                    (Some(u), Some(p)) => {
                        use base64::Engine;
                        base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
                    }
                    _ => String::new(),
                },
            };
            return Use::Entry {
                key: authfile_short(key),
                auth,
            };
        }
    }
    Use::Nothing
}

fn authfile_short(s: &str) -> String {
    crate::doctor::explain::quote(&s.chars().take(80).collect::<String>())
}

/// One file a consumer reads, in the order that consumer reads them.
#[derive(Debug, Clone)]
pub struct File {
    /// Who reads it: "docker", "podman", "docker and podman".
    pub reader: &'static str,
    pub path: PathBuf,
    pub policy: OwnerPolicy,
    /// The user it belongs to, for the line ("root", "portainer").
    pub user: String,
}

/// The files to look at: each target that covers `host`.
pub fn target_files(settings: &Settings, host: &str) -> Vec<File> {
    settings
        .targets
        .iter()
        .filter(|t| managed_hosts(settings, t).contains(host))
        .map(|t| File {
            reader: match Format::of_path(&t.path) {
                Format::Docker => "docker and podman",
                Format::Podman => "podman",
            },
            path: t.path.clone(),
            policy: owner_policy(t),
            user: t
                .user
                .as_ref()
                .map(|u| u.name.clone())
                .unwrap_or_else(|| "the file's owner".into()),
        })
        .collect()
}

/// The files one user's docker and podman read, in podman's order (containers/image
/// `getPathToAuthWithOS`: `/run/containers/UID`, `$XDG_RUNTIME_DIR/containers`,
/// `~/.config/containers`, then docker's `~/.docker/config.json`).
pub fn user_files(name: &str, uid: u32, home: &Path, run_dir: &Path) -> Vec<File> {
    let policy = OwnerPolicy::Inherit;
    let mut v: Vec<(PathBuf, &'static str)> = vec![
        (
            run_dir.join(format!("containers/{uid}/auth.json")),
            "podman",
        ),
        (
            run_dir.join(format!("user/{uid}/containers/auth.json")),
            "podman",
        ),
        (home.join(".config/containers/auth.json"), "podman"),
        (home.join(".docker/config.json"), "docker and podman"),
    ];
    if uid != 0 {
        // podman as root reads /run/containers/0; a user's podman reads $XDG_RUNTIME_DIR's.
        v.swap(0, 1);
    }
    v.into_iter()
        .map(|(path, reader)| File {
            reader,
            path,
            policy: policy.clone(),
            user: name.to_string(),
        })
        .collect()
}

/// Reads one file through `safe_fs` (no link followed into another user's file) and keeps
/// what it says for `host` (see [`parse_for`]); `None` when it does not exist.
pub fn read(file: &File, host: &str) -> Result<Option<Map<String, Value>>, String> {
    match safe_fs::read(&file.path, file.policy.clone()) {
        Ok(None) => Ok(None),
        Ok(Some(bytes)) => parse_for(&bytes, host, Format::of_path(&file.path))
            .map(Some)
            .map_err(|e| format!("docker and podman cannot read it: {e}")),
        Err(e) => Err(e.to_string()),
    }
}

/// The parts of an auth file [`what_is_used`] looks at for `host`, read while parsing: a file
/// is up to 4 MiB of the user's, and a `serde_json::Value` of it could take 240 MiB of root's.
/// Kept: `credsStore`; of `credHelpers` the first key naming `host`; of `auths` the entry keyed
/// `host` and the first other key naming it (its `auth`, `username` and `password`). A key
/// given twice counts with its last value; two `auths` (or `credHelpers`) objects are merged,
/// as docker does.
pub fn parse_for(
    bytes: &[u8],
    host: &str,
    format: Format,
) -> Result<Map<String, Value>, FormatError> {
    let text = std::str::from_utf8(bytes).map_err(|e| FormatError::NotUtf8(e.valid_up_to()))?;
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    let syntax = |e: serde_json::Error| {
        let full = e.to_string();
        FormatError::Syntax {
            line: e.line(),
            column: e.column(),
            message: full
                .rfind(" at line ")
                .map_or(full.clone(), |i| full[..i].to_string()),
        }
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let found = de
        .deserialize_any(AuthFile { host, format })
        .map_err(syntax)?;
    de.end().map_err(syntax)?;
    let found = found.ok_or(FormatError::NotObject)?;
    if found.auths_not_object {
        return Err(FormatError::AuthsNotObject);
    }
    let mut map = Map::new();
    if let Some((key, helper)) = found.helper {
        let mut helpers = Map::new();
        helpers.insert(key, helper);
        map.insert("credHelpers".into(), Value::Object(helpers));
    }
    if let Some(store) = found.store {
        map.insert("credsStore".into(), Value::String(store));
    }
    let mut auths = Map::new();
    if let Some((key, entry)) = found.other {
        auths.insert(key, entry);
    }
    if let Some(entry) = found.exact {
        auths.insert(host.to_string(), entry);
    }
    if !auths.is_empty() {
        map.insert("auths".into(), Value::Object(auths));
    }
    Ok(map)
}

/// The one key of the map serde_json (`arbitrary_precision`) hands a number over as
/// (`serde_json::number::TOKEN`, private): such a "map" is a number, not an object.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// What [`AuthFile`] kept.
#[derive(Default)]
struct Found {
    helper: Option<(String, Value)>,
    store: Option<String>,
    exact: Option<Value>,
    other: Option<(String, Value)>,
    auths_not_object: bool,
}

impl Found {
    /// `key` names the host: the exact key's entry, or the first other key's (its last value).
    fn entry(&mut self, host: &str, key: String, value: Value) {
        if key == host {
            self.exact = Some(value);
        } else {
            match &mut self.other {
                None => self.other = Some((key, value)),
                Some((k, v)) if *k == key => *v = value,
                Some(_) => {}
            }
        }
    }

    fn helper(&mut self, key: String, value: Value) {
        match &mut self.helper {
            None => self.helper = Some((key, value)),
            Some((k, v)) if *k == key => *v = value,
            Some(_) => {}
        }
    }
}

/// The top-level object (`None` for any other value).
struct AuthFile<'a> {
    host: &'a str,
    format: Format,
}

impl<'de> Visitor<'de> for AuthFile<'_> {
    type Value = Option<Found>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an auth file")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Found>, A::Error> {
        let mut found = Found::default();
        let keys = &["auths", "credHelpers", "credsStore", NUMBER_TOKEN];
        while let Some(key) = map.next_key_seed(KeyOf(keys))? {
            match key {
                Some(0) => {
                    let ok = map.next_value_seed(Keyed {
                        what: What::Auths,
                        host: self.host,
                        format: self.format,
                        found: &mut found,
                    })?;
                    found.auths_not_object |= !ok;
                }
                Some(1) => {
                    map.next_value_seed(Keyed {
                        what: What::Helpers,
                        host: self.host,
                        format: self.format,
                        found: &mut found,
                    })?;
                }
                Some(2) => found.store = map.next_value_seed(Str)?,
                Some(_) => {
                    map.next_value::<IgnoredAny>()?;
                    return drain_map(map).map(|()| None);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(found))
    }
    fn visit_str<E>(self, _: &str) -> Result<Option<Found>, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<Found>, A::Error> {
        drain_seq(seq).map(|()| None)
    }
    otherwise_none!();
}

#[derive(Clone, Copy)]
enum What {
    Auths,
    Helpers,
}

/// `auths` or `credHelpers`: keeps the keys naming the host into `found`; `true` when the
/// value is an object or `null` (anything else makes docker refuse an `auths`).
struct Keyed<'a, 'f> {
    what: What,
    host: &'a str,
    format: Format,
    found: &'f mut Found,
}

impl<'de> DeserializeSeed<'de> for Keyed<'_, '_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Keyed<'_, '_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == NUMBER_TOKEN {
                map.next_value::<IgnoredAny>()?;
                return drain_map(map).map(|()| false);
            }
            if !self.format.names_host(&key, self.host) {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            match self.what {
                What::Auths => {
                    let value = map.next_value_seed(EntryOf)?;
                    self.found.entry(self.host, key, value);
                }
                What::Helpers => {
                    let helper = map.next_value_seed(Str)?;
                    self.found
                        .helper(key, helper.map_or(Value::Null, Value::String));
                }
            }
        }
        Ok(true)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_none<E>(self) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
        drain_seq(seq).map(|()| false)
    }
}

/// An `auths` entry: an object of its string `auth`, `username` and `password`, or `null`
/// for anything else (it then gives no credential).
struct EntryOf;

impl<'de> DeserializeSeed<'de> for EntryOf {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EntryOf {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an auths entry")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        const FIELDS: &[&str] = &["auth", "username", "password"];
        let mut entry = Map::new();
        while let Some(key) = map.next_key_seed(KeyOf(FIELDS))? {
            match key {
                Some(i) => match map.next_value_seed(Str)? {
                    Some(v) => {
                        entry.insert(FIELDS[i].to_string(), Value::String(v));
                    }
                    None => {
                        entry.remove(FIELDS[i]);
                    }
                },
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(entry))
    }
    fn visit_str<E>(self, _: &str) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        drain_seq(seq).map(|()| Value::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::targets::authfile;

    const H: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

    fn map(json: &str) -> Map<String, Value> {
        authfile::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn what_is_kept_for_the_host_is_what_the_whole_file_says() {
        let docs = [
            format!(
                r#"{{"auths":{{"{H}":{{"auth":"QVdTOnA="}}}},"credsStore":"desktop","credHelpers":{{"{H}":"ecr-login"}}}}"#
            ),
            format!(r#"{{"auths":{{"{H}":{{"auth":"QVdTOnA="}}}},"credsStore":"desktop"}}"#),
            format!(
                r#"{{"auths":{{"https://{H}/v1/":{{"auth":"QVdTOnE="}},"{H}":{{"auth":"QVdTOnI="}}}}}}"#
            ),
            format!(
                r#"{{"auths":{{"{H}/v1/":{{"auth":"QVdTOnE="}},"https://{H}":{{"auth":"QVdTOnM="}},"http://{H}":{{"auth":"QVdTOnQ="}}}}}}"#
            ),
            format!(r#"{{"auths":{{"{H}":{{"username":"AWS","password":"p","auth":""}}}}}}"#),
            format!(r#"{{"auths":{{"{H}":{{"auth":5,"username":"u","password":"p"}}}}}}"#),
            format!(r#"{{"auths":{{"{H}":"not an object"}},"credHelpers":{{"https://{H}":7}}}}"#),
            r#"{"credHelpers":[],"credsStore":{"a":1},"auths":null}"#.to_string(),
            format!(
                r#"{{"auths":{{"ghcr.io":{{"auth":"eDp5"}}}},"x":[1,{{"{H}":2}}],"credsStore":""}}"#
            ),
            "{}".to_string(),
            " \n".to_string(),
        ];
        for doc in &docs {
            for f in [Format::Docker, Format::Podman] {
                let whole = if doc.trim().is_empty() {
                    Map::new()
                } else {
                    map(doc)
                };
                let kept = parse_for(doc.as_bytes(), H, f).unwrap();
                assert_eq!(
                    what_is_used(&kept, H, f),
                    what_is_used(&whole, H, f),
                    "{doc} ({f:?}): kept {kept:?}"
                );
            }
        }
    }

    #[test]
    fn a_key_twice_counts_with_its_last_value_and_two_auths_merge() {
        let doc = format!(
            r#"{{"auths":{{"https://{H}":{{"auth":"QVdTOmE="}},"https://{H}":{{"auth":"QVdTOmI="}}}},"auths":{{"{H}":{{"auth":"QVdTOmM="}}}},"credsStore":"x","credsStore":"y"}}"#
        );
        let kept = parse_for(doc.as_bytes(), H, Format::Docker).unwrap();
        assert_eq!(kept["credsStore"], "y");
        assert_eq!(kept["auths"][H]["auth"], "QVdTOmM=");
        assert_eq!(kept["auths"][format!("https://{H}")]["auth"], "QVdTOmI=");
    }

    #[test]
    fn files_docker_refuses_are_refused_with_why() {
        let err = |doc: &[u8]| parse_for(doc, H, Format::Docker).unwrap_err().to_string();
        assert_eq!(err(b"{\"a\":\xff}"), "not UTF-8 (invalid byte at offset 5)");
        assert_eq!(
            err(b"{\n  \"auths\": {,}}"),
            "not valid JSON at line 2 column 13: key must be a string"
        );
        assert!(err(b"{} x").starts_with("not valid JSON at line 1 column 4"));
        for top in [&b"5"[..], b"[]", b"\"s\"", b"null", b"true", b"-1.5e3"] {
            assert_eq!(err(top), "the top level is not a JSON object", "{top:?}");
        }
        for auths in ["5", "\"x\"", "[]", "true", "1e999"] {
            let doc = format!(r#"{{"auths":{auths}}}"#);
            assert_eq!(
                err(doc.as_bytes()),
                "\"auths\" is not a JSON object",
                "{doc}"
            );
        }
        assert!(parse_for(br#"{"auths":null}"#, H, Format::Docker).is_ok());
    }

    #[test]
    fn deep_nesting_where_nothing_is_kept_is_skipped_without_recursion() {
        // A million levels (2 MB): skipped values are not recursed into (serde_json's
        // IgnoredAny walks them in a loop), so no stack is at risk.
        let n = 1_000_000;
        let deep = format!(
            "{{\"x\":{}{},\"credsStore\":\"d\"}}",
            "[".repeat(n),
            "]".repeat(n)
        );
        let kept = parse_for(deep.as_bytes(), H, Format::Docker).unwrap();
        assert_eq!(kept["credsStore"], "d");
        // An entry that is a deep list is no entry (no credential), skipped the same way.
        let deep = format!(
            "{{\"auths\":{{\"{H}\":{}{}}}}}",
            "[".repeat(n),
            "]".repeat(n)
        );
        let kept = parse_for(deep.as_bytes(), H, Format::Docker).unwrap();
        assert_eq!(kept["auths"][H], Value::Null);
        assert_eq!(
            what_is_used(&kept, H, Format::Docker),
            Use::Entry {
                key: H.into(),
                auth: String::new()
            }
        );
    }

    #[test]
    fn a_helper_for_the_host_wins_then_the_store_then_auths() {
        let m = map(&format!(
            r#"{{"auths":{{"{H}":{{"auth":"QVdTOnA="}}}},"credsStore":"desktop","credHelpers":{{"{H}":"ecr-login"}}}}"#
        ));
        assert_eq!(
            what_is_used(&m, H, Format::Docker),
            Use::Helper {
                helper: "ecr-login".into(),
                via: "credHelpers",
                ours: false
            }
        );
        let m = map(&format!(
            r#"{{"auths":{{"{H}":{{"auth":"QVdTOnA="}}}},"credsStore":"desktop"}}"#
        ));
        assert_eq!(
            what_is_used(&m, H, Format::Docker),
            Use::Helper {
                helper: "desktop".into(),
                via: "credsStore",
                ours: false
            }
        );
        assert_eq!(
            what_is_used(&m, H, Format::Podman),
            Use::Entry {
                key: H.into(),
                auth: "QVdTOnA=".into()
            },
            "containers/image does not use credsStore"
        );
        let m = map(r#"{"credsStore":"ecr-refresherd"}"#);
        assert!(matches!(
            what_is_used(&m, H, Format::Docker),
            Use::Helper { ours: true, .. }
        ));
    }

    #[test]
    fn entries_under_other_keys_and_username_password() {
        let m = map(&format!(
            r#"{{"auths":{{"https://{H}/v1/":{{"auth":"QVdTOnE="}}}}}}"#
        ));
        assert_eq!(
            what_is_used(&m, H, Format::Docker),
            Use::Entry {
                key: format!("https://{H}/v1/"),
                auth: "QVdTOnE=".into()
            }
        );
        let m = map(&format!(
            r#"{{"auths":{{"{H}":{{"username":"AWS","password":"p"}}}}}}"#
        ));
        assert_eq!(
            what_is_used(&m, H, Format::Podman),
            Use::Entry {
                key: H.into(),
                auth: "QVdTOnA=".into()
            }
        );
        assert_eq!(what_is_used(&map("{}"), H, Format::Docker), Use::Nothing);
        let other = map(r#"{"auths":{"ghcr.io":{"auth":"eDp5"}}}"#);
        assert_eq!(what_is_used(&other, H, Format::Docker), Use::Nothing);
    }

    #[test]
    fn a_users_files_in_podmans_order() {
        let f = user_files("ci", 1000, Path::new("/home/ci"), Path::new("/run"));
        let paths: Vec<_> = f.iter().map(|f| f.path.display().to_string()).collect();
        assert_eq!(
            paths,
            [
                "/run/user/1000/containers/auth.json",
                "/run/containers/1000/auth.json",
                "/home/ci/.config/containers/auth.json",
                "/home/ci/.docker/config.json"
            ]
        );
        let r = user_files("root", 0, Path::new("/root"), Path::new("/run"));
        assert_eq!(r[0].path, Path::new("/run/containers/0/auth.json"));
    }
}
