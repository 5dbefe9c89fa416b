//! The core's rules, driven with an injected clock: no processes, no sleeps.

use std::time::UNIX_EPOCH;

use base64::Engine;

use super::*;
use crate::config::{Accounts, GroupSpec};
use crate::status::{RegistryState, TargetState};
use crate::targets::state::Managed;

const H1: &str = "111111111111.dkr.ecr.us-east-1.amazonaws.com";
const H2: &str = "222222222222.dkr.ecr.us-east-1.amazonaws.com";
const H3: &str = "111111111111.dkr.ecr.eu-west-1.amazonaws.com";
const HOUR: u64 = 3600;

struct NoAccounts;
impl Accounts for NoAccounts {
    fn group(&self, _: &str) -> Option<GroupSpec> {
        None
    }
}

/// Seconds after a fixed start.
fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn settings(daemon: &str, hosts: &[&str], targets: &[&str]) -> Arc<Settings> {
    let mut text = format!("[daemon]\n{daemon}\n");
    for h in hosts {
        text += &format!("[[registry]]\nhost = \"{h}\"\n");
    }
    for p in targets {
        text += &format!("[[target]]\npath = \"{p}\"\n");
    }
    Arc::new(crate::config::parse(&text, None, &NoAccounts).expect("valid test config"))
}

fn token(secret: &str, expires: SystemTime) -> Token {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{secret}"));
    Token::new(auth, expires).expect("valid token")
}

fn key(s: &Settings, host: &str) -> GroupKey {
    GroupKey::of(s.registries.iter().find(|r| r.host == host).expect("host"))
}

fn fetches(actions: &[Action]) -> Vec<GroupKey> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Fetch(k) => Some(k.clone()),
            _ => None,
        })
        .collect()
}

fn jobs(actions: Vec<Action>) -> Vec<Job> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Deliver(j) => Some(j),
            _ => None,
        })
        .collect()
}

fn ready(actions: &[Action]) -> bool {
    actions.iter().any(|a| matches!(a, Action::Ready))
}

/// A core with `targets` under /t, its first poll done (fetches in flight, first deliveries
/// started and finished unchanged).
fn started(daemon: &str, hosts: &[&str], targets: &[&str]) -> (Core, Arc<Settings>) {
    let s = settings(daemon, hosts, targets);
    let mut core = Core::new(Arc::clone(&s), State::default(), t(0));
    let first = core.poll(t(0));
    for j in jobs(first) {
        core.delivered(&j, Ok(false), t(0), 0.0);
    }
    (core, s)
}

fn succeed(
    core: &mut Core,
    s: &Settings,
    host: &str,
    secret: &str,
    at: u64,
    life: u64,
) -> Vec<Action> {
    core.fetched(&key(s, host), Ok(token(secret, t(at + life))), t(at), 0.0)
}

fn fail(core: &mut Core, s: &Settings, host: &str, at: u64, rand: f64) -> Vec<Action> {
    core.fetched(
        &key(s, host),
        Err(TokenError::Throttled("Rate exceeded".into())),
        t(at),
        rand,
    )
}

/// Polls at `at` and completes every delivery it starts, successfully.
fn deliver_all(core: &mut Core, at: u64) -> Vec<Job> {
    let done = jobs(core.poll(t(at)));
    for j in &done {
        core.delivered(j, Ok(true), t(at), 0.0);
    }
    done
}

#[test]
fn every_group_is_fetched_once_at_start() {
    let s = settings("", &[H1, H2, H3], &["/t/a.json"]);
    let mut core = Core::new(Arc::clone(&s), State::default(), t(0));
    let a = core.poll(t(0));
    assert_eq!(
        fetches(&a).len(),
        2,
        "H1 and H2 share us-east-1: one call per group"
    );
    assert!(
        fetches(&core.poll(t(1))).is_empty(),
        "nothing fetched twice while in flight"
    );
}

#[test]
fn a_success_schedules_the_refresh_at_half_life_minus_jitter() {
    let (mut core, s) = started("", &[H1], &["/t/a.json"]);
    succeed(&mut core, &s, H1, "pw", 0, 12 * HOUR);
    assert_eq!(core.group(H1).unwrap().next, t(6 * HOUR));
    core.fetched(&key(&s, H1), Ok(token("pw2", t(12 * HOUR))), t(0), 0.5);
    assert_eq!(
        core.group(H1).unwrap().next,
        t(6 * HOUR - 18 * 60),
        "jitter 0.1 × 0.5 of 6 h"
    );
    assert!(fetches(&core.poll(t(6 * HOUR - 18 * 60 - 1))).is_empty());
    assert_eq!(fetches(&core.poll(t(6 * HOUR - 18 * 60))).len(), 1);
}

