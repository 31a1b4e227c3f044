//! Plugin logs: the contract's `log` import and the components' stdout and
//! stderr, line by line.
//!
//! A line is written on the thread that calls the plugin (the processing
//! thread, mostly), so writing must never wait and never fail: each plugin
//! has a token bucket ([`LogLimits`]), a line past it is dropped and
//! counted, and an accepted one goes into a bounded channel without waiting
//! (dropped and counted when it is full). The publisher thread
//! ([`Logs::spawn_publisher`]) numbers the lines, keeps the latest
//! [`KEPT_LINES`] of each plugin for `GET /api/plugins/NAME/logs`, writes
//! them to the host's log and hands them to whoever shows them (the `/ws`
//! hub, or `rtap run`'s stderr).

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use serde::Serialize;

/// Lines kept per plugin for the API.
pub const KEPT_LINES: usize = 1000;
/// Longest line kept; longer ones are cut (on a character boundary).
pub const MAX_LINE: usize = 1024;
/// Lines waiting for the publisher thread, all plugins together.
const QUEUE: usize = 8192;
/// The end of a plugin's stderr kept per instance, for the message of a
/// trap (a panic's report).
const STDERR_TAIL: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// The `log` import (`info!` …).
    Log,
    Stdout,
    Stderr,
}

/// One plugin log line.
#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    /// Increasing over the host's run, all plugins together (0 until the
    /// publisher numbers it).
    pub seq: u64,
    pub plugin: Arc<str>,
    pub level: Level,
    pub stream: Stream,
    pub message: String,
    /// Wall-clock ms.
    pub time: i64,
}

/// How many lines a plugin may write.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Sustained lines per second, per plugin.
    pub per_second: f64,
    /// Lines a plugin may write at once before the rate applies.
    pub burst: f64,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            per_second: 100.0,
            burst: 500.0,
        }
    }
}

/// One plugin's log: its rate limit, its counts, its latest lines.
pub struct PluginLog {
    name: Arc<str>,
    limits: LogLimits,
    bucket: Mutex<(f64, Instant)>,
    tx: SyncSender<LogLine>,
    /// Lines accepted (past the rate limit and into the queue).
    written: AtomicU64,
    /// Lines dropped: over the rate, or the queue full.
    dropped: AtomicU64,
    kept: Mutex<VecDeque<LogLine>>,
}

impl PluginLog {
    /// Write a line; never waits, never fails (a dropped line is counted).
    pub fn write(&self, level: Level, stream: Stream, message: &str) {
        if !self.take_token() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let line = LogLine {
            seq: 0,
            plugin: self.name.clone(),
            level,
            stream,
            message: cut(message.trim_end(), MAX_LINE),
            time: crate::clock::now_ms(),
        };
        match self.tx.try_send(line) {
            Ok(()) => {
                self.written.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn take_token(&self) -> bool {
        let Ok(mut b) = self.bucket.lock() else {
            return false;
        };
        let now = Instant::now();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * self.limits.per_second)
            .min(self.limits.burst);
        b.1 = now;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            true
        } else {
            false
        }
    }

    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Kept lines with `seq > after`, at most `limit`, oldest first.
    pub fn lines(&self, after: u64, limit: usize) -> Vec<LogLine> {
        let kept = self.kept.lock().expect("log lock");
        kept.iter()
            .filter(|l| l.seq > after)
            .take(limit)
            .cloned()
            .collect()
    }

    /// The latest kept line.
    pub fn last(&self) -> Option<LogLine> {
        self.kept.lock().expect("log lock").back().cloned()
    }
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Every plugin's log.
pub struct Logs {
    limits: LogLimits,
    tx: SyncSender<LogLine>,
    rx: Mutex<Option<Receiver<LogLine>>>,
    plugins: Mutex<HashMap<String, Arc<PluginLog>>>,
}

impl Logs {
    pub fn new(limits: LogLimits) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        Logs {
            limits,
            tx,
            rx: Mutex::new(Some(rx)),
            plugins: Mutex::new(HashMap::new()),
        }
    }

    /// The log of plugin `name` (made on first use; kept across versions).
    pub fn plugin(&self, name: &str) -> Arc<PluginLog> {
        let mut plugins = self.plugins.lock().expect("logs lock");
        plugins
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(PluginLog {
                    name: Arc::from(name),
                    limits: self.limits,
                    bucket: Mutex::new((self.limits.burst, Instant::now())),
                    tx: self.tx.clone(),
                    written: AtomicU64::new(0),
                    dropped: AtomicU64::new(0),
                    kept: Mutex::new(VecDeque::new()),
                })
            })
            .clone()
    }

    /// The log of `name` if it was ever used.
    pub fn get(&self, name: &str) -> Option<Arc<PluginLog>> {
        self.plugins.lock().expect("logs lock").get(name).cloned()
    }

    /// Start the thread that numbers, keeps and shows the lines: each goes
    /// to the host's log and to `show`. Once per `Logs`; later calls do
    /// nothing.
    pub fn spawn_publisher(self: &Arc<Self>, show: impl Fn(&LogLine) + Send + 'static) {
        let Some(rx) = self.rx.lock().expect("logs lock").take() else {
            return;
        };
        let logs = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("plugin-logs".into())
            .spawn(move || {
                let mut seq = 0u64;
                for mut line in rx {
                    let Some(logs) = logs.upgrade() else { return };
                    seq += 1;
                    line.seq = seq;
                    trace(&line);
                    let log = logs.plugin(&line.plugin);
                    {
                        let mut kept = log.kept.lock().expect("log lock");
                        if kept.len() == KEPT_LINES {
                            kept.pop_front();
                        }
                        kept.push_back(line.clone());
                    }
                    show(&line);
                }
            })
            .expect("spawn plugin-logs thread");
    }
}

