//! `rtap test` and `rtap build`: cargo, then the host's own checks.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{Context, bail};
use rtap_host::plugin::{Instance, Limits, Loaded, Runtime};

const TARGET: &str = "wasm32-wasip2";

/// Plugin crates built by `rtap` share one Cargo target folder, so the SDK
/// and its dependencies compile once per machine, not once per plugin:
/// `CARGO_TARGET_DIR` if set, else `$XDG_CACHE_HOME/rtap/target` (or
/// `~/.cache/rtap/target`).
pub fn cargo(dir: &Path) -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(dir);
    if std::env::var_os("CARGO_TARGET_DIR").is_none() {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
        if let Some(cache) = cache {
            c.env("CARGO_TARGET_DIR", cache.join("rtap").join("target"));
        }
    }
    c
}

pub fn test(dir: &Path) -> anyhow::Result<()> {
    manifest(dir)?;
    let st = cargo(dir)
        .arg("test")
        .status()
        .context("cannot run cargo")?;
    anyhow::ensure!(st.success(), "the tests failed ({st})");
    Ok(())
}

fn manifest(dir: &Path) -> anyhow::Result<PathBuf> {
    let m = dir.join("Cargo.toml");
    anyhow::ensure!(
        m.is_file(),
        "{} is not a plugin crate (no Cargo.toml); create one with `rtap new NAME --kind aggregator`",
        dir.display()
    );
    Ok(m)
}

/// Add the wasm32-wasip2 target through rustup when it is missing.
fn ensure_target() -> anyhow::Result<()> {
    let Ok(out) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        // No rustup: cargo says what is missing, if anything.
        return Ok(());
    };
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == TARGET)
    {
        return Ok(());
    }
    eprintln!("adding the {TARGET} Rust target (rustup target add {TARGET})");
    let st = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()?;
    anyhow::ensure!(st.success(), "rustup target add {TARGET} failed");
    Ok(())
}

pub fn build(dir: &Path) -> anyhow::Result<()> {
    let manifest = manifest(dir)?.canonicalize()?;
    let dir = manifest.parent().expect("a crate folder");
    let package = package(&manifest)?;
    ensure_target()?;
    let out = cargo(dir)
        .args(["build", "--release", "--lib", "--target", TARGET])
        .args(["--message-format", "json-render-diagnostics"])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    anyhow::ensure!(out.status.success(), "the build failed ({})", out.status);
    let wasm = artifact(&String::from_utf8_lossy(&out.stdout), &package.id).ok_or_else(|| {
        anyhow::anyhow!(
            "the build made no component for `{}`: its [lib] needs `crate-type = [\"cdylib\", \"rlib\"]` in Cargo.toml",
            package.name
        )
    })?;
    let runtime = Runtime::new(Limits::default())?;
    runtime.logs().spawn_publisher(super::run::show_log);
    let (loaded, bytes) = check(&runtime, &wasm)?;
    let sample = dir.join("sample").join("events.jsonl");
    if sample.is_file() {
        let n = smoke_on_file(&loaded, &sample)?;
        println!("smoke test: {n} events of {} passed", sample.display());
    }
    print_description(&loaded, bytes.len());
    println!("{}", wasm.display());
    Ok(())
}

struct Package {
    id: String,
    name: String,
}

/// The crate's package, checked to build a component (a `cdylib`).
fn package(manifest: &Path) -> anyhow::Result<Package> {
    let out = cargo(manifest.parent().unwrap_or(Path::new(".")))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(manifest)
        .output()
        .context("cannot run cargo metadata")?;
    anyhow::ensure!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let manifest = manifest.canonicalize()?;
    let pkg = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["manifest_path"].as_str().map(Path::new) == Some(manifest.as_path()))
        .ok_or_else(|| anyhow::anyhow!("{} names no package", manifest.display()))?;
    let name = pkg["name"].as_str().unwrap_or_default().to_string();
    let lib = pkg["targets"].as_array().into_iter().flatten().find(|t| {
        t["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "lib" || k == "cdylib" || k == "rlib"))
    });
    let Some(lib) = lib else {
        bail!(
            "`{name}` has no library target: a plugin is a [lib] with `crate-type = [\"cdylib\", \"rlib\"]` (src/lib.rs)"
        );
    };
    let kinds: Vec<&str> = lib["crate_types"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_str())
        .collect();
    if !kinds.contains(&"cdylib") {
        bail!(
            "`{name}` builds no component: its library is {kinds:?}; add under [lib] in Cargo.toml: crate-type = [\"cdylib\", \"rlib\"] (cdylib: the component, rlib: the native tests)"
        );
    }
    Ok(Package {
        id: pkg["id"].as_str().unwrap_or_default().to_string(),
        name,
    })
}

