//! Backups in an S3-compatible bucket (AWS S3, Ceph RGW, SeaweedFS, Garage, MinIO), through
//! the `object_store` crate.
//!
//! Settings the AWS way: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION` (default `us-east-1`), `AWS_ENDPOINT_URL` or `--s3-endpoint` for self-hosted
//! stores (path-style addressing, plain `http://` allowed there), and, for what the environment
//! leaves out, the shared credentials and config files of `AWS_PROFILE` (default `default`).
//!
//! Objects larger than one part go up as multipart uploads, parts uploaded while the next one
//! fills, each with its SHA-256 in a checksum header that the store verifies; the final size is
//! confirmed with a HEAD. While an upload is open, a marker object `KEY.upload` names it, so
//! that an upload left open by a crash is found and aborted (see [`Backend::clean_incomplete`]):
//! nothing is left behind to cost money. Transient failures (timeouts, 5xx, throttling,
//! connection resets) are retried by object_store with backoff, and each retry is logged.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig,
};

mod writer;

use writer::{Handle, S3Writer};

use super::{Backend, ObjectWriter};
use crate::error::{Error, Result};

/// Suffix of the marker object of an open multipart upload.
pub const UPLOAD_SUFFIX: &str = ".upload";

pub struct S3Backend {
    store: Arc<AmazonS3>,
    bucket: String,
    /// Runs the store's futures: callers are the engine's blocking writer threads as well as
    /// async code, so requests run here and callers wait on a channel.
    runtime: Option<tokio::runtime::Runtime>,
    parts_in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Backend(s3://{})", self.bucket)
    }
}

impl Drop for S3Backend {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// What the environment and the shared files say, secrets kept out of `Debug`.
struct S3Settings {
    region: String,
    endpoint: Option<String>,
    access_key: Option<String>,
    secret_key: Option<String>,
    token: Option<String>,
}

impl S3Settings {
    fn from_env(endpoint_flag: Option<&str>) -> Result<S3Settings> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let home = env("HOME").unwrap_or_default();
        let credentials = read_ini(
            env("AWS_SHARED_CREDENTIALS_FILE").unwrap_or(format!("{home}/.aws/credentials")),
            &profile,
        )?;
        let config_section = if profile == "default" {
            "default".to_string()
        } else {
            format!("profile {profile}")
        };
        let config = read_ini(
            env("AWS_CONFIG_FILE").unwrap_or(format!("{home}/.aws/config")),
            &config_section,
        )?;
        let from_files = |k: &str| credentials.get(k).or_else(|| config.get(k)).cloned();
        let (access_key, secret_key, token) = match env("AWS_ACCESS_KEY_ID") {
            Some(id) => (
                Some(id),
                env("AWS_SECRET_ACCESS_KEY"),
                env("AWS_SESSION_TOKEN"),
            ),
            None => (
                from_files("aws_access_key_id"),
                from_files("aws_secret_access_key"),
                from_files("aws_session_token"),
            ),
        };
        Ok(S3Settings {
            region: env("AWS_REGION")
                .or_else(|| env("AWS_DEFAULT_REGION"))
                .or_else(|| from_files("region"))
                .unwrap_or_else(|| "us-east-1".into()),
            endpoint: endpoint_flag
                .map(str::to_string)
                .or_else(|| env("AWS_ENDPOINT_URL"))
                .or_else(|| from_files("endpoint_url")),
            access_key,
            secret_key,
            token,
        })
    }
}

/// The keys of `[section]` of an INI file (AWS's shared files); empty when there is no file.
fn read_ini(path: String, section: &str) -> Result<std::collections::HashMap<String, String>> {
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(Error::io("reading", PathBuf::from(path), e)),
    };
    let ini = ini::Ini::load_from_str(&text)
        .map_err(|e| Error::Refused(format!("{path}: not a valid AWS shared file: {e}")))?;
    Ok(ini
        .section(Some(section))
        .map(|s| {
            s.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default())
}

fn build(bucket: &str, s: &S3Settings, retry: RetryConfig) -> Result<AmazonS3> {
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(&s.region)
        .with_retry(retry)
        .with_conditional_put(S3ConditionalPut::ETagMatch)
        .with_checksum_algorithm(object_store::aws::Checksum::SHA256)
        .with_client_options(
            ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(10))
                .with_timeout(Duration::from_secs(300)),
        );
    if let Some(e) = &s.endpoint {
        b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
    }
    if let Some(k) = &s.access_key {
        b = b.with_access_key_id(k);
    }
    if let Some(k) = &s.secret_key {
        b = b.with_secret_access_key(k);
    }
    if let Some(t) = &s.token {
        b = b.with_token(t);
    }
    b.build().map_err(|e| Error::Storage {
        op: "configuring".into(),
        location: format!("s3://{bucket}"),
        detail: summarize(&e),
    })
}

