//! `https://` engines: the real engine serves TLS itself (`serve --ssl-certfile/--ssl-keyfile`, binding its own
//! port) and the client verifies its certificate against the system's CA store plus `SSL_CERT_FILE`. The certificate
//! is for 127.0.0.1, signed by a test-only CA (generated once, valid for a century).

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::client::free_port;
use crate::common::*;

const TEST_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIDHTCCAgWgAwIBAgIUadURUcPOV1HjKgDB4wlFhHOBfpYwDQYJKoZIhvcNAQEL\nBQAwHTEbMBkGA1UEAwwSYnJlYWRib2FyZCB0ZXN0IENBMCAXDTI2MTIwMzE3MjEy\nNVoYDzIxMjYxMTA5MTcyMTI1WjAdMRswGQYDVQQDDBJicmVhZGJvYXJkIHRlc3Qg\nQ0EwggEiMA0GCSqGSIb3DQEBAQUAA4IBDwAwggEKAoIBAQCb0Rr0xrwYX0WG1Fal\nAfS8rPmfO59NoEGo6tvWCZ9nLyRVmWBDAUog5igQxMi5VBkt0Bgcfsr8GNtONDWa\nPbJWE0Es8AJGlJerqZqQBVdhbHfe6izTIp4LMc6Ni8+Ny6/33qOve1caH+nwzeoQ\ntP1Jw1/Zv3CbPsMKcJ9RlX5hce/uQ0RThBiYDjvavOEEGXtxrr+pONiIWGui1p09\nWOK31cDSpPf/SvtF629bhnofPRhbFQ2uhugoHraHpIm0xAzlcJ2ltkOPoOtqCrVR\n/519nGkVHcATjNwmi7yBj3c5sXNFRKsvk6WcGYHKBi0Rkze/189NRPbMeLINeDRG\nBJW3AgMBAAGjUzBRMB0GA1UdDgQWBBQQIoIOj2PULU4zLjcdt8VXUylcOTAfBgNV\nHSMEGDAWgBQQIoIOj2PULU4zLjcdt8VXUylcOTAPBgNVHRMBAf8EBTADAQH/MA0G\nCSqGSIb3DQEBCwUAA4IBAQANl0uXY9mrQ5lqA0l0UOTYhpHz9hi/uIQY/ZXIhhCm\nofxihAfn2QUcaeqlZqe8F2dCbeLAY26P8Ozy37oV22dd74v4ZJPca0/4+zYG7XTS\nKbu4NEle1RDKzvO9CY9Mz+82G1nnz5PZxDhRdOWEu/2wtvs4zzqVAXTw99gGh+9E\nuEBU+8C2TgaFVAQxqn48yJxPyqFeKO+RBoQMtvDDaUklZ0/1pjruIaYB6xi6rMOT\nw2MB5qpO3ZJRW1vFH+T9QnyynZe0eNVdHUuCZ1agEmemeTXCnMwAuOvXLyt1K7g+\ndr4+XZhs7ThyfYU8PJZML3woiCDpNJ2RevOG43OXYshF\n-----END CERTIFICATE-----\n";
const SERVER_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIDFDCCAfygAwIBAgIUJ1IxIBtp8RpPpm7GURMXhymKW4wwDQYJKoZIhvcNAQEL\nBQAwHTEbMBkGA1UEAwwSYnJlYWRib2FyZCB0ZXN0IENBMCAXDTI2MTIwMzE3MjEy\nNloYDzIxMjYxMTA5MTcyMTI2WjAUMRIwEAYDVQQDDAkxMjcuMC4wLjEwggEiMA0G\nCSqGSIb3DQEBAQUAA4IBDwAwggEKAoIBAQDwqn8D97BL8jMTGEg3oIvYCKLrCc+O\ns3wEAMLAO87o/dKl1HzaG3knkOn316244B2OGRMcuE4jOay0N8avPaNzfcCyXnbO\ng2cZGgLEpezHj8sU4r+8++7FrZZF7d7QGWqqMY9IKNBswElu9Dh7lU9gno8u5cIu\nU0QqXQ6yNYqg290oIbtpUwnm2f9CpOWQ+aVUmgNr1A+n7kwHYGTsNIRyYvnIVFoX\nUoirsOcEa6lyKUcOALOW8vEumv9ur81zSpHSygdN4MRXJN5NhRG33/h3X0sv+LWs\nKPB/ocQqyKbrwKRqq2pwErrkuN6YVvbdFFYzVZB29DWC1fviYbaAjD2pAgMBAAGj\nUzBRMA8GA1UdEQQIMAaHBH8AAAEwHQYDVR0OBBYEFFvq/J+oMNIta/KkWBMXmzDm\nroAVMB8GA1UdIwQYMBaAFBAigg6PY9QtTjMuNx23xVdTKVw5MA0GCSqGSIb3DQEB\nCwUAA4IBAQCDonpUPxB6g7EqB/0mNRMeqZMNXmKNQpz6jPGA68/+Xyh67HIB0Oje\nvpglvqDgT7E23R04/r7JaplnN7pb878x/2fsdc3LzW3QWx55T5yA9tjBdvK30pQL\n6bSijFAhj/Mky0TtZCR/EErD8FJIvl6ZK1GIikzOoT0FrECnzVLg4Y6Yc4v6+Hib\nu/0kud9XUVhf2HLkO/T2D/0uxl3KX1fbeEQOO/efgRkCUhLDfEdXIIfTI60niUez\nGHtm5PV1gfdOERuZOXhZlnVbzPkmt4YLUbm7swRLat4ApEzLGBKTRf1wren9lMws\nl4ImqjTozKYa0sXJKsx2lD3ZrB0w2WjZ\n-----END CERTIFICATE-----\n";
const SERVER_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDwqn8D97BL8jMT\nGEg3oIvYCKLrCc+Os3wEAMLAO87o/dKl1HzaG3knkOn316244B2OGRMcuE4jOay0\nN8avPaNzfcCyXnbOg2cZGgLEpezHj8sU4r+8++7FrZZF7d7QGWqqMY9IKNBswElu\n9Dh7lU9gno8u5cIuU0QqXQ6yNYqg290oIbtpUwnm2f9CpOWQ+aVUmgNr1A+n7kwH\nYGTsNIRyYvnIVFoXUoirsOcEa6lyKUcOALOW8vEumv9ur81zSpHSygdN4MRXJN5N\nhRG33/h3X0sv+LWsKPB/ocQqyKbrwKRqq2pwErrkuN6YVvbdFFYzVZB29DWC1fvi\nYbaAjD2pAgMBAAECggEAYpJKjLr1y91rGu6Ooa4RqQ28gM0XZIjSCievnKHCeP6B\nOSejbYfkIxcBJWCCyF6O7GULxW8dneLhAD16FMuHt2Vxt/zl52a9ovPa32VgakpU\ncP0AcGy1muSi0IiBgrVuUUAUQgdpeql1SksgGUoJ5XZ8CcbUNjoniLxtqQMyAPjR\nM2QE83jn68u5KelU6zG3v0GwgpQVs0Z5waEkzMh4Ar5qo90XR6M4HaZA3s1nHmQa\nNdXGamLFBX3N09AcMtY/AH04mvSIpoBxF2ahE/Z8CBdJJv454gw3NHFSibBpL08Z\nVG2DYpO4eiKSTjA2AcEd3mDKCy14gh5HwenstDywawKBgQD4VUNNqxJhMMt92NR3\n8bk2gysNz2SR1fwV95ZqX759AxaIYOdk1G+mnFhRSDah4qSvjY0pr+4fVNEkFJ7f\n/SUaXOyNKgKmqooNNKVgXNkOv+0nqFhgGrJQAoXa/+EkaFPJerdp6AUjxye3oItk\n9dVjMpFNxkJQayeucjzeKo+FKwKBgQD4GKKxySoV8BQ/S8buTSU26qLIFA3KZlKo\n4zVsrN2YM4ydVEv2iX1R5LYsI8SgN+mkLpSBj4h5yFPk3S2esLH6fkxwxxqDccdp\nVICkLxbDgWLvLsPxN1FQuAFV+L6PA7JbCiJOejknwvMbxg8ZsqXEh1fmiv1iV7Nl\ngMx7icjGewKBgEpVM0UvXNwMwAyWd9rDVz5S+vMyThc9JyzoJHUI3bsLzpXZ88mB\nsT389I63/+prLgKCa2u8BpoISGX1aiz/2DhQ8lm65no+9/3F8W6rvCknF/TT9kgm\nFZPPfYO1Lg440EOx4O7pjYhNF71mZ/M7hrkfrNDL9JOfz4vvE/soYDdrAoGAWGDe\nRBr3JQ17CPlDikxs/10iU8fhCcLdm1AlDeuenMNwSfNnhBGCVRP2WU78kl6YmmYF\nfQnWght810B7Kdaj8CnhrSMgLMbxVHJHyTUFFOwYhD/SiTE9hFWoFCoiJ+wXMxsv\nEWm0xpdJ5xDs/CiJqLLV+0hz7v5y56u0LCXvIdUCgYEA57p8Ra52ldymWwQVehvm\noFi0WR2Th4FpVxJRwIRoijq8o37tOA5snBjfdTkAQUhRjn0pHY45nEsygto4atN3\n1vc2+GULgw4cYXaWZtcxCS+zSoPvzFqXlt7xRcoRecW25uLmptMEiVMBjiQWKZdZ\n6rayOqVk1s+ilip+DXLWKxs=\n-----END PRIVATE KEY-----\n";

