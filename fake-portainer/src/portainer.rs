//! The Portainer API routes: the CSRF layer, the request bouncer and the handlers, each after
//! the Go file it mirrors (Portainer CE, `api/http/...`).

use hyper::Method;
use hyper::header::{AUTHORIZATION, HeaderMap};
use serde::Serialize;

use crate::gojson::{self, Decoded, Field, Kind, capitalize, go_quote};
use crate::server::{Resp, response};
use crate::state::{ECR, GITLAB, Inner, PROGET, Shared, Stored, User};

const API_KEY_HEADER: &str = "x-api-key";
const JSON: &str = "application/json";

/// The parts of a request the handlers look at.
pub(crate) struct Req<'a> {
    pub(crate) method: &'a Method,
    /// The raw path (still percent-encoded).
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: &'a str,
}

impl Req<'_> {
    /// Go's `Header.Get`: the first value, `""` when absent.
    fn header(&self, name: impl hyper::header::AsHeaderName) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    fn query_pairs(&self) -> Vec<(String, String)> {
        self.query.map(parse_query).unwrap_or_default()
    }

    /// Go's `FormValue` for a GET: the first value of the query parameter.
    fn query_value(&self, name: &str) -> String {
        self.query_pairs()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers: Go's error JSON, strconv.Atoi, URL decoding.
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct ErrorJson<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    details: &'a str,
}

/// `{"message","details"}` as libhttp/error's `writeErrorResponse` writes it; `err` is the Go
/// error's text, which it capitalizes.
pub(crate) fn error(status: u16, message: &str, err: &str) -> Resp {
    let details = capitalize(err);
    let body = serde_json::to_string(&ErrorJson {
        message,
        details: &details,
    })
    .unwrap_or_default();
    response(status, JSON, escape_html(&body))
}

/// segmentio's encoder with `EscapeHTML` (Portainer's `response.JSON`): `<`, `>`, `&`, U+2028
/// and U+2029 as `\u` escapes (in serde_json's output they can only be inside strings).
fn escape_html(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

fn json<T: Serialize>(status: u16, v: &T) -> Resp {
    match serde_json::to_string(v) {
        Ok(body) => response(status, JSON, escape_html(&body)),
        Err(e) => error(500, "Unable to write JSON response", &e.to_string()),
    }
}

fn not_found() -> Resp {
    // gorilla/mux's NotFoundHandler (net/http's NotFound).
    response(404, "text/plain; charset=utf-8", "404 page not found\n")
}

fn method_not_allowed() -> Resp {
    // gorilla/mux's methodNotAllowedHandler: the status alone.
    let mut r = response(405, JSON, "");
    r.headers_mut().remove(hyper::header::CONTENT_TYPE);
    r
}

fn not_implemented(what: &str) -> Resp {
    error(
        501,
        &format!("fake-portainer does not implement {what}"),
        "",
    )
}

/// Go's `strconv.Atoi`: an optional sign and decimal digits, within `i64`.
fn go_atoi(s: &str) -> Result<i64, String> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "strconv.Atoi: parsing {}: invalid syntax",
            go_quote(s)
        ));
    }
    s.parse::<i64>()
        .map_err(|_| format!("strconv.Atoi: parsing {}: value out of range", go_quote(s)))
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decoding; `plus` also turns `+` into a space (query strings).
fn unescape(s: &str, plus: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Go's `url.ParseQuery`, in order.
fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (unescape(k, true), unescape(v, true))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------------

/// Who may call a route: the bouncer's `AuthenticatedAccess` or `AdminAccess`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Authenticated,
    Admin,
}

