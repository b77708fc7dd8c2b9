//! Which tables a backup (or a restore) takes: pg_dump's selection switches (`-t`, `-T`, `-n`,
//! `-N`, `--exclude-table-data`, `--strict-names`, `-b`), their record in the manifest
//! ([`Filters`]) and the decisions made from them ([`Selection`]), with pg_dump's rules
//! (src/bin/pg_dump/pg_dump.c, `selectDumpableNamespace`, `selectDumpableTable`,
//! `getOwnedSeqs`, `processExtensionTables`, `makeTableDataInfo`):
//!
//! - with any `-t`, exactly the matching relations are taken, and `-n`/`-N` have no effect on
//!   them; otherwise the relations of the schemas matching `-n` (every non-system schema when
//!   there is none) minus those matching `-N`;
//! - `-T` removes matching relations in every case; `--exclude-table-data` keeps a table's
//!   definition and drops its rows;
//! - an unqualified table pattern matches only relations visible in the server's default
//!   `search_path` (pg_dump runs that query after `RESET search_path`): the caller says which
//!   are ([`Rel::visible`]);
//! - a sequence owned by a selected table comes with it (an identity sequence only with it);
//! - large objects are taken when there is no `-t`/`-n`, or with `-b`;
//! - an extension's configuration table keeps its rows when its extension is dumped (no
//!   `-t`/`-n`), when `-t` names it or its schema is selected, unless `-T`/`-N` removes it.
//!
//! A pattern's database part (`db.schema.table`) limits it to that database: a single backup
//! refuses one for another database as pg_dump does ("cross-database references are not
//! implemented"), a cluster backup applies it in that database only ([`Selection::for_database`]).
//!
//! Nothing here talks to a server: the source layer feeds it catalog names, and restore can feed
//! it a manifest's tables. Usable as is by other commands.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::filter_file::{FilterCommand, FilterItem, FilterObject};
use crate::format::name_pattern::{NamePattern, PatternKind};

/// The selection switches as given (patterns as written), recorded in the manifest as
/// `filters`; absent from the manifest when the backup took everything.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// `--table/-t`
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub table: Vec<String>,
    /// `--exclude-table/-T`
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_table: Vec<String>,
    /// `--schema/-n`
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schema: Vec<String>,
    /// `--exclude-schema/-N`
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_schema: Vec<String>,
    /// `--exclude-table-data`
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_table_data: Vec<String>,
    /// `--strict-names`: every include pattern must match.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strict_names: bool,
    /// `--large-objects/-b`: large objects too, although `-t`/`-n` is given.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub large_objects: bool,
}

impl Filters {
    /// True when no pattern is given: the backup takes everything (`--strict-names` and `-b`
    /// change nothing then).
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
            && self.exclude_table.is_empty()
            && self.schema.is_empty()
            && self.exclude_schema.is_empty()
            && self.exclude_table_data.is_empty()
    }

    /// `None` when empty: what the manifest records.
    pub fn recorded(&self) -> Option<Filters> {
        (!self.is_empty()).then(|| self.clone())
    }

    /// Adds the items of a `--filter` file (`file` names it in messages), as pg_dump 17 does;
    /// object types a backup cannot honour are refused with one line naming file and line.
    pub fn add_filter_items(&mut self, items: &[FilterItem], file: &str) -> Result<()> {
        use FilterCommand::{Exclude, Include};
        use FilterObject as O;
        for item in items {
            let list = match (item.command, item.object) {
                (Include, O::Table) => &mut self.table,
                (Include, O::Schema) => &mut self.schema,
                (Exclude, O::Table) => &mut self.exclude_table,
                (Exclude, O::Schema) => &mut self.exclude_schema,
                (Exclude, O::TableData) => &mut self.exclude_table_data,
                // What pg_dump itself refuses, in its words.
                (
                    Include,
                    O::Database | O::Function | O::Index | O::TableData | O::TableDataAndChildren
                    | O::Trigger,
                )
                | (Exclude, O::Database | O::Function | O::Index | O::Trigger | O::ForeignData) => {
                    return Err(Error::Usage(format!(
                        "invalid format in filter read from file \"{file}\" on line {}: {} filter for \"{}\" is not allowed",
                        item.line,
                        item.command.as_str(),
                        item.object.name()
                    )))
                }
                (_, O::Extension | O::ForeignData | O::TableAndChildren | O::TableDataAndChildren) => {
                    return Err(Error::Usage(format!(
                        "filter file \"{file}\" line {}: \"{} {}\" is not supported by dbbackup's backup filters (only table, schema and, to exclude, table_data)",
                        item.line,
                        item.command.as_str(),
                        item.object.name().replace(' ', "_")
                    )))
                }
            };
            list.push(item.pattern.clone());
        }
        Ok(())
    }

    /// The patterns of `self` as pg_dump's own switches, for every pg_dump version (13 and
    /// later): `db.` parts dropped (the caller has checked them with [`Selection`]).
    pub fn pg_dump_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut add = |flag: &str, list: &[String], kind: PatternKind| {
            for p in list {
                args.push(format!("--{flag}={}", without_database(p, kind)));
            }
        };
        add("table", &self.table, PatternKind::Relation);
        add("exclude-table", &self.exclude_table, PatternKind::Relation);
        add("schema", &self.schema, PatternKind::Schema);
        add("exclude-schema", &self.exclude_schema, PatternKind::Schema);
        add(
            "exclude-table-data",
            &self.exclude_table_data,
            PatternKind::Relation,
        );
        if self.strict_names && !self.is_empty() {
            args.push("--strict-names".into());
        }
        args
    }

    /// One line for people: `-t public.orders -T audit_log`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (flag, list) in [
            ("-t", &self.table),
            ("-T", &self.exclude_table),
            ("-n", &self.schema),
            ("-N", &self.exclude_schema),
            ("--exclude-table-data", &self.exclude_table_data),
        ] {
            for p in list {
                parts.push(format!("{flag} {p}"));
            }
        }
        if self.strict_names {
            parts.push("--strict-names".into());
        }
        if self.large_objects {
            parts.push("-b".into());
        }
        parts.join(" ")
    }
}

