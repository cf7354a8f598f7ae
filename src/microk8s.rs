//! What the SSH-using actions read on a microk8s node: which nodes to reach, the kubelite unit's
//! state, dqlite's voters and leader, the restart-escalation risk, journal errors, the dqlite
//! backend's snapshot and data sizes, and the apiserver's arguments.
//!
//! Every read is a remote command given as an argument list ([`Remote::run`]); the parsing is
//! done here, in plain functions with unit tests.

use std::str::FromStr;

use k8s_openapi::jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::k8s::names::{check_subdomain, quoted};
use crate::k8s::objects::Node;
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

/// How long `snap restart` of a microk8s service may take. microk8s sets no `stop-timeout`,
/// so snapd writes `TimeoutStopSec=30` into its units (canonical/snapd: snap.yaml's parser
/// defaults StopTimeout to timeout/timeout.go's DefaultTimeout, 30 s, and
/// wrappers/internal/service_unit_gen.go writes it);
/// systemd waits that long after SIGTERM and as long again after SIGKILL, then the start
/// (Type=simple, at once) and snapd's change itself: 2 x 30 s and 15 s.
pub const SNAP_RESTART_LIMIT: std::time::Duration = std::time::Duration::from_secs(75);

/// The live data, as dqlite answers it: the bytes of every kine row's value.
pub const LIVE_DATA_QUERY: &str = "SELECT SUM(LENGTH(value)) FROM kine";

/// The feature gates microk8s turns off from 1.34 on, when the datastore is kine, because they
/// misbehave with dqlite (snap/hooks/configure, branches 1.34 and 1.35).
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
///
/// # Errors
/// A node name from the API that is no DNS subdomain (a real apiserver admits no other, but a
/// proxy or a compromised one may serve `ssh://user@elsewhere` or `-oProxyCommand=...`) is
/// refused before it can choose an SSH destination, and so is a name listed twice.
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
                        "{} is not a Node of the cluster (nodes: {})",
                        quoted(&node.name),
                        names_text(&names)
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
        for (index, name) in chosen.iter().enumerate() {
            check_listed_name(name)?;
            if chosen[..index].contains(name) {
                return Err(Error::UntrustedAnswer {
                    object: format!("node {}", quoted(name)),
                    problem: "the list of nodes names it twice".into(),
                    hint: "a real API server lists each Node once: check that host or the \
                           kubeconfig points at the cluster's API server"
                        .into(),
                });
            }
        }
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

/// Checks a node name the API listed before it becomes an SSH destination, as names given in
/// `nodes` are checked.
fn check_listed_name(name: &str) -> Result<()> {
    check_subdomain("node name", name).map_err(|_| Error::UntrustedAnswer {
        object: format!("node {}", quoted(name)),
        problem: "its name is not a valid Kubernetes name (a DNS subdomain), so it is not used \
                  to choose where SSH connects"
            .into(),
        hint: "a real API server admits no such name: check that host or the kubeconfig points \
               at the cluster's API server, or name the nodes to reach in option nodes \
               ({name, host})"
            .into(),
    })
}

/// Node names for a message, each quoted and cut.
fn names_text(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| quoted(n))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// The unit
// ---------------------------------------------------------------------------------------------

/// What `systemctl show` says of a unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unit {
    /// ActiveState (`unknown` when systemd did not say).
    pub active: String,
    /// SubState (`running`, `auto-restart`, ...).
    pub sub: String,
    /// NRestarts: automatic restarts since the last manual start (None: not said).
    pub nrestarts: Option<u64>,
    /// ActiveEnterTimestamp.
    pub active_since: Option<Timestamp>,
    /// InvocationID: new at every start of the unit, automatic restarts included (None: the
    /// unit has not run since boot, or systemd did not say).
    pub invocation: Option<String>,
}

impl Unit {
    /// Whether the unit is active (running).
    #[must_use]
    pub fn is_active(&self) -> bool {
        self.active == "active"
    }

    /// `active (running)`, for messages.
    #[must_use]
    pub fn text(&self) -> String {
        if self.sub.is_empty() {
            self.active.clone()
        } else {
            format!("{} ({})", self.active, self.sub)
        }
    }
}

/// The `systemctl show` properties [`unit_state`] reads.
pub const UNIT_PROPERTIES: [&str; 5] = [
    "ActiveState",
    "SubState",
    "NRestarts",
    "ActiveEnterTimestamp",
    "InvocationID",
];

/// The state of `unit` on the node.
///
/// Timestamps come in systemd's own format under `TZ=UTC LC_ALL=C` (`Sat 2026-12-05 21:20:00
/// UTC`), which every systemd prints; `--timestamp=unix` exists only since systemd 251
/// (Ubuntu 20.04 ships 245, 22.04 249, Debian 11 247) and carries the same whole seconds.
pub async fn unit_state(remote: &Remote, unit: &str) -> Result<Unit> {
    let mut args = vec!["LC_ALL=C", "TZ=UTC", "systemctl", "show", unit];
    for property in UNIT_PROPERTIES {
        args.extend(["-p", property]);
    }
    let output = remote.run(false, "env", &args).await?;
    if !output.success() {
        return Err(remote.error("run", format!("systemctl show {unit}: {}", output.tail(3))));
    }
    Ok(parse_unit(&output.stdout))
}

/// Parses `systemctl show -p ...` output, by key (systemd prints properties in its own order).
#[must_use]
pub fn parse_unit(text: &str) -> Unit {
    let mut unit = Unit {
        active: "unknown".into(),
        ..Unit::default()
    };
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match key {
            "ActiveState" if !value.is_empty() => value.clone_into(&mut unit.active),
            "SubState" => value.clone_into(&mut unit.sub),
            "NRestarts" => unit.nrestarts = value.parse().ok(),
            "ActiveEnterTimestamp" => unit.active_since = parse_systemd_timestamp(value),
            "InvocationID" if !value.is_empty() => unit.invocation = Some(value.to_owned()),
            _ => {}
        }
    }
    unit
}

