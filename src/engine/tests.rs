use super::*;

#[test]
fn a_simple_command_is_execed_and_a_shell_snippet_runs_as_written() {
    assert_eq!(
        shell_argv("python3 serve.py --name 'a b'")[2],
        "exec python3 serve.py --name 'a b'"
    );
    assert_eq!(
        shell_argv("/opt/engine/.venv/bin/python -m x --port $PORT")[2],
        "exec /opt/engine/.venv/bin/python -m x --port $PORT"
    );
    for snippet in [
        "cd /srv/engine && python3 serve.py",
        "A=1 python3 serve.py",
        "python3 a.py; python3 b.py",
        "python3 serve.py 2>err.log",
        "source env.sh\npython3 serve.py",
        "export A=1",
        "eval python3 serve.py",
        "trap '' HUP; python3 serve.py",
        "command python3 serve.py",
        "read x",
        "exec python3 serve.py",
        "set -e",
        ". ./env.sh",
        "cd /srv",
        "'python3' serve.py",
        "$PY serve.py",
        "{ python3 serve.py; }",
    ] {
        assert_eq!(shell_argv(snippet)[2], snippet);
    }
}

#[test]
fn loopback_hosts() {
    for h in [
        "localhost",
        "LOCALHOST",
        "127.0.0.1",
        "127.1.2.3",
        "::1",
        "[::1]",
    ] {
        assert!(is_loopback(h), "{h}");
    }
    for h in [
        "0.0.0.0",
        "::",
        "[::]",
        "192.0.2.1",
        "example.com",
        "[::1",
        "::1]",
    ] {
        assert!(!is_loopback(h), "{h}");
    }
}

#[test]
fn host_check_is_a_usage_error() {
    assert!(check_host("[::1]", false).is_ok());
    assert!(check_host("0.0.0.0", true).is_ok());
    for (h, remote) in [("0.0.0.0", false), ("", true)] {
        let e = check_host(h, remote).unwrap_err();
        assert_eq!(crate::error::classify(&e).0, 2, "{h}: {e:#}");
    }
}

#[test]
fn localhost_binds_127_0_0_1_and_bind_errors_have_hints() {
    let l = bind("localhost", &PortSpec::Auto).unwrap();
    assert_eq!(l.local_addr().unwrap().ip().to_string(), "127.0.0.1");
    let l6 = bind("[::1]", &PortSpec::Auto);
    if let Ok(l6) = l6 {
        assert_eq!(l6.local_addr().unwrap().ip().to_string(), "::1");
    }
    // 192.0.2.1 (TEST-NET-1) is no address of this machine.
    let e = bind("192.0.2.1", &PortSpec::Auto).unwrap_err();
    let (code, hint) = crate::error::classify(&e);
    assert_eq!(code, 1);
    assert!(
        hint.is_some_and(|h| h.contains("is 192.0.2.1 an address of this machine?")),
        "{e:#} {hint:?}"
    );
}
