//! The watermark: how far event time has certainly advanced.

/// Bounded-out-of-orderness watermark over the partitions of a source.
///
/// Each partition keeps its own maximum event time; the watermark is the
/// minimum over the partitions that produced within the idle timeout (an
/// idle or stalled partition does not hold event time back, as Flink's
/// `withIdleness`), minus the out-of-orderness, minus 1 — and never goes
/// backwards. A partition the source still has records to read from is
/// not idle, however long since its last record ([`Watermark::declare`]
/// with every batch's `backlog`): only an empty partition may be passed.
/// With one partition (files, the simulator) it is exactly Flink's
/// `BoundedOutOfOrdernessWatermarks`, advanced after every event.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Watermark {
    ooo_ms: i64,
    idle_ms: i64,
    /// Partition → (max event time, processing time of its last batch, ms).
    parts: std::collections::BTreeMap<i32, (i64, i64)>,
    emitted: i64,
}

impl Watermark {
    pub fn new(ooo_ms: i64, idle_ms: i64) -> Self {
        Watermark {
            ooo_ms,
            idle_ms,
            parts: Default::default(),
            emitted: i64::MIN,
        }
    }

    /// The current watermark (`i64::MIN` before the first event).
    pub fn current(&self) -> i64 {
        self.emitted
    }

    /// The source reads these partitions: each holds the watermark back until
    /// it produced or went idle (a partition not heard from yet must not let
    /// the others run ahead of its events).
    pub fn declare(&mut self, partitions: &[i32], now_ms: i64) {
        for &p in partitions {
            self.parts.entry(p).or_insert((i64::MIN, now_ms)).1 = now_ms;
        }
    }

    /// A batch from `partition` starts at processing time `now_ms`: returns
    /// the bound the other active partitions put on the watermark.
    pub fn begin(&mut self, partition: i32, now_ms: i64) -> i64 {
        let e = self.parts.entry(partition).or_insert((i64::MIN, now_ms));
        e.1 = now_ms;
        let idle = self.idle_ms;
        self.parts
            .iter()
            .filter(|(p, (_, seen))| **p != partition && now_ms - *seen < idle)
            .map(|(_, (max, _))| *max)
            .min()
            .unwrap_or(i64::MAX)
    }

    /// An event at `ts` from `partition`; `others` from [`Watermark::begin`].
    pub fn observe(&mut self, partition: i32, ts: i64, others: i64) {
        let e = self.parts.entry(partition).or_insert((i64::MIN, 0));
        e.0 = e.0.max(ts);
        let bound = e.0.min(others);
        let candidate = bound.saturating_sub(self.ooo_ms).saturating_sub(1);
        self.emitted = self.emitted.max(candidate);
    }

    /// A run of `partition`'s events (a batch, or its part from one
    /// partition) at processing time `now_ms`, whose latest event time is
    /// `max_ts` (`None`: no events): advances the watermark exactly as
    /// observing each event would, and returns what each event's own
    /// watermark is computed from ([`RunPlan::watermarks`]).
    pub fn run(&mut self, partition: i32, now_ms: i64, max_ts: Option<i64>) -> RunPlan {
        let others = self.begin(partition, now_ms);
        let plan = RunPlan {
            start: self.emitted,
            others,
            prev_max: self.parts.get(&partition).map_or(i64::MIN, |e| e.0),
            ooo_ms: self.ooo_ms,
        };
        if let Some(ts) = max_ts {
            self.observe(partition, ts, others);
        }
        plan
    }

    /// A partition of a bounded source ended: it no longer holds the
    /// watermark back.
    pub fn retire(&mut self, partition: i32) {
        self.parts.remove(&partition);
    }

    /// No partition is ever taken for idle (a bounded source: a partition
    /// without events is slow, not idle; it ends when it ends).
    pub fn without_idleness(mut self) -> Self {
        self.idle_ms = i64::MAX;
        self
    }

    pub fn max_event_time(&self) -> Option<i64> {
        self.parts
            .values()
            .map(|(m, _)| *m)
            .filter(|m| *m != i64::MIN)
            .max()
    }
}