/// The engine from the dev env (installed editable from this tree), stopped when dropped.
struct TlsEngine(Child);

impl Drop for TlsEngine {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn https_engine_is_verified_with_ssl_cert_file() {
    let ctx = TestContext::new();
    let dir = ctx.dir.path();
    for (name, text) in [
        ("ca.pem", TEST_CA),
        ("srv.pem", SERVER_CERT),
        ("srv.key", SERVER_KEY),
        ("token", "tls-test-token"),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    for private in ["srv.key", "token"] {
        std::fs::set_permissions(dir.join(private), std::fs::Permissions::from_mode(0o600))
            .unwrap();
    }
    fixtures(); // builds .venv-dev
    let port = free_port();
    let mut engine = TlsEngine(
        Command::new(repo_root().join(".venv-dev/bin/python"))
            .args(["-m", "breadboard_engine", "serve", "--host", "127.0.0.1"])
            .args(["--port", &port.to_string(), "--ray", "off"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--ssl-certfile")
            .arg(dir.join("srv.pem"))
            .arg("--ssl-keyfile")
            .arg(dir.join("srv.key"))
            .env("BREADBOARD_API_TOKEN_FILE", dir.join("token"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the TLS engine", Duration::from_secs(60), || {
        assert!(engine.0.try_wait().unwrap().is_none(), "the engine exited");
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let url = format!("https://127.0.0.1:{port}");
    let args = ["ask", "--url", &url, "over tls"];
    let client = |ca: Option<&str>| {
        let mut cmd = ctx.cmd(&args);
        cmd.env("BREADBOARD_API_TOKEN_FILE", dir.join("token"))
            .env_remove("SSL_CERT_DIR");
        match ca {
            Some(name) => cmd.env("SSL_CERT_FILE", dir.join(name)),
            None => cmd.env_remove("SSL_CERT_FILE"),
        };
        cmd.output().unwrap()
    };
    // Not trusted without the CA: exit 21, and the hint names SSL_CERT_FILE.
    let out = client(None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(21), "{err}");
    assert!(
        err.contains("certificate") && err.contains("SSL_CERT_FILE"),
        "{err}"
    );
    let out = client(Some("ca.pem"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over tls\n");
}

/// `engine start --ssl-certfile/--ssl-keyfile`: the supervised engine serves HTTPS, and every command here (the
/// start handshake, status, ask, restart, stop) trusts it by its own certificate, with no CA configured; a remote
/// client reaches the same engine through its CA (`SSL_CERT_FILE`).
#[test]
fn a_supervised_engine_serves_tls_and_the_cli_trusts_its_certificate() {
    let mut e = crate::supervisor::Engine::new();
    let dir = e.ctx.dir.path().to_owned();
    for (name, text) in [
        ("ca.pem", TEST_CA),
        ("srv.pem", SERVER_CERT),
        ("srv.key", SERVER_KEY),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    std::fs::set_permissions(dir.join("srv.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(dir.join("not.pem"), "not a certificate\n").unwrap();
    e.env.push((
        "SSL_CERT_DIR".into(),
        dir.join("no-such-dir").display().to_string(),
    ));
    // A proxy in the environment (a dead one) is never used for an engine on loopback, over HTTPS either.
    for var in ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
        e.env.push((var.into(), "http://127.0.0.1:1".into()));
    }
    let run = |e: &crate::supervisor::Engine, args: &[&str]| {
        let mut cmd = e.cmd(args);
        cmd.env_remove("SSL_CERT_FILE");
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (cert, key, bad) = (
        dir.join("srv.pem"),
        dir.join("srv.key"),
        dir.join("not.pem"),
    );
    let (cert, key, bad) = (
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        bad.to_str().unwrap(),
    );

    // Half a pair, or a file that is no certificate: usage errors naming the fix, and nothing started.
    let (code, _, err) = run(
        &e,
        &["engine", "start", "--port", "auto", "--ssl-certfile", cert],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("needs both the certificate and its private key"),
        "{err}"
    );
    let (code, _, err) = run(
        &e,
        &[
            "engine",
            "start",
            "--ssl-certfile",
            bad,
            "--ssl-keyfile",
            key,
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("holds no PEM certificate") && err.contains("not.pem"),
        "{err}"
    );
    assert!(e.registration().is_none());

    let (code, out, err) = run(
        &e,
        &[
            "engine",
            "start",
            "--port",
            "auto",
            "--json",
            "--ssl-certfile",
            cert,
            "--ssl-keyfile",
            key,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let started: serde_json::Value = serde_json::from_str(&out).unwrap();
    let url = started["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let (code, out, err) = run(&e, &["engine", "status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["url"], url.as_str(), "{status}");

    let (code, out, err) = run(&e, &["ask", "--no-start", "over tls, locally"]);
    assert_eq!((code, out.as_str()), (0, "over tls, locally\n"), "{err}");

    // The realtime bus (a WebSocket over the same TLS) trusts the same certificate.
    let (mut watch, lines, watch_err) =
        crate::client::spawn_collected(&e, &["sessions", "list", "--watch"]);
    wait_for(
        "the sessions snapshot over wss",
        Duration::from_secs(30),
        || {
            lines.lines.lock().unwrap().iter().any(|l| {
                serde_json::from_str::<serde_json::Value>(l).is_ok_and(|m| m["type"] == "snapshot")
            })
        },
    );
    let _ = watch.kill();
    let _ = watch.wait();
    let watch_err = watch_err.lines.lock().unwrap().join("\n");
    assert!(!watch_err.contains("certificate"), "{watch_err}");

    // A remote client knows nothing of the local pin: it verifies the engine through the CA.
    let token_file = e.ctx.home.join("run/engine.token");
    let remote = |ca: Option<&std::path::Path>| {
        let mut cmd = e.cmd(&["ask", "--url", &url, "over tls, remotely"]);
        cmd.env("BREADBOARD_API_TOKEN_FILE", &token_file);
        match ca {
            Some(ca) => cmd.env("SSL_CERT_FILE", ca),
            None => cmd.env_remove("SSL_CERT_FILE"),
        };
        cmd.output().unwrap()
    };
    let out = remote(Some(&dir.join("ca.pem")));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over tls, remotely\n");
    assert_eq!(remote(None).status.code(), Some(21));

    // A restart keeps serving TLS (the flags are not repeated); stop ends it over TLS, leaving nothing behind.
    let (code, _, err) = run(&e, &["engine", "restart", "--json"]);
    assert_eq!(code, 0, "{err}");
    let reg = e.registration().unwrap();
    assert!(
        reg["url"].as_str().unwrap().starts_with("https://"),
        "{reg}"
    );
    let sid = reg["sid"].as_i64().unwrap();
    let (code, _, err) = run(&e, &["engine", "stop"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !err.contains("SIGTERM") && !err.contains("killing"),
        "stop could not ask the engine over TLS: {err}"
    );
    wait_for(
        "the engine's processes to end",
        Duration::from_secs(10),
        || crate::supervisor::session(sid).is_empty(),
    );
}
