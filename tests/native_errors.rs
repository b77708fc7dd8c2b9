//! Failure behaviour of native backups against the real server: bad input is refused with one
//! clear error line and the right exit status; `verify` and `restore` catch damaged backups and
//! name the damaged file; secrets never reach the backup, the output or a child's command line;
//! and commits made while a backup runs stay out of it.

mod support;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{assert_same, cluster, dbbackup, quote_ident, quote_literal, run_ok, Fingerprint};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `cmd` (stdin closed) to completion, whatever its status.
fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

fn describe(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Asserts the contract for a failed run: exit status `code`, no panic, exactly one line
/// starting `dbbackup: error: `, and every needle in the error message (that line plus the
/// indented lines following it). Returns the error message.
fn assert_error(out: &Output, code: i32, needles: &[&str]) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "wrong exit status\n{}",
        describe(out)
    );
    assert!(
        !stderr.contains("panicked"),
        "the program panicked\n{}",
        describe(out)
    );
    let error_lines = stderr
        .lines()
        .filter(|l| l.starts_with("dbbackup: error: "))
        .count();
    assert_eq!(
        error_lines,
        1,
        "expected exactly one `dbbackup: error: ` line\n{}",
        describe(out)
    );
    let mut message = String::new();
    let mut inside = false;
    for line in stderr.lines() {
        if line.starts_with("dbbackup: error: ") {
            inside = true;
        } else if inside && !line.starts_with(char::is_whitespace) {
            break;
        }
        if inside {
            message.push_str(line);
            message.push('\n');
        }
    }
    for needle in needles {
        assert!(
            message.contains(needle),
            "error message does not mention {needle:?}\n{}",
            describe(out)
        );
    }
    message
}

/// A backup attempt that failed must not leave a manifest claiming a complete backup.
fn assert_no_complete_manifest(dir: &Path) {
    let path = dir.join("manifest.json");
    if let Ok(bytes) = std::fs::read(&path) {
        if let Ok(m) = serde_json::from_slice::<Value>(&bytes) {
            assert_ne!(
                m["status"].as_str(),
                Some("complete"),
                "a failed backup left a complete manifest in {}",
                dir.display()
            );
        }
    }
}

fn database_exists(db: &str) -> bool {
    cluster().psql(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_database WHERE datname = {}",
            quote_literal(db)
        ),
    ) == "1"
}

fn read_manifest(dir: &Path) -> Value {
    let bytes = std::fs::read(dir.join("manifest.json")).expect("read manifest.json");
    serde_json::from_slice(&bytes).expect("manifest.json is JSON")
}

fn write_manifest(dir: &Path, m: &Value) {
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(m).unwrap(),
    )
    .expect("write manifest.json");
}

/// Copies a directory tree (files and directories only).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// Every path below `dir` (not `dir` itself), directories included.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// A data chunk of the manifest: (table as `schema.name`, file, index path into the manifest).
#[derive(Debug, Clone)]
struct DataChunk {
    table: String,
    file: String,
    stored_bytes: u64,
    rows: u64,
    /// (table index, unit index, chunk index) in the manifest.
    at: (usize, usize, usize),
}

/// The largest data chunk holding rows (so a flipped byte lands inside real data).
fn largest_data_chunk(m: &Value) -> DataChunk {
    let mut best: Option<DataChunk> = None;
    for (ti, t) in m["tables"].as_array().expect("tables[]").iter().enumerate() {
        let table = format!(
            "{}.{}",
            t["schema"].as_str().unwrap(),
            t["name"].as_str().unwrap()
        );
        for (ui, u) in t["units"].as_array().unwrap().iter().enumerate() {
            for (ci, c) in u["chunks"].as_array().unwrap().iter().enumerate() {
                let chunk = DataChunk {
                    table: table.clone(),
                    file: c["file"].as_str().unwrap().to_owned(),
                    stored_bytes: c["stored_bytes"].as_u64().unwrap(),
                    rows: c["rows"].as_u64().unwrap(),
                    at: (ti, ui, ci),
                };
                if chunk.rows > 0
                    && best
                        .as_ref()
                        .is_none_or(|b| chunk.stored_bytes > b.stored_bytes)
                {
                    best = Some(chunk);
                }
            }
        }
    }
    best.expect("the backup has a data chunk with rows")
}

