//! Sizes, durations and bandwidths as written in the config file.
//!
//! All parsers take a number (integer or decimal, e.g. `4`, `1.5`) followed by
//! an optional run of spaces and a case-sensitive unit. Arithmetic is exact
//! integer arithmetic; fractional results are rounded down to the unit of the
//! result (bytes, nanoseconds, bytes per second). Values that do not fit are
//! errors, never panics.

use std::time::Duration;

const KIB: u128 = 1 << 10;

/// Size units understood by [`parse_size`], with their size in bytes.
const SIZE_UNITS: &[(&str, u128)] = &[
    ("B", 1),
    ("KiB", KIB),
    ("MiB", KIB * KIB),
    ("GiB", KIB * KIB * KIB),
    ("TiB", KIB * KIB * KIB * KIB),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
];

/// Duration units understood by [`parse_duration`], in nanoseconds.
const DURATION_UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
];

/// Bandwidth units understood by [`parse_bandwidth`], in **bits** per second.
const BANDWIDTH_UNITS: &[(&str, u128)] = &[
    ("bit/s", 1),
    ("Kbit/s", 1_000),
    ("Mbit/s", 1_000_000),
    ("Gbit/s", 1_000_000_000),
    ("B/s", 8),
    ("KB/s", 8_000),
    ("MB/s", 8_000_000),
    ("GB/s", 8_000_000_000),
    ("KiB/s", 8 * KIB),
    ("MiB/s", 8 * KIB * KIB),
    ("GiB/s", 8 * KIB * KIB * KIB),
];

const SIZE_EXAMPLES: &str = r#"expected e.g. "100GiB", "4MiB", "512KiB""#;
const DURATION_EXAMPLES: &str = r#"expected a number and a unit: us, ms or s, e.g. "50ms", "1.5s""#;
const BANDWIDTH_EXAMPLES: &str = r#"expected a number and a unit: bit/s, Kbit/s, Mbit/s, Gbit/s, B/s, KB/s, MB/s, GB/s, KiB/s, MiB/s or GiB/s, e.g. "100Mbit/s""#;

/// A decimal number split into its digits: value = `mantissa / 10^scale`.
struct Decimal {
    mantissa: u128,
    scale: u32,
}

/// Split `s` into a decimal number and the (trimmed) unit text after it.
/// `None` if `s` does not start with a well-formed non-negative number.
/// `Some(Err(()))` if the number has too many digits to represent.
fn split_number(s: &str) -> Option<(Result<Decimal, ()>, &str)> {
    let s = s.trim();
    let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
    if int_len == 0 {
        return None;
    }
    let (int_part, rest) = s.split_at(int_len);
    let (frac_part, rest) = match rest.strip_prefix('.') {
        Some(after_dot) => {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            if frac_len == 0 {
                return None;
            }
            after_dot.split_at(frac_len)
        }
        None => ("", rest),
    };
    let mut mantissa: Option<u128> = Some(0);
    for b in int_part.bytes().chain(frac_part.bytes()) {
        mantissa = mantissa
            .and_then(|m| m.checked_mul(10))
            .and_then(|m| m.checked_add(u128::from(b - b'0')));
    }
    let scale = u32::try_from(frac_part.len()).ok();
    let number = match (mantissa, scale) {
        (Some(mantissa), Some(scale)) if 10u128.checked_pow(scale).is_some() => {
            Ok(Decimal { mantissa, scale })
        }
        _ => Err(()),
    };
    Some((number, rest.trim_start()))
}

/// `number * multiplier / divisor`, rounded down; `None` on overflow.
fn scale(number: &Decimal, multiplier: u128, divisor: u128) -> Option<u128> {
    let denominator = 10u128.checked_pow(number.scale)?.checked_mul(divisor)?;
    Some(number.mantissa.checked_mul(multiplier)? / denominator)
}

/// Parse a number with a unit from `units`; `bare_unit` is the multiplier of
/// a number without unit (`None` = a unit is required). Returns the value in
/// the base unit (multiplier 1), divided by `divisor`.
fn parse_with_units(
    s: &str,
    units: &[(&str, u128)],
    bare_unit: Option<u128>,
    divisor: u128,
) -> Result<u128, ParseFailure> {
    let (number, unit) = split_number(s).ok_or(ParseFailure::Syntax)?;
    let multiplier = if unit.is_empty() {
        bare_unit.ok_or(ParseFailure::MissingUnit)?
    } else {
        units
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, m)| *m)
            .ok_or(ParseFailure::Syntax)?
    };
    let number = number.map_err(|()| ParseFailure::TooLarge)?;
    scale(&number, multiplier, divisor).ok_or(ParseFailure::TooLarge)
}

enum ParseFailure {
    Syntax,
    MissingUnit,
    TooLarge,
}

