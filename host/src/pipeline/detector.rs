//! The keyed operator of one detector plugin: per-key state bytes and an
//! event-time timer queue, both host-owned and checkpointed.
//!
//! Event-input detectors receive each segment's events in arrival order,
//! grouped by key, in one `on-events` call; metric-input detectors receive the
//! metrics of every firing round in one `on-metrics` call; timers fire in
//! time order when the watermark passes them.

use std::borrow::Cow;
use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::event::EventBatch;
use crate::plugin::describe::{Field, KeyBy};
use crate::plugin::io::{MetricIn, Packed, RawAlert, Step};
use crate::plugin::{CallError, PluginCalls};
use crate::state::{ChangedKeys, Changes, Key};

use super::columns;

/// One key's state bytes (empty: none) and pending timers (sorted, usually
/// none or one).
#[derive(Debug, Clone, Default, PartialEq)]
struct KeySlot {
    state: Vec<u8>,
    timers: Vec<i64>,
}

impl KeySlot {
    fn is_empty(&self) -> bool {
        self.state.is_empty() && self.timers.is_empty()
    }

    /// Add a timer; false if the key already has one at `at`.
    fn add_timer(&mut self, at: i64) -> bool {
        match self.timers.binary_search(&at) {
            Ok(_) => false,
            Err(i) => {
                self.timers.insert(i, at);
                true
            }
        }
    }

    /// Remove a timer; false if the key has none at `at`.
    fn remove_timer(&mut self, at: i64) -> bool {
        match self.timers.binary_search(&at) {
            Ok(i) => {
                self.timers.remove(i);
                true
            }
            Err(_) => false,
        }
    }
}

/// Per-key states and timers; what a checkpoint saves. One map holds each
/// key's state and timers (one lookup per key and call); the time-ordered
/// queue may hold entries of timers that already fired with their key's
/// next event — they are skipped when their time comes.
#[derive(Debug, Clone, Default)]
pub struct DetectorState {
    keys: FxHashMap<Key, KeySlot>,
    /// (time → keys with a timer then), possibly stale; see above.
    queue: BTreeMap<i64, Vec<Key>>,
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
    timers: &'a [i64],
}

impl DetectorState {
    /// Up to `n` key states (a migration dry-run sample).
    pub fn sample(&self, n: usize) -> Vec<Vec<u8>> {
        self.keys
            .values()
            .filter(|k| !k.state.is_empty())
            .take(n)
            .map(|k| k.state.clone())
            .collect()
    }

    /// Rewrite every state with `f`; all or nothing.
    pub fn try_map<E>(
        &mut self,
        mut f: impl FnMut(&[u8]) -> Result<Vec<u8>, E>,
    ) -> Result<usize, E> {
        let mut next = Vec::new();
        for (k, v) in &self.keys {
            if !v.state.is_empty() {
                next.push((k.clone(), f(&v.state)?));
            }
        }
        let n = next.len();
        for (k, state) in next {
            if let Some(slot) = self.keys.get_mut(&k) {
                slot.state = state;
                if slot.is_empty() {
                    self.keys.remove(&k);
                }
            }
        }
        self.changed.rewrite = true;
        Ok(n)
    }

    /// Append key's entry, encoded, to `out`; false when the key has neither
    /// state nor timers.
    fn encode(&self, key: &str, out: &mut Vec<u8>) -> bool {
        let Some(slot) = self.keys.get(key) else {
            return false;
        };
        let e = KeyEntryOut {
            state: &slot.state,
            timers: &slot.timers,
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
        for k in self.keys.keys() {
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
                let slot = KeySlot {
                    state: e.state.to_vec(),
                    timers: Vec::with_capacity(e.timers.len()),
                };
                s.keys.insert(key.into(), slot);
            }
            for t in e.timers {
                s.add_timer(key, t);
            }
        }
        Ok(s)
    }

    /// Give `key` a timer at `at` (creating the key if it has no state),
    /// queued unless the key already has one then.
    fn add_timer(&mut self, key: &str, at: i64) {
        if self.keys.entry(key.into()).or_default().add_timer(at) {
            self.queue.entry(at).or_default().push(key.into());
        }
    }

