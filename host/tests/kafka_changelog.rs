//! The changelog (`<group>-changelog`, one partition per key group, written
//! in every commit's transaction) against a real Kafka-protocol broker: a
//! host whose data dir is lost restores the group's state from Kafka, and
//! the outputs stay exactly-once.

mod common;

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{Duration, Instant};

use common::*;
use rtap_host::checkpoint::changelog::{self, Lineage, Writer};
use rtap_host::checkpoint::{Commit, CommitMeta, FORMAT, PluginMeta};
use rtap_host::kafka::KafkaConfig;
use rtap_host::sink::kafka::KafkaSink;
use rtap_host::state::keygroup::key_group;
use rtap_host::state::{Changes, PluginChanges, StoreConfig};
use rtap_host::window::Watermark;

/// The admin token of the hosts with an API.
const TOKEN: &str = "changelog-admin-token";

/// Plugin → key → entry.
type State = BTreeMap<String, BTreeMap<String, String>>;

/// The key groups `kgs` of a state.
fn only(state: &State, kgs: Range<u32>) -> State {
    state
        .iter()
        .map(|(p, keys)| {
            let keys = keys
                .iter()
                .filter(|(k, _)| kgs.contains(&key_group(k)))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (p.clone(), keys)
        })
        .collect()
}

/// One plugin's part of a test commit: name, rewrite, (key, entry) pairs.
type Part<'a> = (&'a str, bool, &'a [(&'a str, Option<&'a str>)]);

/// A commit of plugins' changes.
fn commit(id: u64, plugins: &[Part]) -> Commit {
    Commit {
        meta: CommitMeta {
            format: FORMAT,
            id,
            taken_at: 0,
            source: "test".into(),
            positions: Vec::new(),
            watermark: Watermark::new(0, 0),
            plugins: plugins
                .iter()
                .map(|(name, _, _)| PluginMeta {
                    name: name.to_string(),
                    hash: "h".into(),
                    version: "1".into(),
                    state_schema: 1,
                    op_meta: Vec::new(),
                })
                .collect(),
            files: Vec::new(),
            transactional: true,
        },
        plugins: plugins
            .iter()
            .map(|(name, rewrite, keys)| {
                let mut changes = Changes::default();
                for (k, v) in *keys {
                    changes.put(k, v.map(str::as_bytes));
                }
                PluginChanges {
                    name: name.to_string(),
                    rewrite: *rewrite,
                    changes,
                }
            })
            .collect(),
    }
}

/// The state the changelog holds at commit `g`: plugin → key → entry.
fn state_at(cfg: &KafkaConfig, g: u64) -> State {
    state_of(cfg, g, 0..128)
}

/// The entries of the key groups `kgs` the changelog holds at commit `g`:
/// plugin → key → stored entry.
fn entries_of(cfg: &KafkaConfig, g: u64, kgs: Range<u32>) -> BTreeMap<String, Entries> {
    let r = changelog::restore_key_groups(cfg, g, kgs.clone())
        .unwrap()
        .expect("a meta record");
    assert_eq!(r.meta.id, g);
    assert_eq!(r.key_groups, kgs);
    let mut out = BTreeMap::new();
    for p in &r.commit.plugins {
        let keys: &mut Entries = out.entry(p.name.clone()).or_default();
        for c in p.changes.iter() {
            let (k, v) = c.unwrap();
            keys.insert(k.to_string(), v.unwrap().to_vec());
        }
    }
    out
}

/// Key → stored entry.
type Entries = BTreeMap<String, Vec<u8>>;

/// The state of the key groups `kgs` the changelog holds at commit `g`
/// (the test commits' entries are text).
fn state_of(cfg: &KafkaConfig, g: u64, kgs: Range<u32>) -> State {
    entries_of(cfg, g, kgs)
        .into_iter()
        .map(|(p, keys)| {
            let keys = keys
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
                .collect();
            (p, keys)
        })
        .collect()
}

