//! Values too large for pg_dump's text output: found cheaply, before pg_dump is started.
//!
//! pg_dump writes every value as COPY text, which the server builds in one allocation, and
//! PostgreSQL allocates at most 1 GB at once (MaxAllocSize). A `bytea` is written as hex, twice
//! its size, so one over ~512 MB fails; a text value's COPY escaping can double it too. pg_dump
//! then dies with "invalid memory alloc request size" or "out of memory", possibly hours in.
//! [`LARGE_VALUE_LIMIT`] (500 MiB) is the one threshold for all types: under it even a fully
//! doubled value stays below 1 GB.
//!
//! Finding such values costs one pass over the main heap of a few tables, never their TOAST:
//! - only a table whose TOAST relation is at least [`MIN_TOAST_BYTES`] can hold one (a value
//!   that large is always stored out of line, and neither pglz nor lz4 compresses more than
//!   ~255:1), and only its columns of a type that can be that large ([`Measure`]);
//! - `octet_length` of a toasted `bytea`/`text`/`bpchar` reads the size in the TOAST pointer
//!   (`toast_raw_datum_size`) without fetching the value, so `SELECT max(octet_length(a)), …
//!   FROM ONLY t` reads the heap only. Measured: 1.1–1.5 s for a 1.46 GB heap of 20 M rows.
//!
//! Run it inside the probe's transaction (its tables are already locked there), so it needs no
//! connection of its own and is cancelled with the probe.

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::format::manifest::quote_ident;
use crate::source::probe::TableInfo;

/// Values larger than this cannot go through pg_dump's plain or custom format.
pub const LARGE_VALUE_LIMIT: u64 = 500 << 20;

/// The smallest TOAST relation that can hold one value over [`LARGE_VALUE_LIMIT`]: the limit
/// over 256, since pglz (at most ~90:1) and lz4 (at most 255:1, one length byte per 255 bytes
/// of a match) compress no better, and TOAST pages add their own overhead on top (measured: a
/// 510 MiB lz4-compressed run of one byte takes 2104 kB, i.e. 248:1). Uncompressed (EXTERNAL)
/// storage needs the full size.
pub const MIN_TOAST_BYTES: u64 = LARGE_VALUE_LIMIT / 256;

/// How a column's values are sized without reading them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// `octet_length(col::T)`: the raw size (T is `bytea`, `text` or `bpchar`, reached from
    /// the column's type by a cast that only relabels: domains over them, `varchar`, `xml`).
    Raw(&'static str),
    /// `pg_column_size(col)`: the stored, possibly compressed size, a lower bound of the raw
    /// one. For the types with no size function that skips the value: `json` (its cast to
    /// text runs json_out, which would fetch every value), `jsonb` (at most 256 MB anyway) and
    /// arrays of any of the types here.
    Stored,
}

impl Measure {
    fn expr(self, column: &str) -> String {
        match self {
            Measure::Raw(cast) => {
                format!("max(octet_length({}::{cast}))::bigint", quote_ident(column))
            }
            Measure::Stored => format!("max(pg_column_size({}))::bigint", quote_ident(column)),
        }
    }
}

/// A table that may hold a value over the limit, and the columns that can.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub schema: String,
    pub table: String,
    /// `pg_relation_size` of the main heap: what measuring it reads.
    pub heap_bytes: u64,
    pub toast_bytes: u64,
    pub columns: Vec<(String, Measure)>,
}

/// A value pg_dump cannot carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LargeValue {
    pub schema: String,
    pub table: String,
    pub column: String,
    /// The largest value's size in bytes (for [`Measure::Stored`] its stored size).
    pub bytes: u64,
    /// True when `bytes` is the stored size, so the value is at least that large.
    pub at_least: bool,
}

impl LargeValue {
    /// "table public.blobs column b holds a value of 612.0 MiB"
    pub fn describe(&self) -> String {
        format!(
            "table {}.{} column {} holds a value of {}{}",
            self.schema,
            self.table,
            self.column,
            if self.at_least { "at least " } else { "" },
            crate::progress::human_bytes(self.bytes)
        )
    }
}

