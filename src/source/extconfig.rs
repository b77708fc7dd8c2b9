//! Extension configuration tables and sequences: the members of an extension that it marked
//! with `pg_extension_config_dump(relation, condition)` (`pg_extension.extconfig`,
//! `extcondition`). Other extension members are created by the extension's script and never
//! dumped; these hold rows (or a sequence position) the user added, so pg_dump dumps them: a
//! table's rows that the condition selects, a sequence's value. The native backup does the
//! same.

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::format::manifest::ExtensionConfig;

/// SQL: the OIDs of every extension's configuration relations, for `IN (...)`.
pub const CONFIG_OIDS_SQL: &str =
    "SELECT pg_catalog.unnest(x.extconfig) FROM pg_catalog.pg_extension x WHERE x.extconfig IS NOT NULL";

/// Every configuration relation's OID with its extension and condition.
pub async fn config_relations(client: &Client) -> Result<HashMap<u32, ExtensionConfig>> {
    let rows = client
        .query(
            "SELECT cfg.oid, x.extname::text, COALESCE(x.extcondition[cfg.n], '')
             FROM pg_catalog.pg_extension x,
                  pg_catalog.unnest(x.extconfig) WITH ORDINALITY AS cfg(oid, n)",
            &[],
        )
        .await
        .map_err(|e| Error::query("listing extension configuration tables", e))?;
    Ok(rows
        .iter()
        .map(|r| {
            let filter: String = r.get(2);
            (
                r.get::<_, u32>(0),
                ExtensionConfig {
                    extension: r.get(1),
                    filter: (!filter.trim().is_empty()).then_some(filter),
                },
            )
        })
        .collect())
}
