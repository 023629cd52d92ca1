//! The managed engine venvs: where each version lives and its receipt (`store`), which package source offers which
//! engine (`index`, `wheel_url`), the Python to build on (`python`), the uv or pip that builds it (`installer`, and
//! `uv`, the pinned uv set up when none is found).

pub mod index;
pub mod installer;
pub mod python;
pub mod store;
pub mod uv;
pub mod wheel_url;
