//! Reconcile scenarios against a scripted mock API server (tower-test): every request the
//! reconciler makes is checked (method, path, field manager, body) and answered.

use std::sync::Arc;

use http::{Method, Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};
use zeronas_operator::cache::{Caches, Compact};
use zeronas_operator::controller::{self, Context, FINALIZER};
use zeronas_operator::crd::NasVolume;
use zeronas_operator::metrics::Metrics;
use zeronas_operator::reconcile::Settings;

type MockHandle = Handle<Request<Body>, Response<Body>>;

fn volume(spec: Value, finalizers: &[&str], deleting: bool, status: Option<Value>) -> NasVolume {
    let mut object = json!({
        "apiVersion": "zeronas.io/v1alpha1",
        "kind": "NasVolume",
        "metadata": {
            "name": "media", "namespace": "team-a", "uid": "0b7c2f4e-1111-2222-3333-444455556666",
            "generation": 2, "resourceVersion": "10", "finalizers": finalizers,
        },
        "spec": spec,
    });
    if deleting {
        object["metadata"]["deletionTimestamp"] = json!("2026-11-26T00:00:00Z");
    }
    if let Some(status) = status {
        object["status"] = status;
    }
    serde_json::from_value(object).expect("NasVolume")
}

fn context(client: Client) -> Arc<Context> {
    Context::new(
        client,
        Settings {
            dataplane_image: "zeronas/dataplane:test".into(),
        },
        Arc::new(Metrics::new()),
        Caches::detached(),
        usize::from(controller::DEFAULT_CONCURRENCY),
    )
}

/// Turns a request body into the mock's answer: HTTP status and JSON.
type Responder = Box<dyn Fn(&Value) -> (u16, Value) + Send>;

/// One expected request: method, a path fragment, and a function from the request body to
/// the response (status, JSON).
struct Step {
    method: Method,
    path: &'static str,
    respond: Responder,
}

fn step(
    method: Method,
    path: &'static str,
    respond: impl Fn(&Value) -> (u16, Value) + Send + 'static,
) -> Step {
    Step {
        method,
        path,
        respond: Box::new(respond),
    }
}

/// Answers a server-side apply by echoing the object with `extra` merged into it.
fn echo(extra: Value) -> impl Fn(&Value) -> (u16, Value) {
    move |body| {
        let mut object = body.clone();
        merge(&mut object, &extra);
        (200, object)
    }
}

fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

/// Serves `steps` in order and returns every request body seen, keyed by path.
async fn serve(mut handle: MockHandle, steps: Vec<Step>) -> Vec<(String, Value)> {
    let mut seen = Vec::new();
    for expected in steps {
        let (request, send) = handle.next_request().await.expect("a request");
        let path = request.uri().to_string();
        assert_eq!(request.method(), expected.method, "method of {path}");
        assert!(
            path.contains(expected.path),
            "expected a request to {}, got {path}",
            expected.path
        );
        if request.method() == Method::PATCH && path.contains("fieldManager") {
            assert!(
                path.contains("fieldManager=zeronas-operator"),
                "one field manager: {path}"
            );
        }
        let bytes = request
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON body")
        };
        let (status, response) = (expected.respond)(&body);
        seen.push((path, body));
        let response = Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&response).expect("JSON")))
            .expect("response");
        send.send_response(response);
    }
    seen
}

/// Answers a status apply with a whole NasVolume carrying that status.
fn status_echo() -> impl Fn(&Value) -> (u16, Value) {
    |body| {
        let object = json!({
            "apiVersion": "zeronas.io/v1alpha1", "kind": "NasVolume",
            "metadata": { "name": "media", "namespace": "team-a" },
            "spec": { "capacity": "10Gi" },
            "status": body["status"].clone(),
        });
        (200, object)
    }
}

fn not_found() -> (u16, Value) {
    (
        404,
        json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found" }),
    )
}

/// The NasVolume's uid (owner references carry it).
const UID: &str = "0b7c2f4e-1111-2222-3333-444455556666";
/// The share PV's name: `zeronas-<uid>`.
const PV: &str = "persistentvolumes/zeronas-0b7c2f4e-1111-2222-3333-444455556666";

/// The controller owner reference of the NasVolume with uid `uid`.
fn owner_ref(uid: &str) -> Value {
    json!([{ "apiVersion": "zeronas.io/v1alpha1", "kind": "NasVolume", "name": "media", "uid": uid, "controller": true, "blockOwnerDeletion": true }])
}