impl S3Backend {
    /// Connects to `bucket` and proves it is reachable and usable with one listing, so that
    /// wrong credentials, a missing bucket or an unreachable endpoint fail at once, clearly.
    pub fn connect(bucket: &str, endpoint_flag: Option<&str>) -> Result<S3Backend> {
        let settings = S3Settings::from_env(endpoint_flag)?;
        // About two minutes of retries with growing pauses: enough to ride out a store that
        // restarts, short enough that a dead one ends the run.
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(500),
                max_backoff: Duration::from_secs(20),
                base: 3.0,
            },
            max_retries: 12,
            retry_timeout: Duration::from_secs(150),
        };
        let store = Arc::new(build(bucket, &settings, retry)?);
        let probe = build(
            bucket,
            &settings,
            // The first contact is not retried: what fails there (credentials, bucket,
            // endpoint) is a setting to fix, said at once.
            RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 0,
                retry_timeout: Duration::from_secs(5),
            },
        )?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dbbackup-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the S3 client for", format!("s3://{bucket}"), e))?;
        let backend = S3Backend {
            store,
            bucket: bucket.to_string(),
            runtime: Some(runtime),
            parts_in_flight: Arc::new(std::sync::atomic::AtomicUsize::new(writer::PARTS_IN_FLIGHT)),
        };
        let location = format!("s3://{bucket}");
        backend.run(async move {
            probe
                .list_with_delimiter(None)
                .await
                .map(|_| ())
                .map_err(|e| Error::Storage {
                    op: "listing".into(),
                    location,
                    detail: summarize(&e),
                })
        })?;
        Ok(backend)
    }

    /// Runs `fut` on the backend's runtime and waits for it, from any thread.
    fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let (tx, rx) = mpsc::sync_channel(1);
        self.runtime.as_ref().expect("running").spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().expect("S3 task ended without an answer")
    }

    fn err(&self, op: &str, key: &str, e: &object_store::Error) -> Error {
        Error::Storage {
            op: op.into(),
            location: format!("s3://{}/{key}", self.bucket),
            detail: summarize(e),
        }
    }
}

/// One line from an object_store error: the HTTP status and the store's error code and
/// message when the response carried them, else the error's own text. Never a secret: requests
/// are signed in headers, which errors do not repeat.
pub fn summarize(e: &object_store::Error) -> String {
    let text = e.to_string();
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{name}>"))? + start;
        Some(text[start..end].to_string())
    };
    let status = text.split("status code: ").nth(1).map(|s| {
        let end = s.find(':').unwrap_or(s.len());
        s[..end].trim().to_string()
    });
    match (tag("Code"), status) {
        (Some(code), status) => {
            let msg = tag("Message")
                .map(|m| format!(" ({m})"))
                .unwrap_or_default();
            match status {
                Some(s) => format!("{code}{msg}, HTTP {s}"),
                None => format!("{code}{msg}"),
            }
        }
        (None, _) => text
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("Generic S3 error: ")
            .to_string(),
    }
}

impl Backend for S3Backend {
    fn writer_buffer(&self, parts_in_flight: usize) -> u64 {
        // The part filling plus those uploading.
        ((parts_in_flight + 1) * writer::FIRST_PART) as u64
    }

