//! Streaming writes to S3: one PUT when an object fits in a part, else a multipart upload with
//! a bounded number of parts in flight and its size confirmed when it completes.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc;
use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::AmazonS3;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStoreExt, PutPayload};

use super::{summarize, UPLOAD_SUFFIX};
use crate::error::{Error, Result};
use crate::storage::ObjectWriter;

/// Smallest part S3 takes (but for the last one).
const MIN_PART: usize = 5 * 1024 * 1024;
/// S3's limit of parts per upload; part sizes leave room below it.
const MAX_PARTS: u64 = 10_000;
/// Parts after which the part size doubles, so that an object of unforeseen size still fits
/// the part limit (5 MiB parts up to 5 GB, then 10 MiB, ...) while small ones use little
/// memory.
const PARTS_PER_SIZE: usize = 1_000;
/// Parts of one object uploading while the next one fills.
pub(super) const PARTS_IN_FLIGHT: usize = 2;
/// The size of the first parts of an object: S3's minimum.
pub(super) const FIRST_PART: usize = MIN_PART;

/// What a writer needs of the backend.
#[derive(Clone)]
pub(super) struct Handle {
    pub(super) store: Arc<AmazonS3>,
    pub(super) bucket: String,
    pub(super) runtime: tokio::runtime::Handle,
    /// Parts of one object uploading at once (set from the memory budget).
    pub(super) parts_in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

impl Handle {
    fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let (tx, rx) = mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().expect("S3 task ended without an answer")
    }

    fn err(&self, op: &str, key: &str, e: &object_store::Error) -> io::Error {
        io::Error::other(format!("{op} s3://{}/{key}: {}", self.bucket, summarize(e)))
    }
}

/// An object being uploaded: one PUT when it fits in a part, else a multipart upload.
pub(super) struct S3Writer {
    backend: Handle,
    key: String,
    part_size: usize,
    buffer: Vec<u8>,
    /// The open multipart upload's id.
    upload: Option<String>,
    in_flight: VecDeque<tokio::task::JoinHandle<object_store::Result<PartId>>>,
    parts: Vec<PartId>,
    written: u64,
    finished: bool,
}

impl S3Writer {
    /// A writer of `key`; parts grow from a size that fits `size_hint` in the part limit.
    pub(super) fn new(backend: Handle, key: &str, size_hint: u64) -> Self {
        let part_size = (size_hint.div_ceil(MAX_PARTS - 100) as usize).max(MIN_PART);
        S3Writer {
            backend,
            key: key.to_string(),
            part_size,
            buffer: Vec::new(),
            upload: None,
            in_flight: VecDeque::new(),
            parts: Vec::new(),
            written: 0,
            finished: false,
        }
    }

    /// Sends the full buffer as the next part, first opening the upload (and its marker).
    fn send_part(&mut self) -> io::Result<()> {
        let h = self.backend.clone();
        let path = ObjPath::from(self.key.as_str());
        if self.upload.is_none() {
            let (store, p) = (h.store.clone(), path.clone());
            let id = h
                .run(async move { store.create_multipart(&p).await })
                .map_err(|e| h.err("starting the upload of", &self.key, &e))?;
            let (store, marker) = (
                h.store.clone(),
                ObjPath::from(format!("{}{UPLOAD_SUFFIX}", self.key)),
            );
            let payload = PutPayload::from(Bytes::from(id.clone()));
            h.run(async move { store.put(&marker, payload).await })
                .map_err(|e| h.err("recording the upload of", &self.key, &e))?;
            self.upload = Some(id);
        }
        // Parts uploading while the next one fills; 0: the part is sent before the writer
        // takes more bytes (one part's memory per writer, for tight memory limits).
        let limit = self
            .backend
            .parts_in_flight
            .load(std::sync::atomic::Ordering::Relaxed);
        while self.in_flight.len() >= limit.max(1) {
            self.wait_oldest()?;
        }
        let data = Bytes::from(std::mem::take(&mut self.buffer));
        let index = self.parts.len() + self.in_flight.len();
        let (store, id) = (h.store.clone(), self.upload.clone().expect("open"));
        self.in_flight.push_back(h.runtime.spawn(async move {
            store
                .put_part(&path, &id, index, PutPayload::from(data))
                .await
        }));
        if limit == 0 {
            self.wait_oldest()?;
        }
        Ok(())
    }

