//! Where and how to talk to Kafka: one config shared by the source, the
//! transactional sink and the topic set-up, built from the command line.

use std::time::Duration;

use std::sync::{Arc, Mutex};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};

use crate::config::Config;
use crate::status::KafkaHealth;

/// How long a producer's caller sleeps between rounds of delivery reports
/// while it waits for its records ([`flush_fast`]).
pub const REPORT_WAIT: Duration = Duration::from_micros(250);
/// The longest sleep between rounds while [`flush_fast`] waits for
/// acknowledgements: the sleep doubles from [`REPORT_WAIT`] up to this.
/// (A fixed 250 µs made ~160 wake-ups per commit: the committer's CPU was
/// nearly all context switches.)
pub const REPORT_WAIT_MAX: Duration = Duration::from_millis(2);

/// Serve every delivery report of `producer` that is ready, without
/// waiting.
///
/// rdkafka's `poll(timeout)` serves at most one event per pass and loops
/// until the whole timeout has passed, handing librdkafka the remaining
/// time rounded down to whole milliseconds: a 1 ms poll spins on the clock
/// for that millisecond. Measured at 100 000 events/s, the committer thread
/// spent most of its CPU in `clock_gettime` that way. So: zero-timeout
/// polls while they serve something, and the caller sleeps between rounds.
pub fn serve_reports<C: ProducerContext>(producer: &BaseProducer<C>) {
    let mut left = producer.in_flight_count();
    while left > 0 {
        producer.poll(Duration::ZERO);
        let now = producer.in_flight_count();
        if now >= left {
            break;
        }
        left = now;
    }
}

/// Queue `rec` on `producer`; while its queue is full, serve delivery
/// reports and try again (back-pressure), so only a real failure is an
/// error.
pub fn send_waiting<C, K, P>(
    producer: &BaseProducer<C>,
    mut rec: rdkafka::producer::BaseRecord<'_, K, P>,
) -> Result<(), KafkaError>
where
    C: ProducerContext<DeliveryOpaque = ()>,
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                serve_reports(producer);
                std::thread::sleep(REPORT_WAIT_MAX);
                rec = r;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// The offsets `group` committed on `partitions` of `topic`, those above
/// 0 only: the markers of the exchange's tasks and of the key-group
/// ranges (an id as the offset of a topic that holds no records).
pub fn read_markers(
    group: &rdkafka::consumer::BaseConsumer,
    topic: &str,
    partitions: &[u32],
) -> Result<std::collections::BTreeMap<u32, u64>, KafkaError> {
    use rdkafka::consumer::Consumer;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, *p as i32);
    }
    let got = group.committed_offsets(tpl, Duration::from_secs(10))?;
    let mut out = std::collections::BTreeMap::new();
    for e in got.elements() {
        // A partition's own error (the coordinator not ready, an unstable
        // offset) is not "no marker": a marker read as none would make a
        // new incarnation take its predecessor's commits for aborted ones.
        e.error()?;
        if let rdkafka::Offset::Offset(o) = e.offset()
            && o > 0
        {
            out.insert(e.partition() as u32, o as u64);
        }
    }
    Ok(out)
}

/// Wait until every record `producer` queued is acknowledged, serving
/// delivery reports every [`REPORT_WAIT`], backing off to
/// [`REPORT_WAIT_MAX`] while none arrive; a timeout after `within`.
///
/// Call it before `commit_transaction`, and instead of `flush`: rdkafka's
/// `flush`, which its `commit_transaction` calls first, polls in steps of
/// 100 ms that each last the whole 100 ms (`poll`, above). Measured against
/// tansu: every transaction with a record in flight took ≥ 100 ms that
/// way, whatever its size — the exchange topic's transport carried 16
/// payloads of 128 KiB per 102 ms (`kafka_exchange exchange_throughput`).
pub fn flush_fast<C: ProducerContext>(
    producer: &BaseProducer<C>,
    within: Duration,
) -> Result<(), KafkaError> {
    let deadline = std::time::Instant::now() + within;
    let mut wait = REPORT_WAIT;
    let mut left = producer.in_flight_count();
    loop {
        serve_reports(producer);
        let now = producer.in_flight_count();
        if now == 0 {
            return Ok(());
        }
        // Acknowledgements come a produce request at a time: after one,
        // the next may be close behind.
        wait = if now < left {
            REPORT_WAIT
        } else {
            (wait * 2).min(REPORT_WAIT_MAX)
        };
        left = now;
        if std::time::Instant::now() > deadline {
            return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
        }
        std::thread::sleep(wait);
    }
}

