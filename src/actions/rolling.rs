//! The rolling node operation that kubelite_restart and cert_refresh share: one [`Step`] on
//! the control-plane nodes one at a time, over SSH (kubelite_restart's `snap restart
//! microk8s.daemon-kubelite`, cert_refresh's `microk8s refresh-certs -e <cert>`, which restarts
//! kubelite too), proving each node and the control plane healthy before the next, under one
//! cluster-wide lock. What follows holds for both; each step adds its own pre-flight reads, its
//! reason to skip a node and the proof of its own effect (see its module).
//!
//! # Order
//! `order: leader_last` (the default) takes the nodes holding the dqlite leadership and the
//! kube-scheduler and kube-controller-manager leases last, fewest roles first, so leadership
//! moves as few times as possible; `order: given` keeps the list as given.
//!
//! # Pre-flight (plan, read-only; any failure: nothing is restarted)
//! Every node reachable over SSH; every node Ready with a fresh node Lease; its kubelite unit
//! active; no snapd change in progress for microk8s (snapd refuses `snap restart` meanwhile, and
//! an auto-refresh restarts every microk8s service); dqlite healthy as each node's own member
//! has it: its k8s-dqlite unit active, its own address (info.yaml) a voter, three voters and a
//! leader (`check_dqlite: false` for clusters that are not microk8s HA); no restart-escalation
//! risk (unless `allow_escalation_risk`): on a node whose cgroup.subtree_control lacks cpuset
//! and that has no delegate.conf, a kubelite that crashes after its restart makes microk8s run
//! `snap restart microk8s`, k8s-dqlite included. A cluster-wide lock (a Lease in kube-system)
//! held by a live run also fails here, and so does a scheduler or controller-manager Lease that
//! does not exist (their gate could never pass); one not held now is a warning.
//!
//! # Before each further node
//! dqlite's health is read again on every node, and none of their k8s-dqlite units may have
//! restarted since the pre-flight; the node's snapd changes are read again. Any failure stops
//! the run before that node is touched.
//!
//! # Gates (after each node's restart, each bounded by `gate_timeout`)
//! Before the restart an Event (reason KubemendKubeliteRestart, in kube-system) records it, so
//! that diagnose does not count the leader changes it causes as churn (a warning if it cannot be
//! written). The unit restarted (a new invocation, active: for a Type=simple unit that is only
//! the wrapper forked); that node's apiserver answering /readyz; the node's Lease renewed once
//! the new kubelite runs; the node Ready; the kube-scheduler and kube-controller-manager leases
//! held and renewed since the restart (a renewal, told by a renewTime other than the one read
//! before, never by comparing clocks: a Lease frozen ahead of this host's clock does not pass); then, for `settle`, kubelite stable (the same invocation, no
//! automatic restart) and no escalation (this node's k8s-dqlite not restarted, no delegate.conf
//! written). The node, its
//! Lease and the two leader Leases are watched (by name), so their gates pass as soon as the API
//! server tells of the change; the unit (over SSH) and /readyz, which cannot be watched, are
//! asked together every 200 ms until they pass. So a node is left as soon as it is healthy. While a
//! node restarts, API calls go to another node's apiserver when the configured one is that
//! node's (a kubeconfig from `microk8s config` points at one node). The nodes' apiservers are
//! reached at their InternalIP (a valid IP address, else left out with a warning), and the
//! credentials go there only when certificates are verified: with `validate_certs: false`,
//! /readyz is asked without them and API calls do not fail over (a warning says so).
//!
//! # Idempotency and resume
//! Each step says which nodes need nothing (kubelite_restart: `restarted_within`; cert_refresh:
//! certificates with more than `renew_before` days left), so a second monthly run reports
//! `changed: false`. The lock's record (items named per step: a record of one kind of run is
//! never resumed by the other) lists the nodes a run finished: a
//! run that failed at a gate releases the lock keeping the record, one that was killed leaves
//! it to expire (`lock_ttl`), and the next run resumes, restarting only what is left.
//!
//! # Check mode
//! The ordered plan with every pre-flight result; no restart, no lock taken.
//!
//! # Errors
//! Invalid node names, hosts, users, durations or order fail before any SSH or API call, naming
//! the option. The first failed gate stops the run: no further node is touched, and the
//! failure carries the report (the node, the gate, the last state observed and the journal's
//! last lines; the nodes done, failed and not started; `changed: true` if any node restarted).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use clap::{Args, ValueEnum};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Context;
use super::cert_refresh::{CertState, RefreshCerts};
use super::kubelite_restart::Restart;
use crate::client::{Cluster, ClusterArgs, NodeServer, connect_node};
use crate::error::{Error, Result};
use crate::k8s::duration::{Duration, format_ago, seconds_since};
use crate::k8s::events;
use crate::k8s::lease::{LEADER_LEASES, leader_lease, lease_held};
use crate::k8s::lock::{self, Lock, LockState};
use crate::k8s::names::quoted;
use crate::k8s::nodes::{
    NODE_LEASE_NAMESPACE, NodeReport, NodeState, endpoint_port, infos_of, internal_ip, read_nodes,
    read_nodes_and_objects,
};
use crate::k8s::objects::Node;
use crate::k8s::watch::Watched;
use crate::microk8s::{
    DELEGATE_CONF, DQLITE_UNIT, ESCALATION_REMEDY, Unit, check_nodes, dqlite_state, escalation,
    snap_change_text, snap_changes, targets, unit_state,
};
use crate::outcome::Outcome;
use crate::ssh::{self, Remote, SshArgs, Target};

/// The Lease that serializes runs: one for every rolling operation, so that a cert_refresh and
/// a kubelite_restart never take kubelite down on two nodes at once.
pub const LOCK: (&str, &str) = ("kube-system", "kubemend-kubelite-restart");

/// How often the gates that cannot be watched (the unit over SSH, /readyz) are asked.
const POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// The longest a gate wait sleeps without looking at the lock's renewal and the clock.
const LOCK_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// The options every rolling operation has: which nodes, in which order, the gates, dqlite's
/// check, the escalation risk and the lock.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, Args)]
pub struct RollingArgs {
    #[serde(flatten)]
    #[command(flatten)]
    #[allow(missing_docs, reason = "documented field by field in ClusterArgs")]
    pub cluster: ClusterArgs,

    #[serde(flatten)]
    #[command(flatten)]
    #[allow(missing_docs, reason = "documented field by field in SshArgs")]
    pub ssh: SshArgs,

    /// The nodes to work on, each a node name or a mapping {name, host, port, user} (a
    /// playbook passes its inventory's ansible_host, ansible_port and ansible_user). Default:
    /// the nodes labelled node.kubernetes.io/microk8s-controlplane, else every node. Each name
    /// must be a Node of the cluster.
    #[arg(long, value_name = "NODE", value_delimiter = ',')]
    #[serde(default)]
    pub nodes: Option<Vec<NodeSpec>>,

    /// leader_last: the nodes holding the dqlite leadership and the scheduler and
    /// controller-manager leases go last; given: the order of nodes.
    #[arg(long, value_enum, value_name = "ORDER")]
    #[serde(default)]
    pub order: Order,

    /// How long each node may take to pass its gates after kubelite's restart, e.g. 90s, 10m.
    #[arg(long, value_name = "DURATION")]
    #[serde(default = "default_gate_timeout")]
    pub gate_timeout: Duration,

    /// How long to wait after a node passed its gates before the next one (0s for none).
    #[arg(long, value_name = "DURATION")]
    #[serde(default = "default_settle")]
    pub settle: Duration,

    /// Check dqlite before the run and before each further node: on every node its
    /// k8s-dqlite unit active and its own member (info.yaml) a voter, three voters and a
    /// leader, no k8s-dqlite restarted meanwhile. Turn off for clusters that are not microk8s
    /// HA.
    #[arg(long, value_name = "BOOL")]
    #[serde(default = "default_true")]
    pub check_dqlite: bool,

    /// Work on nodes where a crash of kubelite after its restart would make microk8s restart
    /// the whole snap, k8s-dqlite included (cpuset not in /sys/fs/cgroup/cgroup.subtree_control,
    /// no delegate.conf). Off: such nodes are refused in the pre-flight, with the remedy. On:
    /// they are restarted with a warning, and an escalation still stops the run.
    #[arg(long, value_name = "BOOL")]
    #[serde(default)]
    pub allow_escalation_risk: bool,

    /// How long the cluster-wide lock stays taken when the run holding it stops renewing it
    /// (it renews it while it works, and right before each node's step); then the next run
    /// takes it over. From 90s (longer than one `snap restart` may take) to 1h.
    #[arg(long, value_name = "DURATION")]
    #[serde(default = "default_lock_ttl")]
    pub lock_ttl: Duration,

    /// Resume from the record a failed or killed run left in the lock only if it wrote it less
    /// than this long ago (its finished nodes are then skipped); an older record, or one that
    /// names every node (a finished run whose lock could not be deleted), is cleared instead.
    #[arg(long, value_name = "DURATION")]
    #[serde(default = "default_resume_within")]
    pub resume_within: Duration,
}

/// The shortest lock_ttl: longer than a `snap restart` may take without a renewal
/// ([`crate::microk8s::SNAP_RESTART_LIMIT`], 75 s), with room for the renewal itself.
const LOCK_TTL_MIN: i64 = 90;
/// The longest lock_ttl: past it a dead run would lock every later one out for too long.
const LOCK_TTL_MAX: i64 = 3600;

fn default_resume_within() -> Duration {
    Duration::from_secs(6 * 3600)
}

fn default_gate_timeout() -> Duration {
    Duration::from_secs(600)
}

fn default_settle() -> Duration {
    Duration::from_secs(10)
}

fn default_lock_ttl() -> Duration {
    Duration::from_secs(120)
}

fn default_true() -> bool {
    true
}

pub use crate::microk8s::{NodeSpec, NodeTarget};

/// Node order.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema, ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Leaders (dqlite, scheduler, controller-manager) last.
    #[default]
    LeaderLast,
    /// As given.
    Given,
}

/// The words a step is told by in statuses and messages.
#[derive(Debug, Clone, Copy)]
pub struct Words {
    /// What it does, as in "restarting kubelite on k8s01": `restarting kubelite`.
    pub doing: &'static str,
    /// The same in check mode: `would restart kubelite`.
    pub would_do: &'static str,
    /// The same once done: `restarted kubelite`.
    pub done: &'static str,
    /// A node's status once done: `restarted`.
    pub status: &'static str,
    /// A node's status in check mode: `would restart`.
    pub would: &'static str,
}

