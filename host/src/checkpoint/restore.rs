//! Start-up recovery: find the commit to resume from and load it into the
//! pipeline.
//!
//! With the Kafka sink the group's commit marker decides (see the module
//! docs of `crate::checkpoint`): logged commits up to it are folded in,
//! those after it discarded; a store and a marker that do not belong
//! together refuse the start, before this host fences anyone. Then each
//! plugin's state is loaded (migrated when the loaded version migrates from
//! the committed schema), the output files are cut back to their committed
//! lengths, and the watermark and positions come back.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::alive::Watch;
use super::changelog::{self, LINEAGE_KEY, Lineage};
use super::{CommitMeta, Store};
use crate::event::Position;
use crate::pipeline::Pipeline;
use crate::pipeline::exchange::owned;
use crate::sink::kafka::{KafkaSink, KafkaSinkError};
use crate::state::StateError;
use crate::status::{Registry, Role};
use crate::window::Watermark;

/// Why the host cannot start from this state.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Kafka(#[from] KafkaSinkError),
    #[error(transparent)]
    Sink(#[from] crate::sink::jsonl::SinkError),
    /// The state does not fit this run (another group, source or plugin
    /// version): the message says which and what to do.
    #[error("{0}")]
    Refused(String),
    /// Asked to stop (SIGINT/SIGTERM) while waiting as a standby.
    #[error("stopped while waiting as the standby")]
    Stopped,
}

/// The store checked against the group's marker.
#[derive(Default)]
pub struct Settled {
    marker: Option<u64>,
    /// `None` without Kafka.
    lineage: Option<Lineage>,
    rebuilt: bool,
    waited: bool,
    /// When the standby wait ended.
    began: Option<std::time::Instant>,
}

/// What recovery works with.
pub struct Restore<'a> {
    pub store: &'a Store,
    /// The transactional sink, not yet fenced.
    pub kafka: Option<&'a KafkaSink>,
    /// The Kafka consumer group (for the messages).
    pub group: &'a str,
    /// `--no-restore`: start from empty state.
    pub fresh: bool,
    /// The source's name (`kafka:TOPIC`, `file:PATH`, `simulator`).
    pub source: &'a str,
    /// The partitions of the events topic, when the source is Kafka.
    pub kafka_partitions: Option<&'a [i32]>,
    /// With the changelog: where to read it (a store that does not fit
    /// the group's marker is rebuilt from it).
    pub changelog: Option<&'a crate::kafka::KafkaConfig>,
    /// `--standby`: wait while another host commits for the group.
    pub standby: bool,
    /// How long the marker must stand still before this host, whose store
    /// does not fit it, takes the group over.
    pub takeover_after: std::time::Duration,
    /// Set on SIGINT/SIGTERM: a standby stops waiting.
    pub stop: Option<&'a std::sync::atomic::AtomicBool>,
}

/// Where the run resumes.
pub struct Restored {
    /// The commit the state is at; this run's commits follow it.
    pub commit_id: u64,
    /// The committed position of every source partition.
    pub positions: BTreeMap<i32, Position>,
    /// Whether a commit was loaded (else the run starts from the source's
    /// beginning, or the group's offsets).
    pub restored: bool,
    /// The committed watermark.
    pub watermark: Option<Watermark>,
    /// With Kafka: which commit ids count, this run's first one declared
    /// (see `crate::checkpoint::changelog`).
    pub lineage: Option<Lineage>,
    /// The plugins of the commit the run starts from.
    pub plugins: Vec<String>,
    /// Whether the store was rebuilt from the changelog.
    pub rebuilt: bool,
    /// Whether this host waited as a standby first.
    pub waited: bool,
    /// When the restore began (after any standby wait).
    pub began: std::time::Instant,
}

