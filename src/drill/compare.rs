//! What a drill compares: every table's row count, every sequence's state and the number of
//! large objects of the restored database against what the manifest says the backup holds.
//!
//! Reading the restored database ([`observe`]) and judging it ([`differences`]) are apart, so
//! that the judgement is a plain function of two values.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use crate::format::manifest::{quote_ident, Manifest};

/// What the restored database holds; a value that could not be read is the server's message.
#[derive(Debug)]
pub struct Observed {
    /// `schema.table` (as [`crate::format::manifest::Table::display_name`]) → rows.
    pub tables: BTreeMap<String, Result<i64, String>>,
    /// `schema.sequence` → (last_value, is_called).
    pub sequences: BTreeMap<String, Result<(i64, bool), String>>,
    pub large_objects: Result<i64, String>,
}

/// Reads, in the restored database, what the manifest lists: `count(*)` of each table (its
/// own rows: `FROM ONLY`, as it was dumped), each sequence's state, the large objects.
pub async fn observe(client: &Client, m: &Manifest) -> Observed {
    let mut seen = Observed {
        tables: BTreeMap::new(),
        sequences: BTreeMap::new(),
        large_objects: Ok(0),
    };
    for t in &m.tables {
        let sql = format!("SELECT count(*) FROM ONLY {}", t.qualified());
        let rows = client
            .query_one(&sql, &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .map_err(|e| server_message(&e));
        seen.tables.insert(t.display_name(), rows);
    }
    for s in &m.sequences {
        let sql = format!(
            "SELECT last_value, is_called FROM {}.{}",
            quote_ident(&s.schema),
            quote_ident(&s.name)
        );
        let state = client
            .query_one(&sql, &[])
            .await
            .map(|r| (r.get::<_, i64>(0), r.get::<_, bool>(1)))
            .map_err(|e| server_message(&e));
        seen.sequences
            .insert(format!("{}.{}", s.schema, s.name), state);
    }
    seen.large_objects = client
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_largeobject_metadata",
            &[],
        )
        .await
        .map(|r| r.get::<_, i64>(0))
        .map_err(|e| server_message(&e));
    seen
}

/// Everything that differs between the manifest and the restored database, one line each
/// (e.g. `table public.t: 1000 rows in the backup, 999 restored`); empty when nothing does.
pub fn differences(m: &Manifest, seen: &Observed) -> Vec<String> {
    let mut out = Vec::new();
    for t in &m.tables {
        let name = t.display_name();
        let want = t.rows();
        // An extension's configuration table also holds the rows the extension's script
        // inserted, which the backup leaves out: at least the backup's rows are there.
        let config = t.extension_config.is_some();
        match seen.tables.get(&name) {
            Some(Ok(got)) if *got >= 0 && (*got as u64 == want || config && *got as u64 > want) => {}
            Some(Ok(got)) if config => out.push(format!(
                "table {name}: {want} rows in the backup (an extension's configuration table: at least as many expected), {got} restored"
            )),
            Some(Ok(got)) => out.push(format!(
                "table {name}: {want} rows in the backup, {got} restored"
            )),
            Some(Err(e)) => out.push(format!(
                "table {name}: cannot be read after the restore: {e}"
            )),
            None => out.push(format!("table {name}: not looked at")),
        }
    }
    for s in &m.sequences {
        let name = format!("{}.{}", s.schema, s.name);
        let want = (s.last_value, s.is_called);
        match seen.sequences.get(&name) {
            Some(Ok(got)) if *got == want => {}
            Some(Ok((value, called))) => out.push(format!(
                "sequence {name}: last_value {} (is_called {}) in the backup, {value} (is_called {called}) restored",
                s.last_value, s.is_called
            )),
            Some(Err(e)) => {
                out.push(format!("sequence {name}: cannot be read after the restore: {e}"))
            }
            None => out.push(format!("sequence {name}: not looked at")),
        }
    }
    let want = m.large_objects.count;
    match &seen.large_objects {
        Ok(got) if *got >= 0 && *got as u64 == want => {}
        Ok(got) => out.push(format!(
            "large objects: {want} in the backup, {got} restored"
        )),
        Err(e) => out.push(format!(
            "large objects: cannot be counted after the restore: {e}"
        )),
    }
    out
}

