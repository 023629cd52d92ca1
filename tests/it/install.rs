use std::path::PathBuf;

use crate::common::*;

#[test]
fn install_newest_in_range_with_uv() {
    let ctx = TestContext::new();
    let assert = ctx.install(&[]).success();
    // stdout carries only the result line; progress and messages go to stderr.
    let out = stdout(&assert);
    assert_eq!(out.lines().count(), 1, "stdout: {out}");
    assert!(
        out.starts_with("installed breadboard-engine 0.1.1"),
        "stdout: {out}"
    );
    ctx.assert_current_complete("0.1.1");
    assert_eq!(ctx.link("previous"), None);

    let receipt: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ctx.engine_dir().join("versions/0.1.1/receipt.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(receipt["schema"], 1);
    assert_eq!(receipt["requirement"], "breadboard-engine==0.1.1");
    assert_eq!(receipt["installer"], "uv");
    assert_eq!(receipt["source"]["kind"], "index");
    assert_eq!(receipt["source"]["url"], index_url());
    assert_eq!(receipt["python"]["path"], python311().display().to_string());
    assert!(receipt["installed_at"].as_str().unwrap().ends_with('Z'));

    // The source is remembered, so a later upgrade uses the same index.
    let config = std::fs::read_to_string(ctx.home.join("config.toml")).unwrap();
    assert!(
        config.contains(&format!("index_url = \"{}\"", index_url())),
        "{config}"
    );

    // run/ is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ctx.home.join("run"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);

    // Installing again is a no-op that needs no network (index_url remembered but not contacted for a pinned version).
    let again = ctx
        .cmd(&["engine", "install", "--version", "0.1.1", "--json"])
        .assert()
        .success();
    let doc: serde_json::Value = serde_json::from_slice(&again.get_output().stdout).unwrap();
    assert_eq!(doc["action"], "unchanged");
}

#[test]
fn install_pinned_version() {
    let ctx = TestContext::new();
    let assert = ctx.install(&["--version", "0.1.0", "--json"]).success();
    let doc: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(doc["action"], "installed");
    assert_eq!(doc["version"], "0.1.0");
    assert_eq!(doc["receipt"]["engine_version"], "0.1.0");
    ctx.assert_current_complete("0.1.0");
}

#[test]
fn install_offline_with_find_links() {
    let ctx = TestContext::new();
    let wheels = wheelhouse();
    // No index server involved: --find-links alone means --no-index.
    ctx.cmd(&[
        "engine",
        "install",
        "--find-links",
        wheels.to_str().unwrap(),
    ])
    .assert()
    .success();
    ctx.assert_current_complete("0.1.1");
    let json = ctx.list_json();
    let source = &json["versions"][0]["receipt"]["source"];
    assert_eq!(source["kind"], "find_links");
    assert_eq!(source["find_links"], wheels.display().to_string());
}

#[test]
fn install_from_local_wheel_source() {
    let ctx = TestContext::new();
    let wheel = wheelhouse().join("breadboard_engine-0.1.0-py3-none-any.whl");
    let wheels = wheelhouse();
    ctx.cmd(&[
        "engine",
        "install",
        "--source",
        wheel.to_str().unwrap(),
        "--find-links",
        wheels.to_str().unwrap(),
    ])
    .assert()
    .success();
    ctx.assert_current_complete("0.1.0");
    let config = std::fs::read_to_string(ctx.home.join("config.toml")).unwrap();
    assert!(config.contains("source = "), "{config}");
}

/// A find-links directory holding every wheel of the wheelhouse but the uv one.
fn wheelhouse_without_uv(ctx: &TestContext) -> PathBuf {
    let dir = ctx.dir.path().join("wheels-without-uv");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(wheelhouse()).unwrap().flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("uv-") {
            std::os::unix::fs::symlink(entry.path(), dir.join(&name)).unwrap();
        }
    }
    dir
}