    fn wait_oldest(&mut self) -> io::Result<()> {
        let Some(task) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let h = self.backend.clone();
        let part = h
            .run(task)
            .map_err(|e| io::Error::other(format!("upload task failed: {e}")))?
            .map_err(|e| h.err("uploading a part of", &self.key, &e))?;
        self.parts.push(part);
        Ok(())
    }

    fn abort(&mut self) {
        for t in self.in_flight.drain(..) {
            t.abort();
        }
        if let Some(id) = self.upload.take() {
            let h = self.backend.clone();
            let key = self.key.clone();
            let store = h.store.clone();
            // Best effort; a marker left behind lets the next resume abort it.
            let _ = h.run(async move {
                let path = ObjPath::from(key.as_str());
                store.abort_multipart(&path, &id).await?;
                store
                    .delete(&ObjPath::from(format!("{key}{UPLOAD_SUFFIX}")))
                    .await
            });
        }
    }
}

impl Write for S3Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let sent = self.parts.len() + self.in_flight.len();
        let part_size = self.part_size << (sent / PARTS_PER_SIZE).min(10);
        let room = part_size.saturating_sub(self.buffer.len()).max(1);
        let n = room.min(buf.len());
        if self.buffer.capacity() == 0 {
            self.buffer.reserve_exact(self.part_size.min(MIN_PART));
        }
        self.buffer.extend_from_slice(&buf[..n]);
        self.written += n as u64;
        if self.buffer.len() >= part_size {
            self.send_part()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for S3Writer {
    fn finish(mut self: Box<Self>) -> Result<u64> {
        let describe = |w: &S3Writer| format!("s3://{}/{}", w.backend.bucket, w.key);
        let h = self.backend.clone();
        let path = ObjPath::from(self.key.as_str());
        let result: io::Result<()> = (|| {
            if self.upload.is_none() {
                let (store, p) = (h.store.clone(), path.clone());
                let payload = PutPayload::from(Bytes::from(std::mem::take(&mut self.buffer)));
                h.run(async move { store.put(&p, payload).await })
                    .map_err(|e| h.err("writing", &self.key, &e))?;
                return Ok(());
            }
            if !self.buffer.is_empty() {
                self.send_part()?;
            }
            while !self.in_flight.is_empty() {
                self.wait_oldest()?;
            }
            let (store, p) = (h.store.clone(), path.clone());
            let id = self.upload.clone().expect("open");
            let parts = std::mem::take(&mut self.parts);
            h.run(async move { store.complete_multipart(&p, &id, parts).await })
                .map_err(|e| h.err("completing the upload of", &self.key, &e))?;
            self.upload = None;
            let (store, marker) = (
                h.store.clone(),
                ObjPath::from(format!("{}{UPLOAD_SUFFIX}", self.key)),
            );
            h.run(async move { store.delete(&marker).await })
                .map_err(|e| h.err("removing the upload marker of", &self.key, &e))?;
            Ok(())
        })();
        if let Err(e) = result {
            self.abort();
            self.finished = true;
            return Err(Error::io("uploading", describe(&self), e));
        }
        self.finished = true;
        // The store's word on the size, not ours.
        let (store, p) = (h.store.clone(), path.clone());
        let meta = h.run(async move { store.head(&p).await }).map_err(|e| {
            Error::io(
                "checking",
                describe(&self),
                h.err("checking", &self.key, &e),
            )
        })?;
        if meta.size != self.written {
            return Err(Error::corrupt(
                describe(&self),
                format!(
                    "the store holds {} bytes after the upload, {} were sent",
                    meta.size, self.written
                ),
            ));
        }
        Ok(self.written)
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if !self.finished {
            // Abandoned (error or cancel): an open upload must not stay behind.
            self.abort();
        }
    }
}
