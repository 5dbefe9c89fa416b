//! Tests of the `fake-aws` binary: startup line, flags, refusal of non-loopback addresses.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> (Killed, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fake-aws"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = Killed(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .trim_end()
        .strip_prefix("listening http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (child, url.parse().unwrap())
}

#[test]
fn prints_listening_line_and_serves() {
    let (_child, addr) = spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--lifetime",
        "1h",
        "--account",
        "444455556666",
        "--region",
        "eu-central-1",
    ]);
    assert!(addr.ip().is_loopback());
    assert_ne!(addr.port(), 0);
    let v = common::ecr_get_token(addr, "eu-central-1").json();
    let d = &v["authorizationData"][0];
    assert_eq!(
        d["proxyEndpoint"],
        "https://444455556666.dkr.ecr.eu-central-1.amazonaws.com"
    );
    let exp = d["expiresAt"].as_f64().unwrap();
    assert!((exp - (common::epoch_now() + 3600.0)).abs() < 5.0);
    let token = common::imds_token(addr);
    let doc = common::imds_get(addr, "/latest/dynamic/instance-identity/document", &token).json();
    assert_eq!(doc["accountId"], "444455556666");
    assert_eq!(doc["region"], "eu-central-1");
    let calls = common::request(addr, "GET", "/_fake/calls", &[], b"").json();
    assert_eq!(calls["counts"]["ecr"], 1);
    assert_eq!(calls["counts"]["imds"], 2);
}

#[test]
fn rate_flags_limit_ecr() {
    let (_child, addr) = spawn(&["--rate", "0.001", "--burst", "2", "--latency-ms", "1"]);
    let statuses: Vec<u16> = (0..3)
        .map(|_| common::ecr_get_token(addr, "us-east-1").status)
        .collect();
    assert_eq!(statuses, [200, 200, 400]);
}

#[test]
fn refuses_non_loopback_and_bad_flags() {
    for args in [
        &["--listen", "0.0.0.0:0"][..],
        &["--listen", "192.0.2.1:80"][..],
        &["--lifetime", "soon"][..],
        &["--rate", "5"][..],
        &["--what"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_fake-aws"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
