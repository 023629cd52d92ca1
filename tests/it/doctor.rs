//! `breadboard engine doctor`: each check broken on purpose in a temp BREADBOARD_HOME; the JSON status, the exit
//! code, and that the printed fix command really fixes it.

use std::path::Path;
use std::process::Command;

use crate::common::*;

fn doctor(ctx: &TestContext, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["engine", "doctor", "--json"];
    args.extend_from_slice(extra);
    let out = ctx.cmd(&args).output().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().unwrap(), doc)
}

fn has_check(doc: &serde_json::Value, id: &str) -> bool {
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["id"] == id)
}

fn check<'a>(doc: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {doc}"))
}

/// Runs a printed fix command (`breadboard ...` with this test's environment; anything else through sh).
fn run_fix(ctx: &TestContext, fix: &str) {
    let command = fix.split("   #").next().unwrap().trim();
    let status = if let Some(rest) = command.strip_prefix("breadboard ") {
        let args: Vec<&str> = rest.split_whitespace().collect();
        ctx.cmd(&args).output().unwrap().status
    } else {
        Command::new("sh").args(["-c", command]).status().unwrap()
    };
    assert!(status.success(), "fix `{command}` failed");
}

#[test]
fn healthy_install_passes_and_json_is_the_only_stdout() {
    let ctx = TestContext::new();
    ctx.install(&["--version", "0.1.0"]).success();
    let (code, doc) = doctor(&ctx, &[]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["summary"]["errors"], 0);
    for id in [
        "cli.version",
        "home.dirs",
        "config.parse",
        "venv.current",
        "python.interpreter",
        "venv.engine_version",
        "venv.pip_check",
        "ray.import",
        "engine.registration",
        "engine.port",
    ] {
        let status = check(&doc, id)["status"].as_str().unwrap();
        assert!(
            status == "ok" || id == "engine.port",
            "{id}: {:#}",
            check(&doc, id)
        );
    }
    for c in doc["checks"].as_array().unwrap() {
        assert!(c["title"].is_string() && c["detail"].is_string());
        assert!(["ok", "warn", "error"].contains(&c["status"].as_str().unwrap()));
    }
    // Human output goes to stderr, with a summary.
    let out = ctx.cmd(&["engine", "doctor"]).output().unwrap();
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("[✓] engine 0.1.0 is installed"));
}

#[test]
fn nothing_installed_is_an_error_whose_fix_works() {
    let ctx = TestContext::new();
    let (code, doc) = doctor(&ctx, &[]);
    assert_eq!(code, 1);
    let venv = check(&doc, "venv.current");
    assert_eq!(venv["status"], "error");
    assert_eq!(venv["fix"], "breadboard engine install");
    ctx.install(&["--version", "0.1.0"]).success(); // the fix, with the test's index
    let (code, doc) = doctor(&ctx, &[]);
    assert_eq!(code, 0, "{doc:#}");
}

