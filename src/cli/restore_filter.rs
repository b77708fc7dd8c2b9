//! `restore`'s table filters (`-t/-n/--exclude-*`, `--schema-only`, `--data-only`) and the
//! restore of one table under another name (`--as`, `--into-schema`): their syntax, checked
//! once here, handed to the engine as [`TableFilter`] and [`RenameTarget`].

use clap::Args;

use dbbackup::format::name_pattern::NamePattern;
use dbbackup::restore::{RenameTarget, TableFilter};
use dbbackup::{Error, Result};

#[derive(Args, Debug, Clone, Default)]
pub struct RestoreFilterArgs {
    /// Restore only the tables matching PATTERN (psql pattern: *, ?, "Quoted", schema.table;
    /// an unqualified pattern matches in every schema, as pg_restore -t), with their indexes,
    /// constraints, triggers, policies, defaults, comments, grants and owned sequences;
    /// repeatable. Foreign keys to tables not restored are left out and listed
    #[arg(long = "table", short = 't', value_name = "PATTERN")]
    pub table: Vec<String>,
    /// Restore only the tables of the schemas matching PATTERN (with -t: tables matching both);
    /// repeatable
    #[arg(long = "schema", short = 'n', value_name = "PATTERN")]
    pub schema: Vec<String>,
    /// Leave out the tables matching PATTERN; repeatable
    #[arg(long, value_name = "PATTERN")]
    pub exclude_table: Vec<String>,
    /// Leave out the tables of the schemas matching PATTERN; repeatable
    #[arg(long, value_name = "PATTERN")]
    pub exclude_schema: Vec<String>,
    /// Restore the definitions only, no rows
    #[arg(long, conflicts_with = "data_only")]
    pub schema_only: bool,
    /// Restore the rows (and sequence values) only, into tables that exist
    #[arg(long)]
    pub data_only: bool,
    /// With one --table: restore that table under this name ([SCHEMA.]NAME) into a live
    /// database, beside the original; its indexes, constraints, sequences and partitions are
    /// renamed (a name containing the table's name gets it replaced by the new name, any other
    /// is prefixed with the new name and "_"; cut to 63 bytes). Refused when a name is taken.
    /// Native or custom backups (from a custom backup the rows load one table after another)
    #[arg(
        long = "as",
        value_name = "[SCHEMA.]NAME",
        conflicts_with = "into_schema"
    )]
    pub as_name: Option<String>,
    /// With one --table: restore that table, names unchanged, into this schema of a live
    /// database (created if missing). Refused when the table is already there
    #[arg(long, value_name = "SCHEMA")]
    pub into_schema: Option<String>,
}

impl RestoreFilterArgs {
    /// The checked filter.
    pub fn filter(&self) -> Result<TableFilter> {
        let rel = |v: &[String]| -> Result<Vec<NamePattern>> {
            v.iter().map(|p| NamePattern::relation(p)).collect()
        };
        let sch = |v: &[String]| -> Result<Vec<NamePattern>> {
            v.iter().map(|p| NamePattern::schema(p)).collect()
        };
        Ok(TableFilter {
            tables: rel(&self.table)?,
            schemas: sch(&self.schema)?,
            exclude_tables: rel(&self.exclude_table)?,
            exclude_schemas: sch(&self.exclude_schema)?,
            schema_only: self.schema_only,
            data_only: self.data_only,
        })
    }

    /// `--as`/`--into-schema`, checked against the rest of the command line.
    pub fn rename(&self, create: bool, clean: bool) -> Result<Option<RenameTarget>> {
        let (flag, target) = match (&self.as_name, &self.into_schema) {
            (None, None) => return Ok(None),
            (Some(a), _) => {
                let mut parts = split_identifier(a)?;
                let name = parts.pop().expect("one part at least");
                (
                    "--as",
                    RenameTarget::As {
                        schema: parts.pop(),
                        name,
                    },
                )
            }
            (None, Some(s)) => {
                let parts = split_identifier(s)?;
                if parts.len() != 1 {
                    return Err(Error::Usage(format!(
                        "--into-schema {s:?}: expected one schema name"
                    )));
                }
                ("--into-schema", RenameTarget::IntoSchema(parts[0].clone()))
            }
        };
        if self.table.len() != 1
            || !self.schema.is_empty()
            || !self.exclude_table.is_empty()
            || !self.exclude_schema.is_empty()
        {
            return Err(Error::Usage(format!(
                "{flag} restores one table: give exactly one --table (and no --schema/--exclude-*)"
            )));
        }
        if create || clean {
            return Err(Error::Usage(format!(
                "{flag} restores a table beside the live ones: it never creates or cleans the database (leave out --create/--clean)"
            )));
        }
        if self.schema_only || self.data_only {
            return Err(Error::Usage(format!(
                "{flag} restores a whole table (definition and rows): leave out --schema-only/--data-only"
            )));
        }
        Ok(Some(target))
    }
}

/// `name`, `schema.name`, `"Mixed Case".name`: unquoted parts folded to lower case, as SQL does.
fn split_identifier(text: &str) -> Result<Vec<String>> {
    let bad = || Error::Usage(format!("{text:?} is not a [schema.]name"));
    let mut parts = vec![String::new()];
    let mut chars = text.chars().peekable();
    let mut quoted_part = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted_part = true;
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            parts.last_mut().unwrap().push('"');
                        }
                        Some('"') => break,
                        Some(c) => parts.last_mut().unwrap().push(c),
                        None => return Err(bad()),
                    }
                }
            }
            '.' => {
                if parts.last().unwrap().is_empty() && !quoted_part {
                    return Err(bad());
                }
                parts.push(String::new());
                quoted_part = false;
            }
            c => parts.last_mut().unwrap().extend(c.to_lowercase()),
        }
    }
    if parts.len() > 2 || (parts.last().unwrap().is_empty() && !quoted_part) {
        return Err(bad());
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_fold_unless_quoted() {
        assert_eq!(
            split_identifier("Public.Orders_Restored").unwrap(),
            ["public", "orders_restored"]
        );
        assert_eq!(
            split_identifier("\"A.b\".\"X\"\"y\"").unwrap(),
            ["A.b", "X\"y"]
        );
        assert!(split_identifier("a.b.c").is_err());
        assert!(split_identifier("a.").is_err());
        assert!(split_identifier("\"open").is_err());
    }
}
