//! Human-readable durations: `"30s"`, `"250ms"`, `"2m"`, `"1h"`, `"1.5s"`.
//!
//! [`parse`] and [`format`] are exact inverses for every [`Duration`]:
//! `parse(&format(d)) == Ok(d)`. The [`serde`] submodule plugs them into
//! `#[serde(with = "crate::duration::serde")]` fields.

use std::time::Duration;

/// Units accepted by [`parse`], longest suffix first so `"ms"` wins over `"s"`
/// and `"m"`, with their length in nanoseconds.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("ms", 1_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
];

/// Units used by [`format`], largest first.
const FORMAT_UNITS: &[(&str, u128)] = &[
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// Parses a duration such as `"30s"`, `"250ms"`, `"1.5s"`, `"2m"` or `"1h"`.
///
/// The number may have a fractional part; `ns` and `us` are accepted too so
/// that everything [`format`] writes reads back. The error is a complete
/// sentence naming the input and the accepted forms.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "invalid duration {text:?}: expected a number followed by ms, s, m or h \
             (e.g. \"30s\", \"250ms\")"
        )
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(invalid)?;
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.trim_start();
    let &(_, unit_nanos) = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .ok_or_else(invalid)?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(invalid());
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let too_long = || format!("invalid duration {text:?}: too long");
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_long())?
    };
    let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(too_long)?;
    // Fractional part, exact to the nanosecond (digits beyond are dropped).
    let mut scale = unit_nanos;
    for digit in fraction.bytes() {
        scale /= 10;
        if scale == 0 {
            break;
        }
        nanos += u128::from(digit - b'0') * scale;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| too_long())?;
    // The remainder is < 1e9 and therefore fits.
    let subsec = u32::try_from(nanos % 1_000_000_000).map_err(|_| too_long())?;
    Ok(Duration::new(secs, subsec))
}

/// Formats a duration with the largest unit that represents it exactly,
/// e.g. `"30s"`, `"1500ms"`, `"2m"`, `"250us"`, `"0s"`.
pub(crate) fn format(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    let (unit, size) = FORMAT_UNITS
        .iter()
        .find(|(_, size)| nanos.is_multiple_of(*size))
        .copied()
        .unwrap_or(("ns", 1));
    format!("{}{unit}", nanos / size)
}

/// Serde adapter: durations are strings like `"30s"` in TOML.
pub(crate) mod serde {
    use std::fmt;
    use std::time::Duration;

    use ::serde::de::{self, Visitor};
    use ::serde::{Deserializer, Serializer};

    /// Writes the duration as a string that [`super::parse`] reads back.
    pub(crate) fn serialize<S: Serializer>(
        duration: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format(*duration))
    }

    /// Reads a duration string such as `"30s"`.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        deserializer.deserialize_str(DurationVisitor)
    }

    struct DurationVisitor;

    impl DurationVisitor {
        fn not_a_string<E: de::Error>(got: impl fmt::Display) -> E {
            E::custom(format!(
                "expected a duration string such as \"30s\" or \"250ms\", got {got}"
            ))
        }
    }

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration string such as \"30s\" or \"250ms\"")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            super::parse(v).map_err(E::custom)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            Err(Self::not_a_string(format_args!(
                "the bare number {v} (add a unit, e.g. \"{v}s\")"
            )))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Err(Self::not_a_string(format_args!(
                "the bare number {v} (add a unit, e.g. \"{v}s\")"
            )))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            Err(Self::not_a_string(format_args!(
                "the bare number {v} (add a unit, e.g. \"{v}s\")"
            )))
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Duration, E> {
            Err(Self::not_a_string(v))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse("15us"), Ok(Duration::from_micros(15)));
        assert_eq!(parse("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse(" 10 s "), Ok(Duration::from_secs(10)));
        assert_eq!(parse(".5m"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("0.001ms"), Ok(Duration::from_micros(1)));
    }

    #[test]
    fn rejects_garbage_with_a_helpful_message() {
        for bad in [
            "5x", "", "s", "30", "-1s", "1.2.3s", "1e3s", ".s", "5 x", "ms5",
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        assert_eq!(
            parse("5x").expect_err("5x"),
            "invalid duration \"5x\": expected a number followed by ms, s, m or h \
             (e.g. \"30s\", \"250ms\")"
        );
        assert!(parse("99999999999999999999999h").is_err());
    }

    #[test]
    fn format_is_exact_and_round_trips() {
        assert_eq!(format(Duration::from_secs(30)), "30s");
        assert_eq!(format(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format(Duration::from_millis(250)), "250ms");
        assert_eq!(format(Duration::from_secs(120)), "2m");
        assert_eq!(format(Duration::from_secs(7200)), "2h");
        assert_eq!(format(Duration::from_micros(1500)), "1500us");
        assert_eq!(format(Duration::ZERO), "0s");
        for d in [
            Duration::from_nanos(1),
            Duration::from_nanos(123_456_789_012),
            Duration::from_millis(100),
            Duration::from_secs(u64::MAX),
            Duration::MAX,
        ] {
            assert_eq!(parse(&format(d)), Ok(d), "{d:?}");
        }
    }
}
