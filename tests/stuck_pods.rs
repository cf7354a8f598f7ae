//! stuck_pods against the test-bed cluster.
//!
//! Every test works in its own namespace and passes it as `namespaces` (plus a label selector
//! of its own where it also looks into kube-system), so runs never see another test's pods.
//! Pending pods the scheduler never sees are made the way the test bed reproduces the
//! incident's lost watch: a schedulerName no scheduler serves. Pods stuck Terminating come from
//! a node whose kubelite is stopped (under that node's lock), or from the test bed's
//! kubelet-backlog annotation on a Ready node.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kubemend::actions::stuck_pods::{StuckPods, scheduler_lease};
use kubemend::actions::{Action as _, Context};
use kubemend::outcome::Outcome;
use serde_json::{Value, json};

/// Annotation that makes the test bed's kubelet never confirm a pod's deletion.
const BACKLOG: &str = "testbed.kubemend.io/kubelet-backlog";

/// kubemend's own connection to the test bed, for driving the action from the library.
async fn connect() -> kubemend::client::Cluster {
    kubemend::client::connect(&kubemend::client::ClusterArgs {
        kubeconfig: Some(support::cluster().kubeconfig.display().to_string()),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// The test bed, a client, and a fresh namespace for one test.
async fn setup(prefix: &str) -> (Client, String) {
    support::cluster();
    let client = support::client().await;
    let namespace = support::namespace(&client, prefix).await;
    (client, namespace)
}

/// A pod spec that kwok runs, with a short termination grace so that a plain delete sets a
/// deletionTimestamp one second ahead.
fn pod_spec(extra: &Value) -> Value {
    let mut spec = json!({
        "automountServiceAccountToken": false,
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": "busybox"}],
    });
    for (key, value) in extra.as_object().unwrap() {
        spec[key] = value.clone();
    }
    spec
}

/// A scheduler name that no scheduler serves: pods asking for it stay Pending, unseen.
fn lost_scheduler() -> String {
    support::unique("no-such-scheduler")
}

/// A ReplicaSet `name` (pods labelled `app: name`) with `spec` extras.
async fn replicaset(client: &Client, namespace: &str, name: &str, replicas: i32, spec: &Value) {
    replicaset_labelled(client, namespace, name, replicas, &json!({}), spec).await;
}

/// A ReplicaSet `name` (pods labelled `app: name` plus `labels`) with `spec` extras.
async fn replicaset_labelled(
    client: &Client,
    namespace: &str,
    name: &str,
    replicas: i32,
    labels: &Value,
    spec: &Value,
) {
    let mut pod_labels = json!({"app": name});
    for (key, value) in labels.as_object().unwrap() {
        pod_labels[key] = value.clone();
    }
    support::create(
        &Api::<ReplicaSet>::namespaced(client.clone(), namespace),
        json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec(spec)},
            },
        }),
    )
    .await;
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap()
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap()
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

/// Waits until `count` pods match `selector` and `ready`, and returns them.
async fn wait_pods(
    client: &Client,
    namespace: &str,
    selector: &str,
    count: usize,
    ready: impl Fn(&Pod) -> bool,
) -> Vec<Pod> {
    let api = Api::<Pod>::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(selector);
    support::wait_until(
        &format!("{count} pod(s) {selector} in {namespace}"),
        Duration::from_secs(60),
        || async {
            let pods = api.list(&params).await.ok()?.items;
            let matching: Vec<Pod> = pods.into_iter().filter(|p| ready(p)).collect();
            (matching.len() == count).then_some(matching)
        },
    )
    .await
}

fn running(pod: &Pod) -> bool {
    phase(pod) == "Running" && pod.metadata.deletion_timestamp.is_none()
}

fn pending(pod: &Pod) -> bool {
    phase(pod) == "Pending" && pod.metadata.deletion_timestamp.is_none()
}

/// A plain (graceful) delete, retried while the API is briefly unavailable (the VIP moving off
/// a node whose kubelite just stopped).
async fn delete(pods: &Api<Pod>, name: &str) {
    support::wait_until(
        &format!("pod {name} deleted"),
        Duration::from_secs(30),
        || async {
            match pods.delete(name, &DeleteParams::default()).await {
                Err(kube::Error::Api(status)) if status.code == 404 => Some(()),
                result => result.ok().map(|_| ()),
            }
        },
    )
    .await;
}

