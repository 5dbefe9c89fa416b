//! Image references as docker reads them: `[host[:port]/]path[:tag][@digest]`, normalised (pure).
//!
//! The grammar and the normalisation are those of distribution/reference (`reference.go`,
//! `normalize.go`), which docker, podman (containers/image) and kubelet share: a first component
//! is a host only when it holds a `.` or a `:`, is `localhost`, or has an upper-case letter;
//! otherwise the image is on Docker Hub (`docker.io`, `library/` for one-component names).

use std::fmt;

/// Docker Hub's canonical host, as references name it.
pub const DOCKER_HUB: &str = "docker.io";
/// The longest name (host and path) distribution accepts.
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// What the image is pinned to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// A tag (`latest` when the reference names none).
    Tag(String),
    /// A digest (`sha256:...`); a tag given with it is ignored by the registry, as by docker.
    Digest { digest: String, tag: Option<String> },
}

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The registry host, with its port if one was given (`docker.io` for Docker Hub).
    pub host: String,
    /// The repository inside the registry (`library/nginx` for `nginx`).
    pub repository: String,
    pub pin: Pin,
}

impl Reference {
    /// What the manifest is fetched by: the digest if there is one, else the tag.
    pub fn manifest_ref(&self) -> &str {
        match &self.pin {
            Pin::Tag(t) => t,
            Pin::Digest { digest, .. } => digest,
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.repository)?;
        match &self.pin {
            Pin::Tag(t) => write!(f, ":{t}"),
            Pin::Digest { digest, tag } => {
                if let Some(t) = tag {
                    write!(f, ":{t}")?;
                }
                write!(f, "@{digest}")
            }
        }
    }
}

/// Why a reference is not one docker would pull. Says which part is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ReferenceError {
    pub input: String,
    pub reason: String,
}

/// Parses and normalises `input` the way `docker pull` does.
pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
    let err = |reason: &str| ReferenceError {
        input: input.chars().take(300).collect(),
        reason: reason.to_string(),
    };
    if input.is_empty() {
        return Err(err("it is empty"));
    }
    if input.len() == 64 && input.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err(
            "a 64-character hexadecimal string is an image id, not a name",
        ));
    }
    if input.contains("://") {
        return Err(err(
            "give the image without a scheme (host/repository:tag, not https://...)",
        ));
    }
    // name [":" tag] ["@" digest]: the digest after the last '@', the tag after the last ':'
    // that follows the last '/' (a ':' before it is the host's port).
    let (rest, digest) = match input.rsplit_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (input, None),
    };
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(d) = digest {
        check_digest(d).map_err(|r| err(&r))?;
    }
    if let Some(t) = tag {
        check_tag(t).map_err(|r| err(&r))?;
    }
    if name.is_empty() {
        return Err(err("the repository name is missing"));
    }
    if name.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(err("the name is longer than 255 characters"));
    }
    let (host, path) = split_host(name);
    if let Some(h) = host {
        check_host(h).map_err(|r| err(&r))?;
    }
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(err("repository names must be lowercase"));
    }
    check_path(path).map_err(|r| err(&r))?;
    let host = match host {
        None | Some("index.docker.io") => DOCKER_HUB.to_string(),
        Some(h) => h.to_ascii_lowercase(),
    };
    let repository = if host == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_string()
    };
    let pin = match (digest, tag) {
        (Some(d), t) => Pin::Digest {
            digest: d.to_string(),
            tag: t.map(str::to_string),
        },
        (None, Some(t)) => Pin::Tag(t.to_string()),
        (None, None) => Pin::Tag("latest".into()),
    };
    Ok(Reference {
        host,
        repository,
        pin,
    })
}

/// docker's `splitDockerDomain`: the first component is a host when it holds `.` or `:`, is
/// `localhost`, or is not all lower case.
fn split_host(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

/// `host [":" port]`: DNS labels, an IPv4 address or a bracketed IPv6 address.
fn check_host(h: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = h.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return Err(format!("host {h:?}: an IPv6 address needs its closing ']'"));
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("host {h:?}: {v6:?} is not an IPv6 address"));
        }
        match after {
            "" => return Ok(()),
            p => match p.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return Err(format!("host {h:?}: unexpected {p:?} after ']'")),
            },
        }
    } else {
        match h.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(h), None),
        }
    };
    if let Some(host) = host {
        let ok = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !ok {
            return Err(format!(
                "host {h:?}: use letters, digits, '-' and '.' (labels may not start or end with '-')"
            ));
        }
    }
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("host {h:?}: the port {port:?} is not a number"));
    }
    Ok(())
}

