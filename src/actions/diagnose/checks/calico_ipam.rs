//! calico_ipam: Calico's IPAM as calico_ipam's first scan sees it, read-only: leaked addresses
//! per node and orphaned handles (candidates: calico_ipam confirms each with a second scan
//! before it releases anything), each pool's use, and what calico_ipam never fixes.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Check, Outcome, Run, reason};
use crate::actions::Action as _;
use crate::actions::calico_ipam::scan::{Findings, Note};
use crate::actions::calico_ipam::{self, CalicoIpam};
use crate::actions::diagnose::Diagnose;
use crate::actions::diagnose::report::{Finding, Severity, finding, fix};
use crate::k8s::duration::Duration;

/// Pool use from which a pool gets a warning, and a critical finding, in percent.
const POOL_WARNING: f64 = 85.0;
const POOL_CRITICAL: f64 = 95.0;

/// How many addresses or handles a finding names in its data (the count is whole).
const NAMED: usize = 20;

/// Runs the check: calico_ipam's own scan, nothing released.
pub(super) async fn run(d: &Diagnose, run: &mut Run<'_>) -> Outcome {
    match calico_ipam::survey(&run.cx.cluster, &d.ipam_min_age)
        .await
        .map_err(reason)?
    {
        Some((resources, found)) => Ok(ipam_findings(
            resources.api_version(),
            &found,
            &d.ipam_min_age,
        )),
        None => Err(
            "Calico's IPAM is not served by the API server (no Calico, or Calico \
                     with etcd as its datastore)"
                .into(),
        ),
    }
}

/// The findings of one scan.
#[must_use]
pub fn ipam_findings(api_version: &str, found: &Findings, min_age: &Duration) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut summary = finding(
        Check::CalicoIpam,
        Severity::Info,
        "ipam".into(),
        format!(
            "{} block(s), {} allocation(s), {} handle(s) in {api_version}: {} leaked address(es), \
             {} orphaned handle(s)",
            found.blocks,
            found.allocations,
            found.handles,
            found.leaked.len(),
            found.orphaned.len()
        ),
    );
    summary
        .data
        .insert("leaked".into(), json!(found.leaked.len()));
    summary
        .data
        .insert("orphaned_handles".into(), json!(found.orphaned.len()));
    summary
        .data
        .insert("allocations".into(), json!(found.allocations));
    summary.data.insert("handles".into(), json!(found.handles));
    findings.push(summary);

    leak_findings(found, &mut findings);
    orphan_findings(found, min_age, &mut findings);
    pool_findings(found, &mut findings);
    never_fixed_findings(found, &mut findings);
    findings
}

/// A warning per node with leaked addresses.
fn leak_findings(found: &Findings, findings: &mut Vec<Finding>) {
    let mut per_node: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for leak in &found.leaked {
        per_node
            .entry(leak.node.as_deref().unwrap_or("unknown"))
            .or_default()
            .push(leak.ip.as_str());
    }
    for (node, ips) in per_node {
        let mut f = finding(
            Check::CalicoIpam,
            Severity::Warning,
            format!("node/{node}"),
            format!(
                "{} Calico address(es) allocated on {node} that nothing uses and whose pod is \
                 gone or finished, e.g. {}",
                ips.len(),
                ips.iter().take(3).copied().collect::<Vec<_>>().join(", ")
            ),
        );
        f.hint = "leaked by a CNI DEL that never completed (a crash, an apiserver error such as \
                  `database is locked`); they shrink the node's free addresses and grow the \
                  datastore. calico_ipam releases them after a second scan confirms each"
            .into();
        f.fix = Some(fix(CalicoIpam::NAME, &json!({})));
        f.data.insert("node".into(), json!(node));
        f.data.insert("count".into(), json!(ips.len()));
        f.data.insert(
            "ips".into(),
            json!(ips.iter().take(NAMED).collect::<Vec<_>>()),
        );
        findings.push(f);
    }
}

