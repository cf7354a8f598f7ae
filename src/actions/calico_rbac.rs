//! calico_rbac: ensures the calico-kube-controllers ClusterRole grants what the running
//! calico-kube-controllers needs.
//!
//! The required rules are derived from what runs: the Deployment's image tag (Calico version)
//! and its `ENABLED_CONTROLLERS`, through the per-version table of the Calico manifests
//! (v3.13.2 gives the 5-rule set; v3.14+ adds kubecontrollersconfigurations with list, v3.29+
//! tiers, v3.30+ ipamconfigs, ...). Options `calico_version`, `enabled_controllers`, `rules` and
//! `extra_rules` override or extend the derivation.
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
//! # Check mode
//! Same observation and plan; the write is sent as a server-side dry run (nothing stored, the
//! resourceVersion unchanged) to catch admission or permission problems, whose refusal becomes a
//! warning. No SubjectAccessReview verification of the pending change is possible.
//!
//! # Verification
//! SubjectAccessReviews for the ServiceAccount that runs the controllers (option
//! `service_account`, else the Deployment's, else those bound to the role): before the change
//! for the missing permissions (an "allowed" there means RBAC is not enforced or another binding
//! grants it, and is warned about), and after the change for every required permission
//! (`verified`, `denied`).
//!
//! # Errors
//! A ClusterRole with an aggregationRule fails: the aggregation controller would overwrite the
//! rules. An unknown controller name, an image tag without a version or a missing Deployment
//! (when nothing overrides the derivation) fail before any write, with a hint naming the option
//! that resolves it.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::str::FromStr;

use clap::Args;
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Container;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PostParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Action, Context};
use crate::client::{Cluster, ClusterArgs};
use crate::error::{Error, Result};
use crate::k8s::FIELD_MANAGER;
use crate::k8s::delete::dry_run_refused;
use crate::k8s::names::{check_label, check_subdomain};
use crate::k8s::retry::{Attempt, on_conflict};
use crate::outcome::{Diff, Outcome};

/// API group of Calico's CRDs in the Kubernetes datastore.
const CRD: &str = "crd.projectcalico.org";

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
    /// tag.
    #[arg(long, value_name = "VERSION")]
    #[serde(default)]
    pub calico_version: Option<String>,

    /// Controllers to derive the rules for (node, loadbalancer, workloadendpoint, policy,
    /// namespace, serviceaccount) instead of the Deployment's ENABLED_CONTROLLERS.
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    #[serde(default)]
    pub enabled_controllers: Option<Vec<String>>,

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

/// A Calico version (major.minor.patch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch (0 when not given).
    pub patch: u32,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl Version {
    /// Parses `v3.13.2`, `3.13`, `v3.29.2-0.dev` and similar; `None` for anything else.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let text = text.strip_prefix('v').unwrap_or(text);
        let core = text.split(['-', '+']).next()?;
        let mut parts = core.split('.');
        let number = |part: Option<&str>| -> Option<u32> {
            let part = part?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) || part.len() > 6 {
                return None;
            }
            part.parse().ok()
        };
        let major = number(parts.next())?;
        let minor = number(parts.next())?;
        let patch = match parts.next() {
            Some(p) => number(Some(p))?,
            None => 0,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            major,
            minor,
            patch,
        })
    }

    /// The version in an image reference's tag: `calico/kube-controllers:v3.13.2@sha256:…`.
    #[must_use]
    pub fn from_image(image: &str) -> Option<Self> {
        let without_digest = image.split('@').next()?;
        let last_segment = without_digest.rsplit('/').next()?;
        let (_, tag) = last_segment.rsplit_once(':')?;
        Self::parse(tag)
    }
}

/// Controllers calico-kube-controllers knows, and whether they are meant for the Kubernetes
/// datastore.
const CONTROLLERS: &[(&str, bool)] = &[
    ("node", true),
    ("loadbalancer", true),
    ("workloadendpoint", false),
    ("policy", false),
    ("namespace", false),
    ("serviceaccount", false),
];

/// v3.13's built-in default when ENABLED_CONTROLLERS is not set (`pkg/config/config.go`).
const V3_13_DEFAULT_CONTROLLERS: &[&str] = &[
    "node",
    "policy",
    "namespace",
    "workloadendpoint",
    "serviceaccount",
];

