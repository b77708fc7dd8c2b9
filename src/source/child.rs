//! Child programs (pg_dump, pg_restore, psql): spawned in their own process group with the
//! connection in their environment (never on the command line), stderr collected concurrently
//! into a bounded tail, and the whole group terminated if we give up on them.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::source::first_error::FirstError;

/// Lines of stderr kept for the error message.
const STDERR_TAIL_LINES: usize = 20;
/// Bytes of one stderr line kept (a child may echo a huge statement on one line).
const STDERR_LINE_BYTES: usize = 16 * 1024;
/// Time a child gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// Where PostgreSQL client program `name` is run from ([`crate::source::pgtools::program`]).
pub fn pg_program(name: &str) -> PathBuf {
    crate::source::pgtools::program(name)
}

/// Process groups of the children alive right now, so that an interrupted run can take them
/// down with it even while a thread is blocked reading one of them.
static LIVE_GROUPS: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// SIGTERM to every live child group, SIGKILL after the grace period. For Ctrl-C / SIGTERM.
pub fn terminate_all() {
    let groups: Vec<i32> = LIVE_GROUPS.lock().unwrap().clone();
    if groups.is_empty() {
        return;
    }
    for g in &groups {
        let _ = killpg(Pid::from_raw(*g), Signal::SIGTERM);
    }
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline && !LIVE_GROUPS.lock().unwrap().is_empty() {
        thread::sleep(Duration::from_millis(50));
    }
    for g in LIVE_GROUPS.lock().unwrap().iter() {
        let _ = killpg(Pid::from_raw(*g), Signal::SIGKILL);
    }
}

fn unregister(pid: u32) {
    LIVE_GROUPS.lock().unwrap().retain(|g| *g != pid as i32);
}

/// A running child program.
pub struct Child {
    inner: std::process::Child,
    program: String,
    tail: Arc<Mutex<VecDeque<String>>>,
    /// The first error the child reported, with its statement ([`FirstError`]).
    first_error: Arc<Mutex<FirstError>>,
    stderr_reader: Option<thread::JoinHandle<()>>,
    reaped: bool,
    /// A program that reads this one's stdout through a filter ([`Child::pipe_into`]).
    downstream: Option<Downstream>,
}

struct Downstream {
    child: Box<Child>,
    /// Copies (filtered) stdout into the downstream's stdin; hands that stdin back at the end
    /// instead of closing it, so that the end of input is only signalled once this child is
    /// known to have succeeded (a script cut short must not be committed).
    pump: thread::JoinHandle<std::io::Result<std::process::ChildStdin>>,
}

/// A filter between two children: reads one's output, writes the other's input.
pub type Filter =
    Box<dyn FnOnce(&mut dyn BufRead, &mut dyn std::io::Write) -> std::io::Result<()> + Send>;

impl Child {
    /// Spawns `program args` with `env` added, in a new process group. stdout/stdin as given;
    /// stderr is always captured.
    pub fn spawn(
        program: &str,
        args: &[OsString],
        env: &[(String, String)],
        stdin: Stdio,
        stdout: Stdio,
    ) -> Result<Child> {
        Self::spawn_keeping(program, args, env, stdin, stdout, STDERR_TAIL_LINES)
    }

