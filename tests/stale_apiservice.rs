//! stale_apiservice and diagnose's namespaces check against the test-bed cluster.
//!
//! The aggregator and the namespace controller are the real ones: each test registers its own
//! APIServices (group `<unique>.kubemend.test`), the kube-aggregator of the three API servers
//! judges them (`Available=False`: MissingEndpoints, ServiceNotFound, FailedDiscoveryCheck) and
//! kube-controller-manager's namespace controller reports what holds a namespace
//! (NamespaceDeletionDiscoveryFailure, NamespaceFinalizersRemaining).
//!
//! While an APIService is unavailable no namespace in the cluster finishes deleting, so every
//! test here holds `support::aggregated_apis()` and deletes its APIServices as soon as it is
//! done with them; its `Reaper` deletes them first, also when the test fails.
//!
//! Two shapes of the test bed decide how the failing backends are built. kube-apiserver runs as
//! microk8s runs it, without `--enable-aggregator-routing` (microk8s' default args do not set
//! it), so the aggregator calls a ClusterIP Service at its cluster IP, which nothing routes
//! here (there is no kube-proxy); and the EndpointSlice API refuses loopback addresses
//! (`ValidateNonSpecialIP`, kubernetes `pkg/apis/discovery/validation`). So the backend that
//! answers 401 is reached through an ExternalName Service `localhost` (the aggregator's
//! `ResolveCluster` dials `https://<externalName>:<APIService port>`), and the backend that is
//! there but failing with ready endpoints is a ClusterIP Service whose ready endpoint the
//! aggregator cannot reach.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, DeleteParams};
use serde_json::{Value, json};

/// How long the aggregator and the namespace controller may take to judge.
const JUDGED: Duration = Duration::from_secs(120);

/// Registers APIService `v1.<group>` (group unique to the test) behind `service` (namespace,
/// name, port), in `reaper`'s care. Returns its name.
async fn register(
    client: &Client,
    reaper: &support::Reaper,
    service: (&str, &str, u16),
) -> (String, String) {
    let group = format!("{}.kubemend.test", support::unique("api"));
    let name = format!("v1.{group}");
    support::create(
        &support::apiservices(client),
        json!({
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": name, "labels": reaper.labels()},
            "spec": {
                "group": group, "version": "v1",
                "groupPriorityMinimum": 1000, "versionPriority": 15,
                "insecureSkipTLSVerify": true,
                "service": {"namespace": service.0, "name": service.1, "port": service.2},
            },
        }),
    )
    .await;
    (name, group)
}

/// The APIService's Available condition, once the aggregator has it False for a reason that
/// `judged` accepts (given reason and message).
async fn unavailable(client: &Client, name: &str, judged: impl Fn(&str, &str) -> bool) -> Value {
    let api = support::apiservices(client);
    support::wait_for(
        &format!("the aggregator to judge APIService {name}"),
        JUDGED,
        || async {
            let object = api.get(name).await.map_err(|e| e.to_string())?;
            let conditions = object.data["status"]["conditions"].clone();
            let available = conditions
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Available")
                .cloned()
                .ok_or_else(|| format!("no Available condition: {conditions}"))?;
            let text = |key: &str| available[key].as_str().unwrap_or_default().to_owned();
            if text("status") == "False" && judged(&text("reason"), &text("message")) {
                Ok(available)
            } else {
                Err(available.to_string())
            }
        },
    )
    .await
}

/// A ClusterIP Service `name` without selector, port 443 named https, and one EndpointSlice for
/// it whose one endpoint at `address` is `ready`.
async fn service_with_endpoint(
    client: &Client,
    namespace: &str,
    name: &str,
    address: &str,
    ready: bool,
) {
    support::create(
        &Api::<Service>::namespaced(client.clone(), namespace),
        json!({
            "metadata": {"name": name},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}]},
        }),
    )
    .await;
    support::create(
        &Api::<EndpointSlice>::namespaced(client.clone(), namespace),
        json!({
            "metadata": {"name": format!("{name}-manual"),
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address], "conditions": {"ready": ready}}],
            "ports": [{"name": "https", "port": 8443, "protocol": "TCP"}],
        }),
    )
    .await;
}

