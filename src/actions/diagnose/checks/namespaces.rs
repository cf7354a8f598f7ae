//! namespaces: namespaces Terminating longer than `terminating_grace`, with what holds each,
//! and unavailable APIServices (aggregated APIs), by stale_apiservice's evidence.
//!
//! For a stuck namespace the namespace controller's conditions are read and explained
//! (`pkg/controller/namespace/deletion/status_condition_utils.go` in kubernetes/kubernetes
//! writes them, each `True` while it holds): `NamespaceDeletionDiscoveryFailure` (discovery
//! failed for some group versions, "Discovery failed for some groups, N failing: ..."; the
//! controller then cannot know the namespace is empty and does not finish),
//! `NamespaceDeletionGroupVersionParsingFailure`, `NamespaceDeletionContentFailure`,
//! `NamespaceContentRemaining` ("Some resources are remaining: <resource>.<group> has N
//! resource instances", the group empty for the core group) and `NamespaceFinalizersRemaining`
//! ("Some finalizers are remaining: <finalizer> in N resource instances"). The blocker is
//! named: the unavailable APIService whose group version the discovery failure names (with
//! stale_apiservice as the fix when its backend is gone, else what its failure points at), or
//! the objects that remain with their finalizers, each finalizer with the controller that
//! removes it where kubemend knows it. Removing a finalizer by hand is never suggested without
//! saying what that skips.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use serde_json::json;

use super::{Check, Outcome, Run, reason};
use crate::actions::Action as _;
use crate::actions::diagnose::Diagnose;
use crate::actions::diagnose::report::{Finding, Severity, finding, fix};
use crate::actions::stale_apiservice::{self, ApiServiceReport, StaleApiService};
use crate::client::Cluster;
use crate::error::Result;
use crate::k8s::duration::{format_duration, seconds_since};
use crate::k8s::objects::Namespace;

/// Objects of one resource named in the evidence; the rest are counted.
const OBJECTS_SHOWN: usize = 5;

/// Resources of one namespace whose remaining objects are read.
const RESOURCES_READ: usize = 10;

/// Runs the check: stale_apiservice's own survey, the namespaces, and for each stuck one the
/// objects its conditions say remain. Nothing is written.
pub(super) async fn run(d: &Diagnose, run: &mut Run<'_>) -> Outcome {
    let cluster = &run.scratch.cluster;
    let apis = stale_apiservice::survey(&run.scratch, &stale_apiservice::default_min_age())
        .await
        .map_err(reason)?;
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let list = namespaces
        .list(&ListParams::default())
        .await
        .map_err(cluster.error("list", "namespaces"))
        .map_err(reason)?;
    let now = Timestamp::now();
    let grace = d.terminating_grace.seconds();
    let mut stuck = Vec::new();
    for ns in &list.items {
        let Some(deleted) = &ns.metadata.deletion_timestamp else {
            continue;
        };
        let terminating = seconds_since(deleted.0, now);
        if terminating <= grace {
            continue;
        }
        let mut namespace = Stuck {
            name: ns.metadata.name.clone().unwrap_or_default(),
            terminating_seconds: terminating,
            conditions: holding_conditions(ns),
            remaining: Vec::new(),
            unread: Vec::new(),
        };
        if let Some(content) = namespace.condition("NamespaceContentRemaining") {
            let resources = remaining_resources(&content.message);
            for (resource, group) in resources.iter().take(RESOURCES_READ) {
                // A resource the caller may not list is named as unread; the check goes on.
                match remaining_objects(cluster, &namespace.name, resource, group).await {
                    Ok(objects) => namespace.remaining.extend(objects),
                    Err(error) => namespace.unread.push(reason(error)),
                }
            }
        }
        stuck.push(namespace);
    }
    let mut findings: Vec<Finding> = stuck
        .iter()
        .map(|s| namespace_finding(s, &apis.apiservices))
        .collect();
    findings.extend(apiservice_findings(&apis.apiservices, &stuck));
    Ok(findings)
}