/// The `.wasm` cargo wrote for package `id`, from its JSON messages.
fn artifact(messages: &str, id: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["package_id"] == id)
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|f| f.as_str().map(PathBuf::from))
        })
        .find(|f| f.extension().is_some_and(|e| e == "wasm"))
}

/// Check a component exactly as the host does when it loads one: a
/// component (not a core module), the contract, a valid description (its
/// config schema a JSON Schema that its default config follows), `init`
/// accepting the default config.
pub fn check(runtime: &Runtime, wasm: &Path) -> anyhow::Result<(Arc<Loaded>, Vec<u8>)> {
    let bytes = std::fs::read(wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    if bytes.len() >= 8 && &bytes[..4] == b"\0asm" && bytes[4..8] == [1, 0, 0, 0] {
        bail!(
            "{} is a core Wasm module (built for wasm32-wasip1 or wasm32-unknown-unknown), not a component: \
             build it with `rtap build` (cargo build --release --target wasm32-wasip2)",
            wasm.display()
        );
    }
    let loaded = runtime.load(&bytes, &wasm.display().to_string())?;
    let d = &loaded.description;
    rtap_host::plugin::config::check(d, &d.default_config)
        .map_err(|e| anyhow::anyhow!("the default config: {e}"))?;
    let config = d.default_config.clone();
    let loaded = Arc::new(loaded);
    Instance::new(loaded.clone(), &config)?;
    Ok((loaded, bytes))
}

/// The upload's smoke test, on the crate's sample events.
fn smoke_on_file(loaded: &Arc<Loaded>, sample: &Path) -> anyhow::Result<usize> {
    use rtap_host::source::Source;
    let mut src = rtap_host::source::file::FileSource::open(&sample.display().to_string())?;
    let Some(batch) = src.next_batch(rtap_host::control::smoke::EVENTS)? else {
        return Ok(0);
    };
    let d = loaded.description.clone();
    let mut inst = Instance::new(loaded.clone(), &d.default_config)?;
    let r = rtap_host::control::smoke::run(&mut inst, &d, Some(&batch), &[])
        .map_err(|e| anyhow::anyhow!("{}: {e}", sample.display()))?;
    Ok(r.events)
}

fn print_description(l: &Loaded, size: usize) {
    let d = &l.description;
    println!(
        "{} {} ({:?}, input {:?})",
        d.name, d.version, d.kind, d.input
    );
    let key = if d.key_by_text.is_empty() {
        "(global)"
    } else {
        &d.key_by_text
    };
    println!("  key:           {key}");
    println!(
        "  window:        {}",
        serde_json::to_string(&d.window).unwrap_or_default()
    );
    let fields: Vec<&str> = d.fields.iter().map(|f| f.name()).collect();
    println!("  fields:        {}", fields.join(", "));
    if !d.metrics.is_empty() {
        let m: Vec<String> = d
            .metrics
            .iter()
            .map(|m| format!("{}/{}", m.plugin, m.name))
            .collect();
        println!("  metrics in:    {}", m.join(", "));
    }
    println!(
        "  state:         schema {}, migrates from {:?}, layout {}",
        d.state_schema,
        d.migrates_from,
        if d.state_fingerprint.is_empty() {
            "unknown"
        } else {
            &d.state_fingerprint
        }
    );
    println!("  config:        {}", d.default_config);
    println!("  config schema: {}", d.config_schema);
    println!("  size:          {size} bytes, sha256 {}", l.hash);
}
