//! The HTTP server on :3000: the dashboard's static files at `/`, the live
//! stream at `/ws`, the recent outputs at `/api/history`, the pipeline's API
//! under `/api`, and `/health`.

pub mod access;
pub mod admin;
pub mod history;
pub mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tower_http::services::{ServeDir, ServeFile};

use crate::clock::now_ms;
use crate::sink::Hub;
use crate::status::{PluginStatus, Registry, SourceState};

#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub hub: Hub,
    pub source: String,
    pub checkpoint_interval: Duration,
    pub control: Option<Arc<crate::control::Control>>,
    pub admin_token: Arc<str>,
    /// `--read-token`: what reading needs, when set (see [`access`]).
    pub read_token: Option<Arc<str>>,
    pub rate_limit: Arc<admin::RateLimit>,
    /// Set once the outputs are open (the server answers before: a
    /// standby serves while it waits).
    pub influx: Arc<std::sync::OnceLock<Arc<crate::sink::influx::InfluxStatus>>>,
    /// The group's hosts (`GET /api/cluster`); `None` only in tests.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The other configured sinks (JSONL files, Kafka topics): a write
    /// failure there stops the process, so while it answers they are fine.
    pub sinks: Value,
}

impl AppState {
    /// The server's view of a run. The admin token is `--admin-token`, else
    /// generated and printed once.
    pub fn new(
        config: &crate::config::Config,
        registry: Arc<Registry>,
        hub: Hub,
        source: String,
        control: Arc<crate::control::Control>,
        cluster: Arc<crate::cluster::Cluster>,
    ) -> Self {
        let admin_token: Arc<str> = match &config.admin_token {
            Some(t) if !t.0.is_empty() => Arc::from(t.0.as_str()),
            _ => {
                let t = generate_token();
                eprintln!("admin token for the plugin API (shown once): {t}");
                Arc::from(t.as_str())
            }
        };
        let kafka = config.kafka_brokers.is_some().then(
            || json!({"metrics": config.kafka_metrics_topic, "alerts": config.kafka_alerts_topic, "dead_letters": config.kafka_dead_letter_topic, "late_events": config.kafka_late_topic}),
        );
        AppState {
            registry,
            hub,
            source,
            checkpoint_interval: config.checkpoint_interval.0,
            control: Some(control),
            admin_token,
            read_token: config
                .read_token
                .as_ref()
                .filter(|t| !t.0.is_empty())
                .map(|t| Arc::from(t.0.as_str())),
            rate_limit: Arc::new(admin::RateLimit::new(20.0, 5.0)),
            influx: Default::default(),
            cluster: Some(cluster),
            sinks: json!({
                "jsonl": config.sinks.iter().map(|s| match s { crate::config::SinkSpec::Jsonl(p) => p.clone() }).collect::<Vec<_>>(),
                "kafka": kafka,
                "status": "ok",
            }),
        }
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

/// Where and how the server listens.
pub struct Server {
    pub listen: std::net::SocketAddr,
    pub dashboard: PathBuf,
    /// `--tls-cert` and `--tls-key`.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl Server {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Server {
            listen: config.listen,
            dashboard: config.dashboard_dir.clone(),
            tls: config.tls_cert.clone().zip(config.tls_key.clone()),
        }
    }
}

/// The host's I/O runtime, serving the HTTP API with `state` (none:
/// `--no-server`), and setting `stop` on SIGINT or SIGTERM.
pub fn serve(
    config: &crate::config::Config,
    state: Option<AppState>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<tokio::runtime::Runtime, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("rtap-io")
        .build()
        .map_err(|e| format!("cannot start the I/O runtime: {e}"))?;
    if let Some(state) = state {
        start(&rt, Server::from_config(config), state)?;
    }
    stop_on_signal(&rt, stop);
    Ok(rt)
}

