//! Portainer's registry records kept fresh through its API: the real daemon against the fake
//! Portainer (HTTPS, its own CA) and the fake AWS, on loopback.

mod common;

use std::time::Duration;

use common::*;
use fake_portainer::{FakePortainer, Fault as PFault};

const CUSTOM: u32 = 3;
const NATIVE_ECR: u32 = 7;
const LONG: Duration = Duration::from_secs(60);

/// A `[[portainer]]` block for `fp`, its key in `<dir>/<name>.key` (root's, 0600) and its CA in
/// `<dir>/<name>-ca.pem`.
fn block(w: &World, fp: &FakePortainer, name: &str, key: &str, extra: &str) -> String {
    let key_file = w.path(&format!("{name}.key"));
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    chmod(&key_file, 0o600);
    let ca = w.path(&format!("{name}-ca.pem"));
    std::fs::write(&ca, fp.ca_pem()).unwrap();
    format!(
        "\n[[portainer]]\nurl = \"{}\"\napi_key_file = \"{}\"\nca_file = \"{}\"\ncheck_every = \"1s\"\n{extra}",
        fp.url(),
        key_file.display(),
        ca.display()
    )
}

/// The daemon config: one file target, H1 (and H2), and the given blocks.
fn config(w: &World, blocks: &[String]) -> std::path::PathBuf {
    let target = w.path("d/config.json");
    let mut cfg = w.daemon_section();
    cfg += &format!("\n[[target]]\npath = \"{}\"\n", target.display());
    for h in [H1, H2] {
        cfg += &format!("[[registry]]\nhost = \"{h}\"\n");
    }
    for b in blocks {
        cfg += b;
    }
    w.config(&cfg);
    target
}

/// The password of the newest token the fake AWS issued.
fn newest(w: &World) -> Option<String> {
    w.fake.issued_passwords().last().cloned()
}

/// The passwords of the successful PUTs to one record, in order.
fn puts(fp: &FakePortainer, id: u32) -> Vec<String> {
    let path = format!("/api/registries/{id}");
    fp.requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.path == path && r.status == 200)
        .map(|r| {
            let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(body["Authentication"], true, "{}", r.path);
            assert_eq!(body["Username"], "AWS");
            assert!(body.get("URL").is_none(), "URL is never sent");
            body["Password"].as_str().unwrap().to_string()
        })
        .collect()
}

fn lists(fp: &FakePortainer) -> usize {
    fp.requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/api/registries")
        .count()
}

fn holds(fp: &FakePortainer, id: u32, password: &str) -> bool {
    fp.record(id)
        .is_some_and(|r| r.authentication && r.username == "AWS" && r.password == password)
}

fn portainer_status(w: &World, i: usize) -> serde_json::Value {
    w.status_json()
        .and_then(|s| s["portainer"].get(i).cloned())
        .unwrap_or(serde_json::Value::Null)
}

fn finish(w: &World, fakes: &[&FakePortainer]) {
    for fp in fakes {
        w.add_secrets(fp.secrets());
    }
    w.assert_no_secrets();
}

