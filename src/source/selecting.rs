//! The backup filters applied to the catalog, inside the probe's snapshot: which tables are
//! copied (and locked), which sequence values are read, whether large objects are, and which
//! include patterns matched — with the names pg_dump's own queries see, so that the data a
//! native backup copies is the data pg_dump would dump with the same switches.

use std::collections::{HashMap, HashSet};

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::format::selection::{Matches, Rel, Selection};

use super::probe::{SequenceInfo, TableInfo};

/// One relation of a kind pg_dump's `-t` looks at.
struct Relation {
    oid: u32,
    schema: String,
    name: String,
    visible: bool,
}

impl Relation {
    fn rel(&self) -> Rel<'_> {
        Rel {
            schema: &self.schema,
            name: &self.name,
            visible: self.visible,
        }
    }
}

fn q(what: &str) -> impl FnOnce(tokio_postgres::Error) -> Error + '_ {
    move |e| Error::query(what, e)
}

/// The names pg_dump's selection queries see.
struct Catalog {
    relations: Vec<Relation>,
    schema_names: Vec<String>,
    /// Schemas an extension created (pg_dump never counts them as selected).
    extension_schemas: HashSet<String>,
}

impl Catalog {
    async fn read(client: &Client) -> Result<Catalog> {
        // Visibility as pg_dump sees it: it matches unqualified `-t` patterns after `RESET
        // search_path` (the server's default, with database and role settings), while our
        // sessions run with an empty one; LOCAL, and put back at once.
        client
            .batch_execute("SET LOCAL search_path TO DEFAULT")
            .await
            .map_err(q("resetting search_path to match table patterns"))?;
        let rows = client
            .query(
                "SELECT c.oid, n.nspname, c.relname, pg_catalog.pg_table_is_visible(c.oid)
                 FROM pg_catalog.pg_class c
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'S', 'v', 'm', 'f', 'p')",
                &[],
            )
            .await
            .map_err(q("matching table patterns"));
        client
            .batch_execute("SET LOCAL search_path = ''")
            .await
            .map_err(q("restoring the empty search_path"))?;
        let relations = rows?
            .iter()
            .map(|r| Relation {
                oid: r.get(0),
                schema: r.get(1),
                name: r.get(2),
                visible: r.get(3),
            })
            .collect();
        let schemas = client
            .query(
                "SELECT n.nspname, EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                     WHERE d.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
                       AND d.objid = n.oid AND d.deptype = 'e')
                 FROM pg_catalog.pg_namespace n",
                &[],
            )
            .await
            .map_err(q("matching schema patterns"))?;
        Ok(Catalog {
            relations,
            schema_names: schemas.iter().map(|r| r.get(0)).collect(),
            extension_schemas: schemas
                .iter()
                .filter(|r| r.get::<_, bool>(1))
                .map(|r| r.get(0))
                .collect(),
        })
    }

    fn matches(&self, selection: &Selection) -> Matches {
        let rels: Vec<Rel> = self.relations.iter().map(Relation::rel).collect();
        selection.matches(self.schema_names.iter().map(String::as_str), &rels)
    }
}

/// Which include patterns of `selection` match in the database of `client` (run inside a
/// transaction: it sets search_path LOCAL). A cluster backup asks every database first.
pub async fn matches(client: &Client, selection: &Selection) -> Result<Matches> {
    Ok(Catalog::read(client).await?.matches(selection))
}

/// Keeps in `tables` and `sequences` what `selection` takes, and returns which of its include
/// patterns matched. Does nothing (no query) when the selection takes everything.
pub async fn apply(
    client: &Client,
    selection: &Selection,
    tables: &mut Vec<TableInfo>,
    sequences: &mut Vec<SequenceInfo>,
) -> Result<Matches> {
    if selection.is_everything() {
        return Ok(Matches::default());
    }
    let catalog = Catalog::read(client).await?;
    let matches = catalog.matches(selection);
    let relations = &catalog.relations;
    let extension_schemas = &catalog.extension_schemas;

    // The table a sequence belongs to (serial: 'a', identity: 'i'), as pg_dump's owning_tab.
    let owners: HashMap<u32, (u32, bool)> = client
        .query(
            "SELECT d.objid, d.refobjid, d.deptype = 'i'
             FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class s ON s.oid = d.objid
             WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objsubid = 0
               AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
               AND d.deptype IN ('a', 'i') AND s.relkind = 'S'",
            &[],
        )
        .await
        .map_err(q("reading sequence owners"))?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let by_oid: HashMap<u32, &Relation> = relations.iter().map(|r| (r.oid, r)).collect();
    let by_name: HashMap<(&str, &str), &Relation> = relations
        .iter()
        .map(|r| ((r.schema.as_str(), r.name.as_str()), r))
        .collect();

    tables.retain(|t| {
        let visible = by_oid.get(&t.oid).is_some_and(|r| r.visible);
        let rel = Rel {
            schema: &t.schema,
            name: &t.name,
            visible,
        };
        match &t.extension_config {
            Some(_) => selection
                .extension_config_data_selected(&rel, extension_schemas.contains(&t.schema)),
            None => selection.data_selected(&rel),
        }
    });
    let configs = super::extconfig::config_relations(client).await?;
    sequences.retain(|s| {
        let Some(seq) = by_name.get(&(s.schema.as_str(), s.name.as_str())) else {
            return false;
        };
        if configs.contains_key(&seq.oid) {
            // An extension's configuration sequence: its value goes with the extension.
            return selection
                .extension_config_data_selected(&seq.rel(), extension_schemas.contains(&s.schema));
        }
        let owner = owners
            .get(&seq.oid)
            .and_then(|(oid, identity)| by_oid.get(oid).map(|t| (t.rel(), *identity)));
        selection.sequence_data_selected(&seq.rel(), owner.as_ref().map(|(t, i)| (t, *i)))
    });
    Ok(matches)
}
