//! One scan of Calico's IPAM against what uses the addresses, classified the way calicoctl's
//! `ipam check` does (calicoctl/calicoctl/commands/ipam/check.go@v3.32.1) with
//! kube-controllers' stricter rule for pods (kube-controllers/pkg/controllers/node/ipam.go
//! @v3.32.1 `allocationIsValid`): an allocation is leaked only when nothing uses its address
//! and its owner is gone or finished; a handle is orphaned when no allocation references it.
//! Pure: the caller reads the objects, this decides.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use schemars::JsonSchema;
use serde::Serialize;

use super::block::{Allocation, Block, Cidr, Handle, WINDOWS_RESERVED_HANDLE};

/// The prefix of the handles Calico's CNI plugin allocates pod addresses under
/// (cni-plugin/internal/pkg/utils/utils.go@v3.13.2: `k8s-pod-network.<containerID>`).
pub const POD_HANDLE_PREFIX: &str = "k8s-pod-network.";

/// The handle prefixes calico-node allocates a node's tunnel addresses under, each followed by
/// the node name (node/pkg/allocateip/allocateip.go@v3.32.1).
pub const TUNNEL_HANDLE_PREFIXES: [&str; 5] = [
    "ipip-tunnel-addr-",
    "vxlan-tunnel-addr-",
    "vxlan-v6-tunnel-addr-",
    "wireguard-tunnel-addr-",
    "wireguard-v6-tunnel-addr-",
];

/// The Node annotations that hold a node's tunnel addresses (libcalico-go/lib/backend/k8s/
/// conversion/constants.go@v3.32.1).
pub const TUNNEL_ANNOTATIONS: [&str; 5] = [
    "projectcalico.org/IPv4IPIPTunnelAddr",
    "projectcalico.org/IPv4VXLANTunnelAddr",
    "projectcalico.org/IPv6VXLANTunnelAddr",
    "projectcalico.org/IPv4WireguardInterfaceAddr",
    "projectcalico.org/IPv6WireguardInterfaceAddr",
];

/// What a handle is for, by its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandleKind {
    /// A pod's addresses (`k8s-pod-network.<containerID>`).
    Pod,
    /// A node's tunnel address, with the node's name.
    Tunnel(String),
    /// Windows' reserved addresses: never released.
    WindowsReserved,
    /// Anything else (other CNI plugins, tools, `calicoctl ipam` by hand).
    Other,
}

impl HandleKind {
    /// Classifies a handle id.
    #[must_use]
    pub fn of(handle: &str) -> Self {
        if handle.starts_with(POD_HANDLE_PREFIX) {
            return Self::Pod;
        }
        if handle.eq_ignore_ascii_case(WINDOWS_RESERVED_HANDLE) {
            return Self::WindowsReserved;
        }
        TUNNEL_HANDLE_PREFIXES
            .iter()
            .find_map(|p| handle.strip_prefix(p))
            .map_or(Self::Other, |node| Self::Tunnel(node.to_owned()))
    }
}

/// A pod as far as its addresses go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Node it is bound to.
    pub node: Option<String>,
    /// Succeeded or Failed: Calico's CNI has released (or should have released) its addresses.
    pub finished: bool,
    /// Runs in the host's network: its address is the node's, not Calico's.
    pub host_network: bool,
    /// Its addresses: `status.podIPs`, else `status.podIP`, else the annotations
    /// `cni.projectcalico.org/podIPs` / `podIP` (libcalico-go/lib/backend/k8s/conversion/
    /// conversion.go@v3.32.1 `getPodIPs`).
    pub ips: Vec<IpAddr>,
}

/// An IPPool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// Name.
    pub name: String,
    /// `spec.cidr`.
    pub cidr: Cidr,
    /// `spec.disabled`.
    pub disabled: bool,
}