/// A warning for the orphaned handles.
fn orphan_findings(found: &Findings, min_age: &Duration, findings: &mut Vec<Finding>) {
    if !found.orphaned.is_empty() {
        let mut f = finding(
            Check::CalicoIpam,
            Severity::Warning,
            "ipamhandles".into(),
            format!(
                "{} IPAM handle(s) older than {min_age} that no allocation references, e.g. {}",
                found.orphaned.len(),
                found
                    .orphaned
                    .iter()
                    .take(3)
                    .map(|o| o.handle.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        f.hint = "left by a release interrupted between the block and the handle; no Calico \
                  release removes them (projectcalico/calico#8548) and each is an object in the \
                  datastore. calico_ipam deletes them after a second scan confirms each"
            .into();
        f.fix = Some(fix(CalicoIpam::NAME, &json!({})));
        f.data.insert("count".into(), json!(found.orphaned.len()));
        f.data.insert(
            "handles".into(),
            json!(
                found
                    .orphaned
                    .iter()
                    .take(NAMED)
                    .map(|o| &o.handle)
                    .collect::<Vec<_>>()
            ),
        );
        findings.push(f);
    }
}

/// Each pool's use, a warning or critical when nearly full.
fn pool_findings(found: &Findings, findings: &mut Vec<Finding>) {
    for pool in &found.pools {
        let severity = if pool.utilisation_percent >= POOL_CRITICAL {
            Severity::Critical
        } else if pool.utilisation_percent >= POOL_WARNING {
            Severity::Warning
        } else {
            Severity::Info
        };
        let mut f = finding(
            Check::CalicoIpam,
            severity,
            format!("ippool/{}", pool.name),
            format!(
                "{} of {} addresses of {} allocated ({}%), {} of them leaked, in {} block(s)",
                pool.allocated,
                pool.size,
                pool.cidr,
                pool.utilisation_percent,
                pool.leaked,
                pool.blocks
            ),
        );
        if severity != Severity::Info {
            f.hint = "new pods fail to get an address once the pool is full; release the leaked \
                      ones (calico_ipam) or add a pool"
                .into();
            if pool.leaked > 0 {
                f.fix = Some(fix(CalicoIpam::NAME, &json!({})));
            }
        }
        f.data.insert(
            "utilisation_percent".into(),
            json!(pool.utilisation_percent),
        );
        f.data.insert("allocated".into(), json!(pool.allocated));
        f.data.insert("size".into(), json!(pool.size));
        f.data.insert("leaked".into(), json!(pool.leaked));
        findings.push(f);
    }
}

/// What calico_ipam never fixes.
fn never_fixed_findings(found: &Findings, findings: &mut Vec<Finding>) {
    let never_fixed: [(&str, &[Note], Severity, &str); 4] = [
        (
            "in_use_not_allocated",
            &found.in_use_not_allocated,
            Severity::Warning,
            "Calico may hand these addresses to a new pod, which then shares it: find out how \
             the pod got it (another CNI, host-local IPAM) before anything else",
        ),
        (
            "missing_handles",
            &found.missing_handles,
            Severity::Warning,
            "allocations whose IPAMHandle object is missing: calico_ipam releases such an address \
             only when it is leaked, and never creates handles",
        ),
        (
            "invalid_blocks",
            &found.invalid_blocks,
            Severity::Warning,
            "calico_ipam never writes an invalid block and judges no handle while one exists; \
             compare it with Calico's IPAMBlock schema",
        ),
        (
            "empty_blocks_of_deleted_nodes",
            &found.empty_blocks_of_deleted_nodes,
            Severity::Info,
            "calico-kube-controllers releases the blocks of deleted nodes",
        ),
    ];
    for (what, notes, severity, hint) in never_fixed {
        if notes.is_empty() {
            continue;
        }
        let mut f = finding(
            Check::CalicoIpam,
            severity,
            what.into(),
            format!(
                "{} {}: {}",
                notes.len(),
                what.replace('_', " "),
                notes
                    .iter()
                    .take(3)
                    .map(|n| format!("{} ({})", n.object, n.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        );
        f.hint = hint.into();
        f.data.insert("count".into(), json!(notes.len()));
        findings.push(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::calico_ipam::scan::{Leak, Orphan, PoolUse};

    fn leak(ip: &str, node: &str) -> Leak {
        Leak {
            ip: ip.into(),
            block: "10-1-2-0-26".into(),
            block_cidr: "10.1.2.0/26".into(),
            ordinal: 0,
            handle: format!("k8s-pod-network.{ip}"),
            sequence: None,
            node: Some(node.into()),
            pod: Some("ci/gone".into()),
            reason: "its pod ci/gone is gone".into(),
        }
    }

    #[test]
    fn leaks_are_warned_per_node_with_calico_ipam_as_the_fix() {
        let found = Findings {
            leaked: vec![
                leak("10.1.2.5", "k8s02"),
                leak("10.1.2.6", "k8s02"),
                leak("10.1.1.9", "k8s01"),
            ],
            orphaned: vec![Orphan {
                handle: "k8s-pod-network.x".into(),
                name: "k8s-pod-network.x".into(),
                uid: "u".into(),
                resource_version: "1".into(),
                age_seconds: Some(4000),
                blocks: BTreeMap::new(),
            }],
            pools: vec![PoolUse {
                name: "default-ipv4-ippool".into(),
                cidr: "10.1.0.0/16".into(),
                disabled: false,
                size: 65_536,
                blocks: 3,
                allocated: 62_000,
                leaked: 3,
                utilisation_percent: 94.6,
            }],
            ..Findings::default()
        };
        let findings = ipam_findings(
            "crd.projectcalico.org/v1",
            &found,
            &Duration::from_secs(900),
        );
        let by_id = |id: &str| {
            findings
                .iter()
                .find(|f| f.id == id)
                .unwrap_or_else(|| panic!("{id}: {findings:#?}"))
        };
        let k8s02 = by_id("calico_ipam:node/k8s02");
        assert_eq!(k8s02.severity, Severity::Warning);
        assert_eq!(k8s02.data["count"], json!(2));
        assert_eq!(
            k8s02.fix.as_ref().map(|f| f.command.as_str()),
            Some("kubemend calico-ipam")
        );
        assert_eq!(by_id("calico_ipam:node/k8s01").data["count"], json!(1));
        assert_eq!(by_id("calico_ipam:ipamhandles").data["count"], json!(1));
        assert_eq!(
            by_id("calico_ipam:ippool/default-ipv4-ippool").severity,
            Severity::Warning
        );
        let summary = by_id("calico_ipam:ipam");
        assert_eq!(
            (
                summary.data["leaked"].clone(),
                summary.data["orphaned_handles"].clone()
            ),
            (json!(3), json!(1))
        );
    }

    #[test]
    fn a_clean_ipam_has_only_info() {
        let findings = ipam_findings(
            "crd.projectcalico.org/v1",
            &Findings::default(),
            &Duration::from_secs(900),
        );
        assert!(
            findings.iter().all(|f| f.severity == Severity::Info),
            "{findings:#?}"
        );
    }
}
