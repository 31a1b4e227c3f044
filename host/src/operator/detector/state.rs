//! A detector's state: per key the plugin's state bytes and pending
//! timers, and an event-time queue of the timers. What a checkpoint stores
//! per key is its state and timers, encoded by hand in postcard's layout.

use std::collections::BTreeMap;

use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};

use crate::state::{Key, KeyedState, Stored, Vacant, hash_key, put_varint, varint_len, zigzag};

/// One key's state bytes (empty: none) and pending timers (sorted, usually
/// none or one).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeySlot {
    pub state: Vec<u8>,
    pub timers: Vec<i64>,
}

impl Vacant for KeySlot {
    fn is_vacant(&self) -> bool {
        self.state.is_empty() && self.timers.is_empty()
    }

    fn prefetch(&self) {
        crate::state::prefetch(&self.state);
        crate::state::prefetch(&self.timers);
    }
}

impl KeySlot {
    /// Add a timer; false if the key already has one at `at`.
    pub(super) fn add_timer(&mut self, at: i64) -> bool {
        match self.timers.binary_search(&at) {
            Ok(_) => false,
            Err(i) => {
                self.timers.insert(i, at);
                true
            }
        }
    }

    /// Remove a timer; false if the key has none at `at`.
    pub(super) fn remove_timer(&mut self, at: i64) -> bool {
        match self.timers.binary_search(&at) {
            Ok(i) => {
                self.timers.remove(i);
                true
            }
            Err(_) => false,
        }
    }
}

/// Per-key states and timers; what a checkpoint saves. One map holds each
/// key's state and timers (one lookup per key and call); the time-ordered
/// queue may hold entries of timers that already fired with their key's
/// next event — they are skipped when their time comes.
#[derive(Debug, Clone, Default)]
pub struct DetectorState {
    /// Marks the keys changed since the last commit.
    pub keys: KeyedState<KeySlot>,
    /// (time → keys with a timer then), possibly stale; see above.
    pub(super) queue: BTreeMap<i64, Vec<Key>>,
    /// Every key with a timer at or before `due_upto` that has not fired,
    /// and maybe others: gathered from the queue as the watermark passes.
    /// While timers are due, every event asks whether its key has one; this
    /// small set answers most of them without a probe of `keys` (a cache
    /// miss with hundreds of thousands of keys).
    due: FxHashSet<Key>,
    /// Up to where `due` is gathered (`None`: not yet).
    due_upto: Option<i64>,
}

/// What the state store keeps per detector key: its state and its timers.
#[derive(Serialize, Deserialize)]
struct KeyEntry<'a> {
    #[serde(borrow)]
    state: &'a [u8],
    timers: Vec<i64>,
}

/// A key's slot as postcard writes a [`KeyEntry`], by hand (see the
/// window operator's `write_wins`): its exact size, and the bytes.
fn slot_len(slot: &KeySlot) -> usize {
    varint_len(slot.state.len() as u64)
        + slot.state.len()
        + varint_len(slot.timers.len() as u64)
        + slot
            .timers
            .iter()
            .map(|&t| varint_len(zigzag(t)))
            .sum::<usize>()
}

fn write_slot(slot: &KeySlot, out: &mut Vec<u8>) {
    put_varint(out, slot.state.len() as u64);
    out.extend_from_slice(&slot.state);
    put_varint(out, slot.timers.len() as u64);
    for &t in &slot.timers {
        put_varint(out, zigzag(t));
    }
}

impl Stored for KeySlot {
    fn encoded_len(&self) -> usize {
        slot_len(self)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        write_slot(self, out)
    }

    fn states(&self) -> impl Iterator<Item = &Vec<u8>> {
        std::iter::once(&self.state)
    }

    fn states_mut(&mut self) -> impl Iterator<Item = &mut Vec<u8>> {
        std::iter::once(&mut self.state)
    }
}

