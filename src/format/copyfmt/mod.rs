//! Framing of PostgreSQL `COPY ... TO STDOUT` payloads in `FORMAT binary` and `FORMAT text`.
//!
//! The backup worker cuts one table's COPY stream into several chunk files with [`Splitter`];
//! every chunk is a complete payload that `COPY ... FROM STDIN` with the same format accepts on
//! its own. `verify` checks a chunk without a server with [`walk`].
//!
//! Both work on byte positions only: a row may straddle any number of network pieces and a
//! field may be 1 GB, so nothing here ever buffers a row. The splitter hands back slices of the
//! `Bytes` it was given (zero-copy); the only bytes it makes up are the binary header it repeats
//! at the start of every later chunk and the two-byte trailer that closes every cut chunk.
//!
//! Formats, as PostgreSQL documents them for protocol v3:
//! - binary: 11-byte signature `PGCOPY\n\xff\r\n\0`, int32 flags, int32 header-extension length
//!   and that many bytes; then tuples of int16 field count and, per field, int32 length (-1 =
//!   NULL, no bytes) and the bytes; then the trailer, int16 -1. All integers big-endian.
//! - text: rows each terminated by `\n`; data newlines are escaped as `\n` (backslash, n), so
//!   every raw 0x0A ends a row. `TO STDOUT` sends no `\.` end marker.
//!
//! Here: the types, [`Splitter`] and [`walk`]; the row-boundary state machine both drive is in
//! `framer.rs`, the tests in `tests.rs`.

mod framer;
#[cfg(test)]
mod tests;

use bytes::Bytes;

use framer::{Framer, Scan, TRAILER};

/// The COPY format of a table's stream and of its chunk files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CopyFormat {
    /// `FORMAT binary`: length-prefixed fields, exact and fast, but tied to the type's binary
    /// send/receive functions.
    Binary,
    /// `FORMAT text`: one escaped line per row.
    Text,
}

impl CopyFormat {
    /// The option list to append to `COPY table TO STDOUT` / `COPY table FROM STDIN`:
    /// `"(FORMAT binary)"` or `"(FORMAT text)"`.
    pub fn sql_option(self) -> &'static str {
        match self {
            CopyFormat::Binary => "(FORMAT binary)",
            CopyFormat::Text => "(FORMAT text)",
        }
    }
}

/// A COPY payload is not framed as its format requires.
///
/// Every `offset` is a byte offset from the start of the stream given to [`Splitter`] or of the
/// payload given to [`walk`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The first 11 bytes are not `PGCOPY\n\xff\r\n\0`; `offset` is the first byte that differs.
    #[error("bad binary COPY signature at byte {offset}")]
    BadSignature { offset: u64 },

    /// The header flags set a bit in the critical range 17..=31, which a reader must reject.
    #[error("binary COPY header flags 0x{flags:08x} set unknown critical bits (byte 11)")]
    BadFlags { flags: u32 },

    /// The header-extension length is negative.
    #[error("binary COPY header extension length {len} at byte {offset}")]
    BadExtensionLength { len: i32, offset: u64 },

    /// The stream ended before the binary header was complete (also: an empty binary stream).
    #[error("stream ended inside the binary COPY header at byte {offset}")]
    TruncatedHeader { offset: u64 },

    /// A tuple's field count is negative but not the trailer's -1.
    #[error("field count {count} at byte {offset}")]
    BadFieldCount { count: i16, offset: u64 },

    /// A field length is below -1 (-1 means NULL).
    #[error("field length {len} at byte {offset}")]
    BadFieldLength { len: i32, offset: u64 },

    /// Bytes follow the binary trailer.
    #[error("data after the binary trailer at byte {offset}")]
    DataAfterTrailer { offset: u64 },

    /// The stream ended inside a row: mid-tuple for binary, or (text) the last row has no
    /// terminating newline. `offset` is the stream's length.
    #[error("stream ended inside a row at byte {offset}")]
    TruncatedRow { offset: u64 },

    /// A binary stream ended at a row boundary without the trailer.
    #[error("stream ended without the binary trailer at byte {offset}")]
    MissingTrailer { offset: u64 },
}

/// [`walk`] failed: reading failed, or what was read is not a well-framed payload.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("reading COPY payload: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Framing(#[from] FramingError),
}

/// What the splitter hands to the chunk writer, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// The next bytes of the current chunk.
    Data(Bytes),
    /// Close the current chunk (it is complete and loadable) and open the next.
    /// `rows` is the chunk's row count, `raw_bytes` the total length of its `Data` pieces
    /// (including a repeated binary header and an inserted trailer).
    EndChunk { rows: u64, raw_bytes: u64 },
}

/// Cuts one table's COPY stream into chunks, each a complete payload loadable on its own.
///
/// Feed the stream's pieces in order with [`push`](Self::push), then call
/// [`finish`](Self::finish). The output is a sequence of [`Piece::Data`] slices (of the pushed
/// `Bytes`, plus the repeated binary header and inserted trailers) closed by one
/// [`Piece::EndChunk`] per chunk.
///
/// Cutting rules:
/// - a cut happens only at a row boundary, after the first row at which the chunk holds
///   `>= chunk_size` raw bytes (repeated header included);
/// - never inside the binary header, never before a chunk's first row: every chunk holds at
///   least one row unless the whole stream has none;
/// - binary: the stream's own trailer belongs to the last chunk, so a chunk is never cut just
///   before the trailer (which would leave a row-less last chunk); text: no cut at end of stream.
pub struct Splitter {
    framer: Framer,
    chunk_size: u64,
    /// The binary header, frozen at the first cut and repeated at the start of later chunks.
    header: Option<Bytes>,
    /// Stream offset where the current chunk's stream bytes begin.
    chunk_start: u64,
    /// Bytes the splitter inserted into the current chunk so far (the repeated header).
    chunk_inserted: u64,
    /// `framer.rows` when the current chunk began.
    chunk_first_row: u64,
    /// The last consumed byte ended a row that filled the chunk: cut before the next row, once
    /// we know one follows (binary: that it is not the trailer).
    pending_cut: bool,
}

