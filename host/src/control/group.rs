//! The group's plugins: every host of a `--kafka-group` runs the same
//! plugins, whichever host's API or plugins folder changed them, because
//! the active host shares each change on the compacted `<group>-control`
//! topic (with the changelog on: `--kafka-changelog` or `--standby`) and a
//! host that starts or takes over loads what the topic says.
//!
//! ## Records (one partition, compacted)
//!
//! - `plugin/<name>` → a [`Shared`] record (JSON): the running version's
//!   content hash and config, the version a rollback goes back to, when
//!   and by which host it changed — or `removed`, kept (not a tombstone) so
//!   that a host whose folder still holds the plugin does not bring it
//!   back;
//! - `blob/<hash>/<i>/<n>` → chunk `i` of `n` of a component's bytes
//!   ([`CHUNK`] each), written before any record names the hash. Content
//!   addressed: a version is written once, and a host rebuilds it from
//!   the topic alone, even when the host that took the upload is gone
//!   (the case a failover is for). The bytes are checked against the hash.
//!
//! ## Which version wins at start
//!
//! Before loading its plugins folder, a host reads the topic to its end.
//! For each plugin the group names, the group's version is written into
//! the folder (`<name>.wasm`, or the file that held the plugin) with its
//! saved config and rollback target — unless the folder's file changed
//! after the group's record (a newer build copied in while the host was
//! down: it wins, and is shared once the host is active). A plugin the
//! group removed leaves the folder, unless its file is newer than the
//! removal. A plugin only the folder has is shared. Once active, the host
//! shares every change before its barrier (`Control::share_ahead`): the
//! processing thread may commit state the new version wrote right after
//! the switch, and a host that takes over must not pair it with the old
//! code. A change that then fails at its barrier, or is abandoned before
//! it (`Control::barrier`'s timeout), is taken back (the running versions
//! are shared again). A change the API
//! acknowledged is on the topic; when the broker did not take it in time,
//! it is shared again every `SHARE_AGAIN` once made.
//!
//! A standby follows the topic while it waits ([`Follower`]): it compiles
//! each version as it appears and lists the group's plugins.
//!
//! A shadow version (`…/shadow`) is not shared: it runs on the host that
//! started it until it is promoted (then the promoted version is shared)
//! or discarded.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::kafka::KafkaConfig;
use crate::status::{PluginCounters, PluginStatus, Registry};

/// The most bytes of a component one record carries (below the brokers'
/// default 1 MB message limit).
pub const CHUNK: usize = 512 << 10;
/// How long reading the topic at start may take at most.
const READ_FOR: Duration = Duration::from_secs(60);
/// How long sharing a change may wait for the broker.
const SEND_FOR: Duration = Duration::from_secs(10);

/// A version of a plugin as the group knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub hash: String,
    pub config: Value,
}

/// A plugin's record on the control topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shared {
    pub name: String,
    /// The running version (`None`: removed).
    pub current: Option<Version>,
    /// The version a rollback goes back to.
    pub previous: Option<Version>,
    /// When the change was applied (ms since the epoch).
    pub at: i64,
    /// The host that applied it.
    pub host: String,
    /// Whether the change to `current` started the plugin's state empty
    /// (a swap with `?state=reset`). A host that takes over from one that
    /// died after sharing the change and before its barrier finds state
    /// the change never replaced, and starts the plugin empty, as the
    /// barrier would have (`crate::checkpoint::restore`).
    #[serde(default)]
    pub reset: bool,
}

/// The control topic as read at start: every plugin's record and the
/// components' chunks.
#[derive(Default)]
pub struct GroupPlugins {
    pub plugins: BTreeMap<String, Shared>,
    /// Per content hash: its chunks, by index.
    chunks: HashMap<String, BTreeMap<u32, Vec<u8>>>,
    /// Per content hash: how many chunks it has.
    counts: HashMap<String, u32>,
}

impl GroupPlugins {
    /// Whether the group runs any plugin.
    pub fn has_plugins(&self) -> bool {
        self.plugins.values().any(|s| s.current.is_some())
    }

    /// Per plugin whose running version was swapped in with its state
    /// reset: that version's content hash.
    pub fn resets(&self) -> BTreeMap<String, String> {
        self.plugins
            .values()
            .filter(|s| s.reset)
            .filter_map(|s| Some((s.name.clone(), s.current.as_ref()?.hash.clone())))
            .collect()
    }

