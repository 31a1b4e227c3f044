//! The group's hosts as the API shows them, against a real Kafka-protocol
//! broker: `GET /api/cluster` on any host lists every host of the group
//! (from the `<group>-cluster` topic), `/health` gives each host's role, a
//! standby serves its API while it waits and refuses plugin changes, and
//! the view follows a SIGKILL, a takeover, a restart and clean stops.
//! Plugin changes are the group's: on `<group>-control` before their
//! barrier, and run by whichever host takes over.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const ADMIN: &str = "cluster-admin-token";

fn get(port: u16, path: &str) -> Option<(u16, Value)> {
    let (code, body) = http(port, "GET", path, &[], b"")?;
    Some((code, serde_json::from_str(&body).ok()?))
}

/// Poll `GET /api/cluster` on `port` until `ok` holds for it.
fn cluster_until(port: u16, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Some((200, v)) = get(port, "/api/cluster") {
            if ok(&v) {
                return v;
            }
            last = v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("GET /api/cluster on :{port}: not {what} after 60 s: {last:#}");
}

fn host_of<'a>(v: &'a Value, id: &str) -> Option<&'a Value> {
    v["hosts"].as_array()?.iter().find(|h| h["id"] == id)
}

fn role(v: &Value, id: &str) -> (String, String) {
    host_of(v, id).map_or((String::new(), String::new()), |h| {
        (
            h["role"].as_str().unwrap_or("").to_string(),
            h["status"].as_str().unwrap_or("").to_string(),
        )
    })
}

fn partitions(v: &Value, id: &str) -> Vec<i64> {
    host_of(v, id)
        .and_then(|h| h["partitions"].as_array())
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default()
}

fn is(v: &Value, id: &str, r: &str, st: &str) -> bool {
    role(v, id) == (r.to_string(), st.to_string())
}

/// Wait until `h` logs `line` (within 60 s).
fn wait_logged(h: &mut Watched, line: &str) {
    assert!(
        h.wait_for(line, 1, Duration::from_secs(60)),
        "not logged: {line}\n{}",
        h.log.join("\n")
    );
}

/// Wait until `h` logs that it waits as the group's standby.
fn wait_standby(h: &mut Watched) {
    wait_logged(h, "standby: another host commits for the group");
}

/// Produce `events` and wait until the group `shop` commits past what it
/// had committed before them (within 60 s), while `h` runs.
fn produce_and_wait_committed(broker: &Broker, h: &mut Watched, events: &[String], what: &str) {
    let before = broker.committed("shop");
    broker.produce_keyed(events);
    let deadline = Instant::now() + Duration::from_secs(60);
    while broker.committed("shop") <= before {
        assert!(Instant::now() < deadline, "{what}: {}", h.log.join("\n"));
        h.wait_for("\u{0}", 1, Duration::from_millis(200));
    }
}

/// A host of `group` on `broker`: its plugins folder, API port and data
/// dir, outputs to `/dev/null`, the folder not watched.
fn group_host(
    broker: &Broker,
    plugins: &std::path::Path,
    group: &str,
    port: u16,
    data: &std::path::Path,
) -> HostCmd {
    HostCmd::new(plugins)
        .kafka_brokers(&broker.addr())
        .kafka_group(group)
        .out_of_orderness("60s")
        .no_watch()
        .jsonl_sink("/dev/null")
        .listen(port)
        .admin_token(ADMIN)
        .data_dir(data)
}

