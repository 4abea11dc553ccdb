//! The controller: reconciles NasVolumes (triggered by the watches of `cache`), server-side
//! applies the objects the builders describe when the cluster's copy differs, keeps the
//! status current (written only when it changes), and removes the PV on deletion.
//!
//! A reconcile of a NasVolume whose objects are as described reads the reflector stores and
//! sends nothing; at most `--max-concurrent-reconciles` run at once, and the client's rate
//! limit (`api_client`) paces what they do send.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, GetParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{OnceCell, Semaphore};

use crate::cache::{self, Caches, Compact, CompactStore, Feeds};

use crate::crd::{DeletionPolicy, NasVolume, NasVolumeStatus, Phase};
use crate::metrics::Metrics;
use crate::names::{LABEL_NAMESPACE, LABEL_VOLUME, MANAGER, OwnedNames};
use crate::reconcile::expansion::{self, Expansion};
use crate::reconcile::ownership::{self, Ownership};
use crate::reconcile::secret::{self, RandomError};
use crate::reconcile::sftp;
use crate::reconcile::status::{self, Observed};
use crate::reconcile::unchanged::{self, Difference};
use crate::reconcile::{
    BuildError, Settings, deletion, deployment, identity, network_policy, pvc, service, share,
};

/// The one field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "zeronas-operator";
/// Finalizer that holds the NasVolume until its share is safely taken down: no pod uses the
/// consumer claim, a retained backing claim is released, the cluster-scoped PV is removed.
pub const FINALIZER: &str = "zeronas.io/share-cleanup";
/// Longest wait between retries of a failing NasVolume.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Reconciles running at once when not configured (`--max-concurrent-reconciles`).
pub const DEFAULT_CONCURRENCY: u16 = 8;
/// How long a token Secret, once seen, is trusted to exist without being read again (it is
/// not watched): deleting it rotates the tokens within this time.
pub const SECRET_RECHECK: Duration = Duration::from_secs(300);
/// How often a deletion waiting for pods looks again.
pub const IN_USE_RECHECK: Duration = Duration::from_secs(5);
/// Environment variable naming the namespace allowed to scrape dataplane metrics (the
/// NetworkPolicy's metrics peer besides the NasVolume's own namespace).
pub const MONITORING_NAMESPACE_ENV: &str = "ZERONAS_MONITORING_NAMESPACE";
/// The monitoring namespace when [`MONITORING_NAMESPACE_ENV`] is unset.
pub const DEFAULT_MONITORING_NAMESPACE: &str = "monitoring";

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver refused or failed a call.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An object could not be built from the spec.
    #[error("cannot build objects: {0}")]
    Build(#[from] BuildError),
    /// No tokens could be generated for the token Secret.
    #[error("cannot create the HTTP token Secret: {0}")]
    Random(#[from] RandomError),
    /// A patch or a cached object could not be encoded or decoded.
    #[error("JSON encoding: {0}")]
    Encode(#[from] serde_json::Error),
}

impl Error {
    /// A bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(status)) if status.is_conflict() => "conflict",
            Error::Kube(kube::Error::Api(status)) if status.is_forbidden() => "forbidden",
            Error::Kube(kube::Error::Api(status)) if status.is_not_found() => "not_found",
            Error::Kube(kube::Error::Api(_)) => "api_error",
            Error::Kube(_) => "transport",
            Error::Build(_) => "invalid_spec",
            Error::Random(_) => "random",
            Error::Encode(_) => "internal",
        }
    }

    /// The `Ready=False` reason written to the status (CamelCase, as conditions want).
    pub fn condition_reason(&self) -> &'static str {
        match self.reason() {
            "conflict" => "Conflict",
            "forbidden" => "Forbidden",
            "not_found" => "NotFound",
            "api_error" => "ApiError",
            "transport" => "ApiUnreachable",
            "invalid_spec" => "InvalidSpec",
            _ => "ReconcileFailed",
        }
    }
}

/// Shared state of all reconciles.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// The stores reconciles read owned objects from.
    pub caches: Caches,
    /// One permit per reconcile allowed to run at once.
    slots: Semaphore,
    /// Whether the stores held their first full list when the first reconcile looked.
    stores_ready: OnceCell<bool>,
    /// Builder settings.
    pub settings: Settings,
    /// The namespace allowed to scrape dataplane metrics (see [`MONITORING_NAMESPACE_ENV`]).
    pub monitoring_namespace: String,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per NasVolume, for exponential backoff (entries leave on
    /// success and when their NasVolume is gone).
    pub failures: Mutex<HashMap<String, u32>>,
    /// When each NasVolume's token Secret was last read (see [`SECRET_RECHECK`]).
    secret_reads: Mutex<HashMap<String, Instant>>,
}

