//! The memory budget of a restore: per loader, the chunk's decompressor (its window grows with
//! the level the backup was written at), the pieces in flight to `COPY ... FROM STDIN`, and
//! for large objects their records. pg_restore and psql are child programs: not counted.

use crate::error::Result;
use crate::format::largeobj::PIECE;
use crate::format::manifest::{Manifest, StrategyKind};
use crate::memory::{fit, Budget, Item, Wanted};
use crate::storage::Store;

/// Payload pieces between a chunk's reader thread and its COPY: the channel's depth plus the
/// one being sent, 64 KiB each.
const COPY_PIECES: u64 = 9 * 64 * 1024;
/// Large-object records between reader and `lo_put`: the channel's depth plus the one in the
/// query, each up to one piece.
const LARGE_OBJECT_RECORDS: u64 = 6 * PIECE as u64;
/// age's STREAM decryption: one 64 KiB block and its output.
const DECRYPTION_BYTES: u64 = 192 * 1024;
/// An object store's response body in flight to a reader (a few HTTP frames).
const DOWNLOAD_BYTES: u64 = 1024 * 1024;

/// The budget of restoring `manifest` from `dir` with `wanted` loaders.
pub fn plan(
    limit: Option<u64>,
    wanted: Wanted,
    manifest: &Manifest,
    dir: &Store,
) -> Result<Budget> {
    let codec = manifest.options.codec;
    let level = manifest.options.level;
    let mut items = vec![Item::new(
        format!("{codec:?} level {level} decoder").to_lowercase(),
        codec.decompressor_memory(level),
    )];
    if manifest.large_objects.count > 0 && manifest.strategy.kind == StrategyKind::Native {
        items.push(Item::new(
            "COPY pieces or large-object records",
            COPY_PIECES.max(LARGE_OBJECT_RECORDS),
        ));
    } else {
        items.push(Item::new("COPY pieces", COPY_PIECES));
    }
    if !manifest.options.recipients.is_empty() {
        items.push(Item::new("decryption", DECRYPTION_BYTES));
    }
    if dir.uploads_in_parts() {
        items.push(Item::new("download", DOWNLOAD_BYTES));
    }
    // pg_dump's stream goes to one child through one reader, whatever --jobs says.
    let wanted = if manifest.strategy.kind == StrategyKind::Native {
        wanted
    } else {
        Wanted {
            workers: 1,
            explicit: false,
            ..wanted
        }
    };
    fit(limit, 1, wanted, |_| items.clone())
}
