//! Operator availability: a two-replica release upgrades with `helm upgrade --wait` (standbys
//! are Ready); when the leader's process is killed (in the middle of reconciling a new
//! NasVolume) the standby takes the Lease once it has seen it unchanged for a lease duration,
//! and finishes that NasVolume with exactly the objects one reconcile makes; when the leader pod is deleted it releases the
//! Lease and another replica takes it at once. The release is left at two Ready replicas.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams};
use zeronas_operator::crd::Phase;

use super::{NAMESPACE, OPERATOR_NAMESPACE, RELEASE, Step, Suite, eventually, secs};

/// The operator's Lease (its `--lease-name` default).
const LEASE: &str = "zeronas-operator";
/// The chart's `leaderElection` defaults.
const LEASE_DURATION: Duration = Duration::from_secs(15);
const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// The Deployment (the chart's fullname for release "zeronas").
const DEPLOYMENT: &str = "zeronas";

/// `helm upgrade --wait` of the release with the e2e images and `extra` settings.
async fn upgrade(s: &Suite, extra: &[&str]) -> Step {
    let chart = s.repo.join("charts/zeronas");
    let chart = chart.to_str().ok_or("chart path is not UTF-8")?;
    let mut args = vec![
        "upgrade",
        RELEASE,
        chart,
        "--namespace",
        OPERATOR_NAMESPACE,
        "--set",
        "image.tag=e2e",
        "--set",
        "dataplaneImage.tag=e2e",
        "--set",
        "csi.image.tag=e2e",
        "--set",
        "csi.node.enabled=false",
        "--wait",
        "--timeout",
        "120s",
    ];
    args.extend_from_slice(extra);
    s.helm(&args).await.map(drop)
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|st| st.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The operator pods, in name order.
pub(super) async fn operator_pods(s: &Suite) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), OPERATOR_NAMESPACE);
    let selector =
        format!("app.kubernetes.io/instance={RELEASE},app.kubernetes.io/name=zeronas-operator");
    let mut list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    list
}

fn name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or_default()
}

/// Waits until the Deployment has rolled out `replicas` pods, every operator pod Ready and
/// none terminating; returns them.
async fn ready_pods(s: &Suite, replicas: i32, timeout: Duration) -> Result<Vec<Pod>, String> {
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), OPERATOR_NAMESPACE);
    eventually(
        &format!("{replicas} Ready operator pods, rollout complete"),
        timeout,
        || async {
            let d = deployments.get(DEPLOYMENT).await.ok()?;
            let st = d.status?;
            let done = st.observed_generation == d.metadata.generation
                && st.replicas == Some(replicas)
                && st.updated_replicas == Some(replicas)
                && st.ready_replicas == Some(replicas);
            let pods = operator_pods(s).await;
            (done && pods.len() == replicas as usize && pods.iter().all(is_ready)).then_some(pods)
        },
    )
    .await
}

/// The Lease's holder identity (`<pod>_<process id>`), if held.
async fn holder(s: &Suite) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(s.client.clone(), OPERATOR_NAMESPACE);
    leases
        .get_opt(LEASE)
        .await
        .ok()??
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

/// The pod part of a holder identity.
fn holder_pod(identity: &str) -> &str {
    identity.split('_').next().unwrap_or(identity)
}

/// Waits until one of `pods` holds the Lease; returns (leader, the others).
async fn leader_among(
    s: &Suite,
    pods: Vec<Pod>,
    timeout: Duration,
) -> Result<(Pod, Vec<Pod>), String> {
    let names: Vec<String> = pods.iter().map(|p| name(p).to_owned()).collect();
    let leader = eventually(
        &format!("one of {names:?} to hold the Lease"),
        timeout,
        || async {
            let h = holder(s).await?;
            names
                .iter()
                .any(|n| n == holder_pod(&h))
                .then(|| holder_pod(&h).to_owned())
        },
    )
    .await?;
    let (leading, others): (Vec<Pod>, Vec<Pod>) = pods.into_iter().partition(|p| name(p) == leader);
    let leading = leading
        .into_iter()
        .next()
        .ok_or("the leader pod vanished")?;
    Ok((leading, others))
}

