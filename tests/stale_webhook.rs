//! stale_webhook against the test-bed cluster.
//!
//! Each test creates its own webhook configurations (unique names) pointing at Services in its
//! own namespace; one test works on the seeded newrelic configuration under the incident lock.
//! Scans with `detect: true` run in check mode only, so they never delete another test's
//! objects.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

fn webhook(name: &str, namespace: &str, service: &str) -> Value {
    json!({
        "name": format!("{name}.kubemend.test"),
        "clientConfig": {"service": {"namespace": namespace, "name": service, "port": 443}},
        "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                   "resources": ["configmaps"], "scope": "Namespaced"}],
        // Only objects nobody creates: never in the way of other tests.
        "objectSelector": {"matchLabels": {"kubemend.test/never": "true"}},
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Ignore",
        "timeoutSeconds": 5
    })
}

async fn create_mutating(client: &Client, name: &str, webhooks: Vec<Value>) -> String {
    let object: MutatingWebhookConfiguration =
        serde_json::from_value(json!({"metadata": {"name": name}, "webhooks": webhooks})).unwrap();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &object)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap()
}

/// A Service with one EndpointSlice whose single endpoint is `ready`.
async fn service_with_endpoint(client: &Client, namespace: &str, name: &str, ready: bool) {
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-manual"), "namespace": namespace,
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.1.2.3"], "conditions": {"ready": ready}}],
        "ports": [{"name": "https", "port": 8443, "protocol": "TCP"}]
    }))
    .unwrap();
    Api::<EndpointSlice>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &slice)
        .await
        .unwrap();
}

async fn cleanup(client: &Client, namespace: &str, mutating: &[&str]) {
    let dp = DeleteParams::default();
    for name in mutating {
        let _ = Api::<MutatingWebhookConfiguration>::all(client.clone())
            .delete(name, &dp)
            .await;
    }
    let _ = Api::<Namespace>::all(client.clone())
        .delete(namespace, &dp)
        .await;
}

#[tokio::test]
async fn stale_webhook_deletes_configuration_whose_service_is_missing_and_returns_it_whole() {
    support::cluster();
    let client = support::client().await;
    let namespace = support::namespace(&client, "webhook").await;
    let name = support::unique("stale-mwc");
    let uid = create_mutating(&client, &name, vec![webhook("a", &namespace, "gone")]).await;
    let api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let original = serde_json::to_value(api.get(&name).await.unwrap()).unwrap();

    // Check mode: reported, nothing deleted, no file written.
    let backup = tempfile::tempdir().unwrap();
    let backup_dir = backup.path().join("backups");
    let args = json!({"name": name, "backup_dir": backup_dir, "_ansible_check_mode": true});
    let (code, result) = support::run_module("stale_webhook", &args);
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["changed"], json!(true), "{result}");
    assert!(api.get_opt(&name).await.unwrap().is_some());
    assert!(!backup_dir.exists());

    let args = json!({"name": name, "backup_dir": backup_dir, "_ansible_diff": true});
    let (code, result) = support::run_module("stale_webhook", &args);
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["changed"], json!(true), "{result}");
    let deleted = &result["deleted"][0];
    assert_eq!(deleted["uid"], json!(uid));
    assert_eq!(
        deleted["object"], original,
        "the deleted object is returned whole"
    );
    assert_eq!(result["diff"]["after"], json!(""));
    assert!(
        result["diff"]["before"]
            .as_str()
            .unwrap()
            .contains("a.kubemend.test")
    );
    let evidence = result["configurations"][0]["webhooks"][0]["reason"]
        .as_str()
        .unwrap();
    assert!(
        evidence.contains(&format!("service {namespace}/gone does not exist")),
        "{evidence}"
    );
    assert!(api.get_opt(&name).await.unwrap().is_none());

    // The backup restores the object (what `kubectl apply -f` would create).
    let file = deleted["backup_file"].as_str().unwrap();
    let manifest: Value = serde_saphyr::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let restored: MutatingWebhookConfiguration = serde_json::from_value(manifest).unwrap();
    let created = api.create(&PostParams::default(), &restored).await.unwrap();
    assert_eq!(
        serde_json::to_value(&created.webhooks).unwrap(),
        original["webhooks"]
    );
    api.delete(&name, &DeleteParams::default()).await.unwrap();

    let (code, again) = support::run_module("stale_webhook", &json!({"name": name}));
    assert_eq!(code, 0, "{again}");
    assert_eq!(again["changed"], json!(false), "{again}");
    cleanup(&client, &namespace, &[]).await;
}