/// The rules calico-kube-controllers `version` needs with `controllers` enabled, for the
/// Kubernetes datastore, from the upstream manifests (v3.13.2 and v3.26 to v3.31). Versions
/// between v3.14 and v3.25 get the v3.26 rules; versions after v3.31 get v3.31's.
pub fn required_rules(version: Version, controllers: &[String]) -> Result<Vec<RuleSpec>> {
    if version.major != 3 {
        return Err(Error::CannotPlan {
            action: CalicoRbac::NAME,
            problem: format!("no rule table for Calico {version}"),
            hint: "pass rules with the complete list of required rules".into(),
        });
    }
    let m = version.minor;
    let legacy = m <= 13;
    let ipam_verbs: &[&str] = if legacy {
        &["get", "list", "create", "update", "delete"]
    } else {
        &["get", "list", "create", "update", "delete", "watch"]
    };
    let crud_watch: &[&str] = &["get", "list", "create", "update", "delete", "watch"];
    let mut rules = vec![RuleSpec::new("", &["nodes"], &["watch", "list", "get"])];
    rules.push(if legacy {
        RuleSpec::new("", &["pods"], &["get"])
    } else {
        RuleSpec::new("", &["pods"], &["get", "list", "watch"])
    });
    rules.push(RuleSpec::new(
        CRD,
        &["ippools"],
        if legacy {
            &["list"]
        } else {
            &["list", "watch"]
        },
    ));
    if !legacy {
        rules.push(RuleSpec::new(CRD, &["ipreservations"], &["list"]));
    }
    rules.push(RuleSpec::new(
        CRD,
        &["blockaffinities", "ipamblocks", "ipamhandles"],
        ipam_verbs,
    ));
    if m >= 29 {
        rules.push(RuleSpec::new(CRD, &["tiers"], crud_watch));
    }
    if m >= 30 {
        rules.push(RuleSpec::new(CRD, &["ipamconfigs"], crud_watch));
    }
    if !legacy {
        rules.push(RuleSpec::new(
            CRD,
            &["hostendpoints"],
            if m >= 30 {
                crud_watch
            } else {
                &["get", "list", "create", "update", "delete"]
            },
        ));
    }
    rules.push(if legacy {
        RuleSpec::new(CRD, &["clusterinformations"], &["get", "create", "update"])
    } else {
        RuleSpec::new(
            CRD,
            &["clusterinformations"],
            &["get", "list", "create", "update", "watch"],
        )
    });
    if !legacy {
        // Always with list: v3.29.2+ fails without it (projectcalico/calico#10073).
        rules.push(RuleSpec::new(
            CRD,
            &["kubecontrollersconfigurations"],
            &["get", "list", "create", "update", "watch"],
        ));
    }
    if m >= 31 {
        rules.push(RuleSpec::new(
            "",
            &["namespaces"],
            &["get", "list", "watch"],
        ));
    }
    for controller in controllers {
        rules.extend(controller_rules(controller)?);
    }
    Ok(rules)
}

/// Rules a controller needs beyond the node controller's (which are the version's base set).
fn controller_rules(controller: &str) -> Result<Vec<RuleSpec>> {
    Ok(match controller {
        "node" => Vec::new(),
        "loadbalancer" => vec![RuleSpec::new(
            "",
            &["services", "services/status"],
            &["get", "list", "update", "watch"],
        )],
        // What the incident review granted by hand for the pod/workloadendpoint controller.
        "workloadendpoint" => vec![
            RuleSpec::new("", &["pods"], &["watch", "list", "get"]),
            RuleSpec::new(
                CRD,
                &["workloadendpoints"],
                &["watch", "list", "get", "create", "update", "delete"],
            ),
        ],
        "policy" => vec![RuleSpec::new(
            "networking.k8s.io",
            &["networkpolicies"],
            &["watch", "list"],
        )],
        "namespace" => vec![RuleSpec::new(
            "",
            &["namespaces"],
            &["watch", "list", "get"],
        )],
        "serviceaccount" => vec![RuleSpec::new(
            "",
            &["serviceaccounts"],
            &["watch", "list", "get"],
        )],
        other => return Err(unknown_controller(other)),
    })
}

/// Normalised controller names: trimmed, lower-case, empty ones dropped.
fn controller_list<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    names
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty())
        .collect()
}

fn first_unknown_controller(list: &[String]) -> Option<&String> {
    list.iter()
        .find(|c| !CONTROLLERS.iter().any(|(n, _)| n == c))
}

