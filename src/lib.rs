//! ecr-refresherd: keeps Amazon ECR logins fresh in docker and podman auth files.

pub mod atomic;
pub mod authfile;
pub mod check;
pub mod cli;
pub mod commands;
pub mod config;
pub mod logging;
pub mod refresh;
pub mod registry;
pub mod state;
pub mod token;
