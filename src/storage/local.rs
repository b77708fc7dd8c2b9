//! Backups in a local directory: files private to the owner (0700 directories, 0600 files),
//! written under a temporary name, fsynced, renamed into place, and the directory fsynced.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{Backend, ObjectWriter};
use crate::error::{Error, Result};

/// Suffix of files being written; anything with it is garbage after a crash.
pub const TMP_SUFFIX: &str = ".tmp";

#[derive(Debug)]
pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    pub fn new(root: &Path) -> Self {
        LocalBackend {
            root: root.to_path_buf(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }
}

/// Creates `dir` (and parents) private to the owner (0700).
pub fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("creating directory", dir, e))
}

/// fsync a directory so that renames and creations inside it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing directory", dir, e))
}

fn create_private_file(path: &Path, new: bool) -> io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if new {
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    options.open(path)
}

impl Backend for LocalBackend {
    fn describe(&self, rel: &str) -> PathBuf {
        self.path(rel)
    }

    fn local_path(&self, rel: &str) -> Option<PathBuf> {
        Some(self.path(rel))
    }

    fn create_dir(&self, rel: &str) -> Result<()> {
        create_private_dir(&self.path(rel))
    }

    fn create(&self, rel: &str, _size_hint: u64) -> Result<Box<dyn ObjectWriter>> {
        let dest = self.path(rel);
        let tmp = self.path(&format!("{rel}{TMP_SUFFIX}"));
        let file = create_private_file(&tmp, false).map_err(|e| Error::io("creating", &tmp, e))?;
        Ok(Box::new(FileWriter {
            file: Some(BufWriter::with_capacity(256 * 1024, file)),
            tmp,
            dest,
            written: 0,
        }))
    }

    fn open(&self, rel: &str) -> Result<Option<(Box<dyn Read + Send>, u64)>> {
        let path = self.path(rel);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("opening", &path, e)),
        };
        let len = file
            .metadata()
            .map_err(|e| Error::io("reading metadata of", &path, e))?
            .len();
        Ok(Some((Box::new(file), len)))
    }

    fn put_atomic(&self, rel: &str, data: &[u8]) -> Result<()> {
        let mut w = self.create(rel, data.len() as u64)?;
        w.write_all(data)
            .map_err(|e| Error::io("writing", self.path(rel), e))?;
        w.finish().map(|_| ())
    }

    fn create_exclusive(&self, rel: &str, data: &[u8]) -> Result<bool> {
        let path = self.path(rel);
        match create_private_file(&path, true) {
            Ok(mut f) => {
                f.write_all(data)
                    .and_then(|_| f.sync_all())
                    .map_err(|e| Error::io("writing", &path, e))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::io("creating", &path, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let base = self.path(prefix);
        let mut stack = vec![base.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("listing", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Error::io("listing", &dir, e))?;
                let path = entry.path();
                let meta = entry
                    .metadata()
                    .map_err(|e| Error::io("reading metadata of", &path, e))?;
                if meta.is_dir() {
                    stack.push(path);
                } else if let Ok(rel) = path.strip_prefix(&self.root) {
                    out.push((rel.to_string_lossy().into_owned(), meta.len()));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, rel: &str) -> Result<()> {
        let path = self.path(rel);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing", &path, e)),
        }
    }

    fn clean_incomplete(&self, prefix: &str) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for (name, _) in self.list(prefix)? {
            if name.ends_with(TMP_SUFFIX) {
                self.delete(&name)?;
                removed.push(name);
            }
        }
        Ok(removed)
    }
}

/// A file being written: `tmp` until [`ObjectWriter::finish`] renames it to `dest`.
struct FileWriter {
    file: Option<BufWriter<File>>,
    tmp: PathBuf,
    dest: PathBuf,
    written: u64,
}

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.as_mut().expect("not finished").write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("not finished").flush()
    }
}

impl ObjectWriter for FileWriter {
    fn finish(mut self: Box<Self>) -> Result<u64> {
        let file = self.file.take().expect("not finished");
        let (dest, written) = (self.dest.clone(), self.written);
        let failed = |e: io::Error| {
            if e.raw_os_error() == Some(libc::ENOSPC) {
                Error::DiskFull {
                    path: dest.clone(),
                    written,
                }
            } else {
                Error::io("writing", &dest, e)
            }
        };
        let file = file.into_inner().map_err(|e| failed(e.into_error()))?;
        file.sync_all().map_err(failed)?;
        drop(file);
        fs::rename(&self.tmp, &self.dest).map_err(|e| Error::io("renaming", &self.dest, e))?;
        sync_dir(self.dest.parent().unwrap_or(Path::new(".")))?;
        Ok(self.written)
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Abandoned (error or cancel): a partial file must never look like an object.
            let _ = fs::remove_file(&self.tmp);
        }
    }
}
