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

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::{Lateness, classify, sliding_starts, tumbling_start};
use crate::event::{EventBatch, Span};
use crate::pipeline::columns;
use crate::plugin::describe::{Field, KeyBy, WindowSpec};
use crate::plugin::io::{Packed, RawMetric};
use crate::plugin::{CallError, PluginCalls};
use crate::state::{Changes, Key, KeyedState, hash_key};

#[derive(Debug, Clone)]
struct Win {
    id: u64,
    start: i64,
    end: i64,
    fired: bool,
    /// The plugin's state; empty until an `add` succeeded.
    state: Vec<u8>,
}

/// Everything an aggregator's windows hold; what a checkpoint saves.
#[derive(Debug, Clone)]
pub struct WindowState {
    /// Each key's live windows; marks the keys changed since the last commit.
    keys: KeyedState<Vec<Win>>,
    triggers: BTreeMap<i64, Vec<Key>>,
    next_session: u64,
    /// The watermark of the last firing round: every window whose max
    /// timestamp is at or before it has fired (or had no events).
    fired_until: i64,
}

impl Default for WindowState {
    fn default() -> Self {
        WindowState {
            keys: KeyedState::default(),
            triggers: BTreeMap::new(),
            next_session: 0,
            fired_until: i64::MIN,
        }
    }
}

/// Sliding windows kept as panes (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Panes {
    size: i64,
    slide: i64,
}

impl Panes {
    /// Panes for a sliding window of more than one slide whose size is a
    /// multiple of its slide; `None` otherwise (per-window state).
    pub fn of(spec: WindowSpec) -> Option<Panes> {
        match spec {
            WindowSpec::Sliding { size_ms, slide_ms }
                if slide_ms > 0 && size_ms > slide_ms && size_ms % slide_ms == 0 =>
            {
                Some(Panes {
                    size: size_ms,
                    slide: slide_ms,
                })
            }
            _ => None,
        }
    }

    /// Start of the pane that holds `ts`.
    fn pane(self, ts: i64) -> i64 {
        tumbling_start(ts, self.slide)
    }

    /// The earliest window holding pane `p` whose max timestamp is after
    /// `t` (its start), if one is left.
    fn next_window(self, p: i64, t: i64) -> Option<i64> {
        let first = p - self.size + self.slide;
        // s + size - 1 > t  ⇔  s ≥ t - size + 2, rounded up to a slide.
        let min = t.saturating_sub(self.size).saturating_add(2);
        let s = if min <= first {
            first
        } else {
            min.saturating_add((self.slide - min.rem_euclid(self.slide)) % self.slide)
        };
        (s <= p).then_some(s)
    }

    /// The windows holding pane `p` whose max timestamp is in `(after, upto]`.
    fn due(self, p: i64, after: i64, upto: i64) -> impl Iterator<Item = i64> {
        let first = self.next_window(p, after);
        std::iter::successors(first, move |s| Some(s + self.slide))
            .take_while(move |&s| s <= p && s + self.size - 1 <= upto)
    }

    /// When pane `p` goes: its last window (the one starting at `p`) is purged.
    fn purge_at(self, p: i64, lateness_ms: i64) -> i64 {
        p.saturating_add(self.size - 1).saturating_add(lateness_ms)
    }

    /// The next time a key with these panes must be looked at after `t`:
    /// its next window to fire, else its first pane to purge.
    fn next_trigger(self, wins: &[Win], t: i64, lateness_ms: i64) -> Option<i64> {
        wins.iter()
            .map(|w| match self.next_window(w.start, t) {
                Some(s) => s + self.size - 1,
                None => self.purge_at(w.start, lateness_ms),
            })
            .min()
    }
}

/// What the state store keeps per window key: the key's live windows.
#[derive(Serialize, Deserialize)]
struct KeyEntry<'a> {
    #[serde(borrow)]
    wins: Vec<WinRef<'a>>,
}

#[derive(Serialize, Deserialize)]
struct WinRef<'a> {
    id: u64,
    start: i64,
    end: i64,
    fired: bool,
    #[serde(borrow, serialize_with = "crate::state::ser_bytes")]
    state: &'a [u8],
}

