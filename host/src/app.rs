//! Start-up: load and check the plugins, restore the last checkpoint, open
//! the source and the sinks, start the server, and run. Any problem found at
//! start is one clear message naming what and where, and a non-zero exit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::api::admin::RateLimit;
use crate::api::{self, AppState};
use crate::config::{Config, SinkSpec, SourceSpec};
use crate::control::{Control, meta_of, watch};
use crate::pipeline::status::{PluginCounters, Registry};
use crate::pipeline::{Pipeline, Slot, TimeConfig, lifecycle, output::Output};
use crate::plugin::{Identity, Instance, Limits, Runtime};
use crate::runner::{Exit, Runner};
use crate::sink::influx::{InfluxConfig, InfluxSink};
use crate::sink::kafka::{Committer, KafkaSink};
use crate::sink::{Hub, JsonlWriter};
use crate::source::file::FileSource;
use crate::source::kafka::{KafkaConfig, KafkaSource};
use crate::source::simulator::{SimConfig, Simulator};
use crate::source::{self, Source};
use crate::state::{StateStore, StoreConfig};

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

/// 128 random bits from the kernel, hex.
fn generate_token() -> String {
    let mut buf = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut buf);
    }
    hex::encode(buf)
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
    let mut runtime = Runtime::new(limits).map_err(start)?;
    if !config.no_compile_cache {
        runtime.cache_compiled(config.data_dir.join("compiled"));
    }
    let runtime = Arc::new(runtime);
    let started = std::time::Instant::now();
    let loaded = crate::plugin::load_dir(&runtime, &config.plugins).map_err(start)?;
    tracing::info!(plugins = loaded.len(), took_ms = started.elapsed().as_millis() as u64, dir = %config.plugins.display(), "plugins compiled");
    for c in &config.plugin_configs {
        if !loaded.iter().any(|(l, _)| l.description.name == c.name) {
            return Err(Failure::Start(format!(
                "--plugin-config names `{}`, which is not a loaded plugin",
                c.name
            )));
        }
    }

    let time = TimeConfig {
        out_of_orderness: config.out_of_orderness.0,
        allowed_lateness: config.allowed_lateness.0,
        idle_timeout: config.idle_timeout.0,
    };
    let registry = Arc::new(Registry::default());
    let hub = Hub::new();
    let (commands_tx, commands) = std::sync::mpsc::channel();
    let control = Arc::new(Control::new(
        runtime.clone(),
        commands_tx,
        registry.clone(),
        hub.clone(),
        config.plugins.clone(),
    ));
    let mut slots = Vec::new();
    let mut events = Vec::new();
    for (l, path) in loaded {
        let l = Arc::new(l);
        let d = &l.description;
        let cfg = config
            .plugin_config(&d.name)
            .cloned()
            .unwrap_or_else(|| d.default_config.clone());
        let inst = Instance::new(l.clone(), &cfg).map_err(start)?;
        let counters = Arc::new(PluginCounters::default());
        let meta = meta_of(&l, cfg.clone(), None);
        registry
            .plugins
            .lock()
            .expect("registry lock")
            .push((meta, counters.clone()));
        control.register(l.clone(), cfg.clone(), Some(path), counters.clone());
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

    let kafka = config.kafka_brokers.as_ref().map(|brokers| KafkaConfig {
        brokers: brokers.clone(),
        group: config.kafka_group.clone(),
        events_topic: config.kafka_events_topic.clone(),
        metrics_topic: config.kafka_metrics_topic.clone(),
        alerts_topic: config.kafka_alerts_topic.clone(),
        marker_topic: config.kafka_marker_topic.clone(),
        transactional_id: config
            .kafka_transactional_id
            .clone()
            .unwrap_or_else(|| format!("rtap-{}", config.kafka_group)),
        options: config
            .kafka_options
            .iter()
            .map(|o| (o.0.clone(), o.1.clone()))
            .collect(),
        producer_options: config
            .kafka_producer_options
            .iter()
            .map(|o| (o.0.clone(), o.1.clone()))
            .collect(),
    });
    if let Some(k) = &kafka {
        crate::source::kafka::ensure_topics(k).map_err(start)?;
    }
    let spec = config.source.clone().unwrap_or(if kafka.is_some() {
        SourceSpec::Kafka
    } else {
        SourceSpec::Simulator
    });
    let mut kafka_partitions = Vec::new();
    let mut source: Box<dyn Source> = match &spec {
        SourceSpec::Kafka => {
            let k = kafka
                .as_ref()
                .ok_or_else(|| Failure::Start("--source kafka needs --kafka-brokers".into()))?;
            let s = KafkaSource::open(k, config.idle_timeout.0).map_err(start)?;
            kafka_partitions = s.partitions().to_vec();
            Box::new(s)
        }
        SourceSpec::Simulator => Box::new(Simulator::new(SimConfig {
            rate: config.rate,
            seed: config.seed,
            start_ms: config.sim_start_ms,
            unpaced: config.unpaced,
            limit: None,
        })),
        SourceSpec::File(path) => Box::new(FileSource::open(path).map_err(start)?),
    };
    if config.rate.is_nan() || config.rate <= 0.0 {
        return Err(Failure::Start(format!(
            "--rate must be positive, got {}",
            config.rate
        )));
    }

    // Restore the last commit (see `crate::state` for the protocol).
    let store = StateStore::open(
        &config.data_dir,
        &StoreConfig {
            write_buffer: config.state_write_buffer.0,
        },
    )
    .map_err(start)?;
    let kafka_source = matches!(spec, SourceSpec::Kafka);
    let kafka_sink = match &kafka {
        Some(k) => {
            Some(KafkaSink::new(k, kafka_source.then(|| k.events_topic.clone())).map_err(start)?)
        }
        None => None,
    };
    if config.no_restore {
        store.clear().map_err(start)?;
    }
    let refuse = |g: u64, local: Option<u64>| {
        Failure::Start(format!(
            "the Kafka consumer group `{}` last committed transaction #{g}, but the state in {} {}: \
             the group's offsets and this state do not belong together (another host runs or ran this pipeline, \
             or this data dir was lost or restored from an older copy). Refusing to start rather than count \
             events twice or not at all: use the data dir of the host that committed #{g}, or start with \
             --no-restore (empty state from the group's committed offsets), or use another --kafka-group",
            config.kafka_group,
            store.path().display(),
            match local {
                Some(l) => format!("is at transaction #{l}"),
                None => "is empty".to_string(),
            }
        ))
    };
    // The marker must be the store's state or one of its logged commits.
    let acceptable = |marker: Option<u64>| -> Result<(), Failure> {
        let Some(g) = marker else { return Ok(()) };
        let last = store
            .last()
            .map_err(start)?
            .filter(|m| m.transactional)
            .map(|m| m.id);
        let logged = store.delta_ids().map_err(start)?;
        if last == Some(g) || logged.contains(&g) {
            return Ok(());
        }
        let local = logged.last().copied().or(last);
        if local.is_none() && (config.no_restore || !kafka_source) {
            return Ok(());
        }
        Err(refuse(g, local))
    };
    // Check before taking the transactional id over, so a second host
    // started by mistake refuses without fencing the running one.
    let marker = match &kafka_sink {
        Some(k) => {
            acceptable(k.committed_marker().map_err(start)?)?;
            k.fence().map_err(start)?;
            let m = k.committed_marker().map_err(start)?;
            acceptable(m)?;
            m
        }
        None => None,
    };
    let logged = store.delta_ids().map_err(start)?;
    if !logged.is_empty() {
        if kafka_sink.is_none() {
            return Err(Failure::Start(format!(
                "the state in {} has commits #{}..#{} whose Kafka transactions can only be checked with --kafka-brokers: \
                 start with the Kafka settings it ran with, or with --no-restore",
                store.path().display(),
                logged[0],
                logged[logged.len() - 1]
            )));
        }
        let g = marker.unwrap_or(0);
        let gone = store.discard_after(g).map_err(start)?;
        if !gone.is_empty() {
            tracing::info!(ids = ?gone, "discarded a prepared commit: its Kafka transaction did not commit");
        }
        let f = store.compact(g).map_err(start)?;
        if f.commits > 0 {
            // The fold skipped the write-ahead log: make it durable.
            store.flush().map_err(start)?;
            tracing::info!(
                id = g,
                commits = f.commits,
                keys = f.keys,
                "rolled a prepared commit forward: its Kafka transaction committed"
            );
        }
    }
    let last = store.last().map_err(start)?;
    let mut positions = std::collections::BTreeMap::new();
    let mut commit_id = last.as_ref().map_or(0, |m| m.id);
    if kafka_sink.is_some() {
        commit_id = commit_id.max(marker.unwrap_or(0));
    }
    let restored = last.is_some();
    if let Some(cp) = last {
        if cp.source != source.name() {
            return Err(Failure::Start(format!(
                "the state in {} was committed reading `{}`, not `{}`: run with --no-restore to start fresh, or use another --data-dir",
                store.path().display(),
                cp.source,
                source.name()
            )));
        }
        if kafka_source {
            let gone: Vec<i32> = cp
                .positions
                .iter()
                .map(|(p, _)| *p)
                .filter(|p| !kafka_partitions.contains(p))
                .collect();
            if !gone.is_empty() {
                return Err(Failure::Start(format!(
                    "the state in {} has read partitions {gone:?} of `{}`, which now has {} partitions: \
                     the topic was recreated or shrunk, so its offsets no longer match this state; \
                     start with --no-restore (empty state) or use another --data-dir",
                    store.path().display(),
                    source.name(),
                    kafka_partitions.len()
                )));
            }
            let new: Vec<i32> = kafka_partitions
                .iter()
                .copied()
                .filter(|p| !cp.positions.iter().any(|(q, _)| q == p))
                .collect();
            if !new.is_empty() && !cp.positions.is_empty() {
                tracing::warn!(partitions = ?new, "the events topic has partitions this state has not read: they are read from the group's committed offsets (else the earliest); one host reads every partition, so keyed state stays whole");
            }
        }
        for pm in &cp.plugins {
            let Some(slot) = pipeline.slots.iter_mut().find(|s| *s.name == pm.name) else {
                tracing::warn!(plugin = %pm.name, "committed plugin is no longer loaded; its state is dropped");
                continue;
            };
            let entries = store.entries(&pm.name).map_err(start)?;
            slot.restore_entries(
                &pm.op_meta,
                entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
            )
            .map_err(Failure::Start)?;
            let d = slot.identity.description.clone();
            if d.state_schema != pm.state_schema && d.migrates_from.contains(&pm.state_schema) {
                let from = pm.state_schema;
                let to = d.state_schema;
                let mut state = slot.take_state();
                let inst = &mut slot.inst;
                let mut f = |b: &[u8]| inst.migrate(from, b).map_err(|e| e.to_string());
                let n = state.try_map(&mut f).map_err(|e| {
                    Failure::Start(format!(
                        "plugin `{}`: migrating the committed state from schema {from} failed: {e}",
                        pm.name
                    ))
                })?;
                slot.restore(state).map_err(Failure::Start)?;
                tracing::info!(plugin = %pm.name, from, to, states = n, "migrated committed state");
            } else if d.state_schema != pm.state_schema {
                return Err(Failure::Start(format!(
                    "plugin `{}`: the state store holds state schema {} (version {}, {}), the loaded version {} has schema {}: start with --no-restore to reset state",
                    pm.name,
                    pm.state_schema,
                    pm.version,
                    &pm.hash[..12.min(pm.hash.len())],
                    d.version,
                    d.state_schema
                )));
            }
            if slot.identity.hash != pm.hash {
                tracing::info!(plugin = %pm.name, from = %pm.version, to = %d.version, "restoring state written by another build (same state schema)");
            }
        }
        // What the sinks wrote after the commit is written again.
        for (path, len) in &cp.files {
            let cut = crate::sink::jsonl::truncate_to(path, *len).map_err(start)?;
            if cut > 0 {
                tracing::info!(
                    path,
                    bytes = cut,
                    "cut output written after the last commit"
                );
            }
        }
        pipeline.wm = cp.watermark;
        positions = cp.positions.iter().copied().collect();
        source.seek(&cp.positions).map_err(start)?;
        registry
            .stats
            .last_checkpoint
            .store(cp.taken_at, Ordering::Relaxed);
        tracing::info!(id = cp.id, source = %cp.source, partitions = cp.positions.len(), "restored state");
    }

    // Every partition holds event time back until it produced or went idle.
    pipeline
        .wm
        .declare(&kafka_partitions, crate::pipeline::output::now_ms());

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

    let influx = match &config.influx_url {
        Some(url) => Some(
            InfluxSink::start(InfluxConfig {
                url: url.clone(),
                org: config.influx_org.clone(),
                bucket: config.influx_bucket.clone(),
                token: config.influx_token.0.clone(),
                spool_dir: config.data_dir.join("influx-spool"),
            })
            .map_err(|e| {
                Failure::Start(format!(
                    "InfluxDB sink: cannot create its spool under {}: {e}",
                    config.data_dir.display()
                ))
            })?,
        ),
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let admin_token: Arc<str> = match &config.admin_token {
        Some(t) if !t.0.is_empty() => Arc::from(t.0.as_str()),
        _ => {
            let t = generate_token();
            eprintln!("admin token for the plugin API (shown once): {t}");
            Arc::from(t.as_str())
        }
    };
    if !config.no_watch {
        watch::spawn(
            control.clone(),
            config.plugins.clone(),
            config.watch_interval.0,
            stop.clone(),
        );
    }
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("rtap-io")
        .build()
        .map_err(start)?;
    if !config.no_server {
        let state = AppState {
            registry: registry.clone(),
            hub: hub.clone(),
            source: source.name().to_string(),
            checkpoint_interval: config.checkpoint_interval.0,
            control: Some(control.clone()),
            admin_token,
            rate_limit: Arc::new(RateLimit::new(20.0, 5.0)),
            influx: influx.as_ref().map(|i| i.status.clone()),
            sinks: serde_json::json!({
                "jsonl": config.sinks.iter().map(|s| match s { SinkSpec::Jsonl(p) => p.clone() }).collect::<Vec<_>>(),
                "kafka": kafka.as_ref().map(|k| serde_json::json!({"metrics": k.metrics_topic, "alerts": k.alerts_topic})),
                "status": "ok",
            }),
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
    // Fault injection for the kill tests: announce each commit phase on
    // stderr and pause in it.
    let fault_pause = std::env::var("RTAP_FAULT_COMMIT_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(std::time::Duration::from_millis);
    let store = Arc::new(store);
    let rx = source::spawn(source, config.batch_size.max(1), 4, config.max_events);
    let runner = Runner {
        pipeline,
        source_name,
        sinks,
        dead,
        late,
        hub: (!config.no_server).then_some(hub),
        registry,
        store: store.clone(),
        interval: config.checkpoint_interval.0,
        commit_interval: config.commit_interval.0,
        positions,
        commit_id,
        changed: false,
        restored,
        lag_partitions: kafka_partitions.clone(),
        stop,
        commands,
        time,
        influx,
        kafka: kafka_sink.map(|k| Committer::spawn(k, store.clone(), commit_id, fault_pause)),
        uncommitted: Vec::new(),
        fault_pause,
    };
    let exit = runner.run(rx).map_err(|e| Failure::Run(e.to_string()))?;
    tracing::info!(?exit, "done");
    tokio.shutdown_timeout(std::time::Duration::from_millis(200));
    Ok(exit)
}