/// A condition of the namespace controller that holds (status True).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Its type, e.g. `NamespaceDeletionDiscoveryFailure`.
    pub type_: String,
    /// Its reason.
    pub reason: String,
    /// Its message.
    pub message: String,
}

/// An object that remains in a namespace being deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remaining {
    /// `<resource>.<group>`, or `<resource>` for the core group.
    pub resource: String,
    /// Its name.
    pub name: String,
    /// Its finalizers, each with the field manager that wrote it where managedFields tell.
    pub finalizers: Vec<(String, Option<String>)>,
}

/// A namespace Terminating past the grace, and what holds it.
#[derive(Debug, Clone)]
pub struct Stuck {
    /// Its name.
    pub name: String,
    /// Seconds since its deletionTimestamp.
    pub terminating_seconds: i64,
    /// The namespace controller's conditions that hold.
    pub conditions: Vec<Held>,
    /// The objects that remain, as far as read.
    pub remaining: Vec<Remaining>,
    /// Why some of what remains could not be read.
    pub unread: Vec<String>,
}

impl Stuck {
    fn condition(&self, type_: &str) -> Option<&Held> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// The namespace controller's conditions of `ns` that hold (status True).
#[must_use]
pub fn holding_conditions(ns: &Namespace) -> Vec<Held> {
    ns.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.status == "True")
        .map(|c| Held {
            type_: c.type_.clone(),
            reason: c.reason.clone().unwrap_or_default(),
            message: c.message.clone().unwrap_or_default(),
        })
        .collect()
}

/// What a namespace condition means, for people.
#[must_use]
pub fn explain(type_: &str) -> &'static str {
    match type_ {
        "NamespaceDeletionDiscoveryFailure" => {
            "the namespace controller could not discover every API, so it cannot know the \
             namespace is empty and does not finish deleting it"
        }
        "NamespaceDeletionGroupVersionParsingFailure" => {
            "a group version from discovery could not be parsed, so its objects are not deleted"
        }
        "NamespaceDeletionContentFailure" => "deleting some of the namespace's objects failed",
        "NamespaceContentRemaining" => "objects remain in the namespace; it waits for them",
        "NamespaceFinalizersRemaining" => {
            "objects remain because their finalizers have not been removed"
        }
        _ => "a condition kubemend does not know",
    }
}

/// The `(resource, group)` pairs of a `NamespaceContentRemaining` message ("Some resources are
/// remaining: configmaps. has 1 resource instances, widgets.x.test has 2 resource instances").
#[must_use]
pub fn remaining_resources(message: &str) -> Vec<(String, String)> {
    let Some((_, list)) = message.split_once(": ") else {
        return Vec::new();
    };
    list.split(", ")
        .filter_map(|item| item.split_once(" has "))
        .filter_map(|(qualified, _)| {
            let (resource, group) = qualified.split_once('.')?;
            Some((resource.to_owned(), group.to_owned()))
        })
        .collect()
}

/// Who removes a finalizer kubemend knows, and what removing it by hand skips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// The controller that removes it.
    pub controller: &'static str,
    /// What removing it by hand skips or orphans.
    pub orphans: &'static str,
}

