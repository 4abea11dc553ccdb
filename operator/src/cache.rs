//! Reflector stores of the NasVolumes and of everything they own, fed by one watch per kind.
//!
//! A reconcile reads owned objects from these stores instead of asking the apiserver, and
//! compares them with what it would apply (see `reconcile::unchanged`): a NasVolume whose
//! objects are as described costs no request at all. The watches are the controller's
//! triggers as well, so each kind is watched once. Watches of owned kinds select the
//! `app.kubernetes.io/managed-by` label; the stores keep no `managedFields` (half of a
//! Deployment's bytes). Secrets are not watched: the operator may not list them (RBAC).

use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Lookup, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::crd::NasVolume;
use crate::names::{LABEL_MANAGED_BY, MANAGER};

/// How long a reconcile waits for the stores' first full list before it goes on without
/// them (every miss then costs a GET): a watch that cannot start (RBAC, an old apiserver)
/// must not stop reconciling.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The stores a reconcile reads.
#[derive(Clone)]
pub struct Caches {
    /// NasVolumes (the controller's own store).
    pub volumes: Store<NasVolume>,
    /// Backing and consumer claims.
    pub claims: Store<PersistentVolumeClaim>,
    /// Dataplane Services.
    pub services: Store<Service>,
    /// Dataplane Deployments.
    pub deployments: Store<Deployment>,
    /// NetworkPolicies in front of the dataplanes.
    pub policies: Store<NetworkPolicy>,
    /// The share PVs (cluster-scoped).
    pub shares: Store<PersistentVolume>,
    /// Storage classes (all of them: few, and the expansion rule needs them).
    pub classes: Store<StorageClass>,
}

/// Item of a watch stream feeding the controller.
pub type Feed<K> = BoxStream<'static, Result<K, watcher::Error>>;

/// The watch streams behind [`Caches`]; each fills its store while the controller polls it.
pub struct Feeds {
    /// NasVolumes whose spec, finalizers or deletion changed (status writes do not trigger).
    pub volumes: Feed<NasVolume>,
    /// Claim changes.
    pub claims: Feed<PersistentVolumeClaim>,
    /// Service changes.
    pub services: Feed<Service>,
    /// Deployment changes.
    pub deployments: Feed<Deployment>,
    /// NetworkPolicy changes.
    pub policies: Feed<NetworkPolicy>,
    /// PV changes.
    pub shares: Feed<PersistentVolume>,
    /// Storage class changes (they only fill the store).
    pub classes: Feed<StorageClass>,
}

/// A store and the watch that fills it; `managedFields` are dropped before storing.
fn reflected<K>(
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) -> (Store<K>, Feed<K>)
where
    K: Resource<DynamicType = ()> + Lookup<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let feed = stream
        .default_backoff()
        .modify(|object: &mut K| object.managed_fields_mut().clear())
        .reflect(writer)
        .applied_objects()
        .boxed();
    (store, feed)
}

fn full<K>(api: Api<K>, config: watcher::Config) -> (Store<K>, Feed<K>)
where
    K: Resource<DynamicType = ()>
        + Lookup<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    reflected(watcher(api, config))
}

/// What of a NasVolume makes a reconcile worth running: its spec (generation), its
/// finalizers and its deletion. Status is the operator's own output and never a cause.
fn reconcile_cause(nv: &NasVolume) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    nv.metadata.generation.hash(&mut hasher);
    nv.finalizers().hash(&mut hasher);
    nv.metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .hash(&mut hasher);
    Some(hasher.finish())
}

impl Caches {
    /// Stores and the watches that fill them, for the whole cluster.
    pub fn watch(client: &Client) -> (Self, Feeds) {
        let managed = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"));
        let (volumes, volume_feed) = full(
            Api::<NasVolume>::all(client.clone()),
            watcher::Config::default(),
        );
        let volume_feed = volume_feed
            .predicate_filter(reconcile_cause, Default::default())
            .boxed();
        let (claims, claim_feed) = full(Api::all(client.clone()), managed.clone());
        let (services, service_feed) = full(Api::all(client.clone()), managed.clone());
        let (deployments, deployment_feed) = full(Api::all(client.clone()), managed.clone());
        let (policies, policy_feed) = full(Api::all(client.clone()), managed.clone());
        let (shares, share_feed) = full(Api::all(client.clone()), managed.clone());

        let (classes, class_feed) = full(
            Api::<StorageClass>::all(client.clone()),
            watcher::Config::default(),
        );
        let caches = Self {
            volumes,
            claims,
            services,
            deployments,
            policies,
            shares,
            classes,
        };
        let feeds = Feeds {
            volumes: volume_feed,
            claims: claim_feed,
            services: service_feed,
            deployments: deployment_feed,
            policies: policy_feed,
            shares: share_feed,
            classes: class_feed,
        };
        (caches, feeds)
    }

    /// Empty stores with no watch behind them: every lookup misses and the reconcile asks
    /// the apiserver (tests, and `render`).
    pub fn detached() -> Self {
        Self {
            volumes: reflector::store().0,
            claims: reflector::store().0,
            services: reflector::store().0,
            deployments: reflector::store().0,
            policies: reflector::store().0,
            shares: reflector::store().0,
            classes: reflector::store().0,
        }
    }

    /// Waits (at most [`READY_TIMEOUT`]) until every store holds its first full list;
    /// returns whether they all do. Detached stores are ready at once.
    pub async fn ready(&self) -> bool {
        let all = async {
            // A dropped writer (detached stores) answers at once with an error: not a wait.
            let _ = self.volumes.wait_until_ready().await;
            let _ = self.claims.wait_until_ready().await;
            let _ = self.services.wait_until_ready().await;
            let _ = self.deployments.wait_until_ready().await;
            let _ = self.policies.wait_until_ready().await;
            let _ = self.shares.wait_until_ready().await;
            let _ = self.classes.wait_until_ready().await;
        };
        tokio::time::timeout(READY_TIMEOUT, all).await.is_ok()
    }
}

/// The object `name` in `namespace` from `store`, if there.
pub fn namespaced<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<std::sync::Arc<K>>
where
    K: Lookup<DynamicType = ()> + Clone + 'static,
{
    store.get(&ObjectRef::new(name).within(namespace))
}

/// The cluster-scoped object `name` from `store`, if there.
pub fn cluster<K>(store: &Store<K>, name: &str) -> Option<std::sync::Arc<K>>
where
    K: Lookup<DynamicType = ()> + Clone + 'static,
{
    store.get(&ObjectRef::new(name))
}
