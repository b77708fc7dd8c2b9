//! Checking one chunk file against its manifest entry, without a server: the stored bytes'
//! size and SHA-256, decompression, the payload's framing (COPY tuples or lines, large-object
//! records) and the row count. Used by verify, by resume (to keep only provably finished
//! units) and by restore (opaque chunks before they are fed to a tool).

use std::io::Read;

use crate::error::{Error, Result};
use crate::format::chunk::ChunkReader;
use crate::format::copyfmt::{walk, CopyFormat};
use crate::format::manifest::Chunk;
use crate::storage::Store;

/// What a chunk's payload is, and so how to walk it.
#[derive(Clone, Copy, Debug)]
pub enum Payload {
    Copy(CopyFormat),
    LargeObjects,
    /// Opaque bytes (schema archives, pg_dump streams): checksum and decompression only.
    Opaque,
}

/// Reads one chunk through, checking everything the manifest says about it.
pub fn verify_chunk(dir: &Store, chunk: &Chunk, payload: Payload) -> Result<()> {
    // An encrypted chunk without an identity to read it: its stored bytes only.
    if chunk.encrypted && !dir.sealing().can_decrypt() {
        return ChunkReader::check_stored(dir, chunk);
    }
    let mut reader = ChunkReader::open(dir, chunk)?;
    let path = reader.path().to_path_buf();
    let mut counter = CountingReader {
        inner: &mut reader,
        bytes: 0,
    };
    let walked: std::result::Result<Option<u64>, String> = match payload {
        Payload::Copy(format) => walk(format, &mut counter)
            .map(Some)
            .map_err(|e| e.to_string()),
        Payload::LargeObjects => crate::format::largeobj::walk(&mut counter)
            .map(Some)
            .map_err(|e| e.to_string()),
        Payload::Opaque => std::io::copy(&mut counter, &mut std::io::sink())
            .map(|_| None)
            .map_err(|e| e.to_string()),
    };
    let raw = counter.bytes;
    // The checksum decides first: a flipped byte is reported as a checksum mismatch, whatever
    // it did to decompression or framing.
    reader.finish()?;
    let rows = walked.map_err(|e| Error::corrupt(&path, e))?;
    if raw != chunk.raw_bytes {
        return Err(Error::corrupt(
            &path,
            format!(
                "decompressed to {raw} bytes, the manifest says {}",
                chunk.raw_bytes
            ),
        ));
    }
    if let Some(rows) = rows {
        if rows != chunk.rows {
            return Err(Error::corrupt(
                &path,
                format!("holds {rows} rows, the manifest says {}", chunk.rows),
            ));
        }
    }
    Ok(())
}

struct CountingReader<R> {
    inner: R,
    bytes: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}
