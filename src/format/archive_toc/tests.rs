use super::*;
use crate::error::Error;

/// pg_dump's `WriteInt`/`WriteStr` with 4-byte integers.
fn int(out: &mut Vec<u8>, v: i32) {
    out.push(u8::from(v < 0));
    out.extend_from_slice(&v.unsigned_abs().to_le_bytes());
}
fn string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => int(out, -1),
        Some(s) => {
            int(out, s.len() as i32);
            out.extend_from_slice(s.as_bytes());
        }
    }
}

/// A custom-format archive of version 1.`vmin` with one TABLE entry, laid out as
/// `WriteHead`/`WriteToc` of that version write it (real 1.14 and 1.16 archives are
/// tested against pg_restore in tests/archive_toc.rs; no pg_dump 16 is installed here).
fn synthetic(vmin: u8) -> Vec<u8> {
    let mut a = b"PGDMP".to_vec();
    a.extend_from_slice(&[1, vmin, 0, 4, 8, FORMAT_CUSTOM]);
    if vmin >= 15 {
        a.push(3); // zstd
    } else {
        int(&mut a, -1);
    }
    for v in [1, 2, 3, 8, 11, 126, 0] {
        int(&mut a, v);
    }
    for s in ["shop", "16.4", "16.4"] {
        string(&mut a, Some(s));
    }
    int(&mut a, 1);
    int(&mut a, 230); // dump id
    int(&mut a, 0);
    string(&mut a, Some("1259"));
    string(&mut a, Some("16400"));
    string(&mut a, Some("orders"));
    string(&mut a, Some("TABLE"));
    int(&mut a, 2);
    string(&mut a, Some("CREATE TABLE public.orders (id integer);"));
    string(&mut a, Some("DROP TABLE public.orders;"));
    string(&mut a, None);
    string(&mut a, Some("public"));
    string(&mut a, Some(""));
    string(&mut a, Some("heap"));
    if vmin >= 16 {
        int(&mut a, i32::from(b'r'));
    }
    string(&mut a, Some("app"));
    string(&mut a, Some("false"));
    string(&mut a, Some("7"));
    string(&mut a, Some("12"));
    string(&mut a, None);
    a.push(OFFSET_NO_DATA);
    a.extend_from_slice(&[0; 8]);
    a
}

fn archive_error(bytes: &[u8]) -> ArchiveError {
    match read_toc(&mut &bytes[..]) {
        Err(Error::Archive(e)) => e,
        other => panic!("expected an archive error, got {other:?}"),
    }
}

#[test]
fn reads_each_supported_version() {
    for vmin in [14, 15, 16] {
        let toc = read_toc(&mut &synthetic(vmin)[..]).unwrap();
        assert_eq!(toc.archive_version, (1, vmin, 0));
        assert_eq!(toc.compression, if vmin >= 15 { 3 } else { -1 });
        assert_eq!((toc.db_name.as_str(), toc.created[5]), ("shop", 126));
        let e = &toc.entries[0];
        assert_eq!(
            e.list_line(),
            "230; 1259 16400 TABLE public orders app",
            "1.{vmin}"
        );
        assert_eq!(e.deps, [7, 12]);
        assert_eq!(e.tableam, "heap");
        assert_eq!(e.relkind, (vmin >= 16).then_some('r'));
        assert_eq!(e.section, TocSection::PreData);
    }
}

#[test]
fn refuses_what_it_cannot_read() {
    assert!(matches!(
        archive_error(b"-- PostgreSQL database dump\n"),
        ArchiveError::NotArchive
    ));
    assert!(matches!(archive_error(b"PGD"), ArchiveError::NotArchive));
    let mut old = synthetic(14);
    old[6] = 13;
    let e = archive_error(&old);
    assert!(matches!(e, ArchiveError::Version(1, 13, 0)), "{e}");
    assert!(
        e.to_string().contains("version 1.13.0 not supported"),
        "{e}"
    );
    let mut tar = synthetic(16);
    tar[10] = 3;
    assert!(matches!(archive_error(&tar), ArchiveError::Format(3)));
}

#[test]
fn a_truncated_archive_is_an_error_at_every_length() {
    let full = synthetic(16);
    for len in 5..full.len() {
        let e = archive_error(&full[..len]);
        assert!(matches!(e, ArchiveError::Truncated(_)), "at {len}: {e}");
    }
}
