//! Running pg_restore into a server older than pg_restore.
//!
//! pg_restore writes session settings of its own version at the start of every connection
//! (pg_restore 17 and newer send `SET transaction_timeout = 0`, which servers before 17 reject
//! as an unknown parameter). Stock pg_restore reports that as an ignored error and goes on;
//! with `--exit-on-error` or `--single-transaction`, which a restore that must not end half
//! done needs, it stops. So when the tools are newer than the target and know such a setting,
//! pg_restore writes its script (`-f -`) and psql runs it with `ON_ERROR_STOP`, and the lines
//! setting parameters the target lacks are left out on the way. Every other statement goes
//! through unchanged, and any error still stops the restore. The price: no `--jobs` then.

use std::ffi::OsString;
use std::io::Write;
use std::process::Stdio;

use crate::error::Result;
use crate::source::child::Child;

/// Session settings pg_restore sends that older servers reject: (parameter, first server
/// version that has it).
const NEWER_SETTINGS: &[(&str, i32)] = &[("transaction_timeout", 170_000)];

/// The settings to leave out for a target server of `server_num` (none: run pg_restore as is).
fn unknown_to(server_num: i32, tools_num: i32) -> Vec<&'static str> {
    NEWER_SETTINGS
        .iter()
        .filter(|(_, since)| server_num < *since && tools_num >= *since)
        .map(|(name, _)| *name)
        .collect()
}

/// The settings to leave out of scripts for the server the selected tools were chosen for.
pub fn settings_to_leave_out() -> Vec<&'static str> {
    crate::source::pgtools::selected()
        .filter(|t| t.server_num > 0)
        .map(|t| unknown_to(t.server_num, t.version_num))
        .unwrap_or_default()
}

/// Spawns `pg_restore args` (which name the target with `--dbname=`), directly when the tools
/// suit the target, else as pg_restore's script piped through psql (see the module docs).
pub fn spawn(args: Vec<OsString>, env: &[(String, String)], stdin: Stdio) -> Result<Child> {
    let drop_settings = settings_to_leave_out();
    if drop_settings.is_empty() {
        return Child::spawn("pg_restore", &args, env, stdin, Stdio::null());
    }
    let mut restore_args: Vec<OsString> = Vec::new();
    let mut psql_args: Vec<OsString> = vec![
        "-X".into(),
        "-q".into(),
        // The failed statement on stderr, for the error message (see `first_error`).
        "--echo-errors".into(),
        "-v".into(),
        "ON_ERROR_STOP=1".into(),
        "--no-password".into(),
    ];
    for arg in args {
        let text = arg.to_string_lossy();
        if text.starts_with("--dbname=") || text == "--single-transaction" {
            psql_args.push(arg);
        } else if text == "--exit-on-error" || text.starts_with("--jobs=") {
            // psql stops at the first error; the script runs in one session.
        } else {
            restore_args.push(arg);
        }
    }
    restore_args.extend(["-f".into(), "-".into()]);
    psql_args.extend(["-f".into(), "-".into()]);
    let psql = Child::spawn("psql", &psql_args, env, Stdio::piped(), Stdio::null())?;
    let restore = Child::spawn("pg_restore", &restore_args, env, stdin, Stdio::piped())?;
    Ok(restore.pipe_into(
        psql,
        Box::new(move |from, to| {
            let mut filtered = SettingsFilter::new(to, drop_settings);
            std::io::copy(from, &mut filtered)?;
            filtered.flush()
        }),
    ))
}

/// Longest line outside COPY data that is held to be judged; a longer one cannot be one of
/// the `SET` lines and streams through.
const MAX_JUDGED_LINE: usize = 4096;

/// A writer that passes an SQL script on, leaving out `SET <name> = ...;` lines for the
/// names given, outside of COPY data (where such a line would be a row). Memory stays bounded
/// whatever the lines' lengths: COPY data is never held.
pub struct SettingsFilter<W: Write> {
    inner: W,
    names: Vec<&'static str>,
    /// The start of the current line, while it may still be a `SET` line or a COPY's end.
    line: Vec<u8>,
    /// The current line is passed on as it comes (too long to matter, or inside COPY data and
    /// no longer possibly its end marker).
    streaming: bool,
    in_copy: bool,
}

impl<W: Write> SettingsFilter<W> {
    pub fn new(inner: W, names: Vec<&'static str>) -> Self {
        SettingsFilter {
            inner,
            names,
            line: Vec::with_capacity(256),
            streaming: false,
            in_copy: false,
        }
    }

    /// A whole line (with its newline) was collected: judge it.
    fn end_line(&mut self) -> std::io::Result<()> {
        let line = std::mem::take(&mut self.line);
        if self.in_copy {
            self.in_copy = line != b"\\.\n";
        } else if line.starts_with(b"COPY ") && line.ends_with(b"FROM stdin;\n") {
            self.in_copy = true;
        } else if self
            .names
            .iter()
            .any(|n| line.starts_with(format!("SET {n} = ").as_bytes()) && line.ends_with(b";\n"))
        {
            self.line = line;
            self.line.clear();
            return Ok(());
        }
        self.inner.write_all(&line)?;
        self.line = line;
        self.line.clear();
        Ok(())
    }
}

impl<W: Write> Write for SettingsFilter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            let (part, newline) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (&rest[..=i], true),
                None => (rest, false),
            };
            rest = &rest[part.len()..];
            if self.streaming {
                self.inner.write_all(part)?;
            } else {
                self.line.extend_from_slice(part);
                let limit = if self.in_copy { 3 } else { MAX_JUDGED_LINE };
                if !newline && self.line.len() > limit {
                    self.inner.write_all(&self.line)?;
                    self.line.clear();
                    self.streaming = true;
                } else if newline {
                    self.end_line()?;
                }
            }
            if newline && self.streaming {
                self.streaming = false;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.line.is_empty() {
            self.inner.write_all(&self.line)?;
            self.line.clear();
        }
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_left_out_only_where_the_server_lacks_them() {
        assert_eq!(unknown_to(160_004, 180_001), vec!["transaction_timeout"]);
        assert!(unknown_to(170_000, 180_001).is_empty());
        assert!(unknown_to(150_000, 160_000).is_empty());
    }

    fn filtered(script: &str, write_size: usize) -> String {
        let mut out = Vec::new();
        let mut f = SettingsFilter::new(&mut out, vec!["transaction_timeout"]);
        for piece in script.as_bytes().chunks(write_size) {
            f.write_all(piece).unwrap();
        }
        f.flush().unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_filter_spares_copy_data_and_everything_else() {
        let long_row = "x".repeat(10_000);
        let script = format!(
            "SET statement_timeout = 0;\nSET transaction_timeout = 0;\n\
             COPY t (a) FROM stdin;\nSET transaction_timeout = 0;\n{long_row}\n\\.\n\
             CREATE TABLE x ();\nSET transaction_timeout = 0;\nno newline at the end"
        );
        let expected = format!(
            "SET statement_timeout = 0;\nCOPY t (a) FROM stdin;\nSET transaction_timeout = 0;\n\
             {long_row}\n\\.\nCREATE TABLE x ();\nno newline at the end"
        );
        for size in [1, 2, 7, 4096, 1 << 20] {
            assert_eq!(filtered(&script, size), expected, "writes of {size} bytes");
        }
    }
}
