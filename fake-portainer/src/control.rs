//! The `/_fake/` control plane: records, the request log and secrets as plain JSON.

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::server::{Resp, response};
use crate::state::Shared;
use crate::{Auth, Record, Request};

#[derive(Serialize)]
struct RecordJson<'a> {
    id: u32,
    name: &'a str,
    kind: u32,
    url: &'a str,
    authentication: bool,
    username: &'a str,
    password: &'a str,
}

impl<'a> From<&'a Record> for RecordJson<'a> {
    fn from(r: &'a Record) -> Self {
        RecordJson {
            id: r.id,
            name: &r.name,
            kind: r.kind,
            url: &r.url,
            authentication: r.authentication,
            username: &r.username,
            password: &r.password,
        }
    }
}

#[derive(Deserialize)]
struct NewRecord {
    name: String,
    kind: u32,
    url: String,
    #[serde(default)]
    authentication: bool,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

#[derive(Serialize)]
struct RequestJson<'a> {
    method: &'a str,
    path: &'a str,
    status: u16,
    auth: &'static str,
    api_key: Option<&'a str>,
    body: &'a str,
}

impl<'a> From<&'a Request> for RequestJson<'a> {
    fn from(r: &'a Request) -> Self {
        let (auth, api_key) = match &r.auth {
            Auth::None => ("none", None),
            Auth::ApiKey(k) => ("api-key", Some(k.as_str())),
            Auth::Bearer => ("bearer", None),
            Auth::Both => ("both", None),
        };
        RequestJson {
            method: &r.method,
            path: &r.path,
            status: r.status,
            auth,
            api_key,
            body: &r.body,
        }
    }
}

fn json<T: Serialize>(status: u16, v: &T) -> Resp {
    match serde_json::to_string(v) {
        Ok(b) => response(status, "application/json", b),
        Err(e) => message(500, &e.to_string()),
    }
}

fn message(status: u16, m: &str) -> Resp {
    json(status, &serde_json::json!({ "message": m }))
}

/// Answers a `/_fake/...` request.
pub(crate) fn handle(shared: &Shared, method: &Method, path: &str, body: &str) -> Resp {
    match (method, path.trim_end_matches('/')) {
        (&Method::GET, "/_fake/records") => {
            let records = shared.records();
            let out: Vec<RecordJson<'_>> = records.iter().map(RecordJson::from).collect();
            json(200, &out)
        }
        (&Method::POST, "/_fake/records") => match serde_json::from_str::<NewRecord>(body) {
            Ok(n) => {
                let id = shared.add_record(
                    &n.name,
                    n.kind,
                    &n.url,
                    n.authentication,
                    &n.username,
                    &n.password,
                );
                json(200, &serde_json::json!({ "id": id }))
            }
            Err(e) => message(400, &format!("bad record: {e}")),
        },
        (&Method::GET, "/_fake/requests") => {
            let log = shared.requests();
            let out: Vec<RequestJson<'_>> = log.iter().map(RequestJson::from).collect();
            json(200, &out)
        }
        (&Method::DELETE, "/_fake/requests") => {
            shared.reset_requests();
            json(200, &serde_json::json!({ "ok": true }))
        }
        (&Method::GET, "/_fake/secrets") => json(200, &shared.secrets()),
        (&Method::GET, "/_fake/health") => json(200, &serde_json::json!({ "ok": true })),
        _ => message(404, "fake-portainer: no such control route"),
    }
}
