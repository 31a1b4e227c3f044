//! Zero-copy, typed views over the columnar event batches the host sends.

/// The values of one column.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnData {
    /// `timestamp` (ms since the epoch).
    Int(Vec<i64>),
    /// `latency_ms`, `value`; NaN when missing.
    Float(Vec<f64>),
    /// Ids into the batch's dictionary; `u32::MAX` when missing.
    Text(Vec<u32>),
}

/// A whole batch as it crossed the boundary: columns in the order of the
/// plugin's `describe().fields`, plus the batch's string dictionary.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub len: usize,
    pub fields: Vec<String>,
    pub columns: Vec<ColumnData>,
    pub dict_data: Vec<u8>,
    pub dict_ends: Vec<u32>,
}

/// Marks a missing text value.
pub const MISSING: u32 = u32::MAX;

impl Batch {
    /// The whole batch as one slice of events.
    pub fn events(&self) -> Events<'_> {
        Events {
            batch: self,
            start: 0,
            len: self.len,
        }
    }

    /// Events `[start, start + len)`.
    pub fn slice(&self, start: usize, len: usize) -> Events<'_> {
        assert!(start + len <= self.len, "slice out of the batch");
        Events {
            batch: self,
            start,
            len,
        }
    }

    /// Dictionary string `id`.
    pub fn dict_str(&self, id: u32) -> Option<&str> {
        std::str::from_utf8(self.dict_bytes(id)?).ok()
    }

    /// Dictionary entry `id` as bytes (no UTF-8 check: for comparisons).
    fn dict_bytes(&self, id: u32) -> Option<&[u8]> {
        if id == MISSING {
            return None;
        }
        let i = id as usize;
        let end = *self.dict_ends.get(i)? as usize;
        let start = if i == 0 {
            0
        } else {
            self.dict_ends[i - 1] as usize
        };
        Some(&self.dict_data[start..end])
    }

    fn column(&self, name: &str) -> &ColumnData {
        match self.fields.iter().position(|f| f == name) {
            Some(i) => &self.columns[i],
            None => panic!(
                "field `{name}` is not declared in describe().fields {:?}",
                self.fields
            ),
        }
    }
}

/// The events of one key (and one window, for aggregators): a view into a
/// batch, no copy.
#[derive(Clone, Copy)]
pub struct Events<'a> {
    batch: &'a Batch,
    start: usize,
    len: usize,
}

impl<'a> Events<'a> {
    /// Number of events.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// An integer column (`timestamp`).
    pub fn int(&self, field: &str) -> &'a [i64] {
        match self.batch.column(field) {
            ColumnData::Int(v) => &v[self.start..self.start + self.len],
            other => panic!("field `{field}` is not an int column: {}", kind(other)),
        }
    }

    /// A float column (`latency_ms`, `value`); NaN where missing.
    pub fn float(&self, field: &str) -> &'a [f64] {
        match self.batch.column(field) {
            ColumnData::Float(v) => &v[self.start..self.start + self.len],
            other => panic!("field `{field}` is not a float column: {}", kind(other)),
        }
    }

    /// A text column (every other field).
    pub fn text(&self, field: &str) -> TextColumn<'a> {
        match self.batch.column(field) {
            ColumnData::Text(v) => TextColumn {
                ids: &v[self.start..self.start + self.len],
                batch: self.batch,
            },
            other => panic!("field `{field}` is not a text column: {}", kind(other)),
        }
    }

    /// Shortcut for `int("timestamp")`.
    pub fn timestamps(&self) -> &'a [i64] {
        self.int("timestamp")
    }
}

fn kind(c: &ColumnData) -> &'static str {
    match c {
        ColumnData::Int(_) => "int",
        ColumnData::Float(_) => "float",
        ColumnData::Text(_) => "text",
    }
}

/// A dictionary-encoded text column.
#[derive(Clone, Copy)]
pub struct TextColumn<'a> {
    ids: &'a [u32],
    batch: &'a Batch,
}

impl<'a> TextColumn<'a> {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The value of event `i`, `None` if the event lacks the field.
    pub fn get(&self, i: usize) -> Option<&'a str> {
        self.batch.dict_str(self.ids[i])
    }

    /// The batch-local id of event `i`'s value: equal strings have equal ids
    /// within one batch (cheap comparisons), `None` if missing.
    pub fn id(&self, i: usize) -> Option<u32> {
        let id = self.ids[i];
        (id != MISSING).then_some(id)
    }

    /// Whether event `i`'s value equals `s` (bytes equal to a `str` are
    /// valid UTF-8, so this skips the check `get` makes).
    pub fn is(&self, i: usize, s: &str) -> bool {
        self.batch.dict_bytes(self.ids[i]) == Some(s.as_bytes())
    }

    /// How many events have the value `s`: the usual filter of a counter,
    /// `events.text("event_type").count("page_view")`. Bytes are compared
    /// until the first match gives `s`'s id in the batch's dictionary, then
    /// ids (equal strings share one id within a batch).
    pub fn count(&self, s: &str) -> usize {
        let mut found = None;
        let mut n = 0;
        for &id in self.ids {
            match found {
                Some(want) => n += usize::from(id == want),
                None if self.batch.dict_bytes(id) == Some(s.as_bytes()) => {
                    found = Some(id);
                    n += 1;
                }
                None => {}
            }
        }
        n
    }

    pub fn iter(&self) -> impl Iterator<Item = Option<&'a str>> + 'a {
        let batch = self.batch;
        self.ids.iter().map(move |&id| batch.dict_str(id))
    }

    /// Raw ids (`u32::MAX` = missing).
    pub fn ids(&self) -> &'a [u32] {
        self.ids
    }
}