/// The tables among `tables` that can hold a value over [`LARGE_VALUE_LIMIT`] (catalog only),
/// largest TOAST first: the likeliest holders are measured first.
pub async fn candidates(client: &Client, tables: &[TableInfo]) -> Result<Vec<Candidate>> {
    let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
    // Every type's base through (possibly stacked) domains; for arrays also the element's base.
    let rows = client
        .query(
            "WITH RECURSIVE base(oid, base) AS (
                 SELECT oid, oid FROM pg_type WHERE typtype <> 'd'
                 UNION ALL
                 SELECT t.oid, b.base FROM pg_type t JOIN base b ON b.oid = t.typbasetype
                 WHERE t.typtype = 'd'
             ),
             sized(oid, measure) AS (
                 SELECT b.oid,
                        CASE WHEN b.base = 'bytea'::regtype THEN 'bytea'
                             WHEN b.base IN ('text'::regtype, 'varchar'::regtype, 'xml'::regtype)
                                  THEN 'text'
                             WHEN b.base = 'bpchar'::regtype THEN 'bpchar'
                             WHEN b.base IN ('json'::regtype, 'jsonb'::regtype) THEN 'stored'
                             WHEN e.base IN ('bytea'::regtype, 'text'::regtype, 'varchar'::regtype,
                                             'xml'::regtype, 'bpchar'::regtype, 'json'::regtype,
                                             'jsonb'::regtype) THEN 'stored'
                        END
                 FROM base b JOIN pg_type bt ON bt.oid = b.base
                 LEFT JOIN base e ON bt.typcategory = 'A' AND e.oid = bt.typelem
             )
             SELECT n.nspname, c.relname, pg_relation_size(c.oid),
                    pg_relation_size(c.reltoastrelid), a.attname, s.measure
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid
             JOIN sized s ON s.oid = a.atttypid
             WHERE c.oid = ANY($1) AND c.reltoastrelid <> 0
               AND pg_relation_size(c.reltoastrelid) >= $2
               AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
               AND s.measure IS NOT NULL
             ORDER BY 4 DESC, 1, 2, a.attnum",
            &[&oids, &(MIN_TOAST_BYTES as i64)],
        )
        .await
        .map_err(|e| Error::query("finding tables that can hold values over 500 MiB", e))?;
    let mut found: Vec<Candidate> = Vec::new();
    for r in &rows {
        let (schema, table): (String, String) = (r.get(0), r.get(1));
        let measure = match r.get::<_, &str>(5) {
            "bytea" => Measure::Raw("bytea"),
            "text" => Measure::Raw("text"),
            "bpchar" => Measure::Raw("bpchar"),
            _ => Measure::Stored,
        };
        let column = (r.get::<_, String>(4), measure);
        match found.last_mut() {
            Some(c) if c.schema == schema && c.table == table => c.columns.push(column),
            _ => found.push(Candidate {
                schema,
                table,
                heap_bytes: r.get::<_, i64>(2).max(0) as u64,
                toast_bytes: r.get::<_, i64>(3).max(0) as u64,
                columns: vec![column],
            }),
        }
    }
    Ok(found)
}

/// Measures the candidates' columns, one heap pass per table, and returns the values over
/// [`LARGE_VALUE_LIMIT`]. Stops after the first table that has any: one is enough to decide,
/// and the others would cost a pass each.
pub async fn measure(client: &Client, candidates: &[Candidate]) -> Result<Vec<LargeValue>> {
    for c in candidates {
        let columns: Vec<String> = c.columns.iter().map(|(n, m)| m.expr(n)).collect();
        let sql = format!(
            "SELECT {} FROM ONLY {}.{}",
            columns.join(", "),
            quote_ident(&c.schema),
            quote_ident(&c.table)
        );
        let row = client.query_one(&sql, &[]).await.map_err(|e| {
            Error::query(
                format!(
                    "measuring the largest values of table {}.{}",
                    c.schema, c.table
                ),
                e,
            )
        })?;
        let over: Vec<LargeValue> = c
            .columns
            .iter()
            .enumerate()
            .filter_map(|(i, (name, m))| {
                let bytes = row.get::<_, Option<i64>>(i)?.max(0) as u64;
                (bytes > LARGE_VALUE_LIMIT).then(|| LargeValue {
                    schema: c.schema.clone(),
                    table: c.table.clone(),
                    column: name.clone(),
                    bytes,
                    at_least: *m == Measure::Stored,
                })
            })
            .collect();
        if !over.is_empty() {
            return Ok(over);
        }
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toast_bound_is_the_limit_over_256() {
        assert_eq!(MIN_TOAST_BYTES, 2_048_000);
    }

    #[test]
    fn measures_quote_the_column() {
        assert_eq!(
            Measure::Raw("bytea").expr("B x"),
            "max(octet_length(\"B x\"::bytea))::bigint"
        );
        assert_eq!(
            Measure::Stored.expr("j"),
            "max(pg_column_size(\"j\"))::bigint"
        );
    }

    #[test]
    fn described_for_people() {
        let v = LargeValue {
            schema: "public".into(),
            table: "blobs".into(),
            column: "b".into(),
            bytes: 612 << 20,
            at_least: false,
        };
        assert_eq!(
            v.describe(),
            "table public.blobs column b holds a value of 612.0 MiB"
        );
    }
}
