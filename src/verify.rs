//! `verify`: proves a backup whole without a server. Reads the manifest, then every listed
//! file once: size, SHA-256 of the stored bytes, decompression, and the payload's framing
//! (COPY tuples or lines, large-object records) with the row count the manifest promises.
//!
//! An encrypted backup verified without an identity gets sizes and SHA-256 of its stored
//! (encrypted) bytes only, and a warning that the contents were not checked; with an identity
//! that matches, everything above, after decryption.

use crate::storage::Store;

use std::io::{self, Read, Write};
use std::process::Stdio;

use crate::error::{Error, Result};
use crate::format::check::{verify_chunk, Payload};
use crate::format::manifest::StrategyKind;
use crate::format::manifest::{Chunk, Manifest, Status};
use crate::format::stream::{finish_stream, open_stream, stream_error, IO_BUF};
use crate::source::child::Child;

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
            dir.describe(crate::format::manifest::MANIFEST_FILE),
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
                    dir.describe(crate::format::manifest::MANIFEST_FILE),
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
            match crate::format::chunk::ChunkReader::check_stored(dir, piece) {
                Ok(()) => {
                    report.stored_bytes += piece.stored_bytes;
                    report.raw_bytes += piece.raw_bytes;
                }
                Err(e) => report.problems.push(e),
            }
        }
    } else if !manifest.stream.is_empty() {
        report.files += manifest.stream.len() as u64;
        match verify_stream(dir, &manifest) {
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

/// What interrupted writes left (temporary files, open uploads' markers) is worth a mention:
/// it is not part of the backup.
fn unlisted_files(dir: &Store, m: &Manifest) -> Vec<Error> {
    let listed: std::collections::HashSet<&str> = m.all_chunks().map(|c| c.file.as_str()).collect();
    let Ok(all) = dir.list() else {
        return Vec::new();
    };
    all.into_iter()
        .filter(|(name, _)| {
            (name.ends_with(crate::format::chunk::TMP_SUFFIX)
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

/// Verifies a plain/custom backup's stream: every piece's size and SHA-256, decompression of
/// the whole, its size, and for custom format that `pg_restore --list` reads the archive.
/// Returns the decompressed size.
pub fn verify_stream(dir: &Store, m: &Manifest) -> Result<u64> {
    let mut dec = open_stream(dir, m)?;
    let mut lister = match m.strategy.kind {
        StrategyKind::Custom => Some(Child::spawn(
            "pg_restore",
            &["--list".into()],
            &[],
            Stdio::piped(),
            Stdio::null(),
        )?),
        _ => None,
    };
    let mut stdin = lister.as_mut().and_then(|c| c.stdin());
    let mut buf = vec![0u8; IO_BUF];
    let mut raw = 0u64;
    loop {
        let n = match dec.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(stream_error(&mut dec, e)),
        };
        raw += n as u64;
        if let Some(w) = stdin.as_mut() {
            // pg_restore --list stops reading after the table of contents.
            if w.write_all(&buf[..n]).is_err() {
                stdin = None;
            }
        }
    }
    finish_stream(&mut dec, m, dir, raw)?;
    drop(stdin);
    if let Some(child) = lister {
        child.wait().map_err(|e| {
            Error::corrupt(
                dir.describe(&m.stream[0].file),
                format!("pg_restore --list cannot read the custom-format archive: {e}"),
            )
        })?;
    }
    Ok(raw)
}
