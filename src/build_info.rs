//! The version this binary reports. `scripts/dist --version V` sets BREADBOARD_BUILD_VERSION at build time, so release
//! tooling and the distribution tests can build any version from one tree without editing Cargo.toml.

pub(crate) const VERSION: &str = match option_env!("BREADBOARD_BUILD_VERSION") {
    Some(version) => version,
    None => env!("CARGO_PKG_VERSION"),
};

/// The target triple this binary was built for (set by build.rs); `breadboard upgrade` downloads exactly this one.
pub(crate) const TARGET: &str = env!("BREADBOARD_TARGET");
