//! `dbbackup contents BACKUP`: what a backup holds, for a person choosing what to restore, or
//! as one JSON document (`--json`, fields in docs/contents.md).
//!
//! A command of its own rather than `restore --list`: it only reads the backup, needs no
//! server and no target (none of restore's target, load or `--create`/`--clean` flags would
//! mean anything to it), and it also answers for backups restore would refuse (failed ones).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;

use dbbackup::cluster::{cluster_contents, database_backup, is_cluster_backup, ClusterContents};
use dbbackup::contents::{contents, Contents};
use dbbackup::{Error, Result};

use super::args::{IdentityArgs, BACKUP_ARG_HELP};
use super::progress::human_bytes;

#[derive(Args, Debug)]
pub struct ContentsArgs {
    #[arg(help = BACKUP_ARG_HELP, value_name = "DIR")]
    pub dir: PathBuf,
    /// The repository (a directory or s3://BUCKET/PREFIX) that BACKUP is named in
    #[arg(long, value_name = "LOCATION")]
    pub repo: Option<String>,
    // An encrypted backup's tables, rows and sizes are in the manifest and need no identity;
    // its schema archive (the other objects) does.
    #[command(flatten)]
    pub keys: IdentityArgs,
    /// Cluster backups: show this database's contents (default: list the databases)
    #[arg(long, value_name = "NAME")]
    pub database: Option<String>,
    /// Print one JSON document (for scripts) instead of the tables
    #[arg(long)]
    pub json: bool,
    /// Name every object of the schema archive, grouped by kind (default: counts per kind)
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

/// Runs `contents`; prints to stdout.
pub fn contents_command(args: ContentsArgs) -> Result<()> {
    let store = super::location::backup_location_with_identities(
        args.repo.as_deref(),
        &args.dir,
        &args.keys,
    )?;
    let store = match (is_cluster_backup(&store), &args.database) {
        (true, Some(name)) => database_backup(&store, name)?,
        (true, None) => {
            let c = cluster_contents(&store)?;
            return emit(if args.json {
                json(&c)
            } else {
                cluster_text(&c)
            });
        }
        (false, Some(_)) => {
            // A location without a backup says so first.
            dbbackup::format::manifest::Manifest::load(&store)?;
            return Err(Error::Usage(format!(
                "--database chooses a database of a cluster backup; {} is a single-database backup",
                args.dir.display()
            )));
        }
        (false, None) => store,
    };
    let c = contents(&store)?;
    emit(if args.json {
        json(&c)
    } else {
        text(&c, args.verbose)
    })
}

/// Writes the report to stdout; a reader that stopped early (`| head`) is not an error.
fn emit(report: String) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(report.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::io("writing", "standard output", e))
        }
        _ => Ok(()),
    }
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).expect("contents serialize") + "\n"
}

/// A name as a `-t`/`-n` pattern takes it: bare when SQL would take it bare, else
/// double-quoted (psql's rules: `"` doubled inside).
fn pattern_name(name: &str) -> String {
    dbbackup::format::sql_requalify::quote_ident(name)
}

fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", pattern_name(schema), pattern_name(name))
}

/// The human report of one database's backup.
pub fn text(c: &Contents, verbose: bool) -> String {
    let mut o = String::new();
    let mut flags = vec![c.strategy.clone(), c.status.clone()];
    flags.push(
        if c.consistent {
            "consistent"
        } else {
            "NOT consistent"
        }
        .into(),
    );
    if c.encrypted {
        flags.push("encrypted".into());
    }
    let _ = writeln!(
        o,
        "backup {}: database {}, {}",
        c.location,
        c.database,
        flags.join(", ")
    );
    if let Some(e) = &c.error {
        let _ = writeln!(o, "  error: {e}");
    }
    let _ = writeln!(
        o,
        "  PostgreSQL {} (pg_dump {}), started {}, finished {} ({:.1}s)",
        c.server_version,
        c.pg_dump_version,
        c.started_at,
        c.finished_at.as_deref().unwrap_or("-"),
        c.totals.duration_secs
    );
    let t = &c.totals;
    // Only a native manifest counts tables and rows.
    let counted = match c.tables_from {
        "manifest" => format!("{} tables, {} rows, ", t.tables, t.rows),
        _ => String::new(),
    };
    let _ = writeln!(
        o,
        "  {counted}{} files, {} raw, {} stored",
        t.chunks,
        human_bytes(t.raw_bytes),
        human_bytes(t.stored_bytes)
    );
    let mut extras = Vec::new();
    if let Some(lo) = &c.large_objects {
        extras.push(format!(
            "large objects: {} ({})",
            lo.count,
            human_bytes(lo.bytes)
        ));
    }
    if let Some(s) = &c.sequences {
        extras.push(format!("sequences: {}", s.len()));
    }
    if !extras.is_empty() {
        let _ = writeln!(o, "  {}", extras.join("; "));
    }
    if let Some(f) = &c.filters {
        let _ = writeln!(o, "  filters: {}", f.describe());
    }
    tables_text(&mut o, c);
    objects_text(&mut o, c, verbose);
    o
}

