//! Write the simulator's events as JSONL — test inputs and benchmark files —
//! or produce them into Kafka in real time (the seed's event simulator).
//!
//! `rtap-gen --events 1000000 --seed 7 --rate 100000 > events.jsonl`
//! `rtap-gen --kafka-brokers localhost:9092 --rate 500 --events 0`

use std::io::{BufWriter, Write};
use std::time::Duration;

use clap::Parser;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rtap_host::event::TextField;
use rtap_host::source::Source;
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
    /// `linger.ms=5`, `batch.size=16384`); repeatable.
    #[arg(long = "kafka-option", value_name = "KEY=VALUE")]
    kafka_options: Vec<String>,
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
        while let Some(batch) = sim.next_batch(8192).map_err(std::io::Error::other)? {
            for ev in &batch.events {
                out.write_all(batch.raw(ev).as_bytes())?;
                out.write_all(b"\n")?;
            }
        }
        return out.flush();
    };
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("compression.type", "snappy")
        .set("linger.ms", "5")
        .set("batch.size", "16384");
    for o in &a.kafka_options {
        let Some((k, v)) = o.split_once('=') else {
            return Err(std::io::Error::other(format!(
                "--kafka-option {o}: expected KEY=VALUE"
            )));
        };
        config.set(k, v);
    }
    let producer: BaseProducer = config.create().map_err(std::io::Error::other)?;
    let mut sim = Simulator::new(SimConfig {
        rate: a.rate,
        seed: a.seed,
        start_ms: None,
        unpaced: a.unpaced,
        limit,
    });
    let mut sent = 0u64;
    while let Some(batch) = sim.next_batch(1024).map_err(std::io::Error::other)? {
        for ev in &batch.events {
            let key = batch.text(ev, TextField::UserId).unwrap_or("");
            let mut rec = BaseRecord::to(&a.topic).key(key).payload(batch.raw(ev));
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        producer.poll(Duration::from_millis(10));
                        rec = r;
                    }
                }
            }
        }
        sent += batch.events.len() as u64;
        producer.poll(Duration::ZERO);
        if sent % 100_000 < batch.events.len() as u64 {
            eprintln!("rtap-gen: {sent} events produced to {}", a.topic);
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .map_err(std::io::Error::other)
}
