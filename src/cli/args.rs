//! Command-line syntax. Parsing and validation happen here, once; the engine gets checked
//! option structs.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use dbbackup::backup::strategy::FormatChoice;
use dbbackup::format::compress::Codec;
use dbbackup::source::conn::ConnectOptions;
use dbbackup::source::probe::CopyFormatChoice;

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
    /// Endpoint of an S3-compatible store for s3://BUCKET/PREFIX locations, e.g.
    /// http://127.0.0.1:8333 (path-style; plain http allowed). Default: AWS_ENDPOINT_URL, else
    /// AWS. Credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN or the
    /// shared files of AWS_PROFILE; region: AWS_REGION (default us-east-1)
    #[arg(long, global = true, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// Settings file (TOML): keys are the long flags, at the top for every command, in
    /// [backup], [backup.single], [restore], [drill]… for one; flags given here win. Default:
    /// /etc/dbbackup/dbbackup.toml when it exists. No secrets: they are refused
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
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
    /// Show what a backup holds, without a server: tables with rows and sizes, objects by kind
    Contents(super::contents::ContentsArgs),
    /// List the backups of a repository (--repo), newest first
    List(ListArgs),
    /// Delete the backups of a repository that no --keep-* rule keeps (restic's rules)
    #[command(after_help = EXPIRE_HELP)]
    Expire(ExpireArgs),
    /// Test a backup: restore it into a scratch database, compare every table's row count,
    /// the sequences and the large objects with the manifest, drop the scratch database, and
    /// record the result in the backup's drills/ (exit status 1 when it failed)
    Drill(DrillArgs),
}

#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// Back up one database
    #[command(after_help = FORMAT_HELP)]
    Single(SingleArgs),
    /// Back up every database of the server plus its roles and tablespaces (pg_dumpall
    /// --globals-only); one database failing or timing out does not stop the others
    Cluster(ClusterArgs),
}

