//! A database's content as a map of named facts, for comparisons that must say exactly which
//! objects differ (tests/regression.rs, tests/odd_schemas.rs).
//!
//! Unlike [`super::Fingerprint`], rows are hashed with their columns taken by name (sorted), so
//! a table whose columns come back in another order compares by its values, and its reordered
//! `CREATE TABLE` shows as that statement alone. The schema is `pg_dump --schema-only` split into
//! statements: a `CREATE TABLE` is keyed by its first line (a changed table is one fact), every
//! other statement by its text (so the dump's order of equal-ranked objects, which follows OIDs,
//! does not count).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Cluster, FINGERPRINT_SETTINGS, FS, NULL_MARK, ROW_MARK, RS};

/// Fact name → value. Names start with `schema `, `rows `, `sequence ` or `large object `.
pub type Snapshot = BTreeMap<String, String>;

/// One row per table (T), sequence (S), large object (L), each starting with [`ROW_MARK`].
/// Table rows: `ROW(columns sorted by name)::text`, sorted (C collation), md5 of them joined.
const SNAPSHOT_SQL: &str = r#"
SELECT CASE WHEN c.relkind = 'm' AND NOT c.relispopulated
            THEN format('SELECT chr(29) || %L, %L, %L', 'T', format('%I.%I', n.nspname, c.relname), 'not populated')
            ELSE format('SELECT chr(29) || %L, %L, count(*) || %L || coalesce(md5(string_agg(r, E''\n'' ORDER BY r COLLATE "C")), '''') FROM (SELECT ROW(%s)::text AS r FROM %s %I.%I) AS q',
                        'T', format('%I.%I', n.nspname, c.relname), ' rows, md5 ',
                        (SELECT coalesce(string_agg(format('%I', a.attname), ', ' ORDER BY a.attname COLLATE "C"), '')
                           FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
                        CASE WHEN c.relkind = 'm' THEN '' ELSE 'ONLY' END, n.nspname, c.relname)
       END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
ORDER BY n.nspname, c.relname
\gexec
SELECT format('SELECT chr(29) || %L, %L, last_value || %L || is_called FROM %I.%I', 'S', format('%I.%I', n.nspname, c.relname), ' called ', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
ORDER BY n.nspname, c.relname
\gexec
SELECT chr(29) || 'L', oid, concat_ws(' ', lomowner::regrole::text, lomacl::text, obj_description(oid, 'pg_largeobject'), md5(lo_get(oid)))
FROM pg_largeobject_metadata ORDER BY oid;
"#;

/// The snapshot of database `db` of `c`: its schema statements and its rows.
pub fn snapshot(c: &Cluster, db: &str) -> Snapshot {
    let mut facts = schema_facts(&c.schema_dump(db));
    let script = format!("{FINGERPRINT_SETTINGS}{SNAPSHOT_SQL}");
    let fs = FS.to_string();
    let rs = RS.to_string();
    let null = format!("null={NULL_MARK}");
    let raw = c
        .psql_raw(db, &script, &["-F", &fs, "-R", &rs, "-P", &null])
        .unwrap_or_else(|e| panic!("snapshot of {db:?}: {e}"));
    for record in raw.split(ROW_MARK).skip(1) {
        let record = record.trim_end_matches(['\n', RS]);
        let f: Vec<&str> = record.split(FS).collect();
        let kind = match f.first() {
            Some(&"T") => "rows",
            Some(&"S") => "sequence",
            Some(&"L") => "large object",
            _ => panic!("unexpected snapshot row from {db:?}: {record:?}"),
        };
        assert_eq!(
            f.len(),
            3,
            "unexpected snapshot row from {db:?}: {record:?}"
        );
        facts.insert(format!("{kind} {}", f[1]), f[2].to_owned());
    }
    facts
}

/// The statements of a normalized schema dump as facts: `schema CREATE TABLE x (` → the whole
/// statement; any other statement → how often it occurs.
pub fn schema_facts(dump: &str) -> Snapshot {
    let mut facts = Snapshot::new();
    let mut statement = String::new();
    for line in dump.lines() {
        statement.push_str(line);
        statement.push('\n');
        // A line ending in ';' ends a statement; one inside a function body only splits the
        // body into pieces, the same way on both sides.
        if line.ends_with(';') {
            add_statement(&mut facts, std::mem::take(&mut statement));
        }
    }
    if !statement.is_empty() {
        add_statement(&mut facts, statement);
    }
    facts
}

fn add_statement(facts: &mut Snapshot, statement: String) {
    let first = statement.lines().next().unwrap_or_default();
    if first.starts_with("CREATE TABLE ") || first.starts_with("CREATE UNLOGGED TABLE ") {
        facts.insert(format!("schema {first}"), statement);
    } else {
        let count = facts.entry(format!("schema {statement}")).or_default();
        let n: u64 = count.parse().unwrap_or(0);
        *count = (n + 1).to_string();
    }
}

/// A fact that differs between two snapshots: its name and its value on each side.
pub type Difference = (String, Option<String>, Option<String>);

/// Every fact whose value differs (or that exists on one side only).
pub fn differences(a: &Snapshot, b: &Snapshot) -> Vec<Difference> {
    let mut out = Vec::new();
    for (k, v) in a {
        if b.get(k) != Some(v) {
            out.push((k.clone(), Some(v.clone()), b.get(k).cloned()));
        }
    }
    for (k, v) in b {
        if !a.contains_key(k) {
            out.push((k.clone(), None, Some(v.clone())));
        }
    }
    out
}

/// The differences, readable: one block per fact (left / right value, long ones cut).
pub fn describe(diffs: &[Difference]) -> String {
    let cut = |v: &Option<String>| match v {
        None => "(absent)".to_owned(),
        Some(v) if v.len() > 1500 => format!("{}…", v.chars().take(1500).collect::<String>()),
        Some(v) => v.clone(),
    };
    let mut out = String::new();
    for (k, a, b) in diffs {
        let _ = writeln!(
            out,
            "* {}\n  left:  {}\n  right: {}",
            k.trim_end(),
            cut(a).trim_end(),
            cut(b).trim_end()
        );
    }
    out
}

/// True when two `CREATE TABLE` statements have the same lines in another order (a column
/// list reordered), ignoring the commas that separate the columns.
pub fn same_lines_reordered(a: &str, b: &str) -> bool {
    let lines = |s: &str| {
        let mut v: Vec<String> = s
            .lines()
            .map(|l| l.trim_end_matches(',').to_owned())
            .collect();
        v.sort();
        v
    };
    a != b && lines(a) == lines(b)
}
