//! The keyed operator of one detector plugin: per-key state bytes and an
//! event-time timer queue, both host-owned and checkpointed.
//!
//! Event-input detectors receive each segment's events in arrival order,
//! grouped by key, in one `on-events` call; metric-input detectors receive the
//! metrics of every firing round in one `on-metrics` call; timers fire in
//! time order when the watermark passes them.

use std::borrow::Cow;
use std::collections::BTreeMap;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use crate::event::EventBatch;
use crate::plugin::describe::{Field, KeyBy};
use crate::plugin::io::{MetricIn, Packed, RawAlert, Step};
use crate::plugin::{CallError, PluginCalls};
use crate::state::{Changes, Key, KeyedState, Vacant, hash_key, hash_keys};

use super::columns;

/// One key's state bytes (empty: none) and pending timers (sorted, usually
/// none or one).
#[derive(Debug, Clone, Default, PartialEq)]
struct KeySlot {
    state: Vec<u8>,
    timers: Vec<i64>,
}

impl Vacant for KeySlot {
    fn is_vacant(&self) -> bool {
        self.state.is_empty() && self.timers.is_empty()
    }

    fn prefetch(&self) {
        crate::state::prefetch(&self.state);
        crate::state::prefetch(&self.timers);
    }
}

impl KeySlot {
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
    /// Marks the keys changed since the last commit.
    keys: KeyedState<KeySlot>,
    /// (time → keys with a timer then), possibly stale; see above.
    queue: BTreeMap<i64, Vec<Key>>,
    /// Every key with a timer at or before `due_upto` that has not fired,
    /// and maybe others: gathered from the queue as the watermark passes.
    /// While timers are due, every event asks whether its key has one; this
    /// small set answers most of them without a probe of `keys` (a cache
    /// miss with hundreds of thousands of keys).
    due: FxHashSet<Key>,
    /// Up to where `due` is gathered (`None`: not yet).
    due_upto: Option<i64>,
}

/// What the state store keeps per detector key: its state and its timers.
#[derive(Serialize, Deserialize)]
struct KeyEntry<'a> {
    #[serde(borrow)]
    state: &'a [u8],
    timers: Vec<i64>,
}

/// A key's slot as postcard writes a [`KeyEntry`], by hand (see the
/// window operator's `write_wins`): its exact size, and the bytes.
fn slot_len(slot: &KeySlot) -> usize {
    use crate::state::{varint_len, zigzag};
    varint_len(slot.state.len() as u64)
        + slot.state.len()
        + varint_len(slot.timers.len() as u64)
        + slot
            .timers
            .iter()
            .map(|&t| varint_len(zigzag(t)))
            .sum::<usize>()
}

