//! The real `host` binary: [`HostCmd`] builds the command line of every
//! host a test starts; [`Running`] and [`Watched`] are started hosts.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The binary: tests start it through [`HostCmd`] only.
fn host_bin() -> &'static str {
    env!("CARGO_BIN_EXE_host")
}

/// A `host` command line, built option by option in the order the methods
/// are called. Every test starts the host through one of these, so an
/// option is spelled in one place.
///
/// ```ignore
/// let out = HostCmd::file_job(plugins.path(), &input, data.path())
///     .no_watch()
///     .run();
/// let host = HostCmd::new(plugins.path())
///     .jsonl_sink("/dev/null")
///     .listen(port)
///     .data_dir(data.path())
///     .spawn();
/// ```
pub struct HostCmd(Command);

impl HostCmd {
    /// `host --plugins PLUGINS`: nothing else.
    pub fn new(plugins: &Path) -> HostCmd {
        let mut c = Command::new(host_bin());
        c.arg("--plugins").arg(plugins);
        HostCmd(c)
    }

    /// A job over a file to its end, without the HTTP server: `--source
    /// file:INPUT --sink jsonl:DATA/out.jsonl --no-server --data-dir DATA`.
    pub fn file_job(plugins: &Path, input: &Path, data: &Path) -> HostCmd {
        HostCmd::new(plugins)
            .file_source(input)
            .jsonl_sink(data.join("out.jsonl"))
            .no_server()
            .data_dir(data)
    }

    fn opt(mut self, name: &str, value: impl AsRef<OsStr>) -> HostCmd {
        self.0.arg(name).arg(value);
        self
    }

    fn flag(mut self, name: &str) -> HostCmd {
        self.0.arg(name);
        self
    }

    /// `--source file:PATH`; `-` reads stdin.
    pub fn file_source(self, path: impl AsRef<Path>) -> HostCmd {
        let mut spec = OsString::from("file:");
        spec.push(path.as_ref());
        self.opt("--source", spec)
    }

    /// `--sink jsonl:PATH`; `-` writes stdout, `/dev/null` nothing.
    pub fn jsonl_sink(self, path: impl AsRef<Path>) -> HostCmd {
        let mut spec = OsString::from("jsonl:");
        spec.push(path.as_ref());
        self.opt("--sink", spec)
    }

    /// `--data-dir DIR`: state, checkpoints, dead letters, late events.
    pub fn data_dir(self, dir: impl AsRef<Path>) -> HostCmd {
        self.opt("--data-dir", dir.as_ref())
    }

    /// `--no-server`: no HTTP API.
    pub fn no_server(self) -> HostCmd {
        self.flag("--no-server")
    }

    /// `--listen 127.0.0.1:PORT`: the HTTP API on loopback.
    pub fn listen(self, port: u16) -> HostCmd {
        self.opt("--listen", format!("127.0.0.1:{port}"))
    }

    /// `--no-watch`: the plugins folder is not watched.
    pub fn no_watch(self) -> HostCmd {
        self.flag("--no-watch")
    }

    /// `--watch-interval DURATION` (e.g. `100ms`).
    pub fn watch_interval(self, every: &str) -> HostCmd {
        self.opt("--watch-interval", every)
    }

    /// `--checkpoint-interval DURATION` (e.g. `1s`, `100ms`).
    pub fn checkpoint_interval(self, every: &str) -> HostCmd {
        self.opt("--checkpoint-interval", every)
    }

    /// `--out-of-orderness DURATION` of the watermark.
    pub fn out_of_orderness(self, bound: &str) -> HostCmd {
        self.opt("--out-of-orderness", bound)
    }

    /// `--idle-timeout DURATION` of a source partition.
    pub fn idle_timeout(self, after: &str) -> HostCmd {
        self.opt("--idle-timeout", after)
    }

    /// Simulator source: `--rate EVENTS_PER_S`.
    pub fn rate(self, per_second: u32) -> HostCmd {
        self.opt("--rate", per_second.to_string())
    }

    /// Simulator source: `--unpaced`, as fast as the host takes events.
    pub fn unpaced(self) -> HostCmd {
        self.flag("--unpaced")
    }

    /// Simulator source: `--sim-start-ms MS`, the first event's time.
    pub fn sim_start_ms(self, ms: i64) -> HostCmd {
        self.opt("--sim-start-ms", ms.to_string())
    }

    /// `--influx-url URL`: metrics to an InfluxDB v2 write API too.
    pub fn influx_url(self, url: &str) -> HostCmd {
        self.opt("--influx-url", url)
    }

    /// `--kafka-brokers ADDR`: events from Kafka, outputs to it.
    pub fn kafka_brokers(self, addr: &str) -> HostCmd {
        self.opt("--kafka-brokers", addr)
    }

