//! Memory of a process from `/proc/PID/smaps_rollup`, in the terms of `smem`: RSS, PSS, and USS (the private
//! pages, clean and dirty).

use serde::Serialize;

/// One process's memory, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct Memory {
    pub uss_kib: u64,
    pub pss_kib: u64,
    pub rss_kib: u64,
}

impl Memory {
    /// `None` when the process is gone or its rollup cannot be read.
    pub(crate) fn of(pid: i32) -> Option<Memory> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
        let field = |name: &str| -> u64 {
            text.lines()
                .filter_map(|line| line.strip_prefix(name))
                .filter_map(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .sum()
        };
        Some(Memory {
            uss_kib: field("Private_Clean:") + field("Private_Dirty:"),
            pss_kib: field("Pss:"),
            rss_kib: field("Rss:"),
        })
    }

    /// The mean over several processes (0 for none).
    pub(crate) fn mean(memories: &[Memory]) -> Memory {
        let count = memories.len().max(1) as u64;
        let sum = |pick: fn(&Memory) -> u64| memories.iter().map(pick).sum::<u64>() / count;
        Memory { uss_kib: sum(|m| m.uss_kib), pss_kib: sum(|m| m.pss_kib), rss_kib: sum(|m| m.rss_kib) }
    }
}

/// The role of a process in a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    Arbiter,
    Worker,
}

/// A server's memory at one moment: the arbiter and each worker.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    pub arbiter: Memory,
    pub workers: Vec<(i32, Memory)>,
    pub arbiter_pid: i32,
}

impl Snapshot {
    pub(crate) fn take(arbiter_pid: i32, worker_pids: &[i32]) -> Snapshot {
        let workers = worker_pids.iter().filter_map(|&pid| Memory::of(pid).map(|memory| (pid, memory))).collect();
        Snapshot { arbiter: Memory::of(arbiter_pid).unwrap_or_default(), workers, arbiter_pid }
    }

    pub(crate) fn worker_mean(&self) -> Memory {
        let memories: Vec<Memory> = self.workers.iter().map(|(_, memory)| *memory).collect();
        Memory::mean(&memories)
    }
}
