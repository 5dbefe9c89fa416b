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

    /// One round. `check`: read the records back now (the heal timer); a round lists them
    /// anyway when it must. Without credentials (the `check` command) it only reads.
    pub async fn round(&mut self, creds: Option<&Credentials>, check: bool) -> Outcome {
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

    /// Reads the key and the TLS settings (each round that lists, so a rotated key or CA file
    /// is used without a reload), then the version and the records.
    async fn list(&mut self, creds: Option<&Credentials>) -> Result<(), Failure> {
        let key = read_key(&self.settings)?;
        let tls = tls::client_config(&self.settings).map_err(|e| Failure::Setup(e.to_string()))?;
        let client = Client::new(&self.settings.url, tls, &key).map_err(Failure::Api)?;
        self.client = Some(client.clone());
        let version = client.system_status().await.map_err(Failure::Api)?;
        self.status.reachable = true;
        self.status.version = Some(crate::escape::shown(&version.version).into_owned());
        let listed = client.list().await.map_err(Failure::Api)?;
        self.status.admin = Some(true);
        self.status.last_check = Some(SystemTime::now());
        self.status.last_error = None;
        self.apply_list(listed, creds);
        self.need_list = false;
        Ok(())
    }

    /// Takes a fresh list in: what is ours now, what vanished, what needs healing.
    fn apply_list(&mut self, listed: Vec<Record>, creds: Option<&Credentials>) {
        let selection = records::select(&listed, &self.settings.records, &self.hosts);
        let by_id: BTreeMap<u32, Record> = listed.into_iter().map(|r| (r.id, r)).collect();
        let before: Vec<u32> = self.ours.keys().copied().collect();
        let old_status: BTreeMap<u32, RecordStatus> =
            self.status.records.drain(..).map(|r| (r.id, r)).collect();
        let mut ours = BTreeMap::new();
        let mut shown = Vec::new();
        let mut warnings = Vec::new();
        for sel in &selection.records {
            let Some(r) = by_id.get(&sel.id) else {
                continue;
            };
            let old = old_status.get(&sel.id);
            let mut st = RecordStatus {
                id: r.id,
                name: crate::escape::shown(&r.name).into_owned(),
                kind: r.kind,
                url: crate::escape::shown(&r.url).into_owned(),
                host: sel.host.clone(),
                last_update: old.and_then(|o| o.last_update),
                last_error: sel.error.clone(),
                warnings: sel.warnings.clone(),
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
                            tracing::warn!(portainer = %self.settings.url, record = r.id, name = %st.name, "registry record changed outside the daemon (UI edit, or re-created); restoring its credentials");
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
        for id in records::vanished(&before, &by_id) {
            if !selection.missing.contains(&id) {
                let was = old_status
                    .get(&id)
                    .map_or(String::new(), |o| format!(" {:?}", o.name));
                tracing::warn!(portainer = %self.settings.url, record = id, "registry record vanished from Portainer");
                warnings.push(format!(
                    "record {id}{was} vanished since the previous check (deleted in Portainer?)"
                ));
            }
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
        let Some(client) = self.client.clone() else {
            return Outcome::default();
        };
        let due: Vec<(u32, String, String)> = self
            .ours
            .values()
            .filter_map(|r| {
                let host = records::host_of(&r.url);
                let want = creds.get(&host)?.password()?;
                (self.last_set.get(&r.id) != Some(&want)).then_some((r.id, host, want))
            })
            .collect();
        for (id, host, want) in due {
            match client.set_password(id, &want).await {
                Ok(answer) if records::applied(&answer, &want) => {
                    self.last_set.insert(id, want);
                    outcome.updated += 1;
                    let name = self.set_record(id, |st| {
                        st.last_update = Some(SystemTime::now());
                        st.last_error = None;
                    });
                    tracing::info!(portainer = %self.settings.url, record = id, name = %name, registry = %host, "Portainer registry record updated");
                }
                Ok(_) => {
                    outcome.ok = false;
                    self.record_error(id, "Portainer answered without applying the credentials (its answer shows other ones); will retry".into());
                }
                Err(ApiError::NotFound(_)) => {
                    outcome.ok = false;
                    self.need_list = true;
                    self.ours.remove(&id);
                    self.last_set.remove(&id);
                    self.record_error(id, "the record vanished from Portainer (deleted?)".into());
                }
                Err(e)
                    if e.reached() && !matches!(e, ApiError::BadKey(_) | ApiError::NotAdmin(_)) =>
                {
                    outcome.ok = false;
                    self.need_list = true;
                    self.record_error(id, e.to_string());
                }
                Err(e) => {
                    // The instance itself failed: the other records would fail the same way.
                    self.fail(Failure::Api(e));
                    return Outcome::default();
                }
            }
        }
        if outcome.ok {
            self.status.last_error = None;
        }
        outcome
    }

    fn set_record(&mut self, id: u32, f: impl FnOnce(&mut RecordStatus)) -> String {
        match self.status.records.iter_mut().find(|r| r.id == id) {
            Some(st) => {
                f(st);
                st.name.clone()
            }
            None => String::new(),
        }
    }

    fn record_error(&mut self, id: u32, error: String) {
        let url = self.settings.url.clone();
        self.set_record(id, |st| {
            if st.last_error.as_deref() != Some(error.as_str()) {
                tracing::warn!(portainer = %url, record = id, error = %error, "cannot update Portainer registry record");
            }
            st.last_error = Some(error);
        });
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
