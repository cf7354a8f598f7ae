//! One object, watched by name: its latest copy, and a wake-up on every change.
//!
//! A gate that waits for an object to change (a Lease renewed, a Node Ready) waits on what the
//! API server pushes, not on a poll: [`Watched`] lists the object once (a field selector on
//! `metadata.name`, so RBAC can limit it to that name), then watches from that list's
//! resourceVersion. A watch that ends (the server's timeout), breaks (the apiserver behind a
//! VIP restarting) or has expired (410 Gone) lists again; an error is kept for the gate's
//! message and retried after [`RETRY`], never in a busy loop. The caller bounds the wait.

use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::core::Resource;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

/// Pause before listing again after an error.
pub const RETRY: Duration = Duration::from_millis(250);

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
                Ok(stream) => self.stream = Some(stream.boxed()),
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
            }
            Some(Ok(WatchEvent::Deleted(object))) => {
                self.version.clone_from(&object.meta().resource_version);
                self.latest = None;
                self.error = None;
            }
            Some(Ok(WatchEvent::Bookmark(mark))) => {
                self.version = Some(mark.metadata.resource_version);
            }
            Some(Ok(WatchEvent::Error(status))) => {
                // 410 Gone: the version is too old to watch from; list again at once.
                self.stream = None;
                self.version = None;
                if status.code != 410 {
                    self.error = Some(format!(
                        "watch {}: {} ({})",
                        self.what, status.message, status.code
                    ));
                    self.retry_at = Some(Instant::now() + RETRY);
                }
            }
            Some(Err(err)) => {
                self.stream = None;
                self.failed("watch", &err);
            }
            // The server ended the watch (its timeout): watch again from the same version.
            None => self.stream = None,
        }
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
        self.retry_at = Some(Instant::now() + RETRY);
    }
}
