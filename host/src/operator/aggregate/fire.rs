//! Firing windows as the watermark passes them: `finish` calls for every
//! due window (from its panes, when the windows are kept as panes), then
//! the purge of what is past its allowed lateness.

use super::{AggregateOp, Fired, OpFailure};
use crate::plugin::PluginCalls;
use crate::plugin::describe::WindowSpec;
use crate::plugin::io::Packed;
use crate::state::Key;

/// Windows finished per `finish` call.
pub const FINISH_CHUNK: usize = 4096;

/// `p`'s entries before `at`, and from `at` on.
fn split_packed(p: &Packed, at: usize) -> (Packed, Packed) {
    let (mut a, mut b) = (Packed::default(), Packed::default());
    for i in 0..p.len() {
        if i < at { &mut a } else { &mut b }.push(p.get(i));
    }
    (a, b)
}

/// One `finish` call for `windows` (with their keys in `meta` and their
/// states): the metrics go to `fired`, a failure names every window.
fn finish_call(
    inst: &mut dyn PluginCalls,
    windows: &[(i64, i64)],
    meta: Vec<String>,
    states: &Packed,
    fired: &mut Vec<Fired>,
    failures: &mut Vec<OpFailure>,
) {
    if windows.is_empty() {
        return;
    }
    match inst.finish(windows, states) {
        Ok(metrics) => fired.extend(metrics.into_iter().map(|m| Fired {
            key: meta[m.group as usize].clone(),
            start: windows[m.group as usize].0,
            end: windows[m.group as usize].1,
            metric: m,
        })),
        // The number of windows made the call too big (30 metrics per
        // window, 4 096 windows at once): each half is asked again. A
        // window over the limit on its own still fails, and a flood of
        // more than the limit per window is not split at all, so the
        // calls made stay within a few times the metrics over the limit.
        Err(e) if e.split_helps(windows.len()) => {
            let mid = windows.len() / 2;
            let mut meta = meta;
            let meta_b = meta.split_off(mid);
            let (a, b) = split_packed(states, mid);
            finish_call(inst, &windows[..mid], meta, &a, fired, failures);
            finish_call(inst, &windows[mid..], meta_b, &b, fired, failures);
        }
        Err(error) => failures.push(OpFailure::Windows {
            error,
            windows: meta
                .into_iter()
                .zip(windows.iter())
                .map(|(k, &(s, e))| (k, s, e))
                .collect(),
        }),
    }
}

impl AggregateOp {
    /// Finish the given windows (key, start) from their panes: each
    /// window's pane states merged, earliest first.
    pub(super) fn finish_pane_windows(
        &mut self,
        targets: Vec<(Key, i64)>,
        inst: &mut dyn PluginCalls,
        fired: &mut Vec<Fired>,
        failures: &mut Vec<OpFailure>,
    ) {
        let pn = self.panes.expect("pane windows");
        for chunk in targets.chunks(FINISH_CHUNK) {
            let mut windows = Vec::new();
            let mut meta = Vec::new();
            let mut states = Packed::default();
            for (key, start) in chunk {
                let end = start + pn.size();
                let Some(wins) = self.state.keys.get(key) else {
                    continue;
                };
                let mut panes = wins
                    .iter()
                    .filter(|w| w.start >= *start && w.start < end && !w.state.is_empty());
                let Some(first) = panes.next() else {
                    continue;
                };
                let mut merged: Option<Vec<u8>> = None;
                let mut failed = None;
                for w in panes {
                    let acc = merged.as_deref().unwrap_or(&first.state);
                    match inst.merge(acc, &w.state) {
                        Ok(m) => merged = Some(m),
                        Err(error) => {
                            failed = Some(error);
                            break;
                        }
                    }
                }
                if let Some(error) = failed {
                    failures.push(OpFailure::Windows {
                        error,
                        windows: vec![(key.to_string(), *start, end)],
                    });
                    continue;
                }
                windows.push((*start, end));
                meta.push(key.to_string());
                states.push(merged.as_deref().unwrap_or(&first.state));
            }
            finish_call(inst, &windows, meta, &states, fired, failures);
        }
    }

