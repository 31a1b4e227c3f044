//! What both runners of this folder do with the units a consumer group
//! gives a host (key-group ranges in `super::ranges`, input partitions in
//! `super::tasks`): a [`Units`] turns the group's changes into units to
//! open, opens each as long as the group still gives it to this host,
//! works and commits the running ones, gives a lost one a last commit and
//! closes it, and opens a failed one again after [`REOPEN_AFTER`]. What a
//! unit is, and what opening, working and committing it means, is its
//! [`Unit`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::exchange::{Change, Membership};

/// How long a unit whose incarnation failed (fenced by another host, the
/// broker away) waits before it is opened again, if the group still
/// gives it to this host.
pub const REOPEN_AFTER: Duration = Duration::from_secs(1);

/// The units of one kind that a host runs: partition *u* of the group's
/// topic is unit *u*.
pub trait Unit {
    /// What a unit is called in the log.
    const WHAT: &'static str;
    /// Take unit `u` up (fence whoever had it, restore, claim).
    fn open(&mut self, u: u32) -> Result<(), String>;
    /// Do what running unit `u` has to do now; the records it handled.
    fn work(&mut self, u: u32) -> Result<usize, String>;
    /// Commit running unit `u`'s transaction; its id.
    fn commit(&mut self, u: u32) -> Result<u64, String>;
    /// Forget unit `u` (it is no longer this host's, or it failed).
    fn close(&mut self, u: u32);
}

/// What one [`Units::step`] did.
#[derive(Debug, Default)]
pub struct Step {
    /// Records handled (applied at a range, read from an input partition).
    pub records: usize,
    /// Units gained and lost in it.
    pub gained: Vec<u32>,
    pub lost: Vec<u32>,
    /// Commits made: unit, id.
    pub committed: Vec<(u32, u64)>,
    /// Units whose incarnation failed, with why; each is opened again
    /// after [`REOPEN_AFTER`] while the group gives it to this host.
    pub failed: Vec<(u32, String)>,
}

/// A running unit's commit pace.
struct Pace {
    /// Records handled since the last commit.
    records: usize,
    last_commit: Instant,
}

/// The units a host runs (see the module).
pub struct Units<U: Unit> {
    membership: Membership,
    running: BTreeMap<u32, Pace>,
    /// Units this host was given but has not opened (new, or failed):
    /// when to open them.
    retry: BTreeMap<u32, Instant>,
    /// How often a unit with handled records commits (one without, ten
    /// times as seldom).
    commit_every: Duration,
    pub unit: U,
}

impl<U: Unit> Units<U> {
    pub fn new(membership: Membership, commit_every: Duration, unit: U) -> Self {
        Units {
            membership,
            running: BTreeMap::new(),
            retry: BTreeMap::new(),
            commit_every,
            unit,
        }
    }

    /// The units running here.
    pub fn running(&self) -> Vec<u32> {
        self.running.keys().copied().collect()
    }

    /// Serve the group for up to `wait`, take up and let go of units as it
    /// says, work each running unit, and commit the ones that are due.
    pub fn step(&mut self, wait: Duration) -> Step {
        let mut step = Step::default();
        for change in self.membership.poll(wait) {
            match change {
                Change::Gained(g) => {
                    for u in g {
                        step.gained.push(u as u32);
                        self.retry.insert(u as u32, Instant::now());
                    }
                }
                Change::Lost(l) => {
                    for u in l {
                        let u = u as u32;
                        step.lost.push(u);
                        self.retry.remove(&u);
                        if self.running.contains_key(&u) {
                            // A last commit while the unit is still ours
                            // (a cooperative rebalance revokes before it
                            // assigns); a fenced one fails harmlessly.
                            if let Err(e) = self.commit(u, &mut step) {
                                step.failed.push((u, e));
                            }
                            self.close(u);
                        }
                    }
                }
            }
        }
        let owned = self.membership.owned();
        let now = Instant::now();
        let due: Vec<u32> = self
            .retry
            .iter()
            .filter(|(u, at)| **at <= now && owned.contains(&(**u as i32)))
            .map(|(u, _)| *u)
            .collect();
        for u in due {
            self.retry.remove(&u);
            match self.unit.open(u) {
                Ok(()) => {
                    // A unit taken up commits as soon as it handled
                    // something (a failover's first output waits for no
                    // pace), then on the pace.
                    let now = Instant::now();
                    self.running.insert(
                        u,
                        Pace {
                            records: 0,
                            last_commit: now,
                        },
                    );
                }
                Err(e) => {
                    step.failed.push((u, e));
                    self.retry.insert(u, Instant::now() + REOPEN_AFTER);
                }
            }
        }
        for u in self.running() {
            if let Err(e) = self.work(u, &mut step) {
                tracing::warn!(unit = u, "{}: {e}; opened again later", U::WHAT);
                step.failed.push((u, e));
                self.close(u);
                self.retry.insert(u, Instant::now() + REOPEN_AFTER);
            }
        }
        step
    }

    /// Work unit `u`, and commit it if it is due.
    fn work(&mut self, u: u32, step: &mut Step) -> Result<(), String> {
        let records = self.unit.work(u)?;
        step.records += records;
        let pace = self.running.get_mut(&u).expect("a running unit");
        pace.records += records;
        let since = pace.last_commit.elapsed();
        if pace.records > 0 && since >= self.commit_every || since >= self.commit_every * 10 {
            self.commit(u, step)?;
        }
        Ok(())
    }

    fn commit(&mut self, u: u32, step: &mut Step) -> Result<(), String> {
        let id = self.unit.commit(u)?;
        let pace = self.running.get_mut(&u).expect("a running unit");
        pace.records = 0;
        pace.last_commit = Instant::now();
        step.committed.push((u, id));
        Ok(())
    }

    fn close(&mut self, u: u32) {
        if self.running.remove(&u).is_some() {
            self.unit.close(u);
        }
    }

    /// Commit every running unit and leave the group (the others take its
    /// units over after the session timeout: `Membership`).
    pub fn leave(mut self) -> Step {
        let mut step = Step::default();
        for u in self.running() {
            if let Err(e) = self.commit(u, &mut step) {
                step.failed.push((u, e));
            }
        }
        self.membership.leave();
        step
    }
}
