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
//! 5. `namespaces`: namespaces Terminating longer than `terminating_grace`, their namespace
//!    controller conditions explained and the blocker named: the unavailable APIService whose
//!    group version discovery fails for (stale_apiservice as the fix when its backend is gone;
//!    else what its failure points at: certificates or the backend), or the objects that remain
//!    with their finalizers, each with the controller that removes it where known and what
//!    removing it by hand skips; and every unavailable APIService, by stale_apiservice's
//!    evidence (backend gone past its min_age: critical; else a warning).
//! 6. `leader_leases`: the kube-scheduler and kube-controller-manager Leases: holder, age of
//!    the last renewal, leaseTransitions (more than `lease_transitions`: a warning).
//! 7. `node_leases`: nodes Ready although their node Lease expired (microk8s 1.34/1.35: a
//!    powered-off node can stay Ready until kubelite is restarted on a healthy node).
//! 8. `calico_version`: the running Calico release against the Kubernetes releases it is
//!    documented to be tested on ([`CALICO_SUPPORT`]).
//! 9. `apiserver_403`: the answering API server's `apiserver_request_total{code="403"}`
//!    against its uptime (`process_start_time_seconds`), from `/metrics`.
//! 10. `kubelite`: each control-plane node over SSH (only when an SSH option or `nodes` is
//!     given; else skipped): `database is locked` errors in the kubelite and k8s-dqlite
//!     journals over `window` (more than `locked_per_hour`: a warning), dqlite's voters and
//!     leader (no leader or fewer than three voters: critical), the dqlite snapshot files
//!     against the live data (dqlite's `SELECT SUM(LENGTH(value)) FROM kine`; more than
//!     `snapshot_ratio` times it: a warning), the restart-escalation risk (a warning), the
//!     apiserver's `--authorization-mode` (AlwaysAllow: critical) and, on Kubernetes 1.34, the
//!     feature gates microk8s turns off for dqlite (missing: a warning). A node SSH cannot
//!     reach, or whose reads outlast [`NODE_BUDGET`] (a hung command), gets a warning naming
//!     why, and the other nodes are still checked; when no node could be read, every node has
//!     its warning (so `fail_on: warning` is reached). At most [`ssh::MAX_PARALLEL`] nodes are
//!     read at once.
//! 11. `calico_ipam`: Calico's IPAM (leaked addresses, orphaned handles, pool use).
//! 12. `certs`: each node's apiserver serving certificate, read by a TLS handshake with its
//!     InternalIP (so it works with no node access), and with SSH every certificate file of
//!     the node: fewer than `cert_warning_days` days left a warning, fewer than
//!     `cert_critical_days` or expired critical, the fix cert_refresh for server.crt and
//!     front-proxy-client.crt and microk8s's manual procedure for the others; a node clock
//!     more than `clock_skew_max` from the API server's a warning.
//!
//! A check that cannot run (permission denied, Calico not installed, a timeout) is listed in
//! `checks` as skipped with the reason; the other checks still run.
//!
//! # Layout
//! This file: the options and the action, which runs the checks in registry order and files
//! each one's findings. [`report`]: the typed result. [`views`]: the text table, the Prometheus
//! text and the exit status. [`checks`]: one file a check, and the registry that makes the
//! `Check` enum and the dispatch (adding a check: see there).
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

pub mod checks;
mod report;
mod views;

use std::fmt::Write as _;

use clap::Args;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use self::checks::Check;
pub use self::report::{
    CheckReport, EXIT_FINDINGS, FailOn, Finding, Fix, Report, Severity, Summary,
};
pub use self::views::{exit_code, prometheus, text};
use super::{Action, Context};
use crate::client::ClusterArgs;
use crate::error::{Error, Result};
use crate::k8s::duration::Duration;
use crate::k8s::names::check_label;
use crate::microk8s::{NodeSpec, NodeTarget, check_nodes};
use crate::outcome::Outcome;
use crate::ssh::SshArgs;

/// Run the incident's runbook as one read-only check and name the kubemend action that fixes
/// each finding.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, Args)]
pub struct Options {
    #[serde(flatten)]
    #[command(flatten)]
    #[allow(missing_docs, reason = "documented field by field in ClusterArgs")]
    pub cluster: ClusterArgs,

    /// The checks to run (default: all, in the order listed in the choices).
    #[arg(long, value_enum, value_name = "CHECK", value_delimiter = ',')]
    #[serde(default = "all_checks")]
    pub checks: Vec<Check>,

    /// Namespaces the stuck_pods check looks in (default: all).
    #[arg(long, value_name = "NAMESPACE", value_delimiter = ',')]
    #[serde(default)]
    pub namespaces: Vec<String>,

    /// How long past its deletion deadline a Terminating pod must be to count as stuck, as for
    /// stuck_pods, e.g. 90s, 10m; also how long a namespace must have been Terminating for the
    /// namespaces check to look at what holds it.
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

    /// How old a Calico IPAM handle must be before the calico_ipam check counts it, or an
    /// address allocated under it, as orphaned or leaked (calico_ipam's min_age), e.g. 15m.
    #[arg(long, value_name = "DURATION")]
    #[serde(default = "default_ipam_min_age")]
    pub ipam_min_age: Duration,

    /// Days left below which a certificate gets a warning (certs check); cert_refresh's
    /// renew_before in the fix is the same number.
    #[arg(long, value_name = "DAYS")]
    #[serde(default = "default_cert_warning_days")]
    pub cert_warning_days: u32,

    /// Days left below which a certificate is critical (certs check); an expired one always is.
    #[arg(long, value_name = "DAYS")]
    #[serde(default = "default_cert_critical_days")]
    pub cert_critical_days: u32,

    /// How far a node's clock may be from the API server's before the certs check warns, e.g.
    /// 30s: past it, certificates look valid or expired by the wrong clock and leases expire
    /// early or late. The node's clock is read over SSH (to the millisecond), else from its
    /// apiserver's HTTP Date (to the second); the API server's from the configured endpoint's.
    #[arg(long, value_name = "DURATION")]
    #[serde(default = "default_clock_skew_max")]
    pub clock_skew_max: Duration,
}

fn default_cert_warning_days() -> u32 {
    30
}

fn default_cert_critical_days() -> u32 {
    7
}

fn default_clock_skew_max() -> Duration {
    Duration::from_secs(30)
}

fn default_ipam_min_age() -> Duration {
    crate::actions::calico_ipam::default_min_age()
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
    ipam_min_age: Duration,
    cert_warning_days: u32,
    cert_critical_days: u32,
    clock_skew_max: Duration,
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
        if options.cert_critical_days > options.cert_warning_days {
            return Err(Error::InvalidOption {
                option: "cert_critical_days".into(),
                problem: format!(
                    "must not be more than cert_warning_days ({})",
                    options.cert_warning_days
                ),
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
            ipam_min_age: options.ipam_min_age,
            cert_warning_days: options.cert_warning_days,
            cert_critical_days: options.cert_critical_days,
            clock_skew_max: options.clock_skew_max,
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
        let mut run = checks::Run::new(cx, deadline, &self.checks).await;
        for check in self.checks.clone() {
            let result = checks::run(check, self, &mut run).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::diagnose::checks::rbac_enforced::rbac_finding;
    use serde_json::{Value, json};

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
}