#[test]
fn a_token_is_delivered_once_to_each_target_for_all_its_hosts() {
    let (mut core, s) = started("", &[H1, H2, H3], &["/t/a.json", "/t/b.json"]);
    succeed(&mut core, &s, H1, "east", 0, 12 * HOUR);
    succeed(&mut core, &s, H3, "west", 0, 12 * HOUR);
    let done = jobs(core.poll(t(0)));
    assert_eq!(done.len(), 2, "each target once for both groups");
    for j in &done {
        let hosts: Vec<&str> = j.desired.set.keys().map(String::as_str).collect();
        assert_eq!(hosts, [H3, H1, H2], "sorted");
        assert_eq!(
            j.desired.set[H1], j.desired.set[H2],
            "one token for the region"
        );
        assert_eq!(j.expiries[H1], t(12 * HOUR));
    }
}

#[test]
fn failures_back_off_exponentially_to_the_cap() {
    let (mut core, s) = started("", &[H1], &["/t/a.json"]);
    let mut at = 0;
    let mut delays = Vec::new();
    for _ in 0..8 {
        fail(&mut core, &s, H1, at, 1.0);
        let next = core.group(H1).unwrap().next;
        let d = next.duration_since(t(at)).unwrap().as_secs();
        delays.push(d);
        at += d;
        assert_eq!(fetches(&core.poll(t(at))).len(), 1);
    }
    assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300]);
}

#[test]
fn a_failure_delivers_nothing_and_keeps_the_held_token() {
    let (mut core, s) = started("", &[H1], &["/t/a.json"]);
    succeed(&mut core, &s, H1, "pw", 0, 12 * HOUR);
    deliver_all(&mut core, 0);
    fail(&mut core, &s, H1, 6 * HOUR, 0.0);
    assert!(jobs(core.poll(t(6 * HOUR))).is_empty());
    assert!(core.group(H1).unwrap().valid_token(t(6 * HOUR)).is_some());
}

#[test]
fn a_failure_never_skips_the_last_chance_before_expiry() {
    let (mut core, s) = started(
        "retry_min = \"1m\"\nretry_max = \"1h\"",
        &[H1],
        &["/t/a.json"],
    );
    succeed(&mut core, &s, H1, "pw", 0, 10 * 60);
    fail(&mut core, &s, H1, 10 * 60 - 30, 1.0);
    assert_eq!(
        core.group(H1).unwrap().next,
        t(10 * 60 - 1),
        "1 m backoff cut to the last second"
    );
}

#[test]
fn min_interval_is_a_floor_and_a_lapse_is_a_warning() {
    let (mut core, s) = started("min_interval = \"1m\"", &[H1], &["/t/a.json"]);
    succeed(&mut core, &s, H1, "pw", 0, 4);
    assert_eq!(core.group(H1).unwrap().next, t(60));
    let (regs, _) = core.snapshot(t(1));
    assert!(
        regs[0].warnings[0].contains("runs out 56s before"),
        "{:?}",
        regs[0].warnings
    );
    assert!(fetches(&core.poll(t(59))).is_empty());
    assert_eq!(fetches(&core.poll(t(60))).len(), 1);
}

#[test]
fn a_token_that_arrives_expired_is_delivered_and_backs_off() {
    let (mut core, s) = started("", &[H1], &["/t/a.json"]);
    core.fetched(&key(&s, H1), Ok(token("skewed", t(0))), t(100), 0.0);
    let g = core.group(H1).unwrap();
    assert_eq!(g.skewed, 1);
    assert_eq!(g.next, t(105), "backs off like a failure");
    assert!(g.last_error.as_deref().unwrap().contains("check the clock"));
    let done = jobs(core.poll(t(100)));
    assert_eq!(done.len(), 1);
    assert!(
        done[0].desired.set.contains_key(H1),
        "written as ECR gave it"
    );
}

#[test]
fn an_expired_token_held_from_before_is_never_delivered() {
    let (mut core, s) = started("", &[H1], &["/t/a.json"]);
    succeed(&mut core, &s, H1, "pw", 0, 60);
    deliver_all(&mut core, 0);
    // A suspend across the expiry: on waking, the file changed too.
    core.changed(&BTreeSet::from([PathBuf::from("/t/a.json")]));
    let done = jobs(core.poll(t(120)));
    assert_eq!(done.len(), 1);
    assert!(
        done[0].desired.set.is_empty(),
        "the expired token is not written back"
    );
    assert!(
        done[0].desired.remove.contains(H1),
        "remove_expired removes it"
    );
}

