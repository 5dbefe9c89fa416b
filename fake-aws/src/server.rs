//! HTTP/1.1 server: accepts loopback connections and routes each request to a fake service.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

use crate::protocol::{
    form_decode, form_get, iso8601, json_error_body, json_padded, now_epoch, now_epoch_secs,
    query_error_body, sigv4_scope, xml_escape,
};
use crate::state::{DEFAULT_REGION, IssuedToken, Shared};
use crate::{Call, Fault, IMDS_ROLE_NAME, Service};

mod control;

/// Response type of every handler.
pub(crate) type Resp = Response<Full<Bytes>>;

/// Largest request body accepted (bigger ones get 413).
const MAX_REQUEST_BODY: usize = 1 << 20;
const AWS_JSON: &str = "application/x-amz-json-1.1";
const STS_NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
const ECR_TARGET_PREFIX: &str = "AmazonEC2ContainerRegistry_V20150921.";
const ECR_PUBLIC_TARGET_PREFIX: &str = "SpencerFrontendService.";
const IMDS_TOKEN_PATH: &str = "/latest/api/token";
const IMDS_TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const IMDS_TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
const IMDS_CREDS_PREFIX: &str = "/latest/meta-data/iam/security-credentials/";
/// Lifetime of IMDS role credentials.
const IMDS_CREDS_LIFETIME: i64 = 6 * 3600;

/// Returned by a handler to make hyper close the connection without writing a response.
#[derive(Debug)]
struct CloseConnection;

impl fmt::Display for CloseConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fake-aws: connection dropped on purpose")
    }
}

impl std::error::Error for CloseConnection {}

/// Accepts connections until `shutdown` fires (or its sender is dropped).
pub(crate) async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fake-aws: cannot serve: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| handle(Arc::clone(&shared), req));
                        // Errors (client went away, deliberate drops) just end the connection.
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                // Out of file descriptors or similar: back off a little instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

/// The parts of a request the handlers look at.
struct Req {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `(access key id, region)` from the SigV4 `Authorization` header.
    fn scope(&self) -> (Option<String>, Option<String>) {
        match self.header("authorization").and_then(sigv4_scope) {
            Some((akid, region, _)) => (Some(akid), Some(region)),
            None => (None, None),
        }
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Resp, CloseConnection> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Ok(text(413, "request body too large\n"));
        }
        Err(_) => return Err(CloseConnection),
    };
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers: parts.headers,
        body,
    };

    if req.path == "/_fake" || req.path.starts_with("/_fake/") {
        return Ok(control::handle(&shared, &req));
    }
    if req.path.starts_with("/latest/") {
        return imds(&shared, &req).await;
    }
    if let Some(target) = req.header("x-amz-target") {
        if let Some(action) = target.strip_prefix(ECR_TARGET_PREFIX) {
            let action = action.to_string();
            return ecr(&shared, &req, false, &action).await;
        }
        if let Some(action) = target.strip_prefix(ECR_PUBLIC_TARGET_PREFIX) {
            let action = action.to_string();
            return ecr(&shared, &req, true, &action).await;
        }
        return Ok(json_error(
            400,
            "UnknownOperationException",
            "fake-aws: unknown X-Amz-Target",
        ));
    }
    let form_body = req
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let params = if form_body {
        form_decode(&String::from_utf8_lossy(&req.body))
    } else {
        form_decode(&req.query)
    };
    if form_get(&params, "Action").is_some() {
        return sts(&shared, &req, &params).await;
    }
    if shared.verbose() {
        eprintln!("fake-aws: no route for {} {}", req.method, req.path);
    }
    Ok(json_error(
        404,
        "UnknownOperationException",
        "fake-aws: no route for this request",
    ))
}

/// Records the call, applies latency and the transport-level part of its fault.
///
/// Returns the fault left for the handler (`Stall` has become `None` by then).
async fn begin(shared: &Shared, call: Call, content_ok: bool) -> Result<Fault, CloseConnection> {
    let line = shared.verbose().then(|| {
        format!(
            "fake-aws: {} {} region={} key={}",
            call.service,
            call.action,
            call.region.as_deref().unwrap_or("-"),
            call.access_key_id.as_deref().unwrap_or("-"),
        )
    });
    let (fault, latency) = shared.begin(call, content_ok);
    if let Some(line) = line {
        eprintln!("{line} fault={fault}");
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        Fault::Stall(d) => {
            tokio::time::sleep(d).await;
            Ok(Fault::None)
        }
        Fault::DropConnection => Err(CloseConnection),
        Fault::Blackhole => {
            std::future::pending::<()>().await;
            Err(CloseConnection)
        }
        f => Ok(f),
    }
}

