//! Command-line syntax. Parsing and validation happen here, once; the engine gets checked
//! option structs.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use dbbackup::compress::Codec;
use dbbackup::conn::ConnectOptions;
use dbbackup::probe::CopyFormatChoice;

#[derive(Parser, Debug)]
#[command(
    name = "dbbackup",
    version,
    about = "Parallel, chunked, checksummed logical backups of PostgreSQL",
    long_about = "Parallel, chunked, checksummed logical backups of PostgreSQL.\n\n\
        Connection settings follow libpq: -h/-p/-U, or PGHOST, PGPORT, PGUSER, PGPASSWORD, \
        PGDATABASE (maintenance database), PGSSLMODE, PGCONNECT_TIMEOUT and ~/.pgpass \
        (PGPASSFILE). They are passed to pg_dump/pg_restore/psql through their environment, \
        never their command line.\n\nExit status: 0 success, 1 the job failed, 2 bad usage.",
    disable_help_flag = true
)]
pub struct Cli {
    #[command(flatten)]
    pub conn: ConnectOptions,
    /// Print help
    #[arg(long, action = clap::ArgAction::Help, global = true)]
    pub help: Option<bool>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Back up a database
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Check a backup without a server: manifest, sizes, SHA-256, decompression, COPY framing
    Verify(VerifyArgs),
    /// Restore a backup into a database
    Restore(RestoreArgs),
}

#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// Back up one database
    Single(SingleArgs),
}

#[derive(Args, Debug)]
pub struct SingleArgs {
    /// Database to back up
    pub dbname: String,
    /// Output directory (created 0700; must be empty or absent)
    #[arg(long)]
    pub out: PathBuf,
    /// Tables copied at once, each on its own connection (default: number of CPU cores)
    #[arg(long, value_name = "N")]
    pub parallel_tables: Option<usize>,
    /// Backup format: native = parallel COPY streams per table
    #[arg(long, value_enum, default_value = "native")]
    pub format: FormatArg,
    /// Compression codec of stored files
    #[arg(long, value_enum, default_value = "zstd")]
    pub compress: Codec,
    /// Compression level (zstd 1-22, default 3; gzip 0-9, default 6)
    #[arg(long, value_name = "L")]
    pub compress_level: Option<i32>,
    /// Uncompressed bytes per chunk file (KiB/MiB/GiB accepted)
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub chunk_size: u64,
    /// Split tables larger than this (pg_table_size, TOAST included) into ctid ranges
    /// (default: 4 x chunk size)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub split_tables_larger_than: Option<u64>,
    /// COPY format per table: auto = binary where every column type is a built-in base type
    /// (or array of one) with binary I/O, text otherwise
    #[arg(long, value_enum, default_value = "auto")]
    pub copy_format: CopyFormatChoice,
    /// Maximum wait for each table's ACCESS SHARE lock
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub lock_wait_timeout: Duration,
    /// No progress output
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatArg {
    Native,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Backup directory
    pub dir: PathBuf,
    /// Print only problems
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Backup directory
    pub dir: PathBuf,
    /// Target database
    #[arg(long, short = 'd')]
    pub dbname: String,
    /// Create the target database with the source database's properties (encoding, locale,
    /// owner, comment, grants, settings)
    #[arg(long)]
    pub create: bool,
    /// Drop what stands in the way: with --create the existing target database, otherwise the
    /// objects of the backup that already exist in the target
    #[arg(long)]
    pub clean: bool,
    /// Parallel loaders (default: number of CPU cores)
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// No progress output
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// "256MiB", "8 MiB", "1GiB", "512KiB", "1048576" (bytes). K/M/G/T and KB/MB/GB/TB are read
/// as binary units too: a chunk size is never meant in powers of ten.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 8MiB, 256MiB, 1GiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?} (use KiB, MiB, GiB)"
            ))
        }
    };
    let bytes = (num * mult as f64) as u64;
    if bytes == 0 {
        return Err(format!("size {s:?} must be greater than zero"));
    }
    Ok(bytes)
}

/// "90s", "30m", "2h", "1h30m", "500ms".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (examples: 90s, 30m, 2h)");
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        total += match unit {
            "ms" => Duration::from_millis(n),
            "s" | "" => Duration::from_secs(n),
            "m" | "min" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            "d" => Duration::from_secs(n * 86400),
            _ => return Err(bad()),
        };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("8 MiB").unwrap(), 8 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn host_flag_is_not_help() {
        let cli = Cli::try_parse_from(["dbbackup", "-h", "/tmp", "verify", "x"]).unwrap();
        assert_eq!(cli.conn.host.as_deref(), Some("/tmp"));
    }
}