#[test]
fn one_put_per_rotation_per_record_and_none_when_nothing_changed() {
    let w = World::new();
    let fp = FakePortainer::start().unwrap();
    let a = fp.add_record(
        "ecr-a",
        CUSTOM,
        H1,
        true,
        "AWS",
        "seed-password-0001-stale-a",
    );
    let b = fp.add_record("ecr-b", CUSTOM, &format!("https://{H1}/"), false, "", "");
    let c = fp.add_record(
        "ecr-h2",
        CUSTOM,
        H2,
        true,
        "someone",
        "seed-password-0002-stale-c",
    );
    let other = fp.add_record(
        "hub",
        6,
        "docker.io",
        true,
        "me",
        "seed-password-0003-hub-password",
    );
    let foreign = fp.add_record(
        "elsewhere",
        CUSTOM,
        "registry.example.com",
        true,
        "u",
        "seed-password-0004-p",
    );
    config(&w, &[block(&w, &fp, "p", &fp.admin_key(), "")]);
    let mut d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(
        wait_for(LONG, || {
            let Some(p1) = newest(&w) else { return false };
            holds(&fp, a, &p1) && holds(&fp, b, &p1)
        }),
        "records a and b never got H1's token: {:?}\n{}",
        fp.records(),
        d.log_text()
    );
    // Each host's own token: c gets H2's.
    assert!(wait_for(LONG, || {
        let p = w.fake.issued_passwords();
        fp.record(c)
            .is_some_and(|r| p.contains(&r.password) && r.username == "AWS")
    }));
    // Records of other hosts and types are never touched.
    for id in [other, foreign] {
        assert!(puts(&fp, id).is_empty(), "record {id} was written");
    }
    // Nothing changes: the records are read back every second, and no PUT follows.
    let (put_a, put_b) = (puts(&fp, a).len(), puts(&fp, b).len());
    assert_eq!((put_a, put_b), (1, 1), "one PUT each for the first token");
    let before = lists(&fp);
    assert!(wait_for(LONG, || lists(&fp) >= before + 3), "no read-backs");
    assert_eq!(
        (puts(&fp, a).len(), puts(&fp, b).len()),
        (1, 1),
        "a PUT without a change"
    );
    // Three rotations: exactly one PUT per record each, with the new password.
    for round in 1..=3 {
        let issued = w.fake.issued_passwords().len();
        let out = w.client(&["refresh", H1]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert!(wait_for(LONG, || w.fake.issued_passwords().len() > issued));
        let p = newest(&w).unwrap();
        assert!(
            wait_for(LONG, || holds(&fp, a, &p) && holds(&fp, b, &p)),
            "rotation {round} not delivered"
        );
        let before = lists(&fp);
        assert!(wait_for(LONG, || lists(&fp) >= before + 2));
        for id in [a, b] {
            let sent = puts(&fp, id);
            assert_eq!(
                sent.len(),
                1 + round,
                "record {id}: {} PUTs after rotation {round}",
                sent.len()
            );
            assert_eq!(sent.last(), Some(&p));
        }
    }
    let st = portainer_status(&w, 0);
    assert_eq!(st["admin"], true, "{st}");
    assert_eq!(st["reachable"], true);
    assert!(
        st["version"].as_str().is_some_and(|v| !v.is_empty()),
        "{st}"
    );
    let ours: Vec<u64> = st["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["host"].is_null())
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ours, [u64::from(a), u64::from(b), u64::from(c)], "{st}");
    let out = w.client(&["status"]);
    let text = stdout(&out);
    assert!(
        text.contains("PORTAINER") && text.contains(&fp.url()),
        "{text}"
    );
    assert!(text.contains("ecr-a"), "{text}");
    assert_eq!(code(&out), 0, "{text}");
    d.stop();
    drop(d);
    finish(&w, &[&fp]);
}

#[test]
fn a_record_edited_in_the_ui_is_restored_and_a_vanished_one_is_reported() {
    let w = World::new();
    let fp = FakePortainer::start().unwrap();
    let a = fp.add_record("ecr-a", CUSTOM, H1, true, "AWS", "seed-password-0005-x");
    let gone = fp.add_record("ecr-gone", CUSTOM, H1, true, "AWS", "seed-password-0006-x");
    config(&w, &[block(&w, &fp, "p", &fp.admin_key(), "")]);
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(LONG, || newest(&w).is_some_and(|p| holds(&fp, a, &p))));
    let p = newest(&w).unwrap();
    // Someone types other credentials in the UI.
    fp.edit_record(a, |r| {
        r.username = "admin".into();
        r.password = "typed-in-the-ui".into();
    });
    assert!(
        wait_for(LONG, || holds(&fp, a, &p)),
        "the UI edit was never healed: {:?}",
        fp.record(a)
    );
    // Only the password changed (the user name kept): healed too.
    fp.edit_record(a, |r| r.password = "typed-again".into());
    assert!(wait_for(LONG, || holds(&fp, a, &p)));
    // Authentication switched off: healed.
    fp.edit_record(a, |r| {
        r.authentication = false;
        r.username.clear();
        r.password.clear();
    });
    assert!(wait_for(LONG, || holds(&fp, a, &p)));
    // A record deleted is reported; one re-created (a new id, same URL) is kept fresh.
    fp.delete_record(gone);
    let again = fp.add_record("ecr-gone", CUSTOM, H1, false, "", "");
    assert!(wait_for(LONG, || holds(&fp, again, &p)));
    assert!(
        wait_for(LONG, || {
            portainer_status(&w, 0)["warnings"]
                .as_array()
                .is_some_and(|ws| {
                    ws.iter().any(|x| {
                        x.as_str()
                            .unwrap_or("")
                            .contains(&format!("record(s) {gone} \"ecr-gone\" vanished"))
                    })
                })
        }),
        "{}",
        portainer_status(&w, 0)
    );
    assert!(d.log_text().contains("restoring their credentials"));
    drop(d);
    finish(&w, &[&fp]);
}

