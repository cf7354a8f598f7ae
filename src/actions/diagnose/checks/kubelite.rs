//! kubelite: each control-plane node over SSH (only when an SSH option or `nodes` is given):
//! `database is locked` and watch-stream errors in the journals over the window, dqlite's
//! voters and leader as the node's own member has it, snapshot bloat, the restart-escalation
//! risk, the apiserver's authorization mode and feature gates. A node that cannot be read gets
//! a warning naming why; the others are still checked.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use serde_json::{Map, Value, json};

use super::{Check, Outcome, Run, reason};
use crate::actions::Action;
use crate::actions::diagnose::Diagnose;
use crate::actions::diagnose::report::{Finding, Severity, finding, fix};
use crate::actions::kubelite_restart::KubeliteRestart;
use crate::client::Cluster;
use crate::error::Error;
use crate::k8s::duration::format_duration;
use crate::microk8s;
use crate::ssh::{self, Remote, Target};

/// Runs the check when an SSH option or `nodes` was given.
pub(super) async fn run(d: &Diagnose, run: &mut Run<'_>) -> Outcome {
    if !d.ssh_given {
        return Err("no SSH options given".into());
    }
    d.kubelite(&run.cx.cluster, run.deadline, run.cx.check_mode)
        .await
}

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
        let listed = Api::<crate::k8s::objects::Node>::all(cluster.client.clone())
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

/// A count of journal lines over the window, judged as a rate against a limit.
struct JournalRate<'a> {
    /// The finding's kind (its id's middle part).
    kind: &'a str,
    /// Lines counted.
    count: usize,
    /// What the lines are, for the evidence.
    what: &'a str,
    /// The rate's period in seconds, its key in data and its words in the evidence.
    per: (f64, &'a str, &'a str),
    /// Above this many per period: a warning.
    limit: u32,
    /// What to do when over the limit (kubelite_restart on this node is the fix).
    hint: &'a str,
}

/// The finding of a [`JournalRate`] on one node.
fn journal_rate_finding(
    node: &str,
    rate: &JournalRate<'_>,
    limits: &KubeliteLimits,
    with_ssh: &dyn Fn(Value) -> Value,
) -> Finding {
    let window = format_duration(limits.window_seconds);
    let (period, key, words) = rate.per;
    let value = journal_rate(rate.count, period, limits.window_seconds);
    let over = value > f64::from(rate.limit);
    let mut f = node_finding(
        rate.kind,
        node,
        warning_if(over),
        format!(
            "{} {} over the last {window} ({value:.1} {words}; warning above {})",
            rate.count, rate.what, rate.limit
        ),
    );
    f.data.insert("count".into(), json!(rate.count));
    f.data.insert(key.into(), json!(value));
    f.data
        .insert("window_seconds".into(), json!(limits.window_seconds));
    if over {
        rate.hint.clone_into(&mut f.hint);
        f.fix = Some(fix(
            KubeliteRestart::NAME,
            &with_ssh(json!({"nodes": [node]})),
        ));
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
        let rate = JournalRate {
            kind: "database_locked",
            count: total,
            what: "`database is locked` error(s) in the kubelite and k8s-dqlite journals",
            per: (3600.0, "per_hour", "per hour"),
            limit: limits.locked_per_hour,
            hint: "dqlite is refusing writes under contention; stale watches follow (the \
                   scheduler stops seeing new pods, as in the incident): restart kubelite on \
                   this node (kubelite_restart), and if the errors go on, restart dqlite there: \
                   `sudo snap restart microk8s.daemon-k8s-dqlite`",
        };
        let mut f = journal_rate_finding(node, &rate, limits, &with_ssh);
        f.data.insert("per_unit".into(), Value::Object(per_unit));
        findings.push(f);
    }

    // Watch-stream errors of the controllers inside kubelite, over the window.
    if let Some(count) = watch_errors {
        let rate = JournalRate {
            kind: "watch_errors",
            count,
            what: "watch-stream error(s) (`Failed to watch`, `watch ended with error`) in the \
                   kubelite journal",
            per: (600.0, "per_10_minutes", "per 10 minutes"),
            limit: limits.watch_errors_per_10m,
            hint: "the scheduler or controller-manager on this node keeps losing its watches; \
                   pods created while a watch was down can stay Pending unseen (the incident): \
                   restart kubelite on this node (kubelite_restart), and look at the datastore \
                   (the database_locked finding)",
        };
        findings.push(journal_rate_finding(node, &rate, limits, &with_ssh));
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
                        f.fix = Some(fix(
                            KubeliteRestart::NAME,
                            &with_ssh(json!({"nodes": [node]})),
                        ));
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
                f.fix = Some(fix(KubeliteRestart::NAME, &with_ssh(json!({}))));
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

/// k8s02 as the seeded incident leaves it: lock errors, watch errors, snapshot bloat.
#[cfg(test)]
pub(crate) fn incident_node() -> NodeReading {
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

/// The limits of a default run over 15 minutes.
#[cfg(test)]
pub(crate) fn limits() -> KubeliteLimits {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
