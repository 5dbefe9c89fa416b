//! One token group's state and its rules: taking a token in, the answer to a refresh request, and
//! how `status` shows it.

use std::time::{Duration, SystemTime};

use super::{Ticket, elapsed};
use crate::clock;
use crate::daemon::schedule::{self, Policy};
use crate::ecr::token::{Token, TokenError};
use crate::status::{self, RegistryState, RegistryStatus};

/// One token group's state.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub(crate) token: Option<Token>,
    pub(crate) last_success: Option<SystemTime>,
    pub(crate) next: SystemTime,
    pub(crate) failures: u32,
    /// Tokens that arrived already expired (clock skew), in a row: backs off like failures.
    pub(crate) skewed: u32,
    pub(crate) last_error: Option<String>,
    pub(crate) in_flight: bool,
    /// A result (either way) came in at least once.
    pub(crate) attempted: bool,
    /// The expiry of the held token was logged.
    pub(super) expiry_logged: bool,
    pub(super) waiters: Vec<u64>,
    /// Fetches since the daemon started (kept across reloads while the group stays), by result.
    pub(crate) fetched_ok: u64,
    pub(crate) fetched_failed: u64,
}

impl Group {
    pub(super) fn new(now: SystemTime) -> Group {
        Group {
            token: None,
            last_success: None,
            next: now,
            failures: 0,
            skewed: 0,
            last_error: None,
            in_flight: false,
            attempted: false,
            expiry_logged: false,
            waiters: Vec::new(),
            fetched_ok: 0,
            fetched_failed: 0,
        }
    }

    pub(crate) fn valid_token(&self, now: SystemTime) -> Option<&Token> {
        self.token.as_ref().filter(|t| t.expires_at > now)
    }

    /// What the group's hosts get now: the token while valid, or the one just fetched even if it
    /// arrived expired (clock skew: written as ECR gave it, shown in status). An expired token held
    /// from before (a suspend, a stop) never is.
    pub(super) fn current(&self, now: SystemTime) -> Result<Token, TokenError> {
        match &self.token {
            Some(t) if t.expires_at > now || self.skewed > 0 => Ok(t.clone()),
            _ => Err(TokenError::Failed(
                self.last_error
                    .clone()
                    .unwrap_or_else(|| "no token yet".into()),
            )),
        }
    }
}

/// Takes a fetched token into its group and schedules the next refresh.
pub(super) fn record_token(
    g: &mut Group,
    token: &Token,
    now: SystemTime,
    rand: f64,
    policy: &Policy,
    hosts: &str,
) {
    g.token = Some(token.clone());
    g.last_success = Some(now);
    g.fetched_ok = g.fetched_ok.saturating_add(1);
    g.failures = 0;
    g.last_error = None;
    g.expiry_logged = false;
    if token.expires_at <= clock::add(now, Duration::from_secs(1)) {
        g.skewed = g.skewed.saturating_add(1);
        g.next = schedule::after_failure(now, g.skewed, None, policy, rand);
        let skew = elapsed(token.expires_at, now);
        g.last_error = Some(format!(
            "ECR returned a token that had already expired ({} ago): check the clock",
            status::rough(skew)
        ));
        tracing::warn!(registry = %hosts, expires_at = %clock::rfc3339(token.expires_at), "ECR returned a token that expired {} ago (clock skew?); writing it anyway", status::rough(skew));
        return;
    }
    g.skewed = 0;
    g.next = schedule::next_refresh(now, token.expires_at, policy, rand);
    if let Some(gap) = schedule::lapses(token.expires_at, g.next) {
        tracing::warn!(registry = %hosts, "tokens live {}, less than min_interval ({}): each lapses for {} before its refresh", status::rough(elapsed(now, token.expires_at)), status::rough(policy.min_interval), status::rough(gap));
    }
    tracing::info!(registry = %hosts, expires_at = %clock::rfc3339(token.expires_at), next_refresh = %clock::rfc3339(g.next), "token refreshed");
}

/// The answer a refresh request gets from one group.
pub(super) fn refresh_ticket(g: &mut Group, id: u64, now: SystemTime, policy: &Policy) -> Ticket {
    let earliest = if g.failures > 0 || g.skewed > 0 {
        g.next
    } else {
        g.last_success
            .map_or(now, |t| clock::add(t, policy.min_interval))
    };
    if g.in_flight {
        g.waiters.push(id); // coalesce onto the fetch under way
        return Ticket::Later(id);
    }
    if earliest <= now {
        g.next = now;
        g.waiters.push(id);
        return Ticket::Later(id);
    }
    if let Some(t) = g.valid_token(now).filter(|_| g.failures == 0) {
        return Ticket::Now(Ok(t.clone()));
    }
    let why = match &g.last_error {
        Some(e) if g.failures > 0 => format!(
            "backing off after {} failed attempts (last: {e})",
            g.failures
        ),
        Some(e) => e.clone(),
        None => format!(
            "min_interval ({}) since the last token",
            status::rough(policy.min_interval)
        ),
    };
    Ticket::Now(Err(TokenError::Failed(format!(
        "not refreshed now: the next attempt is at {} (in {}): {why}",
        clock::rfc3339(earliest),
        status::rough(elapsed(now, earliest))
    ))))
}

pub(super) fn registry_status(
    host: &str,
    g: Option<&Group>,
    now: SystemTime,
    policy: &Policy,
) -> RegistryStatus {
    let state = match g {
        None => RegistryState::Pending,
        Some(g) => match &g.token {
            Some(t) if t.expires_at <= now => RegistryState::Expired,
            _ if g.in_flight => RegistryState::Refreshing,
            None if g.failures > 0 => RegistryState::Failing,
            None => RegistryState::Pending,
            Some(_) if g.failures > 0 => RegistryState::Failing,
            Some(_) => RegistryState::Fresh,
        },
    };
    let lapse = g.and_then(|g| {
        let t = g.token.as_ref().filter(|_| g.failures == 0 && g.skewed == 0)?;
        let gap = schedule::lapses(t.expires_at, g.next)?;
        Some(format!(
            "the token runs out {} before its next refresh: tokens live less than min_interval ({}), which bounds calls to ECR; lower min_interval",
            status::rough(gap),
            status::rough(policy.min_interval)
        ))
    });
    RegistryStatus {
        aliases: Vec::new(),
        host: host.to_string(),
        state,
        expires_at: g.and_then(|g| g.token.as_ref()).map(|t| t.expires_at),
        next_refresh: g.map(|g| g.next),
        last_success: g.and_then(|g| g.last_success),
        last_error: g.and_then(|g| g.last_error.clone()),
        consecutive_failures: g.map_or(0, |g| g.failures),
        refreshes_ok: g.map_or(0, |g| g.fetched_ok),
        refreshes_failed: g.map_or(0, |g| g.fetched_failed),
        warnings: lapse.into_iter().collect(),
    }
}
