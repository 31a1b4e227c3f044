//! A Kafka-protocol broker on loopback: tansu (`$TANSU_BIN`, installed by
//! `scripts/test.sh`) with memory storage, and the clients the tests drive
//! it with (librdkafka, as the host uses).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use super::free_port;

/// The events topic, as the host names it by default.
pub const EVENTS: &str = "website-analytics-events";

/// A record as a `read_committed` consumer sees it.
#[derive(Debug, Clone)]
pub struct KafkaRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub value: Vec<u8>,
    pub headers: std::collections::BTreeMap<String, String>,
}

impl KafkaRecord {
    /// A header's value (UTF-8).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A tansu broker on a free port, stopped when dropped.
pub struct Broker {
    child: Child,
    port: u16,
    /// Processes in front of it (a TLS terminator), stopped with it.
    front: Vec<Child>,
    /// librdkafka options every client of the tests needs (TLS).
    options: Vec<(String, String)>,
    /// The proxy in front of it, if any.
    proxy: Option<Proxy>,
}

/// A TCP proxy on loopback: a thread accepts on `outer` and pumps each
/// connection to `inner` and back; while cut, it closes every connection
/// it had and each new one at once.
struct Proxy {
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    fn open(outer: u16, inner: u16) -> Proxy {
        use std::sync::atomic::Ordering;
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>> =
            std::sync::Arc::default();
        let listener = std::net::TcpListener::bind(("127.0.0.1", outer)).expect("bind the proxy");
        let (o, c) = (open.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !o.load(Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", inner)) else {
                    continue;
                };
                let mut list = c.lock().unwrap();
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
                list.push(client);
                list.push(server);
            }
        });
        Proxy { open, conns }
    }

    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn mend(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where tansu's output goes: `$RTAP_TANSU_LOG` (a file, appended; its
/// log needs `RUST_LOG` too, e.g. `tansu_broker::coordinator=debug`),
/// else nowhere.
fn log_file() -> Stdio {
    match std::env::var_os("RTAP_TANSU_LOG") {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map(Stdio::from)
            .unwrap_or_else(|e| panic!("RTAP_TANSU_LOG {}: {e}", path.to_string_lossy())),
        None => Stdio::null(),
    }
}

fn tansu(port: u16, advertised: u16, extra: &[&str]) -> Child {
    let bin = std::env::var("TANSU_BIN")
        .unwrap_or_else(|_| panic!("TANSU_BIN is not set: scripts/test.sh installs tansu"));
    let child = Command::new(bin)
        .args([
            "broker",
            "--listener-url",
            &format!("tcp://127.0.0.1:{port}"),
            "--advertised-listener-url",
            &format!("tcp://127.0.0.1:{advertised}"),
            "--storage-engine",
            "memory://tansu/",
        ])
        .args(extra)
        .stdout(log_file())
        .stderr(log_file())
        .spawn()
        .expect("start tansu");
    wait_listening(port, "tansu");
    child
}

impl Broker {
    /// Start tansu and wait until it listens.
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// Start tansu with extra options (e.g. `--authentication`).
    pub fn start_with(extra: &[&str]) -> Broker {
        let port = free_port();
        Broker {
            child: tansu(port, port, extra),
            port,
            front: Vec::new(),
            options: Vec::new(),
            proxy: None,
        }
    }

    /// tansu reached only through a TLS terminator (socat, installed by
    /// `scripts/test.sh`) with the certificate and key in `cert_and_key`
    /// (one PEM file): tansu advertises the terminator's port, so every
    /// connection of every client is TLS. The tests' own clients trust
    /// `ca` (a PEM file).
    pub fn start_behind_tls(cert_and_key: &std::path::Path, ca: &std::path::Path) -> Broker {
        let (inner, outer) = (free_port(), free_port());
        let child = tansu(inner, outer, &[]);
        let socat = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{outer},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={}",
                cert_and_key.display()
            ))
            .arg(format!("TCP:127.0.0.1:{inner}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start socat (scripts/test.sh installs it)");
        wait_listening(outer, "socat");
        Broker {
            child,
            port: outer,
            front: vec![socat],
            options: vec![
                ("security.protocol".into(), "ssl".into()),
                ("ssl.ca.location".into(), ca.display().to_string()),
            ],
            proxy: None,
        }
    }

    /// The broker's process id (for its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// tansu reached only through a TCP proxy in this process that
    /// [`Broker::cut`] breaks and [`Broker::mend`] opens again on the same
    /// port: a network cut, not a paused broker (a paused one still takes
    /// what was written to its sockets).
    pub fn start_behind_proxy() -> Broker {
        let (inner, outer) = (free_port(), free_port());
        let child = tansu(inner, outer, &[]);
        let b = Broker {
            child,
            port: outer,
            front: Vec::new(),
            options: Vec::new(),
            proxy: Some(Proxy::open(outer, inner)),
        };
        wait_listening(outer, "the proxy");
        b
    }

    /// Break every connection through the proxy and refuse new ones.
    pub fn cut(&self) {
        self.proxy.as_ref().expect("a broker behind a proxy").cut();
    }

    /// Take connections again.
    pub fn mend(&self) {
        self.proxy.as_ref().expect("a broker behind a proxy").mend();
        wait_listening(self.port, "the proxy");
    }

    /// `127.0.0.1:PORT`, for `--kafka-brokers`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A librdkafka client configuration for this broker.
    pub fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.addr());
        for (k, v) in &self.options {
            c.set(k, v);
        }
        c
    }

    /// The events topic with 12 partitions.
    pub fn create_events_topic(&self) {
        // As before: the request must succeed, the topic's own result (one
        // that exists already) is not looked at.
        let _ = self.create_topic_results(EVENTS, 12);
    }

    /// A topic with `partitions`, created now (an error if it cannot be,
    /// or exists).
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        for r in self.create_topic_results(topic, partitions) {
            r.unwrap();
        }
    }

    fn create_topic_results(
        &self,
        topic: &str,
        partitions: i32,
    ) -> Vec<rdkafka::admin::TopicResult> {
        let admin: AdminClient<DefaultClientContext> = self.client().create().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        rt.block_on(admin.create_topics([&t], &AdminOptions::new()))
            .unwrap()
    }

    /// Round-robin over the 12 partitions, in order.
    pub fn produce(&self, lines: &[String], first: usize) {
        let p: BaseProducer = self.client().create().unwrap();
        for (i, l) in lines.iter().enumerate() {
            let mut rec = BaseRecord::<(), str>::to(EVENTS)
                .payload(l.as_str())
                .partition(((first + i) % 12) as i32);
            loop {
                match p.send(rec) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        p.poll(Duration::from_millis(10));
                        rec = r;
                    }
                }
            }
        }
        p.flush(Duration::from_secs(30)).unwrap();
    }

    /// Every record of a topic: (key, JSON payload).
    pub fn read_all(&self, topic: &str, partitions: i32) -> Vec<(String, Value)> {
        let c: BaseConsumer = self
            .client()
            .set("group.id", "test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        c.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let mut quiet = Instant::now();
        while quiet.elapsed() < Duration::from_secs(3) {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                out.push((key, serde_json::from_slice(m.payload().unwrap()).unwrap()));
                quiet = Instant::now();
            }
        }
        let _ = c.unassign();
        out
    }

    /// Every committed record of a topic with its headers and raw value,
    /// read with `isolation.level=read_committed` until 3 s pass without
    /// one.
    pub fn read_records(&self, topic: &str, partitions: i32) -> Vec<KafkaRecord> {
        let c: BaseConsumer = self
            .client()
            .set("group.id", "test-reader")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        c.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let mut quiet = Instant::now();
        while quiet.elapsed() < Duration::from_secs(3) {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                let v = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                                (h.key.to_string(), v.into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(KafkaRecord {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    value: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
                quiet = Instant::now();
            }
        }
        let _ = c.unassign();
        out
    }

    /// Records into the events topic, each to the given partition; returns
    /// the offset each got, in order.
    pub fn produce_to(&self, records: &[(i32, &[u8])]) -> Vec<i64> {
        let p: BaseProducer = self.client().create().unwrap();
        let mut offsets = Vec::new();
        // One at a time, so each offset is known: few records.
        for (partition, value) in records {
            p.send(
                BaseRecord::<(), [u8]>::to(EVENTS)
                    .payload(*value)
                    .partition(*partition),
            )
            .map_err(|(e, _)| e)
            .unwrap();
            p.flush(Duration::from_secs(30)).unwrap();
            let c: BaseConsumer = self.client().create().unwrap();
            let (_, high) = c
                .fetch_watermarks(EVENTS, *partition, Duration::from_secs(10))
                .unwrap();
            offsets.push(high - 1);
        }
        offsets
    }

    /// Pause the broker (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Resume a paused broker (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill {sig} tansu failed");
    }

    /// Keyed by `user_id` (librdkafka's partitioner), as `rtap-gen` does: a
    /// user's events stay in order within one partition.
    pub fn produce_keyed(&self, lines: &[String]) {
        let p: BaseProducer = self.client().set("linger.ms", "5").create().unwrap();
        for l in lines {
            let v: Value = serde_json::from_str(l).unwrap();
            let key = v["user_id"].as_str().unwrap_or("").to_string();
            let mut rec = BaseRecord::to(EVENTS).key(&key).payload(l.as_str());
            loop {
                match p.send(rec) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        p.poll(Duration::from_millis(10));
                        rec = r;
                    }
                }
            }
        }
        p.flush(Duration::from_secs(60)).unwrap();
    }

    /// The events topic deleted and created again with `partitions`.
    pub fn delete_and_recreate_events_topic(&self, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.client().create().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(admin.delete_topics(&[EVENTS], &AdminOptions::new()))
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let t = NewTopic::new(EVENTS, partitions, TopicReplication::Fixed(1));
        rt.block_on(admin.create_topics([&t], &AdminOptions::new()))
            .unwrap();
    }

    /// The sum of the offsets `group` committed on the 12 partitions of the
    /// events topic.
    pub fn committed(&self, group: &str) -> i64 {
        let c: BaseConsumer = self.client().set("group.id", group).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..12 {
            tpl.add_partition(EVENTS, p);
        }
        let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        got.elements()
            .iter()
            .map(|e| {
                if let Offset::Offset(o) = e.offset() {
                    o
                } else {
                    0
                }
            })
            .sum()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        for f in &mut self.front {
            let _ = f.kill();
            let _ = f.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