fn response(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn with_header(mut r: Resp, name: &'static str, value: &str) -> Resp {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(HeaderName::from_static(name), v);
    }
    r
}

pub(crate) fn text(status: u16, body: impl Into<Bytes>) -> Resp {
    response(status, "text/plain", body)
}

pub(crate) fn json_response(status: u16, v: &Value) -> Resp {
    response(status, "application/json", v.to_string())
}

fn json_error(status: u16, code: &str, message: &str) -> Resp {
    let r = response(status, AWS_JSON, json_error_body(code, message));
    with_header(r, "x-amzn-errortype", code)
}

// ---------------------------------------------------------------------------------------------
// ECR and ECR Public (awsJson1_1)
// ---------------------------------------------------------------------------------------------

async fn ecr(
    shared: &Shared,
    req: &Req,
    public: bool,
    action: &str,
) -> Result<Resp, CloseConnection> {
    let service = if public {
        Service::EcrPublic
    } else {
        Service::Ecr
    };
    let (akid, region) = req.scope();
    let mut call = Call::new(service, action);
    call.access_key_id = akid.clone();
    call.region = region.clone();

    let input: Option<Map<String, Value>> = if req.body.iter().all(u8::is_ascii_whitespace) {
        Some(Map::new())
    } else {
        match serde_json::from_slice::<Value>(&req.body) {
            Ok(Value::Object(m)) => Some(m),
            _ => None,
        }
    };
    let Some(input) = input else {
        shared.record(call);
        return Ok(json_error(
            400,
            "SerializationException",
            "fake-aws: request body is not a JSON object",
        ));
    };
    if !public && (action == "DescribeRepositories" || action == "ListImages") {
        return listing(shared, call, action, &input).await;
    }
    if action != "GetAuthorizationToken" {
        shared.record(call);
        return Ok(json_error(
            400,
            "UnknownOperationException",
            &format!("fake-aws: {action} is not implemented"),
        ));
    }
    let registry_ids: Vec<String> = match input.get("registryIds") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) if !public && a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(_) => {
            shared.record(call);
            return Ok(json_error(
                400,
                "InvalidParameterException",
                "fake-aws: registryIds must be a list of strings",
            ));
        }
    };
    call.registry_ids = registry_ids.clone();

    let request_id = format!("fake-{}", shared.next_id());
    let fault = begin(shared, call, true).await?;
    let r = match fault {
        Fault::Throttle => json_error(400, "ThrottlingException", "Rate exceeded"),
        Fault::ServerError => json_error(500, "ServerException", "fake-aws: injected server error"),
        Fault::Unavailable => json_error(
            503,
            "ServiceUnavailableException",
            "fake-aws: service unavailable",
        ),
        Fault::AccessDenied => json_error(
            400,
            "AccessDeniedException",
            &format!(
                "User: arn:aws:iam::{}:user/fake is not authorized to perform: {}:GetAuthorizationToken",
                shared.ecr_account(),
                if public { "ecr-public" } else { "ecr" },
            ),
        ),
        Fault::ExpiredToken => json_error(
            400,
            "ExpiredTokenException",
            "The security token included in the request is expired",
        ),
        Fault::ErrorMessage(m) => json_error(400, "AccessDeniedException", &m),
        Fault::NotJson => response(
            200,
            AWS_JSON,
            "<html><body>fake-aws: this is not JSON</body></html>",
        ),
        f => ecr_success(
            shared,
            service,
            &f,
            region.as_deref().unwrap_or(DEFAULT_REGION),
            akid.as_deref(),
            &registry_ids,
        ),
    };
    Ok(with_header(r, "x-amzn-requestid", &request_id))
}

