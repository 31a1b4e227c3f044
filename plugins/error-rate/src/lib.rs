//! Share of error events every 5 s, with the counts it comes from.
//!
//! `events` doubles as the throughput metric the `low-throughput` detector
//! watches, so one cheap aggregation feeds two alert rules.

use rtap_sdk::prelude::*;

#[derive(Default)]
pub struct ErrorRate;

/// Events and errors in one window.
#[derive(Default, Serialize, Deserialize)]
pub struct State {
    events: u64,
    errors: u64,
}

impl Aggregator for ErrorRate {
    type State = State;

    fn describe() -> Description {
        Description::aggregator("error-rate", "1.0.0")
            .key_by("")
            .tumbling(5_000)
            .fields(&["event_type"])
    }

    fn add(&self, state: &mut State, events: &Events) {
        state.events += events.len() as u64;
        state.errors += events
            .text("event_type")
            .iter()
            .filter(|t| *t == Some("error"))
            .count() as u64;
    }

    fn merge(&self, state: &mut State, other: State) {
        state.events += other.events;
        state.errors += other.errors;
    }

    fn finish(&self, state: State, _window: Window, out: &mut Metrics) {
        let rate = if state.events == 0 {
            0.0
        } else {
            state.errors as f64 / state.events as f64
        };
        out.single("error_rate", rate);
        out.single("events", state.events as f64);
        out.single("errors", state.errors as f64);
    }
}
rtap_sdk::export_aggregator!(ErrorRate);

#[cfg(test)]
mod tests {
    use super::*;
    use rtap_sdk::testing::run_aggregator;
    use serde_json::{Value, json};

    fn ev(event_type: &str, ts: i64) -> Value {
        json!({"event_type": event_type, "timestamp": ts})
    }

    fn metrics(events: &[Value]) -> Vec<(i64, String, f64)> {
        run_aggregator::<ErrorRate>("", events)
            .unwrap()
            .into_iter()
            .map(|m| {
                assert_eq!((m.key.as_str(), m.window.end - m.window.start), ("", 5_000));
                (m.window.start, m.name, m.value.get("").unwrap())
            })
            .collect()
    }

    #[test]
    fn fraction_of_errors() {
        let mut events: Vec<Value> = (0..9).map(|i| ev("page_view", i * 100)).collect();
        events.push(ev("error", 4_999));
        assert_eq!(
            metrics(&events),
            vec![
                (0, "error_rate".into(), 0.1),
                (0, "errors".into(), 1.0),
                (0, "events".into(), 10.0)
            ]
        );
    }

    #[test]
    fn window_without_errors_and_all_errors() {
        let events = [ev("click", -1), ev("error", 5_000), ev("error", 9_999)];
        assert_eq!(
            metrics(&events),
            vec![
                (-5_000, "error_rate".into(), 0.0),
                (-5_000, "errors".into(), 0.0),
                (-5_000, "events".into(), 1.0),
                (5_000, "error_rate".into(), 1.0),
                (5_000, "errors".into(), 2.0),
                (5_000, "events".into(), 2.0),
            ]
        );
    }

    #[test]
    fn events_without_type_count_as_events() {
        let events = [json!({"timestamp": 1}), ev("ERROR", 2), ev("error", 3)];
        let got = metrics(&events);
        assert_eq!(
            got[1],
            (0, "errors".into(), 1.0),
            "event types are case-sensitive"
        );
        assert_eq!(got[2], (0, "events".into(), 3.0));
    }
}
