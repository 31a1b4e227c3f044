//! Fuzz harnesses: what the host reads from outside, each checked against an
//! oracle. libFuzzer drives them through the targets in `fuzz/` (run by
//! `scripts/fuzz.sh`); `tests/fuzz_corpus.rs` replays the corpus and every
//! input that once broke one (`fuzz/regressions/`) in `cargo test`.
//!
//! A harness panics when the oracle disagrees — that is the crash libFuzzer
//! reports. Errors the host reports cleanly are fine: what must not happen
//! is a panic in the host's own code, an accepted input that should not be,
//! or a value that differs from the reference.
//!
//! - [`decode`]: an input line → `source::decode`, against serde_json;
//! - [`state_codec`]: a commit log record, a commit meta, changed keys →
//!   `state::codec`, `checkpoint::commit`, `StateStore::fold` on RocksDB;
//! - [`plugin_returns`]: what a hostile component may return from `add`,
//!   `finish` and the detector calls → `plugin::instance`'s checks;
//! - [`api`]: HTTP requests (method, path, query, headers, body) → the
//!   server's router, read token and admin token on or off;
//! - [`exchange_wire`]: a payload from another host's stage 1 →
//!   `pipeline::wire`, decoded, encoded again and decoded again.

use std::sync::{Arc, OnceLock};

use serde_json::Value;

use crate::checkpoint::{Commit, CommitMeta, Store};
use crate::event::{EventBatch, Origin, TextField};
use crate::plugin::bindings::types as t;
use crate::plugin::instance::{metrics_from_wit, packed_checked, step_from_wit};
use crate::source::decode::decode_into;
use crate::state::{Changes, Meta, StoreConfig};

/// A reader of structured values from the fuzzer's bytes: whatever is
/// missing reads as zero, so every input means something.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }

    fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        let got = self.bytes(4);
        b[..got.len()].copy_from_slice(got);
        u32::from_le_bytes(b)
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let got = self.bytes(8);
        b[..got.len()].copy_from_slice(got);
        u64::from_le_bytes(b)
    }

    /// A small count: mostly below 8, sometimes larger.
    fn len(&mut self) -> usize {
        match self.u8() {
            n @ 0..=247 => usize::from(n % 8),
            n => usize::from(n - 240) * 8,
        }
    }

    fn blob(&mut self) -> &'a [u8] {
        let n = self.len();
        self.bytes(n)
    }

    fn string(&mut self) -> String {
        String::from_utf8_lossy(self.blob()).into_owned()
    }

    fn f64(&mut self) -> f64 {
        f64::from_bits(self.u64())
    }
}

// --- the event decoder --------------------------------------------------

/// The edges the decoder trims (ASCII whitespace, form feed included: it
/// frames lines, it is not part of the JSON).
fn trimmed(line: &[u8]) -> &[u8] {
    let start = line.iter().position(|b| !b.is_ascii_whitespace());
    let end = line.iter().rposition(|b| !b.is_ascii_whitespace());
    match (start, end) {
        (Some(a), Some(b)) => &line[a..=b],
        _ => &[],
    }
}

/// The nesting depth of a JSON value (a scalar: 0).
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Whether serde_json's reading of an object is an event the decoder must
/// accept: a timestamp it can read and numbers where numbers go. Escaped
/// timestamps are refused by design (the line must not hold a backslash
/// for the check to apply), and nesting is capped at 64 levels.
fn must_accept(line: &[u8], obj: &serde_json::Map<String, Value>) -> bool {
    let ts_ok = match obj.get("timestamp") {
        Some(Value::Number(n)) => {
            n.as_i64().is_some()
                || n.as_f64()
                    .is_some_and(|f| f.is_finite() && f.abs() <= 9.0e15)
        }
        Some(Value::String(s)) => {
            !line.contains(&b'\\')
                && (s.parse::<i64>().is_ok() || rtap_sdk::time::parse_rfc3339(s).is_some())
        }
        _ => false,
    };
    let numbers_ok = ["latency_ms", "value"]
        .iter()
        .all(|f| matches!(obj.get(*f), None | Some(Value::Null | Value::Number(_))));
    let nesting_ok = obj.values().map(depth).max().unwrap_or(0) <= 60;
    // serde_json keeps the last of duplicate fields; the decoder reads
    // every one, so an ill-typed earlier one refuses the line. Lines that
    // may repeat a typed field are left out of the check.
    let once = ["\"timestamp\"", "\"latency_ms\"", "\"value\""]
        .iter()
        .all(|f| line.windows(f.len()).filter(|w| w == &f.as_bytes()).count() <= 1);
    ts_ok && numbers_ok && nesting_ok && once
}

