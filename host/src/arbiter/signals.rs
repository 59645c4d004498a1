//! The arbiter's signals, read from a signalfd instead of handlers: the signals are blocked and queue up in the
//! descriptor, so the main loop handles them one by one with no async-signal-safety concerns.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

use anyhow::Context;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// The signals the arbiter handles.
const HANDLED: &[Signal] = &[
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

pub(super) struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Blocks the handled signals and opens the descriptor they are read from.
    pub(super) fn install() -> anyhow::Result<Signals> {
        let mask = handled_set();
        mask.thread_block().context("cannot block signals")?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .context("cannot open a signalfd")?;
        Ok(Signals { fd })
    }

    /// The descriptor a forked child must close.
    pub(super) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Waits up to `timeout` for signals and returns those that arrived, in order.
    pub(super) fn wait(&mut self, timeout: Duration) -> Vec<Signal> {
        let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        // An error here is EINTR, which just means: look again.
        let _ = poll(&mut fds, PollTimeout::from(millis));
        let mut arrived = Vec::new();
        while let Ok(Some(info)) = self.fd.read_signal() {
            if let Ok(signal) = Signal::try_from(info.ssi_signo as i32) {
                arrived.push(signal);
            }
        }
        arrived
    }
}

fn handled_set() -> SigSet {
    let mut set = SigSet::empty();
    for signal in HANDLED {
        set.add(*signal);
    }
    set
}

/// Gunicorn's name for a signal in log lines (`Handling signal: term`).
pub(super) fn short_name(signal: Signal) -> String {
    signal.as_str().trim_start_matches("SIG").to_ascii_lowercase()
}
