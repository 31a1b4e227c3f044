//! The receiver's side of the exchange topic: which records it has read
//! belong to committed transactions, in what order to apply them, and
//! which to drop (see the module doc of `crate::exchange`).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::{Header, Kind, Progress};

/// The last record of a task the owner applied: kept with its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Applied {
    pub id: u64,
    pub n: u32,
}

/// A record the gate let through: apply it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    pub offset: i64,
    pub header: Header,
    pub payload: Vec<u8>,
}

/// An incarnation of a task, as one partition has shown it.
#[derive(Debug, Clone, Copy)]
struct Incarnation {
    /// Its first id (its claim's).
    start: u64,
    /// The task's marker when it began.
    prev: u64,
    /// The highest id of it read here.
    last: u64,
}

#[derive(Debug, Default)]
struct TaskView {
    /// The task's incarnations in the order they first showed in this
    /// partition (the order they began: each fenced the ones before it
    /// before it wrote).
    incarnations: Vec<Incarnation>,
    /// The task's committed marker, as last read.
    marker: Option<u64>,
    applied: Option<Applied>,
    /// What its last released seal said.
    progress: Option<Progress>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Apply,
    Drop,
    Wait,
}

impl TaskView {
    fn verdict(&self, h: &Header) -> Verdict {
        if self.applied.is_some_and(|a| (h.id, h.n) <= (a.id, a.n)) {
            return Verdict::Drop;
        }
        let Some(at) = self.incarnations.iter().position(|i| i.start == h.start) else {
            return Verdict::Wait; // not offered: cannot happen
        };
        // The next incarnation fenced this one, then read the marker: what
        // this one committed is at most that, the rest was aborted.
        if let Some(next) = self.incarnations.get(at + 1) {
            return if h.id <= next.prev {
                Verdict::Apply
            } else {
                Verdict::Drop
            };
        }
        // The marker is this incarnation's once the partition has shown an
        // id of it at least as high (incarnations' ids do not overlap).
        match self.marker {
            Some(m) if h.id <= m && m <= self.incarnations[at].last => Verdict::Apply,
            _ => Verdict::Wait,
        }
    }

    /// Note a record of incarnation `h.start`, a new one after the others.
    fn saw(&mut self, h: &Header) {
        match self.incarnations.iter_mut().find(|i| i.start == h.start) {
            Some(i) => i.last = i.last.max(h.id),
            None => self.incarnations.push(Incarnation {
                start: h.start,
                prev: h.prev,
                last: h.id,
            }),
        }
    }
}

/// One exchange partition's gate: records go in as they are read, in
/// partition order ([`Gate::offer`]); the tasks' committed markers as they
/// are read ([`Gate::markers`]); [`Gate::release`] gives back what is
/// known committed, each task's records in order, each once. A release
/// looks at each task's first undecided record only, so its cost does not
/// grow with what waits.
#[derive(Debug)]
pub struct Gate {
    tasks: BTreeMap<u32, TaskView>,
    /// Read and not decided yet, per task, in partition order.
    pending: BTreeMap<u32, VecDeque<Released>>,
    /// The offset after the last record offered.
    next: i64,
    /// Records dropped as of aborted transactions, and claims read.
    aborted: u64,
    claims: u64,
}

impl Gate {
    /// A gate that goes on from `applied` (what the owner's state holds,
    /// per task), reading from `from` (the exchange offset committed with
    /// that state).
    pub fn new(applied: BTreeMap<u32, Applied>, from: i64) -> Gate {
        Gate {
            tasks: applied
                .into_iter()
                .map(|(t, a)| {
                    (
                        t,
                        TaskView {
                            applied: Some(a),
                            ..TaskView::default()
                        },
                    )
                })
                .collect(),
            pending: BTreeMap::new(),
            next: from,
            aborted: 0,
            claims: 0,
        }
    }

    /// A record read at `offset`.
    pub fn offer(&mut self, offset: i64, header: Header, payload: Vec<u8>) {
        self.tasks.entry(header.task).or_default().saw(&header);
        self.next = self.next.max(offset + 1);
        if header.kind == Kind::Claim {
            // It tells the gate that an incarnation began, nothing else.
            self.claims += 1;
            return;
        }
        self.pending
            .entry(header.task)
            .or_default()
            .push_back(Released {
                offset,
                header,
                payload,
            });
    }

    /// The tasks' committed markers (each only ever moves forward).
    pub fn markers(&mut self, markers: &BTreeMap<u32, u64>) {
        for (t, m) in markers {
            let v = self.tasks.entry(*t).or_default();
            v.marker = v.marker.max(Some(*m));
        }
    }

