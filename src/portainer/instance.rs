//! One Portainer instance: a round reads its records back (when due), sets the credentials of
//! each record whose host has a new token or that someone changed, and keeps its status.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use super::api::{ApiError, Client};
use super::records::{self, Record, Why};
use super::tls;
use crate::config::PortainerSettings;
use crate::safe_fs;
use crate::status::{PortainerStatus, RecordStatus};
use crate::targets::consumer::Credentials;

/// The largest API key file read (a key is ~50 bytes).
const MAX_KEY_FILE: usize = 64 * 1024;
/// The most records of one instance kept fresh (real instances have a handful).
pub const MAX_RECORDS: usize = 1000;
/// The most records shown in the status of one instance.
pub const MAX_ROWS: usize = 100;
/// The longest name or URL kept for the status (shown escaped).
const MAX_SHOWN: usize = 128;
/// A whole round (list and PUTs) ends by then, whatever the server does.
pub const ROUND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// At most ten ids, then how many more.
fn some_ids(ids: &[u32]) -> String {
    let mut s = ids
        .iter()
        .take(10)
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > 10 {
        s += &format!(" and {} more", ids.len() - 10);
    }
    s
}

/// At most `max` characters of foreign text (escaped where it is shown).
fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// What a round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Everything asked for was done.
    pub ok: bool,
    /// Records whose credentials were set.
    pub updated: usize,
}

/// One instance's state between rounds.
pub struct Instance {
    settings: PortainerSettings,
    /// The managed registry hosts (what a record's URL must name).
    hosts: BTreeSet<String>,
    client: Option<Client>,
    /// Our records as last listed, by id, without their passwords.
    ours: BTreeMap<u32, Record>,
    /// The password we last set on (or found on) each record.
    last_set: BTreeMap<u32, String>,
    /// The records must be listed before the next PUT (first round, a 404, an error).
    need_list: bool,
    /// Records of ours that vanished (deleted in Portainer), with their names: reported until
    /// the instance is reconfigured or the daemon restarts.
    vanished: Vec<(u32, String)>,
    status: PortainerStatus,
}

impl Instance {
    pub fn new(settings: PortainerSettings, hosts: BTreeSet<String>) -> Instance {
        Instance {
            status: PortainerStatus {
                url: settings.url.clone(),
                ..PortainerStatus::default()
            },
            settings,
            hosts,
            client: None,
            ours: BTreeMap::new(),
            last_set: BTreeMap::new(),
            need_list: true,
            vanished: Vec::new(),
        }
    }

    pub fn settings(&self) -> &PortainerSettings {
        &self.settings
    }

    pub fn status(&self) -> &PortainerStatus {
        &self.status
    }

    pub fn status_mut(&mut self) -> &mut PortainerStatus {
        &mut self.status
    }

    /// One round, bounded by [`ROUND_TIMEOUT`]. `check`: read the records back now (the heal
    /// timer); a round lists them anyway when it must. Without credentials (the `check`
    /// command) it only reads.
    pub async fn round(&mut self, creds: Option<&Credentials>, check: bool) -> Outcome {
        match tokio::time::timeout(ROUND_TIMEOUT, self.round_inner(creds, check)).await {
            Ok(o) => o,
            Err(_) => {
                self.fail(Failure::Setup(format!(
                    "the round took longer than {}s; will retry",
                    ROUND_TIMEOUT.as_secs()
                )));
                Outcome::default()
            }
        }
    }

    async fn round_inner(&mut self, creds: Option<&Credentials>, check: bool) -> Outcome {
        if (check || self.need_list || self.client.is_none())
            && let Err(e) = self.list(creds).await
        {
            self.fail(e);
            return Outcome::default();
        }
        match creds {
            Some(c) => self.put_due(c).await,
            None => Outcome {
                ok: self.status.last_error.is_none()
                    && self.status.records.iter().all(|r| r.last_error.is_none()),
                updated: 0,
            },
        }
    }

