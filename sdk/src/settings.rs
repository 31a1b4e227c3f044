//! A plugin's options in one place: a settings struct.
//!
//! ```
//! use rtap_sdk::prelude::*;
//!
//! /// Operator options.
//! #[derive(Debug, Clone, PartialEq, Deserialize, Settings)]
//! #[serde(deny_unknown_fields, default)]
//! pub struct Settings {
//!     /// Page views by one user that make a burst
//!     #[setting(min = 1, max = 100_000)]
//!     pub min_page_views: u32,
//!     /// Which percentile to watch
//!     #[setting(one_of = ["p50", "p95", "p99"])]
//!     pub percentile: String,
//! }
//!
//! impl Default for Settings {
//!     fn default() -> Self {
//!         Settings { min_page_views: 30, percentile: "p95".into() }
//!     }
//! }
//!
//! // In `describe`: `Description::detector(..).settings::<Settings>()`.
//! let d = Description::detector("bot-burst", "1.0.0").settings::<Settings>();
//! assert_eq!(d.default_config, r#"{"min_page_views":30,"percentile":"p95"}"#);
//! let schema: serde_json::Value = serde_json::from_str(&d.config_schema).unwrap();
//! assert_eq!(schema["additionalProperties"], false);
//! assert_eq!(schema["properties"]["min_page_views"]["maximum"], 100_000);
//! assert_eq!(schema["properties"]["min_page_views"]["default"], 30);
//!
//! // In `configure`: `let s: Settings = config.settings()?;`
//! let config = Config::from_json(r#"{"min_page_views": 0}"#).unwrap();
//! assert_eq!(
//!     config.settings::<Settings>().unwrap_err(),
//!     "invalid config: min_page_views must be within 1..=100000, got 0"
//! );
//! ```
//!
//! `#[derive(Settings)]` lists the struct's fields as options: each field's
//! doc comment is its `description`, `Default` gives its `default`, its type
//! its JSON type, and `#[setting(...)]` its bounds:
//!
//! - `#[setting(min = 1, max = 100_000)]` (either or both, written in the
//!   field's type: `min = 0.0` for an `f64`): the schema's `minimum` and
//!   `maximum`;
//! - `#[setting(one_of = ["p50", "p95", "p99"])]` on a `String`: its `enum`.
//!
//! [`Description::settings`](crate::Description::settings) turns the list into
//! the config schema and the default config; [`Config::settings`](crate::Config::settings)
//! enforces the same bounds, and the range of each integer type (an `i64`
//! option refuses 2^63), before it deserializes, with the messages of
//! [`check`](crate::check). So a bound is written once, and the schema the
//! operator reads is the rule that refuses.
//!
//! The struct must be `#[serde(deny_unknown_fields, default)]`: every option
//! optional with its default, a misspelt one refused (the schema's
//! `additionalProperties: false`). Options are integers, `f64`, `bool`
//! or `String`; serde attributes on fields are refused, so the option names
//! are the field names.
//!
//! The derive runs at compile time: a plugin carries the list of its options,
//! not a schema generator. What it cannot honour does not compile: a bound
//! of another type than its field,
//!
//! ```compile_fail
//! # use rtap_sdk::prelude::*;
//! #[derive(Default, Deserialize, Settings)]
//! #[serde(deny_unknown_fields, default)]
//! struct Options {
//!     #[setting(min = 0)] // an f64 takes `min = 0.0`
//!     threshold: f64,
//! }
//! ```
//!
//! a struct that takes unknown options or needs every one,
//!
//! ```compile_fail
//! # use rtap_sdk::prelude::*;
//! #[derive(Default, Deserialize, Settings)]
//! #[serde(default)]
//! struct Options {
//!     threshold: f64,
//! }
//! ```
//!
//! a field of another type, a `one_of` on a number, a serde attribute on a
//! field.

use std::fmt::{self, Write};

use serde::de::DeserializeOwned;

use crate::check;

pub use rtap_sdk_derive::Settings;

/// A struct of operator options; implement it with `#[derive(Settings)]`.
pub trait Settings: DeserializeOwned + Default {
    /// The options, in the order of the struct's fields.
    fn fields() -> Vec<Field>;
}

/// The JSON Schema of `T`'s options, as JSON text: an object schema with one
/// property per option (`type`, `enum`, `minimum`, `maximum`, `default`,
/// `description`) and no other property allowed.
pub fn schema<T: Settings>() -> String {
    let mut out = String::from(r#"{"type":"object","additionalProperties":false,"properties":{"#);
    for (i, f) in T::fields().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(&mut out, f.name);
        out.push_str(":{\"type\":");
        push_str(&mut out, f.json_type);
        if !f.one_of.is_empty() {
            out.push_str(",\"enum\":[");
            for (j, choice) in f.one_of.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                push_str(&mut out, choice);
            }
            out.push(']');
        }
        if let Some(min) = f.minimum() {
            let _ = write!(out, ",\"minimum\":{min}");
        }
        if let Some(max) = f.max {
            let _ = write!(out, ",\"maximum\":{max}");
        }
        out.push_str(",\"default\":");
        out.push_str(&f.default);
        if !f.description.is_empty() {
            out.push_str(",\"description\":");
            push_str(&mut out, f.description);
        }
        out.push('}');
    }
    out.push_str("}}");
    out
}

