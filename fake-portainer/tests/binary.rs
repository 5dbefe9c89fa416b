//! The `fake-portainer` binary: its files, its banner and its control plane.

mod client;

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Child, Command, Stdio};

use client::{Client, tls_config};
use serde_json::json;

/// Kills the child on drop (a failed assertion must not leave it running).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn binary_writes_its_files_and_serves_the_api_and_the_control_plane() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_fake-portainer"))
            .args(["--listen", "127.0.0.1:0", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("banner");
    let url = line
        .trim()
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("banner: {line:?}"))
        .to_string();
    let addr: std::net::SocketAddr = url
        .strip_prefix("https://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("url: {url}"));

    let mode = |name: &str| {
        std::fs::metadata(dir.path().join(name))
            .expect(name)
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("admin.key"), 0o600);
    assert_eq!(mode("user.key"), 0o600);
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).expect(name);
    let (ca, admin, user) = (read("ca.pem"), read("admin.key"), read("user.key"));
    assert!(
        admin.starts_with("ptr_") && !admin.ends_with('\n'),
        "{admin:?}"
    );
    assert_ne!(admin, user);

    let c = Client {
        addr,
        config: tls_config(&ca),
        server_name: "localhost".into(),
    };
    let new = json!({"name": "ecr", "kind": 7, "url": "1.dkr.ecr.eu-west-1.amazonaws.com",
        "authentication": true, "username": "AWS", "password": "seed"});
    let a = c.call("POST", "/_fake/records", &[], &new.to_string());
    assert_eq!(a.status, 200, "{a:?}");
    let id = a.json()["id"].as_u64().expect("id");

    let a = c.with_key(
        &admin,
        "PUT",
        &format!("/api/registries/{id}"),
        r#"{"Authentication":true,"Password":"fresh"}"#,
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(c.with_key(&user, "GET", "/api/registries", "").status, 403);

    let records = c.call("GET", "/_fake/records", &[], "").json();
    assert_eq!(
        records,
        json!([{"id": id, "name": "ecr", "kind": 7, "url": "1.dkr.ecr.eu-west-1.amazonaws.com",
            "authentication": true, "username": "AWS", "password": "fresh"}])
    );
    let log = c.call("GET", "/_fake/requests", &[], "").json();
    assert_eq!(
        log,
        json!([
            {"method": "PUT", "path": format!("/api/registries/{id}"), "status": 200,
             "auth": "api-key", "api_key": admin,
             "body": r#"{"Authentication":true,"Password":"fresh"}"#},
            {"method": "GET", "path": "/api/registries", "status": 403, "auth": "api-key",
             "api_key": user, "body": ""},
        ])
    );
    let secrets = c.call("GET", "/_fake/secrets", &[], "").json();
    let secrets = secrets.as_array().expect("array");
    for s in [&admin, &user, "seed", "fresh"] {
        assert!(secrets.iter().any(|x| x == s), "{s} missing");
    }
    assert_eq!(c.call("DELETE", "/_fake/requests", &[], "").status, 200);
    assert_eq!(c.call("GET", "/_fake/requests", &[], "").json(), json!([]));
    let bad = c.call("POST", "/_fake/records", &[], r#"{"name":"x"}"#);
    assert_eq!(bad.status, 400, "{bad:?}");
}
