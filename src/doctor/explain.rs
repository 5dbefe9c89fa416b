//! What a failed step of `doctor` means and what fixes it: registry answers, AWS errors, network errors (pure).

use serde::Deserialize;

/// A failure, said plainly, and the one thing to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub detail: String,
    pub fix: String,
}

fn finding(detail: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        detail: detail.into(),
        fix: fix.into(),
    }
}

/// The longest piece of a server's message quoted.
const QUOTE_MAX: usize = 400;

/// `{"errors":[{"code":..,"message":..}]}`: the registry API's error body (distribution, ECR).
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<RegistryError>,
}

#[derive(Debug, Default, Deserialize)]
struct RegistryError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The first error of a registry's error body, if it has one: (code, message), quoted safely.
pub fn registry_error(body: &[u8]) -> Option<(String, String)> {
    let b: ErrorBody = serde_json::from_slice(body).ok()?;
    let e = b.errors.into_iter().next()?;
    Some((quote(&e.code), quote(&e.message)))
}

/// A short plain-text body (ECR's `Not Authorized`), quoted; anything else is left out.
fn plain(body: &[u8]) -> String {
    match std::str::from_utf8(body) {
        Ok(t) if t.len() <= 200 && !t.trim_start().starts_with(['{', '<']) => quote(t.trim()),
        _ => String::new(),
    }
}

/// A server's text made printable on one line and cut to [`QUOTE_MAX`] characters.
pub fn quote(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match clean.char_indices().nth(QUOTE_MAX) {
        Some((i, _)) => format!("{}…", &clean[..i]),
        None => clean,
    }
}

/// Where the image lives, for fixes that name it.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    pub host: &'a str,
    pub repository: &'a str,
    pub reference: &'a str,
    /// The API region, for endpoint names (`com.amazonaws.<region>.ecr.dkr`).
    pub region: Option<&'a str>,
    /// The account that owns the registry.
    pub account: Option<&'a str>,
    /// The principal the token was issued to, when known.
    pub principal: Option<&'a str>,
    /// The host is one of the config's aliases, not ECR itself.
    pub alias: bool,
}

impl Place<'_> {
    fn endpoint(&self, service: &str) -> String {
        match self.region {
            Some(r) => format!("com.amazonaws.{r}.{service}"),
            None => format!("com.amazonaws.<region>.{service}"),
        }
    }
}

/// The pull permissions, as a policy statement's actions.
pub const PULL_ACTIONS: &str =
    "ecr:BatchGetImage, ecr:GetDownloadUrlForLayer and ecr:BatchCheckLayerAvailability";

/// A manifest request's answer other than 200.
pub fn manifest(status: u16, body: &[u8], p: &Place) -> Finding {
    // ECR's 401 is plain text ("Not Authorized"); its other errors are the registry API's JSON.
    let (code, message) = registry_error(body).unwrap_or_else(|| (String::new(), plain(body)));
    let said = if message.is_empty() {
        format!("HTTP {status}")
    } else if code.is_empty() {
        format!("HTTP {status}: {message}")
    } else {
        format!("HTTP {status} {code}: {message}")
    };
    match status {
        401 | 403 if message.to_ascii_lowercase().contains("token has expired") => finding(
            format!("the registry refused the token as expired ({said})"),
            "the token was just fetched: it was issued for another region than this host names (check the registry's region and endpoint_url), or this host's clock is off (timedatectl)",
        ),
        401 if p.alias => finding(
            format!("{} refused the ECR token ({said})", p.host),
            format!(
                "{} is an alias: the registry behind it does not take this registry's ECR token; point the alias at a mirror that accepts it, or remove the alias",
                p.host
            ),
        ),
        401 => finding(
            format!("the registry refused the token ({said})"),
            "a token works only in the region and partition it was issued for, as user AWS: check the registry's region and the [[registry]] credentials; `ecr-refresherd refresh` then pull again",
        ),
        403 => denied(&said, &message, p),
        404 => not_found(&said, &code, p),
        429 => finding(
            format!("the registry throttled the request ({said})"),
            "too many pulls at once: retry with backoff; ECR's pull rate quotas can be raised in Service Quotas",
        ),
        500..=599 => finding(
            format!("the registry failed ({said})"),
            "a server-side error: retry; if it persists, check the AWS Health Dashboard for ECR in this region",
        ),
        _ => finding(
            format!("unexpected answer ({said})"),
            "the host may not be a registry (a proxy or a captive portal answering?): check what answers on port 443",
        ),
    }
}