#[test]
fn expiry_follows_the_state_while_every_fetch_fails() {
    let s = settings("", &[H1], &["/t/a.json"]);
    let mut state = State::default();
    state.targets.insert(
        PathBuf::from("/t/a.json"),
        BTreeMap::from([(H1.to_string(), Managed::new(t(0)))]),
    );
    let mut core = Core::new(Arc::clone(&s), state, t(10));
    let first = jobs(core.poll(t(10)));
    assert!(
        first[0].desired.remove.contains(H1),
        "removed at start, before any fetch"
    );
    core.delivered(&first[0], Ok(true), t(10), 0.0);
    assert!(core.state().managed(Path::new("/t/a.json")).is_none());
    fail(&mut core, &s, H1, 10, 0.0);
    assert!(jobs(core.poll(t(11))).is_empty(), "removed once, not again");
}

#[test]
fn an_entry_expiring_while_ecr_fails_is_removed_at_its_expiry() {
    let (mut core, s) = started("", &[H1], &["/t/a.json"]);
    succeed(&mut core, &s, H1, "pw", 0, 600);
    deliver_all(&mut core, 0);
    fail(&mut core, &s, H1, 300, 0.0);
    core.poll(t(305)); // the retry, in flight forever
    assert!(jobs(core.poll(t(599))).is_empty());
    let done = jobs(core.poll(t(600)));
    assert_eq!(done.len(), 1, "removed at the expiry itself");
    assert!(done[0].desired.remove.contains(H1));
}

#[test]
fn without_remove_expired_an_expired_entry_stays() {
    let s = settings("remove_expired = false", &[H1], &["/t/a.json"]);
    let mut state = State::default();
    state.targets.insert(
        PathBuf::from("/t/a.json"),
        BTreeMap::from([(H1.to_string(), Managed::new(t(0)))]),
    );
    let mut core = Core::new(Arc::clone(&s), state, t(10));
    let first = jobs(core.poll(t(10)));
    assert!(first[0].desired.remove.is_empty());
    core.delivered(&first[0], Ok(false), t(10), 0.0);
    assert!(jobs(core.poll(t(20))).is_empty());
}

#[test]
fn a_failed_delivery_is_retried_with_backoff() {
    let (mut core, s) = started("", &[H1], &["/t/a.json"]);
    succeed(&mut core, &s, H1, "pw", 0, 12 * HOUR);
    let done = jobs(core.poll(t(0)));
    core.delivered(
        &done[0],
        Err("refused: user \"portainer\" does not exist (yet)".into()),
        t(0),
        0.0,
    );
    assert!(core.target(0).last_error.is_some());
    assert!(jobs(core.poll(t(4))).is_empty());
    let again = jobs(core.poll(t(5)));
    assert_eq!(again.len(), 1, "retried after retry_min");
    core.delivered(&again[0], Ok(true), t(5), 0.0);
    assert!(core.target(0).last_error.is_none() && core.target(0).retry_at.is_none());
}

#[test]
fn a_change_during_a_delivery_is_delivered_after_it() {
    let (mut core, s) = started("", &[H1], &["/t/a.json"]);
    succeed(&mut core, &s, H1, "pw", 0, 12 * HOUR);
    let done = jobs(core.poll(t(0)));
    core.changed(&BTreeSet::from([PathBuf::from("/t/a.json")]));
    assert!(
        jobs(core.poll(t(0))).is_empty(),
        "one delivery per target at a time"
    );
    core.delivered(&done[0], Ok(true), t(0), 0.0);
    assert_eq!(jobs(core.poll(t(0))).len(), 1, "then again");
}

#[test]
fn only_changed_targets_are_delivered() {
    let (mut core, _) = started("", &[H1], &["/t/a.json", "/t/b.json"]);
    core.changed(&BTreeSet::from([
        PathBuf::from("/t/b.json"),
        PathBuf::from("/elsewhere"),
    ]));
    let done = jobs(core.poll(t(1)));
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].target.path, PathBuf::from("/t/b.json"));
}

