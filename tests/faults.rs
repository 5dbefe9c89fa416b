//! Faults from ECR, STS and IMDS, one test each: the daemon stays up, writes nothing invalid, keeps
//! the last good entry until it expires, says what is wrong in status and log, and recovers by itself.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::*;

const LIFETIME: Duration = Duration::from_secs(10);

/// The `auth` of `host` in the file, if any; panics on a file that is not valid for docker.
fn auth_in(file: &std::path::Path, host: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let v: serde_json::Value =
        serde_json::from_str(&text).expect("the target is always valid JSON");
    let auth = v["auths"].get(host)?["auth"].as_str()?.to_string();
    password_of(&auth); // panics unless AWS:<password>
    Some(auth)
}

fn registry(w: &World, host: &str) -> Option<serde_json::Value> {
    w.status_json()?["registries"]
        .as_array()?
        .iter()
        .find(|r| r["host"] == host)
        .cloned()
}

/// A good token first; then `fault` on every call of `service`; then recovery.
fn survives(service: Service, fault: Fault, host: &str, error_word: &str, wait: Duration) {
    let w = World::new();
    w.fake.set_token_lifetime(LIFETIME);
    let target = w.one_target_config(&[host], "");
    let mut d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(
        wait_for(Duration::from_secs(20), || auth_in(&target, host).is_some()),
        "{}",
        d.log_text()
    );
    let good = auth_in(&target, host).unwrap();
    let good_expiry = w.fake.expiry_of(&password_of(&good)).unwrap();
    w.fake.set_fault(service, fault.clone());

    // The next scheduled refresh (at about half of 10 s) fails; status says why.
    let mut seen = None;
    let end = Instant::now() + wait;
    while Instant::now() < end {
        if let Some(r) = registry(&w, host)
            && r["consecutive_failures"].as_u64().unwrap_or(0) > 0
        {
            seen = Some((r, SystemTime::now(), auth_in(&target, host)));
            break;
        }
        // Nothing invalid is ever written meanwhile.
        if let Some(a) = auth_in(&target, host) {
            assert!(w.fake.issued_passwords().contains(&password_of(&a)));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (r, at, entry) = seen.unwrap_or_else(|| {
        panic!(
            "{fault:?}: status never showed the failure\n{}",
            d.log_text()
        )
    });
    let err = r["last_error"].as_str().unwrap_or("");
    assert!(
        err.contains(error_word),
        "{fault:?}: last_error {err:?} lacks {error_word:?}"
    );
    assert!(
        ["failing", "expired", "refreshing"].contains(&r["state"].as_str().unwrap_or("")),
        "{r}"
    );
    if at + Duration::from_millis(200) < good_expiry {
        assert_eq!(
            entry.as_deref(),
            Some(good.as_str()),
            "{fault:?}: the last good entry is kept until it expires"
        );
    }
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "{fault:?}: the daemon died"
    );
    assert!(
        d.log_text().contains("token refresh failed"),
        "{fault:?}: not in the log"
    );

    w.fake.set_fault(service, Fault::None);
    assert!(
        wait_for(Duration::from_secs(60), || registry(&w, host)
            .is_some_and(|r| r["state"] == "fresh")
            && auth_in(&target, host).is_some_and(|a| a != good)),
        "{fault:?}: did not recover\n{}",
        d.log_text()
    );
    let fresh = auth_in(&target, host).unwrap();
    assert!(w.fake.expiry_of(&password_of(&fresh)).unwrap() > SystemTime::now());
    assert_eq!(d.stop().code(), Some(0));
}

macro_rules! fault_tests {
    ($($name:ident: $service:expr, $fault:expr, $host:expr, $word:expr, $secs:expr;)*) => {$(
        #[test]
        fn $name() {
            survives($service, $fault, $host, $word, Duration::from_secs($secs));
        }
    )*};
}

fault_tests! {
    throttling: Service::Ecr, Fault::Throttle, H1, "throttled", 30;
    server_error_500: Service::Ecr, Fault::ServerError, H1, "ServerException", 30;
    unavailable_503: Service::Ecr, Fault::Unavailable, H1, "ServiceUnavailable", 30;
    access_denied: Service::Ecr, Fault::AccessDenied, H1, "access denied", 30;
    expired_credentials: Service::Ecr, Fault::ExpiredToken, H1, "ExpiredToken", 30;
    body_not_json: Service::Ecr, Fault::NotJson, H1, "", 30;
    missing_fields: Service::Ecr, Fault::MissingFields, H1, "no authorizationToken", 30;
    token_not_base64: Service::Ecr, Fault::NotBase64, H1, "not base64", 30;
    token_without_aws_prefix: Service::Ecr, Fault::NoAwsPrefix, H1, "AWS:<password>", 30;
    no_expires_at: Service::Ecr, Fault::NoExpiresAt, H1, "no expiresAt", 30;
    stall_30s: Service::Ecr, Fault::Stall(Duration::from_secs(30)), H1, "timeout", 90;
    dropped_connection: Service::Ecr, Fault::DropConnection, H1, "", 30;
    blackhole: Service::Ecr, Fault::Blackhole, H1, "timeout", 90;
    public_throttling: Service::EcrPublic, Fault::Throttle, PUBLIC, "throttled", 30;
}

#[test]
fn sts_denied_for_an_assumed_role() {
    let w = World::new();
    w.fake.set_token_lifetime(LIFETIME);
    let target = w.path("d/config.json");
    w.config(&format!(
        "{}[[target]]\npath = \"{}\"\n[[registry]]\nhost = \"{H1}\"\nrole_arn = \"arn:aws:iam::111111111111:role/pull\"\n",
        w.daemon_section(),
        target.display()
    ));
    w.fake.set_fault(Service::Sts, Fault::AccessDenied);
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(Duration::from_secs(20), || registry(&w, H1)
        .is_some_and(|r| r["consecutive_failures"]
            .as_u64()
            .unwrap_or(0)
            > 0)));
    assert!(
        !target.exists() || auth_in(&target, H1).is_none(),
        "nothing written without a token"
    );
    w.fake.set_fault(Service::Sts, Fault::None);
    assert!(
        wait_for(Duration::from_secs(30), || auth_in(&target, H1).is_some()),
        "{}",
        d.log_text()
    );
}

