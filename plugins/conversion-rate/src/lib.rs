//! Conversion rate per minute: purchases over distinct sessions.
//!
//! Sessions are counted with a HyperLogLog rather than a set of ids, so the
//! state stays small however busy the minute; `sessions` is therefore an
//! estimate (exact in practice below a few hundred, about 1.6 % standard
//! error above), and so is the rate.

use rtap_sdk::prelude::*;

#[derive(Default)]
pub struct ConversionRate;

/// Purchases and the sessions seen in one window.
#[derive(Default, Serialize, Deserialize)]
pub struct State {
    purchases: u64,
    sessions: HyperLogLog,
}

impl Aggregator for ConversionRate {
    type State = State;

    fn describe() -> Description {
        Description::aggregator("conversion-rate", "1.0.0")
            .key_by("")
            .tumbling(60_000)
            .fields(&["event_type", "session_id"])
    }

    fn add(&self, state: &mut State, events: &Events) {
        let types = events.text("event_type");
        let sessions = events.text("session_id");
        for i in 0..events.len() {
            if types.is(i, "purchase") {
                state.purchases += 1;
            }
            if let Some(session) = sessions.get(i) {
                state.sessions.insert_str(session);
            }
        }
    }

    fn merge(&self, state: &mut State, other: State) {
        state.purchases += other.purchases;
        state.sessions.merge(&other.sessions);
    }

    fn finish(&self, state: State, _window: Window, out: &mut Metrics) {
        let sessions = state.sessions.count();
        let rate = if sessions == 0 {
            0.0
        } else {
            state.purchases as f64 / sessions as f64
        };
        out.single("conversion_rate", rate);
        out.single("purchases", state.purchases as f64);
        out.single("sessions", sessions as f64);
    }
}
rtap_sdk::export_aggregator!(ConversionRate);

#[cfg(test)]
mod tests {
    use super::*;
    use rtap_sdk::testing::{TestMetric, run_aggregator};
    use serde_json::{Value, json};

    fn ev(event_type: &str, session: &str, ts: i64) -> Value {
        json!({"event_type": event_type, "session_id": session, "timestamp": ts})
    }

    fn values(out: &[TestMetric], start: i64) -> Vec<(&str, f64)> {
        out.iter()
            .filter(|m| m.window.start == start)
            .map(|m| {
                assert_eq!((m.key.as_str(), m.window.end), ("", start + 60_000));
                (m.name.as_str(), m.value.get("").unwrap())
            })
            .collect()
    }

    #[test]
    fn purchases_over_distinct_sessions() {
        let events = [
            ev("page_view", "s1", 1_000),
            ev("add_to_cart", "s1", 2_000),
            ev("purchase", "s1", 3_000),
            ev("page_view", "s2", 4_000),
            ev("page_view", "s3", 5_000),
            ev("page_view", "s4", 59_999),
            ev("purchase", "s5", 60_000),
        ];
        let out = run_aggregator::<ConversionRate>("", &events).unwrap();
        assert_eq!(
            values(&out, 0),
            vec![
                ("conversion_rate", 0.25),
                ("purchases", 1.0),
                ("sessions", 4.0)
            ]
        );
        assert_eq!(
            values(&out, 60_000),
            vec![
                ("conversion_rate", 1.0),
                ("purchases", 1.0),
                ("sessions", 1.0)
            ]
        );
    }

    #[test]
    fn no_sessions_is_zero_rate() {
        let out = run_aggregator::<ConversionRate>(
            "",
            &[json!({"event_type": "purchase", "timestamp": 10})],
        )
        .unwrap();
        assert_eq!(
            values(&out, 0),
            vec![
                ("conversion_rate", 0.0),
                ("purchases", 1.0),
                ("sessions", 0.0)
            ]
        );
    }

    #[test]
    fn many_sessions_estimate() {
        let events: Vec<Value> = (0..3_000)
            .map(|i| {
                ev(
                    if i % 10 == 0 { "purchase" } else { "page_view" },
                    &format!("s{}", i % 1_000),
                    120_000 + i,
                )
            })
            .collect();
        let out = run_aggregator::<ConversionRate>("", &events).unwrap();
        let v = values(&out, 120_000);
        assert_eq!(v[1], ("purchases", 300.0));
        assert!((v[2].1 - 1_000.0).abs() <= 30.0, "{v:?}");
        assert!((v[0].1 - 0.3).abs() <= 0.01, "{v:?}");
    }
}
