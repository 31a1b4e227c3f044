//! An operator's per-key values with their "changed since the last commit"
//! mark kept in the slot.
//!
//! A commit writes exactly the keys changed since the previous one. Keeping
//! those keys in a set beside the map cost a second hash probe each time a
//! key changed, and a scan of the set's whole table at every commit — both
//! cache misses with hundreds of thousands of keys (the set's drain was the
//! largest host function at 100 000 events/s). Here the probe that finds a
//! key for writing also marks it, and a key is listed once, when its mark is
//! set, so the commit visits just the listed keys.
//!
//! A key whose value becomes vacant (no windows, no state and no timers)
//! stays in the map, marked, until the commit has written its deletion; a
//! vacant value reads like an absent key.

use rustc_hash::FxHashMap;

use super::Key;

/// Whether a value holds nothing, so its key can go.
pub trait Vacant {
    fn is_vacant(&self) -> bool;

    /// Ask the CPU to fetch the value's heap parts (a hint), a few keys
    /// before a loop reads them: see [`LOOK_AHEAD`].
    fn prefetch(&self) {}
}

impl<T> Vacant for Vec<T> {
    fn is_vacant(&self) -> bool {
        self.is_empty()
    }

    fn prefetch(&self) {
        super::prefetch(self);
    }
}

/// How many keys ahead of their use a loop over many keys looks a key up
/// and prefetches its value ([`KeyedState::prefetch`]): with hundreds of
/// thousands of keys every lookup misses the cache, and the look-ahead lets
/// the misses of different keys overlap instead of each waiting for its
/// own. Measured on the commits' encoding (`rtap-bench --commit-every
/// 10000`, 1 M events): 0.46–0.54 s → 0.27–0.36 s; 16 ahead did no better.
pub const LOOK_AHEAD: usize = 8;

#[derive(Debug, Clone, Default)]
struct Slot<V> {
    value: V,
    changed: bool,
}

impl<V> Slot<V> {
    /// Mark the slot changed, listing its key the first time.
    fn mark(&mut self, key: &str, list: &mut Vec<Key>) {
        if !self.changed {
            self.changed = true;
            list.push(key.into());
        }
    }
}

/// Per-key values; every mutable access marks its key changed.
#[derive(Debug, Clone)]
pub struct KeyedState<V> {
    map: FxHashMap<Key, Slot<V>>,
    /// The marked keys, each once: what the next commit writes.
    changed: Vec<Key>,
    /// Every key changed (new, reset or migrated state): the next commit
    /// rewrites the plugin's whole prefix.
    pub rewrite: bool,
}

impl<V> Default for KeyedState<V> {
    fn default() -> Self {
        KeyedState {
            map: FxHashMap::default(),
            changed: Vec::new(),
            rewrite: false,
        }
    }
}

