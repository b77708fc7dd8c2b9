//! The password file (`~/.pgpass`, `PGPASSFILE`), parsed with libpq's rules.

use std::path::Path;

/// One pgpass line; `None` fields are the `*` wildcard. No `Debug`: it holds a password.
#[derive(Clone)]
pub(super) struct PassEntry {
    pub(super) host: Option<String>,
    pub(super) port: Option<String>,
    pub(super) database: Option<String>,
    pub(super) user: Option<String>,
    pub(super) password: String,
}

pub(super) fn field_matches(pattern: &Option<String>, value: &str) -> bool {
    pattern.as_deref().is_none_or(|p| p == value)
}

/// Reads a pgpass file like libpq: a missing or unreadable file is silently no file; a file
/// that is not a plain file or is group/world accessible is ignored with a warning.
pub(super) fn read_pgpass(path: &Path) -> Vec<PassEntry> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return Vec::new();
    };
    if !meta.is_file() {
        eprintln!(
            "warning: password file \"{}\" is not a plain file",
            path.display()
        );
        return Vec::new();
    }
    if meta.permissions().mode() & 0o077 != 0 {
        eprintln!(
            "warning: password file \"{}\" has group or world access; permissions should be u=rw (0600) or less",
            path.display()
        );
        return Vec::new();
    }
    std::fs::read_to_string(path)
        .map(|text| parse_pgpass(&text))
        .unwrap_or_default()
}

/// Parses `hostname:port:database:username:password` lines. `\` escapes the next character
/// (so `\:` and `\\`); an unescaped `*` field is a wildcard; lines starting with `#` and lines
/// with fewer than five fields are skipped; the password ends at the next unescaped ':'.
pub(super) fn parse_pgpass(text: &str) -> Vec<PassEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(parse_pgpass_line)
        .collect()
}

pub(super) fn parse_pgpass_line(line: &str) -> Option<PassEntry> {
    // (text, whether any character was escaped): "\*" is a literal star, not a wildcard.
    let mut fields: Vec<(String, bool)> = Vec::with_capacity(5);
    let (mut cur, mut escaped) = (String::new(), false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => {
                    cur.push(n);
                    escaped = true;
                }
                None => cur.push('\\'),
            },
            ':' => {
                fields.push((std::mem::take(&mut cur), std::mem::take(&mut escaped)));
                if fields.len() == 5 {
                    break;
                }
            }
            c => cur.push(c),
        }
    }
    if fields.len() == 4 {
        fields.push((cur, escaped));
    }
    if fields.len() < 5 {
        return None;
    }
    let mut it = fields.into_iter();
    let mut pat = || {
        let (text, escaped) = it.next().expect("five fields");
        (escaped || text != "*").then_some(text)
    };
    Some(PassEntry {
        host: pat(),
        port: pat(),
        database: pat(),
        user: pat(),
        // The password field is never a wildcard; pat() gives None only for a bare "*".
        password: pat().unwrap_or_else(|| "*".into()),
    })
}