/// No uv in view and none in the package source either: the pip back end, with a warning saying why, gives the same
/// distributions as the uv back end.
#[test]
fn pip_and_uv_build_the_same_venv() {
    let uv_ctx = TestContext::new();
    uv_ctx.install(&["--version", "0.1.0"]).success();

    let pip_ctx = TestContext::new();
    let wheels = wheelhouse_without_uv(&pip_ctx);
    let mut cmd = pip_ctx.cmd(&[
        "engine",
        "install",
        "--version",
        "0.1.0",
        "--find-links",
        wheels.to_str().unwrap(),
    ]);
    cmd.env_remove("BREADBOARD_UV"); // uv is not on PATH in the test environment either
    cmd.env("PATH", "/usr/bin:/bin");
    let assert = cmd.assert().success();
    assert!(stdout(&assert).contains("pip"), "{}", stdout(&assert));
    let err = stderr(&assert);
    assert!(
        err.contains("warning: could not set up uv 0.13.9: uv-0.13.9-py3-none-")
            && err.contains("installing with pip instead (slower)"),
        "{err}"
    );
    pip_ctx.assert_current_complete("0.1.0");
    assert_eq!(
        pip_ctx.list_json()["versions"][0]["receipt"]["installer"],
        "pip"
    );
    assert!(!pip_ctx.home.join("tools/uv-0.13.9").join("uv").exists());

    let dists = |ctx: &TestContext| -> Vec<String> {
        let out = std::process::Command::new(ctx.engine_dir().join("current/bin/python"))
            .args([
                "-c",
                "import importlib.metadata as m\n\
                 names = sorted({d.metadata['Name'].lower().replace('_', '-') + '==' + d.version for d in m.distributions()})\n\
                 print('\\n'.join(n for n in names if n.split('==')[0] not in ('pip', 'setuptools', 'wheel')))",
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(dists(&uv_ctx), dists(&pip_ctx));
}

/// The README's quickstart path: the engine built from this checkout's project dir, offline (the wheelhouse carries
/// the engine's dependencies and its build backend, hatchling).
#[test]
fn install_from_project_dir_source_offline() {
    let ctx = TestContext::new();
    let project = repo_root().join("engine");
    let wheels = wheelhouse();
    let assert = ctx
        .cmd(&[
            "engine",
            "install",
            "--source",
            project.to_str().unwrap(),
            "--find-links",
            wheels.to_str().unwrap(),
            "--json",
        ])
        .assert()
        .success();
    let doc: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    let version = doc["version"].as_str().unwrap().to_owned();
    ctx.assert_current_complete(&version);
    let receipt = &ctx.list_json()["versions"][0]["receipt"];
    assert_eq!(receipt["source"]["kind"], "path");
    // The venv holds a regular install of the project (not an editable link back into the checkout).
    let out = std::process::Command::new(ctx.engine_dir().join("current/bin/python"))
        .args([
            "-c",
            "import breadboard_engine, sys; print(breadboard_engine.__file__)",
        ])
        .output()
        .unwrap();
    let location = String::from_utf8_lossy(&out.stdout);
    assert!(location.contains("site-packages"), "{location}");
}

/// No uv on PATH: the pinned uv comes from the engine's own index (verified against its pinned sha256), is kept
/// under the home and installs the engine; the next install reuses it.
#[test]
fn without_uv_the_pinned_uv_is_set_up_from_the_same_index() {
    let ctx = TestContext::new();
    let install = |version: &str| {
        let url = index_url();
        let mut cmd = ctx.cmd(&[
            "engine",
            "install",
            "--version",
            version,
            "--index-url",
            &url,
        ]);
        cmd.env_remove("BREADBOARD_UV").env("PATH", "/usr/bin:/bin");
        cmd.assert().success()
    };
    let first = install("0.1.0");
    let err = stderr(&first);
    assert!(
        err.contains("no uv found: setting up uv 0.13.9 from index http://127.0.0.1:"),
        "{err}"
    );
    assert!(!err.contains("warning"), "{err}");
    let uv = ctx.home.join("tools/uv-0.13.9/uv");
    let version = std::process::Command::new(&uv)
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("uv 0.13.9"),
        "{version:?}"
    );
    ctx.assert_current_complete("0.1.0");
    assert_eq!(ctx.list_json()["versions"][0]["receipt"]["installer"], "uv");

    // doctor sees it (and checks the venv's dependencies with it), and does not claim installs use pip.
    let doctor = |ctx: &TestContext| {
        let mut cmd = ctx.cmd(&["engine", "doctor", "--json"]);
        cmd.env_remove("BREADBOARD_UV").env("PATH", "/usr/bin:/bin");
        let out = cmd.output().unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "tools.uv")
            .cloned()
            .unwrap()
    };
    let found = doctor(&ctx);
    assert_eq!(found["status"], "ok", "{found}");
    assert!(
        found["title"].as_str().unwrap().contains("the pinned one"),
        "{found}"
    );
    let fresh = TestContext::new();
    let none = doctor(&fresh);
    assert_eq!(
        (none["status"].as_str(), none["title"].as_str()),
        (
            Some("ok"),
            Some("no uv found: the next engine install sets up uv 0.13.9")
        )
    );

    let second = install("0.1.1");
    assert!(
        !stderr(&second).contains("setting up uv"),
        "{}",
        stderr(&second)
    );
    ctx.assert_current_complete("0.1.1");
    // Nothing half-written is left next to it.
    let left: Vec<_> = std::fs::read_dir(uv.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("uv")]);
}

