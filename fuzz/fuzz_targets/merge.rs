//! The auth-file merge: never panics; its output is valid JSON that keeps every foreign key.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use ecr_refresherd::targets::authfile::{Desired, Format, merge, parse};
use ecr_refresherd::ecr::registry::Registry;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const HOSTS: [&str; 3] = ["111111111111.dkr.ecr.us-east-1.amazonaws.com", "public.ecr.aws", "docker.io"];

fuzz_target!(|data: &[u8]| {
    // First byte: which hosts to set / remove (bits 0-5), no file (bit 6), podman rules (bit 7);
    // the rest: the existing file.
    let Some((&sel, existing)) = data.split_first() else { return };
    let mut desired = Desired { set: BTreeMap::new(), remove: BTreeSet::new() };
    for (i, h) in HOSTS.iter().enumerate() {
        if sel & (1 << i) != 0 {
            desired.set.insert(h.to_string(), "QVdTOnB3".to_string());
        } else if sel & (1 << (i + 3)) != 0 {
            desired.remove.insert(h.to_string());
        }
    }
    let format = if sel & 0x80 == 0 { Format::Docker } else { Format::Podman };
    let existing = (sel & 0x40 == 0).then_some(existing);
    let Ok(out) = merge(existing, &desired, format) else {
        // Refused input must be unparseable as an auth file.
        assert!(existing.is_some_and(|e| parse(e).is_err()));
        return;
    };
    let Some(out) = out else { return };
    let new = parse(&out).expect("the output parses as an auth file");
    let old = existing.map(|e| parse(e).expect("accepted input parses")).unwrap_or_default();
    for (k, v) in &old {
        if k == "auths" {
            continue;
        }
        assert_eq!(new.get(k), Some(v), "foreign key {k:?} changed");
    }
    // Only ECR hosts are ever managed; docker.io in `desired` must change nothing.
    let ecr = |h: &&String| Registry::parse(h).is_ok();
    let managed: Vec<&String> = desired.set.keys().chain(desired.remove.iter()).filter(ecr).collect();
    if let Some(Value::Object(a)) = old.get("auths") {
        for (k, v) in a {
            if !managed.iter().any(|h| format.names_host(k, h)) {
                assert_eq!(new["auths"].get(k), Some(v), "foreign entry {k:?} changed");
            }
        }
    }
    for (h, auth) in desired.set.iter().filter(|(h, _)| ecr(h)) {
        assert_eq!(new["auths"][h.as_str()]["auth"].as_str(), Some(auth.as_str()));
    }
    for h in desired.remove.iter().filter(ecr) {
        assert!(new["auths"].as_object().is_none_or(|a| !a.keys().any(|k| format.names_host(k, h))));
    }
});
