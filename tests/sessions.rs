//! Every session dbbackup opens pins the settings that make dumps exact and long COPYs safe.

mod support;

use dbbackup::source::conn::{ConnParams, ConnectOptions};

#[tokio::test]
async fn sessions_pin_dump_settings_and_name_the_database_on_failure() {
    let c = support::cluster();
    let opts = ConnectOptions {
        host: Some(c.socket_dir.to_string_lossy().into_owned()),
        port: Some(c.port),
        username: Some("postgres".into()),
    };
    let p = ConnParams::resolve(&opts).unwrap();
    let s = p.connect("postgres").await.unwrap();
    let row = s
        .client
        .query_one(
            "SELECT current_setting('DateStyle'), current_setting('row_security'),
                    current_setting('extra_float_digits'), current_setting('statement_timeout'),
                    current_setting('idle_in_transaction_session_timeout'),
                    current_setting('application_name'), pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "ISO, MDY");
    assert_eq!(row.get::<_, String>(1), "off");
    assert_eq!(row.get::<_, String>(2), "3");
    assert_eq!(row.get::<_, String>(3), "0");
    assert_eq!(row.get::<_, String>(4), "0");
    assert_eq!(row.get::<_, String>(5), "dbbackup");
    assert_eq!(row.get::<_, i32>(6), s.backend_pid());
    s.close("test session").await.unwrap();

    let err = p.connect("no_such_db_here").await.err().unwrap();
    assert!(err.to_string().contains("no_such_db_here"), "{err}");
}
