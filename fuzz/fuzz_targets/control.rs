//! The control protocol's request parser never panics on what a client sends.
#![no_main]

use ecr_refresherd::daemon::control::{Request, parse_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = parse_request(data) {
        assert!(data.len() <= 4096 && data.ends_with(b"\n"));
        // What was accepted round-trips.
        let again = serde_json::to_string(&req).expect("serializes");
        assert_eq!(serde_json::from_str::<Request>(&again).ok(), Some(req));
    }
});
