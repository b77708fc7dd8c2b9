//! Backup filters across a cluster's databases.
//!
//! Each pattern applies in every database; one with a database part (`shop.public.orders`,
//! `shop.billing`) only in the databases it names. Before anything is written, every database
//! to back up is asked which include patterns (`-t`, `-n`) match in it: a database where none
//! does (or none applies) is skipped (pg_dump would refuse it: "no matching tables were found"), and the run is
//! refused with pg_dump's words when no database has a match at all or, with `--strict-names`,
//! when a pattern matches in none of them.

use crate::error::{Error, Result};
use crate::format::selection::{Filters, Matches, Selection};
use crate::source::conn::ConnParams;

/// Why a database without a match is skipped (its entry's `error`).
pub const NO_MATCH: &str = "no table or schema here matches the -t/-n filters";

/// For each database of `names` (not yet skipped: `None`), whether it is skipped for the
/// filters; refuses the run as described in the module comment.
pub async fn check_databases(
    conn: &ConnParams,
    filters: &Filters,
    names: &[String],
) -> Result<Vec<Option<String>>> {
    let mut all = Matches {
        schema: filters.schema.iter().map(|p| (p.clone(), false)).collect(),
        table: filters.table.iter().map(|p| (p.clone(), false)).collect(),
    };
    let mut skips = Vec::with_capacity(names.len());
    if all.schema.is_empty() && all.table.is_empty() {
        // Only exclusions: every database is backed up, less what they leave out.
        skips.resize(names.len(), None);
        return Ok(skips);
    }
    for name in names {
        let selection = Selection::for_database(filters, name)?;
        if !selection.has_includes() {
            // Its include patterns all name other databases.
            skips.push(Some(NO_MATCH.to_string()));
            continue;
        }
        let session = conn.connect(name).await?;
        let client = &session.client;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(|e| Error::query(format!("database {name}: matching the filters"), e))?;
        let found = crate::source::selecting::matches(client, &selection).await?;
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| Error::query(format!("database {name}: matching the filters"), e))?;
        let any = found.schema.iter().chain(&found.table).any(|(_, hit)| *hit);
        skips.push((!any).then(|| NO_MATCH.to_string()));
        all.merge(&found);
    }
    all.check(filters.strict_names)?;
    Ok(skips)
}
