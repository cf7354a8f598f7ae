//! diagnose: the incident's runbook as one read-only check of the cluster.
//!
//! Each check looks at one thing the incident review had to find by hand and turns what it
//! sees into findings: an id, a severity (info, warning, critical), the object, the evidence
//! (numbers and timestamps, also as `data`) and a hint naming the kubemend action, with its
//! options, that remedies it (`fix`). The checks that another action already knows how to
//! judge call that action's read-only plan ([`Action::plan`] on a scratch [`Outcome`], in check
//! mode), so diagnose and the remedy cannot disagree:
//!
//! 1. `calico_rbac`: what calico_rbac would add to the calico-kube-controllers ClusterRole,
//!    with the SubjectAccessReview its plan makes for each missing permission.
//! 2. `rbac_enforced`: a SubjectAccessReview for a made-up user with no bindings, asking to
//!    delete secrets in kube-system; allowed means RBAC is not enforced (microk8s defaults to
//!    `--authorization-mode=AlwaysAllow`).
//! 3. `stale_webhook`: webhook configurations with a stale webhook, by stale_webhook's
//!    evidence; failurePolicy Fail (every matching request is refused) is critical, Ignore
//!    (every matching request waits for the timeout) a warning.
//! 4. `stuck_pods`: pods Pending that the scheduler never saw and pods Terminating past their
//!    grace, by stuck_pods's rules, counted per namespace.
//! 5. `leader_leases`: the kube-scheduler and kube-controller-manager Leases: holder, age of
//!    the last renewal, leaseTransitions (more than `lease_transitions`: a warning).
//! 6. `node_leases`: nodes Ready although their node Lease expired (microk8s 1.34/1.35: a
//!    powered-off node can stay Ready until kubelite is restarted on a healthy node).
//! 7. `calico_version`: the running Calico release against the Kubernetes releases it is
//!    documented to be tested on ([`CALICO_SUPPORT`]).
//! 8. `apiserver_403`: the answering API server's `apiserver_request_total{code="403"}`
//!    against its uptime (`process_start_time_seconds`), from `/metrics`.
//! 9. `kubelite`: each control-plane node over SSH (only when an SSH option or `nodes` is
//!    given; else skipped): `database is locked` errors in the kubelite and k8s-dqlite
//!    journals over `window` (more than `locked_per_hour`: a warning), dqlite's voters and
//!    leader (no leader or fewer than three voters: critical), the dqlite snapshot files
//!    against the live data (dqlite's `SELECT SUM(LENGTH(value)) FROM kine`; more than
//!    `snapshot_ratio` times it: a warning), the restart-escalation risk (a warning), the
//!    apiserver's `--authorization-mode` (AlwaysAllow: critical) and, on Kubernetes 1.34, the
//!    feature gates microk8s turns off for dqlite (missing: a warning). A node SSH cannot
//!    reach, or whose reads outlast [`NODE_BUDGET`] (a hung command), gets a warning naming
//!    why, and the other nodes are still checked; when no node could be read, every node has
//!    its warning (so `fail_on: warning` is reached). At most [`ssh::MAX_PARALLEL`] nodes are
//!    read at once.
//!
//! A check that cannot run (permission denied, Calico not installed, a timeout) is listed in
//! `checks` as skipped with the reason; the other checks still run.
//!
//! # Idempotency
//! Nothing is written: `changed` is always false.
//!
//! # Check mode
//! The same: every check only reads (SubjectAccessReviews are reads that the API server
//! answers without storing anything).
//!
//! # Errors
//! Invalid options fail before any API call. A check that fails is skipped, never the run;
//! the run fails only when the cluster cannot be reached at all or the timeout expires (the
//! checks done by then are kept).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use clap::{Args, ValueEnum};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, PostParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::calico_rbac::{self, CalicoRbac};
use super::stale_webhook::{self, StaleWebhook};
use super::stuck_pods::{self, StuckKind, StuckPods};
use super::{Action, Context};
use crate::calico_rules::CalicoVersion as Version;
use crate::client::{Cluster, ClusterArgs};
use crate::error::{Error, Result};
use crate::k8s::duration::{Duration, format_ago, format_duration, seconds_since};
use crate::k8s::events;
use crate::k8s::lease::lease_held;
use crate::k8s::names::check_label;
use crate::k8s::nodes::{NodeInfo, read_nodes};
use crate::microk8s::{self, NodeSpec, NodeTarget, check_nodes};
use crate::outcome::Outcome;
use crate::ssh::{self, Remote, SshArgs, Target};

/// Pod names shown in the evidence of one finding; the rest are counted.
const NAMES_SHOWN: usize = 5;

/// Most stuck pods the `stuck_pods` check collects in detail (its counts are exact).
const STUCK_PODS_DETAIL: u32 = 500;

/// Run the incident's runbook as one read-only check and name the kubemend action that fixes
/// each finding.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, Args)]
pub struct Options {
    #[serde(flatten)]
    #[command(flatten)]
    #[allow(missing_docs, reason = "documented field by field in ClusterArgs")]
    pub cluster: ClusterArgs,

    /// The checks to run (default: all): calico_rbac, rbac_enforced, stale_webhook,
    /// stuck_pods, leader_leases, node_leases, calico_version, apiserver_403, kubelite.
    #[arg(long, value_enum, value_name = "CHECK", value_delimiter = ',')]
    #[serde(default = "all_checks")]
    pub checks: Vec<Check>,

    /// Namespaces the stuck_pods check looks in (default: all).
    #[arg(long, value_name = "NAMESPACE", value_delimiter = ',')]
    #[serde(default)]
    pub namespaces: Vec<String>,

    /// How long past its deletion deadline a Terminating pod must be to count as stuck, as for
    /// stuck_pods, e.g. 90s, 10m.
    #[arg(long, value_name = "DURATION")]
    #[serde(default = "default_terminating_grace")]
    pub terminating_grace: Duration,

    /// How old a Pending pod that the scheduler never saw must be to count as stuck, as for
    /// stuck_pods, e.g. 90s, 10m.
    #[arg(long, value_name = "DURATION")]
    #[serde(default = "default_pending_age")]
    pub pending_age: Duration,

    /// Leader changes of the kube-scheduler or kube-controller-manager Lease within window
    /// (their LeaderElection Events; changes that kubemend's own kubelite restarts caused do
    /// not count) above which leader election counts as churning (a warning). The lifetime
    /// leaseTransitions is reported, never judged: a cluster that churned for years and is
    /// stable now has no warning.
    #[arg(long, value_name = "N")]
    #[serde(default = "default_lease_transitions")]
    pub lease_transitions: u32,

    /// 403 (Forbidden) answers per minute above which the apiserver_403 check warns:
    /// something keeps asking for what it may not do (the review's alert: more than 10 a
    /// minute). Judged on the rate measured during the run (two reads of /metrics at least
    /// 10s apart), else on the average since the API server started.
    #[arg(long, value_name = "N")]
    #[serde(default = "default_forbidden_per_minute")]
    pub forbidden_per_minute: u32,

    /// Watch-stream errors (`Failed to watch`, `watch ended with error`) per 10 minutes in a
    /// node's kubelite journal above which the kubelite check warns (the review's alert: more
    /// than 1 in 10 minutes): the scheduler or controller-manager keeps losing its watches,
    /// and pods created meanwhile can go unseen.
    #[arg(long, value_name = "N")]
    #[serde(default = "default_watch_errors_per_10m")]
    pub watch_errors_per_10m: u32,

    /// Set the result key fail_on_reached, and make the CLI exit 3, when a finding is at
    /// least this severe: never (the default), warning or critical.
    #[arg(long, value_enum, value_name = "SEVERITY")]
    #[serde(default)]
    pub fail_on: FailOn,

    #[serde(flatten)]
    #[command(flatten)]
    #[allow(missing_docs, reason = "documented field by field in SshArgs")]
    pub ssh: SshArgs,

    /// The nodes the kubelite check reaches over SSH, each a node name or a mapping {name,
    /// host, port, user}, as for kubelite_restart. Default: the nodes labelled
    /// node.kubernetes.io/microk8s-controlplane, else every node, each reached by its name.
    /// The kubelite check runs only when an SSH option (ssh_config, ssh_user, ssh_port,
    /// ssh_private_key_file, known_hosts) or nodes is given.
    #[arg(long, value_name = "NODE", value_delimiter = ',')]
    #[serde(default)]
    pub nodes: Option<Vec<NodeSpec>>,

    /// How far back diagnose looks for what happens now: `database is locked` errors and
    /// watch-stream errors in the journals (kubelite check), leader changes (leader_leases
    /// check), e.g. 15m, 1h. Events, which tell the leader changes, live 1h by default.
    #[arg(long, value_name = "DURATION")]
    #[serde(default = "default_window")]
    pub window: Duration,

    /// `database is locked` errors per hour (over window) above which a node gets a warning.
    #[arg(long, value_name = "N")]
    #[serde(default = "default_locked_per_hour")]
    pub locked_per_hour: u32,

    /// How many times the live dqlite data the snapshot files may add up to before a node
    /// gets a warning.
    #[arg(long, value_name = "N")]
    #[serde(default = "default_snapshot_ratio")]
    #[schemars(range(min = 1))]
    pub snapshot_ratio: u32,
}

fn default_window() -> Duration {
    Duration::from_secs(900)
}

fn default_locked_per_hour() -> u32 {
    10
}

fn default_snapshot_ratio() -> u32 {
    5
}

fn all_checks() -> Vec<Check> {
    Check::ALL.to_vec()
}

fn default_terminating_grace() -> Duration {
    Duration::from_secs(300)
}

fn default_pending_age() -> Duration {
    Duration::from_secs(600)
}

fn default_lease_transitions() -> u32 {
    1
}

fn default_forbidden_per_minute() -> u32 {
    10
}

fn default_watch_errors_per_10m() -> u32 {
    1
}

/// One check of the runbook.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Deserialize,
    Serialize,
    JsonSchema,
    ValueEnum,
)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Check {
    /// What calico_rbac would add to the calico-kube-controllers ClusterRole.
    CalicoRbac,
    /// Whether the API server enforces RBAC at all.
    RbacEnforced,
    /// Webhook configurations whose backend is gone.
    StaleWebhook,
    /// Pods Pending unseen by the scheduler, pods Terminating past their grace.
    StuckPods,
    /// The kube-scheduler and kube-controller-manager Leases.
    LeaderLeases,
    /// Nodes Ready although their Lease expired.
    NodeLeases,
    /// The Calico release against the Kubernetes release.
    CalicoVersion,
    /// 403 answers of the API server against its uptime.
    #[serde(rename = "apiserver_403")]
    #[value(name = "apiserver_403")]
    Apiserver403,
    /// kubelite on each node, over SSH.
    Kubelite,
}

impl Check {
    /// Every check, in the order they run.
    pub const ALL: [Self; 9] = [
        Self::CalicoRbac,
        Self::RbacEnforced,
        Self::StaleWebhook,
        Self::StuckPods,
        Self::LeaderLeases,
        Self::NodeLeases,
        Self::CalicoVersion,
        Self::Apiserver403,
        Self::Kubelite,
    ];

    /// The name in results and metrics.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::CalicoRbac => "calico_rbac",
            Self::RbacEnforced => "rbac_enforced",
            Self::StaleWebhook => "stale_webhook",
            Self::StuckPods => "stuck_pods",
            Self::LeaderLeases => "leader_leases",
            Self::NodeLeases => "node_leases",
            Self::CalicoVersion => "calico_version",
            Self::Apiserver403 => "apiserver_403",
            Self::Kubelite => "kubelite",
        }
    }
}

/// How severe a finding is.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; nothing to do.
    #[default]
    Info,
    /// Something to fix soon.
    Warning,
    /// Something breaking the cluster now, or about to.
    Critical,
}

impl Severity {
    /// Every severity, mildest first.
    pub const ALL: [Self; 3] = [Self::Info, Self::Warning, Self::Critical];

    /// The name in results and metrics.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// The severity from which findings count as an alert.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema, ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum FailOn {
    /// Never.
    #[default]
    Never,
    /// A warning or critical finding.
    Warning,
    /// A critical finding.
    Critical,
}

impl FailOn {
    fn reached_by(self, severity: Severity) -> bool {
        match self {
            Self::Never => false,
            Self::Warning => severity >= Severity::Warning,
            Self::Critical => severity >= Severity::Critical,
        }
    }
}

/// Exit status of the CLI when a finding reaches `fail_on`.
pub const EXIT_FINDINGS: i32 = 3;

/// Which Kubernetes minor releases each Calico minor release is documented to be tested on
/// (the "Kubernetes requirements" of its system requirements page), with the source. A
/// release not listed is reported as unknown (info), not as unsupported.
pub const CALICO_SUPPORT: &[(u32, (u32, u32), &str)] = &[
    (
        13,
        (15, 17),
        "projectcalico/calico:getting-started/kubernetes/requirements.md@v3.13.1",
    ),
    (
        26,
        (24, 28),
        "tigera/docs:calico_versioned_docs/version-3.26/getting-started/kubernetes/requirements.mdx@04b54fcb",
    ),
    (
        28,
        (27, 30),
        "tigera/docs:calico_versioned_docs/version-3.28/getting-started/kubernetes/requirements.mdx@1054f3f9",
    ),
    (
        29,
        (29, 31),
        "tigera/docs:calico_versioned_docs/version-3.29/getting-started/kubernetes/requirements.mdx@01059829",
    ),
];

