//! Which of Portainer's registry records are ours, and which need their credentials set: pure.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::config::RecordSelection;
use crate::ecr::registry::key_host;

/// Portainer's Custom registry type: any registry with a user name and a password.
pub const CUSTOM: u32 = 3;
/// Portainer's native ECR type: it builds its own AWS client from static IAM keys only.
pub const NATIVE_ECR: u32 = 7;
/// The user name of every ECR token.
pub const USERNAME: &str = "AWS";

/// A registry record as `GET /api/registries` lists it (to an administrator, with its password).
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Record {
    #[serde(rename = "Id")]
    pub id: u32,
    #[serde(rename = "Type", default)]
    pub kind: u32,
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "URL", default)]
    pub url: String,
    #[serde(rename = "Authentication", default)]
    pub authentication: bool,
    #[serde(rename = "Username", default)]
    pub username: String,
    /// Absent where Portainer hides it; any record's password (not only ours): never shown.
    #[serde(rename = "Password", default)]
    pub password: Option<String>,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("url", &self.url)
            .field("authentication", &self.authentication)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A record's URL as a docker `auths` key is matched: the host part, lower case.
pub fn host_of(url: &str) -> String {
    key_host(url.trim()).to_ascii_lowercase()
}

/// What the selection makes of one listed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    pub id: u32,
    /// The managed host it gets tokens for; `None`: not kept fresh.
    pub host: Option<String>,
    /// Why it cannot be kept fresh although it was asked for (an error).
    pub error: Option<String>,
    /// A native ECR record for a managed host (static keys only): worth a warning.
    pub native: bool,
}

/// Every listed record that concerns us (ours, or one that looks like it should be), and the
/// configured ids that are not there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub records: Vec<Selected>,
    pub missing: Vec<u32>,
}

/// What to do about native ECR records (`which` names them).
pub fn native_ecr_hint(which: &str) -> String {
    format!(
        "{which} Portainer's native ECR type, which needs static IAM keys; to use this host's tokens instead, add a Custom registry (Registries > Add registry > Custom registry, the same URL, authentication on, user AWS, any password) and delete the native one: the Custom one is then kept fresh automatically"
    )
}

/// Applies the config's selection to the listed records. `hosts` are the managed registry hosts.
pub fn select(
    records: &[Record],
    selection: &RecordSelection,
    hosts: &BTreeSet<String>,
) -> Selection {
    let mut out = Selection::default();
    match selection {
        RecordSelection::Matching => {
            for r in records {
                let host = host_of(&r.url);
                if !hosts.contains(&host) {
                    continue;
                }
                match r.kind {
                    CUSTOM => out.records.push(Selected {
                        id: r.id,
                        host: Some(host),
                        error: None,
                        native: false,
                    }),
                    NATIVE_ECR => out.records.push(Selected {
                        id: r.id,
                        host: None,
                        error: None,
                        native: true,
                    }),
                    _ => {}
                }
            }
        }
        RecordSelection::Only(ids) => {
            for id in ids {
                let Some(r) = records.iter().find(|r| r.id == *id) else {
                    out.missing.push(*id);
                    continue;
                };
                let host = host_of(&r.url);
                let error = if r.kind == NATIVE_ECR {
                    Some(native_ecr_hint(&format!("record {} is", r.id)))
                } else if r.kind != CUSTOM {
                    Some(format!(
                        "record {} is of type {} ({}), not Custom: only a Custom record takes a user name and a token",
                        r.id,
                        r.kind,
                        crate::status::kind_name(r.kind)
                    ))
                } else if !hosts.contains(&host) {
                    Some(format!(
                        "record {}'s URL {:?} is not a registry this daemon fetches tokens for; add a [[registry]] with host = {host:?} or correct the record's URL",
                        r.id, r.url
                    ))
                } else {
                    None
                };
                out.records.push(Selected {
                    id: r.id,
                    host: error.is_none().then_some(host),
                    error,
                    native: false,
                });
            }
        }
    }
    out
}

/// Why a record needs a PUT now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// A new token for its host since we last set it.
    Rotated,
    /// Its credentials differ from what we set (edited in the UI, or re-created).
    Healed,
}

/// Whether a listed record needs the password `want`. `last_set` is what we last set on it.
/// A record whose password Portainer hides is judged by its user name and by what we last set.
pub fn needs_update(r: &Record, want: &str, last_set: Option<&str>) -> Option<Why> {
    let ours = r.authentication && r.username == USERNAME;
    match &r.password {
        Some(p) if ours && p == want => None,
        Some(_) if ours && last_set != Some(want) => Some(Why::Rotated),
        Some(_) => Some(Why::Healed),
        None if !ours => Some(Why::Healed),
        None if last_set == Some(want) => None,
        None => Some(Why::Rotated),
    }
}

/// Whether Portainer's answer to our PUT shows the credentials we sent.
pub fn applied(r: &Record, want: &str) -> bool {
    r.authentication && r.username == USERNAME && r.password.as_deref().is_none_or(|p| p == want)
}

