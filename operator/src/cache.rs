//! Reflector stores of the NasVolumes and of everything they own, fed by one watch per kind.
//!
//! A reconcile reads owned objects from these stores instead of asking the apiserver, and
//! compares them with what it would apply (see `reconcile::unchanged`): a NasVolume whose
//! objects are as described costs no request at all. The watches are the controller's
//! triggers as well, so each kind is watched once. Watches of owned kinds select the
//! `app.kubernetes.io/managed-by` label. Secrets are not watched: the operator may not list
//! them (RBAC).
//!
//! Owned objects are stored [`Compact`]: their metadata and their JSON text without
//! `managedFields`, parsed when a reconcile needs them. The typed k8s-openapi structs are
//! several times their JSON (a Deployment's pod template holds every volume source and
//! probe handler inline): stored typed, 2,000 NasVolumes took 150 MiB, JSON takes a fraction.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Lookup, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crd::NasVolume;
use crate::names::{LABEL_MANAGED_BY, MANAGER};

/// How long a reconcile waits for the stores' first full list before it goes on without
/// them (every miss then costs a GET): a watch that cannot start (RBAC, an old apiserver)
/// must not stop reconciling.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// An object as a store keeps it: its metadata (lookups, owner references) and the JSON of
/// the whole object without `managedFields`.
#[derive(Debug)]
pub struct Compact<K> {
    metadata: ObjectMeta,
    json: Box<str>,
    kind: PhantomData<fn() -> K>,
}

// Not derived: a derive would ask `K: Clone`.
impl<K> Clone for Compact<K> {
    fn clone(&self) -> Self {
        Self {
            metadata: self.metadata.clone(),
            json: self.json.clone(),
            kind: PhantomData,
        }
    }
}

impl<K: Resource + Serialize> Compact<K> {
    /// `object` without its `managedFields`, as JSON.
    pub fn new(mut object: K) -> Result<Self, serde_json::Error> {
        object.meta_mut().managed_fields = None;
        let json = serde_json::to_string(&object)?.into_boxed_str();
        Ok(Self {
            metadata: std::mem::take(object.meta_mut()),
            json,
            kind: PhantomData,
        })
    }
}

impl<K: DeserializeOwned> Compact<K> {
    /// The typed object.
    pub fn object(&self) -> Result<K, serde_json::Error> {
        serde_json::from_str(&self.json)
    }
}

// Deserialized as the object it stands for (the controller's `watches_stream` asks for it).
impl<'de, K: Resource + Serialize + DeserializeOwned> serde::Deserialize<'de> for Compact<K> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let object = K::deserialize(deserializer)?;
        Compact::new(object).map_err(serde::de::Error::custom)
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Compact<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A store of compact objects.
pub type CompactStore<K> = Store<Compact<K>>;

/// Objects a page of the initial LIST of a watch: every page is held twice at once (its
/// JSON and its typed objects) while it is decoded, so small pages keep the peak memory of a
/// start with thousands of NasVolumes low.
pub const LIST_PAGE: u32 = 50;

/// The stores a reconcile reads.
#[derive(Clone)]
pub struct Caches {
    /// NasVolumes (the controller's own store).
    pub volumes: Store<NasVolume>,
    /// Backing and consumer claims.
    pub claims: CompactStore<PersistentVolumeClaim>,
    /// Dataplane Services.
    pub services: CompactStore<Service>,
    /// Dataplane Deployments.
    pub deployments: CompactStore<Deployment>,
    /// NetworkPolicies in front of the dataplanes.
    pub policies: CompactStore<NetworkPolicy>,
    /// The share PVs (cluster-scoped).
    pub shares: CompactStore<PersistentVolume>,
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
    pub claims: Feed<Compact<PersistentVolumeClaim>>,
    /// Service changes.
    pub services: Feed<Compact<Service>>,
    /// Deployment changes.
    pub deployments: Feed<Compact<Deployment>>,
    /// NetworkPolicy changes.
    pub policies: Feed<Compact<NetworkPolicy>>,
    /// PV changes.
    pub shares: Feed<Compact<PersistentVolume>>,
    /// Storage class changes (they only fill the store).
    pub classes: Feed<StorageClass>,
}

