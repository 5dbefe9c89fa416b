//! The fake layer storage: S3 answering the presigned URLs the fake registry hands out.

use std::sync::PoisonError;

use bytes::Bytes;
use hyper::Method;

use super::{RegistryState, Req, Resp, response, with_header};
use crate::image::sha256_digest;
use crate::protocol::{form_decode, form_get, now_epoch, xml_escape};
use crate::state::random_hex16;

/// An S3 error document.
fn s3_error(status: u16, code: &str, message: &str, extra: &str) -> Resp {
    let request_id = random_hex16(now_epoch().unsigned_abs()).to_ascii_uppercase();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message>\
         {extra}<RequestId>{request_id}</RequestId><HostId>fake-aws</HostId></Error>",
        xml_escape(message)
    );
    let r = response(status, Some("application/xml"), body);
    let r = with_header(r, "x-amz-request-id", &request_id);
    with_header(r, "server", "AmazonS3")
}

const PRESIGN_PARAMS: [&str; 6] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-Date",
    "X-Amz-SignedHeaders",
    "X-Amz-Expires",
];

pub(super) fn storage(state: &RegistryState, r: &Req<'_>) -> Resp {
    let q = form_decode(r.query);
    let presigned_query = q
        .iter()
        .any(|(k, _)| k.starts_with("X-Amz-") || k == "Signature");
    if let Some(auth) = r.header("authorization").filter(|_| presigned_query) {
        let scheme = auth.split_whitespace().next().unwrap_or_default();
        return s3_error(
            400,
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, \
             Signature query string parameter or the Authorization header should be specified",
            &format!(
                "<ArgumentName>Authorization</ArgumentName><ArgumentValue>{} (rest left out by \
                 fake-aws)</ArgumentValue>",
                xml_escape(scheme)
            ),
        );
    }
    if !presigned_query {
        return s3_error(403, "AccessDenied", "Access Denied", "");
    }
    if PRESIGN_PARAMS.iter().any(|p| form_get(&q, p).is_none())
        || form_get(&q, "X-Amz-Algorithm") != Some("AWS4-HMAC-SHA256")
    {
        return s3_error(
            400,
            "AuthorizationQueryParametersError",
            "Query-string authentication version 4 requires the X-Amz-Algorithm, \
             X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and \
             X-Amz-Expires parameters.",
            "",
        );
    }
    let signature = form_get(&q, "X-Amz-Signature").unwrap_or_default();
    let found = {
        let map = state
            .presigned
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(signature)
            .filter(|p| p.path == r.path)
            .map(|p| (p.bytes.clone(), p.expires_at))
    };
    let signed_method = *r.method == Method::GET || *r.method == Method::HEAD;
    let Some((bytes, expires_at)) = found.filter(|_| signed_method) else {
        return s3_error(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. \
             Check your key and signing method.",
            "",
        );
    };
    if now_epoch() > expires_at {
        return s3_error(403, "AccessDenied", "Request has expired", "");
    }
    let total = bytes.len();
    let etag = format!(
        "\"{}\"",
        sha256_digest(&bytes)
            .trim_start_matches("sha256:")
            .get(..32)
            .unwrap_or_default()
    );
    let (status, body, content_range) = match r.header("range").map(|h| parse_range(h, total)) {
        None | Some(RangeSpec::Ignore) => (200, bytes, None),
        Some(RangeSpec::Unsatisfiable) => {
            let range = r.header("range").unwrap_or_default();
            let resp = s3_error(
                416,
                "InvalidRange",
                "The requested range is not satisfiable",
                &format!(
                    "<RangeRequested>{}</RangeRequested><ActualObjectSize>{total}</ActualObjectSize>",
                    xml_escape(range)
                ),
            );
            return with_header(resp, "content-range", &format!("bytes */{total}"));
        }
        Some(RangeSpec::Bytes(first, last)) => (
            206,
            bytes.slice(first..=last),
            Some(format!("bytes {first}-{last}/{total}")),
        ),
    };
    let len = body.len();
    let body = if *r.method == Method::HEAD {
        Bytes::new()
    } else {
        body
    };
    let mut resp = response(status, Some("application/octet-stream"), body);
    resp = with_header(resp, "content-length", &len.to_string());
    resp = with_header(resp, "accept-ranges", "bytes");
    resp = with_header(resp, "etag", &etag);
    resp = with_header(resp, "server", "AmazonS3");
    if let Some(cr) = content_range {
        resp = with_header(resp, "content-range", &cr);
    }
    resp
}

#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    /// Serve the whole object (no usable single byte range: S3 ignores those).
    Ignore,
    Unsatisfiable,
    /// First and last byte, inclusive, within the object.
    Bytes(usize, usize),
}

/// One `bytes=` range of RFC 9110 against an object of `total` bytes.
fn parse_range(header: &str, total: usize) -> RangeSpec {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeSpec::Ignore;
    };
    if spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Ignore;
    };
    let num = |s: &str| -> Option<usize> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<usize>().unwrap_or(usize::MAX))
    };
    match (num(a), num(b), b.trim().is_empty()) {
        (Some(first), _, true) if first < total => RangeSpec::Bytes(first, total - 1),
        (Some(_), _, true) => RangeSpec::Unsatisfiable,
        (Some(first), Some(last), false) if first <= last => {
            if first >= total {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Bytes(first, last.min(total - 1))
            }
        }
        (None, Some(n), false) if a.trim().is_empty() => {
            if n == 0 || total == 0 {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Bytes(total - n.min(total), total - 1)
            }
        }
        _ => RangeSpec::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeSpec::Bytes(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), RangeSpec::Bytes(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), RangeSpec::Bytes(90, 99));
        assert_eq!(parse_range("bytes=-1000", 100), RangeSpec::Bytes(0, 99));
        assert_eq!(parse_range("bytes=50-1000", 100), RangeSpec::Bytes(50, 99));
        assert_eq!(parse_range("bytes=100-", 100), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=100-200", 100), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=9-0", 100), RangeSpec::Ignore);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeSpec::Ignore);
        assert_eq!(parse_range("items=0-1", 100), RangeSpec::Ignore);
        assert_eq!(parse_range("bytes=x-1", 100), RangeSpec::Ignore);
    }
}
