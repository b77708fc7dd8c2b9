//! What a backup is made of, byte for byte: the manifest, chunk files, codecs and the framing of
//! COPY payloads. Nothing here talks to a server; everything reads and writes through
//! [`crate::storage`].

pub mod check;
pub mod chunk;
pub mod compress;
pub mod copyfmt;
pub mod filter_file;
pub mod largeobj;
pub mod manifest;
pub mod name_pattern;
pub mod selection;
pub mod stream;
