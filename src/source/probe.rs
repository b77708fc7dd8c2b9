//! The probe: what is in the database, read inside the backup's snapshot so that the table list,
//! the columns and the data all describe the same instant.

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::format::copyfmt::CopyFormat;
use crate::format::manifest::{Column, DatabaseInfo, ExtensionConfig};
use crate::format::selection::{Matches, Selection};

/// Types with OIDs below this are built into the server (FirstNormalObjectId); their OIDs and
/// binary forms are the same in every database of a major version.
const FIRST_NORMAL_OID: u32 = 16384;

/// A table whose rows the backup copies.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub relkind: String,
    pub columns: Vec<Column>,
    /// `pg_table_size`: heap plus TOAST, what the copy will actually read.
    pub size_bytes: i64,
    /// Heap pages (`pg_relation_size / block_size`), what ctid ranges split.
    pub heap_pages: u32,
    pub row_estimate: i64,
    /// Why binary COPY is not safe for this table, if it is not.
    pub not_binary_because: Option<String>,
    /// An extension's configuration table ([`crate::source::extconfig`]); otherwise extension
    /// members are left out.
    pub extension_config: Option<ExtensionConfig>,
}

impl TableInfo {
    pub fn display_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// The COPY format to use given the user's `--copy-format` choice.
    pub fn copy_format(&self, choice: CopyFormatChoice) -> CopyFormat {
        match choice {
            CopyFormatChoice::Text => CopyFormat::Text,
            CopyFormatChoice::Binary => CopyFormat::Binary,
            CopyFormatChoice::Auto if self.not_binary_because.is_some() => CopyFormat::Text,
            CopyFormatChoice::Auto => CopyFormat::Binary,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CopyFormatChoice {
    /// Binary where every column type is portable, text otherwise.
    Auto,
    Binary,
    Text,
}

#[derive(Debug, Clone)]
pub struct SequenceInfo {
    pub schema: String,
    pub name: String,
}

/// Everything the planner and the manifest need to know about the source.
#[derive(Debug, Clone)]
pub struct Probe {
    pub server_version: String,
    pub server_version_num: i32,
    pub database_size: i64,
    pub database: DatabaseInfo,
    pub tables: Vec<TableInfo>,
    pub sequences: Vec<SequenceInfo>,
    pub large_object_count: i64,
    /// Size of pg_largeobject (an estimate of the large objects' data).
    pub large_object_bytes: i64,
    /// The server is a hot standby: its settings ([`crate::source::standby`]).
    pub standby: Option<crate::source::standby::StandbyInfo>,
    /// The backup filters applied above ([`crate::source::selecting`]).
    pub selection: Selection,
    /// Which of the selection's include patterns matched.
    pub matches: Matches,
}

impl Probe {
    pub fn data_bytes(&self) -> u64 {
        let tables: i64 = self.tables.iter().map(|t| t.size_bytes).sum();
        (tables + self.large_object_bytes).max(0) as u64
    }

    pub fn summary_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "database_size": self.database_size,
            "tables": self.tables.len(),
            "table_bytes": self.tables.iter().map(|t| t.size_bytes).sum::<i64>(),
            "large_objects": self.large_object_count,
            "large_object_bytes": self.large_object_bytes,
            "server_version": self.server_version,
        });
        // Only on a standby: a primary's record stays as it was.
        if let Some(s) = &self.standby {
            v["standby"] = s.to_json();
        }
        v
    }
}

fn q(what: &str) -> impl FnOnce(tokio_postgres::Error) -> Error + '_ {
    move |e| Error::query(what, e)
}

