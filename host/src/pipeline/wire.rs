//! The exchange's records as bytes: what stage 1 on one host sends to the
//! stage 2 of another (through `<group>-exchange`, `crate::exchange`), and
//! what `--exchange wire` sends between the workers of one host, so that
//! the encoding is tested by every output test and measured side by side
//! with the in-memory exchange (BENCHMARKS.md).
//!
//! A **payload** holds one sender's records of one round for one owner, in
//! canonical order:
//! - a version byte ([`VERSION`]);
//! - the sender's plugins, in its slot order: name, whether a shadow, and a
//!   fingerprint of the component's hash. The receiver maps them to its own
//!   slots by name and refuses a record of another version: every event is
//!   processed by one version, wherever its records go;
//! - the records. A partial carries its plugin's partial window states as
//!   the plugin encoded them (`(key, window, bytes)`). A routed event
//!   carries the event itself: its partition, offset, time, numbers, and
//!   its raw JSON object (and its batch's source, once per payload), with the standard text fields as
//!   spans into it when they lie there (the common case: no escapes) and as
//!   strings of their own when they do not.
//!
//! Integers are LEB128 varints (zigzag for signed ones), as in the state's
//! encoding (`crate::state::codec`); an event's time and the watermark
//! after it are differences from the watermark it arrived under.
//!
//! [`Inbox`] decodes an owner's payloads into a [`Round`] of its own: one
//! batch per batch of the sender's round that it has events of (at the same
//! index, so records keep their `batch`), the events in canonical order,
//! and records whose `index` points into those batches. Stage 2 runs on it
//! as on the sender's round. A late event found at stage 2 is resolved
//! against that round (`LateMark::resolve`): the owner reports it with the
//! event it decoded, under the sender's position, so the runner merges it
//! with the marks stage 1 made for the same event.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::exchange::{Partial, Pos, Record, Round, Routed};
use crate::event::{Event, EventBatch, Origin, Span};
use crate::operator::aggregate::PartialStates;
use crate::state::keygroup::fnv1a;
use crate::state::{Key, put_varint, take_bytes, take_varint, unzigzag, zigzag};

/// The payload format.
pub const VERSION: u8 = 1;

/// What a payload could not be decoded as, naming where.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("exchange payload of format {0}; this host reads format {VERSION}")]
    Version(u8),
    #[error("exchange payload cut short in {0}")]
    Truncated(&'static str),
    #[error("exchange payload: {0}")]
    Invalid(&'static str),
    #[error("exchange record for plugin {plugin:?}{}, which this host does not run", shadow_label(*.shadow))]
    UnknownPlugin { plugin: String, shadow: bool },
    #[error(
        "exchange record for plugin {plugin:?}{} of another version or config (sender {sent:016x}, here {here:016x}): both hosts must run one version with one config",
        shadow_label(*.shadow)
    )]
    OtherVersion {
        plugin: String,
        shadow: bool,
        sent: u64,
        here: u64,
    },
}

fn shadow_label(shadow: bool) -> &'static str {
    if shadow { " (shadow)" } else { "" }
}

/// A slot as the wire names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotId {
    pub name: Arc<str>,
    pub shadow: bool,
    /// FNV-1a of the component's hash, and of its config when it has one:
    /// a sender and an owner with one component and two configs would
    /// compute a plugin's states two ways.
    pub version: u64,
}

impl SlotId {
    pub fn new(name: Arc<str>, shadow: bool, hash: &str) -> Self {
        SlotId {
            name,
            shadow,
            version: fnv1a(hash.as_bytes()),
        }
    }

    /// This slot's version with the plugin's `config` (JSON as it was
    /// started with) in it; an empty config leaves it as it is.
    pub fn with_config(mut self, config: &str) -> Self {
        if !config.is_empty() {
            let mut both = Vec::with_capacity(self.version.to_le_bytes().len() + config.len());
            both.extend_from_slice(&self.version.to_le_bytes());
            both.extend_from_slice(config.as_bytes());
            self.version = fnv1a(&both);
        }
        self
    }
}

/// The most batches a round may have on the wire (a round takes a batch
/// per reader): the owner's round has one per index up to the highest
/// that an event names, so a payload must not name one past this.
pub const MAX_BATCHES: u32 = 1 << 16;

const PARTIAL: u8 = 0;
const EVENT: u8 = 1;

