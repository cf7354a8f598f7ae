//! diagnose against the test bed: the seeded incident's findings and hints, a clean scope, a
//! check the identity may not run, the Prometheus output and the `--fail-on` exit codes.
//!
//! The "node Ready while its Lease is stale" check is covered by a unit test
//! (`actions::diagnose::tests`): on the test bed a stopped node turns Unknown 20 s after its
//! Lease stops, too short a window to hold still for an assertion.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, PostParams};
use kube::config::Kubeconfig;
use serde_json::{Value, json};

/// The findings of `check`.
fn findings<'a>(result: &'a Value, check: &str) -> Vec<&'a Value> {
    result["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["check"] == check)
        .collect()
}

/// The status of `check` in `checks`.
fn check_status<'a>(result: &'a Value, check: &str) -> &'a Value {
    result["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["check"] == check)
        .unwrap_or_else(|| panic!("check {check} not reported: {result:#}"))
}

/// The stuck_pods finding of `kind` (terminating, pending) for namespace ci, if there is one.
fn stuck_in_ci<'a>(result: &'a Value, kind: &str) -> Option<&'a Value> {
    findings(result, "stuck_pods")
        .into_iter()
        .find(|f| f["id"] == format!("stuck_pods:{kind}:namespace/ci"))
}

/// `kubemend diagnose ARGS`: exit code and stdout.
fn cli(args: &[&str]) -> (i32, String) {
    let out = support::kubemend()
        .arg("diagnose")
        .args(args)
        .output()
        .expect("kubemend diagnose");
    (
        out.status.code().expect("an exit code"),
        String::from_utf8(out.stdout).expect("UTF-8"),
    )
}

#[tokio::test]
async fn the_seeded_incident_is_found_with_the_fix_for_each_finding() {
    let _incident = support::incident();
    let args = json!({"terminating_grace": "1s", "pending_age": "1s"});
    // The Terminating pod counts as stuck once its deletion deadline (grace period) passed.
    let result = support::wait_until(
        "diagnose to see both stuck pods",
        Duration::from_secs(120),
        || async {
            let (code, result) = support::run_module("diagnose", &args);
            assert_eq!(code, 0, "{result:#}");
            (stuck_in_ci(&result, "terminating").is_some()
                && stuck_in_ci(&result, "pending").is_some())
            .then_some(result)
        },
    )
    .await;
    assert_eq!(result["changed"], json!(false), "{result:#}");
    assert_eq!(result["failed"], json!(false), "{result:#}");
    calico_rbac_and_webhook_findings(&result);
    stuck_pod_findings(&result);
    calico_version_and_lease_findings(&result);

    // 9. SSH checks are skipped, said so.
    let kubelite = check_status(&result, "kubelite");
    assert_eq!(kubelite["status"], "skipped");
    assert_eq!(kubelite["reason"], "no SSH options given");

    // The summary counts what is listed.
    let count = |severity: &str| {
        result["findings"]
            .as_array()
            .expect("present")
            .iter()
            .filter(|f| f["severity"] == severity)
            .count()
    };
    for severity in ["info", "warning", "critical"] {
        assert_eq!(
            result["summary"][severity],
            json!(count(severity)),
            "{result:#}"
        );
    }

    // Check mode changes nothing either.
    let mut check = args.clone();
    check["_ansible_check_mode"] = json!(true);
    let (code, checked) = support::run_module("diagnose", &check);
    assert_eq!(code, 0, "{checked:#}");
    assert_eq!(checked["changed"], json!(false));
    assert!(!findings(&checked, "calico_rbac").is_empty());
    cli_exit_codes_and_table();
}

/// The finding `id`.
fn finding_by_id<'a>(result: &'a Value, id: &str) -> &'a Value {
    result["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["id"] == id)
        .unwrap_or_else(|| panic!("no finding {id}: {result:#}"))
}

