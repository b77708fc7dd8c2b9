//! Progress reporting. The engine reports; the CLI decides how to show it (indicatif bars on a
//! terminal, plain lines otherwise, nothing with --quiet).

/// Receives progress events from any thread.
pub trait Progress: Send + Sync {
    /// A phase starts; `total_bytes` is the estimate to show rate and ETA against (0 = unknown).
    fn start(&self, phase: &str, total_bytes: u64);
    /// Worker `worker` is now busy with `what` (a table name, a chunk file).
    fn worker_busy(&self, worker: usize, what: &str);
    fn worker_idle(&self, worker: usize);
    /// `n` more bytes of data moved.
    fn add_bytes(&self, n: u64);
    /// A line worth telling the user (a retry, a decision, a warning).
    fn note(&self, msg: &str);
    /// The phase is over.
    fn finish(&self);
}

/// Reports nothing: `--quiet`, and tests.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: u64) {}
    fn worker_busy(&self, _: usize, _: &str) {}
    fn worker_idle(&self, _: usize) {}
    fn add_bytes(&self, _: u64) {}
    fn note(&self, _: &str) {}
    fn finish(&self) {}
}

/// 1536 → "1.5 KiB": sizes for people, in binary units.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
