//! Which TOC entries of a pg_dump archive restore a chosen set of tables (or whole schemas):
//! the answer to `restore --table/-t`, `--schema/-n`, `--schema-only`, `--data-only`, fed to
//! `pg_restore -L` as a list file ([`list_file`]).
//!
//! The rules, from the dependencies pg_dump records (checked against real archives of
//! fixtures/hard_types.sql and odd_schemas.sql, pg_dump 15 and 18):
//!
//! - A relation (TABLE, VIEW, MATERIALIZED VIEW, FOREIGN TABLE, SEQUENCE) is restored when it
//!   is chosen by name or its schema is chosen whole. A partition is a table of its own: the
//!   caller chooses it ([`partitions_of`] lists a partitioned table's partitions).
//! - An entry that belongs to objects (index, constraint, trigger, rule, policy, row security,
//!   default, extended statistics, its data, the sequence a table owns, and that sequence's
//!   OWNED BY and value, materialized view data) follows the relation it is on: it is restored
//!   when that relation is (its other dependencies, such as a partition's key on the parent's
//!   key, only order it). TABLE ATTACH and INDEX ATTACH need both sides restored. pg_dump makes
//!   an owned (serial or identity) sequence depend on its table, and nothing else does.
//! - COMMENT, ACL and SECURITY LABEL entries follow the object they are about: restored when
//!   any object they depend on (other than another ACL) is, as `pg_restore` decides.
//! - A FOREIGN KEY (FK CONSTRAINT) whose table is restored but whose referenced table is not
//!   is left out and reported ([`LeftOut`]), never restored half.
//! - SCHEMA entries are restored only for schemas chosen whole; the schemas of chosen tables
//!   are listed in [`Selection::schemas`] for the caller to decide (the target normally has
//!   them). Other objects the restored entries need (types, functions, sequences a table uses
//!   but does not own, parent tables) are listed in [`Selection::requires`].
//!
//! Entries without a section of their own (comments, ACLs) belong to the section of the entry
//! before them in TOC order, as pg_restore's `--section` counts them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::format::archive_toc::{Toc, TocEntry, TocSection};

/// What to restore: relations by name, whole schemas, and which sections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableChoice {
    /// (schema, name) of relations to restore: tables, partitions, views, materialized views,
    /// foreign tables, sequences. Names are the objects' actual names (unquoted).
    pub tables: BTreeSet<(String, String)>,
    /// Schemas restored whole: the SCHEMA entry and every object in the schema.
    pub schemas: BTreeSet<String>,
    /// Relations of [`Self::schemas`] not to restore (`--exclude-table`).
    pub exclude_tables: BTreeSet<(String, String)>,
    /// Definitions only (no TABLE DATA, SEQUENCE SET, ...).
    pub schema_only: bool,
    /// Data only (the data section: TABLE DATA, SEQUENCE SET).
    pub data_only: bool,
}

/// The dump ids to restore, each list in TOC order, and what was left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub pre_data: Vec<i32>,
    pub data: Vec<i32>,
    pub post_data: Vec<i32>,
    /// Foreign keys of restored tables that reference a table not restored.
    pub left_out_foreign_keys: Vec<LeftOut>,
    /// SCHEMA entries of the chosen tables' schemas that are not restored (schemas not chosen
    /// whole): dump id and schema name, in TOC order.
    pub schemas: Vec<(i32, String)>,
    /// Pre-data entries not restored that restored ones depend on (types, functions, sequences
    /// used but not owned, an inheritance parent, ...), SCHEMA entries aside: the target must
    /// have them.
    pub requires: Vec<i32>,
}

impl Selection {
    /// Every id of the three sections, in TOC order.
    pub fn all(&self) -> Vec<i32> {
        let mut all = self.pre_data.clone();
        all.extend(&self.data);
        all.extend(&self.post_data);
        all
    }
}

/// A foreign key left out: its dump id, its name, its table and the table it references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOut {
    pub dump_id: i32,
    pub constraint: String,
    /// (schema, name) of the table the constraint is on.
    pub table: (String, String),
    /// (schema, name) of the referenced table that is not restored.
    pub references: (String, String),
}

const RELATIONS: &[&str] = &[
    "TABLE",
    "VIEW",
    "MATERIALIZED VIEW",
    "FOREIGN TABLE",
    "SEQUENCE",
];

