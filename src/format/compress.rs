//! Codecs. Compression runs on plain threads (never on the async runtime): it is where the CPU
//! of a backup goes, and a blocked runtime thread would stall every COPY stream.

use std::io::{self, BufRead, BufReader, Read, Write};

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    Zstd,
    Gzip,
    None,
}

impl Codec {
    /// File name suffix of stored files.
    pub fn extension(self) -> &'static str {
        match self {
            Codec::Zstd => ".zst",
            Codec::Gzip => ".gz",
            Codec::None => "",
        }
    }

    pub fn default_level(self) -> i32 {
        match self {
            Codec::Zstd => 3,
            Codec::Gzip => 6,
            Codec::None => 0,
        }
    }

    /// Rejects levels the codec does not have, so a typo is an error and not a silent clamp.
    pub fn check_level(self, level: i32) -> Result<(), String> {
        let range = match self {
            Codec::Zstd => 1..=22,
            Codec::Gzip => 0..=9,
            Codec::None => 0..=0,
        };
        if range.contains(&level) {
            Ok(())
        } else {
            Err(format!(
                "--compress-level {level} is out of range for {self:?} ({}..={})",
                range.start(),
                range.end()
            ))
        }
    }
}

/// A compressing writer; [`Encoder::finish`] must be called to write the codec's trailer.
pub enum Encoder<W: Write> {
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Gzip(flate2::write::GzEncoder<W>),
    None(W),
}

impl<W: Write> Encoder<W> {
    /// `threads` > 0 gives zstd that many worker threads (multi-threaded zstd, same format);
    /// 0 compresses on the calling thread. gzip here is single-threaded: parallelism comes from
    /// several streams at once, or from [`ParallelGzip`] for a single stream.
    pub fn new(codec: Codec, level: i32, threads: u32, inner: W) -> io::Result<Self> {
        Ok(match codec {
            Codec::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(inner, level)?;
                if threads > 0 {
                    e.multithread(threads)?;
                }
                // Restore/verify read chunks with a streaming decoder; a checksum per frame
                // catches corruption even without the manifest.
                e.include_checksum(true)?;
                Encoder::Zstd(e)
            }
            Codec::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::new(level as u32),
            )),
            Codec::None => Encoder::None(inner),
        })
    }

    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Zstd(e) => e.finish(),
            Encoder::Gzip(e) => e.finish(),
            Encoder::None(mut w) => {
                w.flush()?;
                Ok(w)
            }
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Zstd(e) => e.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::None(w) => w.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Zstd(e) => e.write_all(buf),
            Encoder::Gzip(e) => e.write_all(buf),
            Encoder::None(w) => w.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Zstd(e) => e.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::None(w) => w.flush(),
        }
    }
}

/// A decompressing reader over `inner`. Accepts concatenated zstd frames and gzip members.
pub enum Decoder<R: BufRead> {
    Zstd(zstd::stream::read::Decoder<'static, R>),
    Gzip(flate2::bufread::MultiGzDecoder<R>),
    None(R),
}

impl<R: Read> Decoder<BufReader<R>> {
    pub fn new(codec: Codec, inner: R) -> io::Result<Self> {
        let buffered = BufReader::with_capacity(256 * 1024, inner);
        Ok(match codec {
            Codec::Zstd => Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(buffered)?),
            Codec::Gzip => Decoder::Gzip(flate2::bufread::MultiGzDecoder::new(buffered)),
            Codec::None => Decoder::None(buffered),
        })
    }
}

impl<R: BufRead> Decoder<R> {
    pub fn get_mut(&mut self) -> &mut R {
        match self {
            Decoder::Zstd(d) => d.get_mut(),
            Decoder::Gzip(d) => d.get_mut(),
            Decoder::None(r) => r,
        }
    }
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Zstd(d) => d.read(buf),
            Decoder::Gzip(d) => d.read(buf),
            Decoder::None(r) => r.read(buf),
        }
    }
}
