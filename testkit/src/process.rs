//! Limits a test process sets on itself.

use anyhow::Context;
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Lets this process map at most `more` bytes beyond what it maps now
/// (`RLIMIT_AS`), so that an allocation of a size a peer announced (say
/// 4 GiB) fails, and aborts the process, instead of going unnoticed on a
/// machine with memory to spare. Lasts for the rest of the process:
/// nextest runs every test in a process of its own.
pub fn bound_address_space(more: u64) -> anyhow::Result<()> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmSize:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmSize in /proc/self/status")?;
    let limit = Rlimit {
        current: Some(kib.saturating_mul(1024).saturating_add(more)),
        maximum: getrlimit(Resource::As).maximum,
    };
    setrlimit(Resource::As, limit).context("cannot set RLIMIT_AS")?;
    Ok(())
}
