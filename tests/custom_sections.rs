//! A custom backup restores with `--jobs N` on every major (issue 17, failure 5): pg_restore
//! given a whole archive that came through a pipe (no data offsets) follows its own order and
//! may run a post-data statement before the data it checks. On PostgreSQL 18 a partitioned
//! parent's `NOT NULL ... NOT VALID` constraint depends only on the parent, so it ran before
//! the rows of a partition holding NULLs were loaded, and then refused them. Restored section
//! by section (pre-data, data, post-data), the data always comes first.

mod support;

use std::process::Stdio;

use support::{assert_same, cluster_of, dbbackup_for, run_ok};

const REPETITIONS: usize = 5;

/// The shape of PostgreSQL 18's regression test `constraints.sql` (notnull_part1_upg), with
/// rows in every partition and NULLs in the one whose own constraint is NOT VALID too.
const NOT_VALID_NOT_NULL: &str = "
CREATE TABLE notnull_part1_upg (a int, b int) PARTITION BY LIST (a);
ALTER TABLE notnull_part1_upg ADD CONSTRAINT notnull_con NOT NULL a NOT VALID;
CREATE TABLE notnull_part1_1_upg PARTITION OF notnull_part1_upg FOR VALUES IN (1,2);
CREATE TABLE notnull_part1_2_upg (a int, CONSTRAINT nn2 NOT NULL a, b int);
ALTER TABLE notnull_part1_upg ATTACH PARTITION notnull_part1_2_upg FOR VALUES IN (3,4);
CREATE TABLE notnull_part1_3_upg (a int, b int);
INSERT INTO notnull_part1_3_upg SELECT NULL, g FROM generate_series(1, 500) g;
ALTER TABLE notnull_part1_3_upg ADD CONSTRAINT nn3 NOT NULL a NOT VALID;
ALTER TABLE notnull_part1_upg ATTACH PARTITION notnull_part1_3_upg FOR VALUES IN (NULL, 5);
INSERT INTO notnull_part1_upg SELECT 1 + g % 4, g FROM generate_series(1, 1000) g;
CREATE INDEX notnull_part1_upg_b ON notnull_part1_upg (b);
";

#[test]
fn custom_backup_on_18_restores_with_two_jobs_five_times() {
    let c = cluster_of(18);
    let src = c.unique_db("nn_src");
    c.create_db(&src);
    c.psql(&src, NOT_VALID_NOT_NULL);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    run_ok(
        dbbackup_for(c)
            .args([
                "backup", "single", "--format", "custom", "--quiet", &src, "--out",
            ])
            .arg(&out),
    );
    let want = c.fingerprint(&src);
    let mut failures = Vec::new();
    for i in 0..REPETITIONS {
        let target = c.unique_db("nn_dst");
        let o = dbbackup_for(c)
            .args([
                "restore", "--quiet", "--create", "--jobs", "2", "--dbname", &target,
            ])
            .arg(&out)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if o.status.success() {
            assert_same(&want, &c.fingerprint(&target));
        } else {
            failures.push(format!(
                "restore {}: {}",
                i + 1,
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        c.drop_db(&target);
    }
    assert!(
        failures.is_empty(),
        "{} of {REPETITIONS} restores failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