// ---------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------

/// The result keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    /// Everything the checks found, most severe first.
    pub findings: Vec<Finding>,
    /// How many findings of each severity, and how many checks were skipped.
    pub summary: Summary,
    /// Every check asked for: whether it ran or was skipped, and why.
    pub checks: Vec<CheckReport>,
    /// Whether a finding is at least as severe as O(fail_on); the CLI then exits 3.
    #[schemars(extend("x-sample" = false))]
    pub fail_on_reached: bool,
}

/// One finding.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Finding {
    /// Stable identifier, C(check:object), for alerts and silences.
    #[schemars(extend(
        "x-sample" = "stale_webhook:mutatingwebhookconfiguration/newrelic-bundle-nri-metadata-injection"
    ))]
    pub id: String,
    /// The check that found it.
    #[schemars(extend("x-sample" = "stale_webhook"))]
    pub check: String,
    /// C(info), C(warning) or C(critical).
    pub severity: Severity,
    /// What it is about, e.g. C(clusterrole/calico-kube-controllers) or C(namespace/ci).
    pub object: String,
    /// What was seen, for people.
    pub evidence: String,
    /// The numbers and timestamps behind the evidence.
    #[schemars(with = "Map<String, Value>")]
    pub data: Map<String, Value>,
    /// What to do about it.
    pub hint: String,
    /// The kubemend action that remedies it, with its options.
    ///
    /// V(null) when no kubemend action does.
    pub fix: Option<Fix>,
}

/// A kubemend action that remedies a finding.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Fix {
    /// The module name, e.g. C(stale_webhook).
    pub module: String,
    /// Its options.
    #[schemars(with = "Map<String, Value>")]
    pub options: Map<String, Value>,
    /// The same as a command line.
    #[schemars(extend(
        "x-sample" = "kubemend stale-webhook --name newrelic-bundle-nri-metadata-injection"
    ))]
    pub command: String,
}

/// Counts of the findings by severity.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    /// Info findings.
    pub info: usize,
    /// Warnings.
    pub warning: usize,
    /// Critical findings.
    pub critical: usize,
    /// Checks skipped.
    pub skipped: usize,
}

/// One check asked for.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct CheckReport {
    /// The check.
    pub check: String,
    /// C(ran) or C(skipped).
    pub status: String,
    /// Why it was skipped, e.g. permission denied.
    ///
    /// V(null) when it ran.
    pub reason: Option<String>,
    /// How many findings it made.
    pub findings: usize,
}

// ---------------------------------------------------------------------------------------------
// The action
// ---------------------------------------------------------------------------------------------

/// The validated action.
#[derive(Debug, Clone)]
pub struct Diagnose {
    cluster: ClusterArgs,
    checks: Vec<Check>,
    namespaces: Vec<String>,
    terminating_grace: Duration,
    pending_age: Duration,
    lease_transitions: u32,
    forbidden_per_minute: u32,
    watch_errors_per_10m: u32,
    fail_on: FailOn,
    ssh: SshArgs,
    ssh_given: bool,
    nodes: Option<Vec<NodeTarget>>,
    window: Duration,
    locked_per_hour: u32,
    snapshot_ratio: u32,
}

/// Nothing to carry from plan to apply: the checks are the plan.
#[derive(Debug, Clone, Copy)]
pub struct Plan;

impl Action for Diagnose {
    const NAME: &'static str = "diagnose";
    const ABOUT: &'static str =
        "Run the incident's runbook read-only and name the kubemend action for each finding";
    type Options = Options;
    type Plan = Plan;
    type Report = Report;

    fn validate(options: Options) -> Result<Self> {
        if options.checks.is_empty() {
            return Err(Error::InvalidOption {
                option: "checks".into(),
                problem: "must name at least one check (omit it to run them all)".into(),
            });
        }
        options.ssh.check()?;
        options.window.require_positive("window")?;
        if options.snapshot_ratio == 0 {
            return Err(Error::InvalidOption {
                option: "snapshot_ratio".into(),
                problem: "must be at least 1".into(),
            });
        }
        let ssh_given = options.ssh.given() || options.nodes.is_some();
        let nodes = check_nodes(options.nodes)?;
        let mut checks = options.checks;
        checks.sort();
        checks.dedup();
        let mut namespaces = Vec::new();
        for (index, name) in options.namespaces.iter().enumerate() {
            let name = name.trim();
            if name.is_empty() {
                continue;
            }
            check_label(&format!("namespaces[{index}]"), name)?;
            if !namespaces.iter().any(|n| n == name) {
                namespaces.push(name.to_owned());
            }
        }
        Ok(Self {
            cluster: options.cluster,
            checks,
            namespaces,
            terminating_grace: options.terminating_grace,
            pending_age: options.pending_age,
            lease_transitions: options.lease_transitions,
            forbidden_per_minute: options.forbidden_per_minute,
            watch_errors_per_10m: options.watch_errors_per_10m,
            fail_on: options.fail_on,
            ssh_given,
            ssh: options.ssh,
            nodes,
            window: options.window,
            locked_per_hour: options.locked_per_hour,
            snapshot_ratio: options.snapshot_ratio,
        })
    }

    fn cluster_args(&self) -> &ClusterArgs {
        &self.cluster
    }

    /// Runs every check asked for, one after another, recording each as it ends.
    async fn plan(&self, cx: &Context, out: &mut Outcome<Report>) -> Result<Plan> {
        // When the action's timeout ends (it began a moment before, with connecting).
        let deadline = cx.deadline.map_or_else(
            || tokio::time::Instant::now() + self.cluster.timeout_or(Self::DEFAULT_TIMEOUT),
            tokio::time::Instant::from_std,
        );
        let scratch = Context {
            cluster: cx.cluster.clone(),
            check_mode: true,
            diff: false,
            progress: false,
            deadline: cx.deadline,
        };
        let mut calico: Option<std::result::Result<calico_rbac::Report, String>> = None;
        // The first read of the 403 counters, for the rate of now (a failure here is left to
        // the check's own read to report).
        let mut first_forbidden = if self.checks.contains(&Check::Apiserver403) {
            read_forbidden(&cx.cluster)
                .await
                .ok()
                .map(|f| (tokio::time::Instant::now(), f))
        } else {
            None
        };
        for check in self.checks.clone() {
            let result = match check {
                Check::CalicoRbac => {
                    let run = calico_plan(&scratch).await;
                    let findings = run.as_ref().map_err(Clone::clone).map(calico_rbac_findings);
                    calico = Some(run);
                    findings
                }
                Check::RbacEnforced => rbac_enforced(&cx.cluster).await.map_err(reason),
                Check::StaleWebhook => self.stale_webhooks(&scratch).await,
                Check::StuckPods => self.stuck_pods(&scratch).await,
                Check::LeaderLeases => self.leader_leases(&cx.cluster).await.map_err(reason),
                Check::NodeLeases => read_nodes(&cx.cluster)
                    .await
                    .map(|nodes| node_lease_findings(&nodes, Timestamp::now()))
                    .map_err(reason),
                Check::CalicoVersion => {
                    if calico.is_none() {
                        calico = Some(calico_plan(&scratch).await);
                    }
                    match calico.as_ref() {
                        Some(Ok(report)) => calico_version(&cx.cluster, report).await,
                        Some(Err(why)) => Err(why.clone()),
                        None => Err("the calico_rbac plan did not run".into()),
                    }
                }
                Check::Apiserver403 => self
                    .apiserver_403(&cx.cluster, first_forbidden.take())
                    .await
                    .map_err(reason),
                Check::Kubelite if self.ssh_given => {
                    self.kubelite(&cx.cluster, deadline, cx.check_mode).await
                }
                Check::Kubelite => Err("no SSH options given".into()),
            };
            record(out, check, result);
        }
        finish(&mut out.report, self.fail_on);
        out.msg = message(&out.report);
        Ok(Plan)
    }

    /// Nothing to apply: diagnose only reads.
    async fn apply(&self, _cx: &Context, _plan: Plan, _out: &mut Outcome<Report>) -> Result<()> {
        Ok(())
    }

    /// Nothing to verify: nothing was changed.
    async fn verify(&self, _cx: &Context, _out: &mut Outcome<Report>) -> Result<()> {
        Ok(())
    }
}

/// Why a check could not run, for `checks[].reason`.
#[allow(
    clippy::needless_pass_by_value,
    reason = "taken by value to be used as `map_err(reason)`"
)]
fn reason(error: Error) -> String {
    let message = error.message_with_causes();
    match error.api_status() {
        Some(403) => format!("permission denied: {message}"),
        _ => message,
    }
}

/// Files a check's result: its findings, or it as skipped.
fn record(
    out: &mut Outcome<Report>,
    check: Check,
    result: std::result::Result<Vec<Finding>, String>,
) {
    let report = &mut out.report;
    match result {
        Ok(findings) => {
            report.checks.push(CheckReport {
                check: check.name().into(),
                status: "ran".into(),
                reason: None,
                findings: findings.len(),
            });
            report.findings.extend(findings);
        }
        Err(why) => report.checks.push(CheckReport {
            check: check.name().into(),
            status: "skipped".into(),
            reason: Some(why),
            findings: 0,
        }),
    }
}

/// Sorts the findings (most severe first, stable within a severity), counts them and sets
/// `fail_on_reached`.
fn finish(report: &mut Report, fail_on: FailOn) {
    report
        .findings
        .sort_by_key(|f| std::cmp::Reverse(f.severity));
    let count = |s: Severity| report.findings.iter().filter(|f| f.severity == s).count();
    report.summary = Summary {
        info: count(Severity::Info),
        warning: count(Severity::Warning),
        critical: count(Severity::Critical),
        skipped: report
            .checks
            .iter()
            .filter(|c| c.status == "skipped")
            .count(),
    };
    report.fail_on_reached = report
        .findings
        .iter()
        .any(|f| fail_on.reached_by(f.severity));
}

fn message(report: &Report) -> String {
    let s = &report.summary;
    let mut msg = format!(
        "{} critical, {} warning, {} info finding(s) from {} check(s)",
        s.critical,
        s.warning,
        s.info,
        report.checks.len() - s.skipped
    );
    if s.skipped > 0 {
        let skipped: Vec<&str> = report
            .checks
            .iter()
            .filter(|c| c.status == "skipped")
            .map(|c| c.check.as_str())
            .collect();
        let _ = write!(msg, "; skipped: {}", skipped.join(", "));
    }
    msg
}

