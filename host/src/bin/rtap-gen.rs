//! Write the simulator's events as JSONL — test inputs and benchmark files —
//! or produce them into Kafka in real time (the seed's event simulator).
//!
//! `rtap-gen --events 1000000 --seed 7 --rate 100000 > events.jsonl`
//! `rtap-gen --kafka-brokers localhost:9092 --rate 500 --events 0`

use std::io::{BufWriter, Write};
use std::time::Duration;

use clap::Parser;
use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
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
    });
    let mut sent = 0u64;
    loop {
        // The simulator's lines go out as they are: no parse per event.
        let n = sim.next_lines(1024, |_, key, line| {
            let mut rec = BaseRecord::to(&a.topic).key(key).payload(line);
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        producer.poll(Duration::from_millis(10));
                        rec = r;
                    }
                }
            }
        }) as u64;
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
