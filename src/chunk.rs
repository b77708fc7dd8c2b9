//! Chunk files: how bytes become part of a backup, and how they are read back.
//!
//! A chunk is written under a temporary name, compressed and hashed on the way, fsynced, then
//! renamed into place (and the directory fsynced). Only then is it returned as a [`Chunk`]
//! that the caller may list in the manifest. Reading verifies size and SHA-256 of the stored
//! bytes as they stream; [`ChunkReader::finish`] reports a mismatch.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::compress::{Codec, Decoder, Encoder};
use crate::error::{Error, Result};
use crate::manifest::{sync_dir, Chunk};

/// Suffix of files being written; anything with it is garbage after a crash.
pub const TMP_SUFFIX: &str = ".tmp";

/// Creates `dir` (and parents) private to the owner (0700).
pub fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("creating directory", dir, e))
}

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

/// Writes one chunk file. Dropping it without [`ChunkWriter::finish`] deletes the temp file.
pub struct ChunkWriter {
    encoder: Option<Encoder<HashingWriter<BufWriter<File>>>>,
    root: PathBuf,
    rel: String,
    tmp: PathBuf,
    codec: Codec,
    raw_bytes: u64,
}

impl ChunkWriter {
    /// Starts `root/rel` (written as `root/rel.tmp` until finished). The parent must exist.
    pub fn create(root: &Path, rel: &str, codec: Codec, level: i32, threads: u32) -> Result<Self> {
        let tmp = root.join(format!("{rel}{TMP_SUFFIX}"));
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::io("creating chunk", &tmp, e))?;
        let hashing = HashingWriter {
            inner: BufWriter::with_capacity(256 * 1024, file),
            hasher: Sha256::new(),
            bytes: 0,
        };
        let encoder = Encoder::new(codec, level, threads, hashing)
            .map_err(|e| Error::io("starting compressor for", &tmp, e))?;
        Ok(ChunkWriter {
            encoder: Some(encoder),
            root: root.to_path_buf(),
            rel: rel.to_string(),
            tmp,
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

    /// Completes the file: codec trailer, fsync, rename into place, fsync of the directory.
    pub fn finish(mut self, rows: u64) -> Result<Chunk> {
        let enc = self.encoder.take().expect("not finished");
        let hashing = enc.finish().map_err(|e| self.write_error(e))?;
        let HashingWriter {
            inner,
            hasher,
            bytes,
        } = hashing;
        let file = inner
            .into_inner()
            .map_err(|e| self.write_error(e.into_error()))?;
        file.sync_all().map_err(|e| self.write_error(e))?;
        drop(file);
        let dest = self.root.join(&self.rel);
        fs::rename(&self.tmp, &dest).map_err(|e| Error::io("renaming chunk", &dest, e))?;
        sync_dir(dest.parent().unwrap_or(&self.root))?;
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
                path: self.root.join(&self.rel),
                written: self.raw_bytes,
            };
        }
        Error::io("writing chunk", &self.tmp, e)
    }
}

impl Drop for ChunkWriter {
    fn drop(&mut self) {
        if self.encoder.is_some() {
            // Abandoned (error or cancel): a partial file must never look like a chunk.
            let _ = fs::remove_file(&self.tmp);
        }
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
    decoder: Decoder<BufReader<HashingReader<File>>>,
    path: PathBuf,
    expected: Chunk,
}

impl ChunkReader {
    pub fn open(root: &Path, chunk: &Chunk) -> Result<Self> {
        let path = root.join(&chunk.file);
        let file = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::corrupt(&path, "chunk file is missing"),
            _ => Error::io("opening chunk", &path, e),
        })?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("reading metadata of", &path, e))?
            .len();
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
