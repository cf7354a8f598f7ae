//! cert_refresh against the test bed: each node's microk8s certificate layout, the real
//! `microk8s refresh-certs` scripts of microk8s (tests/cluster/node/microk8s) run over real SSH
//! and sudo, the node's own apiserver serving what it signs, and the test bed's record of
//! every kubelite start and stop. Certificates are read back independently of kubemend, with
//! openssl over a TLS handshake.
//!
//! Every test holds all three node locks (a renewal restarts a node's kubelite, and the
//! pre-flight needs every node healthy) and removes a lock Lease left by an earlier run first.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{renew_all_by_hand, seed_cert as seed, served_cert, testcluster_ok, valid_in};

use support::{no_rolling_lock as no_lock_lease, rolling_args as args};

fn node_entry<'a>(result: &'a Value, name: &str) -> &'a Value {
    result["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("no entry for {name}: {result:#}"))
}

/// The entry of certificate `cert` of node `node`.
fn cert_entry<'a>(result: &'a Value, node: &str, cert: &str) -> &'a Value {
    node_entry(result, node)["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == cert)
        .unwrap_or_else(|| panic!("no {cert} on {node}: {result:#}"))
}

/// The nodes restarted since `since`, each once and never two down at once.
#[track_caller]
fn restarted_since(since: f64) -> Vec<String> {
    let restarts = support::restarts_one_at_a_time(&support::kubelite_events_since(since))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(restarts.values().all(|n| *n == 1), "{restarts:?}");
    restarts.into_keys().collect()
}