    /// What is now known committed, in partition order: a task's records
    /// wait behind its first undecided one; records of aborted
    /// transactions, and records applied before, are dropped.
    pub fn release(&mut self) -> Vec<Released> {
        let mut out = Vec::new();
        for (t, queue) in &mut self.pending {
            let v = self.tasks.get_mut(t).expect("offered");
            while let Some(r) = queue.front() {
                match v.verdict(&r.header) {
                    Verdict::Apply => {
                        v.applied = Some(Applied {
                            id: r.header.id,
                            n: r.header.n,
                        });
                        if r.header.kind == Kind::Seal {
                            match Progress::decode(&r.payload) {
                                Ok(p) => {
                                    v.progress = Some(Progress {
                                        watermark: p
                                            .watermark
                                            .max(v.progress.map_or(i64::MIN, |q| q.watermark)),
                                        idle: p.idle,
                                    });
                                }
                                Err(e) => tracing::warn!(
                                    task = t,
                                    offset = r.offset,
                                    "exchange: {e}; its watermark is ignored"
                                ),
                            }
                        }
                        out.push(queue.pop_front().expect("a front"));
                    }
                    Verdict::Drop => {
                        if v.applied
                            .is_none_or(|a| (r.header.id, r.header.n) > (a.id, a.n))
                        {
                            self.aborted += 1;
                        }
                        queue.pop_front();
                    }
                    Verdict::Wait => break,
                }
            }
        }
        self.pending.retain(|_, q| !q.is_empty());
        // An incarnation is needed while it has records waiting, and the
        // one after it to judge them; the newest always. A task's queue is
        // in partition order, and its incarnations are in the order they
        // first showed in the partition: the front record's is the oldest
        // needed. (Looking at every waiting record here made a release cost
        // what waits: with 400 000 records behind a sender that outran its
        // owners, the benchmark below fell from ~40 000 to ~3 000 records/s.)
        for (t, v) in &mut self.tasks {
            let oldest = self
                .pending
                .get(t)
                .and_then(VecDeque::front)
                .map(|r| r.header.start);
            let first = v
                .incarnations
                .iter()
                .position(|i| Some(i.start) == oldest)
                .unwrap_or(v.incarnations.len().saturating_sub(1));
            v.incarnations.drain(..first);
        }
        out.sort_by_key(|r| r.offset);
        out
    }

    /// The exchange offset to commit with the state after the records
    /// released so far: the first undecided record's (read again after a
    /// restart), else the offset after the last one read.
    pub fn commit_offset(&self) -> i64 {
        self.pending
            .values()
            .filter_map(|q| q.front().map(|r| r.offset))
            .min()
            .unwrap_or(self.next)
    }

    /// The last record applied per task: stored with the state.
    pub fn applied(&self) -> BTreeMap<u32, Applied> {
        self.tasks
            .iter()
            .filter_map(|(t, v)| v.applied.map(|a| (*t, a)))
            .collect()
    }

    /// What task `task`'s last committed seal here said (none yet: it
    /// holds the owner back).
    pub fn progress(&self, task: u32) -> Option<Progress> {
        self.tasks.get(&task).and_then(|v| v.progress)
    }

    /// Records dropped because their transaction was aborted (tansu shows
    /// them), and incarnations' claims read.
    pub fn dropped(&self) -> (u64, u64) {
        (self.aborted, self.claims)
    }

    /// Records read and not decided yet.
    pub fn waiting(&self) -> usize {
        self.pending.values().map(VecDeque::len).sum()
    }
}