impl Splitter {
    /// A splitter for a stream of `format` that cuts after the first row boundary at which the
    /// current chunk holds `>= chunk_size` raw bytes. `u64::MAX` never cuts; 0 or 1 puts one
    /// row in each chunk.
    pub fn new(format: CopyFormat, chunk_size: u64) -> Self {
        Splitter {
            framer: Framer::new(format, format == CopyFormat::Binary),
            chunk_size,
            header: None,
            chunk_start: 0,
            chunk_inserted: 0,
            chunk_first_row: 0,
            pending_cut: false,
        }
    }

    /// Feed the next piece of the stream; appends the resulting pieces to `out`.
    ///
    /// For binary, each chunk after the first starts with an inserted `Data` piece holding a
    /// copy of the stream's header (signature, flags, extension), and each cut chunk (not the
    /// last) ends with an inserted `Data` piece `0xFF 0xFF` (the trailer). On error the stream
    /// is unusable and `out` may hold pieces of an incomplete chunk.
    pub fn push(&mut self, data: Bytes, out: &mut Vec<Piece>) -> Result<(), FramingError> {
        let len = data.len();
        // `from..i` is consumed but not yet handed out; handing out lazily yields one slice per
        // piece and chunk instead of one per row.
        let mut from = 0usize;
        let mut i = 0usize;
        while i < len {
            if self.pending_cut {
                self.pending_cut = false;
                // A valid field count is 0..=32767, so a first byte >= 0x80 can only be the
                // trailer (or garbage the framer rejects next): the trailer stays in this chunk.
                let trailer_next = self.framer.format == CopyFormat::Binary && data[i] >= 0x80;
                if !trailer_next {
                    if from < i {
                        out.push(Piece::Data(data.slice(from..i)));
                    }
                    from = i;
                    self.cut(out);
                }
            }
            let threshold = self
                .chunk_start
                .saturating_add(self.chunk_size.saturating_sub(self.chunk_inserted));
            match self.framer.scan(&data[i..], threshold)? {
                Scan::Consumed => i = len,
                Scan::Boundary(n) => {
                    i += n;
                    self.pending_cut = true;
                }
            }
        }
        if from < len {
            out.push(Piece::Data(data.slice(from..len)));
        }
        Ok(())
    }

    /// Close the current chunk at the framer's position and open the next.
    fn cut(&mut self, out: &mut Vec<Piece>) {
        let mut raw_bytes = self.chunk_inserted + (self.framer.pos - self.chunk_start);
        if self.framer.format == CopyFormat::Binary {
            out.push(Piece::Data(Bytes::from_static(TRAILER)));
            raw_bytes += TRAILER.len() as u64;
        }
        out.push(Piece::EndChunk {
            rows: self.framer.rows - self.chunk_first_row,
            raw_bytes,
        });
        self.chunk_start = self.framer.pos;
        self.chunk_first_row = self.framer.rows;
        self.chunk_inserted = 0;
        if self.framer.format == CopyFormat::Binary {
            // A cut follows a complete row, so the header is complete by now.
            let framer = &mut self.framer;
            let header = self
                .header
                .get_or_insert_with(|| Bytes::from(std::mem::take(&mut framer.header)));
            self.chunk_inserted = header.len() as u64;
            out.push(Piece::Data(header.clone()));
        }
    }

    /// End of stream: checks the stream ended cleanly (binary: the trailer was seen with nothing
    /// after it; text: at a row boundary) and appends the last chunk's `EndChunk`. There is
    /// always exactly one final chunk, even for zero rows (binary: header + trailer, i.e. the
    /// whole stream; text: 0 bytes).
    pub fn finish(self, out: &mut Vec<Piece>) -> Result<(), FramingError> {
        self.framer.finish()?;
        out.push(Piece::EndChunk {
            rows: self.framer.rows - self.chunk_first_row,
            raw_bytes: self.chunk_inserted + (self.framer.pos - self.chunk_start),
        });
        Ok(())
    }

    /// Rows seen in the whole stream so far (all chunks).
    pub fn total_rows(&self) -> u64 {
        self.framer.rows
    }
}

/// Walk one decompressed chunk (or any complete COPY payload of `format`) from `reader`,
/// checking its framing as [`Splitter`] does for a whole stream; returns the row count.
///
/// Reads through a fixed 256 KiB buffer and never holds the payload or a row whole.
pub fn walk<R: std::io::Read>(format: CopyFormat, mut reader: R) -> Result<u64, WalkError> {
    const BUF: usize = 256 * 1024;
    let mut framer = Framer::new(format, false);
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        // With no threshold the framer never stops early, but loop in case it does.
        let mut piece = &buf[..n];
        while let Scan::Boundary(k) = framer.scan(piece, u64::MAX)? {
            piece = &piece[k..];
        }
    }
    framer.finish()?;
    Ok(framer.rows)
}