/// What one scan reads.
#[derive(Debug, Default)]
pub struct Inputs {
    /// Blocks that read valid.
    pub blocks: Vec<Block>,
    /// Blocks that did not: name and why.
    pub invalid_blocks: Vec<(String, String)>,
    /// Handles by `spec.handleID`.
    pub handles: BTreeMap<String, Handle>,
    /// Pods.
    pub pods: Vec<PodView>,
    /// Nodes by name, with their tunnel addresses.
    pub nodes: BTreeMap<String, Vec<IpAddr>>,
    /// LoadBalancer ingress addresses of Services (Calico's LoadBalancer controller, v3.30+,
    /// allocates them; any Service's counts as in use).
    pub load_balancer_ips: BTreeSet<IpAddr>,
    /// IPPools.
    pub pools: Vec<Pool>,
}

/// What the scan judges about one allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Leak {
    /// The address.
    pub ip: String,
    /// Its block (object name).
    pub block: String,
    /// The block's CIDR.
    pub block_cidr: String,
    /// Its ordinal in the block.
    pub ordinal: usize,
    /// Its handle.
    pub handle: String,
    /// Its sequence number (v3.23+ blocks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// The node the allocation records (else the block's affinity).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `namespace/name` of the pod it was allocated to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Why it is leaked.
    pub reason: String,
}

impl Leak {
    /// What must be the same in the second scan for the leak to be confirmed.
    #[must_use]
    pub fn key(&self) -> (String, usize, String, Option<u64>) {
        (
            self.block.clone(),
            self.ordinal,
            self.handle.clone(),
            self.sequence,
        )
    }
}

/// A handle no allocation references.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Orphan {
    /// `spec.handleID`.
    pub handle: String,
    /// Object name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// resourceVersion when found.
    pub resource_version: String,
    /// Seconds since it was created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<i64>,
    /// What it claims: block CIDR → addresses.
    pub blocks: BTreeMap<String, i64>,
}

/// Something reported and never fixed, or left alone, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Note {
    /// The address, handle or block.
    pub object: String,
    /// What is wrong or why it is left alone.
    pub reason: String,
}

/// A pool's use.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct PoolUse {
    /// Name.
    pub name: String,
    /// CIDR.
    pub cidr: String,
    /// Disabled pools take no new allocations.
    pub disabled: bool,
    /// Addresses in the pool.
    pub size: u128,
    /// Blocks carved from it.
    pub blocks: usize,
    /// Addresses allocated in its blocks.
    pub allocated: usize,
    /// Of those, leaked.
    pub leaked: usize,
    /// allocated / size, in percent.
    pub utilisation_percent: f64,
}

/// Everything one scan found.
#[derive(Debug, Default, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Findings {
    /// Allocations nothing uses whose owner is gone: release candidates.
    pub leaked: Vec<Leak>,
    /// Handles no allocation references, older than min_age: release candidates.
    pub orphaned: Vec<Orphan>,
    /// Allocations and handles not released, and why (a live pod, a young handle, a tunnel
    /// address of an existing node).
    pub left_alone: Vec<Note>,
    /// Addresses in use by a pod or node, inside an active pool, with no allocation.
    pub in_use_not_allocated: Vec<Note>,
    /// Handles allocations name that do not exist as objects.
    pub missing_handles: Vec<Note>,
    /// Blocks that are not valid; never written, and their handles never judged.
    pub invalid_blocks: Vec<Note>,
    /// Blocks with no allocation whose affine node is gone (kube-controllers collects them).
    pub empty_blocks_of_deleted_nodes: Vec<Note>,
    /// Each pool's use.
    pub pools: Vec<PoolUse>,
    /// Allocations in all blocks.
    pub allocations: usize,
    /// Handles.
    pub handles: usize,
    /// Blocks.
    pub blocks: usize,
}

/// The choices that change the judgement.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Now, Unix seconds.
    pub now: i64,
    /// Handles younger than this (seconds) are left alone, and so are the allocations under
    /// them (v3.13 allocations carry no time: their handle's stands for it).
    pub min_age: i64,
    /// Also judge tunnel addresses of nodes that exist.
    pub tunnel_addresses: bool,
    /// Also judge handles that are neither a pod's nor a tunnel's.
    pub other_handles: bool,
}

