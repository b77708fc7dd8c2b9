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

use bytes::Bytes;

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

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Signature, flags and extension length: the part of the binary header with a fixed size.
const FIXED_HEADER: usize = 19;
const TRAILER: &[u8; 2] = &[0xff, 0xff];
/// Flag bit 16: every tuple carries an OID field not counted in its field count (servers
/// before 12 with `WITH OIDS`).
const FLAG_OIDS: u32 = 1 << 16;
/// Bits 17..=31 are "critical": a reader that does not know one must reject the file.
const FLAG_CRITICAL: u32 = 0xfffe_0000;

/// Where the binary parser is; everything it needs to resume on the next piece.
#[derive(Clone, Copy, Debug)]
enum BinState {
    /// Inside the fixed 19 header bytes; `got` of them seen.
    Header { got: usize },
    /// Inside the header extension; `left` bytes to go.
    HeaderExt { left: u64 },
    /// At a tuple's int16 field count (a row boundary when no count byte is buffered yet).
    TupleStart,
    /// At a field's int32 length; `fields` fields of the tuple remain, this one included.
    FieldLen { fields: u32 },
    /// Inside a field's bytes; `left` bytes of it and `fields` fields (this one included) remain.
    FieldBody { left: u64, fields: u32 },
    /// The trailer was seen; the stream must end here.
    Done,
}

/// Result of one [`Framer::scan`] call.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// The whole slice was consumed without reaching a row boundary at or past the threshold.
    Consumed,
    /// A row ended at this index of the slice (exclusive end) and the stream position there is
    /// at or past the threshold; the bytes from the index on are not consumed yet.
    Boundary(usize),
}

/// The framing state machine shared by [`Splitter`] and [`walk`]: consumes a payload in pieces
/// of any size, validates it, counts rows and can stop at row boundaries.
struct Framer {
    format: CopyFormat,
    /// Stream offset of the next byte to consume.
    pos: u64,
    /// Complete rows consumed.
    rows: u64,
    // Binary state.
    bin: BinState,
    fixed: [u8; FIXED_HEADER],
    /// Tuples carry an extra OID field (header flag bit 16).
    oids: bool,
    /// A field count or length straddling pieces is gathered here (at most 4 bytes).
    acc: [u8; 4],
    acc_len: usize,
    /// Stream offset of the first byte in `acc`, for error messages.
    acc_start: u64,
    /// Keep a copy of the binary header (signature, flags, extension) for later chunks.
    capture_header: bool,
    header: Vec<u8>,
    // Text state: bytes of an unterminated row have been consumed.
    in_row: bool,
}

impl Framer {
    fn new(format: CopyFormat, capture_header: bool) -> Self {
        Framer {
            format,
            pos: 0,
            rows: 0,
            bin: BinState::Header { got: 0 },
            fixed: [0; FIXED_HEADER],
            oids: false,
            acc: [0; 4],
            acc_len: 0,
            acc_start: 0,
            capture_header,
            header: Vec::new(),
            in_row: false,
        }
    }

    /// Consume `buf` (the next bytes of the stream) until it is used up or a row ends at a
    /// stream position `>= threshold`. Only row ends count: the end of the binary header and
    /// the trailer are never boundaries.
    fn scan(&mut self, buf: &[u8], threshold: u64) -> Result<Scan, FramingError> {
        match self.format {
            CopyFormat::Binary => self.scan_binary(buf, threshold),
            CopyFormat::Text => Ok(self.scan_text(buf, threshold)),
        }
    }

    fn scan_text(&mut self, buf: &[u8], threshold: u64) -> Scan {
        if buf.is_empty() {
            return Scan::Consumed;
        }
        // A newline at index i ends a row at stream position pos + i + 1; the first newline that
        // can be a boundary is at index `need`. Newlines before it are only counted, which the
        // compiler vectorises, so the common case (chunk far from full) runs at memory speed.
        let need = threshold.saturating_sub(self.pos + 1);
        let need = usize::try_from(need).unwrap_or(usize::MAX).min(buf.len());
        self.rows += count_newlines(&buf[..need]) as u64;
        if let Some(j) = buf[need..].iter().position(|&b| b == b'\n') {
            let end = need + j + 1;
            self.rows += 1;
            self.pos += end as u64;
            self.in_row = false;
            return Scan::Boundary(end);
        }
        self.pos += buf.len() as u64;
        self.in_row = buf[buf.len() - 1] != b'\n';
        Scan::Consumed
    }

