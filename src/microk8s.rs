//! What the SSH-using actions read on a microk8s node: which nodes to reach, the kubelite unit's
//! state, dqlite's voters and leader, the restart-escalation risk, journal errors, the dqlite
//! backend's snapshot and data sizes, and the apiserver's arguments.
//!
//! Every read is a remote command given as an argument list ([`Remote::run`]); the parsing is
//! done here, in plain functions with unit tests.

use std::str::FromStr;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::k8s::names::check_subdomain;
use crate::ssh::{Remote, Target, check_host, check_word};

/// The label microk8s puts on control-plane nodes.
pub const CONTROL_PLANE_LABEL: &str = "node.kubernetes.io/microk8s-controlplane";

/// microk8s' dqlite client and its cluster files.
pub const DQLITE: &str = "/snap/microk8s/current/bin/dqlite";
/// The dqlite backend directory (cluster.yaml, certificates, segments, snapshots).
pub const DQLITE_BACKEND: &str = "/var/snap/microk8s/current/var/kubernetes/backend";

/// What run-kubelite-with-args reads to decide whether a restart escalates.
pub const SUBTREE_CONTROL: &str = "/sys/fs/cgroup/cgroup.subtree_control";
/// The drop-in that delegates the cgroup to kubelite (no escalation with it).
pub const DELEGATE_CONF: &str =
    "/etc/systemd/system/snap.microk8s.daemon-kubelite.service.d/delegate.conf";

/// The arguments kubelite starts the apiserver with.
pub const APISERVER_ARGS: &str = "/var/snap/microk8s/current/args/kube-apiserver";

/// The kubelite and k8s-dqlite units.
pub const KUBELITE_UNIT: &str = "snap.microk8s.daemon-kubelite";
/// The k8s-dqlite unit.
pub const DQLITE_UNIT: &str = "snap.microk8s.daemon-k8s-dqlite";

/// The live data, as dqlite answers it: the bytes of every kine row's value.
pub const LIVE_DATA_QUERY: &str = "SELECT SUM(LENGTH(value)) FROM kine";

/// The feature gates microk8s 1.34 turns off because they misbehave with dqlite.
pub const DQLITE_FEATURE_GATES: [&str; 3] = [
    "ListFromCacheSnapshot",
    "SizeBasedListCostEstimate",
    "DetectCacheInconsistency",
];

// ---------------------------------------------------------------------------------------------
// Which nodes
// ---------------------------------------------------------------------------------------------

/// A node to reach: its name, or where to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum NodeSpec {
    /// The node name; SSH reaches it by that name (an ssh_config Host entry or DNS).
    Name(String),
    /// The node name and where SSH reaches it.
    Target(NodeTarget),
}

/// Where SSH reaches a node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeTarget {
    /// The Kubernetes node name.
    pub name: String,
    /// Host to connect to (default: the name).
    #[serde(default)]
    pub host: Option<String>,
    /// SSH port (default: ssh_port, else the ssh_config's or 22).
    #[serde(default)]
    pub port: Option<u16>,
    /// Login user (default: ssh_user, else the ssh_config's).
    #[serde(default)]
    pub user: Option<String>,
}

impl FromStr for NodeSpec {
    type Err = String;

    /// A node name (on the command line; mappings come through --params).
    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        Ok(Self::Name(text.to_owned()))
    }
}

/// Checks the `nodes` option (no I/O): names, hosts, users and ports, no node twice.
pub fn check_nodes(nodes: Option<Vec<NodeSpec>>) -> Result<Option<Vec<NodeTarget>>> {
    let Some(list) = nodes else {
        return Ok(None);
    };
    if list.is_empty() {
        return Err(Error::InvalidOption {
            option: "nodes".into(),
            problem: "must name at least one node (omit it for the control plane)".into(),
        });
    }
    let mut out: Vec<NodeTarget> = Vec::new();
    for (index, spec) in list.into_iter().enumerate() {
        let at = format!("nodes[{index}]");
        let target = match spec {
            NodeSpec::Name(name) => NodeTarget {
                name,
                host: None,
                port: None,
                user: None,
            },
            NodeSpec::Target(target) => target,
        };
        check_subdomain(&format!("{at}.name"), &target.name)?;
        if let Some(host) = &target.host {
            check_host(&format!("{at}.host"), host)?;
        }
        if let Some(user) = &target.user {
            check_word(&format!("{at}.user"), user)?;
        }
        if target.port == Some(0) {
            return Err(Error::InvalidOption {
                option: format!("{at}.port"),
                problem: "must be between 1 and 65535".into(),
            });
        }
        if out.iter().any(|n| n.name == target.name) {
            return Err(Error::InvalidOption {
                option: at,
                problem: format!("node {:?} is listed twice", target.name),
            });
        }
        out.push(target);
    }
    Ok(Some(out))
}

