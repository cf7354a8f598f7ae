//! calico_rbac: ensures the calico-kube-controllers ClusterRole grants what the running
//! calico-kube-controllers needs.
//!
//! The required rules are derived from what runs, through the per-release rule table of
//! [`crate::calico_rules`] (v3.6.0 to v3.32.1, both datastores): the Calico version from the
//! image tag of the container named `calico-kube-controllers` (else the one whose image
//! repository ends in `kube-controllers`), the datastore from its `DATASTORE_TYPE` and
//! `ETCD_ENDPOINTS`, and the controllers from its `ENABLED_CONTROLLERS`, parsed exactly as that
//! release parses it (unset: the KubeControllersConfiguration `default` from v3.14, else the
//! release's defaults). Options `calico_version`, `enabled_controllers`, `datastore`, `rules`
//! and `extra_rules` override or extend the derivation.
//!
//! # Idempotency
//! Coverage is semantic, like `kubectl auth reconcile`: a required (apiGroup, resource, verb)
//! counts as granted when any existing rule covers it, `*` included. Only the uncovered ones are
//! appended, grouped into readable rules; existing rules are never removed, reordered or
//! rewritten. A second run finds nothing missing and reports `changed: false`.
//!
//! # Concurrency
//! The update carries the resourceVersion that was read; on a conflict the role is read again
//! and the plan recomputed, at most [`MAX_ATTEMPTS`](crate::k8s::retry::MAX_ATTEMPTS) times. A missing role is created.
//!
//! # Restart
//! Added RBAC does not revive a running controller (in v3.13 the workloadendpoint controller
//! retries its first cache load forever without re-checking the error), so when rules were
//! added (option `restart_controller`, default true) the Deployment is restarted as `kubectl
//! rollout restart` does: a strategic merge patch of its pod template's
//! `kubectl.kubernetes.io/restartedAt` annotation, right after the role change. Nothing is
//! restarted when nothing was added; a missing Deployment is warned about, not restarted.
//!
//! # Check mode
//! Same observation and plan; the write is sent as a server-side dry run (nothing stored, the
//! resourceVersion unchanged) to catch admission or permission problems, whose refusal becomes a
//! warning. No SubjectAccessReview verification of the pending change is possible. The
//! Deployment is not patched: `controller_restarted: true` says it would be restarted.
//!
//! # Verification
//! SubjectAccessReviews for the ServiceAccount that runs the controllers (option
//! `service_account`, else the Deployment's, else those bound to the role): before the change
//! for the missing permissions (an "allowed" there means RBAC is not enforced or another binding
//! grants it, and is warned about), and after the change for every required permission
//! (`verified`, `denied`). After a restart, the rollout: the Deployment's status is polled until
//! the controller observed the latest generation, every replica is updated and available, and
//! a pod of the current ReplicaSet is Ready (`controller_pod`). A rollout that does not get
//! there within `restart_timeout` fails the verify step; the role change stays reported.
//!
//! # Errors
//! A ClusterRole with an aggregationRule fails: the aggregation controller would overwrite the
//! rules. A release the table does not list (newer than its last band, or an unknown patch
//! release), a controller name that release exits on (names are exact: `Node`, ` node` or
//! `node,` make it exit), an image tag without a release version, a Deployment without a
//! kube-controllers container, or a missing Deployment (when nothing overrides the derivation)
//! fail before any write, with a hint naming the option that resolves it.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::str::FromStr;

use clap::Args;
use futures::StreamExt as _;
use k8s_openapi::api::authorization::v1::ResourceAttributes;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, ObjectList, Patch, PatchParams, PostParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Action, Context};
use crate::calico_rules::{self, CalicoVersion, Datastore, SourcedRule, TableError};
use crate::client::{Cluster, ClusterArgs};
use crate::error::{Error, Result};
use crate::k8s::FIELD_MANAGER;
use crate::k8s::access;
use crate::k8s::delete::dry_run_refused;
use crate::k8s::duration::Duration;
use crate::k8s::names::{check_label, check_subdomain};
use crate::k8s::objects::{Container, Deployment, Pod, ReplicaSet};
use crate::k8s::ownership::{self, Change, LAST_APPLIED, Ownership};
use crate::k8s::retry::{Attempt, on_conflict};
use crate::outcome::{Diff, Outcome};

/// API group of Calico's CRDs in the Kubernetes datastore.
const CRD: &str = "crd.projectcalico.org";

/// SubjectAccessReviews in flight at once: one per connection the plan's reads opened.
const REVIEWS_AT_ONCE: usize = 3;

/// Ensure the ClusterRole of calico-kube-controllers grants what the running version and its
/// enabled controllers need, adding only the missing permissions.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, Args)]
pub struct Options {
    #[serde(flatten)]
    #[command(flatten)]
    #[allow(missing_docs, reason = "documented field by field in ClusterArgs")]
    pub cluster: ClusterArgs,

    /// Name of the ClusterRole to check and extend (created if absent).
    #[arg(long, value_name = "NAME")]
    #[serde(default = "default_name")]
    pub name: String,

    /// Namespace of the calico-kube-controllers Deployment and of its ServiceAccount.
    #[arg(long, value_name = "NAMESPACE")]
    #[serde(default = "default_namespace")]
    pub namespace: String,

    /// Name of the Deployment running calico-kube-controllers. Its image tag gives the Calico
    /// version and its ENABLED_CONTROLLERS the controllers whose rules are required.
    #[arg(long, value_name = "NAME")]
    #[serde(default = "default_name")]
    pub deployment: String,

    /// Calico version to derive the rules for (e.g. v3.13.2) instead of the Deployment's image
    /// tag: a release the rule table lists (v3.6.0 to v3.32.1).
    #[arg(long, value_name = "VERSION")]
    #[serde(default)]
    pub calico_version: Option<String>,

    /// Controllers to derive the rules for (node, loadbalancer, workloadendpoint, policy,
    /// namespace or its alias profile, serviceaccount) instead of the Deployment's
    /// ENABLED_CONTROLLERS. Checked as that release checks ENABLED_CONTROLLERS: exact lower-case
    /// names (loadbalancer from v3.30).
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    #[serde(default)]
    pub enabled_controllers: Option<Vec<String>>,

    /// Datastore to derive the rules for (kubernetes or etcdv3) instead of the Deployment's
    /// DATASTORE_TYPE and ETCD_ENDPOINTS. Required when the Deployment or its kube-controllers
    /// container is absent and the rules are derived.
    #[arg(long, value_name = "DATASTORE")]
    #[serde(default)]
    pub datastore: Option<String>,

    /// The complete list of required rules, replacing the derivation from version and
    /// controllers. Each rule is a mapping with api_groups, resources and verbs.
    #[arg(long, value_name = "RULE")]
    #[serde(default)]
    pub rules: Option<Vec<RuleSpec>>,

    /// Rules required in addition to the derived ones, e.g.
    /// `{api_groups: [""], resources: [configmaps], verbs: [get]}`.
    #[arg(long, value_name = "RULE")]
    #[serde(default)]
    pub extra_rules: Vec<RuleSpec>,

    /// ServiceAccount (in namespace) whose permissions are verified with SubjectAccessReviews.
    /// Default: the Deployment's ServiceAccount, else every ServiceAccount bound to the role.
    #[arg(long, value_name = "NAME")]
    #[serde(default)]
    pub service_account: Option<String>,

    /// When rules were added, restart the Deployment named by namespace and deployment the way
    /// `kubectl rollout restart` does, then wait (bounded by restart_timeout) until its rollout
    /// is complete and a new pod is Ready. Added RBAC alone does not revive a running
    /// controller: in v3.13 the workloadendpoint controller retries its first cache load
    /// forever without re-checking the error, so it stays broken until its pod restarts.
    /// Nothing is restarted when nothing was added, nor when the Deployment does not exist (a
    /// warning says so). Check mode only reports that it would restart.
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    #[serde(default = "default_true")]
    pub restart_controller: bool,

    /// How long to wait after a restart for the Deployment's rollout to complete and a new
    /// pod to be Ready, e.g. 90s, 5m; the verify step fails when it does not. Must fit within
    /// timeout, which bounds the whole run.
    #[arg(long, value_name = "DURATION")]
    #[serde(default = "default_restart_timeout")]
    pub restart_timeout: Duration,

    /// Also return the fix for the repository that manages the ClusterRole (Argo CD, Flux, or
    /// the manifest microk8s applies), which would otherwise revert or silently lose it (see
    /// RV(ownership)): V(patch), a kustomize JSON 6902 patch appending each added rule (it
    /// survives re-renders of the upstream manifest), or V(manifest), the whole corrected
    /// ClusterRole. Made against the manifest's rules: O(repo_file)'s, else the role's
    /// last-applied-configuration, else the role as read. kubemend commits and pushes nothing.
    #[arg(long, value_name = "FORM")]
    #[serde(default)]
    pub gitops: Option<GitopsForm>,

    /// A manifest file in a checkout (e.g. an AWX project) that holds the ClusterRole: the fix
    /// is also returned as a unified diff of that file (C(gitops.diff), and in the result's
    /// diff, so C(--diff) shows it), which C(patch -p0) applies from the directory the path is
    /// relative to. The file is read, never written.
    #[arg(long, value_name = "PATH")]
    #[serde(default)]
    pub repo_file: Option<String>,

    /// Write the change as C(kubectl apply) would: the corrected role is also recorded in its
    /// C(kubectl.kubernetes.io/last-applied-configuration), so Argo CD's default diff shows it
    /// as OutOfSync (and its next sync reverts it unless the fix is in Git) instead of hiding
    /// it until Git next changes the role. Default: an update that leaves last-applied alone.
    #[arg(long)]
    #[serde(default)]
    pub record_last_applied: bool,
}

/// The form of the fix for the repository.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum GitopsForm {
    /// A kustomize JSON 6902 patch appending each added rule.
    Patch,
    /// The whole corrected ClusterRole.
    Manifest,
}

/// The fix for the repository, as RV(gitops) returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct GitopsFix {
    /// What the fix was made against: C(repo_file PATH), C(last-applied-configuration) or
    /// C(the ClusterRole as read).
    pub based_on: String,
    /// The rules the manifest lacks, each appended by the fix.
    pub added_rules: Vec<RuleSpec>,
    /// The patch (O(gitops=patch)) or the corrected ClusterRole (O(gitops=manifest)), as YAML.
    pub content: Option<String>,
    /// For O(gitops=patch): the entry of kustomization.yaml that applies it (as the file
    /// C(calico-kube-controllers-rbac-patch.yaml)).
    pub kustomization: Option<String>,
    /// For O(repo_file): the unified diff of that file.
    pub diff: Option<String>,
}

fn default_true() -> bool {
    true
}

fn default_restart_timeout() -> Duration {
    Duration::from_secs(300)
}

fn default_name() -> String {
    "calico-kube-controllers".into()
}

fn default_namespace() -> String {
    "kube-system".into()
}

/// A required rule, as given in options or reported in results.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct RuleSpec {
    /// API groups; "" is the core group.
    pub api_groups: Vec<String>,
    /// Resources, e.g. pods, workloadendpoints, services/status.
    pub resources: Vec<String>,
    /// Verbs, e.g. get, list, watch.
    pub verbs: Vec<String>,
}

/// Where a required rule comes from: the controller that needs it and the upstream ClusterRole
/// it was read from, so that a reviewer of the change (or of its GitOps patch) sees why each
/// rule is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct RuleSource {
    /// The kube-controllers controller that needs the rule (V(base): kube-controllers itself,
    /// whatever ENABLED_CONTROLLERS says); V(null) for rules given in options.
    pub controller: Option<String>,
    /// Why it is needed.
    pub why: String,
    /// The Calico release the rule was derived for; V(null) for rules given in options.
    pub release: Option<String>,
    /// The upstream ClusterRole the rule was read from, as C(owner/repo@ref:path); V(null) for
    /// rules upstream does not grant (kubemend adds them because the controller needs them, as
    /// its C(why) says) and for rules given in options.
    pub upstream: Option<String>,
}

