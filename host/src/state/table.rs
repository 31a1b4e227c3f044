//! What every operator's keyed state has in common: a [`KeyedState`] whose
//! values are [`Stored`] — they encode themselves for the state store and
//! hold the plugin's state bytes — so taking a commit's changes, sampling
//! states for a migration dry-run and migrating every state are written
//! once for the window and the detector operators.

use super::codec::Changes;
use super::keyed::{KeyedState, Vacant};

/// A keyed value as the state store keeps it.
pub trait Stored: Vacant + Default {
    /// The exact size of [`Stored::encode`]'s output.
    fn encoded_len(&self) -> usize;
    /// Append the entry the store keeps for this value.
    fn encode(&self, out: &mut Vec<u8>);
    /// The plugin's state bytes this value holds (empty: none yet).
    fn states(&self) -> impl Iterator<Item = &Vec<u8>>;
    /// The same, to rewrite in place.
    fn states_mut(&mut self) -> impl Iterator<Item = &mut Vec<u8>>;
}

/// One operator's state changes since the last commit.
#[derive(Default)]
pub struct StateDelta {
    /// Replace everything stored for the plugin (`changes` then holds
    /// every key).
    pub rewrite: bool,
    /// The operator-wide part of the state.
    pub meta: Vec<u8>,
    /// Changed keys: the new entry, or `None` when the key is gone.
    pub changes: Changes,
}

impl<V: Stored> KeyedState<V> {
    /// Up to `n` non-empty plugin states (a migration dry-run sample).
    pub fn sample(&self, n: usize) -> Vec<Vec<u8>> {
        self.values()
            .flat_map(Stored::states)
            .filter(|s| !s.is_empty())
            .take(n)
            .cloned()
            .collect()
    }

    /// Rewrite every non-empty plugin state with `f`; all or nothing: on
    /// an error nothing has changed. Returns the number of states.
    pub fn try_map<E>(
        &mut self,
        mut f: impl FnMut(&[u8]) -> Result<Vec<u8>, E>,
    ) -> Result<usize, E> {
        let mut mapped = Vec::new();
        for s in self.values().flat_map(Stored::states) {
            if !s.is_empty() {
                mapped.push(f(s)?);
            }
        }
        let n = mapped.len();
        let mut mapped = mapped.into_iter();
        // The same values in the same order as above.
        for s in self.values_mut().flat_map(Stored::states_mut) {
            if !s.is_empty() {
                *s = mapped.next().expect("one new state per state");
            }
        }
        self.rewrite = true;
        Ok(n)
    }

    /// The next commit rewrites every key (new, reset or migrated state).
    pub fn set_rewrite(&mut self) {
        self.rewrite = true;
    }

    /// The changes since the last call, with the operator-wide `meta`:
    /// every key when the state is to be rewritten, else the keys changed
    /// (none: the key is gone).
    pub fn delta(&mut self, meta: Vec<u8>) -> StateDelta {
        let rewrite = std::mem::take(&mut self.rewrite);
        let mut changes = Changes::default();
        if rewrite {
            self.take_all(|k, v| changes.put_sized(k, v.encoded_len(), |b| v.encode(b)));
        } else {
            self.take_changed(|k, v| match v {
                Some(v) => changes.put_sized(k, v.encoded_len(), |b| v.encode(b)),
                None => changes.put(k, None),
            });
        }
        StateDelta {
            rewrite,
            meta,
            changes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Default, PartialEq)]
    struct Two(Vec<u8>, Vec<u8>);

    impl Vacant for Two {
        fn is_vacant(&self) -> bool {
            self.0.is_empty() && self.1.is_empty()
        }
    }

    impl Stored for Two {
        fn encoded_len(&self) -> usize {
            self.0.len() + self.1.len()
        }
        fn encode(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.0);
            out.extend_from_slice(&self.1);
        }
        fn states(&self) -> impl Iterator<Item = &Vec<u8>> {
            [&self.0, &self.1].into_iter()
        }
        fn states_mut(&mut self) -> impl Iterator<Item = &mut Vec<u8>> {
            [&mut self.0, &mut self.1].into_iter()
        }
    }

    #[test]
    fn a_migration_is_all_or_nothing_and_rewrites() {
        let mut t: KeyedState<Two> = KeyedState::default();
        t.insert("a", Two(vec![1], vec![]));
        t.insert("b", Two(vec![2], vec![3]));
        let _ = t.delta(Vec::new());
        assert_eq!(t.sample(10).len(), 3, "empty states are not sampled");
        let failed = t.try_map(|s| {
            if s == [3] {
                Err("bad")
            } else {
                Ok(vec![s[0] * 10])
            }
        });
        assert_eq!(failed, Err("bad"));
        assert_eq!(t.get("b"), Some(&Two(vec![2], vec![3])), "untouched");
        assert!(!t.rewrite);
        assert_eq!(t.try_map(|s| Ok::<_, ()>(vec![s[0] * 10])), Ok(3));
        assert_eq!(t.get("a"), Some(&Two(vec![10], vec![])));
        assert_eq!(t.get("b"), Some(&Two(vec![20], vec![30])));
        let d = t.delta(vec![7]);
        assert!(d.rewrite);
        assert_eq!((d.meta, d.changes.len()), (vec![7], 2));
        let d = t.delta(Vec::new());
        assert!(!d.rewrite && d.changes.is_empty(), "nothing changed since");
    }
}
