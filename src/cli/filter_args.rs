//! pg_dump's selection switches on `backup single` and `backup cluster` (and so in the config
//! file's [backup] tables): same names, same short flags, same patterns.

use std::path::PathBuf;

use clap::Args;

use dbbackup::format::filter_file;
use dbbackup::format::selection::{Filters, Selection};
use dbbackup::Result;

/// Which tables to back up. Patterns are psql's: `*` and `?` are wildcards, `schema.table`,
/// double quotes keep case and make `*`, `?`, `.` literal; repeatable.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Back up only the tables (views, sequences…) matching PATTERN, with their indexes,
    /// constraints, triggers, policies and owned sequences, not their schema's other objects.
    /// An unqualified pattern matches the tables visible in the server's default search_path.
    /// -n/-N then have no effect
    #[arg(long = "table", short = 't', value_name = "PATTERN")]
    pub table: Vec<String>,
    /// Leave out the tables matching PATTERN
    #[arg(long = "exclude-table", short = 'T', value_name = "PATTERN")]
    pub exclude_table: Vec<String>,
    /// Back up only the schemas matching PATTERN and what is in them
    #[arg(long = "schema", short = 'n', value_name = "PATTERN")]
    pub schema: Vec<String>,
    /// Leave out the schemas matching PATTERN
    #[arg(long = "exclude-schema", short = 'N', value_name = "PATTERN")]
    pub exclude_schema: Vec<String>,
    /// Keep the definition of the tables matching PATTERN, not their rows
    #[arg(long = "exclude-table-data", value_name = "PATTERN")]
    pub exclude_table_data: Vec<String>,
    /// Every -t/-n pattern (and filter-file include) must match something, else the backup
    /// is refused (without it: only when none matches). Cluster: in at least one database
    #[arg(long)]
    pub strict_names: bool,
    /// Large objects too: they are left out when -t or -n is given (as pg_dump does)
    #[arg(long = "large-objects", short = 'b')]
    pub large_objects: bool,
    /// Read selection patterns from FILE, pg_dump 17's format: `include table PATTERN`,
    /// `exclude table|schema|table_data PATTERN`, `include schema PATTERN`, # comments.
    /// Expanded by dbbackup, so it works with every pg_dump version and native backups
    #[arg(long = "filter", value_name = "FILE")]
    pub filter: Vec<PathBuf>,
}

impl FilterArgs {
    /// The filters given, filter files expanded, every pattern checked (a bad one is a usage
    /// error naming it, or the file and line it came from).
    pub fn filters(&self) -> Result<Filters> {
        let mut f = Filters {
            table: self.table.clone(),
            exclude_table: self.exclude_table.clone(),
            schema: self.schema.clone(),
            exclude_schema: self.exclude_schema.clone(),
            exclude_table_data: self.exclude_table_data.clone(),
            strict_names: self.strict_names,
            large_objects: self.large_objects,
        };
        for path in &self.filter {
            let items = filter_file::read(path)?;
            let name = path.display().to_string();
            let mut from_file = Filters::default();
            from_file.add_filter_items(&items, &name)?;
            // Checked here so that a bad pattern is named with its file and line.
            for item in &items {
                let one = Filters {
                    table: vec![item.pattern.clone()],
                    ..Filters::default()
                };
                let kind_ok = match item.object {
                    filter_file::FilterObject::Schema => Selection::check(&Filters {
                        schema: one.table.clone(),
                        ..Filters::default()
                    }),
                    _ => Selection::check(&one),
                };
                kind_ok.map_err(|e| {
                    dbbackup::Error::Usage(format!(
                        "filter file \"{name}\" line {}: {e}",
                        item.line
                    ))
                })?;
            }
            f.table.extend(from_file.table);
            f.exclude_table.extend(from_file.exclude_table);
            f.schema.extend(from_file.schema);
            f.exclude_schema.extend(from_file.exclude_schema);
            f.exclude_table_data.extend(from_file.exclude_table_data);
        }
        Selection::check(&f)?;
        Ok(f)
    }

    /// Whether any switch was given (for `--resume`, which otherwise takes the recorded ones).
    pub fn given(&self) -> bool {
        !self.table.is_empty()
            || !self.exclude_table.is_empty()
            || !self.schema.is_empty()
            || !self.exclude_schema.is_empty()
            || !self.exclude_table_data.is_empty()
            || self.strict_names
            || self.large_objects
            || !self.filter.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::{BackupCommand, Cli, Command};
    use clap::{CommandFactory, FromArgMatches};

    fn parse(toml: &str, args: &str) -> Cli {
        let cmd = crate::cli::config::apply(Cli::command(), toml, std::path::Path::new("t.toml"))
            .unwrap();
        let argv = std::iter::once("dbbackup").chain(args.split_whitespace());
        Cli::from_arg_matches(&cmd.try_get_matches_from(argv).unwrap()).unwrap()
    }

    fn filter_of(cli: Cli) -> FilterArgs {
        match cli.command {
            Command::Backup(BackupCommand::Single(a)) => *a.dump.filter,
            Command::Backup(BackupCommand::Cluster(a)) => *a.dump.filter,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn short_flags_are_pg_dumps_and_the_config_file_sets_them() {
        let f = filter_of(parse(
            "",
            "backup single db -t a -T b -n c -N d -b --strict-names",
        ));
        let f = f.filters().unwrap();
        assert_eq!(
            (f.table, f.exclude_table),
            (vec!["a".into()], vec!["b".into()])
        );
        assert_eq!(
            (f.schema, f.exclude_schema),
            (vec!["c".into()], vec!["d".into()])
        );
        assert!(f.large_objects && f.strict_names);
        let file = "[backup]\ntable = [\"app.orders\", \"app.lines\"]\nexclude-table-data = [\"audit\"]\nstrict-names = true\n";
        let f = filter_of(parse(file, "backup cluster --out x"))
            .filters()
            .unwrap();
        assert_eq!(f.table, ["app.orders", "app.lines"]);
        assert_eq!(f.exclude_table_data, ["audit"]);
        assert!(f.strict_names);
        // The command line replaces the file's list.
        let f = filter_of(parse(file, "backup single db -t x"))
            .filters()
            .unwrap();
        assert_eq!(f.table, ["x"]);
    }

    #[test]
    fn bad_patterns_are_named() {
        let e = filter_of(parse("", "backup single db -n a.b.c"))
            .filters()
            .unwrap_err();
        assert!(matches!(e, dbbackup::Error::Usage(_)) && e.to_string().contains("a.b.c"));
    }
}