    /// Drop `key`'s timer at `at` (it fired); whether it was pending.
    fn take_timer(&mut self, key: &str, at: i64) -> bool {
        let Some(slot) = self.keys.get_mut(key) else {
            return false;
        };
        if !slot.remove_timer(at) {
            return false;
        }
        if slot.is_empty() {
            self.keys.remove(key);
        }
        self.changed.touch(key);
        true
    }
}

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
    pub fn key_timer_due(&self, batch: &EventBatch, i: usize, wm: i64) -> bool {
        if self.next_timer().is_none_or(|t| t > wm) {
            return false;
        }
        let key = self.event_key(batch, i as u32);
        self.state
            .keys
            .get(&*key)
            .and_then(|k| k.timers.first())
            .is_some_and(|t| *t <= wm)
    }

    fn states_of(&self, keys: &[String]) -> Packed {
        let mut p = Packed::default();
        for k in keys {
            p.push(
                self.state
                    .keys
                    .get(k.as_str())
                    .map(|k| k.state.as_slice())
                    .unwrap_or(&[]),
            );
        }
        p
    }

    fn apply(&mut self, keys: &[String], step: Step, alerts: &mut Vec<KeyedAlert>) {
        let st = &mut self.state;
        for (i, key) in keys.iter().enumerate() {
            st.changed.touch(key);
            let s = step.states.get(i);
            if let Some(slot) = st.keys.get_mut(key.as_str()) {
                slot.state.clear();
                slot.state.extend_from_slice(s);
                if slot.is_empty() {
                    st.keys.remove(key.as_str());
                }
            } else if !s.is_empty() {
                let slot = KeySlot {
                    state: s.to_vec(),
                    timers: Vec::new(),
                };
                st.keys.insert(key.as_str().into(), slot);
            }
        }
        for (g, at) in step.timers {
            st.add_timer(&keys[g as usize], at);
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
        let mut due: Vec<(i64, Key)> = Vec::new();
        while let Some(entry) = self.state.queue.first_entry() {
            if *entry.key() > t {
                break;
            }
            let (at, keys) = entry.remove_entry();
            for key in keys {
                // Skip what already fired with the key's event.
                if self.state.take_timer(&key, at) {
                    due.push((at, key));
                }
            }
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
        let key = self.event_key(batch, i as u32);
        let times: Vec<i64> = self
            .state
            .keys
            .get(&*key)
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

    fn call_timers(
        &mut self,
        mut due: Vec<(i64, Key)>,
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
        let slot = |state: &[u8], timers: &[i64]| KeySlot {
            state: state.to_vec(),
            timers: timers.to_vec(),
        };
        s.keys.insert("u1".into(), slot(&[1, 2, 3], &[-5, 70_000]));
        s.keys.insert("u2".into(), slot(&[], &[9]));
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
        assert_eq!(back.keys, s.keys);
        let queue: Vec<(i64, usize)> = back.queue.iter().map(|(t, k)| (*t, k.len())).collect();
        assert_eq!(queue, vec![(-5, 1), (9, 1), (70_000, 1)]);
    }

    #[test]
    fn a_timer_that_fired_with_its_key_is_skipped_in_the_queue() {
        let mut s = DetectorState::default();
        s.keys.insert(
            "k".into(),
            KeySlot {
                state: vec![1],
                timers: vec![10, 20],
            },
        );
        s.queue.insert(10, vec!["k".into()]);
        s.queue.insert(20, vec!["k".into()]);
        assert!(s.take_timer("k", 10), "fires with the key's event");
        assert!(!s.take_timer("k", 10), "then the queue's entry is stale");
        assert!(s.take_timer("k", 20));
        assert_eq!(s.keys["k"].timers, Vec::<i64>::new());
        s.keys.get_mut("k").unwrap().state.clear();
        s.keys.get_mut("k").unwrap().add_timer(30);
        assert!(s.take_timer("k", 30));
        assert!(!s.keys.contains_key("k"), "no state, no timers: gone");
    }
}