    /// The bytes of the component with content hash `hash`, checked.
    pub fn component(&self, hash: &str) -> Result<Vec<u8>, String> {
        let n = *self
            .counts
            .get(hash)
            .ok_or_else(|| format!("the control topic has no component {hash}"))?;
        let chunks = self.chunks.get(hash).map_or(0, BTreeMap::len);
        if chunks != n as usize {
            return Err(format!(
                "the control topic has {chunks} of the {n} chunks of component {hash}"
            ));
        }
        let bytes: Vec<u8> = self.chunks[hash].values().flatten().copied().collect();
        let got = hex::encode(Sha256::digest(&bytes));
        if got != hash {
            return Err(format!(
                "component {hash} on the control topic hashes to {got}: refused"
            ));
        }
        Ok(bytes)
    }
}

impl GroupPlugins {
    /// One record of the control topic, read in order.
    fn apply(&mut self, topic: &str, m: &rdkafka::message::BorrowedMessage<'_>) {
        let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            return;
        };
        if let Some(name) = key.strip_prefix("plugin/") {
            match m.payload().map(serde_json::from_slice::<Shared>) {
                Some(Ok(s)) => {
                    self.plugins.insert(name.to_string(), s);
                }
                Some(Err(e)) => tracing::warn!(
                    topic = %topic,
                    offset = m.offset(),
                    plugin = name,
                    "an unreadable record of the group's plugins (another rtap version?), ignored: {e}"
                ),
                None => {
                    self.plugins.remove(name);
                }
            }
        } else if let Some(rest) = key.strip_prefix("blob/") {
            let mut parts = rest.split('/');
            let (Some(hash), Some(Ok(i)), Some(Ok(n))) = (
                parts.next(),
                parts.next().map(str::parse::<u32>),
                parts.next().map(str::parse::<u32>),
            ) else {
                return;
            };
            self.counts.insert(hash.to_string(), n);
            self.chunks
                .entry(hash.to_string())
                .or_default()
                .insert(i, m.payload().unwrap_or_default().to_vec());
        }
    }
}

fn plugin_key(name: &str) -> String {
    format!("plugin/{name}")
}

fn blob_key(hash: &str, i: usize, n: usize) -> String {
    format!("blob/{hash}/{i}/{n}")
}

/// Read the control topic from its start to its end.
pub fn read(cfg: &KafkaConfig) -> Result<GroupPlugins, String> {
    let topic = &cfg.control_topic;
    let fail = |why: String| format!("reading the group's plugins from `{topic}`: {why}");
    let consumer = cfg
        .topic_reader(topic, "control-reader", &[("fetch.wait.max.ms", "10")])
        .map_err(fail)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .and_then(|_| consumer.assign(&tpl))
        .map_err(|e| fail(e.to_string()))?;
    let mut out = GroupPlugins::default();
    let deadline = Instant::now() + READ_FOR;
    loop {
        if Instant::now() > deadline {
            return Err(fail(format!("not read to its end within {READ_FOR:?}")));
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = match m {
            Err(rdkafka::error::KafkaError::PartitionEOF(_)) => break,
            Err(e) => return Err(fail(e.to_string())),
            Ok(m) => m,
        };
        out.apply(topic, &m);
    }
    Ok(out)
}

/// The control topic producer's context: the first delivery that failed
/// since the last flush.
#[derive(Default)]
struct Deliveries {
    failed: std::sync::Mutex<Option<String>>,
}

impl rdkafka::client::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed
                .lock()
                .expect("deliveries lock")
                .get_or_insert_with(|| e.to_string());
        }
    }
}

/// The active host's side: shares each change it applies.
pub struct Publisher {
    producer: BaseProducer<Deliveries>,
    topic: String,
    host: String,
    /// The components already on the topic (by hash).
    written: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Components sent since the last flush.
    queued: std::sync::Mutex<Vec<String>>,
}

impl Publisher {
    /// `known`: the topic as read at start (its components are not written
    /// again).
    pub fn new(cfg: &KafkaConfig, host: &str, known: &GroupPlugins) -> Result<Self, String> {
        // Not idempotent: after a record timed out (the broker away longer
        // than `message.timeout.ms`), librdkafka's idempotent producer
        // could not go on with tansu, and every later change was lost. One
        // request in flight keeps the records in order; a record sent twice
        // is the same record (compacted by key).
        let producer: BaseProducer<Deliveries> = cfg
            .client(&[
                ("linger.ms", "0"),
                ("enable.idempotence", "false"),
                ("max.in.flight.requests.per.connection", "1"),
                ("message.timeout.ms", "10000"),
                ("message.max.bytes", "1000000"),
            ])
            .create_with_context(Deliveries::default())
            .map_err(|e| format!("the control topic's producer: {e}"))?;
        let written = known
            .counts
            .keys()
            .filter(|h| known.component(h).is_ok())
            .cloned()
            .collect();
        Ok(Publisher {
            producer,
            topic: cfg.control_topic.clone(),
            host: host.to_string(),
            written: std::sync::Mutex::new(written),
            queued: std::sync::Mutex::default(),
        })
    }

