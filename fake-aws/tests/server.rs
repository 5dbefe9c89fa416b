//! Black-box tests of the fake server over plain TCP.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::*;
use fake_aws::{FakeAws, Fault, Service};

fn decode_token(token: &str) -> String {
    String::from_utf8(BASE64.decode(token).expect("base64")).expect("utf-8")
}

#[test]
fn ecr_success_body_shape_and_aws_token() {
    let aws = FakeAws::start().unwrap();
    let r = ecr_get_token(aws.addr(), "eu-west-1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-amz-json-1.1"));
    assert!(r.header("x-amzn-requestid").is_some());
    let v = r.json();
    let data = v["authorizationData"].as_array().expect("list");
    assert_eq!(data.len(), 1);
    let token = data[0]["authorizationToken"].as_str().unwrap();
    let decoded = decode_token(token);
    let pw = decoded.strip_prefix("AWS:").expect("AWS: prefix");
    assert!(pw.starts_with("fakepw-1-"), "{pw}");
    assert_eq!(pw.len(), "fakepw-1-".len() + 16);
    assert_eq!(
        data[0]["proxyEndpoint"],
        "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    );
    let expires = data[0]["expiresAt"].as_f64().expect("number");
    let want = epoch_now() + 12.0 * 3600.0;
    assert!((expires - want).abs() < 5.0, "{expires} vs {want}");

    assert_eq!(aws.issued_passwords(), vec![pw.to_string()]);
    let secrets = aws.secrets();
    assert!(secrets.contains(&pw.to_string()));
    assert!(secrets.contains(&token.to_string()));

    let calls = aws.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].service, Service::Ecr);
    assert_eq!(calls[0].action, "GetAuthorizationToken");
    assert_eq!(calls[0].region.as_deref(), Some("eu-west-1"));
    assert_eq!(calls[0].access_key_id.as_deref(), Some("FAKEACCESSKEY"));
    assert_eq!(calls[0].fault, Fault::None);
    assert_eq!(aws.count(Service::Ecr), 1);
    assert_eq!(aws.count(Service::EcrPublic), 0);

    // passwords are unique
    let r2 = ecr_get_token(aws.addr(), "eu-west-1").json();
    let pw2 = decode_token(
        r2["authorizationData"][0]["authorizationToken"]
            .as_str()
            .unwrap(),
    );
    assert_ne!(pw2, decoded);
    assert_eq!(aws.issued_passwords().len(), 2);
}

#[test]
fn ecr_registry_ids_and_lifetime() {
    let aws = FakeAws::start().unwrap();
    aws.set_token_lifetime(Duration::from_secs(60));
    let auth = auth_header("FAKEACCESSKEY", "us-east-2", "ecr");
    let r = request(
        aws.addr(),
        "POST",
        "/",
        &[
            (
                "X-Amz-Target",
                "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken",
            ),
            ("Authorization", &auth),
        ],
        br#"{"registryIds":["111111111111","222222222222"]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let data = v["authorizationData"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(
        data[1]["proxyEndpoint"],
        "https://222222222222.dkr.ecr.us-east-2.amazonaws.com"
    );
    let expires = data[0]["expiresAt"].as_f64().unwrap();
    assert!((expires - (epoch_now() + 60.0)).abs() < 5.0);
    assert_eq!(
        aws.calls()[0].registry_ids,
        ["111111111111", "222222222222"]
    );
}

#[test]
fn ecr_public_success_body_shape() {
    let aws = FakeAws::start().unwrap();
    let r = ecr_public_get_token(aws.addr());
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let data = v["authorizationData"]
        .as_object()
        .expect("object, not list");
    let decoded = decode_token(data["authorizationToken"].as_str().unwrap());
    assert!(decoded.starts_with("AWS:fakepw-"));
    assert!(data["expiresAt"].is_number());
    assert!(data.get("proxyEndpoint").is_none());
    assert_eq!(aws.count(Service::EcrPublic), 1);
    assert_eq!(aws.calls()[0].service, Service::EcrPublic);
}

