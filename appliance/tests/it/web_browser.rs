//! The headless Chromium the web UI's end-to-end tests drive: Debian's package, through a
//! playwright-core script of `web/tests/` (one per test module: `driver.mjs`, `terminal.mjs`,
//! `recordings.mjs`, `admin.mjs`) that reads one JSON command per line and answers one JSON
//! line each. Screenshots are kept under `$CARGO_TARGET_DIR/tmp/web-artifacts/`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::clock;

/// Where the browser drivers and their `node_modules` (from `npm ci` in `scripts/test`) live.
pub(crate) fn driver_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../web/tests"))
}

/// Screenshots of test `test` are kept here after it (its temp dir is removed).
pub(crate) fn artifacts(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("web-artifacts")
        .join(test);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Chromium through one driver script.
pub(crate) struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Browser {
    /// Chromium driven by `script` against `base`, screenshots to `artifacts`; `None` (and a
    /// SKIP line) where Chromium or playwright-core is not installed.
    pub(crate) fn start(script: &str, base: &str, artifacts: &Path) -> Option<Self> {
        let chromium = std::env::var("HOP_CHROMIUM").unwrap_or("/usr/bin/chromium".into());
        if !Path::new(&chromium).exists() {
            eprintln!("SKIP: Chromium is not installed ({chromium}; scripts/test installs it)");
            return None;
        }
        if !driver_dir().join("node_modules/playwright-core").exists() {
            eprintln!(
                "SKIP: playwright-core is not installed (scripts/test runs npm ci in web/tests)"
            );
            return None;
        }
        let mut child = Command::new("node")
            .arg(script)
            .arg(base)
            .arg(artifacts)
            .current_dir(driver_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut b = Self {
            child,
            stdin,
            stdout,
        };
        let ready = b.read();
        assert_eq!(ready["ready"], true, "{ready}");
        Some(b)
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("driver said {line:?}: {e}"))
    }

    /// Sends a command; panics when the driver reports an error.
    pub(crate) fn send(&mut self, cmd: Value) -> Value {
        let answer = self.try_send(cmd.clone());
        assert_eq!(answer["ok"], true, "{cmd} failed: {answer}");
        answer
    }

    /// Sends a command and returns the driver's answer, an error (`ok: false`) included.
    pub(crate) fn try_send(&mut self, cmd: Value) -> Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.read()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"do": "quit"}));
        let deadline = clock::monotonic_now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() {
            if clock::monotonic_now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.wait();
    }
}
