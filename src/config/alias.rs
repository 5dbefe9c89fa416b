//! Registry aliases: the other names (mirrors, pull-through proxies) a registry's credential is
//! written and served under, and what such a name may look like.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::ecr::registry::Registry;

/// The most bytes a host name (with its port) may have.
const MAX_LEN: usize = 255;

/// Docker Hub's names: a credential written there would be sent to Docker Hub instead of its own.
const DOCKER_HUB: [&str; 4] = [
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

/// Checks an alias: a host name, IPv4 address or bracketed IPv6 address, in lower case, with an
/// optional port; no scheme, path or user; not an ECR host (that is a registry of its own) and
/// not Docker Hub. The error says what is wrong, for a message that shows the alias.
pub fn check(alias: &str) -> Result<(), String> {
    if alias.is_empty() {
        return Err("the alias is empty".into());
    }
    if alias.len() > MAX_LEN {
        return Err(format!("longer than {MAX_LEN} bytes"));
    }
    if alias.contains("://") || alias.contains('/') {
        return Err("write the host alone (host or host:port), without a scheme or a path".into());
    }
    if alias.contains('@') {
        return Err("a host has no user part".into());
    }
    if alias.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("write the host in lowercase".into());
    }
    let (host, port) = split_port(alias)?;
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p > 0 && !port.starts_with('0') => {}
            _ => return Err(format!("the port {port:?} is not a number from 1 to 65535")),
        }
    }
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').unwrap_or(inner);
        if inner.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{host:?} is not an IPv6 address"));
        }
        return Ok(());
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    if let Some(addr) = ipv4_shorthand(host) {
        return Err(format!(
            "{host:?} is a shorthand of the IPv4 address {addr}: the C library's resolver (podman's) reads it as that address, Go's (docker's) as a name; write {addr}"
        ));
    }
    dns_name(host)?;
    if Registry::parse(host).is_ok() {
        return Err(
            "this is an ECR registry host: list it as a [[registry]] of its own (its token is not this one's)"
                .into(),
        );
    }
    if DOCKER_HUB.contains(&host) {
        return Err(
            "this is Docker Hub: its pulls would be sent this registry's credential and fail"
                .into(),
        );
    }
    Ok(())
}

/// The port of a valid alias that reaches this machine (`localhost` and `*.localhost`, RFC 6761;
/// 127.0.0.0/8, `[::1]`, their IPv4-mapped forms, and the unspecified addresses `0.0.0.0` and
/// `[::]`, to which a connection goes to this machine) that any local user may listen on (1024
/// and above): whoever binds it first is sent the credential.
pub fn unprivileged_loopback_port(alias: &str) -> Option<u16> {
    let (host, port) = split_port(alias).ok()?;
    let port: u16 = port?.parse().ok()?;
    let local4 = |a: Ipv4Addr| a.is_loopback() || a.is_unspecified();
    let loopback = host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<Ipv4Addr>().is_ok_and(local4)
        || host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .and_then(|h| h.parse::<Ipv6Addr>().ok())
            .is_some_and(|a| {
                a.is_loopback() || a.is_unspecified() || a.to_ipv4_mapped().is_some_and(local4)
            });
    (loopback && port >= 1024).then_some(port)
}

/// The address a host that is not a dotted quad of decimals stands for in `inet_aton`'s
/// shorthand (one to four parts, each decimal, octal with a leading 0, or hex with 0x; the last
/// part fills the remaining bytes): `127.1`, `2130706433`, `0x7f.1`, `0177.0.0.1`.
fn ipv4_shorthand(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for p in &parts {
        let v = if let Some(hex) = p.strip_prefix("0x") {
            if hex.is_empty() {
                0
            } else {
                u32::from_str_radix(hex, 16).ok()?
            }
        } else if p.len() > 1 && p.starts_with('0') {
            u32::from_str_radix(&p[1..], 8).ok()?
        } else if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
            p.parse::<u32>().ok()?
        } else {
            return None;
        };
        values.push(v);
    }
    let (last, first) = values.split_last()?;
    let mut addr: u32 = 0;
    for (i, v) in first.iter().enumerate() {
        if *v > 0xff {
            return None;
        }
        addr |= v << (24 - 8 * i);
    }
    let room = 32 - 8 * first.len() as u32;
    if room < 32 && *last >> room != 0 {
        return None;
    }
    addr |= last;
    Some(Ipv4Addr::from(addr))
}

