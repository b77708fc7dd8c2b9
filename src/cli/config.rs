//! The config file of scheduled jobs: a TOML file whose keys are the long flags of the
//! commands, turned into the commands' defaults before the command line is parsed.
//!
//! ```toml
//! host = "/var/run/postgresql"      # top level: global options, and a default for every
//! compress-level = 6                # command that has this flag
//! [backup]                          # `backup single` and `backup cluster`
//! parallel-tables = 4
//! [backup.cluster]                  # only `backup cluster`
//! exclude-database = ["scratch_*"]
//! [drill]
//! jobs = 2
//! ```
//!
//! Nothing here knows the flags: a key is valid when it is a long flag of a command it applies
//! to (top level: of the program or of any command; in a table: of that command or one below
//! it), so a flag added to a command later works in the file without a change here. A value
//! from the file becomes the flag's default, which gives the precedence for free: a flag on the
//! command line (or its environment variable, where it has one) wins over the file, the file
//! wins over the built-in default, and a repeatable flag given on the command line replaces the
//! file's list. The more specific table wins over the less specific one.
//!
//! Secrets are refused: passwords and keys belong in the environment, `.pgpass` or the AWS
//! credential files, not in a file that is copied around with the job's settings.

use std::ffi::OsString;
use std::ops::Range;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, Command, CommandFactory, FromArgMatches};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::args::Cli;

/// The config file read when `--config` is not given, if it exists.
pub const DEFAULT_PATH: &str = "/etc/dbbackup/dbbackup.toml";
/// For tests only: replaces [`DEFAULT_PATH`] (tests must not write into /etc).
pub const DEFAULT_PATH_ENV: &str = "DBBACKUP_DEFAULT_CONFIG";

/// Flags that are about the program itself, never settings of a job.
const NOT_SETTINGS: [&str; 3] = ["help", "version", "config"];

/// The config file that applies to `argv`: `--config FILE` when given (it must exist), else the
/// default file when it exists.
pub fn locate(argv: &[OsString]) -> Result<Option<PathBuf>, String> {
    if let Some(path) = config_flag(argv)? {
        if !path.is_file() {
            return Err(format!("--config {}: no such file", path.display()));
        }
        return Ok(Some(path));
    }
    let default = std::env::var_os(DEFAULT_PATH_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH));
    Ok(default.is_file().then_some(default))
}

/// The value of `--config FILE` / `--config=FILE` in `argv`, read before clap parses (the file
/// changes what clap is given). The last one wins, as for any flag; `--` ends the flags.
fn config_flag(argv: &[OsString]) -> Result<Option<PathBuf>, String> {
    let mut found = None;
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            break;
        }
        if text == "--config" {
            let value = args
                .next()
                .ok_or("a value is required for '--config <FILE>' but none was supplied")?;
            found = Some(PathBuf::from(value));
        } else if let Some(value) = text.strip_prefix("--config=") {
            found = Some(PathBuf::from(value));
        }
    }
    Ok(found)
}

/// Why the command line could not be turned into a [`Cli`].
pub enum ParseError {
    /// clap's own outcome: a usage error, or `--help`/`--version`.
    Clap(clap::Error),
    /// The config file is missing, unreadable or wrong: one line naming file and line.
    Config(String),
}

/// Parses `argv` with the config file's settings as the flags' defaults.
pub fn parse_command_line(argv: Vec<OsString>) -> Result<Cli, ParseError> {
    let mut cmd = Cli::command();
    if let Some(path) = locate(&argv).map_err(ParseError::Config)? {
        cmd = apply_file(cmd, &path).map_err(ParseError::Config)?;
    }
    let matches = cmd
        .try_get_matches_from_mut(argv)
        .map_err(ParseError::Clap)?;
    let mut cli =
        Cli::from_arg_matches(&matches).map_err(|e| ParseError::Clap(e.format(&mut cmd)))?;
    prefer_libpq_environment(&mut cli, &matches, |var| std::env::var_os(var).is_some());
    Ok(cli)
}

/// The connection flags have libpq's variables as their environment (read later, by the
/// connection settings): as with every flag that has one, a variable that is set wins over
/// the file, so the file's value is dropped here.
fn prefer_libpq_environment(cli: &mut Cli, m: &clap::ArgMatches, is_set: impl Fn(&str) -> bool) {
    let from_file = |id: &str| m.value_source(id) == Some(ValueSource::DefaultValue);
    if from_file("host") && is_set("PGHOST") {
        cli.conn.host = None;
    }
    if from_file("port") && is_set("PGPORT") {
        cli.conn.port = None;
    }
    if from_file("username") && is_set("PGUSER") {
        cli.conn.username = None;
    }
}

/// Reads the file at `path` and makes its settings the defaults of `cmd`'s flags.
pub fn apply_file(cmd: Command, path: &Path) -> Result<Command, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    apply(cmd, &text, path)
}