/// `DescribeRepositories` and `ListImages` over the fake registry's catalog (one page each),
/// with ECR's errors; faults apply as to `GetAuthorizationToken`.
async fn listing(
    shared: &Shared,
    call: Call,
    action: &str,
    input: &Map<String, Value>,
) -> Result<Resp, CloseConnection> {
    let account = input
        .get("registryId")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| shared.ecr_account());
    let region = call
        .region
        .clone()
        .unwrap_or_else(|| DEFAULT_REGION.to_string());
    let request_id = format!("fake-{}", shared.next_id());
    let fault = begin(shared, call, true).await?;
    let r = match fault {
        Fault::Throttle => json_error(400, "ThrottlingException", "Rate exceeded"),
        Fault::AccessDenied => json_error(
            400,
            "AccessDeniedException",
            &format!(
                "User: arn:aws:iam::{}:user/fake is not authorized to perform: ecr:{action} on resource: arn:aws:ecr:{region}:{account}:repository/* because no identity-based policy allows the ecr:{action} action",
                shared.ecr_account()
            ),
        ),
        Fault::ServerError => json_error(500, "ServerException", "fake-aws: injected server error"),
        _ => {
            let catalog = shared.catalog();
            if action == "DescribeRepositories" {
                let repos: Vec<Value> = catalog
                    .keys()
                    .map(|name| {
                        serde_json::json!({
                            "repositoryName": name,
                            "registryId": account,
                            "repositoryArn": format!("arn:aws:ecr:{region}:{account}:repository/{name}"),
                            "repositoryUri": format!("{account}.dkr.ecr.{region}.amazonaws.com/{name}"),
                        })
                    })
                    .collect();
                json_response(200, &serde_json::json!({ "repositories": repos }))
            } else {
                let name = input
                    .get("repositoryName")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                match catalog.get(name) {
                    None => json_error(
                        400,
                        "RepositoryNotFoundException",
                        &format!(
                            "The repository with name '{name}' does not exist in the registry with id '{account}'"
                        ),
                    ),
                    Some(tags) => {
                        let ids: Vec<Value> = tags
                            .iter()
                            .map(|t| serde_json::json!({ "imageTag": t }))
                            .collect();
                        json_response(200, &serde_json::json!({ "imageIds": ids }))
                    }
                }
            }
        }
    };
    Ok(with_header(r, "x-amzn-requestid", &request_id))
}

fn ecr_success(
    shared: &Shared,
    service: Service,
    fault: &Fault,
    region: &str,
    access_key_id: Option<&str>,
    registry_ids: &[String],
) -> Resp {
    let lifetime = shared.token_lifetime(service);
    let expires_at: Option<Value> = match fault {
        Fault::NoExpiresAt => None,
        Fault::ExpiresAtOffset(o) => Some(json!(now_epoch().saturating_add(*o))),
        _ => {
            let at = now_epoch_secs() + lifetime.as_secs_f64();
            Some(json!((at * 1000.0).round() / 1000.0))
        }
    };
    let expiry = expires_at.as_ref().and_then(Value::as_f64);
    let origin = || IssuedToken {
        service,
        expires_at: expiry,
        access_key_id: access_key_id.map(str::to_string),
        region: region.to_string(),
    };
    let entry = |account: Option<&str>| -> Value {
        let mut m = Map::new();
        let token = match fault {
            Fault::MissingFields => None,
            Fault::NotBase64 => Some("%%% fake-aws: not base64 %%%".to_string()),
            Fault::NoAwsPrefix => {
                let pw = shared.issue_password(false, origin());
                Some(BASE64.encode(format!("user:{pw}")))
            }
            Fault::HugeToken(n) => {
                let pw = shared.issue_password(true, origin());
                let pad = "p".repeat(n.saturating_sub(pw.len()));
                Some(BASE64.encode(format!("AWS:{pw}{pad}")))
            }
            _ => {
                let pw = shared.issue_password(true, origin());
                Some(BASE64.encode(format!("AWS:{pw}")))
            }
        };
        if let Some(token) = token {
            shared.add_secret(token.clone());
            m.insert("authorizationToken".into(), Value::String(token));
        }
        if let Some(at) = &expires_at {
            m.insert("expiresAt".into(), at.clone());
        }
        if let Some(account) = account {
            m.insert(
                "proxyEndpoint".into(),
                Value::String(format!("https://{account}.dkr.ecr.{region}.amazonaws.com")),
            );
        }
        Value::Object(m)
    };
    let data = if service == Service::EcrPublic {
        entry(None)
    } else if registry_ids.is_empty() {
        Value::Array(vec![entry(Some(&shared.ecr_account()))])
    } else {
        Value::Array(registry_ids.iter().map(|id| entry(Some(id))).collect())
    };
    let mut top = Map::new();
    top.insert("authorizationData".into(), data);
    let body = match fault {
        Fault::HugeBody(n) => json_padded(top, *n),
        _ => Value::Object(top).to_string().into_bytes(),
    };
    response(200, AWS_JSON, body)
}

