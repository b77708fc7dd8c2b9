//! Name patterns as psql and pg_dump read them (`-t`, `-T`, `-n`, `-N`): `*` is any run of
//! characters, `?` one character, an unquoted `.` separates schema from name, double quotes keep
//! case and make `*`, `?` and `.` literal (`""` is one quote), unquoted letters are folded to
//! lower case, `$` is always literal, and other regular-expression characters outside quotes pass
//! through, so `-t 'part_20[0-9][0-9]'` works as it does with pg_dump. A pattern matches a whole
//! name.
//!
//! The translation follows PostgreSQL's `patternToSQLRegex` (src/fe_utils/string_utils.c), so
//! the same text selects the same tables whether pg_dump evaluates it on the server (plain and
//! custom backups) or dbbackup does here (native backups, restore). The regular expressions are
//! kept in the server's spelling ([`NamePattern::sql_regex`]) and compiled for matching here;
//! PostgreSQL's regex dialect and the `regex` crate agree on everything a name pattern uses (an
//! advanced expression that only one side knows is refused when compiled, never matched
//! differently in silence).
//!
//! Which schema an unqualified table pattern looks in is the caller's business: pg_dump matches
//! it against tables visible in the server's default `search_path`; a restore has no server
//! path to consult, and matches it in every schema, as `pg_restore -t` does.

use regex::Regex;

use crate::error::{Error, Result};

/// What a pattern names: tables (and other relations) or schemas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternKind {
    /// `[database.][schema.]name`
    Relation,
    /// `[database.]schema`
    Schema,
}

/// One `-t`/`-T`/`-n`/`-N` pattern, parsed.
#[derive(Debug, Clone)]
pub struct NamePattern {
    text: String,
    kind: PatternKind,
    /// The database part of a `database.schema.name` pattern, as a regular expression.
    database: Option<Part>,
    /// The schema part (`None`: any schema, for an unqualified relation pattern or `schema.*`).
    schema: Option<Part>,
    /// The relation part of a relation pattern (`None`: any name, as in `schema.*`).
    name: Option<Part>,
}

#[derive(Debug, Clone)]
struct Part {
    /// `^(…)$`, as pg_dump sends it to the server.
    sql: String,
    compiled: Regex,
}

impl NamePattern {
    /// A relation pattern: `name`, `schema.name` or `database.schema.name`.
    pub fn relation(text: &str) -> Result<NamePattern> {
        NamePattern::parse(text, PatternKind::Relation)
    }

    /// A schema pattern: `schema` or `database.schema`.
    pub fn schema(text: &str) -> Result<NamePattern> {
        NamePattern::parse(text, PatternKind::Schema)
    }

    pub fn parse(text: &str, kind: PatternKind) -> Result<NamePattern> {
        let parts = split_pattern(text);
        let max = match kind {
            PatternKind::Relation => 3,
            PatternKind::Schema => 2,
        };
        if parts.len() > max {
            return Err(Error::Usage(format!(
                "improper qualified name (too many dotted names): {text}"
            )));
        }
        let mut compiled = Vec::with_capacity(parts.len());
        for part in &parts {
            compiled.push(Part::new(part, text)?);
        }
        // pg_dump leaves out a condition whose regex is `.*` (as in `schema.*`): same result,
        // cheaper query; keeping it `None` here also tells callers "any".
        let mut compiled: Vec<Option<Part>> = compiled
            .into_iter()
            .map(|p| (p.sql != "^(.*)$").then_some(p))
            .collect();
        let mut take_last = || compiled.pop().flatten();
        let (name, schema, database) = match kind {
            PatternKind::Relation => {
                let name = take_last();
                let schema = if parts.len() >= 2 { take_last() } else { None };
                let database = if parts.len() == 3 { take_last() } else { None };
                (name, schema, database)
            }
            PatternKind::Schema => {
                let schema = take_last();
                let database = if parts.len() == 2 { take_last() } else { None };
                (None, schema, database)
            }
        };
        Ok(NamePattern {
            text: text.to_string(),
            kind,
            database,
            schema,
            name,
        })
    }

    /// The pattern as the user wrote it (for messages, the manifest, and pg_dump's arguments).
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn kind(&self) -> PatternKind {
        self.kind
    }

    /// True when a relation pattern names its schema (`schema.name`); an unqualified one is
    /// matched by the caller's rule (see the module comment).
    pub fn is_qualified(&self) -> bool {
        match self.kind {
            PatternKind::Relation => split_pattern(&self.text).len() >= 2,
            PatternKind::Schema => true,
        }
    }

    /// Whether the database part (if any) matches `database`. pg_dump refuses a pattern whose
    /// database part is not the database being dumped ("cross-database references are not
    /// implemented"); callers do the same with this.
    pub fn database_matches(&self, database: &str) -> bool {
        self.database
            .as_ref()
            .is_none_or(|d| d.compiled.is_match(database))
    }

    /// Refuses a pattern whose database part names another database than `database`, in
    /// pg_dump's words.
    pub fn check_database(&self, database: &str) -> Result<()> {
        if self.database_matches(database) {
            Ok(())
        } else {
            Err(Error::Usage(format!(
                "cross-database references are not implemented: {}",
                self.text
            )))
        }
    }

    /// A schema pattern: does it match `schema`? A relation pattern: does its schema part?
    pub fn matches_schema(&self, schema: &str) -> bool {
        self.schema
            .as_ref()
            .is_none_or(|s| s.compiled.is_match(schema))
    }

