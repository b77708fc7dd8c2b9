//! `dbbackup drill`: the connection to restore into, the backup's location, the result lines.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use dbbackup::drill::{drill_cluster, drill_database, DrillOptions, DrillOutcome};
use dbbackup::source::conn::{ConnParams, ConnectOptions};
use dbbackup::{Error, Result};

use super::args::DrillArgs;
use super::progress::reporter;

/// Runs the drill; passed: the result line on stdout; failed (or its record not written):
/// the result as the error, so that the exit status is 1.
pub async fn drill(
    conn: &ConnectOptions,
    args: DrillArgs,
    cancel: CancellationToken,
) -> Result<()> {
    let mut target = conn.clone();
    if let Some(host) = &args.target_host {
        target.host = Some(host.clone());
    }
    if let Some(port) = args.target_port {
        target.port = Some(port);
    }
    let conn = ConnParams::resolve(&target)?;
    let jobs = args.load.jobs()?;
    let store = super::location::backup_location_with_identities(
        args.repo.as_deref(),
        Path::new(&args.backup),
        &args.keys,
    )?;
    let opts = DrillOptions {
        memory_limit: args.load.memory_limit(),
        jobs_explicit: args.load.jobs_explicit(),
        backup: store,
        scratch_name: args.scratch_name.clone(),
        keep_scratch: args.keep_scratch,
        jobs,
        work_dir: args.load.work_dir.clone(),
    };
    let progress = reporter(args.quiet);
    let outcomes = if dbbackup::cluster::is_cluster_backup(&opts.backup) {
        drill_cluster(&conn, &opts, progress, cancel).await
    } else {
        drill_database(&conn, &opts, progress, cancel)
            .await
            .map(|o| vec![o])
    };
    let result = outcomes.and_then(|o| report(&o, args.quiet));
    // The drill's record is in the backup by now: the metrics file shows it.
    super::repo::write_metrics_after(&args.metrics, args.repo.as_deref(), &opts.backup, result)
}

fn report(outcomes: &[DrillOutcome], quiet: bool) -> Result<()> {
    let mut failed = Vec::new();
    for o in outcomes {
        match (&o.stored, o.record.passed) {
            (Ok(where_), true) => {
                println!("{}", o.summary());
                if !quiet {
                    println!("  recorded in {where_}");
                }
            }
            (Ok(_), false) => failed.push(o.summary()),
            (Err(why), _) => failed.push(format!(
                "{}\nthe drill's record could not be written: {why}",
                o.summary()
            )),
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(Error::DrillFailed(failed.join("\n")))
}
