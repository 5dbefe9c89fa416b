//! The fake's Portainer semantics, over real HTTPS with a client trusting its CA.

mod client;

use std::time::{Duration, Instant};

use client::{Client, connect, tls_config};
use fake_portainer::{ADMIN_PASSWORD, ADMIN_USERNAME, Auth, FakePortainer, Fault, Record};
use serde_json::{Value, json};

const ECR_URL: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

fn setup() -> (FakePortainer, Client) {
    let p = FakePortainer::start().expect("fake starts");
    let c = Client::new(&p);
    (p, c)
}

fn ecr(p: &FakePortainer) -> u32 {
    p.add_record("ecr", 7, ECR_URL, true, "AWS", "old-token")
}

fn put(p: &FakePortainer, c: &Client, id: u32, body: &Value) -> client::Answer {
    c.with_key(
        &p.admin_key(),
        "PUT",
        &format!("/api/registries/{id}"),
        &body.to_string(),
    )
}

#[test]
fn system_status_is_public_and_carries_the_version() {
    let (p, c) = setup();
    let a = c.call("GET", "/api/system/status", &[], "");
    assert_eq!(a.status, 200, "{a:?}");
    let v = a.json();
    assert_eq!(v["Version"], "2.21.4");
    let id = v["InstanceID"].as_str().unwrap_or_default();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    p.set_version("2.27.1");
    assert_eq!(
        c.call("GET", "/api/status", &[], "").json()["Version"],
        "2.27.1"
    );
    assert_eq!(
        c.call("POST", "/api/system/status", &[], "").status,
        405,
        "gorilla/mux answers a known path with another method 405"
    );
    assert_eq!(c.call("GET", "/api/nothing", &[], "").status, 404);
}

#[test]
fn put_without_authentication_true_leaves_credentials_alone() {
    let (p, c) = setup();
    let id = ecr(&p);
    let a = put(
        &p,
        &c,
        id,
        &json!({"Username": "other", "Password": "new-token"}),
    );
    assert_eq!(a.status, 200, "{a:?}");
    let r = p.record(id).expect("record");
    assert_eq!(
        (r.username.as_str(), r.password.as_str()),
        ("AWS", "old-token")
    );
    assert_eq!(
        a.json()["Password"],
        "old-token",
        "PUT answers the whole record"
    );
}

