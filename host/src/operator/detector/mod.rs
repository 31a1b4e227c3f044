//! The keyed operator of one detector plugin: per-key state bytes and an
//! event-time timer queue, both host-owned and checkpointed.
//!
//! Event-input detectors receive each segment's events in arrival order,
//! grouped by key, in one `on-events` call; metric-input detectors receive the
//! metrics of every firing round in one `on-metrics` call; timers fire in
//! time order when the watermark passes them.

mod state;

pub use state::DetectorState;
use state::KeySlot;

use std::borrow::Cow;

use rustc_hash::FxHashMap;

use crate::event::EventBatch;
use crate::operator::columns;
use crate::plugin::describe::{Field, KeyBy};
use crate::plugin::io::{MetricIn, Packed, RawAlert, Step};
use crate::plugin::{CallError, PluginCalls};
use crate::state::{Key, hash_keys};

/// Keys per timer call (see [`DetectorOp::call_timers`]); the events of a
/// call are bounded by the batch size the same way.
pub const TIMER_CHUNK: usize = 4096;

/// Timers that were due but could not be delivered.
pub type LostTimers = Vec<(i64, Key)>;
/// The outcome of firing timers.
pub type TimerResult = Result<(), (CallError, LostTimers)>;

/// An alert with its key.
#[derive(Debug, Clone)]
pub struct KeyedAlert {
    pub key: String,
    pub alert: RawAlert,
}

/// A metric's key for a metric-input detector keyed by `key_by`.
pub fn metric_key<'m>(key_by: &KeyBy, m: &'m MetricIn) -> &'m str {
    match key_by {
        KeyBy::MetricKey => &m.key,
        KeyBy::MetricName => &m.name,
        KeyBy::MetricPlugin => &m.plugin,
        _ => "",
    }
}

pub struct DetectorOp {
    key_by: KeyBy,
    fields: Vec<Field>,
    pub state: DetectorState,
    /// Events of the current segment (indices).
    pending: Vec<u32>,
}

impl DetectorOp {
    pub fn new(key_by: KeyBy, fields: Vec<Field>) -> Self {
        DetectorOp {
            key_by,
            fields,
            state: DetectorState::default(),
            pending: Vec::new(),
        }
    }

    /// What an event's (or a metric's) key is.
    pub fn key_by(&self) -> &KeyBy {
        &self.key_by
    }