/// A finding's fix: `module` with `options`, and the same as a command line.
#[must_use]
pub fn fix(module: &str, options: &Value) -> Fix {
    let options = options.as_object().cloned().unwrap_or_default();
    let mut command = format!("kubemend {}", module.replace('_', "-"));
    for (key, value) in &options {
        let flag = key.replace('_', "-");
        match value {
            Value::Bool(true) => {
                let _ = write!(command, " --{flag}");
            }
            Value::Bool(false) | Value::Null => {}
            Value::Array(items) => {
                let items: Vec<String> = items.iter().map(text_of).collect();
                let _ = write!(command, " --{flag} {}", items.join(","));
            }
            other => {
                let _ = write!(command, " --{flag} {}", text_of(other));
            }
        }
    }
    Fix {
        module: module.into(),
        options,
        command,
    }
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A finding with its id made from check and object.
fn finding(check: Check, severity: Severity, object: String, evidence: String) -> Finding {
    Finding {
        id: format!("{}:{object}", check.name()),
        check: check.name().into(),
        severity,
        object,
        evidence,
        ..Finding::default()
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Calico RBAC (and 7. its version): calico_rbac's plan
// ---------------------------------------------------------------------------------------------

/// calico_rbac's plan with its defaults, on a scratch outcome; a failure is the skip reason.
async fn calico_plan(cx: &Context) -> std::result::Result<calico_rbac::Report, String> {
    let action = serde_json::from_value::<calico_rbac::Options>(json!({}))
        .map_err(|e| format!("calico_rbac options: {e}"))
        .and_then(|options| CalicoRbac::validate(options).map_err(reason))?;
    let mut scratch = Outcome::default();
    match action.plan(cx, &mut scratch).await {
        Ok(_) => Ok(scratch.report),
        Err(error @ Error::NotFound { .. }) => Err(format!(
            "calico-kube-controllers is not installed here: {}",
            error.message_with_causes()
        )),
        Err(error) => Err(reason(error)),
    }
}

/// The gap calico_rbac would close, confirmed (or not) by its SubjectAccessReviews.
fn calico_rbac_findings(report: &calico_rbac::Report) -> Vec<Finding> {
    let object = format!("clusterrole/{}", report.clusterrole);
    let version = report.calico_version.clone().unwrap_or_default();
    if report.missing_before.is_empty() {
        let mut f = finding(
            Check::CalicoRbac,
            Severity::Info,
            object,
            format!(
                "grants everything calico-kube-controllers {version} ({}) needs",
                report.enabled_controllers.join(", ")
            ),
        );
        "nothing to do".clone_into(&mut f.hint);
        return vec![f];
    }
    let missing: Vec<String> = report
        .missing_before
        .iter()
        .map(|r| {
            let groups: Vec<&str> = r
                .api_groups
                .iter()
                .map(|g| if g.is_empty() { "core" } else { g.as_str() })
                .collect();
            format!(
                "{} ({}): {}",
                r.resources.join(", "),
                groups.join(", "),
                r.verbs.join(", ")
            )
        })
        .collect();
    let permissions: usize = report
        .missing_before
        .iter()
        .map(|r| r.api_groups.len() * r.resources.len() * r.verbs.len())
        .sum();
    let mut evidence = format!(
        "calico-kube-controllers {version} ({}) needs {permissions} permission(s) the role lacks: {}",
        report.enabled_controllers.join(", "),
        missing.join("; ")
    );
    let severity = match &report.denied_before {
        Some(denied) if denied.is_empty() => {
            evidence.push_str(
                "; SubjectAccessReview allows them anyway (RBAC not enforced, or another \
                 binding), so nothing is refused yet",
            );
            Severity::Warning
        }
        Some(denied) => {
            let _ = write!(
                evidence,
                "; SubjectAccessReview denies {} of them to {}",
                denied.len(),
                report.service_accounts.join(", ")
            );
            Severity::Critical
        }
        None => {
            evidence.push_str("; not confirmed by SubjectAccessReview (no review could be made)");
            Severity::Critical
        }
    };
    let mut f = finding(Check::CalicoRbac, severity, object, evidence);
    f.data.insert("calico_version".into(), json!(version));
    f.data
        .insert("missing_permissions".into(), json!(permissions));
    f.data
        .insert("missing_rules".into(), json!(report.missing_before));
    f.data
        .insert("denied_before".into(), json!(report.denied_before));
    f.hint = "add the missing permissions to the ClusterRole (only adds, never removes a rule): \
              the controllers stop failing their list calls"
        .into();
    f.fix = Some(fix("calico_rbac", &json!({})));
    vec![f]
}

/// The Calico release against the Kubernetes release of the API server.
async fn calico_version(
    cluster: &Cluster,
    report: &calico_rbac::Report,
) -> std::result::Result<Vec<Finding>, String> {
    let Some(calico) = report
        .calico_version
        .as_deref()
        .and_then(|v| Version::parse(v).ok())
    else {
        return Err("the Calico version is unknown (no version tag on the image)".into());
    };
    let info = cluster
        .client
        .apiserver_version()
        .await
        .map_err(|e| reason(cluster.error("get", "/version")(e)))?;
    let minor: u32 = info.minor.trim_end_matches('+').parse().map_err(|_| {
        format!(
            "the API server's minor version {:?} is no number",
            info.minor
        )
    })?;
    Ok(vec![calico_version_finding(
        calico,
        &info.git_version,
        minor,
    )])
}

/// Judges Calico `calico` on Kubernetes 1.`minor` (`kubernetes` as the server gives it).
#[must_use]
pub fn calico_version_finding(calico: Version, kubernetes: &str, minor: u32) -> Finding {
    let object = format!("calico/{calico}");
    let known = (calico.major == 3)
        .then(|| CALICO_SUPPORT.iter().find(|(m, _, _)| *m == calico.minor))
        .flatten();
    let Some((_, (low, high), source)) = known else {
        let mut f = finding(
            Check::CalicoVersion,
            Severity::Info,
            object,
            format!(
                "Calico {calico} on Kubernetes {kubernetes}: this release is not in kubemend's \
                 support table"
            ),
        );
        "check the Kubernetes requirements of its system requirements page".clone_into(&mut f.hint);
        return f;
    };
    let tested = format!("v1.{low}-v1.{high}");
    let supported = (*low..=*high).contains(&minor);
    let mut f = finding(
        Check::CalicoVersion,
        if supported {
            Severity::Info
        } else {
            Severity::Warning
        },
        object,
        format!(
            "Calico {calico} is tested on Kubernetes {tested}; the cluster runs {kubernetes}{}",
            if supported { "" } else { ": unsupported" }
        ),
    );
    f.data
        .insert("calico_version".into(), json!(calico.to_string()));
    f.data
        .insert("kubernetes_version".into(), json!(kubernetes));
    f.data.insert("tested_kubernetes".into(), json!(tested));
    f.data.insert("source".into(), json!(source));
    if supported {
        "nothing to do".clone_into(&mut f.hint);
    } else {
        f.hint = format!(
            "upgrade Calico to a release tested on v1.{minor} (kubemend does not upgrade Calico; \
             on microk8s never re-apply the old cni.yaml), then run calico_rbac for the new \
             release's permissions"
        );
        f.fix = Some(fix("calico_rbac", &json!({})));
    }
    f
}

// ---------------------------------------------------------------------------------------------
// 2. RBAC enforced
// ---------------------------------------------------------------------------------------------

/// The made-up user of the RBAC probe: no binding names it.
const NOBODY: &str = "kubemend:diagnose:no-such-user";

async fn rbac_enforced(cluster: &Cluster) -> Result<Vec<Finding>> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(NOBODY.into()),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some("kube-system".into()),
                resource: Some("secrets".into()),
                verb: Some("delete".into()),
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
    Ok(vec![rbac_finding(
        status.allowed,
        status.reason.as_deref().unwrap_or_default(),
    )])
}

/// The finding of the RBAC probe.
#[must_use]
pub fn rbac_finding(allowed: bool, why: &str) -> Finding {
    let why = if why.is_empty() {
        String::new()
    } else {
        format!(" (reason: {why})")
    };
    let mut f = if allowed {
        let mut f = finding(
            Check::RbacEnforced,
            Severity::Critical,
            "apiserver/authorization".into(),
            format!(
                "a user no binding names ({NOBODY}) is allowed to delete secrets in kube-system{why}: \
                 RBAC is not enforced"
            ),
        );
        "enable RBAC (`microk8s enable rbac`: --authorization-mode=RBAC,Node); until then every \
         authenticated client may do anything and ClusterRole fixes change nothing; no kubemend \
         action does this"
            .clone_into(&mut f.hint);
        f
    } else {
        let mut f = finding(
            Check::RbacEnforced,
            Severity::Info,
            "apiserver/authorization".into(),
            format!("a user no binding names may not delete secrets in kube-system{why}"),
        );
        "nothing to do".clone_into(&mut f.hint);
        f
    };
    f.data.insert("allowed".into(), json!(allowed));
    f
}

// ---------------------------------------------------------------------------------------------
// 3. Stale webhooks: stale_webhook's plan
// ---------------------------------------------------------------------------------------------

impl Diagnose {
    async fn stale_webhooks(&self, cx: &Context) -> std::result::Result<Vec<Finding>, String> {
        let action = serde_json::from_value::<stale_webhook::Options>(json!({"detect": true}))
            .map_err(|e| format!("stale_webhook options: {e}"))
            .and_then(|options| StaleWebhook::validate(options).map_err(reason))?;
        let mut scratch = Outcome::default();
        action.plan(cx, &mut scratch).await.map_err(reason)?;
        Ok(webhook_findings(&scratch.report))
    }
}

/// A finding per configuration with at least one stale webhook.
#[must_use]
pub fn webhook_findings(report: &stale_webhook::Report) -> Vec<Finding> {
    let mut findings = Vec::new();
    for configuration in &report.configurations {
        let stale: Vec<&stale_webhook::WebhookReport> = configuration
            .webhooks
            .iter()
            .filter(|w| w.verdict == "stale")
            .collect();
        if stale.is_empty() {
            continue;
        }
        let blocking = stale.iter().any(|w| w.failure_policy == "Fail");
        let evidence: Vec<String> = stale
            .iter()
            .map(|w| {
                format!(
                    "webhook {} ({}, failurePolicy {}): {}",
                    w.name, w.target, w.failure_policy, w.reason
                )
            })
            .collect();
        let object = format!(
            "{}/{}",
            configuration.kind.to_ascii_lowercase(),
            configuration.name
        );
        let mut f = finding(
            Check::StaleWebhook,
            if blocking {
                Severity::Critical
            } else {
                Severity::Warning
            },
            object,
            format!(
                "{} of {} webhook(s) stale: {}",
                stale.len(),
                configuration.webhooks.len(),
                evidence.join("; ")
            ),
        );
        f.hint = if blocking {
            "failurePolicy Fail: the API server refuses every request the webhook matches; \
             delete the configuration (a backup is returned and, with backup_dir, written)"
                .into()
        } else {
            "failurePolicy Ignore: every request the webhook matches waits for its timeout; \
             delete the configuration (a backup is returned and, with backup_dir, written)"
                .into()
        };
        let mut options = json!({"name": configuration.name});
        if !configuration.stale {
            options["force"] = json!(true);
        }
        f.fix = Some(fix("stale_webhook", &options));
        f.data.insert("kind".into(), json!(configuration.kind));
        f.data.insert("uid".into(), json!(configuration.uid));
        f.data.insert("stale_webhooks".into(), json!(stale.len()));
        f.data
            .insert("webhooks".into(), json!(configuration.webhooks.len()));
        f.data.insert(
            "failure_policies".into(),
            json!(stale.iter().map(|w| &w.failure_policy).collect::<Vec<_>>()),
        );
        findings.push(f);
    }
    findings
}

// ---------------------------------------------------------------------------------------------
// 4. Stuck pods: stuck_pods's plan
// ---------------------------------------------------------------------------------------------

/// A stuck pod as diagnose sees it.
#[derive(Debug, Clone)]
pub struct Stuck {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// How it is stuck.
    pub kind: StuckKind,
    /// Seconds stuck.
    pub stuck_seconds: i64,
    /// Node or scheduler, for people.
    pub detail: String,
}

impl Diagnose {
    async fn stuck_pods(&self, cx: &Context) -> std::result::Result<Vec<Finding>, String> {
        let options = json!({
            "namespaces": self.namespaces,
            "terminating_grace": self.terminating_grace.to_string(),
            "pending_age": self.pending_age.to_string(),
            "max_pods": STUCK_PODS_DETAIL,
        });
        let action = serde_json::from_value::<stuck_pods::Options>(options)
            .map_err(|e| format!("stuck_pods options: {e}"))
            .and_then(|options| StuckPods::validate(options).map_err(reason))?;
        let mut scratch = Outcome::default();
        let planned = action.plan(cx, &mut scratch).await;
        let report = &scratch.report;
        let mut pods: Vec<Stuck> = report
            .left_alone
            .iter()
            .map(|l| Stuck {
                namespace: l.pod.namespace.clone(),
                name: l.pod.name.clone(),
                kind: l.pod.kind,
                stuck_seconds: l.pod.stuck_seconds,
                detail: match l.pod.kind {
                    StuckKind::Terminating => format!("on node {}", l.pod.node_text),
                    StuckKind::Pending => l
                        .pod
                        .scheduler_lease
                        .clone()
                        .map(|s| {
                            format!(
                                "scheduler {:?}: {s}",
                                l.pod.scheduler.as_deref().unwrap_or_default()
                            )
                        })
                        .unwrap_or_default(),
                },
            })
            .collect();
        let mut warnings = Vec::new();
        match planned {
            Ok(plan) => {
                for c in &plan.candidates {
                    let detail = match c.kind {
                        StuckKind::Terminating => format!("on node {}", c.node.text()),
                        StuckKind::Pending => {
                            let name = c.scheduler.clone().unwrap_or_default();
                            plan.schedulers
                                .iter()
                                .find(|s| s.name == name)
                                .map(stuck_pods::SchedulerLease::warning)
                                .unwrap_or_default()
                        }
                    };
                    pods.push(Stuck {
                        namespace: c.namespace.clone(),
                        name: c.name.clone(),
                        kind: c.kind,
                        stuck_seconds: c.stuck_for,
                        detail,
                    });
                }
            }
            Err(error) if report.counts.qualifying > 0 => {
                // More than STUCK_PODS_DETAIL qualify: the counts are all there is.
                warnings.push(error.message_with_causes());
            }
            Err(error) => return Err(reason(error)),
        }
        let counts = &report.counts;
        let mut findings = stuck_findings(
            &pods,
            &self.namespaces,
            &self.terminating_grace,
            &self.pending_age,
        );
        if !warnings.is_empty() {
            let mut f = finding(
                Check::StuckPods,
                Severity::Critical,
                "cluster/pods".into(),
                format!(
                    "{} stuck Terminating and {} stuck Pending pods, more than diagnose lists \
                     one by one ({STUCK_PODS_DETAIL}): {}",
                    counts.terminating_stuck,
                    counts.pending_stuck,
                    warnings.join("; ")
                ),
            );
            "that many points to a dead node or a stalled scheduler: fix that first"
                .clone_into(&mut f.hint);
            findings.push(f);
        }
        Ok(findings)
    }
}

/// One finding per namespace and kind of stuck pod, with the count and the first names.
#[must_use]
pub fn stuck_findings(
    pods: &[Stuck],
    scope: &[String],
    terminating_grace: &Duration,
    pending_age: &Duration,
) -> Vec<Finding> {
    let mut groups: BTreeMap<(String, StuckKind), Vec<&Stuck>> = BTreeMap::new();
    for pod in pods {
        groups
            .entry((pod.namespace.clone(), pod.kind))
            .or_default()
            .push(pod);
    }
    let mut findings = Vec::new();
    for ((namespace, kind), pods) in groups {
        let names: Vec<String> = pods
            .iter()
            .take(NAMES_SHOWN)
            .map(|p| {
                format!(
                    "{} ({} {}{})",
                    p.name,
                    match kind {
                        StuckKind::Terminating => "past its deletion deadline by",
                        StuckKind::Pending => "Pending for",
                    },
                    format_duration(p.stuck_seconds),
                    if p.detail.is_empty() {
                        String::new()
                    } else {
                        format!(", {}", p.detail)
                    }
                )
            })
            .collect();
        let more = pods.len().saturating_sub(NAMES_SHOWN);
        let (severity, what, options, hint) = match kind {
            StuckKind::Terminating => (
                Severity::Warning,
                "stuck Terminating (their node never confirmed the deletion)",
                json!({"kinds": ["terminating"], "namespaces": [namespace],
                       "terminating_grace": terminating_grace.to_string()}),
                "force-delete them on evidence (UID precondition, a backup of each); \
                 bare pods need include_bare_pods"
                    .to_owned(),
            ),
            StuckKind::Pending => (
                Severity::Critical,
                "Pending and never seen by the scheduler (no node, no PodScheduled condition, \
                 no events)",
                json!({"kinds": ["pending"], "namespaces": [namespace],
                       "pending_age": pending_age.to_string()}),
                "suspect the scheduler first: if new pods stay Pending too, restart kubelite on \
                 the scheduler leader's node (kubelite_restart); then force-delete them so \
                 their controllers re-create them"
                    .to_owned(),
            ),
        };
        let mut f = finding(
            Check::StuckPods,
            severity,
            format!("namespace/{namespace}"),
            format!(
                "{} pod(s) {what}: {}{}",
                pods.len(),
                names.join(", "),
                if more > 0 {
                    format!(", and {more} more")
                } else {
                    String::new()
                }
            ),
        );
        f.id = format!(
            "stuck_pods:{}:namespace/{namespace}",
            match kind {
                StuckKind::Terminating => "terminating",
                StuckKind::Pending => "pending",
            }
        );
        f.data.insert("count".into(), json!(pods.len()));
        f.data.insert(
            "pods".into(),
            json!(pods.iter().map(|p| &p.name).collect::<Vec<_>>()),
        );
        f.data.insert(
            "longest_stuck_seconds".into(),
            json!(pods.iter().map(|p| p.stuck_seconds).max()),
        );
        f.hint = hint;
        f.fix = Some(fix("stuck_pods", &options));
        findings.push(f);
    }
    if findings.is_empty() {
        findings.push(nothing_stuck(scope, terminating_grace, pending_age));
    }
    findings
}

/// The info finding of a stuck_pods check that found nothing.
fn nothing_stuck(
    scope: &[String],
    terminating_grace: &Duration,
    pending_age: &Duration,
) -> Finding {
    let mut f = finding(
        Check::StuckPods,
        Severity::Info,
        if scope.is_empty() {
            "cluster/pods".into()
        } else {
            format!("namespace/{}", scope.join(","))
        },
        format!(
            "no pod stuck Terminating past {terminating_grace} or Pending unseen for \
             {pending_age}"
        ),
    );
    "nothing to do".clone_into(&mut f.hint);
    f
}

// ---------------------------------------------------------------------------------------------
// 5. Leader leases
// ---------------------------------------------------------------------------------------------

/// The leader-election Leases the runbook looks at, in kube-system.
const LEADER_LEASES: [&str; 2] = ["kube-scheduler", "kube-controller-manager"];

/// What happened to one leader Lease within the window: its leader changes (the times of its
/// `became leader` Events) and kubemend's kubelite restarts, or why the Events could not be
/// read (then the Lease's acquireTime is all there is).
#[derive(Debug, Clone, Default)]
pub struct LeaderChanges {
    /// When a new leader took the Lease, within the window.
    pub changes: Vec<Timestamp>,
    /// When kubemend restarted kubelite on some node, within the window and a little before.
    pub restarts: Vec<Timestamp>,
    /// The window, in seconds.
    pub window_seconds: i64,
    /// Why the Events could not be read.
    pub unreadable: Option<String>,
}

impl LeaderChanges {
    /// The changes within the window, and how many of those kubemend's restarts caused: a
    /// change within the Lease's duration (plus a minute for the gates) after a restart.
    fn counted(&self, spec: &LeaseSpec, now: Timestamp) -> (usize, usize) {
        let since = now.as_second() - self.window_seconds;
        let after_restart = i64::from(spec.lease_duration_seconds.unwrap_or(15)) + 60;
        let changes: Vec<Timestamp> = if self.unreadable.is_some() {
            spec.acquire_time.iter().map(|t| t.0).collect()
        } else {
            self.changes.clone()
        };
        let recent: Vec<&Timestamp> = changes.iter().filter(|t| t.as_second() >= since).collect();
        let by_kubemend = recent
            .iter()
            .filter(|t| {
                self.restarts.iter().any(|r| {
                    let after = t.as_second() - r.as_second();
                    (0..=after_restart).contains(&after)
                })
            })
            .count();
        (recent.len(), by_kubemend)
    }
}

impl Diagnose {
    async fn leader_leases(&self, cluster: &Cluster) -> Result<Vec<Finding>> {
        let api: Api<Lease> = Api::namespaced(cluster.client.clone(), "kube-system");
        let now = Timestamp::now();
        // The Events of the last hour (or less) tell the leader changes; a failure to read them
        // is said in the evidence, not a skipped check.
        let (elections, restarts) = tokio::join!(
            events::with_reason(cluster, "kube-system", events::LEADER_ELECTION),
            events::with_reason(cluster, events::NAMESPACE, events::KUBELITE_RESTART),
        );
        let mut findings = Vec::new();
        for name in LEADER_LEASES {
            // Listed (not read), so that `list` on leases is all it takes, as for stuck_pods.
            let params = ListParams::default().fields(&format!("metadata.name={name}"));
            let lease = api
                .list(&params)
                .await
                .map_err(cluster.error("list", format!("leases kube-system/{name}")))?
                .items
                .into_iter()
                .next();
            let mut history = LeaderChanges {
                window_seconds: self.window.seconds(),
                ..LeaderChanges::default()
            };
            match (&elections, &restarts) {
                (Ok(elections), Ok(restarts)) => {
                    history.changes = elections
                        .iter()
                        .filter(|e| {
                            e.involved_object.kind.as_deref() == Some("Lease")
                                && e.involved_object.name.as_deref() == Some(name)
                                && e.message
                                    .as_deref()
                                    .is_some_and(|m| m.ends_with("became leader"))
                        })
                        .filter_map(events::event_time)
                        .collect();
                    history.restarts = restarts.iter().filter_map(events::event_time).collect();
                }
                (Err(why), _) | (_, Err(why)) => {
                    history.unreadable = Some(why.message_with_causes());
                }
            }
            findings.push(lease_finding(
                name,
                lease.as_ref(),
                now,
                &history,
                self.lease_transitions,
            ));
        }
        Ok(findings)
    }
}

/// The finding for one leader-election Lease: critical when nobody holds it, a warning when
/// its leader changed more than `threshold` times within the window for reasons other than
/// kubemend's restarts, whatever its lifetime leaseTransitions.
#[must_use]
pub fn lease_finding(
    name: &str,
    lease: Option<&Lease>,
    now: Timestamp,
    history: &LeaderChanges,
    threshold: u32,
) -> Finding {
    let object = format!("lease/kube-system/{name}");
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        let mut f = finding(
            Check::LeaderLeases,
            Severity::Critical,
            object,
            format!("no Lease kube-system/{name}: no {name} has ever led"),
        );
        f.hint = format!(
            "{name} runs inside kubelite on microk8s: restart kubelite on a healthy node \
             (kubelite_restart)"
        );
        f.fix = Some(fix("kubelite_restart", &json!({})));
        return f;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let renewed = spec.renew_time.as_ref().map(|t| t.0);
    let ago = renewed.map(|t| seconds_since(t, now));
    let transitions = spec.lease_transitions.unwrap_or(0);
    let held = lease_held(spec, now);
    let renewal = match ago {
        Some(ago) => format!("renewed {}", format_ago(ago)),
        None => "never renewed".into(),
    };
    let node = holder.split('_').next().unwrap_or_default().to_owned();
    let (recent, by_kubemend) = history.counted(spec, now);
    let counted = recent - by_kubemend;
    let churning = counted > usize::try_from(threshold).unwrap_or(usize::MAX);
    let window = format_duration(history.window_seconds);
    let (severity, hint, fix_of) = if !held {
        (
            Severity::Critical,
            format!(
                "no {name} leads (last {renewal}); it runs inside kubelite: restart kubelite on \
                 {} (kubelite_restart)",
                if node.is_empty() {
                    "a healthy node"
                } else {
                    &node
                }
            ),
            Some(fix("kubelite_restart", &json!({}))),
        )
    } else if churning {
        (
            Severity::Warning,
            format!(
                "leader election churns now (more than {threshold} leader change(s) in \
                 {window}): look for what slows the datastore (dqlite `database is locked`, a \
                 controller crash-looping on 403s: the calico_rbac and apiserver_403 findings); \
                 a kubelite restart does not cure it"
            ),
            None,
        )
    } else {
        (Severity::Info, "nothing to do".to_owned(), None)
    };
    let source = match &history.unreadable {
        None => String::new(),
        Some(why) => {
            format!(" (told by the Lease's acquireTime only: its Events could not be read: {why})")
        }
    };
    let mut f = finding(
        Check::LeaderLeases,
        severity,
        object,
        format!(
            "held by {} ({renewal}, duration {}s); {counted} leader change(s) in the last \
             {window}{}{source}{}; {transitions} leaseTransitions since it was made",
            if holder.is_empty() { "nobody" } else { &holder },
            spec.lease_duration_seconds.unwrap_or(0),
            if by_kubemend > 0 {
                format!(", besides {by_kubemend} after kubemend's kubelite restarts")
            } else {
                String::new()
            },
            if churning {
                format!(" (more than {threshold})")
            } else {
                String::new()
            }
        ),
    );
    f.hint = hint;
    f.fix = fix_of;
    f.data.insert("holder".into(), json!(holder));
    f.data
        .insert("renew_time".into(), json!(renewed.map(|t| t.to_string())));
    f.data.insert("renewed_seconds_ago".into(), json!(ago));
    f.data
        .insert("lease_transitions".into(), json!(transitions));
    f.data.insert("held".into(), json!(held));
    changes_data(&mut f, history, counted, by_kubemend);
    f
}

/// The leader changes behind a lease finding, as its data.
fn changes_data(f: &mut Finding, history: &LeaderChanges, counted: usize, by_kubemend: usize) {
    f.data.insert("changes_in_window".into(), json!(counted));
    f.data
        .insert("changes_by_kubemend".into(), json!(by_kubemend));
    f.data
        .insert("window_seconds".into(), json!(history.window_seconds));
    f.data.insert(
        "changes_told_by".into(),
        json!(if history.unreadable.is_some() {
            "acquireTime"
        } else {
            "events"
        }),
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Node leases
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// 8. 403 answers of the API server
// ---------------------------------------------------------------------------------------------

/// What the API server's `/metrics` says about 403 answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Forbidden {
    /// Sum of `apiserver_request_total{code="403"}`.
    pub total: f64,
    /// The largest series: (verb, resource, count), largest first.
    pub top: Vec<(String, String, f64)>,
    /// `process_start_time_seconds`.
    pub started: Option<f64>,
}

/// Reads the 403 counters and the start time from Prometheus text.
#[must_use]
pub fn parse_forbidden(metrics: &str) -> Forbidden {
    let mut out = Forbidden::default();
    let mut series: BTreeMap<(String, String), f64> = BTreeMap::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("process_start_time_seconds ") {
            out.started = rest.trim().parse().ok();
            continue;
        }
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let labels = parse_labels(labels);
        if labels.get("code").map(String::as_str) != Some("403") {
            continue;
        }
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        out.total += value;
        let key = (
            labels.get("verb").cloned().unwrap_or_default(),
            labels.get("resource").cloned().unwrap_or_default(),
        );
        *series.entry(key).or_default() += value;
    }
    let mut top: Vec<(String, String, f64)> =
        series.into_iter().map(|((v, r), n)| (v, r, n)).collect();
    top.sort_by(|a, b| b.2.total_cmp(&a.2));
    top.truncate(3);
    out.top = top;
    out
}

/// `a="x",b="y"` into a map (values unescaped).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((name, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, next)) = chars.next() {
                        value.push(match next {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                other => value.push(other),
            }
        }
        labels.insert(name.trim_start_matches(',').trim().to_owned(), value);
        rest = &after[end..];
    }
    labels
}