/// Judges one scan.
#[must_use]
pub fn classify(inputs: &Inputs, rules: Rules) -> Findings {
    let mut out = Findings {
        blocks: inputs.blocks.len() + inputs.invalid_blocks.len(),
        handles: inputs.handles.len(),
        ..Findings::default()
    };
    let pods: BTreeMap<(&str, &str), &PodView> = inputs
        .pods
        .iter()
        .map(|p| ((p.namespace.as_str(), p.name.as_str()), p))
        .collect();
    // What uses an address: live pods, node tunnels, load balancers.
    let mut in_use: BTreeMap<IpAddr, String> = BTreeMap::new();
    for pod in inputs
        .pods
        .iter()
        .filter(|p| !p.finished && !p.host_network)
    {
        for ip in &pod.ips {
            in_use.insert(*ip, format!("pod {}/{}", pod.namespace, pod.name));
        }
    }
    for (node, ips) in &inputs.nodes {
        for ip in ips {
            in_use.insert(*ip, format!("node {node} (tunnel)"));
        }
    }
    for ip in &inputs.load_balancer_ips {
        in_use
            .entry(*ip)
            .or_insert_with(|| "a LoadBalancer Service".into());
    }

    let mut allocated: BTreeSet<IpAddr> = BTreeSet::new();
    let mut referenced: BTreeSet<&str> = BTreeSet::new();
    let known = |handle: &str| {
        inputs
            .handles
            .get_key_value(handle)
            .map(|(k, _)| k.as_str())
    };
    let mut leaked_per_block: BTreeMap<&str, usize> = BTreeMap::new();
    for block in &inputs.blocks {
        if block.allocated_count() == 0
            && let Some(node) = block.affine_node()
            && !inputs.nodes.contains_key(node)
        {
            out.empty_blocks_of_deleted_nodes.push(Note {
                object: format!("block {} ({})", block.name, block.cidr),
                reason: format!("no allocation, affine to node {node}, which is gone"),
            });
        }
        for allocation in block.allocated() {
            out.allocations += 1;
            allocated.insert(allocation.ip);
            if let Some(handle) = &allocation.handle {
                if let Some(id) = known(handle) {
                    referenced.insert(id);
                } else {
                    out.missing_handles.push(Note {
                        object: format!("handle {handle}"),
                        reason: format!(
                            "{} in block {} is allocated under it, but no IPAMHandle exists",
                            allocation.ip, block.name
                        ),
                    });
                }
            }
            match judge(&allocation, inputs, &pods, &in_use, rules) {
                Judgement::InUse => {}
                Judgement::Leaked(reason) => {
                    *leaked_per_block.entry(block.name.as_str()).or_default() += 1;
                    out.leaked.push(leak(block, &allocation, reason));
                }
                Judgement::LeftAlone(reason) => out.left_alone.push(Note {
                    object: format!("{} in block {}", allocation.ip, block.name),
                    reason,
                }),
            }
        }
    }

    judge_handles(inputs, &referenced, rules, &mut out);
    for (name, why) in &inputs.invalid_blocks {
        out.invalid_blocks.push(Note {
            object: format!("block {name}"),
            reason: why.clone(),
        });
    }
    let active: Vec<&Pool> = inputs.pools.iter().filter(|p| !p.disabled).collect();
    for (ip, user) in &in_use {
        if !allocated.contains(ip) && active.iter().any(|p| p.cidr.contains(*ip)) {
            out.in_use_not_allocated.push(Note {
                object: ip.to_string(),
                reason: format!("used by {user}, inside an active pool, with no allocation"),
            });
        }
    }
    out.pools = pool_use(inputs, &leaked_per_block);
    out
}