/// An existing claim of `size`, in `phase`, controlled by the NasVolume, of class `standard`.
fn claim(name: &str, size: &str, phase: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": { "name": name, "namespace": "team-a", "resourceVersion": "7", "annotations": { "zeronas.io/owner-uid": UID } },
        "spec": { "storageClassName": "standard", "resources": { "requests": { "storage": size } } },
        "status": { "phase": phase, "capacity": { "storage": size } },
    })
}

/// A consumer claim as the operator leaves it: controlled by the NasVolume.
fn consumer_claim(size: &str, phase: &str) -> Value {
    let mut c = claim("media", size, phase);
    c["metadata"]["annotations"] = Value::Null;
    c["metadata"]["ownerReferences"] = owner_ref(UID);
    c
}

fn storage_class(expandable: bool) -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": { "name": "standard" }, "provisioner": "x",
        "allowVolumeExpansion": expandable,
    })
}

/// The ownership reads that precede every apply: the backing claim (answered by `data`),
/// then the consumer claim, Service, Deployment, Secret and NetworkPolicy (answered by
/// `others`, in that order).
fn ownership_reads(data: (u16, Value), others: [(u16, Value); 5]) -> Vec<Step> {
    let mut steps = vec![step(
        Method::GET,
        "persistentvolumeclaims/media-data",
        move |_| data.clone(),
    )];
    let paths = [
        "persistentvolumeclaims/media",
        "services/media",
        "deployments/media-dataplane",
        "secrets/media-http-tokens",
        "networkpolicies/media-dataplane",
    ];
    for (path, answer) in paths.into_iter().zip(others) {
        steps.push(step(Method::GET, path, move |_| answer.clone()));
    }
    steps
}

fn absent() -> [(u16, Value); 5] {
    [
        not_found(),
        not_found(),
        not_found(),
        not_found(),
        not_found(),
    ]
}

fn event() -> Step {
    step(
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/team-a/events",
        |body| (201, body.clone()),
    )
}

fn applies_in_order(seen: &[(String, Value)]) -> Vec<String> {
    seen.iter()
        .map(|(p, b)| {
            format!(
                "{} {}",
                b["kind"].as_str().unwrap_or("-"),
                p.split('?').next().unwrap_or("")
            )
        })
        .collect()
}

fn condition<'a>(status: &'a Value, kind: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or_else(|| panic!("no {kind} condition in {status}"))
}

#[tokio::test]
async fn first_reconcile_adds_the_finalizer() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let nv = volume(json!({ "capacity": "10Gi" }), &[], false, None);
    let server = tokio::spawn(serve(
        handle,
        vec![step(
            Method::PATCH,
            "/apis/zeronas.io/v1alpha1/namespaces/team-a/nasvolumes/media",
            |body| {
                (
                    200,
                    json!({ "apiVersion": "zeronas.io/v1alpha1", "kind": "NasVolume", "metadata": { "name": "media", "namespace": "team-a", "finalizers": [FINALIZER] }, "spec": { "capacity": "10Gi" }, "echo": body }),
                )
            },
        )],
    ));
    let action = controller::reconcile(Arc::new(nv), context(Client::new(service, "default")))
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    let seen = server.await.unwrap();
    assert!(
        seen[0].1.to_string().contains(FINALIZER),
        "finalizer patch: {}",
        seen[0].1
    );
}