#[test]
fn a_flood_of_changes_starts_at_most_five_deliveries_a_second() {
    let (mut core, _) = started("", &[H1], &["/t/a.json"]);
    let a = BTreeSet::from([PathBuf::from("/t/a.json")]);
    let mut started_at = Vec::new();
    for ms in (0..3000).step_by(10) {
        let now = t(10) + Duration::from_millis(ms);
        core.changed(&a);
        for j in jobs(core.poll(now)) {
            started_at.push(ms);
            core.delivered(&j, Ok(false), now, 0.0);
        }
    }
    assert_eq!(
        started_at,
        (0..3000).step_by(200).collect::<Vec<_>>(),
        "a user rewriting their file costs at most five reads a second"
    );
    core.changed(&a);
    assert_eq!(
        core.next_wake(t(12) + Duration::from_millis(850)),
        Duration::from_millis(150)
    );
}

#[test]
fn slow_deliveries_of_changes_take_at_most_a_fifth_of_the_time() {
    let (mut core, _) = started("", &[H1], &["/t/a.json"]);
    let a = BTreeSet::from([PathBuf::from("/t/a.json")]);
    let mut started_at = Vec::new();
    for ms in (0..10_000).step_by(10) {
        let now = t(10) + Duration::from_millis(ms);
        core.changed(&a);
        for j in jobs(core.poll(now)) {
            started_at.push(ms);
            // A large file: each delivery takes 400 ms.
            core.delivered(&j, Ok(false), now + Duration::from_millis(400), 0.0);
        }
    }
    let gaps: Vec<u64> = started_at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g >= 2000),
        "400 ms each, at most a fifth of the time: {gaps:?}"
    );
}

#[test]
fn a_flood_of_changes_is_diagnosed_no_more_often_than_delivered() {
    // A diagnosis reads and parses the file as a delivery does: a user touching a large file in
    // a loop must not have root do it without pause.
    let (mut core, _) = started("", &[H1], &["/t/a.json"]);
    core.diagnosed(Path::new("/t/a.json"), None, vec![], false);
    let a = BTreeSet::from([PathBuf::from("/t/a.json")]);
    let (mut deliveries, mut diagnoses) = (0, 0);
    for ms in (0..3000).step_by(10) {
        let now = t(10) + Duration::from_millis(ms);
        core.changed(&a);
        for action in core.poll(now) {
            match action {
                Action::Deliver(j) => {
                    deliveries += 1;
                    core.delivered(&j, Ok(false), now, 0.0);
                }
                Action::Diagnose(_) => {
                    diagnoses += 1;
                    core.diagnosed(Path::new("/t/a.json"), None, vec![], false);
                }
                _ => {}
            }
        }
    }
    assert_eq!((deliveries, diagnoses), (15, 15));
}

#[test]
fn at_most_max_writes_run_at_once() {
    let paths: Vec<String> = (0..10).map(|i| format!("/t/{i}.json")).collect();
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let s = settings("", &[H1], &refs);
    let mut core = Core::new(Arc::clone(&s), State::default(), t(0));
    let first = jobs(core.poll(t(0)));
    assert_eq!(first.len(), MAX_WRITES);
    assert!(jobs(core.poll(t(1))).is_empty());
    core.delivered(&first[0], Ok(false), t(1), 0.0);
    assert_eq!(
        jobs(core.poll(t(1))).len(),
        1,
        "a finished write frees its slot"
    );
}

#[test]
fn a_stuck_write_frees_its_slot_and_shows_as_stuck() {
    let paths: Vec<String> = (0..5).map(|i| format!("/t/{i}.json")).collect();
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let s = settings("", &[H1], &refs);
    let mut core = Core::new(Arc::clone(&s), State::default(), t(0));
    assert_eq!(jobs(core.poll(t(0))).len(), MAX_WRITES);
    assert!(jobs(core.poll(t(9))).is_empty());
    assert_eq!(
        jobs(core.poll(t(10))).len(),
        1,
        "after STUCK, the hung ones count no more"
    );
    let (_, targets) = core.snapshot(t(10));
    assert!(
        targets[0]
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("stuck")
    );
    assert_eq!(targets[0].state, TargetState::Error);
}

