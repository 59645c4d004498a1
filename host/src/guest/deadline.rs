//! A request's guest deadline: the wall-clock instant when the guest's time runs out, and the error a host call
//! returns when the guest reaches it while waiting. The epoch interrupts a guest that computes past it; host calls
//! that wait (sleeps, polls, socket and body reads) wait at most until it. The time the host spends moving the
//! client's bytes (a body read that brings bytes, a response write the client takes) is the client's, not the
//! guest's: whoever moves them gives it back with `extend`, so a slow but live client does not use up the
//! guest's time, while a client that stops does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When the guest's time runs out. Clones share it: the runtime, the host calls and the exchange see the same one.
#[derive(Debug, Clone)]
pub struct Deadline {
    origin: Instant,
    /// Nanoseconds from `origin` to the first deadline: what lies beyond it was given back.
    limit: u64,
    moving: Arc<Moving>,
}

/// What moves of a deadline, in the one allocation its clones share.
#[derive(Debug)]
struct Moving {
    /// Nanoseconds from `origin` to the deadline.
    nanos: AtomicU64,
    /// The most nanoseconds `extend` may give back in all (unbounded until `cap_extensions`).
    cap: AtomicU64,
}

impl Deadline {
    /// A deadline `limit` from now.
    pub fn after(limit: Duration) -> Deadline {
        let nanos = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
        let moving = Moving { nanos: AtomicU64::new(nanos), cap: AtomicU64::new(u64::MAX) };
        Deadline { origin: Instant::now(), limit: nanos, moving: Arc::new(moving) }
    }

    /// Gives back at most `most` in all: a client that keeps moving a byte now and then cannot keep the guest
    /// running without end, and the request holds its worker at most the guest's time plus `most`.
    pub fn cap_extensions(&self, most: Duration) {
        self.moving.cap.store(u64::try_from(most.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// How much of the guest's time is left; zero once it has run out.
    pub fn remaining(&self) -> Duration {
        self.until().saturating_sub(self.origin.elapsed())
    }

    /// The instant it falls due as it stands (later if time is given back), read without the clock; `None`
    /// past what `Instant` can hold.
    pub fn due(&self) -> Option<Instant> {
        self.origin.checked_add(self.until())
    }

    fn until(&self) -> Duration {
        Duration::from_nanos(self.moving.nanos.load(Ordering::Relaxed))
    }

    pub fn has_passed(&self) -> bool {
        self.remaining().is_zero()
    }

    /// Gives the guest `time` back: time the host spent on the client's behalf.
    pub fn extend(&self, time: Duration) {
        let nanos = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
        let cap = self.moving.cap.load(Ordering::Relaxed);
        let _ = self.moving.nanos.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |at| {
            let room = cap.saturating_sub(at.saturating_sub(self.limit));
            Some(at.saturating_add(nanos.min(room)))
        });
    }
}

/// The guest's time ran out while it waited in a host call; the call traps, and the request is a guest timeout.
#[derive(Debug)]
pub(super) struct GuestTimeout {
    /// The host call it was waiting in.
    pub call: &'static str,
}

impl std::fmt::Display for GuestTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the guest's time ran out while it waited in {}", self.call)
    }
}

impl std::error::Error for GuestTimeout {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_time_shrinks_and_comes_back_when_extended() {
        let deadline = Deadline::after(Duration::from_secs(10));
        assert!(deadline.remaining() <= Duration::from_secs(10) && !deadline.has_passed());
        let shared = deadline.clone();
        shared.extend(Duration::from_secs(5));
        assert!(deadline.remaining() > Duration::from_secs(10));
        let capped = Deadline::after(Duration::from_secs(10));
        capped.cap_extensions(Duration::from_secs(3));
        capped.extend(Duration::from_secs(2));
        capped.extend(Duration::from_secs(2));
        capped.extend(Duration::from_secs(2));
        let remaining = capped.remaining();
        assert!(remaining > Duration::from_secs(12) && remaining <= Duration::from_secs(13), "{remaining:?}");
        let gone = Deadline::after(Duration::ZERO);
        assert!(gone.has_passed() && gone.remaining().is_zero());
    }

    #[test]
    fn the_instant_it_falls_due_moves_with_the_time_given_back() {
        let before = Instant::now();
        let deadline = Deadline::after(Duration::from_secs(10));
        let due = deadline.due().unwrap();
        assert!(due >= before + Duration::from_secs(10) && due <= Instant::now() + Duration::from_secs(10));
        deadline.clone().extend(Duration::from_secs(5));
        assert_eq!(deadline.due(), Some(due + Duration::from_secs(5)));
    }
}
