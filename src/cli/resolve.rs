//! From parsed arguments to the engine's options: defaults, and with `--resume` the options the
//! backup in `--out` was started with.
//!
//! On resume an option that was not given (on the command line or through an environment
//! variable) is taken from the backup's manifest. A given option that would change what is
//! stored — format, compression, sizes, COPY format, which databases — must equal the recorded
//! one; all that do not are named, each with both values, in one usage error. Parallelism and
//! time limits only change how the rest runs: given ones are used (and recorded).

use std::sync::Arc;

use clap::ValueEnum;

use dbbackup::backup::resume::{size_text, value_name, OptionConflicts};
use dbbackup::backup::strategy::StrategyOptions;
use dbbackup::backup::BackupOptions;
use dbbackup::cluster::{is_cluster_backup, ClusterBackupOptions, ClusterManifest, Deadline};
use dbbackup::encryption::{read_recipients_file, Sealing};
use dbbackup::format::compress::Codec;
use dbbackup::format::manifest::{Manifest, OptionsRecord, Status, StrategyKind, MANIFEST_FILE};
use dbbackup::format::selection::Filters;
use dbbackup::source::probe::CopyFormatChoice;
use dbbackup::storage::Store;
use dbbackup::{Error, Result};

use super::args::{cores, parse_duration, ClusterArgs, DumpArgs, FormatArg, SingleArgs};

const DEFAULT_CHUNK_SIZE: u64 = 256 << 20;
const DEFAULT_TIMEOUT: &str = "2h";
const DEFAULT_PARALLEL_DATABASES: usize = 1;

/// `backup single`: the engine's options and the strategy's.
pub fn single(args: &SingleArgs) -> Result<(BackupOptions, StrategyOptions)> {
    let out = super::location::new_backup(
        args.out.as_deref(),
        args.repo.as_deref(),
        Some(&args.dbname),
        args.dump.resume,
    )?;
    let recorded = match args.dump.resume {
        true => recorded_single(&out)?,
        false => None,
    };
    let mut conflicts = OptionConflicts::default();
    let format = match (args.dump.format, &recorded) {
        (Some(given), Some(m)) => {
            // auto stands for whatever the backup became.
            if given != FormatArg::Auto {
                conflicts.compare(
                    "--format",
                    value_name(&given).as_str(),
                    m.strategy.kind.as_str(),
                    str::to_string,
                );
            }
            given
        }
        (Some(given), None) => given,
        (None, Some(m)) => match m.strategy.kind {
            StrategyKind::Native => FormatArg::Native,
            StrategyKind::Plain => FormatArg::Plain,
            StrategyKind::Custom => FormatArg::Custom,
        },
        (None, None) => FormatArg::Auto,
    };
    let opts = backup_options(
        &args.dump,
        out,
        args.snapshot.clone(),
        recorded.as_ref().map(|m| (&m.options, m.filters.clone())),
        &mut conflicts,
    )?;
    conflicts.into_result(Error::Usage)?;
    let strategy = StrategyOptions {
        format: format.into(),
        parallel_tables_explicit: args.dump.parallel_tables,
        plain_threshold: args.dump.plain_threshold,
    };
    Ok((opts, strategy))
}

/// The manifest of the backup `backup single --resume` continues; `None` when `--out` has none
/// (the engine says there is nothing to resume).
fn recorded_single(out: &Store) -> Result<Option<Manifest>> {
    if !out.exists(MANIFEST_FILE)? {
        return Ok(None);
    }
    if is_cluster_backup(out) {
        return Err(Error::Usage(format!(
            "{} holds a cluster backup: resume it with `backup cluster --out DIR --resume`",
            out.display()
        )));
    }
    let m = Manifest::load(out)?;
    if m.status == Status::Complete {
        return Ok(Some(m)); // nothing to do, and the engine says so
    }
    if m.server_version.is_empty() {
        // The minimal manifest of a backup that failed before it began: nothing was recorded.
        return Err(Error::Refused(format!(
            "nothing to resume: the backup in {} failed before it began ({}); remove the directory and start a new backup",
            out.display(),
            m.error.as_deref().unwrap_or("failed")
        )));
    }
    if m.strategy.kind != StrategyKind::Native {
        return Err(Error::Usage(format!(
            "--resume continues native backups only: {} holds a {} backup, which is made again from the start (into an empty directory, without --resume)",
            out.display(),
            m.strategy.kind.as_str()
        )));
    }
    Ok(Some(m))
}