/// Parse a size such as `"4MiB"`, `"1.5 GiB"`, `"100GB"` or `"4096"` (bytes).
///
/// Units: B, KiB, MiB, GiB, TiB (powers of 1024) and KB, MB, GB, TB (powers
/// of 1000), case-sensitive. A bare number is bytes. The error message is
/// ready to show to a user.
pub fn parse_size(s: &str) -> Result<u64, String> {
    match parse_with_units(s, SIZE_UNITS, Some(1), 1) {
        Ok(bytes) => u64::try_from(bytes)
            .map_err(|_| format!("size {s:?} is too large (at most {} bytes)", u64::MAX)),
        Err(ParseFailure::TooLarge) => Err(format!(
            "size {s:?} is too large (at most {} bytes)",
            u64::MAX
        )),
        Err(ParseFailure::Syntax | ParseFailure::MissingUnit) => {
            Err(format!("cannot parse {s:?} as a size ({SIZE_EXAMPLES})"))
        }
    }
}

/// Format a byte count exactly, in the largest binary unit that divides it:
/// `4194304` → `"4MiB"`, `1000` → `"1000B"`. [`parse_size`] reads it back.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    if bytes != 0 {
        for (name, unit) in UNITS {
            if bytes.is_multiple_of(unit) {
                return format!("{}{name}", bytes / unit);
            }
        }
    }
    format!("{bytes}B")
}

/// Parse a duration such as `"50ms"`, `"1.5s"` or `"250us"`.
///
/// Units: us (also µs), ms, s, and ns for exactness; a unit is required
/// (`"0"` alone is accepted as zero).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let nanos = match parse_with_units(s, DURATION_UNITS, None, 1) {
        Ok(n) => n,
        Err(ParseFailure::MissingUnit) if split_is_zero(s) => 0,
        Err(ParseFailure::MissingUnit) => {
            return Err(format!("duration {s:?} has no unit ({DURATION_EXAMPLES})"))
        }
        Err(ParseFailure::TooLarge) => return Err(format!("duration {s:?} is too large")),
        Err(ParseFailure::Syntax) => {
            return Err(format!(
                "cannot parse {s:?} as a duration ({DURATION_EXAMPLES})"
            ))
        }
    };
    let secs =
        u64::try_from(nanos / 1_000_000_000).map_err(|_| format!("duration {s:?} is too large"))?;
    // The remainder is below 10^9 and always fits.
    let sub = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, sub))
}

/// True if `s` is a bare number equal to zero.
fn split_is_zero(s: &str) -> bool {
    matches!(split_number(s), Some((Ok(Decimal { mantissa: 0, .. }), "")))
}

/// Format a duration exactly, in the largest of s, ms, us, ns that divides it.
/// [`parse_duration`] reads it back.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0ms".to_string();
    }
    for (name, unit) in [("s", 1_000_000_000u128), ("ms", 1_000_000), ("us", 1_000)] {
        if nanos.is_multiple_of(unit) {
            return format!("{}{name}", nanos / unit);
        }
    }
    format!("{nanos}ns")
}

/// Parse a bandwidth such as `"100Mbit/s"` or `"12.5MB/s"` into bytes per
/// second (rounded down). Must be more than 0 bytes per second.
///
/// Units: bit/s, Kbit/s, Mbit/s, Gbit/s (powers of 1000 bits), B/s, KB/s,
/// MB/s, GB/s (powers of 1000 bytes), KiB/s, MiB/s, GiB/s (powers of 1024
/// bytes); a unit is required.
pub fn parse_bandwidth(s: &str) -> Result<u64, String> {
    let bytes = match parse_with_units(s, BANDWIDTH_UNITS, None, 8) {
        Ok(b) => b,
        Err(ParseFailure::MissingUnit) => {
            return Err(format!(
                "bandwidth {s:?} has no unit ({BANDWIDTH_EXAMPLES})"
            ))
        }
        Err(ParseFailure::TooLarge) => return Err(format!("bandwidth {s:?} is too large")),
        Err(ParseFailure::Syntax) => {
            return Err(format!(
                "cannot parse {s:?} as a bandwidth ({BANDWIDTH_EXAMPLES})"
            ))
        }
    };
    let bytes = u64::try_from(bytes).map_err(|_| format!("bandwidth {s:?} is too large"))?;
    if bytes == 0 {
        return Err(format!(
            "bandwidth {s:?} is less than 1 byte per second (must be more than 0)"
        ));
    }
    Ok(bytes)
}