#[test]
fn corrupt_config_is_a_finding_not_a_crash() {
    let ctx = TestContext::new();
    std::fs::create_dir_all(&ctx.home).unwrap();
    std::fs::write(
        ctx.home.join("config.toml"),
        "[engine]\nindex_url = \"x\"\n[python\n",
    )
    .unwrap();
    let (code, doc) = doctor(&ctx, &[]);
    assert_eq!(code, 1);
    let config = check(&doc, "config.parse");
    assert_eq!(config["status"], "error");
    assert!(
        config["detail"].as_str().unwrap().contains("line 3"),
        "{config}"
    );
    run_fix(
        &ctx,
        config["fix"].as_str().unwrap().split(": ").nth(1).unwrap(),
    );
    assert_eq!(check(&doctor(&ctx, &[]).1, "config.parse")["status"], "ok");

    std::fs::write(ctx.home.join("config.toml"), "[engine]\nmystery = 1\n").unwrap();
    let (_, doc) = doctor(&ctx, &[]);
    assert_eq!(check(&doc, "config.parse")["status"], "warn");
    assert!(check(&doc, "config.parse")["detail"]
        .as_str()
        .unwrap()
        .contains("engine.mystery"));

    // Values the commands refuse: the same messages `start` and `install` would give, before either is run.
    std::fs::write(
        ctx.home.join("config.toml"),
        "[engine]\nrestart = \"always\"\ninstaller = \"conda\"\n[protocol]\nmode = \"loose\"\n",
    )
    .unwrap();
    let (code, doc) = doctor(&ctx, &[]);
    let finding = check(&doc, "config.parse");
    assert_eq!(
        (code, finding["status"].as_str()),
        (1, Some("error")),
        "{doc:#}"
    );
    let detail = finding["detail"].as_str().unwrap();
    for key in ["engine.restart", "conda", "protocol.mode"] {
        assert!(detail.contains(key), "{key} missing: {detail}");
    }
    // The fix is the commands' own hints, one per value.
    let fix = finding["fix"].as_str().unwrap();
    assert!(
        fix.contains("set [engine] restart = \"no\" or \"on-failure\"")
            && fix.contains("[engine] installer"),
        "{fix}"
    );
    let a = ctx.cmd(&["engine", "start"]).assert().code(3);
    assert!(
        detail.contains(
            stderr(&a)
                .lines()
                .next()
                .unwrap()
                .trim_start_matches("error: ")
        ),
        "start said {} but doctor {detail}",
        stderr(&a)
    );
    // An environment variable wins over the file, so doctor judges what is in effect.
    let out = ctx
        .command()
        .args(["engine", "doctor", "--json"])
        .env("BREADBOARD_PROTOCOL_STRICT", "maybe")
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let with_env = check(&doc, "config.parse")["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        with_env.contains("BREADBOARD_PROTOCOL_STRICT"),
        "{with_env}"
    );
}