/// The controller of a well-known finalizer (kubernetes/kubernetes: pkg/controller/volume/
/// pvcprotection and pvprotection, pkg/controller/garbagecollector, pkg/controller/job,
/// staging/src/k8s.io/apiextensions-apiserver/pkg/controller/finalizer,
/// staging/src/k8s.io/cloud-provider/controllers/service).
#[must_use]
pub fn finalizer_owner(finalizer: &str) -> Option<Owner> {
    let owner = |controller, orphans| {
        Some(Owner {
            controller,
            orphans,
        })
    };
    match finalizer {
        "kubernetes.io/pvc-protection" => owner(
            "kube-controller-manager's pvc-protection controller, once no pod uses the claim",
            "a claim still mounted by a pod: its volume may be released under the pod",
        ),
        "kubernetes.io/pv-protection" => owner(
            "kube-controller-manager's pv-protection controller, once no claim is bound",
            "a volume still bound to a claim",
        ),
        "foregroundDeletion" => owner(
            "kube-controller-manager's garbage collector, once the dependents are deleted",
            "the dependents (blockOwnerDeletion), which are left without their owner",
        ),
        "orphan" => owner(
            "kube-controller-manager's garbage collector, once the dependents are orphaned",
            "nothing is orphaned twice, but the dependents may keep their owner reference",
        ),
        "batch.kubernetes.io/job-tracking" => owner(
            "kube-controller-manager's job controller, once it has counted the pod",
            "the job's count of finished pods",
        ),
        "customresourcecleanup.apiextensions.k8s.io" => owner(
            "the apiextensions API server, once every object of the CRD is deleted",
            "the CRD's stored objects, which come back if the CRD is created again",
        ),
        "service.kubernetes.io/load-balancer-cleanup" => owner(
            "the cloud controller manager's service controller, once the load balancer is gone",
            "the cloud load balancer, which keeps running (and costing)",
        ),
        _ => None,
    }
}

/// The field manager that wrote `finalizer` into an object, from its managedFields.
fn finalizer_writer(object: &DynamicObject, finalizer: &str) -> Option<String> {
    let key = format!("v:{}", json!(finalizer));
    object
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find_map(|entry| {
            let fields = entry.fields_v1.as_ref()?;
            let set = fields.0.get("f:metadata")?.get("f:finalizers")?;
            set.get(&key)?;
            entry.manager.clone()
        })
}

/// The version to list a group's objects at, from its APIGroup document: the preferred one,
/// else the first served.
fn preferred_version(group: &serde_json::Value) -> String {
    group["preferredVersion"]["version"]
        .as_str()
        .or_else(|| group["versions"][0]["version"].as_str())
        .unwrap_or("v1")
        .to_owned()
}

/// The objects of `resource` (of `group`) that remain in `namespace`, with their finalizers.
async fn remaining_objects(
    cluster: &Cluster,
    namespace: &str,
    resource: &str,
    group: &str,
) -> Result<Vec<Remaining>> {
    let qualified = if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    };
    let version = if group.is_empty() {
        "v1".to_owned()
    } else {
        let request = http::Request::get(format!("/apis/{group}"))
            .body(Vec::new())
            .map_err(|e| crate::error::Error::Internal {
                message: format!("failed to build the discovery request of {group}: {e}"),
            })?;
        // An APIGroup, read untyped (its fields are two): a typed parser costs binary size.
        let found: serde_json::Value = cluster
            .client
            .request(request)
            .await
            .map_err(cluster.error("get", format!("API group {group} (discovery)")))?;
        preferred_version(&found)
    };
    let api_version = if group.is_empty() {
        version.clone()
    } else {
        format!("{group}/{version}")
    };
    let kind = ApiResource {
        group: group.to_owned(),
        version,
        api_version,
        kind: String::new(),
        plural: resource.to_owned(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(cluster.client.clone(), namespace, &kind);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(cluster.error(
            "list",
            format!("{qualified} in namespace {namespace} (what remains)"),
        ))?;
    Ok(list
        .items
        .iter()
        .map(|object| Remaining {
            resource: qualified.clone(),
            name: object.metadata.name.clone().unwrap_or_default(),
            finalizers: object
                .metadata
                .finalizers
                .iter()
                .flatten()
                .map(|f| (f.clone(), finalizer_writer(object, f)))
                .collect(),
        })
        .collect())
}

/// The unavailable APIServices whose group version a discovery failure names.
#[must_use]
pub fn blocking_apiservices<'a>(
    discovery: &str,
    apis: &'a [ApiServiceReport],
) -> Vec<&'a ApiServiceReport> {
    apis.iter()
        .filter(|a| a.is_unavailable())
        .filter(|a| discovery.contains(&format!("{}:", a.group_version)))
        .collect()
}