/// [`apply_file`] on `text` (the contents of `path`, named in messages).
pub fn apply(cmd: Command, text: &str, path: &Path) -> Result<Command, String> {
    let file = ConfigFile { text, path };
    let doc = DeTable::parse(text).map_err(|e| {
        let line = e.span().map(|s| file.line(&s)).unwrap_or(1);
        format!(
            "config file {} line {line}: {}",
            path.display(),
            e.message().trim()
        )
    })?;
    let mut settings = Vec::new();
    file.collect(&cmd, &[], doc.get_ref(), &mut settings)?;
    // Less specific first: a table's setting replaces the top level's for its commands.
    settings.sort_by_key(|s| s.depth);
    let mut cmd = cmd;
    for s in settings {
        cmd = with_default(cmd, &s.command, &s.arg_id, &s.values);
    }
    Ok(cmd)
}

/// One default to set: flag `arg_id` of the command at `command` (names of subcommands from
/// the top; empty for the program's own global flags).
struct Setting {
    command: Vec<String>,
    arg_id: String,
    values: Vec<String>,
    /// How deep in the file's tables it was written (0 = top level).
    depth: usize,
}

struct ConfigFile<'a> {
    text: &'a str,
    path: &'a Path,
}

impl ConfigFile<'_> {
    /// The 1-based line of a byte span.
    fn line(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].matches('\n').count() + 1
    }

    fn error(&self, span: &Range<usize>, msg: impl std::fmt::Display) -> String {
        format!(
            "config file {} line {}: {msg}",
            self.path.display(),
            self.line(span)
        )
    }

    /// The settings of `table`, which applies to the command at `at` (within `root`).
    fn collect(
        &self,
        root: &Command,
        at: &[String],
        table: &DeTable<'_>,
        out: &mut Vec<Setting>,
    ) -> Result<(), String> {
        let cmd = find(root, at);
        for (key, value) in table.iter() {
            let name = key.get_ref().as_ref();
            let span = key.span();
            if let (DeValue::Table(inner), Some(sub)) = (value.get_ref(), cmd.find_subcommand(name))
            {
                let mut path = at.to_vec();
                path.push(sub.get_name().to_string());
                self.collect(root, &path, inner, out)?;
                continue;
            }
            if is_secret(name) {
                return Err(self.error(
                    &span,
                    format!(
                        "`{name}` looks like a secret, and secrets do not go in the config file: \
                         use the environment (PGPASSWORD, AWS_SECRET_ACCESS_KEY…), ~/.pgpass or \
                         the AWS credential files"
                    ),
                ));
            }
            if NOT_SETTINGS.contains(&name) {
                return Err(self.error(&span, format!("`{name}` cannot be set in the config file")));
            }
            let global = root.get_arguments().find(|a| a.get_long() == Some(name));
            let targets: Vec<(Vec<String>, &Arg)> = match global {
                Some(arg) if at.is_empty() => vec![(Vec::new(), arg)],
                Some(_) => {
                    return Err(self.error(
                        &span,
                        format!(
                            "`{name}` applies to every command: put it at the top of the file, \
                             before any [table]"
                        ),
                    ))
                }
                None => leaves_with_flag(cmd, at, name),
            };
            if targets.is_empty() {
                let scope = if at.is_empty() {
                    "no command has".to_string()
                } else {
                    format!("`dbbackup {}` has no", at.join(" "))
                };
                let what = match value.get_ref() {
                    DeValue::Table(_) => "table",
                    _ => "key",
                };
                return Err(self.error(
                    &span,
                    format!("unknown {what} `{name}`: {scope} option --{name}"),
                ));
            }
            for (command, arg) in targets {
                let values = self.values(name, value, arg)?;
                out.push(Setting {
                    command,
                    arg_id: arg.get_id().to_string(),
                    values,
                    depth: at.len(),
                });
            }
        }
        Ok(())
    }

    /// The value(s) of `name = value` as command-line words, checked by the flag's own parser.
    fn values(
        &self,
        name: &str,
        value: &Spanned<DeValue<'_>>,
        arg: &Arg,
    ) -> Result<Vec<String>, String> {
        let span = value.span();
        let repeatable = matches!(arg.get_action(), ArgAction::Append);
        let switch = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        let words: Vec<String> = match value.get_ref() {
            DeValue::Array(items) if repeatable => items
                .iter()
                .map(|item| self.scalar(name, item))
                .collect::<Result<_, _>>()?,
            DeValue::Array(_) => {
                return Err(self.error(&span, format!("`{name}` takes one value, not a list")))
            }
            DeValue::Boolean(b) if switch => vec![b.to_string()],
            _ if switch => {
                return Err(self.error(
                    &span,
                    format!("`{name}` is a switch: write `{name} = true` or `{name} = false`"),
                ))
            }
            _ => vec![self.scalar(name, value)?],
        };
        if !switch {
            for word in &words {
                check_value(arg, word).map_err(|e| self.error(&span, e))?;
            }
        }
        Ok(words)
    }

    fn scalar(&self, name: &str, value: &Spanned<DeValue<'_>>) -> Result<String, String> {
        match value.get_ref() {
            DeValue::String(s) => Ok(s.to_string()),
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .map(|n| n.to_string())
                .map_err(|e| self.error(&value.span(), format!("`{name}`: {e}"))),
            DeValue::Float(f) => Ok(f.as_str().to_string()),
            DeValue::Boolean(b) => Ok(b.to_string()),
            DeValue::Datetime(d) => Ok(d.to_string()),
            DeValue::Array(_) | DeValue::Table(_) => Err(self.error(
                &value.span(),
                format!("`{name}`: a list item must be a string, number or boolean"),
            )),
        }
    }
}