#[test]
fn ready_waits_for_the_first_deliveries_but_not_for_a_stuck_one() {
    let s = settings("", &[H1], &["/t/a.json", "/t/b.json"]);
    let mut core = Core::new(Arc::clone(&s), State::default(), t(0));
    let first = jobs(core.poll(t(0)));
    core.delivered(&first[0], Ok(false), t(0), 0.0);
    core.delivered(&first[1], Ok(false), t(0), 0.0);
    assert!(!ready(&core.poll(t(0))), "no group tried yet");
    succeed(&mut core, &s, H1, "pw", 0, 12 * HOUR);
    let a = core.poll(t(1));
    assert!(!ready(&a), "its tokens are not delivered yet");
    let done = jobs(a);
    core.delivered(&done[0], Ok(true), t(1), 0.0);
    assert!(!ready(&core.poll(t(1))), "one target still being written");
    succeed(&mut core, &s, H1, "pw2", 5, 12 * HOUR);
    let a = core.poll(t(5));
    assert!(!ready(&a), "still within 10 s");
    for j in jobs(a) {
        core.delivered(&j, Ok(true), t(5), 0.0);
    }
    assert!(
        ready(&core.poll(t(11))),
        "a write stuck for 10 s does not hold READY, wanted again or not"
    );
    assert!(!ready(&core.poll(t(12))), "READY once");
}

#[test]
fn ready_when_every_fetch_failed() {
    let (mut core, s) = started("", &[H1, H3], &["/t/a.json"]);
    fail(&mut core, &s, H1, 0, 0.0);
    assert!(!ready(&core.poll(t(0))));
    fail(&mut core, &s, H3, 0, 0.0);
    assert!(ready(&core.poll(t(0))));
}

#[test]
fn refresh_requests_coalesce_onto_a_fetch_under_way() {
    let (mut core, s) = started("", &[H1], &["/t/a.json"]);
    let tickets = core.refresh(None, t(0)).unwrap();
    let Ticket::Later(id) = tickets[0].1 else {
        panic!("not coalesced")
    };
    let Ticket::Later(id2) = core.refresh(Some(H1), t(0)).unwrap()[0].1 else {
        panic!()
    };
    assert_ne!(id, id2);
    let a = succeed(&mut core, &s, H1, "pw", 0, 12 * HOUR);
    let answered: Vec<u64> = a
        .iter()
        .filter_map(|a| match a {
            Action::Answer { id, result: Ok(_) } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(answered, [id, id2]);
}

#[test]
fn refresh_within_min_interval_answers_with_the_token_held() {
    let (mut core, s) = started("min_interval = \"1m\"", &[H1], &["/t/a.json"]);
    succeed(&mut core, &s, H1, "pw", 0, 12 * HOUR);
    let tickets = core.refresh(None, t(30)).unwrap();
    assert!(matches!(&tickets[0].1, Ticket::Now(Ok(tk)) if tk.expires_at == t(12 * HOUR)));
    assert!(fetches(&core.poll(t(30))).is_empty(), "no call");
    assert!(matches!(
        core.refresh(None, t(60)).unwrap()[0].1,
        Ticket::Later(_)
    ));
    assert_eq!(
        fetches(&core.poll(t(60))).len(),
        1,
        "after min_interval a request fetches"
    );
}

#[test]
fn refresh_during_backoff_says_when_the_next_attempt_is() {
    let (mut core, s) = started("", &[H1], &["/t/a.json"]);
    fail(&mut core, &s, H1, 0, 0.0);
    let tickets = core.refresh(Some(H1), t(1)).unwrap();
    let Ticket::Now(Err(e)) = &tickets[0].1 else {
        panic!("backoff bypassed")
    };
    let e = e.to_string();
    assert!(
        e.contains("next attempt is at") && e.contains("in 4s") && e.contains("Rate exceeded"),
        "{e}"
    );
    assert!(fetches(&core.poll(t(1))).is_empty());
    assert!(matches!(
        core.refresh(Some(H1), t(5)).unwrap()[0].1,
        Ticket::Later(_)
    ));
}

#[test]
fn refresh_of_an_unknown_host_is_an_error_and_one_host_names_only_itself() {
    let (mut core, _) = started("", &[H1, H2], &["/t/a.json"]);
    assert!(
        core.refresh(Some("ghcr.io"), t(0))
            .unwrap_err()
            .to_string()
            .contains("not a configured registry")
    );
    let one = core.refresh(Some(H2), t(0)).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].0, [H2]);
    let all = core.refresh(None, t(0)).unwrap();
    assert_eq!(all[0].0, [H1, H2]);
}