    /// A metric's key for this (metric-input) detector.
    pub fn metric_key<'m>(&self, m: &'m MetricIn) -> &'m str {
        metric_key(&self.key_by, m)
    }

    pub fn push(&mut self, i: usize) {
        self.pending.push(i as u32);
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Forget the segment (degraded plugin); returns its events.
    pub fn drop_pending(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.pending)
    }

    /// The earliest timer (possibly one that already fired with its key's
    /// event: firing then finds nothing due).
    pub fn next_timer(&self) -> Option<i64> {
        self.state.queue.first_key_value().map(|(t, _)| *t)
    }

    fn event_key<'b>(&self, batch: &'b EventBatch, i: u32) -> Cow<'b, str> {
        match &self.key_by {
            KeyBy::Field(f) => columns::field_text(batch, &batch.events[i as usize], f),
            _ => Cow::Borrowed(""),
        }
    }

    /// Whether event `i`'s key has a timer at or before `wm` that has not
    /// fired yet: it must fire before the event is seen.
    pub fn key_timer_due(&mut self, batch: &EventBatch, i: usize, wm: i64) -> bool {
        if self.next_timer().is_none_or(|t| t > wm) {
            return false;
        }
        let key = self.event_key(batch, i as u32);
        self.state.key_due(&key, wm)
    }
    /// The states of `keys`, and the keys' hashes for `apply`.
    fn states_of(&self, keys: &[String]) -> (Packed, Vec<u32>) {
        let hashes = hash_keys(keys);
        let mut p = Packed::default();
        for (i, k) in keys.iter().enumerate() {
            self.state.keys.prefetch_ahead(keys, &hashes, i);
            p.push(
                self.state
                    .keys
                    .get_hashed(k, hashes[i])
                    .map(|k| k.state.as_slice())
                    .unwrap_or(&[]),
            );
        }
        (p, hashes)
    }

    fn apply(
        &mut self,
        keys: &[String],
        hashes: &[u32],
        mut step: Step,
        alerts: &mut Vec<KeyedAlert>,
    ) {
        let st = &mut self.state;
        // Each key's new timers go into its slot with its state: one probe
        // of the key map per key (groups are checked against `keys` when
        // the step is read).
        step.timers.sort_by_key(|&(g, _)| g);
        let mut timers = step.timers.as_slice();
        let mut added: Vec<i64> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            st.keys.prefetch_ahead(keys, hashes, i);
            let s = step.states.get(i);
            let n = timers.iter().take_while(|t| t.0 as usize == i).count();
            let (mine, rest) = timers.split_at(n);
            timers = rest;
            added.clear();
            // A key whose state and timers stay as they were is not written
            // at the next commit.
            // Set the state, add the timers; whether anything changed.
            let mut fill = |slot: &mut KeySlot| {
                let changed = slot.state != s;
                if changed {
                    slot.state.clear();
                    slot.state.extend_from_slice(s);
                }
                added.extend(mine.iter().map(|t| t.1).filter(|&at| slot.add_timer(at)));
                changed || !added.is_empty()
            };
            let mut present = false;
            st.keys.modify_hashed(key, hashes[i], |slot| {
                present = true;
                fill(slot)
            });
            if !present && (!s.is_empty() || !mine.is_empty()) {
                let mut slot = KeySlot::default();
                fill(&mut slot);
                st.keys.insert(key, slot);
            }
            for &at in &added {
                st.queued(key, at);
            }
        }
        alerts.extend(step.alerts.into_iter().map(|a| KeyedAlert {
            key: keys[a.group as usize].clone(),
            alert: a,
        }));
    }

    /// Deliver the segment's events. On failure returns the events not seen.
    pub fn flush(
        &mut self,
        batch: &EventBatch,
        inst: &mut dyn PluginCalls,
        wm: i64,
        alerts: &mut Vec<KeyedAlert>,
    ) -> Result<(), (CallError, Vec<u32>)> {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return Ok(());
        }
        // Group by key, keeping arrival order within a key.
        let mut group_of: FxHashMap<Cow<'_, str>, u32> = FxHashMap::default();
        let mut keys: Vec<String> = Vec::new();
        let mut g_of_event = Vec::with_capacity(pending.len());
        for &i in &pending {
            let k = self.event_key(batch, i);
            let g = match group_of.get(&k) {
                Some(&g) => g,
                None => {
                    keys.push(k.to_string());
                    group_of.insert(k, keys.len() as u32 - 1);
                    keys.len() as u32 - 1
                }
            };
            g_of_event.push(g);
        }
        let mut lens = vec![0u32; keys.len()];
        for &g in &g_of_event {
            lens[g as usize] += 1;
        }
        let mut next = Vec::with_capacity(keys.len());
        let mut acc = 0;
        for &l in &lens {
            next.push(acc);
            acc += l;
        }
        let mut order = vec![0u32; pending.len()];
        for (&i, &g) in pending.iter().zip(&g_of_event) {
            order[next[g as usize] as usize] = i;
            next[g as usize] += 1;
        }
        let (states, hashes) = self.states_of(&keys);
        let cols = columns::build(batch, &order, &self.fields);
        match inst.on_events(&keys, &lens, &states, cols, wm) {
            Ok(step) => {
                self.apply(&keys, &hashes, step, alerts);
                Ok(())
            }
            Err(e) => Err((e, pending)),
        }
    }

    /// Deliver metrics of one firing round, grouped by key (keys in order
    /// of first appearance), in calls of at most [`TIMER_CHUNK`] keys: a
    /// detector keyed by metric key may receive a metric per key of a
    /// high-cardinality aggregate (hundreds of thousands). On failure
    /// returns the metrics of the failed call and of the calls not made.
    pub fn deliver_metrics(
        &mut self,
        metrics: &[MetricIn],
        inst: &mut dyn PluginCalls,
        alerts: &mut Vec<KeyedAlert>,
    ) -> Result<(), (CallError, Vec<MetricIn>)> {
        if metrics.is_empty() {
            return Ok(());
        }
        let key_of = |m: &MetricIn| self.metric_key(m).to_string();
        let mut group_of: FxHashMap<String, usize> = FxHashMap::default();
        let mut keys: Vec<String> = Vec::new();
        let mut by_key: Vec<Vec<MetricIn>> = Vec::new();
        for m in metrics {
            let k = key_of(m);
            let g = *group_of.entry(k).or_insert_with_key(|k| {
                keys.push(k.clone());
                by_key.push(Vec::new());
                keys.len() - 1
            });
            by_key[g].push(m.clone());
        }
        let mut groups = by_key.into_iter();
        for chunk in keys.chunks(TIMER_CHUNK) {
            let mine: Vec<Vec<MetricIn>> = groups.by_ref().take(chunk.len()).collect();
            let lens: Vec<u32> = mine.iter().map(|v| v.len() as u32).collect();
            let flat: Vec<MetricIn> = mine.into_iter().flatten().collect();
            let (states, hashes) = self.states_of(chunk);
            match inst.on_metrics(chunk, &lens, &states, &flat) {
                Ok(step) => self.apply(chunk, &hashes, step, alerts),
                Err(e) => {
                    let mut lost = flat;
                    lost.extend(groups.flatten());
                    return Err((e, lost));
                }
            }
        }
        Ok(())
    }

    /// Fire the timers at or before `t`.
    /// On failure returns the timers that were lost.
    pub fn fire_timers(
        &mut self,
        t: i64,
        inst: &mut dyn PluginCalls,
        alerts: &mut Vec<KeyedAlert>,
    ) -> TimerResult {
        let mut due: Vec<(i64, Key)> = Vec::new();
        while let Some(entry) = self.state.queue.first_entry() {
            if *entry.key() > t {
                break;
            }
            let (at, keys) = entry.remove_entry();
            let hashes = hash_keys(&keys);
            for (i, key) in keys.iter().enumerate() {
                self.state.keys.prefetch_ahead(&keys, &hashes, i);
                // Skip what already fired with the key's event.
                if self.state.take_timer_hashed(key, hashes[i], at) {
                    due.push((at, key.clone()));
                }
            }
        }
        self.state.fired_until(t);
        self.call_timers(due, inst, alerts)
    }

    /// Fire the timers of event `i`'s key that are at or before `t`.
    pub fn fire_key_timers(
        &mut self,
        batch: &EventBatch,
        i: usize,
        t: i64,
        inst: &mut dyn PluginCalls,
        alerts: &mut Vec<KeyedAlert>,
    ) -> TimerResult {
        let key = self.event_key(batch, i as u32);
        let times: Vec<i64> = self
            .state
            .keys
            .get(&key)
            .map(|k| k.timers.iter().copied().take_while(|&at| at <= t).collect())
            .unwrap_or_default();
        let key: Key = key.into();
        let mut due = Vec::with_capacity(times.len());
        for at in times {
            // The queue keeps its entry; it is skipped when its time comes.
            self.state.take_timer(&key, at);
            due.push((at, key.clone()));
        }
        self.call_timers(due, inst, alerts)
    }

    /// Deliver `due` timers, sorted by key then time, in calls of at most
    /// [`TIMER_CHUNK`] keys: a watermark that jumps (a traffic drop, an
    /// idle partition, the end of the input) makes every key's timers due
    /// at once, and one call with all of them would return one timer per
    /// key, past the plugin's per-call limit, from a plugin that did
    /// nothing wrong. A key's timers stay in one call, so each key sees its
    /// timers in order, as with a single call. On failure the timers of the
    /// failed call and of the calls not made are returned.
    fn call_timers(
        &mut self,
        mut due: Vec<(i64, Key)>,
        inst: &mut dyn PluginCalls,
        alerts: &mut Vec<KeyedAlert>,
    ) -> TimerResult {
        if due.is_empty() {
            return Ok(());
        }
        // Entries are distinct (a key has one timer per time): no need for
        // a stable sort.
        due.sort_unstable_by(|a, b| (&a.1, a.0).cmp(&(&b.1, b.0)));
        let mut keys: Vec<String> = Vec::new();
        let mut lens: Vec<u32> = Vec::new();
        let mut times = Vec::with_capacity(due.len());
        for (at, key) in &due {
            if keys.last().map(String::as_str) != Some(&**key) {
                keys.push(key.to_string());
                lens.push(0);
            }
            *lens.last_mut().expect("pushed") += 1;
            times.push(*at);
        }
        // Timers delivered so far: `due` and `times` are in the same order.
        let mut done = 0;
        for (ks, ls) in keys.chunks(TIMER_CHUNK).zip(lens.chunks(TIMER_CHUNK)) {
            let n = ls.iter().map(|&l| l as usize).sum::<usize>();
            if let Err((e, failed_at)) =
                self.timer_call(ks, ls, &times[done..done + n], inst, alerts)
            {
                return Err((e, due.split_off(done + failed_at)));
            }
            done += n;
        }
        Ok(())
    }

    /// One `on_timers` call. A call that returned more alerts or timers
    /// than the limit, but not per key on average (30 timers per key, 4 096
    /// keys), is asked again in halves, as an aggregator's `finish` is. On
    /// failure: the error and the index in `times` where the timers not
    /// delivered begin.
    fn timer_call(
        &mut self,
        keys: &[String],
        lens: &[u32],
        times: &[i64],
        inst: &mut dyn PluginCalls,
        alerts: &mut Vec<KeyedAlert>,
    ) -> Result<(), (CallError, usize)> {
        let (states, hashes) = self.states_of(keys);
        match inst.on_timers(keys, lens, &states, times) {
            Ok(step) => {
                self.apply(keys, &hashes, step, alerts);
                Ok(())
            }
            Err(e) if e.split_helps(keys.len()) => {
                let mid = keys.len() / 2;
                let split = lens[..mid].iter().map(|&l| l as usize).sum::<usize>();
                self.timer_call(&keys[..mid], &lens[..mid], &times[..split], inst, alerts)?;
                self.timer_call(&keys[mid..], &lens[mid..], &times[split..], inst, alerts)
                    .map_err(|(e, at)| (e, split + at))
            }
            Err(e) => Err((e, 0)),
        }
    }
}