/// Format a bandwidth in bytes per second exactly, in the largest of GiB/s,
/// MiB/s, KiB/s, B/s that divides it. [`parse_bandwidth`] reads it back.
pub fn format_bandwidth(bytes_per_sec: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB/s", 1 << 30), ("MiB/s", 1 << 20), ("KiB/s", 1 << 10)];
    if bytes_per_sec != 0 {
        for (name, unit) in UNITS {
            if bytes_per_sec.is_multiple_of(unit) {
                return format!("{}{name}", bytes_per_sec / unit);
            }
        }
    }
    format!("{bytes_per_sec}B/s")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("4 MiB"), Ok(4 << 20));
        assert_eq!(parse_size(" 1.5KiB "), Ok(1536));
        assert_eq!(parse_size("100GB"), Ok(100_000_000_000));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert_eq!(parse_size("1TB"), Ok(1_000_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("7B"), Ok(7));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("0.1KiB"), Ok(102)); // rounded down
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn bad_sizes() {
        let e = parse_size("12 XB").unwrap_err();
        assert_eq!(
            e,
            r#"cannot parse "12 XB" as a size (expected e.g. "100GiB", "4MiB", "512KiB")"#
        );
        for s in [
            "",
            "MiB",
            "-1MiB",
            "1.MiB",
            ".5MiB",
            "4mib",
            "4 M",
            "1e3",
            "4MiB extra",
            "0x10",
        ] {
            assert!(parse_size(s).is_err(), "{s:?} should not parse");
        }
        assert!(parse_size("99999999999TiB")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_size("18446744073709551616")
            .unwrap_err()
            .contains("too large"));
        let huge = "9".repeat(60);
        assert!(parse_size(&huge).unwrap_err().contains("too large"));
        let long_fraction = format!("1.{}KiB", "0".repeat(60));
        assert!(parse_size(&long_fraction)
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn format_sizes() {
        assert_eq!(format_size(4 << 20), "4MiB");
        assert_eq!(format_size(0), "0B");
        assert_eq!(format_size(1000), "1000B");
        assert_eq!(format_size(1536), "1536B");
        assert_eq!(format_size(100 << 30), "100GiB");
        assert_eq!(format_size(3 << 40), "3TiB");
        assert_eq!(format_size(u64::MAX), format!("{}B", u64::MAX));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("250 µs"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("50").unwrap_err().contains("no unit"));
        assert!(parse_duration("50 m").unwrap_err().contains("cannot parse"));
        assert!(parse_duration("-5ms").unwrap_err().contains("cannot parse"));
        assert!(parse_duration("fast").unwrap_err().contains("cannot parse"));
        assert!(parse_duration("99999999999999999999999s")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_duration(&format!("{}s", "9".repeat(50)))
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn bandwidths() {
        assert_eq!(parse_bandwidth("100Mbit/s"), Ok(12_500_000));
        assert_eq!(parse_bandwidth("1Gbit/s"), Ok(125_000_000));
        assert_eq!(parse_bandwidth("8bit/s"), Ok(1));
        assert_eq!(parse_bandwidth("12.5 MB/s"), Ok(12_500_000));
        assert_eq!(parse_bandwidth("1KiB/s"), Ok(1024));
        assert_eq!(parse_bandwidth("2GiB/s"), Ok(2 << 30));
        assert_eq!(parse_bandwidth("3B/s"), Ok(3));
        assert!(parse_bandwidth("100").unwrap_err().contains("no unit"));
        assert!(parse_bandwidth("100Mbps")
            .unwrap_err()
            .contains("cannot parse"));
        assert!(parse_bandwidth("100 mbit/s")
            .unwrap_err()
            .contains("cannot parse"));
        assert!(parse_bandwidth("0Mbit/s")
            .unwrap_err()
            .contains("more than 0"));
        assert!(parse_bandwidth("1bit/s")
            .unwrap_err()
            .contains("more than 0"));
        assert!(parse_bandwidth("99999999999999GiB/s")
            .unwrap_err()
            .contains("too large"));
    }

    proptest! {
        #[test]
        fn size_round_trip(bytes in any::<u64>(), shift in 0u32..50) {
            for b in [bytes, bytes >> shift << shift, (bytes >> 44) << 30] {
                prop_assert_eq!(parse_size(&format_size(b)), Ok(b));
            }
        }

        #[test]
        fn duration_round_trip(secs in 0u64..1_000_000_000, nanos in 0u32..1_000_000_000, coarse in any::<bool>()) {
            let d = if coarse { Duration::from_millis(secs) } else { Duration::new(secs, nanos) };
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn bandwidth_round_trip(b in 1u64..u64::MAX / 8, shift in 0u32..40) {
            for b in [b, (b >> shift << shift).max(1)] {
                prop_assert_eq!(parse_bandwidth(&format_bandwidth(b)), Ok(b));
            }
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,24}") {
            let _ = parse_size(&s);
            let _ = parse_duration(&s);
            let _ = parse_bandwidth(&s);
        }

        #[test]
        fn number_unit_strings_never_panic(n in "[0-9]{1,45}(\\.[0-9]{0,45})?", u in "(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB|s|ms|us|bit/s|Gbit/s|GiB/s)?") {
            let s = format!("{n}{u}");
            let _ = parse_size(&s);
            let _ = parse_duration(&s);
            let _ = parse_bandwidth(&s);
        }
    }
}