    fn scan_binary(&mut self, buf: &[u8], threshold: u64) -> Result<Scan, FramingError> {
        let base = self.pos;
        let mut i = 0usize;
        // Set when a row ends at or past the threshold: stop there and report it.
        let mut boundary = false;
        while i < buf.len() && !boundary {
            match self.bin {
                BinState::Header { got } => {
                    let take = (FIXED_HEADER - got).min(buf.len() - i);
                    let bytes = &buf[i..i + take];
                    // Check the signature byte by byte so the error names the first bad one,
                    // and so a text payload fed as binary fails at once.
                    for (k, &b) in bytes.iter().enumerate() {
                        let at = got + k;
                        if at < SIGNATURE.len() && b != SIGNATURE[at] {
                            return Err(FramingError::BadSignature {
                                offset: base + (i + k) as u64,
                            });
                        }
                    }
                    self.fixed[got..got + take].copy_from_slice(bytes);
                    if self.capture_header {
                        self.header.extend_from_slice(bytes);
                    }
                    i += take;
                    let got = got + take;
                    self.bin = BinState::Header { got };
                    if got == FIXED_HEADER {
                        self.bin = self.header_done()?;
                    }
                }
                BinState::HeaderExt { left } => {
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(buf.len() - i);
                    if self.capture_header {
                        self.header.extend_from_slice(&buf[i..i + take]);
                    }
                    i += take;
                    let left = left - take as u64;
                    self.bin = if left == 0 {
                        BinState::TupleStart
                    } else {
                        BinState::HeaderExt { left }
                    };
                }
                BinState::TupleStart => {
                    let Some((v, at)) = self.take_int::<2>(buf, &mut i, base) else {
                        break;
                    };
                    let count = i16::from_be_bytes(v);
                    if count == -1 {
                        self.bin = BinState::Done;
                    } else if count < 0 {
                        return Err(FramingError::BadFieldCount { count, offset: at });
                    } else {
                        let fields = count as u32 + u32::from(self.oids);
                        if fields == 0 {
                            // Zero-column table: the tuple is just its count.
                            boundary = self.row_done(base + i as u64, threshold);
                        } else {
                            self.bin = BinState::FieldLen { fields };
                        }
                    }
                }
                BinState::FieldLen { fields } => {
                    let Some((v, at)) = self.take_int::<4>(buf, &mut i, base) else {
                        break;
                    };
                    let len = i32::from_be_bytes(v);
                    if len < -1 {
                        return Err(FramingError::BadFieldLength { len, offset: at });
                    }
                    if len > 0 {
                        self.bin = BinState::FieldBody {
                            left: len as u64,
                            fields,
                        };
                    } else {
                        // NULL (-1) or empty (0): no bytes follow.
                        boundary = self.field_done(fields, base + i as u64, threshold);
                    }
                }
                BinState::FieldBody { left, fields } => {
                    // Skip the body by its length; its bytes are never looked at.
                    let avail = (buf.len() - i) as u64;
                    if avail < left {
                        i = buf.len();
                        self.bin = BinState::FieldBody {
                            left: left - avail,
                            fields,
                        };
                    } else {
                        i += left as usize;
                        boundary = self.field_done(fields, base + i as u64, threshold);
                    }
                }
                BinState::Done => {
                    return Err(FramingError::DataAfterTrailer {
                        offset: base + i as u64,
                    });
                }
            }
        }
        self.pos = base + i as u64;
        Ok(if boundary {
            Scan::Boundary(i)
        } else {
            Scan::Consumed
        })
    }

    /// Validate the fixed header part just completed; returns the next state.
    fn header_done(&mut self) -> Result<BinState, FramingError> {
        let flags = u32::from_be_bytes(self.fixed[11..15].try_into().unwrap());
        if flags & FLAG_CRITICAL != 0 {
            return Err(FramingError::BadFlags { flags });
        }
        self.oids = flags & FLAG_OIDS != 0;
        let len = i32::from_be_bytes(self.fixed[15..19].try_into().unwrap());
        match len {
            0 => Ok(BinState::TupleStart),
            1.. => Ok(BinState::HeaderExt { left: len as u64 }),
            _ => Err(FramingError::BadExtensionLength { len, offset: 15 }),
        }
    }

