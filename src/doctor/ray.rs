//! The Ray section: Ray imports in the engine venv (or the running engine reports its own), its temp dir suits Unix
//! sockets, and a configured cluster answers.

use std::process::Command;
use std::time::Duration;

use crate::engine::registration::Registration;
use crate::venv::store::Store;

use super::venv::venv_python;
use super::{last_line, run_with_deadline, Finding, Setup, SLOW};

pub(super) const SECTION: &str = "Ray";

/// `import_ray` is false when the running engine already reported a usable Ray (`ray.engine`): importing it in a
/// second process would only tell the same, a second slower.
pub(super) fn venv_checks(setup: &Setup, store: &Store, import_ray: bool) -> Vec<Finding> {
    let Some(version) = store.current() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if import_ray {
        out.push(import_check(store, &version));
    }
    out.push(temp_dir_check(setup));
    // The same source `engine start` uses (config; a --ray-address flag is per start and not known here).
    let address = setup
        .config
        .as_ref()
        .ok()
        .and_then(|c| c.ray.address.clone())
        .filter(|a| !a.is_empty());
    out.extend(address.map(|a| cluster_check(&a)));
    out
}

fn import_check(store: &Store, version: &str) -> Finding {
    let mut cmd = Command::new(venv_python(store, version));
    cmd.args(["-c", "import ray; print(ray.__version__)"]);
    match run_with_deadline(cmd, SLOW) {
        Ok(o) if o.status.success() => Finding::ok(
            SECTION,
            "ray.import",
            format!("Ray {} imports", last_line(&o.stdout)),
            "in the engine venv",
        ),
        Ok(o) => Finding::error(
            SECTION,
            "ray.import",
            "Ray does not import in the engine venv",
            last_line(&o.stderr),
        )
        .rebuilds(version),
        Err(why) => Finding::warn(SECTION, "ray.import", "importing Ray did not finish", why),
    }
}

fn temp_dir_check(setup: &Setup) -> Finding {
    let temp = setup.paths.data_dir().join("ray");
    if temp.as_os_str().len() <= 40 {
        return Finding::ok(
            SECTION,
            "ray.temp_dir",
            "Ray's temp dir is short enough for Unix sockets",
            temp.display().to_string(),
        );
    }
    Finding::ok(
        SECTION,
        "ray.temp_dir",
        "Ray's temp dir moves to /tmp",
        format!(
            "{} is longer than 40 bytes (Unix socket paths are limited to 107), so the engine keeps Ray's sockets in \
             a private directory of its own under /tmp (recorded in <data>/ray_temp_dir)",
            temp.display()
        ),
    )
}

fn cluster_check(address: &str) -> Finding {
    use std::net::ToSocketAddrs;
    let reachable = address
        .trim_start_matches("ray://")
        .to_socket_addrs()
        .map_err(|e| e.to_string())
        .and_then(|mut addrs| {
            let addr = addrs.next().ok_or_else(|| "no address".to_owned())?;
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .map_err(|e| e.to_string())
        });
    match reachable {
        Ok(_) => Finding::ok(
            SECTION,
            "ray.cluster",
            "the Ray cluster answers",
            address.to_owned(),
        ),
        Err(why) => Finding::error(
            SECTION,
            "ray.cluster",
            "the configured Ray cluster does not answer",
            format!("{address}: {why}"),
        )
        .fix(
            "start the cluster (`ray start --head`), or remove ray.address from config.toml to use a local Ray",
        ),
    }
}

/// The running engine's own view of Ray (`/v1/status`): connected, still starting, or failed and why.
pub(super) fn engine_check(reg: &Registration) -> Finding {
    let status = crate::engine::client_for(reg, Duration::from_secs(2))
        .ok_or_else(|| "no token".to_owned())
        .and_then(|c| {
            c.get_json::<serde_json::Value>("/v1/status")
                .map_err(|e| e.to_string())
        });
    let ray = match status {
        Ok(doc) => doc["ray"].clone(),
        Err(why) => {
            return Finding::warn(
                SECTION,
                "ray.engine",
                "the engine's Ray state is unknown",
                why,
            )
        }
    };
    let state = ray["state"].as_str().unwrap_or("?");
    let detail = format!(
        "{} Ray, state {state}{}",
        ray["mode"].as_str().unwrap_or("?"),
        ray["address"]
            .as_str()
            .map(|a| format!(", cluster {a}"))
            .unwrap_or_default()
    );
    match state {
        "connected" | "pending" | "off" | "starting" => {
            Finding::ok(SECTION, "ray.engine", "the engine's Ray is usable", detail)
        }
        _ => Finding::error(
            SECTION,
            "ray.engine",
            "the engine's Ray failed",
            format!("{detail}: {}", ray["error"].as_str().unwrap_or("no detail")),
        )
        .fix("breadboard engine logs -n 50   # then: breadboard engine restart"),
    }
}
