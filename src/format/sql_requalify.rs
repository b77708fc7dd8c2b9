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

use crate::error::Result;

use keywords::KEYWORDS;
use lex::{tokenize, Kind, Tok};

mod keywords;
mod lex;

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

#[cfg(test)]
mod tests;
