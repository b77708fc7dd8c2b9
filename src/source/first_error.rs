//! The first error a child program (pg_restore, psql, pg_dump) reported, with its statement.
//!
//! A failed restore's stderr can hold thousands of lines: warnings the restored objects raise,
//! then the error, then what parallel workers said while dying. Its tail can start in the
//! middle of a statement or with unrelated warnings, and says nothing of what failed first. So
//! the error block is picked out as the lines stream past: the first line naming an `ERROR:`
//! (or `FATAL:`, `PANIC:`, `<program>: error:`), the server's `DETAIL:`/`HINT:`/`CONTEXT:`
//! lines, and the statement the program echoes — pg_restore's `Command was: ...`, psql's
//! `STATEMENT:  ...` (with `--echo-errors`), pg_dump's `detail: Query was: ...` — up to the next
//! message. Memory stays bounded: at most [`KEEP_BYTES`] of the block are kept, the rest of
//! the statement is only counted, so the message can say how long the statement was.

/// Bytes of the error block kept (the beginning of a long statement is what explains it).
const KEEP_BYTES: usize = 8 * 1024;
/// Characters of the statement shown in the one-line message.
const SHOWN_STATEMENT: usize = 400;
/// Characters of any other line of the block shown.
const SHOWN_LINE: usize = 600;

/// Severities that start a message of their own (and so end the error block).
const SEVERITIES: &[&str] = &[
    "ERROR:", "FATAL:", "PANIC:", "WARNING:", "NOTICE:", "INFO:", "LOG:", "DEBUG:",
];

#[derive(Debug)]
pub struct FirstError {
    program: String,
    state: State,
    /// The head line, then DETAIL/HINT/CONTEXT lines, as written.
    lines: Vec<String>,
    /// The statement's label (`Command was:`, `STATEMENT:`, `Query was:`) and its text so far.
    statement: Option<(String, String)>,
    /// Bytes of the statement seen, kept or not.
    statement_bytes: usize,
    kept: usize,
}

#[derive(Debug, PartialEq)]
enum State {
    Waiting,
    Block,
    Statement,
    Closed,
}

impl FirstError {
    pub fn new(program: &str) -> Self {
        FirstError {
            program: program.to_string(),
            state: State::Waiting,
            lines: Vec::new(),
            statement: None,
            statement_bytes: 0,
            kept: 0,
        }
    }

    /// One line of stderr (without its newline); `full_len` is the line's length before the
    /// reader cut it (see `child.rs`), so that a cut statement is still counted whole.
    pub fn push(&mut self, line: &str, full_len: usize) {
        match self.state {
            State::Closed => {}
            State::Waiting => {
                if self.is_error_line(line) {
                    self.state = State::Block;
                    self.keep_line(line);
                }
            }
            State::Block | State::Statement => {
                if self.starts_message(line) {
                    self.state = State::Closed;
                } else if let Some((label, text)) = self.statement_start(line) {
                    self.state = State::Statement;
                    self.statement_bytes = full_len - (line.len() - text.len());
                    let text = self.budget(text);
                    self.statement = Some((label, text));
                } else if self.state == State::Statement {
                    self.statement_bytes += 1 + full_len;
                    let text = self.budget(line);
                    if let Some((_, s)) = &mut self.statement {
                        s.push('\n');
                        s.push_str(&text);
                    }
                } else if !is_error_position(line) {
                    self.keep_line(line);
                }
            }
        }
    }

    /// The block as lines (head, details, then the statement, whitespace collapsed and cut
    /// with a note when long); `None` when no error line was seen.
    pub fn render(&self) -> Option<String> {
        if self.lines.is_empty() {
            return None;
        }
        let mut out: Vec<String> = self.lines.iter().map(|l| cut(l, SHOWN_LINE)).collect();
        if let Some((label, text)) = &self.statement {
            let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
            let shown = cut(&collapsed, SHOWN_STATEMENT);
            let complete = shown.len() == collapsed.len() && text.len() >= self.statement_bytes;
            out.push(if complete {
                format!("{label} {shown}")
            } else {
                format!(
                    "{label} {shown} (statement truncated; {} bytes in all)",
                    self.statement_bytes
                )
            });
        }
        Some(out.join("\n"))
    }

    fn is_error_line(&self, line: &str) -> bool {
        ["ERROR:", "FATAL:", "PANIC:"]
            .iter()
            .any(|s| line.contains(s))
            || line.starts_with(&format!("{}: error:", self.program))
    }

    /// A line that begins a new message: the program's own (`pg_restore: error: ...`,
    /// `psql:<stdin>:12: WARNING: ...`) other than the details and the echoed statement of
    /// this one, or a server message printed bare (`WARNING:  ...` from a notice).
    fn starts_message(&self, line: &str) -> bool {
        if let Some(rest) = line.strip_prefix(&format!("{}:", self.program)) {
            let rest = after_location(rest);
            return !(rest.starts_with("detail:")
                || rest.starts_with("hint:")
                || rest.starts_with("STATEMENT:")
                || rest.starts_with("DETAIL:")
                || rest.starts_with("HINT:")
                || rest.starts_with("CONTEXT:"));
        }
        SEVERITIES.iter().any(|s| line.starts_with(s))
    }