/// Answers one `/api` request (and anything outside `/api` and `/_fake`).
pub(crate) fn route(shared: &Shared, req: &Req<'_>) -> Resp {
    // api/http/csrf/csrf.go withSkipCSRF, api/http/security/bouncer.go ShouldSkipCSRFCheck:
    // in front of every route, both headers at once is refused.
    if both_headers(req) {
        let msg = "api key and auth header are not allowed at the same time";
        return error(403, msg, msg);
    }
    // api/http/handler/handler.go routes on prefixes and strips "/api"; gorilla/mux matches
    // the decoded path.
    let path = unescape(req.path, false);
    let m = req.method;
    match path.as_str() {
        // api/http/handler/system/handler.go: public routes.
        "/api/system/status" | "/api/status" => match *m {
            Method::GET => system_status(shared),
            _ => method_not_allowed(),
        },
        // api/http/handler/auth/handler.go: public, rate limited (the limit is not mirrored).
        "/api/auth" => match *m {
            Method::POST => authenticate(shared, req),
            _ => method_not_allowed(),
        },
        // api/http/handler/registries/handler.go initRouter.
        "/api/registries" => match *m {
            Method::GET => guarded(shared, req, Access::Admin, |u| registry_list(shared, u)),
            Method::POST => guarded(shared, req, Access::Admin, |_| {
                not_implemented("POST /api/registries")
            }),
            _ => method_not_allowed(),
        },
        p => {
            let Some(rest) = p.strip_prefix("/api/registries/") else {
                return not_found();
            };
            if !rest.is_empty() && !rest.contains('/') {
                return match *m {
                    Method::GET => guarded(shared, req, Access::Authenticated, |u| {
                        registry_inspect(shared, req, u, rest)
                    }),
                    Method::PUT => guarded(shared, req, Access::Admin, |u| {
                        registry_update(shared, req, u, rest)
                    }),
                    Method::DELETE => guarded(shared, req, Access::Admin, |_| {
                        not_implemented("DELETE /api/registries/{id}")
                    }),
                    _ => method_not_allowed(),
                };
            }
            match rest.strip_suffix("/configure") {
                Some(id) if !id.is_empty() && !id.contains('/') => match *m {
                    Method::POST => guarded(shared, req, Access::Admin, |_| {
                        not_implemented("POST /api/registries/{id}/configure")
                    }),
                    _ => method_not_allowed(),
                },
                _ => not_found(),
            }
        }
    }
}

/// Both `X-API-Key` and `Authorization` present and non-empty.
pub(crate) fn both_headers(req: &Req<'_>) -> bool {
    let key = req.header(API_KEY_HEADER).unwrap_or_default();
    let auth = req.header(AUTHORIZATION).unwrap_or_default();
    !key.is_empty() && !auth.is_empty()
}

/// bouncer.go extractAPIKey: the `X-API-Key` header when non-empty, else the first query
/// parameter named `x-api-key` in any case.
pub(crate) fn api_key(req: &Req<'_>) -> Option<String> {
    if let Some(k) = req.header(API_KEY_HEADER).filter(|k| !k.is_empty()) {
        return Some(k);
    }
    req.query_pairs()
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("X-API-KEY"))
        .map(|(_, v)| v)
}

/// bouncer.go extractBearerToken: the `token` query parameter when non-empty, else the first
/// `Authorization` header with a leading `Bearer ` removed.
pub(crate) fn bearer(req: &Req<'_>) -> Option<String> {
    let token = req.query_value("token");
    if !token.is_empty() {
        return Some(token);
    }
    let h = req.header(AUTHORIZATION)?;
    Some(h.strip_prefix("Bearer ").unwrap_or(&h).to_string())
}

/// api/http/security/bouncer.go: `mwAuthenticatedUser` (API key first, then the cookie, which
/// is not mirrored, then the bearer JWT) and, for `AdminAccess`,
/// `mwCheckPortainerAuthorizations(administratorOnly)`.
fn guarded(shared: &Shared, req: &Req<'_>, access: Access, h: impl FnOnce(User) -> Resp) -> Resp {
    let user = {
        let inner = shared.lock();
        let found = if let Some(key) = api_key(req) {
            // apiKeyLookup: an unknown key is ErrInvalidKey, answered as below.
            inner.user_by_api_key(&key).ok_or("Invalid JWT token")
        } else if let Some(token) = bearer(req) {
            inner.user_by_jwt(&token).ok_or("Invalid JWT token")
        } else {
            Err("A valid authorization token is missing")
        };
        match found {
            Ok(u) => u,
            Err(message) => return error(401, message, "Unauthorized"),
        }
    };
    if access == Access::Admin && !user.admin {
        return error(403, "Access denied", "Unauthorized");
    }
    h(user)
}