#[tokio::test]
async fn stale_webhook_never_deletes_a_configuration_whose_service_has_ready_endpoints() {
    support::cluster();
    let client = support::client().await;
    let namespace = support::namespace(&client, "webhook").await;
    service_with_endpoint(&client, &namespace, "live", true).await;
    let live = support::unique("live-mwc");
    create_mutating(&client, &live, vec![webhook("a", &namespace, "live")]).await;
    // Half live, half stale: kept without force.
    let mixed = support::unique("mixed-mwc");
    create_mutating(
        &client,
        &mixed,
        vec![
            webhook("a", &namespace, "live"),
            webhook("b", &namespace, "gone"),
        ],
    )
    .await;
    let api = Api::<MutatingWebhookConfiguration>::all(client.clone());

    for name in [&live, &mixed] {
        let (code, result) = support::run_module("stale_webhook", &json!({"name": name}));
        assert_eq!(code, 0, "{result}");
        assert_eq!(result["changed"], json!(false), "{result}");
        assert!(api.get_opt(name).await.unwrap().is_some());
    }
    let (_, result) = support::run_module("stale_webhook", &json!({"name": mixed}));
    let verdicts: Vec<&str> = result["configurations"][0]["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["live", "stale"]);

    // A scan (check mode: it would otherwise touch other tests' objects) keeps the live one.
    let (code, scan) = support::run_module(
        "stale_webhook",
        &json!({"detect": true, "kind": "mutating", "_ansible_check_mode": true}),
    );
    assert_eq!(code, 0, "{scan}");
    let report = scan["configurations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == json!(live))
        .unwrap();
    assert_eq!(report["stale"], json!(false), "{report}");
    assert!(
        !scan["deleted"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == json!(live)),
        "{scan}"
    );

    // force deletes the mixed one, never the live one.
    let (code, result) =
        support::run_module("stale_webhook", &json!({"name": mixed, "force": true}));
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["changed"], json!(true), "{result}");
    let (_, result) = support::run_module("stale_webhook", &json!({"name": live, "force": true}));
    assert_eq!(result["changed"], json!(false), "{result}");
    assert!(api.get_opt(&live).await.unwrap().is_some());
    cleanup(&client, &namespace, &[&live, &mixed]).await;
}

#[tokio::test]
async fn stale_webhook_deletes_validating_configuration_without_ready_endpoints() {
    support::cluster();
    let client = support::client().await;
    let namespace = support::namespace(&client, "webhook").await;
    service_with_endpoint(&client, &namespace, "notready", false).await;
    let name = support::unique("notready-vwc");
    let object: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": name},
        "webhooks": [webhook("a", &namespace, "notready")]
    }))
    .unwrap();
    let api = Api::<ValidatingWebhookConfiguration>::all(client.clone());
    api.create(&PostParams::default(), &object).await.unwrap();
    let (code, result) = support::run_module(
        "stale_webhook",
        &json!({"name": name, "kind": "validating"}),
    );
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["changed"], json!(true), "{result}");
    assert_eq!(
        result["deleted"][0]["kind"],
        json!("ValidatingWebhookConfiguration")
    );
    let reason = result["configurations"][0]["webhooks"][0]["reason"]
        .as_str()
        .unwrap();
    assert!(reason.contains("no ready endpoint"), "{reason}");
    assert!(api.get_opt(&name).await.unwrap().is_none());
    cleanup(&client, &namespace, &[]).await;
}

#[tokio::test]
async fn stale_webhook_leaves_url_webhooks_alone() {
    support::cluster();
    let client = support::client().await;
    let name = support::unique("url-mwc");
    let mut hook = webhook("a", "x", "y");
    hook["clientConfig"] = json!({"url": "https://webhook.invalid:8443/mutate"});
    create_mutating(&client, &name, vec![hook]).await;
    let (code, result) =
        support::run_module("stale_webhook", &json!({"name": name, "force": true}));
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["changed"], json!(false), "{result}");
    assert_eq!(
        result["configurations"][0]["webhooks"][0]["verdict"],
        json!("not judged")
    );
    let api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    assert!(api.get_opt(&name).await.unwrap().is_some());
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn stale_webhook_deletes_the_seeded_newrelic_configuration() {
    support::cluster();
    let _incident = support::incident();
    let client = support::client().await;
    let name = "newrelic-bundle-nri-metadata-injection";
    let api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let original = serde_json::to_value(api.get(name).await.unwrap()).unwrap();
    let output = support::kubemend()
        .args(["stale-webhook", "--name", name, "--check", "--diff"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(api.get_opt(name).await.unwrap().is_some());
    let (code, result) = support::run_module("stale_webhook", &json!({"name": name}));
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["changed"], json!(true), "{result}");
    assert_eq!(result["deleted"][0]["object"], original);
    assert!(api.get_opt(name).await.unwrap().is_none());
    let (_, again) = support::run_module("stale_webhook", &json!({"name": name}));
    assert_eq!(again["changed"], json!(false), "{again}");
}

/// Verification after the delete: a finalizer keeps the configuration (deleting, but there).
/// The run fails in its verify step, and still returns the configuration whole with
/// `changed: true`; without the finalizer the same delete verifies.
#[tokio::test]
async fn stale_webhook_fails_verification_when_a_finalizer_keeps_the_configuration() {
    let reaper = support::Reaper::new("webhook-verify");
    let client = support::client().await;
    let namespace = reaper.namespace(&client).await;
    let api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let held = support::unique("held-webhook");
    let plain = support::unique("plain-webhook");
    for (name, finalizers) in [(&held, json!(["kubemend.test/hold"])), (&plain, json!([]))] {
        let object: MutatingWebhookConfiguration = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": reaper.labels(), "finalizers": finalizers},
            "webhooks": [webhook("held", &namespace, "no-such-service")],
        }))
        .unwrap();
        api.create(&PostParams::default(), &object).await.unwrap();
    }
    let args = |name: &str| json!({"kubeconfig": support::cluster().kubeconfig, "name": name});

    let (code, result) = support::run_module("stale_webhook", &args(&plain));
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["verified"], json!(true), "{result}");

    let (code, result) = support::run_module("stale_webhook", &args(&held));
    assert_eq!(code, 1, "{result}");
    assert_eq!(result["failed"], json!(true), "{result}");
    assert_eq!(result["changed"], json!(true), "{result}");
    assert_eq!(result["failed_step"], json!("verify"), "{result}");
    assert_eq!(result["verified"], json!(false), "{result}");
    assert!(
        result["msg"].as_str().unwrap().contains(held.as_str()),
        "{result}"
    );
    assert_eq!(
        result["deleted"][0]["object"]["metadata"]["name"],
        json!(held)
    );
    let still = api.get_opt(&held).await.unwrap().unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());
}
