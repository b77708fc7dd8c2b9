//! A streaming filter for the SQL scripts dbbackup feeds to psql (plain backups, and
//! pg_restore's script when the tools are newer than the target; see [`super::pgrestore`]).
//!
//! Two things are left out, each recognised by its context, never inside COPY data:
//! - `SET <name> = ...;` lines for parameters the target server lacks (pg_restore 17 and
//!   newer send `SET transaction_timeout = 0`, which servers before 17 reject);
//! - when the script runs in one transaction (`psql --single-transaction`), the `BEGIN;` and
//!   `COMMIT;` that pg_dump writes around the large objects' data: inside a single transaction
//!   that COMMIT would commit everything before it, and an error after it would leave a half
//!   restored database. They are the lines pg_dump (13 to 18) writes for each `BLOBS` entry:
//!
//!   ```text
//!   --
//!   -- Data for Name: BLOBS; Type: BLOBS; Schema: -; Owner: -      (17+: Name: 16401..16402)
//!   --
//!
//!   BEGIN;
//!
//!   SELECT pg_catalog.lo_open('16401', 131072);
//!   SELECT pg_catalog.lowrite(0, '\x...');
//!   SELECT pg_catalog.lo_close(0);
//!
//!   COMMIT;
//!   ```
//!
//!   Only a `BEGIN;` after such a header and followed by `lo_open`, and a `COMMIT;` right
//!   after that block's last `lo_close` (blank lines between), are dropped; any other line
//!   ends the block and everything passes unchanged.
//!
//! Memory stays bounded whatever the lines' lengths: COPY data and long lines stream through;
//! at most a `BEGIN;` and the blank lines after it are held until the next line decides.

use std::io::Write;

/// Longest line outside COPY data that is held to be judged; a longer one cannot be one of
/// the lines this filter looks for and streams through.
const MAX_JUDGED_LINE: usize = 4096;

const LO_OPEN: &[u8] = b"SELECT pg_catalog.lo_open(";
const LO_WRITE: &[u8] = b"SELECT pg_catalog.lowrite(";
const LO_CLOSE: &[u8] = b"SELECT pg_catalog.lo_close(0);\n";

/// Where the filter is in pg_dump's large-object block.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lo {
    /// Not in or near one.
    Outside,
    /// After the `-- Data for Name: ...; Type: BLOBS; ...` line.
    Header,
    /// After the header's closing `--` (and blank lines).
    HeaderDone,
    /// A `BEGIN;` (and blank lines) held: `lo_open` next drops it.
    BeginHeld,
    /// Inside the block whose `BEGIN;` was dropped; `closed` after an `lo_close`.
    Block { closed: bool },
}

/// A writer that passes an SQL script on, leaving out what the module documentation says.
pub struct ScriptFilter<W: Write> {
    inner: W,
    names: Vec<&'static str>,
    single_transaction: bool,
    /// The start of the current line, while it may still be one that matters.
    line: Vec<u8>,
    /// The current line is passed on as it comes (too long to matter, or inside COPY data and
    /// no longer possibly its end marker).
    streaming: bool,
    in_copy: bool,
    lo: Lo,
    /// Lines held in [`Lo::BeginHeld`]: the `BEGIN;` line first, then blank lines.
    held: Vec<u8>,
}

impl<W: Write> ScriptFilter<W> {
    /// Leaves out `SET` lines of the parameters `names`, and with `single_transaction` the
    /// large objects' own `BEGIN;`/`COMMIT;`.
    pub fn new(inner: W, names: Vec<&'static str>, single_transaction: bool) -> Self {
        ScriptFilter {
            inner,
            names,
            single_transaction,
            line: Vec::with_capacity(256),
            streaming: false,
            in_copy: false,
            lo: Lo::Outside,
            held: Vec::new(),
        }
    }

    fn release_held(&mut self) -> std::io::Result<()> {
        if !self.held.is_empty() {
            self.inner.write_all(&self.held)?;
            self.held.clear();
        }
        Ok(())
    }

    /// Whether a whole line outside COPY data is kept; moves the large-object state on.
    fn judge(&mut self, line: &[u8]) -> std::io::Result<bool> {
        if self.single_transaction {
            match self.lo {
                Lo::Header if line == b"--\n" => {
                    self.lo = Lo::HeaderDone;
                    return Ok(true);
                }
                Lo::HeaderDone if line == b"\n" => return Ok(true),
                Lo::HeaderDone if line == b"BEGIN;\n" => {
                    self.lo = Lo::BeginHeld;
                    self.held.extend_from_slice(line);
                    return Ok(false);
                }
                Lo::BeginHeld if line == b"\n" => {
                    self.held.extend_from_slice(line);
                    return Ok(false);
                }
                Lo::BeginHeld if line.starts_with(LO_OPEN) => {
                    // The BEGIN goes; the blank lines after it stay.
                    self.held.drain(..b"BEGIN;\n".len());
                    self.release_held()?;
                    self.lo = Lo::Block { closed: false };
                    return Ok(true);
                }
                Lo::Block { .. } if line == b"\n" => return Ok(true),
                Lo::Block { .. } if line.starts_with(LO_OPEN) || line.starts_with(LO_WRITE) => {
                    self.lo = Lo::Block { closed: false };
                    return Ok(true);
                }
                Lo::Block { .. } if line == LO_CLOSE => {
                    self.lo = Lo::Block { closed: true };
                    return Ok(true);
                }
                Lo::Block { closed: true } if line == b"COMMIT;\n" => {
                    self.lo = Lo::Outside;
                    return Ok(false);
                }
                Lo::BeginHeld => {
                    self.release_held()?;
                    self.lo = Lo::Outside;
                }
                _ => self.lo = Lo::Outside,
            }
            if line.starts_with(b"-- Data for Name: ")
                && line
                    .windows(b"; Type: BLOBS; Schema: -; Owner: ".len())
                    .any(|w| w == b"; Type: BLOBS; Schema: -; Owner: ")
            {
                self.lo = Lo::Header;
                return Ok(true);
            }
        }
        if line.starts_with(b"COPY ") && line.ends_with(b"FROM stdin;\n") {
            self.in_copy = true;
            return Ok(true);
        }
        Ok(!self
            .names
            .iter()
            .any(|n| line.starts_with(format!("SET {n} = ").as_bytes()) && line.ends_with(b";\n")))
    }

