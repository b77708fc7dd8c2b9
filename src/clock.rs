//! The one clock format: RFC 3339 timestamps (UTC) in manifests, markers and the lock.

/// RFC 3339 timestamp of now, UTC.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
}