/// An input line → the decoder, against serde_json: the decoder accepts
/// only JSON objects serde_json accepts, reads the same values from them,
/// accepts every well-typed event serde_json reads, and leaves the batch as
/// it was when it refuses a line.
pub fn decode(line: &[u8]) {
    let mut batch = EventBatch::new(Origin {
        source: "fuzz".into(),
        partition: 0,
    });
    let res = decode_into(line, 7, &mut batch);
    let line = trimmed(line);
    let reference = serde_json::from_slice::<Value>(line);
    let ev = match res {
        Ok(false) => {
            assert!(line.is_empty(), "a non-empty line read as no event");
            return;
        }
        Err(e) => {
            assert!(
                batch.buf.is_empty() && batch.events.is_empty(),
                "a refused line left something in the batch"
            );
            if let Ok(Value::Object(obj)) = &reference {
                assert!(
                    !must_accept(line, obj),
                    "the decoder refused a well-typed event serde_json reads: {e}"
                );
            }
            return;
        }
        Ok(true) => batch.events[0],
    };
    let v = match reference {
        Ok(v) => v,
        // serde_json refuses numbers beyond f64 (`5e999`), which JSON's
        // grammar allows: the decoder refuses them where it reads a number
        // and skips them elsewhere.
        Err(e) if e.to_string().starts_with("number out of range") => return,
        Err(e) => panic!("the decoder accepted a line serde_json refuses: {e}"),
    };
    let obj = v.as_object().expect("the decoder accepted a non-object");
    assert_eq!(batch.raw(&ev).as_bytes(), line, "the raw line");
    match obj.get("timestamp") {
        Some(Value::Number(n)) => match n.as_i64() {
            Some(ms) => assert_eq!(ev.ts, ms, "timestamp"),
            None => {
                let f = n.as_f64().expect("a JSON number");
                assert!((ev.ts as f64 - f.floor()).abs() <= f.abs() * 1e-15 + 1.0);
            }
        },
        Some(Value::String(s)) => {
            let want = s
                .parse::<i64>()
                .ok()
                .or_else(|| rtap_sdk::time::parse_rfc3339(s));
            assert_eq!(Some(ev.ts), want, "timestamp `{s}`");
        }
        other => panic!("the decoder accepted a timestamp of {other:?}"),
    }
    for (field, got) in [("latency_ms", ev.latency_ms), ("value", ev.value)] {
        match obj.get(field) {
            None | Some(Value::Null) => assert!(got.is_nan(), "{field}: {got}, not missing"),
            Some(Value::Number(n)) => {
                let want = n.as_f64().expect("a JSON number");
                assert!(
                    got == want || (got - want).abs() <= want.abs() * 1e-15,
                    "{field}: {got}, serde_json reads {want}"
                );
            }
            Some(other) => panic!("the decoder accepted {field} = {other}"),
        }
    }
    for f in TextField::ALL {
        let got = batch.text(&ev, f);
        match obj.get(f.name()) {
            None | Some(Value::Null) => assert_eq!(got, None, "{}", f.name()),
            Some(Value::String(s)) => assert_eq!(got, Some(s.as_str()), "{}", f.name()),
            // Numbers, booleans, objects as ids keep their JSON text.
            Some(other) => {
                let text = got.unwrap_or_else(|| panic!("{}: missing, not {other}", f.name()));
                let back: Value = serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("{}: `{text}` is not JSON: {e}", f.name()));
                assert_eq!(&back, other, "{}", f.name());
            }
        }
    }
}

// --- the state and commit codecs ------------------------------------------

/// A store for [`state_codec`], opened once per process in a fresh folder
/// under the temporary directory.
fn fuzz_store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rtap-fuzz-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Store::open(&dir, &StoreConfig::default()).expect("open the fuzz store")
    })
}

/// [`state_codec_in`] with a store of its own.
pub fn state_codec(data: &[u8]) {
    state_codec_in(fuzz_store(), data)
}

