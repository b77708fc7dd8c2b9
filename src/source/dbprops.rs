//! Database-level properties (encoding, locale provider and locale, owner, limit, comment,
//! grants, settings): read from the source's catalog and re-created on the target, each in the
//! dialect of the server at hand.
//!
//! The catalog changed across majors: `datlocprovider` and `daticulocale` appeared in 15,
//! `daticurules` in 16, and 17 renamed `daticulocale` to `datlocale` (which also holds the
//! builtin provider's locale). `CREATE DATABASE` takes `LOCALE_PROVIDER` from 15, `ICU_RULES`
//! from 16 and `BUILTIN_LOCALE` from 17, and a server rejects the options it does not know, so
//! the statement is built for the target's version, not the source's.

use crate::error::{Error, Result};
use crate::format::manifest::{quote_ident, quote_literal, DatabaseInfo, Grant, Setting};
use crate::source::conn::ConnParams;
use tokio_postgres::Client;

/// The catalog columns giving (provider, provider's locale, ICU rules) on a server of `version`.
fn locale_columns(version: i32) -> &'static str {
    match version {
        ..=149_999 => "'c'::text, NULL::text, NULL::text",
        150_000..=159_999 => "d.datlocprovider::text, d.daticulocale, NULL::text",
        160_000..=169_999 => "d.datlocprovider::text, d.daticulocale, d.daticurules",
        _ => "d.datlocprovider::text, d.datlocale, d.daticurules",
    }
}

/// Reads the properties of database `dbname` (the connected one) from the catalog of a server
/// of `version` (`server_version_num`).
pub async fn database_info(client: &Client, dbname: &str, version: i32) -> Result<DatabaseInfo> {
    let locale_cols = locale_columns(version);
    let row = client
        .query_one(
            &format!(
                "SELECT d.datname, pg_encoding_to_char(d.encoding), d.datcollate, d.datctype,
                    pg_get_userbyid(d.datdba), d.datconnlimit,
                    shobj_description(d.oid, 'pg_database'), d.datacl IS NULL, {locale_cols}
             FROM pg_database d WHERE d.datname = current_database()"
            ),
            &[],
        )
        .await
        .map_err(|e| Error::query("reading database properties", e))?;
    let grants = client
        .query(
            "SELECT coalesce(pg_get_userbyid(a.grantor), ''),
                    CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                    a.privilege_type, a.is_grantable
             FROM pg_database d, aclexplode(d.datacl) WITH ORDINALITY a
             WHERE d.datname = current_database()
             ORDER BY a.ordinality",
            &[],
        )
        .await
        .map_err(|e| Error::query("reading database grants", e))?
        .iter()
        .map(|r| Grant {
            grantor: r.get(0),
            grantee: r.get(1),
            privilege: r.get(2),
            grantable: r.get(3),
        })
        .collect();
    let mut settings = Vec::new();
    for r in client
        .query(
            "SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END,
                    unnest(s.setconfig)
             FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
             WHERE d.datname = current_database()
             ORDER BY 1 NULLS FIRST",
            &[],
        )
        .await
        .map_err(|e| Error::query("reading database settings", e))?
    {
        let role: Option<String> = r.get(0);
        let item: String = r.get(1);
        let (name, value) = item.split_once('=').unwrap_or((item.as_str(), ""));
        settings.push(Setting {
            role,
            name: name.to_string(),
            value: value.to_string(),
        });
    }
    let name: String = row.get(0);
    debug_assert_eq!(name, dbname);
    let locale_provider: String = row.get(8);
    let locale: Option<String> = row.get(9);
    let (icu_locale, builtin_locale) = match locale_provider.as_str() {
        "i" => (locale, None),
        "b" => (None, locale),
        _ => (None, None),
    };
    Ok(DatabaseInfo {
        name,
        encoding: row.get(1),
        collate: row.get(2),
        ctype: row.get(3),
        owner: row.get(4),
        connection_limit: row.get(5),
        comment: row.get(6),
        default_acl: row.get(7),
        locale_provider,
        icu_locale,
        builtin_locale,
        icu_rules: row.get(10),
        grants,
        settings,
    })
}

