//! The docker/podman auth-file format: a pure merge of managed `auths` entries, and its diagnosis.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::Path;

use serde::Serialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::ecr::registry::{Registry, key_host};

/// Files larger than this are not ours to parse (the limit of every file we read or write).
pub use crate::safe_fs::MAX_FILE_SIZE;

/// Why a file's content cannot be merged; the file is then left untouched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The file is larger than we read.
    #[error("larger than 4 MiB ({0} bytes)")]
    TooLarge(usize),
    /// The file is not UTF-8 (offset of the first bad byte).
    #[error("not UTF-8 (invalid byte at offset {0})")]
    NotUtf8(usize),
    /// The file is not valid JSON.
    #[error("not valid JSON at line {line} column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// The top level is not an object.
    #[error("the top level is not a JSON object")]
    NotObject,
    /// `auths` is not an object.
    #[error("\"auths\" is not a JSON object")]
    AuthsNotObject,
    /// Readers disagree on such a file (docker merges two `"auths"` objects, we would keep one).
    #[error(
        "duplicate key {key:?} at line {line} column {column}: readers disagree on which value counts; remove one of them"
    )]
    DuplicateKey {
        /// The repeated key.
        key: String,
        /// 1-based line of its second occurrence.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// serde_json (arbitrary_precision) would read this object back as a number.
    #[error("reserved key {key:?} at line {line} column {column}: it cannot be kept as written")]
    ReservedKey {
        /// The key.
        key: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
}

/// Which program's lookup rules an auth file follows; it decides which keys name "the same host".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// docker's `config.json` (docker/cli `credentials.fileStore.Get`): the exact key first, then any
    /// key whose host part is H (`https://H`, `H/v2/`, `H/team-a`) as a fallback for H.
    Docker,
    /// containers/image's `auth.json` (`findCredentialsInFile`): `H/ns` keys are per-namespace
    /// credentials, more specific than `H` (containers-auth.json(5)); only URL keys with a scheme
    /// (`https://H/v1/`) are normalised to H.
    Podman,
}

impl Format {
    /// docker only ever reads a file named `config.json` (in `$DOCKER_CONFIG` or `~/.docker`); any
    /// other name (`auth.json`, a `REGISTRY_AUTH_FILE`) is read by containers/image alone.
    pub fn of_path(path: &Path) -> Format {
        if path.file_name().is_some_and(|n| n == "config.json") {
            Format::Docker
        } else {
            Format::Podman
        }
    }

    /// Whether this format's readers take `key` as a credential for exactly `host`.
    pub fn names_host(self, key: &str, host: &str) -> bool {
        if key == host {
            return true;
        }
        match self {
            Format::Docker => key_host(key) == host,
            Format::Podman => {
                (key.starts_with("http://") || key.starts_with("https://")) && key_host(key) == host
            }
        }
    }
}

/// Only ECR registry hosts are ever written or removed, whatever a caller (or a state file) asks.
fn is_ecr_host(host: &str) -> bool {
    Registry::parse(host).is_ok()
}

/// What we want a file to say for the hosts we manage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// host -> the `auth` value (base64 of `AWS:<password>`), written as `{"auth": ...}`.
    pub set: BTreeMap<String, String>,
    /// Hosts whose entries are to be removed (no longer configured, or expired).
    pub remove: BTreeSet<String>,
    /// The names in `set` and `remove` that are registry aliases, not ECR hosts: configured now,
    /// or written by us before (the state says so). Only ECR hosts and these are ever touched.
    pub aliases: BTreeSet<String>,
}

impl Desired {
    /// Whether this job may set or remove `host`'s entries.
    fn owns(&self, host: &str) -> bool {
        is_ecr_host(host) || self.aliases.contains(host)
    }
}

/// Whether an entry holds an ECR credential (an `auth` of user `AWS`), as every one we write does.
/// An alias that is no longer ours to set is removed only while it holds one: had its owner put a
/// login of their own there, it stays.
fn holds_ecr_credential(entry: &Value) -> bool {
    use base64::Engine as _;
    let Some(Value::String(auth)) = entry.get("auth") else {
        return false;
    };
    base64::engine::general_purpose::STANDARD
        .decode(auth)
        .is_ok_and(|plain| plain.starts_with(b"AWS:"))
}

/// Parses auth-file bytes into its top-level object. An empty file is an empty object, as docker reads it.
pub fn parse(bytes: &[u8]) -> Result<Map<String, Value>, FormatError> {
    if bytes.len() > MAX_FILE_SIZE {
        return Err(FormatError::TooLarge(bytes.len()));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| FormatError::NotUtf8(e.valid_up_to()))?;
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    let value: Value = serde_json::from_str(text).map_err(|e| FormatError::Syntax {
        line: e.line(),
        column: e.column(),
        message: syntax_reason(&e),
    })?;
    check_keys(text)?;
    let Value::Object(map) = value else {
        return Err(FormatError::NotObject);
    };
    match map.get("auths") {
        None | Some(Value::Object(_)) | Some(Value::Null) => Ok(map),
        Some(_) => Err(FormatError::AuthsNotObject),
    }
}