/// Reads server, database, tables, sequences and large objects, keeping those `selection`
/// takes (its include patterns must match as pg_dump requires, unless `check_matches` is off:
/// a cluster judges them across its databases). Run it inside the snapshot's transaction.
/// Every selected table is locked ACCESS SHARE (held until the transaction ends) before its
/// size is read, waiting at most `lock_timeout` per table: reading a size opens the table, and
/// without our own lock that would wait silently behind any exclusive lock.
pub async fn probe(
    client: &Client,
    dbname: &str,
    lock_timeout: std::time::Duration,
    selection: Selection,
    check_matches: bool,
) -> Result<Probe> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int,
                    pg_database_size(current_database())",
            &[],
        )
        .await
        .map_err(q("reading server version"))?;
    let server_version: String = row.get(0);
    let server_version_num: i32 = row.get(1);
    let database_size: i64 = row.get(2);

    let standby = crate::source::standby::read(client).await?;
    let database =
        crate::source::dbprops::database_info(client, dbname, server_version_num).await?;
    let mut tables = tables(client, server_version_num).await?;
    let mut sequences = sequences(client).await?;
    let matches =
        crate::source::selecting::apply(client, &selection, &mut tables, &mut sequences).await?;
    if check_matches {
        selection.check_matches(&matches)?;
    }
    lock_tables(client, &tables, lock_timeout).await?;
    table_sizes(client, &mut tables).await?;
    let lo = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_largeobject_metadata),
                    pg_total_relation_size('pg_largeobject')",
            &[],
        )
        .await
        .map_err(q("counting large objects"))?;
    // Left out with -t/-n (unless -b), as pg_dump leaves them out.
    let large_object_count: i64 = if selection.large_objects_selected() {
        lo.get(0)
    } else {
        0
    };
    let large_object_bytes: i64 = if large_object_count == 0 {
        0
    } else {
        lo.get(1)
    };
    Ok(Probe {
        server_version,
        server_version_num,
        database_size,
        database,
        tables,
        sequences,
        large_object_count,
        large_object_bytes,
        standby,
        selection,
        matches,
    })
}

/// Sequences outside system schemas and extensions (but extensions' configuration ones).
async fn sequences(client: &Client) -> Result<Vec<SequenceInfo>> {
    Ok(client
        .query(
            &format!("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
               AND (NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                AND d.objid = c.oid AND d.deptype = 'e')
                    OR c.oid IN ({}))
             ORDER BY 1, 2", crate::source::extconfig::CONFIG_OIDS_SQL),
            &[],
        )
        .await
        .map_err(q("listing sequences"))?
        .iter()
        .map(|r| SequenceInfo {
            schema: r.get(0),
            name: r.get(1),
        })
        .collect())
}

/// What we need of a pg_type row to judge binary portability.
struct TypeRow {
    name: String,
    typtype: i8,
    basetype: u32,
    elem: u32,
    is_array: bool,
    has_binary_io: bool,
}

async fn tables(client: &Client, server_version_num: i32) -> Result<Vec<TableInfo>> {
    let on_reg = crate::source::regtypes::types_built_on_reg(client, server_version_num).await?;
    let types: HashMap<u32, TypeRow> = client
        .query(
            "SELECT oid, format_type(oid, NULL), typtype, typbasetype, typelem,
                    typcategory = 'A' AND typelem <> 0,
                    typsend <> 0 AND typreceive <> 0
             FROM pg_type",
            &[],
        )
        .await
        .map_err(q("reading types"))?
        .iter()
        .map(|r| {
            (
                r.get::<_, u32>(0),
                TypeRow {
                    name: r.get(1),
                    typtype: r.get(2),
                    basetype: r.get(3),
                    elem: r.get(4),
                    is_array: r.get(5),
                    has_binary_io: r.get(6),
                },
            )
        })
        .collect();

    let configs = crate::source::extconfig::config_relations(client).await?;
    let rows = client
        .query(
            &format!(
                "SELECT c.oid, n.nspname, c.relname, c.relkind::text, 0::bigint, 0::bigint,
                    greatest(c.reltuples, 0)::bigint
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'r'
               AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
               AND (NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                AND d.objid = c.oid AND d.deptype = 'e')
                    OR c.oid IN ({}))
             ORDER BY n.nspname, c.relname",
                crate::source::extconfig::CONFIG_OIDS_SQL
            ),
            &[],
        )
        .await
        .map_err(q("listing tables"))?;
    let mut tables: Vec<TableInfo> = rows
        .iter()
        .map(|r| TableInfo {
            oid: r.get(0),
            schema: r.get(1),
            name: r.get(2),
            relkind: r.get(3),
            columns: Vec::new(),
            size_bytes: r.get(4),
            heap_pages: u32::try_from(r.get::<_, i64>(5)).unwrap_or(u32::MAX),
            row_estimate: r.get(6),
            not_binary_because: None,
            extension_config: configs.get(&r.get::<_, u32>(0)).cloned(),
        })
        .collect();
    let index: HashMap<u32, usize> = tables.iter().enumerate().map(|(i, t)| (t.oid, i)).collect();

    // Generated columns are computed on load, dropped ones are gone: neither is copied.
    let cols = client
        .query(
            "SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.atttypid
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
             WHERE c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
             ORDER BY a.attrelid, a.attnum",
            &[],
        )
        .await
        .map_err(q("listing columns"))?;
    for r in &cols {
        let Some(&i) = index.get(&r.get::<_, u32>(0)) else {
            continue;
        };
        let table = &mut tables[i];
        let name: String = r.get(1);
        let type_name: String = r.get(2);
        let type_oid: u32 = r.get(3);
        if table.not_binary_because.is_none() {
            if let Some(reg) = on_reg.get(&type_oid) {
                table.not_binary_because = Some(format!("column {name:?} ({type_name}): {reg}"));
            } else if let Err(why) = binary_portable(&types, type_oid) {
                table.not_binary_because = Some(format!("column {name:?} ({type_name}): {why}"));
            }
        }
        table.columns.push(Column { name, type_name });
    }
    Ok(tables)
}

