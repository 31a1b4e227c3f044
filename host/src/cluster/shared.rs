//! `--share`: this host is one of the hosts of its `--kafka-group` that
//! divide the work among them (issue #28). Two threads:
//! - stage 1 ([`super::tasks::Tasks`] running
//!   [`super::stages::PipelineStage1`]): the input partitions the input's
//!   consumer group gives this host, read from the group's committed
//!   offsets and sent on to the key-group ranges through
//!   `<group>-exchange`;
//! - stage 2 ([`super::ranges::Ranges`] running
//!   [`super::stages::PipelineStage2`]): the ranges the ranges' consumer
//!   group gives it, each restored from `<group>-changelog` when taken up,
//!   writing its partition of the output topics.
//!
//! Both commit through their units' own transactional producers, so a
//! host that dies is one whose units the others open again (fencing its
//! transactions) after the session timeout, and a host that joins takes
//! some over. SIGINT or SIGTERM: both threads commit what they run and
//! leave.
//!
//! The topics, created when missing: `<group>-exchange` (a partition per
//! input partition and range), `<group>-exchange-tasks` (the tasks'
//! markers), `<group>-ranges` (the ranges' markers), `<group>-input-tasks`
//! and `<group>-exchange-ranges` (empty: what the two groups' members are
//! given, a partition per unit), and the changelog. The input offsets are
//! committed in the consumer group `<group>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::ranges::Ranges;
use super::stages::{PipelineStage1, PipelineStage2, Plugins};
use super::tasks::{InputGroup, Tasks};
use super::units::Step;
use crate::checkpoint::range::RangeTopics;
use crate::config::Config;
use crate::exchange::ExchangeTopics;
use crate::kafka::{KafkaConfig, ensure_exchange_topics, ensure_topic, partitions_of};
use crate::pipeline::TimeConfig;
use crate::plugin::Runtime;
use crate::status::Registry;

/// How long one step serves its group at most.
const STEP: Duration = Duration::from_millis(10);

/// How often each range's watermark and its tasks' seals are logged (at
/// debug level).
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// The topics of `--share` for group `k.group` with `ranges` ranges of an
/// input of `tasks` partitions, created when missing; output topics with
/// fewer partitions than ranges are refused.
pub fn topics(k: &KafkaConfig, tasks: u32, ranges: u32) -> Result<RangeTopics, String> {
    let g = &k.group;
    let exchange = ExchangeTopics {
        topic: format!("{g}-exchange"),
        tasks,
        ranges,
        marker_topic: format!("{g}-exchange-tasks"),
        marker_group: format!("{g}-exchange-tasks"),
        transactional_prefix: k.transactional_id.clone(),
    };
    let t = RangeTopics {
        ranges,
        changelog: k.changelog_topic.clone(),
        marker_topic: format!("{g}-ranges"),
        marker_group: format!("{g}-ranges"),
        owners_group: format!("{g}-owners"),
        transactional_prefix: k.transactional_id.clone(),
        exchange,
    };
    let err = |e: crate::kafka::KafkaSetupError| e.to_string();
    ensure_exchange_topics(
        k,
        &t.exchange.topic,
        t.exchange.partitions(),
        &t.exchange.marker_topic,
        tasks as i32,
    )
    .map_err(err)?;
    ensure_topic(k, &t.marker_topic, ranges as i32).map_err(err)?;
    ensure_topic(k, &format!("{g}-input-tasks"), tasks as i32).map_err(err)?;
    ensure_topic(k, &format!("{g}-exchange-ranges"), ranges as i32).map_err(err)?;
    for topic in [&k.metrics_topic, &k.alerts_topic] {
        let have = partitions_of(k, topic).map_err(err)?;
        if have < ranges as i32 {
            return Err(format!(
                "--share with {ranges} key-group ranges writes range r to partition r of `{topic}`, which has {have} partitions: lower --key-group-ranges or add partitions"
            ));
        }
    }
    Ok(t)
}