/// What a step decided for one node in the pre-flight.
#[derive(Debug, Default)]
pub struct NodeStep<N> {
    /// Why the node needs nothing (it is skipped), if so.
    pub skip: Option<String>,
    /// What refuses the whole run (nothing is done when any node has one).
    pub problems: Vec<String>,
    /// What the operator should know.
    pub warnings: Vec<String>,
    /// The step's part of the node's report.
    pub node: N,
}

/// A step that failed on a node: what was observed, and whether it may have changed something.
#[derive(Debug)]
pub struct StepFailed {
    /// The command's output, or why its outcome is unknown.
    pub observed: String,
    /// Whether the node may have been changed (kubelite restarted, a file written).
    pub changed: bool,
}

/// One kind of step of the rolling operation: what is done on each node in turn. Every step
/// restarts kubelite (the gates wait for it), so the same pre-flight, gates, lock and resume
/// hold for each. The machinery is one non-generic [`Rolling`] that dispatches on
/// [`StepKind`]: made generic over the step, it was compiled once per step, which the 8 MB
/// binary could not afford.
#[allow(
    async_fn_in_trait,
    reason = "implemented only in this crate and called through StepKind's match on kubemend's \
              single-threaded runtime: no Send bound is needed"
)]
pub trait Step: Sized + std::fmt::Debug {
    /// Statuses and messages.
    const WORDS: Words;
    /// The hint of a failed pre-flight: what to fix.
    const PREFLIGHT_HINT: &'static str;
    /// The name of the step when it fails (`failed_gate`): `restart`, `refresh-certs`.
    const GATE: &'static str;
    /// The gate of the step's own proof, e.g. `certificates renewed` (none for a restart: its
    /// gates are its proof).
    const PROVEN: &'static str;

    /// The module name, for progress lines and errors.
    fn name(&self) -> &'static str;

    /// The snap service whose unit the gates watch (`microk8s.daemon-kubelite`).
    fn service(&self) -> &str;

    /// The time limit of the step on one node, as said when it fails.
    fn limit(&self) -> String;

    /// The item the lock's record names for a finished node.
    fn record_item(&self, node: &str) -> String;

    /// The step's own reads of the pre-flight, over the node's connection.
    async fn preflight(
        &self,
        node: &str,
        remote: &Remote,
        pre: &Preflight,
        now: Timestamp,
    ) -> NodeStep<StepData>;

    /// Carries the step out on `node` (the one write); progress goes to `progress`.
    async fn run(
        &self,
        node: &str,
        remote: &Remote,
        step: &StepData,
        progress: &dyn Fn(&str),
    ) -> std::result::Result<(), StepFailed>;

    /// After the gates passed: proves the step's own effect by `until`, recording it in
    /// `step`; the node's apiserver is at `apiserver` when its address is known. Err: what was
    /// observed.
    async fn prove(
        &self,
        node: &str,
        remote: &Remote,
        apiserver: Option<(SocketAddr, &NodeServer)>,
        step: &mut StepData,
        until: Instant,
    ) -> std::result::Result<(), String>;

    /// The message of a run that finished, when the step has its own.
    fn finished(&self, report: &Report<StepData>) -> Option<String> {
        let _ = report;
        None
    }
}

/// What a step records on a node beside the common results: cert_refresh's certificates (a
/// restart records nothing; kubelite_restart's result leaves this out).
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct StepData {
    /// Every certificate of the node as the pre-flight read it, with what this run does with
    /// it.
    pub certificates: Vec<CertState>,
}

/// The steps there are.
#[derive(Debug, Clone)]
pub enum StepKind {
    /// kubelite_restart's.
    Restart(Restart),
    /// cert_refresh's.
    RefreshCerts(RefreshCerts),
}

/// Calls the step's method, whichever step it is.
macro_rules! each_step {
    ($self:expr, $step:ident => $call:expr) => {
        match $self {
            StepKind::Restart($step) => $call,
            StepKind::RefreshCerts($step) => $call,
        }
    };
}

/// A step's constant, whichever step it is.
macro_rules! step_const {
    ($self:expr, $name:ident) => {
        match $self {
            StepKind::Restart(_) => Restart::$name,
            StepKind::RefreshCerts(_) => RefreshCerts::$name,
        }
    };
}

impl StepKind {
    fn words(&self) -> Words {
        step_const!(self, WORDS)
    }

    fn preflight_hint(&self) -> &'static str {
        step_const!(self, PREFLIGHT_HINT)
    }

    fn gate(&self) -> &'static str {
        step_const!(self, GATE)
    }

    fn proven(&self) -> &'static str {
        step_const!(self, PROVEN)
    }

    fn name(&self) -> &'static str {
        each_step!(self, step => step.name())
    }

    fn service(&self) -> &str {
        each_step!(self, step => step.service())
    }

    fn limit(&self) -> String {
        each_step!(self, step => step.limit())
    }

    fn record_item(&self, node: &str) -> String {
        each_step!(self, step => step.record_item(node))
    }

    async fn preflight(
        &self,
        node: &str,
        remote: &Remote,
        pre: &Preflight,
        now: Timestamp,
    ) -> NodeStep<StepData> {
        each_step!(self, step => step.preflight(node, remote, pre, now).await)
    }

    async fn run(
        &self,
        node: &str,
        remote: &Remote,
        data: &StepData,
        progress: &dyn Fn(&str),
    ) -> std::result::Result<(), StepFailed> {
        each_step!(self, step => step.run(node, remote, data, progress).await)
    }

    async fn prove(
        &self,
        node: &str,
        remote: &Remote,
        apiserver: Option<(SocketAddr, &NodeServer)>,
        data: &mut StepData,
        until: Instant,
    ) -> std::result::Result<(), String> {
        each_step!(self, step => step.prove(node, remote, apiserver, data, until).await)
    }

    fn finished(&self, report: &Report<StepData>) -> Option<String> {
        each_step!(self, step => step.finished(report))
    }
}

/// The result keys.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct Report<N> {
    /// The nodes in the order they are (in check mode: would be) taken, skipped ones included.
    #[schemars(extend("x-sample" = ["k8s02", "k8s03", "k8s01"]))]
    pub order: Vec<String>,
    /// One entry per node: pre-flight results, what was done, and the timeline of its gates.
    pub nodes: Vec<NodeResult<N>>,
    /// Nodes whose kubelite this run restarted (in check mode: would restart).
    pub restarted: Vec<String>,
    /// Nodes skipped: nothing to do there, or done by the interrupted run resumed.
    pub skipped_nodes: Vec<String>,
    /// The node whose step or gate failed; V(null) when none did.
    pub failed_node: Option<String>,
    /// Nodes not touched because the run stopped before them.
    pub not_started: Vec<String>,
    /// The cluster-wide lock.
    pub lock: LockReport,
    /// Seconds the run took.
    pub duration_seconds: f64,
    /// Of which: seconds spent waiting for the nodes' own recovery (restart issued until the
    /// node Lease renewed), summed over the nodes.
    pub recovery_seconds: f64,
}

/// What happened on one node.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct NodeResult<N> {
    /// The node name.
    pub name: String,
    /// The host SSH connects to.
    pub host: String,
    /// C(restarted) (C(renewed)), C(would restart) (C(would renew)), C(skipped), C(failed) or
    /// C(not started).
    pub status: String,
    /// Why it was skipped, or why it failed.
    pub reason: Option<String>,
    /// The leaderships it held before the run (C(dqlite), C(kube-scheduler),
    /// C(kube-controller-manager)).
    pub roles: Vec<String>,
    /// Pre-flight results.
    pub preflight: Preflight,
    /// Each gate and how long after the restart it passed.
    pub timeline: Vec<GatePassed>,
    /// The gate that failed.
    pub failed_gate: Option<String>,
    /// The last state observed when a gate failed (and the journal's last lines).
    pub observed: Option<String>,
    /// Seconds from the restart until the node's Lease renewed.
    pub recovery_seconds: Option<f64>,
    /// The step's own results on this node.
    #[serde(flatten)]
    pub step: N,
}

impl<N> Report<N> {
    /// The same report with each node's step results turned by `f`.
    pub fn map_steps<M>(self, f: impl Fn(N) -> M) -> Report<M> {
        Report {
            order: self.order,
            nodes: self
                .nodes
                .into_iter()
                .map(|n| NodeResult {
                    name: n.name,
                    host: n.host,
                    status: n.status,
                    reason: n.reason,
                    roles: n.roles,
                    preflight: n.preflight,
                    timeline: n.timeline,
                    failed_gate: n.failed_gate,
                    observed: n.observed,
                    recovery_seconds: n.recovery_seconds,
                    step: f(n.step),
                })
                .collect(),
            restarted: self.restarted,
            skipped_nodes: self.skipped_nodes,
            failed_node: self.failed_node,
            not_started: self.not_started,
            lock: self.lock,
            duration_seconds: self.duration_seconds,
            recovery_seconds: self.recovery_seconds,
        }
    }
}

/// Runs `work` on an outcome with the rolling operation's own report in place of `out`, whose
/// report has other step results (kubelite_restart's: none): converted there and back, so the
/// outcome survives a failure as far as it got.
pub async fn in_steps_outcome<N: Default, R>(
    out: &mut Outcome<Report<N>>,
    work: impl AsyncFnOnce(&mut Outcome<Report<StepData>>) -> R,
) -> R {
    let taken = std::mem::take(out);
    let mut inner = Outcome {
        changed: taken.changed,
        msg: taken.msg,
        warnings: taken.warnings,
        diff: taken.diff,
        report: taken.report.map_steps(|_| StepData::default()),
        skipped: taken.skipped,
    };
    let result = work(&mut inner).await;
    *out = Outcome {
        changed: inner.changed,
        msg: inner.msg,
        warnings: inner.warnings,
        diff: inner.diff,
        report: inner.report.map_steps(|_| N::default()),
        skipped: inner.skipped,
    };
    result
}