#[tokio::test]
async fn over_ssh_the_seeded_lock_errors_and_snapshot_bloat_are_found_on_k8s02() {
    let _incident = support::incident();
    let ssh_config = support::cluster().ssh_config.clone();
    let (code, result) = support::run_module(
        "diagnose",
        &json!({"checks": ["kubelite"], "ssh_config": ssh_config}),
    );
    assert_eq!(code, 0, "{result:#}");
    assert_eq!(
        check_status(&result, "kubelite")["status"],
        "ran",
        "{result:#}"
    );

    // The journal's `database is locked` errors, within the 15m window.
    let locked = finding_by_id(&result, "kubelite:database_locked:node/k8s02");
    assert_eq!(locked["severity"], "warning", "{locked:#}");
    assert!(
        locked["data"]["count"].as_u64().expect("a count") >= 30,
        "{locked:#}"
    );
    let hint = locked["hint"].as_str().expect("a hint");
    assert!(hint.contains("stale watches"), "{hint}");
    assert!(
        hint.contains("snap restart microk8s.daemon-k8s-dqlite"),
        "{hint}"
    );
    assert_eq!(locked["fix"]["module"], "kubelite_restart", "{locked:#}");
    assert_eq!(locked["fix"]["options"]["nodes"], json!(["k8s02"]));
    assert_eq!(locked["fix"]["options"]["ssh_config"], json!(ssh_config));

    // 225 MiB of snapshots against 21.8 MiB of data.
    let snapshots = finding_by_id(&result, "kubelite:dqlite_snapshots:node/k8s02");
    assert_eq!(snapshots["severity"], "warning", "{snapshots:#}");
    // The snapshot: a sparse file, counted at its apparent size.
    assert!(
        snapshots["data"]["snapshot_bytes"]
            .as_u64()
            .expect("a size")
            >= 225 * 1024 * 1024,
        "{snapshots:#}"
    );
    assert_eq!(snapshots["data"]["data_bytes"], json!(22_858_957));
    let hint = snapshots["hint"].as_str().expect("a hint");
    assert!(hint.contains("microk8s.daemon-k8s-dqlite"), "{hint}");

    // The dqlite leader (wherever the real cluster has it now) is named by its member address,
    // which that node's info.yaml gives: 127.0.1.N is k8s0N.
    let dqlite = finding_by_id(&result, "kubelite:dqlite:node/k8s02");
    let leader = dqlite["data"]["leader"].as_str().expect("a leader");
    let n = leader
        .strip_prefix("127.0.1.")
        .and_then(|rest| rest.strip_suffix(":19001"))
        .expect("a test-bed member address");
    assert_eq!(
        dqlite["data"]["leader_node"],
        json!(format!("k8s0{n}")),
        "{dqlite:#}"
    );
    assert_eq!(
        dqlite["data"]["address"],
        json!("127.0.1.2:19001"),
        "{dqlite:#}"
    );

    // The other nodes: no lock errors, no bloat, dqlite healthy, the test bed's RBAC; no
    // feature-gate finding, since the test bed's datastore is etcd, not kine.
    for node in ["k8s01", "k8s03"] {
        for what in ["database_locked", "dqlite_snapshots", "dqlite"] {
            let id = format!("kubelite:{what}:node/{node}");
            assert_eq!(finding_by_id(&result, &id)["severity"], "info", "{id}");
        }
    }
    for f in findings(&result, "kubelite") {
        let id = f["id"].as_str().expect("an id");
        assert!(
            !id.contains("authorization_mode") && !id.contains("feature_gates"),
            "{f:#}"
        );
    }
}

#[tokio::test]
async fn without_become_a_journal_the_login_user_cannot_read_is_unread_not_zero() {
    let _incident = support::incident();
    let (code, result) = support::run_module(
        "diagnose",
        &json!({
            "checks": ["kubelite"],
            "ssh_config": support::cluster().ssh_config,
            "become": false,
        }),
    );
    assert_eq!(code, 0, "{result:#}");
    // k8s02's journal holds the seeded lock errors, but k8sadmin is not in adm or
    // systemd-journal: no count at all, rather than a reassuring 0.
    assert!(
        !findings(&result, "kubelite")
            .iter()
            .any(|f| f["id"] == "kubelite:database_locked:node/k8s02"),
        "{result:#}"
    );
    let unread = finding_by_id(&result, "kubelite:unread:node/k8s02");
    let evidence = unread["evidence"].as_str().expect("evidence");
    assert!(
        evidence.contains("journal of snap.microk8s.daemon-kubelite")
            && evidence.contains("cannot read the system journal"),
        "{unread:#}"
    );
    // Nor is dqlite judged from files it could not read: unread, not critical.
    assert!(
        evidence.contains("dqlite: ") && evidence.contains("info.yaml"),
        "{unread:#}"
    );
    assert!(
        !findings(&result, "kubelite")
            .iter()
            .any(|f| f["id"] == "kubelite:dqlite:node/k8s02"),
        "{result:#}"
    );
}

