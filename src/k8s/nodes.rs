//! Node state: the Ready condition and the heartbeat Lease of every Node, read once.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};

use crate::client::Cluster;
use crate::error::Result;
use crate::k8s::duration::{format_ago, seconds_since};
use crate::k8s::objects::Node;
use crate::k8s::paging::Pages;

/// Namespace of the node heartbeat Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The state of the node a pod is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeState {
    /// The pod was never scheduled to a node.
    Unassigned,
    /// Ready=True.
    Ready,
    /// Ready=False (`NotReady`), Unknown (`Unknown`: the node stopped reporting), or no Ready
    /// condition at all (`NoReadyCondition`).
    NotReady(&'static str),
    /// No Node object of that name.
    Gone,
}

impl NodeState {
    /// The short name in reports.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unassigned => "none",
            Self::Ready => "Ready",
            Self::NotReady(state) => state,
            Self::Gone => "gone",
        }
    }
}

/// What is known about one Node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Status of its Ready condition, if it has one.
    pub ready: Option<String>,
    /// When its Lease in kube-node-lease was last renewed.
    pub lease_renewed: Option<Timestamp>,
    /// The Lease's duration in seconds.
    pub lease_duration: Option<i64>,
}

/// A node's state and Lease age, as reported with each pod on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// Node name (spec.nodeName), if the pod has one.
    pub name: Option<String>,
    /// Its state.
    pub state: NodeState,
    /// Seconds since its Lease was renewed.
    pub lease_age: Option<i64>,
    /// Whether the Lease has expired (renewed longer ago than its duration).
    pub lease_expired: bool,
}

impl NodeReport {
    /// The state of `name` among `nodes` at `now`.
    #[must_use]
    pub fn of(nodes: &BTreeMap<String, NodeInfo>, name: Option<&str>, now: Timestamp) -> Self {
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return Self {
                name: None,
                state: NodeState::Unassigned,
                lease_age: None,
                lease_expired: false,
            };
        };
        let Some(info) = nodes.get(name) else {
            return Self {
                name: Some(name.to_owned()),
                state: NodeState::Gone,
                lease_age: None,
                lease_expired: false,
            };
        };
        let state = match info.ready.as_deref() {
            Some("True") => NodeState::Ready,
            Some("False") => NodeState::NotReady("NotReady"),
            Some(_) => NodeState::NotReady("Unknown"),
            None => NodeState::NotReady("NoReadyCondition"),
        };
        let lease_age = info.lease_renewed.map(|t| seconds_since(t, now));
        let lease_expired = match (lease_age, info.lease_duration) {
            (Some(age), Some(duration)) => age > duration,
            _ => false,
        };
        Self {
            name: Some(name.to_owned()),
            state,
            lease_age,
            lease_expired,
        }
    }

    /// One line for people: `k8s03 (Unknown, lease renewed 5m12s ago)`.
    #[must_use]
    pub fn text(&self) -> String {
        let Some(name) = &self.name else {
            return "no node (never scheduled)".into();
        };
        if self.state == NodeState::Gone {
            return format!("{name} (gone: no such Node)");
        }
        let lease = match self.lease_age {
            Some(age) if self.lease_expired => {
                format!("lease expired, renewed {}", format_ago(age))
            }
            Some(age) => format!("lease renewed {}", format_ago(age)),
            None => "no lease".into(),
        };
        format!("{name} ({}, {lease})", self.state.label())
    }
}

/// A node's InternalIP: None when it advertises none, the text when it is no IP address (a
/// Node's status is written by whoever can write Nodes, and becomes a URL here).
#[must_use]
pub fn internal_ip(node: &Node) -> Option<std::result::Result<IpAddr, String>> {
    let text = &node
        .status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")?
        .address;
    Some(text.trim().parse().map_err(|_| text.clone()))
}

/// The port of the configured endpoint, which every node's apiserver listens on too (microk8s:
/// 16443 on every node).
#[must_use]
pub fn endpoint_port(endpoint: &str) -> u16 {
    endpoint
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.port_u16())
        .unwrap_or(16443)
}

/// Most Nodes (and node Leases) a list may hold: Kubernetes supports 5,000 nodes.
pub const MAX_NODES: usize = 20_000;

/// Reads every Node and node Lease once.
pub async fn read_nodes(cluster: &Cluster) -> Result<BTreeMap<String, NodeInfo>> {
    Ok(read_nodes_and_objects(cluster).await?.1)
}

