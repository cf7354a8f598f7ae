//! calico_ipam against the test bed, on Calico's IPAM in both shapes (v3.13.2's schemaless CRDs
//! and v3.32.1's structural ones, `testcluster calico`), with the leaks made the way Calico makes
//! them (`tests/cluster/calico-cni`, the stand-in for Calico's CNI IPAM): a deleted pod's address,
//! a finished pod's address and a handle orphaned between the CNI's two writes are released; a
//! live pod's address (with a wrong node attribute), a handle written a moment ago, an address
//! allocated again between the two scans and the nodes' tunnel addresses are not. After every
//! run, the independent consistency check (`calico-cni check`, written from calicoctl's) passes.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::net::Ipv4Addr;
use std::process::{Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use serde_json::{Value, json};

/// The node the test pods run on (kwok gives them addresses from 10.1.2.0/24).
const NODE: &str = "k8s02";

/// What the runs take: two scans 3 s apart, handles older than 20 s.
const CONFIRM_AFTER: &str = "3s";
const MIN_AGE: Duration = Duration::from_secs(20);

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("crd.projectcalico.org", "v1", kind),
        plural,
    )
}

fn blocks(client: &Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &resource("IPAMBlock", "ipamblocks"))
}

fn handles(client: &Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &resource("IPAMHandle", "ipamhandles"))
}

/// Every block and handle by name, with its resourceVersion.
async fn versions(client: &Client) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for api in [blocks(client), handles(client)] {
        for o in api.list(&ListParams::default()).await.unwrap().items {
            out.insert((
                o.metadata.name.clone().unwrap(),
                o.metadata.resource_version.clone().unwrap(),
            ));
        }
    }
    out
}

/// The address at `ordinal` of a block whose first address is `base`.
fn address(base: Ipv4Addr, ordinal: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + u32::try_from(ordinal).unwrap())
}

/// A block's first address.
fn base_of(block: &Value) -> Ipv4Addr {
    let cidr = block["spec"]["cidr"].as_str().unwrap();
    cidr.split('/').next().unwrap().parse().unwrap()
}

/// Address → handle of every allocation.
async fn allocations(client: &Client) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for block in blocks(client)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
    {
        let block = serde_json::to_value(&block).unwrap();
        let spec = &block["spec"];
        for (ordinal, index) in spec["allocations"].as_array().unwrap().iter().enumerate() {
            let Some(index) = index.as_u64() else {
                continue;
            };
            let handle = spec["attributes"][usize::try_from(index).unwrap()]["handle_id"]
                .as_str()
                .unwrap_or_default();
            out.push((
                address(base_of(&block), ordinal).to_string(),
                handle.to_owned(),
            ));
        }
    }
    out
}

/// The block holding `ip`, as JSON, and the address's ordinal in it.
async fn block_of(client: &Client, ip: &str) -> (Value, usize) {
    let target: Ipv4Addr = ip.parse().unwrap();
    for block in blocks(client)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
    {
        let block = serde_json::to_value(&block).unwrap();
        let size = block["spec"]["allocations"].as_array().unwrap().len();
        let ordinal = u32::from(target).checked_sub(u32::from(base_of(&block)));
        if let Some(ordinal) = ordinal.map(|o| usize::try_from(o).unwrap())
            && ordinal < size
        {
            return (block, ordinal);
        }
    }
    panic!("no block holds {ip}");
}

/// Writes `block` back (a compare-and-swap on its resourceVersion).
async fn replace_block(client: &Client, block: Value) {
    let name = block["metadata"]["name"].as_str().unwrap().to_owned();
    blocks(client)
        .replace(
            &name,
            &PostParams::default(),
            &serde_json::from_value(block).unwrap(),
        )
        .await
        .unwrap();
}

fn handle_of(allocations: &[(String, String)], ip: &str) -> Option<String> {
    allocations
        .iter()
        .find(|(a, _)| a == ip)
        .map(|(_, h)| h.clone())
}