#[tokio::test]
async fn create_applies_every_object_then_reports_provisioning() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let nv = volume(json!({ "capacity": "10Gi" }), &[FINALIZER], false, None);
    let mut steps = ownership_reads(not_found(), absent());
    steps.extend([
        step(
            Method::PATCH,
            "/api/v1/namespaces/team-a/persistentvolumeclaims/media-data",
            echo(json!({ "status": { "phase": "Pending" } })),
        ),
        step(Method::POST, "/api/v1/namespaces/team-a/secrets", |body| {
            (201, body.clone())
        }),
        step(
            Method::PATCH,
            "/api/v1/namespaces/team-a/services/media",
            echo(json!({ "spec": { "clusterIP": "10.96.7.7" } })),
        ),
        step(
            Method::PATCH,
            "/apis/networking.k8s.io/v1/namespaces/team-a/networkpolicies/media-dataplane",
            echo(json!({})),
        ),
        step(
            Method::PATCH,
            "/apis/apps/v1/namespaces/team-a/deployments/media-dataplane",
            echo(json!({ "status": {} })),
        ),
        step(Method::PATCH, PV, echo(json!({}))),
        step(
            Method::PATCH,
            "/api/v1/namespaces/team-a/persistentvolumeclaims/media",
            echo(json!({ "status": { "phase": "Pending" } })),
        ),
        step(
            Method::PATCH,
            "/apis/zeronas.io/v1alpha1/namespaces/team-a/nasvolumes/media/status",
            status_echo(),
        ),
        event(),
    ]);
    let server = tokio::spawn(serve(handle, steps));
    let action = controller::reconcile(Arc::new(nv), context(Client::new(service, "default")))
        .await
        .unwrap();
    assert_eq!(
        action,
        Action::requeue(std::time::Duration::from_secs(15)),
        "not ready yet: look again soon"
    );
    let all = server.await.unwrap();
    for (path, _) in all
        .iter()
        // The PV is cluster-scoped and named after the uid: applied with force (see controller).
        .filter(|(p, _)| {
            p.contains("fieldManager")
                && !p.contains("/status")
                && !p.contains("persistentvolumes/")
        })
    {
        assert!(
            !path.contains("force=true"),
            "a new object is applied without force: {path}"
        );
    }
    let seen: Vec<(String, Value)> = all.into_iter().filter(|(_, b)| !b.is_null()).collect();
    let order = applies_in_order(&seen);
    assert_eq!(
        &order[..7],
        [
            "PersistentVolumeClaim /api/v1/namespaces/team-a/persistentvolumeclaims/media-data",
            "Secret /api/v1/namespaces/team-a/secrets",
            "Service /api/v1/namespaces/team-a/services/media",
            "NetworkPolicy /apis/networking.k8s.io/v1/namespaces/team-a/networkpolicies/media-dataplane",
            "Deployment /apis/apps/v1/namespaces/team-a/deployments/media-dataplane",
            "PersistentVolume /api/v1/persistentvolumes/zeronas-0b7c2f4e-1111-2222-3333-444455556666",
            "PersistentVolumeClaim /api/v1/namespaces/team-a/persistentvolumeclaims/media",
        ]
    );
    let tokens = &seen[1].1["stringData"];
    let (token, read_token) = (
        tokens["token"].as_str().unwrap(),
        tokens["read-token"].as_str().unwrap(),
    );
    assert_eq!((token.len(), read_token.len()), (64, 64));
    assert_ne!(token, read_token);
    assert_eq!(
        seen[5].1["spec"]["nfs"]["server"], "10.96.7.7",
        "the PV points at the Service ClusterIP"
    );
    assert_eq!(
        seen[5].1["metadata"]["labels"]["zeronas.io/namespace"],
        "team-a"
    );
    assert_eq!(
        (
            &seen[0].1["metadata"]["ownerReferences"],
            &seen[0].1["metadata"]["annotations"]["zeronas.io/owner-uid"]
        ),
        (&Value::Null, &json!(UID)),
        "the backing claim names its NasVolume by uid, without an owner reference"
    );
    let status = &seen[7].1["status"];
    assert_eq!(status["phase"], "Provisioning");
    assert_eq!(status["observedGeneration"], 2);
    assert_eq!(status["endpoints"]["nfs"], "10.96.7.7:/");
    assert_eq!(status["httpTokenSecret"], "media-http-tokens");
    assert_eq!(
        seen[8].1["reason"], "Provisioning",
        "an event for the phase change"
    );
}

