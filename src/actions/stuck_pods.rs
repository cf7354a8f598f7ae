//! stuck_pods: finds pods stuck Terminating or Pending and force-deletes them, on evidence,
//! safely, at cluster scale.
//!
//! A pod is **stuck Terminating** when its deletionTimestamp (the deadline the API server set
//! when the pod was deleted) passed more than `terminating_grace` ago: its node never confirmed
//! the deletion. It is **stuck Pending** when it has been Pending for more than `pending_age`
//! on no node, with no PodScheduled condition, no scheduling gates and no events: the scheduler
//! never saw it (the incident's lost watch). A Pending pod the scheduler did look at
//! (PodScheduled=False, a FailedScheduling event, scheduling gates) is not stuck: it is reported
//! under `seen_by_scheduler` and left alone. Each stuck pod is reported with its node's state
//! (Ready, NotReady, Unknown, gone; Lease age) or its schedulerName and whether a scheduler of
//! that name holds a lease.
//!
//! # Safety
//! The delete is `gracePeriodSeconds: 0`, propagation Background, with a UID precondition, so a
//! pod re-created under the same name is never hit. Only pods owned by a controller are deleted
//! unless `include_bare_pods`; StatefulSet pods only with `allow_statefulset` and then only when
//! their node is not Ready, is gone, or they were never scheduled (so they run nowhere).
//! Finalizers are removed only with `remove_finalizers`; otherwise a pod held by finalizers is
//! reported with them and left alone (a force delete would not remove it). Pods in
//! `exclude_namespaces` are reported, never deleted. When more than `max_pods` pods qualify,
//! none is deleted and the run fails: that many at once points to a wider problem. Every
//! deleted pod is reported with its full manifest, and with `backup_dir` written to a file
//! (all files before the first delete).
//!
//! # Scale
//! Nodes and node Leases are read once. Terminating pods are found in a paginated
//! metadata-only list of all pods in scope ([`PAGE_SIZE`] a page), Pending ones in a paginated
//! list filtered by the server (`status.phase=Pending,spec.nodeName=`); pages are evaluated as
//! they arrive and dropped. A pod is read whole, and events are listed, only for candidates.
//! What is kept grows with the stuck pods (capped: `max_pods` + 1 manifests, [`REPORT_LIMIT`]
//! report entries a list), not with the cluster's pod count.
//!
//! # Idempotency
//! A deleted pod is gone; its replacement is young, so a second run reports `changed: false`.
//!
//! # Check mode
//! Same scan and plan; the deletes are sent as server-side dry runs (nothing removed) and no
//! backup file is written. The result lists exactly the pods a real run would delete.
//!
//! # Verification
//! After the deletes, each deleted UID is looked up until it is gone (a pod of the same name
//! with a new UID counts as gone); `verified` says whether all are, and a pod still there is
//! reported with its finalizers.
//!
//! # Caveats
//! Ages are measured against this machine's clock, the timestamps they are measured from are
//! the API server's: keep the durations well above the clock skew between the two.
//!
//! # Errors
//! Malformed or negative durations, unknown kinds, invalid namespaces and label selectors fail
//! before any API call, naming the option. More than `max_pods` qualifying pods fails before
//! any delete. A failed delete stops the run; the message lists the pods deleted before it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration as StdDuration, Instant};

use clap::{Args, ValueEnum};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Action, Context};
use crate::client::{Cluster, ClusterArgs};
use crate::error::{Error, Result};
use crate::k8s::FIELD_MANAGER;
use crate::k8s::delete::{BackupOf, DeleteOptions, Deletion, backup, delete_uid, dry_run_refused};
use crate::k8s::duration::{Duration, format_ago, format_duration, seconds_since};
use crate::k8s::lease::lease_held;
use crate::k8s::names::check_label;
use crate::k8s::nodes::{NODE_LEASE_NAMESPACE, NodeInfo, NodeReport, NodeState, read_nodes};
use crate::k8s::objects::{Pod, Whole};
use crate::k8s::paging::Pages;
use crate::k8s::selector::{check_label_selector, escape_field_value};
use crate::outcome::{Diff, Outcome};

/// At most this many entries in each of the `left_alone` and `seen_by_scheduler` lists; the rest
/// are counted.
pub const REPORT_LIMIT: usize = 100;

/// How long to wait for deleted pods to disappear.
const VERIFY_TIMEOUT: StdDuration = StdDuration::from_secs(15);

/// The scheduler a pod without schedulerName gets, and the Lease its leader holds.
const DEFAULT_SCHEDULER: &str = "default-scheduler";
const DEFAULT_SCHEDULER_LEASE: (&str, &str) = ("kube-system", "kube-scheduler");

/// Force-delete pods stuck Terminating or stuck Pending (never seen by the scheduler), on
/// evidence, with a UID precondition, a cap per run and a restorable backup of each.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, Args)]
pub struct Options {
    #[serde(flatten)]
    #[command(flatten)]
    #[allow(missing_docs, reason = "documented field by field in ClusterArgs")]
    pub cluster: ClusterArgs,

    /// Which stuck pods to look for: terminating (deleted, but their node never confirmed it),
    /// pending (never seen by the scheduler), or both (the default).
    #[arg(long, value_enum, value_name = "KIND", value_delimiter = ',')]
    #[serde(default = "default_kinds")]
    pub kinds: Vec<StuckKind>,

    /// How long past its deletion deadline (deletionTimestamp) a Terminating pod must be to
    /// count as stuck, e.g. 90s, 10m, 1h.
    #[arg(long, value_name = "DURATION")]
    #[serde(default = "default_terminating_grace")]
    pub terminating_grace: Duration,

    /// How old a Pending pod that the scheduler never saw must be to count as stuck, e.g. 90s,
    /// 10m, 1h.
    #[arg(long, value_name = "DURATION")]
    #[serde(default = "default_pending_age")]
    pub pending_age: Duration,

    /// Only look in these namespaces (default: all).
    #[arg(long, value_name = "NAMESPACE", value_delimiter = ',')]
    #[serde(default)]
    pub namespaces: Vec<String>,

    /// Namespaces whose stuck pods are reported but never deleted (default: kube-system,
    /// kube-node-lease). An empty list (`[]`; on the command line `--exclude-namespaces ''`)
    /// allows every namespace. An empty string (a templated variable that came out empty) is
    /// refused rather than taken as an empty list, so it never drops the default by accident.
    #[arg(long, value_name = "NAMESPACE", value_delimiter = ',')]
    #[serde(default = "default_exclude_namespaces")]
    pub exclude_namespaces: Vec<String>,

    /// Only consider pods matching this label selector, e.g. `app=web,tier!=db`.
    #[arg(long, value_name = "SELECTOR")]
    #[serde(default)]
    pub label_selector: Option<String>,

    /// Also delete pods that no controller owns. Nothing re-creates them.
    #[arg(long)]
    #[serde(default)]
    pub include_bare_pods: bool,

    /// Also delete StatefulSet pods, but only when their node is not Ready or gone, or they
    /// were never scheduled. A force delete of a StatefulSet pod on a live node can run two
    /// copies at once.
    #[arg(long)]
    #[serde(default)]
    pub allow_statefulset: bool,

    /// Remove the finalizers of the pods deleted, so that they really go. Without it a stuck
    /// pod with finalizers is reported with them and left alone.
    #[arg(long)]
    #[serde(default)]
    pub remove_finalizers: bool,

    /// Most pods to delete in one run. When more qualify, none is deleted and the run fails:
    /// that many stuck pods point to a wider problem (a dead node, a stalled scheduler).
    #[arg(long, value_name = "N")]
    #[serde(default = "default_max_pods")]
    #[schemars(range(min = 1))]
    pub max_pods: u32,

    /// Directory for a YAML manifest of each deleted pod (created if missing), written before
    /// the first delete.
    #[arg(long, value_name = "DIR")]
    #[serde(default)]
    pub backup_dir: Option<String>,
}

fn default_kinds() -> Vec<StuckKind> {
    vec![StuckKind::Terminating, StuckKind::Pending]
}

fn default_terminating_grace() -> Duration {
    Duration::from_secs(300)
}

fn default_pending_age() -> Duration {
    Duration::from_secs(600)
}

fn default_exclude_namespaces() -> Vec<String> {
    vec!["kube-system".into(), NODE_LEASE_NAMESPACE.into()]
}

