//! The memory budget of a backup: every buffer a run holds, derived from `--memory-limit`.
//!
//! What grows with the work is per worker (native: a COPY stream and its chunk writer; stream
//! strategies: a compressor thread), so the budget is the process's own allowance plus workers
//! × their cost. Rows are not in it: no row is ever held whole (see `source::conn::split`),
//! so the cost of a worker does not depend on the data. A configuration that cannot fit is
//! refused naming the setting and the figures; defaults shrink to fit instead.

use crate::error::Result;
use crate::format::compress::{Codec, ZSTD_JOB_BYTES};
use crate::memory::{fit, Budget, Item, Wanted};
use crate::source::conn::MAX_PIECE;
use crate::source::sink::{BATCH_BYTES, CHANNEL_BATCHES};
use crate::storage::Store;

/// The socket's read buffer and the protocol library's: a few re-cut `CopyData` messages.
const PROTOCOL_BYTES: u64 = 16 * 1024 + 4 * MAX_PIECE as u64;
/// Buffers of a chunk writer that writes through to a file (hashing, encryption's blocks).
const WRITER_BYTES: u64 = 256 * 1024;
/// age's STREAM encryption: one 64 KiB block and its output.
const ENCRYPTION_BYTES: u64 = 192 * 1024;
/// The pg_dump stream's read buffer and the piece being cut.
const STREAM_BYTES: u64 = 2 * crate::format::stream::IO_BUF as u64;

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
    let per_worker = |parts: usize| -> Vec<Item> {
        let mut items = vec![
            Item::new(
                format!("{codec:?} level {level}").to_lowercase(),
                codec.compressor_memory(level),
            ),
            Item::new(
                "COPY buffers",
                PROTOCOL_BYTES
                    + (CHANNEL_BATCHES as u64 + 1) * (BATCH_BYTES as u64 + MAX_PIECE as u64),
            ),
            Item::new("chunk writer", WRITER_BYTES),
        ];
        if !out.sealing().recipients().is_empty() {
            items.push(Item::new("encryption", ENCRYPTION_BYTES));
        }
        if out.uploads_in_parts() {
            items.push(Item::new(
                format!("upload parts ({parts} in flight)"),
                out.writer_buffer(parts),
            ));
        }
        items
    };
    let budget = fit(limit, backups_at_once, wanted, per_worker)?;
    out.set_parts_in_flight(budget.parts_in_flight);
    Ok(budget)
}

/// The budget of a plain/custom backup: pg_dump's stream through `wanted` compressor threads
/// into one chunk writer. The writer's buffers are counted in every thread's share: an upper
/// bound that stays one when the threads are shrunk to fit.
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
    out.set_parts_in_flight(1);
    let mut writer = WRITER_BYTES + STREAM_BYTES + out.writer_buffer(1);
    if !out.sealing().recipients().is_empty() {
        writer += ENCRYPTION_BYTES;
    }
    let mut budget = fit(limit, backups_at_once, wanted, |_| {
        vec![
            Item::new(
                format!("{codec:?} level {level} thread").to_lowercase(),
                per_thread,
            ),
            Item::new("stream writer", writer),
        ]
    })?;
    budget.compressor_threads = if codec == Codec::None {
        0
    } else {
        budget.workers
    };
    budget.parts_in_flight = 1;
    Ok(budget)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::PROCESS_BYTES;

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

    /// A native budget at zstd level 3 into a local directory.
    fn zstd3(limit: Option<u64>, workers: usize, explicit: bool) -> Result<Budget> {
        native(
            limit,
            1,
            wanted(workers, explicit),
            Codec::Zstd,
            3,
            &store(),
        )
    }

    #[test]
    fn no_limit_keeps_what_was_asked() {
        let b = zstd3(None, 64, true).unwrap();
        assert_eq!(b.workers, 64);
        assert!(b.line().contains("no memory limit"), "{}", b.line());
    }

    #[test]
    fn explicit_workers_that_do_not_fit_are_refused_with_the_figures() {
        let err = zstd3(Some(32 << 20), 16, true).unwrap_err().to_string();
        assert!(
            err.contains("--memory-limit 32.0 MiB cannot hold --parallel-tables 16"),
            "{err}"
        );
        assert!(err.contains("zstd level 3"), "{err}");
        assert!(err.contains("lower --parallel-tables to"), "{err}");
    }

    #[test]
    fn default_workers_shrink_to_fit() {
        let b = zstd3(Some(32 << 20), 16, false).unwrap();
        assert!(b.workers >= 1 && b.workers < 16, "{}", b.workers);
        assert!(b.planned_bytes() <= 32 << 20);
    }

    #[test]
    fn high_levels_cost_more_and_a_cluster_shares_the_limit() {
        let low = native(None, 1, wanted(4, true), Codec::Zstd, 3, &store()).unwrap();
        let high = native(None, 1, wanted(4, true), Codec::Zstd, 19, &store()).unwrap();
        assert!(high.planned_bytes() > low.planned_bytes() + 4 * (16 << 20));
        let shared = native(None, 3, wanted(4, true), Codec::Zstd, 3, &store()).unwrap();
        assert!(shared.planned_bytes() > 2 * low.planned_bytes() - PROCESS_BYTES);
        let err = native(
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
