//! calico_rbac against the test-bed cluster (real apiserver, RBAC enforced).
//!
//! Each test builds its own ClusterRole, ServiceAccount, ClusterRoleBinding and Deployment with
//! unique names; one test works on the seeded incident objects under the incident lock. The
//! conflict test drives the library (`actions::run`) through a client layer that lets
//! another writer change the role between kubemend's read and its update.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kubemend::actions::calico_rbac::{CalicoRbac, Options};
use kubemend::actions::{Action as _, Context};
use serde_json::{Value, json};

/// v3.13.2's five rules, exactly as the incident's role had them.
fn v3_13_2_rules() -> Value {
    json!([
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["watch", "list", "get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
        {"apiGroups": ["crd.projectcalico.org"], "resources": ["ippools"], "verbs": ["list"]},
        {"apiGroups": ["crd.projectcalico.org"],
         "resources": ["blockaffinities", "ipamblocks", "ipamhandles"],
         "verbs": ["get", "list", "create", "update", "delete"]},
        {"apiGroups": ["crd.projectcalico.org"], "resources": ["clusterinformations"],
         "verbs": ["get", "create", "update"]}
    ])
}

/// The container of the default fixture: v3.13.2 on the etcdv3 datastore with the incident's
/// ENABLED_CONTROLLERS. Upstream's v3.13 etcd ClusterRole grants pods get/list/watch (for the
/// workloadendpoint controller), which the Kubernetes-datastore five rules lack: something to
/// add. (On the Kubernetes datastore the five rules are complete, see the incident test.)
fn etcd_v3_13_2_container() -> Value {
    json!([{
        "name": "calico-kube-controllers",
        "image": "calico/kube-controllers:v3.13.2",
        "env": [
            {"name": "ENABLED_CONTROLLERS", "value": "node,workloadendpoint"},
            {"name": "DATASTORE_TYPE", "value": "etcdv3"},
            {"name": "ETCD_ENDPOINTS", "value": "https://127.0.0.1:2379"}
        ]
    }])
}

/// A calico-kube-controllers look-alike of our own: namespace, ServiceAccount, Deployment,
/// ClusterRole (given rules) and the binding between them.
struct Fixture {
    client: Client,
    namespace: String,
    name: String,
}

impl Fixture {
    async fn new(rules: Value) -> Self {
        Self::with_containers(rules, etcd_v3_13_2_container()).await
    }

    /// The fixture with the Deployment's containers given.
    async fn with_containers(rules: Value, containers: Value) -> Self {
        support::cluster();
        let client = support::client().await;
        let namespace = support::namespace(&client, "calico").await;
        let name = support::unique("calico-kc");
        let pp = PostParams::default();
        let sa: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": namespace}}))
                .unwrap();
        Api::<ServiceAccount>::namespaced(client.clone(), &namespace)
            .create(&pp, &sa)
            .await
            .unwrap();
        let role: ClusterRole =
            serde_json::from_value(json!({"metadata": {"name": name}, "rules": rules})).unwrap();
        Api::<ClusterRole>::all(client.clone())
            .create(&pp, &role)
            .await
            .unwrap();
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]
        }))
        .unwrap();
        Api::<ClusterRoleBinding>::all(client.clone())
            .create(&pp, &binding)
            .await
            .unwrap();
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "serviceAccountName": name,
                        "containers": containers
                    }
                }
            }
        }))
        .unwrap();
        Api::<Deployment>::namespaced(client.clone(), &namespace)
            .create(&pp, &deployment)
            .await
            .unwrap();
        Self {
            client,
            namespace,
            name,
        }
    }

    fn args(&self) -> Value {
        json!({"name": self.name, "namespace": self.namespace, "deployment": self.name})
    }

    fn cli_args(&self) -> Vec<String> {
        vec![
            "calico-rbac".into(),
            "--name".into(),
            self.name.clone(),
            "--namespace".into(),
            self.namespace.clone(),
            "--deployment".into(),
            self.name.clone(),
        ]
    }

    async fn role(&self) -> ClusterRole {
        Api::<ClusterRole>::all(self.client.clone())
            .get(&self.name)
            .await
            .unwrap()
    }

    async fn cleanup(self) {
        let dp = DeleteParams::default();
        let _ = Api::<ClusterRole>::all(self.client.clone())
            .delete(&self.name, &dp)
            .await;
        let _ = Api::<ClusterRoleBinding>::all(self.client.clone())
            .delete(&self.name, &dp)
            .await;
        let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(self.client.clone())
            .delete(&self.namespace, &dp)
            .await;
    }
}

/// The pod-template annotation `kubectl rollout restart` sets.
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// The Deployment `namespace/name` as it is now.
async fn deployment(client: &Client, namespace: &str, name: &str) -> Deployment {
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .unwrap()
}

