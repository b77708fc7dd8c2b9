//! The record format of large-object chunk files: records
//! `oid: u32 | offset: u64 | length: u32 | bytes` (big-endian), each at most [`PIECE`] bytes.
//! Written by [`crate::source::largeobj`], read back by restore and verify.

use std::io::Read;

use bytes::Bytes;

/// Largest record payload: bytes read per `lo_get` call and stored per record.
pub const PIECE: usize = 1024 * 1024;
pub const RECORD_HEADER: usize = 16;

/// One record of a large-object chunk.
pub struct Record {
    pub oid: u32,
    pub offset: u64,
    pub data: Bytes,
}

/// Reads records from a decompressed chunk; `Ok(None)` at a clean end.
pub fn read_record<R: Read>(r: &mut R) -> std::io::Result<Option<Record>> {
    let mut header = [0u8; RECORD_HEADER];
    let mut got = 0;
    while got < RECORD_HEADER {
        let n = r.read(&mut header[got..])?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "large-object chunk ends inside a record header",
            ));
        }
        got += n;
    }
    let oid = u32::from_be_bytes(header[0..4].try_into().unwrap());
    let offset = u64::from_be_bytes(header[4..12].try_into().unwrap());
    let len = u32::from_be_bytes(header[12..16].try_into().unwrap()) as usize;
    if len > PIECE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("large-object record of {len} bytes exceeds {PIECE}"),
        ));
    }
    let mut data = vec![0u8; len];
    r.read_exact(&mut data)?;
    Ok(Some(Record {
        oid,
        offset,
        data: Bytes::from(data),
    }))
}

/// Walks a decompressed chunk, returning its record count.
pub fn walk<R: Read>(mut r: R) -> std::io::Result<u64> {
    let mut n = 0;
    while read_record(&mut r)?.is_some() {
        n += 1;
    }
    Ok(n)
}