#[test]
fn sticky_throttle_fault() {
    let aws = FakeAws::start().unwrap();
    aws.set_fault(Service::Ecr, Fault::Throttle);
    for _ in 0..3 {
        let r = ecr_get_token(aws.addr(), "us-east-1");
        assert_eq!(r.status, 400);
        assert_eq!(r.header("x-amzn-errortype"), Some("ThrottlingException"));
        let v = r.json();
        assert_eq!(v["__type"], "ThrottlingException");
        assert_eq!(v["message"], "Rate exceeded");
    }
    // other services are unaffected
    assert_eq!(ecr_public_get_token(aws.addr()).status, 200);
    aws.set_fault(Service::Ecr, Fault::None);
    assert_eq!(ecr_get_token(aws.addr(), "us-east-1").status, 200);
    assert!(aws.issued_passwords().len() == 2);
    let faults: Vec<Fault> = aws.calls().into_iter().map(|c| c.fault).collect();
    assert_eq!(faults.iter().filter(|f| **f == Fault::Throttle).count(), 3);
}

#[test]
fn one_shot_queue_then_default() {
    let aws = FakeAws::start().unwrap();
    aws.set_fault(Service::Ecr, Fault::AccessDenied);
    aws.push_faults(
        Service::Ecr,
        [
            Fault::ServerError,
            Fault::Unavailable,
            Fault::ExpiredToken,
            Fault::None,
        ],
    );
    let statuses: Vec<(u16, String)> = (0..6)
        .map(|_| {
            let r = ecr_get_token(aws.addr(), "us-east-1");
            let code = r.header("x-amzn-errortype").unwrap_or("").to_string();
            (r.status, code)
        })
        .collect();
    assert_eq!(
        statuses,
        [
            (500, "ServerException".to_string()),
            (503, "ServiceUnavailableException".to_string()),
            (400, "ExpiredTokenException".to_string()),
            (200, String::new()),
            (400, "AccessDeniedException".to_string()),
            (400, "AccessDeniedException".to_string()),
        ]
    );
    aws.clear_faults(Service::Ecr);
    assert_eq!(ecr_get_token(aws.addr(), "us-east-1").status, 200);
}

#[test]
fn rate_limit_burst_then_throttle() {
    let aws = FakeAws::start().unwrap();
    aws.set_rate_limit(Service::Ecr, 0.001, 5);
    let statuses: Vec<u16> = (0..8)
        .map(|_| ecr_get_token(aws.addr(), "us-east-1").status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 400, 400, 400]);
    assert_eq!(aws.count(Service::Ecr), 8);
    assert_eq!(ecr_public_get_token(aws.addr()).status, 200);
    aws.clear_rate_limit(Service::Ecr);
    assert_eq!(ecr_get_token(aws.addr(), "us-east-1").status, 200);
}

#[test]
fn rate_limit_refills() {
    let aws = FakeAws::start().unwrap();
    aws.set_rate_limit(Service::Ecr, 20.0, 1);
    assert_eq!(ecr_get_token(aws.addr(), "us-east-1").status, 200);
    assert_eq!(ecr_get_token(aws.addr(), "us-east-1").status, 400);
    std::thread::sleep(Duration::from_millis(120));
    assert_eq!(ecr_get_token(aws.addr(), "us-east-1").status, 200);
}

#[test]
fn rate_limit_is_shared_across_concurrent_callers() {
    let aws = FakeAws::start().unwrap();
    aws.set_rate_limit(Service::Ecr, 0.001, 10);
    let addr = aws.addr();
    let handles: Vec<_> = (0..25)
        .map(|_| std::thread::spawn(move || ecr_get_token(addr, "us-east-1").status))
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 10);
    assert_eq!(statuses.iter().filter(|s| **s == 400).count(), 15);
}

