//! The InfluxDB sink (v2 write API, with the `influxdb2` crate).
//!
//! Each metric becomes one point: measurement = the metric name; tags =
//! `plugin` and `key` (omitted when empty); fields = `value`, or one field per
//! named value (`p50`, `p95`, …); timestamp = the window end (ms). A series
//! and timestamp identify a point, so a replay after a crash, or a late update
//! of a window, overwrites instead of double-counting.
//!
//! Delivery: points wait in a memory buffer and are written in batches of up
//! to [`BATCH`] points at least every [`FLUSH_EVERY`]. A failed write is
//! retried with exponential backoff and jitter. The buffer is bounded: past
//! [`MAX_MEMORY`] points it **spills to disk** (`DATA_DIR/influx-spool/`,
//! one fsynced segment per spill), and the spool is written out first when
//! the database is back — so an outage loses nothing and the source never has
//! to stop. Before every checkpoint the runner calls [`InfluxSink::sync`],
//! which spills what is still in memory: a checkpoint therefore never covers a
//! point that is neither written nor on disk, and the points after it are
//! produced again by the replay.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use influxdb2::models::DataPoint;
use influxdb2::models::WriteDataPoint;
use influxdb2::{Client, api::write::TimestampPrecision};

use crate::clock::now_ms;
use crate::config::Config;
use crate::metrics::metrics;
use crate::output::{MetricOut, ValueField};
use crate::plugin::io::MetricValue;

/// Points per write request (the seed's InfluxDB batch size).
pub const BATCH: usize = 1000;
/// Longest time a point waits in memory before a write is attempted.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Points kept in memory before spilling to disk.
pub const MAX_MEMORY: usize = 50_000;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct InfluxConfig {
    pub url: String,
    pub org: String,
    pub bucket: String,
    /// Never logged.
    pub token: String,
    pub spool_dir: PathBuf,
}

impl InfluxConfig {
    /// The InfluxDB settings of the command line; `None` without
    /// `--influx-url`.
    pub fn from_config(config: &Config) -> Option<Self> {
        Some(InfluxConfig {
            url: config.influx_url.clone()?,
            org: config.influx_org.clone(),
            bucket: config.influx_bucket.clone(),
            token: config.influx_token.0.clone(),
            spool_dir: config.data_dir.join("influx-spool"),
        })
    }
}

/// What `/health` and the API show of the sink.
#[derive(Debug, Default)]
pub struct InfluxStatus {
    pub failing: AtomicBool,
    pub buffered: AtomicU64,
    pub written: AtomicU64,
    pub last_ok: AtomicI64,
    pub last_error: Mutex<Option<String>>,
}

enum Msg {
    Lines(Vec<String>),
    Sync(mpsc::Sender<()>),
}

pub struct InfluxSink {
    tx: mpsc::SyncSender<Msg>,
    pub status: Arc<InfluxStatus>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One metric as a line of line protocol.
pub fn line_of(m: &MetricOut) -> Option<String> {
    let mut b = DataPoint::builder(m.name.as_str()).tag("plugin", &*m.plugin);
    if !m.key.is_empty() {
        b = b.tag("key", m.key.as_str());
    }
    match &m.value {
        ValueField::Single(v) | ValueField::Several(MetricValue::Single(v)) => {
            if !v.is_finite() {
                return None;
            }
            b = b.field("value", *v);
        }
        ValueField::Several(MetricValue::Several(vs)) => {
            let mut any = false;
            for (name, x) in vs.iter().filter(|(_, x)| x.is_finite()) {
                b = b.field(name.as_str(), *x);
                any = true;
            }
            if !any {
                return None;
            }
        }
    }
    let point = b.timestamp(m.window_end).build().ok()?;
    let mut out = Vec::new();
    point.write_data_point_to(&mut out).ok()?;
    String::from_utf8(out)
        .ok()
        .map(|s| s.trim_end().to_string())
}

impl InfluxSink {
    pub fn start(cfg: InfluxConfig) -> std::io::Result<Self> {
        std::fs::create_dir_all(&cfg.spool_dir)?;
        let (tx, rx) = mpsc::sync_channel(1024);
        let status = Arc::new(InfluxStatus::default());
        let st = status.clone();
        let thread = std::thread::Builder::new()
            .name("influx-sink".into())
            .spawn(move || Writer::new(cfg, st).run(rx))?;
        Ok(InfluxSink {
            tx,
            status,
            thread: Some(thread),
        })
    }

    /// Queue points (blocks only if the writer thread is far behind).
    pub fn push(&self, lines: Vec<String>) {
        if !lines.is_empty() {
            let _ = self.tx.send(Msg::Lines(lines));
        }
    }