/// A required rule and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct RequiredRule {
    #[serde(flatten)]
    #[allow(missing_docs, reason = "documented field by field in RuleSpec")]
    pub rule: RuleSpec,
    /// Where the rule comes from.
    pub source: RuleSource,
}

impl RuleSource {
    /// A rule given in option `option`.
    fn option(option: &str) -> Self {
        Self {
            controller: None,
            why: format!("given in option {option}"),
            release: None,
            upstream: None,
        }
    }

    /// A rule of the table.
    fn of(rule: &SourcedRule) -> Self {
        let p = &rule.provenance;
        Self {
            controller: Some(rule.controller.clone()),
            why: rule.why.clone(),
            release: Some(p.release.to_string()),
            upstream: (!rule.extra).then(|| format!("{}@{}:{}", p.repo, p.reference, p.path)),
        }
    }
}

impl FromStr for RuleSpec {
    type Err = String;

    /// Parses `{api_groups: [""], resources: [pods], verbs: [get]}` (YAML flow or JSON).
    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        serde_saphyr::from_str(text).map_err(|err| {
            format!("expected a rule like '{{api_groups: [\"\"], resources: [pods], verbs: [get]}}': {err}")
        })
    }
}

impl RuleSpec {
    #[cfg(test)]
    fn new(group: &str, resources: &[&str], verbs: &[&str]) -> Self {
        Self {
            api_groups: vec![group.to_owned()],
            resources: resources.iter().map(|r| (*r).to_owned()).collect(),
            verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        }
    }

    fn triples(&self) -> impl Iterator<Item = Triple> + '_ {
        self.api_groups.iter().flat_map(move |group| {
            self.resources.iter().flat_map(move |resource| {
                self.verbs.iter().map(move |verb| Triple {
                    group: group.clone(),
                    resource: resource.clone(),
                    verb: verb.clone(),
                })
            })
        })
    }

    fn to_policy_rule(&self) -> PolicyRule {
        PolicyRule {
            api_groups: Some(self.api_groups.clone()),
            resources: Some(self.resources.clone()),
            verbs: self.verbs.clone(),
            ..PolicyRule::default()
        }
    }

    fn check(&self, option: &str) -> Result<()> {
        let empty = |field: &str| Error::InvalidOption {
            option: format!("{option}.{field}"),
            problem: "must not be empty".into(),
        };
        if self.api_groups.is_empty() {
            return Err(empty("api_groups"));
        }
        if self.resources.is_empty() || self.resources.iter().any(String::is_empty) {
            return Err(empty("resources"));
        }
        if self.verbs.is_empty() || self.verbs.iter().any(String::is_empty) {
            return Err(empty("verbs"));
        }
        Ok(())
    }

    /// How many (group, resource, verb) triples the rule expands to.
    fn size(&self) -> usize {
        self.api_groups
            .len()
            .saturating_mul(self.resources.len())
            .saturating_mul(self.verbs.len())
    }
}

/// Most (group, resource, verb) triples the given rules may expand to. Calico's largest role
/// (v3.32) is about 220; a few kilobytes of lists could otherwise expand to hundreds of
/// millions and exhaust memory.
pub const MAX_RULE_TRIPLES: usize = 10_000;

/// Checks each rule of `option` and bounds their expansion.
fn check_rules(option: &str, rules: &[RuleSpec]) -> Result<()> {
    let mut total: usize = 0;
    for (index, rule) in rules.iter().enumerate() {
        rule.check(&format!("{option}[{index}]"))?;
        total = total.saturating_add(rule.size());
        if total > MAX_RULE_TRIPLES {
            return Err(Error::InvalidOption {
                option: format!("{option}[{index}]"),
                problem: format!(
                    "the rules expand to more than {MAX_RULE_TRIPLES} (api group, resource, \
                     verb) permissions; list what is needed, or use \"*\""
                ),
            });
        }
    }
    Ok(())
}

/// One atomic permission: (apiGroup, resource[/subresource], verb).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Triple {
    /// API group, "" for core.
    pub group: String,
    /// Resource, possibly `resource/subresource`.
    pub resource: String,
    /// Verb.
    pub verb: String,
}

impl fmt::Display for Triple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            write!(f, "{} {}", self.verb, self.resource)
        } else {
            write!(f, "{} {}.{}", self.verb, self.resource, self.group)
        }
    }
}

/// The Calico version in an image reference's tag: `calico/kube-controllers:v3.13.2@sha256:…`.
/// `None` when the tag is missing or is not a release number (e.g. `latest`, `v3.30.0-0.dev`).
#[must_use]
pub fn version_from_image(image: &str) -> Option<CalicoVersion> {
    let without_digest = image.split('@').next()?;
    let last_segment = without_digest.rsplit('/').next()?;
    let (_, tag) = last_segment.rsplit_once(':')?;
    CalicoVersion::parse(tag).ok()
}

/// The repository's last path segment of an image reference, without tag or digest:
/// `kube-controllers` for `registry:5000/calico/kube-controllers:v3.13.2@sha256:…`.
fn image_repository_name(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last_segment = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last_segment
        .split_once(':')
        .map_or(last_segment, |(name, _)| name)
}

/// Hint for a version the rule table cannot answer for.
const VERSION_HINT: &str = "pass calico_version with a release the rule table lists (v3.6.0 to \
                            v3.32.1), or rules with the complete list of required rules";

/// A rule-table error as a planning failure, with a hint that fits it.
fn table_error(err: &TableError, source: &str) -> Error {
    let hint = match err {
        TableError::UnknownController { .. } | TableError::FlannelMigrationNotAlone { .. } => {
            format!(
                "fix {source} (comma-separated, exact lower-case names, no spaces), or pass \
                 enabled_controllers or rules"
            )
        }
        TableError::InvalidDatastore { .. } => {
            "fix DATASTORE_TYPE of the Deployment, or pass rules".into()
        }
        TableError::NotCovered { .. } => {
            "pass rules with the complete list of required rules".into()
        }
        _ => VERSION_HINT.into(),
    };
    Error::CannotPlan {
        action: CalicoRbac::NAME,
        problem: err.to_string(),
        hint,
    }
}

/// The table's rules as required rules, one per (group, resources, verbs).
fn rule_specs(rules: &[SourcedRule]) -> Vec<RuleSpec> {
    rules
        .iter()
        .map(|rule| RuleSpec {
            api_groups: vec![rule.api_group.clone()],
            resources: rule.resources.clone(),
            verbs: rule.verbs.clone(),
        })
        .collect()
}

/// Checks that the table knows `version` for at least one datastore.
fn check_known_version(version: CalicoVersion) -> std::result::Result<(), TableError> {
    let none: &[&str] = &[];
    calico_rules::required_rules(version, Datastore::Kubernetes, none)
        .or_else(|_| calico_rules::required_rules(version, Datastore::Etcdv3, none))
        .map(|_| ())
}

/// Every controller name any release in the table accepts (the newest release's names).
fn known_controller_names() -> Vec<String> {
    calico_rules::covered_range(Datastore::Kubernetes)
        .and_then(|(_, last)| calico_rules::controller_info(last))
        .map(|info| info.names)
        .unwrap_or_default()
}

/// Whether `rule` grants `triple` (Kubernetes RBAC semantics: `*` matches anything, `*/sub`
/// matches any resource's subresource `sub`, and a rule limited to resourceNames does not
/// grant access to every object).
#[must_use]
pub fn rule_covers(rule: &PolicyRule, triple: &Triple) -> bool {
    if rule
        .resource_names
        .as_ref()
        .is_some_and(|names| !names.is_empty())
    {
        return false;
    }
    let groups = rule.api_groups.as_deref().unwrap_or_default();
    let resources = rule.resources.as_deref().unwrap_or_default();
    let group_ok = groups.iter().any(|g| g == "*" || *g == triple.group);
    let verb_ok = rule.verbs.iter().any(|v| v == "*" || *v == triple.verb);
    let subresource = triple.resource.split_once('/').map(|(_, sub)| sub);
    let resource_ok = resources.iter().any(|r| {
        r == "*"
            || *r == triple.resource
            || subresource.is_some_and(|sub| r.strip_prefix("*/") == Some(sub))
    });
    group_ok && verb_ok && resource_ok
}

/// The required permissions no existing rule covers, in the order they are required, without
/// repeats.
#[must_use]
pub fn uncovered(existing: &[PolicyRule], required: &[RuleSpec]) -> Vec<Triple> {
    let mut seen = BTreeSet::new();
    required
        .iter()
        .flat_map(RuleSpec::triples)
        .filter(|t| seen.insert(t.clone()))
        .filter(|t| !existing.iter().any(|rule| rule_covers(rule, t)))
        .collect()
}

/// Groups permissions into readable rules: per API group, resources that need the same verbs
/// share a rule; order of first appearance is kept.
#[must_use]
pub fn group_rules(triples: &[Triple]) -> Vec<RuleSpec> {
    // (group, resource) -> verbs, in first-seen order.
    let mut per_resource: Vec<((String, String), Vec<String>)> = Vec::new();
    for t in triples {
        let key = (t.group.clone(), t.resource.clone());
        match per_resource.iter_mut().find(|(k, _)| *k == key) {
            Some((_, verbs)) => {
                if !verbs.contains(&t.verb) {
                    verbs.push(t.verb.clone());
                }
            }
            None => per_resource.push((key, vec![t.verb.clone()])),
        }
    }
    let mut rules: Vec<RuleSpec> = Vec::new();
    for ((group, resource), verbs) in per_resource {
        match rules
            .iter_mut()
            .find(|r| r.api_groups == [group.clone()] && r.verbs == verbs)
        {
            Some(rule) => rule.resources.push(resource),
            None => rules.push(RuleSpec {
                api_groups: vec![group],
                resources: vec![resource],
                verbs,
            }),
        }
    }
    rules
}

/// What the required rules are derived from.
#[derive(Debug, Clone)]
enum Requirement {
    /// Option `rules`: used as given (plus `extra_rules`).
    Explicit(Vec<RuleSpec>),
    /// From version and controllers, each given or read from the Deployment.
    Derived {
        version: Option<CalicoVersion>,
        /// Names as given, checked exactly as kube-controllers checks ENABLED_CONTROLLERS.
        controllers: Option<Vec<String>>,
        datastore: Option<Datastore>,
    },
}

/// The validated action.
#[derive(Debug, Clone)]
pub struct CalicoRbac {
    cluster: ClusterArgs,
    name: String,
    namespace: String,
    deployment: String,
    requirement: Requirement,
    extra_rules: Vec<RuleSpec>,
    service_account: Option<String>,
    restart_controller: bool,
    restart_timeout: Duration,
    gitops: Option<GitopsForm>,
    /// O(repo_file) and its text, read once when the options are validated.
    repo_file: Option<(String, String)>,
    record_last_applied: bool,
}

/// The derived requirement, with what it was derived from.
#[derive(Debug, Clone, Default)]
struct Derivation {
    version: Option<CalicoVersion>,
    datastore: Option<Datastore>,
    controllers: Vec<String>,
    rules: Vec<RuleSpec>,
    /// Where each of `rules` comes from, in the same order.
    sources: Vec<RuleSource>,
    service_account: Option<String>,
    warnings: Vec<String>,
    /// Whether the Deployment exists (it is what a restart restarts).
    deployment_found: bool,
}

/// What the plan found: the required rules, the role as read and what it lacks.
#[derive(Debug, Clone)]
pub struct Plan {
    required: Vec<RuleSpec>,
    current: Option<ClusterRole>,
    missing: Vec<Triple>,
    deployment_found: bool,
}

