//! Event-time windowing with Flink's semantics: where an event's windows
//! are, when a window fires and when it is purged, and the watermark. Pure
//! arithmetic over timestamps; the operators that keep window state are in
//! `crate::operator`.
//!
//! * Windows are `[start, end)`; tumbling and sliding windows are aligned to
//!   the epoch (Flink's `TumblingEventTimeWindows` / `SlidingEventTimeWindows`
//!   with offset 0); a session window of an event is `[ts, ts + gap)` and
//!   windows of one key that intersect merge (Flink's `EventTimeSessionWindows`).
//! * The watermark is `max event time seen − out-of-orderness − 1`, exactly as
//!   Flink's `BoundedOutOfOrdernessWatermarks`, advanced after every event (a
//!   punctuated watermark, so results do not depend on batch boundaries or
//!   timing).
//! * A window fires when the watermark reaches `end − 1` (its max timestamp)
//!   and is purged when the watermark reaches `end − 1 + allowed lateness`. An
//!   event for a fired but not yet purged window updates it and fires it again
//!   at once (Flink's `EventTimeTrigger`); an event whose every window is
//!   purged goes to the late-data output.

mod panes;
mod watermark;

pub use panes::Panes;
pub use watermark::{RunPlan, Watermark};

/// Where a window stands relative to the watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lateness {
    /// Not fired yet.
    OnTime,
    /// Fired, still within allowed lateness: an update fires it again.
    Allowed,
    /// Purged: the event is late for it.
    Dropped,
}

pub fn classify(end: i64, lateness_ms: i64, wm: i64) -> Lateness {
    if end - 1 > wm {
        Lateness::OnTime
    } else if end - 1 + lateness_ms > wm {
        Lateness::Allowed
    } else {
        Lateness::Dropped
    }
}

pub fn tumbling_start(ts: i64, size: i64) -> i64 {
    ts - ts.rem_euclid(size)
}

/// Starts of the sliding windows containing `ts`, latest first (Flink's order).
pub fn sliding_starts(ts: i64, size: i64, slide: i64) -> impl Iterator<Item = i64> {
    let last = ts - ts.rem_euclid(slide);
    std::iter::successors(Some(last), move |s| Some(s - slide)).take_while(move |s| *s > ts - size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flink_assigners() {
        assert_eq!(tumbling_start(12_345, 5_000), 10_000);
        assert_eq!(tumbling_start(-1, 5_000), -5_000);
        assert_eq!(
            sliding_starts(12_345, 10_000, 5_000).collect::<Vec<_>>(),
            vec![10_000, 5_000]
        );
        assert_eq!(
            sliding_starts(10_000, 10_000, 5_000).collect::<Vec<_>>(),
            vec![10_000, 5_000]
        );
        assert_eq!(sliding_starts(60_000, 60_000, 5_000).count(), 12);
    }

    #[test]
    fn watermark_and_lateness() {
        let mut w = Watermark::new(1_000, 10_000);
        assert_eq!(w.current(), i64::MIN);
        let others = w.begin(0, 0);
        w.observe(0, 10_000, others);
        assert_eq!(w.current(), 8_999);
        w.observe(0, 5_000, others);
        assert_eq!(w.current(), 8_999);
        assert_eq!(classify(9_000, 0, 8_999), Lateness::Dropped);
        assert_eq!(classify(9_001, 0, 8_999), Lateness::OnTime);
        assert_eq!(classify(9_000, 500, 8_999), Lateness::Allowed);
    }
}