#[test]
fn content_faults() {
    let aws = FakeAws::start().unwrap();
    aws.push_faults(
        Service::Ecr,
        [
            Fault::NotJson,
            Fault::MissingFields,
            Fault::NotBase64,
            Fault::NoAwsPrefix,
            Fault::NoExpiresAt,
            Fault::ExpiresAtOffset(-60),
            Fault::ExpiresAtOffset(i64::MAX),
            Fault::HugeBody(200_000),
        ],
    );
    let addr = aws.addr();
    let r = ecr_get_token(addr, "us-east-1");
    assert_eq!(r.status, 200);
    assert!(serde_json::from_slice::<serde_json::Value>(&r.body).is_err());

    let v = ecr_get_token(addr, "us-east-1").json();
    assert!(
        v["authorizationData"][0]
            .get("authorizationToken")
            .is_none()
    );
    assert!(v["authorizationData"][0]["expiresAt"].is_number());

    let v = ecr_get_token(addr, "us-east-1").json();
    let t = v["authorizationData"][0]["authorizationToken"]
        .as_str()
        .unwrap();
    assert!(BASE64.decode(t).is_err());

    let v = ecr_get_token(addr, "us-east-1").json();
    let t = decode_token(
        v["authorizationData"][0]["authorizationToken"]
            .as_str()
            .unwrap(),
    );
    let pw = t.strip_prefix("user:").expect("user: prefix");
    assert!(
        aws.secrets().contains(&pw.to_string()),
        "malformed tokens still count as secrets"
    );
    assert!(!aws.issued_passwords().contains(&pw.to_string()));

    let v = ecr_get_token(addr, "us-east-1").json();
    assert!(v["authorizationData"][0].get("expiresAt").is_none());
    assert!(v["authorizationData"][0]["authorizationToken"].is_string());

    let v = ecr_get_token(addr, "us-east-1").json();
    let e = v["authorizationData"][0]["expiresAt"].as_f64().unwrap();
    assert!((e - (epoch_now() - 60.0)).abs() < 5.0);

    let v = ecr_get_token(addr, "us-east-1").json();
    assert_eq!(
        v["authorizationData"][0]["expiresAt"].as_i64(),
        Some(i64::MAX)
    );

    let r = ecr_get_token(addr, "us-east-1");
    assert!(r.body.len() >= 200_000);
    let v = r.json();
    assert!(v["authorizationData"][0]["authorizationToken"].is_string());

    // queue drained: normal again
    let r = ecr_get_token(addr, "us-east-1");
    assert!(r.body.len() < 1000);
    // NoExpiresAt, two ExpiresAtOffset, HugeBody and the last one
    assert_eq!(aws.issued_passwords().len(), 5);
}

#[test]
fn stall_and_latency() {
    let aws = FakeAws::start().unwrap();
    aws.push_faults(Service::Ecr, [Fault::Stall(Duration::from_millis(300))]);
    let t = Instant::now();
    assert_eq!(ecr_get_token(aws.addr(), "us-east-1").status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));

    aws.set_latency(Service::EcrPublic, Duration::from_millis(200));
    let t = Instant::now();
    assert_eq!(ecr_public_get_token(aws.addr()).status, 200);
    assert!(t.elapsed() >= Duration::from_millis(200));
    let t = Instant::now();
    assert_eq!(ecr_get_token(aws.addr(), "us-east-1").status, 200);
    assert!(t.elapsed() < Duration::from_millis(200));
}

