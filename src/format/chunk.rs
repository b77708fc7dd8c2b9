//! Chunk files: how bytes become part of a backup, and how they are read back.
//!
//! A chunk is compressed and hashed on the way into the store, which makes it visible only
//! once it is durable (see [`crate::storage`]). Only then is it returned as a [`Chunk`] that
//! the caller may list in the manifest. Reading verifies size and SHA-256 of the stored bytes
//! as they stream; [`ChunkReader::finish`] reports a mismatch.

use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::format::compress::{Codec, Decoder, Encoder};
use crate::format::manifest::Chunk;
use crate::storage::{ObjectWriter, Store};

pub use crate::storage::local::{create_private_dir, TMP_SUFFIX};

/// Counts and hashes every byte written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes one chunk. Dropping it without [`ChunkWriter::finish`] abandons the object, which
/// then never becomes visible.
pub struct ChunkWriter {
    encoder: Option<Encoder<HashingWriter<Box<dyn ObjectWriter>>>>,
    path: PathBuf,
    rel: String,
    codec: Codec,
    raw_bytes: u64,
}

/// What a chunk's size is expected to stay under, for object stores' first part size (parts
/// grow for larger objects): a chunk overshoots `--chunk-size` by at most one row (1 GB).
pub const CHUNK_SIZE_HINT: u64 = 4 * 1024 * 1024 * 1024;

impl ChunkWriter {
    /// Starts object `rel` of `store`. On a file system its directory must exist.
    pub fn create(
        store: &Store,
        rel: &str,
        codec: Codec,
        level: i32,
        threads: u32,
    ) -> Result<Self> {
        let path = store.describe(rel);
        let object = store.create(rel, CHUNK_SIZE_HINT)?;
        let hashing = HashingWriter {
            inner: object,
            hasher: Sha256::new(),
            bytes: 0,
        };
        let encoder = Encoder::new(codec, level, threads, hashing)
            .map_err(|e| Error::io("starting compressor for", &path, e))?;
        Ok(ChunkWriter {
            encoder: Some(encoder),
            path,
            rel: rel.to_string(),
            codec,
            raw_bytes: 0,
        })
    }

    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let enc = self.encoder.as_mut().expect("not finished");
        enc.write_all(data).map_err(|e| self.write_error(e))?;
        self.raw_bytes += data.len() as u64;
        Ok(())
    }

    /// Uncompressed bytes written so far.
    pub fn raw_bytes(&self) -> u64 {
        self.raw_bytes
    }

    /// Completes the chunk: codec trailer, then the store makes it durable and visible.
    pub fn finish(mut self, rows: u64) -> Result<Chunk> {
        let enc = self.encoder.take().expect("not finished");
        let hashing = enc.finish().map_err(|e| self.write_error(e))?;
        let HashingWriter {
            inner,
            hasher,
            bytes,
        } = hashing;
        let stored = inner.finish().map_err(|e| match e {
            Error::DiskFull { path, .. } => Error::DiskFull {
                path,
                written: self.raw_bytes,
            },
            e => e,
        })?;
        if stored != bytes {
            return Err(Error::corrupt(
                &self.path,
                format!("the store holds {stored} bytes, {bytes} were written"),
            ));
        }
        Ok(Chunk {
            file: self.rel.clone(),
            codec: self.codec,
            rows,
            raw_bytes: self.raw_bytes,
            stored_bytes: bytes,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    fn write_error(&self, e: io::Error) -> Error {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            return Error::DiskFull {
                path: self.path.clone(),
                written: self.raw_bytes,
            };
        }
        Error::io("writing chunk", &self.path, e)
    }
}

/// Counts and hashes every byte read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Reads a chunk's decompressed payload while checking the stored bytes against the manifest.
pub struct ChunkReader {
    decoder: Decoder<BufReader<HashingReader<Box<dyn Read + Send>>>>,
    path: PathBuf,
    expected: Chunk,
}

impl ChunkReader {
    pub fn open(store: &Store, chunk: &Chunk) -> Result<Self> {
        let path = store.describe(&chunk.file);
        let Some((file, len)) = store.open(&chunk.file)? else {
            return Err(Error::corrupt(&path, "chunk file is missing"));
        };
        if len != chunk.stored_bytes {
            return Err(Error::corrupt(
                &path,
                format!(
                    "size is {len} bytes, the manifest says {} (truncated or replaced)",
                    chunk.stored_bytes
                ),
            ));
        }
        let hashing = HashingReader {
            inner: file,
            hasher: Sha256::new(),
            bytes: 0,
        };
        let decoder =
            Decoder::new(chunk.codec, hashing).map_err(|e| Error::io("opening chunk", &path, e))?;
        Ok(ChunkReader {
            decoder,
            path,
            expected: chunk.clone(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the rest of the stored bytes and checks size and SHA-256. Call after the payload
    /// was read to its end; a mismatch means the data read must not be committed.
    pub fn finish(mut self) -> Result<()> {
        let inner = self.decoder.get_mut();
        // Anything the decoder did not need still belongs to the file's checksum.
        io::copy(inner, &mut io::sink()).map_err(|e| Error::io("reading chunk", &self.path, e))?;
        let hashing = inner.get_mut();
        let digest = hex::encode(std::mem::take(&mut hashing.hasher).finalize());
        if hashing.bytes != self.expected.stored_bytes {
            return Err(Error::corrupt(
                &self.path,
                format!(
                    "read {} bytes, the manifest says {}",
                    hashing.bytes, self.expected.stored_bytes
                ),
            ));
        }
        if digest != self.expected.sha256 {
            return Err(Error::corrupt(
                &self.path,
                format!(
                    "SHA-256 mismatch: file has {digest}, manifest says {}",
                    self.expected.sha256
                ),
            ));
        }
        Ok(())
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.decoder.read(buf).map_err(|e| {
            // The caller names the file; say only what went wrong.
            io::Error::new(e.kind(), format!("cannot decompress: {e}"))
        })
    }
}