impl Context {
    /// A context for `client` reading `caches` (see [`Caches::detached`] for none), running
    /// at most `concurrency` reconciles at once; the monitoring namespace comes from
    /// [`MONITORING_NAMESPACE_ENV`] (the chart's `monitoringNamespace`).
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        caches: Caches,
        concurrency: usize,
    ) -> Arc<Self> {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        let monitoring_namespace = std::env::var(MONITORING_NAMESPACE_ENV)
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_MONITORING_NAMESPACE.to_owned());
        Arc::new(Self {
            client,
            caches,
            slots: Semaphore::new(concurrency.max(1)),
            stores_ready: OnceCell::new(),
            settings,
            monitoring_namespace,
            recorder,
            metrics,
            failures: Mutex::new(HashMap::new()),
            secret_reads: Mutex::new(HashMap::new()),
        })
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `volume`'s token Secret is due to be read again. A volume first seen (after a
    /// start) counts as read at a random moment of the last [`SECRET_RECHECK`], so the reads
    /// of thousands of volumes spread out instead of all coming at once.
    fn secret_read_due(&self, volume: &str) -> bool {
        let mut reads = self.secret_reads.lock().unwrap_or_else(|e| e.into_inner());
        if reads.len() > 64 && reads.len() > 2 * self.caches.volumes.len() {
            let volumes = &self.caches.volumes;
            reads.retain(|k, _| {
                let (namespace, name) = k.split_once('/').unwrap_or_default();
                cache::namespaced(volumes, namespace, name).is_some()
            });
        }
        let now = Instant::now();
        let last = *reads.entry(volume.to_owned()).or_insert_with(|| {
            // jitter() is uniform in [0.75, 1.25): a fraction in [0, 1) of the period.
            let fraction = (jitter() - 0.75) * 2.0;
            now.checked_sub(SECRET_RECHECK.mul_f64(fraction))
                .unwrap_or(now)
        });
        now.duration_since(last) >= SECRET_RECHECK
    }

    /// Records that `volume`'s token Secret was just read.
    fn secret_read(&self, volume: &str) {
        let mut reads = self.secret_reads.lock().unwrap_or_else(|e| e.into_inner());
        reads.insert(volume.to_owned(), Instant::now());
    }

    /// Publishes an Event about `nv`; a failure is only logged (events are best effort).
    async fn event(&self, nv: &NasVolume, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &nv.object_ref(&())).await {
            tracing::debug!(error = %e, reason, "cannot publish event");
        }
    }
}

fn key(nv: &NasVolume) -> String {
    format!("{}/{}", nv.namespace().unwrap_or_default(), nv.name_any())
}

/// Reconciles one NasVolume: adds the finalizer, applies the objects, or takes the share
/// down when it is being deleted. A failure is written to the status (`Ready=False` with the
/// error's reason) and counted under that reason.
///
/// At most `--max-concurrent-reconciles` run; the others wait for a slot, each as a small
/// future: the reconcile proper (a future of many kilobytes, every await point of every
/// request) is allocated only once the slot is taken, so thousands of queued NasVolumes
/// cost little memory.
pub async fn reconcile(nv: Arc<NasVolume>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.enqueued();
    let slot = ctx.slots.acquire().await;
    ctx.metrics.dequeued();
    let _slot = slot.ok();
    Box::pin(reconcile_admitted(nv, Arc::clone(&ctx))).await
}

async fn reconcile_admitted(nv: Arc<NasVolume>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ready = ctx.stores_ready.get_or_init(|| ctx.caches.ready()).await;
    if !*ready {
        tracing::warn!(
            "the watch caches were not filled within {} s; reading from the apiserver instead",
            cache::READY_TIMEOUT.as_secs()
        );
    }
    let started = Instant::now();
    let volume_key = key(&nv);
    let result = reconcile_volume(&nv, &ctx).await;
    if let Err(error) = &result {
        let failed = status::failed(&nv, error.condition_reason(), error.to_string(), now());
        if let Err(e) = publish_status(&nv, &ctx, failed).await {
            tracing::debug!(volume = %volume_key, error = %e, "cannot write the failure to the status");
        }
    }
    ctx.metrics.observe_reconcile(
        started.elapsed().as_secs_f64(),
        result.as_ref().err().map(Error::reason),
    );
    if result.is_ok() {
        ctx.failures().remove(&volume_key);
    }
    result
}

