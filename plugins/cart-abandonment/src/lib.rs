//! Warning when a session adds to its cart and does not purchase in time.
//!
//! Per session: `add_to_cart` starts a [`Sequence`] and sets a timer at
//! `t + within_ms`; a `purchase` within that time completes it. When the
//! timer fires (the watermark passed the deadline) and the sequence is still
//! open, the cart was abandoned. Every path ends with the state back at its
//! default, so the host deletes it: finished sessions cost nothing.

use rtap_sdk::prelude::*;

/// Operator options.
#[derive(Debug, Clone, PartialEq, Deserialize, Settings)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Time allowed between add_to_cart and purchase (ms)
    #[setting(min = 1)]
    pub within_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { within_ms: 120_000 }
    }
}

#[derive(Default)]
pub struct CartAbandonment {
    within: i64,
}

impl Detector for CartAbandonment {
    type State = Sequence;

    fn describe() -> Description {
        Description::detector("cart-abandonment", "1.0.0")
            .key_by("session_id")
            .fields(&["event_type", "timestamp"])
            .settings::<Settings>()
    }

    fn configure(&mut self, config: &Config) -> Result<(), String> {
        let s: Settings = config.settings()?;
        self.within = s.within_ms;
        Ok(())
    }

    fn on_events(&self, ctx: &mut Ctx<'_>, cart: &mut Sequence, events: &Events<'_>) {
        let types = events.text("event_type");
        for (i, &t) in events.timestamps().iter().enumerate() {
            match types.get(i) {
                Some("add_to_cart") => {
                    let before = cart.started();
                    cart.start(t);
                    if cart.started() != before {
                        ctx.set_timer(t.saturating_add(self.within));
                    }
                }
                Some("purchase") => {
                    cart.complete(t, self.within);
                }
                _ => {}
            }
        }
    }

    fn on_timer(&self, ctx: &mut Ctx<'_>, cart: &mut Sequence, time: i64) {
        if let Some(added) = cart.expired(time, self.within) {
            let message = format!(
                "session {} added to cart and did not purchase within {} s",
                ctx.key(),
                self.within / 1000
            );
            ctx.alert(Alert::warning(
                "cart-abandonment",
                added.saturating_add(self.within),
                message,
            ));
            cart.reset();
        }
    }
}
rtap_sdk::export_detector!(CartAbandonment);

#[cfg(test)]
mod tests {
    use super::*;
    use rtap_sdk::testing::{DetectorHarness, run_detector};
    use serde_json::{Value, json};

    fn ev(session: &str, event_type: &str, ts: i64) -> Value {
        json!({"session_id": session, "event_type": event_type, "timestamp": ts})
    }

    #[test]
    fn abandoned_cart_alerts_once_per_session() {
        let events = [
            ev("s1", "add_to_cart", 1_000),
            ev("s2", "add_to_cart", 2_000),
            ev("s1", "add_to_cart", 5_000),
            ev("s2", "purchase", 60_000),
            ev("s3", "page_view", 200_000),
        ];
        let alerts = run_detector::<CartAbandonment>("", &events).unwrap();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].key, "s1");
        let a = &alerts[0].alert;
        assert_eq!(
            (a.rule.as_str(), a.severity, a.time),
            ("cart-abandonment", Severity::Warning, 121_000)
        );
        assert_eq!(
            a.message,
            "session s1 added to cart and did not purchase within 120 s"
        );
    }

    #[test]
    fn late_purchase_does_not_save_the_cart() {
        let events = [
            ev("s", "add_to_cart", 0),
            ev("s", "purchase", 10_000),
            ev("s", "add_to_cart", 20_000),
            ev("s", "purchase", 140_000),
        ];
        let alerts = run_detector::<CartAbandonment>(r#"{"within_ms": 120000}"#, &events).unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].alert.time, 140_000);
    }

    #[test]
    fn states_return_to_default_and_timers_fire_on_watermark() {
        let mut h = DetectorHarness::<CartAbandonment>::new(r#"{"within_ms": 1000}"#).unwrap();
        assert!(
            h.events(&[ev("a", "add_to_cart", 0), ev("b", "add_to_cart", 100)])
                .unwrap()
                .is_empty()
        );
        assert_eq!(h.keys(), vec!["a", "b"]);
        assert_eq!(h.timers(), vec![("a".into(), 1_000), ("b".into(), 1_100)]);
        assert!(h.events(&[ev("b", "purchase", 500)]).unwrap().is_empty());
        assert_eq!(h.keys(), vec!["a"], "completed cart state deleted");
        let fired = h.events(&[ev("c", "page_view", 1_050)]).unwrap();
        assert_eq!(fired.len(), 1);
        assert_eq!((fired[0].key.as_str(), fired[0].alert.time), ("a", 1_000));
        assert!(h.keys().is_empty(), "abandoned cart state deleted");
        assert!(h.finish().unwrap().is_empty());
    }

    #[test]
    fn out_of_order_add_moves_the_deadline() {
        let mut h = DetectorHarness::<CartAbandonment>::new(r#"{"within_ms": 1000}"#).unwrap();
        h.events(&[ev("s", "add_to_cart", 500), ev("s", "add_to_cart", 200)])
            .unwrap();
        let fired = h.advance(1_200).unwrap();
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].alert.time, 1_200);
        assert!(
            h.finish().unwrap().is_empty(),
            "the later timer finds nothing"
        );
        assert!(run_detector::<CartAbandonment>(r#"{"within_ms": 0}"#, &[]).is_err());
        assert!(run_detector::<CartAbandonment>(r#"{"within": 5}"#, &[]).is_err());
    }

    /// The config schema and default config operators see (`GET
    /// /api/plugins`). `Settings` derives them; they must stay these.
    const SCHEMA: &str = r#"{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "within_ms": {"type": "integer", "minimum": 1, "default": 120000, "description": "Time allowed between add_to_cart and purchase (ms)"}
  }
}"#;
    const DEFAULT: &str = r#"{"within_ms": 120000}"#;

    #[test]
    fn options_derive_the_published_schema_and_default() {
        let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
        let d = CartAbandonment::describe();
        assert_eq!(json(&d.config_schema), json(SCHEMA));
        assert_eq!(json(&d.default_config), json(DEFAULT));
        run_detector::<CartAbandonment>(DEFAULT, &[]).unwrap();
    }

    #[test]
    fn out_of_range_options_are_refused_by_name() {
        let refused = |config: &str| run_detector::<CartAbandonment>(config, &[]).unwrap_err();
        let unknown = refused(r#"{"within": 5}"#);
        assert!(
            unknown.starts_with("invalid config: unknown field `within`"),
            "{unknown}"
        );
        assert_eq!(
            refused(r#"{"within_ms": 0}"#),
            "invalid config: within_ms must be at least 1, got 0"
        );
        assert_eq!(
            refused(r#"{"within_ms": 9223372036854775808}"#),
            "invalid config: within_ms must be at most 9223372036854775807, got 9223372036854775808"
        );
        run_detector::<CartAbandonment>(r#"{"within_ms": 1}"#, &[]).unwrap();
        run_detector::<CartAbandonment>(r#"{"within_ms": 9223372036854775807}"#, &[]).unwrap();
    }
}