#[test]
fn every_host_of_a_group_shows_in_the_cluster_view() {
    let broker = Broker::start();
    broker.create_events_topic();
    broker.produce_keyed(&gen_events(20_000, 41, 2000));
    let plugins = plugins_dir(&SHIPPED);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let host = |i: usize| {
        group_host(&broker, plugins.path(), "web", ports[i], dirs[i].path())
            .args([
                "--standby",
                "--host-id",
                &format!("host-{i}"),
                "--advertise-url",
                &format!("http://127.0.0.1:{}", ports[i]),
            ])
            .watched()
    };
    let all: Vec<i64> = (0..12).collect();
    let (a, b, c) = ("host-0", "host-1", "host-2");

    // host-0 processes, host-1 waits: both in either host's view.
    let mut active = host(0);
    wait_active(ports[0], &mut active);
    let mut standby = host(1);
    wait_standby(&mut standby);
    for port in [ports[0], ports[1]] {
        let v = cluster_until(port, "host-0 active, host-1 standby", |v| {
            is(v, a, "active", "live") && is(v, b, "standby", "live")
        });
        assert_eq!(v["group"], "web");
        assert_eq!(partitions(&v, a), all, "{v:#}");
        assert!(partitions(&v, b).is_empty(), "{v:#}");
        let kgs = host_of(&v, a).unwrap()["key_groups"].as_array().unwrap();
        assert_eq!(kgs.len(), 128, "{v:#}");
        assert_eq!(
            host_of(&v, a).unwrap()["api"],
            format!("http://127.0.0.1:{}", ports[0])
        );
        assert_eq!(v["last_rebalance"]["host"], a, "{v:#}");
        assert_eq!(v["last_rebalance"]["after_standby"], false, "{v:#}");
        assert_eq!(
            host_of(&v, if port == ports[0] { a } else { b }).unwrap()["this"],
            true
        );
    }

    // The standby answers, says what it is, is not ready, and sends plugin
    // changes to the active host.
    let (code, h) = get(ports[1], "/health").unwrap();
    assert_eq!((code, h["role"].as_str()), (200, Some("standby")), "{h:#}");
    assert_eq!(get(ports[1], "/ready").unwrap().0, 503);
    assert_eq!(get(ports[0], "/health").unwrap().1["role"], "active");
    let auth = format!("Bearer {ADMIN}");
    let (code, body) = http(
        ports[1],
        "PUT",
        "/api/plugins/page-views",
        &[("Authorization", &auth)],
        b"\0asm",
    )
    .unwrap();
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains("standby") && body.contains(a) && body.contains(&ports[0].to_string()),
        "the refusal names the active host: {body}"
    );

    // SIGKILL the active host: the standby takes over, the dead host shows
    // lost, and the last rebalance is the takeover.
    let killed = Instant::now();
    active.sigkill();
    let v = cluster_until(ports[1], "host-1 active, host-0 lost", |v| {
        is(v, b, "active", "live") && is(v, a, "active", "lost")
    });
    eprintln!(
        "SIGKILL → the view shows host-1 active and host-0 lost: {:.1?}",
        killed.elapsed()
    );
    assert_eq!(partitions(&v, b), all, "{v:#}");
    let r = &v["last_rebalance"];
    assert_eq!(
        (
            r["host"].as_str(),
            r["state_from"].as_str(),
            r["after_standby"].as_bool()
        ),
        (Some(b), Some("changelog"), Some(true)),
        "{v:#}"
    );
    assert_eq!(get(ports[1], "/health").unwrap().1["role"], "active");

    // The killed host comes back as the standby; a third host joins as a
    // standby too, then stops cleanly while it waits: it leaves the view.
    let mut back = host(0);
    wait_standby(&mut back);
    let mut third = host(2);
    wait_standby(&mut third);
    cluster_until(ports[1], "three hosts, two standbys", |v| {
        is(v, a, "standby", "live") && is(v, b, "active", "live") && is(v, c, "standby", "live")
    });
    sigterm(third.child.id());
    let (st, log) = third.finish(Duration::from_secs(20));
    assert!(
        st.success(),
        "a standby stopped with SIGTERM: {}",
        log.join("\n")
    );
    cluster_until(ports[0], "host-2 gone", |v| {
        host_of(v, c).is_none() && is(v, b, "active", "live")
    });

    // The active host stops cleanly: the standby takes over, and the
    // stopped host leaves the view at once.
    sigterm(standby.child.id());
    standby.wait_for("done", 1, Duration::from_secs(30));
    let v = cluster_until(ports[0], "host-0 active alone", |v| {
        is(v, a, "active", "live") && host_of(v, b).is_none()
    });
    assert_eq!(v["hosts"].as_array().unwrap().len(), 1, "{v:#}");
    assert_eq!(v["last_rebalance"]["host"], a, "{v:#}");
    drop(back);
}

/// The plugins `port` runs (`GET /api/plugins`), by name.
fn running(port: u16) -> std::collections::BTreeMap<String, Value> {
    let (code, v) = get(port, "/api/plugins").expect("GET /api/plugins");
    assert_eq!(code, 200, "{v}");
    let list = v
        .as_array()
        .cloned()
        .or_else(|| v["plugins"].as_array().cloned())
        .unwrap_or_else(|| panic!("not a plugin list: {v}"));
    list.into_iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p))
        .collect()
}

