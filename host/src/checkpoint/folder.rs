//! The checkpoint thread of the Kafka path: it folds the logged and
//! committed commits into the per-key state, apart from the committer, so
//! transactions keep committing while a fold runs.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{Commit, Store, fault_phase};
use crate::state::{self, Fold, Meta, StateError, StateStore};

/// The hand-off between the committer and the checkpoint thread.
#[derive(Default)]
pub(super) struct Folds {
    state: Mutex<FoldState>,
    changed: Condvar,
}

#[derive(Default)]
pub(super) struct FoldState {
    /// The highest commit id to fold next (only committed ids get here).
    pub pending: Option<u64>,
    /// The commits logged and committed since the last fold, in order:
    /// what the next fold reads instead of decoding them from the log.
    pub logged: Vec<Commit>,
    /// The id the last fold reached (at start: the commit the state is at).
    pub folded: u64,
    pub busy: bool,
    pub stop: bool,
}

impl Folds {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, FoldState> {
        self.state.lock().expect("fold lock")
    }

    /// Keep a commit, logged and committed to Kafka, for the next fold.
    pub(super) fn logged(&self, c: Commit) {
        self.lock().logged.push(c);
    }

    /// Ask for a fold up to `id` (a newer request replaces an older one).
    pub(super) fn request(&self, id: u64) {
        let mut s = self.lock();
        s.pending = Some(s.pending.map_or(id, |p| p.max(id)));
        self.changed.notify_all();
    }

    /// Wait until no fold is pending or running (or the thread stopped).
    pub(super) fn idle(&self) {
        let mut s = self.lock();
        while (s.pending.is_some() || s.busy) && !s.stop {
            s = self.changed.wait(s).expect("fold lock");
        }
    }

    pub(super) fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }

    /// The checkpoint thread: fold what is requested, one fold at a time.
    /// `pause`: the kill tests' fault injection (see `fault_phase`).
    pub(super) fn run(&self, store: &Store, fail: &Mutex<Option<String>>, pause: Option<Duration>) {
        loop {
            let (id, commits, after) = {
                let mut s = self.lock();
                loop {
                    if s.stop {
                        return;
                    }
                    if let Some(id) = s.pending.take() {
                        s.busy = true;
                        let n = s.logged.partition_point(|c| c.meta.id <= id);
                        let commits: Vec<Commit> = s.logged.drain(..n).collect();
                        break (id, commits, s.folded);
                    }
                    s = self.changed.wait(s).expect("fold lock");
                }
            };
            let started = Instant::now();
            let r = fold(store, id, commits, after).and_then(|f| {
                fault_phase(pause, "folded", id);
                let flushing = Instant::now();
                store.flush()?;
                Ok((f, flushing.elapsed()))
            });
            let failed = r.is_err();
            match r {
                Ok((f, flush)) => tracing::debug!(
                    id,
                    commits = f.commits,
                    changes = f.changes,
                    keys = f.keys,
                    read_ms = f.read.as_millis() as u64,
                    load_ms = f.load.as_millis() as u64,
                    write_ms = f.write.as_millis() as u64,
                    flush_ms = flush.as_millis() as u64,
                    took_ms = started.elapsed().as_millis() as u64,
                    "checkpoint: logged commits folded"
                ),
                Err(e) => {
                    // The logged commits stay; a restart folds them.
                    super::committer::record_failure(fail, format!("checkpoint fold: {e}"));
                }
            }
            let mut s = self.lock();
            s.busy = false;
            s.stop |= failed;
            s.folded = id;
            self.changed.notify_all();
        }
    }
}

/// Fold the logged commits up to `id`: from memory when `commits` are all
/// of them — every id after `after` (the last fold's, or the commit the run
/// started at) up to `id`, without a gap — else, which would be a bug, from
/// the commit log, which is always right.
fn fold<M: Meta>(
    store: &StateStore<M>,
    id: u64,
    commits: Vec<state::Commit<M>>,
    after: u64,
) -> Result<Fold, StateError> {
    if commits.is_empty() && id <= after {
        return Ok(Fold::default());
    }
    let first = commits.first().map(|c| c.meta.id());
    let whole = commits.last().is_some_and(|c| c.meta.id() == id)
        && first == after.checked_add(1)
        && commits
            .windows(2)
            .all(|w| w[0].meta.id().checked_add(1) == Some(w[1].meta.id()));
    if !whole {
        tracing::warn!(
            id,
            after,
            first,
            kept = commits.len(),
            "checkpoint: the commits kept in memory are not all those logged; folding from the commit log"
        );
        return store.compact(id);
    }
    let newest_first: Vec<&state::Commit<M>> = commits.iter().rev().collect();
    store.fold(&newest_first, id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StoreConfig;
    use crate::state::store::tests::{TestMeta, change, keys, meta};

    /// Commits of plugin `a` with the ids in `ids`, each setting `k` to
    /// `<id><tag>` (commit 1 also sets `j`).
    fn commits(ids: std::ops::RangeInclusive<u64>, tag: &str) -> Vec<state::Commit<TestMeta>> {
        ids.map(|id| {
            let v = format!("{id}{tag}");
            let mut kv = vec![("k", Some(v.as_str()))];
            if id == 1 {
                kv.push(("j", Some("j")));
            }
            state::Commit {
                meta: meta(id, &["a"]),
                plugins: vec![change("a", false, &kv)],
            }
        })
        .collect()
    }

    #[test]
    fn a_fold_takes_the_kept_commits_only_when_they_are_all_the_logged_ones() {
        let fresh = || {
            let dir = tempfile::tempdir().unwrap();
            let s = StateStore::<TestMeta>::open(dir.path(), &StoreConfig::default()).unwrap();
            for c in commits(1..=3, "") {
                s.log_commit(&c).unwrap();
            }
            (dir, s)
        };
        // Kept commits 1..=3 after commit 0: folded from memory (the kept
        // copies are marked `m` to tell them from the logged ones).
        let (_d, s) = fresh();
        let f = fold(&s, 3, commits(1..=3, "m"), 0).unwrap();
        assert_eq!((f.commits, f.keys), (3, 2));
        assert_eq!(
            keys(&s, "a"),
            vec![("j".into(), "j".into()), ("k".into(), "3m".into())]
        );
        assert!(s.delta_ids().unwrap().is_empty(), "the log is folded");
        assert_eq!(s.last().unwrap().unwrap().id, 3);
        assert_eq!(fold(&s, 3, vec![], 3).unwrap().commits, 0, "nothing new");

        // A gap (commit 1 is not kept), or a last commit short of the id:
        // the log is the truth.
        for (kept, id) in [(commits(2..=3, "m"), 3), (commits(1..=2, "m"), 3)] {
            let (_d, s) = fresh();
            assert_eq!(fold(&s, id, kept, 0).unwrap().commits, 3);
            assert_eq!(
                keys(&s, "a"),
                vec![("j".into(), "j".into()), ("k".into(), "3".into())]
            );
            assert!(s.delta_ids().unwrap().is_empty());
        }
    }
}