    /// Read a big-endian N-byte integer at `buf[*i..]`, gathering it across pieces in `acc`.
    /// Returns the bytes and the stream offset of the first one, or `None` when `buf` ran out
    /// first (the partial bytes stay in `acc`).
    #[inline]
    fn take_int<const N: usize>(
        &mut self,
        buf: &[u8],
        i: &mut usize,
        base: u64,
    ) -> Option<([u8; N], u64)> {
        let avail = buf.len() - *i;
        if self.acc_len == 0 && avail >= N {
            // Fast path: the whole integer is in this piece.
            let v: [u8; N] = buf[*i..*i + N].try_into().unwrap();
            let at = base + *i as u64;
            *i += N;
            return Some((v, at));
        }
        if self.acc_len == 0 {
            self.acc_start = base + *i as u64;
        }
        let take = (N - self.acc_len).min(avail);
        self.acc[self.acc_len..self.acc_len + take].copy_from_slice(&buf[*i..*i + take]);
        self.acc_len += take;
        *i += take;
        if self.acc_len < N {
            return None;
        }
        self.acc_len = 0;
        Some((self.acc[..N].try_into().unwrap(), self.acc_start))
    }

    /// One field of a tuple with `fields` remaining fields (this one included) is complete.
    /// Returns whether a row ended at or past the threshold.
    #[inline]
    fn field_done(&mut self, fields: u32, pos: u64, threshold: u64) -> bool {
        if fields > 1 {
            self.bin = BinState::FieldLen { fields: fields - 1 };
            false
        } else {
            self.row_done(pos, threshold)
        }
    }

    /// A tuple ended at stream position `pos`. Returns whether `pos` is at or past `threshold`.
    #[inline]
    fn row_done(&mut self, pos: u64, threshold: u64) -> bool {
        self.rows += 1;
        self.bin = BinState::TupleStart;
        pos >= threshold
    }

    /// The stream ended: check it ended where its format allows.
    fn finish(&self) -> Result<(), FramingError> {
        let offset = self.pos;
        match self.format {
            CopyFormat::Text if self.in_row => Err(FramingError::TruncatedRow { offset }),
            CopyFormat::Text => Ok(()),
            CopyFormat::Binary => match self.bin {
                BinState::Done => Ok(()),
                BinState::Header { .. } | BinState::HeaderExt { .. } => {
                    Err(FramingError::TruncatedHeader { offset })
                }
                BinState::TupleStart if self.acc_len == 0 => {
                    Err(FramingError::MissingTrailer { offset })
                }
                BinState::TupleStart | BinState::FieldLen { .. } | BinState::FieldBody { .. } => {
                    Err(FramingError::TruncatedRow { offset })
                }
            },
        }
    }
}