/// The line in the host's own log, at its level.
fn trace(l: &LogLine) {
    let (plugin, stream, msg) = (&*l.plugin, l.stream, &l.message);
    match l.level {
        Level::Trace => tracing::trace!(target: "plugin", plugin, ?stream, "{msg}"),
        Level::Debug => tracing::debug!(target: "plugin", plugin, ?stream, "{msg}"),
        Level::Info => tracing::info!(target: "plugin", plugin, ?stream, "{msg}"),
        Level::Warn => tracing::warn!(target: "plugin", plugin, ?stream, "{msg}"),
        Level::Error => tracing::error!(target: "plugin", plugin, ?stream, "{msg}"),
    }
}

/// A component's stdout or stderr: complete lines become log lines; the
/// end of stderr is kept for the message of a trap. Accepts every write
/// (a guest whose write fails panics: `eprintln!` does).
#[derive(Clone)]
pub struct LogPipe {
    log: Option<Arc<PluginLog>>,
    stream: Stream,
    inner: Arc<Mutex<PipeState>>,
}

#[derive(Default)]
struct PipeState {
    partial: Vec<u8>,
    tail: VecDeque<u8>,
}

impl LogPipe {
    pub fn new(log: Option<Arc<PluginLog>>, stream: Stream) -> Self {
        LogPipe {
            log,
            stream,
            inner: Arc::new(Mutex::new(PipeState::default())),
        }
    }

    /// The last bytes written (stderr: a panic's report), as text.
    pub fn tail(&self) -> String {
        let st = self.inner.lock().expect("pipe lock");
        let (a, b) = st.tail.as_slices();
        let mut v = a.to_vec();
        v.extend_from_slice(b);
        String::from_utf8_lossy(&v).into_owned()
    }

    fn accept(&self, bytes: &[u8]) {
        let mut st = self.inner.lock().expect("pipe lock");
        if self.stream == Stream::Stderr {
            st.tail.extend(bytes);
            let over = st.tail.len().saturating_sub(STDERR_TAIL);
            st.tail.drain(..over);
        }
        let level = match self.stream {
            Stream::Stderr => Level::Warn,
            _ => Level::Info,
        };
        for &b in bytes {
            if b == b'\n' || st.partial.len() >= MAX_LINE {
                let line = std::mem::take(&mut st.partial);
                if let Some(log) = &self.log
                    && !line.is_empty()
                {
                    log.write(level, self.stream, &String::from_utf8_lossy(&line));
                }
                if b == b'\n' {
                    continue;
                }
            }
            st.partial.push(b);
        }
    }
}

impl wasmtime_wasi::cli::IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for LogPipe {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }
}

impl wasmtime_wasi::p2::OutputStream for LogPipe {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        self.accept(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for LogPipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LogPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.accept(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_the_rate_lines_are_dropped_and_counted() {
        let logs = Arc::new(Logs::new(LogLimits {
            per_second: 0.0,
            burst: 3.0,
        }));
        let log = logs.plugin("p");
        for i in 0..10 {
            log.write(Level::Info, Stream::Log, &format!("line {i}"));
        }
        assert_eq!((log.written(), log.dropped()), (3, 7));
    }

    #[test]
    fn a_pipe_cuts_lines_and_keeps_the_end_of_stderr() {
        let logs = Arc::new(Logs::new(LogLimits::default()));
        let (tx, rx) = std::sync::mpsc::channel();
        logs.spawn_publisher(move |l| {
            let _ = tx.send((l.seq, l.level, l.message.clone()));
        });
        let pipe = LogPipe::new(Some(logs.plugin("p")), Stream::Stderr);
        pipe.accept(b"first li");
        pipe.accept(b"ne\nsecond\n\nthi");
        let got: Vec<_> = (0..2).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(
            got,
            vec![
                (1, Level::Warn, "first line".to_string()),
                (2, Level::Warn, "second".to_string())
            ]
        );
        assert!(pipe.tail().ends_with("second\n\nthi"));
        let long = "é".repeat(MAX_LINE);
        assert!(cut(&long, MAX_LINE).len() <= MAX_LINE + 3);
    }
}