/// The operator pod's /metrics text.
pub(super) async fn operator_metrics(pod: &Pod) -> Result<String, String> {
    let ip: IpAddr = pod
        .status
        .as_ref()
        .and_then(|st| st.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| format!("pod {} has no IP", name(pod)))?;
    let addr = SocketAddr::new(ip, 8080);
    let r = zeronas_e2e::http::request(addr, "GET", "/metrics", &[], Duration::from_secs(5))
        .await
        .map_err(|e| format!("GET /metrics of {}: {e}", name(pod)))?;
    Ok(String::from_utf8_lossy(&r.body).into_owned())
}

/// `zeronas_operator_leader` from the pod's /metrics.
async fn leader_gauge(pod: &Pod) -> Result<i64, String> {
    let text = operator_metrics(pod).await?;
    text.lines()
        .find_map(|l| l.strip_prefix("zeronas_operator_leader "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no zeronas_operator_leader in {}'s /metrics", name(pod)))
}

/// The leader reports 1, every standby 0.
async fn gauges_agree(leader: &Pod, standbys: &[Pod]) -> Step {
    let lead = leader_gauge(leader).await?;
    if lead != 1 {
        return Err(format!(
            "leader {} reports zeronas_operator_leader {lead}",
            name(leader)
        ));
    }
    for standby in standbys {
        let value = leader_gauge(standby).await?;
        if value != 0 {
            return Err(format!(
                "standby {} reports zeronas_operator_leader {value}",
                name(standby)
            ));
        }
    }
    Ok(())
}

/// Scale to two replicas with a PodDisruptionBudget, then roll both with a changed value.
pub async fn helm_upgrade_two_replicas(s: &mut Suite) -> Step {
    let started = Instant::now();
    upgrade(
        s,
        &[
            "--set",
            "replicas=2",
            "--set",
            "podDisruptionBudget.enabled=true",
        ],
    )
    .await?;
    s.measure(
        "helm upgrade --wait to 2 replicas (the standby Ready too)",
        secs(started.elapsed()),
    );
    ready_pods(s, 2, Duration::from_secs(30)).await?;

    // A pod-template change rolls both replicas, the leader among them (it releases the
    // Lease as it stops); before, a standby never became Ready and this never finished.
    let started = Instant::now();
    upgrade(
        s,
        &[
            "--set",
            "replicas=2",
            "--set",
            "podDisruptionBudget.enabled=true",
            "--set",
            "logFormat=text",
        ],
    )
    .await?;
    s.measure(
        "helm upgrade --wait rolling both replicas",
        secs(started.elapsed()),
    );
    let pods = ready_pods(s, 2, Duration::from_secs(30)).await?;
    let (leader, standbys) = leader_among(s, pods, LEASE_DURATION + RETRY_PERIOD).await?;
    gauges_agree(&leader, &standbys).await?;

    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(s.client.clone(), OPERATOR_NAMESPACE);
    eventually(
        "the PodDisruptionBudget to count 2 healthy operator pods, 1 disruption allowed",
        Duration::from_secs(30),
        || async {
            let st = pdbs.get(DEPLOYMENT).await.ok()?.status?;
            (st.current_healthy == 2 && st.disruptions_allowed == 1).then_some(())
        },
    )
    .await
}

/// The process of the pod's operator container (the node agent, this test, started it).
fn operator_pid(pod: &Pod) -> Result<rustix::process::Pid, String> {
    pod.status
        .as_ref()
        .and_then(|st| st.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.container_id.as_deref())
        .and_then(|id| id.strip_prefix("zeronas-e2e://"))
        .and_then(|pid| pid.parse().ok())
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| format!("no process id in {}'s container status", name(pod)))
}

fn signal(pid: rustix::process::Pid, signal: rustix::process::Signal) -> Step {
    rustix::process::kill_process(pid, signal)
        .map_err(|e| format!("{signal:?} to {}: {e}", pid.as_raw_nonzero()))
}

/// Waits until `standby` holds the Lease that a leader stopped renewing: a standby last saw
/// a renewal up to a retry period after it was made, and looks every retry period.
async fn standby_takes_over(s: &Suite, standby: &str) -> Step {
    eventually(
        &format!("standby {standby} to hold the Lease"),
        LEASE_DURATION + 2 * RETRY_PERIOD + Duration::from_secs(3),
        || async { (holder_pod(&holder(s).await?) == standby).then_some(()) },
    )
    .await
}

/// A takeover sooner than a lease after the leader's last possible renewal (a retry period
/// before it stopped) would mean two leaders at once.
fn not_too_early(took: Duration) -> Step {
    if took < LEASE_DURATION - RETRY_PERIOD - Duration::from_secs(1) {
        return Err(format!(
            "the standby took the Lease {took:?} after the leader stopped, before the lease ({LEASE_DURATION:?}) could have run out"
        ));
    }
    Ok(())
}

/// The NasVolume whose reconcile the killed leader starts and its successor finishes.
const MID_RECONCILE: &str = "ha-mid-reconcile";

/// Kinds the operator makes for a NasVolume (all labelled `zeronas.io/volume`), and how many
/// of each one reconcile makes: `zeronas-operator render` prints the same set. One
/// ReplicaSet: a successor that rendered a different pod template would roll out a second.
const OBJECTS_PER_VOLUME: &[(&str, usize)] = &[
    ("deployments.apps", 1),
    ("replicasets.apps", 1),
    ("services", 1),
    ("networkpolicies.networking.k8s.io", 1),
    ("persistentvolumeclaims", 2),
    ("persistentvolumes", 1),
    ("secrets", 1),
];

/// Names of the objects of `kind` labelled as `volume`'s, in every namespace.
async fn labelled(s: &Suite, kind: &str, volume: &str) -> Result<Vec<String>, String> {
    let out = s
        .kubectl(&[
            "get",
            kind,
            "--all-namespaces",
            "-l",
            &format!("zeronas.io/volume={volume}"),
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}",
        ])
        .await?;
    Ok(out.lines().map(str::to_owned).collect())
}

