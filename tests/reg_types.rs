//! `reg*` values (object OIDs that print as names) survive a native round trip into a database
//! where every object has a new OID: they are copied as text, decided from the catalog, with
//! the reason in the manifest. Binary COPY would carry the source's numbers, which point at
//! nothing in the copy.

mod support;

use support::{cluster, dbbackup, run_ok};

/// One table per `reg*` type and per way of building a type on one: (table, column type,
/// value). Each table holds its value twice (a second row keeps the rows ordered by `id`).
const CASES: &[(&str, &str, &str)] = &[
    ("t_regclass", "regclass", "'app.target'"),
    ("t_regtype", "regtype", "'app.mood'"),
    ("t_regproc", "regproc", "'app.only_f'"),
    ("t_regprocedure", "regprocedure", "'app.f(integer)'"),
    ("t_regoper", "regoper", "'app.==='"),
    ("t_regoperator", "regoperator", "'app.===(integer,integer)'"),
    ("t_regconfig", "regconfig", "'app.cfg'"),
    ("t_regdictionary", "regdictionary", "'app.dict'"),
    ("t_regnamespace", "regnamespace", "'app'"),
    ("t_regrole", "regrole", "'ROLE'"),
    ("t_regcollation", "regcollation", "'app.coll'"),
    (
        "t_array",
        "regclass[]",
        "ARRAY['app.target', 'pg_class']::regclass[]",
    ),
    ("t_domain", "app.dom2", "'app.mood'"),
    (
        "t_composite",
        "app.pair",
        "ROW('x', 'app.f(integer)')::app.pair",
    ),
    ("t_range", "app.relrange", "'[app.target,app.target]'"),
    (
        "t_multirange",
        "app.relmultirange",
        "'{[app.target,app.target]}'",
    ),
];

/// Objects the values name, in schema `app`; created after filler objects so that their OIDs
/// are nowhere near those the restore gives them.
fn objects_sql(role: &str) -> String {
    format!(
        "CREATE TABLE filler1(a int); CREATE TABLE filler2(a int); DROP TABLE filler1, filler2;
         CREATE SCHEMA app;
         CREATE TABLE app.target(a int);
         CREATE TYPE app.mood AS ENUM ('a');
         CREATE FUNCTION app.f(int) RETURNS int LANGUAGE sql AS 'select $1';
         CREATE FUNCTION app.only_f(text) RETURNS text LANGUAGE sql AS 'select $1';
         CREATE FUNCTION app.eqf(int, int) RETURNS bool LANGUAGE sql AS 'select $1 = $2';
         CREATE OPERATOR app.=== (LEFTARG = int, RIGHTARG = int, FUNCTION = app.eqf);
         CREATE TEXT SEARCH DICTIONARY app.dict (TEMPLATE = simple);
         CREATE TEXT SEARCH CONFIGURATION app.cfg (COPY = simple);
         CREATE COLLATION app.coll FROM \"C\";
         CREATE ROLE {role};
         CREATE DOMAIN app.dom1 AS regtype;
         CREATE DOMAIN app.dom2 AS app.dom1;
         CREATE TYPE app.pair AS (label text, fn regprocedure);
         CREATE TYPE app.relrange AS RANGE (subtype = regclass, subtype_opclass = oid_ops,
                                            multirange_type_name = app.relmultirange);
         CREATE TABLE plain_ints(id int, v int); INSERT INTO plain_ints VALUES (1, 1);"
    )
}

