//! Renaming relations inside pg_dump's DDL: restoring `public.orders` as
//! `scratch.orders` (then renamed), or into another schema, means rewriting every reference to
//! the qualified name in the entries' definitions, and nothing else.
//!
//! The SQL is tokenized as PostgreSQL's scanner does (`scan.l`), as far as finding names
//! needs: quoted identifiers (`""` inside), unquoted identifiers (folded to lower case), string
//! literals (`''` inside; backslash escapes in `E''` literals, and in plain ones when
//! `standard_conforming_strings` is off), dollar quotes, `--` and nested `/* */` comments. A
//! qualified name `schema.name` (each part quoted or not, compared by its value, whitespace
//! around the dot allowed) is replaced by the new name, quoted only where needed; the name
//! inside a string literal cast to `regclass` (`nextval('public.orders_id_seq'::regclass)`) is
//! rewritten too. Every other byte is left as it was: names in comments, in other literals, in
//! function bodies (dollar quotes), or as the second part of a longer dotted name.

use std::collections::BTreeMap;

use crate::error::{ArchiveError, Result};

/// Qualified relation names to replace: (schema, name) to (schema, name), actual names (not
/// quoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renames {
    pub map: BTreeMap<(String, String), (String, String)>,
    /// How plain string literals read backslashes: the archive's STDSTRINGS entry (`on` for
    /// every pg_dump of a server 9.1 or later with default settings).
    pub standard_conforming_strings: bool,
}

impl Default for Renames {
    fn default() -> Self {
        Renames {
            map: BTreeMap::new(),
            standard_conforming_strings: true,
        }
    }
}

impl Renames {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one rename; returns self for chaining.
    pub fn add(&mut self, from: (&str, &str), to: (&str, &str)) -> &mut Self {
        self.map.insert(
            (from.0.to_string(), from.1.to_string()),
            (to.0.to_string(), to.1.to_string()),
        );
        self
    }

    fn get(&self, schema: &str, name: &str) -> Option<&(String, String)> {
        self.map.get(&(schema.to_string(), name.to_string()))
    }
}

/// `sql` with every reference to a renamed qualified relation name replaced (see the module
/// comment). Fails only on SQL that does not tokenize: an unterminated quote, literal, dollar
/// quote or comment.
pub fn requalify(sql: &str, renames: &Renames) -> Result<String> {
    let toks = tokenize(sql, renames.standard_conforming_strings)?;
    // Indexes of the tokens that are not whitespace or comments.
    let sig: Vec<usize> = (0..toks.len())
        .filter(|&i| !matches!(toks[i].kind, Kind::Trivia))
        .collect();
    let kind = |j: usize| sig.get(j).map(|&i| &toks[i].kind);
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0; // bytes of `sql` already accounted for
    let mut j = 0;
    while j < sig.len() {
        let t = &toks[sig[j]];
        // schema . name, not itself the tail of a dotted name
        if let (Some(schema), Some(Kind::Dot), Some(name)) = (
            t.kind.ident(),
            kind(j + 1),
            kind(j + 2).and_then(Kind::ident),
        ) {
            let after_dot = j > 0 && matches!(kind(j - 1), Some(Kind::Dot));
            if let (false, Some(new)) = (after_dot, renames.get(schema, name)) {
                out.push_str(&sql[copied..t.start]);
                out.push_str(&qualified(new));
                copied = toks[sig[j + 2]].end;
                j += 3;
                continue;
            }
        }
        if let Kind::Str { value, escapes } = &t.kind {
            if casts_to_regclass(&toks, &sig, j) {
                if let Some(new) = literal_rename(value, renames) {
                    out.push_str(&sql[copied..t.start]);
                    out.push_str(&literal(&new, *escapes));
                    copied = t.end;
                }
            }
        }
        j += 1;
    }
    out.push_str(&sql[copied..]);
    Ok(out)
}