/// SIGKILL of the leader's process in the middle of reconciling a new NasVolume: the standby
/// takes over after a lease duration unchanged and finishes the NasVolume, with no duplicate
/// object and no second rollout.
pub async fn kill_leader(s: &mut Suite) -> Step {
    let pods = ready_pods(s, 2, Duration::from_secs(30)).await?;
    let (leader, standbys) = leader_among(s, pods, LEASE_DURATION + RETRY_PERIOD).await?;
    let standby_name = standbys
        .first()
        .map(|p| name(p).to_owned())
        .ok_or("no standby")?;
    s.apply_volume_manifest(MID_RECONCILE, "capacity: 64Mi\n  protocols: [nfs, http]")
        .await?;
    let outcome = kill_mid_reconcile(s, leader, standby_name).await;
    // Gone on every path, so a failure here cannot leak into later scenarios.
    let deleted = s.delete_volume_and_pods(MID_RECONCILE).await;
    outcome?;
    deleted?;
    // The data path never depended on the operator.
    s.payload_intact().await
}

/// How many objects of `volume` exist, over [`OBJECTS_PER_VOLUME`]'s kinds.
async fn objects_made(s: &Suite, volume: &str) -> Result<usize, String> {
    let mut made = 0;
    for (kind, _) in OBJECTS_PER_VOLUME {
        made += labelled(s, kind, volume).await?.len();
    }
    Ok(made)
}