/// A timestamp as `systemctl show` prints it: `Sat 2026-12-05 21:20:00 UTC` (the default
/// style, read under `TZ=UTC`; the weekday is optional), `2026-12-05 21:20:00.123456 UTC`
/// (`--timestamp=us+utc`) or `@1764969600` (`--timestamp=unix`). Empty (never) and any other
/// zone give None: a local time would be read wrongly.
#[must_use]
pub fn parse_systemd_timestamp(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    if let Some(seconds) = text.strip_prefix('@') {
        return Timestamp::from_second(seconds.parse().ok()?).ok();
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let (date, time, zone) = match words.as_slice() {
        [_, date, time, zone] | [date, time, zone] => (*date, *time, *zone),
        _ => return None,
    };
    if zone != "UTC" {
        return None;
    }
    let civil: k8s_openapi::jiff::civil::DateTime = format!("{date}T{time}").parse().ok()?;
    civil
        .to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

// ---------------------------------------------------------------------------------------------
// Restart escalation
// ---------------------------------------------------------------------------------------------

/// The snap's metadata, where run-kubelite-with-args reads its confinement.
pub const SNAP_YAML: &str = "/snap/microk8s/current/meta/snap.yaml";

/// Whether a crash of kubelite would make microk8s restart the whole snap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalation {
    /// Every condition holds: a kubelite that restarts by itself escalates.
    pub risk: bool,
    /// Why, for people (set when `risk`).
    pub why: Option<String>,
}

/// What the node says about its cgroup delegation: [`SUBTREE_CONTROL`], [`DELEGATE_CONF`] and
/// the snap's confinement, read at once over the node's one connection.
#[derive(Debug, Clone)]
pub struct EscalationProbe {
    control: crate::ssh::Output,
    delegate: crate::ssh::Output,
    confinement: crate::ssh::Output,
}

/// Reads what [`EscalationProbe::judge`] needs.
pub async fn escalation_probe(remote: &Remote) -> Result<EscalationProbe> {
    let (control, delegate, confinement) = tokio::join!(
        remote.run(false, "cat", &[SUBTREE_CONTROL]),
        remote.run(false, "test", &["-e", DELEGATE_CONF]),
        remote.run(false, "grep", &["confinement", SNAP_YAML])
    );
    Ok(EscalationProbe {
        control: control?,
        delegate: delegate?,
        confinement: confinement?,
    })
}

/// The escalation risk of the node (see [`EscalationProbe::judge`]).
pub async fn escalation(remote: &Remote) -> Result<Escalation> {
    Ok(escalation_probe(remote).await?.judge())
}

impl EscalationProbe {
    /// The risk as microk8s' run-kubelite-with-args decides it at the start of every kubelite
    /// process (canonical/microk8s, microk8s-resources/wrappers/run-kubelite-with-args, from
    /// PR #4503): not strictly confined, NRestarts not 0, `grep -qv cpuset` of
    /// [`SUBTREE_CONTROL`] succeeding (a line without cpuset: a missing file, cgroup v1, or an
    /// empty one never escalates) and no [`DELEGATE_CONF`]; then it writes delegate.conf and
    /// runs `snap restart microk8s`, k8s-dqlite included.
    ///
    /// NRestarts is left out on purpose: `snap restart` is a stop and a start, which resets it
    /// to 0, so the restart itself never escalates; the first crash after it (NRestarts 1) does.
    /// The risk is a property of the node's delegation.
    #[must_use]
    pub fn judge(&self) -> Escalation {
        let strict = self.confinement.success()
            && self
                .confinement
                .stdout
                .lines()
                .any(|l| l.contains("confinement") && l.contains("strict"));
        let lacks_cpuset =
            self.control.success() && self.control.stdout.lines().any(|l| !l.contains("cpuset"));
        let delegated = self.delegate.success();
        let risk = !strict && lacks_cpuset && !delegated;
        let why = risk.then(|| {
            format!(
                "restart-escalation risk: cpuset is not in {SUBTREE_CONTROL} ({:?}) and \
                 {DELEGATE_CONF} is absent, so if kubelite crashes after its restart, microk8s \
                 writes delegate.conf and runs `snap restart microk8s`, restarting this node's \
                 k8s-dqlite too",
                self.control.stdout.trim()
            )
        });
        Escalation { risk, why }
    }
}

/// What to do about an escalation risk, for hints.
pub const ESCALATION_REMEDY: &str = "write /etc/systemd/system/snap.microk8s.daemon-kubelite.\
     service.d/delegate.conf with `[Service]` `Delegate=yes` and run `systemctl daemon-reload` \
     on that node (what microk8s itself writes), or delegate cpuset";

// ---------------------------------------------------------------------------------------------
// snapd changes
// ---------------------------------------------------------------------------------------------

/// A snapd change that is not ready (snapd refuses `snap restart` meanwhile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapChange {
    /// The change id.
    pub id: String,
    /// Its status (`Doing`, `Do`, `Undoing`, ...).
    pub status: String,
    /// What it does (`Auto-refresh snap "microk8s"`).
    pub summary: String,
}

/// The statuses of a change that is not ready (canonical/snapd overlord/state/change.go: only
/// Done, Undone, Hold and Error are ready).
const SNAP_IN_PROGRESS: [&str; 6] = ["Do", "Doing", "Undo", "Undoing", "Abort", "Wait"];

/// The changes in progress in `snap changes microk8s` output (canonical/snapd
/// cmd/snap/cmd_changes.go: a header `ID Status Spawn Ready Summary`, then one row a change;
/// older snapd writes Spawn and Ready as words, so only the first two columns are positional).
#[must_use]
pub fn parse_snap_changes(text: &str) -> Vec<SnapChange> {
    let mut out = Vec::new();
    for line in text.lines().skip_while(|l| !l.starts_with("ID")).skip(1) {
        let mut words = line.split_whitespace();
        let (Some(id), Some(status)) = (words.next(), words.next()) else {
            continue;
        };
        if !id.chars().all(|c| c.is_ascii_digit()) || !SNAP_IN_PROGRESS.contains(&status) {
            continue;
        }
        // Summary is the last column: after the last run of the padding (two spaces or more).
        let summary = line
            .trim_end()
            .rfind("  ")
            .map_or(String::new(), |i| line[i..].trim().to_owned());
        out.push(SnapChange {
            id: id.to_owned(),
            status: status.to_owned(),
            summary,
        });
    }
    out
}

