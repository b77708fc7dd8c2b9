//! Which PostgreSQL client tools (pg_dump, pg_dumpall, pg_restore, psql) a run uses.
//!
//! Hosts often carry several majors (Debian's `/usr/lib/postgresql/*/bin`, another on `PATH`),
//! and the choice matters: pg_dump refuses servers newer than itself, pg_restore cannot read
//! archives written by a newer pg_dump, and tools newer than the server send settings it does
//! not know. The rule, printed with the probe:
//!
//! 1. `DBBACKUP_PG_BINDIR` wins, whatever its version (a too-old pg_dump is then refused).
//! 2. Otherwise, among the installed majors not older than what the job needs (the server for a
//!    backup; the server and the archive's pg_dump for a restore): the server's own major, else
//!    the closest newer one; if every one is older, the newest (and the caller refuses it).
//!
//! One run talks to one server, so the choice is made once and kept for the process; every
//! child program is started through [`program`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::RwLock;

use crate::error::{Error, Result};

/// A set of client tools of one version, in one directory (`None`: found on `PATH`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTools {
    pub dir: Option<PathBuf>,
    /// As `server_version_num`: 180006 for 18.6.
    pub version_num: i32,
    /// As the tools print it: "18.6".
    pub version: String,
    /// Why these: for the probe line and the manifest.
    pub reason: String,
    /// The server they were chosen for (`server_version_num`; 0 before a choice).
    pub server_num: i32,
}

impl ClientTools {
    pub fn major(&self) -> i32 {
        self.version_num / 10000
    }

    /// Where the tools live, for messages.
    pub fn location(&self) -> String {
        match &self.dir {
            Some(d) => d.display().to_string(),
            None => "PATH".into(),
        }
    }

    /// "client tools 18.6 (/usr/lib/postgresql/18/bin, the server's major)".
    pub fn describe(&self) -> String {
        format!(
            "client tools {} ({}, {})",
            self.version,
            self.location(),
            self.reason
        )
    }
}

static SELECTED: RwLock<Option<ClientTools>> = RwLock::new(None);

/// The path to run client program `name` with: from the selected tools' directory, else
/// `DBBACKUP_PG_BINDIR`, else looked up on `PATH`.
pub fn program(name: &str) -> PathBuf {
    if let Some(tools) = SELECTED.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return match &tools.dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        };
    }
    match std::env::var_os("DBBACKUP_PG_BINDIR") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => PathBuf::from(name),
    }
}

/// The tools selected for this run, if any.
pub fn selected() -> Option<ClientTools> {
    SELECTED.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Chooses and keeps the tools for a backup of a server of `server_num`.
pub fn choose_for_backup(server_num: i32) -> Result<ClientTools> {
    let tools = choose(
        &installed("pg_dump")?,
        server_num / 10000,
        server_num / 10000,
    );
    keep(tools, server_num)
}

/// Chooses and keeps the tools for restoring into a server of `server_num` an archive written
/// by pg_dump `archive_num` (0: none, e.g. a plain backup only needs psql). Refuses when no
/// installed pg_restore can read the archive.
pub fn choose_for_restore(server_num: i32, archive_num: i32) -> Result<ClientTools> {
    let tools = choose(
        &installed("pg_restore")?,
        (archive_num / 10000).max(1),
        server_num / 10000,
    );
    if tools.version_num / 10000 < archive_num / 10000 {
        return Err(Error::Refused(format!(
            "the backup's schema was written by pg_dump {}, which pg_restore {} ({}) cannot read: install client tools {} or newer (or point DBBACKUP_PG_BINDIR at them)",
            archive_num / 10000,
            tools.version,
            tools.location(),
            archive_num / 10000
        )));
    }
    keep(tools, server_num)
}

fn keep(mut tools: ClientTools, server_num: i32) -> Result<ClientTools> {
    tools.server_num = server_num;
    *SELECTED.write().unwrap_or_else(|e| e.into_inner()) = Some(tools.clone());
    Ok(tools)
}

/// The installed versions of `probe_program`: `DBBACKUP_PG_BINDIR` alone when set, else every
/// `/usr/lib/postgresql/*/bin` that has it, then the one on `PATH`.
fn installed(probe_program: &str) -> Result<Vec<ClientTools>> {
    if let Some(dir) = std::env::var_os("DBBACKUP_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        let (version_num, version) = version_of(&dir.join(probe_program))?;
        return Ok(vec![ClientTools {
            dir: Some(dir),
            version_num,
            version,
            reason: "DBBACKUP_PG_BINDIR".into(),
            server_num: 0,
        }]);
    }
    let mut found = Vec::new();
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join(probe_program).is_file())
        .collect();
    debian.sort();
    for dir in debian {
        if let Ok((version_num, version)) = version_of(&dir.join(probe_program)) {
            found.push(ClientTools {
                dir: Some(dir),
                version_num,
                version,
                reason: String::new(),
                server_num: 0,
            });
        }
    }
    if let Ok((version_num, version)) = version_of(Path::new(probe_program)) {
        if !found.iter().any(|t| t.version_num == version_num) {
            found.push(ClientTools {
                dir: None,
                version_num,
                version,
                reason: String::new(),
                server_num: 0,
            });
        }
    }
    if found.is_empty() {
        return Err(Error::Refused(format!(
            "no {probe_program} found (looked in /usr/lib/postgresql/*/bin and on PATH): install the PostgreSQL client tools (or point DBBACKUP_PG_BINDIR at them)"
        )));
    }
    Ok(found)
}

