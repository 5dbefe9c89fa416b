//! The `[[target]]` tables: the auth files to write, each with its owner and mode.

use std::collections::HashSet;
use std::path::PathBuf;

use toml::Spanned;

use super::check::Checker;
use super::raw::RawTarget;
use super::{DEFAULT_TARGET, TargetSettings, UserSpec};

/// Validates every `[[target]]`; none at all means root's docker config.
pub(super) fn targets(c: &mut Checker, raw: &[Spanned<RawTarget>]) -> Vec<TargetSettings> {
    let mut targets = Vec::new();
    let mut names = HashSet::new();
    let mut paths = HashSet::new();
    for t in raw {
        let span = t.span();
        let t = t.get_ref();
        let path = c.absolute_path("path", &t.path);
        if path.file_name().is_none() || t.path.get_ref().ends_with('/') {
            c.error(t.path.span(), "path must name a file, not a directory");
        }
        let name = match &t.name {
            Some(n) if n.get_ref().trim().is_empty() => {
                c.error(n.span(), "name must not be empty");
                n.get_ref().clone()
            }
            Some(n) => n.get_ref().clone(),
            None => t.path.get_ref().clone(),
        };
        let new_path = paths.insert(path.clone());
        if !names.insert(name.clone()) && (t.name.is_some() || new_path) {
            let at = t.name.as_ref().map_or(span.clone(), |n| n.span());
            c.error(at, format!("duplicate target name {name:?}"));
        }
        if !new_path {
            c.error(
                t.path.span(),
                format!("duplicate target path {:?}", t.path.get_ref()),
            );
        }
        let user = t.user.as_ref().and_then(|v| user(c, v));
        let mode = t.mode.as_ref().and_then(|v| mode(c, v));
        targets.push(TargetSettings {
            name,
            path,
            user,
            mode,
        });
    }
    if raw.is_empty() {
        targets.push(TargetSettings {
            name: DEFAULT_TARGET.to_string(),
            path: PathBuf::from(DEFAULT_TARGET),
            user: None,
            mode: None,
        });
    }
    targets
}

/// A name or a uid; a name is looked up at each write, not here.
fn user(c: &mut Checker, v: &Spanned<String>) -> Option<UserSpec> {
    let s = v.get_ref().trim();
    if s.is_empty() {
        c.error(v.span(), "user must not be empty");
        return None;
    }
    Some(UserSpec {
        name: s.to_string(),
        uid: s.parse::<u32>().ok(),
    })
}

/// An octal mode that lets no one but the owner (and root) replace the credentials.
fn mode(c: &mut Checker, v: &Spanned<String>) -> Option<u32> {
    let m = parse_mode(v.get_ref());
    match m {
        None => c.error(
            v.span(),
            format!(
                "mode must be an octal string up to \"0777\", like \"0600\"; found {:?}",
                v.get_ref()
            ),
        ),
        Some(m) if m & 0o022 != 0 => c.error(
            v.span(),
            format!(
                "mode {m:04o} would let others replace the credentials (group or other write); use \"0600\", or \"0640\" to let a group read"
            ),
        ),
        Some(_) => {}
    }
    m.filter(|m| m & 0o022 == 0)
}

pub(super) fn parse_mode(s: &str) -> Option<u32> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return None;
    }
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o777)
}