/// What to do about an unavailable APIService, and the stale_apiservice fix when its backend is
/// gone.
fn remedy(api: &ApiServiceReport) -> (String, Option<serde_json::Value>) {
    match api.verdict.as_str() {
        "stale" => (
            format!(
                "delete APIService {} with stale_apiservice: its backend is gone (a backup is \
                 returned and, with backup_dir, written)",
                api.name
            ),
            Some(json!({"name": api.name})),
        ),
        "recently unavailable" => (
            format!(
                "its backend is gone; stale_apiservice deletes APIService {} once it has been \
                 unavailable for min_age ({}), or fix the backend",
                api.name,
                stale_apiservice::default_min_age()
            ),
            Some(json!({"name": api.name})),
        ),
        _ if !api.hint.is_empty() => (format!("APIService {}: {}", api.name, api.hint), None),
        _ => (
            format!(
                "APIService {}: the aggregator cannot reach its backend; fix the backend",
                api.name
            ),
            None,
        ),
    }
}

/// One remaining object and its finalizers, with who wrote each.
fn remaining_evidence(object: &Remaining) -> String {
    let finalizers: Vec<String> = object
        .finalizers
        .iter()
        .map(|(f, writer)| match writer {
            Some(writer) => format!("{f} (written by {writer})"),
            None => f.clone(),
        })
        .collect();
    if finalizers.is_empty() {
        format!(
            "{} {} remains, without finalizers",
            object.resource, object.name
        )
    } else {
        format!(
            "{} {} remains, held by finalizer(s) {}",
            object.resource,
            object.name,
            finalizers.join(", ")
        )
    }
}

/// Per finalizer of the remaining objects: who removes it, and what removing it by hand skips.
fn finalizer_hints(remaining: &[Remaining]) -> Vec<String> {
    let mut by_finalizer: BTreeMap<&str, Vec<&Remaining>> = BTreeMap::new();
    for object in remaining {
        for (finalizer, _) in &object.finalizers {
            by_finalizer.entry(finalizer).or_default().push(object);
        }
    }
    let mut hints = Vec::new();
    for (finalizer, objects) in &by_finalizer {
        let names: Vec<String> = objects
            .iter()
            .take(OBJECTS_SHOWN)
            .map(|o| format!("{} {}", o.resource, o.name))
            .collect();
        let more = objects.len().saturating_sub(OBJECTS_SHOWN);
        let names = if more > 0 {
            format!("{} and {more} more", names.join(", "))
        } else {
            names.join(", ")
        };
        hints.push(match finalizer_owner(finalizer) {
            Some(owner) => format!(
                "finalizer {finalizer} on {names} is removed by {}; make that happen. Removing \
                 it by hand skips that controller: {}",
                owner.controller, owner.orphans
            ),
            None => format!(
                "finalizer {finalizer} on {names}: no controller kubemend knows removes it; the \
                 one that added it (see who wrote it) must run and remove it. Removing it by \
                 hand skips that controller's cleanup and orphans whatever it guards (objects \
                 outside the cluster included)"
            ),
        });
    }
    hints
}