/// Handles: orphaned when nothing references them, unless a block that could is unreadable,
/// the handle is younger than min_age, or it is of a kind left alone.
fn judge_handles(inputs: &Inputs, referenced: &BTreeSet<&str>, rules: Rules, out: &mut Findings) {
    let unreadable = inputs.invalid_blocks.len();
    for (id, handle) in &inputs.handles {
        if referenced.contains(id.as_str()) {
            continue;
        }
        let object = format!("handle {id}");
        if unreadable > 0 {
            out.left_alone.push(Note {
                object,
                reason: format!(
                    "no readable block references it, but {unreadable} block(s) are invalid and \
                     may"
                ),
            });
            continue;
        }
        let age = handle.created.map(|c| rules.now - c);
        if age.is_none_or(|a| a < rules.min_age) {
            out.left_alone.push(Note {
                object,
                reason: format!(
                    "no block references it yet; younger than min_age ({}s): Calico writes the \
                     handle before the block",
                    age.unwrap_or(0)
                ),
            });
            continue;
        }
        match HandleKind::of(id) {
            HandleKind::WindowsReserved => continue,
            HandleKind::Tunnel(node)
                if inputs.nodes.contains_key(&node) && !rules.tunnel_addresses =>
            {
                out.left_alone.push(Note {
                    object,
                    reason: format!(
                        "tunnel handle of node {node}, which exists (tunnel_addresses is off)"
                    ),
                });
                continue;
            }
            HandleKind::Other if !rules.other_handles => {
                out.left_alone.push(Note {
                    object,
                    reason: "not a pod's nor a tunnel's handle (other_handles is off)".into(),
                });
                continue;
            }
            _ => {}
        }
        out.orphaned.push(Orphan {
            handle: id.clone(),
            name: handle.name.clone(),
            uid: handle.uid.clone(),
            resource_version: handle.resource_version.clone(),
            age_seconds: age,
            blocks: handle.blocks.clone(),
        });
    }
}

/// Each pool's blocks, allocations and leaks.
fn pool_use(inputs: &Inputs, leaked_per_block: &BTreeMap<&str, usize>) -> Vec<PoolUse> {
    let mut uses = Vec::new();
    for pool in &inputs.pools {
        let mine: Vec<&Block> = inputs
            .blocks
            .iter()
            .filter(|b| b.cidr.ip(0).is_some_and(|first| pool.cidr.contains(first)))
            .collect();
        let allocated: usize = mine.iter().map(|b| b.allocated_count()).sum();
        let leaked: usize = mine
            .iter()
            .map(|b| leaked_per_block.get(b.name.as_str()).copied().unwrap_or(0))
            .sum();
        let size = pool.cidr.size();
        #[allow(clippy::cast_precision_loss, reason = "a percentage, two decimals")]
        let utilisation = ((allocated as f64) * 10_000.0 / (size as f64)).round() / 100.0;
        uses.push(PoolUse {
            name: pool.name.clone(),
            cidr: pool.cidr.to_string(),
            disabled: pool.disabled,
            size,
            blocks: mine.len(),
            allocated,
            leaked,
            utilisation_percent: utilisation,
        });
    }
    uses
}

enum Judgement {
    InUse,
    Leaked(String),
    LeftAlone(String),
}

