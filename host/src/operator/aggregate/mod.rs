//! The window operator of one aggregator plugin.
//!
//! Events are assigned to windows while the pipeline scans a batch
//! ([`AggregateOp::assign`]); the assignments of a segment are folded into the
//! window states with one `add` call ([`AggregateOp::flush`]); windows fire in
//! event-time order as the watermark passes them ([`AggregateOp::fire_until`]).
//! The pipeline cuts segments wherever a window must fire, so every event is
//! classified against the watermark it arrived under, as in Flink.
//!
//! State layout (host-owned, checkpointed): per key, its live windows with the
//! plugin's state bytes; a trigger queue of (time → keys to look at). Session
//! windows carry a stable id, so a session that grows keeps its state.
//!
//! Sliding windows whose size is a multiple of their slide are kept as
//! *panes* (Flink's and Arroyo's slicing): each event is added once, to the
//! slide-sized pane that holds it, instead of once to each of the
//! `size / slide` windows that overlap there (twelve for a minute sliding by
//! five seconds); a window fires with its panes' states combined by the
//! plugin's `merge`, earliest first. A pane lives until its last window is
//! purged. The results are the per-window results as long as `merge` of two
//! states equals adding both states' events to one (the SDK's test harness
//! checks it). Firing is lazy, so an event whose pane a due but unfired
//! window also holds makes the pipeline fire first: that window fires
//! without the event, as it would without panes.

mod fire;
mod flush;
mod partial;
mod state;

pub use fire::FINISH_CHUNK;
pub use partial::PartialStates;
pub use state::{WindowState, combine_meta};

use crate::event::{EventBatch, Span};
use crate::operator::columns;
use crate::plugin::CallError;
use crate::plugin::describe::{Field, KeyBy, WindowSpec};
use crate::plugin::io::RawMetric;
use crate::window::{Lateness, Panes, classify, sliding_starts, tumbling_start};
use state::Win;

/// A key as it is referenced during a segment.
#[derive(Debug, Clone, Copy)]
enum KeyRef {
    Span(Span),
    Owned(u32),
}

/// The assignments of the current segment.
#[derive(Default)]
struct Pending {
    /// (event index, key, window id).
    entries: Vec<(u32, KeyRef, u64)>,
    /// Windows to fire right after the flush (late updates).
    late_fire: Vec<(KeyRef, u64)>,
    /// Session merges: (key, surviving id, absorbed id, absorbed state).
    merges: Vec<(KeyRef, u64, u64, Vec<u8>)>,
    owned_keys: Vec<String>,
}

/// How one event fared in [`AggregateOp::assign`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Assigned {
    /// A late update: the segment must be flushed after this event.
    pub cut: bool,
    /// Every window of the event was purged: it is late for this plugin.
    pub dropped: bool,
    /// Earliest fire time of a window this event opened.
    pub trigger: Option<i64>,
}

/// A fired window's metric.
#[derive(Debug, Clone)]
pub struct Fired {
    pub key: String,
    pub start: i64,
    pub end: i64,
    pub metric: RawMetric,
}

/// A failure the pipeline must report.
#[derive(Debug)]
pub enum OpFailure {
    /// An `add` failed: these events were not counted (dead-letter them).
    Events { error: CallError, events: Vec<u32> },
    /// A `finish` or `merge` failed: these windows produced nothing.
    Windows {
        error: CallError,
        windows: Vec<(String, i64, i64)>,
    },
}

pub struct AggregateOp {
    spec: WindowSpec,
    lateness_ms: i64,
    key_by: KeyBy,
    fields: Vec<Field>,
    pub state: WindowState,
    pending: Pending,
    /// The sessions an event touches (reused: one per event otherwise).
    hits: Vec<usize>,
    /// Sliding windows kept as panes.
    panes: Option<Panes>,
}

impl AggregateOp {
    pub fn new(spec: WindowSpec, lateness_ms: i64, key_by: KeyBy, fields: Vec<Field>) -> Self {
        AggregateOp {
            spec,
            lateness_ms,
            key_by,
            fields,
            state: WindowState::default(),
            pending: Pending::default(),
            hits: Vec::new(),
            panes: match spec {
                WindowSpec::Sliding { size_ms, slide_ms } => Panes::of_sliding(size_ms, slide_ms),
                _ => None,
            },
        }
    }

    pub fn spec(&self) -> WindowSpec {
        self.spec
    }

    /// What an event's key is.
    pub fn key_by(&self) -> &KeyBy {
        &self.key_by
    }