async fn reconcile_volume(nv: &NasVolume, ctx: &Context) -> Result<Action, Error> {
    let (namespace, name, _) = identity(nv)?;
    let api: Api<NasVolume> = Api::namespaced(ctx.client.clone(), &namespace);
    let finalizers = nv.finalizers();
    let position = finalizers.iter().position(|f| f == FINALIZER);
    if nv.meta().deletion_timestamp.is_some() {
        let Some(index) = position else {
            return Ok(Action::await_change());
        };
        return match cleanup(nv, ctx).await? {
            Cleanup::Waiting => Ok(Action::requeue(IN_USE_RECHECK)),
            Cleanup::Done => {
                // `test` first: never remove another controller's finalizer by index.
                let patch = serde_json::json!([
                    { "op": "test", "path": format!("/metadata/finalizers/{index}"), "value": FINALIZER },
                    { "op": "remove", "path": format!("/metadata/finalizers/{index}") },
                ]);
                remove_or_add_finalizer(&api, &name, patch).await?;
                Ok(Action::await_change())
            }
        };
    }
    if position.is_none() {
        let patch = if finalizers.is_empty() {
            serde_json::json!([
                { "op": "test", "path": "/metadata/finalizers", "value": null },
                { "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] },
            ])
        } else {
            serde_json::json!([{ "op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER }])
        };
        remove_or_add_finalizer(&api, &name, patch).await?;
        // The patch is a change of the NasVolume: the watch brings it back with the finalizer.
        return Ok(Action::await_change());
    }
    apply(nv, ctx).await
}

async fn remove_or_add_finalizer(
    api: &Api<NasVolume>,
    name: &str,
    patch: serde_json::Value,
) -> Result<(), Error> {
    let patch: json_patch::Patch = serde_json::from_value(patch)?;
    match api
        .patch::<NasVolume>(name, &PatchParams::default(), &Patch::Json(patch))
        .await
    {
        Ok(_) => Ok(()),
        // Gone already: nothing left to hold.
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Retries a failed NasVolume with exponential backoff (1 s, 2 s, 4 s, ... up to 5 min),
/// each delay scaled by a random factor in [0.75, 1.25) so that volumes failing together
/// (an apiserver outage) do not retry together.
pub fn error_policy(nv: Arc<NasVolume>, error: &Error, ctx: Arc<Context>) -> Action {
    let attempts = {
        let mut failures = ctx.failures();
        // Forget volumes that are gone (deleted while failing): the map is bounded by the
        // NasVolumes that exist, whatever the load.
        if failures.len() > 64 && failures.len() > 2 * ctx.caches.volumes.len() {
            let volumes = &ctx.caches.volumes;
            failures.retain(|k, _| {
                let (namespace, name) = k.split_once('/').unwrap_or_default();
                cache::namespaced(volumes, namespace, name).is_some()
            });
        }
        let n = failures.entry(key(&nv)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff(attempts, jitter());
    tracing::warn!(volume = %key(&nv), error = %error, reason = error.reason(), attempts, retry_in_s = delay.as_secs(), "reconcile failed");
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

/// The delay before retry `attempts` (1-based), scaled by `jitter` (in [0.75, 1.25)).
fn backoff(attempts: u32, jitter: f64) -> Duration {
    let base = Duration::from_secs(1u64 << attempts.saturating_sub(1).min(20)).min(MAX_BACKOFF);
    base.mul_f64(jitter).min(MAX_BACKOFF)
}

/// A random factor in [0.75, 1.25).
fn jitter() -> f64 {
    let random = getrandom::u32().unwrap_or(u32::MAX / 2);
    0.75 + 0.5 * f64::from(random) / (f64::from(u32::MAX) + 1.0)
}

/// The object `name` from `store`, or, when the store has no copy, from the apiserver's
/// watch cache (`resourceVersion=0`: no etcd read). The stores hold only objects labelled
/// as the operator's, so a miss may be an object someone else made under that name.
async fn lookup<K>(store: &CompactStore<K>, api: &Api<K>, name: &str) -> Result<Option<K>, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + 'static,
{
    let namespace = api.namespace().unwrap_or_default();
    if let Some(cached) = cache::namespaced(store, namespace, name) {
        return Ok(Some(cached.object()?));
    }
    match api.get_with(name, &GetParams::any()).await {
        Ok(object) => Ok(Some(object)),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Reads the object called `name` (see [`lookup`]) and decides who controls it.
async fn ownership_of<K>(
    store: &CompactStore<K>,
    api: &Api<K>,
    name: &str,
    nv_name: &str,
    uid: &str,
    adoptable: bool,
) -> Result<(Option<K>, Ownership), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + 'static,
{
    let existing = lookup(store, api, name).await?;
    let ownership =
        ownership::classify(existing.as_ref().map(|o| o.meta()), nv_name, uid, adoptable);
    Ok((existing, ownership))
}

/// Server-side apply of an owned object. Objects this NasVolume controls are applied with
/// `force`: the operator is the only writer of the fields it sets, and force takes back a
/// field someone changed by hand (drift) instead of failing every reconcile on a manager
/// conflict. A new object is applied without force, so an object created by someone else
/// between our read and our write makes the apply fail rather than be taken over.
///
/// Nothing is sent when the object is ours and `live` already is as described (see
/// [`unchanged`]): then `live` is the result.
async fn apply_owned<K>(
    ctx: &Context,
    api: &Api<K>,
    name: &str,
    ownership: &Ownership,
    object: K,
    live: Option<&K>,
) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let params = match ownership {
        Ownership::Ours | Ownership::Retained => PatchParams::apply(FIELD_MANAGER).force(),
        _ => PatchParams::apply(FIELD_MANAGER),
    };
    let live = live.filter(|_| *ownership == Ownership::Ours);
    apply_if_changed(ctx, api, name, &params, object, live).await
}

/// Server-side apply of `object` stamped with its [`unchanged::ANNOTATION_APPLIED`] hash,
/// unless `live` is already that object.
async fn apply_if_changed<K>(
    ctx: &Context,
    api: &Api<K>,
    name: &str,
    params: &PatchParams,
    mut object: K,
    live: Option<&K>,
) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let kind = object_kind(&object);
    let hash = unchanged::applied_hash(&object)?;
    unchanged::stamp(&mut object.meta_mut().annotations, hash);
    if let Some(live) = live {
        match unchanged::difference(
            &serde_json::to_value(&object)?,
            &serde_json::to_value(live)?,
        ) {
            None => {
                ctx.metrics.skip_write(kind);
                return Ok(live.clone());
            }
            Some(Difference::Field(path)) => {
                tracing::info!(
                    kind,
                    name,
                    path,
                    "re-applying: a field differs from the description"
                );
            }
            Some(Difference::Description) => {
                tracing::info!(kind, name, "re-applying: the description changed");
            }
        }
    }
    Ok(api.patch(name, params, &Patch::Apply(&object)).await?)
}

/// The kind of a typed object, for metrics and logs.
fn object_kind<K: Resource<DynamicType = ()>>(_: &K) -> &'static str {
    // `K::kind` borrows from the dynamic type; for static types it is a literal.
    match K::kind(&()).as_ref() {
        "PersistentVolumeClaim" => "PersistentVolumeClaim",
        "PersistentVolume" => "PersistentVolume",
        "Service" => "Service",
        "Deployment" => "Deployment",
        "NetworkPolicy" => "NetworkPolicy",
        _ => "other",
    }
}

/// Creates a Secret of ours that is made once and never rewritten (`what` for the log).
async fn create_once(
    secrets: &Api<Secret>,
    object: &Secret,
    what: &str,
    nv: &NasVolume,
) -> Result<(), Error> {
    secrets
        .create(
            &PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PostParams::default()
            },
            object,
        )
        .await?;
    let name = object.metadata.name.as_deref().unwrap_or_default();
    tracing::info!(volume = %key(nv), secret = %name, "created the {what} Secret");
    Ok(())
}

/// Creates the HTTP token Secret with two new random tokens.
async fn create_token_secret(nv: &NasVolume, secrets: &Api<Secret>) -> Result<(), Error> {
    let object = secret::token_secret(nv, &secret::new_token()?, &secret::new_token()?)?;
    create_once(secrets, &object, "HTTP token", nv).await
}

/// Creates the SFTP host key Secret with a new ed25519 key.
async fn create_host_key_secret(nv: &NasVolume, secrets: &Api<Secret>) -> Result<(), Error> {
    let (namespace, name, _) = identity(nv)?;
    let host_key = sftp::new_host_key(&format!("zeronas {namespace}/{name}"))?;
    let object = sftp::host_key_secret(nv, &host_key)?;
    create_once(secrets, &object, "SFTP host key", nv).await
}

/// The storage class `name`, from the store or (on a miss) the apiserver.
async fn storage_class(ctx: &Context, name: &str) -> Result<Option<StorageClass>, Error> {
    if let Some(class) = cache::cluster(&ctx.caches.classes, name) {
        return Ok(Some((*class).clone()));
    }
    Ok(Api::<StorageClass>::all(ctx.client.clone())
        .get_opt(name)
        .await?)
}

/// Who controls the token Secret `name` (its metadata only: the tokens are never read).
async fn secret_ownership(
    ctx: &Context,
    namespace: &str,
    name: &str,
    nv_name: &str,
    uid: &str,
) -> Result<Ownership, Error> {
    let existing = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_metadata_opt(name)
        .await?
        .map(|m| m.metadata);
    Ok(ownership::classify(existing.as_ref(), nv_name, uid, false))
}

async fn apply(nv: &NasVolume, ctx: &Context) -> Result<Action, Error> {
    let (namespace, name, names) = identity(nv)?;
    let uid = nv.uid().unwrap_or_default();
    let client = ctx.client.clone();
    let mut observed = Observed::default();

    if let Some(class) = &nv.spec.storage_class_name
        && storage_class(ctx, class).await?.is_none()
    {
        observed.unsatisfiable = Some((
            "StorageClassNotFound".into(),
            format!("storage class {class:?} does not exist"),
        ));
        publish_status(nv, ctx, status::compute(nv, &observed, now())).await?;
        // Not a hot loop: look again in a minute (a storage class may be added).
        return Ok(Action::requeue(Duration::from_secs(60)));
    }

    // Every namespaced name is checked before anything is written: one foreign object and
    // the NasVolume touches nothing.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &namespace);
    let caches = &ctx.caches;
    let (existing_data, data_owner) = ownership_of(
        &caches.claims,
        &claims,
        &names.data_claim,
        &name,
        &uid,
        true,
    )
    .await?;
    // A share published by someone else (the CSI driver) has no consumer claim to check.
    let (existing_consumer, consumer_owner) = if nv.spec.consumer_claim {
        ownership_of(
            &caches.claims,
            &claims,
            &names.consumer_claim,
            &name,
            &uid,
            false,
        )
        .await?
    } else {
        (None, Ownership::Absent)
    };
    let (existing_service, service_owner) = ownership_of(
        &caches.services,
        &services,
        &names.service,
        &name,
        &uid,
        false,
    )
    .await?;
    let (existing_deployment, deployment_owner) = ownership_of(
        &caches.deployments,
        &deployments,
        &names.deployment,
        &name,
        &uid,
        false,
    )
    .await?;
    // The Secret is never listed or watched (RBAC: get and create only), so it is read until
    // the status names it, which it does only once the Secret was seen or made; after that
    // a dataplane Deployment of ours in the store is the sign that all is in place, and it is
    // read again every SECRET_RECHECK (a deleted Secret rotates the tokens) and when the
    // status changes (below).
    let secret_named = nv
        .status
        .as_ref()
        .and_then(|s| s.http_token_secret.as_deref())
        == Some(names.token_secret.as_str());
    let secret_trusted = secret_named
        && cache::namespaced(&caches.deployments, &namespace, &names.deployment).is_some()
        && !ctx.secret_read_due(&key(nv));
    let secret_owner = if secret_trusted {
        Ownership::Ours
    } else {
        ctx.secret_read(&key(nv));
        secret_ownership(ctx, &namespace, &names.token_secret, &name, &uid).await?
    };
    // The SFTP host key Secret is trusted like the token Secret: once the status names it,
    // it is read again only when the token Secret is.
    let host_key_named = nv
        .status
        .as_ref()
        .and_then(|s| s.sftp_host_key_secret.as_deref())
        == Some(names.sftp_host_key_secret.as_str());
    let sftp_trusted = host_key_named && secret_trusted;
    let host_key_owner = if !sftp::serves_sftp(nv) {
        Ownership::Absent
    } else if sftp_trusted {
        Ownership::Ours
    } else {
        secret_ownership(ctx, &namespace, &names.sftp_host_key_secret, &name, &uid).await?
    };
    let (existing_policy, policy_owner) = ownership_of(
        &caches.policies,
        &policies,
        &names.network_policy,
        &name,
        &uid,
        false,
    )
    .await?;
    let checked = [
        ("PersistentVolumeClaim", &names.data_claim, &data_owner),
        (
            "PersistentVolumeClaim",
            &names.consumer_claim,
            &consumer_owner,
        ),
        ("Service", &names.service, &service_owner),
        ("Deployment", &names.deployment, &deployment_owner),
        ("Secret", &names.token_secret, &secret_owner),
        ("Secret", &names.sftp_host_key_secret, &host_key_owner),
        ("NetworkPolicy", &names.network_policy, &policy_owner),
    ];
    let conflicts: Vec<String> = checked
        .iter()
        .filter_map(|(kind, object, owner)| match owner {
            Ownership::Foreign(whose) => {
                Some(ownership::conflict_message(kind, &namespace, object, whose))
            }
            _ => None,
        })
        .collect();
    if !conflicts.is_empty() {
        let message = conflicts.join("; ");
        tracing::warn!(volume = %key(nv), %message, "name conflict; nothing applied");
        ctx.event(nv, EventType::Warning, "NameConflict", message.clone())
            .await;
        observed.blocked = Some(("NameConflict".into(), message));
        publish_status(nv, ctx, status::compute(nv, &observed, now())).await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    }

    // The user's authorized keys Secret must hold its key before a pod mounts it: a pod
    // waiting for it would take the share down (Recreate) with no word why. Read on every
    // reconcile of an SFTP share (public keys only; a renamed or emptied Secret is seen).
    let keys_problem = match sftp::authorized_keys_secret(nv) {
        Some(keys) => match secrets.get_opt(keys).await? {
            None => Some(format!(
                "sftp.authorizedKeysSecret {keys:?} does not exist in namespace {namespace}: create it with the key {}",
                sftp::AUTHORIZED_KEYS_KEY
            )),
            Some(secret) if !sftp::has_authorized_keys(&secret) => Some(format!(
                "sftp.authorizedKeysSecret {keys:?} has no key {}",
                sftp::AUTHORIZED_KEYS_KEY
            )),
            Some(_) => None,
        },
        None => None,
    };
    if let Some(message) = keys_problem {
        tracing::warn!(volume = %key(nv), %message, "SFTP keys missing; nothing applied");
        ctx.event(
            nv,
            EventType::Warning,
            "AuthorizedKeysSecretNotFound",
            message.clone(),
        )
        .await;
        observed.blocked = Some(("AuthorizedKeysSecretNotFound".into(), message));
        // What exists keeps its place in the status meanwhile.
        observed.token_secret = secret_owner == Ownership::Ours;
        observed.sftp_host_key = host_key_owner == Ownership::Ours;
        publish_status(nv, ctx, status::compute(nv, &observed, now())).await?;
        // The Secret is not watched: look again soon (one read of it each time).
        return Ok(Action::requeue(Duration::from_secs(15)));
    }

    // The backing claim: created, adopted (retained from a NasVolume of this name), or
    // grown when its storage class allows it.
    let class = match existing_data.as_ref().and_then(expansion::class_of) {
        Some(class) => storage_class(ctx, class).await?,
        None => None,
    };
    let resizable =
        match expansion::decide(existing_data.as_ref(), &nv.spec.capacity, class.as_ref()) {
            Expansion::NotNeeded | Expansion::Allowed => true,
            Expansion::NotSupported(message) => {
                observed.blocked = Some(("ExpansionNotSupported".into(), message));
                false
            }
        };
    let data_request = pvc::request_for(existing_data.as_ref(), &nv.spec.capacity, resizable);
    // With growth refused, the share is served at the size its claim really has: the quota
    // and the PV never promise space the backing volume does not have.
    let refused_growth;
    let served: &NasVolume = if resizable {
        nv
    } else {
        refused_growth = expansion::served_at(nv, &data_request);
        &refused_growth
    };
    let data = apply_owned(
        ctx,
        &claims,
        &names.data_claim,
        &data_owner,
        pvc::data_claim(nv, data_request)?,
        existing_data.as_ref(),
    )
    .await?;
    if data_owner == Ownership::Retained {
        claims
            .patch(
                &names.data_claim,
                &PatchParams::default(),
                &Patch::Merge(deletion::adopted_patch()),
            )
            .await?;
        tracing::info!(volume = %key(nv), claim = %names.data_claim, "adopted a retained backing claim");
        ctx.event(
            nv,
            EventType::Normal,
            "Adopted",
            format!(
                "adopted the retained backing claim {} and its data",
                names.data_claim
            ),
        )
        .await;
    }

    // The token Secret is created once and never rewritten: handed-out tokens stay valid.
    if secret_owner == Ownership::Absent {
        create_token_secret(nv, &secrets).await?;
    }
    observed.token_secret = true;
    // The host key likewise: clients' known_hosts stay valid for the NasVolume's life.
    if sftp::serves_sftp(nv) {
        if host_key_owner == Ownership::Absent {
            create_host_key_secret(nv, &secrets).await?;
        }
        observed.sftp_host_key = true;
    }

    let svc = apply_owned(
        ctx,
        &services,
        &names.service,
        &service_owner,
        service::service(nv)?,
        existing_service.as_ref(),
    )
    .await?;
    apply_owned(
        ctx,
        &policies,
        &names.network_policy,
        &policy_owner,
        network_policy::network_policy(nv, &ctx.monitoring_namespace)?,
        existing_policy.as_ref(),
    )
    .await?;
    let dep = apply_owned(
        ctx,
        &deployments,
        &names.deployment,
        &deployment_owner,
        deployment::deployment(served, &ctx.settings)?,
        existing_deployment.as_ref(),
    )
    .await?;

    let cluster_ip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .filter(|ip| !ip.is_empty() && ip != "None");
    if let Some(ip) = cluster_ip.as_ref().filter(|_| nv.spec.consumer_claim) {
        // Cluster-scoped and named after the uid: no tenant can name another's PV.
        let volumes: Api<PersistentVolume> = Api::all(client.clone());
        let live_share = cache::cluster(&caches.shares, &names.volume)
            .map(|c| c.object())
            .transpose()?;
        apply_if_changed(
            ctx,
            &volumes,
            &names.volume,
            &PatchParams::apply(FIELD_MANAGER).force(),
            share::volume(served, ip)?,
            live_share.as_ref(),
        )
        .await?;
        let consumer_request =
            pvc::request_for(existing_consumer.as_ref(), &served.spec.capacity, false);
        let consumer = apply_owned(
            ctx,
            &claims,
            &names.consumer_claim,
            &consumer_owner,
            share::consumer_claim(nv, consumer_request)?,
            existing_consumer.as_ref(),
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
    // Something changed (a dataplane that stopped, a claim that moved): a pod that starts
    // again mounts the Secret, so make sure it is still there (a deleted one is made anew).
    if secret_trusted
        && nv.status.as_ref() != Some(&status)
        && secret_ownership(ctx, &namespace, &names.token_secret, &name, &uid).await?
            == Ownership::Absent
    {
        create_token_secret(nv, &secrets).await?;
    }
    if sftp_trusted
        && nv.status.as_ref() != Some(&status)
        && secret_ownership(ctx, &namespace, &names.sftp_host_key_secret, &name, &uid).await?
            == Ownership::Absent
    {
        create_host_key_secret(nv, &secrets).await?;
    }
    let ready = status.phase == Some(Phase::Ready);
    publish_status(nv, ctx, status).await?;
    // Children changes wake us through the watches; the requeue is a safety net.
    Ok(Action::requeue(if ready {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(15)
    }))
}

/// Where a deletion stands.
enum Cleanup {
    /// Pods still use the consumer claim: look again later.
    Waiting,
    /// Everything that needed doing is done: the finalizer may go.
    Done,
}

async fn cleanup(nv: &NasVolume, ctx: &Context) -> Result<Cleanup, Error> {
    let (namespace, name, names) = identity(nv)?;
    let uid = nv.uid().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let users = deletion::pods_using(
        &pods.list(&ListParams::default()).await?.items,
        &names.consumer_claim,
    );
    if !users.is_empty() {
        let message = deletion::in_use_message(&names.consumer_claim, &users);
        tracing::info!(volume = %key(nv), pods = ?users, "deletion waits for pods using the share");
        let observed = Observed {
            deleting: true,
            in_use: Some(message.clone()),
            ..Observed::default()
        };
        if let Err(e) = publish_status(nv, ctx, status::compute(nv, &observed, now())).await {
            tracing::debug!(error = %e, "could not mark the NasVolume InUse");
        }
        ctx.event(nv, EventType::Warning, "InUse", message).await;
        return Ok(Cleanup::Waiting);
    }
    let observed = Observed {
        deleting: true,
        ..Observed::default()
    };
    // The object may already be half gone; a failed status write must not block deletion.
    if let Err(e) = publish_status(nv, ctx, status::compute(nv, &observed, now())).await {
        tracing::debug!(error = %e, "could not mark the NasVolume Deleting");
    }
    match nv.spec.deletion_policy {
        DeletionPolicy::Retain => {
            retain_data_claim(nv, ctx, &namespace, &name, &uid, &names).await?;
        }
        DeletionPolicy::Delete => delete_data_claim(ctx, &namespace, &name, &uid, &names).await?,
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
    ctx.event(
        nv,
        EventType::Normal,
        "ShareRemoved",
        format!(
            "deleted PersistentVolume {}; owned objects are garbage-collected",
            names.volume
        ),
    )
    .await;
    Ok(Cleanup::Done)
}

/// The backing claim, when it exists and is this NasVolume's (with the API to change it).
async fn our_data_claim(
    ctx: &Context,
    namespace: &str,
    name: &str,
    uid: &str,
    names: &OwnedNames,
) -> Result<Option<(Api<PersistentVolumeClaim>, PersistentVolumeClaim)>, Error> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(claim) = claims.get_opt(&names.data_claim).await? else {
        return Ok(None);
    };
    let ours = ownership::classify(Some(&claim.metadata), name, uid, true) == Ownership::Ours;
    Ok(ours.then_some((claims, claim)))
}

/// `deletionPolicy: Delete`: deletes the backing claim (it has no owner reference, so
/// garbage collection would not), if it is this NasVolume's.
async fn delete_data_claim(
    ctx: &Context,
    namespace: &str,
    name: &str,
    uid: &str,
    names: &OwnedNames,
) -> Result<(), Error> {
    let Some((claims, _)) = our_data_claim(ctx, namespace, name, uid, names).await? else {
        return Ok(());
    };
    match claims
        .delete(&names.data_claim, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `deletionPolicy: Retain`: releases the backing claim from the NasVolume (so garbage
/// collection keeps it) and labels it for adoption by a NasVolume of the same name.
async fn retain_data_claim(
    nv: &NasVolume,
    ctx: &Context,
    namespace: &str,
    name: &str,
    uid: &str,
    names: &OwnedNames,
) -> Result<(), Error> {
    // Not there, not ours, or already released by an earlier attempt: leave it as it is.
    let Some((claims, claim)) = our_data_claim(ctx, namespace, name, uid, names).await? else {
        return Ok(());
    };
    claims
        .patch(
            &names.data_claim,
            &PatchParams::default(),
            &Patch::Merge(deletion::release_patch(&claim, name, uid)),
        )
        .await?;
    tracing::info!(volume = %key(nv), claim = %names.data_claim, "retained the backing claim");
    ctx.event(
        nv,
        EventType::Normal,
        "Retained",
        format!(
            "deletionPolicy Retain: kept the backing claim {} (label zeronas.io/retained=true); \
             a NasVolume named {name} in {namespace} adopts it",
            names.data_claim
        ),
    )
    .await;
    Ok(())
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Writes the status (server-side apply on the status subresource) unless it already is
/// `status`, and records an Event when the phase changes.
async fn publish_status(
    nv: &NasVolume,
    ctx: &Context,
    status: NasVolumeStatus,
) -> Result<(), Error> {
    let (namespace, name, _) = identity(nv)?;
    if nv.status.as_ref() == Some(&status) {
        ctx.metrics.skip_write("NasVolumeStatus");
        return Ok(());
    }
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
fn volume_of(pv: Compact<PersistentVolume>) -> Option<ObjectRef<NasVolume>> {
    let labels = pv.meta().labels.as_ref()?;
    Some(ObjectRef::new(labels.get(LABEL_VOLUME)?).within(labels.get(LABEL_NAMESPACE)?))
}

/// Runs the controller on `feeds` (the watches behind `ctx.caches`) until `shutdown`
/// completes.
pub async fn run(
    ctx: Arc<Context>,
    feeds: Feeds,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let controller = Controller::for_stream(feeds.volumes, ctx.caches.volumes.clone())
        .owns_stream(feeds.claims)
        .owns_stream(feeds.deployments)
        .owns_stream(feeds.services)
        .owns_stream(feeds.policies)
        .watches_stream(feeds.shares, volume_of)
        .watches_stream(feeds.classes, |_| None)
        .graceful_shutdown_on(shutdown);
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

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;
    use crate::reconcile::test_support::basic;

    fn api(code: u16, reason: &str) -> Error {
        Error::Kube(kube::Error::Api(Box::new(
            Status::failure("refused", reason).with_code(code),
        )))
    }

    #[test]
    fn errors_keep_their_own_reason() {
        let cases = [
            (api(403, "Forbidden"), "forbidden", "Forbidden"),
            (api(409, "Conflict"), "conflict", "Conflict"),
            (api(404, "NotFound"), "not_found", "NotFound"),
            (api(422, "Invalid"), "api_error", "ApiError"),
            (
                Error::Build(BuildError::MissingMetadata("uid")),
                "invalid_spec",
                "InvalidSpec",
            ),
        ];
        for (error, metric, condition) in cases {
            assert_eq!(
                (error.reason(), error.condition_reason()),
                (metric, condition)
            );
            // Listed, so the metric starts at zero for it.
            assert!(crate::metrics::RECONCILE_ERROR_REASONS.contains(&metric));
        }
        let metrics = Metrics::new();
        metrics.observe_reconcile(0.1, Some(api(403, "Forbidden").reason()));
        assert_eq!(metrics.errors("forbidden"), 1);
        assert_eq!(metrics.errors("finalizer"), 0);
    }

    #[tokio::test]
    async fn a_queued_reconcile_is_small() {
        let (service, _handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let ctx = Context::new(
            Client::new(service, "default"),
            Settings {
                dataplane_image: "zeronas/dataplane:test".into(),
            },
            Arc::new(Metrics::new()),
            Caches::detached(),
            1,
        );
        let nv = Arc::new(basic());
        let queued = std::mem::size_of_val(&reconcile(Arc::clone(&nv), Arc::clone(&ctx)));
        let admitted = std::mem::size_of_val(&reconcile_admitted(nv, ctx));
        // Thousands wait at once after a restart: each must cost bytes, not kilobytes.
        assert!(queued < 512, "a queued reconcile takes {queued} bytes");
        assert!(
            admitted > 4 * queued,
            "{admitted} vs {queued}: the test measures nothing"
        );
    }

    #[test]
    fn backoff_doubles_to_five_minutes_with_jitter() {
        assert_eq!(backoff(1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(4, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(40, 1.0), MAX_BACKOFF);
        assert_eq!(backoff(2, 0.75), Duration::from_millis(1500));
        let factors: Vec<f64> = (0..200).map(|_| jitter()).collect();
        assert!(
            factors.iter().all(|f| (0.75..1.25).contains(f)),
            "{factors:?}"
        );
        // Random, not constant: volumes failing together spread out.
        assert!(factors.iter().any(|f| (f - factors[0]).abs() > 0.01));
    }

    #[test]
    fn a_failure_becomes_ready_false_with_the_reason() {
        let error = api(403, "Forbidden");
        let s = status::failed(&basic(), error.condition_reason(), error.to_string(), now());
        let ready = &s.conditions[0];
        assert_eq!(
            (ready.type_.as_str(), ready.status.as_str()),
            ("Ready", "False")
        );
        assert_eq!(ready.reason, "Forbidden");
        assert!(
            ready.message.starts_with("kubernetes API:"),
            "{}",
            ready.message
        );
        assert_eq!(s.observed_generation, Some(3));
    }
}