/// The namespace's condition of `type_` once it is True and `matches` its message.
async fn namespace_condition(
    client: &Client,
    namespace: &str,
    type_: &str,
    matches: impl Fn(&str) -> bool,
) -> Value {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    support::wait_for(
        &format!("condition {type_} on namespace {namespace}"),
        JUDGED,
        || async {
            let ns = namespaces.get(namespace).await.map_err(|e| e.to_string())?;
            let status = serde_json::to_value(&ns.status).unwrap();
            let found = status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == type_ && c["status"] == "True")
                .cloned();
            match found {
                Some(c) if matches(c["message"].as_str().unwrap_or_default()) => Ok(c),
                _ => Err(status.to_string()),
            }
        },
    )
    .await
}

/// diagnose's namespaces check, with a 1s grace, once it has a finding about `object`.
async fn diagnose_finding(object: &str) -> Value {
    let args = json!({"checks": ["namespaces"], "terminating_grace": "1s"});
    support::wait_for(&format!("diagnose to report {object}"), JUDGED, || async {
        let (code, result) = support::run_module("diagnose", &args);
        if code != 0 {
            return Err(result.to_string());
        }
        assert_eq!(result["changed"], json!(false), "{result:#}");
        result["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["object"] == object)
            .cloned()
            .ok_or_else(|| result.to_string())
    })
    .await
}

/// diagnose names APIService `name` as what holds namespace `doomed`, with stale_apiservice as
/// the fix, and reports the APIService itself as unavailable, holding that namespace.
async fn diagnose_names_the_blocker(doomed: &str, name: &str) {
    let finding = diagnose_finding(&format!("namespace/{doomed}")).await;
    assert_eq!(
        finding["data"]["blocking_apiservices"],
        json!([name]),
        "{finding:#}"
    );
    assert!(
        finding["evidence"]
            .as_str()
            .unwrap()
            .contains(&format!("held by APIService {name}")),
        "{finding:#}"
    );
    assert_eq!(finding["fix"]["module"], "stale_apiservice", "{finding:#}");
    assert_eq!(
        finding["fix"]["options"]["name"],
        json!(name),
        "{finding:#}"
    );
    let own = diagnose_finding(&format!("apiservice/{name}")).await;
    assert_eq!(own["data"]["reason"], "MissingEndpoints", "{own:#}");
    // Every namespace being deleted meanwhile is held too (other tests' among them): this one
    // must be named.
    let held = own["data"]["namespaces"].as_array().unwrap();
    assert!(held.contains(&json!(doomed)), "{own:#}");
}

/// What every test here starts with: the aggregated-API lock (held while the test runs), a
/// reaper, a client and a namespace of its own.
async fn start(prefix: &str) -> (support::Lock, support::Reaper, Client, String) {
    support::cluster();
    let serial = support::aggregated_apis();
    let reaper = support::Reaper::new(prefix);
    let client = support::client().await;
    let home = reaper.namespace(&client).await;
    (serial, reaper, client, home)
}

/// Runs stale_apiservice on APIService `name` with `options`: it must succeed, change nothing
/// and leave the APIService there. Returns its report on the APIService.
async fn kept(client: &Client, name: &str, options: Value) -> Value {
    let mut args = options;
    args["name"] = json!(name);
    let (code, result) = support::run_module("stale_apiservice", &args);
    assert_eq!(code, 0, "{result:#}");
    assert_eq!(result["changed"], json!(false), "{result:#}");
    let still = support::apiservices(client).get_opt(name).await.unwrap();
    assert!(still.is_some(), "{name} was deleted: {result:#}");
    result["apiservices"][0].clone()
}

/// The acceptance cycle: an APIService whose Service has no ready endpoint holds a namespace in
/// Terminating; diagnose names it as the blocker; stale_apiservice in check mode deletes
/// nothing, then deletes it (UID precondition, the object whole, a backup); the namespace
/// finishes deleting; a second run changes nothing.
#[tokio::test]
async fn stale_apiservice_unblocks_the_namespace_its_unavailable_api_holds_and_then_changes_nothing()
 {
    let (_serial, reaper, client, home) = start("apisvc-stale").await;
    service_with_endpoint(&client, &home, "backend", "10.1.250.1", false).await;
    let (name, group) = register(&client, &reaper, (&home, "backend", 443)).await;
    let condition = unavailable(&client, &name, |reason, _| reason == "MissingEndpoints").await;
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .contains("have no addresses with port name \"https\""),
        "{condition:#}"
    );
    let api = support::apiservices(&client);
    let original = api.get(&name).await.unwrap();
    let uid = original.metadata.uid.clone().unwrap();

    let doomed = reaper.namespace(&client).await;
    Api::<Namespace>::all(client.clone())
        .delete(&doomed, &DeleteParams::default())
        .await
        .unwrap();
    let gv = format!("{group}/v1");
    namespace_condition(&client, &doomed, "NamespaceDeletionDiscoveryFailure", |m| {
        m.contains(&gv)
    })
    .await;

    diagnose_names_the_blocker(&doomed, &name).await;

    // Check mode (min_age 1s, once the condition is that old): would delete, deletes nothing.
    let backup = tempfile::tempdir().unwrap();
    let backup_dir = backup.path().join("backups");
    let check = support::wait_for("a check-mode run that would delete", JUDGED, || async {
        let args = json!({"name": name, "min_age": "1s", "backup_dir": backup_dir,
                          "_ansible_check_mode": true});
        let (code, result) = support::run_module("stale_apiservice", &args);
        assert_eq!(code, 0, "{result:#}");
        if result["changed"] == json!(true) {
            Ok(result)
        } else {
            Err(result.to_string())
        }
    })
    .await;
    assert_eq!(check["apiservices"][0]["verdict"], "stale", "{check:#}");
    assert!(api.get_opt(&name).await.unwrap().is_some());
    assert!(!backup_dir.exists());

    let args = json!({"name": name, "min_age": "1s", "backup_dir": backup_dir,
                      "_ansible_diff": true});
    let (code, result) = support::run_module("stale_apiservice", &args);
    assert_eq!(code, 0, "{result:#}");
    assert_eq!(result["changed"], json!(true), "{result:#}");
    assert_eq!(result["verified"], json!(true), "{result:#}");
    let deleted = &result["deleted"][0];
    assert_eq!(deleted["uid"], json!(uid));
    assert_eq!(
        deleted["object"]["spec"], original.data["spec"],
        "{result:#}"
    );
    assert_eq!(deleted["object"]["kind"], "APIService", "{result:#}");
    let evidence = result["apiservices"][0]["evidence"].as_str().unwrap();
    assert!(
        evidence.contains(&format!(
            "service {home}/backend has no ready endpoint for port 443"
        )),
        "{evidence}"
    );
    assert!(api.get_opt(&name).await.unwrap().is_none());
    let file = deleted["backup_file"].as_str().unwrap();
    let manifest: Value = serde_saphyr::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert_eq!(manifest["spec"], original.data["spec"]);
    assert!(manifest.get("status").is_none(), "{manifest:#}");

    // The namespace controller finishes the namespace.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    support::wait_for(&format!("namespace {doomed} gone"), JUDGED, || async {
        match namespaces.get_opt(&doomed).await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    let (code, again) = support::run_module("stale_apiservice", &json!({"name": name}));
    assert_eq!(code, 0, "{again:#}");
    assert_eq!(again["changed"], json!(false), "{again:#}");
}

