//! Wire formats: awsJson / awsQuery / IMDS bodies, SigV4 scope parsing, form decoding, timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

/// `(access key id, region, service)` from a SigV4 `Authorization` header, e.g.
/// `AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/ecr/aws4_request, SignedHeaders=...`.
pub(crate) fn sigv4_scope(auth: &str) -> Option<(String, String, String)> {
    let start = auth.find("Credential=")? + "Credential=".len();
    let rest = &auth[start..];
    let end = rest
        .find(|c: char| c == ',' || c.is_whitespace())
        .unwrap_or(rest.len());
    let mut parts = rest[..end].split('/');
    let akid = parts.next()?;
    let _date = parts.next()?;
    let region = parts.next()?;
    let service = parts.next()?;
    if akid.is_empty() {
        return None;
    }
    Some((akid.to_string(), region.to_string(), service.to_string()))
}

/// Decodes `application/x-www-form-urlencoded` (also query strings) into pairs.
pub(crate) fn form_decode(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// First value of `key` in decoded form pairs.
pub(crate) fn form_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = b.get(i + 1..i + 3).and_then(|h| {
                    std::str::from_utf8(h)
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                });
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Escapes text for an XML element.
pub(crate) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Seconds since the Unix epoch, now.
pub(crate) fn now_epoch_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Whole seconds since the Unix epoch, now.
pub(crate) fn now_epoch() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// ISO-8601 UTC `YYYY-MM-DDTHH:MM:SSZ` of epoch seconds (proleptic Gregorian; years are not
/// clamped, so absurd offsets yield absurd but well-formed-looking years).
pub(crate) fn iso8601(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

/// Howard Hinnant's `civil_from_days`, computed in i128 so no input overflows.
fn civil_from_days(days: i64) -> (i128, u32, u32) {
    let z = i128::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i128::from(m <= 2);
    // d is in 1..=31 and m in 1..=12, so these conversions cannot fail.
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

/// awsJson error body.
pub(crate) fn json_error_body(code: &str, message: &str) -> Vec<u8> {
    json!({ "__type": code, "message": message })
        .to_string()
        .into_bytes()
}

/// Serialises `obj` with a leading `"padding"` member so the body is at least `min_len` bytes.
pub(crate) fn json_padded(obj: Map<String, Value>, min_len: usize) -> Vec<u8> {
    let body = Value::Object(obj).to_string();
    if body.len() >= min_len {
        return body.into_bytes();
    }
    // `{"padding":"xxx",` + the rest of the body after its `{`
    const PREFIX: &[u8] = b"{\"padding\":\"";
    let rest = &body.as_bytes()[1..];
    let comma = rest != b"}";
    let base = PREFIX.len() + 1 + usize::from(comma) + rest.len();
    let pad = min_len.saturating_sub(base);
    let mut out = Vec::with_capacity(base + pad);
    out.extend_from_slice(PREFIX);
    out.resize(out.len() + pad, b'x');
    out.push(b'"');
    if comma {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    out
}

/// STS (awsQuery) error body.
pub(crate) fn query_error_body(kind: &str, code: &str, message: &str, request_id: &str) -> Vec<u8> {
    format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
         <Error><Type>{kind}</Type><Code>{code}</Code><Message>{}</Message></Error>\
         <RequestId>{request_id}</RequestId></ErrorResponse>",
        xml_escape(message)
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_known_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_795_438_800), "2026-11-23T13:00:00Z");
        assert_eq!(iso8601(-1), "1969-12-31T23:59:59Z");
        // must not panic at the extremes
        let _ = iso8601(i64::MAX);
        let _ = iso8601(i64::MIN);
    }

    #[test]
    fn sigv4() {
        let h = "AWS4-HMAC-SHA256 Credential=AKIDX/20240101/eu-west-1/ecr/aws4_request, \
                 SignedHeaders=host, Signature=abc";
        assert_eq!(
            sigv4_scope(h),
            Some(("AKIDX".into(), "eu-west-1".into(), "ecr".into()))
        );
        assert_eq!(sigv4_scope("Bearer x"), None);
        assert_eq!(sigv4_scope("Credential=a/b"), None);
    }

    #[test]
    fn form() {
        let p = form_decode(
            "Action=AssumeRole&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fx&S=a+b&E=%&F=%zz",
        );
        assert_eq!(form_get(&p, "RoleArn"), Some("arn:aws:iam::1:role/x"));
        assert_eq!(form_get(&p, "S"), Some("a b"));
        assert_eq!(form_get(&p, "E"), Some("%"));
        assert_eq!(form_get(&p, "F"), Some("%zz"));
    }

    #[test]
    fn padding() {
        let mut m = Map::new();
        m.insert("a".into(), json!(1));
        let b = json_padded(m.clone(), 1000);
        assert_eq!(b.len(), 1000);
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["a"], 1);
        let b = json_padded(Map::new(), 100);
        assert_eq!(b.len(), 100);
        let _: Value = serde_json::from_slice(&b).unwrap();
    }
}
