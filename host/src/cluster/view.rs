//! The group's hosts as Kafka sees them, for `GET /api/cluster`.
//!
//! Every host of a `--kafka-group` publishes what it is and does — its
//! [`Member`] record: id, API address, role, input partitions, key groups,
//! lag per partition, its last takeover — every [`EVERY`] to the compacted
//! topic `<group>-cluster`, keyed by its id, as Kafka Connect's workers
//! publish their status to a status topic. Each host also reads that topic
//! from its beginning, so any host answers for the whole group. The records
//! are written outside the transactions (they are a view, not state); a
//! host that stops cleanly writes a tombstone, one that dies stops
//! publishing and shows `lost` once its last record is [`LOST_AFTER_MS`]
//! old (by its own clock: hosts are assumed NTP-synchronised), and is
//! forgotten after [`FORGET_AFTER_MS`].
//!
//! Without Kafka the host is a group of one and answers for itself.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::clock::now_ms;
use crate::kafka::KafkaConfig;
use crate::kafka::Quiet;
use crate::metrics::metrics;
use crate::state::keygroup::KEY_GROUPS;
use crate::status::{Registry, Role, Takeover};

/// How often a host publishes its record.
pub const EVERY: Duration = Duration::from_secs(1);
/// A host whose last record is older than this is `lost`.
pub const LOST_AFTER_MS: i64 = 5_000;
/// A lost host is forgotten after this.
pub const FORGET_AFTER_MS: i64 = 10 * 60 * 1_000;

/// One host of the group, as it publishes itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    /// Where its API and dashboard answer.
    pub api: String,
    pub role: Role,
    /// The input partitions it processes.
    pub partitions: Vec<i32>,
    /// The key groups whose state it owns.
    pub key_groups: Vec<u32>,
    /// Consumer lag (records) per input partition it processes.
    pub lag: BTreeMap<String, i64>,
    pub workers: usize,
    pub events_in: u64,
    pub watermark: i64,
    pub started_at: i64,
    /// When and how it began processing.
    pub takeover: Option<Takeover>,
    pub version: String,
    /// When it published this record (its wall clock, ms).
    pub beat: i64,
}

/// What a host is, fixed at start.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `--host-id`, else `<hostname>:<port>`.
    pub id: String,
    /// `--advertise-url`, else `http(s)://<hostname>:<port>`.
    pub api: String,
    pub workers: usize,
    pub started_at: i64,
}

impl Identity {
    pub fn from_config(config: &crate::config::Config) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let port = config.listen.port();
        let scheme = if config.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        Identity {
            id: config
                .host_id
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| format!("{host}:{port}")),
            api: config
                .advertise_url
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| format!("{scheme}://{host}:{port}")),
            workers: config.workers(),
            started_at: now_ms(),
        }
    }
}

/// This host's record now.
pub fn member(me: &Identity, registry: &Registry) -> Member {
    let role = registry.role.get();
    let partitions = if role == Role::Active {
        registry.partitions.lock().expect("registry lock").clone()
    } else {
        Vec::new()
    };
    // One active host owns every key group (its workers share them),
    // unless it shares them with other hosts.
    let shared = registry.key_groups.lock().expect("registry lock").clone();
    let key_groups = match shared {
        _ if role != Role::Active => Vec::new(),
        Some(k) => k,
        None => (0..KEY_GROUPS).collect(),
    };
    let lag = partitions
        .iter()
        .filter_map(|p| {
            let g = metrics()
                .consumer_lag
                .get_metric_with_label_values(&[&p.to_string()])
                .ok()?;
            Some((p.to_string(), g.get()))
        })
        .collect();
    let stats = &registry.stats;
    Member {
        id: me.id.clone(),
        api: me.api.clone(),
        role,
        partitions,
        key_groups,
        lag,
        workers: me.workers,
        events_in: stats.events_in.load(Ordering::Relaxed),
        watermark: stats.watermark.load(Ordering::Relaxed),
        started_at: me.started_at,
        takeover: registry.takeover.lock().expect("registry lock").clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        beat: now_ms(),
    }
}

/// The group's hosts: this one, live, and the others from the topic.
pub struct Cluster {
    me: Identity,
    registry: Arc<Registry>,
    /// The group and its cluster topic (`None`: no Kafka).
    kafka: Option<(String, String)>,
    /// The other hosts' last records.
    others: Mutex<BTreeMap<String, Member>>,
    /// Whether the topic has been read to its end once.
    caught_up: AtomicBool,
    stop: AtomicBool,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Cluster {
    /// A host without Kafka: a group of one.
    pub fn alone(me: Identity, registry: Arc<Registry>) -> Arc<Self> {
        Arc::new(Cluster {
            me,
            registry,
            kafka: None,
            others: Mutex::default(),
            caught_up: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            threads: Mutex::default(),
        })
    }

    /// Publish this host's record and read the others' in the background
    /// until [`Cluster::leave`].
    pub fn join(
        cfg: &KafkaConfig,
        me: Identity,
        registry: Arc<Registry>,
    ) -> Result<Arc<Self>, String> {
        let topic = cfg.cluster_topic.clone();
        let producer: BaseProducer = cfg
            .client(&[("linger.ms", "0"), ("message.timeout.ms", "5000")])
            .create()
            .map_err(|e| format!("the cluster topic's producer: {e}"))?;
        let consumer: BaseConsumer<Quiet> = cfg
            .client(&[
                ("group.id", &format!("{}-cluster-view", cfg.group)),
                ("enable.auto.commit", "false"),
                ("enable.partition.eof", "true"),
                ("fetch.wait.max.ms", "100"),
            ])
            .create_with_context(Quiet)
            .map_err(|e| format!("the cluster topic's reader: {e}"))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Beginning)
            .and_then(|_| consumer.assign(&tpl))
            .map_err(|e| format!("reading `{topic}`: {e}"))?;
        let c = Arc::new(Cluster {
            me,
            registry,
            kafka: Some((cfg.group.clone(), topic.clone())),
            others: Mutex::default(),
            caught_up: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            threads: Mutex::default(),
        });
        let publisher = {
            let c = c.clone();
            let topic = topic.clone();
            std::thread::Builder::new()
                .name("rtap-cluster-out".into())
                .spawn(move || c.publish(&producer, &topic))
        };
        let reader = {
            let c = c.clone();
            std::thread::Builder::new()
                .name("rtap-cluster-in".into())
                .spawn(move || c.read(&consumer))
        };
        let mut threads = c.threads.lock().expect("cluster lock");
        threads.push(publisher.map_err(|e| format!("spawning the cluster publisher: {e}"))?);
        threads.push(reader.map_err(|e| format!("spawning the cluster reader: {e}"))?);
        drop(threads);
        Ok(c)
    }

