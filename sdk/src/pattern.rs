//! Small event-time state machines for detectors.
//!
//! Most alert rules are one of three shapes: "A then B within T" ([`Sequence`]),
//! "a condition holds for D" ([`Sustained`]) and "N occurrences within T"
//! ([`CountWithin`]). Each is a tiny serde value meant to live in a detector's
//! state, takes event times in ms, and equals its `Default` when idle, so the
//! host deletes the state of keys with nothing pending. They never read a
//! clock: time only moves with the events, metrics and timers they are given,
//! which may arrive moderately out of order.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// "A then B within T".
///
/// [`start`](Sequence::start) on A, [`complete`](Sequence::complete) on B, and
/// [`expired`](Sequence::expired) from a timer at `A + T` to catch the As that
/// no B followed. A B at `t` completes an A at `a` when `a <= t < a + T`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sequence {
    started: Option<i64>,
}

impl Sequence {
    /// An A happened at `t`. If a sequence is already started the earliest A
    /// is kept (a late, earlier A moves the start back).
    pub fn start(&mut self, t: i64) {
        self.started = Some(self.started.map_or(t, |a| a.min(t)));
    }

    /// A B happened at `t`: returns true (and resets) if it completes the
    /// started sequence, i.e. `a <= t < a + within_ms`. A B before A or after
    /// the deadline leaves the sequence as it is.
    pub fn complete(&mut self, t: i64, within_ms: i64) -> bool {
        match self.started {
            Some(a) if a <= t && t - a < within_ms => {
                self.started = None;
                true
            }
            _ => false,
        }
    }

    /// The start time of a sequence that no B completed by `now`
    /// (`now >= a + within_ms`). Does not reset: call [`reset`](Self::reset).
    pub fn expired(&self, now: i64, within_ms: i64) -> Option<i64> {
        self.started.filter(|&a| now >= a.saturating_add(within_ms))
    }

    /// When the pending A happened, if any.
    pub fn started(&self) -> Option<i64> {
        self.started
    }

    /// Forget the pending A.
    pub fn reset(&mut self) {
        self.started = None;
    }
}

/// "A condition holds for at least D".
///
/// Feed it successive observations (metric windows) covering `[start, end)`.
/// It remembers since when the condition holds and fires once when
/// `end - since >= D`; an observation where it does not hold resets it, so it
/// fires again after the next recovery and breach.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sustained {
    since: Option<i64>,
    /// The latest observation end while it holds.
    until: Option<i64>,
    fired: bool,
}

impl Sustained {
    /// Record one observation; returns `Some(since)` exactly once per
    /// breach, when it has held for `duration_ms` (from the earliest start to
    /// the latest end of the observations that held, so a late observation
    /// counts wherever it falls).
    pub fn update(&mut self, holds: bool, start: i64, end: i64, duration_ms: i64) -> Option<i64> {
        if !holds {
            *self = Sustained::default();
            return None;
        }
        let since = self.since.map_or(start, |s| s.min(start));
        let until = self.until.map_or(end, |u| u.max(end));
        self.since = Some(since);
        self.until = Some(until);
        if !self.fired && until.saturating_sub(since) >= duration_ms {
            self.fired = true;
            return Some(since);
        }
        None
    }

    /// Since when the condition holds, if it does.
    pub fn since(&self) -> Option<i64> {
        self.since
    }

    /// Whether it fired for the current breach.
    pub fn firing(&self) -> bool {
        self.fired
    }
}

/// "N occurrences within T".
///
/// Keeps the latest occurrence times, sorted. [`push`](CountWithin::push)
/// returns true once per burst: when the occurrences within `T` of the latest
/// one reach `N`; it re-arms when they drop below `N`. Only the latest `N`
/// times are kept (that decides the rule), so a flood costs `N` entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountWithin {
    times: VecDeque<i64>,
    /// The `n` of the burst that fired, until it re-arms.
    fired: Option<u32>,
}

impl CountWithin {
    /// An occurrence at `t` (inserted in order even if late). Drops times
    /// before `latest - within_ms`; returns true when this makes the count
    /// reach `n` and the rule had not fired for the current burst.
    pub fn push(&mut self, t: i64, within_ms: i64, n: u32) -> bool {
        let i = self.times.partition_point(|&x| x <= t);
        self.times.insert(i, t);
        let latest = *self.times.back().expect("just inserted");
        self.evict_before(latest.saturating_sub(within_ms));
        while self.times.len() > n.max(1) as usize {
            self.times.pop_front();
        }
        if self.times.len() >= n as usize {
            if self.fired.is_none() {
                self.fired = Some(n);
                return true;
            }
        } else {
            self.fired = None;
        }
        false
    }

