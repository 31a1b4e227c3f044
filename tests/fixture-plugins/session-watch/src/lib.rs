//! An alert for every `golden-session/count` metric, keyed by the metric's
//! key (the user): a metric detector with one key per user of a
//! high-cardinality aggregate.
use rtap_sdk::prelude::*;

#[derive(Default)]
pub struct Watch;

impl Detector for Watch {
    type State = u64;
    fn describe() -> Description {
        Description::detector("session-watch", "1.0.0")
            .on_metrics(&["golden-session/count"])
            .key_by("key")
    }
    fn on_metrics(&self, ctx: &mut Ctx<'_>, seen: &mut u64, metrics: &[MetricIn]) {
        for m in metrics {
            *seen += 1;
            let message = format!("session of {} ended", ctx.key());
            ctx.alert(Alert::warning("session-ended", m.window.end, message));
        }
    }
}
rtap_sdk::export_detector!(Watch);