fn chunk_json(m: &mut Value, at: (usize, usize, usize)) -> &mut Value {
    &mut m["tables"][at.0]["units"][at.1]["chunks"][at.2]
}

/// Inverts one byte in the middle of `path`.
fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    assert!(bytes.len() >= 2, "{} too small to damage", path.display());
    let i = bytes.len() / 2;
    bytes[i] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

/// Creates a login role with a password (cluster-wide, so the name is made unique).
fn password_role(prefix: &str, password: &str) -> String {
    let role = cluster().unique_db(prefix);
    cluster().psql(
        "postgres",
        &format!(
            "CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}",
            quote_ident(&role),
            quote_literal(password)
        ),
    );
    role
}

/// `dbbackup` connecting over TCP (scram-sha-256) as `role` with `PGPASSWORD=password`.
fn dbbackup_tcp(role: &str, password: &str) -> Command {
    let mut cmd = dbbackup();
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &cluster().port.to_string(),
        "-U",
        role,
    ])
    .env("PGPASSWORD", password);
    cmd
}

// ---------------------------------------------------------------------------------------------
// Shared fixtures
// ---------------------------------------------------------------------------------------------

/// A database loaded with hard_types.sql, backed up once; verify and restore tests work on
/// copies of the backup directory (which lives in the cluster directory, removed at exit).
struct GoodBackup {
    db: String,
    dir: PathBuf,
    fingerprint: Fingerprint,
}

fn good_backup() -> &'static GoodBackup {
    static GOOD: OnceLock<GoodBackup> = OnceLock::new();
    GOOD.get_or_init(|| {
        let c = cluster();
        let db = c.unique_db("errs_src");
        c.create_db(&db);
        c.load_fixture(&db, "hard_types.sql");
        let dir = c.root_dir.join(format!("good-backup-{db}"));
        run_ok(support::backup_native(&db, &dir).args(["--quiet", "--chunk-size", "1MiB"]));
        let fingerprint = c.fingerprint(&db);
        GoodBackup {
            db,
            dir,
            fingerprint,
        }
    })
}

/// A fresh copy of the good backup in its own temp dir.
fn good_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backup");
    copy_dir(&good_backup().dir, &dir);
    (tmp, dir)
}

/// A database with big_table.sql loaded, used only as a template (never connected to after).
fn big_template() -> &'static str {
    static BIG: OnceLock<String> = OnceLock::new();
    BIG.get_or_init(|| {
        let c = cluster();
        let db = c.unique_db("errs_big_tpl");
        c.create_db(&db);
        c.load_fixture(&db, "big_table.sql");
        db
    })
}

/// A new database copied from the big template.
fn big_db(prefix: &str) -> String {
    let c = cluster();
    let tpl = big_template();
    let db = c.unique_db(prefix);
    c.psql(
        "postgres",
        &format!(
            "CREATE DATABASE {} TEMPLATE {}",
            quote_ident(&db),
            quote_ident(tpl)
        ),
    );
    db
}

// ---------------------------------------------------------------------------------------------
// 1. Bad input
// ---------------------------------------------------------------------------------------------

#[test]
fn backup_with_wrong_password_fails_naming_password_authentication() {
    let c = cluster();
    let db = c.unique_db("errs_pw");
    c.create_db(&db);
    let role = password_role("errs_pw_role", "right");
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let out = output(
        dbbackup_tcp(&role, "wrong")
            .args(["backup", "single", "--format", "native", &db, "--out"])
            .arg(&out_dir),
    );
    assert_error(&out, 1, &["password authentication failed", &role]);
    assert_no_complete_manifest(&out_dir);
    c.drop_db(&db);
}

#[test]
fn backup_of_unknown_database_fails_naming_it() {
    let c = cluster();
    let db = c.unique_db("errs_no_such_db");
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let out = output(&mut support::backup_native(&db, &out_dir));
    assert_error(&out, 1, &[&db, "does not exist"]);
    assert_no_complete_manifest(&out_dir);
    assert!(!database_exists(&db));
}