#[derive(Args, Debug)]
pub struct SingleArgs {
    /// Database to back up
    pub dbname: String,
    /// Output directory (created 0700; must be empty or absent)
    #[arg(long, value_name = "DIR", conflicts_with = "repo")]
    pub out: Option<PathBuf>,
    /// Back up into the repository LOCATION (a directory or s3://BUCKET/PREFIX), in
    /// LOCATION/DATABASE/<UTC start time, e.g. 20261129T020000Z>/. With --resume: continue
    /// the newest backup of the database there if it failed or was interrupted
    #[arg(long, value_name = "LOCATION")]
    pub repo: Option<String>,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub dump: DumpArgs,
    /// Read in this exported snapshot (pg_export_snapshot() of a transaction you keep open)
    /// instead of taking one
    #[arg(long, value_name = "ID")]
    pub snapshot: Option<String>,
    /// Time limit (90s, 30m, 2h): past it the backup is stopped (server queries cancelled,
    /// connections closed, pg_dump killed) and its manifest says `timeout after DURATION`
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_text)]
    pub timeout: Option<String>,
    /// No progress output
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// The default parallelism: the number of CPU cores.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Options of how databases are dumped, shared by `backup single` and `backup cluster`.
///
/// The options a backup records are `Option`s: `None` means "not given" (on the command line
/// or through an environment variable), so that `--resume` can take them from the backup.
/// Their defaults are applied in `resolve`.
#[derive(Args, Debug)]
pub struct DumpArgs {
    /// Tables copied at once (per native database), each on its own connection (default:
    /// number of CPU cores)
    #[arg(long, value_name = "N")]
    pub parallel_tables: Option<usize>,
    /// Memory ceiling of dbbackup itself (0: none). Workers, compressor threads and their
    /// windows, COPY and upload buffers are derived from it; a --parallel-tables or
    /// --compress-level that cannot fit is refused with the figures, defaults shrink to fit.
    /// Rows of any size stream through. pg_dump/pg_restore are reported apart, not counted
    #[arg(long, value_name = "SIZE", default_value = "128MiB", value_parser = parse_size)]
    pub memory_limit: u64,
    /// Backup format (default: auto). auto: native when --parallel-tables N > 1 is given
    /// explicitly or when a table holds a value over 500 MiB (pg_dump cannot write it);
    /// otherwise custom when the database (pg_database_size) is smaller than
    /// --plain-threshold, plain when it is that size or larger. plain/custom are refused for a
    /// database with a value over 500 MiB
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// --format auto: database size from which plain is chosen over custom
    #[arg(long, value_name = "SIZE", default_value = "5GiB", value_parser = parse_size)]
    pub plain_threshold: u64,
    /// Compression codec of stored files (default: zstd)
    #[arg(long, value_enum)]
    pub compress: Option<Codec>,
    /// Compression level (zstd 1-22, default 3; gzip 0-9, default 6)
    #[arg(long, value_name = "L")]
    pub compress_level: Option<i32>,
    /// Bytes per chunk file (KiB/MiB/GiB accepted; default: 256MiB): uncompressed bytes for
    /// native backups, stored (compressed) bytes of the stream for plain/custom
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub chunk_size: Option<u64>,
    /// Split tables larger than this (pg_table_size, TOAST included) into ctid ranges
    /// (default: 4 x chunk size)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub split_tables_larger_than: Option<u64>,
    /// COPY format per table (default: auto): auto = binary where every column type is a
    /// built-in base type (or array of one) with binary I/O, text otherwise
    #[arg(long, value_enum)]
    pub copy_format: Option<CopyFormatChoice>,
    /// Maximum wait for each table's ACCESS SHARE lock
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub lock_wait_timeout: Duration,
    /// Retries of a unit that failed with a retryable error (connection lost, backend
    /// terminated, serialization failure), each on a new connection in the same snapshot. A
    /// standby's recovery conflict is not retried (see --pause-replay)
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub retries: u32,
    /// Continue the failed or interrupted backup in --out: keep its finished, re-checked
    /// chunks and dump only what is missing (cluster: complete databases are skipped whole).
    /// Options not given are the ones the backup was started with; a given option that would
    /// change what is stored (format, compression, sizes, COPY format, which databases) must
    /// equal the recorded one. Parallelism and time limits may change
    #[arg(long)]
    pub resume: bool,
    /// With --resume: accept that the missing units are read in a new snapshot (the manifest
    /// then says consistent: false); a split table with a missing range is read again whole
    #[arg(long, requires = "resume")]
    pub allow_inconsistent: bool,
    /// On a hot standby: pause WAL replay (pg_wal_replay_pause) from before the snapshot is
    /// taken until the data is read, so replay cannot cancel a long backup (a recovery
    /// conflict), then resume it; a watchdog process resumes it if dbbackup dies. Needs
    /// EXECUTE on pg_wal_replay_pause/resume (superuser, or granted); replay paused by
    /// someone else is left paused; on a primary it does nothing. Cluster: one pause for the
    /// whole run. The standby falls behind meanwhile (the summary says by how much)
    #[arg(long)]
    pub pause_replay: bool,
    /// Encrypt every stored file (all but the manifest) to this public key: an age key
    /// (age1…, from age-keygen) or an ssh-ed25519 / ssh-rsa public key; repeatable. Restore
    /// and a deep verify then need a matching --identity; the manifest records the keys
    #[arg(long, value_name = "RECIPIENT")]
    pub recipient: Vec<String>,
    /// Encrypt to every public key listed in FILE (age's recipients file: one per line,
    /// # comments); repeatable, combines with --recipient
    #[arg(long, value_name = "FILE")]
    pub recipients_file: Vec<PathBuf>,
    #[command(flatten)]
    pub filter: Box<super::filter_args::FilterArgs>,
}

/// The private keys that decrypt an encrypted backup (restore, verify).
#[derive(Args, Debug, Clone)]
pub struct IdentityArgs {
    /// Decrypt an encrypted backup with the identities in FILE: an age identity file
    /// (age-keygen's output) or an unencrypted ssh private key; repeatable
    #[arg(long, value_name = "FILE", env = "DBBACKUP_IDENTITY_FILE")]
    pub identity: Vec<PathBuf>,
}

/// The auto rule and the stock-tool recipe, shown by `backup single --help`.
const FORMAT_HELP: &str = "\
Formats (--format):
  auto     the default: a probe reads the database size (pg_database_size), table sizes, large
           objects and versions, then picks
             native  if --parallel-tables N with N > 1 was given explicitly (the parallel path);
             native  if a table holds a value over 500 MiB: pg_dump writes values as text (a
                     bytea as hex, twice its size) and PostgreSQL's 1 GB allocation limit stops
                     it; only tables with 2 MB or more of TOAST are checked, by one pass over
                     their heap (octet_length reads the TOAST pointer, not the value);
             custom  if the database (with -t/-n/…: what they select) is smaller than
                     --plain-threshold (default 5GiB): pg_restore keeps its selective and
                     parallel restore;
             plain   otherwise: one SQL stream, without custom format's overhead.
           The decision and its reason are printed and recorded in the manifest.
  plain / custom  pg_dump -Fp / pg_dump -Fc -Z0, read from a pipe, compressed by dbbackup on
           several threads and cut into DIR/stream/pg_dump.{sql,dump}.<codec>.NNNNNN files of
           --chunk-size stored bytes; refused, naming the table and column, before pg_dump starts
           when a value is over 500 MiB (use native). Concatenated and decompressed they are
           pg_dump's output:
             cat DIR/stream/pg_dump.sql.zst.* | zstd -dc | psql -X -v ON_ERROR_STOP=1 -d TARGET
             cat DIR/stream/pg_dump.dump.zst.* | zstd -dc | pg_restore -d TARGET
           (gzip -dc for .gz). `dbbackup restore` does the same with checksums verified.";

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatArg {
    /// Choose by the probe: see --format's help
    Auto,
    /// Parallel COPY streams per table, schema from pg_dump; restored by dbbackup
    Native,
    /// pg_dump -Fp streamed through dbbackup's compressor; restorable with psql
    Plain,
    /// pg_dump -Fc -Z0 streamed through dbbackup's compressor; restorable with pg_restore
    Custom,
}