/// Where and how to talk to Kafka.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    pub group: String,
    pub events_topic: String,
    pub metrics_topic: String,
    pub alerts_topic: String,
    /// Dead letters: the input as received, the why in headers.
    pub dead_letter_topic: String,
    /// Events later than the allowed lateness, as received.
    pub late_topic: String,
    /// The one-partition topic whose group offset is the commit marker of
    /// the transactional protocol (see `crate::checkpoint`).
    pub marker_topic: String,
    /// `<group>-changelog`: every commit's state changes, one partition per
    /// key group (see `crate::checkpoint::changelog`).
    pub changelog_topic: String,
    /// Whether commits write it (`--kafka-changelog`, or `--standby`).
    pub changelog: bool,
    /// `<group>-cluster`: every host's record of itself (`crate::cluster`).
    pub cluster_topic: String,
    /// `<group>-control`: the group's plugins, with their components
    /// (`crate::control::group`), with the changelog.
    pub control_topic: String,
    /// The producer's `transactional.id` (one per pipeline: a second host
    /// with the same id fences the first).
    pub transactional_id: String,
    /// librdkafka options passed through as they are (`--kafka-option k=v`).
    pub options: Vec<(String, String)>,
    /// Options for the output producer only (`--kafka-producer-option k=v`),
    /// after `options`.
    pub producer_options: Vec<(String, String)>,
    /// Where the source and the sink report how they reach the broker
    /// (`/health` reads it).
    pub health: std::sync::Arc<KafkaHealth>,
}

impl KafkaConfig {
    /// A client config: brokers, then the caller's defaults, then the
    /// operator's pass-through options (which win).
    pub fn client(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.options {
            c.set(k, v);
        }
        c
    }

    /// The output producer's config: [`Self::client`], then the
    /// producer-only options (which win).
    pub fn producer(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = self.client(defaults);
        for (k, v) in &self.producer_options {
            c.set(k, v);
        }
        c
    }
}

impl KafkaConfig {
    /// The Kafka settings of the command line; `None` without
    /// `--kafka-brokers`.
    pub fn from_config(config: &Config) -> Option<Self> {
        let pairs = |o: &[crate::config::KafkaOption]| {
            o.iter().map(|o| (o.0.clone(), o.1.clone())).collect()
        };
        let brokers = config.kafka_brokers.clone()?;
        Some(KafkaConfig {
            brokers,
            group: config.kafka_group.clone(),
            events_topic: config.kafka_events_topic.clone(),
            metrics_topic: config.kafka_metrics_topic.clone(),
            alerts_topic: config.kafka_alerts_topic.clone(),
            dead_letter_topic: config.kafka_dead_letter_topic.clone(),
            late_topic: config.kafka_late_topic.clone(),
            marker_topic: config.kafka_marker_topic.clone(),
            changelog_topic: format!("{}-changelog", config.kafka_group),
            changelog: config.kafka_changelog || config.standby,
            cluster_topic: format!("{}-cluster", config.kafka_group),
            control_topic: format!("{}-control", config.kafka_group),
            transactional_id: config
                .kafka_transactional_id
                .clone()
                .unwrap_or_else(|| format!("rtap-{}", config.kafka_group)),
            options: pairs(&config.kafka_options),
            producer_options: pairs(&config.kafka_producer_options),
            health: Default::default(),
        })
    }

    /// The same settings, reporting the broker's reachability to `health`.
    pub fn reporting_to(self, health: std::sync::Arc<KafkaHealth>) -> Self {
        KafkaConfig { health, ..self }
    }
}

/// Setting up the topics failed.
#[derive(Debug, thiserror::Error)]
#[error("Kafka {what}: {why}")]
pub struct KafkaSetupError {
    pub what: String,
    pub why: String,
}

fn setup_err(what: &str) -> impl Fn(rdkafka::error::KafkaError) -> KafkaSetupError + '_ {
    move |e| KafkaSetupError {
        what: what.to_string(),
        why: e.to_string(),
    }
}

/// A client context that keeps the client's last error: librdkafka reports
/// a failed TLS handshake or SASL authentication there, while the call
/// that needed the broker only times out. A start that fails says why.
#[derive(Debug, Clone, Default)]
pub struct LastError(Arc<Mutex<Option<String>>>);

impl LastError {
    pub fn get(&self) -> Option<String> {
        self.0.lock().expect("last error lock").clone()
    }
}

