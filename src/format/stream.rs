//! The pg_dump stream format: pg_dump's output (`-Fp` plain or `-Fc -Z0` custom) compressed as
//! one stream whose *stored* bytes are cut into files of `--chunk-size` by [`RotatingChunkSink`]:
//! each file written under a temp name, fsynced, SHA-256'd and renamed (a [`ChunkWriter`] with
//! [`Codec::None`] per piece). The pieces are listed in order in `Manifest.stream`; each records
//! the stream's codec, which applies to their concatenation, not to a piece alone. A piece's
//! `raw_bytes` is an apportionment (by stored size); only their sum, the size of pg_dump's
//! output, is exact.
//!
//! The pieces concatenated and decompressed are byte for byte pg_dump's output, so stock tools
//! restore them:
//!
//! ```text
//! cat DIR/stream/pg_dump.sql.zst.* | zstd -dc | psql -X -v ON_ERROR_STOP=1 -d TARGET
//! cat DIR/stream/pg_dump.dump.zst.* | zstd -dc | pg_restore -d TARGET
//! ```
//!
//! (`gzip -dc` for `.gz`, nothing for uncompressed backups.)
//!
//! Reading back ([`StreamReader`]) checks each piece's size and SHA-256 as it goes;
//! [`crate::verify`] reads the whole stream that way. Restore ([`crate::restore::stream`]) and
//! verify share this reader; the writer side is [`crate::backup::stream`].

use std::io::{self, BufReader, Read, Write};
use std::path::PathBuf;

use crate::storage::Store;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::chunk::{ChunkReader, ChunkWriter};
use crate::format::compress::{Codec, Decoder};
use crate::format::manifest::{Chunk, Manifest, StrategyKind};

/// Directory of the stream pieces inside the backup directory.
pub const STREAM_DIR: &str = "stream";
/// Size of the reads from pg_dump's pipe and of the writes into psql/pg_restore.
pub(crate) const IO_BUF: usize = 256 * 1024;

/// `stream/pg_dump.sql.zst` (plain) or `stream/pg_dump.dump.zst` (custom): the pieces are this
/// plus `.000001`, `.000002`, … so that a shell glob lists them in order.
pub fn stream_prefix(kind: StrategyKind, codec: Codec) -> String {
    let ext = match kind {
        StrategyKind::Custom => ".dump",
        _ => ".sql",
    };
    format!("{STREAM_DIR}/pg_dump{ext}{}", codec.extension())
}

/// The one-line shell recipe that restores a stream backup in `dir` with stock tools.
/// An encrypted backup's pieces are one age file each: decrypted one by one, in order.
pub fn stock_restore_recipe(
    dir: &Store,
    kind: StrategyKind,
    codec: Codec,
    encrypted: bool,
) -> String {
    let decompress = match codec {
        Codec::Zstd => " | zstd -dc",
        Codec::Gzip => " | gzip -dc",
        Codec::None => "",
    };
    let tool = match kind {
        StrategyKind::Custom => "pg_restore -d TARGET",
        _ => "psql -X -v ON_ERROR_STOP=1 -d TARGET",
    };
    let pieces = format!("{}/{}.*", dir.display(), stream_prefix(kind, codec));
    if encrypted {
        return format!(
            "for f in {pieces}; do age -d -i KEY_FILE \"$f\"; done{decompress} | {tool}"
        );
    }
    format!("cat {pieces}{decompress} | {tool}")
}

// ---------------------------------------------------------------------------------------------
// Writing: the stored-byte chunking
// ---------------------------------------------------------------------------------------------

/// A `Write` of a compressed stream's stored bytes that cuts them into chunk files of
/// `chunk_size` bytes each (the last one shorter). Every finished file is fsynced and renamed
/// into place by its [`ChunkWriter`].
pub struct RotatingChunkSink {
    root: Store,
    prefix: String,
    codec: Codec,
    chunk_size: u64,
    current: Option<ChunkWriter>,
    current_stored: u64,
    /// Uncompressed bytes fed into the compressor (by the producer).
    fed: Arc<AtomicU64>,
    done: Vec<Chunk>,
}