/// The nodes to reach and how: `nodes` when given (each must be a Node of the cluster), else
/// the nodes labelled [`CONTROL_PLANE_LABEL`], else every node, each reached by its name.
pub fn targets(listed: &[Node], nodes: Option<&[NodeTarget]>) -> Result<Vec<Target>> {
    let names: Vec<&str> = listed
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    let targets: Vec<NodeTarget> = if let Some(nodes) = nodes {
        for (index, node) in nodes.iter().enumerate() {
            if !names.contains(&node.name.as_str()) {
                return Err(Error::InvalidOption {
                    option: format!("nodes[{index}]"),
                    problem: format!(
                        "{:?} is not a Node of the cluster (nodes: {})",
                        node.name,
                        names.join(", ")
                    ),
                });
            }
        }
        nodes.to_vec()
    } else {
        let control_plane: Vec<&str> = listed
            .iter()
            .filter(|n| {
                n.metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(CONTROL_PLANE_LABEL))
            })
            .filter_map(|n| n.metadata.name.as_deref())
            .collect();
        let chosen = if control_plane.is_empty() {
            names
        } else {
            control_plane
        };
        chosen
            .into_iter()
            .map(|name| NodeTarget {
                name: name.to_owned(),
                host: None,
                port: None,
                user: None,
            })
            .collect()
    };
    Ok(targets
        .into_iter()
        .map(|t| Target {
            host: t.host.clone().unwrap_or_else(|| t.name.clone()),
            node: t.name,
            port: t.port,
            user: t.user,
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// The unit
// ---------------------------------------------------------------------------------------------

/// What `systemctl show` says of a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// ActiveState.
    pub active: String,
    /// NRestarts.
    pub nrestarts: u64,
    /// ActiveEnterTimestamp.
    pub active_since: Option<Timestamp>,
}

/// The state of `unit` on the node.
pub async fn unit_state(remote: &Remote, unit: &str) -> Result<Unit> {
    let output = remote
        .run(
            false,
            "systemctl",
            &[
                "show",
                unit,
                "-p",
                "ActiveState",
                "-p",
                "NRestarts",
                "-p",
                "ActiveEnterTimestamp",
                "--timestamp=unix",
            ],
        )
        .await?;
    if !output.success() {
        return Err(remote.error("run", format!("systemctl show {unit}: {}", output.tail(3))));
    }
    Ok(parse_unit(&output.stdout))
}

/// Parses `systemctl show -p ... --timestamp=unix` output.
#[must_use]
pub fn parse_unit(text: &str) -> Unit {
    let mut unit = Unit {
        active: "unknown".into(),
        nrestarts: 0,
        active_since: None,
    };
    for line in text.lines() {
        match line.split_once('=') {
            Some(("ActiveState", v)) => v.trim().clone_into(&mut unit.active),
            Some(("NRestarts", v)) => unit.nrestarts = v.trim().parse().unwrap_or(0),
            Some(("ActiveEnterTimestamp", v)) => {
                unit.active_since = v
                    .trim()
                    .strip_prefix('@')
                    .and_then(|s| s.parse::<i64>().ok())
                    .and_then(|s| Timestamp::from_second(s).ok());
            }
            _ => {}
        }
    }
    unit
}

// ---------------------------------------------------------------------------------------------
// Restart escalation
// ---------------------------------------------------------------------------------------------

/// Whether microk8s would turn a kubelite restart into `snap restart microk8s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalation {
    /// The three conditions hold.
    pub risk: bool,
    /// Why, for people (set when `risk`).
    pub why: Option<String>,
}

/// The restart-escalation risk: kubelite restarted before (`nrestarts`), cpuset not delegated in
/// [`SUBTREE_CONTROL`] and no [`DELEGATE_CONF`].
pub async fn escalation(remote: &Remote, nrestarts: u64) -> Result<Escalation> {
    Ok(escalation_probe(remote).await?.judge(nrestarts))
}

/// What the node says about cpuset delegation: [`SUBTREE_CONTROL`] and [`DELEGATE_CONF`], read
/// at once over the node's one connection. [`EscalationProbe::judge`] adds NRestarts.
#[derive(Debug, Clone)]
pub struct EscalationProbe {
    control: crate::ssh::Output,
    delegate: crate::ssh::Output,
}

/// Reads what [`EscalationProbe::judge`] needs, so that it can go along with the unit's state.
pub async fn escalation_probe(remote: &Remote) -> Result<EscalationProbe> {
    let (control, delegate) = tokio::join!(
        remote.run(false, "cat", &[SUBTREE_CONTROL]),
        remote.run(false, "test", &["-e", DELEGATE_CONF])
    );
    Ok(EscalationProbe {
        control: control?,
        delegate: delegate?,
    })
}

impl EscalationProbe {
    /// The risk, given how often kubelite has restarted (`nrestarts`).
    #[must_use]
    pub fn judge(&self, nrestarts: u64) -> Escalation {
        let control = &self.control;
        let cpuset = control.success() && control.stdout.split_whitespace().any(|c| c == "cpuset");
        let risk = nrestarts > 0 && !cpuset && !self.delegate.success();
        let why = risk.then(|| {
            let cpuset = if control.success() {
                format!("cpuset is not in {SUBTREE_CONTROL}")
            } else {
                format!("{SUBTREE_CONTROL} cannot be read, so cpuset delegation is not shown")
            };
            format!(
                "restart-escalation risk: kubelite has restarted before (NRestarts={nrestarts}), \
                 {cpuset}, and {DELEGATE_CONF} is absent, so microk8s would turn this restart \
                 into `snap restart microk8s` (dqlite included)"
            )
        });
        Escalation { risk, why }
    }
}

// ---------------------------------------------------------------------------------------------
// dqlite
// ---------------------------------------------------------------------------------------------

/// dqlite's membership as one node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dqlite {
    /// Voters in `.cluster` (None: the query failed).
    pub voters: Option<usize>,
    /// The leader's address (None: no leader, or the query failed).
    pub leader: Option<String>,
    /// What is wrong: fewer than three voters, no leader, a failed query.
    pub problems: Vec<String>,
}