#[test]
fn put_with_authentication_true_sets_credentials_and_answers_the_whole_record() {
    let (p, c) = setup();
    let id = ecr(&p);
    let a = put(
        &p,
        &c,
        id,
        &json!({"Authentication": true, "Username": "AWS", "Password": "new-token"}),
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        p.record(id),
        Some(Record {
            id,
            name: "ecr".into(),
            kind: 7,
            url: ECR_URL.into(),
            authentication: true,
            username: "AWS".into(),
            password: "new-token".into(),
        })
    );
    let v = a.json();
    assert_eq!(v["Id"], id);
    assert_eq!(v["Password"], "new-token");
    assert_eq!(v["ManagementConfiguration"]["Password"], "new-token");
    assert_eq!(v["ManagementConfiguration"]["Type"], 7);
    assert!(p.secrets().contains(&"new-token".to_string()));
    // Field names are matched case-insensitively, as Go's decoder does.
    let a = put(
        &p,
        &c,
        id,
        &json!({"authentication": true, "password": "third"}),
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(p.record(id).map(|r| r.password), Some("third".into()));
}

#[test]
fn empty_password_is_ignored() {
    let (p, c) = setup();
    let id = ecr(&p);
    let a = put(
        &p,
        &c,
        id,
        &json!({"Authentication": true, "Username": "u2", "Password": ""}),
    );
    assert_eq!(a.status, 200, "{a:?}");
    let r = p.record(id).expect("record");
    assert_eq!(
        (r.username.as_str(), r.password.as_str()),
        ("u2", "old-token")
    );
}

#[test]
fn authentication_false_clears_username_and_password() {
    let (p, c) = setup();
    let id = ecr(&p);
    let a = put(
        &p,
        &c,
        id,
        &json!({"Authentication": false, "Password": "ignored"}),
    );
    assert_eq!(a.status, 200, "{a:?}");
    let r = p.record(id).expect("record");
    assert!(!r.authentication);
    assert_eq!((r.username.as_str(), r.password.as_str()), ("", ""));
    let v = a.json();
    assert!(v.get("Password").is_none(), "Password is omitempty: {v}");
    assert_eq!(v["Username"], "");
}

#[test]
fn name_conflicts_are_409_even_without_a_name_in_the_body() {
    let (p, c) = setup();
    let a_id = p.add_record("a", 3, "a.example", false, "", "");
    let b_id = p.add_record("b", 3, "b.example", true, "u", "pw-b");
    let a = put(
        &p,
        &c,
        b_id,
        &json!({"Name": "a", "Authentication": true, "Password": "x"}),
    );
    assert_eq!(a.status, 409, "{a:?}");
    assert_eq!(
        a.error(),
        (
            "Another registry with the same name already exists".into(),
            "A registry is already defined with this name".into()
        )
    );
    assert_eq!(
        p.record(b_id).map(|r| (r.name, r.password)),
        Some(("b".into(), "pw-b".into()))
    );

    // Two records already share a name (made outside the API): any PUT on either is refused.
    p.edit_record(a_id, |r| r.name = "b".into());
    let a = put(
        &p,
        &c,
        b_id,
        &json!({"Authentication": true, "Password": "new"}),
    );
    assert_eq!(a.status, 409, "{a:?}");
    assert_eq!(p.record(b_id).map(|r| r.password), Some("pw-b".into()));
}

#[test]
fn same_url_and_credentials_is_409_when_the_body_has_a_url() {
    let (p, c) = setup();
    p.add_record("one", 7, ECR_URL, true, "AWS", "t1");
    let two = p.add_record("two", 7, "other.example", true, "AWS", "t2");
    let a = put(&p, &c, two, &json!({"URL": ECR_URL}));
    assert_eq!(a.status, 409, "{a:?}");
    assert_eq!(
        a.error().0,
        "Another registry with the same URL and credentials already exists"
    );
    // Other credentials at the same URL are fine.
    let a = put(
        &p,
        &c,
        two,
        &json!({"URL": ECR_URL, "Authentication": true, "Username": "B"}),
    );
    assert_eq!(a.status, 200, "{a:?}");
}

#[test]
fn unknown_id_is_404_and_a_non_numeric_id_400() {
    let (p, c) = setup();
    let key = p.admin_key();
    for m in ["GET", "PUT"] {
        let a = c.with_key(&key, m, "/api/registries/999", "{}");
        assert_eq!(a.status, 404, "{m}: {a:?}");
        assert_eq!(
            a.error(),
            (
                "Unable to find a registry with the specified identifier inside the database"
                    .into(),
                "Object not found inside the database".into()
            )
        );
        let a = c.with_key(&key, m, "/api/registries/abc", "{}");
        assert_eq!(a.status, 400, "{m}: {a:?}");
        assert_eq!(
            a.error(),
            (
                "Invalid registry identifier route variable".into(),
                "Strconv.Atoi: parsing \"abc\": invalid syntax".into()
            )
        );
    }
    // The record is looked up before the body is read.
    assert_eq!(
        c.with_key(&key, "PUT", "/api/registries/999", "nope")
            .status,
        404
    );
    assert_eq!(c.with_key(&key, "GET", "/api/registries/", "").status, 404);
}

#[test]
fn bad_json_bodies_are_400_invalid_request_payload() {
    let (p, c) = setup();
    let id = ecr(&p);
    let key = p.admin_key();
    let path = format!("/api/registries/{id}");
    let cases = [
        ("", "EOF"),
        ("{\"Password\":", "Unexpected EOF"),
        (
            "password=x",
            "Json: invalid character 'p' looking for beginning of value: password=x",
        ),
        (
            "nope",
            "Json: expected 'null' but found invalid token: nope",
        ),
        (
            r#"{"Authentication":"yes"}"#,
            r#"Json: cannot unmarshal "\"yes\"}" into Go struct field registries.registryUpdatePayload.Authentication of type bool"#,
        ),
    ];
    for (body, details) in cases {
        let a = c.with_key(&key, "PUT", &path, body);
        assert_eq!(a.status, 400, "{body:?}: {a:?}");
        assert_eq!(
            a.error(),
            ("Invalid request payload".into(), details.into()),
            "{body:?}"
        );
    }
    assert_eq!(p.record(id).map(|r| r.password), Some("old-token".into()));
}

#[test]
fn a_standard_user_gets_403_on_the_admin_routes() {
    let (p, c) = setup();
    let id = ecr(&p);
    let key = p.user_key();
    for (m, path, body) in [
        ("GET", "/api/registries".to_string(), String::new()),
        (
            "PUT",
            format!("/api/registries/{id}"),
            json!({"Authentication": true, "Password": "stolen"}).to_string(),
        ),
        ("PUT", "/api/registries/abc".to_string(), String::new()),
    ] {
        let a = c.with_key(&key, m, &path, &body);
        assert_eq!(a.status, 403, "{m} {path}: {a:?}");
        assert_eq!(a.error(), ("Access denied".into(), "Unauthorized".into()));
    }
    assert_eq!(p.record(id).map(|r| r.password), Some("old-token".into()));
    // Inspect is open to every user, but a standard user must name an environment.
    let a = c.with_key(&key, "GET", &format!("/api/registries/{id}"), "");
    assert_eq!(a.status, 500, "{a:?}");
    assert_eq!(
        a.error(),
        (
            "Unable to retrieve info from request context".into(),
            "Missing query parameter".into()
        )
    );
}

#[test]
fn unknown_missing_and_revoked_keys_get_401() {
    let (p, c) = setup();
    let id = ecr(&p);
    let path = format!("/api/registries/{id}");
    let a = c.with_key("ptr_unknown", "GET", "/api/registries", "");
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(
        a.error(),
        ("Invalid JWT token".into(), "Unauthorized".into())
    );
    let a = c.call("PUT", &path, &[], "{}");
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(
        a.error(),
        (
            "A valid authorization token is missing".into(),
            "Unauthorized".into()
        )
    );

    let admin = p.admin_key();
    assert!(admin.starts_with("ptr_") && admin.len() == 48, "{admin}");
    assert!(admin.contains('+') && admin.contains('/') && admin.ends_with('='));
    assert_eq!(c.with_key(&admin, "GET", "/api/registries", "").status, 200);
    p.revoke_key(&admin);
    let a = c.with_key(&admin, "GET", "/api/registries", "");
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(a.error().0, "Invalid JWT token");
    // The key also works as a query parameter (percent-encoded).
    let user = p
        .user_key()
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let a = c.call("GET", &format!("{path}?X-API-KEY={user}"), &[], "");
    assert_eq!(
        a.status, 500,
        "the user is known, inspect needs ?endpointId: {a:?}"
    );
}

#[test]
fn both_auth_headers_get_403() {
    let (p, c) = setup();
    let id = ecr(&p);
    let jwt = login(&c);
    let key = p.admin_key();
    let bearer = format!("Bearer {jwt}");
    for (m, path) in [
        ("GET", "/api/registries".to_string()),
        ("PUT", format!("/api/registries/{id}")),
        ("GET", "/api/system/status".to_string()),
    ] {
        let a = c.call(
            m,
            &path,
            &[("x-api-key", &key), ("authorization", &bearer)],
            r#"{"Authentication":true,"Password":"x"}"#,
        );
        assert_eq!(a.status, 403, "{m} {path}: {a:?}");
        assert_eq!(
            a.error(),
            (
                "api key and auth header are not allowed at the same time".into(),
                "Api key and auth header are not allowed at the same time".into()
            )
        );
    }
    assert_eq!(p.record(id).map(|r| r.password), Some("old-token".into()));
    assert_eq!(
        p.requests().last().map(|r| r.auth.clone()),
        Some(Auth::Both)
    );
}

fn login(c: &Client) -> String {
    let body = json!({"Username": ADMIN_USERNAME, "Password": ADMIN_PASSWORD}).to_string();
    let a = c.call("POST", "/api/auth", &[], &body);
    assert_eq!(a.status, 200, "{a:?}");
    a.json()["jwt"].as_str().expect("jwt").to_string()
}

#[test]
fn jwt_from_api_auth_acts_as_its_user() {
    let (p, c) = setup();
    let id = ecr(&p);
    let jwt = login(&c);
    assert_eq!(jwt.split('.').count(), 3, "JWT-shaped: {jwt}");
    assert!(p.secrets().contains(&jwt));
    let bearer = format!("Bearer {jwt}");
    let a = c.call("GET", "/api/registries", &[("authorization", &bearer)], "");
    assert_eq!(a.status, 200, "{a:?}");
    let a = c.call(
        "PUT",
        &format!("/api/registries/{id}"),
        &[("authorization", &bearer)],
        r#"{"Authentication":true,"Password":"via-jwt"}"#,
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(p.record(id).map(|r| r.password), Some("via-jwt".into()));

    // Without "Bearer " the whole header is the token, which is not valid.
    let a = c.call("GET", "/api/registries", &[("authorization", &jwt)], "");
    assert_eq!(a.status, 200, "TrimPrefix leaves a bare token as is: {a:?}");
    let a = c.call(
        "GET",
        "/api/registries",
        &[("authorization", "Bearer nope")],
        "",
    );
    assert_eq!((a.status, a.error().0), (401, "Invalid JWT token".into()));

    let bad = c.call(
        "POST",
        "/api/auth",
        &[],
        &json!({"Username": "admin", "Password": "wrong"}).to_string(),
    );
    assert_eq!(bad.status, 422, "{bad:?}");
    assert_eq!(
        bad.error(),
        ("Invalid credentials".into(), "Unauthorized".into())
    );
    let bad = c.call("POST", "/api/auth", &[], r#"{"Password":"x"}"#);
    assert_eq!(bad.status, 400, "{bad:?}");
    assert_eq!(
        bad.error(),
        ("Invalid request payload".into(), "Invalid username".into())
    );

    let user_jwt = c
        .call(
            "POST",
            "/api/auth",
            &[],
            &json!({"Username": "USER", "Password": fake_portainer::USER_PASSWORD}).to_string(),
        )
        .json()["jwt"]
        .as_str()
        .expect("user jwt")
        .to_string();
    let a = c.call(
        "GET",
        "/api/registries",
        &[("authorization", &format!("Bearer {user_jwt}"))],
        "",
    );
    assert_eq!(a.status, 403, "{a:?}");

    p.revoke_key(&jwt);
    let a = c.call("GET", "/api/registries", &[("authorization", &bearer)], "");
    assert_eq!(a.status, 401, "{a:?}");
}

#[test]
fn list_includes_passwords_and_inspect_hides_them() {
    let (p, c) = setup();
    let id = ecr(&p);
    let other = p.add_record("hub", 6, "docker.io", false, "", "");
    let key = p.admin_key();
    let list = c.with_key(&key, "GET", "/api/registries", "").json();
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 2);
    let first = &list[0];
    let keys: Vec<&str> = first
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "Id",
        "Type",
        "Name",
        "URL",
        "BaseURL",
        "Authentication",
        "Username",
        "Password",
        "ManagementConfiguration",
        "Gitlab",
        "Quay",
        "Ecr",
        "RegistryAccesses",
        "UserAccessPolicies",
        "TeamAccessPolicies",
        "AuthorizedUsers",
        "AuthorizedTeams",
    ] {
        assert!(keys.contains(&k), "{k} missing in {first}");
    }
    assert_eq!(first["Id"], id);
    assert_eq!(first["Type"], 7);
    assert_eq!(first["Password"], "old-token");
    assert_eq!(first["ManagementConfiguration"]["Password"], "old-token");
    assert_eq!(first["Ecr"], json!({"Region": ""}));
    assert_eq!(first["RegistryAccesses"], json!({}));
    assert!(
        list[1].get("Password").is_none(),
        "empty Password is omitted"
    );
    assert_eq!(list[1]["Id"], other);

    let one = c.with_key(&key, "GET", &format!("/api/registries/{id}"), "");
    assert_eq!(one.status, 200, "{one:?}");
    let one = one.json();
    assert!(one.get("Password").is_none(), "{one}");
    assert_eq!(one["ManagementConfiguration"], Value::Null);
    assert_eq!(one["Username"], "AWS");
    assert!(!one.to_string().contains("old-token"));
}

#[test]
fn ids_are_never_reused_and_ui_edits_show() {
    let (p, c) = setup();
    let a = ecr(&p);
    p.delete_record(a);
    let b = ecr(&p);
    assert!(b > a);
    assert_eq!(p.record(a), None);
    p.edit_record(b, |r| {
        r.password = "ui-edit".into();
        r.id = 999;
    });
    assert_eq!(p.record(b).map(|r| r.password), Some("ui-edit".into()));
    assert!(p.secrets().contains(&"ui-edit".to_string()));
    let list = c
        .with_key(&p.admin_key(), "GET", "/api/registries", "")
        .json();
    assert_eq!(list[0]["Password"], "ui-edit");
    assert_eq!(list[0]["Id"], b);
}

#[test]
fn status500_fault_changes_nothing() {
    let (p, c) = setup();
    let id = ecr(&p);
    p.push_faults([Fault::Status500]);
    let body = json!({"Authentication": true, "Password": "new"});
    let a = put(&p, &c, id, &body);
    assert_eq!(a.status, 500);
    assert_eq!(
        a.json(),
        json!({"message": "Unable to persist registry changes inside the database", "details": "fake fault"})
    );
    assert_eq!(p.record(id).map(|r| r.password), Some("old-token".into()));
    // The queue held one fault.
    assert_eq!(put(&p, &c, id, &body).status, 200);
    assert_eq!(p.record(id).map(|r| r.password), Some("new".into()));
}

#[test]
fn sticky_fault_applies_until_cleared_after_the_queued_ones() {
    let (p, c) = setup();
    let id = ecr(&p);
    p.set_fault(Some(Fault::Status500));
    p.push_faults([Fault::Delay(Duration::from_millis(1))]);
    let body = json!({"Authentication": true, "Password": "new"});
    assert_eq!(put(&p, &c, id, &body).status, 200, "queued fault first");
    for _ in 0..3 {
        assert_eq!(c.call("GET", "/api/system/status", &[], "").status, 500);
    }
    let control = c.call("GET", "/_fake/records", &[], "");
    assert_eq!(control.status, 200, "control plane is never faulted");
    p.set_fault(None);
    assert_eq!(c.call("GET", "/api/system/status", &[], "").status, 200);
}

#[test]
fn delay_fault_sleeps_before_answering() {
    let (p, c) = setup();
    p.push_faults([Fault::Delay(Duration::from_millis(700))]);
    let t = Instant::now();
    let a = c.call("GET", "/api/system/status", &[], "");
    assert_eq!(a.status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn close_connection_fault_drops_the_request_unanswered() {
    let (p, c) = setup();
    let id = ecr(&p);
    p.push_faults([Fault::CloseConnection]);
    let body = json!({"Authentication": true, "Password": "new"}).to_string();
    let r = c.try_call(
        "PUT",
        &format!("/api/registries/{id}"),
        &[("x-api-key", &p.admin_key())],
        &body,
    );
    assert!(r.is_err(), "{r:?}");
    assert_eq!(p.record(id).map(|r| r.password), Some("old-token".into()));
    let log = p.requests();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].method.as_str(), log[0].status), ("PUT", 0));
    assert_eq!(c.call("GET", "/api/system/status", &[], "").status, 200);
}

