//! `backup single`: one database, one consistent snapshot, many parallel COPY streams.
//!
//! The coordinator connection opens a REPEATABLE READ transaction, probes the catalog (which
//! fixes the snapshot), locks every table it will dump (ACCESS SHARE, with a lock timeout),
//! exports the snapshot and keeps it open until every worker and pg_dump call is done. Workers
//! import it with `SET TRANSACTION SNAPSHOT`, so every row comes from the same instant.
//!
//! Files, from the bottom up: `options.rs` and `sessions.rs` (shared by all), [`probe`] (the
//! probe and the client tools), [`resume`] (what of an earlier run is kept), `workers.rs` (the
//! units) under `native.rs` (the coordinator), [`stream`] (pg_dump's plain/custom formats), and
//! on top [`strategy`], which probes and chooses between native and stream.

pub mod budget;
mod native;
mod options;
pub mod probe;
pub mod resume;
mod sessions;
mod standby;
pub mod strategy;
pub mod stream;
mod workers;

pub use native::{backup_database, backup_native};
pub use options::{options_record, prepare_out_dir, BackupOptions, ReplayPause};
pub use sessions::Sessions;
pub use standby::pause_if_asked;
