//! Shared helpers of the integration tests: the real `host` binary, the real
//! plugin components (built by `scripts/test.sh` into `$RTAP_TEST_PLUGINS`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn host_bin() -> &'static str {
    env!("CARGO_BIN_EXE_host")
}

pub fn gen_bin() -> &'static str {
    env!("CARGO_BIN_EXE_rtap-gen")
}

/// An `rtap-gen` command for `n` events from `seed` at `rate` events/s;
/// add the output options.
pub fn gen_command(n: u64, seed: u64, rate: u32) -> Command {
    let mut c = Command::new(gen_bin());
    c.args([
        "--events",
        &n.to_string(),
        "--seed",
        &seed.to_string(),
        "--rate",
        &rate.to_string(),
    ]);
    c
}

/// `n` simulated events (`rtap-gen`), one JSON line each.
pub fn gen_events(n: u64, seed: u64, rate: u32) -> Vec<String> {
    let out = gen_command(n, seed, rate).output().expect("run rtap-gen");
    assert!(out.status.success(), "rtap-gen failed: {}", out.status);
    String::from_utf8(out.stdout)
        .expect("rtap-gen writes UTF-8")
        .lines()
        .map(str::to_string)
        .collect()
}

/// The same events written to `path` (streamed, not held in memory).
pub fn write_events(path: &Path, n: u64, seed: u64, rate: u32) {
    let st = gen_command(n, seed, rate)
        .stdout(std::fs::File::create(path).expect("create the events file"))
        .status()
        .expect("run rtap-gen");
    assert!(st.success(), "rtap-gen failed: {st}");
}

/// The folder with every built plugin (shipped and test ones).
pub fn test_plugins() -> PathBuf {
    let dir = std::env::var_os("RTAP_TEST_PLUGINS").map(PathBuf::from).unwrap_or_else(|| {
        panic!("RTAP_TEST_PLUGINS is not set: run `scripts/test.sh`, or `scripts/build-plugins.sh --tests` and export the folder it prints")
    });
    assert!(
        dir.join("page-views.wasm").is_file(),
        "{} holds no built plugins",
        dir.display()
    );
    dir
}

/// A plugins folder with just these plugins.
pub fn plugins_dir(names: &[&str]) -> tempfile::TempDir {
    let src = test_plugins();
    let dir = tempfile::tempdir().expect("tempdir");
    for n in names {
        std::fs::copy(
            src.join(format!("{n}.wasm")),
            dir.path().join(format!("{n}.wasm")),
        )
        .unwrap_or_else(|e| panic!("copy plugin {n}: {e}"));
    }
    dir
}

pub const SHIPPED: [&str; 11] = [
    "page-views",
    "active-users",
    "conversion-rate",
    "session-duration",
    "latency-percentiles",
    "error-rate",
    "high-latency",
    "error-rate-spike",
    "low-throughput",
    "cart-abandonment",
    "bot-burst",
];

/// Run the host on a file to the end; panics with its stderr if it fails.
pub fn run_file(plugins: &Path, input: &Path, data: &Path, extra: &[&str]) -> Output {
    let out = Command::new(host_bin())
        .arg("--plugins")
        .arg(plugins)
        .arg(format!("--source=file:{}", input.display()))
        .arg(format!("--sink=jsonl:{}", data.join("out.jsonl").display()))
        .arg("--no-server")
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .output()
        .expect("run host");
    assert!(
        out.status.success(),
        "host failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

pub fn read_json(p: &Path) -> Vec<serde_json::Value> {
    read_lines(p)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect()
}

/// One HTTP/1.1 request over a plain socket: (status, body).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    // A server may answer (413) before reading a large body.
    let _ = s.write_all(body);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        body.to_string()
    };
    Some((code, body))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait until `GET /health` answers.
pub fn wait_ready(port: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while http(port, "GET", "/health", &[], b"").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the host did not answer /health"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A host process, killed when dropped.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Ask a process to stop (SIGTERM), as an operator or orchestrator would.
pub fn sigterm(pid: u32) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(ok.success(), "kill -TERM {pid} failed");
}

/// A host whose stderr lines are collected, for the kill tests.
pub struct Watched {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    pub log: Vec<String>,
}

impl Watched {
    pub fn spawn(mut cmd: Command) -> Watched {
        use std::io::BufRead;
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn host");
        let err = child.stderr.take().expect("piped stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Watched {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Wait for the `n`-th stderr line (from now) that contains `pat`;
    /// false when the process ended or the time ran out first.
    pub fn wait_for(&mut self, pat: &str, n: usize, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut seen = 0;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self
                .lines
                .recv_timeout(left.min(std::time::Duration::from_millis(200)))
            {
                Ok(l) => {
                    let hit = l.contains(pat);
                    self.log.push(l);
                    if hit {
                        seen += 1;
                        if seen >= n {
                            return true;
                        }
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if left.is_zero() {
                        return false;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// SIGKILL (no chance to clean up), then collect the rest of stderr.
    pub fn sigkill(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log.extend(self.lines.try_iter());
        std::mem::take(&mut self.log)
    }

    /// Wait for the process to end by itself; its status and stderr.
    pub fn finish(
        mut self,
        timeout: std::time::Duration,
    ) -> (std::process::ExitStatus, Vec<String>) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            self.log.extend(self.lines.try_iter());
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                std::thread::sleep(std::time::Duration::from_millis(50));
                self.log.extend(self.lines.try_iter());
                return (st, std::mem::take(&mut self.log));
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the host did not finish in {timeout:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small deterministic generator for kill schedules (xorshift64*); the
/// seed comes from `RTAP_KILL_SEED` or the clock and is printed, so a failing
/// schedule can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn from_env() -> Rng {
        let seed = std::env::var("RTAP_KILL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("kill schedule seed: RTAP_KILL_SEED={seed}");
        Rng(seed | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}
