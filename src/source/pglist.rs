//! `pg_restore --list` over an archive fed through a pipe, and its lines parsed.
//!
//! pg_restore reads a custom-format archive's header and table of contents from its stdin and
//! stops reading there (it does not need the data to list), so the caller feeds only what it
//! reads and learns whether the input was read to its end. Nothing is written to disk: an
//! encrypted archive is decrypted into the pipe only.
//!
//! One listed line is `ID; TABLEOID OID DESC SCHEMA NAME OWNER` (pg_restore's
//! `PrintTOCSummary`: `-` for an empty schema, the owner empty for objects without one). DESC
//! can hold spaces (`TABLE DATA`, `FK CONSTRAINT`), so it is matched against the descriptions
//! pg_dump writes, longest first; NAME can hold spaces too (a constraint's `table name`, a
//! comment's `TABLE t`), so the owner is the last word. SCHEMA can hold spaces as well: it is
//! matched against the schemas the archive's own `SCHEMA` entries name, longest first (else
//! its first word). A role name with a space in it is read as part of NAME, and so is a schema
//! with a space that the archive has no `SCHEMA` entry for: the kinds and their counts are
//! exact, such names are not.

use std::io::{self, Read, Write};
use std::process::Stdio;

use serde::Serialize;

use crate::error::Result;
use crate::source::child::Child;

/// One entry of an archive's table of contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TocEntry {
    /// pg_dump's dump id (what a `pg_restore -L` list file names).
    pub id: u32,
    /// pg_dump's description: `TABLE`, `INDEX`, `FK CONSTRAINT`, `SEQUENCE`, ...
    pub kind: String,
    /// `None` for objects outside a schema (`-` in the listing).
    pub schema: Option<String>,
    pub name: String,
    /// `None` for objects without an owner.
    pub owner: Option<String>,
}

/// The descriptions pg_dump gives entries (pg_dump.c, pg_backup_archiver.c, 9.2 to 18) that
/// have a space in them; single words need no list.
const MULTI_WORD_KINDS: &[&str] = &[
    "ACCESS METHOD",
    "BLOB METADATA",
    "CHECK CONSTRAINT",
    "DATABASE PROPERTIES",
    "DEFAULT ACL",
    "EVENT TRIGGER",
    "FK CONSTRAINT",
    "FOREIGN DATA WRAPPER",
    "FOREIGN SERVER",
    "FOREIGN TABLE",
    "INDEX ATTACH",
    "LARGE OBJECT",
    "LARGE OBJECTS",
    "MATERIALIZED VIEW",
    "MATERIALIZED VIEW DATA",
    "OPERATOR CLASS",
    "OPERATOR FAMILY",
    "PROCEDURAL LANGUAGE",
    "PUBLICATION TABLE",
    "PUBLICATION TABLES IN SCHEMA",
    "ROW SECURITY",
    "SECURITY LABEL",
    "SEQUENCE OWNED BY",
    "SEQUENCE SET",
    "SHELL TYPE",
    "STATISTICS DATA",
    "SUBSCRIPTION TABLE",
    "TABLE ATTACH",
    "TABLE DATA",
    "TEXT SEARCH CONFIGURATION",
    "TEXT SEARCH DICTIONARY",
    "TEXT SEARCH PARSER",
    "TEXT SEARCH TEMPLATE",
    "USER MAPPING",
];

/// Parses pg_restore's listing: every entry line, comments and blank lines skipped. A line
/// that does not have the entry's shape is an error naming it (a pg_restore we do not know).
pub fn parse_listing(text: &str) -> std::result::Result<Vec<TocEntry>, String> {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
        .collect();
    // First the schemas (entries outside any schema, so their lines are unambiguous).
    let mut schemas: Vec<String> = lines
        .iter()
        .filter_map(|l| parse_line(l, &[]))
        .filter(|e| e.kind == "SCHEMA" && e.schema.is_none())
        .map(|e| e.name)
        .collect();
    schemas.sort_by_key(|s| std::cmp::Reverse(s.len()));
    lines
        .iter()
        .map(|l| parse_line(l, &schemas).ok_or_else(|| format!("unexpected line {l:?}")))
        .collect()
}

/// One entry line; `schemas`: the names a schema field may have, longest first.
fn parse_line(line: &str, schemas: &[String]) -> Option<TocEntry> {
    let (id, rest) = line.split_once("; ")?;
    let id: u32 = id.trim().parse().ok()?;
    let mut words = rest.splitn(3, ' ');
    let (_tableoid, _oid) = (words.next()?, words.next()?);
    let rest = words.next()?;
    let kind = MULTI_WORD_KINDS
        .iter()
        .filter(|k| rest.starts_with(*k) && rest[k.len()..].starts_with(' '))
        .max_by_key(|k| k.len())
        .map(|k| k.to_string())
        .unwrap_or_else(|| rest.split(' ').next().unwrap_or_default().to_string());
    let rest = rest.get(kind.len() + 1..)?;
    let schema = schemas
        .iter()
        .find(|s| rest.starts_with(s.as_str()) && rest[s.len()..].starts_with(' '))
        .map(String::as_str)
        .or_else(|| rest.split(' ').next())?;
    let rest = rest.get(schema.len() + 1..)?;
    let (name, owner) = rest.rsplit_once(' ').unwrap_or((rest, ""));
    Some(TocEntry {
        id,
        kind,
        schema: (schema != "-").then(|| schema.to_string()),
        name: name.to_string(),
        owner: (!owner.is_empty()).then(|| owner.to_string()),
    })
}

