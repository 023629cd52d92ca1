//! Records the target triple this binary is built for, so `breadboard upgrade` picks exactly that release artifact
//! (never a "close enough" one: a musl build must not pick the gnu tarball).
//! Cargo gives `TARGET` only to build scripts.
//!
//! Also sets `cfg(linux_extras)`: the Linux-only facilities (child subreaper, parent-death signal, `/proc` readers)
//! are built on Linux unless the `portable-fallbacks` feature is on. That feature builds the code macOS runs, so
//! the suite on Linux exercises it too (docs/architecture.md, "Platforms").

fn main() {
    let target = std::env::var("TARGET").expect("cargo sets TARGET for build scripts");
    println!("cargo:rustc-env=BREADBOARD_TARGET={target}");
    println!("cargo:rustc-check-cfg=cfg(linux_extras)");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let portable = std::env::var_os("CARGO_FEATURE_PORTABLE_FALLBACKS").is_some();
    if linux && !portable {
        println!("cargo:rustc-cfg=linux_extras");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
