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
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Action, RunContext, check_label, check_subdomain};
use crate::client::{Cluster, ClusterArgs, connect};
use crate::error::{Error, Result};
use crate::outcome::{self, Diff, Outcome};

/// Pods per page of a list call.
pub const PAGE_SIZE: u32 = 500;

/// At most this many entries in each of the `left_alone` and `seen_by_scheduler` lists; the rest
/// are counted.
pub const REPORT_LIMIT: usize = 100;

/// How long to wait for deleted pods to disappear.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(15);

/// The scheduler a pod without schedulerName gets, and the Lease its leader holds.
const DEFAULT_SCHEDULER: &str = "default-scheduler";
const DEFAULT_SCHEDULER_LEASE: (&str, &str) = ("kube-system", "kube-scheduler");

/// Namespace of the node heartbeat Leases.
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

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
    pub terminating_grace: String,

    /// How old a Pending pod that the scheduler never saw must be to count as stuck, e.g. 90s,
    /// 10m, 1h.
    #[arg(long, value_name = "DURATION")]
    #[serde(default = "default_pending_age")]
    pub pending_age: String,

    /// Only look in these namespaces (default: all).
    #[arg(long, value_name = "NAMESPACE", value_delimiter = ',')]
    #[serde(default)]
    pub namespaces: Vec<String>,

    /// Namespaces whose stuck pods are reported but never deleted (default: kube-system,
    /// kube-node-lease). An empty list (on the command line `--exclude-namespaces ''`) allows
    /// every namespace.
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

fn default_terminating_grace() -> String {
    "5m".into()
}

fn default_pending_age() -> String {
    "10m".into()
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

impl StuckKind {
    fn label(self) -> &'static str {
        match self {
            Self::Terminating => "terminating",
            Self::Pending => "pending",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Durations and label selectors (validation, no cluster)
// ---------------------------------------------------------------------------------------------

/// Parses a duration option: one or more `<digits><unit>` parts with unit `s`, `m`, `h` or `d`,
/// e.g. `90s`, `10m`, `1h`, `1h30m`. Returns seconds.
pub fn parse_duration(option: &str, text: &str) -> Result<i64> {
    let invalid = |problem: String| Error::InvalidOption {
        option: option.to_owned(),
        problem,
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(invalid(
            "must not be empty: write a duration like 90s, 10m or 1h".into(),
        ));
    }
    if trimmed.starts_with('-') {
        return Err(invalid(format!(
            "{text:?} is negative: write a duration like 90s, 10m or 1h"
        )));
    }
    let malformed = || {
        invalid(format!(
            "{text:?} is not a duration: write digits and a unit (s, m, h or d), like 90s, 10m, \
             1h or 1h30m"
        ))
    };
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in trimmed.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: i64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(malformed()),
        };
        if digits.is_empty() {
            return Err(malformed());
        }
        let part = digits
            .parse::<i64>()
            .ok()
            .and_then(|n| n.checked_mul(unit))
            .and_then(|s| total.checked_add(s))
            // A century is plenty, and keeps timestamp arithmetic far from overflowing.
            .filter(|s| *s <= 100 * 365 * 86_400)
            .ok_or_else(|| invalid(format!("{text:?} is too long a duration")))?;
        total = part;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(invalid(format!(
            "{text:?} has no unit: write {digits}s, {digits}m or {digits}h"
        )));
    }
    Ok(total)
}

/// Seconds for people: `45s`, `5m3s`, `2h5m`, `3d4h`.
#[must_use]
pub fn format_duration(seconds: i64) -> String {
    if seconds < 0 {
        return format!("-{}", format_duration(seconds.saturating_neg()));
    }
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
        seconds % 60,
    );
    let mut out = String::new();
    for (value, unit) in [(d, "d"), (h, "h"), (m, "m"), (s, "s")] {
        // Two units are precise enough for an age.
        if value > 0 && out.matches(char::is_alphabetic).count() < 2 {
            let _ = write!(out, "{value}{unit}");
        } else if !out.is_empty() {
            break;
        }
    }
    if out.is_empty() { "0s".into() } else { out }
}

/// Token of a label selector, as the API server's parser (apimachinery `labels.Parse`) sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Equals,
    NotEquals,
    Not,
    Greater,
    Less,
    Open,
    Close,
    Comma,
}

fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let token = match c {
            c if c.is_whitespace() => continue,
            '=' => {
                if chars.peek() == Some(&'=') {
                    chars.next();
                }
                Token::Equals
            }
            '!' => {
                if chars.peek() == Some(&'=') {
                    chars.next();
                    Token::NotEquals
                } else {
                    Token::Not
                }
            }
            '>' => Token::Greater,
            '<' => Token::Less,
            '(' => Token::Open,
            ')' => Token::Close,
            ',' => Token::Comma,
            _ => {
                let mut word = String::from(c);
                while let Some(&next) = chars.peek() {
                    if next.is_whitespace() || "=!<>(),".contains(next) {
                        break;
                    }
                    word.push(next);
                    chars.next();
                }
                Token::Word(word)
            }
        };
        tokens.push(token);
    }
    tokens
}

/// A label value: empty, or at most 63 characters of alphanumerics, `-`, `_`, `.`, starting and
/// ending alphanumeric.
fn is_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a non-empty label-value name.
fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    prefix.is_none_or(|p| check_subdomain("", p).is_ok())
        && !name.is_empty()
        && is_label_value(name)
}

/// Checks a label selector the way the API server parses it (`a=b`, `a==b`, `a!=b`, `a`, `!a`,
/// `a in (b,c)`, `a notin (b)`, `a>1`, `a<1`, joined by commas).
pub fn check_label_selector(option: &str, text: &str) -> Result<()> {
    let invalid = |problem: String| Error::InvalidOption {
        option: option.to_owned(),
        problem: format!("{text:?} is not a valid label selector: {problem}"),
    };
    let tokens = tokenize(text);
    let mut i = 0;
    let key_at = |i: usize| -> Result<&str> {
        match tokens.get(i) {
            Some(Token::Word(key)) if is_label_key(key) => Ok(key),
            Some(Token::Word(key)) => Err(invalid(format!("{key:?} is not a valid label key"))),
            _ => Err(invalid("expected a label key".into())),
        }
    };
    let value_ok = |value: &str| -> Result<()> {
        if is_label_value(value) {
            Ok(())
        } else {
            Err(invalid(format!("{value:?} is not a valid label value")))
        }
    };
    if tokens.is_empty() {
        return Ok(());
    }
    loop {
        if tokens.get(i) == Some(&Token::Not) {
            key_at(i + 1)?;
            i += 2;
        } else {
            key_at(i)?;
            i += 1;
            match tokens.get(i) {
                None | Some(Token::Comma) => {}
                Some(Token::Equals | Token::NotEquals) => {
                    i += 1;
                    if let Some(Token::Word(value)) = tokens.get(i) {
                        value_ok(value)?;
                        i += 1;
                    }
                }
                Some(Token::Greater | Token::Less) => {
                    i += 1;
                    match tokens.get(i) {
                        Some(Token::Word(n)) if n.parse::<i64>().is_ok() => i += 1,
                        _ => return Err(invalid("'>' and '<' need an integer".into())),
                    }
                }
                Some(Token::Word(op)) if op == "in" || op == "notin" => {
                    i += 1;
                    if tokens.get(i) != Some(&Token::Open) {
                        return Err(invalid(format!("expected '(' after {op}")));
                    }
                    i += 1;
                    loop {
                        if let Some(Token::Word(value)) = tokens.get(i) {
                            value_ok(value)?;
                            i += 1;
                        }
                        match tokens.get(i) {
                            Some(Token::Comma) => i += 1,
                            Some(Token::Close) => {
                                i += 1;
                                break;
                            }
                            _ => return Err(invalid(format!("unclosed value list after {op}"))),
                        }
                    }
                }
                Some(_) => {
                    return Err(invalid(
                        "expected an operator (=, ==, !=, in, notin, >, <) or ',' after a key"
                            .into(),
                    ));
                }
            }
        }
        match tokens.get(i) {
            None => return Ok(()),
            Some(Token::Comma) if i + 1 < tokens.len() => i += 1,
            Some(Token::Comma) => return Err(invalid("nothing after the last ','".into())),
            Some(_) => return Err(invalid("expected ',' between requirements".into())),
        }
    }
}

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

/// The state of the node a pod is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeState {
    /// The pod was never scheduled to a node.
    Unassigned,
    /// Ready=True.
    Ready,
    /// Ready=False (`NotReady`), Unknown (`Unknown`: the node stopped reporting), or no Ready
    /// condition at all (`NoReadyCondition`).
    NotReady(&'static str),
    /// No Node object of that name.
    Gone,
}

