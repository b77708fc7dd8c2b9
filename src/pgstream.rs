//! The pg_dump strategies: `pg_dump -Fp` (plain) or `pg_dump -Fc -Z0` (custom) streamed from a
//! pipe through our multi-threaded compressor and cut into chunk files; and their restore and
//! verification.
//!
//! Backup: pg_dump's stdout is a pipe read here in 256 KiB pieces, never a temp file and never
//! held whole. The bytes go into one compressed stream (zstd with worker threads, or gzp's
//! pigz-style parallel gzip, whose output is an ordinary gzip stream) whose *stored* bytes are
//! cut into files of `--chunk-size` by [`RotatingChunkSink`]: each file written under a temp name,
//! fsynced, SHA-256'd and renamed (a [`ChunkWriter`] with [`Codec::None`] per piece). The pieces
//! are listed in order in `Manifest.stream`; each records the stream's codec, which applies to
//! their concatenation, not to a piece alone. A piece's `raw_bytes` is an apportionment (by
//! stored size); only their sum, the size of pg_dump's output, is exact.
//!
//! The pieces concatenated and decompressed are byte for byte pg_dump's output, so stock tools
//! restore them:
//!
//! ```text
//! cat DIR/stream/pg_dump.sql.zst.* | zstd -dc | psql -X -v ON_ERROR_STOP=1 -d TARGET
//! cat DIR/stream/pg_dump.dump.zst.* | zstd -dc | pg_restore -d TARGET
//! ```
//!
//! (`gzip -dc` for `.gz`, nothing for uncompressed backups.)
//!
//! pg_dump runs in its own process group with the connection (and password) in its environment;
//! its stderr tail is kept; only a zero exit makes the stream a backup. Otherwise the manifest
//! says `failed` and the pieces are removed.
//!
//! Restore streams the decompressed pieces, checking each piece's SHA-256 as it goes, into
//! `psql -v ON_ERROR_STOP=1 --single-transaction` (plain) or `pg_restore --single-transaction`
//! (custom, `--jobs 1`). A bad piece kills the child before its input ends, so its transaction
//! rolls back and nothing of the restore is committed. Custom with `--jobs N > 1` needs a
//! seekable file: the archive is decompressed (and so fully verified) into `--work-dir` first.

use std::ffi::OsString;
use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::storage::Store;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gzp::deflate::Gzip;
use gzp::par::compress::{ParCompress, ParCompressBuilder};
use gzp::ZWriter;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

use crate::backup::{prepare_out_dir, BackupOptions};
use crate::child::Child;
use crate::chunk::{ChunkReader, ChunkWriter};
use crate::compress::{Codec, Decoder, Encoder};
use crate::conn::ConnParams;
use crate::error::{Error, Result};
use crate::manifest::{
    now_rfc3339, Chunk, Manifest, OptionsRecord, Status, Strategy, StrategyKind, Totals,
    FORMAT_VERSION,
};
use crate::probe::Probe;
use crate::progress::Progress;
use crate::restore::{RestoreOptions, RestoreSummary};
use crate::strategy::human_bytes;

/// Directory of the stream pieces inside the backup directory.
pub const STREAM_DIR: &str = "stream";
/// Size of the reads from pg_dump's pipe and of the writes into psql/pg_restore.
const IO_BUF: usize = 256 * 1024;
/// Time a child gets between SIGTERM and SIGKILL when we are interrupted.
const GRACE: Duration = Duration::from_secs(5);
/// At most this many compression threads: each zstd worker holds a few MiB of buffers.
const MAX_THREADS: usize = 16;

/// What [`crate::strategy`] decided and found, for [`backup_stream`].
pub struct StreamPlan<'a> {
    pub strategy: Strategy,
    pub probe: &'a Probe,
    pub probe_json: serde_json::Value,
    pub pg_dump_version: String,
}

/// `stream/pg_dump.sql.zst` (plain) or `stream/pg_dump.dump.zst` (custom): the pieces are this
/// plus `.000001`, `.000002`, … so that a shell glob lists them in order.
pub fn stream_prefix(kind: StrategyKind, codec: Codec) -> String {
    let ext = match kind {
        StrategyKind::Custom => ".dump",
        _ => ".sql",
    };
    format!("{STREAM_DIR}/pg_dump{ext}{}", codec.extension())
}

/// The one-line shell recipe that restores a stream backup in `dir` with stock tools.
/// An encrypted backup's pieces are one age file each: decrypted one by one, in order.
pub fn stock_restore_recipe(
    dir: &Store,
    kind: StrategyKind,
    codec: Codec,
    encrypted: bool,
) -> String {
    let decompress = match codec {
        Codec::Zstd => " | zstd -dc",
        Codec::Gzip => " | gzip -dc",
        Codec::None => "",
    };
    let tool = match kind {
        StrategyKind::Custom => "pg_restore -d TARGET",
        _ => "psql -X -v ON_ERROR_STOP=1 -d TARGET",
    };
    let pieces = format!("{}/{}.*", dir.display(), stream_prefix(kind, codec));
    if encrypted {
        return format!(
            "for f in {pieces}; do age -d -i KEY_FILE \"$f\"; done{decompress} | {tool}"
        );
    }
    format!("cat {pieces}{decompress} | {tool}")
}