/// The shortest time between the two reads of /metrics that give the 403 rate of now.
pub const FORBIDDEN_SAMPLE: std::time::Duration = std::time::Duration::from_secs(10);

/// The API server's 403 counters, read from its /metrics.
async fn read_forbidden(cluster: &Cluster) -> Result<Forbidden> {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .map_err(|e| Error::Internal {
            message: format!("a request for /metrics: {e}"),
        })?;
    let text = cluster
        .client
        .request_text(request)
        .await
        .map_err(cluster.error("get", "/metrics"))?;
    Ok(parse_forbidden(&text))
}

/// The 403 answers per minute between two reads, when both came from one API server process
/// (behind a load balancer the second may be another's, whose counter means nothing here).
#[allow(
    clippy::cast_precision_loss,
    reason = "counts and seconds far below 2^52; the rate is shown rounded"
)]
fn forbidden_per_minute(first: &Forbidden, second: &Forbidden, seconds: f64) -> Option<f64> {
    let same_process = first.started.is_some() && first.started == second.started;
    (same_process && second.total >= first.total && seconds > 0.0)
        .then(|| (second.total - first.total) * 60.0 / seconds)
}

impl Diagnose {
    /// `first`: the read made when the run began; the rate of now is taken from it to a read
    /// made at least [`FORBIDDEN_SAMPLE`] later.
    async fn apiserver_403(
        &self,
        cluster: &Cluster,
        first: Option<(tokio::time::Instant, Forbidden)>,
    ) -> Result<Vec<Finding>> {
        if let Some((at, _)) = &first {
            tokio::time::sleep_until(*at + FORBIDDEN_SAMPLE).await;
        }
        let second = read_forbidden(cluster).await?;
        let now = Timestamp::now().as_second();
        let current = first.and_then(|(at, first)| {
            forbidden_per_minute(&first, &second, at.elapsed().as_secs_f64())
                .map(|rate| (rate, at.elapsed().as_secs()))
        });
        Ok(vec![forbidden_finding(
            &second,
            current,
            now,
            self.forbidden_per_minute,
            &cluster.endpoint,
        )])
    }
}

