//! The CLI section: this binary's version, the engines and protocol it supports, and how it was installed.

use crate::compat;
use crate::paths::Paths;
use crate::selfupdate::install_receipt::{self, Foreign, InstallMethod};

use super::Finding;

pub(super) const SECTION: &str = "CLI";

/// This binary and how it was installed: the same detection `breadboard upgrade` uses, so the two never disagree.
pub(super) fn version_check(paths: &Paths) -> Finding {
    let title = format!("breadboard {}", crate::build_info::VERSION);
    let Ok(exe) = std::env::current_exe() else {
        return Finding::warn(
            SECTION,
            "cli.version",
            title,
            "the path of this executable is unknown",
        );
    };
    let range = format!(
        "engine range {}, protocol {}",
        compat::SUPPORTED_ENGINE,
        compat::PROTOCOL_VERSION
    );
    let installed_by = |how: String| {
        Finding::ok(
            SECTION,
            "cli.version",
            title.clone(),
            format!("{} ({how}); {range}", exe.display()),
        )
    };
    match install_receipt::detect(paths, &exe) {
        InstallMethod::PackageManager { manager, .. } => installed_by(format!(
            "installed with {manager}: upgrade with `{}`",
            install_receipt::package_manager_command(&manager, None)
        )),
        InstallMethod::SelfManaged { .. } => {
            installed_by("installed by install.sh: `breadboard upgrade` updates it".to_owned())
        }
        // A second copy shadowing the installed one is the classic "upgrade did nothing" trap.
        InstallMethod::Foreign {
            why: Foreign::OtherCopy { installed, .. },
            ..
        } if installed.exists() => Finding::warn(
            SECTION,
            "cli.version",
            format!("{title} is not the copy install.sh manages"),
            format!(
                "this is {}, install.sh installed {}; `breadboard upgrade` updates only that one",
                exe.display(),
                installed.display()
            ),
        )
        .fix(format!(
            "{} --version   # and put its directory first on PATH",
            installed.display()
        )),
        InstallMethod::Foreign { .. } => {
            installed_by("installed by hand or by cargo: upgrade it the same way".to_owned())
        }
    }
}