/// `calico-cni ARGS`, which must succeed; what it printed, as JSON.
fn cni(args: &[&str]) -> Value {
    let out = support::calico_cni(args);
    assert!(
        out.status.success(),
        "calico-cni {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// `calico-cni add` for `pod` (with `more` arguments); the handle it allocated under.
fn add(pod: &Pod, more: &[&str]) -> String {
    let (namespace, name) = (ns(pod), name(pod));
    let mut args = vec!["add", namespace.as_str(), name.as_str()];
    args.extend(more);
    cni(&args)["handle"]
        .as_str()
        .expect("add names its handle")
        .to_owned()
}

/// The independent consistency check passes.
fn assert_consistent(after: &str) {
    let out = support::calico_cni(&["check", "--json"]);
    assert!(
        out.status.success(),
        "the consistency check failed after {after}:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn ip_of(pod: &Pod) -> String {
    pod.status.as_ref().unwrap().pod_ip.clone().unwrap()
}

fn run(args: &Value) -> (i32, Value) {
    support::run_module("calico_ipam", args)
}

fn args(extra: &Value) -> Value {
    let mut args =
        json!({"confirm_after": CONFIRM_AFTER, "min_age": format!("{}s", MIN_AGE.as_secs())});
    for (k, v) in extra.as_object().unwrap() {
        args[k] = v.clone();
    }
    args
}

fn released_ips(result: &Value) -> BTreeSet<String> {
    result["released"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ip"].as_str().unwrap().to_owned())
        .collect()
}

fn deleted_handles(result: &Value) -> BTreeSet<String> {
    result["deleted_handles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_owned())
        .collect()
}

/// The leaks of the review, made as Calico makes them, and what must never be released.
struct Seeded {
    gone: Pod,
    done: Pod,
    live: Pod,
    live_handle: String,
    /// The handles of gone and done, deleted with their last address.
    released_handles: [String; 2],
    orphan: String,
}

async fn seed(client: &Client, namespace: &str) -> Seeded {
    // A pod deleted while its CNI DEL never ran: its address stays allocated on a live node.
    let gone = support::calico_pod(client, namespace, NODE).await;
    let gone_handle = add(&gone, &[]);
    // A pod that finished (Succeeded) whose address was never released.
    let done = support::calico_pod(client, namespace, NODE).await;
    let done_handle = add(&done, &[]);
    Api::<Pod>::namespaced(client.clone(), &ns(&done))
        .patch_status(
            &name(&done),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
        )
        .await
        .unwrap();
    // A live pod whose allocation names another node (projectcalico/calico#12257).
    let live = support::calico_pod(client, namespace, NODE).await;
    let live_handle = add(&live, &[]);
    set_node_attribute(client, &ip_of(&live), "k8s03").await;
    // A handle the CNI wrote before it stopped: counted, never in a block.
    let half = support::calico_pod(client, namespace, NODE).await;
    let orphan = add(&half, &["--stop-after-handle"]);
    support::delete_pod_now(client, &half).await;
    support::delete_pod_now(client, &gone).await;
    // Every seeded handle older than min_age.
    let newest = handles(client).get(&orphan.to_lowercase()).await.unwrap();
    support::until_older_than(&newest, MIN_AGE).await;
    Seeded {
        gone,
        done,
        live,
        live_handle,
        released_handles: [gone_handle, done_handle],
        orphan,
    }
}

fn ns(pod: &Pod) -> String {
    pod.metadata.namespace.clone().unwrap()
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap()
}

/// Rewrites the node of the allocation of `ip` (a compare-and-swap of its block).
async fn set_node_attribute(client: &Client, ip: &str, node: &str) {
    let (mut block, ordinal) = block_of(client, ip).await;
    let index = block["spec"]["allocations"][ordinal]
        .as_u64()
        .expect("allocated");
    block["spec"]["attributes"][usize::try_from(index).unwrap()]["secondary"]["node"] = json!(node);
    replace_block(client, block).await;
}

/// One test's share of the test bed: the Calico shape held (a clean IPAM), and a namespace of
/// the test's own, cleaned up after it; the IPAM is left clean again for the tests and
/// diagnoses that follow (the leaks a test seeds would otherwise be found by them).
struct Bed {
    shape: &'static str,
    _calico: support::Lock,
    _reaper: support::Reaper,
    client: Client,
    namespace: String,
}

impl Drop for Bed {
    fn drop(&mut self) {
        // Before the lock is released (fields drop after this).
        let _ = support::testcluster(&["calico", self.shape]);
    }
}

impl Bed {
    async fn new(shape: &'static str) -> Self {
        let calico = support::calico(shape);
        let client = support::client().await;
        let reaper = support::Reaper::new("calico-ipam");
        let namespace = reaper.namespace(&client).await;
        Self {
            shape,
            _calico: calico,
            _reaper: reaper,
            client,
            namespace,
        }
    }
}

/// The seeded leaks are released, in check mode first (the same plan, nothing written); what
/// must stay stays; a second run changes nothing; the consistency check passes after each run.
async fn leaks_are_released_and_nothing_else(shape: &'static str) {
    let bed = Bed::new(shape).await;
    let (client, namespace) = (bed.client.clone(), bed.namespace.clone());
    let seeded = seed(&client, &namespace).await;
    let tunnels: Vec<(String, String)> = allocations(&client)
        .await
        .into_iter()
        .filter(|(_, h)| h.starts_with("ipip-tunnel-addr-"))
        .collect();
    assert_eq!(tunnels.len(), 3, "a tunnel address per node: {tunnels:?}");
    let leaked: BTreeSet<String> = [ip_of(&seeded.gone), ip_of(&seeded.done)].into();
    // The orphan, and the handles whose last address was released.
    let orphaned: BTreeSet<String> = seeded
        .released_handles
        .iter()
        .chain([&seeded.orphan])
        .cloned()
        .collect();

    let before = versions(&client).await;
    let mut check_args = args(&json!({}));
    check_args["_ansible_check_mode"] = json!(true);
    let (code, check) = run(&check_args);
    assert_eq!(code, 0, "{check:#}");
    assert_eq!(released_ips(&check), leaked, "{check:#}");
    assert_eq!(deleted_handles(&check), orphaned, "{check:#}");
    assert_eq!(
        versions(&client).await,
        before,
        "check mode wrote: {check:#}"
    );

    let (code, real) = run(&args(&json!({})));
    assert_eq!(code, 0, "{real:#}");
    assert_eq!(real["changed"], json!(true), "{real:#}");
    assert_eq!(
        released_ips(&real),
        leaked,
        "the plan of check mode: {real:#}"
    );
    assert_eq!(deleted_handles(&real), orphaned, "{real:#}");
    assert_eq!(real["verified"], json!(true), "{real:#}");
    assert_eq!(
        real["api_group"],
        json!("crd.projectcalico.org/v1"),
        "{real:#}"
    );
    // Every object written is returned whole, as it was.
    for written in real["written"].as_array().unwrap() {
        assert!(written["object"]["spec"].is_object(), "{written:#}");
        assert!(
            written["object"]["metadata"]["uid"].is_string(),
            "{written:#}"
        );
    }
    let after = allocations(&client).await;
    for ip in &leaked {
        assert_eq!(handle_of(&after, ip), None, "{ip} is still allocated");
    }
    assert!(
        handles(&client)
            .get_opt(&seeded.orphan.to_lowercase())
            .await
            .unwrap()
            .is_none(),
        "the orphaned handle is still there"
    );
    // Never released: the live pod's address (its node attribute wrong), the tunnels.
    assert_eq!(
        handle_of(&after, &ip_of(&seeded.live)),
        Some(seeded.live_handle.clone())
    );
    for (ip, handle) in &tunnels {
        assert_eq!(handle_of(&after, ip).as_ref(), Some(handle), "tunnel {ip}");
    }
    assert_consistent("the real run");

    let (code, again) = run(&args(&json!({})));
    assert_eq!(code, 0, "{again:#}");
    assert_eq!(again["changed"], json!(false), "{again:#}");
    assert!(released_ips(&again).is_empty(), "{again:#}");
    assert_consistent("the second run");
}

#[tokio::test]
async fn calico_ipam_releases_seeded_leaks_and_nothing_else_on_v3_13() {
    Box::pin(leaks_are_released_and_nothing_else("v3.13")).await;
}

#[tokio::test]
async fn calico_ipam_releases_seeded_leaks_and_nothing_else_on_v3_32() {
    Box::pin(leaks_are_released_and_nothing_else("v3.32")).await;
}

/// Allocates `ip` again, in its block, under `handle` for `pod` (a new sandbox): the handle
/// first, then the block, as Calico's AssignIP does.
async fn allocate_again(client: &Client, ip: &str, handle: &str, pod: &Pod) {
    let (mut block, ordinal) = block_of(client, ip).await;
    let cidr = block["spec"]["cidr"].as_str().unwrap().to_owned();
    support::create(
        &handles(client),
        json!({
            "apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMHandle",
            "metadata": {"name": handle.to_lowercase()},
            "spec": {"handleID": handle, "block": {cidr: 1}, "deleted": false},
        }),
    )
    .await;
    let spec = &mut block["spec"];
    let attributes = spec["attributes"].as_array_mut().unwrap();
    attributes.push(json!({"handle_id": handle, "secondary": {
        "namespace": ns(pod), "node": NODE, "pod": name(pod)}}));
    let index = attributes.len() - 1;
    spec["allocations"][ordinal] = json!(index);
    let free: Vec<Value> = spec["unallocated"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o.as_u64() != u64::try_from(ordinal).ok())
        .cloned()
        .collect();
    spec["unallocated"] = json!(free);
    if let Some(sequence) = spec["sequenceNumber"].as_u64() {
        spec["sequenceNumberForAllocation"][ordinal.to_string()] = json!(sequence);
        spec["sequenceNumber"] = json!(sequence + 1);
    }
    replace_block(client, block).await;
}

/// An address released and allocated again to a new pod (a new handle) between the two scans,
/// and a handle written a moment ago (not yet in its block) are left alone.
async fn what_changes_between_the_scans_or_is_young_is_left_alone(shape: &'static str) {
    let bed = Bed::new(shape).await;
    let (client, namespace) = (bed.client.clone(), bed.namespace.clone());
    // Every pod first: kwok hands a deleted pod's address to the next pod, which Calico, whose
    // address it still is, never would.
    let moved = support::calico_pod(&client, &namespace, NODE).await;
    let young = support::calico_pod(&client, &namespace, NODE).await;
    let newcomer = support::calico_pod(&client, &namespace, NODE).await;
    let moved_handle = add(&moved, &[]);
    support::delete_pod_now(&client, &moved).await;
    let handle = handles(&client)
        .get(&moved_handle.to_lowercase())
        .await
        .unwrap();
    support::until_older_than(&handle, MIN_AGE).await;
    // A handle written a moment ago, not yet in its block.
    let young_handle = add(&young, &["--stop-after-handle"]);

    let mut cli = support::kubemend()
        .args([
            "calico-ipam",
            "--confirm-after",
            "8s",
            "--min-age",
            &format!("{}s", MIN_AGE.as_secs()),
            "--output",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Between the scans: CNI DEL of the old sandbox, then a new pod gets the address.
    let mut stderr = BufReader::new(cli.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("second scan in") {
        seen.clear();
        assert!(
            stderr.read_line(&mut seen).unwrap() > 0,
            "kubemend ended before its second scan"
        );
    }
    cni(&["del", "--handle", &moved_handle]);
    let new_handle = format!("k8s-pod-network.{}", "f".repeat(64));
    allocate_again(&client, &ip_of(&moved), &new_handle, &newcomer).await;
    let out: Output = cli.wait_with_output().unwrap();
    let (code, result) = support::result_of(&out);
    assert_eq!(code, 0, "{result:#}");
    assert!(
        !released_ips(&result).contains(&ip_of(&moved)),
        "{result:#}"
    );
    // Seen as leaked by the first scan, changed in the second: unconfirmed.
    let moved_note = format!("{} ", ip_of(&moved));
    assert!(
        result["unconfirmed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["object"].as_str().unwrap().starts_with(&moved_note)),
        "{result:#}"
    );
    let after = allocations(&client).await;
    assert_eq!(handle_of(&after, &ip_of(&moved)), Some(new_handle.clone()));
    // The young handle: too young to judge.
    assert!(
        !deleted_handles(&result).contains(&young_handle),
        "{result:#}"
    );
    assert!(
        handles(&client)
            .get_opt(&young_handle.to_lowercase())
            .await
            .unwrap()
            .is_some()
    );
    // Undo what the test wrote by hand, then the check.
    cni(&["del", "--handle", &new_handle]);
    // A handle in no block cannot be released by handle (calico-cni del, as Calico): delete it.
    handles(&client)
        .delete(&young_handle.to_lowercase(), &DeleteParams::default())
        .await
        .unwrap();
    assert_consistent("the run and the clean-up");
}

#[tokio::test]
async fn calico_ipam_leaves_what_changed_between_scans_and_young_handles_on_v3_13() {
    what_changes_between_the_scans_or_is_young_is_left_alone("v3.13").await;
}

#[tokio::test]
async fn calico_ipam_leaves_what_changed_between_scans_and_young_handles_on_v3_32() {
    what_changes_between_the_scans_or_is_young_is_left_alone("v3.32").await;
}

/// Leaks of deleted pods, older than min_age.
async fn deleted_pod_leaks(client: &Client, namespace: &str, n: usize) -> BTreeSet<String> {
    // Every pod before any is deleted: kwok hands a deleted pod's address to the next pod.
    let mut pods = Vec::new();
    for _ in 0..n {
        pods.push(support::calico_pod(client, namespace, NODE).await);
    }
    let mut ips = BTreeSet::new();
    let mut last = None;
    for pod in &pods {
        last = Some(add(pod, &[]));
        ips.insert(ip_of(pod));
    }
    for pod in &pods {
        support::delete_pod_now(client, pod).await;
    }
    let handle = handles(client)
        .get(&last.unwrap().to_lowercase())
        .await
        .unwrap();
    support::until_older_than(&handle, MIN_AGE).await;
    ips
}

/// A writer allocating and releasing in the same block during the run: no update is lost, no
/// address is given twice, and the seeded leaks are released.
async fn a_concurrent_writer_loses_nothing(shape: &'static str) {
    let bed = Bed::new(shape).await;
    let (client, namespace) = (bed.client.clone(), bed.namespace.clone());
    let leaked = deleted_pod_leaks(&client, &namespace, 3).await;
    let churn = support::calico_cni_command(&["churn", NODE, "--seconds", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, result) = run(&args(&json!({"confirm_after": "2s"})));
    let churned = churn.wait_with_output().unwrap();
    assert!(
        churned.status.success(),
        "the concurrent writer lost an allocation:\n{}\n{}",
        String::from_utf8_lossy(&churned.stdout),
        String::from_utf8_lossy(&churned.stderr)
    );
    assert_eq!(code, 0, "{result:#}");
    assert_eq!(released_ips(&result), leaked, "{result:#}");
    assert_consistent("a run beside a concurrent writer");
}

#[tokio::test]
async fn calico_ipam_beside_a_concurrent_writer_loses_nothing_on_v3_13() {
    a_concurrent_writer_loses_nothing("v3.13").await;
}

#[tokio::test]
async fn calico_ipam_beside_a_concurrent_writer_loses_nothing_on_v3_32() {
    a_concurrent_writer_loses_nothing("v3.32").await;
}

/// More releases than max_releases: nothing written, the count said.
async fn over_max_releases_nothing_is_released(shape: &'static str) {
    let bed = Bed::new(shape).await;
    let (client, namespace) = (bed.client.clone(), bed.namespace.clone());
    let leaked = deleted_pod_leaks(&client, &namespace, 2).await;
    let before = versions(&client).await;
    let (code, result) = run(&args(&json!({"max_releases": 1})));
    assert_ne!(code, 0, "{result:#}");
    let msg = result["msg"].as_str().unwrap();
    assert!(
        msg.contains("2 release(s) qualify") && msg.contains("nothing was released"),
        "{msg}"
    );
    assert_eq!(result["changed"], json!(false), "{result:#}");
    assert_eq!(
        versions(&client).await,
        before,
        "something was written: {result:#}"
    );
    // Raised, they go.
    let (code, result) = run(&args(&json!({"max_releases": 2})));
    assert_eq!(code, 0, "{result:#}");
    assert_eq!(released_ips(&result), leaked, "{result:#}");
    assert_consistent("the run within max_releases");
}

#[tokio::test]
async fn calico_ipam_over_max_releases_releases_nothing_on_v3_13() {
    over_max_releases_nothing_is_released("v3.13").await;
}

#[tokio::test]
async fn calico_ipam_over_max_releases_releases_nothing_on_v3_32() {
    over_max_releases_nothing_is_released("v3.32").await;
}

/// diagnose's calico_ipam check: the seeded leaks per node, the orphaned handle and the pool's
/// use as findings naming calico_ipam, and as Prometheus gauges; nothing released.
#[tokio::test]
async fn diagnose_reports_leaks_per_node_orphans_and_pool_use() {
    let bed = Bed::new("v3.32").await;
    let (client, namespace) = (bed.client.clone(), bed.namespace.clone());
    let seeded = seed(&client, &namespace).await;
    let before = versions(&client).await;
    let (code, result) = support::run_module(
        "diagnose",
        &json!({"checks": ["calico_ipam"], "ipam_min_age": format!("{}s", MIN_AGE.as_secs())}),
    );
    assert_eq!(code, 0, "{result:#}");
    let finding = |id: &str| {
        result["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == id)
            .unwrap_or_else(|| panic!("no finding {id}: {result:#}"))
            .clone()
    };
    let node = finding(&format!("calico_ipam:node/{NODE}"));
    assert_eq!(node["severity"], "warning", "{node:#}");
    assert_eq!(node["data"]["count"], json!(2), "{node:#}");
    let ips: BTreeSet<String> = serde_json::from_value(node["data"]["ips"].clone()).unwrap();
    assert_eq!(ips, [ip_of(&seeded.gone), ip_of(&seeded.done)].into());
    assert_eq!(node["fix"]["module"], "calico_ipam", "{node:#}");
    let orphans = finding("calico_ipam:ipamhandles");
    assert_eq!(
        orphans["data"]["handles"],
        json!([seeded.orphan]),
        "{orphans:#}"
    );
    let pool = finding("calico_ipam:ippool/default-ipv4-ippool");
    // 3 tunnels and the live, done and gone pods' addresses: 6 of 65,536.
    assert_eq!(pool["data"]["allocated"], json!(6), "{pool:#}");
    assert_eq!(pool["severity"], "info", "{pool:#}");
    assert_eq!(versions(&client).await, before, "diagnose wrote");

    let out = support::kubemend()
        .args([
            "diagnose",
            "--checks",
            "calico_ipam",
            "--output",
            "prometheus",
        ])
        .args(["--ipam-min-age", &format!("{}s", MIN_AGE.as_secs())])
        .output()
        .unwrap();
    let metrics = String::from_utf8(out.stdout).unwrap();
    for line in [
        "kubemend_calico_ipam_leaked_addresses 2",
        "kubemend_calico_ipam_orphaned_handles 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    assert!(
        metrics.lines().any(|l| l.starts_with(
            "kubemend_calico_ipam_pool_utilisation_percent{pool=\"default-ipv4-ippool\"} "
        )),
        "{metrics}"
    );
}