    /// Make every point pushed so far durable (written or spooled to disk).
    pub fn sync(&self) {
        let (ack, done) = mpsc::channel();
        if self.tx.send(Msg::Sync(ack)).is_ok() {
            let _ = done.recv();
        }
    }
}

impl Drop for InfluxSink {
    fn drop(&mut self) {
        // Closing the channel tells the writer to flush or spool, then stop.
        let (tx, _) = mpsc::sync_channel(1);
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Writer {
    cfg: InfluxConfig,
    client: Client,
    status: Arc<InfluxStatus>,
    memory: VecDeque<String>,
    /// Spool segment being written out, with its remaining lines.
    current: Option<(PathBuf, VecDeque<String>)>,
    next_attempt: Instant,
    backoff: Duration,
    last_flush: Instant,
    seq: u64,
    /// Lines in spool segments (including `current`).
    spool_lines: usize,
    rt: tokio::runtime::Runtime,
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "lp"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

impl Writer {
    fn new(cfg: InfluxConfig, status: Arc<InfluxStatus>) -> Self {
        let client = Client::new(cfg.url.clone(), cfg.org.clone(), cfg.token.clone());
        let seq = segments(&cfg.spool_dir)
            .last()
            .and_then(|p| p.file_stem()?.to_str()?.parse::<u64>().ok())
            .unwrap_or(0);
        let spool_lines = segments(&cfg.spool_dir)
            .iter()
            .map(|p| {
                std::fs::read_to_string(p)
                    .map(|t| t.lines().count())
                    .unwrap_or(0)
            })
            .sum();
        if spool_lines > 0 {
            tracing::info!(
                points = spool_lines,
                "InfluxDB spool from an earlier run: writing it first"
            );
        }
        Writer {
            spool_lines,
            client,
            status,
            memory: VecDeque::new(),
            current: None,
            next_attempt: Instant::now(),
            backoff: BACKOFF_MIN,
            last_flush: Instant::now(),
            seq,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime"),
            cfg,
        }
    }

    fn update_gauges(&self) {
        let n = self.memory.len() + self.spool_lines;
        self.status.buffered.store(n as u64, Ordering::Relaxed);
        metrics()
            .sink_buffered
            .with_label_values(&["influxdb"])
            .set(n as i64);
    }

    /// Move the memory buffer to a new fsynced spool segment.
    fn spill(&mut self) {
        if self.memory.is_empty() {
            return;
        }
        self.seq += 1;
        let path = self.cfg.spool_dir.join(format!("{:012}.lp", self.seq));
        let tmp = path.with_extension("tmp");
        let mut body = String::with_capacity(self.memory.len() * 80);
        for l in &self.memory {
            body.push_str(l);
            body.push('\n');
        }
        let res = (|| -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(body.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        match res {
            Ok(()) => {
                self.spool_lines += self.memory.len();
                self.memory.clear();
            }
            Err(e) => tracing::error!(path = %path.display(), "cannot spool InfluxDB points: {e}"),
        }
    }

    /// The next batch to write: the oldest spool segment first.
    fn next_batch(&mut self) -> Option<Vec<String>> {
        if self.current.is_none()
            && let Some(p) = segments(&self.cfg.spool_dir).into_iter().next()
        {
            let lines: VecDeque<String> = std::fs::read_to_string(&p)
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            self.current = Some((p, lines));
        }
        if let Some((_, lines)) = &self.current {
            return Some(lines.iter().take(BATCH).cloned().collect());
        }
        (!self.memory.is_empty()).then(|| self.memory.iter().take(BATCH).cloned().collect())
    }

    fn written(&mut self, n: usize) {
        if let Some((path, lines)) = &mut self.current {
            let n = n.min(lines.len());
            lines.drain(..n);
            self.spool_lines = self.spool_lines.saturating_sub(n);
            if lines.is_empty() {
                let _ = std::fs::remove_file(&*path);
                self.current = None;
            }
        } else {
            self.memory.drain(..n.min(self.memory.len()));
        }
    }

    /// Write batches while the database accepts them.
    fn flush(&mut self) {
        while Instant::now() >= self.next_attempt {
            let Some(batch) = self.next_batch() else {
                break;
            };
            let n = batch.len();
            let body = batch.join("\n");
            let started = Instant::now();
            let res = self
                .rt
                .block_on(self.client.write_line_protocol_with_precision(
                    &self.cfg.org,
                    &self.cfg.bucket,
                    body,
                    TimestampPrecision::Milliseconds,
                ));
            metrics()
                .sink_write_duration
                .with_label_values(&["influxdb"])
                .observe(started.elapsed().as_secs_f64());
            match res {
                Ok(()) => {
                    self.written(n);
                    self.backoff = BACKOFF_MIN;
                    self.status.written.fetch_add(n as u64, Ordering::Relaxed);
                    self.status.last_ok.store(now_ms(), Ordering::Relaxed);
                    if self.status.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!(url = %self.cfg.url, "InfluxDB writes succeed again");
                    }
                }
                Err(e) => {
                    metrics().sink_errors.with_label_values(&["influxdb"]).inc();
                    if !self.status.failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(url = %self.cfg.url, "InfluxDB write failed, retrying with backoff: {e}");
                    }
                    *self.status.last_error.lock().expect("status lock") = Some(e.to_string());
                    // Exponential backoff with full jitter.
                    let jitter = (now_ms() as u64 % 1000) as f64 / 1000.0;
                    self.next_attempt = Instant::now() + self.backoff.mul_f64(0.5 + jitter / 2.0);
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    break;
                }
            }
        }
        self.last_flush = Instant::now();
        self.update_gauges();
    }

    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Msg::Lines(lines)) => {
                    self.memory.extend(lines);
                    if self.memory.len() >= MAX_MEMORY {
                        self.spill();
                    }
                }
                Ok(Msg::Sync(ack)) => {
                    self.flush();
                    self.spill();
                    let _ = ack.send(());
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Shutting down: a last try, then keep the rest on disk.
                    self.next_attempt = Instant::now();
                    self.flush();
                    self.spill();
                    return;
                }
            }
            let due = self.last_flush.elapsed() >= FLUSH_EVERY
                || self.memory.len() >= BATCH
                || self.current.is_some();
            if due {
                self.flush();
            }
        }
    }
}
