//! How progress is shown: indicatif bars on a terminal, a plain line every few seconds
//! otherwise (logs, cron mail), nothing with --quiet.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use dbbackup::progress::{Progress, Silent};

/// Interval of the plain progress line.
const LINE_EVERY: Duration = Duration::from_secs(5);

pub fn reporter(quiet: bool) -> Arc<dyn Progress> {
    if quiet {
        Arc::new(Silent)
    } else if std::io::stderr().is_terminal() {
        Arc::new(Bars::new())
    } else {
        Arc::new(Lines::new())
    }
}

struct Bars {
    multi: MultiProgress,
    main: Mutex<Option<ProgressBar>>,
    workers: Mutex<BTreeMap<usize, ProgressBar>>,
}

impl Bars {
    fn new() -> Self {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            main: Mutex::new(None),
            workers: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Progress for Bars {
    fn start(&self, phase: &str, total_bytes: u64) {
        let bar = self.multi.add(ProgressBar::new(total_bytes.max(1)));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>8} [{elapsed_precise}] {wide_bar} {bytes}/~{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("valid template"),
        );
        bar.set_prefix(phase.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        *self.main.lock().unwrap() = Some(bar);
    }

    fn worker_busy(&self, worker: usize, what: &str) {
        let mut workers = self.workers.lock().unwrap();
        let bar = workers.entry(worker).or_insert_with(|| {
            let b = self.multi.add(ProgressBar::new_spinner());
            b.set_style(ProgressStyle::with_template("  worker {prefix}: {msg}").expect("valid"));
            b.set_prefix(worker.to_string());
            b
        });
        bar.set_message(what.to_string());
    }

    fn worker_idle(&self, worker: usize) {
        if let Some(b) = self.workers.lock().unwrap().get(&worker) {
            b.set_message("idle");
        }
    }

    fn add_bytes(&self, n: u64) {
        if let Some(b) = self.main.lock().unwrap().as_ref() {
            // The total is an estimate: grow it rather than overflow the bar.
            if b.position() + n > b.length().unwrap_or(0) {
                b.set_length(b.position() + n);
            }
            b.inc(n);
        }
    }

    fn note(&self, msg: &str) {
        let _ = self.multi.println(msg);
    }

    fn finish(&self) {
        for (_, b) in std::mem::take(&mut *self.workers.lock().unwrap()) {
            b.finish_and_clear();
        }
        if let Some(b) = self.main.lock().unwrap().take() {
            b.finish_and_clear();
        }
    }
}

struct Lines {
    phase: Mutex<(String, u64, Instant, Instant)>,
    bytes: AtomicU64,
    busy: Mutex<BTreeMap<usize, String>>,
}

impl Lines {
    fn new() -> Self {
        let now = Instant::now();
        Lines {
            phase: Mutex::new((String::new(), 0, now, now)),
            bytes: AtomicU64::new(0),
            busy: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Progress for Lines {
    fn start(&self, phase: &str, total_bytes: u64) {
        let now = Instant::now();
        *self.phase.lock().unwrap() = (phase.to_string(), total_bytes, now, now);
        self.bytes.store(0, Ordering::Relaxed);
    }

    fn worker_busy(&self, worker: usize, what: &str) {
        self.busy.lock().unwrap().insert(worker, what.to_string());
    }

    fn worker_idle(&self, worker: usize) {
        self.busy.lock().unwrap().remove(&worker);
    }

    fn add_bytes(&self, n: u64) {
        let done = self.bytes.fetch_add(n, Ordering::Relaxed) + n;
        let mut phase = self.phase.lock().unwrap();
        if phase.3.elapsed() < LINE_EVERY {
            return;
        }
        phase.3 = Instant::now();
        let secs = phase.2.elapsed().as_secs_f64().max(0.001);
        let busy: Vec<String> = self.busy.lock().unwrap().values().cloned().collect();
        let pct = if phase.1 > 0 {
            format!(
                " ({:.0}% of ~{})",
                100.0 * done as f64 / phase.1 as f64,
                human_bytes(phase.1)
            )
        } else {
            String::new()
        };
        eprintln!(
            "{}: {}{pct}, {}/s, busy: {}",
            phase.0,
            human_bytes(done),
            human_bytes((done as f64 / secs) as u64),
            if busy.is_empty() {
                "-".to_string()
            } else {
                busy.join(", ")
            }
        );
    }

    fn note(&self, msg: &str) {
        eprintln!("{msg}");
    }

    fn finish(&self) {}
}

pub use dbbackup::progress::human_bytes;