fn write_slot(slot: &KeySlot, out: &mut Vec<u8>) {
    use crate::state::{put_varint, zigzag};
    put_varint(out, slot.state.len() as u64);
    out.extend_from_slice(&slot.state);
    put_varint(out, slot.timers.len() as u64);
    for &t in &slot.timers {
        put_varint(out, zigzag(t));
    }
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
        for (k, v) in self.keys.iter() {
            if !v.state.is_empty() {
                next.push((k.clone(), f(&v.state)?));
            }
        }
        let n = next.len();
        for (k, state) in next {
            if let Some(slot) = self.keys.get_mut(&k) {
                slot.state = state;
            }
        }
        self.keys.rewrite = true;
        Ok(n)
    }

    /// The next commit rewrites every key (new, reset or migrated state).
    pub fn set_rewrite(&mut self) {
        self.keys.rewrite = true;
    }

    /// Whether the next commit rewrites every key; cleared.
    pub fn take_rewrite(&mut self) -> bool {
        std::mem::take(&mut self.keys.rewrite)
    }

    /// Put the keys changed since the last call into `out`, each with its
    /// encoded entry (none: the key has neither state nor timers any more).
    pub fn take_dirty(&mut self, out: &mut Changes) {
        self.keys.take_changed(|k, slot| match slot {
            Some(slot) => out.put_sized(k, slot_len(slot), |b| write_slot(slot, b)),
            None => out.put(k, None),
        });
    }

    /// Put every key with its encoded entry into `out` (a full rewrite).
    pub fn entries(&mut self, out: &mut Changes) {
        self.keys
            .take_all(|k, slot| out.put_sized(k, slot_len(slot), |b| write_slot(slot, b)));
    }

    /// Rebuild from the state store's entries.
    pub fn from_entries<'a>(
        entries: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Self, String> {
        let mut s = DetectorState::default();
        for (key, bytes) in entries {
            let e: KeyEntry = postcard::from_bytes(bytes)
                .map_err(|e| format!("detector entry of key `{key}`: {e}"))?;
            let mut slot = KeySlot {
                state: e.state.to_vec(),
                timers: Vec::with_capacity(e.timers.len()),
            };
            for t in e.timers {
                if slot.add_timer(t) {
                    s.queued(key, t);
                }
            }
            if !slot.is_vacant() {
                s.keys.insert_stored(key, slot);
            }
        }
        Ok(s)
    }

    /// Give `key` a timer at `at` (creating the key if it has no state),
    /// queued unless the key already has one then.
    #[cfg(test)]
    fn add_timer(&mut self, key: &str, at: i64) {
        if self.keys.get_or_default(key).add_timer(at) {
            self.queued(key, at);
        }
    }

    /// `key` got a new timer at `at`: queue it (and mark it due if the
    /// watermark is already past it).
    fn queued(&mut self, key: &str, at: i64) {
        self.queue.entry(at).or_default().push(key.into());
        if self.due_upto.is_some_and(|u| at <= u) {
            self.due.insert(key.into());
        }
    }

    /// Extend `due` with the queue's keys up to `wm`.
    fn gather_due(&mut self, wm: i64) {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        if self.due_upto.is_some_and(|u| u >= wm) {
            return;
        }
        let from = self.due_upto.map_or(Unbounded, Excluded);
        for keys in self.queue.range((from, Included(wm))).map(|(_, k)| k) {
            for k in keys {
                if !self.due.contains(k) {
                    self.due.insert(k.clone());
                }
            }
        }
        self.due_upto = Some(wm);
    }

    /// Whether `key` has a timer at or before `wm` that has not fired.
    fn key_due(&mut self, key: &str, wm: i64) -> bool {
        if self.queue.first_key_value().is_none_or(|(t, _)| *t > wm) {
            return false;
        }
        self.gather_due(wm);
        self.due.contains(key)
            && self
                .keys
                .get(key)
                .and_then(|k| k.timers.first())
                .is_some_and(|t| *t <= wm)
    }

    /// Every timer up to `t` fired: nothing gathered is due any more.
    fn fired_until(&mut self, t: i64) {
        if self.due_upto.is_some_and(|u| u <= t) {
            self.due.clear();
        }
    }

    /// Drop `key`'s timer at `at` (it fired); whether it was pending.
    fn take_timer(&mut self, key: &str, at: i64) -> bool {
        self.take_timer_hashed(key, hash_key(key), at)
    }

    /// [`take_timer`](Self::take_timer) of a key whose hash is `h`.
    fn take_timer_hashed(&mut self, key: &str, h: u32, at: i64) -> bool {
        // A stale queue entry finds no timer and leaves the key unmarked.
        self.keys
            .modify_hashed(key, h, |slot| slot.remove_timer(at))
    }
}

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
        let key_of = |m: &MetricIn| -> String {
            match self.key_by {
                KeyBy::MetricKey => m.key.clone(),
                KeyBy::MetricName => m.name.clone(),
                KeyBy::MetricPlugin => m.plugin.clone(),
                _ => String::new(),
            }
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `key_due` (the gathered set, then the key's timers) against the
    /// plain answer, through timers added behind and ahead of the
    /// watermark, timers fired with their key's event, and firing rounds.
    #[test]
    fn gathered_due_keys_answer_as_the_timers_do() {
        let mut s = DetectorState::default();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let plain = |s: &DetectorState, k: &str, wm: i64| {
            s.keys
                .get(k)
                .and_then(|k| k.timers.first())
                .is_some_and(|t| *t <= wm)
        };
        let mut wm = -1_000i64;
        let (mut yes, mut no) = (0, 0);
        for _ in 0..20_000 {
            let key = format!("k{}", next(50));
            match next(10) {
                0..=3 => s.add_timer(&key, wm + next(400) as i64 - 100),
                4 => wm += next(30) as i64,
                5 => {
                    let at = s
                        .keys
                        .get(key.as_str())
                        .and_then(|k| k.timers.first().copied());
                    if let Some(at) = at.filter(|at| *at <= wm) {
                        s.take_timer(&key, at);
                    }
                }
                6 if next(20) == 0 => {
                    // a firing round: every timer up to wm
                    while let Some(e) = s.queue.first_entry() {
                        if *e.key() > wm {
                            break;
                        }
                        let (at, keys) = e.remove_entry();
                        for k in keys {
                            s.take_timer(&k, at);
                        }
                    }
                    s.fired_until(wm);
                }
                _ => {
                    let want = plain(&s, &key, wm);
                    assert_eq!(s.key_due(&key, wm), want, "{key} at {wm}");
                    if want { yes += 1 } else { no += 1 }
                }
            }
        }
        assert!(
            yes > 100 && no > 100,
            "both answers exercised: {yes} / {no}"
        );
    }

    #[test]
    fn entries_are_written_as_the_store_reads_them() {
        let mut s = DetectorState::default();
        let slot = |state: &[u8], timers: &[i64]| KeySlot {
            state: state.to_vec(),
            timers: timers.to_vec(),
        };
        let big = vec![7u8; 300];
        s.keys.insert("u1", slot(&[1, 2, 3], &[-5, 70_000]));
        s.keys.insert("u2", slot(&[], &[9]));
        s.keys
            .insert("u3", slot(&big, &[i64::MIN, -64, 63, i64::MAX]));
        for (k, state, timers) in [
            ("u1", &[1u8, 2, 3][..], vec![-5, 70_000]),
            ("u3", &big[..], vec![i64::MIN, -64, 63, i64::MAX]),
        ] {
            let mut buf = vec![0xAA];
            let slot = s.keys.get(k).unwrap();
            write_slot(slot, &mut buf);
            let old = postcard::to_allocvec(&KeyEntry { state, timers }).unwrap();
            assert_eq!(buf[0], 0xAA, "appends");
            assert_eq!(&buf[1..], old.as_slice(), "key {k}");
            assert_eq!(buf.len() - 1, slot_len(slot));
        }
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
        let sorted = |s: &DetectorState| {
            let mut v: Vec<(Key, KeySlot)> =
                s.keys.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        assert_eq!(sorted(&back), sorted(&s));
        let mut again = Changes::default();
        let mut back = back;
        back.take_dirty(&mut again);
        assert_eq!(again.iter().count(), 0, "a restore marks nothing changed");
        let queue: Vec<(i64, usize)> = back.queue.iter().map(|(t, k)| (*t, k.len())).collect();
        assert_eq!(
            queue,
            vec![
                (i64::MIN, 1),
                (-64, 1),
                (-5, 1),
                (9, 1),
                (63, 1),
                (70_000, 1),
                (i64::MAX, 1)
            ]
        );
    }

    #[test]
    fn a_timer_that_fired_with_its_key_is_skipped_in_the_queue() {
        let mut s = DetectorState::default();
        s.keys.insert_stored(
            "k",
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
        assert_eq!(s.keys.get("k").unwrap().timers, Vec::<i64>::new());
        s.keys.get_mut("k").unwrap().state.clear();
        s.keys.get_mut("k").unwrap().add_timer(30);
        assert!(s.take_timer("k", 30));
        assert!(s.keys.get("k").unwrap().is_vacant(), "no state, no timers");
        let mut out = Changes::default();
        s.take_dirty(&mut out);
        let written: Vec<_> = out.iter().map(|r| r.unwrap()).collect();
        assert_eq!(written, vec![("k", None)], "deleted at the commit");
        assert!(s.keys.get("k").is_none(), "gone");
    }
}