#[test]
fn every_reg_type_and_types_built_on_them_round_trip_as_names() {
    let c = cluster();
    let db = c.unique_db("regtypes_src");
    let role = format!("regtypes_role_{}", std::process::id());
    c.create_db(&db);
    c.psql(&db, &objects_sql(&role));
    // With `app` on the database's search_path a session of it prints `target`, not
    // `app.target`; the copy must still name the table in schema `app`.
    c.psql(
        &db,
        &format!("ALTER DATABASE {db} SET search_path = app, public"),
    );
    for (table, ty, value) in CASES {
        let value = value.replace("ROLE", &role);
        c.psql(
            &db,
            &format!(
                "CREATE TABLE public.{table}(id int, v {ty});
                 INSERT INTO public.{table} VALUES (1, {value}), (2, {value});"
            ),
        );
    }
    // Names, qualified (empty search_path), as the copy must show them too.
    let texts = |db: &str| -> Vec<String> {
        CASES
            .iter()
            .map(|(table, _, _)| {
                c.psql(
                    db,
                    &format!(
                        "SET search_path = ''; SELECT string_agg(v::text, ' | ' ORDER BY id) FROM public.{table}"
                    ),
                )
            })
            .collect()
    };
    let before = texts(&db);
    assert!(
        before
            .iter()
            .all(|t| !t.chars().next().unwrap().is_ascii_digit()),
        "every value prints as a name in the source: {before:?}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("backup");
    run_ok(support::backup_native(&db, &out).args(["--quiet", "--parallel-tables", "2"]));

    // The manifest says why each table went as text; a plain table stays binary.
    let m = support::manifest_json(&out);
    let tables = m["tables"].as_array().unwrap();
    let find = |name: &str| {
        tables
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} in the manifest"))
    };
    for (table, ty, _) in CASES {
        let t = find(table);
        let reason = t["copy_format_reason"].as_str().unwrap_or("");
        assert_eq!(t["copy_format"], "text", "{table} ({ty}): {t}");
        assert!(reason.contains("object OIDs"), "{table} ({ty}): {reason}");
    }
    assert!(
        find("t_domain")["copy_format_reason"]
            .as_str()
            .unwrap()
            .contains("built on regtype"),
        "{}",
        find("t_domain")
    );
    assert_eq!(find("plain_ints")["copy_format"], "binary");

    // Roles are global: a role of the same name made again has a new OID, as in another
    // cluster restored from globals.
    c.psql(
        "postgres",
        &format!("DROP ROLE {role}; CREATE ROLE {role};"),
    );
    let target = c.unique_db("regtypes_dst");
    run_ok(
        dbbackup()
            .arg("restore")
            .arg(&out)
            .args(["--dbname", &target, "--create", "--jobs", "2", "--quiet"]),
    );
    let oid_of = |db: &str| c.psql(db, "SELECT 'app.target'::regclass::oid");
    assert_ne!(
        oid_of(&db),
        oid_of(&target),
        "the copy's objects must have other OIDs for this test to mean anything"
    );
    let after = texts(&target);
    for ((table, ty, _), (b, a)) in CASES.iter().zip(before.iter().zip(&after)) {
        assert_eq!(b, a, "{table} ({ty}) changed in the round trip");
    }
    c.drop_db(&target);
    c.drop_db(&db);
    c.psql("postgres", &format!("DROP ROLE {role}"));
}

/// The catalog query differs by major (multiranges from 14): it runs on the oldest and the
/// newest server and finds an array and a domain of `reg*` types on both.
#[test]
fn the_probe_finds_types_built_on_reg_types_on_13_and_18() {
    for major in [13, 18] {
        let c = support::cluster_of(major);
        let db = c.unique_db("regtypes_major");
        c.create_db(&db);
        c.psql(
            &db,
            "CREATE DOMAIN d AS regprocedure;
             CREATE TABLE arr(id int, v regcollation[]); INSERT INTO arr VALUES (1, ARRAY['\"POSIX\"']::regcollation[]);
             CREATE TABLE dom(id int, v d); INSERT INTO dom VALUES (1, 'now()');
             CREATE TABLE plain_ints(id int);",
        );
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("b");
        run_ok(
            support::dbbackup_for(c)
                .args([
                    "backup", "single", "--format", "native", &db, "--quiet", "--out",
                ])
                .arg(&out),
        );
        let m = support::manifest_json(&out);
        let format = |name: &str| {
            let t = m["tables"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["name"] == name)
                .unwrap()
                .clone();
            (t["copy_format"].clone(), t["copy_format_reason"].clone())
        };
        assert_eq!(format("arr").0, "text", "{major}: {:?}", format("arr"));
        assert!(
            format("dom")
                .1
                .as_str()
                .unwrap()
                .contains("built on regprocedure"),
            "{major}: {:?}",
            format("dom")
        );
        assert_eq!(format("plain_ints").0, "binary", "{major}");
    }
}