/// `path-component ['/' path-component]*`, each `[a-z0-9]+` joined by `.`, `_`, `__` or `-`+.
fn check_path(path: &str) -> Result<(), String> {
    for component in path.split('/') {
        if component.is_empty() {
            return Err(format!(
                "repository {path:?}: empty path component (a doubled or trailing '/')"
            ));
        }
        if !valid_component(component) {
            return Err(format!(
                "repository {path:?}: component {component:?} must be lowercase letters and digits, separated by '.', '_', '__' or '-'"
            ));
        }
    }
    Ok(())
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !b.first().copied().is_some_and(alnum) || !b.last().copied().is_some_and(alnum) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator: '.', '_', '__', or one or more '-'.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}`.
fn check_tag(t: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let ok = t.len() <= 128
        && t.chars().next().is_some_and(word)
        && t.chars().all(|c| word(c) || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {:?}: up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'",
            t.chars().take(140).collect::<String>()
        ))
    }
}

/// `algorithm ":" hex`, the hex at least 32 digits (64 for sha256, as registries check).
fn check_digest(d: &str) -> Result<(), String> {
    let Some((alg, hex)) = d.split_once(':') else {
        return Err(format!(
            "digest {d:?}: expected algorithm:hex, e.g. sha256:..."
        ));
    };
    let alg_ok = !alg.is_empty()
        && alg.split(['+', '.', '-', '_']).all(|c| {
            c.chars().next().is_some_and(|x| x.is_ascii_alphabetic())
                && c.chars().all(|x| x.is_ascii_alphanumeric())
        });
    let hex_ok = hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    if !alg_ok || !hex_ok {
        return Err(format!(
            "digest {d:?}: expected algorithm:hex, e.g. sha256:<64 hex digits>"
        ));
    }
    if alg == "sha256" && (hex.len() != 64 || hex.bytes().any(|b| b.is_ascii_uppercase())) {
        return Err(format!(
            "digest {d:?}: a sha256 digest is 64 lowercase hex digits"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn ok(input: &str) -> (String, String, Pin) {
        let r = parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        (r.host, r.repository, r.pin)
    }

    fn tag(t: &str) -> Pin {
        Pin::Tag(t.into())
    }

    #[test]
    fn docker_hub_names_are_normalised_as_docker_does() {
        let hub = |repo: &str, p: Pin| (DOCKER_HUB.to_string(), repo.to_string(), p);
        assert_eq!(ok("nginx"), hub("library/nginx", tag("latest")));
        assert_eq!(ok("nginx:1.27"), hub("library/nginx", tag("1.27")));
        assert_eq!(ok("docker.io/nginx"), hub("library/nginx", tag("latest")));
        assert_eq!(
            ok("index.docker.io/nginx"),
            hub("library/nginx", tag("latest"))
        );
        assert_eq!(
            ok("portainer/agent:2.21"),
            hub("portainer/agent", tag("2.21"))
        );
        assert_eq!(
            ok("docker.io/library/nginx"),
            hub("library/nginx", tag("latest"))
        );
        assert_eq!(ok("a/b/c"), hub("a/b/c", tag("latest")));
    }

    #[test]
    fn a_first_component_is_a_host_when_docker_says_so() {
        let ecr = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
        assert_eq!(
            ok(&format!("{ecr}/team/app:v1")),
            (ecr.into(), "team/app".into(), tag("v1"))
        );
        assert_eq!(
            ok("localhost/app"),
            ("localhost".into(), "app".into(), tag("latest"))
        );
        assert_eq!(
            ok("mirror:5000/app"),
            ("mirror:5000".into(), "app".into(), tag("latest"))
        );
        assert_eq!(
            ok("Mirror/app"),
            ("mirror".into(), "app".into(), tag("latest")),
            "an upper-case first component is a host (lower-cased, as DNS is)"
        );
        assert_eq!(
            ok("[::1]:5000/app:v2"),
            ("[::1]:5000".into(), "app".into(), tag("v2"))
        );
        assert_eq!(
            ok("10.0.0.1:5000/a/b"),
            ("10.0.0.1:5000".into(), "a/b".into(), tag("latest"))
        );
        assert_eq!(
            ok("public.ecr.aws/docker/library/redis:7"),
            (
                "public.ecr.aws".into(),
                "docker/library/redis".into(),
                tag("7")
            )
        );
    }

    #[test]
    fn digests_with_and_without_tags() {
        let ecr = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
        let (h, r, p) = ok(&format!("{ecr}/app@{D}"));
        assert_eq!((h.as_str(), r.as_str()), (ecr, "app"));
        assert_eq!(
            p,
            Pin::Digest {
                digest: D.into(),
                tag: None
            }
        );
        let r = parse(&format!("{ecr}/app:v1@{D}")).unwrap();
        assert_eq!(r.manifest_ref(), D, "the digest wins over the tag");
        assert_eq!(r.to_string(), format!("{ecr}/app:v1@{D}"));
        assert_eq!(parse("app:v3").unwrap().manifest_ref(), "v3");
    }

    #[test]
    fn malformed_references_say_which_part_is_wrong() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("https://host/app", "scheme"),
            ("Host/App", "lowercase"),
            ("library/NGINX", "lowercase"),
            ("app:", "tag \"\""),
            ("app:.v1", "tag"),
            (&format!("app:{}", "a".repeat(129)), "tag"),
            ("app@sha256:abc", "sha256"),
            ("app@md5", "algorithm:hex"),
            (
                &format!("app@{}", D.to_uppercase().replace("SHA256", "sha256")),
                "lowercase hex",
            ),
            ("host.example/a//b", "empty path component"),
            ("host.example/a/", "empty path component"),
            ("host.example/-a", "component \"-a\""),
            ("host.example/a..b", "component \"a..b\""),
            ("host.example/a___b", "component \"a___b\""),
            ("host.example:port/a", "not a number"),
            ("-host.example/a", "labels may not start"),
            ("host_x.example/a", "letters, digits"),
            ("[::1/a", "closing"),
            ("[zz]:5000/a", "not an IPv6"),
            (&"0123456789abcdef".repeat(4), "image id"),
            (&format!("h.example/{}", "a".repeat(250)), "255"),
        ];
        for (input, want) in cases {
            let e = parse(input).expect_err(input).to_string();
            assert!(e.contains(want), "{input:?}: {e:?} does not say {want:?}");
        }
    }

    #[test]
    fn separators_follow_the_grammar() {
        for good in ["a.b", "a_b", "a__b", "a-b", "a---b", "a1.b2_c3__d4-e5", "0"] {
            assert!(valid_component(good), "{good}");
        }
        for bad in [
            "", ".a", "a.", "_a", "a_", "a.-b", "a-.b", "a..b", "a___b", "A",
        ] {
            assert!(!valid_component(bad), "{bad}");
        }
    }
}