// ---------------------------------------------------------------------------------------------
// api/http/handler/system/status.go
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct StatusJson<'a> {
    #[serde(rename = "Version")]
    version: &'a str,
    #[serde(rename = "InstanceID")]
    instance_id: &'a str,
}

/// Mirrors api/http/handler/system/status.go systemStatus (and statusInspectDeprecated).
fn system_status(shared: &Shared) -> Resp {
    let inner = shared.lock();
    json(
        200,
        &StatusJson {
            version: inner.version(),
            instance_id: &inner.instance_id,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// api/http/handler/auth/authenticate.go
// ---------------------------------------------------------------------------------------------

const AUTH_FIELDS: &[Field] = &[
    Field {
        name: "Username",
        kind: Kind::Str,
        pointer: false,
    },
    Field {
        name: "Password",
        kind: Kind::Str,
        pointer: false,
    },
];

#[derive(Serialize)]
struct JwtJson<'a> {
    jwt: &'a str,
}

/// Mirrors api/http/handler/auth/authenticate.go authenticate with internal authentication.
fn authenticate(shared: &Shared, req: &Req<'_>) -> Resp {
    let payload = match gojson::decode(req.body, "auth.authenticatePayload", AUTH_FIELDS) {
        Ok(p) => p,
        Err(details) => return error(400, "Invalid request payload", &details),
    };
    let username = payload.str("Username").unwrap_or_default();
    let password = payload.str("Password").unwrap_or_default();
    // authenticatePayload.Validate
    if username.is_empty() {
        return error(400, "Invalid request payload", "Invalid username");
    }
    if password.is_empty() {
        return error(400, "Invalid request payload", "Invalid password");
    }
    let mut inner = shared.lock();
    // UserByUsername compares with strings.EqualFold; an unknown user meets a fake hash.
    let user = inner
        .users
        .iter()
        .find(|u| u.username.to_lowercase() == username.to_lowercase())
        .filter(|u| u.password == password)
        .cloned();
    let Some(user) = user else {
        return error(422, "Invalid credentials", "Unauthorized");
    };
    let token = inner.issue_jwt(&user);
    json(200, &JwtJson { jwt: &token })
}

// ---------------------------------------------------------------------------------------------
// The portainer.Registry JSON shape (api/portainer.go)
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct TlsJson {
    #[serde(rename = "TLS")]
    tls: bool,
    #[serde(rename = "TLSSkipVerify")]
    skip_verify: bool,
}

#[derive(Serialize)]
struct EcrJson<'a> {
    #[serde(rename = "Region")]
    region: &'a str,
}

/// `RegistryManagementConfiguration`, as `syncConfig` (registry_update.go) keeps it.
#[derive(Serialize)]
struct ManagementJson<'a> {
    #[serde(rename = "Type")]
    kind: u32,
    #[serde(rename = "Authentication")]
    authentication: bool,
    #[serde(rename = "Username")]
    username: &'a str,
    #[serde(rename = "Password")]
    password: &'a str,
    #[serde(rename = "TLSConfig")]
    tls: TlsJson,
    #[serde(rename = "Ecr")]
    ecr: EcrJson<'a>,
}

#[derive(Serialize)]
struct GitlabJson<'a> {
    #[serde(rename = "ProjectId")]
    project_id: i64,
    #[serde(rename = "InstanceURL")]
    instance_url: &'a str,
    #[serde(rename = "ProjectPath")]
    project_path: &'a str,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Serialize)]
struct QuayJson<'a> {
    #[serde(rename = "UseOrganisation", skip_serializing_if = "is_false")]
    use_organisation: bool,
    #[serde(rename = "OrganisationName")]
    organisation_name: &'a str,
}

