//! The custom-format archive reader and the TOC selection against real pg_dump archives: for
//! every server major (13 to 18) the fixtures are dumped with `pg_dump -Fc` (Debian's 15 for
//! servers up to 15, archive version 1.14; the client 18 tools above, 1.16), `read_toc` must
//! agree with `pg_restore -l` of the same archive on every entry, and a table selection's `-L`
//! list must restore with real `pg_restore --exit-on-error` into a database that has only the
//! schemas.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::collections::BTreeSet;

use dbbackup::format::archive_toc::{read_toc, Toc};
use dbbackup::format::sql_requalify::{requalify, Renames};
use dbbackup::format::toc_select::{list_file, qualified_objects, select, Selection, TableChoice};
use support::{cluster_of, Cluster};

/// A database of `c` loaded with `fixtures`, dumped with `pg_dump -Fc` into a temp dir.
struct Dumped {
    db: String,
    archive: PathBuf,
    _dir: tempfile::TempDir,
}

fn dump(c: &Cluster, prefix: &str, fixtures: &[&str]) -> Dumped {
    let db = c.unique_db(prefix);
    c.create_db(&db);
    for f in fixtures {
        c.load_fixture(&db, f);
    }
    // Entries the fixture does not make pg_dump write: a CHECK constraint dumped apart (NOT
    // VALID), comments on a constraint and an index, extended statistics, a rule.
    c.psql(
        &db,
        "ALTER TABLE app.orders ADD CONSTRAINT orders_id_positive CHECK (id > 0) NOT VALID;
         COMMENT ON CONSTRAINT orders_pkey ON app.orders IS 'the key';
         COMMENT ON INDEX app.wide_j_gin IS 'gin';
         CREATE STATISTICS app.orders_stats ON id, what FROM app.orders;
         CREATE RULE order_lines_no_delete AS ON DELETE TO app.order_lines DO INSTEAD NOTHING;",
    );
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("db.dump");
    let out = c
        .client_command("pg_dump")
        .args(["-Fc", "-f"])
        .arg(&archive)
        .arg("-d")
        .arg(c.conninfo(&db))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Dumped {
        db,
        archive,
        _dir: dir,
    }
}

/// The archive's TOC and how many bytes `read_toc` consumed.
fn toc_of(archive: &Path) -> (Toc, u64) {
    let bytes = std::fs::read(archive).unwrap();
    let mut r = &bytes[..];
    let toc = read_toc(&mut r).unwrap_or_else(|e| panic!("read_toc {}: {e}", archive.display()));
    (toc, (bytes.len() - r.len()) as u64)
}

/// `pg_restore -l`'s entry lines by dump id.
fn pg_restore_list(c: &Cluster, archive: &Path) -> BTreeMap<i32, String> {
    let out = c
        .client_command("pg_restore")
        .arg("-l")
        .arg(archive)
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_restore -l failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| (l.split(';').next().unwrap().parse().unwrap(), l.to_string()))
        .collect()
}

/// Every entry `pg_restore -l` lists is read with the same id, catalog ids, desc, namespace,
/// tag and owner (the whole line equal), and the only entries it does not list are the ones
/// pg_restore never lists without `--create` (encoding, settings, the database itself).
fn assert_same_as_pg_restore(c: &Cluster, d: &Dumped, toc: &Toc) {
    let listed = pg_restore_list(c, &d.archive);
    assert!(listed.len() > 20, "too few entries: {listed:?}");
    let ours: BTreeMap<i32, _> = toc.entries.iter().map(|e| (e.dump_id, e)).collect();
    for (id, line) in &listed {
        let e = ours
            .get(id)
            .unwrap_or_else(|| panic!("entry {id} missing: {line}"));
        assert_eq!(&e.list_line(), line, "entry {id}");
    }
    for e in &toc.entries {
        if !listed.contains_key(&e.dump_id) {
            let special = ["ENCODING", "STDSTRINGS", "SEARCHPATH", "DATABASE"];
            let database_level = e.tag.starts_with("DATABASE ")
                || e.desc == "DATABASE PROPERTIES"
                || special.contains(&e.desc.as_str());
            assert!(database_level, "read but not listed: {}", e.list_line());
        }
    }
}

fn names(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    pairs
        .iter()
        .map(|(s, n)| (s.to_string(), n.to_string()))
        .collect()
}