/// Whether a pod with this name and UID still exists.
async fn exists(client: &Client, namespace: &str, name: &str, uid: &str) -> bool {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .unwrap()
        .is_some_and(|p| p.metadata.uid.as_deref() == Some(uid))
}

/// Runs `kubemend module stuck_pods ARGS_FILE`.
fn run_module_subcommand(args: &Value) -> (i32, Value) {
    let dir = tempfile::tempdir().unwrap();
    let args_file = dir.path().join("args.json");
    std::fs::write(&args_file, serde_json::to_vec(args).unwrap()).unwrap();
    let output = support::kubemend()
        .args(["module", "stuck_pods"])
        .arg(&args_file)
        .output()
        .unwrap();
    support::result_of(&output)
}

/// Runs `kubemend stuck-pods ARGS --output json`.
fn run_cli(args: &[&str]) -> (i32, Value) {
    let output = support::kubemend()
        .arg("stuck-pods")
        .args(args)
        .args(["--output", "json"])
        .output()
        .unwrap();
    support::result_of(&output)
}

/// The entries of a result list (`deleted`, `left_alone`, `seen_by_scheduler`) for a UID.
fn entry<'a>(result: &'a Value, list: &str, uid: &str) -> Option<&'a Value> {
    result[list]
        .as_array()
        .unwrap_or_else(|| panic!("no list {list} in {result}"))
        .iter()
        .find(|e| e["uid"] == json!(uid))
}

fn uids(result: &Value, list: &str) -> Vec<String> {
    result[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["uid"].as_str().unwrap().to_owned())
        .collect()
}

/// Deletes the namespace, first force-deleting what would keep it: pods held by the
/// kubelet-backlog annotation or by finalizers.
async fn cleanup(client: &Client, namespace: &str) {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let _ = Api::<StatefulSet>::namespaced(client.clone(), namespace)
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
    let _ = Api::<ReplicaSet>::namespaced(client.clone(), namespace)
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
    for pod in pods.list(&ListParams::default()).await.unwrap().items {
        if pod.metadata.finalizers.is_some() {
            let _ = pods
                .patch(
                    &name(&pod),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                )
                .await;
        }
        let _ = pods
            .delete(&name(&pod), &DeleteParams::default().grace_period(0))
            .await;
    }
    let _ = Api::<Namespace>::all(client.clone())
        .delete(namespace, &DeleteParams::default())
        .await;
}

fn stop_kubelite(node: &str) {
    support::ssh_ok(node, "sudo -n snap stop microk8s.daemon-kubelite");
}

/// Waits until the node is not Ready (20 s node-monitor grace). `testcluster up`, which every
/// test binary runs when it starts, brings a stopped node back: stop it again when that happens.
async fn wait_not_ready(client: &Client, node: &str) {
    support::wait_until(
        &format!("{node} not Ready"),
        Duration::from_secs(180),
        || async {
            if support::unit_property(node, "ActiveState") != "inactive" {
                stop_kubelite(node);
            }
            node_ready(client, node).await.filter(|s| s != "True")
        },
    )
    .await;
}

async fn node_ready(client: &Client, node: &str) -> Option<String> {
    let node = Api::<Node>::all(client.clone()).get(node).await.ok()?;
    node.status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status)
}

/// A ReplicaSet `web` (2 pods) and a StatefulSet `db` (1 pod), all running on k8s03.
async fn web_and_db_on_k8s03(client: &Client, namespace: &str) -> (Vec<Pod>, Pod) {
    let on_k8s03 = json!({"nodeSelector": {"kubernetes.io/hostname": "k8s03"}});
    replicaset(client, namespace, "web", 2, &on_k8s03).await;
    support::create(
        &Api::<StatefulSet>::namespaced(client.clone(), namespace),
        json!({
            "metadata": {"name": "db"},
            "spec": {
                "replicas": 1,
                "serviceName": "db",
                "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}}, "spec": pod_spec(&on_k8s03)},
            },
        }),
    )
    .await;
    let web = wait_pods(client, namespace, "app=web", 2, running).await;
    let mut db = wait_pods(client, namespace, "app=db", 1, running).await;
    (web, db.remove(0))
}

