//! stuck_pods: pods Pending that the scheduler never saw and pods Terminating past their
//! grace, by stuck_pods's rules, counted per namespace and kind.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Check, Outcome, Run, reason};
use crate::actions::Action as _;
use crate::actions::Context;
use crate::actions::diagnose::Diagnose;
use crate::actions::diagnose::report::{Finding, Severity, finding, fix};
use crate::actions::stuck_pods::StuckPods;
use crate::actions::stuck_pods::{self, StuckKind};
use crate::k8s::duration::{Duration, format_duration};

/// Runs the check.
pub(super) async fn run(d: &Diagnose, run: &mut Run<'_>) -> Outcome {
    d.stuck_pods(&run.scratch).await
}

/// Pod names shown in the evidence of one finding; the rest are counted.
const NAMES_SHOWN: usize = 5;

/// Most stuck pods the `stuck_pods` check collects in detail (its counts are exact).
const STUCK_PODS_DETAIL: u32 = 500;

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
        let survey = stuck_pods::Survey {
            namespaces: self.namespaces.clone(),
            terminating_grace: self.terminating_grace.clone(),
            pending_age: self.pending_age.clone(),
            max_pods: STUCK_PODS_DETAIL,
        };
        let (report, planned) = stuck_pods::survey(cx, &survey).await.map_err(reason)?;
        let report = &report;
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
        f.fix = Some(fix(StuckPods::NAME, &options));
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

#[cfg(test)]
mod tests {
    use super::*;

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
