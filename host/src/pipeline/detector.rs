//! The keyed operator of one detector plugin: per-key state bytes and an
//! event-time timer queue, both host-owned and checkpointed.
//!
//! Event-input detectors receive each segment's events in arrival order,
//! grouped by key, in one `on-events` call; metric-input detectors receive the
//! metrics of every firing round in one `on-metrics` call; timers fire in
//! time order when the watermark passes them.

use std::borrow::Cow;
use std::collections::BTreeSet;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use crate::event::EventBatch;
use crate::plugin::describe::{Field, KeyBy};
use crate::plugin::io::{MetricIn, Packed, RawAlert, Step};
use crate::plugin::{CallError, PluginCalls};
use crate::state::{ChangedKeys, Changes};

use super::columns;

/// Per-key states and timers; what a checkpoint saves.
#[derive(Debug, Clone, Default)]
pub struct DetectorState {
    states: FxHashMap<Box<str>, Vec<u8>>,
    /// All timers in time order.
    timers: BTreeSet<(i64, Box<str>)>,
    /// The same timers by key (to find a key's due timers fast).
    by_key: FxHashMap<Box<str>, BTreeSet<i64>>,
    /// Keys changed since the last commit.
    pub changed: ChangedKeys,
}

/// What the state store keeps per detector key: its state and its timers.
#[derive(Serialize, Deserialize)]
struct KeyEntry<'a> {
    #[serde(borrow)]
    state: &'a [u8],
    timers: Vec<i64>,
}

/// A [`KeyEntry`] as it is written (the same bytes, no copies).
#[derive(Serialize)]
struct KeyEntryOut<'a> {
    #[serde(serialize_with = "crate::state::ser_bytes")]
    state: &'a [u8],
    timers: &'a BTreeSet<i64>,
}

impl DetectorState {
    /// Up to `n` key states (a migration dry-run sample).
    pub fn sample(&self, n: usize) -> Vec<Vec<u8>> {
        self.states.values().take(n).cloned().collect()
    }

    /// Rewrite every state with `f`; all or nothing.
    pub fn try_map<E>(
        &mut self,
        mut f: impl FnMut(&[u8]) -> Result<Vec<u8>, E>,
    ) -> Result<usize, E> {
        let mut next = FxHashMap::default();
        for (k, v) in &self.states {
            next.insert(k.clone(), f(v)?);
        }
        let n = next.len();
        self.states = next;
        self.changed.rewrite = true;
        Ok(n)
    }

    /// Append key's entry, encoded, to `out`; false when the key has neither
    /// state nor timers.
    fn encode(&self, key: &str, out: &mut Vec<u8>) -> bool {
        static NO_TIMERS: BTreeSet<i64> = BTreeSet::new();
        let state = self.states.get(key);
        let timers = self.by_key.get(key);
        if state.is_none() && timers.is_none() {
            return false;
        }
        let e = KeyEntryOut {
            state: state.map(Vec::as_slice).unwrap_or(&[]),
            timers: timers.unwrap_or(&NO_TIMERS),
        };
        *out = postcard::to_extend(&e, std::mem::take(out)).expect("detector entries serialize");
        true
    }

    /// Put the keys changed since the last call into `out`, each with its
    /// encoded entry (none: the key has neither state nor timers any more).
    pub fn take_dirty(&mut self, out: &mut Changes) {
        for k in self.changed.take() {
            out.put_with(&k, |buf| self.encode(&k, buf));
        }
    }

    /// Put every key with its encoded entry into `out` (a full rewrite).
    pub fn entries(&mut self, out: &mut Changes) {
        self.changed.take();
        let mut keys: FxHashSet<&str> = self.states.keys().map(|k| &**k).collect();
        keys.extend(self.by_key.keys().map(|k| &**k));
        for k in keys {
            out.put_with(k, |buf| self.encode(k, buf));
        }
    }