/// A backend that answers 401 (an aggregated API server refusing the aggregator's client
/// certificate): the aggregator's FailedDiscoveryCheck is reported as pointing at the
/// certificates, and nothing is deleted, whatever min_age.
#[tokio::test]
async fn stale_apiservice_reports_a_backend_that_answers_401_and_never_deletes_it() {
    let (_serial, reaper, client, home) = start("apisvc-401").await;
    let backend = support::Https401::start();
    support::create(
        &Api::<Service>::namespaced(client.clone(), &home),
        json!({"metadata": {"name": "refusing"},
               "spec": {"type": "ExternalName", "externalName": "localhost"}}),
    )
    .await;
    let (name, _) = register(&client, &reaper, (&home, "refusing", backend.port)).await;
    unavailable(&client, &name, |reason, message| {
        reason == "FailedDiscoveryCheck" && message.trim_end().ends_with(": 401")
    })
    .await;

    for min_age in ["1s", "10m"] {
        let report = kept(&client, &name, json!({"min_age": min_age})).await;
        assert_eq!(report["verdict"], "failing", "{report:#}");
        assert_eq!(report["points_at"], "certificates", "{report:#}");
        assert!(
            report["message"].as_str().unwrap().ends_with(": 401"),
            "{report:#}"
        );
        assert!(
            report["hint"].as_str().unwrap().contains("front-proxy"),
            "{report:#}"
        );
    }
    let finding = diagnose_finding(&format!("apiservice/{name}")).await;
    assert_eq!(finding["severity"], "warning", "{finding:#}");
    assert_eq!(finding["fix"], Value::Null, "{finding:#}");
}

