//! `-v` says every setting and where it came from: a flag, an env var, config.toml (file:key) or the default; a
//! token never, only where it comes from.

use crate::common::{stderr, stdout, TestContext};

#[test]
fn verbose_names_each_setting_s_origin_and_never_a_token() {
    let ctx = TestContext::new();
    std::fs::create_dir_all(&ctx.home).unwrap();
    let config = ctx.home.join("config.toml");
    std::fs::write(&config, "[engine]\nport = 9300\n").unwrap();
    let config = std::fs::canonicalize(&config).unwrap();
    // A port nobody listens on: the command fails to connect after saying its settings.
    let port = crate::client::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let secret = "tok-77a1-never-printed";
    let a = ctx
        .cmd(&[
            "-v",
            "sessions",
            "list",
            "--url",
            &url,
            "--protocol",
            "soft",
        ])
        .env("BREADBOARD_API_TOKEN", secret)
        .env("BREADBOARD_RESTART_BACKOFF_MS", "250")
        .assert()
        .failure();
    let err = stderr(&a);
    for line in [
        format!(
            "setting engine.port = 9300 (config {}:engine.port)",
            config.display()
        ),
        "setting supervisor.restart_backoff = 250ms (env BREADBOARD_RESTART_BACKOFF_MS)".to_owned(),
        format!("setting client.url = {url} (flag --url)"),
        "setting protocol.mode = soft (flag --protocol)".to_owned(),
        "setting client.token = (not shown) (env BREADBOARD_API_TOKEN)".to_owned(),
        "setting engine.restart = no (default)".to_owned(),
    ] {
        assert!(
            err.lines().any(|l| l == line),
            "no line {line:?} in:\n{err}"
        );
    }
    assert!(
        !err.contains(secret) && !stdout(&a).contains(secret),
        "{err}"
    );

    // Without -v, nothing of it.
    std::fs::remove_file(&config).unwrap();
    let a = ctx.cmd(&["engine", "list"]).assert().success();
    assert!(!stderr(&a).contains("setting "), "{}", stderr(&a));
    let a = ctx.cmd(&["engine", "list", "-v"]).assert().success();
    assert!(
        stderr(&a)
            .lines()
            .any(|l| l == "setting engine.port = 9099 (default)"),
        "{}",
        stderr(&a)
    );
}
