//! Names for backups in a repository: `DB@latest` (the newest complete backup of DB),
//! `DB@20261129T020000Z` (the backup of DB started then), `cluster@latest` / `cluster@TIME`
//! (cluster backups). The database is everything before the last `@`, so names containing
//! `@` work too.

use crate::error::{Error, Result};
use crate::repo::catalog::{BackupStatus, Catalog, Kind};
use crate::repo::layout::{parse_stamp, stamp, CLUSTER};

/// Which backup of a database a name means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    Latest,
    /// The `20261129T020000Z` of the backup's directory.
    At(String),
}

/// A parsed `DB@latest` / `DB@TIME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupName {
    pub database: String,
    pub which: Which,
}

impl BackupName {
    /// `None` when `text` is not a backup name (then it is a path).
    pub fn parse(text: &str) -> Option<BackupName> {
        let (database, which) = text.rsplit_once('@')?;
        if database.is_empty() {
            return None;
        }
        let which = match which {
            "latest" => Which::Latest,
            t if parse_stamp(t).is_some() => Which::At(t.to_string()),
            _ => return None,
        };
        Some(BackupName {
            database: database.to_string(),
            which,
        })
    }

    fn kind(&self) -> Kind {
        match self.database == CLUSTER {
            true => Kind::Cluster,
            false => Kind::Single,
        }
    }

    /// The directory, relative to the repository, of the backup this name means.
    pub fn resolve(&self, catalog: &Catalog) -> Result<String> {
        let mut of_db = catalog
            .backups
            .iter()
            .filter(|b| b.kind == self.kind() && b.database == self.database);
        let found = match &self.which {
            Which::Latest => of_db.find(|b| b.status == BackupStatus::Complete),
            Which::At(t) => of_db.find(|b| &stamp(b.time) == t),
        };
        match found {
            Some(b) => Ok(b.dir.clone()),
            None => Err(Error::Refused(format!(
                "{}: no {} of {} in {}{}",
                self,
                match self.which {
                    Which::Latest => "complete backup",
                    Which::At(_) => "backup at that time",
                },
                match self.kind() {
                    Kind::Cluster => "the cluster".to_string(),
                    Kind::Single => format!("database {:?}", self.database),
                },
                catalog.location,
                match catalog.backups.is_empty() {
                    true => " (the repository holds no backups)".to_string(),
                    false => " (`dbbackup list --repo` shows what there is)".to_string(),
                }
            ))),
        }
    }
}

impl std::fmt::Display for BackupName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.which {
            Which::Latest => write!(f, "{}@latest", self.database),
            Which::At(t) => write!(f, "{}@{t}", self.database),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        let n = BackupName::parse("shop@latest").unwrap();
        assert_eq!((n.database.as_str(), n.which), ("shop", Which::Latest));
        let n = BackupName::parse("a@b@20261129T020000Z").unwrap();
        assert_eq!(n.database, "a@b");
        assert_eq!(n.which, Which::At("20261129T020000Z".into()));
        assert_eq!(n.to_string(), "a@b@20261129T020000Z");
        assert!(BackupName::parse("/backups/shop").is_none());
        assert!(BackupName::parse("shop@yesterday").is_none());
        assert!(BackupName::parse("@latest").is_none());
    }
}