#[tokio::test]
async fn stuck_pods_deletes_a_replicaset_pod_terminating_on_a_stopped_node_past_the_grace_only() {
    support::cluster();
    let _node = support::node_lock("k8s03");
    let (client, namespace) = setup("stuck-term").await;
    let (web, db) = web_and_db_on_k8s03(&client, &namespace).await;
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace);

    stop_kubelite("k8s03");
    // Deleted while the node is down: nobody confirms, they stay Terminating.
    let (old, recent) = (&web[0], &web[1]);
    delete(&pods, &name(old)).await;
    delete(&pods, &name(&db)).await;
    wait_not_ready(&client, "k8s03").await;
    // Deleted just now: inside a 10 s grace.
    delete(&pods, &name(recent)).await;

    let args = json!({
        "namespaces": [namespace],
        "kinds": ["terminating"],
        "terminating_grace": "10s",
    });
    let (code, result) = support::run_module("stuck_pods", &args);
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["changed"], json!(true), "{result}");
    assert_eq!(uids(&result, "deleted"), vec![uid(old)], "{result}");
    let deleted = entry(&result, "deleted", &uid(old)).unwrap();
    assert_eq!(deleted["node"], json!("k8s03"));
    assert_eq!(deleted["node_state"], json!("Unknown"));
    assert!(deleted["node_lease_age_seconds"].as_i64().unwrap() >= 10);
    assert!(
        deleted["owner"]
            .as_str()
            .unwrap()
            .starts_with("ReplicaSet/web"),
        "{deleted}"
    );
    assert!(
        deleted["reason"].as_str().unwrap().contains("Terminating"),
        "{deleted}"
    );
    assert_eq!(deleted["manifest"]["metadata"]["uid"], json!(uid(old)));
    assert_eq!(deleted["gone"], json!(true));
    assert_eq!(result["verified"], json!(true));
    let sts = entry(&result, "left_alone", &uid(&db)).expect("the StatefulSet pod reported");
    assert!(
        sts["reason"]
            .as_str()
            .unwrap()
            .contains("allow_statefulset"),
        "{sts}"
    );

    assert!(!exists(&client, &namespace, &name(old), &uid(old)).await);
    assert!(
        exists(&client, &namespace, &name(recent), &uid(recent)).await,
        "the pod inside the grace was deleted"
    );
    // The ReplicaSet keeps two pods that are not being deleted: a replacement took its place.
    let replacements = wait_pods(&client, &namespace, "app=web", 2, |p| {
        p.metadata.deletion_timestamp.is_none()
    })
    .await;
    assert!(replacements.iter().all(|p| uid(p) != uid(old)));

    // allow_statefulset: its node is not Ready, so the StatefulSet pod goes and comes back.
    let args = json!({
        "namespaces": [namespace],
        "kinds": ["terminating"],
        "terminating_grace": "10s",
        "label_selector": "app=db",
        "allow_statefulset": true,
    });
    let (code, result) = support::run_module("stuck_pods", &args);
    assert_eq!(code, 0, "{result}");
    assert_eq!(uids(&result, "deleted"), vec![uid(&db)], "{result}");
    let recreated = wait_pods(&client, &namespace, "app=db", 1, |p| {
        p.metadata.deletion_timestamp.is_none()
    })
    .await;
    assert_eq!(name(&recreated[0]), "db-0");
    assert_ne!(uid(&recreated[0]), uid(&db));

    cleanup(&client, &namespace).await;
}