#[tokio::test]
async fn dataplane_available_makes_it_ready_and_growth_resizes() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let previous = json!({ "phase": "Provisioning", "conditions": [] });
    let nv = volume(
        json!({ "capacity": "20Gi" }),
        &[FINALIZER],
        false,
        Some(previous),
    );
    let secret = json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "media-http-tokens", "ownerReferences": owner_ref(UID) } });
    let mut steps = ownership_reads(
        (200, claim("media-data", "10Gi", "Bound")),
        [
            (200, consumer_claim("10Gi", "Bound")),
            not_found(),
            not_found(),
            (200, secret),
            not_found(),
        ],
    );
    steps.extend([
        step(
            Method::GET,
            "/apis/storage.k8s.io/v1/storageclasses/standard",
            |_| (200, storage_class(true)),
        ),
        step(
            Method::PATCH,
            "persistentvolumeclaims/media-data",
            echo(json!({ "status": { "phase": "Bound", "capacity": { "storage": "10Gi" } } })),
        ),
        step(
            Method::PATCH,
            "services/media",
            echo(json!({ "spec": { "clusterIP": "10.96.7.7" } })),
        ),
        step(
            Method::PATCH,
            "networkpolicies/media-dataplane",
            echo(json!({})),
        ),
        step(
            Method::PATCH,
            "deployments/media-dataplane",
            echo(json!({
                "metadata": { "generation": 3 },
                "status": { "observedGeneration": 3, "updatedReplicas": 1, "availableReplicas": 1 }
            })),
        ),
        step(Method::PATCH, PV, echo(json!({}))),
        step(
            Method::PATCH,
            "persistentvolumeclaims/media",
            echo(json!({ "status": { "phase": "Bound" } })),
        ),
        step(Method::PATCH, "nasvolumes/media/status", status_echo()),
        event(),
    ]);
    let server = tokio::spawn(serve(handle, steps));
    let action = controller::reconcile(Arc::new(nv), context(Client::new(service, "default")))
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(300)));
    let seen = server.await.unwrap();
    let data_patch = seen
        .iter()
        .find(|(p, b)| p.contains("media-data") && !b.is_null())
        .unwrap();
    assert!(
        data_patch.0.contains("force=true"),
        "our own object is applied with force: {}",
        data_patch.0
    );
    let seen: Vec<(String, Value)> = seen.into_iter().filter(|(_, b)| !b.is_null()).collect();
    assert_eq!(
        seen[0].1["spec"]["resources"]["requests"]["storage"], "20Gi",
        "growth is a resize request"
    );
    assert_eq!(
        seen[4].1["spec"]["capacity"]["storage"], "20Gi",
        "the PV carries the new size"
    );
    assert_eq!(
        seen[5].1["spec"]["resources"]["requests"]["storage"], "10Gi",
        "the consumer claim cannot be resized"
    );
    let status = &seen[6].1["status"];
    assert_eq!(status["phase"], "Ready");
    let storage = condition(status, "StorageBound");
    assert_eq!(
        (storage["status"].as_str(), storage["reason"].as_str()),
        (Some("True"), Some("Resizing"))
    );
    assert!(
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "True")
    );
}

#[tokio::test]
async fn growth_without_an_expandable_class_keeps_the_size_and_says_so() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let nv = volume(json!({ "capacity": "20Gi" }), &[FINALIZER], false, None);
    let mut steps = ownership_reads((200, claim("media-data", "10Gi", "Bound")), absent());
    steps.extend([
        step(Method::GET, "storageclasses/standard", |_| {
            (200, storage_class(false))
        }),
        step(
            Method::PATCH,
            "persistentvolumeclaims/media-data",
            echo(json!({ "status": { "phase": "Bound", "capacity": { "storage": "10Gi" } } })),
        ),
        step(Method::POST, "secrets", |body| (201, body.clone())),
        step(
            Method::PATCH,
            "services/media",
            echo(json!({ "spec": { "clusterIP": "10.96.7.7" } })),
        ),
        step(
            Method::PATCH,
            "networkpolicies/media-dataplane",
            echo(json!({})),
        ),
        step(
            Method::PATCH,
            "deployments/media-dataplane",
            echo(json!({})),
        ),
        step(Method::PATCH, PV, echo(json!({}))),
        step(
            Method::PATCH,
            "persistentvolumeclaims/media",
            echo(json!({})),
        ),
        step(Method::PATCH, "nasvolumes/media/status", status_echo()),
        event(),
    ]);
    let server = tokio::spawn(serve(handle, steps));
    controller::reconcile(Arc::new(nv), context(Client::new(service, "default")))
        .await
        .unwrap();
    let seen: Vec<(String, Value)> = server
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, b)| !b.is_null())
        .collect();
    assert_eq!(
        seen[0].1["spec"]["resources"]["requests"]["storage"], "10Gi",
        "the claim keeps its size"
    );
    let args = seen[4].1["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        args.contains(&format!("\"{}\"", 10u64 << 30)),
        "the quota is the claim's 10Gi, not the asked 20Gi: {args}"
    );
    assert_eq!(
        seen[5].1["spec"]["capacity"]["storage"], "10Gi",
        "the PV promises what the claim has"
    );
    let status = &seen[7].1["status"];
    let ready = condition(status, "Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("ExpansionNotSupported"))
    );
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("allowVolumeExpansion")
    );
}

