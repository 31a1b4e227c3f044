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
