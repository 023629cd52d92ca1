//! The wait between reconnects to a remote engine or the bus: 100 ms doubling to 5 s, each wait spread by up to a
//! quarter so that many clients dropped at once do not come back in lockstep.

use std::time::Duration;

const FIRST: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_secs(5);

pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff { next: FIRST }
    }

    /// The wait before the next attempt; each call doubles the one after it, up to 5 s.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let wait = jitter(self.next);
        self.next = (self.next * 2).min(MAX);
        wait
    }

    /// A connection that worked starts the next series from 100 ms again.
    pub(crate) fn reset(&mut self) {
        self.next = FIRST;
    }
}

pub(crate) fn jitter(d: Duration) -> Duration {
    // The clock's nanoseconds are random enough to spread reconnects.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    let spread = d.as_millis() as u64 / 4 + 1;
    d + Duration::from_millis(u64::from(nanos) % spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_five_seconds_with_at_most_a_quarter_more() {
        let mut b = Backoff::new();
        let waits: Vec<Duration> = (0..8).map(|_| b.next_wait()).collect();
        let bases = [100, 200, 400, 800, 1600, 3200, 5000, 5000];
        for (w, base) in waits.iter().zip(bases) {
            let base = Duration::from_millis(base);
            assert!(
                *w >= base && *w <= base + base / 4 + Duration::from_millis(1),
                "{w:?} for {base:?}"
            );
        }
        b.reset();
        assert!(b.next_wait() < Duration::from_millis(130));
    }
}
