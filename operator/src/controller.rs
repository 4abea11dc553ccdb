//! The controller: watches NasVolumes and what they own, server-side-applies the objects the
//! builders describe, keeps the status current, and removes the PV on deletion.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Service};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use crate::crd::{NasVolume, NasVolumeStatus, Phase};
use crate::metrics::Metrics;
use crate::names::{LABEL_MANAGED_BY, LABEL_NAMESPACE, LABEL_VOLUME, MANAGER};
use crate::reconcile::status::{self, Observed};
use crate::reconcile::{BuildError, Settings, deployment, identity, pvc, service, share};

/// The one field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "zeronas-operator";
/// Finalizer that removes the cluster-scoped PV before the NasVolume goes.
pub const FINALIZER: &str = "zeronas.io/share-cleanup";
/// Longest wait between retries of a failing NasVolume.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver refused or failed a call.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An object could not be built from the spec.
    #[error("cannot build objects: {0}")]
    Build(#[from] BuildError),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// A bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(status)) if status.is_conflict() => "conflict",
            Error::Kube(kube::Error::Api(status)) if status.is_forbidden() => "forbidden",
            Error::Kube(kube::Error::Api(_)) => "api_error",
            Error::Kube(_) => "transport",
            Error::Build(_) => "invalid_spec",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

/// Shared state of all reconciles.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Builder settings.
    pub settings: Settings,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per NasVolume, for exponential backoff.
    pub failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context for `client`.
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Arc<Self> {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        Arc::new(Self {
            client,
            settings,
            recorder,
            metrics,
            failures: Mutex::new(HashMap::new()),
        })
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn key(nv: &NasVolume) -> String {
    format!("{}/{}", nv.namespace().unwrap_or_default(), nv.name_any())
}

/// Reconciles one NasVolume (the finalizer decides between apply and cleanup).
pub async fn reconcile(nv: Arc<NasVolume>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = nv.namespace().unwrap_or_default();
    let api: Api<NasVolume> = Api::namespaced(ctx.client.clone(), &namespace);
    let volume_key = key(&nv);
    let result = finalizer(&api, FINALIZER, nv, |event| async {
        match event {
            Finalizer::Apply(nv) => apply(&nv, &ctx).await,
            Finalizer::Cleanup(nv) => cleanup(&nv, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.observe_reconcile(
        started.elapsed().as_secs_f64(),
        result.as_ref().err().map(Error::reason),
    );
    if result.is_ok() {
        ctx.failures().remove(&volume_key);
    }
    result
}

/// Retries a failed NasVolume with exponential backoff (1 s, 2 s, 4 s, ... up to 5 min).
pub fn error_policy(nv: Arc<NasVolume>, error: &Error, ctx: Arc<Context>) -> Action {
    let attempts = {
        let mut failures = ctx.failures();
        let n = failures.entry(key(&nv)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = Duration::from_secs(1u64 << attempts.saturating_sub(1).min(20)).min(MAX_BACKOFF);
    tracing::warn!(volume = %key(&nv), error = %error, attempts, retry_in_s = delay.as_secs(), "reconcile failed");
    let (recorder, reference, note) = (ctx.recorder.clone(), nv.object_ref(&()), error.to_string());
    tokio::spawn(async move {
        let event = Event {
            type_: EventType::Warning,
            reason: "ReconcileFailed".into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        let _ = recorder.publish(&event, &reference).await;
    });
    Action::requeue(delay)
}

async fn apply(nv: &NasVolume, ctx: &Context) -> Result<Action, Error> {
    let (namespace, _, names) = identity(nv)?;
    let client = ctx.client.clone();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut observed = Observed::default();

    if let Some(class) = &nv.spec.storage_class_name
        && Api::<StorageClass>::all(client.clone())
            .get_opt(class)
            .await?
            .is_none()
    {
        observed.unsatisfiable = Some((
            "StorageClassNotFound".into(),
            format!("storage class {class:?} does not exist"),
        ));
        publish_status(nv, ctx, status::compute(nv, &observed, now())).await?;
        // Not a hot loop: look again in a minute (a storage class may be added).
        return Ok(Action::requeue(Duration::from_secs(60)));
    }

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
    let existing_data = claims.get_opt(&names.data_claim).await?;
    let data_request = pvc::request_for(existing_data.as_ref(), &nv.spec.capacity, true);
    let data = claims
        .patch(
            &names.data_claim,
            &params,
            &Patch::Apply(pvc::data_claim(nv, data_request)?),
        )
        .await?;
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let svc = services
        .patch(
            &names.service,
            &params,
            &Patch::Apply(service::service(nv)?),
        )
        .await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let dep = deployments
        .patch(
            &names.deployment,
            &params,
            &Patch::Apply(deployment::deployment(nv, &ctx.settings)?),
        )
        .await?;

    let cluster_ip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .filter(|ip| !ip.is_empty() && ip != "None");
    if let Some(ip) = &cluster_ip {
        let volumes: Api<PersistentVolume> = Api::all(client.clone());
        volumes
            .patch(
                &names.volume,
                &params,
                &Patch::Apply(share::volume(nv, ip)?),
            )
            .await?;
        let existing_consumer = claims.get_opt(&names.consumer_claim).await?;
        let consumer_request =
            pvc::request_for(existing_consumer.as_ref(), &nv.spec.capacity, false);
        let consumer_claim = share::consumer_claim(nv, consumer_request)?;
        let consumer = claims
            .patch(
                &names.consumer_claim,
                &params,
                &Patch::Apply(consumer_claim),
            )
            .await?;
        observed.consumer_claim_phase = consumer.status.and_then(|s| s.phase);
    }
    observed.cluster_ip = cluster_ip;
    let requested = data
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref());
    let current = data.status.as_ref().and_then(|s| s.capacity.as_ref());
    observed.resizing = match (
        requested.and_then(|r| r.get("storage")),
        current.and_then(|c| c.get("storage")),
    ) {
        (Some(want), Some(have)) => {
            crate::quantity::to_units(want) > crate::quantity::to_units(have)
        }
        _ => false,
    };
    observed.data_claim_phase = data.status.and_then(|s| s.phase);
    let generation = dep.metadata.generation.unwrap_or(0);
    let dep_status = dep.status.unwrap_or_default();
    observed.available_replicas = dep_status.available_replicas.unwrap_or(0);
    observed.rolling_out = dep_status.observed_generation.unwrap_or(0) < generation
        || dep_status.updated_replicas.unwrap_or(0) < 1;

    let status = status::compute(nv, &observed, now());
    let ready = status.phase == Some(Phase::Ready);
    publish_status(nv, ctx, status).await?;
    // Children changes wake us through the watches; the requeue is a safety net.
    Ok(Action::requeue(if ready {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(15)
    }))
}

async fn cleanup(nv: &NasVolume, ctx: &Context) -> Result<Action, Error> {
    let (_, _, names) = identity(nv)?;
    let observed = Observed {
        deleting: true,
        ..Observed::default()
    };
    // The object may already be half gone; a failed status write must not block deletion.
    if let Err(e) = publish_status(nv, ctx, status::compute(nv, &observed, now())).await {
        tracing::debug!(error = %e, "could not mark the NasVolume Deleting");
    }
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    match volumes
        .delete(&names.volume, &DeleteParams::background())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    let event = Event {
        type_: EventType::Normal,
        reason: "ShareRemoved".into(),
        note: Some(format!(
            "deleted PersistentVolume {}; owned objects are garbage-collected",
            names.volume
        )),
        action: "Delete".into(),
        secondary: None,
    };
    let _ = ctx.recorder.publish(&event, &nv.object_ref(&())).await;
    Ok(Action::await_change())
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Writes the status (server-side apply on the status subresource) and records an Event
/// when the phase changes.
async fn publish_status(
    nv: &NasVolume,
    ctx: &Context,
    status: NasVolumeStatus,
) -> Result<(), Error> {
    let (namespace, name, _) = identity(nv)?;
    let previous = nv.status.as_ref().and_then(|s| s.phase);
    let api: Api<NasVolume> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = serde_json::json!({
        "apiVersion": "zeronas.io/v1alpha1",
        "kind": "NasVolume",
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    if status.phase != previous {
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        let phase = status.phase.map_or("Unknown", Phase::as_str);
        let event = Event {
            type_: if matches!(status.phase, Some(Phase::Degraded)) {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: phase.to_owned(),
            note: ready.map(|c| c.message.clone()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &nv.object_ref(&())).await {
            tracing::debug!(error = %e, "cannot publish event");
        }
        tracing::info!(volume = %format!("{namespace}/{name}"), phase, "phase changed");
    }
    Ok(())
}

/// Maps a PV back to its NasVolume through its labels.
fn volume_of(pv: PersistentVolume) -> Option<ObjectRef<NasVolume>> {
    let labels = pv.metadata.labels?;
    Some(ObjectRef::new(labels.get(LABEL_VOLUME)?).within(labels.get(LABEL_NAMESPACE)?))
}

/// Runs the controller until `shutdown` completes. `store` receives the NasVolume cache
/// (for metrics).
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
    store: tokio::sync::oneshot::Sender<Store<NasVolume>>,
) {
    let client = ctx.client.clone();
    let managed = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"));
    let controller = Controller::new(
        Api::<NasVolume>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        managed.clone(),
    )
    .owns(Api::<Deployment>::all(client.clone()), managed.clone())
    .owns(Api::<Service>::all(client.clone()), managed.clone())
    .watches(
        Api::<PersistentVolume>::all(client.clone()),
        managed,
        volume_of,
    )
    .graceful_shutdown_on(shutdown);
    let _ = store.send(controller.store());
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(volume = %object, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "controller event"),
            }
        })
        .await;
}