/// The reading of the host's own records, from bytes that may be anything
/// (a torn or foreign data directory): the first byte picks what they are.
///
/// - a commit log record, read as `StateStore::compact` reads it, then
///   folded into `store` as a restart folds it: an error or a fold, never a
///   panic; a record that decodes encodes back to a record that decodes
///   the same;
/// - a commit meta (the store's last commit), read as `StateStore::last`
///   reads it, checked;
/// - changed keys built from the bytes: they read back exactly as put.
pub fn state_codec_in(store: &Store, data: &[u8]) {
    let Some((&what, data)) = data.split_first() else {
        return;
    };
    match what % 3 {
        0 => {
            let Ok(c) = postcard::from_bytes::<Commit>(data) else {
                return;
            };
            let again = postcard::to_allocvec(&c).expect("encode a decoded commit");
            let back: Commit = postcard::from_bytes(&again).expect("decode a re-encoded commit");
            assert_eq!(postcard::to_allocvec(&back).expect("encode"), again);
            for p in &c.plugins {
                let read: Result<Vec<_>, _> = p.changes.iter().collect();
                if let Ok(entries) = read {
                    assert_eq!(entries.len(), p.changes.len());
                }
            }
            let id = c.meta.id();
            // The store's own verdict: folded, or refused as corrupt.
            let _ = store.fold(&[&c], id);
            let _ = store.clear();
        }
        1 => {
            if let Ok(meta) = postcard::from_bytes::<CommitMeta>(data) {
                let _ = meta.check();
                let again = postcard::to_allocvec(&meta).expect("encode a decoded meta");
                let back: CommitMeta = postcard::from_bytes(&again).expect("decode");
                assert_eq!(back.id, meta.id);
                assert_eq!(back.positions, meta.positions);
            }
        }
        _ => {
            let mut input = Input(data);
            let mut want: Vec<(String, Option<Vec<u8>>)> = Vec::new();
            let mut changes = Changes::default();
            for _ in 0..input.len() {
                let key = input.string();
                let entry = (input.u8() & 1 == 1).then(|| input.blob().to_vec());
                match (&entry, input.u8() & 1) {
                    (Some(e), 1) => changes.put_sized(&key, e.len(), |b| b.extend_from_slice(e)),
                    _ => changes.put(&key, entry.as_deref()),
                }
                want.push((key, entry));
            }
            let got: Vec<(String, Option<Vec<u8>>)> = changes
                .iter()
                .map(|r| r.map(|(k, e)| (k.to_string(), e.map(<[u8]>::to_vec))))
                .collect::<Result<_, _>>()
                .expect("changed keys read back");
            assert_eq!(got, want);
            let bytes = postcard::to_allocvec(&changes).expect("encode changes");
            let back: Changes = postcard::from_bytes(&bytes).expect("decode changes");
            assert_eq!(back.iter().count(), want.len());
        }
    }
}

// --- what a plugin returns --------------------------------------------------

fn packed(input: &mut Input) -> t::Packed {
    let data = input.blob().to_vec();
    let ends = (0..input.len()).map(|_| input.u32() % 64).collect();
    t::Packed { data, ends }
}

fn metric_value(input: &mut Input) -> t::MetricValue {
    if input.u8() & 1 == 0 {
        t::MetricValue::Single(input.f64())
    } else {
        t::MetricValue::Several(
            (0..input.len())
                .map(|_| (input.string(), input.f64()))
                .collect(),
        )
    }
}

/// The checked states: one per group, every one readable, together the
/// data up to the last end.
fn check_states(p: &crate::plugin::io::Packed, groups: usize) {
    assert_eq!(p.len(), groups);
    let total: usize = (0..p.len()).map(|i| p.get(i).len()).sum();
    assert_eq!(total, p.ends.last().map_or(0, |&e| e as usize));
}