/// Refuses a document in which any object, at any depth, has a key twice (after unescaping), or a
/// key serde_json reserves for numbers.
///
/// serde_json keeps the last of duplicate keys, so re-serialising would change content we do not own
/// (docker merges two `"auths"` objects; a foreign entry would lose a field). `text` is valid JSON.
fn check_keys(text: &str) -> Result<(), FormatError> {
    let found = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let result = KeyCheck { found: &found }
        .deserialize(&mut de)
        .and_then(|()| de.end());
    match (result, found.into_inner()) {
        (Ok(()), _) => Ok(()),
        (Err(e), Some(Ambiguity::Duplicate(key))) => Err(FormatError::DuplicateKey {
            key: shorten(key),
            line: e.line(),
            column: e.column(),
        }),
        (Err(e), Some(Ambiguity::Reserved(key))) => Err(FormatError::ReservedKey {
            key: shorten(key),
            line: e.line(),
            column: e.column(),
        }),
        // The first parse accepted it; should this one not, refuse all the same.
        (Err(e), None) => Err(FormatError::Syntax {
            line: e.line(),
            column: e.column(),
            message: syntax_reason(&e),
        }),
    }
}

/// A key short enough for one log line.
fn shorten(mut key: String) -> String {
    if key.len() > 80 {
        let mut end = 80;
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        key.truncate(end);
        key.push('…');
    }
    key
}

/// The key serde_json's `arbitrary_precision` uses to hand a number over as a one-entry map
/// (`serde_json::number::TOKEN`, private).
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

enum Ambiguity {
    Duplicate(String),
    Reserved(String),
}

/// Walks a JSON document, checking every object's keys; records what it found before failing.
#[derive(Clone, Copy)]
struct KeyCheck<'a> {
    found: &'a RefCell<Option<Ambiguity>>,
}

impl<'de> DeserializeSeed<'de> for KeyCheck<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyCheck<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == NUMBER_TOKEN {
                // A number arrives as {TOKEN: <owned String>}; a JSON object spelling that key has a
                // JSON value (strings come borrowed or copied, never owned), and Value would turn
                // it into a number.
                let owned = map.next_value_seed(OwnedString)?;
                if owned && seen.is_empty() {
                    seen.insert(key);
                    continue;
                }
                *self.found.borrow_mut() = Some(Ambiguity::Reserved(key));
                return Err(de::Error::custom("reserved key"));
            }
            if seen.contains(&key) {
                *self.found.borrow_mut() = Some(Ambiguity::Duplicate(key));
                return Err(de::Error::custom("duplicate key"));
            }
            map.next_value_seed(self)?;
            seen.insert(key);
        }
        Ok(())
    }
}

/// Whether a value arrives as an owned `String` (serde_json's number handover), skipping it.
struct OwnedString;

impl<'de> DeserializeSeed<'de> for OwnedString {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for OwnedString {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_string<E>(self, _: String) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
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
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map
            .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
            .is_some()
        {}
        Ok(false)
    }
}

/// serde_json's message without its " at line X column Y" tail (we print those ourselves).
fn syntax_reason(e: &serde_json::Error) -> String {
    let full = e.to_string();
    match full.rfind(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    }
}

