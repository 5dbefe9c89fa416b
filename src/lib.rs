//! ecr-refresherd: keeps Amazon ECR logins fresh in docker and podman auth files.
//!
//! The layout follows the data: `config` (the TOML file into validated settings), `ecr` (registry
//! hosts, token groups and the sources of tokens), `daemon` (the pure core of rules, the loop that
//! performs its actions, the control socket, file watching, systemd), `targets` (the consumers of
//! tokens: auth-file format, what each should hold, what we manage), `portainer` (Portainer's
//! registry records, kept fresh through its API), `safe_fs` (reading and
//! replacing files as root where users own the directories), `commands` (the one-shot commands and
//! the socket clients). docs/ARCHITECTURE.md draws the picture. The public API is what the binary,
//! the fuzz targets and the black-box tests use; everything else is `pub(crate)`.
#![deny(missing_docs)]

pub mod cli;
pub(crate) mod clock;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod ecr;
pub(crate) mod escape;
pub(crate) mod logging;
pub mod metrics;
pub(crate) mod portainer;
pub(crate) mod redact;
pub(crate) mod safe_fs;
pub(crate) mod startup;
pub(crate) mod status;
pub(crate) mod swarm;
pub mod targets;