    /// A relation pattern: does it match the relation `schema.name`? An unqualified pattern
    /// matches the name in any schema.
    pub fn matches(&self, schema: &str, name: &str) -> bool {
        debug_assert_eq!(self.kind, PatternKind::Relation);
        self.matches_schema(schema) && self.name.as_ref().is_none_or(|n| n.compiled.is_match(name))
    }

    /// The server-side regular expressions (`^(…)$`) for the schema and name parts, `None` where
    /// the part matches anything, as pg_dump would compare them with `OPERATOR(pg_catalog.~)`.
    pub fn sql_regex(&self) -> (Option<&str>, Option<&str>) {
        (
            self.schema.as_ref().map(|p| p.sql.as_str()),
            self.name.as_ref().map(|p| p.sql.as_str()),
        )
    }
}

impl std::fmt::Display for NamePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Part {
    fn new(body: &str, whole: &str) -> Result<Part> {
        let sql = format!("^({body})$");
        let compiled = Regex::new(&sql).map_err(|e| {
            Error::Usage(format!(
                "pattern {whole:?} is not a valid name pattern: {}",
                e.to_string()
                    .lines()
                    .last()
                    .unwrap_or("invalid regular expression")
            ))
        })?;
        Ok(Part { sql, compiled })
    }
}

/// Splits a pattern at its unquoted dots and turns each part into a regular expression body, as
/// `patternToSQLRegex` does.
fn split_pattern(text: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut in_quotes = false;
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        let current = parts.last_mut().expect("at least one part");
        match ch {
            '"' if in_quotes && chars.peek() == Some(&'"') => {
                chars.next();
                current.push('"');
            }
            '"' => in_quotes = !in_quotes,
            c if !in_quotes && c.is_ascii_uppercase() => current.push(c.to_ascii_lowercase()),
            '*' if !in_quotes => current.push_str(".*"),
            '?' if !in_quotes => current.push('.'),
            '.' if !in_quotes => parts.push(String::new()),
            '$' => current.push_str("\\$"),
            c => {
                if in_quotes && "|*+?()[]{}.^$\\".contains(c) {
                    current.push('\\');
                } else if c == '[' && chars.peek() == Some(&']') {
                    // "[]" is far more likely an array type name than a bracket expression.
                    current.push('\\');
                }
                current.push(c);
            }
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(t: &str) -> NamePattern {
        NamePattern::relation(t).unwrap()
    }

    #[test]
    fn unquoted_letters_fold_and_wildcards_translate() {
        let p = rel("Public.Ord*");
        assert_eq!(p.sql_regex(), (Some("^(public)$"), Some("^(ord.*)$")));
        assert!(p.matches("public", "orders"));
        assert!(p.matches("public", "ord"));
        assert!(!p.matches("public", "Orders"));
        assert!(!p.matches("public", "xorders"));
        assert!(rel("t?").matches("s", "t1"));
        assert!(!rel("t?").matches("s", "t12"));
    }

    #[test]
    fn quotes_keep_case_and_make_wildcards_and_dots_literal() {
        let p = rel(r#""Sales Data"."Ünïcode ""quoted"" table""#);
        assert!(p.matches("Sales Data", "Ünïcode \"quoted\" table"));
        assert!(!p.matches("sales data", "Ünïcode \"quoted\" table"));
        let p = rel(r#""a.b*""#);
        assert!(!p.is_qualified());
        assert!(p.matches("any", "a.b*"));
        assert!(!p.matches("any", "a.bc"));
        assert!(!p.matches("any", "axb"));
        // Quoted and unquoted pieces join within one part.
        assert!(rel(r#"public."MixedCase"_x*"#).matches("public", "MixedCase_x1"));
    }

    #[test]
    fn schema_star_and_unqualified_match_any() {
        let p = rel("app.*");
        assert_eq!(p.sql_regex(), (Some("^(app)$"), None));
        assert!(p.matches("app", "anything"));
        assert!(!p.matches("apps", "anything"));
        let p = rel("orders");
        assert!(!p.is_qualified());
        assert!(p.matches("public", "orders") && p.matches("billing", "orders"));
    }

    #[test]
    fn regex_characters_pass_through_outside_quotes_dollar_never() {
        let p = rel("part_20[0-9][0-9]");
        assert!(p.matches("s", "part_2024") && !p.matches("s", "part_20x4"));
        assert!(rel("a|b").matches("s", "b"));
        assert!(!rel("a|b").matches("s", "ab"));
        let p = rel("price$");
        assert!(p.matches("s", "price$") && !p.matches("s", "price"));
        // "[]" is an array type, not a bracket expression.
        assert!(rel("int[]").matches("s", "int[]"));
    }

    #[test]
    fn database_and_schema_parts() {
        let p = rel("shop.public.orders");
        assert!(p.database_matches("shop") && !p.database_matches("other"));
        assert!(p.matches("public", "orders"));
        let s = NamePattern::schema("Billing*").unwrap();
        assert!(s.matches_schema("billing_eu") && !s.matches_schema("public"));
        let s = NamePattern::schema("shop.billing").unwrap();
        assert!(s.database_matches("shop") && s.matches_schema("billing"));
        assert!(rel("orders").database_matches("anything"));
    }

    #[test]
    fn too_many_dots_and_bad_regex_are_usage_errors() {
        for (text, kind) in [
            ("a.b.c.d", PatternKind::Relation),
            ("a.b.c", PatternKind::Schema),
            ("a(", PatternKind::Relation),
        ] {
            let err = NamePattern::parse(text, kind).unwrap_err();
            assert!(matches!(err, Error::Usage(_)), "{text}: {err}");
            assert!(err.to_string().contains(text), "{err}");
        }
    }
}
