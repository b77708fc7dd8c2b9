//! The last step of `restore --as` / `--into-schema` (see [`super::beside`]): one transaction
//! that renames what would collide by the rule of [`super::rename`], moves the family's tables
//! (with their indexes, constraints and owned sequences) and its extended statistics from the
//! scratch schema into the target schema, and drops the then empty scratch schema.

use std::collections::BTreeSet;

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::format::manifest::quote_ident;

use super::beside::Work;
use super::rename::{rename_all, RenameTarget};

impl Work<'_> {
    /// The one transaction that renames, moves into the target schema, and drops the scratch
    /// schema.
    pub(super) async fn finish(
        &self,
        family: &[String],
        old_root: &str,
        new_tables: &[String],
        target_schema: &str,
        schema_exists: bool,
        rename: &RenameTarget,
    ) -> Result<()> {
        let s = quote_ident(self.scratch);
        let mut sql = String::from("BEGIN;\n");
        if !schema_exists {
            sql.push_str(&format!("CREATE SCHEMA {};\n", quote_ident(target_schema)));
        }
        if let RenameTarget::As { name: new_root, .. } = rename {
            let rels = self
                .client
                .query(
                    "SELECT c.relname, c.relkind::text FROM pg_class c
                     WHERE c.relnamespace = $1::text::regnamespace
                       AND c.relkind IN ('r', 'p', 'i', 'I', 'S')
                     ORDER BY c.relname",
                    &[&self.scratch],
                )
                .await
                .map_err(|e| Error::query("listing the scratch schema", e))?;
            let taken = names_in_schema(self.client, RELATIONS, target_schema).await?;
            let (mut olds, mut kinds, mut news) = (Vec::new(), Vec::new(), Vec::new());
            let mut others = Vec::new();
            for r in &rels {
                let name: String = r.get(0);
                let kind: String = r.get(1);
                match family.iter().position(|t| *t == name) {
                    Some(i) => {
                        olds.push(name);
                        kinds.push(kind);
                        news.push(new_tables[i].clone());
                    }
                    None => others.push((name, kind)),
                }
            }
            let other_names: Vec<String> = others.iter().map(|(n, _)| n.clone()).collect();
            let other_new = rename_all(&other_names, old_root, new_root, |n| {
                taken.contains(n) || new_tables.iter().any(|t| t == n)
            });
            for ((o, k), n) in others.into_iter().zip(other_new) {
                olds.push(o);
                kinds.push(k);
                news.push(n);
            }
            // Through names of our own first: a rename must never meet a name the rule gives
            // another object of the scratch schema.
            for (i, (old, kind)) in olds.iter().zip(&kinds).enumerate() {
                sql.push_str(&format!(
                    "ALTER {} {s}.{} RENAME TO dbbackup_tmp_{i};\n",
                    alter_kind(kind),
                    quote_ident(old)
                ));
            }
            for (i, (new, kind)) in news.iter().zip(&kinds).enumerate() {
                sql.push_str(&format!(
                    "ALTER {} {s}.dbbackup_tmp_{i} RENAME TO {};\n",
                    alter_kind(kind),
                    quote_ident(new)
                ));
            }
            // Constraints without an index of their own (check, not-null, foreign keys within
            // the family): those with one were renamed with it. Inherited ones (a partition's
            // copy of its parent's) follow their parent's rename.
            let cons = self
                .client
                .query(
                    "SELECT c.relname, con.conname FROM pg_constraint con
                     JOIN pg_class c ON c.oid = con.conrelid
                     WHERE c.relnamespace = $1::text::regnamespace
                       AND con.contype NOT IN ('p', 'u', 'x') AND con.coninhcount = 0
                     ORDER BY 1, 2",
                    &[&self.scratch],
                )
                .await
                .map_err(|e| Error::query("listing the scratch schema's constraints", e))?;
            for r in &cons {
                let table: String = r.get(0);
                let con: String = r.get(1);
                let new_table = olds
                    .iter()
                    .position(|o| *o == table)
                    .map(|i| news[i].clone())
                    .unwrap_or(table);
                let new_con = super::rename::renamed(&con, old_root, new_root);
                if new_con != con {
                    sql.push_str(&format!(
                        "ALTER TABLE {s}.{} RENAME CONSTRAINT {} TO {};\n",
                        quote_ident(&new_table),
                        quote_ident(&con),
                        quote_ident(&new_con)
                    ));
                }
            }
        }
        for t in new_tables {
            sql.push_str(&format!(
                "ALTER TABLE {s}.{} SET SCHEMA {};\n",
                quote_ident(t),
                quote_ident(target_schema)
            ));
        }
        // Extended statistics are objects of their own: moving a table leaves them behind.
        let stats: Vec<String> = self
            .client
            .query(
                "SELECT stxname FROM pg_statistic_ext
                 WHERE stxnamespace = $1::text::regnamespace ORDER BY 1",
                &[&self.scratch],
            )
            .await
            .map_err(|e| Error::query("listing the scratch schema's statistics", e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let new_stats = match rename {
            RenameTarget::As { name: new_root, .. } => {
                let taken = names_in_schema(self.client, STATISTICS, target_schema).await?;
                rename_all(&stats, old_root, new_root, |n| taken.contains(n))
            }
            RenameTarget::IntoSchema(_) => stats.clone(),
        };
        for (old, new) in stats.iter().zip(&new_stats) {
            if old != new {
                sql.push_str(&format!(
                    "ALTER STATISTICS {s}.{} RENAME TO {};\n",
                    quote_ident(old),
                    quote_ident(new)
                ));
            }
            sql.push_str(&format!(
                "ALTER STATISTICS {s}.{} SET SCHEMA {};\n",
                quote_ident(new),
                quote_ident(target_schema)
            ));
        }
        // RESTRICT: anything left behind (a sequence no table owns) stops the commit rather
        // than being dropped unseen.
        sql.push_str(&format!("DROP SCHEMA {s};\nCOMMIT;"));
        let r = self
            .exec(&sql, "renaming and moving the restored table into place")
            .await;
        if r.is_err() {
            let _ = self.client.batch_execute("ROLLBACK").await;
        }
        r
    }
}

/// The names of `schema`'s relations (any kind) in the target.
pub(super) const RELATIONS: NamesIn = NamesIn {
    what: "relations",
    query: "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = $1",
};

/// The names of `schema`'s extended statistics in the target.
const STATISTICS: NamesIn = NamesIn {
    what: "statistics",
    query: "SELECT s.stxname FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace
            WHERE n.nspname = $1",
};

/// A catalog query for the names of one kind of object in a schema (`$1`).
pub(super) struct NamesIn {
    what: &'static str,
    query: &'static str,
}

pub(super) async fn names_in_schema(
    client: &Client,
    names: NamesIn,
    schema: &str,
) -> Result<BTreeSet<String>> {
    Ok(client
        .query(names.query, &[&schema])
        .await
        .map_err(|e| Error::query(format!("listing the {} of schema {schema}", names.what), e))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

fn alter_kind(relkind: &str) -> &'static str {
    match relkind {
        "i" | "I" => "INDEX",
        "S" => "SEQUENCE",
        _ => "TABLE",
    }
}