/// `CREATE DATABASE target` with the source's encoding and locale, in the dialect of a server
/// of `server_version`. Returns the statement and, when the target cannot express the source's
/// locale provider (an ICU or builtin database restored into an older major), a warning saying
/// what was used instead.
pub fn create_database_sql(
    target: &str,
    db: &DatabaseInfo,
    server_version: i32,
) -> (String, Option<String>) {
    let mut sql = format!(
        "CREATE DATABASE {} WITH TEMPLATE = template0 ENCODING = {} LC_COLLATE = {} LC_CTYPE = {}",
        quote_ident(target),
        quote_literal(&db.encoding),
        quote_literal(&db.collate),
        quote_literal(&db.ctype)
    );
    let mut warning = None;
    let fallback = |what: &str, since: &str| {
        Some(format!(
            "the source database uses the {what} locale provider, which this server (version {server_version}) lacks ({what} needs {since}); created it with libc locale {:?} instead",
            db.collate
        ))
    };
    match (db.locale_provider.as_str(), server_version) {
        // Before 15 libc is the only provider, and the option does not exist.
        ("c", ..=149_999) => {}
        ("c", _) => sql.push_str(" LOCALE_PROVIDER = libc"),
        ("i", 150_000..) => {
            sql.push_str(" LOCALE_PROVIDER = icu");
            if let Some(icu) = &db.icu_locale {
                sql.push_str(&format!(" ICU_LOCALE = {}", quote_literal(icu)));
            }
            match &db.icu_rules {
                Some(rules) if server_version >= 160_000 => {
                    sql.push_str(&format!(" ICU_RULES = {}", quote_literal(rules)))
                }
                Some(_) => {
                    warning = Some(format!(
                        "the source database has ICU tailoring rules, which this server (version {server_version}) cannot take (they need 16 or newer); created it without them"
                    ))
                }
                None => {}
            }
        }
        ("i", _) => warning = fallback("ICU", "15 or newer"),
        ("b", 170_000..) => {
            sql.push_str(" LOCALE_PROVIDER = builtin");
            if let Some(locale) = &db.builtin_locale {
                sql.push_str(&format!(" BUILTIN_LOCALE = {}", quote_literal(locale)));
            }
        }
        ("b", _) => warning = fallback("builtin", "17 or newer"),
        (other, _) => {
            warning = Some(format!(
                "unknown locale provider {other:?} in the manifest; created the database with libc locale {:?}",
                db.collate
            ))
        }
    }
    if !db.owner.is_empty() {
        sql.push_str(&format!(" OWNER = {}", quote_ident(&db.owner)));
    }
    (sql, warning)
}

/// Settings whose values are lists that `SET` takes unquoted (as pg_dump treats them).
const LIST_SETTINGS: &[&str] = &[
    "search_path",
    "temp_tablespaces",
    "session_preload_libraries",
    "local_preload_libraries",
    "shared_preload_libraries",
];