/// The microk8s snap's changes in progress. `snap changes` answers `error: no changes found`
/// (exit 1) when there are none.
pub async fn snap_changes(remote: &Remote) -> Result<Vec<SnapChange>> {
    let output = remote.run(false, "snap", &["changes", "microk8s"]).await?;
    if output.success() {
        return Ok(parse_snap_changes(&output.stdout));
    }
    if output.stderr.contains("no changes found") {
        return Ok(Vec::new());
    }
    Err(remote.error("run", format!("snap changes microk8s: {}", output.tail(3))))
}

/// A change in progress, for messages.
#[must_use]
pub fn snap_change_text(changes: &[SnapChange]) -> String {
    changes
        .iter()
        .map(|c| format!("snapd change {} ({}: {})", c.id, c.status, c.summary))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// dqlite
// ---------------------------------------------------------------------------------------------

/// A member of dqlite's cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its address (`ip:19001`).
    pub address: String,
    /// 0 voter, 1 stand-by, 2 spare.
    pub role: u64,
}

/// dqlite's health as one node's own member has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dqlite {
    /// This node's member address, from its info.yaml (None: not read).
    pub own_address: Option<String>,
    /// The node's k8s-dqlite unit.
    pub unit: Option<Unit>,
    /// Whether this node's member is a voter in the cluster (None: not known).
    pub own_voter: Option<bool>,
    /// Voters in `.cluster`, each address once (None: the query failed).
    pub voters: Option<usize>,
    /// The leader's address (None: no leader, or the query failed).
    pub leader: Option<String>,
    /// What is wrong: this node's k8s-dqlite down or not a voter, fewer than three voters, no
    /// leader, a failed query.
    pub problems: Vec<String>,
}

/// How long one dqlite CLI call may take on the node (microk8s: 4 s, `utils.py`), after which
/// `timeout` ends it there, and how often it is tried (microk8s: up to 10 times).
pub const DQLITE_CALL_SECONDS: u32 = 4;
const DQLITE_TRIES: u32 = 3;

