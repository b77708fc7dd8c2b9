use super::*;

type Name<'a> = (&'a str, &'a str);

fn renames(pairs: &[(Name, Name)]) -> Renames {
    let mut r = Renames::new();
    for (from, to) in pairs {
        r.add(*from, *to);
    }
    r
}

fn orders() -> Renames {
    renames(&[(("public", "orders"), ("scratch", "orders"))])
}

fn rq(sql: &str, r: &Renames) -> String {
    requalify(sql, r).unwrap()
}

#[test]
fn qualified_names_are_replaced_in_every_spelling() {
    let r = orders();
    assert_eq!(
        rq(
            "ALTER TABLE ONLY public.orders ADD CONSTRAINT orders_pkey PRIMARY KEY (id);",
            &r
        ),
        "ALTER TABLE ONLY scratch.orders ADD CONSTRAINT orders_pkey PRIMARY KEY (id);"
    );
    assert_eq!(
        rq(r#"SELECT * FROM "public"."orders""#, &r),
        "SELECT * FROM scratch.orders"
    );
    assert_eq!(
        rq("SELECT * FROM PUBLIC.Orders", &r),
        "SELECT * FROM scratch.orders"
    );
    assert_eq!(
        rq("SELECT * FROM public . orders;", &r),
        "SELECT * FROM scratch.orders;"
    );
    assert_eq!(
        rq("COPY public.orders (id, what) FROM stdin;", &r),
        "COPY scratch.orders (id, what) FROM stdin;"
    );
    // A column reference through the table keeps its column.
    assert_eq!(
        rq("SELECT public.orders.id", &r),
        "SELECT scratch.orders.id"
    );
}

#[test]
fn only_whole_names_match() {
    let r = orders();
    for sql in [
        "SELECT * FROM public.orders_old",
        "SELECT * FROM public.order",
        "SELECT * FROM xpublic.orders",
        "SELECT * FROM \"Public\".orders",
        "SELECT * FROM \"public\".\"Orders\"",
        "SELECT * FROM db.public.orders",
        "SELECT * FROM public.orders$x",
    ] {
        assert_eq!(rq(sql, &r), sql);
    }
}

#[test]
fn comments_literals_and_function_bodies_are_left_alone() {
    let r = orders();
    for sql in [
        "-- public.orders\nSELECT 1",
        "/* public.orders /* nested public.orders */ public.orders */ SELECT 1",
        "SELECT 'public.orders'",
        "SELECT 'it''s public.orders'",
        "SELECT E'\\' public.orders'",
        "SELECT $$ SELECT * FROM public.orders $$",
        "SELECT $fn$ public.orders $fn$",
        "SELECT 'public.orders'::text",
        "COMMENT ON TABLE x IS 'see public.orders'",
    ] {
        assert_eq!(rq(sql, &r), sql, "{sql}");
    }
    // The name right after a comment or literal that looked like it is still found.
    assert_eq!(
        rq("SELECT '--' FROM public.orders -- public.orders", &r),
        "SELECT '--' FROM scratch.orders -- public.orders"
    );
    assert_eq!(
        rq("SELECT $q$ ' $q$, public.orders", &r),
        "SELECT $q$ ' $q$, scratch.orders"
    );
}

#[test]
fn regclass_literals_are_rewritten() {
    let r = renames(&[(("public", "orders_id_seq"), ("scratch", "orders_id_seq"))]);
    assert_eq!(
        rq("ALTER TABLE ONLY public.orders ALTER COLUMN id SET DEFAULT nextval('public.orders_id_seq'::regclass);", &r),
        "ALTER TABLE ONLY public.orders ALTER COLUMN id SET DEFAULT nextval('scratch.orders_id_seq'::regclass);"
    );
    assert_eq!(
        rq("SELECT 'public.orders_id_seq'::pg_catalog.regclass", &r),
        "SELECT 'scratch.orders_id_seq'::pg_catalog.regclass"
    );
    assert_eq!(
        rq(
            "SELECT pg_catalog.setval('public.orders_id_seq', 5, true);",
            &r
        ),
        "SELECT pg_catalog.setval('public.orders_id_seq', 5, true);",
        "a literal without the regclass cast is a literal"
    );
    let odd = renames(&[(("Sales Data", "it's"), ("new", "Q\"x"))]);
    assert_eq!(
        rq(r#"SELECT nextval('"Sales Data"."it''s"'::regclass)"#, &odd),
        r#"SELECT nextval('new."Q""x"'::regclass)"#
    );
}

#[test]
fn quoted_names_with_spaces_quotes_and_unicode() {
    let r = renames(&[
        (
            ("Sales Data", "Ünïcode \"quoted\" table"),
            ("données", "élèves"),
        ),
        (("app", "orders"), ("restored", "Orders Restored")),
    ]);
    assert_eq!(
        rq(
            r#"ALTER TABLE ONLY "Sales Data"."Ünïcode ""quoted"" table" ADD CONSTRAINT x;"#,
            &r
        ),
        r#"ALTER TABLE ONLY "données"."élèves" ADD CONSTRAINT x;"#
    );
    assert_eq!(
        rq("CREATE INDEX o ON app.orders USING btree (id);", &r),
        r#"CREATE INDEX o ON restored."Orders Restored" USING btree (id);"#
    );
}

#[test]
fn new_names_are_quoted_when_needed() {
    assert_eq!(quote_ident("orders_2"), "orders_2");
    assert_eq!(quote_ident("_x"), "_x");
    for (name, quoted) in [
        ("Orders", "\"Orders\""),
        ("2x", "\"2x\""),
        ("user", "\"user\""),
        ("order", "\"order\""),
        ("a b", "\"a b\""),
        ("a\"b", "\"a\"\"b\""),
        ("élèves", "\"élèves\""),
        ("", "\"\""),
    ] {
        assert_eq!(quote_ident(name), quoted);
    }
}

#[test]
fn standard_conforming_strings_off_reads_backslashes() {
    let mut r = orders();
    r.standard_conforming_strings = false;
    let sql = "SELECT 'a\\' public.orders'";
    assert_eq!(rq(sql, &r), sql);
    // With it on, the same text closes the literal after the backslash.
    assert!(requalify(sql, &orders()).is_err());
}

#[test]
fn unterminated_sql_is_an_error() {
    for sql in [
        "SELECT 'x",
        "SELECT \"x",
        "SELECT $a$ x",
        "/* x /* y */",
        "SELECT E'\\'",
    ] {
        let e = requalify(sql, &orders()).unwrap_err().to_string();
        assert!(
            e.starts_with("cannot parse pg_dump's SQL: unterminated"),
            "{sql}: {e}"
        );
    }
}
