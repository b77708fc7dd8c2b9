//! A tokenizer for pg_dump's SQL, as far as finding qualified names needs (see the parent
//! module's comment): PostgreSQL's `scan.l` rules for identifiers, literals, dollar quotes and
//! comments; everything else is one byte of [`Kind::Other`].

use crate::error::{ArchiveError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    /// Whitespace or a comment.
    Trivia,
    /// An identifier's value: unquoted (folded to lower case) or quoted (`""` undone).
    Ident(String),
    /// A string literal's value; `escapes` for backslash escapes (`E''`).
    Str {
        value: String,
        escapes: bool,
    },
    Dot,
    Colon,
    /// Anything else: numbers, operators, punctuation, dollar-quoted text, other literals.
    Other,
}

impl Kind {
    pub(super) fn ident(&self) -> Option<&str> {
        match self {
            Kind::Ident(v) => Some(v),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub(super) struct Tok {
    pub(super) kind: Kind,
    pub(super) start: usize,
    pub(super) end: usize,
}

fn ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn ident_cont(b: u8) -> bool {
    ident_start(b) || b.is_ascii_digit() || b == b'$'
}

fn unterminated(what: &str, at: usize) -> crate::error::Error {
    ArchiveError::Sql(format!("unterminated {what} starting at byte {at}")).into()
}

pub(super) fn tokenize(sql: &str, std_strings: bool) -> Result<Vec<Tok>> {
    let b = sql.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let c = b[i];
        let kind = if c.is_ascii_whitespace() {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            Kind::Trivia
        } else if b[i..].starts_with(b"--") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            Kind::Trivia
        } else if b[i..].starts_with(b"/*") {
            // Comments nest in PostgreSQL.
            let mut depth = 0;
            loop {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else if i >= b.len() {
                    return Err(unterminated("comment", start));
                } else {
                    i += 1;
                }
            }
            Kind::Trivia
        } else if c == b'"' {
            let (value, end) = quoted(sql, i, b'"', false)
                .ok_or_else(|| unterminated("quoted identifier", start))?;
            i = end;
            Kind::Ident(value)
        } else if c == b'\'' {
            let escapes = !std_strings;
            let (value, end) = quoted(sql, i, b'\'', escapes)
                .ok_or_else(|| unterminated("string literal", start))?;
            i = end;
            Kind::Str { value, escapes }
        } else if (c == b'e' || c == b'E') && b.get(i + 1) == Some(&b'\'') {
            let (value, end) = quoted(sql, i + 1, b'\'', true)
                .ok_or_else(|| unterminated("string literal", start))?;
            i = end;
            Kind::Str {
                value,
                escapes: true,
            }
        } else if matches!(c, b'b' | b'B' | b'x' | b'X' | b'n' | b'N')
            && b.get(i + 1) == Some(&b'\'')
        {
            // Bit strings and national literals: no escapes; never a name.
            let (_, end) = quoted(sql, i + 1, b'\'', false)
                .ok_or_else(|| unterminated("string literal", start))?;
            i = end;
            Kind::Other
        } else if (c == b'u' || c == b'U') && b[i + 1..].starts_with(b"&'") {
            let (_, end) = quoted(sql, i + 2, b'\'', false)
                .ok_or_else(|| unterminated("string literal", start))?;
            i = end;
            Kind::Other
        } else if (c == b'u' || c == b'U') && b[i + 1..].starts_with(b"&\"") {
            // A Unicode-escaped identifier: kept as written (pg_dump never writes one).
            let (_, end) = quoted(sql, i + 2, b'"', false)
                .ok_or_else(|| unterminated("quoted identifier", start))?;
            i = end;
            Kind::Other
        } else if c == b'$' {
            // $tag$ ... $tag$ (tag empty or an identifier without `$`), else a parameter ($1).
            let mut k = i + 1;
            while k < b.len() && ident_cont(b[k]) && b[k] != b'$' {
                k += 1;
            }
            let tag_ok =
                k < b.len() && b[k] == b'$' && !b.get(i + 1).is_some_and(|d| d.is_ascii_digit());
            if tag_ok {
                let delim = &sql[i..=k];
                let body = k + 1;
                let close = sql[body..]
                    .find(delim)
                    .ok_or_else(|| unterminated("dollar quote", start))?;
                i = body + close + delim.len();
            } else {
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            Kind::Other
        } else if ident_start(c) {
            while i < b.len() && ident_cont(b[i]) {
                i += 1;
            }
            Kind::Ident(sql[start..i].to_ascii_lowercase())
        } else if c.is_ascii_digit() {
            // Numbers, including 1.5 and 1e10: their dots are no qualification.
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                i += 1;
            }
            Kind::Other
        } else {
            i += 1;
            match c {
                b'.' => Kind::Dot,
                b':' => Kind::Colon,
                _ => Kind::Other,
            }
        };
        toks.push(Tok {
            kind,
            start,
            end: i,
        });
    }
    Ok(toks)
}

/// The value of the quoted text opening at `open` (a doubled quote stands for one; with
/// `escapes`, a backslash takes the next character literally, enough to find the end and to
/// compare names) and the index after its closing quote.
fn quoted(sql: &str, open: usize, q: u8, escapes: bool) -> Option<(String, usize)> {
    let b = sql.as_bytes();
    let mut i = open + 1;
    let mut seg = i;
    let mut value = String::new();
    loop {
        match b.get(i)? {
            &c if c == q => {
                value.push_str(&sql[seg..i]);
                if b.get(i + 1) == Some(&q) {
                    value.push(q as char);
                    i += 2;
                    seg = i;
                } else {
                    return Some((value, i + 1));
                }
            }
            b'\\' if escapes => {
                value.push_str(&sql[seg..i]);
                let next = sql[i + 1..].chars().next()?;
                value.push(next);
                i += 1 + next.len_utf8();
                seg = i;
            }
            _ => i += 1,
        }
    }
}