/// What a hostile component may return — any states, offsets, metrics,
/// alerts and timers — through the host's checks: each is refused with a
/// contract error or passes with every index in range.
pub fn plugin_returns(data: &[u8]) {
    let mut input = Input(data);
    let keys = input.len();
    let max = input.len();
    match input.u8() % 3 {
        0 => {
            if let Ok(p) = packed_checked(packed(&mut input), keys) {
                check_states(&p, keys);
            }
        }
        1 => {
            let out: Vec<t::Metric> = (0..input.len())
                .map(|_| t::Metric {
                    group: input.u32() % 16,
                    name: input.string(),
                    value: metric_value(&mut input),
                })
                .collect();
            if let Ok(ms) = metrics_from_wit(out, keys, max) {
                assert!(ms.len() <= max);
                for m in &ms {
                    assert!((m.group as usize) < keys);
                    serde_json::to_string(&m.value).expect("a metric value serialises");
                }
            }
        }
        _ => {
            let states = packed(&mut input);
            let alerts = (0..input.len())
                .map(|_| t::Alert {
                    group: input.u32() % 16,
                    rule: input.string(),
                    severity: match input.u8() % 3 {
                        0 => t::Severity::Info,
                        1 => t::Severity::Warning,
                        _ => t::Severity::Critical,
                    },
                    message: input.string(),
                    time: input.u64() as i64,
                    value: (input.u8() & 1 == 1).then(|| input.f64()),
                })
                .collect();
            let timers = (0..input.len())
                .map(|_| t::Timer {
                    group: input.u32() % 16,
                    at: input.u64() as i64,
                })
                .collect();
            if let Ok(step) = step_from_wit(
                t::Step {
                    states,
                    alerts,
                    timers,
                },
                keys,
                max,
            ) {
                check_states(&step.states, keys);
                assert!(step.alerts.len() <= max && step.timers.len() <= max);
                assert!(step.alerts.iter().all(|a| (a.group as usize) < keys));
                assert!(step.timers.iter().all(|&(g, _)| (g as usize) < keys));
            }
        }
    }
}

// --- the HTTP API ------------------------------------------------------------

const ADMIN: &str = "fuzz-admin-token";
const READ: &str = "fuzz-read-token";

/// The routes the requests start from; the fuzzer appends the rest (more
/// path, a query string).
const ROUTES: [&str; 10] = [
    "/api/plugins",
    "/api/plugins/page-views",
    "/api/plugins/page-views/config",
    "/api/plugins/page-views/rollback",
    "/api/pipeline",
    "/ws",
    "/metrics",
    "/health",
    "/ready",
    "/",
];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

fn app_state(read_token: bool) -> crate::api::AppState {
    crate::api::AppState {
        registry: Arc::new(crate::status::Registry::default()),
        hub: crate::sink::Hub::new(),
        source: "fuzz".into(),
        checkpoint_interval: std::time::Duration::from_secs(1),
        control: None,
        admin_token: Arc::from(ADMIN),
        read_token: read_token.then(|| Arc::from(READ)),
        rate_limit: Arc::new(crate::api::admin::RateLimit::new(1e9, 1e9)),
        influx: Default::default(),
        cluster: None,
        sinks: serde_json::json!({"jsonl": [], "kafka": null, "status": "ok"}),
    }
}

/// An HTTP request built from the bytes — method, route, the rest of the
/// path and query, an `Authorization` header or none, WebSocket upgrade
/// headers or none, a body — served by the host's router (no plugin
/// control behind it, so changes stop at 503 once admitted). It must
/// answer, never with a 500; without the read token a guarded read gets
/// 401 or 403; a change never succeeds.
pub fn api(data: &[u8]) {
    use axum::http::{Method, Request};
    use tower::ServiceExt;

    let mut input = Input(data);
    let flags = input.u8();
    let read_token = flags & 1 == 1;
    let method = match (flags >> 1) & 7 {
        0 | 1 => Method::GET,
        2 => Method::PUT,
        3 => Method::PATCH,
        4 => Method::POST,
        5 => Method::DELETE,
        6 => Method::HEAD,
        _ => Method::OPTIONS,
    };
    let auth = match input.u8() % 5 {
        0 => None,
        1 => Some(format!("Bearer {READ}")),
        2 => Some(format!("Bearer {ADMIN}")),
        3 => Some("Bearer wrong".to_string()),
        _ => Some(String::from_utf8_lossy(input.blob()).into_owned()),
    };
    let route = ROUTES[usize::from(input.u8()) % ROUTES.len()];
    let tail = String::from_utf8_lossy(input.blob()).into_owned();
    let upgrade = flags & 0x10 != 0;
    let body = input.0.to_vec();
    let mut req = Request::builder()
        .method(method.clone())
        .uri(format!("{route}{tail}"));
    if let Some(a) = &auth {
        req = req.header("authorization", a.as_str());
    }
    if upgrade {
        req = req
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    }
    // What the HTTP layer would refuse before the router sees it.
    let Ok(req) = req.body(axum::body::Body::from(body)) else {
        return;
    };
    let path = req.uri().path().to_string();
    let has_query_token = req
        .uri()
        .query()
        .is_some_and(|q| q.contains("access_token"));
    let router = crate::api::router(app_state(read_token), "/nonexistent/dashboard".into());
    let status = runtime().block_on(async {
        let res = router.oneshot(req).await.expect("the router answers");
        let status = res.status();
        axum::body::to_bytes(res.into_body(), 1 << 24)
            .await
            .expect("the body is read");
        status
    });
    assert_ne!(status.as_u16(), 500, "{method} {path}");
    let known = ROUTES[..7].contains(&path.as_str());
    let guarded = crate::api::access::guarded(&method, &path);
    if read_token && known && guarded && auth.is_none() && !has_query_token {
        assert!(
            matches!(status.as_u16(), 401 | 405),
            "{method} {path} without the read token: {status}"
        );
    }
    // (Other paths fall through to the dashboard's page, whatever the method.)
    if method != Method::GET && method != Method::HEAD && ROUTES[1..4].contains(&path.as_str()) {
        assert!(!status.is_success(), "{method} {path} succeeded: {status}");
    }
}