#[test]
fn imds_down_then_up_with_instance_role_credentials() {
    let w = World::new();
    let target = w.one_target_config(&[H1], "");
    w.fake.set_fault(Service::Imds, Fault::DropConnection);
    let log = w.path("imds.log");
    let mut c = w.cmd();
    // Credentials only from the (fake, loopback) instance metadata service.
    c.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .arg("--config")
        .arg(w.path("config.toml"))
        .arg("run")
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = c.spawn().unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(30), || registry(&w, H1).is_some_and(
            |r| r["consecutive_failures"].as_u64().unwrap_or(0) > 0
        )),
        "{}",
        read_log()
    );
    let r = registry(&w, H1).unwrap();
    assert!(
        r["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("credentials"),
        "{r}"
    );
    w.fake.set_fault(Service::Imds, Fault::None);
    assert!(
        wait_for(Duration::from_secs(30), || auth_in(&target, H1).is_some()),
        "{}",
        read_log()
    );
    let ecr = w
        .fake
        .calls()
        .into_iter()
        .find(|c| c.service == Service::Ecr)
        .unwrap();
    assert!(
        ecr.access_key_id
            .unwrap_or_default()
            .starts_with("FAKEIMDS")
    );
    let _ = child.kill();
    let _ = child.wait();
    w.capture_text(read_log());
}