/// A uv wheel that is not the pinned one is refused; with uv asked for explicitly that is an error naming the
/// mismatch, and nothing is installed or kept.
#[test]
fn a_uv_wheel_with_the_wrong_checksum_is_refused() {
    let ctx = TestContext::new();
    let wheels = wheelhouse_without_uv(&ctx);
    let real = std::fs::read_dir(wheelhouse())
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("uv-0.13.9-"))
        .expect("the wheelhouse has the pinned uv wheel (scripts/fixtures)");
    let mut bytes = std::fs::read(real.path()).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(wheels.join(real.file_name()), bytes).unwrap();
    let mut cmd = ctx.cmd(&[
        "engine",
        "install",
        "--version",
        "0.1.0",
        "--installer",
        "uv",
        "--find-links",
        wheels.to_str().unwrap(),
    ]);
    cmd.env_remove("BREADBOARD_UV").env("PATH", "/usr/bin:/bin");
    let assert = cmd.assert().code(1);
    let err = stderr(&assert);
    assert!(
        err.contains("the uv installer was requested but uv was not found, and uv 0.13.9 could not be set up: checksum mismatch for")
            && err.contains("expected 1"),
        "{err}"
    );
    assert!(err.contains("hint: install uv"), "{err}");
    assert!(!ctx.home.join("tools/uv-0.13.9/uv").exists());
    let left: Vec<_> = std::fs::read_dir(ctx.home.join("tools/uv-0.13.9"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(ctx.version_dirs().is_empty(), "{:?}", ctx.version_dirs());
}

/// A wheel by URL (as a release tree carries it): verified against the SHA256SUMS next to it, its dependencies from
/// the index, the URL kept in the receipt. A wrong `#sha256=` or nothing to verify against installs nothing.
#[test]
fn install_from_a_wheel_url_is_verified_by_sha256() {
    let ctx = TestContext::new();
    let name = "breadboard_engine-0.1.1-py3-none-any.whl";
    let tree = ctx.dir.path().join("tree");
    std::fs::create_dir_all(tree.join("v0.1.1")).unwrap();
    std::fs::create_dir_all(tree.join("nosums")).unwrap();
    let bytes = std::fs::read(wheelhouse().join(name)).unwrap();
    std::fs::write(tree.join("v0.1.1").join(name), &bytes).unwrap();
    std::fs::write(tree.join("nosums").join(name), &bytes).unwrap();
    let digest = {
        let out = std::process::Command::new("sha256sum")
            .arg(tree.join("v0.1.1").join(name))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    std::fs::write(
        tree.join("v0.1.1/SHA256SUMS"),
        format!(
            "{}  breadboard-0.1.1-x86_64-unknown-linux-gnu.tar.gz\n{digest}  {name}\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    let base = serve(tree, 0);
    let index = index_url();
    let install = |url: &str| {
        ctx.cmd(&["engine", "install", "--source", url, "--index-url", &index])
            .assert()
    };

    let wrong = format!("{base}/v0.1.1/{name}#sha256={}", "ab".repeat(32));
    let err = stderr(&install(&wrong).code(9));
    assert!(
        err.contains(&format!(
            "checksum mismatch for {wrong}: expected sha256 {}",
            "ab".repeat(32)
        )) && err.contains(&format!("the download has {digest}; nothing was installed")),
        "{err}"
    );
    let unverifiable = format!("{base}/nosums/{name}");
    let err = stderr(&install(&unverifiable).code(9));
    assert!(
        err.contains(&format!(
            "cannot verify {unverifiable}: {base}/nosums/SHA256SUMS answered HTTP 404"
        )) && err.contains("#sha256=<hex>"),
        "{err}"
    );
    assert!(ctx.version_dirs().is_empty(), "{:?}", ctx.version_dirs());

    let url = format!("{base}/v0.1.1/{name}");
    install(&url).success();
    ctx.assert_current_complete("0.1.1");
    let receipt = &ctx.list_json()["versions"][0]["receipt"];
    assert_eq!(receipt["source"]["kind"], "path");
    assert_eq!(receipt["source"]["path"], url.as_str());
}