/// `backup cluster`: the engine's options.
pub fn cluster(args: &ClusterArgs) -> Result<ClusterBackupOptions> {
    let out = super::location::new_backup(
        args.out.as_deref(),
        args.repo.as_deref(),
        None,
        args.dump.resume,
    )?;
    let recorded = match args.dump.resume {
        true => recorded_cluster(&out)?,
        false => None,
    };
    let r = recorded.as_ref().map(|(m, _)| &m.options);
    let mut conflicts = OptionConflicts::default();
    let c = &mut conflicts;

    let format = c.take(
        "--format",
        args.dump.format,
        r.and_then(|r| FormatArg::from_str(&r.format, false).ok()),
        value_name,
    );
    let given_formats = args
        .database_format
        .iter()
        .map(|s| parse_database_format(s))
        .collect::<Result<Vec<_>>>()?;
    let recorded_formats = r
        .map(|r| r.database_formats.iter().map(|s| parse_database_format(s)))
        .map(|formats| formats.collect::<Result<Vec<_>>>())
        .transpose()?;
    let database_formats = c.take(
        "--database-format",
        given(given_formats),
        recorded_formats,
        |v| {
            let v: Vec<String> = v
                .iter()
                .map(|(p, f)| format!("{p}={}", value_name(f)))
                .collect();
            list(&v)
        },
    );
    let include = c.take(
        "--include-database",
        given(args.include_database.clone()),
        r.map(|r| r.include.clone()),
        |v| list(v),
    );
    let exclude = c.take(
        "--exclude-database",
        given(args.exclude_database.clone()),
        r.map(|r| r.exclude.clone()),
        |v| list(v),
    );
    let database = recorded
        .as_ref()
        .and_then(|(m, db)| db.as_ref().map(|db| (db, m.options.filters.clone())));
    let mut db = backup_options(&args.dump, out, None, database, c)?;
    db.filters_per_database = true;
    conflicts.into_result(Error::Usage)?;
    // The globals and the cluster manifest's location, with the databases' recipients.
    let out = db.out.clone();

    let parallel_databases = args
        .parallel_databases
        .or(r.map(|r| r.parallel_databases))
        .unwrap_or(DEFAULT_PARALLEL_DATABASES);
    if parallel_databases == 0 {
        return Err(Error::Usage(
            "--parallel-databases must be at least 1".into(),
        ));
    }
    let timeout = args
        .timeout
        .clone()
        .or(r.map(|r| r.timeout.clone()))
        .unwrap_or_else(|| DEFAULT_TIMEOUT.into());
    let recorded_tables = r.map(|r| r.parallel_tables).filter(|&n| n > 0);
    if args.dump.parallel_tables.is_none() {
        db.parallel_tables = recorded_tables.unwrap_or(db.parallel_tables);
    }
    let parallel_tables_explicit = args.dump.parallel_tables.or(r
        .filter(|r| r.parallel_tables_explicit)
        .and(recorded_tables));
    db.parallel_tables_explicit = parallel_tables_explicit.is_some();
    db.backups_at_once = parallel_databases;
    Ok(ClusterBackupOptions {
        out,
        timeout: Deadline {
            after: parse_duration(&timeout).map_err(Error::Usage)?,
            text: timeout,
        },
        parallel_databases,
        include: include.unwrap_or_default(),
        exclude: exclude.unwrap_or_default(),
        db,
        strategy: StrategyOptions {
            format: format.unwrap_or(FormatArg::Auto).into(),
            parallel_tables_explicit,
            plain_threshold: args.dump.plain_threshold,
        },
        database_formats: database_formats
            .unwrap_or_default()
            .into_iter()
            .map(|(p, f)| (p, f.into()))
            .collect(),
    })
}