/// True when significant token `j` is followed by `::regclass` or `::pg_catalog.regclass`.
fn casts_to_regclass(toks: &[Tok], sig: &[usize], j: usize) -> bool {
    let k = |n: usize| sig.get(j + n).map(|&i| &toks[i]);
    let colons = matches!((k(1), k(2)), (Some(a), Some(b))
        if a.kind == Kind::Colon && b.kind == Kind::Colon && a.end == b.start);
    if !colons {
        return false;
    }
    match k(3).and_then(|t| t.kind.ident()) {
        Some("regclass") => true,
        Some("pg_catalog") => {
            matches!(k(4).map(|t| &t.kind), Some(Kind::Dot))
                && k(5).and_then(|t| t.kind.ident()) == Some("regclass")
        }
        _ => false,
    }
}

/// The new name for a regclass literal's text when it names a renamed relation
/// (`public.orders_id_seq`, `"My Schema"."Seq"`), as `regclassin` would parse it.
fn literal_rename(text: &str, renames: &Renames) -> Option<String> {
    let toks = tokenize(text, true).ok()?;
    let parts: Vec<&Kind> = toks
        .iter()
        .map(|t| &t.kind)
        .filter(|k| !matches!(k, Kind::Trivia))
        .collect();
    match parts.as_slice() {
        [a, Kind::Dot, b] => {
            let new = renames.get(a.ident()?, b.ident()?)?;
            Some(qualified(new))
        }
        _ => None,
    }
}

/// A string literal of `value`: plain with `''`, or `E''` with `\\` and `\'` doubled.
fn literal(value: &str, escapes: bool) -> String {
    if escapes {
        format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

fn qualified((schema, name): &(String, String)) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

/// `name` as PostgreSQL's `quote_identifier` would write it, erring on the side of quoting:
/// bare only when lower-case letters, digits, `_` (not first a digit) and no keyword that is
/// not unreserved.
pub fn quote_ident(name: &str) -> String {
    let plain = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !KEYWORDS.contains(&name);
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// PostgreSQL's reserved, type/function-name and column-name keywords (`kwlist.h`): a bare
/// identifier cannot be one of them.
const KEYWORDS: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "between",
    "bigint",
    "binary",
    "bit",
    "boolean",
    "both",
    "case",
    "cast",
    "char",
    "character",
    "check",
    "coalesce",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "dec",
    "decimal",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "exists",
    "extract",
    "false",
    "fetch",
    "float",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "greatest",
    "group",
    "grouping",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "inout",
    "int",
    "integer",
    "intersect",
    "interval",
    "into",
    "is",
    "isnull",
    "join",
    "json",
    "json_array",
    "json_arrayagg",
    "json_exists",
    "json_object",
    "json_objectagg",
    "json_query",
    "json_scalar",
    "json_serialize",
    "json_table",
    "json_value",
    "lateral",
    "leading",
    "least",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "merge_action",
    "national",
    "natural",
    "nchar",
    "none",
    "normalize",
    "not",
    "notnull",
    "null",
    "nullif",
    "numeric",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "out",
    "outer",
    "overlaps",
    "overlay",
    "placing",
    "position",
    "precision",
    "primary",
    "real",
    "references",
    "returning",
    "right",
    "row",
    "select",
    "session_user",
    "setof",
    "similar",
    "smallint",
    "some",
    "substring",
    "symmetric",
    "system_user",
    "table",
    "tablesample",
    "then",
    "time",
    "timestamp",
    "to",
    "trailing",
    "treat",
    "trim",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "values",
    "varchar",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
    "xmlattributes",
    "xmlconcat",
    "xmlelement",
    "xmlexists",
    "xmlforest",
    "xmlnamespaces",
    "xmlparse",
    "xmlpi",
    "xmlroot",
    "xmlserialize",
    "xmltable",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
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
    fn ident(&self) -> Option<&str> {
        match self {
            Kind::Ident(v) => Some(v),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Tok {
    kind: Kind,
    start: usize,
    end: usize,
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

fn tokenize(sql: &str, std_strings: bool) -> Result<Vec<Tok>> {
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

#[cfg(test)]
mod tests;
