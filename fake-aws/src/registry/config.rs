//! What the fake registry serves: its addresses, certificate, repositories and denied ones.

use std::net::SocketAddr;
use std::str::FromStr;

use crate::RegistryError;
use crate::image::ManifestFormat;

/// Why the principal may not call `ecr:BatchGetImage` on a repository (`--deny-repo NAME=KIND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Deny {
    /// No identity-based policy allows it (the usual case: the role lacks the permission).
    Identity,
    /// No resource-based policy allows it (a cross-account pull the repository policy lacks).
    Resource,
    /// An identity-based policy denies it explicitly.
    ExplicitIdentity,
    /// The repository policy denies it explicitly.
    ExplicitResource,
}

impl Deny {
    /// The end of IAM's message after the resource ARN.
    pub(super) fn reason(self, action: &str) -> String {
        match self {
            Deny::Identity => {
                format!("because no identity-based policy allows the {action} action")
            }
            Deny::Resource => {
                format!("because no resource-based policy allows the {action} action")
            }
            Deny::ExplicitIdentity => {
                "with an explicit deny in an identity-based policy".to_string()
            }
            Deny::ExplicitResource => {
                "with an explicit deny in a resource-based policy".to_string()
            }
        }
    }

    /// The name `--deny-repo` takes.
    pub fn name(self) -> &'static str {
        match self {
            Deny::Identity => "identity",
            Deny::Resource => "resource",
            Deny::ExplicitIdentity => "explicit-identity",
            Deny::ExplicitResource => "explicit-resource",
        }
    }
}

impl FromStr for Deny {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "identity" => Ok(Deny::Identity),
            "resource" => Ok(Deny::Resource),
            "explicit-identity" => Ok(Deny::ExplicitIdentity),
            "explicit-resource" => Ok(Deny::ExplicitResource),
            other => Err(format!(
                "unknown deny kind {other:?} (expected identity, resource, explicit-identity or \
                 explicit-resource)"
            )),
        }
    }
}

/// One repository and tag the fake registry holds: `NAME:TAG`, optionally `NAME:TAG=oci` or
/// `NAME:TAG=docker` (the default) for the manifest format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoTag {
    /// Repository name, e.g. `team/app` (ECR's rules: lowercase, digits, `._-` separators, `/`).
    pub repository: String,
    /// Tag, e.g. `v1`.
    pub tag: String,
    /// Manifest format of the image under this tag.
    pub format: ManifestFormat,
}

impl FromStr for RepoTag {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (rest, format) = match s.rsplit_once('=') {
            Some((r, "oci")) => (r, ManifestFormat::Oci),
            Some((r, "docker")) => (r, ManifestFormat::Docker),
            Some((_, f)) => return Err(format!("{s:?}: unknown format {f:?} (docker or oci)")),
            None => (s, ManifestFormat::Docker),
        };
        let Some((repository, tag)) = rest.rsplit_once(':') else {
            return Err(format!("{s:?} is not NAME:TAG"));
        };
        if !valid_repository(repository) {
            return Err(format!(
                "{repository:?} is not an ECR repository name (lowercase letters, digits, \
                 '.', '_', '-' between them, '/' between components)"
            ));
        }
        if !valid_tag(tag) {
            return Err(format!(
                "{tag:?} is not a tag ([A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})"
            ));
        }
        Ok(RepoTag {
            repository: repository.to_string(),
            tag: tag.to_string(),
            format,
        })
    }
}

/// ECR's repository name pattern `(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*`.
pub(crate) fn valid_repository(name: &str) -> bool {
    name.len() <= 256
        && name.split('/').all(|component| {
            let b = component.as_bytes();
            !b.is_empty()
                && b.first().is_some_and(u8::is_ascii_alphanumeric)
                && b.last().is_some_and(u8::is_ascii_alphanumeric)
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
                && !b
                    .windows(2)
                    .any(|w| b"._-".contains(&w[0]) && b"._-".contains(&w[1]))
        })
}

fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    (1..=128).contains(&b.len())
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

/// What [`crate::FakeAws::start_registry`] serves.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// The registry's loopback address, e.g. `127.0.0.2:443` (port 0 picks one).
    pub registry: SocketAddr,
    /// The layer storage's loopback address, if it is to be served at all (leave it out and the
    /// redirects point at a host nobody answers: the "no S3 gateway endpoint" case).
    pub storage: Option<SocketAddr>,
    /// The scheme, host and optional port the blob redirects point at, e.g.
    /// `https://prod-us-east-1-starport-layer-bucket.s3.us-east-1.amazonaws.com`. Default:
    /// `https://STORAGE-ADDR` when a storage listener runs, else ECR's bucket host for the
    /// region of the request's `Host`.
    pub storage_url: Option<String>,
    /// PEM certificate chain (leaf first) both listeners serve.
    pub cert_pem: Vec<u8>,
    /// PEM private key of the leaf.
    pub key_pem: Vec<u8>,
    /// Repositories and tags that exist.
    pub repos: Vec<RepoTag>,
    /// Repositories whose `ecr:BatchGetImage` is denied, and how.
    pub deny: Vec<(String, Deny)>,
}

/// `https://host[:port]` without a trailing `/`; no query, no fragment, no user info.
pub(super) fn normalize_storage_url(u: &str) -> Result<String, RegistryError> {
    let bad = |why: &str| RegistryError::Config(format!("storage URL {u:?}: {why}"));
    let rest = u
        .strip_prefix("https://")
        .ok_or_else(|| bad("must start with https://"))?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err(bad("has no host"));
    }
    if rest.contains(['?', '#', '@', ' ']) || rest.chars().any(char::is_control) {
        return Err(bad(
            "must be https://HOST[:PORT][/PREFIX] without query or user",
        ));
    }
    Ok(format!("https://{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_tags() {
        let r: RepoTag = "team/app:v1".parse().unwrap();
        assert_eq!((r.repository.as_str(), r.tag.as_str()), ("team/app", "v1"));
        assert_eq!(r.format, ManifestFormat::Docker);
        let r: RepoTag = "app:latest=oci".parse().unwrap();
        assert_eq!(r.format, ManifestFormat::Oci);
        for bad in [
            "app", "App:v1", "app:", "a//b:v1", "a-:v1", "a:-v", "a:v=zip", "a__b:v",
        ] {
            assert!(bad.parse::<RepoTag>().is_err(), "{bad}");
        }
        assert!("a.b-c_d/e:V1.2_x".parse::<RepoTag>().is_ok());
    }

    #[test]
    fn deny_names_round_trip() {
        for d in [
            Deny::Identity,
            Deny::Resource,
            Deny::ExplicitIdentity,
            Deny::ExplicitResource,
        ] {
            assert_eq!(d.name().parse::<Deny>(), Ok(d));
        }
        assert!("nope".parse::<Deny>().is_err());
    }

    #[test]
    fn storage_urls() {
        assert_eq!(
            normalize_storage_url("https://b.s3.us-east-1.amazonaws.com/").unwrap(),
            "https://b.s3.us-east-1.amazonaws.com"
        );
        assert!(normalize_storage_url("https://b:8443").is_ok());
        for bad in ["http://b", "https://", "https://b/?x=1", "https://u@b"] {
            assert!(normalize_storage_url(bad).is_err(), "{bad}");
        }
    }
}