#[tokio::test]
async fn stuck_pods_deletes_a_replicaset_pod_the_scheduler_never_saw_and_it_is_replaced() {
    let (client, namespace) = setup("stuck-pending").await;
    let scheduler = lost_scheduler();
    replicaset(
        &client,
        &namespace,
        "lost",
        1,
        &json!({"schedulerName": scheduler}),
    )
    .await;
    let lost = wait_pods(&client, &namespace, "app=lost", 1, pending).await;
    let lost = &lost[0];
    support::until_older_than(lost, Duration::from_secs(1)).await; // past pending_age

    // Check mode (CLI): exit 2, reports the pod with its manifest and a deletion diff, deletes
    // nothing.
    let (code, check) = run_cli(&[
        "--check",
        "--diff",
        "--namespaces",
        &namespace,
        "--kinds",
        "pending",
        "--pending-age",
        "1s",
    ]);
    assert_eq!(code, 2, "{check}");
    assert_eq!(check["changed"], json!(true));
    assert_eq!(uids(&check, "deleted"), vec![uid(lost)], "{check}");
    assert_eq!(check["diff"]["after"], json!(""));
    assert!(
        check["diff"]["before"]
            .as_str()
            .unwrap()
            .contains(&format!("name: {}", name(lost))),
        "{check}"
    );
    assert_eq!(check["verified"], Value::Null);
    assert!(exists(&client, &namespace, &name(lost), &uid(lost)).await);

    // For real, as `kubemend module`, with a backup.
    let backups = tempfile::tempdir().unwrap();
    let args = json!({
        "namespaces": [namespace],
        "kinds": ["pending"],
        "pending_age": "1s",
        "backup_dir": backups.path(),
    });
    let (code, result) = run_module_subcommand(&args);
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["changed"], json!(true), "{result}");
    let deleted = entry(&result, "deleted", &uid(lost)).expect("the lost pod deleted");
    assert_eq!(deleted["kind"], json!("pending"));
    assert_eq!(deleted["scheduler"], json!(scheduler));
    assert_eq!(deleted["node"], Value::Null);
    assert_eq!(deleted["gone"], json!(true));
    assert!(
        deleted["scheduler_lease"]
            .as_str()
            .unwrap()
            .contains("no lease"),
        "{deleted}"
    );
    let warnings = result["warnings"].to_string();
    assert!(
        warnings.contains(&format!(
            "no scheduler named \\\"{scheduler}\\\" holds a lease"
        )),
        "{warnings}"
    );
    let schedulers = &result["schedulers"][0];
    assert_eq!(schedulers["name"], json!(scheduler));
    assert_eq!(schedulers["holds_lease"], json!(false));
    assert!(!exists(&client, &namespace, &name(lost), &uid(lost)).await);
    let replacement = wait_pods(&client, &namespace, "app=lost", 1, pending).await;
    assert_ne!(uid(&replacement[0]), uid(lost));

    // The backup is the pod's manifest, ready for `kubectl apply`.
    let file = deleted["backup_file"].as_str().unwrap();
    assert!(Path::new(file).starts_with(backups.path()));
    let manifest: Value = serde_saphyr::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert_eq!(manifest["kind"], json!("Pod"));
    assert_eq!(manifest["metadata"]["name"], json!(name(lost)));
    assert_eq!(manifest["spec"]["schedulerName"], json!(scheduler));
    assert!(manifest["metadata"].get("uid").is_none());

    cleanup(&client, &namespace).await;
}

#[tokio::test]
async fn stuck_pods_finds_the_lease_the_default_scheduler_leader_holds() {
    support::cluster();
    let cluster = connect().await;
    let lease = scheduler_lease(&cluster, "default-scheduler", Timestamp::now())
        .await
        .unwrap();
    assert_eq!(lease.lease.as_deref(), Some("kube-system/kube-scheduler"));
    assert!(lease.held, "{lease:?}");
    let holder = lease.holder.unwrap();
    assert!(
        support::NODES
            .iter()
            .any(|n| holder.starts_with(&format!("{n}_"))),
        "{holder}"
    );
    let nobody = scheduler_lease(&cluster, &lost_scheduler(), Timestamp::now())
        .await
        .unwrap();
    assert_eq!(nobody.lease, None);
    assert!(!nobody.held);
}

#[tokio::test]
async fn stuck_pods_leaves_pods_the_scheduler_saw_alone() {
    let (client, namespace) = setup("stuck-seen").await;
    // The default scheduler tries and fails: PodScheduled=False and a FailedScheduling event.
    replicaset(
        &client,
        &namespace,
        "unschedulable",
        1,
        &json!({"nodeSelector": {"kubemend.test/no-such-node": "x"}}),
    )
    .await;
    // No scheduler serves it, but a FailedScheduling event names it: only the event shows that
    // a scheduler looked at it.
    replicaset(
        &client,
        &namespace,
        "evented",
        1,
        &json!({"schedulerName": lost_scheduler()}),
    )
    .await;
    // Held back on purpose by a scheduling gate.
    replicaset(
        &client,
        &namespace,
        "gated",
        1,
        &json!({"schedulingGates": [{"name": "kubemend.test/wait"}]}),
    )
    .await;
    let unschedulable = wait_pods(&client, &namespace, "app=unschedulable", 1, |p| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "PodScheduled"))
    })
    .await;
    let evented = wait_pods(&client, &namespace, "app=evented", 1, pending).await;
    let gated = wait_pods(&client, &namespace, "app=gated", 1, pending).await;
    let now = Timestamp::now().to_string();
    support::create(
        &Api::<Event>::namespaced(client.clone(), &namespace),
        json!({
            "metadata": {"name": format!("{}.failed", name(&evented[0]))},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": namespace,
                               "name": name(&evented[0]), "uid": uid(&evented[0])},
            "reason": "FailedScheduling",
            "message": "0/3 nodes are available: kubemend test",
            "type": "Warning",
            "source": {"component": "kubemend-test-scheduler"},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }),
    )
    .await;
    for pod in [&unschedulable[0], &evented[0], &gated[0]] {
        support::until_older_than(pod, Duration::from_secs(1)).await;
    }

    let args = json!({"namespaces": [namespace], "pending_age": "1s"});
    let (code, result) = support::run_module("stuck_pods", &args);
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["changed"], json!(false), "{result}");
    assert_eq!(result["deleted"], json!([]), "{result}");
    let evidence = |pod: &Pod| -> String {
        entry(&result, "seen_by_scheduler", &uid(pod))
            .unwrap_or_else(|| panic!("{} not reported as seen: {result}", name(pod)))["evidence"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        evidence(&unschedulable[0]).starts_with("PodScheduled=False (Unschedulable)"),
        "{result}"
    );
    assert!(
        evidence(&evented[0]).contains("FailedScheduling event: 0/3 nodes are available"),
        "{result}"
    );
    assert!(
        evidence(&gated[0]).contains("kubemend.test/wait"),
        "{result}"
    );
    for pod in [&unschedulable[0], &evented[0], &gated[0]] {
        assert!(exists(&client, &namespace, &name(pod), &uid(pod)).await);
    }
    cleanup(&client, &namespace).await;
}

