//! Who owns an object kubemend would change or delete, and what then happens to the change.
//!
//! An in-cluster fix lasts only as long as whatever manages the object lets it. The owner is
//! read from the object's own metadata, the traces each tool leaves:
//! - Argo CD: the `argocd.argoproj.io/tracking-id` annotation (`<app>:<group>/<kind>:<ns>/<name>`,
//!   the default tracking since Argo CD 3.0), else the `app.kubernetes.io/instance` label (label
//!   tracking, the earlier default; other tools set that label too, so it is named as likely).
//! - Flux: the `kustomize.toolkit.fluxcd.io/name`/`namespace` labels of a Kustomization, or the
//!   `helm.toolkit.fluxcd.io/name`/`namespace` labels of a HelmRelease.
//! - Helm: the `meta.helm.sh/release-name`/`release-namespace` annotations.
//! - `kubectl apply` (client-side): the `kubectl.kubernetes.io/last-applied-configuration`
//!   annotation; on microk8s without a GitOps tool that is how its add-ons are applied (Calico's
//!   manifest is the node's `args/cni-network/cni.yaml`, applied again when microk8s' `cni-loaded`
//!   lock is removed).
//! - A controller: an ownerReference with `controller: true` (a ReplicaSet's pod): labels it
//!   inherited from a template do not make it the GitOps tool's.
//!
//! Without those marks, a field manager in `managedFields` of one of those tools
//! (`argocd-controller`, `kustomize-controller`, `helm-controller`, `helm`) names it; every
//! manager is listed beside the owner. What happens to kubemend's change
//! depends on the owner and on how the change is written ([`Change`]): a list without a merge
//! key (a ClusterRole's `rules`) is replaced whole by strategic merge and by server-side apply.
//! The consequences, with their sources:
//! - Argo CD compares the live object with Git in a three-way diff that "report[s] differences
//!   only if field value conflicts with value defined in git or in last-applied-configuration"
//!   (argoproj/argo-cd#1613): a PUT that leaves last-applied alone may not show, and the next
//!   sync of the object (at the latest when Git changes it) reverts it, as its sync is a
//!   `kubectl apply`; with Server-Side Diff it is detected and reverted. A change that records
//!   last-applied shows as OutOfSync and the next sync (at once with selfHeal) reverts it. A
//!   deleted object is re-created by the next sync.
//! - Flux's kustomize-controller applies the object server-side on every reconcile: any change
//!   is reverted, and a deleted object re-created, within its interval.
//! - Helm writes the chart's object again at the next upgrade.
//! - A later `kubectl apply` of the manifest sets every field the manifest names to the
//!   manifest's value (its three-way merge takes what to delete from last-applied, what to set
//!   from the manifest against the live object), so applying the unfixed manifest reverts the
//!   fix however it was written (tests/gitops.rs shows it on a real apiserver).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::JsonSchema;
use serde::Serialize;

/// Argo CD's annotation tracking (the default since Argo CD 3.0).
pub const ARGO_TRACKING_ID: &str = "argocd.argoproj.io/tracking-id";
/// Argo CD's label tracking (the default before 3.0; also set by many Helm charts).
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// Flux kustomize-controller's ownership labels.
pub const FLUX_KUSTOMIZE_NAME: &str = "kustomize.toolkit.fluxcd.io/name";
/// Flux kustomize-controller's ownership labels.
pub const FLUX_KUSTOMIZE_NAMESPACE: &str = "kustomize.toolkit.fluxcd.io/namespace";
/// Flux helm-controller's ownership labels.
pub const FLUX_HELM_NAME: &str = "helm.toolkit.fluxcd.io/name";
/// Flux helm-controller's ownership labels.
pub const FLUX_HELM_NAMESPACE: &str = "helm.toolkit.fluxcd.io/namespace";
/// Helm's release annotations.
pub const HELM_RELEASE_NAME: &str = "meta.helm.sh/release-name";
/// Helm's release annotations.
pub const HELM_RELEASE_NAMESPACE: &str = "meta.helm.sh/release-namespace";
/// `kubectl apply`'s record of what it applied last.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// How kubemend changes the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A PUT that leaves `last-applied-configuration` alone (kubemend's default).
    Update,
    /// A PUT that also records the new object as `last-applied-configuration`, as `kubectl
    /// apply` would.
    UpdateRecorded,
    /// A delete.
    Delete,
}

/// The tool that manages the object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Manager {
    /// Argo CD, by its tracking annotation.
    ArgoCd,
    /// Probably Argo CD: only the `app.kubernetes.io/instance` label, which other tools set too.
    ArgoCdLikely,
    /// Flux (kustomize-controller or helm-controller).
    Flux,
    /// Helm (a release).
    Helm,
    /// `kubectl apply` (client-side), e.g. a microk8s add-on's manifest.
    KubectlApply,
    /// A controller, by the object's controller ownerReference.
    Controller,
    /// Nothing that would write it again.
    None,
}

