//! The one clock: RFC 3339 timestamps (UTC) in manifests, markers and the lock, and the time
//! a repository names a backup by.
//!
//! Test hook: when the environment variable [`TEST_NOW_ENV`] (`DBBACKUP_TEST_NOW`) holds an
//! RFC 3339 time, [`now`] returns that time instead of the system clock. The tests of the
//! backup repository use it to make backups "on" chosen days (retention needs days, weeks and
//! months of history); it is read here and nowhere else. Durations are measured with
//! `Instant`, not with this clock, so they stay real.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Environment variable that fixes [`now`] (tests only; see the module documentation).
pub const TEST_NOW_ENV: &str = "DBBACKUP_TEST_NOW";

/// Now, UTC, to the second (or the time of [`TEST_NOW_ENV`]). A malformed test time is a
/// programming error of the test and panics with the value.
pub fn now() -> OffsetDateTime {
    let now = match std::env::var(TEST_NOW_ENV) {
        Ok(text) => parse_rfc3339(&text)
            .unwrap_or_else(|| panic!("{TEST_NOW_ENV}={text:?} is not an RFC 3339 time")),
        Err(_) => OffsetDateTime::now_utc(),
    };
    now.replace_nanosecond(0).expect("zero nanoseconds")
}

/// RFC 3339 timestamp of [`now`], UTC.
pub fn now_rfc3339() -> String {
    rfc3339(now())
}

/// `t` as an RFC 3339 timestamp, UTC.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .expect("formats")
}

/// An RFC 3339 timestamp, converted to UTC; `None` when it is not one.
pub fn parse_rfc3339(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text.trim(), &Rfc3339)
        .ok()
        .map(|t| t.to_offset(time::UtcOffset::UTC))
}