impl Restore<'_> {
    /// A restore's first half: settle the store with the group's Kafka
    /// marker (a standby waits here, and the host fences the group's last
    /// one), before the pipelines are built — a standby loads the group's
    /// plugins only once it takes over. Then [`Restore::load`].
    pub fn settle_store(&self, registry: &Registry) -> Result<Settled, RestoreError> {
        if self.fresh {
            self.store.clear()?;
        }
        registry.role.set(Role::Restoring);
        let began = std::time::Instant::now();
        let mut settled = self.settle(registry)?;
        settled.began.get_or_insert(began);
        Ok(settled)
    }

    /// A restore's second half: load the settled store's last commit into
    /// the workers' `pipelines`, each key into the one that owns its key
    /// group.
    ///
    /// `resets`: per plugin whose running version the group swapped in with
    /// its state reset, that version's content hash (see
    /// [`Self::load_plugins`]).
    pub fn load(
        self,
        settled: Settled,
        pipelines: &mut [Pipeline],
        registry: &Registry,
        resets: &BTreeMap<String, String>,
    ) -> Result<Restored, RestoreError> {
        let Settled {
            marker,
            lineage,
            rebuilt,
            waited,
            began,
        } = settled;
        let began = began.unwrap_or_else(std::time::Instant::now);
        let last = self.store.last()?;
        let mut commit_id = last.as_ref().map_or(0, |m| m.id);
        let lineage = match lineage {
            Some(mut l) => {
                // Ids are never reused (see `crate::checkpoint::changelog`):
                // this run starts past any id a crashed run may have used.
                let g = commit_id.max(marker.unwrap_or(0));
                let start = if self.fresh {
                    let (fresh, start) = Lineage::fresh(g, changelog::now_us());
                    l = fresh;
                    start
                } else {
                    l.restart(g, changelog::now_us())
                };
                let bytes = postcard::to_allocvec(&l).expect("a lineage serializes");
                self.store.put_record(LINEAGE_KEY, &bytes)?;
                commit_id = start - 1;
                Some(l)
            }
            None => None,
        };
        let Some(cp) = last else {
            return Ok(Restored {
                commit_id,
                positions: BTreeMap::new(),
                restored: false,
                watermark: None,
                lineage,
                plugins: Vec::new(),
                rebuilt,
                waited,
                began,
            });
        };
        self.check_source(&cp)?;
        for p in pipelines.iter_mut() {
            self.load_plugins(&cp, p, resets)?;
        }
        // What the sinks wrote after the commit is written again.
        for (path, len) in &cp.files {
            let cut = crate::sink::jsonl::truncate_to(path, *len)?;
            if cut > 0 {
                tracing::info!(
                    path,
                    bytes = cut,
                    "cut output written after the last commit"
                );
            }
        }
        registry
            .stats
            .last_checkpoint
            .store(cp.taken_at, Ordering::Relaxed);
        tracing::info!(id = cp.id, source = %cp.source, partitions = cp.positions.len(), "restored state");
        Ok(Restored {
            commit_id,
            positions: cp.positions.iter().copied().collect(),
            restored: true,
            watermark: Some(cp.watermark.clone()),
            lineage,
            plugins: cp.plugins.iter().map(|p| p.name.clone()).collect(),
            rebuilt,
            waited,
            began,
        })
    }

    /// With Kafka: check the group's marker against the store, take the
    /// transactional id over, and fold the logged commits up to the marker
    /// (discarding those after it) — or, when the store does not fit the
    /// marker and the changelog is written, rebuild the store from the
    /// changelog. Returns the marker and the lineage of commit ids (`None`
    /// without Kafka).
    fn settle(&self, registry: &Registry) -> Result<Settled, RestoreError> {
        let Some(k) = self.kafka else {
            let logged = self.store.delta_ids()?;
            if let (Some(first), Some(last)) = (logged.first(), logged.last()) {
                return Err(RestoreError::Refused(format!(
                    "the state in {} has commits #{first}..#{last} whose Kafka transactions can only be checked with --kafka-brokers: \
                     start with the Kafka settings it ran with, or with --no-restore",
                    self.store.path().display(),
                )));
            }
            return Ok(Settled::default());
        };
        // Check before taking the transactional id over, so a second host
        // started by mistake refuses without fencing the running one.
        let seen = k.committed_marker()?;
        let mut waited = false;
        let mut began = None;
        let fits = self.fits(seen)?;
        // With the changelog every active host beats (`super::alive`).
        let beats = self
            .changelog
            .map(Watch::new)
            .transpose()
            .map_err(RestoreError::Refused)?;
        // A store that fits the marker is not enough: a host that took the
        // group over has not committed yet in its first second, so the
        // marker is still the last one of this store. Its heartbeat says it
        // lives.
        if !fits || self.beat_is_recent(beats.as_ref()) {
            if self.changelog.is_none() {
                return Err(self.refusal(seen));
            }
            waited = self.watch_marker(k, seen, beats.as_ref(), registry)?;
            began = Some(std::time::Instant::now());
        }
        k.fence()?;
        let marker = k.committed_marker()?;
        let rebuild = !self.fits(marker)?;
        if rebuild && self.changelog.is_none() {
            return Err(self.refusal(marker));
        }
        if rebuild {
            let g = marker.expect("a store that does not fit means a marker");
            return Ok(Settled {
                marker,
                lineage: Some(self.rebuild(g)?),
                rebuilt: true,
                waited,
                began,
            });
        }
        let lineage = match self.store.get_record(LINEAGE_KEY)? {
            Some(b) => postcard::from_bytes(&b).map_err(|e| StateError::Corrupt {
                path: self.store.path().to_path_buf(),
                why: format!("the lineage of commit ids: {e}"),
            })?,
            None => Lineage::default(),
        };
        let logged = self.store.delta_ids()?;
        if logged.is_empty() {
            return Ok(Settled {
                marker,
                lineage: Some(lineage),
                rebuilt: false,
                waited,
                began,
            });
        }
        let g = marker.unwrap_or(0);
        let gone = self.store.discard_after(g)?;
        if !gone.is_empty() {
            tracing::info!(ids = ?gone, "discarded a prepared commit: its Kafka transaction did not commit");
        }
        let f = self.store.compact(g)?;
        if f.commits > 0 {
            // The fold skipped the write-ahead log: make it durable.
            self.store.flush()?;
            tracing::info!(
                id = g,
                commits = f.commits,
                keys = f.keys,
                "rolled a prepared commit forward: its Kafka transaction committed"
            );
        }
        Ok(Settled {
            marker,
            lineage: Some(lineage),
            rebuilt: false,
            waited,
            began,
        })
    }

    /// Whether the group's heartbeat (`beats`, with the changelog) is
    /// younger than `takeover_after`.
    fn beat_is_recent(&self, beats: Option<&Watch>) -> bool {
        beats
            .and_then(Watch::last)
            .is_some_and(|b| crate::clock::now_ms() - b < self.takeover_after.as_millis() as i64)
    }

    /// A store that does not fit the marker, or a heartbeat that is recent:
    /// another host may be committing for the group (a live host commits at
    /// least once a second, and beats every 500 ms: `super::alive`). Watch
    /// the marker and the heartbeat (`beats`) until both have stood still
    /// for `takeover_after`; a marker that moves refuses the start —
    /// nothing was fenced yet — or, on a standby, restarts the watch.
    /// Returns whether it waited.
    fn watch_marker(
        &self,
        k: &KafkaSink,
        seen: Option<u64>,
        beats: Option<&Watch>,
        registry: &Registry,
    ) -> Result<bool, RestoreError> {
        use std::time::{Duration, Instant};
        let beat = || beats.and_then(Watch::last);
        let (mut seen, mut still, mut last_beat) = (seen, Instant::now(), beat());
        let mut waited = false;
        while still.elapsed() < self.takeover_after {
            std::thread::sleep(Duration::from_millis(100).min(self.takeover_after));
            if self.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                return Err(RestoreError::Stopped);
            }
            let now = k.committed_marker()?;
            let b = beat();
            if now == seen && b == last_beat {
                continue;
            }
            last_beat = b;
            if !self.standby {
                return Err(RestoreError::Refused(format!(
                    "the Kafka consumer group `{}` is committing (its marker moved from transaction #{} to #{}, or its heartbeat went on, while this host watched it): \
                     another host runs this pipeline. Refusing to start rather than fence it: stop that host first (a host with \
                     a lost or stale data dir then restores the group's state from the changelog `{}`), start this one with \
                     --standby to take over when that host stops, or use another --kafka-group",
                    self.group,
                    seen.unwrap_or(0),
                    now.unwrap_or(0),
                    self.changelog.map_or("", |c| c.changelog_topic.as_str()),
                )));
            }
            if !waited {
                tracing::info!(
                    group = self.group,
                    marker = now.unwrap_or(0),
                    takeover_after = ?self.takeover_after,
                    "standby: another host commits for the group; taking over once it stops"
                );
                registry.role.set(Role::Standby);
                waited = true;
            }
            (seen, still) = (now, Instant::now());
        }
        if waited {
            tracing::info!(
                group = self.group,
                marker = seen.unwrap_or(0),
                "standby: the group stopped committing; taking it over"
            );
            registry.role.set(Role::Restoring);
        }
        Ok(waited)
    }

    /// Replace the store with the state the changelog holds at commit `g`.
    fn rebuild(&self, g: u64) -> Result<Lineage, RestoreError> {
        let cfg = self.changelog.expect("rebuild needs the changelog");
        let local = self.store.last()?.map(|m| m.id);
        let r = changelog::restore(cfg, g)
            .map_err(RestoreError::Refused)?
            .ok_or_else(|| {
                RestoreError::Refused(format!(
                    "the Kafka consumer group `{}` last committed transaction #{g}, but the state in {} {} and the changelog \
                     `{}` has no record of #{g} (it was committed by a host without --kafka-changelog): use the data \
                     dir of the host that committed #{g}, or start with --no-restore (empty state from the group's committed \
                     offsets), or use another --kafka-group",
                    self.group,
                    self.store.path().display(),
                    local.map_or("is empty".to_string(), |l| format!("is at transaction #{l}")),
                    cfg.changelog_topic,
                ))
            })?;
        self.store.clear()?;
        self.store.apply(&r.commit, true)?;
        tracing::info!(
            id = g,
            local = ?local,
            records = r.records,
            keys = r.commit.keys(),
            took_ms = r.took.as_millis() as u64,
            meta_ms = r.meta_took.as_millis() as u64,
            topic = %cfg.changelog_topic,
            "restored the state from the changelog (the data dir was empty or did not fit the group's last commit)"
        );
        Ok(r.lineage)
    }

    /// Whether the store can resume from the marker: it is the store's
    /// state or one of its logged commits (or there is nothing to resume).
    fn fits(&self, marker: Option<u64>) -> Result<bool, RestoreError> {
        let Some(g) = marker else { return Ok(true) };
        let last = self.store.last()?.filter(|m| m.transactional).map(|m| m.id);
        let logged = self.store.delta_ids()?;
        if last == Some(g) || logged.contains(&g) {
            return Ok(true);
        }
        let local = logged.last().copied().or(last);
        Ok(local.is_none() && (self.fresh || self.kafka_partitions.is_none()))
    }

    /// Why a store that does not fit the marker refuses the start (without
    /// the changelog).
    fn refusal(&self, marker: Option<u64>) -> RestoreError {
        let g = marker.unwrap_or(0);
        let local = self
            .store
            .delta_ids()
            .ok()
            .and_then(|l| l.last().copied())
            .or_else(|| self.store.last().ok().flatten().map(|m| m.id));
        RestoreError::Refused(format!(
            "the Kafka consumer group `{}` last committed transaction #{g}, but the state in {} {}: \
             the group's offsets and this state do not belong together (another host runs or ran this pipeline, \
             or this data dir was lost or restored from an older copy), and without --kafka-changelog there is no copy of \
             the state in Kafka. Refusing to start rather than count events twice or not at all: use the data dir of \
             the host that committed #{g}, or start with --no-restore (empty state from the group's committed offsets), \
             or use another --kafka-group",
            self.group,
            self.store.path().display(),
            match local {
                Some(l) => format!("is at transaction #{l}"),
                None => "is empty".to_string(),
            }
        ))
    }

    /// The commit must come from this source (and, from Kafka, from
    /// partitions the topic still has).
    fn check_source(&self, cp: &CommitMeta) -> Result<(), RestoreError> {
        if cp.source != self.source {
            return Err(RestoreError::Refused(format!(
                "the state in {} was committed reading `{}`, not `{}`: run with --no-restore to start fresh, or use another --data-dir",
                self.store.path().display(),
                cp.source,
                self.source
            )));
        }
        let Some(partitions) = self.kafka_partitions else {
            return Ok(());
        };
        let gone: Vec<i32> = cp
            .positions
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| !partitions.contains(p))
            .collect();
        if !gone.is_empty() {
            return Err(RestoreError::Refused(format!(
                "the state in {} has read partitions {gone:?} of `{}`, which now has {} partitions: \
                 the topic was recreated or shrunk, so its offsets no longer match this state; \
                 start with --no-restore (empty state) or use another --data-dir",
                self.store.path().display(),
                self.source,
                partitions.len()
            )));
        }
        let new: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|p| !cp.positions.iter().any(|(q, _)| q == p))
            .collect();
        if !new.is_empty() && !cp.positions.is_empty() {
            tracing::warn!(partitions = ?new, "the events topic has partitions this state has not read: they are read from the group's committed offsets (else the earliest); one host reads every partition, so keyed state stays whole");
        }
        Ok(())
    }

    /// Each committed plugin's state into its slot: kept when the loaded
    /// version has the same state schema, migrated when it migrates from
    /// the committed one, else refused — unless the loaded version is one
    /// the group swapped in with its state reset (`resets`) and the
    /// committed state is another version's: the host that made the change
    /// shared it and died before its barrier, so no commit holds the
    /// change. The plugin then starts empty, as the barrier would have
    /// left it, and its next commit rewrites its state (the store's and
    /// the changelog's): as if the barrier had come at this commit, so
    /// every event is still processed by one version.
    fn load_plugins(
        &self,
        cp: &CommitMeta,
        pipeline: &mut Pipeline,
        resets: &BTreeMap<String, String>,
    ) -> Result<(), RestoreError> {
        for pm in &cp.plugins {
            if !pipeline.slots.iter().any(|s| *s.name == pm.name) {
                if pipeline.shard.worker == 0 {
                    tracing::warn!(plugin = %pm.name, "committed plugin is no longer loaded; its state is dropped");
                }
                continue;
            }
            // The worker's key groups are one range of the store: it reads
            // its own keys only, whatever the worker count of the commit.
            let shard = pipeline.shard;
            let entries = self
                .store
                .entries_in(&pm.name, owned(shard.worker, shard.workers))?;
            let slot = pipeline
                .slots
                .iter_mut()
                .find(|s| *s.name == pm.name)
                .expect("found above");
            if slot.identity.hash != pm.hash && resets.get(&pm.name) == Some(&slot.identity.hash) {
                if shard.worker == 0 {
                    tracing::warn!(
                        plugin = %pm.name,
                        committed = %pm.version,
                        loaded = %slot.identity.description.version,
                        "the group's swap to this version with its state reset was shared but never committed (the host that made it stopped before its barrier): the plugin starts with empty state, as the barrier would have left it"
                    );
                }
                slot.op.mark_rewrite();
                continue;
            }
            slot.restore_entries(
                &pm.op_meta,
                entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
            )
            .map_err(RestoreError::Refused)?;
            let d = slot.identity.description.clone();
            if d.state_schema != pm.state_schema && d.migrates_from.contains(&pm.state_schema) {
                let (from, to) = (pm.state_schema, d.state_schema);
                let mut state = slot.take_state();
                let n = slot.migrate(&mut state, from).map_err(|e| {
                    RestoreError::Refused(format!(
                        "plugin `{}`: migrating the committed state from schema {from} failed: {e}",
                        pm.name
                    ))
                })?;
                slot.restore(state).map_err(RestoreError::Refused)?;
                tracing::info!(plugin = %pm.name, from, to, states = n, "migrated committed state");
            } else if d.state_schema != pm.state_schema {
                return Err(RestoreError::Refused(format!(
                    "plugin `{}`: the state store holds state schema {} (version {}, {}), the loaded version {} has schema {}: start with --no-restore to reset state",
                    pm.name,
                    pm.state_schema,
                    pm.version,
                    &pm.hash[..12.min(pm.hash.len())],
                    d.version,
                    d.state_schema
                )));
            }
            if slot.identity.hash != pm.hash {
                tracing::info!(plugin = %pm.name, from = %pm.version, to = %d.version, "restoring state written by another build (same state schema)");
            }
        }
        Ok(())
    }
}
