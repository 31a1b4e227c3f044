//! Write the simulator's events as JSONL — test inputs and benchmark files —
//! or produce them into Kafka in real time (the seed's event simulator).
//!
//! `rtap-gen --events 1000000 --seed 7 --rate 100000 > events.jsonl`
//! `rtap-gen --kafka-brokers localhost:9092 --rate 500 --events 0`

use std::io::{BufWriter, Write};
use std::time::{Duration, Instant};

use clap::Parser;
use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rtap_host::source::simulator::{SimConfig, Simulator};

#[derive(Parser)]
#[command(
    about = "Simulated website-analytics events: JSONL on stdout, or into Kafka in real time"
)]
struct Args {
    /// Number of events; 0 = forever (Kafka).
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Events per second of event time (the incident cycle follows it).
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Event time of the first event, ms since the epoch (JSONL; Kafka uses now).
    #[arg(long, default_value_t = 1_764_000_000_000)]
    start_ms: i64,
    /// Produce into Kafka (paced in real time, keyed by user) instead of stdout.
    #[arg(long, env = "KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    #[arg(long, default_value = "website-analytics-events")]
    topic: String,
    /// Kafka: produce as fast as possible (event time still advances at
    /// `--rate`): a backlog for throughput tests.
    #[arg(long)]
    unpaced: bool,
    /// Kafka: a librdkafka producer option over the defaults (snappy,
    /// `linger.ms=5`, `batch.size=16384`, `delivery.report.only.error=true`);
    /// repeatable.
    #[arg(long = "kafka-option", value_name = "KEY=VALUE")]
    kafka_options: Vec<String>,
    /// Kafka: hold each partition's events and hand them to the producer
    /// once every MS milliseconds, the partitions' turns evenly spaced over
    /// the period (partition p at (p+1)·MS/N). The broker gets as many record
    /// batches as with `linger.ms=MS`, but one partition's at a time instead
    /// of every partition's at once. Records are keyed by user and the
    /// partition is chosen from the key (a stable hash), as the default
    /// partitioner does.
    #[arg(long, value_name = "MS")]
    stagger_ms: Option<u64>,
}

/// Events generated per call while staggering (at most).
const STAGGER_CHUNK: usize = 4096;

/// One partition's held events: keys and lines back to back in `data`.
#[derive(Default)]
struct Held {
    data: Vec<u8>,
    /// (key end, line end) in `data`; each key starts where the previous
    /// line ended.
    ends: Vec<(u32, u32)>,
}

/// The events held per partition and when each partition's turn comes.
struct Stagger {
    held: Vec<Held>,
    due: Vec<Instant>,
    period: Duration,
}

impl Stagger {
    fn new(partitions: usize, period: Duration) -> Self {
        let now = Instant::now();
        Stagger {
            held: (0..partitions).map(|_| Held::default()).collect(),
            due: (0..partitions)
                .map(|p| now + period * (p as u32 + 1) / partitions as u32)
                .collect(),
            period,
        }
    }

    /// A user's partition: the same for every run and every generator.
    fn partition_of(&self, key: &str) -> usize {
        rtap_host::source::simulator::partition_of(key, self.held.len())
    }

    fn hold(&mut self, key: &str, line: &str) {
        let p = self.partition_of(key);
        let h = &mut self.held[p];
        h.data.extend_from_slice(key.as_bytes());
        let k = h.data.len() as u32;
        h.data.extend_from_slice(line.as_bytes());
        h.ends.push((k, h.data.len() as u32));
    }

    /// The partitions whose turn has come by `now`, each given its next
    /// turn; a late turn keeps the partition's phase.
    fn take_due(&mut self, now: Instant) -> Vec<usize> {
        let mut due = Vec::new();
        for (p, at) in self.due.iter_mut().enumerate() {
            if *at > now {
                continue;
            }
            while *at <= now {
                *at += self.period;
            }
            due.push(p);
        }
        due
    }

    /// Hand the partitions whose turn has come to the producer.
    fn send_due(&mut self, producer: &BaseProducer<Failures>, topic: &str) {
        let due = self.take_due(Instant::now());
        self.send(producer, topic, due);
    }

    /// Hand every partition's held events to the producer (at the end).
    fn send_all(&mut self, producer: &BaseProducer<Failures>, topic: &str) {
        self.send(producer, topic, 0..self.held.len());
    }

    fn send(
        &mut self,
        producer: &BaseProducer<Failures>,
        topic: &str,
        partitions: impl IntoIterator<Item = usize>,
    ) {
        for p in partitions {
            let h = &mut self.held[p];
            let mut start = 0usize;
            for &(k, end) in &h.ends {
                let (k, end) = (k as usize, end as usize);
                send_record(
                    producer,
                    BaseRecord::to(topic)
                        .partition(p as i32)
                        .key(&h.data[start..k])
                        .payload(&h.data[k..end]),
                );
                start = end;
            }
            h.data.clear();
            h.ends.clear();
        }
    }
}

/// Hand a record to librdkafka, waiting while its queue is full.
fn send_record<K: ToBytes + ?Sized, P: ToBytes + ?Sized>(
    producer: &BaseProducer<Failures>,
    mut rec: BaseRecord<'_, K, P>,
) {
    loop {
        match producer.send(rec) {
            Ok(()) => return,
            Err((_, r)) => {
                producer.poll(Duration::from_millis(10));
                rec = r;
            }
        }
    }
}

/// Counts the messages librdkafka failed to deliver. Only failures are
/// reported (`delivery.report.only.error`): a report per delivered message
/// cost the generator ~8 % of its CPU at 100 000 events/s, CPU the host under
/// test then lacked on a shared machine.
#[derive(Default)]
struct Failures(AtomicU64);