fn dqlite_args(query: &str) -> Vec<String> {
    vec![
        "-s".into(),
        format!("file://{DQLITE_BACKEND}/cluster.yaml"),
        "-c".into(),
        format!("{DQLITE_BACKEND}/cluster.crt"),
        "-k".into(),
        format!("{DQLITE_BACKEND}/cluster.key"),
        "-f".into(),
        "json".into(),
        "k8s".into(),
        query.into(),
    ]
}

async fn dqlite_query(remote: &Remote, query: &str) -> Result<crate::ssh::Output> {
    let args = dqlite_args(query);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    remote.run(true, DQLITE, &refs).await
}

/// Counts the voters (Role 0) in dqlite's `.cluster` answer (`-f json`).
#[must_use]
pub fn parse_voters(json: &str) -> Option<usize> {
    let members: Vec<serde_json::Value> = serde_json::from_str(json.trim()).ok()?;
    Some(
        members
            .iter()
            .filter(|m| m.get("Role").and_then(serde_json::Value::as_i64) == Some(0))
            .count(),
    )
}

/// dqlite voters and leader, as this node sees them.
pub async fn dqlite_state(remote: &Remote) -> Result<Dqlite> {
    let mut state = Dqlite::default();
    // Both at once (read-only); the leader counts only when the membership was read.
    let (cluster, leader) = tokio::join!(
        dqlite_query(remote, ".cluster"),
        dqlite_query(remote, ".leader")
    );
    let cluster = cluster?;
    if !cluster.success() {
        state
            .problems
            .push(format!("dqlite .cluster failed: {}", cluster.tail(3)));
        return Ok(state);
    }
    let voters = parse_voters(&cluster.stdout).unwrap_or(0);
    state.voters = Some(voters);
    if voters < 3 {
        state.problems.push(format!(
            "dqlite has {voters} voter(s): restarting one of fewer than three loses quorum"
        ));
    }
    let leader = leader?;
    let address = leader.stdout.trim().trim_matches('"').to_owned();
    if !leader.success() || address.is_empty() {
        state.problems.push(format!(
            "dqlite reports no leader: {}",
            if leader.success() {
                "empty answer".to_owned()
            } else {
                leader.tail(3)
            }
        ));
    } else {
        state.leader = Some(address);
    }
    Ok(state)
}

