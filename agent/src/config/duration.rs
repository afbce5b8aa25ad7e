//! Go duration syntax (`time.ParseDuration`, as used by `metav1.Duration` in the kubelet's config).
//!
//! A duration is an optional sign followed by one or more `<number><unit>` pairs, where the number
//! may carry a fraction and the unit is one of `ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`:
//! `"1m0s"`, `"100ms"`, `"1h30m"`, `"1.5h"`. The bare string `"0"` is also accepted. Negative
//! durations parse in Go but no kubelet field kernlet supports accepts one, so they are rejected.

use std::fmt::Write as _;
use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("expected a number at {0:?}")]
    ExpectedNumber(String),
    #[error("missing unit after {0:?} (use ns, us, ms, s, m or h)")]
    MissingUnit(String),
    #[error("unknown unit {0:?} (use ns, us, ms, s, m or h)")]
    UnknownUnit(String),
    #[error("duration is too large (the maximum is about 292 years)")]
    Overflow,
    #[error("negative durations are not allowed")]
    Negative,
}

const NANOS_PER_MICRO: u128 = 1_000;
const NANOS_PER_MILLI: u128 = 1_000_000;
const NANOS_PER_SEC: u128 = 1_000_000_000;
const NANOS_PER_MIN: u128 = 60 * NANOS_PER_SEC;
const NANOS_PER_HOUR: u128 = 60 * NANOS_PER_MIN;
/// Go durations are an `int64` of nanoseconds.
const MAX_NANOS: u128 = i64::MAX as u128;

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        // U+00B5 (micro sign) and U+03BC (Greek mu) are both accepted by Go.
        "us" | "\u{b5}s" | "\u{3bc}s" => NANOS_PER_MICRO,
        "ms" => NANOS_PER_MILLI,
        "s" => NANOS_PER_SEC,
        "m" => NANOS_PER_MIN,
        "h" => NANOS_PER_HOUR,
        _ => return None,
    })
}

/// Parses a Go duration string into a non-negative [`Duration`].
///
/// Fractions finer than a nanosecond are truncated, as Go does.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        Some(_) => (false, text),
        None => return Err(DurationError::Empty),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(DurationError::ExpectedNumber(text.to_owned()));
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_digits = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_digits = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_digits = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(DurationError::ExpectedNumber(rest.to_owned()));
        }
        let unit_len = rest
            .char_indices()
            .find(|&(_, c)| c == '.' || c.is_ascii_digit())
            .map_or(rest.len(), |(i, _)| i);
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        if unit.is_empty() {
            return Err(DurationError::MissingUnit(text.to_owned()));
        }
        let unit = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit(unit.to_owned()))?;
        let whole = parse_digits(int_digits)?;
        let mut part = whole.checked_mul(unit).ok_or(DurationError::Overflow)?;
        part = part
            .checked_add(fraction_nanos(frac_digits, unit))
            .ok_or(DurationError::Overflow)?;
        total = total.checked_add(part).ok_or(DurationError::Overflow)?;
        if total > MAX_NANOS {
            return Err(DurationError::Overflow);
        }
    }
    if negative && total != 0 {
        return Err(DurationError::Negative);
    }
    let secs = (total / NANOS_PER_SEC) as u64;
    let nanos = (total % NANOS_PER_SEC) as u32;
    Ok(Duration::new(secs, nanos))
}

fn parse_digits(digits: &str) -> Result<u128, DurationError> {
    let mut value: u128 = 0;
    for b in digits.bytes() {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u128::from(b - b'0')))
            .filter(|v| *v <= MAX_NANOS)
            .ok_or(DurationError::Overflow)?;
    }
    Ok(value)
}

/// `0.<digits> * unit`, truncated to whole nanoseconds. Digits past the unit's precision cannot
/// contribute a whole nanosecond, so only the first 20 are looked at.
fn fraction_nanos(digits: &str, unit: u128) -> u128 {
    let mut numerator: u128 = 0;
    let mut denominator: u128 = 1;
    for b in digits.bytes().take(20) {
        numerator = numerator * 10 + u128::from(b - b'0');
        denominator *= 10;
    }
    numerator * unit / denominator
}

