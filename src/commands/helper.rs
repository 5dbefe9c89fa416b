//! The docker credential helper (`docker-credential-ecr-refresherd get|list|store|erase|version`)
//! and the kubelet credential provider, both answered by the daemon from memory over its socket.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::daemon::control::{self, NOT_FOUND, Request, Response};
use crate::escape::shown;

/// The most read from stdin (a server URL, a kubelet request).
const MAX_INPUT: u64 = 64 * 1024;
/// docker calls the helper for each request it builds: never wait long.
const TIMEOUT: Duration = Duration::from_secs(5);

fn read_stdin() -> Result<String, String> {
    let mut text = String::new();
    std::io::stdin()
        .take(MAX_INPUT)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the request on stdin: {e}"))?;
    Ok(text)
}

/// What the daemon said about one registry.
enum Answer {
    Found {
        host: String,
        username: String,
        secret: String,
        expires_at: String,
    },
    NotFound,
}

async fn ask(socket: &Path, registry: &str) -> Result<Answer, String> {
    let req = Request::Credential {
        host: registry.to_string(),
    };
    match control::request(socket, &req, TIMEOUT).await {
        Ok(Response::Credential {
            host,
            username,
            secret,
            expires_at,
        }) => Ok(Answer::Found {
            host,
            username,
            secret,
            expires_at,
        }),
        Ok(Response::Error { message }) if message == NOT_FOUND => Ok(Answer::NotFound),
        Ok(Response::Error { message }) => Err(format!("the daemon says: {}", shown(&message))),
        Ok(_) => Err("the daemon gave an unexpected answer".into()),
        Err(e) => Err(client_error(e)),
    }
}

/// What a client error means to the helper's caller.
fn client_error(e: control::ClientError) -> String {
    match e {
        control::ClientError::Denied(path) => format!(
            "not allowed to ask ecr-refresherd (permission denied on {}); the credential helper socket is helper_socket, beside the control socket",
            path.display()
        ),
        e @ (control::ClientError::Busy(_) | control::ClientError::NotDaemon { .. }) => {
            e.to_string()
        }
        control::ClientError::NoDaemon { path, .. } => format!(
            "ecr-refresherd is not running (nothing answers on {}); start it with: systemctl start ecr-refresherd",
            path.display()
        ),
        _ => "the daemon's answer was not understood".into(),
    }
}

/// The hosts the daemon would answer `get` for, for this caller.
async fn list(socket: &Path) -> Result<Vec<String>, String> {
    match control::request(socket, &Request::List, TIMEOUT).await {
        Ok(Response::List { hosts }) => Ok(hosts),
        // A caller granted nothing is turned away before its request is read.
        Ok(Response::Error { message }) if message == NOT_FOUND => Ok(Vec::new()),
        Ok(Response::Error { message }) => Err(format!("the daemon says: {}", shown(&message))),
        Ok(_) => Err("the daemon gave an unexpected answer".into()),
        Err(e) => Err(client_error(e)),
    }
}

