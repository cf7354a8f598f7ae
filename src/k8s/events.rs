//! Events as a record of what happened recently: the leader changes client-go's leader election
//! records, and the kubelite restarts kubemend records itself, so that the runbook can tell a
//! leader election that churns from one that moved because kubemend restarted a node.
//!
//! Events live as long as the apiserver's `--event-ttl` (1h by default): they tell what
//! happened within the last hour, which is what a rate needs, and nothing older.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, PostParams};
use kube::core::ObjectList;
use serde::Deserialize;

use crate::client::Cluster;
use crate::error::{Error, Result};
use crate::k8s::paging::Pages;

/// The reason of the Events client-go's leader election records on its Lease
/// (tools/leaderelection/resourcelock: `"<identity> became leader"`, `"... stopped leading"`).
pub const LEADER_ELECTION: &str = "LeaderElection";

/// The reason of the Event kubelite_restart records, on the Node, before each restart.
pub const KUBELITE_RESTART: &str = "KubemendKubeliteRestart";

/// Where kubemend records its own Events: beside the leader Leases and its lock.
pub const NAMESPACE: &str = "kube-system";

/// Most Events of one reason read (a cluster whose leaders change more often than this in an
/// hour churns whatever the exact count).
const MAX_EVENTS: usize = 5_000;

/// What the runbook reads of a core/v1 Event (only these fields: the full type's decoder
/// would cost the binary more than it reads).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Its object's metadata (its creation time).
    #[serde(default)]
    pub metadata: EventMeta,
    /// What it is about.
    #[serde(default)]
    pub involved_object: Involved,
    /// For people: `"<identity> became leader"`.
    #[serde(default)]
    pub message: Option<String>,
    /// When it last happened, as the core/v1 recorder writes it.
    #[serde(default)]
    pub last_timestamp: Option<Timestamp>,
    /// When it happened, as events.k8s.io writes it.
    #[serde(default)]
    pub event_time: Option<Timestamp>,
}

/// The part of an Event's metadata read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventMeta {
    /// When it was made.
    #[serde(default)]
    pub creation_timestamp: Option<Timestamp>,
}

/// The object an Event is about.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Involved {
    /// Its kind, e.g. `Lease`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Its name.
    #[serde(default)]
    pub name: Option<String>,
}

/// When an Event happened: its last occurrence, as the core/v1 recorder writes it, or its
/// events.k8s.io time, or its creation.
#[must_use]
pub fn event_time(event: &Event) -> Option<Timestamp> {
    event
        .last_timestamp
        .or(event.event_time)
        .or(event.metadata.creation_timestamp)
}

fn request_error(what: &str, e: &kube::core::request::Error) -> Error {
    Error::Internal {
        message: format!("a request for {what}: {e}"),
    }
}

/// Every Event in `namespace` with `reason`, paged.
pub async fn with_reason(cluster: &Cluster, namespace: &str, reason: &str) -> Result<Vec<Event>> {
    let what = format!("events in {namespace} with reason {reason}");
    let request = kube::core::Request::new(format!("/api/v1/namespaces/{namespace}/events"));
    let mut pages = Pages::new(
        ListParams::default().fields(&format!("reason={reason}")),
        what.clone(),
    )
    .max_items(MAX_EVENTS);
    let mut events = Vec::new();
    while let Some(params) = pages.next() {
        let list: ObjectList<Event> = cluster
            .client
            .request(request.list(params).map_err(|e| request_error(&what, &e))?)
            .await
            .map_err(cluster.error("list", what.clone()))?;
        pages.advance(&list.metadata, list.items.len())?;
        events.extend(list.items);
    }
    Ok(events)
}

/// Records, before it happens, that kubemend restarts kubelite on `node` (run `run`): what the
/// runbook later reads to leave the leader changes it causes out of its churn count, and what
/// `kubectl get events -n kube-system` shows an operator.
pub async fn record_kubelite_restart(cluster: &Cluster, node: &str, run: &str) -> Result<()> {
    // The API's own formats: MicroTime (exactly six fractional digits) and Time (seconds).
    let at = Timestamp::now();
    let micro = serde_json::to_value(MicroTime(at)).unwrap_or_default();
    let now = serde_json::to_value(Time(at)).unwrap_or_default();
    let event = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": format!("{node}.kubemend-"), "namespace": NAMESPACE},
        "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": node},
        "reason": KUBELITE_RESTART,
        "message": format!("kubemend kubelite_restart (run {run}) restarts kubelite on {node}"),
        "type": "Normal",
        "source": {"component": "kubemend"},
        "reportingComponent": "kubemend",
        "reportingInstance": run,
        "action": "Restart",
        // eventTime makes it a "new" Event, which may live in another namespace than a
        // cluster-scoped object's (kubernetes: pkg/apis/core/validation/events.go; a legacy one
        // about a Node must be in "default").
        "eventTime": micro,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    });
    let what = format!("an event in {NAMESPACE} for node {node}");
    let request = kube::core::Request::new(format!("/api/v1/namespaces/{NAMESPACE}/events"))
        .create(&PostParams::default(), event.to_string().into_bytes())
        .map_err(|e| request_error(&what, &e))?;
    cluster
        .client
        .request_text(request)
        .await
        .map_err(cluster.error("create", what))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_happened_at_its_last_occurrence_else_its_event_time_else_its_creation() {
        let at = |text: &str| -> Event { serde_json::from_str(text).unwrap() };
        let made = r#"{"metadata": {"creationTimestamp": "2026-12-06T10:00:00Z"}}"#;
        let times = |e: &Event| event_time(e).map(|t| t.to_string());
        assert_eq!(times(&at(made)).as_deref(), Some("2026-12-06T10:00:00Z"));
        let modern = r#"{"metadata": {"creationTimestamp": "2026-12-06T10:00:00Z"},
                         "eventTime": "2026-12-06T10:00:01.123456Z", "lastTimestamp": null}"#;
        assert_eq!(
            times(&at(modern)).as_deref(),
            Some("2026-12-06T10:00:01.123456Z")
        );
        let core = r#"{"metadata": {"creationTimestamp": "2026-12-06T10:00:00Z"},
                       "eventTime": null, "lastTimestamp": "2026-12-06T10:00:02Z",
                       "involvedObject": {"kind": "Lease", "name": "kube-scheduler"},
                       "message": "k8s01_x became leader", "reason": "LeaderElection"}"#;
        let event = at(core);
        assert_eq!(times(&event).as_deref(), Some("2026-12-06T10:00:02Z"));
        assert_eq!(event.involved_object.kind.as_deref(), Some("Lease"));
    }
}
