//! When the arbiter tries again to start a worker after a `fork` failed (too many processes, no memory): never
//! in a busy loop, waiting twice as long after each failure up to a ceiling, and at once again after a success.

use std::time::{Duration, Instant};

/// The wait after the first failure, and the longest wait.
const FIRST_WAIT: Duration = Duration::from_millis(500);
const LONGEST_WAIT: Duration = Duration::from_secs(8);

#[derive(Debug, Default)]
pub(super) struct Retry {
    /// The wait that follows the next failure; `None` while nothing failed.
    next_wait: Option<Duration>,
    /// No new attempt before this.
    not_before: Option<Instant>,
}

impl Retry {
    /// Whether an attempt may be made now.
    pub(super) fn may_try(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|not_before| now >= not_before)
    }

    /// Records a failure at `now`; returns how long until the next attempt.
    pub(super) fn failed(&mut self, now: Instant) -> Duration {
        let wait = self.next_wait.unwrap_or(FIRST_WAIT);
        self.next_wait = Some((wait * 2).min(LONGEST_WAIT));
        self.not_before = Some(now + wait);
        wait
    }

    /// Records a success: the next failure waits the shortest time again.
    pub(super) fn succeeded(&mut self) {
        *self = Retry::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_a_ceiling_and_reset_after_a_success() {
        let start = Instant::now();
        let mut retry = Retry::default();
        assert!(retry.may_try(start));
        let waits: Vec<Duration> = (0..7).map(|_| retry.failed(start)).collect();
        let millis: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(millis, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert!(!retry.may_try(start + Duration::from_secs(7)));
        assert!(retry.may_try(start + Duration::from_secs(8)));
        retry.succeeded();
        assert!(retry.may_try(start));
        assert_eq!(retry.failed(start), FIRST_WAIT);
    }
}