#[tokio::test]
async fn a_foreign_object_is_a_name_conflict_and_nothing_is_written() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let nv = volume(json!({ "capacity": "10Gi" }), &[FINALIZER], false, None);
    let foreign = json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "media", "namespace": "team-a" } });
    let mut steps = ownership_reads(
        not_found(),
        [
            not_found(),
            (200, foreign),
            not_found(),
            not_found(),
            not_found(),
        ],
    );
    steps.extend([
        event(),
        step(Method::PATCH, "nasvolumes/media/status", status_echo()),
        event(),
    ]);
    let server = tokio::spawn(serve(handle, steps));
    let action = controller::reconcile(Arc::new(nv), context(Client::new(service, "default")))
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(60)));
    let seen = server.await.unwrap();
    assert_eq!(seen[6].1["reason"], "NameConflict");
    assert_eq!(seen[6].1["type"], "Warning");
    let status = &seen[7].1["status"];
    let ready = condition(status, "Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("NameConflict"))
    );
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("Service team-a/media already exists"),
        "{ready}"
    );
    assert_eq!(status["observedGeneration"], 2);
    assert!(
        seen.iter()
            .all(|(p, _)| !p.contains("fieldManager") || p.contains("/status")),
        "nothing but the status was written"
    );
}

#[tokio::test]
async fn a_failed_reconcile_writes_its_reason_to_status_and_metrics() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let nv = volume(json!({ "capacity": "10Gi" }), &[FINALIZER], false, None);
    let mut steps = ownership_reads(not_found(), absent());
    steps.extend([
        step(Method::PATCH, "persistentvolumeclaims/media-data", |_| {
            (
                403,
                json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403, "message": "no" }),
            )
        }),
        step(Method::PATCH, "nasvolumes/media/status", status_echo()),
        event(),
    ]);
    let server = tokio::spawn(serve(handle, steps));
    let ctx = context(Client::new(service, "default"));
    let err = controller::reconcile(Arc::new(nv), Arc::clone(&ctx))
        .await
        .expect_err("forbidden");
    assert_eq!(err.reason(), "forbidden");
    assert_eq!(ctx.metrics.errors("forbidden"), 1);
    assert_eq!(ctx.metrics.errors("finalizer"), 0);
    let seen = server.await.unwrap();
    let status = &seen[7].1["status"];
    let ready = condition(status, "Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("Forbidden"))
    );
    assert_eq!(ready["observedGeneration"], 2);
    assert_eq!(status["observedGeneration"], 2);
}

#[tokio::test]
async fn missing_storage_class_is_degraded_without_creating_anything() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let nv = volume(
        json!({ "capacity": "10Gi", "storageClassName": "gold" }),
        &[FINALIZER],
        false,
        None,
    );
    let server = tokio::spawn(serve(
        handle,
        vec![
            step(
                Method::GET,
                "/apis/storage.k8s.io/v1/storageclasses/gold",
                |_| {
                    (
                        404,
                        json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found" }),
                    )
                },
            ),
            step(Method::PATCH, "nasvolumes/media/status", status_echo()),
            event(),
        ],
    ));
    let ctx = context(Client::new(service, "default"));
    let action = controller::reconcile(Arc::new(nv), Arc::clone(&ctx))
        .await
        .unwrap();
    assert_eq!(
        action,
        Action::requeue(std::time::Duration::from_secs(60)),
        "no hot loop"
    );
    let seen = server.await.unwrap();
    let status = &seen[1].1["status"];
    assert_eq!(status["phase"], "Degraded");
    assert!(status.to_string().contains("StorageClassNotFound"));
    assert_eq!(seen[2].1["type"], "Warning");
}

fn pods(items: Value) -> impl Fn(&Value) -> (u16, Value) {
    move |_| {
        (
            200,
            json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items.clone() }),
        )
    }
}

fn pv_deleted() -> impl Fn(&Value) -> (u16, Value) {
    |_| {
        (
            200,
            json!({ "apiVersion": "v1", "kind": "PersistentVolume", "metadata": { "name": "zeronas-0b7c2f4e-1111-2222-3333-444455556666" } }),
        )
    }
}

fn finalizer_removed() -> impl Fn(&Value) -> (u16, Value) {
    |_| {
        (
            200,
            json!({ "apiVersion": "zeronas.io/v1alpha1", "kind": "NasVolume", "metadata": { "name": "media", "namespace": "team-a" }, "spec": { "capacity": "10Gi" } }),
        )
    }
}

