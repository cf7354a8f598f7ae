//! Bounds on every request to the API server: a deadline per attempt, a few retries with a capped
//! wait, and a cap on the size of a response body.
//!
//! kube's own stack retries 429/503/504 up to 15 times with a backoff growing to 1000 s and obeys
//! any `Retry-After`, and reads response bodies whole, however large. Here its retry is switched
//! off (`default_retry = false`) and these layers wrap its stack instead:
//!
//! - [`BoundedRetry`] retries 429, 503 and 504 at most [`MAX_RETRIES`] times, waiting the
//!   exponential backoff or the server's `Retry-After`, whichever is longer, but never more than
//!   [`MAX_RETRY_WAIT`] at a time nor [`RETRY_BUDGET`] in all. It also retries, on the same
//!   budget, a connection that failed before the request was sent (refused, or closed during the
//!   TLS handshake): what an L4 virtual IP in front of an HA control plane does while one node's
//!   apiserver shuts down. Such a request never reached a server, so sending it again is safe
//!   for every verb. A connection that timed out is not retried: the deadline is spent;
//! - each attempt must have its response headers within the request timeout ([`RequestTimedOut`]),
//!   and the connection's read timeout bounds the time between two reads of the body;
//! - a response body longer than [`MAX_RESPONSE_BYTES`] fails with [`ResponseTooLarge`] instead of
//!   growing until memory runs out.

use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use kube::client::{Body, ClientBuilder, DynBody};
use tokio::time::Instant;
use tower::BoxError;
use tower::ServiceBuilder;
use tower::retry::{Policy, RetryLayer};

/// Largest response body read from the API server. A page of 500 pods is a few MiB; a server that
/// sends far more is ignoring `limit` (or is not an API server).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Retries of a request answered 429, 503 or 504 (so at most four attempts).
pub const MAX_RETRIES: u32 = 3;

/// First backoff; it doubles with each retry.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Longest single wait between two attempts, whatever `Retry-After` says.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);

/// Longest total wait between the attempts of one request.
pub const RETRY_BUDGET: Duration = Duration::from_secs(20);

/// The API server sent a response body longer than [`MAX_RESPONSE_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the API server's response is larger than the limit of {} MiB (is it ignoring `limit`?)",
    limit / (1024 * 1024)
)]
pub struct ResponseTooLarge {
    /// The limit in bytes.
    pub limit: usize,
}

/// No response headers arrived within the request timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the API server did not answer within {}", crate::k8s::duration::format_std(*after))]
pub struct RequestTimedOut {
    /// The timeout.
    pub after: Duration,
}

/// Whether `err` or one of its causes is a [`ResponseTooLarge`].
#[must_use]
pub fn is_response_too_large(err: &(dyn std::error::Error + 'static)) -> bool {
    chain(err).any(<dyn std::error::Error>::is::<ResponseTooLarge>)
}

/// The errors of `err`'s `source` chain, at most 32 of them (a cyclic chain must not hang us).
fn chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| e.source()).take(32)
}

/// Whether `err` is a connection that failed before the request was sent (refused, reset, or
/// closed during the TLS handshake), and not because a deadline passed.
#[must_use]
pub fn is_connect_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    let connect = chain(err).any(|e| {
        e.downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(hyper_util::client::legacy::Error::is_connect)
    });
    let timed_out = chain(err).any(|e| {
        e.is::<RequestTimedOut>()
            || e.is::<tower::timeout::error::Elapsed>()
            || e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    });
    connect && !timed_out
}

/// The retry policy: see the module docs.
#[derive(Debug, Clone)]
pub struct BoundedRetry {
    retries: u32,
    waited: Duration,
    max_retries: u32,
    first_backoff: Duration,
    max_wait: Duration,
    budget: Duration,
}

impl Default for BoundedRetry {
    fn default() -> Self {
        Self {
            retries: 0,
            waited: Duration::ZERO,
            max_retries: MAX_RETRIES,
            first_backoff: FIRST_BACKOFF,
            max_wait: MAX_RETRY_WAIT,
            budget: RETRY_BUDGET,
        }
    }
}

impl BoundedRetry {
    /// The wait before the next attempt after a response with `status` and `retry_after` (the
    /// header's text), or `None` when the request is not to be retried. Counts the retry.
    pub fn next_wait(&mut self, status: StatusCode, retry_after: Option<&str>) -> Option<Duration> {
        let retryable = matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
        );
        if !retryable {
            return None;
        }
        // Retry-After in seconds (the HTTP-date form is not used by the API server).
        let server = retry_after
            .and_then(|text| text.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        self.wait(server)
    }

    /// The wait before the next attempt after a connection that failed before the request was
    /// sent, or `None` when the retries or their budget are spent. Counts the retry.
    pub fn next_wait_after_connect_failure(&mut self) -> Option<Duration> {
        self.wait(None)
    }

    /// The backoff (or `server`'s longer wait), capped, within the budget; counts the retry.
    fn wait(&mut self, server: Option<Duration>) -> Option<Duration> {
        if self.retries >= self.max_retries {
            return None;
        }
        let backoff = self.first_backoff.saturating_mul(1 << self.retries.min(16));
        let wait = server
            .map_or(backoff, |s| s.max(backoff))
            .min(self.max_wait);
        let left = self.budget.saturating_sub(self.waited);
        if left.is_zero() {
            return None;
        }
        let wait = wait.min(left);
        self.retries += 1;
        self.waited += wait;
        Some(wait)
    }
}

