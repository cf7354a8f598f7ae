//! The test bed's Calico IPAM: `testcluster calico v3.13|v3.32` and `tests/cluster/calico-cni`,
//! the stand-in for Calico's CNI IPAM that calico_ipam's tests seed leaks with, proven against the
//! real API server for both shapes: the objects it writes are the ones libcalico-go writes for that
//! version (v3.32.1's accepted under upstream's structural schema), `del` undoes `add`, the two
//! half-done writes leave the orphans `check` reports, and concurrent churn stays consistent.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::collections::BTreeSet;
use std::process::{Output, Stdio};

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::Api;
use serde_json::{Value, json};

/// The node the pods of these tests run on (kwok gives them addresses from 10.1.2.0/24).
const NODE: &str = "k8s02";

/// What a run printed on stdout, as JSON; panics naming the command when it failed.
fn json_of(what: &str, out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: no JSON on stdout ({e})"))
}

/// `calico-cni ARGS`, which must succeed; its JSON.
fn cni(args: &[&str]) -> Value {
    json_of(&format!("calico-cni {args:?}"), &support::calico_cni(args))
}

/// `calico-cni check --json`: the exit code and the report.
fn check() -> (i32, Value) {
    let out = support::calico_cni(&["check", "--json"]);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().expect("an exit code"), report)
}

/// Asserts that `check` finds the IPAM consistent.
fn assert_consistent() {
    let (code, report) = check();
    assert_eq!(code, 0, "check found problems: {report:#}");
    assert_eq!(report["consistent"], true, "{report:#}");
}

/// A Calico object as JSON, or None when it does not exist.
fn calico_object(resource: &str, name: &str) -> Option<Value> {
    let out = support::testcluster(&[
        "kubectl",
        "get",
        &format!("{resource}.crd.projectcalico.org"),
        name,
        "-o",
        "json",
        "--ignore-not-found",
    ]);
    if out.status.success() && out.stdout.is_empty() {
        return None;
    }
    Some(json_of(&format!("kubectl get {resource} {name}"), &out))
}

/// The block's spec, or None.
fn block(cidr: &str) -> Option<Value> {
    let name = cidr.replace(['.', '/'], "-");
    calico_object("ipamblocks", &name).map(|b| b["spec"].clone())
}

/// An attribute index of a block's allocations.
fn index(allocation: &Value) -> usize {
    usize::try_from(allocation.as_u64().expect("an allocated ordinal")).unwrap()
}

/// The spec's keys.
fn keys(spec: &Value) -> BTreeSet<String> {
    spec.as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|&n| n.to_owned()).collect()
}

/// The ordinal of `ip` in the /26 block `cidr`.
fn ordinal(cidr: &str, ip: &str) -> usize {
    let last = |a: &str| -> usize { a.rsplit('.').next().unwrap().parse().unwrap() };
    last(ip) - last(cidr.split('/').next().unwrap())
}

fn pod_ns_name(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap(),
        pod.metadata.name.clone().unwrap(),
    )
}

fn pod_ip(pod: &Pod) -> String {
    pod.status.as_ref().unwrap().pod_ip.clone().unwrap()
}

/// The pod's annotations as they are now.
async fn annotations(client: &Client, pod: &Pod) -> Value {
    let (namespace, name) = pod_ns_name(pod);
    let now = Api::<Pod>::namespaced(client.clone(), &namespace)
        .get(&name)
        .await
        .expect("the pod");
    json!(now.metadata.annotations.unwrap_or_default())
}

/// One test's share of the test bed: the Calico shape held, and a running pod on `NODE` in a
/// namespace of the test's own.
struct Bed {
    _calico: support::Lock,
    _reaper: support::Reaper,
    client: Client,
    pod: Pod,
    namespace: String,
    name: String,
    ip: String,
}

impl Bed {
    async fn new(shape: &str, prefix: &str) -> Self {
        let calico = support::calico(shape);
        let client = support::client().await;
        let reaper = support::Reaper::new(prefix);
        let namespace = reaper.namespace(&client).await;
        let pod = support::calico_pod(&client, &namespace, NODE).await;
        let (namespace, name) = pod_ns_name(&pod);
        let ip = pod_ip(&pod);
        Self {
            _calico: calico,
            _reaper: reaper,
            client,
            pod,
            namespace,
            name,
            ip,
        }
    }
}

/// The block spec keys libcalico-go's Kubernetes backend writes: apiv3.IPAMBlockSpec
/// (lib/apis/v3/ipam_block.go@v3.13) and internalapi.IPAMBlockSpec
/// (lib/apis/internalapi/ipam_block.go@v3.32.1, affinityClaimTime and the sequence numbers added).
fn block_keys(shape: &str) -> BTreeSet<String> {
    let mut names = vec![
        "cidr",
        "affinity",
        "strictAffinity",
        "allocations",
        "unallocated",
        "attributes",
        "deleted",
    ];
    if shape == "v3.32" {
        names.extend([
            "affinityClaimTime",
            "sequenceNumber",
            "sequenceNumberForAllocation",
        ]);
    }
    set(&names)
}