#[test]
fn drop_connection_closes_without_response() {
    let aws = FakeAws::start().unwrap();
    aws.push_faults(Service::Ecr, [Fault::DropConnection]);
    let got = raw(
        aws.addr(),
        "POST",
        "/",
        &[(
            "X-Amz-Target",
            "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken",
        )],
        b"{}",
        Duration::from_secs(5),
    );
    match got {
        Ok(bytes) => assert!(
            bytes.is_empty(),
            "got {:?}",
            String::from_utf8_lossy(&bytes)
        ),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert_eq!(aws.count(Service::Ecr), 1);
    assert_eq!(aws.calls()[0].fault, Fault::DropConnection);
    assert_eq!(ecr_get_token(aws.addr(), "us-east-1").status, 200);
}

#[test]
fn blackhole_never_answers_and_drop_stops_server() {
    let aws = FakeAws::start().unwrap();
    aws.set_fault(Service::Sts, Fault::Blackhole);
    let addr = aws.addr();
    let err = raw(
        addr,
        "POST",
        "/",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"Action=AssumeRole&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fr&RoleSessionName=s",
        Duration::from_millis(300),
    )
    .expect_err("no answer");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    // a blackholed connection still open does not keep the server alive
    let mut held = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(
        &mut held,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 20\r\n\r\nAction=AssumeRole&x=",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    drop(aws);
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "listener closed"
    );
}

#[test]
fn imds_requires_token() {
    let aws = FakeAws::start().unwrap();
    let addr = aws.addr();
    let doc = "/latest/dynamic/instance-identity/document";
    assert_eq!(request(addr, "GET", doc, &[], b"").status, 401);
    assert_eq!(imds_get(addr, doc, "not-a-token").status, 401);
    // PUT without the TTL header is a 400, GET on the token path a 405
    assert_eq!(
        request(addr, "PUT", "/latest/api/token", &[], b"").status,
        400
    );
    assert_eq!(
        request(addr, "GET", "/latest/api/token", &[], b"").status,
        405
    );

    let r = request(
        addr,
        "PUT",
        "/latest/api/token",
        &[("x-aws-ec2-metadata-token-ttl-seconds", "300")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-aws-ec2-metadata-token-ttl-seconds"),
        Some("300")
    );
    let token = r.text();

    let v = imds_get(addr, doc, &token).json();
    assert_eq!(v["accountId"], "123456789012");
    assert_eq!(v["region"], "us-east-1");
    assert_eq!(v["availabilityZone"], "us-east-1a");
    assert_eq!(v["instanceId"], "i-0fake");

    aws.set_imds_identity("999988887777", "ap-south-1");
    let v = imds_get(addr, doc, &token).json();
    assert_eq!(v["accountId"], "999988887777");
    assert_eq!(v["region"], "ap-south-1");
    assert_eq!(
        imds_get(addr, "/latest/meta-data/placement/region", &token).text(),
        "ap-south-1"
    );
    assert_eq!(imds_get(addr, "/latest/meta-data/nope", &token).status, 404);

    let actions: Vec<String> = aws.calls().into_iter().map(|c| c.action).collect();
    assert!(actions.contains(&"GetToken".to_string()));
    assert!(actions.contains(&"GetIdentityDocument".to_string()));
    assert!(aws.calls().iter().all(|c| c.service == Service::Imds));
}

#[test]
fn imds_role_credentials() {
    let aws = FakeAws::start().unwrap();
    let addr = aws.addr();
    let token = imds_token(addr);
    let r = imds_get(addr, "/latest/meta-data/iam/security-credentials/", &token);
    assert_eq!(r.status, 200);
    let role = r.text();
    assert_eq!(role, fake_aws::IMDS_ROLE_NAME);
    let v = imds_get(
        addr,
        &format!("/latest/meta-data/iam/security-credentials/{role}"),
        &token,
    )
    .json();
    assert_eq!(v["Code"], "Success");
    assert_eq!(v["Type"], "AWS-HMAC");
    assert!(v["AccessKeyId"].as_str().unwrap().starts_with("FAKEIMDS"));
    let exp = v["Expiration"].as_str().unwrap();
    assert!(exp.ends_with('Z') && exp.len() == 20, "{exp}");
    let secrets = aws.secrets();
    assert!(secrets.contains(&v["SecretAccessKey"].as_str().unwrap().to_string()));
    assert!(secrets.contains(&v["Token"].as_str().unwrap().to_string()));
    assert_eq!(
        imds_get(
            addr,
            "/latest/meta-data/iam/security-credentials/other",
            &token
        )
        .status,
        404
    );
}

#[test]
fn imds_down_and_content_faults_skip_token_request() {
    let aws = FakeAws::start().unwrap();
    let addr = aws.addr();
    aws.set_fault(Service::Imds, Fault::Unavailable);
    let r = request(
        addr,
        "PUT",
        "/latest/api/token",
        &[("x-aws-ec2-metadata-token-ttl-seconds", "21600")],
        b"",
    );
    assert_eq!(r.status, 503);
    aws.set_fault(Service::Imds, Fault::None);

    // A queued NotJson is not consumed by the token PUT but by the document GET.
    aws.push_faults(Service::Imds, [Fault::NotJson]);
    let token = imds_token(addr);
    let r = imds_get(addr, "/latest/dynamic/instance-identity/document", &token);
    assert_eq!(r.status, 200);
    assert!(serde_json::from_slice::<serde_json::Value>(&r.body).is_err());
    let r = imds_get(addr, "/latest/dynamic/instance-identity/document", &token);
    assert_eq!(r.json()["accountId"], "123456789012");

    aws.push_faults(Service::Imds, [Fault::DropConnection]);
    let got = raw(
        addr,
        "PUT",
        "/latest/api/token",
        &[("x-aws-ec2-metadata-token-ttl-seconds", "21600")],
        b"",
        Duration::from_secs(5),
    );
    assert!(got.map(|b| b.is_empty()).unwrap_or(true));
}

#[test]
fn sts_assume_role_xml_and_recorded_fields() {
    let aws = FakeAws::start().unwrap();
    let arn = "arn:aws:iam::210987654321:role/path/ecr-puller";
    let r = sts_assume_role(aws.addr(), arn, "refresher session", "ext-42");
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.text();
    assert!(body.starts_with(
        "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleResult>"
    ));
    let tag = |name: &str| -> String {
        let open = format!("<{name}>");
        let start = body.find(&open).unwrap_or_else(|| panic!("no {name}")) + open.len();
        let end = body[start..].find(&format!("</{name}>")).unwrap() + start;
        body[start..end].to_string()
    };
    let akid = tag("AccessKeyId");
    assert!(akid.starts_with("FAKEASSUMED"), "{akid}");
    let secret = tag("SecretAccessKey");
    let session_token = tag("SessionToken");
    let exp = tag("Expiration");
    assert!(exp.ends_with('Z') && exp.len() == 20, "{exp}");
    assert_eq!(
        tag("Arn"),
        "arn:aws:sts::210987654321:assumed-role/ecr-puller/refresher session"
    );
    assert!(!tag("RequestId").is_empty());
    let secrets = aws.secrets();
    assert!(secrets.contains(&secret));
    assert!(secrets.contains(&session_token));

    let c = &aws.calls()[0];
    assert_eq!(c.service, Service::Sts);
    assert_eq!(c.action, "AssumeRole");
    assert_eq!(c.role_arn.as_deref(), Some(arn));
    assert_eq!(c.external_id.as_deref(), Some("ext-42"));
    assert_eq!(c.session_name.as_deref(), Some("refresher session"));
    assert_eq!(c.region.as_deref(), Some("us-west-2"));

    // counter makes access keys unique
    let r2 = sts_assume_role(aws.addr(), arn, "s2", "ext-42").text();
    assert!(!r2.contains(&format!("<AccessKeyId>{akid}</AccessKeyId>")));
}

#[test]
fn sts_errors_are_query_xml() {
    let aws = FakeAws::start().unwrap();
    aws.push_faults(Service::Sts, [Fault::AccessDenied, Fault::Throttle]);
    let r = sts_assume_role(aws.addr(), "arn:aws:iam::1:role/r", "s", "e");
    assert_eq!(r.status, 403);
    let body = r.text();
    assert!(body.starts_with("<ErrorResponse"), "{body}");
    assert!(
        body.contains("<Type>Sender</Type><Code>AccessDenied</Code>"),
        "{body}"
    );
    assert!(body.contains("<RequestId>"));
    let r = sts_assume_role(aws.addr(), "arn:aws:iam::1:role/r", "s", "e");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("<Code>Throttling</Code>"));
    // missing RoleArn is a validation error and does not consume faults
    aws.push_faults(Service::Sts, [Fault::ServerError]);
    let r = request(
        aws.addr(),
        "POST",
        "/",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"Action=AssumeRole&Version=2011-06-15",
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("<Code>ValidationError</Code>"));
    let r = sts_assume_role(aws.addr(), "arn:aws:iam::1:role/r", "s", "e");
    assert_eq!(r.status, 500);
    assert!(
        r.text()
            .contains("<Type>Receiver</Type><Code>InternalFailure</Code>")
    );
}

#[test]
fn malformed_requests_get_4xx_not_panics() {
    let aws = FakeAws::start().unwrap();
    let addr = aws.addr();
    let target = (
        "X-Amz-Target",
        "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken",
    );
    let r = request(addr, "POST", "/", &[target], b"{not json");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["__type"], "SerializationException");
    let r = request(addr, "POST", "/", &[target], br#"{"registryIds":5}"#);
    assert_eq!(r.status, 400);
    let r = request(addr, "POST", "/", &[target], &[0xff, 0xfe, 0x00]);
    assert_eq!(r.status, 400);
    let r = request(
        addr,
        "POST",
        "/",
        &[(
            "X-Amz-Target",
            "AmazonEC2ContainerRegistry_V20150921.DeleteRepository",
        )],
        b"{}",
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["__type"], "UnknownOperationException");
    let r = request(addr, "POST", "/", &[("X-Amz-Target", "Nope.Nope")], b"{}");
    assert_eq!(r.status, 400);
    let r = request(addr, "GET", "/", &[], b"");
    assert_eq!(r.status, 404);
    let r = request(
        addr,
        "POST",
        "/",
        &[("Authorization", "AWS4-HMAC-SHA256 Credential=%%%")],
        b"Action=%zz&&==&",
    );
    assert!(r.status >= 400 && r.status < 500, "{}", r.status);
    let big = vec![b'a'; 2 << 20];
    let r = raw(addr, "POST", "/", &[target], &big, Duration::from_secs(10));
    if let Ok(bytes) = r {
        assert_eq!(parse(&bytes).status, 413);
    }
    // garbage that is not HTTP at all
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut s, b"\x00\x01\x02 garbage\r\n\r\n").unwrap();
    drop(s);
    // the server is still fine
    assert_eq!(ecr_get_token(addr, "us-east-1").status, 200);
}