/// The finding for the 403 answers of the API server at `endpoint`: judged on `current` (per
/// minute, over the seconds given) when it could be measured, else on the average since the
/// server started.
#[must_use]
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    reason = "counts and seconds far below 2^52; rates are shown rounded"
)]
pub fn forbidden_finding(
    forbidden: &Forbidden,
    current: Option<(f64, u64)>,
    now: i64,
    per_minute: u32,
    endpoint: &str,
) -> Finding {
    let uptime = forbidden.started.map_or(0.0, |s| (now as f64 - s).max(1.0));
    let average = if uptime > 0.0 {
        forbidden.total / (uptime / 60.0)
    } else {
        0.0
    };
    let judged = current.map_or(average, |(rate, _)| rate);
    let high = (current.is_some() || uptime > 0.0) && judged > f64::from(per_minute);
    let top: Vec<String> = forbidden
        .top
        .iter()
        .map(|(verb, resource, n)| {
            format!(
                "{verb} {} ({n})",
                if resource.is_empty() {
                    "(no resource)"
                } else {
                    resource
                }
            )
        })
        .collect();
    let now_text = match current {
        Some((rate, seconds)) => format!("{rate:.1} a minute over the last {seconds}s"),
        None => "the rate of now unknown (one read, or two API servers answered)".into(),
    };
    let mut f = finding(
        Check::Apiserver403,
        if high {
            Severity::Warning
        } else {
            Severity::Info
        },
        format!("apiserver/{endpoint}"),
        format!(
            "{now_text}{}; {} answers 403 (Forbidden) since it started {} ago ({average:.1} a \
             minute){}",
            if high {
                format!(", above {per_minute}")
            } else {
                String::new()
            },
            forbidden.total,
            format_duration(uptime as i64),
            if top.is_empty() {
                String::new()
            } else {
                format!("; most: {}", top.join(", "))
            }
        ),
    );
    f.hint = if high {
        "something keeps asking for what it may not do; a controller crash-looping on 403s \
         (calico-kube-controllers in the incident) adds writes the datastore pays for: see \
         the calico_rbac finding, and the clients' logs"
            .into()
    } else {
        "nothing to do".into()
    };
    if high {
        f.fix = Some(fix("calico_rbac", &json!({})));
    }
    f.data
        .insert("forbidden_total".into(), json!(forbidden.total));
    f.data.insert(
        "process_start_time_seconds".into(),
        json!(forbidden.started),
    );
    f.data.insert("uptime_seconds".into(), json!(uptime as i64));
    f.data.insert(
        "forbidden_per_minute_average".into(),
        json!((average * 10.0).round() / 10.0),
    );
    f.data.insert(
        "forbidden_per_minute".into(),
        json!(current.map(|(rate, _)| (rate * 10.0).round() / 10.0)),
    );
    f.data.insert(
        "measured_seconds".into(),
        json!(current.map(|(_, seconds)| seconds)),
    );
    f
}

// ---------------------------------------------------------------------------------------------
// 9. kubelite on each node, over SSH
// ---------------------------------------------------------------------------------------------

/// What the kubelite check read on one node; each read that failed holds why.
#[derive(Debug, Clone, Default)]
pub struct NodeReading {
    /// The node.
    pub node: String,
    /// Why SSH could not reach it (then nothing else was read).
    pub unreachable: Option<String>,
    /// The counted lines of each unit's journal over the window.
    pub journals: Vec<(String, std::result::Result<microk8s::JournalCounts, String>)>,
    /// dqlite voters and leader.
    pub dqlite: Option<std::result::Result<microk8s::Dqlite, String>>,
    /// Snapshot files and live data.
    pub sizes: Option<std::result::Result<microk8s::BackendSizes, String>>,
    /// The restart-escalation risk.
    pub escalation: Option<std::result::Result<microk8s::Escalation, String>>,
    /// The apiserver's arguments.
    pub apiserver: Option<std::result::Result<microk8s::ApiserverArgs, String>>,
    /// Whether the node's reads outlasted [`NODE_BUDGET`] (then `unreachable` says where).
    pub timed_out: bool,
}

/// The longest the kubelite check spends on one node (its connection and every read): a node
/// whose commands hang gets a warning, like one SSH cannot reach, and the other nodes' findings
/// are kept. Also ended early enough to leave the run time to report before its `timeout`.
pub const NODE_BUDGET: std::time::Duration = std::time::Duration::from_secs(120);

/// What the kubelite findings are judged against.
#[derive(Debug, Clone, Default)]
pub struct KubeliteLimits {
    /// The journal window, in seconds.
    pub window_seconds: i64,
    /// `database is locked` errors per hour above which a node gets a warning.
    pub locked_per_hour: u32,
    /// How many times the live data the snapshots may add up to.
    pub snapshot_ratio: u32,
    /// Watch-stream errors per 10 minutes above which a node gets a warning.
    pub watch_errors_per_10m: u32,
    /// The cluster's Kubernetes minor release, if known.
    pub minor: Option<u32>,
    /// The SSH options diagnose was given, for the fixes' options.
    pub ssh_options: Map<String, Value>,
    /// Each node's dqlite member address (its info.yaml) and the node, to name the leader.
    pub dqlite_members: BTreeMap<String, String>,
}

impl Diagnose {
    async fn kubelite(
        &self,
        cluster: &Cluster,
        deadline: tokio::time::Instant,
        check_mode: bool,
    ) -> std::result::Result<Vec<Finding>, String> {
        let listed = Api::<k8s_openapi::api::core::v1::Node>::all(cluster.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(cluster.error("list", "nodes"))
            .map_err(reason)?
            .items;
        let targets = microk8s::targets(&listed, self.nodes.as_deref()).map_err(reason)?;
        let minor = cluster
            .client
            .apiserver_version()
            .await
            .ok()
            .and_then(|info| info.minor.trim_end_matches('+').parse().ok());
        let since = Timestamp::now().as_second() - self.window.seconds();
        // The reads end a little before the run's timeout: a tenth of it, at most 15 s, is left
        // to judge and report.
        let timeout = self.cluster.timeout_or(Self::DEFAULT_TIMEOUT);
        let stop_at = deadline - (timeout / 10).min(std::time::Duration::from_secs(15));
        // Every node unreachable or hung gives a warning for each (as one does), not a skipped
        // check: fail_on warning must not pass when nothing could be read.
        let readings = ssh::each_bounded(targets.iter(), |target| {
            self.read_node_within(target, since, stop_at, check_mode)
        })
        .await;
        let limits = KubeliteLimits {
            window_seconds: self.window.seconds(),
            locked_per_hour: self.locked_per_hour,
            snapshot_ratio: self.snapshot_ratio,
            watch_errors_per_10m: self.watch_errors_per_10m,
            minor,
            ssh_options: self.ssh.given_options(),
            dqlite_members: readings
                .iter()
                .filter_map(|r| {
                    let own = r.dqlite.as_ref()?.as_ref().ok()?.own_address.clone()?;
                    Some((own, r.node.clone()))
                })
                .collect(),
        };
        Ok(readings
            .iter()
            .flat_map(|r| kubelite_findings(r, &limits))
            .collect())
    }

    /// Every read of one node within [`NODE_BUDGET`] and before `stop_at`; reads that
    /// outlast it make the node's reading a timed-out one (named like an unreachable node).
    async fn read_node_within(
        &self,
        target: &Target,
        since: i64,
        stop_at: tokio::time::Instant,
        check_mode: bool,
    ) -> NodeReading {
        let started = tokio::time::Instant::now();
        let until = (started + NODE_BUDGET).min(stop_at);
        let mut reading = NodeReading {
            node: target.node.clone(),
            ..NodeReading::default()
        };
        let mut step = "connect";
        let read = self.read_node(target, since, check_mode, &mut reading, &mut step);
        if tokio::time::timeout_at(until, read).await.is_err() {
            reading.timed_out = true;
            reading.unreachable = Some(format!(
                "no answer within {}s while reading {step} (the time given to each node; the \
                 other nodes were checked)",
                until.saturating_duration_since(started).as_secs()
            ));
        }
        reading
    }

    /// Every read of one node into `reading`, `step` naming the one under way; a read that
    /// fails is kept as its reason.
    async fn read_node(
        &self,
        target: &Target,
        since: i64,
        check_mode: bool,
        reading: &mut NodeReading,
        step: &mut &'static str,
    ) {
        let remote: Remote = match ssh::connect(&self.ssh, target, check_mode).await {
            Ok(remote) => remote,
            Err(err) => {
                reading.unreachable = Some(err.message_with_causes());
                return;
            }
        };
        let text = |e: Error| e.message_with_causes();
        for unit in [microk8s::KUBELITE_UNIT, microk8s::DQLITE_UNIT] {
            *step = if unit == microk8s::KUBELITE_UNIT {
                "the kubelite journal"
            } else {
                "the k8s-dqlite journal"
            };
            let counts = match microk8s::journal_counts_since(&remote, unit, since).await {
                Ok(counts) => counts,
                Err(err) => Err(text(err)),
            };
            reading.journals.push((unit.to_owned(), counts));
        }
        *step = "dqlite's members";
        reading.dqlite = Some(microk8s::dqlite_state(&remote).await.map_err(text));
        *step = "the dqlite backend's sizes";
        reading.sizes = Some(microk8s::backend_sizes(&remote).await.map_err(text));
        *step = "the escalation risk";
        reading.escalation = Some(microk8s::escalation(&remote).await.map_err(text));
        *step = "the apiserver's arguments";
        reading.apiserver = Some(microk8s::apiserver_args(&remote).await.map_err(text));
        *step = "closing the connection";
        remote.close().await;
    }
}

/// Bytes as MiB, for people.
#[allow(
    clippy::cast_precision_loss,
    reason = "shown with one decimal: sizes far below 2^52 bytes"
)]
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1_048_576.0)
}

/// A kubelite finding about `what` on `node`, with its own id.
fn node_finding(what: &str, node: &str, severity: Severity, evidence: String) -> Finding {
    let mut f = finding(Check::Kubelite, severity, format!("node/{node}"), evidence);
    f.id = format!("kubelite:{what}:node/{node}");
    f.data.insert("node".into(), json!(node));
    f
}

/// `count` journal lines over a window of `window_seconds`, as a rate per `per_seconds`.
#[allow(
    clippy::cast_precision_loss,
    reason = "a count of journal lines and a window in seconds, far below 2^52"
)]
fn journal_rate(count: usize, per_seconds: f64, window_seconds: i64) -> f64 {
    count as f64 * per_seconds / window_seconds.max(1) as f64
}

/// A warning when `over`, else info.
fn warning_if(over: bool) -> Severity {
    if over {
        Severity::Warning
    } else {
        Severity::Info
    }
}

/// The watch-stream errors in one node's kubelite journal, judged per 10 minutes.
fn watch_errors_finding(
    node: &str,
    count: usize,
    limits: &KubeliteLimits,
    with_ssh: &dyn Fn(Value) -> Value,
) -> Finding {
    let window = format_duration(limits.window_seconds);
    let per_10m = journal_rate(count, 600.0, limits.window_seconds);
    let over = per_10m > f64::from(limits.watch_errors_per_10m);
    let mut f = node_finding(
        "watch_errors",
        node,
        warning_if(over),
        format!(
            "{count} watch-stream error(s) (`Failed to watch`, `watch ended with error`) in the \
             kubelite journal over the last {window} ({per_10m:.1} per 10 minutes; warning above \
             {})",
            limits.watch_errors_per_10m
        ),
    );
    f.data.insert("count".into(), json!(count));
    f.data.insert("per_10_minutes".into(), json!(per_10m));
    f.data
        .insert("window_seconds".into(), json!(limits.window_seconds));
    if over {
        f.hint = "the scheduler or controller-manager on this node keeps losing its watches; \
                  pods created while a watch was down can stay Pending unseen (the incident): \
                  restart kubelite on this node (kubelite_restart), and look at the datastore \
                  (the database_locked finding)"
            .into();
        f.fix = Some(fix("kubelite_restart", &with_ssh(json!({"nodes": [node]}))));
    } else {
        "nothing to do".clone_into(&mut f.hint);
    }
    f
}