/// Kills `leader` once it has begun the new NasVolume; the standby must finish it.
async fn kill_mid_reconcile(s: &mut Suite, leader: Pod, standby_name: String) -> Step {
    // The leader has begun: its first object (the backing claim) exists. Polled in a tight
    // loop through the API, not kubectl, so the kill lands while the rest is being made.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(s.client.clone(), NAMESPACE);
    let selector = ListParams::default().labels(&format!("zeronas.io/volume={MID_RECONCILE}"));
    let give_up = Instant::now() + Duration::from_secs(20);
    while !claims
        .list_metadata(&selector)
        .await
        .is_ok_and(|list| !list.items.is_empty())
    {
        if Instant::now() > give_up {
            return Err("the leader made no object of the new NasVolume in 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Like a crash: no release.
    signal(operator_pid(&leader)?, rustix::process::Signal::KILL)?;
    let killed = Instant::now();
    let ready_then = s
        .volumes()
        .get(MID_RECONCILE)
        .await
        .map_err(|e| e.to_string())?
        .status
        .and_then(|st| st.phase)
        == Some(Phase::Ready);
    if ready_then {
        return Err("the NasVolume was Ready before the leader was killed".into());
    }
    let expected: usize = OBJECTS_PER_VOLUME.iter().map(|(_, n)| n).sum();
    let made = objects_made(s, MID_RECONCILE).await?;
    s.measure(
        "objects of the new NasVolume made when its leader was killed",
        format!("{made} of {expected}"),
    );
    standby_takes_over(s, &standby_name).await?;
    let took = killed.elapsed();
    s.measure("leader killed → the standby holds the Lease", secs(took));
    not_too_early(took)?;
    // The killed container restarts (10 s back-off) as a standby under a new identity.
    let pods = ready_pods(s, 2, Duration::from_secs(60)).await?;
    let (leader, standbys) = leader_among(s, pods, Duration::from_secs(5)).await?;
    if name(&leader) != standby_name {
        return Err(format!("{} leads, not {standby_name}", name(&leader)));
    }
    gauges_agree(&leader, &standbys).await?;
    // The new leader finished the NasVolume its predecessor left half done.
    let volumes = s.volumes();
    eventually(
        "the successor to make the half-reconciled NasVolume Ready",
        Duration::from_secs(120),
        || async {
            let nv = volumes.get_opt(MID_RECONCILE).await.ok().flatten()?;
            (nv.status?.phase == Some(Phase::Ready)).then_some(())
        },
    )
    .await?;
    s.measure(
        "leader killed mid-reconcile → the NasVolume Ready",
        secs(killed.elapsed()),
    );
    for (kind, want) in OBJECTS_PER_VOLUME {
        let names = labelled(s, kind, MID_RECONCILE).await?;
        if names.len() != *want {
            return Err(format!(
                "{kind} of {MID_RECONCILE}: {names:?}, want {want} (a duplicate or a missing object)"
            ));
        }
    }
    Ok(())
}

/// SIGSTOP of the leader (a stalled process): the standby takes over after a lease; on
/// SIGCONT the old leader finds its renew deadline long passed and exits without renewing.
pub async fn stall_leader(s: &mut Suite) -> Step {
    let pods = ready_pods(s, 2, Duration::from_secs(30)).await?;
    let (leader, standbys) = leader_among(s, pods, Duration::from_secs(5)).await?;
    let standby_name = standbys
        .first()
        .map(|p| name(p).to_owned())
        .ok_or("no standby")?;
    let leader_name = name(&leader).to_owned();
    let uid = leader.metadata.uid.as_deref().unwrap_or_default();
    let log = s
        .run_dir
        .join("pods")
        .join(format!(
            "{OPERATOR_NAMESPACE}_{leader_name}_{}",
            &uid[..uid.len().min(8)]
        ))
        .join("operator.log");
    let logged_before = std::fs::read_to_string(&log)
        .map_err(|e| format!("read {}: {e}", log.display()))?
        .len();
    let pid = operator_pid(&leader)?;
    signal(pid, rustix::process::Signal::STOP)?;
    let stopped = Instant::now();
    let taken = standby_takes_over(s, &standby_name).await;
    let took = stopped.elapsed();
    signal(pid, rustix::process::Signal::CONT)?;
    taken?;
    s.measure(
        "leader stalled (SIGSTOP) → the standby holds the Lease",
        secs(took),
    );
    not_too_early(took)?;
    let resumed = Instant::now();
    eventually(
        "the resumed leader to stop (renew deadline passed) and exit",
        Duration::from_secs(10),
        || async {
            let text = std::fs::read_to_string(&log).ok()?;
            let said = text.get(logged_before..)?.contains("renew deadline passed");
            // Exited: signal 0 (existence) fails once the agent has reaped it.
            let gone = rustix::process::test_kill_process(pid).is_err();
            (said && gone).then_some(())
        },
    )
    .await?;
    s.measure(
        "stalled leader resumed → stopped and exited",
        secs(resumed.elapsed()),
    );
    if holder(s).await.as_deref().map(holder_pod) != Some(standby_name.as_str()) {
        return Err("the resumed leader wrote the Lease back".into());
    }
    // The agent restarts the container (back-off) as a standby.
    ready_pods(s, 2, Duration::from_secs(90)).await?;
    Ok(())
}

/// Deleting the leader pod (SIGTERM): it releases the Lease; another replica takes it at
/// once (the standby, or the ReplicaSet's replacement if that one starts first).
pub async fn delete_leader_pod(s: &mut Suite) -> Step {
    let pods = ready_pods(s, 2, Duration::from_secs(30)).await?;
    let (leader, _) = leader_among(s, pods, Duration::from_secs(5)).await?;
    let leader_name = name(&leader).to_owned();
    let deleted = Instant::now();
    s.kubectl(&[
        "delete",
        "pod",
        &leader_name,
        "--namespace",
        OPERATOR_NAMESPACE,
        "--wait=false",
    ])
    .await?;
    let new_leader = eventually(
        "another operator pod to hold the Lease",
        LEASE_DURATION,
        || async {
            let h = holder(s).await?;
            let pod = holder_pod(&h);
            let live = operator_pods(s)
                .await
                .iter()
                .any(|p| name(p) == pod && p.metadata.deletion_timestamp.is_none());
            (pod != leader_name && live).then(|| pod.to_owned())
        },
    )
    .await?;
    let took = deleted.elapsed();
    s.measure(
        "leader pod deleted → another replica holds the Lease (released)",
        format!("{} (taken by {new_leader})", secs(took)),
    );
    // Without a release a standby waits a whole lease after the last renewal it saw (a new
    // pod a whole lease after it first looked); a released Lease is taken on the next poll.
    let bound = LEASE_DURATION - RETRY_PERIOD - Duration::from_secs(1);
    if took >= bound {
        return Err(format!(
            "the Lease changed hands after {took:?}: not released (a release makes it about one retry period, {RETRY_PERIOD:?})"
        ));
    }
    let uid = leader.metadata.uid.as_deref().unwrap_or_default();
    let log = s
        .run_dir
        .join("pods")
        .join(format!(
            "{OPERATOR_NAMESPACE}_{leader_name}_{}",
            &uid[..uid.len().min(8)]
        ))
        .join("operator.log");
    let released = std::fs::read_to_string(&log)
        .map_err(|e| format!("read {}: {e}", log.display()))?
        .contains("released the lease");
    if !released {
        return Err(format!(
            "{} does not say \"released the lease\"",
            log.display()
        ));
    }
    // The ReplicaSet replaces the pod; later steps find two Ready replicas.
    ready_pods(s, 2, Duration::from_secs(60)).await?;
    Ok(())
}