#[tokio::test]
async fn a_node_ssh_cannot_reach_is_named_and_the_others_are_still_checked() {
    let _node = support::node_lock("k8s03");
    let out = support::testcluster(&["fault", "k8s03", "ssh-down"]);
    assert!(out.status.success(), "{out:?}");
    let (code, result) = support::run_module(
        "diagnose",
        &json!({"checks": ["kubelite"], "ssh_config": support::cluster().ssh_config}),
    );
    assert_eq!(code, 0, "{result:#}");
    assert_eq!(
        check_status(&result, "kubelite")["status"],
        "ran",
        "{result:#}"
    );
    let down = finding_by_id(&result, "kubelite:ssh:node/k8s03");
    assert_eq!(down["severity"], "warning", "{down:#}");
    assert!(
        down["evidence"]
            .as_str()
            .expect("evidence")
            .starts_with("SSH checks skipped on this node"),
        "{down:#}"
    );
    assert!(
        !findings(&result, "kubelite")
            .iter()
            .any(|f| f["object"] == "node/k8s03" && f["id"] != "kubelite:ssh:node/k8s03"),
        "{result:#}"
    );
    for node in ["k8s01", "k8s02"] {
        let id = format!("kubelite:dqlite:node/{node}");
        assert_eq!(finding_by_id(&result, &id)["severity"], "info", "{id}");
    }
    let out = support::testcluster(&["fault", "clear", "k8s03"]);
    assert!(out.status.success(), "{out:?}");
}

/// accept-new adds the nodes' keys to known_hosts in a real run, and in check mode to a scratch
/// copy only; a known_hosts path with spaces is one file (ssh splits the option at
/// whitespace).
#[tokio::test]
async fn accept_new_writes_known_hosts_in_a_real_run_and_never_in_check_mode() {
    // Every node is read: none may be taken down by another test meanwhile.
    let _nodes = support::all_nodes_lock();
    let dir = tempfile::tempdir().unwrap();
    let spaced = dir.path().join("known hosts dir");
    std::fs::create_dir(&spaced).unwrap();
    let known_hosts = spaced.join("known hosts");
    std::fs::write(&known_hosts, "").unwrap();
    let options = json!({
        "checks": ["kubelite"],
        "ssh_config": support::cluster().ssh_config,
        "known_hosts": known_hosts,
        "host_key_checking": "accept-new",
    });
    let dqlite_read = |result: &Value| {
        ["k8s01", "k8s02", "k8s03"].iter().all(|node| {
            let id = format!("kubelite:dqlite:node/{node}");
            findings(result, "kubelite")
                .iter()
                .any(|f| f["id"] == id.as_str())
        })
    };
    let mut check = options.clone();
    check["_ansible_check_mode"] = json!(true);
    let (code, result) = support::run_module("diagnose", &check);
    assert_eq!(code, 0, "{result:#}");
    assert!(dqlite_read(&result), "every node was read: {result:#}");
    assert_eq!(
        std::fs::read_to_string(&known_hosts).unwrap(),
        "",
        "check mode wrote known_hosts"
    );
    let (code, result) = support::run_module("diagnose", &options);
    assert_eq!(code, 0, "{result:#}");
    assert!(dqlite_read(&result), "every node was read: {result:#}");
    let written = std::fs::read_to_string(&known_hosts).unwrap();
    for node in ["k8s01", "k8s02", "k8s03"] {
        assert!(
            written.lines().any(|l| l.starts_with(&format!("{node} "))),
            "{node} in {written}"
        );
    }
    // Nothing else was made beside it (ssh would have read "known", "hosts" as files).
    let beside: Vec<_> = std::fs::read_dir(&spaced).unwrap().flatten().collect();
    assert_eq!(beside.len(), 1, "{beside:?}");
}

