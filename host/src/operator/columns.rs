//! Building a plugin's columnar batch from the host's events: only the fields
//! the plugin declared, gathered in group order, strings dictionary-encoded
//! once per call.

use rustc_hash::FxHashMap;

use crate::event::{Event, EventBatch};
use crate::plugin::describe::Field;
use crate::plugin::io::{ColumnData, Columns};

const MISSING: u32 = u32::MAX;

/// The batch's string dictionary for one call.
#[derive(Default)]
struct Dict<'a> {
    ids: FxHashMap<&'a str, u32>,
    data: Vec<u8>,
    ends: Vec<u32>,
}

impl<'a> Dict<'a> {
    fn id(&mut self, s: Option<&'a str>) -> u32 {
        let Some(s) = s else { return MISSING };
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.ends.len() as u32;
        self.data.extend_from_slice(s.as_bytes());
        self.ends.push(self.data.len() as u32);
        self.ids.insert(s, id);
        id
    }
}

/// The value of a top-level field of the raw JSON, as text (strings as they
/// are, other values as their JSON).
fn extra(raw: &str, name: &str) -> Option<String> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(raw).ok()?;
    match map.get(name)? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// An event's value of `field` as text (the key of a keyed plugin); a
/// missing value is the empty string.
pub fn field_text<'b>(
    batch: &'b EventBatch,
    ev: &Event,
    field: &Field,
) -> std::borrow::Cow<'b, str> {
    use std::borrow::Cow;
    match field {
        Field::Text(t) => Cow::Borrowed(batch.str(ev.text[*t as usize]).unwrap_or("")),
        Field::Timestamp => Cow::Owned(ev.ts.to_string()),
        Field::LatencyMs => Cow::Owned(ev.latency_ms.to_string()),
        Field::Value => Cow::Owned(ev.value.to_string()),
        Field::Extra(name) => Cow::Owned(extra(batch.raw(ev), name).unwrap_or_default()),
    }
}

/// Columns of `fields` for the events `order` (indices into `batch.events`).
pub fn build(batch: &EventBatch, order: &[u32], fields: &[Field]) -> Columns {
    let mut extras: Vec<String> = Vec::new();
    let mut dict = Dict::default();
    let ev = |i: &u32| -> &Event { &batch.events[*i as usize] };
    let mut columns = Vec::with_capacity(fields.len());
    for field in fields {
        let col = match field {
            Field::Timestamp => ColumnData::Int(order.iter().map(|i| ev(i).ts).collect()),
            Field::LatencyMs => ColumnData::Float(order.iter().map(|i| ev(i).latency_ms).collect()),
            Field::Value => ColumnData::Float(order.iter().map(|i| ev(i).value).collect()),
            Field::Text(t) if order.len() > batch.events.len() => {
                // Events repeat (one row per window an event is in: 12 for
                // active-users): look each event's string up once.
                const UNSEEN: u32 = u32::MAX - 1;
                let mut seen = vec![UNSEEN; batch.events.len()];
                let mut id_of = |i: &u32| match seen[*i as usize] {
                    UNSEEN => {
                        let id = dict.id(batch.str(ev(i).text[*t as usize]));
                        seen[*i as usize] = id;
                        id
                    }
                    id => id,
                };
                ColumnData::Text(order.iter().map(&mut id_of).collect())
            }
            Field::Text(t) => ColumnData::Text(
                order
                    .iter()
                    .map(|i| dict.id(batch.str(ev(i).text[*t as usize])))
                    .collect(),
            ),
            Field::Extra(name) => {
                // Rare: parse each event's raw JSON for the field. The strings
                // are interned after the loop (the dictionary borrows them).
                let start = extras.len();
                extras.extend(
                    order
                        .iter()
                        .map(|i| extra(batch.raw(ev(i)), name).unwrap_or_else(|| "\u{0}".into())),
                );
                let _ = start;
                ColumnData::Text(Vec::new())
            }
        };
        columns.push(col);
    }
    // Intern extra values now that `extras` no longer grows.
    let mut next = 0usize;
    for (field, col) in fields.iter().zip(columns.iter_mut()) {
        if let (Field::Extra(_), ColumnData::Text(ids)) = (field, col) {
            *ids = extras[next..next + order.len()]
                .iter()
                .map(|s| {
                    if s == "\u{0}" {
                        MISSING
                    } else {
                        dict.id(Some(s.as_str()))
                    }
                })
                .collect();
            next += order.len();
        }
    }
    Columns {
        len: order.len() as u32,
        columns,
        dict_data: dict.data,
        dict_ends: dict.ends,
    }
}
