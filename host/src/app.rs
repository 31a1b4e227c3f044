//! Start-up: load and check the plugins, restore the last checkpoint, open
//! the source and the sinks, start the server, and run. Any problem found at
//! start is one clear message naming what and where, and a non-zero exit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::api::{self, AppState};
use crate::config::{Config, SinkSpec, SourceSpec};
use crate::pipeline::output::now_ms;
use crate::pipeline::status::{PluginCounters, PluginMeta, Registry};
use crate::pipeline::{Pipeline, Slot, TimeConfig, lifecycle, output::Output};
use crate::plugin::{Identity, Instance, Limits, Runtime};
use crate::runner::{Exit, Runner};
use crate::sink::{Hub, JsonlWriter};
use crate::source::file::FileSource;
use crate::source::simulator::{SimConfig, Simulator};
use crate::source::{self, Source};
use crate::state::CheckpointStore;

/// Exit codes.
pub const EXIT_OK: i32 = 0;
pub const EXIT_START: i32 = 2;
pub const EXIT_RUN: i32 = 1;

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,wasmtime=warn,cranelift=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

/// Run the host; returns the process exit code.
pub fn main(config: Config) -> i32 {
    init_logging(&config.log_format);
    match run(config) {
        Ok(_) => EXIT_OK,
        Err(Failure::Start(msg)) => {
            tracing::error!("{msg}");
            eprintln!("error: {msg}");
            EXIT_START
        }
        Err(Failure::Run(msg)) => {
            tracing::error!("{msg}");
            eprintln!("error: {msg}");
            EXIT_RUN
        }
    }
}

enum Failure {
    Start(String),
    Run(String),
}

fn start<E: std::fmt::Display>(e: E) -> Failure {
    Failure::Start(e.to_string())
}