    /// [`Child::spawn`], keeping the last `stderr_lines` lines of stderr instead of the usual
    /// tail (for callers that parse every line, e.g. psql's errors during a globals restore).
    pub fn spawn_keeping(
        program: &str,
        args: &[OsString],
        env: &[(String, String)],
        stdin: Stdio,
        stdout: Stdio,
        stderr_lines: usize,
    ) -> Result<Child> {
        let path = pg_program(program);
        let mut cmd = Command::new(&path);
        // Object-store secrets are dbbackup's alone: no child needs them.
        for secret in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
            cmd.env_remove(secret);
        }
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .process_group(0);
        // If dbbackup dies without cleaning up (kill -9, OOM killer), its children must not
        // go on writing into a database or a backup that nobody watches any more.
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut inner = cmd.spawn().map_err(|e| Error::Child {
            program: program.to_string(),
            status: "could not start".to_string(),
            stderr: format!("{}: {e}", path.display()),
        })?;
        LIVE_GROUPS.lock().unwrap().push(inner.id() as i32);
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let first_error = Arc::new(Mutex::new(FirstError::new(program)));
        let stderr = inner.stderr.take().expect("piped");
        let (tail2, first2) = (tail.clone(), first_error.clone());
        let stderr_reader = thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut buf = Vec::new();
            // Read to the end whatever comes: a child blocked on a full stderr pipe would hang.
            while let Ok(Some(full_len)) = read_bounded_line(&mut reader, &mut buf) {
                let line = String::from_utf8_lossy(&buf).into_owned();
                first2.lock().unwrap().push(&line, full_len);
                let mut t = tail2.lock().unwrap();
                if t.len() >= stderr_lines.max(1) {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
        Ok(Child {
            inner,
            program: program.to_string(),
            tail,
            first_error,
            stderr_reader: Some(stderr_reader),
            reaped: false,
            downstream: None,
        })
    }

    /// Connects this child's stdout (spawned piped) to `next`'s stdin (spawned piped) through
    /// `filter`. The pair then acts as one child: [`Child::wait`] succeeds only if both do,
    /// and `next` sees the end of its input only after this child exited successfully;
    /// otherwise `next` is killed before it could act on a partial input.
    pub fn pipe_into(mut self, mut next: Child, filter: Filter) -> Child {
        let stdout = self.stdout().expect("stdout is piped");
        let mut stdin = next.stdin().expect("stdin is piped");
        let pump = thread::spawn(move || {
            let mut reader = BufReader::with_capacity(256 * 1024, stdout);
            filter(&mut reader, &mut stdin)?;
            Ok(stdin)
        });
        self.downstream = Some(Downstream {
            child: Box::new(next),
            pump,
        });
        self
    }

    pub fn id(&self) -> u32 {
        self.inner.id()
    }

    pub fn stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.inner.stdout.take()
    }

    pub fn stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.inner.stdin.take()
    }

    /// The last lines the child wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        self.tail
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// What explains a failure: the first error with its statement when the child reported
    /// one, else the last lines of stderr.
    fn stderr_message(&self) -> String {
        self.first_error
            .lock()
            .unwrap()
            .render()
            .unwrap_or_else(|| self.stderr_tail())
    }

    /// [`Child::wait`], also returning the stderr lines kept (read to the end).
    pub fn wait_with_stderr(self) -> (Result<()>, String) {
        let tail = self.tail.clone();
        let r = self.wait();
        let text = tail
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        (r, text)
    }

    /// Waits for the child; a non-zero exit or a signal is an error carrying the stderr tail.
    pub fn wait(mut self) -> Result<()> {
        let status = self.inner.wait().map_err(|e| Error::Child {
            program: self.program.clone(),
            status: "wait failed".into(),
            stderr: e.to_string(),
        })?;
        self.reaped = true;
        unregister(self.inner.id());
        if let Some(h) = self.stderr_reader.take() {
            let _ = h.join();
        }
        let own = check_status(&self.program, status, &self.stderr_message());
        let Some(Downstream { mut child, pump }) = self.downstream.take() else {
            return own;
        };
        let pumped = pump.join();
        match (own, pumped) {
            (Ok(()), Ok(Ok(stdin))) => {
                drop(stdin);
                child.wait()
            }
            (own, pumped) => {
                // The reader usually fails first and this one dies of the broken pipe: the
                // reader's error is the one that explains.
                if let Ok(Some(status)) = child.inner.try_wait() {
                    if !status.success() {
                        return child.wait();
                    }
                }
                child.terminate();
                own?;
                match pumped {
                    Ok(Err(e)) => Err(Error::Child {
                        program: self.program.clone(),
                        status: "output could not be passed on".into(),
                        stderr: e.to_string(),
                    }),
                    _ => Err(Error::Child {
                        program: self.program.clone(),
                        status: "output filter failed".into(),
                        stderr: String::new(),
                    }),
                }
            }
        }
    }

    /// SIGTERM to the whole group, SIGKILL after a grace period; reaps the child.
    pub fn terminate(&mut self) {
        // The reader first: it must not see an end of input and act on it.
        if let Some(mut d) = self.downstream.take() {
            d.child.terminate();
        }
        if self.reaped {
            return;
        }
        let group = Pid::from_raw(self.inner.id() as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.inner.try_wait() {
                self.reaped = true;
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        // Grandchildren (pg_restore -j workers) share the group: kill it even if the leader left.
        let _ = killpg(group, Signal::SIGKILL);
        if !self.reaped {
            let _ = self.inner.wait();
            self.reaped = true;
        }
        unregister(self.inner.id());
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // A child we stopped caring about (error, timeout, Ctrl-C) must not outlive us.
        if !self.reaped {
            self.terminate();
        }
    }
}

/// Reads one line into `buf` (without its newline), keeping at most [`STDERR_LINE_BYTES`] of
/// it; returns the line's whole length, or `None` at the end of input.
fn read_bounded_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<usize>> {
    buf.clear();
    let mut len = 0;
    let mut any = false;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(any.then_some(len));
        }
        any = true;
        let (part, used) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        let room = STDERR_LINE_BYTES.saturating_sub(buf.len());
        buf.extend_from_slice(&part[..part.len().min(room)]);
        len += part.len();
        let consumed = used.unwrap_or(available.len());
        reader.consume(consumed);
        if used.is_some() {
            return Ok(Some(len));
        }
    }
}

