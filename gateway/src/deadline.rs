//! `grpc-timeout`: what a client asks for, bounded by the gateway's maximum, with a default
//! for unary calls that ask for nothing; passed on to the backend as the time that is left.

use std::time::Duration;

/// Parses a `grpc-timeout` value (`100m`, `5S`, `1H`…); `None` when malformed.
pub fn parse(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats a duration the way the header wants it (at most 8 digits), in milliseconds, or
/// microseconds below one millisecond.
pub fn format(duration: Duration) -> String {
    let micros = duration.as_micros();
    if micros < 1_000 {
        format!("{}u", micros.max(1))
    } else {
        let millis = duration.as_millis().min(99_999_999);
        format!("{millis}m")
    }
}

/// The deadline of one call: the client's (bounded by `max`), else `default` for unary
/// calls; a stream without one runs until the gateway's stream limit.
pub fn effective(
    requested: Option<Duration>,
    streaming: bool,
    default: Duration,
    max: Duration,
) -> Option<Duration> {
    match requested {
        Some(requested) => Some(requested.min(max)),
        None if streaming => None,
        None => Some(default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_refuses_garbage() {
        assert_eq!(parse("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("250u"), Some(Duration::from_micros(250)));
        assert_eq!(parse("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "m", "10", "10x", "-1S", "123456789S", "1.5S", " 1S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_within_eight_digits() {
        assert_eq!(format(Duration::from_millis(1500)), "1500m");
        assert_eq!(format(Duration::from_micros(10)), "10u");
        assert_eq!(format(Duration::from_secs(10_000_000)), "99999999m");
        assert_eq!(parse(&format(Duration::from_secs(3))), Some(Duration::from_secs(3)));
    }

    #[test]
    fn bounded_by_the_maximum_with_a_default_for_unary_calls() {
        let (d, m) = (Duration::from_secs(30), Duration::from_secs(300));
        assert_eq!(effective(Some(Duration::from_secs(1)), false, d, m), Some(Duration::from_secs(1)));
        assert_eq!(effective(Some(Duration::from_secs(900)), true, d, m), Some(m));
        assert_eq!(effective(None, false, d, m), Some(d));
        assert_eq!(effective(None, true, d, m), None);
    }
}
