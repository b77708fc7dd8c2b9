//! The database side: connection settings and TLS, the catalog probe and the plan, the search
//! for values too large for pg_dump, the native COPY and large-object dumps with their sink into
//! chunk files, and the PostgreSQL client tools (pg_dump, pg_restore, psql) run as children.
//! Writes backups only through [`crate::format`].

pub mod child;
pub mod conn;
pub mod copy;
pub mod dbprops;
pub mod extconfig;
mod first_error;
pub mod large_values;
pub mod largeobj;
pub mod pgdump;
pub mod pgrestore;
pub mod pgtools;
pub mod plan;
pub mod probe;
pub mod regtypes;
pub mod script_filter;
pub mod selecting;
pub mod sink;
pub(crate) mod snapshot_loss;
pub mod standby;
