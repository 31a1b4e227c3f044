//! What the host refuses before it switches to a new version, over real
//! HTTP against the running host, each with the reason it gives: a version
//! that traps on recent events or reads a field it did not declare (the
//! smoke test), one whose state layout changed under the same state schema
//! (the fingerprint), a config its own JSON Schema refuses. Also: an added
//! plugin ends up `running`, fields are listed by name, a log request for
//! an unknown plugin is a 404.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const TOKEN: &str = "test-admin-token";

fn auth() -> [(&'static str, &'static str); 1] {
    [("Authorization", "Bearer test-admin-token")]
}

fn call(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let (code, text) = http(port, method, path, &auth(), body).expect("answered");
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn upload(port: u16, name: &str, query: &str, fixture: &str) -> (u16, Value) {
    let wasm = std::fs::read(test_plugins().join(format!("{fixture}.wasm"))).unwrap();
    call(port, "PUT", &format!("/api/plugins/{name}{query}"), &wasm)
}

fn plugin(port: u16, name: &str) -> Value {
    let (code, body) = http(port, "GET", "/api/plugins", &[], b"").unwrap();
    assert_eq!(code, 200);
    let list: Vec<Value> = serde_json::from_str(&body).unwrap();
    list.into_iter()
        .find(|p| p["name"] == name)
        .unwrap_or(Value::Null)
}

fn error_of(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error: {body}"))
}

#[test]
fn refused_uploads_say_why_and_leave_the_running_version() {
    let plugins = plugins_dir(&["page-views", "bot-burst"]);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let _host = HostCmd::new(plugins.path())
        .jsonl_sink("/dev/null")
        .listen(port)
        .data_dir(data.path())
        .rate(3000)
        .no_watch()
        .admin_token(TOKEN)
        .spawn();
    wait_ready(port);
    // Windows open: page-views holds states for the smoke test.
    let deadline = Instant::now() + Duration::from_secs(20);
    while plugin(port, "page-views")["counters"]["events_in"]
        .as_u64()
        .unwrap_or(0)
        < 3000
    {
        assert!(Instant::now() < deadline, "no events reached page-views");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A field read that describe() does not declare: every call panics.
    let (code, body) = upload(port, "page-views", "", "page-views-undeclared");
    assert_eq!(code, 422, "{body}");
    let e = error_of(&body);
    assert!(
        e.contains("smoke test on") && e.contains("recent events"),
        "{e}"
    );
    assert!(
        e.contains("field `page` is not declared in describe().fields"),
        "{e}"
    );

    // A trap on the sample events, with the plugin's own message.
    let (code, body) = upload(port, "page-views", "", "page-views-trap");
    assert_eq!(code, 422, "{body}");
    let e = error_of(&body);
    assert!(e.contains("page-views 1.4.0 cannot count"), "{e}");

    // The state's layout changed, the state schema did not.
    let (code, body) = upload(port, "page-views", "", "page-views-layout");
    assert_eq!(code, 409, "{body}");
    let e = error_of(&body);
    assert!(e.contains("changes the layout of its state"), "{e}");
    assert!(e.contains(".state_schema(2)"), "{e}");
    assert!(e.contains("?state=reset"), "{e}");

    // A config the plugin's schema refuses, on a config change and on an
    // upload, with the failing field's path.
    let (code, body) = call(
        port,
        "PATCH",
        "/api/plugins/bot-burst/config",
        br#"{"min_page_views": 0}"#,
    );
    assert_eq!(code, 422, "{body}");
    let e = error_of(&body);
    assert!(
        e.contains("config refused by the plugin's schema at /min_page_views"),
        "{e}"
    );
    let (code, body) = upload(
        port,
        "bot-burst",
        "?config=%7B%22min_page_views%22%3A%22lots%22%7D",
        "bot-burst-v2",
    );
    assert_eq!(code, 422, "{body}");
    assert!(error_of(&body).contains("/min_page_views"), "{body}");

    // None of it touched the running versions.
    let pv = plugin(port, "page-views");
    assert_eq!(pv["version"], "1.1.0");
    assert_eq!(pv["status"], "running");
    assert_eq!(pv["counters"]["dead_lettered"], 0, "{pv}");
    assert_eq!(pv["counters"]["traps"], 0, "{pv}");
    assert_eq!(plugin(port, "bot-burst")["config"]["min_page_views"], 30);

    // An accepted version says what its smoke test ran on.
    let (code, body) = upload(port, "page-views", "", "page-views-v2");
    assert_eq!(code, 200, "{body}");
    assert!(body["smoke"]["events"].as_u64().unwrap() > 0, "{body}");
    assert!(body["smoke"]["states"].as_u64().unwrap() > 0, "{body}");
    // With a reset, the new layout starts from empty state.
    let (code, body) = upload(port, "page-views", "?state=reset", "page-views-layout");
    assert_eq!(code, 200, "{body}");

    // A plugin added through the API is `running`, not stuck `swapping`.
    let (code, body) = upload(port, "golden-tumbling", "", "golden-tumbling");
    assert_eq!(code, 200, "{body}");
    assert_eq!(plugin(port, "golden-tumbling")["status"], "running");
    let (_, health) = http(port, "GET", "/health", &[], b"").unwrap();
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(
        health["components"]["plugins"]["golden-tumbling"],
        "running"
    );

    // Fields by name, as the plugin wrote them.
    assert_eq!(
        plugin(port, "bot-burst")["fields"],
        serde_json::json!(["event_type", "timestamp"])
    );
    let (code, _) = http(port, "GET", "/api/plugins/nope/logs", &[], b"").unwrap();
    assert_eq!(code, 404);
}