/// A standby's plugin list once `done` holds for it (within 30 s), each
/// plugin with the status `standby`.
fn listed_as_standby(
    port: u16,
    done: impl Fn(&std::collections::BTreeMap<String, Value>) -> bool,
) -> std::collections::BTreeMap<String, Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = running(port);
        if done(&listed) {
            for (name, p) in &listed {
                assert_eq!(p["status"], "standby", "{name}: {p:#}");
            }
            return listed;
        }
        assert!(
            Instant::now() < deadline,
            "the standby's list: {:#?}",
            listed
                .iter()
                .map(|(n, p)| (n, p["version"].clone(), p["status"].clone()))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running plugin's version and the version a rollback goes back to.
fn assert_versions(
    running: &std::collections::BTreeMap<String, Value>,
    plugin: &str,
    version: &str,
    previous: &str,
) {
    let p = &running[plugin];
    assert_eq!(
        (p["version"].as_str(), p["previous"]["version"].as_str()),
        (Some(version), Some(previous)),
        "{p:#}"
    );
}

/// Wait until `port` says it is the group's active host.
fn wait_active(port: u16, h: &mut Watched) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if get(port, "/health").is_some_and(|(_, v)| v["role"] == "active") {
            return;
        }
        h.wait_for("\u{0}", 1, Duration::from_millis(200));
    }
    panic!("not active after 60 s: {}", h.log.join("\n"));
}

/// The `.wasm` files of a plugins folder.
fn wasm_files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".wasm"))
        .collect();
    v.sort();
    v
}

/// Plugins are the group's, not a host's: a swap, a config change and a
/// removal through the active host's API are what the standby runs when
/// it takes over — though its own plugins folder still held the old
/// versions — and a host that joins later with an empty plugins folder
/// runs the group's plugins, the rollback target included, when it takes
/// over in turn. The active host is SIGKILLed right after the API
/// answered: what the API acknowledged is on `<group>-control`.
#[test]
fn a_host_that_takes_over_runs_the_groups_plugins() {
    let broker = Broker::start();
    broker.create_events_topic();
    broker.produce_keyed(&gen_events(20_000, 43, 2000));
    let folders = [
        plugins_dir(&SHIPPED),
        plugins_dir(&SHIPPED),
        tempfile::tempdir().unwrap(),
    ];
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let host = |i: usize| {
        group_host(&broker, folders[i].path(), "shop", ports[i], dirs[i].path())
            .args(["--standby", "--host-id", &format!("host-{i}")])
            .watched()
    };
    let auth = format!("Bearer {ADMIN}");
    let call = |port: u16, method: &str, path: &str, body: &[u8]| {
        let (code, body) = http(port, method, path, &[("Authorization", &auth)], body).unwrap();
        assert_eq!(code, 200, "{method} {path}: {body}");
    };
    let v2 = std::fs::read(test_plugins().join("page-views-v2.wasm")).unwrap();
    let v1 = std::fs::read(test_plugins().join("page-views.wasm")).unwrap();

    let mut active = host(0);
    wait_active(ports[0], &mut active);
    let mut standby = host(1);
    wait_standby(&mut standby);
    // A standby runs no plugin while it waits, and lists the group's.
    let listed = listed_as_standby(ports[1], |l| l.len() == SHIPPED.len());
    assert_eq!(listed["page-views"]["version"], "1.1.0");

    call(ports[0], "PUT", "/api/plugins/page-views", &v2);
    call(
        ports[0],
        "PATCH",
        "/api/plugins/bot-burst/config",
        br#"{"min_page_views": 5, "within_ms": 10000}"#,
    );
    call(ports[0], "DELETE", "/api/plugins/conversion-rate", b"");
    // It follows the group's changes (and compiles v2 ahead of a takeover).
    let listed = listed_as_standby(ports[1], |l| {
        !l.contains_key("conversion-rate")
            && l["page-views"]["version"] == "1.1.1"
            && l["bot-burst"]["config"]["min_page_views"] == 5
    });
    assert_versions(&listed, "page-views", "1.1.1", "1.1.0");
    let killed = Instant::now();
    active.sigkill();

    wait_active(ports[1], &mut standby);
    eprintln!("SIGKILL → host-1 active: {:.1?}", killed.elapsed());
    let on_b = running(ports[1]);
    assert_eq!(on_b.len(), SHIPPED.len() - 1, "{:?}", on_b.keys());
    assert!(
        on_b.values().all(|p| p["status"] == "running"),
        "after the takeover: {on_b:#?}"
    );
    assert!(!on_b.contains_key("conversion-rate"));
    assert_versions(&on_b, "page-views", "1.1.1", "1.1.0");
    assert_eq!(on_b["bot-burst"]["config"]["min_page_views"], 5);
    // Its folder now holds the group's versions.
    let b = folders[1].path();
    assert_eq!(std::fs::read(b.join("page-views.wasm")).unwrap(), v2);
    assert!(!b.join("conversion-rate.wasm").exists());
    assert!(
        standby
            .log
            .iter()
            .any(|l| l.contains("loaded the group's version")),
        "{}",
        standby.log.join("\n")
    );

    // A host with an empty plugins folder joins; host-1 rolls page-views
    // back; host-1 dies; the newcomer runs the group's plugins.
    let mut newcomer = host(2);
    wait_standby(&mut newcomer);
    call(ports[1], "POST", "/api/plugins/page-views/rollback", b"");
    standby.sigkill();
    wait_active(ports[2], &mut newcomer);
    let on_c = running(ports[2]);
    assert_eq!(
        on_c.keys().collect::<Vec<_>>(),
        on_b.keys().collect::<Vec<_>>()
    );
    assert_versions(&on_c, "page-views", "1.1.0", "1.1.1");
    assert_eq!(on_c["bot-burst"]["config"]["min_page_views"], 5);
    let c = folders[2].path();
    assert_eq!(
        wasm_files(c).len(),
        SHIPPED.len() - 1,
        "{:?}",
        wasm_files(c)
    );
    assert_eq!(std::fs::read(c.join("page-views.wasm")).unwrap(), v1);
    // It goes on processing: the group commits on.
    produce_and_wait_committed(
        &broker,
        &mut newcomer,
        &gen_events(5_000, 44, 2000),
        "host-2 commits nothing",
    );
}