#[tokio::test]
async fn delete_with_retain_releases_the_claim_then_removes_the_pv_and_the_finalizer() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let nv = volume(
        json!({ "capacity": "10Gi" }),
        &[FINALIZER],
        true,
        Some(json!({ "phase": "Ready" })),
    );
    let server = tokio::spawn(serve(
        handle,
        vec![
            step(
                Method::GET,
                "/api/v1/namespaces/team-a/pods",
                pods(json!([])),
            ),
            step(Method::PATCH, "nasvolumes/media/status", status_echo()),
            event(),
            step(Method::GET, "persistentvolumeclaims/media-data", |_| {
                (200, claim("media-data", "10Gi", "Bound"))
            }),
            step(Method::PATCH, "persistentvolumeclaims/media-data", |_| {
                (200, claim("media-data", "10Gi", "Bound"))
            }),
            event(),
            step(Method::DELETE, PV, pv_deleted()),
            event(),
            step(
                Method::PATCH,
                "/apis/zeronas.io/v1alpha1/namespaces/team-a/nasvolumes/media",
                finalizer_removed(),
            ),
        ],
    ));
    let action = controller::reconcile(
        Arc::new(nv.clone()),
        context(Client::new(service, "default")),
    )
    .await
    .unwrap();
    assert_eq!(action, Action::await_change());
    let seen = server.await.unwrap();
    assert_eq!(seen[1].1["status"]["phase"], "Deleting");
    let release = &seen[4].1["metadata"];
    assert_eq!(
        release["ownerReferences"],
        json!([]),
        "owner reference removed"
    );
    assert_eq!(release["labels"]["zeronas.io/retained"], "true");
    assert_eq!(
        release["annotations"]["zeronas.io/owner-uid"],
        Value::Null,
        "the owner's uid is cleared, so a new NasVolume of the name adopts it"
    );
    assert_eq!(release["resourceVersion"], "7");
    assert_eq!(seen[5].1["reason"], "Retained");
    assert!(
        seen[8].1.to_string().contains("finalizers"),
        "finalizer removal patch: {}",
        seen[8].1
    );
    assert_eq!(nv.finalizers(), [FINALIZER.to_owned()]);
}

#[tokio::test]
async fn delete_policy_deletes_the_backing_claim() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let nv = volume(
        json!({ "capacity": "10Gi", "deletionPolicy": "Delete" }),
        &[FINALIZER],
        true,
        Some(json!({ "phase": "Ready" })),
    );
    let server = tokio::spawn(serve(
        handle,
        vec![
            step(
                Method::GET,
                "/api/v1/namespaces/team-a/pods",
                pods(json!([])),
            ),
            step(Method::PATCH, "nasvolumes/media/status", status_echo()),
            event(),
            step(Method::GET, "persistentvolumeclaims/media-data", |_| {
                (200, claim("media-data", "10Gi", "Bound"))
            }),
            step(Method::DELETE, "persistentvolumeclaims/media-data", |_| {
                (200, claim("media-data", "10Gi", "Bound"))
            }),
            step(Method::DELETE, PV, pv_deleted()),
            event(),
            step(Method::PATCH, "nasvolumes/media", finalizer_removed()),
        ],
    ));
    let action = controller::reconcile(Arc::new(nv), context(Client::new(service, "default")))
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    server.await.unwrap();
}

#[tokio::test]
async fn delete_waits_while_a_pod_uses_the_claim() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let nv = volume(
        json!({ "capacity": "10Gi" }),
        &[FINALIZER],
        true,
        Some(json!({ "phase": "Ready" })),
    );
    let user = json!([{
        "metadata": { "name": "web-0", "namespace": "team-a" },
        "spec": { "containers": [], "volumes": [{ "name": "d", "persistentVolumeClaim": { "claimName": "media" } }] },
        "status": { "phase": "Running" },
    }]);
    let server = tokio::spawn(serve(
        handle,
        vec![
            step(Method::GET, "/api/v1/namespaces/team-a/pods", pods(user)),
            step(Method::PATCH, "nasvolumes/media/status", status_echo()),
            event(),
            event(),
        ],
    ));
    let action = controller::reconcile(Arc::new(nv), context(Client::new(service, "default")))
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(controller::IN_USE_RECHECK));
    let seen = server.await.unwrap();
    let status = &seen[1].1["status"];
    assert_eq!(status["phase"], "Deleting");
    let deleting = condition(status, "Deleting");
    assert_eq!(
        (deleting["status"].as_str(), deleting["reason"].as_str()),
        (Some("True"), Some("InUse"))
    );
    assert!(deleting["message"].as_str().unwrap().contains("web-0"));
    assert_eq!(seen[3].1["reason"], "InUse");
    assert_eq!(seen[3].1["type"], "Warning");
}