/// The `kubectl.kubernetes.io/restartedAt` annotation of the Deployment's pod template.
async fn restarted_at(client: &Client, namespace: &str, name: &str) -> Option<String> {
    let deployment = deployment(client, namespace, name).await;
    deployment
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.annotations)
        .and_then(|a| a.get(RESTARTED_AT).cloned())
}

/// The names of the ReplicaSets the Deployment owns, sorted.
async fn replica_sets(client: &Client, namespace: &str, name: &str) -> Vec<String> {
    let uid = deployment(client, namespace, name).await.metadata.uid;
    let mut names: Vec<String> = Api::<ReplicaSet>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .filter_map(|rs| rs.metadata.name)
        .collect();
    names.sort();
    names
}

/// Waits until the Deployment owns a ReplicaSet (its first rollout has begun); returns them.
async fn wait_for_replica_sets(client: &Client, namespace: &str, name: &str) -> Vec<String> {
    support::wait_until(
        &format!("a ReplicaSet of deployment {namespace}/{name}"),
        Duration::from_secs(60),
        || async {
            let sets = replica_sets(client, namespace, name).await;
            (!sets.is_empty()).then_some(sets)
        },
    )
    .await
}

/// Asserts that the result names a Ready pod of a ReplicaSet that is not one of `before` and
/// whose template carries the restart annotation the result reports, and that the Deployment's
/// template carries it too.
async fn assert_restarted(
    client: &Client,
    namespace: &str,
    name: &str,
    before: &[String],
    result: &Value,
) {
    assert_eq!(result["controller_restarted"], json!(true), "{result}");
    let at = result["controller_restarted_at"].as_str().unwrap();
    assert!(
        k8s_openapi::jiff::Timestamp::from_str(at).is_ok(),
        "RFC 3339: {at}"
    );
    assert_eq!(
        restarted_at(client, namespace, name).await.as_deref(),
        Some(at)
    );
    let pod_name = result["controller_pod"].as_str().unwrap();
    let pod = Api::<Pod>::namespaced(client.clone(), namespace)
        .get(pod_name)
        .await
        .unwrap();
    let ready = pod
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    assert!(ready, "pod {pod_name} is Ready");
    let owner = pod
        .metadata
        .owner_references
        .unwrap_or_default()
        .into_iter()
        .find(|o| o.kind == "ReplicaSet")
        .unwrap();
    assert!(
        !before.contains(&owner.name),
        "{pod_name} belongs to a new ReplicaSet, not one of {before:?}"
    );
    let rs = Api::<ReplicaSet>::namespaced(client.clone(), namespace)
        .get(&owner.name)
        .await
        .unwrap();
    let rs_at = rs
        .spec
        .and_then(|s| s.template)
        .and_then(|t| t.metadata)
        .and_then(|m| m.annotations)
        .and_then(|a| a.get(RESTARTED_AT).cloned());
    assert_eq!(rs_at.as_deref(), Some(at), "ReplicaSet {}", owner.name);
}

/// What the fixture's ServiceAccount must be allowed after the fix (v3.13.2 etcdv3, node and
/// workloadendpoint): pods and nodes get/list/watch.
async fn assert_etcd_v3_13_2_permissions(client: &Client, namespace: &str, sa: &str) {
    for resource in ["pods", "nodes"] {
        for verb in ["get", "list", "watch"] {
            assert!(
                support::allowed(client, namespace, sa, "", resource, verb).await,
                "{resource} {verb}"
            );
        }
    }
}