    fn send(&self, key: &str, payload: &[u8]) -> Result<(), String> {
        let mut record = BaseRecord::<str, [u8]>::to(&self.topic)
            .key(key)
            .payload(payload);
        let deadline = Instant::now() + SEND_FOR;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((e, r))
                    if e.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        && Instant::now() < deadline =>
                {
                    self.producer.poll(Duration::from_millis(50));
                    record = r;
                }
                Err((e, _)) => return Err(format!("sending `{key}` to `{}`: {e}", self.topic)),
            }
        }
    }

    /// Write a component's chunks unless the topic has them.
    fn component(&self, hash: &str, bytes: &[u8]) -> Result<(), String> {
        if self.written.lock().expect("written lock").contains(hash) {
            return Ok(());
        }
        let n = bytes.len().div_ceil(CHUNK).max(1);
        for i in 0..n {
            let part = &bytes[(i * CHUNK).min(bytes.len())..((i + 1) * CHUNK).min(bytes.len())];
            self.send(&blob_key(hash, i, n), part)?;
        }
        Ok(())
    }

    /// Share a plugin's versions: `current` and `previous` as (bytes,
    /// version); `None` for `current`: removed. Returns once the broker
    /// has the records, or an error after `wait` (the records may still
    /// arrive: sharing them again is harmless, a record per plugin key).
    pub fn share(
        &self,
        name: &str,
        current: Option<(&[u8], Version)>,
        previous: Option<(&[u8], Version)>,
        reset: bool,
        wait: Duration,
    ) -> Result<(), String> {
        // A failed delivery left from an earlier share that stopped
        // waiting belongs to a change already shared again: not this one.
        let stale = self
            .producer
            .context()
            .failed
            .lock()
            .expect("deliveries lock")
            .take();
        if let Some(e) = stale {
            tracing::debug!("an earlier record of the control topic was not delivered: {e}");
        }
        self.queue(name, current, previous, reset)?;
        self.flush_within(wait)
    }

    /// Wait until the broker has every queued record (at most
    /// `message.timeout.ms`).
    pub fn flush(&self) -> Result<(), String> {
        self.flush_within(SEND_FOR)
    }

    /// Wait at most `wait` until the broker has every queued record. Only
    /// then do the components count as written: after a failed flush they
    /// are sent again with the next change that names them.
    pub fn flush_within(&self, wait: Duration) -> Result<(), String> {
        let res = crate::kafka::flush_fast(&self.producer, wait)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                match self
                    .producer
                    .context()
                    .failed
                    .lock()
                    .expect("deliveries lock")
                    .take()
                {
                    // A flush returns once every record is done with, delivered
                    // or not.
                    Some(e) => Err(format!("a record was not delivered: {e}")),
                    None => Ok(()),
                }
            })
            .map_err(|e| format!("sharing plugins on `{}`: {e}", self.topic));
        let queued = std::mem::take(&mut *self.queued.lock().expect("written lock"));
        if res.is_ok() {
            self.written.lock().expect("written lock").extend(queued);
        }
        res
    }

    /// [`Publisher::share`] without waiting for the broker.
    pub fn queue(
        &self,
        name: &str,
        current: Option<(&[u8], Version)>,
        previous: Option<(&[u8], Version)>,
        reset: bool,
    ) -> Result<(), String> {
        for (bytes, v) in current.iter().chain(previous.iter()) {
            self.component(&v.hash, bytes)?;
        }
        let record = Shared {
            name: name.to_string(),
            current: current.as_ref().map(|(_, v)| v.clone()),
            previous: previous.as_ref().map(|(_, v)| v.clone()),
            at: crate::clock::now_ms(),
            host: self.host.clone(),
            reset,
        };
        let body = serde_json::to_vec(&record).expect("a record serializes");
        self.send(&plugin_key(name), &body)?;
        let mut queued = self.queued.lock().expect("written lock");
        for (_, v) in current.iter().chain(previous.iter()) {
            queued.push(v.hash.clone());
        }
        Ok(())
    }
}