#[tokio::test]
async fn failures_back_off_exponentially() {
    let (service, _handle) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(service, "default"));
    let nv = Arc::new(volume(
        json!({ "capacity": "10Gi" }),
        &[FINALIZER],
        false,
        None,
    ));
    let err = controller::Error::Build(zeronas_operator::reconcile::BuildError::MissingMetadata(
        "uid",
    ));
    let delays: Vec<Action> = (0..11)
        .map(|_| controller::error_policy(Arc::clone(&nv), &err, Arc::clone(&ctx)))
        .collect();
    // `Action` has no getter: read the delay from its Debug form (`Some(1.23s)`, `Some(812ms)`).
    let secs = |a: &Action| -> f64 {
        let text = format!("{a:?}");
        let inner = text
            .split("Some(")
            .nth(1)
            .and_then(|t| t.split(')').next())
            .unwrap_or_else(|| panic!("no requeue in {text}"));
        match inner.strip_suffix("ms") {
            Some(ms) => ms.parse::<f64>().expect("ms") / 1000.0,
            None => inner.trim_end_matches('s').parse().expect("s"),
        }
    };
    // Doubling from 1 s, capped at 5 min, each delay scaled by a jitter in [0.75, 1.25).
    for (attempt, base) in [(0, 1.0), (1, 2.0), (4, 16.0), (10, 300.0)] {
        let delay = secs(&delays[attempt]);
        assert!(
            delay >= 0.75 * base && delay < 1.25 * base,
            "attempt {attempt}: {delay} s, expected about {base} s"
        );
    }
}

/// A context over populated `caches`, one reconcile at a time.
fn context_over(client: Client, metrics: Arc<Metrics>, caches: Caches) -> Arc<Context> {
    Context::new(
        client,
        Settings {
            dataplane_image: "zeronas/dataplane:test".into(),
        },
        metrics,
        caches,
        1,
    )
}

/// A reflector store holding `objects` (as the operator's watches would).
fn store_of<K>(objects: impl IntoIterator<Item = Value>) -> Store<Compact<K>>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + 'static,
{
    let (store, mut writer) = reflector::store::<Compact<K>>();
    for object in objects {
        let object: K = serde_json::from_value(object).expect("object for the store");
        let compact = Compact::new(object).expect("JSON");
        writer.apply_watcher_event(&watcher::Event::Apply(compact));
    }
    store
}