#[test]
fn a_reload_keeps_the_groups_that_remain_and_fetches_new_ones() {
    let (mut core, s) = started("", &[H1], &["/t/a.json"]);
    succeed(&mut core, &s, H1, "pw", 0, 12 * HOUR);
    deliver_all(&mut core, 0);
    let next = core.group(H1).unwrap().next;
    let new = settings("", &[H1, H3], &["/t/a.json"]);
    core.reload(Arc::clone(&new), t(100));
    assert_eq!(core.group(H1).unwrap().next, next, "schedule kept");
    assert!(core.group(H1).unwrap().token.is_some(), "token kept");
    let a = core.poll(t(100));
    assert_eq!(fetches(&a), [key(&new, H3)], "only the new group");
    let done = jobs(a);
    assert_eq!(done.len(), 1, "every target brought up to date");
    assert!(done[0].desired.set.contains_key(H1));
}

#[test]
fn a_reload_stops_fetches_of_removed_groups() {
    let (mut core, s) = started("", &[H1, H3], &["/t/a.json"]);
    let a = core.reload(settings("", &[H1], &["/t/a.json"]), t(1));
    assert!(matches!(&a[..], [Action::Abort(k)] if *k == key(&s, H3)));
    assert!(
        core.fetched(&key(&s, H3), Ok(token("late", t(HOUR))), t(2), 0.0)
            .is_empty(),
        "a late result is ignored"
    );
}

#[test]
fn a_target_removed_by_a_reload_loses_our_entries_then_is_forgotten() {
    let (mut core, s) = started("", &[H1], &["/t/a.json", "/t/b.json"]);
    succeed(&mut core, &s, H1, "pw", 0, 12 * HOUR);
    deliver_all(&mut core, 0);
    let a = core.reload(settings("", &[H1], &["/t/a.json"]), t(10));
    let removal = jobs(a);
    assert_eq!(removal.len(), 1);
    assert_eq!(removal[0].target.path, PathBuf::from("/t/b.json"));
    assert!(removal[0].desired.set.is_empty() && removal[0].desired.remove.contains(H1));
    let saved = core.delivered(&removal[0], Ok(true), t(10), 0.0);
    assert!(matches!(&saved[..], [Action::SaveState]));
    assert!(core.state().managed(Path::new("/t/b.json")).is_none());
    assert!(core.state().managed(Path::new("/t/a.json")).is_some());
}

#[test]
fn at_most_max_writes_diagnoses_run_at_once() {
    let paths: Vec<String> = (0..10).map(|i| format!("/t/{i}.json")).collect();
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let s = settings("", &[H1], &refs);
    let mut core = Core::new(Arc::clone(&s), State::default(), t(0));
    let count = |a: &[Action]| {
        a.iter()
            .filter(|a| matches!(a, Action::Diagnose(_)))
            .count()
    };
    assert_eq!(count(&core.poll(t(0))), MAX_WRITES);
    assert_eq!(count(&core.poll(t(1))), 0);
    core.diagnosed(Path::new("/t/0.json"), None, vec![], false);
    assert_eq!(count(&core.poll(t(1))), 1, "one finished, one more starts");
}

#[test]
fn a_write_finishing_after_its_target_was_removed_is_undone() {
    let (mut core, s) = started("", &[H1], &["/t/a.json", "/t/b.json"]);
    succeed(&mut core, &s, H1, "pw", 0, 12 * HOUR);
    let writes = jobs(core.poll(t(0)));
    let late = writes
        .iter()
        .find(|j| j.target.path == Path::new("/t/b.json"))
        .unwrap();
    // b is removed while its write is under way; the removal runs first...
    let removal = jobs(core.reload(settings("", &[H1], &["/t/a.json"]), t(1)));
    assert!(
        removal.is_empty(),
        "nothing recorded for b yet, nothing to remove"
    );
    // ...then the late write lands, putting H1 back into b: it is removed again.
    let again = jobs(core.delivered(late, Ok(true), t(2), 0.0));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].target.path, PathBuf::from("/t/b.json"));
    assert!(again[0].desired.set.is_empty() && again[0].desired.remove.contains(H1));
    core.delivered(&again[0], Ok(true), t(3), 0.0);
    assert!(core.state().managed(Path::new("/t/b.json")).is_none());
}

#[test]
fn a_reload_rediagnoses_every_target() {
    let (mut core, _) = started("", &[H1], &["/t/a.json", "/t/b.json"]);
    for i in 0..2 {
        core.diagnosed(
            Path::new(if i == 0 { "/t/a.json" } else { "/t/b.json" }),
            None,
            vec![],
            false,
        );
    }
    assert!(
        !core
            .poll(t(1))
            .iter()
            .any(|a| matches!(a, Action::Diagnose(_)))
    );
    core.reload(settings("", &[H1], &["/t/a.json", "/t/b.json"]), t(2));
    let diag = core
        .poll(t(2))
        .iter()
        .filter(|a| matches!(a, Action::Diagnose(_)))
        .count();
    assert_eq!(diag, 2);
}

