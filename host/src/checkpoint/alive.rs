//! The group's heartbeat: how a standby tells a live host from a dead one.
//!
//! The active host commits, every [`BEAT`], the wall clock (ms) as the
//! offset of partition 0 of the marker topic for the group `<group>-alive`
//! — a plain offset commit from a thread of its own, outside the
//! transactions. A slow transaction (seconds, under load) therefore does not
//! make a live host look dead; only a host that stopped, or cannot reach
//! the broker, stops beating. A standby watches this offset together with
//! the group's marker (`crate::checkpoint::restore`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::KafkaConfig;

/// How often the active host beats.
pub const BEAT: Duration = Duration::from_millis(500);

fn group(cfg: &KafkaConfig) -> String {
    format!("{}-alive", cfg.group)
}

fn client(cfg: &KafkaConfig) -> Result<BaseConsumer, String> {
    cfg.client(&[
        ("group.id", group(cfg).as_str()),
        ("enable.auto.commit", "false"),
    ])
    .create()
    .map_err(|e| format!("the heartbeat client of `{}`: {e}", group(cfg)))
}

/// The heartbeat of the active host; stops when dropped.
pub struct Heartbeat {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    pub fn start(cfg: &KafkaConfig) -> Result<Self, String> {
        let consumer = client(cfg)?;
        let topic = cfg.marker_topic.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        let thread = std::thread::Builder::new()
            .name("rtap-heartbeat".into())
            .spawn(move || {
                while !halt.load(Ordering::Relaxed) {
                    let mut tpl = TopicPartitionList::new();
                    let now = crate::clock::now_ms();
                    if tpl
                        .add_partition_offset(&topic, 0, Offset::Offset(now))
                        .is_ok()
                        && let Err(e) = consumer.commit(&tpl, CommitMode::Sync)
                    {
                        tracing::debug!("heartbeat: {e}");
                    }
                    std::thread::sleep(BEAT);
                }
            })
            .map_err(|e| format!("spawning the heartbeat: {e}"))?;
        Ok(Heartbeat {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads the last heartbeat of a group.
pub struct Watch {
    consumer: BaseConsumer,
    topic: String,
}

impl Watch {
    pub fn new(cfg: &KafkaConfig) -> Result<Self, String> {
        Ok(Watch {
            consumer: client(cfg)?,
            topic: cfg.marker_topic.clone(),
        })
    }

    /// The last beat (ms), if any.
    pub fn last(&self) -> Option<i64> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, 0);
        let got = self
            .consumer
            .committed_offsets(tpl, Duration::from_secs(5))
            .ok()?;
        got.elements().first().and_then(|e| match e.offset() {
            Offset::Offset(o) if o >= 0 => Some(o),
            _ => None,
        })
    }
}
