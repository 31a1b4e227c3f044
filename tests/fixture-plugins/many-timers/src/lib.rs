//! Per user: an event sets one timer 1 s later; when it fires, it sets 30
//! more (1 ms apart); when all 30 have fired, one alert. With 4 096 users'
//! first timers in one call, that call returns 122 880 timers, past the
//! 100 000 a call may return.
use rtap_sdk::prelude::*;

#[derive(Default)]
pub struct ManyTimers;

impl Detector for ManyTimers {
    /// Timers of the second round fired so far (0 before it is set).
    type State = (bool, u32);
    fn describe() -> Description {
        Description::detector("many-timers", "1.0.0")
            .key_by("user_id")
            .fields(&["timestamp"])
    }
    fn on_events(&self, ctx: &mut Ctx<'_>, armed: &mut (bool, u32), events: &Events<'_>) {
        if let (false, Some(&t)) = (armed.0, events.timestamps().first()) {
            armed.0 = true;
            ctx.set_timer(t + 1_000);
        }
    }
    fn on_timer(&self, ctx: &mut Ctx<'_>, armed: &mut (bool, u32), time: i64) {
        if armed.1 == 0 {
            for i in 1..=30 {
                ctx.set_timer(time + i);
            }
            armed.1 = 1;
        } else {
            armed.1 += 1;
            if armed.1 == 31 {
                ctx.alert(Alert::warning("all-fired", time, "30 timers fired"));
            }
        }
    }
}
rtap_sdk::export_detector!(ManyTimers);
