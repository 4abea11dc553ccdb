//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection`
//! does it, so that two operator replicas never reconcile at once:
//!
//! - A standby judges the lease by its own monotonic clock: it records when it last saw the
//!   lease change (resourceVersion, holder, renewTime or duration) and takes over only once
//!   it has seen no change for the lease's duration. The remote `renewTime` is never
//!   compared with the local clock, so skew between nodes cannot shorten (or stretch) a lease.
//! - The leader renews every retry period and reports the lease lost once no renewal has
//!   succeeded for the renew deadline, which is shorter than the lease duration: a stalled
//!   leader stops before a standby may take over.
//! - On shutdown the leader releases the lease (no holder, duration 1 s, like client-go's
//!   `ReleaseOnCancel`), so a standby takes over on its next poll instead of after a lease.
//!
//! Why our own code and not a crate (checked against kube 5 / k8s-openapi 0.29):
//! `kube-lease-manager` 0.13 builds with kube 5 and is maintained, but it judges expiry as the
//! remote `renewTime` plus the duration against the local wall clock (with a skew "grace"),
//! the very flaw this module avoids; `kube-leader-election` 0.44 needs kube 4 and compares
//! `renewTime` with the local clock too; `kube-coordinate` (0.2: kube ≤ 1, 2.0.0-rc.0:
//! kube 2) does not build with kube 5. The algorithm is small; its decisions are the pure
//! functions below, each unit-tested.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};

/// Lease duration, renew deadline and retry period (client-go's defaults for controllers
/// are 15 s, 10 s and 2 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How long a standby waits, after it last saw the lease change, before taking it.
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby looks at the lease.
    pub retry_period: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Why a set of timings cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimingsError {
    /// A deadline at or past the lease lets a standby take over while the leader still leads.
    #[error(
        "the renew deadline ({deadline} s) must be shorter than the lease duration ({lease} s)"
    )]
    DeadlineNotBeforeLease {
        /// Renew deadline, seconds.
        deadline: u64,
        /// Lease duration, seconds.
        lease: u64,
    },
    /// The leader must get at least two tries at renewing within the deadline.
    #[error("the retry period ({retry} s) must be shorter than the renew deadline ({deadline} s)")]
    RetryNotBeforeDeadline {
        /// Retry period, seconds.
        retry: u64,
        /// Renew deadline, seconds.
        deadline: u64,
    },
    /// Zero, or more than a Lease's `leaseDurationSeconds` (an i32) holds.
    #[error("{what} must be between 1 and {} seconds, not {value}", i32::MAX)]
    OutOfRange {
        /// Which setting.
        what: &'static str,
        /// Its value, seconds.
        value: u64,
    },
}

impl Timings {
    /// Checks `retry < deadline < lease`, each at least one second.
    pub fn from_secs(lease: u64, deadline: u64, retry: u64) -> Result<Self, TimingsError> {
        for (what, value) in [
            ("the lease duration", lease),
            ("the renew deadline", deadline),
            ("the retry period", retry),
        ] {
            if value == 0 || value > i32::MAX as u64 {
                return Err(TimingsError::OutOfRange { what, value });
            }
        }
        if deadline >= lease {
            return Err(TimingsError::DeadlineNotBeforeLease { deadline, lease });
        }
        if retry >= deadline {
            return Err(TimingsError::RetryNotBeforeDeadline { retry, deadline });
        }
        Ok(Self {
            lease_duration: Duration::from_secs(lease),
            renew_deadline: Duration::from_secs(deadline),
            retry_period: Duration::from_secs(retry),
        })
    }
}

/// Where the Lease is and who this replica is.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This process's identity in `holderIdentity` (see [`process_identity`]).
    pub identity: String,
    /// Durations.
    pub timings: Timings,
}

/// `<name>_<unique id of this process>`, as controller-runtime names holders. A restarted
/// container keeps its pod name but must not inherit the lease its dead predecessor held
/// (it would renew it at once, before a standby that saw it die could take over).
/// Pod names cannot contain `_`, so the pod name stays readable as the part before it.
pub fn process_identity(name: &str) -> String {
    let unique = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|u| u.trim().to_owned())
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            format!("{nanos:x}-{}", std::process::id())
        });
    format!("{name}_{unique}")
}

/// The parts of a Lease whose change proves its holder (or someone) is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `metadata.resourceVersion`: changes on every write.
    pub resource_version: Option<String>,
    /// `spec.holderIdentity`.
    pub holder: Option<String>,
    /// `spec.renewTime`, compared for change only, never with the local clock.
    pub renew_time: Option<MicroTime>,
    /// `spec.leaseDurationSeconds`.
    pub duration_seconds: Option<i32>,
}

