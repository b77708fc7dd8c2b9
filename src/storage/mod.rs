//! Where backups live: one small interface, two implementations chosen by the location.
//!
//! A backup is a set of named objects (`manifest.json`, `data/16384/u0000-00000.copy.zst`, …)
//! under a location: a local directory ([`local`]) or a prefix of an S3-compatible bucket
//! ([`s3`], `s3://BUCKET/PREFIX`). The object layout is the directory layout, so a backup copied
//! between the two with stock tools restores from either place. Everything that reads or writes
//! a backup (chunk writer and reader, manifest store, lock, resume, verify, restore) goes
//! through [`Store`] and does not know which kind it talks to.
//!
//! The contract every implementation keeps:
//! - an object written with [`Store::create`] becomes visible only when its writer's `finish`
//!   succeeded (temporary name, fsync, rename; or a completed multipart upload whose size was
//!   confirmed), and an abandoned writer leaves nothing that looks like an object;
//! - [`Store::put_atomic`] replaces an object whole (the manifest);
//! - [`Store::create_exclusive`] creates an object only if it does not exist (the lock).

pub mod local;
pub mod lock;
pub mod s3;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::encryption::Sealing;
use crate::error::{Error, Result};

/// An object being written; see the module documentation for when it becomes visible.
pub trait ObjectWriter: Write + Send {
    /// Makes the object durable and visible; returns its stored size (confirmed by the store).
    fn finish(self: Box<Self>) -> Result<u64>;
}

/// One kind of place where backups live. Names are relative, `/`-separated.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Where `rel` is, for messages: a path, or `s3://bucket/prefix/rel`.
    fn describe(&self, rel: &str) -> PathBuf;
    /// The local directory of `rel`, when the backend is a file system.
    fn local_path(&self, rel: &str) -> Option<PathBuf>;
    /// Makes sure objects can be created under `rel/` (a private directory on a file system).
    fn create_dir(&self, rel: &str) -> Result<()>;
    /// Starts writing object `rel`; `size_hint` is the largest size it may reach (part sizes).
    fn create(&self, rel: &str, size_hint: u64) -> Result<Box<dyn ObjectWriter>>;
    /// Opens object `rel` for reading, with its stored size; `None` when it does not exist.
    fn open(&self, rel: &str) -> Result<Option<(Box<dyn Read + Send>, u64)>>;
    /// Replaces object `rel` whole with `data`.
    fn put_atomic(&self, rel: &str, data: &[u8]) -> Result<()>;
    /// Creates object `rel` with `data` unless it exists; false when it did.
    fn create_exclusive(&self, rel: &str, data: &[u8]) -> Result<bool>;
    /// Every object under `prefix/` (all of them for ""), with sizes; names relative to the
    /// backend's root.
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>>;
    /// Removes object `rel` (no error when it is gone already).
    fn delete(&self, rel: &str) -> Result<()>;
    /// Removes what interrupted writes under `prefix/` left behind (temporary files, incomplete
    /// multipart uploads); returns what it removed.
    fn clean_incomplete(&self, prefix: &str) -> Result<Vec<String>>;
    /// Memory one open writer holds for bytes not yet stored, with `parts_in_flight` parts
    /// uploading while the next fills (object stores); a file system writes through.
    fn writer_buffer(&self, _parts_in_flight: usize) -> u64 {
        0
    }
    /// Lets at most `n` parts of one object upload while the next fills (object stores only);
    /// 0 sends each part before taking more bytes.
    fn set_parts_in_flight(&self, _n: usize) {}
    /// True when objects are uploaded in parts held in memory.
    fn uploads_in_parts(&self) -> bool {
        false
    }
}

/// A location: a backend and a prefix inside it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Arc<dyn Backend>,
    prefix: String,
    /// Recipients to encrypt new objects to, identities to read encrypted ones with.
    sealing: Arc<Sealing>,
}