/// A relation as the selection sees it.
#[derive(Debug, Clone, Copy)]
pub struct Rel<'a> {
    pub schema: &'a str,
    pub name: &'a str,
    /// Visible in the server's default `search_path` (`pg_table_is_visible` after `RESET
    /// search_path`); an unqualified table pattern matches only those. Restore, which has no
    /// server path, passes `true` (as `pg_restore -t` matches names in any schema).
    pub visible: bool,
}

/// [`Filters`] compiled for one database.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    filters: Filters,
    /// One database of a cluster: `--strict-names` is judged across the databases, not here.
    per_database: bool,
    table: Vec<NamePattern>,
    exclude_table: Vec<NamePattern>,
    schema: Vec<NamePattern>,
    exclude_schema: Vec<NamePattern>,
    exclude_table_data: Vec<NamePattern>,
}

impl Selection {
    /// Takes everything.
    pub fn everything() -> Selection {
        Selection::default()
    }

    /// Compiles every pattern, for the database `database`: a pattern whose database part
    /// names another one is refused as pg_dump refuses it. A bad pattern is a usage error
    /// naming it.
    pub fn new(filters: &Filters, database: &str) -> Result<Selection> {
        let s = Selection::compile(filters, None)?;
        for p in s.all_patterns() {
            p.check_database(database)?;
        }
        Ok(s)
    }

    /// Compiles the patterns that apply in `database` (a cluster backup): those without a
    /// database part, and those whose database part matches `database`.
    pub fn for_database(filters: &Filters, database: &str) -> Result<Selection> {
        let mut s = Selection::compile(filters, Some(database))?;
        s.per_database = true;
        Ok(s)
    }

    /// Checks every pattern of `filters` (syntax, regular expression) without a database.
    pub fn check(filters: &Filters) -> Result<()> {
        Selection::compile(filters, None).map(|_| ())
    }

    fn compile(filters: &Filters, only_for: Option<&str>) -> Result<Selection> {
        let compile =
            |list: &[String], kind: PatternKind| -> Result<(Vec<String>, Vec<NamePattern>)> {
                let mut texts = Vec::new();
                let mut pats = Vec::new();
                for text in list {
                    let p = NamePattern::parse(text, kind)?;
                    if only_for.is_none_or(|db| p.database_matches(db)) {
                        texts.push(text.clone());
                        pats.push(p);
                    }
                }
                Ok((texts, pats))
            };
        let (t, table) = compile(&filters.table, PatternKind::Relation)?;
        let (tx, exclude_table) = compile(&filters.exclude_table, PatternKind::Relation)?;
        let (n, schema) = compile(&filters.schema, PatternKind::Schema)?;
        let (nx, exclude_schema) = compile(&filters.exclude_schema, PatternKind::Schema)?;
        let (dx, exclude_table_data) = compile(&filters.exclude_table_data, PatternKind::Relation)?;
        Ok(Selection {
            per_database: false,
            filters: Filters {
                table: t,
                exclude_table: tx,
                schema: n,
                exclude_schema: nx,
                exclude_table_data: dx,
                strict_names: filters.strict_names,
                large_objects: filters.large_objects,
            },
            table,
            exclude_table,
            schema,
            exclude_schema,
            exclude_table_data,
        })
    }