/// The cluster manifest `backup cluster --resume` continues and the per-database options it
/// recorded; `None` when `--out` has no manifest (the engine says so).
fn recorded_cluster(out: &Store) -> Result<Option<(ClusterManifest, Option<OptionsRecord>)>> {
    if !out.exists(MANIFEST_FILE)? {
        return Ok(None);
    }
    if !is_cluster_backup(out) && Manifest::load(out).is_ok() {
        return Err(Error::Usage(format!(
            "{} holds a single-database backup: resume it with `backup single DBNAME --out DIR --resume`",
            out.display()
        )));
    }
    let m = ClusterManifest::load(out)?;
    // Older cluster manifests lack `options.database`: a database's own manifest has them.
    let database = m.options.database.clone().or_else(|| {
        m.databases.iter().find_map(|d| {
            Manifest::load(&out.sub(&d.dir))
                .ok()
                .filter(|m| !m.server_version.is_empty())
                .map(|m| m.options)
        })
    });
    Ok(Some((m, database)))
}

/// The engine's options for one database. `recorded`: the options of the backup being resumed
/// (any given option that differs from them is added to `conflicts`).
fn backup_options(
    d: &DumpArgs,
    out: Store,
    snapshot: Option<String>,
    recorded: Option<(&OptionsRecord, Option<Filters>)>,
    conflicts: &mut OptionConflicts,
) -> Result<BackupOptions> {
    let c = conflicts;
    // Filters: given ones must equal the recorded ones; none given takes the recorded ones.
    let given_filters = d.filter.given().then(|| d.filter.filters()).transpose()?;
    let recorded_filters = recorded
        .as_ref()
        .map(|(_, f)| f.clone().unwrap_or_default());
    let filters = c
        .take("filters", given_filters, recorded_filters, |f| {
            if f.is_empty() {
                "none (every table)".into()
            } else {
                f.describe()
            }
        })
        .unwrap_or_default();
    let recorded = recorded.map(|(r, _)| r);
    let codec = c
        .take(
            "--compress",
            d.compress,
            recorded.map(|r| r.codec),
            value_name,
        )
        .unwrap_or(Codec::Zstd);
    // The recorded level is that of the recorded codec.
    let recorded_level = recorded.filter(|r| r.codec == codec).map(|r| r.level);
    let level = c
        .take("--compress-level", d.compress_level, recorded_level, |l| {
            l.to_string()
        })
        .unwrap_or(codec.default_level());
    codec.check_level(level).map_err(Error::Usage)?;
    let show_size = |v: &u64| size_text(*v);
    let chunk_size = c
        .take(
            "--chunk-size",
            d.chunk_size,
            recorded.map(|r| r.chunk_size),
            show_size,
        )
        .unwrap_or(DEFAULT_CHUNK_SIZE);
    let split_larger_than = c
        .take(
            "--split-tables-larger-than",
            d.split_tables_larger_than,
            recorded.map(|r| r.split_tables_larger_than),
            show_size,
        )
        .unwrap_or(chunk_size.saturating_mul(4));
    let copy_format = c
        .take(
            "--copy-format",
            d.copy_format,
            recorded.and_then(|r| CopyFormatChoice::from_str(&r.copy_format, false).ok()),
            value_name,
        )
        .unwrap_or(CopyFormatChoice::Auto);
    if d.parallel_tables == Some(0) {
        return Err(Error::Usage("--parallel-tables must be at least 1".into()));
    }
    let mut recipients = d.recipient.clone();
    for file in &d.recipients_file {
        recipients.extend(read_recipients_file(file)?);
    }
    // Compared in canonical form, so an ssh key's comment or the order does not matter.
    let sealing = Sealing::to_recipients(&recipients)?;
    let recipients = c.take(
        "--recipient",
        given(sealing.recipients().to_vec()),
        recorded.map(|r| r.recipients.clone()),
        |v| list(v),
    );
    let sealing = match recipients {
        Some(keys) if keys != sealing.recipients() => Sealing::to_recipients(&keys)?,
        _ => sealing,
    };
    let out = out.with_sealing(Arc::new(sealing));
    // May differ from the first run: it changes how the rest runs, not what is stored.
    let parallel_tables = d
        .parallel_tables
        .or(recorded.map(|r| r.parallel_tables).filter(|&n| n > 0))
        .unwrap_or_else(cores);
    Ok(BackupOptions {
        out,
        parallel_tables,
        codec,
        level,
        chunk_size,
        split_larger_than,
        copy_format,
        lock_timeout: d.lock_wait_timeout,
        retries: d.retries,
        resume: d.resume,
        allow_inconsistent: d.allow_inconsistent,
        snapshot,
        memory_limit: dbbackup::memory::limit_from(d.memory_limit),
        parallel_tables_explicit: d.parallel_tables.is_some(),
        backups_at_once: 1,
        pause_replay: if d.pause_replay {
            dbbackup::backup::ReplayPause::Asked
        } else {
            dbbackup::backup::ReplayPause::Off
        },
        filters,
        filters_per_database: false,
    })
}