/// The default config, as JSON text: every option at its `Default` value.
pub fn defaults<T: Settings>() -> String {
    let mut out = String::from("{");
    for (i, f) in T::fields().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(&mut out, f.name);
        out.push(':');
        out.push_str(&f.default);
    }
    out.push('}');
    out
}

/// Check each option given in `config` against its bounds. Options of the
/// wrong type or unknown are left to deserialization.
pub(crate) fn check_bounds<T: Settings>(
    config: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), String> {
    for f in T::fields() {
        if let Some(value) = config.get(f.name) {
            f.check(value)?;
        }
    }
    Ok(())
}

/// One option of a settings struct, as `#[derive(Settings)]` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    name: &'static str,
    description: &'static str,
    json_type: &'static str,
    /// JSON text.
    default: String,
    min: Option<Num>,
    max: Option<Num>,
    one_of: &'static [&'static str],
    /// The values of an integer type.
    range: Option<(i128, i128)>,
}

impl Field {
    /// Option `name` of type `T`, `default` at its default.
    #[doc(hidden)]
    pub fn new<T: OptionType>(name: &'static str, description: &'static str, default: &T) -> Self {
        Field {
            name,
            description,
            json_type: T::JSON_TYPE,
            default: default.to_json(),
            min: None,
            max: None,
            one_of: &[],
            range: T::RANGE,
        }
    }

    #[doc(hidden)]
    pub fn min<T: OptionType>(mut self, min: T) -> Self {
        self.min = min.to_num();
        self
    }

    #[doc(hidden)]
    pub fn max<T: OptionType>(mut self, max: T) -> Self {
        self.max = max.to_num();
        self
    }

    #[doc(hidden)]
    pub fn one_of<T: TextOption>(mut self, choices: &'static [&'static str]) -> Self {
        self.one_of = choices;
        self
    }

    /// The option's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The schema's `minimum`: the one written, else 0 for an unsigned type.
    fn minimum(&self) -> Option<Num> {
        self.min
            .or_else(|| self.range.filter(|r| r.0 == 0).map(|_| Num::Int(0)))
    }

    /// Refuse a value out of the option's bounds (see the module docs).
    fn check(&self, value: &serde_json::Value) -> Result<(), String> {
        if !self.one_of.is_empty() {
            return match value.as_str() {
                Some(s) if !self.one_of.contains(&s) => check::choices(self.name, s, self.one_of),
                _ => Ok(()),
            };
        }
        let Some(n) = value.as_number() else {
            return Ok(());
        };
        let v = Num::of(n);
        let (min, max) = (self.minimum(), self.max);
        let (mut lo, mut hi) = (min, max);
        if let (Num::Int(_), Some((tlo, thi))) = (v, self.range) {
            lo = Some(lo.map_or(Num::Int(tlo), |l| l.max(Num::Int(tlo))));
            hi = Some(hi.map_or(Num::Int(thi), |h| h.min(Num::Int(thi))));
        }
        match (lo, hi) {
            (Some(lo), Some(hi)) if min.is_some() && max.is_some() => {
                check::range(self.name, v, lo..=hi)?;
            }
            (lo, hi) => {
                if let Some(lo) = lo {
                    check::at_least(self.name, v, lo)?;
                }
                if let Some(hi) = hi {
                    check::at_most(self.name, v, hi)?;
                }
            }
        }
        Ok(())
    }
}

/// A type an option can have: an integer type, `f64`, `bool` or `String`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the type of a plugin option",
    label = "use an integer type, f64, bool or String"
)]
pub trait OptionType {
    /// Its JSON Schema `type`.
    const JSON_TYPE: &'static str;
    /// The values of an integer type.
    const RANGE: Option<(i128, i128)> = None;
    /// The value as JSON text.
    fn to_json(&self) -> String;
    /// The value as a bound.
    #[doc(hidden)]
    fn to_num(&self) -> Option<Num> {
        None
    }
}

/// The type of a `one_of` option: `String`.
#[diagnostic::on_unimplemented(
    message = "`one_of` is for a `String` option, not `{Self}`",
    label = "use `min`/`max` for a number"
)]
pub trait TextOption: OptionType {}

impl TextOption for String {}