    /// Rebuild from the state store's entries.
    pub fn from_entries<'a>(
        entries: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Self, String> {
        let mut s = DetectorState::default();
        for (key, bytes) in entries {
            let e: KeyEntry = postcard::from_bytes(bytes)
                .map_err(|e| format!("detector entry of key `{key}`: {e}"))?;
            if !e.state.is_empty() {
                s.states.insert(key.into(), e.state.to_vec());
            }
            if !e.timers.is_empty() {
                for &t in &e.timers {
                    s.timers.insert((t, key.into()));
                }
                s.by_key.insert(key.into(), e.timers.into_iter().collect());
            }
        }
        Ok(s)
    }

    pub fn keys(&self) -> usize {
        self.states.len()
    }

    pub fn timers(&self) -> usize {
        self.timers.len()
    }
}

/// Timers that were due but could not be delivered.
pub type LostTimers = Vec<(i64, Box<str>)>;
/// The outcome of firing timers.
pub type TimerResult = Result<(), (CallError, LostTimers)>;

/// An alert with its key.
#[derive(Debug, Clone)]
pub struct KeyedAlert {
    pub key: String,
    pub alert: RawAlert,
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

    pub fn next_timer(&self) -> Option<i64> {
        self.state.timers.first().map(|(t, _)| *t)
    }

