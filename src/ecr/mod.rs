//! Amazon ECR: registry host shapes, token groups, tokens and where they come from.

pub mod registry;
pub(crate) mod token;
