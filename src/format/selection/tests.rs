use super::*;

fn filters(t: &[&str], tx: &[&str], n: &[&str], nx: &[&str], dx: &[&str]) -> Filters {
    let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
    Filters {
        table: v(t),
        exclude_table: v(tx),
        schema: v(n),
        exclude_schema: v(nx),
        exclude_table_data: v(dx),
        ..Filters::default()
    }
}

fn rel<'a>(schema: &'a str, name: &'a str) -> Rel<'a> {
    Rel {
        schema,
        name,
        visible: schema == "public",
    }
}

#[test]
fn nothing_given_takes_everything() {
    let s = Selection::new(&Filters::default(), "db").unwrap();
    assert!(s.is_everything() && s.large_objects_selected());
    assert!(s.table_selected(&rel("app", "x")) && s.data_selected(&rel("app", "x")));
}

#[test]
fn table_patterns_win_over_schema_patterns() {
    let s = Selection::new(
        &filters(&["app.orders"], &[], &["other"], &["app"], &[]),
        "db",
    )
    .unwrap();
    assert!(s.table_selected(&rel("app", "orders")));
    assert!(!s.table_selected(&rel("other", "x")));
    assert!(!s.large_objects_selected());
}

#[test]
fn unqualified_table_patterns_see_only_visible_tables() {
    let s = Selection::new(&filters(&["orders"], &[], &[], &[], &[]), "db").unwrap();
    assert!(s.table_selected(&rel("public", "orders")));
    assert!(!s.table_selected(&rel("app", "orders")));
    let s = Selection::new(&filters(&[], &["orders"], &[], &[], &[]), "db").unwrap();
    assert!(!s.table_selected(&rel("public", "orders")));
    assert!(s.table_selected(&rel("app", "orders")));
}

#[test]
fn schemas_exclusions_and_data() {
    let s = Selection::new(
        &filters(
            &[],
            &["app.secret"],
            &["app*"],
            &["app_old"],
            &["app.audit"],
        ),
        "db",
    )
    .unwrap();
    assert!(s.table_selected(&rel("app", "orders")));
    assert!(!s.table_selected(&rel("app", "secret")));
    assert!(!s.table_selected(&rel("app_old", "x")));
    assert!(!s.table_selected(&rel("public", "x")));
    assert!(s.table_selected(&rel("app", "audit")) && !s.data_selected(&rel("app", "audit")));
}

#[test]
fn sequences_follow_their_tables() {
    let s = Selection::new(&filters(&["public.t"], &[], &[], &[], &[]), "db").unwrap();
    let t = rel("public", "t");
    let u = rel("public", "u");
    let seq = rel("public", "t_id_seq");
    assert!(s.sequence_selected(&seq, Some((&t, false))));
    assert!(s.sequence_selected(&seq, Some((&t, true))));
    assert!(!s.sequence_selected(&seq, Some((&u, false))));
    assert!(!s.sequence_selected(&seq, None));
    let s = Selection::new(&filters(&["public.t_id_seq"], &[], &[], &[], &[]), "db").unwrap();
    assert!(s.sequence_selected(&seq, Some((&u, false))));
    assert!(!s.sequence_selected(&seq, Some((&u, true))));
}

#[test]
fn database_parts() {
    let f = filters(
        &["shop.public.orders", "other.public.x"],
        &[],
        &[],
        &[],
        &[],
    );
    let e = Selection::new(&f, "shop").unwrap_err();
    assert_eq!(
        e.to_string(),
        "cross-database references are not implemented: other.public.x"
    );
    let s = Selection::for_database(&f, "shop").unwrap();
    assert_eq!(s.filters().table, ["shop.public.orders"]);
    assert_eq!(s.filters().pg_dump_args(), ["--table=public.orders"]);
    assert!(s.table_selected(&rel("public", "orders")));
    assert!(!s.table_selected(&rel("public", "x")));
    assert_eq!(
        without_database("\"a.b\".\"c.d\"", PatternKind::Schema),
        "\"c.d\""
    );
    assert_eq!(without_database("s.t", PatternKind::Relation), "s.t");
}

#[test]
fn no_matches_are_pg_dumps_errors() {
    let mut f = filters(&["public.t", "public.none"], &[], &[], &[], &[]);
    let s = Selection::new(&f, "db").unwrap();
    let rels = [rel("public", "t")];
    let m = s.matches(["public"].into_iter(), &rels);
    s.check_matches(&m).unwrap();
    f.strict_names = true;
    let s = Selection::new(&f, "db").unwrap();
    assert_eq!(
        s.check_matches(&m).unwrap_err().to_string(),
        "no matching tables were found for pattern \"public.none\""
    );
    let s = Selection::new(&filters(&["nothing*"], &[], &[], &[], &[]), "db").unwrap();
    let m = s.matches(["public"].into_iter(), &rels);
    assert_eq!(
        s.check_matches(&m).unwrap_err().to_string(),
        "no matching tables were found"
    );
    let s = Selection::new(&filters(&[], &[], &["nope"], &[], &[]), "db").unwrap();
    let m = s.matches(["public"].into_iter(), &rels);
    assert_eq!(
        s.check_matches(&m).unwrap_err().to_string(),
        "no matching schemas were found"
    );
    // Across databases: a pattern matching in one is enough.
    let mut a = Matches {
        schema: vec![],
        table: vec![("x".into(), false)],
    };
    a.merge(&Matches {
        schema: vec![],
        table: vec![("x".into(), true)],
    });
    a.check(true).unwrap();
}

#[test]
fn filter_items_map_to_switches() {
    let items = crate::format::filter_file::parse(
        "include table public.t\nexclude table_data big\nexclude schema x\n",
        "f",
    )
    .unwrap();
    let mut f = Filters::default();
    f.add_filter_items(&items, "f").unwrap();
    assert_eq!(f.table, ["public.t"]);
    assert_eq!(f.exclude_table_data, ["big"]);
    assert_eq!(f.exclude_schema, ["x"]);
    for (line, what) in [
        ("include table_data t", "is not allowed"),
        ("exclude foreign_data s", "is not allowed"),
        ("include extension e", "not supported"),
        ("include table_and_children t", "not supported"),
    ] {
        let items = crate::format::filter_file::parse(line, "f").unwrap();
        let e = Filters::default()
            .add_filter_items(&items, "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains(what) && e.contains("line 1"), "{line}: {e}");
    }
}