    fn event_key<'b>(&self, batch: &'b EventBatch, i: u32) -> Cow<'b, str> {
        match &self.key_by {
            KeyBy::Field(f) => columns::field_text(batch, &batch.events[i as usize], f),
            _ => Cow::Borrowed(""),
        }
    }

    /// Whether event `i`'s key has a timer at or before `wm` that has not
    /// fired yet: it must fire before the event is seen.
    pub fn key_timer_due(&self, batch: &EventBatch, i: usize, wm: i64) -> bool {
        match self.state.timers.first() {
            Some((t, _)) if *t <= wm => {}
            _ => return false,
        }
        let key = self.event_key(batch, i as u32);
        self.state
            .by_key
            .get(&*key)
            .and_then(|ts| ts.first())
            .is_some_and(|t| *t <= wm)
    }

    fn states_of(&self, keys: &[String]) -> Packed {
        let mut p = Packed::default();
        for k in keys {
            p.push(
                self.state
                    .states
                    .get(k.as_str())
                    .map(Vec::as_slice)
                    .unwrap_or(&[]),
            );
        }
        p
    }

    fn apply(&mut self, keys: &[String], step: Step, alerts: &mut Vec<KeyedAlert>) {
        for (i, key) in keys.iter().enumerate() {
            self.state.changed.touch(key);
            let s = step.states.get(i);
            if s.is_empty() {
                self.state.states.remove(key.as_str());
            } else if let Some(v) = self.state.states.get_mut(key.as_str()) {
                v.clear();
                v.extend_from_slice(s);
            } else {
                self.state.states.insert(key.as_str().into(), s.to_vec());
            }
        }
        for (g, at) in step.timers {
            let key = keys[g as usize].as_str();
            if let Some(ts) = self.state.by_key.get_mut(key) {
                if !ts.insert(at) {
                    continue;
                }
            } else {
                self.state.by_key.insert(key.into(), BTreeSet::from([at]));
            }
            self.state.timers.insert((at, key.into()));
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
        let states = self.states_of(&keys);
        let cols = columns::build(batch, &order, &self.fields);
        match inst.on_events(&keys, &lens, &states, cols, wm) {
            Ok(step) => {
                self.apply(&keys, step, alerts);
                Ok(())
            }
            Err(e) => Err((e, pending)),
        }
    }

    /// Deliver metrics of one firing round.
    pub fn deliver_metrics(
        &mut self,
        metrics: &[MetricIn],
        inst: &mut dyn PluginCalls,
        alerts: &mut Vec<KeyedAlert>,
    ) -> Result<(), CallError> {
        if metrics.is_empty() {
            return Ok(());
        }
        let key_of = |m: &MetricIn| -> String {
            match self.key_by {
                KeyBy::MetricKey => m.key.clone(),
                KeyBy::MetricName => m.name.clone(),
                KeyBy::MetricPlugin => m.plugin.clone(),
                _ => String::new(),
            }
        };
        let mut keys: Vec<String> = Vec::new();
        let mut by_key: Vec<Vec<MetricIn>> = Vec::new();
        for m in metrics {
            let k = key_of(m);
            match keys.iter().position(|x| *x == k) {
                Some(g) => by_key[g].push(m.clone()),
                None => {
                    keys.push(k);
                    by_key.push(vec![m.clone()]);
                }
            }
        }
        let lens: Vec<u32> = by_key.iter().map(|v| v.len() as u32).collect();
        let flat: Vec<MetricIn> = by_key.into_iter().flatten().collect();
        let states = self.states_of(&keys);
        let step = inst.on_metrics(&keys, &lens, &states, &flat)?;
        self.apply(&keys, step, alerts);
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
        let mut due: Vec<(i64, Box<str>)> = Vec::new();
        while let Some(first) = self.state.timers.first() {
            if first.0 > t {
                break;
            }
            due.push(self.state.timers.pop_first().expect("non-empty"));
        }
        for (at, key) in &due {
            self.forget_timer(key, *at);
        }
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
        let key: Box<str> = self.event_key(batch, i as u32).into();
        let times: Vec<i64> = self
            .state
            .by_key
            .get(&key)
            .map(|ts| ts.range(..=t).copied().collect())
            .unwrap_or_default();
        let mut due = Vec::with_capacity(times.len());
        for at in times {
            self.state.timers.remove(&(at, key.clone()));
            self.forget_timer(&key, at);
            due.push((at, key.clone()));
        }
        self.call_timers(due, inst, alerts)
    }

    fn forget_timer(&mut self, key: &str, at: i64) {
        self.state.changed.touch(key);
        if let Some(ts) = self.state.by_key.get_mut(key) {
            ts.remove(&at);
            if ts.is_empty() {
                self.state.by_key.remove(key);
            }
        }
    }

    fn call_timers(
        &mut self,
        mut due: Vec<(i64, Box<str>)>,
        inst: &mut dyn PluginCalls,
        alerts: &mut Vec<KeyedAlert>,
    ) -> TimerResult {
        if due.is_empty() {
            return Ok(());
        }
        due.sort_by(|a, b| (&a.1, a.0).cmp(&(&b.1, b.0)));
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
        let states = self.states_of(&keys);
        match inst.on_timers(&keys, &lens, &states, &times) {
            Ok(step) => {
                self.apply(&keys, step, alerts);
                Ok(())
            }
            Err(e) => Err((e, due)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_written_as_the_store_reads_them() {
        let mut s = DetectorState::default();
        s.states.insert("u1".into(), vec![1, 2, 3]);
        s.by_key.insert("u1".into(), BTreeSet::from([-5, 70_000]));
        s.by_key.insert("u2".into(), BTreeSet::from([9]));
        let mut buf = Vec::new();
        assert!(s.encode("u1", &mut buf));
        let old = postcard::to_allocvec(&KeyEntry {
            state: &[1, 2, 3],
            timers: vec![-5, 70_000],
        })
        .unwrap();
        assert_eq!(buf, old);
        assert!(!s.encode("nobody", &mut buf));
        let mut out = Changes::default();
        s.entries(&mut out);
        let entries: Vec<(String, Vec<u8>)> = out
            .iter()
            .map(|r| {
                r.map(|(k, v)| (k.to_string(), v.unwrap().to_vec()))
                    .unwrap()
            })
            .collect();
        let back =
            DetectorState::from_entries(entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .unwrap();
        assert_eq!(back.states, s.states);
        assert_eq!(back.by_key, s.by_key);
        assert_eq!(back.timers.len(), 3);
    }
}