    fn publish(&self, producer: &BaseProducer, topic: &str) {
        let id = self.me.id.clone();
        while !self.stop.load(Ordering::Relaxed) {
            let m = member(&self.me, &self.registry);
            let body = serde_json::to_vec(&m).expect("a member serializes");
            if let Err((e, _)) = producer.send(BaseRecord::to(topic).key(&id).payload(&body)) {
                tracing::debug!("cluster record: {e}");
            }
            let _ = producer.flush(Duration::from_secs(2));
            // Sleep in steps, so that leaving is prompt.
            let until = std::time::Instant::now() + EVERY;
            while std::time::Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Leaving: a tombstone, so the others forget this host at once.
        let _ = producer.send(BaseRecord::<String, [u8]>::to(topic).key(&id));
        let _ = producer.flush(Duration::from_secs(2));
    }

    fn read(&self, consumer: &BaseConsumer<Quiet>) {
        while !self.stop.load(Ordering::Relaxed) {
            let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let msg = match msg {
                Ok(m) => m,
                Err(rdkafka::error::KafkaError::PartitionEOF(_)) => {
                    self.caught_up.store(true, Ordering::Relaxed);
                    continue;
                }
                Err(e) => {
                    tracing::debug!("cluster topic: {e}");
                    continue;
                }
            };
            let Some(key) = msg.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                continue;
            };
            if key == self.me.id {
                continue;
            }
            let mut others = self.others.lock().expect("cluster lock");
            match msg.payload() {
                None => {
                    others.remove(key);
                }
                Some(body) => match serde_json::from_slice::<Member>(body) {
                    Ok(m) => {
                        others.insert(key.to_string(), m);
                    }
                    Err(e) => tracing::warn!(
                        topic = ?self.kafka.as_ref().map(|k| &k.1),
                        offset = msg.offset(),
                        host = key,
                        "an unreadable cluster record (another rtap version?): {e}"
                    ),
                },
            }
        }
    }

    /// Stop publishing (writing this host's tombstone) and reading.
    pub fn leave(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let threads = std::mem::take(&mut *self.threads.lock().expect("cluster lock"));
        for t in threads {
            let _ = t.join();
        }
    }

    /// The host that processes the group's partitions now, if another one.
    pub fn active_elsewhere(&self) -> Option<Member> {
        let now = now_ms();
        self.others
            .lock()
            .expect("cluster lock")
            .values()
            .filter(|m| m.role == Role::Active && now - m.beat <= LOST_AFTER_MS)
            .max_by_key(|m| m.beat)
            .cloned()
    }

    /// `GET /api/cluster`: every host of the group, this one first, each
    /// with `status` `live` or `lost`; the group's last rebalance (the
    /// latest takeover of any host).
    pub fn view(&self) -> Value {
        let now = now_ms();
        let me = member(&self.me, &self.registry);
        let mut others = self.others.lock().expect("cluster lock");
        others.retain(|_, m| now - m.beat <= FORGET_AFTER_MS);
        let mut hosts = vec![(me, true)];
        hosts.extend(others.values().map(|m| (m.clone(), false)));
        drop(others);
        let last_rebalance = hosts
            .iter()
            .filter_map(|(m, _)| m.takeover.as_ref().map(|t| (t, &m.id)))
            .max_by_key(|(t, _)| t.at)
            .map(|(t, id)| {
                let mut v = serde_json::to_value(t).expect("a takeover serializes");
                v["host"] = json!(id);
                v
            });
        let hosts: Vec<Value> = hosts
            .into_iter()
            .map(|(m, this)| {
                let age = (now - m.beat).max(0);
                let mut v = serde_json::to_value(&m).expect("a member serializes");
                v["status"] = json!(if age <= LOST_AFTER_MS { "live" } else { "lost" });
                v["seen_ms_ago"] = json!(age);
                v["this"] = json!(this);
                v
            })
            .collect();
        json!({
            "group": self.kafka.as_ref().map(|k| &k.0),
            "topic": self.kafka.as_ref().map(|k| &k.1),
            "complete": self.caught_up.load(Ordering::Relaxed),
            "hosts": hosts,
            "last_rebalance": last_rebalance,
        })
    }
}