fn judge(
    allocation: &Allocation,
    inputs: &Inputs,
    pods: &BTreeMap<(&str, &str), &PodView>,
    in_use: &BTreeMap<IpAddr, String>,
    rules: Rules,
) -> Judgement {
    if in_use.contains_key(&allocation.ip) {
        return Judgement::InUse;
    }
    let Some(handle) = &allocation.handle else {
        return Judgement::LeftAlone("allocated with no handle: cannot be released safely".into());
    };
    // v3.13 allocations carry no time: a young handle stands for a young allocation.
    if let Some(h) = inputs.handles.get(handle)
        && h.created.is_none_or(|c| rules.now - c < rules.min_age)
    {
        return Judgement::LeftAlone(format!(
            "not in use, but its handle {handle} is younger than min_age"
        ));
    }
    match HandleKind::of(handle) {
        HandleKind::WindowsReserved => Judgement::InUse,
        HandleKind::Tunnel(node) => {
            if !inputs.nodes.contains_key(&node) {
                Judgement::Leaked(format!("tunnel address of node {node}, which is gone"))
            } else if rules.tunnel_addresses {
                Judgement::Leaked(format!(
                    "tunnel address of node {node}, which no longer names it in its annotations"
                ))
            } else {
                Judgement::LeftAlone(format!(
                    "tunnel address of node {node}, which exists but does not name it \
                     (tunnel_addresses is off)"
                ))
            }
        }
        HandleKind::Other if !rules.other_handles => Judgement::LeftAlone(format!(
            "handle {handle} is neither a pod's nor a tunnel's (other_handles is off)"
        )),
        HandleKind::Other => Judgement::Leaked("nothing uses it (other_handles)".into()),
        HandleKind::Pod => match allocation.pod() {
            None => Judgement::LeftAlone(
                "a pod-network handle without pod attributes: kube-controllers counts it valid"
                    .into(),
            ),
            Some((namespace, name)) => match pods.get(&(namespace, name)) {
                None => Judgement::Leaked(format!("its pod {namespace}/{name} is gone")),
                Some(pod) if pod.finished => {
                    Judgement::Leaked(format!("its pod {namespace}/{name} has finished"))
                }
                Some(pod) => Judgement::LeftAlone(format!(
                    "its pod {namespace}/{name} exists (on {}, with {}): never released while it \
                     lives",
                    pod.node.as_deref().unwrap_or("no node"),
                    if pod.ips.is_empty() {
                        "no address yet".to_owned()
                    } else {
                        pod.ips
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                )),
            },
        },
    }
}

fn leak(block: &Block, allocation: &Allocation, reason: String) -> Leak {
    Leak {
        ip: allocation.ip.to_string(),
        block: block.name.clone(),
        block_cidr: block.cidr.to_string(),
        ordinal: allocation.ordinal,
        handle: allocation.handle.clone().unwrap_or_default(),
        sequence: allocation.sequence,
        node: allocation
            .node()
            .or_else(|| block.affine_node())
            .map(str::to_owned),
        pod: allocation.pod().map(|(ns, n)| format!("{ns}/{n}")),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const NOW: i64 = 1_765_000_000;
    const OLD: &str = "2025-01-01T00:00:00Z";

    fn rules() -> Rules {
        Rules {
            now: NOW,
            min_age: 900,
            tunnel_addresses: false,
            other_handles: false,
        }
    }

    fn attr(handle: &str, ns: &str, pod: &str, node: &str) -> Value {
        json!({"handle_id": handle, "secondary": {"namespace": ns, "pod": pod, "node": node}})
    }

    /// 10.1.2.0/29 on k8s02: .0 pod ci/gone, .1 pod ci/done (Succeeded), .2 pod ci/live
    /// (recorded on k8s03, a wrong node), .3 the tunnel of k8s02, .4 the tunnel of k8s09 (gone),
    /// .5 ci/young's (young handle), .6 under a handle with no object, .7 free.
    fn inputs() -> Inputs {
        let block = Block::from_object(json!({
            "metadata": {"name": "10-1-2-0-29", "uid": "b", "resourceVersion": "1"},
            "spec": {"cidr": "10.1.2.0/29", "affinity": "host:k8s02",
                "allocations": [0, 1, 2, 3, 4, 5, 6, null], "unallocated": [7],
                "attributes": [
                    attr("k8s-pod-network.gone", "ci", "gone", "k8s02"),
                    attr("k8s-pod-network.done", "ci", "done", "k8s02"),
                    attr("k8s-pod-network.live", "ci", "live", "k8s03"),
                    {"handle_id": "ipip-tunnel-addr-k8s02", "secondary": {"node": "k8s02", "type": "ipipTunnelAddress"}},
                    {"handle_id": "ipip-tunnel-addr-k8s09", "secondary": {"node": "k8s09", "type": "ipipTunnelAddress"}},
                    attr("k8s-pod-network.young", "ci", "young", "k8s02"),
                    attr("k8s-pod-network.nohandle", "ci", "nohandle", "k8s02")
                ]}
        }))
        .expect("valid");
        let handle = |id: &str, created: &str| {
            Handle::from_object(json!({
                "metadata": {"name": id, "uid": format!("uid-{id}"), "resourceVersion": "5",
                             "creationTimestamp": created},
                "spec": {"handleID": id, "block": {"10.1.2.0/29": 1}}
            }))
        };
        let young = "2025-12-06T05:40:00Z"; // NOW - 400 s
        let handles = [
            handle("k8s-pod-network.gone", OLD),
            handle("k8s-pod-network.done", OLD),
            handle("k8s-pod-network.live", OLD),
            handle("ipip-tunnel-addr-k8s02", OLD),
            handle("ipip-tunnel-addr-k8s09", OLD),
            handle("k8s-pod-network.young", young),
            handle("k8s-pod-network.orphan", OLD),
            handle("k8s-pod-network.fresh", young),
            handle("someone-else", OLD),
        ]
        .into_iter()
        .map(|h| (h.handle_id.clone(), h))
        .collect();
        let pod = |name: &str, ip: &str, finished: bool| PodView {
            namespace: "ci".into(),
            name: name.into(),
            node: Some("k8s02".into()),
            finished,
            host_network: false,
            ips: vec![ip.parse().expect("ip")],
        };
        Inputs {
            blocks: vec![block],
            invalid_blocks: Vec::new(),
            handles,
            pods: vec![
                // Finished pods keep their status IPs; Calico's CNI released them.
                pod("done", "10.1.2.1", true),
                // Alive with another address: never judged on the mismatch.
                pod("live", "10.1.2.9", false),
                // Uses an address no block allocates.
                pod("unallocated", "10.1.3.7", false),
            ],
            nodes: [("k8s02".to_owned(), Vec::new())].into_iter().collect(),
            load_balancer_ips: BTreeSet::new(),
            pools: vec![Pool {
                name: "default-ipv4-ippool".into(),
                cidr: Cidr::parse("10.1.0.0/16").expect("cidr"),
                disabled: false,
            }],
        }
    }

    fn reason_of<'a>(notes: &'a [Note], object: &str) -> &'a str {
        notes
            .iter()
            .find(|n| n.object.starts_with(object))
            .map_or("", |n| n.reason.as_str())
    }

    #[test]
    fn leaks_are_addresses_nothing_uses_whose_owner_is_gone_or_finished() {
        let found = classify(&inputs(), rules());
        let leaked: Vec<(&str, &str)> = found
            .leaked
            .iter()
            .map(|l| (l.ip.as_str(), l.handle.as_str()))
            .collect();
        assert_eq!(
            leaked,
            [
                ("10.1.2.0", "k8s-pod-network.gone"),
                ("10.1.2.1", "k8s-pod-network.done"),
                ("10.1.2.4", "ipip-tunnel-addr-k8s09"),
                ("10.1.2.6", "k8s-pod-network.nohandle"),
            ]
        );
        assert_eq!(found.leaked[0].pod.as_deref(), Some("ci/gone"));
        assert_eq!(found.leaked[0].node.as_deref(), Some("k8s02"));
        assert!(found.leaked[1].reason.contains("finished"));
        assert!(found.leaked[2].reason.contains("k8s09, which is gone"));
        assert_eq!(found.allocations, 7);
    }

    #[test]
    fn a_live_pod_a_young_handle_and_an_existing_nodes_tunnel_are_left_alone() {
        let found = classify(&inputs(), rules());
        let left = &found.left_alone;
        assert!(
            reason_of(left, "10.1.2.2 ").contains("ci/live exists"),
            "{left:?}"
        );
        assert!(
            reason_of(left, "10.1.2.3 ").contains("tunnel address of node k8s02"),
            "{left:?}"
        );
        assert!(
            reason_of(left, "10.1.2.5 ").contains("younger than min_age"),
            "{left:?}"
        );
        assert!(
            reason_of(left, "handle k8s-pod-network.fresh").contains("younger"),
            "{left:?}"
        );
        assert!(
            reason_of(left, "handle someone-else").contains("other_handles is off"),
            "{left:?}"
        );
    }

    #[test]
    fn a_handle_no_allocation_references_is_orphaned_once_old_enough() {
        let found = classify(&inputs(), rules());
        let orphans: Vec<&str> = found.orphaned.iter().map(|o| o.handle.as_str()).collect();
        assert_eq!(orphans, ["k8s-pod-network.orphan"]);
        assert_eq!(found.orphaned[0].uid, "uid-k8s-pod-network.orphan");
        let all = Rules {
            other_handles: true,
            ..rules()
        };
        let found = classify(&inputs(), all);
        let orphans: Vec<&str> = found.orphaned.iter().map(|o| o.handle.as_str()).collect();
        assert_eq!(orphans, ["k8s-pod-network.orphan", "someone-else"]);
    }

    #[test]
    fn an_invalid_block_stops_judging_handles_it_may_reference() {
        let mut inputs = inputs();
        inputs
            .invalid_blocks
            .push(("10-1-9-0-26".into(), "spec.cidr is missing".into()));
        let found = classify(&inputs, rules());
        assert!(found.orphaned.is_empty(), "{:?}", found.orphaned);
        assert_eq!(found.invalid_blocks.len(), 1);
        assert!(reason_of(&found.left_alone, "handle k8s-pod-network.orphan").contains("invalid"));
    }

    #[test]
    fn what_is_never_fixed_is_reported() {
        let found = classify(&inputs(), rules());
        assert_eq!(
            reason_of(&found.missing_handles, "handle k8s-pod-network.nohandle"),
            "10.1.2.6 in block 10-1-2-0-29 is allocated under it, but no IPAMHandle exists"
        );
        assert!(reason_of(&found.in_use_not_allocated, "10.1.3.7").contains("pod ci/unallocated"));
        let pool = &found.pools[0];
        assert_eq!(
            (pool.size, pool.blocks, pool.allocated, pool.leaked),
            (65_536, 1, 7, 4)
        );
        assert!(
            (pool.utilisation_percent - 0.01).abs() < f64::EPSILON,
            "{pool:?}"
        );
    }

    #[test]
    fn an_empty_block_of_a_deleted_node_is_reported() {
        let mut inputs = inputs();
        inputs.blocks.push(
            Block::from_object(json!({
                "metadata": {"name": "10-1-9-0-30"},
                "spec": {"cidr": "10.1.9.0/30", "affinity": "host:k8s09",
                         "allocations": [null, null, null, null], "unallocated": [0, 1, 2, 3],
                         "attributes": []}
            }))
            .expect("valid"),
        );
        let found = classify(&inputs, rules());
        assert!(
            reason_of(&found.empty_blocks_of_deleted_nodes, "block 10-1-9-0-30").contains("k8s09")
        );
    }

    #[test]
    fn handle_kinds_follow_calicos_prefixes() {
        assert_eq!(HandleKind::of("k8s-pod-network.abc"), HandleKind::Pod);
        assert_eq!(
            HandleKind::of("vxlan-tunnel-addr-n1"),
            HandleKind::Tunnel("n1".into())
        );
        assert_eq!(
            HandleKind::of("wireguard-v6-tunnel-addr-n1"),
            HandleKind::Tunnel("n1".into())
        );
        assert_eq!(
            HandleKind::of("Windows-Reserved-IPAM-Handle"),
            HandleKind::WindowsReserved
        );
        assert_eq!(HandleKind::of("my-handle"), HandleKind::Other);
    }
}