/// A finding for a namespace stuck Terminating: its conditions explained and what holds it.
#[must_use]
pub fn namespace_finding(ns: &Stuck, apis: &[ApiServiceReport]) -> Finding {
    let mut evidence = vec![format!(
        "Terminating for {}",
        format_duration(ns.terminating_seconds)
    )];
    for held in &ns.conditions {
        evidence.push(format!(
            "{} ({}): {}; {}",
            held.type_,
            held.reason,
            explain(&held.type_),
            held.message
        ));
    }
    let mut hints = Vec::new();
    let mut fixes = Vec::new();
    let blockers = ns
        .condition("NamespaceDeletionDiscoveryFailure")
        .map(|c| blocking_apiservices(&c.message, apis))
        .unwrap_or_default();
    for api in &blockers {
        evidence.push(format!(
            "held by APIService {} ({}): {}",
            api.name, api.verdict, api.evidence
        ));
        let (hint, options) = remedy(api);
        hints.push(hint);
        fixes.extend(options);
    }
    evidence.extend(ns.remaining.iter().map(remaining_evidence));
    evidence.extend(ns.unread.iter().map(|why| format!("not read: {why}")));
    hints.extend(finalizer_hints(&ns.remaining));
    if ns.conditions.is_empty() {
        hints.push(
            "the namespace controller has written no condition yet: check that \
             kube-controller-manager runs and holds its leader Lease"
                .into(),
        );
    } else if hints.is_empty() {
        hints.push(
            "read the conditions above: the namespace controller retries until they clear".into(),
        );
    }
    let mut f = finding(
        Check::Namespaces,
        Severity::Warning,
        format!("namespace/{}", ns.name),
        evidence.join("; "),
    );
    f.hint = hints.join("; ");
    f.fix = fixes.first().map(|o| fix(StaleApiService::NAME, o));
    f.data
        .insert("terminating_seconds".into(), json!(ns.terminating_seconds));
    f.data.insert(
        "conditions".into(),
        json!(
            ns.conditions
                .iter()
                .map(|c| (c.type_.clone(), json!(c.reason)))
                .collect::<serde_json::Map<_, _>>()
        ),
    );
    f.data.insert(
        "blocking_apiservices".into(),
        json!(blockers.iter().map(|a| &a.name).collect::<Vec<_>>()),
    );
    f.data.insert(
        "remaining".into(),
        json!(
            ns.remaining
                .iter()
                .map(|o| json!({
                    "resource": o.resource,
                    "name": o.name,
                    "finalizers": o.finalizers.iter().map(|(f, _)| f).collect::<Vec<_>>(),
                }))
                .collect::<Vec<_>>()
        ),
    );
    f
}