/// Pre-flight results of one node.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct Preflight {
    /// Whether SSH connected.
    pub ssh: bool,
    /// What failed, if anything.
    pub problems: Vec<String>,
    /// The unit's ActiveState.
    pub active_state: Option<String>,
    /// The unit's NRestarts.
    pub nrestarts: Option<u64>,
    /// When the unit became active (RFC 3339).
    pub active_since: Option<String>,
    /// Whether a crash of kubelite after its restart would escalate to `snap restart
    /// microk8s`, and why.
    pub escalation_risk: Option<bool>,
    /// Why there is an escalation risk.
    pub escalation: Option<String>,
    /// snapd changes in progress for microk8s.
    pub snap_changes: Vec<String>,
    /// This node's dqlite member address (its info.yaml).
    pub dqlite_address: Option<String>,
    /// This node's k8s-dqlite unit's ActiveState.
    pub dqlite_unit: Option<String>,
    /// Whether this node's own member is a dqlite voter.
    pub dqlite_voter: Option<bool>,
    /// dqlite voters (each address once).
    pub dqlite_voters: Option<usize>,
    /// The dqlite leader's address.
    pub dqlite_leader: Option<String>,
    /// The k8s-dqlite unit's InvocationID: a different one later means it restarted.
    #[serde(skip)]
    pub dqlite_invocation: Option<String>,
    /// The node's Ready condition.
    pub node_state: Option<String>,
    /// Seconds since the node's Lease was renewed.
    pub lease_age_seconds: Option<i64>,
}

/// A gate that passed.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GatePassed {
    /// The gate, e.g. C(node lease renewed).
    pub gate: String,
    /// Seconds after the restart was issued.
    pub after_seconds: f64,
    /// When (RFC 3339).
    pub at: String,
}

/// The cluster-wide lock.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct LockReport {
    /// The Lease, as C(namespace/name).
    pub lease: String,
    /// This run's id (the Lease's holder while it runs).
    pub run: Option<String>,
    /// The run this one resumed (its record of finished nodes was honoured).
    pub resumed: Option<String>,
    /// The nodes that run had finished.
    pub resumed_done: Vec<String>,
}

/// The validated action: the common settings and the step.
#[derive(Debug, Clone)]
pub struct Rolling {
    cluster: ClusterArgs,
    ssh: SshArgs,
    nodes: Option<Vec<NodeTarget>>,
    order: Order,
    gate_timeout: Duration,
    settle: Duration,
    check_dqlite: bool,
    allow_escalation_risk: bool,
    lock_ttl: Duration,
    resume_within: Duration,
    /// What is done on each node.
    pub step: StepKind,
}

/// What the plan found and decided.
#[derive(Debug)]
pub struct Plan {
    nodes: Vec<PlannedNode>,
    /// The configured API endpoint, and the node it is on (if it is one node's apiserver).
    primary_node: Option<String>,
    /// Each node's own apiserver at its InternalIP, as a client: with the credentials only
    /// when certificates are verified (see [`connect_node`]).
    apiservers: BTreeMap<String, NodeServer>,
    /// Each node's apiserver address (its InternalIP and the configured endpoint's port).
    addresses: BTreeMap<String, SocketAddr>,
    /// Whether the lock's record is resumed (else a taker starts with an empty one).
    resume: bool,
    /// A record left in the lock that is not resumed, and why: cleared by this run.
    stale_record: Option<String>,
}

impl Plan {
    /// The API to use while `node` restarts: the configured one, unless it is that node's
    /// apiserver; then another node's (one the credentials may go to).
    fn api_for<'a>(&'a self, node: &str, configured: &'a Cluster) -> &'a Cluster {
        if self.primary_node.as_deref() == Some(node) {
            self.apiservers
                .iter()
                .find(|(other, server)| other.as_str() != node && server.credentials)
                .map_or(configured, |(_, server)| &server.cluster)
        } else {
            configured
        }
    }
}

#[derive(Debug)]
struct PlannedNode {
    target: Target,
    remote: Remote,
    skip: Option<String>,
}

impl Rolling {
    /// Validates the common options (no I/O) around `step`.
    pub fn new(options: RollingArgs, step: StepKind) -> Result<Self> {
        options.ssh.check()?;
        options.gate_timeout.require_positive("gate_timeout")?;
        let ttl = options.lock_ttl.seconds();
        if !(LOCK_TTL_MIN..=LOCK_TTL_MAX).contains(&ttl) {
            return Err(Error::InvalidOption {
                option: "lock_ttl".into(),
                problem: format!(
                    "{} is outside 90s..1h: shorter, the lock could expire while a node \
                     restarts and a second run start another; longer, a run that died would \
                     lock every later one out",
                    options.lock_ttl
                ),
            });
        }
        options.resume_within.require_positive("resume_within")?;
        let nodes = check_nodes(options.nodes)?;
        Ok(Self {
            cluster: options.cluster,
            ssh: options.ssh,
            nodes,
            order: options.order,
            gate_timeout: options.gate_timeout,
            settle: options.settle,
            check_dqlite: options.check_dqlite,
            allow_escalation_risk: options.allow_escalation_risk,
            lock_ttl: options.lock_ttl,
            resume_within: options.resume_within,
            step,
        })
    }

    /// The cluster-access options.
    #[must_use]
    pub fn cluster_args(&self) -> &ClusterArgs {
        &self.cluster
    }

