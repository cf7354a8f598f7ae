//! One object, watched by name: its latest copy, and a wake-up on every change.
//!
//! A gate that waits for an object to change (a Lease renewed, a Node Ready) waits on what the
//! API server pushes, not on a poll: [`Watched`] lists the object once (a field selector on
//! `metadata.name`, so RBAC can limit it to that name), then watches from that list's
//! resourceVersion. A watch that ends (the server's timeout), breaks (the apiserver behind a
//! VIP restarting) or has expired (410 Gone) lists again; an error is kept for the gate's
//! message. Nothing is retried in a busy loop: a round that brought no event (an error, a 410,
//! a watch the server ended early) pauses before the next, [`RETRY`] doubling up to
//! [`MAX_RETRY`] while they go on (only a first 410 lists again at once, as it should), and an
//! event starts over. The caller bounds the wait.

use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::core::Resource;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

/// Pause before listing again after an error; it doubles while rounds bring no event.
pub const RETRY: Duration = Duration::from_millis(250);

/// Longest pause between rounds that bring no event.
pub const MAX_RETRY: Duration = Duration::from_secs(4);

/// How long the server keeps one watch open before it ends it (then it is listed again).
const WATCH_SECONDS: u32 = 20;

/// The latest copy of one named object and its watch.
pub struct Watched<K> {
    api: Api<K>,
    name: String,
    what: String,
    stream: Option<BoxStream<'static, kube::Result<WatchEvent<K>>>>,
    version: Option<String>,
    retry_at: Option<Instant>,
    /// Rounds in a row that brought no event.
    idle_rounds: u32,
    /// When the current watch was opened.
    watch_opened: Option<Instant>,
    /// The object as last seen (None before the first list, or while it does not exist).
    pub latest: Option<K>,
    /// The last error, for a gate's message (cleared by the next good answer).
    pub error: Option<String>,
}

impl<K> std::fmt::Debug for Watched<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("what", &self.what)
            .field("version", &self.version)
            .field("watching", &self.stream.is_some())
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<K> Watched<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    /// Watches the object `name` of `api`; `what` names it in errors (`lease kube-system/x`).
    #[must_use]
    pub fn new(api: Api<K>, name: &str, what: impl Into<String>) -> Self {
        Self {
            api,
            name: name.to_owned(),
            what: what.into(),
            stream: None,
            version: None,
            retry_at: None,
            idle_rounds: 0,
            watch_opened: None,
            latest: None,
            error: None,
        }
    }

    fn selector(&self) -> String {
        format!("metadata.name={}", self.name)
    }

    /// Returns once `latest` or `error` may have changed: the first list, a watch event, an
    /// error. Cancel-safe: dropped while it waits, the next call goes on where it stood.
    pub async fn changed(&mut self) {
        if let Some(at) = self.retry_at {
            tokio::time::sleep_until(at).await;
            self.retry_at = None;
        }
        if self.stream.is_none() {
            let Some(version) = self.version.clone() else {
                self.list().await;
                return;
            };
            let params = WatchParams::default()
                .fields(&self.selector())
                .timeout(WATCH_SECONDS);
            match self.api.watch(&params, &version).await {
                Ok(stream) => {
                    self.stream = Some(stream.boxed());
                    self.watch_opened = Some(Instant::now());
                }
                Err(err) => return self.failed("watch", &err),
            }
        }
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        match stream.next().await {
            Some(Ok(WatchEvent::Added(object) | WatchEvent::Modified(object))) => {
                self.version.clone_from(&object.meta().resource_version);
                self.latest = Some(object);
                self.error = None;
                self.idle_rounds = 0;
            }
            Some(Ok(WatchEvent::Deleted(object))) => {
                self.version.clone_from(&object.meta().resource_version);
                self.latest = None;
                self.error = None;
                self.idle_rounds = 0;
            }
            Some(Ok(WatchEvent::Bookmark(mark))) => {
                self.version = Some(mark.metadata.resource_version);
                self.idle_rounds = 0;
            }
            Some(Ok(WatchEvent::Error(status))) => {
                // 410 Gone: the version is too old to watch from; list again (at once the
                // first time: a server that keeps answering 410 is paused like an error).
                self.stream = None;
                self.version = None;
                if status.code != 410 {
                    self.error = Some(format!(
                        "watch {}: {} ({})",
                        self.what, status.message, status.code
                    ));
                }
                self.idle_round(status.code == 410);
            }
            Some(Err(err)) => {
                self.stream = None;
                self.failed("watch", &err);
            }
            // The server ended the watch: watch again from the same version; at once after
            // its timeout, after a pause when it ended early (a server that hangs up at once).
            None => {
                self.stream = None;
                let early = self.watch_opened.is_some_and(|t| {
                    t.elapsed() < Duration::from_secs(u64::from(WATCH_SECONDS / 2))
                });
                if early {
                    self.idle_round(false);
                } else {
                    self.idle_rounds = 0;
                }
            }
        }
    }

    /// A round that brought no event: the pause before the next, doubling from [`RETRY`] to
    /// [`MAX_RETRY`]; none for the first of them when `first_free` (a first 410).
    fn idle_round(&mut self, first_free: bool) {
        self.idle_rounds = self.idle_rounds.saturating_add(1);
        if first_free && self.idle_rounds == 1 {
            return;
        }
        self.retry_at = Some(Instant::now() + pause(self.idle_rounds));
    }

    async fn list(&mut self) {
        let params = ListParams::default().fields(&self.selector());
        match self.api.list(&params).await {
            Ok(list) => {
                self.version = list.metadata.resource_version;
                self.latest = list.items.into_iter().next();
                self.error = None;
            }
            Err(err) => self.failed("list", &err),
        }
    }

    fn failed(&mut self, verb: &str, err: &kube::Error) {
        self.stream = None;
        self.version = None;
        self.error = Some(format!("{verb} {}: {err}", self.what));
        self.idle_round(false);
    }
}

