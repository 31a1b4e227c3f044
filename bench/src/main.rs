//! `rtap-bench`: push a JSONL file through the host pipeline twice per round —
//! once with the plugins as sandboxed Wasm components, once with the same
//! plugin crates compiled natively into this binary — and report events/s per
//! core and the Wasm/native ratio. Both paths share everything else: the file
//! source and decoder, windowing, state handling, output records. Only the
//! plugin boundary differs.
//!
//! ```text
//! rtap-bench --input events.jsonl --wasm-dir plugins --rounds 3
//! ```

mod native;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rtap_host::pipeline::{Pipeline, Slot, TimeConfig};
use rtap_host::plugin::{Identity, Instance, Limits, Runtime};
use rtap_host::source::file::FileSource;
use rtap_host::source::{self, SourceMsg};
use rtap_host::status::PluginCounters;

/// The allocator of the host binary, so both measure the same thing.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// JSONL events (make one with `rtap-gen`).
    #[arg(long)]
    input: PathBuf,
    /// Folder with the built plugin components.
    #[arg(long, default_value = "plugins")]
    wasm_dir: PathBuf,
    /// Plugin sets to run, `all` or comma-separated names; repeatable.
    #[arg(long = "set", default_values = ["all", "page-views"])]
    sets: Vec<String>,
    /// Rounds (median reported); paths alternate within a round.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value_t = 4096)]
    batch_size: usize,
    /// Take every plugin's state delta (the changed keys, encoded, as a
    /// commit does) after each this many events, timed apart; 10 000 is
    /// the Kafka path's 100 ms commit at 100 000 events/s. 0 (the
    /// default, as in the published Wasm/native figures): never.
    #[arg(long, default_value_t = 0)]
    commit_every: u64,
    /// Only this path (`wasm` or `native`); both by default. One path on a
    /// large input (9 M events reach the output phase) compares two host
    /// builds on the processing thread's CPU.
    #[arg(long, value_parser = ["wasm", "native"])]
    only: Option<String>,
}

/// CPU seconds (user + system) so far of this process (`self`) or of the
/// calling thread (`thread-self`).
fn cpu_seconds(of: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{of}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of /proc/PID/stat (utime, stime) are 12 and 13 after the ")".
    (ticks(11) + ticks(12)) / 100.0
}

struct Run {
    events: u64,
    outputs: u64,
    wall: Duration,
    cpu: f64,
    /// Of `cpu`: the processing (this) thread's, without the source's
    /// reading and decoding.
    processing: f64,
    /// Of `wall`: taking the state deltas.
    commits: Duration,
}

fn run(slots: Vec<Slot>, input: &Path, batch: usize, commit_every: u64) -> anyhow::Result<Run> {
    let time = TimeConfig {
        out_of_orderness: Duration::from_secs(2),
        allowed_lateness: Duration::ZERO,
        idle_timeout: Duration::from_secs(10),
    };
    let mut pipeline = Pipeline::new(slots, time);
    let src = FileSource::open(&input.display().to_string())?;
    let cpu0 = cpu_seconds("self");
    let thread0 = cpu_seconds("thread-self");
    let t0 = Instant::now();
    let rx = source::spawn(Box::new(src), batch, 4, None);
    let (mut events, mut outputs) = (0u64, 0u64);
    let mut committed = 0u64;
    let mut commits = Duration::ZERO;
    loop {
        match rx.recv()? {
            SourceMsg::Batch(b) => {
                events += b.events.len() as u64;
                pipeline.process(std::sync::Arc::new(b));
                if commit_every > 0 && events - committed >= commit_every {
                    let t = Instant::now();
                    for s in &mut pipeline.slots {
                        std::hint::black_box(s.state_delta());
                    }
                    commits += t.elapsed();
                    committed = events;
                }
            }
            SourceMsg::End { .. } => {
                pipeline.finish();
                break;
            }
            SourceMsg::Failed(e) => bail!(e),
        }
        // Serialise outputs as the JSONL sink would.
        for o in pipeline.outputs.drain(..) {
            std::hint::black_box(o.to_json());
            outputs += 1;
        }
        pipeline.dead.clear();
        pipeline.late.clear();
    }
    for o in pipeline.outputs.drain(..) {
        std::hint::black_box(o.to_json());
        outputs += 1;
    }
    Ok(Run {
        events,
        outputs,
        wall: t0.elapsed(),
        cpu: cpu_seconds("self") - cpu0,
        processing: cpu_seconds("thread-self") - thread0,
        commits,
    })
}

