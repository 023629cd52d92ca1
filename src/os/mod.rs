//! The operating system, at the bottom of the layers: nothing here imports from the domain above it.
//! - `procfs`: processes as the supervisor and doctor need them (start time, command line, environment, children,
//!   sessions, listeners, lock holders): Linux's `/proc` where `linux_extras` is on, sysinfo and portable calls
//!   elsewhere (macOS, the portable-fallbacks build).
//! - `sys`: signals, process groups and sessions, the child subreaper and the parent-death signal, via libc.

pub mod procfs;
pub mod sys;