fn known_controllers() -> String {
    CONTROLLERS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

fn unknown_controller(name: &str) -> Error {
    Error::CannotPlan {
        action: CalicoRbac::NAME,
        problem: format!(
            "unknown controller {name:?} (calico-kube-controllers exits on unknown names)"
        ),
        hint: format!(
            "known controllers: {}; fix ENABLED_CONTROLLERS or pass enabled_controllers or rules",
            known_controllers()
        ),
    }
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
        version: Option<Version>,
        controllers: Option<Vec<String>>,
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
}

/// The derived requirement, with what it was derived from.
#[derive(Debug, Clone, Default)]
struct Derivation {
    version: Option<Version>,
    controllers: Vec<String>,
    rules: Vec<RuleSpec>,
    service_account: Option<String>,
    warnings: Vec<String>,
}

/// What the plan found: the required rules, the role as read and what it lacks.
#[derive(Debug, Clone)]
pub struct Plan {
    required: Vec<RuleSpec>,
    current: Option<ClusterRole>,
    missing: Vec<Triple>,
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
    /// The controllers the rules were derived for, from O(enabled_controllers), the
    /// Deployment's ENABLED_CONTROLLERS or the version's defaults.
    ///
    /// Empty when O(rules) replaces the derivation.
    #[schemars(extend("x-sample" = ["node", "workloadendpoint"]))]
    pub enabled_controllers: Vec<String>,
    /// Every rule the role must grant, derived ones and O(extra_rules).
    pub required_rules: Vec<RuleSpec>,
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
}

/// A reviewed (ServiceAccount, permission) pair.
type Reviewed = ((String, String), Triple, Review);

/// Result of one SubjectAccessReview.
#[derive(Debug, Clone)]
struct Review {
    allowed: bool,
    reason: String,
}

impl Action for CalicoRbac {
    const NAME: &'static str = "calico_rbac";
    const ABOUT: &'static str =
        "Ensure the calico-kube-controllers ClusterRole grants what the running Calico needs";
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
            Some(text) => Some(Version::parse(text).ok_or_else(|| Error::InvalidOption {
                option: "calico_version".into(),
                problem: format!("{text:?} is not a version like v3.13.2"),
            })?),
            None => None,
        };
        let controllers = match &options.enabled_controllers {
            Some(list) => {
                let list = controller_list(list.iter().map(String::as_str));
                if let Some(bad) = first_unknown_controller(&list) {
                    return Err(Error::InvalidOption {
                        option: "enabled_controllers".into(),
                        problem: format!(
                            "unknown controller {bad:?}; known: {}",
                            known_controllers()
                        ),
                    });
                }
                Some(list)
            }
            None => None,
        };
        if let Some(version) = version {
            // Fail now, not after reading the cluster, when no table exists for the version.
            required_rules(version, &[])?;
        }
        for (index, rule) in options.extra_rules.iter().enumerate() {
            rule.check(&format!("extra_rules[{index}]"))?;
        }
        let requirement = match options.rules {
            Some(rules) => {
                if rules.is_empty() {
                    return Err(Error::InvalidOption {
                        option: "rules".into(),
                        problem: "must not be empty (omit it to derive the rules)".into(),
                    });
                }
                for (index, rule) in rules.iter().enumerate() {
                    rule.check(&format!("rules[{index}]"))?;
                }
                Requirement::Explicit(rules)
            }
            None => Requirement::Derived {
                version,
                controllers,
            },
        };
        Ok(Self {
            cluster: options.cluster,
            name: options.name,
            namespace: options.namespace,
            deployment: options.deployment,
            requirement,
            extra_rules: options.extra_rules,
            service_account: options.service_account,
        })
    }

    fn cluster_args(&self) -> &ClusterArgs {
        &self.cluster
    }

    /// Derives the required rules, finds who runs the controllers, reads the role and what it
    /// lacks. With nothing missing, verifies right away (the reviews only read).
    async fn plan(&self, cx: &Context, out: &mut Outcome<Report>) -> Result<Plan> {
        let cluster = &cx.cluster;
        let derivation = self.derive(cluster).await?;
        out.warnings.extend(derivation.warnings.iter().cloned());
        let mut required = derivation.rules.clone();
        required.extend(self.extra_rules.iter().cloned());
        out.report.clusterrole.clone_from(&self.name);
        out.report.calico_version = derivation.version.map(|v| v.to_string());
        out.report
            .enabled_controllers
            .clone_from(&derivation.controllers);
        out.report.required_rules.clone_from(&required);

        let subjects = self.subjects(cluster, &derivation, out).await?;
        out.report.service_accounts = subjects.iter().map(|(ns, n)| format!("{ns}/{n}")).collect();
        let current = self.read_role(cluster).await?;
        let missing = uncovered(&rules_of(current.as_ref()), &required);
        out.report.missing_before = group_rules(&missing);
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
        let required = out.report.required_rules.clone();
        self.verify_reviews(&cx.cluster, &subjects, &required, out)
            .await;
        out.msg = self.message(cx.check_mode, &out.report);
        Ok(())
    }
}