/// The result keys.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct Report {
    /// Name of the ClusterRole checked.
    #[schemars(extend("x-sample" = "calico-kube-controllers"))]
    pub clusterrole: String,
    /// The Calico version the rules were derived for, from O(calico_version) or the
    /// Deployment's image tag.
    ///
    /// V(null) when O(rules) replaces the derivation.
    #[schemars(extend("x-sample" = "v3.13.2"))]
    pub calico_version: Option<String>,
    /// The datastore the rules were derived for (V(kubernetes) or V(etcdv3)), from the
    /// Deployment's DATASTORE_TYPE and ETCD_ENDPOINTS as calico-kube-controllers of that
    /// version reads them.
    ///
    /// V(null) when O(rules) replaces the derivation.
    #[schemars(extend("x-sample" = "kubernetes"))]
    pub datastore: Option<String>,
    /// The controllers the rules were derived for, from O(enabled_controllers), the
    /// Deployment's ENABLED_CONTROLLERS or the version's defaults.
    ///
    /// Empty when O(rules) replaces the derivation.
    #[schemars(extend("x-sample" = ["node", "workloadendpoint"]))]
    pub enabled_controllers: Vec<String>,
    /// Every rule the role must grant, derived ones and O(extra_rules), each with where it
    /// comes from.
    pub required_rules: Vec<RequiredRule>,
    /// The required permissions the role did not grant when it was read, grouped into rules.
    ///
    /// Empty when the role already grants everything.
    pub missing_before: Vec<RuleSpec>,
    /// The rules appended to the role (in check mode, that would be appended). Existing rules
    /// are never changed.
    ///
    /// Empty when nothing was missing.
    pub added_rules: Vec<RuleSpec>,
    /// Whether the ClusterRole did not exist and was (in check mode, would be) created.
    #[schemars(extend("x-sample" = false))]
    pub created: bool,
    /// The ServiceAccounts, as C(namespace/name), whose permissions were checked with
    /// SubjectAccessReviews (O(service_account), else the Deployment's, else those bound to
    /// the role).
    #[schemars(extend("x-sample" = ["kube-system/calico-kube-controllers"]))]
    pub service_accounts: Vec<String>,
    /// Whether a SubjectAccessReview allowed every required permission to every ServiceAccount
    /// after the change.
    ///
    /// V(null) when no review was made, in check mode with a change pending, with no
    /// ServiceAccount to review, or when the reviews failed (a warning says why).
    #[schemars(extend("x-sample" = true))]
    pub verified: Option<bool>,
    /// The permissions still denied after the change, as C(namespace/name: verb
    /// resource.group).
    ///
    /// Empty unless RV(verified) is V(false).
    pub denied: Vec<String>,
    /// The missing permissions that a SubjectAccessReview denied before the change, as
    /// C(namespace/name: verb resource.group): the gap confirmed. A missing permission not
    /// listed here was allowed anyway (RBAC not enforced, or another binding grants it).
    ///
    /// V(null) when nothing was missing or no review could be made (a warning says why).
    pub denied_before: Option<Vec<String>>,
    /// Whether the calico-kube-controllers Deployment was (in check mode, would be) restarted
    /// because rules were added, as `kubectl rollout restart` does.
    ///
    /// V(false) when nothing was added, with O(restart_controller=false), or when the
    /// Deployment does not exist (a warning says so).
    #[schemars(extend("x-sample" = true))]
    pub controller_restarted: bool,
    /// The C(kubectl.kubernetes.io/restartedAt) annotation the restart set on the
    /// Deployment's pod template (RFC 3339).
    ///
    /// V(null) unless the Deployment was restarted (never in check mode).
    #[schemars(extend("x-sample" = "2026-12-01T09:30:00Z"))]
    pub controller_restarted_at: Option<String>,
    /// The name of a Ready pod of the Deployment's new ReplicaSet after the restart, found
    /// once the rollout was complete.
    ///
    /// V(null) unless the Deployment was restarted and its rollout completed, and when it
    /// has 0 replicas (a warning says so).
    #[schemars(extend("x-sample" = "calico-kube-controllers-6d8f7c9b5-x2k4p"))]
    pub controller_pod: Option<String>,
    /// Who manages the ClusterRole (Argo CD, Flux, Helm, C(kubectl apply), or nothing) and
    /// what will happen to kubemend's change of it.
    ///
    /// V(null) when the role does not exist.
    pub ownership: Option<Ownership>,
    /// The fix for the repository that manages the role, as O(gitops) and O(repo_file) ask.
    ///
    /// V(null) without either, or when the manifest already grants every required rule.
    pub gitops: Option<GitopsFix>,
}

/// A reviewed (ServiceAccount, permission) pair.
type Reviewed = ((String, String), Triple, Review);

/// Result of one SubjectAccessReview.
#[derive(Debug, Clone)]
struct Review {
    allowed: bool,
    reason: String,
}

/// The read-only survey the runbook makes: the plan a run with the default options would make
/// (what the ClusterRole lacks, confirmed by SubjectAccessReviews), on a scratch outcome
/// (`cx` should be in check mode). Calico not installed is [`Error::NotFound`].
pub async fn survey(cx: &Context) -> Result<Report> {
    // The options' own defaults, as a run without options has them.
    let options: Options =
        serde_json::from_value(serde_json::json!({})).map_err(|e| Error::Internal {
            message: format!("calico_rbac's default options: {e}"),
        })?;
    let action = CalicoRbac::validate(options)?;
    let mut scratch = Outcome::default();
    action.plan(cx, &mut scratch).await?;
    Ok(scratch.report)
}

impl Action for CalicoRbac {
    const NAME: &'static str = "calico_rbac";
    const ABOUT: &'static str =
        "Ensure the calico-kube-controllers ClusterRole grants what the running Calico needs";
    /// Room for the default restart_timeout (5m) after the role change.
    const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10 * 60);
    type Options = Options;
    type Plan = Plan;
    type Report = Report;

    fn validate(options: Options) -> Result<Self> {
        check_subdomain("name", &options.name)?;
        check_label("namespace", &options.namespace)?;
        check_subdomain("deployment", &options.deployment)?;
        if let Some(sa) = &options.service_account {
            check_subdomain("service_account", sa)?;
        }
        let version = match &options.calico_version {
            Some(text) => {
                let version = CalicoVersion::parse(text).map_err(|_| Error::InvalidOption {
                    option: "calico_version".into(),
                    problem: format!("{text:?} is not a release number like v3.13.2"),
                })?;
                // Fail now, not after reading the cluster, when the table lacks the version.
                check_known_version(version).map_err(|err| Error::InvalidOption {
                    option: "calico_version".into(),
                    problem: format!("{err}; {VERSION_HINT}"),
                })?;
                Some(version)
            }
            None => None,
        };
        let controllers = match &options.enabled_controllers {
            Some(list) => {
                if list.is_empty() {
                    return Err(Error::InvalidOption {
                        option: "enabled_controllers".into(),
                        problem: "must not be empty (omit it to read ENABLED_CONTROLLERS)".into(),
                    });
                }
                let known = known_controller_names();
                if let Some(bad) = list.iter().find(|name| !known.contains(name)) {
                    return Err(Error::InvalidOption {
                        option: "enabled_controllers".into(),
                        problem: format!(
                            "calico-kube-controllers exits on the controller name `{bad}`; known \
                             (exact, lower-case): {}",
                            known.join(", ")
                        ),
                    });
                }
                if let Some(version) = version {
                    calico_rules::parse_enabled_controllers(version, &list.join(",")).map_err(
                        |err| Error::InvalidOption {
                            option: "enabled_controllers".into(),
                            problem: err.to_string(),
                        },
                    )?;
                }
                Some(list.clone())
            }
            None => None,
        };
        let datastore = match &options.datastore {
            Some(text) => Some(Datastore::parse(text).map_err(|_| Error::InvalidOption {
                option: "datastore".into(),
                problem: format!("{text:?} is not a datastore: kubernetes or etcdv3"),
            })?),
            None => None,
        };
        check_rules("extra_rules", &options.extra_rules)?;
        options
            .restart_timeout
            .require_positive("restart_timeout")?;
        let requirement = match options.rules {
            Some(rules) => {
                if rules.is_empty() {
                    return Err(Error::InvalidOption {
                        option: "rules".into(),
                        problem: "must not be empty (omit it to derive the rules)".into(),
                    });
                }
                check_rules("rules", &rules)?;
                Requirement::Explicit(rules)
            }
            None => Requirement::Derived {
                version,
                controllers,
                datastore,
            },
        };
        let repo_file = options
            .repo_file
            .map(|path| read_repo_file(path, &options.name))
            .transpose()?;
        Ok(Self {
            gitops: options.gitops,
            repo_file,
            record_last_applied: options.record_last_applied,
            cluster: options.cluster,
            name: options.name,
            namespace: options.namespace,
            deployment: options.deployment,
            requirement,
            extra_rules: options.extra_rules,
            service_account: options.service_account,
            restart_controller: options.restart_controller,
            restart_timeout: options.restart_timeout,
        })
    }

    fn cluster_args(&self) -> &ClusterArgs {
        &self.cluster
    }

    /// Derives the required rules, finds who runs the controllers, reads the role and what it
    /// lacks. With nothing missing, verifies right away (the reviews only read).
    async fn plan(&self, cx: &Context, out: &mut Outcome<Report>) -> Result<Plan> {
        let cluster = &cx.cluster;
        // Three independent reads at once, on connections the reviews then share.
        let bindings: Api<ClusterRoleBinding> = Api::all(cluster.client.clone());
        let list_params = ListParams::default();
        let (derivation, bound, current) = tokio::join!(
            self.derive(cluster),
            bindings.list(&list_params),
            self.read_role(cluster)
        );
        let derivation = derivation?;
        let current = current?;
        out.warnings.extend(derivation.warnings.iter().cloned());
        let mut required = derivation.rules.clone();
        required.extend(self.extra_rules.iter().cloned());
        let sources = derivation.sources.iter().cloned().chain(
            self.extra_rules
                .iter()
                .map(|_| RuleSource::option("extra_rules")),
        );
        out.report.clusterrole.clone_from(&self.name);
        out.report.calico_version = derivation.version.map(|v| v.to_string());
        out.report.datastore = derivation.datastore.map(|d| d.as_str().to_owned());
        out.report
            .enabled_controllers
            .clone_from(&derivation.controllers);
        out.report.required_rules = required
            .iter()
            .cloned()
            .zip(sources)
            .map(|(rule, source)| RequiredRule { rule, source })
            .collect();

        let subjects = self.subjects(cluster, bound, &derivation, out);
        out.report.service_accounts = subjects.iter().map(|(ns, n)| format!("{ns}/{n}")).collect();
        let missing = uncovered(&rules_of(current.as_ref()), &required);
        out.report.missing_before = group_rules(&missing);
        let change = if self.record_last_applied {
            Change::UpdateRecorded
        } else {
            Change::Update
        };
        out.report.ownership = current.as_ref().map(|role| {
            ownership::of(
                &format!("clusterrole {}", self.name),
                &role.metadata,
                change,
            )
        });
        if let Some(owned) = out.report.ownership.as_ref().filter(|o| o.at_risk())
            && !missing.is_empty()
        {
            out.warn(owned.warning());
        }
        if let Some((fix, file_diff)) =
            self.gitops_fix(current.as_ref(), &required, &out.report.required_rules)?
        {
            out.diff.extend(file_diff);
            out.report.gitops = Some(fix);
        }
        if missing.is_empty() {
            self.verify_reviews(cluster, &subjects, &required, out)
                .await;
        } else {
            // Before the role grants them: is what it lacks allowed anyway?
            self.check_enforcement(cluster, &subjects, &missing, out)
                .await;
        }
        out.msg = self.message(cx.check_mode, &out.report);
        Ok(Plan {
            required,
            current,
            missing,
            deployment_found: derivation.deployment_found,
        })
    }

    /// Appends what is missing (a dry run in check mode). The update carries the
    /// resourceVersion read; on a conflict the role is read and the plan recomputed.
    async fn apply(&self, cx: &Context, plan: Plan, out: &mut Outcome<Report>) -> Result<()> {
        if plan.missing.is_empty() {
            return Ok(());
        }
        let cluster = &cx.cluster;
        let roles: Api<ClusterRole> = Api::all(cluster.client.clone());
        let role_label = format!("clusterrole {:?}", self.name);
        let mut first = Some((plan.current.clone(), plan.missing.clone()));
        let written = on_conflict(&role_label, |_| {
            let first = first.take();
            let (roles, role_label, required) = (&roles, &role_label, &plan.required);
            async move {
                let (current, missing) = match first {
                    Some(read) => read,
                    None => {
                        let current = self.read_role(cluster).await?;
                        let missing = uncovered(&rules_of(current.as_ref()), required);
                        (current, missing)
                    }
                };
                if missing.is_empty() {
                    return Ok(Attempt::Done(None));
                }
                let desired = self.desired(current.as_ref(), &missing);
                let params = PostParams {
                    dry_run: cx.check_mode,
                    field_manager: Some(FIELD_MANAGER.into()),
                };
                let verb = if current.is_some() {
                    "update"
                } else {
                    "create"
                };
                let result = match &current {
                    Some(_) => roles.replace(&self.name, &params, &desired).await,
                    None => roles.create(&params, &desired).await,
                };
                match result {
                    Ok(_) => Ok(Attempt::Done(Some((current, desired, missing, None)))),
                    // Conflict (stale resourceVersion) or AlreadyExists (created meanwhile).
                    Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Conflict),
                    Err(err) if cx.check_mode => {
                        let err = cluster.error(verb, role_label.clone())(err);
                        let warning = dry_run_refused("change", &err);
                        Ok(Attempt::Done(Some((
                            current,
                            desired,
                            missing,
                            Some(warning),
                        ))))
                    }
                    Err(err) => Err(cluster.error(verb, role_label.clone())(err)),
                }
            }
        })
        .await?;
        let Some((before, after, missing, warning)) = written else {
            // Someone else added the rules meanwhile.
            out.report.missing_before = Vec::new();
            return Ok(());
        };
        out.warnings.extend(warning);
        out.changed = true;
        out.report.missing_before = group_rules(&missing);
        out.report.added_rules = group_rules(&missing);
        out.report.created = before.is_none();
        out.diff.push(Diff::of(
            &format!("clusterrole/{}", self.name),
            before.as_ref(),
            Some(&after),
        ));
        // To be verified after the change; in check mode there is nothing to verify yet.
        out.report.verified = None;
        out.report.denied = Vec::new();
        out.msg = self.message(cx.check_mode, &out.report);
        if self.restart_controller {
            self.restart(cx, plan.deployment_found, out).await?;
            out.msg = self.message(cx.check_mode, &out.report);
        }
        Ok(())
    }

    /// After a change, SubjectAccessReviews for every required permission (without a change
    /// they already ran in plan). A denial is reported (`verified: false`, `denied`, a
    /// warning), not failed: it usually means the binding is missing, which the warning names.
    async fn verify(&self, cx: &Context, out: &mut Outcome<Report>) -> Result<()> {
        if !out.changed {
            return Ok(());
        }
        let subjects: Vec<(String, String)> = out
            .report
            .service_accounts
            .iter()
            .filter_map(|sa| sa.split_once('/'))
            .map(|(ns, name)| (ns.to_owned(), name.to_owned()))
            .collect();
        let required: Vec<RuleSpec> = out
            .report
            .required_rules
            .iter()
            .map(|r| r.rule.clone())
            .collect();
        self.verify_reviews(&cx.cluster, &subjects, &required, out)
            .await;
        out.msg = self.message(cx.check_mode, &out.report);
        if out.report.controller_restarted_at.is_some() {
            out.report.controller_pod = self.wait_for_rollout(&cx.cluster, out).await?;
            out.msg = self.message(cx.check_mode, &out.report);
        }
        Ok(())
    }
}