/// (desc, tag) of the selected entries.
fn picked(toc: &Toc, ids: &[i32]) -> BTreeSet<(String, String)> {
    ids.iter()
        .map(|id| {
            let e = toc.entry(*id).unwrap();
            (e.desc.clone(), e.tag.clone())
        })
        .collect()
}

fn has(set: &BTreeSet<(String, String)>, desc: &str, tag: &str) -> bool {
    set.contains(&(desc.to_string(), tag.to_string()))
}

/// Restores `ids` with `pg_restore -L --exit-on-error` into a new empty database; returns it.
/// pg_restore 18 sends `SET transaction_timeout`, which a server 16 rejects: there the list
/// goes through `pg_restore -L -f` and psql (`ON_ERROR_STOP`) without that line.
fn restore_list(c: &Cluster, d: &Dumped, toc: &Toc, ids: &[i32]) -> String {
    let target = c.unique_db("toc_target");
    c.create_db(&target);
    let list = d.archive.with_extension(format!("{target}.list"));
    std::fs::write(&list, list_file(toc, ids)).unwrap();
    let script = d.archive.with_extension(format!("{target}.sql"));
    let direct = c.major() != 16;
    let mut cmd = c.client_command("pg_restore");
    cmd.args(["--exit-on-error", "-L"]).arg(&list);
    if direct {
        cmd.arg("-d").arg(c.conninfo(&target));
    } else {
        cmd.arg("-f").arg(&script);
    }
    let out = cmd.arg(&d.archive).output().unwrap();
    assert!(
        out.status.success(),
        "pg_restore -L {} failed: {}\n{}",
        list.display(),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&list).unwrap()
    );
    if !direct {
        let sql = std::fs::read_to_string(&script).unwrap();
        let sql: String = sql
            .lines()
            .filter(|l| *l != "SET transaction_timeout = 0;")
            .map(|l| format!("{l}\n"))
            .collect();
        if let Err(e) = c.try_psql(&target, &sql) {
            panic!("restoring the -L script of {}: {e}", list.display());
        }
    }
    target
}

/// Everything a restore of `sel` into an empty database needs besides the selection: the
/// schemas and the objects it requires (which themselves need only the schemas here).
fn with_prerequisites(sel: &Selection) -> Vec<i32> {
    let mut ids: Vec<i32> = sel.schemas.iter().map(|(id, _)| *id).collect();
    ids.extend(&sel.requires);
    ids.extend(sel.all());
    ids
}

fn count(c: &Cluster, db: &str, table: &str) -> String {
    c.psql(db, &format!("SELECT count(*) FROM {table}"))
}

/// A table whose foreign key references a table not chosen: the key is left out and reported
/// with both tables, the table and its primary key restore on their own.
fn fk_to_unchosen_table_left_out(c: &Cluster, d: &Dumped, toc: &Toc) {
    let sel = select(
        toc,
        &TableChoice {
            tables: names(&[("app", "order_lines")]),
            ..TableChoice::default()
        },
    );
    let got = picked(toc, &sel.all());
    assert!(has(&got, "TABLE", "order_lines"), "{got:?}");
    assert!(has(&got, "TABLE DATA", "order_lines"), "{got:?}");
    assert!(
        has(&got, "CONSTRAINT", "order_lines order_lines_pkey"),
        "{got:?}"
    );
    assert!(!got.iter().any(|(d, _)| d == "FK CONSTRAINT"), "{got:?}");
    assert_eq!(sel.left_out_foreign_keys.len(), 1, "{sel:?}");
    let l = &sel.left_out_foreign_keys[0];
    assert_eq!(l.constraint, "order_lines_order_id_fkey");
    assert_eq!(l.table, ("app".to_string(), "order_lines".to_string()));
    assert_eq!(l.references, ("app".to_string(), "orders".to_string()));
    assert_eq!(
        sel.schemas.iter().map(|s| s.1.as_str()).collect::<Vec<_>>(),
        ["app"]
    );
    let target = restore_list(c, d, toc, &with_prerequisites(&sel));
    assert_eq!(
        count(c, &target, "app.order_lines"),
        count(c, &d.db, "app.order_lines")
    );
    assert_eq!(
        c.psql(
            &target,
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
        ),
        "0"
    );
}

