//! The channels of pools a reload removed (an app gone, or moved to the shared pool), and of the new pools of a
//! reload that failed: workers of the retired generations may still have connections waiting in them, or hand
//! one over before they see they are retired. Dropping such a channel would close those connections unanswered.
//! So until those workers are gone (the graceful timeout, and a margin), the arbiter moves what waits there to
//! the shared pool, whose workers route it by the apps now served; during a stop it answers it `503`.

use std::time::{Duration, Instant};

use super::pools;
use super::state::Arbiter;
use crate::log;
use crate::site::PoolKey;
use crate::worker::Channel;

/// How long past the graceful timeout an orphaned channel is kept: the retired workers are killed by then.
const MARGIN: Duration = Duration::from_secs(2);

/// A channel no pool of the current site uses, watched until `until`.
pub(super) struct Orphan {
    pool: PoolKey,
    channel: Channel,
    until: Instant,
}

impl Arbiter {
    /// Takes the channels the current site no longer uses out of the pools' channels, to be watched as orphans.
    pub(super) fn orphan_unused_channels(&mut self) {
        let until = Instant::now() + self.config.graceful_timeout + MARGIN;
        for (pool, channel) in pools::take_unused_channels(&self.config.site, &mut self.channels) {
            self.orphans.push(Orphan { pool, channel, until });
        }
        self.forward_orphaned();
    }

    /// The descriptors of the orphaned channels, both ends: a worker forked now, of a pool of the current site,
    /// neither sends into them nor reads them, and its copies would keep them open after the arbiter lets them go.
    pub(super) fn orphaned_fds(&self) -> impl Iterator<Item = std::os::fd::RawFd> + '_ {
        self.orphans.iter().flat_map(|orphan| orphan.channel.raw_fds())
    }

    /// Moves what waits in the orphaned channels to the shared pool (answers it `503` during a stop), and forgets
    /// the orphans whose time is up. Never waits.
    pub(super) fn forward_orphaned(&mut self) {
        let shared = self.channels.get(&PoolKey::Shared).filter(|_| self.stop.is_none());
        for orphan in &self.orphans {
            let (moved, answered) = match shared {
                Some(shared) => orphan.channel.forward_waiting(shared),
                None => (0, orphan.channel.answer_waiting()),
            };
            if moved > 0 {
                log::info(format_args!("Passed {moved} connections waiting for {} to the shared pool", orphan.pool));
            }
            if answered > 0 {
                log::info(format_args!("Answered {answered} connections waiting for {} 503", orphan.pool));
            }
        }
        let now = Instant::now();
        self.orphans.retain(|orphan| orphan.until > now);
    }
}
