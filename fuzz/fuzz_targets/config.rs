//! Config parsing never panics; an accepted config is internally consistent.
#![no_main]

use ecr_refresherd::config::{Accounts, GroupSpec, parse};
use libfuzzer_sys::fuzz_target;

struct NoAccounts;

impl Accounts for NoAccounts {
    fn group(&self, _: &str) -> Option<GroupSpec> {
        None
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse(text, None, &NoAccounts) {
        Ok(s) => {
            assert!(!s.registries.is_empty());
            assert!(!s.targets.is_empty());
            for r in &s.registries {
                if let ecr_refresherd::config::RegistryTargets::Only(names) = &r.targets {
                    for t in names {
                        assert!(s.targets.iter().any(|x| &x.name == t), "unknown target accepted");
                    }
                }
            }
            for t in &s.targets {
                assert!(t.path.is_absolute());
                assert!(t.mode.is_none_or(|m| m <= 0o777));
            }
            assert!(s.daemon.refresh_at > 0.0 && s.daemon.refresh_at < 1.0);
            assert!(s.daemon.jitter >= 0.0 && s.daemon.jitter < 1.0);
        }
        Err(diags) => {
            assert!(!diags.is_empty());
            for d in diags {
                assert!(d.line >= 1 && d.column >= 1, "{d:?}");
            }
        }
    }
});
