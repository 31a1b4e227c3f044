//! Write the simulator's events as JSONL: test inputs and benchmark files.
//!
//! `rtap-gen --events 1000000 --seed 7 --rate 100000 > events.jsonl`

use std::io::{BufWriter, Write};

use clap::Parser;
use rtap_host::source::Source;
use rtap_host::source::simulator::{SimConfig, Simulator};

#[derive(Parser)]
#[command(about = "Write simulated website-analytics events as JSONL to stdout")]
struct Args {
    /// Number of events.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Events per second of event time (the incident cycle follows it).
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Event time of the first event, ms since the epoch.
    #[arg(long, default_value_t = 1_764_000_000_000)]
    start_ms: i64,
}

fn main() -> std::io::Result<()> {
    let a = Args::parse();
    let mut sim = Simulator::new(SimConfig {
        rate: a.rate,
        seed: a.seed,
        start_ms: Some(a.start_ms),
        unpaced: true,
        limit: Some(a.events),
    });
    let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    while let Some(batch) = sim.next_batch(8192).map_err(std::io::Error::other)? {
        for ev in &batch.events {
            out.write_all(batch.raw(ev).as_bytes())?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()
}
