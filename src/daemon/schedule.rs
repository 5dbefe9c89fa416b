//! When each token group is refreshed next: refresh point, jitter, capped backoff (pure).

use std::time::{Duration, SystemTime};

use crate::clock;
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
/// but never sooner than `min_interval` after it was obtained, even when the token expires first:
/// `min_interval` bounds the successful calls against the account's ECR quota, and a token that
/// lapses before it is shown as a warning ([`lapses`]), not fixed by calling faster.
pub fn next_refresh(
    obtained: SystemTime,
    expires_at: SystemTime,
    policy: &Policy,
    rand: f64,
) -> SystemTime {
    let lifetime = expires_at.duration_since(obtained).unwrap_or_default();
    let interval = scale(lifetime, policy.refresh_at);
    let jitter = scale(interval, unit(policy.jitter) * unit(rand));
    clock::add(
        obtained,
        interval.saturating_sub(jitter).max(policy.min_interval),
    )
}

/// How long a token is missing before its next refresh when the schedule (`min_interval`) puts
/// that refresh past its expiry; `None` when it is refreshed in time.
pub fn lapses(expires_at: SystemTime, next: SystemTime) -> Option<Duration> {
    next.duration_since(expires_at)
        .ok()
        .filter(|d| !d.is_zero())
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
    policy
        .retry_min
        .saturating_add(scale(cap.saturating_sub(policy.retry_min), rand))
}

/// `f` clamped into `[0, 1]`; anything not finite counts as 0.
fn unit(f: f64) -> f64 {
    if f.is_finite() {
        f.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// `d × f` for `f` in `[0, 1]` (clamped), without the panics of `Duration::mul_f64`.
fn scale(d: Duration, f: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * unit(f))
        .unwrap_or(d)
        .min(d)
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
    let at = clock::add(now, retry_delay(failures, policy, rand));
    match held_expiry {
        Some(exp) => {
            let last = clock::sub(exp, LAST_CHANCE);
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
    fn min_interval_is_a_floor_even_past_expiry() {
        let p = policy(); // min_interval 1 m
        // Tokens that live 4 s, 30 s, 59 s: refreshed 1 m after they were obtained, not sooner.
        for life in [4, 30, 59] {
            let exp = T0 + Duration::from_secs(life);
            for r in [0.0, 0.5, 0.999] {
                let at = next_refresh(T0, exp, &p, r);
                assert_eq!(at, T0 + Duration::from_secs(60), "{life} s token, rand {r}");
                assert_eq!(
                    lapses(exp, at),
                    (life < 60).then(|| Duration::from_secs(60 - life))
                );
            }
        }
        // A token that lives long enough does not lapse.
        let exp = T0 + 12 * H;
        assert_eq!(lapses(exp, next_refresh(T0, exp, &p, 0.5)), None);
        // Already expired (clock skew): still no sooner than the floor.
        assert_eq!(
            next_refresh(T0 + H, T0, &p, 0.3),
            T0 + H + Duration::from_secs(60)
        );
    }

    #[test]
    fn extremes_never_panic_and_stay_in_range() {
        let far = clock::far_future();
        let huge = Duration::from_secs(u64::MAX);
        let policies = [
            policy(),
            Policy {
                refresh_at: 0.999,
                jitter: 0.999,
                retry_min: Duration::from_nanos(1),
                retry_max: huge,
                min_interval: huge,
            },
            Policy {
                refresh_at: f64::NAN,
                jitter: f64::INFINITY,
                retry_min: huge,
                retry_max: Duration::ZERO,
                min_interval: Duration::ZERO,
            },
        ];
        let times = [
            T0,
            T0 + Duration::from_nanos(1),
            T0 + 12 * H,
            far,
            far - Duration::from_secs(1),
        ];
        for p in &policies {
            for &a in &times {
                for &b in &times {
                    for r in [0.0, 0.5, 1.0, f64::NAN, -1.0, 2.0] {
                        let at = next_refresh(a, b, p, r);
                        assert!(clock::in_range(at), "{a:?} {b:?} {r}");
                        for n in [0, 1, 2, 31, 32, 33, 1000, u32::MAX] {
                            let at = after_failure(a, n, Some(b), p, r);
                            assert!(clock::in_range(at), "{a:?} {b:?} {n} {r}");
                            let _ = retry_delay(n, p, r);
                        }
                    }
                }
            }
        }
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