/// A 403: ECR names the action and the policy that refused it.
fn denied(said: &str, message: &str, p: &Place) -> Finding {
    let m = message.to_ascii_lowercase();
    let repo_arn = message
        .split_whitespace()
        .find(|w| w.starts_with("arn:") && w.contains(":repository/"))
        .map(|w| w.trim_end_matches(['.', ',']).to_string());
    let resource = repo_arn
        .clone()
        .unwrap_or_else(|| format!("the repository {}", p.repository));
    let who = p.principal.unwrap_or("the principal");
    let cross_account = match (p.principal.and_then(arn_account), p.account) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    };
    let fix = if m.contains("explicit deny") {
        let where_ = if m.contains("resource-based") {
            "the repository policy"
        } else if m.contains("service control policy") {
            "a service control policy of the organization"
        } else if m.contains("permissions boundary") {
            "the principal's permissions boundary"
        } else if m.contains("session policy") {
            "the session policy of the assumed role"
        } else {
            "an identity-based policy of the principal"
        };
        format!(
            "a Deny statement in {where_} refuses {who}; a Deny wins over every Allow: remove or narrow that statement"
        )
    } else if m.contains("resource-based policy") {
        format!(
            "the repository policy of {resource} does not allow {who}{}: add a statement with {PULL_ACTIONS} for that principal (ECR console: Repositories > Permissions)",
            if cross_account {
                " (another account: both its identity policy and the repository policy must allow the pull)"
            } else {
                ""
            }
        )
    } else if m.contains("identity-based policy") {
        format!(
            "the IAM policy of {who} does not allow the pull: allow {PULL_ACTIONS} on {resource} (the managed policy AmazonEC2ContainerRegistryReadOnly has them)"
        )
    } else if m.contains("service control policy") {
        "a service control policy of the organization blocks the pull: ask the organization's administrators".to_string()
    } else if m.contains("permissions boundary") {
        format!("the permissions boundary of {who} does not allow {PULL_ACTIONS}")
    } else {
        format!(
            "{who} may not pull {}: allow {PULL_ACTIONS} in its IAM policy and, for another account's repository, in the repository policy",
            p.repository
        )
    };
    let kind = if m.contains("resource-based") {
        "the repository policy"
    } else if m.contains("identity-based") {
        "an IAM (identity) policy"
    } else {
        "a policy"
    };
    finding(format!("denied by {kind} ({said})"), fix)
}

/// A 404: the repository or the tag does not exist.
fn not_found(said: &str, code: &str, p: &Place) -> Finding {
    match code {
        "NAME_UNKNOWN" => finding(
            format!("the repository {} does not exist ({said})", p.repository),
            format!(
                "check the repository name (and the account and region in the host: {}); create it or fix the image name",
                p.host
            ),
        ),
        _ => finding(
            format!("the repository has no image {:?} ({said})", p.reference),
            "check the tag or digest: it was never pushed, or a lifecycle policy expired it",
        ),
    }
}

/// The account in an ARN (`arn:aws:iam::123456789012:user/x` -> `123456789012`).
pub fn arn_account(arn: &str) -> Option<&str> {
    arn.split(':').nth(4).filter(|a| !a.is_empty())
}

