//! ecr-refresherd: keeps Amazon ECR logins fresh in docker and podman auth files.

pub mod atomic;
pub mod authfile;
pub mod check;
pub mod cli;
pub mod client;
pub mod clock;
pub mod commands;
pub mod config;
pub mod control;
pub mod daemon;
pub mod escape;
pub mod logging;
pub mod refresh;
pub mod registry;
pub mod schedule;
pub mod state;
pub mod status;
pub mod systemd;
pub mod token;
pub mod watch;
