//! The generic adapters between the Wasm exports and the [`Aggregator`] /
//! [`Detector`] traits. Plain Rust on the SDK's own types, so it is compiled
//! and tested natively too; `wit.rs` only moves the generated types in and out.

use std::any::Any;
use std::cell::RefCell;

use crate::state::Packed;
use crate::{
    Aggregator, Alert, Batch, Config, Ctx, Detector, MetricIn, MetricValue, Metrics, Window,
};
use crate::{decode_state, encode_state};

thread_local! {
    /// The configured plugin value of this instance (config only, never state).
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    /// The field names of this plugin's batch columns.
    static FIELDS: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

fn configure<T: Default + 'static>(
    config: &str,
    default_config: &str,
    apply: impl FnOnce(&mut T, &Config) -> Result<(), String>,
) -> Result<(), String> {
    let text = if config.trim().is_empty() {
        default_config
    } else {
        config
    };
    let cfg = Config::from_json(text)?;
    let mut value = T::default();
    apply(&mut value, &cfg)?;
    INSTANCE.with(|slot| *slot.borrow_mut() = Some(Box::new(value)));
    Ok(())
}

fn with_instance<T: Default + 'static, R>(f: impl FnOnce(&T) -> R) -> R {
    INSTANCE.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.as_ref().is_none_or(|b| !b.is::<T>()) {
            *slot = Some(Box::new(T::default()));
        }
        f(slot
            .as_ref()
            .and_then(|b| b.downcast_ref::<T>())
            .expect("instance just set"))
    })
}

/// Give the batch its column names (from `describe().fields`, cached).
pub fn name_columns(batch: &mut Batch, describe: impl FnOnce() -> Vec<String>) {
    batch.fields = FIELDS.with(|f| f.borrow_mut().get_or_insert_with(describe).clone());
}

fn check_groups(group_lens: &[u32], states: &Packed, len: usize) -> Result<(), String> {
    if group_lens.len() != states.len() {
        return Err(format!(
            "{} groups but {} states",
            group_lens.len(),
            states.len()
        ));
    }
    let total: u64 = group_lens.iter().map(|&l| l as u64).sum();
    if total != len as u64 {
        return Err(format!("groups cover {total} events, batch has {len}"));
    }
    Ok(())
}

pub fn aggregator_init<T: Aggregator>(config: &str) -> Result<(), String> {
    configure::<T>(config, &T::describe().default_config, |t, c| t.configure(c))
}

pub fn aggregator_migrate<T: Aggregator>(from: u32, state: &[u8]) -> Result<Vec<u8>, String> {
    let s = T::migrate(from, state)?;
    let mut out = Vec::new();
    encode_state(&s, &mut out)?;
    Ok(out)
}

pub fn aggregator_add<T: Aggregator>(
    group_lens: &[u32],
    states: &Packed,
    batch: &Batch,
) -> Result<Packed, String> {
    with_instance::<T, _>(|agg| aggregator_add_on(agg, group_lens, states, batch))
}

/// [`aggregator_add`] on an explicit plugin value (native embedding: several
/// plugins on one thread).
pub fn aggregator_add_on<T: Aggregator>(
    agg: &T,
    group_lens: &[u32],
    states: &Packed,
    batch: &Batch,
) -> Result<Packed, String> {
    check_groups(group_lens, states, batch.len)?;
    {
        let mut out = Packed {
            data: Vec::with_capacity(states.data.len() + 16 * states.len()),
            ends: Vec::new(),
        };
        let mut start = 0usize;
        for (i, &len) in group_lens.iter().enumerate() {
            let mut state: T::State = decode_state(states.get(i))?;
            agg.add(&mut state, &batch.slice(start, len as usize));
            encode_state(&state, &mut out.data)?;
            out.seal();
            start += len as usize;
        }
        Ok(out)
    }
}

pub fn aggregator_merge<T: Aggregator>(a: &[u8], b: &[u8]) -> Result<Vec<u8>, String> {
    with_instance::<T, _>(|agg| aggregator_merge_on(agg, a, b))
}