/// The dqlite backend's snapshot files and live data, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendSizes {
    /// How many `snapshot-*` files (their `.meta` files included).
    pub snapshot_files: usize,
    /// Their total apparent size.
    pub snapshot_bytes: u64,
    /// The live data: [`LIVE_DATA_QUERY`]'s answer (None: dqlite did not answer it).
    pub data_bytes: Option<u64>,
    /// Why `data_bytes` is unknown.
    pub data_problem: Option<String>,
}

/// Sums `find -printf '%s %f\n'` output: (files, bytes).
#[must_use]
pub fn parse_sizes(text: &str) -> (usize, u64) {
    text.lines()
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .fold((0, 0), |(n, sum), size| (n + 1, sum + size))
}

/// The first whole number in dqlite's answer to [`LIVE_DATA_QUERY`] (`-f json` gives
/// `[[22858956]]`, the tabular format the bare number).
#[must_use]
pub fn parse_live_data(text: &str) -> Option<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|s| !s.is_empty())?
        .parse()
        .ok()
}

/// The snapshot files' total size (apparent, so a sparse file counts in full) and the live
/// data's.
pub async fn backend_sizes(remote: &Remote) -> Result<BackendSizes> {
    let found = remote
        .run(
            true,
            "find",
            &[
                DQLITE_BACKEND,
                "-maxdepth",
                "1",
                "-type",
                "f",
                "-name",
                "snapshot-*",
                "-printf",
                "%s %f\\n",
            ],
        )
        .await?;
    if !found.success() {
        return Err(remote.error(
            "run",
            format!(
                "find {DQLITE_BACKEND} -name 'snapshot-*': {}",
                found.tail(3)
            ),
        ));
    }
    let (snapshot_files, snapshot_bytes) = parse_sizes(&found.stdout);
    let mut sizes = BackendSizes {
        snapshot_files,
        snapshot_bytes,
        ..BackendSizes::default()
    };
    let data = dqlite_query(remote, LIVE_DATA_QUERY).await?;
    match parse_live_data(&data.stdout).filter(|_| data.success()) {
        Some(bytes) => sizes.data_bytes = Some(bytes),
        None => {
            sizes.data_problem = Some(format!(
                "dqlite did not answer {LIVE_DATA_QUERY:?}: {}",
                data.tail(3)
            ));
        }
    }
    Ok(sizes)
}

// ---------------------------------------------------------------------------------------------
// Journals
// ---------------------------------------------------------------------------------------------

/// What kine logs when dqlite refuses a write under contention.
pub const DATABASE_LOCKED: &str = "database is locked";

/// Counts the journal lines that report [`DATABASE_LOCKED`] (any case).
#[must_use]
pub fn count_locked(journal: &str) -> usize {
    journal
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains(DATABASE_LOCKED))
        .count()
}

/// `database is locked` lines in `unit`'s journal since `since` (unix seconds).
pub async fn locked_since(remote: &Remote, unit: &str, since: i64) -> Result<usize> {
    let since = format!("--since=@{since}");
    let output = remote
        .run(
            true,
            "journalctl",
            &["-u", unit, &since, "--no-pager", "-q", "-o", "short-unix"],
        )
        .await?;
    if !output.success() {
        return Err(remote.error("run", format!("journalctl -u {unit}: {}", output.tail(3))));
    }
    Ok(count_locked(&output.stdout))
}

// ---------------------------------------------------------------------------------------------
// The apiserver's arguments
// ---------------------------------------------------------------------------------------------

/// The apiserver arguments diagnose judges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiserverArgs {
    /// `--authorization-mode`, split on commas (empty: not set, the apiserver's default
    /// AlwaysAllow).
    pub authorization_modes: Vec<String>,
    /// `--feature-gates`, every occurrence, as `(gate, value)`.
    pub feature_gates: Vec<(String, String)>,
}

impl ApiserverArgs {
    /// Whether every request is allowed: AlwaysAllow named, or no mode set at all.
    #[must_use]
    pub fn always_allow(&self) -> bool {
        self.authorization_modes.is_empty()
            || self.authorization_modes.iter().any(|m| m == "AlwaysAllow")
    }

    /// The gates of [`DQLITE_FEATURE_GATES`] not set to false.
    #[must_use]
    pub fn missing_dqlite_gates(&self) -> Vec<&'static str> {
        DQLITE_FEATURE_GATES
            .into_iter()
            .filter(|gate| {
                // The last occurrence wins, as for the apiserver's flags.
                self.feature_gates
                    .iter()
                    .rev()
                    .find(|(g, _)| g == gate)
                    .is_none_or(|(_, v)| !v.eq_ignore_ascii_case("false"))
            })
            .collect()
    }
}