impl DetectorState {
    /// Rebuild from the state store's entries.
    pub fn from_entries<'a>(
        entries: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Self, String> {
        let mut s = DetectorState::default();
        for (key, bytes) in entries {
            let e: KeyEntry = postcard::from_bytes(bytes)
                .map_err(|e| format!("detector entry of key `{key}`: {e}"))?;
            let mut slot = KeySlot {
                state: e.state.to_vec(),
                timers: Vec::with_capacity(e.timers.len()),
            };
            for t in e.timers {
                if slot.add_timer(t) {
                    s.queued(key, t);
                }
            }
            if !slot.is_vacant() {
                s.keys.insert_stored(key, slot);
            }
        }
        Ok(s)
    }

    /// Give `key` a timer at `at` (creating the key if it has no state),
    /// queued unless the key already has one then.
    #[cfg(test)]
    fn add_timer(&mut self, key: &str, at: i64) {
        if self.keys.get_or_default(key).add_timer(at) {
            self.queued(key, at);
        }
    }

    /// `key` got a new timer at `at`: queue it (and mark it due if the
    /// watermark is already past it).
    pub(super) fn queued(&mut self, key: &str, at: i64) {
        self.queue.entry(at).or_default().push(key.into());
        if self.due_upto.is_some_and(|u| at <= u) {
            self.due.insert(key.into());
        }
    }

    /// Extend `due` with the queue's keys up to `wm`.
    fn gather_due(&mut self, wm: i64) {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        if self.due_upto.is_some_and(|u| u >= wm) {
            return;
        }
        let from = self.due_upto.map_or(Unbounded, Excluded);
        for keys in self.queue.range((from, Included(wm))).map(|(_, k)| k) {
            for k in keys {
                if !self.due.contains(k) {
                    self.due.insert(k.clone());
                }
            }
        }
        self.due_upto = Some(wm);
    }

    /// Whether `key` has a timer at or before `wm` that has not fired.
    pub(super) fn key_due(&mut self, key: &str, wm: i64) -> bool {
        if self.queue.first_key_value().is_none_or(|(t, _)| *t > wm) {
            return false;
        }
        self.gather_due(wm);
        self.due.contains(key)
            && self
                .keys
                .get(key)
                .and_then(|k| k.timers.first())
                .is_some_and(|t| *t <= wm)
    }

    /// Every timer up to `t` fired: nothing gathered is due any more.
    pub(super) fn fired_until(&mut self, t: i64) {
        if self.due_upto.is_some_and(|u| u <= t) {
            self.due.clear();
        }
    }

    /// Drop `key`'s timer at `at` (it fired); whether it was pending.
    pub(super) fn take_timer(&mut self, key: &str, at: i64) -> bool {
        self.take_timer_hashed(key, hash_key(key), at)
    }