/// The docker credential helper protocol (docker-credential-helpers): `get` reads a server URL
/// on stdin and prints `{"ServerURL","Username","Secret"}`; errors go to stdout with exit 1.
/// `store` and `erase` succeed and change nothing (the daemon owns the credentials), so
/// `docker login` and `docker logout` never fail.
pub async fn credential_helper(socket: &Path, action: &str) -> u8 {
    match action {
        "get" => {
            let url = match read_stdin() {
                Ok(t) => t.trim().to_string(),
                Err(e) => {
                    println!("{e}");
                    return 1;
                }
            };
            match ask(socket, &url).await {
                Ok(Answer::Found {
                    username, secret, ..
                }) => {
                    #[derive(Serialize)]
                    #[serde(rename_all = "PascalCase")]
                    struct Out<'a> {
                        #[serde(rename = "ServerURL")]
                        server_url: &'a str,
                        username: &'a str,
                        secret: &'a str,
                    }
                    let out = Out {
                        server_url: &url,
                        username: &username,
                        secret: &secret,
                    };
                    match serde_json::to_string(&out) {
                        Ok(text) => {
                            println!("{text}");
                            0
                        }
                        Err(_) => 1,
                    }
                }
                Ok(Answer::NotFound) => {
                    println!("{NOT_FOUND}");
                    1
                }
                Err(e) => {
                    println!("{e}");
                    1
                }
            }
        }
        "store" | "erase" => {
            // Read what docker sends (a credential, or a server URL) so it never sees a broken pipe.
            let _ = read_stdin();
            0
        }
        // The registries the caller may get (no others: a list must not tell a user which
        // registries exist), each with user AWS; docker's `GetAll` (the legacy builder, with the
        // helper as `credsStore`) then asks `get` for each.
        "list" => match list(socket).await {
            Ok(hosts) => {
                let map: std::collections::BTreeMap<String, &str> = hosts
                    .into_iter()
                    .map(|h| (h, crate::portainer::records::USERNAME))
                    .collect();
                match serde_json::to_string(&map) {
                    Ok(text) => {
                        println!("{text}");
                        0
                    }
                    Err(_) => 1,
                }
            }
            Err(e) => {
                println!("{e}");
                1
            }
        },
        "version" => {
            println!("ecr-refresherd {}", env!("CARGO_PKG_VERSION"));
            0
        }
        other => {
            println!(
                "unknown action {:?}; expected get, store, erase, list or version",
                shown(other)
            );
            1
        }
    }
}

/// A kubelet `CredentialProviderRequest`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProviderRequest {
    api_version: String,
    kind: String,
    image: String,
}

/// The API versions of `credentialprovider.kubelet.k8s.io` answered.
const PROVIDER_VERSIONS: [&str; 2] = [
    "credentialprovider.kubelet.k8s.io/v1",
    "credentialprovider.kubelet.k8s.io/v1beta1",
];

/// `credential-provider`: a kubelet exec credential provider plugin. Reads a
/// `CredentialProviderRequest` on stdin, prints a `CredentialProviderResponse` for the image's
/// registry (an empty `auth` for a registry the daemon does not hold, exit 0); cached by
/// kubelet per registry for half the token's remaining life.
pub async fn credential_provider(socket: &Path) -> u8 {
    let fail = |e: String| {
        eprintln!("ecr-refresherd credential-provider: {e}");
        1
    };
    let text = match read_stdin() {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let req: ProviderRequest = match serde_json::from_str(&text) {
        Ok(r) => r,
        Err(e) => {
            return fail(format!(
                "the request is not a CredentialProviderRequest (line {}, column {})",
                e.line(),
                e.column()
            ));
        }
    };
    if req.kind != "CredentialProviderRequest"
        || !PROVIDER_VERSIONS.contains(&req.api_version.as_str())
    {
        return fail(format!(
            "unsupported request {:?} {:?}; expected kind CredentialProviderRequest, apiVersion {}",
            shown(&req.kind),
            shown(&req.api_version),
            PROVIDER_VERSIONS.join(" or ")
        ));
    }
    // An image without a '/' (`nginx:latest`) is Docker Hub's, whatever follows a ':'.
    let registry = if req.image.contains('/') {
        req.image.as_str()
    } else {
        "docker.io"
    };
    let answer = match ask(socket, registry).await {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    // Keyed by the image's registry as computed here, never by what answered on the socket
    // (kubelet reads keys as patterns).
    let wanted = control::registry_of(registry);
    let (auth, cache) = match answer {
        Answer::Found {
            host,
            username,
            secret,
            expires_at,
        } if host == wanted => {
            let left = crate::status::parse_time(&expires_at)
                .and_then(|t| t.duration_since(SystemTime::now()).ok())
                .unwrap_or_default();
            let auth = serde_json::json!({ host: { "username": username, "password": secret } });
            (auth, left / 2)
        }
        Answer::Found { .. } => {
            return fail("the daemon answered for another registry than the image's".into());
        }
        Answer::NotFound => (serde_json::json!({}), Duration::ZERO),
    };
    let out = serde_json::json!({
        "apiVersion": req.api_version,
        "kind": "CredentialProviderResponse",
        "cacheKeyType": "Registry",
        "cacheDuration": format!("{}s", cache.as_secs()),
        "auth": auth,
    });
    println!("{out}");
    0
}
