//! Session length and pages per session, over session windows.
//!
//! A session is the run of one `session_id`'s events without a gap of 60 s
//! (Flink session windows, `[first, last + gap)`). One minute is short for
//! real traffic but keeps the demo lively: sessions close, and their metrics
//! appear, a minute after the last click. The gap is part of `describe`, so
//! changing it means a new plugin version. Events without a `session_id`
//! share the key `""`.

use rtap_sdk::prelude::*;

/// Inactivity that closes a session.
pub const GAP_MS: u64 = 60_000;

#[derive(Default)]
pub struct SessionDuration;

/// First and last event time, and the page views, of one session.
#[derive(Default, Serialize, Deserialize)]
pub struct State {
    span: Option<(i64, i64)>,
    page_views: u64,
}

impl Aggregator for SessionDuration {
    type State = State;

    fn describe() -> Description {
        Description::aggregator("session-duration", "1.0.0")
            .key_by("session_id")
            .session(GAP_MS)
            .fields(&["timestamp", "event_type"])
    }

    fn add(&self, state: &mut State, events: &Events) {
        let types = events.text("event_type");
        for (i, &t) in events.timestamps().iter().enumerate() {
            state.span = Some(state.span.map_or((t, t), |(a, b)| (a.min(t), b.max(t))));
            if types.is(i, "page_view") {
                state.page_views += 1;
            }
        }
    }

    fn merge(&self, state: &mut State, other: State) {
        state.span = match (state.span, other.span) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (x, y) => x.or(y),
        };
        state.page_views += other.page_views;
    }

    fn finish(&self, state: State, _window: Window, out: &mut Metrics) {
        if let Some((first, last)) = state.span {
            out.single("session_duration_ms", (last - first) as f64);
            out.single("pages_per_session", state.page_views as f64);
        }
    }
}
rtap_sdk::export_aggregator!(SessionDuration);

#[cfg(test)]
mod tests {
    use super::*;
    use rtap_sdk::testing::run_aggregator;
    use serde_json::{Value, json};

    fn ev(session: &str, event_type: &str, ts: i64) -> Value {
        json!({"session_id": session, "event_type": event_type, "timestamp": ts})
    }

    fn summary(events: &[Value]) -> Vec<(String, i64, i64, String, f64)> {
        run_aggregator::<SessionDuration>("", events)
            .unwrap()
            .into_iter()
            .map(|m| {
                (
                    m.key,
                    m.window.start,
                    m.window.end,
                    m.name,
                    m.value.get("").unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn duration_and_pages() {
        let events = [
            ev("s1", "session_start", 1_000),
            ev("s1", "page_view", 2_000),
            ev("s1", "page_view", 30_000),
            ev("s1", "purchase", 45_000),
            ev("s2", "page_view", 10_000),
        ];
        let got = summary(&events);
        assert_eq!(
            got,
            vec![
                ("s2".into(), 10_000, 70_000, "pages_per_session".into(), 1.0),
                (
                    "s2".into(),
                    10_000,
                    70_000,
                    "session_duration_ms".into(),
                    0.0
                ),
                ("s1".into(), 1_000, 105_000, "pages_per_session".into(), 2.0),
                (
                    "s1".into(),
                    1_000,
                    105_000,
                    "session_duration_ms".into(),
                    44_000.0
                ),
            ]
        );
    }

    #[test]
    fn gap_splits_sessions() {
        let events = [
            ev("s", "page_view", 0),
            ev("s", "page_view", 60_001),
            ev("s", "page_view", 70_000),
        ];
        let got = summary(&events);
        let durations: Vec<_> = got
            .iter()
            .filter(|m| m.3 == "session_duration_ms")
            .map(|m| (m.1, m.2, m.4))
            .collect();
        assert_eq!(
            durations,
            vec![(0, 60_000, 0.0), (60_001, 130_000, 9_999.0)]
        );
    }

    #[test]
    fn out_of_order_event_bridges_two_sessions() {
        let events = [
            ev("s", "page_view", 0),
            ev("s", "page_view", 100_000),
            ev("s", "click", 50_000),
            ev("s", "page_view", 20_000),
        ];
        let got = summary(&events);
        assert_eq!(
            got,
            vec![
                ("s".into(), 0, 160_000, "pages_per_session".into(), 3.0),
                (
                    "s".into(),
                    0,
                    160_000,
                    "session_duration_ms".into(),
                    100_000.0
                ),
            ]
        );
    }
}
