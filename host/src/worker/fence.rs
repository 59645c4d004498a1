//! The fence between a dying worker's signal handler and its relay thread. While a guest runs, the relay thread
//! may accept connections, take them out of the worker's registry and hand them over (see `relay`), at the very
//! moment the handler of a deadly signal answers what the registry holds (see `farewell`): a connection the
//! relay registered in a cell the handler had passed, or took out and had not sent yet, would be closed with the
//! process, unanswered. So the relay does each turn of that work inside `pass`, and the handler `close`s the
//! fence first: no turn starts after it, and the one under way ends before the handler answers anything. Both
//! sides use only atomics (sequentially consistent: either the turn sees the fence closed, or the handler sees
//! the turn) and, in the handler, `poll` (with no descriptor, as a sleep), which is async-signal-safe.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use nix::poll::{PollFd, PollTimeout, poll};

/// How long the handler waits for a turn under way. A turn takes microseconds, unless it answers clients itself (a
/// 404, a 503 for a full queue), each answer's write waiting up to a second for a client that does not read: the
/// handler then gives up on that turn after this, since the arbiter's SIGKILL follows its SIGABRT a second later
/// and the handler still has its own answers to give.
const LONGEST_WAIT: Duration = Duration::from_millis(300);
/// The handler's wait, a millisecond at a time.
const WAIT_STEP_MILLIS: u8 = 1;

pub(super) struct Fence {
    closed: AtomicBool,
    turns: AtomicU32,
}

impl Fence {
    pub(super) const fn new() -> Fence {
        Fence { closed: AtomicBool::new(false), turns: AtomicU32::new(0) }
    }

    /// Runs `turn` unless the fence is closed; returns whether it ran.
    pub(super) fn pass(&self, turn: impl FnOnce()) -> bool {
        self.turns.fetch_add(1, Ordering::SeqCst);
        // Counted out when dropped, even by a turn that panics: the handler would otherwise wait its longest.
        let _under_way = TurnUnderWay(&self.turns);
        let open = !self.closed.load(Ordering::SeqCst);
        if open {
            turn();
        }
        open
    }

    /// Closes the fence and waits (at most `LONGEST_WAIT`) for a turn under way to end; returns whether none is
    /// left. Async-signal-safe.
    pub(super) fn close(&self) -> bool {
        self.closed.store(true, Ordering::SeqCst);
        for _ in 0..LONGEST_WAIT.as_millis() / u128::from(WAIT_STEP_MILLIS) {
            if self.turns.load(Ordering::SeqCst) == 0 {
                return true;
            }
            let _ = poll(&mut [] as &mut [PollFd], PollTimeout::from(WAIT_STEP_MILLIS));
        }
        self.turns.load(Ordering::SeqCst) == 0
    }
}

/// A turn counted in `Fence::turns`, counted out when dropped.
struct TurnUnderWay<'a>(&'a AtomicU32);

impl Drop for TurnUnderWay<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn closing_waits_for_the_turn_under_way_and_stops_the_next() {
        let fence = Arc::new(Fence::new());
        let (entered, finished) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let turn = {
            let (fence, entered, finished) = (fence.clone(), entered.clone(), finished.clone());
            std::thread::spawn(move || {
                fence.pass(|| {
                    entered.store(true, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(100));
                    finished.store(true, Ordering::SeqCst);
                })
            })
        };
        while !entered.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        assert!(fence.close(), "the turn ended within the wait");
        assert!(finished.load(Ordering::SeqCst), "close returned before the turn under way ended");
        assert!(turn.join().unwrap());
        assert!(!fence.pass(|| panic!("a turn ran after the fence closed")));
    }

    #[test]
    fn closing_gives_up_on_a_turn_that_lasts() {
        let fence = Arc::new(Fence::new());
        let entered = Arc::new(AtomicBool::new(false));
        let turn = {
            let (fence, entered) = (fence.clone(), entered.clone());
            std::thread::spawn(move || {
                fence.pass(|| {
                    entered.store(true, Ordering::SeqCst);
                    std::thread::sleep(LONGEST_WAIT * 4);
                })
            })
        };
        while !entered.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        assert!(!fence.close(), "the wait is bounded");
        turn.join().unwrap();
    }
}