/// Every node's apiserver answers /readyz through a client that verifies it with the
/// cluster's CA (the test bed's kubeconfig, one context per node).
fn reachable_through_every_node() {
    for node in support::NODES {
        let out = support::testcluster(&["kubectl", "--context", node, "get", "--raw", "/readyz"]);
        assert!(
            out.status.success(),
            "{node}'s apiserver with the cluster's CA: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Waits until a check-mode run passes its pre-flight (a node restarted by a failed run may
/// still be catching up).
async fn until_fit(extra: &Value) {
    let mut check = args(extra);
    check["_ansible_check_mode"] = json!(true);
    support::wait_for(
        "every node fit for a run",
        Duration::from_secs(120),
        || async {
            match support::run_module("cert_refresh", &check) {
                (0, _) => Ok(()),
                (_, refused) => Err(refused["msg"].to_string()),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn cert_refresh_renews_the_expiring_server_cert_on_that_node_only_and_a_second_run_changes_nothing()
 {
    let _nodes = support::all_nodes_lock();
    no_lock_lease().await;
    renew_all_by_hand().await;
    seed("k8s02", "server.crt", 5);
    let short = served_cert("k8s02").unwrap();
    assert!(!valid_in(&short, 6).unwrap(), "seeded for 5 days");

    // Check mode: which certificate on which node, nothing done.
    let since = support::now();
    let mut check = args(&json!({}));
    check["_ansible_check_mode"] = json!(true);
    let (code, plan) = support::run_module("cert_refresh", &check);
    assert_eq!(code, 0, "{plan:#}");
    assert_eq!(plan["changed"], json!(true), "{plan:#}");
    assert_eq!(
        node_entry(&plan, "k8s02")["status"],
        "would renew",
        "{plan:#}"
    );
    assert_eq!(cert_entry(&plan, "k8s02", "server.crt")["action"], "renew");
    assert_eq!(
        cert_entry(&plan, "k8s02", "server.crt")["days_left"],
        json!(4),
        "{plan:#}"
    );
    assert_eq!(
        cert_entry(&plan, "k8s02", "front-proxy-client.crt")["action"],
        "keep"
    );
    assert_eq!(cert_entry(&plan, "k8s02", "ca.crt")["action"], "report");
    for node in ["k8s01", "k8s03"] {
        assert_eq!(node_entry(&plan, node)["status"], "skipped", "{plan:#}");
    }
    assert_eq!(served_cert("k8s02").unwrap(), short, "check mode renewed");
    assert_eq!(
        support::kubelite_events_since(since),
        [],
        "check mode restarted"
    );

    // The run: k8s02 only, its new certificate read back and served.
    let since = support::now();
    let (code, result) = support::run_module("cert_refresh", &args(&json!({})));
    assert_eq!(code, 0, "{result:#}");
    assert_eq!(result["changed"], json!(true), "{result:#}");
    assert_eq!(result["restarted"], json!(["k8s02"]), "{result:#}");
    let renewed = cert_entry(&result, "k8s02", "server.crt");
    assert_eq!(renewed["action"], "renewed", "{result:#}");
    assert!(
        renewed["renewed_days_left"].as_i64() >= Some(364),
        "{renewed:#}"
    );
    assert_eq!(renewed["served_not_after"], renewed["renewed_not_after"]);
    let timeline: Vec<&str> = node_entry(&result, "k8s02")["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["gate"].as_str().unwrap())
        .collect();
    assert!(
        timeline.contains(&"node Ready") && timeline.contains(&"certificates renewed"),
        "{timeline:?}"
    );
    // Independently: a year left on what k8s02 serves now, the others untouched.
    let served = served_cert("k8s02").unwrap();
    assert!(valid_in(&served, 363).unwrap(), "{served}");
    assert_eq!(restarted_since(since), ["k8s02"]);
    reachable_through_every_node();

    // Again: nothing is due, nothing is done.
    let since = support::now();
    let (code, again) = support::run_module("cert_refresh", &args(&json!({})));
    assert_eq!(code, 0, "{again:#}");
    assert_eq!(again["changed"], json!(false), "{again:#}");
    assert_eq!(again["restarted"], json!([]), "{again:#}");
    assert_eq!(again["skipped_nodes"].as_array().map(Vec::len), Some(3));
    assert_eq!(support::kubelite_events_since(since), [], "{again:#}");
}

#[tokio::test]
async fn cert_refresh_renews_two_nodes_one_at_a_time_stops_at_a_failed_gate_and_a_rerun_resumes() {
    let _nodes = support::all_nodes_lock();
    no_lock_lease().await;
    renew_all_by_hand().await;
    for node in support::NODES {
        seed(node, "server.crt", 5);
    }
    let given = json!({"order": "given", "nodes": ["k8s01", "k8s02", "k8s03"]});
    // k8s02's kubelite comes up 45 s after its renewal's restart, past the 30 s gate_timeout.
    testcluster_ok(&["fault", "k8s02", "slow-start=45"]);
    let since = support::now();
    let mut options = args(&given);
    options["gate_timeout"] = json!("30s");
    let (code, result) = support::run_module("cert_refresh", &options);
    assert_eq!(code, 1, "{result:#}");
    assert_eq!(result["restarted"], json!(["k8s01"]), "{result:#}");
    assert_eq!(result["failed_node"], json!("k8s02"), "{result:#}");
    assert_eq!(
        node_entry(&result, "k8s02")["failed_gate"],
        "apiserver /readyz",
        "{result:#}"
    );
    assert_eq!(result["not_started"], json!(["k8s03"]), "{result:#}");
    assert!(
        !valid_in(&served_cert("k8s03").unwrap(), 6).unwrap(),
        "k8s03 was not renewed"
    );
    assert!(
        !support::kubelite_events_since(since)
            .iter()
            .any(|e| e.1 == "k8s03"),
        "k8s03 was touched"
    );
    support::wait_until("k8s02's slow start", Duration::from_secs(90), || async {
        support::kubelite_events_since(since)
            .iter()
            .any(|e| e.1 == "k8s02" && e.2 == "started")
            .then_some(())
    })
    .await;
    testcluster_ok(&["fault", "clear", "k8s02"]);
    until_fit(&given).await;

    // The rerun resumes: k8s01, in the record, is skipped, and so is k8s02, whose certificate
    // was renewed before its gate failed; k8s03 is renewed.
    let since = support::now();
    let (code, rerun) = support::run_module("cert_refresh", &args(&given));
    assert_eq!(code, 0, "{rerun:#}");
    assert_eq!(rerun["restarted"], json!(["k8s03"]), "{rerun:#}");
    assert_eq!(
        rerun["lock"]["resumed_done"],
        json!(["k8s01 (certificates)"]),
        "{rerun:#}"
    );
    for node in support::NODES {
        assert!(
            valid_in(&served_cert(node).unwrap(), 363).unwrap(),
            "{node}"
        );
    }
    assert_eq!(restarted_since(since), ["k8s03"]);

    // Both renewed in one run, never two down at once.
    seed("k8s01", "server.crt", 5);
    seed("k8s03", "front-proxy-client.crt", 5);
    let since = support::now();
    let (code, both) = support::run_module("cert_refresh", &args(&given));
    assert_eq!(code, 0, "{both:#}");
    assert_eq!(both["restarted"], json!(["k8s01", "k8s03"]), "{both:#}");
    assert_eq!(
        cert_entry(&both, "k8s03", "front-proxy-client.crt")["action"],
        "renewed"
    );
    assert_eq!(restarted_since(since), ["k8s01", "k8s03"]);
    reachable_through_every_node();
}

#[tokio::test]
async fn cert_refresh_reports_a_failed_refresh_with_its_output_and_touches_nothing_further() {
    let _nodes = support::all_nodes_lock();
    no_lock_lease().await;
    renew_all_by_hand().await;
    seed("k8s01", "server.crt", 5);
    seed("k8s02", "server.crt", 5);
    let given = json!({"order": "given", "nodes": ["k8s01", "k8s02", "k8s03"]});
    // The node's CA key is gone: openssl cannot sign, microk8s restores its backup.
    testcluster_ok(&["fault", "k8s01", "refresh-fails"]);
    let since = support::now();
    let (code, result) = support::run_module("cert_refresh", &args(&given));
    testcluster_ok(&["fault", "clear", "k8s01"]);
    assert_eq!(code, 1, "{result:#}");
    assert_eq!(result["failed_node"], json!("k8s01"), "{result:#}");
    let failed = node_entry(&result, "k8s01");
    assert_eq!(failed["failed_gate"], "refresh-certs", "{failed:#}");
    let observed = failed["observed"].as_str().unwrap();
    assert!(
        observed.contains("Failed to produce new certificates. Reverting."),
        "{observed}"
    );
    assert!(
        result["msg"].as_str().unwrap().contains("refresh-certs"),
        "{}",
        result["msg"]
    );
    assert_eq!(result["not_started"], json!(["k8s02"]), "{result:#}");
    assert!(
        !valid_in(&served_cert("k8s01").unwrap(), 6).unwrap(),
        "k8s01's old certificate was restored"
    );
    assert!(!valid_in(&served_cert("k8s02").unwrap(), 6).unwrap());
    assert!(
        !support::kubelite_events_since(since)
            .iter()
            .any(|e| e.1 != "k8s01"),
        "another node was touched"
    );
    until_fit(&given).await;
    let (code, rerun) = support::run_module("cert_refresh", &args(&given));
    assert_eq!(code, 0, "{rerun:#}");
    assert_eq!(rerun["restarted"], json!(["k8s01", "k8s02"]), "{rerun:#}");
}

#[test]
fn cert_refresh_bad_input_fails_before_any_ssh_or_api_call() {
    for (options, option) in [
        (json!({"renew_before": 365}), "renew_before"),
        (json!({"renew_before": "soon"}), "renew_before"),
        (json!({"certificates": ["ca.crt"]}), "certificates"),
        (json!({"gate_timeout": "-5m"}), "gate_timeout"),
    ] {
        // No kubeconfig, no SSH: a validation error comes first.
        let mut options = options;
        options["kubeconfig"] = json!("/nonexistent/kubeconfig");
        let (code, result) = support::run_module("cert_refresh", &options);
        assert_eq!(code, 1, "{result:#}");
        assert_eq!(result["failed_step"], "validate", "{result:#}");
        assert!(
            result["msg"].as_str().unwrap().contains(option),
            "{option}: {}",
            result["msg"]
        );
    }
}
