//! The size probe and the choice of strategy: native (parallel COPY), or pg_dump's own plain or
//! custom format streamed through our compressor ([`crate::backup::stream`]).
//!
//! The auto rule (`--format auto`, the default), documented in `--help` and the README:
//!
//! 1. `--parallel-tables N` with N > 1 given explicitly → **native**: the parallel path;
//! 2. otherwise, a value over 500 MiB in some table ([`crate::source::large_values`]) →
//!    **native**: pg_dump's text output cannot carry it (binary COPY can);
//! 3. otherwise, `pg_database_size` (with backup filters: the selected tables and large objects)
//!    below `--plain-threshold` (default 5 GiB) → **custom**:
//!    pg_restore keeps its selective (`-L`/`-n`/`-t`) and parallel (`-j`) restore;
//! 4. otherwise (at or above the threshold) → **plain**: one SQL stream, without custom
//!    format's per-object framing.
//!
//! An explicit `--format plain|custom` on a database with such a value is refused before
//! pg_dump starts and before anything is written (exit 1: the command line is fine, the data
//! is what this format cannot carry), naming the table and column.
//!
//! The probe runs in a short REPEATABLE READ transaction before anything is written; it refuses
//! a local pg_dump older than the server. Its findings and the decision, with the reason in
//! words, are printed and recorded in the manifest (`probe`, `strategy`). When native is chosen
//! without looking at sizes (rule 1, `--format native`) there is no such probe: the engine's own
//! probe, in its snapshot, is the only one.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::format::manifest::{Manifest, Strategy, StrategyKind};
use crate::progress::Progress;
use crate::source::conn::ConnParams;
use crate::source::large_values::{LargeValue, LARGE_VALUE_LIMIT};

use super::native::{backup_database, backup_native};
use super::options::BackupOptions;
use super::probe::run_probe;
use super::sessions::{cancellable, Sessions};
use super::stream::{backup_stream, StreamPlan};

/// Default of `--plain-threshold`: 5 GiB.
pub const DEFAULT_PLAIN_THRESHOLD: u64 = 5 << 30;

/// What the user asked for with `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatChoice {
    Auto,
    Native,
    Plain,
    Custom,
}

/// The inputs of the strategy decision besides the probe.
#[derive(Debug, Clone)]
pub struct StrategyOptions {
    pub format: FormatChoice,
    /// `--parallel-tables` when the user gave it (not the default of one per core).
    pub parallel_tables_explicit: Option<usize>,
    /// `--plain-threshold`: database size from which auto picks plain over custom.
    pub plain_threshold: u64,
}

/// Applies `--format` and the auto rule to what the probe found: the database size and the
/// values too large for pg_dump (`too_large`, empty when none or not looked for). Refuses an
/// explicit plain/custom format for a database with such values.
pub fn decide(
    opts: &StrategyOptions,
    dbname: &str,
    database_size: u64,
    too_large: &[LargeValue],
) -> Result<Strategy> {
    if matches!(opts.format, FormatChoice::Plain | FormatChoice::Custom) && !too_large.is_empty() {
        return Err(Error::Refused(format!(
            "database {dbname}: {}; pg_dump's plain/custom formats cannot carry values over {} MiB: use --format native",
            too_large
                .iter()
                .map(LargeValue::describe)
                .collect::<Vec<_>>()
                .join(", "),
            LARGE_VALUE_LIMIT >> 20
        )));
    }
    let (kind, reason) = match opts.format {
        FormatChoice::Native => (StrategyKind::Native, "--format native requested".to_string()),
        FormatChoice::Plain => (StrategyKind::Plain, "--format plain requested".to_string()),
        FormatChoice::Custom => (
            StrategyKind::Custom,
            "--format custom requested".to_string(),
        ),
        FormatChoice::Auto => match opts.parallel_tables_explicit {
            Some(n) if n > 1 => (
                StrategyKind::Native,
                format!(
                    "auto: --parallel-tables {n} was asked explicitly, so the parallel native engine"
                ),
            ),
            _ if !too_large.is_empty() => (StrategyKind::Native, too_large_reason(too_large)),
            _ if database_size < opts.plain_threshold => (
                StrategyKind::Custom,
                format!(
                    "auto: database size {} is below --plain-threshold {}: custom format keeps pg_restore's selective and parallel restore",
                    human_bytes(database_size),
                    human_bytes(opts.plain_threshold)
                ),
            ),
            _ => (
                StrategyKind::Plain,
                format!(
                    "auto: database size {} is at or above --plain-threshold {}: a plain SQL stream avoids custom format's overhead",
                    human_bytes(database_size),
                    human_bytes(opts.plain_threshold)
                ),
            ),
        },
    };
    Ok(Strategy { kind, reason })
}

