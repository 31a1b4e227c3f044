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

/// The standard text fields of an event (see DESIGN.md), in column order.
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

/// A batch of events from one source partition, in arrival order.
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

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}