/// What the fixture is missing: pods list and watch.
fn pods_list_watch() -> Value {
    json!([{"api_groups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}])
}

#[tokio::test]
async fn calico_rbac_check_mode_exits_2_shows_diff_and_writes_nothing() {
    let fixture = Fixture::new(v3_13_2_rules()).await;
    let before = fixture.role().await.metadata.resource_version;
    let output = support::kubemend()
        .args(fixture.cli_args())
        .args(["--check", "--diff"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("+  - pods"), "{stdout}");
    assert!(!stdout.contains("workloadendpoints"), "{stdout}");
    assert!(stdout.contains("would change"), "{stdout}");
    assert_eq!(fixture.role().await.metadata.resource_version, before);
    // The module in check mode: same plan, still no write.
    let mut args = fixture.args();
    args["_ansible_check_mode"] = json!(true);
    args["_ansible_diff"] = json!(true);
    let (code, result) = support::run_module("calico_rbac", &args);
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["changed"], json!(true));
    assert_eq!(result["verified"], json!(null));
    assert_eq!(result["added_rules"], pods_list_watch(), "{result}");
    assert!(
        result["diff"]["after"]
            .as_str()
            .unwrap()
            .ends_with("  - pods\n  verbs:\n  - list\n  - watch\n"),
        "{result}"
    );
    assert_eq!(fixture.role().await.metadata.resource_version, before);
    assert!(
        !support::allowed(
            &fixture.client,
            &fixture.namespace,
            &fixture.name,
            "",
            "pods",
            "list"
        )
        .await
    );
    fixture.cleanup().await;
}

#[tokio::test]
async fn calico_rbac_module_run_grants_missing_permissions_and_second_run_is_unchanged() {
    let fixture = Fixture::new(v3_13_2_rules()).await;
    let (code, result) = support::run_module("calico_rbac", &fixture.args());
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["changed"], json!(true), "{result}");
    assert_eq!(result["calico_version"], json!("v3.13.2"));
    assert_eq!(result["datastore"], json!("etcdv3"));
    assert_eq!(
        result["enabled_controllers"],
        json!(["node", "workloadendpoint"])
    );
    // Upstream's v3.13 etcd ClusterRole, for the node and workloadendpoint controllers, each
    // rule with the controller that needs it, the release and the upstream file.
    let required = result["required_rules"].as_array().unwrap();
    let rules: Vec<Value> = required
        .iter()
        .map(|r| json!({"api_groups": r["api_groups"], "resources": r["resources"], "verbs": r["verbs"]}))
        .collect();
    assert_eq!(
        rules,
        [
            json!({"api_groups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}),
            json!({"api_groups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]})
        ],
        "{result}"
    );
    for rule in required {
        let source = &rule["source"];
        assert_eq!(source["release"], "v3.13.2", "{rule}");
        assert!(
            ["node", "workloadendpoint", "base"].contains(&source["controller"].as_str().unwrap()),
            "{rule}"
        );
        assert!(!source["why"].as_str().unwrap().is_empty(), "{rule}");
        assert!(
            source["upstream"]
                .as_str()
                .unwrap()
                .starts_with("projectcalico/calico@"),
            "{rule}"
        );
    }
    assert_eq!(result["verified"], json!(true), "{result}");
    assert_eq!(result["added_rules"], pods_list_watch());
    assert!(
        !result["warnings"].to_string().contains("etcd-only"),
        "{result}"
    );
    assert_eq!(result["missing_before"], result["added_rules"]);
    assert!(
        result.get("diff").is_none(),
        "no diff without _ansible_diff"
    );
    assert_etcd_v3_13_2_permissions(&fixture.client, &fixture.namespace, &fixture.name).await;

    let rv = fixture.role().await.metadata.resource_version;
    let (code, again) = support::run_module("calico_rbac", &fixture.args());
    assert_eq!(code, 0, "{again}");
    assert_eq!(again["changed"], json!(false), "{again}");
    assert_eq!(again["missing_before"], json!([]));
    assert_eq!(again["verified"], json!(true));
    assert_eq!(fixture.role().await.metadata.resource_version, rv);
    fixture.cleanup().await;
}

#[tokio::test]
async fn calico_rbac_keeps_rules_added_by_hand() {
    let mut rules = v3_13_2_rules();
    let by_hand = json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["calico-config"]});
    rules.as_array_mut().unwrap().insert(2, by_hand);
    // A wildcard rule by hand: it already covers every nodes verb.
    rules
        .as_array_mut()
        .unwrap()
        .push(json!({"apiGroups": [""], "resources": ["nodes"], "verbs": ["*"]}));
    let fixture = Fixture::new(rules).await;
    let before = serde_json::to_value(fixture.role().await.rules.unwrap()).unwrap();
    let (code, result) = support::run_module("calico_rbac", &fixture.args());
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["changed"], json!(true));
    // Only pods list/watch were missing.
    assert_eq!(result["added_rules"], pods_list_watch());
    let after = serde_json::to_value(fixture.role().await.rules.unwrap()).unwrap();
    let before = before.as_array().unwrap();
    let after = after.as_array().unwrap();
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "existing rules kept in place and order"
    );
    assert_eq!(after.len(), before.len() + 1);
    fixture.cleanup().await;
}

/// Requests on one ClusterRole as they reached the API server: (method, response status).
type RoleLog = Arc<Mutex<Vec<(String, u16)>>>;

/// kubemend's connection to the test bed, with a writer in between: just before kubemend's
/// first update of ClusterRole `name` goes out, another client appends `rule` to that role and
/// annotates it. kubemend's update then carries the resourceVersion it read, now stale, and the
/// API server refuses it with a real 409 Conflict. Every request on the role is logged.
async fn cluster_with_another_writer(
    name: &str,
    rule: Value,
) -> (kubemend::client::Cluster, RoleLog) {
    let through = support::client().await;
    let other_writer = support::client().await;
    let role_path = format!("/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}");
    let name = name.to_owned();
    let log = RoleLog::default();
    let wrote = Arc::new(AtomicBool::new(false));
    let service = {
        let log = log.clone();
        tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let (through, other_writer, log) = (through.clone(), other_writer.clone(), log.clone());
            let (name, rule, wrote) = (name.clone(), rule.clone(), wrote.clone());
            let on_role = request.uri().path() == role_path;
            let method = request.method().to_string();
            async move {
                if on_role && method == "PUT" && !wrote.swap(true, Ordering::SeqCst) {
                    let roles = Api::<ClusterRole>::all(other_writer);
                    let mut current = roles.get(&name).await.unwrap();
                    current
                        .rules
                        .get_or_insert_with(Vec::new)
                        .push(support::from_json(rule));
                    current
                        .metadata
                        .annotations
                        .get_or_insert_with(Default::default)
                        .insert("kubemend.test/other-writer".into(), "was here".into());
                    roles
                        .replace(&name, &PostParams::default(), &current)
                        .await
                        .unwrap();
                }
                let response = through.send(request).await?;
                if on_role {
                    log.lock()
                        .unwrap()
                        .push((method, response.status().as_u16()));
                }
                Ok::<_, kube::Error>(response)
            }
        })
    };
    let cluster = kubemend::client::Cluster {
        client: Client::new(service, "default"),
        endpoint: "the test bed, through a layer with another writer".into(),
    };
    (cluster, log)
}

