//! Out-of-process control plane under `/_fake/`: inspect calls and program faults over HTTP.

use std::time::Duration;

use hyper::Method;
use serde_json::{Value, json};

use super::{Req, Resp, json_response};
use crate::protocol::{form_decode, form_get};
use crate::state::{Bucket, Shared};
use crate::{Fault, RegistryKind, Service};

fn ok() -> Resp {
    json_response(200, &json!({ "ok": true }))
}

fn bad(status: u16, msg: &str) -> Resp {
    json_response(status, &json!({ "ok": false, "error": msg }))
}

/// Handles one control-plane request; never touches recorded calls' faults or rate limits
/// except as asked.
pub(super) fn handle(shared: &Shared, req: &Req) -> Resp {
    let q = form_decode(&req.query);
    let path = req.path.trim_end_matches('/');
    let read_only = matches!(
        path,
        "/_fake/calls"
            | "/_fake/counts"
            | "/_fake/secrets"
            | "/_fake/health"
            | "/_fake/registry"
            | "/_fake"
    );
    if read_only {
        if req.method != Method::GET && req.method != Method::HEAD {
            return bad(405, "use GET");
        }
    } else if req.method != Method::POST && req.method != Method::PUT {
        return bad(405, "use POST");
    }
    match path {
        "/_fake" | "/_fake/health" => {
            json_response(200, &json!({ "ok": true, "service": "fake-aws" }))
        }
        "/_fake/calls" => json_response(200, &calls_json(shared, true)),
        "/_fake/counts" => json_response(200, &calls_json(shared, false)),
        "/_fake/secrets" => json_response(200, &json!(shared.secrets())),
        "/_fake/registry" => json_response(200, &registry_json(shared)),
        "/_fake/reset" => {
            shared.reset_calls();
            ok()
        }
        "/_fake/fault" => set_fault(shared, &q),
        "/_fake/lifetime" => match form_get(&q, "secs").and_then(|s| s.parse::<u64>().ok()) {
            Some(secs) => {
                let d = Duration::from_secs(secs);
                for s in [Service::Ecr, Service::EcrPublic] {
                    shared.with_service(s, |st| st.token_lifetime = d);
                }
                ok()
            }
            None => bad(400, "lifetime needs secs=N"),
        },
        "/_fake/rate" => set_rate(shared, &q),
        "/_fake/latency" => {
            let svc = match service(&q) {
                Ok(s) => s,
                Err(e) => return bad(400, &e),
            };
            match form_get(&q, "ms").and_then(|s| s.parse::<u64>().ok()) {
                Some(ms) => {
                    shared.with_service(svc, |st| st.latency = Duration::from_millis(ms));
                    ok()
                }
                None => bad(400, "latency needs ms=N"),
            }
        }
        "/_fake/identity" => {
            let (account, region) = shared.imds_identity();
            let account = form_get(&q, "account").unwrap_or(&account).to_string();
            let region = form_get(&q, "region").unwrap_or(&region).to_string();
            shared.set_imds_identity(&account, &region);
            ok()
        }
        _ => bad(404, "unknown control path"),
    }
}

fn service(q: &[(String, String)]) -> Result<Service, String> {
    form_get(q, "service")
        .ok_or_else(|| "service=ecr|ecr-public|sts|imds is required".to_string())?
        .parse()
}

fn set_fault(shared: &Shared, q: &[(String, String)]) -> Resp {
    let svc = match service(q) {
        Ok(s) => s,
        Err(e) => return bad(400, &e),
    };
    let fault: Fault = match form_get(q, "fault").map(str::parse) {
        Some(Ok(f)) => f,
        Some(Err(e)) => return bad(400, &e),
        None => return bad(400, "fault=NAME is required"),
    };
    match form_get(q, "count") {
        None => shared.with_service(svc, |st| st.default_fault = fault),
        Some(c) => match c.parse::<usize>() {
            Ok(n) if n <= 1_000_000 => shared.with_service(svc, |st| {
                st.queue.extend(std::iter::repeat_n(fault, n));
            }),
            _ => return bad(400, "count must be an integer up to 1000000"),
        },
    }
    ok()
}

fn set_rate(shared: &Shared, q: &[(String, String)]) -> Resp {
    let svc = match service(q) {
        Ok(s) => s,
        Err(e) => return bad(400, &e),
    };
    if matches!(form_get(q, "rate"), Some("off" | "none")) {
        shared.with_service(svc, |st| st.bucket = None);
        return ok();
    }
    let rate = form_get(q, "rate").and_then(|r| r.parse::<f64>().ok());
    let burst = form_get(q, "burst").and_then(|b| b.parse::<u32>().ok());
    match (rate, burst) {
        (Some(rate), Some(burst)) if rate.is_finite() && rate >= 0.0 => {
            shared.with_service(svc, |st| st.bucket = Some(Bucket::new(rate, burst)));
            ok()
        }
        _ => bad(400, "rate needs rate=R (per second, or off) and burst=B"),
    }
}

fn calls_json(shared: &Shared, with_list: bool) -> Value {
    let calls = shared.calls();
    let started = shared.started();
    let mut counts = serde_json::Map::new();
    for s in Service::ALL {
        let n = calls.iter().filter(|c| c.service == s).count();
        counts.insert(s.name().to_string(), json!(n));
    }
    let settings: Vec<Value> = shared
        .settings()
        .into_iter()
        .map(|(s, fault, queued, latency, bucket)| {
            json!({
                "service": s.name(),
                "fault": fault.to_string(),
                "queued_faults": queued,
                "latency_ms": latency.as_millis() as u64,
                "rate": bucket.as_ref().map(Bucket::rate),
                "burst": bucket.as_ref().map(Bucket::burst),
            })
        })
        .collect();
    let mut out = json!({
        "total": calls.len(),
        "counts": counts,
        "settings": settings,
    });
    if with_list && let Value::Object(m) = &mut out {
        let list: Vec<Value> = calls
            .iter()
            .map(|c| {
                json!({
                    "service": c.service.name(),
                    "action": c.action,
                    "region": c.region,
                    "access_key_id": c.access_key_id,
                    "role_arn": c.role_arn,
                    "external_id": c.external_id,
                    "session_name": c.session_name,
                    "registry_ids": c.registry_ids,
                    "fault": c.fault.to_string(),
                    "at_ms": c.at.saturating_duration_since(started).as_millis() as u64,
                })
            })
            .collect();
        m.insert("calls".into(), Value::Array(list));
    }
    out
}

fn registry_json(shared: &Shared) -> Value {
    let calls = shared.registry_calls();
    let started = shared.started();
    let mut counts = serde_json::Map::new();
    for k in RegistryKind::ALL {
        let n = calls.iter().filter(|c| c.kind == k).count();
        counts.insert(k.name().to_string(), json!(n));
    }
    let list: Vec<Value> = calls
        .iter()
        .map(|c| {
            json!({
                "kind": c.kind.name(),
                "method": c.method,
                "path": c.path,
                "host": c.host,
                "sni": c.sni,
                "accept": c.accept,
                "range": c.range,
                "authorization": c.authorization,
                "status": c.status,
                "at_ms": c.at.saturating_duration_since(started).as_millis() as u64,
            })
        })
        .collect();
    json!({ "total": calls.len(), "counts": counts, "calls": list })
}