/// Six instances, each broken its own way, one healthy: each shows a clear status, and neither
/// the file target nor the healthy instance waits for the others (one hangs 120 s per request).
#[test]
fn each_failure_is_clear_and_delays_nothing_else() {
    let w = World::new();
    let healthy = FakePortainer::start().unwrap();
    let ok_id = healthy.add_record("ecr", CUSTOM, H1, true, "AWS", "seed-password-0007-x");
    let non_admin = FakePortainer::start().unwrap();
    non_admin.add_record("ecr", CUSTOM, H1, true, "AWS", "seed-password-0008-x");
    let bad_key = FakePortainer::start().unwrap();
    bad_key.add_record("ecr", CUSTOM, H1, true, "AWS", "seed-password-0009-x");
    let revoked = bad_key.admin_key();
    bad_key.revoke_key(&revoked);
    let wrong_cert = FakePortainer::start().unwrap();
    let conflict = FakePortainer::start().unwrap();
    let c1 = conflict.add_record("same", CUSTOM, H1, true, "AWS", "seed-password-0010-x");
    conflict.add_record("same", 6, "docker.io", true, "u", "seed-password-0011-p");
    let hanging = FakePortainer::start().unwrap();
    hanging.add_record("ecr", CUSTOM, H1, true, "AWS", "seed-password-0012-x");
    hanging.set_fault(Some(PFault::Delay(Duration::from_secs(120))));
    // Down: a port nothing listens on.
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down_url = format!("https://{}", down.local_addr().unwrap());
    drop(down);
    let down_key = w.path("down.key");
    std::fs::write(&down_key, "ptr_whatever\n").unwrap();
    chmod(&down_key, 0o600);
    // The wrong certificate: another Portainer's CA is trusted.
    let mut wrong = block(&w, &wrong_cert, "wrong", &wrong_cert.admin_key(), "");
    wrong = wrong.replace(
        &w.path("wrong-ca.pem").display().to_string(),
        &w.path("healthy-ca.pem").display().to_string(),
    );
    let target = config(
        &w,
        &[
            block(&w, &hanging, "hanging", &hanging.admin_key(), ""),
            block(&w, &non_admin, "nonadmin", &non_admin.user_key(), ""),
            block(&w, &bad_key, "badkey", &revoked, ""),
            wrong,
            format!(
                "\n[[portainer]]\nurl = \"{down_url}\"\napi_key_file = \"{}\"\n",
                down_key.display()
            ),
            block(&w, &conflict, "conflict", &conflict.admin_key(), ""),
            block(&w, &healthy, "healthy", &healthy.admin_key(), ""),
        ],
    );
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    // Well before the hanging instance's first answer: the file and the healthy record are fresh.
    assert!(
        wait_for(Duration::from_secs(40), || {
            newest(&w).is_some_and(|p| holds(&healthy, ok_id, &p))
                && std::fs::read(&target).is_ok_and(|b| !b.is_empty())
        }),
        "delayed by a broken instance:\n{}",
        d.log_text()
    );
    assert_fresh_entry(&w, &target, H1);
    let want = [
        (1, "not an administrator's (HTTP 403"),
        (2, "API key was refused (HTTP 401"),
        (3, "TLS"),
        (4, "cannot reach"),
    ];
    for (i, text) in want {
        assert!(
            wait_for(LONG, || portainer_status(&w, i)["last_error"]
                .as_str()
                .is_some_and(|e| e.contains(text))),
            "instance {i}: {}",
            portainer_status(&w, i)
        );
    }
    assert_eq!(portainer_status(&w, 1)["admin"], false);
    assert_eq!(portainer_status(&w, 3)["reachable"], false);
    assert!(
        portainer_status(&w, 4)["last_error"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "{}",
        portainer_status(&w, 4)
    );
    // The 409: the record's own error, the instance itself fine.
    assert!(
        wait_for(LONG, || {
            let st = portainer_status(&w, 5);
            st["records"].as_array().is_some_and(|rs| {
                rs.iter().any(|r| {
                    r["id"] == c1
                        && r["last_error"]
                            .as_str()
                            .is_some_and(|e| e.contains("HTTP 409") && e.contains("same name"))
                })
            })
        }),
        "{}",
        portainer_status(&w, 5)
    );
    // Nothing the broken ones were sent took effect, and no key ever went to the wrong server.
    assert!(
        non_admin
            .records()
            .iter()
            .all(|r| r.password.starts_with("seed-password-"))
    );
    assert!(
        wrong_cert.requests().is_empty(),
        "a request crossed a failed handshake"
    );
    // The hanging one is still waiting, and its status says so without blocking `status`.
    assert!(portainer_status(&w, 0)["last_check"].is_null());
    let out = w.client(&["status"]);
    assert_eq!(
        code(&out),
        1,
        "a failing Portainer is a warning:\n{}",
        stdout(&out)
    );
    drop(d);
    // `check` says the same, one line each, and exits 2.
    hanging.set_fault(None);
    let out = w.run(&["check"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 2, "{text}");
    for needle in [
        "not an administrator's",
        "API key was refused",
        "cannot reach",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
    assert!(
        text.contains(&format!("portainer {}: ok", healthy.url())),
        "{text}"
    );
    finish(
        &w,
        &[
            &healthy,
            &non_admin,
            &bad_key,
            &wrong_cert,
            &conflict,
            &hanging,
        ],
    );
}

#[test]
fn check_shows_version_records_and_how_to_replace_a_native_ecr_record() {
    let w = World::new();
    let fp = FakePortainer::start().unwrap();
    fp.set_version("2.19.5");
    fp.add_record("ours", CUSTOM, H1, false, "", "");
    fp.add_record(
        "native",
        NATIVE_ECR,
        H1,
        true,
        "AKIAFAKE",
        "seed-password-0013-static-secret-key",
    );
    config(&w, &[block(&w, &fp, "p", &fp.admin_key(), "")]);
    let out = w.run(&["check"]);
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "portainer {}: ok (Portainer 2.19.5, an administrator's key; 1 record kept fresh)",
            fp.url()
        )),
        "{text}"
    );
    assert!(text.contains("record 1 \"ours\" (custom,"), "{text}");
    assert!(
        text.contains("native ECR type, which needs static IAM keys"),
        "{text}"
    );
    assert!(text.contains("add a Custom registry"), "{text}");
    assert_eq!(code(&out), 1, "a warning:\n{text}");
    // check only reads.
    assert!(
        fp.requests().iter().all(|r| r.method == "GET"),
        "{:?}",
        fp.requests().len()
    );
    // Listed ids: a missing one and a native one are errors.
    config(
        &w,
        &[block(
            &w,
            &fp,
            "p",
            &fp.admin_key(),
            "registries = [1, 2, 9]\n",
        )],
    );
    let out = w.run(&["check"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 2, "{text}");
    assert!(
        text.contains("record 9: ERROR: record 9 is not in Portainer"),
        "{text}"
    );
    assert!(text.contains("\"native\" (ecr,"), "{text}");
    finish(&w, &[&fp]);
}

#[test]
fn once_sets_the_records_too() {
    let w = World::new();
    let fp = FakePortainer::start().unwrap();
    let a = fp.add_record("ecr", CUSTOM, H1, true, "AWS", "seed-password-0014-old");
    config(&w, &[block(&w, &fp, "p", &fp.admin_key(), "")]);
    let out = w.run(&["once"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 0, "{text}\n{}", stderr(&out));
    assert!(holds(&fp, a, &newest(&w).unwrap()));
    assert!(text.contains("1 record kept fresh, 1 updated"), "{text}");
    finish(&w, &[&fp]);
}

/// Only a pinned certificate is accepted (its name and issuer do not matter); after the server's
/// certificate changes, nothing is sent until the pin is updated.
#[test]
fn a_pinned_certificate_and_a_changed_one() {
    let w = World::new();
    let fp = FakePortainer::start().unwrap();
    let a = fp.add_record("ecr", CUSTOM, H1, true, "AWS", "seed-password-0015-old");
    let key = w.path("p.key");
    std::fs::write(&key, fp.admin_key()).unwrap();
    chmod(&key, 0o600);
    let pinned = format!(
        "\n[[portainer]]\nurl = \"https://localhost:{}\"\napi_key_file = \"{}\"\npin_sha256 = \"{}\"\ncheck_every = \"1s\"\n",
        fp.addr().port(),
        key.display(),
        fp.cert_sha256()
    );
    config(&w, &[pinned]);
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(LONG, || newest(&w).is_some_and(|p| holds(&fp, a, &p))));
    fp.rotate_certificate();
    fp.reset_requests();
    assert!(
        wait_for(LONG, || portainer_status(&w, 0)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("not the pinned one"))),
        "{}",
        portainer_status(&w, 0)
    );
    assert!(
        fp.requests().is_empty(),
        "a request was sent to an unpinned server"
    );
    drop(d);
    finish(&w, &[&fp]);
}

/// The API key file must be root's and private; otherwise nothing is sent at all.
#[test]
fn an_api_key_file_others_can_read_or_write_is_refused() {
    require_root!();
    let w = World::new();
    let fp = FakePortainer::start().unwrap();
    fp.add_record("ecr", CUSTOM, H1, true, "AWS", "seed-password-0016-old");
    config(&w, &[block(&w, &fp, "p", &fp.admin_key(), "")]);
    let key = w.path("p.key");
    for (setup, want) in [
        (
            Box::new(|| chmod(&key, 0o644)) as Box<dyn Fn()>,
            "group or others may read it (mode 0644); fix with: chmod 600",
        ),
        (
            Box::new(|| {
                chmod(&key, 0o600);
                chown(&key, 4242, 4242);
            }),
            "fix with: chown root:",
        ),
    ] {
        setup();
        let out = w.run(&["check"]);
        let text = stdout(&out);
        assert_eq!(code(&out), 2, "{text}");
        assert!(text.contains(want), "{want:?}:\n{text}");
        assert!(
            fp.requests().is_empty(),
            "a request was made with a refused key"
        );
    }
    finish(&w, &[&fp]);
}
