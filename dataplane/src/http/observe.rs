//! Times one HTTP exchange from its request head to its last response byte.
//!
//! An [`Exchange`] starts when a request head has been read (the in-flight gauge goes up),
//! learns its route and status when the response head is ready to send (time to first
//! byte), counts the body bytes as they are sent, and records everything when it is
//! dropped: after the last byte was written (front end) or handed to hyper (hyper drops the
//! body after polling its last frame, before flushing it), or when the connection failed
//! half way. Dropping is what ends it, so an
//! exchange is recorded exactly once whichever way the connection ends.

use std::borrow::Borrow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::body::Body;
use crate::metrics::{HttpExchange, Metrics};

/// The code an exchange gets when it ends before its response was ready.
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// One request in flight; recorded in the metrics when dropped. `M` is how it reaches the
/// metrics: an `Arc` when it outlives the request's handler (a hyper body), a borrow on the
/// front end's plain reads (no shared reference count to touch per request).
#[derive(Debug)]
pub struct Exchange<M: Borrow<Metrics> = Arc<Metrics>> {
    metrics: M,
    started: Instant,
    method: &'static str,
    route: &'static str,
    code: u16,
    first_byte: Option<Duration>,
    sent: u64,
}

impl<M: Borrow<Metrics>> Exchange<M> {
    /// An exchange whose request head was complete at `started`.
    pub fn start(metrics: M, started: Instant, method: &'static str) -> Self {
        metrics.borrow().http_in_flight(1);
        Self {
            metrics,
            started,
            method,
            route: "invalid",
            code: 0,
            first_byte: None,
            sent: 0,
        }
    }

    /// The response head is ready to be sent: the time to first byte ends now.
    pub fn respond(&mut self, route: &'static str, code: u16) {
        self.route = route;
        self.code = code;
        self.first_byte = Some(self.started.elapsed());
    }

    /// Counts body bytes handed to the socket.
    pub fn sent(&mut self, bytes: u64) {
        self.sent += bytes;
    }
}

impl<M: Borrow<Metrics>> Drop for Exchange<M> {
    fn drop(&mut self) {
        let duration = self.started.elapsed();
        if self.code == 0 {
            // Dropped before a response was ready (the connection went away): counted as
            // nginx logs it, "client closed request".
            self.code = CLIENT_CLOSED_REQUEST;
        }
        let metrics = self.metrics.borrow();
        metrics.http_in_flight(-1);
        metrics.observe_request(&HttpExchange {
            route: self.route,
            method: self.method,
            code: self.code,
            time_to_first_byte: self.first_byte.unwrap_or(duration).as_secs_f64(),
            duration: duration.as_secs_f64(),
            body_bytes: self.sent,
        });
    }
}

/// A response body that counts its bytes into its [`Exchange`], which hyper drops, and so
/// records, once it has written the last frame (or given up on the connection).
#[derive(Debug)]
pub struct ObservedBody {
    body: Body,
    exchange: Exchange,
}

impl ObservedBody {
    /// Wraps `body`, recorded into `exchange`.
    pub fn new(body: Body, exchange: Exchange) -> Self {
        Self { body, exchange }
    }
}

impl http_body::Body for ObservedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.exchange.sent(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn count(text: &str, series: &str) -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn an_exchange_is_recorded_once_with_its_body_bytes_when_the_body_is_done() {
        let metrics = Arc::new(Metrics::new());
        let usage = crate::usage::Usage::new(None);
        let budget = crate::budget::BufferBudget::new(1 << 20);
        let mut exchange = Exchange::start(Arc::clone(&metrics), Instant::now(), "GET");
        let text = metrics.render(&usage, &budget);
        assert_eq!(count(&text, "zeronas_http_requests_in_flight "), 1);
        exchange.respond("files", 200);
        let body = ObservedBody::new(Body::full(vec![7u8; 3000]), exchange);
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(collected.len(), 3000);
        let text = metrics.render(&usage, &budget);
        assert_eq!(count(&text, "zeronas_http_requests_in_flight "), 0);
        assert_eq!(
            count(
                &text,
                "zeronas_http_request_duration_seconds_count{route=\"files\",method=\"GET\",status_class=\"2xx\"}"
            ),
            1
        );
        assert_eq!(
            count(
                &text,
                "zeronas_http_response_size_bytes_bucket{le=\"4096.0\",route=\"files\"}"
            ),
            1
        );
        assert_eq!(
            count(
                &text,
                "zeronas_http_response_size_bytes_bucket{le=\"1024.0\",route=\"files\"}"
            ),
            0
        );
    }

    #[test]
    fn an_exchange_dropped_before_its_response_counts_as_invalid() {
        let metrics = Arc::new(Metrics::new());
        drop(Exchange::start(Arc::clone(&metrics), Instant::now(), "PUT"));
        let text = metrics.render(
            &crate::usage::Usage::new(None),
            &crate::budget::BufferBudget::new(1 << 20),
        );
        assert_eq!(
            count(
                &text,
                "zeronas_http_requests_total{route=\"invalid\",method=\"PUT\",code=\"499\"}"
            ),
            1
        );
    }
}
