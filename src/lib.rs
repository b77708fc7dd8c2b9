//! dbbackup: parallel, chunked, checksummed logical backups of PostgreSQL.
//!
//! The folders are the layers, and a module imports only from its own layer or the ones below:
//!
//! ```text
//! cli (binary) → repo → cluster, drill → backup / restore / verify / contents → source → format → storage
//!                     error, progress, clock, memory: usable by all
//! ```
//!
//! - [`storage`]: where backups live (a local directory or an S3 prefix) and the backup lock.
//! - [`format`](mod@format): what a backup is made of: manifest, chunk files, codecs, COPY
//!   framing, the large-object records, the pg_dump stream's pieces, checking a chunk.
//! - [`source`]: the database side: connections, probe and plan, the native COPY and
//!   large-object dumps, the PostgreSQL client tools run as children, hot standbys (settings,
//!   recovery conflicts, `--pause-replay`).
//! - [`backup`], [`restore`], [`verify`], [`contents`]: the operations on one database.
//! - [`cluster`]: every database of a server, each through the operations above.
//! - [`repo`]: many backups under one location: layout, catalog (`list`), names
//!   (`DB@latest`), retention (`expire`), the Prometheus metrics file.
//! - [`drill`]: a backup restored into a scratch database and compared with its manifest.

pub mod backup;
pub mod clock;
pub mod cluster;
pub mod contents;
pub mod drill;
pub mod encryption;
pub mod error;
pub mod format;
pub mod memory;
pub mod progress;
pub mod repo;
pub mod restore;
pub mod source;
pub mod storage;
pub mod verify;

pub use error::{Error, Result};
