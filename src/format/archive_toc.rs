//! The header and table of contents (TOC) of a pg_dump custom-format archive (`pg_dump -Fc`,
//! and a native backup's `schema/schema.dump`), read without pg_restore: the one thing
//! `pg_restore -l` does not print is what we need most, the dependencies between entries
//! (which index, constraint, trigger, sequence, comment or ACL belongs to which table).
//!
//! The layout follows PostgreSQL's `src/bin/pg_dump/pg_backup_archiver.c` (`ReadHead`,
//! `ReadToc`, `ReadInt`, `ReadStr`) and `pg_backup_custom.c` (`_ReadExtraToc`, `ReadOffset`):
//!
//! - an integer is a sign byte (0 positive, 1 negative) and `int_size` bytes of magnitude,
//!   least significant first; a string is an integer length (-1 for NULL) and that many bytes;
//! - the header: `PGDMP`, version major, minor, revision, `int_size`, `off_size`, format, then
//!   the compression (1.15 and later: one byte naming the algorithm; before: an integer level),
//!   seven integers of creation time, the database name, the server and pg_dump versions;
//! - the TOC: a count, then per entry its dump id, whether it had a data dumper, table oid and
//!   oid (as strings), tag, desc, section, definition, drop and copy statements, namespace,
//!   tablespace, table access method (1.14), relkind (1.16, an integer), owner, the obsolete
//!   "with oids" string, the dependency ids (strings, ended by a NULL), and the format's extra
//!   field: the data offset for custom format (a flag byte and `off_size` bytes), a file name for
//!   a directory archive's `toc.dat`.
//!
//! Versions 1.14 (pg_dump 12 to 15), 1.15 (16) and 1.16 (17, 18) are read; others are refused
//! with [`ArchiveError::Version`]. Reading stops where the data begins.

use std::io::Read;

use crate::error::{ArchiveError, Result};

/// Archive format byte of a custom-format archive (`archCustom`).
const FORMAT_CUSTOM: u8 = 1;
/// Archive format byte of a directory archive's `toc.dat` (`archDirectory`).
const FORMAT_DIRECTORY: u8 = 5;
/// Custom-format data offset flags (`K_OFFSET_*`).
const OFFSET_POS_NOT_SET: u8 = 1;
const OFFSET_POS_SET: u8 = 2;
const OFFSET_NO_DATA: u8 = 3;

/// The header and every TOC entry of an archive, in TOC order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toc {
    /// (major, minor, revision), e.g. (1, 16, 0).
    pub archive_version: (u8, u8, u8),
    /// Size in bytes of an integer and of a file offset in the archive.
    pub int_size: u8,
    pub off_size: u8,
    /// 1 custom, 5 directory (`toc.dat`).
    pub format: u8,
    /// Version 1.15 and later: the algorithm (0 none, 1 gzip, 2 lz4, 3 zstd); before: the zlib
    /// level (0 none, -1 default).
    pub compression: i32,
    /// Creation time as pg_dump wrote it (local time of the dumping host): sec, min, hour, mday,
    /// mon (0-11), year (since 1900), isdst.
    pub created: [i32; 7],
    pub db_name: String,
    /// `server_version` of the dumped server and pg_dump's version, e.g. "18.4" and "18.6".
    pub server_version: String,
    pub pg_dump_version: String,
    pub entries: Vec<TocEntry>,
}

/// Which part of a restore an entry belongs to (`teSection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TocSection {
    /// Comments, ACLs and the like: restored with whatever they depend on.
    None,
    PreData,
    Data,
    PostData,
}

/// One TOC entry, as `pg_restore -l` lists it plus everything it leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocEntry {
    pub dump_id: i32,
    /// The entry has a data part (TABLE DATA, BLOBS, ...).
    pub had_dumper: bool,
    /// `pg_class`-style catalog of the object (e.g. 1259 for relations) and its oid; 0 when none.
    pub catalog_oid: u32,
    pub oid: u32,
    /// The object's name as pg_dump tags it (unquoted; "table constraint" for constraints,
    /// "TABLE name" for comments and ACLs).
    pub tag: String,
    /// The kind: "TABLE", "INDEX", "FK CONSTRAINT", "SEQUENCE SET", ...
    pub desc: String,
    pub section: TocSection,
    pub defn: String,
    pub drop_stmt: String,
    pub copy_stmt: String,
    /// The object's schema; empty when it has none (pg_restore -l prints "-").
    pub namespace: String,
    pub tablespace: String,
    pub tableam: String,
    /// `pg_class.relkind` of a relation (1.16 and later), e.g. 'r', 'p'.
    pub relkind: Option<char>,
    pub owner: String,
    /// Dump ids this entry depends on, as pg_dump wrote them (may repeat; may name ids that are
    /// not in the archive, such as the section boundaries).
    pub deps: Vec<i32>,
    /// Custom format: where the entry's data starts in the file, when pg_dump could record it.
    pub data_offset: Option<u64>,
}

