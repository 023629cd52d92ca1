use std::time::{Duration, Instant};

use crate::common::*;

#[test]
fn out_of_range_version_is_refused() {
    let ctx = TestContext::new();
    let assert = ctx.install(&["--version", "0.2.0"]).code(6);
    let err = stderr(&assert);
    assert!(
        err.contains(
            "engine 0.2.0 is outside the range this breadboard supports (>=0.1.0, <0.2.0)"
        ),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    assert!(ctx.version_dirs().is_empty());
}

#[test]
fn version_not_offered() {
    let ctx = TestContext::new();
    let assert = ctx.install(&["--version", "0.1.7"]).code(6);
    let err = stderr(&assert);
    assert!(
        err.contains("engine 0.1.7 is not offered by index"),
        "{err}"
    );
    assert!(err.contains("offered: 0.1.0, 0.1.1, 0.2.0"), "{err}");
}

#[test]
fn bad_version_syntax_is_a_usage_error() {
    let ctx = TestContext::new();
    ctx.install(&["--version", "latest"]).code(2);
}

#[test]
fn unreachable_index_fails_fast() {
    let ctx = TestContext::new();
    // A port nobody listens on: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/simple/");
    let start = Instant::now();
    let assert = ctx
        .cmd(&["engine", "install", "--index-url", &url])
        .assert()
        .code(6);
    assert!(start.elapsed() < Duration::from_secs(10));
    let err = stderr(&assert);
    assert!(
        err.contains(&format!("could not reach {url}breadboard-engine/")),
        "{err}"
    );
    assert!(
        err.contains("use --find-links DIR for an offline install"),
        "{err}"
    );
    assert!(
        !ctx.home.join("config.toml").exists(),
        "a failed install must not remember its source"
    );
}

#[test]
fn missing_python_is_a_clear_error() {
    let ctx = TestContext::new();
    let assert = ctx.install(&["--python", "/nonexistent/python3"]).code(5);
    let err = stderr(&assert);
    assert!(err.contains("the Python interpreter from --python (/nonexistent/python3) is not usable: no such file"), "{err}");
    assert!(err.contains("hint: install Python 3.10 or newer"), "{err}");

    // Discovery with nothing on PATH and no uv.
    let url = index_url();
    let mut cmd = ctx.cmd(&["engine", "install", "--index-url", &url]);
    cmd.env_remove("BREADBOARD_PYTHON")
        .env_remove("BREADBOARD_UV")
        .env("PATH", ctx.dir.path());
    let assert = cmd.assert().code(5);
    let err = stderr(&assert);
    assert!(err.contains("no Python >= 3.10 found"), "{err}");

    // Too old: a script that claims to be Python 3.8.
    let fake = ctx.dir.path().join("python3.8");
    std::fs::write(&fake, "#!/bin/sh\necho 3.8.18\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let assert = ctx.install(&["--python", fake.to_str().unwrap()]).code(5);
    assert!(
        stderr(&assert).contains("Python 3.8.18 is too old (need >= 3.10)"),
        "{}",
        stderr(&assert)
    );
    assert!(ctx.version_dirs().is_empty());
}

#[test]
fn corrupt_config_names_file_line_and_column() {
    let ctx = TestContext::new();
    std::fs::create_dir_all(&ctx.home).unwrap();
    let config = ctx.home.join("config.toml");
    std::fs::write(
        &config,
        "[engine]\nindex_url = \"http://x\"\nfind_links = [unclosed\n",
    )
    .unwrap();
    let assert = ctx.cmd(&["engine", "install"]).assert().code(3);
    let err = stderr(&assert);
    assert!(
        err.contains(&format!(
            "could not parse {} at line 3, column",
            config.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("hint: fix the file, or move it aside"),
        "{err}"
    );
}

#[test]
fn unknown_config_keys_warn_but_known_future_keys_do_not() {
    let ctx = TestContext::new();
    std::fs::create_dir_all(&ctx.home).unwrap();
    std::fs::write(
        ctx.home.join("config.toml"),
        "colour = 1\n[engine]\nrestart = \"on-failure\"\ncommand = [\"x\"]\nbogus = 2\n[protocol]\nmode = \"soft\"\n[ray]\naddress = \"auto\"\n",
    )
    .unwrap();
    // rollback reads the config and fails (nothing installed) without touching the network.
    let assert = ctx.cmd(&["engine", "rollback"]).assert().code(1);
    let err = stderr(&assert);
    assert!(err.contains("warning: unknown key `colour`"), "{err}");
    assert!(err.contains("warning: unknown key `engine.bogus`"), "{err}");
    assert!(
        !err.contains("restart")
            && !err.contains("`protocol.mode`")
            && !err.contains("ray.address"),
        "{err}"
    );
}

#[test]
fn version_flag_is_fast_and_offline() {
    let ctx = TestContext::new();
    let assert = ctx.cmd(&["--version"]).assert().success();
    assert_eq!(
        stdout(&assert),
        format!("breadboard {}\n", env!("CARGO_PKG_VERSION"))
    );
    assert!(
        !ctx.home.exists(),
        "--version must not touch BREADBOARD_HOME"
    );
}

#[test]
fn failed_install_shows_the_installer_output_and_leaves_nothing() {
    let ctx = TestContext::new();
    // A find-links dir with the engine but none of its dependencies: resolution fails.
    let links = ctx.dir.path().join("only-engine");
    std::fs::create_dir_all(&links).unwrap();
    let wheel = "breadboard_engine-0.1.1-py3-none-any.whl";
    std::fs::copy(wheelhouse().join(wheel), links.join(wheel)).unwrap();
    let assert = ctx
        .cmd(&["engine", "install", "--find-links", links.to_str().unwrap()])
        .assert()
        .code(1);
    let err = stderr(&assert);
    assert!(err.contains("could not install the engine"), "{err}");
    assert!(
        err.contains("fastapi"),
        "the installer's own explanation is shown: {err}"
    );
    assert!(err.contains("hint: full log: "), "{err}");
    assert_eq!(stdout(&assert), "");
    assert!(ctx.version_dirs().is_empty());
    assert_eq!(ctx.link("current"), None);
}

#[test]
fn colour_only_when_asked_and_never_with_no_color() {
    let ctx = TestContext::new();
    // Not a terminal and NO_COLOR set (the harness default): plain text.
    let plain = ctx.cmd(&["engine", "rollback"]).assert().code(1);
    assert!(!stderr(&plain).contains('\x1b'), "{}", stderr(&plain));
    assert!(stderr(&plain).starts_with("error: there is no previous engine version"));
    let mut cmd = ctx.cmd(&["--color", "always", "engine", "rollback"]);
    cmd.env_remove("NO_COLOR");
    let coloured = cmd.assert().code(1);
    assert!(
        stderr(&coloured).contains("\x1b[1;31merror:\x1b[0m"),
        "{}",
        stderr(&coloured)
    );
}

#[test]
fn color_never_reaches_usage_errors_in_a_terminal() {
    // `script` gives the binary a terminal, where clap would colour its usage errors.
    let run = |args: &str| {
        let out = std::process::Command::new("script")
            .args(["-qec", &format!("{BIN} {args}"), "/dev/null"])
            .env_remove("NO_COLOR")
            .env("TERM", "xterm")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = run("engine stat");
    assert!(coloured.contains("unrecognized subcommand"), "{coloured}");
    assert!(
        coloured.contains('\x1b'),
        "no colour even without --color: {coloured:?}"
    );
    for flag in ["--color never", "--color=never"] {
        let plain = run(&format!("{flag} engine stat"));
        assert!(plain.contains("unrecognized subcommand"), "{plain}");
        assert!(!plain.contains('\x1b'), "{flag}: {plain:?}");
    }
}