#[test]
fn control_plane_over_http() {
    let aws = FakeAws::start().unwrap();
    let addr = aws.addr();
    let post = |path: &str| request(addr, "POST", path, &[], b"");
    assert_eq!(
        post("/_fake/fault?service=ecr&fault=throttle&count=2").status,
        200
    );
    assert_eq!(ecr_get_token(addr, "us-east-1").status, 400);
    assert_eq!(ecr_get_token(addr, "us-east-1").status, 400);
    assert_eq!(ecr_get_token(addr, "us-east-1").status, 200);

    assert_eq!(
        post("/_fake/fault?service=ecr-public&fault=server-error").status,
        200
    );
    assert_eq!(ecr_public_get_token(addr).status, 500);
    assert_eq!(
        post("/_fake/fault?service=ecr-public&fault=none").status,
        200
    );
    assert_eq!(ecr_public_get_token(addr).status, 200);

    assert_eq!(
        post("/_fake/fault?service=ecr&fault=expires-in=-30&count=1").status,
        200
    );
    let v = ecr_get_token(addr, "us-east-1").json();
    let e = v["authorizationData"][0]["expiresAt"].as_f64().unwrap();
    assert!(e < epoch_now());

    assert_eq!(
        post("/_fake/fault?service=ecr&fault=stall-ms=150&count=1").status,
        200
    );
    let t = Instant::now();
    assert_eq!(ecr_get_token(addr, "us-east-1").status, 200);
    assert!(t.elapsed() >= Duration::from_millis(150));

    assert_eq!(post("/_fake/lifetime?secs=120").status, 200);
    let v = ecr_get_token(addr, "us-east-1").json();
    let e = v["authorizationData"][0]["expiresAt"].as_f64().unwrap();
    assert!((e - (epoch_now() + 120.0)).abs() < 5.0);

    assert_eq!(
        post("/_fake/rate?service=sts&rate=0.001&burst=1").status,
        200
    );
    assert_eq!(
        sts_assume_role(addr, "arn:aws:iam::1:role/r", "s", "e").status,
        200
    );
    assert_eq!(
        sts_assume_role(addr, "arn:aws:iam::1:role/r", "s", "e").status,
        400
    );
    assert_eq!(post("/_fake/rate?service=sts&rate=off").status, 200);
    assert_eq!(
        sts_assume_role(addr, "arn:aws:iam::1:role/r", "s", "e").status,
        200
    );

    assert_eq!(post("/_fake/latency?service=imds&ms=5").status, 200);
    assert_eq!(
        post("/_fake/identity?account=555555555555&region=eu-north-1").status,
        200
    );
    let token = imds_token(addr);
    let v = imds_get(addr, "/latest/dynamic/instance-identity/document", &token).json();
    assert_eq!(v["accountId"], "555555555555");

    // bad input
    assert_eq!(post("/_fake/fault?service=nope&fault=throttle").status, 400);
    assert_eq!(post("/_fake/fault?service=ecr&fault=nope").status, 400);
    assert_eq!(
        post("/_fake/fault?service=ecr&fault=stall-ms=x").status,
        400
    );
    assert_eq!(post("/_fake/fault?service=ecr").status, 400);
    assert_eq!(post("/_fake/lifetime?secs=-1").status, 400);
    assert_eq!(post("/_fake/nope").status, 404);
    assert_eq!(
        request(
            addr,
            "GET",
            "/_fake/fault?service=ecr&fault=throttle",
            &[],
            b""
        )
        .status,
        405
    );

    let v = request(addr, "GET", "/_fake/calls", &[], b"").json();
    assert_eq!(v["counts"]["ecr"], 6);
    assert_eq!(v["counts"]["ecr-public"], 2);
    assert_eq!(v["counts"]["sts"], 3);
    assert_eq!(v["counts"]["imds"], 2);
    assert_eq!(v["calls"].as_array().unwrap().len(), 13);
    assert_eq!(v["calls"][0]["fault"], "throttle");
    assert_eq!(v["calls"][0]["region"], "us-east-1");
    let v = request(addr, "GET", "/_fake/secrets", &[], b"").json();
    assert_eq!(v.as_array().unwrap().len(), aws.secrets().len());
    assert_eq!(post("/_fake/reset").status, 200);
    assert_eq!(aws.calls().len(), 0);
    assert_eq!(
        request(addr, "GET", "/_fake/counts", &[], b"").json()["total"],
        0
    );
}

