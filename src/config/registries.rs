//! The `[[registry]]` tables: the hosts, how each one's token is fetched, where it is written.

use std::collections::{BTreeSet, HashSet};

use toml::Spanned;

use super::RegistryTargets;
use super::alias;
use super::check::Checker;
use super::raw::RawRegistry;
use super::{CredentialSource, Grant, RegistrySettings, TargetSettings, UserSpec};
use crate::ecr::registry::{ACCEPTED_SHAPES, Registry};

/// Validates every `[[registry]]` (at least one), whose `targets` name entries of `targets`.
pub(super) fn registries(
    c: &mut Checker,
    raw: &[Spanned<RawRegistry>],
    targets: &[TargetSettings],
) -> Vec<RegistrySettings> {
    let mut registries = Vec::new();
    let mut hosts = BTreeSet::new();
    if raw.is_empty() {
        c.error(
            0..0,
            "no [[registry]]: list at least one, e.g.\n  [[registry]]\n  host = \"123456789012.dkr.ecr.us-east-1.amazonaws.com\"",
        );
    }
    for r in raw {
        let r = r.get_ref();
        let host = r.host.get_ref().clone();
        let registry = match Registry::parse(&host) {
            Ok(reg) => Some(reg),
            Err(e) => {
                c.error(
                    r.host.span(),
                    format!("invalid registry host {host:?}: {e}\n{ACCEPTED_SHAPES}"),
                );
                None
            }
        };
        if !hosts.insert(host.clone()) {
            c.error(r.host.span(), format!("duplicate registry host {host:?}"));
        }
        let aliases = aliases(c, r, &mut hosts);
        let credentials = credentials(c, r);
        let endpoint_url = endpoint_url(c, r);
        let target_names = target_names(c, r, targets);
        let grants = grants(c, r, &target_names, targets);
        if let Some(registry) = registry {
            registries.push(RegistrySettings {
                host,
                aliases,
                registry,
                credentials,
                endpoint_url,
                targets: target_names,
                grants,
            });
        }
    }
    registries
}

/// Each alias once, valid, and named by no other registry (as its host or an alias).
fn aliases(c: &mut Checker, r: &RawRegistry, names: &mut BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    for a in r.aliases.iter().flat_map(|l| l.get_ref()) {
        let alias = a.get_ref();
        if let Err(why) = alias::check(alias) {
            c.error(a.span(), format!("invalid alias {alias:?}: {why}"));
        } else if !names.insert(alias.clone()) {
            c.error(
                a.span(),
                format!(
                    "{alias:?} is already a registry host or alias: a name can hold one credential"
                ),
            );
        } else {
            if let Some(port) = alias::unprivileged_loopback_port(alias) {
                c.warning(
                    a.span(),
                    format!(
                        "alias {alias:?} is on this machine's loopback at port {port}: any local user who listens there before the mirror does is sent this registry's credential by docker and podman"
                    ),
                );
            }
            out.push(alias.clone());
        }
    }
    out
}

/// `users` and `groups`, plus the `user` of every target the registry is written to (they can
/// read the credential in their own file anyway).
fn grants(
    c: &mut Checker,
    r: &RawRegistry,
    covered: &RegistryTargets,
    targets: &[TargetSettings],
) -> Grant {
    let mut g = Grant::default();
    let mut names = |key: &str, v: &Option<Spanned<Vec<Spanned<String>>>>| -> Vec<String> {
        let mut out = Vec::new();
        for n in v.iter().flat_map(|l| l.get_ref()) {
            let s = n.get_ref().trim();
            if s.is_empty() || s.contains(char::is_whitespace) {
                c.error(
                    n.span(),
                    format!(
                        "{key}: {:?} is not a user or group name or number",
                        n.get_ref()
                    ),
                );
            } else if !out.iter().any(|o: &String| o == s) {
                out.push(s.to_string());
            }
        }
        out
    };
    for u in names("users", &r.users) {
        g.users.push(UserSpec {
            uid: u.parse::<u32>().ok(),
            name: u,
        });
    }
    g.groups = names("groups", &r.groups);
    for t in targets.iter().filter(|t| covered.covers(&t.name)) {
        if let Some(u) = &t.user
            && !g.users.contains(u)
        {
            g.users.push(u.clone());
        }
    }
    g
}

/// The profile and the role to assume, if any.
fn credentials(c: &mut Checker, r: &RawRegistry) -> CredentialSource {
    let role_arn = c.non_empty("role_arn", &r.role_arn);
    if let (Some(arn), Some(v)) = (&role_arn, &r.role_arn)
        && !(arn.starts_with("arn:") && arn.contains(":role/"))
    {
        c.error(
            v.span(),
            format!("role_arn must look like arn:aws:iam::123456789012:role/NAME, found {arn:?}"),
        );
    }
    for (key, v) in [
        ("external_id", &r.external_id),
        ("session_name", &r.session_name),
    ] {
        if let Some(v) = v
            && role_arn.is_none()
        {
            c.error(
                v.span(),
                format!("{key} needs role_arn in the same [[registry]]"),
            );
        }
    }
    let external_id = c.non_empty("external_id", &r.external_id);
    let session_name = c.non_empty("session_name", &r.session_name);
    if let (Some(s), Some(v)) = (&session_name, &r.session_name)
        && (s.len() < 2
            || s.len() > 64
            || !s
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "=,.@-_".contains(ch)))
    {
        c.error(
            v.span(),
            "session_name must be 2 to 64 characters of letters, digits and =,.@-_",
        );
    }
    let profile = c.non_empty("profile", &r.profile);
    CredentialSource {
        profile,
        role_arn,
        external_id,
        session_name,
    }
}

/// An endpoint override: https://, or http:// with a warning.
fn endpoint_url(c: &mut Checker, r: &RawRegistry) -> Option<String> {
    let endpoint_url = c.non_empty("endpoint_url", &r.endpoint_url);
    if let (Some(u), Some(v)) = (&endpoint_url, &r.endpoint_url)
        && !(u.starts_with("https://") || u.starts_with("http://"))
    {
        c.error(
            v.span(),
            format!("endpoint_url must start with https:// (or http://), found {u:?}"),
        );
    } else if let (Some(u), Some(v)) = (&endpoint_url, &r.endpoint_url)
        && u.starts_with("http://")
    {
        c.warning(
            v.span(),
            format!(
                "endpoint_url {u:?} is plain http://: the token and the signed request travel unencrypted; use https:// outside tests"
            ),
        );
    }
    endpoint_url
}

/// The targets this registry is written to: those it names (each once), or all of them.
fn target_names(c: &mut Checker, r: &RawRegistry, targets: &[TargetSettings]) -> RegistryTargets {
    match &r.targets {
        None => RegistryTargets::All,
        Some(list) => {
            if list.get_ref().is_empty() {
                c.error(
                    list.span(),
                    "targets must not be empty (leave it out for every target)",
                );
            }
            let mut seen = HashSet::new();
            let mut out = Vec::new();
            for n in list.get_ref() {
                if !targets.iter().any(|t| &t.name == n.get_ref()) {
                    let known: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
                    c.error(
                        n.span(),
                        format!(
                            "unknown target {:?}; targets are: {}",
                            n.get_ref(),
                            known.join(", ")
                        ),
                    );
                } else if seen.insert(n.get_ref().clone()) {
                    out.push(n.get_ref().clone());
                }
            }
            RegistryTargets::Only(out)
        }
    }
}