/// `PATTERN=FORMAT` (the last `=` separates: patterns may contain `=`).
fn parse_database_format(s: &str) -> Result<(String, FormatArg)> {
    let bad = || {
        Error::Usage(format!(
            "--database-format {s:?}: expected PATTERN=FORMAT with FORMAT one of auto, native, plain, custom"
        ))
    };
    let (pattern, format) = s.rsplit_once('=').ok_or_else(bad)?;
    let format = FormatArg::from_str(format.trim(), false).map_err(|_| bad())?;
    if pattern.is_empty() {
        return Err(bad());
    }
    Ok((pattern.to_string(), format))
}

/// A repeatable option: given when it was given at least once.
fn given<T>(values: Vec<T>) -> Option<Vec<T>> {
    (!values.is_empty()).then_some(values)
}

fn list(values: &[String]) -> String {
    if values.is_empty() {
        "none".into()
    } else {
        values.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::{BackupCommand, Cli, Command};
    use clap::Parser;
    use dbbackup::backup::strategy::FormatChoice;

    fn single_args(args: &str) -> SingleArgs {
        let argv = "dbbackup backup single db --out /nonexistent/x ".to_string() + args;
        match Cli::try_parse_from(argv.split_whitespace())
            .unwrap()
            .command
        {
            Command::Backup(BackupCommand::Single(a)) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn defaults_apply_when_not_given() {
        let (o, s) = single(&single_args("")).unwrap();
        assert_eq!((o.codec, o.level), (Codec::Zstd, 3));
        assert_eq!(o.chunk_size, 256 << 20);
        assert_eq!(o.split_larger_than, 1 << 30);
        assert_eq!(o.copy_format, CopyFormatChoice::Auto);
        assert_eq!(o.parallel_tables, cores());
        assert_eq!(s.format, FormatChoice::Auto);
        assert_eq!(s.parallel_tables_explicit, None);
    }

    #[test]
    fn given_options_are_used() {
        let (o, s) = single(&single_args(
            "--compress gzip --chunk-size 8MiB --parallel-tables 2 --format native",
        ))
        .unwrap();
        assert_eq!((o.codec, o.level), (Codec::Gzip, 6));
        assert_eq!((o.chunk_size, o.split_larger_than), (8 << 20, 32 << 20));
        assert_eq!(o.parallel_tables, 2);
        assert_eq!(s.format, FormatChoice::Native);
        assert_eq!(s.parallel_tables_explicit, Some(2));
    }
}