/// Labelled `kubemend.test/case: case`: a bare pod and the StatefulSet pod `db-0`, both stuck
/// Terminating on a Ready node (kubelet backlog), and a kube-system ReplicaSet pod no scheduler
/// serves. Returns the bare pod, the StatefulSet pod and the kube-system pod.
async fn bare_statefulset_and_system_pods(
    client: &Client,
    namespace: &str,
    case: &str,
    system_rs: &str,
) -> (Pod, Pod, Pod) {
    let labels = json!({"kubemend.test/case": case});
    let backlog = json!({"annotations": {BACKLOG: "true"}});
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    // A bare pod and a StatefulSet pod on Ready nodes whose kubelet never confirms a deletion.
    support::create(
        &pods,
        json!({
            "metadata": {"name": "bare", "labels": labels, "annotations": {BACKLOG: "true"}},
            "spec": pod_spec(&json!({})),
        }),
    )
    .await;
    let mut sts_labels = labels.clone();
    sts_labels["app"] = json!("db");
    support::create(
        &Api::<StatefulSet>::namespaced(client.clone(), namespace),
        json!({
            "metadata": {"name": "db"},
            "spec": {
                "replicas": 1,
                "serviceName": "db",
                "selector": {"matchLabels": {"app": "db"}},
                "template": {
                    "metadata": {"labels": sts_labels, "annotations": backlog["annotations"]},
                    "spec": pod_spec(&json!({})),
                },
            },
        }),
    )
    .await;
    // A kube-system pod no scheduler serves.
    replicaset_labelled(
        client,
        "kube-system",
        system_rs,
        1,
        &labels,
        &json!({"schedulerName": lost_scheduler()}),
    )
    .await;
    let selector = format!("kubemend.test/case={case}");
    let running_pods = wait_pods(client, namespace, &selector, 2, running).await;
    let mut system = wait_pods(client, "kube-system", &selector, 1, pending).await;
    for pod in &running_pods {
        delete(&pods, &name(pod)).await;
    }
    let by_name = |n: &str| running_pods.iter().find(|p| name(p) == n).unwrap().clone();
    (by_name("bare"), by_name("db-0"), system.remove(0))
}