fn default_max_pods() -> u32 {
    20
}

/// The two ways a pod can be stuck.
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
#[serde(rename_all = "lowercase")]
pub enum StuckKind {
    /// Deleted, but its node never confirmed the deletion.
    Terminating,
    /// Pending and never seen by the scheduler.
    Pending,
}

// ---------------------------------------------------------------------------------------------
// Durations and label selectors (validation, no cluster)
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Classification (pure)
// ---------------------------------------------------------------------------------------------

/// Who owns a pod, as far as re-creating it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// An ownerReference with `controller: true`.
    Controller {
        /// Kind, e.g. ReplicaSet.
        kind: String,
        /// Name.
        name: String,
    },
    /// No controller: nothing re-creates the pod.
    Bare,
}

impl Owner {
    /// The controller of an object, if any.
    #[must_use]
    pub fn of(meta: &ObjectMeta) -> Self {
        meta.owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true))
            .map_or(Self::Bare, |r| Self::Controller {
                kind: r.kind.clone(),
                name: r.name.clone(),
            })
    }

    fn is_statefulset(&self) -> bool {
        matches!(self, Self::Controller { kind, .. } if kind == "StatefulSet")
    }

    fn label(&self) -> Option<String> {
        match self {
            Self::Controller { kind, name } => Some(format!("{kind}/{name}")),
            Self::Bare => None,
        }
    }
}

/// What the options allow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// `include_bare_pods`.
    pub include_bare_pods: bool,
    /// `allow_statefulset`.
    pub allow_statefulset: bool,
    /// `remove_finalizers`.
    pub remove_finalizers: bool,
}

/// The decision on one stuck pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Force-delete it.
    Delete,
    /// Leave it alone, for this reason.
    Skip(String),
}

impl Verdict {
    /// This verdict if it skips, else the next one.
    #[must_use]
    pub fn and_then(self, next: impl FnOnce() -> Self) -> Self {
        match self {
            Self::Delete => next(),
            Self::Skip(reason) => Self::Skip(reason),
        }
    }
}

/// The decision from what a pod's metadata tells: namespace exclusion, owner, finalizers.
/// A StatefulSet pod that passes still needs [`node_verdict`].
#[must_use]
pub fn metadata_verdict(
    policy: Policy,
    excluded_namespace: bool,
    owner: &Owner,
    finalizers: &[String],
) -> Verdict {
    if excluded_namespace {
        return Verdict::Skip(
            "its namespace is in exclude_namespaces (system pods are not force-deleted by \
             default)"
                .into(),
        );
    }
    if *owner == Owner::Bare && !policy.include_bare_pods {
        return Verdict::Skip(
            "bare pod: no controller owns it, so nothing would re-create it \
             (include_bare_pods: true allows it)"
                .into(),
        );
    }
    if owner.is_statefulset() && !policy.allow_statefulset {
        return Verdict::Skip(
            "StatefulSet pod: a force delete can break its at-most-one guarantee \
             (allow_statefulset: true allows it when its node is not Ready or gone)"
                .into(),
        );
    }
    if !finalizers.is_empty() && !policy.remove_finalizers {
        return Verdict::Skip(format!(
            "held by finalizers [{}]: a force delete does not remove them \
             (remove_finalizers: true removes them)",
            finalizers.join(", ")
        ));
    }
    Verdict::Delete
}

/// The decision from the pod's node: a StatefulSet pod is deleted only when it cannot be
/// running (node not Ready, gone, or never scheduled).
#[must_use]
pub fn node_verdict(owner: &Owner, node: &NodeReport) -> Verdict {
    if owner.is_statefulset() && node.state == NodeState::Ready {
        return Verdict::Skip(format!(
            "StatefulSet pod on node {}, which is Ready: it may still be running there, so a \
             force delete could run two copies at once",
            node.text()
        ));
    }
    Verdict::Delete
}

/// Evidence, from the pod itself, that the scheduler has looked at it: scheduling gates or any
/// PodScheduled condition.
#[must_use]
pub fn scheduler_evidence(pod: &Pod) -> Option<String> {
    if let Some(gates) = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .filter(|g| !g.is_empty())
    {
        let names: Vec<&str> = gates.iter().map(|g| g.name.as_str()).collect();
        return Some(format!(
            "held by scheduling gates [{}]: waiting on purpose",
            names.join(", ")
        ));
    }
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")?;
    let mut text = format!("PodScheduled={}", condition.status);
    if let Some(reason) = condition.reason.as_deref().filter(|r| !r.is_empty()) {
        let _ = write!(text, " ({reason})");
    }
    if let Some(message) = condition.message.as_deref().filter(|m| !m.is_empty()) {
        let _ = write!(text, ": {message}");
    }
    Some(text)
}

/// Evidence from the pod's events: a FailedScheduling event (the scheduler tried), or any
/// event at all (something has seen the pod).
#[must_use]
pub fn event_evidence(events: &[Event]) -> Option<String> {
    if let Some(failed) = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("FailedScheduling"))
    {
        return Some(format!(
            "FailedScheduling event: {}",
            failed.message.as_deref().unwrap_or("(no message)")
        ));
    }
    let first = events.first()?;
    let reasons: BTreeSet<&str> = events.iter().filter_map(|e| e.reason.as_deref()).collect();
    Some(format!(
        "{} event(s) ({}), e.g. from {}: something has seen the pod",
        events.len(),
        reasons.into_iter().collect::<Vec<_>>().join(", "),
        first
            .source
            .as_ref()
            .and_then(|s| s.component.as_deref())
            .or(first.reporting_component.as_deref())
            .unwrap_or("an unnamed component")
    ))
}

// ---------------------------------------------------------------------------------------------
// The plan
// ---------------------------------------------------------------------------------------------

/// A stuck pod that qualifies for a force delete.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID as scanned: the delete precondition.
    pub uid: String,
    /// Its controller.
    pub owner: Owner,
    /// Terminating or Pending.
    pub kind: StuckKind,
    /// Its node.
    pub node: NodeReport,
    /// Its schedulerName (Pending pods).
    pub scheduler: Option<String>,
    /// Why it counts as stuck.
    pub reason: String,
    /// Seconds since it was created.
    pub age: Option<i64>,
    /// Seconds it has been stuck: past its deletion deadline, or Pending.
    pub stuck_for: i64,
    /// Its finalizers.
    pub finalizers: Vec<String>,
    /// The whole pod as read.
    pub manifest: Value,
}

impl Candidate {
    fn label(&self) -> String {
        format!("pod {}/{} (uid {})", self.namespace, self.name, self.uid)
    }
}

/// Who holds the lease of a scheduler name that stuck Pending pods ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerLease {
    /// The schedulerName.
    pub name: String,
    /// The Lease found (`namespace/name`), if any.
    pub lease: Option<String>,
    /// Its holder.
    pub holder: Option<String>,
    /// Seconds since it was renewed.
    pub renewed_ago: Option<i64>,
    /// Whether a holder renewed it within its duration.
    pub held: bool,
    /// Stuck Pending pods asking for this scheduler.
    pub stuck_pods: usize,
}

impl SchedulerLease {
    fn text(&self) -> String {
        match (&self.lease, &self.holder, self.renewed_ago) {
            (Some(lease), Some(holder), Some(ago)) if self.held => format!(
                "lease {lease} held by {holder}, renewed {}",
                format_ago(ago)
            ),
            (Some(lease), _, Some(ago)) => {
                format!("lease {lease} not held (last renewed {})", format_ago(ago))
            }
            (Some(lease), _, None) => format!("lease {lease} not held"),
            (None, _, _) => "no lease of that name".into(),
        }
    }

    /// What the operator should know about a scheduler that left pods unseen.
    #[must_use]
    pub fn warning(&self) -> String {
        let (name, count) = (&self.name, self.stuck_pods);
        if !self.held {
            return format!(
                "no scheduler named {name:?} holds a lease ({}): the scheduler, not the pods, \
                 is the likely cause, and replacements of deleted pods will stay Pending too",
                self.text()
            );
        }
        let mut text = format!(
            "{count} pod(s) were never seen by scheduler {name:?} although it runs ({}): its \
             pod informer may have lost a watch event",
            self.text()
        );
        if name == DEFAULT_SCHEDULER {
            // microk8s runs kube-scheduler inside kubelite; the holder is `<node>_<uuid>`.
            let node = self
                .holder
                .as_deref()
                .and_then(|h| h.split('_').next())
                .unwrap_or("the node it runs on");
            let _ = write!(
                text,
                "; if new pods stay Pending too, restart kubelite on {node} \
                 (snap restart microk8s.daemon-kubelite)"
            );
        }
        text
    }