/// Auto's reason for native when pg_dump cannot carry a value: the first one named.
fn too_large_reason(too_large: &[LargeValue]) -> String {
    let first = &too_large[0];
    let more = match too_large.len() {
        1 => String::new(),
        n => format!(" (and {} more column(s))", n - 1),
    };
    format!(
        "auto: {}.{}.{} holds a value of {}{}{more}; pg_dump's text output cannot carry values over {} MiB (hex of a bytea doubles it past PostgreSQL's 1 GB limit), so the native engine (binary COPY), one table at a time (--parallel-tables N > 1 for more)",
        first.schema,
        first.table,
        first.column,
        if first.at_least { "at least " } else { "" },
        human_bytes(first.bytes),
        LARGE_VALUE_LIMIT >> 20
    )
}

/// `backup single`: probe, decide, print the decision, then run the native engine or stream
/// pg_dump's plain/custom output. On failure the manifest (if one was started) says `failed`.
/// With `--pause-replay` on a standby, replay is paused before the probe's snapshot and
/// resumed once the chosen strategy has read the data, whichever it is.
pub async fn backup_with_strategy(
    conn: &ConnParams,
    dbname: &str,
    opts: &BackupOptions,
    strategy_opts: &StrategyOptions,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
) -> Result<Manifest> {
    if opts.resume
        && matches!(
            strategy_opts.format,
            FormatChoice::Plain | FormatChoice::Custom
        )
    {
        return choose_and_run(conn, dbname, opts, strategy_opts, progress, cancel).await;
    }
    let (paused, opts) =
        super::standby::pause_if_asked(conn, dbname, opts, progress.as_ref()).await?;
    let result = choose_and_run(conn, dbname, &opts, strategy_opts, progress.clone(), cancel).await;
    if let Some(p) = paused {
        p.resume(progress.as_ref()).await;
    }
    result
}

async fn choose_and_run(
    conn: &ConnParams,
    dbname: &str,
    opts: &BackupOptions,
    strategy_opts: &StrategyOptions,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
) -> Result<Manifest> {
    if opts.resume {
        // Only native backups resume; the backup in --out says what it is.
        if matches!(
            strategy_opts.format,
            FormatChoice::Plain | FormatChoice::Custom
        ) {
            return Err(Error::Usage(
                "--resume continues native backups only; a plain/custom backup is rerun from the start".into(),
            ));
        }
        return backup_database(conn, dbname, opts, progress, cancel).await;
    }
    // Native chosen without looking at sizes (asked for, or --parallel-tables N > 1): the
    // engine's own probe, inside its snapshot, is the only one.
    let without_probe = match strategy_opts.format {
        FormatChoice::Native => true,
        FormatChoice::Auto => strategy_opts
            .parallel_tables_explicit
            .is_some_and(|n| n > 1),
        FormatChoice::Plain | FormatChoice::Custom => false,
    };
    if without_probe {
        let strategy = decide(strategy_opts, dbname, 0, &[])?;
        return backup_native(conn, dbname, opts, strategy, progress, cancel).await;
    }
    // Cancellable like the backup itself: a timeout or Ctrl-C during a probe that waits for a
    // lock (or reads a heap for value sizes) cancels its statement on the server.
    let sessions = Sessions::default();
    let selection = opts.selection(dbname)?;
    let found = cancellable(
        &cancel,
        &sessions,
        run_probe(
            conn,
            dbname,
            opts.lock_timeout,
            selection,
            !opts.filters_per_database,
            &sessions,
            progress.as_ref(),
        ),
    )
    .await
    .map_err(crate::source::standby::conflict::name)?;
    progress.note(&found.summary_line(dbname));
    super::standby::warn_if_at_risk(&found.probe, dbname, opts, progress.as_ref());
    let too_large = found
        .large_values
        .as_ref()
        .map_or(&[][..], |c| &c.over_limit[..]);
    // With filters, auto weighs what is selected: its tables (and large objects), not the
    // whole database.
    let size = if found.probe.selection.is_everything() {
        found.probe.database_size.max(0) as u64
    } else {
        found.probe.data_bytes()
    };
    let strategy = decide(strategy_opts, dbname, size, too_large)?;
    progress.note(&format!(
        "strategy: {} ({})",
        strategy.kind.as_str(),
        strategy.reason
    ));
    let probe_json = found.to_json();
    match strategy.kind {
        // Auto, because pg_dump cannot carry a value: the engine probes again in its own
        // snapshot (this probe's transaction has ended). With one worker, as pg_dump would have
        // been one stream: a cluster backup budgets auto's connections that way, and parallel
        // tables stay what --parallel-tables N > 1 asks for.
        StrategyKind::Native => {
            let one_worker = BackupOptions {
                parallel_tables: 1,
                ..opts.clone()
            };
            backup_native(conn, dbname, &one_worker, strategy, progress, cancel).await
        }
        StrategyKind::Plain | StrategyKind::Custom => {
            backup_stream(
                conn,
                dbname,
                opts,
                StreamPlan {
                    strategy,
                    probe: &found.probe,
                    probe_json,
                    pg_dump_version: found.pg_dump_version.clone(),
                },
                progress,
                cancel,
            )
            .await
        }
    }
}