impl From<FormatArg> for FormatChoice {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Auto => FormatChoice::Auto,
            FormatArg::Native => FormatChoice::Native,
            FormatArg::Plain => FormatChoice::Plain,
            FormatArg::Custom => FormatChoice::Custom,
        }
    }
}

/// `--repo` and the backup it names, for the commands that read a backup.
pub const BACKUP_ARG_HELP: &str = "Backup directory (or s3://BUCKET/PREFIX); with --repo a name: \
    DB@latest (the newest complete backup of DB), DB@20261129T020000Z, cluster@latest";

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[arg(help = BACKUP_ARG_HELP, value_name = "DIR")]
    pub dir: PathBuf,
    /// The repository (a directory or s3://BUCKET/PREFIX) that BACKUP is named in
    #[arg(long, value_name = "LOCATION")]
    pub repo: Option<String>,
    #[command(flatten)]
    pub keys: IdentityArgs,
    /// Print only problems
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    #[arg(help = BACKUP_ARG_HELP, value_name = "DIR")]
    pub dir: PathBuf,
    /// The repository (a directory or s3://BUCKET/PREFIX) that BACKUP is named in
    #[arg(long, value_name = "LOCATION")]
    pub repo: Option<String>,
    #[command(flatten)]
    pub keys: IdentityArgs,
    /// Target database (required for a single-database backup; not used with a cluster backup)
    #[arg(long, short = 'd')]
    pub dbname: Option<String>,
    /// Cluster backups: restore only this database (repeatable; default: all)
    #[arg(long, value_name = "NAME")]
    pub database: Vec<String>,
    /// Create the target database with the source database's properties (encoding, locale,
    /// owner, comment, grants, settings)
    #[arg(long)]
    pub create: bool,
    /// Drop what stands in the way: with --create the existing target database, otherwise the
    /// objects of the backup that already exist in the target
    #[arg(long)]
    pub clean: bool,
    /// A restore that fails drops the database it created (--create, and every database of a
    /// cluster backup) and says so; with this flag the database is kept as the failed restore
    /// left it, to look at. Into an existing database the error names what was done instead
    #[arg(long)]
    pub keep_failed: bool,
    #[command(flatten)]
    pub filter: super::restore_filter::RestoreFilterArgs,
    #[command(flatten)]
    pub load: LoadArgs,
    /// No progress output
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// How a restore loads data: shared by `restore` and `drill`.
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Memory ceiling of dbbackup itself (0: none): loaders and their decoders' windows are
    /// derived from it; a --jobs that cannot fit is refused with the figures, the default
    /// shrinks to fit. pg_restore/psql are child programs, reported apart
    #[arg(long, value_name = "SIZE", default_value = "128MiB", value_parser = parse_size)]
    pub memory_limit: u64,
    /// Parallel loaders (default: number of CPU cores)
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Custom-format backups with --jobs > 1: directory for the decompressed archive that
    /// pg_restore needs as a seekable file (default: the directory holding the backup)
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}

impl LoadArgs {
    /// `--jobs`, or one per core.
    pub fn jobs(&self) -> dbbackup::Result<usize> {
        match self.jobs {
            Some(0) => Err(dbbackup::Error::Usage("--jobs must be at least 1".into())),
            Some(n) => Ok(n),
            None => Ok(cores()),
        }
    }

    /// `--jobs` was given: the memory budget refuses it rather than shrink it.
    pub fn jobs_explicit(&self) -> bool {
        self.jobs.is_some()
    }

    pub fn memory_limit(&self) -> Option<u64> {
        dbbackup::memory::limit_from(self.memory_limit)
    }
}