/// A key's windows as postcard writes a [`KeyEntry`], by hand: the commit
/// encodes every changed key on the processing thread, and postcard's
/// generic writer appended the state bytes one by one. `wins_len` is the
/// exact size, so the entry goes straight into the commit buffer.
fn wins_len(wins: &[Win]) -> usize {
    use crate::state::{varint_len, zigzag};
    varint_len(wins.len() as u64)
        + wins
            .iter()
            .map(|w| {
                varint_len(w.id)
                    + varint_len(zigzag(w.start))
                    + varint_len(zigzag(w.end))
                    + 1
                    + varint_len(w.state.len() as u64)
                    + w.state.len()
            })
            .sum::<usize>()
}

fn write_wins(wins: &[Win], out: &mut Vec<u8>) {
    use crate::state::{put_varint, zigzag};
    put_varint(out, wins.len() as u64);
    for w in wins {
        put_varint(out, w.id);
        put_varint(out, zigzag(w.start));
        put_varint(out, zigzag(w.end));
        out.push(u8::from(w.fired));
        put_varint(out, w.state.len() as u64);
        out.extend_from_slice(&w.state);
    }
}

impl WindowState {
    /// Up to `n` non-empty window states (a migration dry-run sample).
    pub fn sample(&self, n: usize) -> Vec<Vec<u8>> {
        self.keys
            .values()
            .flatten()
            .filter(|w| !w.state.is_empty())
            .take(n)
            .map(|w| w.state.clone())
            .collect()
    }

    /// Rewrite every state with `f`; all or nothing.
    pub fn try_map<E>(
        &mut self,
        mut f: impl FnMut(&[u8]) -> Result<Vec<u8>, E>,
    ) -> Result<usize, E> {
        let mut next = self.keys.clone();
        let mut n = 0;
        for w in next.values_mut().flatten() {
            if !w.state.is_empty() {
                w.state = f(&w.state)?;
                n += 1;
            }
        }
        self.keys = next;
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
    /// encoded entry (none: the key has no windows any more).
    pub fn take_dirty(&mut self, out: &mut Changes) {
        self.keys.take_changed(|k, w| match w {
            Some(w) => out.put_sized(k, wins_len(w), |b| write_wins(w, b)),
            None => out.put(k, None),
        });
    }

    /// Put every key with its encoded entry into `out` (a full rewrite).
    pub fn entries(&mut self, out: &mut Changes) {
        self.keys
            .take_all(|k, w| out.put_sized(k, wins_len(w), |b| write_wins(w, b)));
    }

    /// The operator-wide part of the state: the session id counter and
    /// the watermark of the last firing round.
    pub fn meta(&self) -> Vec<u8> {
        let mut m = self.next_session.to_le_bytes().to_vec();
        m.extend_from_slice(&self.fired_until.to_le_bytes());
        m
    }

    /// Rebuild from the state store: the meta and every key's entry. The
    /// trigger queue is derived from the windows: an unfired window triggers
    /// at its max timestamp, a fired one at its purge time; a key with panes
    /// at its next window or purge after the last firing round.
    pub fn from_entries<'a>(
        meta: &[u8],
        entries: impl Iterator<Item = (&'a str, &'a [u8])>,
        lateness_ms: i64,
        panes: Option<Panes>,
    ) -> Result<Self, String> {
        let bad = || format!("window meta of {} bytes (expected 16)", meta.len());
        let (session, fired) = meta.split_at_checked(8).ok_or_else(bad)?;
        let mut s = WindowState {
            next_session: u64::from_le_bytes(session.try_into().map_err(|_| bad())?),
            fired_until: i64::from_le_bytes(fired.try_into().map_err(|_| bad())?),
            ..WindowState::default()
        };
        for (key, bytes) in entries {
            let e: KeyEntry = postcard::from_bytes(bytes)
                .map_err(|e| format!("window entry of key `{key}`: {e}"))?;
            let mut wins: Vec<Win> = e
                .wins
                .into_iter()
                .map(|w| Win {
                    id: w.id,
                    start: w.start,
                    end: w.end,
                    fired: w.fired,
                    state: w.state.to_vec(),
                })
                .collect();
            if let Some(pn) = panes {
                if let Some(w) = wins.iter().find(|w| w.end - w.start != pn.slide) {
                    return Err(format!(
                        "window entry of key `{key}`: [{}, {}) is not a pane of {} ms",
                        w.start, w.end, pn.slide
                    ));
                }
                wins.sort_by_key(|w| w.start);
                if let Some(at) = pn.next_trigger(&wins, s.fired_until, lateness_ms) {
                    s.trigger(at, key);
                }
            } else {
                for w in &wins {
                    let at = if w.fired {
                        w.end - 1 + lateness_ms
                    } else {
                        w.end - 1
                    };
                    s.trigger(at, key);
                }
            }
            s.keys.insert_stored(key, wins);
        }
        Ok(s)
    }