fn calico_rbac_and_webhook_findings(result: &Value) {
    // 1. The Calico RBAC gap, confirmed by SubjectAccessReview.
    let calico = findings(result, "calico_rbac");
    assert_eq!(calico.len(), 1, "{result:#}");
    assert_eq!(calico[0]["severity"], "critical", "{:#}", calico[0]);
    assert_eq!(calico[0]["object"], "clusterrole/calico-kube-controllers");
    let evidence = calico[0]["evidence"].as_str().expect("a string");
    // What the enabled workloadendpoint controller reads on the Kubernetes datastore.
    assert!(evidence.contains("pods (core): list, watch"), "{evidence}");
    assert!(
        evidence.contains("SubjectAccessReview denies 2"),
        "{evidence}"
    );
    assert_eq!(calico[0]["fix"]["module"], "calico_rbac");
    // The seed applies the role with kubectl apply, as microk8s applies its cni.yaml: a fix in
    // the cluster alone would be reverted by the next apply, so the fix asks for the patch too.
    assert_eq!(
        calico[0]["fix"]["command"],
        "kubemend calico-rbac --gitops patch"
    );
    let hint = calico[0]["hint"].as_str().expect("a string");
    assert!(hint.contains("args/cni-network/cni.yaml"), "{hint}");
    assert_eq!(calico[0]["data"]["ownership"]["owner"], "kubectl_apply");

    // 3. The stale NewRelic webhook: failurePolicy Ignore, so a warning.
    let webhook = findings(result, "stale_webhook")
        .into_iter()
        .find(|f| {
            f["object"] == "mutatingwebhookconfiguration/newrelic-bundle-nri-metadata-injection"
        })
        .unwrap_or_else(|| panic!("no newrelic finding: {result:#}"));
    assert_eq!(webhook["severity"], "warning", "{webhook:#}");
    assert!(
        webhook["evidence"]
            .as_str()
            .expect("present")
            .contains("does not exist"),
        "{webhook:#}"
    );
    assert_eq!(webhook["fix"]["module"], "stale_webhook");
    assert_eq!(
        webhook["fix"]["options"],
        json!({"name": "newrelic-bundle-nri-metadata-injection"})
    );
}

fn stuck_pod_findings(result: &Value) {
    // 4. The AWX pod Pending unseen, and the frontend pod Terminating, with their fix.
    let pending = stuck_in_ci(result, "pending").expect("present");
    assert_eq!(pending["severity"], "critical", "{pending:#}");
    assert!(
        pending["evidence"]
            .as_str()
            .expect("present")
            .contains("automation-job-1865-ntgbq"),
        "{pending:#}"
    );
    assert_eq!(pending["fix"]["module"], "stuck_pods");
    assert_eq!(pending["fix"]["options"]["kinds"], json!(["pending"]));
    assert_eq!(pending["fix"]["options"]["namespaces"], json!(["ci"]));
    let terminating = stuck_in_ci(result, "terminating").expect("present");
    assert_eq!(terminating["severity"], "warning", "{terminating:#}");
    assert!(
        terminating["evidence"]
            .as_str()
            .expect("present")
            .contains("dependency-track-frontend"),
        "{terminating:#}"
    );
    assert_eq!(terminating["data"]["count"], 1, "{terminating:#}");
    assert_eq!(
        terminating["fix"]["options"]["kinds"],
        json!(["terminating"])
    );
}

fn scheduler_lease_finding(result: &Value) -> &Value {
    findings(result, "leader_leases")
        .into_iter()
        .find(|f| f["object"] == "lease/kube-system/kube-scheduler")
        .unwrap_or_else(|| panic!("no scheduler lease finding: {result:#}"))
}

fn calico_version_and_lease_findings(result: &Value) {
    // 7. Calico v3.13.2 on Kubernetes v1.34.
    let version = findings(result, "calico_version");
    assert_eq!(version.len(), 1, "{result:#}");
    assert_eq!(version[0]["severity"], "warning", "{:#}", version[0]);
    assert_eq!(version[0]["data"]["calico_version"], "v3.13.2");
    assert!(
        version[0]["data"]["kubernetes_version"]
            .as_str()
            .expect("present")
            .starts_with("v1.34"),
        "{:#}",
        version[0]
    );
    assert_eq!(version[0]["fix"]["module"], "calico_rbac");

    // 5. The scheduler's leader changing now (the seeded LeaderElection Events), its
    // leaseTransitions in the thousands.
    let scheduler = scheduler_lease_finding(result);
    assert_eq!(scheduler["severity"], "warning", "{scheduler:#}");
    assert!(
        scheduler["data"]["changes_in_window"]
            .as_u64()
            .expect("present")
            >= 3,
        "{scheduler:#}"
    );
    assert!(
        scheduler["data"]["lease_transitions"]
            .as_i64()
            .expect("present")
            >= 4499,
        "{scheduler:#}"
    );
    assert!(
        scheduler["hint"]
            .as_str()
            .expect("a string")
            .contains("datastore"),
        "{scheduler:#}"
    );
}