/// A change is on `<group>-control` before its barrier. The active host
/// switches page-views to v2, is held right after the switch
/// (`RTAP_FAULT_SWITCH_PAUSE_MS`) while its processing thread commits state
/// that v2 wrote, and is SIGKILLed there, before its API answered. The
/// standby that takes over runs v2: it does not pair v2's committed state
/// with v1. (When the change was shared after its barrier, it ran v1.)
#[test]
fn a_change_is_shared_before_its_barrier() {
    let broker = Broker::start();
    let v2 = std::fs::read(test_plugins().join("page-views-v2.wasm")).unwrap();
    let b = killed_in_a_change(
        &broker,
        "RTAP_FAULT_SWITCH_PAUSE_MS",
        "rtap-fault: switched `page-views`",
        "/api/plugins/page-views",
        v2,
    );
    b.runs_page_views("1.1.1");
    assert_eq!(
        std::fs::read(b.folder.path().join("page-views.wasm")).unwrap(),
        std::fs::read(test_plugins().join("page-views-v2.wasm")).unwrap()
    );
}

/// The standby of [`killed_in_a_change`] once it took over.
struct TookOver {
    host: Watched,
    port: u16,
    folder: tempfile::TempDir,
    _dirs: Vec<tempfile::TempDir>,
}

impl TookOver {
    /// It runs page-views `version`.
    fn runs_page_views(&self, version: &str) {
        let p = &running(self.port)["page-views"];
        assert_eq!(
            p["version"],
            version,
            "the standby took over with {p:#}\n{}",
            self.host.log.join("\n")
        );
    }
}