/// Entries that belong to the table-like objects they depend on.
const FOLLOWERS: &[&str] = &[
    "INDEX",
    "CONSTRAINT",
    "CHECK CONSTRAINT",
    "FK CONSTRAINT",
    "TRIGGER",
    "RULE",
    "POLICY",
    "ROW SECURITY",
    "DEFAULT",
    "STATISTICS",
    "STATISTICS DATA",
    "TABLE DATA",
    "MATERIALIZED VIEW DATA",
    "SEQUENCE OWNED BY",
    "SEQUENCE SET",
    "TABLE ATTACH",
    "INDEX ATTACH",
];

/// Entries about another object, restored with it (pg_restore's rule for selective restores).
const ANNOTATIONS: &[&str] = &["COMMENT", "ACL", "SECURITY LABEL"];

/// Objects whose absence keeps a follower out: what a follower is part of, not what it uses.
const TABLE_LIKE: &[&str] = &[
    "TABLE",
    "VIEW",
    "MATERIALIZED VIEW",
    "FOREIGN TABLE",
    "INDEX",
    "CONSTRAINT",
    "FK CONSTRAINT",
    "TRIGGER",
    "RULE",
    "POLICY",
    "STATISTICS",
    "TABLE DATA",
    "MATERIALIZED VIEW DATA",
    "INDEX ATTACH",
];

fn is(e: &TocEntry, kinds: &[&str]) -> bool {
    kinds.contains(&e.desc.as_str())
}

/// Decides which entries of `toc` restore `want`; see the module comment for the rules.
pub fn select(toc: &Toc, want: &TableChoice) -> Selection {
    let by_id: HashMap<i32, &TocEntry> = toc.entries.iter().map(|e| (e.dump_id, e)).collect();
    let parents = |e: &TocEntry| -> Vec<&TocEntry> {
        let mut seen = BTreeSet::new();
        e.deps
            .iter()
            .filter(|d| seen.insert(**d))
            .filter_map(|d| by_id.get(d).copied())
            .collect()
    };

    let mut chosen: BTreeSet<i32> = BTreeSet::new();
    for e in &toc.entries {
        let in_schema = want.schemas.contains(&e.namespace);
        let name = (e.namespace.clone(), e.tag.clone());
        let primary = if is(e, RELATIONS) {
            // An owned sequence in a schema chosen whole follows its table (which may be
            // excluded) rather than the schema; named, it is chosen like any relation.
            let owned = e.desc == "SEQUENCE" && owning_table(e, &parents).is_some();
            want.tables.contains(&name)
                || (in_schema && !owned && !want.exclude_tables.contains(&name))
        } else if e.desc == "SCHEMA" {
            want.schemas.contains(&e.tag)
        } else {
            // Functions, types, domains, ... of a schema chosen whole.
            in_schema && !is(e, FOLLOWERS) && !is(e, ANNOTATIONS)
        };
        if primary {
            chosen.insert(e.dump_id);
        }
    }

    let mut left_out = BTreeMap::new();
    // Followers of followers (a comment on an index, an owned sequence's value) come later in
    // TOC order almost always; repeat until nothing changes to be independent of that.
    loop {
        let before = chosen.len();
        for e in &toc.entries {
            if chosen.contains(&e.dump_id) || left_out.contains_key(&e.dump_id) {
                continue;
            }
            let ps = parents(e);
            let take = if is(e, ANNOTATIONS) {
                ps.iter()
                    .any(|p| p.desc != "ACL" && chosen.contains(&p.dump_id))
            } else if e.desc == "SEQUENCE" {
                owning_table(e, &parents).is_some_and(|t| chosen.contains(&t.dump_id))
            } else if e.desc == "FK CONSTRAINT" {
                match foreign_key(e, &ps, &chosen) {
                    FkFate::Take => true,
                    FkFate::Skip => false,
                    FkFate::LeftOut(l) => {
                        left_out.insert(e.dump_id, l);
                        false
                    }
                }
            } else if e.desc == "SEQUENCE OWNED BY" {
                // Needs the sequence and, to be owned by it, the table.
                ps.iter().any(|p| {
                    p.desc == "SEQUENCE"
                        && chosen.contains(&p.dump_id)
                        && owning_table(p, &parents).is_none_or(|t| chosen.contains(&t.dump_id))
                })
            } else if matches!(e.desc.as_str(), "TABLE ATTACH" | "INDEX ATTACH") {
                // Attaching needs both sides: the partition and its parent (and for an index,
                // both indexes).
                let sides: Vec<_> = ps.iter().filter(|p| is(p, TABLE_LIKE)).collect();
                !sides.is_empty() && sides.iter().all(|p| chosen.contains(&p.dump_id))
            } else if is(e, FOLLOWERS) {
                // A follower is on the relation it depends on; other dependencies (a
                // partition's key on the parent's key, a DEFAULT's sequence) only order it.
                // Sequences are what an entry is on only for the entries about the sequence.
                let about_sequence =
                    matches!(e.desc.as_str(), "SEQUENCE SET" | "SEQUENCE OWNED BY");
                let on: Vec<_> = ps
                    .iter()
                    .filter(|p| is(p, RELATIONS) && (p.desc != "SEQUENCE" || about_sequence))
                    .collect();
                if on.is_empty() {
                    // Statistics of an index, say: on a table-like object that is no relation.
                    ps.iter()
                        .any(|p| is(p, TABLE_LIKE) && chosen.contains(&p.dump_id))
                } else {
                    on.iter().any(|p| chosen.contains(&p.dump_id))
                }
            } else {
                false
            };
            if take {
                chosen.insert(e.dump_id);
            }
        }
        if chosen.len() == before {
            break;
        }
    }

    let mut sel = Selection {
        left_out_foreign_keys: left_out.into_values().collect(),
        ..Selection::default()
    };
    let mut section = TocSection::PreData;
    let mut schema_ids = BTreeSet::new();
    let mut required = BTreeSet::new();
    for e in &toc.entries {
        if e.section != TocSection::None {
            section = e.section;
        }
        if !chosen.contains(&e.dump_id) {
            continue;
        }
        let keep = match section {
            TocSection::Data => !want.schema_only,
            _ => !want.data_only,
        };
        if !keep {
            continue;
        }
        match section {
            TocSection::Data => sel.data.push(e.dump_id),
            TocSection::PostData => sel.post_data.push(e.dump_id),
            _ => sel.pre_data.push(e.dump_id),
        }
        for p in parents(e) {
            if chosen.contains(&p.dump_id) {
                continue;
            }
            if p.desc == "SCHEMA" {
                schema_ids.insert(p.dump_id);
            } else if p.section == TocSection::PreData {
                // Post-data dependencies (a partition's key on its parent's) only order.
                required.insert(p.dump_id);
            }
        }
    }
    // Tables in schemas pg_dump does not dump (public, usually) have no SCHEMA dependency.
    let namespaces: BTreeSet<&str> = want.tables.iter().map(|(s, _)| s.as_str()).collect();
    for e in &toc.entries {
        if e.desc == "SCHEMA"
            && !chosen.contains(&e.dump_id)
            && (schema_ids.contains(&e.dump_id) || namespaces.contains(e.tag.as_str()))
        {
            sel.schemas.push((e.dump_id, e.tag.clone()));
        }
        if required.contains(&e.dump_id) {
            sel.requires.push(e.dump_id);
        }
    }
    sel
}