/// `--fail-on` and the text table, on the seeded incident.
fn cli_exit_codes_and_table() {
    // --fail-on: 3 when a finding is that severe, else 0.
    assert_eq!(cli(&["--fail-on", "critical"]).0, 3);
    assert_eq!(
        cli(&["--checks", "stale_webhook", "--fail-on", "warning"]).0,
        3
    );
    assert_eq!(
        cli(&["--checks", "stale_webhook", "--fail-on", "critical"]).0,
        0
    );
    assert_eq!(cli(&["--checks", "stale_webhook"]).0, 0);

    // The text table names the fix.
    let (code, text) = cli(&["--checks", "calico_rbac,stale_webhook"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("SEVERITY"), "{text}");
    assert!(text.contains("CRITICAL  calico_rbac"), "{text}");
    assert!(
        text.contains("kubemend stale-webhook --name newrelic-bundle-nri-metadata-injection"),
        "{text}"
    );
}

#[tokio::test]
async fn a_clean_namespace_has_no_warning_or_critical_finding() {
    let reaper = support::Reaper::new("diagnose-clean");
    let client = support::client().await;
    let namespace = reaper.namespace(&client).await;
    let (code, result) = support::run_module(
        "diagnose",
        &json!({
            "checks": ["stuck_pods", "rbac_enforced"],
            "namespaces": [namespace],
            "terminating_grace": "1s",
            "pending_age": "1s",
            "fail_on": "warning",
        }),
    );
    assert_eq!(code, 0, "{result:#}");
    assert_eq!(result["summary"]["warning"], 0, "{result:#}");
    assert_eq!(result["summary"]["critical"], 0, "{result:#}");
    assert_eq!(result["summary"]["skipped"], 0, "{result:#}");
    assert_eq!(result["fail_on_reached"], json!(false), "{result:#}");
    let stuck = findings(&result, "stuck_pods");
    assert_eq!(stuck.len(), 1, "{result:#}");
    assert_eq!(stuck[0]["object"], format!("namespace/{namespace}"));
    // The test bed's apiservers run with RBAC.
    assert_eq!(findings(&result, "rbac_enforced")[0]["severity"], "info");

    let (code, _) = cli(&[
        "--checks",
        "stuck_pods",
        "--namespaces",
        &namespace,
        "--fail-on",
        "warning",
    ]);
    assert_eq!(code, 0);
}

/// A token for ServiceAccount `name` in `namespace`, bound to a ClusterRole (in `reaper`'s
/// care) that may read everything and review access, but not read /metrics; and the API
/// server URL and CA file.
async fn limited_identity(
    client: &kube::Client,
    reaper: &support::Reaper,
    namespace: &str,
) -> BTreeMap<&'static str, String> {
    let name = reaper.id.clone();
    support::create(
        &Api::<ClusterRole>::all(client.clone()),
        json!({
            "metadata": {"name": name, "labels": reaper.labels()},
            "rules": [
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"],
                 "verbs": ["create"]},
                {"nonResourceURLs": ["/version"], "verbs": ["get"]},
            ],
        }),
    )
    .await;
    support::create(
        &Api::<ServiceAccount>::namespaced(client.clone(), namespace),
        json!({"metadata": {"name": "diagnose"}}),
    )
    .await;
    support::create(
        &Api::<ClusterRoleBinding>::all(client.clone()),
        json!({
            "metadata": {"name": name, "labels": reaper.labels()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": "diagnose", "namespace": namespace}],
        }),
    )
    .await;
    let request: TokenRequest =
        support::from_json(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}));
    let token = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request("diagnose", &PostParams::default(), &request)
        .await
        .expect("token request")
        .status
        .expect("token")
        .token;
    let kubeconfig = Kubeconfig::read_from(&support::cluster().kubeconfig).expect("kubeconfig");
    let context = kubeconfig.current_context.clone().expect("current context");
    let cluster_name = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .expect("context's cluster");
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.clone())
        .expect("cluster");
    BTreeMap::from([
        ("K8S_AUTH_HOST", cluster.server.expect("server")),
        ("K8S_AUTH_API_KEY", token),
        (
            "K8S_AUTH_SSL_CA_CERT",
            cluster.certificate_authority.expect("CA file"),
        ),
    ])
}

