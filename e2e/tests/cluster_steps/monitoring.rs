//! Monitoring: the chart's rules and dashboard against real scrapes. A NasVolume with
//! `cpuPinning` joins the sample (so per-CPU pinning series exist), and the metrics of the
//! operator and of both dataplanes go to charts/zeronas/tests/check_monitoring.py, which
//! fails on any metric the rules or the dashboard name that no scrape exposes, and lints
//! each scrape with `promtool check metrics`.

use std::time::Duration;

use super::ha::{operator_metrics, operator_pods};
use super::{NAMESPACE, Step, Suite, VOLUME, libnfs, secs};

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
    let ready = s
        .apply_volume(
            PINNED,
            "capacity: 1Gi\n  cpuPinning: true\n  resources: { cpu: \"1\", memory: 256Mi }",
        )
        .await?;
    s.measure("time-to-Ready of a cpuPinning NasVolume", secs(ready));
    // Traffic of both protocols, so the labelled families exist in this scrape.
    let nfs = s.endpoint_of(PINNED, "nfs").await?;
    libnfs(nfs, 0, "write /seen.txt 6869\nstat /seen.txt\n", &s.repo).await?;

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
    // Debian's Python: python3-yaml comes from `make deps`.
    let checked = s
        .run_tool(std::path::Path::new("/usr/bin/python3"), &args)
        .await?;
    s.measure("monitoring check", checked.trim().to_owned());

    s.delete_volume_and_pods(PINNED).await
}