/// `add` allocates the pod's kwok address as AssignIP does and annotates the pod as the CNI
/// plugin of that version does; every object is exactly what that version writes.
async fn add_writes_what_calico_writes(shape: &str) {
    let bed = Bed::new(shape, "ipam-add").await;
    let (namespace, name, ip) = (&bed.namespace, &bed.name, &bed.ip);

    let added = cni(&["add", namespace, name]);
    let handle = added["handle"].as_str().unwrap().to_owned();
    let cidr = added["block"].as_str().unwrap().to_owned();
    let container_id = added["container_id"].as_str().unwrap();
    assert_eq!(added["ip"], ip.as_str());
    assert_eq!(handle, format!("k8s-pod-network.{container_id}"));
    assert_eq!(container_id.len(), 64, "a sandbox ID has 64 hex digits");

    let spec = block(&cidr).expect("the pod's block");
    assert_eq!(keys(&spec), block_keys(shape), "{spec:#}");
    assert_eq!(spec["affinity"], format!("host:{NODE}"));
    assert_eq!(spec["strictAffinity"], false);
    let ord = ordinal(&cidr, ip);
    let attribute = &spec["attributes"][index(&spec["allocations"][ord])];
    assert_eq!(attribute["handle_id"], handle.as_str());
    let secondary = &attribute["secondary"];
    assert_eq!(secondary["node"], NODE);
    assert_eq!(secondary["pod"], name.as_str());
    assert_eq!(secondary["namespace"], namespace.as_str());
    let unallocated: Vec<u64> = serde_json::from_value(spec["unallocated"].clone()).unwrap();
    assert!(!unallocated.contains(&(ord as u64)), "{spec:#}");
    assert_eq!(spec["allocations"].as_array().unwrap().len(), 64);

    let handle_spec = calico_object("ipamhandles", &handle.to_lowercase())
        .expect("the pod's handle")["spec"]
        .clone();
    let pod_annotations = annotations(&bed.client, &bed.pod).await;
    assert_eq!(
        pod_annotations["cni.projectcalico.org/podIP"],
        format!("{ip}/32")
    );
    assert_eq!(
        pod_annotations["cni.projectcalico.org/podIPs"],
        format!("{ip}/32")
    );
    if shape == "v3.13" {
        assert_eq!(
            keys(secondary),
            set(&["node", "pod", "namespace"]),
            "{secondary}"
        );
        assert_eq!(
            handle_spec,
            json!({"handleID": handle, "block": {cidr.as_str(): 1}})
        );
        assert!(
            pod_annotations
                .get("cni.projectcalico.org/containerID")
                .is_none()
        );
    } else {
        assert_eq!(
            keys(secondary),
            set(&["node", "pod", "namespace", "timestamp"]),
            "{secondary}"
        );
        assert!(
            secondary["timestamp"]
                .as_str()
                .unwrap()
                .ends_with(" +0000 UTC"),
            "Go's time.Now().UTC().String(): {secondary}"
        );
        // The sequence number the address was given is the block's before the update that
        // wrote it (SetSequenceNumberForOrdinal, then updateBlock's increment).
        let sequence = spec["sequenceNumber"].as_u64().unwrap();
        assert_eq!(
            spec["sequenceNumberForAllocation"][ord.to_string()].as_u64(),
            Some(sequence - 1),
            "{spec:#}"
        );
        assert_eq!(
            handle_spec,
            json!({"handleID": handle, "block": {cidr.as_str(): 1}, "deleted": false})
        );
        assert_eq!(
            pod_annotations["cni.projectcalico.org/containerID"],
            container_id
        );
    }
    assert_consistent();
    cni(&["del", namespace, name]);
    support::delete_pod_now(&bed.client, &bed.pod).await;
    assert_consistent();
}

#[tokio::test]
async fn add_writes_the_block_handle_and_annotations_v3_13_2_writes() {
    add_writes_what_calico_writes("v3.13").await;
}

#[tokio::test]
async fn add_writes_the_block_handle_and_annotations_v3_32_1_writes() {
    add_writes_what_calico_writes("v3.32").await;
}

