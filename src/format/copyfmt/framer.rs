//! The COPY framing state machine: finds row boundaries in a COPY stream piece by piece,
//! without ever buffering a row; shared by [`Splitter`](super::Splitter) and
//! [`walk`](super::walk).

use super::{CopyFormat, FramingError};

pub(super) const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Signature, flags and extension length: the part of the binary header with a fixed size.
const FIXED_HEADER: usize = 19;
pub(super) const TRAILER: &[u8; 2] = &[0xff, 0xff];
/// Flag bit 16: every tuple carries an OID field not counted in its field count (servers
/// before 12 with `WITH OIDS`).
pub(super) const FLAG_OIDS: u32 = 1 << 16;
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
pub(super) enum Scan {
    /// The whole slice was consumed without reaching a row boundary at or past the threshold.
    Consumed,
    /// A row ended at this index of the slice (exclusive end) and the stream position there is
    /// at or past the threshold; the bytes from the index on are not consumed yet.
    Boundary(usize),
}

/// The framing state machine shared by [`Splitter`] and [`walk`]: consumes a payload in pieces
/// of any size, validates it, counts rows and can stop at row boundaries.
pub(super) struct Framer {
    pub(super) format: CopyFormat,
    /// Stream offset of the next byte to consume.
    pub(super) pos: u64,
    /// Complete rows consumed.
    pub(super) rows: u64,
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
    pub(super) header: Vec<u8>,
    // Text state: bytes of an unterminated row have been consumed.
    in_row: bool,
}

impl Framer {
    pub(super) fn new(format: CopyFormat, capture_header: bool) -> Self {
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
    pub(super) fn scan(&mut self, buf: &[u8], threshold: u64) -> Result<Scan, FramingError> {
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
    pub(super) fn finish(&self) -> Result<(), FramingError> {
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
pub(super) fn count_newlines(buf: &[u8]) -> usize {
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
