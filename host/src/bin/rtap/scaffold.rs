//! `rtap new`: a plugin crate that builds outside this repository, with a
//! working example, native tests, sample events and a README of the loop.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// Events of one key and window → metrics.
    Aggregator,
    /// A keyed state machine over events → alerts.
    Detector,
}

/// The SDK this rtap was built with.
fn default_sdk() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk"))
}

pub fn new(name: &str, kind: Kind, path: &Path, sdk: Option<PathBuf>) -> anyhow::Result<()> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if !valid {
        bail!(
            "`{name}` is not a plugin name: lowercase letters, digits and `-`, starting with a letter"
        );
    }
    let sdk = sdk.unwrap_or_else(default_sdk);
    let sdk = sdk.canonicalize().with_context(|| {
        format!(
            "the rtap SDK is not at {} (pass --sdk PATH or set RTAP_SDK to the sdk folder of an rtap checkout)",
            sdk.display()
        )
    })?;
    anyhow::ensure!(
        sdk.join("Cargo.toml").is_file() && sdk.join("wit").is_dir(),
        "{} is not the rtap SDK (no Cargo.toml and wit/)",
        sdk.display()
    );
    let dir = path.join(name);
    anyhow::ensure!(!dir.exists(), "{} exists already", dir.display());
    let files = [
        ("Cargo.toml", cargo_toml(name, &sdk)),
        (
            "src/lib.rs",
            match kind {
                Kind::Aggregator => aggregator(name),
                Kind::Detector => detector(name),
            },
        ),
        ("sample/events.jsonl", sample_events()),
        ("README.md", readme(name, kind)),
        (".gitignore", "/target\n".to_string()),
    ];
    for (file, text) in files {
        let p = dir.join(file);
        std::fs::create_dir_all(p.parent().expect("a parent"))?;
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    println!(
        "created {} ({:?}): the loop is in its README.md",
        dir.display(),
        kind
    );
    println!("  rtap test {0} && rtap build {0}", dir.display());
    Ok(())
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the component the host loads; rlib: the native tests.
crate-type = ["cdylib", "rlib"]

[dependencies]
# Everything a plugin needs comes through the SDK (serde and serde_json
# included). A git dependency works too:
# rtap-sdk = {{ git = "https://…/rtap", package = "rtap-sdk" }}
rtap-sdk = {{ path = "{sdk}" }}

[profile.release]
# A smaller component compiles faster in the host.
strip = "debuginfo"

# A crate of its own, wherever it is put.
[workspace]
"#,
        sdk = sdk.display()
    )
}

fn aggregator(name: &str) -> String {
    let template = r#"//! __NAME__: events and the sum of `value` per page, in tumbling 5 s
//! windows. Change `describe` (key, window, fields) and the three methods;
//! `rtap test`, `rtap build`, `rtap run`, `rtap deploy`.

use rtap_sdk::prelude::*;

/// What the host keeps per page and window (encoded between calls; a new
/// layout needs a new `.state_schema(n)`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    events: u64,
    value: f64,
}

#[derive(Default)]
pub struct Plugin;

impl Aggregator for Plugin {
    type State = State;

    fn describe() -> Description {
        Description::aggregator("__NAME__", "0.1.0")
            .key_by("page")
            .tumbling(5_000)
            .fields(&["value"])
    }

    fn add(&self, state: &mut State, events: &Events) {
        state.events += events.len() as u64;
        state.value += events.float("value").iter().filter(|v| v.is_finite()).sum::<f64>();
    }

    fn merge(&self, state: &mut State, other: State) {
        state.events += other.events;
        state.value += other.value;
    }

    fn finish(&self, state: State, window: Window, out: &mut Metrics) {
        info!("window {}..{}: {} events", window.start, window.end, state.events);
        out.single("events", state.events as f64);
        out.single("value_sum", state.value);
    }
}

rtap_sdk::export_aggregator!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use rtap_sdk::testing::{json, run_aggregator, take_logs};

    #[test]
    fn counts_and_sums_per_page_and_window() {
        let events = [
            json!({"page": "/home", "timestamp": 1_000}),
            json!({"page": "/cart", "timestamp": 2_000, "value": 12.5}),
            json!({"page": "/cart", "timestamp": 4_999, "value": 7.5}),
            json!({"page": "/cart", "timestamp": 5_000}),
        ];
        let out = run_aggregator::<Plugin>("", &events).unwrap();
        let got: Vec<_> = out
            .iter()
            .map(|m| (m.key.as_str(), m.window.start, m.name.as_str(), m.value.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/cart", 0, "events", MetricValue::Single(2.0)),
                ("/cart", 0, "value_sum", MetricValue::Single(20.0)),
                ("/home", 0, "events", MetricValue::Single(1.0)),
                ("/home", 0, "value_sum", MetricValue::Single(0.0)),
                ("/cart", 5_000, "events", MetricValue::Single(1.0)),
                ("/cart", 5_000, "value_sum", MetricValue::Single(0.0)),
            ]
        );
        assert!(take_logs().iter().any(|(_, line)| line.contains("2 events")));
    }

    #[test]
    fn the_sample_events_give_metrics() {
        let events: Vec<_> = include_str!("../sample/events.jsonl")
            .lines()
            .map(|l| rtap_sdk::serde_json::from_str(l).unwrap())
            .collect();
        let out = run_aggregator::<Plugin>("", &events).unwrap();
        assert!(out.iter().any(|m| m.name == "events"));
    }
}
"#;
    template.replace("__NAME__", name)
}

