//! Integration tests: the real binary against real venvs, real uv and pip, and a real index on 127.0.0.1.
#![allow(clippy::print_stdout, clippy::print_stderr)] // test diagnostics may print
#![allow(unreachable_pub)] // the test modules share their helpers with `pub`: this crate has no API to keep small

mod common;

mod broken;
mod client;
mod client_term;
mod client_tls;
mod client_wire;
mod concurrency;
mod crash;
mod discovery;
mod doctor;
mod errors;
mod install;
mod lifecycle;
mod minors;
mod privacy;
mod settings;
mod snapshots;
mod supervisor;
mod upstream;
mod watch;
mod watch_term;