/// Bind the server's address and serve the dashboard, `/ws`, `/api` and
/// `/health` on `rt` in the background (over TLS with a certificate).
pub fn start(rt: &tokio::runtime::Runtime, server: Server, state: AppState) -> Result<(), String> {
    let listen = server.listen;
    let tls = match &server.tls {
        Some((cert, key)) => Some(tls::server_config(cert, key)?),
        None => None,
    };
    let app = router(state, server.dashboard);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(listen))
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %listen, scheme, "dashboard, /ws, /api and /health listening");
    match tls {
        Some(tls) => {
            let _guard = rt.enter();
            let listener = tls::TlsListener::new(listener, tls)
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            rt.spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!("https server stopped: {e}");
                }
            });
        }
        None => {
            rt.spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!("http server stopped: {e}");
                }
            });
        }
    }
    Ok(())
}

/// On SIGINT or SIGTERM, set `stop`: the runner checkpoints and exits.
pub fn stop_on_signal(rt: &tokio::runtime::Runtime, stop: Arc<std::sync::atomic::AtomicBool>) {
    rt.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        tracing::info!("stopping: checkpointing");
        stop.store(true, Ordering::Relaxed);
    });
}

pub fn router(state: AppState, dashboard: PathBuf) -> Router {
    let api = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(prometheus_metrics))
        .route("/ready", get(ready))
        .route("/api/plugins", get(plugins))
        .route(
            "/api/plugins/{name}",
            axum::routing::put(admin::put).delete(admin::delete),
        )
        .route(
            "/api/plugins/{name}/config",
            axum::routing::patch(admin::patch_config),
        )
        .route(
            "/api/plugins/{name}/rollback",
            axum::routing::post(admin::rollback),
        )
        .route("/api/plugins/{name}/logs", get(plugin_logs))
        .route(
            "/api/plugins/{name}/shadow",
            get(admin::shadow_report).delete(admin::discard_shadow),
        )
        .route(
            "/api/plugins/{name}/shadow/promote",
            axum::routing::post(admin::promote_shadow),
        )
        .layer(axum::extract::DefaultBodyLimit::max(admin::MAX_BODY))
        .route("/api/pipeline", get(pipeline))
        .route("/api/cluster", get(cluster))
        .route("/api/history", get(history::get))
        .route("/ws", get(ws))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::require_read_token,
        ))
        .with_state(state);
    if dashboard.join("index.html").is_file() {
        let index = ServeFile::new(dashboard.join("index.html"));
        api.fallback_service(ServeDir::new(dashboard).fallback(index))
    } else {
        let msg = format!(
            "<!doctype html><title>rtap</title><h1>rtap</h1><p>The dashboard is not built at <code>{}</code>. \
             Run <code>scripts/run.sh</code> (or <code>npm --prefix dashboard run build</code>). \
             The live stream is at <code>/ws</code>, the API at <code>/api/plugins</code>, health at <code>/health</code>.</p>",
            dashboard.display()
        );
        api.fallback(move || async move { Html(msg) })
    }
}

/// `/ws?types=alert,pipeline`: only those output types (default: all).
#[derive(Debug, serde::Deserialize)]
struct WsQuery {
    types: Option<String>,
}

/// The WebSocket read buffer (bytes); larger messages still arrive whole.
const WS_READ_BUFFER: usize = 4096;

async fn ws(
    upgrade: WebSocketUpgrade,
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<WsQuery>,
) -> Response {
    let filter = crate::sink::websocket::TypeFilter::parse(q.types.as_deref());
    // Clients send only control frames; tungstenite zero-fills the whole
    // read buffer (128 KiB by default) on every read attempt.
    upgrade
        .read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| async move {
            let (tx, rx) = socket.split();
            let tx = tx.with(|line: String| {
                futures_util::future::ready(Ok::<_, axum::Error>(Message::Text(line.into())))
            });
            state.hub.serve(Box::pin(tx), rx, filter).await;
        })
}

fn plugin_list(state: &AppState) -> Vec<Value> {
    let plugins = state.registry.plugins.lock().expect("registry lock");
    let logs = state.control.as_ref().map(|c| c.logs());
    plugins
        .iter()
        .map(|(meta, counters)| {
            let mut v = serde_json::to_value(meta).expect("plugin meta serializes");
            v["status"] = serde_json::to_value(counters.status()).expect("status serializes");
            v["counters"] = counters.snapshot();
            if let Some(shadow) = state
                .control
                .as_ref()
                .and_then(|c| c.shadow_summary(&meta.name))
            {
                v["shadow"] = shadow;
            }
            if let Some(log) = logs.and_then(|l| l.get(&meta.name)) {
                v["logs"] = json!({
                    "lines": log.written(),
                    "dropped": log.dropped(),
                    "last": log.last(),
                });
            }
            v
        })
        .collect()
}