    /// `--kafka-group GROUP`.
    pub fn kafka_group(self, group: &str) -> HostCmd {
        self.opt("--kafka-group", group)
    }

    /// `--kafka-metrics-topic TOPIC`.
    pub fn kafka_metrics_topic(self, topic: &str) -> HostCmd {
        self.opt("--kafka-metrics-topic", topic)
    }

    /// `--kafka-alerts-topic TOPIC`.
    pub fn kafka_alerts_topic(self, topic: &str) -> HostCmd {
        self.opt("--kafka-alerts-topic", topic)
    }

    /// `--kafka-marker-topic TOPIC`.
    pub fn kafka_marker_topic(self, topic: &str) -> HostCmd {
        self.opt("--kafka-marker-topic", topic)
    }

    /// Any other options, as given.
    pub fn args<I, S>(mut self, extra: I) -> HostCmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.0.args(extra);
        self
    }

    /// An environment variable of the host process.
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> HostCmd {
        self.0.env(key, value);
        self
    }

    /// `RTAP_ADMIN_TOKEN`: the bearer token of the mutating plugin API.
    pub fn admin_token(self, token: &str) -> HostCmd {
        self.env("RTAP_ADMIN_TOKEN", token)
    }

    /// `RTAP_FAULT_COMMIT_PAUSE_MS`, the kill tests' fault injection: each
    /// commit announces its phases on stderr (`rtap-fault: …`) and pauses
    /// this long in them.
    pub fn fault_commit_pause_ms(self, ms: u64) -> HostCmd {
        self.env("RTAP_FAULT_COMMIT_PAUSE_MS", ms.to_string())
    }

    /// The command, for what the helpers below do not cover (stdio set up
    /// another way).
    pub fn command(self) -> Command {
        self.0
    }

    /// Run to the end and collect the output; no check.
    pub fn output(mut self) -> Output {
        self.0.output().expect("run host")
    }

    /// Run to the end; panics with its stderr if it fails.
    pub fn run(self) -> Output {
        let out = self.output();
        assert!(
            out.status.success(),
            "host failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Start it with stderr discarded; killed when dropped.
    pub fn spawn(mut self) -> Running {
        Running(self.0.stderr(Stdio::null()).spawn().expect("spawn host"))
    }

    /// Start it reading events from a pipe the test writes (`--source
    /// file:-`; [`feed_lines`]), stderr discarded; killed when dropped.
    pub fn spawn_fed(self) -> (Running, std::process::ChildStdin) {
        let mut child = self
            .file_source("-")
            .0
            .stdin(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn host");
        let stdin = child.stdin.take().expect("the host's stdin");
        (Running(child), stdin)
    }

    /// Start it with its stderr lines collected (the kill tests).
    pub fn watched(self) -> Watched {
        Watched::spawn(self.0)
    }
}

/// Run the host on a file to the end ([`HostCmd::file_job`] with `extra`
/// options); panics with its stderr if it fails.
pub fn run_file(plugins: &Path, input: &Path, data: &Path, extra: &[&str]) -> Output {
    HostCmd::file_job(plugins, input, data).args(extra).run()
}

/// Write `lines` to a host started with [`HostCmd::spawn_fed`], one event
/// per line, and flush.
pub fn feed_lines(stdin: &mut impl std::io::Write, lines: &[String]) {
    for l in lines {
        stdin.write_all(l.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
    }
    stdin.flush().unwrap();
}

/// Wait until `GET /health` answers.
pub fn wait_ready(port: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while super::http(port, "GET", "/health", &[], b"").is_none() {
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
    /// Whether the process still runs. Once it has ended, its log is made
    /// whole first: the lines it wrote last (the error it stopped with) are
    /// read to the end of its stderr, and its exit status is added, so a
    /// failure that prints `log` shows why. (A CI run once showed only a
    /// librdkafka line that a producer dropped at exit writes.)
    pub fn alive(&mut self) -> bool {
        let Some(status) = self.child.try_wait().expect("try_wait") else {
            return true;
        };
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.log.push(l),
                // The reader reached the end of stderr, or a child of the
                // host still holds it open.
                Err(_) => break,
            }
        }
        self.log.push(format!("[the host exited: {status}]"));
        false
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

/// The number after `key=` in a host's log line (its colour codes, if
/// any, taken out first): `log_number(line, "bytes")`.
pub fn log_number(line: &str, key: &str) -> Option<u64> {
    let mut plain = String::new();
    let mut escape = false;
    for c in line.chars() {
        match (escape, c) {
            (false, '\u{1b}') => escape = true,
            (true, 'm') => escape = false,
            (false, c) => plain.push(c),
            _ => {}
        }
    }
    let digits: String = plain
        .split(&format!("{key}="))
        .nth(1)?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// User + system CPU seconds of process `pid` (`self` for this one).
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}
