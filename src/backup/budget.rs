//! The memory budget of a backup: every buffer a run holds, derived from `--memory-limit`.
//!
//! What grows with the work is per worker (native: a COPY stream and its chunk writer; stream
//! strategies: a compressor thread), so the budget is the process's own allowance plus workers
//! × their cost. Rows are not in it: no row is ever held whole (see `source::conn::split`),
//! so the cost of a worker does not depend on the data. A configuration that cannot fit is
//! refused naming the setting and the figures; defaults shrink to fit instead.

use crate::error::{Error, Result};
use crate::format::compress::{Codec, ZSTD_JOB_BYTES};
use crate::format::manifest::MemoryRecord;
use crate::memory::{describe, mib, sum, Item, PROCESS_BYTES};
use crate::source::conn::MAX_PIECE;
use crate::source::sink::{BATCH_BYTES, CHANNEL_BATCHES};

const MAX_PIECE_HINT: u64 = MAX_PIECE as u64;
use crate::storage::Store;

/// The socket's read buffer and the protocol library's: a few re-cut `CopyData` messages.
const PROTOCOL_BYTES: u64 = 16 * 1024 + 4 * MAX_PIECE_HINT;
/// Buffers of a chunk writer that writes through to a file (hashing, encryption's blocks).
const WRITER_BYTES: u64 = 256 * 1024;
/// age's STREAM encryption: one 64 KiB block and its output.
const ENCRYPTION_BYTES: u64 = 192 * 1024;
/// The pg_dump stream's read buffer and the piece being cut.
const STREAM_BYTES: u64 = 2 * crate::format::stream::IO_BUF as u64;

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
    /// The budget of a native backup: `wanted` COPY workers, each with its compressor, buffers
    /// and chunk writer. Sets the store's upload parallelism to what fits.
    pub fn native(
        limit: Option<u64>,
        backups_at_once: usize,
        wanted: Wanted,
        codec: Codec,
        level: i32,
        out: &Store,
    ) -> Result<Budget> {
        let base = |parts: usize| -> Vec<Item> {
            let mut items = vec![
                Item::new(
                    format!("{codec:?} level {level}").to_lowercase(),
                    codec.compressor_memory(level),
                ),
                Item::new(
                    "COPY buffers",
                    PROTOCOL_BYTES
                        + (CHANNEL_BATCHES as u64 + 1) * (BATCH_BYTES as u64 + MAX_PIECE_HINT),
                ),
                Item::new("chunk writer", WRITER_BYTES),
            ];
            if !out.sealing().recipients().is_empty() {
                items.push(Item::new("encryption", ENCRYPTION_BYTES));
            }
            if out.uploads_in_parts() {
                items.push(Item::new(
                    format!("upload parts ({} in flight)", parts),
                    out.writer_buffer(parts),
                ));
            }
            items
        };
        let budget = fit(limit, backups_at_once, wanted, base)?;
        out.set_parts_in_flight(budget.parts_in_flight);
        Ok(budget)
    }

    /// The budget of a plain/custom backup: pg_dump's stream through `wanted` compressor
    /// threads into one chunk writer.
    pub fn stream(
        limit: Option<u64>,
        backups_at_once: usize,
        wanted: Wanted,
        codec: Codec,
        level: i32,
        out: &Store,
    ) -> Result<Budget> {
        let per_thread = match codec {
            // A thread's context, its input job and its output.
            Codec::Zstd => codec.compressor_memory(level) + 2 * ZSTD_JOB_BYTES,
            // gzp: a compressor and a few 128 KiB blocks per thread.
            Codec::Gzip => codec.compressor_memory(level) + 4 * 128 * 1024,
            Codec::None => 0,
        };
        let wanted = if codec == Codec::None {
            Wanted {
                workers: 1,
                ..wanted
            }
        } else {
            wanted
        };
        // The single writer's buffers are counted as part of the first thread's share: with
        // one thread they are what the stream costs.
        let writer = WRITER_BYTES
            + STREAM_BYTES
            + out.writer_buffer(1)
            + if out.sealing().recipients().is_empty() {
                0
            } else {
                ENCRYPTION_BYTES
            };
        let threads = Wanted {
            workers: wanted.workers,
            ..wanted
        };
        let mut budget = fit(limit, backups_at_once, threads, |_| {
            vec![Item::new(
                format!("{codec:?} level {level} thread").to_lowercase(),
                per_thread + writer / wanted.workers.max(1) as u64,
            )]
        })?;
        budget.compressor_threads = if codec == Codec::None {
            0
        } else {
            budget.workers
        };
        out.set_parts_in_flight(1);
        budget.parts_in_flight = 1;
        Ok(budget)
    }

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

    /// The manifest's record, with the peaks measured at the end.
    pub fn record(&self) -> MemoryRecord {
        MemoryRecord {
            limit_bytes: self.limit,
            planned_bytes: self.planned_bytes(),
            workers: self.workers,
            compressor_threads: self.compressor_threads,
            parts_in_flight: self.parts_in_flight,
            peak_rss_bytes: crate::memory::peak_rss_bytes(),
            children_peak_rss_bytes: crate::memory::children_peak_rss_bytes(),
        }
    }
}