    /// A whole line (with its newline) was collected: judge it.
    fn end_line(&mut self) -> std::io::Result<()> {
        let line = std::mem::take(&mut self.line);
        let keep = if self.in_copy {
            self.in_copy = line != b"\\.\n";
            true
        } else {
            self.judge(&line)?
        };
        if keep {
            self.inner.write_all(&line)?;
        }
        self.line = line;
        self.line.clear();
        Ok(())
    }

    /// The current line is too long to be judged: it streams through from here on.
    fn start_streaming(&mut self) -> std::io::Result<()> {
        if !self.in_copy {
            // Only a lowrite of the large-object block can be this long; anything else ends it.
            let lowrite = matches!(self.lo, Lo::Block { .. }) && self.line.starts_with(LO_WRITE);
            if lowrite {
                self.lo = Lo::Block { closed: false };
            } else {
                self.release_held()?;
                self.lo = Lo::Outside;
            }
        }
        self.inner.write_all(&self.line)?;
        self.line.clear();
        self.streaming = true;
        Ok(())
    }
}

impl<W: Write> Write for ScriptFilter<W> {
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
                    self.start_streaming()?;
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
        self.release_held()?;
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

    fn filtered(script: &str, write_size: usize, single_transaction: bool) -> String {
        let mut out = Vec::new();
        let mut f = ScriptFilter::new(&mut out, vec!["transaction_timeout"], single_transaction);
        for piece in script.as_bytes().chunks(write_size) {
            f.write_all(piece).unwrap();
        }
        f.flush().unwrap();
        String::from_utf8(out).unwrap()
    }

    const SIZES: [usize; 6] = [1, 2, 7, 100, 4096, 1 << 20];

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
        for size in SIZES {
            assert_eq!(
                filtered(&script, size, true),
                expected,
                "writes of {size} bytes"
            );
        }
    }

    /// pg_dump 13 to 16 (one BLOBS entry) and 17+ (one per group of objects and owner).
    fn lo_block(name: &str, owner: &str, data: &str) -> String {
        format!(
            "--\n-- Data for Name: {name}; Type: BLOBS; Schema: -; Owner: {owner}\n--\n\n\
             BEGIN;\n\n\
             SELECT pg_catalog.lo_open('16401', 131072);\n\
             SELECT pg_catalog.lowrite(0, '{data}');\n\
             SELECT pg_catalog.lo_close(0);\n\n\
             SELECT pg_catalog.lo_open('16402', 131072);\n\
             SELECT pg_catalog.lo_close(0);\n\n\
             COMMIT;\n\n"
        )
    }

    #[test]
    fn the_large_objects_own_transaction_goes_in_one_transaction_only() {
        let long = format!("\\x{}", "ab".repeat(40_000));
        for (name, owner) in [("BLOBS", "-"), ("16401..16402", "postgres")] {
            for data in ["\\x68656c6c6f", long.as_str()] {
                let block = lo_block(name, owner, data);
                let script = format!(
                    "CREATE TABLE t ();\n{block}{block}--\n-- Name: t t_pkey; Type: CONSTRAINT\n--\n\n\
                     ALTER TABLE t ADD PRIMARY KEY (a);\n"
                );
                let stripped = script.replace("BEGIN;\n", "").replace("COMMIT;\n", "");
                assert_eq!(stripped.matches("lo_open").count(), 4);
                for size in SIZES {
                    assert_eq!(filtered(&script, size, true), stripped, "{name}, {size}");
                    assert_eq!(filtered(&script, size, false), script, "{name}, {size}");
                }
            }
        }
    }

    #[test]
    fn begin_and_commit_elsewhere_stay() {
        let header = "--\n-- Data for Name: BLOBS; Type: BLOBS; Schema: -; Owner: -\n--\n\n";
        let scripts = [
            // Not after a BLOBS header.
            "BEGIN;\n\nSELECT pg_catalog.lo_open('1', 131072);\nSELECT pg_catalog.lo_close(0);\n\nCOMMIT;\n".to_string(),
            // After the header, but no lo_open follows.
            format!("{header}BEGIN;\n\nSELECT 1;\nCOMMIT;\n"),
            // In COPY data.
            format!("COPY t (a) FROM stdin;\n{header}BEGIN;\n\nSELECT pg_catalog.lo_open('1', 131072);\nSELECT pg_catalog.lo_close(0);\n\nCOMMIT;\n\\.\n"),
        ];
        for script in &scripts {
            for size in SIZES {
                assert_eq!(
                    &filtered(script, size, true),
                    script,
                    "{size}: {script:.200}"
                );
            }
        }
        // The block ends before its COMMIT: the BEGIN goes (harmless in one transaction), the
        // COMMIT stays.
        let interrupted = format!(
            "{header}BEGIN;\n\nSELECT pg_catalog.lo_open('1', 131072);\nSELECT 2;\nSELECT pg_catalog.lo_close(0);\n\nCOMMIT;\n"
        );
        assert_eq!(
            filtered(&interrupted, 3, true),
            interrupted.replacen("BEGIN;\n", "", 1)
        );
    }
}