fn check_status(program: &str, status: ExitStatus, stderr: &str) -> Result<()> {
    if status.success() {
        return Ok(());
    }
    use std::os::unix::process::ExitStatusExt;
    let status = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    };
    Err(Error::Child {
        program: program.to_string(),
        status,
        stderr: stderr.to_string(),
    })
}

/// Awaits a blocking task that owns child `pid`; on cancellation sends the child's process
/// group SIGTERM (SIGKILL after a grace period), lets the task wind down, and reports
/// [`Error::Interrupted`].
pub async fn supervise<T: Send + 'static>(
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

/// The children of one job (one database's backup), so that cancelling that job terminates
/// its children and nobody else's.
#[derive(Clone, Default)]
pub struct ChildSet(Arc<Mutex<Vec<i32>>>);

impl ChildSet {
    pub fn track(&self, child: &Child) {
        self.0.lock().unwrap().push(child.id() as i32);
    }

    /// SIGTERM to each tracked group that is still alive, SIGKILL after the grace period.
    pub fn terminate(&self) {
        let groups: Vec<i32> = std::mem::take(&mut *self.0.lock().unwrap());
        let live: Vec<i32> = {
            let all = LIVE_GROUPS.lock().unwrap();
            groups.into_iter().filter(|g| all.contains(g)).collect()
        };
        if live.is_empty() {
            return;
        }
        for g in &live {
            let _ = killpg(Pid::from_raw(*g), Signal::SIGTERM);
        }
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline
            && live.iter().any(|g| LIVE_GROUPS.lock().unwrap().contains(g))
        {
            thread::sleep(Duration::from_millis(50));
        }
        let all = LIVE_GROUPS.lock().unwrap();
        for g in live.iter().filter(|g| all.contains(g)) {
            let _ = killpg(Pid::from_raw(*g), Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_lines_are_read_whole_but_kept_bounded() {
        let long = "x".repeat(STDERR_LINE_BYTES * 3);
        let input = format!("short\n\n{long}\nlast without newline");
        // A small buffer: lines arrive in many pieces.
        let mut reader = BufReader::with_capacity(7, input.as_bytes());
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        while let Some(len) = read_bounded_line(&mut reader, &mut buf).unwrap() {
            seen.push((String::from_utf8(buf.clone()).unwrap(), len));
        }
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[0], ("short".to_string(), 5));
        assert_eq!(seen[1], (String::new(), 0));
        assert_eq!(seen[2].0.len(), STDERR_LINE_BYTES);
        assert_eq!(seen[2].1, long.len());
        assert_eq!(seen[3], ("last without newline".to_string(), 20));
    }
}