/// The table a SEQUENCE entry is owned by (serial, identity, OWNED BY): pg_dump makes such a
/// sequence depend on its table.
fn owning_table<'a>(
    e: &TocEntry,
    parents: &impl Fn(&TocEntry) -> Vec<&'a TocEntry>,
) -> Option<&'a TocEntry> {
    parents(e).into_iter().find(|p| p.desc == "TABLE")
}

enum FkFate {
    Take,
    Skip,
    LeftOut(LeftOut),
}

/// A foreign key is on the table whose name begins its tag ("table constraint"); every other
/// table-like object it depends on is what it references (the referenced table, its unique
/// constraint or index, for a partitioned table the parent's constraint).
fn foreign_key(e: &TocEntry, ps: &[&TocEntry], chosen: &BTreeSet<i32>) -> FkFate {
    let own = ps
        .iter()
        .filter(|p| {
            p.desc == "TABLE"
                && p.namespace == e.namespace
                && e.tag.starts_with(&format!("{} ", p.tag))
        })
        .max_by_key(|p| p.tag.len());
    let Some(own) = own else {
        return FkFate::Skip;
    };
    if !chosen.contains(&own.dump_id) {
        return FkFate::Skip;
    }
    let missing = ps
        .iter()
        .find(|p| is(p, TABLE_LIKE) && !chosen.contains(&p.dump_id));
    let Some(missing) = missing else {
        return FkFate::Take;
    };
    // Name the referenced table: the missing entry itself, or the table a missing constraint
    // or index is on (by the same "table name" tag convention).
    let references = if missing.desc == "TABLE" {
        (missing.namespace.clone(), missing.tag.clone())
    } else {
        ps.iter()
            .filter(|p| p.desc == "TABLE" && p.dump_id != own.dump_id)
            .find(|p| !chosen.contains(&p.dump_id))
            .map(|p| (p.namespace.clone(), p.tag.clone()))
            .unwrap_or_else(|| (missing.namespace.clone(), missing.tag.clone()))
    };
    FkFate::LeftOut(LeftOut {
        dump_id: e.dump_id,
        constraint: e.tag[own.tag.len() + 1..].to_string(),
        table: (own.namespace.clone(), own.tag.clone()),
        references,
    })
}