/// The pod-template annotation `kubectl rollout restart` sets.
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// How often the rollout after a restart is read.
const ROLLOUT_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// What a Deployment's status says about its rollout: `None` when it is complete (the
/// controller observed the latest generation, and every replica is updated and available),
/// else what it is waiting for.
#[must_use]
pub fn rollout_pending(deployment: &Deployment) -> Option<String> {
    let generation = deployment.metadata.generation.unwrap_or_default();
    let status = deployment.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or_default();
    if observed < generation {
        return Some(format!(
            "the deployment controller has not observed generation {generation} yet (observed \
             {observed})"
        ));
    }
    let replicas = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or_default();
    if updated != replicas {
        return Some(format!("{updated} of {replicas} replicas updated"));
    }
    let available = status.available_replicas.unwrap_or_default();
    if available != replicas {
        return Some(format!(
            "{available} of {replicas} updated replicas available"
        ));
    }
    None
}

/// The ReplicaSet of `deployment`'s current revision, among `sets`: owned by it and carrying
/// its `deployment.kubernetes.io/revision`.
fn current_replica_set<'a>(
    deployment: &Deployment,
    sets: &'a [ReplicaSet],
) -> Option<&'a ReplicaSet> {
    let revision = |meta: &ObjectMeta| {
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .cloned()
    };
    let uid = deployment.metadata.uid.as_deref()?;
    let wanted = revision(&deployment.metadata)?;
    sets.iter().find(|rs| {
        owned_by(&rs.metadata, uid) && revision(&rs.metadata).as_deref() == Some(wanted.as_str())
    })
}

/// The revision annotation the deployment controller keeps on a Deployment and its ReplicaSets.
const REVISION: &str = "deployment.kubernetes.io/revision";

fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|owner| owner.uid == uid)
}

/// The name of a Ready pod (not being deleted) of ReplicaSet `rs`, among `pods`; the first by
/// name.
fn ready_pod_of(rs: &ReplicaSet, pods: &[Pod]) -> Option<String> {
    let uid = rs.metadata.uid.as_deref()?;
    let mut ready: Vec<String> = pods
        .iter()
        .filter(|pod| owned_by(&pod.metadata, uid) && pod.metadata.deletion_timestamp.is_none())
        .filter(|pod| {
            pod.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|conditions| {
                    conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
        })
        .filter_map(|pod| pod.metadata.name.clone())
        .collect();
    ready.sort();
    ready.into_iter().next()
}

/// The rules of a role as read (none when absent).
fn rules_of(role: Option<&ClusterRole>) -> Vec<PolicyRule> {
    role.and_then(|r| r.rules.clone()).unwrap_or_default()
}

/// O(repo_file)'s path and text, refused when it cannot be read or holds no ClusterRole `name`.
fn read_repo_file(path: String, name: &str) -> Result<(String, String)> {
    let text = std::fs::read_to_string(&path).map_err(|e| Error::InvalidOption {
        option: "repo_file".into(),
        problem: format!("cannot read {path}: {e}"),
    })?;
    if crate::gitops::find_document(&text, "ClusterRole", name).is_none() {
        return Err(Error::InvalidOption {
            option: "repo_file".into(),
            problem: format!(
                "{path} holds no ClusterRole named {name:?} (a YAML document with kind \
                 ClusterRole and that metadata.name)"
            ),
        });
    }
    Ok((path, text))
}

/// What `kubectl apply` records of `role` as its last-applied-configuration: the role as a
/// manifest (what was applied before, with the corrected rules), compact JSON, without the
/// annotation itself.
fn last_applied_of(role: &ClusterRole) -> String {
    let mut value = serde_json::to_value(role).unwrap_or(Value::Null);
    crate::outcome::strip_server_fields(&mut value);
    if let Some(annotations) = value["metadata"]["annotations"].as_object_mut() {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            value["metadata"]
                .as_object_mut()
                .map(|m| m.remove("annotations"));
        }
    }
    value["apiVersion"] = Value::from("rbac.authorization.k8s.io/v1");
    value["kind"] = Value::from("ClusterRole");
    value.to_string()
}

/// The comment before a rule of the repository fix: which controllers need it, in which
/// release, and where upstream grants it.
fn why_comment(rule: &RuleSpec, sourced: &[RequiredRule]) -> String {
    let triples: BTreeSet<Triple> = rule.triples().collect();
    let mut reasons: Vec<String> = Vec::new();
    for required in sourced {
        if !required.rule.triples().any(|t| triples.contains(&t)) {
            continue;
        }
        let s = &required.source;
        let mut reason = match (&s.controller, &s.release) {
            (Some(c), Some(r)) => format!("{c} ({r})"),
            (Some(c), None) => c.clone(),
            _ => String::new(),
        };
        if !reason.is_empty() {
            reason.push_str(": ");
        }
        reason.push_str(&s.why);
        if let Some(upstream) = &s.upstream {
            let _ = write!(reason, " [{upstream}]");
        }
        if !reasons.contains(&reason) {
            reasons.push(reason);
        }
    }
    format!("kubemend: {}", reasons.join("; "))
}

impl CalicoRbac {
    fn deployment_label(&self) -> String {
        format!("deployment {}/{}", self.namespace, self.deployment)
    }