#[test]
fn backup_to_unknown_host_fails_naming_the_host() {
    let c = cluster();
    let db = c.unique_db("errs_host");
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let started = Instant::now();
    let out = output(
        dbbackup()
            .args([
                "-h",
                "no-such-host.invalid",
                "backup",
                "single",
                "--format",
                "native",
                &db,
                "--out",
            ])
            .arg(&out_dir)
            .env("PGCONNECT_TIMEOUT", "20"),
    );
    assert_error(&out, 1, &["no-such-host.invalid"]);
    assert_no_complete_manifest(&out_dir);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn backup_refuses_non_empty_out_dir_and_leaves_its_file_untouched() {
    let c = cluster();
    let db = c.unique_db("errs_nonempty");
    c.create_db(&db);
    c.psql(&db, "CREATE TABLE t(id int); INSERT INTO t VALUES (1)");
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let precious = out_dir.join("precious.txt");
    std::fs::write(&precious, b"do not touch\n").unwrap();
    let out = output(&mut support::backup_native(&db, &out_dir));
    assert_error(&out, 1, &[&out_dir.to_string_lossy(), "not empty"]);
    assert_eq!(std::fs::read(&precious).unwrap(), b"do not touch\n");
    let entries: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("precious.txt")]);
    c.drop_db(&db);
}

#[test]
fn backup_into_unwritable_out_path_fails_naming_the_path() {
    let c = cluster();
    let db = c.unique_db("errs_unwritable");
    c.create_db(&db);
    // A path below a regular file: not even root can create it.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out_dir = file.join("x");
    let out = output(&mut support::backup_native(&db, &out_dir));
    assert_error(&out, 1, &[&out_dir.to_string_lossy()]);
    assert_eq!(std::fs::read(&file).unwrap(), b"x");

    // The brief's example path, too.
    let out = output(dbbackup().args([
        "backup",
        "single",
        "--format",
        "native",
        &db,
        "--out",
        "/etc/passwd/x",
    ]));
    assert_error(&out, 1, &["/etc/passwd/x"]);
    c.drop_db(&db);
}

#[test]
fn compress_level_out_of_range_is_a_usage_error() {
    let c = cluster();
    let db = c.unique_db("errs_level");
    c.create_db(&db);
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let out = output(support::backup_native(&db, &out_dir).args(["--compress-level", "99"]));
    assert_error(&out, 2, &["99"]);
    assert_no_complete_manifest(&out_dir);
    c.drop_db(&db);
}

#[test]
fn unparsable_chunk_size_is_a_usage_error() {
    let c = cluster();
    let db = c.unique_db("errs_chunk_size");
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let out = output(support::backup_native(&db, &out_dir).args(["--chunk-size", "12parsecs"]));
    assert_error(&out, 2, &["12parsecs"]);
    assert!(!out_dir.exists(), "a usage error must not create --out");
    let _ = c;
}

/// Restore of `dir` (with --create into a fresh name) must fail naming manifest.json and must
/// not create the target.
fn assert_restore_rejects_manifest(dir: &Path, needles: &[&str]) {
    let target = cluster().unique_db("errs_bad_manifest_target");
    let out = output(
        dbbackup()
            .arg("restore")
            .arg(dir)
            .args(["--dbname", &target, "--create"]),
    );
    let mut all = vec!["manifest.json"];
    all.extend_from_slice(needles);
    assert_error(&out, 1, &all);
    assert!(
        !database_exists(&target),
        "a refused restore created {target}"
    );
}

#[test]
fn restore_of_garbage_manifest_fails_naming_manifest_json() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("manifest.json"), b"{not json").unwrap();
    assert_restore_rejects_manifest(tmp.path(), &["JSON"]);
}

#[test]
fn restore_of_manifest_from_newer_format_fails_naming_manifest_json() {
    let (_tmp, dir) = good_copy();
    let mut m = read_manifest(&dir);
    m["format_version"] = Value::from(999);
    write_manifest(&dir, &m);
    assert_restore_rejects_manifest(&dir, &["999"]);
}

#[test]
fn restore_of_dir_without_manifest_fails_naming_manifest_json() {
    let tmp = tempfile::tempdir().unwrap();
    assert_restore_rejects_manifest(tmp.path(), &[]);
    // A backup copy whose manifest was removed: the data files alone are not a backup.
    let (_tmp2, dir) = good_copy();
    std::fs::remove_file(dir.join("manifest.json")).unwrap();
    assert_restore_rejects_manifest(&dir, &[]);
}