/// Text field tags.
const MISSING: u8 = 0;
const IN_RAW: u8 = 1;
const OWN: u8 = 2;

/// The sender's side: its slots' table, encoded once.
#[derive(Debug, Clone)]
pub struct Encoder {
    table: Vec<u8>,
}

impl Encoder {
    pub fn new(slots: &[SlotId]) -> Self {
        let mut table = Vec::new();
        put_varint(&mut table, slots.len() as u64);
        for s in slots {
            put_str(&mut table, &s.name);
            table.push(u8::from(s.shadow));
            table.extend_from_slice(&s.version.to_le_bytes());
        }
        Encoder { table }
    }

    /// `records` (of `round`, for one owner, in canonical order) as a
    /// payload appended to `out`.
    pub fn encode(&self, round: &Round, records: &[Record], out: &mut Vec<u8>) {
        out.push(VERSION);
        out.extend_from_slice(&self.table);
        put_varint(out, records.len() as u64);
        // A batch's source goes with its first event in the payload.
        let mut named: Vec<u32> = Vec::new();
        for r in records {
            match r {
                Record::Partial(p) => {
                    out.push(PARTIAL);
                    put_pos(out, p.pos);
                    put_varint(out, u64::from(p.slot));
                    put_varint(out, zigzag(p.wm));
                    put_varint(out, zigzag(p.wm_after));
                    put_varint(out, p.states.groups.len() as u64);
                    for (key, window, state) in &p.states.groups {
                        put_str(out, key);
                        put_varint(out, *window);
                        put_varint(out, state.len() as u64);
                        out.extend_from_slice(state);
                    }
                    put_varint(out, p.states.late_fire.len() as u64);
                    for (key, window) in &p.states.late_fire {
                        put_str(out, key);
                        put_varint(out, *window);
                    }
                }
                Record::Event(e) => {
                    out.push(EVENT);
                    put_pos(out, e.pos);
                    put_varint(out, u64::from(e.batch));
                    put_varint(out, zigzag(e.wm));
                    put_varint(out, zigzag(e.wm_after.wrapping_sub(e.wm)));
                    put_varint(out, e.slots);
                    let batch = &round.batches[e.batch as usize];
                    if named.contains(&e.batch) {
                        out.push(0);
                    } else {
                        named.push(e.batch);
                        out.push(1);
                        put_str(out, &batch.origin.source);
                    }
                    put_event(out, batch, e.index as usize, e.wm);
                }
            }
        }
    }
}

fn put_pos(out: &mut Vec<u8>, pos: Pos) {
    put_varint(out, u64::from(pos.run));
    put_varint(out, u64::from(pos.event));
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// An event; its time as the difference from `wm` (the watermark it
/// arrived under), which is short.
fn put_event(out: &mut Vec<u8>, batch: &EventBatch, i: usize, wm: i64) {
    let ev = &batch.events[i];
    put_varint(out, zigzag(i64::from(batch.partition_of_event(i))));
    put_varint(out, ev.offset);
    put_varint(out, zigzag(ev.ts.wrapping_sub(wm)));
    let flags = u8::from(!ev.latency_ms.is_nan()) | u8::from(!ev.value.is_nan()) << 1;
    out.push(flags);
    if flags & 1 != 0 {
        out.extend_from_slice(&ev.latency_ms.to_le_bytes());
    }
    if flags & 2 != 0 {
        out.extend_from_slice(&ev.value.to_le_bytes());
    }
    let raw = batch.raw(ev);
    put_str(out, raw);
    let raw_span = ev.raw;
    for span in ev.text {
        if span.is_missing() {
            out.push(MISSING);
        } else if !raw_span.is_missing()
            && span.off >= raw_span.off
            && span.off + span.len <= raw_span.off + raw_span.len
        {
            out.push(IN_RAW);
            put_varint(out, u64::from(span.off - raw_span.off));
            put_varint(out, u64::from(span.len));
        } else {
            out.push(OWN);
            put_str(out, batch.str(span).unwrap_or_default());
        }
    }
}

/// A reader over a payload, naming what it was reading when it ran out.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self, what: &'static str) -> Result<u64, WireError> {
        take_varint(&mut self.buf).ok_or(WireError::Truncated(what))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        u32::try_from(self.varint(what)?).map_err(|_| WireError::Invalid(what))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, WireError> {
        Ok(unzigzag(self.varint(what)?))
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, WireError> {
        let (&b, rest) = self.buf.split_first().ok_or(WireError::Truncated(what))?;
        self.buf = rest;
        Ok(b)
    }

    fn fixed8(&mut self, what: &'static str) -> Result<[u8; 8], WireError> {
        if self.buf.len() < 8 {
            return Err(WireError::Truncated(what));
        }
        let (b, rest) = self.buf.split_at(8);
        self.buf = rest;
        Ok(b.try_into().expect("8 bytes"))
    }

    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], WireError> {
        take_bytes(&mut self.buf).ok_or(WireError::Truncated(what))
    }

    fn str(&mut self, what: &'static str) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.bytes(what)?).map_err(|_| WireError::Invalid(what))
    }

    /// A count of items that take at least `min` bytes each: one the
    /// payload cannot hold is refused before anything is allocated for it.
    fn count(&mut self, what: &'static str, min: usize) -> Result<usize, WireError> {
        let n = usize::try_from(self.varint(what)?).map_err(|_| WireError::Invalid(what))?;
        if n.saturating_mul(min) > self.buf.len() {
            return Err(WireError::Truncated(what));
        }
        Ok(n)
    }
}