pub fn aggregator_merge_on<T: Aggregator>(agg: &T, a: &[u8], b: &[u8]) -> Result<Vec<u8>, String> {
    {
        let mut sa: T::State = decode_state(a)?;
        let sb: T::State = decode_state(b)?;
        agg.merge(&mut sa, sb);
        let mut out = Vec::new();
        encode_state(&sa, &mut out)?;
        Ok(out)
    }
}

pub fn aggregator_finish<T: Aggregator>(
    windows: &[Window],
    states: &Packed,
) -> Result<Vec<(u32, String, MetricValue)>, String> {
    with_instance::<T, _>(|agg| aggregator_finish_on(agg, windows, states))
}

pub fn aggregator_finish_on<T: Aggregator>(
    agg: &T,
    windows: &[Window],
    states: &Packed,
) -> Result<Vec<(u32, String, MetricValue)>, String> {
    if windows.len() != states.len() {
        return Err(format!(
            "{} windows but {} states",
            windows.len(),
            states.len()
        ));
    }
    let mut out = Metrics::default();
    for (i, w) in windows.iter().enumerate() {
        out.set_group(i as u32);
        agg.finish(decode_state(states.get(i))?, *w, &mut out);
    }
    Ok(out.into_inner())
}

/// What a detector call returns.
#[derive(Debug, Default)]
pub struct StepOut {
    pub states: Packed,
    pub alerts: Vec<(u32, Alert)>,
    pub timers: Vec<(u32, i64)>,
}

pub fn detector_init<T: Detector>(config: &str) -> Result<(), String> {
    configure::<T>(config, &T::describe().default_config, |t, c| t.configure(c))
}

pub fn detector_migrate<T: Detector>(from: u32, state: &[u8]) -> Result<Vec<u8>, String> {
    let s = T::migrate(from, state)?;
    let mut out = Vec::new();
    encode_state(&s, &mut out)?;
    Ok(out)
}