macro_rules! integer_option {
    ($($t:ty),*) => {$(
        impl OptionType for $t {
            const JSON_TYPE: &'static str = "integer";
            const RANGE: Option<(i128, i128)> = Some((<$t>::MIN as i128, <$t>::MAX as i128));
            fn to_json(&self) -> String {
                self.to_string()
            }
            fn to_num(&self) -> Option<Num> {
                Some(Num::Int(*self as i128))
            }
        }
    )*};
}
integer_option!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

macro_rules! float_option {
    ($($t:ty),*) => {$(
        impl OptionType for $t {
            const JSON_TYPE: &'static str = "number";
            fn to_json(&self) -> String {
                Num::Float(*self).to_string()
            }
            fn to_num(&self) -> Option<Num> {
                Some(Num::Float(*self))
            }
        }
    )*};
}
float_option!(f64);

impl OptionType for bool {
    const JSON_TYPE: &'static str = "boolean";
    fn to_json(&self) -> String {
        self.to_string()
    }
}

impl OptionType for String {
    const JSON_TYPE: &'static str = "string";
    fn to_json(&self) -> String {
        let mut out = String::new();
        push_str(&mut out, self);
        out
    }
}

/// `s` as a JSON string.
fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A number of JSON: compared exactly when both sides are integers, written
/// as an operator would (`500`, not `500.0`).
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn of(n: &serde_json::Number) -> Num {
        if let Some(i) = n.as_i64() {
            Num::Int(i.into())
        } else if let Some(u) = n.as_u64() {
            Num::Int(u.into())
        } else {
            Num::Float(n.as_f64().unwrap_or(f64::NAN))
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    fn max(self, other: Num) -> Num {
        if other > self { other } else { self }
    }

    fn min(self, other: Num) -> Num {
        if other < self { other } else { self }
    }
}

impl PartialEq for Num {
    fn eq(&self, other: &Num) -> bool {
        self.partial_cmp(other) == Some(std::cmp::Ordering::Equal)
    }
}

impl PartialOrd for Num {
    fn partial_cmp(&self, other: &Num) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a.partial_cmp(b),
            _ => self.as_f64().partial_cmp(&other.as_f64()),
        }
    }
}

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            // Every integer of JSON fits an i64 or a u64.
            Num::Int(i) => match i64::try_from(i) {
                Ok(i) => i.fmt(f),
                Err(_) => (i as u64).fmt(f),
            },
            // Rust writes a float without exponent, and a whole one without
            // `.0`: valid JSON for every finite value.
            Num::Float(x) if x.is_finite() => x.fmt(f),
            Num::Float(_) => f.write_str("null"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Description};
    use serde::Deserialize;
    use serde_json::{Value, json};

    /// Options of every kind.
    #[derive(Debug, PartialEq, Deserialize, Settings)]
    #[serde(deny_unknown_fields, default)]
    struct Opts {
        /// How many
        #[setting(min = 1, max = 100_000)]
        count: u32,
        /// How long (ms)
        #[setting(min = 1)]
        within_ms: i64,
        /// A share
        #[setting(min = 0.0, max = 1.0)]
        share: f64,
        /// A latency
        /// (ms), over two lines
        #[setting(min = 0.0)]
        latency_ms: f64,
        /// Which "one"
        #[setting(one_of = ["p50", "p95", "p99"])]
        pick: String,
        /// No bound but its type's
        small: u8,
        plain: u64,
        #[setting(max = -1)]
        negative: i32,
        on: bool,
    }

    impl Default for Opts {
        fn default() -> Self {
            Opts {
                count: 30,
                within_ms: 10_000,
                share: 0.01,
                latency_ms: 500.0,
                pick: "p95".into(),
                small: 3,
                plain: 7,
                negative: -5,
                on: true,
            }
        }
    }

    fn settings(json: &str) -> Result<Opts, String> {
        Config::from_json(json)?.settings::<Opts>()
    }

    #[test]
    fn schema_is_the_object_with_every_option() {
        let text = schema::<Opts>();
        let schema: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            schema,
            json!({
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "count": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 30, "description": "How many"},
                    "within_ms": {"type": "integer", "minimum": 1, "default": 10000, "description": "How long (ms)"},
                    "share": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.01, "description": "A share"},
                    "latency_ms": {"type": "number", "minimum": 0, "default": 500, "description": "A latency (ms), over two lines"},
                    "pick": {"type": "string", "enum": ["p50", "p95", "p99"], "default": "p95", "description": "Which \"one\""},
                    "small": {"type": "integer", "minimum": 0, "default": 3, "description": "No bound but its type's"},
                    "plain": {"type": "integer", "minimum": 0, "default": 7},
                    "negative": {"type": "integer", "maximum": -1, "default": -5},
                    "on": {"type": "boolean", "default": true}
                }
            })
        );
        // Written as an operator would: whole numbers without `.0`.
        assert!(text.contains(r#""latency_ms":{"type":"number","minimum":0,"default":500,"#));
        let names: Vec<&str> = Opts::fields().iter().map(Field::name).collect();
        assert_eq!(
            names,
            [
                "count",
                "within_ms",
                "share",
                "latency_ms",
                "pick",
                "small",
                "plain",
                "negative",
                "on"
            ]
        );
    }

    #[test]
    fn defaults_are_every_option_at_its_default() {
        let text = defaults::<Opts>();
        assert_eq!(
            text,
            r#"{"count":30,"within_ms":10000,"share":0.01,"latency_ms":500,"pick":"p95","small":3,"plain":7,"negative":-5,"on":true}"#
        );
        assert_eq!(settings(&text), Ok(Opts::default()));
        assert_eq!(settings("{}"), Ok(Opts::default()));
        let d = Description::detector("x", "1.0.0").settings::<Opts>();
        assert_eq!(
            (d.config_schema, d.default_config),
            (schema::<Opts>(), text)
        );
    }

    #[test]
    fn bounds_are_enforced_with_the_field_and_the_bound() {
        let err = |json: &str| settings(json).unwrap_err();
        assert_eq!(
            err(r#"{"count": 0}"#),
            "invalid config: count must be within 1..=100000, got 0"
        );
        assert_eq!(
            err(r#"{"count": 100001}"#),
            "invalid config: count must be within 1..=100000, got 100001"
        );
        assert_eq!(
            err(r#"{"count": 5000000000}"#),
            "invalid config: count must be within 1..=100000, got 5000000000"
        );
        assert_eq!(
            err(r#"{"within_ms": 0}"#),
            "invalid config: within_ms must be at least 1, got 0"
        );
        assert_eq!(
            err(r#"{"within_ms": -5}"#),
            "invalid config: within_ms must be at least 1, got -5"
        );
        assert_eq!(
            err(r#"{"within_ms": 9223372036854775808}"#),
            "invalid config: within_ms must be at most 9223372036854775807, got 9223372036854775808"
        );
        assert_eq!(
            err(r#"{"share": 1.5}"#),
            "invalid config: share must be within 0..=1, got 1.5"
        );
        assert_eq!(
            err(r#"{"share": -0.01}"#),
            "invalid config: share must be within 0..=1, got -0.01"
        );
        assert_eq!(
            err(r#"{"latency_ms": -1}"#),
            "invalid config: latency_ms must be at least 0, got -1"
        );
        assert_eq!(
            err(r#"{"pick": "p90"}"#),
            "invalid config: pick must be p50, p95 or p99, got `p90`"
        );
        assert_eq!(
            err(r#"{"small": 256}"#),
            "invalid config: small must be at most 255, got 256"
        );
        assert_eq!(
            err(r#"{"plain": -1}"#),
            "invalid config: plain must be at least 0, got -1"
        );
        assert_eq!(
            err(r#"{"negative": 0}"#),
            "invalid config: negative must be at most -1, got 0"
        );
        assert_eq!(
            err(r#"{"negative": -2147483649}"#),
            "invalid config: negative must be at least -2147483648, got -2147483649"
        );
        let ok = settings(
            r#"{"count": 100000, "within_ms": 9223372036854775807, "share": 1, "latency_ms": 0,
                "pick": "p99", "small": 255, "plain": 18446744073709551615, "negative": -1}"#,
        )
        .unwrap();
        assert_eq!(
            (ok.count, ok.within_ms, ok.share, ok.pick.as_str(), ok.plain),
            (100_000, i64::MAX, 1.0, "p99", u64::MAX)
        );
    }

    #[test]
    fn types_and_unknown_options_are_left_to_serde() {
        let err = settings(r#"{"count": "many"}"#).unwrap_err();
        assert!(
            err.starts_with("invalid config: invalid type: string \"many\""),
            "{err}"
        );
        let err = settings(r#"{"pick": 95}"#).unwrap_err();
        assert!(
            err.starts_with("invalid config: invalid type: integer `95`"),
            "{err}"
        );
        let err = settings(r#"{"cuont": 3}"#).unwrap_err();
        assert!(
            err.starts_with("invalid config: unknown field `cuont`"),
            "{err}"
        );
        let err = settings(r#"{"within_ms": 1.5}"#).unwrap_err();
        assert!(err.contains("invalid type: floating point"), "{err}");
    }

    #[test]
    fn json_text_is_escaped() {
        let mut out = String::new();
        push_str(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
        assert_eq!(
            serde_json::from_str::<String>(&out).unwrap(),
            "a\"b\\c\nd\u{1}é"
        );
        assert_eq!(f64::NAN.to_json(), "null");
        assert_eq!(1e21f64.to_json().parse::<f64>().unwrap(), 1e21);
    }
}