fn compression_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, MAX_THREADS)
}

/// libpq conninfo naming just the database (the rest comes from the environment).
fn dbname_conninfo(db: &str) -> String {
    format!("dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"))
}

// ---------------------------------------------------------------------------------------------
// Writing: the stored-byte chunking
// ---------------------------------------------------------------------------------------------

/// A `Write` of a compressed stream's stored bytes that cuts them into chunk files of
/// `chunk_size` bytes each (the last one shorter). Every finished file is fsynced and renamed
/// into place by its [`ChunkWriter`].
pub struct RotatingChunkSink {
    root: Store,
    prefix: String,
    codec: Codec,
    chunk_size: u64,
    current: Option<ChunkWriter>,
    current_stored: u64,
    /// Uncompressed bytes fed into the compressor (by the producer).
    fed: Arc<AtomicU64>,
    done: Vec<Chunk>,
}

impl RotatingChunkSink {
    /// Pieces go to `root/prefix.000001`, …; `codec` is the codec of the whole stream, recorded
    /// on every piece. `fed` counts the uncompressed bytes (for the pieces' `raw_bytes`).
    pub fn new(
        root: &Store,
        prefix: &str,
        codec: Codec,
        chunk_size: u64,
        fed: Arc<AtomicU64>,
    ) -> Self {
        RotatingChunkSink {
            root: root.clone(),
            prefix: prefix.to_string(),
            codec,
            chunk_size: chunk_size.max(1),
            current: None,
            current_stored: 0,
            fed,
            done: Vec::new(),
        }
    }

    fn start_piece(&mut self) -> Result<()> {
        let rel = format!("{}.{:06}", self.prefix, self.done.len() + 1);
        self.current = Some(ChunkWriter::create(&self.root, &rel, Codec::None, 0, 0)?);
        self.current_stored = 0;
        Ok(())
    }

    fn finish_piece(&mut self) -> Result<()> {
        let writer = self.current.take().expect("a piece is open");
        let mut chunk = writer.finish(0)?;
        chunk.codec = self.codec;
        self.done.push(chunk);
        Ok(())
    }

    /// Finishes the last piece and returns all of them in order (at least one). The
    /// uncompressed total is apportioned to the pieces by their stored size (compressors buffer,
    /// so which input ended up in which piece is not known); the sum is exact.
    pub fn finish(mut self) -> Result<Vec<Chunk>> {
        if self.current.is_none() && self.done.is_empty() {
            self.start_piece()?;
        }
        if self.current.is_some() {
            self.finish_piece()?;
        }
        let raw_total = self.fed.load(Ordering::Relaxed);
        let stored_total: u64 = self.done.iter().map(|c| c.stored_bytes).sum();
        let mut left = raw_total;
        let last = self.done.len() - 1;
        for (i, c) in self.done.iter_mut().enumerate() {
            c.raw_bytes = if i == last {
                left
            } else {
                let share = (raw_total as u128 * c.stored_bytes as u128
                    / stored_total.max(1) as u128) as u64;
                share.min(left)
            };
            left -= c.raw_bytes;
        }
        Ok(std::mem::take(&mut self.done))
    }

    fn to_io(e: Error) -> io::Error {
        io::Error::other(e.to_string())
    }
}