    /// Drop the times before `now - within_ms` (from a timer); re-arms if the
    /// count fell below the `n` that fired.
    pub fn evict(&mut self, now: i64, within_ms: i64) {
        self.evict_before(now.saturating_sub(within_ms));
    }

    fn evict_before(&mut self, cutoff: i64) {
        while self.times.front().is_some_and(|&x| x < cutoff) {
            self.times.pop_front();
        }
        if self.fired.is_some_and(|n| self.times.len() < n as usize) {
            self.fired = None;
        }
    }

    /// Occurrences kept (at most the `n` of the last push).
    pub fn count(&self) -> usize {
        self.times.len()
    }

    /// The oldest kept occurrence.
    pub fn oldest(&self) -> Option<i64> {
        self.times.front().copied()
    }

    /// The latest kept occurrence.
    pub fn latest(&self) -> Option<i64> {
        self.times.back().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// Whether the rule fired for the current burst (and has not re-armed).
    pub fn in_burst(&self) -> bool {
        self.fired.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_completes_within() {
        let mut s = Sequence::default();
        assert!(!s.complete(10, 100));
        s.start(100);
        s.start(150);
        assert_eq!(s.started(), Some(100));
        assert!(!s.complete(99, 100), "B before A");
        assert_eq!(s.expired(199, 100), None);
        assert!(s.complete(199, 100));
        assert_eq!(s, Sequence::default());
    }

    #[test]
    fn sequence_expires_at_deadline() {
        let mut s = Sequence::default();
        s.start(1000);
        assert!(!s.complete(1100, 100), "B at the deadline is too late");
        assert_eq!(s.expired(1100, 100), Some(1000));
        s.reset();
        assert_eq!(s.expired(5000, 100), None);
    }

    #[test]
    fn sequence_out_of_order_start() {
        let mut s = Sequence::default();
        s.start(500);
        s.start(300);
        assert_eq!(s.started(), Some(300));
        assert_eq!(s.expired(400, 100), Some(300));
        assert!(!s.complete(450, 100));
    }

    #[test]
    fn sustained_fires_once_and_rearms() {
        let mut s = Sustained::default();
        assert_eq!(s.update(true, 0, 5, 10), None);
        assert_eq!(s.since(), Some(0));
        assert_eq!(s.update(true, 5, 10, 10), Some(0));
        assert!(s.firing());
        assert_eq!(s.update(true, 10, 15, 10), None);
        assert_eq!(s.update(false, 15, 20, 10), None);
        assert_eq!(s, Sustained::default());
        assert_eq!(s.update(true, 20, 25, 10), None);
        assert_eq!(s.update(true, 25, 30, 10), Some(20));
    }

    #[test]
    fn sustained_out_of_order_and_zero_duration() {
        let mut s = Sustained::default();
        assert_eq!(s.update(true, 10, 15, 10), None);
        assert_eq!(
            s.update(true, 5, 10, 10),
            Some(5),
            "late window moves since back"
        );
        let mut z = Sustained::default();
        assert_eq!(z.update(true, 0, 5, 0), Some(0));
        assert_eq!(z.update(true, 5, 10, 0), None);
    }

    #[test]
    fn count_within_fires_once_per_burst() {
        let mut c = CountWithin::default();
        assert!(!c.push(0, 100, 3));
        assert!(!c.push(10, 100, 3));
        assert!(c.push(20, 100, 3));
        assert!(!c.push(30, 100, 3), "same burst");
        assert_eq!(c.count(), 3, "keeps only n");
        assert_eq!(c.oldest(), Some(10));
        assert!(!c.push(500, 100, 3), "old ones evicted, re-armed");
        assert_eq!(c.count(), 1);
        assert!(!c.push(510, 100, 3));
        assert!(c.push(520, 100, 3), "fires again");
    }

    #[test]
    fn count_within_out_of_order_and_evict() {
        let mut c = CountWithin::default();
        assert!(!c.push(100, 50, 3));
        assert!(!c.push(20, 50, 3), "late and too old: dropped");
        assert_eq!(c.count(), 1);
        assert!(!c.push(60, 50, 3));
        assert!(c.push(80, 50, 3));
        assert_eq!(c.oldest(), Some(60));
        assert_eq!(c.latest(), Some(100));
        c.evict(115, 50);
        assert_eq!(c.count(), 2);
        assert!(c.push(116, 50, 3), "re-armed by evict");
        c.evict(1000, 50);
        assert!(c.is_empty());
        assert_eq!(c, CountWithin::default());
    }
}