    /// Fire the pane windows whose max timestamp is in (last round, `t`],
    /// then drop the panes whose last window is purged.
    fn fire_panes_until(
        &mut self,
        keys: Vec<Key>,
        t: i64,
        inst: &mut dyn PluginCalls,
        fired: &mut Vec<Fired>,
        failures: &mut Vec<OpFailure>,
    ) {
        let pn = self.panes.expect("pane windows");
        let after = self.state.fired_until;
        let mut due: Vec<(i64, i64, Key)> = Vec::new();
        let mut starts: Vec<i64> = Vec::new();
        for key in &keys {
            let Some(wins) = self.state.keys.get(key) else {
                continue;
            };
            starts.clear();
            for w in wins.iter().filter(|w| !w.state.is_empty()) {
                starts.extend(pn.due(w.start, after, t));
            }
            starts.sort_unstable();
            starts.dedup();
            due.extend(starts.iter().map(|&s| (s + pn.size(), s, key.clone())));
        }
        due.sort();
        let targets = due.into_iter().map(|(_, s, k)| (k, s)).collect();
        self.finish_pane_windows(targets, inst, fired, failures);
        let lateness = self.lateness_ms;
        for key in keys {
            let mut next = None;
            self.state.keys.modify(&key, |wins| {
                let n = wins.len();
                wins.retain(|w| pn.purge_at(w.start, lateness) > t);
                next = pn.next_trigger(wins.iter().map(|w| w.start), t, lateness);
                wins.len() != n
            });
            if let Some(at) = next {
                self.state.trigger(at, &key);
            }
        }
    }

    /// Finish the given windows (key, id) and update their fired/purge state.
    pub(super) fn finish_windows(
        &mut self,
        targets: Vec<(Key, u64)>,
        inst: &mut dyn PluginCalls,
        now: i64,
        fired: &mut Vec<Fired>,
        failures: &mut Vec<OpFailure>,
    ) {
        // At most FINISH_CHUNK windows per call, so one call's output stays
        // bounded however many windows fire at once (e.g. at end of input).
        for chunk in targets.chunks(FINISH_CHUNK) {
            let mut windows = Vec::new();
            let mut meta = Vec::new();
            let mut states = Packed::default();
            for (key, id) in chunk {
                if let Some(w) = self
                    .state
                    .keys
                    .get(key)
                    .and_then(|ws| ws.iter().find(|w| w.id == *id))
                    && !w.state.is_empty()
                {
                    windows.push((w.start, w.end));
                    meta.push(key.to_string());
                    states.push(&w.state);
                }
            }
            finish_call(inst, &windows, meta, &states, fired, failures);
        }
        for (key, id) in targets {
            let Some(ws) = self.state.keys.get_mut(&key) else {
                continue;
            };
            let mut cleanup = None;
            ws.retain_mut(|w| {
                if w.id != id {
                    return true;
                }
                w.fired = true;
                if w.end - 1 + self.lateness_ms <= now {
                    return false;
                }
                cleanup = Some(w.end - 1 + self.lateness_ms);
                true
            });
            if let Some(at) = cleanup {
                self.state.trigger(at, &key);
            }
        }
    }

    /// Earliest pending trigger.
    pub fn next_trigger(&self) -> Option<i64> {
        self.state.triggers.first_key_value().map(|(t, _)| *t)
    }

    /// Fire every window whose max timestamp is ≤ `t` and purge those past
    /// their allowed lateness. Metrics come sorted by (end, start, key).
    /// Afterwards every window due by `t` has fired ([`Self::fired_through`]).
    pub fn fire_until(
        &mut self,
        t: i64,
        inst: &mut dyn PluginCalls,
        fired: &mut Vec<Fired>,
        failures: &mut Vec<OpFailure>,
    ) {
        let mut keys: Vec<Key> = Vec::new();
        while let Some(entry) = self.state.triggers.first_entry() {
            if *entry.key() > t {
                break;
            }
            keys.extend(entry.remove());
        }
        keys.sort();
        keys.dedup();
        if self.panes.is_some() {
            self.fire_panes_until(keys, t, inst, fired, failures);
            self.fired_through(t);
            return;
        }
        let mut due: Vec<(i64, i64, Key, u64)> = Vec::new();
        for key in keys {
            let Some(ws) = self.state.keys.get_mut(&key) else {
                continue;
            };
            // Purge what is past its lateness and already fired (or empty).
            let lateness = self.lateness_ms;
            ws.retain(|w| !(w.end - 1 + lateness <= t && (w.fired || w.state.is_empty())));
            let mut regrown = None;
            for w in ws.iter() {
                if !w.fired && w.end - 1 <= t {
                    due.push((w.end, w.start, key.clone(), w.id));
                } else if !w.fired && matches!(self.spec, WindowSpec::Session { .. }) {
                    regrown = Some(regrown.map_or(w.end - 1, |r: i64| r.min(w.end - 1)));
                }
            }
            if let Some(at) = regrown {
                self.state.triggers.entry(at).or_default().push(key.clone());
            }
        }
        due.sort();
        let targets = due.into_iter().map(|(_, _, k, id)| (k, id)).collect();
        self.finish_windows(targets, inst, t, fired, failures);
        self.fired_through(t);
    }
}
