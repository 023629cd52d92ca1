//! `breadboard`: installs, supervises and talks to the BreadBoard agent engine.

pub(crate) mod build_info;
pub mod cli;
pub mod client;
pub mod compat;
pub(crate) mod config;
pub(crate) mod context;
pub(crate) mod doctor;
pub(crate) mod engine;
pub mod engine_client;
pub(crate) mod env_vars;
pub mod error;
pub(crate) mod fsutil;
pub(crate) mod http;
pub(crate) mod lock;
pub mod os;
pub(crate) mod paths;
pub(crate) mod printer;
pub(crate) mod selfupdate;
pub(crate) mod session_index;
pub(crate) mod settings;
pub(crate) mod supervisor;
pub(crate) mod venv;