#[test]
fn removed_base_interpreter_is_found_and_the_fix_rebuilds() {
    let ctx = TestContext::new();
    let bin = ctx.dir.path().join("pybin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("python3");
    std::os::unix::fs::symlink(python311(), &link).unwrap();
    ctx.install(&["--version", "0.1.0", "--python", link.to_str().unwrap()])
        .success();
    assert_eq!(doctor(&ctx, &[]).0, 0);

    std::fs::remove_file(&link).unwrap();
    let (code, doc) = doctor(&ctx, &[]);
    assert_eq!(code, 1);
    let venv = check(&doc, "venv.current");
    assert_eq!(venv["status"], "error");
    assert!(
        venv["detail"]
            .as_str()
            .unwrap()
            .contains("underlying Python interpreter removed"),
        "{venv}"
    );
    let fix = venv["fix"].as_str().unwrap();
    assert_eq!(fix, "breadboard engine install --force --version 0.1.0");
    // With another interpreter (the old one is gone) the printed fix rebuilds it.
    run_fix(
        &ctx,
        &format!(
            "{fix} --python {} --index-url {}",
            python311().display(),
            index_url()
        ),
    );
    assert_eq!(doctor(&ctx, &[]).0, 0);
}

#[test]
fn corrupt_receipt_is_found_and_fix_rebuilds_it() {
    let ctx = TestContext::new();
    ctx.install(&["--version", "0.1.0"]).success();
    std::fs::write(
        ctx.engine_dir().join("versions/0.1.0/receipt.json"),
        "{ not json",
    )
    .unwrap();
    let (code, doc) = doctor(&ctx, &[]);
    assert_eq!(code, 1);
    assert!(check(&doc, "venv.current")["title"]
        .as_str()
        .unwrap()
        .contains("receipt is corrupt"));
    run_fix(
        &ctx,
        &format!(
            "{} --index-url {}",
            check(&doc, "venv.current")["fix"].as_str().unwrap(),
            index_url()
        ),
    );
    assert_eq!(doctor(&ctx, &[]).0, 0);
}

#[test]
fn leftovers_and_run_dir_mode_are_repaired_by_fix() {
    let ctx = TestContext::new();
    ctx.install(&["--version", "0.1.0"]).success();
    std::fs::create_dir_all(ctx.engine_dir().join("versions/0.1.1/bin")).unwrap(); // an interrupted install
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(ctx.home.join("run"), std::fs::Permissions::from_mode(0o755)).unwrap();

    let (code, doc) = doctor(&ctx, &[]);
    assert_eq!(code, 1, "an open run directory is an error: {doc:#}");
    assert_eq!(check(&doc, "venv.leftovers")["status"], "warn");
    assert_eq!(check(&doc, "home.run_dir")["status"], "error");
    // Without --fix nothing changed.
    assert!(ctx.engine_dir().join("versions/0.1.1").exists());

    let (code, doc) = doctor(&ctx, &["--fix"]);
    assert_eq!(code, 0);
    assert_eq!(doc["repairs"].as_array().unwrap().len(), 2, "{doc:#}");
    assert!(!ctx.engine_dir().join("versions/0.1.1").exists());
    let mode = std::fs::metadata(ctx.home.join("run"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    assert_eq!(
        doctor(&ctx, &["--strict"]).0,
        0,
        "{:#}",
        doctor(&ctx, &[]).1
    );
}

#[test]
fn stale_registration_naming_a_live_unrelated_process() {
    let ctx = TestContext::new();
    ctx.install(&["--version", "0.1.0"]).success();
    let mut unrelated = Command::new("sleep").arg("300").spawn().unwrap();
    let pid = unrelated.id() as i32;
    let reg = serde_json::json!({
        "schema": 1, "instance_id": "gone", "supervisor_pid": pid, "supervisor_start_ticks": 1, "sid": pid,
        "pid": pid, "pid_start_ticks": 1, "pgid": pid, "boot_id": "x", "uid": 0, "host": "127.0.0.1", "port": 1,
        "url": "http://127.0.0.1:1", "token_file": ctx.home.join("run/engine.token"), "engine_version": "0.1.0",
        "protocol_version": "1.0", "venv": null, "command": [], "log_path": ctx.home.join("logs/engine.log"),
        "ray_address": null, "ray_start": null, "foreground": false, "cli_version": "0", "started_at": "t",
        "started_at_unix": 0.0, "ready_at": null, "stop_requested_at": "t"
    });
    let path = ctx.home.join("run/engine.json");
    std::fs::write(&path, serde_json::to_vec(&reg).unwrap()).unwrap();
    let (_, doc) = doctor(&ctx, &[]);
    assert_eq!(
        check(&doc, "engine.registration")["status"],
        "warn",
        "{doc:#}"
    );
    assert!(!has_check(&doc, "engine.leftovers"), "{doc:#}");
    let (_, doc) = doctor(&ctx, &["--fix"]);
    assert!(!path.exists(), "{doc:#}");
    assert_eq!(
        unrelated.try_wait().unwrap(),
        None,
        "the unrelated process was signalled"
    );
    unrelated.kill().unwrap();
    let _ = unrelated.wait();
}

fn engine_doctor(engine: &crate::supervisor::Engine, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["engine", "doctor", "--json"];
    args.extend_from_slice(extra);
    let out = engine.cmd(&args).output().unwrap();
    (
        out.status.code().unwrap(),
        serde_json::from_slice(&out.stdout).unwrap(),
    )
}

#[test]
fn running_engine_token_mode_and_a_killed_engine() {
    let engine = crate::supervisor::Engine::new();
    engine.start();
    let (code, doc) = engine_doctor(&engine, &[]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(check(&doc, "engine.health")["status"], "ok");
    assert_eq!(
        check(&doc, "ray.engine")["status"],
        "ok",
        "the running engine reports its Ray"
    );
    assert!(!has_check(&doc, "ray.import"), "Ray imported twice");

    // A token readable by others is an error; the printed fix makes it private again.
    let token = engine.ctx.home.join("run/engine.token");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, doc) = engine_doctor(&engine, &[]);
    assert_eq!(code, 1);
    let finding = check(&doc, "run.token_mode");
    assert_eq!(finding["status"], "error");
    run_fix(&engine.ctx, finding["fix"].as_str().unwrap());
    assert_eq!(engine_doctor(&engine, &[]).0, 0);

    // Kill the engine and its supervisor outright: doctor reports the crash and what is left, and its fix works.
    let reg = engine.registration().unwrap();
    for key in ["supervisor_pid", "pid"] {
        let _ = Command::new("kill")
            .args(["-9", &reg[key].to_string()])
            .status();
    }
    wait_for(
        "the supervisor to die",
        std::time::Duration::from_secs(10),
        || !Path::new(&format!("/proc/{}", reg["supervisor_pid"])).exists(),
    );
    let (_, doc) = engine_doctor(&engine, &[]);
    assert_eq!(
        check(&doc, "engine.registration")["status"],
        "warn",
        "{doc:#}"
    );
    let crash = check(&doc, "engine.crash");
    assert_eq!(crash["status"], "warn");
    assert!(
        crash["detail"]
            .as_str()
            .unwrap()
            .contains("supervisor was killed"),
        "{crash}"
    );
    run_fix(&engine.ctx, "breadboard engine stop");
    let (code, doc) = engine_doctor(&engine, &[]);
    assert_eq!(
        check(&doc, "engine.registration")["status"],
        "ok",
        "{doc:#}"
    );
    assert!(!has_check(&doc, "engine.leftovers"), "{doc:#}");
    assert_eq!(code, 0, "{doc:#}");
}

#[test]
fn unknown_config_key_is_a_warning_and_strict_makes_it_count() {
    let ctx = TestContext::new();
    ctx.install(&["--version", "0.1.1"]).success();
    let config = ctx.home.join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap_or_default();
    text.push_str("\n[enigne]\nrestart = \"on-failure\"\n"); // a typo of [engine]: silently ignored otherwise
    std::fs::write(&config, text).unwrap();
    let (code, doc) = doctor(&ctx, &[]);
    let finding = check(&doc, "config.parse");
    assert_eq!(finding["status"], "warn", "{doc:#}");
    assert!(
        finding["detail"].as_str().unwrap().contains("enigne"),
        "the detail names the key: {finding}"
    );
    assert_eq!(code, 0, "warnings alone do not fail: {doc:#}");
    assert_eq!(doctor(&ctx, &["--strict"]).0, 1, "--strict counts warnings");
}

#[test]
fn unreachable_ray_cluster_is_an_error_and_doctor_does_not_hang() {
    let ctx = TestContext::new();
    ctx.install(&["--version", "0.1.1"]).success();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed); // nothing listens there now: connections are refused
    let config = ctx.home.join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap_or_default();
    text.push_str(&format!("\n[ray]\naddress = \"127.0.0.1:{port}\"\n"));
    std::fs::write(&config, text).unwrap();
    let t0 = std::time::Instant::now();
    let (code, doc) = doctor(&ctx, &[]);
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(30),
        "doctor took {:?}",
        t0.elapsed()
    );
    assert_eq!(code, 1);
    let finding = check(&doc, "ray.cluster");
    assert_eq!(finding["status"], "error", "{doc:#}");
    assert!(finding["detail"]
        .as_str()
        .unwrap()
        .contains(&port.to_string()));
    assert!(finding["fix"].as_str().unwrap().contains("ray.address"));
}

#[test]
fn broken_dependency_fails_pip_check_and_the_fix_rebuilds() {
    let ctx = TestContext::new();
    ctx.install(&["--version", "0.1.1"]).success();
    // Remove one dependency of the engine from the venv, as a stray `pip uninstall` would.
    let site = std::fs::read_dir(ctx.engine_dir().join("versions/0.1.1/lib"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("site-packages");
    let mut removed = 0;
    for entry in std::fs::read_dir(&site).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "h11" || (name.starts_with("h11-") && name.ends_with(".dist-info")) {
            std::fs::remove_dir_all(entry.path()).unwrap();
            removed += 1;
        }
    }
    assert_eq!(removed, 2, "h11 and its dist-info in {}", site.display());
    let (code, doc) = doctor(&ctx, &[]);
    assert_eq!(code, 1, "{doc:#}");
    let finding = check(&doc, "venv.pip_check");
    assert_eq!(finding["status"], "error", "{doc:#}");
    assert!(
        finding["detail"].as_str().unwrap().contains("h11"),
        "{finding}"
    );
    run_fix(&ctx, finding["fix"].as_str().unwrap());
    let (code, doc) = doctor(&ctx, &[]);
    assert_eq!(check(&doc, "venv.pip_check")["status"], "ok", "{doc:#}");
    assert_eq!(code, 0, "{doc:#}");

    // A package deleted with its metadata left behind: `pip check` passes, the engine would not import.
    std::fs::rename(site.join("fastapi"), site.join("fastapi.aside")).unwrap();
    let (code, doc) = doctor(&ctx, &[]);
    let finding = check(&doc, "venv.pip_check");
    assert_eq!(
        (code, finding["status"].as_str()),
        (1, Some("error")),
        "{doc:#}"
    );
    assert!(
        finding["title"].as_str().unwrap().ends_with(": fastapi"),
        "{finding}"
    );
    run_fix(&ctx, finding["fix"].as_str().unwrap());
    let (code, doc) = doctor(&ctx, &[]);
    assert_eq!(check(&doc, "venv.pip_check")["status"], "ok", "{doc:#}");
    assert_eq!(code, 0, "{doc:#}");
}

#[test]
fn hung_engine_and_a_pin_the_running_engine_does_not_match() {
    let engine = crate::supervisor::Engine::new();
    engine.start();
    let reg = engine.registration().unwrap();
    let pid = reg["pid"].to_string();

    // An engine that stopped answering (SIGSTOP): doctor reports it within its own timeouts instead of hanging.
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let t0 = std::time::Instant::now();
    let (code, doc) = engine_doctor(&engine, &[]);
    let took = t0.elapsed();
    assert!(Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    assert!(
        took < std::time::Duration::from_secs(20),
        "doctor took {took:?}"
    );
    assert_eq!(code, 1, "{doc:#}");
    let health = check(&doc, "engine.health");
    assert_eq!(health["status"], "error", "{doc:#}");
    assert_eq!(health["fix"], "breadboard engine restart");

    // Pin another version while 0.1.1 runs: doctor says a restart applies it, and the restart does.
    engine
        .cmd(&["engine", "install", "--version", "0.1.0"])
        .assert()
        .success();
    let (code, doc) = engine_doctor(&engine, &[]);
    let health = check(&doc, "engine.health");
    assert_eq!(health["status"], "warn", "{doc:#}");
    assert!(
        health["detail"].as_str().unwrap().contains("0.1.0"),
        "{health}"
    );
    assert!(
        health["fix"]
            .as_str()
            .unwrap()
            .contains("to apply the upgrade"),
        "{health}"
    );
    assert_eq!(code, 0, "a warning: {doc:#}");
    let fix = health["fix"]
        .as_str()
        .unwrap()
        .split("   #")
        .next()
        .unwrap()
        .trim();
    let args: Vec<&str> = fix
        .strip_prefix("breadboard ")
        .unwrap()
        .split_whitespace()
        .collect();
    engine.cmd(&args).assert().success();
    let (code, doc) = engine_doctor(&engine, &[]);
    assert_eq!(check(&doc, "engine.health")["status"], "ok", "{doc:#}");
    assert_eq!(code, 0, "{doc:#}");
}

#[test]
fn cli_version_names_how_this_copy_was_installed() {
    let ctx = TestContext::new();
    std::fs::create_dir_all(&ctx.home).unwrap();
    let detail = |doc: &serde_json::Value| {
        check(doc, "cli.version")["detail"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (_, doc) = doctor(&ctx, &[]);
    assert!(
        detail(&doc).contains("installed by hand or by cargo"),
        "{doc:#}"
    );

    // install.sh's receipt names another file: this copy is a second one that `breadboard upgrade` will not touch.
    let other = ctx.home.join("bin/breadboard");
    std::fs::create_dir_all(other.parent().unwrap()).unwrap();
    std::fs::write(&other, "#!/bin/sh\n").unwrap();
    let receipt = serde_json::json!({
        "schema": 1, "method": "install.sh", "version": "0.1.0", "binary_path": other,
    });
    std::fs::write(ctx.home.join("install-receipt.json"), receipt.to_string()).unwrap();
    let (_, doc) = doctor(&ctx, &[]);
    let finding = check(&doc, "cli.version");
    assert_eq!(finding["status"], "warn", "{doc:#}");
    assert!(detail(&doc).contains(other.to_str().unwrap()), "{finding}");
    assert_eq!(doctor(&ctx, &["--strict"]).0, 1);

    // Run by the npm launcher: the package manager's command.
    let out = ctx
        .cmd(&["engine", "doctor", "--json"])
        .env("BREADBOARD_MANAGED_BY", "npm")
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        detail(&doc).contains("npm install -g breadboard-cli@latest"),
        "{doc:#}"
    );
}

#[test]
fn configured_port_held_by_another_process_names_it() {
    let ctx = TestContext::new();
    ctx.install(&["--version", "0.1.1"]).success();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let config = ctx.home.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap_or_default();
    // config.toml already has an [engine] table (install remembers its source there): add the key to it.
    let text = if text.contains("[engine]") {
        text.replacen("[engine]", &format!("[engine]\nport = {port}"), 1)
    } else {
        format!("{text}\n[engine]\nport = {port}\n")
    };
    std::fs::write(&config, text).unwrap();

    let (code, doc) = doctor(&ctx, &[]);
    let finding = check(&doc, "engine.port");
    assert_eq!(finding["status"], "warn", "{doc:#}");
    assert!(
        finding["title"]
            .as_str()
            .unwrap()
            .contains(&port.to_string()),
        "{finding}"
    );
    // The portable build cannot name a listener, and says so instead of guessing.
    let me = if LINUX_EXTRAS {
        std::process::id().to_string()
    } else {
        breadboard::os::procfs::UNNAMED_HOLDER.to_owned()
    };
    assert!(
        finding["detail"].as_str().unwrap().contains(&me),
        "names the holder {me}: {finding}"
    );
    assert!(
        finding["fix"].as_str().unwrap().contains("--port auto"),
        "{finding}"
    );
    assert_eq!(code, 0, "a warning: {doc:#}");

    // `engine start` without --port uses the configured port, and fails fast naming the same holder.
    let out = ctx
        .cmd(&["engine", "start"])
        .env("BREADBOARD_RAY_START", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("port {port}")) && err.contains(&me),
        "{err}"
    );

    // The env var wins over config; a bad value is a config error naming the variable.
    let out = ctx
        .cmd(&["engine", "doctor", "--json"])
        .env("BREADBOARD_CLI_PORT", "http")
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(check(&doc, "engine.port")["status"], "error", "{doc:#}");
    drop(holder);
    let (_, doc) = doctor(&ctx, &[]);
    assert_eq!(check(&doc, "engine.port")["status"], "ok", "{doc:#}");
}

#[test]
fn corrupt_registration_is_moved_aside_by_fix() {
    let ctx = TestContext::new();
    ctx.install(&["--version", "0.1.1"]).success();
    let run = ctx.home.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("engine.json"), b"{\"schema\": 1, \"pid\": ").unwrap();
    let (code, doc) = doctor(&ctx, &[]);
    assert_eq!(code, 1, "{doc:#}");
    assert_eq!(
        check(&doc, "engine.registration")["status"],
        "error",
        "{doc:#}"
    );
    assert!(
        run.join("engine.json").exists(),
        "doctor without --fix changes nothing"
    );

    let (code, doc) = doctor(&ctx, &["--fix"]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(
        check(&doc, "engine.registration")["status"],
        "ok",
        "{doc:#}"
    );
    assert!(!run.join("engine.json").exists());
    let kept: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("engine.json.corrupt-")
        })
        .collect();
    assert_eq!(
        kept.len(),
        1,
        "the corrupt file is kept aside for inspection, not deleted"
    );
    assert!(
        doc["repairs"].as_array().is_some_and(|r| !r.is_empty()),
        "{doc:#}"
    );
}

#[test]
fn an_unreadable_session_index_is_reported_and_its_fixes_work() {
    let engine = crate::supervisor::Engine::new();
    engine.start();
    engine.cmd(&["engine", "stop"]).assert().success();
    let data = engine.ctx.home.join("data");
    let index = data.join("sessions.sqlite3");
    assert!(index.is_file(), "the engine made no index");
    for companion in ["sessions.sqlite3-wal", "sessions.sqlite3-shm"] {
        let _ = std::fs::remove_file(data.join(companion));
    }
    std::fs::write(&index, b"this is not a database, it was overwritten").unwrap();

    let (_, doc) = engine_doctor(&engine, &[]);
    let finding = check(&doc, "data.index");
    assert_eq!(finding["status"], "warn", "{finding}");
    assert_eq!(finding["fix"], "breadboard engine restart");

    // The fix: the engine sets the bad index aside and starts on a rebuilt one; doctor then names what was kept.
    engine
        .cmd(&["engine", "restart", "--port", "auto"])
        .assert()
        .success();
    let (_, doc) = engine_doctor(&engine, &[]);
    let finding = check(&doc, "data.index");
    assert_eq!(finding["status"], "warn", "{finding}");
    assert!(
        finding["detail"]
            .as_str()
            .unwrap()
            .contains("sessions.sqlite3.corrupt-"),
        "{finding}"
    );
    run_fix(&engine.ctx, finding["fix"].as_str().unwrap());
    let (code, doc) = engine_doctor(&engine, &[]);
    assert_eq!(check(&doc, "data.index")["status"], "ok", "{doc:#}");
    assert_eq!(code, 0, "{doc:#}");
    engine.cmd(&["engine", "stop"]).assert().success();
}

/// Doctor says where each setting came from: the config file (with its key), the environment (with the variable),
/// or the default; a value a command would refuse is an error naming its origin's fix; a token is never shown.
#[test]
fn settings_are_reported_with_their_origins_and_no_token() {
    let ctx = TestContext::new();
    std::fs::create_dir_all(&ctx.home).unwrap();
    std::fs::write(
        ctx.home.join("config.toml"),
        "[engine]\nport = 9417\nrestart = \"on-failure\"\n",
    )
    .unwrap();
    let secret = "t0ken-that-must-never-show";
    let run = |extra: &[(&str, &str)]| {
        let mut cmd = ctx.cmd(&["engine", "doctor", "--json"]);
        cmd.env("BREADBOARD_PROTOCOL_STRICT", "0")
            .env("BREADBOARD_API_TOKEN", secret);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            !text.contains(secret) && !String::from_utf8_lossy(&out.stderr).contains(secret),
            "the token shows: {text}"
        );
        serde_json::from_str::<serde_json::Value>(&text).unwrap()
    };
    let doc = run(&[]);
    let origin = |doc: &serde_json::Value, key: &str| {
        let s = doc["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == key)
            .unwrap_or_else(|| panic!("no setting {key} in {doc}"))
            .clone();
        (
            s["value"].as_str().unwrap().to_owned(),
            s["origin"].as_str().unwrap().to_owned(),
        )
    };
    let config_file = ctx.home.join("config.toml");
    assert_eq!(
        origin(&doc, "engine.port"),
        (
            "9417".to_owned(),
            format!("config {}:engine.port", config_file.display())
        )
    );
    assert_eq!(
        origin(&doc, "protocol.mode"),
        (
            "soft".to_owned(),
            "env BREADBOARD_PROTOCOL_STRICT".to_owned()
        )
    );
    assert_eq!(origin(&doc, "client.url").1, "default");
    assert_eq!(
        origin(&doc, "client.token"),
        (
            "(not shown)".to_owned(),
            "env BREADBOARD_API_TOKEN".to_owned()
        )
    );
    let listed = check(&doc, "config.settings");
    assert_eq!(listed["status"], "ok");
    let detail = listed["detail"].as_str().unwrap();
    assert!(
        detail.contains("engine.restart = on-failure (config "),
        "{detail}"
    );
    // The environment wins over the file; a value the commands refuse is the config check's error.
    let doc = run(&[("BREADBOARD_CLI_PORT", "not-a-port")]);
    assert_eq!(origin(&doc, "engine.port").1, "env BREADBOARD_CLI_PORT");
    let refused = check(&doc, "config.parse");
    assert_eq!(refused["status"], "error", "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("BREADBOARD_CLI_PORT"),
        "{refused}"
    );
}