/// Merges `desired` into an auth file's content, by the lookup rules of `format`.
///
/// Returns `Ok(None)` when the file already says what we want (nothing to write). Every key we do not
/// manage is kept, in order; for each managed host the bare-host key is set (in place if present) and any
/// other key `format`'s readers take for the same host is removed (docker picks among such keys at
/// random; containers/image falls back to them when the bare key is gone). Only ECR registry hosts and
/// the aliases `desired` names are ever set or removed: any other host in `desired` is ignored. A
/// removed alias's key goes only while it holds an ECR credential.
pub fn merge(
    existing: Option<&[u8]>,
    desired: &Desired,
    format: Format,
) -> Result<Option<Vec<u8>>, FormatError> {
    let set: BTreeMap<&str, &str> = desired
        .set
        .iter()
        .filter(|(h, _)| desired.owns(h))
        .map(|(h, a)| (h.as_str(), a.as_str()))
        .collect();
    let original = match existing {
        Some(bytes) => Some(parse(bytes)?),
        // Nothing to write into a file that does not exist: do not create an empty one.
        None if set.is_empty() => return Ok(None),
        None => None,
    };
    let mut root = original.clone().unwrap_or_default();
    let mut auths = match root.get_mut("auths") {
        Some(Value::Object(a)) => std::mem::take(a),
        _ => Map::new(),
    };
    let touched: BTreeSet<&str> = set
        .keys()
        .copied()
        .chain(
            desired
                .remove
                .iter()
                .map(String::as_str)
                .filter(|h| desired.owns(h)),
        )
        .collect();
    auths.retain(|key, value| {
        // A key names at most one host (its host part), so a lookup by that host suffices.
        let host = key_host(key);
        if !touched.contains(host) || !format.names_host(key, host) {
            return true;
        }
        if set.contains_key(host) {
            // Keep only the bare key of a host we set; drop its variants.
            return key == host;
        }
        // A removed host: an ECR host's keys go; an alias's only while they hold an ECR credential.
        !is_ecr_host(host) && !holds_ecr_credential(value)
    });
    for (host, auth) in &set {
        let mut entry = Map::new();
        entry.insert("auth".to_string(), Value::String(auth.to_string()));
        auths.insert(host.to_string(), Value::Object(entry));
    }
    match root.get_mut("auths") {
        Some(slot) => *slot = Value::Object(auths),
        // No `auths` and nothing of ours to put there: the file stays as it is.
        None if auths.is_empty() => return Ok(None),
        None => {
            root.insert("auths".to_string(), Value::Object(auths));
        }
    }
    if original.as_ref() == Some(&root) {
        return Ok(None);
    }
    Ok(Some(to_docker_json(&root)))
}

/// Serializes as docker does: tab indentation, no trailing newline.
pub fn to_docker_json(value: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    // A map of JSON values always serializes.
    if value.serialize(&mut ser).is_err() {
        out.clear();
    }
    out
}

/// The `auth` values a file holds for the given hosts (bare keys only), for checking what was written.
pub fn entries_for(
    bytes: &[u8],
    hosts: &BTreeSet<String>,
) -> Result<BTreeMap<String, String>, FormatError> {
    let map = parse(bytes)?;
    let mut out = BTreeMap::new();
    if let Some(Value::Object(auths)) = map.get("auths") {
        for (k, v) in auths {
            if hosts.contains(k)
                && let Some(Value::String(a)) = v.get("auth")
            {
                out.insert(k.clone(), a.clone());
            }
        }
    }
    Ok(out)
}

/// The name docker knows this daemon's credential helper by (`docker-credential-ecr-refresherd`).
pub const OUR_HELPER: &str = "ecr-refresherd";

/// The `credHelpers` lines that send `hosts` to this daemon's helper (at most five hosts shown).
fn helper_snippet(hosts: &BTreeSet<String>) -> String {
    let mut parts: Vec<String> = hosts
        .iter()
        .take(5)
        .map(|h| format!("{h:?}: {OUR_HELPER:?}"))
        .collect();
    if hosts.len() > 5 {
        parts.push(format!("... ({} more hosts)", hosts.len() - 5));
    }
    format!("\"credHelpers\": {{{}}}", parts.join(", "))
}

/// Reasons docker or podman would not use an entry we write into this file, and what to do.
pub fn diagnose(map: &Map<String, Value>, managed: &BTreeSet<String>) -> Vec<String> {
    let mut warnings = Vec::new();
    let helpers = match map.get("credHelpers") {
        Some(Value::Object(h)) => Some(h),
        _ => None,
    };
    let ours = |host: &str| {
        helpers.is_some_and(|h| h.get(host).and_then(Value::as_str) == Some(OUR_HELPER))
    };
    if let Some(Value::String(store)) = map.get("credsStore")
        && !store.is_empty()
    {
        let store = short(store);
        let uncovered: BTreeSet<String> = managed.iter().filter(|h| !ours(h)).cloned().collect();
        if !uncovered.is_empty() {
            warnings.push(format!(
                "\"credsStore\": {store:?} is set: docker asks docker-credential-{store} first and never reads the entries we write; keep it and send the ECR hosts to this daemon's helper, which answers from memory: {}; or remove credsStore",
                helper_snippet(&uncovered)
            ));
        }
    }
    if let Some(helpers) = helpers {
        for host in managed {
            match helpers.get(host.as_str()) {
                Some(Value::String(h)) if h == OUR_HELPER => {}
                Some(helper) => {
                    let helper = short(&helper.to_string());
                    warnings.push(format!(
                        "\"credHelpers\" has {host:?} -> {helper}: docker and podman use that helper instead of our entry; point it at this daemon's helper ({}) or remove it",
                        helper_snippet(&[host.clone()].into())
                    ));
                }
                None => {}
            }
        }
    }
    warnings
}

