//! The command-line edge: parse, build engine options, run, print one line on error.

pub mod args;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod contents;
pub mod drill;
pub mod filter_args;
pub mod location;
pub mod progress;
pub mod repo;
pub mod resolve;
pub mod restore_filter;
pub mod store_log;
pub mod usage;