#[tokio::test]
async fn a_check_the_identity_may_not_run_is_skipped_and_the_others_run() {
    let reaper = support::Reaper::new("diagnose-denied");
    let client = support::client().await;
    let namespace = reaper.namespace(&client).await;
    let env = limited_identity(&client, &reaper, &namespace).await;
    let mut cmd = support::kubemend();
    cmd.env_remove("KUBECONFIG")
        .envs(&env)
        .args(["diagnose", "--output", "json"]);
    let (code, result) = support::result_of(&cmd.output().expect("kubemend diagnose"));
    assert_eq!(code, 0, "{result:#}");
    let metrics = check_status(&result, "apiserver_403");
    assert_eq!(metrics["status"], "skipped", "{result:#}");
    assert!(
        metrics["reason"]
            .as_str()
            .expect("present")
            .starts_with("permission denied"),
        "{metrics:#}"
    );
    for check in [
        "rbac_enforced",
        "stale_webhook",
        "stuck_pods",
        "leader_leases",
        "node_leases",
    ] {
        assert_eq!(
            check_status(&result, check)["status"],
            "ran",
            "{check}: {result:#}"
        );
    }
    assert!(
        result["msg"]
            .as_str()
            .expect("a string")
            .contains("apiserver_403"),
        "{result:#}"
    );
}

fn venv_python() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        path.exists(),
        "{} is missing: run `make venv` (tests/ansible/venv.sh)",
        path.display()
    );
    path
}