/// The retry loop against a real conflict: between kubemend's read of the role and its update,
/// another writer grants part of what is missing (pods watch). The update
/// fails with 409; kubemend reads the role again, plans again, keeps the other writer's rule
/// and annotation, and adds only what is still missing.
#[tokio::test]
async fn calico_rbac_rereads_and_replans_when_another_writer_changes_the_role_first() {
    let fixture = Fixture::new(v3_13_2_rules()).await;
    let before = serde_json::to_value(fixture.role().await.rules.unwrap()).unwrap();
    let theirs = json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["watch"]});
    let (cluster, log) = cluster_with_another_writer(&fixture.name, theirs.clone()).await;
    let options: Options = serde_json::from_value(fixture.args()).unwrap();
    let action = CalicoRbac::validate(options).unwrap();
    let cx = Context {
        cluster,
        check_mode: false,
        diff: false,
        progress: false,
        deadline: None,
    };
    let run = kubemend::actions::run(&action, &cx).await;
    assert!(run.failure.is_none(), "{:?}", run.failure);
    let outcome = run.outcome;
    let report = serde_json::to_value(&outcome.report).unwrap();

    let requests = log.lock().unwrap().clone();
    let expected = [("GET", 200), ("PUT", 409), ("GET", 200), ("PUT", 200)];
    let expected: Vec<(String, u16)> = expected.iter().map(|(m, s)| ((*m).into(), *s)).collect();
    assert_eq!(requests, expected, "read, conflict, read again, update");
    assert!(outcome.changed);
    assert_eq!(report["verified"], json!(true), "{report}");
    // Planned against the role as read the second time: what the other writer granted is
    // neither missing nor added again.
    let added = json!([{"api_groups": [""], "resources": ["pods"], "verbs": ["list"]}]);
    assert_eq!(report["missing_before"], added);
    assert_eq!(report["added_rules"], added);

    let role = fixture.role().await;
    let annotations = role.metadata.annotations.unwrap_or_default();
    assert_eq!(annotations["kubemend.test/other-writer"], "was here");
    let after = serde_json::to_value(role.rules.unwrap()).unwrap();
    let mut kept = before.as_array().unwrap().clone();
    kept.push(theirs);
    let after = after.as_array().unwrap();
    assert_eq!(
        &after[..kept.len()],
        &kept[..],
        "the original rules, then the other writer's, in place"
    );
    assert_eq!(after.len(), kept.len() + 1, "{after:?}");
    assert_etcd_v3_13_2_permissions(&fixture.client, &fixture.namespace, &fixture.name).await;
    fixture.cleanup().await;
}

#[tokio::test]
async fn calico_rbac_creates_the_role_when_absent() {
    let fixture = Fixture::new(v3_13_2_rules()).await;
    Api::<ClusterRole>::all(fixture.client.clone())
        .delete(&fixture.name, &DeleteParams::default())
        .await
        .unwrap();
    let (code, result) = support::run_module("calico_rbac", &fixture.args());
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["created"], json!(true), "{result}");
    assert_eq!(result["verified"], json!(true), "{result}");
    assert_etcd_v3_13_2_permissions(&fixture.client, &fixture.namespace, &fixture.name).await;
    fixture.cleanup().await;
}