fn tables_text(o: &mut String, c: &Contents) {
    match c.tables_from {
        "none" if c.strategy == "plain" => {
            let _ = writeln!(o, "tables: not listed (see objects below)");
            return;
        }
        "none" => return, // the objects line says why
        _ => {}
    }
    let from = if c.tables_from == "manifest" {
        "from the manifest"
    } else {
        "from the archive; rows and sizes are not recorded per table in a custom backup"
    };
    let _ = writeln!(o, "tables ({}, {from}):", c.tables.len());
    let names: Vec<String> = c
        .tables
        .iter()
        .map(|t| qualified(&t.schema, &t.name))
        .collect();
    if c.tables_from != "manifest" {
        // Names only: the archive has no rows or sizes per table.
        for name in &names {
            let _ = writeln!(o, "  {name}");
        }
        schemas_text(o, c);
        return;
    }
    let w = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    let num = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let size = |v: Option<u64>| v.map_or("-".to_string(), human_bytes);
    let _ = writeln!(
        o,
        "  {:<w$}  {:>12}  {:>10}  {:>10}",
        "TABLE", "ROWS", "RAW", "STORED"
    );
    for (t, name) in c.tables.iter().zip(&names) {
        let mut remark = String::new();
        if !t.complete {
            remark.push_str("  (unfinished)");
        }
        if let Some(ext) = &t.extension {
            let _ = write!(remark, "  (configuration table of extension {ext})");
        }
        let _ = writeln!(
            o,
            "  {name:<w$}  {:>12}  {:>10}  {:>10}{remark}",
            num(t.rows),
            size(t.raw_bytes),
            size(t.stored_bytes)
        );
    }
    schemas_text(o, c);
}

/// `schemas with tables: app (22), "Sales Data" (3)`: what a `-n` would take.
fn schemas_text(o: &mut String, c: &Contents) {
    let mut schemas: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &c.tables {
        *schemas.entry(t.schema.as_str()).or_default() += 1;
    }
    let schemas: Vec<String> = schemas
        .iter()
        .map(|(s, n)| format!("{} ({n})", pattern_name(s)))
        .collect();
    if !schemas.is_empty() {
        let _ = writeln!(o, "schemas with tables: {}", schemas.join(", "));
    }
}

fn objects_text(o: &mut String, c: &Contents, verbose: bool) {
    let objects = &c.objects;
    if let Some(note) = &objects.note {
        let _ = writeln!(o, "objects: {note}");
        return;
    }
    let _ = writeln!(
        o,
        "objects ({} in the archive, by kind{}):",
        objects.entries.len(),
        if verbose {
            ""
        } else {
            "; --verbose names them"
        }
    );
    let w = objects.kinds.keys().map(|k| k.len()).max().unwrap_or(0);
    for (kind, n) in &objects.kinds {
        let _ = writeln!(o, "  {kind:<w$}  {n}");
        if !verbose {
            continue;
        }
        for e in objects.entries.iter().filter(|e| &e.kind == kind) {
            match &e.schema {
                Some(s) => {
                    let _ = writeln!(o, "      {} {}", pattern_name(s), e.name);
                }
                None => {
                    let _ = writeln!(o, "      {}", e.name);
                }
            }
        }
    }
}

/// The human report of a cluster backup: its databases.
fn cluster_text(c: &ClusterContents) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "cluster backup {}: {}, PostgreSQL {}, started {}, finished {}",
        c.location,
        c.status,
        c.server_version,
        c.started_at,
        c.finished_at.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        o,
        "  globals (roles, tablespaces): {}, role passwords {}",
        c.globals,
        if c.role_passwords {
            "included"
        } else {
            "not included"
        }
    );
    let w = c
        .databases
        .iter()
        .map(|d| d.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(8);
    let _ = writeln!(o, "databases ({}):", c.databases.len());
    let _ = writeln!(
        o,
        "  {:<w$}  {:<9}  {:<8}  {:>10}  {:>10}",
        "DATABASE", "STATUS", "STRATEGY", "RAW", "STORED"
    );
    for d in &c.databases {
        let error = d
            .error
            .as_deref()
            .map(|e| format!("  {e}"))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "  {:<w$}  {:<9}  {:<8}  {:>10}  {:>10}{error}",
            d.name,
            d.status,
            d.strategy.as_deref().unwrap_or("-"),
            human_bytes(d.raw_bytes),
            human_bytes(d.stored_bytes)
        );
    }
    let _ = writeln!(o, "one database's tables and objects: --database NAME");
    o
}
