//! The seam between the core and whatever receives credentials: a [`Job`] says which hosts get
//! which token and which entries go; a [`Consumer`] performs it. Auth files are the first kind.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::SystemTime;

use crate::config::TargetSettings;
use crate::ecr::registry::Registry;
use crate::ecr::token::Token;
use crate::targets::authfile::Desired;
use crate::targets::state::{Managed, State};

/// What the daemon holds now: each registry host's valid token. Consumers answered from memory
/// (Portainer's records) are fed this whenever it changes.
pub type Credentials = BTreeMap<String, Token>;

/// What one consumer should hold now.
#[derive(Debug, Clone)]
pub struct Job {
    /// The consumer (today an auth file) and how to write it.
    pub target: TargetSettings,
    /// Hosts to set (to a token's `auth` value) and hosts whose entries go.
    pub desired: Desired,
    /// When each token set expires (what the state records once delivered).
    pub expiries: BTreeMap<String, SystemTime>,
}

impl Job {
    /// Removes every entry we manage in a consumer that is no longer configured.
    pub fn unmanage(target: TargetSettings, managed: &BTreeMap<String, Managed>) -> Job {
        Job {
            target,
            desired: Desired {
                set: BTreeMap::new(),
                remove: managed.keys().cloned().collect::<BTreeSet<_>>(),
                aliases: managed
                    .iter()
                    .filter(|(_, m)| m.alias)
                    .map(|(h, _)| h.clone())
                    .collect(),
            },
            expiries: BTreeMap::new(),
        }
    }

    /// Records a successful delivery in the state: what we now manage at `path`, and until when.
    /// Only ECR hosts and the job's aliases (marked as such) are ever ours to remember.
    pub fn record(&self, state: &mut State, path: &Path) {
        let entry = state.targets.entry(path.to_path_buf()).or_default();
        for host in &self.desired.remove {
            entry.remove(host);
        }
        for (host, at) in &self.expiries {
            if !self.desired.set.contains_key(host) {
                continue;
            }
            if Registry::parse(host).is_ok() {
                entry.insert(host.clone(), Managed::new(*at));
            } else if self.desired.aliases.contains(host) {
                entry.insert(host.clone(), Managed::alias(*at));
            }
        }
        if entry.is_empty() {
            state.targets.remove(path);
        }
    }
}

/// Why a delivery failed; each kind of consumer has its own errors, the core only shows them.
pub type DeliveryError = Box<dyn std::error::Error + Send + Sync>;

/// Something that receives credentials. `deliver` runs on a blocking thread and may block (a hung
/// file system blocks only its own delivery); `Ok(true)` when something changed.
pub trait Consumer: Send + Sync + 'static {
    /// Makes the consumer hold what `job` says.
    fn deliver(&self, job: &Job) -> Result<bool, DeliveryError>;
}