#[test]
fn request_log_has_every_api_request_in_order() {
    let (p, c) = setup();
    let id = ecr(&p);
    let key = p.admin_key();
    c.call("GET", "/api/system/status", &[], "");
    c.with_key(
        &key,
        "PUT",
        &format!("/api/registries/{id}?x=1"),
        r#"{"Name":"n"}"#,
    );
    c.with_key("ptr_bad", "GET", "/api/registries", "");
    c.call(
        "GET",
        "/api/registries",
        &[("authorization", "Bearer x")],
        "",
    );
    c.call("GET", "/_fake/records", &[], "");
    let log = p.requests();
    let got: Vec<(&str, &str, u16, Auth, &str)> = log
        .iter()
        .map(|r| {
            (
                r.method.as_str(),
                r.path.as_str(),
                r.status,
                r.auth.clone(),
                r.body.as_str(),
            )
        })
        .collect();
    let put_path = format!("/api/registries/{id}");
    assert_eq!(
        got,
        vec![
            ("GET", "/api/system/status", 200, Auth::None, ""),
            (
                "PUT",
                put_path.as_str(),
                200,
                Auth::ApiKey(key.clone()),
                r#"{"Name":"n"}"#
            ),
            (
                "GET",
                "/api/registries",
                401,
                Auth::ApiKey("ptr_bad".into()),
                ""
            ),
            ("GET", "/api/registries", 401, Auth::Bearer, ""),
        ]
    );
    p.reset_requests();
    assert!(p.requests().is_empty());
}