#[test]
fn restore_refuses_target_with_user_table_without_clean_and_leaves_it_untouched() {
    let c = cluster();
    let good = good_backup();
    let target = c.unique_db("errs_occupied");
    c.create_db(&target);
    c.psql(
        &target,
        "CREATE TABLE keepme(id int primary key, v text); \
         INSERT INTO keepme SELECT g, 'row ' || g FROM generate_series(1, 5) g",
    );
    let before = c.fingerprint(&target);
    let out = output(
        dbbackup()
            .arg("restore")
            .arg(&good.dir)
            .args(["--dbname", &target]),
    );
    assert_error(&out, 1, &[&target, "not empty"]);
    assert_same(&before, &c.fingerprint(&target));
    c.drop_db(&target);
}

/// Restores `dir` into a new database, then again over it: refused without --clean, and with
/// --clean the result equals `source` again.
fn assert_restore_clean_over_restored_matches(dir: &Path, source: &Fingerprint, prefix: &str) {
    let c = cluster();
    let target = c.unique_db(prefix);
    run_ok(
        dbbackup()
            .arg("restore")
            .arg(dir)
            .args(["--dbname", &target, "--create", "--quiet"]),
    );
    assert_same(source, &c.fingerprint(&target));

    // Over the restored database without --clean: refused, nothing changes.
    c.psql(&target, "INSERT INTO app.zerocol DEFAULT VALUES");
    let modified = c.fingerprint(&target);
    let out = output(
        dbbackup()
            .arg("restore")
            .arg(dir)
            .args(["--dbname", &target]),
    );
    assert_error(&out, 1, &[&target, "not empty"]);
    assert_same(&modified, &c.fingerprint(&target));

    // With --clean: replaced by the backup's contents, equal to the source again.
    run_ok(
        dbbackup()
            .arg("restore")
            .arg(dir)
            .args(["--dbname", &target, "--clean", "--quiet"]),
    );
    assert_same(source, &c.fingerprint(&target));
    c.drop_db(&target);
}

#[test]
fn restore_clean_over_restored_database_matches_source() {
    let good = good_backup();
    assert_restore_clean_over_restored_matches(&good.dir, &good.fingerprint, "errs_reclean");
}

/// The same with a custom-format (pg_dump stream) backup of the same database.
#[test]
fn restore_clean_over_restored_database_matches_source_custom_format() {
    let good = good_backup();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("custom");
    run_ok(
        dbbackup()
            .args([
                "backup", "single", "--format", "custom", &good.db, "--quiet", "--out",
            ])
            .arg(&dir),
    );
    assert_restore_clean_over_restored_matches(&dir, &good.fingerprint, "errs_reclean_custom");
}

#[test]
fn restore_create_refuses_existing_database_without_clean() {
    let c = cluster();
    let good = good_backup();
    let target = c.unique_db("errs_exists");
    c.create_db(&target);
    c.psql(
        &target,
        "CREATE TABLE mine(x int); INSERT INTO mine VALUES (7)",
    );
    let before = c.fingerprint(&target);
    let out = output(
        dbbackup()
            .arg("restore")
            .arg(&good.dir)
            .args(["--dbname", &target, "--create"]),
    );
    assert_error(&out, 1, &[&target, "already exists"]);
    assert_same(&before, &c.fingerprint(&target));
    c.drop_db(&target);
}

// ---------------------------------------------------------------------------------------------
// 2. verify / restore catch damaged backups
// ---------------------------------------------------------------------------------------------

fn verify(dir: &Path) -> Output {
    output(dbbackup().arg("verify").arg(dir))
}

#[test]
fn verify_accepts_a_good_backup() {
    let (_tmp, dir) = good_copy();
    let out = verify(&dir);
    assert!(out.status.success(), "{}", describe(&out));
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains("error") && !stderr.contains("panicked"),
        "{}",
        describe(&out)
    );
}

#[test]
fn verify_reports_flipped_byte_in_data_chunk() {
    let (_tmp, dir) = good_copy();
    let chunk = largest_data_chunk(&read_manifest(&dir));
    flip_byte(&dir.join(&chunk.file));
    let out = verify(&dir);
    let msg = assert_error(&out, 1, &[&chunk.file]);
    assert!(
        msg.contains("SHA-256"),
        "a flipped byte must be reported as a checksum (SHA-256) mismatch\n{}",
        describe(&out)
    );
}

