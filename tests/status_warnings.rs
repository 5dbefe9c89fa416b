//! `status` says what `check` would: a target's warnings follow the file as it changes on disk.

mod common;

use std::time::Duration;

use common::*;

const H1: &str = "111111111111.dkr.ecr.us-east-1.amazonaws.com";

fn warnings(w: &World) -> Vec<String> {
    w.status_json()
        .and_then(|s| {
            s["targets"][0]["warnings"].as_array().map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default()
}

#[test]
fn a_creds_store_added_and_a_mode_fixed_show_in_status_at_once() {
    let w = World::new();
    let target = w.one_target_config(&[H1], "");
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(Duration::from_secs(20), || has_entry_in(&target)));
    assert!(warnings(&w).is_empty(), "{:?}", warnings(&w));

    // Someone adds a credsStore (Docker Desktop's, a `docker login` with a helper).
    let mut map = read_json(&target);
    map.insert("credsStore".into(), serde_json::json!("desktop"));
    std::fs::write(&target, serde_json::to_vec(&map).unwrap()).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || warnings(&w)
            .iter()
            .any(|x| x.contains("credsStore"))),
        "status never showed the credsStore: {:?}\n{}",
        warnings(&w),
        d.log_text()
    );
    let check = w.run(&["check"]);
    assert!(stdout(&check).contains("credsStore"), "check agrees");

    // It is removed, and the file made readable by others: the warning follows.
    map.remove("credsStore");
    std::fs::write(&target, serde_json::to_vec(&map).unwrap()).unwrap();
    chmod(&target, 0o644);
    assert!(
        wait_for(Duration::from_secs(10), || {
            let ws = warnings(&w);
            !ws.iter().any(|x| x.contains("credsStore")) && ws.iter().any(|x| x.contains("0644"))
        }),
        "status did not follow the file: {:?}",
        warnings(&w)
    );
    chmod(&target, 0o600);
    assert!(
        wait_for(Duration::from_secs(10), || warnings(&w).is_empty()),
        "a fixed mode stayed a warning: {:?}",
        warnings(&w)
    );
}

fn has_entry_in(p: &std::path::Path) -> bool {
    std::fs::read(p)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v["auths"][H1].is_object())
}