    fn set_parts_in_flight(&self, n: usize) {
        self.parts_in_flight
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn uploads_in_parts(&self) -> bool {
        true
    }

    fn describe(&self, rel: &str) -> PathBuf {
        PathBuf::from(format!("s3://{}/{rel}", self.bucket))
    }

    fn local_path(&self, _rel: &str) -> Option<PathBuf> {
        None
    }

    fn create_dir(&self, _rel: &str) -> Result<()> {
        Ok(())
    }

    fn create(&self, rel: &str, size_hint: u64) -> Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(S3Writer::new(self.clone_handle(), rel, size_hint)))
    }

    fn open(&self, rel: &str) -> Result<Option<(Box<dyn Read + Send>, u64)>> {
        let store = self.store.clone();
        let path = ObjPath::from(rel);
        let got = self.run(async move { store.get(&path).await });
        let result = match got {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err("reading", rel, &e)),
        };
        let size = result.meta.size;
        // The body streams through a small channel: a reader never holds the object whole.
        let (tx, rx) = mpsc::sync_channel::<io::Result<Bytes>>(4);
        let location = format!("s3://{}/{rel}", self.bucket);
        self.runtime.as_ref().expect("running").spawn(async move {
            use futures_util::StreamExt;
            let mut stream = result.into_stream();
            while let Some(item) = stream.next().await {
                let item =
                    item.map_err(|e| io::Error::other(format!("{location}: {}", summarize(&e))));
                let stop = item.is_err();
                // A receiver that hung up (the reader was dropped) ends the download.
                if tx.send(item).is_err() || stop {
                    break;
                }
            }
        });
        Ok(Some((
            Box::new(ChannelReader {
                rx,
                current: Bytes::new(),
            }),
            size,
        )))
    }

    fn put_atomic(&self, rel: &str, data: &[u8]) -> Result<()> {
        let store = self.store.clone();
        let path = ObjPath::from(rel);
        let payload = PutPayload::from(Bytes::copy_from_slice(data));
        self.run(async move { store.put(&path, payload).await })
            .map(|_| ())
            .map_err(|e| self.err("writing", rel, &e))
    }

    fn create_exclusive(&self, rel: &str, data: &[u8]) -> Result<bool> {
        let store = self.store.clone();
        let path = ObjPath::from(rel);
        let payload = PutPayload::from(Bytes::copy_from_slice(data));
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self.run(async move { store.put_opts(&path, payload, opts).await }) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.err("creating", rel, &e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let store = self.store.clone();
        let path = (!prefix.is_empty()).then(|| ObjPath::from(prefix));
        let listed = self.run(async move {
            use futures_util::TryStreamExt;
            store
                .list(path.as_ref())
                .map_ok(|m| (m.location.to_string(), m.size))
                .try_collect::<Vec<_>>()
                .await
        });
        let mut all = listed.map_err(|e| self.err("listing", prefix, &e))?;
        all.sort();
        Ok(all)
    }

    fn delete(&self, rel: &str) -> Result<()> {
        let store = self.store.clone();
        let path = ObjPath::from(rel);
        match self.run(async move { store.delete(&path).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("removing", rel, &e)),
        }
    }

    fn clean_incomplete(&self, prefix: &str) -> Result<Vec<String>> {
        let mut aborted = Vec::new();
        for (marker, _) in self.list(prefix)? {
            let Some(key) = marker.strip_suffix(UPLOAD_SUFFIX) else {
                continue;
            };
            let id = match self.open(&marker)? {
                Some((mut r, _)) => {
                    let mut s = String::new();
                    r.read_to_string(&mut s)
                        .map_err(|e| Error::io("reading", self.describe(&marker), e))?;
                    s.trim().to_string()
                }
                None => continue,
            };
            let store = self.store.clone();
            let path = ObjPath::from(key);
            let upload = id.clone();
            match self.run(async move { store.abort_multipart(&path, &upload).await }) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err("aborting the upload of", key, &e)),
            }
            self.delete(&marker)?;
            aborted.push(key.to_string());
        }
        Ok(aborted)
    }
}

impl S3Backend {
    /// A second handle on the same client and runtime, for a writer that outlives the call.
    fn clone_handle(&self) -> Handle {
        Handle {
            store: self.store.clone(),
            bucket: self.bucket.clone(),
            runtime: self.runtime.as_ref().expect("running").handle().clone(),
            parts_in_flight: self.parts_in_flight.clone(),
        }
    }
}

/// Reads an object's body as it arrives.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(Ok(b)) => self.current = b,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_summed_up_with_the_stores_code_and_status() {
        let e = object_store::Error::Generic {
            store: "S3",
            source: "Error performing list request: Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?><Error><Code>InvalidAccessKeyId</Code><Message>The key is unknown.</Message></Error>".into(),
        };
        assert_eq!(
            summarize(&e),
            "InvalidAccessKeyId (The key is unknown.), HTTP 403 Forbidden"
        );
    }
}
