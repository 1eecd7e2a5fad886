//! Times and numbers from a query string or a request body, checked once at the edge: a time is
//! unix milliseconds in a `*_ms` parameter (or unix seconds in the names `/api/v1` took before,
//! kept one release as aliases) within [`MAX_SECS`], a window's start is not after its end, and
//! what the handlers compute from them (`to - span`, buckets) cannot overflow. A value out of
//! range is a 400 naming the parameter.

use osprey_core::{Error, Result};

/// The latest time taken, in unix seconds: the bound the Kerberos headers use (10^11 s, the
/// year 5138). Far beyond any recording; far below where milliseconds overflow.
pub const MAX_SECS: i64 = 99_999_999_999;

/// A time in unix seconds as unix milliseconds.
pub fn secs(name: &str, value: i64) -> Result<i64> {
    if !(0..=MAX_SECS).contains(&value) {
        return Err(Error::invalid(format!(
            "invalid query: {name} must be unix seconds from 0 to {MAX_SECS}, not {value}"
        )));
    }
    Ok(value * 1000)
}

/// A time in unix milliseconds, checked (the `*_ms` parameters).
pub fn millis(name: &str, value: i64) -> Result<i64> {
    let max = MAX_SECS * 1000 + 999;
    if !(0..=max).contains(&value) {
        return Err(Error::invalid(format!(
            "invalid query: {name} must be unix milliseconds from 0 to {max}, not {value}"
        )));
    }
    Ok(value)
}

/// The end of a window given in whole seconds: the last millisecond of that second.
pub fn secs_end(name: &str, value: i64) -> Result<i64> {
    Ok(secs(name, value)? + 999)
}

/// One time given as `<name>_ms` (unix ms) or, the old way, `<name>` (unix seconds; an end
/// covers its whole second when `end`), not both: unix milliseconds.
pub fn either(name: &str, ms: Option<i64>, secs_value: Option<i64>, end: bool) -> Result<Option<i64>> {
    match (ms, secs_value) {
        (Some(_), Some(_)) => Err(Error::invalid(format!("invalid query: give {name}_ms or {name}, not both"))),
        (Some(v), None) => millis(&format!("{name}_ms"), v).map(Some),
        (None, Some(v)) if end => secs_end(name, v).map(Some),
        (None, Some(v)) => secs(name, v).map(Some),
        (None, None) => Ok(None),
    }
}

/// A window from `from_ms`/`to_ms` or the old `from`/`to`, its start not after its end.
pub fn range(
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    from: Option<i64>,
    to: Option<i64>,
) -> Result<(Option<i64>, Option<i64>)> {
    let (from, to) = (either("from", from_ms, from, false)?, either("to", to_ms, to, true)?);
    window(from, to)?;
    Ok((from, to))
}

/// Refuses a window whose start is after its end.
pub fn window(from: Option<i64>, to: Option<i64>) -> Result<()> {
    match (from, to) {
        (Some(f), Some(t)) if f > t => Err(Error::invalid("invalid query: from is after to")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Extreme values, as the query parser can hand them over: each is a value or an error,
    /// never a panic or a wrapped number.
    #[test]
    fn extreme_values_are_refused_by_name() {
        for v in [i64::MIN, i64::MIN + 1, -9_223_371_000_000_000, -1, MAX_SECS + 1, i64::MAX / 1000, i64::MAX] {
            let err = secs("from", v).unwrap_err();
            assert!(err.to_string().contains("from must be unix seconds"), "{v}: {err}");
            assert!(millis("from_ms", v.saturating_mul(1000)).is_err() || v >= 0, "{v}");
            assert!(secs_end("to", v).is_err());
        }
        for v in [0, 1, 1_700_000_000, MAX_SECS] {
            assert_eq!(secs("from", v).unwrap(), v * 1000);
            assert_eq!(secs_end("to", v).unwrap(), v * 1000 + 999);
        }
        assert!(window(Some(2), Some(1)).is_err());
        assert_eq!(range(Some(5), Some(9), None, None).unwrap(), (Some(5), Some(9)));
        assert_eq!(range(None, None, Some(1), Some(2)).unwrap(), (Some(1000), Some(2999)));
        assert!(range(Some(5), None, Some(1), None).unwrap_err().to_string().contains("from_ms or from"));
        assert!(range(Some(9), Some(5), None, None).is_err());
        assert!(range(Some(i64::MIN), None, None, None).unwrap_err().to_string().contains("from_ms"));
        assert!(window(Some(1), Some(1)).is_ok() && window(None, Some(1)).is_ok());
        // Every i64 in a spread over the whole range: ms never overflow and stay ordered.
        let mut v = i64::MIN;
        while v < i64::MAX - (1 << 50) {
            if let Ok(ms) = secs("from", v) {
                assert!(ms >= 0 && ms / 1000 == v);
            }
            v += 1 << 50;
        }
    }
}
