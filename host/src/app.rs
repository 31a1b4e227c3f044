//! Start-up: each component builds itself from the config, in order —
//! Kafka topics, plugins (the group's, with the changelog), pipeline,
//! source, server, state (restored), outputs — then the runner takes
//! over. A standby loads its plugins and builds its pipeline only once it
//! took the group over. Any problem found at start is one clear message
//! naming what and where, and a non-zero exit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::api::{self, AppState};
use crate::checkpoint::restore::{Restore, Restored};
use crate::checkpoint::{Checkpoints, Store};
use crate::clock::now_ms;
use crate::cluster::{Cluster, Identity};
use crate::config::Config;
use crate::control::{Control, group, watch};
use crate::kafka::KafkaConfig;
use crate::pipeline::{Pipeline, TimeConfig};
use crate::plugin::Runtime;
use crate::runner::{Exit, Feed, Outputs, Runner, Workers};
use crate::sink::Hub;
use crate::sink::kafka::KafkaSink;
use crate::source::Opened;
use crate::state::StoreConfig;
use crate::status::{Registry, Role, Takeover};
use crate::window::Watermark;

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
            let msg = crate::datadir::explain(msg);
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
    crate::datadir::ensure_writable(&config.data_dir).map_err(start)?;
    let runtime = Arc::new(Runtime::from_config(&config).map_err(start)?);
    let time = TimeConfig::from_config(&config);
    let registry = Arc::new(Registry::default());
    let hub = Hub::with_history(crate::sink::History::from_config(&config));
    let (commands_tx, commands) = std::sync::mpsc::channel();
    let workers = config.workers();
    let control = Arc::new(Control::new(
        runtime.clone(),
        commands_tx,
        registry.clone(),
        hub.clone(),
        config.plugins.clone(),
        workers,
    ));
    let kafka = KafkaConfig::from_config(&config).map(|k| k.reporting_to(registry.kafka.clone()));
    if config.share {
        // Plugin changes through the API answer 503: no runner takes them.
        drop(commands);
        return run_shared(&config, kafka, &runtime, (registry, hub, control));
    }
    if let Some(k) = &kafka {
        crate::kafka::ensure_topics(k).map_err(start)?;
    }
    // With the changelog the group's hosts run the group's plugins
    // (`crate::control::group`). A standby loads them once it takes over,
    // the group's as they are then; any other host now.
    let shared = kafka.as_ref().filter(|k| k.changelog);
    let load = |control: &Control, late: bool| -> Result<_, Failure> {
        let group = match shared.map(group::read).transpose() {
            Ok(g) => g,
            // A host that took the group over runs its folder's plugins
            // rather than leave the group without an active host.
            Err(e) if late => {
                tracing::warn!("{e}: running this host's plugins folder as it is");
                None
            }
            Err(e) => return Err(start(e)),
        };
        let pipelines = control
            .load_pipelines(&config, time, workers, group.as_ref())
            .map_err(Failure::Start)?;
        Ok((pipelines, group))
    };
    let late = config.standby && shared.is_some();
    if late {
        // The folder is checked now, as any host's at start: a plugin that
        // does not load stops this standby here, not when the group needs
        // it. That also compiles them into the cache; the group's versions
        // are compiled as the follower (below) reads them.
        // The group as it is now (read again at the takeover).
        let now = shared.and_then(|k| group::read(k).ok()).unwrap_or_default();
        group::check_folder(&runtime, &config, &now).map_err(Failure::Start)?;
    }
    // While it waits, a standby follows the group's plugins: compiles each
    // version as it appears and lists them (`standby`) in its API.
    let follower = shared
        .filter(|_| late)
        .map(|k| group::Follower::start(k, runtime.clone(), registry.clone()));
    let (mut pipelines, mut group) = if late {
        (Vec::new(), None)
    } else {
        load(&control, false)?
    };
    let spec = config.source_spec();
    let mut opened = spec.open(&config, kafka.as_ref()).map_err(start)?;
    let source_name = opened.name.clone();

    // The group's hosts (`GET /api/cluster`); this host publishes itself
    // from now on, a standby too.
    let identity = Identity::from_config(&config);
    let host_id = identity.id.clone();
    let cluster = match &kafka {
        Some(k) => Cluster::join(k, identity, registry.clone()).map_err(start)?,
        None => Cluster::alone(identity, registry.clone()),
    };
    let _leave = Leave(cluster.clone());

    // The server answers from here on: a standby serves its API, health
    // and dashboard while it waits.
    let stop = Arc::new(AtomicBool::new(false));
    let server = (!config.no_server).then(|| {
        AppState::new(
            &config,
            registry.clone(),
            hub.clone(),
            source_name.clone(),
            control.clone(),
            cluster.clone(),
        )
    });
    // The folder watch starts once the plugins are loaded, from the files
    // they were loaded from: a build copied in (or a file deleted) after
    // the load is a change it sees, even when `/health` answered before
    // its first scan (its commands wait for the runner).
    let watch = || {
        if !config.no_watch {
            watch::spawn(
                control.clone(),
                config.plugins.clone(),
                config.watch_interval.0,
                stop.clone(),
            );
        }
    };
    if !late {
        watch();
    }
    let influx_status = server.as_ref().map(|s| s.influx.clone());
    let tokio = api::serve(&config, server, stop.clone()).map_err(Failure::Start)?;

    // Restore the last commit (see `crate::checkpoint` for the protocol);
    // a standby loads its plugins once it took the group over.
    let resets = group.as_ref().map(group::GroupPlugins::resets);
    let Some((store, kafka_sink, restored, _heartbeat)) = restore(
        &config,
        kafka.as_ref(),
        &mut opened,
        &mut pipelines,
        &registry,
        &stop,
        resets.unwrap_or_default(),
        || {
            if !late {
                return Ok(None);
            }
            if let Some(f) = &follower {
                f.stop();
            }
            let (p, g) = load(&control, true)?;
            let resets = g.as_ref().map(group::GroupPlugins::resets);
            group = g;
            watch();
            Ok(Some((p, resets.unwrap_or_default())))
        },
    )?
    else {
        tracing::info!("stopped while waiting as the standby");
        tokio.shutdown_timeout(std::time::Duration::from_millis(200));
        return Ok(Exit::Shutdown);
    };
    // Active now: this host's plugins are the group's, and every change
    // is shared.
    if let (Some(k), Some(g)) = (shared, &group) {
        let publisher = group::Publisher::new(k, &host_id, g).map_err(start)?;
        control.share_with_group(publisher, g);
        // A change that could not be shared (the broker away) is shared
        // once it can be.
        let (control, stop) = (control.clone(), stop.clone());
        let _ = std::thread::Builder::new()
            .name("plugin-share".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(crate::control::SHARE_AGAIN);
                    control.share_again();
                }
            });
    }
    *registry.partitions.lock().expect("registry lock") = opened.partitions.clone();
    *registry.takeover.lock().expect("registry lock") = Some(Takeover {
        at: now_ms(),
        state_from: if restored.rebuilt {
            "changelog"
        } else if restored.restored {
            "local"
        } else {
            "empty"
        }
        .into(),
        restore_ms: restored.began.elapsed().as_millis() as u64,
        after_standby: restored.waited,
    });
    let wm = event_time(restored.watermark.clone(), &pipelines[0], &opened);
    let lag_partitions = if opened.kafka {
        opened.partitions.clone()
    } else {
        Vec::new()
    };

    let server_hub = (!config.no_server).then(|| hub.clone());
    let outputs = Outputs::open(&config, server_hub, registry.clone()).map_err(Failure::Start)?;
    if let (Some(slot), Some(st)) = (&influx_status, outputs.influx_status()) {
        let _ = slot.set(st);
    }
    let shadows = control.shadows();

    let changelog = match (&kafka, &restored.lineage) {
        (Some(k), Some(l)) if k.changelog => Some(crate::checkpoint::changelog::Writer::new(
            l.clone(),
            restored.plugins.clone(),
        )),
        _ => None,
    };
    let checkpoints = Checkpoints::start(
        Arc::new(store),
        kafka_sink,
        source_name.clone(),
        restored.commit_id,
        registry.clone(),
        changelog,
    );
    let crossing = match (config.exchange, &kafka) {
        (crate::config::ExchangeMode::Kafka, Some(k)) => {
            Some(crate::runner::Crossing::open(k, pipelines.len()).map_err(start)?)
        }
        (crate::config::ExchangeMode::Kafka, None) => {
            return Err(start("--exchange kafka needs --kafka-brokers".to_string()));
        }
        _ => None,
    };
    let feed = Feed::spawn(opened, config.batch_size.max(1), 4, config.max_events);
    let names = pipelines[0].names();
    let router = pipelines[0].router();
    registry.role.set(Role::Active);
    let runner = Runner {
        workers: Workers::start(pipelines, &registry),
        wm,
        names,
        router,
        outputs,
        checkpoints,
        registry,
        source_name,
        interval: config.checkpoint_interval.0,
        commit_interval: config.commit_interval.0,
        positions: restored.positions,
        changed: false,
        restored: restored.restored,
        lag_partitions,
        stop,
        commands,
        time,
        last_batch: None,
        shadows,
        exchange: config.exchange,
        crossing,
    };
    let shadows = runner.shadows.clone();
    let registry = runner.registry.clone();
    let exit = runner
        .run(feed)
        .map_err(|e| Failure::Run(crate::datadir::explain(e.to_string())))?;
    if !shadows.is_empty() {
        tracing::info!(
            plugins = ?shadows.plugins(),
            "shadow versions are not kept: the next start runs the live versions only"
        );
    }
    if config.exchange != crate::config::ExchangeMode::Memory {
        let m = crate::metrics::metrics();
        let counters = registry.workers.lock().expect("registry lock").clone();
        let (mut bytes, mut records) = (0, 0);
        for (w, c) in counters.iter().enumerate() {
            bytes += m
                .worker_exchange_bytes
                .with_label_values(&[&w.to_string()])
                .get();
            records += c.exchange_in.load(Ordering::Relaxed);
        }
        let events = registry.stats.events_in.load(Ordering::Relaxed);
        tracing::info!(events, records, bytes, "exchange on the wire");
    }
    tracing::info!(?exit, "done");
    tokio.shutdown_timeout(std::time::Duration::from_millis(200));
    Ok(exit)
}

