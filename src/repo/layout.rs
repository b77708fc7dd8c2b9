//! Where a backup goes in a repository, and how its time is written.
//!
//! ```text
//! LOCATION/<database dir>/<time>/   one `backup single` (its manifest.json, chunks, drills/)
//! LOCATION/cluster/<time>/          one `backup cluster` (databases inside, as always)
//! LOCATION/.dbbackup.lock           held by `expire` while it deletes
//! ```
//!
//! `<time>` is the backup's start, UTC, to the second: `20261129T020000Z`. `<database dir>` is
//! the database name encoded as a cluster backup encodes its directories
//! ([`crate::cluster::dir_name`]); `cluster` is reserved for cluster backups, so a database
//! literally named `cluster` goes to `%63luster`.

use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::cluster::dir_name;

/// The directory of cluster backups in a repository, and the database name they go by.
pub const CLUSTER: &str = "cluster";

/// The directory of a database's backups: [`dir_name`], with `cluster` encoded too.
pub fn database_dir(name: &str) -> String {
    let dir = dir_name(name);
    if dir == CLUSTER {
        // The first byte percent-encoded, as dir_name does for its own reserved names.
        format!("%{:02X}{}", dir.as_bytes()[0], &dir[1..])
    } else {
        dir
    }
}

/// The name a database directory stands for (percent-decoding); `None` when it is not one
/// [`database_dir`] makes.
pub fn database_of_dir(dir: &str) -> Option<String> {
    let bytes = dir.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = dir.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `20261129T020000Z`: the time in the path of a backup.
pub fn stamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(format_description!(
        "[year][month][day]T[hour][minute][second]Z"
    ))
    .expect("formats")
}

/// The time a [`stamp`] writes; `None` for anything else.
pub fn parse_stamp(text: &str) -> Option<OffsetDateTime> {
    if text.len() != 16 || !text.ends_with('Z') {
        return None;
    }
    let format = format_description!("[year][month][day]T[hour][minute][second]");
    PrimitiveDateTime::parse(&text[..15], format)
        .ok()
        .map(|t| t.assume_utc())
}

/// The place of a new backup of `database` (or of the cluster, for [`CLUSTER`] with
/// `cluster: true`) started at `at`, relative to the repository.
pub fn backup_dir(database: &str, cluster: bool, at: OffsetDateTime) -> String {
    let dir = if cluster {
        CLUSTER.to_string()
    } else {
        database_dir(database)
    };
    format!("{dir}/{}", stamp(at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn stamps_round_trip() {
        let t = datetime!(2026-11-29 02:00:00 UTC);
        assert_eq!(stamp(t), "20261129T020000Z");
        assert_eq!(parse_stamp("20261129T020000Z"), Some(t));
        assert_eq!(parse_stamp("20261129T020000"), None);
        assert_eq!(parse_stamp("latest"), None);
        assert_eq!(parse_stamp("20261329T020000Z"), None);
    }

    #[test]
    fn database_named_cluster_does_not_collide() {
        assert_eq!(database_dir("shop"), "shop");
        assert_eq!(database_dir("cluster"), "%63luster");
        assert_eq!(database_dir("my db"), "my%20db");
        for name in ["cluster", "my db", "Ünïcode/x", "globals"] {
            assert_eq!(database_of_dir(&database_dir(name)).as_deref(), Some(name));
        }
        assert_eq!(
            backup_dir("shop", false, datetime!(2026-11-29 02:00:00 UTC)),
            "shop/20261129T020000Z"
        );
        assert_eq!(
            backup_dir("x", true, datetime!(2026-11-29 02:00:00 UTC)),
            "cluster/20261129T020000Z"
        );
    }
}
