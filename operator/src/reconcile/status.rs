//! Status: phase and standard Conditions from what the cluster reports.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::service::{HTTP_PORT, SFTP_PORT};
use crate::crd::{DataPathStatus, Endpoints, NasVolume, NasVolumeStatus, Phase, Protocol, Rdma};
use crate::names::OwnedNames;

/// Condition types, in the order they are reported.
pub const CONDITIONS: [&str; 4] = ["Ready", "StorageBound", "DataplaneAvailable", "ShareBound"];

/// What the controller observed about the owned objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Set when the spec cannot be satisfied (e.g. the storage class is missing): the reason
    /// and message of the Degraded condition.
    pub unsatisfiable: Option<(String, String)>,
    /// Phase of the backing claim (`Bound`, `Pending`, ...).
    pub data_claim_phase: Option<String>,
    /// Whether the backing claim's requested size is larger than its current capacity
    /// (a resize in progress).
    pub resizing: bool,
    /// Available replicas of the dataplane Deployment.
    pub available_replicas: i32,
    /// The Deployment has not finished rolling out its current pod template (its controller
    /// has not observed the latest generation, or no pod of that template exists yet): the
    /// available pod, if any, runs an older spec.
    pub rolling_out: bool,
    /// Phase of the consumer claim.
    pub consumer_claim_phase: Option<String>,
    /// The Service ClusterIP, once allocated.
    pub cluster_ip: Option<String>,
    /// The NasVolume is being deleted.
    pub deleting: bool,
    /// Set while deletion waits for pods that use the consumer claim: the `InUse` message.
    pub in_use: Option<String>,
    /// The HTTP token Secret exists and is this NasVolume's (only then does the status name
    /// it, so a later reconcile may trust the name instead of reading the Secret again).
    pub token_secret: bool,
    /// The SFTP host key Secret exists and is this NasVolume's.
    pub sftp_host_key: bool,
    /// Set when something keeps the share from being Ready although its parts may work
    /// (`NameConflict`, `ExpansionNotSupported`): the reason and message of `Ready=False`.
    pub blocked: Option<(String, String)>,
}

