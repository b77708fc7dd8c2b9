//! The writer side of a unit's data path: a plain thread that takes batches of [`Piece`]s from
//! a bounded channel, compresses and hashes them into chunk files, and returns the finished
//! chunks. The bounded channel is what keeps memory constant: a slow disk or compressor makes
//! the COPY reader wait instead of buffering.

use tokio::sync::mpsc;

use crate::error::Result;
use crate::format::chunk::ChunkWriter;
use crate::format::compress::Codec;
use crate::format::copyfmt::Piece;
use crate::format::manifest::Chunk;

/// Batches in flight per unit. With batches of ~256 KiB this bounds a unit's buffered data to
/// a few MiB (plus one row, which the protocol delivers whole).
pub const CHANNEL_BATCHES: usize = 2;
/// A reader sends its batch once it holds this many bytes.
pub const BATCH_BYTES: usize = 128 * 1024;

/// Where and how a unit's chunks are written.
#[derive(Clone)]
pub struct SinkConfig {
    pub root: crate::storage::Store,
    /// Directory of the chunks, relative to `root`.
    pub dir: String,
    /// File name stem; chunks are `<dir>/<stem>-<seq>.<kind><codec ext>`.
    pub stem: String,
    pub kind: &'static str,
    pub codec: Codec,
    pub level: i32,
    /// zstd worker threads per stream (0 = compress on the sink thread).
    pub threads: u32,
}

impl SinkConfig {
    fn rel(&self, seq: u32) -> String {
        format!(
            "{}/{}-{:05}.{}{}",
            self.dir,
            self.stem,
            seq,
            self.kind,
            self.codec.extension()
        )
    }
}

/// Starts the writer thread; send batches, drop the sender, then await the handle.
pub fn spawn_sink(
    cfg: SinkConfig,
) -> (
    mpsc::Sender<Vec<Piece>>,
    tokio::task::JoinHandle<Result<Vec<Chunk>>>,
) {
    let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
    let handle = tokio::task::spawn_blocking(move || run_sink(cfg, rx));
    (tx, handle)
}

fn run_sink(cfg: SinkConfig, mut rx: mpsc::Receiver<Vec<Piece>>) -> Result<Vec<Chunk>> {
    cfg.root.create_dir(&cfg.dir)?;
    let mut chunks = Vec::new();
    let mut current: Option<ChunkWriter> = None;
    let open =
        |seq: u32| ChunkWriter::create(&cfg.root, &cfg.rel(seq), cfg.codec, cfg.level, cfg.threads);
    while let Some(batch) = rx.blocking_recv() {
        for piece in batch {
            match piece {
                Piece::Data(bytes) => {
                    if current.is_none() {
                        current = Some(open(chunks.len() as u32)?);
                    }
                    current.as_mut().expect("opened").write(&bytes)?;
                }
                Piece::EndChunk { rows, .. } => {
                    // A chunk with no bytes (text COPY of an empty table) is still a chunk.
                    let writer = match current.take() {
                        Some(w) => w,
                        None => open(chunks.len() as u32)?,
                    };
                    chunks.push(writer.finish(rows)?);
                }
            }
        }
    }
    // The sender is gone. An unfinished chunk here means the reader failed or was cancelled:
    // dropping the writer deletes its temp file.
    drop(current);
    Ok(chunks)
}

/// Removes chunk files of an abandoned attempt.
pub fn remove_chunks(root: &crate::storage::Store, chunks: &[Chunk]) {
    for c in chunks {
        let _ = root.delete(&c.file);
    }
}

/// Joins a unit's reading side with its sink thread. `read` is the reader's outcome: `Ok(true)`
/// when it delivered everything, `Ok(false)` when the sink stopped taking batches. Returns the
/// chunks, or the first error (the sink's error explains a stopped sink), after removing the
/// files of the failed attempt.
pub async fn join_unit(
    read: Result<bool>,
    handle: tokio::task::JoinHandle<Result<Vec<Chunk>>>,
    root: &crate::storage::Store,
    what: &str,
) -> Result<Vec<Chunk>> {
    let written = handle.await.expect("sink thread panicked");
    match (read, written) {
        (Ok(true), Ok(chunks)) => Ok(chunks),
        (Ok(_), Err(e)) => Err(e),
        (Ok(false), Ok(chunks)) => {
            remove_chunks(root, &chunks);
            Err(crate::error::Error::Refused(format!(
                "{what}: the chunk writer stopped early"
            )))
        }
        (Err(e), written) => {
            if let Ok(chunks) = written {
                remove_chunks(root, &chunks);
            }
            Err(e)
        }
    }
}