// ---------------------------------------------------------------------------------------------
// STS (awsQuery)
// ---------------------------------------------------------------------------------------------

fn xml(status: u16, body: impl Into<Bytes>) -> Resp {
    response(status, "text/xml", body)
}

fn sts_error(status: u16, code: &str, message: &str, request_id: &str) -> Resp {
    let kind = if status >= 500 { "Receiver" } else { "Sender" };
    xml(status, query_error_body(kind, code, message, request_id))
}

async fn sts(
    shared: &Shared,
    req: &Req,
    params: &[(String, String)],
) -> Result<Resp, CloseConnection> {
    let action = form_get(params, "Action").unwrap_or_default();
    let (akid, region) = req.scope();
    let mut call = Call::new(Service::Sts, action);
    call.access_key_id = akid.clone();
    call.region = region;
    call.role_arn = form_get(params, "RoleArn").map(str::to_string);
    call.external_id = form_get(params, "ExternalId").map(str::to_string);
    call.session_name = form_get(params, "RoleSessionName").map(str::to_string);
    let request_id = format!("fake-{}", shared.next_id());

    match action {
        "AssumeRole" => {
            let (Some(role_arn), Some(session)) =
                (call.role_arn.clone(), call.session_name.clone())
            else {
                shared.record(call);
                return Ok(sts_error(
                    400,
                    "ValidationError",
                    "fake-aws: RoleArn and RoleSessionName are required",
                    &request_id,
                ));
            };
            let duration = match form_get(params, "DurationSeconds") {
                None => Some(3600),
                Some(d) => d.parse::<i64>().ok().filter(|d| *d > 0),
            };
            let Some(duration) = duration else {
                shared.record(call);
                return Ok(sts_error(
                    400,
                    "ValidationError",
                    "fake-aws: DurationSeconds must be a positive integer",
                    &request_id,
                ));
            };
            let fault = begin(shared, call, true).await?;
            if let Some(r) = sts_fault(
                &fault,
                &request_id,
                &format!("sts:AssumeRole on resource: {role_arn}"),
            ) {
                return Ok(r);
            }
            Ok(assume_role_success(
                shared,
                &fault,
                &role_arn,
                &session,
                duration,
                &request_id,
            ))
        }
        "GetCallerIdentity" => {
            let fault = begin(shared, call, true).await?;
            if let Some(r) = sts_fault(&fault, &request_id, "sts:GetCallerIdentity") {
                return Ok(r);
            }
            let (arn, user_id, account) = shared.caller_identity(akid.as_deref());
            Ok(xml(
                200,
                format!(
                    "<GetCallerIdentityResponse xmlns=\"{STS_NS}\"><GetCallerIdentityResult>\
                     <Arn>{}</Arn><UserId>{}</UserId><Account>{}</Account>\
                     </GetCallerIdentityResult><ResponseMetadata><RequestId>{request_id}\
                     </RequestId></ResponseMetadata></GetCallerIdentityResponse>",
                    xml_escape(&arn),
                    xml_escape(&user_id),
                    xml_escape(&account),
                ),
            ))
        }
        other => {
            let msg = format!("fake-aws: action {other} is not implemented");
            shared.record(call);
            Ok(sts_error(400, "InvalidAction", &msg, &request_id))
        }
    }
}