impl<B> Policy<Request<Body>, Response<B>, BoxError> for BoundedRetry {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _request: &mut Request<Body>,
        result: &mut Result<Response<B>, BoxError>,
    ) -> Option<Self::Future> {
        let wait = match result {
            Ok(response) => {
                let retry_after = response
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok());
                let wait = self.next_wait(response.status(), retry_after)?;
                tracing::debug!(
                    status = response.status().as_u16(),
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    retry = self.retries,
                    "retrying"
                );
                wait
            }
            Err(err) if is_connect_failure(err.as_ref()) => {
                let wait = self.next_wait_after_connect_failure()?;
                tracing::debug!(
                    error = %err,
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    retry = self.retries,
                    "connection failed before the request was sent: retrying"
                );
                wait
            }
            Err(_) => return None,
        };
        Some(tokio::time::sleep_until(Instant::now() + wait))
    }

    fn clone_request(&mut self, request: &Request<Body>) -> Option<Request<Body>> {
        // Only requests with a body held in memory can be sent again (all of kubemend's are).
        let body = request.body().try_clone()?;
        let mut clone = Request::builder()
            .method(request.method().clone())
            .uri(request.uri().clone())
            .version(request.version())
            .body(body)
            .ok()?;
        *clone.headers_mut() = request.headers().clone();
        *clone.extensions_mut() = request.extensions().clone();
        Some(clone)
    }
}

/// kube's boxed HTTP stack, as `ClientBuilder::try_from(Config)` builds it.
pub type GenericService = tower::util::BoxService<Request<Body>, Response<Box<DynBody>>, BoxError>;

/// The guards for one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deadline for the response headers of one attempt.
    pub request_timeout: Duration,
    /// Largest response body.
    pub max_response_bytes: usize,
}

fn limit_error(err: BoxError) -> BoxError {
    if err.is::<LengthLimitError>() {
        Box::new(ResponseTooLarge {
            limit: MAX_RESPONSE_BYTES,
        })
    } else {
        err
    }
}

#[must_use]
/// Builds the client: kube's stack (`builder`, made from a config with `default_retry` off),
/// wrapped in the body limit, the per-attempt timeout and the bounded retry.
pub fn build(builder: ClientBuilder<GenericService>, limits: Limits) -> kube::Client {
    let max = limits.max_response_bytes;
    let timeout = limits.request_timeout;
    let limited = ServiceBuilder::new()
        .map_response(move |response: Response<Box<DynBody>>| {
            response.map(|body| {
                let limited = Limited::new(body, max).map_err(limit_error as fn(BoxError) -> _);
                Box::new(limited) as Box<DynBody>
            })
        })
        .map_err(move |err: BoxError| -> BoxError {
            if err.is::<tower::timeout::error::Elapsed>() {
                Box::new(RequestTimedOut { after: timeout })
            } else {
                err
            }
        })
        .layer(tower::timeout::TimeoutLayer::new(timeout))
        .into_inner();
    // The retry layer needs a service it can clone: the buffer gives it one.
    let builder = builder.with_layer(&limited);
    let builder = builder.with_layer(&tower::buffer::BufferLayer::new(64));
    builder
        .with_layer(&RetryLayer::new(BoundedRetry::default()))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_few_and_retry_after_is_capped() {
        let mut policy = BoundedRetry::default();
        let waits: Vec<Option<Duration>> = (0..5)
            .map(|_| policy.next_wait(StatusCode::SERVICE_UNAVAILABLE, Some("100000")))
            .collect();
        assert_eq!(
            waits,
            vec![
                Some(MAX_RETRY_WAIT),
                Some(RETRY_BUDGET.saturating_sub(MAX_RETRY_WAIT)),
                None,
                None,
                None
            ]
        );
        let total: Duration = waits.iter().flatten().sum();
        assert!(total <= RETRY_BUDGET, "{total:?}");
    }

    #[test]
    fn backoff_doubles_and_other_statuses_are_not_retried() {
        let mut policy = BoundedRetry::default();
        assert_eq!(
            policy.next_wait(StatusCode::TOO_MANY_REQUESTS, None),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            policy.next_wait(StatusCode::GATEWAY_TIMEOUT, Some("not a number")),
            Some(Duration::from_secs(1))
        );
        // A short Retry-After does not shorten the backoff.
        assert_eq!(
            policy.next_wait(StatusCode::SERVICE_UNAVAILABLE, Some("0")),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            policy.next_wait(StatusCode::SERVICE_UNAVAILABLE, None),
            None
        );
        let mut fresh = BoundedRetry::default();
        for status in [
            StatusCode::OK,
            StatusCode::NOT_FOUND,
            StatusCode::CONFLICT,
            StatusCode::INTERNAL_SERVER_ERROR,
        ] {
            assert_eq!(fresh.next_wait(status, Some("1")), None, "{status}");
        }
    }

    #[test]
    fn too_large_is_found_in_a_chain() {
        let kube_err = kube::Error::Service(Box::new(ResponseTooLarge { limit: 1 << 20 }));
        assert!(is_response_too_large(&kube_err));
        assert!(!is_response_too_large(
            &kube::Error::LinesCodecMaxLineLengthExceeded
        ));
    }
}
