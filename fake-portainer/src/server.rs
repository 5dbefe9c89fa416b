//! The HTTPS server: TLS handshakes, HTTP/1.1 connections, faults, the request log.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use crate::portainer::{self, Req};
use crate::state::{Shared, random_bytes};
use crate::{Auth, Fault, control};

/// Response type of every handler.
pub(crate) type Resp = Response<Full<Bytes>>;

/// Largest request body read; a bigger one is answered 413.
const MAX_REQUEST_BODY: usize = 8 << 20;
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Returned by a handler to make hyper close the connection without writing a response.
#[derive(Debug)]
struct Dropped;

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fake-portainer: connection dropped")
    }
}

impl std::error::Error for Dropped {}

/// A response with a body; every answer carries `X-Content-Type-Options: nosniff`, as
/// Portainer's `MWSecureHeaders` and net/http's errors set it.
pub(crate) fn response(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Accepts connections until `shutdown` fires (or its sender is dropped).
pub(crate) async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    config: Arc<rustls::ServerConfig>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fake-portainer: cannot serve: {e}");
            return;
        }
    };
    let acceptor = TlsAcceptor::from(config);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, acceptor.clone(), Arc::clone(&shared)));
                }
                // Out of file descriptors or similar: back off a little instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

/// One client connection: the handshake, then HTTP/1.1 until either side closes it or the
/// certificate rotates.
async fn connection(stream: TcpStream, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut rotations = shared.rotations();
    rotations.borrow_and_update();
    let work = async move {
        let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
        else {
            return;
        };
        let svc = service_fn(move |req| handle(Arc::clone(&shared), req));
        // Errors (client went away, deliberate drops) just end the connection.
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(tls), svc)
            .await;
    };
    tokio::select! {
        () = work => {}
        _ = rotations.changed() => {}
    }
}

/// How a request authenticated itself, for the log.
fn classify(req: &Req<'_>) -> Auth {
    if portainer::both_headers(req) {
        Auth::Both
    } else if let Some(k) = portainer::api_key(req) {
        Auth::ApiKey(k)
    } else if portainer::bearer(req).is_some() {
        Auth::Bearer
    } else {
        Auth::None
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Resp, Dropped> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let control = path == "/_fake" || path.starts_with("/_fake/");
    let auth = classify(&Req {
        method: &parts.method,
        path: &path,
        query: parts.uri.query(),
        headers: &parts.headers,
        body: "",
    });
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            let r = portainer::error(413, "Request body too large", "fake-portainer limit");
            if !control {
                let seq = shared.log_begin(parts.method.as_str(), &path, auth, String::new());
                shared.log_status(seq, 413);
            }
            return Ok(r);
        }
        Err(_) => return Err(Dropped),
    };
    let body = String::from_utf8_lossy(&body).into_owned();
    if control {
        return Ok(control::handle(&shared, &parts.method, &path, &body));
    }
    let owned = OwnedReq {
        method: parts.method,
        query: parts.uri.query().map(str::to_string),
        path,
        headers: parts.headers,
        body,
    };
    let seq = shared.log_begin(owned.method.as_str(), &owned.path, auth, owned.body.clone());
    let api = owned.path == "/api" || owned.path.starts_with("/api/");
    let fault = if api { shared.take_fault() } else { None };
    let delay = match fault {
        Some(Fault::CloseConnection) => return Err(Dropped),
        Some(Fault::Status500) => {
            let r = response(
                500,
                "application/json",
                r#"{"message":"Unable to persist registry changes inside the database","details":"fake fault"}"#,
            );
            shared.log_status(seq, 500);
            return Ok(r);
        }
        Some(Fault::Delay(d)) => Some(d),
        None => None,
    };
    // Its own task: like a Go handler, it runs to completion even when the client goes away
    // during a delay (a delayed PUT still applies).
    let task = tokio::spawn(async move {
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let resp = with_csrf_token(portainer::route(&shared, &owned.req()));
        shared.log_status(seq, resp.status().as_u16());
        resp
    });
    task.await.map_err(|_| Dropped)
}

/// A request, owned, for the handler task.
struct OwnedReq {
    method: hyper::Method,
    path: String,
    query: Option<String>,
    headers: hyper::HeaderMap,
    body: String,
}

impl OwnedReq {
    fn req(&self) -> Req<'_> {
        Req {
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            body: &self.body,
        }
    }
}

/// csrf.go withSendCSRFToken: a 2xx answer carries a fresh `X-CSRF-Token`.
fn with_csrf_token(mut r: Resp) -> Resp {
    if r.status().is_success()
        && let Ok(v) = HeaderValue::from_str(&STANDARD.encode(random_bytes(64)))
    {
        r.headers_mut()
            .insert(HeaderName::from_static("x-csrf-token"), v);
    }
    r
}