    /// [`take_timer`](Self::take_timer) of a key whose hash is `h`.
    pub(super) fn take_timer_hashed(&mut self, key: &str, h: u32, at: i64) -> bool {
        // A stale queue entry finds no timer and leaves the key unmarked.
        self.keys
            .modify_hashed(key, h, |slot| slot.remove_timer(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `key_due` (the gathered set, then the key's timers) against the
    /// plain answer, through timers added behind and ahead of the
    /// watermark, timers fired with their key's event, and firing rounds.
    #[test]
    fn gathered_due_keys_answer_as_the_timers_do() {
        let mut s = DetectorState::default();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let plain = |s: &DetectorState, k: &str, wm: i64| {
            s.keys
                .get(k)
                .and_then(|k| k.timers.first())
                .is_some_and(|t| *t <= wm)
        };
        let mut wm = -1_000i64;
        let (mut yes, mut no) = (0, 0);
        for _ in 0..20_000 {
            let key = format!("k{}", next(50));
            match next(10) {
                0..=3 => s.add_timer(&key, wm + next(400) as i64 - 100),
                4 => wm += next(30) as i64,
                5 => {
                    let at = s
                        .keys
                        .get(key.as_str())
                        .and_then(|k| k.timers.first().copied());
                    if let Some(at) = at.filter(|at| *at <= wm) {
                        s.take_timer(&key, at);
                    }
                }
                6 if next(20) == 0 => {
                    // a firing round: every timer up to wm
                    while let Some(e) = s.queue.first_entry() {
                        if *e.key() > wm {
                            break;
                        }
                        let (at, keys) = e.remove_entry();
                        for k in keys {
                            s.take_timer(&k, at);
                        }
                    }
                    s.fired_until(wm);
                }
                _ => {
                    let want = plain(&s, &key, wm);
                    assert_eq!(s.key_due(&key, wm), want, "{key} at {wm}");
                    if want { yes += 1 } else { no += 1 }
                }
            }
        }
        assert!(
            yes > 100 && no > 100,
            "both answers exercised: {yes} / {no}"
        );
    }

    #[test]
    fn entries_are_written_as_the_store_reads_them() {
        let mut s = DetectorState::default();
        let slot = |state: &[u8], timers: &[i64]| KeySlot {
            state: state.to_vec(),
            timers: timers.to_vec(),
        };
        let big = vec![7u8; 300];
        s.keys.insert("u1", slot(&[1, 2, 3], &[-5, 70_000]));
        s.keys.insert("u2", slot(&[], &[9]));
        s.keys
            .insert("u3", slot(&big, &[i64::MIN, -64, 63, i64::MAX]));
        for (k, state, timers) in [
            ("u1", &[1u8, 2, 3][..], vec![-5, 70_000]),
            ("u3", &big[..], vec![i64::MIN, -64, 63, i64::MAX]),
        ] {
            let mut buf = vec![0xAA];
            let slot = s.keys.get(k).unwrap();
            write_slot(slot, &mut buf);
            let old = postcard::to_allocvec(&KeyEntry { state, timers }).unwrap();
            assert_eq!(buf[0], 0xAA, "appends");
            assert_eq!(&buf[1..], old.as_slice(), "key {k}");
            assert_eq!(buf.len() - 1, slot_len(slot));
        }
        s.keys.set_rewrite();
        let out = s.keys.delta(Vec::new()).changes;
        let entries: Vec<(String, Vec<u8>)> = out
            .iter()
            .map(|r| {
                r.map(|(k, v)| (k.to_string(), v.unwrap().to_vec()))
                    .unwrap()
            })
            .collect();
        let back =
            DetectorState::from_entries(entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .unwrap();
        let sorted = |s: &DetectorState| {
            let mut v: Vec<(Key, KeySlot)> =
                s.keys.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        assert_eq!(sorted(&back), sorted(&s));
        let mut back = back;
        let again = back.keys.delta(Vec::new()).changes;
        assert_eq!(again.iter().count(), 0, "a restore marks nothing changed");
        let queue: Vec<(i64, usize)> = back.queue.iter().map(|(t, k)| (*t, k.len())).collect();
        assert_eq!(
            queue,
            vec![
                (i64::MIN, 1),
                (-64, 1),
                (-5, 1),
                (9, 1),
                (63, 1),
                (70_000, 1),
                (i64::MAX, 1)
            ]
        );
    }

    #[test]
    fn a_timer_that_fired_with_its_key_is_skipped_in_the_queue() {
        let mut s = DetectorState::default();
        s.keys.insert_stored(
            "k",
            KeySlot {
                state: vec![1],
                timers: vec![10, 20],
            },
        );
        s.queue.insert(10, vec!["k".into()]);
        s.queue.insert(20, vec!["k".into()]);
        assert!(s.take_timer("k", 10), "fires with the key's event");
        assert!(!s.take_timer("k", 10), "then the queue's entry is stale");
        assert!(s.take_timer("k", 20));
        assert_eq!(s.keys.get("k").unwrap().timers, Vec::<i64>::new());
        s.keys.get_mut("k").unwrap().state.clear();
        s.keys.get_mut("k").unwrap().add_timer(30);
        assert!(s.take_timer("k", 30));
        assert!(s.keys.get("k").unwrap().is_vacant(), "no state, no timers");
        let out = s.keys.delta(Vec::new()).changes;
        let written: Vec<_> = out.iter().map(|r| r.unwrap()).collect();
        assert_eq!(written, vec![("k", None)], "deleted at the commit");
        assert!(s.keys.get("k").is_none(), "gone");
    }
}