/// `--share`: this host's share of the group's work
/// (`crate::cluster::shared`), until SIGINT or SIGTERM. Its API serves
/// `/health`, `GET /api/cluster` (every host of the group with its input
/// partitions and key groups) and the read API; plugin changes are
/// refused (503).
fn run_shared(
    config: &Config,
    kafka: Option<KafkaConfig>,
    runtime: &Runtime,
    (registry, hub, control): (Arc<Registry>, Hub, Arc<Control>),
) -> Result<Exit, Failure> {
    let Some(mut k) = kafka else {
        return Err(start("--share needs --kafka-brokers"));
    };
    // The ranges' state lives in the changelog.
    k.changelog = true;
    crate::kafka::ensure_topics(&k).map_err(start)?;
    let cluster =
        Cluster::join(&k, Identity::from_config(config), registry.clone()).map_err(start)?;
    let _leave = Leave(cluster.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let server = (!config.no_server).then(|| {
        AppState::new(
            config,
            registry.clone(),
            hub,
            format!("kafka:{}", k.events_topic),
            control,
            cluster,
        )
    });
    let tokio = api::serve(config, server, stop.clone()).map_err(Failure::Start)?;
    *registry.key_groups.lock().expect("registry lock") = Some(Vec::new());
    registry.role.set(Role::Active);
    crate::cluster::shared::run(config, &k, runtime, stop, &registry).map_err(Failure::Run)?;
    tokio.shutdown_timeout(std::time::Duration::from_millis(200));
    Ok(Exit::Shutdown)
}

/// Leaves the group's cluster view when the run ends, however it ends.
struct Leave(Arc<Cluster>);

impl Drop for Leave {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// What [`restore`] hands the run.
type Restoring = (
    Store,
    Option<KafkaSink>,
    Restored,
    Option<crate::checkpoint::alive::Heartbeat>,
);

/// The state store, the transactional Kafka sink (with Kafka), the last
/// commit restored into `pipelines`, the source's readers moved to its
/// positions, and the group's heartbeat (with the changelog); `None` when
/// stopped while waiting as the standby.
///
/// `late`: runs once the store is settled (a standby took the group over);
/// the pipelines it returns replace `pipelines`.
///
/// `resets`: the group's plugins swapped in with their state reset
/// (`GroupPlugins::resets`), as `late` returns them too.
#[allow(clippy::too_many_arguments)]
fn restore(
    config: &Config,
    kafka: Option<&KafkaConfig>,
    opened: &mut Opened,
    pipelines: &mut Vec<Pipeline>,
    registry: &Registry,
    stop: &AtomicBool,
    mut resets: BTreeMap<String, String>,
    late: impl FnOnce() -> Result<Option<(Vec<Pipeline>, BTreeMap<String, String>)>, Failure>,
) -> Result<Option<Restoring>, Failure> {
    let store = Store::open(
        &config.data_dir,
        &StoreConfig {
            write_buffer: config.state_write_buffer.0,
        },
    )
    .map_err(start)?;
    let kafka_sink = match kafka {
        Some(k) => {
            let input = opened.kafka.then(|| k.events_topic.clone());
            Some(KafkaSink::new(k, input).map_err(start)?)
        }
        None => None,
    };
    let restore = Restore {
        store: &store,
        kafka: kafka_sink.as_ref(),
        group: &config.kafka_group,
        fresh: config.no_restore,
        source: &opened.name,
        kafka_partitions: opened.kafka.then_some(opened.partitions.as_slice()),
        changelog: kafka.filter(|k| k.changelog),
        standby: config.standby,
        takeover_after: config.takeover_after.0,
        stop: Some(stop),
    };
    let settled = match restore.settle_store(registry) {
        Err(crate::checkpoint::restore::RestoreError::Stopped) => return Ok(None),
        r => r.map_err(start)?,
    };
    // This host took the group over: with the changelog it beats from now
    // on (while it runs: dropped at the end of `run`), before it loads
    // anything, so a host that starts meanwhile waits as the standby.
    let heartbeat = kafka
        .filter(|k| k.changelog)
        .map(crate::checkpoint::alive::Heartbeat::start)
        .transpose()
        .map_err(start)?;
    if let Some((p, r)) = late()? {
        *pipelines = p;
        resets = r;
    }
    let restored = restore
        .load(settled, pipelines, registry, &resets)
        .map_err(start)?;
    if restored.restored {
        let positions: Vec<_> = restored.positions.iter().map(|(p, q)| (*p, *q)).collect();
        for r in &mut opened.readers {
            r.seek(&positions).map_err(start)?;
        }
    }
    Ok(Some((store, kafka_sink, restored, heartbeat)))
}

/// Event time at start: the restored watermark, or a fresh one; every
/// partition of Kafka or of a file holds it back until it produced (or,
/// Kafka, went idle), and a file's splits, read side by side, are never
/// idle.
fn event_time(restored: Option<Watermark>, pipeline: &Pipeline, opened: &Opened) -> Watermark {
    let mut wm = restored.unwrap_or_else(|| pipeline.wm.clone());
    if opened.bounded {
        wm = wm.without_idleness();
    }
    let declared = if opened.kafka || opened.bounded {
        opened.partitions.clone()
    } else {
        Vec::new()
    };
    wm.declare(&declared, now_ms());
    wm
}