/// Under v3.32 the API server holds the IPAM CRDs to upstream's structural schema: a block
/// without a required field is refused, an unknown field is pruned. So the objects `add` wrote,
/// read back whole, were accepted under that schema; under v3.13 (no schema) anything goes.
#[tokio::test]
async fn v3_32_schema_refuses_an_invalid_block_and_v3_13_keeps_unknown_fields() {
    for (shape, refused) in [("v3.32", true), ("v3.13", false)] {
        let _calico = support::calico(shape);
        let name = support::unique("schema-probe");
        let probe = json!({
            "apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMHandle",
            "metadata": {"name": name},
            "spec": {"handleID": name, "block": {}, "unknownField": "kept?"},
        });
        let invalid = json!({
            "apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMBlock",
            "metadata": {"name": support::unique("invalid")},
            "spec": {"cidr": "10.1.200.0/26", "allocations": [], "unallocated": []},
        });
        let created = kubectl_create(&invalid);
        assert_eq!(created.status.success(), !refused, "{shape}: {created:?}");
        if !refused {
            delete_calico("ipamblocks", invalid["metadata"]["name"].as_str().unwrap());
        }
        let created = kubectl_create(&probe);
        assert!(created.status.success(), "{created:?}");
        let stored = calico_object("ipamhandles", &name).expect("the probe");
        assert_eq!(
            stored["spec"].get("unknownField").is_none(),
            refused,
            "{shape}: {stored:#}"
        );
        delete_calico("ipamhandles", &name);
    }
}

fn kubectl_create(object: &Value) -> Output {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("object.json");
    std::fs::write(&file, object.to_string()).expect("object file");
    // The API server's field validation off, as a client that sends unknown fields gets it
    // without asking: the schema decides (required fields, pruning).
    support::testcluster(&[
        "kubectl",
        "create",
        "--validate=ignore",
        "-f",
        file.to_str().unwrap(),
    ])
}

fn delete_calico(resource: &str, name: &str) {
    let out = support::testcluster(&[
        "kubectl",
        "delete",
        &format!("{resource}.crd.projectcalico.org"),
        name,
    ]);
    assert!(out.status.success(), "{out:?}");
}

/// `del` releases as ReleaseByHandle does: the block is as it was (its freed ordinal appended to
/// `unallocated`; on v3.32 the sequence number moved on once more and the freed ordinal's sequence
/// entry stays, as upstream leaves it) and the handle is gone; on v3.32 the pod's podIP
/// annotations are emptied, on v3.13 they stay.
async fn del_restores_what_add_wrote(shape: &str) {
    let bed = Bed::new(shape, "ipam-del").await;
    let (namespace, name, ip) = (&bed.namespace, &bed.name, &bed.ip);
    let added_to = cni(&["add", namespace, name]);
    let cidr = added_to["block"].as_str().unwrap().to_owned();
    let handle = added_to["handle"].as_str().unwrap().to_owned();
    let before_del = block(&cidr).unwrap();
    let ord = ordinal(&cidr, ip);

    let released = cni(&["del", namespace, name]);
    assert_eq!(released["released"], json!({cidr.as_str(): 1}));
    let after = block(&cidr).expect("a block with an affinity stays");
    assert!(after["allocations"][ord].is_null(), "{after:#}");
    let unallocated = after["unallocated"].as_array().unwrap();
    assert_eq!(unallocated.last().unwrap(), &json!(ord), "appended last");
    let attributes = after["attributes"].as_array().unwrap();
    assert!(
        attributes.iter().all(|a| a["handle_id"] != handle.as_str()),
        "the handle's attribute is dropped: {after:#}"
    );
    assert_eq!(
        attributes.len() + 1,
        before_del["attributes"].as_array().unwrap().len()
    );
    for (o, allocation) in after["allocations"].as_array().unwrap().iter().enumerate() {
        if o != ord {
            let was = &before_del["allocations"][o];
            let attribute = |b: &Value, a: &Value| b["attributes"][index(a)].clone();
            assert_eq!(allocation.is_null(), was.is_null(), "ordinal {o}");
            if !was.is_null() {
                assert_eq!(attribute(&after, allocation), attribute(&before_del, was));
            }
        }
    }
    assert!(calico_object("ipamhandles", &handle.to_lowercase()).is_none());
    let pod_annotations = annotations(&bed.client, &bed.pod).await;
    if shape == "v3.32" {
        assert_eq!(
            after["sequenceNumber"].as_u64(),
            before_del["sequenceNumber"].as_u64().map(|s| s + 1)
        );
        assert_eq!(
            after["sequenceNumberForAllocation"][ord.to_string()],
            before_del["sequenceNumberForAllocation"][ord.to_string()],
            "ReleaseByHandle leaves the freed ordinal's sequence entry"
        );
        assert_eq!(pod_annotations["cni.projectcalico.org/podIP"], "");
        assert_eq!(pod_annotations["cni.projectcalico.org/podIPs"], "");
        assert_eq!(
            pod_annotations["cni.projectcalico.org/containerID"],
            added_to["container_id"]
        );
        assert_consistent();
    } else {
        assert_eq!(
            pod_annotations["cni.projectcalico.org/podIP"],
            format!("{ip}/32")
        );
        // The pod still claims the address Calico no longer allocates: `check` says so until
        // the pod is gone, as calicoctl's "in use but not allocated" would.
        let (code, report) = check();
        assert_eq!(code, 1, "{report:#}");
        assert_eq!(
            report["problems"][0]["kind"], "pod_not_allocated",
            "{report:#}"
        );
    }
    support::delete_pod_now(&bed.client, &bed.pod).await;
    assert_consistent();
}