fn dqlite_args(query: &str) -> Vec<String> {
    vec![
        "-k".into(),
        "1".into(),
        DQLITE_CALL_SECONDS.to_string(),
        DQLITE.into(),
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

/// One dqlite CLI query, bounded on the node by `timeout` (the 1.28 CLI waits for a leader
/// forever, later ones 2 s a request) and tried up to three times while it fails, as microk8s
/// retries its own.
async fn dqlite_query(remote: &Remote, query: &str) -> Result<crate::ssh::Output> {
    let args = dqlite_args(query);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut tries = 0;
    loop {
        tries += 1;
        let mut output = remote.run(true, "timeout", &refs).await?;
        if output.success() || tries >= DQLITE_TRIES {
            if output.status == Some(124) {
                output.stderr = format!(
                    "no answer within {DQLITE_CALL_SECONDS}s ({tries} tries); {}",
                    output.stderr.trim()
                );
            }
            return Ok(output);
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// The members in dqlite's `.cluster` answer (`-f json`), each address once (the first
/// entry wins). IDs are left out: they may exceed 2^63.
#[must_use]
pub fn parse_members(json: &str) -> Option<Vec<Member>> {
    let members: Vec<serde_json::Value> = serde_json::from_str(json.trim()).ok()?;
    let mut out: Vec<Member> = Vec::new();
    for member in members {
        let address = member.get("Address")?.as_str()?.to_owned();
        let role = member.get("Role")?.as_u64()?;
        if !out.iter().any(|m| m.address == address) {
            out.push(Member { address, role });
        }
    }
    Some(out)
}

/// The `Address` of a node's info.yaml (microk8s writes `Address: 10.0.0.1:19001`).
#[must_use]
pub fn parse_info_address(yaml: &str) -> Option<String> {
    yaml.lines().find_map(|l| {
        let value = l
            .trim()
            .strip_prefix("Address:")?
            .trim()
            .trim_matches(['"', '\'']);
        (!value.is_empty()).then(|| value.to_owned())
    })
}

/// dqlite's health as this node's member has it: its k8s-dqlite unit active, its own address
/// (info.yaml) a voter, at least three voters and a leader. `.cluster` and `.leader` answer
/// with the leader's view, so a node whose own k8s-dqlite is dead still shows three voters
/// there: the unit and the own address are what tell (as microk8s' own check compares
/// info.yaml's Address with the cluster).
pub async fn dqlite_state(remote: &Remote) -> Result<Dqlite> {
    let info_path = format!("{DQLITE_BACKEND}/info.yaml");
    let info_args = [info_path.as_str()];
    let (info, unit, cluster, leader) = tokio::join!(
        remote.run(true, "cat", &info_args),
        unit_state(remote, DQLITE_UNIT),
        dqlite_query(remote, ".cluster"),
        dqlite_query(remote, ".leader")
    );
    let (info, unit, cluster, leader) = (info?, unit?, cluster?, leader?);
    if !info.success() {
        // Without the node's own address (and, as a rule, without the certificates the CLI
        // needs) nothing can be judged: unread, not unhealthy.
        return Err(remote.error(
            "run",
            format!(
                "cat {info_path}: {} (the backend is readable by root or the microk8s group: \
                 become)",
                info.tail(2)
            ),
        ));
    }
    Ok(judge_dqlite(&info, unit, &cluster, &leader))
}

/// [`dqlite_state`]'s judgement of what it read (no I/O).
#[must_use]
pub fn judge_dqlite(
    info: &crate::ssh::Output,
    unit: Unit,
    cluster: &crate::ssh::Output,
    leader: &crate::ssh::Output,
) -> Dqlite {
    let mut state = Dqlite::default();
    if !unit.is_active() {
        state.problems.push(format!(
            "this node's {DQLITE_UNIT} is {}: its dqlite member is down",
            unit.text()
        ));
    }
    state.unit = Some(unit);
    if info.success() {
        state.own_address = parse_info_address(&info.stdout);
    }
    if state.own_address.is_none() {
        state.problems.push(format!(
            "{DQLITE_BACKEND}/info.yaml gives no Address: {}",
            info.tail(2)
        ));
    }
    let members = if cluster.success() {
        parse_members(&cluster.stdout)
    } else {
        None
    };
    match members {
        None => state.problems.push(format!(
            "dqlite .cluster failed: {}",
            if cluster.success() {
                "not a JSON list of members".to_owned()
            } else {
                cluster.tail(3)
            }
        )),
        Some(members) => {
            let voters = members.iter().filter(|m| m.role == 0).count();
            state.voters = Some(voters);
            if voters < 3 {
                state.problems.push(format!(
                    "dqlite has {voters} voter(s): restarting one of fewer than three loses \
                     quorum"
                ));
            }
            if let Some(own) = &state.own_address {
                let role = members.iter().find(|m| &m.address == own).map(|m| m.role);
                state.own_voter = Some(role == Some(0));
                match role {
                    Some(0) => {}
                    Some(role) => state.problems.push(format!(
                        "this node's dqlite member {own} is not a voter (role {})",
                        role_name(role)
                    )),
                    None => state.problems.push(format!(
                        "this node's dqlite member {own} is not in the cluster"
                    )),
                }
            }
        }
    }
    let address = leader.stdout.trim().trim_matches('"').to_owned();
    if leader.success() && !address.is_empty() {
        state.leader = Some(address);
    } else {
        state.problems.push(format!(
            "dqlite reports no leader: {}",
            if leader.success() {
                "empty answer".to_owned()
            } else {
                leader.tail(3)
            }
        ));
    }
    state
}

fn role_name(role: u64) -> &'static str {
    match role {
        0 => "voter",
        1 => "stand-by",
        2 => "spare",
        _ => "unknown",
    }
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

/// Sums `find -printf '%s %f\n'` output: (files, bytes); a size past 2^64 bytes saturates.
#[must_use]
pub fn parse_sizes(text: &str) -> (usize, u64) {
    text.lines()
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .fold((0, 0), |(n, sum), size| (n + 1, sum.saturating_add(size)))
}

/// dqlite's answer to [`LIVE_DATA_QUERY`]. `-f json` does not apply to SQL: go-dqlite v2 and
/// v3 (microk8s 1.29 on) print a tab-separated header row, then the value
/// (`SUM(LENGTH(value))\t\n22858956\t`); v1.20 (microk8s 1.28) the bare value. The value is
/// the last line that is a whole number; NULL (no rows), a negative or anything else is None.
#[must_use]
pub fn parse_live_data(text: &str) -> Option<u64> {
    let last = text.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    last.parse().ok()
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
                "dqlite did not answer {LIVE_DATA_QUERY:?} with a size: {}",
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

/// What a controller's informer logs at the default verbosity when its watch stream breaks and
/// it cannot list and watch again (client-go tools/cache/reflector.go, v0.34:
/// `DefaultWatchErrorHandler`'s `"Failed to watch"`, and `"Warning: watch ended with error"` for
/// a watch that ended with an error other than an expired resourceVersion or a 429). The
/// incident review's alert item 5 names the same lines ("Failed to watch *v1.Pod").
pub const WATCH_ERRORS: [&str; 2] = ["Failed to watch", "watch ended with error"];

/// The awk program that counts, in one pass over a journal, the lines reporting
/// [`DATABASE_LOCKED`] (any case) and [`WATCH_ERRORS`], printed as `locked=N watch=N`.
const COUNT_PROGRAM: &str = "{ l = tolower($0) } \
     index(l, \"database is locked\") { locked++ } \
     index($0, \"Failed to watch\") || index($0, \"watch ended with error\") { watch++ } \
     END { printf \"locked=%d watch=%d\\n\", locked, watch }";

/// Counts, on the node, the lines of a unit's journal ([`COUNT_PROGRAM`]; `$1` the unit, `$2`
/// the epoch second to start at, `$3` the program), so that only the counts cross SSH; the
/// exit status of journalctl follows on stderr. Not `-o cat` (nor json): journalctl turns `-q`
/// on for those outputs, and then says nothing when it cannot read the system journal.
const COUNT_JOURNAL: &str = "{ journalctl -u \"$1\" --since=\"@$2\" --no-pager -o short-unix; \
     echo \"journalctl-exit=$?\" >&2; } | awk \"$3\"; exit 0";

/// The lines of one unit's journal over a window that diagnose counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalCounts {
    /// Lines reporting [`DATABASE_LOCKED`].
    pub locked: usize,
    /// Lines reporting a broken watch stream ([`WATCH_ERRORS`]).
    pub watch_errors: usize,
}

/// What journalctl says (without `-q`) when it cannot read the system journal: the login user
/// is not root nor in adm or systemd-journal. It then prints no entries and exits 0.
const JOURNAL_UNREADABLE: [&str; 2] = [
    "not seeing messages from other users and the system",
    "insufficient permissions",
];

/// Judges [`COUNT_JOURNAL`]'s output: the counts, or why the journal could not be read (never
/// a silent zero).
pub fn parse_journal_counts(
    output: &crate::ssh::Output,
) -> std::result::Result<JournalCounts, String> {
    if !output.success() {
        return Err(output.tail(3));
    }
    let exit = output
        .stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("journalctl-exit="));
    let said: Vec<&str> = output
        .stderr
        .lines()
        .filter(|l| !l.trim().starts_with("journalctl-exit="))
        .collect();
    if JOURNAL_UNREADABLE
        .iter()
        .any(|hint| output.stderr.contains(hint))
    {
        return Err(format!(
            "journalctl cannot read the system journal as this user (not root, not in adm or \
             systemd-journal): {}",
            said.first().map_or("", |l| l.trim())
        ));
    }
    match exit {
        Some("0") => {}
        Some(code) => {
            return Err(format!(
                "journalctl exited {code}: {}",
                said.join(" ").trim()
            ));
        }
        None => return Err(format!("journalctl did not run: {}", output.tail(3))),
    }
    let text = output.stdout.trim();
    let count = |key: &str| {
        text.split_whitespace()
            .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
            .and_then(|n| n.parse::<usize>().ok())
    };
    match (count("locked"), count("watch")) {
        (Some(locked), Some(watch_errors)) => Ok(JournalCounts {
            locked,
            watch_errors,
        }),
        _ => Err(format!("the counts are not numbers: {text:?}")),
    }
}

/// The lines of `unit`'s journal since `since` (unix seconds) that diagnose counts, counted on
/// the node. Err(reason) when the journal could not be read.
pub async fn journal_counts_since(
    remote: &Remote,
    unit: &str,
    since: i64,
) -> Result<std::result::Result<JournalCounts, String>> {
    let since = since.to_string();
    let output = remote
        .run(
            true,
            "sh",
            &["-c", COUNT_JOURNAL, "sh", unit, &since, COUNT_PROGRAM],
        )
        .await?;
    Ok(parse_journal_counts(&output))
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
    /// `--etcd-servers` (the last one).
    pub etcd_servers: Option<String>,
}

impl ApiserverArgs {
    /// Whether every request is allowed: AlwaysAllow named, or no mode set at all.
    #[must_use]
    pub fn always_allow(&self) -> bool {
        self.authorization_modes.is_empty()
            || self.authorization_modes.iter().any(|m| m == "AlwaysAllow")
    }

    /// Whether the datastore is kine (k8s-dqlite's socket), where microk8s turns off
    /// [`DQLITE_FEATURE_GATES`]; with etcd it sets none (snap/hooks/configure greps
    /// `--etcd-servers=.*kine.sock`).
    #[must_use]
    pub fn uses_kine(&self) -> bool {
        self.etcd_servers
            .as_deref()
            .is_some_and(|s| s.contains("kine.sock"))
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
            "--etcd-servers" => args.etcd_servers = Some(value.to_owned()),
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
    use crate::ssh::Output;

    fn out(status: i32, stdout: &str, stderr: &str) -> Output {
        Output {
            status: Some(status),
            stdout: stdout.into(),
            stderr: stderr.into(),
        }
    }

    fn listed(names: &[&str]) -> Vec<Node> {
        names
            .iter()
            .map(|name| {
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name, "labels": {CONTROL_PLANE_LABEL: "true"}}
                }))
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn node_names_from_the_api_never_choose_the_ssh_destination_unchecked() {
        for hostile in [
            "ssh://root@evil.example:2222",
            "root@evil.example",
            "-oProxyCommand=id",
            "evil.example:22",
            "k8s01\u{1b}[2J",
        ] {
            let err = targets(&listed(&["k8s01", hostile]), None).unwrap_err();
            assert!(
                matches!(err, Error::UntrustedAnswer { .. }),
                "{hostile:?}: {err:?}"
            );
            assert!(err.hint().is_some());
            assert!(!err.to_string().contains('\u{1b}'), "{err}");
        }
        let ok = targets(&listed(&["k8s01", "k8s02.example"]), None).unwrap();
        assert_eq!(ok[1].host, "k8s02.example");
        // Named in `nodes`, a hostile node elsewhere in the list does not matter.
        let given = [NodeTarget {
            name: "k8s01".into(),
            host: Some("10.0.0.1".into()),
            port: None,
            user: None,
        }];
        let ok = targets(&listed(&["k8s01", "ssh://x@y"]), Some(&given)).unwrap();
        assert_eq!(ok.len(), 1);
    }

    #[test]
    fn a_node_the_api_lists_twice_is_refused_not_reached_twice() {
        let err = targets(&listed(&["k8s01", "k8s02", "k8s01"]), None).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }

    #[test]
    fn systemctl_show_is_read_by_key_in_systemds_own_format() {
        // systemd prints properties in its own order, not the -p order.
        let unit = parse_unit(
            "NRestarts=3\nActiveState=active\nSubState=running\n\
             ActiveEnterTimestamp=Sat 2026-12-05 21:20:07 UTC\n\
             InvocationID=5f0c3f1a0d6b4e6c9a1f2b3c4d5e6f70\n",
        );
        assert!(unit.is_active());
        assert_eq!(unit.text(), "active (running)");
        assert_eq!(unit.nrestarts, Some(3));
        assert_eq!(
            unit.active_since.unwrap().to_string(),
            "2026-12-05T21:20:07Z"
        );
        assert_eq!(
            unit.invocation.as_deref(),
            Some("5f0c3f1a0d6b4e6c9a1f2b3c4d5e6f70")
        );
        let down = parse_unit(
            "ActiveState=inactive\nSubState=dead\nNRestarts=0\nActiveEnterTimestamp=\nInvocationID=\n",
        );
        assert!(down.active_since.is_none());
        assert!(down.invocation.is_none());
        assert!(!down.is_active());
    }

    /// A command's real output, captured on a real systemd machine (tests/fixtures/node).
    fn captured(json: &str) -> Output {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        out(
            i32::try_from(v["rc"].as_i64().unwrap()).unwrap(),
            v["stdout"].as_str().unwrap(),
            v["stderr"].as_str().unwrap(),
        )
    }

    macro_rules! fixture {
        ($host:literal, $case:literal) => {
            captured(include_str!(concat!(
                "../tests/fixtures/node/",
                $host,
                "/",
                $case,
                ".json"
            )))
        };
    }

    #[test]
    fn systemctl_show_under_tz_utc_is_read_on_systemd_247_and_252() {
        for (active, unix, after_crash, restarting, after_manual, missing) in [
            (
                fixture!("bookworm-252", "show-active-env-tz-utc-lc-all-c"),
                Some(fixture!("bookworm-252", "show-active-unix")),
                fixture!(
                    "bookworm-252",
                    "show-after-auto-restart-env-tz-utc-lc-all-c"
                ),
                fixture!("bookworm-252", "show-auto-restart-env-tz-utc-lc-all-c"),
                fixture!(
                    "bookworm-252",
                    "show-after-manual-restart-env-tz-utc-lc-all-c"
                ),
                fixture!("bookworm-252", "show-not-found-env-tz-utc-lc-all-c"),
            ),
            (
                fixture!("bullseye-247", "show-active-env-tz-utc-lc-all-c"),
                None,
                fixture!(
                    "bullseye-247",
                    "show-after-auto-restart-env-tz-utc-lc-all-c"
                ),
                fixture!("bullseye-247", "show-auto-restart-env-tz-utc-lc-all-c"),
                fixture!(
                    "bullseye-247",
                    "show-after-manual-restart-env-tz-utc-lc-all-c"
                ),
                fixture!("bullseye-247", "show-not-found-env-tz-utc-lc-all-c"),
            ),
        ] {
            let up = parse_unit(&active.stdout);
            assert!(up.is_active(), "{up:?}");
            assert_eq!(up.nrestarts, Some(0));
            let since = up.active_since.expect("a timestamp");
            assert!(up.invocation.is_some());
            // The same whole second as --timestamp=unix, where that exists (252).
            if let Some(unix) = unix {
                assert_eq!(parse_unit(&unix.stdout).active_since, Some(since));
            }
            // A crash: activating (auto-restart) with the old invocation, then active again
            // with NRestarts 1 and a new invocation.
            let between = parse_unit(&restarting.stdout);
            assert_eq!(between.text(), "activating (auto-restart)");
            assert_eq!(between.invocation, up.invocation);
            let crashed = parse_unit(&after_crash.stdout);
            assert!(crashed.is_active());
            assert_eq!(crashed.nrestarts, Some(1));
            assert_ne!(crashed.invocation, up.invocation);
            assert!(crashed.active_since.unwrap() > since);
            // A manual restart resets NRestarts.
            let manual = parse_unit(&after_manual.stdout);
            assert_eq!(manual.nrestarts, Some(0));
            assert_ne!(manual.invocation, crashed.invocation);
            let gone = parse_unit(&missing.stdout);
            assert!(!gone.is_active());
            assert!(gone.invocation.is_none() && gone.active_since.is_none());
        }
        // systemd 247 has no --timestamp=unix: what kubemend used to ask for.
        let old = fixture!("bullseye-247", "show-active-unix");
        assert_eq!(old.status, Some(1));
        assert!(old.stderr.contains("Invalid value: unix."));
    }

    #[test]
    fn an_unprivileged_journal_read_is_recognised_on_systemd_247_and_252() {
        for hint in [
            fixture!("bookworm-252", "journal-short-unix-k8sadmin"),
            fixture!("bullseye-247", "journal-short-unix-k8sadmin"),
        ] {
            // What COUNT_JOURNAL's pipeline gets: journalctl's own stderr, the counts of
            // nothing.
            let mut counted = out(0, "locked=0 watch=0\n", &hint.stderr);
            counted.stderr.push_str("journalctl-exit=0\n");
            let why = parse_journal_counts(&counted).unwrap_err();
            assert!(why.contains("cannot read the system journal"), "{why}");
        }
        // The program on real journals (root reads them whole): the fake kubelite logs one
        // `database is locked` line at each of its starts.
        for journal in [
            fixture!("bookworm-252", "journal-short-unix-root"),
            fixture!("bullseye-247", "journal-short-unix-root"),
        ] {
            let expected = journal
                .stdout
                .lines()
                .filter(|l| l.contains(DATABASE_LOCKED))
                .count();
            assert!(expected > 0);
            let mut counted = awk_counts(&journal.stdout);
            counted.stderr.push_str("journalctl-exit=0\n");
            assert_eq!(
                parse_journal_counts(&counted),
                Ok(JournalCounts {
                    locked: expected,
                    watch_errors: 0
                })
            );
        }
    }

    /// [`COUNT_PROGRAM`] run by this machine's awk on `journal`.
    fn awk_counts(journal: &str) -> crate::ssh::Output {
        use std::io::Write as _;
        let mut child = std::process::Command::new("awk")
            .arg(COUNT_PROGRAM)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(journal.as_bytes())
            .unwrap();
        let done = child.wait_with_output().unwrap();
        out(
            done.status.code().unwrap(),
            &String::from_utf8(done.stdout).unwrap(),
            "",
        )
    }

    #[test]
    fn watch_errors_of_the_scheduler_and_controller_manager_are_counted_apart() {
        // Lines as kube-scheduler v1.34 prints them (klog, structured) in kubelite's journal.
        let journal = "\
1796505223.1 k8s02 microk8s.daemon-kubelite[9]: E1206 10:00:01.1 9 reflector.go:205] \
\"Failed to watch\" err=\"failed to list *v1.Pod: Get \\\"https://127.0.0.1:16443/api/v1/pods\\\": \
dial tcp 127.0.0.1:16443: connect: connection refused\" reflector=\"k8s.io/client-go/informers/factory.go:160\" type=\"*v1.Pod\"
1796505224.1 k8s02 microk8s.daemon-kubelite[9]: I1206 10:00:02.1 9 reflector.go:571] \
\"Warning: watch ended with error\" reflector=\"x\" type=\"*v1.Node\" err=\"an error on the server\"
1796505225.1 k8s02 microk8s.daemon-kubelite[9]: E1206 storage: exec (try: 500): Database is locked
1796505226.1 k8s02 microk8s.daemon-kubelite[9]: I1206 nothing to see
";
        let mut counted = awk_counts(journal);
        counted.stderr.push_str("journalctl-exit=0\n");
        assert_eq!(
            parse_journal_counts(&counted),
            Ok(JournalCounts {
                locked: 1,
                watch_errors: 2
            })
        );
    }

    #[test]
    fn dqlite_cluster_answers_of_a_real_cluster_are_read() {
        let cluster = fixture!("dqlite-1.11.5", "cluster-json-file-store");
        let members = parse_members(&cluster.stdout).expect("members");
        assert_eq!(members.iter().filter(|m| m.role == 0).count(), 3);
    }

    #[test]
    fn an_unreadable_nrestarts_is_unknown_not_zero() {
        assert_eq!(parse_unit("ActiveState=active\n").nrestarts, None);
        assert_eq!(parse_unit("NRestarts=[not set]\n").nrestarts, None);
        assert_eq!(parse_unit("").active, "unknown");
    }

    #[test]
    fn systemd_timestamps_are_read_in_utc_whatever_the_style() {
        for text in [
            "Sat 2026-12-05 21:20:07 UTC",
            "2026-12-05 21:20:07 UTC",
            "@1796505607",
        ] {
            assert_eq!(
                parse_systemd_timestamp(text).map(Timestamp::as_second),
                Some(1_796_505_607),
                "{text}"
            );
        }
        assert_eq!(
            parse_systemd_timestamp("Sat 2026-12-05 21:20:07.123456 UTC")
                .map(Timestamp::as_millisecond),
            Some(1_796_505_607_123)
        );
        // A local zone would be read wrongly: refused, not guessed.
        assert_eq!(parse_systemd_timestamp("Sat 2026-12-05 22:20:07 CET"), None);
        assert_eq!(parse_systemd_timestamp(""), None);
        assert_eq!(parse_systemd_timestamp("n/a"), None);
    }

    fn probe(control: Output, delegate: i32, confinement: Output) -> EscalationProbe {
        EscalationProbe {
            control,
            delegate: out(delegate, "", ""),
            confinement,
        }
    }

    fn classic() -> Output {
        out(0, "confinement: classic\n", "")
    }

    #[test]
    fn escalation_is_judged_as_run_kubelite_with_args_does() {
        // cgroup v2 without cpuset and no delegate.conf: a crash after the restart escalates.
        let risk = probe(out(0, "cpu io memory pids\n", ""), 1, classic()).judge();
        assert!(risk.risk);
        assert!(risk.why.unwrap().contains("delegate.conf"));
        // cpuset delegated, delegate.conf present, or strict confinement: never.
        assert!(
            !probe(out(0, "cpuset cpu io memory pids\n", ""), 1, classic())
                .judge()
                .risk
        );
        assert!(
            !probe(out(0, "cpu io memory\n", ""), 0, classic())
                .judge()
                .risk
        );
        assert!(
            !probe(
                out(0, "cpu io\n", ""),
                1,
                out(0, "confinement: strict\n", "")
            )
            .judge()
            .risk
        );
        // cgroup v1 (no such file: grep exits 2) and an empty file (grep exits 1): never.
        let missing = out(
            1,
            "",
            "cat: /sys/fs/cgroup/cgroup.subtree_control: No such file\n",
        );
        assert!(!probe(missing, 1, classic()).judge().risk);
        assert!(!probe(out(0, "", ""), 1, classic()).judge().risk);
        // No snap.yaml to read (grep fails): not strict, as upstream's grep pipeline decides.
        assert!(
            probe(out(0, "cpu io\n", ""), 1, out(2, "", "No such file"))
                .judge()
                .risk
        );
    }

    #[test]
    fn snap_changes_in_progress_are_found_in_either_time_format() {
        let current = "ID   Status  Spawn                 Ready                 Summary\n\
                       12   Done    2026-12-01T10:00:00Z  2026-12-01T10:01:00Z  Auto-refresh snap \"microk8s\"\n\
                       13   Doing   2026-12-05T21:00:00Z  -                     Auto-refresh snap \"microk8s\"\n\n";
        let changes = parse_snap_changes(current);
        assert_eq!(
            changes,
            [SnapChange {
                id: "13".into(),
                status: "Doing".into(),
                summary: "Auto-refresh snap \"microk8s\"".into()
            }]
        );
        assert!(snap_change_text(&changes).contains("snapd change 13 (Doing"));
        let older = "ID   Status  Spawn               Ready  Summary\n\
                     7    Undoing today at 10:00 UTC  -      Refresh snap \"microk8s\"\n\
                     8    Error   today at 09:00 UTC  today at 09:01 UTC  Install \"x\"\n";
        let changes = parse_snap_changes(older);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].status, "Undoing");
        assert_eq!(changes[0].summary, "Refresh snap \"microk8s\"");
        assert!(parse_snap_changes("").is_empty());
    }

    #[test]
    fn members_count_each_address_once_and_ids_past_2_63_parse() {
        let json = r#"[{"ID":18446744073709551615,"Address":"a:19001","Role":0},
                      {"ID":2,"Address":"b:19001","Role":1},
                      {"ID":3,"Address":"c:19001","Role":0},
                      {"ID":4,"Address":"c:19001","Role":0}]"#;
        let members = parse_members(json).unwrap();
        assert_eq!(members.len(), 3);
        assert_eq!(members.iter().filter(|m| m.role == 0).count(), 2);
        assert_eq!(parse_members("Error: no"), None);
    }

    #[test]
    fn info_yaml_gives_the_members_own_address() {
        assert_eq!(
            parse_info_address("Address: 10.0.0.1:19001\nID: 3297041220608546238\nRole: 0\n")
                .as_deref(),
            Some("10.0.0.1:19001")
        );
        assert_eq!(
            parse_info_address("Address: \"[fd00::1]:19001\"\n").as_deref(),
            Some("[fd00::1]:19001")
        );
        assert_eq!(parse_info_address("ID: 1\n"), None);
    }

    fn active_unit() -> Unit {
        parse_unit("ActiveState=active\nSubState=running\nInvocationID=abc\n")
    }

    const THREE: &str = r#"[{"ID":1,"Address":"127.0.1.1:19001","Role":0},
        {"ID":2,"Address":"127.0.1.2:19001","Role":0},{"ID":3,"Address":"127.0.1.3:19001","Role":0}]"#;

    #[test]
    fn dqlite_health_is_the_nodes_own_not_the_leaders_view() {
        let info = out(0, "Address: 127.0.1.2:19001\nID: 2\nRole: 0\n", "");
        let leader = out(0, "127.0.1.1:19001\n", "");
        let healthy = judge_dqlite(&info, active_unit(), &out(0, THREE, ""), &leader);
        assert!(healthy.problems.is_empty(), "{:?}", healthy.problems);
        assert_eq!(healthy.voters, Some(3));
        assert_eq!(healthy.own_voter, Some(true));
        assert_eq!(healthy.leader.as_deref(), Some("127.0.1.1:19001"));
        // Its own k8s-dqlite stopped: the leader still lists three voters.
        let stopped = parse_unit("ActiveState=inactive\nSubState=dead\n");
        let dead = judge_dqlite(&info, stopped, &out(0, THREE, ""), &leader);
        assert_eq!(dead.voters, Some(3));
        assert!(
            dead.problems[0].contains("is inactive (dead)"),
            "{:?}",
            dead.problems
        );
        // Its own member is a stand-by, or missing.
        let two = r#"[{"ID":1,"Address":"127.0.1.1:19001","Role":0},
            {"ID":2,"Address":"127.0.1.2:19001","Role":1},{"ID":3,"Address":"127.0.1.3:19001","Role":0}]"#;
        let standby = judge_dqlite(&info, active_unit(), &out(0, two, ""), &leader);
        assert_eq!(standby.own_voter, Some(false));
        assert!(
            standby
                .problems
                .iter()
                .any(|p| p.contains("not a voter (role stand-by)"))
        );
        assert!(standby.problems.iter().any(|p| p.contains("2 voter(s)")));
        // No leader: the CLI timed out on the node.
        let none = out(124, "", "no answer within 4s (3 tries);");
        let leaderless = judge_dqlite(&info, active_unit(), &out(0, THREE, ""), &none);
        assert!(leaderless.leader.is_none());
        assert!(leaderless.problems[0].contains("no leader: no answer within 4s"));
    }

    #[test]
    fn snapshot_sizes_and_live_data_are_read_as_each_cli_prints_them() {
        let (files, bytes) = parse_sizes(
            "235929600 snapshot-1-2048-1764581234\n128 snapshot-1-2048-1764581234.meta\n",
        );
        assert_eq!((files, bytes), (2, 235_929_728));
        assert_eq!(parse_sizes(""), (0, 0));
        assert_eq!(
            parse_sizes("18446744073709551615 a\n18446744073709551615 b\n"),
            (2, u64::MAX)
        );
        // go-dqlite v2/v3 (microk8s 1.29 on): a header row, then the value, tab-terminated.
        assert_eq!(
            parse_live_data("SUM(LENGTH(value))\t\n22858956\t\n"),
            Some(22_858_956)
        );
        // go-dqlite v1.20 (microk8s 1.28): the bare value.
        assert_eq!(parse_live_data("21800000\n"), Some(21_800_000));
        assert_eq!(parse_live_data("SUM(LENGTH(value))\t\nNULL\t\n"), None);
        assert_eq!(parse_live_data("SUM(LENGTH(value))\t\n-5\t\n"), None);
        assert_eq!(parse_live_data(""), None);
    }

    #[test]
    fn database_locked_lines_are_counted_on_the_node_and_an_unreadable_journal_is_no_zero() {
        assert!(COUNT_PROGRAM.contains(DATABASE_LOCKED));
        assert!(WATCH_ERRORS.iter().all(|w| COUNT_PROGRAM.contains(w)));
        assert_eq!(
            parse_journal_counts(&out(0, "locked=2 watch=1\n", "journalctl-exit=0\n")),
            Ok(JournalCounts {
                locked: 2,
                watch_errors: 1
            })
        );
        assert!(
            parse_journal_counts(&out(0, "2\n", "journalctl-exit=0\n"))
                .unwrap_err()
                .contains("not numbers")
        );
        let unprivileged = out(
            0,
            "locked=0 watch=0\n",
            "Hint: You are currently not seeing messages from other users and the system.\n      \
             Users in groups 'adm', 'systemd-journal' can see all messages.\n      \
             Pass -q to turn off this notice.\njournalctl-exit=0\n",
        );
        let why = parse_journal_counts(&unprivileged).unwrap_err();
        assert!(why.contains("cannot read the system journal"), "{why}");
        let failed = out(
            0,
            "locked=0 watch=0\n",
            "Failed to parse timestamp: @x\njournalctl-exit=1\n",
        );
        assert!(
            parse_journal_counts(&failed)
                .unwrap_err()
                .contains("exited 1")
        );
        let sudo = out(1, "", "sudo: a password is required\n");
        assert!(
            parse_journal_counts(&sudo)
                .unwrap_err()
                .contains("password")
        );
    }

    #[test]
    fn apiserver_args_give_the_authorization_mode_datastore_and_feature_gates() {
        let args = parse_apiserver_args(
            "# comment\n--authorization-mode=Node,RBAC\n\
             --etcd-servers=unix://${SNAP_DATA}/var/kubernetes/backend/kine.sock:12379\n\
             --feature-gates=ListFromCacheSnapshot=false,SizeBasedListCostEstimate=false\n\
             --feature-gates DetectCacheInconsistency=true\n",
        );
        assert_eq!(args.authorization_modes, ["Node", "RBAC"]);
        assert!(!args.always_allow());
        assert!(args.uses_kine());
        assert_eq!(args.missing_dqlite_gates(), ["DetectCacheInconsistency"]);
        let open = parse_apiserver_args("--authorization-mode=AlwaysAllow\n");
        assert!(open.always_allow());
        assert!(!open.uses_kine());
        assert_eq!(open.missing_dqlite_gates().len(), 3);
        assert!(parse_apiserver_args("--secure-port=16443\n").always_allow());
        assert!(!parse_apiserver_args("--etcd-servers=https://10.0.0.1:2379\n").uses_kine());
    }
}