    pub fn lateness_ms(&self) -> i64 {
        self.lateness_ms
    }

    /// Rebuild the state from the state store.
    pub fn restore_entries<'a>(
        &mut self,
        meta: &[u8],
        entries: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<(), String> {
        self.state = WindowState::from_entries(meta, entries, self.lateness_ms, self.panes)?;
        Ok(())
    }

    /// Whether [`AggregateOp::would_be_late_update`] can ever say yes.
    pub fn checks_late_updates(&self) -> bool {
        self.lateness_ms > 0 || self.panes.is_some()
    }

    /// A firing round at watermark `wm` is over: every window due by `wm`
    /// has fired.
    pub fn fired_through(&mut self, wm: i64) {
        self.state.fired_until = self.state.fired_until.max(wm);
    }

    /// Whether event `i` would update a window that is already due (a late
    /// update within the allowed lateness), or, with panes, would go into a
    /// pane of a window that is due but has not fired. Firing is lazy, so
    /// the pipeline must fire everything due before such an event is added.
    pub fn would_be_late_update(&mut self, batch: &EventBatch, i: usize, wm: i64) -> bool {
        let ts = batch.events[i].ts;
        let lateness = self.lateness_ms;
        if let Some(pn) = self.panes {
            let p = pn.pane(ts);
            let purged = pn.purge_at(p, lateness) <= wm;
            if !purged && pn.due(p, self.state.fired_until, wm).next().is_some() {
                return true;
            }
        }
        if lateness == 0 {
            return false;
        }
        let allowed = move |end: i64| classify(end, lateness, wm) == Lateness::Allowed;
        match self.spec {
            WindowSpec::Tumbling { size_ms } => allowed(tumbling_start(ts, size_ms) + size_ms),
            WindowSpec::Sliding { size_ms, slide_ms } => {
                sliding_starts(ts, size_ms, slide_ms).any(|s| allowed(s + size_ms))
            }
            WindowSpec::Session { gap_ms } => {
                let end = ts.saturating_add(gap_ms);
                if allowed(end) {
                    return true;
                }
                let key = self.key_ref(batch, i);
                let key_s = Self::key_str(&self.pending, batch, key);
                let hit = self.state.keys.get(key_s).is_some_and(|ws| {
                    ws.iter()
                        .any(|w| w.start <= end && w.end >= ts && allowed(w.end))
                });
                if let KeyRef::Owned(_) = key {
                    self.pending.owned_keys.pop();
                }
                hit
            }
            WindowSpec::None => false,
        }
    }

    fn key_ref(&mut self, batch: &EventBatch, i: usize) -> KeyRef {
        let ev = &batch.events[i];
        match &self.key_by {
            KeyBy::Field(Field::Text(t)) => KeyRef::Span(ev.text[*t as usize]),
            KeyBy::Field(f) => {
                self.pending
                    .owned_keys
                    .push(columns::field_text(batch, ev, f).into_owned());
                KeyRef::Owned(self.pending.owned_keys.len() as u32 - 1)
            }
            _ => KeyRef::Span(Span::MISSING),
        }
    }

    fn key_str<'a>(pending: &'a Pending, batch: &'a EventBatch, k: KeyRef) -> &'a str {
        match k {
            KeyRef::Span(s) => batch.str(s).unwrap_or(""),
            KeyRef::Owned(i) => &pending.owned_keys[i as usize],
        }
    }

    /// Fetch the keys of the events after event `i` ahead of their
    /// assignment ([`KeyedState::prefetch_with`]): session windows have a
    /// key per session, hundreds of thousands of them, and each
    /// assignment's lookup misses the cache.
    pub fn prefetch_events(&self, batch: &EventBatch, i: usize) {
        if let (WindowSpec::Session { .. }, KeyBy::Field(Field::Text(t))) =
            (self.spec, &self.key_by)
        {
            self.state.keys.prefetch_with(i, |j| {
                batch
                    .events
                    .get(j)
                    .and_then(|e| batch.str(e.text[*t as usize]))
            });
        }
    }

