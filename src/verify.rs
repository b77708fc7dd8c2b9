//! `verify`: proves a backup whole without a server. Reads the manifest, then every listed
//! file once: size, SHA-256 of the stored bytes, decompression, and the payload's framing
//! (COPY tuples or lines, large-object records) with the row count the manifest promises.
//!
//! An encrypted backup verified without an identity gets sizes and SHA-256 of its stored
//! (encrypted) bytes only, and a warning that the contents were not checked; with an identity
//! that matches, everything above, after decryption.

use crate::storage::Store;
use std::io::Read;

use crate::chunk::ChunkReader;
use crate::copyfmt::{walk, CopyFormat};
use crate::error::{Error, Result};
use crate::manifest::{Chunk, Manifest, Status};

/// What a chunk's payload is, and so how to walk it.
#[derive(Clone, Copy, Debug)]
pub enum Payload {
    Copy(CopyFormat),
    LargeObjects,
    /// Opaque bytes (schema archives, pg_dump streams): checksum and decompression only.
    Opaque,
}

/// The outcome of verifying one backup directory.
#[derive(Debug, Default)]
pub struct Report {
    pub files: u64,
    pub stored_bytes: u64,
    pub raw_bytes: u64,
    pub rows: u64,
    pub problems: Vec<Error>,
    /// Non-fatal remarks (for example: the backup spans several snapshots).
    pub warnings: Vec<String>,
}

/// Every chunk of the manifest with how to walk it.
pub fn chunks_with_payload(m: &Manifest) -> Vec<(&Chunk, Payload)> {
    let mut v: Vec<(&Chunk, Payload)> = Vec::new();
    v.extend(m.schema.iter().map(|s| (&s.chunk, Payload::Opaque)));
    for t in &m.tables {
        v.extend(t.chunks().map(|c| (c, Payload::Copy(t.copy_format))));
    }
    v.extend(
        m.large_objects
            .metadata
            .iter()
            .map(|c| (c, Payload::Opaque)),
    );
    v.extend(
        m.large_objects
            .chunks
            .iter()
            .map(|c| (c, Payload::LargeObjects)),
    );
    // Stream pieces (plain/custom) are one compressed stream: see verify_dir.
    v
}

/// Verifies `dir`. A manifest that cannot be read is an error; problems with files are
/// collected in the report, all of them, each naming its file.
pub fn verify_dir(dir: &Store) -> Result<Report> {
    let manifest = Manifest::load(dir)?;
    let mut report = Report::default();
    match manifest.status {
        Status::Complete => {}
        other => report.problems.push(Error::manifest(
            dir.describe(crate::manifest::MANIFEST_FILE),
            format!(
                "backup status is {other:?}, not complete{}",
                manifest
                    .error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ),
        )),
    }
    if !manifest.consistent {
        report.warnings.push(
            "this backup is not consistent: its units were read in different snapshots".into(),
        );
    }
    for t in &manifest.tables {
        for u in &t.units {
            if !u.done {
                report.problems.push(Error::manifest(
                    dir.describe(crate::manifest::MANIFEST_FILE),
                    format!(
                        "table {} unit {} was never completed",
                        t.display_name(),
                        u.index
                    ),
                ));
            }
        }
    }
    for (chunk, payload) in chunks_with_payload(&manifest) {
        report.files += 1;
        match verify_chunk(dir, chunk, payload) {
            Ok(()) => {
                report.stored_bytes += chunk.stored_bytes;
                report.raw_bytes += chunk.raw_bytes;
                if matches!(payload, Payload::Copy(_)) {
                    report.rows += chunk.rows;
                }
            }
            Err(e) => report.problems.push(e),
        }
    }
    if manifest.all_chunks().any(|c| c.encrypted) && !dir.sealing().can_decrypt() {
        report.warnings.push(contents_not_checked());
    }
    if manifest.stream.iter().any(|c| c.encrypted) && !dir.sealing().can_decrypt() {
        report.files += manifest.stream.len() as u64;
        for piece in &manifest.stream {
            match ChunkReader::check_stored(dir, piece) {
                Ok(()) => {
                    report.stored_bytes += piece.stored_bytes;
                    report.raw_bytes += piece.raw_bytes;
                }
                Err(e) => report.problems.push(e),
            }
        }
    } else if !manifest.stream.is_empty() {
        report.files += manifest.stream.len() as u64;
        match crate::pgstream::verify_stream(dir, &manifest) {
            Ok(raw) => {
                report.stored_bytes += manifest.stream.iter().map(|c| c.stored_bytes).sum::<u64>();
                report.raw_bytes += raw;
            }
            Err(e) => report.problems.push(e),
        }
    }
    report.warnings.extend(
        unlisted_files(dir, &manifest)
            .into_iter()
            .map(|e| e.to_string()),
    );
    Ok(report)
}

/// The warning of a verify that could not decrypt.
pub fn contents_not_checked() -> String {
    format!(
        "the backup is encrypted and no identity was given: sizes and SHA-256 of the stored files were checked, their contents were not (pass --identity FILE or set {} to check them too)",
        crate::encryption::IDENTITY_FILE_ENV
    )
}

/// Reads one chunk through, checking everything the manifest says about it. An encrypted
/// chunk without an identity to read it: its stored bytes only.
pub fn verify_chunk(dir: &Store, chunk: &Chunk, payload: Payload) -> Result<()> {
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
        Payload::LargeObjects => crate::largeobj::walk(&mut counter)
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

/// What interrupted writes left (temporary files, open uploads' markers) is worth a mention:
/// it is not part of the backup.
fn unlisted_files(dir: &Store, m: &Manifest) -> Vec<Error> {
    let listed: std::collections::HashSet<&str> = m.all_chunks().map(|c| c.file.as_str()).collect();
    let Ok(all) = dir.list() else {
        return Vec::new();
    };
    all.into_iter()
        .filter(|(name, _)| {
            (name.ends_with(crate::chunk::TMP_SUFFIX)
                || name.ends_with(crate::storage::s3::UPLOAD_SUFFIX))
                && !listed.contains(name.as_str())
        })
        .map(|(name, _)| {
            Error::corrupt(
                dir.describe(&name),
                "leftover temporary file (an interrupted write)",
            )
        })
        .collect()
}