/// The pause after `rounds` rounds in a row without an event: [`RETRY`], doubling, at most
/// [`MAX_RETRY`].
fn pause(rounds: u32) -> Duration {
    let doublings = rounds.saturating_sub(1).min(16);
    (RETRY * 2_u32.pow(doublings)).min(MAX_RETRY)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use k8s_openapi::api::coordination::v1::Lease;
    use kube::client::Body;

    use super::*;

    /// An API whose lists answer one Lease and whose watches answer `watch_body` (one JSON
    /// event per line, or nothing); counts the requests.
    fn fake_api(watch_body: &'static str) -> (Api<Lease>, Arc<AtomicUsize>) {
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&requests);
        let service = tower::service_fn(move |request: http::Request<Body>| {
            counted.fetch_add(1, Ordering::SeqCst);
            let watching = request
                .uri()
                .query()
                .is_some_and(|q| q.contains("watch=true"));
            let body = if watching {
                watch_body.to_owned()
            } else {
                r#"{"kind":"LeaseList","apiVersion":"coordination.k8s.io/v1",
                    "metadata":{"resourceVersion":"7"},
                    "items":[{"metadata":{"name":"x","namespace":"kube-system",
                              "resourceVersion":"7"}}]}"#
                    .to_owned()
            };
            async move {
                Ok::<_, std::convert::Infallible>(http::Response::new(Body::from(
                    body.into_bytes(),
                )))
            }
        });
        let client = kube::Client::new(service, "default");
        (Api::namespaced(client, "kube-system"), requests)
    }

    /// Calls `changed` `rounds` times without waiting out its pauses; returns each pause asked
    /// for (zero: none).
    async fn pauses(watched: &mut Watched<Lease>, rounds: usize) -> Vec<Duration> {
        let mut out = Vec::new();
        for _ in 0..rounds {
            watched.changed().await;
            out.push(watched.retry_at.take().map_or(Duration::ZERO, |at| {
                at.saturating_duration_since(Instant::now())
            }));
        }
        out
    }

    const GONE: &str = "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\",\
                        \"status\":\"Failure\",\"message\":\"too old resource version\",\
                        \"reason\":\"Expired\",\"code\":410}}\n";

    #[tokio::test]
    async fn a_watch_that_always_answers_410_is_paused_longer_and_longer_not_relisted_at_once() {
        let (api, requests) = fake_api(GONE);
        let mut watched = Watched::new(api, "x", "lease kube-system/x");
        // list, watch (410: the first relists at once), list, watch (410: paused), ...
        let pauses = pauses(&mut watched, 16).await;
        let after_watches: Vec<Duration> = pauses.iter().skip(1).step_by(2).copied().collect();
        assert_eq!(after_watches[0], Duration::ZERO, "{pauses:?}");
        for (earlier, later) in after_watches[1..].iter().zip(&after_watches[2..]) {
            // (less the few microseconds between asking and measuring)
            assert!(
                *later + Duration::from_millis(50) >= *earlier,
                "pauses shrink: {pauses:?}"
            );
        }
        assert!(after_watches[1] >= RETRY, "{pauses:?}");
        assert!(
            *after_watches.last().unwrap() + Duration::from_millis(100) >= MAX_RETRY,
            "{pauses:?}"
        );
        assert!(pauses.iter().all(|p| *p <= MAX_RETRY), "{pauses:?}");
        assert_eq!(requests.load(Ordering::SeqCst), 16);
        assert!(watched.latest.is_some());
    }

    #[tokio::test]
    async fn a_watch_the_server_ends_at_once_is_paused_too() {
        let (api, _) = fake_api("");
        let mut watched = Watched::new(api, "x", "lease kube-system/x");
        let pauses = pauses(&mut watched, 4).await;
        // The list, then watches that end without an event: each pauses, longer each time.
        assert_eq!(pauses[0], Duration::ZERO, "{pauses:?}");
        assert!(pauses[1] > Duration::ZERO, "{pauses:?}");
        assert!(pauses[3] > pauses[1], "{pauses:?}");
    }

    #[tokio::test]
    async fn an_event_starts_the_pauses_over() {
        let modified = "{\"type\":\"MODIFIED\",\"object\":{\"apiVersion\":\"coordination.k8s.io/v1\",\
                        \"kind\":\"Lease\",\"metadata\":{\"name\":\"x\",\"namespace\":\"kube-system\",\
                        \"resourceVersion\":\"8\"}}}\n";
        let (api, _) = fake_api(modified);
        let mut watched = Watched::new(api, "x", "lease kube-system/x");
        watched.idle_rounds = 5;
        let pauses = pauses(&mut watched, 2).await;
        assert_eq!(pauses, [Duration::ZERO, Duration::ZERO]);
        assert_eq!(watched.idle_rounds, 0);
        assert_eq!(watched.version.as_deref(), Some("8"));
    }

    #[test]
    fn pauses_double_from_retry_up_to_the_cap() {
        assert_eq!(pause(1), RETRY);
        assert_eq!(pause(2), RETRY * 2);
        assert_eq!(pause(40), MAX_RETRY);
    }
}