/// Records we kept fresh before that the latest list no longer has.
pub fn vanished<'a>(
    before: impl IntoIterator<Item = &'a u32>,
    now: &BTreeMap<u32, Record>,
) -> Vec<u32> {
    before
        .into_iter()
        .filter(|id| !now.contains_key(id))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "111111111111.dkr.ecr.us-east-1.amazonaws.com";
    const OTHER: &str = "222222222222.dkr.ecr.eu-west-1.amazonaws.com";

    fn rec(id: u32, kind: u32, url: &str) -> Record {
        Record {
            id,
            kind,
            name: format!("r{id}"),
            url: url.into(),
            authentication: true,
            username: USERNAME.into(),
            password: Some("old".into()),
        }
    }

    fn hosts() -> BTreeSet<String> {
        [H.to_string()].into()
    }

    #[test]
    fn urls_match_like_auths_keys() {
        for url in [
            H.to_string(),
            format!("https://{H}"),
            format!("http://{H}/"),
            format!("{H}/some/path"),
            H.to_uppercase(),
            format!(" {H} "),
        ] {
            assert_eq!(host_of(&url), H, "{url:?}");
        }
        assert_ne!(host_of(&format!("{H}:443")), H);
        assert_ne!(host_of(&format!("x{H}")), H);
    }

    #[test]
    fn by_default_custom_records_of_managed_hosts_are_ours() {
        let records = vec![
            rec(1, CUSTOM, H),
            rec(2, CUSTOM, OTHER),
            rec(3, 6, "docker.io"),
            rec(4, CUSTOM, &format!("https://{H}")),
            rec(5, NATIVE_ECR, H),
            rec(6, 1, H),
        ];
        let s = select(&records, &RecordSelection::Matching, &hosts());
        let ours: Vec<_> = s
            .records
            .iter()
            .filter(|r| r.host.is_some())
            .map(|r| r.id)
            .collect();
        assert_eq!(ours, [1, 4]);
        let native = s.records.iter().find(|r| r.id == 5).unwrap();
        assert_eq!(native.host, None);
        assert!(native.native, "{native:?}");
        assert!(s.records.iter().filter(|r| r.native).count() == 1);
        assert!(s.missing.is_empty());
        assert!(s.records.iter().all(|r| r.error.is_none()));
    }

    #[test]
    fn listed_ids_are_checked_one_by_one() {
        let records = vec![
            rec(1, CUSTOM, H),
            rec(2, CUSTOM, OTHER),
            rec(3, 6, H),
            rec(5, NATIVE_ECR, H),
        ];
        let only = RecordSelection::Only(vec![2, 1, 9, 3, 5]);
        let s = select(&records, &only, &hosts());
        assert_eq!(s.missing, [9]);
        let by_id = |id| s.records.iter().find(|r| r.id == id).unwrap();
        assert_eq!(by_id(1).host.as_deref(), Some(H));
        assert!(by_id(1).error.is_none());
        assert!(
            by_id(2)
                .error
                .as_deref()
                .unwrap()
                .contains("not a registry this daemon fetches tokens for")
        );
        assert!(by_id(3).error.as_deref().unwrap().contains("not Custom"));
        assert!(
            by_id(5)
                .error
                .as_deref()
                .unwrap()
                .contains("static IAM keys")
        );
        assert_eq!(s.records.iter().filter(|r| r.host.is_some()).count(), 1);
        // Config order is kept.
        let order: Vec<_> = s.records.iter().map(|r| r.id).collect();
        assert_eq!(order, [2, 1, 3, 5]);
    }

    #[test]
    fn what_needs_a_put() {
        let mut r = rec(1, CUSTOM, H);
        // Holds what we want: nothing to do, whatever we remember.
        r.password = Some("new".into());
        assert_eq!(needs_update(&r, "new", None), None);
        assert_eq!(needs_update(&r, "new", Some("older")), None);
        // A new token since we set the old one.
        r.password = Some("old".into());
        assert_eq!(needs_update(&r, "new", Some("old")), Some(Why::Rotated));
        assert_eq!(needs_update(&r, "new", None), Some(Why::Rotated));
        // We set "new" but the record holds something else: someone edited it.
        assert_eq!(needs_update(&r, "new", Some("new")), Some(Why::Healed));
        // Another user name, or authentication turned off: healed whatever the password.
        for f in [
            (|r: &mut Record| r.username = "admin".into()) as fn(&mut Record),
            |r: &mut Record| r.authentication = false,
        ] {
            let mut r = rec(1, CUSTOM, H);
            r.password = Some("new".into());
            f(&mut r);
            assert_eq!(needs_update(&r, "new", Some("new")), Some(Why::Healed));
        }
        // Password hidden: judged by the user name and by what we last set.
        r.password = None;
        assert_eq!(needs_update(&r, "new", Some("new")), None);
        assert_eq!(needs_update(&r, "new", Some("old")), Some(Why::Rotated));
        assert_eq!(needs_update(&r, "new", None), Some(Why::Rotated));
        r.username = "x".into();
        assert_eq!(needs_update(&r, "new", Some("new")), Some(Why::Healed));
    }

    #[test]
    fn an_answer_must_show_what_was_sent() {
        let mut r = rec(1, CUSTOM, H);
        r.password = Some("new".into());
        assert!(applied(&r, "new"));
        assert!(!applied(&r, "other"));
        r.password = None;
        assert!(applied(&r, "new"));
        r.authentication = false;
        assert!(!applied(&r, "new"));
        let mut r = rec(1, CUSTOM, H);
        r.username = "AWSX".into();
        r.password = Some("new".into());
        assert!(!applied(&r, "new"));
    }

    #[test]
    fn vanished_records() {
        let now: BTreeMap<u32, Record> = [(1, rec(1, CUSTOM, H))].into();
        assert_eq!(vanished(&[1, 2, 3], &now), [2, 3]);
        assert!(vanished(&[1], &now).is_empty());
    }

    #[test]
    fn a_record_never_shows_its_password() {
        let r = rec(1, CUSTOM, H);
        assert!(!format!("{r:?}").contains("old"));
    }
}
