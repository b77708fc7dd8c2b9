//! dbbackup's command line: a thin layer over the engine library.
//!
//! `main` parses, dispatches, and turns the one error into one line on stderr, prefixed with
//! the program name. Exit status: 0 success, 1 the job failed, 2 bad usage.

mod cli;

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use cli::args::{BackupCommand, Cli, Command};
use dbbackup::source::conn::ConnParams;
use dbbackup::Error;

fn main() -> ExitCode {
    bounded_heap();
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(
            dbbackup::source::standby::watchdog::SUBCOMMAND,
        ))
    {
        return replay_watchdog();
    }
    let cli = match cli::config::parse_command_line(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(cli::config::ParseError::Clap(e)) => return usage_error(e),
        Err(cli::config::ParseError::Config(msg)) => {
            eprintln!("dbbackup: error: {msg}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cancel = CancellationToken::new();
    let result = runtime.block_on(async {
        let job = run(cli, cancel.clone());
        tokio::pin!(job);
        tokio::select! {
            r = &mut job => r,
            _ = shutdown_signal() => {
                eprintln!("dbbackup: interrupted, stopping");
                cancel.cancel();
                // Let the job record its failure in the manifest, but not forever.
                match tokio::time::timeout(std::time::Duration::from_secs(15), job).await {
                    Ok(r) => r.and(Err(Error::Interrupted)),
                    Err(_) => Err(Error::Interrupted),
                }
            }
        }
    });
    // Children run in their own process groups: a terminal's Ctrl-C does not reach them.
    dbbackup::source::child::terminate_all();
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dbbackup: error: {}", e.to_string().replace('\n', "\n  "));
            match e {
                Error::Usage(_) => ExitCode::from(2),
                _ => ExitCode::from(1),
            }
        }
    }
}

/// Keeps peak memory independent of how much data streams through. glibc raises its mmap
/// threshold each time a large block is freed, after which multi-hundred-KiB buffers (batches,
/// compressor and file buffers) come from the heap and fragment it: peak RSS then creeps up
/// with the volume dumped (measured: 17.4 MiB for a 770 MB table vs 12.6 MiB for 38 MB). A
/// fixed threshold hands such buffers back to the kernel when freed (15.0 vs 12.7 MiB).
fn bounded_heap() {
    // SAFETY: mallopt only changes allocator parameters; called before any other thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 * 1024);
    }
}

/// `--help` and `--version` print as clap does; a usage error is one line naming the argument,
/// like every other error, then exit status 2. A command without its subcommand (`dbbackup`,
/// `dbbackup backup`) prints the help that lists them, also with status 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(2)
        }
        _ => {
            eprintln!("dbbackup: error: {} (see --help)", cli::usage::one_line(&e));
            ExitCode::from(2)
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn run(cli: Cli, cancel: CancellationToken) -> dbbackup::Result<()> {
    cli::location::set_s3_endpoint(cli.s3_endpoint.clone());
    cli::store_log::install();
    if let Command::Drill(args) = cli.command {
        // The drill's connection is its target server: resolved there, with --target-host/-port.
        return cli::drill::drill(&cli.conn, args, cancel).await;
    }
    if let Command::Contents(args) = cli.command {
        // Reads the backup only: no server, so no connection settings to resolve.
        return cli::contents::contents_command(args);
    }
    let conn = ConnParams::resolve(&cli.conn)?;
    match cli.command {
        Command::Backup(BackupCommand::Single(args)) => {
            cli::commands::backup_single(&conn, args, cancel).await
        }
        Command::Backup(BackupCommand::Cluster(args)) => {
            cli::cluster::backup_cluster(&conn, args, cancel).await
        }
        Command::Verify(args) => cli::commands::verify(args),
        Command::Restore(args) => cli::commands::restore(&conn, args, cancel).await,
        Command::List(args) => cli::repo::list(args),
        Command::Expire(args) => cli::repo::expire(args),
        Command::Drill(_) | Command::Contents(_) => unreachable!("handled above"),
    }
}

/// The hidden `__resume-replay-watchdog` that `--pause-replay` starts (see
/// `dbbackup::source::standby::watchdog`); not in `--help`, not for people.
fn replay_watchdog() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(dbbackup::source::standby::watchdog::run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dbbackup: replay watchdog: error: {e}");
            ExitCode::from(1)
        }
    }
}