/// Who owns an object and what happens to kubemend's change of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Ownership {
    /// The object, as C(kind namespace/name) or C(kind name).
    pub object: String,
    /// The tool that manages it.
    pub owner: Manager,
    /// Which application, Kustomization, HelmRelease, release or controller, as
    /// C(namespace/name) where it has a namespace.
    pub owned_by: Option<String>,
    /// The metadata that says so (annotation or label and its value).
    pub evidence: Option<String>,
    /// The field managers in managedFields, as C(manager (operation)).
    pub managers: Vec<String>,
    /// What will happen to kubemend's change.
    pub consequence: String,
}

impl Ownership {
    /// Whether the change will not last, or goes unseen by the owner: worth a warning.
    #[must_use]
    pub fn at_risk(&self) -> bool {
        !matches!(self.owner, Manager::None | Manager::Controller)
    }

    /// A warning line for the action's report.
    #[must_use]
    pub fn warning(&self) -> String {
        format!("{}: {}", self.object, self.consequence)
    }
}

/// Reads the owner of the object with metadata `meta` (named `object` in reports) and states
/// what happens to a `change` of it.
#[must_use]
pub fn of(object: &str, meta: &ObjectMeta, change: Change) -> Ownership {
    let annotations = meta.annotations.clone().unwrap_or_default();
    let labels = meta.labels.clone().unwrap_or_default();
    let (owner, owned_by, evidence) = owner(meta, &annotations, &labels);
    let managers = meta
        .managed_fields
        .iter()
        .flatten()
        .map(|m| {
            let name = m.manager.as_deref().unwrap_or("(no manager)");
            match m.operation.as_deref() {
                Some(op) => format!("{name} ({op})"),
                None => name.to_owned(),
            }
        })
        .collect();
    let consequence = consequence(
        &owner,
        owned_by.as_deref(),
        change,
        annotations.contains_key(LAST_APPLIED),
    );
    Ownership {
        object: object.to_owned(),
        owner,
        owned_by,
        evidence,
        managers,
        consequence,
    }
}

/// [`of`] for an object held as JSON (its `metadata`; none readable: no owner is found).
#[must_use]
pub fn of_json(object: &str, value: &serde_json::Value, change: Change) -> Ownership {
    let meta: ObjectMeta = serde_json::from_value(value["metadata"].clone()).unwrap_or_default();
    of(object, &meta, change)
}

