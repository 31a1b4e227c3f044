//! The receiver's side of the exchange topic: which records it has read
//! belong to committed transactions, in what order to apply them, and
//! which to drop (see the module doc of `crate::exchange`).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::Header;

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
    /// The task's marker when it began.
    prev: u64,
    /// The highest id of it read here.
    last: u64,
}

#[derive(Debug, Default)]
struct TaskView {
    /// The task's incarnations seen in this partition, by their first id.
    incarnations: BTreeMap<u64, Incarnation>,
    /// The task's committed marker, as last read.
    marker: Option<u64>,
    applied: Option<Applied>,
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
        // A later incarnation fenced this one, then read the marker: what
        // this one committed is at most that, the rest was aborted.
        if let Some((_, later)) = self.incarnations.range(h.start + 1..).next() {
            return if h.id <= later.prev {
                Verdict::Apply
            } else {
                Verdict::Drop
            };
        }
        // The marker is this incarnation's once the partition has shown an
        // id of it at least as high (incarnations' ids do not overlap).
        let last = self.incarnations.get(&h.start).map_or(0, |i| i.last);
        match self.marker {
            Some(m) if h.id <= m && m <= last => Verdict::Apply,
            _ => Verdict::Wait,
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
        }
    }

    /// A record read at `offset`.
    pub fn offer(&mut self, offset: i64, header: Header, payload: Vec<u8>) {
        let inc = self
            .tasks
            .entry(header.task)
            .or_default()
            .incarnations
            .entry(header.start)
            .or_insert(Incarnation {
                prev: header.prev,
                last: header.id,
            });
        inc.last = inc.last.max(header.id);
        self.next = self.next.max(offset + 1);
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
                        out.push(queue.pop_front().expect("a front"));
                    }
                    Verdict::Drop => {
                        queue.pop_front();
                    }
                    Verdict::Wait => break,
                }
            }
        }
        self.pending.retain(|_, q| !q.is_empty());
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

    /// Records read and not decided yet.
    pub fn waiting(&self) -> usize {
        self.pending.values().map(VecDeque::len).sum()
    }
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
            seal: false,
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
