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
//! stays in the table, marked, until the commit has written its deletion; a
//! vacant value reads like an absent key.

use std::hash::BuildHasher;

use rustc_hash::FxBuildHasher;

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

/// How many keys ahead of their use a loop over many keys has each key's
/// value fetched ([`KeyedState::prefetch_with`]). With hundreds of
/// thousands of keys every step of a lookup misses the cache: the probe's
/// slot, the entry with the key and the value, the value's heap bytes.
/// Each step needs the one before, so a loop fetches them in three passes
/// a [`LOOK_AHEAD`] apart — a key's slot three look-aheads before its use,
/// its entry two before, its value's heap one before — and the misses of
/// different keys overlap instead of each waiting for its own.
pub const LOOK_AHEAD: usize = 8;

#[derive(Debug, Clone, Default)]
struct Entry<V> {
    key: Key,
    value: V,
    /// Listed in `changed`, to be written by the next commit.
    changed: bool,
    /// False: on the free list.
    live: bool,
}

/// The hashes of a loop's keys, for the `_hashed` lookups and
/// [`KeyedState::prefetch_hashed`].
pub fn hash_keys<K: AsRef<str>>(keys: &[K]) -> Vec<u32> {
    keys.iter().map(|k| hash32(k.as_ref())).collect()
}

/// One key's hash, for the `_hashed` lookups.
pub fn hash_key(key: &str) -> u32 {
    hash32(key)
}

/// A key's 32-bit hash: its low bits pick the home slot, all of it is kept
/// in the slot to tell keys apart without reading their entries.
fn hash32(key: &str) -> u32 {
    let h = FxBuildHasher.hash_one(key);
    (h ^ (h >> 32)) as u32
}

/// Ask the CPU to fetch the cache lines of `*v` (a hint): its first and
/// its last byte's, as a value may straddle two.
#[inline]
fn prefetch_value<T>(v: &T) {
    let first = (v as *const T).cast::<u8>();
    super::prefetch_ptr(first);
    super::prefetch_ptr(first.wrapping_add(std::mem::size_of::<T>().saturating_sub(1)));
}

/// Per-key values; every mutable access marks its key changed.
///
/// A hash table of its own rather than a `HashMap`, so that a loop over
/// many keys can fetch each step of a lookup ahead of use (see
/// [`LOOK_AHEAD`]); a `HashMap` lookup can only be done, not fetched, and
/// the look-ahead lookups this type used to make stalled on their own
/// misses (a quarter of the processing thread's time on 9 M events). The
/// keys and values live in a slab of entries (freed entries are reused);
/// the table is open addressing with linear probing over 8-byte slots,
/// each the key's [`hash32`] and its entry's index, 8 to a cache line.
/// The changed list holds entry indices, so a commit finds its keys
/// without a lookup.
#[derive(Debug, Clone)]
pub struct KeyedState<V> {
    /// 0: empty; else the key's hash in the high half and its entry's
    /// index + 1 in the low half. A power of two long, at most 3/4 full.
    slots: Vec<u64>,
    entries: Vec<Entry<V>>,
    /// Indices of entries not in use.
    free: Vec<u32>,
    /// Entries in use (keys, vacant ones included).
    live: usize,
    /// The marked entries, each once: what the next commit writes.
    changed: Vec<u32>,
    /// Every key changed (new, reset or migrated state): the next commit
    /// rewrites the plugin's whole prefix.
    pub rewrite: bool,
}

impl<V> Default for KeyedState<V> {
    fn default() -> Self {
        KeyedState {
            slots: Vec::new(),
            entries: Vec::new(),
            free: Vec::new(),
            live: 0,
            changed: Vec::new(),
            rewrite: false,
        }
    }
}

