//! Records the target triple this binary is built for, so `breadboard upgrade` picks exactly that release artifact
//! (never a "close enough" one: a musl build must not pick the gnu tarball; installers.md §1.8, self_update#136).
//! Cargo gives `TARGET` only to build scripts.

fn main() {
    let target = std::env::var("TARGET").expect("cargo sets TARGET for build scripts");
    println!("cargo:rustc-env=BREADBOARD_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