/// The rules of a role as read (none when absent).
fn rules_of(role: Option<&ClusterRole>) -> Vec<PolicyRule> {
    role.and_then(|r| r.rules.clone()).unwrap_or_default()
}

impl CalicoRbac {
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
        let (version, controllers) = match &self.requirement {
            Requirement::Explicit(rules) => {
                let deployment = self.read_deployment(cluster).await?;
                return Ok(Derivation {
                    rules: rules.clone(),
                    service_account: deployment.as_ref().map(service_account_of),
                    ..Derivation::default()
                });
            }
            Requirement::Derived {
                version,
                controllers,
            } => (*version, controllers.clone()),
        };
        let deployment = self.read_deployment(cluster).await?;
        let deployment_label = format!("deployment {}/{}", self.namespace, self.deployment);
        let mut derivation = Derivation {
            service_account: deployment.as_ref().map(service_account_of),
            ..Derivation::default()
        };
        let container = deployment.as_ref().and_then(kube_controllers_container);
        if deployment.is_none() && (version.is_none() || controllers.is_none()) {
            return Err(Error::NotFound {
                object: deployment_label,
                hint: "set namespace/deployment to where calico-kube-controllers runs, or pass \
                       calico_version and enabled_controllers (or rules)"
                    .into(),
            });
        }
        let version = match version {
            Some(v) => v,
            None => {
                let image = container.and_then(|c| c.image.clone()).unwrap_or_default();
                Version::from_image(&image).ok_or_else(|| Error::CannotPlan {
                    action: Self::NAME,
                    problem: format!(
                        "the image {image:?} of {deployment_label} has no version tag"
                    ),
                    hint: "pass calico_version, e.g. v3.13.2".into(),
                })?
            }
        };
        let controllers = match controllers {
            Some(list) => list,
            None => {
                self.controllers_from(cluster, container, version, &mut derivation.warnings)
                    .await?
            }
        };
        if version.major == 3 && version.minor > 31 {
            derivation.warnings.push(format!(
                "Calico {version} is newer than the rule table (up to v3.31); its v3.31 rules \
                 were used: check the upstream manifest for new permissions and pass extra_rules"
            ));
        }
        let etcd_only: Vec<&str> = controllers
            .iter()
            .filter(|c| CONTROLLERS.iter().any(|(n, kdd)| n == c && !kdd))
            .map(String::as_str)
            .collect();
        if !etcd_only.is_empty() {
            derivation.warnings.push(format!(
                "enabled controllers {} are meant for the etcd datastore; with the Kubernetes \
                 datastore upstream enables only node (and loadbalancer from v3.30). Their \
                 permissions are granted so that they stop failing, but consider removing them \
                 from ENABLED_CONTROLLERS",
                etcd_only.join(", ")
            ));
        }
        derivation.rules = required_rules(version, &controllers)?;
        derivation.version = Some(version);
        derivation.controllers = controllers;
        Ok(derivation)
    }

    async fn read_deployment(&self, cluster: &Cluster) -> Result<Option<Deployment>> {
        let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), &self.namespace);
        api.get_opt(&self.deployment).await.map_err(cluster.error(
            "get",
            format!("deployment {}/{}", self.namespace, self.deployment),
        ))
    }

    /// ENABLED_CONTROLLERS of the container, or what the version does without it.
    async fn controllers_from(
        &self,
        cluster: &Cluster,
        container: Option<&Container>,
        version: Version,
        warnings: &mut Vec<String>,
    ) -> Result<Vec<String>> {
        let env = container
            .and_then(|c| c.env.as_ref())
            .and_then(|env| env.iter().find(|e| e.name == "ENABLED_CONTROLLERS"));
        if let Some(var) = env {
            if let Some(value) = &var.value {
                let list = controller_list(value.split(','));
                if let Some(bad) = first_unknown_controller(&list) {
                    return Err(unknown_controller(bad));
                }
                return Ok(list);
            }
            if var.value_from.is_some() {
                return Err(Error::CannotPlan {
                    action: Self::NAME,
                    problem: format!(
                        "ENABLED_CONTROLLERS of deployment {}/{} comes from a reference \
                         (valueFrom) that kubemend does not resolve",
                        self.namespace, self.deployment
                    ),
                    hint: "pass enabled_controllers".into(),
                });
            }
        }
        if version.minor <= 13 {
            warnings.push(format!(
                "ENABLED_CONTROLLERS is not set; Calico {version} then runs its defaults ({})",
                V3_13_DEFAULT_CONTROLLERS.join(", ")
            ));
            return Ok(V3_13_DEFAULT_CONTROLLERS
                .iter()
                .map(|c| (*c).to_owned())
                .collect());
        }
        self.controllers_from_kcc(cluster, warnings).await
    }

    /// From v3.14 the KubeControllersConfiguration `default` lists the enabled controllers.
    async fn controllers_from_kcc(
        &self,
        cluster: &Cluster,
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
            warnings.push(
                "ENABLED_CONTROLLERS is not set and no KubeControllersConfiguration \"default\" \
                 lists controllers; assuming node"
                    .into(),
            );
            return Ok(vec!["node".into()]);
        }
        if let Some(bad) = first_unknown_controller(&names) {
            return Err(unknown_controller(bad));
        }
        Ok(names)
    }

    /// The ClusterRole with the missing permissions appended as readable rules.
    fn desired(&self, current: Option<&ClusterRole>, missing: &[Triple]) -> ClusterRole {
        let added: Vec<PolicyRule> = group_rules(missing)
            .iter()
            .map(RuleSpec::to_policy_rule)
            .collect();
        match current {
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
        }
    }

    /// ServiceAccounts (namespace, name) to verify, and a warning when the one running the
    /// controllers is not bound to the role.
    async fn subjects(
        &self,
        cluster: &Cluster,
        derivation: &Derivation,
        outcome: &mut Outcome<Report>,
    ) -> Result<Vec<(String, String)>> {
        let bindings: Api<ClusterRoleBinding> = Api::all(cluster.client.clone());
        let bound: Vec<(String, String)> = match bindings.list(&ListParams::default()).await {
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
                return Ok(self
                    .service_account
                    .clone()
                    .or_else(|| derivation.service_account.clone())
                    .map(|sa| vec![(self.namespace.clone(), sa)])
                    .unwrap_or_default());
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
                Ok(vec![subject])
            }
            None => {
                if bound.is_empty() {
                    outcome.warn(format!(
                        "no ServiceAccount to verify: no ClusterRoleBinding binds clusterrole {:?} \
                         to one; pass service_account",
                        self.name
                    ));
                }
                Ok(bound)
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
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(format!("system:serviceaccount:{namespace}:{name}")),
                groups: Some(vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{namespace}"),
                    "system:authenticated".into(),
                ]),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(triple.group.clone()),
                    resource: Some(resource),
                    subresource,
                    verb: Some(triple.verb.clone()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(cluster.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(cluster.error("create", "subjectaccessreview"))?;
        let status = answer.status.unwrap_or_default();
        Ok(Review {
            allowed: status.allowed,
            reason: status.reason.unwrap_or_default(),
        })
    }

    /// Reviews every (subject, permission), one after another.
    ///
    /// Why not in parallel: the client speaks HTTP/1.1, so each concurrent
    /// request opens a connection of its own and pays a TLS handshake, while
    /// one review on the kept-alive connection takes about a millisecond.
    /// Measured on the test bed, `calico-rbac --check` on the incident (eight
    /// reviews) went from about 60 ms with eight at a time to about 25 ms.
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
            .buffered(1)
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
        format!(
            "{verb} clusterrole {:?} for {source}: {}",
            self.name,
            summary.join("; ")
        )
    }
}