fn wasm_slots(runtime: &Runtime, dir: &Path, names: &[String]) -> anyhow::Result<Vec<Slot>> {
    let time = TimeConfig {
        out_of_orderness: Duration::from_secs(2),
        allowed_lateness: Duration::ZERO,
        idle_timeout: Duration::from_secs(10),
    };
    let mut slots = Vec::new();
    for n in names {
        let path = dir.join(format!("{n}.wasm"));
        let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        let loaded = Arc::new(runtime.load(&bytes, &path.display().to_string())?);
        let cfg = loaded.description.default_config.clone();
        let identity = Identity {
            description: loaded.description.clone(),
            hash: loaded.hash.clone(),
        };
        let inst = Instance::new(loaded, &cfg)?;
        slots.push(Slot::new(
            identity,
            Box::new(inst),
            Arc::new(PluginCounters::default()),
            time.allowed_lateness,
        ));
    }
    Ok(slots)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    // As the host with its default 10 s checkpoint interval.
    rtap_host::alloc::tune(Duration::from_secs(10));
    let a = Args::parse();
    let runtime = Runtime::new(Limits::default())?;
    println!(
        "| plugins | path | events | outputs | wall s | CPU s | processing CPU s | commits s | events/s (wall) | events/s per core |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut summary = Vec::new();
    for set in &a.sets {
        let names: Vec<String> = if set == "all" {
            native::ALL.iter().map(|s| s.to_string()).collect()
        } else {
            set.split(',').map(str::to_string).collect()
        };
        let (mut w_rates, mut n_rates) = (Vec::new(), Vec::new());
        let mut outs = (0, 0);
        for _ in 0..a.rounds {
            for wasm in [true, false] {
                if a.only
                    .as_deref()
                    .is_some_and(|p| p != if wasm { "wasm" } else { "native" })
                {
                    continue;
                }
                let slots = if wasm {
                    wasm_slots(&runtime, &a.wasm_dir, &names)?
                } else {
                    native::slots(&names)?
                };
                let r = run(slots, &a.input, a.batch_size, a.commit_every)?;
                let per_core = r.events as f64 / r.cpu;
                let path = if wasm { "wasm" } else { "native" };
                println!(
                    "| {set} | {path} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} |",
                    r.events,
                    r.outputs,
                    r.wall.as_secs_f64(),
                    r.cpu,
                    r.processing,
                    r.commits.as_secs_f64(),
                    r.events as f64 / r.wall.as_secs_f64(),
                    per_core
                );
                if wasm {
                    w_rates.push(per_core);
                    outs.0 = r.outputs;
                } else {
                    n_rates.push(per_core);
                    outs.1 = r.outputs;
                }
            }
        }
        if a.only.is_none() && outs.0 != outs.1 {
            bail!(
                "{set}: the Wasm path emitted {} outputs, the native path {}",
                outs.0,
                outs.1
            );
        }
        if a.only.is_none() {
            summary.push((set.clone(), median(w_rates), median(n_rates)));
        }
    }
    if summary.is_empty() {
        return Ok(());
    }
    println!();
    println!(
        "| plugins | Wasm events/s per core (median) | native events/s per core (median) | Wasm / native |"
    );
    println!("|---|---:|---:|---:|");
    for (set, w, n) in summary {
        println!("| {set} | {w:.0} | {n:.0} | {:.0} % |", 100.0 * w / n);
    }
    Ok(())
}