#[tokio::test]
async fn calico_rbac_fails_clearly_on_an_aggregated_role() {
    let fixture = Fixture::new(v3_13_2_rules()).await;
    let roles = Api::<ClusterRole>::all(fixture.client.clone());
    let mut role = fixture.role().await;
    role.aggregation_rule = serde_json::from_value(json!({
        "clusterRoleSelectors": [{"matchLabels": {"kubemend.test/aggregate-to": fixture.name}}]
    }))
    .unwrap();
    roles
        .replace(&fixture.name, &PostParams::default(), &role)
        .await
        .unwrap();
    let before = fixture.role().await.metadata.resource_version;
    let (code, result) = support::run_module("calico_rbac", &fixture.args());
    assert_eq!(code, 1, "{result}");
    assert_eq!(result["failed"], json!(true));
    let msg = result["msg"].as_str().unwrap();
    assert!(msg.contains("aggregationRule"), "{msg}");
    assert!(msg.contains("would overwrite"), "{msg}");
    assert!(
        result["hint"]
            .as_str()
            .unwrap()
            .contains("separate ClusterRole"),
        "{result}"
    );
    assert_eq!(fixture.role().await.metadata.resource_version, before);
    fixture.cleanup().await;
}

#[tokio::test]
async fn calico_rbac_bad_input_fails_without_touching_the_role() {
    let fixture = Fixture::new(v3_13_2_rules()).await;
    let before = fixture.role().await.metadata.resource_version;
    for (patch, needle) in [
        (json!({"colour": "blue"}), "colour"),
        (json!({"extra_rules": "not a rule"}), "extra_rules"),
        (json!({"calico_version": "latest"}), "calico_version"),
        (json!({"enabled_controllers": ["node", "typo"]}), "typo"),
        (json!({"enabled_controllers": ["Node"]}), "`Node`"),
        (json!({"datastore": "etcd"}), "datastore"),
    ] {
        let mut args = fixture.args();
        for (k, v) in patch.as_object().unwrap() {
            args[k] = v.clone();
        }
        let (code, result) = support::run_module("calico_rbac", &args);
        assert_eq!(code, 1, "{result}");
        assert_eq!(result["failed"], json!(true));
        assert!(result["msg"].as_str().unwrap().contains(needle), "{result}");
    }
    assert_eq!(fixture.role().await.metadata.resource_version, before);
    fixture.cleanup().await;
}