#[test]
fn a_change_on_disk_rediagnoses_that_target_alone() {
    // `status` shows what `check` would: a credsStore added, a mode fixed, is seen at once.
    let (mut core, _) = started("", &[H1], &["/t/a.json", "/t/b.json"]);
    for p in ["/t/a.json", "/t/b.json"] {
        core.diagnosed(Path::new(p), None, vec![], false);
    }
    assert!(
        !core
            .poll(t(1))
            .iter()
            .any(|a| matches!(a, Action::Diagnose(_)))
    );
    core.changed(&BTreeSet::from([PathBuf::from("/t/b.json")]));
    let diag: Vec<usize> = core
        .poll(t(2))
        .iter()
        .filter_map(|a| match a {
            Action::Diagnose(i) => Some(*i),
            _ => None,
        })
        .collect();
    assert_eq!(diag, [1]);
}

#[test]
fn a_delivery_records_what_we_manage_and_asks_to_save_only_on_change() {
    let (mut core, s) = started("", &[H1, H2], &["/t/a.json"]);
    succeed(&mut core, &s, H1, "pw", 0, 12 * HOUR);
    let done = jobs(core.poll(t(0)));
    let a = core.delivered(&done[0], Ok(true), t(0), 0.0);
    assert!(matches!(&a[..], [Action::SaveState]));
    let m = core.state().managed(Path::new("/t/a.json")).unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(m[H1].expires_at(), t(12 * HOUR));
    core.changed(&BTreeSet::from([PathBuf::from("/t/a.json")]));
    let again = jobs(core.poll(t(1)));
    assert!(
        core.delivered(&again[0], Ok(false), t(1), 0.0).is_empty(),
        "same state: no save"
    );
}

#[test]
fn next_wake_is_the_earliest_deadline_within_a_tick() {
    let (mut core, s) = started("min_interval = \"1s\"", &[H1], &["/t/a.json"]);
    assert_eq!(core.next_wake(t(0)), TICK, "all in flight: only the tick");
    succeed(&mut core, &s, H1, "pw", 0, 40);
    assert_eq!(
        core.next_wake(t(0)),
        Duration::from_secs(20),
        "the refresh at half life"
    );
    let done = jobs(core.poll(t(0)));
    assert_eq!(
        core.next_wake(t(0)),
        Duration::from_secs(10),
        "a write turns stuck at 10 s"
    );
    core.delivered(&done[0], Err("disk full".into()), t(0), 0.0);
    assert_eq!(
        core.next_wake(t(0)),
        Duration::from_secs(5),
        "the write's retry"
    );
    assert_eq!(core.next_wake(t(100)), Duration::ZERO, "overdue");
}

#[test]
fn the_snapshot_follows_a_registry_through_its_states() {
    let (mut core, s) = started("", &[H1], &["/t/a.json"]);
    assert_eq!(core.snapshot(t(0)).0[0].state, RegistryState::Refreshing);
    succeed(&mut core, &s, H1, "pw", 0, 100);
    assert_eq!(core.snapshot(t(1)).0[0].state, RegistryState::Fresh);
    fail(&mut core, &s, H1, 50, 0.0);
    let r = &core.snapshot(t(51)).0[0];
    assert_eq!(
        (r.state, r.consecutive_failures),
        (RegistryState::Failing, 1)
    );
    assert_eq!(core.snapshot(t(100)).0[0].state, RegistryState::Expired);
    let s2 = settings("", &[H3], &["/t/a.json"]);
    let fresh = Core::new(Arc::clone(&s2), State::default(), t(0));
    assert_eq!(fresh.snapshot(t(0)).0[0].state, RegistryState::Pending);
}

#[test]
fn a_result_for_a_group_removed_meanwhile_is_ignored() {
    let (mut core, s) = started("", &[H1], &["/t/a.json"]);
    let other = settings("", &[H3], &[]);
    assert!(
        core.fetched(&key(&other, H3), Ok(token("x", t(HOUR))), t(0), 0.0)
            .is_empty()
    );
    assert!(core.group(H1).unwrap().in_flight, "{s:?}");
}