impl TocEntry {
    /// The entry's line in `pg_restore -l`'s format, "ID; tableoid oid DESC namespace tag
    /// owner" (namespace "-" when there is none), which `pg_restore -L` accepts: it reads only
    /// the leading `ID;`. Line breaks in names become spaces, as pg_restore prints them.
    pub fn list_line(&self) -> String {
        let ns = if self.namespace.is_empty() {
            "-".to_string()
        } else {
            one_line(&self.namespace)
        };
        format!(
            "{}; {} {} {} {} {} {}",
            self.dump_id,
            self.catalog_oid,
            self.oid,
            self.desc,
            ns,
            one_line(&self.tag),
            one_line(&self.owner)
        )
    }

    /// The schema-qualified relation this entry is (TABLE, VIEW, ...) or is about, by the
    /// entry's own fields: (namespace, tag).
    pub fn qualified(&self) -> (&str, &str) {
        (&self.namespace, &self.tag)
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// Reads an archive's header and its whole TOC from `r`, stopping where the data begins.
/// Refuses anything but a custom-format archive (or a directory archive's `toc.dat`) of
/// versions 1.14 to 1.16, with one line saying what is wrong.
pub fn read_toc(r: &mut impl Read) -> Result<Toc> {
    Ok(read_toc_inner(r)?)
}

fn read_toc_inner(r: &mut impl Read) -> Result<Toc, ArchiveError> {
    let mut magic = [0u8; 5];
    match r.read_exact(&mut magic) {
        Ok(()) if &magic == b"PGDMP" => {}
        Ok(()) => return Err(ArchiveError::NotArchive),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(ArchiveError::NotArchive)
        }
        Err(e) => return Err(ArchiveError::Io(e)),
    }
    let mut rd = Reader {
        r,
        int_size: 4,
        at: "the header".to_string(),
    };
    let (vmaj, vmin) = (rd.byte()?, rd.byte()?);
    // Version 1.0 had no revision byte; it is refused below anyway.
    let vrev = if vmaj > 1 || (vmaj == 1 && vmin > 0) {
        rd.byte()?
    } else {
        0
    };
    if vmaj != 1 || !(14..=16).contains(&vmin) {
        return Err(ArchiveError::Version(vmaj, vmin, vrev));
    }
    let int_size = rd.byte()?;
    if int_size == 0 || int_size > 8 {
        return Err(ArchiveError::Damaged(format!("integer size {int_size}")));
    }
    rd.int_size = int_size;
    let off_size = rd.byte()?;
    if off_size == 0 || off_size > 8 {
        return Err(ArchiveError::Damaged(format!("offset size {off_size}")));
    }
    let format = rd.byte()?;
    if format != FORMAT_CUSTOM && format != FORMAT_DIRECTORY {
        return Err(ArchiveError::Format(format));
    }
    let compression = if vmin >= 15 {
        i32::from(rd.byte()?)
    } else {
        rd.int()?
    };
    let mut created = [0i32; 7];
    for c in &mut created {
        *c = rd.int()?;
    }
    let db_name = rd.string()?;
    let server_version = rd.string()?;
    let pg_dump_version = rd.string()?;

    rd.at = "the TOC".to_string();
    let count = rd.int()?;
    if count < 0 {
        return Err(ArchiveError::Damaged(format!("TOC entry count {count}")));
    }
    let mut entries = Vec::with_capacity(count.min(100_000) as usize);
    for i in 0..count {
        rd.at = format!("TOC entry {} of {count}", i + 1);
        entries.push(read_entry(&mut rd, vmin, format, off_size)?);
    }
    Ok(Toc {
        archive_version: (vmaj, vmin, vrev),
        int_size,
        off_size,
        format,
        compression,
        created,
        db_name,
        server_version,
        pg_dump_version,
        entries,
    })
}

fn read_entry<R: Read>(
    rd: &mut Reader<'_, R>,
    vmin: u8,
    format: u8,
    off_size: u8,
) -> Result<TocEntry, ArchiveError> {
    let dump_id = rd.int()?;
    if dump_id <= 0 {
        return Err(ArchiveError::Damaged(format!(
            "{}: dump id {dump_id}",
            rd.at
        )));
    }
    rd.at = format!("{} (dump id {dump_id})", rd.at);
    let had_dumper = rd.int()? != 0;
    let catalog_oid = rd.oid()?;
    let oid = rd.oid()?;
    let tag = rd.string()?;
    let desc = rd.string()?;
    let section = match rd.int()? {
        1 => TocSection::None,
        2 => TocSection::PreData,
        3 => TocSection::Data,
        4 => TocSection::PostData,
        n => return Err(ArchiveError::Damaged(format!("{}: section {n}", rd.at))),
    };
    let defn = rd.string()?;
    let drop_stmt = rd.string()?;
    let copy_stmt = rd.string()?;
    let namespace = rd.string()?;
    let tablespace = rd.string()?;
    let tableam = rd.string()?;
    let relkind = if vmin >= 16 {
        match rd.int()? {
            0 => None,
            k => Some(
                u8::try_from(k)
                    .map(char::from)
                    .map_err(|_| ArchiveError::Damaged(format!("{}: relkind {k}", rd.at)))?,
            ),
        }
    } else {
        None
    };
    let owner = rd.string()?;
    // "with oids": always "false" since PostgreSQL 12; pg_restore only warns about "true".
    let _with_oids = rd.opt_string()?;
    let mut deps = Vec::new();
    while let Some(d) = rd.opt_string()? {
        deps.push(
            d.trim()
                .parse::<i32>()
                .map_err(|_| ArchiveError::Damaged(format!("{}: dependency {d:?}", rd.at)))?,
        );
    }
    let data_offset = if format == FORMAT_CUSTOM {
        let flag = rd.byte()?;
        let mut pos = 0u64;
        for i in 0..off_size {
            pos |= u64::from(rd.byte()?) << (8 * u32::from(i));
        }
        match flag {
            OFFSET_POS_SET => Some(pos),
            OFFSET_POS_NOT_SET | OFFSET_NO_DATA => None,
            f => return Err(ArchiveError::Damaged(format!("{}: offset flag {f}", rd.at))),
        }
    } else {
        // Directory format: the name of the entry's data file.
        let _file = rd.opt_string()?;
        None
    };
    Ok(TocEntry {
        dump_id,
        had_dumper,
        catalog_oid,
        oid,
        tag,
        desc,
        section,
        defn,
        drop_stmt,
        copy_stmt,
        namespace,
        tablespace,
        tableam,
        relkind,
        owner,
        deps,
        data_offset,
    })
}

/// `ReadInt`/`ReadStr` over a byte source; `at` names the place for error messages.
struct Reader<'a, R: Read> {
    r: &'a mut R,
    int_size: u8,
    at: String,
}