/// Passwords, secret keys and tokens: refused by name, whatever the commands call them.
fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password") || key.contains("secret") || key.contains("token")
}

/// The command at `path` below `root`.
fn find<'a>(root: &'a Command, path: &[String]) -> &'a Command {
    path.iter().fold(root, |cmd, name| {
        cmd.find_subcommand(name)
            .expect("paths come from the command tree")
    })
}

/// Every command at or below `cmd` (at `path`) that has no subcommands and has `--long`.
fn leaves_with_flag<'a>(
    cmd: &'a Command,
    path: &[String],
    long: &str,
) -> Vec<(Vec<String>, &'a Arg)> {
    if !cmd.has_subcommands() {
        return cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long))
            .map(|a| vec![(path.to_vec(), a)])
            .unwrap_or_default();
    }
    cmd.get_subcommands()
        .flat_map(|sub| {
            let mut p = path.to_vec();
            p.push(sub.get_name().to_string());
            leaves_with_flag(sub, &p, long)
        })
        .collect()
}

/// Runs `word` through the flag's value parser (sizes, durations, enums, numbers), so that a
/// bad value is reported with its line in the file rather than later without it.
fn check_value(arg: &Arg, word: &str) -> Result<(), String> {
    let long = arg.get_long().expect("settings are long flags");
    // A bare copy: the flag's name and parser, none of its relations to other flags.
    let copy = Arg::new(arg.get_id().clone())
        .long(long.to_string())
        .value_parser(arg.get_value_parser().clone())
        .action(ArgAction::Set)
        .value_names(arg.get_value_names().unwrap_or_default().to_vec());
    Command::new("dbbackup")
        .no_binary_name(true)
        .disable_help_flag(true)
        .arg(copy)
        .try_get_matches_from([format!("--{long}={word}")])
        .map(|_| ())
        .map_err(|e| super::usage::one_line(&e))
}

