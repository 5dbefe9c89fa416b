//! The one way every command starts: which config (a file, or this instance's own registry), exit
//! codes, and the cleanup of temp files a crash left. Used by `run`, `once`, `check` and reloads.

use std::path::{Path, PathBuf};

use crate::config::{self, ConfigError, InstanceHostError, Settings, SystemAccounts};
use crate::ecr::token::{self, IdentityError};
use crate::safe_fs;
use crate::targets::files::owner_policy;

/// Exit codes, for every command.
pub mod exit {
    /// Everything worked (`status`: every token valid, no failure).
    pub const OK: u8 = 0;
    /// Something failed, what worked is done; `check` found warnings (`status`: a refresh is
    /// failing while every token is still valid).
    pub const FAILED: u8 = 1;
    /// The config is invalid, or missing with no instance metadata (`status`: a registry has no
    /// valid token).
    pub const CONFIG: u8 = 2;
    /// `status` and the other clients: no daemon answered.
    pub const UNKNOWN: u8 = 3;
    /// `status` and the other clients: a daemon is there, but this user may not ask it.
    pub const DENIED: u8 = 4;
}

/// Why no settings could be had.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no settings in {} and no instance identity to fall back on ({source}); write a config file (see config.example.toml)", path.display())]
    NoIdentity {
        path: PathBuf,
        #[source]
        source: IdentityError,
    },
    #[error(transparent)]
    InstanceHost(#[from] InstanceHostError),
    /// A blocking task that read the config did not finish (the runtime is stopping).
    #[error("reading the config was interrupted")]
    Interrupted,
}

/// Where the settings come from, keyed on the config path that was asked for (`--config`, or
/// the default): the daemon watches and reloads that path, whichever way it is used now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The config file asked for, absolute.
    pub path: PathBuf,
    /// Named on the command line (then it must exist).
    pub explicit: bool,
    /// Log the config's warnings as it is read (`check` prints them in its report instead).
    pub log_warnings: bool,
}

impl Source {
    /// The source asked for on the command line.
    pub fn of(config: Option<&Path>) -> Source {
        match config {
            // Absolute, so the daemon can watch its directory and reload it after a chdir.
            Some(p) => Source {
                path: std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()),
                explicit: true,
                log_warnings: true,
            },
            None => Source {
                path: PathBuf::from(config::DEFAULT_CONFIG),
                explicit: false,
                log_warnings: true,
            },
        }
    }

    /// The same source, whose warnings are left to the caller to show.
    pub fn quiet(self) -> Source {
        Source {
            log_warnings: false,
            ..self
        }
    }

    /// The settings in the file, or `None` when it says nothing: every line commented out (as
    /// packaged), or the default file missing. Then this instance's own registry applies.
    pub fn read(&self) -> Result<Option<Settings>, ConfigError> {
        match config::load(&self.path, &SystemAccounts) {
            Ok(settings) => {
                if self.log_warnings {
                    config::log_warnings(&settings);
                }
                Ok(Some(settings))
            }
            Err(ConfigError::Read { source, .. })
                if !self.explicit && source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            Err(ConfigError::Empty { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The settings: the file's, or the instance default from IMDSv2.
    pub async fn load(&self) -> Result<Settings, StartupError> {
        match self.read()? {
            Some(s) => Ok(s),
            None => self.instance_default().await,
        }
    }

    /// One registry, this instance's, in root's docker config.
    pub async fn instance_default(&self) -> Result<Settings, StartupError> {
        let (account, region) =
            token::instance_identity()
                .await
                .map_err(|source| StartupError::NoIdentity {
                    path: self.path.clone(),
                    source,
                })?;
        let settings = config::zero_config(&account, &region)?;
        tracing::info!(
            registry = %settings.registries[0].host,
            target = config::DEFAULT_TARGET,
            "no settings in {}: using this instance's own registry",
            self.path.display()
        );
        Ok(settings)
    }
}

/// Removes temp files a crash of ours left beside each target (blocking).
pub fn remove_stray_temp_files(settings: &Settings) {
    for t in &settings.targets {
        match safe_fs::remove_stray_temp_files(&t.path, owner_policy(t)) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(target_path = %t.path.display(), removed = n, "removed temp files left by an earlier crash")
            }
            Err(e) => tracing::debug!(error = %e, "cannot look for stray temp files"),
        }
    }
}
