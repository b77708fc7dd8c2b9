//! Types whose binary COPY form is not portable between databases because their values are
//! object OIDs: the `reg*` types (`regclass`, `regtype`, ...) and every type built on one.
//!
//! Binary COPY writes a `regclass` as the table's OID; in the restored database every user
//! object has a new OID, so the number points at nothing (or at something else), silently.
//! Text COPY writes the name (`public.target`), which the restore resolves again. The built-in
//! type checks in [`crate::source::probe`] cannot see this: the `reg*` types are built-in base
//! types with binary I/O, and so are arrays of them and domains over them.

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::error::{Error, Result};

/// Every `reg*` type of PostgreSQL 13 and newer (`regcollation` is the youngest, from 13).
pub const REG_TYPES: &[&str] = &[
    "regclass",
    "regcollation",
    "regconfig",
    "regdictionary",
    "regnamespace",
    "regoper",
    "regoperator",
    "regproc",
    "regprocedure",
    "regrole",
    "regtype",
];

/// The OIDs of every type whose values hold a `reg*` value somewhere: the `reg*` types
/// themselves, arrays of such types, domains over them (recursively), composite types with
/// such a member, range types with such a subtype and their multiranges. Each maps to why, in
/// words, for the manifest's `copy_format_reason`. One catalog query: a recursive walk from the
/// `reg*` types up through every "is built on" edge.
pub async fn types_built_on_reg(
    client: &Client,
    server_version_num: i32,
) -> Result<HashMap<u32, String>> {
    // Multiranges (and pg_range.rngmultitypid) exist from 14 on.
    let multirange_edge = if server_version_num >= 140000 {
        "UNION ALL SELECT r.rngmultitypid, r.rngtypid FROM pg_catalog.pg_range r"
    } else {
        ""
    };
    let names = REG_TYPES
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "WITH RECURSIVE built_on(typ, part) AS (
             SELECT t.oid, t.typelem FROM pg_catalog.pg_type t WHERE t.typelem <> 0
             UNION ALL
             SELECT t.oid, t.typbasetype FROM pg_catalog.pg_type t WHERE t.typtype = 'd'
             UNION ALL
             SELECT t.oid, a.atttypid FROM pg_catalog.pg_type t
               JOIN pg_catalog.pg_attribute a ON a.attrelid = t.typrelid
             WHERE t.typtype = 'c' AND a.attnum > 0 AND NOT a.attisdropped
             UNION ALL
             SELECT r.rngtypid, r.rngsubtype FROM pg_catalog.pg_range r
             {multirange_edge}
         ),
         reg(typ, root) AS (
             SELECT t.oid, t.typname::text FROM pg_catalog.pg_type t
             WHERE t.typnamespace = 'pg_catalog'::pg_catalog.regnamespace
               AND t.typname IN ({names})
             UNION
             SELECT b.typ, reg.root FROM built_on b JOIN reg ON b.part = reg.typ
         )
         SELECT reg.typ, pg_catalog.min(reg.root), pg_catalog.bool_or(t.typname = reg.root
                                    AND t.typnamespace = 'pg_catalog'::pg_catalog.regnamespace)
         FROM reg JOIN pg_catalog.pg_type t ON t.oid = reg.typ
         GROUP BY reg.typ"
    );
    let rows = client
        .query(sql.as_str(), &[])
        .await
        .map_err(|e| Error::query("finding types built on reg* types", e))?;
    Ok(rows
        .iter()
        .map(|r| {
            let root: String = r.get(1);
            let itself: bool = r.get(2);
            let why = if itself {
                format!("{root} values are object OIDs, which differ in another database; text COPY writes them as names")
            } else {
                format!("built on {root}, whose values are object OIDs, which differ in another database; text COPY writes them as names")
            };
            (r.get::<_, u32>(0), why)
        })
        .collect())
}
