use super::framer::{count_newlines, FLAG_OIDS, SIGNATURE};
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