/// Splits `host[:port]`, `[v6]` and `[v6]:port`.
fn split_port(alias: &str) -> Result<(&str, Option<&str>), String> {
    if alias.starts_with('[') {
        let Some(end) = alias.find(']') else {
            return Err("an IPv6 address needs its closing ]".into());
        };
        let (host, rest) = alias.split_at(end + 1);
        return match rest {
            "" => Ok((host, None)),
            _ => match rest.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(format!("unexpected {rest:?} after the IPv6 address")),
            },
        };
    }
    match alias.split_once(':') {
        None => Ok((alias, None)),
        Some((_, port)) if port.contains(':') => {
            Err("an IPv6 address must be in brackets, e.g. [fd00::1]:5000".into())
        }
        Some((host, port)) => Ok((host, Some(port))),
    }
}

/// A DNS name: labels of 1 to 63 letters, digits and hyphens (not at either end), no empty label.
fn dns_name(host: &str) -> Result<(), String> {
    for label in host.split('.') {
        if label.is_empty() {
            return Err(format!("{host:?} has an empty label"));
        }
        if label.len() > 63 {
            return Err(format!("a label of {host:?} is longer than 63 bytes"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!(
                "{label:?} is not a DNS label (letters, digits and hyphens)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("the label {label:?} starts or ends with a hyphen"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_hosts_addresses_and_ports() {
        for ok in [
            "mirror.internal:5000",
            "mirror.internal",
            "localhost",
            "localhost:5000",
            "registry",
            "a-b.c-d.example",
            "10.0.0.7",
            "10.0.0.7:443",
            "[fd00::1]",
            "[fd00::1]:5000",
            "xn--bcher-kva.example",
            "pull-through.example.com:65535",
            // Names that only look numeric in part.
            "1.2.3.4.5",
            "999.1",
            "0x7g.example",
            "10.1.example",
            "mirror1",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn loopback_ports_any_user_may_bind_are_found() {
        for (alias, port) in [
            ("localhost:5000", Some(5000)),
            ("127.0.0.1:5000", Some(5000)),
            ("127.1.2.3:1024", Some(1024)),
            ("[::1]:8080", Some(8080)),
            ("localhost:443", None),
            ("127.0.0.1:1023", None),
            ("localhost", None),
            ("mirror.internal:5000", None),
            ("10.0.0.7:5000", None),
            ("[fd00::1]:5000", None),
            // A connection to the unspecified address reaches this machine.
            ("0.0.0.0:5000", Some(5000)),
            ("[::]:5000", Some(5000)),
            ("0.0.0.0:443", None),
            // IPv4-mapped loopback, and *.localhost (RFC 6761).
            ("[::ffff:127.0.0.1]:5000", Some(5000)),
            ("[::ffff:0.0.0.0]:8080", Some(8080)),
            ("[::ffff:10.0.0.7]:5000", None),
            ("mirror.localhost:5000", Some(5000)),
            ("localhost.example:5000", None),
        ] {
            assert_eq!(unprivileged_loopback_port(alias), port, "{alias}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_host_and_says_why() {
        for (bad, why) in [
            ("", "empty"),
            ("https://mirror.internal", "without a scheme"),
            ("mirror.internal/v2", "without a scheme or a path"),
            ("user@mirror.internal", "no user part"),
            ("Mirror.internal", "lowercase"),
            ("mirror.internal:0", "1 to 65535"),
            ("mirror.internal:65536", "1 to 65535"),
            ("mirror.internal:05000", "1 to 65535"),
            ("mirror.internal:", "1 to 65535"),
            ("mirror.internal:http", "1 to 65535"),
            ("fd00::1", "in brackets"),
            ("[fd00::1", "closing ]"),
            ("[fd00::zz]", "not an IPv6 address"),
            ("[fd00::1]x", "unexpected"),
            ("mirror..internal", "empty label"),
            (".mirror", "empty label"),
            ("mirror.", "empty label"),
            ("-mirror.internal", "hyphen"),
            ("mirror_1.internal", "not a DNS label"),
            ("mir ror", "not a DNS label"),
            ("mirror\n.internal", "not a DNS label"),
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com",
                "ECR registry host",
            ),
            ("public.ecr.aws", "ECR registry host"),
            ("docker.io", "Docker Hub"),
            ("index.docker.io", "Docker Hub"),
            // Shorthands the C library reads as an address, Go's resolver as a name.
            ("127.1:5000", "shorthand of the IPv4 address 127.0.0.1"),
            ("2130706433:5000", "shorthand of the IPv4 address 127.0.0.1"),
            ("0x7f.1", "shorthand of the IPv4 address 127.0.0.1"),
            ("0177.0.0.1:5000", "shorthand of the IPv4 address 127.0.0.1"),
            ("10.1", "shorthand of the IPv4 address 10.0.0.1"),
            ("0x0a000007", "shorthand of the IPv4 address 10.0.0.7"),
        ] {
            let e = check(bad).expect_err(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let long = format!("{}.example", "a".repeat(64));
        assert!(check(&long).expect_err("long label").contains("63"));
        let huge = "a.".repeat(130) + "b";
        assert!(check(&huge).expect_err("huge").contains("255"));
    }
}