#[test]
fn on_issue_hook_sees_every_password_before_the_client() {
    let aws = FakeAws::start().unwrap();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let s2 = Arc::clone(&seen);
    aws.on_issue(move |pw| s2.lock().unwrap().push(pw.to_string()));
    let v = ecr_get_token(aws.addr(), "us-east-1").json();
    let pw = decode_token(
        v["authorizationData"][0]["authorizationToken"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec![pw.trim_start_matches("AWS:").to_string()]
    );
    ecr_public_get_token(aws.addr());
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(*seen.lock().unwrap(), aws.issued_passwords());
}

#[test]
fn env_points_everything_at_the_fake() {
    let aws = FakeAws::start().unwrap();
    let env = aws.env();
    let get = |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{k} missing"))
    };
    let ep = format!("http://127.0.0.1:{}", aws.addr().port());
    assert_eq!(aws.endpoint(), ep);
    for k in [
        "AWS_ENDPOINT_URL_ECR",
        "AWS_ENDPOINT_URL_ECR_PUBLIC",
        "AWS_ENDPOINT_URL_STS",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    ] {
        assert_eq!(get(k), ep);
    }
    assert_eq!(get("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE"), "IPv4");
    assert_eq!(get("AWS_ACCESS_KEY_ID"), "FAKEACCESSKEY");
    assert!(get("AWS_CONFIG_FILE").starts_with("/nonexistent/"));
    assert!(get("AWS_SHARED_CREDENTIALS_FILE").starts_with("/nonexistent/"));
    assert!(env.iter().all(|(k, _)| k != "AWS_EC2_METADATA_DISABLED"));
}