impl ClientContext for Failures {}

impl ProducerContext for Failures {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result
            && self.0.fetch_add(1, Ordering::Relaxed) == 0
        {
            eprintln!("rtap-gen: first delivery failure: {e}");
        }
    }
}

fn main() -> std::io::Result<()> {
    let a = Args::parse();
    let limit = (a.events > 0).then_some(a.events);
    let Some(brokers) = &a.kafka_brokers else {
        let mut sim = Simulator::new(SimConfig {
            rate: a.rate,
            seed: a.seed,
            start_ms: Some(a.start_ms),
            unpaced: true,
            limit,
            partitions: 1,
        });
        let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        let mut result = Ok(());
        while result.is_ok()
            && sim.next_lines(8192, |_, _, line| {
                if result.is_ok() {
                    result = out
                        .write_all(line.as_bytes())
                        .and_then(|()| out.write_all(b"\n"));
                }
            }) > 0
        {}
        result?;
        return out.flush();
    };
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("compression.type", "snappy")
        .set("linger.ms", "5")
        .set("batch.size", "16384")
        .set("delivery.report.only.error", "true");
    for o in &a.kafka_options {
        let Some((k, v)) = o.split_once('=') else {
            return Err(std::io::Error::other(format!(
                "--kafka-option {o}: expected KEY=VALUE"
            )));
        };
        config.set(k, v);
    }
    let producer: BaseProducer<Failures> = config
        .create_with_context(Failures::default())
        .map_err(std::io::Error::other)?;
    let mut sim = Simulator::new(SimConfig {
        rate: a.rate,
        seed: a.seed,
        start_ms: None,
        unpaced: a.unpaced,
        limit,
        partitions: 1,
    });
    let mut stagger = match a.stagger_ms {
        Some(ms) => {
            let md = producer
                .client()
                .fetch_metadata(Some(&a.topic), Duration::from_secs(10))
                .map_err(std::io::Error::other)?;
            let n = md.topics().first().map_or(0, |t| t.partitions().len());
            if n == 0 {
                return Err(std::io::Error::other(format!(
                    "--stagger-ms: topic {} has no partitions (create it first, e.g. by starting the host)",
                    a.topic
                )));
            }
            Some(Stagger::new(n, Duration::from_millis(ms.max(1))))
        }
        None => None,
    };
    let mut sent = 0u64;
    loop {
        // The simulator's lines go out as they are: no parse per event.
        let n = match &mut stagger {
            Some(st) => {
                let n = sim.next_lines(STAGGER_CHUNK, |_, key, line| st.hold(key, line));
                st.send_due(&producer, &a.topic);
                if 0 < n && n < STAGGER_CHUNK && !a.unpaced {
                    // Caught up: the turns are what is timed, the events can
                    // wait a millisecond instead of being generated one by one.
                    std::thread::sleep(Duration::from_millis(1));
                }
                n
            }
            None => sim.next_lines(1024, |_, key, line| {
                send_record(&producer, BaseRecord::to(&a.topic).key(key).payload(line))
            }),
        } as u64;
        if n == 0 {
            break;
        }
        sent += n;
        producer.poll(Duration::ZERO);
        if sent % 100_000 < n {
            let failed = producer.context().0.load(Ordering::Relaxed);
            eprintln!(
                "rtap-gen: {sent} events produced to {}, {failed} failed",
                a.topic
            );
        }
    }
    if let Some(st) = &mut stagger {
        st.send_all(&producer, &a.topic);
    }
    producer
        .flush(Duration::from_secs(30))
        .map_err(std::io::Error::other)?;
    match producer.context().0.load(Ordering::Relaxed) {
        0 => Ok(()),
        failed => Err(std::io::Error::other(format!(
            "{failed} of {sent} events were not delivered to {}",
            a.topic
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_are_spread_over_the_period_and_keep_their_phase() {
        let period = Duration::from_millis(120);
        let mut st = Stagger::new(12, period);
        let t0 = st.due[0] - period / 12;
        // One partition's turn every 10 ms, in partition order.
        for p in 0..12u32 {
            assert_eq!(st.due[p as usize], t0 + Duration::from_millis(10) * (p + 1));
        }
        assert_eq!(st.take_due(t0), Vec::<usize>::new());
        assert_eq!(st.take_due(t0 + Duration::from_millis(25)), vec![0, 1]);
        assert_eq!(
            st.take_due(t0 + Duration::from_millis(25)),
            Vec::<usize>::new()
        );
        // Three periods late: every partition once, each still on its own
        // 10 ms step.
        let late = t0 + period * 3 + Duration::from_millis(5);
        assert_eq!(st.take_due(late), (0..12).collect::<Vec<_>>());
        for (p, at) in st.due.iter().enumerate() {
            assert!(*at > late && *at <= late + period);
            assert_eq!((*at - t0).as_millis() % 120, (p as u128 + 1) * 10 % 120);
        }
    }

    #[test]
    fn a_user_always_goes_to_one_partition_and_users_spread() {
        let mut st = Stagger::new(12, Duration::from_millis(200));
        let mut count = [0usize; 12];
        for u in 0..12_000 {
            let key = format!("user-{u}");
            let p = st.partition_of(&key);
            assert_eq!(p, st.partition_of(&key));
            count[p] += 1;
        }
        assert!(count.iter().all(|&n| (800..1200).contains(&n)), "{count:?}");
        st.hold("user-1", "{\"a\":1}");
        st.hold("user-1", "{\"b\":2}");
        let h = &st.held[st.partition_of("user-1")];
        assert_eq!(h.ends, vec![(6, 13), (19, 26)]);
        assert_eq!(&h.data[..], b"user-1{\"a\":1}user-1{\"b\":2}");
    }
}