/// `portainer.Registry`, fields in Go's order.
#[derive(Serialize)]
struct RegistryJson<'a> {
    #[serde(rename = "Id")]
    id: u32,
    #[serde(rename = "Type")]
    kind: u32,
    #[serde(rename = "Name")]
    name: &'a str,
    #[serde(rename = "URL")]
    url: &'a str,
    #[serde(rename = "BaseURL")]
    base_url: &'a str,
    #[serde(rename = "Authentication")]
    authentication: bool,
    #[serde(rename = "Username")]
    username: &'a str,
    #[serde(rename = "Password", skip_serializing_if = "str::is_empty")]
    password: &'a str,
    #[serde(rename = "ManagementConfiguration")]
    management: Option<ManagementJson<'a>>,
    #[serde(rename = "Gitlab")]
    gitlab: GitlabJson<'a>,
    #[serde(rename = "Quay")]
    quay: QuayJson<'a>,
    #[serde(rename = "Ecr")]
    ecr: EcrJson<'a>,
    /// Made `{}` by registryCreate; the fake grants no environment access.
    #[serde(rename = "RegistryAccesses")]
    accesses: serde_json::Map<String, serde_json::Value>,
    #[serde(rename = "UserAccessPolicies")]
    user_access_policies: Option<()>,
    #[serde(rename = "TeamAccessPolicies")]
    team_access_policies: Option<()>,
    #[serde(rename = "AuthorizedUsers")]
    authorized_users: Option<()>,
    #[serde(rename = "AuthorizedTeams")]
    authorized_teams: Option<()>,
}

/// The JSON of a record; `hide` is registries/handler.go hideFields (no Password, no
/// ManagementConfiguration).
fn registry_json(s: &Stored, hide: bool) -> RegistryJson<'_> {
    let r = &s.rec;
    RegistryJson {
        id: r.id,
        kind: r.kind,
        name: &r.name,
        url: &r.url,
        base_url: &s.base_url,
        authentication: r.authentication,
        username: &r.username,
        password: if hide { "" } else { &r.password },
        management: (!hide).then(|| ManagementJson {
            kind: r.kind,
            authentication: r.authentication,
            username: &r.username,
            password: &r.password,
            tls: TlsJson {
                tls: false,
                skip_verify: false,
            },
            ecr: EcrJson {
                region: &s.ecr_region,
            },
        }),
        gitlab: GitlabJson {
            project_id: s.gitlab.project_id,
            instance_url: &s.gitlab.instance_url,
            project_path: &s.gitlab.project_path,
        },
        quay: QuayJson {
            use_organisation: s.quay.use_organisation,
            organisation_name: &s.quay.organisation_name,
        },
        ecr: EcrJson {
            region: &s.ecr_region,
        },
        accesses: serde_json::Map::new(),
        user_access_policies: None,
        team_access_policies: None,
        authorized_users: None,
        authorized_teams: None,
    }
}

// ---------------------------------------------------------------------------------------------
// api/http/handler/registries
// ---------------------------------------------------------------------------------------------

const NOT_FOUND_MESSAGE: &str =
    "Unable to find a registry with the specified identifier inside the database";
/// dataservices/errors ErrObjectNotFound.
const OBJECT_NOT_FOUND: &str = "object not found inside the database";

/// The stored record for a route's `{id}`, or the 400 / 404 answer.
fn find<'a>(inner: &'a Inner, id: &str) -> Result<&'a Stored, Box<Resp>> {
    let id = go_atoi(id)
        .map_err(|e| Box::new(error(400, "Invalid registry identifier route variable", &e)))?;
    u32::try_from(id)
        .ok()
        .and_then(|id| inner.records.get(&id))
        .ok_or_else(|| Box::new(error(404, NOT_FOUND_MESSAGE, OBJECT_NOT_FOUND)))
}