/// A backend with a ready endpoint that fails the discovery check (the aggregator cannot reach
/// it) is failing, not gone: reported as pointing at the backend, never deleted.
#[tokio::test]
async fn stale_apiservice_never_deletes_an_apiservice_whose_backend_has_ready_endpoints() {
    let (_serial, reaper, client, home) = start("apisvc-ready").await;
    service_with_endpoint(&client, &home, "unreachable", "10.1.250.2", true).await;
    let (name, _) = register(&client, &reaper, (&home, "unreachable", 443)).await;
    unavailable(&client, &name, |reason, _| reason == "FailedDiscoveryCheck").await;
    let report = kept(&client, &name, json!({"min_age": "1s"})).await;
    assert_eq!(report["verdict"], "failing", "{report:#}");
    assert_eq!(report["points_at"], "backend", "{report:#}");
    assert!(
        report["evidence"]
            .as_str()
            .unwrap()
            .contains("has 1 ready endpoint(s) for port 443"),
        "{report:#}"
    );
}

/// A local APIService is never judged; one unavailable for less than min_age is kept (and the
/// same one is stale with a min_age it has passed, in check mode).
#[tokio::test]
async fn stale_apiservice_keeps_local_apiservices_and_those_unavailable_for_less_than_min_age() {
    let (_serial, reaper, client, home) = start("apisvc-young").await;

    let local = kept(&client, "v1.apps", json!({"min_age": "1s"})).await;
    assert_eq!(local["verdict"], "local", "{local:#}");

    let (name, _) = register(&client, &reaper, (&home, "never-created", 443)).await;
    unavailable(&client, &name, |reason, _| reason == "ServiceNotFound").await;
    let young = kept(&client, &name, json!({"min_age": "1h"})).await;
    assert_eq!(young["verdict"], "recently unavailable", "{young:#}");
    let api = support::apiservices(&client);
    // Stale once it has been unavailable for longer than a min_age of 1s (the aggregator's
    // lastTransitionTime has a resolution of a second).
    let older = support::wait_for(
        "the APIService judged stale with min_age 1s",
        Duration::from_secs(30),
        || {
            let name = name.clone();
            async move {
                let (_, older) = support::run_module(
                    "stale_apiservice",
                    &json!({"name": name, "min_age": "1s", "_ansible_check_mode": true}),
                );
                if older["apiservices"][0]["verdict"] == "stale" {
                    Ok(older)
                } else {
                    Err(older["apiservices"][0].to_string())
                }
            }
        },
    )
    .await;
    assert_eq!(older["deleted"][0]["name"], json!(name), "{older:#}");
    assert!(api.get_opt(&name).await.unwrap().is_some());
}

/// A namespace held by an object whose finalizer no controller removes: diagnose names the
/// object and the finalizer, says what removing it by hand skips, and deletes nothing.
#[tokio::test]
async fn diagnose_names_the_object_and_finalizer_holding_a_namespace_and_deletes_nothing() {
    let (_serial, _reaper, client, held) = start("ns-finalizer").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &held);
    support::create(
        &configmaps,
        json!({"metadata": {"name": "held", "finalizers": ["kubemend.test/hold"]}}),
    )
    .await;
    Api::<Namespace>::all(client.clone())
        .delete(&held, &DeleteParams::default())
        .await
        .unwrap();
    namespace_condition(&client, &held, "NamespaceFinalizersRemaining", |m| {
        m.contains("kubemend.test/hold")
    })
    .await;

    let finding = diagnose_finding(&format!("namespace/{held}")).await;
    let evidence = finding["evidence"].as_str().unwrap();
    assert!(
        evidence.contains("configmaps held remains, held by finalizer(s) kubemend.test/hold"),
        "{finding:#}"
    );
    assert!(
        evidence.contains("NamespaceFinalizersRemaining"),
        "{finding:#}"
    );
    assert_eq!(
        finding["data"]["remaining"],
        json!([{"resource": "configmaps", "name": "held", "finalizers": ["kubemend.test/hold"]}]),
        "{finding:#}"
    );
    let hint = finding["hint"].as_str().unwrap();
    assert!(hint.contains("no controller kubemend knows"), "{hint}");
    assert!(hint.contains("orphans"), "{hint}");
    assert_eq!(finding["fix"], Value::Null, "{finding:#}");
    let still = configmaps.get("held").await.unwrap();
    assert_eq!(
        still.metadata.finalizers,
        Some(vec!["kubemend.test/hold".to_owned()])
    );
    assert!(
        Api::<Namespace>::all(client.clone())
            .get_opt(&held)
            .await
            .unwrap()
            .is_some()
    );
}