/// What feeding pg_restore --list produced.
pub struct Listed {
    /// pg_restore's stdout.
    pub listing: String,
    /// pg_restore's exit (an error with its stderr when it failed).
    pub exit: Result<()>,
    /// The input failed while it was read; the caller's error explains more.
    pub read_error: Option<io::Error>,
}

/// Runs `pg_restore --list` (the selected client tools' pg_restore) with `input`, an archive
/// from its start, on its stdin. Input is fed until pg_restore stops reading it or it ends;
/// pg_restore's output is read on a thread of its own, so that a long listing cannot block it
/// while it still reads. A failure to read `input` stops pg_restore.
pub fn list_archive(input: &mut dyn Read) -> Result<Listed> {
    let mut child = Child::spawn(
        "pg_restore",
        &["--list".into()],
        &[],
        Stdio::piped(),
        Stdio::piped(),
    )?;
    let mut stdout = child.stdout().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).map(|_| out)
    });
    let mut stdin = child.stdin().expect("stdin is piped");
    let mut buf = vec![0u8; 64 * 1024];
    let mut read_error = None;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                read_error = Some(e);
                break;
            }
        };
        // pg_restore --list stops reading after the table of contents: a closed pipe is its end.
        if stdin.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    drop(stdin);
    if read_error.is_some() {
        child.terminate();
    }
    let exit = child.wait();
    let listing = reader
        .join()
        .unwrap_or_else(|_| Ok(Vec::new()))
        .unwrap_or_default();
    Ok(Listed {
        listing: String::from_utf8_lossy(&listing).into_owned(),
        exit,
        read_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        id: u32,
        kind: &str,
        schema: Option<&str>,
        name: &str,
        owner: Option<&str>,
    ) -> TocEntry {
        TocEntry {
            id,
            kind: kind.into(),
            schema: schema.map(str::to_string),
            name: name.into(),
            owner: owner.map(str::to_string),
        }
    }

    #[test]
    fn lines_with_spaces_in_kind_and_name() {
        let text = ";\n; Archive created at 2026-12-08 00:00:00 UTC\n;     dbname: shop\n;\n\
            5; 2615 2200 SCHEMA - public pg_database_owner\n\
            215; 1259 16385 TABLE public orders postgres\n\
            3340; 0 16385 TABLE DATA public orders postgres\n\
            3190; 2606 16400 CONSTRAINT public orders orders_pkey postgres\n\
            3191; 2606 16401 FK CONSTRAINT public lines lines_order_fkey postgres\n\
            3400; 0 0 COMMENT - SCHEMA public pg_database_owner\n\
            3401; 0 0 ENCODING - ENCODING \n\
            3402; 3600 16500 TEXT SEARCH CONFIGURATION public my cfg alice\n\
            6; 2615 16390 SCHEMA - Sales Data postgres\n\
            216; 1259 16391 TABLE Sales Data Ünïcode \"quoted\" table postgres\n";
        assert_eq!(
            parse_listing(text).unwrap(),
            vec![
                entry(5, "SCHEMA", None, "public", Some("pg_database_owner")),
                entry(215, "TABLE", Some("public"), "orders", Some("postgres")),
                entry(
                    3340,
                    "TABLE DATA",
                    Some("public"),
                    "orders",
                    Some("postgres")
                ),
                entry(
                    3190,
                    "CONSTRAINT",
                    Some("public"),
                    "orders orders_pkey",
                    Some("postgres")
                ),
                entry(
                    3191,
                    "FK CONSTRAINT",
                    Some("public"),
                    "lines lines_order_fkey",
                    Some("postgres")
                ),
                entry(
                    3400,
                    "COMMENT",
                    None,
                    "SCHEMA public",
                    Some("pg_database_owner")
                ),
                entry(3401, "ENCODING", None, "ENCODING", None),
                entry(
                    3402,
                    "TEXT SEARCH CONFIGURATION",
                    Some("public"),
                    "my cfg",
                    Some("alice")
                ),
                entry(6, "SCHEMA", None, "Sales Data", Some("postgres")),
                entry(
                    216,
                    "TABLE",
                    Some("Sales Data"),
                    "Ünïcode \"quoted\" table",
                    Some("postgres")
                ),
            ]
        );
    }

    #[test]
    fn a_line_of_another_shape_is_named() {
        let err = parse_listing("garbage here\n").unwrap_err();
        assert!(err.contains("garbage here"), "{err}");
    }
}
