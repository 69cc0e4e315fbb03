//! Human duration strings ("150ms", "1.5s", "2m", "1m30s") for the config file.
//!
//! Written by hand (no humantime dependency): the grammar is tiny, and doing it with
//! integer arithmetic keeps every value exact to the nanosecond, so
//! `parse_duration(&format_duration(d)) == d` holds for every `Duration` we print.

use std::time::Duration;

/// Longest duration text accepted; anything longer is a typo or garbage, not a duration.
pub const MAX_DURATION_TEXT_LEN: usize = 64;

/// Most number+unit parts in one duration ("1h2m3s4ms" has four).
const MAX_DURATION_PARTS: usize = 8;

/// Most digits in one number (integer or fraction part): enough for any u64 nanosecond count.
const MAX_NUMBER_DIGITS: usize = 20;

const NANOS_PER_MICRO: u128 = 1_000;
const NANOS_PER_MILLI: u128 = 1_000_000;
const NANOS_PER_SECOND: u128 = 1_000_000_000;
const NANOS_PER_MINUTE: u128 = 60 * NANOS_PER_SECOND;
const NANOS_PER_HOUR: u128 = 60 * NANOS_PER_MINUTE;

/// The units we accept, longest spelling first is not needed: units are read as a whole
/// alphabetic run and matched exactly.
fn unit_nanos(unit: &str) -> Option<u128> {
    match unit {
        "ns" => Some(1),
        "us" | "µs" => Some(NANOS_PER_MICRO),
        "ms" => Some(NANOS_PER_MILLI),
        "s" => Some(NANOS_PER_SECOND),
        "m" => Some(NANOS_PER_MINUTE),
        "h" => Some(NANOS_PER_HOUR),
        _ => None,
    }
}

/// Parses "150ms", "1s", "1.5s", "2m", "1h", "1m30s", "250us", "10ns" (spaces between parts
/// are allowed). A unit is required: a bare "150" is ambiguous (ms? s?) and rejected.
/// The error text says what is wrong with the input and shows a valid example.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err(
            "empty duration; write a number with a unit such as \"150ms\" or \"1.5s\"".into(),
        );
    }
    if text.len() > MAX_DURATION_TEXT_LEN {
        return Err(format!(
            "duration text is {} characters long, more than the {MAX_DURATION_TEXT_LEN} allowed",
            text.len()
        ));
    }
    if text.starts_with('-') {
        return Err(format!(
            "\"{text}\" is negative; durations must be zero or more"
        ));
    }
    let mut total_nanos: u128 = 0;
    let mut rest = text;
    let mut parts = 0usize;
    while !rest.is_empty() {
        parts += 1;
        if parts > MAX_DURATION_PARTS {
            return Err(format!(
                "\"{text}\" has more than {MAX_DURATION_PARTS} number+unit parts"
            ));
        }
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() {
            return Err(format!(
                "expected a number at \"{rest}\" in \"{text}\"; write e.g. \"150ms\" or \"1.5s\""
            ));
        }
        rest = rest[number_len..].trim_start();
        let unit_len = rest
            .find(|c: char| !(c.is_alphabetic()))
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        if unit.is_empty() {
            return Err(format!(
                "\"{text}\" has no unit after {number}; add one of ns, us, ms, s, m, h (e.g. \"{number}ms\")"
            ));
        }
        let Some(unit_ns) = unit_nanos(unit) else {
            return Err(format!(
                "unknown unit \"{unit}\" in \"{text}\"; use one of ns, us, ms, s, m, h"
            ));
        };
        let part = number_nanos(number, unit_ns)
            .map_err(|why| format!("bad number \"{number}\" in \"{text}\": {why}"))?;
        total_nanos = total_nanos
            .checked_add(part)
            .ok_or_else(|| format!("\"{text}\" is too long a duration"))?;
    }
    let nanos = u64::try_from(total_nanos)
        .map_err(|_| format!("\"{text}\" is too long a duration (more than 584 years)"))?;
    Ok(Duration::from_nanos(nanos))
}

