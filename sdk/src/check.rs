//! Config checks with one wording: `invalid config: FIELD must be ..., got VALUE`.
//!
//! [`Config::settings`](crate::Config::settings) applies the bounds written on
//! a settings struct (`#[schemars(range(min = 1, max = 100_000))]`, an `enum`
//! of allowed strings) with these functions; call them from `configure` for a
//! check the schema cannot state, so every refusal reads the same.

use std::fmt::{Display, Write};
use std::ops::RangeInclusive;

/// `value` if it lies within `range`, else
/// `invalid config: FIELD must be within LO..=HI, got VALUE`.
///
/// ```
/// # use rtap_sdk::check;
/// assert_eq!(check::range("min_page_views", 30, 1..=100_000), Ok(30));
/// assert_eq!(
///     check::range("min_page_views", 0, 1..=100_000).unwrap_err(),
///     "invalid config: min_page_views must be within 1..=100000, got 0"
/// );
/// ```
pub fn range<T: PartialOrd + Display>(
    field: &str,
    value: T,
    range: RangeInclusive<T>,
) -> Result<T, String> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "invalid config: {field} must be within {}..={}, got {value}",
            range.start(),
            range.end()
        ))
    }
}

/// `value` if it is at least `min`, else
/// `invalid config: FIELD must be at least MIN, got VALUE`.
pub fn at_least<T: PartialOrd + Display>(field: &str, value: T, min: T) -> Result<T, String> {
    if value >= min {
        Ok(value)
    } else {
        Err(format!(
            "invalid config: {field} must be at least {min}, got {value}"
        ))
    }
}

/// `value` if it is at most `max`, else
/// `invalid config: FIELD must be at most MAX, got VALUE`.
pub fn at_most<T: PartialOrd + Display>(field: &str, value: T, max: T) -> Result<T, String> {
    if value <= max {
        Ok(value)
    } else {
        Err(format!(
            "invalid config: {field} must be at most {max}, got {value}"
        ))
    }
}

/// `Ok` if `value` is one of `allowed`, else
/// `invalid config: FIELD must be A, B or C, got `VALUE``.
pub fn one_of<T: PartialEq + Display>(field: &str, value: &T, allowed: &[T]) -> Result<(), String> {
    if allowed.contains(value) {
        Ok(())
    } else {
        choices(field, value, allowed)
    }
}

/// The refusal of [`one_of`], for a value known not to be allowed.
pub(crate) fn choices<V: Display + ?Sized, T: Display>(
    field: &str,
    value: &V,
    allowed: &[T],
) -> Result<(), String> {
    let mut list = String::new();
    for (i, choice) in allowed.iter().enumerate() {
        if i > 0 {
            list.push_str(if i + 1 == allowed.len() { " or " } else { ", " });
        }
        let _ = write!(list, "{choice}");
    }
    Err(format!(
        "invalid config: {field} must be {list}, got `{value}`"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_names_the_field_and_the_bounds() {
        assert_eq!(range("n", 1, 1..=3), Ok(1));
        assert_eq!(range("n", 3, 1..=3), Ok(3));
        assert_eq!(
            range("n", 4, 1..=3).unwrap_err(),
            "invalid config: n must be within 1..=3, got 4"
        );
        assert_eq!(
            range("threshold", -0.5, 0.0..=1.0).unwrap_err(),
            "invalid config: threshold must be within 0..=1, got -0.5"
        );
        assert!(range("x", f64::NAN, 0.0..=1.0).is_err());
    }

    #[test]
    fn one_sided_bounds() {
        assert_eq!(at_least("within_ms", 1, 1), Ok(1));
        assert_eq!(
            at_least("within_ms", 0, 1).unwrap_err(),
            "invalid config: within_ms must be at least 1, got 0"
        );
        assert_eq!(at_most("for_ms", 5, 5), Ok(5));
        assert_eq!(
            at_most("for_ms", 6u64, 5).unwrap_err(),
            "invalid config: for_ms must be at most 5, got 6"
        );
    }

    #[test]
    fn one_of_lists_the_choices() {
        assert_eq!(one_of("p", &"p95", &["p50", "p95", "p99"]), Ok(()));
        assert_eq!(
            one_of("percentile", &"p90", &["p50", "p95", "p99"]).unwrap_err(),
            "invalid config: percentile must be p50, p95 or p99, got `p90`"
        );
        assert_eq!(
            one_of("mode", &"b", &["a"]).unwrap_err(),
            "invalid config: mode must be a, got `b`"
        );
    }
}