impl Record {
    /// The record of `lease`.
    pub fn of(lease: &Lease) -> Self {
        let spec = lease.spec.as_ref();
        Self {
            resource_version: lease.metadata.resource_version.clone(),
            holder: spec.and_then(|s| s.holder_identity.clone()),
            renew_time: spec.and_then(|s| s.renew_time.clone()),
            duration_seconds: spec.and_then(|s| s.lease_duration_seconds),
        }
    }
}

/// What this replica last saw of the Lease, and when it first saw it that way (by its own
/// monotonic clock).
#[derive(Debug, Clone, Default)]
pub struct Observer {
    last: Option<(Record, Instant)>,
}

impl Observer {
    /// Records `record` as seen at `now`; the time moves only when the record changed.
    pub fn observe(&mut self, record: Record, now: Instant) {
        match &mut self.last {
            Some((seen, _)) if *seen == record => {}
            _ => self.last = Some((record, now)),
        }
    }

    /// The last record and when it was first seen.
    pub fn last(&self) -> Option<&(Record, Instant)> {
        self.last.as_ref()
    }
}

/// What to do with a Lease another replica may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// This process holds it: renew.
    Renew,
    /// Nobody holds it (never, released, or unseen to change for a whole lease): take it.
    Take,
    /// Another replica holds it; it may take it over after `remaining` more without change.
    Wait {
        /// Time left before the lease counts as expired here.
        remaining: Duration,
    },
}

/// Decides from what was observed when: a holder's lease lasts its `leaseDurationSeconds`
/// (`fallback` when unset or not positive) from the moment this replica first saw the
/// current record, whatever the record's own timestamps say.
pub fn decide(
    record: &Record,
    first_seen: Instant,
    now: Instant,
    identity: &str,
    fallback: Duration,
) -> Action {
    match record.holder.as_deref() {
        None | Some("") => Action::Take,
        Some(holder) if holder == identity => Action::Renew,
        Some(_) => {
            let lease = record
                .duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .filter(|s| *s > 0)
                .map_or(fallback, Duration::from_secs);
            let unchanged_for = now.saturating_duration_since(first_seen);
            match lease.checked_sub(unchanged_for) {
                Some(remaining) if !remaining.is_zero() => Action::Wait { remaining },
                _ => Action::Take,
            }
        }
    }
}

/// Whether the leader, whose last renewal that succeeded was sent at `last_renew`, has
/// passed its renew deadline at `now` and must stop leading.
pub fn renew_deadline_passed(last_renew: Instant, now: Instant, deadline: Duration) -> bool {
    now.saturating_duration_since(last_renew) >= deadline
}

/// The spec a leader writes: renewed now; acquire time and transitions kept when it already
/// held the lease, else acquired now as one more transition.
pub fn leading_spec(
    current: Option<&LeaseSpec>,
    identity: &str,
    timings: &Timings,
    now: Timestamp,
) -> LeaseSpec {
    let now = MicroTime(now);
    let held = current.is_some_and(|c| c.holder_identity.as_deref() == Some(identity));
    let transitions = current.and_then(|c| c.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        // Timings::from_secs keeps it within i32.
        lease_duration_seconds: Some(
            i32::try_from(timings.lease_duration.as_secs()).unwrap_or(i32::MAX),
        ),
        acquire_time: if held {
            current.and_then(|c| c.acquire_time.clone())
        } else {
            Some(now.clone())
        },
        renew_time: Some(now),
        lease_transitions: Some(if held { transitions } else { transitions + 1 }),
        ..LeaseSpec::default()
    }
}

/// The spec a leader writes when it steps down: no holder and a one-second duration (as
/// client-go's `ReleaseOnCancel`), transitions kept.
pub fn released_spec(current: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: current.lease_transitions,
        ..LeaseSpec::default()
    }
}

/// Why a leader stopped leading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Lost {
    /// Another replica holds the lease now.
    #[error("the lease is held by {0}")]
    TakenBy(String),
    /// No renewal succeeded within the renew deadline.
    #[error("no renewal succeeded within the renew deadline ({0:?})")]
    DeadlinePassed(Duration),
}

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    observer: Observer,
    /// When the last successful renewal (or the acquisition) was sent.
    last_renew: Option<Instant>,
}