/// A value from a user's file, cut to [`SHORT`] characters for a message: status goes to every
/// reader, and one user's file must not make it megabytes.
fn short(s: &str) -> String {
    match s.char_indices().nth(SHORT) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Characters of a foreign value shown in a diagnosis.
const SHORT: usize = 80;

/// Whether this file holds an `auths` entry for `host` under any key naming it.
pub fn has_entry_for(map: &Map<String, Value>, host: &str) -> bool {
    matches!(map.get("auths"), Some(Value::Object(a)) if a.keys().any(|k| key_host(k) == host))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

    fn set(host: &str, auth: &str) -> Desired {
        Desired {
            set: [(host.to_string(), auth.to_string())].into(),
            remove: BTreeSet::new(),
            ..Desired::default()
        }
    }

    fn merged(existing: &str, d: &Desired) -> String {
        merged_as(existing, d, Format::Docker)
    }

    fn merged_as(existing: &str, d: &Desired, format: Format) -> String {
        String::from_utf8(
            merge(Some(existing.as_bytes()), d, format)
                .unwrap()
                .expect("a change"),
        )
        .unwrap()
    }

    fn auth_keys(out: &str) -> Vec<String> {
        let v: Map<String, Value> = serde_json::from_str(out).unwrap();
        v["auths"].as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn new_file() {
        let out = merge(None, &set(H, "QVdTOnB3"), Format::Docker)
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "{{\n\t\"auths\": {{\n\t\t\"{H}\": {{\n\t\t\t\"auth\": \"QVdTOnB3\"\n\t\t}}\n\t}}\n}}"
            )
        );
    }

    #[test]
    fn nothing_to_set_leaves_a_file_without_auths_alone() {
        let d = Desired {
            set: BTreeMap::new(),
            remove: [H.to_string()].into(),
            ..Desired::default()
        };
        for f in [Format::Docker, Format::Podman] {
            assert_eq!(
                merge(Some(b"{\"credsStore\": \"x\"}"), &d, f).unwrap(),
                None
            );
        }
    }

    #[test]
    fn no_file_and_nothing_to_set_creates_nothing() {
        let d = Desired {
            set: BTreeMap::new(),
            remove: [H.to_string()].into(),
            ..Desired::default()
        };
        assert_eq!(merge(None, &d, Format::Docker).unwrap(), None);
    }

    #[test]
    fn empty_file_is_empty_config() {
        let out = merged("  \n", &set(H, "QVdTOnB3"));
        assert!(out.contains(H));
    }

    #[test]
    fn keeps_everything_else_in_order() {
        let existing = r#"{
  "zeta": {"nested": [1, 2.5, "x\u00e9"]},
  "auths": {
    "docker.io": {"auth": "dXNlcjpwYXNz"},
    "123456789012.dkr.ecr.us-east-1.amazonaws.com": {"auth": "b2xk", "email": "x"},
    "ghcr.io": {"auth": "Z2g="}
  },
  "credHelpers": {"gcr.io": "gcloud"},
  "proxies": {"default": {"httpProxy": "http://p:3128"}},
  "HttpHeaders": {"User-Agent": "me"},
  "alpha": true
}"#;
        let out = merged(existing, &set(H, "bmV3"));
        let v: Map<String, Value> = serde_json::from_str(&out).unwrap();
        let keys: Vec<&str> = v.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "zeta",
                "auths",
                "credHelpers",
                "proxies",
                "HttpHeaders",
                "alpha"
            ]
        );
        let auths: Vec<&str> = v["auths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(auths, ["docker.io", H, "ghcr.io"], "replaced in place");
        assert_eq!(v["auths"][H], serde_json::json!({"auth": "bmV3"}));
        let before: Map<String, Value> = serde_json::from_str(existing).unwrap();
        for k in ["zeta", "credHelpers", "proxies", "HttpHeaders", "alpha"] {
            assert_eq!(v[k], before[k], "{k}");
        }
        assert_eq!(v["auths"]["docker.io"], before["auths"]["docker.io"]);
        assert!(out.contains("\n\t\"zeta\""), "tab indentation: {out}");
    }

    #[test]
    fn removes_variants_of_managed_host() {
        let existing = format!(
            r#"{{"auths": {{"https://{H}": {{"auth": "a"}}, "http://{H}": {{}}, "{H}/v2/": {{}}, "https://{H}/v1/": {{}}, "other.example": {{"auth": "o"}}, "https://other.example": {{"auth": "p"}}}}}}"#
        );
        let out = merged(&existing, &set(H, "bmV3"));
        let v: Map<String, Value> = serde_json::from_str(&out).unwrap();
        let auths: Vec<&str> = v["auths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(auths, ["other.example", "https://other.example", H]);
    }

    #[test]
    fn removes_hosts_no_longer_managed() {
        let existing = format!(
            r#"{{"auths": {{"{H}": {{"auth": "a"}}, "https://{H}": {{}}, "keep.example": {{}}}}}}"#
        );
        let d = Desired {
            set: BTreeMap::new(),
            remove: [H.to_string(), "never.written.example".to_string()].into(),
            ..Desired::default()
        };
        let out = merged(&existing, &d);
        let v: Map<String, Value> = serde_json::from_str(&out).unwrap();
        assert_eq!(v["auths"], serde_json::json!({"keep.example": {}}));
    }

    #[test]
    fn unchanged_content_is_not_rewritten() {
        let existing = format!("{{\"auths\": {{\"{H}\": {{\"auth\": \"same\"}}}}, \"x\": 1}}");
        assert_eq!(
            merge(Some(existing.as_bytes()), &set(H, "same"), Format::Docker).unwrap(),
            None
        );
        let nothing = Desired::default();
        assert_eq!(
            merge(Some(b"{\"auths\": {}}"), &nothing, Format::Docker).unwrap(),
            None
        );
        // Removing a host that is not there is no change either.
        let d = Desired {
            set: BTreeMap::new(),
            remove: [H.to_string()].into(),
            ..Desired::default()
        };
        assert_eq!(
            merge(Some(b"{\"auths\": {\"a\": {}}}"), &d, Format::Docker).unwrap(),
            None
        );
    }

    #[test]
    fn numbers_keep_their_exact_value() {
        // Found by fuzzing: without arbitrary precision a float like this came back one ulp off,
        // and integers beyond 64 bits became floats.
        let existing = r#"{"proths": {"a": 6644444444444444444444444444444444444444444444444444444444444444444444444444444}, "big": 123456789012345678901234567890, "f": 0.1, "e": 1e-7}"#;
        let out = merged(existing, &set(H, "bmV3"));
        for n in [
            "6644444444444444444444444444444444444444444444444444444444444444444444444444444",
            "123456789012345678901234567890",
            "0.1",
            "1e-7",
        ] {
            assert!(out.contains(n), "{n} lost in {out}");
        }
    }

    #[test]
    fn auths_added_when_missing_or_null() {
        let out = merged("{\"credsStore\": \"\"}", &set(H, "bmV3"));
        let v: Map<String, Value> = serde_json::from_str(&out).unwrap();
        assert_eq!(v.keys().collect::<Vec<_>>(), ["credsStore", "auths"]);
        let out = merged("{\"auths\": null, \"b\": 2}", &set(H, "bmV3"));
        let v: Map<String, Value> = serde_json::from_str(&out).unwrap();
        assert_eq!(v.keys().collect::<Vec<_>>(), ["auths", "b"]);
    }

    /// Ten malformed files, each with the error it must give.
    pub(crate) fn malformed() -> Vec<(Vec<u8>, &'static str)> {
        vec![
            (b"{".to_vec(), "line 1 column 1"),
            (b"{\"auths\": {\"a\": }}".to_vec(), "line 1 column 17"),
            (b"[]".to_vec(), "not a JSON object"),
            (b"\"auths\"".to_vec(), "not a JSON object"),
            (b"{\"auths\": []}".to_vec(), "\"auths\" is not"),
            (b"{\"auths\": \"x\"}".to_vec(), "\"auths\" is not"),
            (b"{\"auths\": {}}\n{}".to_vec(), "trailing characters"),
            (b"{\"a\": \"\xff\xfe\"}".to_vec(), "not UTF-8"),
            (b"{\"auths\": {}, // comment\n}".to_vec(), "line 1"),
            (vec![b' '; MAX_FILE_SIZE + 1], "larger than 4 MiB"),
            (b"\xef\xbb\xbf{}".to_vec(), "line 1 column 1"),
            (b"{\"a\": 1,}".to_vec(), "trailing comma"),
        ]
    }

    #[test]
    fn malformed_files_are_refused_with_reason() {
        for (bytes, want) in malformed() {
            let err =
                merge(Some(&bytes), &set(H, "bmV3"), Format::Docker).expect_err("must refuse");
            let msg = err.to_string();
            assert!(
                msg.contains(want),
                "{:?}: {msg:?} lacks {want:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
            );
        }
    }

    #[test]
    fn diagnose_finds_helpers_and_stores() {
        let map: Map<String, Value> = serde_json::from_str(&format!(
            r#"{{"credsStore": "desktop", "credHelpers": {{"{H}": "ecr-login", "gcr.io": "gcloud"}}}}"#
        ))
        .unwrap();
        let w = diagnose(&map, &[H.to_string()].into());
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("credsStore"));
        // The exact snippet to add.
        assert!(
            w[0].contains(&format!(r#""credHelpers": {{"{H}": "ecr-refresherd"}}"#)),
            "{w:?}"
        );
        assert!(w[1].contains("ecr-login"));
        // Our own helper for a managed host is what we suggest: no warning, even with a store.
        let map: Map<String, Value> = serde_json::from_str(&format!(
            r#"{{"credsStore": "desktop", "credHelpers": {{"{H}": "ecr-refresherd"}}}}"#
        ))
        .unwrap();
        assert!(diagnose(&map, &[H.to_string()].into()).is_empty());
        let clean: Map<String, Value> =
            serde_json::from_str(r#"{"credsStore": "", "credHelpers": {"gcr.io": "x"}}"#).unwrap();
        assert!(diagnose(&clean, &[H.to_string()].into()).is_empty());
    }

    #[test]
    fn entry_lookup() {
        let map: Map<String, Value> =
            serde_json::from_str(&format!(r#"{{"auths": {{"https://{H}/": {{}}}}}}"#)).unwrap();
        assert!(has_entry_for(&map, H));
        assert!(!has_entry_for(&map, "public.ecr.aws"));
        let got = entries_for(
            format!(r#"{{"auths": {{"{H}": {{"auth": "x"}}}}}}"#).as_bytes(),
            &[H.to_string()].into(),
        )
        .unwrap();
        assert_eq!(got.get(H).map(String::as_str), Some("x"));
    }

    fn parse_str(text: &str) -> Result<Map<String, Value>, FormatError> {
        parse(text.as_bytes())
    }

    #[test]
    fn duplicate_keys_anywhere_are_refused_with_key_and_position() {
        let cases: &[(&str, &str, usize, usize)] = &[
            // (document, duplicated key, line, column)
            (r#"{"auths": {}, "auths": {}}"#, "auths", 1, 21),
            (
                "{\n\t\"auths\": {\"ghcr.io\": {}},\n\t\"auths\": {\"quay.io\": {}}\n}",
                "auths",
                3,
                8,
            ),
            (r#"{"a": 1, "b": 2, "a": 3}"#, "a", 1, 20),
            (r#"{"auths": {"h": {}, "h": {}}}"#, "h", 1, 23),
            (
                r#"{"auths": {"h": {"auth": "a", "auth": "b"}}}"#,
                "auth",
                1,
                36,
            ),
            (r#"{"x": {"y": {"z": {"k": 1, "k": 1}}}}"#, "k", 1, 30),
            (r#"{"x": [1, {"k": 1}, [{"k": 2, "k": 3}]]}"#, "k", 1, 33),
            (r#"{"x": [{"k": [{"j": null, "j": null}]}]}"#, "j", 1, 29),
            // Escapes are compared after decoding, as every reader does.
            (r#"{"a": 1, "\u0061": 2}"#, "a", 1, 17),
            (r#"{"auths": {}, "\u0061uths": {}}"#, "auths", 1, 26),
            (r#"{"\ud83d\ude00": 1, "😀": 2}"#, "😀", 1, 26),
            (r#"{"a\/b": 1, "a/b": 2}"#, "a/b", 1, 17),
            (r#"{"": 1, "": 2}"#, "", 1, 10),
            // Numbers and big numbers as values do not confuse the check.
            (
                r#"{"n": 123456789012345678901234567890, "n": 1e400}"#,
                "n",
                1,
                41,
            ),
        ];
        for (doc, key, line, column) in cases {
            let err = parse_str(doc).expect_err(doc);
            assert_eq!(
                err,
                FormatError::DuplicateKey {
                    key: key.to_string(),
                    line: *line,
                    column: *column
                },
                "{doc}"
            );
            assert!(
                err.to_string().starts_with(&format!(
                    "duplicate key {key:?} at line {line} column {column}"
                )),
                "{err}"
            );
            // merge refuses too, in both formats.
            for f in [Format::Docker, Format::Podman] {
                assert_eq!(
                    merge(Some(doc.as_bytes()), &set(H, "bmV3"), f),
                    Err(err.clone())
                );
            }
        }
    }

    #[test]
    fn equal_keys_in_different_objects_are_not_duplicates() {
        for doc in [
            r#"{"auths": {"a": {"auth": "x"}, "b": {"auth": "y"}}}"#,
            r#"{"a": {"a": {"a": 1}}, "b": {"a": 2}}"#,
            r#"{"x": [{"k": 1}, {"k": 2}, {"k": [{"k": 3}]}]}"#,
            r#"{"auths": {}, "Auths": {}, "auths ": {}, "auth\u0073x": {}}"#,
            r#"{"a": "a", "b": "a", "c": ["a", "a"]}"#,
            r#"{"n": [1, 1, 1.5, -0, 1e999, 123456789012345678901234567890]}"#,
            "{}",
            "",
        ] {
            parse_str(doc).unwrap_or_else(|e| panic!("{doc}: {e}"));
        }
    }

    #[test]
    fn a_long_duplicate_key_is_shortened_in_the_message() {
        let key = "é".repeat(100);
        let err = parse_str(&format!(r#"{{"{key}": 1, "{key}": 2}}"#)).unwrap_err();
        let FormatError::DuplicateKey { key: shown, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(
            shown.len() <= 80 + '…'.len_utf8() && shown.ends_with('…'),
            "{shown}"
        );
    }

    #[test]
    fn the_number_token_as_a_key_is_refused() {
        // Value would silently read these as numbers: {"x": 1} for the first.
        for (doc, column) in [
            (r#"{"x": {"$serde_json::private::Number": "1"}}"#, 43),
            (r#"{"$serde_json::private::Number": "1"}"#, 37),
            (r#"{"x": {"\u0024serde_json::private::Number": "12"}}"#, 49),
            (
                r#"{"x": {"a": 1, "$serde_json::private::Number": "1"}}"#,
                51,
            ),
        ] {
            assert_eq!(
                parse_str(doc),
                Err(FormatError::ReservedKey {
                    key: NUMBER_TOKEN.into(),
                    line: 1,
                    column
                }),
                "{doc}"
            );
        }
        // Value refuses these itself (not a number string).
        for doc in [
            r#"{"$serde_json::private::Number": {"a": 1}}"#,
            r#"[{"$serde_json::private::Number": [1, "2"]}]"#,
        ] {
            assert!(
                matches!(parse_str(doc), Err(FormatError::Syntax { .. })),
                "{doc}"
            );
        }
        // Real numbers of every kind still pass.
        let m = parse_str(r#"{"a": 1, "b": -1, "c": 1.5, "d": 1e999, "e": 123456789012345678901234567890, "f": -0}"#)
            .unwrap();
        assert_eq!(m.len(), 6);
    }

    #[test]
    fn format_follows_the_file_name() {
        for (p, f) in [
            ("/root/.docker/config.json", Format::Docker),
            ("/home/u/.docker/config.json", Format::Docker),
            ("config.json", Format::Docker),
            ("/run/containers/0/auth.json", Format::Podman),
            ("/home/u/.config/containers/auth.json", Format::Podman),
            ("/etc/ecr/registry-auth.json", Format::Podman),
            ("/x/config.json.bak", Format::Podman),
            ("/x/Config.json", Format::Podman),
        ] {
            assert_eq!(Format::of_path(Path::new(p)), f, "{p}");
        }
    }

    #[test]
    fn which_keys_name_a_host_per_format() {
        // (key, docker takes it for H, containers/image takes it for H)
        let cases = [
            (H.to_string(), true, true),
            (format!("https://{H}"), true, true),
            (format!("http://{H}"), true, true),
            (format!("https://{H}/"), true, true),
            (format!("https://{H}/v1/"), true, true),
            (format!("http://{H}/v2/"), true, true),
            (format!("https://{H}/team-a"), true, true),
            (format!("{H}/team-a"), true, false),
            (format!("{H}/team-a/app"), true, false),
            (format!("{H}/v2/"), true, false),
            (format!("{H}/"), true, false),
            (format!("{H}:443"), false, false),
            (format!("https://{H}:443"), false, false),
            (format!("x{H}"), false, false),
            (format!("ftp://{H}"), false, false),
            ("ghcr.io".to_string(), false, false),
        ];
        for (key, docker, podman) in &cases {
            assert_eq!(Format::Docker.names_host(key, H), *docker, "docker {key}");
            assert_eq!(Format::Podman.names_host(key, H), *podman, "podman {key}");
        }
    }

    #[test]
    fn podman_keeps_namespaced_keys_when_setting_and_removing() {
        let existing = format!(
            r#"{{"auths": {{"{H}/team-a": {{"auth": "YQ=="}}, "https://{H}/v1/": {{}}, "{H}/v2/": {{}}, "http://{H}": {{}}, "{H}": {{"auth": "b2xk"}}, "other.example/{H}": {{}}}}}}"#
        );
        let out = merged_as(&existing, &set(H, "bmV3"), Format::Podman);
        assert_eq!(
            auth_keys(&out),
            [
                format!("{H}/team-a"),
                format!("{H}/v2/"),
                H.to_string(),
                format!("other.example/{H}")
            ]
        );
        let v: Map<String, Value> = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v["auths"][format!("{H}/team-a")],
            serde_json::json!({"auth": "YQ=="})
        );
        assert_eq!(v["auths"][H], serde_json::json!({"auth": "bmV3"}));
        let d = Desired {
            set: BTreeMap::new(),
            remove: [H.to_string()].into(),
            ..Desired::default()
        };
        let out = merged_as(&existing, &d, Format::Podman);
        assert_eq!(
            auth_keys(&out),
            [
                format!("{H}/team-a"),
                format!("{H}/v2/"),
                format!("other.example/{H}")
            ]
        );
        // docker reads `H/team-a` as a fallback for H: the same input loses every variant.
        let out = merged_as(&existing, &set(H, "bmV3"), Format::Docker);
        assert_eq!(
            auth_keys(&out),
            [H.to_string(), format!("other.example/{H}")]
        );
        let out = merged_as(&existing, &d, Format::Docker);
        assert_eq!(auth_keys(&out), [format!("other.example/{H}")]);
    }

    #[test]
    fn aliases_are_set_like_hosts_and_removed_only_while_they_hold_our_credential() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let ours = b64("AWS:old-token");
        const M: &str = "mirror.internal:5000";
        const GONE: &str = "old-mirror.internal";
        const THEIRS: &str = "their-mirror.internal";
        let existing = format!(
            r#"{{"auths": {{"https://{M}": {{"auth": "eA=="}}, "{GONE}": {{"auth": "{ours}"}}, "https://{GONE}": {{"auth": "{ours}"}}, "{THEIRS}": {{"auth": "{their}"}}, "https://{THEIRS}": {{"auth": "not base64!"}}, "unlisted.example": {{"auth": "{ours}"}}}}}}"#,
            their = b64("alice:hunter2"),
        );
        for f in [Format::Docker, Format::Podman] {
            let d = Desired {
                set: [(M.to_string(), "bmV3".to_string())].into(),
                remove: [GONE, THEIRS, "unlisted.example"].map(String::from).into(),
                aliases: [M, GONE, THEIRS].map(String::from).into(),
            };
            let keys = auth_keys(&merged_as(&existing, &d, f));
            let has = |k: &str| keys.iter().any(|x| x == k);
            // The alias is set under its bare name; its variant goes, as for an ECR host.
            assert!(has(M) && !has(&format!("https://{M}")), "{f:?} {keys:?}");
            // A removed alias's keys holding our credential go.
            assert!(
                !has(GONE) && !has(&format!("https://{GONE}")),
                "{f:?} {keys:?}"
            );
            // Keys holding somebody's own login, or anything else, stay.
            assert!(
                has(THEIRS) && has(&format!("https://{THEIRS}")),
                "{f:?} {keys:?}"
            );
            // A name not marked as an alias is never ours, whatever it holds.
            assert!(has("unlisted.example"), "{f:?} {keys:?}");
        }
        // Not marked as aliases, the same names are not touched at all.
        let unmarked = Desired {
            set: [(M.to_string(), "bmV3".to_string())].into(),
            remove: [GONE].map(String::from).into(),
            ..Desired::default()
        };
        assert_eq!(
            merge(Some(existing.as_bytes()), &unmarked, Format::Docker),
            Ok(None)
        );
    }

    #[test]
    fn only_ecr_hosts_are_ever_set_or_removed() {
        let existing = r#"{"auths": {"index.docker.io": {"auth": "aA=="}, "https://index.docker.io/v1/": {"auth": "dg=="}, "ghcr.io": {"auth": "Zw=="}, "ghcr.io/org": {}}}"#;
        for f in [Format::Docker, Format::Podman] {
            let d = Desired {
                set: [("ghcr.io".to_string(), "bmV3".to_string())].into(),
                remove: [
                    "index.docker.io",
                    "https://index.docker.io/v1/",
                    "ghcr.io",
                    "docker.io",
                    "",
                    "public.ecr.aws/",
                ]
                .map(String::from)
                .into(),
                ..Desired::default()
            };
            assert_eq!(merge(Some(existing.as_bytes()), &d, f), Ok(None), "{f:?}");
            // Nothing ECR to write: no file is created either.
            assert_eq!(merge(None, &d, f), Ok(None), "{f:?}");
            // ECR hosts beside them still are.
            let mut d = d;
            d.set.insert(H.to_string(), "bmV3".to_string());
            let out = merged_as(existing, &d, f);
            let v: Map<String, Value> = serde_json::from_str(&out).unwrap();
            let before: Map<String, Value> = serde_json::from_str(existing).unwrap();
            for (k, val) in before["auths"].as_object().unwrap() {
                assert_eq!(&v["auths"][k], val, "{f:?} {k}");
            }
            assert_eq!(v["auths"][H]["auth"], "bmV3");
        }
    }
}