#[test]
fn refuses_non_loopback() {
    let err = FakeAws::start_on("0.0.0.0:0".parse().unwrap()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn works_inside_an_async_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let aws = FakeAws::start().unwrap();
        let addr = aws.addr();
        let status = tokio::task::spawn_blocking(move || ecr_get_token(addr, "us-east-1").status)
            .await
            .unwrap();
        assert_eq!(status, 200);
        drop(aws); // must not panic inside a runtime
    });
}

#[test]
fn issued_key_ids_never_look_like_real_aws_keys() {
    let aws = FakeAws::start().unwrap();
    for _ in 0..3 {
        sts_assume_role(aws.addr(), "arn:aws:iam::1:role/r", "s", "e");
    }
    let token = imds_token(aws.addr());
    imds_get(
        aws.addr(),
        "/latest/meta-data/iam/security-credentials/fake-instance-role",
        &token,
    );
    for s in aws.secrets() {
        // the two real key-id prefixes, spelled so that no scanner sees them here
        for prefix in ["AK", "AS"].map(|p| format!("{p}IA")) {
            assert!(!s.contains(&prefix), "{s}");
        }
    }
}

#[test]
fn fault_names_round_trip() {
    let all = [
        Fault::None,
        Fault::Throttle,
        Fault::ServerError,
        Fault::Unavailable,
        Fault::AccessDenied,
        Fault::ExpiredToken,
        Fault::NotJson,
        Fault::MissingFields,
        Fault::NotBase64,
        Fault::NoAwsPrefix,
        Fault::NoExpiresAt,
        Fault::ExpiresAtOffset(-5),
        Fault::HugeBody(1024),
        Fault::Stall(Duration::from_millis(250)),
        Fault::DropConnection,
        Fault::Blackhole,
    ];
    for f in all {
        assert_eq!(f.to_string().parse::<Fault>(), Ok(f.clone()), "{f}");
    }
    assert!("throttle=3".parse::<Fault>().is_err());
    assert!("stall-ms".parse::<Fault>().is_err());
    assert!("stall-ms=-1".parse::<Fault>().is_err());
    for s in Service::ALL {
        assert_eq!(s.name().parse::<Service>(), Ok(s));
    }
}
