//! Warning when one user views pages faster than a human could.
//!
//! Per user, a [`CountWithin`] keeps the latest page-view times; the rule
//! fires once per burst, when `min_page_views` fall within `within_ms`, and
//! re-arms once the rate drops.
//!
//! Timers keep idle users free: the host deletes a user whose state returns
//! to its default. Outside a burst, one timer at the latest view's expiry
//! does that: each view also evicts what fell out of the window before it,
//! so a timer per view would change nothing the rule decides. In a burst,
//! the timer follows the oldest kept view (and re-arms for the next oldest),
//! because a view that expires re-arms the rule.
//!
//! Until 1.1 the timer followed the oldest view at all times: about one
//! timer per page view, the host's largest cost at 100 000 events/s. On
//! events in time order both raise the same alerts (a randomized test checks
//! it). They can differ only for a view that arrives behind the watermark
//! for an idle user, or behind the oldest kept view while a burst forms:
//! such a view now expires `within_ms` after its own time.

use rtap_sdk::prelude::*;

/// `test-variant` builds the same logic under another version (hot-swap tests).
const VERSION: &str = if cfg!(feature = "test-variant") {
    "1.1.1"
} else {
    "1.1.0"
};

/// Operator options.
#[derive(Debug, Clone, PartialEq, Deserialize, Settings)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Page views by one user that make a burst
    #[setting(min = 1, max = 100_000)]
    pub min_page_views: u32,
    /// Time span of a burst (ms)
    #[setting(min = 1)]
    pub within_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            min_page_views: 30,
            within_ms: 10_000,
        }
    }
}

#[derive(Default)]
pub struct BotBurst {
    n: u32,
    within: i64,
}

impl BotBurst {
    /// A time `t` is evicted once the watermark is past `t + within`: in a
    /// burst the oldest view's, otherwise the latest's (see the module docs).
    fn eviction_timer(&self, views: &CountWithin, ctx: &mut Ctx<'_>) {
        let at = if views.in_burst() {
            views.oldest()
        } else {
            views.latest()
        };
        if let Some(t) = at {
            ctx.set_timer(t.saturating_add(self.within).saturating_add(1));
        }
    }
}

impl Detector for BotBurst {
    type State = CountWithin;

    fn describe() -> Description {
        Description::detector("bot-burst", VERSION)
            .key_by("user_id")
            .fields(&["event_type", "timestamp"])
            .settings::<Settings>()
    }

    fn configure(&mut self, config: &Config) -> Result<(), String> {
        let s: Settings = config.settings()?;
        self.within = s.within_ms;
        self.n = s.min_page_views;
        Ok(())
    }