#[test]
fn expires_at_in_the_past_is_written_with_a_warning_and_backs_off() {
    let w = World::new();
    w.fake.set_fault(Service::Ecr, Fault::ExpiresAtOffset(-120));
    let target = w.one_target_config(&[H1], "");
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(Duration::from_secs(20), || auth_in(&target, H1).is_some()));
    assert!(wait_for(Duration::from_secs(10), || registry(&w, H1)
        .is_some_and(|r| r["state"] == "expired"
            && r["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("check the clock")))));
    assert!(d.log_text().contains("expired 2m"), "{}", d.log_text());
    // Backoff (1 s doubling to 3 s), not a hot loop.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        w.fake.count(Service::Ecr) <= 6,
        "{} calls in ~4 s",
        w.fake.count(Service::Ecr)
    );
    w.fake.set_fault(Service::Ecr, Fault::None);
    assert!(wait_for(Duration::from_secs(20), || registry(&w, H1)
        .is_some_and(|r| r["state"] == "fresh")));
}

#[test]
fn expires_at_absurdly_far_is_capped_at_12_hours() {
    let w = World::new();
    w.fake
        .set_fault(Service::Ecr, Fault::ExpiresAtOffset(100 * 365 * 86400));
    let target = w.one_target_config(&[H1], "");
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(Duration::from_secs(20), || auth_in(&target, H1).is_some()));
    assert!(wait_for(Duration::from_secs(10), || registry(&w, H1)
        .is_some_and(|r| r["state"] == "fresh")));
    let r = registry(&w, H1).unwrap();
    let exp = humantime::parse_rfc3339_weak(r["expires_at"].as_str().unwrap()).unwrap();
    assert!(
        exp <= SystemTime::now() + Duration::from_secs(12 * 3600),
        "{r}"
    );
    let next = humantime::parse_rfc3339_weak(r["next_refresh"].as_str().unwrap()).unwrap();
    assert!(
        next <= SystemTime::now() + Duration::from_secs(6 * 3600 + 60),
        "{r}"
    );
    assert!(d.log_text().contains("beyond 12 hours"));
}

#[test]
fn a_10_mib_response_does_not_hurt() {
    let w = World::new();
    w.fake.set_fault(Service::Ecr, Fault::HugeBody(10 << 20));
    let target = w.one_target_config(&[H1], "");
    let mut d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(Duration::from_secs(30), || registry(&w, H1)
        .is_some_and(|r| r["state"] != "pending")));
    if let Some(a) = auth_in(&target, H1) {
        assert!(w.fake.issued_passwords().contains(&password_of(&a)));
    }
    assert!(d.child.try_wait().unwrap().is_none());
    w.fake.set_fault(Service::Ecr, Fault::None);
    assert!(wait_for(Duration::from_secs(30), || auth_in(&target, H1).is_some()));
    assert_eq!(d.stop().code(), Some(0));
}

#[test]
fn an_endpoint_that_does_not_resolve_fails_cleanly() {
    require_root!();
    // In a network namespace of our own with nothing in it, so no DNS query leaves this machine.
    let w = World::new();
    let target = w.path("d/config.json");
    w.config(&format!(
        "[daemon]\nstate_dir = \"{{dir}}/state\"\n[[target]]\npath = \"{}\"\n[[registry]]\nhost = \"{H1}\"\nendpoint_url = \"https://ecr.does-not-resolve.invalid\"\n",
        target.display()
    ));
    let mut c = w.cmd();
    c.env_remove("AWS_ENDPOINT_URL_ECR");
    let bin = c.get_program().to_owned();
    let mut u = std::process::Command::new("unshare");
    u.arg("--net")
        .arg("--")
        .arg(bin)
        .arg("--config")
        .arg(w.path("config.toml"))
        .arg("once");
    u.env_clear().envs(
        c.get_envs()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
    );
    let t = Instant::now();
    let out = w.capture(u.output().unwrap());
    assert_eq!(code(&out), 1, "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains(&format!("registry {H1}: FAILED")),
        "{}",
        stdout(&out)
    );
    assert!(t.elapsed() < Duration::from_secs(40));
    assert!(!target.exists());
}