/// The container running kube-controllers: by name, else by image, else the first.
fn kube_controllers_container(deployment: &Deployment) -> Option<&Container> {
    let containers = &deployment.spec.as_ref()?.template.spec.as_ref()?.containers;
    containers
        .iter()
        .find(|c| c.name == "calico-kube-controllers")
        .or_else(|| {
            containers.iter().find(|c| {
                c.image
                    .as_deref()
                    .is_some_and(|i| i.contains("kube-controllers"))
            })
        })
        .or_else(|| containers.first())
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

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    #[test]
    fn versions_are_read_from_image_tags() {
        assert_eq!(
            Version::from_image("calico/kube-controllers:v3.13.2"),
            Some(v("3.13.2"))
        );
        assert_eq!(
            Version::from_image("registry:5000/calico/kube-controllers:v3.29.3@sha256:abc"),
            Some(v("v3.29.3"))
        );
        assert_eq!(
            Version::from_image("docker.io/calico/kube-controllers:v3.30.0-0.dev"),
            Some(v("3.30.0"))
        );
        assert_eq!(
            Version::from_image("registry:5000/calico/kube-controllers"),
            None
        );
        assert_eq!(Version::from_image("calico/kube-controllers:latest"), None);
        assert_eq!(Version::parse("3.13"), Some(v("3.13.0")));
        assert_eq!(Version::parse("3.x.1"), None);
    }

    #[test]
    fn incident_role_with_workloadendpoint_controller_misses_what_the_review_added_by_hand() {
        let required =
            required_rules(v("v3.13.2"), &["node".into(), "workloadendpoint".into()]).unwrap();
        let missing = uncovered(&v3_13_2_role(), &required);
        assert_eq!(
            missing,
            vec![
                triple("", "pods", "watch"),
                triple("", "pods", "list"),
                triple(CRD, "workloadendpoints", "watch"),
                triple(CRD, "workloadendpoints", "list"),
                triple(CRD, "workloadendpoints", "get"),
                triple(CRD, "workloadendpoints", "create"),
                triple(CRD, "workloadendpoints", "update"),
                triple(CRD, "workloadendpoints", "delete"),
            ]
        );
        assert_eq!(
            group_rules(&missing),
            vec![
                RuleSpec::new("", &["pods"], &["watch", "list"]),
                RuleSpec::new(
                    CRD,
                    &["workloadendpoints"],
                    &["watch", "list", "get", "create", "update", "delete"]
                ),
            ]
        );
    }

    #[test]
    fn v3_13_node_only_role_is_complete() {
        let required = required_rules(v("v3.13.2"), &["node".into()]).unwrap();
        assert!(uncovered(&v3_13_2_role(), &required).is_empty());
    }

    #[test]
    fn newer_versions_need_more() {
        let node = ["node".to_owned()];
        let has = |rules: &[RuleSpec], t: Triple| {
            rules.iter().flat_map(RuleSpec::triples).any(|x| x == t)
        };
        let r = required_rules(v("v3.29.7"), &node).unwrap();
        assert!(has(
            &r,
            triple(CRD, "kubecontrollersconfigurations", "list")
        ));
        assert!(has(&r, triple(CRD, "tiers", "watch")));
        assert!(!has(&r, triple(CRD, "ipamconfigs", "get")));
        let r = required_rules(v("v3.30.7"), &["node".into(), "loadbalancer".into()]).unwrap();
        assert!(has(&r, triple(CRD, "ipamconfigs", "get")));
        assert!(has(&r, triple("", "services/status", "update")));
        assert!(has(&r, triple(CRD, "hostendpoints", "watch")));
        let r = required_rules(v("v3.31.7"), &node).unwrap();
        assert!(has(&r, triple("", "namespaces", "watch")));
        assert!(required_rules(v("v3.13.2"), &["bogus".into()]).is_err());
        assert!(required_rules(v("v4.0.0"), &node).is_err());
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
    fn invalid_options_are_refused_before_any_call() {
        let validate =
            |v: serde_json::Value| CalicoRbac::validate(serde_json::from_value(v).unwrap());
        assert!(validate(serde_json::json!({"name": "Bad_Name"})).is_err());
        assert!(validate(serde_json::json!({"namespace": "a.b"})).is_err());
        assert!(validate(serde_json::json!({"calico_version": "three"})).is_err());
        assert!(validate(serde_json::json!({"enabled_controllers": ["node", "nope"]})).is_err());
        assert!(validate(serde_json::json!({"rules": []})).is_err());
        let err = validate(serde_json::json!({"extra_rules": [{"api_groups": [""], "resources": [], "verbs": ["get"]}]}))
            .unwrap_err();
        assert!(
            err.to_string().contains("extra_rules[0].resources"),
            "{err}"
        );
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
