//! A filtered restore's plan from the archive's table of contents: which tables the backup
//! has, which TOC entries come with the chosen ones ([`crate::format::toc_select`]), and the
//! `pg_restore -L` list files that restore exactly those, section by section.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::format::archive_toc::{read_toc, Toc};
use crate::format::chunk::ChunkReader;
use crate::format::manifest::Manifest;
use crate::format::toc_select::{list_file, partitions_of, select, Selection, TableChoice};
use crate::storage::Store;

use super::filter::{Choice, TableFilter, TableName};

/// Reads the TOC of the native backup's schema archive that holds `section`.
pub(super) fn read_native_toc(dir: &Store, manifest: &Manifest, section: &str) -> Result<Toc> {
    let Some(file) = manifest.schema_file(section) else {
        return Err(Error::Refused(format!(
            "the manifest lists no {section} schema file"
        )));
    };
    let mut reader = ChunkReader::open(dir, &file.chunk)?;
    // Only the header and the TOC are read: the reader stops where the data would begin, so
    // the checksum of the whole file is not checked here (the restore checked it already).
    read_toc(&mut reader)
}

/// Reads the TOC of a custom archive on disk (decompressed from a custom backup).
pub(super) fn read_file_toc(path: &Path) -> Result<Toc> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("opening", path, e))?;
    read_toc(&mut std::io::BufReader::new(file))
}

/// The tables (and partitioned tables) the archive creates, by schema and name.
pub(super) fn tables_of(toc: &Toc) -> Vec<TableName> {
    toc.entries
        .iter()
        .filter(|e| e.desc == "TABLE")
        .map(|e| (e.namespace.clone(), e.tag.clone()))
        .collect()
}

/// Every schema the archive creates or puts an object in.
fn schemas_of(toc: &Toc) -> Vec<String> {
    let mut all: BTreeSet<String> = toc
        .entries
        .iter()
        .filter(|e| e.desc == "SCHEMA")
        .map(|e| e.tag.clone())
        .collect();
    all.extend(
        toc.entries
            .iter()
            .filter(|e| !e.namespace.is_empty())
            .map(|e| e.namespace.clone()),
    );
    all.into_iter().collect()
}

/// The filter's choice in `toc`, a chosen partitioned table with its partitions (all levels;
/// a partition is a table of its own in the archive, and a partitioned table's rows are in
/// them), unless `--exclude-table` names them.
pub(super) fn choose(toc: &Toc, database: &str, filter: &TableFilter) -> Result<Choice> {
    let mut choice = filter.choose(database, &tables_of(toc), &schemas_of(toc))?;
    for (schema, name) in choice.tables.clone() {
        for p in partitions_of(toc, &schema, &name) {
            if !filter.exclude_tables.iter().any(|x| x.matches(&p.0, &p.1)) {
                choice.tables.insert(p);
            }
        }
    }
    Ok(choice)
}

/// The entries that come with a choice, per section.
pub(super) fn selection(toc: &Toc, choice: &Choice) -> Selection {
    let all = tables_of(toc);
    let want = TableChoice {
        tables: choice.tables.clone(),
        schemas: choice.whole_schemas.clone(),
        exclude_tables: all
            .into_iter()
            .filter(|t| choice.whole_schemas.contains(&t.0) && !choice.tables.contains(t))
            .collect(),
        schema_only: false,
        data_only: false,
    };
    select(toc, &want)
}

/// A `pg_restore -L` file naming the entries `ids` of `toc`, in the TOC's order.
pub(super) fn write_list(
    toc: &Toc,
    ids: &[i32],
    work_dir: Option<&Path>,
) -> Result<tempfile::NamedTempFile> {
    let base = work_dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
    let mut file = tempfile::Builder::new()
        .prefix(".dbbackup-list-")
        .tempfile_in(&base)
        .map_err(|e| Error::io("creating a pg_restore list file in", &base, e))?;
    file.write_all(list_file(toc, ids).as_bytes())
        .map_err(|e| Error::io("writing the pg_restore list file", file.path(), e))?;
    Ok(file)
}

/// The selection's left-out foreign keys, one line each for the summary:
/// `schema.table.constraint -> schema.referenced`.
pub(super) fn left_out_lines(sel: &Selection) -> Vec<String> {
    sel.left_out_foreign_keys
        .iter()
        .map(|l| {
            format!(
                "{}.{}.{} -> {}.{}",
                l.table.0, l.table.1, l.constraint, l.references.0, l.references.1
            )
        })
        .collect()
}

/// How one section of a filtered restore runs.
pub(super) enum Pass {
    /// Not at all (`--data-only` has no pre-data and post-data, `--schema-only` no data).
    Skip,
    /// Whole, as in an unfiltered restore (only sections are filtered).
    Whole,
    /// Only the entries of this `pg_restore -L` list.
    Only(tempfile::NamedTempFile),
}

impl Pass {
    /// pg_restore's arguments for this pass (none for `Whole`).
    pub(super) fn args(&self) -> Vec<std::ffi::OsString> {
        match self {
            Pass::Only(f) => vec!["--use-list".into(), f.path().as_os_str().to_os_string()],
            _ => vec![],
        }
    }

    pub(super) fn runs(&self) -> bool {
        !matches!(self, Pass::Skip)
    }
}