/// `number` is digits with at most one '.', e.g. "1.5"; returns number × unit in nanoseconds,
/// refusing values that are not a whole number of nanoseconds (no silent rounding).
fn number_nanos(number: &str, unit_ns: u128) -> Result<u128, &'static str> {
    let (int_text, frac_text) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if int_text.is_empty() {
        return Err("write a digit before the decimal point (0.5, not .5)");
    }
    if number.contains('.') && frac_text.is_empty() {
        return Err("write a digit after the decimal point (1.0, not 1.)");
    }
    if frac_text.contains('.') {
        return Err("more than one decimal point");
    }
    if int_text.len() > MAX_NUMBER_DIGITS || frac_text.len() > MAX_NUMBER_DIGITS {
        return Err("too many digits");
    }
    let int: u128 = int_text.parse().map_err(|_| "not a number")?;
    let mut nanos = int.checked_mul(unit_ns).ok_or("too large")?;
    if !frac_text.is_empty() {
        let frac: u128 = frac_text.parse().map_err(|_| "not a number")?;
        // frac_text has at most MAX_NUMBER_DIGITS (20) digits, so 10^len fits in u128.
        let denominator = 10u128.pow(frac_text.len() as u32);
        let scaled = frac.checked_mul(unit_ns).ok_or("too large")?;
        if scaled % denominator != 0 {
            return Err("finer than one nanosecond");
        }
        nanos = nanos.checked_add(scaled / denominator).ok_or("too large")?;
    }
    Ok(nanos)
}

/// Prints a duration in the shortest form `parse_duration` reads back exactly:
/// "2h", "5m", "1s", "150ms", "1.5s", "250us", "7ns"; zero is "0s".
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos.is_multiple_of(NANOS_PER_HOUR) {
        return format!("{}h", nanos / NANOS_PER_HOUR);
    }
    if nanos.is_multiple_of(NANOS_PER_MINUTE) {
        return format!("{}m", nanos / NANOS_PER_MINUTE);
    }
    if nanos.is_multiple_of(NANOS_PER_SECOND) {
        return format!("{}s", nanos / NANOS_PER_SECOND);
    }
    if nanos < NANOS_PER_SECOND {
        if nanos.is_multiple_of(NANOS_PER_MILLI) {
            return format!("{}ms", nanos / NANOS_PER_MILLI);
        }
        if nanos.is_multiple_of(NANOS_PER_MICRO) {
            return format!("{}us", nanos / NANOS_PER_MICRO);
        }
        return format!("{nanos}ns");
    }
    let fraction = format!("{:09}", nanos % NANOS_PER_SECOND);
    format!(
        "{}.{}s",
        nanos / NANOS_PER_SECOND,
        fraction.trim_end_matches('0')
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse_duration("150ms"), Ok(ms(150)));
        assert_eq!(parse_duration("1s"), Ok(ms(1_000)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse_duration("2m"), Ok(ms(120_000)));
        assert_eq!(parse_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("1m 30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration(" 150 ms "), Ok(ms(150)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("1.5ms"), Ok(Duration::from_micros(1_500)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_malformed_text_with_a_reason() {
        for (input, needle) in [
            ("", "empty"),
            ("150", "no unit"),
            ("5 parsecs", "unknown unit"),
            ("-5ms", "negative"),
            ("ms", "expected a number"),
            (".5s", "digit before"),
            ("1.s", "digit after"),
            ("1.2.3s", "decimal point"),
            ("0.1ns", "nanosecond"),
            ("99999999999999999999h", "too"),
            ("1s1s1s1s1s1s1s1s1s", "parts"),
        ] {
            let err = parse_duration(input).expect_err(input);
            assert!(err.contains(needle), "{input:?}: {err:?} lacks {needle:?}");
        }
        let long = "1".repeat(MAX_DURATION_TEXT_LEN + 1) + "s";
        assert!(parse_duration(&long).is_err());
    }

    #[test]
    fn formats_in_the_shortest_exact_form() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(ms(150)), "150ms");
        assert_eq!(format_duration(ms(1_500)), "1.5s");
        assert_eq!(format_duration(ms(60_000)), "1m");
        assert_eq!(format_duration(ms(90_000)), "90s");
        assert_eq!(format_duration(ms(7_200_000)), "2h");
        assert_eq!(format_duration(Duration::from_micros(250)), "250us");
        assert_eq!(
            format_duration(Duration::from_nanos(1_000_000_001)),
            "1.000000001s"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn millisecond_durations_round_trip(millis in 0u64..100_000_000_000) {
            let d = Duration::from_millis(millis);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn nanosecond_durations_round_trip(nanos in 0u64..u64::MAX) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
