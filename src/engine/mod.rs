//! The engine instance as the CLI sees it: probing its state (instance lock, registration, health), the handshake,
//! and the start and stop sequences shared by `engine start|stop|restart|status` and `engine upgrade`.
//!
//! One file a part: [`probe`] (what runs), [`diagnosis`] (what it is: one [`Diagnosis`] for every caller),
//! [`handshake`], [`options`] (port, host, restart policy), [`launch`] (what runs as the engine), [`start`],
//! [`ready`] (the wait for its handshake), [`foreground`], [`stop`] (verify, record the intent, run the [`ladder`],
//! say what is true), [`unregistered`] (a supervisor without its registration), [`leftovers`] (what a dead instance
//! left), [`logs`] (reading and following its log), [`upgrade_restart`] (`engine upgrade` onto a running engine),
//! [`registration`] (`run/engine.json`: what the supervisor records of a live instance) and [`crash`] (how the last
//! instance ended, and the report of it).

pub(crate) mod crash;
mod diagnosis;
mod foreground;
mod handshake;
mod ladder;
mod launch;
mod leftovers;
mod logs;
mod options;
mod probe;
mod ready;
pub(crate) mod registration;
mod start;
mod stop;
mod unregistered;
mod upgrade_restart;

pub(crate) use diagnosis::*;
pub(crate) use foreground::*;
pub(crate) use handshake::*;
use ladder::*;
pub(crate) use launch::*;
pub(crate) use leftovers::*;
pub(crate) use logs::{follow_log, read_log};
pub(crate) use options::*;
pub(crate) use probe::*;
use ready::*;
pub(crate) use start::*;
pub(crate) use stop::*;
pub(crate) use unregistered::*;
pub(crate) use upgrade_restart::restart_onto_new;

#[cfg(test)]
mod tests;