#[tokio::test]
async fn stuck_pods_skips_statefulset_bare_and_kube_system_pods_unless_allowed() {
    let (client, namespace) = setup("stuck-skip").await;
    let case = support::unique("skip");
    let selector = format!("kubemend.test/case={case}");
    let system_rs = support::unique("kubemend-test-lost");
    let (bare_pod, db, system) =
        bare_statefulset_and_system_pods(&client, &namespace, &case, &system_rs).await;
    let base = json!({
        "namespaces": [namespace, "kube-system"],
        "label_selector": selector,
        "terminating_grace": "1s",
        "pending_age": "1s",
    });
    // Until all three count as stuck (deletion time plus grace, pending_age
    // passed), asked in check mode: a fixed sleep raced a loaded cluster.
    let wanted = [uid(&bare_pod), uid(&db), uid(&system)];
    let mut probe = base.clone();
    probe["_ansible_check_mode"] = json!(true);
    support::wait_until(
        "the three pods to count as stuck",
        Duration::from_secs(60),
        || {
            let (_, result) = support::run_module("stuck_pods", &probe);
            let all = wanted
                .iter()
                .all(|u| entry(&result, "left_alone", u).is_some());
            async move { all.then_some(()) }
        },
    )
    .await;
    let (code, result) = support::run_module("stuck_pods", &base);
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["changed"], json!(false), "{result}");
    assert_eq!(result["deleted"], json!([]), "{result}");
    let reason = |result: &Value, pod: &Pod| -> String {
        entry(result, "left_alone", &uid(pod))
            .unwrap_or_else(|| panic!("{} not reported: {result}", name(pod)))["reason"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        reason(&result, &bare_pod).contains("include_bare_pods"),
        "{result}"
    );
    assert!(
        reason(&result, &db).contains("allow_statefulset"),
        "{result}"
    );
    assert!(
        reason(&result, &system).contains("exclude_namespaces"),
        "{result}"
    );
    let db_report = entry(&result, "left_alone", &uid(&db)).unwrap();
    assert_eq!(db_report["node_state"], json!("Ready"), "{db_report}");

    // Each option allows its own kind; a StatefulSet pod on a Ready node stays even so.
    let mut allowed = base.clone();
    allowed["include_bare_pods"] = json!(true);
    allowed["allow_statefulset"] = json!(true);
    allowed["exclude_namespaces"] = json!([]);
    let (code, result) = support::run_module("stuck_pods", &allowed);
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["changed"], json!(true), "{result}");
    let mut deleted = uids(&result, "deleted");
    deleted.sort();
    let mut expected = vec![uid(&bare_pod), uid(&system)];
    expected.sort();
    assert_eq!(deleted, expected, "{result}");
    assert!(reason(&result, &db).contains("Ready"), "{result}");
    assert!(exists(&client, &namespace, "db-0", &uid(&db)).await);
    assert!(!exists(&client, &namespace, "bare", &uid(&bare_pod)).await);
    assert!(!exists(&client, "kube-system", &name(&system), &uid(&system)).await);

    let _ = Api::<ReplicaSet>::namespaced(client.clone(), "kube-system")
        .delete(&system_rs, &DeleteParams::background())
        .await;
    cleanup(&client, &namespace).await;
}

#[tokio::test]
async fn stuck_pods_deletes_nothing_and_fails_when_more_pods_qualify_than_max_pods() {
    let (client, namespace) = setup("stuck-max").await;
    replicaset(
        &client,
        &namespace,
        "lost",
        3,
        &json!({"schedulerName": lost_scheduler()}),
    )
    .await;
    let lost = wait_pods(&client, &namespace, "app=lost", 3, pending).await;
    for pod in &lost {
        support::until_older_than(pod, Duration::from_secs(1)).await;
    }

    let args = json!({"namespaces": [namespace], "pending_age": "1s", "max_pods": 2});
    let (code, result) = support::run_module("stuck_pods", &args);
    assert_eq!(code, 1, "{result}");
    assert_eq!(result["failed"], json!(true));
    let msg = result["msg"].as_str().unwrap();
    assert!(msg.contains("3 pods qualify"), "{msg}");
    assert!(msg.contains("max_pods (2)"), "{msg}");
    assert!(msg.contains("none was deleted"), "{msg}");
    assert!(msg.contains("wider problem"), "{msg}");
    assert!(msg.contains("never seen by scheduler"), "{msg}");
    for pod in &lost {
        assert!(exists(&client, &namespace, &name(pod), &uid(pod)).await);
    }
    cleanup(&client, &namespace).await;
}

