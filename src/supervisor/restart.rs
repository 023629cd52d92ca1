//! `engine.restart = "on-failure"`: when a crashed engine is started again, and when the supervisor gives up.
//! Exponential backoff (first delay `BREADBOARD_RESTART_BACKOFF_MS`, default 1 s, doubling to 30 s, back to the first
//! after 30 s of stable uptime); [`CRASH_LOOP_CRASHES`] crashes within [`CRASH_LOOP_WINDOW`] is a crash loop, which
//! ends the supervisor with the state `errored` instead of restarting forever.

use std::time::{Duration, Instant};

use super::Sink;
use crate::engine::crash::{self, CrashLoop, LastExit};
use crate::engine::registration;
use crate::fsutil;
use crate::os::sys;
use crate::paths::Paths;

const CRASH_LOOP_CRASHES: usize = 3;
const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = crate::settings::MAX_RESTART_BACKOFF;
const STABLE_UPTIME_S: f64 = 30.0;

/// What to do after a crash.
pub(super) enum AfterCrash {
    /// Start the engine again after this delay.
    RestartIn(Duration),
    /// A crash loop: give up.
    GiveUp(CrashLoop),
}

pub(super) struct RestartPolicy {
    initial: Duration,
    backoff: Duration,
    /// Crashes inside the crash-loop window: when, and a one-line account of each.
    crashes: Vec<(Instant, String)>,
}

impl RestartPolicy {
    pub(super) fn new(sink: &Sink) -> RestartPolicy {
        let settings = crate::settings::without_flags(&Default::default());
        let initial = match settings.restart_backoff.get() {
            Ok(backoff) => *backoff,
            Err(e) => {
                sink.line(&e.message);
                Duration::from_secs(1)
            }
        };
        RestartPolicy {
            initial,
            backoff: initial,
            crashes: Vec::new(),
        }
    }

    /// Counts the crash `exit` and decides.
    pub(super) fn after_crash(&mut self, exit: &LastExit) -> AfterCrash {
        if exit.uptime_s > STABLE_UPTIME_S {
            self.backoff = self.initial;
        }
        let now = Instant::now();
        self.crashes
            .retain(|(t, _)| now.duration_since(*t) < CRASH_LOOP_WINDOW);
        self.crashes.push((
            now,
            format!(
                "{} after {} at {}",
                exit.how(),
                crash::human_duration(exit.uptime_s),
                exit.ended_at
            ),
        ));
        if self.crashes.len() >= CRASH_LOOP_CRASHES {
            return AfterCrash::GiveUp(CrashLoop {
                crashes: self.crashes.len() as u32,
                window_s: CRASH_LOOP_WINDOW.as_secs(),
                gave_up_at: fsutil::now_rfc3339(),
                history: self.crashes.iter().map(|(_, h)| h.clone()).collect(),
            });
        }
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        AfterCrash::RestartIn(delay)
    }

    /// The line the log gets before waiting `delay`.
    pub(super) fn announce(&self, delay: Duration) -> String {
        format!(
            "restarting the engine in {:.1}s (restart = on-failure; crash {} of {CRASH_LOOP_CRASHES} within {} s gives up)",
            delay.as_secs_f64(),
            self.crashes.len(),
            CRASH_LOOP_WINDOW.as_secs()
        )
    }
}

/// Sleeps until `delay` has passed; false when a stop (a signal, or `engine stop`'s marker) came first.
pub(super) fn wait_to_restart(paths: &Paths, instance_id: &str, delay: Duration) -> bool {
    let wake = Instant::now() + delay;
    loop {
        if sys::take_signal().is_some() || registration::stop_requested(paths, instance_id) {
            return false;
        }
        if Instant::now() >= wake {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
