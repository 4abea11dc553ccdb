//! The leader elector against a mock API server (tower-test): what it writes on release,
//! when a standby takes a lease whose `renewTime` lies far from the local clock, and when a
//! leader whose renewals fail gives up. Timings are shortened to milliseconds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, Request, Response};
use http_body_util::BodyExt;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};
use zeronas_operator::leader::{Elector, LeaseConfig, Lost, Timings};

type MockHandle = Handle<Request<Body>, Response<Body>>;

const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/zeronas-operator";

fn timings() -> Timings {
    Timings {
        lease_duration: Duration::from_millis(600),
        renew_deadline: Duration::from_millis(300),
        retry_period: Duration::from_millis(50),
    }
}

fn elector(client: Client) -> Elector {
    Elector::new(
        client,
        LeaseConfig {
            namespace: "ops".into(),
            name: "zeronas-operator".into(),
            identity: "me".into(),
            timings: timings(),
        },
    )
}

fn lease(holder: &str, version: &str, renewed: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": { "name": "zeronas-operator", "namespace": "ops", "resourceVersion": version },
        "spec": {
            "holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed,
            "acquireTime": renewed, "leaseTransitions": 3,
        },
    })
}

/// Every request seen: method and JSON body.
type Seen = Arc<Mutex<Vec<(Method, Value)>>>;

/// Answers every request with `respond(method, body)` until the client goes away.
fn serve(
    mut handle: MockHandle,
    respond: impl Fn(&Method, &Value) -> (u16, Value) + Send + 'static,
) -> Seen {
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            assert!(
                request.uri().path() == PATH
                    || request.uri().path() == PATH.trim_end_matches("/zeronas-operator"),
                "unexpected path {}",
                request.uri()
            );
            let method = request.method().clone();
            let bytes = request
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let (status, answer) = respond(&method, &body);
            log.lock().unwrap().push((method, body));
            send.send_response(
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        }
    });
    seen
}

fn server_error() -> (u16, Value) {
    (
        500,
        json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "down", "reason": "InternalError", "code": 500 }),
    )
}

#[tokio::test]
async fn release_clears_the_holder_under_the_version_it_read() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let seen = serve(handle, |method, body| match *method {
        Method::GET => (200, lease("me", "7", "2026-01-01T00:00:00.000000Z")),
        _ => (200, body.clone()),
    });
    let released = elector(Client::new(service, "default"))
        .release()
        .await
        .unwrap();
    assert!(released);
    let seen = seen.lock().unwrap();
    let (method, put) = &seen[1];
    assert_eq!(*method, Method::PUT);
    assert_eq!(put["metadata"]["resourceVersion"], "7");
    assert!(put["spec"].get("holderIdentity").is_none(), "{put}");
    assert_eq!(put["spec"]["leaseDurationSeconds"], 1);
    assert_eq!(put["spec"]["leaseTransitions"], 3);
}

#[tokio::test]
async fn release_leaves_another_holders_lease_alone() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let seen = serve(handle, |_, _| {
        (200, lease("other", "7", "2026-01-01T00:00:00.000000Z"))
    });
    let released = elector(Client::new(service, "default"))
        .release()
        .await
        .unwrap();
    assert!(!released);
    assert_eq!(seen.lock().unwrap().len(), 1, "only the GET");
}

#[tokio::test]
async fn a_standby_waits_a_lease_from_its_own_observation_whatever_renew_time_says() {
    // renewTime in 2001 or 2999: a wall-clock comparison would take the first at once and
    // the second never.
    for renewed in ["2001-01-01T00:00:00.000000Z", "2999-01-01T00:00:00.000000Z"] {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let seen = serve(handle, move |method, body| match *method {
            Method::GET => {
                let mut l = lease("other", "3", renewed);
                // The holder's duration (1 s) counts, not this replica's (0.6 s).
                l["spec"]["leaseDurationSeconds"] = json!(1);
                (200, l)
            }
            _ => (200, body.clone()),
        });
        let mut standby = elector(Client::new(service, "default"));
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), standby.acquire())
            .await
            .expect("acquired within 5 s");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(1),
            "took over after {waited:?}, before the holder's 1 s lease ran out unchanged"
        );
        let seen = seen.lock().unwrap();
        let (method, put) = seen.last().unwrap();
        assert_eq!(*method, Method::PUT);
        assert_eq!(put["spec"]["holderIdentity"], "me");
        assert_eq!(put["spec"]["leaseTransitions"], 4);
        assert_eq!(put["metadata"]["resourceVersion"], "3");
    }
}

#[tokio::test]
async fn a_leader_whose_renewals_fail_gives_up_at_the_renew_deadline() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let _seen = serve(handle, |_, _| server_error());
    let mut leader = elector(Client::new(service, "default"));
    let started = Instant::now();
    let lost = tokio::time::timeout(Duration::from_secs(5), leader.hold())
        .await
        .expect("gave up within 5 s");
    let took = started.elapsed();
    assert_eq!(lost, Lost::DeadlinePassed(timings().renew_deadline));
    assert!(
        took >= timings().renew_deadline && took < timings().lease_duration,
        "gave up after {took:?}: not between the renew deadline and the lease duration"
    );
}

#[tokio::test]
async fn a_leader_that_finds_another_holder_stops_at_once() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let _seen = serve(handle, |_, _| {
        (200, lease("other", "9", "2026-01-01T00:00:00.000000Z"))
    });
    let mut leader = elector(Client::new(service, "default"));
    let lost = tokio::time::timeout(Duration::from_secs(5), leader.hold())
        .await
        .expect("stopped within 5 s");
    assert_eq!(lost, Lost::TakenBy("other".into()));
}
