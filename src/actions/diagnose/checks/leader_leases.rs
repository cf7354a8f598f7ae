//! leader_leases: the kube-scheduler and kube-controller-manager Leases: nobody holding one is
//! critical; leader changes within the window (their LeaderElection Events, less those after
//! kubemend's own kubelite restarts) above `lease_transitions` a warning.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::{Check, Outcome, Run, reason};
use crate::actions::Action as _;
use crate::actions::diagnose::Diagnose;
use crate::actions::diagnose::report::{Finding, Severity, finding, fix};
use crate::actions::kubelite_restart::KubeliteRestart;
use crate::client::Cluster;
use crate::error::Result;
use crate::k8s::duration::{format_ago, format_duration, seconds_since};
use crate::k8s::events;
use crate::k8s::lease::{LEADER_LEASES, leader_lease, lease_held};

/// Runs the check.
pub(super) async fn run(d: &Diagnose, run: &mut Run<'_>) -> Outcome {
    d.leader_leases(&run.cx.cluster).await.map_err(reason)
}

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
        let now = Timestamp::now();
        // The Events of the last hour (or less) tell the leader changes; a failure to read them
        // is said in the evidence, not a skipped check.
        let (elections, restarts) = tokio::join!(
            events::with_reason(cluster, "kube-system", events::LEADER_ELECTION),
            events::with_reason(cluster, events::NAMESPACE, events::KUBELITE_RESTART),
        );
        let mut findings = Vec::new();
        for name in LEADER_LEASES {
            let lease = leader_lease(cluster, name).await?;
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
        f.fix = Some(fix(KubeliteRestart::NAME, &json!({})));
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
            Some(fix(KubeliteRestart::NAME, &json!({}))),
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
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
}
