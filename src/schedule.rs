//! When each token group is refreshed next: refresh point, jitter, capped backoff (pure).

use std::time::{Duration, SystemTime};

use crate::config::DaemonSettings;

/// The schedule's knobs, from `[daemon]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub refresh_at: f64,
    pub jitter: f64,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub min_interval: Duration,
}

impl From<&DaemonSettings> for Policy {
    fn from(d: &DaemonSettings) -> Policy {
        Policy {
            refresh_at: d.refresh_at,
            jitter: d.jitter,
            retry_min: d.retry_min,
            retry_max: d.retry_max,
            min_interval: d.min_interval,
        }
    }
}

/// How long before expiry the last attempt is made when everything else failed.
const LAST_CHANCE: Duration = Duration::from_secs(1);

/// When to refresh a token obtained at `obtained` that expires at `expires_at`.
///
/// At `refresh_at` of its lifetime, minus up to `jitter` of that interval (`rand` in `[0, 1)`),
/// never sooner than `min_interval` after it was obtained — unless that would pass the expiry, since
/// a token must never run out without an attempt.
pub fn next_refresh(
    obtained: SystemTime,
    expires_at: SystemTime,
    policy: &Policy,
    rand: f64,
) -> SystemTime {
    let lifetime = expires_at.duration_since(obtained).unwrap_or_default();
    let interval = lifetime.mul_f64(policy.refresh_at.clamp(0.0, 1.0));
    let jitter = interval.mul_f64(policy.jitter.clamp(0.0, 1.0) * rand.clamp(0.0, 1.0));
    let at = obtained + (interval - jitter).max(policy.min_interval);
    let latest = expires_at
        .checked_sub(LAST_CHANCE)
        .unwrap_or(expires_at)
        .max(obtained);
    at.min(latest)
}

/// The delay before retry number `failures` (1 for the first): the first is `retry_min`, later
/// ones are drawn uniformly between `retry_min` and `retry_min × 2^(failures-1)`, capped at
/// `retry_max` (capped exponential backoff with full jitter above the floor).
pub fn retry_delay(failures: u32, policy: &Policy, rand: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(32);
    let cap = policy
        .retry_min
        .saturating_mul(1u32 << exp.min(31))
        .min(policy.retry_max)
        .max(policy.retry_min);
    policy.retry_min + (cap - policy.retry_min).mul_f64(rand.clamp(0.0, 1.0))
}

/// When to try again after `failures` consecutive failures at `now`, given the token still held (if
/// any): the backoff delay, but never past that token's last chance before expiry.
pub fn after_failure(
    now: SystemTime,
    failures: u32,
    held_expiry: Option<SystemTime>,
    policy: &Policy,
    rand: f64,
) -> SystemTime {
    let at = now + retry_delay(failures, policy, rand);
    match held_expiry {
        Some(exp) => {
            let last = exp.checked_sub(LAST_CHANCE).unwrap_or(exp);
            if last > now { at.min(last) } else { at }
        }
        None => at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;
    const H: Duration = Duration::from_secs(3600);

    fn policy() -> Policy {
        Policy::from(&DaemonSettings::default())
    }

    #[test]
    fn refresh_at_half_life_minus_jitter() {
        let p = policy();
        let exp = T0 + 12 * H;
        assert_eq!(next_refresh(T0, exp, &p, 0.0), T0 + 6 * H);
        // jitter 0.1 of a 6 h interval is up to 36 minutes earlier.
        assert_eq!(
            next_refresh(T0, exp, &p, 0.5),
            T0 + 6 * H - Duration::from_secs(18 * 60)
        );
        let earliest = next_refresh(T0, exp, &p, 0.999_999);
        assert!(earliest > T0 + 6 * H - Duration::from_secs(36 * 60) - Duration::from_secs(1));
        assert!(earliest < T0 + 6 * H - Duration::from_secs(35 * 60));
    }

    #[test]
    fn every_rand_stays_in_the_window() {
        let p = policy();
        let exp = T0 + 12 * H;
        for i in 0..1000 {
            let r = f64::from(i) / 1000.0;
            let at = next_refresh(T0, exp, &p, r);
            assert!(
                at <= T0 + 6 * H && at >= T0 + 6 * H - Duration::from_secs(36 * 60),
                "{r}"
            );
        }
    }

    #[test]
    fn min_interval_holds_for_short_tokens() {
        let p = policy(); // min_interval 1 m
        let exp = T0 + Duration::from_secs(600); // a 10-minute token
        assert_eq!(
            next_refresh(T0, exp, &p, 0.0),
            T0 + Duration::from_secs(300)
        );
        let exp = T0 + Duration::from_secs(90); // half-life 45 s < 1 m
        assert_eq!(next_refresh(T0, exp, &p, 0.0), T0 + Duration::from_secs(60));
    }

    #[test]
    fn never_past_expiry_even_with_min_interval() {
        let p = policy();
        let exp = T0 + Duration::from_secs(4); // 4-second tokens, min_interval 1 m
        assert_eq!(next_refresh(T0, exp, &p, 0.0), T0 + Duration::from_secs(3));
        let exp = T0 + Duration::from_millis(500);
        assert_eq!(
            next_refresh(T0, exp, &p, 0.0),
            T0,
            "already at its last chance"
        );
        // Already expired (clock skew): refresh right away, subject to no floor below `obtained`.
        assert_eq!(next_refresh(T0 + H, T0, &p, 0.3), T0 + H);
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let p = policy(); // 5 s .. 5 m
        assert_eq!(retry_delay(1, &p, 0.0), Duration::from_secs(5));
        assert_eq!(
            retry_delay(1, &p, 0.99),
            Duration::from_secs(5),
            "first retry is retry_min"
        );
        assert_eq!(retry_delay(2, &p, 1.0), Duration::from_secs(10));
        assert_eq!(retry_delay(3, &p, 1.0), Duration::from_secs(20));
        assert_eq!(
            retry_delay(4, &p, 0.5),
            Duration::from_millis(22_500),
            "5 + (40 - 5) / 2"
        );
        assert_eq!(
            retry_delay(7, &p, 1.0),
            Duration::from_secs(300),
            "5*2^6=320 capped at 300"
        );
        assert_eq!(retry_delay(1000, &p, 1.0), Duration::from_secs(300));
        assert_eq!(retry_delay(u32::MAX, &p, 0.0), Duration::from_secs(5));
        assert_eq!(retry_delay(0, &p, 0.7), Duration::from_secs(5));
        for n in 1..40 {
            for r in [0.0, 0.25, 0.5, 0.75, 1.0] {
                let d = retry_delay(n, &p, r);
                assert!(d >= p.retry_min && d <= p.retry_max, "{n} {r}: {d:?}");
            }
        }
    }

    #[test]
    fn failures_never_skip_the_last_chance_before_expiry() {
        let p = policy();
        let now = T0;
        // Holding a token that expires in 8 s: the 5 m backoff is cut to 7 s.
        let at = after_failure(now, 10, Some(now + Duration::from_secs(8)), &p, 1.0);
        assert_eq!(at, now + Duration::from_secs(7));
        // Plenty of time: the backoff as is.
        let at = after_failure(now, 2, Some(now + H), &p, 1.0);
        assert_eq!(at, now + Duration::from_secs(10));
        // Already expired, or no token: plain backoff.
        let at = after_failure(now, 1, Some(now), &p, 0.0);
        assert_eq!(at, now + Duration::from_secs(5));
        assert_eq!(
            after_failure(now, 1, None, &p, 0.0),
            now + Duration::from_secs(5)
        );
    }
}