    /// Number of live windows.
    pub fn windows(&self) -> usize {
        self.keys.values().map(Vec::len).sum()
    }

    fn trigger(&mut self, at: i64, key: &str) {
        self.triggers.entry(at).or_default().push(key.into());
    }
}

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
            panes: Panes::of(spec),
        }
    }

    pub fn spec(&self) -> WindowSpec {
        self.spec
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
            for s in sliding_starts(ts, pn.size, pn.slide) {
                match classify(s + pn.size, self.lateness_ms, wm) {
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

    /// Fold the segment's assignments into the window states (one `add` call)
    /// and fire late-updated windows. `wm` is the watermark after the segment.
    pub fn flush(
        &mut self,
        batch: &EventBatch,
        inst: &mut dyn PluginCalls,
        wm: i64,
        fired: &mut Vec<Fired>,
        failures: &mut Vec<OpFailure>,
    ) -> usize {
        let pending = std::mem::take(&mut self.pending);
        // Session merges first: fold absorbed states into the survivors.
        let mut redirect: FxHashMap<u64, u64> = FxHashMap::default();
        for (key, target, absorbed, state) in &pending.merges {
            redirect.insert(*absorbed, *target);
            if state.is_empty() {
                continue;
            }
            let key_s = Self::key_str(&pending, batch, *key);
            let Some(win) = self
                .state
                .keys
                .get_mut(key_s)
                .and_then(|ws| ws.iter_mut().find(|w| w.id == *target))
            else {
                continue;
            };
            if win.state.is_empty() {
                win.state = state.clone();
            } else {
                match inst.merge(&win.state, state) {
                    Ok(s) => win.state = s,
                    Err(error) => failures.push(OpFailure::Windows {
                        error,
                        windows: vec![(key_s.to_string(), win.start, win.end)],
                    }),
                }
            }
        }
        let resolve = |mut id: u64| {
            while let Some(&t) = redirect.get(&id) {
                id = t;
            }
            id
        };
        if pending.entries.is_empty() {
            return 0;
        }
        let mut counted = usize::from(!pending.entries.is_empty());
        for w in pending.entries.windows(2) {
            counted += usize::from(w[0].0 != w[1].0);
        }

        // Group the assignments by (key, window) and sort events by group.
        let mut groups: Vec<(&str, u64)> = Vec::new();
        let mut entry_group = Vec::with_capacity(pending.entries.len());
        if self.panes.is_none() && matches!(self.spec, WindowSpec::Sliding { .. }) {
            // An event's windows share its key: number the keys first (the
            // last key is checked by address before any hashing), then find
            // groups by (key number, window) — one string comparison per
            // event instead of one per window (measured: 12 % of the
            // processing thread with active-users).
            let mut key_no: FxHashMap<&str, u32> = FxHashMap::default();
            let mut last_key: Option<(&str, u32)> = None;
            let mut group_of: FxHashMap<(u32, u64), u32> = FxHashMap::default();
            for &(_, key, id) in &pending.entries {
                let ks = Self::key_str(&pending, batch, key);
                let kn = match last_key {
                    Some((prev, n)) if std::ptr::eq(prev, ks) => n,
                    _ => {
                        let next = key_no.len() as u32;
                        let n = *key_no.entry(ks).or_insert(next);
                        last_key = Some((ks, n));
                        n
                    }
                };
                let id = resolve(id);
                let g = *group_of.entry((kn, id)).or_insert_with(|| {
                    groups.push((ks, id));
                    groups.len() as u32 - 1
                });
                entry_group.push(g);
            }
        } else {
            // One window per event (tumbling) or per session: one lookup.
            let mut group_of: FxHashMap<(&str, u64), u32> = FxHashMap::default();
            for &(_, key, id) in &pending.entries {
                let k = (Self::key_str(&pending, batch, key), resolve(id));
                let g = *group_of.entry(k).or_insert_with(|| {
                    groups.push(k);
                    groups.len() as u32 - 1
                });
                entry_group.push(g);
            }
        }
        let mut lens = vec![0u32; groups.len()];
        for &g in &entry_group {
            lens[g as usize] += 1;
        }
        let mut next: Vec<u32> = Vec::with_capacity(groups.len());
        let mut acc = 0u32;
        for &l in &lens {
            next.push(acc);
            acc += l;
        }
        let mut order = vec![0u32; pending.entries.len()];
        for (e, &g) in pending.entries.iter().zip(&entry_group) {
            order[next[g as usize] as usize] = e.0;
            next[g as usize] += 1;
        }

        // Each group's key hashed once for the look-ahead and both lookups.
        let hashes: Vec<u32> = groups.iter().map(|&(k, _)| hash_key(k)).collect();
        let mut states = Packed::default();
        for (g, &(key, id)) in groups.iter().enumerate() {
            self.state
                .keys
                .prefetch_hashed(g, &hashes, |j| groups.get(j).map(|&(k, _)| k));
            let state = self
                .state
                .keys
                .get_hashed(key, hashes[g])
                .and_then(|ws| ws.iter().find(|w| w.id == id))
                .map(|w| w.state.as_slice())
                .unwrap_or(&[]);
            states.push(state);
        }
        let cols = columns::build(batch, &order, &self.fields);
        let new_states = match inst.add(&lens, &states, cols) {
            Ok(s) => s,
            Err(error) => {
                let mut events: Vec<u32> = pending.entries.iter().map(|e| e.0).collect();
                events.sort_unstable();
                events.dedup();
                failures.push(OpFailure::Events { error, events });
                return 0;
            }
        };
        for (g, &(key, id)) in groups.iter().enumerate() {
            let new = new_states.get(g);
            match self
                .state
                .keys
                .get_mut_hashed(key, hashes[g])
                .and_then(|ws| ws.iter_mut().find(|w| w.id == id))
            {
                Some(w) => {
                    // Keep the allocation: states mostly keep their size.
                    w.state.clear();
                    w.state.extend_from_slice(new);
                }
                None if self.panes.is_some() => {
                    let pn = self.panes.expect("checked");
                    let start = id as i64;
                    let wins = self.state.keys.get_or_default(key);
                    let at = wins.partition_point(|w| w.start < start);
                    wins.insert(
                        at,
                        Win {
                            id,
                            start,
                            end: start + pn.slide,
                            fired: false,
                            state: new.to_vec(),
                        },
                    );
                    let pane = std::slice::from_ref(&wins[at]);
                    let fired = self.state.fired_until;
                    if let Some(t) = pn.next_trigger(pane, fired, self.lateness_ms) {
                        self.state.trigger(t, key);
                    }
                }
                None => {
                    let (start, end) = match self.spec {
                        WindowSpec::Tumbling { size_ms } => (id as i64, id as i64 + size_ms),
                        WindowSpec::Sliding { size_ms, .. } => (id as i64, id as i64 + size_ms),
                        _ => continue, // a session is created at assignment
                    };
                    self.state.keys.get_or_default(key).push(Win {
                        id,
                        start,
                        end,
                        fired: false,
                        state: new.to_vec(),
                    });
                    self.state.trigger(end - 1, key);
                }
            }
        }

        // Late updates fire at once (Flink's EventTimeTrigger.onElement).
        let mut late: Vec<(String, u64)> = pending
            .late_fire
            .iter()
            .map(|&(k, id)| (Self::key_str(&pending, batch, k).to_string(), resolve(id)))
            .collect();
        late.sort();
        late.dedup();
        let targets: Vec<(Key, u64)> = late.into_iter().map(|(k, id)| (k.into(), id)).collect();
        if self.panes.is_some() {
            let targets = targets.into_iter().map(|(k, s)| (k, s as i64)).collect();
            self.finish_pane_windows(targets, inst, fired, failures);
        } else {
            self.finish_windows(targets, inst, wm, fired, failures);
        }
        counted
    }

    /// Finish the given windows (key, start) from their panes: each
    /// window's pane states merged, earliest first.
    fn finish_pane_windows(
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
                let end = start + pn.size;
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
            due.extend(starts.iter().map(|&s| (s + pn.size, s, key.clone())));
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
                next = pn.next_trigger(wins, t, lateness);
                wins.len() != n
            });
            if let Some(at) = next {
                self.state.trigger(at, &key);
            }
        }
    }

    /// Finish the given windows (key, id) and update their fired/purge state.
    fn finish_windows(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_written_as_the_store_reads_them() {
        let wins = vec![
            Win {
                id: 3,
                start: -5_000,
                end: 55_000,
                fired: true,
                state: vec![9; 200],
            },
            Win {
                id: 4,
                start: 0,
                end: 60_000,
                fired: false,
                state: vec![],
            },
            Win {
                id: u64::MAX,
                start: i64::MIN,
                end: i64::MAX,
                fired: false,
                state: vec![1; 20_000],
            },
        ];
        let mut buf = vec![0xAA];
        write_wins(&wins, &mut buf);
        assert_eq!(buf.len() - 1, wins_len(&wins));
        let old = postcard::to_allocvec(&KeyEntry {
            wins: wins
                .iter()
                .map(|w| WinRef {
                    id: w.id,
                    start: w.start,
                    end: w.end,
                    fired: w.fired,
                    state: &w.state,
                })
                .collect(),
        })
        .unwrap();
        assert_eq!(buf[0], 0xAA, "appends");
        assert_eq!(&buf[1..], old.as_slice());
        let mut meta = 7u64.to_le_bytes().to_vec();
        meta.extend_from_slice(&(-3i64).to_le_bytes());
        let s = WindowState::from_entries(&meta, [("p", &buf[1..])].into_iter(), 0, None).unwrap();
        assert_eq!(s.windows(), 3);
        assert_eq!((s.next_session, s.fired_until), (7, -3));
        assert_eq!(s.meta(), meta);
        let old_meta = WindowState::from_entries(&meta[..8], std::iter::empty(), 0, None);
        assert!(old_meta.unwrap_err().contains("window meta of 8 bytes"));
        // The entries are windows of 60 s, not panes of 5 s: refused.
        let panes = Panes::of(WindowSpec::Sliding {
            size_ms: 60_000,
            slide_ms: 5_000,
        });
        let e = WindowState::from_entries(&meta, [("p", &buf[1..])].into_iter(), 0, panes);
        assert!(
            e.unwrap_err().contains("is not a pane of 5000 ms"),
            "refused"
        );
    }

    #[test]
    fn panes_know_their_windows() {
        let pn = Panes::of(WindowSpec::Sliding {
            size_ms: 10,
            slide_ms: 5,
        })
        .unwrap();
        assert_eq!(
            Panes::of(WindowSpec::Sliding {
                size_ms: 10,
                slide_ms: 4
            }),
            None
        );
        assert_eq!(
            Panes::of(WindowSpec::Sliding {
                size_ms: 5,
                slide_ms: 5
            }),
            None
        );
        assert_eq!((pn.pane(7), pn.pane(-1), pn.pane(5)), (5, -5, 5));
        // Pane [5, 10) is in windows [0, 10) (max ts 9) and [5, 15) (14).
        assert_eq!(pn.next_window(5, i64::MIN), Some(0));
        assert_eq!(pn.next_window(5, 8), Some(0));
        assert_eq!(pn.next_window(5, 9), Some(5));
        assert_eq!(pn.next_window(5, 14), None);
        assert_eq!(pn.next_window(5, i64::MAX), None);
        assert_eq!(pn.due(5, i64::MIN, 20).collect::<Vec<_>>(), [0, 5]);
        assert_eq!(pn.due(5, 9, 13).count(), 0);
        assert_eq!(pn.due(5, 9, 14).collect::<Vec<_>>(), [5]);
        assert_eq!(pn.due(-5, 3, 100).collect::<Vec<_>>(), [-5]);
        assert_eq!(pn.purge_at(5, 2), 16);
        let win = |start| Win {
            id: start as u64,
            start,
            end: start + 5,
            fired: false,
            state: vec![1],
        };
        // Next: a window to fire, else a purge.
        assert_eq!(pn.next_trigger(&[win(5), win(10)], 9, 3), Some(14));
        assert_eq!(pn.next_trigger(&[win(5)], 14, 3), Some(17));
        assert_eq!(pn.next_trigger(&[], 14, 3), None);
    }
}
