//! The backup repository in a local directory: `backup --repo` over simulated days
//! (`DBBACKUP_TEST_NOW`), `list` (table and JSON), names (`DB@latest`, `DB@TIME`,
//! `cluster@latest`) for restore and verify, every keep rule of `expire` with `--dry-run` and
//! for real, what expire never deletes, an interrupted expire finished by the next one, and
//! the metrics file read by a Prometheus text-format parser.
//!
//! One repository is built once (real backups of two databases and a cluster, plus three
//! backups given other statuses by editing copies: failed, in progress with a live lock,
//! interrupted); every test works on its own copy of it.

#[path = "repo/prom.rs"]
mod prom;
mod support;
#[path = "repo/template.rs"]
mod template;

use std::path::PathBuf;

use serde_json::Value;
use support::{assert_same, cluster, dbbackup, run_fail, run_ok};

use prom::Metrics;
use template::*;
#[test]
fn list_shows_every_backup_newest_first() {
    let t = template();
    let v = list_json(&t.repo);
    let backups = v["backups"].as_array().unwrap();
    let seen: Vec<(String, String, String)> = backups
        .iter()
        .map(|b| {
            let s = |k: &str| b[k].as_str().unwrap().to_string();
            (s("database"), s("time"), s("status"))
        })
        .collect();
    let (a, b) = (t.a.clone(), t.b.clone());
    let row = |db: &str, when: &str, status: &str| (db.to_string(), stamp(when), status.into());
    assert_eq!(
        seen,
        vec![
            (
                a.clone(),
                A_INTERRUPTED.to_string(),
                "interrupted".to_string()
            ),
            row("cluster", CLUSTER_TIME, "complete"),
            row(&a, A_TIMES[4], "complete"),
            row(&b, B_TIMES[1], "complete"),
            row(&a, A_TIMES[3], "complete"),
            row(&b, B_TIMES[0], "complete"),
            row(&a, A_TIMES[2], "complete"),
            (
                a.clone(),
                A_IN_PROGRESS.to_string(),
                "in_progress".to_string()
            ),
            (a.clone(), A_FAILED.to_string(), "failed".to_string()),
            row(&a, A_TIMES[1], "complete"),
            row(&a, A_TIMES[0], "complete"),
        ]
    );
    let find = |db: &str, when: &str| {
        backups
            .iter()
            .find(|x| x["database"] == db && x["time"] == stamp(when))
            .unwrap()
            .clone()
    };
    let newest_a = find(&a, A_TIMES[4]);
    assert_eq!(newest_a["kind"], "single");
    assert_eq!(newest_a["strategy"], "native");
    assert_eq!(newest_a["consistent"], true);
    assert_eq!(newest_a["encrypted"], false);
    assert_eq!(newest_a["rows"], 5);
    assert_eq!(newest_a["started_at"], A_TIMES[4]);
    assert!(newest_a["raw_bytes"].as_u64().unwrap() > 0);
    assert!(newest_a["stored_bytes"].as_u64().unwrap() > 0);
    assert!(newest_a["duration_secs"].as_f64().unwrap() > 0.0);
    assert!(newest_a["location"]
        .as_str()
        .unwrap()
        .ends_with(&format!("{a}/{}", stamp(A_TIMES[4]))));
    assert_eq!(find(&b, B_TIMES[0])["strategy"], "plain");
    let cl = find("cluster", CLUSTER_TIME);
    assert_eq!(cl["kind"], "cluster");
    assert_eq!(cl["strategy"], "custom");
    // Rows are counted by native backups only: pg_dump streams are not parsed.
    assert_eq!(cl["rows"], 0);
    let db_sizes: u64 = [find(&a, A_TIMES[3]), find(&b, B_TIMES[1])]
        .iter()
        .map(|x| x["raw_bytes"].as_u64().unwrap())
        .sum();
    assert!(
        cl["raw_bytes"].as_u64().unwrap() > db_sizes / 2,
        "sums its databases and globals"
    );

    // The table: a header and one line per backup, in the same order; a pattern filters.
    let out = run_ok(dbbackup().args(["list", "--repo"]).arg(&t.repo));
    let table = text(&out.stdout);
    eprintln!("--- dbbackup list --repo ---\n{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 1 + backups.len(), "{table}");
    assert!(lines[0].starts_with("database") && lines[0].contains("encrypted"));
    assert!(lines[1].starts_with(&a) && lines[1].contains("interrupted"));
    assert!(lines[2].starts_with("cluster") && lines[2].contains("complete"));
    let out = run_ok(
        dbbackup()
            .args(["list", "--repo"])
            .arg(&t.repo)
            .args(["--database", "*_b_*"]),
    );
    assert_eq!(text(&out.stdout).lines().count(), 1 + 2);
}

#[test]
fn names_choose_the_backup_to_restore_and_verify() {
    let t = template();
    let c = cluster();
    // A@latest: the newest complete backup (not the newer interrupted one), native.
    let target = c.unique_db("repo_latest");
    run_ok(
        dbbackup()
            .args(["restore", "-q", "--create", "-d", &target, "--repo"])
            .arg(&t.repo)
            .arg(format!("{}@latest", t.a)),
    );
    assert_same(&c.fingerprint(&t.a), &c.fingerprint(&target));
    // A@TIME: the backup of that day, with the rows it had then.
    let older = c.unique_db("repo_older");
    let name = format!("{}@{}", t.a, stamp(A_TIMES[1]));
    run_ok(
        dbbackup()
            .args(["restore", "-q", "--create", "-d", &older, "--repo"])
            .arg(&t.repo)
            .arg(&name),
    );
    assert_eq!(c.psql(&older, "SELECT count(*) FROM t").trim(), "2");

    run_ok(
        dbbackup()
            .args(["verify", "-q", "--repo"])
            .arg(&t.repo)
            .arg("cluster@latest"),
    );
    // A failed backup named by its time is found, and verify says it is not complete.
    let out = run_fail(
        dbbackup()
            .args(["verify", "--repo"])
            .arg(&t.repo)
            .arg(format!("{}@{A_FAILED}", t.a)),
    );
    assert!(
        text(&out.stderr).contains("not complete"),
        "{}",
        text(&out.stderr)
    );

    let out = run_fail(
        dbbackup()
            .args(["restore", "-d", "x", "--repo"])
            .arg(&t.repo)
            .arg("nosuchdb@latest"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no complete backup of database \"nosuchdb\""));
    let out = run_fail(
        dbbackup()
            .args(["verify", "--repo"])
            .arg(&t.repo)
            .arg("some/path"),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = run_fail(dbbackup().args(["backup", "single", &t.a]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_drill_record_does_not_upset_verify() {
    let (_dir, repo) = repo_copy();
    let t = template();
    let backup = repo.join(&t.a).join(stamp(A_TIMES[4]));
    std::fs::create_dir(backup.join("drills")).unwrap();
    write_json(&backup.join("drills/20261129T050000Z.json"), &drill(true));
    let out = run_ok(
        dbbackup()
            .args(["verify", "--repo"])
            .arg(&repo)
            .arg(format!("{}@latest", t.a)),
    );
    assert!(text(&out.stdout).contains("OK"));
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );
}

fn drill(passed: bool) -> Value {
    serde_json::json!({
        "database": template().a, "started_at": "2026-11-29T05:00:00Z",
        "finished_at": "2026-11-29T05:01:00Z", "duration_secs": 60.0, "passed": passed,
        "differences": [], "scratch_database": "drill_scratch"
    })
}

/// Runs `expire` with `rule` on a copy: the dry run deletes nothing and announces exactly what
/// the real run then deletes; returns the repository afterwards.
fn expire_with(rule: &[&str], a_kept: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let t = template();
    let (dir, repo) = repo_copy();
    let before = remaining(&repo, &t.a);
    let out = run_ok(
        dbbackup()
            .args(["expire", "--dry-run", "--repo"])
            .arg(&repo)
            .args(rule),
    );
    let plan = text(&out.stdout);
    assert_eq!(
        remaining(&repo, &t.a),
        before,
        "the dry run deleted\n{plan}"
    );
    let announced: Vec<String> = plan
        .lines()
        .filter(|l| l.starts_with("would remove"))
        .map(|l| l.split_whitespace().nth(2).unwrap().to_string())
        .collect();
    // Every kept backup says why.
    assert!(
        plan.lines()
            .filter(|l| l.starts_with("keep"))
            .all(|l| l.contains("; ")),
        "{plan}"
    );
    let out = run_ok(dbbackup().args(["expire", "--repo"]).arg(&repo).args(rule));
    let mut want: Vec<String> = a_kept.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(
        remaining(&repo, &t.a),
        want,
        "rule {rule:?}\n{}",
        text(&out.stdout)
    );
    let gone: Vec<String> = before
        .iter()
        .filter(|s| !want.contains(s))
        .map(|s| format!("{}@{s}", t.a))
        .collect();
    for g in &gone {
        assert!(
            announced.contains(g),
            "{g} removed but not announced\n{plan}"
        );
    }
    (dir, repo)
}

/// Besides what a rule keeps of A: its newest complete backup, the one in progress (older
/// than that, but locked) and the interrupted one newer than it. The failed one goes.
fn always_kept(rule_keeps: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = rule_keeps.iter().map(|t| stamp(t)).collect();
    for s in [
        stamp(A_TIMES[4]),
        A_IN_PROGRESS.into(),
        A_INTERRUPTED.into(),
    ] {
        if !v.contains(&s) {
            v.push(s);
        }
    }
    v
}

#[test]
fn keep_last() {
    let kept = always_kept(&[A_TIMES[4], A_TIMES[3]]);
    let kept: Vec<&str> = kept.iter().map(String::as_str).collect();
    let (_d, repo) = expire_with(&["--keep-last", "2"], &kept);
    let t = template();
    assert_eq!(remaining(&repo, &t.b).len(), 2);
    assert_eq!(remaining(&repo, "cluster").len(), 1);
}

#[test]
fn keep_daily() {
    let kept = always_kept(&[A_TIMES[4], A_TIMES[3], A_TIMES[2]]);
    let kept: Vec<&str> = kept.iter().map(String::as_str).collect();
    expire_with(&["--keep-daily", "3"], &kept);
}

#[test]
fn keep_weekly() {
    // 2026-11-29 (Sunday) ends ISO week 48, which also holds the 27th and 28th.
    let kept = always_kept(&[A_TIMES[4], A_TIMES[1]]);
    let kept: Vec<&str> = kept.iter().map(String::as_str).collect();
    expire_with(&["--keep-weekly", "2"], &kept);
}

#[test]
fn keep_monthly() {
    let kept = always_kept(&[A_TIMES[4], A_TIMES[0]]);
    let kept: Vec<&str> = kept.iter().map(String::as_str).collect();
    expire_with(&["--keep-monthly", "2"], &kept);
}

#[test]
fn keep_within_and_database_pattern() {
    // Newer than 2026-11-27T02:00 (the newest minus 2 days): the 28th and the 29th.
    let kept = always_kept(&[A_TIMES[4], A_TIMES[3]]);
    let kept: Vec<&str> = kept.iter().map(String::as_str).collect();
    let t = template();
    let (_d, repo) = expire_with(&["--keep-within", "2d", "--database", &t.a], &kept);
    // Other databases were not considered.
    assert_eq!(remaining(&repo, &t.b).len(), 2);
    let (_d, repo) = repo_copy();
    run_ok(
        dbbackup()
            .args(["expire", "--keep-last", "1", "--database", &t.b, "--repo"])
            .arg(&repo),
    );
    assert_eq!(remaining(&repo, &t.b), vec![stamp(B_TIMES[1])]);
    assert_eq!(remaining(&repo, &t.a).len(), 8);
}

#[test]
fn expire_without_a_rule_deletes_nothing() {
    let (_d, repo) = repo_copy();
    let before = remaining(&repo, &template().a);
    let out = run_fail(dbbackup().args(["expire", "--repo"]).arg(&repo));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no rule given"));
    assert_eq!(remaining(&repo, &template().a), before);
}

#[test]
fn an_interrupted_expire_is_finished_by_the_next() {
    let t = template();
    let (_d, repo) = repo_copy();
    // What an expire killed half-way leaves: the manifest says deleting, some files are gone.
    let victim = repo.join(&t.a).join(stamp(A_TIMES[1]));
    edit_manifest(&victim, |m| m["status"] = "deleting".into());
    let chunk_dir = victim.join("stream");
    let first = std::fs::read_dir(&chunk_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    std::fs::remove_file(first.path()).unwrap();
    let v = list_json(&repo);
    let status = v["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["database"] == t.a.as_str() && b["time"] == stamp(A_TIMES[1]))
        .unwrap()["status"]
        .clone();
    assert_eq!(status, "deleting");
    let out = run_ok(
        dbbackup()
            .args(["expire", "--keep-last", "100", "--repo"])
            .arg(&repo),
    );
    let mut want = always_kept(&A_TIMES[2..]);
    want.push(stamp(A_TIMES[0]));
    want.sort();
    assert_eq!(remaining(&repo, &t.a), want, "{}", text(&out.stdout));
    assert!(!victim.exists());
}

#[test]
fn metrics_file_from_the_repository_and_from_a_run() {
    let t = template();
    let (dir, repo) = repo_copy();
    let backup = repo.join(&t.a).join(stamp(A_TIMES[4]));
    std::fs::create_dir(backup.join("drills")).unwrap();
    write_json(&backup.join("drills/20261129T050000Z.json"), &drill(false));
    let file = dir.path().join("dbbackup.prom");
    run_ok(
        dbbackup()
            .args(["list", "--repo"])
            .arg(&repo)
            .arg("--metrics-file")
            .arg(&file),
    );
    let body = std::fs::read_to_string(&file).unwrap();
    eprintln!("--- metrics file (list --repo --metrics-file) ---\n{body}");
    let m = Metrics::parse(&body);
    let epoch = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp() as f64
    };
    let (a, b) = (t.a.as_str(), t.b.as_str());
    assert_eq!(
        m.get("dbbackup_last_success_timestamp_seconds", a, None),
        epoch(A_TIMES[4])
    );
    // The newest run of A is the interrupted one (it has no end: its start counts).
    assert_eq!(
        m.get("dbbackup_last_failure_timestamp_seconds", a, None),
        epoch("2026-11-29T12:00:00Z")
    );
    assert_eq!(m.get("dbbackup_last_status", a, Some("interrupted")), 1.0);
    assert_eq!(m.get("dbbackup_last_status", a, Some("complete")), 0.0);
    assert_eq!(m.get("dbbackup_last_status", b, Some("complete")), 1.0);
    assert_eq!(
        m.get("dbbackup_last_failure_timestamp_seconds", b, None),
        0.0
    );
    assert_eq!(m.get("dbbackup_last_rows", a, None), 5.0);
    assert_eq!(m.get("dbbackup_last_tables", a, None), 1.0);
    assert_eq!(m.get("dbbackup_last_retries", a, None), 0.0);
    assert_eq!(m.get("dbbackup_backups", a, None), 8.0);
    assert_eq!(m.get("dbbackup_backups", "cluster", None), 1.0);
    assert!(m.get("dbbackup_last_raw_bytes", b, None) > 0.0);
    assert!(m.get("dbbackup_last_stored_bytes", b, None) > 0.0);
    assert!(m.get("dbbackup_previous_raw_bytes", b, None) > 0.0);
    assert!(m.get("dbbackup_last_duration_seconds", "cluster", None) > 0.0);
    // Peak RSS as the runs measured it, for single and cluster backups alike.
    for database in [b, "cluster"] {
        let peak = m.get("dbbackup_last_peak_rss_bytes", database, None);
        assert!(peak > 1e6 && peak < 1e9, "{database}: {peak}");
    }
    assert_eq!(
        m.get("dbbackup_last_drill_timestamp_seconds", a, None),
        epoch("2026-11-29T05:01:00Z")
    );
    assert_eq!(m.get("dbbackup_last_drill_success", a, None), 0.0);

    // A backup that fails writes the file too, and the rescan shows the failure.
    let missing = format!("{}_gone", t.b);
    let out = run_fail(
        at("2026-11-30T02:00:00Z")
            .args([
                "backup",
                "single",
                "-q",
                "--timeout",
                "1h",
                &missing,
                "--repo",
            ])
            .arg(&repo)
            .arg("--metrics-file")
            .arg(&file),
    );
    assert_eq!(out.status.code(), Some(1));
    let m = Metrics::parse(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(m.get("dbbackup_last_status", &missing, Some("failed")), 1.0);
    assert_eq!(
        m.get("dbbackup_last_failure_timestamp_seconds", &missing, None),
        epoch("2026-11-30T02:00:00Z")
    );
    assert_eq!(
        m.get("dbbackup_last_success_timestamp_seconds", &missing, None),
        0.0
    );
    assert_eq!(
        m.get("dbbackup_backups", a, None),
        8.0,
        "the rest of the repository is still there"
    );

    // expire writes it after deleting; --out writes it from that one backup.
    run_ok(
        dbbackup()
            .args(["expire", "--keep-last", "1", "--repo"])
            .arg(&repo)
            .arg("--metrics-file")
            .arg(&file),
    );
    let m = Metrics::parse(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(
        m.get("dbbackup_backups", a, None),
        3.0,
        "newest, in progress, interrupted"
    );
    let single = dir.path().join("single.prom");
    run_ok(
        at("2026-12-01T02:00:00Z")
            .args(["backup", "single", "-q", "--format", "custom", b, "--out"])
            .arg(dir.path().join("out"))
            .arg("--metrics-file")
            .arg(&single),
    );
    let m = Metrics::parse(&std::fs::read_to_string(&single).unwrap());
    assert_eq!(
        m.get("dbbackup_last_success_timestamp_seconds", b, None),
        epoch("2026-12-01T02:00:00Z")
    );
    assert_eq!(m.get("dbbackup_backups", b, None), 1.0);
    assert_eq!(m.databases(), vec![b.to_string()]);
}