/// The plugins of a folder, loaded (any bad file is an error naming it);
/// an empty folder is fine when the group (`group`) has plugins to fill
/// it.
pub fn load_folder(
    runtime: &crate::plugin::Runtime,
    dir: &Path,
    group: Option<&GroupPlugins>,
) -> Result<Vec<(crate::plugin::Loaded, PathBuf)>, String> {
    let empty = crate::plugin::wasm_files(dir).is_ok_and(|f| f.is_empty());
    if empty && group.is_some_and(GroupPlugins::has_plugins) {
        return Ok(Vec::new());
    }
    crate::plugin::load_dir(runtime, dir).map_err(|e| e.to_string())
}

/// A standby's plugins folder, checked at its start as any host's is when
/// it loads it: every `.wasm` loads (compiled into the compile cache, so
/// the takeover does not wait for the compiler: ~2.5 s for the seed's
/// eleven plugins on two cores), and every `--plugin-config` names one
/// of them or one of the group's (`group`, the control topic as read now).
pub fn check_folder(
    runtime: &crate::plugin::Runtime,
    config: &crate::config::Config,
    group: &GroupPlugins,
) -> Result<(), String> {
    let started = Instant::now();
    let loaded = load_folder(runtime, &config.plugins, Some(group))?;
    for c in &config.plugin_configs {
        let known = loaded.iter().any(|(l, _)| l.description.name == c.name)
            || group
                .plugins
                .get(&c.name)
                .is_some_and(|s| s.current.is_some());
        if !known {
            return Err(format!(
                "--plugin-config names `{}`, which is neither in {} nor one of the group's plugins",
                c.name,
                config.plugins.display()
            ));
        }
    }
    tracing::info!(
        plugins = loaded.len(),
        took_ms = started.elapsed().as_millis() as u64,
        "standby: the plugins folder loads (compiled ahead of a takeover)"
    );
    Ok(())
}

/// A standby's view of the group's plugins while it waits: it follows the
/// control topic, compiles every version the group names as it appears
/// (into the compile cache, so that a takeover does not wait for the
/// compiler, also for a version uploaded after the standby started), and
/// lists them in the registry (`GET /api/plugins`) with the status
/// `standby`. Stopped when the standby takes over, before it loads.
pub struct Follower {
    stop: Arc<AtomicBool>,
    registry: Arc<Registry>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Follower {
    pub fn start(
        cfg: &KafkaConfig,
        runtime: Arc<crate::plugin::Runtime>,
        registry: Arc<Registry>,
    ) -> Follower {
        let stop = Arc::new(AtomicBool::new(false));
        let (cfg, flag, reg) = (cfg.clone(), stop.clone(), registry.clone());
        let thread = std::thread::Builder::new()
            .name("plugin-follow".into())
            .spawn(move || follow(&cfg, &runtime, &reg, &flag))
            .ok();
        Follower {
            stop,
            registry,
            thread,
        }
    }

    /// Stop following and take the standby's list out of the registry:
    /// the plugins the host now loads replace it. Not waited for: it stops
    /// after the version it may be compiling (the takeover's load finds
    /// that one in the compile cache, or compiles it too).
    pub fn stop(&self) {
        let mut plugins = self.registry.plugins.lock().expect("registry lock");
        self.stop.store(true, Ordering::Relaxed);
        plugins.clear();
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn follow(
    cfg: &KafkaConfig,
    runtime: &crate::plugin::Runtime,
    registry: &Registry,
    stop: &AtomicBool,
) {
    let topic = &cfg.control_topic;
    let consumer =
        match cfg.topic_reader(topic, "control-follower", &[("fetch.wait.max.ms", "100")]) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(topic = %topic, "standby: not following the group's plugins: {e}");
                return;
            }
        };
    let mut tpl = TopicPartitionList::new();
    if let Err(e) = tpl
        .add_partition_offset(topic, 0, Offset::Beginning)
        .and_then(|_| consumer.assign(&tpl))
    {
        tracing::warn!(topic = %topic, "standby: not following the group's plugins: {e}");
        return;
    }
    let mut group = GroupPlugins::default();
    let mut compiled: HashMap<String, Arc<crate::plugin::Loaded>> = HashMap::new();
    let mut refused: std::collections::HashSet<String> = Default::default();
    let mut changed = false;
    let mut last_error = Instant::now() - Duration::from_secs(60);
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => {
                group.apply(topic, &m);
                changed = true;
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) if changed => {
                changed = false;
                let started = Instant::now();
                let before = compiled.len();
                compile(runtime, &group, &mut compiled, &mut refused, stop);
                if compiled.len() > before {
                    tracing::info!(
                        components = compiled.len() - before,
                        took_ms = started.elapsed().as_millis() as u64,
                        "standby: compiled the group's plugins ahead of a takeover"
                    );
                }
                let list = standby_list(&group, &compiled);
                let mut plugins = registry.plugins.lock().expect("registry lock");
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                *plugins = list;
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) if last_error.elapsed() >= Duration::from_secs(30) => {
                tracing::warn!(topic = %topic, "standby: following the group's plugins: {e}");
                last_error = Instant::now();
            }
            Some(Err(_)) => {}
        }
    }
}