/// The rule of the module documentation, over `candidates` (not empty).
fn choose(candidates: &[ClientTools], min_major: i32, server_major: i32) -> ClientTools {
    if candidates.len() == 1 && candidates[0].reason == "DBBACKUP_PG_BINDIR" {
        return candidates[0].clone();
    }
    let others = |chosen: &ClientTools| {
        let rest: Vec<String> = candidates
            .iter()
            .filter(|c| *c != chosen)
            .map(|c| format!("{} ({})", c.version, c.location()))
            .collect();
        if rest.is_empty() {
            String::new()
        } else {
            format!("; also installed: {}", rest.join(", "))
        }
    };
    let usable = candidates
        .iter()
        .filter(|c| c.version_num / 10000 >= min_major);
    let exact = usable
        .clone()
        .filter(|c| c.version_num / 10000 == server_major)
        .max_by_key(|c| c.version_num);
    let closest_newer = usable
        .clone()
        .filter(|c| c.version_num / 10000 > server_major)
        .min_by_key(|c| (c.version_num / 10000, -c.version_num));
    let newest_usable = usable.clone().max_by_key(|c| c.version_num);
    let newest = candidates.iter().max_by_key(|c| c.version_num);
    let (chosen, why) = if let Some(c) = exact {
        (c, format!("the server's major, {server_major}"))
    } else if let Some(c) = closest_newer {
        (
            c,
            format!("the closest major newer than the server's {server_major}"),
        )
    } else if let Some(c) = newest_usable {
        (
            c,
            format!("the newest installed; the server is {server_major}"),
        )
    } else {
        let c = newest.expect("candidates are not empty");
        (
            c,
            format!("the newest installed, older than the {min_major} needed"),
        )
    };
    let mut chosen = chosen.clone();
    chosen.reason = format!("{why}{}", others(&chosen));
    chosen
}

/// Connects to the target server, chooses the tools for restoring an archive written by
/// pg_dump `archive_num` into it, says which, and warns when the target is an older major
/// than the backup's source (`source_num`): a downgrade is not promised to work.
pub async fn choose_for_restore_into(
    conn: &crate::source::conn::ConnParams,
    source_num: i32,
    archive_num: i32,
    progress: &dyn crate::progress::Progress,
) -> Result<ClientTools> {
    let maint = conn.connect(&conn.maintenance_db).await?;
    let server_num: i32 = maint
        .client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(|e| Error::query("reading the target server's version", e))?
        .get(0);
    let tools = choose_for_restore(server_num, archive_num)?;
    progress.note(&format!(
        "target server {}, {}",
        server_num / 10000,
        tools.describe()
    ));
    if source_num / 10000 > server_num / 10000 {
        progress.note(&format!(
            "warning: the backup comes from PostgreSQL {}, the target is the older {}: objects or settings the older server lacks will fail to restore",
            source_num / 10000,
            server_num / 10000
        ));
    }
    Ok(tools)
}

/// `program --version`, e.g. "pg_dump (PostgreSQL) 15.18" → (150018, "15.18").
pub fn version_of(path: &Path) -> Result<(i32, String)> {
    let out = Command::new(path)
        .arg("--version")
        .output()
        .map_err(|e| Error::Child {
            program: path.display().to_string(),
            status: "could not start".into(),
            stderr: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .unwrap_or("")
        .to_string();
    Ok((version_num(&version), version))
}

/// "15.18" → 150018, "9.6.24" → 90624 (as `server_version_num`).
pub fn version_num(v: &str) -> i32 {
    let parts: Vec<i32> = v
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(0))
        .collect();
    match parts.as_slice() {
        [major, minor, ..] if *major >= 10 => major * 10000 + minor,
        [major] => major * 10000,
        [major, minor, patch, ..] => major * 10000 + minor * 100 + patch,
        [major, minor] => major * 10000 + minor * 100,
        [] => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_numbers() {
        assert_eq!(version_num("15.18"), 150018);
        assert_eq!(version_num("16beta1"), 160001);
        assert_eq!(version_num("9.6.24"), 90624);
    }

    fn tools(version_num: i32, dir: &str) -> ClientTools {
        ClientTools {
            dir: Some(PathBuf::from(dir)),
            version_num,
            version: format!("{}.{}", version_num / 10000, version_num % 10000),
            reason: String::new(),
            server_num: 0,
        }
    }

    #[test]
    fn the_servers_major_else_the_closest_newer_else_the_newest() {
        let all = [
            tools(150018, "/15"),
            tools(180006, "/18"),
            tools(170010, "/17"),
        ];
        assert_eq!(choose(&all, 15, 15).dir, Some("/15".into()));
        assert_eq!(choose(&all, 16, 16).dir, Some("/17".into()));
        assert_eq!(choose(&all, 13, 13).dir, Some("/15".into()));
        assert!(choose(&all, 16, 16).reason.contains("closest major newer"));
        // Restore of an archive by pg_dump 18 into 15: 18 is the only one that reads it.
        assert_eq!(choose(&all, 18, 15).dir, Some("/18".into()));
        // Restore into a newer server than any tools: the newest that reads the archive.
        assert_eq!(choose(&all, 15, 19).dir, Some("/18".into()));
        // Nothing new enough: the newest, for the caller to refuse.
        let old = [tools(150018, "/15")];
        assert_eq!(choose(&old, 17, 17).version_num, 150018);
        assert!(choose(&old, 17, 17)
            .reason
            .contains("older than the 17 needed"));
    }
}