async fn plugins(State(state): State<AppState>) -> Json<Vec<Value>> {
    Json(plugin_list(&state))
}

/// `GET /api/plugins/{name}/logs?after=SEQ&limit=N`: the plugin's kept log
/// lines after `after` (oldest first, at most `limit`, 200 by default),
/// with its counts; `next` is the `after` of the next poll.
#[derive(Debug, serde::Deserialize)]
struct LogsQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn plugin_logs(
    State(state): State<AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
    axum::extract::Query(q): axum::extract::Query<LogsQuery>,
) -> Response {
    let known = state
        .registry
        .plugins
        .lock()
        .expect("registry lock")
        .iter()
        .any(|(m, _)| m.name == name);
    if !known {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no plugin `{name}`")})),
        )
            .into_response();
    }
    let after = q.after.unwrap_or(0);
    let log = state.control.as_ref().and_then(|c| c.logs().get(&name));
    let (lines, written, dropped) = match &log {
        Some(l) => (
            l.lines(
                after,
                q.limit.unwrap_or(200).min(crate::plugin::log::KEPT_LINES),
            ),
            l.written(),
            l.dropped(),
        ),
        None => (Vec::new(), 0, 0),
    };
    let next = lines.last().map_or(after, |l| l.seq);
    Json(json!({"plugin": name, "lines": lines, "written": written, "dropped": dropped, "next": next}))
        .into_response()
}

fn pipeline_status(state: &AppState) -> Value {
    let s = &state.registry.stats;
    let last_cp = s.last_checkpoint.load(Ordering::Relaxed);
    json!({
        "source": state.source,
        // Acquire: the watermark read below is at least the one of the
        // last batch counted here (see the runner).
        "events_in": s.events_in.load(Ordering::Acquire),
        "outputs": s.outputs.load(Ordering::Relaxed),
        "late_events": s.late_events.load(Ordering::Relaxed),
        "dead_lettered": s.dead_lettered.load(Ordering::Relaxed),
        "malformed": s.malformed.load(Ordering::Relaxed),
        "watermark": s.watermark.load(Ordering::Relaxed),
        "last_checkpoint": (last_cp > 0).then_some(last_cp),
        "websocket_clients": state.hub.clients(),
        // Each processing worker over the last second (see runner/status.rs).
        "workers": state.registry.worker_status.lock().expect("registry lock").clone(),
    })
}

async fn pipeline(State(state): State<AppState>) -> Json<Value> {
    Json(pipeline_status(&state))
}

/// `GET /api/cluster`: every host of the group (see `crate::cluster`).
async fn cluster(State(state): State<AppState>) -> Response {
    match &state.cluster {
        Some(c) => Json(c.view()).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "no cluster view in this server"})),
        )
            .into_response(),
    }
}

/// Readiness for orchestration: 200 once plugins are loaded and the
/// pipeline has processed a batch (or finished its input).
async fn ready(State(state): State<AppState>) -> Response {
    let s = &state.registry.stats;
    let ready =
        s.last_batch_at.load(Ordering::Relaxed) > 0 || s.source.get() == SourceState::Finished;
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(json!({"ready": ready}))).into_response()
}

/// Prometheus text exposition; gauges that are states are read now.
async fn prometheus_metrics(State(state): State<AppState>) -> Response {
    let m = crate::metrics::metrics();
    let s = &state.registry.stats;
    let last_cp = s.last_checkpoint.load(Ordering::Relaxed);
    if last_cp > 0 {
        m.checkpoint_age.set((now_ms() - last_cp) as f64 / 1000.0);
    }
    let wm = s.watermark.load(Ordering::Relaxed);
    if wm > 0 {
        m.watermark_lag.set((now_ms() - wm) as f64 / 1000.0);
    }
    m.websocket_clients.set(state.hub.clients() as i64);
    if let Some(h) = state.hub.history() {
        let (outputs, bytes) = h.held();
        m.history_outputs.set(outputs as i64);
        m.history_bytes.set(bytes as i64);
    }
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        crate::metrics::render(),
    )
        .into_response()
}