impl RotatingChunkSink {
    /// Pieces go to `root/prefix.000001`, …; `codec` is the codec of the whole stream, recorded
    /// on every piece. `fed` counts the uncompressed bytes (for the pieces' `raw_bytes`).
    pub fn new(
        root: &Store,
        prefix: &str,
        codec: Codec,
        chunk_size: u64,
        fed: Arc<AtomicU64>,
    ) -> Self {
        RotatingChunkSink {
            root: root.clone(),
            prefix: prefix.to_string(),
            codec,
            chunk_size: chunk_size.max(1),
            current: None,
            current_stored: 0,
            fed,
            done: Vec::new(),
        }
    }

    fn start_piece(&mut self) -> Result<()> {
        let rel = format!("{}.{:06}", self.prefix, self.done.len() + 1);
        self.current = Some(ChunkWriter::create(&self.root, &rel, Codec::None, 0, 0)?);
        self.current_stored = 0;
        Ok(())
    }

    fn finish_piece(&mut self) -> Result<()> {
        let writer = self.current.take().expect("a piece is open");
        let mut chunk = writer.finish(0)?;
        chunk.codec = self.codec;
        self.done.push(chunk);
        Ok(())
    }

    /// Finishes the last piece and returns all of them in order (at least one). The
    /// uncompressed total is apportioned to the pieces by their stored size (compressors buffer,
    /// so which input ended up in which piece is not known); the sum is exact.
    pub fn finish(mut self) -> Result<Vec<Chunk>> {
        if self.current.is_none() && self.done.is_empty() {
            self.start_piece()?;
        }
        if self.current.is_some() {
            self.finish_piece()?;
        }
        let raw_total = self.fed.load(Ordering::Relaxed);
        let stored_total: u64 = self.done.iter().map(|c| c.stored_bytes).sum();
        let mut left = raw_total;
        let last = self.done.len() - 1;
        for (i, c) in self.done.iter_mut().enumerate() {
            c.raw_bytes = if i == last {
                left
            } else {
                let share = (raw_total as u128 * c.stored_bytes as u128
                    / stored_total.max(1) as u128) as u64;
                share.min(left)
            };
            left -= c.raw_bytes;
        }
        Ok(std::mem::take(&mut self.done))
    }

    fn to_io(e: Error) -> io::Error {
        io::Error::other(e.to_string())
    }
}

impl Write for RotatingChunkSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.current.is_none() {
            self.start_piece().map_err(Self::to_io)?;
        }
        let room = (self.chunk_size - self.current_stored) as usize;
        let n = room.min(buf.len());
        self.current
            .as_mut()
            .expect("open")
            .write(&buf[..n])
            .map_err(Self::to_io)?;
        self.current_stored += n as u64;
        if self.current_stored >= self.chunk_size {
            self.finish_piece().map_err(Self::to_io)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Reading: the pieces in order, each checked, as one stream
// ---------------------------------------------------------------------------------------------

/// The stored bytes of the pieces, concatenated in order. Each piece's size and SHA-256 are
/// checked when it has been read to its end; a mismatch is an error naming the file.
pub struct StreamReader {
    root: Store,
    pieces: Vec<Chunk>,
    next: usize,
    current: Option<ChunkReader>,
    current_file: Option<PathBuf>,
    /// The typed error behind the last `io::Error` returned.
    failure: Option<Error>,
}

impl StreamReader {
    pub fn new(root: &Store, pieces: &[Chunk]) -> Self {
        StreamReader {
            root: root.clone(),
            pieces: pieces.to_vec(),
            next: 0,
            current: None,
            current_file: None,
            failure: None,
        }
    }

    /// The piece being read (or last read).
    pub fn current_file(&self) -> PathBuf {
        self.current_file
            .clone()
            .or_else(|| self.pieces.first().map(|c| self.root.describe(&c.file)))
            .unwrap_or_else(|| self.root.describe(""))
    }

    fn fail(&mut self, e: Error) -> io::Error {
        let io = io::Error::other(e.to_string());
        self.failure = Some(e);
        io
    }
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.current.is_none() {
                if self.next == self.pieces.len() {
                    return Ok(0);
                }
                // Each piece alone is stored bytes: open it without a codec.
                let mut piece = self.pieces[self.next].clone();
                piece.codec = Codec::None;
                self.next += 1;
                self.current_file = Some(self.root.describe(&piece.file));
                match ChunkReader::open(&self.root, &piece) {
                    Ok(r) => self.current = Some(r),
                    Err(e) => return Err(self.fail(e)),
                }
            }
            let reader = self.current.as_mut().expect("open");
            let n = match reader.read(buf) {
                Ok(n) => n,
                Err(e) => {
                    let path = reader.path().to_path_buf();
                    return Err(self.fail(Error::io("reading", path, e)));
                }
            };
            if n > 0 {
                return Ok(n);
            }
            let reader = self.current.take().expect("open");
            if let Err(e) = reader.finish() {
                return Err(self.fail(e));
            }
        }
    }
}

