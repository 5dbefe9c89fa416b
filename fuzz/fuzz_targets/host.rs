//! Host parsing never panics, and only well-formed hosts are accepted.
#![no_main]

use ecr_refresherd::ecr::registry::{Registry, key_host};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(host) = std::str::from_utf8(data) else { return };
    let _ = key_host(host);
    if let Ok(r) = Registry::parse(host) {
        assert!(!host.contains('/') && !host.contains(':') && !host.contains(char::is_whitespace));
        assert!(host.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'));
        assert_eq!(key_host(host), host);
        assert!(!r.api_region().is_empty());
    }
});