/// Run `f` for each key's state and collect states, alerts and timers. A state
/// equal to the default is returned empty (the host deletes it).
fn step<T: Detector>(
    det: &T,
    keys: &[String],
    states: &Packed,
    watermark: i64,
    mut f: impl FnMut(&T, usize, &mut Ctx<'_>, &mut T::State),
) -> Result<StepOut, String> {
    if keys.len() != states.len() {
        return Err(format!("{} keys but {} states", keys.len(), states.len()));
    }
    let mut default_bytes = Vec::new();
    encode_state(&T::State::default(), &mut default_bytes)?;
    let mut out = StepOut::default();
    for (i, key) in keys.iter().enumerate() {
        let mut state: T::State = decode_state(states.get(i))?;
        let mut ctx = Ctx::new(key, watermark);
        f(det, i, &mut ctx, &mut state);
        let start = out.states.data.len();
        encode_state(&state, &mut out.states.data)?;
        if out.states.data[start..] == default_bytes[..] {
            out.states.data.truncate(start);
        }
        out.states.seal();
        let (alerts, timers) = ctx.into_parts();
        out.alerts.extend(alerts.into_iter().map(|a| (i as u32, a)));
        out.timers.extend(timers.into_iter().map(|t| (i as u32, t)));
    }
    Ok(out)
}

fn group_starts(group_lens: &[u32], keys: usize, len: usize) -> Result<Vec<usize>, String> {
    if group_lens.len() != keys {
        return Err(format!("{} groups but {keys} keys", group_lens.len()));
    }
    let mut starts = Vec::with_capacity(keys);
    let mut s = 0usize;
    for &l in group_lens {
        starts.push(s);
        s += l as usize;
    }
    if s != len {
        return Err(format!("groups cover {s} items, the call has {len}"));
    }
    Ok(starts)
}

pub fn detector_on_events<T: Detector>(
    keys: &[String],
    group_lens: &[u32],
    states: &Packed,
    batch: &Batch,
    watermark: i64,
) -> Result<StepOut, String> {
    with_instance::<T, _>(|det| {
        detector_on_events_on(det, keys, group_lens, states, batch, watermark)
    })
}

/// The same on an explicit plugin value.
pub fn detector_on_events_on<T: Detector>(
    det: &T,
    keys: &[String],
    group_lens: &[u32],
    states: &Packed,
    batch: &Batch,
    watermark: i64,
) -> Result<StepOut, String> {
    let starts = group_starts(group_lens, keys.len(), batch.len)?;
    step::<T>(det, keys, states, watermark, |det, i, ctx, state| {
        det.on_events(ctx, state, &batch.slice(starts[i], group_lens[i] as usize))
    })
}

pub fn detector_on_metrics<T: Detector>(
    keys: &[String],
    group_lens: &[u32],
    states: &Packed,
    metrics: &[MetricIn],
) -> Result<StepOut, String> {
    with_instance::<T, _>(|det| detector_on_metrics_on(det, keys, group_lens, states, metrics))
}

/// The same on an explicit plugin value.
pub fn detector_on_metrics_on<T: Detector>(
    det: &T,
    keys: &[String],
    group_lens: &[u32],
    states: &Packed,
    metrics: &[MetricIn],
) -> Result<StepOut, String> {
    let starts = group_starts(group_lens, keys.len(), metrics.len())?;
    let watermark = metrics
        .iter()
        .map(|m| m.window.end)
        .max()
        .unwrap_or(i64::MIN);
    step::<T>(det, keys, states, watermark, |det, i, ctx, state| {
        det.on_metrics(
            ctx,
            state,
            &metrics[starts[i]..starts[i] + group_lens[i] as usize],
        )
    })
}

pub fn detector_on_timers<T: Detector>(
    keys: &[String],
    group_lens: &[u32],
    states: &Packed,
    times: &[i64],
) -> Result<StepOut, String> {
    with_instance::<T, _>(|det| detector_on_timers_on(det, keys, group_lens, states, times))
}

/// The same on an explicit plugin value.
pub fn detector_on_timers_on<T: Detector>(
    det: &T,
    keys: &[String],
    group_lens: &[u32],
    states: &Packed,
    times: &[i64],
) -> Result<StepOut, String> {
    let starts = group_starts(group_lens, keys.len(), times.len())?;
    step::<T>(det, keys, states, i64::MIN, |det, i, ctx, state| {
        for &t in &times[starts[i]..starts[i] + group_lens[i] as usize] {
            ctx.watermark = t;
            det.on_timer(ctx, state, t);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Description, Events};

    #[derive(Default)]
    struct Flag;

    impl Detector for Flag {
        type State = (u32, bool);
        fn describe() -> Description {
            Description::detector("flag", "0.1.0").fields(&["event_type"])
        }
        fn on_events(&self, ctx: &mut Ctx<'_>, state: &mut (u32, bool), events: &Events<'_>) {
            for t in events.text("event_type").iter() {
                state.0 += 1;
                state.1 = t == Some("keep");
            }
            if !state.1 {
                *state = Default::default();
            }
            ctx.set_timer(7);
        }
    }

    #[test]
    fn default_detector_state_comes_back_empty() {
        detector_init::<Flag>("").unwrap();
        let events = [
            serde_json::json!({"event_type": "keep"}),
            serde_json::json!({"event_type": "drop"}),
        ];
        let batch = crate::testing::batch(&["event_type"], &events);
        let keys = vec!["a".to_string(), "b".to_string()];
        let mut states = Packed::default();
        states.push(&[]);
        let mut old = Vec::new();
        encode_state(&(5u32, true), &mut old).unwrap();
        states.push(&old);
        let out = detector_on_events::<Flag>(&keys, &[1, 1], &states, &batch, 0).unwrap();
        assert_eq!(
            decode_state::<(u32, bool)>(out.states.get(0)).unwrap(),
            (1, true)
        );
        assert!(
            out.states.get(1).is_empty(),
            "default state must come back empty"
        );
        assert_eq!(out.timers, vec![(0, 7), (1, 7)]);
    }
}