/// Formats a duration the way Go's `time.Duration.String` does: `"0s"`, `"100ms"`, `"1m0s"`,
/// `"1h30m0s"`, `"1.5s"`.
#[must_use]
pub fn format_duration(duration: Duration) -> String {
    let total = duration.as_nanos();
    if total == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    if total < NANOS_PER_SEC {
        let (unit_nanos, unit) = if total < NANOS_PER_MICRO {
            (1, "ns")
        } else if total < NANOS_PER_MILLI {
            (NANOS_PER_MICRO, "\u{b5}s")
        } else {
            (NANOS_PER_MILLI, "ms")
        };
        write_fixed(&mut out, total, unit_nanos);
        out.push_str(unit);
        return out;
    }
    let hours = total / NANOS_PER_HOUR;
    let minutes = (total / NANOS_PER_MIN) % 60;
    let rest = total % NANOS_PER_MIN;
    if hours > 0 {
        let _ = write!(out, "{hours}h{minutes}m");
    } else if minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    write_fixed(&mut out, rest, NANOS_PER_SEC);
    out.push('s');
    out
}

/// Writes `value / unit` with the fraction's trailing zeros removed.
fn write_fixed(out: &mut String, value: u128, unit: u128) {
    let _ = write!(out, "{}", value / unit);
    let frac = value % unit;
    if frac != 0 {
        let width = unit.ilog10() as usize;
        let digits = format!("{frac:0width$}");
        let _ = write!(out, ".{}", digits.trim_end_matches('0'));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_go_syntax() {
        let cases: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("-0s", Duration::ZERO),
            ("+5s", secs(5)),
            ("1m0s", secs(60)),
            ("1m", secs(60)),
            ("2m", secs(120)),
            ("100ms", ms(100)),
            ("1h30m", secs(5400)),
            ("1h30m0s", secs(5400)),
            ("1.5h", secs(5400)),
            (".5s", ms(500)),
            ("5.s", secs(5)),
            ("1.000000001s", Duration::new(1, 1)),
            ("1.0000000019s", Duration::new(1, 1)),
            ("10us", Duration::from_micros(10)),
            ("10\u{b5}s", Duration::from_micros(10)),
            ("10\u{3bc}s", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("1h1m1s1ms1us1ns", Duration::new(3661, 1_001_001)),
            ("300s", secs(300)),
            ("4h", secs(4 * 3600)),
            (
                "2562047h47m16.854775807s",
                Duration::new(9_223_372_036, 854_775_807),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text).as_ref(), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_bad_syntax() {
        let cases: &[(&str, DurationError)] = &[
            ("", DurationError::Empty),
            ("-", DurationError::ExpectedNumber("-".into())),
            ("s", DurationError::ExpectedNumber("s".into())),
            (".s", DurationError::ExpectedNumber("s".into())),
            ("5", DurationError::MissingUnit("5".into())),
            ("1m5", DurationError::MissingUnit("1m5".into())),
            ("5 s", DurationError::UnknownUnit(" s".into())),
            ("5d", DurationError::UnknownUnit("d".into())),
            ("5S", DurationError::UnknownUnit("S".into())),
            ("1m 0s", DurationError::UnknownUnit("m ".into())),
            ("-1s", DurationError::Negative),
            ("2562047h47m16.854775808s", DurationError::Overflow),
            ("99999999999999999999999h", DurationError::Overflow),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text).as_ref(), Err(want), "{text}");
        }
    }

    #[test]
    fn formats_like_go() {
        let cases: &[(Duration, &str)] = &[
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_nanos(1500), "1.5\u{b5}s"),
            (ms(100), "100ms"),
            (Duration::from_micros(1500), "1.5ms"),
            (secs(1), "1s"),
            (ms(1500), "1.5s"),
            (secs(60), "1m0s"),
            (secs(5400), "1h30m0s"),
            (Duration::new(3661, 1), "1h1m1.000000001s"),
        ];
        for (duration, want) in cases {
            assert_eq!(format_duration(*duration), *want);
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(nanos in 0u64..=i64::MAX as u64) {
            let duration = Duration::from_nanos(nanos);
            prop_assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }

        #[test]
        fn whole_units_parse_exactly(n in 0u64..1_000_000, unit in 0usize..6) {
            let (suffix, nanos) = [("ns", 1), ("us", 1_000), ("ms", 1_000_000),
                ("s", 1_000_000_000), ("m", 60_000_000_000), ("h", 3_600_000_000_000u64)][unit];
            prop_assert_eq!(
                parse_duration(&format!("{n}{suffix}")),
                Ok(Duration::from_nanos(n * nanos))
            );
        }
    }
}