/// A decoded event, before its batch is put in order.
struct Pending {
    pos: Pos,
    partition: i32,
    event: Event,
}

/// One of the owner's batches as its events arrive.
struct Building {
    source: Arc<str>,
    buf: String,
    events: Vec<Pending>,
}

/// The owner's side: every payload of a round for it, decoded into one
/// round of its own.
pub struct Inbox {
    /// The receiver's slot index by (name, shadow), with its version.
    here: HashMap<(Arc<str>, bool), (u16, u64)>,
    batches: BTreeMap<u32, Building>,
    /// The events' positions, by batch: each may come once.
    positions: std::collections::HashSet<(u32, Pos)>,
    records: Vec<Record>,
    /// Decoded bytes, for the counters.
    pub bytes: u64,
}

impl Inbox {
    /// An inbox for a pipeline with `slots` (in its slot order).
    pub fn new(slots: &[SlotId]) -> Self {
        Inbox {
            here: slots
                .iter()
                .enumerate()
                .map(|(i, s)| ((s.name.clone(), s.shadow), (i as u16, s.version)))
                .collect(),
            batches: BTreeMap::new(),
            positions: Default::default(),
            records: Vec::new(),
            bytes: 0,
        }
    }

    /// Decode one payload. On an error nothing of it is kept.
    pub fn add(&mut self, payload: &[u8]) -> Result<(), WireError> {
        let mut r = Reader { buf: payload };
        let version = r.byte("the format byte")?;
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        let n = r.count("the plugin table", 10)?;
        let mut map: Vec<u16> = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.str("a plugin's name")?;
            let shadow = r.byte("a plugin's shadow flag")? != 0;
            let sent = u64::from_le_bytes(r.fixed8("a plugin's version")?);
            let Some(&(slot, here)) = self.here.get(&(Arc::from(name), shadow)) else {
                return Err(WireError::UnknownPlugin {
                    plugin: name.to_string(),
                    shadow,
                });
            };
            if sent != here {
                return Err(WireError::OtherVersion {
                    plugin: name.to_string(),
                    shadow,
                    sent,
                    here,
                });
            }
            map.push(slot);
        }
        let slot_of = |s: u64| -> Result<u16, WireError> {
            usize::try_from(s)
                .ok()
                .and_then(|s| map.get(s).copied())
                .ok_or(WireError::Invalid("a record's plugin is not in the table"))
        };
        let count = r.count("the records", 6)?;
        let mut records = Vec::with_capacity(count);
        // Events go to their batches only once the whole payload decoded.
        let mut events: Vec<(u32, &str, DecodedEvent)> = Vec::new();
        let mut sources: Vec<(u32, &str)> = Vec::new();
        for _ in 0..count {
            match r.byte("a record's kind")? {
                PARTIAL => {
                    let pos = read_pos(&mut r)?;
                    let slot = slot_of(r.varint("a partial's plugin")?)?;
                    let wm = r.i64("a partial's watermark")?;
                    let wm_after = r.i64("a partial's watermark")?;
                    let mut states = PartialStates::default();
                    let groups = r.count("a partial's windows", 3)?;
                    states.groups.reserve(groups);
                    for _ in 0..groups {
                        let key = Key::from(r.str("a partial's key")?);
                        let window = r.varint("a partial's window")?;
                        let state = r.bytes("a partial's state")?.to_vec();
                        states.groups.push((key, window, state));
                    }
                    let late = r.count("a partial's late windows", 2)?;
                    for _ in 0..late {
                        let key = Key::from(r.str("a late window's key")?);
                        states.late_fire.push((key, r.varint("a late window")?));
                    }
                    records.push(Record::Partial(Partial {
                        pos,
                        slot,
                        wm,
                        wm_after,
                        states,
                    }));
                }
                EVENT => {
                    let pos = read_pos(&mut r)?;
                    let batch = r.u32("an event's batch")?;
                    if batch >= MAX_BATCHES {
                        return Err(WireError::Invalid("an event's batch index past the limit"));
                    }
                    let wm = r.i64("an event's watermark")?;
                    let wm_after = wm.wrapping_add(r.i64("an event's watermark")?);
                    let mut slots = 0u64;
                    let mut sent = r.varint("an event's plugins")?;
                    while sent != 0 {
                        let b = u64::from(sent.trailing_zeros());
                        sent &= sent - 1;
                        let here = slot_of(b)?;
                        if here >= 64 {
                            return Err(WireError::Invalid("an event's plugin past slot 64"));
                        }
                        slots |= 1 << here;
                    }
                    let source = match r.byte("an event's source")? {
                        0 => sources
                            .iter()
                            .find(|(b, _)| *b == batch)
                            .map(|(_, s)| *s)
                            .ok_or(WireError::Invalid("an event's batch has no source"))?,
                        1 => {
                            let s = r.str("an event's source")?;
                            if sources.iter().any(|&(b, o)| b == batch && o != s) {
                                return Err(WireError::Invalid("a batch named with two sources"));
                            }
                            sources.push((batch, s));
                            s
                        }
                        _ => return Err(WireError::Invalid("an event's source")),
                    };
                    let event = read_event(&mut r, pos, wm)?;
                    records.push(Record::Event(Routed {
                        pos,
                        batch,
                        // Set once the batch is in order.
                        index: 0,
                        wm,
                        wm_after,
                        slots,
                    }));
                    events.push((batch, source, event));
                }
                _ => return Err(WireError::Invalid("a record's kind")),
            }
        }
        if !r.buf.is_empty() {
            return Err(WireError::Invalid("bytes after the last record"));
        }
        // Checked against what is here before any of it is kept: one
        // source per batch, one event per position (two would make two
        // records read one event), a batch's bytes addressable by spans.
        let mut grows: HashMap<u32, usize> = HashMap::new();
        let mut here: std::collections::HashSet<(u32, Pos)> = Default::default();
        for (batch, source, (p, raw, text)) in &events {
            let had = self.batches.get(batch);
            if had.is_some_and(|b| &*b.source != *source) {
                return Err(WireError::Invalid("a batch named with two sources"));
            }
            if self.positions.contains(&(*batch, p.pos)) || !here.insert((*batch, p.pos)) {
                return Err(WireError::Invalid("two events at one position"));
            }
            let own: usize = text.iter().filter_map(|t| t.err()).map(str::len).sum();
            let grown = grows.entry(*batch).or_default();
            *grown += raw.len() + own;
            if had.map_or(0, |b| b.buf.len()) + *grown > u32::MAX as usize {
                return Err(WireError::Invalid("a batch's events past 4 GiB"));
            }
        }
        self.positions.extend(here);
        for (batch, source, (mut p, raw, text)) in events {
            let b = self.batches.entry(batch).or_insert_with(|| Building {
                source: Arc::from(source),
                buf: String::new(),
                events: Vec::new(),
            });
            let base = b.buf.len() as u32;
            b.buf.push_str(raw);
            p.event.raw = Span {
                off: base,
                len: raw.len() as u32,
            };
            for (f, t) in text.into_iter().enumerate() {
                p.event.text[f] = match t {
                    Ok(s) if s.is_missing() => s,
                    Ok(s) => Span {
                        off: base + s.off,
                        len: s.len,
                    },
                    Err(own) => {
                        let off = b.buf.len() as u32;
                        b.buf.push_str(own);
                        Span {
                            off,
                            len: own.len() as u32,
                        }
                    }
                };
            }
            b.events.push(p);
        }
        self.records.append(&mut records);
        self.bytes += payload.len() as u64;
        Ok(())
    }

    /// The round of everything added, with watermark `end_wm`, and its
    /// records in canonical order.
    pub fn finish(self, end_wm: i64) -> (Round, Vec<Record>) {
        let len = self
            .batches
            .keys()
            .next_back()
            .map_or(0, |&b| b as usize + 1);
        let mut batches: Vec<Arc<EventBatch>> = Vec::with_capacity(len);
        let mut order: HashMap<u32, Vec<Pos>> = HashMap::new();
        let empty = Arc::new(EventBatch::new(Origin {
            source: Arc::from(""),
            partition: 0,
        }));
        for (bi, mut b) in self.batches {
            while batches.len() < bi as usize {
                batches.push(empty.clone());
            }
            b.events.sort_by_key(|p| p.pos);
            let mut batch = EventBatch::new(Origin {
                source: b.source,
                partition: b.events.first().map_or(0, |p| p.partition),
            });
            batch.buf = b.buf;
            let mut positions = Vec::with_capacity(b.events.len());
            for p in b.events {
                batch.enter_partition(p.partition);
                batch.events.push(p.event);
                positions.push(p.pos);
            }
            if batch.parts.len() == 1 {
                batch.parts.clear();
            }
            order.insert(bi, positions);
            batches.push(Arc::new(batch));
        }
        let mut records = self.records;
        records.sort_by_key(|r| (r.pos(), matches!(r, Record::Event(_))));
        for r in &mut records {
            if let Record::Event(e) = r {
                let positions = &order[&e.batch];
                e.index = positions
                    .binary_search(&e.pos)
                    .expect("a routed event's own") as u32;
            }
        }
        (
            Round {
                batches,
                runs: Vec::new(),
                end_wm,
            },
            records,
        )
    }
}

