//! `rtap run`: one plugin over a file of events, in the host's runtime,
//! file source and pipeline: what the host would emit, on stdout, with
//! nothing that depends on the clock (a deterministic replay).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rtap_host::output::Output;
use rtap_host::pipeline::{Pipeline, Slot, TimeConfig};
use rtap_host::plugin::{Identity, Instance};
use rtap_host::source::Source;
use rtap_host::status::PluginCounters;
use serde_json::json;

pub fn run(
    component: &Path,
    input: &str,
    config: Option<&str>,
    out_of_orderness: Duration,
) -> anyhow::Result<()> {
    // The log on stderr (stdout is the outputs).
    let runtime = rtap_host::plugin::Runtime::new(Default::default())?;
    runtime.logs().spawn_publisher(show_log);
    let (loaded, _) = super::build::check(&runtime, component)?;
    let d = loaded.description.clone();
    let config = match config {
        Some(text) => super::parse_config(text)?,
        None => d.default_config.clone(),
    };
    rtap_host::plugin::config::check(&d, &config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let inst = Instance::new(loaded.clone(), &config)?;
    let time = TimeConfig {
        out_of_orderness,
        allowed_lateness: Duration::ZERO,
        idle_timeout: Duration::from_secs(10),
    };
    let identity = Identity {
        description: d.clone(),
        hash: loaded.hash.clone(),
    };
    let slot = Slot::new(
        identity,
        Box::new(inst),
        Arc::new(PluginCounters::default()),
        time.allowed_lateness,
    );
    let mut pipeline = Pipeline::new(vec![slot], time);
    let mut source = rtap_host::source::file::FileSource::open(input)
        .with_context(|| format!("--input {input}"))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    while let Some(batch) = source.next_batch(4096)? {
        pipeline.process(Arc::new(batch));
        emit(&mut pipeline, &mut out)?;
    }
    pipeline.finish();
    emit(&mut pipeline, &mut out)?;
    use std::io::Write;
    out.flush()?;
    // Let the last log lines reach stderr.
    std::thread::sleep(Duration::from_millis(50));
    Ok(())
}

/// A plugin log line on stderr.
pub fn show_log(l: &rtap_host::plugin::log::LogLine) {
    let level = serde_json::to_value(l.level).unwrap_or_default();
    eprintln!(
        "[{} {}] {}",
        l.plugin,
        level.as_str().unwrap_or(""),
        l.message
    );
}

/// Metrics and alerts as the host writes them; late events and dead
/// letters without their wall-clock time.
fn emit(p: &mut Pipeline, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    for o in std::mem::take(&mut p.outputs) {
        if !matches!(o, Output::Plugin(_)) {
            writeln!(out, "{}", o.to_json())?;
        }
    }
    for l in std::mem::take(&mut p.late) {
        let mut v = serde_json::to_value(&l)?;
        v["type"] = json!("late");
        writeln!(out, "{v}")?;
    }
    for d in std::mem::take(&mut p.dead) {
        let mut v = serde_json::to_value(&d)?;
        if let Some(o) = v.as_object_mut() {
            o.remove("time");
        }
        v["type"] = json!("dead_letter");
        writeln!(out, "{v}")?;
    }
    Ok(())
}
