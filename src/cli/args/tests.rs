use super::*;
use clap::CommandFactory;

#[test]
fn cli_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn sizes() {
    assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
    assert_eq!(parse_size("8 MiB").unwrap(), 8 << 20);
    assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
    assert_eq!(parse_size("4096").unwrap(), 4096);
    assert!(parse_size("12 parsecs").is_err());
    assert!(parse_size("0").is_err());
}

#[test]
fn durations() {
    assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
    assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
    assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
    assert!(parse_duration("soon").is_err());
}

#[test]
fn host_flag_is_not_help() {
    let cli = Cli::try_parse_from(["dbbackup", "-h", "/tmp", "verify", "x"]).unwrap();
    assert_eq!(cli.conn.host.as_deref(), Some("/tmp"));
}

#[test]
fn backup_takes_exactly_one_of_out_and_repo() {
    let parse = |args: &str| Cli::try_parse_from(args.split_whitespace());
    assert!(parse("dbbackup backup single db --out /x").is_ok());
    assert!(parse("dbbackup backup single db --repo /x").is_ok());
    assert!(parse("dbbackup backup single db --out /x --repo /y").is_err());
    assert!(parse("dbbackup backup cluster --repo s3://b/p").is_ok());
    // Neither: parsed (the config file may give one), refused by location::new_backup.
    assert!(parse("dbbackup backup cluster").is_ok());
    let neither = crate::cli::location::new_backup(None, None, Some("db"), false);
    let message = neither.unwrap_err().to_string();
    assert!(
        message.contains("required") && message.contains("--out <DIR>"),
        "{message}"
    );
}