/// The incident: Calico v3.13.2 on the Kubernetes datastore with
/// ENABLED_CONTROLLERS=node,workloadendpoint. Upstream's v3.13 role (projectcalico/calico,
/// release-v3.13, `_includes/charts/calico/templates/rbac.yaml`) is the seeded five rules, and
/// upstream never enables workloadendpoint on this datastore; enabled anyway, its informer
/// lists and watches pods (the review's `cannot list resource "pods"`). So the fix is pods
/// list/watch, and a warning to drop the etcd-only controller; the workloadendpoints CRD rule
/// the review added by hand is not needed on this datastore (the module docs show it as an
/// `extra_rules` example for a GitOps copy that must match the review).
#[tokio::test]
async fn calico_rbac_fixes_the_seeded_incident_and_names_the_etcd_only_controller() {
    support::cluster();
    let _incident = support::incident();
    let client = support::client().await;
    let sa = ("kube-system", "calico-kube-controllers");
    assert!(!support::allowed(&client, sa.0, sa.1, "", "pods", "list").await);
    let before = wait_for_replica_sets(&client, sa.0, sa.1).await;
    let output = support::kubemend()
        .args(["calico-rbac", "--check", "--diff"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("pods"), "{stdout}");
    assert!(
        stdout.contains("would restart deployment kube-system/calico-kube-controllers"),
        "{stdout}"
    );
    assert_eq!(restarted_at(&client, sa.0, sa.1).await, None);
    let (code, result) = support::run_module("calico_rbac", &json!({"_ansible_diff": true}));
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["changed"], json!(true), "{result}");
    assert_eq!(result["calico_version"], json!("v3.13.2"));
    assert_eq!(result["datastore"], json!("kubernetes"));
    assert_eq!(
        result["added_rules"],
        json!([{"api_groups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]),
        "{result}"
    );
    assert_eq!(result["verified"], json!(true), "{result}");
    let warnings = result["warnings"].to_string();
    assert!(
        warnings.contains("workloadendpoint is an etcd-only controller"),
        "{warnings}"
    );
    assert!(
        warnings.contains("drop it from ENABLED_CONTROLLERS"),
        "{warnings}"
    );
    assert!(support::allowed(&client, sa.0, sa.1, "", "pods", "list").await);
    assert!(support::allowed(&client, sa.0, sa.1, "", "pods", "watch").await);
    // The controller, stuck since its first cache load failed, is restarted: a new
    // ReplicaSet whose pod is Ready (kwok plays the kubelets, so the seeded pods get Ready).
    assert_restarted(&client, sa.0, sa.1, &before, &result).await;
    let msg = result["msg"].as_str().unwrap();
    assert!(
        msg.contains("restarted deployment kube-system/calico-kube-controllers, new pod"),
        "{msg}"
    );
    let annotation = restarted_at(&client, sa.0, sa.1).await;
    let sets = replica_sets(&client, sa.0, sa.1).await;
    let (_, again) = support::run_module("calico_rbac", &json!({}));
    assert_eq!(again["changed"], json!(false), "{again}");
    assert_eq!(again["controller_restarted"], json!(false), "{again}");
    assert_eq!(again["controller_pod"], json!(null), "{again}");
    assert_eq!(restarted_at(&client, sa.0, sa.1).await, annotation);
    assert_eq!(replica_sets(&client, sa.0, sa.1).await, sets);
}

/// Deployment containers with a sidecar first, then kube-controllers with `env`.
fn sidecar_then_kube_controllers(image: &str, env: &Value) -> Value {
    json!([
        {"name": "proxy", "image": "envoyproxy/envoy:v1.29.0"},
        {"name": "controllers", "image": image, "env": env}
    ])
}

#[tokio::test]
async fn calico_rbac_reads_the_kube_controllers_container_behind_a_sidecar() {
    let env = json!([
        {"name": "ENABLED_CONTROLLERS", "value": "node"},
        {"name": "DATASTORE_TYPE", "value": "kubernetes"}
    ]);
    let containers =
        sidecar_then_kube_controllers("registry:5000/calico/kube-controllers:v3.13.2", &env);
    let fixture = Fixture::with_containers(v3_13_2_rules(), containers).await;
    let mut args = fixture.args();
    args["_ansible_check_mode"] = json!(true);
    let (code, result) = support::run_module("calico_rbac", &args);
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["calico_version"], json!("v3.13.2"), "{result}");
    assert_eq!(result["datastore"], json!("kubernetes"), "{result}");
    assert_eq!(result["enabled_controllers"], json!(["node"]), "{result}");
    assert_eq!(result["changed"], json!(false), "{result}");
    fixture.cleanup().await;
}

#[tokio::test]
async fn calico_rbac_without_a_kube_controllers_container_fails_naming_the_containers() {
    let containers = json!([{"name": "proxy", "image": "envoyproxy/envoy:v1.29.0"}]);
    let fixture = Fixture::with_containers(v3_13_2_rules(), containers).await;
    let (code, result) = support::run_module("calico_rbac", &fixture.args());
    assert_eq!(code, 1, "{result}");
    let msg = result["msg"].as_str().unwrap();
    assert!(msg.contains("proxy (envoyproxy/envoy:v1.29.0)"), "{msg}");
    fixture.cleanup().await;
}

#[tokio::test]
async fn calico_rbac_fails_before_any_write_on_a_controller_name_kube_controllers_exits_on() {
    for value in ["Node", " node", "node,"] {
        let env = json!([
            {"name": "ENABLED_CONTROLLERS", "value": value},
            {"name": "DATASTORE_TYPE", "value": "etcdv3"}
        ]);
        let containers = sidecar_then_kube_controllers("calico/kube-controllers:v3.13.2", &env);
        // The role lacks pods list/watch: a write would be planned if parsing were lenient.
        let fixture = Fixture::with_containers(v3_13_2_rules(), containers).await;
        let before = fixture.role().await.metadata.resource_version;
        let (code, result) = support::run_module("calico_rbac", &fixture.args());
        assert_eq!(code, 1, "{value:?}: {result}");
        let msg = result["msg"].as_str().unwrap();
        assert!(
            msg.contains("calico-kube-controllers v3.13.2 exits on the controller name"),
            "{value:?}: {msg}"
        );
        assert!(
            result["hint"]
                .as_str()
                .unwrap()
                .contains("ENABLED_CONTROLLERS"),
            "{result}"
        );
        assert_eq!(fixture.role().await.metadata.resource_version, before);
        fixture.cleanup().await;
    }
}

#[tokio::test]
async fn calico_rbac_fails_with_a_hint_on_a_release_newer_than_the_table() {
    let env = json!([{"name": "ENABLED_CONTROLLERS", "value": "node"}]);
    let containers = sidecar_then_kube_controllers("calico/kube-controllers:v3.33.0", &env);
    let fixture = Fixture::with_containers(v3_13_2_rules(), containers).await;
    let before = fixture.role().await.metadata.resource_version;
    let (code, result) = support::run_module("calico_rbac", &fixture.args());
    assert_eq!(code, 1, "{result}");
    assert_eq!(result["failed"], json!(true));
    assert_ne!(result["verified"], json!(true), "{result}");
    let msg = result["msg"].as_str().unwrap();
    assert!(msg.contains("v3.33.0"), "{msg}");
    let hint = result["hint"].as_str().unwrap();
    assert!(
        hint.contains("calico_version") && hint.contains("rules"),
        "{hint}"
    );
    assert_eq!(fixture.role().await.metadata.resource_version, before);
    // With calico_version given, validation refuses it before reading the cluster.
    let mut args = fixture.args();
    args["calico_version"] = json!("v3.33.0");
    let (code, result) = support::run_module("calico_rbac", &args);
    assert_eq!(code, 1, "{result}");
    assert!(
        result["msg"].as_str().unwrap().contains("v3.33.0"),
        "{result}"
    );
    fixture.cleanup().await;
}

#[tokio::test]
async fn calico_rbac_warns_when_another_binding_already_grants_what_the_role_lacks() {
    let fixture = Fixture::new(v3_13_2_rules()).await;
    let other = format!("{}-other", fixture.name);
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": other},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]
    }))
    .unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": other},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": other},
        "subjects": [{"kind": "ServiceAccount", "name": fixture.name, "namespace": fixture.namespace}]
    }))
    .unwrap();
    let pp = PostParams::default();
    Api::<ClusterRole>::all(fixture.client.clone())
        .create(&pp, &role)
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(fixture.client.clone())
        .create(&pp, &binding)
        .await
        .unwrap();
    let mut args = fixture.args();
    args["_ansible_check_mode"] = json!(true);
    let (code, result) = support::run_module("calico_rbac", &args);
    assert_eq!(code, 0, "{result}");
    let warnings = result["warnings"].to_string();
    assert!(warnings.contains("through another binding"), "{warnings}");
    assert!(!warnings.contains("not being enforced"), "{warnings}");
    let dp = DeleteParams::default();
    let _ = Api::<ClusterRole>::all(fixture.client.clone())
        .delete(&other, &dp)
        .await;
    let _ = Api::<ClusterRoleBinding>::all(fixture.client.clone())
        .delete(&other, &dp)
        .await;
    fixture.cleanup().await;
}