impl Write for RotatingChunkSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.current.is_none() {
            self.start_piece().map_err(Self::to_io)?;
        }
        let room = (self.chunk_size - self.current_stored) as usize;
        let n = room.min(buf.len());
        self.current
            .as_mut()
            .expect("open")
            .write(&buf[..n])
            .map_err(Self::to_io)?;
        self.current_stored += n as u64;
        if self.current_stored >= self.chunk_size {
            self.finish_piece().map_err(Self::to_io)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The compressor in front of the sink: zstd with worker threads, gzp's parallel gzip, or none.
enum StreamCompressor {
    Gzip(ParCompress<'static, Gzip, RotatingChunkSink>),
    Other(Box<Encoder<RotatingChunkSink>>),
}

impl StreamCompressor {
    fn new(codec: Codec, level: i32, threads: usize, sink: RotatingChunkSink) -> io::Result<Self> {
        Ok(match codec {
            Codec::Gzip => StreamCompressor::Gzip(
                ParCompressBuilder::<Gzip>::new()
                    .num_threads(threads.max(1))
                    .map_err(io::Error::other)?
                    .compression_level(gzp::Compression::new(level.clamp(0, 9) as u32))
                    .from_writer(sink),
            ),
            other => {
                StreamCompressor::Other(Box::new(Encoder::new(other, level, threads as u32, sink)?))
            }
        })
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            StreamCompressor::Gzip(p) => p.write_all(buf),
            StreamCompressor::Other(e) => e.write_all(buf),
        }
    }

    /// Gives up on the stream; the sink's open piece (a temp file) is deleted when dropped.
    fn abandon(self, write_failed: bool) {
        // After a failed write gzp has already shut its pipeline down (and finishing again
        // would panic); otherwise its pipeline must be finished, not dropped.
        if !write_failed {
            drop(self.finish());
        }
    }

    fn finish(self) -> io::Result<RotatingChunkSink> {
        match self {
            StreamCompressor::Gzip(mut p) => p.finish().map_err(|e| match e {
                gzp::GzpError::Io(e) => e,
                other => io::Error::other(other),
            }),
            StreamCompressor::Other(e) => (*e).finish(),
        }
    }
}

/// Reads pg_dump's stdout into the compressor until EOF, then asks pg_dump how it went. Only a
/// zero exit finishes the last piece; on any failure the pieces are removed.
#[allow(clippy::too_many_arguments)]
fn pump(
    mut child: Child,
    out: &Store,
    prefix: &str,
    codec: Codec,
    level: i32,
    chunk_size: u64,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<Vec<Chunk>> {
    let stream_dir = out.describe(STREAM_DIR);
    let remove_pieces = || {
        for (name, _) in out.list().unwrap_or_default() {
            if name.starts_with(&format!("{STREAM_DIR}/")) {
                let _ = out.delete(&name);
            }
        }
    };
    let mut stdout = child.stdout().expect("stdout is piped");
    let fed = Arc::new(AtomicU64::new(0));
    let sink = RotatingChunkSink::new(out, prefix, codec, chunk_size, fed.clone());
    let mut comp = StreamCompressor::new(codec, level, compression_threads(), sink)
        .map_err(|e| Error::io("starting the compressor for", &stream_dir, e))?;
    let mut buf = vec![0u8; IO_BUF];
    let mut write_failed = false;
    let read_result: Result<()> = loop {
        if cancel.is_cancelled() {
            break Err(Error::Interrupted);
        }
        let n = match stdout.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(Error::io("reading pg_dump's output for", &stream_dir, e)),
        };
        fed.fetch_add(n as u64, Ordering::Relaxed);
        if let Err(e) = comp.write_all(&buf[..n]) {
            write_failed = true;
            break Err(Error::io("storing pg_dump's output in", &stream_dir, e));
        }
        progress.add_bytes(n as u64);
    };
    drop(stdout);
    if let Err(e) = read_result {
        child.terminate();
        comp.abandon(write_failed);
        remove_pieces();
        return Err(e);
    }
    // pg_dump's verdict first: a non-zero exit or a signal means the stream is short.
    if let Err(e) = child.wait() {
        comp.abandon(false);
        remove_pieces();
        return Err(e);
    }
    let finished = comp
        .finish()
        .map_err(|e| Error::io("storing pg_dump's output in", &stream_dir, e))
        .and_then(|sink| sink.finish());
    if finished.is_err() {
        remove_pieces();
    }
    finished
}

/// Backs up `dbname` with pg_dump in the plan's format (plain or custom), streamed and
/// compressed into chunk files under `opts.out`. On failure the manifest says `failed`.
pub async fn backup_stream(
    conn: &ConnParams,
    dbname: &str,
    opts: &BackupOptions,
    plan: StreamPlan<'_>,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
) -> Result<Manifest> {
    let kind = plan.strategy.kind;
    let format_args: Vec<OsString> = match kind {
        StrategyKind::Plain => vec!["--format=plain".into()],
        StrategyKind::Custom => vec!["--format=custom".into(), "--compress=0".into()],
        StrategyKind::Native => {
            return Err(Error::Refused(
                "backup_stream handles plain and custom only".into(),
            ))
        }
    };
    let _lock = prepare_out_dir(&opts.out)?;
    let started = Instant::now();
    let mut database = plan.probe.database.clone();
    database.name = dbname.to_string();
    let mut manifest = Manifest {
        format_version: FORMAT_VERSION,
        tool: format!("dbbackup {}", env!("CARGO_PKG_VERSION")),
        status: Status::InProgress,
        error: None,
        started_at: now_rfc3339(),
        finished_at: None,
        server_version: plan.probe.server_version.clone(),
        server_version_num: plan.probe.server_version_num,
        pg_dump_version: plan.pg_dump_version.clone(),
        database,
        // pg_dump reads everything in one snapshot: its own, or the one given.
        snapshot: opts.snapshot.clone(),
        consistent: true,
        options: OptionsRecord {
            codec: opts.codec,
            level: opts.level,
            chunk_size: opts.chunk_size,
            split_tables_larger_than: 0,
            parallel_tables: 1,
            copy_format: format!("pg_dump {}", kind.as_str()),
            recipients: opts.out.sealing().recipients().to_vec(),
        },
        strategy: plan.strategy,
        probe: plan.probe_json,
        schema: vec![],
        tables: vec![],
        sequences: vec![],
        large_objects: crate::manifest::LargeObjects {
            count: plan.probe.large_object_count.max(0) as u64,
            // No large-object chunks: their data is inside the stream.
            bytes: 0,
            done: false,
            chunks: vec![],
            metadata: None,
        },
        stream: vec![],
        totals: Totals::default(),
    };
    manifest.store(&opts.out)?;
    opts.out.create_dir(STREAM_DIR)?;

    let estimate = plan.probe.database_size.max(0) as u64;
    let outcome = run_pg_dump(
        conn,
        dbname,
        opts,
        kind,
        format_args,
        estimate,
        &progress,
        &cancel,
    )
    .await;
    manifest.totals.duration_secs = started.elapsed().as_secs_f64();
    manifest.finished_at = Some(now_rfc3339());
    match outcome {
        Ok(chunks) => {
            manifest.stream = chunks;
            manifest.large_objects.done = true;
            manifest.recompute_totals();
            manifest.status = Status::Complete;
            manifest.store(&opts.out)?;
            Ok(manifest)
        }
        Err(e) => {
            manifest.recompute_totals();
            manifest.status = Status::Failed;
            manifest.error = Some(e.to_string());
            manifest.store(&opts.out)?;
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_pg_dump(
    conn: &ConnParams,
    dbname: &str,
    opts: &BackupOptions,
    kind: StrategyKind,
    mut args: Vec<OsString>,
    estimate: u64,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<Vec<Chunk>> {
    args.extend([
        "--no-password".into(),
        // Large objects: included by default for a whole database; say so anyway.
        "--blobs".into(),
        format!("--dbname={}", dbname_conninfo(dbname)).into(),
    ]);
    args.push(
        format!(
            "--lock-wait-timeout={}ms",
            opts.lock_timeout.as_millis().max(1)
        )
        .into(),
    );
    if let Some(snapshot) = &opts.snapshot {
        args.push(format!("--snapshot={snapshot}").into());
    }
    let child = Child::spawn(
        "pg_dump",
        &args,
        &conn.child_env(dbname),
        Stdio::null(),
        Stdio::piped(),
    )?;
    let pid = child.id();
    progress.start("backup", estimate);
    progress.worker_busy(0, &format!("pg_dump ({})", kind.as_str()));
    let handle = {
        let out = opts.out.clone();
        let prefix = stream_prefix(kind, opts.codec);
        let (codec, level, chunk_size) = (opts.codec, opts.level, opts.chunk_size);
        let progress = progress.clone();
        let cancel = cancel.clone();
        tokio::task::spawn_blocking(move || {
            pump(
                child, &out, &prefix, codec, level, chunk_size, &progress, &cancel,
            )
        })
    };
    let result = supervise(pid, handle, cancel).await;
    progress.worker_idle(0);
    progress.finish();
    result
}

/// Awaits a blocking task that owns child `pid`; on cancellation sends the child's process
/// group SIGTERM (SIGKILL after a grace period), lets the task wind down, and reports
/// [`Error::Interrupted`].
async fn supervise<T: Send + 'static>(
    pid: u32,
    handle: tokio::task::JoinHandle<Result<T>>,
    cancel: &CancellationToken,
) -> Result<T> {
    tokio::pin!(handle);
    tokio::select! {
        r = &mut handle => r.unwrap_or_else(|e| Err(Error::Refused(format!("worker thread failed: {e}")))),
        _ = cancel.cancelled() => {
            let group = Pid::from_raw(pid as i32);
            if !handle.is_finished() {
                let _ = killpg(group, Signal::SIGTERM);
            }
            if tokio::time::timeout(GRACE, &mut handle).await.is_err() {
                let _ = killpg(group, Signal::SIGKILL);
                let _ = handle.await;
            }
            Err(Error::Interrupted)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading: the pieces in order, each checked, as one stream
// ---------------------------------------------------------------------------------------------

/// The stored bytes of the pieces, concatenated in order. Each piece's size and SHA-256 are
/// checked when it has been read to its end; a mismatch is an error naming the file.
pub struct StreamReader {
    root: Store,
    pieces: Vec<Chunk>,
    next: usize,
    current: Option<ChunkReader>,
    current_file: Option<PathBuf>,
    /// The typed error behind the last `io::Error` returned.
    failure: Option<Error>,
}

impl StreamReader {
    pub fn new(root: &Store, pieces: &[Chunk]) -> Self {
        StreamReader {
            root: root.clone(),
            pieces: pieces.to_vec(),
            next: 0,
            current: None,
            current_file: None,
            failure: None,
        }
    }

    /// The piece being read (or last read).
    pub fn current_file(&self) -> PathBuf {
        self.current_file
            .clone()
            .or_else(|| self.pieces.first().map(|c| self.root.describe(&c.file)))
            .unwrap_or_else(|| self.root.describe(""))
    }

    fn fail(&mut self, e: Error) -> io::Error {
        let io = io::Error::other(e.to_string());
        self.failure = Some(e);
        io
    }
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.current.is_none() {
                if self.next == self.pieces.len() {
                    return Ok(0);
                }
                // Each piece alone is stored bytes: open it without a codec.
                let mut piece = self.pieces[self.next].clone();
                piece.codec = Codec::None;
                self.next += 1;
                self.current_file = Some(self.root.describe(&piece.file));
                match ChunkReader::open(&self.root, &piece) {
                    Ok(r) => self.current = Some(r),
                    Err(e) => return Err(self.fail(e)),
                }
            }
            let reader = self.current.as_mut().expect("open");
            let n = match reader.read(buf) {
                Ok(n) => n,
                Err(e) => {
                    let path = reader.path().to_path_buf();
                    return Err(self.fail(Error::io("reading", path, e)));
                }
            };
            if n > 0 {
                return Ok(n);
            }
            let reader = self.current.take().expect("open");
            if let Err(e) = reader.finish() {
                return Err(self.fail(e));
            }
        }
    }
}

type StreamDecoder = Decoder<BufReader<StreamReader>>;

/// The decompressed stream of `m`'s pieces.
fn open_stream(dir: &Store, m: &Manifest) -> Result<StreamDecoder> {
    let codec = m.stream.first().map_or(Codec::None, |c| c.codec);
    if m.stream.iter().any(|c| c.codec != codec) {
        return Err(Error::manifest(
            dir.describe(crate::manifest::MANIFEST_FILE),
            "the stream's pieces disagree about the codec",
        ));
    }
    Decoder::new(codec, StreamReader::new(dir, &m.stream))
        .map_err(|e| Error::io("opening the stream in", dir.describe(""), e))
}

/// Turns a read error of the decoder into the typed error naming the piece.
fn stream_error(dec: &mut StreamDecoder, e: io::Error) -> Error {
    let reader = dec.get_mut().get_mut();
    if let Some(typed) = reader.failure.take() {
        return typed;
    }
    Error::corrupt(
        reader.current_file(),
        format!("decompressing the stream (at or before this piece): {e}"),
    )
}

/// After the decoder's end: reads whatever stored bytes remain (checking the last pieces'
/// checksums) and compares the decompressed size with the manifest's.
fn finish_stream(dec: &mut StreamDecoder, m: &Manifest, dir: &Store, raw: u64) -> Result<()> {
    if let Err(e) = io::copy(dec.get_mut(), &mut io::sink()) {
        return Err(stream_error(dec, e));
    }
    let expected: u64 = m.stream.iter().map(|c| c.raw_bytes).sum();
    if raw != expected {
        let last = m
            .stream
            .last()
            .map_or(dir.describe(""), |c| dir.describe(&c.file));
        return Err(Error::corrupt(
            last,
            format!("the stream decompressed to {raw} bytes, the manifest says {expected}"),
        ));
    }
    Ok(())
}

/// Cheap checks before anything is started: every piece exists with the size the manifest says.
fn check_pieces(dir: &Store, m: &Manifest) -> Result<()> {
    ChunkReader::check_readable(dir, &m.stream)?;
    if m.stream.is_empty() {
        return Err(Error::manifest(
            dir.describe(crate::manifest::MANIFEST_FILE),
            format!("a {} backup without stream files", m.strategy.kind.as_str()),
        ));
    }
    let sizes: std::collections::HashMap<String, u64> = dir.list()?.into_iter().collect();
    for c in &m.stream {
        let path = dir.describe(&c.file);
        let Some(&len) = sizes.get(&c.file) else {
            return Err(Error::corrupt(&path, "chunk file is missing"));
        };
        if len != c.stored_bytes {
            return Err(Error::corrupt(
                &path,
                format!(
                    "size is {len} bytes, the manifest says {} (truncated or replaced)",
                    c.stored_bytes
                ),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Verify
// ---------------------------------------------------------------------------------------------

/// Verifies a plain/custom backup's stream: every piece's size and SHA-256, decompression of
/// the whole, its size, and for custom format that `pg_restore --list` reads the archive.
/// Returns the decompressed size.
pub fn verify_stream(dir: &Store, m: &Manifest) -> Result<u64> {
    let mut dec = open_stream(dir, m)?;
    let mut lister = match m.strategy.kind {
        StrategyKind::Custom => Some(Child::spawn(
            "pg_restore",
            &["--list".into()],
            &[],
            Stdio::piped(),
            Stdio::null(),
        )?),
        _ => None,
    };
    let mut stdin = lister.as_mut().and_then(|c| c.stdin());
    let mut buf = vec![0u8; IO_BUF];
    let mut raw = 0u64;
    loop {
        let n = match dec.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(stream_error(&mut dec, e)),
        };
        raw += n as u64;
        if let Some(w) = stdin.as_mut() {
            // pg_restore --list stops reading after the table of contents.
            if w.write_all(&buf[..n]).is_err() {
                stdin = None;
            }
        }
    }
    finish_stream(&mut dec, m, dir, raw)?;
    drop(stdin);
    if let Some(child) = lister {
        child.wait().map_err(|e| {
            Error::corrupt(
                dir.describe(&m.stream[0].file),
                format!("pg_restore --list cannot read the custom-format archive: {e}"),
            )
        })?;
    }
    Ok(raw)
}

// ---------------------------------------------------------------------------------------------
// Restore
// ---------------------------------------------------------------------------------------------

/// `restore --clean` of a custom archive into an existing database, the way the native restore
/// does it: `pg_restore --clean` over the whole archive trips over objects it drops in the
/// wrong order (foreign keys between the archive's tables, partitions' inherited constraints).
/// So: drop the foreign keys touching the archive's tables, clean and recreate the pre-data
/// section in one transaction, then load data and post-data.
async fn clean_restore_sections(
    conn: &ConnParams,
    opts: &RestoreOptions,
    file: &Path,
    cancel: &CancellationToken,
) -> Result<()> {
    let env = conn.child_env(&opts.target);
    let target = dbname_conninfo(&opts.target);
    let session = conn.connect(&opts.target).await?;
    let listing = std::process::Command::new(crate::child::pg_program("pg_restore"))
        .arg("--list")
        .arg(file)
        .output()
        .map_err(|e| Error::io("running pg_restore --list on", file, e))?;
    let toc = String::from_utf8_lossy(&listing.stdout);
    // TOC lines read `ID; OID OID TABLE schema name owner`, names unquoted: match them against
    // the target's tables instead of splitting on spaces.
    let existing: Vec<(String, String, String)> = session
        .client
        .query(
            "SELECT n.nspname, c.relname, pg_get_userbyid(c.relowner)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p')",
            &[],
        )
        .await
        .map_err(|e| Error::query("listing the target's tables (--clean)", e))?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let in_archive: Vec<(String, String)> = existing
        .into_iter()
        .filter(|(schema, name, owner)| {
            let entry = format!(" TABLE {schema} {name} {owner}");
            toc.lines().any(|l| l.ends_with(&entry))
        })
        .map(|(schema, name, _)| (schema, name))
        .collect();
    crate::restore::drop_foreign_keys(&session.client, &in_archive).await?;
    drop(session);
    let passes: [Vec<OsString>; 3] = [
        vec![
            "--section=pre-data".into(),
            "--clean".into(),
            "--if-exists".into(),
            "--single-transaction".into(),
        ],
        vec![
            "--section=data".into(),
            format!("--jobs={}", opts.jobs.max(1)).into(),
        ],
        vec![
            "--section=post-data".into(),
            format!("--jobs={}", opts.jobs.max(1)).into(),
        ],
    ];
    for mut args in passes {
        args.extend([
            "--exit-on-error".into(),
            "--no-password".into(),
            format!("--dbname={target}").into(),
            file.as_os_str().to_os_string(),
        ]);
        let child = crate::pgrestore::spawn(args, &env, Stdio::null())?;
        let pid = child.id();
        let handle = tokio::task::spawn_blocking(move || child.wait());
        supervise(pid, handle, cancel).await?;
    }
    Ok(())
}

/// Restores a plain or custom backup (see the module documentation).
pub async fn restore_stream(
    conn: &ConnParams,
    opts: &RestoreOptions,
    manifest: &Manifest,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
) -> Result<RestoreSummary> {
    let kind = manifest.strategy.kind;
    if kind == StrategyKind::Plain && opts.clean && !opts.create {
        return Err(Error::Refused(
            "a plain backup carries no DROP statements, so --clean needs --create (drop and recreate the whole database)".into(),
        ));
    }
    check_pieces(&opts.dir, manifest)?;
    crate::pgtools::choose_for_restore_into(
        conn,
        manifest.server_version_num,
        crate::child::version_num(&manifest.pg_dump_version),
        progress.as_ref(),
    )
    .await?;
    let raw_total: u64 = manifest.stream.iter().map(|c| c.raw_bytes).sum();

    // pg_restore --jobs needs a seekable file: decompress (and so verify) it before anything
    // touches the target.
    let mut temp: Option<TempFile> = None;
    // --clean into an existing database must be all or nothing: pg_restore's DROPs can fail
    // (e.g. on partitions' inherited constraints), and only the single-transaction stream
    // rolls them back.
    let clean_existing = opts.clean && !opts.create;
    // --clean into an existing database runs pg_restore section by section (as the native
    // restore does), which needs the archive as a file.
    if kind == StrategyKind::Custom && (opts.jobs > 1 || clean_existing) {
        let work_dir = match &opts.work_dir {
            Some(d) => d.clone(),
            None => default_work_dir(&opts.dir),
        };
        check_free_space(&work_dir, raw_total)?;
        let path = work_dir.join(format!(".dbbackup-restore-{}.dump", std::process::id()));
        let t = TempFile(path.clone());
        progress.start("decompress", raw_total);
        let handle = {
            let (dir, m, progress, cancel) = (
                opts.dir.clone(),
                manifest.clone(),
                progress.clone(),
                cancel.clone(),
            );
            tokio::task::spawn_blocking(move || decompress_to(&dir, &m, &path, &progress, &cancel))
        };
        let r = handle
            .await
            .unwrap_or_else(|e| Err(Error::Refused(format!("decompression thread failed: {e}"))));
        progress.finish();
        r?;
        temp = Some(t);
    }

    crate::restore::prepare_target(conn, opts, &manifest.database, progress.as_ref()).await?;
    let target = dbname_conninfo(&opts.target);
    let env = conn.child_env(&opts.target);
    progress.start("restore", raw_total);
    let result = match (kind, &temp) {
        (StrategyKind::Custom, Some(file)) if clean_existing => {
            clean_restore_sections(conn, opts, &file.0, &cancel).await
        }
        (StrategyKind::Custom, Some(file)) => {
            let mut args: Vec<OsString> = vec![
                "--exit-on-error".into(),
                format!("--jobs={}", opts.jobs).into(),
                "--no-password".into(),
                format!("--dbname={target}").into(),
            ];
            args.push(file.0.clone().into_os_string());
            progress.worker_busy(0, "pg_restore");
            let child = crate::pgrestore::spawn(args, &env, Stdio::null())?;
            let pid = child.id();
            let handle = tokio::task::spawn_blocking(move || child.wait());
            supervise(pid, handle, &cancel).await
        }
        _ => {
            let (program, mut args): (&str, Vec<OsString>) = match kind {
                StrategyKind::Plain => (
                    "psql",
                    vec![
                        "-X".into(),
                        "-q".into(),
                        "-v".into(),
                        "ON_ERROR_STOP=1".into(),
                        "--single-transaction".into(),
                        "--no-password".into(),
                        "-f".into(),
                        "-".into(),
                    ],
                ),
                _ => (
                    "pg_restore",
                    vec![
                        "--exit-on-error".into(),
                        "--single-transaction".into(),
                        "--no-password".into(),
                    ],
                ),
            };
            args.push(format!("--dbname={target}").into());
            progress.worker_busy(0, program);
            let child = if program == "pg_restore" {
                crate::pgrestore::spawn(args, &env, Stdio::piped())?
            } else {
                Child::spawn(program, &args, &env, Stdio::piped(), Stdio::null())?
            };
            let pid = child.id();
            let handle = {
                let (dir, m, progress, cancel) = (
                    opts.dir.clone(),
                    manifest.clone(),
                    progress.clone(),
                    cancel.clone(),
                );
                tokio::task::spawn_blocking(move || feed(child, &dir, &m, &progress, &cancel))
            };
            supervise(pid, handle, &cancel).await
        }
    };
    progress.worker_idle(0);
    progress.finish();
    drop(temp);
    result?;

    let session = conn.connect(&opts.target).await?;
    session
        .client
        .batch_execute("ANALYZE")
        .await
        .map_err(|e| Error::query(format!("analyzing database {}", opts.target), e))?;
    drop(session);
    if opts.create {
        crate::dbprops::apply_database_properties(conn, &opts.target, &manifest.database).await?;
    }
    Ok(RestoreSummary {
        tables: manifest
            .probe
            .get("tables")
            .and_then(|v| v.as_u64())
            .unwrap_or(0),
        rows: 0,
        chunks: manifest.stream.len() as u64,
        raw_bytes: raw_total,
        warnings: vec![],
        ..RestoreSummary::default()
    })
}

/// Streams the decompressed backup into `child`'s stdin. Every piece's checksum is checked
/// before the child sees the end of its input; on any problem the child is killed first (so a
/// single-transaction restore rolls back), then the error is returned.
fn feed(
    mut child: Child,
    dir: &Store,
    m: &Manifest,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<()> {
    // A plain script from newer tools may set parameters the target lacks (see pgrestore).
    let mut stdin = crate::pgrestore::SettingsFilter::new(
        child.stdin().expect("stdin is piped"),
        crate::pgrestore::settings_to_leave_out(),
    );
    let mut dec = match open_stream(dir, m) {
        Ok(d) => d,
        Err(e) => {
            child.terminate();
            return Err(e);
        }
    };
    let mut buf = vec![0u8; IO_BUF];
    let mut raw = 0u64;
    loop {
        if cancel.is_cancelled() {
            child.terminate();
            return Err(Error::Interrupted);
        }
        let n = match dec.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                child.terminate();
                return Err(stream_error(&mut dec, e));
            }
        };
        raw += n as u64;
        if let Err(e) = stdin.write_all(&buf[..n]) {
            drop(stdin);
            // The child stopped reading: its exit status and stderr say why.
            child.wait()?;
            return Err(Error::Refused(format!(
                "the restore program stopped reading its input before the end ({e})"
            )));
        }
        progress.add_bytes(n as u64);
    }
    if let Err(e) = finish_stream(&mut dec, m, dir, raw) {
        child.terminate();
        return Err(e);
    }
    // Only now may the child see the end of its input (and commit).
    if let Err(e) = stdin.flush() {
        drop(stdin);
        child.wait()?;
        return Err(Error::Refused(format!(
            "the restore program stopped reading its input before the end ({e})"
        )));
    }
    drop(stdin);
    child.wait()
}

/// A file removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Beside the backup: the directory that holds the backup directory; for a backup in an
/// object store, the system's temporary directory.
fn default_work_dir(backup: &Store) -> PathBuf {
    let Some(dir) = backup.local_dir() else {
        return std::env::temp_dir();
    };
    let abs = fs::canonicalize(&dir).unwrap_or(dir);
    abs.parent().map_or(abs.clone(), Path::to_path_buf)
}

/// Refuses to start when `dir` has less than `need` bytes free (plus a small margin).
fn check_free_space(dir: &Path, need: u64) -> Result<()> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(|e| {
        Error::io(
            "checking free space in --work-dir",
            dir,
            io::Error::from_raw_os_error(e as i32),
        )
    })?;
    let free = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
    let margin = 16u64 << 20;
    if free < need.saturating_add(margin) {
        return Err(Error::Refused(format!(
            "--work-dir {}: pg_restore --jobs needs the decompressed archive as a seekable file there: {} needed ({} bytes), only {} free; choose another --work-dir, or use --jobs 1 to stream into pg_restore",
            dir.display(),
            human_bytes(need.saturating_add(margin)),
            need,
            human_bytes(free)
        )));
    }
    Ok(())
}

/// Decompresses (and so verifies) the stream into `path` (created 0600, new).
fn decompress_to(
    dir: &Store,
    m: &Manifest,
    path: &Path,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<()> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io("creating the temporary archive", path, e))?;
    let guard = TempFile(path.to_path_buf());
    let mut out = io::BufWriter::with_capacity(IO_BUF, file);
    let mut dec = open_stream(dir, m)?;
    let mut buf = vec![0u8; IO_BUF];
    let mut raw = 0u64;
    loop {
        if cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        let n = match dec.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(stream_error(&mut dec, e)),
        };
        raw += n as u64;
        out.write_all(&buf[..n])
            .map_err(|e| Error::io("writing the temporary archive", path, e))?;
        progress.add_bytes(n as u64);
    }
    finish_stream(&mut dec, m, dir, raw)?;
    out.flush()
        .map_err(|e| Error::io("writing the temporary archive", path, e))?;
    std::mem::forget(guard);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_stream(dir: &Path, codec: Codec, data: &[u8], chunk_size: u64) -> Vec<Chunk> {
        fs::create_dir_all(dir.join(STREAM_DIR)).unwrap();
        let fed = Arc::new(AtomicU64::new(0));
        let prefix = stream_prefix(StrategyKind::Plain, codec);
        let sink =
            RotatingChunkSink::new(&Store::local(dir), &prefix, codec, chunk_size, fed.clone());
        let mut comp = StreamCompressor::new(codec, codec.default_level(), 2, sink).unwrap();
        for piece in data.chunks(1000) {
            fed.fetch_add(piece.len() as u64, Ordering::Relaxed);
            comp.write_all(piece).unwrap();
        }
        comp.finish().unwrap().finish().unwrap()
    }

    fn manifest_with(stream: Vec<Chunk>) -> Manifest {
        let json = serde_json::json!({
            "format_version": 1, "tool": "t", "status": "complete", "started_at": "x",
            "server_version": "15", "server_version_num": 150000, "pg_dump_version": "15",
            "database": {"name": "d", "encoding": "UTF8", "collate": "C", "ctype": "C",
                         "locale_provider": "c", "owner": "o", "connection_limit": -1,
                         "grants": [], "settings": []},
            "consistent": true,
            "options": {"codec": "zstd", "level": 3, "chunk_size": 1, "split_tables_larger_than": 0,
                        "parallel_tables": 1, "copy_format": "x"},
            "strategy": {"kind": "plain", "reason": "test"},
            "totals": {"tables": 0, "rows": 0, "chunks": 0, "raw_bytes": 0, "stored_bytes": 0,
                       "duration_secs": 0.0},
        });
        let mut m: Manifest = serde_json::from_value(json).unwrap();
        m.stream = stream;
        m
    }

    fn sample() -> Vec<u8> {
        let mut v = Vec::new();
        let mut x: u32 = 1;
        for i in 0..200_000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            v.extend_from_slice(format!("row {i} {}\n", x >> 16).as_bytes());
        }
        v
    }

    #[test]
    fn round_trip_every_codec_and_rotation() {
        let data = sample();
        for codec in [Codec::Zstd, Codec::Gzip, Codec::None] {
            let tmp = tempfile::tempdir().unwrap();
            let chunks = write_stream(tmp.path(), codec, &data, 64 * 1024);
            assert!(chunks.len() > 1, "{codec:?}: {} pieces", chunks.len());
            for c in &chunks[..chunks.len() - 1] {
                assert_eq!(c.stored_bytes, 64 * 1024);
            }
            assert_eq!(
                chunks.iter().map(|c| c.raw_bytes).sum::<u64>(),
                data.len() as u64
            );
            let m = manifest_with(chunks);
            let mut dec = open_stream(&Store::local(tmp.path()), &m).unwrap();
            let mut back = Vec::new();
            dec.read_to_end(&mut back).unwrap();
            assert!(back == data, "{codec:?}: payload differs");
            assert_eq!(
                verify_stream(&Store::local(tmp.path()), &m).unwrap(),
                data.len() as u64
            );
        }
    }

    #[test]
    fn gzip_stream_is_ordinary_gzip() {
        let data = sample();
        let tmp = tempfile::tempdir().unwrap();
        let chunks = write_stream(tmp.path(), Codec::Gzip, &data, 1 << 30);
        assert_eq!(chunks.len(), 1);
        let bytes = fs::read(tmp.path().join(&chunks[0].file)).unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == data);
    }

    #[test]
    fn corrupt_piece_is_named() {
        let data = sample();
        let tmp = tempfile::tempdir().unwrap();
        let chunks = write_stream(tmp.path(), Codec::Zstd, &data, 64 * 1024);
        let victim = tmp.path().join(&chunks[1].file);
        let mut bytes = fs::read(&victim).unwrap();
        bytes[100] ^= 0xff;
        fs::write(&victim, bytes).unwrap();
        let m = manifest_with(chunks);
        let err = verify_stream(&Store::local(tmp.path()), &m)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&*victim.to_string_lossy()), "{err}");
    }
}