/// `ok`, `degraded` (a plugin degraded, checkpoints late, the Kafka
/// source cannot reach the broker or the Kafka sink waits for it) or
/// `down` (the source failed, a plugin failed, InfluxDB cannot be
/// written): 503 when down.
async fn health(State(state): State<AppState>) -> Response {
    let s = &state.registry.stats;
    let source = s.source.get();
    let plugins: serde_json::Map<String, Value> = {
        let list = state.registry.plugins.lock().expect("registry lock");
        list.iter()
            .map(|(m, c)| {
                (
                    m.name.clone(),
                    serde_json::to_value(c.status()).expect("status"),
                )
            })
            .collect()
    };
    let last_cp = s.last_checkpoint.load(Ordering::Relaxed);
    let cp_age = (last_cp > 0).then(|| (now_ms() - last_cp) as f64 / 1000.0);
    let cp_late = cp_age.is_some_and(|a| a > 3.0 * state.checkpoint_interval.as_secs_f64() + 5.0);
    let any = |st: PluginStatus| {
        plugins
            .values()
            .any(|v| *v == serde_json::to_value(st).expect("status"))
    };
    let influx = state.influx.get().map(|st| {
        let failing = st.failing.load(Ordering::Relaxed);
        json!({
            "status": if failing { "down" } else { "ok" },
            "buffered_points": st.buffered.load(Ordering::Relaxed),
            "written_points": st.written.load(Ordering::Relaxed),
            "last_error": if failing { st.last_error.lock().expect("status lock").clone() } else { None },
        })
    });
    let sink_down = influx.as_ref().is_some_and(|v| v["status"] == "down");
    // Kafka: the source cannot reach the broker, the sink waits for it.
    let now = now_ms();
    let kafka = &state.registry.kafka;
    let unreachable = state
        .source
        .starts_with("kafka:")
        .then(|| kafka.source_unreachable())
        .flatten()
        .filter(|_| source == SourceState::Running);
    let waiting = |stalled: Option<i64>| {
        json!({
            "status": if stalled.is_some() { "degraded" } else { "ok" },
            "waiting_seconds": stalled.map(|t| (now - t) as f64 / 1000.0),
        })
    };
    let kafka_sink = (!state.sinks["kafka"].is_null()).then(|| waiting(kafka.sink_stalled(now)));
    // `--exchange kafka`: a round waiting on the exchange topic.
    let exchange = kafka.exchange_stalled(now).map(waiting);
    let kafka_waits = kafka_sink
        .iter()
        .chain(exchange.as_ref())
        .any(|v| v["status"] == "degraded");
    let overall = if source == SourceState::Failed || any(PluginStatus::Failed) || sink_down {
        "down"
    } else if any(PluginStatus::Degraded) || cp_late || unreachable.is_some() || kafka_waits {
        "degraded"
    } else {
        "ok"
    };
    let source_json = match &unreachable {
        Some((since, error)) => json!({
            "name": state.source,
            "status": "degraded",
            "broker": {"unreachable_seconds": (now - since) as f64 / 1000.0, "error": error},
        }),
        None => json!({"name": state.source, "status": source}),
    };
    let body = json!({
        "status": overall,
        // `standby`: waiting while another host processes the group;
        // `restoring`: loading the state (from its data dir or the
        // changelog) before it processes; `active`.
        "role": state.registry.role.get(),
        "components": {
            "source": source_json,
            "plugins": plugins,
            "checkpoint": {"last": (last_cp > 0).then_some(last_cp), "age_seconds": cp_age, "late": cp_late},
            "websocket": {"clients": state.hub.clients()},
            "exchange": exchange,
            "sinks": {"influxdb": influx, "kafka": kafka_sink, "other": state.sinks},
        }
    });
    let code = if overall == "down" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body)).into_response()
}