    fn all_patterns(&self) -> impl Iterator<Item = &NamePattern> {
        self.table
            .iter()
            .chain(&self.exclude_table)
            .chain(&self.schema)
            .chain(&self.exclude_schema)
            .chain(&self.exclude_table_data)
    }

    /// The filters that apply (in a cluster: to this database).
    pub fn filters(&self) -> &Filters {
        &self.filters
    }

    /// pg_dump's switches for this selection (see [`Filters::pg_dump_args`]), with `--blobs`
    /// when `-b` asks for large objects beside `-t`/`-n`; in a cluster without
    /// `--strict-names`, which is judged across the databases. Empty for a selection of
    /// everything.
    pub fn pg_dump_args(&self) -> Vec<String> {
        let mut args = self.filters.pg_dump_args();
        if self.per_database {
            args.retain(|a| a != "--strict-names");
        }
        if self.has_includes() && self.filters.large_objects {
            args.push("--blobs".into());
        }
        args
    }

    /// True when the selection takes everything.
    pub fn is_everything(&self) -> bool {
        self.filters.is_empty()
    }

    /// pg_dump's `include_everything` is off: some `-t` or `-n` is given.
    pub fn has_includes(&self) -> bool {
        !self.table.is_empty() || !self.schema.is_empty()
    }

    fn rel_matches(p: &NamePattern, rel: &Rel) -> bool {
        p.matches(rel.schema, rel.name) && (p.is_qualified() || rel.visible)
    }

    fn any_rel(list: &[NamePattern], rel: &Rel) -> bool {
        list.iter().any(|p| Selection::rel_matches(p, rel))
    }

    fn schema_excluded(&self, schema: &str) -> bool {
        self.exclude_schema.iter().any(|p| p.matches_schema(schema))
    }

    /// Whether the objects of `schema` are taken (pg_dump's `dump_contains` of a namespace):
    /// never with `-t`; with `-n` when one matches; and not when `-N` matches.
    pub fn schema_contents_selected(&self, schema: &str) -> bool {
        let included = if !self.table.is_empty() {
            false
        } else if !self.schema.is_empty() {
            self.schema.iter().any(|p| p.matches_schema(schema))
        } else {
            true
        };
        included && !self.schema_excluded(schema)
    }

    /// Whether the relation's definition is taken.
    pub fn table_selected(&self, rel: &Rel) -> bool {
        let included = if !self.table.is_empty() {
            Selection::any_rel(&self.table, rel)
        } else {
            self.schema_contents_selected(rel.schema)
        };
        included && !Selection::any_rel(&self.exclude_table, rel)
    }

    /// Whether the table's rows are taken: its definition is, and no `--exclude-table-data`
    /// matches it.
    pub fn data_selected(&self, rel: &Rel) -> bool {
        self.table_selected(rel) && !Selection::any_rel(&self.exclude_table_data, rel)
    }

    /// A sequence: taken itself, or owned by a taken table (`owner`: the owning table and
    /// whether the sequence is an identity column's, which goes only with its table).
    pub fn sequence_selected(&self, seq: &Rel, owner: Option<(&Rel, bool)>) -> bool {
        match owner {
            Some((table, true)) => self.table_selected(table),
            Some((table, false)) => self.table_selected(seq) || self.table_selected(table),
            None => self.table_selected(seq),
        }
    }

    /// A sequence's value (pg_dump's SEQUENCE SET): the sequence is taken and its data not
    /// excluded.
    pub fn sequence_data_selected(&self, seq: &Rel, owner: Option<(&Rel, bool)>) -> bool {
        self.sequence_selected(seq, owner) && !Selection::any_rel(&self.exclude_table_data, seq)
    }

