//! Running pg_restore into a server older than pg_restore.
//!
//! pg_restore writes session settings of its own version at the start of every connection
//! (pg_restore 17 and newer send `SET transaction_timeout = 0`, which servers before 17 reject
//! as an unknown parameter). Stock pg_restore reports that as an ignored error and goes on;
//! with `--exit-on-error` or `--single-transaction`, which a restore that must not end half
//! done needs, it stops. So when the tools are newer than the target and know such a setting,
//! pg_restore writes its script (`-f -`) and psql runs it with `ON_ERROR_STOP`, and the lines
//! setting parameters the target lacks are left out on the way. Every other statement goes
//! through unchanged, and any error still stops the restore. The price: no `--jobs` then.
//! In one transaction the large objects' own `BEGIN;`/`COMMIT;` are left out too (see
//! [`crate::source::script_filter`]).

use std::ffi::OsString;
use std::io::Write;
use std::process::Stdio;

use crate::error::Result;
use crate::source::child::Child;
use crate::source::script_filter::ScriptFilter;

/// Session settings pg_restore sends that older servers reject: (parameter, first server
/// version that has it).
const NEWER_SETTINGS: &[(&str, i32)] = &[("transaction_timeout", 170_000)];

/// The settings to leave out for a target server of `server_num` (none: run pg_restore as is).
fn unknown_to(server_num: i32, tools_num: i32) -> Vec<&'static str> {
    NEWER_SETTINGS
        .iter()
        .filter(|(_, since)| server_num < *since && tools_num >= *since)
        .map(|(name, _)| *name)
        .collect()
}

/// The settings to leave out of scripts for the server the selected tools were chosen for.
pub fn settings_to_leave_out() -> Vec<&'static str> {
    crate::source::pgtools::selected()
        .filter(|t| t.server_num > 0)
        .map(|t| unknown_to(t.server_num, t.version_num))
        .unwrap_or_default()
}

/// Spawns `pg_restore args` (which name the target with `--dbname=`), directly when the tools
/// suit the target, else as pg_restore's script piped through psql (see the module docs).
pub fn spawn(args: Vec<OsString>, env: &[(String, String)], stdin: Stdio) -> Result<Child> {
    let drop_settings = settings_to_leave_out();
    if drop_settings.is_empty() {
        return Child::spawn("pg_restore", &args, env, stdin, Stdio::null());
    }
    let single_transaction = args.iter().any(|a| a == "--single-transaction");
    let mut restore_args: Vec<OsString> = Vec::new();
    let mut psql_args: Vec<OsString> = vec![
        "-X".into(),
        "-q".into(),
        // The failed statement on stderr, for the error message (see `first_error`).
        "--echo-errors".into(),
        "-v".into(),
        "ON_ERROR_STOP=1".into(),
        "--no-password".into(),
    ];
    for arg in args {
        let text = arg.to_string_lossy();
        if text.starts_with("--dbname=") || text == "--single-transaction" {
            psql_args.push(arg);
        } else if text == "--exit-on-error" || text.starts_with("--jobs=") {
            // psql stops at the first error; the script runs in one session.
        } else {
            restore_args.push(arg);
        }
    }
    restore_args.extend(["-f".into(), "-".into()]);
    psql_args.extend(["-f".into(), "-".into()]);
    let psql = Child::spawn("psql", &psql_args, env, Stdio::piped(), Stdio::null())?;
    let restore = Child::spawn("pg_restore", &restore_args, env, stdin, Stdio::piped())?;
    Ok(restore.pipe_into(
        psql,
        Box::new(move |from, to| {
            let mut filtered = ScriptFilter::new(to, drop_settings, single_transaction);
            std::io::copy(from, &mut filtered)?;
            filtered.flush()
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_left_out_only_where_the_server_lacks_them() {
        assert_eq!(unknown_to(160_004, 180_001), vec!["transaction_timeout"]);
        assert!(unknown_to(170_000, 180_001).is_empty());
        assert!(unknown_to(150_000, 160_000).is_empty());
    }
}
