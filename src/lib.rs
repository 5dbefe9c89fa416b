//! ecr-refresherd: keeps Amazon ECR logins fresh in docker and podman auth files.
//!
//! The layout follows the data: `config` (the TOML file into validated settings), `ecr` (registry
//! hosts, token groups and the sources of tokens), `daemon` (the pure core of rules, the loop that
//! performs its actions, the control socket, file watching, systemd), `targets` (the consumers of
//! tokens: auth-file format, safe writes as root, diagnosis, what we manage), `commands` (the
//! one-shot commands and the socket clients). docs/ARCHITECTURE.md draws the picture.

pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod ecr;
pub mod escape;
pub mod logging;
pub mod safe_fs;
pub mod startup;
pub mod status;
pub mod targets;
