//! Backup locations as the user gives them: a directory or `s3://BUCKET/PREFIX`, with the
//! S3 endpoint of `--s3-endpoint` (else `AWS_ENDPOINT_URL`, else AWS).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use dbbackup::encryption::Sealing;
use dbbackup::storage::Store;
use dbbackup::Result;

use super::args::IdentityArgs;

static S3_ENDPOINT: OnceLock<Option<String>> = OnceLock::new();

/// Records `--s3-endpoint` for the run (before any location is opened).
pub fn set_s3_endpoint(endpoint: Option<String>) {
    let _ = S3_ENDPOINT.set(endpoint);
}

/// Opens the location `path` names.
pub fn open(path: &Path) -> Result<Store> {
    let endpoint = S3_ENDPOINT.get().and_then(|e| e.as_deref());
    Store::at(&path.to_string_lossy(), endpoint)
}

/// Opens the location `path` names, reading encrypted files with the identities of `keys`.
pub fn open_with_identities(path: &Path, keys: &IdentityArgs) -> Result<Store> {
    let sealing = Sealing::default().with_identity_files(&keys.identity)?;
    Ok(open(path)?.with_sealing(Arc::new(sealing)))
}