/// The findings of one node's readings.
#[must_use]
#[allow(
    clippy::too_many_lines,
    reason = "one block per reading, in the order the check reads them"
)]
pub fn kubelite_findings(reading: &NodeReading, limits: &KubeliteLimits) -> Vec<Finding> {
    let node = reading.node.as_str();
    if let Some(why) = &reading.unreachable {
        let mut f = node_finding(
            "ssh",
            node,
            Severity::Warning,
            format!("SSH checks skipped on this node: {why}"),
        );
        if reading.timed_out {
            "a command on the node hangs or the connection stalls: look at the node (load, a \
             hung journalctl, dqlite or disk) or leave it out with nodes; the other nodes were \
             checked"
                .clone_into(&mut f.hint);
        } else {
            "make the node reachable over SSH (ssh_config, ssh_user, known_hosts, nodes[].host) \
             or leave it out with nodes; the other nodes were checked"
                .clone_into(&mut f.hint);
        }
        f.data.insert("reason".into(), json!(why));
        return vec![f];
    }
    let mut findings = Vec::new();
    let mut unread = Vec::new();
    let with_ssh = |mut options: Value| {
        if let Some(map) = options.as_object_mut() {
            for (k, v) in &limits.ssh_options {
                map.insert(k.clone(), v.clone());
            }
        }
        options
    };

    // database is locked, over the window.
    let mut total = 0;
    let mut per_unit = Map::new();
    let mut watch_errors = None;
    for (unit, counts) in &reading.journals {
        match counts {
            Ok(counts) => {
                total += counts.locked;
                per_unit.insert(unit.clone(), json!(counts.locked));
                if unit == microk8s::KUBELITE_UNIT {
                    watch_errors = Some(counts.watch_errors);
                }
            }
            Err(why) => unread.push(format!("journal of {unit}: {why}")),
        }
    }
    if !per_unit.is_empty() {
        let window = format_duration(limits.window_seconds);
        let rate = journal_rate(total, 3600.0, limits.window_seconds);
        let over = rate > f64::from(limits.locked_per_hour);
        let mut f = node_finding(
            "database_locked",
            node,
            warning_if(over),
            format!(
                "{total} `database is locked` error(s) in the kubelite and k8s-dqlite journals \
                 over the last {window} ({rate:.0} per hour; warning above {})",
                limits.locked_per_hour
            ),
        );
        f.data.insert("count".into(), json!(total));
        f.data.insert("per_hour".into(), json!(rate));
        f.data
            .insert("window_seconds".into(), json!(limits.window_seconds));
        f.data.insert("per_unit".into(), Value::Object(per_unit));
        if over {
            f.hint = "dqlite is refusing writes under contention; stale watches follow (the \
                      scheduler stops seeing new pods, as in the incident): restart kubelite \
                      on this node (kubelite_restart), and if the errors go on, restart dqlite \
                      there: `sudo snap restart microk8s.daemon-k8s-dqlite`"
                .into();
            f.fix = Some(fix("kubelite_restart", &with_ssh(json!({"nodes": [node]}))));
        } else {
            "nothing to do".clone_into(&mut f.hint);
        }
        findings.push(f);
    }

    // Watch-stream errors of the controllers inside kubelite, over the window.
    if let Some(count) = watch_errors {
        findings.push(watch_errors_finding(node, count, limits, &with_ssh));
    }

    // dqlite voters and leader.
    match &reading.dqlite {
        Some(Ok(dqlite)) => {
            let healthy = dqlite.problems.is_empty();
            let leader_node = dqlite
                .leader
                .as_ref()
                .and_then(|l| limits.dqlite_members.get(l));
            let mut f = node_finding(
                "dqlite",
                node,
                if healthy {
                    Severity::Info
                } else {
                    Severity::Critical
                },
                if healthy {
                    format!(
                        "dqlite has {} voters and leader {}{}; this node's member {} is a \
                         voter",
                        dqlite.voters.unwrap_or_default(),
                        dqlite.leader.as_deref().unwrap_or_default(),
                        leader_node.map_or_else(String::new, |n| format!(" ({n})")),
                        dqlite.own_address.as_deref().unwrap_or_default()
                    )
                } else {
                    dqlite.problems.join("; ")
                },
            );
            f.data.insert("voters".into(), json!(dqlite.voters));
            f.data.insert("leader".into(), json!(dqlite.leader));
            f.data.insert("leader_node".into(), json!(leader_node));
            f.data.insert("address".into(), json!(dqlite.own_address));
            if healthy {
                "nothing to do".clone_into(&mut f.hint);
            } else {
                "dqlite needs three voters and a leader to take writes safely: look at \
                 `microk8s status` and `journalctl -u snap.microk8s.daemon-k8s-dqlite` on \
                 every node; restart nothing until it has them (kubelite_restart refuses)"
                    .clone_into(&mut f.hint);
            }
            findings.push(f);
        }
        Some(Err(why)) => unread.push(format!("dqlite: {why}")),
        None => {}
    }

    // Snapshot files against the live data.
    match &reading.sizes {
        Some(Ok(sizes)) => {
            let snapshots = format!(
                "{} in {} dqlite snapshot file(s)",
                mib(sizes.snapshot_bytes),
                sizes.snapshot_files
            );
            let mut f = match sizes.data_bytes {
                Some(data) => {
                    let bloated = sizes.snapshot_bytes
                        > data.saturating_mul(u64::from(limits.snapshot_ratio));
                    let mut f = node_finding(
                        "dqlite_snapshots",
                        node,
                        if bloated {
                            Severity::Warning
                        } else {
                            Severity::Info
                        },
                        format!(
                            "{snapshots} against {} of live data (the kine rows' values){}",
                            mib(data),
                            if bloated {
                                format!(": more than {} times it", limits.snapshot_ratio)
                            } else {
                                String::new()
                            }
                        ),
                    );
                    f.data.insert("data_bytes".into(), json!(data));
                    if bloated {
                        f.hint = "dqlite writes every snapshot whole and sends it to the \
                                  followers, holding the database longer each time (`database \
                                  is locked`, stale watches): check free disk space in the \
                                  backend directory, then restart dqlite on this node, one node \
                                  at a time (`sudo snap restart microk8s.daemon-k8s-dqlite`) so \
                                  it takes a fresh snapshot, and restart kubelite after it \
                                  (kubelite_restart)"
                            .into();
                        f.fix = Some(fix("kubelite_restart", &with_ssh(json!({"nodes": [node]}))));
                    } else {
                        "nothing to do".clone_into(&mut f.hint);
                    }
                    f
                }
                None => {
                    let mut f = node_finding(
                        "dqlite_snapshots",
                        node,
                        Severity::Info,
                        format!(
                            "{snapshots}; the live data is unknown: {}",
                            sizes.data_problem.as_deref().unwrap_or_default()
                        ),
                    );
                    "compare the snapshots with the data by hand (`SELECT SUM(LENGTH(value)) \
                     FROM kine` in the dqlite shell)"
                        .clone_into(&mut f.hint);
                    f
                }
            };
            f.data
                .insert("snapshot_bytes".into(), json!(sizes.snapshot_bytes));
            f.data
                .insert("snapshot_files".into(), json!(sizes.snapshot_files));
            f.data
                .insert("snapshot_ratio".into(), json!(limits.snapshot_ratio));
            findings.push(f);
        }
        Some(Err(why)) => unread.push(format!("dqlite backend: {why}")),
        None => {}
    }

    // Restart escalation.
    match &reading.escalation {
        Some(Ok(escalation)) if escalation.risk => {
            let mut f = node_finding(
                "escalation_risk",
                node,
                Severity::Warning,
                escalation.why.clone().unwrap_or_default(),
            );
            "before any kubelite restart, write delegate.conf (Delegate=yes for \
             snap.microk8s.daemon-kubelite) or delegate cpuset: otherwise microk8s restarts the \
             whole snap, dqlite included (kubelite_restart refuses until then)"
                .clone_into(&mut f.hint);
            f.data.insert("escalation_risk".into(), json!(true));
            findings.push(f);
        }
        Some(Ok(_)) | None => {}
        Some(Err(why)) => unread.push(format!("restart escalation: {why}")),
    }

    // The apiserver's authorization mode and the 1.34 feature gates.
    match &reading.apiserver {
        Some(Ok(args)) => {
            if args.always_allow() {
                let mut f = node_finding(
                    "authorization_mode",
                    node,
                    Severity::Critical,
                    format!(
                        "{} has --authorization-mode={}: every authenticated request is allowed",
                        microk8s::APISERVER_ARGS,
                        if args.authorization_modes.is_empty() {
                            "(not set: AlwaysAllow)".to_owned()
                        } else {
                            args.authorization_modes.join(",")
                        }
                    ),
                );
                "enable RBAC: `microk8s enable rbac` (--authorization-mode=RBAC,Node); no \
                 kubemend action does this"
                    .clone_into(&mut f.hint);
                f.data.insert(
                    "authorization_modes".into(),
                    json!(args.authorization_modes),
                );
                findings.push(f);
            }
            let missing = args.missing_dqlite_gates();
            // microk8s sets them from 1.34 on, and only with kine (not with etcd).
            if limits.minor.is_some_and(|m| m >= 34) && args.uses_kine() && !missing.is_empty() {
                let mut f = node_finding(
                    "feature_gates",
                    node,
                    Severity::Warning,
                    format!(
                        "Kubernetes 1.{} on dqlite (kine), and {} does not turn off {}",
                        limits.minor.unwrap_or_default(),
                        microk8s::APISERVER_ARGS,
                        missing.join(", ")
                    ),
                );
                f.hint = format!(
                    "add `--feature-gates={}` to {} (features that misbehave with dqlite, as \
                     microk8s 1.34 and later set them), then restart kubelite node by node \
                     (kubelite_restart)",
                    microk8s::DQLITE_FEATURE_GATES
                        .map(|g| format!("{g}=false"))
                        .join(","),
                    microk8s::APISERVER_ARGS
                );
                f.data.insert("missing_gates".into(), json!(missing));
                f.fix = Some(fix("kubelite_restart", &with_ssh(json!({}))));
                findings.push(f);
            }
        }
        Some(Err(why)) => unread.push(format!("apiserver arguments: {why}")),
        None => {}
    }

    if !unread.is_empty() {
        let mut f = node_finding(
            "unread",
            node,
            Severity::Info,
            format!("could not read: {}", unread.join("; ")),
        );
        "check the login user's sudo rights (become) on the node".clone_into(&mut f.hint);
        findings.push(f);
    }
    findings
}

// ---------------------------------------------------------------------------------------------
// Rendering for the CLI
// ---------------------------------------------------------------------------------------------

fn report_of(keys: &Map<String, Value>) -> Option<Report> {
    serde_json::from_value(Value::Object(keys.clone())).ok()
}

/// Width of the evidence and fix columns of the text table; longer cells wrap.
const WRAP: usize = 72;

/// Splits `text` into lines of at most `width` characters, at spaces where it can.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    lines
}