fn read_pos(r: &mut Reader) -> Result<Pos, WireError> {
    Ok(Pos {
        run: r.u32("a record's position")?,
        event: r.u32("a record's position")?,
    })
}

/// An event's fields: the event (spans still to be placed), its raw JSON,
/// and its text fields as spans into the raw JSON or strings of their own.
type DecodedEvent<'a> = (Pending, &'a str, [Result<Span, &'a str>; 8]);

fn read_event<'a>(r: &mut Reader<'a>, pos: Pos, wm: i64) -> Result<DecodedEvent<'a>, WireError> {
    let partition = i32::try_from(r.i64("an event's partition")?)
        .map_err(|_| WireError::Invalid("an event's partition"))?;
    let offset = r.varint("an event's offset")?;
    let ts = wm.wrapping_add(r.i64("an event's time")?);
    let flags = r.byte("an event's numbers")?;
    let latency_ms = if flags & 1 != 0 {
        f64::from_le_bytes(r.fixed8("an event's latency")?)
    } else {
        f64::NAN
    };
    let value = if flags & 2 != 0 {
        f64::from_le_bytes(r.fixed8("an event's value")?)
    } else {
        f64::NAN
    };
    let raw = r.str("an event's JSON")?;
    let mut text = [Ok(Span::MISSING); 8];
    for t in &mut text {
        *t = match r.byte("an event's text field")? {
            MISSING => Ok(Span::MISSING),
            IN_RAW => {
                let off = r.u32("an event's text field")?;
                let len = r.u32("an event's text field")?;
                let end = off as usize + len as usize;
                if end > raw.len()
                    || !raw.is_char_boundary(off as usize)
                    || !raw.is_char_boundary(end)
                {
                    return Err(WireError::Invalid("an event's text field outside its JSON"));
                }
                Ok(Span { off, len })
            }
            OWN => Err(r.str("an event's text field")?),
            _ => return Err(WireError::Invalid("an event's text field")),
        };
    }
    let event = Event {
        ts,
        latency_ms,
        value,
        text: [Span::MISSING; 8],
        raw: Span::MISSING,
        offset,
    };
    Ok((
        Pending {
            pos,
            partition,
            event,
        },
        raw,
        text,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::decode::decode_into;

    const LINES: [&str; 5] = [
        r#"{"event_id":"e1","event_type":"page_view","user_id":"u1","session_id":"s1","page":"/home","country":"DE","device":"mobile","timestamp":"2026-01-01T00:00:00Z","latency_ms":12.5}"#,
        r#"{"event_id":"e2","event_type":"purchase","user_id":"u2","page":"/shop/\"caf\u00e9\"","timestamp":"2026-01-01T00:00:01Z","value":9.99,"extra":{"a":[1,2]}}"#,
        r#"{"event_id":"e3","event_type":"click","user_id":"ü3","timestamp":"2026-01-01T00:00:02Z"}"#,
        r#"{"event_id":"e4","event_type":"page_view","user_id":"u1","page":"/a","timestamp":"2026-01-01T00:00:03Z","latency_ms":0}"#,
        r#"{"event_id":"e5","event_type":"page_view","user_id":"u5","page":"/b","referrer":"x\ny","timestamp":"2026-01-01T00:00:04Z"}"#,
    ];

    /// A batch of LINES: the first three from partition 3, the rest from 7.
    fn batch() -> Arc<EventBatch> {
        let mut b = EventBatch::new(Origin {
            source: Arc::from("kafka:events"),
            partition: 3,
        });
        for (i, l) in LINES.iter().enumerate() {
            b.enter_partition(if i < 3 { 3 } else { 7 });
            assert!(decode_into(l.as_bytes(), 100 + i as u64, &mut b).unwrap());
        }
        Arc::new(b)
    }

    fn round() -> Round {
        let b = batch();
        Round {
            batches: vec![b.clone(), b],
            runs: Vec::new(),
            end_wm: 5,
        }
    }

    fn ids(names: &[(&str, bool, &str)]) -> Vec<SlotId> {
        names
            .iter()
            .map(|(n, s, h)| SlotId::new(Arc::from(*n), *s, h))
            .collect()
    }

    fn event(run: u32, batch: u32, i: u32, slots: u64) -> Record {
        Record::Event(Routed {
            pos: Pos { run, event: i },
            batch,
            index: i,
            wm: i64::from(i) - 10,
            wm_after: i64::from(i) - 9,
            slots,
        })
    }

    fn partial(run: u32, slot: u16) -> Record {
        Record::Partial(Partial {
            pos: Pos { run, event: 0 },
            slot,
            wm: i64::MIN,
            wm_after: -3,
            states: PartialStates {
                groups: vec![
                    (Key::from("/home"), 60_000, vec![1, 2, 3]),
                    (Key::from(""), u64::MAX, Vec::new()),
                ],
                late_fire: vec![(Key::from("DE"), 7)],
            },
        })
    }

    fn payload(slots: &[SlotId], round: &Round, records: &[Record]) -> Vec<u8> {
        let mut out = Vec::new();
        Encoder::new(slots).encode(round, records, &mut out);
        out
    }

    /// Every field of an event stage 2 can read.
    fn fields(b: &EventBatch, i: usize) -> String {
        let e = &b.events[i];
        let text: Vec<Option<&str>> = crate::event::TextField::ALL
            .iter()
            .map(|&f| b.text(e, f))
            .collect();
        format!(
            "{} {} {:?} {:?} {} {} {:?} {}",
            b.origin.source,
            b.partition_of_event(i),
            e.latency_ms,
            e.value,
            e.ts,
            e.offset,
            text,
            b.raw(e)
        )
    }

    /// Two senders' records for one owner (a partial, events of two
    /// batches, from two partitions, with escaped and missing fields)
    /// decode into a round whose batches hold those events, in canonical
    /// order, each readable as in the sender's batch; the owner's slots
    /// are in another order, and the records name its own.
    #[test]
    fn records_and_their_events_cross_intact() {
        let round = round();
        let sender = ids(&[("a", false, "h1"), ("b", false, "h2"), ("b", true, "h3")]);
        let owner = ids(&[("b", false, "h2"), ("b", true, "h3"), ("a", false, "h1")]);
        // Sender 1 read runs 0 (batch 0, events 0..3) and 1 (batch 1,
        // events 3..5); sender 2 run 2 (batch 1, events 0..3).
        let one = [
            partial(0, 0),
            event(0, 0, 0, 0b011),
            event(0, 0, 2, 0b100),
            event(1, 1, 4, 0b010),
        ];
        let two = [event(2, 1, 1, 0b001), partial(2, 2)];
        let mut inbox = Inbox::new(&owner);
        // The later sender first: the order of arrival does not matter.
        inbox.add(&payload(&sender, &round, &two)).unwrap();
        inbox.add(&payload(&sender, &round, &one)).unwrap();
        let (own, records) = inbox.finish(42);
        assert_eq!(own.end_wm, 42);
        assert_eq!(own.batches.len(), 2);
        assert_eq!(own.batches[0].events.len(), 2, "batch 0: events 0 and 2");
        assert_eq!(own.batches[1].events.len(), 2, "batch 1: events 4 then 1");
        let mut seen = Vec::new();
        for r in &records {
            match r {
                Record::Partial(p) => {
                    seen.push(format!("partial {:?} slot {}", p.pos, p.slot));
                    assert_eq!((p.wm, p.wm_after), (i64::MIN, -3));
                    assert_eq!(
                        p.states.groups,
                        vec![
                            (Key::from("/home"), 60_000, vec![1, 2, 3]),
                            (Key::from(""), u64::MAX, Vec::new())
                        ]
                    );
                    assert_eq!(p.states.late_fire, vec![(Key::from("DE"), 7)]);
                }
                Record::Event(e) => {
                    seen.push(format!("event {:?} slots {:b}", e.pos, e.slots));
                    let b = &own.batches[e.batch as usize];
                    let sent = &round.batches[e.batch as usize];
                    assert_eq!(
                        fields(b, e.index as usize),
                        fields(sent, e.pos.event as usize),
                        "{e:?}"
                    );
                    assert_eq!(
                        (e.wm, e.wm_after),
                        (i64::from(e.pos.event) - 10, i64::from(e.pos.event) - 9)
                    );
                }
            }
        }
        // Sender slots a, b, b-shadow are the owner's 2, 0, 1.
        assert_eq!(
            seen,
            [
                "partial Pos { run: 0, event: 0 } slot 2",
                "event Pos { run: 0, event: 0 } slots 101",
                "event Pos { run: 0, event: 2 } slots 10",
                "event Pos { run: 1, event: 4 } slots 1",
                "partial Pos { run: 2, event: 0 } slot 1",
                "event Pos { run: 2, event: 1 } slots 100",
            ]
        );
        // The escaped page and the non-ASCII user came through as strings.
        let b1 = &own.batches[1];
        let e = records
            .iter()
            .find_map(|r| match r {
                Record::Event(e) if e.pos.run == 2 => Some(e.index as usize),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            b1.text(&b1.events[e], crate::event::TextField::Page),
            Some("/shop/\"café\"")
        );
        assert!(b1.raw(&b1.events[e]).contains(r#""extra":{"a":[1,2]}"#));
    }

    #[test]
    fn a_record_of_a_plugin_or_version_the_owner_lacks_is_refused() {
        let round = round();
        let sender = ids(&[("a", false, "h1"), ("b", false, "h2")]);
        let records = [event(0, 0, 1, 0b10)];
        let p = payload(&sender, &round, &records);
        let mut only_a = Inbox::new(&ids(&[("a", false, "h1")]));
        assert_eq!(
            only_a.add(&p),
            Err(WireError::UnknownPlugin {
                plugin: "b".into(),
                shadow: false
            })
        );
        let mut shadow_b = Inbox::new(&ids(&[("a", false, "h1"), ("b", true, "h2")]));
        assert!(matches!(
            shadow_b.add(&p),
            Err(WireError::UnknownPlugin { shadow: false, .. })
        ));
        let mut newer_b = Inbox::new(&ids(&[("a", false, "h1"), ("b", false, "h9")]));
        let err = newer_b.add(&p).unwrap_err();
        assert!(
            matches!(&err, WireError::OtherVersion { plugin, .. } if plugin == "b"),
            "{err}"
        );
        assert!(err.to_string().contains("another version"), "{err}");
        // One component, another config: another version too.
        let configured = |config: &str| {
            let mut slots = sender.clone();
            slots[1] = slots[1].clone().with_config(config);
            slots
        };
        assert_eq!(configured(""), sender, "no config leaves the version");
        let p2 = payload(&configured(r#"{"limit":5}"#), &round, &records);
        assert!(matches!(
            Inbox::new(&configured(r#"{"limit":6}"#)).add(&p2),
            Err(WireError::OtherVersion { .. })
        ));
        assert!(Inbox::new(&configured(r#"{"limit":5}"#)).add(&p2).is_ok());
        let mut future = p.clone();
        future[0] = VERSION + 1;
        assert_eq!(
            Inbox::new(&sender).add(&future),
            Err(WireError::Version(VERSION + 1))
        );
    }

    /// An event naming a batch index past [`MAX_BATCHES`] is refused: the
    /// owner's round holds a batch per index up to the highest named (the
    /// fuzzer found a payload naming batch ~4 billion, which took the
    /// owner's memory).
    #[test]
    fn a_batch_index_past_the_limit_is_refused() {
        let slots = ids(&[("a", false, "h1")]);
        let mut round = round();
        let last = round.batches[0].clone();
        round.batches.resize(MAX_BATCHES as usize + 1, last);
        let ok = payload(&slots, &round, &[event(0, MAX_BATCHES - 1, 1, 1)]);
        let mut inbox = Inbox::new(&slots);
        inbox.add(&ok).unwrap();
        assert_eq!(inbox.finish(0).0.batches.len(), MAX_BATCHES as usize);
        let past = payload(&slots, &round, &[event(0, MAX_BATCHES, 1, 1)]);
        assert_eq!(
            Inbox::new(&slots).add(&past),
            Err(WireError::Invalid("an event's batch index past the limit"))
        );
    }

    /// An event at a position already decoded (in this payload or an
    /// earlier one), or a batch named with another source, is refused: two
    /// records would read one event, or an event would report another
    /// source.
    #[test]
    fn a_position_twice_or_a_second_source_is_refused() {
        let slots = ids(&[("a", false, "h1")]);
        let round = round();
        let twice = payload(&slots, &round, &[event(0, 0, 1, 1), event(0, 0, 1, 1)]);
        assert_eq!(
            Inbox::new(&slots).add(&twice),
            Err(WireError::Invalid("two events at one position"))
        );
        let mut inbox = Inbox::new(&slots);
        inbox
            .add(&payload(&slots, &round, &[event(0, 0, 1, 1)]))
            .unwrap();
        let again = payload(&slots, &round, &[event(0, 0, 1, 1), event(0, 0, 2, 1)]);
        assert_eq!(
            inbox.add(&again),
            Err(WireError::Invalid("two events at one position"))
        );
        let mut other = round.clone();
        let mut b = (*other.batches[0]).clone();
        b.origin.source = Arc::from("kafka:other");
        other.batches[0] = Arc::new(b);
        let elsewhere = payload(&slots, &other, &[event(0, 0, 2, 1)]);
        assert_eq!(
            inbox.add(&elsewhere),
            Err(WireError::Invalid("a batch named with two sources"))
        );
        let (own, records) = inbox.finish(0);
        assert_eq!((own.batches[0].events.len(), records.len()), (1, 1));
    }

    /// Every cut of a payload, and every byte of it changed, gives an error
    /// or a payload that decodes; never a panic, and a refused payload
    /// leaves nothing in the inbox.
    #[test]
    fn damaged_payloads_are_refused_without_a_trace() {
        let round = round();
        let slots = ids(&[("a", false, "h1"), ("b", false, "h2"), ("b", true, "h3")]);
        let good = payload(
            &slots,
            &round,
            &[partial(0, 1), event(0, 0, 1, 0b111), event(1, 1, 3, 0b1)],
        );
        for cut in 0..good.len() {
            let mut inbox = Inbox::new(&slots);
            assert!(inbox.add(&good[..cut]).is_err(), "cut at {cut}");
            let (own, records) = inbox.finish(0);
            assert!(own.batches.is_empty() && records.is_empty(), "cut at {cut}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(
            Inbox::new(&slots).add(&longer),
            Err(WireError::Invalid("bytes after the last record"))
        );
        for i in 0..good.len() {
            for x in [0x01u8, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] ^= x;
                let mut inbox = Inbox::new(&slots);
                if inbox.add(&bad).is_ok() {
                    // What decoded must still be usable by stage 2.
                    let (own, records) = inbox.finish(0);
                    for r in records {
                        if let Record::Event(e) = r {
                            let b = &own.batches[e.batch as usize];
                            let _ = fields(b, e.index as usize);
                        }
                    }
                }
            }
        }
    }
}
