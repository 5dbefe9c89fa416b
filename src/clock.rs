//! Time arithmetic and formatting that cannot overflow or panic, whatever a config, a file or an endpoint says.
//!
//! Every time the daemon computes is kept between the epoch and the last second of year 9999: a
//! sum that would pass that saturates there, and a time outside it is formatted as what it is
//! instead of panicking (humantime's RFC 3339 formatter panics on both sides).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 9999-12-31T23:59:59Z, the last second RFC 3339 can write.
const LAST_SECOND: u64 = 253_402_300_799;

/// The latest time the daemon ever computes.
pub fn far_future() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(LAST_SECOND)
}

/// Whether `t` is one the daemon can work with: not before 1970, not after year 9999.
pub fn in_range(t: SystemTime) -> bool {
    t >= UNIX_EPOCH && t <= far_future()
}

/// `t + d`, saturating at [`far_future`].
pub fn add(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_add(d)
        .map_or_else(far_future, |s| s.min(far_future()))
}

/// `t - d`, saturating at the epoch.
pub fn sub(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_sub(d).map_or(UNIX_EPOCH, |s| s.max(UNIX_EPOCH))
}

/// RFC 3339 in UTC to the second; a time out of range is written as what it is.
pub fn rfc3339(t: SystemTime) -> String {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) if d.as_secs() <= LAST_SECOND => humantime::format_rfc3339_seconds(t).to_string(),
        Ok(d) => format!("(after year 9999: {} s since 1970)", d.as_secs()),
        Err(e) => format!("(before 1970: {} s)", e.duration().as_secs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_saturate_instead_of_overflowing() {
        let max = Duration::new(u64::MAX, 999_999_999);
        assert_eq!(add(UNIX_EPOCH, max), far_future());
        assert_eq!(add(far_future(), Duration::from_nanos(1)), far_future());
        assert_eq!(
            add(UNIX_EPOCH, Duration::from_secs(5)),
            UNIX_EPOCH + Duration::from_secs(5)
        );
        assert_eq!(sub(UNIX_EPOCH, Duration::from_nanos(1)), UNIX_EPOCH);
        assert_eq!(sub(far_future(), max), UNIX_EPOCH);
        let before = UNIX_EPOCH - Duration::from_secs(86400);
        assert_eq!(
            add(before, Duration::ZERO),
            before,
            "below the epoch is kept as given"
        );
    }

    #[test]
    fn every_time_formats_without_panicking() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(far_future()), "9999-12-31T23:59:59Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(86400)),
            "(before 1970: 86400 s)"
        );
        assert!(rfc3339(far_future() + Duration::from_secs(1)).starts_with("(after year 9999"));
        for secs in [
            0,
            1,
            59,
            86399,
            1 << 33,
            LAST_SECOND,
            LAST_SECOND + 1,
            1 << 40,
            i64::MAX as u64 / 2,
        ] {
            let _ = rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
            let _ = UNIX_EPOCH
                .checked_sub(Duration::from_secs(secs))
                .map(rfc3339);
        }
        assert!(in_range(UNIX_EPOCH) && in_range(far_future()));
        assert!(!in_range(UNIX_EPOCH - Duration::from_nanos(1)));
        assert!(!in_range(far_future() + Duration::from_nanos(1)));
    }
}