#[test]
fn foreign_hosts_named_by_the_state_are_never_removed() {
    let s = settings("", &[H1], &["/t/a.json"]);
    let mut state = State::default();
    state.targets.insert(
        PathBuf::from("/t/a.json"),
        BTreeMap::from([
            ("ghcr.io".to_string(), Managed::new(t(0))),
            (H2.to_string(), Managed::new(t(HOUR))),
        ]),
    );
    let mut core = Core::new(Arc::clone(&s), state, t(10));
    let first = jobs(core.poll(t(10)));
    assert!(!first[0].desired.remove.contains("ghcr.io"));
    assert!(
        first[0].desired.remove.contains(H2),
        "an ECR host no longer configured goes"
    );
}

#[test]
fn the_whole_suite_runs_without_a_clock() {
    // Every test above passes times in; this one checks the core never asked for the real clock
    // by running a day of schedule in a loop of pure calls.
    let (mut core, s) = started("", &[H1], &["/t/a.json"]);
    succeed(&mut core, &s, H1, "pw", 0, 12 * HOUR);
    let mut at = 0;
    let mut calls = 1;
    while at < 24 * HOUR {
        let a = core.poll(t(at));
        for k in fetches(&a) {
            calls += 1;
            core.fetched(&k, Ok(token("pw", t(at + 12 * HOUR))), t(at), 0.5);
        }
        for j in jobs(a) {
            core.delivered(&j, Ok(true), t(at), 0.0);
        }
        at += core.next_wake(t(at)).as_secs().max(1);
    }
    assert!(
        (4..=5).contains(&calls),
        "{calls} fetches in a day of 12 h tokens: {s:?}"
    );
}

#[test]
fn aliases_get_their_registrys_token_and_are_removed_like_hosts() {
    const M: &str = "mirror.internal:5000";
    let with = |aliases: &str, targets: &[&str]| {
        let mut text = format!("[[registry]]\nhost = \"{H1}\"\naliases = [{aliases}]\n");
        for p in targets {
            text += &format!("[[target]]\npath = \"{p}\"\n");
        }
        Arc::new(crate::config::parse(&text, None, &NoAccounts).expect("valid test config"))
    };
    let s = with(&format!("\"{M}\""), &["/t/a.json", "/t/b.json"]);
    let mut core = Core::new(Arc::clone(&s), State::default(), t(0));
    for j in jobs(core.poll(t(0))) {
        core.delivered(&j, Ok(false), t(0), 0.0);
    }
    succeed(&mut core, &s, H1, "pw", 0, 12 * HOUR);
    let done = deliver_all(&mut core, 0);
    assert_eq!(done.len(), 2);
    for j in &done {
        assert_eq!(j.desired.set[M], j.desired.set[H1], "the same credential");
        assert!(j.desired.aliases.contains(M) && !j.desired.aliases.contains(H1));
        assert_eq!(j.expiries[M], t(12 * HOUR));
    }
    let m = core.state().managed(Path::new("/t/a.json")).unwrap();
    assert!(m[M].alias && !m[H1].alias, "{m:?}");
    assert_eq!(
        core.credentials(t(1)).keys().collect::<Vec<_>>(),
        [H1, M],
        "the helper answers for the alias too"
    );
    assert_eq!(core.snapshot(t(1)).0[0].aliases, [M]);

    // The alias leaves the config: its entries go; the host stays.
    let a = core.reload(with("", &["/t/a.json", "/t/b.json"]), t(10));
    assert!(jobs(a).is_empty());
    let done = deliver_all(&mut core, 10);
    assert_eq!(done.len(), 2);
    for j in &done {
        assert!(j.desired.remove.contains(M) && j.desired.aliases.contains(M));
        assert!(j.desired.set.contains_key(H1) && !j.desired.set.contains_key(M));
    }
    let m = core.state().managed(Path::new("/t/a.json")).unwrap();
    assert_eq!(m.keys().collect::<Vec<_>>(), [H1]);
    assert!(!core.credentials(t(11)).contains_key(M));

    // A target that leaves the config takes its alias entries with it.
    let s = with(&format!("\"{M}\""), &["/t/a.json", "/t/b.json"]);
    core.reload(Arc::clone(&s), t(20));
    deliver_all(&mut core, 20);
    let removal = jobs(core.reload(with(&format!("\"{M}\""), &["/t/a.json"]), t(30)));
    assert_eq!(removal.len(), 1);
    let d = &removal[0].desired;
    assert!(d.remove.contains(M) && d.remove.contains(H1) && d.aliases.contains(M));
}