/// Mirrors registries/registry_list.go registryList: every record, Password included (no
/// hideFields there).
fn registry_list(shared: &Shared, user: User) -> Resp {
    if !user.admin {
        // Unreachable behind AdminAccess, as in Portainer.
        return error(
            403,
            "Permission denied to list registries, use /endpoints/:endpointId/registries route instead",
            "Access denied to resource",
        );
    }
    let inner = shared.lock();
    let all: Vec<RegistryJson<'_>> = inner
        .records
        .values()
        .map(|s| registry_json(s, false))
        .collect();
    json(200, &all)
}

/// Mirrors registries/registry_inspect.go registryInspect.
fn registry_inspect(shared: &Shared, req: &Req<'_>, user: User, id: &str) -> Resp {
    let inner = shared.lock();
    let stored = match find(&inner, id) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if !user.admin {
        // handler.go userHasRegistryAccess: a standard user must name an environment
        // (?endpointId=), and the fake has none.
        let endpoint = req.query_value("endpointId");
        let err = if endpoint.is_empty() {
            "Missing query parameter".to_string()
        } else {
            match go_atoi(&endpoint) {
                Err(e) => e,
                Ok(_) => OBJECT_NOT_FOUND.to_string(),
            }
        };
        return error(500, "Unable to retrieve info from request context", &err);
    }
    json(200, &registry_json(stored, true))
}

const QUAY_FIELDS: &[Field] = &[
    Field {
        name: "UseOrganisation",
        kind: Kind::Bool,
        pointer: false,
    },
    Field {
        name: "OrganisationName",
        kind: Kind::Str,
        pointer: false,
    },
];

const ECR_FIELDS: &[Field] = &[Field {
    name: "Region",
    kind: Kind::Str,
    pointer: false,
}];

/// registry_update.go registryUpdatePayload.
const UPDATE_FIELDS: &[Field] = &[
    Field {
        name: "Name",
        kind: Kind::Str,
        pointer: true,
    },
    Field {
        name: "URL",
        kind: Kind::Str,
        pointer: true,
    },
    Field {
        name: "BaseURL",
        kind: Kind::Str,
        pointer: true,
    },
    Field {
        name: "Authentication",
        kind: Kind::Bool,
        pointer: true,
    },
    Field {
        name: "Username",
        kind: Kind::Str,
        pointer: true,
    },
    Field {
        name: "Password",
        kind: Kind::Str,
        pointer: true,
    },
    Field {
        name: "Quay",
        kind: Kind::Struct("portainer.QuayRegistryData", QUAY_FIELDS),
        pointer: true,
    },
    Field {
        name: "RegistryAccesses",
        kind: Kind::Map("portainer.RegistryAccesses"),
        pointer: true,
    },
    Field {
        name: "Ecr",
        kind: Kind::Struct("portainer.EcrData", ECR_FIELDS),
        pointer: true,
    },
];

/// registries/handler.go registriesHaveSameURLAndCredentials.
fn same_url_and_credentials(r1: &Stored, r2: &Stored) -> bool {
    let (a, b) = (&r1.rec, &r2.rec);
    let same_url = a.url == b.url;
    let same_credentials =
        a.authentication == b.authentication && (!a.authentication || a.username == b.username);
    if a.kind != GITLAB || b.kind != GITLAB {
        return same_url && same_credentials;
    }
    same_url && same_credentials && r1.gitlab.project_path == r2.gitlab.project_path
}