    fn report(&self) -> SchedulerReport {
        SchedulerReport {
            name: self.name.clone(),
            lease: self.lease.clone(),
            holder: self.holder.clone(),
            renewed_seconds_ago: self.renewed_ago,
            holds_lease: self.held,
            stuck_pods: self.stuck_pods,
        }
    }
}

/// A list of reports capped at [`REPORT_LIMIT`], counting what did not fit.
#[derive(Debug, Clone)]
struct Capped<T> {
    items: Vec<T>,
    total: usize,
}

impl<T> Default for Capped<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            total: 0,
        }
    }
}

impl<T> Capped<T> {
    fn push(&mut self, item: T) {
        self.total += 1;
        if self.items.len() < REPORT_LIMIT {
            self.items.push(item);
        }
    }

    fn count_only(&mut self) {
        self.total += 1;
    }

    fn has_room(&self) -> bool {
        self.items.len() < REPORT_LIMIT
    }
}

/// What a scan found: the pods to delete and everything reported besides.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Pods to force-delete, in scan order.
    pub candidates: Vec<Candidate>,
    /// How many pods qualify (more than `candidates` only when over `max_pods`).
    pub qualifying: usize,
    left_alone: Capped<LeftAlonePod>,
    seen: Capped<SeenPod>,
    /// Qualifying pods by what they have in common (node, scheduler), for the max_pods message.
    groups: BTreeMap<String, usize>,
    /// Stuck Pending pods per schedulerName.
    scheduler_pods: BTreeMap<String, usize>,
    /// Lease of each such scheduler.
    pub schedulers: Vec<SchedulerLease>,
    scanned: usize,
    terminating_stuck: usize,
    terminating_within_grace: usize,
    pending_stuck: usize,
    pending_within_age: usize,
    warnings: Vec<String>,
}

impl Plan {
    /// Pods listed in the scan.
    #[must_use]
    pub fn scanned(&self) -> usize {
        self.scanned
    }

    fn qualify(&mut self, group: String, candidate: Option<Candidate>, max_pods: usize) {
        self.qualifying += 1;
        *self.groups.entry(group).or_default() += 1;
        if let Some(candidate) = candidate
            && self.candidates.len() <= max_pods
        {
            self.candidates.push(candidate);
        }
    }

    /// Files a stuck pod: a candidate to delete, or left alone (reported without manifest).
    fn settle(
        &mut self,
        verdict: Verdict,
        candidate: Candidate,
        group: String,
        max_pods: usize,
        now: Timestamp,
    ) {
        match verdict {
            Verdict::Delete => self.qualify(group, Some(candidate), max_pods),
            Verdict::Skip(why) => {
                self.left_alone.push(candidate.left_alone(&[], now, &why));
            }
        }
    }

    /// Whether the run already has more qualifying pods than it may delete, so that further
    /// ones are only counted.
    #[must_use]
    pub fn over(&self, max_pods: usize) -> bool {
        self.qualifying > max_pods
    }

    fn counts(&self) -> Counts {
        Counts {
            scanned: self.scanned,
            terminating_stuck: self.terminating_stuck,
            terminating_within_grace: self.terminating_within_grace,
            pending_stuck: self.pending_stuck,
            pending_within_age: self.pending_within_age,
            seen_by_scheduler: self.seen.total,
            qualifying: self.qualifying,
            left_alone: self.left_alone.total,
        }
    }

    /// Puts what the scan found into the report: counts, left-alone and seen pods, leases.
    fn fill(&self, report: &mut Report) {
        report.counts = self.counts();
        report.left_alone.clone_from(&self.left_alone.items);
        report.seen_by_scheduler.clone_from(&self.seen.items);
        report.schedulers = self.schedulers.iter().map(SchedulerLease::report).collect();
    }
}

// ---------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------

/// The result keys.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct Report {
    /// The pods force-deleted (in check mode, that would be), each with the evidence and its
    /// whole manifest.
    ///
    /// Empty when nothing was deleted. On a failure, every pod deleted before it.
    pub deleted: Vec<DeletedPod>,
    /// Stuck pods that were not deleted, with why (bare pod, StatefulSet pod on a live node,
    /// excluded namespace, finalizers, re-created meanwhile, ...).
    ///
    /// At most 100 entries; a warning gives the total.
    pub left_alone: Vec<LeftAlonePod>,
    /// Pending pods the scheduler did look at (PodScheduled condition, a FailedScheduling
    /// event, scheduling gates). They are not stuck and are left alone.
    ///
    /// At most 100 entries; a warning gives the total.
    pub seen_by_scheduler: Vec<SeenPod>,
    /// The schedulerNames that stuck Pending pods ask for, and whether one holds its lease.
    pub schedulers: Vec<SchedulerReport>,
    /// What the scan found, in numbers.
    pub counts: Counts,
    /// Whether every deleted pod was gone afterwards (a pod of the same name with a new UID
    /// counts as gone).
    ///
    /// V(null) in check mode and when nothing was deleted.
    #[schemars(extend("x-sample" = true))]
    pub verified: Option<bool>,
}

/// A stuck pod, as judged.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct StuckPod {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub name: String,
    /// UID of the pod; a delete is made on the condition that it still matches.
    pub uid: String,
    /// Its controller as C(Kind/name); V(null) for a bare pod.
    #[schemars(extend("x-sample" = "ReplicaSet/web-7d9f8"))]
    pub owner: Option<String>,
    /// How it was stuck, C(terminating) or C(pending).
    pub kind: StuckKind,
    /// The node it is bound to; V(null) when it was never scheduled.
    pub node: Option<String>,
    /// C(Ready), C(NotReady), C(Unknown), C(NoReadyCondition), C(gone) (no such Node) or
    /// C(none) (never scheduled).
    pub node_state: String,
    /// Seconds since the node's Lease was renewed, if it has one.
    pub node_lease_age_seconds: Option<i64>,
    /// The node's state for people.
    #[serde(skip)]
    #[schemars(skip)]
    pub node_text: String,
    /// The schedulerName of a Pending pod.
    pub scheduler: Option<String>,
    /// Who holds that scheduler's lease, as text.
    #[schemars(extend("x-sample" = "lease kube-system/kube-scheduler held by k8s01_5f0e, renewed 2s ago"))]
    pub scheduler_lease: Option<String>,
    /// Its age, e.g. C(2h5m).
    pub age: Option<String>,
    /// Its age in seconds.
    pub age_seconds: Option<i64>,
    /// Seconds past its deletion deadline (Terminating), or Pending.
    pub stuck_seconds: i64,
    /// Its finalizers.
    pub finalizers: Vec<String>,
    /// When it was judged (RFC 3339).
    pub scanned_at: String,
}

/// A pod force-deleted.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DeletedPod {
    #[serde(flatten)]
    #[allow(missing_docs, reason = "documented field by field in StuckPod")]
    pub pod: StuckPod,
    /// The evidence that it is stuck.
    pub reason: String,
    /// The pod as it was read, complete.
    #[schemars(with = "serde_json::Map<String, Value>")]
    pub manifest: Value,
    /// The manifest written before the first delete.
    ///
    /// V(null) without O(backup_dir) and in check mode.
    pub backup_file: Option<String>,
    /// Whether its finalizers were removed (O(remove_finalizers)).
    pub finalizers_removed: bool,
    /// Whether the pod was gone after the delete; V(null) in check mode.
    pub gone: Option<bool>,
}

/// A stuck pod left alone.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LeftAlonePod {
    #[serde(flatten)]
    #[allow(missing_docs, reason = "documented field by field in StuckPod")]
    pub pod: StuckPod,
    /// The evidence that it is stuck.
    pub stuck_reason: String,
    /// Why it was left alone.
    pub reason: String,
}

/// A Pending pod the scheduler saw.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SeenPod {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub name: String,
    /// UID of the pod.
    pub uid: String,
    /// Its controller as C(Kind/name); V(null) for a bare pod.
    pub owner: Option<String>,
    /// Its age, e.g. C(12m).
    pub age: Option<String>,
    /// Its schedulerName.
    pub scheduler: String,
    /// What shows that the scheduler saw it.
    pub evidence: String,
}