    /// The rows of an extension's configuration table, whose extension pg_dump dumps only
    /// without `-t`/`-n` (`schema_is_extension_member`: its schema was created by an extension,
    /// so pg_dump never counts it as selected).
    pub fn extension_config_data_selected(
        &self,
        rel: &Rel,
        schema_is_extension_member: bool,
    ) -> bool {
        let mut take = !self.has_includes();
        if !take {
            take = (!self.table.is_empty() && Selection::any_rel(&self.table, rel))
                || (!schema_is_extension_member && self.schema_contents_selected(rel.schema));
        }
        take && !Selection::any_rel(&self.exclude_table, rel)
            && !self.schema_excluded(rel.schema)
            && !Selection::any_rel(&self.exclude_table_data, rel)
    }

    /// Large objects: without `-t`/`-n`, or with `-b`.
    pub fn large_objects_selected(&self) -> bool {
        !self.has_includes() || self.filters.large_objects
    }

    /// Which include patterns match what the database holds: `schemas` every schema name,
    /// `relations` every table, sequence, view, materialized view, foreign and partitioned
    /// table (what pg_dump's `-t` looks at, system schemas included).
    pub fn matches<'a>(
        &self,
        schemas: impl Iterator<Item = &'a str> + Clone,
        relations: &[Rel],
    ) -> Matches {
        Matches {
            schema: self
                .schema
                .iter()
                .map(|p| {
                    (
                        p.text().to_string(),
                        schemas.clone().any(|s| p.matches_schema(s)),
                    )
                })
                .collect(),
            table: self
                .table
                .iter()
                .map(|p| {
                    (
                        p.text().to_string(),
                        relations.iter().any(|r| Selection::rel_matches(p, r)),
                    )
                })
                .collect(),
        }
    }

    /// pg_dump's errors for include patterns that match nothing, in its order and words: with
    /// `--strict-names` the first pattern without a match, otherwise only when no `-n` (then no
    /// `-t`) pattern matches at all.
    pub fn check_matches(&self, m: &Matches) -> Result<()> {
        m.check(self.filters.strict_names)
    }
}

/// For each include pattern, whether it matched (see [`Selection::matches`]). A cluster backup
/// merges those of its databases ([`Matches::merge`]) to apply `--strict-names` across them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matches {
    pub schema: Vec<(String, bool)>,
    pub table: Vec<(String, bool)>,
}

impl Matches {
    /// A pattern matched when it matched in either.
    pub fn merge(&mut self, other: &Matches) {
        for (mine, theirs) in [
            (&mut self.schema, &other.schema),
            (&mut self.table, &other.table),
        ] {
            for (text, hit) in theirs {
                match mine.iter_mut().find(|(t, _)| t == text) {
                    Some((_, h)) => *h |= *hit,
                    None => mine.push((text.clone(), *hit)),
                }
            }
        }
    }

    /// The errors of [`Selection::check_matches`].
    pub fn check(&self, strict_names: bool) -> Result<()> {
        let refuse = |m: String| Err(Error::Refused(m));
        for (list, what) in [(&self.schema, "schemas"), (&self.table, "tables")] {
            if strict_names {
                if let Some((text, _)) = list.iter().find(|(_, hit)| !hit) {
                    return refuse(format!(
                        "no matching {what} were found for pattern \"{text}\""
                    ));
                }
            }
            if !list.is_empty() && list.iter().all(|(_, hit)| !hit) {
                return refuse(format!("no matching {what} were found"));
            }
        }
        Ok(())
    }
}

/// `pattern` without its database part (`db.schema.table` → `schema.table`).
fn without_database(pattern: &str, kind: PatternKind) -> String {
    let dots = unquoted_dots(pattern);
    let parts_max = match kind {
        PatternKind::Relation => 3,
        PatternKind::Schema => 2,
    };
    if dots.len() + 1 == parts_max {
        pattern[dots[0] + 1..].to_string()
    } else {
        pattern.to_string()
    }
}

/// Byte positions of the dots outside double quotes.
fn unquoted_dots(pattern: &str) -> Vec<usize> {
    let mut in_quotes = false;
    let mut dots = Vec::new();
    for (i, c) in pattern.char_indices() {
        match c {
            // `""` inside quotes toggles twice: the same as staying inside.
            '"' => in_quotes = !in_quotes,
            '.' if !in_quotes => dots.push(i),
            _ => {}
        }
    }
    dots
}

#[cfg(test)]
mod tests;
