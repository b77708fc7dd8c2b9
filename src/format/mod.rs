//! What a backup is made of, byte for byte: the manifest, chunk files, codecs and the framing of
//! COPY payloads. Nothing here talks to a server; everything reads and writes through
//! [`crate::storage`].
//!
//! pg_dump's own custom-format archive (a native backup's schema, a custom backup's stream) is
//! read here too, as far as restoring a part of it needs: [`archive_toc`] reads its header and
//! table of contents with the dependencies `pg_restore -l` does not show, [`toc_select`] decides
//! which entries a table or schema selection restores (and which foreign keys it must leave
//! out), and [`sql_requalify`] rewrites pg_dump's DDL for a table restored under another name.
//!
//! Which tables a backup takes is decided here as well, without a server: [`name_pattern`] reads
//! pg_dump's `-t`/`-n` patterns, [`filter_file`] its `--filter` files, and [`selection`] applies
//! pg_dump's rules to them (recorded in the manifest as `filters`).

pub mod archive_toc;
pub mod check;
pub mod chunk;
pub mod compress;
pub mod copyfmt;
pub mod filter_file;
pub mod largeobj;
pub mod manifest;
pub mod name_pattern;
pub mod selection;
pub mod sql_requalify;
pub mod stream;
pub mod toc_select;