pub use crate::progress::human_bytes;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::probe::check_pg_dump_version;

    fn opts(format: FormatChoice, parallel: Option<usize>, threshold: u64) -> StrategyOptions {
        StrategyOptions {
            format,
            parallel_tables_explicit: parallel,
            plain_threshold: threshold,
        }
    }

    fn big(column: &str, mib: u64) -> LargeValue {
        LargeValue {
            schema: "public".into(),
            table: "blobs".into(),
            column: column.into(),
            bytes: mib << 20,
            at_least: false,
        }
    }

    fn kind(opts: &StrategyOptions, size: u64, too_large: &[LargeValue]) -> StrategyKind {
        decide(opts, "db", size, too_large).expect("decided").kind
    }

    #[test]
    fn auto_rule() {
        let t = 1000;
        let auto = |p, size| kind(&opts(FormatChoice::Auto, p, t), size, &[]);
        assert_eq!(auto(None, 999), StrategyKind::Custom);
        assert_eq!(auto(None, 1000), StrategyKind::Plain);
        assert_eq!(auto(None, 1001), StrategyKind::Plain);
        assert_eq!(auto(Some(1), 10), StrategyKind::Custom);
        assert_eq!(auto(Some(1), 5000), StrategyKind::Plain);
        assert_eq!(auto(Some(2), 10), StrategyKind::Native);
        assert_eq!(auto(Some(8), 5000), StrategyKind::Native);
    }

    #[test]
    fn explicit_formats_win() {
        for (f, k) in [
            (FormatChoice::Native, StrategyKind::Native),
            (FormatChoice::Plain, StrategyKind::Plain),
            (FormatChoice::Custom, StrategyKind::Custom),
        ] {
            assert_eq!(kind(&opts(f, Some(8), 1), 10, &[]), k);
            assert_eq!(kind(&opts(f, None, 1 << 40), 10, &[]), k);
        }
    }

    #[test]
    fn reasons_are_words() {
        let s = decide(
            &opts(FormatChoice::Auto, None, 5 << 30),
            "db",
            12 << 20,
            &[],
        )
        .unwrap();
        assert!(s.reason.contains("12.0 MiB"), "{}", s.reason);
        assert!(s.reason.contains("5.0 GiB"), "{}", s.reason);
    }

    #[test]
    fn auto_picks_native_for_values_pg_dump_cannot_carry() {
        let too_large = [big("b", 612)];
        for size in [10, 1 << 40] {
            let s = decide(
                &opts(FormatChoice::Auto, None, 1000),
                "db",
                size,
                &too_large,
            )
            .unwrap();
            assert_eq!(s.kind, StrategyKind::Native);
            assert_eq!(
                s.reason,
                "auto: public.blobs.b holds a value of 612.0 MiB; pg_dump's text output cannot carry values over 500 MiB (hex of a bytea doubles it past PostgreSQL's 1 GB limit), so the native engine (binary COPY), one table at a time (--parallel-tables N > 1 for more)"
            );
        }
        let two = [big("b", 612), big("c", 700)];
        let s = decide(&opts(FormatChoice::Auto, Some(1), 1000), "db", 10, &two).unwrap();
        assert!(
            s.reason.contains("612.0 MiB (and 1 more column(s))"),
            "{}",
            s.reason
        );
        // Explicit parallelism keeps its own reason.
        let s = decide(&opts(FormatChoice::Auto, Some(4), 1000), "db", 10, &two).unwrap();
        assert!(s.reason.contains("--parallel-tables 4"), "{}", s.reason);
    }

    #[test]
    fn explicit_plain_or_custom_refused_for_values_pg_dump_cannot_carry() {
        for f in [FormatChoice::Plain, FormatChoice::Custom] {
            let e = decide(&opts(f, None, 1000), "big", 10, &[big("b", 612)]).unwrap_err();
            assert!(matches!(e, Error::Refused(_)), "{e:?}");
            assert_eq!(
                e.to_string(),
                "database big: table public.blobs column b holds a value of 612.0 MiB; pg_dump's plain/custom formats cannot carry values over 500 MiB: use --format native"
            );
        }
        let s = decide(
            &opts(FormatChoice::Native, None, 1000),
            "big",
            10,
            &[big("b", 612)],
        );
        assert_eq!(s.unwrap().kind, StrategyKind::Native);
    }

    #[test]
    fn old_pg_dump_refused() {
        assert!(check_pg_dump_version(150004, "15.4", 160002, "16.2").is_err());
        assert!(check_pg_dump_version(160002, "16.2", 150004, "15.4").is_ok());
        assert!(check_pg_dump_version(150001, "15.1", 150018, "15.18").is_ok());
    }
}