/// What the watermark of each event of a run is computed from: the
/// watermark before the run, the bound the other partitions put on it, and
/// the partition's latest event time before the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunPlan {
    pub start: i64,
    pub others: i64,
    pub prev_max: i64,
    pub ooo_ms: i64,
}

impl RunPlan {
    /// The watermark each event arrives under (before it), and the one
    /// after the last, for the run's event times `ts` in order: the same
    /// values as [`Watermark::observe`] after each event.
    pub fn watermarks(&self, ts: impl Iterator<Item = i64>, out: &mut Vec<i64>) -> i64 {
        let (mut max, mut wm) = (self.prev_max, self.start);
        for t in ts {
            out.push(wm);
            max = max.max(t);
            let candidate = max
                .min(self.others)
                .saturating_sub(self.ooo_ms)
                .saturating_sub(1);
            wm = wm.max(candidate);
        }
        wm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slowest_active_partition_holds_event_time() {
        let mut w = Watermark::new(0, 5_000);
        let o = w.begin(0, 0);
        w.observe(0, 10_000, o);
        assert_eq!(w.current(), 9_999);
        let o = w.begin(1, 100);
        w.observe(1, 3_000, o);
        w.declare(&[2], 150);
        let o = w.begin(0, 160);
        w.observe(0, 30_000, o);
        assert_eq!(
            w.current(),
            9_999,
            "a declared partition that has not produced holds it"
        );
        let o = w.begin(2, 170);
        w.observe(2, 25_000, o);
        assert_eq!(w.current(), 9_999, "never backwards");
        let o = w.begin(0, 200);
        w.observe(0, 20_000, o);
        assert_eq!(w.current(), 9_999, "partition 1 (at 3 000) holds it");
        // Partition 1 goes idle: partition 0 alone drives the watermark.
        assert_eq!(w.current(), 9_999, "partition 1 still holds it");
        let o = w.begin(0, 6_000);
        w.observe(0, 31_000, o);
        assert_eq!(w.current(), 30_999);
    }

    #[test]
    fn a_partition_with_a_backlog_is_not_idle() {
        let mut w = Watermark::new(0, 5_000);
        let o = w.begin(1, 0);
        w.observe(1, 3_000, o);
        // Partition 1 sends nothing for longer than the idle timeout, but
        // the source says it has records left (declared with each batch).
        for now in (1_000..=20_000).step_by(1_000) {
            w.declare(&[1], now);
            let o = w.begin(0, now);
            w.observe(0, 10 * now, o);
        }
        assert_eq!(w.current(), 2_999, "partition 1 (at 3 000) holds it");
        // Caught up and quiet past the timeout: now it is idle.
        let o = w.begin(0, 26_000);
        w.observe(0, 300_000, o);
        assert_eq!(w.current(), 299_999);
    }

    #[test]
    fn a_run_plan_gives_each_event_the_watermark_observing_gives() {
        let mut rng = 5u64;
        let mut next = |n: u64| {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng >> 33) % n
        };
        let mut one = Watermark::new(2_000, 10_000);
        let mut planned = Watermark::new(2_000, 10_000);
        let mut t = 100_000i64;
        for round in 0..200 {
            let p = next(4) as i32;
            let n = next(20) as usize;
            let ts: Vec<i64> = (0..n)
                .map(|_| {
                    t += next(300) as i64;
                    t - next(4_000) as i64
                })
                .collect();
            let now = round * 10;
            let others = one.begin(p, now);
            let mut want = Vec::new();
            for &x in &ts {
                want.push(one.current());
                one.observe(p, x, others);
            }
            let plan = planned.run(p, now, ts.iter().copied().max());
            let mut got = Vec::new();
            let after = plan.watermarks(ts.iter().copied(), &mut got);
            assert_eq!(got, want, "round {round}");
            assert_eq!(after, one.current());
            assert_eq!(planned.current(), one.current());
        }
    }
}