#[test]
fn rotate_certificate_makes_clients_of_the_old_ca_or_pin_fail() {
    let (p, c) = setup();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let old_pin = p.cert_sha256();
    assert_eq!(old_pin.len(), 64);
    rt.block_on(async {
        let mut held = connect(p.addr(), c.config.clone(), "127.0.0.1")
            .await
            .expect("connects");
        assert_eq!(held.peer_sha256, old_pin);
        // Also valid for the name localhost.
        let mut by_name = connect(p.addr(), c.config.clone(), "localhost")
            .await
            .expect("localhost is in the SANs");
        let a = by_name.send("GET", "/api/system/status", &[], "").await;
        assert_eq!(a.map(|a| a.status), Ok(200));
        let a = held.send("GET", "/api/system/status", &[], "").await;
        assert_eq!(a.map(|a| a.status), Ok(200));

        p.rotate_certificate();
        assert_ne!(p.cert_sha256(), old_pin);
        let again = held.send("GET", "/api/system/status", &[], "").await;
        assert!(again.is_err(), "open connections are closed: {again:?}");
        let old = connect(p.addr(), c.config.clone(), "127.0.0.1").await;
        let err = old.err().unwrap_or_default();
        assert!(err.starts_with("handshake:"), "{err}");
        let mut fresh = connect(p.addr(), tls_config(&p.ca_pem()), "127.0.0.1")
            .await
            .expect("the new CA is trusted");
        assert_eq!(fresh.peer_sha256, p.cert_sha256());
        let a = fresh.send("GET", "/api/system/status", &[], "").await;
        assert_eq!(a.map(|a| a.status), Ok(200));
    });
}