/// The outcome of one try.
enum Try {
    /// This process holds the lease (created, taken or renewed).
    Leading,
    /// Another replica holds it.
    Waiting(Action),
    /// Someone wrote the lease between our read and our write; look again.
    Conflict,
}

impl Elector {
    /// An elector for `config`'s Lease.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        let api = Api::namespaced(client, &config.namespace);
        Self {
            api,
            config,
            observer: Observer::default(),
            last_renew: None,
        }
    }

    /// This process's identity.
    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    /// The holder last seen, or empty.
    fn holder(&self) -> String {
        self.observer
            .last()
            .and_then(|(r, _)| r.holder.clone())
            .unwrap_or_default()
    }

    /// Tries once to create, take or renew the lease.
    async fn try_acquire_or_renew(&mut self) -> Result<Try, kube::Error> {
        let identity = self.config.identity.clone();
        let timings = self.config.timings;
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(leading_spec(None, &identity, &timings, Timestamp::now())),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Try::Leading),
                // Another replica created it first; look at it next time.
                Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(Try::Conflict),
                Err(e) => Err(e),
            };
        };
        let now = Instant::now();
        self.observer.observe(Record::of(&lease), now);
        let action = match self.observer.last() {
            Some((record, seen)) => decide(record, *seen, now, &identity, timings.lease_duration),
            None => Action::Take,
        };
        if let Action::Wait { .. } = action {
            return Ok(Try::Waiting(action));
        }
        lease.spec = Some(leading_spec(
            lease.spec.as_ref(),
            &identity,
            &timings,
            Timestamp::now(),
        ));
        // The resourceVersion read above goes with the write: if anyone wrote in between,
        // this is a conflict, never a second leader.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.observer.observe(Record::of(&written), Instant::now());
                Ok(Try::Leading)
            }
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(Try::Conflict),
            Err(e) => Err(e),
        }
    }

    /// Waits until this process holds the lease, looking every retry period.
    pub async fn acquire(&mut self) {
        let Timings {
            retry_period: retry,
            renew_deadline: limit,
            ..
        } = self.config.timings;
        loop {
            let sent = Instant::now();
            // A hung request must not stop the standby looking; a slow one (a loaded API
            // server) gets as long as a leader's renewal does.
            match tokio::time::timeout(limit, self.try_acquire_or_renew()).await {
                Ok(Ok(Try::Leading)) => {
                    self.last_renew = Some(sent);
                    tracing::info!(lease = %self.config.name, identity = %self.config.identity, "became leader");
                    return;
                }
                Ok(Ok(Try::Waiting(action))) => {
                    tracing::debug!(lease = %self.config.name, holder = %self.holder(), ?action, "another replica leads; standing by");
                }
                Ok(Ok(Try::Conflict)) => {
                    tracing::debug!(lease = %self.config.name, "another replica wrote the lease first")
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.config.name, error = %e, "cannot read or take the lease; retrying")
                }
                Err(_) => {
                    tracing::warn!(lease = %self.config.name, "a lease request took longer than the renew deadline; retrying")
                }
            }
            tokio::time::sleep(retry.saturating_sub(sent.elapsed())).await;
        }
    }

    /// Renews the lease every retry period while leading; returns when leadership is lost
    /// (the caller must stop reconciling at once). Each request is cut off at the renew
    /// deadline, so a hung API call cannot keep a stalled leader leading. Cancel-safe: a new
    /// call continues from the last successful renewal.
    pub async fn hold(&mut self) -> Lost {
        let timings = self.config.timings;
        loop {
            let last = *self.last_renew.get_or_insert_with(Instant::now);
            let deadline = last + timings.renew_deadline;
            let next = (Instant::now() + timings.retry_period).min(deadline);
            tokio::time::sleep_until(next.into()).await;
            // A process stopped (SIGSTOP, a frozen VM) wakes up here late: past the deadline
            // it must not send one more renewal, however fast the API answers.
            if renew_deadline_passed(last, Instant::now(), timings.renew_deadline) {
                tracing::error!(lease = %self.config.name, deadline = ?timings.renew_deadline, "renew deadline passed");
                return Lost::DeadlinePassed(timings.renew_deadline);
            }
            let sent = Instant::now();
            let result =
                tokio::time::timeout_at(deadline.into(), self.try_acquire_or_renew()).await;
            match result {
                Ok(Ok(Try::Leading)) => self.last_renew = Some(sent),
                Ok(Ok(Try::Waiting(_))) => {
                    let holder = self.holder();
                    tracing::error!(lease = %self.config.name, %holder, "the lease was taken by another replica");
                    return Lost::TakenBy(holder);
                }
                // Retried until the deadline: the next read shows who holds it.
                Ok(Ok(Try::Conflict)) => {
                    tracing::warn!(lease = %self.config.name, "conflict renewing the lease; retrying")
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.config.name, error = %e, "cannot renew the lease")
                }
                Err(_) => {
                    tracing::warn!(lease = %self.config.name, "lease renewal still pending at the renew deadline")
                }
            }
            // After a failure the next turn sleeps at most until the deadline, then stops.
        }
    }

    /// Steps down: if this process holds the lease, writes [`released_spec`] (with the
    /// resourceVersion just read, so a lease someone else took meanwhile stays theirs).
    /// Returns whether it released one.
    pub async fn release(&mut self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(false);
        };
        let Some(current) = lease.spec.as_ref() else {
            return Ok(false);
        };
        if current.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(false);
        }
        lease.spec = Some(released_spec(current, Timestamp::now()));
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await?;
        self.last_renew = None;
        tracing::info!(lease = %self.config.name, identity = %self.config.identity, "released the lease");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(version: &str, holder: Option<&str>, renewed: i64, secs: Option<i32>) -> Record {
        Record {
            resource_version: Some(version.to_owned()),
            holder: holder.map(str::to_owned),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            duration_seconds: secs,
        }
    }

    const LEASE: Duration = Duration::from_secs(15);

    #[test]
    fn timings_need_retry_before_deadline_before_lease() {
        assert_eq!(Timings::from_secs(15, 10, 2), Ok(Timings::default()));
        assert_eq!(
            Timings::from_secs(10, 10, 2),
            Err(TimingsError::DeadlineNotBeforeLease {
                deadline: 10,
                lease: 10
            })
        );
        assert!(matches!(
            Timings::from_secs(15, 20, 2),
            Err(TimingsError::DeadlineNotBeforeLease { .. })
        ));
        assert!(matches!(
            Timings::from_secs(15, 10, 10),
            Err(TimingsError::RetryNotBeforeDeadline { .. })
        ));
        assert!(matches!(
            Timings::from_secs(15, 10, 0),
            Err(TimingsError::OutOfRange { .. })
        ));
        assert!(matches!(
            Timings::from_secs(u64::MAX, 10, 2),
            Err(TimingsError::OutOfRange { .. })
        ));
    }

    #[test]
    fn a_free_or_own_lease_is_taken_or_renewed_at_once() {
        let t0 = Instant::now();
        let free = record("1", None, 0, Some(15));
        assert_eq!(decide(&free, t0, t0, "a", LEASE), Action::Take);
        let released = record("2", Some(""), 0, Some(1));
        assert_eq!(decide(&released, t0, t0, "a", LEASE), Action::Take);
        let own = record("3", Some("a"), 0, Some(15));
        assert_eq!(decide(&own, t0, t0, "a", LEASE), Action::Renew);
    }

    #[test]
    fn expiry_counts_from_the_local_observation_not_the_remote_renew_time() {
        let t0 = Instant::now();
        let wall_now = Timestamp::now().as_second();
        // renewTime an hour in the past (a leader whose clock runs late) or an hour in the
        // future (runs early): either way the lease lasts 15 s from when this replica saw it.
        for renewed in [wall_now - 3600, wall_now + 3600] {
            let held = record("7", Some("b"), renewed, Some(15));
            assert_eq!(
                decide(&held, t0, t0, "a", LEASE),
                Action::Wait {
                    remaining: Duration::from_secs(15)
                },
                "just seen: the whole lease remains"
            );
            assert_eq!(
                decide(&held, t0, t0 + Duration::from_secs(14), "a", LEASE),
                Action::Wait {
                    remaining: Duration::from_secs(1)
                }
            );
            assert_eq!(
                decide(&held, t0, t0 + Duration::from_secs(15), "a", LEASE),
                Action::Take
            );
        }
    }

    #[test]
    fn the_holders_lease_duration_counts_and_a_missing_one_falls_back() {
        let t0 = Instant::now();
        let short = record("1", Some("b"), 0, Some(5));
        assert_eq!(
            decide(&short, t0, t0 + Duration::from_secs(5), "a", LEASE),
            Action::Take
        );
        for secs in [None, Some(0), Some(-3)] {
            let odd = record("1", Some("b"), 0, secs);
            assert!(matches!(
                decide(&odd, t0, t0 + Duration::from_secs(5), "a", LEASE),
                Action::Wait { .. }
            ));
        }
    }

    #[test]
    fn only_a_change_restarts_the_clock() {
        let t0 = Instant::now();
        let mut observer = Observer::default();
        observer.observe(record("1", Some("b"), 100, Some(15)), t0);
        // The same record seen again later: still first seen at t0.
        observer.observe(
            record("1", Some("b"), 100, Some(15)),
            t0 + Duration::from_secs(10),
        );
        assert_eq!(observer.last().map(|(_, at)| *at), Some(t0));
        let (r, at) = observer.last().cloned().unwrap();
        assert_eq!(
            decide(&r, at, t0 + Duration::from_secs(16), "a", LEASE),
            Action::Take,
            "a holder that stopped renewing is taken over"
        );
        // A renewal (new resourceVersion and renewTime) restarts the local clock, even when
        // its renewTime is behind the local wall clock by far more than a lease.
        let t1 = t0 + Duration::from_secs(12);
        observer.observe(record("2", Some("b"), 101, Some(15)), t1);
        let (r, at) = observer.last().cloned().unwrap();
        assert_eq!(at, t1);
        assert!(matches!(
            decide(&r, at, t0 + Duration::from_secs(16), "a", LEASE),
            Action::Wait { .. }
        ));
        // Any single field counts as a change.
        let t2 = t1 + Duration::from_secs(1);
        observer.observe(record("2", Some("c"), 101, Some(15)), t2);
        assert_eq!(observer.last().map(|(_, at)| *at), Some(t2));
    }

    #[test]
    fn the_leader_stops_at_the_renew_deadline_before_the_lease_ends() {
        let timings = Timings::default();
        let sent = Instant::now();
        let deadline = timings.renew_deadline;
        assert!(!renew_deadline_passed(
            sent,
            sent + Duration::from_secs(9),
            deadline
        ));
        assert!(renew_deadline_passed(
            sent,
            sent + Duration::from_secs(10),
            deadline
        ));
        // A standby that saw the renewal no earlier than it was sent cannot take over
        // before the leader has stopped.
        let seen = sent;
        assert!(matches!(
            decide(
                &record("9", Some("leader"), 0, Some(15)),
                seen,
                sent + deadline,
                "standby",
                timings.lease_duration
            ),
            Action::Wait { .. }
        ));
    }

    #[test]
    fn leading_keeps_or_starts_the_term() {
        let timings = Timings::default();
        let t = Timestamp::from_second(1000).unwrap();
        let fresh = leading_spec(None, "a", &timings, t);
        assert_eq!(fresh.holder_identity.as_deref(), Some("a"));
        assert_eq!(fresh.lease_duration_seconds, Some(15));
        assert_eq!(fresh.lease_transitions, Some(1));
        let later = Timestamp::from_second(1002).unwrap();
        let renewed = leading_spec(Some(&fresh), "a", &timings, later);
        assert_eq!(renewed.acquire_time, fresh.acquire_time);
        assert_eq!(renewed.renew_time, Some(MicroTime(later)));
        assert_eq!(renewed.lease_transitions, Some(1));
        let taken = leading_spec(Some(&renewed), "b", &timings, later);
        assert_eq!(taken.acquire_time, Some(MicroTime(later)));
        assert_eq!(taken.lease_transitions, Some(2));
    }

    #[test]
    fn release_clears_the_holder_so_a_standby_takes_over_at_once() {
        let timings = Timings::default();
        let t = Timestamp::from_second(1000).unwrap();
        let held = leading_spec(None, "a", &timings, t);
        let released = released_spec(&held, t);
        assert_eq!(released.holder_identity, None);
        assert_eq!(released.lease_duration_seconds, Some(1));
        assert_eq!(released.lease_transitions, held.lease_transitions);
        let lease = Lease {
            metadata: ObjectMeta {
                resource_version: Some("5".into()),
                ..ObjectMeta::default()
            },
            spec: Some(released),
        };
        let t0 = Instant::now();
        assert_eq!(
            decide(&Record::of(&lease), t0, t0, "b", LEASE),
            Action::Take
        );
    }

    #[test]
    fn identities_are_unique_per_process_and_keep_the_pod_name() {
        let a = process_identity("zeronas-operator-5d9c-x1");
        let b = process_identity("zeronas-operator-5d9c-x1");
        assert_ne!(a, b);
        assert_eq!(a.split('_').next(), Some("zeronas-operator-5d9c-x1"));
    }
}