pub(crate) type StreamDecoder = Decoder<BufReader<StreamReader>>;

/// The decompressed stream of `m`'s pieces.
pub(crate) fn open_stream(dir: &Store, m: &Manifest) -> Result<StreamDecoder> {
    let codec = m.stream.first().map_or(Codec::None, |c| c.codec);
    if m.stream.iter().any(|c| c.codec != codec) {
        return Err(Error::manifest(
            dir.describe(crate::format::manifest::MANIFEST_FILE),
            "the stream's pieces disagree about the codec",
        ));
    }
    Decoder::new(codec, StreamReader::new(dir, &m.stream))
        .map_err(|e| Error::io("opening the stream in", dir.describe(""), e))
}

/// Turns a read error of the decoder into the typed error naming the piece.
pub(crate) fn stream_error(dec: &mut StreamDecoder, e: io::Error) -> Error {
    let reader = dec.get_mut().get_mut();
    if let Some(typed) = reader.failure.take() {
        return typed;
    }
    Error::corrupt(
        reader.current_file(),
        format!("decompressing the stream (at or before this piece): {e}"),
    )
}

/// After the decoder's end: reads whatever stored bytes remain (checking the last pieces'
/// checksums) and compares the decompressed size with the manifest's.
pub(crate) fn finish_stream(
    dec: &mut StreamDecoder,
    m: &Manifest,
    dir: &Store,
    raw: u64,
) -> Result<()> {
    if let Err(e) = io::copy(dec.get_mut(), &mut io::sink()) {
        return Err(stream_error(dec, e));
    }
    let expected: u64 = m.stream.iter().map(|c| c.raw_bytes).sum();
    if raw != expected {
        let last = m
            .stream
            .last()
            .map_or(dir.describe(""), |c| dir.describe(&c.file));
        return Err(Error::corrupt(
            last,
            format!("the stream decompressed to {raw} bytes, the manifest says {expected}"),
        ));
    }
    Ok(())
}

/// Cheap checks before anything is started: every piece exists with the size the manifest says.
pub(crate) fn check_pieces(dir: &Store, m: &Manifest) -> Result<()> {
    ChunkReader::check_readable(dir, &m.stream)?;
    if m.stream.is_empty() {
        return Err(Error::manifest(
            dir.describe(crate::format::manifest::MANIFEST_FILE),
            format!("a {} backup without stream files", m.strategy.kind.as_str()),
        ));
    }
    let sizes: std::collections::HashMap<String, u64> = dir.list()?.into_iter().collect();
    for c in &m.stream {
        let path = dir.describe(&c.file);
        let Some(&len) = sizes.get(&c.file) else {
            return Err(Error::corrupt(&path, "chunk file is missing"));
        };
        if len != c.stored_bytes {
            return Err(Error::corrupt(
                &path,
                format!(
                    "size is {len} bytes, the manifest says {} (truncated or replaced)",
                    c.stored_bytes
                ),
            ));
        }
    }
    Ok(())
}