/// A scheduler that stuck Pending pods ask for.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SchedulerReport {
    /// The schedulerName.
    #[schemars(extend("x-sample" = "default-scheduler"))]
    pub name: String,
    /// The Lease found, as C(namespace/name); V(null) when there is none.
    pub lease: Option<String>,
    /// The Lease's holder identity.
    pub holder: Option<String>,
    /// Seconds since the Lease was renewed.
    pub renewed_seconds_ago: Option<i64>,
    /// Whether a holder renewed the Lease within its duration.
    pub holds_lease: bool,
    /// How many stuck Pending pods ask for this scheduler.
    pub stuck_pods: usize,
}

/// What the scan found, in numbers.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct Counts {
    /// Pods looked at.
    pub scanned: usize,
    /// Pods stuck Terminating past O(terminating_grace).
    pub terminating_stuck: usize,
    /// Terminating pods still within O(terminating_grace).
    pub terminating_within_grace: usize,
    /// Pending pods the scheduler never saw, older than O(pending_age).
    pub pending_stuck: usize,
    /// Pending pods on no node, younger than O(pending_age).
    pub pending_within_age: usize,
    /// Pending pods the scheduler saw.
    pub seen_by_scheduler: usize,
    /// Stuck pods that qualify for a force delete.
    pub qualifying: usize,
    /// Stuck pods left alone.
    pub left_alone: usize,
}

// ---------------------------------------------------------------------------------------------
// The action
// ---------------------------------------------------------------------------------------------

/// The validated action.
#[derive(Debug, Clone)]
pub struct StuckPods {
    cluster: ClusterArgs,
    /// terminating_grace in seconds, when Terminating pods are looked for.
    terminating: Option<i64>,
    /// pending_age in seconds, when Pending pods are looked for.
    pending: Option<i64>,
    namespaces: Vec<String>,
    exclude_namespaces: BTreeSet<String>,
    label_selector: Option<String>,
    policy: Policy,
    max_pods: usize,
    backup_dir: Option<PathBuf>,
}

/// What the runbook's survey of stuck pods looks at.
#[derive(Debug, Clone)]
pub struct Survey {
    /// Namespaces (empty: all).
    pub namespaces: Vec<String>,
    /// As the option of that name.
    pub terminating_grace: Duration,
    /// As the option of that name.
    pub pending_age: Duration,
    /// Most pods judged one by one (the counts are exact beyond it).
    pub max_pods: u32,
}

/// The read-only survey the runbook makes: the plan a run with `survey`'s settings would make,
/// both kinds, on a scratch outcome (`cx` should be in check mode). The report (its counts and
/// the pods left alone) comes back also when the plan fails, with why.
pub async fn survey(cx: &Context, survey: &Survey) -> Result<(Report, Result<Plan>)> {
    let options: Options = serde_json::from_value(serde_json::json!({
        "namespaces": survey.namespaces,
        "terminating_grace": survey.terminating_grace.to_string(),
        "pending_age": survey.pending_age.to_string(),
        "max_pods": survey.max_pods,
    }))
    .map_err(|e| Error::Internal {
        message: format!("stuck_pods' survey options: {e}"),
    })?;
    let action = StuckPods::validate(options)?;
    let mut scratch = Outcome::default();
    let planned = action.plan(cx, &mut scratch).await;
    Ok((scratch.report, planned))
}

impl Action for StuckPods {
    const NAME: &'static str = "stuck_pods";
    const ABOUT: &'static str =
        "Force-delete pods stuck Terminating or never seen by the scheduler, on evidence, safely";
    type Options = Options;
    type Plan = Plan;
    type Report = Report;

    fn validate(options: Options) -> Result<Self> {
        let terminating_grace = options.terminating_grace.seconds();
        let pending_age = options.pending_age.seconds();
        if options.kinds.is_empty() {
            return Err(Error::InvalidOption {
                option: "kinds".into(),
                problem: "must name at least one of terminating, pending".into(),
            });
        }
        let names = |option: &str, list: Vec<String>| -> Result<Vec<String>> {
            let mut out = Vec::new();
            for (index, name) in list.into_iter().enumerate() {
                let name = name.trim().to_owned();
                // An empty entry (`--exclude-namespaces ''`) means none.
                if name.is_empty() {
                    continue;
                }
                check_label(&format!("{option}[{index}]"), &name)?;
                if !out.contains(&name) {
                    out.push(name);
                }
            }
            Ok(out)
        };
        let namespaces = names("namespaces", options.namespaces)?;
        let exclude_namespaces = names("exclude_namespaces", options.exclude_namespaces)?;
        let label_selector = match options.label_selector {
            Some(selector) if !selector.trim().is_empty() => {
                check_label_selector("label_selector", &selector)?;
                Some(selector.trim().to_owned())
            }
            _ => None,
        };
        let backup_dir = super::backup_dir(options.backup_dir)?;
        Ok(Self {
            cluster: options.cluster,
            terminating: options
                .kinds
                .contains(&StuckKind::Terminating)
                .then_some(terminating_grace),
            pending: options
                .kinds
                .contains(&StuckKind::Pending)
                .then_some(pending_age),
            namespaces,
            exclude_namespaces: exclude_namespaces.into_iter().collect(),
            label_selector,
            policy: Policy {
                include_bare_pods: options.include_bare_pods,
                allow_statefulset: options.allow_statefulset,
                remove_finalizers: options.remove_finalizers,
            },
            max_pods: usize::try_from(options.max_pods).unwrap_or(usize::MAX),
            backup_dir,
        })
    }

    fn cluster_args(&self) -> &ClusterArgs {
        &self.cluster
    }

    /// The scan ([`StuckPods::scan`]); its findings go into the report even when more than
    /// `max_pods` qualify and the run fails.
    async fn plan(&self, cx: &Context, out: &mut Outcome<Report>) -> Result<Plan> {
        let plan = self.scan(&cx.cluster).await?;
        plan.fill(&mut out.report);
        out.warnings.extend(plan.warnings.iter().cloned());
        out.msg = message(&plan, &[], plan.left_alone.total, cx.check_mode);
        if plan.over(self.max_pods) {
            return Err(self.too_many(&plan));
        }
        Ok(plan)
    }

    async fn apply(&self, cx: &Context, plan: Plan, out: &mut Outcome<Report>) -> Result<()> {
        self.apply_plan(cx, plan, out).await
    }

    async fn verify(&self, cx: &Context, out: &mut Outcome<Report>) -> Result<()> {
        if !out.report.deleted.is_empty() {
            self.verify_gone(cx, out).await;
        }
        Ok(())
    }
}

/// Pod identity and the metadata the decision needs.
#[derive(Debug, Clone)]
struct Facts {
    namespace: String,
    name: String,
    uid: String,
    owner: Owner,
    finalizers: Vec<String>,
    created: Option<Timestamp>,
}

impl Facts {
    fn of(meta: &ObjectMeta) -> Self {
        Self {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            owner: Owner::of(meta),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
        }
    }

    fn seen(&self, now: Timestamp, scheduler: &str, evidence: String) -> SeenPod {
        SeenPod {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            owner: self.owner.label(),
            age: self.created.map(|c| format_duration(seconds_since(c, now))),
            scheduler: scheduler.to_owned(),
            evidence,
        }
    }
}

impl StuckPods {
    /// Observes and plans, read-only: reads nodes, scans the pods in scope page by page and
    /// checks the scheduler leases of stuck Pending pods. [`Plan::over`] then says whether
    /// more than `max_pods` qualify.
    pub async fn scan(&self, cluster: &Cluster) -> Result<Plan> {
        let now = Timestamp::now();
        let mut plan = Plan::default();
        if let Some(grace) = self.terminating {
            let nodes = read_nodes(cluster).await?;
            self.scan_terminating(cluster, &nodes, grace, now, &mut plan)
                .await?;
        }
        if let Some(age) = self.pending {
            self.scan_pending(cluster, age, now, &mut plan).await?;
            self.check_schedulers(cluster, now, &mut plan).await?;
        }
        Ok(plan)
    }

