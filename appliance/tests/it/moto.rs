//! moto's standalone server as the S3 stand-in of the tests (no real S3 can be reached here),
//! installed by `scripts/s3-test-tools` into `$HOP_TEST_TOOLS` (default
//! `~/.cache/hop-test-tools`): one server per test binary, started on first use on a free
//! loopback port under a watchdog shell that stops it when the test process exits (statics are
//! never dropped); a fresh bucket per test. Without moto, [`moto`] prints SKIP and is `None`.
//! (hop-storage's integration tests keep their own copy: a test binary compiles only its own
//! crate's files.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub struct Moto {
    pub port: u16,
    _watchdog: std::process::Child,
}

static MOTO: OnceLock<Option<Moto>> = OnceLock::new();
static NEXT_BUCKET: AtomicUsize = AtomicUsize::new(0);

/// The server, started on first use.
pub fn moto() -> Option<&'static Moto> {
    MOTO.get_or_init(Moto::start).as_ref()
}

fn tools_dir() -> PathBuf {
    std::env::var_os("HOP_TEST_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
                .join(".cache/hop-test-tools")
        })
}

impl Moto {
    fn start() -> Option<Self> {
        let server = tools_dir().join("moto-venv/bin/moto_server");
        if !server.exists() {
            eprintln!(
                "SKIP: no S3 stand-in at {} (run scripts/s3-test-tools)",
                server.display()
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = format!(
            "'{server}' -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; \
             while [ -d /proc/{parent} ] && kill -0 $m 2>/dev/null; do sleep 0.5; done; \
             kill -TERM $m 2>/dev/null; wait $m",
            server = server.display(),
            parent = std::process::id(),
        );
        let watchdog = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let moto = Self {
            port,
            _watchdog: watchdog,
        };
        for _ in 0..200 {
            if moto.request("GET", "/moto-api/").is_some() {
                return Some(moto);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("moto_server did not answer on port {port} within 10 s");
    }

    /// One plain HTTP/1.1 request (moto takes unsigned ones for buckets); the whole answer.
    pub fn request(&self, method: &str, path: &str) -> Option<String> {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        write!(
            conn,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .ok()?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer).ok()?;
        Some(answer)
    }

    /// The keys in `bucket`, as its listing (a plain request) names them.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let answer = self
            .request("GET", &format!("/{bucket}?list-type=2"))
            .unwrap();
        answer
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_owned()))
            .collect()
    }

    /// A new, empty bucket.
    pub fn bucket(&self) -> String {
        let name = format!("hop-rec-{}", NEXT_BUCKET.fetch_add(1, Ordering::Relaxed));
        let answer = self.request("PUT", &format!("/{name}")).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "create bucket {name}: {answer}"
        );
        name
    }

    /// The `s3://` URI of `bucket` (under the prefix `cluster-a/recordings`) on this server.
    pub fn uri(&self, bucket: &str) -> String {
        format!(
            "s3://{bucket}/cluster-a/recordings?region=us-east-1&endpoint=http://127.0.0.1:{}",
            self.port
        )
    }
}