    /// Every secret an answer could echo: each password held or last set (the key is the
    /// client's own).
    fn secrets(&self, creds: Option<&Credentials>) -> Vec<String> {
        let mut all: Vec<String> = creds
            .into_iter()
            .flat_map(|c| c.values())
            .filter_map(|t| t.password())
            .chain(self.last_set.values().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// Reads the key and the TLS settings (each round that lists, so a rotated key or CA file
    /// is used without a reload), then the version and the records.
    async fn list(&mut self, creds: Option<&Credentials>) -> Result<(), Failure> {
        let key = read_key(&self.settings)?;
        let tls = tls::client_config(&self.settings).map_err(|e| Failure::Setup(e.to_string()))?;
        let mut client = Client::new(&self.settings.url, tls, &key).map_err(Failure::Api)?;
        client.set_secrets(self.secrets(creds));
        self.client = Some(client.clone());
        let version = client.system_status().await.map_err(Failure::Api)?;
        self.status.reachable = true;
        self.status.version = Some(cut(&version.version, 64));
        let listed = client.list().await.map_err(Failure::Api)?;
        self.status.admin = Some(true);
        self.status.last_check = Some(SystemTime::now());
        self.status.last_error = None;
        self.apply_list(listed, creds);
        self.need_list = false;
        Ok(())
    }

    /// Takes a fresh list in: what is ours now, what vanished, what needs healing. Bounded
    /// whatever the list holds: at most [`MAX_RECORDS`] kept fresh, [`MAX_ROWS`] shown, one
    /// log line per kind of event.
    fn apply_list(&mut self, listed: Vec<Record>, creds: Option<&Credentials>) {
        let selection = records::select(&listed, &self.settings.records, &self.hosts);
        let by_id: BTreeMap<u32, Record> = listed.into_iter().map(|r| (r.id, r)).collect();
        let before: Vec<u32> = self.ours.keys().copied().collect();
        let old_status: BTreeMap<u32, RecordStatus> =
            self.status.records.drain(..).map(|r| (r.id, r)).collect();
        let mut ours = BTreeMap::new();
        let mut shown = Vec::new();
        let mut warnings = Vec::new();
        let (mut native, mut healed, mut beyond) = (Vec::new(), Vec::new(), 0usize);
        for sel in &selection.records {
            let Some(r) = by_id.get(&sel.id) else {
                continue;
            };
            if sel.native {
                native.push(r.id);
                continue;
            }
            if sel.host.is_some() && ours.len() >= MAX_RECORDS {
                beyond += 1;
                continue;
            }
            let old = old_status.get(&sel.id);
            let mut st = RecordStatus {
                id: r.id,
                name: cut(&r.name, MAX_SHOWN),
                kind: r.kind,
                url: cut(&r.url, MAX_SHOWN),
                host: sel.host.clone(),
                last_update: old.and_then(|o| o.last_update),
                last_error: sel.error.clone(),
                warnings: Vec::new(),
            };
            if let Some(host) = &sel.host {
                match creds.map(|c| c.get(host).and_then(|t| t.password())) {
                    // Only reading (the `check` command): passwords are not judged.
                    None => {}
                    Some(Some(want)) => match records::needs_update(
                        r,
                        &want,
                        self.last_set.get(&r.id).map(String::as_str),
                    ) {
                        None => {
                            self.last_set.insert(r.id, want);
                            if st.last_update.is_none() {
                                st.last_update = Some(SystemTime::now());
                            }
                        }
                        Some(Why::Healed) => {
                            healed.push(r.id);
                            self.last_set.remove(&r.id);
                        }
                        Some(Why::Rotated) => {
                            self.last_set.remove(&r.id);
                        }
                    },
                    Some(None) => st
                        .warnings
                        .push(format!("no valid token for {host} yet; set once there is")),
                }
                // Keep the error of a PUT that failed until the next PUT says otherwise.
                if st.last_error.is_none() {
                    st.last_error = old.and_then(|o| o.last_error.clone());
                }
                let mut kept = r.clone();
                kept.password = None;
                ours.insert(r.id, kept);
            }
            shown.push(st);
        }
        for id in &selection.missing {
            shown.push(RecordStatus {
                id: *id,
                last_error: Some(format!(
                    "record {id} is not in Portainer (deleted? re-created records get a new id: update registries = [...])"
                )),
                ..RecordStatus::default()
            });
        }
        let vanished: Vec<u32> = records::vanished(&before, &by_id)
            .into_iter()
            .filter(|id| !selection.missing.contains(id))
            .collect();
        if !vanished.is_empty() {
            tracing::warn!(portainer = %self.settings.url, "{} registry record(s) vanished from Portainer: {}", vanished.len(), some_ids(&vanished));
            for id in &vanished {
                if self.vanished.len() < MAX_ROWS && !self.vanished.iter().any(|(v, _)| v == id) {
                    let name = old_status.get(id).map_or(String::new(), |o| o.name.clone());
                    self.vanished.push((*id, name));
                }
            }
        }
        // A record that is back (an id is never reused by Portainer, but a list may flap).
        self.vanished.retain(|(id, _)| !by_id.contains_key(id));
        if !self.vanished.is_empty() {
            let named: Vec<String> = self
                .vanished
                .iter()
                .take(10)
                .map(|(id, name)| format!("{id} {name:?}"))
                .collect();
            let more = self.vanished.len().saturating_sub(10);
            warnings.push(format!(
                "record(s) {}{} vanished from Portainer while kept fresh (deleted?); a re-created record is picked up by its URL",
                named.join(", "),
                if more > 0 { format!(" and {more} more") } else { String::new() }
            ));
        }
        if !healed.is_empty() {
            tracing::warn!(portainer = %self.settings.url, "{} registry record(s) changed outside the daemon (UI edit, or re-created); restoring their credentials: {}", healed.len(), some_ids(&healed));
        }
        if !native.is_empty() {
            warnings.push(records::native_ecr_hint(&format!(
                "record(s) {} for a managed registry are",
                some_ids(&native)
            )));
        }
        if beyond > 0 {
            warnings.push(format!(
                "{beyond} more record(s) match managed registries; at most {MAX_RECORDS} are kept fresh"
            ));
        }
        if shown.len() > MAX_ROWS {
            let more = shown.len() - MAX_ROWS;
            // Rows of ours with an error first, so the status shows what needs attention.
            shown.sort_by_key(|r| (r.last_error.is_none(), r.host.is_none(), r.id));
            shown.truncate(MAX_ROWS);
            shown.sort_by_key(|r| r.id);
            warnings.push(format!("{more} more record(s) not shown"));
        }
        self.last_set.retain(|id, _| ours.contains_key(id));
        self.ours = ours;
        self.status.records = shown;
        self.status.warnings = warnings;
    }

    /// PUTs every record of ours whose host's password is not what we last set.
    async fn put_due(&mut self, creds: &Credentials) -> Outcome {
        let mut outcome = Outcome {
            ok: true,
            updated: 0,
        };
        let secrets = self.secrets(Some(creds));
        let Some(client) = self.client.as_mut() else {
            return Outcome::default();
        };
        client.set_secrets(secrets);
        let client = client.clone();
        let due: Vec<(u32, String, String)> = self
            .ours
            .values()
            .filter_map(|r| {
                let host = records::host_of(&r.url);
                let want = creds.get(&host)?.password()?;
                (self.last_set.get(&r.id) != Some(&want)).then_some((r.id, host, want))
            })
            .collect();
        let (mut updated, mut failed) = (Vec::new(), Vec::new());
        for (id, host, want) in due {
            let error = match client.set_password(id, &want).await {
                Ok(answer) if records::host_of(&answer.url) != host => {
                    // Someone changed the record's URL since the list: look again.
                    self.need_list = true;
                    self.ours.remove(&id);
                    Some("the record's URL changed since it was listed; listing again".to_string())
                }
                Ok(answer) if records::applied(&answer, &want) => {
                    self.last_set.insert(id, want);
                    updated.push(id);
                    self.set_record(id, |st| {
                        st.last_update = Some(SystemTime::now());
                        st.last_error = None;
                    });
                    None
                }
                Ok(_) => Some(
                    "Portainer answered without applying the credentials (its answer shows other ones); will retry"
                        .to_string(),
                ),
                Err(ApiError::NotFound(_)) => {
                    self.need_list = true;
                    self.ours.remove(&id);
                    self.last_set.remove(&id);
                    Some("the record vanished from Portainer (deleted?)".to_string())
                }
                Err(e)
                    if e.reached() && !matches!(e, ApiError::BadKey(_) | ApiError::NotAdmin(_)) =>
                {
                    self.need_list = true;
                    Some(e.to_string())
                }
                Err(e) => {
                    // The instance itself failed: the other records would fail the same way.
                    self.log_updates(&updated, &failed);
                    self.fail(Failure::Api(e));
                    return Outcome::default();
                }
            };
            if let Some(e) = error {
                outcome.ok = false;
                self.set_record(id, |st| st.last_error = Some(e.clone()));
                failed.push((id, e));
            }
        }
        self.log_updates(&updated, &failed);
        outcome.updated = updated.len();
        if outcome.ok {
            self.status.last_error = None;
        }
        outcome
    }

    /// One line for the records set in a round, one for those that failed.
    fn log_updates(&self, updated: &[u32], failed: &[(u32, String)]) {
        if !updated.is_empty() {
            tracing::info!(portainer = %self.settings.url, "{} Portainer registry record(s) updated: {}", updated.len(), some_ids(updated));
        }
        if let Some((id, first)) = failed.first() {
            let ids: Vec<u32> = failed.iter().map(|(id, _)| *id).collect();
            tracing::warn!(portainer = %self.settings.url, "cannot update {} Portainer registry record(s): {} (record {id}: {first})", failed.len(), some_ids(&ids));
        }
    }

    fn set_record(&mut self, id: u32, f: impl FnOnce(&mut RecordStatus)) {
        if let Some(st) = self.status.records.iter_mut().find(|r| r.id == id) {
            f(st);
        }
    }

    fn fail(&mut self, f: Failure) {
        self.need_list = true;
        match &f {
            Failure::Api(e) => {
                self.status.reachable = e.reached();
                match e {
                    ApiError::NotAdmin(_) => self.status.admin = Some(false),
                    ApiError::BadKey(_) => self.status.admin = None,
                    _ => {}
                }
            }
            Failure::Key(_) | Failure::Setup(_) => self.status.reachable = false,
        }
        let text = f.to_string();
        if self.status.last_error.as_deref() != Some(text.as_str()) {
            tracing::warn!(portainer = %self.settings.url, error = %text, "Portainer unavailable; its records are not kept fresh meanwhile");
        }
        self.status.last_error = Some(text);
    }
}

/// Why a round could not go on.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("api_key_file {0}")]
    Key(String),
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Api(ApiError),
}

/// The API key: the file's first line, from a file only root can read.
fn read_key(p: &PortainerSettings) -> Result<String, Failure> {
    let bytes = safe_fs::read_secret(&p.api_key_file, MAX_KEY_FILE)
        .map_err(|e| Failure::Key(e.to_string()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Failure::Key(format!("{}: is not text", p.api_key_file.display())))?;
    let key = text.lines().next().unwrap_or("").trim();
    if key.is_empty() {
        return Err(Failure::Key(format!(
            "{}: is empty; put an administrator's API key in it (Portainer: My account > Access tokens)",
            p.api_key_file.display()
        )));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Failure::Key(format!(
            "{}: the key holds spaces or control characters",
            p.api_key_file.display()
        )));
    }
    Ok(key.to_string())
}