    /// Assign event `i` (arriving under watermark `wm`) to its windows.
    pub fn assign(&mut self, batch: &EventBatch, i: usize, wm: i64) -> Assigned {
        let ts = batch.events[i].ts;
        let key = self.key_ref(batch, i);
        let mut out = Assigned {
            dropped: true,
            ..Default::default()
        };
        if let Some(pn) = self.panes {
            // The event goes once into its pane, if any window holding it
            // is still live; the windows that already fired fire again.
            for s in sliding_starts(ts, pn.size(), pn.slide()) {
                match classify(s + pn.size(), self.lateness_ms, wm) {
                    Lateness::OnTime => out.dropped = false,
                    Lateness::Allowed => {
                        self.pending.late_fire.push((key, s as u64));
                        out.dropped = false;
                        out.cut = true;
                    }
                    Lateness::Dropped => {}
                }
            }
            if !out.dropped {
                self.pending
                    .entries
                    .push((i as u32, key, pn.pane(ts) as u64));
            }
            return out;
        }
        let mut take =
            |end: i64, id: u64, pending: &mut Pending| match classify(end, self.lateness_ms, wm) {
                Lateness::OnTime => {
                    pending.entries.push((i as u32, key, id));
                    out.dropped = false;
                    out.trigger = Some(out.trigger.map_or(end - 1, |t: i64| t.min(end - 1)));
                }
                Lateness::Allowed => {
                    pending.entries.push((i as u32, key, id));
                    pending.late_fire.push((key, id));
                    out.dropped = false;
                    out.cut = true;
                }
                Lateness::Dropped => {}
            };
        match self.spec {
            WindowSpec::Tumbling { size_ms } => {
                let s = tumbling_start(ts, size_ms);
                take(s + size_ms, s as u64, &mut self.pending);
            }
            WindowSpec::Sliding { size_ms, slide_ms } => {
                for s in sliding_starts(ts, size_ms, slide_ms) {
                    take(s + size_ms, s as u64, &mut self.pending);
                }
            }
            WindowSpec::Session { gap_ms } => {
                let (start, end) = (ts, ts.saturating_add(gap_ms));
                let lateness = self.lateness_ms;
                let key_s = Self::key_str(&self.pending, batch, key);
                // One probe (a key's first event inserts it).
                let wins = self.state.keys.get_or_default(key_s);
                // Flink merges windows that intersect, touching included.
                // Sessions already past their purge time are gone for Flink
                // (they fire lazily here, at the end of the batch).
                let hits = &mut self.hits;
                hits.clear();
                hits.extend((0..wins.len()).filter(|&w| {
                    wins[w].start <= end && wins[w].end >= start && wins[w].end - 1 + lateness > wm
                }));
                if hits.is_empty() {
                    if classify(end, lateness, wm) == Lateness::Dropped {
                        // A key inserted for this event is vacant: it
                        // leaves at the commit.
                        return out;
                    }
                    self.state.next_session += 1;
                    let id = self.state.next_session;
                    wins.push(Win {
                        id,
                        start,
                        end,
                        fired: false,
                        state: Vec::new(),
                    });
                    self.state
                        .triggers
                        .entry(end - 1)
                        .or_default()
                        .push(key_s.into());
                    take(end, id, &mut self.pending);
                    return out;
                }
                hits.sort_by_key(|&w| (wins[w].start, wins[w].id));
                let target_id = wins[hits[0]].id;
                let (mut m_start, mut m_end) = (start, end);
                for &h in hits.iter() {
                    m_start = m_start.min(wins[h].start);
                    m_end = m_end.max(wins[h].end);
                }
                // Absorb the others (highest index first so indices stay valid).
                let mut absorbed: Vec<usize> = hits[1..].to_vec();
                absorbed.sort_unstable_by(|a, b| b.cmp(a));
                for h in absorbed {
                    let w = wins.remove(h);
                    self.pending.merges.push((key, target_id, w.id, w.state));
                }
                let t = wins
                    .iter_mut()
                    .find(|w| w.id == target_id)
                    .expect("target kept");
                if m_end > t.end && m_end - 1 > wm {
                    t.fired = false;
                }
                // The trigger of a grown session is re-registered lazily
                // when its old trigger time comes (see `fire_until`).
                t.start = m_start;
                t.end = m_end;
                take(m_end, target_id, &mut self.pending);
            }
            WindowSpec::None => {}
        }
        out
    }

    /// Forget the segment (degraded plugin); returns its events.
    pub fn drop_pending(&mut self) -> Vec<u32> {
        let p = std::mem::take(&mut self.pending);
        let mut events: Vec<u32> = p.entries.iter().map(|e| e.0).collect();
        events.dedup();
        events
    }

    /// Whether the current segment has work.
    pub fn has_pending(&self) -> bool {
        !self.pending.entries.is_empty() || !self.pending.merges.is_empty()
    }
}
