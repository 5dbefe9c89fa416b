//! The consumers of tokens, today auth files: their format, safe writes as root, diagnosis, and
//! what the daemon manages in them.

pub mod authfile;
pub(crate) mod consumer;
pub(crate) mod diagnose;
pub mod files;
pub mod state;
