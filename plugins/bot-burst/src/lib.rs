//! Warning when one user views pages faster than a human could.
//!
//! Per user, a [`CountWithin`] keeps the latest page-view times; the rule
//! fires once per burst, when `min_page_views` fall within `within_ms`, and
//! re-arms once the rate drops. To keep idle users free, a timer follows the
//! oldest kept time: it evicts what fell out of the window and re-arms itself
//! for the next oldest, so an idle user's state returns to its default and
//! the host deletes it.

use rtap_sdk::prelude::*;

/// `test-variant` builds the same logic under another version (hot-swap tests).
const VERSION: &str = if cfg!(feature = "test-variant") {
    "1.0.1"
} else {
    "1.0.0"
};

/// Operator options.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Page views that make a burst...
    pub min_page_views: u32,
    /// ... within this time.
    pub within_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            min_page_views: 30,
            within_ms: 10_000,
        }
    }
}

const SCHEMA: &str = r#"{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "min_page_views": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 30, "description": "Page views by one user that make a burst"},
    "within_ms": {"type": "integer", "minimum": 1, "default": 10000, "description": "Time span of a burst (ms)"}
  }
}"#;

const DEFAULT: &str = r#"{"min_page_views": 30, "within_ms": 10000}"#;

#[derive(Default)]
pub struct BotBurst {
    n: u32,
    within: i64,
}

impl BotBurst {
    /// A time `t` is evicted once the watermark is past `t + within`.
    fn eviction_timer(&self, views: &CountWithin, ctx: &mut Ctx<'_>) {
        if let Some(oldest) = views.oldest() {
            ctx.set_timer(oldest.saturating_add(self.within).saturating_add(1));
        }
    }
}

impl Detector for BotBurst {
    type State = CountWithin;

    fn describe() -> Description {
        Description::detector("bot-burst", VERSION)
            .key_by("user_id")
            .fields(&["event_type", "timestamp"])
            .config(SCHEMA, DEFAULT)
    }

    fn configure(&mut self, config: &Config) -> Result<(), String> {
        let s: Settings = config.parse()?;
        if !(1..=100_000).contains(&s.min_page_views) {
            return Err(format!(
                "invalid config: min_page_views must be within 1..=100000, got {}",
                s.min_page_views
            ));
        }
        self.within = i64::try_from(s.within_ms)
            .ok()
            .filter(|&w| w > 0)
            .ok_or_else(|| {
                format!(
                    "invalid config: within_ms must be within 1..2^63, got {}",
                    s.within_ms
                )
            })?;
        self.n = s.min_page_views;
        Ok(())
    }

    fn on_events(&self, ctx: &mut Ctx<'_>, views: &mut CountWithin, events: &Events<'_>) {
        let was_empty = views.is_empty();
        let types = events.text("event_type");
        for (i, &t) in events.timestamps().iter().enumerate() {
            if types.is(i, "page_view") && views.push(t, self.within, self.n) {
                let message = format!(
                    "user {} viewed {} pages within {} s",
                    ctx.key(),
                    self.n,
                    self.within as f64 / 1000.0
                );
                ctx.alert(Alert::warning("bot-burst", t, message).with_value(views.count() as f64));
            }
        }
        if was_empty {
            self.eviction_timer(views, ctx);
        }
    }

    fn on_timer(&self, ctx: &mut Ctx<'_>, views: &mut CountWithin, time: i64) {
        views.evict(time, self.within);
        self.eviction_timer(views, ctx);
    }
}
rtap_sdk::export_detector!(BotBurst);

#[cfg(test)]
mod tests {
    use super::*;
    use rtap_sdk::testing::{DetectorHarness, run_detector};
    use serde_json::{Value, json};

    fn view(user: &str, ts: i64) -> Value {
        json!({"user_id": user, "event_type": "page_view", "timestamp": ts})
    }

    #[test]
    fn burst_alerts_once_and_rearms() {
        let mut events: Vec<Value> = (0..40).map(|i| view("bot", 1_000 + i * 100)).collect();
        events.extend((0..20).map(|i| view("human", i * 3_000)));
        events.extend((0..30).map(|i| view("bot", 100_000 + i * 10)));
        let alerts = run_detector::<BotBurst>("", &events).unwrap();
        let got: Vec<(&str, i64)> = alerts
            .iter()
            .map(|a| (a.key.as_str(), a.alert.time))
            .collect();
        assert_eq!(
            got,
            vec![("bot", 1_000 + 29 * 100), ("bot", 100_000 + 29 * 10)]
        );
        let a = &alerts[0].alert;
        assert_eq!(
            (a.rule.as_str(), a.severity, a.value),
            ("bot-burst", Severity::Warning, Some(30.0))
        );
        assert_eq!(a.message, "user bot viewed 30 pages within 10 s");
    }

    #[test]
    fn other_event_types_and_slow_users_do_not_count() {
        let mut events: Vec<Value> = (0..50)
            .map(|i| json!({"user_id": "u", "event_type": "click", "timestamp": i}))
            .collect();
        events.extend((0..29).map(|i| view("u", i)));
        events.extend((0..31).map(|i| view("slow", i * 400)));
        let alerts = run_detector::<BotBurst>("", &events).unwrap();
        assert!(alerts.is_empty(), "{alerts:?}");
    }

    #[test]
    fn idle_users_state_is_deleted() {
        let mut h = DetectorHarness::<BotBurst>::new(r#"{"min_page_views": 3, "within_ms": 1000}"#)
            .unwrap();
        let alerts = h
            .events(&[view("u", 0), view("u", 10), view("u", 20), view("v", 500)])
            .unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(h.timers(), vec![("u".into(), 1_001), ("v".into(), 1_501)]);
        h.advance(1_001).unwrap();
        assert_eq!(h.state("u").map(|s| s.count()), Some(2));
        assert_eq!(h.timers(), vec![("u".into(), 1_011), ("v".into(), 1_501)]);
        h.advance(1_021).unwrap();
        assert_eq!(h.keys(), vec!["v"]);
        assert!(h.finish().unwrap().is_empty());
        assert!(h.keys().is_empty() && h.timers().is_empty());
    }

    #[test]
    fn out_of_order_burst_and_config() {
        let mut events: Vec<Value> = (0..5).rev().map(|i| view("u", 1_000 + i)).collect();
        events.push(view("u", 10));
        let alerts =
            run_detector::<BotBurst>(r#"{"min_page_views": 5, "within_ms": 100}"#, &events)
                .unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].alert.time, 1_000);
        assert!(run_detector::<BotBurst>(r#"{"min_page_views": 0}"#, &[]).is_err());
        assert!(run_detector::<BotBurst>(r#"{"within_ms": -1}"#, &[]).is_err());
    }
}