/// Binary COPY is portable for built-in base types with binary I/O, and arrays of them, looked
/// through domains. Anything else carries OIDs (arrays of user types, composites) or may lack
/// binary I/O (extension types), so it goes as text.
fn binary_portable(types: &HashMap<u32, TypeRow>, oid: u32) -> std::result::Result<(), String> {
    let base = resolve_domain(types, oid);
    let t = types.get(&base).ok_or("unknown type")?;
    if t.is_array {
        let elem = types.get(&t.elem).ok_or("unknown element type")?;
        if t.elem >= FIRST_NORMAL_OID || elem.typtype != b'b' as i8 {
            return Err(format!(
                "array of {}, whose binary form carries a database-specific type OID",
                elem.name
            ));
        }
        return builtin_base(elem, t.elem);
    }
    builtin_base(t, base)
}

fn builtin_base(t: &TypeRow, oid: u32) -> std::result::Result<(), String> {
    let kind = match t.typtype as u8 {
        b'b' => None,
        b'c' => Some("composite"),
        b'e' => Some("enum"),
        b'r' => Some("range"),
        b'm' => Some("multirange"),
        b'p' => Some("pseudo-type"),
        _ => Some("non-base type"),
    };
    if let Some(kind) = kind {
        return Err(format!("{} is a {kind} type", t.name));
    }
    if oid >= FIRST_NORMAL_OID {
        return Err(format!("{} is not a built-in type", t.name));
    }
    if !t.has_binary_io {
        return Err(format!("{} has no binary send/receive functions", t.name));
    }
    Ok(())
}

fn resolve_domain(types: &HashMap<u32, TypeRow>, mut oid: u32) -> u32 {
    // Domains can stack; the chain ends at a non-domain type.
    while let Some(t) = types.get(&oid) {
        if t.typtype as u8 != b'd' {
            break;
        }
        oid = t.basetype;
    }
    oid
}

/// ACCESS SHARE on every table, one at a time so a timeout names the table that is blocked.
pub async fn lock_tables(
    client: &Client,
    tables: &[TableInfo],
    timeout: std::time::Duration,
) -> Result<()> {
    client
        .batch_execute(&format!(
            "SET LOCAL lock_timeout = {}",
            timeout.as_millis().max(1)
        ))
        .await
        .map_err(q("setting lock_timeout"))?;
    for t in tables {
        let sql = format!(
            "LOCK TABLE ONLY {}.{} IN ACCESS SHARE MODE",
            crate::format::manifest::quote_ident(&t.schema),
            crate::format::manifest::quote_ident(&t.name)
        );
        if let Err(e) = client.batch_execute(&sql).await {
            let what = if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
                format!(
                    "timed out after {timeout:?} waiting for an ACCESS SHARE lock on table {} (another session holds a conflicting lock)",
                    t.display_name()
                )
            } else {
                format!("locking table {}", t.display_name())
            };
            return Err(Error::query(what, e));
        }
    }
    client
        .batch_execute("SET LOCAL lock_timeout = 0")
        .await
        .map_err(q("resetting lock_timeout"))
}

/// Sizes of the (locked) tables: heap plus TOAST, and heap pages.
async fn table_sizes(client: &Client, tables: &mut [TableInfo]) -> Result<()> {
    let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
    let rows = client
        .query(
            "SELECT c.oid, pg_table_size(c.oid),
                    (pg_relation_size(c.oid) / current_setting('block_size')::bigint)::bigint
             FROM pg_class c WHERE c.oid = ANY($1)",
            &[&oids],
        )
        .await
        .map_err(q("reading table sizes"))?;
    let sizes: HashMap<u32, (i64, i64)> = rows
        .iter()
        .map(|r| (r.get::<_, u32>(0), (r.get(1), r.get(2))))
        .collect();
    for t in tables {
        if let Some(&(size, pages)) = sizes.get(&t.oid) {
            t.size_bytes = size;
            t.heap_pages = u32::try_from(pages).unwrap_or(u32::MAX);
        }
    }
    Ok(())
}
