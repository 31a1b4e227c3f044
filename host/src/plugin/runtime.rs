//! The Wasm engine: one wasmtime `Engine` with the pooling allocator and epoch
//! interruption, a `Linker` that offers plugins only a capability-less WASI,
//! and the epoch ticker that enforces per-call deadlines.
//!
//! Compiling a component (`Component::new`, ~80 ms) happens in [`Runtime::load`],
//! never on the processing thread's hot path for a swap; instantiating from the
//! resulting `PluginPre` takes microseconds.
//!
//! Compiled components are kept in a cache directory (`DATA_DIR/compiled`,
//! see [`Runtime::cache_compiled`]) named by the component's SHA-256 and the
//! engine's compatibility hash, so a restart (after a crash, above all)
//! loads native code instead of compiling again: measured here, 11 plugins
//! start in ~0.2 s instead of ~2 s of CPU. Loading precompiled code trusts
//! the file as much as the host binary, so the cache must be writable only
//! by the host's user, like the rest of the data directory; a file that
//! does not load (truncated, other wasmtime) is compiled again and replaced.
//! The 64 most recently used entries are kept.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ProfilingStrategy, Store,
    StoreLimits, StoreLimitsBuilder,
};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::PluginError;
use super::bindings::{Plugin, PluginPre};
use super::describe::Description;
use super::log::{LogLimits, LogPipe, Logs, PluginLog, Stream};

/// The sandbox limits of every call.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock deadline of one call (epoch based, [`TICK`] resolution).
    pub call_timeout: Duration,
    /// Linear-memory cap of one instance.
    pub memory_bytes: usize,
    /// Capabilities the operator grants to plugins that ask (`clock`, `random`).
    pub grants: Vec<String>,
    /// Upper bound of live instances (pooling allocator slots).
    pub max_instances: u32,
    /// How many log lines a plugin may write (the `log` import, stdout and
    /// stderr together).
    pub log: LogLimits,
    /// Metrics or alerts one call may return.
    pub max_outputs_per_call: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_timeout: Duration::from_millis(500),
            memory_bytes: 64 << 20,
            grants: Vec::new(),
            max_instances: 128,
            log: LogLimits::default(),
            max_outputs_per_call: 100_000,
        }
    }
}

/// The epoch ticker's period: the resolution of the call deadline. Each
/// tick wakes a thread; at 1 ms that thread took ~1 s of CPU per minute and
/// a thousand wake-ups a second on cores the processing thread needs.
pub const TICK: Duration = Duration::from_millis(10);

fn deadline_ticks(timeout: Duration) -> u64 {
    (timeout.as_nanos().div_ceil(TICK.as_nanos()) as u64).saturating_add(1)
}

/// Set (to anything) in the environment, the engine writes
/// `/tmp/perf-PID.map`, so that `perf report` names the plugins' compiled
/// functions instead of showing bare addresses.
pub const PERFMAP_ENV: &str = "RTAP_WASM_PERFMAP";

/// Per-instance store data: WASI (no preopens, no network, no env), the
/// resource table, the memory limiter, the plugin's log and its stderr
/// (whose end names a trap's cause).
pub struct PluginCtx {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limits: StoreLimits,
    pub(super) stderr: LogPipe,
    log: Option<Arc<PluginLog>>,
}

/// The contract's shared types (imported because the exports use them).
impl super::bindings::rtap::plugin::types::Host for PluginCtx {}

/// The contract's `log` import.
impl super::bindings::rtap::plugin::log::Host for PluginCtx {
    fn log(&mut self, level: super::bindings::rtap::plugin::log::Level, message: String) {
        use super::bindings::rtap::plugin::log::Level as L;
        use super::log::Level;
        let level = match level {
            L::Trace => Level::Trace,
            L::Debug => Level::Debug,
            L::Info => Level::Info,
            L::Warn => Level::Warn,
            L::Error => Level::Error,
        };
        if let Some(log) = &self.log {
            log.write(level, Stream::Log, &message);
        }
    }
}

impl WasiView for PluginCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A denied clock: always the Unix epoch.
struct EpochClock;

impl wasmtime_wasi::HostWallClock for EpochClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for EpochClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// A compiled plugin, ready to instantiate.
pub struct Loaded {
    pub description: Description,
    /// sha256 of the `.wasm` bytes, hex.
    pub hash: String,
    pub size: usize,
    /// The component's bytes (to write it back on a rollback).
    pub bytes: Option<Arc<[u8]>>,
    pub(super) pre: PluginPre<PluginCtx>,
    pub(super) limits: Limits,
    engine: Engine,
    /// Where the plugin's log lines go (none while it describes itself).
    log: Option<Arc<PluginLog>>,
}