fn condition(
    kind: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    // lastTransitionTime moves only when the status flips.
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// Computes the status for `nv` from `observed`, keeping transition times from its current
/// status where nothing changed.
pub fn compute(nv: &NasVolume, observed: &Observed, now: Time) -> NasVolumeStatus {
    let previous = nv
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let previous_phase = nv.status.as_ref().and_then(|s| s.phase);
    let generation = nv.metadata.generation;
    let name = nv.metadata.name.clone().unwrap_or_default();

    let storage_bound = observed.data_claim_phase.as_deref() == Some("Bound");
    let available = observed.available_replicas >= 1 && !observed.rolling_out;
    let published_elsewhere = !nv.spec.consumer_claim;
    let share_bound =
        published_elsewhere || observed.consumer_claim_phase.as_deref() == Some("Bound");
    let ready = storage_bound
        && available
        && share_bound
        && observed.unsatisfiable.is_none()
        && observed.blocked.is_none();

    let storage = match (&observed.unsatisfiable, storage_bound, observed.resizing) {
        (Some((reason, message)), _, _) => condition(
            "StorageBound",
            false,
            reason,
            message.clone(),
            generation,
            previous,
            &now,
        ),
        (None, true, true) => condition(
            "StorageBound",
            true,
            "Resizing",
            "the backing claim is being resized".into(),
            generation,
            previous,
            &now,
        ),
        (None, true, false) => condition(
            "StorageBound",
            true,
            "Bound",
            "the backing claim is bound".into(),
            generation,
            previous,
            &now,
        ),
        (None, false, _) => condition(
            "StorageBound",
            false,
            "Pending",
            format!(
                "the backing claim is {}",
                observed
                    .data_claim_phase
                    .as_deref()
                    .unwrap_or("not created yet")
            ),
            generation,
            previous,
            &now,
        ),
    };
    let dataplane = if available {
        condition(
            "DataplaneAvailable",
            true,
            "Available",
            "the dataplane pod is ready".into(),
            generation,
            previous,
            &now,
        )
    } else {
        let (reason, message) = if observed.rolling_out {
            (
                "RollingOut",
                "a pod with the current spec is being rolled out",
            )
        } else {
            ("Unavailable", "no ready dataplane pod")
        };
        condition(
            "DataplaneAvailable",
            false,
            reason,
            message.into(),
            generation,
            previous,
            &now,
        )
    };
    let share = if published_elsewhere {
        condition(
            "ShareBound",
            true,
            "PublishedElsewhere",
            "consumerClaim is false: the share's own PersistentVolume (CSI) publishes it".into(),
            generation,
            previous,
            &now,
        )
    } else if share_bound {
        condition(
            "ShareBound",
            true,
            "Bound",
            format!("claim {name} is bound to the share"),
            generation,
            previous,
            &now,
        )
    } else {
        condition(
            "ShareBound",
            false,
            "Pending",
            format!(
                "claim {name} is {}",
                observed
                    .consumer_claim_phase
                    .as_deref()
                    .unwrap_or("not created yet")
            ),
            generation,
            previous,
            &now,
        )
    };
    let phase = if observed.deleting {
        Phase::Deleting
    } else if observed.unsatisfiable.is_some() || observed.blocked.is_some() {
        Phase::Degraded
    } else if ready {
        Phase::Ready
    } else if matches!(previous_phase, Some(Phase::Ready | Phase::Degraded)) {
        // It served before: losing a part is a degradation, not provisioning.
        Phase::Degraded
    } else {
        Phase::Provisioning
    };
    let not_ready_reason = match (&observed.blocked, phase) {
        (Some((reason, _)), _) if !observed.deleting => reason.as_str(),
        (_, Phase::Degraded) => "Degraded",
        (_, Phase::Deleting) => "Deleting",
        _ => "Provisioning",
    };
    let ready_condition = if ready {
        condition(
            "Ready",
            true,
            "Ready",
            "the share is served".into(),
            generation,
            previous,
            &now,
        )
    } else {
        let waiting: Vec<&str> = [
            (&storage, "StorageBound"),
            (&dataplane, "DataplaneAvailable"),
            (&share, "ShareBound"),
        ]
        .iter()
        .filter(|(c, _)| c.status != "True")
        .map(|(_, k)| *k)
        .collect();
        let message = match (&observed.in_use, &observed.blocked, &observed.unsatisfiable) {
            (Some(message), _, _) if observed.deleting => message.clone(),
            (_, Some((_, message)), _) | (_, None, Some((_, message))) => message.clone(),
            _ if observed.deleting => "being deleted".to_owned(),
            _ => format!("waiting for {}", waiting.join(", ")),
        };
        condition(
            "Ready",
            false,
            not_ready_reason,
            message,
            generation,
            previous,
            &now,
        )
    };
    let protocols = &nv.spec.protocols;
    let endpoints = observed.cluster_ip.as_ref().map(|ip| Endpoints {
        nfs: protocols
            .contains(&Protocol::Nfs)
            .then(|| format!("{ip}:/")),
        http: protocols
            .contains(&Protocol::Http)
            .then(|| format!("http://{ip}:{HTTP_PORT}/v1/shares/{name}")),
        sftp: protocols
            .contains(&Protocol::Sftp)
            .then(|| format!("sftp://{ip}:{SFTP_PORT}/")),
    });
    let mut conditions = vec![ready_condition, storage, dataplane, share];
    if let Some(message) = observed.in_use.as_ref().filter(|_| observed.deleting) {
        conditions.push(condition(
            "Deleting",
            true,
            "InUse",
            message.clone(),
            generation,
            previous,
            &now,
        ));
    }
    let http_token_secret = nv
        .metadata
        .uid
        .as_deref()
        .filter(|_| observed.token_secret)
        .map(|uid| OwnedNames::for_volume(&name, uid).token_secret);
    let sftp_host_key_secret = nv
        .metadata
        .uid
        .as_deref()
        .filter(|_| observed.sftp_host_key)
        .map(|uid| OwnedNames::for_volume(&name, uid).sftp_host_key_secret);
    NasVolumeStatus {
        phase: Some(phase),
        observed_generation: generation,
        conditions,
        http_token_secret,
        sftp_host_key_secret,
        claim_name: nv.spec.consumer_claim.then_some(name),
        endpoints,
        data_path: Some(DataPathStatus {
            transport: "tcp".into(),
            rdma: match nv.spec.data_path.rdma {
                Rdma::Auto => "Auto",
                Rdma::Disabled => "Disabled",
                Rdma::Required => "Required",
            }
            .into(),
        }),
    }
}

/// The status after a failed reconcile: `Ready=False` with the error's `reason` and
/// `message` for the current generation, phase Degraded; the other conditions, endpoints
/// and names are kept as they were (nothing new was learnt about them).
pub fn failed(nv: &NasVolume, reason: &str, message: String, now: Time) -> NasVolumeStatus {
    let mut status = nv.status.clone().unwrap_or_default();
    let previous = status.conditions.clone();
    let ready = condition(
        "Ready",
        false,
        reason,
        message,
        nv.metadata.generation,
        &previous,
        &now,
    );
    status.conditions.retain(|c| c.type_ != "Ready");
    status.conditions.insert(0, ready);
    status.phase = Some(if nv.metadata.deletion_timestamp.is_some() {
        Phase::Deleting
    } else {
        Phase::Degraded
    });
    status.observed_generation = nv.metadata.generation;
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::test_support::{basic, volume};

    fn now(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    fn ready_observed() -> Observed {
        Observed {
            data_claim_phase: Some("Bound".into()),
            available_replicas: 1,
            consumer_claim_phase: Some("Bound".into()),
            cluster_ip: Some("10.96.0.9".into()),
            token_secret: true,
            ..Observed::default()
        }
    }

    fn cond<'a>(s: &'a NasVolumeStatus, kind: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == kind).unwrap()
    }

    #[test]
    fn provisioning_then_ready_then_degraded() {
        let mut nv = basic();
        let fresh = compute(&nv, &Observed::default(), now(100));
        assert_eq!(fresh.phase, Some(Phase::Provisioning));
        assert_eq!(cond(&fresh, "Ready").status, "False");
        assert!(cond(&fresh, "Ready").message.contains("StorageBound"));

        nv.status = Some(fresh);
        let ready = compute(&nv, &ready_observed(), now(200));
        assert_eq!(ready.phase, Some(Phase::Ready));
        for kind in CONDITIONS {
            assert_eq!(cond(&ready, kind).status, "True", "{kind}");
            assert_eq!(cond(&ready, kind).observed_generation, Some(3));
        }
        assert_eq!(
            ready.endpoints.as_ref().unwrap().nfs.as_deref(),
            Some("10.96.0.9:/")
        );
        assert_eq!(ready.claim_name.as_deref(), Some("media"));

        nv.status = Some(ready.clone());
        let again = compute(&nv, &ready_observed(), now(300));
        assert_eq!(
            cond(&again, "Ready").last_transition_time,
            now(200),
            "unchanged conditions keep their time"
        );

        nv.status = Some(again);
        let down = compute(
            &nv,
            &Observed {
                available_replicas: 0,
                ..ready_observed()
            },
            now(400),
        );
        assert_eq!(down.phase, Some(Phase::Degraded));
        assert_eq!(cond(&down, "DataplaneAvailable").status, "False");
        assert_eq!(
            cond(&down, "DataplaneAvailable").last_transition_time,
            now(400)
        );
        assert_eq!(cond(&down, "StorageBound").status, "True");

        // A spec change: the old pod is still available, but it is not the current spec.
        nv.status = Some(compute(&nv, &ready_observed(), now(500)));
        let rolling = compute(
            &nv,
            &Observed {
                rolling_out: true,
                ..ready_observed()
            },
            now(600),
        );
        assert_eq!(rolling.phase, Some(Phase::Degraded));
        assert_eq!(cond(&rolling, "DataplaneAvailable").reason, "RollingOut");
    }

    #[test]
    fn unsatisfiable_spec_is_degraded_with_the_reason() {
        let observed = Observed {
            unsatisfiable: Some((
                "StorageClassNotFound".into(),
                "storage class \"gold\" does not exist".into(),
            )),
            ..Observed::default()
        };
        let s = compute(&basic(), &observed, now(1));
        assert_eq!(s.phase, Some(Phase::Degraded));
        assert_eq!(cond(&s, "StorageBound").reason, "StorageClassNotFound");
        assert!(cond(&s, "Ready").message.contains("gold"));
        let deleting = compute(
            &basic(),
            &Observed {
                deleting: true,
                ..Observed::default()
            },
            now(1),
        );
        assert_eq!(deleting.phase, Some(Phase::Deleting));
    }

    #[test]
    fn a_share_published_by_csi_is_ready_without_a_consumer_claim() {
        let nv = volume("capacity: 1Gi\nconsumerClaim: false\n");
        let observed = Observed {
            consumer_claim_phase: None,
            ..ready_observed()
        };
        let s = compute(&nv, &observed, now(100));
        assert_eq!(s.phase, Some(Phase::Ready));
        assert_eq!(cond(&s, "ShareBound").reason, "PublishedElsewhere");
        assert_eq!(s.claim_name, None, "no claim of the operator's to mount");
        // The default still waits for its own claim.
        let s = compute(&basic(), &observed, now(100));
        assert_ne!(s.phase, Some(Phase::Ready));
        assert_eq!(s.claim_name.as_deref(), Some("media"));
    }

    #[test]
    fn blocked_shares_are_not_ready_and_say_why() {
        let observed = Observed {
            blocked: Some((
                "NameConflict".into(),
                "Service team-a/media already exists".into(),
            )),
            ..ready_observed()
        };
        let s = compute(&basic(), &observed, now(1));
        assert_eq!(s.phase, Some(Phase::Degraded));
        let ready = cond(&s, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "NameConflict")
        );
        assert!(ready.message.contains("Service team-a/media"));
        assert_eq!(ready.observed_generation, Some(3));
        assert_eq!(s.http_token_secret.as_deref(), Some("media-http-tokens"));
        let unconfirmed = Observed {
            token_secret: false,
            ..observed
        };
        let s = compute(&basic(), &unconfirmed, now(1));
        assert_eq!(
            s.http_token_secret, None,
            "named only once it is known to exist"
        );
    }

    #[test]
    fn deletion_waiting_for_pods_has_an_in_use_condition() {
        let observed = Observed {
            deleting: true,
            in_use: Some("claim media is used by pod(s) web".into()),
            ..Observed::default()
        };
        let s = compute(&basic(), &observed, now(1));
        assert_eq!(s.phase, Some(Phase::Deleting));
        let deleting = cond(&s, "Deleting");
        assert_eq!(
            (deleting.status.as_str(), deleting.reason.as_str()),
            ("True", "InUse")
        );
        assert!(cond(&s, "Ready").message.contains("pod(s) web"));
        let done = compute(
            &basic(),
            &Observed {
                deleting: true,
                ..Observed::default()
            },
            now(2),
        );
        assert!(done.conditions.iter().all(|c| c.type_ != "Deleting"));
    }

    #[test]
    fn a_failed_reconcile_writes_ready_false_for_this_generation() {
        let mut nv = basic();
        nv.status = Some(compute(&nv, &ready_observed(), now(1)));
        nv.metadata.generation = Some(4);
        let s = failed(&nv, "Forbidden", "kubernetes API: forbidden".into(), now(2));
        assert_eq!(s.phase, Some(Phase::Degraded));
        assert_eq!(s.observed_generation, Some(4));
        let ready = cond(&s, "Ready");
        assert_eq!(
            (
                ready.status.as_str(),
                ready.reason.as_str(),
                ready.observed_generation
            ),
            ("False", "Forbidden", Some(4))
        );
        assert_eq!(ready.last_transition_time, now(2));
        assert_eq!(s.conditions.len(), 4, "the other conditions are kept");
        assert_eq!(cond(&s, "StorageBound").status, "True");
        let fresh = failed(&basic(), "ApiError", "boom".into(), now(3));
        assert_eq!(cond(&fresh, "Ready").message, "boom");
    }

    #[test]
    fn endpoints_only_for_served_protocols() {
        let nv = crate::reconcile::test_support::volume("capacity: 1Gi\nprotocols: [nfs]\n");
        let s = compute(&nv, &ready_observed(), now(1));
        let e = s.endpoints.unwrap();
        assert_eq!((e.nfs.as_deref(), e.http), (Some("10.96.0.9:/"), None));
    }
}