#[test]
fn verify_reports_truncated_chunk() {
    let (_tmp, dir) = good_copy();
    let chunk = largest_data_chunk(&read_manifest(&dir));
    let path = dir.join(&chunk.file);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(chunk.stored_bytes / 2).unwrap();
    drop(f);
    let out = verify(&dir);
    assert_error(&out, 1, &[&chunk.file, "size"]);
}

#[test]
fn verify_reports_missing_chunk() {
    let (_tmp, dir) = good_copy();
    let chunk = largest_data_chunk(&read_manifest(&dir));
    std::fs::remove_file(dir.join(&chunk.file)).unwrap();
    let out = verify(&dir);
    assert_error(&out, 1, &[&chunk.file, "missing"]);
}

#[test]
fn verify_reports_manifest_with_edited_row_count() {
    let (_tmp, dir) = good_copy();
    let mut m = read_manifest(&dir);
    let chunk = largest_data_chunk(&m);
    chunk_json(&mut m, chunk.at)["rows"] = Value::from(chunk.rows + 1);
    write_manifest(&dir, &m);
    let out = verify(&dir);
    assert_error(&out, 1, &[&chunk.file, "rows"]);
}

#[test]
fn verify_reports_manifest_with_edited_sha256() {
    let (_tmp, dir) = good_copy();
    let mut m = read_manifest(&dir);
    let chunk = largest_data_chunk(&m);
    let entry = chunk_json(&mut m, chunk.at);
    let old = entry["sha256"].as_str().unwrap().to_owned();
    let first = if old.starts_with('0') { "1" } else { "0" };
    entry["sha256"] = Value::from(format!("{first}{}", &old[1..]));
    write_manifest(&dir, &m);
    let out = verify(&dir);
    assert_error(&out, 1, &[&chunk.file, "SHA-256"]);
}

#[test]
fn verify_reports_every_damaged_file_at_once() {
    let (_tmp, dir) = good_copy();
    let m = read_manifest(&dir);
    let chunk = largest_data_chunk(&m);
    let schema_file = m["schema"][0]["file"].as_str().unwrap().to_owned();
    flip_byte(&dir.join(&chunk.file));
    std::fs::remove_file(dir.join(&schema_file)).unwrap();
    let out = verify(&dir);
    assert_error(&out, 1, &[&chunk.file, &schema_file, "missing"]);
}

#[test]
fn restore_of_backup_with_flipped_byte_fails_naming_chunk_and_table() {
    let c = cluster();
    let (_tmp, dir) = good_copy();
    let chunk = largest_data_chunk(&read_manifest(&dir));
    flip_byte(&dir.join(&chunk.file));
    let target = c.unique_db("errs_restore_flipped");
    let out = output(
        dbbackup()
            .arg("restore")
            .arg(&dir)
            .args(["--dbname", &target, "--create"]),
    );
    assert_error(&out, 1, &[&chunk.file, &chunk.table]);
    c.drop_db(&target);
}

// ---------------------------------------------------------------------------------------------
// 3. Privacy
// ---------------------------------------------------------------------------------------------

#[test]
fn backup_dir_is_private_0700_and_files_0600() {
    let good = good_backup();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        mode(&good.dir),
        0o700,
        "backup dir {} mode {:o}",
        good.dir.display(),
        mode(&good.dir)
    );
    let entries = walk(&good.dir);
    assert!(entries.iter().any(|p| p.ends_with("manifest.json")));
    for p in entries {
        let expected = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(
            mode(&p),
            expected,
            "{} has mode {:o}",
            p.display(),
            mode(&p)
        );
    }
}

const SECRET: &str = "Zq7-sekrit-Xw9!pw";