    fn on_events(&self, ctx: &mut Ctx<'_>, views: &mut CountWithin, events: &Events<'_>) {
        let was_empty = views.is_empty();
        let was_in_burst = views.in_burst();
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
        // A burst that starts needs the timer of its oldest view.
        if was_empty || (!was_in_burst && views.in_burst()) {
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
    use rtap_sdk::testing::{DetectorHarness, TestAlert, run_detector};
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
        // The burst re-armed: one timer at the latest view's expiry.
        assert_eq!(h.timers(), vec![("u".into(), 1_021), ("v".into(), 1_501)]);
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

    /// The rule until 1.1: a timer always followed the oldest view.
    #[derive(Default)]
    struct Reference(BotBurst);

    impl Detector for Reference {
        type State = CountWithin;
        fn describe() -> Description {
            BotBurst::describe()
        }
        fn configure(&mut self, config: &Config) -> Result<(), String> {
            self.0.configure(config)
        }
        fn on_events(&self, ctx: &mut Ctx<'_>, views: &mut CountWithin, events: &Events<'_>) {
            let was_empty = views.is_empty();
            let types = events.text("event_type");
            for (i, &t) in events.timestamps().iter().enumerate() {
                if types.is(i, "page_view") && views.push(t, self.0.within, self.0.n) {
                    let alert = Alert::warning("bot-burst", t, "").with_value(views.count() as f64);
                    ctx.alert(alert);
                }
            }
            if was_empty && let Some(o) = views.oldest() {
                ctx.set_timer(o + self.0.within + 1);
            }
        }
        fn on_timer(&self, ctx: &mut Ctx<'_>, views: &mut CountWithin, time: i64) {
            views.evict(time, self.0.within);
            if let Some(o) = views.oldest() {
                ctx.set_timer(o + self.0.within + 1);
            }
        }
    }

    /// Events in time order: users who pause, browse slowly or burst (and
    /// re-burst after a pause shorter or longer than the window); the lazy
    /// timers raise exactly the alerts of the timer per view, and empty
    /// every state in the end.
    #[test]
    fn lazy_timers_alert_as_a_timer_per_view() {
        let cfg = r#"{"min_page_views": 5, "within_ms": 1000}"#;
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut alerts = 0;
        for _ in 0..200 {
            let mut events = Vec::new();
            let mut t = 0i64;
            for _ in 0..400 {
                // Mostly fast views, sometimes a pause around the window.
                t += match next(20) {
                    0 => 600 + next(900) as i64,
                    1..=3 => next(400) as i64,
                    _ => next(90) as i64,
                };
                events.push(view(&format!("u{}", next(3)), t));
            }
            let mut old = DetectorHarness::<Reference>::new(cfg).unwrap();
            let mut new = DetectorHarness::<BotBurst>::new(cfg).unwrap();
            let seen = |v: Vec<TestAlert>| {
                v.into_iter()
                    .map(|a| (a.key, a.alert.time, a.alert.value))
                    .collect::<Vec<_>>()
            };
            let mut want = Vec::new();
            let mut got = Vec::new();
            for e in &events {
                want.extend(seen(old.events(std::slice::from_ref(e)).unwrap()));
                got.extend(seen(new.events(std::slice::from_ref(e)).unwrap()));
            }
            want.extend(seen(old.finish().unwrap()));
            got.extend(seen(new.finish().unwrap()));
            assert_eq!(got, want, "{events:?}");
            assert!(new.keys().is_empty() && new.timers().is_empty());
            alerts += got.len();
        }
        assert!(alerts > 2_000, "bursts and re-arms exercised: {alerts}");
    }

    /// A user who browses steadily, never in a burst: a timer per window
    /// instead of one per view.
    #[test]
    fn a_steady_user_costs_a_timer_per_window() {
        let views: Vec<Value> = (0..100).map(|i| view("u", i * 300)).collect();
        fn timers_set<T: Detector>(views: &[Value]) -> usize {
            let cfg = r#"{"min_page_views": 5, "within_ms": 1000}"#;
            let mut h = DetectorHarness::<T>::new(cfg).unwrap();
            let mut set = std::collections::BTreeSet::new();
            for v in views {
                h.events(std::slice::from_ref(v)).unwrap();
                set.extend(h.timers());
            }
            h.finish().unwrap();
            assert!(h.keys().is_empty());
            set.len()
        }
        let (old, new) = (
            timers_set::<Reference>(&views),
            timers_set::<BotBurst>(&views),
        );
        assert_eq!(
            (old, new),
            (97, 25),
            "timers set: a timer per view, then per window"
        );
    }

    /// The config schema and default config operators see (`GET
    /// /api/plugins`). `Settings` derives them; they must stay these.
    const SCHEMA: &str = r#"{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "min_page_views": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 30, "description": "Page views by one user that make a burst"},
    "within_ms": {"type": "integer", "minimum": 1, "default": 10000, "description": "Time span of a burst (ms)"}
  }
}"#;
    const DEFAULT: &str = r#"{"min_page_views": 30, "within_ms": 10000}"#;

    #[test]
    fn options_derive_the_published_schema_and_default() {
        let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
        let d = BotBurst::describe();
        assert_eq!(json(&d.config_schema), json(SCHEMA));
        assert_eq!(json(&d.default_config), json(DEFAULT));
        run_detector::<BotBurst>(DEFAULT, &[]).unwrap();
    }

    #[test]
    fn out_of_range_options_are_refused_by_name() {
        let refused = |config: &str| run_detector::<BotBurst>(config, &[]).unwrap_err();
        let unknown = refused(r#"{"min_views": 5}"#);
        assert!(
            unknown.starts_with("invalid config: unknown field `min_views`"),
            "{unknown}"
        );
        let mistyped = refused(r#"{"min_page_views": "lots"}"#);
        assert!(
            mistyped.starts_with("invalid config: invalid type: string \"lots\""),
            "{mistyped}"
        );
        assert_eq!(
            refused(r#"{"min_page_views": 0}"#),
            "invalid config: min_page_views must be within 1..=100000, got 0"
        );
        assert_eq!(
            refused(r#"{"min_page_views": 100001}"#),
            "invalid config: min_page_views must be within 1..=100000, got 100001"
        );
        assert_eq!(
            refused(r#"{"within_ms": 0}"#),
            "invalid config: within_ms must be at least 1, got 0"
        );
        assert_eq!(
            refused(r#"{"within_ms": -1}"#),
            "invalid config: within_ms must be at least 1, got -1"
        );
        assert_eq!(
            refused(r#"{"within_ms": 9223372036854775808}"#),
            "invalid config: within_ms must be at most 9223372036854775807, got 9223372036854775808"
        );
        run_detector::<BotBurst>(r#"{"min_page_views": 1, "within_ms": 1}"#, &[]).unwrap();
        run_detector::<BotBurst>(
            r#"{"min_page_views": 100000, "within_ms": 9223372036854775807}"#,
            &[],
        )
        .unwrap();
    }
}