impl<V: Vacant + Default> KeyedState<V> {
    /// A key's value (maybe vacant), without marking it.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.map.get(key).map(|s| &s.value)
    }

    /// Look `key` up and prefetch its value, [`LOOK_AHEAD`] keys before
    /// it is used.
    pub fn prefetch(&self, key: &str) {
        if let Some(slot) = self.map.get(key) {
            slot.value.prefetch();
        }
    }

    /// In a loop over `keys` at `i`: prefetch the key [`LOOK_AHEAD`]
    /// places on, if there is one.
    pub fn prefetch_ahead<K: AsRef<str>>(&self, keys: &[K], i: usize) {
        if let Some(ahead) = keys.get(i + LOOK_AHEAD) {
            self.prefetch(ahead.as_ref());
        }
    }

    /// A key's value for writing: the key is marked changed.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        let slot = self.map.get_mut(key)?;
        slot.mark(key, &mut self.changed);
        Some(&mut slot.value)
    }

    /// Let `f` change a key's value; the key is marked changed only if `f`
    /// says it changed it. False for an absent key.
    pub fn modify(&mut self, key: &str, f: impl FnOnce(&mut V) -> bool) -> bool {
        let Some(slot) = self.map.get_mut(key) else {
            return false;
        };
        let changed = f(&mut slot.value);
        if changed {
            slot.mark(key, &mut self.changed);
        }
        changed
    }

    /// A key's value for writing, created empty if absent; marked changed.
    pub fn get_or_default(&mut self, key: &str) -> &mut V {
        // One probe; building the `Key` costs no allocation for keys of up
        // to 24 bytes.
        let slot = self.map.entry(Key::from(key)).or_default();
        slot.mark(key, &mut self.changed);
        &mut slot.value
    }

    /// Set a key's value; marked changed.
    pub fn insert(&mut self, key: &str, value: V) {
        *self.get_or_default(key) = value;
    }

    /// Set a key's value as the store already has it (a restore): unmarked.
    pub fn insert_stored(&mut self, key: &str, value: V) {
        self.map.insert(
            key.into(),
            Slot {
                value,
                changed: false,
            },
        );
    }

    /// Every value, vacant ones included.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values().map(|s| &s.value)
    }

    /// Every value for rewriting in place: the next commit rewrites the
    /// whole prefix.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.rewrite = true;
        self.map.values_mut().map(|s| &mut s.value)
    }

    /// Number of keys, vacant ones included.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Hand every key marked since the last call to `f` with its value
    /// (`None`: vacant, the key is deleted), and unmark it. Vacant keys
    /// leave the map here. The list keeps its allocation.
    pub fn take_changed(&mut self, mut f: impl FnMut(&Key, Option<&V>)) {
        for i in 0..self.changed.len() {
            self.prefetch_ahead(&self.changed, i);
            let key = &self.changed[i];
            let Some(slot) = self.map.get_mut(key.as_str()) else {
                debug_assert!(false, "a marked key is in the map");
                continue;
            };
            slot.changed = false;
            if slot.value.is_vacant() {
                self.map.remove(key.as_str());
                f(key, None);
            } else {
                f(key, Some(&slot.value));
            }
        }
        self.changed.clear();
    }

    /// Hand every key with a value to `f` (a full rewrite follows) and
    /// unmark all: vacant keys leave the map.
    pub fn take_all(&mut self, mut f: impl FnMut(&Key, &V)) {
        self.changed.clear();
        self.map.retain(|_, s| {
            s.changed = false;
            !s.value.is_vacant()
        });
        for (k, s) in &self.map {
            f(k, &s.value);
        }
    }

    /// Every key with its value, vacant ones included.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &V)> {
        self.map.iter().map(|(k, s)| (k, &s.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(s: &mut KeyedState<Vec<u8>>) -> Vec<(String, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        s.take_changed(|k, v| out.push((k.to_string(), v.cloned())));
        out.sort();
        out
    }

    #[test]
    fn a_key_is_listed_once_however_often_it_changes() {
        let mut s = KeyedState::<Vec<u8>>::default();
        s.insert_stored("stored", vec![1]);
        s.get_or_default("a").push(1);
        s.get_or_default("a").push(2);
        s.get_mut("a").unwrap().push(3);
        assert!(s.get_mut("absent").is_none());
        assert!(!s.modify("stored", |_| false), "unchanged: not marked");
        assert!(!s.modify("absent", |_| true));
        assert_eq!(s.get("stored"), Some(&vec![1]), "reading does not mark");
        assert_eq!(changed(&mut s), vec![("a".into(), Some(vec![1, 2, 3]))]);
        assert_eq!(changed(&mut s), vec![], "unmarked after the commit");
        s.get_mut("stored").unwrap().push(2);
        assert_eq!(changed(&mut s), vec![("stored".into(), Some(vec![1, 2]))]);
    }

    #[test]
    fn a_vacant_key_is_deleted_at_the_commit_and_can_come_back() {
        let mut s = KeyedState::<Vec<u8>>::default();
        s.insert_stored("k", vec![1]);
        s.insert_stored("j", vec![1]);
        s.get_mut("k").unwrap().clear();
        assert_eq!(s.len(), 2, "kept until the commit");
        assert_eq!(changed(&mut s), vec![("k".into(), None)]);
        assert_eq!(s.len(), 1);
        assert!(s.get("k").is_none());
        // Emptied and refilled within one interval: written once, live.
        s.get_mut("j").unwrap().clear();
        s.get_or_default("j").push(7);
        assert_eq!(changed(&mut s), vec![("j".into(), Some(vec![7]))]);
    }

    #[test]
    fn a_commit_of_many_keys_hands_each_once_and_drops_the_vacant() {
        // More keys than the look-ahead, every third one emptied.
        let mut s = KeyedState::<Vec<u8>>::default();
        for i in 0..10 * LOOK_AHEAD {
            s.insert_stored(&format!("k{i}"), vec![1]);
        }
        for i in 0..10 * LOOK_AHEAD {
            let v = s.get_mut(&format!("k{i}")).unwrap();
            if i.is_multiple_of(3) {
                v.clear()
            } else {
                v.push(i as u8)
            }
        }
        let got = changed(&mut s);
        assert_eq!(got.len(), 10 * LOOK_AHEAD);
        for (k, v) in &got {
            let i: usize = k[1..].parse().unwrap();
            let want = (!i.is_multiple_of(3)).then(|| vec![1, i as u8]);
            assert_eq!(v, &want, "{k}");
        }
        assert_eq!(s.len(), 10 * LOOK_AHEAD - (10 * LOOK_AHEAD).div_ceil(3));
        assert_eq!(changed(&mut s), vec![]);
    }

    #[test]
    fn a_full_rewrite_unmarks_everything_and_drops_vacant_keys() {
        let mut s = KeyedState::<Vec<u8>>::default();
        s.insert_stored("k", vec![1]);
        s.insert("n", vec![2]);
        s.get_mut("k").unwrap().clear();
        let mut all = Vec::new();
        s.take_all(|k, v| all.push((k.to_string(), v.clone())));
        assert_eq!(all, vec![("n".to_string(), vec![2])]);
        assert_eq!(changed(&mut s), vec![]);
        for v in s.values_mut() {
            v.push(3);
        }
        assert!(s.rewrite);
        assert_eq!(changed(&mut s), vec![], "a rewrite writes all, not a list");
    }
}
