//! Backup locations as the user gives them: a directory or `s3://BUCKET/PREFIX`, with the
//! S3 endpoint of `--s3-endpoint` (else `AWS_ENDPOINT_URL`, else AWS).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use dbbackup::encryption::Sealing;
use dbbackup::repo::catalog::{BackupStatus, Kind};
use dbbackup::repo::layout;
use dbbackup::repo::names::BackupName;
use dbbackup::storage::Store;
use dbbackup::{Error, Result};

use super::args::IdentityArgs;

static S3_ENDPOINT: OnceLock<Option<String>> = OnceLock::new();

/// Records `--s3-endpoint` for the run (before any location is opened).
pub fn set_s3_endpoint(endpoint: Option<String>) {
    let _ = S3_ENDPOINT.set(endpoint);
}

/// Opens the location `path` names.
pub fn open(path: &Path) -> Result<Store> {
    let endpoint = S3_ENDPOINT.get().and_then(|e| e.as_deref());
    Store::at(&path.to_string_lossy(), endpoint)
}

/// Opens the repository `--repo LOCATION`.
pub fn open_repo(repo: &str) -> Result<Store> {
    open(Path::new(repo))
}

/// Where a new backup goes: `--out DIR` as given, or a new directory named by the start time
/// in `--repo` (`LOCATION/<database>/<time>/`, cluster backups `LOCATION/cluster/<time>/`).
/// `database` is `None` for a cluster backup. With `resume` and `--repo`: the newest backup of
/// the database there, which must have failed or been interrupted.
pub fn new_backup(
    out: Option<&Path>,
    repo: Option<&str>,
    database: Option<&str>,
    resume: bool,
) -> Result<Store> {
    let (Some(repo), None) = (repo, out) else {
        // clap refuses both on the command line; from the config file one of them may come,
        // and the command line's wins.
        return match out {
            Some(out) => open(out),
            None => Err(Error::Usage(
                "the following required arguments were not provided: --out <DIR> or --repo \
                 <LOCATION> (see --help)"
                    .into(),
            )),
        };
    };
    let repo_store = open_repo(repo)?;
    let name = database.unwrap_or(layout::CLUSTER);
    if !resume {
        let dir = layout::backup_dir(name, database.is_none(), dbbackup::clock::now());
        return Ok(repo_store.sub(&dir));
    }
    let kind = match database {
        Some(_) => Kind::Single,
        None => Kind::Cluster,
    };
    let catalog = dbbackup::repo::catalog::scan(&repo_store)?;
    let newest = catalog
        .backups
        .iter()
        .find(|b| b.kind == kind && b.database == name);
    match newest {
        Some(b) if matches!(b.status, BackupStatus::Failed | BackupStatus::Interrupted) => {
            Ok(repo_store.sub(&b.dir))
        }
        Some(b) => Err(Error::Usage(format!(
            "nothing to resume: the newest backup of {name:?} in {repo} ({}) is {}",
            b.dir,
            b.status.as_str()
        ))),
        None => Err(Error::Usage(format!(
            "nothing to resume: {repo} holds no backup of {name:?}"
        ))),
    }
}

/// The backup a command reads (`restore`, `verify`, `drill`): without `--repo`, the location
/// `arg` names; with it, the backup the name `arg` means in that repository (`DB@latest`,
/// `DB@20261129T020000Z`, `cluster@latest`).
pub fn backup_location(repo: Option<&str>, arg: &Path) -> Result<Store> {
    let text = arg.to_string_lossy();
    let Some(repo) = repo else {
        return open(arg);
    };
    let Some(name) = BackupName::parse(&text) else {
        return Err(Error::Usage(format!(
            "{text:?} is not a backup name: with --repo give DB@latest, DB@20261129T020000Z or cluster@latest (or drop --repo for a path)"
        )));
    };
    let repo_store = open_repo(repo)?;
    let catalog = dbbackup::repo::catalog::scan(&repo_store)?;
    Ok(repo_store.sub(&name.resolve(&catalog)?))
}

/// [`backup_location`], reading encrypted files with the identities of `keys`.
pub fn backup_location_with_identities(
    repo: Option<&str>,
    arg: &Path,
    keys: &IdentityArgs,
) -> Result<Store> {
    let sealing = Sealing::default().with_identity_files(&keys.identity)?;
    Ok(backup_location(repo, arg)?.with_sealing(Arc::new(sealing)))
}
