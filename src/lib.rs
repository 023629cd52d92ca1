//! `breadboard`: installs, supervises and talks to the BreadBoard agent engine.

pub mod build_info;
pub mod cli;
pub mod compat;
pub mod config;
pub mod env_vars;
pub mod error;
pub mod fsutil;
pub mod installer;
pub mod lock;
pub mod package_index;
pub mod paths;
pub mod printer;
pub mod python;
pub mod venv_store;
