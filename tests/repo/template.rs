//! The repository the tests of `tests/repo.rs` share: real backups of two databases and a
//! cluster on simulated days, plus edited copies (failed, in progress, interrupted), built once;
//! each test works on its own copy.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::support::{cluster, dbbackup, run_ok};

/// Everything the tests share: the template repository and its two databases.
pub struct Template {
    pub repo: PathBuf,
    pub a: String,
    pub b: String,
    _root: tempfile::TempDir,
}

static TEMPLATE: OnceLock<Template> = OnceLock::new();

/// The real backups: (database A or B or the cluster, time, format).
pub const A_TIMES: [&str; 5] = [
    "2026-10-31T02:00:00Z",
    "2026-11-20T02:00:00Z",
    "2026-11-27T02:00:00Z",
    "2026-11-28T02:00:00Z",
    "2026-11-29T02:00:00Z",
];
pub const B_TIMES: [&str; 2] = ["2026-11-28T02:00:00Z", "2026-11-29T02:00:00Z"];
pub const CLUSTER_TIME: &str = "2026-11-29T03:00:00Z";
/// Edited copies of A's backups.
pub const A_FAILED: &str = "20261125T020000Z";
pub const A_IN_PROGRESS: &str = "20261126T020000Z";
pub const A_INTERRUPTED: &str = "20261129T120000Z";

pub fn stamp(rfc3339: &str) -> String {
    rfc3339.replace(['-', ':'], "")
}

pub fn at(when: &str) -> Command {
    let mut cmd = dbbackup();
    cmd.env("DBBACKUP_TEST_NOW", when);
    cmd
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

pub fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

pub fn template() -> &'static Template {
    TEMPLATE.get_or_init(|| {
        let c = cluster();
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("repo");
        let (a, b) = (c.unique_db("repo_a"), c.unique_db("repo_b"));
        for db in [&a, &b] {
            c.create_db(db);
            c.psql(db, "CREATE TABLE t (id int PRIMARY KEY, note text)");
        }
        // One more row before each backup of A: the row count tells which backup was restored.
        for (i, when) in A_TIMES.iter().enumerate() {
            c.psql(&a, &format!("INSERT INTO t VALUES ({i}, 'day {when}')"));
            let format = if i == A_TIMES.len() - 1 {
                "native"
            } else {
                "custom"
            };
            run_ok(
                at(when)
                    .args(["backup", "single", "-q", "--format", format, &a, "--repo"])
                    .arg(&repo),
            );
        }
        c.psql(
            &b,
            "INSERT INTO t SELECT g, 'b' FROM generate_series(1, 100) g",
        );
        for when in B_TIMES {
            run_ok(
                at(when)
                    .args(["backup", "single", "-q", "--format", "plain", &b, "--repo"])
                    .arg(&repo),
            );
        }
        run_ok(
            at(CLUSTER_TIME)
                .args(["backup", "cluster", "-q", "--format", "custom"])
                .args(["--include-database", &a, "--include-database", &b, "--repo"])
                .arg(&repo),
        );

        let a_dir = repo.join(&a);
        let copy = |from: &str, to: &str| copy_dir(&a_dir.join(stamp(from)), &a_dir.join(to));
        copy(A_TIMES[1], A_FAILED);
        edit_manifest(&a_dir.join(A_FAILED), |m| {
            m["status"] = "failed".into();
            m["error"] = "connection lost".into();
            m["finished_at"] = "2026-11-25T02:10:00Z".into();
        });
        copy(A_TIMES[1], A_IN_PROGRESS);
        edit_manifest(&a_dir.join(A_IN_PROGRESS), |m| {
            m["status"] = "in_progress".into();
            m.as_object_mut().unwrap().remove("finished_at");
        });
        // Held by this test process: alive for as long as the tests run.
        let holder = serde_json::json!({
            "host": hostname(), "pid": std::process::id(), "started_at": "2026-11-26T02:00:00Z"
        });
        write_json(&a_dir.join(A_IN_PROGRESS).join(".dbbackup.lock"), &holder);
        copy(A_TIMES[4], A_INTERRUPTED);
        edit_manifest(&a_dir.join(A_INTERRUPTED), |m| {
            m["status"] = "in_progress".into();
            m.as_object_mut().unwrap().remove("finished_at");
        });
        Template {
            repo,
            a,
            b,
            _root: root,
        }
    })
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

pub fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("manifest.json");
    let mut m = read_json(&path);
    edit(&mut m);
    write_json(&path, &m);
}

pub fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success(), "cp -a {from:?} {to:?}");
}

/// A fresh copy of the template repository, and the directory that holds it.
pub fn repo_copy() -> (tempfile::TempDir, PathBuf) {
    let t = template();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    copy_dir(&t.repo, &repo);
    (dir, repo)
}

/// The backup directories (times) of `db_dir` in `repo` that still hold anything.
pub fn remaining(repo: &Path, db_dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(repo.join(db_dir))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| std::fs::read_dir(e.path()).is_ok_and(|mut d| d.next().is_some()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub fn list_json(repo: &Path) -> Value {
    let out = run_ok(dbbackup().args(["list", "--json", "--repo"]).arg(repo));
    serde_json::from_slice(&out.stdout).unwrap()
}