/// Reads every Node and node Lease once: the Nodes themselves too, for callers that need
/// their labels or addresses as well as their state.
pub async fn read_nodes_and_objects(
    cluster: &Cluster,
) -> Result<(Vec<Node>, BTreeMap<String, NodeInfo>)> {
    let mut objects = Vec::new();
    let api: Api<Node> = Api::all(cluster.client.clone());
    let mut pages = Pages::new(ListParams::default(), "nodes").max_items(MAX_NODES);
    while let Some(params) = pages.next() {
        let page = api
            .list(params)
            .await
            .map_err(cluster.error("list", "nodes"))?;
        pages.advance(&page.metadata, page.items.len())?;
        objects.extend(page.items);
    }
    let mut nodes: BTreeMap<String, NodeInfo> = objects
        .iter()
        .map(|node| {
            (
                node.metadata.name.clone().unwrap_or_default(),
                node_info(node),
            )
        })
        .collect();
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), NODE_LEASE_NAMESPACE);
    let mut pages = Pages::new(
        ListParams::default(),
        format!("leases in {NODE_LEASE_NAMESPACE}"),
    )
    .max_items(MAX_NODES);
    while let Some(params) = pages.next() {
        let page = leases
            .list(params)
            .await
            .map_err(cluster.error("list", "leases in kube-node-lease"))?;
        pages.advance(&page.metadata, page.items.len())?;
        for lease in page.items {
            let name = lease.metadata.name.clone().unwrap_or_default();
            if let Some(info) = nodes.get_mut(&name) {
                add_lease(info, &lease);
            }
        }
    }
    Ok((objects, nodes))
}

/// The state of one node from its Node and Lease objects, as watches hold them: a map with that
/// node alone, or empty when there is no such Node (so that [`NodeReport::of`] says `Gone`).
#[must_use]
pub fn infos_of(
    name: &str,
    node: Option<&Node>,
    lease: Option<&Lease>,
) -> BTreeMap<String, NodeInfo> {
    let mut nodes = BTreeMap::new();
    if let Some(node) = node {
        let mut info = node_info(node);
        if let Some(lease) = lease {
            add_lease(&mut info, lease);
        }
        nodes.insert(name.to_owned(), info);
    }
    nodes
}

/// A Node's Ready condition.
fn node_info(node: &Node) -> NodeInfo {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone());
    NodeInfo {
        ready,
        ..NodeInfo::default()
    }
}

/// What a node's Lease says about it.
fn add_lease(info: &mut NodeInfo, lease: &Lease) {
    if let Some(spec) = &lease.spec {
        info.lease_renewed = spec.renew_time.as_ref().map(|t| t.0);
        info.lease_duration = spec.lease_duration_seconds.map(i64::from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn node_state_comes_from_the_ready_condition_and_the_lease() {
        let now = ts("2026-05-15T07:40:00Z");
        let mut nodes = BTreeMap::new();
        nodes.insert(
            "k8s01".to_owned(),
            NodeInfo {
                ready: Some("True".into()),
                lease_renewed: Some(ts("2026-05-15T07:39:55Z")),
                lease_duration: Some(40),
            },
        );
        nodes.insert(
            "k8s03".to_owned(),
            NodeInfo {
                ready: Some("Unknown".into()),
                lease_renewed: Some(ts("2026-05-15T07:30:00Z")),
                lease_duration: Some(40),
            },
        );
        nodes.insert(
            "k8s02".to_owned(),
            NodeInfo {
                ready: Some("False".into()),
                ..NodeInfo::default()
            },
        );
        let k8s01 = NodeReport::of(&nodes, Some("k8s01"), now);
        assert_eq!(k8s01.state, NodeState::Ready);
        assert_eq!(k8s01.lease_age, Some(5));
        assert!(!k8s01.lease_expired);
        let k8s03 = NodeReport::of(&nodes, Some("k8s03"), now);
        assert_eq!(k8s03.state.label(), "Unknown");
        assert!(k8s03.lease_expired);
        assert_eq!(
            k8s03.text(),
            "k8s03 (Unknown, lease expired, renewed 10m ago)"
        );
        assert_eq!(
            NodeReport::of(&nodes, Some("k8s02"), now).state.label(),
            "NotReady"
        );
        let gone = NodeReport::of(&nodes, Some("k8s04"), now);
        assert_eq!(gone.state, NodeState::Gone);
        assert!(gone.text().contains("gone"));
        assert_eq!(
            NodeReport::of(&nodes, Some(""), now).state,
            NodeState::Unassigned
        );
    }
}