/// Say what a step changed.
fn report(what: &str, step: &Step) {
    if !step.gained.is_empty() || !step.lost.is_empty() {
        tracing::info!(gained = ?step.gained, lost = ?step.lost, "{what}");
    }
    for (u, why) in &step.failed {
        tracing::warn!(unit = u, "{what}: {why}");
    }
}

/// Run this host's share of group `k.group` until `stop`, keeping
/// `registry` told what it runs (the input partitions and key groups of
/// its record in `<group>-cluster`, the events read).
pub fn run(
    config: &Config,
    k: &KafkaConfig,
    runtime: &Runtime,
    stop: Arc<AtomicBool>,
    registry: &Arc<Registry>,
) -> Result<(), String> {
    let tasks = partitions_of(k, &k.events_topic).map_err(|e| e.to_string())?;
    if tasks <= 0 {
        return Err(format!(
            "the input topic `{}` has no partitions",
            k.events_topic
        ));
    }
    let ranges = config.key_group_ranges;
    let topics = topics(k, tasks as u32, ranges)?;
    let plugins = Arc::new(Plugins::load(
        runtime,
        &config.plugins,
        TimeConfig::from_config(config),
    )?);
    let member = format!(
        "{}/{}",
        super::Identity::from_config(config).id,
        std::process::id()
    );
    let every = config.share_commit_interval.0;
    tracing::info!(
        group = %k.group,
        member = %member,
        input_partitions = tasks,
        ranges,
        "sharing the group's work"
    );
    let stage1 = {
        let (k, topics, plugins, stop, member, registry) = (
            k.clone(),
            topics.clone(),
            plugins.clone(),
            stop.clone(),
            member.clone(),
            registry.clone(),
        );
        std::thread::Builder::new()
            .name("stage1".into())
            .spawn(move || -> Result<(), String> {
                let s1 = PipelineStage1::new(&plugins, ranges, &k.events_topic)?;
                let input = InputGroup {
                    topic: k.events_topic.clone(),
                    group: format!("{}-input-members", k.group),
                    tasks_topic: format!("{}-input-tasks", k.group),
                    offsets_group: k.group.clone(),
                };
                let mut tasks = Tasks::join(&k, topics.exchange, &input, &member, every, s1)
                    .map_err(|e| e.to_string())?;
                while !stop.load(Ordering::Relaxed) {
                    let step = tasks.step(STEP);
                    report("input partitions", &step);
                    registry
                        .stats
                        .events_in
                        .fetch_add(step.records as u64, Ordering::Relaxed);
                    if !step.gained.is_empty() || !step.lost.is_empty() {
                        *registry.partitions.lock().expect("registry lock") =
                            tasks.running().iter().map(|&p| p as i32).collect();
                    }
                }
                registry.partitions.lock().expect("registry lock").clear();
                report("input partitions at the stop", &tasks.leave());
                Ok(())
            })
            .map_err(|e| e.to_string())?
    };
    let s2 = PipelineStage2::new(plugins, ranges, &k.metrics_topic, &k.alerts_topic);
    let mut units = Ranges::join(
        k,
        topics.clone(),
        &format!("{}-range-members", k.group),
        &format!("{}-exchange-ranges", k.group),
        &member,
        every,
        s2,
    )
    .map_err(|e| e.to_string())?;
    let mut said = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) && !stage1.is_finished() {
        if said.elapsed() >= PROGRESS_EVERY {
            said = std::time::Instant::now();
            for p in units.progress() {
                tracing::debug!(range = p.range, seals = ?p.seals, waiting = p.waiting, "key-group range");
            }
        }
        let step = units.step(STEP);
        report("key-group ranges", &step);
        if !step.gained.is_empty() || !step.lost.is_empty() || !step.failed.is_empty() {
            let kgs = units
                .running()
                .into_iter()
                .flat_map(|r| topics.key_groups(r))
                .collect();
            *registry.key_groups.lock().expect("registry lock") = Some(kgs);
        }
    }
    report("key-group ranges at the stop", &units.leave());
    stop.store(true, Ordering::Relaxed);
    stage1
        .join()
        .map_err(|_| "the stage-1 thread panicked".to_string())?
}