/// The plan of a filtered restore.
pub(super) struct SectionLists {
    pub pre_data: Pass,
    pub data: Pass,
    pub post_data: Pass,
    pub left_out: Vec<String>,
    /// The chosen tables; `None` when every table is restored (only sections are filtered).
    pub chosen: Option<BTreeSet<TableName>>,
    /// The sequences that come with them, by schema and name.
    pub sequences: BTreeSet<TableName>,
}

/// Chooses the tables of `toc` by `filter` and writes the lists of each section's entries.
/// `post_toc` is the TOC that holds post-data when it is not `toc` (native backups of earlier
/// versions keep post-data in an archive of its own).
pub(super) fn plan_lists(
    toc: &Toc,
    post_toc: Option<&Toc>,
    database: &str,
    filter: &TableFilter,
    create: bool,
    work_dir: Option<&Path>,
) -> Result<SectionLists> {
    let section = |skip: bool, toc: &Toc, ids: &[i32]| -> Result<Pass> {
        Ok(if skip {
            Pass::Skip
        } else if !filter.selects_tables() {
            Pass::Whole
        } else {
            Pass::Only(write_list(toc, ids, work_dir)?)
        })
    };
    if !filter.selects_tables() {
        return Ok(SectionLists {
            pre_data: section(filter.data_only, toc, &[])?,
            data: section(filter.schema_only, toc, &[])?,
            post_data: section(filter.data_only, toc, &[])?,
            left_out: vec![],
            chosen: None,
            sequences: BTreeSet::new(),
        });
    }
    let choice = choose(toc, database, filter)?;
    let mut sel = selection(toc, &choice);
    let mut post_sel = post_toc.map(|t| selection(t, &choice));
    if !create {
        keep_schemas(toc, &mut sel);
        if let (Some(t), Some(s)) = (post_toc, post_sel.as_mut()) {
            keep_schemas(t, s);
        }
    }
    let post = post_sel.as_ref().unwrap_or(&sel);
    let sequences = toc
        .entries
        .iter()
        .filter(|e| e.desc == "SEQUENCE" && sel.pre_data.contains(&e.dump_id))
        .map(|e| (e.namespace.clone(), e.tag.clone()))
        .collect();
    let mut tables = choice.tables.clone();
    tables.extend(
        tables_of(toc)
            .into_iter()
            .filter(|t| choice.whole_schemas.contains(&t.0))
            .filter(|t| !filter.exclude_tables.iter().any(|x| x.matches(&t.0, &t.1))),
    );
    Ok(SectionLists {
        pre_data: section(filter.data_only, toc, &sel.pre_data)?,
        data: section(filter.schema_only, toc, &sel.data)?,
        post_data: section(filter.data_only, post_toc.unwrap_or(toc), &post.post_data)?,
        left_out: if filter.data_only {
            vec![]
        } else {
            left_out_lines(post)
        },
        chosen: Some(tables),
        sequences,
    })
}

/// Into an existing database, the schemas of `-n` (or those an `--exclude-schema` leaves) are
/// not created again, as `pg_restore -n` does not: the database has them (a `CREATE SCHEMA`
/// of one it has would fail the whole pre-data transaction). Their comments and grants stay
/// as the target has them too.
fn keep_schemas(toc: &Toc, sel: &mut Selection) {
    let schemas: BTreeSet<i32> = toc
        .entries
        .iter()
        .filter(|e| e.desc == "SCHEMA")
        .map(|e| e.dump_id)
        .collect();
    let about_schema: BTreeSet<i32> = toc
        .entries
        .iter()
        .filter(|e| {
            matches!(e.desc.as_str(), "COMMENT" | "ACL" | "SECURITY LABEL")
                && e.tag.starts_with("SCHEMA ")
                && e.deps.iter().any(|d| schemas.contains(d))
        })
        .map(|e| e.dump_id)
        .collect();
    for ids in [&mut sel.pre_data, &mut sel.data, &mut sel.post_data] {
        ids.retain(|id| !schemas.contains(id) && !about_schema.contains(id));
    }
}

/// A native backup's plan: the TOC of its schema archive(s), and `manifest` narrowed to the
/// chosen tables' chunks and sequences (large objects only when no table filter is given, as
/// pg_restore does with `-t`/`-n`).
pub(super) fn plan_native(
    dir: &Store,
    manifest: &mut Manifest,
    filter: &TableFilter,
    create: bool,
    work_dir: Option<&Path>,
) -> Result<SectionLists> {
    let toc = read_native_toc(dir, manifest, "pre-data")?;
    let post_toc = match (
        manifest.schema_file("pre-data"),
        manifest.schema_file("post-data"),
    ) {
        (Some(a), Some(b)) if a.chunk.file != b.chunk.file => {
            Some(read_native_toc(dir, manifest, "post-data")?)
        }
        _ => None,
    };
    let lists = plan_lists(
        &toc,
        post_toc.as_ref(),
        &manifest.database.name,
        filter,
        create,
        work_dir,
    )?;
    if let Some(chosen) = &lists.chosen {
        manifest
            .tables
            .retain(|t| chosen.contains(&(t.schema.clone(), t.name.clone())));
        manifest.sequences.retain(|s| {
            lists
                .sequences
                .contains(&(s.schema.clone(), s.name.clone()))
        });
        manifest.large_objects = Default::default();
    }
    if filter.schema_only {
        manifest.large_objects = Default::default();
        manifest.sequences.clear();
        for t in &mut manifest.tables {
            t.units.clear();
        }
    }
    Ok(lists)
}
