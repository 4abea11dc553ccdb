//! Steady state: a reconcile of a Ready NasVolume whose objects are as described reads the
//! operator's watch caches and writes nothing (issue: every pass used to make ~6 writes and
//! 3 GETs, and its own status write queued the next pass).

use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};

use super::ha::{operator_metrics, operator_pods};
use super::{NAMESPACE, Step, Suite, eventually};
use zeronas_operator::crd::Phase;

/// Sums the samples of `metric` whose labels contain every one of `labels`.
fn sum(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(metric) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Requests that change something: everything but get, list and watch (the Lease renewals
/// are `update`s and do not count here: they are the leader's heartbeat).
fn writes(text: &str) -> f64 {
    ["create", "patch", "delete"]
        .iter()
        .map(|verb| {
            sum(
                text,
                "zeronas_operator_api_requests_total",
                &[&format!("verb=\"{verb}\"")],
            )
        })
        .sum()
}

pub(super) async fn unchanged_volume_writes_nothing(s: &mut Suite) -> Step {
    s.wait_phase(Phase::Ready, Duration::from_secs(60)).await?;
    let pods = operator_pods(s).await;
    let pod = pods.first().ok_or("no operator pod")?;
    let before = operator_metrics(pod).await?;
    let reconciles = |t: &str| sum(t, "zeronas_operator_reconciles_total", &["result=\"ok\""]);
    // A label on the Service the operator does not set: its watch triggers a reconcile, and
    // the Service still is what the operator describes.
    let names = s.names().await?;
    let services: Api<Service> = Api::namespaced(s.client.clone(), NAMESPACE);
    services
        .patch(
            &names.service,
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({ "metadata": { "labels": { "e2e.zeronas.io/touched": "1" } } }),
            ),
        )
        .await
        .map_err(|e| format!("label the Service: {e}"))?;
    let after = eventually(
        "a reconcile after the Service changed",
        Duration::from_secs(30),
        || async {
            let now = operator_metrics(pod).await.ok()?;
            (reconciles(&now) > reconciles(&before)).then_some(now)
        },
    )
    .await?;
    let written = writes(&after) - writes(&before);
    let skipped = sum(&after, "zeronas_operator_write_skips_total", &[])
        - sum(&before, "zeronas_operator_write_skips_total", &[]);
    s.measure(
        "reconcile of an unchanged Ready volume: API writes",
        format!("{written} (applies skipped: {skipped})"),
    );
    if written != 0.0 {
        return Err(format!(
            "a reconcile of an unchanged volume wrote {written} times; metrics before:\n{before}\nafter:\n{after}"
        ));
    }
    if skipped < 6.0 {
        return Err(format!(
            "expected every owned object and the status to be skipped, counted {skipped}"
        ));
    }
    Ok(())
}