/// Two hosts of group `shop` on `broker` (the shipped plugins, events in
/// the topic): the active one runs with the fault pause `fault` set, takes
/// a PUT of `wasm` to `path` (whose answer never comes) and is held once it
/// logs `held`; events produced then are committed, and it is SIGKILLed.
/// Returns the standby once it is active.
fn killed_in_a_change(
    broker: &Broker,
    fault: &str,
    held: &str,
    path: &'static str,
    wasm: Vec<u8>,
) -> TookOver {
    broker.create_events_topic();
    broker.produce_keyed(&gen_events(20_000, 45, 2000));
    let [f0, f1] = [plugins_dir(&SHIPPED), plugins_dir(&SHIPPED)];
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let host = |i: usize, folder: &std::path::Path| {
        group_host(broker, folder, "shop", ports[i], dirs[i].path()).args([
            "--standby",
            "--host-id",
            &format!("host-{i}"),
        ])
    };
    let mut active = host(0, f0.path()).env(fault, "120000").watched();
    wait_active(ports[0], &mut active);
    let mut standby = host(1, f1.path()).watched();
    wait_standby(&mut standby);
    let port = ports[0];
    // Its answer never comes: the host dies first.
    let put = std::thread::spawn(move || {
        let auth = format!("Bearer {ADMIN}");
        http(port, "PUT", path, &[("Authorization", &auth)], &wasm)
    });
    wait_logged(&mut active, held);
    produce_and_wait_committed(
        broker,
        &mut active,
        &gen_events(5_000, 46, 2000),
        "nothing committed while the change was held",
    );
    active.sigkill();
    let _ = put.join();
    wait_active(ports[1], &mut standby);
    TookOver {
        host: standby,
        port: ports[1],
        folder: f1,
        _dirs: dirs,
    }
}

/// A swap with the state reset that is shared ahead of its barrier but
/// never reaches it. The active host shares page-views 3.0.0 (state schema
/// 3, no migration from 1.1.x) with `?state=reset`, is held between the
/// sharing and the barrier (`RTAP_FAULT_SHARE_PAUSE_MS`) while its
/// processing thread goes on committing 1.1.x's state, and is SIGKILLed
/// there. The standby that takes over runs the group's version, 3.0.0,
/// from empty state, as the barrier would have left it (before, it refused
/// the committed state of schema 1 and stopped), and goes on committing.
#[test]
fn a_reset_shared_ahead_of_a_barrier_it_never_reached_starts_empty_at_the_takeover() {
    let broker = Broker::start();
    let v3 = std::fs::read(test_plugins().join("page-views-v4.wasm")).unwrap();
    let mut b = killed_in_a_change(
        &broker,
        "RTAP_FAULT_SHARE_PAUSE_MS",
        "rtap-fault: shared `page-views` ahead",
        "/api/plugins/page-views?state=reset",
        v3,
    );
    b.runs_page_views("3.0.0");
    assert!(
        b.host
            .log
            .iter()
            .any(|l| l.contains("shared but never committed")),
        "{}",
        b.host.log.join("\n")
    );
    produce_and_wait_committed(
        &broker,
        &mut b.host,
        &gen_events(5_000, 47, 2000),
        "nothing committed after the takeover",
    );
}

