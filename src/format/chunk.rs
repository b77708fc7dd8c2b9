//! Chunk files: how bytes become part of a backup, and how they are read back.
//!
//! A chunk is compressed and hashed on the way into the store, which makes it visible only
//! once it is durable (see [`crate::storage`]). Only then is it returned as a [`Chunk`] that
//! the caller may list in the manifest. Reading verifies size and SHA-256 of the stored bytes
//! as they stream; [`ChunkReader::finish`] reports a mismatch.
//!
//! When the store's [`Sealing`](crate::encryption::Sealing) has recipients, each chunk is compressed, then encrypted into
//! one age file, then hashed: the manifest's sizes and SHA-256 are those of the encrypted
//! bytes, so they can be checked without a key. Reading reverses it with the store's
//! identities: hash, decrypt, decompress.

use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::encryption::{DecryptFailure, Sealed, Unsealed};
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

/// The stored bytes of a chunk on their way into the store, hashed.
type StoredWriter = HashingWriter<Box<dyn ObjectWriter>>;

/// Writes one chunk. Dropping it without [`ChunkWriter::finish`] abandons the object, which
/// then never becomes visible.
pub struct ChunkWriter {
    encoder: Option<Encoder<Sealed<StoredWriter>>>,
    path: PathBuf,
    rel: String,
    codec: Codec,
    raw_bytes: u64,
    encrypted: bool,
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
        let sealing = store.sealing();
        let sealed = sealing
            .seal(hashing)
            .map_err(|e| Error::io("starting encryption for", &path, e))?;
        let encoder = Encoder::new(codec, level, threads, sealed)
            .map_err(|e| Error::io("starting compressor for", &path, e))?;
        Ok(ChunkWriter {
            encoder: Some(encoder),
            path,
            rel: rel.to_string(),
            codec,
            raw_bytes: 0,
            encrypted: sealing.encrypts(),
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

    /// Completes the chunk: codec trailer, last age chunk, then the store makes it durable
    /// and visible.
    pub fn finish(mut self, rows: u64) -> Result<Chunk> {
        let enc = self.encoder.take().expect("not finished");
        let sealed = enc.finish().map_err(|e| self.write_error(e))?;
        let hashing = sealed.finish().map_err(|e| self.write_error(e))?;
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
            encrypted: self.encrypted,
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

/// The stored bytes of one chunk, hashed as they are read, shared between the decryption
/// that reads them and [`ChunkReader::finish`], which reads what is left.
#[derive(Clone)]
struct Tap(Arc<Mutex<HashingReader<Box<dyn Read + Send>>>>);

impl Read for Tap {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.lock().expect("tap poisoned").read(buf)
    }
}

/// Reads a chunk's decompressed payload while checking the stored bytes against the manifest.
pub struct ChunkReader {
    decoder: Decoder<BufReader<Unsealed<Tap>>>,
    raw: Tap,
    path: PathBuf,
    expected: Chunk,
}

impl ChunkReader {
    /// Opens a chunk for reading its payload. An encrypted chunk needs an identity of the
    /// store's [`Sealing`](crate::encryption::Sealing) that matches; when none does, or the file is damaged, the error
    /// names the file (a checksum mismatch first, when there is one).
    pub fn open(store: &Store, chunk: &Chunk) -> Result<Self> {
        let path = store.describe(&chunk.file);
        if chunk.encrypted && !store.sealing().can_decrypt() {
            return Err(Error::Refused(format!(
                "{}: the file is encrypted and no identity was given: pass --identity FILE or set {}",
                path.display(),
                crate::encryption::IDENTITY_FILE_ENV
            )));
        }
        let raw = Self::open_stored(store, chunk)?;
        let source = if chunk.encrypted {
            match store.sealing().unseal(raw.clone()) {
                Ok(source) => source,
                Err(why) => {
                    let mut raw = raw;
                    let checked = Self::drain_and_check(&mut raw, &path, chunk);
                    return Err(checked.err().unwrap_or_else(|| Error::corrupt(&path, why)));
                }
            }
        } else {
            Unsealed::Plain(raw.clone())
        };
        let decoder =
            Decoder::new(chunk.codec, source).map_err(|e| Error::io("opening chunk", &path, e))?;
        Ok(ChunkReader {
            decoder,
            raw,
            path,
            expected: chunk.clone(),
        })
    }

    /// Before a restore touches its target: refuses when `chunks` has an encrypted file that
    /// the store's identities cannot open (none given, or none matching); the error names it.
    pub fn check_readable<'a>(
        store: &Store,
        chunks: impl IntoIterator<Item = &'a Chunk>,
    ) -> Result<()> {
        if let Some(first) = chunks.into_iter().find(|c| c.encrypted) {
            ChunkReader::open(store, first)?;
        }
        Ok(())
    }

    /// Checks only the stored bytes (size and SHA-256), without decrypting or decompressing:
    /// what can be checked of an encrypted chunk without an identity.
    pub fn check_stored(store: &Store, chunk: &Chunk) -> Result<()> {
        let path = store.describe(&chunk.file);
        let mut raw = Self::open_stored(store, chunk)?;
        Self::drain_and_check(&mut raw, &path, chunk)
    }

    fn open_stored(store: &Store, chunk: &Chunk) -> Result<Tap> {
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
        Ok(Tap(Arc::new(Mutex::new(hashing))))
    }

    /// Reads the rest of the stored bytes and compares size and SHA-256 with the manifest.
    fn drain_and_check(raw: &mut Tap, path: &Path, expected: &Chunk) -> Result<()> {
        io::copy(raw, &mut io::sink()).map_err(|e| Error::io("reading chunk", path, e))?;
        let mut hashing = raw.0.lock().expect("tap poisoned");
        let digest = hex::encode(std::mem::take(&mut hashing.hasher).finalize());
        if hashing.bytes != expected.stored_bytes {
            return Err(Error::corrupt(
                path,
                format!(
                    "read {} bytes, the manifest says {}",
                    hashing.bytes, expected.stored_bytes
                ),
            ));
        }
        if digest != expected.sha256 {
            return Err(Error::corrupt(
                path,
                format!(
                    "SHA-256 mismatch: file has {digest}, manifest says {}",
                    expected.sha256
                ),
            ));
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the rest of the stored bytes and checks size and SHA-256. Call after the payload
    /// was read to its end; a mismatch means the data read must not be committed.
    pub fn finish(mut self) -> Result<()> {
        // Anything the decoder did not need still belongs to the file's checksum; through the
        // decryption, so that an age file's last chunk is authenticated too.
        let tail = io::copy(self.decoder.get_mut(), &mut io::sink());
        let decrypt_failure = match tail {
            Ok(_) => None,
            Err(e) if is_decrypt_failure(&e) => Some(e.to_string()),
            Err(e) => return Err(Error::io("reading chunk", &self.path, e)),
        };
        // The checksum decides first: a flipped byte is a checksum mismatch.
        Self::drain_and_check(&mut self.raw, &self.path, &self.expected)?;
        match decrypt_failure {
            Some(why) => Err(Error::corrupt(&self.path, why)),
            None => Ok(()),
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.decoder.read(buf).map_err(|e| {
            // The caller names the file; say only what went wrong.
            if is_decrypt_failure(&e) {
                return e;
            }
            io::Error::new(e.kind(), format!("cannot decompress: {e}"))
        })
    }
}

fn is_decrypt_failure(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<DecryptFailure>().is_some())
}