/// With the Deployment absent, version and controllers given: the datastore cannot be read, so
/// it must be given too; with it, the rules of that datastore are required.
#[tokio::test]
async fn calico_rbac_without_the_deployment_needs_the_datastore() {
    let fixture = Fixture::new(v3_13_2_rules()).await;
    let mut args = fixture.args();
    args["deployment"] = json!("absent");
    args["calico_version"] = json!("v3.13.2");
    args["enabled_controllers"] = json!(["node", "workloadendpoint"]);
    args["service_account"] = json!(fixture.name);
    let (code, result) = support::run_module("calico_rbac", &args);
    assert_eq!(code, 1, "{result}");
    assert!(
        result["hint"].as_str().unwrap().contains("datastore"),
        "{result}"
    );
    args["datastore"] = json!("etcdv3");
    args["_ansible_check_mode"] = json!(true);
    let (code, result) = support::run_module("calico_rbac", &args);
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["datastore"], json!("etcdv3"), "{result}");
    assert_eq!(result["added_rules"], pods_list_watch(), "{result}");
    // Nothing to restart: a warning, no restart.
    assert_eq!(result["controller_restarted"], json!(false), "{result}");
    let missing = format!(
        "deployment {}/absent does not exist, so nothing was restarted",
        fixture.namespace
    );
    assert!(
        result["warnings"].to_string().contains(&missing),
        "{result}"
    );
    // On the Kubernetes datastore upstream grants workloadendpoint nothing, but enabled it
    // still lists and watches pods: those reads are required, with the warning to drop it.
    args["datastore"] = json!("kubernetes");
    let (code, result) = support::run_module("calico_rbac", &args);
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["added_rules"], pods_list_watch(), "{result}");
    let warnings = result["warnings"].to_string();
    assert!(warnings.contains("etcd-only"), "{result}");
    assert!(warnings.contains("pods"), "{result}");
    fixture.cleanup().await;
}