/// Compile every version the group names (running and rollback target)
/// that is complete on the topic and not compiled yet (until `stop`); keep
/// only the versions it names.
fn compile(
    runtime: &crate::plugin::Runtime,
    group: &GroupPlugins,
    compiled: &mut HashMap<String, Arc<crate::plugin::Loaded>>,
    refused: &mut std::collections::HashSet<String>,
    stop: &AtomicBool,
) {
    let named: std::collections::HashSet<&str> = group
        .plugins
        .values()
        .flat_map(|s| s.current.iter().chain(s.previous.iter()))
        .map(|v| v.hash.as_str())
        .collect();
    compiled.retain(|hash, _| named.contains(hash.as_str()));
    let versions = group.plugins.iter().flat_map(|(name, s)| {
        s.current
            .iter()
            .chain(s.previous.iter())
            .map(move |v| (name, v))
    });
    for (name, v) in versions {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if compiled.contains_key(&v.hash) || refused.contains(&v.hash) {
            continue;
        }
        let Ok(bytes) = group.component(&v.hash) else {
            continue; // not all its chunks read yet
        };
        match runtime.load(&bytes, "the group's plugins") {
            Ok(l) => {
                compiled.insert(v.hash.clone(), Arc::new(l));
            }
            Err(e) => {
                tracing::warn!(plugin = %name, hash = %v.hash, "standby: the group's version does not load here: {e}");
                refused.insert(v.hash.clone());
            }
        }
    }
}

/// The registry's list on a standby: each plugin the group runs, as its
/// compiled running version describes it, with the status `standby`.
fn standby_list(
    group: &GroupPlugins,
    compiled: &HashMap<String, Arc<crate::plugin::Loaded>>,
) -> Vec<(crate::status::PluginMeta, Arc<PluginCounters>)> {
    group
        .plugins
        .values()
        .filter_map(|s| {
            let v = s.current.as_ref()?;
            let l = compiled.get(&v.hash)?;
            let previous = s
                .previous
                .as_ref()
                .and_then(|p| compiled.get(&p.hash))
                .map(|p| serde_json::json!({"version": p.description.version, "hash": p.hash}));
            let mut meta = super::install::meta_of(l, v.config.clone(), previous);
            meta.loaded_at = s.at;
            let counters = Arc::new(PluginCounters::default());
            counters.set_status(PluginStatus::Standby);
            Some((meta, counters))
        })
        .collect()
}

/// When a file last changed (ms since the epoch; 0 when unknown).
pub fn modified_ms(path: &Path) -> i64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

/// Where the group's version of `name` goes in the plugins folder: the
/// file that holds the plugin now, else `<name>.wasm` (`<name>-<hash>.wasm`
/// when that file holds another plugin).
pub fn path_for(dir: &Path, name: &str, now: Option<&Path>, hash: &str) -> PathBuf {
    match now {
        Some(p) => p.to_path_buf(),
        None => {
            let plain = dir.join(format!("{name}.wasm"));
            // Never over a file that holds another plugin.
            if plain.exists() {
                dir.join(format!("{name}-{}.wasm", &hash[..12.min(hash.len())]))
            } else {
                plain
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_is_checked_against_its_hash_and_needs_every_chunk() {
        let bytes: Vec<u8> = (0..(CHUNK * 2 + 10)).map(|i| (i % 251) as u8).collect();
        let hash = hex::encode(Sha256::digest(&bytes));
        let mut g = GroupPlugins::default();
        g.counts.insert(hash.clone(), 3);
        for (i, part) in bytes.chunks(CHUNK).enumerate() {
            if i != 1 {
                g.chunks
                    .entry(hash.clone())
                    .or_default()
                    .insert(i as u32, part.to_vec());
            }
        }
        let e = g.component(&hash).unwrap_err();
        assert!(e.contains("2 of the 3 chunks"), "{e}");
        g.chunks
            .get_mut(&hash)
            .unwrap()
            .insert(1, bytes[CHUNK..2 * CHUNK].to_vec());
        assert_eq!(g.component(&hash).unwrap(), bytes);
        g.chunks.get_mut(&hash).unwrap().insert(2, vec![0; 10]);
        let e = g.component(&hash).unwrap_err();
        assert!(e.contains("refused"), "{e}");
        assert!(g.component("nope").is_err());
    }
}