/// The CLI's text: a table of the findings (severity, check, object, evidence, fix; the two
/// last wrapped), the skipped checks, and the summary line.
#[must_use]
pub fn text(keys: &Map<String, Value>) -> Option<String> {
    let report = report_of(keys).filter(|r| !r.checks.is_empty())?;
    let rows: Vec<[String; 5]> = report
        .findings
        .iter()
        .map(|f| {
            [
                f.severity.name().to_uppercase(),
                f.check.clone(),
                f.object.clone(),
                f.evidence.clone(),
                f.fix.as_ref().map_or_else(
                    || f.hint.clone(),
                    |fix| format!("{}: {}", fix.command, f.hint),
                ),
            ]
        })
        .collect();
    let header = ["SEVERITY", "CHECK", "OBJECT", "EVIDENCE", "FIX"].map(str::to_owned);
    let mut widths = [0usize; 3];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row.iter()) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let evidence = wrap(&row[3], WRAP);
        let fix = wrap(&row[4], WRAP);
        for i in 0..evidence.len().max(fix.len()) {
            let first = i == 0;
            let cell = |c: &String| if first { c.clone() } else { String::new() };
            let line = format!(
                "{:w0$}  {:w1$}  {:w2$}  {:w3$}  {}",
                cell(&row[0]),
                cell(&row[1]),
                cell(&row[2]),
                evidence.get(i).map_or("", String::as_str),
                fix.get(i).map_or("", String::as_str),
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = WRAP,
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    for check in report.checks.iter().filter(|c| c.status == "skipped") {
        let _ = writeln!(
            out,
            "skipped: {}: {}",
            check.check,
            check.reason.as_deref().unwrap_or_default()
        );
    }
    Some(out)
}

/// The result in Prometheus text format, for node_exporter's textfile collector: a gauge per
/// check and severity (`kubemend_diagnose_findings`), whether each check was skipped, and
/// whether the run succeeded.
#[must_use]
pub fn prometheus(keys: &Map<String, Value>, failed: bool) -> String {
    let report = report_of(keys).unwrap_or_default();
    let mut out = String::new();
    out.push_str(
        "# HELP kubemend_diagnose_findings Findings of kubemend diagnose by check and severity.\n\
         # TYPE kubemend_diagnose_findings gauge\n",
    );
    for check in &report.checks {
        for severity in Severity::ALL {
            let n = report
                .findings
                .iter()
                .filter(|f| f.check == check.check && f.severity == severity)
                .count();
            let _ = writeln!(
                out,
                "kubemend_diagnose_findings{{check=\"{}\",severity=\"{}\"}} {n}",
                check.check,
                severity.name()
            );
        }
    }
    out.push_str(
        "# HELP kubemend_diagnose_check_skipped Whether a check of kubemend diagnose could not run.\n\
         # TYPE kubemend_diagnose_check_skipped gauge\n",
    );
    for check in &report.checks {
        let _ = writeln!(
            out,
            "kubemend_diagnose_check_skipped{{check=\"{}\"}} {}",
            check.check,
            u8::from(check.status == "skipped")
        );
    }
    raw_gauges(&report, &mut out);
    let _ = write!(
        out,
        "# HELP kubemend_diagnose_success Whether kubemend diagnose reached the cluster and ran.\n\
         # TYPE kubemend_diagnose_success gauge\n\
         kubemend_diagnose_success {}\n",
        u8::from(!failed)
    );
    out
}

/// A label value in the text format: `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The numbers behind the findings, for rules that take rates and thresholds of their own
/// (the collection's alert rules): each gauge only when its check ran and read it.
fn raw_gauges(report: &Report, out: &mut String) {
    let number = |f: &Finding, key: &str| f.data.get(key).and_then(Value::as_f64);
    let mut gauge = |name: &str, help: &str, samples: Vec<(String, f64)>| {
        if samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let of = |check: &str, id_part: &str| -> Vec<&Finding> {
        report
            .findings
            .iter()
            .filter(|f| f.check == check && f.id.contains(id_part))
            .collect()
    };
    gauge(
        "kubemend_leader_lease_transitions",
        "leaseTransitions of the kube-scheduler and kube-controller-manager Leases (only grows).",
        of("leader_leases", "lease/")
            .into_iter()
            .filter_map(|f| {
                let lease = f.object.rsplit('/').next()?;
                Some((
                    format!("{{lease=\"{}\"}}", label(lease)),
                    number(f, "lease_transitions")?,
                ))
            })
            .collect(),
    );
    let forbidden = of("apiserver_403", "apiserver/");
    gauge(
        "kubemend_apiserver_forbidden_total",
        "403 answers of the API server diagnose asked, since it started.",
        forbidden
            .iter()
            .filter_map(|f| Some((String::new(), number(f, "forbidden_total")?)))
            .collect(),
    );
    gauge(
        "kubemend_apiserver_forbidden_per_minute",
        "403 answers per minute of that API server, measured during the run.",
        forbidden
            .iter()
            .filter_map(|f| Some((String::new(), number(f, "forbidden_per_minute")?)))
            .collect(),
    );
    let locked = of("kubelite", "kubelite:database_locked:");
    gauge(
        "kubemend_dqlite_locked_errors",
        "`database is locked` lines in each unit's journal over the window.",
        locked
            .iter()
            .flat_map(|f| {
                let node = f
                    .data
                    .get("node")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                f.data
                    .get("per_unit")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .filter_map(move |(unit, n)| {
                        Some((
                            format!("{{node=\"{}\",unit=\"{}\"}}", label(node), label(unit)),
                            n.as_f64()?,
                        ))
                    })
            })
            .collect(),
    );
    let watch = of("kubelite", "kubelite:watch_errors:");
    gauge(
        "kubemend_watch_errors",
        "Watch-stream errors in each node's kubelite journal over the window.",
        watch
            .iter()
            .filter_map(|f| {
                let node = f.data.get("node").and_then(Value::as_str)?;
                Some((format!("{{node=\"{}\"}}", label(node)), number(f, "count")?))
            })
            .collect(),
    );
    gauge(
        "kubemend_journal_window_seconds",
        "How far back the journal counts reach, in seconds.",
        locked
            .iter()
            .chain(&watch)
            .find_map(|f| number(f, "window_seconds"))
            .map(|w| (String::new(), w))
            .into_iter()
            .collect(),
    );
}

/// The CLI's exit status for a run that did not fail: [`EXIT_FINDINGS`] when a finding
/// reached `fail_on`.
#[must_use]
pub fn exit_code(keys: &Map<String, Value>) -> Option<i32> {
    (keys.get("fail_on_reached") == Some(&Value::Bool(true))).then_some(EXIT_FINDINGS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

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

    #[test]
    fn leader_changes_now_warn_and_a_lifetime_count_or_kubemends_own_restarts_do_not() {
        let now = ts("2026-05-15T07:40:00Z");
        let lease = |renewed: &str, transitions: i32| Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some("k8s03_0c1d".into()),
                renew_time: Some(MicroTime(ts(renewed))),
                acquire_time: Some(MicroTime(ts("2026-05-15T07:38:00Z"))),
                lease_duration_seconds: Some(60),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        let history = |changes: &[&str], restarts: &[&str]| LeaderChanges {
            changes: changes.iter().map(|t| ts(t)).collect(),
            restarts: restarts.iter().map(|t| ts(t)).collect(),
            window_seconds: 900,
            unreadable: None,
        };
        // Churned for years, stable now: no warning, the lifetime count reported.
        let stable = lease_finding(
            "kube-scheduler",
            Some(&lease("2026-05-15T07:39:50Z", 4499)),
            now,
            &history(&["2026-05-15T07:10:00Z"], &[]),
            1,
        );
        assert_eq!(stable.severity, Severity::Info, "{}", stable.evidence);
        assert!(stable.evidence.contains("4499 leaseTransitions"));
        assert_eq!(stable.data["lease_transitions"], 4499);
        assert_eq!(stable.data["changes_in_window"], 0);
        // Churning now: two changes within the window.
        let changes = ["2026-05-15T07:30:00Z", "2026-05-15T07:38:00Z"];
        let churn = lease_finding(
            "kube-scheduler",
            Some(&lease("2026-05-15T07:39:50Z", 12)),
            now,
            &history(&changes, &[]),
            1,
        );
        assert_eq!(churn.severity, Severity::Warning, "{}", churn.evidence);
        assert!(churn.hint.contains("datastore"), "{}", churn.hint);
        // The same changes, each within a minute of a kubemend restart: not churn.
        let restarted = lease_finding(
            "kube-scheduler",
            Some(&lease("2026-05-15T07:39:50Z", 12)),
            now,
            &history(&changes, &["2026-05-15T07:29:40Z", "2026-05-15T07:37:30Z"]),
            1,
        );
        assert_eq!(restarted.severity, Severity::Info, "{}", restarted.evidence);
        assert_eq!(restarted.data["changes_by_kubemend"], 2);
        // Events unreadable: the acquireTime (07:38, within the window) is one change.
        let mut blind = history(&[], &[]);
        blind.unreadable = Some("permission denied".into());
        let told = lease_finding(
            "kube-scheduler",
            Some(&lease("2026-05-15T07:39:50Z", 12)),
            now,
            &blind,
            0,
        );
        assert_eq!(told.severity, Severity::Warning, "{}", told.evidence);
        assert!(told.evidence.contains("acquireTime"), "{}", told.evidence);
        // Nobody holds it: critical, naming the last holder's node.
        let lost = lease_finding(
            "kube-scheduler",
            Some(&lease("2026-05-15T07:30:00Z", 3)),
            now,
            &history(&[], &[]),
            1,
        );
        assert_eq!(lost.severity, Severity::Critical);
        assert!(lost.hint.contains("k8s03"), "{}", lost.hint);
        assert_eq!(
            lease_finding("kube-scheduler", None, now, &history(&[], &[]), 1).severity,
            Severity::Critical
        );
    }

    #[test]
    fn calico_v3_13_on_kubernetes_1_34_is_unsupported() {
        let v = |t: &str| Version::parse(t).unwrap();
        let f = calico_version_finding(v("v3.13.2"), "v1.34.4", 34);
        assert_eq!(f.severity, Severity::Warning);
        assert!(f.evidence.contains("v1.15-v1.17"), "{}", f.evidence);
        assert!(f.data["source"].as_str().unwrap().contains("v3.13"));
        assert_eq!(f.fix.unwrap().module, "calico_rbac");
        assert_eq!(
            calico_version_finding(v("v3.29.3"), "v1.30.2", 30).severity,
            Severity::Info
        );
        assert_eq!(
            calico_version_finding(v("v3.21.4"), "v1.34.4", 34).severity,
            Severity::Info
        );
    }

    #[test]
    fn forbidden_answers_are_summed_from_the_metrics() {
        let text = "# HELP apiserver_request_total x\n\
            apiserver_request_total{code=\"200\",component=\"apiserver\",resource=\"pods\",verb=\"LIST\"} 90\n\
            apiserver_request_total{code=\"403\",component=\"apiserver\",resource=\"pods\",verb=\"LIST\"} 700\n\
            apiserver_request_total{code=\"403\",component=\"apiserver\",resource=\"workloadendpoints\",verb=\"LIST\"} 20\n\
            apiserver_request_total{code=\"403\",component=\"\",resource=\"\",verb=\"GET\"} 1\n\
            process_start_time_seconds 1.7787e+09\n";
        let forbidden = parse_forbidden(text);
        assert!((forbidden.total - 721.0).abs() < f64::EPSILON);
        assert_eq!(forbidden.top[0], ("LIST".into(), "pods".into(), 700.0));
        assert_eq!(forbidden.started, Some(1.7787e9));
        // One read: judged on the average since start, 721 in 1h (12 a minute).
        let f = forbidden_finding(&forbidden, None, 1_778_703_600, 10, "https://vip");
        assert_eq!(f.severity, Severity::Warning, "{}", f.evidence);
        assert!(f.evidence.contains("721"), "{}", f.evidence);
        assert!(f.evidence.contains("1h"), "{}", f.evidence);
        let f = forbidden_finding(&forbidden, None, 1_778_703_600, 1000, "https://vip");
        assert_eq!(f.severity, Severity::Info);
        // A burst that ended: the same average, none now.
        let f = forbidden_finding(
            &forbidden,
            Some((0.0, 10)),
            1_778_703_600,
            10,
            "https://vip",
        );
        assert_eq!(f.severity, Severity::Info, "{}", f.evidence);
        assert!(
            f.evidence.contains("0.0 a minute over the last 10s"),
            "{}",
            f.evidence
        );
        // And one going on now.
        let f = forbidden_finding(
            &forbidden,
            Some((60.0, 10)),
            1_778_703_600,
            10,
            "https://vip",
        );
        assert_eq!(f.severity, Severity::Warning, "{}", f.evidence);
    }

    #[test]
    fn the_rate_of_now_needs_two_reads_of_one_api_server() {
        let read = |total: f64, started: f64| Forbidden {
            total,
            top: Vec::new(),
            started: Some(started),
        };
        assert_eq!(
            forbidden_per_minute(&read(100.0, 1.0), &read(110.0, 1.0), 10.0),
            Some(60.0)
        );
        // Another process (restarted, or another behind the load balancer).
        assert_eq!(
            forbidden_per_minute(&read(100.0, 1.0), &read(110.0, 2.0), 10.0),
            None
        );
        assert_eq!(
            forbidden_per_minute(&read(100.0, 1.0), &read(90.0, 1.0), 10.0),
            None
        );
    }

    #[test]
    fn labels_with_escapes_and_commas_are_read() {
        let labels = parse_labels(r#"a="x,y",b="q\"uote",code="403""#);
        assert_eq!(labels["a"], "x,y");
        assert_eq!(labels["b"], "q\"uote");
        assert_eq!(labels["code"], "403");
    }

    #[test]
    fn a_fix_is_also_a_command_line() {
        let f = fix(
            "stuck_pods",
            &json!({"kinds": ["pending"], "namespaces": ["ci"], "pending_age": "10m"}),
        );
        assert_eq!(
            f.command,
            "kubemend stuck-pods --kinds pending --namespaces ci --pending-age 10m"
        );
        assert_eq!(
            fix("calico_rbac", &json!({})).command,
            "kubemend calico-rbac"
        );
        assert_eq!(
            fix("stale_webhook", &json!({"name": "x", "force": true})).command,
            "kubemend stale-webhook --name x --force"
        );
    }

    #[test]
    fn rbac_allowed_for_nobody_is_critical() {
        assert_eq!(rbac_finding(true, "").severity, Severity::Critical);
        let f = rbac_finding(false, "");
        assert_eq!(f.severity, Severity::Info);
    }

    #[test]
    fn fail_on_and_summary_and_renderings() {
        let mut out: Outcome<Report> = Outcome::default();
        record(
            &mut out,
            Check::RbacEnforced,
            Ok(vec![rbac_finding(true, "")]),
        );
        record(
            &mut out,
            Check::Kubelite,
            Err("no SSH options given".into()),
        );
        finish(&mut out.report, FailOn::Warning);
        assert!(out.report.fail_on_reached);
        assert_eq!(out.report.summary.critical, 1);
        assert_eq!(out.report.summary.skipped, 1);
        finish(&mut out.report, FailOn::Never);
        assert!(!out.report.fail_on_reached);
        let Value::Object(keys) = serde_json::to_value(&out.report).unwrap() else {
            unreachable!()
        };
        let table = text(&keys).unwrap();
        assert!(table.starts_with("SEVERITY"), "{table}");
        assert!(table.contains("CRITICAL  rbac_enforced"), "{table}");
        assert!(
            table.contains("skipped: kubelite: no SSH options given"),
            "{table}"
        );
        let metrics = prometheus(&keys, false);
        assert!(
            metrics.contains(
                "kubemend_diagnose_findings{check=\"rbac_enforced\",severity=\"critical\"} 1"
            ),
            "{metrics}"
        );
        assert!(metrics.contains("kubemend_diagnose_check_skipped{check=\"kubelite\"} 1"));
        assert_eq!(exit_code(&keys), None);
    }

    #[test]
    fn prometheus_output_carries_the_raw_numbers_for_alert_rules() {
        let mut out: Outcome<Report> = Outcome::default();
        record(
            &mut out,
            Check::Kubelite,
            Ok(kubelite_findings(&incident_node(), &limits())),
        );
        let lease = Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some("k8s03_0c1d".into()),
                renew_time: Some(MicroTime(ts("2026-05-15T07:39:55Z"))),
                lease_duration_seconds: Some(60),
                lease_transitions: Some(4499),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        record(
            &mut out,
            Check::LeaderLeases,
            Ok(vec![lease_finding(
                "kube-scheduler",
                Some(&lease),
                ts("2026-05-15T07:40:00Z"),
                &LeaderChanges::default(),
                1,
            )]),
        );
        let forbidden = Forbidden {
            total: 721.0,
            top: Vec::new(),
            started: Some(1.7787e9),
        };
        record(
            &mut out,
            Check::Apiserver403,
            Ok(vec![forbidden_finding(
                &forbidden,
                Some((12.0, 10)),
                1_778_703_600,
                10,
                "https://vip",
            )]),
        );
        finish(&mut out.report, FailOn::Never);
        let Value::Object(keys) = serde_json::to_value(&out.report).unwrap() else {
            unreachable!()
        };
        let metrics = prometheus(&keys, false);
        for line in [
            "kubemend_leader_lease_transitions{lease=\"kube-scheduler\"} 4499",
            "kubemend_apiserver_forbidden_total 721",
            "kubemend_apiserver_forbidden_per_minute 12",
            "kubemend_dqlite_locked_errors{node=\"k8s02\",unit=\"snap.microk8s.daemon-kubelite\"} 30",
            "kubemend_dqlite_locked_errors{node=\"k8s02\",unit=\"snap.microk8s.daemon-k8s-dqlite\"} 0",
            "kubemend_watch_errors{node=\"k8s02\"} 4",
            "kubemend_journal_window_seconds 900",
        ] {
            assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
        }
        // A gauge nothing read is left out, not reported as 0.
        let mut none: Outcome<Report> = Outcome::default();
        record(
            &mut none,
            Check::Kubelite,
            Err("no SSH options given".into()),
        );
        let Value::Object(keys) = serde_json::to_value(&none.report).unwrap() else {
            unreachable!()
        };
        assert!(!prometheus(&keys, false).contains("kubemend_watch_errors"));
    }

    fn incident_node() -> NodeReading {
        NodeReading {
            node: "k8s02".into(),
            journals: vec![
                (
                    microk8s::KUBELITE_UNIT.into(),
                    Ok(microk8s::JournalCounts {
                        locked: 30,
                        watch_errors: 4,
                    }),
                ),
                (
                    microk8s::DQLITE_UNIT.into(),
                    Ok(microk8s::JournalCounts::default()),
                ),
            ],
            dqlite: Some(Ok(microk8s::Dqlite {
                own_address: Some("127.0.1.2:19001".into()),
                own_voter: Some(true),
                voters: Some(3),
                leader: Some("127.0.1.1:19001".into()),
                ..microk8s::Dqlite::default()
            })),
            sizes: Some(Ok(microk8s::BackendSizes {
                snapshot_files: 2,
                snapshot_bytes: 235_929_600,
                data_bytes: Some(22_858_957),
                data_problem: None,
            })),
            escalation: Some(Ok(microk8s::Escalation {
                risk: false,
                why: None,
            })),
            apiserver: Some(Ok(microk8s::parse_apiserver_args(
                "--authorization-mode=Node,RBAC\n--feature-gates=ListFromCacheSnapshot=false,\
                 SizeBasedListCostEstimate=false,DetectCacheInconsistency=false\n",
            ))),
            ..NodeReading::default()
        }
    }

    fn limits() -> KubeliteLimits {
        KubeliteLimits {
            window_seconds: 900,
            locked_per_hour: 10,
            snapshot_ratio: 5,
            watch_errors_per_10m: 1,
            minor: Some(34),
            ssh_options: serde_json::from_value(json!({"ssh_config": "/etc/kubemend/ssh_config"}))
                .unwrap(),
            dqlite_members: [
                ("127.0.1.1:19001".to_owned(), "k8s01".to_owned()),
                ("127.0.1.2:19001".to_owned(), "k8s02".to_owned()),
            ]
            .into(),
        }
    }

    fn by_id<'a>(findings: &'a [Finding], id: &str) -> &'a Finding {
        findings
            .iter()
            .find(|f| f.id == id)
            .unwrap_or_else(|| panic!("no {id} in {findings:#?}"))
    }

    #[test]
    fn the_incident_node_warns_of_lock_errors_and_snapshot_bloat() {
        let findings = kubelite_findings(&incident_node(), &limits());
        let locked = by_id(&findings, "kubelite:database_locked:node/k8s02");
        assert_eq!(locked.severity, Severity::Warning);
        assert_eq!(locked.data["count"], json!(30));
        assert_eq!(locked.data["per_hour"], json!(120.0));
        assert!(locked.hint.contains("stale watches"), "{}", locked.hint);
        assert!(
            locked
                .hint
                .contains("snap restart microk8s.daemon-k8s-dqlite"),
            "{}",
            locked.hint
        );
        let fix = locked.fix.as_ref().expect("a fix");
        assert_eq!(fix.module, "kubelite_restart");
        assert_eq!(
            fix.command,
            "kubemend kubelite-restart --nodes k8s02 --ssh-config /etc/kubemend/ssh_config"
        );
        // 4 watch errors in 15m: 2.7 per 10 minutes, above 1.
        let watch = by_id(&findings, "kubelite:watch_errors:node/k8s02");
        assert_eq!(watch.severity, Severity::Warning, "{}", watch.evidence);
        assert_eq!(watch.data["count"], json!(4));
        assert_eq!(
            watch.fix.as_ref().map(|f| f.options["nodes"].clone()),
            Some(json!(["k8s02"]))
        );
        let snapshots = by_id(&findings, "kubelite:dqlite_snapshots:node/k8s02");
        assert_eq!(snapshots.severity, Severity::Warning);
        assert!(
            snapshots.evidence.contains("225.0 MiB") && snapshots.evidence.contains("21.8 MiB"),
            "{}",
            snapshots.evidence
        );
        let dqlite = by_id(&findings, "kubelite:dqlite:node/k8s02");
        assert_eq!(dqlite.severity, Severity::Info);
        // The leader is named by its member address, which k8s01's info.yaml gives.
        assert_eq!(dqlite.data["leader_node"], json!("k8s01"));
        assert!(
            dqlite.evidence.contains("127.0.1.1:19001 (k8s01)"),
            "{}",
            dqlite.evidence
        );
        assert!(!findings.iter().any(|f| f.id.contains("authorization_mode")
            || f.id.contains("feature_gates")
            || f.id.contains("escalation")));
    }

    #[test]
    fn a_node_without_leader_rbac_or_gates_is_critical_and_an_unreachable_one_skipped() {
        let mut node = incident_node();
        node.journals = vec![(
            microk8s::KUBELITE_UNIT.into(),
            Ok(microk8s::JournalCounts {
                locked: 2,
                watch_errors: 1,
            }),
        )];
        node.dqlite = Some(Ok(microk8s::Dqlite {
            voters: Some(2),
            leader: None,
            problems: vec!["dqlite reports no leader: x".into()],
            ..microk8s::Dqlite::default()
        }));
        node.apiserver = Some(Ok(microk8s::parse_apiserver_args(
            "--authorization-mode=AlwaysAllow\n\
             --etcd-servers=unix://${SNAP_DATA}/var/kubernetes/backend/kine.sock:12379\n",
        )));
        node.escalation = Some(Ok(microk8s::Escalation {
            risk: true,
            why: Some("restart-escalation risk: ...".into()),
        }));
        let findings = kubelite_findings(&node, &limits());
        // 2 in 15m is 8 per hour: below 10.
        assert_eq!(
            by_id(&findings, "kubelite:database_locked:node/k8s02").severity,
            Severity::Info
        );
        // 1 watch error in 15m is 0.7 per 10 minutes: not above 1.
        assert_eq!(
            by_id(&findings, "kubelite:watch_errors:node/k8s02").severity,
            Severity::Info
        );
        assert_eq!(
            by_id(&findings, "kubelite:dqlite:node/k8s02").severity,
            Severity::Critical
        );
        let open = by_id(&findings, "kubelite:authorization_mode:node/k8s02");
        assert_eq!(open.severity, Severity::Critical);
        assert!(open.hint.contains("microk8s enable rbac"));
        let gates = by_id(&findings, "kubelite:feature_gates:node/k8s02");
        assert_eq!(gates.severity, Severity::Warning);
        assert_eq!(gates.data["missing_gates"].as_array().unwrap().len(), 3);
        assert_eq!(
            by_id(&findings, "kubelite:escalation_risk:node/k8s02").severity,
            Severity::Warning
        );
        // 1.35 sets the same gates; before 1.34 none, and with etcd none.
        let mut other = limits();
        other.minor = Some(35);
        assert!(
            kubelite_findings(&node, &other)
                .iter()
                .any(|f| f.id.contains("feature_gates"))
        );
        other.minor = Some(33);
        assert!(
            !kubelite_findings(&node, &other)
                .iter()
                .any(|f| f.id.contains("feature_gates"))
        );
        let mut etcd = node.clone();
        etcd.apiserver = Some(Ok(microk8s::parse_apiserver_args(
            "--authorization-mode=AlwaysAllow\n--etcd-servers=https://10.0.0.1:2379\n",
        )));
        assert!(
            !kubelite_findings(&etcd, &limits())
                .iter()
                .any(|f| f.id.contains("feature_gates"))
        );

        let down = NodeReading {
            node: "k8s03".into(),
            unreachable: Some("connect: no answer within 10s".into()),
            ..NodeReading::default()
        };
        let findings = kubelite_findings(&down, &limits());
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].id, "kubelite:ssh:node/k8s03");
        assert!(findings[0].evidence.contains("no answer within 10s"));
    }

    #[test]
    fn ssh_checks_need_an_ssh_option_or_nodes() {
        let validate = |v: Value| {
            let Value::Object(options) = v else {
                panic!("an object")
            };
            crate::actions::validate::<Diagnose>(options)
        };
        assert!(validate(json!({})).is_ok());
        assert!(validate(json!({"window": "0s"})).is_err());
        assert!(validate(json!({"snapshot_ratio": 0})).is_err());
        assert!(validate(json!({"nodes": ["k8s01; reboot"]})).is_err());
        let given = |v: Value| {
            Diagnose::validate(serde_json::from_value::<Options>(v).unwrap())
                .unwrap()
                .ssh_given
        };
        assert!(!given(json!({})));
        assert!(!given(json!({"become": false})));
        assert!(given(json!({"ssh_user": "k8sadmin"})));
        assert!(given(json!({"nodes": ["k8s01"]})));
    }

    #[test]
    fn stuck_pods_are_counted_per_namespace_and_kind() {
        let pod = |ns: &str, name: &str, kind| Stuck {
            namespace: ns.into(),
            name: name.into(),
            kind,
            stuck_seconds: 120,
            detail: String::new(),
        };
        let pods = [
            pod("ci", "automation-job-1865-ntgbq", StuckKind::Pending),
            pod("ci", "dependency-track-frontend-1", StuckKind::Terminating),
            pod("ci", "dependency-track-frontend-2", StuckKind::Terminating),
            pod("media", "linkace-cronjob-1", StuckKind::Terminating),
        ];
        let grace = Duration::from_secs(300);
        let age = Duration::from_secs(600);
        let findings = stuck_findings(&pods, &[], &grace, &age);
        assert_eq!(findings.len(), 3);
        let ci_terminating = findings
            .iter()
            .find(|f| f.id == "stuck_pods:terminating:namespace/ci")
            .unwrap();
        assert_eq!(ci_terminating.data["count"], 2);
        assert_eq!(ci_terminating.severity, Severity::Warning);
        let pending = findings
            .iter()
            .find(|f| f.id == "stuck_pods:pending:namespace/ci")
            .unwrap();
        assert_eq!(pending.severity, Severity::Critical);
        assert_eq!(
            pending.fix.as_ref().unwrap().options["kinds"],
            json!(["pending"])
        );
        let none = stuck_findings(&[], &["clean".into()], &grace, &age);
        assert_eq!(none[0].severity, Severity::Info);
        assert_eq!(none[0].object, "namespace/clean");
    }
}