    /// Restarts the Deployment as `kubectl rollout restart` does: its pod template gets the
    /// annotation `kubectl.kubernetes.io/restartedAt` = now (RFC 3339). Check mode only
    /// records that it would; a missing Deployment is warned about.
    async fn restart(
        &self,
        cx: &Context,
        deployment_found: bool,
        out: &mut Outcome<Report>,
    ) -> Result<()> {
        let label = self.deployment_label();
        let missing = || {
            format!(
                "{label} does not exist, so nothing was restarted; restart whatever runs \
                 calico-kube-controllers so that it loads the added permissions"
            )
        };
        if !deployment_found {
            out.warn(missing());
            return Ok(());
        }
        if cx.check_mode {
            out.report.controller_restarted = true;
            return Ok(());
        }
        let now = k8s_openapi::jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let patch = serde_json::json!({
            "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let api: Api<Deployment> = Api::namespaced(cx.cluster.client.clone(), &self.namespace);
        match api
            .patch(&self.deployment, &params, &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => {
                out.report.controller_restarted = true;
                out.report.controller_restarted_at = Some(now);
                Ok(())
            }
            // Deleted since the plan read it.
            Err(kube::Error::Api(status)) if status.code == 404 => {
                out.warn(missing());
                Ok(())
            }
            Err(err) => Err(cx.cluster.error("patch", label)(err)),
        }
    }

    /// Polls the Deployment until its rollout is complete and a pod of its current ReplicaSet
    /// is Ready; returns that pod's name (`None` for a Deployment scaled to 0, warned about).
    /// Fails after `restart_timeout`, saying what it was still waiting for.
    async fn wait_for_rollout(
        &self,
        cluster: &Cluster,
        out: &mut Outcome<Report>,
    ) -> Result<Option<String>> {
        let label = self.deployment_label();
        let deadline = tokio::time::Instant::now() + self.restart_timeout.std();
        loop {
            let waiting = match self.rollout_state(cluster).await {
                Ok(Ok(Some(pod))) => return Ok(Some(pod)),
                Ok(Ok(None)) => {
                    out.warn(format!(
                        "{label} has 0 replicas: no pod runs calico-kube-controllers"
                    ));
                    return Ok(None);
                }
                Ok(Err(waiting)) => waiting,
                Err(err @ Error::NotFound { .. }) => return Err(err),
                // A read that failed (an API server restarting, a dropped connection) is
                // tried again until the deadline.
                Err(err) => format!("the last read failed: {}", err.message_with_causes()),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::NotVerified {
                    what: format!(
                        "{label} was restarted but its rollout did not complete within {} \
                         (restart_timeout): {waiting}",
                        self.restart_timeout
                    ),
                    hint: format!(
                        "see `kubectl -n {ns} rollout status deployment/{name}` and `kubectl -n \
                         {ns} describe deployment/{name}`; the role change is made",
                        ns = self.namespace,
                        name = self.deployment
                    ),
                });
            }
            tokio::time::sleep(ROLLOUT_POLL).await;
        }
    }

    /// One look at the rollout: the name of a Ready pod of the current ReplicaSet once the
    /// rollout is complete, else what it is waiting for.
    async fn rollout_state(
        &self,
        cluster: &Cluster,
    ) -> Result<std::result::Result<Option<String>, String>> {
        let label = self.deployment_label();
        let Some(deployment) = self.read_deployment(cluster).await? else {
            return Err(Error::NotFound {
                object: label,
                hint: "it was deleted while its rollout was awaited".into(),
            });
        };
        if let Some(waiting) = rollout_pending(&deployment) {
            return Ok(Err(waiting));
        }
        if deployment.spec.as_ref().and_then(|s| s.replicas) == Some(0) {
            return Ok(Ok(None));
        }
        let sets: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), &self.namespace);
        let sets = sets
            .list(&ListParams::default())
            .await
            .map_err(cluster.error("list", format!("replicasets in {}", self.namespace)))?
            .items;
        let Some(rs) = current_replica_set(&deployment, &sets) else {
            return Ok(Err("no ReplicaSet of its current revision yet".into()));
        };
        let rs_name = rs.metadata.name.clone().unwrap_or_default();
        let Some(hash) = rs
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("pod-template-hash"))
        else {
            return Ok(Err(format!(
                "ReplicaSet {rs_name} has no pod-template-hash label"
            )));
        };
        let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &self.namespace);
        let pods = pods
            .list(&ListParams::default().labels(&format!("pod-template-hash={hash}")))
            .await
            .map_err(cluster.error("list", format!("pods in {}", self.namespace)))?
            .items;
        Ok(ready_pod_of(rs, &pods)
            .map(Some)
            .ok_or_else(|| format!("no Ready pod of ReplicaSet {rs_name} yet")))
    }

    /// Reads the role; an aggregated one is refused (its controller would overwrite the rules).
    async fn read_role(&self, cluster: &Cluster) -> Result<Option<ClusterRole>> {
        let roles: Api<ClusterRole> = Api::all(cluster.client.clone());
        let current = roles
            .get_opt(&self.name)
            .await
            .map_err(cluster.error("get", format!("clusterrole {:?}", self.name)))?;
        if let Some(aggregation) = current.as_ref().and_then(|r| r.aggregation_rule.as_ref()) {
            return Err(Error::AggregatedClusterRole {
                name: self.name.clone(),
                selectors: serde_json::to_string(&aggregation.cluster_role_selectors)
                    .unwrap_or_default(),
            });
        }
        Ok(current)
    }

    /// The required rules and what they came from; reads the Deployment when needed.
    async fn derive(&self, cluster: &Cluster) -> Result<Derivation> {
        let (version, controllers, datastore) = match &self.requirement {
            Requirement::Explicit(rules) => {
                let deployment = self.read_deployment(cluster).await?;
                return Ok(Derivation {
                    rules: rules.clone(),
                    sources: rules.iter().map(|_| RuleSource::option("rules")).collect(),
                    service_account: deployment.as_ref().map(service_account_of),
                    deployment_found: deployment.is_some(),
                    ..Derivation::default()
                });
            }
            Requirement::Derived {
                version,
                controllers,
                datastore,
            } => (*version, controllers.clone(), *datastore),
        };
        let deployment = self.read_deployment(cluster).await?;
        let deployment_label = format!("deployment {}/{}", self.namespace, self.deployment);
        let mut derivation = Derivation {
            service_account: deployment.as_ref().map(service_account_of),
            deployment_found: deployment.is_some(),
            ..Derivation::default()
        };
        if deployment.is_none() && (version.is_none() || controllers.is_none()) {
            return Err(Error::NotFound {
                object: deployment_label,
                hint: "set namespace/deployment to where calico-kube-controllers runs, or pass \
                       calico_version and enabled_controllers (or rules)"
                    .into(),
            });
        }
        // The container is needed for whatever the options leave to the Deployment; with both
        // given, a Deployment without it only loses its DATASTORE_TYPE.
        let container = match &deployment {
            Some(deployment) if version.is_none() || controllers.is_none() => {
                Some(kube_controllers_container(deployment, &deployment_label)?)
            }
            Some(deployment) => kube_controllers_container(deployment, &deployment_label).ok(),
            None => None,
        };
        let version = match version {
            Some(v) => v,
            None => {
                let image = container.and_then(|c| c.image.clone()).unwrap_or_default();
                version_from_image(&image).ok_or_else(|| Error::CannotPlan {
                    action: Self::NAME,
                    problem: format!(
                        "the image {image:?} of {deployment_label} has no release version tag"
                    ),
                    hint: "pass calico_version, e.g. v3.13.2".into(),
                })?
            }
        };
        check_known_version(version).map_err(|err| table_error(&err, "the image"))?;
        let datastore = match datastore {
            Some(datastore) => datastore,
            None => self.datastore_of(container, version, deployment.is_some())?,
        };
        let controllers = match controllers {
            Some(list) => calico_rules::parse_enabled_controllers(version, &list.join(","))
                .map_err(|err| table_error(&err, "enabled_controllers"))?,
            None => {
                self.controllers_from(
                    cluster,
                    container,
                    version,
                    datastore,
                    &mut derivation.warnings,
                )
                .await?
            }
        };
        derivation
            .warnings
            .extend(etcd_only_warnings(version, datastore, &controllers)?);
        let rules = calico_rules::required_rules(version, datastore, &controllers)
            .map_err(|err| table_error(&err, "ENABLED_CONTROLLERS"))?;
        derivation.rules = rule_specs(&rules);
        derivation.sources = rules.iter().map(RuleSource::of).collect();
        if datastore == Datastore::Kubernetes {
            for (controller, rule) in kdd_informer_reads(&controllers) {
                derivation.sources.push(RuleSource {
                    why: format!(
                        "{controller} is etcd-only, yet enabled: on the Kubernetes datastore its \
                         informer lists and watches {} there, which upstream never grants (it \
                         never enables it there)",
                        rule.resources.join(", ")
                    ),
                    controller: Some(controller),
                    release: Some(version.to_string()),
                    upstream: None,
                });
                derivation.rules.push(rule);
            }
        }
        derivation.version = Some(version);
        derivation.datastore = Some(datastore);
        derivation.controllers = controllers;
        Ok(derivation)
    }

    /// The datastore kube-controllers `version` uses, from its container's DATASTORE_TYPE and
    /// ETCD_ENDPOINTS; without the container it is unknown.
    fn datastore_of(
        &self,
        container: Option<&Container>,
        version: CalicoVersion,
        deployment_exists: bool,
    ) -> Result<Datastore> {
        let label = format!("deployment {}/{}", self.namespace, self.deployment);
        if container.is_none() {
            return Err(Error::CannotPlan {
                action: Self::NAME,
                problem: if deployment_exists {
                    format!("{label} has no kube-controllers container to read DATASTORE_TYPE from")
                } else {
                    format!("{label} does not exist: its DATASTORE_TYPE is unknown")
                },
                hint: "pass datastore (kubernetes or etcdv3)".into(),
            });
        }
        let datastore_type = self.env_value(container, "DATASTORE_TYPE")?;
        let etcd_endpoints = self.env_value(container, "ETCD_ENDPOINTS")?;
        Datastore::from_env(
            version,
            datastore_type.as_deref(),
            etcd_endpoints.as_deref(),
        )
        .map_err(|err| table_error(&err, "DATASTORE_TYPE"))
    }

    async fn read_deployment(&self, cluster: &Cluster) -> Result<Option<Deployment>> {
        let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), &self.namespace);
        api.get_opt(&self.deployment).await.map_err(cluster.error(
            "get",
            format!("deployment {}/{}", self.namespace, self.deployment),
        ))
    }

    /// The value of environment variable `name` of the container (`None` when unset); a
    /// reference (valueFrom) kubemend does not resolve is an error.
    fn env_value(&self, container: Option<&Container>, name: &str) -> Result<Option<String>> {
        let Some(var) = container
            .and_then(|c| c.env.as_ref())
            .and_then(|env| env.iter().find(|e| e.name == name))
        else {
            return Ok(None);
        };
        if var.value.is_none() && var.value_from.is_some() {
            return Err(Error::CannotPlan {
                action: Self::NAME,
                problem: format!(
                    "{name} of deployment {}/{} comes from a reference (valueFrom) that kubemend \
                     does not resolve",
                    self.namespace, self.deployment
                ),
                hint: "pass calico_version and enabled_controllers, or rules".into(),
            });
        }
        // An env entry without value is the empty string for the container.
        Ok(Some(var.value.clone().unwrap_or_default()))
    }

    /// ENABLED_CONTROLLERS of the container, parsed as that release parses it, or what the
    /// version runs without it.
    async fn controllers_from(
        &self,
        cluster: &Cluster,
        container: Option<&Container>,
        version: CalicoVersion,
        datastore: Datastore,
        warnings: &mut Vec<String>,
    ) -> Result<Vec<String>> {
        if let Some(value) = self.env_value(container, "ENABLED_CONTROLLERS")? {
            return calico_rules::parse_enabled_controllers(version, &value).map_err(|err| {
                table_error(
                    &err,
                    &format!(
                        "ENABLED_CONTROLLERS of deployment {}/{}",
                        self.namespace, self.deployment
                    ),
                )
            });
        }
        let defaults = calico_rules::default_controllers(version, datastore)
            .map_err(|err| table_error(&err, "ENABLED_CONTROLLERS"))?;
        if version < CalicoVersion::new(3, 14, 0) {
            warnings.push(format!(
                "ENABLED_CONTROLLERS is not set; Calico {version} then runs its defaults ({})",
                defaults.join(", ")
            ));
            return Ok(defaults);
        }
        self.controllers_from_kcc(cluster, version, defaults, warnings)
            .await
    }

    /// From v3.14 the KubeControllersConfiguration `default` lists the enabled controllers;
    /// without one, kube-controllers creates it with the version's defaults.
    async fn controllers_from_kcc(
        &self,
        cluster: &Cluster,
        version: CalicoVersion,
        defaults: Vec<String>,
        warnings: &mut Vec<String>,
    ) -> Result<Vec<String>> {
        let resource = kube::api::ApiResource {
            group: CRD.into(),
            version: "v1".into(),
            api_version: format!("{CRD}/v1"),
            kind: "KubeControllersConfiguration".into(),
            plural: "kubecontrollersconfigurations".into(),
        };
        let api: Api<kube::api::DynamicObject> = Api::all_with(cluster.client.clone(), &resource);
        let kcc = match api.get_opt("default").await {
            Ok(kcc) => kcc,
            // The CRD itself may be missing: same as no configuration.
            Err(kube::Error::Api(status)) if status.code == 404 => None,
            Err(err) => {
                return Err(cluster
                    .error("get", "kubecontrollersconfiguration \"default\"")(
                    err
                ));
            }
        };
        let names: Vec<String> = kcc
            .as_ref()
            .and_then(|k| k.data.pointer("/spec/controllers"))
            .and_then(serde_json::Value::as_object)
            .map(|controllers| {
                controllers
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, _)| k.to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default();
        if names.is_empty() {
            warnings.push(format!(
                "ENABLED_CONTROLLERS is not set and no KubeControllersConfiguration \"default\" \
                 lists controllers; Calico {version} then creates one with its defaults ({})",
                defaults.join(", ")
            ));
            return Ok(defaults);
        }
        calico_rules::parse_enabled_controllers(version, &names.join(","))
            .map_err(|err| table_error(&err, "KubeControllersConfiguration \"default\""))
    }

    /// The ClusterRole with the missing permissions appended as readable rules.
    /// The fix for the repository, when O(gitops) or O(repo_file) ask for it: the required
    /// rules the manifest lacks (O(repo_file)'s role, else the role's last-applied-configuration,
    /// else the role as read), in the asked forms, each rule with a comment saying why; and for
    /// O(repo_file), the file's diff for the result's diff. `None` when nothing is lacking.
    fn gitops_fix(
        &self,
        current: Option<&ClusterRole>,
        required: &[RuleSpec],
        sourced: &[RequiredRule],
    ) -> Result<Option<(GitopsFix, Option<Diff>)>> {
        if self.gitops.is_none() && self.repo_file.is_none() {
            return Ok(None);
        }
        let last_applied = current
            .and_then(|r| r.metadata.annotations.as_ref())
            .and_then(|a| a.get(LAST_APPLIED))
            .and_then(|text| serde_json::from_str::<Value>(text).ok());
        let mut file = None;
        let (based_on, manifest) = if let Some((path, text)) = &self.repo_file {
            let found = crate::gitops::find_document(text, "ClusterRole", &self.name);
            let Some((doc, start, end)) = found else {
                return Ok(None);
            };
            file = Some((path, text, (start, end)));
            (format!("repo_file {path}"), doc)
        } else if let Some(applied) = last_applied {
            ("last-applied-configuration".to_owned(), applied)
        } else {
            let mut role = serde_json::to_value(current).unwrap_or(Value::Null);
            crate::outcome::strip_server_fields(&mut role);
            ("the ClusterRole as read".to_owned(), role)
        };
        let rules: Vec<PolicyRule> =
            serde_json::from_value(manifest["rules"].clone()).unwrap_or_default();
        let added = group_rules(&uncovered(&rules, required));
        if added.is_empty() {
            return Ok(None);
        }
        let items: Vec<(Value, Option<String>)> = added
            .iter()
            .map(|rule| {
                let value = serde_json::to_value(rule.to_policy_rule()).unwrap_or(Value::Null);
                (value, Some(why_comment(rule, sourced)))
            })
            .collect();
        let mut fix = GitopsFix {
            based_on,
            added_rules: added.clone(),
            ..GitopsFix::default()
        };
        match self.gitops {
            Some(GitopsForm::Patch) => {
                fix.content = Some(crate::gitops::append_patch("/rules", &items));
                fix.kustomization = Some(crate::gitops::kustomization_entry(
                    "rbac.authorization.k8s.io",
                    "v1",
                    "ClusterRole",
                    &self.name,
                    "calico-kube-controllers-rbac-patch.yaml",
                ));
            }
            Some(GitopsForm::Manifest) => {
                let mut role = manifest.clone();
                if let Some(annotations) = role["metadata"]["annotations"].as_object_mut() {
                    annotations.remove(LAST_APPLIED);
                }
                crate::outcome::strip_server_fields(&mut role);
                let list = role["rules"].as_array().cloned().unwrap_or_default();
                role["rules"] = Value::Array(
                    list.into_iter()
                        .chain(items.iter().map(|(item, _)| item.clone()))
                        .collect(),
                );
                fix.content = Some(crate::outcome::to_yaml(&role));
            }
            None => {}
        }
        let mut file_diff = None;
        if let Some((path, text, span)) = file {
            let after = crate::gitops::append_to_list(text, span, "rules", &items, path)?;
            fix.diff = Some(crate::gitops::unified_diff(path, text, &after));
            file_diff = Some(Diff {
                before: text.clone(),
                after,
                before_header: format!("{path} (before)"),
                after_header: format!("{path} (after)"),
            });
        }
        Ok(Some((fix, file_diff)))
    }

    fn desired(&self, current: Option<&ClusterRole>, missing: &[Triple]) -> ClusterRole {
        let added: Vec<PolicyRule> = group_rules(missing)
            .iter()
            .map(RuleSpec::to_policy_rule)
            .collect();
        let mut role = match current {
            Some(role) => {
                let mut role = role.clone();
                role.metadata.managed_fields = None;
                role.rules.get_or_insert_with(Vec::new).extend(added);
                role
            }
            None => ClusterRole {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                rules: Some(added),
                ..ClusterRole::default()
            },
        };
        if self.record_last_applied {
            let applied = last_applied_of(&role);
            role.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(LAST_APPLIED.to_owned(), applied);
        }
        role
    }

    /// ServiceAccounts (namespace, name) to verify, and a warning when the one running the
    /// controllers is not bound to the role.
    fn subjects(
        &self,
        cluster: &Cluster,
        bindings: kube::Result<ObjectList<ClusterRoleBinding>>,
        derivation: &Derivation,
        outcome: &mut Outcome<Report>,
    ) -> Vec<(String, String)> {
        let bound: Vec<(String, String)> = match bindings {
            Ok(list) => list
                .items
                .iter()
                .filter(|b| b.role_ref.kind == "ClusterRole" && b.role_ref.name == self.name)
                .flat_map(|b| b.subjects.iter().flatten())
                .filter(|s| s.kind == "ServiceAccount")
                .map(|s| (s.namespace.clone().unwrap_or_default(), s.name.clone()))
                .collect(),
            Err(err) => {
                let err = cluster.error("list", "clusterrolebindings")(err);
                outcome.warn(format!(
                    "could not check which ServiceAccounts are bound to the role: {}",
                    err.message_with_causes()
                ));
                return self
                    .service_account
                    .clone()
                    .or_else(|| derivation.service_account.clone())
                    .map(|sa| vec![(self.namespace.clone(), sa)])
                    .unwrap_or_default();
            }
        };
        let running = self
            .service_account
            .clone()
            .or_else(|| derivation.service_account.clone());
        match running {
            Some(name) => {
                let subject = (self.namespace.clone(), name);
                if !bound.contains(&subject) {
                    outcome.warn(format!(
                        "ServiceAccount {}/{} is not bound to clusterrole {:?} by any \
                         ClusterRoleBinding, so the role's rules do not reach it",
                        subject.0, subject.1, self.name
                    ));
                }
                vec![subject]
            }
            None => {
                if bound.is_empty() {
                    outcome.warn(format!(
                        "no ServiceAccount to verify: no ClusterRoleBinding binds clusterrole {:?} \
                         to one; pass service_account",
                        self.name
                    ));
                }
                bound
            }
        }
    }

    async fn review(
        cluster: &Cluster,
        subject: &(String, String),
        triple: &Triple,
    ) -> Result<Review> {
        let (resource, subresource) = match triple.resource.split_once('/') {
            Some((r, s)) => (r.to_owned(), Some(s.to_owned())),
            None => (triple.resource.clone(), None),
        };
        let (namespace, name) = subject;
        let answer = access::review(
            cluster,
            format!("system:serviceaccount:{namespace}:{name}"),
            vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
            ResourceAttributes {
                group: Some(triple.group.clone()),
                resource: Some(resource),
                subresource,
                verb: Some(triple.verb.clone()),
                ..ResourceAttributes::default()
            },
        )
        .await?;
        Ok(Review {
            allowed: answer.allowed,
            reason: answer.reason,
        })
    }

    /// Reviews every (subject, permission), [`REVIEWS_AT_ONCE`] at a time.
    ///
    /// Why not more: the client speaks HTTP/1.1, so each concurrent request
    /// needs a connection of its own, and one beyond those the plan's three
    /// concurrent reads left open pays a TLS handshake, while one review on a
    /// kept-alive connection takes well under a millisecond. Measured on the
    /// test bed, `calico-rbac --check` on the incident (eight reviews) took
    /// about 60 ms with eight at a time and about 25 ms one at a time.
    async fn review_all(
        cluster: &Cluster,
        subjects: &[(String, String)],
        triples: &[Triple],
    ) -> Result<Vec<Reviewed>> {
        let pairs: Vec<((String, String), Triple)> = subjects
            .iter()
            .flat_map(|s| triples.iter().map(move |t| (s.clone(), t.clone())))
            .collect();
        let results: Vec<Result<Reviewed>> =
            futures::stream::iter(pairs.into_iter().map(|(subject, triple)| async move {
                let review = Self::review(cluster, &subject, &triple).await?;
                Ok((subject, triple, review))
            }))
            .buffered(REVIEWS_AT_ONCE)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Warns when permissions the role lacks are allowed anyway.
    async fn check_enforcement(
        &self,
        cluster: &Cluster,
        subjects: &[(String, String)],
        missing: &[Triple],
        outcome: &mut Outcome<Report>,
    ) {
        if subjects.is_empty() {
            return;
        }
        let reviews = match Self::review_all(cluster, subjects, missing).await {
            Ok(reviews) => reviews,
            Err(err) => {
                outcome.warn(format!(
                    "could not check whether RBAC is enforced: {}",
                    err.message_with_causes()
                ));
                return;
            }
        };
        outcome.report.denied_before = Some(
            reviews
                .iter()
                .filter(|(_, _, r)| !r.allowed)
                .map(|((ns, name), t, _)| format!("{ns}/{name}: {t}"))
                .collect(),
        );
        let allowed: Vec<&Reviewed> = reviews.iter().filter(|(_, _, r)| r.allowed).collect();
        if allowed.is_empty() {
            return;
        }
        let by_rbac = allowed
            .iter()
            .all(|(_, _, r)| r.reason.starts_with("RBAC:"));
        let sample: Vec<String> = allowed
            .iter()
            .take(3)
            .map(|(_, t, _)| t.to_string())
            .collect();
        if by_rbac {
            outcome.warn(format!(
                "the ServiceAccount is already allowed to {} through another binding, although \
                 clusterrole {:?} lacks it",
                sample.join(", "),
                self.name
            ));
        } else {
            outcome.warn(format!(
                "the API server allows {} although clusterrole {:?} lacks it: RBAC is not being \
                 enforced (microk8s defaults to --authorization-mode=AlwaysAllow until \
                 `microk8s enable rbac`), so this role change has no effect until it is",
                sample.join(", "),
                self.name
            ));
        }
    }

    /// Reviews every required permission and records `verified` and `denied`; both stay
    /// unset when no review could be made (a warning says why).
    async fn verify_reviews(
        &self,
        cluster: &Cluster,
        subjects: &[(String, String)],
        required: &[RuleSpec],
        outcome: &mut Outcome<Report>,
    ) {
        if subjects.is_empty() {
            return;
        }
        let required: Vec<Triple> = uncovered(&[], required);
        match Self::review_all(cluster, subjects, &required).await {
            Ok(reviews) => {
                let denied: Vec<String> = reviews
                    .iter()
                    .filter(|(_, _, r)| !r.allowed)
                    .map(|((ns, name), t, _)| format!("{ns}/{name}: {t}"))
                    .collect();
                if !denied.is_empty() {
                    outcome.warn(format!(
                        "SubjectAccessReview still denies: {}",
                        denied.join(", ")
                    ));
                }
                outcome.report.verified = Some(denied.is_empty());
                outcome.report.denied = denied;
            }
            Err(err) => {
                outcome.warn(format!(
                    "could not verify with SubjectAccessReview: {}",
                    err.message_with_causes()
                ));
            }
        }
    }

    fn message(&self, check_mode: bool, report: &Report) -> String {
        let source = match &report.calico_version {
            Some(v) => format!(
                "calico-kube-controllers {v} ({})",
                report.enabled_controllers.join(", ")
            ),
            None => "the given rules".into(),
        };
        let (added, created) = (&report.added_rules, report.created);
        if added.is_empty() {
            let mut msg = format!(
                "clusterrole {:?} already grants what {source} needs",
                self.name
            );
            if !report.denied.is_empty() {
                let _ = write!(
                    msg,
                    "; yet SubjectAccessReview denies {}",
                    report.denied.len()
                );
            }
            return msg;
        }
        let summary: Vec<String> = added
            .iter()
            .map(|r| format!("{}: {}", r.resources.join(", "), r.verbs.join(", ")))
            .collect();
        let verb = match (created, check_mode) {
            (true, true) => "would create",
            (true, false) => "created",
            (false, true) => "would add to",
            (false, false) => "added to",
        };
        let mut msg = format!(
            "{verb} clusterrole {:?} for {source}: {}",
            self.name,
            summary.join("; ")
        );
        if report.controller_restarted {
            let deployment = self.deployment_label();
            if check_mode {
                let _ = write!(msg, "; would restart {deployment}");
            } else {
                match &report.controller_pod {
                    Some(pod) => {
                        let _ = write!(msg, "; restarted {deployment}, new pod {pod} Ready");
                    }
                    None => {
                        let _ = write!(msg, "; restarted {deployment}");
                    }
                }
            }
        }
        msg
    }
}

/// The container running kube-controllers: the one named `calico-kube-controllers`, else the
/// one whose image repository ends in `kube-controllers`. An error names the containers found.
fn kube_controllers_container<'a>(
    deployment: &'a Deployment,
    label: &str,
) -> Result<&'a Container> {
    let containers: &[Container] = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map_or(&[], |p| p.containers.as_slice());
    containers
        .iter()
        .find(|c| c.name == "calico-kube-controllers")
        .or_else(|| {
            containers.iter().find(|c| {
                c.image
                    .as_deref()
                    .is_some_and(|i| image_repository_name(i).ends_with("kube-controllers"))
            })
        })
        .ok_or_else(|| {
            let found: Vec<String> = containers
                .iter()
                .map(|c| format!("{} ({})", c.name, c.image.as_deref().unwrap_or("no image")))
                .collect();
            let found = if found.is_empty() {
                "none".to_owned()
            } else {
                found.join(", ")
            };
            Error::CannotPlan {
                action: CalicoRbac::NAME,
                problem: format!(
                    "{label} has no container named calico-kube-controllers nor one whose image \
                     repository ends in kube-controllers (containers: {found})"
                ),
                hint: "set deployment to the one running calico-kube-controllers, or pass \
                       calico_version and enabled_controllers (or rules)"
                    .into(),
            }
        })
}