/// Count 0x0A bytes.
///
/// No memchr/bytecount dependency, so this is shaped for LLVM's auto-vectoriser: compare
/// results go into byte-wide lane counters (which cannot overflow within 255 steps) and are
/// widened once per block. A plain `filter().count()` widens every byte and is ~3x slower.
fn count_newlines(buf: &[u8]) -> usize {
    const LANES: usize = 64;
    const BLOCK: usize = LANES * 255;
    fn block(buf: &[u8]) -> usize {
        let mut acc = [0u8; LANES];
        let mut rows = buf.chunks_exact(LANES);
        for row in &mut rows {
            for (a, &b) in acc.iter_mut().zip(row) {
                *a += u8::from(b == b'\n');
            }
        }
        let tail = rows.remainder().iter().filter(|&&b| b == b'\n').count();
        acc.iter().map(|&a| usize::from(a)).sum::<usize>() + tail
    }
    buf.chunks(BLOCK).map(block).sum()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    type Field = Option<Vec<u8>>;

    fn bin_header(ext: &[u8]) -> Vec<u8> {
        let mut v = SIGNATURE.to_vec();
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&(ext.len() as i32).to_be_bytes());
        v.extend_from_slice(ext);
        v
    }

    fn bin_tuple(v: &mut Vec<u8>, fields: &[Field]) {
        v.extend_from_slice(&(fields.len() as i16).to_be_bytes());
        for f in fields {
            match f {
                None => v.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(b) => {
                    v.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    v.extend_from_slice(b);
                }
            }
        }
    }

    fn bin_stream(ext: &[u8], rows: &[Vec<Field>]) -> Vec<u8> {
        let mut v = bin_header(ext);
        for r in rows {
            bin_tuple(&mut v, r);
        }
        v.extend_from_slice(TRAILER);
        v
    }

    /// Rows with NULLs, empty fields, zero-field tuples and varied lengths (including 0xFF
    /// bytes and lengths whose first byte is >= 0x80 would be wrong).
    fn mixed_rows(rng: &mut Rng, n: usize) -> Vec<Vec<Field>> {
        (0..n)
            .map(|_| {
                let nf = rng.below(5) as usize;
                (0..nf)
                    .map(|_| match rng.below(4) {
                        0 => None,
                        1 => Some(Vec::new()),
                        _ => {
                            let len = rng.below(300) as usize;
                            Some((0..len).map(|_| rng.next() as u8).collect())
                        }
                    })
                    .collect()
            })
            .collect()
    }

    fn text_stream(rng: &mut Rng, n: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for _ in 0..n {
            let len = rng.below(200) as usize;
            // Anything but a raw newline; escaped newlines are "\\n" in real streams.
            v.extend((0..len).map(|_| match rng.next() as u8 {
                b'\n' => b'\\',
                b => b,
            }));
            v.push(b'\n');
        }
        v
    }

    #[derive(Clone, Copy, Debug)]
    enum Sizes {
        Fixed(usize),
        Random(u64),
        Whole,
    }

    fn pieces(input: &Bytes, sizes: Sizes, seed: u64) -> Vec<Bytes> {
        let mut rng = Rng(seed | 1);
        let mut v = Vec::new();
        let mut at = 0;
        while at < input.len() {
            let n = match sizes {
                Sizes::Fixed(n) => n,
                Sizes::Random(max) => 1 + rng.below(max) as usize,
                Sizes::Whole => input.len(),
            };
            let end = (at + n).min(input.len());
            v.push(input.slice(at..end));
            at = end;
        }
        v
    }

    struct Chunk {
        data: Vec<u8>,
        rows: u64,
        raw_bytes: u64,
    }

    fn split(
        format: CopyFormat,
        input: &Bytes,
        chunk_size: u64,
        sizes: Sizes,
    ) -> Result<Vec<Chunk>, FramingError> {
        let mut s = Splitter::new(format, chunk_size);
        let mut out = Vec::new();
        for p in pieces(input, sizes, chunk_size ^ 0x9e37_79b9) {
            s.push(p, &mut out)?;
        }
        let total = s.total_rows();
        s.finish(&mut out)?;
        let range = input.as_ptr() as usize..input.as_ptr() as usize + input.len();
        let mut chunks = Vec::new();
        let mut cur = Vec::new();
        for p in out {
            match p {
                Piece::Data(b) => {
                    assert!(!b.is_empty(), "empty Data piece");
                    // Zero-copy: apart from the repeated header (first in a chunk) and the
                    // trailer, pieces are slices of the input.
                    if !range.contains(&(b.as_ptr() as usize)) {
                        let header = cur.is_empty() && b.starts_with(SIGNATURE);
                        assert!(header || b[..] == TRAILER[..], "copied Data piece");
                    }
                    cur.extend_from_slice(&b);
                }
                Piece::EndChunk { rows, raw_bytes } => chunks.push(Chunk {
                    data: std::mem::take(&mut cur),
                    rows,
                    raw_bytes,
                }),
            }
        }
        assert!(cur.is_empty(), "Data after the last EndChunk");
        assert_eq!(chunks.iter().map(|c| c.rows).sum::<u64>(), total);
        Ok(chunks)
    }

    /// Split `input` every way and check every chunk; `rows` is the stream's row count.
    fn check_all(format: CopyFormat, input: &[u8], rows: u64, header_len: usize) {
        let input = Bytes::copy_from_slice(input);
        assert_eq!(walk(format, &input[..]).unwrap(), rows);
        let sizes = [
            Sizes::Fixed(1),
            Sizes::Fixed(2),
            Sizes::Fixed(3),
            Sizes::Fixed(7),
            Sizes::Fixed(13),
            Sizes::Fixed(4099),
            Sizes::Random(10),
            Sizes::Random(1000),
            Sizes::Whole,
        ];
        for &chunk_size in &[0, 1, 2, 100, 1000, 65536, u64::MAX] {
            for &sz in &sizes {
                if matches!(sz, Sizes::Fixed(1) | Sizes::Fixed(2)) && input.len() > 200_000 {
                    continue; // covered by a dedicated test; too slow here
                }
                let chunks = split(format, &input, chunk_size, sz).unwrap();
                check_chunks(format, &input, rows, header_len, chunk_size, &chunks);
            }
        }
    }

    fn check_chunks(
        format: CopyFormat,
        input: &[u8],
        rows: u64,
        header_len: usize,
        chunk_size: u64,
        chunks: &[Chunk],
    ) {
        let ctx = format!("{format:?} chunk_size {chunk_size}");
        assert!(!chunks.is_empty(), "{ctx}");
        assert_eq!(chunks.iter().map(|c| c.rows).sum::<u64>(), rows, "{ctx}");
        let mut rebuilt = Vec::new();
        let last = chunks.len() - 1;
        for (k, c) in chunks.iter().enumerate() {
            assert_eq!(c.raw_bytes, c.data.len() as u64, "{ctx} chunk {k}");
            assert_eq!(
                walk(format, &c.data[..]).unwrap(),
                c.rows,
                "{ctx} chunk {k}"
            );
            if rows > 0 {
                assert!(c.rows >= 1, "{ctx} chunk {k} has no rows");
            }
            if k < last {
                assert!(c.raw_bytes >= chunk_size, "{ctx} chunk {k} cut early");
                if chunk_size <= 1 {
                    assert_eq!(c.rows, 1, "{ctx} chunk {k}");
                }
            }
            // Strip what the splitter inserted to get back the stream's own bytes.
            let mut d = &c.data[..];
            if format == CopyFormat::Binary {
                if k > 0 {
                    assert_eq!(&d[..header_len], &input[..header_len], "{ctx} chunk {k}");
                    d = &d[header_len..];
                }
                if k < last {
                    assert_eq!(&d[d.len() - 2..], TRAILER, "{ctx} chunk {k}");
                    d = &d[..d.len() - 2];
                }
            }
            rebuilt.extend_from_slice(d);
        }
        assert!(rebuilt == input, "{ctx}: chunks do not rebuild the stream");
        if chunk_size == u64::MAX {
            assert_eq!(chunks.len(), 1, "{ctx}");
            assert!(chunks[0].data == input, "{ctx}");
        }
    }

    #[test]
    fn count_newlines_matches_naive() {
        let mut rng = Rng(3);
        for len in [
            0,
            1,
            63,
            64,
            65,
            255 * 64 - 1,
            255 * 64,
            255 * 64 + 1,
            100_000,
        ] {
            // Dense newlines exercise the lane counters near their 255 limit.
            let buf: Vec<u8> = (0..len)
                .map(|_| if rng.below(3) == 0 { b'x' } else { b'\n' })
                .collect();
            let naive = buf.iter().filter(|&&b| b == b'\n').count();
            assert_eq!(count_newlines(&buf), naive, "len {len}");
        }
        assert_eq!(count_newlines(&[b'\n'; 255 * 64 * 3 + 7]), 255 * 64 * 3 + 7);
    }

    #[test]
    fn sql_option_and_serde_names() {
        assert_eq!(CopyFormat::Binary.sql_option(), "(FORMAT binary)");
        assert_eq!(CopyFormat::Text.sql_option(), "(FORMAT text)");
        // The manifest stores the format by these names.
        assert_eq!(
            serde_json::to_string(&CopyFormat::Binary).unwrap(),
            "\"binary\""
        );
        let text: CopyFormat = serde_json::from_str("\"text\"").unwrap();
        assert_eq!(text, CopyFormat::Text);
    }

    #[test]
    fn binary_mixed_rows() {
        let mut rng = Rng(42);
        let rows = mixed_rows(&mut rng, 300);
        let input = bin_stream(&[], &rows);
        check_all(CopyFormat::Binary, &input, rows.len() as u64, 19);
    }

    #[test]
    fn binary_header_extension() {
        let mut rng = Rng(7);
        let rows = mixed_rows(&mut rng, 50);
        let ext = b"\xff\xffextension bytes\n";
        let input = bin_stream(ext, &rows);
        check_all(
            CopyFormat::Binary,
            &input,
            rows.len() as u64,
            19 + ext.len(),
        );
    }

    #[test]
    fn binary_zero_field_tuples_and_nulls() {
        let rows: Vec<Vec<Field>> = vec![
            vec![],
            vec![None],
            vec![Some(vec![])],
            vec![],
            vec![None, None, Some(vec![0xff; 3])],
            vec![],
        ];
        let input = bin_stream(&[], &rows);
        check_all(CopyFormat::Binary, &input, rows.len() as u64, 19);
    }

    #[test]
    fn binary_zero_rows() {
        let input = bin_stream(b"x", &[]);
        check_all(CopyFormat::Binary, &input, 0, 20);
        let chunks = split(
            CopyFormat::Binary,
            &Bytes::from(input.clone()),
            1,
            Sizes::Whole,
        );
        let chunks = chunks.unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].data, input);
    }

    #[test]
    fn binary_big_field() {
        let big = vec![0xabu8; 3 << 20];
        let rows: Vec<Vec<Field>> = vec![
            vec![Some(b"a".to_vec())],
            vec![Some(big), None],
            vec![Some(b"b".to_vec())],
        ];
        let input = bin_stream(&[], &rows);
        check_all(CopyFormat::Binary, &input, 3, 19);
        // Byte-by-byte delivery of a 3 MB field once.
        let input = Bytes::from(input);
        let chunks = split(CopyFormat::Binary, &input, 100, Sizes::Fixed(1)).unwrap();
        // Row 1 (26 bytes) does not fill a chunk; row 2 does; row 3 is the last chunk.
        assert_eq!(chunks.len(), 2);
        assert_eq!((chunks[0].rows, chunks[1].rows), (2, 1));
        check_chunks(CopyFormat::Binary, &input, 3, 19, 100, &chunks);
    }

    #[test]
    fn text_rows() {
        let mut rng = Rng(99);
        let input = text_stream(&mut rng, 400);
        check_all(CopyFormat::Text, &input, 400, 0);
        // Empty rows are rows.
        check_all(CopyFormat::Text, b"\n\n\na\n\n", 5, 0);
    }

    #[test]
    fn text_big_row_and_zero_rows() {
        let mut input = vec![b'x'; 3 << 20];
        input.push(b'\n');
        input.extend_from_slice(b"short\n");
        check_all(CopyFormat::Text, &input, 2, 0);
        check_all(CopyFormat::Text, b"", 0, 0);
        let chunks = split(CopyFormat::Text, &Bytes::new(), 1, Sizes::Whole).unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!((chunks[0].rows, chunks[0].raw_bytes), (0, 0));
    }

    /// The error from splitting (any piece sizes) and from walking must agree.
    fn rejected(format: CopyFormat, input: &[u8]) -> FramingError {
        let b = Bytes::copy_from_slice(input);
        let want = match walk(format, input) {
            Err(WalkError::Framing(e)) => e,
            other => panic!("walk accepted bad input: {other:?}"),
        };
        for sz in [
            Sizes::Fixed(1),
            Sizes::Fixed(3),
            Sizes::Random(17),
            Sizes::Whole,
        ] {
            for chunk_size in [1, u64::MAX] {
                match split(format, &b, chunk_size, sz) {
                    Err(e) => assert_eq!(e, want, "{sz:?} {chunk_size}"),
                    Ok(_) => panic!("splitter accepted bad input ({sz:?}, {chunk_size})"),
                }
            }
        }
        want
    }

    #[test]
    fn rejects_bad_binary() {
        let rows: Vec<Vec<Field>> = vec![vec![Some(b"hello".to_vec()), None], vec![]];
        let good = bin_stream(&[], &rows);
        let n = good.len() as u64;

        // Truncated inside a row: mid-body, mid-length, mid-count.
        let e = rejected(CopyFormat::Binary, &good[..19 + 2 + 4 + 3]);
        assert_eq!(e, FramingError::TruncatedRow { offset: 28 });
        assert_eq!(e.to_string(), "stream ended inside a row at byte 28");
        let e = rejected(CopyFormat::Binary, &good[..19 + 2 + 2]);
        assert_eq!(e, FramingError::TruncatedRow { offset: 23 });
        let e = rejected(CopyFormat::Binary, &good[..19 + 1]);
        assert_eq!(e, FramingError::TruncatedRow { offset: 20 });

        // Missing trailer: ends at a row boundary.
        let e = rejected(CopyFormat::Binary, &good[..good.len() - 2]);
        assert_eq!(e, FramingError::MissingTrailer { offset: n - 2 });
        let e = rejected(CopyFormat::Binary, &good[..19]);
        assert_eq!(e, FramingError::MissingTrailer { offset: 19 });

        // Garbage after the trailer.
        let mut bad = good.clone();
        bad.extend_from_slice(b"\x00\x01");
        let e = rejected(CopyFormat::Binary, &bad);
        assert_eq!(e, FramingError::DataAfterTrailer { offset: n });
        assert_eq!(
            e.to_string(),
            format!("data after the binary trailer at byte {n}")
        );

        // Bad signature, naming the first bad byte; text fed as binary.
        let mut bad = good.clone();
        bad[3] = b'X';
        assert_eq!(
            rejected(CopyFormat::Binary, &bad),
            FramingError::BadSignature { offset: 3 }
        );
        assert_eq!(
            rejected(CopyFormat::Binary, b"1\tfoo\n"),
            FramingError::BadSignature { offset: 0 }
        );

        // Truncated or empty header.
        assert_eq!(
            rejected(CopyFormat::Binary, &good[..10]),
            FramingError::TruncatedHeader { offset: 10 }
        );
        assert_eq!(
            rejected(CopyFormat::Binary, b""),
            FramingError::TruncatedHeader { offset: 0 }
        );
        let with_ext = bin_stream(b"abcdef", &rows);
        assert_eq!(
            rejected(CopyFormat::Binary, &with_ext[..22]),
            FramingError::TruncatedHeader { offset: 22 }
        );

        // Critical flag bits; negative extension length.
        let mut bad = good.clone();
        bad[11] = 0x80;
        assert!(matches!(
            rejected(CopyFormat::Binary, &bad),
            FramingError::BadFlags { flags: 0x8000_0000 }
        ));
        let mut bad = good.clone();
        bad[15..19].copy_from_slice(&(-2i32).to_be_bytes());
        assert_eq!(
            rejected(CopyFormat::Binary, &bad),
            FramingError::BadExtensionLength {
                len: -2,
                offset: 15
            }
        );

        // Field length -7; field count -2 (a first count byte >= 0x80 that is not the trailer).
        let mut bad = good.clone();
        bad[21..25].copy_from_slice(&(-7i32).to_be_bytes());
        let e = rejected(CopyFormat::Binary, &bad);
        assert_eq!(
            e,
            FramingError::BadFieldLength {
                len: -7,
                offset: 21
            }
        );
        assert_eq!(e.to_string(), "field length -7 at byte 21");
        let mut bad = good.clone();
        let second = 19 + 2 + 4 + 5 + 4;
        bad[second..second + 2].copy_from_slice(&(-2i16).to_be_bytes());
        assert_eq!(
            rejected(CopyFormat::Binary, &bad),
            FramingError::BadFieldCount {
                count: -2,
                offset: second as u64
            }
        );
    }

    #[test]
    fn binary_oid_flag_adds_a_field() {
        // Pre-12 servers WITH OIDS: one uncounted OID field per tuple.
        let mut v = SIGNATURE.to_vec();
        v.extend_from_slice(&FLAG_OIDS.to_be_bytes());
        v.extend_from_slice(&0i32.to_be_bytes());
        for _ in 0..3 {
            v.extend_from_slice(&1i16.to_be_bytes());
            v.extend_from_slice(&4i32.to_be_bytes());
            v.extend_from_slice(&1234u32.to_be_bytes());
            v.extend_from_slice(&(-1i32).to_be_bytes());
        }
        v.extend_from_slice(TRAILER);
        check_all(CopyFormat::Binary, &v, 3, 19);
    }

    #[test]
    fn rejects_bad_text() {
        let e = rejected(CopyFormat::Text, b"a\nb\nunterminated");
        assert_eq!(e, FramingError::TruncatedRow { offset: 16 });
        assert_eq!(
            rejected(CopyFormat::Text, b"x"),
            FramingError::TruncatedRow { offset: 1 }
        );
    }

    #[test]
    fn walk_reports_io_errors_and_small_reads() {
        struct Trickle<'a>(&'a [u8]);
        impl std::io::Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0.is_empty() {
                    return Err(std::io::Error::other("disk on fire"));
                }
                let n = buf.len().min(3).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let good = bin_stream(&[], &[vec![Some(b"abc".to_vec())]]);
        // The reader errors instead of reporting EOF: the error must surface.
        assert!(matches!(
            walk(CopyFormat::Binary, Trickle(&good)),
            Err(WalkError::Io(_))
        ));
        // Chained with a clean EOF it walks, 3 bytes at a time.
        let r = std::io::Read::take(Trickle(&good), good.len() as u64);
        assert_eq!(walk(CopyFormat::Binary, r).unwrap(), 1);
    }
}