impl Store {
    /// `s3://BUCKET/PREFIX` or a local path. S3 settings come from the environment and
    /// `s3_endpoint` (see [`s3::S3Settings`]).
    pub fn at(location: &str, s3_endpoint: Option<&str>) -> Result<Store> {
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::Usage(format!(
                    "{location:?} names no bucket: use s3://BUCKET/PREFIX"
                )));
            }
            let backend = s3::S3Backend::connect(bucket, s3_endpoint)?;
            return Ok(Store {
                backend: Arc::new(backend),
                prefix: prefix.trim_matches('/').to_string(),
                sealing: Arc::default(),
            });
        }
        Ok(Store::local(Path::new(location)))
    }

    /// A local directory.
    pub fn local(dir: &Path) -> Store {
        Store {
            backend: Arc::new(local::LocalBackend::new(dir)),
            prefix: String::new(),
            sealing: Arc::default(),
        }
    }

    /// The same location, with `sealing`'s recipients and identities for every chunk written
    /// or read through it (see [`crate::chunk`]); locations inside it ([`Store::sub`]) keep them.
    pub fn with_sealing(mut self, sealing: Arc<Sealing>) -> Store {
        self.sealing = sealing;
        self
    }

    /// The encryption settings of this location (none by default).
    pub fn sealing(&self) -> &Sealing {
        &self.sealing
    }

    /// The location `rel` inside this one (a cluster backup's database).
    pub fn sub(&self, rel: &str) -> Store {
        Store {
            backend: self.backend.clone(),
            prefix: self.key(rel),
            sealing: self.sealing.clone(),
        }
    }

    fn key(&self, rel: &str) -> String {
        match (self.prefix.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{rel}", self.prefix),
        }
    }

    /// Where `rel` is, for messages.
    pub fn describe(&self, rel: &str) -> PathBuf {
        self.backend.describe(&self.key(rel))
    }

    /// The location itself, for messages.
    pub fn display(&self) -> String {
        self.describe("").display().to_string()
    }

    /// The local directory, when this location is one.
    pub fn local_dir(&self) -> Option<PathBuf> {
        self.backend.local_path(&self.key(""))
    }

    /// Memory one open writer holds for bytes not yet stored; see [`Backend::writer_buffer`].
    pub fn writer_buffer(&self, parts_in_flight: usize) -> u64 {
        self.backend.writer_buffer(parts_in_flight)
    }

    /// See [`Backend::set_parts_in_flight`]; applies to every writer of this backend.
    pub fn set_parts_in_flight(&self, n: usize) {
        self.backend.set_parts_in_flight(n)
    }

    pub fn uploads_in_parts(&self) -> bool {
        self.backend.uploads_in_parts()
    }

    pub fn create_dir(&self, rel: &str) -> Result<()> {
        self.backend.create_dir(&self.key(rel))
    }

    pub fn create(&self, rel: &str, size_hint: u64) -> Result<Box<dyn ObjectWriter>> {
        self.backend.create(&self.key(rel), size_hint)
    }

    pub fn open(&self, rel: &str) -> Result<Option<(Box<dyn Read + Send>, u64)>> {
        self.backend.open(&self.key(rel))
    }

    /// Whether object `rel` exists.
    pub fn exists(&self, rel: &str) -> Result<bool> {
        Ok(self.open(rel)?.is_some())
    }

    /// The whole of a small object (a manifest, a lock); `None` when it does not exist.
    pub fn read_small(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let Some((mut reader, size)) = self.open(rel)? else {
            return Ok(None);
        };
        let mut data = Vec::with_capacity(size as usize);
        reader
            .read_to_end(&mut data)
            .map_err(|e| Error::io("reading", self.describe(rel), e))?;
        Ok(Some(data))
    }

    pub fn put_atomic(&self, rel: &str, data: &[u8]) -> Result<()> {
        self.backend.put_atomic(&self.key(rel), data)
    }

    pub fn create_exclusive(&self, rel: &str, data: &[u8]) -> Result<bool> {
        self.backend.create_exclusive(&self.key(rel), data)
    }

    /// Every object of this location, names relative to it, with sizes.
    pub fn list(&self) -> Result<Vec<(String, u64)>> {
        let base = self.key("");
        let all = self.backend.list(&base)?;
        Ok(all
            .into_iter()
            .filter_map(|(name, size)| {
                let rel = if base.is_empty() {
                    Some(name.as_str())
                } else {
                    name.strip_prefix(&format!("{base}/"))
                };
                rel.map(|r| (r.to_string(), size))
            })
            .collect())
    }

    pub fn delete(&self, rel: &str) -> Result<()> {
        self.backend.delete(&self.key(rel))
    }

    /// Removes what interrupted writes left behind in this location.
    pub fn clean_incomplete(&self) -> Result<Vec<String>> {
        self.backend.clean_incomplete(&self.key(""))
    }

    /// A new backup goes only into an empty location: refuses one that holds any object but
    /// those named in `except`.
    pub fn check_empty(&self, except: &[&str]) -> Result<()> {
        let existing: Vec<(String, u64)> = self
            .list()?
            .into_iter()
            .filter(|(name, _)| !except.contains(&name.as_str()))
            .collect();
        if let Some((first, _)) = existing.first() {
            return Err(Error::Refused(format!(
                "output directory {} is not empty ({} files, e.g. {first}); choose a new directory",
                self.display(),
                existing.len()
            )));
        }
        Ok(())
    }
}
