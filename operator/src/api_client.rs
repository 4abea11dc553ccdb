//! The tower layer in front of every apiserver request: a client-side rate limit with burst
//! (client-go's QPS/burst: a token bucket) and a count of requests by verb and status code.
//!
//! The rate limit is what keeps a reconcile storm (an operator restart with thousands of
//! NasVolumes, a thousand created at once) from starving the apiserver for everyone else:
//! requests wait here instead of queueing in the apiserver until they time out.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Method, Request, Response, Uri};
use kube::client::Body;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::metrics::Metrics;

/// A token bucket: `qps` tokens a second, at most `burst` saved up. A request that finds
/// the bucket empty reserves the next token and waits for it, so waiters are served in
/// order and the long-run rate never exceeds `qps`.
#[derive(Debug)]
pub struct RateLimiter {
    qps: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Tokens available now; negative when waiters have reserved future tokens.
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    /// A limiter of `qps` requests a second with bursts of `burst`; `qps` 0 means no limit.
    pub fn new(qps: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            qps,
            burst,
            state: Mutex::new(Bucket {
                tokens: burst,
                refilled: Instant::now(),
            }),
        }
    }

    /// Takes a token; returns how long the caller must wait before using it.
    pub fn reserve(&self) -> Duration {
        if self.qps <= 0.0 {
            return Duration::ZERO;
        }
        let mut bucket = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.qps).min(self.burst);
        bucket.refilled = now;
        bucket.tokens -= 1.0;
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.tokens / self.qps)
        }
    }
}

/// The verb of a request as the apiserver's audit log names it.
pub fn verb(method: &Method, uri: &Uri) -> &'static str {
    match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        Method::GET => {
            let watching = uri.query().is_some_and(|q| {
                q.split('&')
                    .any(|pair| pair == "watch=true" || pair == "watch=1")
            });
            if watching {
                "watch"
            } else if names_one_object(uri.path()) {
                "get"
            } else {
                "list"
            }
        }
        _ => "other",
    }
}

/// Whether a resource path ends in an object's name (`.../pods/web`) rather than in a
/// resource (`.../pods`, a list).
fn names_one_object(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => return true,
    };
    let rest = rest.unwrap_or_default();
    // `namespaces/<ns>/<resource>...`; `namespaces/<ns>` alone is a Namespace object.
    let rest = match rest {
        ["namespaces", _, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    rest.len() >= 2
}

/// The layer: rate limit, then count.
#[derive(Clone, Debug)]
pub struct ApiLayer {
    limiter: Arc<RateLimiter>,
    metrics: Arc<Metrics>,
}

impl ApiLayer {
    /// Limits to `limiter` and counts into `metrics`.
    pub fn new(limiter: RateLimiter, metrics: Arc<Metrics>) -> Self {
        Self {
            limiter: Arc::new(limiter),
            metrics,
        }
    }
}

impl<S> Layer<S> for ApiLayer {
    type Service = ApiService<S>;

    fn layer(&self, inner: S) -> ApiService<S> {
        ApiService {
            inner,
            limiter: Arc::clone(&self.limiter),
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// The service [`ApiLayer`] wraps around the client's stack.
#[derive(Debug)]
pub struct ApiService<S> {
    inner: S,
    limiter: Arc<RateLimiter>,
    metrics: Arc<Metrics>,
}

impl<S, B> Service<Request<Body>> for ApiService<S>
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<B>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let verb = verb(request.method(), request.uri());
        let wait = self.limiter.reserve();
        // The inner future sends nothing until it is first polled, after the wait.
        let response = self.inner.call(request);
        let metrics = Arc::clone(&self.metrics);
        Box::pin(async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
                metrics.observe_throttle(wait.as_secs_f64());
            }
            let result = response.await;
            metrics.observe_request(verb, result.as_ref().ok().map(|r| r.status().as_u16()));
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_follow_the_audit_log() {
        let cases = [
            ("GET", "/api/v1/namespaces/a/pods/web", "get"),
            ("GET", "/api/v1/namespaces/a/pods", "list"),
            ("GET", "/api/v1/pods?watch=true&resourceVersion=1", "watch"),
            ("GET", "/api/v1/namespaces/a", "get"),
            ("GET", "/api/v1/namespaces", "list"),
            ("GET", "/api/v1/persistentvolumes/zeronas-1", "get"),
            ("GET", "/apis/apps/v1/namespaces/a/deployments", "list"),
            ("GET", "/apis/apps/v1/namespaces/a/deployments/d", "get"),
            ("GET", "/apis/storage.k8s.io/v1/storageclasses/fast", "get"),
            (
                "GET",
                "/apis/storage.k8s.io/v1/storageclasses?limit=500",
                "list",
            ),
            ("GET", "/version", "get"),
            (
                "PATCH",
                "/apis/zeronas.io/v1alpha1/namespaces/a/nasvolumes/m/status",
                "patch",
            ),
            ("POST", "/api/v1/namespaces/a/secrets", "create"),
            (
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/a/leases/l",
                "update",
            ),
            ("DELETE", "/api/v1/persistentvolumes/p", "delete"),
            ("HEAD", "/api/v1/pods", "other"),
        ];
        for (method, uri, want) in cases {
            let method: Method = method.parse().unwrap();
            let uri: Uri = uri.parse().unwrap();
            assert_eq!(verb(&method, &uri), want, "{method} {uri}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_allows_a_burst_then_the_rate() {
        let limiter = RateLimiter::new(10.0, 5);
        for _ in 0..5 {
            assert_eq!(limiter.reserve(), Duration::ZERO);
        }
        // Empty: the next waiters are spaced 100 ms apart, in order.
        let waits: Vec<Duration> = (0..3).map(|_| limiter.reserve()).collect();
        assert_eq!(
            waits,
            [100, 200, 300].map(Duration::from_millis).to_vec(),
            "{waits:?}"
        );
        // A second later the reservations are paid and 7 tokens accrued: a burst of 5 again.
        tokio::time::advance(Duration::from_secs(1)).await;
        let free = (0..10).filter(|_| limiter.reserve().is_zero()).count();
        assert_eq!(free, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_qps_is_unlimited() {
        let limiter = RateLimiter::new(0.0, 1);
        assert!((0..1000).all(|_| limiter.reserve().is_zero()));
    }

    #[tokio::test]
    async fn requests_are_counted_by_verb_and_code() {
        let metrics = Arc::new(Metrics::new());
        let layer = ApiLayer::new(RateLimiter::new(0.0, 1), Arc::clone(&metrics));
        let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let mut service = layer.layer(mock);
        let serve = tokio::spawn(async move {
            let (_, send) = handle.next_request().await.expect("a request");
            send.send_response(Response::builder().status(404).body(Body::empty()).unwrap());
        });
        futures::future::poll_fn(|cx| service.poll_ready(cx))
            .await
            .unwrap();
        let request = Request::get("/api/v1/namespaces/a/secrets/s")
            .body(Body::empty())
            .unwrap();
        let response = service.call(request).await.unwrap();
        assert_eq!(response.status(), 404);
        serve.await.unwrap();
        let text = metrics.render([]);
        assert!(
            text.contains("zeronas_operator_api_requests_total{verb=\"get\",code=\"404\"} 1"),
            "{text}"
        );
    }
}