/// A store and the watch that fills it (every object applied or deleted is passed on);
/// `managedFields` are dropped before storing.
fn reflected<K>(
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) -> (Store<K>, Feed<K>)
where
    K: Resource<DynamicType = ()> + Lookup<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let feed = stream
        .default_backoff()
        .modify(|object: &mut K| object.meta_mut().managed_fields = None)
        .reflect(writer)
        // Deletions too: a deleted owned object (or one whose label was removed) must bring
        // its NasVolume back at once, not at the next periodic reconcile.
        .touched_objects()
        .boxed();
    (store, feed)
}

/// A store of compact objects of `api`'s kind, and the watch that fills it.
fn compact<K>(api: Api<K>, config: watcher::Config) -> (CompactStore<K>, Feed<Compact<K>>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let events = watcher(api, config).filter_map(|event| {
        std::future::ready(match event {
            Ok(event) => compact_event(event),
            Err(e) => Some(Err(e)),
        })
    });
    reflected(events)
}

/// The event with its object made [`Compact`]; an object that cannot be encoded is left out
/// (logged: its NasVolume then reads it from the apiserver).
fn compact_event<K>(
    event: watcher::Event<K>,
) -> Option<Result<watcher::Event<Compact<K>>, watcher::Error>>
where
    K: Resource + Serialize,
{
    let encode = |object: K| match Compact::new(object) {
        Ok(compact) => Some(compact),
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode a watched object; it is not cached");
            None
        }
    };
    Some(Ok(match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(encode(o)?),
        watcher::Event::Delete(o) => watcher::Event::Delete(encode(o)?),
        watcher::Event::InitApply(o) => watcher::Event::InitApply(encode(o)?),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    }))
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
        let listed = watcher::Config::default().page_size(LIST_PAGE);
        let managed = listed
            .clone()
            .labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"));
        let (volumes, volume_feed) = full(Api::<NasVolume>::all(client.clone()), listed.clone());
        let volume_feed = volume_feed
            .predicate_filter(reconcile_cause, Default::default())
            .boxed();
        let (claims, claim_feed) = compact(Api::all(client.clone()), managed.clone());
        let (services, service_feed) = compact(Api::all(client.clone()), managed.clone());
        let (deployments, deployment_feed) = compact(Api::all(client.clone()), managed.clone());
        let (policies, policy_feed) = compact(Api::all(client.clone()), managed.clone());
        let (shares, share_feed) = compact(Api::all(client.clone()), managed.clone());

        let (classes, class_feed) = full(Api::<StorageClass>::all(client.clone()), listed.clone());
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

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    use super::*;

    #[tokio::test]
    async fn deletions_reach_the_controller() {
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "media", "namespace": "a" },
        }))
        .unwrap();
        let events = futures::stream::iter([
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(service.clone())),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Delete(service)),
        ]);
        let (store, feed) = reflected(events);
        let seen: Vec<_> = feed.collect().await;
        // The listed object, then its deletion: both wake the NasVolume that owns it.
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(store.is_empty());
    }

    #[test]
    fn a_compact_object_keeps_all_but_managed_fields() {
        let mut service: Service = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": "media", "namespace": "a", "labels": { "l": "v" } },
            "spec": { "clusterIP": "10.0.0.7", "ports": [{ "name": "nfs", "port": 2049 }] },
        }))
        .unwrap();
        service.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some("zeronas-operator".into()),
            ..ManagedFieldsEntry::default()
        }]);
        let compact = Compact::new(service.clone()).unwrap();
        assert_eq!(compact.meta().name.as_deref(), Some("media"));
        assert_eq!(<Compact<Service> as Resource>::kind(&()), "Service");
        let back = compact.object().unwrap();
        assert_eq!(back.metadata.managed_fields, None);
        service.metadata.managed_fields = None;
        assert_eq!(back, service);
        let store_ref = ObjectRef::<Compact<Service>>::new("media").within("a");
        let (store, mut writer) = reflector::store::<Compact<Service>>();
        writer.apply_watcher_event(&watcher::Event::Apply(compact));
        assert!(store.get(&store_ref).is_some());
        assert!(namespaced(&store, "a", "media").is_some());
    }
}
