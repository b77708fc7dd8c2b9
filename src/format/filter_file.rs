//! pg_dump's `--filter FILE` format (PostgreSQL 17), read by dbbackup itself so that a filter
//! file works with any pg_dump version and with native backups.
//!
//! One item per line: `include|exclude OBJECT_TYPE PATTERN`, keywords in any case; blank lines
//! and lines starting with `#` are skipped, and a `#` after the pattern starts a comment. The
//! pattern is a name pattern (see [`super::name_pattern`]); a double-quoted part may contain
//! `""` (a quote), `\n` and `\\`, and may run over several lines. Unquoted words separated by
//! spaces are joined with one space, spaces around `.`, `,`, `(` and `)` dropped, exactly as
//! PostgreSQL's `src/bin/pg_dump/filter.c` does, so a file means the same to both.
//!
//! Which object types a command may use is the caller's business ([`FilterItem`] keeps them
//! all): pg_dump, pg_restore and dbbackup's backup and restore each accept their own set.

use crate::error::{Error, Result};

/// `include` or `exclude`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterCommand {
    Include,
    Exclude,
}

impl FilterCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            FilterCommand::Include => "include",
            FilterCommand::Exclude => "exclude",
        }
    }
}

/// The object types of PostgreSQL's filter format (`filter_object_type_name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterObject {
    TableData,
    TableDataAndChildren,
    Database,
    Extension,
    ForeignData,
    Function,
    Index,
    Schema,
    Table,
    TableAndChildren,
    Trigger,
}

impl FilterObject {
    fn from_keyword(word: &str) -> Option<FilterObject> {
        Some(match word.to_ascii_lowercase().as_str() {
            "table_data" => FilterObject::TableData,
            "table_data_and_children" => FilterObject::TableDataAndChildren,
            "database" => FilterObject::Database,
            "extension" => FilterObject::Extension,
            "foreign_data" => FilterObject::ForeignData,
            "function" => FilterObject::Function,
            "index" => FilterObject::Index,
            "schema" => FilterObject::Schema,
            "table" => FilterObject::Table,
            "table_and_children" => FilterObject::TableAndChildren,
            "trigger" => FilterObject::Trigger,
            _ => return None,
        })
    }

    /// The name PostgreSQL's messages use ("table data", "foreign data").
    pub fn name(self) -> &'static str {
        match self {
            FilterObject::TableData => "table data",
            FilterObject::TableDataAndChildren => "table data and children",
            FilterObject::Database => "database",
            FilterObject::Extension => "extension",
            FilterObject::ForeignData => "foreign data",
            FilterObject::Function => "function",
            FilterObject::Index => "index",
            FilterObject::Schema => "schema",
            FilterObject::Table => "table",
            FilterObject::TableAndChildren => "table and children",
            FilterObject::Trigger => "trigger",
        }
    }
}

/// One `include|exclude TYPE PATTERN` item and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterItem {
    pub line: usize,
    pub command: FilterCommand,
    pub object: FilterObject,
    pub pattern: String,
}

/// Reads the filter file at `path` (`-` is not special here: a scheduled job has no stdin).
pub fn read(path: &std::path::Path) -> Result<Vec<FilterItem>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Usage(format!(
            "could not open filter file \"{}\": {e}",
            path.display()
        ))
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses a filter file's `text`; `name` is the file named in messages.
pub fn parse(text: &str, name: &str) -> Result<Vec<FilterItem>> {
    let mut reader = Lines {
        lines: text.split_inclusive('\n').collect(),
        next: 0,
        name,
    };
    let mut items = Vec::new();
    while let Some(line) = reader.next_line() {
        let lineno = reader.next;
        let rest = line.trim_start_matches(is_space);
        if rest.is_empty() || rest.starts_with('#') {
            continue;
        }
        let (word, rest) = keyword(rest);
        let command = match word.to_ascii_lowercase().as_str() {
            "include" => FilterCommand::Include,
            "exclude" => FilterCommand::Exclude,
            _ => {
                return Err(reader
                    .error("invalid filter command (expected \"include\" or \"exclude\")".into()))
            }
        };
        let (word, rest) = keyword(rest);
        if word.is_empty() {
            return Err(reader.error("missing filter object type".into()));
        }
        let object = FilterObject::from_keyword(word)
            .ok_or_else(|| reader.error(format!("unsupported filter object type: \"{word}\"")))?;
        let pattern = reader.read_pattern(rest)?;
        items.push(FilterItem {
            line: lineno,
            command,
            object,
            pattern,
        });
    }
    Ok(items)
}

/// C's `isspace` in the "C" locale.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// The next run of non-space characters, and what follows it.
fn keyword(s: &str) -> (&str, &str) {
    let s = s.trim_start_matches(is_space);
    let end = s.find(is_space).unwrap_or(s.len());
    s.split_at(end)
}

struct Lines<'a> {
    /// Each with its line end, as `pg_get_line_buf` returns them.
    lines: Vec<&'a str>,
    /// 1-based number of the last line read.
    next: usize,
    name: &'a str,
}