impl<V: Vacant + Default> KeyedState<V> {
    /// The entry index of `key` (hash `h`).
    fn find_hashed(&self, key: &str, h: u32) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        loop {
            let s = self.slots[i];
            if s == 0 {
                return None;
            }
            if (s >> 32) as u32 == h {
                let e = (s as u32 - 1) as usize;
                if self.entries[e].key == key {
                    return Some(e);
                }
            }
            i = (i + 1) & mask;
        }
    }

    fn find(&self, key: &str) -> Option<usize> {
        self.find_hashed(key, hash32(key))
    }

    /// Mark entry `e` changed, listing it the first time.
    fn mark(&mut self, e: usize) {
        let entry = &mut self.entries[e];
        if !entry.changed {
            entry.changed = true;
            self.changed.push(e as u32);
        }
    }

    /// Double the table (16 slots at first); slots move by their hash.
    fn grow(&mut self) {
        let n = (self.slots.len() * 2).max(16);
        let mask = n - 1;
        let mut slots = vec![0u64; n];
        for &s in self.slots.iter().filter(|&&s| s != 0) {
            let mut i = (s >> 32) as usize & mask;
            while slots[i] != 0 {
                i = (i + 1) & mask;
            }
            slots[i] = s;
        }
        self.slots = slots;
    }

    /// Add `key` (hash `h`, not present); its entry index.
    fn add(&mut self, key: &str, h: u32, value: V, changed: bool) -> usize {
        if (self.live + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let entry = Entry {
            key: key.into(),
            value,
            changed,
            live: true,
        };
        let e = match self.free.pop() {
            Some(e) => {
                self.entries[e as usize] = entry;
                e as usize
            }
            None => {
                self.entries.push(entry);
                self.entries.len() - 1
            }
        };
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        while self.slots[i] != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = (u64::from(h) << 32) | (e as u64 + 1);
        self.live += 1;
        if changed {
            self.changed.push(e as u32);
        }
        e
    }

    /// Take entry `e`'s key out of the table and free the entry. The slots
    /// after it shift back, so no probe ever crosses a deleted slot.
    fn remove(&mut self, e: usize) {
        let h = hash32(&self.entries[e].key);
        let mask = self.slots.len() - 1;
        let want = (u64::from(h) << 32) | (e as u64 + 1);
        let mut hole = h as usize & mask;
        loop {
            let s = self.slots[hole];
            if s == want {
                break;
            }
            if s == 0 {
                debug_assert!(false, "a live entry has its slot");
                return;
            }
            hole = (hole + 1) & mask;
        }
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let s = self.slots[j];
            if s == 0 {
                break;
            }
            // The key in `j` may fill the hole unless its home slot lies
            // after the hole (cyclically, up to `j`).
            let home = (s >> 32) as usize & mask;
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.slots[hole] = s;
                hole = j;
            }
        }
        self.slots[hole] = 0;
        self.entries[e] = Entry::default();
        self.free.push(e as u32);
        self.live -= 1;
    }

    /// A key's value (maybe vacant), without marking it.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.find(key).map(|e| &self.entries[e].value)
    }

    /// In a loop over keys at position `i`, where `key_at(j)` is the key at
    /// position `j` (`None` past the end): fetch the slot of the key three
    /// [`LOOK_AHEAD`]s on, the entry of the key two on and the value of the
    /// key one on.
    pub fn prefetch_with<'k>(&self, i: usize, key_at: impl Fn(usize) -> Option<&'k str>) {
        self.prefetch_passes(i, |j| key_at(j).map(hash32), &key_at);
    }

    /// [`prefetch_with`](Self::prefetch_with) with the keys' hashes from
    /// [`hash_keys`]: a loop that also looks its keys up with
    /// [`get_hashed`](Self::get_hashed) hashes each key once, not four
    /// times.
    pub fn prefetch_hashed<'k>(
        &self,
        i: usize,
        hashes: &[u32],
        key_at: impl Fn(usize) -> Option<&'k str>,
    ) {
        self.prefetch_passes(i, |j| hashes.get(j).copied(), key_at);
    }

    /// [`prefetch_hashed`](Self::prefetch_hashed) in a loop over `keys`,
    /// whose hashes are `hashes` (from [`hash_keys`]).
    pub fn prefetch_ahead<K: AsRef<str>>(&self, keys: &[K], hashes: &[u32], i: usize) {
        self.prefetch_hashed(i, hashes, |j| keys.get(j).map(AsRef::as_ref));
    }

    fn prefetch_passes<'k>(
        &self,
        i: usize,
        hash_at: impl Fn(usize) -> Option<u32>,
        key_at: impl Fn(usize) -> Option<&'k str>,
    ) {
        if self.slots.is_empty() {
            return;
        }
        let mask = self.slots.len() - 1;
        if let Some(h) = hash_at(i + 3 * LOOK_AHEAD) {
            prefetch_value(&self.slots[h as usize & mask]);
        }
        if let Some(h) = hash_at(i + 2 * LOOK_AHEAD) {
            // Every entry whose slot holds the key's hash, without reading
            // an entry: that would wait for it.
            let mut j = h as usize & mask;
            loop {
                let s = self.slots[j];
                if s == 0 {
                    break;
                }
                if (s >> 32) as u32 == h {
                    prefetch_value(&self.entries[(s as u32 - 1) as usize]);
                }
                j = (j + 1) & mask;
            }
        }
        let j = i + LOOK_AHEAD;
        if let Some(e) = key_at(j)
            .zip(hash_at(j))
            .and_then(|(k, h)| self.find_hashed(k, h))
        {
            self.entries[e].value.prefetch();
        }
    }

    /// [`get`](Self::get) of a key whose hash is `h` (from [`hash_keys`]).
    pub fn get_hashed(&self, key: &str, h: u32) -> Option<&V> {
        debug_assert_eq!(h, hash32(key));
        self.find_hashed(key, h).map(|e| &self.entries[e].value)
    }

    /// [`modify`](Self::modify) of a key whose hash is `h`.
    pub fn modify_hashed(&mut self, key: &str, h: u32, f: impl FnOnce(&mut V) -> bool) -> bool {
        debug_assert_eq!(h, hash32(key));
        let Some(e) = self.find_hashed(key, h) else {
            return false;
        };
        let changed = f(&mut self.entries[e].value);
        if changed {
            self.mark(e);
        }
        changed
    }

    /// [`get_mut`](Self::get_mut) of a key whose hash is `h`.
    pub fn get_mut_hashed(&mut self, key: &str, h: u32) -> Option<&mut V> {
        debug_assert_eq!(h, hash32(key));
        let e = self.find_hashed(key, h)?;
        self.mark(e);
        Some(&mut self.entries[e].value)
    }

    /// A key's value for writing: the key is marked changed.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.get_mut_hashed(key, hash32(key))
    }

    /// Let `f` change a key's value; the key is marked changed only if `f`
    /// says it changed it. False for an absent key.
    pub fn modify(&mut self, key: &str, f: impl FnOnce(&mut V) -> bool) -> bool {
        self.modify_hashed(key, hash32(key), f)
    }

    /// A key's value for writing, created empty if absent; marked changed.
    pub fn get_or_default(&mut self, key: &str) -> &mut V {
        let h = hash32(key);
        let e = match self.find_hashed(key, h) {
            Some(e) => {
                self.mark(e);
                e
            }
            None => self.add(key, h, V::default(), true),
        };
        &mut self.entries[e].value
    }

    /// Set a key's value; marked changed.
    pub fn insert(&mut self, key: &str, value: V) {
        *self.get_or_default(key) = value;
    }

    /// Set a key's value as the store already has it (a restore): unmarked.
    pub fn insert_stored(&mut self, key: &str, value: V) {
        let h = hash32(key);
        match self.find_hashed(key, h) {
            Some(e) => {
                self.entries[e].value = value;
                self.entries[e].changed = false;
            }
            None => {
                self.add(key, h, value, false);
            }
        }
    }

    fn live_entries(&self) -> impl Iterator<Item = &Entry<V>> {
        self.entries.iter().filter(|e| e.live)
    }

    /// Every value, vacant ones included.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.live_entries().map(|e| &e.value)
    }

    /// Every value for rewriting in place: the next commit rewrites the
    /// whole prefix.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.rewrite = true;
        self.entries
            .iter_mut()
            .filter(|e| e.live)
            .map(|e| &mut e.value)
    }

    /// Number of keys, vacant ones included.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Hand every key marked since the last call to `f` with its value
    /// (`None`: vacant, the key is deleted), and unmark it. Vacant keys
    /// leave the table here. The list keeps its allocation.
    pub fn take_changed(&mut self, mut f: impl FnMut(&Key, Option<&V>)) {
        let mut changed = std::mem::take(&mut self.changed);
        for (n, &e) in changed.iter().enumerate() {
            if let Some(&ahead) = changed.get(n + 2 * LOOK_AHEAD) {
                prefetch_value(&self.entries[ahead as usize]);
            }
            if let Some(&ahead) = changed.get(n + LOOK_AHEAD) {
                self.entries[ahead as usize].value.prefetch();
            }
            let e = e as usize;
            let entry = &mut self.entries[e];
            debug_assert!(entry.live, "a marked entry is in use");
            entry.changed = false;
            if entry.value.is_vacant() {
                f(&entry.key, None);
                self.remove(e);
            } else {
                f(&entry.key, Some(&entry.value));
            }
        }
        changed.clear();
        self.changed = changed;
    }

    /// Hand every key with a value to `f` (a full rewrite follows) and
    /// unmark all: vacant keys leave the table.
    pub fn take_all(&mut self, mut f: impl FnMut(&Key, &V)) {
        self.changed.clear();
        for e in 0..self.entries.len() {
            let entry = &mut self.entries[e];
            if entry.live {
                entry.changed = false;
                if entry.value.is_vacant() {
                    self.remove(e);
                }
            }
        }
        for e in self.live_entries() {
            f(&e.key, &e.value);
        }
    }

    /// Every key with its value, vacant ones included.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &V)> {
        self.live_entries().map(|e| (&e.key, &e.value))
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

    /// The table against a `HashMap` through growth, key churn (keys
    /// emptied and deleted at commits, their entries and slots reused) and
    /// look-ahead loops: the same keys, values and changed lists.
    #[test]
    fn the_table_agrees_with_a_hash_map_through_churn() {
        use std::collections::HashMap;
        let mut s = KeyedState::<Vec<u8>>::default();
        let mut model: HashMap<String, Vec<u8>> = HashMap::new();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for round in 0..200 {
            // A key space that moves on, as sessions do.
            let base = round * 40;
            let mut marked = std::collections::BTreeSet::new();
            for _ in 0..300 {
                let key = format!("s-{}", base + next(400));
                match next(4) {
                    0 => {
                        s.get_or_default(&key).push(round as u8);
                        model.entry(key.clone()).or_default().push(round as u8);
                        marked.insert(key);
                    }
                    1 => {
                        if let Some(v) = s.get_mut(&key) {
                            v.clear();
                            model.insert(key.clone(), Vec::new());
                            marked.insert(key);
                        }
                    }
                    2 => assert_eq!(s.get(&key), model.get(&key), "{key}"),
                    3 if next(2) == 0 => {
                        let keys: Vec<String> =
                            (0..40).map(|j| format!("s-{}", base + j * 7)).collect();
                        for (i, k) in keys.iter().enumerate() {
                            s.prefetch_with(i, |j| keys.get(j).map(String::as_str));
                            assert_eq!(s.get(k), model.get(k), "{k}");
                        }
                    }
                    _ => {
                        // The hashed look-ahead and lookups, as a flush
                        // does: read every key, then write some.
                        let keys: Vec<String> =
                            (0..40).map(|j| format!("s-{}", base + j * 5)).collect();
                        let hashes = hash_keys(&keys);
                        for (i, k) in keys.iter().enumerate() {
                            s.prefetch_ahead(&keys, &hashes, i);
                            assert_eq!(s.get_hashed(k, hashes[i]), model.get(k), "{k}");
                        }
                        for (i, k) in keys.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
                            let changed = s.modify_hashed(k, hashes[i], |v| {
                                v.push(1);
                                true
                            });
                            assert_eq!(changed, model.contains_key(k), "{k}");
                            if let Some(v) = model.get_mut(k) {
                                v.push(1);
                                marked.insert(k.clone());
                            }
                            if let Some(v) = s.get_mut_hashed(k, hashes[i]) {
                                v.push(2);
                                model.get_mut(k).expect("present").push(2);
                            }
                        }
                    }
                }
            }
            // Keys the key space left behind end, as sessions do.
            let old: Vec<String> = model
                .keys()
                .filter(|k| k[2..].parse::<u64>().unwrap() < base)
                .cloned()
                .collect();
            for k in old {
                s.get_mut(&k).expect("present").clear();
                model.insert(k.clone(), Vec::new());
                marked.insert(k);
            }
            let mut got = Vec::new();
            s.take_changed(|k, v| got.push((k.to_string(), v.cloned())));
            got.sort();
            let want: Vec<(String, Option<Vec<u8>>)> = marked
                .iter()
                .map(|k| {
                    let v = model[k].clone();
                    (k.clone(), (!v.is_empty()).then_some(v))
                })
                .collect();
            assert_eq!(got, want, "round {round}");
            model.retain(|_, v| !v.is_empty());
            assert_eq!(s.len(), model.len(), "round {round}");
            let mut all: Vec<(String, Vec<u8>)> =
                s.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
            all.sort();
            let mut want: Vec<(String, Vec<u8>)> =
                model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            want.sort();
            assert_eq!(all, want, "round {round}");
        }
        assert!(s.entries.len() < 2 * 400, "freed entries are reused");
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