fn owner(
    meta: &ObjectMeta,
    annotations: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> (Manager, Option<String>, Option<String>) {
    if let Some(controller) = meta
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
    {
        return (
            Manager::Controller,
            Some(format!("{} {}", controller.kind, controller.name)),
            Some(format!(
                "ownerReference {} {} (controller)",
                controller.kind, controller.name
            )),
        );
    }
    if let Some(id) = annotations.get(ARGO_TRACKING_ID) {
        // <app>:<group>/<kind>:<namespace>/<name>; an app outside argocd's namespace is
        // <namespace>_<app>.
        let app = id
            .split(':')
            .next()
            .unwrap_or_default()
            .replacen('_', "/", 1);
        return (
            Manager::ArgoCd,
            Some(app),
            Some(format!("annotation {ARGO_TRACKING_ID}={id}")),
        );
    }
    for (name_key, namespace_key) in [
        (FLUX_KUSTOMIZE_NAME, FLUX_KUSTOMIZE_NAMESPACE),
        (FLUX_HELM_NAME, FLUX_HELM_NAMESPACE),
    ] {
        if let Some(name) = labels.get(name_key) {
            let namespace = labels.get(namespace_key).map_or("", String::as_str);
            let kind = if name_key == FLUX_HELM_NAME {
                "HelmRelease"
            } else {
                "Kustomization"
            };
            return (
                Manager::Flux,
                Some(format!("{kind} {namespace}/{name}")),
                Some(format!("label {name_key}={name}")),
            );
        }
    }
    if let Some(release) = annotations.get(HELM_RELEASE_NAME) {
        let namespace = annotations
            .get(HELM_RELEASE_NAMESPACE)
            .map_or("", String::as_str);
        return (
            Manager::Helm,
            Some(format!("{namespace}/{release}")),
            Some(format!("annotation {HELM_RELEASE_NAME}={release}")),
        );
    }
    // Without those marks, the field managers of server-side applies and Helm's own writes.
    for entry in meta.managed_fields.iter().flatten() {
        let manager = entry.manager.as_deref().unwrap_or_default();
        let owner = match manager {
            "argocd-controller" => Manager::ArgoCd,
            "kustomize-controller" | "helm-controller" => Manager::Flux,
            "helm" => Manager::Helm,
            _ => continue,
        };
        return (
            owner,
            None,
            Some(format!("managedFields manager {manager}")),
        );
    }
    if let Some(instance) = labels.get(INSTANCE_LABEL) {
        return (
            Manager::ArgoCdLikely,
            Some(instance.clone()),
            Some(format!("label {INSTANCE_LABEL}={instance}")),
        );
    }
    if annotations.contains_key(LAST_APPLIED) {
        return (
            Manager::KubectlApply,
            None,
            Some(format!("annotation {LAST_APPLIED}")),
        );
    }
    (Manager::None, None, None)
}

fn consequence(
    owner: &Manager,
    owned_by: Option<&str>,
    change: Change,
    last_applied: bool,
) -> String {
    let by = owned_by.map(|o| format!(" ({o})")).unwrap_or_default();
    let argo = |who: &str| match change {
        Change::Update => format!(
            "managed by {who}{by}: its default diff compares with last-applied-configuration, \
             which this change leaves alone, so it may not show it (argoproj/argo-cd#1613), and \
             the next sync of this object, at the latest when Git changes it, applies Git's \
             version and reverts it (with Server-Side Diff it shows as OutOfSync and selfHeal \
             reverts it at once). Commit the fix to Git (calico_rbac's gitops option emits it)"
        ),
        Change::UpdateRecorded => format!(
            "managed by {who}{by}: this change records last-applied-configuration, so the \
             application shows OutOfSync and its next sync (at once with selfHeal) reverts it \
             unless the fix is in Git"
        ),
        Change::Delete => format!(
            "managed by {who}{by}: the next sync (at once with selfHeal) creates it again unless \
             it is removed from Git"
        ),
    };
    match owner {
        Manager::ArgoCd => argo("Argo CD"),
        Manager::ArgoCdLikely => {
            argo("Argo CD (label tracking, or another tool that sets app.kubernetes.io/instance)")
        }
        Manager::Flux => match change {
            Change::Delete => format!(
                "managed by Flux{by}: its next reconcile creates it again unless it is removed \
                 from the source"
            ),
            _ => format!(
                "managed by Flux{by}: it applies the object server-side on every reconcile, so \
                 this change is reverted within the Kustomization's interval unless the fix is \
                 in the source"
            ),
        },
        Manager::Helm => match change {
            Change::Delete => {
                format!("installed by Helm{by}: the next upgrade of the release creates it again")
            }
            _ => format!(
                "installed by Helm{by}: the next upgrade of the release writes the chart's \
                 version again, without this change, unless the chart or its values carry it"
            ),
        },
        Manager::KubectlApply => match (change, last_applied) {
            (Change::Delete, _) => "applied with kubectl apply: applying its manifest again (on \
                 microk8s, an add-on's, e.g. args/cni-network/cni.yaml when the cni-loaded lock \
                 is removed) creates it again"
                .to_owned(),
            (Change::Update, _) => "applied with kubectl apply: applying its manifest again \
                 (on microk8s, an add-on's, e.g. args/cni-network/cni.yaml when the cni-loaded \
                 lock is removed) sets these fields back to the manifest's and reverts it, as \
                 does a server-side apply with --force-conflicts; put the fix in the manifest"
                .to_owned(),
            (Change::UpdateRecorded, _) => "applied with kubectl apply: this change records \
                 last-applied-configuration, so applying the unfixed manifest again reverts it; \
                 put the fix in the manifest"
                .to_owned(),
        },
        Manager::Controller => match change {
            Change::Delete => format!("owned by its controller{by}, which creates a replacement"),
            _ => format!("owned by its controller{by}, which may write it again"),
        },
        Manager::None => {
            "no GitOps tool, Helm release or kubectl apply record: the change lasts".to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, OwnerReference};

    fn meta(annotations: &[(&str, &str)], labels: &[(&str, &str)]) -> ObjectMeta {
        let map = |pairs: &[(&str, &str)]| {
            (!pairs.is_empty()).then(|| {
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect()
            })
        };
        ObjectMeta {
            name: Some("calico-kube-controllers".into()),
            annotations: map(annotations),
            labels: map(labels),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn argo_cd_is_found_by_its_tracking_annotation_with_the_application_named() {
        let m = meta(
            &[(
                ARGO_TRACKING_ID,
                "apps_calico:rbac.authorization.k8s.io/ClusterRole:/calico-kube-controllers",
            )],
            &[],
        );
        let o = of("clusterrole calico-kube-controllers", &m, Change::Update);
        assert_eq!(o.owner, Manager::ArgoCd);
        assert_eq!(o.owned_by.as_deref(), Some("apps/calico"));
        assert!(o.at_risk());
        assert!(
            o.consequence.contains("at the latest when Git changes it"),
            "{}",
            o.consequence
        );
        let recorded = of("x", &m, Change::UpdateRecorded);
        assert!(
            recorded.consequence.contains("OutOfSync"),
            "{}",
            recorded.consequence
        );
        let deleted = of("x", &m, Change::Delete);
        assert!(
            deleted.consequence.contains("creates it again"),
            "{}",
            deleted.consequence
        );
    }

    #[test]
    fn flux_helm_and_kubectl_apply_each_get_their_own_consequence() {
        let flux = of(
            "x",
            &meta(
                &[],
                &[
                    (FLUX_KUSTOMIZE_NAME, "infra"),
                    (FLUX_KUSTOMIZE_NAMESPACE, "flux-system"),
                ],
            ),
            Change::Update,
        );
        assert_eq!(flux.owner, Manager::Flux);
        assert_eq!(
            flux.owned_by.as_deref(),
            Some("Kustomization flux-system/infra")
        );
        assert!(
            flux.consequence.contains("reverted within"),
            "{}",
            flux.consequence
        );
        let helm = of(
            "x",
            &meta(
                &[
                    (HELM_RELEASE_NAME, "calico"),
                    (HELM_RELEASE_NAMESPACE, "tigera"),
                ],
                &[],
            ),
            Change::Update,
        );
        assert_eq!(helm.owner, Manager::Helm);
        assert_eq!(helm.owned_by.as_deref(), Some("tigera/calico"));
        assert!(
            helm.consequence.contains("next upgrade"),
            "{}",
            helm.consequence
        );
        let applied = of("x", &meta(&[(LAST_APPLIED, "{}")], &[]), Change::Update);
        assert_eq!(applied.owner, Manager::KubectlApply);
        assert!(
            applied
                .consequence
                .contains("sets these fields back to the manifest")
        );
        let recorded = of(
            "x",
            &meta(&[(LAST_APPLIED, "{}")], &[]),
            Change::UpdateRecorded,
        );
        assert!(
            recorded.consequence.contains("reverts it"),
            "{}",
            recorded.consequence
        );
    }

    #[test]
    fn helm_wins_over_the_instance_label_it_also_sets_and_the_label_alone_is_only_likely_argo() {
        let helm = of(
            "x",
            &meta(
                &[(HELM_RELEASE_NAME, "calico")],
                &[(INSTANCE_LABEL, "calico")],
            ),
            Change::Update,
        );
        assert_eq!(helm.owner, Manager::Helm);
        let likely = of(
            "x",
            &meta(&[], &[(INSTANCE_LABEL, "calico")]),
            Change::Update,
        );
        assert_eq!(likely.owner, Manager::ArgoCdLikely);
        assert!(likely.at_risk());
    }

    #[test]
    fn a_pod_of_a_controller_is_the_controllers_even_with_template_labels() {
        let mut m = meta(&[], &[(INSTANCE_LABEL, "awx")]);
        m.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "awx-task-5d".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: None,
        }]);
        let o = of("pod awx/x", &m, Change::Delete);
        assert_eq!(o.owner, Manager::Controller);
        assert!(!o.at_risk());
        assert!(o.consequence.contains("replacement"), "{}", o.consequence);
    }

    fn managed(entries: &[(&str, &str)]) -> ObjectMeta {
        let mut m = meta(&[], &[]);
        m.managed_fields = Some(
            entries
                .iter()
                .map(|(manager, operation)| ManagedFieldsEntry {
                    manager: Some((*manager).into()),
                    operation: Some((*operation).into()),
                    ..ManagedFieldsEntry::default()
                })
                .collect(),
        );
        m
    }

    #[test]
    fn a_server_side_applying_tool_is_found_by_its_field_manager_alone() {
        let m = managed(&[
            ("kubectl-client-side-apply", "Update"),
            ("kustomize-controller", "Apply"),
        ]);
        let o = of("x", &m, Change::Update);
        assert_eq!(
            o.managers,
            [
                "kubectl-client-side-apply (Update)",
                "kustomize-controller (Apply)"
            ]
        );
        assert_eq!(o.owner, Manager::Flux);
        assert_eq!(
            o.evidence.as_deref(),
            Some("managedFields manager kustomize-controller")
        );
        assert_eq!(
            of(
                "x",
                &managed(&[("argocd-controller", "Apply")]),
                Change::Update
            )
            .owner,
            Manager::ArgoCd
        );
        assert_eq!(
            of("x", &managed(&[("helm", "Update")]), Change::Update).owner,
            Manager::Helm
        );
    }

    #[test]
    fn no_owner_means_the_change_lasts() {
        let o = of(
            "x",
            &managed(&[("kube-apiserver", "Update"), ("kubemend", "Update")]),
            Change::Update,
        );
        assert_eq!(o.owner, Manager::None);
        assert!(!o.at_risk());
        assert!(o.consequence.contains("lasts"), "{}", o.consequence);
    }
}