    /// The pod APIs in scope: all namespaces, or each of `namespaces`.
    fn pod_apis(&self, cluster: &Cluster) -> Vec<Api<Whole<Pod>>> {
        if self.namespaces.is_empty() {
            vec![Api::all(cluster.client.clone())]
        } else {
            self.namespaces
                .iter()
                .map(|ns| Api::namespaced(cluster.client.clone(), ns))
                .collect()
        }
    }

    fn scope_label(&self) -> String {
        if self.namespaces.is_empty() {
            "pods in all namespaces".into()
        } else {
            format!("pods in namespace(s) {}", self.namespaces.join(", "))
        }
    }

    fn list_params(&self, fields: Option<&str>) -> ListParams {
        let mut params = ListParams::default();
        if let Some(selector) = &self.label_selector {
            params = params.labels(selector);
        }
        if let Some(fields) = fields {
            params = params.fields(fields);
        }
        params
    }

    /// Finds Terminating pods from a metadata-only list (no specs or statuses on the wire).
    async fn scan_terminating(
        &self,
        cluster: &Cluster,
        nodes: &BTreeMap<String, NodeInfo>,
        grace: i64,
        now: Timestamp,
        plan: &mut Plan,
    ) -> Result<()> {
        for api in self.pod_apis(cluster) {
            let mut pages = Pages::new(self.list_params(None), self.scope_label());
            while let Some(params) = pages.next() {
                let page = api
                    .list_metadata(params)
                    .await
                    .map_err(cluster.error("list", self.scope_label()))?;
                pages.advance(&page.metadata, page.items.len())?;
                plan.scanned += page.items.len();
                for item in page.items {
                    let meta = item.metadata;
                    let Some(deleted) = meta.deletion_timestamp.as_ref().map(|t| t.0) else {
                        continue;
                    };
                    let overdue = seconds_since(deleted, now);
                    if overdue <= grace {
                        plan.terminating_within_grace += 1;
                        continue;
                    }
                    plan.terminating_stuck += 1;
                    self.consider_terminating(cluster, nodes, Facts::of(&meta), overdue, now, plan)
                        .await?;
                }
            }
        }
        Ok(())
    }

    async fn consider_terminating(
        &self,
        cluster: &Cluster,
        nodes: &BTreeMap<String, NodeInfo>,
        facts: Facts,
        overdue: i64,
        now: Timestamp,
        plan: &mut Plan,
    ) -> Result<()> {
        let excluded = self.exclude_namespaces.contains(&facts.namespace);
        let verdict = metadata_verdict(self.policy, excluded, &facts.owner, &facts.finalizers);
        // Beyond max_pods the run fails anyway: count the pod from its metadata, read nothing.
        if verdict == Verdict::Delete && plan.over(self.max_pods) {
            plan.qualify("Terminating, node not read".into(), None, self.max_pods);
            return Ok(());
        }
        if verdict != Verdict::Delete && !plan.left_alone.has_room() {
            plan.left_alone.count_only();
            return Ok(());
        }
        // The node is in the spec, which the metadata list does not carry: read the pod.
        let Some(pod) = self.read_pod(cluster, &facts).await? else {
            return Ok(());
        };
        let node = NodeReport::of(
            nodes,
            pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            now,
        );
        let verdict = verdict.and_then(|| node_verdict(&facts.owner, &node));
        let reason = format!(
            "Terminating {} past its deletion deadline (terminating_grace {}), on node {}",
            format_duration(overdue),
            format_duration(self.terminating.unwrap_or_default()),
            node.text()
        );
        let group = format!("Terminating on node {}", node.text());
        let candidate = Candidate {
            namespace: facts.namespace,
            name: facts.name,
            uid: facts.uid,
            owner: facts.owner,
            kind: StuckKind::Terminating,
            node,
            scheduler: None,
            reason,
            age: facts.created.map(|c| seconds_since(c, now)),
            stuck_for: overdue,
            finalizers: facts.finalizers,
            manifest: pod.raw().clone(),
        };
        plan.settle(verdict, candidate, group, self.max_pods, now);
        Ok(())
    }

    /// Reads a pod whole; `None` when it is gone or was re-created (another UID) meanwhile.
    async fn read_pod(&self, cluster: &Cluster, facts: &Facts) -> Result<Option<Whole<Pod>>> {
        let api: Api<Whole<Pod>> = Api::namespaced(cluster.client.clone(), &facts.namespace);
        let pod = api
            .get_opt(&facts.name)
            .await
            .map_err(cluster.error("get", format!("pod {}/{}", facts.namespace, facts.name)))?;
        Ok(pod.filter(|p| p.metadata.uid.as_deref() == Some(facts.uid.as_str())))
    }

    /// Finds Pending pods on no node, from a list the server filters.
    async fn scan_pending(
        &self,
        cluster: &Cluster,
        pending_age: i64,
        now: Timestamp,
        plan: &mut Plan,
    ) -> Result<()> {
        let fields = "status.phase=Pending,spec.nodeName=";
        for api in self.pod_apis(cluster) {
            let mut pages = Pages::new(
                self.list_params(Some(fields)),
                format!("pending {}", self.scope_label()),
            );
            while let Some(params) = pages.next() {
                let page = api
                    .list(params)
                    .await
                    .map_err(cluster.error("list", format!("pending {}", self.scope_label())))?;
                pages.advance(&page.metadata, page.items.len())?;
                if self.terminating.is_none() {
                    plan.scanned += page.items.len();
                }
                for pod in page.items {
                    self.consider_pending(cluster, pod, pending_age, now, plan)
                        .await?;
                }
            }
        }
        Ok(())
    }