    /// Resolves the nodes, runs every pre-flight check, reads the lock and orders the nodes.
    #[allow(
        clippy::too_many_lines,
        reason = "the pre-flight reads as one sequence: nodes, checks, lock, order, message"
    )]
    pub async fn plan(&self, cx: &Context, out: &mut Outcome<Report<StepData>>) -> Result<Plan> {
        let cluster = &cx.cluster;
        out.report.lock.lease = format!("{}/{}", LOCK.0, LOCK.1);
        let (listed, infos) = read_nodes_and_objects(cluster).await?;
        let targets = targets(&listed, self.nodes.as_deref())?;
        let mut addresses: BTreeMap<String, IpAddr> = BTreeMap::new();
        for node in &listed {
            let Some(name) = node.metadata.name.clone() else {
                continue;
            };
            match internal_ip(node) {
                Some(Ok(ip)) => {
                    addresses.insert(name, ip);
                }
                Some(Err(text)) if targets.iter().any(|t| t.node == name) => out.warn(format!(
                    "node {name} advertises InternalIP {}, which is not an IP address: its \
                     apiserver's /readyz is not checked and API calls do not fail over to it",
                    quoted(&text)
                )),
                Some(Err(_)) | None => {}
            }
        }
        let now = Timestamp::now();
        // Pre-flight on every node, all of them, so that the report lists every problem; the
        // leader Leases and the lock are read meanwhile.
        let (leases, checks, lock_read) = tokio::join!(
            leader_leases_now(cluster),
            ssh::each_bounded(targets.iter(), |target| {
                self.preflight(
                    target,
                    NodeReport::of(&infos, Some(&target.node), now),
                    cx.check_mode,
                    now,
                )
            }),
            lock::read(cluster, LOCK.0, LOCK.1)
        );
        let leases = leases?;
        let roles = leaderships(&leases);
        let mut planned = Vec::new();
        let mut problems = Vec::new();
        for (name, spec) in &leases {
            match leader_lease_preflight(name, spec.as_ref(), now) {
                Some(Err(problem)) => problems.push(problem),
                Some(Ok(warning)) => out.warn(warning),
                None => {}
            }
        }
        // The dqlite leader is told by its member address, which each node's info.yaml gives
        // (not by InternalIP: dqlite may listen on another interface, or IPv6).
        let mut members: BTreeMap<String, String> = BTreeMap::new();
        let mut leaders: Vec<String> = Vec::new();
        for (target, (preflight, remote, step)) in targets.iter().zip(checks) {
            for problem in preflight.problems.iter().chain(&step.problems) {
                problems.push(format!("{}: {problem}", target.node));
            }
            for warning in &step.warnings {
                out.warn(format!("{}: {warning}", target.node));
            }
            if let Some(address) = &preflight.dqlite_address {
                members.insert(address.clone(), target.node.clone());
            }
            if let Some(leader) = &preflight.dqlite_leader {
                leaders.push(leader.clone());
            }
            if let Some(why) = &preflight.escalation
                && self.allow_escalation_risk
            {
                out.warn(format!(
                    "{}: {why} (allowed by allow_escalation_risk; an escalation still stops \
                     the run)",
                    target.node
                ));
            }
            let mut node_roles: Vec<String> = Vec::new();
            node_roles.extend(roles.get(&target.node).cloned().unwrap_or_default());
            out.report.nodes.push(NodeResult {
                name: target.node.clone(),
                host: target.host.clone(),
                status: "not started".into(),
                roles: node_roles,
                preflight: preflight.clone(),
                step: step.node,
                ..NodeResult::default()
            });
            if let Some(remote) = remote {
                planned.push(PlannedNode {
                    target: target.clone(),
                    remote,
                    skip: step.skip,
                });
            }
        }
        for node in &mut out.report.nodes {
            if leaders
                .iter()
                .any(|l| members.get(l).is_some_and(|n| n == &node.name))
            {
                node.roles.insert(0, "dqlite".into());
            }
        }

        let lock_state = lock::state_of(lock_read?.as_ref(), now);
        if let LockState::Held {
            holder,
            since,
            done,
        } = &lock_state
        {
            problems.push(format!(
                "lease {}/{} is held by run {holder} since {since}{}",
                LOCK.0,
                LOCK.1,
                if done.is_empty() {
                    String::new()
                } else {
                    format!(" (done: {})", done.join(", "))
                }
            ));
        }
        if !problems.is_empty() {
            out.msg = format!("pre-flight failed, nothing done: {}", problems.join("; "));
            return Err(Error::CannotPlan {
                action: self.step.name(),
                problem: format!(
                    "pre-flight failed, so no node was touched: {}",
                    problems.join("; ")
                ),
                hint: format!(
                    "fix what the pre-flight names (every node reachable over SSH and Ready, \
                     the scheduler and controller-manager Leases there, no snapd change in \
                     progress, each node's k8s-dqlite active and a voter with three voters and \
                     a leader, no restart-escalation risk: write delegate.conf or delegate \
                     cpuset first{}), then run again",
                    self.step.preflight_hint()
                ),
            });
        }
        let items: Vec<String> = targets
            .iter()
            .map(|t| self.step.record_item(&t.node))
            .collect();
        let names: Vec<&str> = items.iter().map(String::as_str).collect();
        let stale_record = stale_record(&lock_state, &names, &self.resume_within);
        if let Some(why) = &stale_record {
            out.warn(why.clone());
        } else {
            self.resume(&lock_state, &mut planned, out);
        }
        if self.order == Order::LeaderLast {
            // Stable: nodes with as many leaderships keep their given order.
            planned.sort_by_key(|p| {
                out.report
                    .nodes
                    .iter()
                    .find(|n| n.name == p.target.node)
                    .map_or(0, |n| n.roles.len())
            });
        }
        out.report.order = planned.iter().map(|p| p.target.node.clone()).collect();
        out.report
            .nodes
            .sort_by_key(|n| out.report.order.iter().position(|o| o == &n.name));
        for node in &mut out.report.nodes {
            if let Some(p) = planned.iter().find(|p| p.target.node == node.name) {
                if let Some(why) = &p.skip {
                    node.status = "skipped".into();
                    node.reason = Some(why.clone());
                } else if cx.check_mode {
                    node.status = self.step.words().would.into();
                }
            }
        }
        out.report.skipped_nodes = planned
            .iter()
            .filter(|p| p.skip.is_some())
            .map(|p| p.target.node.clone())
            .collect();
        let to_restart: Vec<String> = planned
            .iter()
            .filter(|p| p.skip.is_none())
            .map(|p| p.target.node.clone())
            .collect();
        if cx.check_mode {
            out.report.restarted.clone_from(&to_restart);
            out.changed = !to_restart.is_empty();
        } else {
            out.report.not_started.clone_from(&to_restart);
        }
        out.msg = if to_restart.is_empty() {
            format!(
                "nothing to do: {} skipped",
                out.report.skipped_nodes.join(", ")
            )
        } else {
            format!(
                "{} on {} one at a time{}",
                if cx.check_mode {
                    self.step.words().would_do
                } else {
                    self.step.words().doing
                },
                to_restart.join(", then "),
                if self.order == Order::LeaderLast {
                    " (leaders last)"
                } else {
                    ""
                }
            )
        };
        let primary_node = primary_node(&cluster.endpoint, &addresses);
        let mut apiservers = BTreeMap::new();
        let port = endpoint_port(&cluster.endpoint);
        // Failover candidates: every control-plane node, not only those restarted.
        let control_plane = crate::microk8s::targets(&listed, None).unwrap_or_default();
        for (node, ip) in &addresses {
            if targets
                .iter()
                .chain(&control_plane)
                .any(|t| &t.node == node)
            {
                let url = format!("https://{}", std::net::SocketAddr::new(*ip, port));
                apiservers.insert(node.clone(), connect_node(&self.cluster, &url).await?);
            }
        }
        if let Some(primary) = &primary_node
            && to_restart.contains(primary)
            && !apiservers.values().any(|s| s.credentials)
        {
            out.warn(format!(
                "while {primary} restarts, API calls stay on its apiserver (the configured \
                 endpoint): the credentials go to the addresses the Nodes advertise only when \
                 certificates are verified (validate_certs, ca_cert); the nodes' /readyz is \
                 asked without credentials"
            ));
        }
        let addresses = addresses
            .into_iter()
            .map(|(node, ip)| (node, SocketAddr::new(ip, port)))
            .collect();
        Ok(Plan {
            nodes: planned,
            primary_node,
            apiservers,
            addresses,
            resume: stale_record.is_none(),
            stale_record,
        })
    }

    /// Takes the lock, then restarts node after node, each through its gates.
    pub async fn apply(
        &self,
        cx: &Context,
        plan: Plan,
        out: &mut Outcome<Report<StepData>>,
    ) -> Result<()> {
        let run = run_id();
        let ttl = i32::try_from(self.lock_ttl.seconds()).unwrap_or(i32::MAX);
        if cx.check_mode || plan.nodes.iter().all(|n| n.skip.is_some()) {
            // Nothing to restart; a record no run will resume is cleared all the same, so that
            // it does not stand in the way of later runs.
            if !cx.check_mode && plan.stale_record.is_some() {
                clear_stale_record(cx, &run, ttl, out).await;
            }
            close_all(plan.nodes).await;
            return Ok(());
        }
        let started = Instant::now();
        let (mut lock, taken_from) =
            lock::acquire(&cx.cluster, LOCK.0, LOCK.1, &run, ttl, plan.resume).await?;
        out.report.lock.run = Some(run.clone());
        match &taken_from {
            LockState::Expired {
                holder,
                renewed_ago,
                ..
            } => out.warn(format!(
                "took over lease {}/{} from run {holder}, which stopped renewing it {}s ago{}",
                LOCK.0,
                LOCK.1,
                renewed_ago,
                if plan.resume {
                    "; resuming after its record"
                } else {
                    ""
                }
            )),
            LockState::Released { .. } | LockState::Free | LockState::Held { .. } => {}
        }
        // A cancelled job (SIGTERM, SIGINT) or the timeout about to run out stops the run
        // between or during its steps; then, as after a failed gate, the lock is released
        // keeping its record, the connections are closed, and the result says what was done.
        let stopped = tokio::select! {
            result = self.restart_all(cx, &plan, &mut lock, out) => Ok(result),
            by = interruption(cx.deadline) => Err(by),
        };
        let result = match stopped {
            Ok(result) => result,
            Err(by) => Err(interrupted(out, by, self.step.words())),
        };
        out.report.duration_seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(()) => {
                // Every node restarted and passed its gates: a lock that cannot be deleted
                // (a datastore refusing writes) does not undo that. Its record names every
                // node, so the next run clears it rather than resuming from it.
                if let Err(err) = lock.finish(&cx.cluster).await {
                    out.warn(format!(
                        "every node restarted, but lease {}/{} could not be deleted: {}; it is \
                         released instead, and the next run clears it",
                        LOCK.0,
                        LOCK.1,
                        err.message_with_causes()
                    ));
                    // `finish` keeps the lock on failure: release it, so that no later run
                    // waits for it to expire.
                    if let Err(err) = lock.release_keeping_record(&cx.cluster).await {
                        out.warn(format!(
                            "nor could it be released: {}; it expires after lock_ttl",
                            err.message_with_causes()
                        ));
                    }
                }
            }
            Err(error) => {
                // Through an apiserver that is up: the configured one may be the failed node's.
                let api = out
                    .report
                    .failed_node
                    .as_deref()
                    .map_or(&cx.cluster, |node| plan.api_for(node, &cx.cluster));
                if let Err(release) = lock.release_keeping_record(api).await {
                    out.warn(format!(
                        "could not release the lock: {}; it expires after lock_ttl",
                        release.message_with_causes()
                    ));
                }
                close_all(plan.nodes).await;
                return Err(error);
            }
        }
        close_all(plan.nodes).await;
        out.msg = format!(
            "{} on {} one at a time in {:.0}s{}",
            self.step.words().done,
            if out.report.restarted.is_empty() {
                "no node".to_owned()
            } else {
                out.report.restarted.join(", then ")
            },
            out.report.duration_seconds,
            if out.report.skipped_nodes.is_empty() {
                String::new()
            } else {
                format!("; skipped {}", out.report.skipped_nodes.join(", "))
            }
        );
        if let Some(msg) = self.step.finished(&out.report) {
            out.msg = format!("{msg} in {:.0}s", out.report.duration_seconds);
        }
        Ok(())
    }

    /// Every node Ready with a fresh Lease, and both leader leases held, after the run. A
    /// leadership handover in progress (the last node restarted held a lease) is waited out,
    /// within `gate_timeout`.
    pub async fn verify(&self, cx: &Context, out: &mut Outcome<Report<StepData>>) -> Result<()> {
        if out.report.restarted.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + self.gate_timeout.std();
        loop {
            let problems = health(cx, &out.report.order).await?;
            if problems.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::NotVerified {
                    what: problems.join("; "),
                    hint: "the nodes passed their gates but the control plane is not healthy \
                           now; check `kubectl get nodes` and the kubelite journals"
                        .into(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// What is not healthy now: nodes not Ready or with an expired Lease, leader leases not held.
async fn health(cx: &Context, nodes: &[String]) -> Result<Vec<String>> {
    let infos = read_nodes(&cx.cluster).await?;
    let now = Timestamp::now();
    let mut problems = Vec::new();
    for name in nodes {
        let node = NodeReport::of(&infos, Some(name), now);
        if node.state != NodeState::Ready || node.lease_expired {
            problems.push(node.text());
        }
    }
    for lease in LEADER_LEASES {
        let held = leader_lease_spec(&cx.cluster, lease).await?;
        if !held.as_ref().is_some_and(|l| lease_held(l, now)) {
            problems.push(format!("lease kube-system/{lease} not held"));
        }
    }
    Ok(problems)
}

impl Rolling {
    /// The pre-flight checks of one node, and its open connection when SSH works.
    async fn preflight(
        &self,
        target: &Target,
        node: NodeReport,
        check_mode: bool,
        now: Timestamp,
    ) -> (Preflight, Option<Remote>, NodeStep<StepData>) {
        let mut pre = Preflight {
            node_state: Some(node.state.label().to_owned()),
            lease_age_seconds: node.lease_age,
            ..Preflight::default()
        };
        if node.state != NodeState::Ready {
            pre.problems
                .push(format!("node is not Ready: {}", node.text()));
        } else if node.lease_expired || node.lease_age.is_none() {
            pre.problems
                .push(format!("node Lease is not fresh: {}", node.text()));
        }
        let remote = match ssh::connect(&self.ssh, target, check_mode).await {
            Ok(remote) => remote,
            Err(err) => {
                pre.problems.push(err.message_with_causes());
                return (pre, None, NodeStep::default());
            }
        };
        pre.ssh = true;
        // Every read at once over the node's one connection.
        let name = self.unit();
        let (unit, escalation, changes, dqlite) = tokio::join!(
            unit_state(&remote, &name),
            escalation(&remote),
            snap_changes(&remote),
            async {
                if self.check_dqlite {
                    Some(dqlite_state(&remote).await)
                } else {
                    None
                }
            }
        );
        match unit {
            Ok(unit) => {
                pre.active_state = Some(unit.text());
                pre.nrestarts = unit.nrestarts;
                pre.active_since = unit.active_since.map(|t| t.to_string());
                if !unit.is_active() {
                    pre.problems.push(format!(
                        "unit {} is {}, not active",
                        self.unit(),
                        unit.text()
                    ));
                }
            }
            Err(err) => pre.problems.push(err.message_with_causes()),
        }
        match escalation {
            Ok(escalation) => {
                pre.escalation_risk = Some(escalation.risk);
                pre.escalation = escalation.why;
                if let Some(why) = &pre.escalation
                    && !self.allow_escalation_risk
                {
                    pre.problems.push(format!(
                        "{why}; {ESCALATION_REMEDY}, or set allow_escalation_risk"
                    ));
                }
            }
            Err(err) => pre.problems.push(err.message_with_causes()),
        }
        match changes {
            Ok(changes) => {
                if !changes.is_empty() {
                    pre.problems.push(format!(
                        "{} in progress: snapd refuses `snap restart` until it is done, and an \
                         auto-refresh restarts every microk8s service itself; wait for it \
                         (`snap watch {}`) and run again",
                        snap_change_text(&changes),
                        changes[0].id
                    ));
                }
                pre.snap_changes = changes
                    .iter()
                    .map(|c| format!("{} {}: {}", c.id, c.status, c.summary))
                    .collect();
            }
            Err(err) => pre.problems.push(err.message_with_causes()),
        }
        match dqlite {
            Some(Ok(state)) => {
                pre.dqlite_address = state.own_address;
                pre.dqlite_unit = state.unit.as_ref().map(Unit::text);
                pre.dqlite_invocation = state.unit.and_then(|u| u.invocation);
                pre.dqlite_voter = state.own_voter;
                pre.dqlite_voters = state.voters;
                pre.dqlite_leader = state.leader;
                pre.problems.extend(state.problems);
            }
            Some(Err(err)) => pre.problems.push(err.message_with_causes()),
            None => {}
        }
        let step = self.step.preflight(&target.node, &remote, &pre, now).await;
        (pre, Some(remote), step)
    }

    fn unit(&self) -> String {
        format!("snap.{}", self.step.service())
    }

    /// Honours the record of an interrupted run: its finished nodes are skipped.
    fn resume(
        &self,
        state: &LockState,
        planned: &mut [PlannedNode],
        out: &mut Outcome<Report<StepData>>,
    ) {
        let (run, done) = match state {
            LockState::Released { run, done, .. } => (run.clone(), done),
            LockState::Expired { holder, done, .. } => (holder.clone(), done),
            LockState::Free | LockState::Held { .. } => return,
        };
        if done.is_empty() {
            return;
        }
        out.report.lock.resumed = Some(run.clone());
        out.report.lock.resumed_done.clone_from(done);
        for node in planned.iter_mut() {
            if done.contains(&self.step.record_item(&node.target.node)) {
                node.skip = Some(format!("done by the interrupted run {run}, resumed"));
            }
        }
    }

    async fn restart_all(
        &self,
        cx: &Context,
        plan: &Plan,
        lock: &mut Lock,
        out: &mut Outcome<Report<StepData>>,
    ) -> Result<()> {
        for planned in &plan.nodes {
            if planned.skip.is_some()
                || lock
                    .done
                    .contains(&self.step.record_item(&planned.target.node))
            {
                continue;
            }
            let node = &planned.target.node;
            // While this node restarts, talk to another node's apiserver if the configured one
            // is this node's.
            let api = plan.api_for(node, &cx.cluster);
            out.report.not_started.retain(|n| n != node);
            // The pre-flight checked dqlite and snapd before the first restart; before every
            // further one they are checked again.
            let checked = if out.report.restarted.is_empty() {
                Ok(())
            } else {
                self.before_restart(plan, planned, out).await
            };
            let result = match checked {
                Ok(()) => self.restart_one(cx, api, plan, planned, lock, out).await,
                Err(failed) => Err(failed),
            };
            let entry = out.report.nodes.iter_mut().find(|n| &n.name == node);
            match result {
                Ok(()) => {
                    if let Some(entry) = entry {
                        entry.status = self.step.words().status.into();
                    }
                    out.report.restarted.push(node.clone());
                    lock.record(api, &self.step.record_item(node)).await?;
                }
                Err((gate, observed, error)) => {
                    if let Some(entry) = entry {
                        entry.status = "failed".into();
                        entry.failed_gate = Some(gate);
                        entry.observed = Some(observed);
                        entry.reason = Some(error.message_with_causes());
                    }
                    out.report.failed_node = Some(node.clone());
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    /// Before a further node: dqlite healthy on every node with no k8s-dqlite restarted since
    /// the pre-flight, and no snapd change in progress on this node. On failure: the check,
    /// what was observed, and the error (nothing was done to the node).
    async fn before_restart(
        &self,
        plan: &Plan,
        planned: &PlannedNode,
        out: &Outcome<Report<StepData>>,
    ) -> std::result::Result<(), (String, String, Error)> {
        let node = &planned.target.node;
        let refuse = |check: &str, observed: String, hint: &str| {
            let error = Error::GateFailed {
                node: node.clone(),
                gate: check.to_owned(),
                after: "before its restart".into(),
                observed: observed.clone(),
                hint: format!("nothing was done on {node}; {hint}; a rerun does only what is left"),
            };
            (check.to_owned(), observed, error)
        };
        if self.check_dqlite {
            let states = ssh::each_bounded(plan.nodes.iter(), |p| dqlite_state(&p.remote)).await;
            let mut problems = Vec::new();
            for (p, state) in plan.nodes.iter().zip(states) {
                let name = &p.target.node;
                match state {
                    Ok(state) => {
                        problems.extend(state.problems.iter().map(|x| format!("{name}: {x}")));
                        let before = out
                            .report
                            .nodes
                            .iter()
                            .find(|n| &n.name == name)
                            .and_then(|n| n.preflight.dqlite_invocation.as_ref());
                        let now = state.unit.as_ref().and_then(|u| u.invocation.as_ref());
                        if let (Some(before), Some(now)) = (before, now)
                            && before != now
                        {
                            problems.push(format!(
                                "{name}: {DQLITE_UNIT} restarted during the run (invocation \
                                 {before} is now {now}): an escalation or a snap refresh \
                                 restarted it, and its member may still be catching up"
                            ));
                        }
                    }
                    Err(err) => problems.push(err.message_with_causes()),
                }
            }
            if !problems.is_empty() {
                return Err(refuse(
                    "dqlite healthy",
                    problems.join("; "),
                    "look at `journalctl -u snap.microk8s.daemon-k8s-dqlite` and `microk8s \
                     status` on the nodes named and wait until every member is back as a voter",
                ));
            }
        }
        match snap_changes(&planned.remote).await {
            Ok(changes) if changes.is_empty() => Ok(()),
            Ok(changes) => Err(refuse(
                "no snapd change",
                format!("{} in progress", snap_change_text(&changes)),
                &format!("wait for it (`snap watch {}` on {node})", changes[0].id),
            )),
            Err(err) => Err(refuse(
                "no snapd change",
                err.message_with_causes(),
                "make `snap changes microk8s` work on the node",
            )),
        }
    }

    /// Restarts one node and waits for its gates. On failure: the gate, what was observed, and
    /// the error.
    #[allow(
        clippy::too_many_lines,
        reason = "restart, the gate loop and the settle loop share the node's timeline"
    )]
    async fn restart_one(
        &self,
        cx: &Context,
        api: &Cluster,
        plan: &Plan,
        planned: &PlannedNode,
        lock: &mut Lock,
        out: &mut Outcome<Report<StepData>>,
    ) -> std::result::Result<(), (String, String, Error)> {
        let node = planned.target.node.clone();
        let remote = &planned.remote;
        let fail = |gate: &str, observed: String| {
            let error = Error::GateFailed {
                node: node.clone(),
                gate: gate.to_owned(),
                // The limit that applied: gate_timeout only bounds the gates after the restart.
                after: match gate {
                    gate if gate == self.step.gate() => {
                        format!("at the {gate} ({})", self.step.limit())
                    }
                    "lock" => "when the lock was renewed".to_owned(),
                    "kubelite stable" | "no escalation" | "k8s-dqlite stable" => {
                        format!("through settle ({})", self.settle)
                    }
                    _ => format!("within {} (gate_timeout)", self.gate_timeout),
                },
                observed: observed.clone(),
                hint: format!(
                    "look at `journalctl -u {}` on {node}; no further node was touched, and a \
                     rerun does only what is left",
                    self.unit()
                ),
            };
            (gate.to_owned(), observed, error)
        };
        // The invocations before the restart: the unit gate waits for a new kubelite one, and
        // a new k8s-dqlite one afterwards is an escalation.
        let name = self.unit();
        let (before, dqlite_before) =
            tokio::join!(unit_state(remote, &name), unit_state(remote, DQLITE_UNIT));
        let before = before.map_err(|e| fail(self.step.gate(), e.message_with_causes()))?;
        let dqlite_before = dqlite_before.ok().and_then(|u| u.invocation);
        // The leader Leases' renewals before the restart: their gate waits for a renewal after
        // it (a change, whatever the clocks say: a Lease frozen in the future never passes).
        let mut leaders_before = [None, None];
        for (slot, name) in leaders_before.iter_mut().zip(LEADER_LEASES) {
            *slot = leader_lease_spec(api, name)
                .await
                .ok()
                .flatten()
                .and_then(|spec| spec.renew_time.map(|t| t.0));
        }
        // The lock, renewed right before the step: it is sent only if this run still holds it.
        if let Err(err) = lock.renew(api).await {
            return Err(fail("lock", err.message_with_causes()));
        }
        let run = out.report.lock.run.clone().unwrap_or_default();
        if let Err(err) = events::record_kubelite_restart(api, &node, &run).await {
            out.warn(format!(
                "{node}: the restart could not be recorded as an Event (diagnose then counts \
                 the leader changes it causes as churn): {}",
                err.message_with_causes()
            ));
        }
        let step = out
            .report
            .nodes
            .iter()
            .find(|n| n.name == node)
            .map(|n| n.step.clone())
            .unwrap_or_default();
        let started = Instant::now();
        let progress = |text: &str| cx.progress(self.step.name(), &format!("{node}: {text}"));
        // The lock is renewed while the step runs (a step may restart kubelite more than once),
        // through `api`, which is not this node's apiserver when another is known.
        let mut lock_lost = None;
        let ran = {
            let running = self.step.run(&node, remote, &step, &progress);
            tokio::pin!(running);
            loop {
                tokio::select! {
                    result = &mut running => break result,
                    () = tokio::time::sleep(LOCK_TICK) => {
                        if lock_lost.is_none()
                            && let Err(err) = lock.renew_if_due(api).await
                        {
                            lock_lost = Some(err.message_with_causes());
                        }
                    }
                }
            }
        };
        if let Err(failed) = ran {
            out.changed |= failed.changed;
            return Err(fail(self.step.gate(), failed.observed));
        }
        out.changed = true;
        if let Some(lost) = lock_lost {
            return Err(fail("lock", lost));
        }
        let deadline = started + self.gate_timeout.std();
        let mut gates = Gates::default();
        let mut timeline = Vec::new();
        let pass = |gate: &str, timeline: &mut Vec<GatePassed>| {
            let after = started.elapsed().as_secs_f64();
            cx.progress(
                self.step.name(),
                &format!("{node}: {gate} after {after:.1}s"),
            );
            timeline.push(GatePassed {
                gate: gate.to_owned(),
                after_seconds: after,
                at: Timestamp::now().to_string(),
            });
        };
        let own = plan.apiservers.get(&node);
        let mut recovery = None;
        // The node Lease's renewal when the unit gate passed (None until then).
        let mut lease_at_restart: Option<Option<Timestamp>> = None;
        // The node, its Lease and the leader Leases are watched, so those gates pass as soon as
        // the API server tells of the change; the unit (over SSH) and /readyz are asked every
        // POLL until they pass.
        let mut node_watch = Watched::new(
            Api::<Node>::all(api.client.clone()),
            &node,
            format!("node {node}"),
        );
        let mut lease_watch = Watched::new(
            Api::<Lease>::namespaced(api.client.clone(), NODE_LEASE_NAMESPACE),
            &node,
            format!("lease {NODE_LEASE_NAMESPACE}/{node}"),
        );
        let leader_api: Api<Lease> = Api::namespaced(api.client.clone(), "kube-system");
        let [mut scheduler, mut controller_manager] = LEADER_LEASES.map(|name| {
            Watched::new(
                leader_api.clone(),
                name,
                format!("lease kube-system/{name}"),
            )
        });
        tokio::join!(
            node_watch.changed(),
            lease_watch.changed(),
            scheduler.changed(),
            controller_manager.changed()
        );
        loop {
            if let Err(err) = lock.renew_if_due(api).await {
                return Err(fail("lock", err.message_with_causes()));
            }
            let mut observed = Vec::new();
            let (unit, ready) = tokio::join!(
                async {
                    if gates.unit.is_none() {
                        Some(unit_state(remote, &self.unit()).await)
                    } else {
                        None
                    }
                },
                async {
                    match own {
                        Some(own) if !gates.readyz => Some(readyz(&own.cluster).await),
                        _ => None,
                    }
                }
            );
            match unit {
                Some(Ok(unit)) if unit.is_active() && restarted_since(&before, &unit) => {
                    pass("unit restarted", &mut timeline);
                    gates.unit = Some(unit);
                    // The old kubelet is gone now: the next renewal of the node Lease is the
                    // new one's.
                    lease_at_restart = Some(renewal(lease_watch.latest.as_ref()));
                }
                Some(Ok(unit)) if unit.is_active() => {
                    observed.push(format!("unit {} with its old invocation", unit.text()));
                }
                Some(Ok(unit)) => observed.push(format!("unit {}", unit.text())),
                Some(Err(err)) => observed.push(err.message_with_causes()),
                None => {}
            }
            if !gates.readyz {
                match ready {
                    Some(Ok(())) => {
                        gates.readyz = true;
                        pass("apiserver /readyz", &mut timeline);
                    }
                    Some(Err(why)) => observed.push(format!("{node}'s apiserver: {why}")),
                    None => {
                        gates.readyz = true;
                        pass(
                            "apiserver /readyz (no address known: skipped)",
                            &mut timeline,
                        );
                    }
                }
            }
            // Why a watch could not read (a 403 names the missing permission), not only that.
            for watch_error in [&node_watch.error, &lease_watch.error]
                .into_iter()
                .chain([&scheduler.error, &controller_manager.error])
                .flatten()
            {
                observed.push(watch_error.clone());
            }
            let now = Timestamp::now();
            let infos = infos_of(
                &node,
                node_watch.latest.as_ref(),
                lease_watch.latest.as_ref(),
            );
            if !gates.lease {
                let renewed = infos.get(&node).and_then(|i| i.lease_renewed);
                // Renewed since the unit came up again: a change, not a time compared with
                // this host's clock (a node's clock may differ, or a Lease be frozen ahead).
                if let Some(at_restart) = lease_at_restart
                    && renewed.is_some()
                    && renewed != at_restart
                {
                    gates.lease = true;
                    recovery = Some(started.elapsed().as_secs_f64());
                    pass("node lease renewed", &mut timeline);
                } else {
                    observed.push(format!(
                        "node lease last renewed {}{}",
                        renewed.map_or_else(|| "never".into(), |r| r.to_string()),
                        if lease_at_restart.is_some() {
                            ", not since kubelite came up again"
                        } else {
                            ""
                        }
                    ));
                }
            }
            if !gates.ready {
                let state = NodeReport::of(&infos, Some(&node), now);
                if state.state == NodeState::Ready {
                    gates.ready = true;
                    pass("node Ready", &mut timeline);
                } else {
                    observed.push(state.text());
                }
            }
            if !gates.leases {
                let leases = [
                    (LEADER_LEASES[0], scheduler.latest.as_ref()),
                    (LEADER_LEASES[1], controller_manager.latest.as_ref()),
                ];
                match leader_leases_renewed(&leases, &leaders_before, now) {
                    None => {
                        gates.leases = true;
                        pass(
                            "scheduler and controller-manager leases held",
                            &mut timeline,
                        );
                    }
                    Some(why) => observed.push(why),
                }
            }
            if gates.all() {
                break;
            }
            if Instant::now() >= deadline {
                let gate = gates.first_pending();
                let journal = remote
                    .run(
                        true,
                        "journalctl",
                        &["-u", &self.unit(), "-n", "15", "--no-pager"],
                    )
                    .await
                    .map(|o| o.stdout)
                    .unwrap_or_default();
                return Err(fail(
                    gate,
                    format!("{}; journal:\n{}", observed.join("; "), journal.trim_end()),
                ));
            }
            // Until something changes: a watched object, the next poll of the unit or /readyz
            // while they are pending, the lock's renewal, or the deadline.
            let polled = gates.unit.is_none() || !gates.readyz;
            tokio::select! {
                () = node_watch.changed(), if !gates.ready => {}
                () = lease_watch.changed(), if !gates.lease => {}
                () = scheduler.changed(), if !gates.leases => {}
                () = controller_manager.changed(), if !gates.leases => {}
                () = tokio::time::sleep(POLL), if polled => {}
                () = tokio::time::sleep(LOCK_TICK) => {}
                () = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
        // Through settle: kubelite keeps the invocation that came up (a crash and systemd's
        // automatic restart start a new one; a unit that keeps dying passes "active" between
        // deaths), and this node's k8s-dqlite keeps its own: a new one means microk8s escalated
        // a crash to `snap restart microk8s` (which also resets NRestarts, so a counter cannot
        // tell).
        let came_up = gates.unit.clone().unwrap_or_default();
        let escalation_risk = out
            .report
            .nodes
            .iter()
            .any(|n| n.name == node && n.preflight.escalation_risk == Some(true));
        let settle_until = Instant::now() + self.settle.std();
        loop {
            let (unit, dqlite) =
                tokio::join!(unit_state(remote, &name), unit_state(remote, DQLITE_UNIT));
            let unit = unit.map_err(|e| fail("kubelite stable", e.message_with_causes()))?;
            // A new k8s-dqlite invocation is a start (a stopped unit, none, is left to the
            // dqlite check before the next node): with a new kubelite invocation too, microk8s
            // restarted the whole snap; alone, k8s-dqlite died or was restarted by itself.
            if let (Some(before), Ok(now)) = (&dqlite_before, &dqlite)
                && now.invocation.as_ref().is_some_and(|i| i != before)
            {
                let restarted = format!(
                    "{DQLITE_UNIT} restarted after kubelite's restart (it is {}, invocation \
                     {before} is now {})",
                    now.text(),
                    now.invocation.as_deref().unwrap_or("none")
                );
                return Err(if unit.invocation == came_up.invocation {
                    fail(
                        "k8s-dqlite stable",
                        format!(
                            "{restarted}, while kubelite kept running: its dqlite member died or \
                             was restarted and may still be catching up; look at `journalctl \
                             -u {DQLITE_UNIT}` on {node}"
                        ),
                    )
                } else {
                    fail(
                        "no escalation",
                        format!(
                            "{restarted} and kubelite with it: microk8s turned a kubelite crash \
                             into `snap restart microk8s`; {ESCALATION_REMEDY}"
                        ),
                    )
                });
            }
            if !unit.is_active() || unit.invocation != came_up.invocation {
                // On a node with the escalation risk, the wrapper that starts again decides at
                // once whether to restart the whole snap: wait for that to name it.
                if escalation_risk
                    && let Some(before) = &dqlite_before
                    && let Some(evidence) = escalated(remote, before).await
                {
                    return Err(fail(
                        "no escalation",
                        format!(
                            "kubelite restarted by itself and microk8s turned it into `snap \
                             restart microk8s`: {evidence}; {ESCALATION_REMEDY}"
                        ),
                    ));
                }
                return Err(fail(
                    "kubelite stable",
                    format!(
                        "unit {} with NRestarts={} and invocation {} (came up as {}): kubelite \
                         restarted after it came up",
                        unit.text(),
                        unit.nrestarts
                            .map_or_else(|| "unknown".into(), |n| n.to_string()),
                        unit.invocation.as_deref().unwrap_or("none"),
                        came_up.invocation.as_deref().unwrap_or("none")
                    ),
                ));
            }
            if Instant::now() >= settle_until {
                break;
            }
            if let Err(err) = lock.renew_if_due(api).await {
                return Err(fail("lock", err.message_with_causes()));
            }
            tokio::time::sleep(POLL.max(std::time::Duration::from_millis(500))).await;
        }
        pass(&format!("settled {}", self.settle), &mut timeline);
        // The step's own effect, proven on the node and through its apiserver.
        let mut step = step;
        let proven = self
            .step
            .prove(
                &node,
                remote,
                plan.addresses
                    .get(&node)
                    .copied()
                    .zip(plan.apiservers.get(&node)),
                &mut step,
                Instant::now() + self.gate_timeout.std(),
            )
            .await;
        if proven.is_ok() && !self.step.proven().is_empty() {
            pass(self.step.proven(), &mut timeline);
        }
        if let Some(entry) = out.report.nodes.iter_mut().find(|n| n.name == node) {
            entry.timeline = timeline;
            entry.recovery_seconds = recovery;
            entry.step = step;
        }
        out.report.recovery_seconds += recovery.unwrap_or_default();
        proven.map_err(|observed| fail(self.step.proven(), observed))
    }
}

/// Which gates passed; `unit` holds the unit as it came up.
#[derive(Debug, Default)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "one flag per gate: the struct is the checklist"
)]
struct Gates {
    unit: Option<Unit>,
    lease: bool,
    ready: bool,
    readyz: bool,
    leases: bool,
}

impl Gates {
    fn all(&self) -> bool {
        self.unit.is_some() && self.lease && self.ready && self.readyz && self.leases
    }

    /// The first gate not passed, in the order a node comes up: its unit, its apiserver, its
    /// kubelet (the Lease, then Ready), the leaders.
    fn first_pending(&self) -> &'static str {
        if self.unit.is_none() {
            "unit restarted"
        } else if !self.readyz {
            "apiserver /readyz"
        } else if !self.lease {
            "node lease renewed"
        } else if !self.ready {
            "node Ready"
        } else {
            "scheduler and controller-manager leases held"
        }
    }
}

/// Whether `now` is a later start of the unit than `before`: a new InvocationID (every start
/// has its own, automatic restarts included), else a later ActiveEnterTimestamp.
fn restarted_since(before: &Unit, now: &Unit) -> bool {
    match (&before.invocation, &now.invocation) {
        (_, None) => false,
        (Some(before), Some(now)) => before != now,
        (None, Some(_)) => match (before.active_since, now.active_since) {
            (Some(before), Some(now)) => now > before,
            _ => true,
        },
    }
}

/// How long a restarted kubelite's wrapper is given to escalate (it checks first thing).
const ESCALATION_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// The evidence that microk8s escalated a kubelite crash on this node, or None if none shows
/// within [`ESCALATION_WAIT`]: its k8s-dqlite with an invocation other than `before`, or
/// [`DELEGATE_CONF`] written (the node had none: that is what the escalation risk means), which
/// run-kubelite-with-args does just before `snap restart microk8s`, whose stop of kubelite can
/// take long before k8s-dqlite's turn comes.
async fn escalated(remote: &Remote, before: &str) -> Option<String> {
    let until = Instant::now() + ESCALATION_WAIT;
    loop {
        let (dqlite, delegate) = tokio::join!(
            unit_state(remote, DQLITE_UNIT),
            remote.run(false, "test", &["-e", DELEGATE_CONF])
        );
        if let Ok(unit) = dqlite
            && let Some(now) = unit.invocation.as_deref().filter(|i| *i != before)
        {
            return Some(format!(
                "{DQLITE_UNIT} is {}, invocation {before} is now {now}",
                unit.text()
            ));
        }
        if delegate.is_ok_and(|d| d.success()) {
            return Some(format!(
                "it wrote {DELEGATE_CONF}, which it does just before `snap restart microk8s`"
            ));
        }
        if Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Why the lock's record is not resumed (None: it is, or there is none): written longer than
/// `resume_within` ago (or in the future: clock skew), or naming every node to restart (a
/// finished run whose lock could not be deleted).
fn stale_record(state: &LockState, nodes: &[&str], resume_within: &Duration) -> Option<String> {
    let (run, age) = state.record_age()?;
    let done = state.done();
    if done.is_empty() {
        return None;
    }
    let lease = format!("lease {}/{}", LOCK.0, LOCK.1);
    if age > resume_within.seconds() || age < 0 {
        return Some(format!(
            "{lease} holds the record of run {run} ({}), written {}: not resumed (older than \
             resume_within, {resume_within}); this run clears it and works on every node",
            done.join(", "),
            format_ago(age),
        ));
    }
    if nodes.iter().all(|n| done.iter().any(|d| d == n)) {
        return Some(format!(
            "{lease} holds the record of run {run}, which names every node ({}): a finished run \
             whose lock could not be deleted; this run clears it",
            done.join(", ")
        ));
    }
    None
}

/// Clears a record in the lock that no run will resume (best effort: a warning on failure).
async fn clear_stale_record<N>(cx: &Context, run: &str, ttl: i32, out: &mut Outcome<Report<N>>) {
    let cleared = match lock::acquire(&cx.cluster, LOCK.0, LOCK.1, run, ttl, false).await {
        Ok((mut lock, _)) => lock.finish(&cx.cluster).await,
        Err(err) => Err(err),
    };
    if let Err(err) = cleared {
        out.warn(format!(
            "could not clear the old record in lease {}/{}: {}",
            LOCK.0,
            LOCK.1,
            err.message_with_causes()
        ));
    }
}

/// Records in the report that the run was stopped by `by`, and the error that says so: the node
/// under way (out of not_started, not yet restarted) is the failed one, and its restart may
/// have been sent, so the run counts as changed.
fn interrupted<N>(out: &mut Outcome<Report<N>>, by: String, words: Words) -> Error {
    let current = out
        .report
        .order
        .iter()
        .find(|n| {
            !out.report.not_started.contains(n)
                && !out.report.restarted.contains(n)
                && !out.report.skipped_nodes.contains(n)
        })
        .cloned();
    if let Some(node) = &current {
        out.changed = true;
        out.report.failed_node = Some(node.clone());
        if let Some(entry) = out.report.nodes.iter_mut().find(|e| &e.name == node) {
            entry.status = "failed".into();
            entry.reason = Some(format!("stopped by {by}"));
        }
    }
    Error::Interrupted {
        doing: current.map_or_else(
            || "between nodes".to_owned(),
            |n| format!("{} on {n}", words.doing),
        ),
        by,
        hint: "the lock is released keeping its record, so a rerun does only what is left; \
               check the node that was under way, whose gates had not all passed"
            .into(),
    }
}

/// How long before the `timeout` option runs out a rolling restart stops, so that it can still
/// release its lock and close its connections.
const RELEASE_MARGIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Resolves when the run must stop: SIGTERM or SIGINT (an AWX job cancelled, Ctrl-C), or
/// [`RELEASE_MARGIN`] before the deadline. Says which.
async fn interruption(deadline: Option<Instant>) -> String {
    use tokio::signal::unix::{SignalKind, signal};
    let until = deadline.map(|d| d.checked_sub(RELEASE_MARGIN).unwrap_or(d));
    let timeout = async {
        match until {
            Some(until) => tokio::time::sleep_until(until.into()).await,
            None => std::future::pending().await,
        }
    };
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        timeout.await;
        return "the timeout option, about to run out".into();
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM".into(),
        _ = int.recv() => "SIGINT".into(),
        () = timeout => "the timeout option, about to run out".into(),
    }
}

/// Closes every node's SSH connection, [`ssh::MAX_PARALLEL`] at a time.
async fn close_all(nodes: Vec<PlannedNode>) {
    ssh::each_bounded(nodes, |n| n.remote.close()).await;
}

/// The scheduler and controller-manager leases as they are now, in [`LEADER_LEASES`]' order.
async fn leader_leases_now(
    cluster: &Cluster,
) -> Result<
    Vec<(
        &'static str,
        Option<k8s_openapi::api::coordination::v1::LeaseSpec>,
    )>,
> {
    let mut out = Vec::new();
    for name in LEADER_LEASES {
        out.push((name, leader_lease_spec(cluster, name).await?));
    }
    Ok(out)
}

/// Which node holds which leader lease (holder `<node>_<uuid>`).
fn leaderships(
    leases: &[(&str, Option<k8s_openapi::api::coordination::v1::LeaseSpec>)],
) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, spec) in leases {
        if let Some(holder) = spec.as_ref().and_then(|s| s.holder_identity.as_deref()) {
            let node = holder.split('_').next().unwrap_or(holder).to_owned();
            out.entry(node).or_default().push((*name).to_owned());
        }
    }
    out
}

/// The leader Leases judged before any restart as their gate judges them after each: a
/// problem (`Err`) when one does not exist (leader election off, or no leader ever: the gate
/// could never pass, so the first restart would fail it for a reason older than the run), a
/// warning (`Ok`) when one is not held now (a restart may bring its leader back; if the first
/// one does not, its gate stops the run there).
fn leader_lease_preflight(
    name: &str,
    spec: Option<&k8s_openapi::api::coordination::v1::LeaseSpec>,
    now: Timestamp,
) -> Option<std::result::Result<String, String>> {
    let Some(spec) = spec else {
        return Some(Err(format!(
            "lease kube-system/{name} does not exist, and the gate after each restart waits \
             for it to be held and renewed (is leader election off for {name}?)"
        )));
    };
    if lease_held(spec, now) {
        return None;
    }
    Some(Ok(format!(
        "lease kube-system/{name} is not held now (holder {}, last renewed {}): the gate after \
         each restart waits for it to be held and renewed; if the first restart does not bring \
         a leader back, the run stops there",
        spec.holder_identity.as_deref().unwrap_or("nobody"),
        spec.renew_time
            .as_ref()
            .map_or_else(|| "never".into(), |t| format_ago(seconds_since(t.0, now)))
    )))
}

/// The spec of a leader-election lease, if it exists.
async fn leader_lease_spec(
    cluster: &Cluster,
    name: &str,
) -> Result<Option<k8s_openapi::api::coordination::v1::LeaseSpec>> {
    Ok(leader_lease(cluster, name).await?.and_then(|l| l.spec))
}

/// When a Lease was last renewed, if it says.
fn renewal(lease: Option<&Lease>) -> Option<Timestamp> {
    lease?.spec.as_ref()?.renew_time.as_ref().map(|t| t.0)
}

/// `None` when both leader leases are held and renewed since they were read before the restart
/// (`before`, in the same order: a renewTime other than that one), else what is not.
fn leader_leases_renewed(
    leases: &[(&str, Option<&Lease>)],
    before: &[Option<Timestamp>],
    now: Timestamp,
) -> Option<String> {
    for ((name, lease), before) in leases.iter().zip(before) {
        let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
            return Some(format!("lease kube-system/{name} does not exist"));
        };
        let renewed = spec.renew_time.as_ref().map(|t| t.0);
        let renewed_since = renewed.is_some() && renewed != *before;
        if !lease_held(spec, now) || !renewed_since {
            return Some(format!(
                "lease kube-system/{name} held by {} last renewed {}{}",
                spec.holder_identity.as_deref().unwrap_or("nobody"),
                renewed.map_or_else(|| "never".into(), |t| t.to_string()),
                if renewed_since {
                    ""
                } else {
                    ", not since the restart"
                }
            ));
        }
    }
    None
}

/// GET /readyz on one apiserver.
pub(crate) async fn readyz(cluster: &Cluster) -> std::result::Result<(), String> {
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    match cluster.client.request_text(request).await {
        Ok(text) if text.trim() == "ok" => Ok(()),
        Ok(text) => Err(format!(
            "/readyz says {:?}",
            text.chars().take(200).collect::<String>()
        )),
        Err(err) => Err(crate::error::causes_text(&err)),
    }
}

/// The node whose apiserver the configured endpoint is, if it is one node's.
fn primary_node(endpoint: &str, addresses: &BTreeMap<String, IpAddr>) -> Option<String> {
    let uri: http::Uri = endpoint.parse().ok()?;
    let host: IpAddr = uri
        .host()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    addresses
        .iter()
        .find(|(_, ip)| **ip == host)
        .map(|(node, _)| node.clone())
}

/// A run id: this host, process and time.
fn run_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "kubemend".into(), |h| h.trim().to_owned());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        Timestamp::now().strftime("%Y%m%dT%H%M%SZ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Options through the whole validation, as the module and the CLI do it.
    fn validate(value: Value) -> Result<()> {
        let Value::Object(options) = value else {
            panic!("options are an object")
        };
        crate::actions::validate::<crate::actions::kubelite_restart::KubeliteRestart>(options)
    }

    fn option_of(result: Result<()>) -> String {
        match result {
            Err(Error::InvalidOption { option, .. }) => option,
            other => panic!("expected an invalid option, got {other:?}"),
        }
    }

    #[test]
    fn bad_input_is_refused_naming_the_option_before_any_call() {
        assert_eq!(
            option_of(validate(json!({"nodes": ["k8s01; reboot"]}))),
            "nodes[0].name"
        );
        assert_eq!(
            option_of(validate(
                json!({"nodes": [{"name": "k8s01", "host": "-oProxyCommand=x"}]})
            )),
            "nodes[0].host"
        );
        assert_eq!(
            option_of(validate(
                json!({"nodes": [{"name": "k8s01", "user": "a b"}]})
            )),
            "nodes[0].user"
        );
        assert_eq!(option_of(validate(json!({"nodes": []}))), "nodes");
        assert_eq!(
            option_of(validate(json!({"nodes": ["a", "a"]}))),
            "nodes[1]"
        );
        assert_eq!(
            option_of(validate(json!({"gate_timeout": "0s"}))),
            "gate_timeout"
        );
        assert_eq!(
            option_of(validate(json!({"gate_timeout": "-5m"}))),
            "gate_timeout"
        );
        assert_eq!(option_of(validate(json!({"lock_ttl": "0m"}))), "lock_ttl");
        assert_eq!(option_of(validate(json!({"order": "random"}))), "order");
        assert_eq!(
            option_of(validate(json!({"host_key_checking": "no"}))),
            "host_key_checking"
        );
        assert_eq!(
            option_of(validate(json!({"service": "kubelite; id"}))),
            "service"
        );
        assert!(
            validate(
                json!({"nodes": ["k8s01", {"name": "k8s02", "host": "10.0.0.2", "port": 22}]})
            )
            .is_ok()
        );
    }

    fn node_with_internal_ip(address: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "k8s01"},
            "status": {"addresses": [
                {"type": "Hostname", "address": "k8s01"},
                {"type": "InternalIP", "address": address}
            ]}
        }))
        .unwrap()
    }

    #[test]
    fn internal_ips_that_are_no_ip_address_are_left_out_not_used_as_urls() {
        for good in ["10.0.0.1", "fd00::1"] {
            let ip = internal_ip(&node_with_internal_ip(good)).unwrap().unwrap();
            assert_eq!(ip, good.parse::<IpAddr>().unwrap());
        }
        for bad in [
            "evil.example",
            "10.0.0.1:8443",
            "user@10.0.0.1",
            "10.0.0.1/x",
            "[fd00::1]",
            "",
        ] {
            assert_eq!(
                internal_ip(&node_with_internal_ip(bad)),
                Some(Err(bad.to_owned())),
                "{bad:?}"
            );
        }
        let ipv6 = std::net::SocketAddr::new("fd00::1".parse().unwrap(), 16443);
        assert_eq!(format!("https://{ipv6}"), "https://[fd00::1]:16443");
    }

    #[test]
    fn lock_ttl_is_longer_than_a_restart_and_shorter_than_an_hour() {
        for bad in ["30s", "89s", "61m", "36500d"] {
            assert_eq!(
                option_of(validate(json!({"lock_ttl": bad}))),
                "lock_ttl",
                "{bad}"
            );
        }
        for good in ["90s", "2m", "1h"] {
            assert!(validate(json!({"lock_ttl": good})).is_ok(), "{good}");
        }
        assert_eq!(
            option_of(validate(json!({"resume_within": "0s"}))),
            "resume_within"
        );
    }

    #[test]
    fn a_record_is_resumed_only_when_recent_and_not_naming_every_node() {
        let released = |ago: i64, done: &[&str]| LockState::Released {
            run: "run-a".into(),
            done: done.iter().map(|d| (*d).to_owned()).collect(),
            released_ago: ago,
        };
        let within = Duration::from_secs(6 * 3600);
        let nodes = ["k8s01", "k8s02", "k8s03"];
        // A run that failed at k8s02 ten minutes ago: resumed.
        assert_eq!(
            stale_record(&released(600, &["k8s01"]), &nodes, &within),
            None
        );
        // A month-old record: cleared, every node restarted.
        let old = stale_record(&released(30 * 86_400, &["k8s01"]), &nodes, &within).unwrap();
        assert!(old.contains("older than resume_within"), "{old}");
        // A finished run whose delete failed: cleared, whatever its age.
        let all = stale_record(&released(5, &nodes), &nodes, &within).unwrap();
        assert!(all.contains("names every node"), "{all}");
        // Written in the future (clock skew): not trusted.
        assert!(stale_record(&released(-3600, &["k8s01"]), &nodes, &within).is_some());
        // Expired (a killed run) is judged alike; no record, nothing to say.
        let expired = LockState::Expired {
            holder: "run-b".into(),
            done: vec!["k8s03".into()],
            renewed_ago: 40 * 86_400,
        };
        assert!(stale_record(&expired, &nodes, &within).is_some());
        assert_eq!(stale_record(&released(600, &[]), &nodes, &within), None);
        assert_eq!(stale_record(&LockState::Free, &nodes, &within), None);
    }

    #[test]
    fn the_configured_endpoint_is_matched_to_its_node() {
        let addresses: BTreeMap<String, IpAddr> = [
            ("k8s01".to_owned(), "127.0.1.1".parse().unwrap()),
            ("k8s02".to_owned(), "127.0.1.2".parse().unwrap()),
        ]
        .into();
        assert_eq!(
            primary_node("https://127.0.1.1:16443", &addresses).as_deref(),
            Some("k8s01")
        );
        assert_eq!(primary_node("https://127.0.0.1:16443", &addresses), None);
        assert_eq!(primary_node("https://k8s01:16443", &addresses), None);
        let v6: BTreeMap<String, IpAddr> =
            [("k8s03".to_owned(), "fd00::3".parse().unwrap())].into();
        assert_eq!(
            primary_node("https://[fd00:0::3]:16443", &v6).as_deref(),
            Some("k8s03")
        );
        assert_eq!(endpoint_port("https://127.0.1.1:16443"), 16443);
    }

    fn lease(holder: &str, renewed: &str) -> Lease {
        serde_json::from_value(json!({
            "metadata": {"name": "kube-scheduler", "namespace": "kube-system"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed},
        }))
        .unwrap()
    }

    #[test]
    fn leader_lease_gate_waits_for_a_renewal_not_for_a_time_ahead_of_the_clock() {
        let now: Timestamp = "2026-12-06T10:00:00Z".parse().unwrap();
        // Frozen an hour in the future: held by the clock, but never renewed again.
        let frozen = lease("k8s01_a", "2026-12-06T11:00:00.000000Z");
        let before = [Some("2026-12-06T11:00:00Z".parse().unwrap())];
        let why = leader_leases_renewed(&[("kube-scheduler", Some(&frozen))], &before, now);
        assert!(why.is_some_and(|w| w.contains("not since the restart")));
        // Renewed (a different renewTime), even by a node whose clock is behind this one's.
        let behind = lease("k8s02_b", "2026-12-06T09:59:58.000000Z");
        let before = [Some("2026-12-06T09:59:56Z".parse().unwrap())];
        assert_eq!(
            leader_leases_renewed(&[("kube-scheduler", Some(&behind))], &before, now),
            None
        );
        // Not renewed since: the same renewTime as before the restart.
        let before = [Some("2026-12-06T09:59:58Z".parse().unwrap())];
        assert!(
            leader_leases_renewed(&[("kube-scheduler", Some(&behind))], &before, now).is_some()
        );
        // Gone.
        let why = leader_leases_renewed(&[("kube-controller-manager", None)], &[None], now);
        assert!(why.is_some_and(|w| w.contains("does not exist")));
    }

    #[test]
    fn preflight_refuses_a_missing_leader_lease_and_warns_of_one_not_held() {
        let now: Timestamp = "2026-12-06T10:00:00Z".parse().unwrap();
        let refused = leader_lease_preflight("kube-scheduler", None, now);
        assert!(matches!(refused, Some(Err(ref why)) if why.contains("does not exist")));
        let expired = lease("k8s01_a", "2026-12-06T09:50:00.000000Z")
            .spec
            .unwrap();
        let warned = leader_lease_preflight("kube-scheduler", Some(&expired), now);
        assert!(matches!(warned, Some(Ok(ref why)) if why.contains("not held now")));
        let held = lease("k8s01_a", "2026-12-06T09:59:59.000000Z")
            .spec
            .unwrap();
        assert_eq!(
            leader_lease_preflight("kube-scheduler", Some(&held), now),
            None
        );
    }
}