/// Adding rules restarts the controller's Deployment (check mode only says it would); a
/// second run adds nothing and restarts nothing.
#[tokio::test]
async fn calico_rbac_restarts_the_controller_after_adding_rules_and_not_when_nothing_is_added() {
    let fixture = Fixture::new(v3_13_2_rules()).await;
    let (client, ns, name) = (&fixture.client, &fixture.namespace, &fixture.name);
    let before = wait_for_replica_sets(client, ns, name).await;
    let mut args = fixture.args();
    args["_ansible_check_mode"] = json!(true);
    let (code, result) = support::run_module("calico_rbac", &args);
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["controller_restarted"], json!(true), "{result}");
    assert_eq!(result["controller_restarted_at"], json!(null), "{result}");
    assert_eq!(result["controller_pod"], json!(null), "{result}");
    let msg = result["msg"].as_str().unwrap();
    assert!(
        msg.ends_with(&format!("; would restart deployment {ns}/{name}")),
        "{msg}"
    );
    assert_eq!(restarted_at(client, ns, name).await, None);

    let (code, result) = support::run_module("calico_rbac", &fixture.args());
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["changed"], json!(true), "{result}");
    assert_eq!(result["verified"], json!(true), "{result}");
    assert_restarted(client, ns, name, &before, &result).await;
    let after = replica_sets(client, ns, name).await;
    assert!(after.len() > before.len(), "{before:?} then {after:?}");

    let annotation = restarted_at(client, ns, name).await;
    let generation = deployment(client, ns, name).await.metadata.generation;
    let (code, again) = support::run_module("calico_rbac", &fixture.args());
    assert_eq!(code, 0, "{again}");
    assert_eq!(again["changed"], json!(false), "{again}");
    assert_eq!(again["controller_restarted"], json!(false), "{again}");
    assert_eq!(again["controller_pod"], json!(null), "{again}");
    assert_eq!(restarted_at(client, ns, name).await, annotation);
    let unchanged = deployment(client, ns, name).await.metadata.generation;
    assert_eq!(unchanged, generation);
    assert_eq!(replica_sets(client, ns, name).await, after);
    fixture.cleanup().await;
}

/// `restart_controller: false` (here the CLI flag `--restart-controller false`): the rules are
/// added, the Deployment is left alone.
#[tokio::test]
async fn calico_rbac_restart_controller_false_adds_rules_without_a_restart() {
    let fixture = Fixture::new(v3_13_2_rules()).await;
    let (client, ns, name) = (&fixture.client, &fixture.namespace, &fixture.name);
    let generation = deployment(client, ns, name).await.metadata.generation;
    let output = support::kubemend()
        .args(fixture.cli_args())
        .args(["--restart-controller", "false", "--output", "json"])
        .output()
        .unwrap();
    let (code, result) = support::result_of(&output);
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["changed"], json!(true), "{result}");
    assert_eq!(result["added_rules"], pods_list_watch(), "{result}");
    assert_eq!(result["controller_restarted"], json!(false), "{result}");
    assert_eq!(result["controller_pod"], json!(null), "{result}");
    assert!(
        !result["msg"].as_str().unwrap().contains("restart"),
        "{result}"
    );
    assert_eq!(restarted_at(client, ns, name).await, None);
    assert_eq!(
        deployment(client, ns, name).await.metadata.generation,
        generation
    );
    fixture.cleanup().await;
}

/// A rollout that cannot complete (its pods fit no node, so they stay Pending) fails the
/// verify step after restart_timeout; the partial result keeps the role change and the
/// restart.
#[tokio::test]
async fn calico_rbac_fails_verify_when_the_restarted_controller_does_not_get_ready_in_time() {
    let fixture = Fixture::new(v3_13_2_rules()).await;
    let (client, ns, name) = (&fixture.client, &fixture.namespace, &fixture.name);
    wait_for_replica_sets(client, ns, name).await;
    let unschedulable = json!({"spec": {"template": {"spec": {
        "nodeSelector": {"kubemend.test/no-such-node": "true"}
    }}}});
    Api::<Deployment>::namespaced(client.clone(), ns)
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(&unschedulable),
        )
        .await
        .unwrap();
    let mut args = fixture.args();
    args["restart_timeout"] = json!("3s");
    let (code, result) = support::run_module("calico_rbac", &args);
    assert_eq!(code, 1, "{result}");
    assert_eq!(result["failed"], json!(true), "{result}");
    assert_eq!(result["failed_step"], json!("verify"), "{result}");
    assert_eq!(result["changed"], json!(true), "{result}");
    assert_eq!(result["added_rules"], pods_list_watch(), "{result}");
    assert_eq!(result["verified"], json!(true), "{result}");
    assert_eq!(result["controller_restarted"], json!(true), "{result}");
    assert_eq!(result["controller_pod"], json!(null), "{result}");
    let msg = result["msg"].as_str().unwrap();
    assert!(
        msg.contains("its rollout did not complete within 3s (restart_timeout)"),
        "{msg}"
    );
    assert_eq!(
        restarted_at(client, ns, name).await.as_deref(),
        result["controller_restarted_at"].as_str()
    );
    assert_etcd_v3_13_2_permissions(client, ns, name).await;
    fixture.cleanup().await;
}