impl<R: Read> Reader<'_, R> {
    fn byte(&mut self) -> Result<u8, ArchiveError> {
        let mut b = [0u8; 1];
        self.r.read_exact(&mut b).map_err(|e| self.io(e))?;
        Ok(b[0])
    }

    fn io(&self, e: std::io::Error) -> ArchiveError {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ArchiveError::Truncated(self.at.clone())
        } else {
            ArchiveError::Io(e)
        }
    }

    /// A sign byte, then `int_size` bytes of magnitude, least significant first.
    fn int(&mut self) -> Result<i32, ArchiveError> {
        let negative = self.byte()? != 0;
        let mut v: u64 = 0;
        for i in 0..self.int_size {
            v |= u64::from(self.byte()?) << (8 * u32::from(i));
        }
        let v = i64::try_from(v).unwrap_or(i64::MAX);
        let v = if negative { -v } else { v };
        i32::try_from(v)
            .map_err(|_| ArchiveError::Damaged(format!("{}: integer {v} out of range", self.at)))
    }

    /// A string; NULL (length -1) as `None`.
    fn opt_string(&mut self) -> Result<Option<String>, ArchiveError> {
        let len = self.int()?;
        if len < 0 {
            return Ok(None);
        }
        let mut buf = vec![0u8; len as usize];
        self.r.read_exact(&mut buf).map_err(|e| self.io(e))?;
        String::from_utf8(buf).map(Some).map_err(|_| {
            ArchiveError::Damaged(format!(
                "{}: text is not UTF-8 (only UTF-8 databases' archives are supported)",
                self.at
            ))
        })
    }

    /// A string, NULL read as empty (pg_dump writes NULL for absent fields).
    fn string(&mut self) -> Result<String, ArchiveError> {
        Ok(self.opt_string()?.unwrap_or_default())
    }

    /// An oid written as a decimal string.
    fn oid(&mut self) -> Result<u32, ArchiveError> {
        let s = self.string()?;
        s.trim()
            .parse()
            .map_err(|_| ArchiveError::Damaged(format!("{}: oid {s:?}", self.at)))
    }
}

#[cfg(test)]
mod tests;
