//! The naming rule of `restore --as`: the objects that come with a table restored under a new
//! name (its indexes, constraints, owned sequences, partitions) are renamed so that they do not
//! collide with the original's.
//!
//! Rule: a name that contains the table's old name gets its first occurrence replaced by the
//! new name (`orders_pkey` → `orders_restored_pkey`, `orders_2024` → `orders_restored_2024`);
//! any other name is prefixed with the new name and `_` (`idx_created` →
//! `orders_restored_idx_created`). A result longer than PostgreSQL's 63 bytes is cut at a
//! character boundary; a cut that makes two names equal (or equal to a name already taken)
//! gets a number appended after cutting further, as PostgreSQL names its own indexes
//! (`…_pkey1`).

use std::collections::HashSet;

/// PostgreSQL's `NAMEDATALEN - 1`.
pub const MAX_NAME_BYTES: usize = 63;

/// What a restored table is called: a new name (`--as`), or the old names in another schema
/// (`--into-schema`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenameTarget {
    /// `--as [SCHEMA.]NAME`; no schema: the table's own.
    As {
        schema: Option<String>,
        name: String,
    },
    /// `--into-schema SCHEMA`: names kept.
    IntoSchema(String),
}

/// The rule's name for `old` (see the module documentation), before collisions are resolved.
pub fn renamed(old: &str, old_table: &str, new_table: &str) -> String {
    let full = if old == old_table {
        new_table.to_string()
    } else if let Some(at) = old.find(old_table) {
        format!(
            "{}{}{}",
            &old[..at],
            new_table,
            &old[at + old_table.len()..]
        )
    } else {
        format!("{new_table}_{old}")
    };
    cut(&full, MAX_NAME_BYTES).to_string()
}

/// `s` cut to at most `max` bytes at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// New names for `olds` (in order) by the rule, none equal to another or to a name for which
/// `taken` is true.
pub fn rename_all(
    olds: &[String],
    old_table: &str,
    new_table: &str,
    taken: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut used: HashSet<String> = HashSet::new();
    let mut out = Vec::with_capacity(olds.len());
    for old in olds {
        let base = renamed(old, old_table, new_table);
        let mut name = base.clone();
        let mut n = 0u32;
        while used.contains(&name) || taken(&name) {
            n += 1;
            let suffix = n.to_string();
            name = format!("{}{suffix}", cut(&base, MAX_NAME_BYTES - suffix.len()));
        }
        used.insert(name.clone());
        out.push(name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_containing_the_table_get_the_new_name_others_a_prefix() {
        assert_eq!(
            renamed("orders_pkey", "orders", "orders_restored"),
            "orders_restored_pkey"
        );
        assert_eq!(
            renamed("orders", "orders", "orders_restored"),
            "orders_restored"
        );
        assert_eq!(
            renamed("idx_created", "orders", "orders_restored"),
            "orders_restored_idx_created"
        );
        assert_eq!(renamed("orders_2024", "orders", "old"), "old_2024");
    }

    #[test]
    fn long_names_are_cut_without_collisions() {
        let long = "x".repeat(60);
        let olds = vec![
            format!("{long}_a"),
            format!("{long}_b"),
            "orders_pkey".into(),
        ];
        let got = rename_all(&olds, "orders", &"n".repeat(10), |n| n == "nnnnnnnnnn_pkey");
        assert!(got.iter().all(|n| n.len() <= MAX_NAME_BYTES), "{got:?}");
        assert_eq!(got.iter().collect::<HashSet<_>>().len(), 3, "{got:?}");
        assert_eq!(got[2], "nnnnnnnnnn_pkey1");
        // Multi-byte characters are never split.
        let got = renamed(&"é".repeat(40), "orders", "t");
        assert!(got.len() <= MAX_NAME_BYTES && got.is_char_boundary(got.len()));
    }
}