fn service_account_of(deployment: &Deployment) -> String {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.service_account_name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// The warnings for controllers upstream enables only on the other datastore, with what to do.
fn etcd_only_warnings(
    version: CalicoVersion,
    datastore: Datastore,
    controllers: &[String],
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let warnings = calico_rules::warnings(version, datastore, controllers)
        .map_err(|err| table_error(&err, "ENABLED_CONTROLLERS"))?;
    if !warnings.is_empty() {
        let upstream = calico_rules::manifest_controllers(version, datastore)
            .map(|list| list.join(","))
            .unwrap_or_default();
        for warning in warnings {
            let reads = if datastore == Datastore::Kubernetes {
                let reads: Vec<String> = kdd_informer_reads(controllers)
                    .iter()
                    .flat_map(|(_, r)| r.resources.clone())
                    .collect();
                format!(
                    "; until then its informer still lists and watches {} and exits \
                     without them, so those reads are required",
                    reads.join(", ")
                )
            } else {
                String::new()
            };
            out.push(format!(
                "{warning}; drop it from ENABLED_CONTROLLERS (the upstream {datastore} \
                 manifest of Calico {version} sets {upstream:?}){reads}"
            ));
        }
    }
    Ok(out)
}

/// What an etcd-only controller that is enabled anyway on the Kubernetes datastore reads there:
/// its informer lists and watches the Kubernetes resource behind its Calico one
/// (workloadendpoints are served from pods, profiles from namespaces and ServiceAccounts,
/// policies from NetworkPolicies). Upstream grants nothing for them, as it never enables them
/// on this datastore; without these reads the controller exits on a 403, over and over (the
/// incident: `pods is forbidden: ... cannot list resource "pods"`). Their writes (profiles,
/// `knp.*` policies) are refused on this datastore whatever the RBAC, so none is granted: the
/// warning says to drop the controller, and these reads stop the crash loop until then.
const KDD_INFORMER_READS: &[(&str, &str, &str)] = &[
    ("workloadendpoint", "", "pods"),
    ("namespace", "", "namespaces"),
    ("profile", "", "namespaces"),
    ("serviceaccount", "", "serviceaccounts"),
    ("policy", "networking.k8s.io", "networkpolicies"),
];

/// The reads of [`KDD_INFORMER_READS`] for the enabled controllers, each with its controller.
fn kdd_informer_reads(controllers: &[String]) -> Vec<(String, RuleSpec)> {
    KDD_INFORMER_READS
        .iter()
        .filter(|(controller, _, _)| controllers.iter().any(|c| c == controller))
        .map(|(controller, group, resource)| {
            let rule = RuleSpec {
                api_groups: vec![(*group).to_owned()],
                resources: vec![(*resource).to_owned()],
                verbs: vec!["get".into(), "list".into(), "watch".into()],
            };
            ((*controller).to_owned(), rule)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
        PolicyRule {
            api_groups: Some(groups.iter().map(|s| (*s).to_owned()).collect()),
            resources: Some(resources.iter().map(|s| (*s).to_owned()).collect()),
            verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
            ..PolicyRule::default()
        }
    }

    fn triple(group: &str, resource: &str, verb: &str) -> Triple {
        Triple {
            group: group.into(),
            resource: resource.into(),
            verb: verb.into(),
        }
    }

    /// The incident's role: v3.13.2's five rules.
    fn v3_13_2_role() -> Vec<PolicyRule> {
        vec![
            rule(&[""], &["nodes"], &["watch", "list", "get"]),
            rule(&[""], &["pods"], &["get"]),
            rule(&[CRD], &["ippools"], &["list"]),
            rule(
                &[CRD],
                &["blockaffinities", "ipamblocks", "ipamhandles"],
                &["get", "list", "create", "update", "delete"],
            ),
            rule(
                &[CRD],
                &["clusterinformations"],
                &["get", "create", "update"],
            ),
        ]
    }

    fn v(text: &str) -> CalicoVersion {
        CalicoVersion::parse(text).unwrap()
    }

    /// The table's rules for `version`, `datastore` and `controllers`, as required rules.
    fn required(
        version: &str,
        datastore: Datastore,
        controllers: &[&str],
    ) -> std::result::Result<Vec<RuleSpec>, TableError> {
        calico_rules::required_rules(v(version), datastore, controllers).map(|r| rule_specs(&r))
    }

    fn has(rules: &[RuleSpec], t: &Triple) -> bool {
        rules.iter().flat_map(RuleSpec::triples).any(|x| x == *t)
    }

    #[test]
    fn versions_are_read_from_image_tags() {
        assert_eq!(
            version_from_image("calico/kube-controllers:v3.13.2"),
            Some(v("3.13.2"))
        );
        assert_eq!(
            version_from_image("registry:5000/calico/kube-controllers:v3.29.3@sha256:abc"),
            Some(v("v3.29.3"))
        );
        // A pre-release is not a release the table could list.
        assert_eq!(
            version_from_image("docker.io/calico/kube-controllers:v3.30.0-0.dev"),
            None
        );
        assert_eq!(
            version_from_image("registry:5000/calico/kube-controllers"),
            None
        );
        assert_eq!(version_from_image("calico/kube-controllers:latest"), None);
        assert_eq!(
            image_repository_name("registry:5000/calico/kube-controllers:v3.13.2@sha256:abc"),
            "kube-controllers"
        );
        assert_eq!(image_repository_name("envoy:v1.2"), "envoy");
    }

    /// The incident: v3.13.2, Kubernetes datastore, ENABLED_CONTROLLERS=node,workloadendpoint.
    /// Upstream's v3.13 Kubernetes-datastore ClusterRole is the five rules the incident's role
    /// already had, and workloadendpoint is an etcd-only controller that gets no rules there.
    #[test]
    fn v3_13_2_incident_role_grants_what_the_kubernetes_datastore_needs() {
        let required = required(
            "v3.13.2",
            Datastore::Kubernetes,
            &["node", "workloadendpoint"],
        )
        .unwrap();
        assert!(uncovered(&v3_13_2_role(), &required).is_empty());
        let warnings = calico_rules::warnings(
            v("v3.13.2"),
            Datastore::Kubernetes,
            &["node", "workloadendpoint"],
        )
        .unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("workloadendpoint"), "{warnings:?}");
    }

    /// v3.13.2 on etcdv3: the workloadendpoint controller reads pods from the Kubernetes API,
    /// which the Kubernetes-datastore role does not grant.
    #[test]
    fn v3_13_2_etcd_workloadendpoint_needs_more_than_the_kubernetes_role() {
        let required =
            required("v3.13.2", Datastore::Etcdv3, &["node", "workloadendpoint"]).unwrap();
        let missing = uncovered(&v3_13_2_role(), &required);
        assert!(
            missing.contains(&triple("", "pods", "watch")),
            "{missing:?}"
        );
        assert!(missing.contains(&triple("", "pods", "list")), "{missing:?}");
    }

    #[test]
    fn v3_13_node_only_role_is_complete() {
        let required = required("v3.13.2", Datastore::Kubernetes, &["node"]).unwrap();
        assert!(uncovered(&v3_13_2_role(), &required).is_empty());
    }

    #[test]
    fn newer_releases_need_more() {
        let k = Datastore::Kubernetes;
        let r = required("v3.29.7", k, &["node"]).unwrap();
        assert!(has(
            &r,
            &triple(CRD, "kubecontrollersconfigurations", "list")
        ));
        assert!(has(&r, &triple(CRD, "tiers", "watch")));
        assert!(!has(&r, &triple(CRD, "ipamconfigs", "get")));
        let r = required("v3.30.0", k, &["node", "loadbalancer"]).unwrap();
        assert!(has(&r, &triple(CRD, "ipamconfigs", "get")));
        assert!(has(&r, &triple("", "services/status", "update")));
        assert!(has(&r, &triple(CRD, "hostendpoints", "watch")));
        // From v3.31 the loadbalancer controller watches namespaces; the node controller does not.
        let r = required("v3.31.0", k, &["node"]).unwrap();
        assert!(!has(&r, &triple("", "namespaces", "watch")));
        let r = required("v3.31.0", k, &["node", "loadbalancer"]).unwrap();
        assert!(has(&r, &triple("", "namespaces", "watch")));
    }

    #[test]
    fn releases_and_names_the_table_does_not_know_fail() {
        let k = Datastore::Kubernetes;
        assert!(required("v3.13.2", k, &["bogus"]).is_err());
        assert!(required("v3.13.2", k, &["Node"]).is_err());
        assert!(required("v3.29.7", k, &["loadbalancer"]).is_err());
        assert!(check_known_version(v("v3.33.0")).is_err());
        assert!(check_known_version(v("v3.13.9")).is_err());
        assert!(check_known_version(v("v4.0.0")).is_err());
        let err = table_error(&check_known_version(v("v3.33.0")).unwrap_err(), "the image");
        assert!(err.to_string().contains("v3.33.0"), "{err}");
        assert!(err.hint().unwrap().contains("calico_version"), "{err}");
        assert!(err.hint().unwrap().contains("rules"), "{err}");
    }

    #[test]
    fn the_kube_controllers_container_is_found_by_name_or_image_never_by_position() {
        let deployment = |containers: serde_json::Value| -> Deployment {
            serde_json::from_value(serde_json::json!({
                "spec": {"selector": {}, "template": {"spec": {"containers": containers}}}
            }))
            .unwrap()
        };
        let d = deployment(serde_json::json!([
            {"name": "proxy", "image": "envoy:v1.29.0"},
            {"name": "controllers", "image": "registry:5000/calico/kube-controllers:v3.13.2"}
        ]));
        assert_eq!(
            kube_controllers_container(&d, "d").unwrap().name,
            "controllers"
        );
        let d = deployment(serde_json::json!([
            {"name": "proxy", "image": "kube-controllers-proxy:v1"},
            {"name": "calico-kube-controllers", "image": "calico/kube-controllers:v3.13.2"}
        ]));
        assert_eq!(
            kube_controllers_container(&d, "d").unwrap().name,
            "calico-kube-controllers"
        );
        let d = deployment(serde_json::json!([
            {"name": "proxy", "image": "envoy:v1.29.0"},
            {"name": "other", "image": "calico/kube-controllers-helper:v3.13.2"}
        ]));
        let err = kube_controllers_container(&d, "deployment kube-system/x").unwrap_err();
        assert!(err.to_string().contains("proxy (envoy:v1.29.0)"), "{err}");
        assert!(err.to_string().contains("other ("), "{err}");
    }

    #[test]
    fn wildcards_cover_like_kubernetes_rbac() {
        assert!(rule_covers(
            &rule(&["*"], &["*"], &["*"]),
            &triple(CRD, "ippools", "list")
        ));
        assert!(rule_covers(
            &rule(&[CRD], &["*"], &["list"]),
            &triple(CRD, "ippools", "list")
        ));
        assert!(rule_covers(
            &rule(&[""], &["pods"], &["*"]),
            &triple("", "pods", "watch")
        ));
        assert!(rule_covers(
            &rule(&[""], &["*/status"], &["update"]),
            &triple("", "services/status", "update")
        ));
        assert!(!rule_covers(
            &rule(&[""], &["*/status"], &["update"]),
            &triple("", "services", "update")
        ));
        assert!(!rule_covers(
            &rule(&[""], &["services"], &["update"]),
            &triple("", "services/status", "update")
        ));
        assert!(!rule_covers(
            &rule(&["apps"], &["pods"], &["get"]),
            &triple("", "pods", "get")
        ));
        let mut named = rule(&[""], &["pods"], &["get"]);
        named.resource_names = Some(vec!["one".into()]);
        assert!(!rule_covers(&named, &triple("", "pods", "get")));
        let mut urls = PolicyRule {
            non_resource_urls: Some(vec!["*".into()]),
            verbs: vec!["*".into()],
            ..PolicyRule::default()
        };
        assert!(!rule_covers(&urls, &triple("", "pods", "get")));
        urls.api_groups = Some(vec![]);
        assert!(!rule_covers(&urls, &triple("", "pods", "get")));
    }

    #[test]
    fn existing_rules_are_kept_in_order_and_only_missing_ones_appended() {
        let mut existing = v3_13_2_role();
        existing.insert(0, rule(&["apps"], &["deployments"], &["get"]));
        let action = CalicoRbac::validate(
            serde_json::from_value(serde_json::json!({"calico_version": "v3.13.2"})).unwrap(),
        )
        .unwrap();
        let role = ClusterRole {
            metadata: ObjectMeta {
                name: Some("calico-kube-controllers".into()),
                resource_version: Some("146".into()),
                ..ObjectMeta::default()
            },
            rules: Some(existing.clone()),
            ..ClusterRole::default()
        };
        let missing = vec![triple("", "pods", "list")];
        let desired = action.desired(Some(&role), &missing);
        let rules = desired.rules.unwrap();
        assert_eq!(&rules[..existing.len()], &existing[..]);
        assert_eq!(rules[existing.len()], rule(&[""], &["pods"], &["list"]));
        assert_eq!(rules.len(), existing.len() + 1);
        assert_eq!(desired.metadata.resource_version.as_deref(), Some("146"));
    }

    #[test]
    fn identical_verb_sets_share_a_rule() {
        let grouped = group_rules(&[
            triple(CRD, "ipamblocks", "get"),
            triple(CRD, "ipamhandles", "get"),
            triple("", "pods", "get"),
            triple(CRD, "ipamblocks", "list"),
            triple(CRD, "ipamhandles", "list"),
        ]);
        assert_eq!(
            grouped,
            vec![
                RuleSpec::new(CRD, &["ipamblocks", "ipamhandles"], &["get", "list"]),
                RuleSpec::new("", &["pods"], &["get"]),
            ]
        );
    }

    #[test]
    fn rules_that_expand_to_too_many_permissions_are_refused() {
        let many: Vec<String> = (0..100).map(|i| format!("r{i}")).collect();
        let rule = serde_json::json!({"api_groups": many, "resources": many, "verbs": many});
        let err = CalicoRbac::validate(
            serde_json::from_value(serde_json::json!({"extra_rules": [rule]})).unwrap(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("extra_rules[0]"), "{err}");
        assert!(err.to_string().contains("10000"), "{err}");
    }

    #[test]
    fn invalid_options_are_refused_before_any_call() {
        let validate =
            |v: serde_json::Value| CalicoRbac::validate(serde_json::from_value(v).unwrap());
        assert!(validate(serde_json::json!({"name": "Bad_Name"})).is_err());
        assert!(validate(serde_json::json!({"namespace": "a.b"})).is_err());
        assert!(validate(serde_json::json!({"calico_version": "three"})).is_err());
        assert!(validate(serde_json::json!({"enabled_controllers": ["node", "nope"]})).is_err());
        // Names are exact, as kube-controllers checks them.
        assert!(validate(serde_json::json!({"enabled_controllers": ["Node"]})).is_err());
        assert!(validate(serde_json::json!({"enabled_controllers": [" node"]})).is_err());
        assert!(validate(serde_json::json!({"enabled_controllers": []})).is_err());
        assert!(validate(serde_json::json!({"enabled_controllers": ["node", "profile"]})).is_ok());
        // loadbalancer exists from v3.30.0 only.
        assert!(
            validate(serde_json::json!({"calico_version": "v3.29.7", "enabled_controllers": ["loadbalancer"]}))
                .is_err()
        );
        assert!(
            validate(serde_json::json!({"calico_version": "v3.30.0", "enabled_controllers": ["loadbalancer"]}))
                .is_ok()
        );
        let err = validate(serde_json::json!({"calico_version": "v3.33.0"})).unwrap_err();
        assert!(err.to_string().contains("v3.33.0"), "{err}");
        assert!(err.to_string().contains("rules"), "{err}");
        assert!(validate(serde_json::json!({"calico_version": "v3.13.9"})).is_err());
        assert!(validate(serde_json::json!({"datastore": "etcd"})).is_err());
        assert!(validate(serde_json::json!({"datastore": "Kubernetes"})).is_err());
        assert!(validate(serde_json::json!({"datastore": "etcdv3"})).is_ok());
        assert!(validate(serde_json::json!({"rules": []})).is_err());
        let err = validate(serde_json::json!({"extra_rules": [{"api_groups": [""], "resources": [], "verbs": ["get"]}]}))
            .unwrap_err();
        assert!(
            err.to_string().contains("extra_rules[0].resources"),
            "{err}"
        );
    }

    fn deployment(value: serde_json::Value) -> Deployment {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_rollout_is_complete_once_the_latest_generation_is_observed_updated_and_available() {
        let at = |generation: i64, observed: i64, updated: i32, available: i32| {
            deployment(serde_json::json!({
                "metadata": {"generation": generation},
                "spec": {"replicas": 2, "selector": {}, "template": {}},
                "status": {"observedGeneration": observed, "updatedReplicas": updated,
                           "availableReplicas": available, "replicas": 2}
            }))
        };
        let waiting = rollout_pending(&at(3, 2, 2, 2)).unwrap();
        assert!(waiting.contains("generation 3"), "{waiting}");
        let waiting = rollout_pending(&at(3, 3, 1, 2)).unwrap();
        assert!(waiting.contains("1 of 2 replicas updated"), "{waiting}");
        let waiting = rollout_pending(&at(3, 3, 2, 1)).unwrap();
        assert!(
            waiting.contains("1 of 2 updated replicas available"),
            "{waiting}"
        );
        assert_eq!(rollout_pending(&at(3, 3, 2, 2)), None);
        assert_eq!(rollout_pending(&at(3, 4, 2, 2)), None);
        // No status yet: nothing observed.
        let fresh = deployment(serde_json::json!({
            "metadata": {"generation": 1}, "spec": {"selector": {}, "template": {}}
        }));
        assert!(rollout_pending(&fresh).is_some());
    }

    #[test]
    fn the_new_pod_is_a_ready_one_of_the_current_revisions_replica_set() {
        let d = deployment(serde_json::json!({
            "metadata": {"uid": "d1", "annotations": {REVISION: "2"}},
            "spec": {"selector": {}, "template": {}}
        }));
        let rs = |name: &str, uid: &str, owner: &str, revision: &str| -> ReplicaSet {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "uid": uid, "annotations": {REVISION: revision},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                         "name": "d", "uid": owner}]},
                "spec": {"selector": {}}
            }))
            .unwrap()
        };
        let sets = vec![
            rs("old", "r1", "d1", "1"),
            rs("other", "r9", "d9", "2"),
            rs("new", "r2", "d1", "2"),
        ];
        let current = current_replica_set(&d, &sets).unwrap();
        assert_eq!(current.metadata.name.as_deref(), Some("new"));
        let pod = |name: &str, owner: &str, ready: &str, deleting: bool| -> Pod {
            let mut value = serde_json::json!({
                "metadata": {"name": name, "ownerReferences": [{"apiVersion": "apps/v1",
                    "kind": "ReplicaSet", "name": "rs", "uid": owner}]},
                "status": {"conditions": [{"type": "Ready", "status": ready}]}
            });
            if deleting {
                value["metadata"]["deletionTimestamp"] = "2026-12-01T09:00:00Z".into();
            }
            serde_json::from_value(value).unwrap()
        };
        let pods = vec![
            pod("a-old", "r1", "True", false),
            pod("b-new-unready", "r2", "False", false),
            pod("c-new-going", "r2", "True", true),
            pod("d-new", "r2", "True", false),
        ];
        assert_eq!(ready_pod_of(current, &pods).as_deref(), Some("d-new"));
        assert_eq!(ready_pod_of(current, &pods[..3]), None);
    }

    #[test]
    fn the_message_says_whether_the_controller_was_or_would_be_restarted() {
        let action = CalicoRbac::validate(
            serde_json::from_value(serde_json::json!({"calico_version": "v3.13.2"})).unwrap(),
        )
        .unwrap();
        let mut report = Report {
            calico_version: Some("v3.13.2".into()),
            added_rules: vec![RuleSpec::new("", &["pods"], &["list", "watch"])],
            controller_restarted: true,
            ..Report::default()
        };
        let msg = action.message(true, &report);
        assert!(
            msg.ends_with("; would restart deployment kube-system/calico-kube-controllers"),
            "{msg}"
        );
        report.controller_pod = Some("calico-kube-controllers-abc-xyz".into());
        let msg = action.message(false, &report);
        assert!(
            msg.ends_with(
                "; restarted deployment kube-system/calico-kube-controllers, new pod \
                 calico-kube-controllers-abc-xyz Ready"
            ),
            "{msg}"
        );
        report.controller_restarted = false;
        assert!(!action.message(false, &report).contains("restart"));
    }

    #[test]
    fn restart_controller_defaults_to_true_with_a_five_minute_timeout() {
        let options: Options = serde_json::from_value(serde_json::json!({})).unwrap();
        assert!(options.restart_controller);
        assert_eq!(options.restart_timeout.seconds(), 300);
        let validate =
            |v: serde_json::Value| CalicoRbac::validate(serde_json::from_value(v).unwrap());
        let err = validate(serde_json::json!({"restart_timeout": "0s"})).unwrap_err();
        assert!(err.to_string().contains("restart_timeout"), "{err}");
    }

    #[test]
    fn rule_flag_parses_yaml_flow_mappings() {
        let rule: RuleSpec = "{api_groups: [\"\"], resources: [pods], verbs: [get, list]}"
            .parse()
            .unwrap();
        assert_eq!(rule, RuleSpec::new("", &["pods"], &["get", "list"]));
        assert!("pods".parse::<RuleSpec>().is_err());
    }
}