    async fn consider_pending(
        &self,
        cluster: &Cluster,
        pod: Whole<Pod>,
        pending_age: i64,
        now: Timestamp,
        plan: &mut Plan,
    ) -> Result<()> {
        // A deleted pod is the Terminating scan's; a bound one is not "never seen".
        let bound = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        let pending = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending");
        if pod.metadata.deletion_timestamp.is_some() || bound || !pending {
            return Ok(());
        }
        let facts = Facts::of(&pod.metadata);
        let age = facts.created.map_or(0, |c| seconds_since(c, now));
        if age <= pending_age {
            plan.pending_within_age += 1;
            return Ok(());
        }
        let scheduler = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.clone())
            .unwrap_or_else(|| DEFAULT_SCHEDULER.into());
        let seen = |plan: &mut Plan, evidence: String| {
            plan.seen.push(facts.seen(now, &scheduler, evidence));
        };
        if let Some(evidence) = scheduler_evidence(&pod) {
            seen(plan, evidence);
            return Ok(());
        }
        let excluded = self.exclude_namespaces.contains(&facts.namespace);
        let node = NodeReport::of(&BTreeMap::new(), None, now);
        let verdict = metadata_verdict(self.policy, excluded, &facts.owner, &facts.finalizers)
            .and_then(|| node_verdict(&facts.owner, &node));
        // Whether it is stuck depends on its events; beyond max_pods (the run fails anyway) or
        // a full report list, skip the lookup and only count.
        let group = format!("Pending, never seen by scheduler {scheduler:?}");
        if verdict == Verdict::Delete && plan.over(self.max_pods) {
            plan.qualify(group, None, self.max_pods);
            return Ok(());
        }
        if verdict != Verdict::Delete && !plan.left_alone.has_room() {
            plan.left_alone.count_only();
            return Ok(());
        }
        let events = self.events_of(cluster, &facts).await?;
        if let Some(evidence) = event_evidence(&events) {
            seen(plan, evidence);
            return Ok(());
        }
        plan.pending_stuck += 1;
        *plan.scheduler_pods.entry(scheduler.clone()).or_default() += 1;
        let reason = format!(
            "Pending {} (pending_age {}) without ever being seen by scheduler {scheduler:?}: no \
             node, no PodScheduled condition, no events",
            format_duration(age),
            format_duration(pending_age)
        );
        let candidate = Candidate {
            namespace: facts.namespace,
            name: facts.name,
            uid: facts.uid,
            owner: facts.owner,
            kind: StuckKind::Pending,
            node,
            scheduler: Some(scheduler),
            reason,
            age: Some(age),
            stuck_for: age,
            finalizers: facts.finalizers,
            manifest: pod.raw().clone(),
        };
        plan.settle(verdict, candidate, group, self.max_pods, now);
        Ok(())
    }

    async fn events_of(&self, cluster: &Cluster, facts: &Facts) -> Result<Vec<Event>> {
        let api: Api<Event> = Api::namespaced(cluster.client.clone(), &facts.namespace);
        let params = ListParams::default()
            .fields(&format!(
                "involvedObject.uid={}",
                escape_field_value(&facts.uid)
            ))
            .limit(20);
        let events = api.list(&params).await.map_err(cluster.error(
            "list",
            format!("events of pod {}/{}", facts.namespace, facts.name),
        ))?;
        Ok(events.items)
    }

    /// Looks up the lease of every scheduler name stuck Pending pods ask for, and warns about
    /// what it means.
    async fn check_schedulers(
        &self,
        cluster: &Cluster,
        now: Timestamp,
        plan: &mut Plan,
    ) -> Result<()> {
        for (name, count) in plan.scheduler_pods.clone() {
            let lease = scheduler_lease(cluster, &name, now).await?;
            let lease = SchedulerLease {
                stuck_pods: count,
                ..lease
            };
            plan.warnings.push(lease.warning());
            // Left-alone Pending pods were filed before the leases were read.
            for entry in &mut plan.left_alone.items {
                if entry.pod.scheduler.as_deref() == Some(lease.name.as_str()) {
                    entry.pod.scheduler_lease = Some(lease.text());
                }
            }
            plan.schedulers.push(lease);
        }
        Ok(())
    }

    fn too_many(&self, plan: &Plan) -> Error {
        let mut groups: Vec<(&String, &usize)> = plan.groups.iter().collect();
        groups.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let shown: Vec<String> = groups
            .iter()
            .take(5)
            .map(|(group, n)| format!("{n} {group}"))
            .collect();
        let mut problem = format!(
            "{} pods qualify for a force delete, more than max_pods ({}), so none was deleted: \
             that many stuck at once points to a wider problem than single pods ({}{})",
            plan.qualifying,
            self.max_pods,
            shown.join("; "),
            if groups.len() > 5 { "; ..." } else { "" }
        );
        for lease in plan.schedulers.iter().filter(|l| !l.held) {
            let _ = write!(
                problem,
                "; no scheduler named {:?} holds a lease",
                lease.name
            );
        }
        Error::CannotPlan {
            action: "stuck_pods",
            problem,
            hint: "fix the common cause first (bring a dead node back or delete its Node object; \
                   restart kubelite where the scheduler should run), then run again; raise \
                   max_pods only if deleting them all is really intended"
                .into(),
        }
    }

    /// Backs up every candidate (before the first delete), then force-deletes them one by one
    /// (dry runs in check mode), recording each pod in the report as soon as it is deleted.
    async fn apply_plan(&self, cx: &Context, plan: Plan, out: &mut Outcome<Report>) -> Result<()> {
        let now = Timestamp::now();
        let mut backups: Vec<Option<PathBuf>> = vec![None; plan.candidates.len()];
        if let (Some(dir), false) = (&self.backup_dir, cx.check_mode) {
            for (slot, candidate) in backups.iter_mut().zip(&plan.candidates) {
                *slot = Some(write_backup(dir, candidate)?);
            }
        }
        let mut done: Vec<String> = Vec::new();
        for (candidate, backup) in plan.candidates.iter().zip(backups) {
            let deletion = self.delete(cx, candidate, &done, &mut out.warnings).await?;
            let why = match deletion {
                Deletion::Done => {
                    done.push(candidate.label());
                    out.changed = true;
                    out.report.deleted.push(DeletedPod {
                        pod: candidate.report(&plan.schedulers, now),
                        reason: candidate.reason.clone(),
                        manifest: candidate.manifest.clone(),
                        backup_file: backup.map(|p| p.display().to_string()),
                        finalizers_removed: self.policy.remove_finalizers
                            && !candidate.finalizers.is_empty(),
                        gone: None,
                    });
                    out.diff.push(Diff::of(
                        &format!("pod/{}/{}", candidate.namespace, candidate.name),
                        Some(&candidate.manifest),
                        None,
                    ));
                    out.msg = message(
                        &plan,
                        &out.report.deleted,
                        out.report.counts.left_alone,
                        cx.check_mode,
                    );
                    continue;
                }
                Deletion::Gone => "deleted by someone else meanwhile",
                Deletion::Replaced => {
                    "re-created under the same name (new UID) meanwhile; the new pod was left alone"
                }
            };
            out.warn(format!("{}: {why}", candidate.label()));
            // Pods found gone or re-created at delete time are left alone too.
            out.report.counts.left_alone += 1;
            if out.report.left_alone.len() < REPORT_LIMIT {
                out.report
                    .left_alone
                    .push(candidate.left_alone(&plan.schedulers, now, why));
            }
        }
        let left_alone = out.report.counts.left_alone;
        if left_alone > out.report.left_alone.len() {
            out.warn(format!(
                "{left_alone} stuck pods were left alone; only the first {REPORT_LIMIT} are listed"
            ));
        }
        if plan.seen.total > plan.seen.items.len() {
            out.warn(format!(
                "{} Pending pods were seen by the scheduler; only the first {REPORT_LIMIT} are \
                 listed",
                plan.seen.total
            ));
        }
        out.msg = message(&plan, &out.report.deleted, left_alone, cx.check_mode);
        Ok(())
    }

    /// Force-deletes one pod (a dry run in check mode) and, if allowed, removes its finalizers.
    async fn delete(
        &self,
        cx: &Context,
        candidate: &Candidate,
        done: &[String],
        warnings: &mut Vec<String>,
    ) -> Result<Deletion> {
        let cluster = &cx.cluster;
        let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &candidate.namespace);
        let failed = |verb: &'static str, source: kube::Error| Error::ForceDelete {
            verb,
            object: candidate.label(),
            deleted: done.to_vec(),
            source,
        };
        let options = DeleteOptions {
            dry_run: cx.check_mode,
            grace_period_seconds: Some(0),
        };
        let label = candidate.label();
        let deletion = delete_uid(
            &api,
            &candidate.name,
            &candidate.uid,
            options,
            warnings,
            cluster,
            &label,
        )
        .await
        .map_err(|err| failed("delete", err))?;
        if deletion != Deletion::Done {
            return Ok(deletion);
        }
        if self.policy.remove_finalizers && !candidate.finalizers.is_empty() {
            // The uid in the patch is a precondition: the API server refuses to change it.
            let patch = json!({"metadata": {"uid": candidate.uid, "finalizers": null}});
            let params = PatchParams {
                dry_run: cx.check_mode,
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            };
            match api
                .patch(&candidate.name, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                // Gone already, or replaced (the uid cannot change: 422).
                Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409 | 422) => {}
                Err(err) if cx.check_mode => {
                    let err = cluster.error("patch", label.clone())(err);
                    warnings.push(dry_run_refused("finalizer removal", &err));
                }
                Err(err) => return Err(failed("remove the finalizers of", err)),
            }
        }
        Ok(Deletion::Done)
    }

    /// Waits until every deleted UID is gone; records, per pod, whether it is, and `verified`.
    async fn verify_gone(&self, cx: &Context, out: &mut Outcome<Report>) {
        let cluster = &cx.cluster;
        let deadline = Instant::now() + VERIFY_TIMEOUT;
        let mut warnings = Vec::new();
        for deleted in &mut out.report.deleted {
            let pod_ref = &deleted.pod;
            let label = format!(
                "pod {}/{} (uid {})",
                pod_ref.namespace, pod_ref.name, pod_ref.uid
            );
            let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &pod_ref.namespace);
            let gone = loop {
                let still = match api.get_opt(&pod_ref.name).await {
                    Ok(found) => found.filter(|p| p.metadata.uid.as_deref() == Some(&pod_ref.uid)),
                    Err(err) => {
                        let err = cluster.error("get", label.clone())(err);
                        warnings.push(format!(
                            "could not verify that {label} is gone: {}",
                            err.message_with_causes()
                        ));
                        break false;
                    }
                };
                let Some(pod) = still else {
                    break true;
                };
                if Instant::now() >= deadline {
                    let finalizers = pod.metadata.finalizers.unwrap_or_default();
                    warnings.push(if finalizers.is_empty() {
                        format!(
                            "{label} is still there {}s after its force delete",
                            VERIFY_TIMEOUT.as_secs()
                        )
                    } else {
                        format!(
                            "{label} is still there, held by finalizers [{}]{}",
                            finalizers.join(", "),
                            if self.policy.remove_finalizers {
                                " (added again after kubemend removed them?)"
                            } else {
                                " (remove_finalizers: true removes them)"
                            }
                        )
                    });
                    break false;
                }
                tokio::time::sleep(StdDuration::from_millis(250)).await;
            };
            deleted.gone = Some(gone);
        }
        out.warnings.extend(warnings);
        out.report.verified = Some(out.report.deleted.iter().all(|d| d.gone == Some(true)));
    }
}