#[derive(Args, Debug)]
pub struct DrillArgs {
    /// The backup to test: a directory or s3://BUCKET/PREFIX, or with --repo a name:
    /// DB@latest, DB@20261129T020000Z, cluster@latest
    pub backup: String,
    /// Repository the backup is in (a directory or s3://BUCKET/PREFIX); BACKUP is then a name
    #[arg(long, value_name = "LOCATION")]
    pub repo: Option<String>,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub keys: IdentityArgs,
    /// Server to restore into (default: the connection settings, -h / PGHOST)
    #[arg(long, value_name = "HOST")]
    pub target_host: Option<String>,
    /// Port of the server to restore into (default: the connection settings, -p / PGPORT)
    #[arg(long, value_name = "PORT")]
    pub target_port: Option<u16>,
    /// Name of the scratch database (default: dbbackup_drill_<db>_<YYYYMMDDTHHMMSSZ>); the
    /// drill refuses to start when it exists
    #[arg(long, value_name = "NAME")]
    pub scratch_name: Option<String>,
    /// Keep the scratch database afterwards (to look at it); by default it is dropped, also
    /// when the drill fails
    #[arg(long)]
    pub keep_scratch: bool,
    #[command(flatten)]
    pub load: LoadArgs,
    /// No progress output (the result line is still printed)
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// Output directory (created 0700; must be empty or absent): DIR/manifest.json (the
    /// cluster manifest), DIR/globals/, one directory per database
    #[arg(long, value_name = "DIR", conflicts_with = "repo")]
    pub out: Option<PathBuf>,
    /// Back up into the repository LOCATION (a directory or s3://BUCKET/PREFIX), in
    /// LOCATION/cluster/<UTC start time, e.g. 20261129T020000Z>/. With --resume: continue the
    /// newest cluster backup there if it failed or was interrupted
    #[arg(long, value_name = "LOCATION")]
    pub repo: Option<String>,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// Per-database time limit (90s, 30m, 2h): a database that takes longer is stopped (its
    /// queries cancelled, connections closed, pg_dump killed), marked failed, and the backup
    /// goes on with the next one (default: 2h)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_text)]
    pub timeout: Option<String>,
    /// Databases backed up at once (default: 1)
    #[arg(long, value_name = "M")]
    pub parallel_databases: Option<usize>,
    /// PATTERN=FORMAT: the format of the databases matching PATTERN (first match wins; the
    /// others get --format). Repeatable
    #[arg(long, value_name = "PATTERN=FORMAT")]
    pub database_format: Vec<String>,
    /// Back up only databases matching PATTERN (shell glob: * and ?). Repeatable
    #[arg(long, value_name = "PATTERN")]
    pub include_database: Vec<String>,
    /// Skip databases matching PATTERN (shell glob: * and ?). Repeatable
    #[arg(long, value_name = "PATTERN")]
    pub exclude_database: Vec<String>,
    #[command(flatten)]
    pub dump: DumpArgs,
    /// No progress output (the summary table is still printed)
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// `--metrics-file`, on the commands that write one.
#[derive(Args, Debug, Clone)]
pub struct MetricsArgs {
    /// After the run (success or failure) write Prometheus metrics to FILE (node_exporter's
    /// textfile collector), replaced atomically: with --repo from the whole repository,
    /// with --out from this backup alone. Metric names: see the README
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// The repository: a directory or s3://BUCKET/PREFIX
    #[arg(long, value_name = "LOCATION")]
    pub repo: String,
    /// Only databases matching PATTERN (shell glob: * and ?; `cluster` for cluster backups)
    #[arg(long, value_name = "PATTERN")]
    pub database: Option<String>,
    /// Print one JSON document (for scripts) instead of the table
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Args, Debug)]
pub struct ExpireArgs {
    /// The repository: a directory or s3://BUCKET/PREFIX
    #[arg(long, value_name = "LOCATION")]
    pub repo: String,
    /// Keep the N newest backups of each database
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest backup of each of the last N days (UTC) that have backups
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest backup of each of the last N ISO weeks that have backups
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest backup of each of the last N months that have backups
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep every backup newer than the database's newest backup minus DURATION (90m, 36h,
    /// 7d)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_text)]
    pub keep_within: Option<String>,
    /// Only databases matching PATTERN (shell glob: * and ?; `cluster` for cluster backups)
    #[arg(long, value_name = "PATTERN")]
    pub database: Option<String>,
    /// Print what would be deleted and why every other backup is kept; delete nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// What `expire` never deletes, shown by `expire --help`.
const EXPIRE_HELP: &str = "\
Per database (cluster backups count as the database `cluster`), complete backups are kept when
a --keep-* rule keeps them. Never deleted: the newest complete backup of a database, a backup in
progress (its lock held by a running dbbackup), a backup whose manifest cannot be read, and
anything at all when no --keep-* rule is given. Failed and interrupted backups older than the
newest complete one are deleted. A backup is deleted manifest-last after being marked
`deleting`; an interrupted expire is finished by the next one.";

/// A duration kept as the user wrote it (for messages such as "timeout after 2h"), checked.
pub fn parse_duration_text(s: &str) -> Result<String, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("duration {s:?} must be greater than zero"));
    }
    Ok(s.trim().to_string())
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
mod tests;