fn run(config: Config) -> Result<Exit, Failure> {
    let limits = Limits {
        call_timeout: config.plugin_timeout.0,
        memory_bytes: config.plugin_memory.0,
        grants: config.allow_capabilities.clone(),
        ..Limits::default()
    };
    let runtime = Runtime::new(limits).map_err(start)?;
    let started = std::time::Instant::now();
    let loaded = crate::plugin::load_dir(&runtime, &config.plugins).map_err(start)?;
    tracing::info!(plugins = loaded.len(), took_ms = started.elapsed().as_millis() as u64, dir = %config.plugins.display(), "plugins compiled");
    for c in &config.plugin_configs {
        if !loaded.iter().any(|l| l.description.name == c.name) {
            return Err(Failure::Start(format!(
                "--plugin-config names `{}`, which is not a loaded plugin",
                c.name
            )));
        }
    }

    let time = TimeConfig {
        out_of_orderness: config.out_of_orderness.0,
        allowed_lateness: config.allowed_lateness.0,
    };
    let registry = Arc::new(Registry::default());
    let mut slots = Vec::new();
    let mut events = Vec::new();
    for l in loaded {
        let l = Arc::new(l);
        let d = &l.description;
        let cfg = config
            .plugin_config(&d.name)
            .cloned()
            .unwrap_or_else(|| d.default_config.clone());
        let inst = Instance::new(l.clone(), &cfg).map_err(start)?;
        let counters = Arc::new(PluginCounters::default());
        let meta = PluginMeta {
            name: d.name.clone(),
            version: d.version.clone(),
            kind: d.kind,
            input: d.input,
            key_by: d.key_by_text.clone(),
            window: d.window,
            fields: d.fields.iter().map(|f| format!("{f:?}")).collect(),
            metrics: d
                .metrics
                .iter()
                .map(|m| format!("{}/{}", m.plugin, m.name))
                .collect(),
            hash: l.hash.clone(),
            size_bytes: l.size,
            state_schema: d.state_schema,
            loaded_at: now_ms(),
            config: cfg,
            config_schema: d.config_schema.clone(),
            previous: None,
        };
        registry
            .plugins
            .lock()
            .expect("registry lock")
            .push((meta, counters.clone()));
        let identity = Identity {
            description: d.clone(),
            hash: l.hash.clone(),
        };
        let slot = Slot::new(identity, Box::new(inst), counters, &time);
        events.push(lifecycle(
            &slot,
            "loaded",
            format!("{} {} loaded", d.name, d.version),
        ));
        slots.push(slot);
    }
    let mut pipeline = Pipeline::new(slots, time);
    pipeline
        .outputs
        .extend(events.into_iter().map(Output::Plugin));

    let mut source: Box<dyn Source> = match &config.source {
        SourceSpec::Simulator => Box::new(Simulator::new(SimConfig {
            rate: config.rate,
            seed: config.seed,
            start_ms: config.sim_start_ms,
            unpaced: config.unpaced,
            limit: None,
        })),
        SourceSpec::File(path) => Box::new(FileSource::open(path).map_err(start)?),
    };
    if !(config.rate > 0.0) {
        return Err(Failure::Start(format!(
            "--rate must be positive, got {}",
            config.rate
        )));
    }

    // Restore the last checkpoint.
    let checkpoints = CheckpointStore::new(&config.data_dir).map_err(start)?;
    let mut position = Default::default();
    let mut checkpoint_id = 0;
    if config.no_restore {
        checkpoints.clear().map_err(start)?;
    } else if let Some(cp) = checkpoints.load().map_err(start)? {
        if cp.source != source.name() {
            return Err(Failure::Start(format!(
                "the checkpoint in {} was taken reading `{}`, not `{}`: run with --no-restore to start fresh, or use another --data-dir",
                config.data_dir.display(),
                cp.source,
                source.name()
            )));
        }
        for pc in cp.plugins {
            let Some(slot) = pipeline.slots.iter_mut().find(|s| *s.name == pc.name) else {
                tracing::warn!(plugin = %pc.name, "checkpointed plugin is no longer loaded; its state is dropped");
                continue;
            };
            let d = &slot.identity.description;
            if d.state_schema != pc.state_schema {
                return Err(Failure::Start(format!(
                    "plugin `{}`: the checkpoint holds state schema {} (version {}, {}), the loaded version {} has schema {}: start with --no-restore to reset state",
                    pc.name,
                    pc.state_schema,
                    pc.version,
                    &pc.hash[..12],
                    d.version,
                    d.state_schema
                )));
            }
            if slot.identity.hash != pc.hash {
                tracing::info!(plugin = %pc.name, from = %pc.version, to = %d.version, "restoring state written by another build (same state schema)");
            }
            slot.restore(pc.state).map_err(Failure::Start)?;
        }
        pipeline.wm = cp.watermark;
        position = cp.position;
        checkpoint_id = cp.id;
        source.seek(cp.position).map_err(start)?;
        registry
            .stats
            .last_checkpoint
            .store(cp.taken_at, Ordering::Relaxed);
        tracing::info!(id = cp.id, source = %cp.source, position = cp.position.seq, "restored checkpoint");
    }

    let open = |p: &str| JsonlWriter::open(p).map_err(start);
    let sinks = config
        .sinks
        .iter()
        .map(|s| match s {
            SinkSpec::Jsonl(p) => open(p),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let dead = open(&config.dead_letter_path())?;
    let late = open(&config.late_path())?;

    let stop = Arc::new(AtomicBool::new(false));
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("rtap-io")
        .build()
        .map_err(start)?;
    let hub = Hub::new();
    if !config.no_server {
        let state = AppState {
            registry: registry.clone(),
            hub: hub.clone(),
            source: source.name().to_string(),
            checkpoint_interval: config.checkpoint_interval.0,
        };
        let app = api::router(state, config.dashboard_dir.clone());
        let listener = tokio
            .block_on(tokio::net::TcpListener::bind(config.listen))
            .map_err(|e| Failure::Start(format!("cannot listen on {}: {e}", config.listen)))?;
        tracing::info!(addr = %config.listen, "dashboard, /ws, /api and /health listening");
        tokio.spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("http server stopped: {e}");
            }
        });
    }
    let s = stop.clone();
    tokio.spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        tracing::info!("stopping: checkpointing");
        s.store(true, Ordering::Relaxed);
    });

    let source_name = source.name().to_string();
    let rx = source::spawn(source, config.batch_size.max(1), 4, config.max_events);
    let runner = Runner {
        pipeline,
        source_name,
        sinks,
        dead,
        late,
        hub: (!config.no_server).then_some(hub),
        registry,
        checkpoints,
        interval: config.checkpoint_interval.0,
        position,
        checkpoint_id,
        stop,
    };
    let exit = runner.run(rx).map_err(|e| Failure::Run(e.to_string()))?;
    tracing::info!(?exit, "done");
    tokio.shutdown_timeout(std::time::Duration::from_millis(200));
    Ok(exit)
}
