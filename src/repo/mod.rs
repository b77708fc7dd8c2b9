//! The backup repository: many backups under one location, named by database and time.
//!
//! - [`layout`]: where a backup goes (`LOCATION/<database>/<20261129T020000Z>/`);
//! - [`catalog`]: what a repository holds, read from manifests and locks;
//! - [`names`]: `DB@latest`, `DB@<time>`, `cluster@latest`;
//! - [`retention`]: the keep rules (restic's meaning), a pure function;
//! - [`expire`]: the plan and the crash-safe deletion;
//! - [`metrics`]: the Prometheus textfile.
//!
//! Sits between `cluster` and the command line: it reads what backup, cluster and storage
//! wrote and never calls into the command line.

pub mod catalog;
pub mod expire;
pub mod layout;
pub mod metrics;
pub mod names;
pub mod retention;
