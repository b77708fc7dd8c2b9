//! `restore --table T --as [SCHEMA.]NEW` (or `--into-schema SCHEMA`): one table of a native
//! or custom backup, with its partitions, indexes, constraints, triggers, policies, defaults, comments,
//! grants and owned sequences, created and filled in a live database beside the original,
//! touching nothing else.
//!
//! How, and why this way:
//! 1. Before anything is written: the table is found in the schema archive's TOC, its family
//!    (partitions, recursively) and their entries chosen ([`crate::format::toc_select`]), and the
//!    target names checked (refused when one exists).
//! 2. A private scratch schema (`dbbackup_restore_<pid>_<n>`) is created. The family's pre-data
//!    is run there, every qualified name of the family rewritten to the scratch schema
//!    ([`crate::format::sql_requalify`]); the chunks load in parallel as in a whole restore
//!    (`--jobs`, `--memory-limit`; a custom backup's rows come from its pg_dump archive, one
//!    table after another, see [`super::beside_custom`]); post-data (indexes, constraints, triggers) is built there,
//!    and the owned sequences get their values.
//! 3. One transaction renames what collides by the rule of [`super::rename`] (`--as`), moves
//!    the tables into the target schema (`ALTER TABLE … SET SCHEMA` takes their indexes,
//!    constraints and owned sequences along; with `--into-schema` the schema is created if
//!    missing, in the same transaction), and drops the then empty scratch schema. Other
//!    sessions see nothing until that commit, then all of it. That transaction is built in
//!    `beside_move.rs`; where a custom backup's TOC and rows come from, in `beside_custom.rs`.
//!
//! Loading straight into the final names would need the renamed DDL to be built before the
//! rows, and the table would be visible half-filled; one transaction around the whole load
//! would forbid parallel loaders. The scratch schema gives both: parallel loading, and one
//! atomic appearance. The original table is never locked.
//!
//! On any failure or Ctrl-C the scratch schema is dropped with everything in it, so the target
//! is as it was (the error says so). Foreign keys to tables outside the family are left out
//! and listed. The new objects belong to the role that restores (owners are not restored: the
//! backup's owner may not be the one who asked for the copy). Types, functions and schemas the
//! table uses must exist in the target (they do in the live database it came from).

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::format::archive_toc::Toc;
use crate::format::manifest::{quote_ident, Manifest};
use crate::format::sql_requalify::{requalify, Renames};
use crate::format::toc_select::{partitions_of, qualified_objects};
use crate::memory::Wanted;
use crate::progress::Progress;
use crate::source::conn::ConnParams;

use super::beside_custom::Rows;
use super::beside_move::{names_in_schema, RELATIONS};
use super::failure::Ledger;
use super::filter::{Choice, TableName};
use super::options::{RestoreOptions, RestoreSummary};
use super::rename::{rename_all, RenameTarget};
use super::toc_plan::tables_of;