#[tokio::test]
async fn stuck_pods_never_deletes_a_pod_re_created_under_the_same_name() {
    let (client, namespace) = setup("stuck-uid").await;
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace);
    let manifest = json!({
        "metadata": {"name": "same"},
        "spec": pod_spec(&json!({"schedulerName": lost_scheduler()})),
    });
    let first = support::create(&pods, manifest.clone()).await;
    support::until_older_than(&first, Duration::from_secs(1)).await;

    let options = serde_json::from_value(json!({
        "kubeconfig": support::cluster().kubeconfig,
        "namespaces": [namespace],
        "kinds": ["pending"],
        "pending_age": "1s",
        "include_bare_pods": true,
    }))
    .unwrap();
    let action = StuckPods::validate(options).unwrap();
    let cluster = connect().await;
    let plan = action.scan(&cluster).await.unwrap();
    assert_eq!(plan.candidates.len(), 1);
    assert_eq!(plan.candidates[0].uid, uid(&first));

    // Between the scan and the delete, someone re-creates the pod under the same name.
    pods.delete("same", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    support::wait_until("the first pod gone", Duration::from_secs(30), || async {
        pods.get_opt("same").await.unwrap().is_none().then_some(())
    })
    .await;
    let second = support::create(&pods, manifest).await;
    assert_ne!(uid(&second), uid(&first));

    let cx = Context {
        cluster,
        check_mode: false,
        diff: false,
        progress: false,
        deadline: None,
    };
    let mut outcome = Outcome::default();
    action.apply(&cx, plan, &mut outcome).await.unwrap();
    assert!(!outcome.changed, "{outcome:?}");
    assert!(
        outcome.warnings.iter().any(|w| w.contains("re-created")),
        "{:?}",
        outcome.warnings
    );
    let left_alone = &outcome.report.left_alone[0];
    assert_eq!(left_alone.pod.uid, uid(&first));
    assert!(exists(&client, &namespace, "same", &uid(&second)).await);
    cleanup(&client, &namespace).await;
}

#[tokio::test]
async fn stuck_pods_reports_finalizers_and_removes_them_only_when_asked_and_then_stays_unchanged() {
    let (client, namespace) = setup("stuck-fin").await;
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace);
    let held = support::create(
        &pods,
        json!({
            "metadata": {"name": "held", "finalizers": ["kubemend.test/hold"]},
            "spec": pod_spec(&json!({"schedulerName": lost_scheduler()})),
        }),
    )
    .await;
    support::until_older_than(&held, Duration::from_secs(1)).await;
    let args = json!({
        "namespaces": [namespace],
        "pending_age": "1s",
        "include_bare_pods": true,
    });
    let (code, result) = support::run_module("stuck_pods", &args);
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["changed"], json!(false), "{result}");
    let report = entry(&result, "left_alone", &uid(&held)).expect("the held pod reported");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("kubemend.test/hold"),
        "{report}"
    );
    assert_eq!(report["finalizers"], json!(["kubemend.test/hold"]));

    let mut remove = args.clone();
    remove["remove_finalizers"] = json!(true);
    let (code, result) = support::run_module("stuck_pods", &remove);
    assert_eq!(code, 0, "{result}");
    assert_eq!(uids(&result, "deleted"), vec![uid(&held)], "{result}");
    let deleted = entry(&result, "deleted", &uid(&held)).unwrap();
    assert_eq!(deleted["finalizers_removed"], json!(true));
    assert_eq!(deleted["gone"], json!(true), "{result}");
    assert!(!exists(&client, &namespace, "held", &uid(&held)).await);

    // A bare pod is not replaced: the next run finds nothing to do.
    let (code, again) = support::run_module("stuck_pods", &remove);
    assert_eq!(code, 0, "{again}");
    assert_eq!(again["changed"], json!(false), "{again}");
    cleanup(&client, &namespace).await;
}

#[tokio::test]
async fn stuck_pods_refuses_bad_input_naming_the_option_without_calling_the_api() {
    // Nothing listens there: an API call would fail with "cannot reach", not name an option.
    let unreachable = "https://127.0.0.1:9";
    let cases = [
        (json!({"terminating_grace": "-5m"}), "terminating_grace"),
        (json!({"pending_age": "10x"}), "pending_age"),
        (json!({"pending_age": "300"}), "pending_age"),
        (json!({"kinds": ["stale"]}), "kinds"),
        (json!({"kinds": []}), "kinds"),
        (json!({"label_selector": "app in (web"}), "label_selector"),
        (json!({"label_selector": "app=web,"}), "label_selector"),
        (json!({"namespaces": ["Not_A_Namespace"]}), "namespaces"),
        (json!({"max_pods": 0}), "max_pods"),
        (json!({"max_pods": "many"}), "max_pods"),
    ];
    for (mut args, option) in cases {
        args["host"] = json!(unreachable);
        let (code, result) = support::run_module("stuck_pods", &args);
        assert_eq!(code, 1, "{args}: {result}");
        assert_eq!(result["failed"], json!(true));
        let msg = result["msg"].as_str().unwrap();
        assert!(msg.contains(option), "{args}: {msg}");
        assert!(!msg.contains("cannot reach"), "{args}: {msg}");
    }
    // The control: valid input does try the API, and says so.
    let (code, result) = support::run_module("stuck_pods", &json!({"host": unreachable}));
    assert_eq!(code, 1, "{result}");
    assert!(
        result["msg"].as_str().unwrap().contains("cannot reach"),
        "{result}"
    );
    // The CLI refuses the same way.
    let (code, result) = run_cli(&["--host", unreachable, "--terminating-grace=-1h"]);
    assert_eq!(code, 1, "{result}");
    assert!(
        result["msg"]
            .as_str()
            .unwrap()
            .contains("terminating_grace"),
        "{result}"
    );
}