/// `GetAuthorizationToken` failed: what it means, from the error the SDK mapping gave.
pub fn token(error: &str, p: &Place) -> Finding {
    let e = error.to_ascii_lowercase();
    if e.contains("ecr:getauthorizationtoken")
        || (e.contains("accessdenied") && !e.contains("expired"))
    {
        return finding(
            format!("ECR refused the token: {}", quote(error)),
            "allow ecr:GetAuthorizationToken on Resource \"*\" in the principal's IAM policy (the action has no resource-level permission; AmazonEC2ContainerRegistryReadOnly includes it)",
        );
    }
    if e.contains("signature") {
        return finding(
            format!("the request's signature was refused: {}", quote(error)),
            "a wrong secret access key, or this host's clock is off by more than 5 minutes (timedatectl)",
        );
    }
    if e.contains("expired") {
        return finding(
            format!("the AWS credentials have expired: {}", quote(error)),
            "renew them (a new session, `aws sso login`, a fresh role), or use the instance role: remove the stale keys from the environment and profile",
        );
    }
    if e.contains("unrecognizedclient") || e.contains("invalidclienttokenid") {
        return finding(
            format!("AWS does not know the access key: {}", quote(error)),
            "the key was deleted or belongs to another partition (aws-cn, aws-us-gov): use valid credentials for this registry's partition",
        );
    }
    if e.contains("metadata is disabled") {
        return finding(
            quote(error),
            "give credentials another way: `profile` or `role_arn` in the [[registry]] (root's ~/.aws), or AWS_ACCESS_KEY_ID in the unit's environment",
        );
    }
    if e.contains("hop limit") {
        return finding(
            quote(error),
            "on EC2 inside a container, raise the IMDSv2 hop limit to 2: aws ec2 modify-instance-metadata-options --instance-id ID --http-put-response-hop-limit 2; else give credentials another way (profile, role_arn, environment)",
        );
    }
    if e.contains("no role") || e.contains("no instance profile") {
        return finding(
            quote(error),
            "attach an instance profile whose role may pull from ECR (AmazonEC2ContainerRegistryReadOnly), or give the [[registry]] a profile or role_arn",
        );
    }
    if e.contains("instance metadata") || e.contains("imds") {
        return finding(
            quote(error),
            "attach an instance role (instance profile) with ECR read access; inside a container, IMDSv2 needs the hop limit at 2: aws ec2 modify-instance-metadata-options --instance-id ID --http-put-response-hop-limit 2",
        );
    }
    if e.contains("no aws credentials") || e.contains("could not load aws credentials") {
        return finding(
            quote(error),
            "give the daemon credentials: an instance role, or `profile`/`role_arn` in the [[registry]] (root's ~/.aws), or AWS_ACCESS_KEY_ID in the unit's environment",
        );
    }
    if e.contains("throttl") {
        return finding(
            quote(error),
            "ECR throttled GetAuthorizationToken: retry in a minute; many hosts at once share the account's quota",
        );
    }
    if e.contains("timeout") || e.contains("connect") || e.contains("dns") {
        return finding(
            format!("the ECR API is unreachable: {}", quote(error)),
            format!(
                "a private subnet needs a NAT gateway or the {} interface endpoint (private DNS on, its security group open to 443 from this host)",
                p.endpoint("ecr.api")
            ),
        );
    }
    finding(
        quote(error),
        "run `ecr-refresherd once` with log_level = \"debug\" for the SDK's detail",
    )
}

/// A network step to a host failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetFailure {
    /// The name does not resolve.
    Dns,
    /// Resolution did not answer in time.
    DnsTimeout,
    /// Connection refused (RST): reachable, nothing listens.
    Refused,
    /// No answer: packets dropped (no route, a security group, no NAT).
    Timeout,
    /// The kernel has no route, or the network is down.
    Unreachable,
    /// The certificate is not trusted for the name.
    Certificate,
    /// The TLS handshake failed otherwise (or timed out).
    Tls,
}

/// What failing to reach the registry host means.
pub fn registry_net(kind: NetFailure, what: &str, p: &Place) -> Finding {
    let dkr = p.endpoint("ecr.dkr");
    let fix = match kind {
        NetFailure::Dns | NetFailure::DnsTimeout if p.alias => format!(
            "{} is an alias from the config: add it to DNS (or /etc/hosts) where it points at the mirror",
            p.host
        ),
        NetFailure::Dns | NetFailure::DnsTimeout => format!(
            "check the host name (account, region); in a VPC without internet, the {dkr} interface endpoint with private DNS makes this name resolve; check /etc/resolv.conf"
        ),
        NetFailure::Refused => format!(
            "something at that address refuses port 443: a firewall rejecting it, or a proxy or /etc/hosts entry sending {} elsewhere",
            p.host
        ),
        NetFailure::Timeout | NetFailure::Unreachable => format!(
            "no route to the registry: a private subnet needs a NAT gateway or the {dkr} and {} interface endpoints; their security group must allow 443 from this host",
            p.endpoint("ecr.api")
        ),
        NetFailure::Certificate => "the certificate is not trusted for this name: a TLS-inspecting proxy? add its CA to the system store (or SSL_CERT_FILE); never turn verification off".to_string(),
        NetFailure::Tls => "the TLS handshake failed: a proxy or firewall interfering with port 443?".to_string(),
    };
    finding(what.to_string(), fix)
}