impl ClientContext for LastError {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!("Kafka client: {error}: {reason}");
        *self.0.lock().expect("last error lock") = Some(reason.to_string());
    }

    /// librdkafka logs a failed TLS handshake or SASL login (`FAIL`) before
    /// (or instead of) reporting it as an error.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let level = level as i32;
        if level <= RDKafkaLogLevel::Warning as i32 {
            tracing::warn!("Kafka client: {fac}: {message}");
        }
        if level <= RDKafkaLogLevel::Error as i32 {
            *self.0.lock().expect("last error lock") = Some(message.to_string());
        }
    }
}

impl rdkafka::producer::ProducerContext for LastError {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

/// The first contact with the brokers: their metadata within 10 s, or an
/// error with what the client saw (refused connection, TLS certificate,
/// SASL credentials) and the options that decide it. A producer probes:
/// polling it serves librdkafka's log, where those failures are told.
fn reach(cfg: &KafkaConfig) -> Result<(), KafkaSetupError> {
    use rdkafka::producer::Producer;
    let probe: rdkafka::producer::BaseProducer<LastError> = cfg
        .client(&[])
        // rdkafka takes the level from the `log` crate, which the host does
        // not use (it would be off): warnings and errors are what
        // `LastError` needs.
        .set_log_level(RDKafkaLogLevel::Warning)
        .create_with_context(LastError::default())
        .map_err(setup_err("client"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let e = match probe.client().fetch_metadata(None, Duration::from_secs(1)) {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        probe.poll(Duration::from_millis(100));
        if std::time::Instant::now() < deadline {
            continue;
        }
        return Err(KafkaSetupError {
            what: format!("brokers {}", cfg.brokers),
            why: match probe.context().get() {
                Some(seen) => format!(
                    "{e}; the client saw: {seen} (TLS and SASL are set with --kafka-option security.protocol=…, ssl.ca.location=…, sasl.mechanism=…, sasl.username=…, sasl.password=…)"
                ),
                None => e.to_string(),
            },
        });
    }
}

/// Create the seed's topics if missing: events 12 partitions, metrics 6
/// (compacted), alerts 3; and rtap's: dead letters 3, late events 3, the
/// commit marker 1 (compacted), the hosts' records 1 (compacted); with the
/// changelog, the group's plugins 1 (compacted) and the changelog one per
/// key group (compacted).
pub fn ensure_topics(cfg: &KafkaConfig) -> Result<(), KafkaSetupError> {
    reach(cfg)?;
    let admin: AdminClient<DefaultClientContext> = cfg
        .client(&[])
        .create()
        .map_err(setup_err("admin client"))?;
    let mut topics = vec![
        NewTopic::new(&cfg.events_topic, 12, TopicReplication::Fixed(1)),
        NewTopic::new(&cfg.metrics_topic, 6, TopicReplication::Fixed(1))
            .set("cleanup.policy", "compact"),
        NewTopic::new(&cfg.alerts_topic, 3, TopicReplication::Fixed(1)),
        NewTopic::new(&cfg.dead_letter_topic, 3, TopicReplication::Fixed(1)),
        NewTopic::new(&cfg.late_topic, 3, TopicReplication::Fixed(1)),
        NewTopic::new(&cfg.marker_topic, 1, TopicReplication::Fixed(1))
            .set("cleanup.policy", "compact"),
        NewTopic::new(&cfg.cluster_topic, 1, TopicReplication::Fixed(1))
            .set("cleanup.policy", "compact"),
    ];
    if cfg.changelog {
        topics.push(
            NewTopic::new(&cfg.control_topic, 1, TopicReplication::Fixed(1))
                .set("cleanup.policy", "compact"),
        );
        topics.push(
            NewTopic::new(
                &cfg.changelog_topic,
                crate::state::keygroup::KEY_GROUPS as i32,
                TopicReplication::Fixed(1),
            )
            .set("cleanup.policy", "compact"),
        );
    }
    create_topics(&admin, &topics)?;
    Ok(())
}

/// Create `topics`; one that exists already is left as it is.
fn create_topics(
    admin: &AdminClient<DefaultClientContext>,
    topics: &[NewTopic],
) -> Result<(), KafkaSetupError> {
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| KafkaSetupError {
            what: "admin runtime".into(),
            why: e.to_string(),
        })?;
    let results = rt
        .block_on(admin.create_topics(topics, &opts))
        .map_err(setup_err("topic creation"))?;
    for r in results {
        match r {
            Ok(t) => tracing::info!(topic = %t, "created Kafka topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => {
                return Err(KafkaSetupError {
                    what: format!("topic {t}"),
                    why: e.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// The exchange topic (`partitions` partitions) and its tasks' marker
/// topic (one partition per task) for `--exchange kafka`, created when
/// missing; a topic with fewer partitions than needed is refused.
pub fn ensure_exchange_topics(
    cfg: &KafkaConfig,
    topic: &str,
    partitions: i32,
    marker_topic: &str,
    tasks: i32,
) -> Result<(), KafkaSetupError> {
    ensure_topic(cfg, topic, partitions)?;
    ensure_topic(cfg, marker_topic, tasks)
}

/// `topic` with at least `partitions` partitions: created when missing
/// (the broker's defaults otherwise), refused when it has fewer.
pub fn ensure_topic(
    cfg: &KafkaConfig,
    topic: &str,
    partitions: i32,
) -> Result<(), KafkaSetupError> {
    let admin: AdminClient<DefaultClientContext> = cfg
        .client(&[])
        .create()
        .map_err(setup_err("admin client"))?;
    create_topics(
        &admin,
        &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
    )?;
    let have = partitions_of(cfg, topic)?;
    if have < partitions {
        return Err(KafkaSetupError {
            what: format!("topic {topic}"),
            why: format!("has {have} partitions, {partitions} are needed"),
        });
    }
    Ok(())
}

/// The partitions `topic` has (0: it does not exist).
pub fn partitions_of(cfg: &KafkaConfig, topic: &str) -> Result<i32, KafkaSetupError> {
    use rdkafka::consumer::Consumer;
    let probe: rdkafka::consumer::BaseConsumer = cfg
        .client(&[])
        .create()
        .map_err(setup_err("a metadata client"))?;
    let meta = probe
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(setup_err("a topic's metadata"))?;
    Ok(meta
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len() as i32))
}

/// A reader's client context: a partition read to its end is what the
/// reader waits for, not an error to log (librdkafka's default context logs
/// every `PartitionEOF` at error level). The changelog's, the control
/// topic's and the cluster view's readers.
pub struct Quiet;

impl rdkafka::client::ClientContext for Quiet {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::error::KafkaError::{Global, PartitionEOF};
        use rdkafka::types::RDKafkaErrorCode;
        if !matches!(
            error,
            PartitionEOF(_) | Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            tracing::warn!("Kafka client (reader): {error}: {reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

impl KafkaConfig {
    /// A reader of `topic` (assigned by the caller, outside any group: the
    /// group id `<group>-<role>` commits nothing) that reads partitions
    /// from their start and reports their ends; `options` after these.
    /// It has the topic's metadata before it returns: assigned without it,
    /// its first records came ~500 ms later (librdkafka waits for a
    /// metadata refresh of its own); with it, after ~15 ms.
    pub fn topic_reader(
        &self,
        topic: &str,
        role: &str,
        options: &[(&str, &str)],
    ) -> Result<rdkafka::consumer::BaseConsumer<Quiet>, String> {
        use rdkafka::consumer::Consumer;
        let group = format!("{}-{role}", self.group);
        let mut defaults = vec![
            ("group.id", group.as_str()),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "true"),
            ("auto.offset.reset", "earliest"),
        ];
        defaults.extend_from_slice(options);
        let consumer: rdkafka::consumer::BaseConsumer<Quiet> = self
            .client(&defaults)
            .create_with_context(Quiet)
            .map_err(|e| e.to_string())?;
        consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        Ok(consumer)
    }
}

/// Why a call of a [`Txn`] failed.
#[derive(Debug)]
pub enum TxnError {
    /// A Kafka call failed (the producer takes no more transactions).
    Kafka {
        what: &'static str,
        source: KafkaError,
    },
    /// A call failed before: this incarnation takes no more transactions.
    Broken,
    /// Refused before any call, for this reason.
    Refused(String),
}

/// The transactional producer of one unit of work (an exchange task, a
/// key-group range), one incarnation of it: opening it fences whoever had
/// the transactional id before (the broker aborts that one's open
/// transaction); it runs one transaction at a time, each committed with
/// the unit's marker (the transaction's id as the offset of the unit's
/// partition of a marker topic, in a marker group); after a failed call it
/// takes no more, and the unit is opened again as a new incarnation.
pub struct Txn {
    producer: BaseProducer,
    marker_group: rdkafka::consumer::BaseConsumer,
    marker_meta: rdkafka::consumer::ConsumerGroupMetadata,
    marker_topic: String,
    marker_partition: i32,
    in_txn: bool,
    broken: bool,
}

impl Txn {
    /// How long a transactional call may wait for the broker.
    pub const TIMEOUT: Duration = Duration::from_secs(30);

    /// Initialise `transactional_id` (fencing its previous producer); the
    /// unit's marker is partition `marker_partition` of `marker_topic` in
    /// `marker_group`.
    pub fn open(
        client: &ClientConfig,
        transactional_id: &str,
        marker_group: &str,
        marker_topic: &str,
        marker_partition: u32,
    ) -> Result<Txn, TxnError> {
        let kafka = |what| move |source| TxnError::Kafka { what, source };
        let producer: BaseProducer = client
            .clone()
            .set("transactional.id", transactional_id)
            .set("transaction.timeout.ms", "60000")
            .set("linger.ms", "5")
            .create()
            .map_err(kafka("creating the producer"))?;
        producer
            .init_transactions(Self::TIMEOUT)
            .map_err(kafka("init_transactions"))?;
        let (marker_group, marker_meta) = Self::group(client, marker_group)?;
        Ok(Txn {
            producer,
            marker_group,
            marker_meta,
            marker_topic: marker_topic.to_string(),
            marker_partition: marker_partition as i32,
            in_txn: false,
            broken: false,
        })
    }

    /// A client of group `id` that commits nothing itself, and the group's
    /// metadata for offsets sent in a transaction.
    pub fn group(
        client: &ClientConfig,
        id: &str,
    ) -> Result<
        (
            rdkafka::consumer::BaseConsumer,
            rdkafka::consumer::ConsumerGroupMetadata,
        ),
        TxnError,
    > {
        use rdkafka::consumer::Consumer;
        let c: rdkafka::consumer::BaseConsumer = client
            .clone()
            .set("group.id", id)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|source| TxnError::Kafka {
                what: "creating a group's client",
                source,
            })?;
        let meta = c
            .group_metadata()
            .ok_or_else(|| TxnError::Refused(format!("no group metadata for `{id}`")))?;
        Ok((c, meta))
    }

    /// The marker group's client (to read the committed markers).
    pub fn marker_group(&self) -> &rdkafka::consumer::BaseConsumer {
        &self.marker_group
    }

    /// `r`, with a failure named and the producer marked broken.
    pub fn check<T>(
        &mut self,
        r: Result<T, KafkaError>,
        what: &'static str,
    ) -> Result<T, TxnError> {
        r.map_err(|source| {
            self.broken = true;
            TxnError::Kafka { what, source }
        })
    }

    /// Begin a transaction unless one is open.
    pub fn begin(&mut self) -> Result<(), TxnError> {
        if self.broken {
            return Err(TxnError::Broken);
        }
        if !self.in_txn {
            let r = self.producer.begin_transaction();
            self.check(r, "begin_transaction")?;
            self.in_txn = true;
        }
        Ok(())
    }

    /// Queue `rec` in the open transaction (begun if none is).
    pub fn send<K, P>(
        &mut self,
        rec: rdkafka::producer::BaseRecord<'_, K, P>,
    ) -> Result<(), TxnError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        self.begin()?;
        let r = send_waiting(&self.producer, rec);
        self.check(r, "sending a record")
    }

    /// Wait until the records sent so far reached the broker (still in the
    /// open transaction).
    pub fn flush(&mut self) -> Result<(), TxnError> {
        let r = flush_fast(&self.producer, Self::TIMEOUT);
        self.check(r, "flush")
    }

    /// Commit the open transaction (begun if none is) as `id`: its records
    /// first, without rdkafka's flush ([`flush_fast`]: `commit_transaction`
    /// then finds none in flight), then the marker at `id` and `offsets`
    /// of other groups in it.
    pub fn commit(
        &mut self,
        id: u64,
        offsets: &[(
            &rdkafka::TopicPartitionList,
            &rdkafka::consumer::ConsumerGroupMetadata,
        )],
    ) -> Result<(), TxnError> {
        self.begin()?;
        self.flush()?;
        let mut marker = rdkafka::TopicPartitionList::new();
        let r = marker.add_partition_offset(
            &self.marker_topic,
            self.marker_partition,
            rdkafka::Offset::Offset(id as i64),
        );
        self.check(r, "the marker")?;
        let r =
            self.producer
                .send_offsets_to_transaction(&marker, &self.marker_meta, Self::TIMEOUT);
        self.check(r, "send_offsets_to_transaction (marker)")?;
        for (tpl, meta) in offsets {
            let r = self
                .producer
                .send_offsets_to_transaction(tpl, meta, Self::TIMEOUT);
            self.check(r, "send_offsets_to_transaction")?;
        }
        let r = self.producer.commit_transaction(Self::TIMEOUT);
        self.check(r, "commit_transaction")?;
        self.in_txn = false;
        Ok(())
    }
}
