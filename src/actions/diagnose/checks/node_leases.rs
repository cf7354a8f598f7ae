//! node_leases: nodes Ready although their node Lease expired (critical), with the fix naming a
//! healthy node.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::{Check, Outcome, Run, reason};
use crate::actions::diagnose::Diagnose;
use crate::actions::diagnose::report::{Finding, Severity, finding, fix};
use crate::k8s::duration::{format_ago, seconds_since};
use crate::k8s::nodes::{NodeInfo, read_nodes};

/// Runs the check.
pub(super) async fn run(_: &Diagnose, run: &mut Run<'_>) -> Outcome {
    read_nodes(&run.cx.cluster)
        .await
        .map(|nodes| node_lease_findings(&nodes, Timestamp::now()))
        .map_err(reason)
}

/// Nodes Ready although their Lease expired: critical, the fix being kubelite restarted on a
/// healthy node (one Ready with a fresh Lease), named in the options.
#[must_use]
pub fn node_lease_findings(nodes: &BTreeMap<String, NodeInfo>, now: Timestamp) -> Vec<Finding> {
    let expired = |info: &NodeInfo| match (info.lease_renewed, info.lease_duration) {
        (Some(renewed), Some(duration)) => seconds_since(renewed, now) > duration,
        _ => true,
    };
    let ready = |info: &NodeInfo| info.ready.as_deref() == Some("True");
    let healthy: Vec<&String> = nodes
        .iter()
        .filter(|(_, info)| ready(info) && !expired(info))
        .map(|(name, _)| name)
        .collect();
    let mut findings = Vec::new();
    for (name, info) in nodes.iter().filter(|(_, i)| ready(i) && expired(i)) {
        let ago = info.lease_renewed.map(|t| seconds_since(t, now));
        let lease = match ago {
            Some(ago) => format!(
                "its Lease was last renewed {} (duration {}s)",
                format_ago(ago),
                info.lease_duration.unwrap_or(0)
            ),
            None => "it has no Lease in kube-node-lease".into(),
        };
        let mut f = finding(
            Check::NodeLeases,
            Severity::Critical,
            format!("node/{name}"),
            format!(
                "Ready although {lease}: the node controller has stopped noticing (microk8s \
                 1.34/1.35: a powered-off node can stay Ready), so its pods are never evicted"
            ),
        );
        let target = healthy.first().map(|n| (*n).clone());
        f.hint = match &target {
            Some(node) => format!(
                "restart kubelite on a healthy node ({node}), not on {name} (kubelite_restart)"
            ),
            None => "restart kubelite on a healthy node (kubelite_restart); no node is Ready \
                     with a fresh Lease"
                .into(),
        };
        f.fix = Some(fix(
            "kubelite_restart",
            &target.map_or_else(|| json!({}), |node| json!({"nodes": [node]})),
        ));
        f.data.insert(
            "lease_renew_time".into(),
            json!(info.lease_renewed.map(|t| t.to_string())),
        );
        f.data
            .insert("lease_renewed_seconds_ago".into(), json!(ago));
        f.data
            .insert("lease_duration_seconds".into(), json!(info.lease_duration));
        findings.push(f);
    }
    if findings.is_empty() {
        let mut f = finding(
            Check::NodeLeases,
            Severity::Info,
            "cluster/nodes".into(),
            format!(
                "{} node(s), {} Ready with a fresh Lease; none Ready with an expired one",
                nodes.len(),
                healthy.len()
            ),
        );
        "nothing to do".clone_into(&mut f.hint);
        findings.push(f);
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_ready_node_with_an_expired_lease_is_critical_and_names_a_healthy_node() {
        let now = ts("2026-05-15T07:40:00Z");
        let mut nodes = BTreeMap::new();
        let node = |ready: &str, renewed: &str| NodeInfo {
            ready: Some(ready.into()),
            lease_renewed: Some(ts(renewed)),
            lease_duration: Some(40),
        };
        nodes.insert("k8s01".to_owned(), node("True", "2026-05-15T07:39:55Z"));
        nodes.insert("k8s02".to_owned(), node("True", "2026-05-15T07:10:00Z"));
        nodes.insert("k8s03".to_owned(), node("Unknown", "2026-05-15T07:10:00Z"));
        let findings = node_lease_findings(&nodes, now);
        assert_eq!(findings.len(), 1, "{findings:?}");
        let f = &findings[0];
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(f.object, "node/k8s02");
        assert!(f.evidence.contains("30m ago"), "{}", f.evidence);
        assert_eq!(f.data["lease_renewed_seconds_ago"], 1800);
        let fix = f.fix.as_ref().unwrap();
        assert_eq!(fix.module, "kubelite_restart");
        assert_eq!(fix.options["nodes"], json!(["k8s01"]));
        assert!(f.hint.contains("k8s01"), "{}", f.hint);

        nodes.remove("k8s02");
        let findings = node_lease_findings(&nodes, now);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].severity, Severity::Info);
    }
}