impl NodeState {
    /// The short name in reports.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unassigned => "none",
            Self::Ready => "Ready",
            Self::NotReady(state) => state,
            Self::Gone => "gone",
        }
    }
}

/// What is known about one Node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Status of its Ready condition, if it has one.
    pub ready: Option<String>,
    /// When its Lease in kube-node-lease was last renewed.
    pub lease_renewed: Option<Timestamp>,
    /// The Lease's duration in seconds.
    pub lease_duration: Option<i64>,
}

/// A node's state and Lease age, as reported with each pod on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// Node name (spec.nodeName), if the pod has one.
    pub name: Option<String>,
    /// Its state.
    pub state: NodeState,
    /// Seconds since its Lease was renewed.
    pub lease_age: Option<i64>,
    /// Whether the Lease has expired (renewed longer ago than its duration).
    pub lease_expired: bool,
}

impl NodeReport {
    /// The state of `name` among `nodes` at `now`.
    #[must_use]
    pub fn of(nodes: &BTreeMap<String, NodeInfo>, name: Option<&str>, now: Timestamp) -> Self {
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return Self {
                name: None,
                state: NodeState::Unassigned,
                lease_age: None,
                lease_expired: false,
            };
        };
        let Some(info) = nodes.get(name) else {
            return Self {
                name: Some(name.to_owned()),
                state: NodeState::Gone,
                lease_age: None,
                lease_expired: false,
            };
        };
        let state = match info.ready.as_deref() {
            Some("True") => NodeState::Ready,
            Some("False") => NodeState::NotReady("NotReady"),
            Some(_) => NodeState::NotReady("Unknown"),
            None => NodeState::NotReady("NoReadyCondition"),
        };
        let lease_age = info.lease_renewed.map(|t| seconds_since(t, now));
        let lease_expired = match (lease_age, info.lease_duration) {
            (Some(age), Some(duration)) => age > duration,
            _ => false,
        };
        Self {
            name: Some(name.to_owned()),
            state,
            lease_age,
            lease_expired,
        }
    }

    /// One line for people: `k8s03 (Unknown, lease renewed 5m12s ago)`.
    #[must_use]
    pub fn text(&self) -> String {
        let Some(name) = &self.name else {
            return "no node (never scheduled)".into();
        };
        if self.state == NodeState::Gone {
            return format!("{name} (gone: no such Node)");
        }
        let lease = match self.lease_age {
            Some(age) if self.lease_expired => {
                format!("lease expired, renewed {} ago", format_duration(age))
            }
            Some(age) => format!("lease renewed {} ago", format_duration(age)),
            None => "no lease".into(),
        };
        format!("{name} ({}, {lease})", self.state.label())
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

/// Seconds from `then` to `now` (negative when `then` is in the future).
#[must_use]
pub fn seconds_since(then: Timestamp, now: Timestamp) -> i64 {
    now.as_second() - then.as_second()
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

/// Whether a Lease is held: it has a holder and was renewed within its duration.
#[must_use]
pub fn lease_held(spec: &LeaseSpec, now: Timestamp) -> bool {
    let holder = spec
        .holder_identity
        .as_deref()
        .is_some_and(|h| !h.is_empty());
    let fresh = match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(renewed), Some(duration)) => seconds_since(renewed.0, now) <= i64::from(duration),
        _ => false,
    };
    holder && fresh
}

/// Escapes a value for a field selector (`\`, `,` and `=` are special).
fn escape_field_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
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
                "lease {lease} held by {holder}, renewed {} ago",
                format_duration(ago)
            ),
            (Some(lease), _, Some(ago)) => format!(
                "lease {lease} not held (last renewed {} ago)",
                format_duration(ago)
            ),
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

    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "lease": self.lease,
            "holder": self.holder,
            "renewed_seconds_ago": self.renewed_ago,
            "holds_lease": self.held,
            "stuck_pods": self.stuck_pods,
        })
    }
}

/// A list of reports capped at [`REPORT_LIMIT`], counting what did not fit.
#[derive(Debug, Clone, Default)]
struct Capped {
    items: Vec<Value>,
    total: usize,
}

