//! dbbackup: parallel, chunked, checksummed logical backups of PostgreSQL.
//!
//! The modules follow the data: [`probe`] → [`plan`] → dump ([`backup`], [`copy`], [`largeobj`],
//! [`pgdump`]) → [`sink`] / [`compress`] → [`chunk`] / [`manifest`]. [`restore`] and [`verify`]
//! read the same manifest and chunk types. [`strategy`] probes and chooses between the native
//! engine and pg_dump's plain/custom formats streamed through [`pgstream`].

pub mod backup;
pub mod child;
pub mod chunk;
pub mod cluster;
pub mod compress;
pub mod conn;
pub mod copy;
pub mod copyfmt;
pub mod dbprops;
pub mod dirlock;
pub mod encryption;
pub mod error;
pub mod largeobj;
pub mod manifest;
pub mod pgdump;
pub mod pgrestore;
pub mod pgstream;
pub mod pgtools;
pub mod plan;
pub mod probe;
pub mod progress;
pub mod restore;
pub mod resume;
pub mod sink;
mod snapshot_loss;
pub mod storage;
pub mod strategy;
pub mod tls;
pub mod verify;

pub use error::{Error, Result};
