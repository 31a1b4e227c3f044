//! A time-series database on loopback: victoria-metrics (Debian package
//! victoria-metrics, installed by `scripts/test.sh`), which speaks the
//! InfluxDB v2 write API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{free_port, http, sigterm};

/// A victoria-metrics server on loopback, restartable on the same storage.
pub struct Vm {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Vm {
    /// Start it on a free port, its storage in `dir`.
    pub fn start(dir: &Path) -> Vm {
        let mut vm = Vm {
            port: free_port(),
            dir: dir.to_path_buf(),
            child: None,
        };
        vm.up();
        vm
    }

    /// (Re)start it on its port and storage; returns once `/health` says 200.
    pub fn up(&mut self) {
        let child = Command::new("victoria-metrics")
            .arg(format!("-storageDataPath={}", self.dir.display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .args(["-retentionPeriod=100y", "-search.latencyOffset=0s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("victoria-metrics (Debian package victoria-metrics) must be installed: scripts/test.sh installs it");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while http(self.port, "GET", "/health", &[], b"").is_none_or(|(c, _)| c != 200) {
            assert!(Instant::now() < deadline, "victoria-metrics did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop the database the way an operator would (SIGTERM: it persists
    /// what it acknowledged); what the host does meanwhile is the test.
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            sigterm(c.id());
            let deadline = Instant::now() + Duration::from_secs(20);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Its base URL, for `--influx-url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every sample: (metric name with labels, timestamp) → values seen.
    pub fn export(&self) -> BTreeMap<(String, i64), Vec<f64>> {
        http(self.port, "GET", "/internal/force_flush", &[], b"").unwrap();
        let (code, body) = http(
            self.port,
            "GET",
            "/api/v1/export?match%5B%5D=%7B__name__%3D~%22.%2B%22%7D",
            &[],
            b"",
        )
        .unwrap();
        assert_eq!(code, 200, "{body}");
        let mut out: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
        for line in body.lines().filter(|l| !l.is_empty()) {
            let v: Value = serde_json::from_str(line).unwrap();
            let m = v["metric"].as_object().unwrap();
            let name = format!(
                "{}|{}|{}",
                m["__name__"].as_str().unwrap(),
                m.get("plugin").and_then(Value::as_str).unwrap_or(""),
                m.get("key").and_then(Value::as_str).unwrap_or("")
            );
            for (t, x) in v["timestamps"]
                .as_array()
                .unwrap()
                .iter()
                .zip(v["values"].as_array().unwrap())
            {
                out.entry((name.clone(), t.as_i64().unwrap()))
                    .or_default()
                    .push(x.as_f64().unwrap());
            }
        }
        out
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.down();
    }
}