/// The watermark an owner fires by, from each of its tasks' progress: the
/// least watermark of the tasks that are not idle (of all, when every one
/// is); none while a task has sealed nothing yet.
pub fn owner_watermark(tasks: impl IntoIterator<Item = Option<Progress>>) -> Option<i64> {
    let mut busy: Option<i64> = None;
    let mut idle: Option<i64> = None;
    for p in tasks {
        let p = p?;
        let slot = if p.idle { &mut idle } else { &mut busy };
        *slot = Some(slot.map_or(p.watermark, |w| w.min(p.watermark)));
    }
    busy.or(idle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of `task`'s incarnation that began at `start` with the
    /// marker at `prev`: transaction `id`, number `n`.
    fn rec(task: u32, start: u64, prev: u64, id: u64, n: u32) -> Header {
        Header {
            task,
            start,
            prev,
            id,
            n,
            kind: Kind::Data,
        }
    }

    fn ids(rs: &[Released]) -> Vec<(u32, u64, u32)> {
        rs.iter()
            .map(|r| (r.header.task, r.header.id, r.header.n))
            .collect()
    }

    fn feed(g: &mut Gate, records: &[Header]) {
        for h in records {
            let o = g.next;
            g.offer(o, *h, Vec::new());
        }
    }

    fn marks(m: &[(u32, u64)]) -> BTreeMap<u32, u64> {
        m.iter().copied().collect()
    }

    #[test]
    fn records_wait_for_their_marker() {
        let mut g = Gate::new(BTreeMap::new(), 0);
        feed(
            &mut g,
            &[
                rec(0, 10, 0, 10, 0),
                rec(0, 10, 0, 10, 1),
                rec(0, 10, 0, 11, 0),
            ],
        );
        assert!(g.release().is_empty(), "no marker yet");
        assert_eq!(g.commit_offset(), 0);
        g.markers(&marks(&[(0, 10)]));
        assert_eq!(ids(&g.release()), vec![(0, 10, 0), (0, 10, 1)]);
        assert_eq!(g.commit_offset(), 2, "the undecided record is read again");
        g.markers(&marks(&[(0, 11)]));
        assert_eq!(ids(&g.release()), vec![(0, 11, 0)]);
        assert_eq!(g.commit_offset(), 3);
        assert_eq!(g.applied()[&0], Applied { id: 11, n: 0 });
    }

    /// A task's producer died with transaction 13 open (tansu shows its
    /// records); the next incarnation began at 50 having found 12
    /// committed.
    #[test]
    fn an_aborted_transaction_is_dropped_once_the_next_incarnation_shows() {
        let mut g = Gate::new(BTreeMap::new(), 0);
        feed(
            &mut g,
            &[
                rec(0, 10, 0, 12, 0),
                rec(0, 10, 0, 13, 0),
                rec(0, 10, 0, 13, 1),
            ],
        );
        // The marker already says 50 committed, but the partition has not
        // shown whose 50 that is: 12 and 13 wait.
        g.markers(&marks(&[(0, 50)]));
        assert!(g.release().is_empty());
        feed(&mut g, &[rec(0, 50, 12, 50, 0)]);
        assert_eq!(ids(&g.release()), vec![(0, 12, 0), (0, 50, 0)]);
        assert_eq!(g.waiting(), 0);
    }

    /// The incarnation after a crash died before its first commit too: the
    /// third found the same marker.
    #[test]
    fn two_crashes_in_a_row() {
        let mut g = Gate::new(BTreeMap::new(), 0);
        g.markers(&marks(&[(0, 12)]));
        feed(
            &mut g,
            &[
                rec(0, 10, 0, 12, 0),
                rec(0, 10, 0, 13, 0),
                rec(0, 50, 12, 50, 0),
                rec(0, 50, 12, 50, 1),
                rec(0, 90, 12, 90, 0),
            ],
        );
        assert_eq!(ids(&g.release()), vec![(0, 12, 0)]);
        assert_eq!(
            g.waiting(),
            1,
            "the third incarnation's 90 waits for its marker"
        );
        g.markers(&marks(&[(0, 90)]));
        assert_eq!(ids(&g.release()), vec![(0, 90, 0)]);
    }

    /// Incarnations are ordered by where they show in the partition, not
    /// by their starts: a host's clock ahead gave an incarnation whose
    /// claim aborted a start above the next one's.
    #[test]
    fn incarnations_follow_the_partition_not_the_clock() {
        let claim = |start, prev| Header {
            kind: Kind::Claim,
            ..rec(0, start, prev, start, 0)
        };
        let mut g = Gate::new(BTreeMap::new(), 0);
        feed(
            &mut g,
            &[
                claim(100, 0),
                rec(0, 100, 0, 105, 0),
                rec(0, 100, 0, 106, 0), // open when its producer died
                claim(900, 105),        // clock ahead; its claim aborted
                claim(107, 105),
                rec(0, 107, 105, 108, 0),
            ],
        );
        g.markers(&marks(&[(0, 108)]));
        assert_eq!(ids(&g.release()), vec![(0, 105, 0), (0, 108, 0)]);
        assert_eq!(g.dropped(), (1, 3));
        assert_eq!(g.waiting(), 0);
    }

    /// A task whose input partition is gone, its producer dead with
    /// transaction 13 open: until something follows, 13 waits and holds the
    /// committed offset at its own. `TaskProducer::close` commits one
    /// last claim; then nothing waits and the offset passes everything.
    #[test]
    fn a_task_closed_by_a_last_claim_holds_nothing_back() {
        let mut g = Gate::new(BTreeMap::new(), 0);
        feed(
            &mut g,
            &[
                rec(0, 10, 0, 12, 0),
                rec(0, 10, 0, 13, 0),
                rec(1, 20, 0, 20, 0),
            ],
        );
        g.markers(&marks(&[(0, 12), (1, 20)]));
        assert_eq!(ids(&g.release()), vec![(0, 12, 0), (1, 20, 0)]);
        assert_eq!(g.commit_offset(), 1, "13 waits: open, or aborted?");
        for _ in 0..3 {
            assert!(g.release().is_empty());
            assert_eq!(
                g.commit_offset(),
                1,
                "nothing more shows: 13 waits for ever"
            );
        }
        let claim = Header {
            kind: Kind::Claim,
            ..rec(0, 50, 12, 50, 0)
        };
        feed(&mut g, &[claim]);
        g.markers(&marks(&[(0, 50), (1, 20)]));
        assert!(g.release().is_empty(), "a claim carries nothing");
        assert_eq!(g.dropped(), (1, 1), "13 aborted; one claim read");
        assert_eq!(g.waiting(), 0);
        assert_eq!(
            g.commit_offset(),
            4,
            "past the claim: nothing is read again"
        );
    }

    /// A marker of this incarnation that the partition has not shown yet
    /// (its seal not read): the record waits rather than guess.
    #[test]
    fn a_marker_is_trusted_once_its_incarnation_showed_it() {
        let mut g = Gate::new(BTreeMap::new(), 0);
        feed(&mut g, &[rec(0, 10, 0, 10, 0)]);
        g.markers(&marks(&[(0, 11)]));
        assert!(g.release().is_empty());
        feed(&mut g, &[rec(0, 10, 0, 11, 0)]);
        assert_eq!(ids(&g.release()), vec![(0, 10, 0), (0, 11, 0)]);
    }

    fn seal(task: u32, start: u64, prev: u64, id: u64, n: u32) -> Header {
        Header {
            kind: Kind::Seal,
            ..rec(task, start, prev, id, n)
        }
    }

    fn progress(watermark: i64, idle: bool) -> Vec<u8> {
        Progress { watermark, idle }.encode().to_vec()
    }

    /// A seal's watermark counts once its transaction committed; one of an
    /// aborted transaction never does.
    #[test]
    fn watermarks_come_from_committed_seals_only() {
        let mut g = Gate::new(BTreeMap::new(), 0);
        g.offer(0, seal(0, 10, 0, 10, 0), progress(1_000, false));
        g.offer(1, seal(0, 10, 0, 11, 0), progress(2_000, false));
        g.markers(&marks(&[(0, 10)]));
        g.release();
        assert_eq!(g.progress(0).map(|p| p.watermark), Some(1_000));
        // 11 was aborted: the next incarnation found 10 committed.
        g.offer(2, seal(0, 50, 10, 50, 0), progress(1_500, true));
        g.markers(&marks(&[(0, 50)]));
        g.release();
        assert_eq!(
            g.progress(0),
            Some(Progress {
                watermark: 1_500,
                idle: true
            })
        );
        assert_eq!(g.progress(1), None);
    }

    #[test]
    fn an_owner_fires_by_its_slowest_busy_task() {
        let p = |watermark, idle| Some(Progress { watermark, idle });
        assert_eq!(
            owner_watermark([p(5, false), p(3, false), p(1, true)]),
            Some(3)
        );
        assert_eq!(owner_watermark([p(5, true), p(3, true)]), Some(3));
        assert_eq!(owner_watermark([p(5, false), None]), None);
        assert_eq!(owner_watermark(Vec::new()), None);
    }

    /// One task waiting does not hold another's records back, and a
    /// restart from the committed offset applies nothing twice.
    #[test]
    fn tasks_are_independent_and_a_restart_applies_nothing_twice() {
        let mut g = Gate::new(BTreeMap::new(), 0);
        let records = [
            rec(0, 10, 0, 10, 0),
            rec(1, 20, 0, 20, 0),
            rec(0, 10, 0, 11, 0),
            rec(1, 20, 0, 21, 0),
            rec(1, 20, 0, 21, 1),
        ];
        feed(&mut g, &records);
        g.markers(&marks(&[(0, 10), (1, 21)]));
        let first = g.release();
        assert_eq!(
            ids(&first),
            vec![(0, 10, 0), (1, 20, 0), (1, 21, 0), (1, 21, 1)]
        );
        // The owner commits here and restarts.
        let (applied, from) = (g.applied(), g.commit_offset());
        assert_eq!(from, 2);
        let mut again = Gate::new(applied, from);
        for (o, h) in records.iter().enumerate().skip(from as usize) {
            again.offer(o as i64, *h, Vec::new());
        }
        again.markers(&marks(&[(0, 11), (1, 21)]));
        assert_eq!(ids(&again.release()), vec![(0, 11, 0)]);
    }
}