impl Loaded {
    pub(super) fn new_store(&self) -> Store<PluginCtx> {
        let d = &self.description;
        let granted = |cap: &str| {
            d.capabilities.iter().any(|c| c == cap) && self.limits.grants.iter().any(|g| g == cap)
        };
        let stderr = LogPipe::new(self.log.clone(), Stream::Stderr);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stderr(stderr.clone())
            .stdout(LogPipe::new(self.log.clone(), Stream::Stdout));
        if !granted("clock") {
            wasi.wall_clock(EpochClock).monotonic_clock(EpochClock);
        }
        if !granted("random") {
            wasi.secure_random(wasmtime_wasi::Deterministic::new(vec![
                0x5a, 0xa5, 0x3c, 0xc3,
            ]))
            .insecure_random(wasmtime_wasi::Deterministic::new(vec![0x42, 0x24]))
            .insecure_random_seed(0x7274_6170);
        }
        let ctx = PluginCtx {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            stderr,
            log: self.log.clone(),
        };
        let mut store = Store::new(&self.engine, ctx);
        store.limiter(|c| &mut c.limits);
        store.epoch_deadline_trap();
        store
    }

    /// Deadline of one call, in epoch ticks: the call may run for its whole
    /// timeout (the first tick may come at once) and is stopped less than
    /// two ticks after it.
    pub(super) fn deadline_ticks(&self) -> u64 {
        deadline_ticks(self.limits.call_timeout)
    }
}

/// The engine, the linker and the epoch ticker.
pub struct Runtime {
    engine: Engine,
    linker: Linker<PluginCtx>,
    limits: Limits,
    stop: Arc<AtomicBool>,
    /// Where compiled components are kept, if anywhere.
    cache: Option<PathBuf>,
    logs: Arc<Logs>,
}

impl Runtime {
    /// The engine with the command line's limits and, unless
    /// `--no-compile-cache`, the compile cache under the data dir.
    pub fn from_config(config: &crate::config::Config) -> Result<Self, PluginError> {
        let defaults = Limits::default();
        let limits = Limits {
            call_timeout: config.plugin_timeout.0,
            memory_bytes: config.plugin_memory.0,
            grants: config.allow_capabilities.clone(),
            // Every worker runs an instance of every plugin, and a swap
            // instantiates the new version's before the old ones go.
            max_instances: defaults
                .max_instances
                .max(32 * config.workers() as u32 + 32),
            ..defaults
        };
        let mut runtime = Runtime::new(limits)?;
        if !config.no_compile_cache {
            runtime.cache_compiled(config.data_dir.join("compiled"));
        }
        Ok(runtime)
    }

    pub fn new(limits: Limits) -> Result<Self, PluginError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(limits.max_instances)
            .total_core_instances(limits.max_instances * 8)
            .total_memories(limits.max_instances * 2)
            .total_tables(limits.max_instances * 4)
            .total_stacks(limits.max_instances)
            .max_memory_size(limits.memory_bytes);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .concurrency_support(false)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if std::env::var_os(PERFMAP_ENV).is_some() {
            config.profiler(ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| PluginError::Runtime(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| PluginError::Runtime(e.to_string()))?;
        Plugin::add_to_linker::<_, wasmtime::component::HasSelf<PluginCtx>>(&mut linker, |c| c)
            .map_err(|e| PluginError::Runtime(e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (e, s) = (engine.clone(), stop.clone());
        thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    thread::sleep(TICK);
                    e.increment_epoch();
                }
            })
            .map_err(|e| PluginError::Runtime(e.to_string()))?;
        Ok(Runtime {
            engine,
            linker,
            logs: Arc::new(Logs::new(limits.log)),
            limits,
            stop,
            cache: None,
        })
    }

    /// Keep compiled components in `dir` (created on first use).
    pub fn cache_compiled(&mut self, dir: PathBuf) {
        self.cache = Some(dir);
    }