/// Comment, grants, connection limit and settings of the source database, applied last.
pub async fn apply_database_properties(
    conn: &ConnParams,
    target: &str,
    db: &DatabaseInfo,
) -> Result<()> {
    let maint = conn.connect(&conn.maintenance_db).await?;
    let name = quote_ident(target);
    let mut stmts = Vec::new();
    if let Some(c) = &db.comment {
        stmts.push(format!(
            "COMMENT ON DATABASE {name} IS {}",
            quote_literal(c)
        ));
    }
    if !db.default_acl {
        stmts.push(format!("REVOKE ALL ON DATABASE {name} FROM PUBLIC"));
        if !db.owner.is_empty() {
            stmts.push(format!(
                "REVOKE ALL ON DATABASE {name} FROM {}",
                quote_ident(&db.owner)
            ));
        }
        for g in &db.grants {
            let grantee = if g.grantee == "PUBLIC" {
                "PUBLIC".to_string()
            } else {
                quote_ident(&g.grantee)
            };
            stmts.push(format!(
                "GRANT {} ON DATABASE {name} TO {grantee}{}",
                g.privilege,
                if g.grantable {
                    " WITH GRANT OPTION"
                } else {
                    ""
                }
            ));
        }
    }
    if db.connection_limit != -1 {
        stmts.push(format!(
            "ALTER DATABASE {name} CONNECTION LIMIT {}",
            db.connection_limit
        ));
    }
    for s in &db.settings {
        let value = if LIST_SETTINGS.contains(&s.name.as_str()) {
            s.value.clone()
        } else {
            quote_literal(&s.value)
        };
        let target_clause = match &s.role {
            Some(role) => format!("ALTER ROLE {} IN DATABASE {name}", quote_ident(role)),
            None => format!("ALTER DATABASE {name}"),
        };
        stmts.push(format!(
            "{target_clause} SET {} TO {value}",
            quote_ident(&s.name)
        ));
    }
    for sql in stmts {
        maint
            .client
            .batch_execute(&sql)
            .await
            .map_err(|e| Error::query(format!("applying database property ({sql})"), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(provider: &str) -> DatabaseInfo {
        DatabaseInfo {
            name: "src".into(),
            encoding: "UTF8".into(),
            collate: "C.UTF-8".into(),
            ctype: "C.UTF-8".into(),
            locale_provider: provider.into(),
            owner: "o".into(),
            connection_limit: -1,
            ..DatabaseInfo::default()
        }
    }

    #[test]
    fn create_database_speaks_the_targets_dialect() {
        let libc = db("c");
        let (sql, warning) = create_database_sql("t", &libc, 130_012);
        assert!(!sql.contains("LOCALE_PROVIDER"), "{sql}");
        assert!(warning.is_none());
        assert!(create_database_sql("t", &libc, 180_001)
            .0
            .contains("LOCALE_PROVIDER = libc"));

        let mut icu = db("i");
        icu.icu_locale = Some("en-US".into());
        icu.icu_rules = Some("&a < g".into());
        let (sql, warning) = create_database_sql("t", &icu, 160_004);
        assert!(
            sql.contains("LOCALE_PROVIDER = icu ICU_LOCALE = 'en-US' ICU_RULES = '&a < g'"),
            "{sql}"
        );
        assert!(warning.is_none());
        let (sql, warning) = create_database_sql("t", &icu, 150_004);
        assert!(!sql.contains("ICU_RULES"), "{sql}");
        assert!(warning.unwrap().contains("tailoring rules"));
        let (sql, warning) = create_database_sql("t", &icu, 140_004);
        assert!(!sql.contains("LOCALE_PROVIDER"), "{sql}");
        assert!(warning.unwrap().contains("ICU locale provider"));

        let mut builtin = db("b");
        builtin.builtin_locale = Some("C.UTF-8".into());
        let (sql, _) = create_database_sql("t", &builtin, 170_000);
        assert!(
            sql.contains("LOCALE_PROVIDER = builtin BUILTIN_LOCALE = 'C.UTF-8'"),
            "{sql}"
        );
        let (sql, warning) = create_database_sql("t", &builtin, 160_000);
        assert!(!sql.contains("builtin"), "{sql}");
        assert!(warning.is_some());
    }

    #[test]
    fn locale_columns_follow_the_catalog() {
        assert!(locale_columns(140_000).starts_with("'c'"));
        assert!(locale_columns(150_000).contains("daticulocale"));
        assert!(locale_columns(160_000).contains("daticurules"));
        assert!(locale_columns(170_000).contains("datlocale"));
    }
}
