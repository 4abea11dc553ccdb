//! Operator metrics: reconciles (durations, results, errors, queue), apiserver requests
//! (by verb and code, throttling, skipped writes), and NasVolumes by phase.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::crd::{NasVolume, Phase};

/// Labels of `zeronas_reconcile_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// A short, bounded error class.
    pub reason: &'static str,
}

/// Labels of `zeronas_nasvolumes`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// Phase, or `Unknown` before the first status.
    pub phase: &'static str,
}

/// Labels of `zeronas_nasvolume_phase`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VolumeLabels {
    /// The NasVolume's namespace.
    pub namespace: String,
    /// The NasVolume's name.
    pub nasvolume: String,
    /// Its phase, or `Unknown` before the first status.
    pub phase: &'static str,
}

/// Labels of `zeronas_operator_reconciles_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Labels of `zeronas_operator_api_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `get`, `list`, `watch`, `create`, `patch`, `update`, `delete` or `other`.
    pub verb: &'static str,
    /// The HTTP status code, or `error` when no response came.
    pub code: String,
}

/// Labels of `zeronas_operator_write_skips_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The object's kind.
    pub kind: &'static str,
}

/// Every `reason` of `zeronas_reconcile_errors_total` (the controller's error classes).
pub const RECONCILE_ERROR_REASONS: [&str; 8] = [
    "conflict",
    "forbidden",
    "not_found",
    "api_error",
    "transport",
    "invalid_spec",
    "random",
    "internal",
];