/// Parses an args file: one `--flag=value` or `--flag value` per line, `#` comments.
#[must_use]
pub fn parse_apiserver_args(text: &str) -> ApiserverArgs {
    let mut args = ApiserverArgs::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (flag, value) = match line.split_once('=') {
            Some((flag, value)) => (flag.trim(), value.trim()),
            None => line
                .split_once(char::is_whitespace)
                .map_or((line, ""), |(f, v)| (f, v.trim())),
        };
        let value = value.trim_matches('"');
        match flag {
            "--authorization-mode" => {
                args.authorization_modes = value
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            "--feature-gates" => {
                for pair in value.split(',') {
                    if let Some((gate, on)) = pair.split_once('=') {
                        args.feature_gates
                            .push((gate.trim().to_owned(), on.trim().to_owned()));
                    }
                }
            }
            _ => {}
        }
    }
    args
}

/// The apiserver's arguments file on the node.
pub async fn apiserver_args(remote: &Remote) -> Result<ApiserverArgs> {
    let output = remote.run(true, "cat", &[APISERVER_ARGS]).await?;
    if !output.success() {
        return Err(remote.error("run", format!("cat {APISERVER_ARGS}: {}", output.tail(3))));
    }
    Ok(parse_apiserver_args(&output.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemctl_show_is_read_with_unix_timestamps() {
        let unit =
            parse_unit("ActiveState=active\nNRestarts=3\nActiveEnterTimestamp=@1747294800\n");
        assert_eq!(unit.active, "active");
        assert_eq!(unit.nrestarts, 3);
        assert_eq!(
            unit.active_since.unwrap().to_string(),
            "2025-05-15T07:40:00Z"
        );
        let down = parse_unit("ActiveState=inactive\nNRestarts=0\nActiveEnterTimestamp=\n");
        assert!(down.active_since.is_none());
    }

    #[test]
    fn voters_are_role_zero() {
        let json = r#"[{"ID":1,"Address":"a:19001","Role":0},{"ID":2,"Address":"b:19001","Role":1},
                      {"ID":3,"Address":"c:19001","Role":0}]"#;
        assert_eq!(parse_voters(json), Some(2));
        assert_eq!(parse_voters("Error: no"), None);
    }

    #[test]
    fn snapshot_sizes_and_live_data_are_read() {
        let (files, bytes) = parse_sizes(
            "235929600 snapshot-1-2048-1764581234\n128 snapshot-1-2048-1764581234.meta\n",
        );
        assert_eq!((files, bytes), (2, 235_929_728));
        assert_eq!(parse_sizes(""), (0, 0));
        assert_eq!(parse_live_data("[[21800000]]\n"), Some(21_800_000));
        assert_eq!(parse_live_data("21800000\n"), Some(21_800_000));
        assert_eq!(parse_live_data("[[null]]"), None);
    }

    #[test]
    fn database_locked_lines_are_counted() {
        let journal = "1764581234.1 k8s02 kubelite[1]: E1201 09:40:00 \"database is locked\"\n\
                       1764581235.1 k8s02 kubelite[1]: I1201 started\n\
                       1764581236.1 k8s02 kubelite[1]: Error: Database Is Locked (5)\n";
        assert_eq!(count_locked(journal), 2);
        assert_eq!(count_locked("-- No entries --\n"), 0);
    }

    #[test]
    fn apiserver_args_give_the_authorization_mode_and_feature_gates() {
        let args = parse_apiserver_args(
            "# comment\n--authorization-mode=Node,RBAC\n\
             --feature-gates=ListFromCacheSnapshot=false,SizeBasedListCostEstimate=false\n\
             --feature-gates DetectCacheInconsistency=true\n",
        );
        assert_eq!(args.authorization_modes, ["Node", "RBAC"]);
        assert!(!args.always_allow());
        assert_eq!(args.missing_dqlite_gates(), ["DetectCacheInconsistency"]);
        let open = parse_apiserver_args("--authorization-mode=AlwaysAllow\n");
        assert!(open.always_allow());
        assert_eq!(open.missing_dqlite_gates().len(), 3);
        assert!(parse_apiserver_args("--secure-port=16443\n").always_allow());
    }
}