// --- the exchange's wire format ----------------------------------------

/// The plugins both sides of [`exchange_wire`] run.
fn wire_slots() -> Vec<crate::pipeline::wire::SlotId> {
    use crate::pipeline::wire::SlotId;
    vec![
        SlotId::new(Arc::from("page-views"), false, "h1"),
        SlotId::new(Arc::from("sessions"), false, "h2"),
        SlotId::new(Arc::from("sessions"), true, "h3"),
    ]
}

/// What stage 2 can read of a decoded round's records: every record, and
/// every field of each routed event (which must be in its batch).
fn wire_view(
    round: &crate::pipeline::exchange::Round,
    records: &[crate::pipeline::exchange::Record],
) -> Vec<String> {
    use crate::pipeline::exchange::Record;
    records
        .iter()
        .map(|r| match r {
            Record::Partial(p) => format!(
                "partial {:?} slot {} wm {} {} {:?} {:?}",
                p.pos, p.slot, p.wm, p.wm_after, p.states.groups, p.states.late_fire
            ),
            Record::Event(e) => {
                let b = round
                    .batches
                    .get(e.batch as usize)
                    .unwrap_or_else(|| panic!("{e:?}: no batch {}", e.batch));
                let ev = b
                    .events
                    .get(e.index as usize)
                    .unwrap_or_else(|| panic!("{e:?}: no event {} in its batch", e.index));
                let text: Vec<Option<&str>> =
                    TextField::ALL.iter().map(|&f| b.text(ev, f)).collect();
                format!(
                    "event {:?} batch {} wm {} {} slots {:b}: {} {} {} {} {:?} {:?} {:?} {}",
                    e.pos,
                    e.batch,
                    e.wm,
                    e.wm_after,
                    e.slots,
                    b.origin.source,
                    b.partition_of_event(e.index as usize),
                    ev.offset,
                    ev.ts,
                    ev.latency_ms,
                    ev.value,
                    text,
                    b.raw(ev)
                )
            }
        })
        .collect()
}

/// Bytes from another host as an exchange payload
/// (`pipeline::wire::Inbox::add`). Refused cleanly, or decoded into a round
/// that stage 2 can read whole (every routed event in its batch, every
/// span on its bytes); and what decoded, encoded again and decoded again,
/// reads the same.
pub fn exchange_wire(data: &[u8]) {
    use crate::pipeline::wire::{Encoder, Inbox};
    let slots = wire_slots();
    let mut inbox = Inbox::new(&slots);
    if inbox.add(data).is_err() {
        let (round, records) = inbox.finish(0);
        assert!(
            round.batches.is_empty() && records.is_empty(),
            "a refused payload left records behind"
        );
        return;
    }
    let (round, records) = inbox.finish(7);
    let first = wire_view(&round, &records);
    let mut again = Vec::new();
    Encoder::new(&slots).encode(&round, &records, &mut again);
    let mut inbox = Inbox::new(&slots);
    if let Err(e) = inbox.add(&again) {
        panic!("a decoded payload, encoded again, is refused: {e}");
    }
    let (round2, records2) = inbox.finish(7);
    assert_eq!(
        first,
        wire_view(&round2, &records2),
        "read differently once re-encoded"
    );
}