/// Fits `wanted` workers of cost `per_worker(parts_in_flight)` into `limit`: fewer upload parts
/// in flight first, then (when the number was not chosen by the user) fewer workers.
fn fit(
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
    for parts in [2, 1] {
        let b = make(wanted_workers, parts);
        if fits(&b) {
            return Ok(b);
        }
    }
    if !wanted.explicit {
        for workers in (1..wanted_workers).rev() {
            let b = make(workers, 1);
            if fits(&b) {
                return Ok(b);
            }
        }
    }
    let tight = make(wanted_workers, 1);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::local(std::path::Path::new("/nonexistent"))
    }

    fn wanted(workers: usize, explicit: bool) -> Wanted {
        Wanted {
            workers,
            explicit,
            flag: "--parallel-tables",
        }
    }

    #[test]
    fn no_limit_keeps_what_was_asked() {
        let b = Budget::native(None, 1, wanted(64, true), Codec::Zstd, 3, &store()).unwrap();
        assert_eq!(b.workers, 64);
        assert!(b.line().contains("no memory limit"), "{}", b.line());
    }

    #[test]
    fn explicit_workers_that_do_not_fit_are_refused_with_the_figures() {
        let err = Budget::native(
            Some(32 << 20),
            1,
            wanted(16, true),
            Codec::Zstd,
            3,
            &store(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--memory-limit 32.0 MiB cannot hold --parallel-tables 16"),
            "{err}"
        );
        assert!(err.contains("zstd level 3"), "{err}");
        assert!(err.contains("lower --parallel-tables to"), "{err}");
    }

    #[test]
    fn default_workers_shrink_to_fit() {
        let b = Budget::native(
            Some(32 << 20),
            1,
            wanted(16, false),
            Codec::Zstd,
            3,
            &store(),
        )
        .unwrap();
        assert!(b.workers >= 1 && b.workers < 16, "{}", b.workers);
        assert!(b.planned_bytes() <= 32 << 20);
    }

    #[test]
    fn high_levels_cost_more_and_a_cluster_shares_the_limit() {
        let low = Budget::native(None, 1, wanted(4, true), Codec::Zstd, 3, &store()).unwrap();
        let high = Budget::native(None, 1, wanted(4, true), Codec::Zstd, 19, &store()).unwrap();
        assert!(high.planned_bytes() > low.planned_bytes() + 4 * (16 << 20));
        let shared = Budget::native(None, 3, wanted(4, true), Codec::Zstd, 3, &store()).unwrap();
        assert!(shared.planned_bytes() > 2 * low.planned_bytes() - PROCESS_BYTES);
        let err = Budget::native(
            Some(64 << 20),
            1,
            wanted(1, true),
            Codec::Zstd,
            19,
            &store(),
        );
        assert!(
            err.is_err(),
            "zstd 19 needs more than 64 MiB with the process"
        );
    }
}