/// The objects as the apiserver holds them after the first reconcile of a ready share.
fn ready_share_steps() -> Vec<Step> {
    let mut steps = ownership_reads(not_found(), absent());
    steps.extend([
        step(
            Method::PATCH,
            "persistentvolumeclaims/media-data",
            echo(json!({ "metadata": { "resourceVersion": "11" }, "status": { "phase": "Bound", "capacity": { "storage": "10Gi" } } })),
        ),
        step(Method::POST, "/api/v1/namespaces/team-a/secrets", |body| {
            (201, body.clone())
        }),
        step(
            Method::PATCH,
            "services/media",
            echo(json!({ "spec": { "clusterIP": "10.96.7.7", "sessionAffinity": "None" } })),
        ),
        step(
            Method::PATCH,
            "networkpolicies/media-dataplane",
            echo(json!({})),
        ),
        step(
            Method::PATCH,
            "deployments/media-dataplane",
            echo(json!({
                "metadata": { "generation": 1 },
                "spec": { "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600 },
                "status": { "observedGeneration": 1, "updatedReplicas": 1, "availableReplicas": 1 }
            })),
        ),
        step(
            Method::PATCH,
            PV,
            echo(json!({ "spec": { "persistentVolumeReclaimPolicy": "Retain" }, "status": { "phase": "Bound" } })),
        ),
        step(
            Method::PATCH,
            "persistentvolumeclaims/media",
            echo(json!({ "spec": { "volumeMode": "Filesystem" }, "status": { "phase": "Bound" } })),
        ),
        step(Method::PATCH, "nasvolumes/media/status", status_echo()),
        event(),
    ]);
    steps
}

/// The object the apiserver returned for a request seen by the mock: the body with the
/// same additions `ready_share_steps` answered with.
fn live_objects(seen: &[(String, Value)]) -> Vec<(String, Value)> {
    let replies = ready_share_steps();
    seen.iter()
        .zip(replies)
        .filter(|((_, body), _)| !body.is_null())
        .map(|((path, body), reply)| (path.clone(), (reply.respond)(body).1))
        .collect()
}

#[tokio::test]
async fn an_unchanged_volume_costs_no_request_drift_one_apply_and_a_change_rechecks_the_secret() {
    // First pass, nothing cached: every object is read, applied, and the status written.
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let nv = volume(json!({ "capacity": "10Gi" }), &[FINALIZER], false, None);
    let server = tokio::spawn(serve(handle, ready_share_steps()));
    controller::reconcile(Arc::new(nv), context(Client::new(service, "default")))
        .await
        .unwrap();
    let live = live_objects(&server.await.unwrap());
    let find = |fragment: &str| -> Vec<Value> {
        live.iter()
            .filter(|(p, b)| p.contains(fragment) && b.get("kind").is_some())
            .map(|(_, b)| b.clone())
            .collect()
    };
    let status = find("nasvolumes/media/status")[0]["status"].clone();
    assert_eq!(status["phase"], "Ready");
    let mut claims = find("persistentvolumeclaims/media-data");
    claims.extend(find("persistentvolumeclaims/media?"));
    assert_eq!(claims.len(), 2);
    let caches = |deployments: Vec<Value>| Caches {
        volumes: reflector::store().0,
        claims: store_of(claims.clone()),
        services: store_of(find("services/media")),
        deployments: store_of(deployments),
        policies: store_of(find("networkpolicies/media-dataplane")),
        shares: store_of(find(PV)),
        classes: reflector::store().0,
    };
    let settled = volume(
        json!({ "capacity": "10Gi" }),
        &[FINALIZER],
        false,
        Some(status),
    );

    // Second pass over the stores: nothing to send.
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let metrics = Arc::new(Metrics::new());
    let ctx = context_over(
        Client::new(service, "default"),
        Arc::clone(&metrics),
        caches(find("deployments/media-dataplane")),
    );
    let reconciling = controller::reconcile(Arc::new(settled.clone()), ctx);
    let pass = tokio::select! {
        pass = reconciling => pass,
        request = handle.next_request() => {
            let (request, _) = request.expect("a request");
            panic!("a reconcile over unchanged objects sent {} {}", request.method(), request.uri());
        }
    };
    assert_eq!(
        pass.unwrap(),
        Action::requeue(std::time::Duration::from_secs(300))
    );
    let extra =
        tokio::time::timeout(std::time::Duration::from_millis(50), handle.next_request()).await;
    assert!(
        !matches!(extra, Ok(Some(_))),
        "no request at all (the client is gone or silent)"
    );
    for kind in [
        "PersistentVolumeClaim",
        "Service",
        "NetworkPolicy",
        "Deployment",
        "PersistentVolume",
        "NasVolumeStatus",
    ] {
        let skips = metrics.write_skips(kind);
        let want = if kind == "PersistentVolumeClaim" {
            2
        } else {
            1
        };
        assert_eq!(skips, want, "{kind} apply skipped");
    }

    // Someone edits the Deployment by hand: one apply takes it back, nothing else is sent.
    let mut drifted = find("deployments/media-dataplane");
    drifted[0]["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil/image:1");
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context_over(
        Client::new(service, "default"),
        Arc::new(Metrics::new()),
        caches(drifted),
    );
    let server = tokio::spawn(serve(
        handle,
        vec![step(
            Method::PATCH,
            "deployments/media-dataplane",
            echo(json!({
                "metadata": { "generation": 1 },
                "status": { "observedGeneration": 1, "updatedReplicas": 1, "availableReplicas": 1 }
            })),
        )],
    ));
    controller::reconcile(Arc::new(settled.clone()), ctx)
        .await
        .unwrap();
    let seen = server.await.unwrap();
    assert!(seen[0].0.contains("force=true"), "{}", seen[0].0);
    assert_eq!(
        seen[0].1["spec"]["template"]["spec"]["containers"][0]["image"],
        "zeronas/dataplane:test"
    );

    // The dataplane stops (its token Secret deleted by hand meanwhile): the status changes,
    // so the Secret, trusted while nothing changed, is read again and made anew.
    let mut stopped = find("deployments/media-dataplane");
    stopped[0]["status"]["availableReplicas"] = json!(0);
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context_over(
        Client::new(service, "default"),
        Arc::new(Metrics::new()),
        caches(stopped),
    );
    let server = tokio::spawn(serve(
        handle,
        vec![
            step(Method::GET, "secrets/media-http-tokens", |_| not_found()),
            step(Method::POST, "/api/v1/namespaces/team-a/secrets", |body| {
                (201, body.clone())
            }),
            step(Method::PATCH, "nasvolumes/media/status", status_echo()),
            event(),
        ],
    ));
    controller::reconcile(Arc::new(settled), ctx).await.unwrap();
    let seen = server.await.unwrap();
    assert_eq!(seen[1].1["metadata"]["name"], "media-http-tokens");
    let available = condition(&seen[2].1["status"], "DataplaneAvailable");
    assert_eq!(available["status"], "False");
}