impl Capped {
    fn push(&mut self, item: Value) {
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
    left_alone: Capped,
    seen: Capped,
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
                self.left_alone
                    .push(left_alone_report(&candidate, &[], now, &why));
            }
        }
    }

    /// Whether the run already has more qualifying pods than it may delete, so that further
    /// ones are only counted.
    fn over(&self, max_pods: usize) -> bool {
        self.qualifying > max_pods
    }

    fn counts(&self) -> Value {
        json!({
            "scanned": self.scanned,
            "terminating_stuck": self.terminating_stuck,
            "terminating_within_grace": self.terminating_within_grace,
            "pending_stuck": self.pending_stuck,
            "pending_within_age": self.pending_within_age,
            "seen_by_scheduler": self.seen.total,
            "qualifying": self.qualifying,
            "left_alone": self.left_alone.total,
        })
    }
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

impl Action for StuckPods {
    const NAME: &'static str = "stuck_pods";
    const ABOUT: &'static str =
        "Force-delete pods stuck Terminating or never seen by the scheduler, on evidence, safely";
    type Options = Options;

    fn validate(options: Options) -> Result<Self> {
        let terminating_grace = parse_duration("terminating_grace", &options.terminating_grace)?;
        let pending_age = parse_duration("pending_age", &options.pending_age)?;
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

    async fn run(self, ctx: RunContext) -> Result<Outcome> {
        let cluster = connect(&self.cluster).await?;
        let plan = self.scan(&cluster).await?;
        self.apply(&cluster, plan, ctx).await
    }
}

/// Continue-token paging of a list call, [`PAGE_SIZE`] items a page:
/// `while let Some(params) = pages.next() { list(params); pages.advance(&list.metadata) }`.
#[derive(Debug)]
struct Pages {
    params: ListParams,
    done: bool,
}

impl Pages {
    fn new(params: ListParams) -> Self {
        Self {
            params: params.limit(PAGE_SIZE),
            done: false,
        }
    }

    /// Parameters for the next page, or `None` after the last.
    fn next(&self) -> Option<&ListParams> {
        (!self.done).then_some(&self.params)
    }

    /// Moves on past a page that the server answered with `meta`.
    fn advance(&mut self, meta: &ListMeta) {
        match meta.continue_.as_deref().filter(|t| !t.is_empty()) {
            Some(token) => self.params.continue_token = Some(token.to_owned()),
            None => self.done = true,
        }
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

    fn report(&self, now: Timestamp) -> Value {
        json!({
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
            "owner": self.owner.label(),
            "age": self.created.map(|c| format_duration(seconds_since(c, now))),
        })
    }
}

/// How a delete went.
enum Deletion {
    Done,
    /// Already gone (404).
    Gone,
    /// Re-created under the same name (the UID precondition failed).
    Replaced,
}

impl StuckPods {
    /// Observes and plans: reads nodes, scans the pods in scope page by page, checks the
    /// scheduler leases of stuck Pending pods, and fails when more than `max_pods` qualify.
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
        if plan.over(self.max_pods) {
            return Err(self.too_many(&plan));
        }
        Ok(plan)
    }

    /// The pod APIs in scope: all namespaces, or each of `namespaces`.
    fn pod_apis(&self, cluster: &Cluster) -> Vec<Api<Pod>> {
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
            let mut pages = Pages::new(self.list_params(None));
            while let Some(params) = pages.next() {
                let page = api
                    .list_metadata(params)
                    .await
                    .map_err(cluster.error("list", self.scope_label()))?;
                pages.advance(&page.metadata);
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
            manifest: serde_json::to_value(&pod).unwrap_or(Value::Null),
        };
        plan.settle(verdict, candidate, group, self.max_pods, now);
        Ok(())
    }