    /// `Command was: X` (pg_restore), `psql:<stdin>:12: STATEMENT:  X` (psql -b),
    /// `pg_dump: detail: Query was: X`: the label and X.
    fn statement_start<'a>(&self, line: &'a str) -> Option<(String, &'a str)> {
        if let Some(text) = line.strip_prefix("Command was: ") {
            return Some(("Command was:".into(), text));
        }
        let rest = line.strip_prefix(&format!("{}:", self.program))?;
        let rest = after_location(rest);
        if let Some(text) = rest.strip_prefix("STATEMENT:") {
            return Some(("STATEMENT:".into(), text.trim_start()));
        }
        let text = rest.strip_prefix("detail: Query was: ")?;
        Some(("Query was:".into(), text))
    }

    fn keep_line(&mut self, line: &str) {
        let kept = self.budget(line);
        if !kept.is_empty() {
            self.lines.push(kept);
        }
    }

    /// As much of `text` as the block's budget still allows.
    fn budget(&mut self, text: &str) -> String {
        let room = KEEP_BYTES.saturating_sub(self.kept);
        let mut end = text.len().min(room);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        self.kept += end;
        text[..end].to_string()
    }
}

/// psql prefixes its messages with the input's location (`psql:<stdin>:12: `); after the
/// program name, skip it.
fn after_location(rest: &str) -> &str {
    let rest = rest.trim_start();
    if let Some((loc, tail)) = rest.split_once(": ") {
        // `<stdin>:12` or `file.sql:12`: a location ends in a line number.
        if loc
            .rsplit_once(':')
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            return tail.trim_start();
        }
    }
    rest
}

/// psql's `LINE 1: ...` and the caret under it: the statement shows the same.
fn is_error_position(line: &str) -> bool {
    line.starts_with("LINE ") || (!line.trim().is_empty() && line.trim().chars().all(|c| c == '^'))
}

fn cut(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(program: &str, stderr: &str) -> Option<String> {
        let mut f = FirstError::new(program);
        for line in stderr.lines() {
            f.push(line, line.len());
        }
        f.render()
    }

    #[test]
    fn pg_restore_error_with_its_command_and_not_the_warnings_around_it() {
        let stderr = "WARNING:  unrelated warning 1\nWARNING:  unrelated warning 2\n\
            pg_restore: error: could not execute query: ERROR:  division by zero\n\
            Command was: REFRESH MATERIALIZED VIEW public.mv;\n\n\n\
            WARNING:  later warning\npg_restore: error: a worker process died unexpectedly\n";
        assert_eq!(
            first("pg_restore", stderr).unwrap(),
            "pg_restore: error: could not execute query: ERROR:  division by zero\n\
             Command was: REFRESH MATERIALIZED VIEW public.mv;"
        );
    }

    #[test]
    fn psql_error_with_detail_and_echoed_multiline_statement() {
        let stderr = "psql:<stdin>:3: WARNING:  there is already a transaction in progress\n\
            psql:<stdin>:5: ERROR:  duplicate key value violates unique constraint \"x_pkey\"\n\
            DETAIL:  Key (a)=(1) already exists.\n\
            psql:<stdin>:5: STATEMENT:  insert into x\n  values (1),\n  (2);\n\
            psql:<stdin>:9: ERROR:  current transaction is aborted\n";
        assert_eq!(
            first("psql", stderr).unwrap(),
            "psql:<stdin>:5: ERROR:  duplicate key value violates unique constraint \"x_pkey\"\n\
             DETAIL:  Key (a)=(1) already exists.\n\
             STATEMENT: insert into x values (1), (2);"
        );
    }

    #[test]
    fn psql_error_position_lines_are_left_out() {
        let stderr = "psql:<stdin>:1: ERROR:  syntax error at or near \"selec\"\n\
            LINE 1: selec 1;\n        ^\npsql:<stdin>:1: STATEMENT:  selec 1;\n";
        assert_eq!(
            first("psql", stderr).unwrap(),
            "psql:<stdin>:1: ERROR:  syntax error at or near \"selec\"\nSTATEMENT: selec 1;"
        );
    }

    #[test]
    fn pg_dump_detail_lines_belong_to_the_error() {
        let stderr =
            "pg_dump: error: Dumping the contents of table \"t\" failed: PQgetResult() failed.\n\
            pg_dump: detail: Error message from server: FATAL:  terminating connection\n\
            pg_dump: detail: Command was: COPY public.t (a) TO stdout;\n";
        let r = first("pg_dump", stderr).unwrap();
        assert!(r.starts_with("pg_dump: error: Dumping the contents"), "{r}");
        assert!(r.contains("terminating connection"), "{r}");
    }

    #[test]
    fn a_long_statement_keeps_its_beginning_and_says_it_was_cut() {
        let long = format!("CREATE VIEW v AS SELECT {}1;", "1 + ".repeat(20_000));
        let stderr = format!(
            "pg_restore: error: could not execute query: ERROR:  boom\nCommand was: {long}\n"
        );
        let mut f = FirstError::new("pg_restore");
        for line in stderr.lines() {
            // The reader keeps at most 16 KiB of a line, but says how long it was.
            let kept = &line[..line.len().min(16 * 1024)];
            f.push(kept, line.len());
        }
        let r = f.render().unwrap();
        assert!(
            r.contains("Command was: CREATE VIEW v AS SELECT 1 + 1 + "),
            "{r}"
        );
        assert!(
            r.ends_with(&format!(
                "(statement truncated; {} bytes in all)",
                long.len()
            )),
            "{r}"
        );
        assert!(r.len() < 1200, "{} bytes", r.len());
    }

    #[test]
    fn no_error_line_no_block() {
        assert_eq!(first("psql", "WARNING:  x\nsomething else\n"), None);
    }
}
