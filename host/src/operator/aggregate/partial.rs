//! Two-stage aggregation of tumbling and sliding windows.
//!
//! **Stage 1**, where the events are read: the events of a segment are
//! assigned to their windows (or panes) exactly as in one stage, and folded
//! with one `add` call into *partial* states that start empty
//! ([`AggregateOp::pre_flush`]). **Stage 2**, at the owner of each key's key
//! group: each partial is merged into the window's state with the plugin's
//! `merge` ([`AggregateOp::apply_partial`]), so the window ends up with the
//! state of all its events — as long as `merge` of two states equals adding
//! both states' events to one, which the SDK's test harness checks.
//!
//! Segments are cut where one stage would fire before adding: before and
//! after an event that updates a fired window (a late update within the
//! allowed lateness), and, with panes, where the watermark passes a window
//! end (a window holding a pane may fire only with the events that arrived
//! before it was due). Stage 2 fires everything due at a segment's
//! watermark before applying the segment. Session windows are not
//! pre-aggregated: whether an event joins a session depends on the key's
//! sessions, which live at stage 2 (their events are routed there).

use super::state::Win;
use super::{AggregateOp, Fired, OpFailure};
use crate::event::EventBatch;
use crate::operator::columns;
use crate::plugin::PluginCalls;
use crate::plugin::describe::WindowSpec;
use crate::plugin::io::Packed;
use crate::state::Key;
use crate::window::{Lateness, classify, sliding_starts, tumbling_start};

/// The partial states of a segment, for one window (or pane) each.
#[derive(Debug, Default)]
pub struct PartialStates {
    /// (key, window id, partial state).
    pub groups: Vec<(Key, u64, Vec<u8>)>,
    /// Windows that fire again once the partials are merged (late updates).
    pub late_fire: Vec<(Key, u64)>,
}

impl AggregateOp {
    /// Whether the operator aggregates in two stages (tumbling and sliding
    /// windows); sessions take their events at stage 2.
    pub fn pre_aggregates(&self) -> bool {
        matches!(
            self.spec,
            WindowSpec::Tumbling { .. } | WindowSpec::Sliding { .. }
        )
    }

    /// Stage 1: whether the segment must end before event `i` arriving
    /// under watermark `wm`, the segment having begun under `seg_wm`: the
    /// event updates a fired window, or (panes) a window end lies between.
    pub fn cuts_before(&self, batch: &EventBatch, i: usize, wm: i64, seg_wm: i64) -> bool {
        if let Some(pn) = self.panes {
            let epoch = |w: i64| w.saturating_add(1).div_euclid(pn.slide());
            if epoch(seg_wm) != epoch(wm) {
                return true;
            }
        }
        if self.lateness_ms == 0 {
            return false;
        }
        let ts = batch.events[i].ts;
        let allowed = |end: i64| classify(end, self.lateness_ms, wm) == Lateness::Allowed;
        match self.spec {
            WindowSpec::Tumbling { size_ms } => allowed(tumbling_start(ts, size_ms) + size_ms),
            WindowSpec::Sliding { size_ms, slide_ms } => {
                sliding_starts(ts, size_ms, slide_ms).any(|s| allowed(s + size_ms))
            }
            _ => false,
        }
    }

    /// Stage 1: fold the segment assigned so far ([`AggregateOp::assign`])
    /// into partial states, one `add` call from empty states. Returns the
    /// number of events counted; a failed call is an `Events` failure.
    pub fn pre_flush(
        &mut self,
        batch: &EventBatch,
        inst: &mut dyn PluginCalls,
        out: &mut PartialStates,
    ) -> Result<usize, OpFailure> {
        let pending = std::mem::take(&mut self.pending);
        if pending.entries.is_empty() {
            return Ok(0);
        }
        let counted = 1 + pending
            .entries
            .windows(2)
            .filter(|w| w[0].0 != w[1].0)
            .count();
        let groups = self.group(&pending, batch, &Default::default());
        let mut empty = Packed::default();
        for _ in 0..groups.keys.len() {
            empty.push(&[]);
        }
        let cols = columns::build(batch, &groups.order, &self.fields);
        let states = inst
            .add(&groups.lens, &empty, cols)
            .map_err(|error| Self::add_failed(&pending, error))?;
        out.groups.reserve(groups.keys.len());
        for (g, &(key, id)) in groups.keys.iter().enumerate() {
            out.groups
                .push((Key::from(key), id, states.get(g).to_vec()));
        }
        for &(k, id) in &pending.late_fire {
            let key = Self::key_str(&pending, batch, k);
            out.late_fire.push((Key::from(key), id));
        }
        out.late_fire.sort();
        out.late_fire.dedup();
        Ok(counted)
    }

    /// Stage 2: merge partial states into the windows (a window not seen
    /// yet takes its partial as it is), then fire the late-updated ones.
    /// `wm`: the watermark after the segment.
    pub fn apply_partial(
        &mut self,
        partial: PartialStates,
        inst: &mut dyn PluginCalls,
        wm: i64,
        fired: &mut Vec<Fired>,
        failures: &mut Vec<OpFailure>,
    ) {
        for (key, id, new) in partial.groups {
            let existing = self
                .state
                .keys
                .get_mut(&key)
                .and_then(|ws| ws.iter_mut().find(|w| w.id == id));
            match existing {
                Some(w) if w.state.is_empty() => w.state = new,
                Some(w) => match inst.merge(&w.state, &new) {
                    Ok(s) => w.state = s,
                    Err(error) => failures.push(OpFailure::Windows {
                        error,
                        windows: vec![(key.to_string(), w.start, w.end)],
                    }),
                },
                None => self.new_window(&key, id, new),
            }
        }
        if partial.late_fire.is_empty() {
            return;
        }
        if self.panes.is_some() {
            let targets = partial
                .late_fire
                .into_iter()
                .map(|(k, s)| (k, s as i64))
                .collect();
            self.finish_pane_windows(targets, inst, fired, failures);
        } else {
            self.finish_windows(partial.late_fire, inst, wm, fired, failures);
        }
    }

    /// A window (or pane) `id` of `key` seen for the first time, with its
    /// state and its trigger.
    pub(super) fn new_window(&mut self, key: &str, id: u64, state: Vec<u8>) {
        if let Some(pn) = self.panes {
            let start = id as i64;
            let wins = self.state.keys.get_or_default(key);
            let at = wins.partition_point(|w| w.start < start);
            wins.insert(
                at,
                Win {
                    id,
                    start,
                    // Saturating: a window id may come from another host.
                    end: start.saturating_add(pn.slide()),
                    fired: false,
                    state,
                },
            );
            let fired = self.state.fired_until;
            if let Some(t) = pn.next_trigger([start], fired, self.lateness_ms) {
                self.state.trigger(t, key);
            }
            return;
        }
        let (start, end) = match self.spec {
            // Saturating: a window id may come from another host.
            WindowSpec::Tumbling { size_ms } => (id as i64, (id as i64).saturating_add(size_ms)),
            WindowSpec::Sliding { size_ms, .. } => (id as i64, (id as i64).saturating_add(size_ms)),
            // A session is created at assignment.
            _ => return,
        };
        self.state.keys.get_or_default(key).push(Win {
            id,
            start,
            end,
            fired: false,
            state,
        });
        self.state.trigger(end - 1, key);
    }
}