impl<'a> Lines<'a> {
    fn next_line(&mut self) -> Option<&'a str> {
        let line = self.lines.get(self.next).copied();
        if line.is_some() {
            self.next += 1;
        }
        line
    }

    fn error(&self, what: String) -> Error {
        Error::Usage(format!(
            "invalid format in filter read from file \"{}\" on line {}: {what}",
            self.name, self.next
        ))
    }

    /// `read_pattern` of filter.c: the pattern up to the end of the line or a `#`.
    fn read_pattern(&mut self, s: &'a str) -> Result<String> {
        let mut out = String::new();
        let mut chars: Vec<char> = s.chars().collect();
        let mut i = 0;
        while i < chars.len() && is_space(chars[i]) {
            i += 1;
        }
        if i == chars.len() {
            return Err(self.error("missing object name pattern".into()));
        }
        let mut skip_space = true;
        let mut found_space = false;
        while i < chars.len() && chars[i] != '#' {
            while i < chars.len() && !is_space(chars[i]) && !"#,.()\"".contains(chars[i]) {
                if !skip_space && found_space {
                    out.push(' ');
                    skip_space = true;
                }
                out.push(chars[i]);
                i += 1;
            }
            skip_space = false;
            match chars.get(i) {
                Some('"') => {
                    if found_space {
                        out.push(' ');
                    }
                    // A quoted part may continue on the following lines.
                    let (rest, at) = self.read_quoted(chars, i, &mut out)?;
                    chars = rest;
                    i = at;
                }
                Some(',') => {
                    out.push_str(", ");
                    skip_space = true;
                    i += 1;
                }
                Some(c @ ('.' | '(' | ')')) => {
                    out.push(*c);
                    skip_space = true;
                    i += 1;
                }
                _ => {}
            }
            found_space = false;
            while i < chars.len() && is_space(chars[i]) {
                found_space = true;
                i += 1;
            }
        }
        Ok(out)
    }

    /// `read_quoted_string` of filter.c, from the opening quote at `chars[i]`: returns the
    /// characters of the line it ends on and the position after the closing quote.
    fn read_quoted(
        &mut self,
        mut chars: Vec<char>,
        mut i: usize,
        out: &mut String,
    ) -> Result<(Vec<char>, usize)> {
        out.push('"');
        i += 1;
        loop {
            if matches!(chars.get(i), Some('\r' | '\n')) {
                i += 1;
                continue;
            }
            if i >= chars.len() {
                let Some(line) = self.next_line() else {
                    return Err(self.error("unexpected end of file".into()));
                };
                chars = line.chars().collect();
                i = 0;
                out.push('\n');
            }
            match chars.get(i) {
                Some('"') => {
                    out.push('"');
                    i += 1;
                    if chars.get(i) == Some(&'"') {
                        out.push('"');
                        i += 1;
                    } else {
                        break;
                    }
                }
                Some('\\') => {
                    i += 1;
                    match chars.get(i) {
                        Some('n') => out.push('\n'),
                        Some('\\') => out.push('\\'),
                        _ => {}
                    }
                    i += 1;
                }
                Some(&c) => {
                    out.push(c);
                    i += 1;
                }
                None => {}
            }
        }
        Ok((chars, i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(text: &str) -> Vec<(FilterCommand, FilterObject, String, usize)> {
        parse(text, "f.txt")
            .unwrap()
            .into_iter()
            .map(|i| (i.command, i.object, i.pattern, i.line))
            .collect()
    }

    #[test]
    fn commands_types_comments_and_lines() {
        let got = items(
            "# a comment\n\n  include table public.orders\nEXCLUDE Table_Data audit_log  # big\n\
             exclude schema \"Sales Data\"\n",
        );
        assert_eq!(
            got,
            vec![
                (
                    FilterCommand::Include,
                    FilterObject::Table,
                    "public.orders".into(),
                    3
                ),
                (
                    FilterCommand::Exclude,
                    FilterObject::TableData,
                    "audit_log".into(),
                    4
                ),
                (
                    FilterCommand::Exclude,
                    FilterObject::Schema,
                    "\"Sales Data\"".into(),
                    5
                ),
            ]
        );
    }

    #[test]
    fn spaces_are_normalised_as_filter_c_does() {
        // A space before a quoted part is kept, as filter.c keeps it.
        let got = items("include table  public .  t\ninclude table a b\ninclude table s. \"T\"\n");
        assert_eq!(got[0].2, "public.t");
        assert_eq!(got[2].2, "s. \"T\"");
        assert_eq!(got[1].2, "a b");
    }

    #[test]
    fn quoted_names_keep_quotes_escapes_and_span_lines() {
        let got = items("include table \"a\"\"b\\\\c\"\ninclude table \"two\nlines\".t\n");
        assert_eq!(got[0].2, "\"a\"\"b\\c\"");
        assert_eq!(got[1].2, "\"two\nlines\".t");
        assert_eq!(got[1].3, 2);
    }

    #[test]
    fn errors_name_file_and_line() {
        for (text, what, line) in [
            ("\nfrobnicate table x\n", "invalid filter command", 2),
            ("include\n", "missing filter object type", 1),
            (
                "include tables x\n",
                "unsupported filter object type: \"tables\"",
                1,
            ),
            ("include table\n", "missing object name pattern", 1),
            ("include table \"open\n", "unexpected end of file", 1),
        ] {
            let e = parse(text, "f.txt").unwrap_err().to_string();
            assert!(
                e.contains(what) && e.contains(&format!("\"f.txt\" on line {line}")),
                "{text:?}: {e}"
            );
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