/// One sentence on what was (or would be) done.
fn message(plan: &Plan, done: &[DeletedPod], left_alone: usize, check: bool) -> String {
    let left = if left_alone > 0 {
        format!("; {left_alone} stuck pod(s) left alone (see left_alone)")
    } else {
        String::new()
    };
    if done.is_empty() {
        return format!(
            "no stuck pod to delete among {} scanned{left}",
            plan.scanned
        );
    }
    let names: Vec<String> = done
        .iter()
        .take(5)
        .map(|d| match d.pod.kind {
            StuckKind::Terminating => format!(
                "{}/{} (Terminating on {})",
                d.pod.namespace, d.pod.name, d.pod.node_text
            ),
            StuckKind::Pending => format!(
                "{}/{} (Pending, never seen by {:?})",
                d.pod.namespace,
                d.pod.name,
                d.pod.scheduler.as_deref().unwrap_or(DEFAULT_SCHEDULER)
            ),
        })
        .collect();
    format!(
        "{} {} stuck pod(s): {}{}{left}",
        if check {
            "would force-delete"
        } else {
            "force-deleted"
        },
        done.len(),
        names.join(", "),
        if done.len() > 5 { ", ..." } else { "" }
    )
}

impl Candidate {
    /// The pod as reported, without its manifest.
    fn report(&self, schedulers: &[SchedulerLease], now: Timestamp) -> StuckPod {
        let scheduler_lease = self.scheduler.as_ref().and_then(|name| {
            schedulers
                .iter()
                .find(|l| &l.name == name)
                .map(SchedulerLease::text)
        });
        StuckPod {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            owner: self.owner.label(),
            kind: self.kind,
            node: self.node.name.clone(),
            node_state: self.node.state.label().into(),
            node_lease_age_seconds: self.node.lease_age,
            node_text: self.node.text(),
            scheduler: self.scheduler.clone(),
            scheduler_lease,
            age: self.age.map(format_duration),
            age_seconds: self.age,
            stuck_seconds: self.stuck_for,
            finalizers: self.finalizers.clone(),
            scanned_at: now.to_string(),
        }
    }

    /// The report of a stuck pod that is not deleted, and why.
    fn left_alone(&self, schedulers: &[SchedulerLease], now: Timestamp, why: &str) -> LeftAlonePod {
        LeftAlonePod {
            pod: self.report(schedulers, now),
            stuck_reason: self.reason.clone(),
            reason: why.to_owned(),
        }
    }
}

/// The lease of a scheduler: kube-system/kube-scheduler for the default scheduler, else a
/// Lease named like the scheduler, in any namespace.
pub async fn scheduler_lease(
    cluster: &Cluster,
    name: &str,
    now: Timestamp,
) -> Result<SchedulerLease> {
    // Listed (not read) in both cases, so that `list` on leases is all it takes.
    let (api, lease_name): (Api<Lease>, &str) = if name == DEFAULT_SCHEDULER {
        let (ns, lease) = DEFAULT_SCHEDULER_LEASE;
        (Api::namespaced(cluster.client.clone(), ns), lease)
    } else {
        (Api::all(cluster.client.clone()), name)
    };
    let params =
        ListParams::default().fields(&format!("metadata.name={}", escape_field_value(lease_name)));
    let found = api
        .list(&params)
        .await
        .map_err(cluster.error("list", format!("leases named {lease_name:?}")))?
        .items;
    // Prefer a held lease, then the most recently renewed.
    let best = found.iter().max_by_key(|lease| {
        let spec = lease.spec.clone().unwrap_or_default();
        (
            lease_held(&spec, now),
            spec.renew_time.map(|t| t.0.as_second()),
        )
    });
    Ok(match best {
        Some(lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            SchedulerLease {
                name: name.to_owned(),
                lease: Some(format!(
                    "{}/{}",
                    lease.metadata.namespace.as_deref().unwrap_or_default(),
                    lease.metadata.name.as_deref().unwrap_or_default()
                )),
                holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
                renewed_ago: spec.renew_time.as_ref().map(|t| seconds_since(t.0, now)),
                held: lease_held(&spec, now),
                stuck_pods: 0,
            }
        }
        None => SchedulerLease {
            name: name.to_owned(),
            lease: None,
            holder: None,
            renewed_ago: None,
            held: false,
            stuck_pods: 0,
        },
    })
}

