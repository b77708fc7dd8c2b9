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

    /// Memory one single-threaded compressing stream at `level` holds: zstd's own estimate
    /// (window, tables and buffers grow with the level: about 1.3 MiB at 3, 80 MiB at 19);
    /// deflate's window and tables; our output buffer for none.
    pub fn compressor_memory(self, level: i32) -> u64 {
        match self {
            // SAFETY: a pure function of its argument.
            Codec::Zstd => {
                (unsafe { zstd::zstd_safe::zstd_sys::ZSTD_estimateCStreamSize(level) }) as u64
            }
            // miniz_oxide's compressor state (hash chains, dictionary, output buffer).
            Codec::Gzip => 320 * 1024,
            Codec::None => 0,
        }
    }

    /// Memory one decompressing stream of data written at `level` holds: zstd's window for
    /// that level plus its buffers; deflate's 32 KiB window and tables.
    pub fn decompressor_memory(self, level: i32) -> u64 {
        match self {
            Codec::Zstd => {
                // SAFETY: pure functions of their arguments; the parameters of `level` for input
                // of unknown size give the window a decoder must hold.
                let window = unsafe {
                    let p = zstd::zstd_safe::zstd_sys::ZSTD_getCParams(level, 0, 0);
                    1usize << p.windowLog
                };
                (unsafe { zstd::zstd_safe::zstd_sys::ZSTD_estimateDStreamSize(window) }) as u64
                    + super::stream::IO_BUF as u64
            }
            Codec::Gzip => 64 * 1024 + super::stream::IO_BUF as u64,
            Codec::None => super::stream::IO_BUF as u64,
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

/// zstd's job size with worker threads: the input each thread compresses at once. zstd's own
/// default (4 × the window: 8 MiB at level 3) costs more than twice the memory per thread for
/// a ratio within a percent.
pub const ZSTD_JOB_BYTES: u64 = 2 * 1024 * 1024;

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
                    // Bounds each thread's buffers (see ZSTD_JOB_BYTES).
                    e.set_parameter(zstd::stream::raw::CParameter::JobSize(
                        ZSTD_JOB_BYTES as u32,
                    ))?;
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

#[cfg(test)]
mod memory_tests {
    use super::Codec;

    #[test]
    fn memory_grows_with_the_level() {
        let low = Codec::Zstd.compressor_memory(1);
        let default = Codec::Zstd.compressor_memory(3);
        let high = Codec::Zstd.compressor_memory(19);
        assert!(low <= default && default < high, "{low} {default} {high}");
        assert!(default < 8 << 20 && high > 32 << 20, "{default} {high}");
        assert!(Codec::Zstd.decompressor_memory(19) > Codec::Zstd.decompressor_memory(3));
    }
}
