//! The state of one aggregator's windows: per key its live windows with the
//! plugin's state bytes, and a trigger queue of (time → keys to look at).
//! What a checkpoint stores per key is the key's windows, encoded by hand
//! in postcard's layout (the commit encodes every changed key on the
//! processing thread).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::state::{Key, KeyedState, StateDelta, Stored, put_varint, varint_len, zigzag};
use crate::window::Panes;

#[derive(Debug, Clone)]
pub struct Win {
    pub id: u64,
    pub start: i64,
    pub end: i64,
    pub fired: bool,
    /// The plugin's state; empty until an `add` succeeded.
    pub state: Vec<u8>,
}

/// Everything an aggregator's windows hold; what a checkpoint saves.
#[derive(Debug, Clone)]
pub struct WindowState {
    /// Each key's live windows; marks the keys changed since the last commit.
    pub keys: KeyedState<Vec<Win>>,
    pub(super) triggers: BTreeMap<i64, Vec<Key>>,
    pub(super) next_session: u64,
    /// The watermark of the last firing round: every window whose max
    /// timestamp is at or before it has fired (or had no events).
    pub(super) fired_until: i64,
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

/// The operator-wide part of one aggregator's state on several workers,
/// as one: the largest session id counter (every worker's ids stay below
/// it, so no key's sessions collide after a restore on other workers) and
/// the earliest firing round. Parts that are not a window meta (detectors
/// have none) give an empty one.
pub fn combine_meta(metas: &[Vec<u8>]) -> Vec<u8> {
    let parsed: Option<Vec<(u64, i64)>> = metas
        .iter()
        .map(|m| {
            let (a, b) = m.split_at_checked(8)?;
            Some((
                u64::from_le_bytes(a.try_into().ok()?),
                i64::from_le_bytes(b.try_into().ok()?),
            ))
        })
        .collect();
    match parsed {
        Some(p) if !p.is_empty() => {
            let session = p.iter().map(|x| x.0).max().unwrap_or(0);
            let fired = p.iter().map(|x| x.1).min().unwrap_or(i64::MIN);
            let mut m = session.to_le_bytes().to_vec();
            m.extend_from_slice(&fired.to_le_bytes());
            m
        }
        _ => Vec::new(),
    }
}

impl Stored for Vec<Win> {
    fn encoded_len(&self) -> usize {
        wins_len(self)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        write_wins(self, out)
    }

    fn states(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.iter().map(|w| &w.state)
    }

    fn states_mut(&mut self) -> impl Iterator<Item = &mut Vec<u8>> {
        self.iter_mut().map(|w| &mut w.state)
    }
}

impl WindowState {
    /// The changes since the last commit, with the operator-wide part.
    pub fn delta(&mut self) -> StateDelta {
        let meta = self.meta();
        self.keys.delta(meta)
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
                if let Some(w) = wins.iter().find(|w| w.end - w.start != pn.slide()) {
                    return Err(format!(
                        "window entry of key `{key}`: [{}, {}) is not a pane of {} ms",
                        w.start,
                        w.end,
                        pn.slide()
                    ));
                }
                wins.sort_by_key(|w| w.start);
                let starts = wins.iter().map(|w| w.start);
                if let Some(at) = pn.next_trigger(starts, s.fired_until, lateness_ms) {
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

    pub(super) fn trigger(&mut self, at: i64, key: &str) {
        self.triggers.entry(at).or_default().push(key.into());
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
        let panes = Panes::of_sliding(60_000, 5_000);
        let e = WindowState::from_entries(&meta, [("p", &buf[1..])].into_iter(), 0, panes);
        assert!(
            e.unwrap_err().contains("is not a pane of 5000 ms"),
            "refused"
        );
    }
}
