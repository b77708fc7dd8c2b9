//! The pg_dump strategies' backup: `pg_dump -Fp` (plain) or `pg_dump -Fc -Z0` (custom) streamed
//! from a pipe through our multi-threaded compressor and cut into chunk files (the format is
//! [`crate::format::stream`]).
//!
//! pg_dump's stdout is a pipe read here in 256 KiB pieces, never a temp file and never held
//! whole. The bytes go into one compressed stream (zstd with worker threads, or gzp's
//! pigz-style parallel gzip, whose output is an ordinary gzip stream) written into a
//! [`RotatingChunkSink`].
//!
//! pg_dump runs in its own process group with the connection (and password) in its environment;
//! its stderr tail is kept; only a zero exit makes the stream a backup. Otherwise the manifest
//! says `failed` and the pieces are removed.

use std::ffi::OsString;
use std::io::{self, Read, Write};

use crate::storage::Store;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use gzp::deflate::Gzip;
use gzp::par::compress::{ParCompress, ParCompressBuilder};
use gzp::ZWriter;
use tokio_util::sync::CancellationToken;

use crate::backup::{prepare_out_dir, BackupOptions};
use crate::clock::now_rfc3339;
use crate::error::{Error, Result};
use crate::format::compress::{Codec, Encoder};
use crate::format::manifest::{
    Chunk, Manifest, OptionsRecord, Status, Strategy, StrategyKind, Totals, FORMAT_VERSION,
};
use crate::format::stream::{stream_prefix, RotatingChunkSink, IO_BUF, STREAM_DIR};
use crate::progress::Progress;

use super::budget;
use crate::memory::Wanted;
use crate::source::child::supervise;
use crate::source::child::Child;
use crate::source::conn::dbname_conninfo;
use crate::source::conn::ConnParams;
use crate::source::probe::Probe;

/// At most this many compression threads: each zstd worker holds a few MiB of buffers.
const MAX_THREADS: usize = 16;

/// What [`crate::backup::strategy`] decided and found, for [`backup_stream`].
pub struct StreamPlan<'a> {
    pub strategy: Strategy,
    pub probe: &'a Probe,
    pub probe_json: serde_json::Value,
    pub pg_dump_version: String,
}

fn compression_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, MAX_THREADS)
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
    threads: usize,
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
    let mut comp = StreamCompressor::new(codec, level, threads, sink)
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
    let mut format_args: Vec<OsString> = match kind {
        StrategyKind::Plain => vec!["--format=plain".into()],
        StrategyKind::Custom => vec!["--format=custom".into(), "--compress=0".into()],
        StrategyKind::Native => {
            return Err(Error::Refused(
                "backup_stream handles plain and custom only".into(),
            ))
        }
    };
    // The selection, as pg_dump's own switches (filter files expanded, `db.` parts checked
    // and dropped), so any pg_dump version takes what the probe took.
    // The selection as pg_dump's switches (with -t/-n, --blobs only when -b asked for it).
    let selection = &plan.probe.selection;
    format_args.extend(selection.pg_dump_args().into_iter().map(OsString::from));
    if !selection.has_includes() {
        // Large objects: included by default for a whole database; say so anyway.
        format_args.push("--blobs".into());
    }
    let budget = budget::stream(
        opts.memory_limit,
        opts.backups_at_once,
        Wanted {
            workers: compression_threads(),
            explicit: false,
            flag: "compressor threads",
        },
        opts.codec,
        opts.level,
        &opts.out,
    )?;
    progress.note(&budget.line());
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
        large_objects: crate::format::manifest::LargeObjects {
            count: plan.probe.large_object_count.max(0) as u64,
            // No large-object chunks: their data is inside the stream.
            bytes: 0,
            done: false,
            chunks: vec![],
            metadata: None,
        },
        stream: vec![],
        totals: Totals::default(),
        memory: None,
        retries: 0,
        filters: plan.probe.selection.filters().recorded(),
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
        budget.compressor_threads,
        &progress,
        &cancel,
    )
    .await;
    manifest.totals.duration_secs = started.elapsed().as_secs_f64();
    manifest.finished_at = Some(now_rfc3339());
    manifest.memory = Some(budget.record());
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
            let baseline = plan.probe.standby.as_ref().map(|s| s.conflicts);
            let e = crate::source::standby::conflict::classify(e, conn, dbname, baseline).await;
            manifest.recompute_totals();
            manifest.status = Status::Failed;
            manifest.error = Some(e.to_string());
            manifest.consistent = false;
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
    threads: usize,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<Vec<Chunk>> {
    args.extend([
        "--no-password".into(),
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
                child, &out, &prefix, codec, level, threads, chunk_size, &progress, &cancel,
            )
        })
    };
    let result = supervise(pid, handle, cancel).await;
    progress.worker_idle(0);
    progress.finish();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;

    use crate::format::stream::open_stream;
    use crate::verify::verify_stream;

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