#[test]
fn password_never_lands_in_backup_files_or_output() {
    let c = cluster();
    let db = c.unique_db("errs_secret");
    c.create_db(&db);
    c.load_fixture(&db, "hard_types.sql");
    let role = password_role("errs_secret_role", SECRET);
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let out = run_ok(
        dbbackup_tcp(&role, SECRET)
            .args(["backup", "single", "--format", "native", &db, "--out"])
            .arg(&out_dir),
    );
    let verify_out = run_ok(dbbackup().arg("verify").arg(&out_dir));
    for (what, bytes) in [
        ("backup stdout", &out.stdout),
        ("backup stderr", &out.stderr),
        ("verify stdout", &verify_out.stdout),
        ("verify stderr", &verify_out.stderr),
    ] {
        assert!(
            !text(bytes).contains(SECRET),
            "{what} contains the password"
        );
    }
    let secret = SECRET.as_bytes();
    let files: Vec<PathBuf> = walk(&out_dir).into_iter().filter(|p| p.is_file()).collect();
    assert!(files.len() > 2, "{files:?}");
    for p in files {
        let data = std::fs::read(&p).unwrap();
        assert!(
            !data.windows(secret.len()).any(|w| w == secret),
            "{} contains the password",
            p.display()
        );
    }
    let m = read_manifest(&out_dir);
    assert_eq!(m["status"], "complete");

    // And a restore through the same role over TCP keeps it out of its output too.
    let target = c.unique_db("errs_secret_restore");
    let out = run_ok(
        dbbackup_tcp(&role, SECRET)
            .arg("restore")
            .arg(&out_dir)
            .args(["--dbname", &target, "--create"]),
    );
    assert!(!text(&out.stdout).contains(SECRET) && !text(&out.stderr).contains(SECRET));
    c.drop_db(&target);
    c.drop_db(&db);
}

/// PIDs of the direct children of `parent` (from /proc/*/stat).
fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let ppid = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

/// Adds the argument vectors of `parent`'s pg_dump children not yet in `seen`.
fn record_pg_dumps(parent: u32, seen: &mut Vec<Vec<String>>) {
    for pid in children_of(parent) {
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(text)
            .collect();
        if args.first().is_some_and(|a| a.ends_with("pg_dump")) && !seen.contains(&args) {
            seen.push(args);
        }
    }
}

