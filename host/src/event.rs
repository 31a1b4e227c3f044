//! The host's event representation.
//!
//! A batch keeps the original bytes of its events in one buffer; an event's
//! strings are spans into it, so decoding allocates nothing per event and a
//! plugin's columns are built straight from the buffer. Unknown fields stay in
//! the raw JSON object (`Event::raw`) and are reachable by name.

use std::sync::Arc;

/// A string inside [`EventBatch::buf`]; `len == u32::MAX` means missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub off: u32,
    pub len: u32,
}

impl Span {
    pub const MISSING: Span = Span {
        off: 0,
        len: u32::MAX,
    };

    pub fn is_missing(self) -> bool {
        self.len == u32::MAX
    }
}

/// The standard text fields of an event (those of the seed's
/// `website-analytics-events` records; the decoder, `crate::source::decode`,
/// reads them and `timestamp`, `latency_ms`, `value`), in column order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextField {
    EventId = 0,
    EventType,
    UserId,
    SessionId,
    Page,
    Country,
    Device,
    Referrer,
}

impl TextField {
    pub const ALL: [TextField; 8] = [
        TextField::EventId,
        TextField::EventType,
        TextField::UserId,
        TextField::SessionId,
        TextField::Page,
        TextField::Country,
        TextField::Device,
        TextField::Referrer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TextField::EventId => "event_id",
            TextField::EventType => "event_type",
            TextField::UserId => "user_id",
            TextField::SessionId => "session_id",
            TextField::Page => "page",
            TextField::Country => "country",
            TextField::Device => "device",
            TextField::Referrer => "referrer",
        }
    }

    pub fn from_name(name: &str) -> Option<TextField> {
        TextField::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// One decoded event.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    /// Event time, ms since the epoch.
    pub ts: i64,
    /// NaN when missing.
    pub latency_ms: f64,
    /// NaN when missing (purchase amount).
    pub value: f64,
    pub text: [Span; 8],
    /// The original JSON object.
    pub raw: Span,
    /// Position in its source: line number (file), offset (Kafka), sequence
    /// number (simulator).
    pub offset: u64,
}

/// Where a batch came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `simulator`, `file:PATH`, `kafka:TOPIC`.
    pub source: Arc<str>,
    pub partition: i32,
}

/// A source's resumable position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// Bytes consumed (file), events generated (simulator).
    pub offset: u64,
    /// Lines read (file), events generated (simulator).
    pub seq: u64,
}

/// An input line that could not be decoded.
#[derive(Debug, Clone)]
pub struct Malformed {
    pub offset: u64,
    pub reason: String,
    pub raw: String,
}

/// Where a run of a batch's events (and malformed records) from one
/// partition begins; see [`EventBatch::parts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub partition: i32,
    pub first_event: u32,
    pub first_malformed: u32,
}

/// A batch of events in arrival order: from one source partition, or (the
/// Kafka source) from several, in runs by partition.
#[derive(Debug, Clone)]
pub struct EventBatch {
    pub origin: Origin,
    /// Valid UTF-8 by construction, so reading a span needs no check
    /// (it was 4 % of the processing thread).
    pub buf: String,
    pub events: Vec<Event>,
    pub malformed: Vec<Malformed>,
    /// Source position after this batch (what a checkpoint records).
    pub end: Position,
    /// When the source read the batch's first event (for latency figures).
    pub created: std::time::Instant,
    /// Runs by partition, in order, when the batch holds more than
    /// `origin.partition` (else empty).
    pub parts: Vec<Part>,
    /// The position after this batch per partition it holds, when it holds
    /// runs (else `end` is `origin.partition`'s).
    pub ends: Vec<(i32, Position)>,
    /// Partitions of the source that still had records to read when last
    /// measured (Kafka: end offset past the consumer's position). They are
    /// not idle, however long since their last record: see
    /// `crate::window::Watermark`.
    pub backlog: Vec<i32>,
}

impl EventBatch {
    pub fn new(origin: Origin) -> Self {
        EventBatch {
            origin,
            buf: String::new(),
            events: Vec::new(),
            malformed: Vec::new(),
            end: Position::default(),
            created: std::time::Instant::now(),
            parts: Vec::new(),
            ends: Vec::new(),
            backlog: Vec::new(),
        }
    }

    /// Start a run of `partition`'s records here, unless the last run is
    /// that partition's already.
    pub fn enter_partition(&mut self, partition: i32) {
        if self.parts.last().is_some_and(|p| p.partition == partition) {
            return;
        }
        if self.parts.is_empty() {
            self.origin.partition = partition;
        }
        self.parts.push(Part {
            partition,
            first_event: self.events.len() as u32,
            first_malformed: self.malformed.len() as u32,
        });
    }

