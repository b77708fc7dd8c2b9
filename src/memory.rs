//! What the process holds: resident set sizes as the kernel counts them, and sizes as people
//! read them. The budgets that keep a run under `--memory-limit` are in the operations
//! (`backup::budget`, `restore::budget`); this is what they are measured against.

/// The limit when `--memory-limit` is not given.
pub const DEFAULT_LIMIT: u64 = 128 * 1024 * 1024;

/// Allowance for the process itself: code, the async runtime and its threads, TLS and S3
/// clients, the manifest, the allocator's slack. A release build doing a backup of an empty
/// database peaks at 12-14 MiB; the rest is margin.
pub const PROCESS_BYTES: u64 = 20 * 1024 * 1024;

/// Peak resident set size of this process so far (`getrusage`, `ru_maxrss`).
pub fn peak_rss_bytes() -> u64 {
    rusage_maxrss(libc::RUSAGE_SELF)
}

/// The largest peak resident set size among this process's finished children (pg_dump,
/// pg_restore, psql): reported apart, never counted against the limit.
pub fn children_peak_rss_bytes() -> u64 {
    rusage_maxrss(libc::RUSAGE_CHILDREN)
}

fn rusage_maxrss(who: libc::c_int) -> u64 {
    // SAFETY: getrusage fills the struct it is given and nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return 0;
    }
    // Linux reports kilobytes.
    (usage.ru_maxrss.max(0) as u64) * 1024
}

/// `12.3 MiB`.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The limit as given: `None` for `--memory-limit 0` (no limit).
pub fn limit_from(bytes: u64) -> Option<u64> {
    (bytes > 0).then_some(bytes)
}

/// One part of a budget, e.g. ("zstd level 3", 1.3 MiB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub what: String,
    pub bytes: u64,
}

impl Item {
    pub fn new(what: impl Into<String>, bytes: u64) -> Self {
        Item {
            what: what.into(),
            bytes,
        }
    }
}

/// `zstd level 3 1.3 MiB + buffers 0.9 MiB`.
pub fn describe(items: &[Item]) -> String {
    items
        .iter()
        .map(|i| format!("{} {}", i.what, mib(i.bytes)))
        .collect::<Vec<_>>()
        .join(" + ")
}

pub fn sum(items: &[Item]) -> u64 {
    items.iter().map(|i| i.bytes).sum()
}
