//! Kubernetes resource quantities (`k8s.io/apimachinery/pkg/api/resource.Quantity`).
//!
//! Syntax: `<sign?><number><suffix>`, where the number is `123`, `1.5`, `.5` or `5.` and the
//! suffix is a binary SI suffix (`Ki Mi Gi Ti Pi Ei`), a decimal SI suffix (`n u m k M G T P E`,
//! or none), or a decimal exponent (`e3`, `E-2`). A quantity is held exactly as a whole number of
//! nano-units; like upstream, precision finer than a nano-unit is rounded up (away from zero), and
//! [`Quantity::value`] / [`Quantity::milli_value`] round up to whole units / milli-units.
//! Magnitudes above `i64::MAX` whole units (about 8 Ei) are rejected.

use std::fmt;
use std::str::FromStr;

/// Why a quantity string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("empty quantity")]
    Empty,
    #[error("expected a number such as 128, 1.5 or .5")]
    ExpectedNumber,
    #[error("unknown suffix {0:?} (use Ki, Mi, Gi, Ti, Pi, Ei, n, u, m, k, M, G, T, P, E or eN)")]
    UnknownSuffix(String),
    #[error("quantity is out of the supported range")]
    OutOfRange,
    #[error("too many significant digits")]
    TooPrecise,
}

/// An exact Kubernetes quantity, stored as a count of nano-units (`1` = `1n`, `1000000000` = `1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Quantity {
    nanos: i128,
}

const NANOS_PER_UNIT: i128 = 1_000_000_000;
const NANOS_PER_MILLI: i128 = 1_000_000;
/// Largest accepted magnitude, in nano-units.
const MAX_NANOS: u128 = i64::MAX as u128 * 1_000_000_000;
/// Significant digits beyond this cannot be held exactly.
const MAX_DIGITS: usize = 36;

impl Quantity {
    /// A quantity of exactly `units` whole units (bytes, cores, ...).
    #[must_use]
    pub const fn from_units(units: i64) -> Self {
        Self {
            nanos: units as i128 * NANOS_PER_UNIT,
        }
    }

    /// A quantity of exactly `millis` milli-units (millicores, ...).
    #[must_use]
    pub const fn from_millis(millis: i64) -> Self {
        Self {
            nanos: millis as i128 * NANOS_PER_MILLI,
        }
    }

    /// The exact amount in nano-units.
    #[must_use]
    pub const fn as_nanos(&self) -> i128 {
        self.nanos
    }

    /// Whole units (bytes for memory and storage, cores for CPU), rounded up away from zero as
    /// upstream's `Quantity.Value()` does: `"0.1Ki"` is 103 bytes.
    #[must_use]
    pub fn value(&self) -> i64 {
        // |nanos| <= i64::MAX * 1e9, so the rounded quotient always fits.
        div_away_from_zero(self.nanos, NANOS_PER_UNIT) as i64
    }

    /// Milli-units (millicores for CPU), rounded up away from zero like `Quantity.MilliValue()`,
    /// saturating at the `i64` range.
    #[must_use]
    pub fn milli_value(&self) -> i64 {
        let millis = div_away_from_zero(self.nanos, NANOS_PER_MILLI);
        i64::try_from(millis).unwrap_or(if millis < 0 { i64::MIN } else { i64::MAX })
    }

    #[must_use]
    pub const fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    #[must_use]
    pub const fn is_zero(&self) -> bool {
        self.nanos == 0
    }
}

fn div_away_from_zero(value: i128, divisor: i128) -> i128 {
    let quotient = value / divisor;
    match value % divisor {
        0 => quotient,
        _ if value > 0 => quotient + 1,
        _ => quotient - 1,
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse(text)
    }
}

fn parse(text: &str) -> Result<Quantity, QuantityError> {
    if text.is_empty() {
        return Err(QuantityError::Empty);
    }
    let (negative, rest) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    let int_digits = &rest[..int_len];
    let mut rest = &rest[int_len..];
    let mut frac_digits = "";
    if let Some(after_dot) = rest.strip_prefix('.') {
        let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        frac_digits = &after_dot[..frac_len];
        rest = &after_dot[frac_len..];
    }
    if int_digits.is_empty() && frac_digits.is_empty() {
        return Err(QuantityError::ExpectedNumber);
    }
    let (exp10, exp2) = parse_suffix(rest)?;
    let magnitude = scale_to_nanos(int_digits, frac_digits, exp10, exp2)?;
    let nanos = i128::try_from(magnitude).map_err(|_| QuantityError::OutOfRange)?;
    Ok(Quantity {
        nanos: if negative { -nanos } else { nanos },
    })
}

