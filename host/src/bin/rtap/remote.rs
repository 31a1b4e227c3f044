//! The commands that talk to a running host's HTTP API.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Which host, and the admin token for changes.
#[derive(Debug, clap::Args)]
pub struct HostArgs {
    /// The host's HTTP address.
    #[arg(long, env = "RTAP_URL", default_value = "http://localhost:3000")]
    url: String,
    /// The admin token (mutating calls).
    #[arg(long, env = "RTAP_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

struct Api {
    url: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Api {
    fn new(h: &HostArgs) -> Api {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build();
        Api {
            url: h.url.trim_end_matches('/').to_string(),
            token: h.token.clone(),
            agent: config.into(),
        }
    }

    fn auth(&self) -> anyhow::Result<String> {
        match &self.token {
            Some(t) if !t.is_empty() => Ok(format!("Bearer {t}")),
            _ => bail!(
                "no admin token: set RTAP_ADMIN_TOKEN (or --token) to the host's token (its RTAP_ADMIN_TOKEN, or the one it printed at start)"
            ),
        }
    }

    /// (status, JSON body) of a request.
    fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{path}", self.url);
        let res = match (method, body) {
            // The admin token reads too (a host with a read token).
            ("GET", _) => match &self.token {
                Some(t) if !t.is_empty() => self
                    .agent
                    .get(&url)
                    .header("Authorization", &format!("Bearer {t}"))
                    .call(),
                _ => self.agent.get(&url).call(),
            },
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &self.auth()?)
                .call(),
            ("PUT", Some(b)) => self
                .agent
                .put(&url)
                .header("Authorization", &self.auth()?)
                .send(b),
            ("PATCH", Some(b)) => self
                .agent
                .patch(&url)
                .header("Authorization", &self.auth()?)
                .header("Content-Type", "application/json")
                .send(b),
            ("POST", _) => self
                .agent
                .post(&url)
                .header("Authorization", &self.auth()?)
                .send_empty(),
            _ => bail!("unsupported request {method} {path}"),
        };
        let mut res = res.with_context(|| format!("{method} {url}: is the host running?"))?;
        let status = res.status().as_u16();
        let text = res.body_mut().read_to_string().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, body))
    }

    /// The body of a 2xx answer, else an error with the host's reason.
    fn ok(&self, method: &str, path: &str, body: Option<&[u8]>) -> anyhow::Result<Value> {
        let (status, v) = self.call(method, path, body)?;
        if (200..300).contains(&status) {
            return Ok(v);
        }
        let why = v["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string());
        bail!("{status}: {why}")
    }

    fn plugins(&self) -> anyhow::Result<Vec<Value>> {
        let v = self.ok("GET", "/api/plugins", None)?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn deploy(
    h: &HostArgs,
    component: &Path,
    config: Option<&str>,
    reset: bool,
    shadow: bool,
) -> anyhow::Result<()> {
    let api = Api::new(h);
    let runtime = rtap_host::plugin::Runtime::new(Default::default())?;
    let (loaded, bytes) = super::build::check(&runtime, component)?;
    let d = &loaded.description;
    let name = d.name.clone();
    let config = config.map(super::parse_config).transpose()?;
    let running = api
        .plugins()?
        .into_iter()
        .find(|p| p["name"] == name.as_str());
    // What changes.
    match &running {
        None => println!(
            "{name}: new plugin, {} (hash {})",
            d.version,
            &loaded.hash[..12]
        ),
        Some(p) => {
            println!("{name}:");
            let show = |what: &str, old: &Value, new: Value| {
                let same = *old == new;
                let mark = if same { "  " } else { "→ " };
                let old = old
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| old.to_string());
                let new = new
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| new.to_string());
                if same {
                    println!("  {mark}{what}: {old} (unchanged)");
                } else {
                    println!("  {mark}{what}: {old} → {new}");
                }
            };
            show("version", &p["version"], json!(d.version));
            show("hash", &json!(short(&p["hash"])), json!(&loaded.hash[..12]));
            show("state schema", &p["state_schema"], json!(d.state_schema));
            show(
                "state layout",
                &p["state_fingerprint"],
                json!(d.state_fingerprint),
            );
            show(
                "config",
                &p["config"],
                config.clone().unwrap_or_else(|| p["config"].clone()),
            );
        }
    }
    let mut query = Vec::new();
    if let Some(c) = &config {
        query.push(format!("config={}", encode(&c.to_string())));
    }
    if reset {
        query.push("state=reset".into());
    }
    if shadow {
        query.push("mode=shadow".into());
    }
    let q = if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    };
    let started = Instant::now();
    let r = api.ok("PUT", &format!("/api/plugins/{name}{q}"), Some(&bytes))?;
    if shadow {
        println!(
            "{name} {} runs as a shadow of {} ({:.0} ms; smoke test: {} recent events, {} states); its state: {}",
            d.version,
            r["live"]["version"].as_str().unwrap_or("?"),
            started.elapsed().as_secs_f64() * 1000.0,
            r["smoke"]["events"],
            r["smoke"]["states"],
            r["state"].as_str().unwrap_or("?"),
        );
        if let Some(v) = r["replaced"]["version"].as_str() {
            println!("it replaces the shadow {v} that ran until now");
        }
        println!(
            "compare: rtap shadow {name}   make it live: rtap shadow {name} --promote   drop it: rtap shadow {name} --discard"
        );
        return Ok(());
    }
    if r["unchanged"] == true {
        println!("already running this build: nothing to do");
        return Ok(());
    }
    println!(
        "swapped in {:.0} ms (compile {:.0} ms, stall {} µs); smoke test: {} recent events, {} states; state {}",
        started.elapsed().as_secs_f64() * 1000.0,
        r["compile_ms"].as_f64().unwrap_or(0.0),
        r["stall_us"],
        r["smoke"]["events"],
        r["smoke"]["states"],
        if r["state_reset"] == true {
            "reset".to_string()
        } else if r["states_migrated"].as_u64().unwrap_or(0) > 0 {
            format!("{} migrated", r["states_migrated"])
        } else {
            "kept".to_string()
        }
    );
    // The first counters of the new version.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let p = api
            .plugins()?
            .into_iter()
            .find(|p| p["name"] == name.as_str());
        let c = p
            .as_ref()
            .map(|p| p["counters"].clone())
            .unwrap_or_default();
        if c["calls"].as_u64().unwrap_or(0) > 0 || Instant::now() > deadline {
            let status = p.as_ref().map(|p| p["status"].clone()).unwrap_or_default();
            println!(
                "{name} {}: {} — events in {}, calls {}, outputs {}, dead-lettered {}, traps {}",
                d.version,
                status.as_str().unwrap_or("?"),
                c["events_in"],
                c["calls"],
                c["outputs"],
                c["dead_lettered"],
                c["traps"]
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn short(v: &Value) -> String {
    v.as_str().unwrap_or("").chars().take(12).collect()
}

pub fn plugins(h: &HostArgs) -> anyhow::Result<()> {
    let api = Api::new(h);
    println!(
        "{:<22} {:<9} {:<10} {:<9} {:>12} {:>10} {:>9} {:>6}",
        "PLUGIN", "VERSION", "KIND", "STATUS", "EVENTS IN", "OUTPUTS", "DEAD", "TRAPS"
    );
    for p in api.plugins()? {
        let c = &p["counters"];
        println!(
            "{:<22} {:<9} {:<10} {:<9} {:>12} {:>10} {:>9} {:>6}",
            p["name"].as_str().unwrap_or(""),
            p["version"].as_str().unwrap_or(""),
            p["kind"].as_str().unwrap_or(""),
            p["status"].as_str().unwrap_or(""),
            c["events_in"],
            c["outputs"],
            c["dead_lettered"],
            c["traps"]
        );
    }
    Ok(())
}

pub fn config(h: &HostArgs, name: &str, json: &str) -> anyhow::Result<()> {
    let v = super::parse_config(json)?;
    let r = Api::new(h).ok(
        "PATCH",
        &format!("/api/plugins/{name}/config"),
        Some(v.to_string().as_bytes()),
    )?;
    println!("{name}: config changed to {v} (stall {} µs)", r["stall_us"]);
    Ok(())
}

pub fn rollback(h: &HostArgs, name: &str, reset: bool) -> anyhow::Result<()> {
    let q = if reset { "?state=reset" } else { "" };
    let r = Api::new(h).ok("POST", &format!("/api/plugins/{name}/rollback{q}"), None)?;
    println!(
        "{name}: {} → {} (state {})",
        r["from_version"].as_str().unwrap_or("?"),
        r["to_version"].as_str().unwrap_or("?"),
        if r["state_reset"] == true {
            "reset"
        } else {
            "kept"
        }
    );
    Ok(())
}

pub fn logs(h: &HostArgs, name: &str, follow: bool) -> anyhow::Result<()> {
    let api = Api::new(h);
    let mut after = 0u64;
    let mut dropped = 0u64;
    loop {
        let v = api.ok(
            "GET",
            &format!("/api/plugins/{name}/logs?after={after}&limit=1000"),
            None,
        )?;
        for l in v["lines"].as_array().into_iter().flatten() {
            println!(
                "{} {:<5} {:<6} {}",
                l["time"],
                l["level"].as_str().unwrap_or(""),
                l["stream"].as_str().unwrap_or(""),
                l["message"].as_str().unwrap_or("")
            );
        }
        after = v["next"].as_u64().unwrap_or(after);
        let now_dropped = v["dropped"].as_u64().unwrap_or(0);
        if now_dropped > dropped {
            eprintln!("({} lines dropped by the rate limit so far)", now_dropped);
            dropped = now_dropped;
        }
        if !follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `rtap shadow NAME [--promote | --discard]`.
pub fn shadow(
    h: &HostArgs,
    name: &str,
    promote: bool,
    discard: bool,
    limit: usize,
) -> anyhow::Result<()> {
    let api = Api::new(h);
    let report = if promote {
        let r = api.ok("POST", &format!("/api/plugins/{name}/shadow/promote"), None)?;
        println!(
            "{name}: {} → {} is live",
            r["from_version"].as_str().unwrap_or("?"),
            r["to_version"].as_str().unwrap_or("?")
        );
        r["report"].clone()
    } else if discard {
        let r = api.ok("DELETE", &format!("/api/plugins/{name}/shadow"), None)?;
        println!("{name}: shadow discarded");
        r["report"].clone()
    } else {
        api.ok(
            "GET",
            &format!("/api/plugins/{name}/shadow?limit={limit}"),
            None,
        )?
    };
    print_shadow(&report, limit);
    Ok(())
}

fn print_shadow(r: &Value, limit: usize) {
    println!(
        "{} {} (shadow, {}) vs {} (live): {} events, {} compared, {} equal, {} different ({} live only, {} shadow only); inputs it failed on: {}",
        r["plugin"].as_str().unwrap_or("?"),
        r["shadow"]["version"].as_str().unwrap_or("?"),
        r["status"].as_str().unwrap_or("?"),
        r["live"]["version"].as_str().unwrap_or("?"),
        r["events"],
        r["compared"],
        r["equal"],
        r["different"],
        r["only_live"],
        r["only_shadow"],
        r["failed_inputs"],
    );
    println!("state: {}", r["state"].as_str().unwrap_or("?"));
    for d in r["first_differences"]
        .as_array()
        .into_iter()
        .flatten()
        .take(limit)
    {
        let at = match d["window_end"].as_i64() {
            Some(end) => format!("window {}..{end}", d["window_start"]),
            None => format!("alert {} at {}", d["id"].as_str().unwrap_or(""), d["time"]),
        };
        println!(
            "  {} {} key {:?} {at}: live {} shadow {}",
            d["kind"].as_str().unwrap_or(""),
            d["name"].as_str().unwrap_or(""),
            d["key"].as_str().unwrap_or(""),
            d["live"],
            d["shadow"]
        );
    }
    for f in r["failures"].as_array().into_iter().flatten() {
        let at = match f["offset"].as_u64() {
            Some(o) => format!(
                " ({} partition {} offset {o})",
                f["source"].as_str().unwrap_or(""),
                f["partition"]
            ),
            None => String::new(),
        };
        println!("  failed{at}: {}", f["detail"].as_str().unwrap_or(""));
    }
}