#[test]
fn pg_dump_command_line_carries_no_password() {
    let c = cluster();
    let db = big_db("errs_cmdline");
    support::gate::create_gate_tables(&db);
    let role = password_role("errs_cmdline_role", SECRET);
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let mut cmd = dbbackup_tcp(&role, SECRET);
    cmd.args([
        "backup",
        "single",
        "--format",
        "native",
        &db,
        "--quiet",
        "--parallel-tables",
        "2",
        "--lock-wait-timeout",
        "10m",
    ])
    .arg("--out")
    .arg(&out_dir)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let hold = support::gate::hold_backup(&db);
    let mut child = cmd.spawn().expect("spawn dbbackup");
    let parent = child.id();
    // Held at the gate (tests/support/gate.rs), the schema's first pg_dump is certainly running
    // when its command line is read; the later one is caught by polling.
    let gate = support::gate::close_gate(&db, hold);
    support::gate::wait_for_blocked_pg_dump(&db);
    let mut seen: Vec<Vec<String>> = Vec::new();
    record_pg_dumps(parent, &mut seen);
    assert!(
        !seen.is_empty(),
        "no pg_dump child of dbbackup (pid {parent}) while pg_dump waits at the gate"
    );
    gate.release();
    let status = loop {
        record_pg_dumps(parent, &mut seen);
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let out = child.wait_with_output().unwrap();
    assert!(status.success(), "{}", describe(&out));
    for args in &seen {
        let line = args.join(" ");
        assert!(
            !line.contains(SECRET),
            "pg_dump command line carries the password: {line}"
        );
        assert!(
            !line.to_ascii_lowercase().contains("password="),
            "pg_dump command line carries a password setting: {line}"
        );
    }
    c.drop_db(&db);
}

// ---------------------------------------------------------------------------------------------
// 4. Snapshot isolation against concurrent writers
// ---------------------------------------------------------------------------------------------

/// A psql session fed on stdin, so a transaction can be held open across test steps.
struct Session {
    child: std::process::Child,
}

impl Session {
    fn open(db: &str) -> Session {
        let c = cluster();
        let child = c
            .client_command("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &c.conninfo(db)])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn psql");
        Session { child }
    }

    fn send(&mut self, sql: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin open");
        stdin.write_all(sql.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    fn finish(mut self) {
        drop(self.child.stdin.take());
        let out = self.child.wait_with_output().unwrap();
        assert!(out.status.success(), "psql session: {}", text(&out.stderr));
    }
}

/// Design (deterministic): a native backup's coordinator takes its snapshot with its first
/// query, then locks every table in name order. An exclusive lock on `hold`, taken before the
/// backup starts, stops it there (tests/support/gate.rs): the snapshot exists, and no worker
/// and no pg_dump has read anything. We commit our writes now, then let the backup go on: a
/// reader outside the snapshot would see the new rows.
#[test]
fn commits_made_while_the_backup_runs_are_not_in_it() {
    let c = cluster();
    let db = big_db("errs_concurrent");
    c.psql(
        &db,
        "CREATE TABLE t(id int); INSERT INTO t SELECT generate_series(1, 10); \
         CREATE TABLE hold(id int); ANALYZE",
    );
    let before = c.fingerprint(&db);
    assert_eq!(before.tables["public.t"].0, 10);
    assert_eq!(before.tables["public.big_events"].0, 300000);

    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let hold = support::gate::hold_backup(&db);
    let backup = support::backup_native(&db, &out_dir)
        .args([
            "--quiet",
            "--parallel-tables",
            "2",
            "--lock-wait-timeout",
            "10m",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn backup");
    support::gate::wait_for_held_coordinator(&db);
    c.psql(
        &db,
        "BEGIN; \
         INSERT INTO t SELECT generate_series(11, 20); \
         UPDATE t SET id = -id WHERE id = 1; \
         INSERT INTO big_events SELECT id + 1000000, kind, payload, note FROM big_events WHERE id <= 1000; \
         COMMIT;",
    );
    hold.release();

    let out = backup.wait_with_output().unwrap();
    assert!(out.status.success(), "backup failed\n{}", describe(&out));
    let after = c.fingerprint(&db);
    assert_eq!(after.tables["public.t"].0, 20);
    assert_eq!(after.tables["public.big_events"].0, 301000);

    let target = c.unique_db("errs_concurrent_restore");
    run_ok(
        dbbackup()
            .arg("restore")
            .arg(&out_dir)
            .args(["--dbname", &target, "--create", "--quiet"]),
    );
    let restored = c.fingerprint(&target);
    assert_eq!(restored.tables["public.t"].0, 10, "rows of t");
    assert_eq!(
        restored.tables["public.big_events"].0, 300000,
        "rows of big_events"
    );
    assert_same(&before, &restored);
    c.drop_db(&target);
    c.drop_db(&db);
}

/// `--lock-wait-timeout` bounds the wait for a table that another session holds exclusively:
/// the backup fails in about that time, naming the table, and leaves no complete manifest.
#[test]
fn lock_wait_timeout_is_honoured_and_names_the_locked_table() {
    let c = cluster();
    let db = c.unique_db("errs_lockwait");
    c.create_db(&db);
    c.psql(
        &db,
        "CREATE TABLE free_table(id int); CREATE TABLE held_table(id int); \
         INSERT INTO held_table VALUES (1)",
    );
    let mut locker = Session::open(&db);
    locker.send("BEGIN; LOCK TABLE held_table IN ACCESS EXCLUSIVE MODE;");
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.psql(
        &db,
        "SELECT count(*) > 0 FROM pg_locks WHERE relation = 'public.held_table'::regclass \
         AND mode = 'AccessExclusiveLock' AND granted",
    ) != "t"
    {
        assert!(Instant::now() < deadline, "locker did not get its lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let started = Instant::now();
    let mut backup = support::backup_native(&db, &out_dir)
        .args(["--lock-wait-timeout", "1s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn backup");
    // Do not hang the test run if the timeout is ignored: give up after 40 s.
    let limit = Instant::now() + Duration::from_secs(40);
    while backup.try_wait().unwrap().is_none() && Instant::now() < limit {
        std::thread::sleep(Duration::from_millis(50));
    }
    let still_running = backup.try_wait().unwrap().is_none();
    if still_running {
        let _ = backup.kill();
    }
    let elapsed = started.elapsed();
    let out = backup.wait_with_output().unwrap();
    locker.send("COMMIT;");
    locker.finish();
    assert!(
        !still_running && elapsed < Duration::from_secs(20),
        "with --lock-wait-timeout 1s the backup was still waiting after {elapsed:?}\n{}",
        describe(&out)
    );
    assert_error(&out, 1, &["held_table", "timed out"]);
    assert_no_complete_manifest(&out_dir);
    c.drop_db(&db);
}