fn server_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A native manifest with one table of 1000 rows, one sequence and 3 large objects: the
    /// shape the integration tests produce, reduced to what the comparison reads.
    fn manifest() -> Manifest {
        serde_json::from_value(serde_json::json!({
            "format_version": 1, "tool": "dbbackup test", "status": "complete",
            "started_at": "2026-11-29T02:00:00Z", "server_version": "15",
            "server_version_num": 150000, "pg_dump_version": "15", "consistent": true,
            "database": {"name": "shop", "encoding": "UTF8", "collate": "C", "ctype": "C",
                         "locale_provider": "c", "owner": "postgres", "connection_limit": -1,
                         "grants": [], "settings": []},
            "options": {"codec": "zstd", "level": 3, "chunk_size": 1, "split_tables_larger_than": 1,
                        "parallel_tables": 1, "copy_format": "auto"},
            "strategy": {"kind": "native", "reason": "test"},
            "tables": [{"oid": 1, "schema": "public", "name": "t", "relkind": "r", "columns": [],
                        "size_bytes": 0, "row_estimate": 0, "copy_format": "binary",
                        "units": [{"index": 0, "ctid_from": null, "ctid_to": null, "done": true,
                                   "chunks": [{"file": "a", "codec": "zstd", "rows": 1000,
                                               "raw_bytes": 0, "stored_bytes": 0, "sha256": ""}]}]}],
            "sequences": [{"schema": "public", "name": "s", "last_value": 42, "is_called": true}],
            "large_objects": {"count": 3, "bytes": 0, "done": true, "chunks": []},
            "totals": {"tables": 1, "rows": 1000, "chunks": 1, "raw_bytes": 0, "stored_bytes": 0,
                       "duration_secs": 0.0}
        }))
        .expect("test manifest")
    }

    fn restored(rows: i64, seq: (i64, bool), los: i64) -> Observed {
        Observed {
            tables: [("public.t".to_string(), Ok(rows))].into(),
            sequences: [("public.s".to_string(), Ok(seq))].into(),
            large_objects: Ok(los),
        }
    }

    #[test]
    fn equal_counts_differ_in_nothing() {
        assert!(differences(&manifest(), &restored(1000, (42, true), 3)).is_empty());
    }

    #[test]
    fn each_difference_is_one_line_naming_the_object() {
        assert_eq!(
            differences(&manifest(), &restored(999, (41, true), 2)),
            vec![
                "table public.t: 1000 rows in the backup, 999 restored",
                "sequence public.s: last_value 42 (is_called true) in the backup, 41 (is_called true) restored",
                "large objects: 3 in the backup, 2 restored",
            ]
        );
    }

    #[test]
    fn an_extension_configuration_table_may_hold_the_extensions_own_rows_too() {
        let mut m = manifest();
        m.tables[0].extension_config = Some(crate::format::manifest::ExtensionConfig {
            extension: "ext".into(),
            filter: Some("WHERE user_row".into()),
        });
        assert!(differences(&m, &restored(1002, (42, true), 3)).is_empty());
        assert_eq!(
            differences(&m, &restored(999, (42, true), 3)),
            vec!["table public.t: 1000 rows in the backup (an extension's configuration table: at least as many expected), 999 restored"]
        );
    }

    #[test]
    fn an_unreadable_table_is_a_difference() {
        let mut seen = restored(1000, (42, true), 3);
        seen.tables.insert(
            "public.t".into(),
            Err("relation \"public.t\" does not exist".into()),
        );
        assert_eq!(
            differences(&manifest(), &seen),
            vec!["table public.t: cannot be read after the restore: relation \"public.t\" does not exist"]
        );
    }
}
