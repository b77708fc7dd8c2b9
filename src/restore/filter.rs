//! Which tables a restore takes: `--table/-t`, `--schema/-n`, `--exclude-table`,
//! `--exclude-schema`, `--schema-only`, `--data-only`, with psql's name patterns
//! ([`NamePattern`]).
//!
//! The rules are pg_restore's: `-t` and `-n` together select the tables that match both (a
//! `-t` pattern inside a `-n` schema); an unqualified `-t` pattern matches the name in every
//! schema (a restore has no server `search_path` to consult); excludes win over includes. One
//! difference, on purpose: every `-t`/`-n` pattern must match at least one table of the
//! backup, otherwise the restore is refused before it touches the target (pg_restore would
//! silently restore nothing) — a typo in a table name must not look like a successful restore.

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::format::name_pattern::NamePattern;

/// The filter flags of a restore. The default takes everything.
#[derive(Debug, Clone, Default)]
pub struct TableFilter {
    pub tables: Vec<NamePattern>,
    pub schemas: Vec<NamePattern>,
    pub exclude_tables: Vec<NamePattern>,
    pub exclude_schemas: Vec<NamePattern>,
    /// Definitions only: no rows, no sequence values.
    pub schema_only: bool,
    /// Rows (and sequence values) only, into tables that exist already.
    pub data_only: bool,
}

/// A table (or partitioned table) of the backup, by schema and name.
pub type TableName = (String, String);

/// What a filter takes from a backup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Choice {
    /// The tables restored.
    pub tables: BTreeSet<TableName>,
    /// Schemas taken whole, with every object in them (no `-t` given: `-n`, or every schema an
    /// `--exclude-schema` leaves); empty when `-t` names the tables.
    pub whole_schemas: BTreeSet<String>,
}

impl TableFilter {
    /// True when the filter narrows the tables at all (sections aside).
    pub fn selects_tables(&self) -> bool {
        !(self.tables.is_empty()
            && self.schemas.is_empty()
            && self.exclude_tables.is_empty()
            && self.exclude_schemas.is_empty())
    }

    /// True when anything is filtered: tables or sections.
    pub fn is_active(&self) -> bool {
        self.selects_tables() || self.schema_only || self.data_only
    }

    fn takes(&self, schema: &str, name: &str) -> bool {
        (self.tables.is_empty() || self.tables.iter().any(|p| p.matches(schema, name)))
            && (self.schemas.is_empty() || self.schemas.iter().any(|p| p.matches_schema(schema)))
            && !self.exclude_tables.iter().any(|p| p.matches(schema, name))
            && !self
                .exclude_schemas
                .iter()
                .any(|p| p.matches_schema(schema))
    }

    /// The tables of `all` (every table of the backup) and the schemas of `schemas` (every
    /// schema of the backup) that the filter takes. Refused when a `-t` or `-n` pattern matches
    /// nothing in the backup, or when no table is left, with one line naming the pattern.
    pub fn choose(&self, database: &str, all: &[TableName], schemas: &[String]) -> Result<Choice> {
        for p in self
            .tables
            .iter()
            .chain(&self.schemas)
            .chain(&self.exclude_tables)
            .chain(&self.exclude_schemas)
        {
            p.check_database(database)?;
        }
        for p in &self.tables {
            if !all.iter().any(|(s, n)| p.matches(s, n)) {
                return Err(Error::Usage(format!(
                    "--table {:?} matches no table in the backup",
                    p.text()
                )));
            }
        }
        for p in &self.schemas {
            if !schemas.iter().any(|s| p.matches_schema(s)) {
                return Err(Error::Usage(format!(
                    "--schema {:?} matches no schema in the backup",
                    p.text()
                )));
            }
        }
        let chosen: BTreeSet<TableName> = all
            .iter()
            .filter(|(s, n)| self.takes(s, n))
            .cloned()
            .collect();
        let whole_schemas = if self.tables.is_empty() {
            schemas
                .iter()
                .filter(|s| {
                    (self.schemas.is_empty() || self.schemas.iter().any(|p| p.matches_schema(s)))
                        && !self.exclude_schemas.iter().any(|p| p.matches_schema(s))
                })
                .cloned()
                .collect()
        } else {
            BTreeSet::new()
        };
        if chosen.is_empty() && whole_schemas.is_empty() && self.selects_tables() {
            return Err(Error::Usage(
                "the --table/--schema/--exclude-* options leave nothing of the backup to restore"
                    .into(),
            ));
        }
        Ok(Choice {
            tables: chosen,
            whole_schemas,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str, n: &str) -> TableName {
        (s.to_string(), n.to_string())
    }

    fn all() -> Vec<TableName> {
        vec![
            t("public", "orders"),
            t("public", "customers"),
            t("billing", "orders"),
            t("billing", "Invoices"),
        ]
    }

    fn schemas() -> Vec<String> {
        vec!["public".into(), "billing".into(), "empty".into()]
    }

    #[test]
    fn unqualified_table_matches_in_every_schema_and_n_narrows_it() {
        let f = TableFilter {
            tables: vec![NamePattern::relation("orders").unwrap()],
            ..Default::default()
        };
        let got = f.choose("shop", &all(), &schemas()).unwrap().tables;
        assert_eq!(got, [t("billing", "orders"), t("public", "orders")].into());
        let f = TableFilter {
            schemas: vec![NamePattern::schema("billing").unwrap()],
            ..f
        };
        assert_eq!(
            f.choose("shop", &all(), &schemas()).unwrap().tables,
            [t("billing", "orders")].into()
        );
    }

    #[test]
    fn excludes_win_and_quoted_names_keep_case() {
        let f = TableFilter {
            schemas: vec![NamePattern::schema("billing").unwrap()],
            exclude_tables: vec![NamePattern::relation("orders").unwrap()],
            ..Default::default()
        };
        assert_eq!(
            f.choose("shop", &all(), &schemas()).unwrap().tables,
            [t("billing", "Invoices")].into()
        );
        let f = TableFilter {
            tables: vec![NamePattern::relation("billing.invoices").unwrap()],
            ..Default::default()
        };
        let e = f
            .choose("shop", &all(), &schemas())
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"billing.invoices\" matches no table"), "{e}");
        let f = TableFilter {
            tables: vec![NamePattern::relation("billing.\"Invoices\"").unwrap()],
            ..Default::default()
        };
        assert_eq!(
            f.choose("shop", &all(), &schemas()).unwrap().tables,
            [t("billing", "Invoices")].into()
        );
    }

    #[test]
    fn a_pattern_matching_nothing_and_an_empty_result_are_refused() {
        let f = TableFilter {
            schemas: vec![NamePattern::schema("nope*").unwrap()],
            ..Default::default()
        };
        assert!(f.choose("shop", &all(), &schemas()).is_err());
        let f = TableFilter {
            exclude_schemas: vec![NamePattern::schema("*").unwrap()],
            ..Default::default()
        };
        assert!(f.choose("shop", &all(), &schemas()).is_err());
        let f = TableFilter {
            tables: vec![NamePattern::relation("other.public.orders").unwrap()],
            ..Default::default()
        };
        assert!(f.choose("shop", &all(), &schemas()).is_err());
    }
}