    /// The runs as (partition, range of event indices), in order; one run of
    /// `origin.partition` when the batch has no parts.
    pub fn runs(&self) -> Vec<(i32, std::ops::Range<usize>)> {
        if self.parts.is_empty() {
            return vec![(self.origin.partition, 0..self.events.len())];
        }
        let ends = self.parts[1..]
            .iter()
            .map(|p| p.first_event as usize)
            .chain([self.events.len()]);
        self.parts
            .iter()
            .zip(ends)
            .map(|(p, end)| (p.partition, p.first_event as usize..end))
            .collect()
    }

    fn part_of(&self, first: impl Fn(&Part) -> u32, i: usize) -> i32 {
        let n = self.parts.partition_point(|p| first(p) as usize <= i);
        match n.checked_sub(1) {
            Some(k) => self.parts[k].partition,
            None => self.origin.partition,
        }
    }

    /// The partition event `i` came from.
    pub fn partition_of_event(&self, i: usize) -> i32 {
        self.part_of(|p| p.first_event, i)
    }

    /// The partition malformed record `i` came from.
    pub fn partition_of_malformed(&self, i: usize) -> i32 {
        self.part_of(|p| p.first_malformed, i)
    }

    /// The position after this batch, per partition it holds.
    pub fn positions(&self) -> Vec<(i32, Position)> {
        if self.ends.is_empty() {
            vec![(self.origin.partition, self.end)]
        } else {
            self.ends.clone()
        }
    }

    pub fn str(&self, span: Span) -> Option<&str> {
        if span.is_missing() {
            return None;
        }
        // Spans start and end at a string's quotes or at the ends of
        // unescaped strings: on character boundaries.
        self.buf
            .get(span.off as usize..(span.off + span.len) as usize)
            .or(Some(""))
    }

    pub fn text(&self, ev: &Event, field: TextField) -> Option<&str> {
        self.str(ev.text[field as usize])
    }

    pub fn raw(&self, ev: &Event) -> &str {
        self.str(ev.raw).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// A copy of the first `n` events (and the bytes they point into).
    pub fn head(&self, n: usize) -> EventBatch {
        let events: Vec<Event> = self.events.iter().take(n).copied().collect();
        let end = events
            .iter()
            .flat_map(|e| e.text.iter().chain([&e.raw]))
            .filter(|s| !s.is_missing())
            .map(|s| (s.off + s.len) as usize)
            .max()
            .unwrap_or(0);
        EventBatch {
            origin: self.origin.clone(),
            buf: self.buf[..end].to_string(),
            events,
            malformed: Vec::new(),
            end: self.end,
            created: self.created,
            parts: Vec::new(),
            ends: Vec::new(),
            backlog: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn malformed(offset: u64) -> Malformed {
        Malformed {
            offset,
            reason: "bad".into(),
            raw: "x".into(),
        }
    }

    fn event() -> Event {
        Event {
            ts: 0,
            latency_ms: f64::NAN,
            value: f64::NAN,
            text: [Span::MISSING; 8],
            raw: Span::MISSING,
            offset: 0,
        }
    }

    #[test]
    fn runs_name_each_events_partition() {
        let mut b = EventBatch::new(Origin {
            source: Arc::from("kafka:t"),
            partition: 9,
        });
        assert_eq!(b.runs(), vec![(9, 0..0)], "no parts: the origin's");
        b.enter_partition(3);
        b.events.push(event());
        b.events.push(event());
        b.enter_partition(3); // still partition 3: no new run
        b.enter_partition(5);
        b.malformed.push(malformed(7)); // a run with no events
        b.enter_partition(1);
        b.events.push(event());
        b.malformed.push(malformed(8));
        assert_eq!(b.origin.partition, 3, "the first run's partition");
        assert_eq!(b.runs(), vec![(3, 0..2), (5, 2..2), (1, 2..3)]);
        let parts: Vec<i32> = (0..3).map(|i| b.partition_of_event(i)).collect();
        assert_eq!(parts, vec![3, 3, 1]);
        assert_eq!(b.partition_of_malformed(0), 5);
        assert_eq!(b.partition_of_malformed(1), 1);
        b.end = Position { offset: 4, seq: 4 };
        assert_eq!(b.positions(), vec![(3, b.end)], "no ends: the origin's");
        b.ends = vec![(1, Position { offset: 2, seq: 2 }), (3, b.end)];
        assert_eq!(b.positions(), b.ends);
    }
}