#[tokio::test]
async fn del_restores_the_block_and_deletes_the_handle_v3_13_2() {
    del_restores_what_add_wrote("v3.13").await;
}

#[tokio::test]
async fn del_restores_the_block_and_deletes_the_handle_v3_32_1() {
    del_restores_what_add_wrote("v3.32").await;
}

/// A CNI ADD that dies after the handle write (AssignIP writes the handle first) leaves a
/// handle counting an address no block has: `check` reports it, and ReleaseByHandle cannot
/// remove it (it frees only what blocks hold). The reverse, a DEL that dies after the block
/// write, leaves the handle counting an address the block no longer has.
async fn half_done_writes_leave_orphaned_handles(shape: &str) {
    let bed = Bed::new(shape, "ipam-orphan").await;
    let (namespace, name, ip) = (&bed.namespace, &bed.name, &bed.ip);

    let added = cni(&["add", namespace, name, "--stop-after-handle"]);
    let handle = added["handle"].as_str().unwrap().to_owned();
    let cidr = added["block"].as_str().unwrap().to_owned();
    let spec = block(&cidr).unwrap();
    assert!(
        spec["allocations"][ordinal(&cidr, ip)].is_null(),
        "{spec:#}"
    );
    let orphan_problem = |report: &Value| {
        report["problems"].as_array().unwrap().iter().any(|p| {
            p["kind"] == "handle_count"
                && p["message"].as_str().unwrap().starts_with(&format!(
                    "handle {handle} counts 1 in block {cidr}, the block has 0"
                ))
        })
    };
    let (code, report) = check();
    assert_eq!(code, 1, "{report:#}");
    assert!(orphan_problem(&report), "{report:#}");
    assert!(
        report["orphaned_handles"]
            .as_array()
            .unwrap()
            .contains(&json!(handle))
    );
    let released = cni(&["del", "--handle", &handle]);
    assert_eq!(released["released"], json!({cidr.as_str(): 0}));
    assert!(
        orphan_problem(&check().1),
        "del cannot remove an orphaned handle"
    );
    delete_calico("ipamhandles", &handle.to_lowercase());
    assert_consistent();

    cni(&["add", namespace, name]);
    cni(&["del", namespace, name, "--stop-after-block"]);
    let (code, report) = check();
    assert_eq!(code, 1, "{report:#}");
    assert!(orphan_problem(&report), "{report:#}");
    delete_calico("ipamhandles", &handle.to_lowercase());
    support::delete_pod_now(&bed.client, &bed.pod).await;
    assert_consistent();
}

#[tokio::test]
async fn half_done_cni_writes_leave_orphaned_handles_check_reports_v3_13_2() {
    half_done_writes_leave_orphaned_handles("v3.13").await;
}

#[tokio::test]
async fn half_done_cni_writes_leave_orphaned_handles_check_reports_v3_32_1() {
    half_done_writes_leave_orphaned_handles("v3.32").await;
}

/// Two churn writers on one block at once: each proves none of its allocations was lost, the
/// compare-and-swaps did collide, and the IPAM is consistent afterwards.
fn concurrent_churn_stays_consistent(shape: &str) {
    let _calico = support::calico(shape);
    let churn = || {
        support::calico_cni_command(&["churn", "k8s03", "--count", "40"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("calico-cni churn")
    };
    let (first, second) = (churn(), churn());
    let mut conflicts = 0;
    for child in [first, second] {
        let out = child.wait_with_output().expect("churn ran");
        let summary = json_of("calico-cni churn", &out);
        assert_eq!(summary["lost"], json!([]), "{summary:#}");
        assert_eq!(summary["duplicates"], json!([]), "{summary:#}");
        assert!(summary["allocated"].as_u64().unwrap() > 0, "{summary:#}");
        assert!(summary["released"].as_u64().unwrap() > 0, "{summary:#}");
        conflicts += summary["conflicts"].as_u64().unwrap();
    }
    assert!(conflicts > 0, "two writers on one block never collided");
    assert_consistent();
}

#[test]
fn concurrent_churn_loses_nothing_and_stays_consistent_v3_13_2() {
    concurrent_churn_stays_consistent("v3.13");
}

#[test]
fn concurrent_churn_loses_nothing_and_stays_consistent_v3_32_1() {
    concurrent_churn_stays_consistent("v3.32");
}