fn detector(name: &str) -> String {
    let template = r##"//! __NAME__: an alert when one user hits `errors` error events within
//! `within_ms`. Change `describe`, the settings and the rule;
//! `rtap test`, `rtap build`, `rtap run`, `rtap deploy`.

use rtap_sdk::prelude::*;

/// The operator's options (`rtap config __NAME__ '{"errors": 5}'`).
#[derive(Debug, Clone, PartialEq, Deserialize, Settings)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Error events by one user that raise the alert
    #[setting(min = 1, max = 10_000)]
    pub errors: u32,
    /// Within this many ms
    #[setting(min = 1, max = 3_600_000)]
    pub within_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { errors: 3, within_ms: 10_000 }
    }
}

#[derive(Default)]
pub struct Plugin {
    settings: Settings,
}

impl Detector for Plugin {
    /// The times of the user's recent errors (empty when idle: the host
    /// then deletes the state).
    type State = CountWithin;

    fn describe() -> Description {
        Description::detector("__NAME__", "0.1.0")
            .key_by("user_id")
            .fields(&["timestamp", "event_type"])
            .settings::<Settings>()
    }

    fn configure(&mut self, config: &Config) -> Result<(), String> {
        self.settings = config.settings()?;
        Ok(())
    }

    fn on_events(&self, ctx: &mut Ctx<'_>, errors: &mut CountWithin, events: &Events<'_>) {
        let (n, within) = (self.settings.errors, self.settings.within_ms);
        let types = events.text("event_type");
        for (i, &t) in events.timestamps().iter().enumerate() {
            if types.is(i, "error") && errors.push(t, within, n) {
                let message = format!("user {} hit {n} errors within {within} ms", ctx.key());
                info!("alert: {message}");
                ctx.alert(Alert::warning("__NAME__", t, message).with_value(errors.count() as f64));
            }
        }
        if let Some(latest) = errors.latest() {
            ctx.set_timer(latest + within + 1);
        }
    }

    fn on_timer(&self, _ctx: &mut Ctx<'_>, errors: &mut CountWithin, time: i64) {
        errors.evict(time, self.settings.within_ms);
    }
}

rtap_sdk::export_detector!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use rtap_sdk::testing::{json, run_detector};

    fn error(user: &str, t: i64) -> rtap_sdk::serde_json::Value {
        json!({"user_id": user, "event_type": "error", "timestamp": t})
    }

    #[test]
    fn three_errors_within_ten_seconds_alert_once() {
        let events = [error("u1", 1_000), error("u1", 2_000), error("u2", 2_500), error("u1", 3_000), error("u1", 4_000)];
        let alerts = run_detector::<Plugin>("", &events).unwrap();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].key, "u1");
        assert_eq!(alerts[0].alert.time, 3_000);
    }

    #[test]
    fn the_config_is_checked() {
        let e = run_detector::<Plugin>(r#"{"errors": 0}"#, &[]).unwrap_err();
        assert!(e.contains("errors must be within 1..=10000"), "{e}");
        let alerts = run_detector::<Plugin>(r#"{"errors": 1}"#, &[error("u1", 1)]).unwrap();
        assert_eq!(alerts.len(), 1);
    }
}
"##;
    template.replace("__NAME__", name)
}

/// 60 events over 30 s on three pages and four users, some purchases and
/// errors: enough for `rtap run` to show windows and an alert.
fn sample_events() -> String {
    let pages = ["/home", "/products", "/cart"];
    let mut out = String::new();
    for i in 0..60u64 {
        let t = 1_767_225_600_000 + i as i64 * 500;
        let user = format!("user-{}", i % 4);
        let page = pages[(i % 3) as usize];
        let (ty, value) = match i % 10 {
            3 => ("purchase", format!(",\"value\":{}.5", 10 + i)),
            7 if i % 4 == 3 => ("error", String::new()),
            _ => ("page_view", String::new()),
        };
        out.push_str(&format!(
            "{{\"event_id\":\"e{i}\",\"event_type\":\"{ty}\",\"user_id\":\"{user}\",\"session_id\":\"s{}\",\"page\":\"{page}\",\"timestamp\":{t},\"latency_ms\":{}{value}}}\n",
            i % 4,
            40 + (i * 37) % 200,
        ));
    }
    out
}

fn readme(name: &str, kind: Kind) -> String {
    let what = match kind {
        Kind::Aggregator => "an aggregator: events of one key and window → metrics",
        Kind::Detector => "a detector: a keyed state machine over events → alerts",
    };
    format!(
        r#"# {name}

An rtap plugin, {what}. Everything is in `src/lib.rs`.

```sh
rtap test                                            # the native tests (cargo test)
rtap build                                           # the component, checked as the host checks it; its path last
rtap run $(rtap build | tail -1) --input sample/events.jsonl   # the plugin alone over the sample: outputs on stdout
export RTAP_ADMIN_TOKEN=…                            # the host's admin token
rtap deploy $(rtap build | tail -1) --url http://localhost:3000   # live, without a restart
rtap logs {name} --follow                            # what it logs (info!, println!, panics)
rtap config {name} '{{…}}'  ·  rtap rollback {name}  ·  rtap plugins
```

The SDK's documentation (contract, windows, state schemas, testing) is
`docs/plugins.md` in the rtap repository.
"#
    )
}