/// Mirrors registries/registry_update.go registryUpdate.
fn registry_update(shared: &Shared, req: &Req<'_>, user: User, id: &str) -> Resp {
    if !user.admin {
        // Unreachable behind AdminAccess, as in Portainer.
        return error(
            403,
            "Permission denied to update registry",
            "Access denied to resource",
        );
    }
    let mut inner = shared.lock();
    let mut registry = match find(&inner, id) {
        Ok(s) => s.clone(),
        Err(r) => return *r,
    };
    let payload: Decoded =
        match gojson::decode(req.body, "registries.registryUpdatePayload", UPDATE_FIELDS) {
            Ok(p) => p,
            Err(details) => return error(400, "Invalid request payload", &details),
        };

    if let Some(name) = payload.str("Name") {
        registry.rec.name = name.to_string();
    }
    // The name must be unique even when the body has no Name.
    if inner
        .records
        .values()
        .any(|r| r.rec.id != registry.rec.id && r.rec.name == registry.rec.name)
    {
        return error(
            409,
            "Another registry with the same name already exists",
            "a registry is already defined with this name",
        );
    }

    if registry.rec.kind == PROGET
        && let Some(base) = payload.str("BaseURL")
    {
        registry.base_url = base.to_string();
    }

    match payload.bool("Authentication") {
        Some(true) => {
            registry.rec.authentication = true;
            if let Some(u) = payload.str("Username") {
                registry.rec.username = u.to_string();
            }
            // An empty Password keeps the stored one.
            if let Some(p) = payload.str("Password").filter(|p| !p.is_empty()) {
                registry.rec.password = p.to_string();
            }
            if registry.rec.kind == ECR
                && let Some(region) = payload
                    .obj("Ecr")
                    .and_then(|e| e.str("Region").map(str::to_string))
                    .filter(|r| !r.is_empty())
            {
                registry.ecr_region = region;
            }
        }
        Some(false) => {
            registry.rec.authentication = false;
            registry.rec.username.clear();
            registry.rec.password.clear();
            registry.ecr_region.clear();
        }
        None => {}
    }

    if let Some(url) = payload.str("URL") {
        registry.rec.url = url.to_string();
        if inner
            .records
            .values()
            .any(|r| r.rec.id != registry.rec.id && same_url_and_credentials(r, &registry))
        {
            return error(
                409,
                "Another registry with the same URL and credentials already exists",
                "a registry is already defined for this URL and credentials",
            );
        }
    }

    if let Some(q) = payload.obj("Quay") {
        // cmp.Or(payload.Quay, ...): a Quay object replaces the whole struct.
        registry.quay.use_organisation = q.bool("UseOrganisation").unwrap_or(false);
        registry.quay.organisation_name = q.str("OrganisationName").unwrap_or_default().to_string();
    }

    inner.put(registry.clone());
    // response.JSON(w, registry): the whole record, Password and ManagementConfiguration too.
    json(200, &registry_json(&registry, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atoi_like_go() {
        assert_eq!(go_atoi("12"), Ok(12));
        assert_eq!(go_atoi("+7"), Ok(7));
        assert_eq!(go_atoi("-3"), Ok(-3));
        assert_eq!(go_atoi("007"), Ok(7));
        assert_eq!(
            go_atoi("abc"),
            Err(r#"strconv.Atoi: parsing "abc": invalid syntax"#.to_string())
        );
        assert_eq!(
            go_atoi("99999999999999999999"),
            Err(r#"strconv.Atoi: parsing "99999999999999999999": value out of range"#.to_string())
        );
        assert!(go_atoi("").is_err());
        assert!(go_atoi("1_0").is_err());
    }

    #[test]
    fn query_and_path_decoding() {
        assert_eq!(
            parse_query("a=1&X-Api-Key=ptr_a%2Bb%2F%3D&b"),
            vec![
                ("a".to_string(), "1".to_string()),
                ("X-Api-Key".to_string(), "ptr_a+b/=".to_string()),
                ("b".to_string(), String::new()),
            ]
        );
        assert_eq!(unescape("/api/registries/%31", false), "/api/registries/1");
        assert_eq!(unescape("a+b%", false), "a+b%");
        assert_eq!(unescape("a+b", true), "a b");
    }

    #[test]
    fn html_is_escaped_like_go() {
        let body = serde_json::to_string(&serde_json::json!({"n": "<a&b>\u{2028}"})).unwrap();
        let escaped = escape_html(&body);
        assert_eq!(escaped, r#"{"n":"\u003ca\u0026b\u003e\u2028"}"#);
        let back: serde_json::Value = serde_json::from_str(&escaped).unwrap();
        assert_eq!(back["n"], "<a&b>\u{2028}");
    }
}