/// The partitions of the partitioned table `schema.name`, all levels down, in TOC order: the
/// tables its TABLE ATTACH entries attach (pg_dump 14 and later), or for older archives the
/// tables created `PARTITION OF` it.
pub fn partitions_of(toc: &Toc, schema: &str, name: &str) -> Vec<(String, String)> {
    let by_id: HashMap<i32, &TocEntry> = toc.entries.iter().map(|e| (e.dump_id, e)).collect();
    let table_id = |s: &str, n: &str| {
        toc.entries
            .iter()
            .find(|e| e.desc == "TABLE" && e.namespace == s && e.tag == n)
            .map(|e| e.dump_id)
    };
    let mut out: Vec<(String, String)> = Vec::new();
    let mut todo: Vec<i32> = table_id(schema, name).into_iter().collect();
    let mut seen = BTreeSet::new();
    while let Some(parent) = todo.pop() {
        if !seen.insert(parent) {
            continue;
        }
        for e in &toc.entries {
            let child = if e.desc == "TABLE ATTACH" && e.deps.contains(&parent) {
                // The attach depends on the partition and the parent; the partition is the
                // table it is named after.
                e.deps
                    .iter()
                    .filter_map(|d| by_id.get(d))
                    .find(|p| p.desc == "TABLE" && p.dump_id != parent && p.tag == e.tag)
            } else if e.desc == "TABLE"
                && e.deps.contains(&parent)
                && e.defn.contains(" PARTITION OF ")
            {
                Some(&e)
            } else {
                None
            };
            if let Some(c) = child {
                let key = (c.namespace.clone(), c.tag.clone());
                if !out.contains(&key) {
                    out.push(key);
                    todo.push(c.dump_id);
                }
            }
        }
    }
    let order: HashMap<(String, String), usize> = toc
        .entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.desc == "TABLE")
        .map(|(i, e)| ((e.namespace.clone(), e.tag.clone()), i))
        .collect();
    out.sort_by_key(|k| order.get(k).copied().unwrap_or(usize::MAX));
    out
}

/// The entries among `ids` that create an object under a schema-qualified name of its own
/// (relations and extended statistics; indexes and constraints take their table's schema):
/// the names [`crate::format::sql_requalify`] must rename to move a selection into another
/// schema. (dump id, schema, name) in TOC order.
pub fn qualified_objects(toc: &Toc, ids: &[i32]) -> Vec<(i32, String, String)> {
    let want: BTreeSet<i32> = ids.iter().copied().collect();
    toc.entries
        .iter()
        .filter(|e| want.contains(&e.dump_id) && (is(e, RELATIONS) || e.desc == "STATISTICS"))
        .map(|e| (e.dump_id, e.namespace.clone(), e.tag.clone()))
        .collect()
}

/// The content of a `pg_restore -L` list file restoring `ids`: their `pg_restore -l` lines in
/// TOC order (pg_restore restores a list file's entries in the file's order).
pub fn list_file(toc: &Toc, ids: &[i32]) -> String {
    let want: BTreeSet<i32> = ids.iter().copied().collect();
    let mut out = String::new();
    for e in toc.entries.iter().filter(|e| want.contains(&e.dump_id)) {
        out.push_str(&e.list_line());
        out.push('\n');
    }
    out
}

impl Toc {
    /// The entry with dump id `id`.
    pub fn entry(&self, id: i32) -> Option<&TocEntry> {
        self.entries.iter().find(|e| e.dump_id == id)
    }

    /// [`partitions_of`] this archive.
    pub fn partitions_of(&self, schema: &str, name: &str) -> Vec<(String, String)> {
        partitions_of(self, schema, name)
    }
}