/// A real refusal in the middle of a run: a ValidatingAdmissionPolicy denies deleting the last
/// of three stuck pods. The run fails at that pod, yet its result says what it already did:
/// `changed: true` and the two pods deleted before it, each with its whole manifest.
#[tokio::test]
async fn stuck_pods_failing_midway_reports_changed_and_every_pod_already_deleted() {
    let reaper = support::Reaper::new("stuck-midway");
    let client = support::client().await;
    let namespace = reaper.namespace(&client).await;
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace);
    let scheduler = lost_scheduler();
    for (name, refuse) in [("a-first", false), ("b-second", false), ("c-refused", true)] {
        let mut labels = json!({"app": "midway"});
        if refuse {
            labels["kubemend.test/refuse-delete"] = json!("true");
        }
        support::create(
            &pods,
            json!({"metadata": {"name": name, "labels": labels},
                   "spec": pod_spec(&json!({"schedulerName": scheduler}))}),
        )
        .await;
    }
    refuse_deleting(&client, &reaper, &namespace, "c-refused").await;
    let args = json!({
        "kubeconfig": support::cluster().kubeconfig,
        "namespaces": [namespace],
        "kinds": ["pending"],
        "pending_age": "1s",
        "include_bare_pods": true,
    });
    let mut check = args.clone();
    check["_ansible_check_mode"] = json!(true);
    support::wait_until(
        "the three pods to count as stuck",
        Duration::from_secs(30),
        || async {
            let (_, result) = support::run_module("stuck_pods", &check);
            (result["counts"]["qualifying"] == json!(3)).then_some(())
        },
    )
    .await;

    let (code, result) = support::run_module("stuck_pods", &args);
    assert_eq!(code, 1, "{result}");
    assert_eq!(result["failed"], json!(true), "{result}");
    assert_eq!(result["changed"], json!(true), "{result}");
    assert_eq!(result["failed_step"], json!("apply"), "{result}");
    let msg = result["msg"].as_str().unwrap();
    assert!(msg.contains("c-refused"), "{msg}");
    let deleted = result["deleted"].as_array().unwrap();
    let names: Vec<&str> = deleted
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a-first", "b-second"], "{result}");
    for entry in deleted {
        let manifest = &entry["manifest"];
        assert_eq!(manifest["metadata"]["name"], entry["name"]);
        assert_eq!(manifest["metadata"]["uid"], entry["uid"]);
        assert_eq!(manifest["spec"]["schedulerName"], json!(scheduler));
    }
    for gone in ["a-first", "b-second"] {
        support::wait_until(&format!("{gone} gone"), Duration::from_secs(30), || async {
            pods.get_opt(gone).await.unwrap().is_none().then_some(())
        })
        .await;
    }
    assert!(pods.get_opt("c-refused").await.unwrap().is_some());
}

/// A ValidatingAdmissionPolicy (in `reaper`'s care) that makes the API server refuse deleting
/// pods labelled `kubemend.test/refuse-delete` in `namespace`; returns once it refuses `probe`.
async fn refuse_deleting(client: &Client, reaper: &support::Reaper, namespace: &str, probe: &str) {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    support::refuse_deletes(
        client,
        reaper,
        ("", "pods"),
        "!has(oldObject.metadata.labels) || \
         !('kubemend.test/refuse-delete' in oldObject.metadata.labels)",
        &[namespace],
    )
    .await;
    // The policy takes effect once the API server has loaded it: wait until it refuses a
    // server-side dry run of the delete.
    let dry_run = DeleteParams {
        dry_run: true,
        ..DeleteParams::default()
    };
    support::wait_until(
        &format!("the policy to refuse deleting {probe}"),
        Duration::from_secs(60),
        || async {
            match pods.delete(probe, &dry_run).await {
                Err(kube::Error::Api(status)) if status.code != 404 => Some(()),
                _ => None,
            }
        },
    )
    .await;
}
