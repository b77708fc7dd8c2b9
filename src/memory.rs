//! What the process holds: resident set sizes as the kernel counts them, sizes as people read
//! them, and the [`Budget`] that keeps a run under `--memory-limit`: the process's allowance
//! plus workers × what one worker holds. The operations say what a worker holds
//! (`backup::budget`, `restore::budget`); fitting, messages and the record are here.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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

/// What `--memory-limit` allowed and what the run used.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MemoryRecord {
    /// `None` for `--memory-limit 0` (no limit).
    pub limit_bytes: Option<u64>,
    /// What the plan holds at most, the process's allowance included.
    pub planned_bytes: u64,
    /// COPY workers (native) or the stream's compressor threads' count.
    pub workers: usize,
    pub compressor_threads: usize,
    /// Object stores: parts of one object uploading at once.
    pub parts_in_flight: usize,
    /// Peak resident set size of dbbackup itself during the run (`getrusage`).
    pub peak_rss_bytes: u64,
    /// The largest peak among its child programs (pg_dump); not counted against the limit.
    pub children_peak_rss_bytes: u64,
}

impl MemoryRecord {
    /// A record of the peaks measured now, with no plan of its own (a run made of several
    /// planned parts: a cluster backup).
    pub fn peaks_now(limit_bytes: Option<u64>) -> MemoryRecord {
        MemoryRecord {
            limit_bytes,
            planned_bytes: 0,
            workers: 0,
            compressor_threads: 0,
            parts_in_flight: 0,
            peak_rss_bytes: peak_rss_bytes(),
            children_peak_rss_bytes: children_peak_rss_bytes(),
        }
    }
}

/// How many workers a run asks for, and whether the user chose the number.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub workers: usize,
    /// Given on the command line: refused when it does not fit, never shrunk.
    pub explicit: bool,
    /// The flag that sets it, for messages (`--parallel-tables`).
    pub flag: &'static str,
}

/// What a run may hold, and how the limit was spent.
#[derive(Debug, Clone)]
pub struct Budget {
    pub limit: Option<u64>,
    /// Backups running at once in this process (cluster `--jobs`); each gets an equal share.
    pub backups_at_once: usize,
    pub workers: usize,
    pub per_worker: Vec<Item>,
    /// Object stores: parts of one object uploading at once while the next fills.
    pub parts_in_flight: usize,
    /// The stream strategies' compressor threads (0 for native backups).
    pub compressor_threads: usize,
}

impl Budget {
    /// Bytes the plan holds at most, the process's allowance included.
    pub fn planned_bytes(&self) -> u64 {
        PROCESS_BYTES + self.backups_at_once as u64 * self.workers as u64 * sum(&self.per_worker)
    }

    /// The probe's memory line: the limit and what it allows.
    pub fn line(&self) -> String {
        let limit = match self.limit {
            Some(l) => format!("limit {}", mib(l)),
            None => "no memory limit".to_string(),
        };
        let what = if self.compressor_threads > 0 {
            format!("{} compressor threads", self.compressor_threads)
        } else {
            format!("{} workers", self.workers)
        };
        let at_once = if self.backups_at_once > 1 {
            format!(" in each of {} databases at once", self.backups_at_once)
        } else {
            String::new()
        };
        format!(
            "memory: {limit}: {what}{at_once} × {} ({}), process {}; planned {}",
            mib(sum(&self.per_worker)),
            describe(&self.per_worker),
            mib(PROCESS_BYTES),
            mib(self.planned_bytes())
        )
    }

    /// The manifest's record, with the peaks measured now (at the end of the run).
    pub fn record(&self) -> MemoryRecord {
        MemoryRecord {
            limit_bytes: self.limit,
            planned_bytes: self.planned_bytes(),
            workers: self.workers,
            compressor_threads: self.compressor_threads,
            parts_in_flight: self.parts_in_flight,
            peak_rss_bytes: peak_rss_bytes(),
            children_peak_rss_bytes: children_peak_rss_bytes(),
        }
    }
}

/// Fits `wanted` workers of cost `per_worker(parts_in_flight)` into `limit`: fewer upload parts
/// in flight first, then (when the number was not chosen by the user) fewer workers.
pub fn fit(
    limit: Option<u64>,
    backups_at_once: usize,
    wanted: Wanted,
    per_worker: impl Fn(usize) -> Vec<Item>,
) -> Result<Budget> {
    let at_once = backups_at_once.max(1);
    let wanted_workers = wanted.workers.max(1);
    let make = |workers: usize, parts: usize| Budget {
        limit,
        backups_at_once: at_once,
        workers,
        per_worker: per_worker(parts),
        parts_in_flight: parts,
        compressor_threads: 0,
    };
    let Some(limit) = limit else {
        return Ok(make(wanted_workers, 2));
    };
    let fits = |b: &Budget| b.planned_bytes() <= limit;
    for parts in [2, 1, 0] {
        let b = make(wanted_workers, parts);
        if fits(&b) {
            return Ok(b);
        }
    }
    if !wanted.explicit {
        for workers in (1..wanted_workers).rev() {
            let b = make(workers, 0);
            if fits(&b) {
                return Ok(b);
            }
        }
    }
    let tight = make(wanted_workers, 0);
    let one = sum(&tight.per_worker);
    let room = limit.saturating_sub(PROCESS_BYTES) / at_once as u64;
    let fitting = (room / one.max(1)) as usize;
    let advice = if fitting >= 1 {
        format!(
            "lower {} to {fitting} or raise --memory-limit to {}",
            wanted.flag,
            flag_size(tight.planned_bytes())
        )
    } else {
        format!(
            "raise --memory-limit to {}",
            flag_size(make(1, 1).planned_bytes())
        )
    };
    let at_once_text = if at_once > 1 {
        format!(" in each of {at_once} databases at once")
    } else {
        String::new()
    };
    Err(Error::Usage(format!(
        "--memory-limit {} cannot hold {} {}{at_once_text}: each needs {} ({}), the process \
         itself {}, {} in all; {advice}",
        mib(limit),
        wanted.flag,
        wanted_workers,
        mib(one),
        describe(&tight.per_worker),
        mib(PROCESS_BYTES),
        mib(tight.planned_bytes()),
    )))
}

/// A size as `--memory-limit` takes it, rounded up to whole MiB: `94MiB`.
fn flag_size(bytes: u64) -> String {
    format!("{}MiB", bytes.div_ceil(1024 * 1024))
}
