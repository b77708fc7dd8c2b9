//! A backup repository in an S3-compatible store (SeaweedFS, started by the harness): backups
//! with `--repo s3://…` on two simulated days, `list --json`, `DB@latest` restore, and
//! `expire` removing exactly the older backup's objects.

mod support;

use std::process::Command;

use support::s3::{dbbackup_s3, run_ok_secretless, s3};
use support::{assert_same, cluster};

fn at(when: &str) -> Command {
    let mut cmd = dbbackup_s3();
    cmd.env("DBBACKUP_TEST_NOW", when);
    cmd
}

#[test]
fn repository_in_object_storage() {
    let c = cluster();
    let db = c.unique_db("repo_s3");
    c.create_db(&db);
    c.psql(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)",
    );
    let repo = s3().location("repo");
    run_ok_secretless(at("2026-11-28T02:00:00Z").args([
        "backup", "single", "-q", "--format", "custom", &db, "--repo", &repo,
    ]));
    c.psql(&db, "INSERT INTO t VALUES (2)");
    run_ok_secretless(at("2026-11-29T02:00:00Z").args([
        "backup", "single", "-q", "--format", "native", &db, "--repo", &repo,
    ]));

    let out = run_ok_secretless(dbbackup_s3().args(["list", "--json", "--repo", &repo]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let times: Vec<&str> = v["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["time"].as_str().unwrap())
        .collect();
    assert_eq!(times, ["20261129T020000Z", "20261128T020000Z"]);
    assert_eq!(v["backups"][0]["status"], "complete");
    assert_eq!(v["backups"][0]["strategy"], "native");
    assert!(v["backups"][0]["location"]
        .as_str()
        .unwrap()
        .starts_with("s3://"));

    let target = c.unique_db("repo_s3_dst");
    run_ok_secretless(dbbackup_s3().args([
        "restore",
        "-q",
        "--create",
        "-d",
        &target,
        "--repo",
        &repo,
        &format!("{db}@latest"),
    ]));
    assert_same(&c.fingerprint(&db), &c.fingerprint(&target));

    let older = format!("{db}/20261128T020000Z/");
    assert!(s3().list(&repo).iter().any(|o| o.starts_with(&older)));
    run_ok_secretless(dbbackup_s3().args(["expire", "--keep-last", "1", "--repo", &repo]));
    let left = s3().list(&repo);
    assert!(!left.iter().any(|o| o.starts_with(&older)), "{left:?}");
    assert!(
        left.contains(&format!("{db}/20261129T020000Z/manifest.json")),
        "{left:?}"
    );
    assert!(
        !left.iter().any(|o| o.ends_with(".dbbackup.lock")),
        "{left:?}"
    );
}
