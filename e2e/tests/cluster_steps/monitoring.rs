//! Monitoring: the chart's rules and dashboard against real scrapes. A NasVolume with
//! `cpuPinning` joins the sample (so per-CPU pinning series exist), and the metrics of the
//! operator and of both dataplanes go to charts/zeronas/tests/check_monitoring.py, which
//! fails on any metric the rules or the dashboard name that no scrape exposes, and lints
//! each scrape with `promtool check metrics`.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use super::ha::{operator_metrics, operator_pods};
use super::{NAMESPACE, Step, Suite, VOLUME, eventually, secs};
use zeronas_operator::crd::Phase;

const PINNED: &str = "pinned";

async fn dataplane_metrics(s: &Suite, volume: &str) -> Result<String, String> {
    let addr = s.endpoint_of(volume, "metrics").await?;
    let r = zeronas_e2e::http::request(addr, "GET", "/metrics", &[], Duration::from_secs(5))
        .await
        .map_err(|e| format!("GET /metrics of {volume}'s dataplane: {e}"))?;
    if r.status != 200
        || !r
            .head
            .to_ascii_lowercase()
            .contains("application/openmetrics-text")
    {
        return Err(format!("{volume}'s /metrics answered {}", r.head));
    }
    Ok(String::from_utf8_lossy(&r.body).into_owned())
}

pub(super) async fn rules_and_dashboard_match_real_scrapes(s: &mut Suite) -> Step {
    let promtool = std::env::var("ZERONAS_PROMTOOL")
        .map_err(|_| "ZERONAS_PROMTOOL is not set (make e2e sets it)".to_owned())?;
    let path = s.run_dir.join("pinned.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: zeronas.io/v1alpha1\nkind: NasVolume\nmetadata:\n  name: {PINNED}\n\
             spec:\n  capacity: 1Gi\n  cpuPinning: true\n  resources: {{ cpu: \"1\", memory: 256Mi }}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let started = Instant::now();
    s.kubectl(&["apply", "-f", path.to_str().unwrap_or_default()])
        .await?;
    let volumes = s.volumes();
    eventually(
        "the pinned NasVolume to be Ready",
        Duration::from_secs(180),
        || async {
            let nv = volumes.get_opt(PINNED).await.ok().flatten()?;
            let status = nv.status?;
            (status.observed_generation == nv.metadata.generation
                && status.phase == Some(Phase::Ready))
            .then_some(())
        },
    )
    .await?;
    s.measure(
        "time-to-Ready of a cpuPinning NasVolume",
        secs(started.elapsed()),
    );

    let pinned = dataplane_metrics(s, PINNED).await?;
    if !pinned
        .lines()
        .any(|l| l.starts_with("zeronas_worker_pinned{cpu=") && l.ends_with(" 1"))
    {
        return Err(format!(
            "the pinned dataplane reports no pinned worker:\n{pinned}"
        ));
    }
    let sample = dataplane_metrics(s, VOLUME).await?;
    let pods = operator_pods(s).await;
    let operator = operator_metrics(pods.first().ok_or("no operator pod")?).await?;
    if !operator.contains(&format!(
        "zeronas_nasvolume_phase{{namespace=\"{NAMESPACE}\",nasvolume=\"{PINNED}\",phase=\"Ready\"}} 1"
    )) {
        return Err(format!("the operator does not report {PINNED} Ready:\n{operator}"));
    }
    let mut args = vec![
        s.repo
            .join("charts/zeronas/tests/check_monitoring.py")
            .display()
            .to_string(),
        "--promtool".to_owned(),
        promtool,
    ];
    for (name, text) in [
        ("operator", &operator),
        ("sample", &sample),
        ("pinned", &pinned),
    ] {
        let file = s.run_dir.join(format!("metrics-{name}.txt"));
        std::fs::write(&file, text).map_err(|e| e.to_string())?;
        args.extend(["--scrape".to_owned(), file.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let checked = s.run_tool(std::path::Path::new("python3"), &args).await?;
    s.measure("monitoring check", checked.trim().to_owned());

    s.kubectl(&["delete", "nasvolume", PINNED, "--timeout=120s"])
        .await?;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), NAMESPACE);
    eventually(
        "the pinned dataplane pod to go",
        Duration::from_secs(120),
        || async {
            let left = pods
                .list(&ListParams::default().labels(&format!("zeronas.io/volume={PINNED}")))
                .await
                .ok()?;
            left.items.is_empty().then_some(())
        },
    )
    .await?;
    Ok(())
}