/// Tables with everything that belongs to them: owned (serial and identity) sequences with
/// their values, DEFAULT, indexes, constraints, the foreign key between two chosen tables,
/// trigger, policy and row security, comments and ACLs, a partitioned table with its
/// partitions (TABLE ATTACH, INDEX ATTACH) and a materialized view over it with its data and
/// index. Restored with real pg_restore into a database that has only what `requires` names.
fn tables_bring_their_objects(c: &Cluster, d: &Dumped, toc: &Toc) {
    let mut tables = names(&[
        ("app", "orders"),
        ("app", "order_lines"),
        ("app", "ident_always"),
        ("données", "élèves"),
        ("app", "secrets"),
        ("app", "audited"),
        ("app", "wide"),
        ("app", "measurements"),
        ("app", "measurement_stats"),
    ]);
    let parts = toc.partitions_of("app", "measurements");
    assert_eq!(
        parts,
        names(&[
            ("app", "measurements_2023"),
            ("app", "measurements_2024"),
            ("app", "measurements_default")
        ])
        .into_iter()
        .collect::<Vec<_>>()
    );
    tables.extend(parts);
    let choice = TableChoice {
        tables,
        ..TableChoice::default()
    };
    let sel = select(toc, &choice);
    let got = picked(toc, &sel.all());
    for (desc, tag) in [
        ("FK CONSTRAINT", "order_lines order_lines_order_id_fkey"),
        ("SEQUENCE", "élèves_id_seq"),
        ("SEQUENCE OWNED BY", "élèves_id_seq"),
        ("SEQUENCE SET", "élèves_id_seq"),
        ("DEFAULT", "élèves id"),
        ("SEQUENCE", "ident_always_id_seq"),
        ("SEQUENCE SET", "ident_always_id_seq"),
        ("TRIGGER", "audited audited_touch"),
        ("POLICY", "secrets own_rows"),
        ("ROW SECURITY", "secrets"),
        ("INDEX", "wide_j_gin"),
        ("COMMENT", "TABLE wide"),
        ("COMMENT", "COLUMN wide.\"MixedCaseCol\""),
        ("ACL", "TABLE orders"),
        ("TABLE ATTACH", "measurements_2023"),
        ("INDEX ATTACH", "measurements_2023_pkey"),
        ("MATERIALIZED VIEW DATA", "measurement_stats"),
        ("INDEX", "measurement_stats_year_idx"),
        ("CHECK CONSTRAINT", "orders orders_id_positive"),
        ("COMMENT", "CONSTRAINT orders_pkey ON orders"),
        ("COMMENT", "INDEX wide_j_gin"),
        ("STATISTICS", "orders_stats"),
        ("RULE", "order_lines order_lines_no_delete"),
    ] {
        assert!(has(&got, desc, tag), "{desc} {tag} not selected: {got:?}");
    }
    for (desc, tag) in [
        ("TABLE", "invoices"),
        ("SEQUENCE", "shared_seq"),
        ("TABLE ATTACH", "by_region_eu"),
        ("VIEW", "order_summary"),
        ("FUNCTION", "touch_row()"),
    ] {
        assert!(!has(&got, desc, tag), "{desc} {tag} selected: {got:?}");
    }
    assert!(sel.left_out_foreign_keys.is_empty(), "{sel:?}");
    let required = picked(toc, &sel.requires);
    for (desc, tag) in [
        ("SEQUENCE", "shared_seq"),
        ("FUNCTION", "touch_row()"),
        ("TYPE", "mood"),
    ] {
        assert!(
            has(&required, desc, tag),
            "{desc} {tag} not required: {required:?}"
        );
    }
    let target = restore_list(c, d, toc, &with_prerequisites(&sel));
    for t in [
        "app.orders",
        "app.order_lines",
        "app.measurements",
        "\"données\".\"élèves\"",
    ] {
        assert_eq!(count(c, &target, t), count(c, &d.db, t), "{t}");
    }
    let facts = "SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = 'app'::regnamespace AND relkind = 'r'),
                        (SELECT count(*) FROM pg_constraint WHERE contype = 'f'),
                        (SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal),
                        (SELECT count(*) FROM pg_policy),
                        (SELECT last_value FROM \"données\".\"élèves_id_seq\"),
                        (SELECT last_value FROM app.ident_always_id_seq),
                        (SELECT count(*) FROM app.measurement_stats)";
    let want_tables = 8; // orders, order_lines, ident_always, secrets, audited, wide, 3 partitions
    let got_facts = c.psql(&target, facts);
    assert!(
        got_facts.starts_with(&format!("{}|1|1|1|", want_tables + 1)),
        "{got_facts}"
    );
    let src = c.psql(&d.db, facts);
    assert_eq!(
        got_facts.split('|').skip(4).collect::<Vec<_>>(),
        src.split('|').skip(4).collect::<Vec<_>>()
    );
}

/// A schema chosen whole brings its SCHEMA entry and every object in it, but not a partition
/// in it whose parent is elsewhere attached; schema-only and data-only split the sections.
fn schema_choice_and_sections(toc: &Toc) {
    let sel = select(
        toc,
        &TableChoice {
            schemas: ["Sales Data".to_string()].into(),
            exclude_tables: names(&[("Sales Data", "MixedCase")]),
            ..TableChoice::default()
        },
    );
    let got = picked(toc, &sel.all());
    for (desc, tag) in [
        ("SCHEMA", "Sales Data"),
        ("ACL", "SCHEMA \"Sales Data\""),
        ("FUNCTION", "add_tax(numeric, numeric)"),
        ("TABLE", "Ünïcode \"quoted\" table"),
        ("TABLE DATA", "by_region_Other"),
    ] {
        assert!(has(&got, desc, tag), "{desc} {tag} not selected: {got:?}");
    }
    assert!(!has(&got, "TABLE ATTACH", "by_region_Other"), "{got:?}");
    assert!(!has(&got, "TABLE", "MixedCase"), "{got:?}");
    assert!(sel.schemas.is_empty(), "{sel:?}");

    // A view by name: itself and its ACL; the tables it reads are required, not restored.
    let view = select(
        toc,
        &TableChoice {
            tables: names(&[("app", "order_summary")]),
            ..TableChoice::default()
        },
    );
    assert_eq!(
        picked(toc, &view.all()),
        [("ACL", "TABLE order_summary"), ("VIEW", "order_summary")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    );
    let required = picked(toc, &view.requires);
    assert!(has(&required, "TABLE", "orders") && has(&required, "TABLE", "invoices"));

    // An owned sequence follows its table out of a schema chosen whole, but comes when named.
    let without_table = select(
        toc,
        &TableChoice {
            schemas: ["données".to_string()].into(),
            exclude_tables: names(&[("données", "élèves")]),
            ..TableChoice::default()
        },
    );
    let got = picked(toc, &without_table.all());
    assert!(has(&got, "SCHEMA", "données"), "{got:?}");
    assert!(
        !got.iter().any(|(_, tag)| tag.starts_with("élèves")),
        "{got:?}"
    );
    let named = select(
        toc,
        &TableChoice {
            tables: names(&[("données", "élèves_id_seq")]),
            ..TableChoice::default()
        },
    );
    let got = picked(toc, &named.all());
    assert!(has(&got, "SEQUENCE", "élèves_id_seq"), "{got:?}");
    assert!(has(&got, "SEQUENCE SET", "élèves_id_seq"), "{got:?}");
    assert!(!has(&got, "TABLE", "élèves"), "{got:?}");
    assert!(!has(&got, "SEQUENCE OWNED BY", "élèves_id_seq"), "{got:?}");

    let tables = names(&[("app", "orders"), ("données", "élèves")]);
    let schema_only = select(
        toc,
        &TableChoice {
            tables: tables.clone(),
            schema_only: true,
            ..TableChoice::default()
        },
    );
    assert!(schema_only.data.is_empty(), "{schema_only:?}");
    assert!(!schema_only.pre_data.is_empty() && !schema_only.post_data.is_empty());
    let data_only = select(
        toc,
        &TableChoice {
            tables,
            data_only: true,
            ..TableChoice::default()
        },
    );
    assert!(data_only.pre_data.is_empty() && data_only.post_data.is_empty());
    assert_eq!(
        picked(toc, &data_only.data),
        [
            ("SEQUENCE SET", "élèves_id_seq"),
            ("TABLE DATA", "orders"),
            ("TABLE DATA", "élèves")
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
    );
}

/// `--into-schema` with the library's pieces: the definitions of chosen tables (a serial
/// column's DEFAULT with its `nextval('...'::regclass)`, an identity, a sequence a table uses
/// but does not own), requalified into schema `restored` and run in the live source database,
/// create the copies there beside the untouched originals.
fn requalified_definitions_run_in_another_schema(c: &Cluster, d: &Dumped, toc: &Toc) {
    let chosen = [
        ("données", "élèves"),
        ("app", "ident_always"),
        ("app", "orders"),
    ];
    let sel = select(
        toc,
        &TableChoice {
            tables: names(&chosen),
            schema_only: true,
            ..TableChoice::default()
        },
    );
    let mut renames = Renames::new();
    for (_, schema, name) in qualified_objects(toc, &sel.all()) {
        renames.add((&schema, &name), ("restored", &name));
    }
    // Three tables, two owned sequences, the extended statistics.
    assert_eq!(renames.map.len(), 6, "{renames:?}");
    let mut sql = String::from("CREATE SCHEMA restored;\n");
    for id in sel.all() {
        let e = toc.entry(id).unwrap();
        sql.push_str(&requalify(&e.defn, &renames).unwrap());
        sql.push('\n');
    }
    let app_before = c.psql(
        &d.db,
        "SELECT count(*) FROM pg_class WHERE relnamespace = 'app'::regnamespace",
    );
    c.try_psql(&d.db, &sql)
        .unwrap_or_else(|e| panic!("{e}\n--- requalified ---\n{sql}"));
    let facts = c.psql(
        &d.db,
        "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef
          WHERE adrelid IN ('restored.\"élèves\"'::regclass, 'restored.orders'::regclass)
          ORDER BY adrelid::regclass::text;
         SELECT pg_get_serial_sequence('restored.ident_always', 'id');
         SELECT string_agg(conname || ':' || conrelid::regclass::text, ',' ORDER BY conname)
           FROM pg_constraint WHERE connamespace = 'restored'::regnamespace AND contype <> 'n';
         SELECT stxnamespace::regnamespace || '.' || stxname FROM pg_statistic_ext
          WHERE stxrelid = 'restored.orders'::regclass;",
    );
    assert_eq!(
        facts,
        "nextval('restored.\"élèves_id_seq\"'::regclass)\n\
         nextval('app.shared_seq'::regclass)\n\
         restored.ident_always_id_seq\n\
         ident_always_pkey:restored.ident_always,orders_id_positive:restored.orders,\
         orders_pkey:restored.orders,orders_what_check:restored.orders,\
         élèves_pkey:restored.\"élèves\"\n\
         restored.orders_stats"
    );
    let app_after = c.psql(
        &d.db,
        "SELECT count(*) FROM pg_class WHERE relnamespace = 'app'::regnamespace",
    );
    assert_eq!(app_before, app_after);
}

fn read_and_select_on(major: u32) {
    let c = cluster_of(major);
    let mut fixtures = vec!["hard_types.sql"];
    if major >= 15 {
        // FOR TABLES IN SCHEMA and column lists in publications are 15's.
        fixtures.push("odd_schemas.sql");
    }
    let d = dump(c, "toc_list", &fixtures);
    let (toc, consumed) = toc_of(&d.archive);
    let want_minor = if major <= 15 { 14 } else { 16 };
    assert_eq!(toc.archive_version, (1, want_minor, 0));
    assert_eq!(toc.db_name, d.db);
    assert_same_as_pg_restore(c, &d, &toc);
    // The reader stopped where the data begins: pg_dump writes the first data block right
    // after the TOC, and the offsets it records are file positions.
    let first_data = toc.entries.iter().filter_map(|e| e.data_offset).min();
    assert_eq!(first_data, Some(consumed));

    fk_to_unchosen_table_left_out(c, &d, &toc);
    tables_bring_their_objects(c, &d, &toc);
    schema_choice_and_sections(&toc);
    requalified_definitions_run_in_another_schema(c, &d, &toc);
}

#[test]
fn toc_matches_pg_restore_and_selections_restore_on_13() {
    read_and_select_on(13);
}

#[test]
fn toc_matches_pg_restore_and_selections_restore_on_14() {
    read_and_select_on(14);
}

#[test]
fn toc_matches_pg_restore_and_selections_restore_on_15() {
    read_and_select_on(15);
}

#[test]
fn toc_matches_pg_restore_and_selections_restore_on_16() {
    read_and_select_on(16);
}

#[test]
fn toc_matches_pg_restore_and_selections_restore_on_17() {
    read_and_select_on(17);
}

#[test]
fn toc_matches_pg_restore_and_selections_restore_on_18() {
    read_and_select_on(18);
}
