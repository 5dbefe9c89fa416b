//! The `[[portainer]]` tables: Portainer instances whose registry records are kept fresh.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::check::Checker;
use super::raw::RawPortainer;

/// How often records are read back when the config does not say.
pub const DEFAULT_CHECK_EVERY: Duration = Duration::from_secs(300);
/// The shortest `check_every` (each check is two GETs).
pub const MIN_CHECK_EVERY: Duration = Duration::from_secs(1);
/// The longest `check_every`: a record edited in the UI stays wrong at most this long.
pub const MAX_CHECK_EVERY: Duration = Duration::from_secs(24 * 3600);

/// One Portainer instance, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortainerSettings {
    /// `https://host[:port][/prefix]`, without a trailing slash.
    pub url: String,
    /// The file holding an administrator's API key (root's, not readable by group or others).
    pub api_key_file: PathBuf,
    /// PEM certificates to trust instead of the system's (e.g. the CA of a self-signed one).
    pub ca_file: Option<PathBuf>,
    /// SHA-256 of the server certificate (DER) that alone is accepted.
    pub pin_sha256: Option<[u8; 32]>,
    /// Which registry records to keep fresh.
    pub records: RecordSelection,
    /// How often the records are read back (and healed).
    pub check_every: Duration,
}

/// The records of an instance this daemon keeps fresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordSelection {
    /// Every Custom record whose URL is a managed registry host.
    Matching,
    /// These record ids, in config order, each once.
    Only(Vec<u32>),
}

/// Validates every `[[portainer]]`.
pub(super) fn portainers(c: &mut Checker, raw: &[Spanned<RawPortainer>]) -> Vec<PortainerSettings> {
    let mut out = Vec::new();
    let mut urls = BTreeSet::new();
    for p in raw {
        let p = p.get_ref();
        let url = url(c, &p.url);
        if let Some(u) = &url
            && !urls.insert(u.clone())
        {
            c.error(p.url.span(), format!("duplicate [[portainer]] url {u:?}"));
        }
        let api_key_file = c.absolute_path("api_key_file", &p.api_key_file);
        let ca_file = p.ca_file.as_ref().map(|f| c.absolute_path("ca_file", f));
        let pin_sha256 = p.pin_sha256.as_ref().and_then(|v| pin(c, v));
        let records = match &p.registries {
            None => RecordSelection::Matching,
            Some(ids) => RecordSelection::Only(record_ids(c, ids)),
        };
        let check_every = c.duration_at_least(
            "check_every",
            &p.check_every,
            DEFAULT_CHECK_EVERY,
            MIN_CHECK_EVERY,
            MAX_CHECK_EVERY,
        );
        if let Some(url) = url {
            out.push(PortainerSettings {
                url,
                api_key_file,
                ca_file,
                pin_sha256,
                records,
                check_every,
            });
        }
    }
    out
}

/// An `https://` URL of Portainer's own (no user, query or fragment), without a trailing slash.
fn url(c: &mut Checker, v: &Spanned<String>) -> Option<String> {
    match parse_url(v.get_ref()) {
        Ok(u) => Some(u),
        Err(why) => {
            c.error(
                v.span(),
                format!(
                    "url {:?}: {why}; write e.g. \"https://127.0.0.1:9443\"",
                    v.get_ref()
                ),
            );
            None
        }
    }
}

/// The checks of [`url`], without a location.
pub(crate) fn parse_url(text: &str) -> Result<String, &'static str> {
    let t = text.trim();
    if t != text || t.is_empty() {
        return Err("must not be empty or have surrounding spaces");
    }
    let Some(rest) = t.strip_prefix("https://") else {
        return Err(
            "must start with https:// (the API key and the tokens never travel unencrypted)",
        );
    };
    if rest.contains(['?', '#', '@', ' ', '\\']) || rest.chars().any(char::is_control) {
        return Err("must not hold a user, a query, a fragment or spaces");
    }
    let uri: http::Uri = t.parse().map_err(|_| "is not a valid URL")?;
    let host = uri.host().unwrap_or("");
    if host.is_empty() {
        return Err("has no host");
    }
    let authority = uri.authority().map_or("", |a| a.as_str());
    let after_host = authority
        .rsplit_once(']')
        .map_or(authority, |(_, rest)| rest);
    if let Some((_, port)) = after_host.rsplit_once(':')
        && !port.parse::<u16>().is_ok_and(|p| p > 0)
    {
        return Err("has an invalid port");
    }
    Ok(t.trim_end_matches('/').to_string())
}

/// 64 hex digits, with or without the colons `openssl x509 -fingerprint -sha256` prints.
fn pin(c: &mut Checker, v: &Spanned<String>) -> Option<[u8; 32]> {
    let parsed = parse_pin(v.get_ref());
    if parsed.is_none() {
        c.error(
            v.span(),
            format!(
                "pin_sha256 {:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed); print it with: openssl s_client -connect HOST:9443 </dev/null | openssl x509 -noout -fingerprint -sha256",
                v.get_ref()
            ),
        );
    }
    parsed
}

pub(crate) fn parse_pin(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    let text = text
        .strip_prefix("sha256:")
        .or_else(|| text.strip_prefix("SHA256:"))
        .unwrap_or(text);
    let digits: Vec<u8> = text.bytes().filter(|b| *b != b':').collect();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

fn record_ids(c: &mut Checker, v: &Spanned<Vec<Spanned<i64>>>) -> Vec<u32> {
    let mut ids = Vec::new();
    if v.get_ref().is_empty() {
        c.error(
            v.span(),
            "registries must list at least one record id; leave the key out to keep every Custom record of a managed host fresh",
        );
    }
    for id in v.get_ref() {
        match u32::try_from(*id.get_ref()) {
            Ok(n) if n > 0 => {
                if ids.contains(&n) {
                    c.error(id.span(), format!("duplicate registry id {n}"));
                } else {
                    ids.push(n);
                }
            }
            _ => c.error(
                id.span(),
                format!(
                    "registry id {} is not a Portainer record id (a positive number, as in the URL #!/registries/ID)",
                    id.get_ref()
                ),
            ),
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        for (text, want) in [
            ("https://127.0.0.1:9443", Some("https://127.0.0.1:9443")),
            (
                "https://portainer.example/",
                Some("https://portainer.example"),
            ),
            (
                "https://h.example:9443/portainer/",
                Some("https://h.example:9443/portainer"),
            ),
            ("https://[::1]:9443", Some("https://[::1]:9443")),
            ("http://127.0.0.1:9000", None),
            ("127.0.0.1:9443", None),
            ("https://", None),
            ("https://u:p@h:9443", None),
            ("https://h:9443/?x=1", None),
            ("https://h:9443/#x", None),
            (" https://h", None),
            ("", None),
            ("https://h:99999", None),
        ] {
            assert_eq!(parse_url(text).ok().as_deref(), want, "{text:?}");
        }
    }

    #[test]
    fn pins() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let want = parse_pin(hex).expect("plain hex");
        assert_eq!(want[0], 0x00);
        assert_eq!(want[31], 0xff);
        let colons: String = hex
            .as_bytes()
            .chunks(2)
            .map(|p| std::str::from_utf8(p).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_pin(&colons), Some(want));
        assert_eq!(parse_pin(&format!("sha256:{hex}")), Some(want));
        assert_eq!(parse_pin(&hex[..62]), None);
        assert_eq!(parse_pin(&format!("{hex}00")), None);
        assert_eq!(parse_pin(&hex.replace('a', "g")), None);
        assert_eq!(parse_pin("+/"), None);
    }
}
