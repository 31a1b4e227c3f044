//! Hosts on the broker (`broker`) as the Kafka tests run them: each with its
//! own consumer group and output topics, run to the end of the input, and
//! what they wrote.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::*;

/// A host on the broker with its own group and output topics (`prefix`).
pub fn kafka_host(
    broker: &Broker,
    plugins: &std::path::Path,
    data: &std::path::Path,
    group: &str,
    prefix: &str,
) -> HostCmd {
    kafka_host_cmd(broker, plugins, data, group, prefix).no_server()
}

/// [`kafka_host`] with its HTTP API on `port`, changes allowed with the
/// admin token `token`.
pub fn kafka_host_api(
    broker: &Broker,
    plugins: &std::path::Path,
    data: &std::path::Path,
    (group, prefix): (&str, &str),
    port: u16,
    token: &str,
) -> HostCmd {
    kafka_host_cmd(broker, plugins, data, group, prefix)
        .listen(port)
        .admin_token(token)
}

fn kafka_host_cmd(
    broker: &Broker,
    plugins: &std::path::Path,
    data: &std::path::Path,
    group: &str,
    prefix: &str,
) -> HostCmd {
    HostCmd::new(plugins)
        .kafka_brokers(&broker.addr())
        .kafka_group(group)
        .kafka_metrics_topic(&format!("{prefix}processed-metrics"))
        .kafka_alerts_topic(&format!("{prefix}cep-alerts"))
        .kafka_marker_topic(&format!("{prefix}commit-marker"))
        .out_of_orderness("60s")
        .no_watch()
        .jsonl_sink("/dev/null")
        .data_dir(data)
}

/// Run until the group committed `n` input offsets, then stop with SIGTERM.
pub fn run_to_end(mut h: Watched, broker: &Broker, group: &str, n: i64) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while broker.committed(group) < n {
        assert!(h.alive(), "the host stopped: {}", h.log.join("\n"));
        assert!(
            Instant::now() < deadline,
            "the group committed only {} of {n}",
            broker.committed(group)
        );
        h.wait_for("\u{0}", 1, Duration::from_millis(500));
    }
    sigterm(h.child.id());
    let (st, log) = h.finish(Duration::from_secs(60));
    assert!(st.success(), "the host failed: {}", log.join("\n"));
    log
}

/// Every distinct payload per record key, and the number of records.
pub fn outputs(broker: &Broker, prefix: &str) -> (BTreeMap<String, BTreeSet<String>>, usize) {
    let mut by_id: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut records = 0;
    for (topic, parts) in [("processed-metrics", 6), ("cep-alerts", 3)] {
        for (k, v) in broker.read_all(&format!("{prefix}{topic}"), parts) {
            records += 1;
            by_id.entry(k).or_default().insert(v.to_string());
        }
    }
    (by_id, records)
}

/// The outputs of a killed or restored run equal those of an uninterrupted
/// one: no id missing, none extra, the same values (re-sent records of
/// aborted transactions, which tansu shows, are counted apart by the caller).
pub fn assert_same_outputs(
    want: &BTreeMap<String, BTreeSet<String>>,
    got: &BTreeMap<String, BTreeSet<String>>,
) {
    let missing: Vec<&String> = want
        .keys()
        .filter(|k| !got.contains_key(*k))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "outputs lost: {missing:?}");
    let extra: Vec<&String> = got
        .keys()
        .filter(|k| !want.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        extra.is_empty(),
        "outputs the uninterrupted run does not have: {extra:?}"
    );
    for (k, v) in want {
        assert_eq!(&got[k], v, "{k}: values differ from the uninterrupted run");
    }
}

/// The Kafka settings a host of `group` on `broker` runs with (the test
/// runs' defaults, the changelog on).
pub fn kafka_config(broker: &Broker, group: &str) -> rtap_host::kafka::KafkaConfig {
    rtap_host::kafka::KafkaConfig {
        brokers: broker.addr(),
        group: group.into(),
        events_topic: EVENTS.into(),
        metrics_topic: "processed-metrics".into(),
        alerts_topic: "cep-alerts".into(),
        dead_letter_topic: "rtap-dead-letters".into(),
        late_topic: "rtap-late-events".into(),
        // `kafka_host`'s, with no prefix.
        marker_topic: "commit-marker".into(),
        changelog_topic: format!("{group}-changelog"),
        changelog: true,
        cluster_topic: format!("{group}-cluster"),
        control_topic: format!("{group}-control"),
        transactional_id: format!("rtap-{group}"),
        options: Vec::new(),
        producer_options: Vec::new(),
        health: Default::default(),
    }
}
