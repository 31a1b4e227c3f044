//! Sliding windows kept as panes (Flink's and Arroyo's slicing): each event
//! is added once, to the slide-sized pane that holds it, and a window is
//! its panes combined. The arithmetic of which windows hold a pane, when
//! they fire and when a pane goes.

use super::tumbling_start;

/// Sliding windows kept as panes (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Panes {
    size: i64,
    slide: i64,
}

impl Panes {
    /// Panes for a sliding window of more than one slide whose size is a
    /// multiple of its slide; `None` otherwise (per-window state).
    pub fn of_sliding(size_ms: i64, slide_ms: i64) -> Option<Panes> {
        (slide_ms > 0 && size_ms > slide_ms && size_ms % slide_ms == 0).then_some(Panes {
            size: size_ms,
            slide: slide_ms,
        })
    }

    /// The window size (a multiple of the slide).
    pub fn size(self) -> i64 {
        self.size
    }

    /// The slide: every pane is this long.
    pub fn slide(self) -> i64 {
        self.slide
    }

    /// Start of the pane that holds `ts`.
    pub fn pane(self, ts: i64) -> i64 {
        tumbling_start(ts, self.slide)
    }

    /// The earliest window holding pane `p` whose max timestamp is after
    /// `t` (its start), if one is left.
    pub fn next_window(self, p: i64, t: i64) -> Option<i64> {
        let first = p - self.size + self.slide;
        // s + size - 1 > t  ⇔  s ≥ t - size + 2, rounded up to a slide.
        let min = t.saturating_sub(self.size).saturating_add(2);
        let s = if min <= first {
            first
        } else {
            min.saturating_add((self.slide - min.rem_euclid(self.slide)) % self.slide)
        };
        (s <= p).then_some(s)
    }

    /// The windows holding pane `p` whose max timestamp is in `(after, upto]`.
    pub fn due(self, p: i64, after: i64, upto: i64) -> impl Iterator<Item = i64> {
        let first = self.next_window(p, after);
        std::iter::successors(first, move |s| Some(s + self.slide))
            .take_while(move |&s| s <= p && s + self.size - 1 <= upto)
    }

    /// When pane `p` goes: its last window (the one starting at `p`) is purged.
    pub fn purge_at(self, p: i64, lateness_ms: i64) -> i64 {
        p.saturating_add(self.size - 1).saturating_add(lateness_ms)
    }

    /// The next time a key with panes starting at `starts` must be looked
    /// at after `t`: its next window to fire, else its first pane to purge.
    pub fn next_trigger(
        self,
        starts: impl IntoIterator<Item = i64>,
        t: i64,
        lateness_ms: i64,
    ) -> Option<i64> {
        starts
            .into_iter()
            .map(|p| match self.next_window(p, t) {
                Some(s) => s + self.size - 1,
                None => self.purge_at(p, lateness_ms),
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panes_know_their_windows() {
        let pn = Panes::of_sliding(10, 5).unwrap();
        assert_eq!(Panes::of_sliding(10, 4), None);
        assert_eq!(Panes::of_sliding(5, 5), None);
        assert_eq!((pn.pane(7), pn.pane(-1), pn.pane(5)), (5, -5, 5));
        // Pane [5, 10) is in windows [0, 10) (max ts 9) and [5, 15) (14).
        assert_eq!(pn.next_window(5, i64::MIN), Some(0));
        assert_eq!(pn.next_window(5, 8), Some(0));
        assert_eq!(pn.next_window(5, 9), Some(5));
        assert_eq!(pn.next_window(5, 14), None);
        assert_eq!(pn.next_window(5, i64::MAX), None);
        assert_eq!(pn.due(5, i64::MIN, 20).collect::<Vec<_>>(), [0, 5]);
        assert_eq!(pn.due(5, 9, 13).count(), 0);
        assert_eq!(pn.due(5, 9, 14).collect::<Vec<_>>(), [5]);
        assert_eq!(pn.due(-5, 3, 100).collect::<Vec<_>>(), [-5]);
        assert_eq!(pn.purge_at(5, 2), 16);
        // Next: a window to fire, else a purge.
        assert_eq!(pn.next_trigger([5, 10], 9, 3), Some(14));
        assert_eq!(pn.next_trigger([5], 14, 3), Some(17));
        assert_eq!(pn.next_trigger([], 14, 3), None);
    }
}