#[test]
fn secrets_hold_keys_jwts_and_every_password() {
    let (p, c) = setup();
    let id = ecr(&p);
    put(
        &p,
        &c,
        id,
        &json!({"Authentication": true, "Password": "second"}),
    );
    let jwt = login(&c);
    let s = p.secrets();
    for want in [
        p.admin_key(),
        p.user_key(),
        jwt,
        "old-token".into(),
        "second".into(),
        ADMIN_PASSWORD.into(),
    ] {
        assert!(s.contains(&want), "{want} not in {s:?}");
    }
}

#[test]
fn start_on_refuses_a_non_loopback_address() {
    let e = FakePortainer::start_on("0.0.0.0:0".parse().expect("addr"));
    assert!(e.is_err());
    let p = FakePortainer::start().expect("starts");
    assert!(p.url().starts_with("https://127.0.0.1:"));
    assert!(!p.url().ends_with('/'));
}

#[test]
fn a_delayed_put_still_applies_when_the_client_gives_up() {
    let (p, c) = setup();
    let id = ecr(&p);
    p.push_faults([Fault::Delay(Duration::from_millis(500))]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut conn = connect(p.addr(), c.config.clone(), "127.0.0.1")
            .await
            .expect("connects");
        let key = p.admin_key();
        let path = format!("/api/registries/{id}");
        let headers = [("x-api-key", key.as_str())];
        let send = conn.send(
            "PUT",
            &path,
            &headers,
            r#"{"Authentication":true,"Password":"late"}"#,
        );
        let r = tokio::time::timeout(Duration::from_millis(100), send).await;
        assert!(r.is_err(), "the client timed out first");
        drop(conn);
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.record(id).map(|r| r.password) != Some("late".into()) {
        assert!(Instant::now() < deadline, "the delayed PUT never applied");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(p.requests().first().map(|r| r.status), Some(200));
}
