//! The managed engine venvs: where each version lives and its receipt (`store`), which package source offers which
//! engine (`index`, `wheel_url`), the Python to build on (`python`), the uv or pip that builds it (`installer`, and
//! `uv`, the pinned uv set up when none is found), and the install flow that puts them together (`install`).

pub(crate) mod index;
pub(crate) mod install;
pub(crate) mod installer;
pub(crate) mod python;
pub(crate) mod store;
pub(crate) mod uv;
pub(crate) mod wheel_url;