/// Error responses of the STS faults, or `None` when the fault shapes a successful body.
fn sts_fault(fault: &Fault, request_id: &str, what: &str) -> Option<Resp> {
    Some(match fault {
        Fault::Throttle => sts_error(400, "Throttling", "Rate exceeded", request_id),
        Fault::ServerError => sts_error(
            500,
            "InternalFailure",
            "fake-aws: injected server error",
            request_id,
        ),
        Fault::Unavailable => sts_error(
            503,
            "ServiceUnavailable",
            "fake-aws: service unavailable",
            request_id,
        ),
        Fault::AccessDenied => sts_error(
            403,
            "AccessDenied",
            &format!(
                "User: arn:aws:iam::123456789012:user/fake is not authorized to perform: {what}"
            ),
            request_id,
        ),
        Fault::ExpiredToken => sts_error(
            400,
            "ExpiredToken",
            "The security token included in the request is expired",
            request_id,
        ),
        Fault::ErrorMessage(m) => sts_error(403, "AccessDenied", m, request_id),
        Fault::NotJson => xml(200, "fake-aws: this is neither XML nor JSON {"),
        _ => return None,
    })
}

fn assume_role_success(
    shared: &Shared,
    fault: &Fault,
    role_arn: &str,
    session: &str,
    duration: i64,
    request_id: &str,
) -> Resp {
    let account = role_arn
        .split(':')
        .nth(4)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| shared.ecr_account());
    let role_name = role_arn.rsplit('/').next().unwrap_or(role_arn);
    let creds = shared.issue_creds("FAKEASSUMED", "sts");
    let arn = format!("arn:aws:sts::{account}:assumed-role/{role_name}/{session}");
    let role_id = format!("FAKEROLEID{}:{session}", shared.next_id());
    shared.remember_assumed(&creds.access_key_id, &arn, &role_id);

    let expiration = match fault {
        Fault::NoExpiresAt => String::new(),
        Fault::ExpiresAtOffset(o) => {
            format!(
                "<Expiration>{}</Expiration>",
                iso8601(now_epoch().saturating_add(*o))
            )
        }
        _ => format!(
            "<Expiration>{}</Expiration>",
            iso8601(now_epoch().saturating_add(duration))
        ),
    };
    let credentials = if *fault == Fault::MissingFields {
        String::new()
    } else {
        format!(
            "<Credentials><AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey>\
             <SessionToken>{}</SessionToken>{expiration}</Credentials>",
            creds.access_key_id, creds.secret_access_key, creds.session_token
        )
    };
    let padding = match fault {
        Fault::HugeBody(n) => format!("<Padding>{}</Padding>", "x".repeat(*n)),
        _ => String::new(),
    };
    xml(
        200,
        format!(
            "<AssumeRoleResponse xmlns=\"{STS_NS}\"><AssumeRoleResult>{padding}{credentials}\
             <AssumedRoleUser><Arn>{}</Arn><AssumedRoleId>{}</AssumedRoleId></AssumedRoleUser>\
             </AssumeRoleResult><ResponseMetadata><RequestId>{request_id}</RequestId>\
             </ResponseMetadata></AssumeRoleResponse>",
            xml_escape(&arn),
            xml_escape(&role_id),
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// IMDSv2
// ---------------------------------------------------------------------------------------------

async fn imds(shared: &Shared, req: &Req) -> Result<Resp, CloseConnection> {
    let path = req.path.as_str();
    let (action, content_ok): (String, bool) = match path {
        IMDS_TOKEN_PATH => ("GetToken".into(), false),
        "/latest/dynamic/instance-identity/document" => ("GetIdentityDocument".into(), true),
        "/latest/meta-data/iam/security-credentials"
        | "/latest/meta-data/iam/security-credentials/" => ("ListRoles".into(), false),
        p if p.starts_with(IMDS_CREDS_PREFIX) => ("GetRoleCredentials".into(), true),
        "/latest/meta-data/placement/region" => ("GetRegion".into(), false),
        "/latest/meta-data/placement/availability-zone" => ("GetAvailabilityZone".into(), false),
        "/latest/meta-data/instance-id" => ("GetInstanceId".into(), false),
        p => (format!("{} {p}", req.method), false),
    };
    let fault = begin(shared, Call::new(Service::Imds, action), content_ok).await?;
    match fault {
        Fault::Throttle => return Ok(text(429, "Too Many Requests\n")),
        Fault::ServerError => return Ok(text(500, "Internal Server Error\n")),
        Fault::Unavailable => return Ok(text(503, "Service Unavailable\n")),
        Fault::AccessDenied => return Ok(text(403, "Forbidden\n")),
        Fault::ExpiredToken => return Ok(text(401, "Unauthorized\n")),
        Fault::ErrorMessage(m) => return Ok(text(403, m)),
        _ => {}
    }

    if path == IMDS_TOKEN_PATH {
        if req.method != Method::PUT {
            return Ok(text(405, "Method Not Allowed\n"));
        }
        let ttl = req
            .header(IMDS_TTL_HEADER)
            .and_then(|t| t.trim().parse::<u64>().ok())
            .filter(|t| (1..=21_600).contains(t));
        let Some(ttl) = ttl else {
            return Ok(text(400, "Bad Request\n"));
        };
        let token = shared.issue_imds_token(Duration::from_secs(ttl));
        return Ok(with_header(
            text(200, token),
            IMDS_TTL_HEADER,
            &ttl.to_string(),
        ));
    }
    if req.method != Method::GET {
        return Ok(text(405, "Method Not Allowed\n"));
    }
    if !req
        .header(IMDS_TOKEN_HEADER)
        .is_some_and(|t| shared.imds_token_valid(t))
    {
        return Ok(text(401, "Unauthorized\n"));
    }

    let (account, region) = shared.imds_identity();
    let json_doc = |doc: Map<String, Value>| -> Resp {
        match &fault {
            Fault::NotJson => text(200, "<html>fake-aws: this is not JSON</html>"),
            Fault::MissingFields => text(200, "{}"),
            Fault::HugeBody(n) => text(200, json_padded(doc, *n)),
            _ => text(200, Value::Object(doc).to_string()),
        }
    };
    Ok(match path {
        "/latest/dynamic/instance-identity/document" => {
            let doc = json!({
                "accountId": account,
                "architecture": "x86_64",
                "availabilityZone": format!("{region}a"),
                "billingProducts": null,
                "devpayProductCodes": null,
                "marketplaceProductCodes": null,
                "imageId": "ami-0fake",
                "instanceId": "i-0fake",
                "instanceType": "t3.micro",
                "kernelId": null,
                "pendingTime": iso8601(now_epoch() - 3600),
                "ramdiskId": null,
                "region": region,
                "version": "2017-09-30",
            });
            match doc {
                Value::Object(m) => json_doc(m),
                _ => text(500, "Internal Server Error\n"),
            }
        }
        "/latest/meta-data/iam/security-credentials"
        | "/latest/meta-data/iam/security-credentials/" => text(200, IMDS_ROLE_NAME),
        p if p.starts_with(IMDS_CREDS_PREFIX) => {
            if p.strip_prefix(IMDS_CREDS_PREFIX) != Some(IMDS_ROLE_NAME) {
                return Ok(text(404, "Not Found\n"));
            }
            let now = now_epoch();
            let creds = shared.issue_creds("FAKEIMDS", "imds");
            let mut m = Map::new();
            m.insert("Code".into(), json!("Success"));
            m.insert("LastUpdated".into(), json!(iso8601(now)));
            m.insert("Type".into(), json!("AWS-HMAC"));
            m.insert("AccessKeyId".into(), json!(creds.access_key_id));
            m.insert("SecretAccessKey".into(), json!(creds.secret_access_key));
            m.insert("Token".into(), json!(creds.session_token));
            match fault {
                Fault::NoExpiresAt => {}
                Fault::ExpiresAtOffset(o) => {
                    m.insert("Expiration".into(), json!(iso8601(now.saturating_add(o))));
                }
                _ => {
                    m.insert(
                        "Expiration".into(),
                        json!(iso8601(now + IMDS_CREDS_LIFETIME)),
                    );
                }
            }
            json_doc(m)
        }
        "/latest/meta-data/placement/region" => text(200, region),
        "/latest/meta-data/placement/availability-zone" => text(200, format!("{region}a")),
        "/latest/meta-data/instance-id" => text(200, "i-0fake"),
        _ => text(404, "Not Found\n"),
    })
}