fn map(entries: &[(&str, &[(&str, &str)])]) -> BTreeMap<String, BTreeMap<String, String>> {
    entries
        .iter()
        .map(|(p, keys)| {
            (
                p.to_string(),
                keys.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        })
        .collect()
}

/// What counts in the changelog, written by the host's own writer through
/// its transactional sink: a transaction that aborted after its records
/// reached the broker (tansu shows them to `read_committed` readers) is
/// left out by its commit id — its changed keys, its deleted key and its
/// clear record of a rewritten plugin — while deletions, a removed plugin
/// and a plugin added again without its old keys are as committed.
#[test]
fn the_changelog_holds_the_committed_state_and_leaves_aborted_records_out() {
    let broker = Broker::start();
    let cfg = kafka_config(&broker, "g");
    rtap_host::kafka::ensure_topics(&cfg).unwrap();
    let run = |lineage: Lineage, plugins: Vec<String>, commits: Vec<(Commit, bool)>| {
        let mut sink = KafkaSink::new(&cfg, None).unwrap();
        sink.fence().unwrap();
        let mut w = Writer::new(lineage, plugins);
        for (c, commit) in commits {
            w.write(&mut sink, &c).unwrap();
            if commit {
                sink.commit(&[], c.meta.id).unwrap();
            } else {
                sink.abort().unwrap();
            }
        }
    };
    let (mut lineage, start) = Lineage::fresh(0, 10);
    assert_eq!(start, 10);
    let a = "a-key";
    run(
        lineage.clone(),
        Vec::new(),
        vec![
            (
                commit(
                    10,
                    &[
                        ("p", false, &[(a, Some("A")), ("gone", Some("X"))]),
                        ("q", false, &[("z", Some("Z"))]),
                        ("r", false, &[("y", Some("Y"))]),
                    ],
                ),
                true,
            ),
            (
                commit(
                    11,
                    &[
                        ("p", false, &[("gone", None), ("k2", Some("K2"))]),
                        ("q", false, &[]),
                        ("r", false, &[]),
                    ],
                ),
                true,
            ),
            // Aborted: `a` changed, `j` added, `k2` deleted, `q` rewritten.
            (
                commit(
                    12,
                    &[
                        (
                            "p",
                            false,
                            &[(a, Some("B")), ("j", Some("J")), ("k2", None)],
                        ),
                        ("q", true, &[]),
                        ("r", false, &[]),
                    ],
                ),
                false,
            ),
        ],
    );
    let raw = broker.read_records("g-changelog", 128);
    assert!(
        raw.iter().any(|r| r.header("rtap-commit") == Some("12")),
        "the broker hides aborted records: this test no longer tests what it says"
    );
    // A restart after commit 11: ids from 13 on, 12 declared aborted.
    assert_eq!(lineage.restart(11, 0), 13);
    run(
        lineage.clone(),
        vec!["p".into(), "q".into(), "r".into()],
        vec![
            // `r` removed…
            (
                commit(13, &[("p", false, &[("m", Some("C"))]), ("q", false, &[])]),
                true,
            ),
            // …and added again, without its old keys.
            (
                commit(
                    14,
                    &[
                        ("p", false, &[]),
                        ("q", false, &[]),
                        ("r", true, &[("y2", Some("Y2"))]),
                    ],
                ),
                true,
            ),
        ],
    );
    assert_eq!(
        state_at(&cfg, 11),
        map(&[
            ("p", &[(a, "A"), ("k2", "K2")]),
            ("q", &[("z", "Z")]),
            ("r", &[("y", "Y")]),
        ])
    );
    assert_eq!(
        state_at(&cfg, 13),
        map(&[
            ("p", &[(a, "A"), ("k2", "K2"), ("m", "C")]),
            ("q", &[("z", "Z")])
        ])
    );
    assert_eq!(
        state_at(&cfg, 14),
        map(&[
            ("p", &[(a, "A"), ("k2", "K2"), ("m", "C")]),
            ("q", &[("z", "Z")]),
            ("r", &[("y2", "Y2")]),
        ])
    );
    assert!(changelog::restore(&cfg, 99).unwrap().is_none());
    // One key group, or a range of them, is its partitions alone: what a
    // host that gains those key groups reads.
    let whole = state_at(&cfg, 14);
    let mut kgs: Vec<u32> = whole
        .values()
        .flat_map(|keys| keys.keys().map(|k| key_group(k)))
        .collect();
    kgs.sort();
    kgs.dedup();
    for kg in kgs {
        assert_eq!(
            state_of(&cfg, 14, kg..kg + 1),
            only(&whole, kg..kg + 1),
            "key group {kg}"
        );
    }
    assert_eq!(state_of(&cfg, 14, 0..64), only(&whole, 0..64));
    assert_eq!(
        state_of(&cfg, 11, 64..128),
        only(&state_at(&cfg, 11), 64..128)
    );
}

/// The state of a host's data dir after it stopped (its logged commits
/// folded) is, key group by key group, what the changelog holds at the
/// group's marker.
fn assert_store_is_the_changelog(cfg: &KafkaConfig, data: &std::path::Path) {
    let g = KafkaSink::new(cfg, None)
        .unwrap()
        .committed_marker()
        .unwrap()
        .expect("a marker");
    let store = rtap_host::checkpoint::Store::open(data, &StoreConfig::default()).unwrap();
    if !store.delta_ids().unwrap().is_empty() {
        store.compact(g).unwrap();
    }
    let meta = store.last().unwrap().expect("a commit");
    assert_eq!(meta.id, g, "the store is at the group's marker");
    for kgs in [0..1, 37..45, 127..128] {
        let from_changelog = entries_of(cfg, g, kgs.clone());
        let mut keys = 0;
        for p in &meta.plugins {
            let local: Entries = store
                .entries_in(&p.name, kgs.clone())
                .unwrap()
                .into_iter()
                .collect();
            keys += local.len();
            let logged = from_changelog.get(&p.name).cloned().unwrap_or_default();
            assert!(
                local == logged,
                "plugin `{}`, key groups {kgs:?}: {} keys in the store, {} in the changelog",
                p.name,
                local.len(),
                logged.len()
            );
        }
        eprintln!("key groups {kgs:?}: {keys} keys, the same in the store and the changelog");
    }
}

/// Exactly-once when the data dir is lost at every crash: 1 200 000 events
/// (out of order by up to 1.5 s) on 12 partitions, every shipped plugin.
/// The host is SIGKILLed four to six times (until 60 % of the input is committed) — inside a commit after its changelog
/// records were queued (the transaction aborts, and tansu shows its
/// records to `read_committed` readers all the same), after the Kafka
/// commit, and at random moments — and every restart gets a new, empty data
/// dir, on 2, 1 or 3 workers: the state comes from the changelog alone.
/// Every output of an uninterrupted run must be on the topics with the same
/// value, and nothing else.
#[test]
fn a_host_that_lost_its_data_dir_restores_from_the_changelog() {
    let n = 1_200_000usize;
    let broker = Broker::start();
    broker.create_events_topic();
    broker.produce_keyed(&gen_events(n as u64, 23, 2000));
    let plugins = plugins_dir(&SHIPPED);

    let ref_data = tempfile::tempdir().unwrap();
    run_to_end(
        kafka_host(
            &broker,
            plugins.path(),
            ref_data.path(),
            "reference",
            "ref-",
        )
        .args(["--workers", "1"])
        .watched(),
        &broker,
        "reference",
        n as i64,
    );
    let (want, _) = outputs(&broker, "ref-");
    assert!(want.len() > 10_000, "only {} outputs", want.len());

    let mut rng = Rng::from_env();
    let phases = ["prepared", "committed", "random"];
    // Restores expected: every start after a transaction committed.
    let (mut restored, mut expected, mut committed) = (0, 0, false);
    let mut dirs = Vec::new();
    let mut rounds = 0;
    for round in 0..6 {
        // How far a round gets depends on the machine: stop killing while
        // the last run still has input to restore into.
        if broker.committed("rtap") > n as i64 * 6 / 10 {
            break;
        }
        rounds += 1;
        let phase = phases[round % phases.len()];
        // A new data dir every time: what the last one held is lost.
        let data = tempfile::tempdir().unwrap();
        expected += usize::from(committed);
        let mut h = kafka_host(&broker, plugins.path(), data.path(), "rtap", "")
            .args(["--kafka-changelog"])
            .fault_commit_pause_ms(if phase == "random" { 1 } else { 100 })
            .args(["--workers", ["2", "1", "3"][round % 3]])
            .watched();
        let (pat, nth) = match phase {
            "random" => ("committed", 2),
            p => (p, 1 + rng.below(3) as usize),
        };
        assert!(
            h.wait_for(
                &format!("rtap-fault: {pat} commit"),
                nth,
                Duration::from_secs(90)
            ),
            "no commit seen: {}",
            h.log.join("\n")
        );
        if phase == "random" {
            std::thread::sleep(Duration::from_millis(rng.below(300)));
        }
        assert!(
            h.alive(),
            "the host ended before the kill: {}",
            h.log.join("\n")
        );
        let log = h.sigkill();
        committed |= log
            .iter()
            .any(|l| l.contains("rtap-fault: committed commit"));
        if let Some(l) = log
            .iter()
            .find(|l| l.contains("restored the state from the changelog"))
        {
            eprintln!("{l}");
            restored += 1;
        }
        eprintln!(
            "kill {} ({phase}): {} of {n} events committed",
            round + 1,
            broker.committed("rtap")
        );
        dirs.push(data);
    }
    assert!(
        rounds >= 4 && broker.committed("rtap") < n as i64,
        "{rounds} kills, {} of {n} events committed: every kill must land before the input is consumed",
        broker.committed("rtap")
    );
    let data = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let log = run_to_end(
        kafka_host(&broker, plugins.path(), data.path(), "rtap", "")
            .args(["--workers", "2", "--kafka-changelog"])
            .watched(),
        &broker,
        "rtap",
        n as i64,
    );
    let line = log
        .iter()
        .find(|l| l.contains("restored the state from the changelog"))
        .unwrap_or_else(|| panic!("the last run did not restore: {}", log.join("\n")));
    eprintln!("last run ({:?}): {line}", started.elapsed());
    restored += 1;
    expected += 1;
    // Every restart had an empty data dir.
    assert_eq!(restored, expected, "restores from the changelog");

    let (got, records) = outputs(&broker, "");
    let distinct: usize = got.values().map(|v| v.len()).sum();
    eprintln!(
        "reference: {} ids; restored run: {} ids, {distinct} distinct (id, value) pairs in {records} records",
        want.len(),
        got.len()
    );
    assert_same_outputs(&want, &got);
    assert_store_is_the_changelog(&kafka_config(&broker, "rtap"), data.path());
}

/// Failover: two hosts of one group, each started with `--standby` and a
/// data dir and plugins folder of its own, on a live stream (at most 10 000 events/s into 12
/// partitions). The first one processes, the other waits. The active host
/// is SIGKILLed right after one of its commits, ten times; each time the
/// standby takes over — its data dir does not fit the group's last commit,
/// so it restores from the changelog — and the killed host is started again
/// on its old data dir, as the new standby. Then the rest of the 1 200 000
/// events arrive at once. The outputs equal an uninterrupted run's. The
/// failover time of every kill (SIGKILL → the standby's first commit) is
/// printed: BENCHMARKS.md, "Failover". Before the 3rd kill, page-views is
/// swapped through the active host's API for a build of the same logic
/// under another version, and before the 6th it is rolled back through
/// the then active host's: every new active host runs the group's version
/// (though its own folder held another), and the outputs still equal the
/// uninterrupted run's.
#[test]
fn a_standby_takes_over_when_the_active_host_dies() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let n = 1_200_000usize;
    let broker = Arc::new(Broker::start());
    broker.create_events_topic();
    let lines = gen_events(n as u64, 29, 2000);
    let feeding = Arc::new(AtomicBool::new(true));
    let feeder = {
        let (broker, feeding) = (broker.clone(), feeding.clone());
        std::thread::spawn(move || {
            let mut fed = 0;
            while fed < lines.len() && feeding.load(Ordering::Relaxed) {
                let end = (fed + 1_000).min(lines.len());
                broker.produce_keyed(&lines[fed..end]);
                fed = end;
                std::thread::sleep(Duration::from_millis(100));
            }
            broker.produce_keyed(&lines[fed..]);
        })
    };
    // Each host its own plugins folder and API.
    let folders = [plugins_dir(&SHIPPED), plugins_dir(&SHIPPED)];
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let ports = [free_port(), free_port()];
    let host = |i: usize| {
        kafka_host_api(
            &broker,
            folders[i].path(),
            dirs[i].path(),
            ("rtap", ""),
            ports[i],
            TOKEN,
        )
        .args(["--standby"])
        .fault_commit_pause_ms(1)
        .watched()
    };
    let auth = format!("Bearer {TOKEN}");
    let page_views = |port: u16| -> String {
        let (code, body) = http(port, "GET", "/api/plugins", &[], b"").unwrap();
        assert_eq!(code, 200, "{body}");
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "page-views")
            .map(|p| p["version"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let v2 = std::fs::read(test_plugins().join("page-views-v2.wasm")).unwrap();
    // The version of page-views the active host runs after each kill.
    let mut version = "1.1.0";
    let waiting = "standby: another host commits for the group";
    let committed = "rtap-fault: committed commit";
    let mut active = host(0);
    assert!(
        active.wait_for(committed, 1, Duration::from_secs(60)),
        "{}",
        active.log.join("\n")
    );
    // The active host beats.
    let beats = rtap_host::checkpoint::alive::Watch::new(&kafka_config(&broker, "rtap")).unwrap();
    let first = beats.last().expect("a heartbeat");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        beats.last().expect("a heartbeat") > first,
        "the heartbeat stopped"
    );
    let mut standby = host(1);
    assert!(
        standby.wait_for(waiting, 1, Duration::from_secs(60)),
        "{}",
        standby.log.join("\n")
    );
    let mut rng = Rng::from_env();
    let mut a = 0usize;
    let mut failovers = Vec::new();
    for kill in 1..=10 {
        assert!(
            active.wait_for(
                committed,
                1 + rng.below(10) as usize,
                Duration::from_secs(60)
            ),
            "{}",
            active.log.join("\n")
        );
        // Plugin changes through the active host's API, right before it
        // dies: a swap (same logic, another version), later a rollback.
        let change = match kill {
            3 => Some(("PUT", "/api/plugins/page-views", &v2[..], "1.1.1")),
            6 => Some((
                "POST",
                "/api/plugins/page-views/rollback",
                &b""[..],
                "1.1.0",
            )),
            _ => None,
        };
        if let Some((method, path, body, to)) = change {
            let (code, reply) =
                http(ports[a], method, path, &[("Authorization", &auth)], body).unwrap();
            assert_eq!(code, 200, "{method} {path}: {reply}");
            version = to;
        }
        let killed = Instant::now();
        active.sigkill();
        assert!(
            standby.wait_for(committed, 1, Duration::from_secs(60)),
            "the standby did not take over: {}",
            standby.log.join("\n")
        );
        let took = killed.elapsed();
        assert_eq!(
            page_views(ports[1 - a]),
            version,
            "after kill {kill}, the new active host runs the group's page-views"
        );
        assert!(
            standby
                .log
                .iter()
                .any(|l| l.contains("restored the state from the changelog")),
            "{}",
            standby.log.join("\n")
        );
        failovers.push(took);
        // How long loading its plugins took, once it had the group (from
        // the compile cache it filled while it waited).
        let load = standby
            .log
            .iter()
            .rev()
            .find(|l| l.contains("plugins compiled"))
            .and_then(|l| log_number(l, "took_ms"))
            .map_or(String::new(), |ms| ms.to_string());
        eprintln!(
            "kill {kill}: host {} took over in {took:.1?} (its plugins loaded in {load} ms); {} of {n} events committed",
            1 - a,
            broker.committed("rtap")
        );
        a = 1 - a;
        active = standby;
        standby = host(1 - a);
        assert!(
            standby.wait_for(waiting, 1, Duration::from_secs(60)),
            "the killed host did not come back as the standby: {}",
            standby.log.join("\n")
        );
    }
    assert!(
        broker.committed("rtap") < n as i64,
        "the stream ended before the last kill"
    );
    feeding.store(false, Ordering::Relaxed);
    feeder.join().unwrap();
    // The standby watched the active host drain the rest at once (commits
    // of seconds under load): the heartbeat kept it from taking over.
    standby.wait_for("\u{0}", 1, Duration::from_secs(1));
    assert!(
        standby.alive(),
        "the standby stopped: {}",
        standby.log.join("\n")
    );
    assert!(
        !standby
            .log
            .iter()
            .any(|l| l.contains("the group stopped committing")),
        "the standby took over from a live host: {}",
        standby.log.join("\n")
    );
    drop(standby);
    run_to_end(active, &broker, "rtap", n as i64);
    failovers.sort();
    eprintln!(
        "failover after 10 SIGKILLs: min {:.1?}, median {:.1?}, max {:.1?}",
        failovers[0], failovers[5], failovers[9]
    );

    let ref_data = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(&SHIPPED);
    run_to_end(
        kafka_host(
            &broker,
            plugins.path(),
            ref_data.path(),
            "reference",
            "ref-",
        )
        .watched(),
        &broker,
        "reference",
        n as i64,
    );
    let (want, _) = outputs(&broker, "ref-");
    let (got, _) = outputs(&broker, "");
    assert_same_outputs(&want, &got);
}