    /// The component from the cache, else compiled (and cached).
    fn compile(&self, bytes: &[u8], hash: &str) -> wasmtime::Result<Component> {
        let Some(dir) = &self.cache else {
            return Component::new(&self.engine, bytes);
        };
        let mut compat = std::hash::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut compat);
        let path = dir.join(format!("{hash}-{:016x}.cwasm", compat.finish()));
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of an
            // engine with the same compatibility hash, in the host's own data
            // directory (see the module docs); wasmtime checks its header
            // and version and refuses anything else.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(c) => {
                    // Recently used entries survive the pruning.
                    let _ = std::fs::File::options()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                    return Ok(c);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), "compiled plugin cache entry not usable, compiling again: {}", root(&e))
                }
            }
        }
        let component = Component::new(&self.engine, bytes)?;
        let stored = component.serialize().and_then(|code| {
            std::fs::create_dir_all(dir)?;
            // A temporary file of this writer's own: a standby's warm-up
            // and its takeover may compile the same component at once.
            static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tmp = path.with_extension(format!("{}-{n}.tmp", std::process::id()));
            std::fs::write(&tmp, code)?;
            std::fs::rename(&tmp, &path)?;
            Ok(())
        });
        if let Err(e) = stored {
            tracing::warn!(dir = %dir.display(), "cannot cache a compiled plugin: {e}");
        }
        prune(dir, CACHE_ENTRIES);
        Ok(component)
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The plugins' logs.
    pub fn logs(&self) -> &Arc<Logs> {
        &self.logs
    }

    /// Compile, link and describe a component. `origin` names it in errors.
    pub fn load(&self, bytes: &[u8], origin: &str) -> Result<Loaded, PluginError> {
        let refused = |why: String| PluginError::Refused {
            origin: origin.to_string(),
            why,
        };
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(refused("not a WebAssembly file (no \\0asm header)".into()));
        }
        if bytes[4..8] == [1, 0, 0, 0] {
            return Err(refused(
                "a core Wasm module, not a component: build with `--target wasm32-wasip2` (or wrap it with `wasm-tools component new`)".into(),
            ));
        }
        let hash = hex::encode(Sha256::digest(bytes));
        let component = self
            .compile(bytes, &hash)
            .map_err(|e| refused(format!("invalid component: {}", root(&e))))?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            refused(format!(
                "imports something the host does not offer: {}",
                root(&e)
            ))
        })?;
        let pre = PluginPre::new(pre).map_err(|e| {
            refused(format!(
                "does not implement the rtap:plugin contract: {}",
                root(&e)
            ))
        })?;
        let mut loaded = Loaded {
            description: placeholder_description(),
            hash,
            size: bytes.len(),
            bytes: Some(Arc::from(bytes)),
            pre,
            limits: self.limits.clone(),
            engine: self.engine.clone(),
            log: None,
        };
        let mut store = loaded.new_store();
        store.set_epoch_deadline(loaded.deadline_ticks());
        let bindings = loaded
            .pre
            .instantiate(&mut store)
            .map_err(|e| refused(format!("cannot instantiate: {}", root(&e))))?;
        let raw = bindings
            .rtap_plugin_meta()
            .call_describe(&mut store)
            .map_err(|e| refused(format!("describe failed: {}", root(&e))))?;
        loaded.description =
            Description::from_wit(raw).map_err(|e| refused(format!("invalid description: {e}")))?;
        loaded.log = Some(self.logs.plugin(&loaded.description.name));
        Ok(loaded)
    }
}

/// Compiled components kept (~0.5–0.7 MB each): every upload through the
/// API adds one, so the least recently used beyond this are deleted.
const CACHE_ENTRIES: usize = 64;

/// Keep the `keep` most recently used `.cwasm` entries of `dir`.
fn prune(dir: &std::path::Path, keep: usize) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<(std::time::SystemTime, PathBuf)> = rd
        .filter_map(|e| {
            let e = e.ok()?;
            let path = e.path();
            let modified = e.metadata().ok()?.modified().ok()?;
            (path.extension()? == "cwasm").then_some((modified, path))
        })
        .collect();
    if entries.len() <= keep {
        return;
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    for (_, path) in &entries[keep..] {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), "cannot prune the compiled plugin cache: {e}");
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The innermost cause of a wasmtime error, which is the informative part.
pub(super) fn root(e: &wasmtime::Error) -> String {
    let mut msg = e.to_string();
    if let Some(src) = e.chain().last() {
        let s = src.to_string();
        if s != msg {
            msg = format!("{msg}: {s}");
        }
    }
    msg
}

fn placeholder_description() -> Description {
    use super::describe::{Input, KeyBy, Kind, WindowSpec};
    Description {
        name: String::new(),
        version: String::new(),
        kind: Kind::Aggregator,
        input: Input::Events,
        key_by: KeyBy::Global,
        key_by_text: String::new(),
        window: WindowSpec::None,
        allowed_lateness: None,
        fields: Vec::new(),
        metrics: Vec::new(),
        state_schema: 0,
        migrates_from: Vec::new(),
        state_fingerprint: String::new(),
        config_schema: serde_json::Value::Null,
        default_config: serde_json::Value::Null,
        capabilities: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_gets_at_least_its_timeout_and_under_two_ticks_more() {
        for ms in [1, 9, 10, 11, 100, 500, 1001] {
            let timeout = Duration::from_millis(ms);
            let ticks = deadline_ticks(timeout);
            // The first tick may come right after the deadline is set.
            let shortest = TICK * (ticks as u32 - 1);
            let longest = TICK * ticks as u32;
            assert!(
                shortest >= timeout,
                "{ms} ms: {ticks} ticks may stop it early"
            );
            assert!(longest < timeout + 2 * TICK, "{ms} ms: {ticks} ticks");
        }
    }

    #[test]
    fn prune_keeps_the_most_recently_used_entries() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = std::time::SystemTime::now() - Duration::from_secs(3600);
        for (i, name) in ["a.cwasm", "b.cwasm", "c.cwasm", "d.cwasm"]
            .iter()
            .enumerate()
        {
            let f = std::fs::File::create(dir.path().join(name)).unwrap();
            f.set_modified(t0 + Duration::from_secs(60 * i as u64))
                .unwrap();
        }
        std::fs::write(dir.path().join("other.tmp"), b"").unwrap();
        prune(dir.path(), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec!["c.cwasm", "d.cwasm", "other.tmp"]);
    }
}