/// Writes a pod's manifest to `dir` and returns the file's path.
fn write_backup(dir: &Path, candidate: &Candidate) -> Result<PathBuf> {
    backup(
        dir,
        BackupOf {
            kind: "pod",
            namespace: Some(&candidate.namespace),
            name: &candidate.name,
            uid: &candidate.uid,
            verb: "force-deleted",
        },
        &candidate.manifest,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Options as the pipeline reads them: deserialized (naming the option), then validated.
    fn validate(value: Value) -> Result<StuckPods> {
        let Value::Object(options) = value else {
            panic!("options are an object")
        };
        crate::protocol::deserialize_options::<Options>(options).and_then(StuckPods::validate)
    }

    fn option_of(result: Result<StuckPods>) -> String {
        match result {
            Err(Error::InvalidOption { option, .. }) => option,
            other => panic!("expected an invalid option, got {other:?}"),
        }
    }

    #[test]
    fn invalid_options_are_refused_before_any_call() {
        assert_eq!(
            option_of(validate(json!({"pending_age": "-1m"}))),
            "pending_age"
        );
        assert_eq!(
            option_of(validate(json!({"terminating_grace": "soon"}))),
            "terminating_grace"
        );
        assert_eq!(option_of(validate(json!({"kinds": []}))), "kinds");
        assert_eq!(
            option_of(validate(json!({"label_selector": "a in ("}))),
            "label_selector"
        );
        assert_eq!(
            option_of(validate(json!({"namespaces": ["ok", "Not_OK"]}))),
            "namespaces[1]"
        );
        assert_eq!(
            option_of(validate(json!({"exclude_namespaces": ["a.b"]}))),
            "exclude_namespaces[0]"
        );
        assert_eq!(
            option_of(validate(json!({"backup_dir": " "}))),
            "backup_dir"
        );
        assert!(serde_json::from_value::<Options>(json!({"kinds": ["stale"]})).is_err());
    }

    #[test]
    fn defaults_look_for_both_kinds_outside_system_namespaces() {
        let action = validate(json!({})).unwrap();
        assert_eq!(action.terminating, Some(300));
        assert_eq!(action.pending, Some(600));
        assert_eq!(action.max_pods, 20);
        assert!(action.exclude_namespaces.contains("kube-system"));
        assert!(action.exclude_namespaces.contains("kube-node-lease"));
        assert!(action.namespaces.is_empty());
        assert_eq!(action.policy, Policy::default());
        let only_pending = validate(json!({"kinds": ["pending"], "exclude_namespaces": [""]}));
        let only_pending = only_pending.unwrap();
        assert_eq!(only_pending.terminating, None);
        assert!(only_pending.exclude_namespaces.is_empty());
    }

    fn controller(kind: &str) -> Owner {
        Owner::Controller {
            kind: kind.into(),
            name: "x".into(),
        }
    }

    fn node(state: NodeState) -> NodeReport {
        NodeReport {
            name: Some("k8s03".into()),
            state,
            lease_age: Some(300),
            lease_expired: true,
        }
    }

    fn skipped_because(verdict: &Verdict, words: &str) -> bool {
        matches!(verdict, Verdict::Skip(reason) if reason.contains(words))
    }

    #[test]
    fn only_controller_owned_pods_outside_excluded_namespaces_are_deleted_by_default() {
        let policy = Policy::default();
        let rs = controller("ReplicaSet");
        assert_eq!(metadata_verdict(policy, false, &rs, &[]), Verdict::Delete);
        assert_eq!(
            metadata_verdict(policy, false, &controller("Job"), &[]),
            Verdict::Delete
        );
        assert!(skipped_because(
            &metadata_verdict(policy, true, &rs, &[]),
            "exclude_namespaces"
        ));
        assert!(skipped_because(
            &metadata_verdict(policy, false, &Owner::Bare, &[]),
            "include_bare_pods"
        ));
        let bare_allowed = Policy {
            include_bare_pods: true,
            ..policy
        };
        assert_eq!(
            metadata_verdict(bare_allowed, false, &Owner::Bare, &[]),
            Verdict::Delete
        );
    }

    #[test]
    fn statefulset_pods_need_the_option_and_a_node_that_is_not_ready() {
        let sts = controller("StatefulSet");
        assert!(skipped_because(
            &metadata_verdict(Policy::default(), false, &sts, &[]),
            "allow_statefulset"
        ));
        let allowed = Policy {
            allow_statefulset: true,
            ..Policy::default()
        };
        assert_eq!(metadata_verdict(allowed, false, &sts, &[]), Verdict::Delete);
        assert!(skipped_because(
            &node_verdict(&sts, &node(NodeState::Ready)),
            "Ready"
        ));
        assert_eq!(
            node_verdict(&sts, &node(NodeState::NotReady("Unknown"))),
            Verdict::Delete
        );
        assert_eq!(
            node_verdict(&sts, &node(NodeState::NotReady("NotReady"))),
            Verdict::Delete
        );
        assert_eq!(node_verdict(&sts, &node(NodeState::Gone)), Verdict::Delete);
        let never_scheduled = NodeReport::of(&BTreeMap::new(), None, Timestamp::now());
        assert_eq!(node_verdict(&sts, &never_scheduled), Verdict::Delete);
        // Other controllers do not care about the node.
        assert_eq!(
            node_verdict(&controller("ReplicaSet"), &node(NodeState::Ready)),
            Verdict::Delete
        );
    }

    #[test]
    fn pods_held_by_finalizers_are_reported_with_them_unless_removal_is_allowed() {
        let finalizers = vec!["example.com/hold".to_owned()];
        let rs = controller("ReplicaSet");
        let verdict = metadata_verdict(Policy::default(), false, &rs, &finalizers);
        assert!(skipped_because(&verdict, "example.com/hold"), "{verdict:?}");
        assert!(
            skipped_because(&verdict, "remove_finalizers"),
            "{verdict:?}"
        );
        let allowed = Policy {
            remove_finalizers: true,
            ..Policy::default()
        };
        assert_eq!(
            metadata_verdict(allowed, false, &rs, &finalizers),
            Verdict::Delete
        );
    }

    fn pod(value: Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_pod_without_podscheduled_condition_or_gates_is_unseen() {
        let unseen = pod(json!({
            "metadata": {"name": "automation-job-1865-ntgbq", "namespace": "ci"},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Pending"}
        }));
        assert_eq!(scheduler_evidence(&unseen), None);
        let other_conditions = pod(json!({
            "spec": {"containers": []},
            "status": {"phase": "Pending", "conditions": [{"type": "Initialized", "status": "True"}]}
        }));
        assert_eq!(scheduler_evidence(&other_conditions), None);
    }

    #[test]
    fn pods_the_scheduler_saw_carry_evidence() {
        let unschedulable = pod(json!({
            "spec": {"containers": []},
            "status": {"phase": "Pending", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/3 nodes are available"
            }]}
        }));
        assert_eq!(
            scheduler_evidence(&unschedulable).unwrap(),
            "PodScheduled=False (Unschedulable): 0/3 nodes are available"
        );
        let gated = pod(json!({
            "spec": {"containers": [], "schedulingGates": [{"name": "example.com/wait"}]},
            "status": {"phase": "Pending"}
        }));
        assert!(
            scheduler_evidence(&gated)
                .unwrap()
                .contains("example.com/wait")
        );
    }

    fn event(reason: &str, message: &str) -> Event {
        serde_json::from_value(json!({
            "metadata": {"name": "e", "namespace": "ci"},
            "involvedObject": {"kind": "Pod", "name": "p"},
            "reason": reason,
            "message": message,
            "source": {"component": "default-scheduler"}
        }))
        .unwrap()
    }

    #[test]
    fn any_event_means_the_pod_was_seen_and_failed_scheduling_says_so() {
        assert_eq!(event_evidence(&[]), None);
        let failed = event_evidence(&[
            event("Other", "x"),
            event("FailedScheduling", "0/3 nodes are available"),
        ])
        .unwrap();
        assert_eq!(failed, "FailedScheduling event: 0/3 nodes are available");
        let other = event_evidence(&[event("Pulled", "image pulled")]).unwrap();
        assert!(other.contains("Pulled"), "{other}");
    }

    #[test]
    fn scheduler_warning_blames_a_missing_scheduler_or_a_stale_informer() {
        let lease = |name: &str, held: bool| SchedulerLease {
            name: name.into(),
            lease: Some("kube-system/kube-scheduler".into()),
            holder: Some("k8s03_0f1e".into()),
            renewed_ago: Some(2),
            held,
            stuck_pods: 2,
        };
        let missing = lease("lost-watch-scheduler", false).warning();
        assert!(
            missing.starts_with("no scheduler named \"lost-watch-scheduler\" holds a lease"),
            "{missing}"
        );
        let stale = lease(DEFAULT_SCHEDULER, true).warning();
        assert!(stale.contains("2 pod(s) were never seen"), "{stale}");
        assert!(stale.contains("held by k8s03_0f1e"), "{stale}");
        assert!(stale.contains("restart kubelite on k8s03"), "{stale}");
        let custom = lease("batch-scheduler", true).warning();
        assert!(!custom.contains("kubelite"), "{custom}");
    }

    #[test]
    fn owner_is_the_controller_reference() {
        let meta: ObjectMeta = serde_json::from_value(json!({
            "name": "web-0",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "cm", "uid": "1"},
                {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "2",
                 "controller": true}
            ]
        }))
        .unwrap();
        assert_eq!(Owner::of(&meta), controller_named("StatefulSet", "web"));
        assert!(Owner::of(&meta).is_statefulset());
        let only_non_controller: ObjectMeta = serde_json::from_value(json!({
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "cm", "uid": "1"}]
        }))
        .unwrap();
        assert_eq!(Owner::of(&only_non_controller), Owner::Bare);
    }

    fn controller_named(kind: &str, name: &str) -> Owner {
        Owner::Controller {
            kind: kind.into(),
            name: name.into(),
        }
    }

    #[test]
    fn plan_keeps_at_most_max_pods_plus_one_manifests_but_counts_all() {
        let mut plan = Plan::default();
        let candidate = Candidate {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
            owner: controller("ReplicaSet"),
            kind: StuckKind::Pending,
            node: NodeReport::of(&BTreeMap::new(), None, Timestamp::now()),
            scheduler: None,
            reason: String::new(),
            age: None,
            stuck_for: 0,
            finalizers: Vec::new(),
            manifest: Value::Null,
        };
        for _ in 0..10 {
            plan.qualify("g".into(), Some(candidate.clone()), 2);
        }
        assert_eq!(plan.qualifying, 10);
        assert_eq!(plan.candidates.len(), 3);
        assert!(plan.over(2));
        assert!(!plan.over(10));
    }

    #[test]
    fn backup_file_is_an_appliable_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let candidate = Candidate {
            namespace: "ci".into(),
            name: "web-1".into(),
            uid: "1234-5678".into(),
            owner: controller("ReplicaSet"),
            kind: StuckKind::Terminating,
            node: node(NodeState::NotReady("Unknown")),
            scheduler: None,
            reason: String::new(),
            age: None,
            stuck_for: 0,
            finalizers: Vec::new(),
            manifest: json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web-1", "namespace": "ci", "uid": "1234-5678",
                             "resourceVersion": "9", "deletionTimestamp": "2026-05-15T07:00:00Z"},
                "spec": {"nodeName": "k8s03", "containers": [{"name": "c", "image": "i"}]},
                "status": {"phase": "Running"}
            }),
        };
        let path = write_backup(dir.path(), &candidate).unwrap();
        let parsed: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(parsed["kind"], "Pod");
        assert_eq!(parsed["metadata"]["name"], "web-1");
        assert!(parsed["metadata"].get("uid").is_none());
        assert!(parsed["metadata"].get("deletionTimestamp").is_none());
        assert_eq!(parsed["spec"]["nodeName"], "k8s03");
        assert!(parsed.get("status").is_none());
    }
}