/// A finding per unavailable APIService: stale (its backend gone past min_age) is critical with
/// stale_apiservice as the fix, the others warnings; each names the namespaces it holds.
#[must_use]
pub fn apiservice_findings(apis: &[ApiServiceReport], stuck: &[Stuck]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for api in apis.iter().filter(|a| a.is_unavailable()) {
        let held: Vec<&str> = stuck
            .iter()
            .filter(|ns| {
                ns.condition("NamespaceDeletionDiscoveryFailure")
                    .is_some_and(|c| {
                        !blocking_apiservices(&c.message, std::slice::from_ref(api)).is_empty()
                    })
            })
            .map(|ns| ns.name.as_str())
            .collect();
        let mut evidence = format!("{} ({}): {}", api.group_version, api.verdict, api.evidence);
        if !held.is_empty() {
            let _ = write!(
                evidence,
                "; holds namespace(s) {} in Terminating",
                held.join(", ")
            );
        }
        let mut f = finding(
            Check::Namespaces,
            if api.is_stale() {
                Severity::Critical
            } else {
                Severity::Warning
            },
            format!("apiservice/{}", api.name),
            evidence,
        );
        let (hint, options) = remedy(api);
        f.hint = format!(
            "{hint}; while it is unavailable, no namespace finishes deleting and discovery of \
             {} fails for every client",
            api.group_version
        );
        f.fix = options.map(|o| fix(StaleApiService::NAME, &o));
        f.data.insert("uid".into(), json!(api.uid));
        f.data.insert("verdict".into(), json!(api.verdict));
        f.data.insert("reason".into(), json!(api.reason));
        f.data.insert("message".into(), json!(api.message));
        f.data.insert("for_seconds".into(), json!(api.for_seconds));
        f.data.insert("service".into(), json!(api.service));
        f.data.insert("points_at".into(), json!(api.points_at));
        f.data.insert("namespaces".into(), json!(held));
        findings.push(f);
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(name: &str, verdict: &str) -> ApiServiceReport {
        let (version, group) = name.split_once('.').unwrap();
        ApiServiceReport {
            name: name.into(),
            uid: "u1".into(),
            group_version: format!("{group}/{version}"),
            service: Some("ns/svc:443".into()),
            available: "False".into(),
            reason: "MissingEndpoints".into(),
            verdict: verdict.into(),
            evidence: "Available=False; service ns/svc has no ready endpoint for port 443".into(),
            ..ApiServiceReport::default()
        }
    }

    const DISCOVERY: &str = "Discovery failed for some groups, 1 failing: unable to retrieve \
                             the complete list of server APIs: x.kubemend.test/v1: stale \
                             GroupVersion discovery: x.kubemend.test/v1";

    fn stuck(conditions: Vec<Held>, remaining: Vec<Remaining>) -> Stuck {
        Stuck {
            name: "doomed".into(),
            terminating_seconds: 900,
            conditions,
            remaining,
            unread: Vec::new(),
        }
    }

    fn held(type_: &str, message: &str) -> Held {
        Held {
            type_: type_.into(),
            reason: "r".into(),
            message: message.into(),
        }
    }

    #[test]
    fn the_remaining_resources_are_read_from_the_controllers_message() {
        assert_eq!(
            remaining_resources(
                "Some resources are remaining: configmaps. has 1 resource instances, \
                 widgets.x.kubemend.test has 2 resource instances"
            ),
            [
                ("configmaps".to_owned(), String::new()),
                ("widgets".to_owned(), "x.kubemend.test".to_owned())
            ]
        );
        assert!(remaining_resources("All content successfully removed").is_empty());
    }

    #[test]
    fn a_discovery_failure_names_the_unavailable_apiservice_of_its_group_version() {
        let apis = [
            api("v1.x.kubemend.test", "stale"),
            api("v1.y.kubemend.test", "stale"),
        ];
        let blockers = blocking_apiservices(DISCOVERY, &apis);
        assert_eq!(blockers.len(), 1);
        assert_eq!(blockers[0].name, "v1.x.kubemend.test");
        let mut available = api("v1.x.kubemend.test", "available");
        available.available = "True".into();
        assert!(blocking_apiservices(DISCOVERY, &[available]).is_empty());
    }

    #[test]
    fn a_namespace_held_by_a_stale_apiservice_names_it_and_stale_apiservice_fixes_it() {
        let apis = [api("v1.x.kubemend.test", "stale")];
        let ns = stuck(
            vec![held("NamespaceDeletionDiscoveryFailure", DISCOVERY)],
            vec![],
        );
        let f = namespace_finding(&ns, &apis);
        assert_eq!(f.id, "namespaces:namespace/doomed");
        assert!(f.evidence.contains("Terminating for 15m"), "{}", f.evidence);
        assert!(
            f.evidence.contains("held by APIService v1.x.kubemend.test"),
            "{}",
            f.evidence
        );
        assert!(f.evidence.contains("cannot know the namespace is empty"));
        let fix = f.fix.unwrap();
        assert_eq!(fix.module, "stale_apiservice");
        assert_eq!(fix.options["name"], "v1.x.kubemend.test");
        assert_eq!(
            f.data["blocking_apiservices"],
            json!(["v1.x.kubemend.test"])
        );
        let found = apiservice_findings(&apis, std::slice::from_ref(&ns));
        assert_eq!(found[0].severity, Severity::Critical);
        assert!(found[0].evidence.contains("holds namespace(s) doomed"));
    }

    #[test]
    fn a_failing_backend_is_a_warning_that_points_at_its_cause_without_a_fix() {
        let mut failing = api("v1.x.kubemend.test", "failing");
        failing.hint = stale_apiservice::Cause::Certificates.hint().into();
        let ns = stuck(
            vec![held("NamespaceDeletionDiscoveryFailure", DISCOVERY)],
            vec![],
        );
        let f = namespace_finding(&ns, std::slice::from_ref(&failing));
        assert!(f.fix.is_none());
        assert!(f.hint.contains("front-proxy"), "{}", f.hint);
        let found = apiservice_findings(&[failing], &[]);
        assert_eq!(found[0].severity, Severity::Warning);
        assert!(found[0].fix.is_none());
    }

    #[test]
    fn a_namespace_held_by_a_finalizer_names_the_object_and_what_removing_it_skips() {
        let content = "Some resources are remaining: configmaps. has 1 resource instances";
        let remaining = Remaining {
            resource: "configmaps".into(),
            name: "held".into(),
            finalizers: vec![("kubemend.test/hold".into(), Some("kubemend-test".into()))],
        };
        let ns = stuck(
            vec![
                held("NamespaceContentRemaining", content),
                held(
                    "NamespaceFinalizersRemaining",
                    "Some finalizers are remaining: kubemend.test/hold in 1 resource instances",
                ),
            ],
            vec![remaining],
        );
        let f = namespace_finding(&ns, &[]);
        assert!(
            f.evidence.contains(
                "configmaps held remains, held by finalizer(s) kubemend.test/hold (written by \
                 kubemend-test)"
            ),
            "{}",
            f.evidence
        );
        assert!(
            f.hint.contains("no controller kubemend knows"),
            "{}",
            f.hint
        );
        assert!(f.hint.contains("orphans"), "{}", f.hint);
        assert!(f.fix.is_none());
        let known = finalizer_owner("kubernetes.io/pvc-protection").unwrap();
        assert!(known.controller.contains("pvc-protection"));
        assert!(finalizer_owner("kubemend.test/hold").is_none());
    }

    #[test]
    fn only_available_false_apiservices_are_findings() {
        let mut available = api("v1.x.kubemend.test", "available");
        available.available = "True".into();
        let mut local = api("v1.apps", "local");
        local.available = "True".into();
        assert!(apiservice_findings(&[available, local], &[]).is_empty());
        let recent = apiservice_findings(&[api("v1.x.kubemend.test", "recently unavailable")], &[]);
        assert_eq!(recent[0].severity, Severity::Warning);
        assert!(recent[0].fix.is_some());
    }

    #[test]
    fn objects_are_listed_at_the_groups_preferred_version() {
        let group = json!({"kind": "APIGroup", "name": "x.kubemend.test",
            "versions": [{"groupVersion": "x.kubemend.test/v2", "version": "v2"},
                         {"groupVersion": "x.kubemend.test/v1", "version": "v1"}],
            "preferredVersion": {"groupVersion": "x.kubemend.test/v1", "version": "v1"}});
        assert_eq!(preferred_version(&group), "v1");
        let unpreferred = json!({"versions": [{"version": "v1beta1"}]});
        assert_eq!(preferred_version(&unpreferred), "v1beta1");
    }

    #[test]
    fn the_writer_of_a_finalizer_is_read_from_managed_fields() {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "held", "finalizers": ["kubemend.test/hold"],
                "managedFields": [
                    {"manager": "other", "operation": "Update", "fieldsType": "FieldsV1",
                     "fieldsV1": {"f:data": {}}},
                    {"manager": "kubemend-test", "operation": "Update", "fieldsType": "FieldsV1",
                     "fieldsV1": {"f:metadata": {"f:finalizers": {
                         ".": {}, "v:\"kubemend.test/hold\"": {}}}}}
                ]}
        }))
        .unwrap();
        assert_eq!(
            finalizer_writer(&object, "kubemend.test/hold").as_deref(),
            Some("kubemend-test")
        );
        assert_eq!(finalizer_writer(&object, "other/thing"), None);
    }
}