/// All operator metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconcile_duration: Histogram,
    reconcile_errors: Family<ReasonLabels, Counter>,
    volumes: Family<PhaseLabels, Gauge>,
    volume_phase: Family<VolumeLabels, Gauge>,
    /// One render at a time: each rebuilds `volume_phase` from the store.
    rendering: std::sync::Mutex<()>,
    leader: Gauge,
    reconciles: Family<ResultLabels, Counter>,
    queue_depth: Gauge,
    api_requests: Family<RequestLabels, Counter>,
    throttled: Counter<f64, std::sync::atomic::AtomicU64>,
    write_skips: Family<KindLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "zeronas_reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_duration.clone(),
        );
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "zeronas_reconcile_errors",
            "Failed reconciles by reason",
            reconcile_errors.clone(),
        );
        let volumes = Family::<PhaseLabels, Gauge>::default();
        registry.register("zeronas_nasvolumes", "NasVolumes by phase", volumes.clone());
        // Closed label sets start at zero, so alerts and dashboards see them at once.
        for reason in RECONCILE_ERROR_REASONS {
            let _ = reconcile_errors.get_or_create(&ReasonLabels { reason });
        }
        let volume_phase = Family::<VolumeLabels, Gauge>::default();
        registry.register(
            "zeronas_nasvolume_phase",
            "1 for each NasVolume, labelled with its namespace, name and phase",
            volume_phase.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "zeronas_operator_leader",
            "1 while this replica holds the leader Lease and reconciles, else 0",
            leader.clone(),
        );
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "zeronas_operator_reconciles",
            "Finished reconciles by result",
            reconciles.clone(),
        );
        for result in ["ok", "error"] {
            let _ = reconciles.get_or_create(&ResultLabels { result });
        }
        let queue_depth = Gauge::default();
        registry.register(
            "zeronas_operator_reconcile_queue_depth",
            "Reconciles waiting for one of the --max-concurrent-reconciles slots",
            queue_depth.clone(),
        );
        let api_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "zeronas_operator_api_requests",
            "Requests to the apiserver by verb and HTTP status code",
            api_requests.clone(),
        );
        let throttled = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "zeronas_operator_api_throttle_seconds",
            "Time requests waited for the client-side rate limit (--api-qps, --api-burst)",
            throttled.clone(),
        );
        let write_skips = Family::<KindLabels, Counter>::default();
        registry.register(
            "zeronas_operator_write_skips",
            "Applies not sent because the cluster already holds the desired object",
            write_skips.clone(),
        );
        Self {
            registry,
            reconcile_duration,
            reconcile_errors,
            volumes,
            volume_phase,
            rendering: std::sync::Mutex::new(()),
            leader,
            reconciles,
            queue_depth,
            api_requests,
            throttled,
            write_skips,
        }
    }

    /// Counts one apiserver request; `code` is `None` when no response came.
    pub fn observe_request(&self, verb: &'static str, code: Option<u16>) {
        let code = code.map_or_else(|| "error".to_owned(), |c| c.to_string());
        self.api_requests
            .get_or_create(&RequestLabels { verb, code })
            .inc();
    }

    /// Adds time a request waited for the rate limit.
    pub fn observe_throttle(&self, seconds: f64) {
        self.throttled.inc_by(seconds);
    }

    /// Counts an apply skipped because nothing would change.
    pub fn skip_write(&self, kind: &'static str) {
        self.write_skips.get_or_create(&KindLabels { kind }).inc();
    }

    /// Applies skipped for `kind`.
    pub fn write_skips(&self, kind: &'static str) -> u64 {
        self.write_skips.get_or_create(&KindLabels { kind }).get()
    }

    /// A reconcile started waiting for a slot.
    pub fn enqueued(&self) {
        self.queue_depth.inc();
    }

    /// A reconcile got its slot.
    pub fn dequeued(&self) {
        self.queue_depth.dec();
    }

    /// Records whether this replica leads (readiness does not say: standbys are Ready too).
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Records one reconcile.
    pub fn observe_reconcile(&self, seconds: f64, error: Option<&'static str>) {
        self.reconcile_duration.observe(seconds);
        let result = if error.is_some() { "error" } else { "ok" };
        self.reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
        if let Some(reason) = error {
            self.reconcile_errors
                .get_or_create(&ReasonLabels { reason })
                .inc();
        }
    }

    /// Failed reconciles counted for `reason`.
    pub fn errors(&self, reason: &'static str) -> u64 {
        self.reconcile_errors
            .get_or_create(&ReasonLabels { reason })
            .get()
    }

    /// Renders the Prometheus text format, counting `volumes` by phase first and listing
    /// each one's phase (volumes gone from the store are gone from the series).
    pub fn render<'a>(&self, volumes: impl IntoIterator<Item = &'a NasVolume>) -> String {
        let _one_at_a_time = self
            .rendering
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.volume_phase.clear();
        let phases = [
            Some(Phase::Pending),
            Some(Phase::Provisioning),
            Some(Phase::Ready),
            Some(Phase::Degraded),
            Some(Phase::Deleting),
            None,
        ];
        let mut counts = [0i64; 6];
        for nv in volumes {
            let phase = nv.status.as_ref().and_then(|s| s.phase);
            self.volume_phase
                .get_or_create(&VolumeLabels {
                    namespace: nv.metadata.namespace.clone().unwrap_or_default(),
                    nasvolume: nv.metadata.name.clone().unwrap_or_default(),
                    phase: phase.map_or("Unknown", Phase::as_str),
                })
                .set(1);
            if let Some(i) = phases.iter().position(|p| *p == phase) {
                counts[i] += 1;
            }
        }
        for (phase, count) in phases.iter().zip(counts) {
            let label = phase.map_or("Unknown", Phase::as_str);
            self.volumes
                .get_or_create(&PhaseLabels { phase: label })
                .set(count);
        }
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{NasVolumeSpec, NasVolumeStatus};

    fn with_phase(phase: Option<Phase>) -> NasVolume {
        let spec: NasVolumeSpec =
            serde_json::from_value(serde_json::json!({ "capacity": "1Gi" })).unwrap();
        let mut nv = NasVolume::new("v", spec);
        nv.status = phase.map(|p| NasVolumeStatus {
            phase: Some(p),
            ..NasVolumeStatus::default()
        });
        nv
    }

    #[test]
    fn each_volume_has_its_phase_until_it_is_gone() {
        let m = Metrics::new();
        let mut ready = with_phase(Some(Phase::Ready));
        ready.metadata.namespace = Some("apps".into());
        let mut pending = with_phase(Some(Phase::Pending));
        pending.metadata.name = Some("w".into());
        pending.metadata.namespace = Some("apps".into());
        let text = m.render([&ready, &pending]);
        assert!(text.contains(
            "zeronas_nasvolume_phase{namespace=\"apps\",nasvolume=\"v\",phase=\"Ready\"} 1"
        ));
        assert!(text.contains(
            "zeronas_nasvolume_phase{namespace=\"apps\",nasvolume=\"w\",phase=\"Pending\"} 1"
        ));
        pending.status.as_mut().unwrap().phase = Some(Phase::Ready);
        let text = m.render([&pending]);
        assert!(!text.contains("nasvolume=\"v\""), "{text}");
        assert!(!text.contains("phase=\"Pending\"} 1"), "{text}");
        assert!(text.contains("nasvolume=\"w\",phase=\"Ready\"} 1"));
    }

    #[test]
    fn volumes_are_counted_by_phase() {
        let m = Metrics::new();
        m.observe_reconcile(0.01, None);
        m.observe_reconcile(0.02, Some("conflict"));
        let volumes = [
            with_phase(Some(Phase::Ready)),
            with_phase(Some(Phase::Ready)),
            with_phase(None),
        ];
        let text = m.render(volumes.iter());
        assert!(
            text.contains("zeronas_nasvolumes{phase=\"Ready\"} 2"),
            "{text}"
        );
        assert!(text.contains("zeronas_nasvolumes{phase=\"Unknown\"} 1"));
        assert!(text.contains("zeronas_nasvolumes{phase=\"Degraded\"} 0"));
        assert!(text.contains("zeronas_reconcile_errors_total{reason=\"conflict\"} 1"));
        assert!(text.contains("zeronas_reconcile_duration_seconds_count 2"));
        assert!(
            text.contains("zeronas_operator_reconciles_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("zeronas_operator_reconciles_total{result=\"error\"} 1"));
        assert_eq!(m.errors("conflict"), 1);
        assert!(text.contains("zeronas_operator_leader 0"), "{text}");
        m.set_leader(true);
        assert!(m.render([]).contains("zeronas_operator_leader 1"));
    }
}
