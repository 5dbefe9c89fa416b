//! The consumers of tokens, today auth files: their format, safe writes as root, diagnosis, and
//! what the daemon manages in them.

pub mod authfile;
pub mod consumer;
pub mod diagnose;
pub mod files;
pub mod state;
