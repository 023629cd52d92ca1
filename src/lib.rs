//! `breadboard`: installs, supervises and talks to the BreadBoard agent engine.

pub mod build_info;
pub mod cli;
pub mod client;
pub mod compat;
pub mod config;
pub mod context;
pub mod crash;
pub mod doctor;
pub mod engine;
pub mod engine_client;
pub mod env_vars;
pub mod error;
pub mod fsutil;
pub(crate) mod http;
pub mod install_receipt;
pub mod lock;
pub mod paths;
pub mod printer;
pub mod procfs;
pub mod registration;
pub mod release;
pub mod self_replace;
pub mod session_index;
pub mod supervisor;
pub mod sys;
pub mod venv;