    /// Reads a pod whole; `None` when it is gone or was re-created (another UID) meanwhile.
    async fn read_pod(&self, cluster: &Cluster, facts: &Facts) -> Result<Option<Pod>> {
        let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &facts.namespace);
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
            let mut pages = Pages::new(self.list_params(Some(fields)));
            while let Some(params) = pages.next() {
                let page = api
                    .list(params)
                    .await
                    .map_err(cluster.error("list", format!("pending {}", self.scope_label())))?;
                pages.advance(&page.metadata);
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
        pod: Pod,
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
            let mut report = facts.report(now);
            report["scheduler"] = json!(scheduler);
            report["evidence"] = json!(evidence);
            plan.seen.push(report);
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
            manifest: serde_json::to_value(&pod).unwrap_or(Value::Null),
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

    /// Applies a plan: backups, then deletes (dry runs in check mode), then verification.
    pub async fn apply(&self, cluster: &Cluster, plan: Plan, ctx: RunContext) -> Result<Outcome> {
        let now = Timestamp::now();
        let mut outcome = Outcome::default();
        outcome.warnings.extend(plan.warnings.iter().cloned());
        let mut backups: Vec<Option<PathBuf>> = vec![None; plan.candidates.len()];
        if let (Some(dir), false) = (&self.backup_dir, ctx.check_mode) {
            for (slot, candidate) in backups.iter_mut().zip(&plan.candidates) {
                *slot = Some(write_backup(dir, candidate)?);
            }
        }
        let mut left_alone = plan.left_alone.clone();
        // Left-alone Pending pods were reported before the leases were read.
        for report in &mut left_alone.items {
            if let Some(lease) = plan
                .schedulers
                .iter()
                .find(|l| report["scheduler"].as_str() == Some(l.name.as_str()))
            {
                report["scheduler_lease"] = json!(lease.text());
            }
        }
        let mut done: Vec<(Candidate, Option<PathBuf>)> = Vec::new();
        for (candidate, backup) in plan.candidates.iter().zip(backups) {
            let deletion = self
                .delete(cluster, candidate, ctx, &done, &mut outcome)
                .await?;
            let why = match deletion {
                Deletion::Done => {
                    done.push((candidate.clone(), backup));
                    continue;
                }
                Deletion::Gone => "deleted by someone else meanwhile",
                Deletion::Replaced => {
                    "re-created under the same name (new UID) meanwhile; the new pod was left alone"
                }
            };
            outcome.warn(format!("{}: {why}", candidate.label()));
            left_alone.push(left_alone_report(candidate, &plan.schedulers, now, why));
        }
        let gone = if ctx.check_mode || done.is_empty() {
            None
        } else {
            Some(self.verify(cluster, &done, &mut outcome).await)
        };
        let mut deleted = Vec::new();
        for (index, (candidate, backup)) in done.iter().enumerate() {
            let mut report = candidate_report(candidate, &plan.schedulers, now);
            report["backup_file"] = json!(backup.as_ref().map(|p| p.display().to_string()));
            report["finalizers_removed"] =
                json!(self.policy.remove_finalizers && !candidate.finalizers.is_empty());
            report["gone"] = json!(gone.as_ref().map(|g| g[index]));
            deleted.push(report);
            outcome.diff.push(Diff::of(
                &format!("pod/{}/{}", candidate.namespace, candidate.name),
                Some(&candidate.manifest),
                None,
            ));
        }
        if left_alone.total > left_alone.items.len() {
            outcome.warn(format!(
                "{} stuck pods were left alone; only the first {REPORT_LIMIT} are listed",
                left_alone.total
            ));
        }
        if plan.seen.total > plan.seen.items.len() {
            outcome.warn(format!(
                "{} Pending pods were seen by the scheduler; only the first {REPORT_LIMIT} are \
                 listed",
                plan.seen.total
            ));
        }
        outcome.changed = !done.is_empty();
        outcome.msg = message(&plan, &done, left_alone.total, ctx.check_mode);
        outcome.set("deleted", &deleted);
        outcome.set("left_alone", &left_alone.items);
        outcome.set("seen_by_scheduler", &plan.seen.items);
        outcome.set(
            "schedulers",
            plan.schedulers
                .iter()
                .map(SchedulerLease::to_json)
                .collect::<Vec<_>>(),
        );
        let mut counts = plan.counts();
        // Pods found gone or re-created at delete time are left alone too.
        counts["left_alone"] = json!(left_alone.total);
        outcome.set("counts", counts);
        outcome.set("verified", gone.map(|g| g.iter().all(|gone| *gone)));
        Ok(outcome)
    }

    /// Force-deletes one pod (a dry run in check mode) and, if allowed, removes its finalizers.
    async fn delete(
        &self,
        cluster: &Cluster,
        candidate: &Candidate,
        ctx: RunContext,
        done: &[(Candidate, Option<PathBuf>)],
        outcome: &mut Outcome,
    ) -> Result<Deletion> {
        let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &candidate.namespace);
        let params = DeleteParams {
            dry_run: ctx.check_mode,
            grace_period_seconds: Some(0),
            propagation_policy: Some(PropagationPolicy::Background),
            preconditions: Some(Preconditions {
                uid: Some(candidate.uid.clone()),
                resource_version: None,
            }),
        };
        let failed = |verb: &'static str, source: kube::Error| Error::ForceDelete {
            verb,
            object: candidate.label(),
            deleted: done.iter().map(|(c, _)| c.label()).collect(),
            source,
        };
        match api.delete(&candidate.name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(Deletion::Gone),
            // The UID precondition failed: a new pod has the name.
            Err(kube::Error::Api(status)) if status.code == 409 => return Ok(Deletion::Replaced),
            Err(err) if ctx.check_mode => {
                let err = cluster.error("delete", candidate.label())(err);
                outcome.warn(format!(
                    "a server-side dry run of the delete was refused, so the real run may fail: \
                     {}",
                    err.message_with_causes()
                ));
            }
            Err(err) => return Err(failed("delete", err)),
        }
        if self.policy.remove_finalizers && !candidate.finalizers.is_empty() {
            // The uid in the patch is a precondition: the API server refuses to change it.
            let patch = json!({"metadata": {"uid": candidate.uid, "finalizers": null}});
            let params = PatchParams {
                dry_run: ctx.check_mode,
                field_manager: Some("kubemend".into()),
                ..PatchParams::default()
            };
            match api
                .patch(&candidate.name, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                // Gone already, or replaced (the uid cannot change: 422).
                Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409 | 422) => {}
                Err(err) if ctx.check_mode => {
                    let err = cluster.error("patch", candidate.label())(err);
                    outcome.warn(format!(
                        "a server-side dry run of the finalizer removal was refused, so the real \
                         run may fail: {}",
                        err.message_with_causes()
                    ));
                }
                Err(err) => return Err(failed("remove the finalizers of", err)),
            }
        }
        Ok(Deletion::Done)
    }

    /// Waits until every deleted UID is gone; returns, per pod, whether it is.
    async fn verify(
        &self,
        cluster: &Cluster,
        done: &[(Candidate, Option<PathBuf>)],
        outcome: &mut Outcome,
    ) -> Vec<bool> {
        let deadline = Instant::now() + VERIFY_TIMEOUT;
        let mut gone = Vec::with_capacity(done.len());
        for (candidate, _) in done {
            let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &candidate.namespace);
            loop {
                let still = match api.get_opt(&candidate.name).await {
                    Ok(found) => {
                        found.filter(|p| p.metadata.uid.as_deref() == Some(&candidate.uid))
                    }
                    Err(err) => {
                        let err = cluster.error("get", candidate.label())(err);
                        outcome.warn(format!(
                            "could not verify that {} is gone: {}",
                            candidate.label(),
                            err.message_with_causes()
                        ));
                        gone.push(false);
                        break;
                    }
                };
                let Some(pod) = still else {
                    gone.push(true);
                    break;
                };
                if Instant::now() >= deadline {
                    let finalizers = pod.metadata.finalizers.unwrap_or_default();
                    outcome.warn(if finalizers.is_empty() {
                        format!(
                            "{} is still there {}s after its force delete",
                            candidate.label(),
                            VERIFY_TIMEOUT.as_secs()
                        )
                    } else {
                        format!(
                            "{} is still there, held by finalizers [{}]{}",
                            candidate.label(),
                            finalizers.join(", "),
                            if self.policy.remove_finalizers {
                                " (added again after kubemend removed them?)"
                            } else {
                                " (remove_finalizers: true removes them)"
                            }
                        )
                    });
                    gone.push(false);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        gone
    }
}

/// One sentence on what was (or would be) done.
fn message(
    plan: &Plan,
    done: &[(Candidate, Option<PathBuf>)],
    left_alone: usize,
    check: bool,
) -> String {
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
        .map(|(c, _)| match c.kind {
            StuckKind::Terminating => format!(
                "{}/{} (Terminating on {})",
                c.namespace,
                c.name,
                c.node.text()
            ),
            StuckKind::Pending => format!(
                "{}/{} (Pending, never seen by {:?})",
                c.namespace,
                c.name,
                c.scheduler.as_deref().unwrap_or(DEFAULT_SCHEDULER)
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

/// The report of one candidate, manifest included.
fn candidate_report(candidate: &Candidate, schedulers: &[SchedulerLease], now: Timestamp) -> Value {
    let scheduler_lease = candidate.scheduler.as_ref().and_then(|name| {
        schedulers
            .iter()
            .find(|l| &l.name == name)
            .map(SchedulerLease::text)
    });
    json!({
        "namespace": candidate.namespace,
        "name": candidate.name,
        "uid": candidate.uid,
        "owner": candidate.owner.label(),
        "kind": candidate.kind.label(),
        "node": candidate.node.name,
        "node_state": candidate.node.state.label(),
        "node_lease_age_seconds": candidate.node.lease_age,
        "scheduler": candidate.scheduler,
        "scheduler_lease": scheduler_lease,
        "reason": candidate.reason,
        "age": candidate.age.map(format_duration),
        "age_seconds": candidate.age,
        "stuck_seconds": candidate.stuck_for,
        "finalizers": candidate.finalizers,
        "scanned_at": now.to_string(),
        "manifest": candidate.manifest,
    })
}

/// The report of a stuck pod left alone: its candidate report without the manifest, with why.
fn left_alone_report(
    candidate: &Candidate,
    schedulers: &[SchedulerLease],
    now: Timestamp,
    why: &str,
) -> Value {
    let mut report = candidate_report(candidate, schedulers, now);
    if let Some(object) = report.as_object_mut() {
        object.remove("manifest");
        let stuck = object.remove("reason").unwrap_or_default();
        object.insert("stuck_reason".into(), stuck);
        object.insert("reason".into(), json!(why));
    }
    report
}

/// Reads every Node and node Lease once.
async fn read_nodes(cluster: &Cluster) -> Result<BTreeMap<String, NodeInfo>> {
    let mut nodes = BTreeMap::new();
    let api: Api<Node> = Api::all(cluster.client.clone());
    let mut pages = Pages::new(ListParams::default());
    while let Some(params) = pages.next() {
        let page = api
            .list(params)
            .await
            .map_err(cluster.error("list", "nodes"))?;
        pages.advance(&page.metadata);
        for node in page.items {
            let ready = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .map(|c| c.status.clone());
            nodes.insert(
                node.metadata.name.unwrap_or_default(),
                NodeInfo {
                    ready,
                    ..NodeInfo::default()
                },
            );
        }
    }
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), NODE_LEASE_NAMESPACE);
    let mut pages = Pages::new(ListParams::default());
    while let Some(params) = pages.next() {
        let page = leases
            .list(params)
            .await
            .map_err(cluster.error("list", "leases in kube-node-lease"))?;
        pages.advance(&page.metadata);
        for lease in page.items {
            let name = lease.metadata.name.unwrap_or_default();
            if let (Some(info), Some(spec)) = (nodes.get_mut(&name), lease.spec) {
                info.lease_renewed = spec.renew_time.map(|t| t.0);
                info.lease_duration = spec.lease_duration_seconds.map(i64::from);
            }
        }
    }
    Ok(nodes)
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
    let stamp = Timestamp::now().strftime("%Y%m%dT%H%M%SZ");
    let uid_prefix: String = candidate.uid.chars().take(8).collect();
    let file_name = format!(
        "pod-{}-{}-{stamp}-{uid_prefix}.yaml",
        candidate.namespace, candidate.name
    );
    let header = format!(
        "# Manifest of pod {}/{} (uid {}) taken before kubemend force-deleted it.\n\
         # Restore: kubectl apply -f {file_name}\n",
        candidate.namespace, candidate.name, candidate.uid,
    );
    let mut manifest = candidate.manifest.clone();
    if let Some(metadata) = manifest.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("deletionTimestamp");
        metadata.remove("deletionGracePeriodSeconds");
    }
    outcome::write_backup(dir, &file_name, &header, &manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn validate(value: Value) -> Result<StuckPods> {
        StuckPods::validate(serde_json::from_value(value).unwrap())
    }

    fn option_of(result: Result<StuckPods>) -> String {
        match result {
            Err(Error::InvalidOption { option, .. }) => option,
            other => panic!("expected an invalid option, got {other:?}"),
        }
    }

    #[test]
    fn durations_are_written_with_units() {
        assert_eq!(parse_duration("x", "90s").unwrap(), 90);
        assert_eq!(parse_duration("x", "10m").unwrap(), 600);
        assert_eq!(parse_duration("x", "1h").unwrap(), 3600);
        assert_eq!(parse_duration("x", "1h30m").unwrap(), 5400);
        assert_eq!(parse_duration("x", "2d").unwrap(), 172_800);
        assert_eq!(parse_duration("x", " 0s ").unwrap(), 0);
    }

    #[test]
    fn negative_or_malformed_durations_are_refused_naming_the_option() {
        for bad in [
            "-5m",
            "",
            "  ",
            "10",
            "m",
            "10x",
            "1.5h",
            "10 m",
            "5ms",
            "1h-1m",
            "99999999999999d",
        ] {
            let err = parse_duration("pending_age", bad).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidOption { option, .. } if option == "pending_age"),
                "{bad:?}: {err:?}"
            );
        }
        let negative = parse_duration("terminating_grace", "-5m").unwrap_err();
        assert!(negative.to_string().contains("negative"), "{negative}");
        let unitless = parse_duration("terminating_grace", "300").unwrap_err();
        assert!(unitless.to_string().contains("300s"), "{unitless}");
    }

    #[test]
    fn durations_are_shown_with_two_units_at_most() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(45), "45s");
        assert_eq!(format_duration(303), "5m3s");
        assert_eq!(format_duration(7500), "2h5m");
        assert_eq!(format_duration(3600), "1h");
        assert_eq!(format_duration(86_400 * 3 + 3600 * 4 + 7), "3d4h");
        assert_eq!(format_duration(-90), "-1m30s");
    }

    #[test]
    fn label_selectors_are_checked_like_the_api_server_parses_them() {
        for good in [
            "app=web",
            "app==web,tier!=db",
            "app",
            "!app",
            "app in (web, api),env notin (prod)",
            "kubemend.io/test=x-1_2.3",
            "app=",
            "app in ()",
            "n>3,n<10",
            " app = web ",
        ] {
            check_label_selector("label_selector", good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "app in (web",
            "app=web,",
            ",app",
            "app web",
            "app=we b",
            "Bad_Prefix/x=y",
            "app=-web",
            "app in web",
            "n>x",
            "=web",
            "app=(web)",
            &format!("app={}", "v".repeat(64)),
        ] {
            let err = check_label_selector("label_selector", bad).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidOption { option, .. } if option == "label_selector"),
                "{bad:?}: {err:?}"
            );
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

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn node_state_comes_from_the_ready_condition_and_the_lease() {
        let now = ts("2026-05-15T07:40:00Z");
        let mut nodes = BTreeMap::new();
        nodes.insert(
            "k8s01".to_owned(),
            NodeInfo {
                ready: Some("True".into()),
                lease_renewed: Some(ts("2026-05-15T07:39:55Z")),
                lease_duration: Some(40),
            },
        );
        nodes.insert(
            "k8s03".to_owned(),
            NodeInfo {
                ready: Some("Unknown".into()),
                lease_renewed: Some(ts("2026-05-15T07:30:00Z")),
                lease_duration: Some(40),
            },
        );
        nodes.insert(
            "k8s02".to_owned(),
            NodeInfo {
                ready: Some("False".into()),
                ..NodeInfo::default()
            },
        );
        let k8s01 = NodeReport::of(&nodes, Some("k8s01"), now);
        assert_eq!(k8s01.state, NodeState::Ready);
        assert_eq!(k8s01.lease_age, Some(5));
        assert!(!k8s01.lease_expired);
        let k8s03 = NodeReport::of(&nodes, Some("k8s03"), now);
        assert_eq!(k8s03.state.label(), "Unknown");
        assert!(k8s03.lease_expired);
        assert_eq!(
            k8s03.text(),
            "k8s03 (Unknown, lease expired, renewed 10m ago)"
        );
        assert_eq!(
            NodeReport::of(&nodes, Some("k8s02"), now).state.label(),
            "NotReady"
        );
        let gone = NodeReport::of(&nodes, Some("k8s04"), now);
        assert_eq!(gone.state, NodeState::Gone);
        assert!(gone.text().contains("gone"));
        assert_eq!(
            NodeReport::of(&nodes, Some(""), now).state,
            NodeState::Unassigned
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
    fn a_lease_is_held_only_by_a_holder_within_its_duration() {
        let now = ts("2026-05-15T07:40:00Z");
        let spec = |holder: Option<&str>, renewed: &str| LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            renew_time: Some(MicroTime(ts(renewed))),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        };
        assert!(lease_held(
            &spec(Some("k8s02_abc"), "2026-05-15T07:39:50Z"),
            now
        ));
        assert!(!lease_held(
            &spec(Some("k8s02_abc"), "2026-05-15T07:39:00Z"),
            now
        ));
        assert!(!lease_held(&spec(Some(""), "2026-05-15T07:39:59Z"), now));
        assert!(!lease_held(&spec(None, "2026-05-15T07:39:59Z"), now));
        assert!(!lease_held(&LeaseSpec::default(), now));
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
    fn field_selector_values_are_escaped() {
        assert_eq!(escape_field_value("plain-name"), "plain-name");
        assert_eq!(escape_field_value(r"a,b=c\d"), r"a\,b\=c\\d");
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