/// `cmd` with `values` as the default of flag `arg_id` of the command at `path`.
fn with_default(cmd: Command, path: &[String], arg_id: &str, values: &[String]) -> Command {
    match path.split_first() {
        None => {
            let values = values.to_vec();
            // clap's required check ignores defaults; the file's value fulfils the requirement.
            cmd.mut_arg(arg_id, |a| a.default_values(values).required(false))
        }
        Some((first, rest)) => {
            cmd.mut_subcommand(first, |sub| with_default(sub, rest, arg_id, values))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str, args: &str) -> Result<Cli, String> {
        let cmd = apply(Cli::command(), toml, Path::new("test.toml"))?;
        let argv = std::iter::once("dbbackup").chain(args.split_whitespace());
        let m = cmd.try_get_matches_from(argv).map_err(|e| e.to_string())?;
        Cli::from_arg_matches(&m).map_err(|e| e.to_string())
    }

    #[test]
    fn config_flag_is_found_anywhere_before_the_end_of_flags() {
        let argv = |s: &str| s.split_whitespace().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            config_flag(&argv("dbbackup verify x --config a.toml")).unwrap(),
            Some("a.toml".into())
        );
        assert_eq!(
            config_flag(&argv("dbbackup --config=b.toml verify x")).unwrap(),
            Some("b.toml".into())
        );
        assert_eq!(
            config_flag(&argv("dbbackup verify -- --config")).unwrap(),
            None
        );
        assert!(config_flag(&argv("dbbackup verify x --config")).is_err());
    }

    #[test]
    fn global_settings_reach_the_command() {
        let cli = parse("host = \"/from/file\"\nport = 5433\n", "verify x").unwrap();
        assert_eq!(cli.conn.host.as_deref(), Some("/from/file"));
        assert_eq!(cli.conn.port, Some(5433));
        let cli = parse("host = \"/from/file\"\n", "-h /flag verify x").unwrap();
        assert_eq!(cli.conn.host.as_deref(), Some("/flag"));
        let cli = parse("host = \"/from/file\"\n", "verify x -h /flag").unwrap();
        assert_eq!(cli.conn.host.as_deref(), Some("/flag"));
    }

    #[test]
    fn unknown_keys_name_key_and_line() {
        let e = parse("port = 5433\n\n[backup]\nparallel-tablez = 4\n", "verify x").unwrap_err();
        assert!(
            e.contains("line 4") && e.contains("`parallel-tablez`"),
            "{e}"
        );
        let e = parse("[restore]\nout = \"x\"\n", "verify x").unwrap_err();
        assert!(
            e.contains("line 2") && e.contains("`dbbackup restore` has no option --out"),
            "{e}"
        );
        let e = parse("[nosuch]\nx = 1\n", "verify x").unwrap_err();
        assert!(
            e.contains("line 1") && e.contains("unknown table `nosuch`"),
            "{e}"
        );
    }

    #[test]
    fn secrets_and_global_keys_in_tables_are_refused() {
        let e = parse("password = \"x\"\n", "verify x").unwrap_err();
        assert!(e.contains("secret") && e.contains(".pgpass"), "{e}");
        let e = parse("[backup]\naws-secret-access-key = \"x\"\n", "verify x").unwrap_err();
        assert!(e.contains("line 2") && e.contains("secret"), "{e}");
        let e = parse("[restore]\nhost = \"x\"\n", "verify x").unwrap_err();
        assert!(e.contains("top of the file"), "{e}");
    }

    #[test]
    fn bad_values_are_reported_with_their_line() {
        let e = parse("[backup]\n\ncompress = \"lzma\"\n", "verify x").unwrap_err();
        assert!(e.contains("line 3") && e.contains("lzma"), "{e}");
        let e = parse("[restore]\nquiet = \"yes\"\n", "verify x").unwrap_err();
        assert!(e.contains("switch"), "{e}");
    }

    #[test]
    fn the_more_specific_table_wins_and_the_command_line_over_all() {
        use crate::cli::args::{BackupCommand, Command as Sub};
        let file = "compress-level = 1\n[backup]\ncompress-level = 2\nrecipient = [\"a\", \"b\"]\n\
                    [backup.single]\ncompress-level = 3\nout = \"/from/file\"\n";
        let single = |args: &str| match parse(file, args).unwrap().command {
            Sub::Backup(BackupCommand::Single(a)) => a,
            other => panic!("{other:?}"),
        };
        let a = single("backup single db");
        assert_eq!(a.dump.compress_level, Some(3));
        assert_eq!(a.out, Some(PathBuf::from("/from/file")));
        assert_eq!(a.dump.recipient, ["a", "b"]);
        let a = single("backup single db --compress-level 9 --recipient c --out /flag");
        assert_eq!(a.dump.compress_level, Some(9));
        assert_eq!(a.dump.recipient, ["c"]);
        assert_eq!(a.out, Some(PathBuf::from("/flag")));
        match parse(file, "backup cluster --out x").unwrap().command {
            Sub::Backup(BackupCommand::Cluster(a)) => assert_eq!(a.dump.compress_level, Some(2)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn libpq_variables_win_over_the_file_and_flags_over_both() {
        let file = "host = \"/from/file\"\nport = 5433\n";
        let run = |args: &str, pghost_set: bool| {
            let cmd = apply(Cli::command(), file, Path::new("test.toml")).unwrap();
            let argv = std::iter::once("dbbackup").chain(args.split_whitespace());
            let m = cmd.try_get_matches_from(argv).unwrap();
            let mut cli = Cli::from_arg_matches(&m).unwrap();
            prefer_libpq_environment(&mut cli, &m, |var| pghost_set && var == "PGHOST");
            cli.conn
        };
        let conn = run("verify x", true);
        assert_eq!((conn.host, conn.port), (None, Some(5433)));
        let conn = run("verify x", false);
        assert_eq!(conn.host.as_deref(), Some("/from/file"));
        let conn = run("verify x -h /flag", true);
        assert_eq!(conn.host.as_deref(), Some("/flag"));
    }

    #[test]
    fn the_contrib_example_is_a_valid_config_file() {
        let example = include_str!("../../contrib/dbbackup.toml.example");
        let cmd = apply(Cli::command(), example, Path::new("dbbackup.toml.example")).unwrap();
        let m = cmd
            .try_get_matches_from(["dbbackup", "drill", "shop"])
            .unwrap();
        let cli = Cli::from_arg_matches(&m).unwrap();
        match cli.command {
            crate::cli::args::Command::Drill(d) => {
                assert_eq!(d.load.jobs, Some(2));
                assert_eq!(d.repo.as_deref(), Some("/var/backups/dbbackup"));
            }
            other => panic!("{other:?}"),
        }
    }
}
