//! What the metrics process reads from /proc: a process's resident memory, CPU time, start time and open
//! descriptors (the arbiter's own process metrics, and each worker's memory). Each reading is
//! `None` when the file cannot be read or parsed: a metric goes missing rather than lying.

use std::fs;

/// A process's figures.
#[derive(Debug, Default)]
pub(super) struct ProcessStats {
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub cpu_seconds: f64,
    pub start_time_seconds: f64,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

/// The page size and clock ticks per second, as the kernel counts in /proc.
fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().map_or(4096, |size| size as u64)
}

fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().map_or(100.0, |ticks| ticks as f64)
}

/// The resident memory of process `pid`, in bytes.
pub(super) fn resident_bytes(pid: u32) -> Option<u64> {
    let statm = fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// Process `pid`'s figures.
pub(super) fn process(pid: u32) -> Option<ProcessStats> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: the fields that matter come after its last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Field numbers as proc(5) gives them, less the two before and including the name.
    let field = |number: usize| -> Option<u64> { fields.get(number - 3)?.parse().ok() };
    let ticks = ticks_per_second();
    let cpu_seconds = (field(14)? + field(15)?) as f64 / ticks;
    let start_time_seconds = boot_time()? + field(22)? as f64 / ticks;
    let virtual_bytes = field(23)?;
    let resident_bytes = field(24)? * page_size();
    let open_fds = fs::read_dir(format!("/proc/{pid}/fd")).ok().map(|entries| entries.count() as u64);
    Some(ProcessStats {
        resident_bytes,
        virtual_bytes,
        cpu_seconds,
        start_time_seconds,
        open_fds,
        max_fds: max_fds(pid),
    })
}

fn boot_time() -> Option<f64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    stat.lines().find_map(|line| line.strip_prefix("btime "))?.trim().parse().ok()
}

fn max_fds(pid: u32) -> Option<u64> {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_can_be_read() {
        let stats = process(std::process::id()).unwrap();
        assert!(stats.resident_bytes > 0 && stats.virtual_bytes >= stats.resident_bytes);
        assert!(stats.start_time_seconds > 1_000_000_000.0);
        assert!(stats.open_fds.unwrap() >= 3 && stats.max_fds.unwrap() > 0);
        assert!(resident_bytes(std::process::id()).unwrap() > 0);
    }
}
