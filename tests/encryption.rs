//! Encryption at rest with age public keys: round trips to X25519 and ssh recipients, no
//! plaintext on disk, verify with and without identity, wrong/missing identity, damaged files,
//! the stock-tool recipe with the `age` CLI, and no secret in the manifest or the logs.
//! Keys come from `age-keygen` and `ssh-keygen` (scripts/lib.sh `ensure_age`).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use support::{assert_same, cluster, dbbackup, run_fail, run_ok};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An age key pair made by `age-keygen`: (identity file, public key).
fn age_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let file = dir.join(format!("{name}.txt"));
    run_ok(Command::new("age-keygen").arg("-o").arg(&file));
    let out = run_ok(Command::new("age-keygen").arg("-y").arg(&file));
    (file, text(&out.stdout).trim().to_string())
}

/// An ssh-ed25519 key pair made by `ssh-keygen`: (private key file, public key line).
fn ssh_key(dir: &Path) -> (PathBuf, String) {
    let file = dir.join("id_ed25519");
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "test@host", "-f"])
            .arg(&file),
    );
    let public = std::fs::read_to_string(file.with_extension("pub")).unwrap();
    (file, public.trim().to_string())
}

fn fixture_db(prefix: &str, fixture: &str) -> String {
    let c = cluster();
    let db = c.unique_db(prefix);
    c.create_db(&db);
    c.load_fixture(&db, fixture);
    db
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

/// Every stored file under `dir` (recursively), the manifests left out.
fn stored_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.file_name().unwrap() != "manifest.json" {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn backup(db: &str, out: &Path, extra: &[&str]) -> Output {
    run_ok(
        dbbackup()
            .args(["backup", "single", db, "--out"])
            .arg(out)
            .args(extra),
    )
}

fn restore(dir: &Path, target: &str, identity: &Path) -> Output {
    run_ok(
        dbbackup()
            .args([
                "restore",
                "--quiet",
                "--create",
                "--dbname",
                target,
                "--identity",
            ])
            .arg(identity)
            .arg(dir),
    )
}

#[test]
fn round_trips_of_every_format_to_one_and_two_recipients() {
    let c = cluster();
    let keys = tempfile::tempdir().unwrap();
    let (id_a, pub_a) = age_key(keys.path(), "a");
    let (id_b, pub_b) = age_key(keys.path(), "b");
    let src = fixture_db("enc_src", "hard_types.sql");
    let before = c.fingerprint(&src);
    for kind in ["native", "plain", "custom"] {
        // One recipient on the command line; two through a recipients file.
        let recipients_file = keys.path().join("recipients.txt");
        std::fs::write(
            &recipients_file,
            format!("# team keys\n{pub_a}\n\n{pub_b}\n"),
        )
        .unwrap();
        for (extra, identities) in [
            (vec!["--recipient", pub_a.as_str()], vec![&id_a]),
            (
                vec!["--recipients-file", recipients_file.to_str().unwrap()],
                vec![&id_a, &id_b],
            ),
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("b");
            let mut args = vec!["--format", kind, "--chunk-size", "64KiB"];
            args.extend(&extra);
            backup(&src, &dir, &args);
            let m = manifest(&dir);
            let recorded: Vec<&str> = m["options"]["recipients"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert_eq!(recorded.len(), identities.len(), "{recorded:?}");
            for f in stored_files(&dir) {
                let head = std::fs::read(&f).unwrap();
                assert!(
                    head.starts_with(b"age-encryption.org/v1\n"),
                    "{} is not an age file",
                    f.display()
                );
            }
            // Either identity restores.
            for id in identities {
                let target = c.unique_db(&format!("enc_{kind}"));
                restore(&dir, &target, id);
                assert_same(&before, &c.fingerprint(&target));
                c.drop_db(&target);
            }
        }
    }
}

#[test]
fn ssh_ed25519_recipient_round_trip() {
    let c = cluster();
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = ssh_key(keys.path());
    let src = fixture_db("enc_ssh", "hard_types.sql");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    backup(&src, &dir, &["--format", "native", "--recipient", &public]);
    let m = manifest(&dir);
    let recorded = m["options"]["recipients"][0].as_str().unwrap();
    assert!(recorded.starts_with("ssh-ed25519 "), "{recorded}");
    assert!(!recorded.contains("test@host"), "comment kept: {recorded}");
    let target = c.unique_db("enc_ssh_r");
    restore(&dir, &target, &private);
    assert_same(&c.fingerprint(&src), &c.fingerprint(&target));
    c.drop_db(&target);
}

#[test]
fn no_plaintext_on_disk_and_no_secret_in_manifest_or_logs() {
    let c = cluster();
    let keys = tempfile::tempdir().unwrap();
    let (id, public) = age_key(keys.path(), "k");
    let secret = std::fs::read_to_string(&id).unwrap();
    let secret_line = secret
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap()
        .to_string();
    let db = c.unique_db("enc_plain");
    c.create_db(&db);
    c.psql(
        &db,
        "create table t(id int primary key, v text); \
         insert into t select g, 'ROWMARKER-' || g from generate_series(1, 2000) g; \
         select lo_from_bytea(0, convert_to('LOMARKER-large-object', 'UTF8'));",
    );
    for kind in ["native", "plain", "custom"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("b");
        // Uncompressed: any plaintext would show as is.
        let b = backup(
            &db,
            &dir,
            &[
                "--format",
                kind,
                "--compress",
                "none",
                "--recipient",
                &public,
            ],
        );
        let logs = format!("{}{}", text(&b.stdout), text(&b.stderr));
        for f in stored_files(&dir) {
            let bytes = std::fs::read(&f).unwrap();
            for marker in [&b"ROWMARKER-"[..], b"LOMARKER", b"CREATE TABLE", b"PGDMP"] {
                assert!(
                    !bytes.windows(marker.len()).any(|w| w == marker),
                    "{} holds plaintext {:?}",
                    f.display(),
                    text(marker)
                );
            }
        }
        let target = c.unique_db("enc_plain_r");
        let r = restore(&dir, &target, &id);
        let v = run_ok(dbbackup().args(["verify", "--identity"]).arg(&id).arg(&dir));
        let m = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
        for out in [
            logs.clone(),
            m,
            text(&r.stdout),
            text(&r.stderr),
            text(&v.stdout),
        ] {
            assert!(!out.contains(&secret_line), "identity leaked: {out}");
            assert!(!out.contains("AGE-SECRET-KEY"), "identity leaked: {out}");
        }
        assert_eq!(c.psql(&target, "select count(*) from t"), "2000");
        c.drop_db(&target);
    }
}

#[test]
fn verify_with_and_without_identity_and_damage() {
    let keys = tempfile::tempdir().unwrap();
    let (id, public) = age_key(keys.path(), "k");
    let (wrong, _) = age_key(keys.path(), "wrong");
    let src = fixture_db("enc_verify", "big_table.sql");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    backup(
        &src,
        &dir,
        &[
            "--format",
            "native",
            "--recipient",
            &public,
            "--chunk-size",
            "256KiB",
        ],
    );
    // Without identity: stored bytes only, and a line saying so.
    let v = run_ok(
        dbbackup()
            .arg("verify")
            .arg(&dir)
            .env_remove("DBBACKUP_IDENTITY_FILE"),
    );
    assert!(
        text(&v.stderr).contains("contents were not"),
        "{}",
        text(&v.stderr)
    );
    // With identity (from the environment): everything.
    let v = run_ok(
        dbbackup()
            .arg("verify")
            .arg(&dir)
            .env("DBBACKUP_IDENTITY_FILE", &id),
    );
    assert!(!text(&v.stderr).contains("not checked"));
    assert!(text(&v.stdout).contains("OK"), "{}", text(&v.stdout));

    // A wrong identity: verify and restore name the file, nothing is restored.
    let c = cluster();
    let target = c.unique_db("enc_wrong");
    for cmd in [
        dbbackup()
            .args(["verify", "--identity"])
            .arg(&wrong)
            .arg(&dir),
        dbbackup()
            .args(["restore", "--create", "--dbname", &target, "--identity"])
            .arg(&wrong)
            .arg(&dir),
    ]
    .iter_mut()
    {
        let e = text(&run_fail(cmd).stderr);
        assert!(e.contains("no identity given"), "{e}");
        assert!(e.contains(dir.to_str().unwrap()), "{e}");
    }
    // No identity at all.
    let e = text(
        &run_fail(
            dbbackup()
                .args(["restore", "--create", "--dbname", &target])
                .arg(&dir)
                .env_remove("DBBACKUP_IDENTITY_FILE"),
        )
        .stderr,
    );
    assert!(e.contains("no identity was given"), "{e}");
    assert!(e.contains(dir.to_str().unwrap()), "{e}");

    // One flipped byte in the middle of the largest data chunk, then a truncated one.
    let m = manifest(&dir);
    let mut chunks: Vec<(u64, String)> = m["tables"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["units"].as_array().unwrap().clone())
        .flat_map(|u| u["chunks"].as_array().unwrap().clone())
        .map(|c| {
            (
                c["stored_bytes"].as_u64().unwrap(),
                c["file"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    chunks.sort();
    let (_, victim) = chunks.last().unwrap().clone();
    let path = dir.join(&victim);
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    std::fs::write(&path, &bad).unwrap();
    for with_id in [false, true] {
        let mut cmd = dbbackup();
        cmd.arg("verify").env_remove("DBBACKUP_IDENTITY_FILE");
        if with_id {
            cmd.arg("--identity").arg(&id);
        }
        let e = text(&run_fail(cmd.arg(&dir)).stderr);
        assert!(e.contains(&victim) && e.contains("SHA-256 mismatch"), "{e}");
    }
    let e = text(
        &run_fail(
            dbbackup()
                .args(["restore", "--create", "--dbname", &target, "--identity"])
                .arg(&id)
                .arg(&dir),
        )
        .stderr,
    );
    assert!(e.contains(&victim), "{e}");
    c.drop_db(&target);
    std::fs::write(&path, &good[..good.len() - 100]).unwrap();
    let e = text(&run_fail(dbbackup().args(["verify", "--identity"]).arg(&id).arg(&dir)).stderr);
    assert!(e.contains(&victim) && e.contains("truncated"), "{e}");
    std::fs::write(&path, &good).unwrap();
    run_ok(dbbackup().args(["verify", "--identity"]).arg(&id).arg(&dir));
}

#[test]
fn stock_age_cli_restores_plain_and_custom_streams() {
    let c = cluster();
    let keys = tempfile::tempdir().unwrap();
    let (id, public) = age_key(keys.path(), "k");
    let src = fixture_db("enc_stock", "hard_types.sql");
    let before = c.fingerprint(&src);
    for (kind, ext, tool) in [
        (
            "plain",
            "sql",
            "psql -X -q -v ON_ERROR_STOP=1 -o /dev/null -d \"$T\"",
        ),
        ("custom", "dump", "pg_restore --exit-on-error -d \"$T\""),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("b");
        let out = backup(
            &src,
            &dir,
            &[
                "--format",
                kind,
                "--chunk-size",
                "64KiB",
                "--recipient",
                &public,
            ],
        );
        let glob = format!("{}/stream/pg_dump.{ext}.zst.*", dir.display());
        let printed = text(&out.stdout);
        assert!(
            printed.contains(&format!(
                "for f in {glob}; do age -d -i KEY_FILE \"$f\"; done"
            )),
            "{printed}"
        );
        assert!(std::fs::read_dir(dir.join("stream")).unwrap().count() > 1);
        let target = c.unique_db(&format!("enc_stock_{kind}"));
        c.create_db(&target);
        let script =
            format!("for f in {glob}; do age -d -i \"$K\" \"$f\"; done | zstd -dc | {tool}");
        run_ok(
            Command::new("bash")
                .args(["-o", "pipefail", "-c", &script])
                .envs(c.env())
                .env("T", c.conninfo(&target))
                .env("K", &id)
                .env(
                    "PATH",
                    format!(
                        "{}:{}",
                        c.bin_dir.display(),
                        std::env::var("PATH").unwrap_or_default()
                    ),
                ),
        );
        assert_same(&before, &c.fingerprint(&target));
        c.drop_db(&target);
    }
}

#[test]
fn cluster_backup_encrypts_globals_and_databases() {
    let c = cluster();
    let keys = tempfile::tempdir().unwrap();
    let (id, public) = age_key(keys.path(), "k");
    let db = fixture_db("enc_cl", "hard_types.sql");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cluster");
    run_ok(
        dbbackup()
            .args(["backup", "cluster", "--quiet", "--out"])
            .arg(&out)
            .args(["--include-database", &db, "--recipient", &public]),
    );
    let files = stored_files(&out);
    assert!(files
        .iter()
        .any(|f| f.to_string_lossy().contains("globals")));
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            bytes.starts_with(b"age-encryption.org/v1\n"),
            "{} is not an age file",
            f.display()
        );
        assert!(!bytes.windows(11).any(|w| w == b"CREATE ROLE"));
    }
    let v = run_ok(
        dbbackup()
            .arg("verify")
            .arg(&out)
            .env_remove("DBBACKUP_IDENTITY_FILE"),
    );
    assert!(text(&v.stderr).contains("contents were not"));
    run_ok(dbbackup().args(["verify", "--identity"]).arg(&id).arg(&out));
    // Restore the database out of the cluster backup under a new name.
    let m = manifest(&out);
    let entry = m["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == db.as_str())
        .unwrap();
    let dbdir = out.join(entry["dir"].as_str().unwrap());
    let target = c.unique_db("enc_cl_r");
    restore(&dbdir, &target, &id);
    assert_same(&c.fingerprint(&db), &c.fingerprint(&target));
    c.drop_db(&target);
}

#[test]
fn resume_refuses_other_recipients() {
    let keys = tempfile::tempdir().unwrap();
    let (_, pub_a) = age_key(keys.path(), "a");
    let (_, pub_b) = age_key(keys.path(), "b");
    let src = fixture_db("enc_resume", "hard_types.sql");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    backup(&src, &dir, &["--format", "native", "--recipient", &pub_a]);
    let e = text(
        &run_fail(
            dbbackup()
                .args([
                    "backup",
                    "single",
                    &src,
                    "--resume",
                    "--recipient",
                    &pub_b,
                    "--out",
                ])
                .arg(&dir),
        )
        .stderr,
    );
    assert!(e.contains("--recipient"), "{e}");
}

#[test]
fn an_encrypted_native_restore_decrypts_nothing_to_disk() {
    let db = fixture_db("enc_nodisk", "hard_types.sql");
    let tmp = tempfile::tempdir().unwrap();
    let (identity, public) = age_key(tmp.path(), "key");
    let out = tmp.path().join("backup");
    backup(&db, &out, &["--format", "native", "--recipient", &public]);
    // No temporary directory to write to: a restore that staged anything would fail.
    let target = cluster().unique_db("enc_nodisk_dst");
    run_ok(
        dbbackup()
            .env("TMPDIR", tmp.path().join("no-such-dir"))
            .arg("restore")
            .arg(&out)
            .args(["--dbname", &target, "--create", "--quiet", "--identity"])
            .arg(&identity),
    );
    support::assert_same(&cluster().fingerprint(&db), &cluster().fingerprint(&target));
    cluster().drop_db(&target);
}
