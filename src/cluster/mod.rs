//! `backup cluster` / cluster `restore`: every database of a server plus its globals (roles,
//! memberships, role settings, tablespaces), each database isolated from the others' failures.
//!
//! Layout of a cluster backup:
//!
//! ```text
//! DIR/manifest.json               the cluster manifest (kind "cluster", ClusterManifest)
//! DIR/globals/globals.sql[.zst]   pg_dumpall --globals-only, a checksummed chunk
//! DIR/<dir name>/                 one ordinary database backup (its own manifest.json)
//! ```
//!
//! A database's directory name is its name with every byte outside `[A-Za-z0-9_.-]`
//! percent-encoded ([`dir_name`]); the real name is in the cluster manifest.
//!
//! Each database runs under [`run_guarded`]: its connections (and its pg_dump children, through
//! `PGAPPNAME`) carry an application_name of their own, `dbbackup/<pid>/<n>`. When the
//! database's `--timeout` expires (or the run is interrupted) its cancellation token is
//! cancelled, its running statements are cancelled on the server (`pg_cancel_backend`), then,
//! after a grace period, whatever of it is still connected is terminated
//! (`pg_terminate_backend`) and its child processes are killed; its manifest is marked failed
//! (`timeout after <DURATION>`) and the cluster backup goes on with the next database.

mod backup;
mod contents;
mod filters;
mod guard;
mod manifest;
mod restore;

pub use backup::*;
pub use contents::*;
pub use guard::*;
pub use manifest::*;
pub use restore::*;

use crate::error::{Error, Result};
use crate::format::manifest::{Status, MANIFEST_FILE};
use crate::storage::Store;

/// Verifies a cluster backup: the globals chunk and every complete database's directory
/// (with [`crate::verify::verify_dir`]); failed databases are reported as problems.
pub fn verify_cluster(dir: &Store) -> Result<crate::verify::Report> {
    let m = ClusterManifest::load(dir)?;
    let mut report = crate::verify::Report::default();
    match (&m.globals.file, m.globals.status) {
        (Some(c), Status::Complete) => {
            report.files += 1;
            report.stored_bytes += c.stored_bytes;
            report.raw_bytes += c.raw_bytes;
            if c.encrypted && !dir.sealing().can_decrypt() {
                report.warnings.push(crate::verify::contents_not_checked());
            }
            if let Err(e) =
                crate::format::check::verify_chunk(dir, c, crate::format::check::Payload::Opaque)
            {
                report.problems.push(e);
            }
        }
        _ => report.problems.push(Error::manifest(
            dir.describe(MANIFEST_FILE),
            format!(
                "the globals failed: {}",
                m.globals.error.as_deref().unwrap_or("no file")
            ),
        )),
    }
    for d in &m.databases {
        match d.status {
            DbStatus::Skipped => {}
            DbStatus::Complete => match crate::verify::verify_dir(&dir.sub(&d.dir)) {
                Ok(r) => {
                    report.files += r.files;
                    report.stored_bytes += r.stored_bytes;
                    report.raw_bytes += r.raw_bytes;
                    report.rows += r.rows;
                    report.problems.extend(r.problems);
                    report
                        .warnings
                        .extend(r.warnings.into_iter().map(|w| format!("{}: {w}", d.name)));
                }
                Err(e) => report.problems.push(e),
            },
            _ => report.problems.push(Error::manifest(
                dir.describe(MANIFEST_FILE),
                format!(
                    "database {:?} failed: {}",
                    d.name,
                    d.error.as_deref().unwrap_or("no reason recorded")
                ),
            )),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::guard::job_tag;
    use crate::cluster::manifest::is_plain_dir_name;
    use crate::source::conn::ConnParams;

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("shop_*", "shop_eu"));
        assert!(!glob_match("shop_*", "shop"));
        assert!(glob_match("shop?", "shop1"));
        assert!(!glob_match("shop?", "shop12"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(glob_match("a*b*c", "abc"));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(glob_match("*.old", "x.y.old"));
        assert!(glob_match("ü?", "üß"));
        assert!(!glob_match("Shop", "shop"));
        assert!(glob_match("**x", "x"));
        assert!(!glob_match("", "x"));
    }

    #[test]
    fn selection() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(selected("a", &[], &[]));
        assert!(selected("app1", &s(&["app*"]), &[]));
        assert!(!selected("other", &s(&["app*"]), &[]));
        assert!(!selected("app_old", &s(&["app*"]), &s(&["*_old"])));
    }

    #[test]
    fn directory_names() {
        assert_eq!(dir_name("shop_1.v-2"), "shop_1.v-2");
        assert_eq!(dir_name("a b"), "a%20b");
        assert_eq!(dir_name("x/y"), "x%2Fy");
        assert_eq!(dir_name("q\"'"), "q%22%27");
        assert_eq!(dir_name("ü"), "%C3%BC");
        assert_eq!(dir_name("."), "%2E");
        assert_eq!(dir_name(".."), "%2E.");
        assert_eq!(dir_name("globals"), "%67lobals");
        assert_eq!(dir_name("manifest.json"), "%6Danifest.json");
        assert_eq!(dir_name("100%"), "100%25");
        for n in [".", "..", "globals", "a b", "ü", "x/y", "manifest.json"] {
            assert!(is_plain_dir_name(&dir_name(n)), "{n}");
        }
    }

    #[test]
    fn tags_fit_application_name() {
        let mut c = ConnParams::resolve_with(&Default::default(), &|_| None, None).unwrap();
        c.application_name = "x".repeat(100);
        assert!(job_tag(&c).len() <= 63);
        c.application_name = "dbbackup".into();
        assert!(job_tag(&c).starts_with("dbbackup/"));
    }
}
