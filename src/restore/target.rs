//! The target database: created (`--create`) or checked before anything is written, and its
//! foreign keys dropped for a `--clean` restore.

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::format::manifest::{quote_ident, DatabaseInfo};
use crate::progress::Progress;
use crate::source::conn::ConnParams;

use super::failure::Ledger;
use super::options::RestoreOptions;

/// Creates the target (`--create`, noted in `ledger` with its OID: what a failed restore may
/// drop) or checks that it may be written to.
pub(super) async fn prepare_target(
    conn: &ConnParams,
    opts: &RestoreOptions,
    db: &DatabaseInfo,
    progress: &dyn Progress,
    ledger: &Ledger,
) -> Result<()> {
    let maint = conn.connect(&conn.maintenance_db).await?;
    let exists = maint
        .client
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[&opts.target],
        )
        .await
        .map_err(|e| Error::query("looking up the target database", e))?
        .is_some();
    if opts.create {
        if exists {
            if !opts.clean {
                return Err(Error::Refused(format!(
                    "database {:?} already exists; add --clean to drop and recreate it, or restore into it without --create",
                    opts.target
                )));
            }
            maint
                .client
                .batch_execute(&format!(
                    "DROP DATABASE {} WITH (FORCE)",
                    quote_ident(&opts.target)
                ))
                .await
                .map_err(|e| {
                    Error::query(format!("dropping database {:?} (--clean)", opts.target), e)
                })?;
        }
        let version: i32 = maint
            .client
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .map_err(|e| Error::query("reading server version", e))?
            .get(0);
        let (create, warning) =
            crate::source::dbprops::create_database_sql(&opts.target, db, version);
        if let Some(warning) = warning {
            progress.note(&format!("warning: {warning}"));
        }
        maint
            .client
            .batch_execute(&create)
            .await
            .map_err(|e| Error::query(format!("creating database {:?}", opts.target), e))?;
        let oid: u32 = maint
            .client
            .query_one(
                "SELECT oid FROM pg_database WHERE datname = $1",
                &[&opts.target],
            )
            .await
            .map_err(|e| Error::query("looking up the database just created", e))?
            .get(0);
        ledger.created(&opts.target, oid);
        return Ok(());
    }
    if !exists {
        return Err(Error::Refused(format!(
            "target database {:?} does not exist; add --create to create it",
            opts.target
        )));
    }
    // A filtered restore goes into a database that holds other things (with --data-only, the
    // very tables it fills): its pre-data transaction fails whole if a table is there already.
    if opts.clean || opts.filter.is_active() {
        return Ok(());
    }
    let target = conn.connect(&opts.target).await?;
    let row = target
        .client
        .query_one(
            "SELECT count(*), min(format('%I.%I', n.nspname, c.relname))
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
               AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'",
            &[],
        )
        .await
        .map_err(|e| Error::query("checking that the target is empty", e))?;
    let count: i64 = row.get(0);
    if count > 0 {
        let example: String = row.get(1);
        return Err(Error::Refused(format!(
            "target database {:?} is not empty ({count} relations, e.g. {example}); add --clean to replace the backup's objects, or restore into a new database with --create",
            opts.target
        )));
    }
    Ok(())
}

/// `--clean` into an existing database: foreign keys touching the backup's tables are dropped
/// first, so that pg_restore's `DROP TABLE IF EXISTS` does not trip over them. Post-data
/// recreates them.
pub(super) async fn drop_foreign_keys(client: &Client, tables: &[(String, String)]) -> Result<()> {
    let schemas: Vec<&str> = tables.iter().map(|t| t.0.as_str()).collect();
    let names: Vec<&str> = tables.iter().map(|t| t.1.as_str()).collect();
    let rows = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname), quote_ident(con.conname)
             FROM pg_constraint con
             JOIN pg_class c ON c.oid = con.conrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_class r ON r.oid = con.confrelid
             JOIN pg_namespace rn ON rn.oid = r.relnamespace
             WHERE con.contype = 'f'
               AND ((n.nspname, c.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))
                    OR (rn.nspname, r.relname) IN (SELECT * FROM unnest($1::text[], $2::text[])))",
            &[&schemas, &names],
        )
        .await
        .map_err(|e| Error::query("listing foreign keys to drop (--clean)", e))?;
    for r in rows {
        let table: String = r.get(0);
        let name: String = r.get(1);
        client
            .batch_execute(&format!(
                "ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}"
            ))
            .await
            .map_err(|e| {
                Error::query(
                    format!("dropping foreign key {name} on {table} (--clean)"),
                    e,
                )
            })?;
    }
    Ok(())
}