/// What failing to reach the layer storage (S3) means: the classic private-subnet case.
pub fn storage_net(kind: NetFailure, what: &str, storage_host: &str, p: &Place) -> Finding {
    let s3 = p.endpoint("s3");
    let fix = match kind {
        NetFailure::Certificate | NetFailure::Tls => format!(
            "the TLS connection to {storage_host} failed: a proxy inspecting TLS? add its CA to the system store (or SSL_CERT_FILE)"
        ),
        _ => format!(
            "ECR serves layers from S3 ({storage_host}); the ecr.dkr and ecr.api endpoints are not enough: add the S3 gateway endpoint ({s3}) to this subnet's route table (or a NAT gateway), and let its policy allow the bucket"
        ),
    };
    finding(
        format!("layers come from {storage_host}, which is not reachable: {what}"),
        fix,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

    fn place() -> Place<'static> {
        Place {
            host: HOST,
            repository: "team/app",
            reference: "v1",
            region: Some("us-east-1"),
            account: Some("123456789012"),
            principal: Some("arn:aws:iam::123456789012:user/ci"),
            alias: false,
        }
    }

    fn ecr_denied(tail: &str) -> Vec<u8> {
        format!(
            r#"{{"errors":[{{"code":"DENIED","message":"User: arn:aws:iam::123456789012:user/ci is not authorized to perform: ecr:BatchGetImage on resource: arn:aws:ecr:us-east-1:123456789012:repository/team/app {tail}"}}]}}"#
        )
        .into_bytes()
    }

    #[test]
    fn a_403_quotes_ecr_and_names_the_policy_to_change() {
        let f = manifest(
            403,
            &ecr_denied("because no identity-based policy allows the ecr:BatchGetImage action"),
            &place(),
        );
        assert!(f.detail.starts_with("denied by an IAM (identity) policy (HTTP 403 DENIED: User: arn:aws:iam::123456789012:user/ci is not authorized to perform: ecr:BatchGetImage"), "{f:?}");
        assert!(
            f.fix
                .contains("IAM policy of arn:aws:iam::123456789012:user/ci"),
            "{f:?}"
        );
        assert!(
            f.fix
                .contains("arn:aws:ecr:us-east-1:123456789012:repository/team/app"),
            "{f:?}"
        );
        assert!(f.fix.contains("ecr:GetDownloadUrlForLayer"), "{f:?}");

        let f = manifest(
            403,
            &ecr_denied("because no resource-based policy allows the ecr:BatchGetImage action"),
            &place(),
        );
        assert!(
            f.detail.starts_with("denied by the repository policy"),
            "{f:?}"
        );
        assert!(
            f.fix.starts_with("the repository policy of arn:aws:ecr"),
            "{f:?}"
        );
        assert!(!f.fix.contains("another account"), "same account: {f:?}");

        let other = Place {
            principal: Some("arn:aws:sts::999999999999:assumed-role/r/s"),
            ..place()
        };
        let f = manifest(
            403,
            &ecr_denied("because no resource-based policy allows the ecr:BatchGetImage action"),
            &other,
        );
        assert!(f.fix.contains("another account"), "{f:?}");

        let f = manifest(
            403,
            &ecr_denied("with an explicit deny in a resource-based policy"),
            &place(),
        );
        assert!(
            f.fix.contains("a Deny statement in the repository policy"),
            "{f:?}"
        );
        let f = manifest(
            403,
            &ecr_denied("with an explicit deny in an identity-based policy"),
            &place(),
        );
        assert!(
            f.fix
                .contains("a Deny statement in an identity-based policy"),
            "{f:?}"
        );
        let f = manifest(
            403,
            &ecr_denied("with an explicit deny in a service control policy"),
            &place(),
        );
        assert!(f.fix.contains("service control policy"), "{f:?}");
        let f = manifest(403, b"", &place());
        assert_eq!(f.detail, "denied by a policy (HTTP 403)");
    }

    #[test]
    fn a_404_tells_the_repository_from_the_tag() {
        let repo = manifest(
            404,
            br#"{"errors":[{"code":"NAME_UNKNOWN","message":"The repository with name 'team/app' does not exist in the registry with id '123456789012'"}]}"#,
            &place(),
        );
        assert!(
            repo.detail
                .starts_with("the repository team/app does not exist"),
            "{repo:?}"
        );
        let tag = manifest(
            404,
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"Requested image not found"}]}"#,
            &place(),
        );
        assert!(
            tag.detail.starts_with("the repository has no image \"v1\""),
            "{tag:?}"
        );
        // distribution says "manifest unknown" under the same code.
        let dist = manifest(
            404,
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"v9"}}]}"#,
            &place(),
        );
        assert!(
            dist.detail.contains("MANIFEST_UNKNOWN: manifest unknown"),
            "{dist:?}"
        );
    }

    #[test]
    fn a_401_says_expired_alias_or_refused() {
        let exp = manifest(
            401,
            br#"{"errors":[{"code":"DENIED","message":"Your authorization token has expired. Reauthenticate and try again."}]}"#,
            &place(),
        );
        assert!(exp.fix.contains("clock"), "{exp:?}");
        // ECR answers an expired token with 403 (and a token of another region the same way).
        let exp403 = manifest(
            403,
            br#"{"errors":[{"code":"DENIED","message":"Your authorization token has expired. Reauthenticate and try again."}]}"#,
            &place(),
        );
        assert!(
            exp403
                .detail
                .starts_with("the registry refused the token as expired"),
            "{exp403:?}"
        );
        assert!(exp403.fix.contains("another region"), "{exp403:?}");
        let ecr401 = manifest(401, b"Not Authorized\n", &place());
        assert_eq!(
            ecr401.detail,
            "the registry refused the token (HTTP 401: Not Authorized)"
        );
        let alias = Place {
            alias: true,
            host: "mirror.internal:5000",
            ..place()
        };
        let a = manifest(401, b"{}", &alias);
        assert!(a.fix.contains("is an alias"), "{a:?}");
        let r = manifest(
            401,
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            &place(),
        );
        assert_eq!(
            r.detail,
            "the registry refused the token (HTTP 401 UNAUTHORIZED: authentication required)"
        );
        for s in [429, 500, 503, 418] {
            assert!(!manifest(s, b"", &place()).fix.is_empty());
        }
    }

    #[test]
    fn server_text_is_one_line_and_short() {
        let body = format!(
            r#"{{"errors":[{{"code":"DENIED","message":"a\nb\u001b[31m{}"}}]}}"#,
            "x".repeat(1000)
        );
        let f = manifest(403, body.as_bytes(), &place());
        assert!(
            !f.detail.contains('\n') && !f.detail.contains('\u{1b}'),
            "{f:?}"
        );
        assert!(
            f.detail.chars().count() < QUOTE_MAX + 100,
            "{}",
            f.detail.len()
        );
    }

    #[test]
    fn token_failures_name_the_permission_or_the_credentials() {
        let p = place();
        let cases = [
            (
                "access denied: AccessDeniedException: User: arn:aws:iam::1:user/x is not authorized to perform: ecr:GetAuthorizationToken on resource: *",
                "ecr:GetAuthorizationToken on Resource",
            ),
            (
                "access denied: ExpiredTokenException: The security token included in the request is expired",
                "renew them",
            ),
            (
                "access denied: UnrecognizedClientException: The security token included in the request is invalid.",
                "another partition",
            ),
            (
                "access denied: InvalidSignatureException: Signature expired",
                "clock",
            ),
            (
                "the instance metadata service (IMDS) gave no credentials",
                "hop-limit 2",
            ),
            ("no AWS credentials found", "instance role"),
            (
                "throttled by ECR: ThrottlingException: Rate exceeded",
                "retry",
            ),
            (
                "timeout: the endpoint did not answer in time",
                "com.amazonaws.us-east-1.ecr.api",
            ),
            ("something else", "debug"),
        ];
        for (error, want) in cases {
            let f = token(error, &p);
            assert!(f.fix.contains(want), "{error}: {f:?}");
        }
    }

    #[test]
    fn network_failures_point_at_endpoints_and_s3() {
        let p = place();
        let f = registry_net(NetFailure::Timeout, "no answer", &p);
        assert!(f.fix.contains("com.amazonaws.us-east-1.ecr.dkr"), "{f:?}");
        assert!(
            registry_net(NetFailure::Dns, "x", &p)
                .fix
                .contains("private DNS")
        );
        let alias = Place { alias: true, ..p };
        assert!(
            registry_net(NetFailure::Dns, "x", &alias)
                .fix
                .contains("alias")
        );
        assert!(
            registry_net(NetFailure::Certificate, "x", &p)
                .fix
                .contains("never turn verification off")
        );
        let s = storage_net(
            NetFailure::Timeout,
            "no answer in 3 s",
            "prod-us-east-1-starport-layer-bucket.s3.us-east-1.amazonaws.com",
            &p,
        );
        assert!(
            s.fix
                .contains("S3 gateway endpoint (com.amazonaws.us-east-1.s3)"),
            "{s:?}"
        );
        assert!(
            s.detail
                .starts_with("layers come from prod-us-east-1-starport-layer-bucket"),
            "{s:?}"
        );
    }

    #[test]
    fn arn_accounts() {
        assert_eq!(
            arn_account("arn:aws:iam::123456789012:user/x"),
            Some("123456789012")
        );
        assert_eq!(arn_account("arn:aws:sts::1:assumed-role/r/s"), Some("1"));
        assert_eq!(arn_account("nonsense"), None);
    }
}