/// Returns the suffix's power of ten and power of two.
fn parse_suffix(suffix: &str) -> Result<(i64, u32), QuantityError> {
    let unknown = || QuantityError::UnknownSuffix(suffix.to_owned());
    Ok(match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E']).ok_or_else(unknown)?;
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(unknown());
            }
            let value: i64 = exponent.parse().map_err(|_| QuantityError::OutOfRange)?;
            if value.abs() > 1000 {
                return Err(QuantityError::OutOfRange);
            }
            (value, 0)
        }
    })
}

/// `int.frac * 10^exp10 * 2^exp2`, in nano-units, rounded up to a whole nano-unit.
fn scale_to_nanos(int: &str, frac: &str, exp10: i64, exp2: u32) -> Result<u128, QuantityError> {
    let joined = format!("{int}{frac}");
    let mut digits = joined.trim_start_matches('0');
    // Value = digits * 10^(exp10 + 9 - frac.len()) nano-units, before the binary factor.
    let mut power = exp10 + 9 - frac.len() as i64;
    let trimmed = digits.trim_end_matches('0');
    power += (digits.len() - trimmed.len()) as i64;
    digits = trimmed;
    if digits.is_empty() {
        return Ok(0);
    }
    if digits.len() > MAX_DIGITS {
        return Err(QuantityError::TooPrecise);
    }
    let mantissa: u128 = digits.parse().map_err(|_| QuantityError::TooPrecise)?;
    let scaled = mantissa
        .checked_mul(1u128 << exp2)
        .ok_or(QuantityError::OutOfRange)?;
    let nanos = if power >= 0 {
        let factor = u32::try_from(power)
            .ok()
            .and_then(|p| 10u128.checked_pow(p))
            .ok_or(QuantityError::OutOfRange)?;
        scaled
            .checked_mul(factor)
            .ok_or(QuantityError::OutOfRange)?
    } else {
        match u32::try_from(-power)
            .ok()
            .and_then(|p| 10u128.checked_pow(p))
        {
            Some(divisor) => scaled / divisor + u128::from(scaled % divisor != 0),
            // The divisor exceeds u128, so it exceeds `scaled`: a positive sliver, rounded up.
            None => 1,
        }
    };
    if nanos > MAX_NANOS {
        return Err(QuantityError::OutOfRange);
    }
    Ok(nanos)
}

impl fmt::Display for Quantity {
    /// An exact, parseable form: whole amounts use the largest exact binary suffix (`1536Mi`) or
    /// none, fractional amounts use `m`, `u` or `n`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.nanos;
        if nanos % NANOS_PER_UNIT == 0 {
            let units = nanos / NANOS_PER_UNIT;
            if units != 0 {
                let binary = [
                    ("Ei", 60),
                    ("Pi", 50),
                    ("Ti", 40),
                    ("Gi", 30),
                    ("Mi", 20),
                    ("Ki", 10),
                ];
                for (suffix, shift) in binary {
                    if units % (1i128 << shift) == 0 {
                        return write!(f, "{}{suffix}", units >> shift);
                    }
                }
            }
            write!(f, "{units}")
        } else if nanos % NANOS_PER_MILLI == 0 {
            write!(f, "{}m", nanos / NANOS_PER_MILLI)
        } else if nanos % 1000 == 0 {
            write!(f, "{}u", nanos / 1000)
        } else {
            write!(f, "{nanos}n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(text: &str) -> Quantity {
        text.parse().unwrap()
    }

    #[test]
    fn parses_units_exactly() {
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("1", 1),
            ("+1", 1),
            ("-1", -1),
            ("10Mi", 10 * 1024 * 1024),
            ("1.5Gi", 1_610_612_736),
            ("100Mi", 104_857_600),
            ("1Ki", 1024),
            ("1Ei", 1 << 60),
            ("7Ei", 7 << 60),
            ("1k", 1000),
            ("1M", 1_000_000),
            ("1G", 1_000_000_000),
            ("150G", 150_000_000_000),
            ("1E", 1_000_000_000_000_000_000),
            ("1e3", 1000),
            ("1E3", 1000),
            ("1e+3", 1000),
            ("12e-1", 2),
            ("1.5", 2),
            ("5.", 5),
            (".5", 1),
            ("0.1Ki", 103),
            ("1m", 1),
            ("-1.5", -2),
            ("0000123", 123),
            ("1.000000000000000000000000000000000000000000000000", 1),
            ("9223372036854775807", i64::MAX),
        ];
        for (text, want) in cases {
            assert_eq!(q(text).value(), *want, "{text}");
        }
    }