/// Restores the one table of `opts.filter` beside the live objects (see the module
/// documentation).
pub(super) async fn restore_beside(
    conn: &ConnParams,
    opts: &RestoreOptions,
    mut manifest: Manifest,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
) -> Result<RestoreSummary> {
    let rename = opts.rename.clone().expect("called for --as/--into-schema");
    let flag = match rename {
        RenameTarget::As { .. } => "--as",
        RenameTarget::IntoSchema(_) => "--into-schema",
    };
    // The seam between the strategies: where the TOC comes from, and (in `load`) how the
    // rows reach the scratch schema. Everything else is the same for both.
    let (rows, toc, post_toc) =
        super::beside_custom::source(conn, opts, &manifest, &progress, &cancel).await?;
    // The pattern alone, without the partitions toc_plan::choose would add.
    let chosen = opts
        .filter
        .choose(&manifest.database.name, &tables_of(&toc), &[])?
        .tables;
    let root = match chosen.len() {
        1 => chosen.into_iter().next().unwrap(),
        n => {
            return Err(Error::Usage(format!(
                "{flag} restores one table; --table {:?} matches {n} tables of the backup ({})",
                opts.filter.tables[0].text(),
                chosen
                    .iter()
                    .map(|(s, t)| format!("{s}.{t}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    // The root first, then its partitions.
    let mut family_list = vec![root.clone()];
    family_list.extend(partitions_of(&toc, &root.0, &root.1));
    let family: BTreeSet<TableName> = family_list.iter().cloned().collect();
    let choice = Choice {
        tables: family.clone(),
        whole_schemas: BTreeSet::new(),
    };
    let sel = super::toc_plan::selection(&toc, &choice);
    let post_sel = post_toc
        .as_ref()
        .map(|t| super::toc_plan::selection(t, &choice));
    let post_toc_ref = post_toc.as_ref().unwrap_or(&toc);
    let post = post_sel.as_ref().unwrap_or(&sel);
    let left_out = super::toc_plan::left_out_lines(post);

    // The target: the database must exist, the names must be free.
    let session = conn.connect(&opts.target).await?;
    let client = &session.client;
    let (target_schema, new_root) = match &rename {
        RenameTarget::As { schema, name } => (
            schema.clone().unwrap_or_else(|| root.0.clone()),
            name.clone(),
        ),
        RenameTarget::IntoSchema(s) => (s.clone(), root.1.clone()),
    };
    let schema_exists = client
        .query_opt(
            "SELECT 1 FROM pg_namespace WHERE nspname = $1",
            &[&target_schema],
        )
        .await
        .map_err(|e| Error::query("looking up the target schema", e))?
        .is_some();
    if !schema_exists && flag == "--as" {
        return Err(Error::Refused(format!(
            "--as: schema {target_schema:?} does not exist in database {:?}",
            opts.target
        )));
    }
    let tables: Vec<String> = family_list.iter().map(|(_, t)| t.clone()).collect();
    let new_tables: Vec<String> = match &rename {
        RenameTarget::As { .. } => {
            let mut v = vec![new_root.clone()];
            v.extend(rename_all(&tables[1..], &root.1, &new_root, |n| {
                n == new_root
            }));
            v
        }
        RenameTarget::IntoSchema(_) => tables.clone(),
    };
    let taken = names_in_schema(client, RELATIONS, &target_schema).await?;
    if let Some(n) = new_tables.iter().find(|n| taken.contains(*n)) {
        return Err(Error::Refused(format!(
            "{flag}: {}.{} already exists in database {:?}; nothing was restored",
            quote_ident(&target_schema),
            quote_ident(n),
            opts.target
        )));
    }

    // The scratch schema: from here on, any failure drops it.
    let scratch = format!(
        "dbbackup_restore_{}_{}",
        std::process::id(),
        session.backend_pid
    );
    client
        .batch_execute(&format!("CREATE SCHEMA {}", quote_ident(&scratch)))
        .await
        .map_err(|e| Error::query(format!("creating the scratch schema {scratch}"), e))?;
    let work = Work {
        conn,
        opts,
        client,
        canceller: &session.cancel,
        cancel: &cancel,
        scratch: &scratch,
    };
    let steps = async {
        let renames = work.renames(&toc, &sel, &family);
        let pre: Vec<i32> = sel.pre_data.clone();
        work.run_entries(&toc, &pre, &renames, "pre-data").await?;
        let summary = match &rows {
            Rows::Native => {
                work.load(&mut manifest, &family, &toc, &sel, progress.clone())
                    .await?
            }
            Rows::Custom(file) => {
                progress.note(
                    "custom backup: the tables load one after another from pg_dump's archive",
                );
                super::beside_custom::load(
                    conn, opts, &file.0, &toc, &sel.data, &renames, &scratch, &cancel,
                )
                .await?;
                RestoreSummary {
                    chunks: manifest.stream.len() as u64,
                    raw_bytes: manifest.stream.iter().map(|c| c.raw_bytes).sum(),
                    ..RestoreSummary::default()
                }
            }
        };
        work.run_entries(post_toc_ref, &post.post_data, &renames, "post-data")
            .await?;
        work.finish(
            &tables,
            &root.1,
            &new_tables,
            &target_schema,
            schema_exists,
            &rename,
        )
        .await?;
        Ok::<_, Error>(summary)
    };
    match steps.await {
        Ok(mut summary) => {
            summary.tables = family.len() as u64;
            summary.left_out_foreign_keys = left_out;
            summary.created = Some(format!(
                "{target_schema}.{new_root}{}",
                match family.len() - 1 {
                    0 => String::new(),
                    n => format!(
                        " with {n} partition{} ({})",
                        if n == 1 { "" } else { "s" },
                        new_tables[1..].join(", ")
                    ),
                }
            ));
            Ok(summary)
        }
        Err(e) => {
            let left = match drop_scratch(conn, &opts.target, &scratch, session.backend_pid).await
            {
                Ok(()) => format!(
                    "nothing was changed in database {:?}: the scratch schema {scratch} was dropped",
                    opts.target
                ),
                Err(why) => format!(
                    "the scratch schema {scratch} could not be dropped ({why}); drop it with DROP SCHEMA {} CASCADE — nothing else was changed",
                    quote_ident(&scratch)
                ),
            };
            Err(Error::RestoreFailed {
                target: opts.target.clone(),
                phase: format!("{flag} {}.{}", root.0, root.1),
                source: Box::new(e),
                left,
            })
        }
    }
}

/// After a failure: stops what our main session still runs, and drops the scratch schema with
/// everything in it.
async fn drop_scratch(conn: &ConnParams, target: &str, scratch: &str, pid: i32) -> Result<()> {
    let s = conn.connect(target).await?;
    let _ = s
        .client
        .query("SELECT pg_catalog.pg_cancel_backend($1)", &[&pid])
        .await;
    s.client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote_ident(scratch)
        ))
        .await
        .map_err(|e| Error::query(format!("dropping the scratch schema {scratch}"), e))
}

pub(super) struct Work<'a> {
    conn: &'a ConnParams,
    opts: &'a RestoreOptions,
    pub(super) client: &'a Client,
    canceller: &'a crate::source::conn::Canceller,
    cancel: &'a CancellationToken,
    pub(super) scratch: &'a str,
}

impl Work<'_> {
    /// Runs `sql` on the main session; Ctrl-C cancels the statement (an index build may run
    /// long) and returns, so that the scratch schema is dropped within the restore's wind-down.
    pub(super) async fn exec(&self, sql: &str, what: &str) -> Result<()> {
        tokio::select! {
            r = self.client.batch_execute(sql) => r.map_err(|e| Error::query(what.to_string(), e)),
            _ = self.cancel.cancelled() => {
                let _ = crate::source::conn::cancel_query(self.canceller).await;
                Err(Error::Interrupted)
            }
        }
    }

    /// Every qualified name of the family's relations (tables, sequences, indexes,
    /// constraints' indexes), pointed at the scratch schema.
    fn renames(
        &self,
        toc: &Toc,
        sel: &crate::format::toc_select::Selection,
        family: &BTreeSet<TableName>,
    ) -> Renames {
        let mut renames = Renames::new();
        let ids: BTreeSet<i32> = sel.pre_data.iter().chain(&sel.post_data).copied().collect();
        let ids_vec: Vec<i32> = ids.iter().copied().collect();
        // Relations and extended statistics: named with a schema of their own.
        for (_, schema, name) in qualified_objects(toc, &ids_vec) {
            renames.add((&schema, &name), (self.scratch, &name));
        }
        // Indexes take their table's schema, but INDEX ATTACH names them qualified.
        for e in toc.entries.iter().filter(|e| ids.contains(&e.dump_id)) {
            let name = match e.desc.as_str() {
                "INDEX" => Some(e.tag.clone()),
                // Tagged "table constraint": the constraint's index has the constraint's name.
                "CONSTRAINT" => family
                    .iter()
                    .find_map(|(_, t)| e.tag.strip_prefix(&format!("{t} ")))
                    .map(str::to_string),
                _ => None,
            };
            if let Some(name) = name {
                renames.add((&e.namespace, &name), (self.scratch, &name));
            }
        }
        renames
    }

    /// Runs the entries `ids` of `toc` (in the TOC's order), requalified into the scratch
    /// schema, in one transaction.
    async fn run_entries(
        &self,
        toc: &Toc,
        ids: &[i32],
        renames: &Renames,
        section: &str,
    ) -> Result<()> {
        let wanted: BTreeSet<i32> = ids.iter().copied().collect();
        let mut sql = String::from("BEGIN;\n");
        for e in toc.entries.iter().filter(|e| wanted.contains(&e.dump_id)) {
            if e.defn.trim().is_empty() {
                continue;
            }
            let rewritten = requalify(&e.defn, renames)?;
            sql.push_str(&rewritten);
            sql.push('\n');
        }
        sql.push_str("COMMIT;");
        let r = self
            .exec(
                &sql,
                &format!("{section} of the table in the scratch schema"),
            )
            .await;
        if r.is_err() {
            let _ = self.client.batch_execute("ROLLBACK").await;
        }
        r
    }

    /// Loads the family's chunks into the scratch schema's tables in parallel, and sets the
    /// values of its owned sequences there.
    async fn load(
        &self,
        manifest: &mut Manifest,
        family: &BTreeSet<TableName>,
        toc: &Toc,
        sel: &crate::format::toc_select::Selection,
        progress: Arc<dyn Progress>,
    ) -> Result<RestoreSummary> {
        let sequences: BTreeSet<TableName> = toc
            .entries
            .iter()
            .filter(|e| e.desc == "SEQUENCE" && sel.pre_data.contains(&e.dump_id))
            .map(|e| (e.namespace.clone(), e.tag.clone()))
            .collect();
        manifest
            .tables
            .retain(|t| family.contains(&(t.schema.clone(), t.name.clone())));
        manifest
            .sequences
            .retain(|s| sequences.contains(&(s.schema.clone(), s.name.clone())));
        manifest.large_objects = Default::default();
        for t in &mut manifest.tables {
            t.schema = self.scratch.to_string();
        }
        for s in &mut manifest.sequences {
            s.schema = self.scratch.to_string();
        }
        crate::format::chunk::ChunkReader::check_readable(&self.opts.dir, manifest.all_chunks())?;
        let budget = super::budget::plan(
            self.opts.memory_limit,
            Wanted {
                workers: self.opts.jobs,
                explicit: self.opts.jobs_explicit,
                flag: "--jobs",
            },
            manifest,
            &self.opts.dir,
        )?;
        progress.note(&budget.line());
        let opts = RestoreOptions {
            jobs: budget.workers,
            ..self.opts.clone()
        };
        let mut summary = RestoreSummary::default();
        let ledger = Ledger::default();
        super::load::load_data(
            self.conn,
            &opts,
            manifest,
            &progress,
            self.cancel,
            &mut summary,
            &ledger,
        )
        .await?;
        super::schema::set_sequences(self.client, manifest).await?;
        summary.memory = Some(budget.record());
        Ok(summary)
    }
}
