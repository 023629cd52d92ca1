use crate::common::*;

#[test]
fn upgrade_check_rollback_uninstall() {
    let ctx = TestContext::new();
    ctx.install(&["--version", "0.1.0"]).success();

    // --check: 100 when an upgrade is available, without changing anything.
    let check = ctx
        .cmd(&["engine", "upgrade", "--check"])
        .assert()
        .code(100);
    assert!(
        stdout(&check).contains("0.1.0 -> 0.1.1"),
        "{}",
        stdout(&check)
    );
    assert_eq!(ctx.link("current").as_deref(), Some("0.1.0"));

    // upgrade: the remembered index is used; 0.2.0 is out of range and ignored.
    let up = ctx.cmd(&["engine", "upgrade"]).assert().success();
    assert!(stdout(&up).contains("0.1.1"), "{}", stdout(&up));
    ctx.assert_current_complete("0.1.1");
    assert_eq!(ctx.link("previous").as_deref(), Some("0.1.0"));
    ctx.cmd(&["engine", "upgrade", "--check"]).assert().code(0);
    let again = ctx.cmd(&["engine", "upgrade"]).assert().success();
    assert!(stdout(&again).contains("up to date"), "{}", stdout(&again));

    // list shows both, marks current and previous.
    let list = ctx.cmd(&["engine", "versions"]).assert().success();
    let text = stdout(&list);
    assert!(text.contains("* 0.1.1 (current)"), "{text}");
    assert!(text.contains("  0.1.0 (previous)"), "{text}");
    let json = ctx.list_json();
    assert_eq!(json["current"], "0.1.1");
    assert_eq!(json["previous"], "0.1.0");
    assert_eq!(json["versions"].as_array().unwrap().len(), 2);

    // rollback swaps current and previous; twice is back where we were.
    let rb = ctx.cmd(&["engine", "rollback"]).assert().success();
    assert!(
        stdout(&rb).contains("from engine 0.1.1 to 0.1.0"),
        "{}",
        stdout(&rb)
    );
    ctx.assert_current_complete("0.1.0");
    assert_eq!(ctx.link("previous").as_deref(), Some("0.1.1"));
    ctx.cmd(&["engine", "rollback"]).assert().success();
    ctx.assert_current_complete("0.1.1");

    // uninstall --purge refuses without a terminal and without --yes, and changes nothing.
    std::fs::create_dir_all(ctx.home.join("data/sessions")).unwrap();
    let refused = ctx
        .cmd(&["engine", "uninstall", "--purge"])
        .assert()
        .code(2);
    assert!(stderr(&refused).contains("--yes"), "{}", stderr(&refused));
    assert_eq!(ctx.version_dirs().len(), 2);

    // plain uninstall keeps the data.
    let un = ctx.cmd(&["engine", "uninstall"]).assert().success();
    assert!(stdout(&un).contains("0.1.0, 0.1.1"), "{}", stdout(&un));
    assert!(ctx.version_dirs().is_empty());
    assert_eq!(ctx.link("current"), None);
    assert_eq!(ctx.link("previous"), None);
    assert!(ctx.home.join("data/sessions").is_dir());
    ctx.cmd(&["engine", "uninstall", "--purge", "--yes"])
        .assert()
        .success();
    assert!(!ctx.home.join("data").exists());

    // Nothing to roll back to or upgrade now: clear errors, exit 1.
    let none = ctx.cmd(&["engine", "rollback"]).assert().code(1);
    assert!(
        stderr(&none).contains("no previous engine version"),
        "{}",
        stderr(&none)
    );
    let none = ctx.cmd(&["engine", "upgrade"]).assert().code(1);
    assert!(
        stderr(&none).contains("hint: breadboard engine install"),
        "{}",
        stderr(&none)
    );
}

#[test]
fn list_when_nothing_is_installed() {
    let ctx = TestContext::new();
    let assert = ctx.cmd(&["engine", "list"]).assert().success();
    assert_eq!(stdout(&assert), "");
    assert!(stderr(&assert).contains("breadboard engine install"));
    let json = ctx.list_json();
    assert_eq!(json["versions"].as_array().unwrap().len(), 0);
    assert!(json["current"].is_null());
}

/// A PEP 691 JSON index is understood, and env vars override the source remembered in config.toml.
#[test]
fn upgrade_check_reads_a_pep691_json_index_from_env() {
    let ctx = TestContext::new();
    let wheels = wheelhouse();
    ctx.cmd(&[
        "engine",
        "install",
        "--version",
        "0.1.0",
        "--find-links",
        wheels.to_str().unwrap(),
    ])
    .assert()
    .success();

    let root = ctx.dir.path().join("json-index");
    let project = root.join("simple/breadboard-engine");
    std::fs::create_dir_all(&project).unwrap();
    let files: Vec<serde_json::Value> = ["0.1.0", "0.1.1", "0.2.0"]
        .iter()
        .map(|v| {
            serde_json::json!({
                "filename": format!("breadboard_engine-{v}-py3-none-any.whl"),
                "url": format!("../../files/breadboard_engine-{v}-py3-none-any.whl"),
                "hashes": {}
            })
        })
        .collect();
    let page = serde_json::json!({"meta": {"api-version": "1.0"}, "name": "breadboard-engine", "files": files});
    std::fs::write(project.join("index.html"), page.to_string()).unwrap();
    let url = format!("{}/simple/", serve(root, 0));

    let mut cmd = ctx.cmd(&["engine", "upgrade", "--check", "--json"]);
    cmd.env("BREADBOARD_INDEX_URL", &url);
    let out = cmd.assert().code(100);
    let doc: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(doc["current"], "0.1.0");
    assert_eq!(doc["latest"], "0.1.1");
    assert_eq!(doc["upgrade_available"], true);

    // Without the env var, the remembered find-links dir is the source.
    let out = ctx
        .cmd(&["engine", "upgrade", "--check"])
        .assert()
        .code(100);
    assert!(stdout(&out).contains("0.1.0 -> 0.1.1"), "{}", stdout(&out));
}