    #[test]
    fn parses_millis_exactly() {
        let cases: &[(&str, i64)] = &[
            ("100m", 100),
            ("1", 1000),
            ("1.5", 1500),
            ("0.25", 250),
            ("2500m", 2500),
            ("0.1m", 1),
            ("1u", 1),
            ("1000u", 1),
            ("1001u", 2),
            ("1n", 1),
            ("1e-3", 1),
            ("-100m", -100),
        ];
        for (text, want) in cases {
            assert_eq!(q(text).milli_value(), *want, "{text}");
        }
    }

    #[test]
    fn keeps_nanos_and_rounds_up_beyond() {
        assert_eq!(q("1n").as_nanos(), 1);
        assert_eq!(q("0.5n").as_nanos(), 1);
        assert_eq!(q("-0.5n").as_nanos(), -1);
        assert_eq!(q("1e-30").as_nanos(), 1);
        assert_eq!(q("1e-1000").as_nanos(), 1);
        assert_eq!(q("0e1000").as_nanos(), 0);
        assert_eq!(q("1.23456789012Mi").as_nanos(), 1_294_538_259_950_470);
    }

    #[test]
    fn rejects_bad_syntax() {
        let cases: &[(&str, QuantityError)] = &[
            ("", QuantityError::Empty),
            ("-", QuantityError::ExpectedNumber),
            ("Mi", QuantityError::ExpectedNumber),
            (".", QuantityError::ExpectedNumber),
            (".Mi", QuantityError::ExpectedNumber),
            (" 1", QuantityError::ExpectedNumber),
            ("1 ", QuantityError::UnknownSuffix(" ".into())),
            ("1 Mi", QuantityError::UnknownSuffix(" Mi".into())),
            ("1mi", QuantityError::UnknownSuffix("mi".into())),
            ("1K", QuantityError::UnknownSuffix("K".into())),
            ("1KiB", QuantityError::UnknownSuffix("KiB".into())),
            ("1.5.5", QuantityError::UnknownSuffix(".5".into())),
            ("1Mi1", QuantityError::UnknownSuffix("Mi1".into())),
            ("1e", QuantityError::UnknownSuffix("e".into())),
            ("1e-", QuantityError::UnknownSuffix("e-".into())),
            ("1e1.5", QuantityError::UnknownSuffix("e1.5".into())),
            ("--1", QuantityError::ExpectedNumber),
            ("10%", QuantityError::UnknownSuffix("%".into())),
            ("9223372036854775808", QuantityError::OutOfRange),
            ("8Ei", QuantityError::OutOfRange),
            ("1e19", QuantityError::OutOfRange),
            ("1e1001", QuantityError::OutOfRange),
            (
                "1234567890123456789012345678901234567",
                QuantityError::TooPrecise,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<Quantity>().as_ref(), Err(want), "{text}");
        }
    }

    #[test]
    fn displays_exactly() {
        let cases: &[(&str, &str)] = &[
            ("0", "0"),
            ("1", "1"),
            ("1.5Gi", "1536Mi"),
            ("1024", "1Ki"),
            ("1000", "1000"),
            ("100m", "100m"),
            ("1.5u", "1500n"),
            ("-2Gi", "-2Gi"),
        ];
        for (text, want) in cases {
            assert_eq!(q(text).to_string(), *want, "{text}");
        }
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(
            nanos in -(i128::from(i64::MAX) * 1_000_000_000)..=(i128::from(i64::MAX) * 1_000_000_000)
        ) {
            let quantity = Quantity { nanos };
            prop_assert_eq!(quantity.to_string().parse::<Quantity>(), Ok(quantity));
        }

        #[test]
        fn integer_with_suffix_is_exact(n in 0i64..1_000_000, suffix in 0usize..12) {
            let (text, factor) = [("", 1i128), ("k", 1_000), ("M", 1_000_000),
                ("G", 1_000_000_000), ("T", 1_000_000_000_000), ("Ki", 1 << 10), ("Mi", 1 << 20),
                ("Gi", 1 << 30), ("Ti", 1 << 40), ("m", 0), ("u", 0), ("n", 0)][suffix];
            let parsed: Quantity = format!("{n}{text}").parse().unwrap();
            let want_nanos = match text {
                "m" => i128::from(n) * 1_000_000,
                "u" => i128::from(n) * 1_000,
                "n" => i128::from(n),
                _ => i128::from(n) * factor * 1_000_000_000,
            };
            prop_assert_eq!(parsed.as_nanos(), want_nanos);
        }

        #[test]
        fn decimal_fraction_is_exact(whole in 0i64..1_000_000, frac in 0u32..1000) {
            let parsed: Quantity = format!("{whole}.{frac:03}").parse().unwrap();
            prop_assert_eq!(parsed.milli_value(), whole * 1000 + i64::from(frac));
        }
    }
}