/// Which version wins when a host starts: a build copied into the folder
/// while the host was down is newer than the group's record, so it runs
/// (and is shared: the next host runs it too); a plugin file deleted while
/// the host was down comes back from the group; a plugin the group removed
/// leaves a folder that still holds an older copy.
#[test]
fn a_newer_file_wins_over_the_group_and_an_older_one_does_not() {
    let broker = Broker::start();
    broker.create_events_topic();
    broker.produce_keyed(&gen_events(5_000, 47, 2000));
    let folder = plugins_dir(&SHIPPED);
    let other = plugins_dir(&SHIPPED);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let host = |plugins: &std::path::Path, data: &std::path::Path| {
        group_host(&broker, plugins, "rules", port, data)
            .args(["--kafka-changelog"])
            .watched()
    };
    let stop = |h: Watched| {
        sigterm(h.child.id());
        let (st, log) = h.finish(Duration::from_secs(30));
        assert!(st.success(), "{}", log.join("\n"));
        log
    };
    let auth = format!("Bearer {ADMIN}");
    let v2 = std::fs::read(test_plugins().join("page-views-v2.wasm")).unwrap();
    let v1 = std::fs::read(test_plugins().join("page-views.wasm")).unwrap();

    // The group runs v2 and has no conversion-rate.
    let mut h = host(folder.path(), data.path());
    wait_active(port, &mut h);
    for (method, path, body) in [
        ("PUT", "/api/plugins/page-views", &v2[..]),
        ("DELETE", "/api/plugins/conversion-rate", &b""[..]),
    ] {
        let (code, reply) = http(port, method, path, &[("Authorization", &auth)], body).unwrap();
        assert_eq!(code, 200, "{method} {path}: {reply}");
    }
    stop(h);

    // While the host is down: v1 copied over page-views (newer than the
    // group's record), bot-burst deleted.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(folder.path().join("page-views.wasm"), &v1).unwrap();
    std::fs::remove_file(folder.path().join("bot-burst.wasm")).unwrap();
    let mut h = host(folder.path(), data.path());
    wait_active(port, &mut h);
    let on = running(port);
    assert_eq!(on["page-views"]["version"], "1.1.0", "the newer file runs");
    assert!(on.contains_key("bot-burst"), "bot-burst comes back");
    assert!(folder.path().join("bot-burst.wasm").is_file());
    assert!(!on.contains_key("conversion-rate"));
    let log = stop(h);
    assert!(
        log.iter()
            .any(|l| l.contains("the folder's version is newer than the group's")),
        "{}",
        log.join("\n")
    );

    // Another folder, older than every record, with conversion-rate still
    // in it: the group's plugins, v1 (shared by the last start) included.
    let data2 = tempfile::tempdir().unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    for f in wasm_files(other.path()) {
        std::fs::File::options()
            .write(true)
            .open(other.path().join(f))
            .and_then(|f| f.set_modified(old))
            .unwrap();
    }
    let mut h = host(other.path(), data2.path());
    wait_active(port, &mut h);
    let on = running(port);
    assert_eq!(on["page-views"]["version"], "1.1.0");
    assert!(!on.contains_key("conversion-rate"), "{:?}", on.keys());
    assert!(!other.path().join("conversion-rate.wasm").exists());
    assert_eq!(on.len(), SHIPPED.len() - 1);
    stop(h);
}

/// A change made through the API while the broker cannot be reached: it
/// runs at once, its record cannot reach the broker (a record waits 10 s
/// at most), and the host shares it again once the broker is back, so a
/// host that takes over later runs it too.
#[test]
fn a_change_made_while_the_broker_is_away_is_shared_once_it_is_back() {
    use sha2::Digest;
    let broker = Broker::start_behind_proxy();
    broker.create_events_topic();
    broker.produce_keyed(&gen_events(5_000, 45, 2000));
    let folder = plugins_dir(&SHIPPED);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut active = group_host(&broker, folder.path(), "away", port, data.path())
        .args(["--standby", "--host-id", "host-0"])
        .watched();
    wait_active(port, &mut active);
    let v2 = std::fs::read(test_plugins().join("page-views-v2.wasm")).unwrap();
    let v2_hash = hex::encode(sha2::Sha256::digest(&v2));
    let group_hash = |broker: &Broker| {
        broker
            .read_records("away-control", 1)
            .iter()
            .rfind(|r| r.key == "plugin/page-views")
            .and_then(|r| serde_json::from_slice::<Value>(&r.value).ok())
            .and_then(|v| v["current"]["hash"].as_str().map(str::to_string))
    };
    assert_ne!(group_hash(&broker).as_deref(), Some(v2_hash.as_str()));

    broker.cut();
    let auth = format!("Bearer {ADMIN}");
    let put = Instant::now();
    let (code, body) = http(
        port,
        "PUT",
        "/api/plugins/page-views",
        &[("Authorization", &auth)],
        &v2,
    )
    .expect("PUT answered");
    assert_eq!(code, 200, "{body}");
    eprintln!(
        "the PUT answered in {:.1?} with the broker away",
        put.elapsed()
    );
    let warning = "not shared with the group's other hosts yet";
    let warned = active.log.iter().any(|l| l.contains(warning))
        || active.wait_for(warning, 1, Duration::from_secs(30));
    assert!(warned, "{}", active.log.join("\n"));
    broker.mend();
    let back = Instant::now();
    let deadline = back + Duration::from_secs(60);
    while group_hash(&broker).as_deref() != Some(v2_hash.as_str()) {
        active.wait_for("\u{0}", 1, Duration::from_millis(200));
        assert!(
            Instant::now() < deadline,
            "the change never reached the group: {}",
            active.log.join("\n")
        );
    }
    eprintln!("shared {:.1?} after the broker came back", back.elapsed());
    // And the host still runs (its transactions went on after the cut).
    assert!(get(port, "/health").is_some_and(|(_, v)| v["role"] == "active"));
}