#[test]
fn prometheus_output_parses_with_the_prometheus_client() {
    let (code, text) = cli(&[
        "--checks",
        "rbac_enforced,node_leases,kubelite",
        "--output",
        "prometheus",
    ]);
    assert_eq!(code, 0, "{text}");
    let parser = r"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    out[family.name] = {'type': family.type, 'samples': [[s.labels, s.value] for s in family.samples]}
print(json.dumps(out))
";
    let mut child = Command::new(venv_python())
        .args(["-c", parser])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    std::io::Write::write_all(&mut child.stdin.take().expect("present"), text.as_bytes())
        .expect("present");
    let out = child.wait_with_output().expect("present");
    assert!(
        out.status.success(),
        "the parser refused:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let families: Value = serde_json::from_slice(&out.stdout).expect("present");
    let findings = &families["kubemend_diagnose_findings"];
    assert_eq!(findings["type"], "gauge", "{families:#}");
    let samples = findings["samples"].as_array().expect("present");
    // A gauge per check and severity.
    assert_eq!(samples.len(), 3 * 3, "{families:#}");
    assert!(samples.iter().any(
        |s| s[0] == json!({"check": "rbac_enforced", "severity": "info"})
            && s[1].as_f64() == Some(1.0)
    ));
    let skipped = families["kubemend_diagnose_check_skipped"]["samples"]
        .as_array()
        .expect("present");
    assert!(
        skipped
            .iter()
            .any(|s| s[0] == json!({"check": "kubelite"}) && s[1].as_f64() == Some(1.0)),
        "{families:#}"
    );
    assert_eq!(
        families["kubemend_diagnose_success"]["samples"][0][1].as_f64(),
        Some(1.0)
    );
}

/// After the fixes diagnose names (calico_rbac, stale_webhook on the newrelic configuration,
/// stuck_pods in the incident's namespace), their findings are gone.
#[tokio::test]
async fn after_the_fixes_the_incident_findings_are_gone() {
    let _incident = support::incident();
    // A window of 90s: the seeded leader changes (the last 20s before the seed) are in it now,
    // and age out of it while the fixes leave the Lease alone.
    let args = json!({"terminating_grace": "1s", "pending_age": "1s", "window": "90s"});
    support::wait_until(
        "diagnose to see both stuck pods",
        Duration::from_secs(120),
        || async {
            let (_, result) = support::run_module("diagnose", &args);
            (stuck_in_ci(&result, "terminating").is_some()
                && stuck_in_ci(&result, "pending").is_some()
                && findings(&result, "calico_rbac")
                    .iter()
                    .any(|f| f["severity"] == "critical")
                && scheduler_lease_finding(&result)["severity"] == "warning")
                .then_some(())
        },
    )
    .await;
    for (module, fix) in [
        ("calico_rbac", json!({})),
        (
            "stale_webhook",
            json!({"name": "newrelic-bundle-nri-metadata-injection"}),
        ),
        (
            "stuck_pods",
            json!({"namespaces": ["ci"], "terminating_grace": "1s", "pending_age": "1s",
                   "include_bare_pods": true}),
        ),
    ] {
        let (code, result) = support::run_module(module, &fix);
        assert_eq!(code, 0, "{module}: {result:#}");
        assert_eq!(result["changed"], json!(true), "{module}: {result:#}");
    }
    let (code, after) = support::run_module("diagnose", &args);
    assert_eq!(code, 0, "{after:#}");
    // What remains of the Calico check is the info that nothing is missing.
    assert!(
        findings(&after, "calico_rbac")
            .iter()
            .all(|f| f["severity"] == "info"),
        "{after:#}"
    );
    assert!(
        !findings(&after, "stale_webhook")
            .iter()
            .any(|f| f["object"].to_string().contains("newrelic")),
        "{after:#}"
    );
    assert!(stuck_in_ci(&after, "terminating").is_none(), "{after:#}");
    assert!(stuck_in_ci(&after, "pending").is_none(), "{after:#}");
    // Leader election stable since: the warning clears once the changes leave the window,
    // whatever the lifetime leaseTransitions.
    let stable = support::wait_for(
        "the scheduler lease warning to clear",
        Duration::from_secs(180),
        || async {
            let (_, result) = support::run_module("diagnose", &args);
            let lease = scheduler_lease_finding(&result).clone();
            if lease["severity"] == "info" {
                Ok(lease)
            } else {
                Err(lease["evidence"].to_string())
            }
        },
    )
    .await;
    assert!(
        stable["data"]["lease_transitions"]
            .as_i64()
            .expect("present")
            >= 4499,
        "{stable:#}"
    );
}

/// The scheduler's and controller-manager's watches on k8s01 break under them for real: the
/// kernel destroys their connections to the node's apiserver (`testcluster fault k8s01
/// watch-break`, as an apiserver dropping them does), and their own client-go logs each broken
/// watch. diagnose counts those lines on k8s01, warns, and names kubelite_restart for k8s01.
/// (An apiserver restarted on its own is not possible on microk8s: one kubelite process runs
/// it with the scheduler, so restarting it restarts the scheduler too.)
#[tokio::test]
async fn real_broken_watches_are_counted_on_their_node() {
    let _node = support::node_lock("k8s01");
    let ssh_config = support::cluster().ssh_config.clone();
    let scheduler_pid = || support::ssh_ok("k8s01", "pgrep -f -x '.* kube-scheduler .*'");
    let args = json!({"checks": ["kubelite"], "ssh_config": ssh_config, "nodes": ["k8s01"],
                      "window": "1h"});
    let watch_errors = |result: &Value| {
        finding_by_id(result, "kubelite:watch_errors:node/k8s01")["data"]["count"]
            .as_u64()
            .expect("a count")
    };
    let (code, before) = support::run_module("diagnose", &args);
    assert_eq!(code, 0, "{before:#}");
    let before = watch_errors(&before);
    let pid = scheduler_pid();
    let restarts = support::unit_property("k8s01", "NRestarts");

    let since = support::now().floor();
    let out = support::testcluster(&["fault", "k8s01", "watch-break"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The scheduler's own lines, read straight from the node's journal: its Pod watch broke.
    let pid = pid.trim().to_owned();
    let logged = support::wait_for(
        "the scheduler to log its broken Pod watch",
        Duration::from_secs(60),
        || {
            let pid = pid.clone();
            async move {
                let journal = support::ssh_ok(
                    "k8s01",
                    &format!(
                        "sudo journalctl -u snap.microk8s.daemon-kubelite --since=@{since} \
                         --no-pager -o short-unix"
                    ),
                );
                let broken: Vec<&str> = journal
                    .lines()
                    .filter(|l| {
                        l.contains("watch ended with error") || l.contains("Failed to watch")
                    })
                    .collect();
                if broken
                    .iter()
                    .any(|l| l.contains(&format!("[{pid}]")) && l.contains("type=\"*v1.Pod\""))
                {
                    Ok(broken.len() as u64)
                } else {
                    Err(format!(
                        "{} watch-error line(s), none of pid {pid} for *v1.Pod",
                        broken.len()
                    ))
                }
            }
        },
    )
    .await;
    // Under a running scheduler: the same process, the unit never restarted.
    assert_eq!(scheduler_pid().trim(), pid);
    assert_eq!(support::unit_property("k8s01", "NRestarts"), restarts);

    let (code, after) = support::run_module("diagnose", &args);
    assert_eq!(code, 0, "{after:#}");
    let finding = finding_by_id(&after, "kubelite:watch_errors:node/k8s01");
    let count = watch_errors(&after);
    assert!(
        count >= logged && count > before,
        "before {before}, logged {logged}: {finding:#}"
    );
    // Far above the review's one per 10 minutes, even over the hour.
    assert_eq!(finding["severity"], "warning", "{finding:#}");
    assert_eq!(finding["fix"]["module"], "kubelite_restart", "{finding:#}");
    assert_eq!(
        finding["fix"]["options"]["nodes"],
        json!(["k8s01"]),
        "{finding:#}"
    );
}

// The certs check: the test bed's apiservers serve each node's
// /var/snap/microk8s/current/certs/server.crt; one seeded to expire in 5 days is critical, read
// over SSH and read through the TLS handshake alone (no SSH option given).

/// Gives the node's server.crt a year again when the test ends, passed or not, as the test
/// bed makes it.
struct RenewOnDrop(&'static str);

impl Drop for RenewOnDrop {
    fn drop(&mut self) {
        let out = support::testcluster(&["seed", "cert", self.0, "server.crt", "365"]);
        if !out.status.success() {
            eprintln!(
                "{}: server.crt not renewed: {}",
                self.0,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[tokio::test]
async fn a_server_certificate_expiring_in_5_days_is_critical_over_ssh_and_over_tls_alone() {
    let node = "k8s03";
    let _lock = support::node_lock(node);
    let _renew = RenewOnDrop(node);
    let seeded = support::testcluster(&["seed", "cert", node, "server.crt", "5"]);
    assert!(
        seeded.status.success(),
        "{}",
        String::from_utf8_lossy(&seeded.stderr)
    );

    // Over SSH: the file, with its subject and issuer; the served certificate is the same one.
    let ssh_config = support::cluster().ssh_config.clone();
    let (code, result) = support::run_module(
        "diagnose",
        &json!({"checks": ["certs"], "ssh_config": ssh_config}),
    );
    assert_eq!(code, 0, "{result:#}");
    let file = finding_by_id(&result, &format!("certs:server.crt:node/{node}"));
    assert_eq!(file["severity"], "critical", "{file:#}");
    // Re-signed for 5 days a moment ago: 4 whole days and some hours as microk8s counts them,
    // or 5 when read within the second the seeding ended.
    let days = file["data"]["days_left"].as_i64().unwrap();
    assert!((4..=5).contains(&days), "{file:#}");
    assert!(
        file["data"]["subject"]
            .as_str()
            .unwrap()
            .ends_with("CN=127.0.0.1"),
        "{file:#}"
    );
    assert_eq!(file["fix"]["module"], "cert_refresh", "{file:#}");
    assert_eq!(file["fix"]["options"]["nodes"], json!([node]), "{file:#}");
    assert_eq!(file["fix"]["options"]["ssh_config"], json!(ssh_config));
    let summary = finding_by_id(&result, &format!("certs:node/{node}"));
    let listed: Vec<&str> = summary["data"]["certs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cert"].as_str().unwrap())
        .collect();
    for cert in ["ca.crt", "server.crt", "front-proxy-client.crt"] {
        assert!(listed.contains(&cert), "{cert} in {listed:?}");
    }
    assert!(
        !result["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == format!("certs:served:node/{node}")
                || f["id"] == format!("certs:served_differs:node/{node}")),
        "{result:#}"
    );

    // Without SSH: the certificate the node's apiserver serves, read by the handshake alone.
    let (code, result) = support::run_module("diagnose", &json!({"checks": ["certs"]}));
    assert_eq!(code, 0, "{result:#}");
    let served = finding_by_id(&result, &format!("certs:served:node/{node}"));
    assert_eq!(served["severity"], "critical", "{served:#}");
    // 4, or 5 when read within the second the seeding ended.
    let days = served["data"]["days_left"].as_i64().unwrap();
    assert!((4..=5).contains(&days), "{served:#}");
    assert_eq!(served["fix"]["module"], "cert_refresh", "{served:#}");
    assert_eq!(
        served["fix"]["command"],
        format!("kubemend cert-refresh --nodes {node} --renew-before 30")
    );
    // The other nodes' apiservers were read too.
    for other in support::NODES.iter().filter(|n| **n != node) {
        let summary = finding_by_id(&result, &format!("certs:node/{other}"));
        assert_eq!(summary["data"]["certs"][0]["cert"], "served", "{summary:#}");
    }
}
